//! The controller's cluster port: TLS, then the protocol the ALPN names, if the peer's
//! certificate may speak it.
//!
//! | ALPN            | certificate                         | served by            |
//! |-----------------|-------------------------------------|----------------------|
//! | `wharf-join/1`  | none needed (the token admits)      | [`JoinService`]      |
//! | `wharf-agent/2` | a node's, recorded and not revoked  | [`Registry::attach`] |
//! | `wharf-raft/1`  | a controller's                      | the Raft peer RPCs   |
//!
//! A Docker client's certificate is refused on every one of them; an agent's on Raft.

use super::events::EVENTS_ALPN;
use super::identity::{identify_cert, node_id_text, Identity};
use super::join::{controller_addrs, JoinService};
use super::registry::{NodeHooks, Registry};
use super::{frame, ClusterError, AGENT_ALPN, JOIN_ALPN, RAFT_ALPN};
use crate::raft::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};
use wharf_protocol::cluster::{AgentHello, AgentWelcome};
use wharf_protocol::node_state::NodeRole;
use wharf_protocol::NodeId;

/// How long a TLS handshake and the first frames may take.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves the Raft peer RPCs of one accepted connection.
pub type RaftServe = Arc<
    dyn Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Everything the cluster port serves.
pub struct ClusterPort {
    /// The cluster state.
    pub store: Store,
    /// Admits new hosts.
    pub join: Arc<JoinService>,
    /// The agents connected here.
    pub registry: Arc<Registry>,
    /// The engine's side of agents coming and going.
    pub hooks: Arc<dyn NodeHooks>,
    /// Raft between controllers; `None` refuses peers (a one-controller cluster).
    pub raft: Option<RaftServe>,
    /// The engine whose events other controllers follow; `None` refuses them.
    pub engine: Option<Arc<crate::engine::Engine>>,
}

/// Whether `identity` may speak the protocol of `alpn`, given the recorded nodes (pure
/// but for the state read).
pub fn may_speak(
    alpn: &[u8],
    identity: Option<Identity>,
    node_known: impl Fn(NodeId) -> Result<(), String>,
) -> Result<(), String> {
    match (alpn, identity) {
        (a, _) if a == JOIN_ALPN => Ok(()),
        (a, Some(Identity::Node { role, id })) if a == AGENT_ALPN => {
            let _ = role;
            node_known(id)
        }
        // A controller that is joining has no state yet: a controller's certificate is
        // checked against revocations only here (Raft itself checks membership).
        (
            a,
            Some(Identity::Node {
                role: NodeRole::Controller,
                id,
            }),
        ) if a == RAFT_ALPN => match node_known(id) {
            Err(e) if e.contains("removed") => Err(e),
            _ => Ok(()),
        },
        (
            a,
            Some(Identity::Node {
                role: NodeRole::Controller,
                id,
            }),
        ) if a == EVENTS_ALPN => node_known(id),
        (
            a,
            Some(Identity::Node {
                role: NodeRole::Agent,
                ..
            }),
        ) if a == RAFT_ALPN || a == EVENTS_ALPN => {
            Err("an agent's certificate may not speak Raft or follow events".into())
        }
        (_, Some(Identity::Client)) => Err(
            "a client certificate may not act as a host of the cluster (use the Docker API port)"
                .into(),
        ),
        (_, None) => Err("no client certificate".into()),
        (a, _) => Err(format!("unknown protocol {:?}", String::from_utf8_lossy(a))),
    }
}

impl ClusterPort {
    /// Accept connections until `stop` turns true.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        loop {
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(error = %e, "cluster port accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = stop.changed() => return,
            };
            super::tune_tcp(&tcp);
            let port = self.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Err(e) = port.connection(acceptor, tcp, peer).await {
                    warn!(%peer, error = %e, "refused a cluster connection");
                }
            });
        }
    }

    async fn connection(
        self: &Arc<Self>,
        acceptor: tokio_rustls::TlsAcceptor,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<(), ClusterError> {
        let tls = tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp))
            .await
            .map_err(|_| ClusterError::Tls("handshake timed out".into()))?
            .map_err(|e| ClusterError::Tls(e.to_string()))?;
        let (_, conn) = tls.get_ref();
        let alpn = conn.alpn_protocol().unwrap_or_default().to_vec();
        let identity = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(identify_cert)
            .transpose()?;
        let store = self.store.clone();
        let known = |id: NodeId| {
            store.read(|s| {
                if s.revoked_nodes.contains(&id) {
                    Err(format!(
                        "node {} was removed from the cluster (docker node rm): it must join again",
                        node_id_text(id)
                    ))
                } else if s.nodes.contains_key(&id) {
                    Ok(())
                } else {
                    Err(format!(
                        "node {} is not a member of this cluster",
                        node_id_text(id)
                    ))
                }
            })
        };
        may_speak(&alpn, identity, known).map_err(ClusterError::Identity)?;
        debug!(%peer, alpn = %String::from_utf8_lossy(&alpn), "cluster connection");
        if alpn == JOIN_ALPN {
            return self.join.serve(tls, peer).await;
        }
        let Some(Identity::Node { role, id }) = identity else {
            unreachable!("checked by may_speak");
        };
        if alpn == EVENTS_ALPN {
            return match &self.engine {
                Some(engine) => super::events::serve_events(engine, tls).await,
                None => Err(ClusterError::Identity(
                    "this controller has no events to follow".into(),
                )),
            };
        }
        if alpn == RAFT_ALPN {
            match &self.raft {
                Some(serve) => {
                    serve(tls).await;
                    return Ok(());
                }
                None => {
                    return Err(ClusterError::Identity(
                        "this controller has no Raft peers".into(),
                    ))
                }
            }
        }
        self.agent(tls, role, id, peer).await
    }

    async fn agent(
        self: &Arc<Self>,
        mut tls: tokio_rustls::server::TlsStream<TcpStream>,
        role: NodeRole,
        id: NodeId,
        peer: SocketAddr,
    ) -> Result<(), ClusterError> {
        let hello: AgentHello =
            tokio::time::timeout(HANDSHAKE, frame::read(&mut tls, "agent hello"))
                .await
                .map_err(|_| ClusterError::Tls("no hello within the handshake time".into()))??;
        let controllers = self.store.read(controller_addrs);
        frame::write(&mut tls, &AgentWelcome::Accepted { controllers }, "welcome").await?;
        info!(%peer, node = %id, host = %hello.description.hostname, "agent connected");
        self.registry
            .attach(self.hooks.clone(), id, role, hello.description, tls)
            .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_protocol_takes_only_its_certificates() {
        let agent = Some(Identity::Node {
            role: NodeRole::Agent,
            id: NodeId(5),
        });
        let controller = Some(Identity::Node {
            role: NodeRole::Controller,
            id: NodeId(6),
        });
        let known = |id: NodeId| {
            if id == NodeId(9) {
                Err("removed".to_string())
            } else {
                Ok(())
            }
        };
        assert!(may_speak(JOIN_ALPN, None, known).is_ok());
        assert!(may_speak(AGENT_ALPN, agent, known).is_ok());
        assert!(may_speak(AGENT_ALPN, controller, known).is_ok());
        assert!(may_speak(RAFT_ALPN, controller, known).is_ok());
        let unknown = |_| Err("node 6 is not a member of this cluster".to_string());
        assert!(
            may_speak(RAFT_ALPN, controller, unknown).is_ok(),
            "a joining controller knows no one yet"
        );
        assert!(may_speak(AGENT_ALPN, agent, unknown).is_err());
        let removed_ctl = Some(Identity::Node {
            role: NodeRole::Controller,
            id: NodeId(9),
        });
        assert!(may_speak(RAFT_ALPN, removed_ctl, known).is_err());
        let e = may_speak(RAFT_ALPN, agent, known).unwrap_err();
        assert!(e.contains("agent's certificate may not speak Raft"), "{e}");
        assert!(may_speak(EVENTS_ALPN, agent, known).is_err());
        assert!(may_speak(EVENTS_ALPN, controller, known).is_ok());
        assert!(may_speak(EVENTS_ALPN, Some(Identity::Client), known).is_err());
        let e = may_speak(AGENT_ALPN, Some(Identity::Client), known).unwrap_err();
        assert!(
            e.contains("client certificate may not act as a host"),
            "{e}"
        );
        assert!(may_speak(RAFT_ALPN, Some(Identity::Client), known).is_err());
        assert!(may_speak(AGENT_ALPN, None, known).is_err());
        let revoked = Some(Identity::Node {
            role: NodeRole::Agent,
            id: NodeId(9),
        });
        assert_eq!(may_speak(AGENT_ALPN, revoked, known), Err("removed".into()));
        assert!(may_speak(b"h2", agent, known).is_err());
    }
}
