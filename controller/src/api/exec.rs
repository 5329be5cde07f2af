//! Exec routes (`docker exec`) and Docker's detach keys, shared with attach.
//!
//! ```text
//!  POST /containers/{id}/exec ─► 201 {"Id"}
//!  POST /exec/{id}/start ──────► 101 Upgrade: tcp ◄──► shim exec stream
//!        {"Detach":true} ──────► 200, the process runs on; its exit is recorded
//!  GET  /exec/{id}/json ───────► ExitCode, Running, Pid (the CLI's exit code)
//!  POST /exec/{id}/resize ─────► the exec's pty
//! ```
//!
//! The exit code is recorded before the stream is closed, so the CLI's inspect that
//! follows the end of the stream always sees it.

use super::error::ApiError;
use super::http::{json, read_body, status, Query, Resp};
use super::streams::frame;
use super::upgrade::{wait_answer_read, PeerSocket};
use crate::agent_client::{AttachInput, AttachOutput};
use crate::engine::{Engine, ExecCreate, ExecRecord};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;
use wharf_protocol::runtime::AttachEvent;

pub use crate::engine::{parse_detach_keys, DEFAULT_DETACH_KEYS};

/// Watches a client's stdin for the detach sequence (moby's escape proxy): bytes that
/// could start the sequence are held back until they match or not.
#[derive(Clone, Debug)]
pub struct DetachScanner {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachScanner {
    /// A scanner for `keys` (never matches when empty).
    pub fn new(keys: Vec<u8>) -> DetachScanner {
        DetachScanner { keys, matched: 0 }
    }

    /// Feed client bytes; returns the bytes to forward to the container and whether the
    /// detach sequence was completed (nothing after it is forwarded).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &b in input {
            if self.keys.is_empty() {
                out.push(b);
                continue;
            }
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

/// How a relayed session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// The process ended with this code.
    Exit(i32),
    /// The client typed the detach keys; the process runs on.
    Detached,
    /// The shim's stream ended without an exit (the shim went away).
    Lost,
}

/// What a relay carries, as the client asked for it.
#[derive(Clone, Debug)]
pub struct RelayOptions {
    /// The process has a terminal: the end of the client's input leaves it open.
    pub tty: bool,
    /// Output as raw bytes instead of stdcopy frames (a TTY container's attach; an exec
    /// started with `Tty`, which is the client's choice, whatever the exec's terminal).
    pub raw: bool,
    /// Forward the client's input to the process.
    pub stdin: bool,
    /// The end of the client's input closes the process' stdin (a container's
    /// `StdinOnce`, always for an exec, as moby's `CloseStdin`); else the stdin stays open
    /// for the next attach.
    pub stdin_once: bool,
    /// Forward stdout.
    pub stdout: bool,
    /// Forward stderr.
    pub stderr: bool,
    /// The detach sequence.
    pub detach_keys: Vec<u8>,
}

/// Carry a shim stream over an upgraded client connection until the process ends or the
/// client detaches (detach keys, or the client went away). `on_end` gets how the process
/// ended, before the client connection is closed; after a detach it is called only if
/// `drain_after_detach` (the shim stream is then read to its end), else with `Detached`.
pub async fn relay(
    io: TokioIo<hyper::upgrade::Upgraded>,
    mut events: AttachOutput,
    mut input: AttachInput,
    opts: RelayOptions,
    drain_after_detach: bool,
    on_end: impl FnOnce(RelayEnd) + Send + 'static,
) {
    let (mut client_rd, mut client_wr) = tokio::io::split(io);
    // A permit stays stored until the output loop waits, so no detach is lost.
    let detach = Arc::new(tokio::sync::Notify::new());
    let detach_tx = detach.clone();
    let want_stdin = opts.stdin;
    let stdin_once = opts.stdin_once;
    let tty = opts.tty;
    let mut scanner = DetachScanner::new(opts.detach_keys.clone());
    // Ends the input as a detach when the output side saw the client go first: aborting
    // the task instead would drop the shim stream's input half, which the shim takes as
    // the end of the container's stdin, and a later `docker attach` could not type.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stdin_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let read = tokio::select! {
                r = client_rd.read(&mut buf) => r,
                _ = &mut stop_rx => {
                    if want_stdin {
                        let _ = input.detach().await;
                    }
                    return;
                }
            };
            match read {
                Ok(0) | Err(_) => {
                    // As Docker: the end of a TTY client's input leaves the terminal open;
                    // a TTY client only ends its input when it detaches (the CLI handles
                    // the detach keys itself) or goes away.
                    if want_stdin && tty {
                        let _ = input.detach().await;
                        detach_tx.notify_one();
                    } else if want_stdin && stdin_once {
                        let _ = input.close_stdin().await;
                    } else if want_stdin {
                        let _ = input.detach().await;
                    }
                    return;
                }
                Ok(n) => {
                    if !want_stdin {
                        continue;
                    }
                    let (data, detached) = scanner.feed(&buf[..n]);
                    if !data.is_empty() && input.send_stdin(&data).await.is_err() {
                        return;
                    }
                    if detached {
                        let _ = input.detach().await;
                        detach_tx.notify_one();
                        return;
                    }
                }
            }
        }
    });
    let end = loop {
        tokio::select! {
            ev = events.next() => match ev {
                Ok(Some(AttachEvent::Output { stream, data })) => {
                    if (stream == 1 && !opts.stdout) || (stream == 2 && !opts.stderr) {
                        continue;
                    }
                    let bytes = if opts.raw { data } else { frame(stream, &data) };
                    if client_wr.write_all(&bytes).await.is_err() {
                        // The client is gone; the process goes on as after a detach.
                        break RelayEnd::Detached;
                    }
                }
                Ok(Some(AttachEvent::Exit(e))) => break RelayEnd::Exit(e.code),
                Ok(None) | Err(_) => break RelayEnd::Lost,
            },
            _ = detach.notified() => break RelayEnd::Detached,
        }
    };
    if end == RelayEnd::Detached {
        // The input ends as a detach, whichever side noticed first (see `stop_tx`).
        let _ = stop_tx.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), stdin_task).await;
    } else {
        stdin_task.abort();
    }
    if end == RelayEnd::Detached && drain_after_detach {
        let _ = client_wr.flush().await;
        let _ = client_wr.shutdown().await;
        let end = loop {
            match events.next().await {
                Ok(Some(AttachEvent::Exit(e))) => break RelayEnd::Exit(e.code),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break RelayEnd::Lost,
            }
        };
        on_end(end);
        return;
    }
    on_end(end);
    let _ = client_wr.flush().await;
    let _ = client_wr.shutdown().await;
}

/// The 101 answer of attach and exec start; `raw` for an unframed stream.
pub fn upgrade_response(raw: bool) -> Resp {
    let mut r = Response::new(super::http::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    h.insert(http::header::UPGRADE, HeaderValue::from_static("tcp"));
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(if raw {
            "application/vnd.docker.raw-stream"
        } else {
            "application/vnd.docker.multiplexed-stream"
        }),
    );
    r
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    engine: &Engine,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body = read_body(req.into_body()).await?;
    let cfg: ExecCreate = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid exec config: {e}")))?;
    let id = engine.create_exec(reference, cfg)?;
    Ok(json(StatusCode::CREATED, &json!({ "Id": id })))
}

/// Body of `POST /exec/{id}/start`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ExecStart {
    detach: bool,
    /// The client reads the stream raw; without it the stream is framed, even for an exec
    /// with a terminal (moby's `postContainerExecStart`; docker-py's `exec_start(tty=)`).
    tty: bool,
    console_size: Option<[u16; 2]>,
}

/// `POST /exec/{id}/start`: 101 and the stream, or 200 at once with `Detach`.
pub async fn start(
    engine: Arc<Engine>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let body = read_body(body).await?;
    let opts: ExecStart = if body.iter().all(u8::is_ascii_whitespace) {
        ExecStart::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid exec start config: {e}")))?
    };
    let record = engine.claim_exec(id)?;
    if opts.detach {
        let stream = engine
            .start_exec(&record, false)
            .await
            .map_err(ApiError::bad_request)?;
        let (mut events, _input) = stream.into_split();
        let engine = engine.clone();
        tokio::spawn(async move {
            let code = loop {
                match events.next().await {
                    Ok(Some(AttachEvent::Exit(e))) => break e.code,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break 255,
                }
            };
            engine.finish_exec(&record.id, code);
        });
        return Ok(status(StatusCode::OK));
    }
    let tty = record.config.tty;
    // The client's choice of a raw or a framed stream, not the exec's terminal.
    let raw = opts.tty;
    let keys = parse_detach_keys(&record.config.detach_keys)?;
    let peer = parts.extensions.get::<PeerSocket>().copied();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(Request::from_parts(parts, ())).await {
            Ok(u) => u,
            Err(e) => {
                debug!(error = %e, "exec upgrade failed");
                engine.finish_exec(&record.id, 126);
                return;
            }
        };
        // The process starts once the client has read the answer: its first bytes
        // cannot arrive with the headers (see `upgrade`).
        wait_answer_read(peer).await;
        let mut io = TokioIo::new(upgraded);
        let stream = match engine.start_exec(&record, true).await {
            Ok(s) => s,
            Err(message) => {
                // As moby: the stream is established, so the error goes to stdout.
                let text = format!("{message}\r\n");
                let bytes = if raw {
                    Bytes::from(text)
                } else {
                    frame(1, text.as_bytes())
                };
                let _ = io.write_all(&bytes).await;
                let _ = io.shutdown().await;
                return;
            }
        };
        // As moby: no console size for a client that does not read a terminal's stream.
        if let (true, true, Some([h, w])) = (tty, raw, opts.console_size) {
            if let Err(e) = engine.resize_exec(&record.id, h, w).await {
                debug!(error = %e.message, "initial exec resize");
            }
        }
        let (events, input) = stream.into_split();
        let c = &record.config;
        let relay_opts = RelayOptions {
            tty,
            raw,
            stdin: c.attach_stdin,
            stdin_once: true,
            stdout: c.attach_stdout,
            stderr: c.attach_stderr,
            detach_keys: keys,
        };
        let exec_id = record.id.clone();
        let eng = engine.clone();
        relay(io, events, input, relay_opts, true, move |end| match end {
            RelayEnd::Exit(code) => eng.finish_exec(&exec_id, code),
            RelayEnd::Lost => eng.finish_exec(&exec_id, 255),
            RelayEnd::Detached => {}
        })
        .await;
    });
    Ok(upgrade_response(raw))
}

/// `GET /exec/{id}/json`.
pub fn inspect(engine: &Engine, id: &str) -> Result<Resp, ApiError> {
    let e: ExecRecord = engine.exec_record(id)?;
    let cmd = e.config.cmd.clone().unwrap_or_default();
    Ok(json(
        StatusCode::OK,
        &json!({
            "ID": e.id,
            "Running": e.running,
            "ExitCode": e.exit_code,
            "ProcessConfig": {
                "tty": e.config.tty,
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "arguments": cmd.get(1..).unwrap_or_default(),
                "privileged": e.config.privileged,
                "user": e.config.user,
            },
            "OpenStdin": e.config.attach_stdin,
            "OpenStderr": e.config.attach_stderr,
            "OpenStdout": e.config.attach_stdout,
            "CanRemove": e.finished_at.is_some(),
            "ContainerID": e.container.as_str(),
            "DetachKeys": e.config.detach_keys,
            "Pid": e.pid,
        }),
    ))
}

/// Rows and columns of a resize request (`h`, `w`), checked like Docker.
pub fn resize_size(req: &Request<Incoming>) -> Result<(u16, u16), ApiError> {
    let q = Query::parse(req.uri().query());
    let dim = |k: &str| -> Result<u16, ApiError> {
        let v = q.get(k).unwrap_or("");
        v.parse::<u16>()
            .map_err(|_| ApiError::bad_request(format!("invalid resize {k}: {v:?}")))
    };
    Ok((dim("h")?, dim("w")?))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(engine: &Engine, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let (h, w) = resize_size(req)?;
    engine.resize_exec(id, h, w).await?;
    Ok(status(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_like_docker() {
        assert_eq!(parse_detach_keys("").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(parse_detach_keys("ctrl-@,a,ctrl-[").unwrap(), [0, b'a', 27]);
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("ab").is_err());
    }

    #[test]
    fn scanner_holds_back_a_prefix_and_detaches_on_the_sequence() {
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.feed(b"ls\n"), (b"ls\n".to_vec(), false));
        assert_eq!(s.feed(&[b'a', 16]), (b"a".to_vec(), false));
        assert_eq!(s.feed(b"b"), (vec![16, b'b'], false));
        assert_eq!(s.feed(&[16]), (vec![], false));
        assert_eq!(s.feed(&[17, b'x']), (vec![], true));
        let mut s = DetachScanner::new(vec![16, 17]);
        assert_eq!(s.feed(&[16, 16, 17]), (vec![16], true));
        let mut none = DetachScanner::new(vec![]);
        assert_eq!(none.feed(&[16, 17]), (vec![16, 17], false));
    }
}
