//! The controller's end of an agent connection: open calls, get their responses and
//! streams, receive the agent's events.

use crate::conn::{self, Slot, Slots};
use crate::connection_lost;
use crate::stream::{new_credit, ItemReceiver, ItemSender};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentRequest, AgentResponse, FailureKind};
use wharf_protocol::wire::{CallId, Frame, FrameBody, AGENT_PROTOCOL_VERSION};

/// A connection to one agent; cheap to clone, calls run concurrently.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    frames: mpsc::UnboundedSender<Frame>,
    slots: Slots,
    next: AtomicU64,
    closed: Arc<AtomicBool>,
    events: Mutex<Option<mpsc::UnboundedReceiver<AgentEvent>>>,
    /// The reader and writer tasks: aborted by [`Client::close`].
    tasks: Vec<tokio::task::AbortHandle>,
}

/// Start the client end over `reader`/`writer`: sends `Hello` and spawns the reader and
/// writer tasks, which end when the connection does.
pub fn connect<R, W>(reader: R, writer: W) -> Client
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (frames, rx) = mpsc::unbounded_channel();
    let _ = frames.send(Frame {
        call: 0,
        body: FrameBody::Hello {
            version: AGENT_PROTOCOL_VERSION,
        },
    });
    let slots: Slots = Arc::default();
    let closed = Arc::new(AtomicBool::new(false));
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let writer_task = tokio::spawn(async move {
        if let Err(e) = conn::write_loop(writer, rx).await {
            debug!(error = %e, "agent connection: write ended");
        }
    });
    let (s, c) = (slots.clone(), closed.clone());
    let reader_task = tokio::spawn(async move {
        let res = conn::read_loop(reader, |frame| {
            match frame.body {
                FrameBody::Hello { version } if version != AGENT_PROTOCOL_VERSION => {
                    return Err(format!(
                        "the agent speaks agent protocol {version}, this controller \
                         {AGENT_PROTOCOL_VERSION}: run the same wharf build on both"
                    ))
                }
                FrameBody::Hello { .. } => {}
                FrameBody::Response(r) => {
                    let tx = conn::lock(&s)
                        .get_mut(&frame.call)
                        .and_then(|slot| slot.response.take());
                    if let Some(tx) = tx {
                        let _ = tx.send(r);
                    }
                }
                FrameBody::Event(e) => {
                    let _ = events_tx.send(e);
                }
                FrameBody::Request(_) | FrameBody::Cancel => {
                    return Err("the agent sent a controller's frame".into())
                }
                body => conn::deliver(&s, frame.call, body),
            }
            Ok(())
        })
        .await;
        if let Err(e) = res {
            warn!(error = %e, "agent connection closed");
        }
        c.store(true, Ordering::SeqCst);
        conn::close_all(&s);
    });
    Client {
        inner: Arc::new(Inner {
            frames,
            slots,
            next: AtomicU64::new(1),
            closed,
            events: Mutex::new(Some(events_rx)),
            tasks: vec![writer_task.abort_handle(), reader_task.abort_handle()],
        }),
    }
}

impl Client {
    /// Open a call: the request goes out at once; the returned call carries its response
    /// and its streams both ways.
    pub fn open(&self, request: AgentRequest) -> ClientCall {
        let call = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (input_tx, input_rx) = mpsc::unbounded_channel();
        let (resp_tx, resp_rx) = oneshot::channel();
        let credit = new_credit();
        if self.inner.closed.load(Ordering::SeqCst) {
            // Nothing will ever answer: every channel is closed at once.
            credit.close();
            drop((input_tx, resp_tx));
        } else {
            conn::lock(&self.inner.slots).insert(
                call,
                Slot {
                    input: input_tx,
                    credit: credit.clone(),
                    response: Some(resp_tx),
                    task: None,
                },
            );
            let _ = self.inner.frames.send(Frame {
                call,
                body: FrameBody::Request(Box::new(request)),
            });
        }
        let guard: Arc<dyn Send + Sync> = Arc::new(CallGuard {
            call,
            slots: self.inner.slots.clone(),
            frames: self.inner.frames.clone(),
        });
        ClientCall {
            response: Response { rx: resp_rx },
            output: ItemSender::new(call, self.inner.frames.clone(), credit, Some(guard.clone())),
            input: ItemReceiver::new(call, input_rx, self.inner.frames.clone(), Some(guard)),
        }
    }

    /// A call without streams: the request, then its response (a `Failed` one as the
    /// error).
    pub async fn call(&self, request: AgentRequest) -> Result<AgentResponse, AgentFailure> {
        let ClientCall {
            response,
            output,
            input,
        } = self.open(request);
        output.end();
        let r = response.get().await;
        drop(input);
        r
    }

    /// The agent's events; `None` after the first call (one consumer per connection).
    pub fn take_events(&self) -> Option<mpsc::UnboundedReceiver<AgentEvent>> {
        self.inner.events.lock().ok()?.take()
    }

    /// Close the connection now (the peer stopped answering): every open call fails as
    /// unavailable at once and the stream is dropped.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        for t in &self.inner.tasks {
            t.abort();
        }
        conn::close_all(&self.inner.slots);
    }

    /// Whether the connection has closed (every call fails as unavailable).
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::SeqCst)
    }
}

/// An open call: its response, the stream to the agent, the stream from it.
pub struct ClientCall {
    /// The agent's answer.
    pub response: Response,
    /// Items to the agent (end it, even when there are none, for calls that read it).
    pub output: ItemSender,
    /// Items from the agent.
    pub input: ItemReceiver,
}

/// The response of a call, to await once.
pub struct Response {
    rx: oneshot::Receiver<AgentResponse>,
}

impl Response {
    /// Wait for the response; `Failed` and a lost connection are errors.
    pub async fn get(self) -> Result<AgentResponse, AgentFailure> {
        match self.rx.await {
            Ok(AgentResponse::Failed(f)) => Err(f),
            Ok(r) => Ok(r),
            Err(_) => Err(connection_lost()),
        }
    }
}

/// Removes a call from the table once every part of it is dropped, and tells the agent
/// to stop it (a no-op for a call the agent has finished).
struct CallGuard {
    call: CallId,
    slots: Slots,
    frames: mpsc::UnboundedSender<Frame>,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if conn::lock(&self.slots).remove(&self.call).is_some() {
            let _ = self.frames.send(Frame {
                call: self.call,
                body: FrameBody::Cancel,
            });
        }
    }
}

/// A failure for a response of the wrong kind.
pub fn unexpected(what: &str, got: &AgentResponse) -> AgentFailure {
    AgentFailure::new(
        FailureKind::Internal,
        format!("agent answered {what} with {got:?}"),
    )
}
