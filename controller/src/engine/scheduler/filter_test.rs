//! Each filter over hand-built states: what it keeps, the error when it keeps nothing,
//! and that error's HTTP class.

use super::testkit::{add_container, add_image, hold, req, state, with};
use super::*;
use crate::engine::error::ErrorKind;
use wharf_protocol::network::{Endpoint, NetworkRecord, Proto, Subnet};
use wharf_protocol::node_state::{Availability, NodeRole, NodeState};

fn kind(e: Unschedulable) -> ErrorKind {
    EngineError::from(e).kind
}

fn on(s: &ClusterState, r: &Request) -> NodeId {
    match schedule(s, r, &Settings::default()) {
        Ok(p) => p.node,
        Err(e) => panic!("not placed: {e}"),
    }
}

fn err(s: &ClusterState, r: &Request) -> Unschedulable {
    schedule(s, r, &Settings::default()).unwrap_err()
}

#[test]
fn only_ready_active_nodes_that_run_containers_take_placements() {
    let (mut s, img) = state();
    assert_eq!(
        schedule(&ClusterState::default(), &req(img), &Settings::default()),
        Err(Unschedulable::NoReadyAgent)
    );
    s.nodes.get_mut(&NodeId(1)).unwrap().availability = Availability::Drain;
    s.nodes.get_mut(&NodeId(2)).unwrap().availability = Availability::Pause;
    assert_eq!(on(&s, &req(img)), NodeId(3));
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Down;
    let e = err(&s, &req(img));
    assert_eq!(e, Unschedulable::NoReadyAgent);
    assert_eq!(kind(e), ErrorKind::Unavailable);
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Ready;
    s.nodes
        .get_mut(&NodeId(3))
        .unwrap()
        .description
        .runs_containers = false;
    assert_eq!(err(&s, &req(img)), Unschedulable::NoReadyAgent);
}

#[test]
fn node_constraints_match_the_host_name_or_either_form_of_the_id() {
    let (mut s, img) = state();
    s.nodes.get_mut(&NodeId(3)).unwrap().role = NodeRole::Controller;
    let at = |e: &[&str]| on(&s, &with(req(img), e));
    assert_eq!(at(&["node==c"]), NodeId(3));
    assert_eq!(at(&["node==2"]), NodeId(2));
    assert_eq!(at(&["node==0000000000000002"]), NodeId(2));
    assert_eq!(at(&["node!=a"]), NodeId(2));
    assert_eq!(at(&["node.id==3"]), NodeId(3));
    assert_eq!(at(&["node.hostname==b"]), NodeId(2));
    assert_eq!(at(&["node.role==manager"]), NodeId(3));
    assert_eq!(at(&["node.role!=manager", "node!=a"]), NodeId(2));
    assert_eq!(at(&["node==/^[bc]$/", "node!=b"]), NodeId(3));
    assert_eq!(at(&["node==*c"]), NodeId(3));
    let e = err(&s, &with(req(img), &["node.hostname==2"]));
    assert_eq!(
        e.to_string(),
        "no node meets the constraint node.hostname==2"
    );
}

#[test]
fn label_constraints_read_operator_labels_and_engine_labels_apart() {
    let (mut s, img) = state();
    // Node c's daemon started with disk=ssd; an operator then gave b disk=ssd too.
    s.nodes
        .get_mut(&NodeId(3))
        .unwrap()
        .description
        .engine_labels
        .insert("disk".into(), "ssd".into());
    s.nodes
        .get_mut(&NodeId(2))
        .unwrap()
        .labels
        .insert("disk".into(), "ssd".into());
    let at = |e: &[&str]| on(&s, &with(req(img), e));
    assert_eq!(at(&["disk==ssd"]), NodeId(3), "engine labels");
    assert_eq!(at(&["node.labels.disk==ssd"]), NodeId(2), "operator labels");
    assert_eq!(at(&["disk!=ssd"]), NodeId(1), "no label meets !=");
    assert_eq!(at(&["node.labels.zone==y", "node!=b"]), NodeId(3));
    assert_eq!(at(&["node.labels.zone!=y"]), NodeId(1));
    assert_eq!(at(&["node.labels.zone==/x|z/"]), NodeId(1));
    assert_eq!(at(&["disk==s*"]), NodeId(3));
    let e = err(&s, &with(req(img), &["node.labels.zone==y", "node==a"]));
    assert_eq!(e, Unschedulable::Unmet("constraint node==a".into()));
    assert_eq!(e.to_string(), "no node meets the constraint node==a");
    assert_eq!(kind(e), ErrorKind::Conflict);
    let e = err(&s, &with(req(img), &["disk==hdd"]));
    assert_eq!(e.to_string(), "no node meets the constraint disk==hdd");
}

#[test]
fn container_affinity_follows_or_avoids_a_container_by_name_id_or_pattern() {
    let (mut s, img) = state();
    let web = add_container(&mut s, 1, "web", 2, 0, 0);
    add_container(&mut s, 2, "web-2", 3, 0, 0);
    add_container(&mut s, 3, "db", 1, 0, 0);
    let at = |e: &[&str]| on(&s, &with(req(img), e));
    assert_eq!(at(&["affinity:container==web"]), NodeId(2));
    assert_eq!(at(&["affinity:container==/web"]), NodeId(2), "a leading /");
    assert_eq!(
        at(&[&format!("affinity:container=={}", web.short())]),
        NodeId(2)
    );
    assert_eq!(at(&[&format!("affinity:container=={web}")]), NodeId(2));
    assert_eq!(at(&["affinity:container==web-*"]), NodeId(3));
    assert_eq!(at(&["affinity:container!=db"]), NodeId(2));
    assert_eq!(
        at(&["affinity:container!=web*", "affinity:container!=nothing"]),
        NodeId(1)
    );
    let e = err(&s, &with(req(img), &["affinity:container==cache"]));
    assert_eq!(e.to_string(), "no node meets the affinity container==cache");
    assert_eq!(kind(e), ErrorKind::Conflict);
    let e = err(&s, &with(req(img), &["affinity:container==db", "node!=a"]));
    assert_eq!(e.to_string(), "no node meets the constraint node!=a");
}

#[test]
fn image_affinity_follows_or_avoids_the_nodes_holding_an_image() {
    let (mut s, img) = state();
    let redis = add_image(&mut s, "redis", &[7, 8]);
    hold(&mut s, 7, &[2, 3]);
    hold(&mut s, 8, &[3]);
    let at = |e: &[&str]| on(&s, &with(req(img), e));
    assert_eq!(
        at(&["affinity:image==redis"]),
        NodeId(3),
        "whole images only"
    );
    assert_eq!(at(&["affinity:image==redis:latest"]), NodeId(3));
    assert_eq!(
        at(&[&format!("affinity:image=={}", &redis.0.hex()[..12])]),
        NodeId(3)
    );
    assert_eq!(at(&["affinity:image==re*"]), NodeId(3));
    assert_eq!(at(&["affinity:image==/^redis:/"]), NodeId(3));
    assert_eq!(at(&["affinity:image!=redis", "node!=a"]), NodeId(2));
    let e = err(&s, &with(req(img), &["affinity:image==nginx"]));
    assert_eq!(e.to_string(), "no node meets the affinity image==nginx");
}

#[test]
fn soft_expressions_are_preferred_and_dropped_when_no_candidate_meets_them() {
    let (mut s, img) = state();
    add_container(&mut s, 1, "web", 3, 0, 0);
    // Met: followed, and said.
    let p = schedule(
        &s,
        &with(req(img), &["node.labels.zone==~y"]),
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(p.node, NodeId(2));
    assert!(
        p.reason.contains("soft constraint node.labels.zone==~y"),
        "{}",
        p.reason
    );
    assert!(!p.reason.contains("dropped"), "{}", p.reason);
    assert_eq!(
        on(&s, &with(req(img), &["affinity:container==~web"])),
        NodeId(3)
    );
    // Met by none: dropped, and said; the hard ones still hold.
    let r = with(
        req(img),
        &["disk==~ssd", "node!=a", "affinity:container==~cache"],
    );
    let p = schedule(&s, &r, &Settings::default()).unwrap();
    assert_eq!(p.node, NodeId(2));
    assert!(
        p.reason
            .contains("soft constraint disk==~ssd dropped: no candidate meets it")
            && p.reason.contains("soft affinity container==~cache dropped"),
        "{}",
        p.reason
    );
    // One at a time, in order: the first met narrows, the next unmet is dropped.
    let r = with(req(img), &["node.labels.zone==~y", "node==~a"]);
    let p = schedule(&s, &r, &Settings::default()).unwrap();
    assert_eq!(p.node, NodeId(2));
    assert!(p.reason.contains("node==~a dropped"), "{}", p.reason);
    // A soft one never overrides resources: it applies among the nodes that fit.
    let full = add_container(&mut s, 9, "big", 2, 2_000_000_000, 0);
    let r = Request {
        nano_cpus: 1_000_000_000,
        ..with(req(img), &["node==~b"])
    };
    assert_eq!(on(&s, &r), NodeId(1));
    s.containers.remove(&full);
}

#[test]
fn pins_must_agree_and_their_node_must_pass_the_other_filters() {
    let (s, img) = state();
    let pin = |what: &str, n: u64| Pin {
        what: what.into(),
        node: NodeId(n),
    };
    let r = Request {
        pins: vec![pin("volume data", 3)],
        ..req(img)
    };
    let p = schedule(&s, &r, &Settings::default()).unwrap();
    assert_eq!(p.node, NodeId(3));
    assert!(p.reason.contains("with volume data"), "{}", p.reason);
    let r = Request {
        pins: vec![pin("volume data", 3), pin("--volumes-from web", 2)],
        ..req(img)
    };
    let e = err(&s, &r);
    assert_eq!(
        e.to_string(),
        "volume data, --volumes-from web are on different nodes"
    );
    let r = Request {
        pins: vec![pin("volume data", 3)],
        ..with(req(img), &["node==a"])
    };
    assert_eq!(
        err(&s, &r),
        Unschedulable::Pinned {
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
    let r = Request {
        network: Some("front".into()),
        ..req(img)
    };
    assert_eq!(on(&s, &r), NodeId(3));
    let none = Request {
        network: Some("nowhere".into()),
        ..req(img)
    };
    assert_eq!(on(&s, &none), NodeId(1), "the start's 404");
    s.nodes.get_mut(&NodeId(3)).unwrap().availability = Availability::Drain;
    assert!(matches!(err(&s, &r), Unschedulable::Network { .. }));
}

#[test]
fn an_image_on_no_candidate_is_409_naming_its_holders_never_404() {
    let (mut s, img) = state();
    s.layers.clear();
    hold(&mut s, 1, &[3]);
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Down;
    let e = err(&s, &req(img));
    assert_eq!(
        e,
        Unschedulable::ImageElsewhere {
            image: "img".into(),
            holders: "c".into()
        }
    );
    assert_eq!(kind(e), ErrorKind::Conflict);
    s.layers.clear();
    assert!(err(&s, &req(img)).to_string().contains("held by: none"));
    // Once a node may fetch what it misses, the image filters nothing.
    let mut r = req(img);
    r.image.as_mut().unwrap().must_hold = false;
    assert_eq!(on(&s, &r), NodeId(1));
}

#[test]
fn cpu_and_memory_reservations_count_every_container_and_overcommit_stretches_them() {
    let (mut s, img) = state();
    // Node a: 1.5 of 2 CPUs reserved; b: 900 MiB of 1 GiB; c: both.
    add_container(&mut s, 1, "x1", 1, 1_500_000_000, 0);
    add_container(&mut s, 2, "x2", 2, 0, 900 << 20);
    add_container(&mut s, 3, "x3", 3, 1_500_000_000, 900 << 20);
    let cpu = Request {
        nano_cpus: 1_000_000_000,
        ..req(img)
    };
    assert_eq!(on(&s, &cpu), NodeId(2));
    let mem = Request {
        memory: 200 << 20,
        ..req(img)
    };
    assert_eq!(on(&s, &mem), NodeId(1));
    let both = Request {
        nano_cpus: 1_000_000_000,
        memory: 200 << 20,
        ..req(img)
    };
    let e = err(&s, &both);
    assert!(
        matches!(&e, Unschedulable::Resources(w) if w.starts_with("CPU and memory")),
        "{e}"
    );
    assert_eq!(kind(e), ErrorKind::Conflict);
    // 1.25 × (2 CPUs, 1 GiB) = 2.5 CPUs, 1.25 GiB: c fits both.
    let over = Settings {
        overcommit: 1.25,
        ..Settings::default()
    };
    let p = schedule(&s, &both, &over).unwrap();
    assert_eq!(
        p.node,
        NodeId(1),
        "all fit, one container each: a has the least reserved"
    );
    let too_much = Request {
        nano_cpus: 3_000_000_000,
        ..req(img)
    };
    let e = err(&s, &too_much);
    assert!(
        matches!(&e, Unschedulable::Resources(w) if w.starts_with("CPU ")),
        "{e}"
    );
    // A node that reported no memory is not limited on it.
    s.nodes.get_mut(&NodeId(3)).unwrap().description.memory = 0;
    let huge = Request {
        memory: 1 << 40,
        ..req(img)
    };
    assert_eq!(on(&s, &huge), NodeId(3));
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
    for (n, at) in [(1u32, 1u64), (2, 2)] {
        let id = add_container(&mut s, n, &format!("w{n}"), at, 0, 0);
        s.endpoints.insert(
            id,
            vec![Endpoint {
                network: "n".into(),
                ip: std::net::Ipv4Addr::new(10, 0, 0, n as u8),
                mac: [0; 6],
                ports: vec![m],
                aliases: vec![],
                node: NodeId(at),
            }],
        );
    }
    let r = Request {
        host_ports: vec![m],
        ..req(img)
    };
    assert_eq!(on(&s, &r), NodeId(3));
    // Taken everywhere: placed anyway (Docker creates it; its start reports the port).
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Down;
    let p = schedule(&s, &r, &Settings::default()).unwrap();
    assert_eq!(p.node, NodeId(1));
    assert!(
        p.reason.contains("host port taken on every candidate"),
        "{}",
        p.reason
    );
    // Another port, or the same port on another protocol, is free.
    let udp = Request {
        host_ports: vec![PortMapping {
            proto: Proto::Udp,
            ..m
        }],
        ..req(img)
    };
    s.nodes.get_mut(&NodeId(3)).unwrap().state = NodeState::Ready;
    assert_eq!(on(&s, &udp), NodeId(3), "fewest containers");
}

#[test]
fn layers_held_agrees_with_the_state_for_few_and_many_holders() {
    let mut s = ClusterState::default();
    for id in 1..=40 {
        let n = super::testkit::node(id, &format!("n{id}"), &[]);
        s.nodes.insert(n.id, n);
    }
    let app = add_image(&mut s, "app", &[1, 2, 3, 1]);
    hold(&mut s, 1, &[3, 17, 40]); // few holders: a binary search each
    hold(
        &mut s,
        2,
        &(1..=40).filter(|i| i % 3 != 0).collect::<Vec<_>>(),
    ); // a merge walk
    hold(&mut s, 3, &[2, 17, 99]); // holders that are no candidates
    let nodes: Vec<&wharf_protocol::node_state::NodeRecord> = s
        .nodes
        .values()
        .filter(|n| n.id.0 % 2 == 1 || n.id.0 == 40)
        .collect();
    let held = filter::layers_held(&s, &s.images[&app], &nodes);
    let presence = s.image_presence(&s.images[&app]);
    for (n, h) in nodes.iter().zip(&held) {
        assert_eq!(
            *h,
            presence.get(&n.id).copied().unwrap_or(0),
            "node {}",
            n.id
        );
    }
    assert_eq!(nodes[8].id, NodeId(17));
    assert_eq!(held[8], 3, "node 17 holds all three distinct layers");
    assert_eq!(held[1], 1, "node 3 only the first");
}
