//! The daemon's memory after large transfers. A `docker load` of hundreds of MiB passes
//! through glibc's arenas in 256 KiB items and MiB-sized buffers; glibc keeps what they
//! freed (arena tops below its trim threshold, which it raises to 4 MiB as big buffers
//! come and go; free chunks pinned by live ones), so an idle daemon would stay near its
//! peak. Two measures, checked by `wharf-bench load memory --against` (README):
//!
//! - at most [`ARENAS`] malloc arenas (glibc's default is 8 per core), so that free
//!   memory collects in few places;
//! - once transfers have stopped for [`IDLE`], `malloc_trim`, which returns the arenas'
//!   free pages. Not during a transfer: trimming between its bursts makes every burst
//!   fault its pages in again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most malloc arenas the daemon uses.
pub const ARENAS: i32 = 2;

/// How long transfers must have stopped before free memory is given back.
pub const IDLE: Duration = Duration::from_secs(3);

/// Runs an action once calls have stopped for a while.
pub struct Debounce {
    /// Calls seen; a run waits for this to stay unchanged.
    calls: AtomicU64,
}

impl Debounce {
    /// No calls yet.
    pub const fn new() -> Debounce {
        Debounce {
            calls: AtomicU64::new(0),
        }
    }

    /// Run `action` (on a blocking thread) once no other call has come for `quiet`.
    /// Needs a tokio runtime.
    pub fn call(&'static self, quiet: Duration, action: fn()) {
        let seen = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::spawn(async move {
            tokio::time::sleep(quiet).await;
            if self.calls.load(Ordering::SeqCst) == seen {
                let _ = tokio::task::spawn_blocking(action).await;
            }
        });
    }
}

impl Default for Debounce {
    fn default() -> Debounce {
        Debounce::new()
    }
}

static TRANSFERS: Debounce = Debounce::new();

/// Limit the process to [`ARENAS`] malloc arenas. Call once at the daemon's start,
/// before its threads allocate.
pub fn limit_arenas() {
    // SAFETY: mallopt only sets one of glibc's tunables; it has no memory effects.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// A large transfer (a load, a save, an export, a copy) ended: once none other has
/// ended for [`IDLE`], give the allocator's free memory back to the system. Needs a
/// tokio runtime.
pub fn give_back_when_idle() {
    TRANSFERS.call(IDLE, || {
        // SAFETY: malloc_trim only returns free pages of glibc's arenas.
        unsafe { libc::malloc_trim(0) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    static RUNS: AtomicU64 = AtomicU64::new(0);
    static CALLS: Debounce = Debounce::new();

    #[tokio::test]
    async fn a_burst_of_calls_runs_the_action_once_after_the_quiet() {
        let quiet = Duration::from_secs(1);
        let count = || {
            RUNS.fetch_add(1, Ordering::SeqCst);
        };
        for _ in 0..5 {
            CALLS.call(quiet, count);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            RUNS.load(Ordering::SeqCst),
            0,
            "not while calls keep coming"
        );
        for _ in 0..100 {
            if RUNS.load(Ordering::SeqCst) > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(RUNS.load(Ordering::SeqCst), 1, "once, for the whole burst");
    }
}
