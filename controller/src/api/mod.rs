//! The Docker Engine API: listeners, TLS, routing.
//!
//! ```text
//!  TCP :2376 ──TLS (client cert required, cluster CA)──┐
//!  unix /run/wharf/docker.sock (root, 0660) ───────────┼──► hyper HTTP/1.1 (upgrades on)
//!  TCP 127.0.0.1:2375 (--insecure-api-addr, loopback) ─┘        │
//!                                route(method, /v1.NN?/path) ──► handlers ──► Engine
//! ```
//!
//! Each connection is served by its own task; a slow or broken client affects only itself.
//! The listener kinds differ only in how a connection is accepted ([`Listener`]).

pub mod archive;
pub mod build;
pub mod containers;
pub mod error;
pub mod events;
pub mod exec;
pub mod http;
pub mod images;
pub mod metrics;
pub mod networks;
pub mod nodes;
pub mod ps;
pub mod raft;
pub mod settings;
pub mod stats;
pub mod streams;
pub mod system;
pub mod upgrade;
pub mod volumes;

use crate::engine::Engine;
use ::http::{Method, Request};
use error::ApiError;
use http::{add_common_headers, Resp};
use hyper::body::Incoming;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tracing::{debug, info_span, warn, Instrument};

/// A TLS handshake that does not finish in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers that do not arrive in this time close the connection (slowloris); it
/// also bounds how long an idle keep-alive connection is kept between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// One API listener; the kinds differ only in how a connection is accepted.
pub enum Listener {
    /// TCP with mutual TLS: a client certificate chained to the cluster CA is required.
    Tls {
        /// The bound socket.
        tcp: TcpListener,
        /// The server configuration (client verifier included).
        tls: Arc<rustls::ServerConfig>,
    },
    /// Plain TCP without authentication (`--insecure-api-addr`, loopback only).
    Plain(TcpListener),
    /// A unix socket; its file permissions are the authentication.
    Unix(UnixListener),
}

/// An accepted connection, before any handshake.
enum Accepted {
    Tcp(tokio::net::TcpStream, String),
    Unix(tokio::net::UnixStream),
}

impl Listener {
    /// What the listener is, for logs.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tls { tcp, .. } => format!("tls {}", addr_of(tcp)),
            Listener::Plain(tcp) => format!("plain {}", addr_of(tcp)),
            Listener::Unix(u) => format!(
                "unix {}",
                u.local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_default()
            ),
        }
    }

    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tls { tcp, .. } | Listener::Plain(tcp) => {
                let (s, peer) = tcp.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tcp(s, peer.to_string()))
            }
            Listener::Unix(u) => Ok(Accepted::Unix(u.accept().await?.0)),
        }
    }
}

fn addr_of(tcp: &TcpListener) -> String {
    tcp.local_addr().map(|a| a.to_string()).unwrap_or_default()
}

/// Serve the API on `listener` until `shutdown` fires.
pub async fn serve(
    listener: Listener,
    engine: Arc<Engine>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = match &listener {
        Listener::Tls { tls, .. } => Some(tokio_rustls::TlsAcceptor::from(tls.clone())),
        _ => None,
    };
    loop {
        let conn = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let engine = engine.clone();
        match (conn, &acceptor) {
            (Accepted::Tcp(tcp, peer), Some(acceptor)) => {
                let acceptor = acceptor.clone();
                tokio::spawn(
                    async move {
                        let handshake = acceptor.accept(tcp);
                        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!(error = %e, "tls handshake refused");
                                return;
                            }
                            Err(_) => {
                                debug!("tls handshake timed out");
                                return;
                            }
                        };
                        serve_connection(tls, None, engine).await;
                    }
                    .instrument(info_span!("conn", %peer)),
                );
            }
            (Accepted::Tcp(tcp, peer), None) => {
                let fd = upgrade::PeerSocket {
                    fd: tcp.as_raw_fd(),
                };
                tokio::spawn(
                    serve_connection(tcp, Some(fd), engine)
                        .instrument(info_span!("conn", %peer, tls = false)),
                );
            }
            (Accepted::Unix(s), _) => {
                let fd = upgrade::PeerSocket { fd: s.as_raw_fd() };
                tokio::spawn(
                    serve_connection(s, Some(fd), engine)
                        .instrument(info_span!("conn", peer = "unix")),
                );
            }
        }
    }
}

/// Serve one connection; `peer` is its socket when not TLS (see [`upgrade`]).
async fn serve_connection<S>(stream: S, peer: Option<upgrade::PeerSocket>, engine: Arc<Engine>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        if let Some(peer) = peer {
            req.extensions_mut().insert(peer);
        }
        let engine = engine.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(engine, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, svc)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(error = %e, "connection ended");
    }
}

/// Answer one request; never fails (errors become Docker error bodies).
pub async fn handle(engine: Arc<Engine>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let span = info_span!("request", %method, %path);
    let mut resp = match route(engine, req).instrument(span.clone()).await {
        Ok(r) => r,
        Err(e) => {
            span.in_scope(|| debug!(status = %e.status, message = %e.message, "error"));
            http::error(&e)
        }
    };
    add_common_headers(&mut resp);
    resp
}

/// Reads of the cluster state wait for the read index; the ping, the version and the
/// metrics answer from this controller alone (a client must reach it when there is no
/// quorum), as does everything that writes (it goes through the leader).
fn needs_read_barrier(m: &Method, segs: &[&str]) -> bool {
    (m == Method::GET || m == Method::HEAD)
        && !matches!(segs, ["_ping"] | ["version"] | ["metrics"])
}

async fn route(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let full_path = req.uri().path().to_string();
    let (_version, path) = http::strip_version(&full_path)?;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = req.method().clone();
    if needs_read_barrier(&m, &segs) && engine.store().members().len() > 1 {
        // Linearizable reads: this controller has applied everything the leader had
        // committed when the request arrived (the Raft read index).
        engine
            .store()
            .read_linearizable(|_| ())
            .await
            .map_err(crate::engine::EngineError::from)?;
    }
    match (&m, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(&m)),
        (&Method::GET, ["version"]) => Ok(system::version()),
        (&Method::GET, ["metrics"]) => Ok(metrics::metrics(&engine)),
        (&Method::GET, ["wharf", "settings"]) => Ok(settings::get(&engine)),
        (&Method::POST, ["wharf", "settings"]) => settings::update(&engine, req).await,
        (&Method::POST, ["wharf", "raft", "snapshot"]) => raft::snapshot(engine.store()).await,
        (&Method::GET, ["info"]) => Ok(system::info(&engine).await),
        (&Method::GET, ["events"]) => events::events(engine.clone(), &req),
        (&Method::GET, ["system", "df"]) => Ok(system::df(&engine).await),
        (&Method::POST, ["containers", "prune"]) => ps::prune(&engine, &req).await,
        (&Method::POST, ["images", "load"]) => images::load(engine, req).await,
        (&Method::GET, ["images", "json"]) => images::list(&engine, &req),
        (&Method::POST, ["images", "create"]) => images::create(engine.clone(), req).await,
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(&engine, &name.join("/")).await
        }
        (&Method::GET, ["images", "get"]) => images::save(&engine, &req).await,
        (&Method::POST, ["images", "prune"]) => images::prune(&engine, &req).await,
        (&Method::GET, ["images", name @ .., "get"]) if !name.is_empty() => {
            images::save_one(&engine, &name.join("/")).await
        }
        (&Method::GET, ["images", name @ .., "history"]) if !name.is_empty() => {
            images::history(&engine, &name.join("/")).await
        }
        (&Method::POST, ["images", name @ .., "tag"]) if !name.is_empty() => {
            images::tag(&engine, &name.join("/"), &req).await
        }
        (&Method::DELETE, ["images", name @ ..]) if !name.is_empty() => {
            images::remove(&engine, &name.join("/"), &req).await
        }
        (&Method::GET, ["containers", id, "changes"]) => images::changes(&engine, id).await,
        (&Method::GET, ["containers", id, "export"]) => images::export(&engine, id).await,
        (&Method::HEAD, ["containers", id, "archive"]) => archive::stat(&engine, id, &req).await,
        (&Method::GET, ["containers", id, "archive"]) => archive::get(&engine, id, &req).await,
        (&Method::PUT, ["containers", id, "archive"]) => {
            let id = id.to_string();
            archive::put(&engine, &id, req).await
        }
        (&Method::POST, ["build"]) => build::build(engine.clone(), req).await,
        (&Method::POST, ["commit"]) => images::commit(&engine, &req).await,
        (&Method::POST, ["containers", "create"]) => containers::create(&engine, req).await,
        (&Method::GET, ["containers", "json"]) => containers::list(&engine, &req).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(&engine, id).await,
        (&Method::POST, ["containers", id, "start"]) => containers::start(&engine, id).await,
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(&engine, id, &req).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(&engine, id, &req).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(engine.clone(), id, &req),
        (&Method::POST, ["containers", id, "attach"]) => {
            let id = id.to_string();
            streams::attach(engine, &id, req).await
        }
        (&Method::POST, ["containers", id, "resize"]) => {
            let (h, w) = exec::resize_size(&req)?;
            engine.resize(id, h, w).await?;
            Ok(http::status(::http::StatusCode::OK))
        }
        (&Method::POST, ["containers", id, "exec"]) => exec::create(&engine, id, req).await,
        (&Method::POST, ["containers", id, "restart"]) => {
            containers::restart(&engine, id, &req).await
        }
        (&Method::POST, ["containers", id, "pause"]) => containers::pause(&engine, id, true).await,
        (&Method::POST, ["containers", id, "unpause"]) => {
            containers::pause(&engine, id, false).await
        }
        (&Method::POST, ["containers", id, "rename"]) => {
            containers::rename(&engine, id, &req).await
        }
        (&Method::GET, ["containers", id, "top"]) => containers::top(&engine, id, &req).await,
        (&Method::POST, ["exec", id, "start"]) => {
            let id = id.to_string();
            exec::start(engine, &id, req).await
        }
        (&Method::GET, ["exec", id, "json"]) => exec::inspect(&engine, id),
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(&engine, id, &req).await,
        (&Method::GET, ["containers", id, "logs"]) => streams::logs(engine.clone(), id, &req).await,
        (&Method::DELETE, ["containers", id]) => containers::remove(&engine, id, &req).await,
        (&Method::GET, ["containers", id, "stats"]) => {
            let id = id.to_string();
            stats::stats(engine.clone(), &id, &req).await
        }
        (&Method::GET, ["nodes"]) => nodes::list(&engine, &req),
        (&Method::GET, ["nodes", id]) => nodes::inspect(&engine, id),
        (&Method::POST, ["nodes", id, "update"]) => nodes::update(&engine, id, req).await,
        (&Method::DELETE, ["nodes", id]) => nodes::remove(&engine, id).await,
        (&Method::POST, ["volumes", "create"]) => volumes::create(&engine, req).await,
        (&Method::POST, ["volumes", "prune"]) => volumes::prune(&engine, &req).await,
        (&Method::GET, ["volumes"]) => volumes::list(&engine, &req),
        (&Method::GET, ["volumes", name]) => volumes::inspect(&engine, name),
        (&Method::DELETE, ["volumes", name]) => volumes::remove(&engine, name, &req).await,
        (&Method::POST, ["networks", "create"]) => networks::create(&engine, req).await,
        (&Method::POST, ["networks", "prune"]) => networks::prune(&engine).await,
        (&Method::GET, ["networks"]) => networks::list(&engine, &req),
        (&Method::GET, ["networks", id]) => networks::inspect(&engine, id),
        (&Method::DELETE, ["networks", id]) => networks::remove(&engine, id).await,
        (&Method::POST, ["networks", id, "connect"]) => {
            let id = id.to_string();
            networks::connect(&engine, &id, req).await
        }
        (&Method::POST, ["networks", id, "disconnect"]) => {
            let id = id.to_string();
            networks::disconnect(&engine, &id, req).await
        }
        _ => Err(ApiError::not_found("page not found")),
    }
}
