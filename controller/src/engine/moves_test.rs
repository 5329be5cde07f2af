//! Which containers move off a Down node, which cannot and why (pure), and the move
//! itself through the engine on fake agents.

use super::*;
use crate::engine::engine_test::{setup_nodes, Setup};
use wharf_protocol::agent::MountPoint;
use wharf_protocol::fixtures::container;
use wharf_protocol::node_state::{NodeDescription, NodeRecord, NodeRole};
use wharf_protocol::state::RestartState;

fn node(id: u64, host: &str, state: NodeState) -> NodeRecord {
    NodeRecord {
        id: NodeId(id),
        role: NodeRole::Agent,
        description: NodeDescription {
            hostname: host.into(),
            runs_containers: true,
            ..Default::default()
        },
        labels: Default::default(),
        availability: Default::default(),
        state,
        created_ns: 0,
        updated_ns: 0,
    }
}

fn running(n: u8, name: &str, on: u64, restart: &str) -> ContainerRecord {
    let mut c = container(n, name);
    c.node = NodeId(on);
    c.status = ContainerStatus::Running;
    c.host_config_json = format!(r#"{{"RestartPolicy":{{"Name":"{restart}"}}}}"#);
    c
}

fn state(containers: Vec<ContainerRecord>) -> ClusterState {
    let mut s = ClusterState::default();
    s.nodes
        .insert(NodeId(1), node(1, "node-1", NodeState::Down));
    s.nodes
        .insert(NodeId(2), node(2, "node-2", NodeState::Ready));
    for c in containers {
        s.containers.insert(c.id.clone(), c);
    }
    s
}

/// `node`'s agent is lost (its containers keep running) and the leader records it Down.
async fn lose(
    engine: &Arc<Engine>,
    cluster: &crate::agent_client::fake::FakeCluster,
    node: NodeId,
) {
    cluster.agent(node).set_lost(true);
    engine.node_lost(node);
    engine
        .store()
        .propose(Command::SetNodeState {
            id: node,
            state: NodeState::Down,
            at_ns: 1,
        })
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn running_containers_that_asked_to_be_kept_running_move_off_a_down_node() {
    let always = running(1, "always", 1, "always");
    let unless = running(2, "unless", 1, "unless-stopped");
    let plain = running(3, "plain", 1, "no");
    let on_failure = running(4, "onfail", 1, "on-failure");
    let mut opted = running(5, "opted", 1, "no");
    opted.config_json =
        r#"{"Labels":{"com.docker.swarm.reschedule-policies":"[\"on-node-failure\"]"}}"#.into();
    let mut exited = running(6, "exited", 1, "always");
    exited.status = ContainerStatus::Exited;
    let elsewhere = running(7, "elsewhere", 2, "always");
    let mut stopped = running(8, "stopped", 1, "always");
    stopped.status = ContainerStatus::Running;
    let mut s = state(vec![
        always.clone(),
        unless.clone(),
        plain,
        on_failure,
        opted.clone(),
        exited,
        elsewhere,
        stopped.clone(),
    ]);
    s.restarts.insert(
        stopped.id.clone(),
        RestartState {
            manually_stopped: true,
            ..Default::default()
        },
    );
    assert_eq!(
        decide(&s),
        vec![
            Decision::Move(always.id),
            Decision::Move(unless.id),
            Decision::Move(opted.id),
        ]
    );
}

#[test]
fn what_ties_a_container_to_its_node_keeps_it_pending_with_the_reason() {
    let mount = |kind, source: &str, anonymous| MountPoint {
        kind,
        source: source.into(),
        target: "/d".into(),
        anonymous,
        ..Default::default()
    };
    let mut vol = running(1, "vol", 1, "always");
    vol.run.host.mounts = vec![mount(MountKind::Volume, "data", false)];
    let mut bind = running(2, "bind", 1, "always");
    bind.run.host.mounts = vec![mount(MountKind::Bind, "/srv", false)];
    let mut anon = running(3, "anon", 1, "always");
    anon.run.host.mounts = vec![
        mount(MountKind::Volume, "0123abcd", true),
        mount(MountKind::Tmpfs, "", false),
    ];
    let mut net = running(4, "net", 1, "always");
    net.host_config_json =
        r#"{"RestartPolicy":{"Name":"always"},"NetworkMode":"container:vol"}"#.into();
    let mut s = state(vec![vol.clone(), bind.clone(), anon.clone(), net.clone()]);
    let d = decide(&s);
    assert_eq!(
        d,
        vec![
            Decision::Pending {
                id: vol.id.clone(),
                reason: "pinned by volume data on node-1".into()
            },
            Decision::Pending {
                id: bind.id.clone(),
                reason: "pinned by bind mount /srv on node-1".into()
            },
            Decision::Move(anon.id.clone()),
            Decision::Pending {
                id: net.id.clone(),
                reason: "pinned by --network container:vol on node-1".into()
            },
        ]
    );
    // Recorded: not again; the node back: cleared.
    for x in d {
        if let Decision::Pending { id, reason } = x {
            s.pending.insert(id, reason);
        }
    }
    assert_eq!(decide(&s), vec![Decision::Move(anon.id.clone())]);
    s.nodes.get_mut(&NodeId(1)).unwrap().state = NodeState::Ready;
    assert_eq!(
        decide(&s),
        vec![
            Decision::Clear(vol.id),
            Decision::Clear(bind.id),
            Decision::Clear(net.id)
        ]
    );
}

#[test]
fn the_successor_keeps_the_config_and_says_where_it_came_from() {
    let mut c = running(1, "web", 1, "always");
    c.config_json =
        r#"{"Image":"img:1","Labels":{"com.docker.swarm.constraints":"[\"node!=node-3\"]"}}"#
            .into();
    let b = successor_body(&c, "node-1");
    assert_eq!(b["Image"], "img:1");
    assert_eq!(b["HostConfig"]["RestartPolicy"]["Name"], "always");
    assert_eq!(
        b["Labels"]["com.docker.swarm.constraints"],
        "[\"node!=node-3\"]"
    );
    assert_eq!(
        b["Labels"][MOVED_FROM_LABEL],
        format!("node-1 ({})", c.id.short())
    );
}

/// On fake agents: a running `--restart always` container of a node that goes Down is
/// re-created and started on the other node under its name, once; the old ID is gone.
#[tokio::test]
async fn a_container_moves_once_to_a_ready_node_and_keeps_its_name() {
    let Setup {
        engine, cluster, ..
    } = setup_nodes(&[(NodeId(1), "a", &[]), (NodeId(2), "b", &[])]).await;
    let old = engine
        .create_container(
            Some("web"),
            br#"{"Image":"img:1","Env":["constraint:node==~a"],"HostConfig":{"RestartPolicy":{"Name":"always"}}}"#,
        )
        .await
        .unwrap();
    engine.start("web").await.unwrap();
    assert_eq!(engine.container("web").unwrap().node, NodeId(1));
    lose(&engine, &cluster, NodeId(1)).await;
    engine.move_off_down_nodes().await;
    let moved = engine.container("web").unwrap();
    assert_ne!(moved.id, old, "a new ID");
    assert_eq!(moved.node, NodeId(2));
    assert_eq!(moved.status, ContainerStatus::Running);
    let cfg: Value = serde_json::from_str(&moved.config_json).unwrap();
    assert_eq!(
        cfg["Labels"][MOVED_FROM_LABEL],
        format!("a ({})", old.short())
    );
    assert!(cluster
        .agent(NodeId(2))
        .with(|s| s.containers[&moved.id].pid.is_some()));
    assert!(
        engine.container(old.as_str()).is_err(),
        "the old ID is gone"
    );
    // Once: another round changes nothing.
    engine.move_off_down_nodes().await;
    assert_eq!(engine.container("web").unwrap().id, moved.id);
    assert_eq!(engine.store().read(|s| s.containers.len()), 1);
}

/// Many containers of a Down node move in one round, several at once (at most
/// [`CONCURRENT_MOVES`] creates in flight), each once, and keep their names.
#[tokio::test]
async fn the_containers_of_a_down_node_move_concurrently_each_once() {
    let Setup {
        engine, cluster, ..
    } = setup_nodes(&[
        (NodeId(1), "a", &[]),
        (NodeId(2), "b", &[]),
        (NodeId(3), "c", &[]),
    ])
    .await;
    let n = CONCURRENT_MOVES + 8;
    for i in 0..n {
        let name = format!("web-{i}");
        engine
            .create_container(
                Some(&name),
                br#"{"Image":"img:1","Env":["constraint:node==~a"],"HostConfig":{"RestartPolicy":{"Name":"always"}}}"#,
            )
            .await
            .unwrap();
        engine.start(&name).await.unwrap();
    }
    for node in [NodeId(2), NodeId(3)] {
        cluster
            .agent(node)
            .with(|s| s.create_delay = Some(std::time::Duration::from_millis(50)));
    }
    lose(&engine, &cluster, NodeId(1)).await;
    engine.move_off_down_nodes().await;
    let peak: usize = [NodeId(2), NodeId(3)]
        .iter()
        .map(|n| cluster.agent(*n).with(|s| s.creating.1))
        .sum();
    assert!(
        peak > 1 && peak <= CONCURRENT_MOVES,
        "creates in flight at once: {peak}"
    );
    for i in 0..n {
        let c = engine.container(&format!("web-{i}")).unwrap();
        assert_ne!(c.node, NodeId(1), "web-{i} moved");
        assert_eq!(c.status, ContainerStatus::Running, "web-{i}");
    }
    let held: usize = [NodeId(2), NodeId(3)]
        .iter()
        .map(|n| cluster.agent(*n).with(|s| s.containers.len()))
        .sum();
    assert_eq!(held, n, "one successor each");
    assert_eq!(engine.store().read(|s| s.containers.len()), n);
    engine.move_off_down_nodes().await;
    assert_eq!(engine.store().read(|s| s.containers.len()), n, "moved once");
}

#[test]
fn a_draining_node_moves_what_may_move_and_says_why_the_rest_stays() {
    let always = running(1, "always", 1, "always");
    let plain = running(2, "plain", 1, "no");
    let mut vol = running(3, "vol", 1, "always");
    vol.run.host.mounts = vec![MountPoint {
        kind: MountKind::Volume,
        source: "data".into(),
        target: "/d".into(),
        ..Default::default()
    }];
    let mut s = state(vec![always.clone(), plain.clone(), vol.clone()]);
    let n1 = s.nodes.get_mut(&NodeId(1)).unwrap();
    n1.state = NodeState::Ready;
    n1.availability = wharf_protocol::node_state::Availability::Drain;
    let d = decide(&s);
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(d[0], Decision::Move(always.id));
    assert!(
        matches!(&d[1], Decision::Pending { id, reason } if *id == plain.id && reason.starts_with("not moved: only containers with --restart")),
        "{:?}",
        d[1]
    );
    assert!(
        matches!(&d[2], Decision::Pending { id, reason } if *id == vol.id && reason == "pinned by volume data on node-1"),
        "{:?}",
        d[2]
    );
    // Paused (no new placements) moves nothing.
    s.nodes.get_mut(&NodeId(1)).unwrap().availability =
        wharf_protocol::node_state::Availability::Pause;
    assert!(decide(&s).is_empty());
}

/// On fake agents: draining a node starts the successor on the other node, then stops
/// and removes the drained node's copy.
#[tokio::test]
async fn a_drained_container_runs_elsewhere_before_its_old_copy_stops() {
    let Setup {
        engine, cluster, ..
    } = setup_nodes(&[(NodeId(1), "a", &[]), (NodeId(2), "b", &[])]).await;
    let old = engine
        .create_container(
            Some("web"),
            br#"{"Image":"img:1","Env":["constraint:node==~a"],"HostConfig":{"RestartPolicy":{"Name":"unless-stopped"}}}"#,
        )
        .await
        .unwrap();
    engine.start("web").await.unwrap();
    let mut n = engine.store().read(|s| s.nodes[&NodeId(1)].clone());
    n.availability = wharf_protocol::node_state::Availability::Drain;
    engine
        .store()
        .propose(Command::UpdateNode {
            id: NodeId(1),
            availability: n.availability,
            labels: n.labels.clone(),
            at_ns: 2,
        })
        .await
        .unwrap()
        .unwrap();
    engine.move_off_down_nodes().await;
    let moved = engine.container("web").unwrap();
    assert_eq!(moved.node, NodeId(2));
    assert_eq!(moved.status, ContainerStatus::Running);
    assert!(
        !cluster
            .agent(NodeId(1))
            .with(|s| s.containers.contains_key(&old)),
        "the drained node's copy is gone"
    );
    let order: Vec<String> = cluster
        .agent(NodeId(2))
        .with(|s| s.requests.iter().map(|r| format!("{r:?}")).collect());
    assert!(order.iter().any(|r| r.contains("Start")), "{order:?}");
}

/// The leader's would-be moves are what a host fences: sent at start and at each
/// reconcile round, with the lease when fencing is on and 0 when off.
#[tokio::test]
async fn a_host_fences_the_containers_the_leader_would_move() {
    let Setup {
        engine, cluster, ..
    } = setup_nodes(&[(NodeId(1), "a", &[]), (NodeId(2), "b", &[])]).await;
    let on_a = |restart: &str| {
        format!(
            r#"{{"Image":"img:1","Env":["constraint:node==a"],"HostConfig":{{"RestartPolicy":{{"Name":"{restart}"}}}}}}"#
        )
    };
    engine
        .create_container(Some("kept"), on_a("always").as_bytes())
        .await
        .unwrap();
    engine
        .create_container(Some("plain"), on_a("no").as_bytes())
        .await
        .unwrap();
    engine.start("plain").await.unwrap();
    engine.start("kept").await.unwrap();
    let kept = engine.container("kept").unwrap().id;
    let fence = || cluster.agent(NodeId(1)).with(|s| s.fence.clone());
    assert_eq!(fence(), Some((0, vec![kept.clone()])), "fencing is off");
    let mut settings = engine.store().read(|s| s.settings);
    settings.fencing = true;
    settings.lease_ms = 2500;
    engine
        .store()
        .propose(Command::UpdateSettings { settings })
        .await
        .unwrap()
        .unwrap();
    engine.send_fence(NodeId(1)).await;
    assert_eq!(fence(), Some((2500, vec![kept])));
    engine.stop("kept", Some(1), None).await.unwrap();
    engine.reconcile_node(NodeId(1), false).await;
    assert_eq!(fence(), Some((2500, vec![])), "a stopped one is not fenced");
}

/// A node that flaps (Down, back, Down again) with fencing off: the container moves once,
/// the returning node's copy is removed when it is back, and the second Down moves
/// nothing more; at every step at most one copy runs once the node is back, and the name
/// stays one container.
#[tokio::test]
async fn a_flapping_node_runs_no_container_twice_once_it_is_back() {
    let Setup {
        engine, cluster, ..
    } = setup_nodes(&[(NodeId(1), "a", &[]), (NodeId(2), "b", &[])]).await;
    engine
        .create_container(
            Some("web"),
            br#"{"Image":"img:1","Env":["constraint:node==~a"],"HostConfig":{"RestartPolicy":{"Name":"always"}}}"#,
        )
        .await
        .unwrap();
    engine.start("web").await.unwrap();
    let (a, b) = (cluster.agent(NodeId(1)), cluster.agent(NodeId(2)));
    let running = || {
        [a, b]
            .iter()
            .map(|f| f.with(|s| s.containers.values().filter(|c| c.pid.is_some()).count()))
            .sum::<usize>()
    };
    let set = |state| Command::SetNodeState {
        id: NodeId(1),
        state,
        at_ns: 1,
    };
    for round in 0..3 {
        // a goes: the lost host keeps its copy (no fencing), the leader moves the record.
        a.set_lost(true);
        engine.node_lost(NodeId(1));
        engine
            .store()
            .propose(set(NodeState::Down))
            .await
            .unwrap()
            .unwrap();
        engine.move_off_down_nodes().await;
        let c = engine.container("web").unwrap();
        assert_eq!(c.status, ContainerStatus::Running, "round {round}");
        // a is back: its stale copy goes at the reconcile, before anything else.
        a.set_lost(false);
        engine.node_connected(NodeId(1), None).await.unwrap();
        engine
            .store()
            .propose(set(NodeState::Ready))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(running(), 1, "round {round}: one copy runs");
        assert_eq!(engine.store().read(|s| s.containers.len()), 1);
        engine.move_off_down_nodes().await;
        assert_eq!(
            running(),
            1,
            "round {round}: nothing moves while a is Ready"
        );
    }
    assert_eq!(engine.container("web").unwrap().node, NodeId(2));
}
