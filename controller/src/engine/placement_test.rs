//! What a create body asks of the scheduler, and what the placed body records.

use super::*;
use crate::engine::error::ErrorKind;
use crate::engine::scheduler::expr::{ExprKind, Key};
use crate::engine::scheduler::testkit::{add_container, state};
use wharf_protocol::state::VolumeRecord;
use wharf_protocol::NodeId;

fn texts(r: &Request) -> Vec<String> {
    r.exprs.iter().map(ToString::to_string).collect()
}

#[test]
fn a_create_body_gives_its_expressions_limits_and_ports_and_loses_them_from_env() {
    let (s, img) = state();
    let mut body = serde_json::json!({
        "Image": "img",
        "Env": ["A=1", "constraint:node==b", "affinity:container!=web",
                "constraint:node.labels.zone!=~x", "B=constraint:x"],
        "Labels": {
            "com.wharf.constraint": "node!=c, constraint:node.labels.zone==y, affinity:image==img",
            "com.docker.swarm.constraints": "[\"disk==~ssd\"]",
            "com.docker.swarm.affinities": "[\"container!=db\"]",
        },
        "HostConfig": {
            "NanoCpus": 500000000,
            "Memory": 1048576,
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "81/tcp": [{"HostPort": ""}]},
        },
    });
    let r = request_from_create(&s, &mut body).unwrap();
    assert_eq!(body["Env"], serde_json::json!(["A=1", "B=constraint:x"]));
    assert_eq!(
        body["Labels"]["com.docker.swarm.affinities"], "[\"container!=db\",\"container!=web\"]",
        "labels are kept, and the environment's expressions join them (as classic Swarm)"
    );
    assert_eq!(
        body["Labels"]["com.docker.swarm.constraints"],
        "[\"disk==~ssd\",\"node==b\",\"node.labels.zone!=~x\"]"
    );
    let want = [
        "constraint node!=c",
        "constraint node.labels.zone==y",
        "affinity image==img",
        "soft constraint disk==~ssd",
        "constraint node==b",
        "soft constraint node.labels.zone!=~x",
        "affinity container!=db",
        "affinity container!=web",
    ];
    assert_eq!(texts(&r), want);
    // The body as recorded places the same way again (a move off a Down node).
    let again = request_from_create(&s, &mut body).unwrap();
    assert_eq!(texts(&again), want);
    assert_eq!(r.exprs[3].key, Key::EngineLabel("disk".into()));
    assert_eq!(r.exprs[7].kind, ExprKind::Affinity);
    assert_eq!((r.nano_cpus, r.memory), (500_000_000, 1 << 20));
    assert_eq!(r.host_ports.len(), 1, "only fixed host ports");
    assert_eq!(r.host_ports[0].host_port, 8080);
    assert_eq!(r.image.as_ref().map(|i| i.id), Some(img));
    assert!(r.image.as_ref().is_some_and(|i| i.must_hold));
    assert_eq!(place(&s, &r).unwrap().node, NodeId(2));
}

#[test]
fn malformed_expressions_are_400_with_their_text() {
    let (s, _) = state();
    for (env, text) in [
        ("constraint:node=b", "invalid constraint \"node=b\""),
        ("constraint:node==", "invalid constraint \"node==\""),
        (
            "affinity:container=web",
            "invalid affinity \"container=web\"",
        ),
        ("affinity:volume==x", "invalid affinity \"volume==x\""),
        ("constraint:k==/[/", "invalid constraint \"k==/[/\""),
    ] {
        let mut body = serde_json::json!({"Image": "img", "Env": [env]});
        let e = EngineError::from(request_from_create(&s, &mut body).unwrap_err());
        assert_eq!(e.kind, ErrorKind::InvalidParameter, "{env}");
        assert!(e.message.starts_with(text), "{env}: {}", e.message);
    }
    let mut body = serde_json::json!({"Image": "img",
        "Labels": {"com.wharf.constraint": "node==a,zone"}});
    let e = EngineError::from(request_from_create(&s, &mut body).unwrap_err());
    assert!(
        e.message.starts_with("invalid constraint \"zone\""),
        "{}",
        e.message
    );
    let mut body = serde_json::json!({"Image": "img",
        "Labels": {"com.docker.swarm.affinities": "container==web"}});
    let e = EngineError::from(request_from_create(&s, &mut body).unwrap_err());
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
    assert_eq!(
        e.message,
        "invalid label com.docker.swarm.affinities: expected a JSON list of strings, got container==web"
    );
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
    add_container(&mut s, 1, "web", 2, 0, 0);
    let mut body =
        serde_json::json!({"Image": "img", "HostConfig": {"Binds": ["data:/d", "/host:/h"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    let p = place(&s, &r).unwrap();
    assert_eq!(p.node, NodeId(3));
    assert!(p.reason.contains("with volume data"), "{}", p.reason);
    // A volume that does not exist yet pins nothing: it is made where the container goes.
    let mut body = serde_json::json!({"Image": "img", "HostConfig": {"Binds": ["fresh:/d"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    assert!(r.pins.is_empty());
    assert_eq!(place(&s, &r).unwrap().node, NodeId(1));
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
    assert!(matches!(place(&s, &r), Err(Unschedulable::PinsDisagree(_))));
    let mut body = serde_json::json!({"Image": "img", "Env": ["constraint:node==a"],
        "HostConfig": {"Binds": ["data:/d"]}});
    let r = request_from_create(&s, &mut body).unwrap();
    assert_eq!(
        place(&s, &r).unwrap_err(),
        Unschedulable::Pinned {
            what: "volume data".into(),
            node: "c".into()
        }
    );
}

#[test]
fn place_create_labels_the_reason_and_an_unknown_image_stays_404() {
    let (s, _) = state();
    let settings = Settings::default();
    let none = std::collections::BTreeSet::new();
    let (p, v) = place_create(
        &s,
        None,
        br#"{"Image":"img","Env":["constraint:node==c","affinity:image==~nothing"]}"#,
        &settings,
        &none,
    )
    .unwrap();
    assert_eq!(p.node, NodeId(3));
    assert_eq!(v["Labels"][PLACEMENT_LABEL], p.reason);
    assert_eq!(
        p.reason,
        "spread: c, 0 containers, the only candidate; holds 1/1 layers; constraint node==c; soft affinity image==~nothing dropped: no candidate meets it"
    );
    assert_eq!(v["Env"], serde_json::json!([]));
    let binpack = Settings {
        strategy: scheduler::Strategy::Binpack,
        ..settings
    };
    let (p, _) = place_create(&s, None, br#"{"Image":"img"}"#, &binpack, &none).unwrap();
    assert!(p.reason.starts_with("binpack: a, "), "{}", p.reason);
    let e = place_create(
        &s,
        None,
        br#"{"Image":"nope","Env":["constraint:node==zz"]}"#,
        &settings,
        &none,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let e = place_create(
        &s,
        None,
        br#"{"Image":"img","Env":["constraint:node==zz"]}"#,
        &settings,
        &none,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert_eq!(e.message, "no node meets the constraint node==zz");
    // A node this controller cannot reach takes nothing from it.
    let (p, _) = place_create(
        &s,
        None,
        br#"{"Image":"img","Env":["constraint:node==~c"]}"#,
        &settings,
        &[NodeId(3)].into(),
    )
    .unwrap();
    assert_ne!(p.node, NodeId(3), "{}", p.reason);
    let e = place_create(
        &ClusterState::default(),
        None,
        br#"{"Image":""}"#,
        &settings,
        &none,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
    let e = place_create(
        &ClusterState::default(),
        None,
        br#"{"Image":"img"}"#,
        &settings,
        &none,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
}
