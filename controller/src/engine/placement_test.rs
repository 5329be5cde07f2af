//! `place` over hand-built states: each filter, its error and its HTTP class, the
//! ranking, and what a create body says.

use super::*;
use wharf_protocol::network::{Endpoint, NetworkRecord, Proto, Subnet};
use wharf_protocol::node_state::{Availability, NodeDescription, NodeRole, NodeState};
use wharf_protocol::state::{ImageRecord, VolumeRecord};
use wharf_protocol::{DiffId, Digest};

fn node(id: u64, hostname: &str, labels: &[(&str, &str)]) -> NodeRecord {
    NodeRecord {
        id: NodeId(id),
        role: NodeRole::Agent,
        description: NodeDescription {
            hostname: hostname.into(),
            addr: format!("10.0.0.{id}"),
            cpus: 2,
            memory: 1 << 30,
            runs_containers: true,
            ..Default::default()
        },
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        availability: Availability::Active,
        state: NodeState::Ready,
        created_ns: 0,
        updated_ns: 0,
    }
}

/// Nodes 1 (`a`, zone=x), 2 (`b`, zone=y), 3 (`c`, zone=y), all holding image `img`.
fn state() -> (ClusterState, ImageId) {
    let mut s = ClusterState::default();
    for n in [
        node(1, "a", &[("zone", "x")]),
        node(2, "b", &[("zone", "y")]),
        node(3, "c", &[("zone", "y")]),
    ] {
        s.nodes.insert(n.id, n);
    }
    let image = ImageRecord {
        id: ImageId(Digest::of(b"img")),
        config: vec![],
        diff_ids: vec![DiffId(Digest::of(b"l1"))],
        size: 0,
        loaded_ns: 0,
    };
    let id = image.id;
    s.images.insert(id, image);
    s.tags.insert("img:latest".into(), id);
    s.layers
        .insert(DiffId(Digest::of(b"l1")), [1, 2, 3].map(NodeId).into());
    (s, id)
}

fn add_container(s: &mut ClusterState, n: u8, name: &str, on: u64, host_config: &str) {
    let mut c = wharf_protocol::fixtures::container(n, name);
    c.node = NodeId(on);
    c.host_config_json = host_config.into();
    s.containers.insert(c.id.clone(), c);
}

fn req(image: ImageId) -> PlacementRequest {
    PlacementRequest {
        image: Some((image, "img".into())),
        ..Default::default()
    }
}

fn kind(e: PlacementError) -> ErrorKind {
    EngineError::from(e).kind
}

#[test]
fn spread_takes_the_node_with_fewest_containers_then_the_lowest_id() {
    let (mut s, img) = state();
    assert_eq!(place(&s, &req(img)).unwrap().node, NodeId(1));
    add_container(&mut s, 1, "x1", 1, "{}");
    assert_eq!(place(&s, &req(img)).unwrap().node, NodeId(2));
    add_container(&mut s, 2, "x2", 2, "{}");
    add_container(&mut s, 3, "x3", 3, "{}");
    add_container(&mut s, 4, "x4", 1, "{}");
    let p = place(&s, &req(img)).unwrap();
    assert_eq!(p.node, NodeId(2));
    assert!(p.reason.contains("on b"), "{}", p.reason);
    assert_eq!(image_targets(&s), vec![NodeId(2), NodeId(3), NodeId(1)]);
}

#[test]
fn no_node_or_none_ready_is_unavailable() {
    let (mut s, img) = state();
    let empty = ClusterState::default();
    assert_eq!(place(&empty, &req(img)), Err(PlacementError::NoReadyAgent));
    for n in s.nodes.values_mut() {
        n.state = NodeState::Down;
    }
    let e = place(&s, &req(img)).unwrap_err();
    assert_eq!(e, PlacementError::NoReadyAgent);
    assert_eq!(kind(e), ErrorKind::Unavailable);
    assert!(image_targets(&s).is_empty());
}

#[test]
fn drained_paused_and_containerless_nodes_take_nothing() {
    let (mut s, img) = state();
    s.nodes.get_mut(&NodeId(1)).unwrap().availability = Availability::Drain;
    s.nodes.get_mut(&NodeId(2)).unwrap().availability = Availability::Pause;
    assert_eq!(place(&s, &req(img)).unwrap().node, NodeId(3));
    s.nodes
        .get_mut(&NodeId(3))
        .unwrap()
        .description
        .runs_containers = false;
    assert_eq!(place(&s, &req(img)), Err(PlacementError::NoReadyAgent));
}

#[test]
fn constraints_on_name_id_and_labels() {
    let (s, img) = state();
    let with = |c: &[&str]| PlacementRequest {
        constraints: c.iter().map(|c| Constraint::parse(c).unwrap()).collect(),
        ..req(img)
    };
    assert_eq!(place(&s, &with(&["node==c"])).unwrap().node, NodeId(3));
    assert_eq!(place(&s, &with(&["node==2"])).unwrap().node, NodeId(2));
    assert_eq!(place(&s, &with(&["node!=a"])).unwrap().node, NodeId(2));
    assert_eq!(
        place(&s, &with(&["node.labels.zone==y", "node!=b"]))
            .unwrap()
            .node,
        NodeId(3)
    );
    assert_eq!(
        place(&s, &with(&["node.labels.zone!=y"])).unwrap().node,
        NodeId(1)
    );
    let p = place(&s, &with(&["node==c"])).unwrap();
    assert!(p.reason.contains("constraint node==c"), "{}", p.reason);
    let e = place(&s, &with(&["node.labels.zone==y", "node==a"])).unwrap_err();
    assert_eq!(e, PlacementError::Unmet("node==a".into()));
    assert!(e.to_string().contains("node==a"));
    assert_eq!(kind(e), ErrorKind::Conflict);
    let e = place(&s, &with(&["node.labels.disk==ssd"])).unwrap_err();
    assert_eq!(e, PlacementError::Unmet("node.labels.disk==ssd".into()));
}

#[test]
fn malformed_constraints_are_400_with_their_text() {
    for bad in ["node=a", "node==", "host==a", "node.labels.==x", "zone"] {
        let e = Constraint::parse(bad).unwrap_err();
        assert_eq!(e, PlacementError::Malformed(bad.into()));
        assert!(e.to_string().contains(bad));
        assert_eq!(kind(e), ErrorKind::InvalidParameter);
    }
}

#[test]
fn an_image_on_no_candidate_is_409_naming_its_holders_never_404() {
    let (mut s, img) = state();
    s.layers
        .insert(DiffId(Digest::of(b"l1")), [NodeId(3)].into());
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Down;
    let e = place(&s, &req(img)).unwrap_err();
    assert_eq!(
        e,
        PlacementError::ImageElsewhere {
            image: "img".into(),
            holders: "c".into()
        }
    );
    assert_eq!(kind(e), ErrorKind::Conflict);
    s.layers.clear();
    let e = place(&s, &req(img)).unwrap_err();
    assert!(e.to_string().contains("held by: none"), "{e}");
}

#[test]
fn cpu_and_memory_reservations_count_every_container_of_the_node() {
    let (mut s, img) = state();
    // Node a: 1.5 of 2 CPUs reserved; b: 900 MiB of 1 GiB; c: both.
    add_container(&mut s, 1, "x1", 1, r#"{"NanoCpus":1500000000}"#);
    add_container(&mut s, 2, "x2", 2, r#"{"Memory":943718400}"#);
    add_container(
        &mut s,
        3,
        "x3",
        3,
        r#"{"NanoCpus":1500000000,"Memory":943718400}"#,
    );
    let cpu = PlacementRequest {
        nano_cpus: 1_000_000_000,
        ..req(img)
    };
    assert_eq!(place(&s, &cpu).unwrap().node, NodeId(2));
    let mem = PlacementRequest {
        memory: 200 << 20,
        ..req(img)
    };
    assert_eq!(place(&s, &mem).unwrap().node, NodeId(1));
    let both = PlacementRequest {
        nano_cpus: 1_000_000_000,
        memory: 200 << 20,
        ..req(img)
    };
    let e = place(&s, &both).unwrap_err();
    assert!(matches!(&e, PlacementError::Resources(w) if w.starts_with("CPU and memory")));
    assert_eq!(kind(e), ErrorKind::Conflict);
    let too_much = PlacementRequest {
        nano_cpus: 3_000_000_000,
        ..req(img)
    };
    assert!(
        matches!(place(&s, &too_much), Err(PlacementError::Resources(w)) if w.starts_with("CPU "))
    );
}

#[test]
fn a_taken_host_port_steers_away_from_its_node_and_never_refuses_the_create() {
    let (mut s, img) = state();
    let m = PortMapping {
        proto: Proto::Tcp,
        container_port: 80,
        host_ip: std::net::Ipv4Addr::UNSPECIFIED,
        host_port: 8080,
    };
    for (n, on) in [(1u8, 1u64), (2, 2)] {
        add_container(&mut s, n, &format!("w{n}"), on, "{}");
        let id = wharf_protocol::ContainerId::from_bytes([n; 32]);
        s.endpoints.insert(
            id,
            vec![Endpoint {
                network: "n".into(),
                ip: std::net::Ipv4Addr::new(10, 0, 0, n),
                mac: [0; 6],
                ports: vec![m],
                aliases: vec![],
                node: NodeId(on),
            }],
        );
    }
    let r = PlacementRequest {
        host_ports: vec![m],
        ..req(img)
    };
    assert_eq!(place(&s, &r).unwrap().node, NodeId(3));
    // Taken everywhere: placed anyway (Docker creates it; its start reports the port).
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Down;
    assert_eq!(place(&s, &r).unwrap().node, NodeId(1));
}

#[test]
fn volumes_and_other_containers_pin_to_their_node() {
    let (mut s, _) = state();
    s.volumes.insert(
        "data".into(),
        VolumeRecord {
            name: "data".into(),
            driver: "local".into(),
            labels: Default::default(),
            options: Default::default(),
            created_ns: 0,
            node: NodeId(3),
            anonymous: false,
        },
    );
    add_container(&mut s, 1, "web", 2, "{}");
    let mut body =
        serde_json::json!({"Image": "img", "HostConfig": {"Binds": ["data:/d", "/host:/h"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    let p = place(&s, &r).unwrap();
    assert_eq!(p.node, NodeId(3));
    assert!(p.reason.contains("volume data"), "{}", p.reason);
    let mut body =
        serde_json::json!({"Image": "img", "HostConfig": {"NetworkMode": "container:web"}});
    let r = request_from_create(&s, &mut body).unwrap();
    assert_eq!(place(&s, &r).unwrap().node, NodeId(2));
    let mut body = serde_json::json!({"Image": "img", "HostConfig": {"VolumesFrom": ["web:ro"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    assert_eq!(place(&s, &r).unwrap().node, NodeId(2));
    let mut body = serde_json::json!({"Image": "img", "HostConfig": {
        "Mounts": [{"Type": "volume", "Source": "data", "Target": "/d"}],
        "VolumesFrom": ["web"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    assert!(matches!(
        place(&s, &r),
        Err(PlacementError::PinsDisagree(_))
    ));
    // A pin to a node that takes nothing, or against a constraint.
    let mut body = serde_json::json!({"Image": "img", "Env": ["constraint:node==a"],
        "HostConfig": {"Binds": ["data:/d"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    let e = place(&s, &r).unwrap_err();
    assert_eq!(
        e,
        PlacementError::Pinned {
            what: "volume data".into(),
            node: "c".into()
        }
    );
}

#[test]
fn a_named_user_network_limits_to_the_nodes_that_have_it() {
    let (mut s, img) = state();
    s.networks.insert(
        "n1".into(),
        NetworkRecord {
            id: "n1".into(),
            name: "front".into(),
            driver: "bridge".into(),
            subnet: Subnet::parse("10.200.0.0/24").unwrap(),
            gateway: std::net::Ipv4Addr::new(10, 200, 0, 1),
            bridge: "br-n1".into(),
            node: NodeId(3),
            labels: Default::default(),
            created_ns: 0,
            default: false,
        },
    );
    let r = PlacementRequest {
        network: Some("front".into()),
        ..req(img)
    };
    assert_eq!(place(&s, &r).unwrap().node, NodeId(3));
    let none = PlacementRequest {
        network: Some("nowhere".into()),
        ..req(img)
    };
    assert_eq!(place(&s, &none).unwrap().node, NodeId(1), "the start's 404");
    s.nodes.get_mut(&NodeId(3)).unwrap().availability = Availability::Drain;
    assert!(matches!(place(&s, &r), Err(PlacementError::Network { .. })));
}

#[test]
fn a_create_body_gives_its_constraints_limits_and_ports_and_loses_constraint_env() {
    let (s, img) = state();
    let mut body = serde_json::json!({
        "Image": "img",
        "Env": ["A=1", "constraint:node==b", "constraint:node.labels.zone!=x"],
        "Labels": {"com.wharf.constraint": "node!=c, constraint:node.labels.zone==y"},
        "HostConfig": {
            "NanoCpus": 500000000,
            "Memory": 1048576,
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81/tcp": [{"HostPort": ""}]},
        },
    });
    let r = request_from_create(&s, &mut body).unwrap();
    assert_eq!(body["Env"], serde_json::json!(["A=1"]));
    let texts: Vec<&str> = r.constraints.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "node==b",
            "node.labels.zone!=x",
            "node!=c",
            "node.labels.zone==y"
        ]
    );
    assert_eq!((r.nano_cpus, r.memory), (500_000_000, 1 << 20));
    assert_eq!(r.host_ports.len(), 1, "only fixed host ports");
    assert_eq!(r.host_ports[0].host_port, 8080);
    assert_eq!(r.image, Some((img, "img".into())));
    assert_eq!(place(&s, &r).unwrap().node, NodeId(2));

    let mut bad = serde_json::json!({"Image": "img", "Env": ["constraint:node=b"]});
    assert_eq!(
        request_from_create(&s, &mut bad),
        Err(PlacementError::Malformed("node=b".into()))
    );
}

#[test]
fn place_create_labels_the_reason_and_an_unknown_image_stays_404() {
    let (s, _) = state();
    let (p, body) =
        place_create(&s, None, br#"{"Image":"img","Env":["constraint:node==c"]}"#).unwrap();
    assert_eq!(p.node, NodeId(3));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["Labels"][PLACEMENT_LABEL], p.reason);
    assert_eq!(v["Env"], serde_json::json!([]));
    let e = place_create(
        &s,
        None,
        br#"{"Image":"nope","Env":["constraint:node==zz"]}"#,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = place_create(&ClusterState::default(), None, br#"{"Image":""}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
    let e = place_create(&ClusterState::default(), None, br#"{"Image":"img"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}
