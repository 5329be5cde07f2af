//! The state machine: committed commands applied to [`ClusterState`] in memory, persisted to
//! RocksDB after every batch; openraft's [`RaftStateMachine`] and [`RaftSnapshotBuilder`].
//!
//! The decision is [`ClusterState::apply`] (pure); this file only carries it out: it keeps the
//! state behind a lock that [`Store::read`](super::Store::read) shares, writes after each
//! batch the records of the entries it changed (records.rs) and the last applied log id, in
//! one write, so that a restart resumes where it stopped even when the log before it was
//! purged, and announces the applied index on a watch channel. A snapshot is the stream of
//! those records (snapshot.rs); installing one replaces them and the state.
//!
//! ```text
//!   entries ──apply_entry_noting──> ClusterState (memory) + touched keys
//!                                          │
//!          one WriteBatch: cf `state` records of the touched keys + sm/applied_log
//! ```

use std::collections::BTreeSet;
use std::io::Cursor;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

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

use super::db::{self, storage_error, Db, CF_SM, CF_STATE, KEY_APPLIED_LOG};
use super::records;
use super::snapshot::{self, DataWriter, StoredMeta, SNAPSHOT_RECORDS};
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
    /// Held while a snapshot is stored, so that a build and an install never write
    /// chunks of the same generation.
    snapshots: Arc<Mutex<()>>,
}

impl StateMachine {
    /// Load the applied state persisted in `db` (empty for a new database); call once at open.
    pub(super) fn load(db: Arc<Db>) -> Result<StateMachine, RaftError> {
        let log: AppliedLog = db
            .get(CF_SM, KEY_APPLIED_LOG, "applied log id")?
            .unwrap_or_default();
        let applied = Applied {
            last_applied: log.last_applied,
            membership: log.membership,
            state: records::load_state(&db)?,
        };
        let index = applied.last_applied.map_or(0, |l| l.index);
        tracing::debug!(index, path = %db.path().display(), "loaded raft state machine");
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            watch: Arc::new(watch::Sender::new(index)),
            snapshots: Arc::new(Mutex::new(())),
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

    /// Apply `entries` in order to the in-memory state, then persist the entries they
    /// changed (not fsynced: the log holds every entry until a later synced purge, which
    /// makes this write durable).
    pub(super) fn apply_entries<I>(&self, entries: I) -> Result<Vec<Vec<Response>>, RaftError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut responses = Vec::new();
        let mut batch = WriteBatch::default();
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
            put_applied_log(&self.db, &mut batch, &applied)?;
            applied.last_applied.map_or(0, |l| l.index)
        };
        self.db.write(batch, false, "applied state")?;
        self.announce(index);
        Ok(responses)
    }

    /// Replace the state by a snapshot's and persist both, in one fsynced write. Holds
    /// `data`, the write of its records and the new state at once (about three times the
    /// encoded state), and the old state until the swap.
    pub(super) fn install(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: Vec<u8>,
    ) -> Result<(), RaftError> {
        let cf = self.db.cf(CF_STATE);
        let mut batch = WriteBatch::default();
        records::delete_all(&mut batch, cf);
        let mut state = ClusterState::default();
        let data = match data.first() {
            Some(&SNAPSHOT_RECORDS) => {
                for record in snapshot::records(&data) {
                    let (k, v) = record?;
                    records::load_record(&mut state, k, v)?;
                    batch.put_cf(cf, k, v);
                }
                data
            }
            Some(&codec::FORMAT_BINCODE1) => {
                // A whole state, from a leader of format 7: stored as records.
                state = db::decode(&data, "snapshot")?;
                drop(data);
                let mut writer = DataWriter::new();
                records::for_each_record(&state, |k, v| {
                    batch.put_cf(cf, k, v);
                    writer.push(k, v)
                })?;
                writer.finish()
            }
            _ => {
                return Err(RaftError::SnapshotData {
                    offset: 0,
                    len: data.len(),
                })
            }
        };
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        put_applied_log(&self.db, &mut batch, &applied)?;
        {
            let _guard = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let old = snapshot::current_meta(&self.db)?;
            let (generation, chunks) = snapshot::write_chunks(&self.db, old.as_ref(), &data)?;
            let new = StoredMeta {
                meta: meta.clone(),
                generation,
                chunks,
            };
            snapshot::point_at(&self.db, &mut batch, &new, old.as_ref())?;
            self.db.write(batch, true, "installed snapshot")?;
        }
        let index = applied.last_applied.map_or(0, |l| l.index);
        *write_applied(&self.applied) = applied;
        self.announce(index);
        Ok(())
    }

    /// A builder of snapshots of this state machine.
    pub(super) fn snapshot_builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            db: Arc::clone(&self.db),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    pub(super) fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, RaftError> {
        Ok(
            snapshot::read_current(&self.db)?.map(|(meta, data)| Snapshot {
                meta,
                snapshot: Box::new(Cursor::new(data)),
            }),
        )
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

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        tracing::info!(%meta, "install raft snapshot");
        self.install(meta, snapshot.into_inner()).map_err(|e| {
            let subject = ErrorSubject::Snapshot(Some(meta.signature()));
            storage_error(subject, ErrorVerb::Write, e)
        })
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        self.current_snapshot()
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))
    }
}

/// Put into `batch` the last applied log id and membership of `applied`.
fn put_applied_log(db: &Db, batch: &mut WriteBatch, applied: &Applied) -> Result<(), RaftError> {
    let log = AppliedLog {
        last_applied: applied.last_applied,
        membership: applied.membership.clone(),
    };
    batch.put_cf(
        db.cf(CF_SM),
        KEY_APPLIED_LOG,
        db::encode(&log, "applied log id")?,
    );
    Ok(())
}

/// Builds a snapshot of the applied state from the database; openraft runs it in its own
/// task, beside the state machine, which goes on applying.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<Db>,
    snapshots: Arc<Mutex<()>>,
}

impl SnapshotBuilder {
    /// About how many bytes the state's records take (RocksDB's estimate of the live data
    /// of cf `state` plus its memtables; 0 when it has none); the records' framing adds 8
    /// bytes each.
    fn size_hint(&self) -> usize {
        let cf = self.db.cf(CF_STATE);
        let property = |name: &str| {
            self.db
                .rocks()
                .property_int_value_cf(cf, name)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        let keys = property("rocksdb.estimate-num-keys");
        let bytes = property("rocksdb.estimate-live-data-size")
            + property("rocksdb.cur-size-all-mem-tables")
            + 8 * keys;
        usize::try_from(bytes).unwrap_or(0)
    }

    /// Stream the state records of a consistent view of the database into snapshot data
    /// and store it. Holds the encoded state once (the data) besides the state in memory,
    /// which it does not lock.
    pub(super) fn build(&self) -> Result<Snapshot<TypeConfig>, RaftError> {
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
        let mut writer = DataWriter::with_capacity(self.size_hint());
        for item in view.iterator_cf(self.db.cf(CF_STATE), rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(|source| RaftError::Read {
                what: "state record",
                source,
            })?;
            writer.push(&k, &v)?;
        }
        drop(view);
        let data = writer.finish();
        let id = match log.last_applied {
            Some(l) => format!("{}-{}", l.leader_id, l.index),
            None => "none".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: log.last_applied,
            last_membership: log.membership,
            snapshot_id: format!("{id}-{:016x}", rand::random::<u64>()),
        };
        {
            let _guard = self
                .snapshots
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let old = snapshot::current_meta(&self.db)?;
            // An install may have stored a newer one meanwhile: keep it.
            if old
                .as_ref()
                .is_none_or(|o| o.meta.last_log_id <= meta.last_log_id)
            {
                let (generation, chunks) = snapshot::write_chunks(&self.db, old.as_ref(), &data)?;
                let new = StoredMeta {
                    meta: meta.clone(),
                    generation,
                    chunks,
                };
                let mut batch = WriteBatch::default();
                snapshot::point_at(&self.db, &mut batch, &new, old.as_ref())?;
                // Synced: openraft purges the log up to this snapshot next.
                self.db.write(batch, true, "snapshot")?;
            }
        }
        tracing::debug!(%meta, bytes = data.len(), "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.build()
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
    }
}
