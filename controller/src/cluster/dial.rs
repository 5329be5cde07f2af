//! A host's side of its connection to a controller: TLS with its node certificate, the
//! hello, the welcome; then the agent protocol runs over the stream (the controller is
//! its client).

use super::{frame, ClusterError, AGENT_ALPN};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpStream;
use wharf_protocol::cluster::{AgentHello, AgentWelcome};
use wharf_protocol::node_state::NodeDescription;

/// How long connecting to a controller may take, hello and welcome included.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Dial the controller at `addr` as the node whose certificates are in `certs_dir`; the
/// stream, ready for the agent protocol, and the controllers' cluster addresses.
pub async fn dial_controller(
    addr: SocketAddr,
    certs_dir: &Path,
    description: NodeDescription,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, Vec<String>), ClusterError> {
    let cfg = super::tls::node_client_config(certs_dir, AGENT_ALPN)?;
    let work = async {
        let mut tls = super::tls::connect(addr, cfg).await?;
        frame::write(&mut tls, &AgentHello { description }, "agent hello").await?;
        match frame::read(&mut tls, "welcome").await? {
            AgentWelcome::Accepted { controllers } => Ok((tls, controllers)),
            AgentWelcome::Refused(reason) => Err(ClusterError::Refused(reason)),
        }
    };
    tokio::time::timeout(DIAL_TIMEOUT, work)
        .await
        .map_err(|_| {
            ClusterError::Refused(format!("no welcome from {addr} within {DIAL_TIMEOUT:?}"))
        })?
}
