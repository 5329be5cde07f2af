//! The RocksDB database under the Raft store: its column families, keys and typed access.
//!
//! ```text
//!   cf `logs`: index (u64 big endian) -> Entry          written by LogStore, fsynced
//!   cf `meta`: "vote" | "committed" | "last_purged"     written by LogStore
//!              "format" -> the state format (u32), stamped at open
//!   cf `sm`:   "applied_log" -> last applied log id and membership
//!              "snapshot_file" -> the current snapshot's meta and file (snapshot.rs;
//!              the files are in `snapshots/` beside RocksDB's)
//!              "installing" -> a snapshot whose records are being written (snapshot.rs)
//!              "applied", "snapshot": the whole state, formats 1 to 7 (migrate.rs)
//!              "snapshot_meta", "snapshot_chunk/…": the snapshot, format 8 (migrate.rs)
//!   cf `state`: one record per entry of the ClusterState (records.rs), written in the
//!              same batch as "applied_log"
//! ```
//!
//! Every value goes through [`wharf_protocol::codec`]; nothing read from disk is trusted to
//! decode.

use std::path::{Path, PathBuf};

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Options, WriteBatch};
use serde::de::DeserializeOwned;
use serde::Serialize;
use wharf_protocol::codec;

use super::RaftError;

/// Column family of log entries keyed by big-endian index.
pub(super) const CF_LOGS: &str = "logs";
/// Column family of the vote, the committed log id and the last purged log id.
pub(super) const CF_META: &str = "meta";
/// Column family of the state machine: last applied log id and snapshot.
pub(super) const CF_SM: &str = "sm";
/// Column family of the cluster state, one record per entry.
pub(super) use super::records::CF_STATE;

/// Key of the vote in [`CF_META`].
pub(super) const KEY_VOTE: &[u8] = b"vote";
/// Key of the committed log id in [`CF_META`].
pub(super) const KEY_COMMITTED: &[u8] = b"committed";
/// Key of the last purged log id in [`CF_META`].
pub(super) const KEY_LAST_PURGED: &[u8] = b"last_purged";
/// Key of the state format in [`CF_META`]: which layout the log entries, the applied
/// state and the snapshot are written in.
pub(super) const KEY_FORMAT: &[u8] = b"format";

/// The state format this build writes and the newest it reads. A database without the
/// key predates it and is in format 1. A change to the encoding of anything stored
/// (a field added to a record, a command's layout) raises it, with a migration from
/// every older format at open.
pub(super) const STATE_FORMAT: u32 = 9;

/// Key of the last applied log id and membership in [`CF_SM`] (format 8 on).
pub(super) const KEY_APPLIED_LOG: &[u8] = b"applied_log";
/// Key of the whole applied state in [`CF_SM`], formats 1 to 7.
pub(super) const KEY_APPLIED: &[u8] = b"applied";
/// Key of the whole snapshot in [`CF_SM`], formats 1 to 7.
pub(super) const KEY_SNAPSHOT: &[u8] = b"snapshot";

/// The open database; shared by the log store, the state machine and the [`Store`](super::Store).
#[derive(Debug)]
pub(super) struct Db {
    db: rocksdb::DB,
    path: PathBuf,
    /// Synced writes done (each one an fsync of the WAL): what group commit saves.
    synced_writes: std::sync::atomic::AtomicU64,
    /// Bytes of the write batches written: what per-key persistence saves.
    bytes_written: std::sync::atomic::AtomicU64,
}

impl Db {
    /// Open or create the database at `dir` with its column families; fails if another
    /// handle (in this process or another) holds its lock.
    pub(super) fn open(dir: &Path) -> Result<Db, RaftError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(DBCompressionType::None);
        bound_memory_and_files(&mut opts);
        // One small block cache for the four families, instead of RocksDB's default of
        // one per family (32 MiB each): the state is read from memory, the log mostly
        // from memtables, so a cache this size holds what is read back.
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        let cfs = [CF_LOGS, CF_META, CF_SM, CF_STATE].map(|name| {
            let mut cf_opts = Options::default();
            cf_opts.set_compression_type(DBCompressionType::None);
            cf_opts.set_block_based_table_factory(&table);
            bound_memory_and_files(&mut cf_opts);
            ColumnFamilyDescriptor::new(name, cf_opts)
        });
        let db = rocksdb::DB::open_cf_descriptors(&opts, dir, cfs).map_err(|source| {
            RaftError::Open {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        let db = Db {
            db,
            path: dir.to_path_buf(),
            synced_writes: std::sync::atomic::AtomicU64::new(0),
            bytes_written: std::sync::atomic::AtomicU64::new(0),
        };
        db.check_format()?;
        Ok(db)
    }

    /// Refuse a database of a newer state format; migrate an older one (a database
    /// with state but no format was made before formats were recorded: format 1); stamp
    /// a new one with this build's.
    fn check_format(&self) -> Result<(), RaftError> {
        let has_state = self.get_raw(CF_SM, KEY_APPLIED)?.is_some()
            || self.get_raw(CF_META, KEY_VOTE)?.is_some();
        match self.get::<u32>(CF_META, KEY_FORMAT, "state format")? {
            Some(found) if found > STATE_FORMAT => Err(RaftError::NewerFormat {
                path: self.path.clone(),
                found,
                supported: STATE_FORMAT,
            }),
            Some(found) if found < STATE_FORMAT => {
                super::migrate::migrate(self, found, STATE_FORMAT)
            }
            Some(_) => Ok(()),
            None if has_state => super::migrate::migrate(self, 1, STATE_FORMAT),
            None => {
                let mut batch = WriteBatch::default();
                batch.put_cf(
                    self.cf(CF_META),
                    KEY_FORMAT,
                    encode(&STATE_FORMAT, "state format")?,
                );
                self.write(batch, true, "state format")
            }
        }
    }

    /// The database directory.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying RocksDB handle, for iteration.
    pub(super) fn rocks(&self) -> &rocksdb::DB {
        &self.db
    }

    /// Handle of one of the column families created in [`Db::open`].
    pub(super) fn cf(&self, name: &str) -> &ColumnFamily {
        // `open` creates every column family named by the constants above, and only those
        // constants are passed here.
        self.db
            .cf_handle(name)
            .expect("column family created at open")
    }

    /// Whether `key` of column family `cf` holds a value (not decoded).
    fn get_raw(&self, cf: &str, key: &[u8]) -> Result<Option<()>, RaftError> {
        self.db
            .get_pinned_cf(self.cf(cf), key)
            .map(|v| v.map(|_| ()))
            .map_err(|source| RaftError::Read {
                what: "state format",
                source,
            })
    }

    /// Read and decode the value at `key` of column family `cf`, if any.
    pub(super) fn get<T: DeserializeOwned>(
        &self,
        cf: &str,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, RaftError> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(cf), key)
            .map_err(|source| RaftError::Read { what, source })?
        else {
            return Ok(None);
        };
        decode(&bytes, what).map(Some)
    }

    /// Apply `batch` atomically; with `sync`, the WAL (and every earlier write in it) is
    /// fsynced before this returns.
    pub(super) fn write(
        &self,
        batch: WriteBatch,
        sync: bool,
        what: &'static str,
    ) -> Result<(), RaftError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(sync);
        self.bytes_written.fetch_add(
            batch.size_in_bytes() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.db
            .write_opt(batch, &opts)
            .map_err(|source| RaftError::Write { what, source })?;
        if sync {
            self.synced_writes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Synced writes since the database was opened.
    pub(super) fn synced_writes(&self) -> u64 {
        self.synced_writes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Bytes of the write batches written since the database was opened.
    #[cfg(test)]
    pub(super) fn bytes_written(&self) -> u64 {
        self.bytes_written
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fsync the WAL and flush every memtable to SST files; call at shutdown.
    pub(super) fn flush(&self) -> Result<(), RaftError> {
        let what = "flush";
        self.db
            .flush_wal(true)
            .map_err(|source| RaftError::Write { what, source })?;
        for name in [CF_LOGS, CF_META, CF_SM, CF_STATE] {
            self.db
                .flush_cf(self.cf(name))
                .map_err(|source| RaftError::Write { what, source })?;
        }
        Ok(())
    }
}

/// Memtable size of each column family. RocksDB's default (64 MiB, three of them) let a
/// daemon that writes the Raft log and the state on every container event grow by every
/// byte written until a memtable filled, and keep as much WAL on disk: a long-running
/// host must not grow with the number of containers it has ever run.
const WRITE_BUFFER: usize = 4 << 20;

/// Size of the block cache the column families share.
const BLOCK_CACHE: usize = 2 << 20;

/// Bounds on what the database keeps in memory and on disk however long it runs: small
/// memtables (flushed to SST files, where compaction drops purged logs and replaced
/// states), a WAL recycled once its memtables are flushed, and few RocksDB info logs.
fn bound_memory_and_files(opts: &mut Options) {
    opts.set_write_buffer_size(WRITE_BUFFER);
    opts.set_max_write_buffer_number(2);
    opts.set_db_write_buffer_size(3 * WRITE_BUFFER);
    opts.set_max_total_wal_size(2 * WRITE_BUFFER as u64);
    opts.set_keep_log_file_num(2);
    opts.set_max_log_file_size(1 << 20);
}

/// Encode `value` with the Wharf codec for storing as `what`.
pub(super) fn encode<T: Serialize>(value: &T, what: &'static str) -> Result<Vec<u8>, RaftError> {
    codec::encode(value).map_err(|source| RaftError::Encode { what, source })
}

/// Decode `bytes` read from the database as `what`.
pub(super) fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    what: &'static str,
) -> Result<T, RaftError> {
    codec::decode(bytes).map_err(|source| RaftError::Decode { what, source })
}

/// Key of the log entry at `index`: big endian, so that keys sort by index.
pub(super) fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Index of a log key read from disk.
pub(super) fn log_index(key: &[u8]) -> Result<u64, RaftError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| RaftError::LogKey { len: key.len() })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Wrap a store error as the storage error openraft expects; openraft then stops the node.
pub(super) fn storage_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    err: RaftError,
) -> StorageError<u64> {
    StorageIOError::new(subject, verb, AnyError::new(&err)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_index_and_round_trip() {
        assert!(log_key(255) < log_key(256));
        assert!(log_key(1) < log_key(u64::MAX));
        assert_eq!(
            log_index(&log_key(0x0102_0304_0506)).unwrap(),
            0x0102_0304_0506
        );
        assert!(matches!(
            log_index(b"short"),
            Err(RaftError::LogKey { len: 5 })
        ));
    }

    #[test]
    fn junk_value_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut batch = WriteBatch::default();
        batch.put_cf(db.cf(CF_META), KEY_VOTE, b"\x01\xff");
        db.write(batch, true, "test").unwrap();
        let got = db.get::<openraft::Vote<u64>>(CF_META, KEY_VOTE, "vote");
        assert!(
            matches!(got, Err(RaftError::Decode { what: "vote", .. })),
            "{got:?}"
        );
    }
}
