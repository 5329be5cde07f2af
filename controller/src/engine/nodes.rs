//! The nodes the engine serves: what it does when a node's agent connects (learn its
//! host, make its default network and bridges, re-adopt its running containers, track
//! its layers) and when the connection is lost (its monitors stop, its containers keep
//! their recorded status until the agent is back: live-restore).
//!
//! ```text
//!  registry / wharf up ── node_connected(node, events) ──► learn host ─► init_network(node)
//!                                                          ─► layers synced ─► monitors
//!  registry ── node_lost(node) ──► the node's monitors stop (no exit recorded)
//! ```
//!
//! Nothing here holds "the" node: every container, volume and network record names its
//! own, and operations go to that node's agent.

use super::error::EngineError;
use super::reconcile::{self, Desired};
use super::{placement, plan, Engine};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{info, warn};
use wharf_protocol::agent::AgentEvent;
use wharf_protocol::layer_state::inventory_command;
use wharf_protocol::state::{ClusterState, ContainerStatus};
use wharf_protocol::{ContainerId, NodeId};

/// How long a reconcile waits for a killed process to end before it cleans up.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The containers the state records on `node`, for [`reconcile::reconcile`].
fn desired_on(s: &ClusterState, node: NodeId) -> Vec<Desired> {
    s.containers_on(node)
        .map(|c| Desired {
            id: c.id.clone(),
            status: c.status,
        })
        .collect()
}

/// A running container's monitor (the task waiting for its exit on its node's agent).
pub(super) struct Monitor {
    /// The node the container runs on.
    pub node: NodeId,
    /// Which monitor of this container it is: a finished one only forgets itself.
    pub generation: u64,
    /// Stops it when the node's connection is lost.
    pub abort: tokio::task::AbortHandle,
}

/// What the engine learnt of a connected node's host.
#[derive(Default)]
pub(super) struct HostFacts {
    /// The directory of the node's volumes, as its agent told.
    pub volumes_root: String,
    /// The task keeping the record of its layers in line with its agent's events.
    pub layers: Option<tokio::task::AbortHandle>,
    /// The restarts by policy cut short by a restart of Wharf were resumed (once per
    /// process: a reconnect finds their back-off tasks still waiting).
    pub restarts_resumed: bool,
    /// The task reconciling the node's containers every [`reconcile::PERIOD`].
    pub reconciler: Option<tokio::task::AbortHandle>,
}

impl Engine {
    /// A node's agent is connected (at start-up, at a join, after a reconnect): learn its
    /// host, make its default network and bridges, record its layers, re-adopt its
    /// running containers and follow its layer events (`events`, when given). Call before
    /// serving requests for the node; calling it again after a reconnect makes no second
    /// default network and no second monitor.
    pub async fn node_connected(
        self: &Arc<Self>,
        node: NodeId,
        events: Option<mpsc::UnboundedReceiver<AgentEvent>>,
    ) -> Result<(), EngineError> {
        let root = self.agents.volumes_root(&node).await?;
        self.with_hosts(|h| h.entry(node).or_default().volumes_root = root);
        self.init_network(node).await?;
        // Recorded before serving, so that a placement right after start-up sees them.
        self.sync_layers(node).await;
        if let Some(events) = events {
            self.track_layers(node, events);
        }
        self.reconcile_node(node, true).await;
        self.reconcile_every_period(node);
        info!(node = %node, "node connected");
        Ok(())
    }

    /// A node's agent connection is gone: its monitors stop without recording an exit
    /// (its containers may still run; the next [`Engine::node_connected`] re-adopts
    /// them) and its layer tracking ends.
    pub fn node_lost(&self, node: NodeId) {
        let stopped: Vec<ContainerId> = {
            let mut m = self.monitored.lock().unwrap_or_else(|p| p.into_inner());
            let ids: Vec<ContainerId> = m
                .iter()
                .filter(|(_, mon)| mon.node == node)
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                if let Some(mon) = m.remove(id) {
                    mon.abort.abort();
                }
            }
            ids
        };
        self.with_hosts(|h| {
            if let Some(facts) = h.get_mut(&node) {
                for task in [facts.layers.take(), facts.reconciler.take()]
                    .into_iter()
                    .flatten()
                {
                    task.abort();
                }
            }
        });
        warn!(node = %node, monitors = stopped.len(), "node lost: its containers keep their recorded status");
    }

    /// Bring `node`'s containers in line with the state ([`reconcile::reconcile`]): list
    /// them on the host, then read the records (linearizably: every container made
    /// through the normal path is recorded before its host has it), then carry out each
    /// action. With `adopt` (a fresh connection), the running ones are watched again and
    /// the restarts cut short are resumed; without (the periodic rounds), only what runs
    /// or lies on the host against the state is stopped or removed. When the host cannot
    /// be listed, the running records are adopted as they are.
    pub(super) async fn reconcile_node(self: &Arc<Self>, node: NodeId, adopt: bool) {
        let (observed, desired) = match self.observe(node).await {
            Ok(both) => both,
            Err(e) => {
                warn!(node = %node, error = %e, "the node's containers not reconciled");
                if !adopt {
                    return;
                }
                // Without the host's list: adopt what the records say runs, as they are.
                (vec![], self.store.read(|s| desired_on(s, node)))
            }
        };
        for action in reconcile::reconcile(&desired, &observed, reconcile::GRACE_SECS) {
            match action {
                reconcile::Action::Adopt(id) if adopt => {
                    info!(container = %id.short(), node = %node, "re-adopting running container");
                    self.monitor(node, id);
                }
                reconcile::Action::Adopt(_) => {}
                reconcile::Action::Stop(id) => self.stop_unrecorded_run(node, &id).await,
                reconcile::Action::Remove { id, running } => {
                    self.remove_unrecorded(node, &id, running).await
                }
            }
        }
        if adopt {
            self.resume_restarts_once(node);
        }
        self.send_fence(node).await;
    }

    /// The containers on `node`'s host, then the records on it (linearizably: every
    /// container made through the normal path is recorded before its host has it).
    async fn observe(
        &self,
        node: NodeId,
    ) -> Result<
        (
            Vec<wharf_protocol::agent::host::HostContainer>,
            Vec<Desired>,
        ),
        String,
    > {
        let observed = self
            .agents
            .host_containers(&node)
            .await
            .map_err(|e| format!("listing the host: {e}"))?;
        let desired = self
            .store
            .read_linearizable(|s| desired_on(s, node))
            .await
            .map_err(|e| format!("reading the records: {e}"))?;
        Ok((observed, desired))
    }

    /// Kill container `id`'s process on `node` and wait (at most [`STOP_WAIT`]) for it
    /// to end.
    async fn kill_and_wait(&self, node: NodeId, id: &ContainerId) {
        if let Err(e) = self.agents.kill(&node, id, 9).await {
            warn!(container = %id.short(), error = %e, "kill failed");
        }
        let _ = tokio::time::timeout(STOP_WAIT, self.agents.wait(&node, id)).await;
    }

    /// Reconcile `node` again every [`reconcile::PERIOD`] until its connection is lost.
    fn reconcile_every_period(self: &Arc<Self>, node: NodeId) {
        let engine = Arc::downgrade(self);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(reconcile::PERIOD).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.reconcile_node(node, false).await;
            }
        });
        let old = self.with_hosts(|h| {
            h.entry(node)
                .or_default()
                .reconciler
                .replace(task.abort_handle())
        });
        if let Some(old) = old {
            old.abort();
        }
    }

    /// A process runs on `node` for a container recorded as not running (its start was
    /// never recorded): kill it and release what the run holds, as after an exit.
    async fn stop_unrecorded_run(&self, node: NodeId, id: &ContainerId) {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let Ok(c) = self.container(id.as_str()) else {
            return;
        };
        if c.node != node || matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
        {
            return;
        }
        warn!(container = %id.short(), node = %node, status = c.status.as_str(), "stopping a run the state does not record");
        self.kill_and_wait(node, id).await;
        self.network_released(&c).await;
        self.cleanup_run(&c).await;
    }

    /// A container lies on `node` that the state does not record there (removed or moved
    /// while the node was away, or a create undone halfway): kill it if it runs, release
    /// its network on the host and remove its files.
    pub(super) async fn remove_unrecorded(&self, node: NodeId, id: &ContainerId, running: bool) {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        if self
            .store
            .read(|s| s.containers.get(id).is_some_and(|c| c.node == node))
        {
            return;
        }
        warn!(container = %id.short(), node = %node, running, "removing a container the state does not record on its node");
        if running {
            self.kill_and_wait(node, id).await;
        }
        let _ = self.execute(plan::release_network(node, id, false)).await;
        let remove = plan::remove_files(node, id);
        if let Err(e) = self.execute(remove).await {
            warn!(container = %id.short(), node = %node, error = %e.error, "removing an unrecorded container failed");
        }
    }

    /// Resume the restarts by policy of `node` cut short by a restart of Wharf, once per
    /// process.
    fn resume_restarts_once(self: &Arc<Self>, node: NodeId) {
        let first = self.with_hosts(|h| {
            !std::mem::replace(&mut h.entry(node).or_default().restarts_resumed, true)
        });
        if first {
            self.resume_restarts(node);
        }
    }

    /// Bring the record of `node`'s layers in line with its agent's inventory now (after
    /// start-up and after an image is made there, so a placement that follows sees them);
    /// a failure is logged (the layer tracker catches up).
    pub async fn sync_layers(&self, node: NodeId) {
        let inventory = match self.agents.inventory(&node).await {
            Ok(inv) => inv,
            Err(e) => {
                warn!(node = %node, error = %e, "layer inventory not read");
                return;
            }
        };
        if let Some(cmd) = self.store.read(|s| inventory_command(s, node, &inventory)) {
            if let Err(e) = self.store.propose(cmd).await {
                warn!(node = %node, error = %e, "layer locations not recorded");
            }
        }
    }

    /// The node container `id` is on, or 404.
    pub fn node_of(&self, id: &ContainerId) -> Result<NodeId, EngineError> {
        self.store
            .read(|s| s.containers.get(id).map(|c| c.node))
            .ok_or_else(|| EngineError::no_such_container(id.as_str()))
    }

    /// The directory of `node`'s volumes, as its agent told at connection (empty before).
    pub(super) fn volumes_root(&self, node: NodeId) -> String {
        self.with_hosts(|h| {
            h.get(&node)
                .map(|f| f.volumes_root.clone())
                .unwrap_or_default()
        })
    }

    pub(super) fn with_hosts<T>(
        &self,
        f: impl FnOnce(&mut std::collections::HashMap<NodeId, HostFacts>) -> T,
    ) -> T {
        f(&mut self.hosts.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The node new images go to (`docker load`, `import`, `commit`, `build`): the first
    /// of [`placement::image_targets`], or 503 when no node accepts placements.
    pub fn image_target(&self) -> Result<NodeId, EngineError> {
        self.store
            .read(placement::image_targets)
            .first()
            .copied()
            .ok_or_else(placement::no_ready_agent)
    }

    /// The node whose host facts the API shows when a request concerns no node
    /// (`docker info`): the first Ready node that runs containers, or 503.
    pub fn info_node(&self) -> Result<NodeId, EngineError> {
        self.store
            .read(|s| {
                s.nodes
                    .values()
                    .find(|n| {
                        n.description.runs_containers
                            && n.state == wharf_protocol::node_state::NodeState::Ready
                    })
                    .map(|n| n.id)
            })
            .ok_or_else(placement::no_ready_agent)
    }
}
