//! The clock liveness and the fence read: monotonic time to decide with, wall time only to
//! stamp what users see. [`SystemClock`] in the daemons, [`ManualClock`] in tests, where
//! each reading moves only when the test moves it.
//!
//! ```text
//!  monotonic(): heartbeat grace, a new leader's grace, the fence's lease (never goes back,
//!               ignores date changes, NTP steps, a wrong RTC at boot)
//!  wall_ns():   at_ns stamps of recorded node states (shown, never compared for liveness)
//! ```

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A source of monotonic and wall time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since this clock's origin, on a clock that never goes back and does not
    /// follow changes of the date: what every liveness decision reads.
    fn monotonic(&self) -> Duration;
    /// Nanoseconds since the Unix epoch, as the date says now: for stamps only.
    fn wall_ns(&self) -> i64;
}

/// The host's clocks: `CLOCK_MONOTONIC` (through [`Instant`]) and the date.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// The host's clocks, the monotonic one counting from now.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn wall_ns(&self) -> i64 {
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    }
}

/// A clock that moves only when told: [`ManualClock::advance`] moves both readings as
/// time passing does, [`ManualClock::jump_wall`] moves the date alone (an operator's
/// `date -s`, an NTP step). For tests.
#[derive(Debug)]
pub struct ManualClock {
    monotonic_ns: AtomicU64,
    wall_ns: AtomicI64,
}

impl ManualClock {
    /// A clock at monotonic zero and wall time `wall_ns`.
    pub fn new(wall_ns: i64) -> ManualClock {
        ManualClock {
            monotonic_ns: AtomicU64::new(0),
            wall_ns: AtomicI64::new(wall_ns),
        }
    }

    /// Let `d` pass: both readings move by `d`.
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.monotonic_ns.fetch_add(ns, Ordering::SeqCst);
        self.wall_ns
            .fetch_add(i64::try_from(ns).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Set the date `by_ns` forward (negative: backward); monotonic time does not move.
    pub fn jump_wall(&self, by_ns: i64) {
        self.wall_ns.fetch_add(by_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn monotonic(&self) -> Duration {
        Duration::from_nanos(self.monotonic_ns.load(Ordering::SeqCst))
    }

    fn wall_ns(&self) -> i64 {
        self.wall_ns.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_NS: i64 = 3_600 * 1_000_000_000;

    #[test]
    fn a_manual_clock_moves_its_date_alone_or_both_readings() {
        let c = ManualClock::new(1_000);
        c.jump_wall(5 * HOUR_NS);
        assert_eq!(
            (c.monotonic(), c.wall_ns()),
            (Duration::ZERO, 1_000 + 5 * HOUR_NS)
        );
        c.jump_wall(-7 * HOUR_NS);
        c.advance(Duration::from_millis(3));
        assert_eq!(c.monotonic(), Duration::from_millis(3));
        assert_eq!(c.wall_ns(), 1_000 - 2 * HOUR_NS + 3_000_000);
    }

    #[test]
    fn the_system_clock_never_goes_back() {
        let c = SystemClock::new();
        let (a, b) = (c.monotonic(), c.monotonic());
        assert!(b >= a);
        assert!(
            c.wall_ns() > 1_600_000_000 * 1_000_000_000,
            "a date after 2020"
        );
    }
}
