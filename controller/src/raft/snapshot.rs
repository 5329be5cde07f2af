//! Raft snapshots as a stream of state records (state format 8): how their data is laid
//! out, built from a consistent view of the database, and kept in it in chunks.
//!
//! ```text
//!   data  = 0x08, then per record: key length (u32 LE), key, value length (u32 LE), value
//!           (the records of cf `state`, see records.rs, in key order)
//!   cf `sm`: "snapshot_meta"                         -> SnapshotMeta, generation, chunk count
//!            "snapshot_chunk/" + generation + index  -> up to CHUNK bytes of the data
//! ```
//!
//! Building one reads the records of a RocksDB snapshot (consistent with the last applied
//! log id stored beside them) straight into the data: the in-memory state is neither
//! locked nor copied. A new snapshot's chunks are written under the next generation, then
//! one synced write points the meta at them and drops the previous generation's, so a
//! crash leaves one whole snapshot or the other. Data that starts with
//! [`codec::FORMAT_BINCODE1`] is a whole encoded `ClusterState` from a build of format 7
//! (a leader not upgraded yet); it is still installed.
//!
//! [`codec::FORMAT_BINCODE1`]: wharf_protocol::codec::FORMAT_BINCODE1

use openraft::{BasicNode, SnapshotMeta};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use super::db::{self, Db, CF_SM};
use super::RaftError;

/// First byte of snapshot data made of records.
pub(super) const SNAPSHOT_RECORDS: u8 = 8;

/// Key of [`StoredMeta`] in [`CF_SM`].
pub(super) const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";

/// Prefix of the chunk keys in [`CF_SM`].
const CHUNK_PREFIX: &[u8] = b"snapshot_chunk/";

/// Bytes of snapshot data per chunk record.
const CHUNK: usize = 1 << 20;

/// Where the current snapshot is; stored under [`KEY_SNAPSHOT_META`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct StoredMeta {
    /// openraft's meta of the snapshot.
    pub(super) meta: SnapshotMeta<u64, BasicNode>,
    /// Its chunks' generation.
    pub(super) generation: u64,
    /// How many chunks it has.
    pub(super) chunks: u32,
}

/// Key of chunk `index` of generation `generation`.
fn chunk_key(generation: u64, index: u32) -> Vec<u8> {
    let mut k = CHUNK_PREFIX.to_vec();
    k.extend(generation.to_be_bytes());
    k.extend(index.to_be_bytes());
    k
}

/// Snapshot data under construction: the header, then records appended one by one.
#[derive(Debug)]
pub(super) struct DataWriter {
    data: Vec<u8>,
}

impl DataWriter {
    /// Empty data with its header.
    pub(super) fn new() -> DataWriter {
        DataWriter {
            data: vec![SNAPSHOT_RECORDS],
        }
    }

    /// Empty data with room for about `bytes` of records, so that the buffer is not
    /// grown (and copied) by doubling while the records stream in.
    pub(super) fn with_capacity(bytes: usize) -> DataWriter {
        let mut data = Vec::with_capacity(bytes.saturating_add(1));
        data.push(SNAPSHOT_RECORDS);
        DataWriter { data }
    }

    /// Append the record `key` → `value`.
    pub(super) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), RaftError> {
        for part in [key, value] {
            let len = u32::try_from(part.len()).map_err(|_| RaftError::SnapshotData {
                offset: self.data.len(),
                len: part.len(),
            })?;
            self.data.extend(len.to_le_bytes());
            self.data.extend_from_slice(part);
        }
        Ok(())
    }

    /// The data.
    pub(super) fn finish(self) -> Vec<u8> {
        self.data
    }
}

/// The records of snapshot data of format 8 (`data` starts with [`SNAPSHOT_RECORDS`]), in
/// order; an error for data that ends inside one.
pub(super) fn records(data: &[u8]) -> impl Iterator<Item = Result<(&[u8], &[u8]), RaftError>> {
    let mut at = 1;
    let bad = move |offset| RaftError::SnapshotData {
        offset,
        len: data.len(),
    };
    std::iter::from_fn(move || {
        if at >= data.len() {
            return None;
        }
        let start = at;
        let mut part = || -> Option<&[u8]> {
            let len: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
            let len = u32::from_le_bytes(len) as usize;
            let bytes = data.get(at + 4..(at + 4).checked_add(len)?)?;
            at += 4 + len;
            Some(bytes)
        };
        let record = part().and_then(|k| Some((k, part()?)));
        match record {
            Some(r) => Some(Ok(r)),
            None => {
                at = data.len();
                Some(Err(bad(start)))
            }
        }
    })
}

/// The stored meta of the current snapshot, if any.
pub(super) fn current_meta(db: &Db) -> Result<Option<StoredMeta>, RaftError> {
    db.get(CF_SM, KEY_SNAPSHOT_META, "snapshot meta")
}

/// A snapshot's meta and data.
pub(super) type MetaAndData = (SnapshotMeta<u64, BasicNode>, Vec<u8>);

/// The current snapshot's meta and data, if there is one.
pub(super) fn read_current(db: &Db) -> Result<Option<MetaAndData>, RaftError> {
    let Some(stored) = current_meta(db)? else {
        return Ok(None);
    };
    let mut data = Vec::new();
    for index in 0..stored.chunks {
        let chunk = db
            .rocks()
            .get_pinned_cf(db.cf(CF_SM), chunk_key(stored.generation, index))
            .map_err(|source| RaftError::Read {
                what: "snapshot chunk",
                source,
            })?
            .ok_or(RaftError::SnapshotData {
                offset: data.len(),
                len: data.len(),
            })?;
        data.extend_from_slice(&chunk);
    }
    Ok(Some((stored.meta, data)))
}

/// Write `data`'s chunks under the generation after `current`'s, unsynced (the synced
/// write of [`point_at`] makes them durable); the generation written.
pub(super) fn write_chunks(
    db: &Db,
    current: Option<&StoredMeta>,
    data: &[u8],
) -> Result<(u64, u32), RaftError> {
    let generation = current.map_or(1, |c| c.generation + 1);
    let mut count = 0u32;
    for (index, chunk) in (0u32..).zip(data.chunks(CHUNK)) {
        let mut batch = WriteBatch::default();
        batch.put_cf(db.cf(CF_SM), chunk_key(generation, index), chunk);
        db.write(batch, false, "snapshot chunk")?;
        count = index + 1;
    }
    Ok((generation, count))
}

/// Put into `batch` the chunks of `data` as generation `generation`: for a migration,
/// which writes everything in one batch.
pub(super) fn put_chunks(db: &Db, batch: &mut WriteBatch, generation: u64, data: &[u8]) -> u32 {
    let mut count = 0u32;
    for (index, chunk) in (0u32..).zip(data.chunks(CHUNK)) {
        batch.put_cf(db.cf(CF_SM), chunk_key(generation, index), chunk);
        count = index + 1;
    }
    count
}

/// Put into `batch` the meta `new` of the current snapshot and the deletion of the chunks
/// of the one it replaces (`old`).
pub(super) fn point_at(
    db: &Db,
    batch: &mut WriteBatch,
    new: &StoredMeta,
    old: Option<&StoredMeta>,
) -> Result<(), RaftError> {
    batch.put_cf(
        db.cf(CF_SM),
        KEY_SNAPSHOT_META,
        db::encode(new, "snapshot meta")?,
    );
    if let Some(old) = old.filter(|o| o.generation != new.generation) {
        batch.delete_range_cf(
            db.cf(CF_SM),
            chunk_key(old.generation, 0),
            chunk_key(old.generation + 1, 0),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_cut_is_an_error() {
        let mut w = DataWriter::new();
        w.push(b"a/1", b"one").unwrap();
        w.push(b"b/", b"").unwrap();
        let data = w.finish();
        let got: Vec<_> = records(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            got,
            vec![(&b"a/1"[..], &b"one"[..]), (&b"b/"[..], &b""[..])]
        );
        let first_end = 1 + 4 + 3 + 4 + 3;
        for cut in (2..data.len()).filter(|c| *c != first_end) {
            let last = records(&data[..cut]).last().unwrap();
            assert!(
                matches!(last, Err(RaftError::SnapshotData { .. })),
                "cut at {cut}"
            );
        }
        assert_eq!(records(&[SNAPSHOT_RECORDS]).count(), 0);
    }

    #[test]
    fn chunk_keys_of_a_generation_sort_together() {
        assert!(chunk_key(1, u32::MAX) < chunk_key(2, 0));
        assert!(chunk_key(1, 9) < chunk_key(1, 10));
    }
}
