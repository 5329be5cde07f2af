//! The planners, pure: a state and a request in, the plan out; no store, no agent.

use super::*;
use crate::engine::ErrorKind;
use wharf_protocol::network::Subnet;
use wharf_protocol::state::ImageRecord;
use wharf_protocol::{DiffId, Digest, ImageId};

const NODE: NodeId = NodeId(7);

/// A state with image `img:1`, user network `front` and named volume `kept`.
fn state() -> ClusterState {
    let mut s = ClusterState::default();
    let config = serde_json::json!({
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"], "Volumes": {"/cache": {}}},
        "rootfs": {"type": "layers", "diff_ids": []},
    })
    .to_string()
    .into_bytes();
    let id = ImageId(Digest::of(&config));
    let image = ImageRecord {
        id,
        config,
        diff_ids: vec![DiffId(Digest::of(b"l1"))],
        size: 0,
        loaded_ns: 1,
    };
    s.apply(&Command::PutImage { image }).unwrap();
    s.apply(&Command::Tag {
        reference: "img:1".into(),
        image: id,
    })
    .unwrap();
    s.apply(&Command::CreateNetwork {
        network: network("front", false),
    })
    .unwrap();
    s.apply(&Command::CreateVolume {
        volume: VolumeRecord {
            name: "kept".into(),
            driver: "local".into(),
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            created_ns: 1,
            node: NODE,
            anonymous: false,
        },
    })
    .unwrap();
    s
}

fn network(name: &str, default: bool) -> NetworkRecord {
    NetworkRecord {
        id: format!("{:0>64}", name.len()),
        name: name.into(),
        driver: "bridge".into(),
        subnet: Subnet::parse("10.77.0.0/24").unwrap(),
        gateway: "10.77.0.1".parse().unwrap(),
        bridge: format!("br-{name}"),
        node: NODE,
        labels: BTreeMap::new(),
        created_ns: 1,
        default,
    }
}

fn choices() -> CreateChoices {
    CreateChoices {
        id: ContainerId::from_bytes([3; 32]),
        now_ns: 42,
        node: NODE,
        name_seeds: (1, 2),
        replaces: None,
    }
}

fn plan_create(
    s: &ClusterState,
    name: Option<&str>,
    body: &str,
) -> Result<CreatePlan, EngineError> {
    let mut n = 0;
    let mut anon = || {
        n += 1;
        format!("anon{n}")
    };
    let request: serde_json::Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => return Err(EngineError::invalid(format!("invalid JSON: {e}"))),
    };
    create_container(s, name, &request, &choices(), &mut anon)
}

fn effect_name(e: &Effect) -> String {
    match e {
        Effect::Propose(c) => format!("{c:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("")
            .to_string(),
        Effect::Agent { request, .. } => format!("{request:?}")
            .split(['{', ' '])
            .take(2)
            .collect::<Vec<_>>()
            .join(""),
        Effect::SyncRules { .. } => "SyncRules".into(),
        Effect::SyncDns { .. } => "SyncDns".into(),
    }
}

/// Settings that only a host can judge (capability, ulimit and sysctl names, bind
/// sources) are checked by the agent first; a create without any goes to its agent once.
#[test]
fn only_host_specific_settings_are_checked_by_the_agent_first() {
    let s = state();
    let checks = |body: &str| {
        let p = plan_create(&s, None, body).unwrap();
        let effects: Vec<String> = p.plan.effects().map(effect_name).collect();
        let at = effects.iter().position(|e| e == "Container(Check");
        assert!(at.is_none_or(|i| i == 0), "{effects:?}");
        at.is_some()
    };
    assert!(!checks(r#"{"Image":"img:1"}"#));
    assert!(!checks(
        r#"{"Image":"img:1","HostConfig":{"Privileged":true,"Memory":1048576000}}"#
    ));
    for host in [
        r#"{"CapAdd":["NET_ADMIN"]}"#,
        r#"{"CapDrop":["ALL"]}"#,
        r#"{"Ulimits":[{"Name":"nofile","Soft":10,"Hard":20}]}"#,
        r#"{"Sysctls":{"net.ipv4.ip_forward":"1"}}"#,
        r#"{"Mounts":[{"Type":"bind","Source":"/srv/in","Target":"/in"}]}"#,
    ] {
        let body = format!(r#"{{"Image":"img:1","HostConfig":{host}}}"#);
        assert!(checks(&body), "{host}");
    }
}

#[test]
fn a_create_checks_makes_volumes_records_connects_then_prepares_the_layer() {
    let s = state();
    let body = r#"{"Image":"img:1","Volumes":{"/data":{}},
        "HostConfig":{"Binds":["kept:/kept","fresh:/fresh"],"NetworkMode":"front",
                      "Mounts":[{"Type":"bind","Source":"/srv/in","Target":"/in"}]}}"#;
    let p = plan_create(&s, Some("web"), body).unwrap();
    let effects: Vec<String> = p.plan.effects().map(effect_name).collect();
    assert_eq!(
        effects,
        [
            "Container(Check",
            "Volume(Create",
            "CreateVolume",
            "Volume(Create",
            "CreateVolume",
            "Volume(Create",
            "CreateVolume",
            "CreateContainer",
            "ConnectContainer",
            "Container(Create",
        ],
        "{:#?}",
        p.plan
    );
    // `kept` exists: not made again. `fresh` is named (kept on failure, as Docker
    // does); the anonymous ones (`/data`, the image's `/cache`) are undone.
    let mut made: Vec<(String, bool)> = p
        .plan
        .steps
        .iter()
        .filter_map(|st| match &st.effect {
            Effect::Propose(Command::CreateVolume { volume }) => {
                Some((volume.name.clone(), st.undo.is_some()))
            }
            _ => None,
        })
        .collect();
    made.sort();
    assert_eq!(
        made,
        [
            ("anon1".to_string(), true),
            ("anon2".to_string(), true),
            ("fresh".to_string(), false)
        ]
    );
    assert_eq!(p.new_volumes.len(), 3);
    match &p.plan.steps[0].effect {
        Effect::Agent { node, request } => {
            let AgentRequest::Container(ContainerRequest::Check { bind_sources, .. }) = &**request
            else {
                panic!("first step {request:?}")
            };
            assert_eq!(*node, NODE);
            assert_eq!(bind_sources, &["/srv/in".to_string()]);
        }
        other => panic!("first step {other:?}"),
    }
    let record = &p.record;
    assert_eq!(record.name.as_str(), "web");
    assert!(!p.generated_name);
    assert_eq!((record.created_ns, record.node), (42, NODE));
    let create = p
        .plan
        .steps
        .iter()
        .position(|s| matches!(&s.effect, Effect::Propose(Command::CreateContainer { .. })));
    assert_eq!(create, Some(p.record_step));
    assert_eq!(
        p.plan.steps[create.unwrap()].undo,
        Some(Effect::Propose(Command::RemoveContainer {
            id: record.id.clone()
        }))
    );
    assert_eq!(
        p.plan.steps.last().unwrap().undo,
        Some(Effect::agent(
            NODE,
            ContainerRequest::Remove {
                id: record.id.clone()
            }
        ))
    );
}

#[test]
fn the_same_state_request_and_choices_give_the_same_plan() {
    let s = state();
    let body = r#"{"Image":"img:1","Volumes":{"/data":{}}}"#;
    let a = plan_create(&s, None, body).unwrap();
    let b = plan_create(&s, None, body).unwrap();
    assert_eq!(a.plan, b.plan);
    assert_eq!(a.record, b.record);
    assert!(a.generated_name);
}

#[test]
fn a_generated_name_avoids_the_names_taken() {
    let mut s = state();
    let first = plan_create(&s, None, r#"{"Image":"img:1"}"#)
        .unwrap()
        .record;
    s.apply(&Command::CreateContainer {
        container: Box::new(first.clone()),
    })
    .unwrap();
    let mut c = choices();
    c.id = ContainerId::from_bytes([4; 32]);
    let second = create_container(
        &s,
        None,
        &serde_json::json!({"Image":"img:1"}),
        &c,
        &mut || "x".into(),
    )
    .unwrap()
    .record;
    assert_ne!(second.name, first.name);
}

#[test]
fn a_generated_name_falls_back_to_the_short_id_when_the_tries_are_taken() {
    // Docker's generateNewName: six tries of the generator, then the truncated ID; so
    // more unnamed containers than the generator has names are still created.
    let mut s = state();
    for n in 0..6u8 {
        let mut c = choices();
        c.id = ContainerId::from_bytes([100 + n; 32]);
        let name = crate::names::random_name(1, 2 + n as usize, n as usize);
        let record = create_container(
            &s,
            Some(&name),
            &serde_json::json!({"Image":"img:1"}),
            &c,
            &mut || "x".into(),
        )
        .unwrap()
        .record;
        assert_eq!(record.name.as_str(), name);
        s.apply(&Command::CreateContainer {
            container: Box::new(record),
        })
        .unwrap();
    }
    let p = plan_create(&s, None, r#"{"Image":"img:1"}"#).unwrap();
    assert!(p.generated_name);
    assert_eq!(p.record.name.as_str(), choices().id.short());
    // Once that is taken too, the create is refused, not given a duplicate.
    let mut c = choices();
    c.id = ContainerId::from_bytes([99; 32]);
    let short = choices().id.short().to_string();
    let record = create_container(
        &s,
        Some(&short),
        &serde_json::json!({"Image":"img:1"}),
        &c,
        &mut || "x".into(),
    )
    .unwrap()
    .record;
    s.apply(&Command::CreateContainer {
        container: Box::new(record),
    })
    .unwrap();
    let err = plan_create(&s, None, r#"{"Image":"img:1"}"#).unwrap_err();
    assert!(err.message.contains("no free generated name"), "{err:?}");
}

#[test]
fn bad_requests_are_refused_by_kind_before_any_step() {
    let s = state();
    let cases = [
        (
            r#"{"Image":"nope"}"#,
            ErrorKind::NotFound,
            "No such image: nope:latest",
        ),
        (
            r#"[1]"#,
            ErrorKind::InvalidParameter,
            "invalid JSON: body must be an object",
        ),
        (
            r#"{"Image":""}"#,
            ErrorKind::InvalidParameter,
            "no image given: Config.Image is empty",
        ),
        (
            r#"{"Image":"img:1","WorkingDir":"rel"}"#,
            ErrorKind::InvalidParameter,
            "the working directory 'rel' is invalid, it needs to be an absolute path",
        ),
        (
            r#"{"Image":"img:1","HostConfig":{"NetworkMode":"front"},
                "NetworkingConfig":{"EndpointsConfig":{"front":{},"back":{}}}}"#,
            ErrorKind::NotFound,
            "network back not found",
        ),
        (
            r#"{"Image":"img:1","HostConfig":{"AutoRemove":true,"RestartPolicy":{"Name":"always"}}}"#,
            ErrorKind::InvalidParameter,
            "can't create 'AutoRemove' container with restart policy",
        ),
    ];
    for (body, kind, message) in cases {
        let e = plan_create(&s, None, body).unwrap_err();
        assert_eq!((e.kind, e.message.as_str()), (kind, message), "{body}");
    }
    let e = plan_create(&s, Some("bad name!"), r#"{"Image":"img:1"}"#).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
}

#[test]
fn volume_plans_return_existing_ones_and_remove_the_record_before_the_data() {
    let s = state();
    let existing = create_volume(
        &s,
        NewVolume {
            name: "kept",
            driver: "",
            anonymous: false,
            ..Default::default()
        },
        NODE,
        9,
    );
    assert!(matches!(existing, Ok(VolumeCreate::Exists(v)) if v.created_ns == 1));
    let e = create_volume(
        &s,
        NewVolume {
            name: "x",
            driver: "",
            anonymous: false,
            ..Default::default()
        },
        NODE,
        9,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidParameter);
    let e = create_volume(
        &s,
        NewVolume {
            name: "vv",
            driver: "nfs",
            anonymous: false,
            ..Default::default()
        },
        NODE,
        9,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    let Ok(VolumeCreate::New(v, plan)) = create_volume(
        &s,
        NewVolume {
            name: "new",
            driver: "local",
            anonymous: true,
            ..Default::default()
        },
        NODE,
        9,
    ) else {
        panic!("a new volume")
    };
    assert_eq!((v.created_ns, v.node, v.anonymous), (9, NODE, true));
    assert_eq!(
        plan.effects().cloned().collect::<Vec<_>>(),
        [
            Effect::agent(NODE, VolumeRequest::Create { name: "new".into() }),
            Effect::Propose(Command::CreateVolume { volume: v }),
        ]
    );

    let (_, plan) = remove_volume(&s, "kept", false).unwrap().unwrap();
    assert_eq!(plan.steps.len(), 2);
    assert!(plan.steps[0].required && !plan.steps[1].required);
    assert_eq!(
        plan.steps[1].effect,
        Effect::agent(
            NODE,
            VolumeRequest::Remove {
                name: "kept".into()
            }
        )
    );
    assert!(remove_volume(&s, "gone", true).unwrap().is_none());
    assert_eq!(
        remove_volume(&s, "gone", false).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn network_plans_refuse_the_predefined_ones_and_undo_a_half_made_bridge() {
    let mut s = state();
    s.apply(&Command::CreateNetwork {
        network: network("bridge", true),
    })
    .unwrap_or(());
    for r in ["bridge", "host", "none"] {
        assert_eq!(
            remove_network(&s, r).unwrap_err().kind,
            ErrorKind::Forbidden
        );
    }
    assert_eq!(
        remove_network(&s, "nope").unwrap_err().kind,
        ErrorKind::NotFound
    );
    let (n, plan) = remove_network(&s, "front").unwrap();
    assert_eq!(n.name, "front");
    let names: Vec<String> = plan.effects().map(effect_name).collect();
    assert_eq!(
        names,
        ["RemoveNetwork", "Network(StopDns", "Network(RemoveBridge"]
    );
    assert!(
        plan.steps[1..].iter().all(|s| !s.required),
        "a resolver or bridge left behind fails nothing"
    );

    let plan = create_network(&network("back", false));
    assert_eq!(plan.steps.len(), 3);
    assert_eq!(
        (&plan.steps[2].effect, plan.steps[2].required),
        (&Effect::SyncDns { node: NODE }, false),
        "then its resolver, which may fail alone"
    );
    assert!(plan.steps[1].partial);
    assert_eq!(
        plan.steps[1].undo,
        Some(Effect::agent(
            NODE,
            NetworkRequest::RemoveBridge {
                bridge: "br-back".into()
            }
        ))
    );
}

#[test]
fn a_start_is_refused_by_state_and_a_failed_one_is_recorded_last() {
    let s = state();
    let mut c = plan_create(&s, Some("web"), r#"{"Image":"img:1"}"#)
        .unwrap()
        .record;
    assert!(check_start(&c).is_ok());
    c.status = ContainerStatus::Paused;
    assert_eq!(check_start(&c).unwrap_err().kind, ErrorKind::Conflict);
    c.status = ContainerStatus::Running;
    assert_eq!(check_start(&c).unwrap_err().kind, ErrorKind::NotModified);
    c.status = ContainerStatus::Exited;
    assert!(check_start(&c).is_ok());

    let plan = start_failed(&c, true, 127, "not found", 5);
    let last = plan.steps.last().unwrap();
    assert!(last.required);
    assert_eq!(
        last.effect,
        Effect::Propose(Command::ContainerExited {
            id: c.id.clone(),
            exit_code: 127,
            oom_killed: false,
            at_ns: 5,
            error: "not found".into(),
        })
    );
    // Everything before the record is clean-up that may fail without stopping it.
    assert!(plan.steps[..plan.steps.len() - 1]
        .iter()
        .all(|s| !s.required));
    assert!(plan
        .effects()
        .any(|e| *e == Effect::Propose(Command::ReleaseEndpoints { id: c.id.clone() })));
    assert!(plan
        .effects()
        .any(|e| *e == Effect::SyncRules { node: NODE }));
    let without = start_failed(&c, false, 127, "not found", 5);
    assert_eq!(without.steps.len(), plan.steps.len() - 1);
}
