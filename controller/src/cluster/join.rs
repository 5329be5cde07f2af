//! Joining the cluster: a host proves with the token's secret that it may, and gets its
//! node certificate for a key it made itself.
//!
//! ```text
//!  joining host                                controller (any)
//!  token ─► CA digest ─► TLS, ALPN wharf-join/1 ─► chain holds that CA? (host checks)
//!  JoinRequest { secret, role, description, public key } ─►
//!                      secret of that role? ─► ID ─► RegisterNode (Raft) ─► sign
//!  ◄─ Admitted { ID, node cert, CA, controllers (+ CA key, tokens for controllers) }
//! ```

use super::identity::{node_uri, role_of_secret, JoinTokens, Token};
use super::{frame, ClusterError};
use crate::certs::Authority;
use crate::raft::Store;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::{info, warn};
use wharf_protocol::cluster::{Admission, JoinRequest, JoinResponse};
use wharf_protocol::node_state::{NodeDescription, NodeRole};
use wharf_protocol::state::{ClusterState, Command};
use wharf_protocol::NodeId;

/// How long a join may take end to end.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a controller needs to admit hosts.
pub struct JoinService {
    /// The cluster CA (signs node certificates).
    pub authority: Authority,
    /// The tokens, one per role.
    pub tokens: JoinTokens,
    /// The cluster state (the new node is recorded before it gets its certificate).
    pub store: Store,
}

/// The cluster addresses of the controllers in `state` (pure).
pub fn controller_addrs(state: &ClusterState) -> Vec<String> {
    state
        .nodes
        .values()
        .filter(|n| n.role == NodeRole::Controller && !n.description.cluster_addr.is_empty())
        .map(|n| n.description.cluster_addr.clone())
        .collect()
}

/// Check a join request against the tokens (pure): the role it may join as, or why not.
pub fn admit(tokens: &JoinTokens, req: &JoinRequest) -> Result<NodeRole, String> {
    match role_of_secret(tokens, &req.secret) {
        Some(role) if role == req.role => {}
        Some(_) | None => {
            return Err(format!(
                "the join token is not this cluster's {} token",
                match req.role {
                    NodeRole::Agent => "agent",
                    NodeRole::Controller => "controller",
                }
            ))
        }
    }
    let d = &req.description;
    if d.hostname.is_empty() || d.hostname.len() > 253 {
        return Err("the host name is empty or too long".into());
    }
    if d.addr.parse::<IpAddr>().is_err() {
        return Err(format!("the address {:?} is not an IP address", d.addr));
    }
    if req.role == NodeRole::Controller && d.cluster_addr.parse::<SocketAddr>().is_err() {
        return Err(format!(
            "the cluster address {:?} is not IP:port",
            d.cluster_addr
        ));
    }
    Ok(req.role)
}

/// A new node ID: random, never 0, not taken or revoked in `state` (pure given `seed`).
pub fn new_node_id(state: &ClusterState, mut seed: impl FnMut() -> u64) -> NodeId {
    loop {
        let id = NodeId(seed());
        if id.0 != 0 && !state.nodes.contains_key(&id) && !state.revoked_nodes.contains(&id) {
            return id;
        }
    }
}

impl JoinService {
    /// Serve one join on an accepted TLS stream.
    pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        self: &Arc<Self>,
        mut stream: S,
        peer: SocketAddr,
    ) -> Result<(), ClusterError> {
        let req: JoinRequest = frame::read(&mut stream, "join request").await?;
        let (answer, new_controller) = match self.admit_and_record(&req).await {
            Ok(admission) => {
                info!(%peer, node = %admission.node, host = %req.description.hostname, role = ?req.role, "admitted a host to the cluster");
                let new = (req.role == NodeRole::Controller)
                    .then(|| (admission.node, req.description.cluster_addr.clone()));
                (JoinResponse::Admitted(Box::new(admission)), new)
            }
            Err(reason) => {
                warn!(%peer, host = %req.description.hostname, %reason, "refused a join");
                (JoinResponse::Refused(reason), None)
            }
        };
        frame::write(&mut stream, &answer, "join response").await?;
        if let Some((id, addr)) = new_controller {
            // The new controller opens its store and serves Raft once it has its
            // certificate; adding it waits until it has caught up.
            let store = self.store.clone();
            tokio::spawn(async move {
                match store.add_controller(id.0, addr.clone()).await {
                    Ok(()) => info!(node = %id, %addr, "a controller joined the Raft group"),
                    Err(e) => {
                        warn!(node = %id, %addr, error = %e, "could not add the controller to the Raft group")
                    }
                }
            });
        }
        Ok(())
    }

    async fn admit_and_record(&self, req: &JoinRequest) -> Result<Admission, String> {
        let role = admit(&self.tokens, req)?;
        if role == NodeRole::Controller && !self.store.is_leader() {
            let leader = self.store.leader().map_or_else(
                || "no leader is known now".to_string(),
                |(_, addr)| format!("join through the leader at {addr}"),
            );
            return Err(format!("this controller is not the Raft leader: {leader}"));
        }
        let id = self.store.read(|s| new_node_id(s, rand::random));
        let ip = req.description.addr.parse::<IpAddr>().ok();
        let cert_pem = self
            .authority
            .issue_node(&node_uri(role, id), ip, &req.public_key)
            .map_err(|e| format!("could not sign the node certificate: {e}"))?;
        let cmd = Command::RegisterNode {
            id,
            role,
            description: req.description.clone(),
            at_ns: crate::engine::now_ns(),
        };
        match self.store.propose(cmd).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(format!("the cluster could not record the host: {e}")),
        }
        let controllers = self.store.read(controller_addrs);
        let controller = role == NodeRole::Controller;
        Ok(Admission {
            node: id,
            cert_pem,
            ca_pem: self.authority.ca_pem().to_string(),
            ca_key_pem: if controller {
                self.authority.key_pem()
            } else {
                String::new()
            },
            tokens: controller.then(|| (self.tokens.agent.clone(), self.tokens.controller.clone())),
            controllers,
        })
    }
}

/// Join the cluster at `addr` with `token` as `role`, for the key `key`: the admission,
/// or why not.
pub async fn join(
    addr: SocketAddr,
    token: &Token,
    role: NodeRole,
    description: NodeDescription,
    key: &rcgen::KeyPair,
) -> Result<Admission, ClusterError> {
    let cfg = super::tls::join_client_config(token.ca_digest)?;
    let work = async {
        let mut tls = super::tls::connect(addr, cfg).await?;
        let req = JoinRequest {
            secret: token.secret.clone(),
            role,
            description,
            public_key: key.public_key_raw().to_vec(),
        };
        frame::write(&mut tls, &req, "join request").await?;
        match frame::read(&mut tls, "join response").await? {
            JoinResponse::Admitted(a) => Ok(*a),
            JoinResponse::Refused(reason) => Err(ClusterError::Refused(reason)),
        }
    };
    tokio::time::timeout(JOIN_TIMEOUT, work)
        .await
        .map_err(|_| {
            ClusterError::Refused(format!("no answer from {addr} within {JOIN_TIMEOUT:?}"))
        })?
}

/// Write what an admission gives into `certs_dir` (the CA, the node certificate, and
/// for controllers the CA key) with the node's own key.
pub fn install(
    certs_dir: &std::path::Path,
    admission: &Admission,
    key: &rcgen::KeyPair,
) -> Result<(), ClusterError> {
    use crate::certs::write_atomic;
    let key_pem = (!admission.ca_key_pem.is_empty()).then_some(admission.ca_key_pem.as_str());
    Authority::install(certs_dir, &admission.ca_pem, key_pem)?;
    write_atomic(
        &certs_dir.join("node-key.pem"),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(
        &certs_dir.join("node.pem"),
        admission.cert_pem.as_bytes(),
        0o644,
    )?;
    Ok(())
}

/// A controller's own node certificate, issued by its own CA (the first controller's,
/// which no one admits), unless `certs_dir` holds one already.
pub fn ensure_own_node_cert(
    certs_dir: &std::path::Path,
    authority: &Authority,
    role: NodeRole,
    id: NodeId,
    ip: IpAddr,
) -> Result<(), ClusterError> {
    use crate::certs::write_atomic;
    let uri = node_uri(role, id);
    let cert_path = certs_dir.join("node.pem");
    let sans_path = certs_dir.join("node.sans");
    let want = format!("{uri}\n{ip}");
    if cert_path.exists()
        && certs_dir.join("node-key.pem").exists()
        && std::fs::read_to_string(&sans_path).unwrap_or_default() == want
    {
        return Ok(());
    }
    let key = rcgen::KeyPair::generate().map_err(|e| ClusterError::Tls(e.to_string()))?;
    let cert = authority.issue_node(&uri, Some(ip), key.public_key_raw())?;
    write_atomic(
        &certs_dir.join("node-key.pem"),
        key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_atomic(&cert_path, cert.as_bytes(), 0o644)?;
    write_atomic(&sans_path, want.as_bytes(), 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (JoinTokens, Token, Token) {
        let (a, c) = (Token::generate([1; 32]), Token::generate([1; 32]));
        (
            JoinTokens {
                agent: a.to_string(),
                controller: c.to_string(),
            },
            a,
            c,
        )
    }

    fn request(secret: &str, role: NodeRole) -> JoinRequest {
        JoinRequest {
            secret: secret.into(),
            role,
            description: NodeDescription {
                hostname: "node-1".into(),
                addr: "10.0.0.5".into(),
                cluster_addr: "10.0.0.5:2377".into(),
                ..Default::default()
            },
            public_key: vec![],
        }
    }

    #[test]
    fn a_token_admits_its_own_role_only() {
        let (t, agent, controller) = tokens();
        assert_eq!(
            admit(&t, &request(&agent.secret, NodeRole::Agent)),
            Ok(NodeRole::Agent)
        );
        assert_eq!(
            admit(&t, &request(&controller.secret, NodeRole::Controller)),
            Ok(NodeRole::Controller)
        );
        let e = admit(&t, &request(&agent.secret, NodeRole::Controller)).unwrap_err();
        assert!(e.contains("controller token"), "{e}");
        let e = admit(&t, &request("f00d", NodeRole::Agent)).unwrap_err();
        assert!(e.contains("agent token"), "{e}");
        let mut r = request(&agent.secret, NodeRole::Agent);
        r.description.addr = "host.example".into();
        assert!(admit(&t, &r).unwrap_err().contains("not an IP address"));
        let mut r = request(&agent.secret, NodeRole::Agent);
        r.description.hostname.clear();
        assert!(admit(&t, &r).is_err());
    }

    #[test]
    fn new_ids_skip_taken_revoked_and_zero() {
        let mut s = ClusterState::default();
        s.revoked_nodes.insert(NodeId(2));
        s.apply(&Command::RegisterNode {
            id: NodeId(3),
            role: NodeRole::Agent,
            description: NodeDescription::default(),
            at_ns: 0,
        })
        .unwrap();
        let mut seq = [0u64, 2, 3, 4].into_iter();
        assert_eq!(new_node_id(&s, || seq.next().unwrap()), NodeId(4));
    }
}
