//! The Docker Engine API: listeners, TLS, routing.
//!
//! ```text
//!  TCP :2376 ──TLS (client cert required, cluster CA)──► hyper HTTP/1.1 (upgrades on)
//!                                                        │
//!                                route(method, /v1.NN?/path) ──► handlers ──► Engine
//! ```
//!
//! Each connection is served by its own task; a slow or broken client affects only itself.

pub mod containers;
pub mod error;
pub mod http;
pub mod images;
pub mod streams;
pub mod system;

use crate::engine::Engine;
use ::http::{Method, Request};
use error::ApiError;
use http::{add_common_headers, Resp};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, info_span, warn, Instrument};

/// A TLS handshake that does not finish in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers that do not arrive in this time close the connection (slowloris).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve the API on `listener` with `tls` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    engine: Arc<Engine>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
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
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let engine = engine.clone();
        tokio::spawn(
            async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
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
                serve_connection(hyper_util::rt::TokioIo::new(tls), engine).await;
            }
            .instrument(info_span!("conn", %peer)),
        );
    }
}

async fn serve_connection<I>(io: I, engine: Arc<Engine>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| {
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

async fn route(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let full_path = req.uri().path().to_string();
    let (_version, path) = http::strip_version(&full_path)?;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let m = req.method().clone();
    match (&m, segs.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => Ok(system::ping(&m)),
        (&Method::GET, ["version"]) => Ok(system::version()),
        (&Method::GET, ["info"]) => Ok(system::info(&engine)),
        (&Method::POST, ["images", "load"]) => images::load(engine, req).await,
        (&Method::GET, ["images", "json"]) => images::list(&engine),
        (&Method::POST, ["images", "create"]) => images::create(req).await,
        (&Method::GET, ["images", name @ .., "json"]) if !name.is_empty() => {
            images::inspect(&engine, &name.join("/"))
        }
        (&Method::POST, ["containers", "create"]) => containers::create(&engine, req).await,
        (&Method::GET, ["containers", "json"]) => containers::list(&engine, &req),
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(&engine, id),
        (&Method::POST, ["containers", id, "start"]) => containers::start(&engine, id).await,
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(&engine, id, &req).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(&engine, id, &req).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(engine.clone(), id, &req),
        (&Method::POST, ["containers", id, "attach"]) => {
            let id = id.to_string();
            streams::attach(engine, &id, req)
        }
        (&Method::POST, ["containers", id, "resize"]) => {
            engine.container(id)?;
            Ok(http::status(::http::StatusCode::OK))
        }
        (&Method::GET, ["containers", id, "logs"]) => streams::logs(engine.clone(), id, &req),
        (&Method::DELETE, ["containers", id]) => containers::remove(&engine, id, &req).await,
        _ => Err(ApiError::not_found("page not found")),
    }
}
