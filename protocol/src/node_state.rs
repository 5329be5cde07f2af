//! The hosts of the cluster as the controllers record them (state format 5): what
//! `docker node ls` and `docker node inspect` show, and what placement reads.
//!
//! A host joins once (`Command::RegisterNode`, its ID chosen by the controller that
//! admitted it); each later connection of its daemon re-registers its description (CPUs,
//! memory, engine version, address) and keeps what operators set (availability, labels).
//! Liveness is the leader's (`Command::SetNodeState` records only the transitions).
//! A removed node's ID is revoked for good: its certificate no longer admits it.

use crate::ids::NodeId;
use crate::state::{ClusterState, Response, StateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a host does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NodeRole {
    /// A Raft member serving the Docker API (Docker's "manager").
    Controller,
    /// A host that only runs containers (Docker's "worker").
    Agent,
}

impl NodeRole {
    /// Docker's `Spec.Role`.
    pub fn docker_name(self) -> &'static str {
        match self {
            NodeRole::Controller => "manager",
            NodeRole::Agent => "worker",
        }
    }
}

/// Whether placements may go to a node (`docker node update --availability`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Availability {
    /// Accepts placements.
    #[default]
    Active,
    /// Keeps what it runs, accepts nothing new.
    Pause,
    /// Accepts nothing new (moving its containers off is the scheduler's, later).
    Drain,
}

impl Availability {
    /// Docker's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Active => "active",
            Availability::Pause => "pause",
            Availability::Drain => "drain",
        }
    }

    /// Parse Docker's lowercase name.
    pub fn parse(s: &str) -> Option<Availability> {
        match s {
            "active" => Some(Availability::Active),
            "pause" => Some(Availability::Pause),
            "drain" => Some(Availability::Drain),
            _ => None,
        }
    }
}

/// Whether the node's daemon is live, as the leader last recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NodeState {
    /// Connected and heartbeating.
    Ready,
    /// Missed its heartbeats for the grace period, or disconnected.
    #[default]
    Down,
}

impl NodeState {
    /// Docker's lowercase name (`Status.State`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Down => "down",
        }
    }
}

/// What a host says of itself when it registers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeDescription {
    /// Host name (`docker node ls` HOSTNAME; what `constraint:node==` names).
    pub hostname: String,
    /// The address other hosts and the controllers reach it on (`Status.Addr`).
    pub addr: String,
    /// Controllers: the Docker API address (`ManagerStatus.Addr`), `IP:2376`.
    pub api_addr: String,
    /// Controllers: the cluster address (Raft, joins, agents), `IP:2377`.
    pub cluster_addr: String,
    /// Logical CPUs.
    pub cpus: u32,
    /// Memory, bytes.
    pub memory: u64,
    /// `wharf` version.
    pub engine_version: String,
    /// The labels given at start (`wharf node --label k=v`).
    pub engine_labels: BTreeMap<String, String>,
    /// Runs containers (agents, and controllers started `--with-agent`).
    pub runs_containers: bool,
}

/// A host of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its ID (also its Raft ID when a controller).
    pub id: NodeId,
    /// Controller or agent.
    pub role: NodeRole,
    /// What it said of itself at its last registration.
    pub description: NodeDescription,
    /// Operator labels (`Spec.Labels`; `docker node update --label-add`); start with the
    /// engine labels.
    pub labels: BTreeMap<String, String>,
    /// Whether placements may go to it.
    pub availability: Availability,
    /// Live or not, as the leader last recorded it.
    pub state: NodeState,
    /// Joined, ns since the epoch.
    pub created_ns: i64,
    /// Last change, ns since the epoch.
    pub updated_ns: i64,
}

impl NodeRecord {
    /// Placements may go here: it runs containers, is Ready and active.
    pub fn accepts_placements(&self) -> bool {
        self.description.runs_containers
            && self.state == NodeState::Ready
            && self.availability == Availability::Active
    }
}

/// Apply one of the node commands (called by [`ClusterState::apply`]).
pub(crate) fn apply(s: &mut ClusterState, cmd: &crate::state::Command) -> Response {
    use crate::state::Command;
    s.index.reset_nodes();
    match cmd {
        Command::RegisterNode {
            id,
            role,
            description,
            at_ns,
        } => {
            if s.revoked_nodes.contains(id) {
                return Err(StateError::NodeRevoked(id.to_string()));
            }
            match s.nodes.get_mut(id) {
                Some(n) => {
                    n.role = *role;
                    n.description = description.clone();
                    n.updated_ns = *at_ns;
                }
                None => {
                    s.nodes.insert(
                        *id,
                        NodeRecord {
                            id: *id,
                            role: *role,
                            labels: description.engine_labels.clone(),
                            description: description.clone(),
                            availability: Availability::Active,
                            state: NodeState::Down,
                            created_ns: *at_ns,
                            updated_ns: *at_ns,
                        },
                    );
                }
            }
            Ok(())
        }
        Command::SetNodeState { id, state, at_ns } => {
            let n = s
                .nodes
                .get_mut(id)
                .ok_or_else(|| StateError::NoSuchNode(id.to_string()))?;
            if n.state != *state {
                n.state = *state;
                n.updated_ns = *at_ns;
            }
            Ok(())
        }
        Command::UpdateNode {
            id,
            availability,
            labels,
            at_ns,
        } => {
            let n = s
                .nodes
                .get_mut(id)
                .ok_or_else(|| StateError::NoSuchNode(id.to_string()))?;
            n.availability = *availability;
            n.labels = labels.clone();
            n.updated_ns = *at_ns;
            Ok(())
        }
        Command::RemoveNode { id } => {
            let n = s
                .nodes
                .get(id)
                .ok_or_else(|| StateError::NoSuchNode(id.to_string()))?;
            if n.state == NodeState::Ready {
                return Err(StateError::NodeNotDown(n.description.hostname.clone()));
            }
            s.nodes.remove(id);
            s.revoked_nodes.insert(*id);
            Ok(())
        }
        _ => unreachable!("not a node command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;

    fn desc(name: &str) -> NodeDescription {
        NodeDescription {
            hostname: name.into(),
            addr: "10.0.0.5".into(),
            cpus: 2,
            memory: 1 << 30,
            engine_version: "0.1.0".into(),
            engine_labels: [("zone".to_string(), "a".to_string())].into(),
            runs_containers: true,
            ..Default::default()
        }
    }

    fn register(s: &mut ClusterState, id: u64, d: NodeDescription) -> Response {
        s.apply(&Command::RegisterNode {
            id: NodeId(id),
            role: NodeRole::Agent,
            description: d,
            at_ns: 1,
        })
    }

    #[test]
    fn a_node_registers_once_and_keeps_what_operators_set() {
        let mut s = ClusterState::default();
        register(&mut s, 7, desc("node-1")).unwrap();
        let n = &s.nodes[&NodeId(7)];
        assert_eq!(n.labels["zone"], "a", "engine labels seed the labels");
        assert_eq!(
            n.state,
            NodeState::Down,
            "Ready only once the leader sees it"
        );
        s.apply(&Command::UpdateNode {
            id: NodeId(7),
            availability: Availability::Drain,
            labels: [("disk".to_string(), "ssd".to_string())].into(),
            at_ns: 2,
        })
        .unwrap();
        let mut again = desc("node-1");
        again.cpus = 4;
        register(&mut s, 7, again).unwrap();
        let n = &s.nodes[&NodeId(7)];
        assert_eq!(n.description.cpus, 4, "the description is the latest");
        assert_eq!(n.availability, Availability::Drain, "kept");
        assert_eq!(n.labels.len(), 1, "kept");
        assert_eq!(n.labels["disk"], "ssd");
    }

    #[test]
    fn only_a_down_node_is_removed_and_its_id_is_revoked() {
        let mut s = ClusterState::default();
        register(&mut s, 7, desc("node-1")).unwrap();
        let ready = Command::SetNodeState {
            id: NodeId(7),
            state: NodeState::Ready,
            at_ns: 3,
        };
        s.apply(&ready).unwrap();
        assert!(s.nodes[&NodeId(7)].accepts_placements());
        let e = s.apply(&Command::RemoveNode { id: NodeId(7) }).unwrap_err();
        assert!(e.to_string().contains("node-1"), "{e}");
        s.apply(&Command::SetNodeState {
            id: NodeId(7),
            state: NodeState::Down,
            at_ns: 4,
        })
        .unwrap();
        s.apply(&Command::RemoveNode { id: NodeId(7) }).unwrap();
        assert!(s.nodes.is_empty());
        assert!(matches!(
            register(&mut s, 7, desc("node-1")),
            Err(StateError::NodeRevoked(_))
        ));
        assert!(matches!(s.apply(&ready), Err(StateError::NoSuchNode(_))));
    }
}
