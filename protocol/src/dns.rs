//! What the embedded DNS resolver of a user network answers: a [`DnsTable`] per network,
//! computed by the controller from the replicated state and served by the agent of the
//! network's node (Docker's 127.0.0.11, here on the network's gateway address).
//!
//! ```text
//!  controller: dns_tables(state, node, revision) ── NetworkRequest::SetDnsTable ──► agent
//!  agent: query from the network's subnet ─► DnsTable::lookup(name) ─► A records
//! ```
//!
//! Pure: the table is data, [`DnsTable::lookup`] a function of it. The agent's resolver
//! (node crate) parses queries and does the sockets.

use crate::network::Subnet;
use crate::state::ClusterState;
use crate::{ContainerId, NodeId};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// The names of one container on a network, and its address there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    /// The container's full ID (a query of 12 or more of its first hex digits matches).
    pub id: ContainerId,
    /// Its name, then its aliases on the network (`--network-alias`, `connect --alias`).
    pub names: Vec<String>,
    /// Its address on the network.
    pub ip: Ipv4Addr,
}

/// Everything the resolver of one user network needs: where it listens, whom it answers,
/// whether it may forward, and the names it knows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsTable {
    /// The network's ID.
    pub network: String,
    /// The address the resolver listens on (port 53 UDP): the network's gateway.
    pub gateway: Ipv4Addr,
    /// Only queries from this subnet are answered, so that a container cannot learn the
    /// addresses of another network through that network's gateway.
    pub subnet: Subnet,
    /// `--internal`: names not in the table get SERVFAIL instead of being forwarded.
    pub internal: bool,
    /// The controller's applied log index the table was computed at: an agent keeps the
    /// newest table it got, so two controllers' updates arriving out of order cannot
    /// leave an older one in place.
    pub revision: u64,
    /// The containers on the network, in the order of their IDs.
    pub records: Vec<DnsRecord>,
}

impl DnsTable {
    /// Addresses of the containers known as `name` (container name, alias, or 12 to 64
    /// first digits of the ID), case-insensitive, a final dot ignored; empty: not ours.
    pub fn lookup(&self, name: &str) -> Vec<Ipv4Addr> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return vec![];
        }
        let by_id = (12..=64).contains(&name.len());
        self.records
            .iter()
            .filter(|r| {
                r.names.iter().any(|n| n.eq_ignore_ascii_case(&name))
                    || (by_id && r.id.as_str().starts_with(&name))
            })
            .map(|r| r.ip)
            .collect()
    }
}

/// The table of user network `network` as the state says at log index `revision`: every
/// container with an endpoint on it. `None` for a default or unknown network (no
/// name resolution there).
pub fn dns_table(s: &ClusterState, network: &str, revision: u64) -> Option<DnsTable> {
    let n = s.networks.get(network).filter(|n| !n.default)?;
    let records = s
        .endpoints
        .iter()
        .filter_map(|(id, eps)| Some((s.containers.get(id)?, eps)))
        .flat_map(|(c, eps)| {
            eps.iter()
                .filter(|e| e.network == network)
                .map(move |e| DnsRecord {
                    id: c.id.clone(),
                    names: std::iter::once(c.name.as_str().to_string())
                        .chain(e.aliases.iter().cloned())
                        .collect(),
                    ip: e.ip,
                })
        })
        .collect();
    Some(DnsTable {
        network: n.id.clone(),
        gateway: n.gateway,
        subnet: n.subnet,
        internal: n.internal(),
        revision,
        records,
    })
}

/// The tables of every user network whose bridge is on `node` (bridge networks are local
/// to their node, and so are the endpoints on them), at log index `revision`.
pub fn dns_tables(s: &ClusterState, node: NodeId, revision: u64) -> Vec<DnsTable> {
    s.networks
        .values()
        .filter(|n| n.node == node)
        .filter_map(|n| dns_table(s, &n.id, revision))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::fixtures::container;
    use crate::network::{Endpoint, NetworkRecord};

    fn network(id: &str, node: u64, default: bool) -> NetworkRecord {
        let subnet = Subnet::parse("10.192.5.0/24").unwrap();
        NetworkRecord {
            id: id.into(),
            name: format!("name-{id}"),
            driver: "bridge".into(),
            subnet,
            gateway: subnet.gateway(),
            bridge: format!("br-{id}"),
            node: NodeId(node),
            labels: Default::default(),
            created_ns: 1,
            default,
        }
    }

    fn endpoint(network: &str, last: u8, aliases: &[&str]) -> Endpoint {
        Endpoint {
            network: network.into(),
            ip: Ipv4Addr::new(10, 192, 5, last),
            mac: [0; 6],
            ports: vec![],
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            node: NodeId(1),
        }
    }

    /// Two containers on `front` (one also on `back`), a created one without endpoints,
    /// endpoints of a container whose record is gone.
    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        s.networks
            .insert("front".into(), network("front", 1, false));
        s.networks.insert("back".into(), network("back", 1, false));
        s.networks
            .insert("bridge".into(), network("bridge", 1, true));
        s.networks.insert("far".into(), network("far", 2, false));
        for (n, name) in [(0xa1, "api"), (0xb2, "Web"), (0xc3, "idle")] {
            let c = container(n, name);
            s.containers.insert(c.id.clone(), c);
        }
        let api = ContainerId::from_bytes([0xa1; 32]);
        let web = ContainerId::from_bytes([0xb2; 32]);
        s.endpoints
            .insert(api, vec![endpoint("front", 2, &["backend", "API-2"])]);
        s.endpoints.insert(
            web,
            vec![endpoint("front", 3, &[]), endpoint("back", 4, &["w"])],
        );
        s.endpoints.insert(
            ContainerId::from_bytes([0xdd; 32]),
            vec![endpoint("front", 9, &["ghost"])],
        );
        s
    }

    #[test]
    fn names_aliases_and_ids_of_the_networks_containers_resolve() {
        let s = state();
        let t = dns_table(&s, "front", 7).unwrap();
        assert_eq!((t.revision, t.internal), (7, false));
        assert_eq!(t.gateway, Ipv4Addr::new(10, 192, 5, 1));
        let ip = |last| vec![Ipv4Addr::new(10, 192, 5, last)];
        assert_eq!(t.lookup("api"), ip(2));
        assert_eq!(
            t.lookup("API."),
            ip(2),
            "case and a final dot do not matter"
        );
        assert_eq!(t.lookup("backend"), ip(2));
        assert_eq!(t.lookup("api-2"), ip(2));
        assert_eq!(t.lookup("web"), ip(3));
        assert_eq!(t.lookup(&"b2".repeat(6)), ip(3), "12 digits of the ID");
        assert_eq!(t.lookup(&"B2".repeat(32)), ip(3), "the whole ID");
        assert!(
            t.lookup(&"b2".repeat(5)).is_empty(),
            "10 digits are too few"
        );
        assert!(t.lookup("w").is_empty(), "an alias on another network");
        assert!(t.lookup("ghost").is_empty(), "no record, no name");
        assert!(t.lookup("idle").is_empty(), "no endpoint, no name");
        assert!(t.lookup("").is_empty() && t.lookup(".").is_empty());
        let back = dns_table(&s, "back", 7).unwrap();
        assert_eq!(back.lookup("w"), ip(4));
        assert_eq!(back.lookup("Web"), ip(4));
        assert!(back.lookup("api").is_empty());
    }

    #[test]
    fn only_the_nodes_user_networks_have_tables() {
        let mut s = state();
        assert!(dns_table(&s, "bridge", 1).is_none(), "the default bridge");
        assert!(dns_table(&s, "gone", 1).is_none());
        let mut nets: Vec<String> = dns_tables(&s, NodeId(1), 1)
            .into_iter()
            .map(|t| t.network)
            .collect();
        nets.sort();
        assert_eq!(nets, ["back", "front"]);
        assert_eq!(dns_tables(&s, NodeId(2), 1).len(), 1);
        s.networks
            .get_mut("back")
            .unwrap()
            .set_settings(true, true, true);
        assert!(dns_table(&s, "back", 1).unwrap().internal);
    }

    /// The table as it crosses to the agent: fields in order, records as a sequence.
    #[test]
    fn golden_bytes_of_a_table() {
        let t = DnsTable {
            network: "n".into(),
            gateway: Ipv4Addr::new(10, 0, 0, 1),
            subnet: Subnet::parse("10.0.0.0/24").unwrap(),
            internal: true,
            revision: 0x0102,
            records: vec![DnsRecord {
                id: ContainerId::from_bytes([0xab; 32]),
                names: vec!["a".into()],
                ip: Ipv4Addr::new(10, 0, 0, 2),
            }],
        };
        let bytes = encode(&t).unwrap();
        let mut want = hex::decode(
            "01\
             01000000000000006e\
             0a000001\
             0a00000018\
             01\
             0201000000000000\
             0100000000000000\
             4000000000000000",
        )
        .unwrap();
        want.extend("ab".repeat(32).as_bytes());
        want.extend(hex::decode("0100000000000000010000000000000061").unwrap());
        want.extend([10, 0, 0, 2]);
        assert_eq!(hex::encode(&bytes), hex::encode(&want));
        assert_eq!(decode::<DnsTable>(&bytes).unwrap(), t);
    }
}
