//! The two halves of a call's stream: [`ItemSender`] waits for credit before each item,
//! [`ItemReceiver`] returns credit as items are taken.

use crate::connection_lost;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};
use wharf_protocol::agent::AgentFailure;
use wharf_protocol::wire::{CallId, Frame, FrameBody, RecvWindow, StreamItem, ITEM_BYTES, WINDOW};

/// What the reader task hands a call's receiver.
#[derive(Debug)]
pub(crate) enum Inbound {
    Item(StreamItem),
    End,
    Abort(AgentFailure),
}

/// Room the peer gave for items of one call; the reader task adds its credit.
pub(crate) fn new_credit() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(WINDOW as usize))
}

/// Sends a call's items to the peer, at most [`WINDOW`] ahead of what it has taken.
/// Dropped without [`ItemSender::end`], it aborts the stream: a body cut short must never
/// look complete.
pub struct ItemSender {
    call: CallId,
    frames: mpsc::UnboundedSender<Frame>,
    credit: Arc<Semaphore>,
    closed: bool,
    _guard: Option<Arc<dyn Send + Sync>>,
}

impl ItemSender {
    pub(crate) fn new(
        call: CallId,
        frames: mpsc::UnboundedSender<Frame>,
        credit: Arc<Semaphore>,
        guard: Option<Arc<dyn Send + Sync>>,
    ) -> ItemSender {
        ItemSender {
            call,
            frames,
            credit,
            closed: false,
            _guard: guard,
        }
    }

    /// Send one item once the peer has room for it; fails when the connection or the
    /// call is gone.
    pub async fn send(&mut self, item: StreamItem) -> Result<(), AgentFailure> {
        if self.closed {
            return Err(connection_lost());
        }
        let permit = self.credit.acquire().await.map_err(|_| connection_lost())?;
        permit.forget();
        self.frame(FrameBody::Item(item))
    }

    /// Send `data` as byte items of at most [`ITEM_BYTES`] each.
    pub async fn send_bytes(&mut self, data: &[u8]) -> Result<(), AgentFailure> {
        for chunk in data.chunks(ITEM_BYTES) {
            self.send(StreamItem::Bytes(bytes::Bytes::copy_from_slice(chunk)))
                .await?;
        }
        Ok(())
    }

    /// [`ItemSender::send_bytes`] of a shared buffer: its items are slices of it, no copy.
    pub async fn send_shared(&mut self, data: bytes::Bytes) -> Result<(), AgentFailure> {
        let mut at = 0;
        while at < data.len() {
            let end = (at + ITEM_BYTES).min(data.len());
            self.send(StreamItem::Bytes(data.slice(at..end))).await?;
            at = end;
        }
        Ok(())
    }

    /// The stream is complete.
    pub fn end(mut self) {
        let _ = self.frame(FrameBody::End);
        self.closed = true;
    }

    /// The stream failed: the peer sees `failure` after the items sent so far.
    pub fn abort(mut self, failure: AgentFailure) {
        let _ = self.frame(FrameBody::Abort(failure));
        self.closed = true;
    }

    fn frame(&self, body: FrameBody) -> Result<(), AgentFailure> {
        self.frames
            .send(Frame {
                call: self.call,
                body,
            })
            .map_err(|_| connection_lost())
    }
}

impl Drop for ItemSender {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.frame(FrameBody::Abort(AgentFailure::new(
                wharf_protocol::agent::FailureKind::Internal,
                "the stream was cut short",
            )));
        }
    }
}

/// Takes a call's items from the peer and returns credit for them.
pub struct ItemReceiver {
    call: CallId,
    rx: mpsc::UnboundedReceiver<Inbound>,
    frames: mpsc::UnboundedSender<Frame>,
    window: RecvWindow,
    done: bool,
    _guard: Option<Arc<dyn Send + Sync>>,
}

impl ItemReceiver {
    pub(crate) fn new(
        call: CallId,
        rx: mpsc::UnboundedReceiver<Inbound>,
        frames: mpsc::UnboundedSender<Frame>,
        guard: Option<Arc<dyn Send + Sync>>,
    ) -> ItemReceiver {
        ItemReceiver {
            call,
            rx,
            frames,
            window: RecvWindow::default(),
            done: false,
            _guard: guard,
        }
    }

    /// The next item; `Ok(None)` once the peer ended the stream, an error when it
    /// aborted it or the connection closed.
    pub async fn recv(&mut self) -> Result<Option<StreamItem>, AgentFailure> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Inbound::Item(item)) => {
                if let Some(n) = self.window.taken() {
                    let _ = self.frames.send(Frame {
                        call: self.call,
                        body: FrameBody::Credit(n),
                    });
                }
                Ok(Some(item))
            }
            Some(Inbound::End) => {
                self.done = true;
                Ok(None)
            }
            Some(Inbound::Abort(f)) => {
                self.done = true;
                Err(f)
            }
            None => {
                self.done = true;
                Err(connection_lost())
            }
        }
    }

    /// Whether the peer has ended (or aborted) the stream and every item was taken.
    pub fn is_done(&self) -> bool {
        self.done
    }
}
