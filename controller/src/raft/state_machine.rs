//! The state machine: committed commands applied to [`ClusterState`] in memory, persisted to
//! RocksDB after every batch; openraft's [`RaftStateMachine`] and [`RaftSnapshotBuilder`].
//!
//! The decision is [`ClusterState::apply`] (pure); this file only carries it out: it keeps the
//! state behind a lock that [`Store::read`](super::Store::read) shares, writes the applied
//! state (last applied log id, membership, `ClusterState`) as one record so that a restart
//! resumes where it stopped even when the log before it was purged, and announces the applied
//! index on a watch channel. A snapshot is the encoded `ClusterState`; installing one replaces
//! the state.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError, StoredMembership,
};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use wharf_protocol::state::{ClusterState, Response};

use super::db::{self, storage_error, Db, CF_SM, KEY_APPLIED, KEY_SNAPSHOT};
use super::{RaftError, TypeConfig};

/// What the state machine has applied; persisted as one record under `sm/applied`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Applied {
    /// The last log entry applied.
    pub(super) last_applied: Option<LogId<u64>>,
    /// The last membership applied.
    pub(super) membership: StoredMembership<u64, BasicNode>,
    /// The cluster state after `last_applied`.
    pub(super) state: ClusterState,
}

/// A snapshot as stored under `sm/snapshot`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredSnapshot {
    pub(super) meta: SnapshotMeta<u64, BasicNode>,
    /// The encoded [`ClusterState`].
    pub(super) data: Vec<u8>,
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
}

impl StateMachine {
    /// Load the applied state persisted in `db` (empty for a new database); call once at open.
    pub(super) fn load(db: Arc<Db>) -> Result<StateMachine, RaftError> {
        let applied: Applied = db
            .get(CF_SM, KEY_APPLIED, "applied state")?
            .unwrap_or_default();
        let index = applied.last_applied.map_or(0, |l| l.index);
        tracing::debug!(index, path = %db.path().display(), "loaded raft state machine");
        Ok(StateMachine {
            db,
            applied: Arc::new(RwLock::new(applied)),
            watch: Arc::new(watch::Sender::new(index)),
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

    /// Apply `entries` in order to the in-memory state, then persist it (not fsynced: the
    /// log holds every entry until a later synced purge, which makes this write durable).
    fn apply_entries<I>(&self, entries: I) -> Result<Vec<Vec<Response>>, RaftError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>>,
    {
        let mut responses = Vec::new();
        let (index, record) = {
            let mut applied = write_applied(&self.applied);
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => vec![Ok(())],
                    EntryPayload::Normal(cmd) => applied.state.apply_entry(&cmd),
                    EntryPayload::Membership(m) => {
                        applied.membership = StoredMembership::new(Some(entry.log_id), m);
                        vec![Ok(())]
                    }
                };
                responses.push(response);
            }
            let index = applied.last_applied.map_or(0, |l| l.index);
            (index, db::encode(&*applied, "applied state")?)
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_SM), KEY_APPLIED, record);
        self.db.write(batch, false, "applied state")?;
        self.announce(index);
        Ok(responses)
    }

    /// Replace the state by a snapshot's and persist both; fsynced.
    fn install(&self, meta: &SnapshotMeta<u64, BasicNode>, data: Vec<u8>) -> Result<(), RaftError> {
        let state: ClusterState = db::decode(&data, "snapshot")?;
        let applied = Applied {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let cf = self.db.cf(CF_SM);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, KEY_APPLIED, db::encode(&applied, "applied state")?);
        batch.put_cf(cf, KEY_SNAPSHOT, db::encode(&stored, "snapshot")?);
        self.db.write(batch, true, "installed snapshot")?;
        let index = applied.last_applied.map_or(0, |l| l.index);
        *write_applied(&self.applied) = applied;
        self.announce(index);
        Ok(())
    }

    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig>>, RaftError> {
        let stored: Option<StoredSnapshot> = self.db.get(CF_SM, KEY_SNAPSHOT, "snapshot")?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
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
        SnapshotBuilder {
            db: Arc::clone(&self.db),
            applied: Arc::clone(&self.applied),
        }
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

/// Builds a snapshot of the applied state; openraft runs it in its own task.
#[derive(Debug)]
pub struct SnapshotBuilder {
    db: Arc<Db>,
    applied: SharedApplied,
}

impl SnapshotBuilder {
    fn build(&self) -> Result<Snapshot<TypeConfig>, RaftError> {
        let (meta, data) = {
            let applied = read_applied(&self.applied);
            let data = db::encode(&applied.state, "snapshot")?;
            let id = match applied.last_applied {
                Some(l) => format!("{}-{}", l.leader_id, l.index),
                None => "none".to_string(),
            };
            let meta = SnapshotMeta {
                last_log_id: applied.last_applied,
                last_membership: applied.membership.clone(),
                snapshot_id: format!("{id}-{:016x}", rand::random::<u64>()),
            };
            (meta, data)
        };
        let stored = StoredSnapshot { meta, data };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.db.cf(CF_SM),
            KEY_SNAPSHOT,
            db::encode(&stored, "snapshot")?,
        );
        // Synced: openraft purges the log up to this snapshot next.
        self.db.write(batch, true, "snapshot")?;
        tracing::debug!(meta = %stored.meta, "built raft snapshot");
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        self.build()
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))
    }
}
