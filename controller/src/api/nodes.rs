//! Node routes, as Docker's swarm mode serves them: `docker node ls / inspect / update /
//! rm`. Controllers are managers (with `ManagerStatus`), agents are workers (without).

use super::error::ApiError;
use super::http::{json, read_body, status, Filters, Query, Resp};
use crate::cluster::identity::{node_id_text, parse_node_id};
use crate::engine::Engine;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use wharf_protocol::node_state::{Availability, NodeRecord, NodeRole};
use wharf_protocol::state::{ClusterState, Command};
use wharf_protocol::NodeId;

/// What the Raft group says of the controllers: the leader.
#[derive(Clone, Debug, Default)]
pub struct Managers {
    /// The leader's node ID.
    pub leader: Option<NodeId>,
}

fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A node as `GET /nodes` shows it (pure).
pub fn node_json(n: &NodeRecord, managers: &Managers) -> Value {
    let d = &n.description;
    let mut v = json!({
        "ID": node_id_text(n.id),
        "Version": {"Index": n.updated_ns.max(0)},
        "CreatedAt": time(n.created_ns),
        "UpdatedAt": time(n.updated_ns),
        "Spec": {
            "Labels": n.labels,
            "Role": n.role.docker_name(),
            "Availability": n.availability.as_str(),
        },
        "Description": {
            "Hostname": d.hostname,
            "Platform": {"Architecture": std::env::consts::ARCH, "OS": "linux"},
            "Resources": {
                "NanoCPUs": u64::from(d.cpus) * 1_000_000_000,
                "MemoryBytes": d.memory,
            },
            "Engine": {
                "EngineVersion": d.engine_version,
                "Labels": d.engine_labels,
            },
        },
        "Status": {
            "State": n.state.as_str(),
            "Addr": d.addr,
        },
    });
    if n.role == NodeRole::Controller {
        let leader = managers.leader == Some(n.id);
        // The leader records which controllers answer (Ready/Down), so every controller
        // shows the same.
        let reachable = leader || n.state == wharf_protocol::node_state::NodeState::Ready;
        v["ManagerStatus"] = json!({
            "Leader": leader,
            "Reachability": if reachable { "reachable" } else { "unreachable" },
            "Addr": d.api_addr,
        });
    }
    v
}

/// `GET /info`'s `Swarm` object, and the leader's host name, for the controller `me`
/// (pure): "inactive" until a host is recorded; then the cluster as swarm mode shows it.
pub fn swarm_info(
    state: &ClusterState,
    me: NodeId,
    leader: Option<NodeId>,
    heartbeat_ns: u64,
) -> (Value, Option<String>) {
    let Some(mine) = state.nodes.get(&me) else {
        return (
            json!({"NodeID": "", "NodeAddr": "", "LocalNodeState": "inactive", "ControlAvailable": false, "Error": "", "RemoteManagers": null}),
            None,
        );
    };
    let managers: Vec<&NodeRecord> = state
        .nodes
        .values()
        .filter(|n| n.role == NodeRole::Controller)
        .collect();
    let remote: Vec<Value> = managers
        .iter()
        .map(|n| json!({"NodeID": node_id_text(n.id), "Addr": n.description.cluster_addr}))
        .collect();
    let leader_name = leader
        .and_then(|l| state.nodes.get(&l))
        .map(|n| n.description.hostname.clone());
    let swarm = json!({
        "NodeID": node_id_text(me),
        "NodeAddr": mine.description.addr,
        "LocalNodeState": "active",
        "ControlAvailable": true,
        "Error": "",
        "RemoteManagers": remote,
        "Nodes": state.nodes.len(),
        "Managers": managers.len(),
        "Cluster": {
            "ID": "wharf",
            "Version": {"Index": 0},
            "Spec": {
                "Name": "default",
                "Labels": {},
                "Orchestration": {},
                "Raft": {"SnapshotInterval": 1000, "HeartbeatTick": 1, "ElectionTick": 4},
                "Dispatcher": {"HeartbeatPeriod": heartbeat_ns},
                // The node certificates' validity (to 2124), as swarm's NodeCertExpiry.
                "CAConfig": {"NodeCertExpiry": 3_155_760_000_000_000_000u64},
                "TaskDefaults": {},
                "EncryptionConfig": {"AutoLockManagers": false},
            },
            "RootRotationInProgress": false,
            "DefaultAddrPool": null,
            "SubnetSize": 24,
            "DataPathPort": 0,
        },
    });
    (swarm, leader_name)
}

/// The node `reference` names: full ID, unique ID prefix or host name (pure).
pub fn find_node<'a>(state: &'a ClusterState, reference: &str) -> Result<&'a NodeRecord, ApiError> {
    let not_found = || ApiError::not_found(format!("node {reference} not found"));
    if reference.is_empty() {
        return Err(not_found());
    }
    if let Some(n) = parse_node_id(reference).and_then(|id| state.nodes.get(&id)) {
        return Ok(n);
    }
    let by_prefix: Vec<&NodeRecord> = state
        .nodes
        .values()
        .filter(|n| node_id_text(n.id).starts_with(reference))
        .collect();
    match by_prefix.as_slice() {
        [one] => return Ok(one),
        [] => {}
        _ => {
            return Err(ApiError::not_found(format!(
                "node {reference} is ambiguous ({} matches found)",
                by_prefix.len()
            )))
        }
    }
    let by_name: Vec<&NodeRecord> = state
        .nodes
        .values()
        .filter(|n| n.description.hostname == reference)
        .collect();
    match by_name.as_slice() {
        [one] => Ok(one),
        [] => Err(not_found()),
        _ => Err(ApiError::not_found(format!(
            "node {reference} is ambiguous ({} matches found)",
            by_name.len()
        ))),
    }
}

async fn propose(engine: &Engine, cmd: Command) -> Result<(), ApiError> {
    use crate::engine::EngineError;
    engine
        .store()
        .propose(cmd)
        .await
        .map_err(EngineError::from)?
        .map_err(EngineError::from)?;
    Ok(())
}

fn managers(engine: &Engine) -> Managers {
    let store = engine.store();
    Managers {
        leader: store.leader().map(|(id, _)| NodeId(id)),
    }
}

/// `GET /nodes?filters=` (`id`, `name`, `role`, `membership`, `label`, `node.label`).
pub fn list(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let f = Filters::parse(q.get("filters"))?;
    f.validate(&["id", "name", "role", "membership", "label", "node.label"])?;
    let m = managers(engine);
    let nodes: Vec<Value> = engine.store().read(|s| {
        s.nodes
            .values()
            .filter(|n| {
                (!f.contains("id") || f.values("id").any(|p| node_id_text(n.id).starts_with(p)))
                    && (!f.contains("name")
                        || f.values("name").any(|p| n.description.hostname.contains(p)))
                    && (!f.contains("role") || f.values("role").any(|r| r == n.role.docker_name()))
                    && (!f.contains("membership")
                        || f.values("membership").any(|v| v == "accepted"))
                    && f.match_kv_list("label", &n.description.engine_labels)
                    && f.match_kv_list("node.label", &n.labels)
            })
            .map(|n| with_pending(s, n, node_json(n, &m)))
            .collect()
    });
    Ok(json(StatusCode::OK, &Value::Array(nodes)))
}

/// `v` (a node's JSON) with `Status.Message` listing the containers of node `n` that
/// cannot move off it, with the reason of each (pure): what an operator reads before
/// taking the node away.
pub fn with_pending(s: &ClusterState, n: &NodeRecord, mut v: Value) -> Value {
    let stuck: Vec<String> = s
        .pending
        .iter()
        .filter_map(|(id, why)| {
            let c = s.containers.get(id).filter(|c| c.node == n.id)?;
            Some(format!("{} ({why})", c.name))
        })
        .collect();
    if !stuck.is_empty() {
        v["Status"]["Message"] = Value::String(format!(
            "{} cannot move: {}",
            if stuck.len() == 1 {
                "1 container".to_string()
            } else {
                format!("{} containers", stuck.len())
            },
            stuck.join(", ")
        ));
    }
    v
}

/// `GET /nodes/{id}`.
pub fn inspect(engine: &Engine, reference: &str) -> Result<Resp, ApiError> {
    let m = managers(engine);
    let v = engine
        .store()
        .read(|s| find_node(s, reference).map(|n| with_pending(s, n, node_json(n, &m))))?;
    Ok(json(StatusCode::OK, &v))
}

/// Body of `POST /nodes/{id}/update`: a `NodeSpec`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
struct NodeSpec {
    name: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    role: Option<String>,
    availability: Option<String>,
}

/// What `POST /nodes/{id}/update` asks, checked against the node (pure).
fn update_command(
    n: &NodeRecord,
    spec: NodeSpec,
    version: Option<&str>,
    at_ns: i64,
) -> Result<Command, ApiError> {
    if let Some(v) = version {
        let v: i64 = v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid node version {v:?}")))?;
        if v != n.updated_ns.max(0) {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "rpc error: code = Unknown desc = update out of sequence",
            ));
        }
    }
    if let Some(role) = spec.role.as_deref() {
        if !role.is_empty() && role != n.role.docker_name() {
            return Err(ApiError::bad_request(format!(
                "cannot change the role of node {} to {role}: a host is a controller or an agent from the time it joins",
                n.description.hostname
            )));
        }
    }
    let availability = match spec.availability.as_deref() {
        None | Some("") => n.availability,
        Some(a) => Availability::parse(a).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid availability {a:?}: use active, pause or drain"
            ))
        })?,
    };
    let _ = spec.name;
    Ok(Command::UpdateNode {
        id: n.id,
        availability,
        labels: spec.labels.unwrap_or_default(),
        at_ns,
    })
}

/// `POST /nodes/{id}/update?version=N` (`docker node update`).
pub async fn update(
    engine: &Engine,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let version = q.get("version").map(str::to_string);
    let body = read_body(req.into_body()).await?;
    let spec: NodeSpec = if body.is_empty() {
        NodeSpec::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    let cmd = engine.store().read(|s| {
        find_node(s, reference)
            .and_then(|n| update_command(n, spec, version.as_deref(), crate::engine::now_ns()))
    })?;
    propose(engine, cmd).await?;
    Ok(status(StatusCode::OK))
}

/// `DELETE /nodes/{id}?force=` (`docker node rm`): only a Down node; its ID is revoked.
/// A controller leaves the Raft group first (on the leader: membership changes are its),
/// then its record goes and its ID is revoked.
pub async fn remove(engine: &Engine, reference: &str) -> Result<Resp, ApiError> {
    let store = engine.store();
    let (id, role, state, leader_api) = store.read(|s| {
        let leader_api = store
            .leader()
            .and_then(|(l, _)| s.nodes.get(&NodeId(l)))
            .map(|n| n.description.api_addr.clone());
        find_node(s, reference).map(|n| (n.id, n.role, n.state, leader_api))
    })?;
    if role == NodeRole::Controller {
        if state == wharf_protocol::node_state::NodeState::Ready {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("rpc error: code = FailedPrecondition desc = node {reference} is a reachable controller: stop it first (a controller that answers is never removed)"),
            ));
        }
        if NodeId(store.node_id()) == id {
            return Err(ApiError::bad_request("a controller cannot remove itself"));
        }
        if !store.is_leader() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "controllers are removed by the Raft leader: run this against {}",
                    leader_api.unwrap_or_else(|| "the leader (none is known now)".into())
                ),
            ));
        }
        match store.remove_member(id.0).await {
            Ok(()) | Err(crate::raft::RaftError::UnknownMember { .. }) => {}
            Err(e) => return Err(crate::engine::EngineError::from(e).into()),
        }
    }
    propose(engine, Command::RemoveNode { id }).await?;
    Ok(status(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::node_state::{NodeDescription, NodeState};

    fn node(id: u64, name: &str, role: NodeRole) -> NodeRecord {
        NodeRecord {
            id: NodeId(id),
            role,
            description: NodeDescription {
                hostname: name.into(),
                addr: "10.0.0.1".into(),
                api_addr: "10.0.0.1:2376".into(),
                cpus: 2,
                memory: 1024,
                engine_version: "0.1.0".into(),
                ..Default::default()
            },
            labels: BTreeMap::new(),
            availability: Availability::Active,
            state: NodeState::Ready,
            created_ns: 1,
            updated_ns: 5,
        }
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for n in [
            node(0xab01, "ctl-1", NodeRole::Controller),
            node(0xab02, "node-1", NodeRole::Agent),
            node(0xcd03, "node-2", NodeRole::Agent),
        ] {
            s.nodes.insert(n.id, n);
        }
        s
    }

    #[test]
    fn managers_have_a_manager_status_and_workers_none() {
        let s = state();
        let m = Managers {
            leader: Some(NodeId(0xab01)),
        };
        let ctl = node_json(&s.nodes[&NodeId(0xab01)], &m);
        assert_eq!(ctl["Spec"]["Role"], "manager");
        assert_eq!(ctl["ManagerStatus"]["Leader"], true);
        assert_eq!(ctl["ManagerStatus"]["Reachability"], "reachable");
        assert_eq!(ctl["ManagerStatus"]["Addr"], "10.0.0.1:2376");
        assert_eq!(ctl["ID"], "000000000000ab01");
        let agent = node_json(&s.nodes[&NodeId(0xab02)], &m);
        assert_eq!(agent["Spec"]["Role"], "worker");
        assert!(agent.get("ManagerStatus").is_none());
        assert_eq!(agent["Status"]["State"], "ready");
        assert_eq!(agent["Description"]["Hostname"], "node-1");
        assert_eq!(
            agent["Description"]["Resources"]["NanoCPUs"],
            2_000_000_000u64
        );
        let mut down = s.nodes[&NodeId(0xab01)].clone();
        down.state = NodeState::Down;
        let follower = node_json(&down, &Managers::default());
        assert_eq!(follower["ManagerStatus"]["Reachability"], "unreachable");
        assert_eq!(follower["ManagerStatus"]["Leader"], false);
    }

    #[test]
    fn info_shows_the_cluster_once_a_host_is_recorded() {
        let s = state();
        let (swarm, leader) = swarm_info(&s, NodeId(0xab01), Some(NodeId(0xab01)), 1_000_000_000);
        assert_eq!(swarm["LocalNodeState"], "active");
        assert_eq!(swarm["Nodes"], 3);
        assert_eq!(swarm["Managers"], 1);
        assert_eq!(swarm["NodeID"], "000000000000ab01");
        assert_eq!(leader.as_deref(), Some("ctl-1"));
        let (none, _) = swarm_info(&ClusterState::default(), NodeId(1), None, 0);
        assert_eq!(none["LocalNodeState"], "inactive");
    }

    #[test]
    fn nodes_are_found_by_id_prefix_and_name() {
        let s = state();
        assert_eq!(
            find_node(&s, "000000000000ab02").unwrap().id,
            NodeId(0xab02)
        );
        assert_eq!(find_node(&s, "000000000000cd").unwrap().id, NodeId(0xcd03));
        assert_eq!(find_node(&s, "node-1").unwrap().id, NodeId(0xab02));
        let e = find_node(&s, "00000000000").unwrap_err();
        assert!(e.message.contains("ambiguous"), "{}", e.message);
        let e = find_node(&s, "node-9").unwrap_err();
        assert_eq!(e.status, StatusCode::NOT_FOUND);
        assert_eq!(e.message, "node node-9 not found");
    }

    #[test]
    fn updates_keep_the_role_and_check_the_version() {
        let s = state();
        let n = &s.nodes[&NodeId(0xab02)];
        let spec = NodeSpec {
            labels: Some([("zone".to_string(), "a".to_string())].into()),
            availability: Some("drain".into()),
            role: Some("worker".into()),
            ..Default::default()
        };
        match update_command(n, spec, Some("5"), 9).unwrap() {
            Command::UpdateNode {
                availability,
                labels,
                ..
            } => {
                assert_eq!(availability, Availability::Drain);
                assert_eq!(labels["zone"], "a");
            }
            other => panic!("{other:?}"),
        }
        let e = update_command(n, NodeSpec::default(), Some("4"), 9).unwrap_err();
        assert!(e.message.contains("out of sequence"));
        let promote = NodeSpec {
            role: Some("manager".into()),
            ..Default::default()
        };
        let e = update_command(n, promote, None, 9).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let bad = NodeSpec {
            availability: Some("sleep".into()),
            ..Default::default()
        };
        assert!(update_command(n, bad, None, 9)
            .unwrap_err()
            .message
            .contains("sleep"));
    }
}
