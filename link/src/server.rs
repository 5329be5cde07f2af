//! The agent's end of a connection: each request runs as its own task with a
//! [`ServerCall`], stopped when the controller cancels it or the connection closes.

use crate::conn::{self, Slot, Slots};
use crate::stream::{new_credit, ItemReceiver, ItemSender};
use std::future::Future;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::debug;
use wharf_protocol::agent::{AgentEvent, AgentFailure, AgentRequest, AgentResponse, FailureKind};
use wharf_protocol::wire::{CallId, Frame, FrameBody, AGENT_PROTOCOL_VERSION};

/// One request being served: answer it once with [`ServerCall::respond`]; the streams
/// carry its items.
pub struct ServerCall {
    responder: Responder,
    /// Items from the controller (a body being uploaded, stdin).
    pub input: ItemReceiver,
    /// Items to the controller; only after the response.
    pub output: ItemSender,
}

impl ServerCall {
    /// Send the call's one answer; later calls do nothing.
    pub fn respond(&mut self, response: AgentResponse) {
        self.responder.respond(response);
    }

    /// Answer with `result`: values as they are, failures as `Failed`.
    pub fn respond_with(&mut self, result: Result<AgentResponse, AgentFailure>) {
        self.respond(result.unwrap_or_else(AgentResponse::Failed));
    }

    /// Split into its parts, for handlers that read and write at once.
    pub fn into_parts(self) -> (Responder, ItemReceiver, ItemSender) {
        (self.responder, self.input, self.output)
    }
}

/// The response half of a [`ServerCall`].
pub struct Responder {
    call: CallId,
    frames: mpsc::UnboundedSender<Frame>,
    responded: bool,
}

impl Responder {
    /// Send the call's one answer; later calls do nothing.
    pub fn respond(&mut self, response: AgentResponse) {
        if self.responded {
            return;
        }
        self.responded = true;
        let _ = self.frames.send(Frame {
            call: self.call,
            body: FrameBody::Response(response),
        });
    }
}

/// A handler that ended without answering must not leave its caller waiting.
impl Drop for Responder {
    fn drop(&mut self) {
        self.respond(AgentResponse::Failed(AgentFailure::new(
            FailureKind::Internal,
            "the agent ended the call without an answer",
        )));
    }
}

/// Sends the agent's events to the controller of one connection.
#[derive(Clone)]
pub struct EventSender {
    frames: mpsc::UnboundedSender<Frame>,
}

impl EventSender {
    /// Report `event`; false once the connection is gone.
    pub fn send(&self, event: AgentEvent) -> bool {
        self.frames
            .send(Frame {
                call: 0,
                body: FrameBody::Event(event),
            })
            .is_ok()
    }
}

/// Serve one connection until it closes: `handler` runs once per request, as its own
/// task. `on_connect` gets the connection's event sender before any request is read.
pub async fn serve<R, W, H, F>(
    reader: R,
    writer: W,
    on_connect: impl FnOnce(EventSender),
    handler: H,
) -> Result<(), String>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
    H: Fn(AgentRequest, ServerCall) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let (frames, rx) = mpsc::unbounded_channel();
    let _ = frames.send(Frame {
        call: 0,
        body: FrameBody::Hello {
            version: AGENT_PROTOCOL_VERSION,
        },
    });
    let writer_task = tokio::spawn(async move {
        if let Err(e) = conn::write_loop(writer, rx).await {
            debug!(error = %e, "agent connection: write ended");
        }
    });
    on_connect(EventSender {
        frames: frames.clone(),
    });
    let slots: Slots = Arc::default();
    // Whether the connection ends or this future is dropped, no handler outlives it.
    let _stop = Stop {
        slots: slots.clone(),
        writer: writer_task.abort_handle(),
    };
    let handler = Arc::new(handler);
    let mut hello = false;
    let res = conn::read_loop(reader, |frame| {
        match frame.body {
            FrameBody::Hello { version } => {
                if version != AGENT_PROTOCOL_VERSION {
                    return Err(format!(
                        "the controller speaks agent protocol {version}, this agent \
                         {AGENT_PROTOCOL_VERSION}: run the same wharf build on both"
                    ));
                }
                hello = true;
            }
            _ if !hello => return Err("the first frame was not a Hello".into()),
            FrameBody::Request(request) => start(&slots, &frames, &handler, frame.call, *request)?,
            FrameBody::Cancel => {
                if let Some(slot) = conn::lock(&slots).remove(&frame.call) {
                    slot.credit.close();
                    if let Some(t) = slot.task {
                        t.abort();
                    }
                }
            }
            FrameBody::Response(_) | FrameBody::Event(_) => {
                return Err("the controller sent an agent's frame".into())
            }
            body => conn::deliver(&slots, frame.call, body),
        }
        Ok(())
    })
    .await;
    conn::close_all(&slots);
    drop(frames);
    // The writer sends what handlers queued before they stopped, then ends.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), writer_task).await;
    res
}

/// Stops every handler and the writer when the connection's future ends or is dropped.
struct Stop {
    slots: Slots,
    writer: tokio::task::AbortHandle,
}

impl Drop for Stop {
    fn drop(&mut self) {
        conn::close_all(&self.slots);
        self.writer.abort();
    }
}

fn start<H, F>(
    slots: &Slots,
    frames: &mpsc::UnboundedSender<Frame>,
    handler: &Arc<H>,
    call: CallId,
    request: AgentRequest,
) -> Result<(), String>
where
    H: Fn(AgentRequest, ServerCall) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut table = conn::lock(slots);
    if call == 0 || table.contains_key(&call) {
        return Err(format!("call {call} opened twice"));
    }
    let (input_tx, input_rx) = mpsc::unbounded_channel();
    let credit = new_credit();
    let server_call = ServerCall {
        responder: Responder {
            call,
            frames: frames.clone(),
            responded: false,
        },
        input: ItemReceiver::new(call, input_rx, frames.clone(), None),
        output: ItemSender::new(call, frames.clone(), credit.clone(), None),
    };
    let fut = handler(request, server_call);
    let done = slots.clone();
    let task = tokio::spawn(async move {
        fut.await;
        conn::lock(&done).remove(&call);
    });
    table.insert(
        call,
        Slot {
            input: input_tx,
            credit,
            response: None,
            task: Some(task.abort_handle()),
        },
    );
    Ok(())
}
