//! An agent reached over a unix socket (`wharf up --agent-transport unix`): the same
//! frames as a remote agent's, from another task set and socket, to prove that nothing
//! depends on sharing a process.

use super::NodeConnection;
use std::path::Path;
use wharf_protocol::NodeId;

/// Connect to the agent of `node` listening on `path`.
pub async fn connect(path: &Path, node: NodeId) -> std::io::Result<NodeConnection> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (r, w) = stream.into_split();
    Ok(NodeConnection::new(node, wharf_link::connect(r, w)))
}
