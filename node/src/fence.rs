//! Self-fencing: an agent that has heard no controller for its lease stops the containers
//! the leader would move elsewhere, so that a host cut off from the cluster, but alive,
//! runs no copy of a container that now runs on another node.
//!
//! ```text
//!  controller ── HostRequest::Fence { lease, movable } ──► Fence (kept in fence.json)
//!  controller ── heartbeat (HostRequest::Beat{stretch}) ─► Fence::heard_from
//!  watch task, every 100 ms: due(now, last heard, lease)? ──► SIGKILL each movable one,
//!                                                             once per silence
//! ```
//!
//! The lease is shorter than the controllers' heartbeat grace (checked when it is set),
//! so the copy stops before the leader marks the node Down and starts the successor. A
//! controller of a large fleet stretches its heartbeat period and grace (see the
//! controller's `Liveness::stretch_milli`); each beat says by how much, and the lease of the
//! host stretches by the same factor, so the order of the two holds.
//! The trade-off (README): with fencing on, a full controller outage longer than the
//! lease stops the movable containers of every agent.

use crate::clock::{Clock, SystemClock};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wharf_protocol::ContainerId;

/// The file under the data dir that keeps the fence across restarts of the agent.
pub const FENCE_FILE: &str = "fence.json";

/// What the leader last said.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceConfig {
    /// The lease in milliseconds; 0: fencing off.
    pub lease_ms: u64,
    /// The containers to stop when it runs out.
    pub movable: Vec<ContainerId>,
}

/// Whether the lease ran out (pure): fencing on, and nothing heard for the lease.
pub fn due(now_ms: u64, last_heard_ms: u64, lease_ms: u64) -> bool {
    lease_ms > 0 && now_ms.saturating_sub(last_heard_ms) >= lease_ms
}

/// The lease in force (pure): `lease_ms` stretched by the last beat's `stretch_milli`
/// (never shrunk below `lease_ms`).
pub fn stretched(lease_ms: u64, stretch_milli: u32) -> u64 {
    lease_ms.saturating_mul(u64::from(stretch_milli.max(1000))) / 1000
}

/// The agent's fence: its configuration and when a controller was last heard, on
/// monotonic time only.
#[derive(Debug)]
pub struct Fence {
    path: PathBuf,
    config: Mutex<FenceConfig>,
    clock: Arc<dyn Clock>,
    last_heard_ms: AtomicU64,
    /// The stretch the last beat carried, in thousandths.
    stretch_milli: AtomicU32,
    fenced: AtomicBool,
}

impl Fence {
    /// The fence of the agent of `data_dir`: as last kept there (off when nothing is);
    /// the lease counts from now.
    pub fn open(data_dir: &Path) -> Fence {
        Fence::open_with_clock(data_dir, Arc::new(SystemClock::new()))
    }

    /// [`Fence::open`] on `clock` (tests give a [`crate::clock::ManualClock`]).
    pub fn open_with_clock(data_dir: &Path, clock: Arc<dyn Clock>) -> Fence {
        let path = data_dir.join(FENCE_FILE);
        let config = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let fence = Fence {
            path,
            config: Mutex::new(config),
            clock,
            last_heard_ms: AtomicU64::new(0),
            stretch_milli: AtomicU32::new(1000),
            fenced: AtomicBool::new(false),
        };
        fence.last_heard_ms.store(fence.now_ms(), Ordering::Relaxed);
        fence
    }

    /// Milliseconds on the monotonic clock: the date may jump, the lease does not.
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.monotonic().as_millis()).unwrap_or(u64::MAX)
    }

    /// A controller was heard: the lease starts again.
    pub fn heard(&self) {
        self.last_heard_ms.store(self.now_ms(), Ordering::Relaxed);
        self.fenced.store(false, Ordering::Relaxed);
    }

    /// A controller's heartbeat was heard, with its stretch in thousandths: the lease
    /// starts again, stretched by as much.
    pub fn heard_from(&self, stretch_milli: u32) {
        self.stretch_milli
            .store(stretch_milli.max(1000), Ordering::Relaxed);
        self.heard();
    }

    /// Replace the configuration and keep it on disk.
    pub fn set(&self, config: FenceConfig) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(&config).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)?;
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.heard();
        Ok(())
    }

    /// The configuration in force.
    pub fn config(&self) -> FenceConfig {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The containers to stop now, once per silence: `Some` the first time the lease
    /// has run out since a controller was last heard.
    pub fn due_now(&self) -> Option<(Duration, Vec<ContainerId>)> {
        let config = self.config();
        let (now, last) = (self.now_ms(), self.last_heard_ms.load(Ordering::Relaxed));
        let lease = stretched(config.lease_ms, self.stretch_milli.load(Ordering::Relaxed));
        if !due(now, last, lease) || self.fenced.swap(true, Ordering::Relaxed) {
            return None;
        }
        Some((Duration::from_millis(now - last), config.movable))
    }
}

/// Stop the movable containers of `agent` whenever its fence is due; runs until dropped.
pub async fn watch(agent: crate::agent::Agent) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some((silent, ids)) = agent.fence().due_now() else {
            continue;
        };
        tracing::warn!(
            silent_ms = silent.as_millis() as u64,
            containers = ids.len(),
            "no controller heard for the lease: fencing, stopping the movable containers"
        );
        for id in ids {
            match agent.kill(&id, 9).await {
                Ok(()) => tracing::warn!(container = %id.short(), "fenced: container stopped"),
                Err(e) => {
                    tracing::debug!(container = %id.short(), error = %e, "fenced: not running")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn the_lease_runs_out_only_when_fencing_is_on() {
        assert!(!due(10_000, 0, 0), "off");
        assert!(!due(2_999, 0, 3_000));
        assert!(due(3_000, 0, 3_000));
        assert!(!due(5_000, 4_000, 3_000), "heard since");
        assert!(!due(0, 10, 3_000), "a clock read before the last heartbeat");
    }

    #[test]
    fn a_fence_is_kept_on_disk_and_fires_once_per_silence() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::open(dir.path());
        assert_eq!(f.config(), FenceConfig::default());
        assert!(f.due_now().is_none(), "off");
        let ids = vec![ContainerId::from_bytes([1; 32])];
        f.set(FenceConfig {
            lease_ms: 1,
            movable: ids.clone(),
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(f.due_now().map(|(_, ids)| ids), Some(ids.clone()));
        assert!(f.due_now().is_none(), "once");
        f.heard();
        std::thread::sleep(Duration::from_millis(5));
        assert!(f.due_now().is_some(), "again after the next silence");
        let again = Fence::open(dir.path());
        assert_eq!(again.config().movable, ids, "kept across a restart");
    }

    const HOUR_NS: i64 = 3_600 * 1_000_000_000;

    /// A fence with a 3 s lease over one container, on `clock`.
    fn fence_on(clock: &Arc<ManualClock>) -> (tempfile::TempDir, Fence, Vec<ContainerId>) {
        let dir = tempfile::tempdir().unwrap();
        let f = Fence::open_with_clock(dir.path(), clock.clone());
        let ids = vec![ContainerId::from_bytes([2; 32])];
        f.set(FenceConfig {
            lease_ms: 3_000,
            movable: ids.clone(),
        })
        .unwrap();
        (dir, f, ids)
    }

    #[test]
    fn a_jump_of_the_date_fires_no_fence_while_heartbeats_arrive() {
        let clock = Arc::new(ManualClock::new(1_780_000_000 * 1_000_000_000));
        let (_dir, f, _) = fence_on(&clock);
        // Heartbeats every second while the date jumps by hours either way.
        for jump_h in [5, -5, 26, -40, 1, -1] {
            clock.jump_wall(jump_h * HOUR_NS);
            clock.advance(Duration::from_secs(1));
            assert!(f.due_now().is_none(), "date moved {jump_h} h");
            f.heard();
        }
        // Silent for less than the lease, with the date set far forward then back.
        clock.advance(Duration::from_millis(2_999));
        clock.jump_wall(12 * HOUR_NS);
        assert!(f.due_now().is_none(), "date 12 h ahead");
        clock.jump_wall(-36 * HOUR_NS);
        assert!(f.due_now().is_none(), "date 24 h behind");
    }

    /// A beat that says the controller stretches its period by 2.5 stretches the lease
    /// by as much; a later beat without stretch brings it back.
    #[test]
    fn the_lease_stretches_with_the_last_beat() {
        assert_eq!(stretched(3_000, 1_000), 3_000);
        assert_eq!(stretched(3_000, 2_500), 7_500);
        assert_eq!(stretched(3_000, 10), 3_000, "never shorter than set");
        assert_eq!(stretched(0, 5_000), 0, "off stays off");
        let clock = Arc::new(ManualClock::new(0));
        let (_dir, f, ids) = fence_on(&clock);
        f.heard_from(2_500);
        clock.advance(Duration::from_millis(7_499));
        assert!(f.due_now().is_none(), "within the stretched lease");
        clock.advance(Duration::from_millis(1));
        assert_eq!(f.due_now().map(|(_, ids)| ids), Some(ids));
        f.heard_from(1_000);
        clock.advance(Duration::from_millis(3_000));
        assert!(f.due_now().is_some(), "the plain lease again");
    }

    #[test]
    fn the_fence_fires_once_the_monotonic_clock_passes_the_lease_unheard() {
        let clock = Arc::new(ManualClock::new(0));
        let (dir, f, ids) = fence_on(&clock);
        clock.advance(Duration::from_millis(2_999));
        assert!(f.due_now().is_none(), "within the lease");
        clock.advance(Duration::from_millis(1));
        assert_eq!(f.due_now(), Some((Duration::from_secs(3), ids.clone())));
        assert!(f.due_now().is_none(), "once per silence");
        f.heard();
        clock.advance(Duration::from_secs(3));
        assert_eq!(f.due_now(), Some((Duration::from_secs(3), ids)), "again");
        // A restarted agent counts its lease from its start, not from fence.json's age.
        let restarted = Fence::open_with_clock(dir.path(), clock.clone());
        clock.advance(Duration::from_secs(2));
        assert!(restarted.due_now().is_none());
        clock.advance(Duration::from_secs(1));
        assert!(restarted.due_now().is_some());
    }
}
