//! The multi-host cluster: how hosts join, how a controller's cluster port is served, and
//! how remote agents are reached.
//!
//! ```text
//!  wharf node ──TLS, ALPN wharf-join/1 (token)──► any controller: join.rs
//!     │            ◄── node certificate (its key never leaves the host), CA, controllers
//!     └──TLS, ALPN wharf-agent/2 (node cert)────► every controller: listener.rs
//!            AgentHello ─► registry.rs: RegisterNode, Ready, engine.node_connected
//!            then the agent protocol (wharf_link), the controller as the client
//!  controller ◄─TLS, ALPN wharf-raft/1 (controller cert)─► controller: raft::serve_peer
//! ```
//!
//! One port (`--cluster-addr`, 2377 by default as Swarm's) serves all three; the ALPN
//! picks the protocol and the certificate's role decides whether it may.

pub mod dial;
pub mod events;
pub mod frame;
pub mod identity;
pub mod join;
pub mod listener;
pub mod registry;
pub mod tls;

/// ALPN of a join.
pub const JOIN_ALPN: &[u8] = b"wharf-join/1";
/// ALPN of an agent's connection.
pub const AGENT_ALPN: &[u8] = b"wharf-agent/2";
pub use crate::raft::RAFT_ALPN;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A certificate does not name a node or client properly.
    #[error("peer identity: {0}")]
    Identity(String),
    /// A join token is malformed or wrong.
    #[error("{0}")]
    Token(String),
    /// The join was refused by the cluster.
    #[error("join refused: {0}")]
    Refused(String),
    /// TLS set-up or handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// The connection failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// A frame could not be encoded or decoded.
    #[error("{what}: {source}")]
    Codec {
        /// What was being read or written.
        what: &'static str,
        /// Why.
        source: wharf_protocol::codec::CodecError,
    },
    /// Certificates could not be made or read.
    #[error(transparent)]
    Cert(#[from] crate::certs::CertError),
    /// The cluster state refused or failed.
    #[error("{0}")]
    State(String),
}

/// Make a cluster connection notice a silent peer: no delay for small frames, keep-alive
/// probes after 3 s idle (every second, 3 unanswered: gone), and unacknowledged data
/// for 10 s closes it. A partitioned host's connections then end on both sides within
/// about 10 s, and the agent dials again once the network heals. Best effort.
pub fn tune_tcp(tcp: &tokio::net::TcpStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = tcp.set_nodelay(true);
    let _ = setsockopt(tcp, sockopt::KeepAlive, &true);
    let _ = setsockopt(tcp, sockopt::TcpKeepIdle, &3);
    let _ = setsockopt(tcp, sockopt::TcpKeepInterval, &1);
    let _ = setsockopt(tcp, sockopt::TcpKeepCount, &3);
    let _ = setsockopt(tcp, sockopt::TcpUserTimeout, &10_000);
}

impl ClusterError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Io { what, source }
    }
}

#[cfg(test)]
mod cluster_test;
