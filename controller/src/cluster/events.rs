//! Cluster-wide events: each controller's engine emits what it does (a create through one
//! controller, the exit its monitor on the leader saw), and passes its own events to every
//! other controller, which add them to their buses; `docker events` on any controller
//! then shows the whole cluster's.
//!
//! ```text
//!  ctl-2 engine ─emit─► bus(ctl-2) ──ALPN wharf-events/1──► ctl-1: bus.emit(origin ctl-2)
//!                                  └────────────────────► ctl-3: bus.emit(origin ctl-2)
//! ```
//!
//! An event received from a peer is never passed on (its `origin` is set). Events of a
//! peer that is unreachable for a while are lost for that while, as a slow subscriber's.

use super::{frame, ClusterError};
use crate::engine::events::{Event, EventType};
use crate::engine::Engine;
use crate::raft::Store;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tracing::debug;
use wharf_protocol::cluster::ClusterEvent;
use wharf_protocol::node_state::NodeRole;
use wharf_protocol::NodeId;

/// ALPN of a controller subscribing to another's events.
pub const EVENTS_ALPN: &[u8] = b"wharf-events/1";

/// An event on the wire (pure).
pub fn to_wire(ev: &Event) -> ClusterEvent {
    ClusterEvent {
        kind: ev.kind.as_str().to_string(),
        action: ev.action.clone(),
        actor_id: ev.actor_id.clone(),
        attributes: ev.attributes.clone(),
        time_ns: ev.time_ns,
    }
}

/// An event from peer `origin` (pure); `None` for a kind this build does not know.
pub fn from_wire(ev: ClusterEvent, origin: NodeId) -> Option<Event> {
    let kind = match ev.kind.as_str() {
        "container" => EventType::Container,
        "image" => EventType::Image,
        "volume" => EventType::Volume,
        "network" => EventType::Network,
        "daemon" => EventType::Daemon,
        _ => return None,
    };
    Some(Event {
        origin: Some(origin.0),
        kind,
        action: ev.action,
        actor_id: ev.actor_id,
        attributes: ev.attributes,
        time_ns: ev.time_ns,
    })
}

/// Bytes of events written together at most.
const EVENT_BATCH: usize = 256 * 1024;

/// Stream this controller's own events to a subscribed peer until it goes away; the
/// events that queued meanwhile go in one write (thousands of creates a second made a
/// write each).
pub async fn serve_events<S: AsyncRead + AsyncWrite + Unpin>(
    engine: &Engine,
    stream: S,
) -> Result<(), ClusterError> {
    let (_, rx) = engine.events().subscribe();
    send_events(rx, stream).await
}

/// [`serve_events`] from the bus' receiver `rx`, until the bus closes.
async fn send_events<S: AsyncRead + AsyncWrite + Unpin>(
    mut rx: tokio::sync::broadcast::Receiver<Event>,
    mut stream: S,
) -> Result<(), ClusterError> {
    let mut buf = Vec::new();
    loop {
        let mut next = Some(rx.recv().await);
        let mut closed = false;
        buf.clear();
        while let Some(got) = next.take() {
            match got {
                Ok(ev) if ev.origin.is_none() => {
                    frame::encode_into(&mut buf, &to_wire(&ev), "event")?;
                }
                Ok(_) | Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => closed = true,
            }
            if !closed && buf.len() < EVENT_BATCH {
                next = match rx.try_recv() {
                    Ok(ev) => Some(Ok(ev)),
                    Err(TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                    Err(TryRecvError::Closed) => Some(Err(RecvError::Closed)),
                    Err(TryRecvError::Empty) => None,
                };
            }
        }
        if !buf.is_empty() {
            frame::write_all(&mut stream, &buf, "events").await?;
        }
        if closed {
            return Ok(());
        }
    }
}

/// Keep a subscription to every other controller's events, for as long as the process
/// runs: new controllers are found in the state, removed ones are let go.
pub async fn follow_peers(engine: Arc<Engine>, store: Store, certs_dir: PathBuf, me: NodeId) {
    let mut following: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        let peers: Vec<(NodeId, String)> = store.read(|s| {
            s.nodes
                .values()
                .filter(|n| n.role == NodeRole::Controller && n.id != me)
                .map(|n| (n.id, n.description.cluster_addr.clone()))
                .collect()
        });
        for (id, addr) in peers {
            let Ok(addr) = addr.parse::<SocketAddr>() else {
                continue;
            };
            if following.insert(id) {
                tokio::spawn(subscribe(
                    engine.clone(),
                    store.clone(),
                    certs_dir.clone(),
                    id,
                    addr,
                ));
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Receive peer `id`'s events into this controller's bus; reconnect while it is a member.
async fn subscribe(
    engine: Arc<Engine>,
    store: Store,
    certs_dir: PathBuf,
    id: NodeId,
    addr: SocketAddr,
) {
    loop {
        if !store.read(|s| s.nodes.contains_key(&id)) {
            return;
        }
        if let Err(e) = receive(&engine, &certs_dir, id, addr).await {
            debug!(peer = %addr, error = %e, "event subscription ended");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn receive(
    engine: &Engine,
    certs_dir: &std::path::Path,
    id: NodeId,
    addr: SocketAddr,
) -> Result<(), ClusterError> {
    let cfg = super::tls::node_client_config(certs_dir, EVENTS_ALPN)?;
    let mut tls = super::tls::connect(addr, cfg).await?;
    loop {
        let ev: ClusterEvent = frame::read(&mut tls, "event").await?;
        if let Some(ev) = from_wire(ev, id) {
            engine.events().emit(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_cross_with_their_origin_and_unknown_kinds_are_dropped() {
        let ev = Event {
            origin: None,
            kind: EventType::Container,
            action: "die".into(),
            actor_id: "abc".into(),
            attributes: [("exitCode".to_string(), "3".to_string())].into(),
            time_ns: 42,
        };
        let back = from_wire(to_wire(&ev), NodeId(7)).unwrap();
        assert_eq!(back.origin, Some(7));
        assert_eq!(
            Event {
                origin: None,
                ..back
            },
            ev
        );
        let mut odd = to_wire(&ev);
        odd.kind = "plugin".into();
        assert!(from_wire(odd, NodeId(7)).is_none());
    }

    /// Events queued together go out together, each a frame, in order; a peer's events
    /// are not passed on; a burst past the batch size and one past the bus' capacity
    /// (lagged) still end with every event the bus kept, and the stream ends with the bus.
    #[tokio::test]
    async fn queued_events_are_sent_together_in_order_and_only_our_own() {
        let (tx, rx) = tokio::sync::broadcast::channel(4096);
        let (a, mut b) = tokio::io::duplex(64 * 1024 * 1024);
        let ev = |i: usize, origin: Option<u64>| Event {
            origin,
            kind: EventType::Container,
            action: "create".into(),
            actor_id: format!("{i:064}"),
            attributes: [("name".to_string(), "x".repeat(200))].into(),
            time_ns: i as i64,
        };
        // More than one batch of bytes, every tenth from a peer.
        let n = 3000;
        for i in 0..n {
            tx.send(ev(i, (i % 10 == 0).then_some(2))).unwrap();
        }
        drop(tx);
        send_events(rx, a).await.unwrap();
        let mut got = vec![];
        while let Ok(e) = frame::read::<_, ClusterEvent>(&mut b, "event").await {
            got.push(e.time_ns as usize);
        }
        let want: Vec<usize> = (0..n).filter(|i| i % 10 != 0).collect();
        assert_eq!(got, want);
        // Lagged: the bus kept the last 16 of 100.
        let (tx, rx) = tokio::sync::broadcast::channel(16);
        let (a, mut b) = tokio::io::duplex(1024 * 1024);
        for i in 0..100 {
            tx.send(ev(i, None)).unwrap();
        }
        drop(tx);
        send_events(rx, a).await.unwrap();
        let mut got = vec![];
        while let Ok(e) = frame::read::<_, ClusterEvent>(&mut b, "event").await {
            got.push(e.time_ns as usize);
        }
        assert_eq!(got, (84..100).collect::<Vec<_>>());
    }
}
