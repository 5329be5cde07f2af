//! Hand-built cluster states for the scheduler's and placement's unit tests.

use super::expr::{Expr, ExprKind};
use super::{ImageNeed, Request};
use wharf_protocol::node_state::{Availability, NodeDescription, NodeRecord, NodeRole, NodeState};
use wharf_protocol::state::{ClusterState, ImageRecord};
use wharf_protocol::{ContainerId, DiffId, Digest, ImageId, NodeId};

/// A Ready, active agent with 2 CPUs and 1 GiB, operator labels `labels`.
pub fn node(id: u64, hostname: &str, labels: &[(&str, &str)]) -> NodeRecord {
    NodeRecord {
        id: NodeId(id),
        role: NodeRole::Agent,
        description: NodeDescription {
            hostname: hostname.into(),
            addr: format!("10.0.0.{id}"),
            cpus: 2,
            memory: 1 << 30,
            runs_containers: true,
            ..Default::default()
        },
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        availability: Availability::Active,
        state: NodeState::Ready,
        created_ns: 0,
        updated_ns: 0,
    }
}

/// The layer `n`.
pub fn layer(n: u8) -> DiffId {
    DiffId(Digest::of(&[b'l', n]))
}

/// Record image `tag` of `layers`; its ID.
pub fn add_image(s: &mut ClusterState, tag: &str, layers: &[u8]) -> ImageId {
    let image = ImageRecord {
        id: ImageId(Digest::of(tag.as_bytes())),
        config: vec![],
        diff_ids: layers.iter().map(|n| layer(*n)).collect(),
        size: 0,
        loaded_ns: 0,
    };
    let id = image.id;
    s.images.insert(id, image);
    s.tags.insert(format!("{tag}:latest"), id);
    id
}

/// Record that `nodes` hold layer `n`.
pub fn hold(s: &mut ClusterState, n: u8, nodes: &[u64]) {
    s.layers
        .entry(layer(n))
        .or_default()
        .extend(nodes.iter().map(|n| NodeId(*n)));
}

/// Nodes 1 (`a`, zone=x), 2 (`b`, zone=y), 3 (`c`, zone=y), all holding image `img`
/// (one layer).
pub fn state() -> (ClusterState, ImageId) {
    let mut s = ClusterState::default();
    for n in [
        node(1, "a", &[("zone", "x")]),
        node(2, "b", &[("zone", "y")]),
        node(3, "c", &[("zone", "y")]),
    ] {
        s.nodes.insert(n.id, n);
    }
    let id = add_image(&mut s, "img", &[1]);
    hold(&mut s, 1, &[1, 2, 3]);
    (s, id)
}

/// A container named `name` on node `on` reserving `nano_cpus` and `memory`; `n` makes
/// its ID.
pub fn add_container(
    s: &mut ClusterState,
    n: u32,
    name: &str,
    on: u64,
    nano_cpus: i64,
    memory: i64,
) -> ContainerId {
    let mut c = wharf_protocol::fixtures::container(0, name);
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[31] = 1;
    c.id = ContainerId::from_bytes(bytes);
    c.run.id = c.id.clone();
    c.node = NodeId(on);
    c.run.host.resources.nano_cpus = nano_cpus;
    c.run.host.resources.memory = memory;
    let id = c.id.clone();
    s.apply(&wharf_protocol::state::Command::CreateContainer {
        container: Box::new(c),
    })
    .expect("a fresh name and ID in test data");
    id
}

/// A request for a container of image `image` (`img`).
pub fn req(image: ImageId) -> Request {
    Request {
        image: Some(ImageNeed {
            id: image,
            reference: "img".into(),
            must_hold: true,
        }),
        ..Default::default()
    }
}

/// `req` with the expressions `exprs` (`constraint:` or `affinity:` prefixed).
pub fn with(mut r: Request, exprs: &[&str]) -> Request {
    r.exprs = exprs
        .iter()
        .map(|e| {
            let (kind, text) = match e.split_once(':') {
                Some(("affinity", t)) => (ExprKind::Affinity, t),
                Some(("constraint", t)) => (ExprKind::Constraint, t),
                _ => (ExprKind::Constraint, *e),
            };
            Expr::parse(kind, text).expect("a valid expression in test data")
        })
        .collect();
    r
}
