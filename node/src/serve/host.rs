//! Host requests, and the inventory reporter: the agent tells its controller which
//! layers it holds whenever that changes.

use super::failure;
use crate::agent::{Agent, AgentError};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use wharf_link::{EventSender, ServerCall};
use wharf_protocol::agent::host::{HostInfo, HostRequest, HostResponse, LayerInventory};
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentResponse};

/// How often the reporter looks even without being told that layers may have changed.
const INVENTORY_POLL: Duration = Duration::from_secs(10);

async fn inventory(agent: &Agent) -> Result<LayerInventory, AgentFailure> {
    let store = agent.image_store().clone();
    tokio::task::spawn_blocking(move || store.inventory())
        .await
        .map_err(|e| failure(&AgentError::Join(e.to_string())))?
        .map_err(|e| failure(&AgentError::Store(e)))
}

/// Carry out one host request.
pub(super) async fn handle(agent: &Agent, request: HostRequest, mut call: ServerCall) {
    let result = match request {
        HostRequest::Inventory => inventory(agent)
            .await
            .map(|inv| AgentResponse::Host(HostResponse::Inventory(inv))),
        // The controllers' heartbeat: the fence's lease starts again.
        HostRequest::Info => {
            agent.fence().heard();
            Ok(AgentResponse::Host(HostResponse::Info(HostInfo {
                root_dir: agent.data_dir().display().to_string(),
            })))
        }
        HostRequest::Beat { stretch_milli } => {
            agent.fence().heard_from(stretch_milli);
            Ok(AgentResponse::Done)
        }
        HostRequest::Fence { lease_ms, movable } => agent
            .fence()
            .set(crate::fence::FenceConfig { lease_ms, movable })
            .map(|()| AgentResponse::Done)
            .map_err(|e| {
                failure(&AgentError::Io {
                    action: "write",
                    path: agent.data_dir().join(crate::fence::FENCE_FILE),
                    source: e,
                })
            }),
        HostRequest::Containers => Ok(AgentResponse::Host(HostResponse::Containers(
            agent.containers().await,
        ))),
    };
    call.respond_with(result);
}

/// Report the inventory on `events` when it differs from the last report: at once, when
/// `changed` is notified (after a request that may add or remove layers), and every
/// [`INVENTORY_POLL`]. Ends when the connection does.
pub(super) async fn report_inventory(agent: Agent, events: EventSender, changed: Arc<Notify>) {
    let mut last: Option<LayerInventory> = None;
    loop {
        match inventory(&agent).await {
            Ok(inv) if last.as_ref() != Some(&inv) => {
                if !events.send(AgentEvent::Inventory(inv.clone())) {
                    return;
                }
                last = Some(inv);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "layer inventory not read"),
        }
        let _ = tokio::time::timeout(INVENTORY_POLL, changed.notified()).await;
    }
}
