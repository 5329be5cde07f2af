use super::*;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, PacketFlag, Question, CLASS, QTYPE, RCODE, TYPE};
use wharf_protocol::dns::DnsRecord;
use wharf_protocol::network::Subnet;
use wharf_protocol::ContainerId;

fn table(gateway: [u8; 4], revision: u64, names: &[(&str, [u8; 4])]) -> DnsTable {
    DnsTable {
        network: "n".into(),
        gateway: gateway.into(),
        subnet: Subnet::parse("127.0.0.0/8").unwrap(),
        internal: true,
        revision,
        records: names
            .iter()
            .enumerate()
            .map(|(i, (name, ip))| DnsRecord {
                id: ContainerId::from_bytes([i as u8; 32]),
                names: vec![name.to_string()],
                ip: (*ip).into(),
            })
            .collect(),
    }
}

/// Ask `server` for `name` (A) as a container would; the reply's code and addresses.
async fn ask(server: SocketAddr, name: &str) -> (RCODE, Vec<Ipv4Addr>) {
    let mut p = Packet::new_query(42);
    p.set_flags(PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        QTYPE::TYPE(TYPE::A),
        simple_dns::QCLASS::CLASS(CLASS::IN),
        false,
    ));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&p.build_bytes_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    // A guard against a hang, not a measure: the reply is local.
    let (n, _) = tokio::time::timeout(Duration::from_secs(20), client.recv_from(&mut buf))
        .await
        .expect("the resolver answers")
        .unwrap();
    let reply = Packet::parse(&buf[..n]).unwrap();
    assert_eq!(reply.id(), 42);
    let ips = reply
        .answers
        .iter()
        .filter_map(|a| match &a.rdata {
            RData::A(a) => Some(Ipv4Addr::from(a.address)),
            _ => None,
        })
        .collect();
    (reply.rcode(), ips)
}

#[test]
fn a_table_starts_updates_moves_or_is_ignored() {
    let t = table([10, 0, 0, 1], 5, &[]);
    assert_eq!(change(None, &t), Change::Start);
    assert_eq!(change(Some(([10, 0, 0, 1].into(), 5)), &t), Change::Update);
    assert_eq!(change(Some(([10, 0, 0, 1].into(), 4)), &t), Change::Update);
    assert_eq!(change(Some(([10, 0, 0, 1].into(), 6)), &t), Change::Ignore);
    assert_eq!(change(Some(([10, 0, 0, 9].into(), 4)), &t), Change::Restart);
    assert_eq!(
        change(Some(([10, 0, 0, 9].into(), 6)), &t),
        Change::Ignore,
        "an older table moves nothing"
    );
}

#[test]
fn upstreams_are_the_resolv_conf_servers_or_googles() {
    let text = "# x\nnameserver 127.0.0.53\n nameserver ::1\nsearch a\nnameserver bogus\n";
    assert_eq!(
        upstreams(text),
        [
            "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(upstreams(""), ["8.8.8.8:53".parse().unwrap()]);
}

/// A resolver on loopback (port 0: any free one) answers what its newest table says,
/// moves with its gateway, and closes its socket when stopped.
#[tokio::test]
async fn a_resolver_serves_the_newest_table_and_stops() {
    let r = Resolvers::on_port(0);
    r.set(table([127, 0, 0, 1], 5, &[("web", [10, 0, 0, 2])]))
        .await
        .unwrap();
    let addr = r.local_addr("n").await.unwrap();
    assert_eq!(
        ask(addr, "web").await,
        (RCODE::NoError, vec![[10, 0, 0, 2].into()])
    );
    assert_eq!(
        ask(addr, "example.com").await.0,
        RCODE::ServerFailure,
        "internal: nothing forwarded"
    );

    r.set(table([127, 0, 0, 1], 7, &[("db", [10, 0, 0, 3])]))
        .await
        .unwrap();
    assert_eq!(r.local_addr("n").await, Some(addr), "the same socket");
    assert_eq!(
        ask(addr, "db").await,
        (RCODE::NoError, vec![[10, 0, 0, 3].into()])
    );
    assert_eq!(ask(addr, "web").await.0, RCODE::ServerFailure);
    r.set(table([127, 0, 0, 1], 6, &[("web", [10, 0, 0, 2])]))
        .await
        .unwrap();
    assert_eq!(
        ask(addr, "db").await.1,
        [Ipv4Addr::new(10, 0, 0, 3)],
        "a late older table changes nothing"
    );

    r.set(table([127, 0, 0, 2], 8, &[("db", [10, 0, 0, 3])]))
        .await
        .unwrap();
    let moved = r.local_addr("n").await.unwrap();
    assert_eq!(moved.ip(), IpAddr::from([127, 0, 0, 2]));
    assert_eq!(ask(moved, "db").await.1, [Ipv4Addr::new(10, 0, 0, 3)]);
    assert!(
        std::net::UdpSocket::bind(addr).is_ok(),
        "the old address is free"
    );

    r.stop("n").await;
    r.stop("n").await;
    assert_eq!(r.local_addr("n").await, None);
    assert!(
        std::net::UdpSocket::bind(moved).is_ok(),
        "a stopped resolver's address is free at once"
    );
}

#[tokio::test]
async fn an_address_that_cannot_be_bound_is_an_error_naming_the_network() {
    let r = Resolvers::on_port(0);
    let e = r
        .set(table([192, 0, 2, 1], 1, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("embedded DNS of network n: bind 192.0.2.1:0"),
        "{e}"
    );
    assert_eq!(r.local_addr("n").await, None);
}
