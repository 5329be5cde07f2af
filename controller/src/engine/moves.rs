//! Moving containers off Down nodes: which ones move, which cannot and why (pure), and
//! the leader's step that carries the moves out.
//!
//! ```text
//!  leader, every round ──► decide(state) ──► Move(id)      ──► place like its create (same
//!                                      │                        rules, another node) ──►
//!                                      │                        RescheduleContainer (new ID,
//!                                      │                        same name, one Raft step) ──►
//!                                      │                        agent Create ──► start
//!                                      ├─► Pending(id, why) ──► SetPending (node inspect)
//!                                      └─► Clear(id)         ──► SetPending None
//! ```
//!
//! A container moves when its node is Down, it was running, and it asked to be kept
//! running — restart policy `always` or `unless-stopped` (not stopped by a user), or
//! classic Swarm's `-e reschedule:on-node-failure` (kept as the label
//! `com.docker.swarm.reschedule-policies`) — and nothing ties it to its node: a bind
//! mount, a named volume (its data is on that host) or `--network container:X` make it
//! pending with the reason instead. It moves once: the Raft step that records the
//! successor removes the old record, and the old ID's copy on the lost host, if that
//! host comes back, has no record any more and is killed and removed by the reconcile
//! before the node takes placements again (the fence).

use super::lifecycle::RestartPolicy;
use super::placement::{self, SWARM_RESCHEDULE_LABEL};
use super::{Engine, EngineError};
use futures_util::StreamExt;
use serde_json::Value;
use std::sync::Arc;
use tracing::{info, warn};
use wharf_protocol::agent::MountKind;
use wharf_protocol::node_state::{Availability, NodeState};
use wharf_protocol::state::Command;
use wharf_protocol::state::{ClusterState, ContainerRecord, ContainerStatus};
use wharf_protocol::ContainerId;
use wharf_protocol::NodeId;

/// The label a moved container carries: the node and ID it was moved from.
pub const MOVED_FROM_LABEL: &str = "com.wharf.moved-from";

/// What to do about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Re-create it on another node (new ID, same name) and start it.
    Move(ContainerId),
    /// It cannot move: record why.
    Pending {
        /// The container.
        id: ContainerId,
        /// Why, as `docker node inspect` shows it.
        reason: String,
    },
    /// It is recorded as pending and no longer is (its node is back, it stopped).
    Clear(ContainerId),
}

/// Whether `c` asked to be kept running (pure): restart policy `always` or
/// `unless-stopped` and not stopped by a user, or the `on-node-failure` reschedule
/// policy.
pub fn wants_to_run(s: &ClusterState, c: &ContainerRecord) -> bool {
    let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
    let stopped_by_user = s.restarts.get(&c.id).is_some_and(|r| r.manually_stopped);
    let policy = RestartPolicy::parse(&hc).unwrap_or_default();
    if matches!(policy, RestartPolicy::Always | RestartPolicy::UnlessStopped) && !stopped_by_user {
        return true;
    }
    let cfg: Value = serde_json::from_str(&c.config_json).unwrap_or(Value::Null);
    cfg.get("Labels")
        .and_then(|l| l.get(SWARM_RESCHEDULE_LABEL))
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .is_some_and(|p| p.iter().any(|p| p == "on-node-failure"))
}

/// What ties `c` to its node, for messages (`volume data`, `bind mount /srv`,
/// `--network container:web`); `None` when it may run elsewhere (pure).
pub fn pinned_by(s: &ClusterState, c: &ContainerRecord) -> Option<String> {
    for m in &c.run.host.mounts {
        match m.kind {
            MountKind::Bind => return Some(format!("bind mount {}", m.source)),
            MountKind::Volume if !m.anonymous => return Some(format!("volume {}", m.source)),
            _ => {}
        }
    }
    let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
    let mode = hc.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
    if let Some(other) = mode.strip_prefix("container:") {
        let name = super::find_container(s, other)
            .and_then(|id| s.containers.get(&id))
            .map_or(other.to_string(), |o| o.name.to_string());
        return Some(format!("--network container:{name}"));
    }
    None
}

/// Why a running container of a draining node stays there.
const NOT_MOVED: &str = "not moved: only containers with --restart always or unless-stopped, or \
     reschedule:on-node-failure, are moved";

/// Why containers leave a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leaving {
    /// The node is Down.
    Down,
    /// An operator drains it (`docker node update --availability drain`).
    Drain,
}

/// The moves and pending reasons the state calls for now, in ID order (pure). A Down
/// node's and a draining node's running containers that asked to be kept running move;
/// a draining node's others stay, pending with the reason, so an operator sees why it
/// is not empty.
pub fn decide(s: &ClusterState) -> Vec<Decision> {
    let mut out = vec![];
    // With no node Down or draining, a container's only decision is to clear a recorded
    // reason: look at those alone (this runs every round over the whole state).
    let any_leaving = s
        .nodes
        .values()
        .any(|n| n.state == NodeState::Down || n.availability == Availability::Drain);
    if !any_leaving {
        return s
            .pending
            .keys()
            .filter(|id| s.containers.contains_key(*id))
            .map(|id| Decision::Clear(id.clone()))
            .collect();
    }
    for c in s.containers.values() {
        let leaving = s.nodes.get(&c.node).and_then(|n| {
            if n.state == NodeState::Down {
                Some(Leaving::Down)
            } else if n.availability == Availability::Drain {
                Some(Leaving::Drain)
            } else {
                None
            }
        });
        let running = matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused);
        let recorded = s.pending.get(&c.id);
        // Only a running container of a leaving node has its configuration read: this
        // runs on the leader every round, over every container.
        let leaving = leaving.filter(|_| running);
        let wants = leaving.is_some() && wants_to_run(s, c);
        if leaving == Some(Leaving::Drain) && !wants {
            if recorded.map(String::as_str) != Some(NOT_MOVED) {
                out.push(Decision::Pending {
                    id: c.id.clone(),
                    reason: NOT_MOVED.to_string(),
                });
            }
            continue;
        }
        if !wants {
            if recorded.is_some() {
                out.push(Decision::Clear(c.id.clone()));
            }
            continue;
        }
        match pinned_by(s, c) {
            Some(pin) => {
                let host = s
                    .nodes
                    .get(&c.node)
                    .map_or(c.node.to_string(), |n| n.description.hostname.clone());
                let reason = format!("pinned by {pin} on {host}");
                if recorded != Some(&reason) {
                    out.push(Decision::Pending {
                        id: c.id.clone(),
                        reason,
                    });
                }
            }
            None => out.push(Decision::Move(c.id.clone())),
        }
    }
    out
}

/// The create body of `c`'s successor (pure): its recorded config with its `HostConfig`,
/// the moved-from label added (the placement label is replaced by the new placement).
pub fn successor_body(c: &ContainerRecord, from_host: &str) -> Value {
    let mut body: Value = serde_json::from_str(&c.config_json).unwrap_or(Value::Null);
    if !body.is_object() {
        body = Value::Object(Default::default());
    }
    let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
    if let Some(o) = body.as_object_mut() {
        o.insert("HostConfig".into(), hc);
    }
    if let Some(l) = placement::labels_mut(&mut body) {
        l.insert(
            MOVED_FROM_LABEL.into(),
            Value::String(format!("{from_host} ({})", c.id.short())),
        );
    }
    body
}

/// What node `node` should fence (pure): the lease (0 when fencing is off) and the
/// running containers there that the leader would move if the node were lost.
pub fn fence_of(s: &ClusterState, node: NodeId) -> (u64, Vec<ContainerId>) {
    let lease = if s.settings.fencing {
        s.settings.lease_ms
    } else {
        0
    };
    let movable = s
        .containers_on(node)
        .filter(|c| {
            matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                && wants_to_run(s, c)
                && pinned_by(s, c).is_none()
        })
        .map(|c| c.id.clone())
        .collect();
    (lease, movable)
}

/// How many containers of Down nodes are moved at once.
pub const CONCURRENT_MOVES: usize = 32;

/// How long a move that failed waits before it is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

impl Engine {
    /// The leader's round: carry out [`decide`] — move what can move, record why the
    /// rest cannot. Containers of Down nodes move [`CONCURRENT_MOVES`] at a time (nothing
    /// runs them any more: 100 of them one by one took 20–36 s at 5,000 agents); a
    /// draining node's move one at a time, each started elsewhere before its old copy
    /// stops. Call on the leader only, once it has led for a heartbeat grace (so that
    /// every node had its chance to be seen Ready).
    pub async fn move_off_down_nodes(self: &Arc<Self>) {
        let mut off_down = vec![];
        let mut off_draining = vec![];
        for d in self.store.read(decide) {
            match d {
                Decision::Pending { id, reason } => {
                    warn!(container = %id.short(), %reason, "a container on a Down node cannot move");
                    self.set_pending(&id, Some(reason)).await;
                }
                Decision::Clear(id) => self.set_pending(&id, None).await,
                Decision::Move(id) if self.move_due(&id) => {
                    let down = self.store.read(|s| {
                        s.containers
                            .get(&id)
                            .and_then(|c| s.nodes.get(&c.node))
                            .is_some_and(|n| n.state == NodeState::Down)
                    });
                    if down {
                        off_down.push(id);
                    } else {
                        off_draining.push(id);
                    }
                }
                Decision::Move(_) => {}
            }
        }
        futures_util::stream::iter(off_down)
            .for_each_concurrent(
                CONCURRENT_MOVES,
                |id| async move { self.move_one(&id).await },
            )
            .await;
        for id in off_draining {
            self.move_one(&id).await;
        }
    }

    /// Move `id` ([`Engine::move_container`]); on failure, record why it is pending.
    async fn move_one(self: &Arc<Self>, id: &ContainerId) {
        let started = std::time::Instant::now();
        match self.move_container(id).await {
            Ok((new, from, to)) => {
                info!(container = %id.short(), successor = %new.short(), %from, %to, took = ?started.elapsed(), "moved a container off a Down node");
            }
            Err(e) => {
                warn!(container = %id.short(), error = %e, "a container on a Down node could not move");
                if self.store.read(|s| s.containers.contains_key(id)) {
                    let reason = format!("no node to move to: {}", e.message);
                    self.set_pending(id, Some(reason)).await;
                }
            }
        }
    }

    /// Tell `node`'s agent what to fence ([`fence_of`]); a failure is logged (the next
    /// reconcile round sends it again).
    pub async fn send_fence(&self, node: NodeId) {
        let (lease_ms, movable) = self.store.read(|s| fence_of(s, node));
        if let Err(e) = self.agents.set_fence(&node, lease_ms, movable).await {
            tracing::debug!(node = %node, error = %e, "the fence not sent");
        }
    }

    /// Whether a move of `id` may be tried now (not tried within [`RETRY`]).
    fn move_due(&self, id: &ContainerId) -> bool {
        let mut tries = self.move_tries.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        tries.retain(|_, at| now.duration_since(*at) < RETRY * 4);
        match tries.get(id) {
            Some(at) if now.duration_since(*at) < RETRY => false,
            _ => {
                tries.insert(id.clone(), now);
                true
            }
        }
    }

    async fn set_pending(&self, id: &ContainerId, reason: Option<String>) {
        let cmd = Command::SetPending {
            id: id.clone(),
            reason,
        };
        if let Err(e) = self.propose(cmd).await {
            warn!(container = %id.short(), error = %e, "a pending reason not recorded");
        }
    }

    /// Re-create `id` on another node, placed by its own rules, as its successor (new
    /// ID, same name), and start it; the successor's ID, and the host names moved from
    /// and to.
    async fn move_container(
        self: &Arc<Self>,
        id: &ContainerId,
    ) -> Result<(ContainerId, String, String), EngineError> {
        let c = self.container(id.as_str())?;
        let host = |n: NodeId| {
            self.store.read(|s| {
                s.nodes
                    .get(&n)
                    .map_or(n.to_string(), |r| r.description.hostname.clone())
            })
        };
        let from = host(c.node);
        let body = serde_json::to_vec(&successor_body(&c, &from))
            .map_err(|e| EngineError::internal(format!("encode the successor's body: {e}")))?;
        let name = c.name.to_string();
        let (placed, request) = self.place_reachable(Some(&name), &body)?;
        // Held until the successor runs: the reconcile, which removes a copy without a
        // record, waits for it (the old copy stops after the successor starts).
        let lock = self.lock_for(&c.id);
        let guard = lock.lock().await;
        let new = self
            .create_on(Some(&name), &request, placed.node, Some(c.id.clone()))
            .await?;
        self.start(new.as_str()).await?;
        drop(guard);
        // The old ID has no record any more: its lock goes (as a removal's does).
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.id);
        // A draining node is reachable: its copy stops once the successor runs (ports
        // are per host, so both may hold theirs meanwhile). A Down node's stops when it
        // is back (the reconcile).
        let reachable = self.store.read(|s| {
            s.nodes
                .get(&c.node)
                .is_some_and(|n| n.state != NodeState::Down)
        });
        if reachable {
            self.emit_container(&c, "kill", &[("signal", "9".to_string())]);
            self.remove_unrecorded(c.node, &c.id, true).await;
            self.emit_container(&c, "destroy", &[]);
        }
        Ok((new, from, host(placed.node)))
    }
}

#[cfg(test)]
#[path = "moves_test.rs"]
mod tests;
