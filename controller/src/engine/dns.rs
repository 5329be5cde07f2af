//! The embedded DNS of user networks, from the controller's side: the resolver of a
//! network runs on the agent of the network's node (`wharf_node::dns`, on the gateway
//! address); the controller only tells it what to answer, through agent messages.
//!
//! ```text
//!  engine: names on a node's networks change ─► sync_dns(node)
//!            dns_tables(state, node, applied index)  (pure, wharf_protocol::dns)
//!              └─► SetDnsTable{table} per user network ─► the node's agent ─► resolver
//!  network removed ─► StopDns{network} (plan::remove_network)
//! ```
//!
//! When: a container starts or stops (its endpoints), connects, disconnects or is renamed,
//! a network is made, and a node's agent (re)connects ([`Engine::init_network`]), so that a
//! restarted agent answers again. Each table carries the applied log index it was read at:
//! the agent keeps the newest, so two controllers' updates crossing on the way cannot leave
//! an older table in place. A table that does not reach its agent is logged; the next
//! change or reconnection sends the whole table again.

use super::Engine;
use tracing::warn;
use wharf_protocol::dns::dns_tables;
use wharf_protocol::NodeId;

impl Engine {
    /// Send `node`'s agent the table of each of its user networks as the state says now;
    /// call after a change of the names or addresses on them. Failures are logged (as a
    /// resolver that cannot listen was before): no container operation fails for them.
    pub async fn sync_dns(&self, node: NodeId) {
        let tables = self
            .store()
            .read_indexed(|s, index| dns_tables(s, node, index));
        for table in tables {
            let network = table.network.clone();
            if let Err(e) = self.agents.set_dns_table(&node, table).await {
                warn!(%node, network = %short(&network), error = %e, "embedded DNS table not sent");
            }
        }
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
#[path = "dns_test.rs"]
mod tests;
