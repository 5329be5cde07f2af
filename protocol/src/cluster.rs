//! Messages between hosts and controllers outside the agent protocol: joining the
//! cluster (over TLS with the ALPN `wharf-join/1`) and the first frame of an agent's
//! connection (`wharf-agent/2`). Encoded with [`crate::codec`], one length-prefixed frame
//! each.

use crate::ids::NodeId;
use crate::node_state::{NodeDescription, NodeRole};
use serde::{Deserialize, Serialize};

/// A host asks to join: the token's secret proves it may, as the role it names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The secret part of the join token.
    pub secret: String,
    /// The role the host asks for (the token must be that role's).
    pub role: NodeRole,
    /// What the host says of itself.
    pub description: NodeDescription,
    /// Its public key (SubjectPublicKeyInfo's key bits, ECDSA P-256); the private key
    /// never leaves the host.
    pub public_key: Vec<u8>,
}

/// What a controller answers a join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinResponse {
    /// Admitted.
    Admitted(Box<Admission>),
    /// Refused, with the reason.
    Refused(String),
}

/// What an admitted host receives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admission {
    /// Its ID in the cluster.
    pub node: NodeId,
    /// Its certificate, signed by the cluster CA (PEM).
    pub cert_pem: String,
    /// The cluster CA's certificate (PEM).
    pub ca_pem: String,
    /// Controllers only: the CA's key (PEM), so that every controller can admit hosts.
    pub ca_key_pem: String,
    /// Controllers only: the join tokens (agent, controller).
    pub tokens: Option<(String, String)>,
    /// The cluster addresses of the controllers (`IP:2377`).
    pub controllers: Vec<String>,
}

/// The first frame an agent sends on its connection to a controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentHello {
    /// What the host says of itself now.
    pub description: NodeDescription,
}

/// The controller's answer to [`AgentHello`], before the agent protocol starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentWelcome {
    /// Accepted: the cluster addresses of the controllers now.
    Accepted {
        /// `IP:2377` of each controller.
        controllers: Vec<String>,
    },
    /// Refused, with the reason (a revoked or unknown node).
    Refused(String),
}

/// An event of one controller's engine, passed to the others so that `docker events`
/// on any controller shows the whole cluster's (ALPN `wharf-events/1`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// `container`, `image`, `volume`, `network` or `daemon`.
    pub kind: String,
    /// Docker's action (`create`, `start`, `die`, ...).
    pub action: String,
    /// The object's ID.
    pub actor_id: String,
    /// `Actor.Attributes`.
    pub attributes: std::collections::BTreeMap<String, String>,
    /// When, ns since the epoch.
    pub time_ns: i64,
}
