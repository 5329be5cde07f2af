//! Where layers are: the engine keeps the replicated record of which node holds which
//! layer in line with its agents' inventories (what scheduling by layer locality and peer
//! transfer read).
//!
//! ```text
//!  agent ── Inventory event ──► track_layers ──► inventory_command(state, node, inv)
//!                                    ▲                 │ Some(cmd): differs
//!  Raft apply (images change) ───────┘                 ▼
//!                                              propose LayerInventory
//! ```

use super::Engine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use wharf_protocol::agent::AgentEvent;
use wharf_protocol::layer_state::inventory_command;
use wharf_protocol::NodeId;

/// A burst of state changes (a load recording many images) is reconciled once.
const SETTLE: Duration = Duration::from_millis(200);

impl Engine {
    /// Keep the record of `node`'s layers in line with its agent's inventory, for as long
    /// as `events` (the agent's) flow; a tracker of the node from an earlier connection
    /// is stopped.
    pub(super) fn track_layers(
        self: &Arc<Self>,
        node: NodeId,
        mut events: mpsc::UnboundedReceiver<AgentEvent>,
    ) {
        let engine = self.clone();
        let task = tokio::spawn(async move {
            let mut inventory = match engine.agents.inventory(&node).await {
                Ok(inv) => inv,
                Err(e) => {
                    warn!(node = %node, error = %e, "layer inventory not read");
                    return;
                }
            };
            // Only image and layer records bear on this node's record of its layers.
            let mut records = engine.store.watch_layers();
            loop {
                if let Some(cmd) = engine
                    .store
                    .read(|s| inventory_command(s, node, &inventory))
                {
                    debug!(node = %node, "recording the node's layers");
                    if let Err(e) = engine.store.propose(cmd).await {
                        warn!(node = %node, error = %e, "layer locations not recorded");
                    }
                }
                tokio::select! {
                    ev = events.recv() => match ev {
                        // A report says the layers changed; what they are is read now, so
                        // that a report overtaken by a later change records nothing stale.
                        Some(AgentEvent::Inventory(inv)) => {
                            inventory = engine.agents.inventory(&node).await.unwrap_or(inv);
                        }
                        None => return,
                    },
                    changed = records.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        tokio::time::sleep(SETTLE).await;
                        records.borrow_and_update();
                        // Only a change that makes the record differ from the inventory
                        // last read (a load recorded layers for this node, another
                        // controller recorded an older inventory) asks the agent again:
                        // a container's create or start changes no layer, and asking each
                        // agent after every burst of creates flooded a large fleet with
                        // inventory calls. What the agent holds now, then: an inventory
                        // read before the change (a load's layers not in it yet) would
                        // take its layers back out of the record until its next report.
                        let differs = engine
                            .store
                            .read(|s| inventory_command(s, node, &inventory).is_some());
                        if differs {
                            match engine.agents.inventory(&node).await {
                                Ok(inv) => inventory = inv,
                                Err(e) => warn!(node = %node, error = %e, "layer inventory not read"),
                            }
                        }
                    }
                }
            }
        });
        self.with_hosts(|h| {
            let facts = h.entry(node).or_default();
            if let Some(old) = facts.layers.replace(task.abort_handle()) {
                old.abort();
            }
        });
    }
}
