//! Scheduling quality (pure): the controller's own scheduler
//! (`wharf_controller::engine::scheduler::schedule`) places containers of mixed sizes one
//! by one over a synthetic fleet of mixed-size agents, each placement recorded before the
//! next is decided, as the controller does; then how even the result is.

use super::fleet::MIXED_SIZES;
use wharf_controller::engine::scheduler::{
    schedule, ImageNeed, Request, Settings, Strategy, SAMPLE,
};
use wharf_protocol::node_state::{Availability, NodeDescription, NodeRecord, NodeRole, NodeState};
use wharf_protocol::state::{ClusterState, Command, ImageRecord};
use wharf_protocol::{ContainerId, DiffId, Digest, ImageId, NodeId};

const MIB: i64 = 1 << 20;

/// The container sizes placements cycle through: (`--cpus` in 1e-9 CPUs, `--memory`).
pub const REQUEST_SIZES: [(i64, i64); 4] = [
    (250_000_000, 128 * MIB),
    (500_000_000, 512 * MIB),
    (1_000_000_000, 1024 * MIB),
    (2_000_000_000, 4096 * MIB),
];

/// What one run gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Quality {
    /// The strategy.
    pub strategy: Strategy,
    /// Agents in the fleet.
    pub nodes: usize,
    /// Containers asked for.
    pub asked: usize,
    /// Containers placed (the rest were unschedulable: the fleet was full).
    pub placed: usize,
    /// Most containers on one node.
    pub max: u32,
    /// Mean containers per node (over all nodes).
    pub mean: f64,
    /// Nodes holding at least one container.
    pub used: usize,
    /// CPU reserved over CPU of the nodes used.
    pub cpu_fill: f64,
}

/// `nodes` Ready agents of [`MIXED_SIZES`] (in turn) holding one image; that image.
pub fn fleet_state(nodes: usize) -> (ClusterState, ImageId) {
    let mut s = ClusterState::default();
    let layer = DiffId(Digest::of(b"sim layer"));
    let image = ImageRecord {
        id: ImageId(Digest::of(b"sim config")),
        config: vec![],
        diff_ids: vec![layer],
        size: 0,
        loaded_ns: 0,
    };
    let id = image.id;
    s.images.insert(id, image);
    s.tags.insert("sim:latest".into(), id);
    for i in 0..nodes {
        let (cpus, memory) = MIXED_SIZES[i % MIXED_SIZES.len()];
        let n = NodeId(i as u64 + 1);
        s.nodes.insert(
            n,
            NodeRecord {
                id: n,
                role: NodeRole::Agent,
                description: NodeDescription {
                    hostname: format!("sim-{:05}", i + 1),
                    addr: "127.0.0.1".into(),
                    cpus,
                    memory,
                    runs_containers: true,
                    ..Default::default()
                },
                labels: Default::default(),
                availability: Availability::Active,
                state: NodeState::Ready,
                created_ns: 0,
                updated_ns: 0,
            },
        );
        s.layers.entry(layer).or_default().insert(n);
    }
    (s, id)
}

/// Place `containers` containers (sizes of [`REQUEST_SIZES`] in turn) with `strategy`
/// over [`fleet_state`]`(nodes)`; stops at the first that no node can take. `sampled`:
/// as the engine places, a seed per placement and [`SAMPLE`] nodes drawn (spread);
/// otherwise seed 0, every node scored.
pub fn run(strategy: Strategy, nodes: usize, containers: usize, sampled: bool) -> Quality {
    let (mut s, image) = fleet_state(nodes);
    let base = Settings {
        strategy,
        ..Settings::default()
    };
    let mut placed = 0;
    for i in 0..containers {
        let (nano_cpus, memory) = REQUEST_SIZES[i % REQUEST_SIZES.len()];
        let req = Request {
            image: Some(ImageNeed {
                id: image,
                reference: "sim".into(),
                must_hold: true,
            }),
            nano_cpus,
            memory,
            ..Request::default()
        };
        let settings = if sampled {
            Settings {
                tie_seed: (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
                sample: SAMPLE,
                ..base
            }
        } else {
            base
        };
        let Ok(p) = schedule(&s, &req, &settings) else {
            break;
        };
        let mut c = wharf_protocol::fixtures::container(0, &format!("c{i}"));
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(i as u64 + 1).to_be_bytes());
        c.id = ContainerId::from_bytes(bytes);
        c.run.id = c.id.clone();
        c.node = p.node;
        c.run.host.resources.nano_cpus = nano_cpus;
        c.run.host.resources.memory = memory;
        // Recorded as the controller records it (apply keeps the state's index).
        s.apply(&Command::CreateContainer {
            container: Box::new(c),
        })
        .expect("a fresh name and ID");
        placed += 1;
    }
    measure(&s, strategy, nodes, containers, placed)
}

/// How even the placements of `s` are (pure).
pub fn measure(
    s: &ClusterState,
    strategy: Strategy,
    nodes: usize,
    asked: usize,
    placed: usize,
) -> Quality {
    let mut per: std::collections::HashMap<NodeId, (u32, i64)> = Default::default();
    for c in s.containers.values() {
        let e = per.entry(c.node).or_default();
        e.0 += 1;
        e.1 += c.run.host.resources.nano_cpus;
    }
    let used_cpus: i64 = per
        .keys()
        .filter_map(|n| s.nodes.get(n))
        .map(|n| i64::from(n.description.cpus) * 1_000_000_000)
        .sum();
    let reserved: i64 = per.values().map(|v| v.1).sum();
    Quality {
        strategy,
        nodes,
        asked,
        placed,
        max: per.values().map(|v| v.0).max().unwrap_or(0),
        mean: placed as f64 / nodes.max(1) as f64,
        used: per.len(),
        cpu_fill: if used_cpus > 0 {
            reserved as f64 / used_cpus as f64
        } else {
            0.0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_every_node_and_binpack_fills_few() {
        let spread = run(Strategy::Spread, 8, 16, false);
        assert_eq!((spread.placed, spread.used), (16, 8));
        // A 2-CPU node with a container holds no 2-CPU one more: a third lands elsewhere.
        assert!(spread.max <= 3, "{spread:?}");
        let binpack = run(Strategy::Binpack, 8, 16, false);
        assert_eq!(binpack.placed, 16);
        assert!(binpack.used < 8, "{binpack:?}");
        assert!(binpack.cpu_fill > spread.cpu_fill, "{binpack:?} {spread:?}");
    }

    /// Past the sample size, spread among drawn nodes still uses every node and stays
    /// within one container of the mean on this fleet.
    #[test]
    fn sampled_spread_stays_even() {
        let q = run(Strategy::Spread, 4 * SAMPLE, 8 * SAMPLE, true);
        assert_eq!(q.placed, 8 * SAMPLE);
        assert_eq!(q.used, 4 * SAMPLE, "{q:?}");
        assert!(q.max <= 3, "{q:?}");
    }
}
