//! The agent's side of the agent protocol: every request a controller sends over a
//! connection ([`wharf_link`]) is carried out here on the host's [`Agent`].
//!
//! ```text
//!  controller ── frames (unix socket, in-memory pipe) ──► serve_connection
//!                                                            │ one task per call
//!                                                            ▼
//!                                     dispatch ─► container::handle ─► Agent ─► shims
//!                                              ├► image::handle ─► ImageStore (leases)
//!                                              └► files::handle ─► logs, cp, build contexts
//! ```
//!
//! Host facts (paths, pids, locks) stay here; what crosses is what `wharf_protocol::agent`
//! defines.

mod container;
mod context;
mod files;
mod host;
mod image;
mod network;
mod volume;

use crate::agent::{Agent, AgentError};
use crate::build_context::ConnContexts;
use std::path::Path;
use std::sync::Arc;
use tokio::net::UnixListener;
use tokio::sync::Notify;
use tracing::{info, warn};
use wharf_link::ServerCall;
use wharf_protocol::agent::{AgentFailure, AgentRequest, FailureKind};

/// A controller connection, numbered by this agent; what it holds (leases, open
/// collections) is let go when it closes.
pub type ConnId = crate::image::lease::ConnId;

static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Lets go of what a connection holds when its serving ends or is dropped: its leases at
/// once, its build contexts once the last of its calls has ended.
struct ConnGuard {
    agent: Agent,
    conn: ConnId,
    _contexts: Arc<ConnContexts>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.agent.image_store().leases().drop_connection(self.conn);
    }
}

/// Serve one controller connection until it closes.
pub async fn serve_connection<R, W>(agent: Agent, reader: R, writer: W) -> Result<(), String>
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let contexts = Arc::new(ConnContexts::new(agent.data_dir()));
    let _guard = ConnGuard {
        agent: agent.clone(),
        conn,
        _contexts: contexts.clone(),
    };
    let changed = Arc::new(Notify::new());
    let mut reporter = None;
    let (a, c) = (agent.clone(), changed.clone());
    let res = wharf_link::serve(
        reader,
        writer,
        |events| reporter = Some(tokio::spawn(host::report_inventory(a, events, c))),
        move |request, call| {
            let conn = Conn {
                id: conn,
                contexts: contexts.clone(),
            };
            dispatch(agent.clone(), conn, changed.clone(), request, call)
        },
    )
    .await;
    if let Some(r) = reporter {
        r.abort();
    }
    res
}

/// Accept controller connections on the unix socket `path` (made, mode 0600) and serve
/// each; returns once the socket listens.
pub fn listen_unix(agent: Agent, path: &Path) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    info!(socket = %path.display(), "agent listens");
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let agent = agent.clone();
                    tokio::spawn(async move {
                        let (r, w) = stream.into_split();
                        if let Err(e) = serve_connection(agent, r, w).await {
                            warn!(error = %e, "controller connection ended");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "agent socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

/// What a request knows of its connection.
struct Conn {
    id: ConnId,
    contexts: Arc<ConnContexts>,
}

/// Carry out one request of connection `conn`; `layers_changed` is told after one that
/// may have added or removed layers, so the inventory is reported again.
async fn dispatch(
    agent: Agent,
    conn: Conn,
    layers_changed: Arc<Notify>,
    request: AgentRequest,
    call: ServerCall,
) {
    match request {
        AgentRequest::Container(r) => container::handle(&agent, r, call).await,
        AgentRequest::Host(r) => host::handle(&agent, r, call).await,
        AgentRequest::Network(r) => network::handle(&agent, r, call).await,
        AgentRequest::Volume(r) => volume::handle(&agent, r, call).await,
        AgentRequest::Image(r) => {
            image::handle(&agent, conn.id, r, call).await;
            layers_changed.notify_one();
            crate::memory::give_back_when_idle();
        }
        AgentRequest::Files(r) => {
            files::handle(&agent, &conn.contexts, r, call).await;
            crate::memory::give_back_when_idle();
        }
    }
}

/// What crosses the boundary of an agent failure: its kind, the shim's kind for a
/// process that could not start, and the text.
pub fn failure(e: &AgentError) -> AgentFailure {
    let kind = match e {
        AgentError::NotRunning(_) => FailureKind::NotRunning,
        AgentError::Init { .. } => FailureKind::InvalidInput,
        _ => FailureKind::Internal,
    };
    AgentFailure {
        kind,
        shim: e.kind(),
        message: e.to_string(),
    }
}
