//! The embedded DNS resolver of user networks (Docker's 127.0.0.11, here on the network's
//! gateway address): containers on a user network resolve each other's names, aliases and
//! short IDs; every other query is forwarded to the host's name servers, except from an
//! `--internal` network (no way out of the host, as Docker: the answer is SERVFAIL).
//! Only queries from the network's own subnet are answered, so that a container cannot
//! learn the addresses of another network through that network's gateway.
//!
//! ```text
//!  container ──udp/53──► gateway IP (wharf, one task per user network)
//!                          ├─ name/alias/ID of a container on that network ─► A record
//!                          └─ anything else ─► host resolv.conf name server ─► relayed back
//! ```
//!
//! [`answer`] decides (pure); [`DnsServers`] carries it out. The resolver lives in the
//! `wharf` process: while wharf is down, containers keep their addresses and published
//! ports but names do not resolve.

use crate::raft::Store;
use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;
use tracing::{debug, info, warn};
use wharf_protocol::state::ClusterState;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: relay to an upstream server.
    Forward,
    /// Not a DNS query: drop it.
    Drop,
}

/// Addresses of containers on network `network` known as `name` (container name, alias,
/// short or full ID), case-insensitive.
pub fn lookup(s: &ClusterState, network: &str, name: &str) -> Vec<Ipv4Addr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name.is_empty() {
        return vec![];
    }
    let mut out = vec![];
    for (id, eps) in &s.endpoints {
        let Some(c) = s.containers.get(id) else {
            continue;
        };
        for e in eps.iter().filter(|e| e.network == network) {
            let hit = c.name.as_str().eq_ignore_ascii_case(&name)
                || e.aliases.iter().any(|a| a.eq_ignore_ascii_case(&name))
                || (name.len() >= 12 && id.as_str().starts_with(&name) && name.len() <= 64);
            if hit {
                out.push(e.ip);
            }
        }
    }
    out
}

/// Answer `query` from `resolve` (name → addresses; empty: not ours).
pub fn answer(query: &[u8], resolve: impl Fn(&str) -> Vec<Ipv4Addr>) -> Answer {
    let Ok(packet) = Packet::parse(query) else {
        return Answer::Drop;
    };
    if packet.has_flags(PacketFlag::RESPONSE) || packet.questions.len() != 1 {
        return Answer::Forward;
    }
    let q = &packet.questions[0];
    let name = q.qname.to_string();
    let addrs = resolve(&name);
    if addrs.is_empty() {
        return Answer::Forward;
    }
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::RECURSION_AVAILABLE);
    if packet.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED);
    }
    reply.questions.push(q.clone());
    match q.qtype {
        QTYPE::TYPE(TYPE::A) | QTYPE::ANY => {
            for ip in addrs {
                reply.answers.push(ResourceRecord::new(
                    q.qname.clone(),
                    CLASS::IN,
                    600,
                    RData::A(A::from(ip)),
                ));
            }
        }
        // A known name without records of that type (AAAA, MX, ...): an empty answer.
        _ => {}
    }
    *reply.rcode_mut() = RCODE::NoError;
    match reply.build_bytes_vec() {
        Ok(b) => Answer::Reply(b),
        Err(_) => Answer::Drop,
    }
}

/// The reply to a query that is not ours and may not be forwarded (from an internal
/// network): SERVFAIL, so that the client gives up at once instead of timing out.
pub fn not_forwarded(query: &[u8]) -> Answer {
    let Ok(packet) = Packet::parse(query) else {
        return Answer::Drop;
    };
    let mut reply = Packet::new_reply(packet.id());
    reply.set_flags(PacketFlag::RECURSION_AVAILABLE);
    reply.questions = packet.questions.clone();
    *reply.rcode_mut() = RCODE::ServerFailure;
    match reply.build_bytes_vec() {
        Ok(b) => Answer::Reply(b),
        Err(_) => Answer::Drop,
    }
}

/// What the resolver of network `network` does with `query` from `from` (pure): drop it
/// unless it comes from the network's subnet; answer it from the state; forward it, or
/// from an internal network refuse it.
pub fn decide(s: &ClusterState, network: &str, from: Ipv4Addr, query: &[u8]) -> Answer {
    let Some(n) = s.networks.get(network) else {
        return Answer::Drop;
    };
    if !n.subnet.contains(from) {
        return Answer::Drop;
    }
    match answer(query, |name| lookup(s, network, name)) {
        Answer::Forward if n.internal() => not_forwarded(query),
        a => a,
    }
}

/// The host's name servers (`/etc/resolv.conf`; loopback ones work from the host).
fn upstreams() -> Vec<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if out.is_empty() {
        out.push(SocketAddr::from(([8, 8, 8, 8], 53)));
    }
    out
}

async fn forward(query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams() {
        let bind: SocketAddr = if up.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let Ok(sock) = tokio::net::UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(query, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

/// The resolver tasks, one per user network of this node.
#[derive(Default)]
pub struct DnsServers {
    tasks: Mutex<HashMap<String, tokio::task::AbortHandle>>,
}

impl DnsServers {
    /// Serve network `network` on `gateway:53` unless already served.
    pub async fn start(&self, store: Store, network: String, gateway: Ipv4Addr) {
        if self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&network)
        {
            return;
        }
        let sock = match tokio::net::UdpSocket::bind(SocketAddr::from((gateway, 53))).await {
            Ok(s) => std::sync::Arc::new(s),
            Err(e) => {
                warn!(%gateway, error = %e, "embedded DNS cannot listen");
                return;
            }
        };
        info!(%gateway, "embedded DNS listening");
        let net = network.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    continue;
                };
                let SocketAddr::V4(from_v4) = from else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let decided = store.read(|s| decide(s, &net, *from_v4.ip(), &query));
                let sock = sock.clone();
                match decided {
                    Answer::Reply(bytes) => {
                        let _ = sock.send_to(&bytes, from).await;
                    }
                    Answer::Forward => {
                        tokio::spawn(async move {
                            if let Some(bytes) = forward(&query).await {
                                let _ = sock.send_to(&bytes, from).await;
                            } else {
                                debug!("no upstream answered");
                            }
                        });
                    }
                    Answer::Drop => {}
                }
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(network, task.abort_handle());
    }

    /// Stop serving `network`.
    pub fn stop(&self, network: &str) {
        if let Some(t) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(network)
        {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};

    fn query(name: &str, qtype: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.set_flags(PacketFlag::RECURSION_DESIRED);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(qtype),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    fn known(name: &str) -> Vec<Ipv4Addr> {
        if name.trim_end_matches('.') == "web" {
            vec![Ipv4Addr::new(10, 192, 0, 2)]
        } else {
            vec![]
        }
    }

    #[test]
    fn known_names_are_answered_and_others_forwarded() {
        let Answer::Reply(bytes) = answer(&query("web", TYPE::A), known) else {
            panic!("expected a reply");
        };
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.id(), 7);
        assert_eq!(p.answers.len(), 1);
        match &p.answers[0].rdata {
            RData::A(a) => assert_eq!(Ipv4Addr::from(a.address), Ipv4Addr::new(10, 192, 0, 2)),
            other => panic!("{other:?}"),
        }
        let Answer::Reply(bytes) = answer(&query("web", TYPE::AAAA), known) else {
            panic!("expected a reply");
        };
        assert!(Packet::parse(&bytes).unwrap().answers.is_empty());
        assert_eq!(
            answer(&query("example.com", TYPE::A), known),
            Answer::Forward
        );
        assert_eq!(answer(b"\x01", known), Answer::Drop);
    }
    #[test]
    fn internal_networks_do_not_forward_and_other_subnets_get_nothing() {
        use wharf_protocol::network::{NetworkRecord, Subnet};
        let mut s = ClusterState::default();
        let subnet = Subnet::parse("10.192.5.0/24").unwrap();
        let mut net = NetworkRecord {
            id: "n".into(),
            name: "back".into(),
            driver: "bridge".into(),
            subnet,
            gateway: subnet.gateway(),
            bridge: "br-n".into(),
            node: wharf_protocol::NodeId(1),
            labels: Default::default(),
            created_ns: 1,
            default: false,
        };
        s.networks.insert("n".into(), net.clone());
        let inside = Ipv4Addr::new(10, 192, 5, 9);
        let q = query("example.com", TYPE::A);
        assert_eq!(decide(&s, "n", inside, &q), Answer::Forward);
        assert_eq!(
            decide(&s, "n", Ipv4Addr::new(10, 192, 6, 9), &q),
            Answer::Drop,
            "a query from another network's address"
        );
        assert_eq!(decide(&s, "gone", inside, &q), Answer::Drop);
        net.set_settings(true, true, true);
        s.networks.insert("n".into(), net);
        let Answer::Reply(bytes) = decide(&s, "n", inside, &q) else {
            panic!("expected a refusal");
        };
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!((p.id(), p.rcode()), (7, RCODE::ServerFailure));
    }
}
