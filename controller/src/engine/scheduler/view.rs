//! The per-node figures the scheduler reads, gathered from the state in one pass over its
//! containers and endpoints, so that no filter or ranker scans every container for every
//! node (which made placement O(nodes × containers)).
//!
//! ```text
//!  ClusterState ──► ClusterView::new (one pass: containers, endpoints)
//!                      │  per node: containers, reserved CPU/memory, host ports
//!                      ▼
//!                   filter.rs / rank.rs (per node: O(1) lookups)
//! ```
//!
//! Built per call today, in O(containers + endpoints). The state could keep the same
//! figures as an index that `apply` maintains (a container's create, remove and
//! endpoint changes move one node's entry), which would make a placement O(nodes); the
//! view is the shape of that index, so switching is local to [`ClusterView::new`].

use std::collections::HashMap;
use wharf_protocol::network::PortMapping;
use wharf_protocol::state::ClusterState;
use wharf_protocol::NodeId;

/// What a node's containers take, as placement counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Containers recorded on the node, in any status (classic Swarm counted them all:
    /// a stopped container may start again).
    pub containers: u32,
    /// CPU its containers reserve (`--cpus`), in 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Memory its containers reserve (`--memory`), bytes.
    pub memory: i64,
}

/// The state and the per-node figures placement reads.
#[derive(Debug)]
pub struct ClusterView<'a> {
    /// The state the figures come from.
    pub state: &'a ClusterState,
    usage: HashMap<NodeId, Usage>,
    ports: HashMap<NodeId, Vec<PortMapping>>,
}

impl<'a> ClusterView<'a> {
    /// Gather the figures of `state` (pure; one pass over containers and endpoints).
    pub fn new(state: &'a ClusterState) -> ClusterView<'a> {
        let mut usage: HashMap<NodeId, Usage> = HashMap::with_capacity(state.nodes.len());
        for c in state.containers.values() {
            let u = usage.entry(c.node).or_default();
            let r = &c.run.host.resources;
            u.containers = u.containers.saturating_add(1);
            u.nano_cpus = u.nano_cpus.saturating_add(r.nano_cpus.max(0));
            u.memory = u.memory.saturating_add(r.memory.max(0));
        }
        let mut ports: HashMap<NodeId, Vec<PortMapping>> = HashMap::new();
        for e in state.endpoints.values().flatten() {
            if !e.ports.is_empty() {
                ports
                    .entry(e.node)
                    .or_default()
                    .extend(e.ports.iter().copied());
            }
        }
        ClusterView {
            state,
            usage,
            ports,
        }
    }

    /// What `node`'s containers take (zeros for a node with none).
    pub fn usage(&self, node: NodeId) -> Usage {
        self.usage.get(&node).copied().unwrap_or_default()
    }

    /// The host ports published on `node`.
    pub fn ports(&self, node: NodeId) -> &[PortMapping] {
        self.ports.get(&node).map_or(&[], Vec::as_slice)
    }

    /// `node`'s host name, or its ID when it has none (for messages and reasons).
    pub fn name(&self, node: NodeId) -> String {
        self.state
            .nodes
            .get(&node)
            .map(|n| n.description.hostname.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| node.to_string())
    }

    /// The names of `nodes`, `, `-separated, or `none`.
    pub fn names(&self, nodes: impl IntoIterator<Item = NodeId>) -> String {
        let v: Vec<String> = nodes.into_iter().map(|n| self.name(n)).collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}
