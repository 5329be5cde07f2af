//! An agent reached over a unix socket (`wharf up --agent-transport unix`): the same
//! frames as a remote agent's, from another task set and socket, to prove that nothing
//! depends on sharing a process.

use super::{no_agent, AgentClient};
use std::path::Path;
use wharf_link::ClientCall;
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentRequest};
use wharf_protocol::NodeId;

/// A connection to the agent listening on a unix socket.
pub struct UnixAgent {
    node: NodeId,
    client: wharf_link::Client,
}

impl UnixAgent {
    /// Connect to the agent of `node` listening on `path`.
    pub async fn connect(path: &Path, node: NodeId) -> std::io::Result<UnixAgent> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let (r, w) = stream.into_split();
        Ok(UnixAgent {
            node,
            client: wharf_link::connect(r, w),
        })
    }
}

impl AgentClient for UnixAgent {
    fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
        if *node != self.node {
            return Err(no_agent(node));
        }
        Ok(self.client.open(request))
    }

    fn events(&self, node: &NodeId) -> Option<tokio::sync::mpsc::UnboundedReceiver<AgentEvent>> {
        (*node == self.node)
            .then(|| self.client.take_events())
            .flatten()
    }
}
