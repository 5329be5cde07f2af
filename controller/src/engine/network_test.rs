//! Unit tests of [`super`]: modes, port requests, subnets, rules and `NetworkSettings`.

use super::*;
use wharf_protocol::network::{mac_for, Proto};

fn state_with_endpoint(status: ContainerStatus) -> (ClusterState, ContainerId) {
    let mut s = ClusterState::default();
    let net = new_network(
        &s,
        NodeId(1),
        "front",
        Some(Subnet::parse("10.77.0.0/24").unwrap()),
        None,
        BTreeMap::new(),
        &[],
        "ab".repeat(32),
        0,
    )
    .unwrap();
    s.apply(&Command::CreateNetwork {
        network: net.clone(),
    })
    .unwrap();
    let id = ContainerId::from_bytes([3; 32]);
    let mut rec = wharf_protocol::fixtures::container(3, "web");
    rec.host_config_json = r#"{"NetworkMode":"front"}"#.into();
    rec.status = status;
    s.apply(&Command::CreateContainer {
        container: Box::new(rec),
    })
    .unwrap();
    s.apply(&Command::ConnectContainer {
        id: id.clone(),
        network: net.id.clone(),
        aliases: vec![],
    })
    .unwrap();
    let ip = Ipv4Addr::new(10, 77, 0, 2);
    s.apply(&Command::AttachEndpoints {
        id: id.clone(),
        endpoints: vec![Endpoint {
            network: net.id.clone(),
            ip,
            mac: mac_for(ip),
            ports: vec![PortMapping {
                proto: wharf_protocol::network::Proto::Tcp,
                container_port: 80,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8080,
            }],
            aliases: vec![],
            node: NodeId(1),
        }],
    })
    .unwrap();
    (s, id)
}

#[test]
fn rules_follow_the_endpoints_and_stale_ones_are_found() {
    let (s, id) = state_with_endpoint(ContainerStatus::Running);
    let set = rule_set(&s, NodeId(1));
    assert_eq!(set.bridges.len(), 1);
    assert_eq!(set.bridges[0].bridge, "br-abababababab");
    assert_eq!(set.publishes.len(), 1);
    assert_eq!(
        (set.publishes[0].container_ip, set.publishes[0].host_port),
        (Ipv4Addr::new(10, 77, 0, 2), 8080)
    );
    assert!(
        rule_set(&s, NodeId(2)).publishes.is_empty(),
        "other nodes publish nothing"
    );
    assert!(stale_endpoints(&s).is_empty());
    let (s, _) = state_with_endpoint(ContainerStatus::Created);
    assert_eq!(stale_endpoints(&s), vec![id]);
    let shown = network_settings_json(
        &s,
        &s.containers.values().next().unwrap().clone(),
        &json!({}),
        &BTreeSet::new(),
        "/proc/7/ns/net",
    );
    assert_eq!(
        shown["SandboxKey"], "/proc/7/ns/net",
        "as the agent reports it"
    );
    assert_eq!(shown["Ports"]["80/tcp"][0]["HostPort"], "8080");
    assert_eq!(shown["Networks"]["front"]["IPAddress"], "10.77.0.2");
    assert_eq!(
        shown["IPAddress"], "",
        "top-level fields are the default bridge's only"
    );
}

#[test]
fn rules_carry_internal_icc_and_masquerade_of_each_network() {
    let (mut s, _) = state_with_endpoint(ContainerStatus::Running);
    let id = s.networks.keys().next().unwrap().clone();
    assert_eq!(
        rule_set(&s, NodeId(1)).bridges[0],
        BridgeRule {
            bridge: "br-abababababab".into(),
            subnet: Subnet::parse("10.77.0.0/24").unwrap(),
            internal: false,
            icc: true,
            masquerade: true,
        }
    );
    let n = s.networks.get_mut(&id).unwrap();
    n.set_settings(true, false, false);
    let b = &rule_set(&s, NodeId(1)).bridges[0];
    assert!(b.internal && !b.icc && !b.masquerade);
}

#[test]
fn port_filters_parse() {
    assert_eq!(parse_port_filter("80"), Some((80, 80, Proto::Tcp)));
    assert_eq!(parse_port_filter("53/udp"), Some((53, 53, Proto::Udp)));
    assert_eq!(
        parse_port_filter("8000-8080/tcp"),
        Some((8000, 8080, Proto::Tcp))
    );
    assert_eq!(parse_port_filter("x"), None);
}

#[test]
fn modes_parse_like_docker() {
    assert_eq!(
        NetworkMode::parse(""),
        NetworkMode::Network("bridge".into())
    );
    assert_eq!(
        NetworkMode::parse("default"),
        NetworkMode::Network("bridge".into())
    );
    assert_eq!(NetworkMode::parse("none"), NetworkMode::None);
    assert_eq!(NetworkMode::parse("host"), NetworkMode::Host);
    assert_eq!(
        NetworkMode::parse("container:web"),
        NetworkMode::Container("web".into())
    );
    assert_eq!(
        NetworkMode::parse("front"),
        NetworkMode::Network("front".into())
    );
}

#[test]
fn port_requests_merge_bindings_and_publish_all() {
    let hc = json!({
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
        "PublishAllPorts": true
    });
    let cfg = json!({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}});
    let img = json!({"ExposedPorts": {"9000": {}}});
    let mut r = port_requests(&hc, &cfg, &img).unwrap();
    r.sort_by_key(|r| r.container_port);
    let got: Vec<(u16, u16)> = r.iter().map(|r| (r.container_port, r.host_port)).collect();
    assert_eq!(got, vec![(53, 0), (80, 8080), (443, 0), (9000, 0)]);
    assert!(port_requests(&json!({"PortBindings": {"x/tcp": []}}), &cfg, &img).is_err());
}

#[test]
fn new_networks_avoid_taken_subnets_and_routes() {
    let s = ClusterState::default();
    let routes = [Subnet::parse("10.192.0.0/24").unwrap()];
    let n = new_network(
        &s,
        NodeId(1),
        "front",
        None,
        None,
        BTreeMap::new(),
        &routes,
        "ab".repeat(32),
        0,
    )
    .unwrap();
    assert_eq!(n.subnet.to_string(), "10.192.1.0/24");
    assert_eq!(n.gateway, Ipv4Addr::new(10, 192, 1, 1));
    assert_eq!(n.bridge, "br-abababababab");
    assert!(new_network(
        &s,
        NodeId(1),
        "-x",
        None,
        None,
        BTreeMap::new(),
        &[],
        "a".into(),
        0
    )
    .is_err());
    let sn = Subnet::parse("10.9.0.0/24").unwrap();
    assert!(new_network(
        &s,
        NodeId(1),
        "x",
        Some(sn),
        Some(Ipv4Addr::new(10, 8, 0, 1)),
        BTreeMap::new(),
        &[],
        "a".into(),
        0
    )
    .is_err());
}
