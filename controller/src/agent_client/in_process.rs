//! The agent of `wharf up`: in this process, but reached like any other, through the
//! agent protocol's frames over an in-memory pipe. The one place besides the binary's
//! wiring that names `wharf_node`.

use super::NodeConnection;
use wharf_protocol::NodeId;

/// Bytes the in-memory pipe holds each way before a writer waits. Flow control is the
/// calls' credit, not the pipe; the pipe keeps what it grew to, so it stays small.
const PIPE: usize = 512 * 1024;

/// Serve `agent` as node `node` over an in-memory pipe and connect to it.
pub fn start(agent: wharf_node::agent::Agent, node: NodeId) -> NodeConnection {
    let (ours, theirs) = tokio::io::duplex(PIPE);
    let (r, w) = tokio::io::split(theirs);
    tokio::spawn(async move {
        if let Err(e) = wharf_node::serve::serve_connection(agent, r, w).await {
            tracing::warn!(error = %e, "in-process agent connection ended");
        }
    });
    let (r, w) = tokio::io::split(ours);
    NodeConnection::new(node, wharf_link::connect(r, w))
}
