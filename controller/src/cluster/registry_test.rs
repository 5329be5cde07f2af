//! The registry's heartbeats on a [`ManualClock`]: a jump of the date while an agent
//! answers marks nothing Down; an agent silent past the grace on the monotonic clock is.
//! The daemon's leader tests attach agents the same way.

use super::{Liveness, NodeHooks, Registry};
use crate::raft::Store;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use wharf_node::clock::{Clock, ManualClock};
use wharf_protocol::agent::host::HostRequest;
use wharf_protocol::agent::{AgentEvent, AgentRequest, AgentResponse};
use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
use wharf_protocol::NodeId;

/// An hour in nanoseconds: how far the tests move the date.
pub(crate) const HOUR_NS: i64 = 3_600 * 1_000_000_000;

/// A date in 2026, where the manual clocks start.
pub(crate) const WALL_START_NS: i64 = 1_780_000_000 * 1_000_000_000;

/// Heartbeats every 20 ms (real time), a 4 s grace (on the test's clock).
pub(crate) const LIVENESS: Liveness = Liveness {
    period: Duration::from_millis(20),
    grace: Duration::from_secs(4),
    max_beats_per_sec: super::MAX_BEATS_PER_SEC,
};

/// A fake agent: it answers heartbeats 50 ms after they arrive (so that the date can
/// jump while one is in flight), or never while silent.
#[derive(Default)]
pub(crate) struct FakeAgent {
    pub(crate) silent: AtomicBool,
    received: AtomicUsize,
    answered: AtomicUsize,
}

impl FakeAgent {
    /// Heartbeats answered so far.
    pub(crate) fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }

    /// Whether a heartbeat arrived that is not answered yet.
    pub(crate) fn in_flight(&self) -> bool {
        self.received.load(Ordering::SeqCst) > self.answered()
    }
}

/// Serve `agent` on `stream` until the connection ends.
fn serve(agent: Arc<FakeAgent>, stream: tokio::io::DuplexStream) {
    let (r, w) = tokio::io::split(stream);
    tokio::spawn(wharf_link::serve(
        r,
        w,
        |_| {},
        move |request, mut call| {
            let agent = agent.clone();
            async move {
                let AgentRequest::Host(HostRequest::Beat { .. }) = request else {
                    return call.respond(AgentResponse::Done);
                };
                agent.received.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if agent.silent.load(Ordering::SeqCst) {
                    // Held, never answered: a host that hangs rather than closes.
                    return std::future::pending::<()>().await;
                }
                agent.answered.fetch_add(1, Ordering::SeqCst);
                call.respond(AgentResponse::Done)
            }
        },
    ));
}

/// Hooks that record each node connected (true) and lost (false).
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) seen: Mutex<Vec<(NodeId, bool)>>,
}

impl NodeHooks for Hooks {
    fn connected(
        &self,
        node: NodeId,
        _events: Option<mpsc::UnboundedReceiver<AgentEvent>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((node, true));
        Box::pin(async { Ok(()) })
    }

    fn lost(&self, node: NodeId) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((node, false));
    }
}

impl Hooks {
    pub(crate) fn lost_any(&self) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|(_, connected)| !connected)
    }
}

/// A registry over a fresh single-controller store (it leads), on a manual clock.
pub(crate) struct Setup {
    pub(crate) store: Store,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) hooks: Arc<Hooks>,
    pub(crate) dir: tempfile::TempDir,
}

pub(crate) async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("raft"), 1, "127.0.0.1:0".into())
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(WALL_START_NS));
    let registry = Registry::with_clock(store.clone(), LIVENESS, clock.clone());
    Setup {
        store,
        clock,
        registry,
        hooks: Arc::default(),
        dir,
    }
}

impl Setup {
    /// Connect a fake agent as `node` and wait until it is Ready.
    pub(crate) async fn attach(&self, node: NodeId) -> Arc<FakeAgent> {
        let agent = Arc::new(FakeAgent::default());
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        serve(agent.clone(), theirs);
        let description = NodeDescription {
            hostname: format!("node-{}", node.0),
            runs_containers: true,
            ..Default::default()
        };
        let (registry, hooks) = (self.registry.clone(), self.hooks.clone());
        tokio::spawn(async move {
            registry
                .attach(hooks, node, NodeRole::Agent, description, ours)
                .await
        });
        until("the agent Ready", || {
            self.state(node) == Some(NodeState::Ready)
        })
        .await;
        agent
    }

    pub(crate) fn state(&self, node: NodeId) -> Option<NodeState> {
        self.store.read(|s| s.nodes.get(&node).map(|n| n.state))
    }

    /// The wall time stamped on `node`'s last recorded transition.
    pub(crate) fn stamped(&self, node: NodeId) -> Option<i64> {
        self.store
            .read(|s| s.nodes.get(&node).map(|n| n.updated_ns))
    }
}

/// Wait (real time, at most 10 s) until `f` holds.
pub(crate) async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

const NODE: NodeId = NodeId(4);

/// Up to `max_beats_per_sec` agents per period the period and grace are as set; past
/// it they stretch in proportion to the fleet, and never shrink.
#[test]
fn the_period_and_grace_stretch_past_the_most_beats_a_second() {
    let l = Liveness::default();
    assert_eq!(l.stretch_milli(0), 1000);
    assert_eq!(l.stretch_milli(2000), 1000, "at the threshold");
    assert_eq!(l.stretch_milli(2001), 1001, "just past it");
    assert_eq!(l.stretch_milli(5000), 2500);
    assert_eq!(l.stretch_milli(10_000), 5000);
    let s = l.stretched(l.stretch_milli(10_000));
    assert_eq!(s.period, Duration::from_secs(5));
    assert_eq!(s.grace, Duration::from_secs(20));
    assert_eq!(l.stretched(10), l, "never shrunk");
    // A 2 s period halves the beats: twice the agents before it stretches.
    let slow = Liveness {
        period: Duration::from_secs(2),
        ..l
    };
    assert_eq!(slow.stretch_milli(4000), 1000);
    assert_eq!(slow.stretch_milli(8000), 2000);
    assert_eq!(
        Liveness {
            max_beats_per_sec: 500,
            ..l
        }
        .stretch_milli(1000),
        2000
    );
}

#[test]
fn a_heartbeat_is_waited_for_until_the_grace_on_the_monotonic_clock() {
    let l = Liveness::default();
    let s = |x: f64| Duration::from_secs_f64(x);
    assert_eq!(l.wait_for_answer(s(10.0), s(10.0)), Some(s(1.0)));
    assert_eq!(l.wait_for_answer(s(10.0), s(13.5)), Some(s(0.5)));
    assert_eq!(l.wait_for_answer(s(10.0), s(14.0)), None);
    assert_eq!(
        l.wait_for_answer(s(10.0), s(9.0)),
        Some(s(1.0)),
        "a reading from before the send waits a period"
    );
}

#[tokio::test]
async fn a_jump_of_the_date_marks_no_node_down_while_heartbeats_arrive() {
    let t = setup().await;
    let agent = t.attach(NODE).await;
    for jump_h in [5, -5, 26, -40, 30] {
        // While a heartbeat waits for its answer: a registry that compared dates would
        // see it hours late (or early).
        until("a heartbeat in flight", || agent.in_flight()).await;
        t.clock.jump_wall(jump_h * HOUR_NS);
        t.clock.advance(Duration::from_millis(500));
        let seen = agent.answered();
        until("two more heartbeats answered", || {
            agent.answered() >= seen + 2
        })
        .await;
        assert_eq!(
            t.state(NODE),
            Some(NodeState::Ready),
            "date moved {jump_h} h"
        );
        assert!(
            t.registry.connected().contains(&NODE),
            "date moved {jump_h} h"
        );
    }
    assert!(!t.hooks.lost_any(), "{:?}", t.hooks.seen.lock().unwrap());
}

#[tokio::test]
async fn a_silent_agent_is_down_once_the_monotonic_clock_passes_the_grace() {
    let t = setup().await;
    let agent = t.attach(NODE).await;
    agent.silent.store(true, Ordering::SeqCst);
    // The heartbeat answered before the silence is through.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = agent.answered();
    until("a heartbeat unanswered", || agent.in_flight()).await;
    t.clock.jump_wall(30 * HOUR_NS);
    t.clock.advance(LIVENESS.grace - Duration::from_millis(1));
    tokio::time::sleep(LIVENESS.period * 10).await;
    assert_eq!(t.state(NODE), Some(NodeState::Ready), "within the grace");
    assert!(t.registry.connected().contains(&NODE));
    t.clock.advance(Duration::from_millis(1));
    until("the silent agent Down", || {
        t.state(NODE) == Some(NodeState::Down)
    })
    .await;
    assert!(!t.registry.connected().contains(&NODE));
    assert!(t.hooks.seen.lock().unwrap().contains(&(NODE, false)));
    assert_eq!(agent.answered(), seen, "silent throughout");
    assert_eq!(
        t.stamped(NODE),
        Some(t.clock.wall_ns()),
        "the Down is stamped with the date as set, jump included"
    );
}
