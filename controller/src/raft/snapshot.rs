//! Raft snapshots as files of state records (state format 9): how their data is laid out,
//! written from a consistent view of the database or received from the leader, read back
//! record by record, and which file is the current snapshot.
//!
//! ```text
//!   data  = 0x08, then per record: key length (u32 LE), key, value length (u32 LE), value
//!           (the records of cf `state`, see records.rs, in key order)
//!
//!   RAFT_DIR/snapshots/
//!     snapshot-<generation: 16 hex>   complete data, fsynced; the current one is named by
//!                                     cf `sm` "snapshot_file" -> StoredMeta (meta, generation, bytes)
//!     build-<random>.tmp              being built       ┐ deleted at open (a crash cut them
//!     receive-<random>.tmp            being received    ┘ short) and once renamed or refused
//!
//!   build:   RocksDB view ──records──> build-….tmp (1 MiB buffer) ──fsync, rename──> snapshot-N
//!            one synced write: "snapshot_file" -> N; snapshot-(N-1) deleted after it
//!   receive: leader's chunks ──openraft──> receive-….tmp ──read record by record──> new state
//!            (every record checked), then fsync, rename to snapshot-N, and:
//!              synced write: "installing" -> N, delete cf `state`
//!              snapshot-N read again ──records──> cf `state`, 4 MiB per write
//!              synced write: applied log id, "snapshot_file" -> N, delete "installing"
//!            snapshot-(N-1) deleted after it
//! ```
//!
//! Neither side holds the data in memory: a build streams the records of a RocksDB snapshot
//! (consistent with the last applied log id stored beside them) into the file, an install
//! reads the file through a 1 MiB buffer and writes bounded batches. A build becomes current
//! in one synced write; an install between the two synced writes around its records, and
//! an open that finds "installing" writes them again from the file (fsynced before the
//! mark) before anything reads the state: a crash leaves the old snapshot and state or the
//! new ones. A file no write named is deleted at the next open. Data that starts with [`codec::FORMAT_BINCODE1`] is a whole encoded
//! `ClusterState` from a build of format 7 (a leader not upgraded yet); it is still
//! installed, read whole, and kept as records.
//!
//! [`codec::FORMAT_BINCODE1`]: wharf_protocol::codec::FORMAT_BINCODE1

use std::io::{BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use openraft::{BasicNode, SnapshotMeta};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use super::db::{self, Db, CF_SM};
use super::RaftError;

/// First byte of snapshot data made of records.
pub(super) const SNAPSHOT_RECORDS: u8 = 8;

/// Key of [`StoredMeta`] in [`CF_SM`].
pub(super) const KEY_SNAPSHOT_FILE: &[u8] = b"snapshot_file";

/// The directory of the snapshot files, in the Raft database's.
const DIR: &str = "snapshots";

/// Bytes read or written at a time.
pub(super) const BUF: usize = 1 << 20;

/// The current snapshot; stored under [`KEY_SNAPSHOT_FILE`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct StoredMeta {
    /// openraft's meta of the snapshot.
    pub(super) meta: SnapshotMeta<u64, BasicNode>,
    /// Its file's generation (`snapshot-<generation>`).
    pub(super) generation: u64,
    /// Its size.
    pub(super) bytes: u64,
}

/// The directory of `db`'s snapshot files.
pub(super) fn dir(db: &Db) -> PathBuf {
    db.path().join(DIR)
}

/// The file of the snapshot of generation `generation`.
pub(super) fn path_of(db: &Db, generation: u64) -> PathBuf {
    dir(db).join(format!("snapshot-{generation:016x}"))
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RaftError {
    let path = path.to_path_buf();
    move |source| RaftError::SnapshotFile {
        action,
        path,
        source,
    }
}

/// Snapshot data as openraft holds it: an open file and where it is.
///
/// openraft reads it to send it in chunks (`AsyncRead` + `AsyncSeek`) and writes the
/// leader's chunks into the one [`begin_receiving`] made (`AsyncWrite` + `AsyncSeek`).
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    /// Open the complete snapshot file at `path` to read it.
    pub(super) fn open(path: &Path) -> Result<SnapshotFile, RaftError> {
        let file = std::fs::File::open(path).map_err(io_error("open", path))?;
        Ok(SnapshotFile {
            file: tokio::fs::File::from_std(file),
            path: path.to_path_buf(),
        })
    }

    /// Where the data is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file, once every write openraft made to it is done, and its path.
    pub(super) async fn into_std(self) -> (std::fs::File, PathBuf) {
        (self.file.into_std().await, self.path)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.file).poll_complete(cx)
    }
}

/// A temporary file of the snapshot directory, deleted when dropped unless renamed.
#[derive(Debug)]
pub(super) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// A new empty file `<prefix>-<random>.tmp` in `db`'s snapshot directory (made if
    /// missing), open to read and write.
    fn create(db: &Db, prefix: &str) -> Result<(TempFile, std::fs::File), RaftError> {
        let dir = dir(db);
        std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
        let path = dir.join(format!("{prefix}-{:016x}.tmp", rand::random::<u64>()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error("create", &path))?;
        Ok((TempFile { path: Some(path) }, file))
    }

    /// Take over the temporary file at `path` (one [`begin_receiving`] made).
    pub(super) fn adopt(path: PathBuf) -> TempFile {
        TempFile { path: Some(path) }
    }

    /// Rename the file (fsynced by the caller) to `to`, and fsync the directory.
    fn rename(mut self, to: &Path) -> Result<(), RaftError> {
        let Some(from) = self.path.take() else {
            return Ok(());
        };
        if let Err(e) = std::fs::rename(&from, to) {
            self.path = Some(from);
            return Err(io_error("rename to", to)(e));
        }
        sync_dir(to)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "remove temporary snapshot file");
                }
            }
        }
    }
}

/// Fsync the directory of `path`, so that a rename or a new file in it is durable.
fn sync_dir(path: &Path) -> Result<(), RaftError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync", dir))
}

/// A new file to receive a snapshot from the leader into; any earlier one (a stream the
/// leader abandoned: openraft receives one at a time) is deleted.
pub(super) fn begin_receiving(db: &Db) -> Result<SnapshotFile, RaftError> {
    remove_temporary(db, "receive-")?;
    let (mut temp, file) = TempFile::create(db, "receive")?;
    // Kept until the install takes it over (or the next reception or open removes it).
    let path = temp.path.take().unwrap_or_default();
    Ok(SnapshotFile {
        file: tokio::fs::File::from_std(file),
        path,
    })
}

/// Whether `path` is a file [`begin_receiving`] made in `db`'s snapshot directory.
pub(super) fn is_received(db: &Db, path: &Path) -> bool {
    path.parent() == Some(dir(db).as_path())
        && path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("receive-") && n.ends_with(".tmp"))
}

/// Delete the temporary files of `db`'s snapshot directory whose names start with `prefix`.
fn remove_temporary(db: &Db, prefix: &str) -> Result<(), RaftError> {
    let dir = dir(db);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error("list", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("list", &dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".tmp") {
            std::fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
        }
    }
    Ok(())
}

/// Delete every file of `db`'s snapshot directory but `current`'s: temporary files of
/// builds and receptions a crash cut short, and snapshots a crash left unnamed or not yet
/// deleted once replaced. Call at open, before anything writes snapshots.
pub(super) fn clean(db: &Db, current: Option<&StoredMeta>) -> Result<(), RaftError> {
    let dir = dir(db);
    std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let keep = current.map(|c| path_of(db, c.generation));
    for entry in std::fs::read_dir(&dir).map_err(io_error("list", &dir))? {
        let path = entry.map_err(io_error("list", &dir))?.path();
        if Some(&path) != keep.as_ref() {
            tracing::info!(path = %path.display(), "remove leftover snapshot file");
            std::fs::remove_file(&path).map_err(io_error("remove", &path))?;
        }
    }
    Ok(())
}

/// Snapshot data being written to a temporary file through a [`BUF`] buffer: the header,
/// then records one by one.
#[derive(Debug)]
pub(super) struct FileWriter {
    out: BufWriter<std::fs::File>,
    temp: TempFile,
    len: u64,
}

impl FileWriter {
    /// A new temporary file in `db`'s snapshot directory holding the header.
    pub(super) fn create(db: &Db) -> Result<FileWriter, RaftError> {
        let mut w = FileWriter::create_raw(db)?;
        w.write_raw(&[SNAPSHOT_RECORDS])?;
        Ok(w)
    }

    /// A new empty temporary file in `db`'s snapshot directory, for data copied as it is
    /// ([`FileWriter::write_raw`]).
    pub(super) fn create_raw(db: &Db) -> Result<FileWriter, RaftError> {
        let (temp, file) = TempFile::create(db, "build")?;
        Ok(FileWriter {
            out: BufWriter::with_capacity(BUF, file),
            temp,
            len: 0,
        })
    }

    fn path(&self) -> &Path {
        self.temp.path.as_deref().unwrap_or(Path::new(""))
    }

    /// Append `bytes` as they are.
    pub(super) fn write_raw(&mut self, bytes: &[u8]) -> Result<(), RaftError> {
        if let Err(e) = self.out.write_all(bytes) {
            return Err(io_error("write", self.path())(e));
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Append the record `key` → `value`.
    pub(super) fn push(&mut self, key: &[u8], value: &[u8]) -> Result<(), RaftError> {
        for part in [key, value] {
            let len = u32::try_from(part.len()).map_err(|_| RaftError::SnapshotData {
                offset: self.len,
                len: part.len() as u64,
            })?;
            self.write_raw(&len.to_le_bytes())?;
            self.write_raw(part)?;
        }
        Ok(())
    }

    /// Flush and fsync the data; the temporary file and its length.
    pub(super) fn finish(self) -> Result<(TempFile, u64), RaftError> {
        let FileWriter { out, temp, len } = self;
        let path = temp.path.clone().unwrap_or_default();
        let file = out
            .into_inner()
            .map_err(|e| io_error("write", &path)(e.into_error()))?;
        file.sync_all().map_err(io_error("sync", &path))?;
        Ok((temp, len))
    }
}

/// A record's key and value.
pub(super) type Record<'a> = (&'a [u8], &'a [u8]);

/// Reads the records of snapshot data of format 8 from `r`, positioned after the header
/// byte, one at a time; each length is checked against the data's, so that a corrupt one
/// is an error, not an allocation.
#[derive(Debug)]
pub(super) struct RecordReader<R> {
    r: R,
    at: u64,
    len: u64,
    key: Vec<u8>,
    value: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    /// Records of data of `len` bytes (the header included), read from `r` past the header.
    pub(super) fn new(r: R, len: u64) -> RecordReader<R> {
        RecordReader {
            r,
            at: 1,
            len,
            key: Vec::new(),
            value: Vec::new(),
        }
    }

    /// The next record, `None` at the end of the data; [`RaftError::SnapshotData`] for one
    /// that runs past the end (the data is truncated or corrupt).
    pub(super) fn next_record(&mut self) -> Result<Option<Record<'_>>, RaftError> {
        if self.at >= self.len {
            return Ok(None);
        }
        let start = self.at;
        let bad = RaftError::SnapshotData {
            offset: start,
            len: self.len,
        };
        let mut key = std::mem::take(&mut self.key);
        let mut value = std::mem::take(&mut self.value);
        let read = self
            .part(&mut key)
            .and_then(|k| Ok(k && self.part(&mut value)?));
        self.key = key;
        self.value = value;
        match read {
            Ok(true) => Ok(Some((&self.key, &self.value))),
            Ok(false) => {
                self.at = self.len;
                Err(bad)
            }
            Err(e) => {
                self.at = self.len;
                Err(e)
            }
        }
    }

    /// Read one length-prefixed part into `buf`; `false` if it runs past the data.
    fn part(&mut self, buf: &mut Vec<u8>) -> Result<bool, RaftError> {
        let mut len = [0u8; 4];
        if self.len - self.at < 4 || !self.fill(&mut len)? {
            return Ok(false);
        }
        let n = u64::from(u32::from_le_bytes(len));
        self.at += 4;
        if self.len - self.at < n {
            return Ok(false);
        }
        // At most the data's length: checked just above.
        buf.resize(n as usize, 0);
        if !self.fill(buf)? {
            return Ok(false);
        }
        self.at += n;
        Ok(true)
    }

    /// Fill `buf` from the reader; `false` if the data ends first.
    fn fill(&mut self, buf: &mut [u8]) -> Result<bool, RaftError> {
        match self.r.read_exact(buf) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(RaftError::SnapshotRead(e)),
        }
    }
}

/// The stored meta of the current snapshot, if any.
pub(super) fn current_meta(db: &Db) -> Result<Option<StoredMeta>, RaftError> {
    db.get(CF_SM, KEY_SNAPSHOT_FILE, "snapshot meta")
}

/// The generation of the snapshot after `current`.
pub(super) fn next_generation(current: Option<&StoredMeta>) -> u64 {
    current.map_or(1, |c| c.generation + 1)
}

/// Make the complete, fsynced data of `temp` the file of generation `generation`.
pub(super) fn persist(db: &Db, temp: TempFile, generation: u64) -> Result<PathBuf, RaftError> {
    let to = path_of(db, generation);
    temp.rename(&to)?;
    Ok(to)
}

/// Put into `batch` the meta `new` of the current snapshot.
pub(super) fn point_at(db: &Db, batch: &mut WriteBatch, new: &StoredMeta) -> Result<(), RaftError> {
    batch.put_cf(
        db.cf(CF_SM),
        KEY_SNAPSHOT_FILE,
        db::encode(new, "snapshot meta")?,
    );
    Ok(())
}

/// Key of the [`StoredMeta`] of a snapshot whose records are being written in [`CF_SM`]
/// (state_machine.rs, `replace_records`).
const KEY_INSTALLING: &[u8] = b"installing";

/// The snapshot whose install a stop interrupted, if any.
pub(super) fn installing(db: &Db) -> Result<Option<StoredMeta>, RaftError> {
    db.get(CF_SM, KEY_INSTALLING, "snapshot being installed")
}

/// Put into `batch` the mark that `new`'s records are being written.
pub(super) fn mark_installing(
    db: &Db,
    batch: &mut WriteBatch,
    new: &StoredMeta,
) -> Result<(), RaftError> {
    batch.put_cf(
        db.cf(CF_SM),
        KEY_INSTALLING,
        db::encode(new, "snapshot being installed")?,
    );
    Ok(())
}

/// Put into `batch` the deletion of the mark of [`mark_installing`].
pub(super) fn unmark_installing(db: &Db, batch: &mut WriteBatch) {
    batch.delete_cf(db.cf(CF_SM), KEY_INSTALLING);
}

/// Delete the file of `old`, replaced by `new` (which the database names now); a failure
/// is logged, and the next open deletes it.
pub(super) fn remove_replaced(db: &Db, old: Option<&StoredMeta>, new: &StoredMeta) {
    let Some(old) = old.filter(|o| o.generation != new.generation) else {
        return;
    };
    let path = path_of(db, old.generation);
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(path = %path.display(), error = %e, "remove replaced snapshot file");
    }
}

/// A record's key and value, owned (tests compare them).
#[cfg(test)]
pub(super) type OwnedRecord = (Vec<u8>, Vec<u8>);

/// Every record of snapshot data `data` (the header included), or the first error.
#[cfg(test)]
pub(super) fn read_records(data: &[u8]) -> Result<Vec<OwnedRecord>, RaftError> {
    let mut r = RecordReader::new(data.get(1..).unwrap_or_default(), data.len() as u64);
    let mut out = Vec::new();
    while let Some((k, v)) = r.next_record()? {
        out.push((k.to_vec(), v.to_vec()));
    }
    Ok(out)
}

/// Every record of the current snapshot's file, read back.
#[cfg(test)]
pub(super) fn current_records(db: &Db) -> Result<Vec<OwnedRecord>, RaftError> {
    let Some(stored) = current_meta(db)? else {
        return Ok(Vec::new());
    };
    let data = std::fs::read(path_of(db, stored.generation)).map_err(RaftError::SnapshotRead)?;
    assert_eq!(
        data.len() as u64,
        stored.bytes,
        "the stored size is the file's"
    );
    assert_eq!(data.first(), Some(&SNAPSHOT_RECORDS));
    read_records(&data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_a_file_and_a_cut_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let mut w = FileWriter::create(&db).unwrap();
        w.push(b"a/1", b"one").unwrap();
        w.push(b"b/", b"").unwrap();
        let (temp, len) = w.finish().unwrap();
        let path = persist(&db, temp, 3).unwrap();
        assert_eq!(path, path_of(&db, 3));
        let data = std::fs::read(&path).unwrap();
        assert_eq!(data.len() as u64, len);
        assert_eq!(
            read_records(&data).unwrap(),
            vec![(b"a/1".to_vec(), b"one".to_vec()), (b"b/".to_vec(), vec![])]
        );
        let first_end = 1 + 4 + 3 + 4 + 3;
        for cut in (2..data.len()).filter(|c| *c != first_end) {
            let got = read_records(&data[..cut]);
            assert!(
                matches!(got, Err(RaftError::SnapshotData { .. })),
                "cut at {cut}: {got:?}"
            );
        }
        assert_eq!(read_records(&[SNAPSHOT_RECORDS]).unwrap(), vec![]);
        // A length beyond the data is refused before anything is allocated for it.
        let mut huge = vec![SNAPSHOT_RECORDS];
        huge.extend(u32::MAX.to_le_bytes());
        assert!(matches!(
            read_records(&huge),
            Err(RaftError::SnapshotData { offset: 1, len: 5 })
        ));
    }

    #[test]
    fn a_dropped_writer_leaves_no_file_and_open_keeps_only_the_current_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let w = FileWriter::create(&db).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(super::dir(&db)).unwrap().count(), 0);

        let (current, _) = FileWriter::create(&db).unwrap().finish().unwrap();
        persist(&db, current, 2).unwrap();
        let (orphan, _) = FileWriter::create(&db).unwrap().finish().unwrap();
        persist(&db, orphan, 3).unwrap();
        let (left, _) = FileWriter::create(&db).unwrap().finish().unwrap();
        std::mem::forget(left);
        let receiving = begin_receiving(&db).unwrap();
        assert!(is_received(&db, receiving.path()));
        assert!(!is_received(&db, &path_of(&db, 2)));
        assert_eq!(std::fs::read_dir(super::dir(&db)).unwrap().count(), 4);
        let stored = StoredMeta {
            meta: SnapshotMeta::default(),
            generation: 2,
            bytes: 1,
        };
        clean(&db, Some(&stored)).unwrap();
        let left: Vec<_> = std::fs::read_dir(super::dir(&db))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(left, vec![path_of(&db, 2)]);
    }
}
