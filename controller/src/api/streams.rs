//! Streams: `attach` (HTTP upgrade to a raw TCP-like stream) and `logs`.
//!
//! ```text
//!  client ◄──101 Upgrade: tcp──► attach task ◄──frames──► shim (attach socket)
//!          stdout/stderr: 8-byte stdcopy header + data (raw when TTY)
//!          stdin: raw bytes; the client's close_notify ends stdin, not output
//! ```

use super::error::ApiError;
use super::http::{streaming, Query, Resp};
use super::upgrade::{wait_answer_read, PeerSocket};
use crate::engine::{AttachSource, Engine};
use bytes::{BufMut, Bytes, BytesMut};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tracing::debug;
use wharf_protocol::agent::files::LogQuery;
use wharf_protocol::state::ContainerStatus;

/// Docker's stdcopy frame: `[stream, 0, 0, 0, len u32 BE]` then the data.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + data.len());
    b.put_u8(stream);
    b.put_bytes(0, 3);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

fn stream_content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// `POST /containers/{id}/attach?logs=&stream=&stdin=&stdout=&stderr=`, as moby's
/// `ContainerAttach`: with `logs`, the log so far (the selected streams); with `stream`,
/// then the live output (of the next start if the container does not run) until it exits
/// or the client detaches; without `stream`, the connection closes after the log, whatever
/// the container's state.
pub async fn attach(
    engine: Arc<Engine>,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let c = engine.container(reference)?;
    let q = Query::parse(req.uri().query());
    let (want_stdin, want_out, want_err) = (q.bool("stdin"), q.bool("stdout"), q.bool("stderr"));
    let (logs, stream) = (q.bool("logs"), q.bool("stream"));
    let tty = c.run.tty;
    let stdin_once = serde_json::from_str::<serde_json::Value>(&c.config_json)
        .ok()
        .and_then(|v| v.get("StdinOnce").and_then(|b| b.as_bool()))
        .unwrap_or(false);
    let detach_keys = super::exec::parse_detach_keys(q.get("detachKeys").unwrap_or(""))?;
    if c.status == ContainerStatus::Paused {
        return Err(ApiError::conflict(format!(
            "container {reference} is paused, unpause the container before attach"
        )));
    }
    if c.status == ContainerStatus::Exited && engine.restart_state(&c.id).restarting {
        return Err(ApiError::conflict(format!(
            "container {reference} is restarting, wait until the container is running"
        )));
    }
    let backlog = if logs {
        let query = LogQuery {
            stdout: want_out,
            stderr: want_err,
            tail: None,
            since_ns: 0,
            until_ns: 0,
            follow: false,
        };
        let entries = engine
            .agents()
            .read_log(&c.node, &c.id, query)
            .await
            .map_err(|e| ApiError::internal(e.message))?;
        let render = Render {
            tty,
            stdout: want_out,
            stderr: want_err,
            ..Render::default()
        };
        entries.iter().filter_map(|e| render.entry(e)).collect()
    } else {
        Vec::new()
    };
    // Opened before answering: the output that follows the answer is all there, and a
    // start that follows at once cannot run ahead of us.
    let source = if stream {
        Some(engine.open_attach(&c.id, want_stdin).await?)
    } else {
        None
    };
    engine.emit_container(&c, "attach", &[]);
    let peer = req.extensions().get::<PeerSocket>().copied();
    let id = c.id.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                // A registration for the next start is dropped with `source`.
                debug!(container = %id.short(), error = %e, "attach upgrade failed");
                return let_go(source).await;
            }
        };
        wait_answer_read(peer).await;
        let mut io = TokioIo::new(upgraded);
        for b in &backlog {
            if io.write_all(b).await.is_err() {
                return let_go(source).await;
            }
        }
        let stream = match source {
            Some(AttachSource::Running(s)) => s,
            // Its items come once the start has happened; a failed start aborts it,
            // which ends the relay.
            Some(AttachSource::NextStart(s)) => s,
            Some(AttachSource::Gone) | None => return end_stream(io).await,
        };
        let (events, stdin) = stream.into_split();
        let opts = super::exec::RelayOptions {
            tty,
            raw: tty,
            stdin: want_stdin,
            stdin_once,
            stdout: want_out,
            stderr: want_err,
            detach_keys,
        };
        // The container's exit is recorded by the engine's monitor, not here.
        super::exec::relay(io, events, stdin, opts, false, |_| {}).await;
    });
    Ok(super::exec::upgrade_response(tty))
}

/// Give up an attach's stream without ending the container's stdin (dropping a stream
/// that carries stdin would close it, as a client's end of input does).
async fn let_go(source: Option<AttachSource>) {
    if let Some(AttachSource::Running(stream)) = source {
        let (_, mut input) = stream.into_split();
        let _ = input.detach().await;
    }
}

/// Close an upgraded stream that has nothing more to carry.
async fn end_stream(mut io: TokioIo<hyper::upgrade::Upgraded>) {
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

/// How log entries are shown: which streams, which times, framed or raw.
#[derive(Clone, Copy, Debug, Default)]
struct Render {
    /// Raw bytes (TTY container) instead of stdcopy frames.
    tty: bool,
    stdout: bool,
    stderr: bool,
    timestamps: bool,
    /// Entries before this time (ns) are left out; 0 for none.
    since: i64,
    /// Entries after this time (ns) are left out; 0 for none.
    until: i64,
}

impl Render {
    /// The bytes of one entry, or `None` if it is not shown.
    fn entry(&self, e: &wharf_protocol::runtime::LogEntry) -> Option<Bytes> {
        if (e.stream == 1 && !self.stdout) || (e.stream == 2 && !self.stderr) {
            return None;
        }
        if self.since != 0 || self.until != 0 {
            let t = chrono::DateTime::parse_from_rfc3339(&e.time)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            if (self.since != 0 && t < self.since) || (self.until != 0 && t > self.until) {
                return None;
            }
        }
        let mut data = Vec::with_capacity(e.data.len() + 32);
        if self.timestamps {
            data.extend_from_slice(e.time.as_bytes());
            data.push(b' ');
        }
        data.extend_from_slice(&e.data);
        Some(if self.tty {
            Bytes::from(data)
        } else {
            frame(e.stream, &data)
        })
    }
}

/// Parse `since`/`until` (Unix seconds, possibly fractional) to ns; 0 when absent.
fn parse_time(q: &Query, key: &str) -> Result<i64, ApiError> {
    match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(v) => {
            let (s, frac) = v.split_once('.').unwrap_or((v, "0"));
            let secs: i64 = s
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid {key}: {v}")))?;
            let frac = format!("{frac:0<9}");
            let nanos: i64 = frac[..9]
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid {key}: {v}")))?;
            Ok(secs * 1_000_000_000 + nanos)
        }
    }
}

/// `GET /containers/{id}/logs`.
pub async fn logs(
    engine: Arc<Engine>,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let c = engine.container(reference)?;
    let q = Query::parse(req.uri().query());
    let (want_out, want_err) = (q.bool("stdout"), q.bool("stderr"));
    if !want_out && !want_err {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let follow = q.bool("follow");
    let timestamps = q.bool("timestamps");
    let tail: Option<u64> = match q.get("tail").unwrap_or("all") {
        "all" | "" => None,
        n => Some(
            n.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid tail: {n}")))?,
        ),
    };
    let query = LogQuery {
        stdout: want_out,
        stderr: want_err,
        tail,
        since_ns: parse_time(&q, "since")?,
        until_ns: parse_time(&q, "until")?,
        follow,
    };
    let tty = c.run.tty;
    // The agent reads the log and selects the entries; here they are only rendered.
    let mut entries = engine.agents().logs(&c.node, &c.id, query).await?;
    let render = Render {
        tty,
        stdout: true,
        stderr: true,
        timestamps,
        ..Render::default()
    };
    let (out, resp) = streaming(stream_content_type(tty));
    let id = c.id.clone();
    tokio::spawn(async move {
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let watcher = follow.then(|| {
            let engine = engine.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut rx = engine.store().watch();
                loop {
                    let running = engine.store().read(|s| {
                        s.containers.get(&id).is_some_and(|c| {
                            matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                        })
                    });
                    if !running || rx.changed().await.is_err() {
                        let _ = stop_tx.send(true);
                        return;
                    }
                }
            })
        });
        let mut stopping = false;
        'relay: loop {
            tokio::select! {
                batch = entries.next() => match batch {
                    Ok(Some(batch)) => {
                        for e in &batch {
                            if let Some(b) = render.entry(e) {
                                if out.send(b).await.is_err() {
                                    break 'relay;
                                }
                            }
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
                // The container stopped: the agent sends what it wrote, then ends.
                _ = stop_rx.changed(), if !stopping => {
                    stopping = true;
                    entries.stop();
                }
                _ = out.closed() => break,
            }
        }
        if let Some(w) = watcher {
            w.abort();
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdcopy_frames_have_docker_header() {
        let f = frame(2, b"hey");
        assert_eq!(&f[..], &[2, 0, 0, 0, 0, 0, 0, 3, b'h', b'e', b'y']);
    }

    #[test]
    fn times_parse_with_fractions() {
        let q = Query::parse(Some("since=12.5&until=3"));
        assert_eq!(parse_time(&q, "since").unwrap(), 12_500_000_000);
        assert_eq!(parse_time(&q, "until").unwrap(), 3_000_000_000);
        assert_eq!(parse_time(&q, "missing").unwrap(), 0);
        assert!(parse_time(&Query::parse(Some("since=x")), "since").is_err());
    }
}
