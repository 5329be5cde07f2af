//! The per-node figures the scheduler reads, gathered from the state in one pass over its
//! containers and endpoints, so that no filter or ranker scans every container for every
//! node (which made placement O(nodes × containers)).
//!
//! ```text
//!  ClusterState ──► ClusterView::new (usage: the state's index; ports: one pass, lazily)
//!                      │  per node: containers, reserved CPU/memory, host ports
//!                      ▼
//!                   filter.rs / rank.rs (per node: O(1) lookups)
//! ```
//!
//! The per-node usage is the state's own index (`wharf_protocol::state_index`, kept by
//! `apply`), so a placement is O(nodes); the host ports are gathered from the endpoints
//! once per placement, and only when the create publishes ports.

use std::collections::HashMap;
use std::sync::OnceLock;
use wharf_protocol::network::PortMapping;
use wharf_protocol::state::ClusterState;
pub use wharf_protocol::state_index::Usage;
use wharf_protocol::NodeId;

/// The state and the per-node figures placement reads.
#[derive(Debug)]
pub struct ClusterView<'a> {
    /// The state the figures come from.
    pub state: &'a ClusterState,
    /// Host ports by node, gathered on first use (only a create that publishes ports
    /// asks).
    ports: OnceLock<HashMap<NodeId, Vec<PortMapping>>>,
}

impl<'a> ClusterView<'a> {
    /// The view of `state` (pure; O(1): the per-node usage is the state's index).
    pub fn new(state: &'a ClusterState) -> ClusterView<'a> {
        ClusterView {
            state,
            ports: OnceLock::new(),
        }
    }

    /// What `node`'s containers take (zeros for a node with none).
    pub fn usage(&self, node: NodeId) -> Usage {
        self.state.index().usage(node)
    }

    /// The host ports published on `node` (the first call goes over every endpoint once).
    pub fn ports(&self, node: NodeId) -> &[PortMapping] {
        let ports = self.ports.get_or_init(|| {
            let mut ports: HashMap<NodeId, Vec<PortMapping>> = HashMap::new();
            for e in self.state.endpoints.values().flatten() {
                if !e.ports.is_empty() {
                    ports
                        .entry(e.node)
                        .or_default()
                        .extend(e.ports.iter().copied());
                }
            }
            ports
        });
        ports.get(&node).map_or(&[], Vec::as_slice)
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
