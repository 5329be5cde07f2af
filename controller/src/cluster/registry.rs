//! The remote agents a controller reaches: one agent-protocol connection per node, the
//! [`AgentClient`] the engine uses, and each node's life (Ready while its connection
//! answers heartbeats, Down when it stops).
//!
//! ```text
//!  listener ─► attach(node, hello, stream) ─► RegisterNode + SetNodeState Ready (Raft,
//!                  │                           the latter on the leader only)
//!                  │                           hooks.connected(node, events)
//!                  ├─ heartbeat: Host(Beat) every period, answered within the grace
//!                  │             (both stretched past max_beats_per_sec)
//!                  └─ connection lost / heartbeat missed ─► SetNodeState Down (on the
//!                                                           leader), hooks.lost(node)
//! ```
//!
//! A node that connects again replaces its older connection (the older one's end is then
//! not a loss). Liveness is decided on the [`Clock`]'s monotonic time only: a jump of the
//! date moves the recorded `at_ns` stamps, never a node to Down.

use crate::agent_client::AgentClient;
use crate::raft::Store;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::{info, warn};
use wharf_link::ClientCall;
use wharf_node::clock::{Clock, SystemClock};
use wharf_protocol::agent::host::HostRequest;
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentRequest, FailureKind};
use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
use wharf_protocol::state::Command;
use wharf_protocol::NodeId;

/// What the engine does when a node's agent comes and goes.
pub trait NodeHooks: Send + Sync {
    /// The node's agent is connected (again): adopt its containers, networks, layers.
    fn connected(
        &self,
        node: NodeId,
        events: Option<mpsc::UnboundedReceiver<AgentEvent>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// The node's agent connection is gone.
    fn lost(&self, node: NodeId);
}

/// How often a controller asks each agent whether it is there, and how long an answer
/// may take before the node is Down.
///
/// A controller sends at most `max_beats_per_sec` heartbeats a second: past that many
/// agents per period, the period and the grace stretch in proportion (as Nomad stretches
/// its clients' heartbeat TTL past `max_heartbeats_per_second`), and each beat tells the
/// agent by how much, so that its fencing lease stretches too. With the defaults (1 s,
/// 4 s, 2,000 a second), 10,000 agents are beaten every 5 s and Down after 20 s of
/// silence; up to 2,000 agents, every 1 s and after 4 s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// Period of the heartbeat.
    pub period: Duration,
    /// A heartbeat unanswered this long marks the node Down.
    pub grace: Duration,
    /// Heartbeats a second this controller sends at most.
    pub max_beats_per_sec: u32,
}

/// Heartbeats a second a controller sends at most, by default.
pub const MAX_BEATS_PER_SEC: u32 = 2000;

impl Liveness {
    /// How long to wait for the answer to a heartbeat sent at `sent` before looking at the
    /// clock again (at most a period), when read at `now`; `None` once the grace is over
    /// and the node is lost (pure, both readings monotonic).
    pub fn wait_for_answer(&self, sent: Duration, now: Duration) -> Option<Duration> {
        let waited = now.saturating_sub(sent);
        (waited < self.grace).then(|| (self.grace - waited).min(self.period))
    }

    /// By how much the period and grace stretch with `agents` connected, in thousandths
    /// (pure): 1000 while a period's beats stay within `max_beats_per_sec`, then in
    /// proportion to the fleet.
    pub fn stretch_milli(&self, agents: usize) -> u32 {
        let per_sec = agents as f64 / self.period.as_secs_f64().max(1e-3);
        let max = f64::from(self.max_beats_per_sec.max(1));
        if per_sec <= max {
            1000
        } else {
            (per_sec / max * 1000.0).ceil().min(f64::from(u32::MAX)) as u32
        }
    }

    /// The period and grace stretched by `stretch_milli` thousandths (pure; never shrunk).
    pub fn stretched(&self, stretch_milli: u32) -> Liveness {
        let f = f64::from(stretch_milli.max(1000)) / 1000.0;
        Liveness {
            period: self.period.mul_f64(f),
            grace: self.grace.mul_f64(f),
            ..*self
        }
    }
}

impl Default for Liveness {
    /// Down within about 5 s of going silent (SwarmKit takes ~15 s).
    fn default() -> Liveness {
        Liveness {
            period: Duration::from_secs(1),
            grace: Duration::from_secs(4),
            max_beats_per_sec: MAX_BEATS_PER_SEC,
        }
    }
}

struct Conn {
    client: wharf_link::Client,
    generation: u64,
    hostname: String,
}

/// The agents connected to this controller.
pub struct Registry {
    store: Store,
    liveness: Liveness,
    clock: Arc<dyn Clock>,
    conns: Mutex<HashMap<NodeId, Conn>>,
    generation: std::sync::atomic::AtomicU64,
}

impl Registry {
    /// An empty registry over the cluster state, on the host's clocks.
    pub fn new(store: Store, liveness: Liveness) -> Arc<Registry> {
        Registry::with_clock(store, liveness, Arc::new(SystemClock::new()))
    }

    /// [`Registry::new`] on `clock` (tests give a [`wharf_node::clock::ManualClock`]).
    pub fn with_clock(store: Store, liveness: Liveness, clock: Arc<dyn Clock>) -> Arc<Registry> {
        Arc::new(Registry {
            store,
            liveness,
            clock,
            conns: Mutex::default(),
            generation: Default::default(),
        })
    }

    /// The nodes connected now.
    pub fn connected(&self) -> Vec<NodeId> {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// Serve the agent protocol of `node` over `stream` until the connection ends or
    /// misses its heartbeats; the node is Ready meanwhile.
    pub async fn attach<S>(
        self: &Arc<Self>,
        hooks: Arc<dyn NodeHooks>,
        node: NodeId,
        role: NodeRole,
        description: NodeDescription,
        stream: S,
    ) where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(stream);
        let client = wharf_link::connect(r, w);
        let events = client.take_events();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let hostname = description.hostname.clone();
        let replaced = self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(
            node,
            Conn {
                client: client.clone(),
                generation,
                hostname: hostname.clone(),
            },
        );
        if replaced.is_some() {
            info!(%node, host = %hostname, "the node connected again; its older connection is dropped");
        }
        let at_ns = self.clock.wall_ns();
        let register = Command::RegisterNode {
            id: node,
            role,
            description,
            at_ns,
        };
        // Every controller records what the node says of itself.
        match self.store.propose(register).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                warn!(%node, host = %hostname, error = %e, "the node was refused");
                self.detach(node, generation);
                return;
            }
            Err(e) => warn!(%node, error = %e, "the node's state was not recorded"),
        }
        // Only the leader records its liveness (a follower that lost its own connection
        // to a node says nothing of the node: the leader's view decides, see
        // `daemon::agent_transitions`), and only once the hooks are done with it: the
        // node's stale copies are stopped (the reconcile) before it shows Ready.
        let hooks_task = {
            let (hooks, registry, hostname) = (hooks.clone(), self.clone(), hostname.clone());
            tokio::spawn(async move {
                if let Err(e) = hooks.connected(node, events).await {
                    warn!(%node, error = %e, "could not adopt the node's containers and networks");
                }
                if registry.store.is_leader() && registry.is_current(node, generation) {
                    let ready = Command::SetNodeState {
                        id: node,
                        state: NodeState::Ready,
                        at_ns: registry.clock.wall_ns(),
                    };
                    match registry.store.propose(ready).await {
                        Ok(_) => info!(%node, host = %hostname, "node is Ready"),
                        Err(e) => warn!(%node, error = %e, "the node's state was not recorded"),
                    }
                }
            })
        };
        self.heartbeat(&client).await;
        // Calls in flight on a silent connection fail now, not when TCP gives up.
        client.close();
        hooks_task.abort();
        if self.detach(node, generation) {
            warn!(%node, host = %hostname, "the node's agent connection ended or missed its heartbeats");
            if self.store.is_leader() {
                let down = Command::SetNodeState {
                    id: node,
                    state: NodeState::Down,
                    at_ns: self.clock.wall_ns(),
                };
                if let Err(e) = self.store.propose(down).await {
                    warn!(%node, error = %e, "the node's state was not recorded");
                }
            }
            hooks.lost(node);
        }
    }

    /// Ask the agent every period until an answer is missing for the grace period, on
    /// the monotonic clock ([`Liveness::wait_for_answer`]); both are stretched for the
    /// agents connected now ([`Registry::stretch_milli`]), and each beat says by how much.
    async fn heartbeat(&self, client: &wharf_link::Client) {
        loop {
            let sent = self.clock.monotonic();
            let stretch_milli = self.stretch_milli();
            let liveness = self.liveness.stretched(stretch_milli);
            let beat = AgentRequest::Host(HostRequest::Beat { stretch_milli });
            let mut beat = std::pin::pin!(client.call(beat));
            loop {
                let now = self.clock.monotonic();
                let Some(wait) = liveness.wait_for_answer(sent, now) else {
                    return;
                };
                match tokio::time::timeout(wait, &mut beat).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(_)) => return,
                    Err(_) => {}
                }
            }
            if client.is_closed() {
                return;
            }
            tokio::time::sleep(liveness.period).await;
        }
    }

    /// How much this controller stretches its heartbeat period and grace now, in
    /// thousandths, for the agents connected to it ([`Liveness::stretch_milli`]).
    pub fn stretch_milli(&self) -> u32 {
        let agents = self.conns.lock().unwrap_or_else(|p| p.into_inner()).len();
        self.liveness.stretch_milli(agents)
    }

    /// The heartbeat period and grace in force now (stretched for the fleet).
    pub fn liveness(&self) -> Liveness {
        self.liveness.stretched(self.stretch_milli())
    }

    /// The clock liveness is decided on (the leader's grace reads it too).
    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// Whether `node`'s connection is still the one of `generation`.
    fn is_current(&self, node: NodeId, generation: u64) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .is_some_and(|c| c.generation == generation)
    }

    /// Forget `node`'s connection of `generation`; false when a newer one replaced it.
    fn detach(&self, node: NodeId, generation: u64) -> bool {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        match conns.get(&node) {
            Some(c) if c.generation == generation => {
                conns.remove(&node);
                true
            }
            _ => false,
        }
    }

    fn unreachable(&self, node: &NodeId) -> AgentFailure {
        let name = self
            .store
            .read(|s| s.nodes.get(node).map(|n| n.description.hostname.clone()))
            .unwrap_or_else(|| super::identity::node_id_text(*node));
        AgentFailure::new(
            FailureKind::Unavailable,
            format!("node {name} is not connected to this controller (down or unreachable)"),
        )
    }
}

impl AgentClient for Registry {
    fn open(&self, node: &NodeId, request: AgentRequest) -> Result<ClientCall, AgentFailure> {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        match conns.get(node) {
            Some(c) if !c.client.is_closed() => Ok(c.client.open(request)),
            Some(c) => Err(AgentFailure::new(
                FailureKind::Unavailable,
                format!("node {} lost its connection to this controller", c.hostname),
            )),
            None => {
                drop(conns);
                Err(self.unreachable(node))
            }
        }
    }

    /// Events are handed to [`NodeHooks::connected`] with each connection.
    fn events(&self, _node: &NodeId) -> Option<mpsc::UnboundedReceiver<AgentEvent>> {
        None
    }

    fn reaches(&self, node: &NodeId) -> bool {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .is_some_and(|c| !c.client.is_closed())
    }
}

#[cfg(test)]
#[path = "registry_test.rs"]
pub(crate) mod tests;
