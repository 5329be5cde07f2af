//! What a user network's resolver does with one datagram (pure): answer it from the
//! network's [`DnsTable`], forward it upstream, refuse it (`--internal`), or drop it.

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, PacketFlag, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use std::net::Ipv4Addr;
use wharf_protocol::dns::DnsTable;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not ours: relay to an upstream server.
    Forward,
    /// Not a DNS query, or not from the network: drop it.
    Drop,
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

/// What the resolver of a network does with `query` from `from`, given the network's
/// table (`None`: the network is no longer served): drop it unless it comes from the
/// network's subnet; answer it from the table; forward it, or from an internal network
/// refuse it.
pub fn decide(table: Option<&DnsTable>, from: Ipv4Addr, query: &[u8]) -> Answer {
    let Some(t) = table else {
        return Answer::Drop;
    };
    if !t.subnet.contains(from) {
        return Answer::Drop;
    }
    match answer(query, |name| t.lookup(name)) {
        Answer::Forward if t.internal => not_forwarded(query),
        a => a,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question};
    use wharf_protocol::dns::DnsRecord;
    use wharf_protocol::network::Subnet;
    use wharf_protocol::ContainerId;

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

    fn addresses(reply: &[u8]) -> Vec<Ipv4Addr> {
        Packet::parse(reply)
            .unwrap()
            .answers
            .iter()
            .map(|a| match &a.rdata {
                RData::A(a) => Ipv4Addr::from(a.address),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn known_names_are_answered_and_others_forwarded() {
        let Answer::Reply(bytes) = answer(&query("web", TYPE::A), known) else {
            panic!("expected a reply");
        };
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!(p.id(), 7);
        assert!(p.has_flags(PacketFlag::RESPONSE | PacketFlag::AUTHORITATIVE_ANSWER));
        assert_eq!(addresses(&bytes), [Ipv4Addr::new(10, 192, 0, 2)]);
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

    fn table(internal: bool) -> DnsTable {
        DnsTable {
            network: "n".into(),
            gateway: Ipv4Addr::new(10, 192, 5, 1),
            subnet: Subnet::parse("10.192.5.0/24").unwrap(),
            internal,
            revision: 1,
            records: vec![DnsRecord {
                id: ContainerId::from_bytes([0xab; 32]),
                names: vec!["web".into(), "front".into()],
                ip: Ipv4Addr::new(10, 192, 5, 2),
            }],
        }
    }

    #[test]
    fn internal_networks_do_not_forward_and_other_subnets_get_nothing() {
        let t = table(false);
        let inside = Ipv4Addr::new(10, 192, 5, 9);
        let q = query("example.com", TYPE::A);
        assert_eq!(decide(Some(&t), inside, &q), Answer::Forward);
        assert_eq!(
            decide(Some(&t), Ipv4Addr::new(10, 192, 6, 9), &q),
            Answer::Drop,
            "a query from another network's address"
        );
        assert_eq!(decide(None, inside, &q), Answer::Drop, "a network gone");
        let t = table(true);
        let Answer::Reply(bytes) = decide(Some(&t), inside, &q) else {
            panic!("expected a refusal");
        };
        let p = Packet::parse(&bytes).unwrap();
        assert_eq!((p.id(), p.rcode()), (7, RCODE::ServerFailure));
        // Its own names are still answered.
        let Answer::Reply(bytes) = decide(Some(&t), inside, &query("front", TYPE::A)) else {
            panic!("expected an answer");
        };
        assert_eq!(addresses(&bytes), [Ipv4Addr::new(10, 192, 5, 2)]);
    }
}
