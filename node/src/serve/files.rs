//! Files requests: a container's log (read, filtered, followed) and `docker cp` on its
//! root filesystem (stat, tar out, tar in through a spool in the data directory).
//!
//! ```text
//!  Logs ─► <log>.N … <log>.1, <log> ─► LogQuery::select ─► LogEntries items ─► (follow)
//!  Stat/Get ─► /etc file of the container's state dir, or archive::with_root(rootfs)
//!  Put: Bytes items ─► spool (O_TMPFILE in the data dir) ─► End ─► extract_archive
//!  Context*: a build's context on this host (see [`super::context`])
//! ```

use super::context;
use crate::agent::Agent;
use crate::archive::{self, ArchiveError, ContainerPath};
use crate::build_context::ConnContexts;
use crate::copy::{self, CopyError, CopySpec};
use crate::runtime::logs::{read_rotated_entries, LogFollower};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::warn;
use wharf_link::{ItemReceiver, ItemSender, ServerCall};
use wharf_protocol::agent::files::{log_batches, FilesRequest, FilesResponse, LogQuery};
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind};
use wharf_protocol::archive::{ExtractOptions, PathStat};
use wharf_protocol::runtime::LogEntry;
use wharf_protocol::wire::{StreamItem, ITEM_BYTES};
use wharf_protocol::ContainerId;

/// Carry out one files request of a connection whose build contexts are `contexts`.
pub(super) async fn handle(
    agent: &Agent,
    contexts: &Arc<ConnContexts>,
    request: FilesRequest,
    call: ServerCall,
) {
    match request {
        FilesRequest::Logs { id, query } => logs(agent, &id, query, call).await,
        FilesRequest::Stat { id, path } => {
            let mut call = call;
            let r = stat(agent, &id, &path).await;
            call.respond_with(r.map(|s| AgentResponse::Files(FilesResponse::Stat(s))));
        }
        FilesRequest::Get { id, path } => get(agent, &id, path, call).await,
        FilesRequest::Put { id, path, options } => put(agent, &id, path, options, call).await,
        FilesRequest::Collect { id, spec } => collect(agent, &id, spec, call).await,
        FilesRequest::IsDir { id, path } => {
            let mut call = call;
            let store = agent.image_store().clone();
            let r = tokio::task::spawn_blocking(move || {
                archive::with_root(&store, id.as_str(), |root| Ok(archive::is_dir(root, &path)))
            })
            .await
            .map_err(thread_failure)
            .and_then(|r| r.map_err(|e| archive_failure(&e)));
            call.respond_with(r.map(|d| AgentResponse::Files(FilesResponse::IsDir(d))));
        }
        r @ (FilesRequest::ContextPut { .. }
        | FilesRequest::ContextCollect { .. }
        | FilesRequest::ContextRemove { .. }) => handle_context(contexts, r, call).await,
    }
}

/// Carry out a build context request (the others are answered `Unsupported`).
pub(super) async fn handle_context(
    contexts: &Arc<ConnContexts>,
    request: FilesRequest,
    mut call: ServerCall,
) {
    match request {
        FilesRequest::ContextPut { build, dockerfile } => {
            context::put(contexts, build, dockerfile, call).await
        }
        FilesRequest::ContextCollect { build, spec } => {
            context::collect(contexts, build, spec, call).await
        }
        FilesRequest::ContextRemove { build } => context::remove(contexts, build, call).await,
        _ => call.respond(AgentResponse::Failed(AgentFailure::new(
            FailureKind::Unsupported,
            "not a build context request",
        ))),
    }
}

/// What crosses the boundary of an archive failure; the messages of the client's
/// mistakes are Docker's own, the controller words the others (see [`FilesRequest`]).
pub fn archive_failure(e: &ArchiveError) -> AgentFailure {
    let kind = if e.is_read_only() {
        FailureKind::Conflict
    } else {
        match e {
            ArchiveError::NotFound { .. } => FailureKind::NotFound,
            ArchiveError::NotADirectory
            | ArchiveError::BadArchive(_)
            | ArchiveError::Conflict(_) => FailureKind::InvalidInput,
            _ => FailureKind::Internal,
        }
    };
    AgentFailure::new(kind, e.to_string())
}

pub(super) fn thread_failure(e: tokio::task::JoinError) -> AgentFailure {
    AgentFailure::new(FailureKind::Internal, format!("files task failed: {e}"))
}

/// The per-container files bound over the rootfs at `/etc/<name>` (as Docker's
/// `NetworkMounts`); `path` names one when it is exactly `/etc/<name>`. Pure.
pub fn etc_file(path: &str) -> Option<&'static str> {
    let p = ContainerPath::parse(path);
    if p.follow_last || p.comps.len() != 2 || p.comps[0] != b"etc" {
        return None;
    }
    ["hostname", "hosts", "resolv.conf"]
        .into_iter()
        .find(|n| p.comps[1] == n.as_bytes())
}

/// The host file shown at `path` instead of the rootfs's: the container's
/// `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf` once it has been started.
fn etc_override(agent: &Agent, id: &ContainerId, path: &str) -> Option<PathBuf> {
    let name = etc_file(path)?;
    let file = agent.state_dir(id).join(name);
    file.is_file().then_some(file)
}

async fn stat(agent: &Agent, id: &ContainerId, path: &str) -> Result<PathStat, AgentFailure> {
    if let Some(file) = etc_override(agent, id, path) {
        let name = ContainerPath::parse(path).name();
        return archive::host_file_stat(&file, &name).map_err(|e| archive_failure(&e));
    }
    let store = agent.image_store().clone();
    let (id, p) = (id.clone(), path.to_string());
    tokio::task::spawn_blocking(move || {
        archive::with_root(&store, id.as_str(), |root| archive::stat_path(root, &p))
    })
    .await
    .map_err(thread_failure)?
    .map_err(|e| archive_failure(&e))
}

/// A `Write` that sends `Bytes` items from a blocking task; blocks while the controller
/// lags (credit).
struct ItemWriter {
    tx: ItemSender,
    rt: tokio::runtime::Handle,
    buf: Vec<u8>,
}

impl Write for ItemWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= ITEM_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(ITEM_BYTES));
        self.rt
            .block_on(self.tx.send(StreamItem::Bytes(chunk.into())))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "controller went away")
            })
    }
}

async fn get(agent: &Agent, id: &ContainerId, path: String, mut call: ServerCall) {
    let stat = match stat(agent, id, &path).await {
        Ok(s) => s,
        Err(f) => return call.respond(AgentResponse::Failed(f)),
    };
    call.respond(AgentResponse::Files(FilesResponse::Stat(stat)));
    let (_responder, _input, output) = call.into_parts();
    let etc = etc_override(agent, id, &path);
    let store = agent.image_store().clone();
    let id = id.clone();
    let rt = tokio::runtime::Handle::current();
    let _ = tokio::task::spawn_blocking(move || {
        let mut w = ItemWriter {
            tx: output,
            rt,
            buf: Vec::with_capacity(ITEM_BYTES),
        };
        let res = match etc {
            Some(file) => {
                let name = ContainerPath::parse(&path).name();
                archive::write_host_file(&file, &name, &mut w).map(drop)
            }
            None => archive::with_root(&store, id.as_str(), |root| {
                archive::write_archive(root, &path, &mut w).map(drop)
            }),
        }
        .and_then(|()| {
            w.flush().map_err(|source| ArchiveError::Io {
                action: "send archive",
                path: path.clone(),
                source,
            })
        });
        match res {
            Ok(()) => w.tx.end(),
            Err(e) => {
                warn!(container = %id.short(), path = %path, error = %e, "archive failed mid-stream");
                w.tx.abort(archive_failure(&e));
            }
        }
    })
    .await;
}

/// What crosses the boundary of a failed collection of build sources.
pub(super) fn copy_failure(e: &CopyError) -> AgentFailure {
    let kind = match e {
        CopyError::Archive(a) => return archive_failure(a),
        CopyError::Io { .. } => FailureKind::Internal,
        _ => FailureKind::InvalidInput,
    };
    AgentFailure::new(kind, e.to_string())
}

async fn collect(agent: &Agent, id: &ContainerId, spec: CopySpec, call: ServerCall) {
    let store = agent.image_store().clone();
    let tmp = agent.data_dir().to_path_buf();
    let id = id.clone();
    let collected = tokio::task::spawn_blocking(move || {
        archive::with_root(&store, id.as_str(), |root| {
            Ok(copy::collect(root, &spec, &tmp))
        })
    })
    .await
    .map_err(thread_failure)
    .and_then(|r| r.map_err(|e| archive_failure(&e)))
    .and_then(|r| r.map_err(|e| copy_failure(&e)));
    send_collected(collected, call).await
}

/// Answer a collection: `Collected`, then the spooled tar as `Bytes` items.
pub(super) async fn send_collected(
    collected: Result<copy::Collected, AgentFailure>,
    mut call: ServerCall,
) {
    let copy::Collected { spool, hash } = match collected {
        Ok(c) => c,
        Err(f) => return call.respond(AgentResponse::Failed(f)),
    };
    call.respond(AgentResponse::Files(FilesResponse::Collected { hash }));
    let (_responder, _input, mut output) = call.into_parts();
    let mut file = tokio::fs::File::from_std(spool);
    let mut buf = vec![0u8; ITEM_BYTES];
    loop {
        use tokio::io::AsyncReadExt;
        match file.read(&mut buf).await {
            Ok(0) => return output.end(),
            Ok(n) => {
                if output
                    .send(StreamItem::Bytes(bytes::Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                return output.abort(AgentFailure::new(
                    FailureKind::Internal,
                    format!("read copy spool: {e}"),
                ))
            }
        }
    }
}

async fn put(
    agent: &Agent,
    id: &ContainerId,
    path: String,
    options: ExtractOptions,
    call: ServerCall,
) {
    let (mut responder, input, _output) = call.into_parts();
    let spooled = spool(agent, input).await;
    let result = match spooled {
        Ok(mut file) => {
            let store = agent.image_store().clone();
            let id = id.clone();
            tokio::task::spawn_blocking(move || {
                archive::with_root(&store, id.as_str(), |root| {
                    archive::extract_archive(root, &path, &mut file, &options)
                })
            })
            .await
            .map_err(thread_failure)
            .and_then(|r| r.map_err(|e| archive_failure(&e)))
        }
        Err(f) => Err(f),
    };
    responder.respond(match result {
        Ok(()) => AgentResponse::Done,
        Err(f) => AgentResponse::Failed(f),
    });
}

/// The `Bytes` items of `input`, to its end, in an unnamed file of the data directory.
async fn spool(agent: &Agent, mut input: ItemReceiver) -> Result<std::fs::File, AgentFailure> {
    use tokio::io::AsyncWriteExt;
    let spool_err =
        |e: std::io::Error| AgentFailure::new(FailureKind::Internal, format!("spool archive: {e}"));
    let mut out = archive::spool_file(agent.data_dir()).map(tokio::fs::File::from_std);
    loop {
        match input.recv().await {
            Ok(Some(StreamItem::Bytes(data))) => {
                if let Ok(f) = out.as_mut() {
                    if let Err(e) = f.write_all(&data).await {
                        // Read the rest all the same: the controller answers once it
                        // has sent it.
                        out = Err(e);
                    }
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            // The body broke off: nothing is extracted from it.
            Err(f) => return Err(f),
        }
    }
    let mut out = out.map_err(spool_err)?;
    out.flush().await.map_err(spool_err)?;
    Ok(out.into_std().await)
}

/// Send the log of `id` as `query` selects it; with `follow`, go on until the controller
/// ends its stream (or goes away).
async fn logs(agent: &Agent, id: &ContainerId, query: LogQuery, call: ServerCall) {
    send_log(agent.log_path(id), query, call).await;
}

/// [`logs`] of the json-file log at `path`.
async fn send_log(path: PathBuf, query: LogQuery, mut call: ServerCall) {
    let read_err =
        |e: crate::runtime::logs::LogError| AgentFailure::new(FailureKind::Internal, e.to_string());
    let first = tokio::task::spawn_blocking(move || {
        // Opened before the rotated files are read: a rotation in between is seen as one.
        let mut follower = LogFollower::open(&path, 0)?;
        let mut first = read_rotated_entries(&path)?;
        first.extend(follower.read_available()?);
        Ok::<_, crate::runtime::logs::LogError>((follower, first))
    })
    .await
    .map_err(thread_failure)
    .and_then(|r| r.map_err(read_err));
    let (mut follower, first) = match first {
        Ok(f) => f,
        Err(f) => return call.respond(AgentResponse::Failed(f)),
    };
    call.respond(AgentResponse::Done);
    let (_responder, mut input, mut output) = call.into_parts();
    if send_entries(&mut output, query.select(first))
        .await
        .is_err()
    {
        return;
    }
    if !query.follow {
        return output.end();
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let stopper = tokio::spawn(async move {
        // The controller ends (or drops) its stream when the container stopped.
        while let Ok(Some(_)) = input.recv().await {}
        let _ = stop_tx.send(true);
    });
    loop {
        match follower.next_batch(&mut stop_rx).await {
            Ok(Some(batch)) => {
                let kept = batch.into_iter().filter(|e| query.keeps(e)).collect();
                if send_entries(&mut output, kept).await.is_err() {
                    break;
                }
            }
            Ok(None) => {
                output.end();
                break;
            }
            Err(e) => {
                output.abort(read_err(e));
                break;
            }
        }
    }
    stopper.abort();
}

async fn send_entries(output: &mut ItemSender, entries: Vec<LogEntry>) -> Result<(), AgentFailure> {
    for batch in log_batches(entries) {
        output.send(StreamItem::LogEntries(batch)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::agent::AgentRequest;

    /// A link whose agent end serves `Logs` calls from the log at `path`.
    fn log_server(path: PathBuf) -> wharf_link::Client {
        let (ours, theirs) = tokio::io::duplex(1024 * 1024);
        let (r, w) = tokio::io::split(theirs);
        tokio::spawn(wharf_link::serve(
            r,
            w,
            |_| {},
            move |request, call| {
                let path = path.clone();
                async move {
                    if let AgentRequest::Files(FilesRequest::Logs { query, .. }) = request {
                        send_log(path, query, call).await;
                    }
                }
            },
        ));
        let (r, w) = tokio::io::split(ours);
        wharf_link::connect(r, w)
    }

    fn line(n: u32, stream: &str) -> String {
        format!(
            "{{\"log\":\"n{n}\\n\",\"stream\":\"{stream}\",\"time\":\"2024-01-01T00:00:{n:02}Z\"}}\n"
        )
    }

    async fn texts(rx: &mut ItemReceiver) -> Result<Vec<String>, AgentFailure> {
        let mut out = Vec::new();
        while let Some(item) = rx.recv().await? {
            if let StreamItem::LogEntries(batch) = item {
                out.extend(
                    batch
                        .iter()
                        .map(|e| String::from_utf8_lossy(&e.data).into_owned()),
                );
            }
        }
        Ok(out)
    }

    fn logs_request(query: LogQuery) -> AgentRequest {
        AgentRequest::Files(FilesRequest::Logs {
            id: format!("{:064x}", 1).parse().unwrap(),
            query,
        })
    }

    #[tokio::test]
    async fn tail_and_streams_are_chosen_on_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let log: String = (1..=20)
            .map(|n| line(n, if n % 2 == 0 { "stderr" } else { "stdout" }))
            .collect();
        std::fs::write(&path, log).unwrap();
        let client = log_server(path);
        let query = LogQuery {
            stdout: true,
            tail: Some(4),
            ..LogQuery::default()
        };
        let mut call = client.open(logs_request(query));
        call.output.end();
        assert_eq!(call.response.get().await.unwrap(), AgentResponse::Done);
        assert_eq!(texts(&mut call.input).await.unwrap(), ["n17\n", "n19\n"]);
    }

    #[tokio::test]
    async fn a_follow_ends_after_what_was_written_once_the_controller_stops_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        std::fs::write(&path, line(1, "stdout")).unwrap();
        let client = log_server(path.clone());
        let query = LogQuery {
            stdout: true,
            stderr: true,
            follow: true,
            ..LogQuery::default()
        };
        let mut call = client.open(logs_request(query));
        assert_eq!(call.response.get().await.unwrap(), AgentResponse::Done);
        let first = call.input.recv().await.unwrap();
        assert!(matches!(first, Some(StreamItem::LogEntries(b)) if b.len() == 1));
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(line(2, "stderr").as_bytes()).unwrap();
        // Stopped at once: what was written before still comes, then the end.
        call.output.end();
        let rest = tokio::time::timeout(std::time::Duration::from_secs(10), texts(&mut call.input));
        assert_eq!(rest.await.expect("the follow ends").unwrap(), ["n2\n"]);
    }

    #[test]
    fn only_the_exact_etc_paths_are_the_container_files() {
        assert_eq!(etc_file("/etc/hostname"), Some("hostname"));
        assert_eq!(etc_file("etc/./resolv.conf"), Some("resolv.conf"));
        assert_eq!(etc_file("/tmp/../etc/hosts"), Some("hosts"));
        assert_eq!(etc_file("/etc/hostname/"), None);
        assert_eq!(etc_file("/etc/passwd"), None);
        assert_eq!(etc_file("/x/etc/hosts"), None);
        assert_eq!(etc_file("/etc"), None);
    }

    #[test]
    fn archive_failures_keep_dockers_words_and_say_their_kind() {
        let f = archive_failure(&ArchiveError::NotADirectory);
        assert_eq!(f.kind, FailureKind::InvalidInput);
        assert_eq!(f.message, "extraction point is not a directory");
        let f = archive_failure(&ArchiveError::NotFound {
            path: "/nope".into(),
        });
        assert_eq!(f.kind, FailureKind::NotFound);
        let f = archive_failure(&ArchiveError::Io {
            action: "create file",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EROFS),
        });
        assert_eq!(f.kind, FailureKind::Conflict);
    }
}
