//! Image requests: archives in and out, commits, imports, a container's changes, layer
//! facts and the collection of unused layers.
//!
//! The store's layer lock never leaves this file's calls: it is held shared while a call
//! puts layers in place and leases them, and exclusively while a collection decides and
//! removes; what outlives a call is the lease (see [`crate::image::lease`]).
//!
//! ```text
//!  Bytes items ─► feed ─► Upload (Read) ─► store (spawn_blocking) ─► lease ─► answer
//!  store ─► ChunkWriter (Write) ─► Bytes items           (save, export)
//! ```

use super::ConnId;
use crate::agent::Agent;
use crate::image::{ImageStore, LoadError, RwLayerError, SaveError, StoreError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use tokio::sync::{mpsc, OwnedRwLockReadGuard};
use wharf_link::{ItemReceiver, ItemSender, ServerCall};
use wharf_protocol::agent::image::{ImageRequest, ImageResponse};
use wharf_protocol::agent::{AgentFailure, AgentResponse, FailureKind};
use wharf_protocol::wire::{StreamItem, ITEM_BYTES};
use wharf_protocol::{ChainId, DiffId};

fn answer(r: ImageResponse) -> Result<AgentResponse, AgentFailure> {
    Ok(AgentResponse::Image(r))
}

fn internal(message: impl std::fmt::Display) -> AgentFailure {
    AgentFailure::new(FailureKind::Internal, message.to_string())
}

fn join_failure(e: tokio::task::JoinError) -> AgentFailure {
    internal(format!("agent task failed: {e}"))
}

fn store_failure(e: &StoreError) -> AgentFailure {
    let kind = match e {
        StoreError::InvalidContainerId(_) => FailureKind::InvalidInput,
        StoreError::NoSuchRwLayer(_) | StoreError::MissingLayer(_) => FailureKind::NotFound,
        StoreError::Lease(_) => FailureKind::InvalidInput,
        _ => FailureKind::Internal,
    };
    AgentFailure::new(kind, e.to_string())
}

fn rw_failure(e: &RwLayerError) -> AgentFailure {
    match e {
        RwLayerError::Store(s) => store_failure(s),
        _ => internal(e),
    }
}

/// Carry out one image request for the controller of connection `conn`.
pub(super) async fn handle(
    agent: &Agent,
    conn: ConnId,
    request: ImageRequest,
    mut call: ServerCall,
) {
    use ImageRequest as R;
    let store = agent.image_store().clone();
    let result = match request {
        R::Load => load(&store, conn, &mut call.input).await,
        R::Import { parent } => import(&store, conn, parent, &mut call.input).await,
        R::Save { images } => {
            for img in &images {
                let chain = ChainId::chain(&img.diff_ids);
                if let Some((d, _)) = img
                    .diff_ids
                    .iter()
                    .zip(&chain)
                    .find(|(d, c)| !store.has_layer_tar(c, d))
                {
                    let message = format!("layer {d} has no stored tar on this host");
                    return call
                        .respond_with(Err(AgentFailure::new(FailureKind::NotFound, message)));
                }
            }
            call.respond(AgentResponse::Done);
            let lock = store.layer_lock();
            return send_blocking(call.output, move |w| {
                // Only opening the layer tars needs the lock; a slow reader must not hold
                // off a collection (an unlinked tar stays readable through its open file).
                let prepared = {
                    let _held = lock.blocking_read();
                    store
                        .prepare_save(&images)
                        .map_err(|e: SaveError| e.to_string())?
                };
                prepared.write(w).map(|_| ()).map_err(|e| e.to_string())
            })
            .await;
        }
        R::Export { id } => match store.rw_mount_spec(id.as_str(), &[]) {
            Err(e) => Err(store_failure(&e)),
            Ok(_) => {
                call.respond(AgentResponse::Done);
                return send_blocking(call.output, move |w| {
                    store
                        .export_rw(id.as_str(), w)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                })
                .await;
            }
        },
        R::Commit { id, parent } => {
            let _held = store.layer_lock().read_owned().await;
            let s = store.clone();
            let p = parent.clone();
            match tokio::task::spawn_blocking(move || s.commit_rw_layer(id.as_str(), &p)).await {
                Err(e) => Err(join_failure(e)),
                Ok(Err(e)) => Err(rw_failure(&e)),
                Ok(Ok(diff_id)) => {
                    let mut chain = parent;
                    chain.extend(diff_id);
                    let size = store.layers_size(&chain);
                    let lease = store.leases().grant(conn, vec![chain]);
                    answer(ImageResponse::Committed {
                        diff_id,
                        size,
                        lease,
                    })
                }
            }
        }
        R::Changes { id } => {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.rw_changes(id.as_str())).await {
                Err(e) => Err(join_failure(e)),
                Ok(Err(e)) => Err(rw_failure(&e)),
                Ok(Ok(changes)) => answer(ImageResponse::Changes(changes)),
            }
        }
        R::LayerSizes { diff_ids } => {
            let sizes = (0..diff_ids.len())
                .map(|i| {
                    store
                        .layers_size(&diff_ids[..=i])
                        .saturating_sub(store.layers_size(&diff_ids[..i]))
                })
                .collect();
            answer(ImageResponse::Sizes(sizes))
        }
        R::HasLayers { diff_ids } => answer(ImageResponse::Present(store.has_layers(&diff_ids))),
        R::Release { lease } => {
            store.leases().release(lease);
            Ok(AgentResponse::Done)
        }
        R::BeginCollect => answer(ImageResponse::Ticket(store.leases().begin(conn))),
        R::Collect { ticket, in_use } => {
            let _held = store.layer_lock().write_owned().await;
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.collect(ticket, in_use)).await {
                Err(e) => Err(join_failure(e)),
                Ok(Err(e)) => Err(store_failure(&e)),
                Ok(Ok(c)) => answer(ImageResponse::Collected(c)),
            }
        }
        R::GraphDriver { diff_ids } => {
            answer(ImageResponse::GraphDriver(graph_driver(&store, &diff_ids)))
        }
    };
    call.respond_with(result);
}

/// `GraphDriver.Data` as moby shows it: the top layer's dirs and the diff dirs below it,
/// uppermost first; empty for a chain without layers.
fn graph_driver(store: &ImageStore, diff_ids: &[DiffId]) -> BTreeMap<String, String> {
    let layout = store.layout();
    let chain = ChainId::chain(diff_ids);
    let mut data = BTreeMap::new();
    let Some((top, below)) = chain.split_last() else {
        return data;
    };
    let dir = layout.layer_dir(top);
    for (k, sub) in [
        ("MergedDir", "merged"),
        ("UpperDir", "diff"),
        ("WorkDir", "work"),
    ] {
        data.insert(k.to_string(), dir.join(sub).display().to_string());
    }
    if !below.is_empty() {
        let lower: Vec<String> = below
            .iter()
            .rev()
            .map(|c| layout.layer_dir(c).join("diff").display().to_string())
            .collect();
        data.insert("LowerDir".into(), lower.join(":"));
    }
    data
}

/// `docker load`: read the upload while the store applies it, take the layer lock when it
/// has ended (a stalled upload holds nothing), then lease what was loaded.
async fn load(
    store: &ImageStore,
    conn: ConnId,
    input: &mut ItemReceiver,
) -> Result<AgentResponse, AgentFailure> {
    let (tx, rx) = mpsc::channel(16);
    let s = store.clone();
    let job = tokio::task::spawn_blocking(move || s.load(Upload::new(rx)));
    let held = feed(input, tx, Some(store)).await;
    let loaded = job.await.map_err(join_failure)?;
    let images = loaded.map_err(|e: LoadError| {
        AgentFailure::new(
            FailureKind::InvalidInput,
            crate::agent::AgentError::from(e).to_string(),
        )
    })?;
    let lease = store
        .leases()
        .grant(conn, images.iter().map(|i| i.diff_ids.clone()).collect());
    drop(held);
    answer(ImageResponse::Loaded { images, lease })
}

/// `docker import`: spool the upload without a lock, then put the layer in place and lease
/// it under the layer lock.
async fn import(
    store: &ImageStore,
    conn: ConnId,
    parent: Vec<DiffId>,
    input: &mut ItemReceiver,
) -> Result<AgentResponse, AgentFailure> {
    let (tx, rx) = mpsc::channel(16);
    let s = store.clone();
    let job = tokio::task::spawn_blocking(move || s.spool_import(Upload::new(rx)));
    feed(input, tx, None).await;
    let invalid = |e: RwLayerError| AgentFailure::new(FailureKind::InvalidInput, e.to_string());
    let spooled = job.await.map_err(join_failure)?.map_err(invalid)?;
    let diff_id = spooled.diff_id();
    let _held = store.layer_lock().read_owned().await;
    let s = store.clone();
    let p = parent.clone();
    tokio::task::spawn_blocking(move || s.add_spooled_layer(&p, &spooled))
        .await
        .map_err(join_failure)?
        .map_err(invalid)?;
    let mut chain = parent;
    chain.push(diff_id);
    let size = store.layers_size(&chain);
    let lease = store.leases().grant(conn, vec![chain]);
    answer(ImageResponse::Imported {
        diff_id,
        size,
        lease,
    })
}

/// What [`feed`] hands the blocking reader.
enum Chunk {
    Data(Bytes),
    End,
}

/// Pass the upload's bytes to `tx`. At its end, with `lock_store`, take that store's layer
/// lock shared before the reader sees the end, and return the hold.
async fn feed(
    input: &mut ItemReceiver,
    tx: mpsc::Sender<io::Result<Chunk>>,
    lock_store: Option<&ImageStore>,
) -> Option<OwnedRwLockReadGuard<()>> {
    loop {
        match input.recv().await {
            Ok(Some(StreamItem::Bytes(b))) => {
                if tx.send(Ok(Chunk::Data(b))).await.is_err() {
                    // The reader stopped (a bad archive); its error is the answer.
                    return None;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                let held = match lock_store {
                    Some(s) => Some(s.layer_lock().read_owned().await),
                    None => None,
                };
                let _ = tx.send(Ok(Chunk::End)).await;
                return held;
            }
            Err(f) => {
                let _ = tx.send(Err(io::Error::other(f.message))).await;
                return None;
            }
        }
    }
}

/// A `Read` over an upload; a channel that closes before the upload's end is an error, so
/// a cut body never looks complete.
struct Upload {
    rx: mpsc::Receiver<io::Result<Chunk>>,
    current: Bytes,
    ended: bool,
}

impl Upload {
    fn new(rx: mpsc::Receiver<io::Result<Chunk>>) -> Upload {
        Upload {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for Upload {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Chunk::Data(d))) => self.current = d,
                Some(Ok(Chunk::End)) => self.ended = true,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload was cut short",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A `Write` that hands its bytes to async code in item-sized chunks; blocks when the
/// controller lags.
struct ChunkWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(ITEM_BYTES));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the controller went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = ITEM_BYTES - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= ITEM_BYTES {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Run `f` on a blocking thread with a writer whose bytes go out as `Bytes` items; a
/// failure aborts the stream (the controller never sees a short archive as complete).
async fn send_blocking<F>(mut out: ItemSender, f: F)
where
    F: FnOnce(&mut ChunkWriter) -> Result<(), String> + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel(4);
    let job = tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(ITEM_BYTES),
        };
        f(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()))
    });
    while let Some(chunk) = rx.recv().await {
        if out.send(StreamItem::Bytes(chunk.into())).await.is_err() {
            // The controller went away: the writer fails on its next chunk.
            drop(rx);
            let _ = job.await;
            return;
        }
    }
    match job.await {
        Ok(Ok(())) => out.end(),
        Ok(Err(m)) => out.abort(internal(m)),
        Err(e) => out.abort(join_failure(e)),
    }
}
