//! What both ends of a connection share: the writer task, the reader loop, and the table
//! of open calls the reader routes frames to.

use crate::stream::Inbound;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::warn;
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind};
use wharf_protocol::wire::{encode_frame_into, CallId, Frame, FrameBody, FrameReader, KEEP_IDLE};

/// Frames of several calls are written together up to this many bytes.
const WRITE_BATCH: usize = 1024 * 1024;

/// Room made for each read at least.
const READ_CHUNK: usize = 64 * 1024;

/// A read or write this small means the burst is over.
const SMALL: usize = 4096;

/// One open call, as the reader task sees it.
pub(crate) struct Slot {
    /// Where the peer's items go.
    pub input: mpsc::UnboundedSender<Inbound>,
    /// Room the peer gave for our items.
    pub credit: Arc<Semaphore>,
    /// Client side: where the response goes.
    pub response: Option<oneshot::Sender<AgentResponse>>,
    /// Server side: the handler, stopped on `Cancel` or when the connection closes.
    pub task: Option<tokio::task::AbortHandle>,
}

/// The open calls of a connection.
pub(crate) type Slots = Arc<Mutex<HashMap<CallId, Slot>>>;

/// Lock the table; a handler that panicked while holding it leaves it usable.
pub(crate) fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, HashMap<CallId, Slot>> {
    slots.lock().unwrap_or_else(|e| e.into_inner())
}

/// Route a stream frame of `call` to its slot; frames of calls no longer open are dropped
/// (the call ended on this side first).
pub(crate) fn deliver(slots: &Slots, call: CallId, body: FrameBody) {
    let table = lock(slots);
    let Some(slot) = table.get(&call) else {
        return;
    };
    match body {
        FrameBody::Item(item) => {
            let _ = slot.input.send(Inbound::Item(item));
        }
        FrameBody::End => {
            let _ = slot.input.send(Inbound::End);
        }
        FrameBody::Abort(f) => {
            let _ = slot.input.send(Inbound::Abort(f));
        }
        FrameBody::Credit(n) => slot.credit.add_permits(n as usize),
        _ => {}
    }
}

/// The connection closed: every open call fails (its receivers see the end of their
/// channels, its senders find no credit) and every handler stops.
pub(crate) fn close_all(slots: &Slots) {
    let drained: Vec<Slot> = lock(slots).drain().map(|(_, s)| s).collect();
    for s in drained {
        s.credit.close();
        if let Some(t) = s.task {
            t.abort();
        }
    }
}

/// Write frames as they are queued, several to a write when they queue up. A frame that
/// cannot be encoded (over the size limit) is replaced by a failure of its call.
pub(crate) async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Some(frame) = rx.recv().await {
        buf.clear();
        push(&mut buf, frame);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => push(&mut buf, f),
                Err(_) => break,
            }
        }
        w.write_all(&buf).await?;
        w.flush().await?;
        // A small batch after a burst (a load): let go of what the burst grew.
        if buf.len() < SMALL && buf.capacity() > KEEP_IDLE {
            buf = Vec::new();
        }
    }
    let _ = w.shutdown().await;
    Ok(())
}

fn push(buf: &mut Vec<u8>, frame: Frame) {
    match encode_frame_into(buf, &frame) {
        Ok(()) => {}
        Err(e) => {
            warn!(call = frame.call, error = %e, "agent frame not sent");
            let failure = AgentFailure::new(FailureKind::Internal, e.to_string());
            let body = match frame.body {
                FrameBody::Response(_) => FrameBody::Response(AgentResponse::Failed(failure)),
                _ => FrameBody::Abort(failure),
            };
            let _ = encode_frame_into(
                buf,
                &Frame {
                    call: frame.call,
                    body,
                },
            );
        }
    }
}

/// Read frames until the connection ends, handing each to `on_frame`; returns why it
/// ended (`Ok` at a clean end of stream).
pub(crate) async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    mut on_frame: impl FnMut(Frame) -> Result<(), String>,
) -> Result<(), String> {
    let mut reader = FrameReader::new();
    loop {
        // Room for the whole frame being received: read straight into the reader's
        // buffer, grown once per frame, not doubled as it fills.
        let want = reader.wanted().max(READ_CHUNK);
        let buf = reader.buffer_mut();
        buf.reserve(want);
        let n = r.read_buf(buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return if reader.buffered() == 0 {
                Ok(())
            } else {
                Err("the connection ended inside a frame".into())
            };
        }
        while let Some(frame) = reader.next_frame().map_err(|e| e.to_string())? {
            on_frame(frame)?;
        }
        if n < SMALL {
            reader.shrink();
        }
    }
}
