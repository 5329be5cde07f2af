//! The Raft log and vote in RocksDB: openraft's [`RaftLogStorage`] and [`RaftLogReader`].
//!
//! Entries live in column family `logs` under their big-endian index; the vote, the committed
//! log id and the last purged log id live in `meta`. Every write that Raft's safety depends on
//! (vote, append, truncate, purge) is fsynced before openraft hears it is done.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote,
};
use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::db::{
    self, storage_error, Db, CF_LOGS, CF_META, KEY_COMMITTED, KEY_LAST_PURGED, KEY_VOTE,
};
use super::{RaftError, TypeConfig};

/// Bytes of encoded entries [`Recent`] keeps at most.
const RECENT_BYTES: usize = 16 << 20;

/// The entries appended last, kept for the reads that follow at once (the state machine
/// applies each entry, and a leader sends it to every follower): read back from RocksDB,
/// each was decoded again for each. A contiguous run ending at the log's last entry
/// (append, truncate and purge keep it so), at most [`RECENT_BYTES`] of them.
#[derive(Debug, Default)]
struct Recent {
    /// The entries with their encoded size, by index.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
}

impl Recent {
    /// `e` (encoded in `size` bytes) was appended to the log.
    fn appended(&mut self, e: Entry<TypeConfig>, size: usize) {
        let index = e.log_id.index;
        match self.entries.back().map(|(b, _)| b.log_id.index) {
            // Rewritten from `index` on: what followed it is gone from the log.
            Some(last) if index <= last => self.truncated(index),
            // Not contiguous: start again from here.
            Some(last) if index > last + 1 => self.clear(),
            _ => {}
        }
        self.entries.push_back((e, size));
        self.bytes += size;
        while self.bytes > RECENT_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// The log lost every entry from `index` on.
    fn truncated(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|(b, _)| b.log_id.index >= index)
        {
            if let Some((_, size)) = self.entries.pop_back() {
                self.bytes -= size;
            }
        }
    }

    /// The log lost every entry up to `index`.
    fn purged(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|(f, _)| f.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, size)) = self.entries.pop_front() {
            self.bytes -= size;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The entries of `range` from `start` on, if the run holds `start` (it ends where the
    /// log does, so it then holds every entry of the range the log has).
    fn read<RB: RangeBounds<u64>>(&self, start: u64, range: &RB) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.entries.front()?.0.log_id.index;
        let last = self.entries.back()?.0.log_id.index;
        if start < first || start > last {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        Some(
            self.entries
                .range(from..)
                .map(|(e, _)| e)
                .take_while(|e| range.contains(&e.log_id.index))
                .cloned()
                .collect(),
        )
    }
}

/// The durable Raft log; cheap to clone, and each clone is also a log reader.
#[derive(Clone, Debug)]
pub struct LogStore {
    db: Arc<Db>,
    recent: Arc<Mutex<Recent>>,
}

impl LogStore {
    /// A log store over `db`; call once when building the Raft node.
    pub(super) fn new(db: Arc<Db>) -> LogStore {
        LogStore {
            db,
            recent: Arc::default(),
        }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Entries with index in `range`, in order; stops at the first missing index. The
    /// entries appended last come from memory.
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
        if let Some(entries) = self.recent().read(start, range) {
            return Ok(entries);
        }
        self.read_stored(start, range)
    }

    /// [`LogStore::read_range`] from RocksDB, from `start`.
    fn read_stored<RB: RangeBounds<u64>>(
        &self,
        start: u64,
        range: &RB,
    ) -> Result<Vec<Entry<TypeConfig>>, RaftError> {
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
        let mut written = Vec::new();
        for entry in entries {
            let value = db::encode(&entry, "log entry").map_err(write)?;
            batch.put_cf(cf, db::log_key(entry.log_id.index), &value);
            written.push((entry, value.len()));
        }
        // Synced: the entries are on disk when openraft is told so.
        self.db.write(batch, true, "log entries").map_err(write)?;
        // In memory before openraft hears of them: its reads of them find them there.
        let mut recent = self.recent();
        for (entry, size) in written {
            recent.appended(entry, size);
        }
        drop(recent);
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(%log_id, "truncate raft log");
        self.recent().truncated(log_id.index);
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
        self.recent().purged(log_id.index);
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

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::collections::BTreeMap;

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// Differential: after any run of appends (contiguous, rewriting the tail, after a
    /// gap), truncations, purges and evictions by size, what the run of recent entries
    /// answers for a range is what a plain model of the log holds from its start.
    #[test]
    fn recent_entries_answer_as_the_log_does() {
        let mut log: BTreeMap<u64, Entry<TypeConfig>> = BTreeMap::new();
        let mut recent = Recent::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |m: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % m
        };
        let mut term = 1;
        let mut answered = 0;
        for step in 0..5000 {
            let last = log.keys().next_back().copied().unwrap_or(0);
            match next(10) {
                0..=5 => {
                    // Append 1-3 entries: mostly at the end, at times over the tail.
                    let from = if next(5) == 0 && last > 2 {
                        last - next(3)
                    } else {
                        last + 1
                    };
                    term += u64::from(from <= last);
                    for i in from..from + 1 + next(3) {
                        log.split_off(&i);
                        log.insert(i, entry(term, i));
                        // Now and then an entry large enough to evict others.
                        let size = if next(50) == 0 { RECENT_BYTES / 3 } else { 100 };
                        recent.appended(entry(term, i), size);
                    }
                }
                6 if last > 0 => {
                    let at = last - next(3.min(last));
                    log.split_off(&at);
                    recent.truncated(at);
                }
                7 if last > 0 => {
                    let upto = last.saturating_sub(next(20));
                    log.retain(|i, _| *i > upto);
                    recent.purged(upto);
                }
                _ => {}
            }
            assert!(recent.bytes <= RECENT_BYTES || recent.entries.len() == 1);
            let last = log.keys().next_back().copied().unwrap_or(0);
            for start in last.saturating_sub(30)..=last + 1 {
                for end in [start, start + 1, start + 5, u64::MAX] {
                    let Some(got) = recent.read(start, &(start..end)) else {
                        continue;
                    };
                    let want: Vec<_> = log.range(start..end).map(|(_, e)| e.clone()).collect();
                    assert_eq!(got, want, "step {step}: {start}..{end}");
                    answered += usize::from(!got.is_empty());
                }
            }
        }
        assert!(answered > 10_000, "the run answered {answered} reads");
    }
}
