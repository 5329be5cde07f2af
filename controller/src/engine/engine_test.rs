//! The engine against the fake agent (`agent_client::fake`): what it records in Raft and
//! what it asks of the host, for create, start, stop, exec, volumes and failures, with no
//! root, kernel or shim.

use super::*;
use crate::agent_client::fake::{FakeAgent, FakeCluster};
use wharf_protocol::agent::container::ContainerRequest;
use wharf_protocol::agent::host::LayerInventory;
use wharf_protocol::agent::{AgentEvent, AgentRequest};
use wharf_protocol::{ChainId, DiffId, Digest};

const NODE: NodeId = NodeId(1);

pub(super) struct Setup {
    pub(super) _dir: tempfile::TempDir,
    pub(super) engine: Arc<Engine>,
    pub(super) fake: Arc<FakeAgent>,
    pub(super) cluster: Arc<FakeCluster>,
    pub(super) layers: Vec<DiffId>,
}

/// Record `node` as a Ready host named `hostname` that runs containers, with `labels`.
async fn register(engine: &Engine, node: NodeId, hostname: &str, labels: &[(&str, &str)]) {
    use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
    let description = NodeDescription {
        hostname: hostname.into(),
        addr: format!("10.0.0.{}", node.0),
        cpus: 2,
        memory: 1 << 30,
        runs_containers: true,
        engine_labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    };
    for cmd in [
        Command::RegisterNode {
            id: node,
            role: NodeRole::Agent,
            description,
            at_ns: 1,
        },
        Command::SetNodeState {
            id: node,
            state: NodeState::Ready,
            at_ns: 1,
        },
    ] {
        engine.store().propose(cmd).await.unwrap().unwrap();
    }
}

/// An engine over a fresh Raft store and a fake agent, with image `img:1` of two layers
/// on its one node.
pub(super) async fn setup() -> Setup {
    setup_nodes(&[(NODE, "node-1", &[])]).await
}

/// A node of a test: its ID, host name and labels.
pub(super) type TestNode<'a> = (NodeId, &'a str, &'a [(&'a str, &'a str)]);

/// An engine over a fresh Raft store and a fake agent per node (hostname, labels), each
/// Ready, connected, and holding image `img:1` of two layers.
pub(super) async fn setup_nodes(nodes: &[TestNode<'_>]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), 1, "127.0.0.1:7946".into())
        .await
        .unwrap();
    let ids: Vec<NodeId> = nodes.iter().map(|n| n.0).collect();
    let cluster = Arc::new(FakeCluster::new(&ids));
    let engine = Engine::new(
        store,
        Agents::new(cluster.clone()),
        dir.path().join("controller"),
    );
    let layers = vec![DiffId(Digest::of(b"l1")), DiffId(Digest::of(b"l2"))];
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|d| d.to_string()).collect::<Vec<_>>()},
    })
    .to_string()
    .into_bytes();
    let id = ImageId(Digest::of(&config));
    let image = ImageRecord {
        id,
        config,
        diff_ids: layers.clone(),
        size: 0,
        loaded_ns: 1,
    };
    engine
        .store()
        .propose(Command::PutImage { image })
        .await
        .unwrap()
        .unwrap();
    engine
        .store()
        .propose(Command::Tag {
            reference: "img:1".into(),
            image: id,
        })
        .await
        .unwrap()
        .unwrap();
    for (node, hostname, labels) in nodes {
        register(&engine, *node, hostname, labels).await;
        cluster.agent(*node).with(|s| {
            s.inventory = LayerInventory {
                chains: ChainId::chain(&layers).into_iter().collect(),
                tars: Default::default(),
            }
        });
        let events = engine.agents().events(node);
        engine.node_connected(*node, events).await.unwrap();
    }
    Setup {
        _dir: dir,
        engine,
        fake: cluster.agent(ids[0]).clone(),
        cluster,
        layers,
    }
}

fn asked(fake: &FakeAgent, pick: impl Fn(&ContainerRequest) -> bool) -> usize {
    fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| matches!(r, AgentRequest::Container(c) if pick(c)))
            .count()
    })
}

pub(super) async fn status_of(engine: &Engine, id: &ContainerId) -> ContainerStatus {
    engine.container(id.as_str()).unwrap().status
}

#[tokio::test]
async fn create_start_stop_remove_are_recorded_and_carried_out_on_the_host() {
    let Setup { engine, fake, .. } = setup().await;
    let id = engine
        .create_container(Some("web"), br#"{"Image":"img:1","Cmd":["sleep","9"]}"#)
        .await
        .unwrap();
    assert_eq!(status_of(&engine, &id).await, ContainerStatus::Created);
    assert!(
        fake.with(|s| s.containers.contains_key(&id)),
        "layer made on the host"
    );
    engine.start(id.as_str()).await.unwrap();
    let c = engine.container("web").unwrap();
    assert_eq!(c.status, ContainerStatus::Running);
    assert!(
        fake.with(|s| s.containers[&id].pid.is_some()),
        "runs on the host"
    );
    engine.stop("web", Some(5), None).await.unwrap();
    let c = engine.container("web").unwrap();
    assert_eq!((c.status, c.exit_code), (ContainerStatus::Exited, 128 + 15));
    engine.remove("web", false).await.unwrap();
    assert!(engine.container(id.as_str()).is_err());
    assert!(
        !fake.with(|s| s.containers.contains_key(&id)),
        "removed on the host"
    );
}

#[tokio::test]
async fn an_exit_the_agent_sees_is_recorded() {
    let Setup { engine, fake, .. } = setup().await;
    let id = engine
        .create_container(None, br#"{"Image":"img:1"}"#)
        .await
        .unwrap();
    engine.start(id.as_str()).await.unwrap();
    fake.exit(&id, 3);
    let exited = engine
        .wait_state(&id, Some(Duration::from_secs(10)), |c| {
            c.is_some_and(|c| c.status == ContainerStatus::Exited)
        })
        .await;
    assert!(exited);
    assert_eq!(engine.container(id.as_str()).unwrap().exit_code, 3);
}

#[tokio::test]
async fn a_failed_start_is_rolled_back_with_the_exit_code_of_its_kind() {
    let Setup { engine, fake, .. } = setup().await;
    let id = engine
        .create_container(None, br#"{"Image":"img:1","Cmd":["nope"]}"#)
        .await
        .unwrap();
    fake.with(|s| s.fail_start.insert(id.clone()));
    let err = engine.start(id.as_str()).await.unwrap_err();
    assert_eq!(err.kind, crate::engine::ErrorKind::InvalidParameter);
    assert!(
        err.message.contains("executable file not found"),
        "{}",
        err.message
    );
    let c = engine.container(id.as_str()).unwrap();
    assert_eq!((c.status, c.exit_code), (ContainerStatus::Exited, 127));
    assert!(
        engine.store().read(|s| !s.endpoints.contains_key(&id)),
        "address released"
    );
    assert_eq!(
        asked(&fake, |r| matches!(
            r,
            ContainerRequest::CancelAttaches { .. }
        )),
        1
    );
}

#[tokio::test]
async fn a_lost_agent_fails_the_create_and_leaves_nothing_recorded() {
    let Setup { engine, fake, .. } = setup().await;
    fake.with(|s| s.lost = true);
    let err = engine
        .create_container(Some("lost"), br#"{"Image":"img:1"}"#)
        .await
        .unwrap_err();
    assert_eq!(err.kind, crate::engine::ErrorKind::Unavailable);
    assert!(engine.container("lost").is_err());
    assert!(engine.store().read(|s| s.containers.is_empty()));
}

#[tokio::test]
async fn a_failed_layer_takes_back_the_record_and_the_anonymous_volumes_newest_first() {
    use wharf_protocol::agent::volume::VolumeRequest;
    let Setup { engine, fake, .. } = setup().await;
    fake.with(|s| {
        s.fail = Some(|r| matches!(r, AgentRequest::Container(ContainerRequest::Create { .. })))
    });
    let body = br#"{"Image":"img:1","Volumes":{"/data":{}},"HostConfig":{"Binds":["named:/n"]}}"#;
    let err = engine
        .create_container(Some("web"), body)
        .await
        .unwrap_err();
    assert_eq!(err.kind, crate::engine::ErrorKind::System);
    assert!(engine.container("web").is_err(), "no record left");
    let volumes: Vec<String> = engine.volumes().into_iter().map(|v| v.name).collect();
    assert_eq!(
        volumes,
        ["named"],
        "the named volume stays, as Docker keeps it"
    );
    assert_eq!(
        fake.with(|s| s.volumes.len()),
        1,
        "the anonymous one's directory is gone"
    );
    // The failed layer undid itself on the agent; then the undos ran newest first: the
    // record (not an agent request), the volume's record, then its directory.
    let tail: Vec<&'static str> = fake.with(|s| {
        s.requests
            .iter()
            .rev()
            .take(2)
            .map(|r| match r {
                AgentRequest::Container(ContainerRequest::Create { .. }) => "container create",
                AgentRequest::Volume(VolumeRequest::Remove { .. }) => "volume remove",
                _ => "other",
            })
            .collect()
    });
    assert_eq!(tail, ["volume remove", "container create"]);
    // With the agent well again, the same request succeeds: nothing was left to clash.
    fake.with(|s| s.fail = None);
    let id = engine.create_container(Some("web"), body).await.unwrap();
    assert_eq!(status_of(&engine, &id).await, ContainerStatus::Created);
}

#[tokio::test]
async fn a_volume_directory_that_cannot_be_made_records_nothing() {
    use wharf_protocol::agent::volume::VolumeRequest;
    let Setup { engine, fake, .. } = setup().await;
    fake.with(|s| {
        s.fail = Some(|r| matches!(r, AgentRequest::Volume(VolumeRequest::Create { .. })))
    });
    let body = br#"{"Image":"img:1","Volumes":{"/data":{}}}"#;
    assert!(engine.create_container(Some("web"), body).await.is_err());
    assert!(engine
        .store()
        .read(|s| s.containers.is_empty() && s.volumes.is_empty()));
    assert_eq!(
        asked(&fake, |r| matches!(r, ContainerRequest::Create { .. })),
        0
    );
    let err = engine
        .create_volume("v1", "", Default::default(), Default::default(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind, crate::engine::ErrorKind::System);
    assert!(engine.volume("v1").is_err());
}

#[tokio::test]
async fn a_bridge_that_fails_takes_its_network_record_and_half_made_bridge_back() {
    use wharf_protocol::agent::network::NetworkRequest;
    let Setup { engine, fake, .. } = setup().await;
    fake.with(|s| {
        s.fail = Some(|r| {
            matches!(
                r,
                AgentRequest::Network(NetworkRequest::EnsureBridge { .. })
            )
        })
    });
    let req = crate::engine::network_options::NetworkCreate {
        name: "back".into(),
        subnet: None,
        gateway: None,
        labels: Default::default(),
        internal: false,
        icc: true,
        masquerade: true,
    };
    assert!(engine.create_network(req.clone()).await.is_err());
    assert!(engine.network("back").is_err(), "no record left");
    let removed = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    AgentRequest::Network(NetworkRequest::RemoveBridge { .. })
                )
            })
            .count()
    });
    assert_eq!(removed, 1, "the half-made bridge is removed");
    fake.with(|s| s.fail = None);
    let n = engine.create_network(req).await.unwrap();
    engine.remove_network(&n.name).await.unwrap();
    assert!(engine.network("back").is_err());
}

#[tokio::test]
async fn health_changes_the_agent_pushes_become_events() {
    let Setup { engine, fake, .. } = setup().await;
    let (_, mut events) = engine.events().subscribe();
    let body = br#"{"Image":"img:1","Cmd":["sleep","9"],
        "Healthcheck":{"Test":["CMD","true"],"Interval":1000000000}}"#;
    let id = engine.create_container(Some("doc"), body).await.unwrap();
    fake.with(|s| s.health.insert(id.clone(), "starting".into()));
    engine.start("doc").await.unwrap();
    async fn next_health(events: &mut tokio::sync::broadcast::Receiver<events::Event>) -> String {
        let wait = async {
            loop {
                let e = events.recv().await.unwrap();
                if e.action.starts_with("health_status") {
                    return e.action;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .expect("a health event")
    }
    // The first event is `healthy`: the initial `starting` is none, as in Docker.
    fake.with(|s| s.health.insert(id.clone(), "healthy".into()));
    assert_eq!(next_health(&mut events).await, "health_status: healthy");
    fake.with(|s| s.health.insert(id.clone(), "unhealthy".into()));
    assert_eq!(next_health(&mut events).await, "health_status: unhealthy");
    // The watch is one call the agent answers with each change: no request per poll.
    let watches = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    AgentRequest::Container(ContainerRequest::WatchHealth { .. })
                )
            })
            .count()
    });
    assert_eq!(watches, 1);
    assert_eq!(
        asked(&fake, |r| matches!(r, ContainerRequest::Health { .. })),
        0
    );
}

#[tokio::test]
async fn exec_runs_through_the_agent_and_streams_its_output_then_its_exit() {
    let Setup { engine, .. } = setup().await;
    let id = engine
        .create_container(Some("ex"), br#"{"Image":"img:1"}"#)
        .await
        .unwrap();
    engine.start(id.as_str()).await.unwrap();
    let exec = engine
        .create_exec(
            "ex",
            ExecCreate {
                attach_stdout: true,
                cmd: Some(vec!["echo".into(), "hi".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    let record = engine.claim_exec(&exec).unwrap();
    let mut stream = engine.start_exec(&record, false).await.unwrap();
    let mut out = Vec::new();
    let code = loop {
        match stream.next().await.unwrap() {
            Some(wharf_protocol::runtime::AttachEvent::Output { data, .. }) => {
                out.extend_from_slice(&data)
            }
            Some(wharf_protocol::runtime::AttachEvent::Exit(e)) => break e.code,
            None => panic!("stream ended without an exit"),
        }
    };
    assert_eq!((out.as_slice(), code), (&b"echo hi\n"[..], 0));
}

#[tokio::test]
async fn volumes_are_made_and_removed_on_the_host() {
    let Setup { engine, fake, .. } = setup().await;
    engine
        .create_volume(
            "data",
            "local",
            Default::default(),
            Default::default(),
            false,
        )
        .await
        .unwrap();
    assert!(fake.with(|s| s.volumes.contains("data")));
    assert!(engine.store().read(|s| s.volumes.contains_key("data")));
    engine.remove_volume("data", false).await.unwrap();
    assert!(!fake.with(|s| s.volumes.contains("data")));
}

#[tokio::test]
async fn where_layers_are_follows_the_agents_inventory() {
    let Setup {
        engine,
        fake,
        layers,
        ..
    } = setup().await;
    let chains = ChainId::chain(&layers);
    let held =
        |engine: &Engine, d: &DiffId| engine.store().read(|s| s.layer_nodes(d).contains(&NODE));
    assert!(held(&engine, &layers[1]), "recorded at connection");
    let first_only = LayerInventory {
        chains: [chains[0]].into(),
        tars: Default::default(),
    };
    fake.with(|s| s.inventory = first_only.clone());
    assert!(fake.report(AgentEvent::Inventory(first_only)));
    let mut rx = engine.store().watch();
    for _ in 0..100 {
        if !held(&engine, &layers[1]) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
    assert!(held(&engine, &layers[0]) && !held(&engine, &layers[1]));
    let all = LayerInventory {
        chains: chains.iter().copied().collect(),
        tars: Default::default(),
    };
    fake.with(|s| s.inventory = all.clone());
    assert!(fake.report(AgentEvent::Inventory(all)));
    for _ in 0..100 {
        if held(&engine, &layers[1]) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
    assert!(held(&engine, &layers[1]));
    let image = engine.store().read(|s| s.tags["img:1"]);
    assert_eq!(
        engine.store().read(|s| s.nodes_with_image(&image)),
        [NODE].into()
    );
}

/// `docker inspect` of `reference`, as JSON.
pub(super) async fn inspect_json(engine: &Engine, reference: &str) -> serde_json::Value {
    use http_body_util::BodyExt;
    let resp = crate::api::containers::inspect(engine, reference)
        .await
        .unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn inspect_shows_the_pid_the_agent_reports_while_the_container_runs() {
    let Setup { engine, fake, .. } = setup().await;
    let id = engine
        .create_container(Some("web"), br#"{"Image":"img:1","Cmd":["sleep","9"]}"#)
        .await
        .unwrap();
    let shown = inspect_json(&engine, "web").await;
    assert_eq!(shown["State"]["Pid"], 0);
    assert_eq!(shown["NetworkSettings"]["SandboxKey"], "");

    engine.start("web").await.unwrap();
    let pid = fake
        .with(|s| s.containers[&id].pid)
        .expect("runs on the host");
    let shown = inspect_json(&engine, "web").await;
    assert_eq!(shown["State"]["Running"], true);
    assert_eq!(shown["State"]["Pid"], pid, "the agent's PID");
    assert_eq!(
        shown["NetworkSettings"]["SandboxKey"],
        format!("/proc/{pid}/ns/net")
    );
    assert_eq!(
        shown["LogPath"],
        format!("/fake/containers/{id}/{id}-json.log")
    );
    assert_eq!(
        asked(&fake, |r| matches!(r, ContainerRequest::Local { .. })),
        2,
        "one call per inspect for paths and process"
    );

    engine.stop("web", Some(5), None).await.unwrap();
    let shown = inspect_json(&engine, "web").await;
    assert_eq!(shown["State"]["Pid"], 0);
    assert_eq!(shown["NetworkSettings"]["SandboxKey"], "");
}

#[tokio::test]
async fn network_container_mode_names_the_target_and_the_agent_finds_its_namespace() {
    use wharf_protocol::runtime::NetnsMode;
    let Setup { engine, fake, .. } = setup().await;
    let web = engine
        .create_container(Some("web"), br#"{"Image":"img:1"}"#)
        .await
        .unwrap();
    let side = engine
        .create_container(
            Some("side"),
            br#"{"Image":"img:1","HostConfig":{"NetworkMode":"container:web"}}"#,
        )
        .await
        .unwrap();
    let err = engine.start("side").await.unwrap_err();
    assert_eq!(err.kind, crate::engine::ErrorKind::Conflict);
    assert!(
        err.message
            .contains("cannot join network namespace of a non running container"),
        "{}",
        err.message
    );

    engine.start("web").await.unwrap();
    engine.start("side").await.unwrap();
    assert_eq!(status_of(&engine, &side).await, ContainerStatus::Running);
    let netns = fake.with(|s| {
        s.requests.iter().rev().find_map(|r| match r {
            AgentRequest::Container(ContainerRequest::Start { spec, options, .. })
                if spec.id == side =>
            {
                Some(options.netns.clone())
            }
            _ => None,
        })
    });
    assert_eq!(netns, Some(NetnsMode::JoinContainer(web.clone())));

    // The agent, not the state, knows whether the target's process is there.
    engine.stop("side", Some(5), None).await.unwrap();
    fake.with(|s| s.containers.get_mut(&web).unwrap().pid = None);
    let err = engine.start("side").await.unwrap_err();
    assert!(err.message.contains("is not running"), "{}", err.message);
    assert_eq!(status_of(&engine, &side).await, ContainerStatus::Exited);
}
