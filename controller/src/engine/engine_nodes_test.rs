//! The engine serving several nodes, each a fake agent (`agent_client::fake::FakeCluster`):
//! placement by constraint, each container's operations on its own node's agent only,
//! placement errors as the API shows them, a lost agent connection that records no exit
//! and a reconnect that re-adopts, and the per-node default networks.

use super::engine_test::{inspect_json, setup, setup_nodes, status_of, Setup};
use super::*;
use crate::agent_client::fake::FakeAgent;
use wharf_protocol::agent::host::LayerInventory;
use wharf_protocol::agent::{AgentEvent, AgentRequest};
use wharf_protocol::node_state::NodeState;

const NODE: NodeId = NodeId(1);

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// Two Ready nodes: `a` (zone=x) and `b` (zone=y).
async fn two_nodes() -> Setup {
    setup_nodes(&[(A, "a", &[("zone", "x")]), (B, "b", &[("zone", "y")])]).await
}

/// Requests to any agent that name container `id`.
fn asked_about(fake: &FakeAgent, id: &ContainerId) -> usize {
    fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| format!("{r:?}").contains(id.short()))
            .count()
    })
}

#[tokio::test]
async fn a_container_placed_by_constraint_lives_on_that_nodes_agent_only() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let id = engine
        .create_container(
            Some("web"),
            br#"{"Image":"img:1","Env":["A=1","constraint:node.labels.zone==y"]}"#,
        )
        .await
        .unwrap();
    let c = engine.container("web").unwrap();
    assert_eq!(c.node, B);
    assert_eq!(c.run.env, ["PATH=/bin", "A=1"], "constraints leave the env");
    let shown = inspect_json(&engine, "web").await;
    assert_eq!(shown["Node"]["Name"], "b");
    assert_eq!(shown["Node"]["ID"], "2");
    assert_eq!(shown["Node"]["IP"], "10.0.0.2");
    let reason = shown["Config"]["Labels"]["com.wharf.placement"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        reason.contains("constraint node.labels.zone==y"),
        "{reason}"
    );

    engine.start("web").await.unwrap();
    assert!(cluster.agent(B).with(|s| s.containers[&id].pid.is_some()));
    engine.stop("web", Some(5), None).await.unwrap();
    assert_eq!(status_of(&engine, &id).await, ContainerStatus::Exited);
    engine.remove("web", false).await.unwrap();
    assert!(!cluster.agent(B).with(|s| s.containers.contains_key(&id)));
    assert!(
        asked_about(cluster.agent(B), &id) >= 4,
        "create, start, kill, remove"
    );
    assert_eq!(asked_about(cluster.agent(A), &id), 0, "node a never asked");

    // Without constraints, spread: one container each.
    let first = engine
        .create_container(None, br#"{"Image":"img:1"}"#)
        .await
        .unwrap();
    let second = engine
        .create_container(None, br#"{"Image":"img:1"}"#)
        .await
        .unwrap();
    let mut nodes = [&first, &second].map(|id| engine.container(id.as_str()).unwrap().node);
    nodes.sort();
    assert_eq!(nodes, [A, B], "equal nodes: either first, then the other");
}

#[tokio::test]
async fn a_controller_places_only_on_nodes_it_reaches() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    cluster.set_reached(B, false);
    // b is preferred, and Ready in the state, but this controller has no connection to
    // its agent: the placement checks the node it chose and chooses again without it.
    for i in 0..4 {
        let name = format!("soft{i}");
        engine
            .create_container(
                Some(&name),
                br#"{"Image":"img:1","Env":["constraint:node==~b"]}"#,
            )
            .await
            .unwrap();
        assert_eq!(engine.container(&name).unwrap().node, A);
    }
    let e = engine
        .create_container(
            Some("hard"),
            br#"{"Image":"img:1","Env":["constraint:node==b"]}"#,
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("node==b"), "{e:?}");
    assert!(engine.container("hard").is_err(), "nothing recorded");
    cluster.set_reached(B, true);
    engine
        .create_container(
            Some("back"),
            br#"{"Image":"img:1","Env":["constraint:node==~b"]}"#,
        )
        .await
        .unwrap();
    assert_eq!(engine.container("back").unwrap().node, B);
}

#[tokio::test]
async fn placement_errors_reach_the_api_with_their_status() {
    use crate::api::error::ApiError;
    use http::StatusCode;
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let status = |e: EngineError| ApiError::from(e).status;
    let e = engine
        .create_container(None, br#"{"Image":"img:1","Env":["constraint:node==z"]}"#)
        .await
        .unwrap_err();
    assert_eq!(status(e.clone()), StatusCode::CONFLICT);
    assert!(e.message.contains("node==z"), "{}", e.message);
    let e = engine
        .create_container(
            None,
            br#"{"Image":"img:1","Env":["constraint:node.zone==z"]}"#,
        )
        .await
        .unwrap_err();
    assert_eq!(status(e.clone()), StatusCode::BAD_REQUEST);
    assert!(e.message.contains("node.zone==z"), "{}", e.message);
    let e = engine
        .create_container(
            None,
            br#"{"Image":"img:1","HostConfig":{"Memory":4294967296}}"#,
        )
        .await
        .unwrap_err();
    assert_eq!(status(e.clone()), StatusCode::CONFLICT);
    assert!(e.message.contains("memory"), "{}", e.message);
    // The image only on b, and b down: 409 naming b, never 404.
    cluster
        .agent(A)
        .with(|s| s.inventory = LayerInventory::default());
    assert!(cluster
        .agent(A)
        .report(AgentEvent::Inventory(LayerInventory::default())));
    let on_b_only = |engine: &Engine| {
        engine.store().read(|s| {
            let img = s.tags["img:1"];
            s.nodes_with_image(&img) == [B].into()
        })
    };
    let mut rx = engine.store().watch();
    for _ in 0..100 {
        if on_b_only(&engine) {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(50), rx.changed()).await;
    }
    assert!(on_b_only(&engine));
    engine
        .store()
        .propose(Command::SetNodeState {
            id: B,
            state: wharf_protocol::node_state::NodeState::Down,
            at_ns: 2,
        })
        .await
        .unwrap()
        .unwrap();
    let e = engine
        .create_container(None, br#"{"Image":"img:1"}"#)
        .await
        .unwrap_err();
    assert_eq!(status(e.clone()), StatusCode::CONFLICT);
    assert!(e.message.contains("held by: b"), "{}", e.message);
    let e = engine
        .create_container(None, br#"{"Image":"nope:1"}"#)
        .await
        .unwrap_err();
    assert_eq!(status(e), StatusCode::NOT_FOUND);
    engine
        .store()
        .propose(Command::SetNodeState {
            id: A,
            state: wharf_protocol::node_state::NodeState::Down,
            at_ns: 2,
        })
        .await
        .unwrap()
        .unwrap();
    let e = engine
        .create_container(None, br#"{"Image":"img:1"}"#)
        .await
        .unwrap_err();
    assert_eq!(status(e.clone()), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.message, "no agent is ready to run containers");
}

#[tokio::test]
async fn a_lost_agent_records_no_exit_and_its_reconnect_readopts_the_container() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let id = engine
        .create_container(
            Some("db"),
            br#"{"Image":"img:1","Env":["constraint:node==b"]}"#,
        )
        .await
        .unwrap();
    engine.start("db").await.unwrap();
    let fake = cluster.agent(B);
    // The connection goes: the monitor's Wait fails as Unavailable.
    fake.set_lost(true);
    let monitored = |engine: &Engine| engine.monitored.lock().unwrap().contains_key(&id);
    for _ in 0..100 {
        if !monitored(&engine) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!monitored(&engine), "the monitor ended");
    engine.node_lost(B);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let c = engine.container("db").unwrap();
    assert_eq!(c.status, ContainerStatus::Running, "no exit recorded");
    assert_eq!(c.finished_ns, 0);

    // The agent is back (its container ran on): re-adopted, once however often called.
    fake.set_lost(false);
    engine.node_connected(B, None).await.unwrap();
    engine.node_connected(B, None).await.unwrap();
    assert!(monitored(&engine));
    let defaults = engine.store().read(|s| {
        s.networks
            .values()
            .filter(|n| n.default && n.node == B)
            .count()
    });
    assert_eq!(defaults, 1, "no second default network");
    fake.exit(&id, 3);
    let exited = engine
        .wait_state(&id, Some(Duration::from_secs(10)), |c| {
            c.is_some_and(|c| c.status == ContainerStatus::Exited)
        })
        .await;
    assert!(exited);
    assert_eq!(engine.container("db").unwrap().exit_code, 3);
}

/// A reconnecting node is reconciled with the state: a container with no record there is
/// removed (killed first when it runs), a run the state records as exited is stopped, a
/// running record is adopted; what is younger than the grace is left for a later round.
#[tokio::test]
async fn a_reconnecting_node_is_reconciled_with_the_state() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let on_b = br#"{"Image":"img:1","Env":["constraint:node==b"]}"#;
    let stale = engine.create_container(Some("stale"), on_b).await.unwrap();
    let live = engine.create_container(Some("live"), on_b).await.unwrap();
    engine.start("live").await.unwrap();
    let kept = engine.create_container(Some("kept"), on_b).await.unwrap();
    let fake = cluster.agent(B);
    fake.set_lost(true);
    engine.node_lost(B);
    // While the node was away: a run of `stale` its controller never recorded, and two
    // containers the state does not know (one running).
    let orphan = ContainerId::from_bytes([0xe1; 32]);
    let running_orphan = ContainerId::from_bytes([0xe2; 32]);
    fake.with(|s| {
        s.containers.get_mut(&stale).unwrap().pid = Some(4242);
        s.containers.insert(orphan.clone(), Default::default());
        s.containers.insert(
            running_orphan.clone(),
            crate::agent_client::fake::FakeContainer {
                pid: Some(4343),
                exit: None,
            },
        );
    });
    fake.set_lost(false);

    // Young: the running record is adopted, the orphans go; the unrecorded run may be a
    // start under way and is left.
    fake.with(|s| s.age_secs = reconcile::GRACE_SECS - 1);
    engine.node_connected(B, None).await.unwrap();
    assert!(engine.monitored.lock().unwrap().contains_key(&live));
    assert_eq!(fake.with(|s| s.containers.len()), 3, "the orphans are gone");
    assert!(fake.with(|s| s.containers[&stale].pid.is_some()));

    // Old enough: the unrecorded run stops, the records stay as they were.
    fake.with(|s| s.age_secs = reconcile::GRACE_SECS);
    engine.reconcile_node(B, false).await;
    let left: Vec<ContainerId> = fake.with(|s| s.containers.keys().cloned().collect());
    let mut want = vec![stale.clone(), live.clone(), kept.clone()];
    want.sort();
    assert_eq!(left, want);
    assert!(fake.with(|s| s.containers[&stale].pid.is_none()), "stopped");
    assert!(
        fake.with(|s| s.containers[&live].pid.is_some()),
        "still runs"
    );
    assert_eq!(status_of(&engine, &stale).await, ContainerStatus::Created);
    assert_eq!(status_of(&engine, &live).await, ContainerStatus::Running);
    assert_eq!(status_of(&engine, &kept).await, ContainerStatus::Created);
    assert_eq!(
        asked_about(cluster.agent(A), &running_orphan),
        0,
        "node a is not touched"
    );
}

/// `docker rm` of a container on a Down node: refused with the reason without `-f`;
/// with `-f` its record goes at once (no call to the lost agent), and the node removes
/// the container when it is back.
#[tokio::test]
async fn a_container_on_a_down_node_is_forgotten_by_force_and_removed_on_return() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let id = engine
        .create_container(
            Some("web"),
            br#"{"Image":"img:1","Env":["constraint:node==b"]}"#,
        )
        .await
        .unwrap();
    engine.start("web").await.unwrap();
    let fake = cluster.agent(B);
    fake.set_lost(true);
    engine.node_lost(B);
    let set = |state| Command::SetNodeState {
        id: B,
        state,
        at_ns: 1,
    };
    engine
        .store()
        .propose(set(NodeState::Down))
        .await
        .unwrap()
        .unwrap();
    let e = engine.remove("web", false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Conflict);
    assert!(e.message.contains("node b is down"), "{}", e.message);
    assert!(engine.container("web").is_ok(), "kept");
    let asked = fake.with(|s| s.requests.len());
    engine.remove("web", true).await.unwrap();
    assert!(engine.container("web").is_err(), "forgotten");
    assert_eq!(
        fake.with(|s| s.requests.len()),
        asked,
        "the lost agent not asked"
    );
    assert!(
        fake.with(|s| s.containers[&id].pid.is_some()),
        "still runs there"
    );
    // The name is free at once.
    engine
        .create_container(Some("web"), br#"{"Image":"img:1"}"#)
        .await
        .unwrap();

    // The node is back: its stale copy is killed and removed.
    fake.set_lost(false);
    fake.with(|s| s.age_secs = reconcile::GRACE_SECS);
    engine
        .store()
        .propose(set(NodeState::Ready))
        .await
        .unwrap()
        .unwrap();
    engine.node_connected(B, None).await.unwrap();
    assert!(!fake.with(|s| s.containers.contains_key(&id)));
}

#[tokio::test]
async fn each_node_has_its_own_default_network_and_names_resolve_on_the_containers_node() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let defaults: Vec<(NodeId, String)> = engine.store().read(|s| {
        s.networks
            .values()
            .filter(|n| n.default)
            .map(|n| (n.node, n.name.clone()))
            .collect()
    });
    assert_eq!(defaults.len(), 2);
    assert!(defaults.contains(&(A, "bridge".into())) && defaults.contains(&(B, "bridge".into())));
    let err = engine.network("bridge").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidParameter, "{}", err.message);
    assert_eq!(engine.network("b/bridge").unwrap().node, B);
    assert_eq!(engine.network("1/bridge").unwrap().node, A);

    engine
        .create_container(
            Some("web"),
            br#"{"Image":"img:1","Env":["constraint:node==b"]}"#,
        )
        .await
        .unwrap();
    engine.start("web").await.unwrap();
    let (ep_node, net_node) = engine.store().read(|s| {
        let c = s
            .containers
            .values()
            .find(|c| c.name.as_str() == "web")
            .unwrap();
        let e = &s.endpoints[&c.id][0];
        (e.node, s.networks[&e.network].node)
    });
    assert_eq!((ep_node, net_node), (B, B));
    assert!(
        cluster
            .agent(B)
            .with(|s| s.requests.iter().any(|r| matches!(
                r,
                AgentRequest::Network(
                    wharf_protocol::agent::network::NetworkRequest::SyncRules { .. }
                )
            ))),
        "b's rules follow"
    );

    // A user network made on a; the same name may be made on b.
    let req = |name: &str| crate::engine::network_options::NetworkCreate {
        name: name.into(),
        subnet: None,
        gateway: None,
        labels: Default::default(),
        internal: false,
        icc: true,
        masquerade: true,
    };
    assert_eq!(engine.create_network(req("a/front")).await.unwrap().node, A);
    assert_eq!(engine.create_network(req("b/front")).await.unwrap().node, B);
    let err = engine.create_network(req("b/front")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    engine
        .connect_network("front", "web", vec![])
        .await
        .unwrap();
    let joined = engine.store().read(|s| {
        let c = s
            .containers
            .values()
            .find(|c| c.name.as_str() == "web")
            .unwrap();
        s.connections[&c.id]
            .keys()
            .map(|n| s.networks[n].node)
            .collect::<Vec<_>>()
    });
    assert_eq!(joined, [B, B], "bridge and front, both b's");
    let shown = engine.store().read(|s| {
        let mut v: Vec<String> = s
            .networks
            .values()
            .map(|n| crate::engine::network::shown_network_name(s, n))
            .collect();
        v.sort();
        v
    });
    assert_eq!(shown, ["a/bridge", "a/front", "b/bridge", "b/front"]);
}

/// `docker network create NAME` makes a host-local bridge of that name on every Ready
/// agent; `docker network rm NAME` removes them all; a node that refuses undoes the ones
/// made before it.
#[tokio::test]
async fn a_plain_network_name_is_made_on_every_node_and_removed_from_all() {
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    let req = |name: &str| crate::engine::network_options::NetworkCreate {
        name: name.into(),
        subnet: Some("10.99.0.0/24".into()),
        gateway: None,
        labels: Default::default(),
        internal: false,
        icc: true,
        masquerade: true,
    };
    let users = |engine: &Engine| {
        engine.store().read(|s| {
            let mut v: Vec<String> = s
                .networks
                .values()
                .filter(|n| !n.default)
                .map(|n| crate::engine::network::shown_network_name(s, n))
                .collect();
            v.sort();
            v
        })
    };
    let first = engine.create_network(req("wide")).await.unwrap();
    assert_eq!(first.node, A, "answered with the first node's");
    assert_eq!(users(&engine), ["a/wide", "b/wide"]);
    let err = engine.create_network(req("wide")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict, "{}", err.message);
    assert_eq!(users(&engine), ["a/wide", "b/wide"], "nothing more made");
    engine.remove_network("wide").await.unwrap();
    assert!(users(&engine).is_empty());

    // b refuses to make bridges: nothing is left on a.
    cluster.agent(B).with(|s| {
        s.fail = Some(|r| {
            matches!(
                r,
                AgentRequest::Network(
                    wharf_protocol::agent::network::NetworkRequest::EnsureBridge { .. }
                )
            )
        })
    });
    assert!(engine.create_network(req("half")).await.is_err());
    assert!(users(&engine).is_empty(), "{:?}", users(&engine));
}

#[tokio::test]
async fn one_node_shows_network_names_as_they_are() {
    let Setup { engine, .. } = setup().await;
    let shown = engine.store().read(|s| {
        s.networks
            .values()
            .map(|n| crate::engine::network::shown_network_name(s, n))
            .collect::<Vec<_>>()
    });
    assert_eq!(shown, ["bridge"]);
    assert_eq!(engine.network("bridge").unwrap().node, NODE);
}

/// In a cluster, `docker ps` shows `node/name` and a port published on every address on
/// its node's address (classic Swarm's); a single host shows both as Docker does.
#[tokio::test]
async fn names_and_published_ports_show_the_node_in_a_cluster_only() {
    use crate::engine::network::{ps_ports_json, shown_container_name};
    let shown = |engine: &Engine, name: &str| {
        let c = engine.container(name).unwrap();
        engine.store().read(|s| {
            let ports = ps_ports_json(s, &c);
            (shown_container_name(s, &c), ports[0]["IP"].clone())
        })
    };
    let body = br#"{"Image":"img:1","Env":["constraint:node==b"],"ExposedPorts":{"80/tcp":{}},"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}"#;
    let Setup { engine, .. } = two_nodes().await;
    engine.create_container(Some("web"), body).await.unwrap();
    engine.start("web").await.unwrap();
    assert_eq!(
        shown(&engine, "web"),
        ("/b/web".into(), serde_json::json!("10.0.0.2"))
    );
    let inspect = inspect_json(&engine, "web").await;
    assert_eq!(inspect["Name"], "/web", "inspect keeps the plain name");
    assert_eq!(
        inspect["NetworkSettings"]["Ports"]["80/tcp"][0]["HostIp"],
        "10.0.0.2"
    );

    let Setup { engine, .. } = setup().await;
    let body = br#"{"Image":"img:1","ExposedPorts":{"80/tcp":{}},"HostConfig":{"PortBindings":{"80/tcp":[{"HostPort":"8080"}]}}}"#;
    engine.create_container(Some("web"), body).await.unwrap();
    engine.start("web").await.unwrap();
    assert_eq!(
        shown(&engine, "web"),
        ("/web".into(), serde_json::json!("0.0.0.0"))
    );
}

#[tokio::test]
async fn volumes_pin_to_their_node_and_image_removal_collects_on_every_node() {
    use wharf_protocol::agent::image::ImageRequest;
    let Setup {
        engine, cluster, ..
    } = two_nodes().await;
    engine
        .create_container(
            Some("w1"),
            br#"{"Image":"img:1","Env":["constraint:node==b"],"HostConfig":{"Binds":["data:/d"]}}"#,
        )
        .await
        .unwrap();
    assert!(cluster.agent(B).with(|s| s.volumes.contains("data")));
    assert!(!cluster.agent(A).with(|s| s.volumes.contains("data")));
    assert_eq!(engine.volume("data").unwrap().node, B);
    // Node a has fewer containers, but the volume is on b.
    engine
        .create_container(
            Some("w2"),
            br#"{"Image":"img:1","HostConfig":{"Binds":["data:/d"]}}"#,
        )
        .await
        .unwrap();
    assert_eq!(engine.container("w2").unwrap().node, B);
    let shown = inspect_json(&engine, "w2").await;
    let reason = shown["Config"]["Labels"]["com.wharf.placement"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("with volume data"), "{reason}");
    for c in ["w1", "w2"] {
        engine.remove(c, false).await.unwrap();
    }
    engine.remove_volume("data", false).await.unwrap();
    assert!(!cluster.agent(B).with(|s| s.volumes.contains("data")));

    engine.delete_image("img:1", false).await.unwrap();
    for node in [A, B] {
        let collected = cluster.agent(node).with(|s| {
            s.requests
                .iter()
                .any(|r| matches!(r, AgentRequest::Image(ImageRequest::Collect { .. })))
        });
        assert!(collected, "layers collected on node {node}");
    }
}
