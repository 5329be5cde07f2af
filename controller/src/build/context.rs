//! A build's context, which lives on the agent that runs the build's containers: the
//! client's upload is streamed through to it, and only the Dockerfile's text and the
//! collected `COPY` sources come back. The context is removed when the build ends,
//! however it ends (done, failed, its client gone).
//!
//! ```text
//!  POST /build body ──► BuildContext::put ──ContextPut, Bytes…──► agent: unpack under
//!                  ◄── Dockerfile text (or Docker's error) ─────  DATA_DIR/build/<id>/context
//!  COPY ──► BuildContext::collect ──ContextCollect──► agent ──► hash, tar ──► spool here
//!  drop ──► ContextRemove (spawned)
//! ```

use crate::agent_client::{Agents, ArchiveDownload};
use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;
use wharf_protocol::agent::AgentFailure;
use wharf_protocol::archive::CopySpec;
use wharf_protocol::NodeId;

/// A build's context on the agent of its node; dropped, it is removed there.
pub struct BuildContext {
    agents: Agents,
    node: NodeId,
    id: String,
}

impl BuildContext {
    /// The node the build runs on (its context, containers and layers are there).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// A context (not yet put) on the agent of `node`, under a fresh random ID.
    pub fn new(agents: Agents, node: NodeId) -> BuildContext {
        BuildContext {
            agents,
            node,
            id: hex::encode(rand::random::<[u8; 8]>()),
        }
    }

    /// The build's ID, which names its context on the agent.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Send the client's upload `body` to the agent, which unpacks it, reads the
    /// Dockerfile `dockerfile` and applies `.dockerignore`; returns the Dockerfile's text.
    /// What the client got wrong fails `InvalidInput` with Docker's words.
    pub async fn put(
        &self,
        dockerfile: &str,
        body: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ) -> Result<String, AgentFailure> {
        self.agents
            .context_put(&self.node, &self.id, dockerfile, body)
            .await
    }

    /// Collect `spec`'s sources from the context: their content hash, then their tar.
    pub async fn collect(&self, spec: CopySpec) -> Result<(String, ArchiveDownload), AgentFailure> {
        self.agents
            .context_collect(&self.node, &self.id, spec)
            .await
    }
}

impl Drop for BuildContext {
    fn drop(&mut self) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (agents, node, id) = (self.agents.clone(), self.node, self.id.clone());
        rt.spawn(async move {
            if let Err(e) = agents.context_remove(&node, &id).await {
                // The agent removes it anyway when this connection closes.
                warn!(build = %id, error = %e, "cannot remove build context");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_client::fake::FakeAgent;

    #[tokio::test]
    async fn the_fake_agent_holds_no_contexts() {
        let fake = std::sync::Arc::new(FakeAgent::new(NodeId(1)));
        let ctx = BuildContext::new(Agents::new(fake), NodeId(1));
        assert_eq!(ctx.id().len(), 16);
        assert!(wharf_protocol::agent::files::check_build_id(ctx.id()).is_ok());
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let e = ctx.put("Dockerfile", rx).await.unwrap_err();
        assert_eq!(e.kind, wharf_protocol::agent::FailureKind::Unsupported);
    }
}
