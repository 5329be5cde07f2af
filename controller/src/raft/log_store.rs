//! The Raft log and vote in RocksDB: openraft's [`RaftLogStorage`] and [`RaftLogReader`].
//!
//! Entries live in column family `logs` under their big-endian index; the vote, the committed
//! log id and the last purged log id live in `meta`. Every write that Raft's safety depends on
//! (vote, append, truncate, purge) is fsynced before openraft hears it is done.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::db::{
    self, storage_error, Db, CF_LOGS, CF_META, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE,
};
use super::{RaftError, TypeConfig};

/// The durable Raft log; cheap to clone, and each clone is also a log reader.
#[derive(Clone, Debug)]
pub struct LogStore {
    db: Arc<Db>,
}

impl LogStore {
    /// A log store over `db`; call once when building the Raft node.
    pub(super) fn new(db: Arc<Db>) -> LogStore {
        LogStore { db }
    }

    /// Entries with index in `range`, in order; stops at the first missing index.
    pub(super) fn read_range<RB: RangeBounds<u64>>(
        &self,
        range: &RB,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let from = db::log_key(start);
        let iter = self.db.rocks().iterator_cf(
            self.db.cf(CF_LOGS),
            IteratorMode::From(&from, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|source| RaftError::Read {
                what: "log entry",
                source,
            })?;
            let index = db::log_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry<TypeConfig> = db::decode(&value, "log entry")?;
            if entry.log_id.index != index {
                return Err(RaftError::LogIndex {
                    key: index,
                    found: entry.log_id.index,
                });
            }
            out.push(entry);
        }
        Ok(out)
    }

    /// Log id of the last entry present, if any.
    fn last_entry_id(&self) -> Result<Option<LogId<u64>>, RaftError> {
        let mut iter = self
            .db
            .rocks()
            .iterator_cf(self.db.cf(CF_LOGS), IteratorMode::End);
        let Some(item) = iter.next() else {
            return Ok(None);
        };
        let (key, value) = item.map_err(|source| RaftError::Read {
            what: "last log entry",
            source,
        })?;
        let index = db::log_index(&key)?;
        let entry: Entry<TypeConfig> = db::decode(&value, "last log entry")?;
        if entry.log_id.index != index {
            return Err(RaftError::LogIndex {
                key: index,
                found: entry.log_id.index,
            });
        }
        Ok(Some(entry.log_id))
    }

    fn put_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        sync: bool,
        what: &'static str,
    ) -> Result<(), RaftError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.db.cf(CF_META), key, db::encode(value, what)?);
        self.db.write(batch, sync, what)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.read_range(&range)
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let read = |e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, e);
        let last_purged_log_id: Option<LogId<u64>> = self
            .db
            .get(CF_META, KEY_LAST_PURGED, "last purged log id")
            .map_err(read)?;
        let last_log_id = self.last_entry_id().map_err(read)?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        self.put_meta(KEY_VOTE, vote, true, "vote")
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        self.db
            .get(CF_META, KEY_VOTE, "vote")
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Read, e))
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        // Not fsynced: a lost committed id only means re-learning it from the leader.
        self.put_meta(KEY_COMMITTED, &committed, false, "committed log id")
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let stored: Option<Option<LogId<u64>>> = self
            .db
            .get(CF_META, KEY_COMMITTED, "committed log id")
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, e))?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = |e| storage_error(ErrorSubject::Logs, ErrorVerb::Write, e);
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOGS);
        for entry in entries {
            let value = db::encode(&entry, "log entry").map_err(write)?;
            batch.put_cf(cf, db::log_key(entry.log_id.index), value);
        }
        // Synced: the entries are on disk when openraft is told so.
        self.db.write(batch, true, "log entries").map_err(write)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncate raft log");
        let cf = self.db.cf(CF_LOGS);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf, db::log_key(log_id.index), db::log_key(u64::MAX));
        batch.delete_cf(cf, db::log_key(u64::MAX));
        self.db
            .write(batch, true, "log truncation")
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "purge raft log");
        let delete = |e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, e);
        let cf = self.db.cf(CF_LOGS);
        let mut batch = WriteBatch::default();
        let purged = db::encode(&log_id, "last purged log id").map_err(delete)?;
        batch.put_cf(self.db.cf(CF_META), KEY_LAST_PURGED, purged);
        batch.delete_range_cf(cf, db::log_key(0), db::log_key(log_id.index));
        batch.delete_cf(cf, db::log_key(log_id.index));
        // Synced, which also makes every earlier state machine write durable (one WAL).
        self.db.write(batch, true, "log purge").map_err(delete)
    }
}
