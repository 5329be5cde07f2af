//! `GET /metrics`: counters of the controller in Prometheus' text format (as dockerd's
//! `--metrics-addr` serves its own), read with `curl --unix-socket DATA_DIR/… /metrics`.
//!
//! The Raft counters show group commit at work: `wharf_raft_proposals_total` commands
//! went into `wharf_raft_log_entries_total` entries with `wharf_raft_synced_writes_total`
//! fsyncs. The `wharf_raft_snapshot_*` gauges describe the last snapshot this controller
//! built (`POST /wharf/raft/snapshot` asks for one).

use super::http::{full, Resp};
use crate::engine::Engine;
use crate::raft::StoreStats;
use http::HeaderValue;
use std::fmt::Write;
use wharf_protocol::state::{ClusterState, ContainerStatus};

/// What the metrics show of the replicated state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Containers by status: created, running, paused, exited, dead.
    pub containers: [u64; 5],
    /// Images.
    pub images: u64,
    /// Volumes.
    pub volumes: u64,
    /// Networks.
    pub networks: u64,
}

const STATUSES: [ContainerStatus; 5] = [
    ContainerStatus::Created,
    ContainerStatus::Running,
    ContainerStatus::Paused,
    ContainerStatus::Exited,
    ContainerStatus::Dead,
];

impl StateCounts {
    /// Count what `state` holds (pure).
    pub fn of(state: &ClusterState) -> StateCounts {
        let mut containers = [0u64; 5];
        for c in state.containers.values() {
            if let Some(i) = STATUSES.iter().position(|s| *s == c.status) {
                containers[i] += 1;
            }
        }
        StateCounts {
            containers,
            images: state.images.len() as u64,
            volumes: state.volumes.len() as u64,
            networks: state.networks.len() as u64,
        }
    }
}

/// The text of `/metrics` (pure).
pub fn render(raft: &StoreStats, state: &StateCounts) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "wharf_raft_proposals_total",
        "counter",
        "Commands proposed to the replicated state.",
        &[("", raft.proposals)],
    );
    metric(
        "wharf_raft_log_entries_total",
        "counter",
        "Log entries the proposals went into (group commit puts several in one).",
        &[("", raft.entries)],
    );
    metric(
        "wharf_raft_synced_writes_total",
        "counter",
        "Synced writes (fsyncs) of the Raft database.",
        &[("", raft.synced_writes)],
    );
    metric(
        "wharf_raft_last_applied_index",
        "gauge",
        "The last log index applied to the state.",
        &[("", raft.last_applied)],
    );
    metric(
        "wharf_raft_snapshots_built_total",
        "counter",
        "Raft snapshots this controller built since it started.",
        &[("", raft.snapshot.builds)],
    );
    metric(
        "wharf_raft_snapshot_index",
        "gauge",
        "The last log index the last snapshot built covers.",
        &[("", raft.snapshot.index)],
    );
    metric(
        "wharf_raft_snapshot_bytes",
        "gauge",
        "Size of the last snapshot built.",
        &[("", raft.snapshot.bytes)],
    );
    metric(
        "wharf_raft_snapshot_build_milliseconds",
        "gauge",
        "How long building the last snapshot took.",
        &[("", raft.snapshot.millis)],
    );
    let by_status: Vec<(String, u64)> = STATUSES
        .iter()
        .zip(state.containers)
        .map(|(s, n)| (format!("{{status=\"{}\"}}", s.as_str()), n))
        .collect();
    let by_status: Vec<(&str, u64)> = by_status.iter().map(|(l, n)| (l.as_str(), *n)).collect();
    metric(
        "wharf_containers",
        "gauge",
        "Containers by status.",
        &by_status,
    );
    metric("wharf_images", "gauge", "Images.", &[("", state.images)]);
    metric("wharf_volumes", "gauge", "Volumes.", &[("", state.volumes)]);
    metric(
        "wharf_networks",
        "gauge",
        "Networks.",
        &[("", state.networks)],
    );
    out
}

/// `GET /metrics`.
pub fn metrics(engine: &Engine) -> Resp {
    let store = engine.store();
    let text = render(&store.stats(), &store.read(StateCounts::of));
    let mut r = http::Response::new(full(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prometheus_text() {
        let raft = StoreStats {
            synced_writes: 3,
            proposals: 10,
            entries: 4,
            last_applied: 12,
            snapshot: crate::raft::SnapshotStats {
                builds: 2,
                index: 11,
                bytes: 4096,
                millis: 7,
            },
        };
        let state = StateCounts {
            containers: [1, 2, 0, 5, 0],
            images: 1,
            volumes: 2,
            networks: 3,
        };
        let text = render(&raft, &state);
        for line in [
            "# TYPE wharf_raft_proposals_total counter",
            "wharf_raft_proposals_total 10",
            "wharf_raft_log_entries_total 4",
            "wharf_raft_synced_writes_total 3",
            "wharf_raft_last_applied_index 12",
            "# TYPE wharf_raft_snapshots_built_total counter",
            "wharf_raft_snapshots_built_total 2",
            "wharf_raft_snapshot_index 11",
            "wharf_raft_snapshot_bytes 4096",
            "wharf_raft_snapshot_build_milliseconds 7",
            "wharf_containers{status=\"running\"} 2",
            "wharf_containers{status=\"exited\"} 5",
            "wharf_containers{status=\"paused\"} 0",
            "wharf_networks 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // Every sample line is `name[{labels}] value`.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = l.rsplit_once(' ').unwrap();
            assert!(name.starts_with("wharf_"), "{l}");
            assert!(value.parse::<u64>().is_ok(), "{l}");
        }
    }

    #[test]
    fn containers_are_counted_by_status() {
        let mut s = ClusterState::default();
        for (n, status) in [
            ContainerStatus::Running,
            ContainerStatus::Running,
            ContainerStatus::Exited,
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = wharf_protocol::fixtures::container(n as u8, &format!("c{n}"));
            c.status = status;
            s.containers.insert(c.id.clone(), c);
        }
        assert_eq!(StateCounts::of(&s).containers, [0, 2, 0, 1, 0]);
    }
}
