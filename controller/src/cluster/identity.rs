//! Who is on the other end of a cluster connection, and the join tokens (pure).
//!
//! A node certificate names its holder with one URI SAN, `wharf://agent/<id>` or
//! `wharf://controller/<id>` (id in 16 hex digits); a client certificate (the
//! `docker` user's) has none. The role decides what a connection may do: only a
//! controller's certificate speaks Raft, only a node's speaks the agent protocol, and a
//! node's certificate is no Docker client's.
//!
//! A join token is `WHARF-1-<sha256 of the CA certificate, hex>-<secret>`, as Swarm's
//! `SWMTKN-1-…`: the digest lets the joining host check the cluster it reached before it
//! trusts it, and the secret (one per role) proves to the cluster that it may join.

use super::ClusterError;
use wharf_protocol::node_state::NodeRole;
use wharf_protocol::NodeId;

/// What a peer's certificate says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A host of the cluster, with its role.
    Node {
        /// Controller or agent.
        role: NodeRole,
        /// Its ID.
        id: NodeId,
    },
    /// A certificate of the cluster CA without a node name: a Docker client's.
    Client,
}

const URI_PREFIX: &str = "wharf://";

/// The URI SAN naming node `id` in `role`.
pub fn node_uri(role: NodeRole, id: NodeId) -> String {
    let r = match role {
        NodeRole::Controller => "controller",
        NodeRole::Agent => "agent",
    };
    format!("{URI_PREFIX}{r}/{}", node_id_text(id))
}

/// A node ID as `docker node ls` shows it: 16 hex digits.
pub fn node_id_text(id: NodeId) -> String {
    format!("{:016x}", id.0)
}

/// Parse [`node_id_text`].
pub fn parse_node_id(s: &str) -> Option<NodeId> {
    (s.len() == 16)
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
        .map(NodeId)
}

/// The identity the URI SANs of a verified certificate give (pure).
pub fn identify<'a>(uris: impl IntoIterator<Item = &'a str>) -> Result<Identity, ClusterError> {
    let mut found = None;
    for uri in uris {
        let Some(rest) = uri.strip_prefix(URI_PREFIX) else {
            continue;
        };
        let (role, id) = rest
            .split_once('/')
            .ok_or_else(|| ClusterError::Identity(format!("malformed node name {uri}")))?;
        let role = match role {
            "controller" => NodeRole::Controller,
            "agent" => NodeRole::Agent,
            _ => return Err(ClusterError::Identity(format!("unknown role in {uri}"))),
        };
        let id = parse_node_id(id)
            .ok_or_else(|| ClusterError::Identity(format!("malformed node ID in {uri}")))?;
        if found.replace(Identity::Node { role, id }).is_some() {
            return Err(ClusterError::Identity(
                "the certificate names more than one node".into(),
            ));
        }
    }
    Ok(found.unwrap_or(Identity::Client))
}

/// The identity of a peer certificate the TLS layer has already verified against the
/// cluster CA.
pub fn identify_cert(
    der: &rustls::pki_types::CertificateDer<'_>,
) -> Result<Identity, ClusterError> {
    let cert = webpki::EndEntityCert::try_from(der)
        .map_err(|e| ClusterError::Identity(format!("unreadable certificate: {e}")))?;
    identify(cert.valid_uri_names())
}

/// The join tokens of a cluster, one per role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinTokens {
    /// Admits agents.
    pub agent: String,
    /// Admits controllers.
    pub controller: String,
}

/// A parsed join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// sha256 of the CA certificate's DER.
    pub ca_digest: [u8; 32],
    /// The secret (hex).
    pub secret: String,
}

const TOKEN_PREFIX: &str = "WHARF-1-";

impl Token {
    /// A new token for the CA of digest `ca_digest`.
    pub fn generate(ca_digest: [u8; 32]) -> Token {
        Token {
            ca_digest,
            secret: hex::encode(rand::random::<[u8; 20]>()),
        }
    }

    /// Parse `WHARF-1-<64 hex>-<secret>`.
    pub fn parse(text: &str) -> Result<Token, ClusterError> {
        let bad = || {
            ClusterError::Token(
                "malformed join token (expected WHARF-1-<CA digest>-<secret>, as `wharf cluster token` prints it)"
                    .into(),
            )
        };
        let rest = text.trim().strip_prefix(TOKEN_PREFIX).ok_or_else(bad)?;
        let (digest, secret) = rest.split_once('-').ok_or_else(bad)?;
        let bytes = hex::decode(digest).map_err(|_| bad())?;
        let ca_digest: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Token {
            ca_digest,
            secret: secret.to_string(),
        })
    }
}

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{TOKEN_PREFIX}{}-{}",
            hex::encode(self.ca_digest),
            self.secret
        )
    }
}

/// The role `secret` admits, comparing in constant time; `None` for no role.
pub fn role_of_secret(tokens: &JoinTokens, secret: &str) -> Option<NodeRole> {
    let matches = |token: &str| {
        Token::parse(token).is_ok_and(|t| {
            let (a, b) = (t.secret.as_bytes(), secret.as_bytes());
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        })
    };
    if matches(&tokens.agent) {
        Some(NodeRole::Agent)
    } else if matches(&tokens.controller) {
        Some(NodeRole::Controller)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip_and_clients_have_none() {
        let uri = node_uri(NodeRole::Agent, NodeId(0xabc));
        assert_eq!(uri, "wharf://agent/0000000000000abc");
        assert_eq!(
            identify([uri.as_str()]).unwrap(),
            Identity::Node {
                role: NodeRole::Agent,
                id: NodeId(0xabc)
            }
        );
        let ctl = node_uri(NodeRole::Controller, NodeId(7));
        assert!(matches!(
            identify([ctl.as_str()]).unwrap(),
            Identity::Node {
                role: NodeRole::Controller,
                ..
            }
        ));
        assert_eq!(identify([]).unwrap(), Identity::Client);
        assert_eq!(identify(["https://example.com"]).unwrap(), Identity::Client);
        assert!(identify(["wharf://admin/0000000000000001"]).is_err());
        assert!(identify(["wharf://agent/xyz"]).is_err());
        assert!(identify([uri.as_str(), ctl.as_str()]).is_err());
    }

    #[test]
    fn tokens_parse_and_admit_only_their_role() {
        let agent = Token::generate([7; 32]);
        let text = agent.to_string();
        assert!(text.starts_with("WHARF-1-0707"));
        assert_eq!(Token::parse(&text).unwrap(), agent);
        assert_eq!(Token::parse(&format!(" {text}\n")).unwrap(), agent);
        for bad in [
            "",
            "SWMTKN-1-abc-def",
            "WHARF-1-0707-0123456789abcdef",
            &format!("WHARF-1-{}-short", hex::encode([7u8; 32])),
            &format!("WHARF-1-{}", hex::encode([7u8; 32])),
        ] {
            let e = Token::parse(bad).unwrap_err().to_string();
            assert!(e.contains("malformed join token"), "{bad}: {e}");
        }
        let controller = Token::generate([7; 32]);
        let tokens = JoinTokens {
            agent: text,
            controller: controller.to_string(),
        };
        assert_eq!(
            role_of_secret(&tokens, &agent.secret),
            Some(NodeRole::Agent)
        );
        assert_eq!(
            role_of_secret(&tokens, &controller.secret),
            Some(NodeRole::Controller)
        );
        assert_eq!(role_of_secret(&tokens, "00"), None);
        assert_eq!(role_of_secret(&tokens, ""), None);
    }
}
