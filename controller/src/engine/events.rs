//! The engine's event bus: what `GET /events` streams.
//!
//! ```text
//!  engine code paths ──emit(Event)──► EventBus ──broadcast──► each /events subscriber
//!                                        └──ring (last RING_CAPACITY)──► replay for `since`
//! ```
//!
//! Emitting never blocks and never fails: a subscriber that falls behind the broadcast
//! channel loses events (it is told how many), as Docker's own event queue does.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use tokio::sync::broadcast;

/// How many recent events are kept for `docker events --since`.
pub const RING_CAPACITY: usize = 1024;
/// Buffered events per subscriber before it starts losing them.
const CHANNEL_CAPACITY: usize = 1024;

/// The `Type` of an event, as Docker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// A container's life: create, start, die, stop, kill, destroy, attach, rename, ...
    Container,
    /// An image: load, tag, untag, delete, import, save, ...
    Image,
    /// A volume: create, mount, unmount, destroy.
    Volume,
    /// A network.
    Network,
    /// The daemon itself (reload).
    Daemon,
}

impl EventType {
    /// Docker's spelling (`container`, `image`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Container => "container",
            EventType::Image => "image",
            EventType::Volume => "volume",
            EventType::Network => "network",
            EventType::Daemon => "daemon",
        }
    }
}

/// One event: who (`actor_id` and `attributes`) did what (`action`) when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The controller it came from when another one's (cluster-wide events); `None` for
    /// this controller's own, the only ones it passes on to the others.
    pub origin: Option<u64>,
    /// The object kind.
    pub kind: EventType,
    /// What happened (`create`, `die`, `tag`, ...).
    pub action: String,
    /// The object's ID (container ID, `sha256:` image ID, volume name).
    pub actor_id: String,
    /// Docker's `Actor.Attributes`: `name`, `image`, labels, `exitCode`, `signal`, ...
    pub attributes: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub time_ns: i64,
}

#[derive(Default)]
struct Ring {
    recent: VecDeque<Event>,
}

/// Fan-out of events to subscribers plus a bounded memory of the recent ones.
pub struct EventBus {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Event>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> EventBus {
        let (tx, _) = broadcast::channel(CHANNEL_CAPACITY);
        EventBus {
            ring: Mutex::default(),
            tx,
        }
    }

    /// Record `ev` and send it to every subscriber.
    pub fn emit(&self, ev: Event) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.recent.len() == RING_CAPACITY {
            ring.recent.pop_front();
        }
        ring.recent.push_back(ev.clone());
        // No subscriber is not an error.
        let _ = self.tx.send(ev);
    }

    /// The recent events and a receiver of every later one, with nothing lost or doubled
    /// between the two (both taken under the ring's lock, which `emit` also holds).
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        (ring.recent.iter().cloned().collect(), rx)
    }

    /// How many `/events` streams are open (`NEventsListener` of `docker info`).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str, t: i64) -> Event {
        Event {
            origin: None,
            kind: EventType::Container,
            action: action.into(),
            actor_id: "c1".into(),
            attributes: BTreeMap::new(),
            time_ns: t,
        }
    }

    #[tokio::test]
    async fn subscribers_get_history_then_live_events() {
        let bus = EventBus::new();
        bus.emit(ev("create", 1));
        let (past, mut rx) = bus.subscribe();
        assert_eq!(past, vec![ev("create", 1)]);
        assert_eq!(bus.listeners(), 1);
        bus.emit(ev("start", 2));
        assert_eq!(rx.recv().await.unwrap(), ev("start", 2));
    }

    #[test]
    fn the_ring_keeps_only_the_most_recent() {
        let bus = EventBus::new();
        for i in 0..(RING_CAPACITY as i64 + 10) {
            bus.emit(ev("x", i));
        }
        let (past, _) = bus.subscribe();
        assert_eq!(past.len(), RING_CAPACITY);
        assert_eq!(past[0].time_ns, 10);
    }
}
