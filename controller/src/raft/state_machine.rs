//! The state machine: committed commands applied to [`ClusterState`] in memory, persisted to
//! RocksDB after every batch; openraft's [`RaftStateMachine`] and [`RaftSnapshotBuilder`].
//!
//! The decision is [`ClusterState::apply`] (pure); this file only carries it out: it keeps the
//! state behind a lock that [`Store::read`](super::Store::read) shares, writes after each
//! batch the records of the entries it changed (records.rs) and the last applied log id, in
//! one write, so that a restart resumes where it stopped even when the log before it was
//! purged, and announces the applied index on a watch channel. A snapshot is a file of
//! those records (snapshot.rs); installing one replaces them and the state.
//!
//! ```text
//!   entries ──apply_entry_noting──> ClusterState (memory) + touched keys
//!                                          │
//!          one WriteBatch: cf `state` records of the touched keys + sm/applied_log
//! ```

use std::collections::BTreeSet;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use wharf_protocol::codec;
use wharf_protocol::state::{ClusterState, Response};
use wharf_protocol::state_key::StateKey;

use super::db::{self, storage_error, Db, CF_SM, CF_STATE, KEY_APPLIED_LOG};
use super::records;
use super::snapshot::{
    self, FileWriter, RecordReader, SnapshotFile, StoredMeta, TempFile, SNAPSHOT_RECORDS,
};
use super::{RaftError, TypeConfig};

/// What the state machine has applied, in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Applied {
    /// The last log entry applied.
    pub(super) last_applied: Option<LogId<u64>>,
    /// The last membership applied.
    pub(super) membership: StoredMembership<u64, BasicNode>,
    /// The cluster state after `last_applied`.
    pub(super) state: ClusterState,
}

/// Where the state machine is in the log; stored under `sm/applied_log`, in the same
/// write as the state records it goes with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct AppliedLog {
    /// The last log entry applied.
    pub(super) last_applied: Option<LogId<u64>>,
    /// The last membership applied.
    pub(super) membership: StoredMembership<u64, BasicNode>,
}

/// The last snapshot this controller built ([`Store::snapshot`](super::Store::snapshot),
/// metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Snapshots built since the store was opened.
    pub builds: u64,
    /// The last log index the last one covers (0: none built yet).
    pub index: u64,
    /// Its size in bytes.
    pub bytes: u64,
    /// How long building it took, in milliseconds.
    pub millis: u64,
}

/// The applied state shared between the state machine and readers.
pub(super) type SharedApplied = Arc<RwLock<Applied>>;

/// Take the read lock, ignoring poison: only a writer can poison it, and writers run only
/// [`ClusterState::apply`] (pure, no panics) and assignments while holding it.
pub(super) fn read_applied(applied: &RwLock<Applied>) -> RwLockReadGuard<'_, Applied> {
    applied.read().unwrap_or_else(PoisonError::into_inner)
}

fn write_applied(applied: &RwLock<Applied>) -> RwLockWriteGuard<'_, Applied> {
    applied.write().unwrap_or_else(PoisonError::into_inner)
}

/// The Raft state machine over RocksDB; owned by openraft once the node is built.
#[derive(Clone, Debug)]
pub struct StateMachine {
    db: Arc<Db>,
    applied: SharedApplied,
    watch: Arc<watch::Sender<u64>>,
    /// Counts the applied batches that changed an image or a layer record, and installed
    /// snapshots: what a node's layer tracking looks at again (most entries are
    /// containers', and 10,000 nodes' trackers re-reading the layers after each cost the
    /// leader a fifth of its time).
    layers: Arc<watch::Sender<u64>>,
    /// Held while a snapshot file is made current or opened, so that a build and an
    /// install never take the same generation and no file is deleted as it is opened.
    snapshots: Arc<Mutex<()>>,
    /// What the last snapshot built was.
    stats: Arc<watch::Sender<SnapshotStats>>,
}

impl StateMachine {
    /// Load the applied state persisted in `db` (empty for a new database), after finishing
    /// the install of a snapshot a stop interrupted, and delete the snapshot files other
    /// than the current one; call once at open.
    pub(super) fn load(db: Arc<Db>) -> Result<StateMachine, RaftError> {
        if let Some(new) = snapshot::installing(&db)? {
            tracing::warn!(snapshot = %new.meta, "finishing the install of a raft snapshot that a stop interrupted");
            replace_records(&db, &new)?;
        }
        let log: AppliedLog = db
            .get(CF_SM, KEY_APPLIED_LOG, "applied log id")?
            .unwrap_or_default();
        let applied = Applied {
            last_applied: log.last_applied,
            membership: log.membership,
            state: records::load_state(&db)?,
        };
        snapshot::clean(&db, snapshot::current_meta(&db)?.as_ref())?;
        let index = applied.last_applied.map_or(0, |l| l.index);
        tracing::debug!(index, path = %db.path().display(), "loaded raft state machine");
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            watch: Arc::new(watch::Sender::new(index)),
            layers: Arc::new(watch::Sender::new(0)),
            snapshots: Arc::new(Mutex::new(())),
            stats: Arc::new(watch::Sender::new(SnapshotStats::default())),
        })
    }

    /// The state that readers share.
    pub(super) fn applied(&self) -> SharedApplied {
        Arc::clone(&self.applied)
    }

    /// The channel that announces the last applied index.
    pub(super) fn watch(&self) -> Arc<watch::Sender<u64>> {
        Arc::clone(&self.watch)
    }

    /// The channel that announces changes of the image and layer records.
    pub(super) fn layers_watch(&self) -> Arc<watch::Sender<u64>> {
        Arc::clone(&self.layers)
    }

    /// Apply `entries` in order to the in-memory state, then persist the entries they
    /// changed (not fsynced: the log holds every entry until a later synced purge, which
    /// makes this write durable).
    pub(super) fn apply_entries<I>(&self, entries: I) -> Result<Vec<Vec<Response>>, RaftError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut responses = Vec::new();
        let mut batch = WriteBatch::default();
        let layers_changed;
        let index = {
            let mut applied = write_applied(&self.applied);
            let mut touched = BTreeSet::new();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => vec![Ok(())],
                    EntryPayload::Normal(cmd) => {
                        applied.state.apply_entry_noting(&cmd, &mut touched)
                    }
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        vec![Ok(())]
                    }
                };
                responses.push(response);
            }
            records::put_touched(&mut batch, self.db.cf(CF_STATE), &applied.state, &touched)?;
            layers_changed = touched
                .iter()
                .any(|k| matches!(k, StateKey::Image(_) | StateKey::Layer(_)));
            let log = AppliedLog {
                last_applied: applied.last_applied,
                membership: applied.membership.clone(),
            };
            put_applied_log(&self.db, &mut batch, &log)?;
            applied.last_applied.map_or(0, |l| l.index)
        };
        self.db.write(batch, false, "applied state")?;
        if layers_changed {
            self.layers.send_modify(|n| *n += 1);
        }
        self.announce(index);
        Ok(responses)
    }

    /// Replace the state by the snapshot whose data is `file` (at `path`) and persist both;
    /// a refused snapshot (bad or truncated data) changes nothing. A file
    /// [`snapshot::begin_receiving`] made becomes the snapshot's file (or is deleted if
    /// refused); any other is copied.
    ///
    /// The data is read twice through a buffer, never whole: once into the new state,
    /// which checks every record, then, once the file is the snapshot's, into the
    /// database in bounded batches ([`replace_records`]). Holds the new state (and the old
    /// one until the swap) and one batch.
    pub(super) fn install(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        mut file: std::fs::File,
        path: &Path,
    ) -> Result<(), RaftError> {
        // Deleted when dropped, unless it becomes the snapshot.
        let mut received =
            snapshot::is_received(&self.db, path).then(|| TempFile::adopt(path.to_path_buf()));
        let read_error = |source| RaftError::SnapshotFile {
            action: "read",
            path: path.to_path_buf(),
            source,
        };
        let len = file.metadata().map_err(read_error)?.len();
        file.seek(SeekFrom::Start(0)).map_err(read_error)?;
        let mut state = ClusterState::default();
        let mut reader = BufReader::with_capacity(snapshot::BUF, &file);
        let mut header = [0u8; 1];
        if len == 0 || reader.read_exact(&mut header).is_err() {
            return Err(RaftError::SnapshotData { offset: 0, len });
        }
        let (kept, bytes) = match header[0] {
            SNAPSHOT_RECORDS => {
                let mut records = RecordReader::new(&mut reader, len);
                while let Some((k, v)) = records.next_record()? {
                    records::load_record(&mut state, k, v)?;
                }
                drop(reader);
                match received.take() {
                    Some(temp) => {
                        file.sync_all().map_err(|source| RaftError::SnapshotFile {
                            action: "sync",
                            path: path.to_path_buf(),
                            source,
                        })?;
                        (temp, len)
                    }
                    None => copy_to_temp(&self.db, &mut file, path)?,
                }
            }
            codec::FORMAT_BINCODE1 => {
                // A whole state, from a leader of format 7: read whole, kept as records.
                let mut data = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
                data.push(header[0]);
                reader.read_to_end(&mut data).map_err(read_error)?;
                state = db::decode(&data, "snapshot")?;
                drop(data);
                let mut writer = FileWriter::create(&self.db)?;
                records::for_each_record(&state, |k, v| writer.push(k, v))?;
                writer.finish()?
            }
            _ => return Err(RaftError::SnapshotData { offset: 0, len }),
        };
        drop(file);
        {
            let _guard = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let old = snapshot::current_meta(&self.db)?;
            let new = StoredMeta {
                meta: meta.clone(),
                generation: snapshot::next_generation(old.as_ref()),
                bytes,
            };
            let file = snapshot::persist(&self.db, kept, new.generation)?;
            if let Err(e) = replace_records(&self.db, &new) {
                // Left to the next open when the records' replacement began (it finishes
                // it from the file); else named by nothing, and the old state stays.
                if snapshot::installing(&self.db).ok().flatten().is_none() {
                    let _ = std::fs::remove_file(&file);
                }
                return Err(e);
            }
            snapshot::remove_replaced(&self.db, old.as_ref(), &new);
        }
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        let index = applied.last_applied.map_or(0, |l| l.index);
        *write_applied(&self.applied) = applied;
        self.layers.send_modify(|n| *n += 1);
        self.announce(index);
        Ok(())
    }

    /// [`StateMachine::install`] of the snapshot file at `path`.
    #[cfg(test)]
    pub(super) fn install_file(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        path: &Path,
    ) -> Result<(), RaftError> {
        let file = std::fs::File::open(path).map_err(|source| RaftError::SnapshotFile {
            action: "open",
            path: path.to_path_buf(),
            source,
        })?;
        self.install(meta, file, path)
    }

    /// A builder of snapshots of this state machine.
    pub(super) fn snapshot_builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: Arc::clone(&self.db),
            snapshots: Arc::clone(&self.snapshots),
            stats: Arc::clone(&self.stats),
        }
    }

    /// The channel that tells what the last snapshot built was.
    pub(super) fn snapshot_stats(&self) -> Arc<watch::Sender<SnapshotStats>> {
        Arc::clone(&self.stats)
    }

    /// The current snapshot, its file open at the start; when its file is missing (deleted
    /// by hand), a new snapshot built now.
    pub(super) fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, RaftError> {
        {
            let _guard = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let Some(stored) = snapshot::current_meta(&self.db)? else {
                return Ok(None);
            };
            let path = snapshot::path_of(&self.db, stored.generation);
            match SnapshotFile::open(&path) {
                Ok(file) => {
                    return Ok(Some(Snapshot {
                        meta: stored.meta,
                        snapshot: Box::new(file),
                    }))
                }
                Err(RaftError::SnapshotFile { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    tracing::warn!(path = %path.display(), "the current raft snapshot's file is missing: building a new one");
                }
                Err(e) => return Err(e),
            }
        }
        self.snapshot_builder().build().map(Some)
    }

    fn announce(&self, index: u64) {
        self.watch.send_if_modified(|last| {
            let changed = *last != index;
            *last = index;
            changed
        });
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let applied = read_applied(&self.applied);
        Ok((applied.last_applied, applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Response>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.apply_entries(entries)
            .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Write, e))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.snapshot_builder()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError<u64>> {
        snapshot::begin_receiving(&self.db)
            .map(Box::new)
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError<u64>> {
        tracing::info!(%meta, "install raft snapshot");
        let (file, path) = snapshot.into_std().await;
        let (sm, owned) = (self.clone(), meta.clone());
        // Reading and writing the whole state: off the runtime's worker threads.
        tokio::task::spawn_blocking(move || sm.install(&owned, file, &path))
            .await
            .unwrap_or_else(|e| Err(RaftError::SnapshotTask(e)))
            .map_err(|e| {
                let subject = ErrorSubject::Snapshot(Some(meta.signature()));
                storage_error(subject, ErrorVerb::Write, e)
            })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let sm = self.clone();
        // It waits for a build in progress, and builds one if the file is missing.
        tokio::task::spawn_blocking(move || sm.current_snapshot())
            .await
            .unwrap_or_else(|e| Err(RaftError::SnapshotTask(e)))
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
    }
}

/// Put into `batch` the last applied log id and membership `log`.
fn put_applied_log(db: &Db, batch: &mut WriteBatch, log: &AppliedLog) -> Result<(), RaftError> {
    batch.put_cf(
        db.cf(CF_SM),
        KEY_APPLIED_LOG,
        db::encode(log, "applied log id")?,
    );
    Ok(())
}

/// Builds a snapshot of the applied state from the database; openraft runs it in its own
/// task, beside the state machine, which goes on applying.
#[derive(Clone, Debug)]
pub struct SnapshotBuilder {
    db: Arc<Db>,
    snapshots: Arc<Mutex<()>>,
    stats: Arc<watch::Sender<SnapshotStats>>,
}

impl SnapshotBuilder {
    /// Stream the state records of a consistent view of the database into a new snapshot
    /// file and make it the current snapshot; the state in memory is neither locked nor
    /// copied (applies go on), and the data goes through a [`snapshot::BUF`] buffer. An
    /// install waits for it, and one that ran before it made a newer snapshot current: that
    /// one is the answer.
    pub(super) fn build(&self) -> Result<Snapshot<TypeConfig>, RaftError> {
        let started = Instant::now();
        // Held throughout: an install replaces the records in several writes, and a view
        // taken between them would hold some of each state.
        let _guard = self
            .snapshots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let view = self.db.rocks().snapshot();
        let log: AppliedLog =
            match view
                .get_cf(self.db.cf(CF_SM), KEY_APPLIED_LOG)
                .map_err(|source| RaftError::Read {
                    what: "applied log id",
                    source,
                })? {
                Some(bytes) => db::decode(&bytes, "applied log id")?,
                None => AppliedLog::default(),
            };
        let mut writer = FileWriter::create(&self.db)?;
        for item in view.iterator_cf(self.db.cf(CF_STATE), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|source| RaftError::Read {
                what: "state record",
                source,
            })?;
            writer.push(&k, &v)?;
        }
        drop(view);
        let (temp, bytes) = writer.finish()?;
        let id = match log.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "none".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: log.last_applied,
            last_membership: log.membership,
            snapshot_id: format!("{id}-{:016x}", rand::random::<u64>()),
        };
        let (meta, file, bytes) = {
            let old = snapshot::current_meta(&self.db)?;
            match old {
                // An install stored a newer one meanwhile: keep it.
                Some(o) if o.meta.last_log_id > meta.last_log_id => {
                    drop(temp);
                    let file = SnapshotFile::open(&snapshot::path_of(&self.db, o.generation))?;
                    (o.meta, file, o.bytes)
                }
                _ => {
                    let new = StoredMeta {
                        meta,
                        generation: snapshot::next_generation(old.as_ref()),
                        bytes,
                    };
                    let path = snapshot::persist(&self.db, temp, new.generation)?;
                    let mut batch = WriteBatch::default();
                    snapshot::point_at(&self.db, &mut batch, &new)?;
                    // Synced: openraft purges the log up to this snapshot next.
                    if let Err(e) = self.db.write(batch, true, "snapshot") {
                        let _ = std::fs::remove_file(&path);
                        return Err(e);
                    }
                    snapshot::remove_replaced(&self.db, old.as_ref(), &new);
                    (new.meta, SnapshotFile::open(&path)?, bytes)
                }
            }
        };
        let millis = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.stats.send_modify(|s| {
            *s = SnapshotStats {
                builds: s.builds + 1,
                index,
                bytes,
                millis,
            }
        });
        tracing::info!(%meta, bytes, millis, "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let builder = self.clone();
        // Reading the whole state and writing the file: off the runtime's worker threads.
        tokio::task::spawn_blocking(move || builder.build())
            .await
            .unwrap_or_else(|e| Err(RaftError::SnapshotTask(e)))
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
    }
}

/// Bytes of records written to the database at a time while a snapshot replaces the
/// state: one memtable's worth (db.rs), so that neither the batch nor RocksDB's memtables
/// hold the whole state.
const INSTALL_BATCH: usize = 4 << 20;

/// Replace the records of cf `state` by those of the snapshot file of `new` (complete and
/// fsynced) and make it the current snapshot, its last log id and membership the applied
/// ones.
///
/// The records go in batches of [`INSTALL_BATCH`] bytes, between two synced writes: the
/// first records `new` as the snapshot being installed (`sm/installing`) and deletes the
/// old records; the last writes the applied log id and the current snapshot and deletes
/// the mark. A stop in between leaves the mark, and [`StateMachine::load`] runs this again
/// before anything reads the records: a restart sees the old state or the new one.
fn replace_records(db: &Db, new: &StoredMeta) -> Result<(), RaftError> {
    let cf = db.cf(CF_STATE);
    let mut batch = WriteBatch::default();
    snapshot::mark_installing(db, &mut batch, new)?;
    records::delete_all(&mut batch, cf);
    db.write(batch, true, "snapshot install mark")?;

    let path = snapshot::path_of(db, new.generation);
    let file = std::fs::File::open(&path).map_err(|source| RaftError::SnapshotFile {
        action: "open",
        path: path.clone(),
        source,
    })?;
    let mut reader = BufReader::with_capacity(snapshot::BUF, file);
    let mut header = [0u8; 1];
    if reader.read_exact(&mut header).is_err() || header[0] != SNAPSHOT_RECORDS {
        return Err(RaftError::SnapshotData {
            offset: 0,
            len: new.bytes,
        });
    }
    let mut records = RecordReader::new(reader, new.bytes);
    let mut batch = WriteBatch::default();
    while let Some((k, v)) = records.next_record()? {
        batch.put_cf(cf, k, v);
        if batch.size_in_bytes() >= INSTALL_BATCH {
            // Not synced: the last write below is, and makes these durable with it.
            db.write(std::mem::take(&mut batch), false, "snapshot records")?;
        }
    }
    let log = AppliedLog {
        last_applied: new.meta.last_log_id,
        membership: new.meta.last_membership.clone(),
    };
    put_applied_log(db, &mut batch, &log)?;
    snapshot::point_at(db, &mut batch, new)?;
    snapshot::unmark_installing(db, &mut batch);
    db.write(batch, true, "installed snapshot")
}

/// Copy the snapshot data of `file` (at `path`, not ours to keep) into a temporary file of
/// `db`'s snapshot directory, [`snapshot::BUF`] at a time; the file and its length.
fn copy_to_temp(
    db: &Db,
    file: &mut std::fs::File,
    path: &Path,
) -> Result<(TempFile, u64), RaftError> {
    let read_error = |source| RaftError::SnapshotFile {
        action: "read",
        path: path.to_path_buf(),
        source,
    };
    file.seek(SeekFrom::Start(0)).map_err(read_error)?;
    let mut writer = FileWriter::create_raw(db)?;
    let mut buf = vec![0u8; snapshot::BUF];
    loop {
        let n = file.read(&mut buf).map_err(read_error)?;
        if n == 0 {
            break;
        }
        writer.write_raw(&buf[..n])?;
    }
    writer.finish()
}
