//! tar-split: a layer's tar kept as its bytes that are not file contents (headers, PAX and
//! GNU long-name records, padding, the end-of-archive blocks, trailing bytes), plus, for
//! each regular file's contents, a reference to the file the applier wrote in `diff/`.
//! `docker save` regenerates the exact tar from that (as moby's tar-split does), so a load
//! writes every byte of a layer once instead of twice.
//!
//! ```text
//!  load:  tar stream ─► SplitWriter::observe (records what is not a file's contents)
//!                   └─► tar::Archive ─► applier: File(path, size) for each file it writes,
//!                                                Moved(path, n) for a path it replaces
//!         overlay2/<chain>/tar-split (zstd)          overlay2/<chain>/stash/<n>
//!  save:  tar-split ─► SplitSource::open (pass 1: moves, length) ─► SplitTarReader
//!         Segment bytes as recorded; File ─► diff/<path>, or stash/<n>/… if a later entry
//!         of the same layer replaced it; sha256 of the output checked against the DiffID
//! ```
//!
//! A layer whose entry replaces an earlier one of the same layer (allowed, as Docker
//! does) keeps the replaced tree in `stash/` (outside `diff/`, so no container sees it)
//! instead of deleting it. The regenerated stream is verified: a file that changed size or
//! went missing, or output that does not hash to the DiffID, is an error, never a wrong
//! archive.
//!
//! File format (inside one zstd frame): magic `WHARFTS1`, then records
//! `1 len:u32 bytes` (segment), `2 len:u32 path size:u64` (file),
//! `3 len:u32 path n:u64` (moved), `4 total:u64` (end), integers little-endian.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use wharf_protocol::{DiffId, Digest};

/// Name of the tar-split file in a layer directory.
pub const FILE_NAME: &str = "tar-split";

/// Name of the directory of replaced entries in a layer directory.
pub const STASH_DIR: &str = "stash";

const MAGIC: &[u8; 8] = b"WHARFTS1";
const SEGMENT: u8 = 1;
const FILE: u8 = 2;
const MOVED: u8 = 3;
const END: u8 = 4;

/// Segments are flushed at this size.
const SEGMENT_MAX: usize = 1 << 20;

/// Longest path a record may carry.
const PATH_MAX: u32 = 1 << 16;

/// Why a tar-split could not be read back into a tar.
#[derive(Debug, thiserror::Error)]
pub enum TarSplitError {
    /// The tar-split file or a layer file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The tar-split file is not in this format.
    #[error("corrupt tar-split {path}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
}

/// Records a layer tar while the applier reads it; shared (in a `RefCell`) by the reader
/// under the tar parser, which calls [`SplitWriter::observe`], and the applier.
pub(crate) struct SplitWriter {
    enc: zstd::stream::write::Encoder<'static, BufWriter<File>>,
    path: PathBuf,
    seg: Vec<u8>,
    payload_left: u64,
    pos: u64,
    moves: u64,
    /// `stash/` of the layer being built.
    pub(crate) stash: OwnedFd,
    err: Option<io::Error>,
}

impl SplitWriter {
    /// Start recording into `<layer_dir>/tar-split`, with `<layer_dir>/stash` (created
    /// here) for replaced entries.
    pub(crate) fn create(layer_dir: &Path) -> io::Result<SplitWriter> {
        let path = layer_dir.join(FILE_NAME);
        let stash_path = layer_dir.join(STASH_DIR);
        std::fs::create_dir(&stash_path)?;
        let stash = rustix::fs::open(
            &stash_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let f = File::create(&path)?;
        let mut enc = zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 16, f), 1)?;
        enc.write_all(MAGIC)?;
        Ok(SplitWriter {
            enc,
            path,
            seg: Vec::with_capacity(SEGMENT_MAX),
            payload_left: 0,
            pos: 0,
            moves: 0,
            stash,
            err: None,
        })
    }

    /// Take note of `buf`, the next bytes of the stream: the contents of a file begun with
    /// [`SplitWriter::begin_file`] are skipped, everything else is kept.
    pub(crate) fn observe(&mut self, buf: &[u8]) {
        self.pos += buf.len() as u64;
        let skip = usize::try_from(self.payload_left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        self.payload_left -= skip as u64;
        self.seg.extend_from_slice(&buf[skip..]);
        if self.seg.len() >= SEGMENT_MAX {
            self.flush_segment();
        }
    }

    fn flush_segment(&mut self) {
        if self.seg.is_empty() {
            return;
        }
        let len = self.seg.len() as u32;
        let res = (|| {
            self.enc.write_all(&[SEGMENT])?;
            self.enc.write_all(&len.to_le_bytes())?;
            self.enc.write_all(&self.seg)
        })();
        self.seg.clear();
        self.note(res);
    }

    fn note(&mut self, res: io::Result<()>) {
        if let Err(e) = res {
            self.err.get_or_insert(e);
        }
    }

    fn record_path(&mut self, tag: u8, path: &[u8], n: u64) {
        self.flush_segment();
        let res = (|| {
            let len = u32::try_from(path.len())
                .ok()
                .filter(|l| *l <= PATH_MAX)
                .ok_or_else(|| io::Error::other("path too long for tar-split"))?;
            self.enc.write_all(&[tag])?;
            self.enc.write_all(&len.to_le_bytes())?;
            self.enc.write_all(path)?;
            self.enc.write_all(&n.to_le_bytes())
        })();
        self.note(res);
    }

    /// The applier is about to read the `size` bytes of contents of an entry it writes to
    /// `path` (inside the layer) and that start at `file_pos` in the stream: refer to the
    /// file instead of keeping them. Returns whether it does (not for an empty file, or if
    /// the stream is not where the parser says the contents start; those bytes are then
    /// kept as they are).
    pub(crate) fn begin_file(&mut self, path: &[u8], size: u64, file_pos: u64) -> bool {
        if size == 0 || self.payload_left != 0 || self.pos != file_pos {
            return false;
        }
        self.record_path(FILE, path, size);
        self.payload_left = size;
        true
    }

    /// The applier replaces what is at `path`: returns the name under `stash/` to move it
    /// to (instead of deleting it).
    pub(crate) fn moved(&mut self, path: &[u8]) -> u64 {
        let n = self.moves;
        self.moves += 1;
        self.record_path(MOVED, path, n);
        n
    }

    /// End the record after the whole stream was observed; the file is synced with the
    /// layer's filesystem later.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.flush_segment();
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        if self.payload_left != 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "layer ended inside a file",
            ));
        }
        self.enc.write_all(&[END])?;
        self.enc.write_all(&self.pos.to_le_bytes())?;
        let mut w = self.enc.finish()?;
        w.flush()?;
        tracing::trace!(path = %self.path.display(), "tar-split written");
        Ok(())
    }
}

/// A record of a tar-split file.
#[derive(Debug, PartialEq, Eq)]
enum Record {
    Segment(u32),
    File(Vec<u8>, u64),
    Moved(Vec<u8>, u64),
    End(u64),
}

fn read_record(r: &mut impl Read) -> io::Result<Record> {
    let mut tag = [0u8; 1];
    r.read_exact(&mut tag)?;
    let mut b4 = [0u8; 4];
    let mut b8 = [0u8; 8];
    match tag[0] {
        SEGMENT => {
            r.read_exact(&mut b4)?;
            Ok(Record::Segment(u32::from_le_bytes(b4)))
        }
        FILE | MOVED => {
            r.read_exact(&mut b4)?;
            let len = u32::from_le_bytes(b4);
            if len > PATH_MAX {
                return Err(io::Error::other("path length out of range"));
            }
            let mut path = vec![0u8; len as usize];
            r.read_exact(&mut path)?;
            r.read_exact(&mut b8)?;
            let n = u64::from_le_bytes(b8);
            Ok(if tag[0] == FILE {
                Record::File(path, n)
            } else {
                Record::Moved(path, n)
            })
        }
        END => {
            r.read_exact(&mut b8)?;
            Ok(Record::End(u64::from_le_bytes(b8)))
        }
        t => Err(io::Error::other(format!("unknown record {t}"))),
    }
}

/// Where a `File` record's contents are, given the `Moved` records: the first move after
/// record `seq` of its path or of a directory above it. Pure.
#[derive(Debug, Default)]
struct Moves {
    /// Moved path -> (record number, stash name), in record order.
    by_path: HashMap<Vec<u8>, Vec<(u64, u64)>>,
}

impl Moves {
    fn add(&mut self, path: Vec<u8>, seq: u64, n: u64) {
        self.by_path.entry(path).or_default().push((seq, n));
    }

    /// `None`: the file is at `path` in `diff/`; `Some((n, rest))`: at `rest` under
    /// `stash/<n>` (`rest` empty when the file itself was moved).
    fn locate<'p>(&self, path: &'p [u8], seq: u64) -> Option<(u64, &'p [u8])> {
        if self.by_path.is_empty() {
            return None;
        }
        let mut best: Option<(u64, u64, &[u8])> = None;
        let mut consider = |prefix: &[u8], rest: &'p [u8]| {
            if let Some(list) = self.by_path.get(prefix) {
                let i = list.partition_point(|(s, _)| *s <= seq);
                if let Some(&(s, n)) = list.get(i) {
                    if best.is_none_or(|(bs, _, _)| s < bs) {
                        best = Some((s, n, rest));
                    }
                }
            }
        };
        consider(path, b"");
        for (i, b) in path.iter().enumerate() {
            if *b == b'/' {
                consider(&path[..i], &path[i + 1..]);
            }
        }
        best.map(|(_, n, rest)| (n, rest))
    }
}

/// A layer's tar-split, read once to learn its length and moves; make readers of the tar
/// with [`SplitSource::reader`].
pub struct SplitSource {
    meta: File,
    meta_path: PathBuf,
    diff: OwnedFd,
    stash: Option<OwnedFd>,
    moves: Moves,
    len: u64,
    diff_id: DiffId,
}

impl SplitSource {
    /// Open the tar-split of the layer in `layer_dir`, whose tar has DiffID `diff_id`.
    pub fn open(layer_dir: &Path, diff_id: DiffId) -> Result<SplitSource, TarSplitError> {
        let meta_path = layer_dir.join(FILE_NAME);
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TarSplitError::Read { path, source }
        };
        let meta = File::open(&meta_path).map_err(read_err(&meta_path))?;
        let diff_path = layer_dir.join("diff");
        let diff = rustix::fs::open(
            &diff_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| read_err(&diff_path)(e.into()))?;
        let stash = rustix::fs::open(
            layer_dir.join(STASH_DIR),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        let mut src = SplitSource {
            meta,
            meta_path,
            diff,
            stash,
            moves: Moves::default(),
            len: 0,
            diff_id,
        };
        src.scan()?;
        Ok(src)
    }

    fn corrupt(&self, what: impl Into<String>) -> TarSplitError {
        TarSplitError::Corrupt {
            path: self.meta_path.clone(),
            what: what.into(),
        }
    }

    fn decoder(&self) -> Result<impl Read + '_, TarSplitError> {
        let mut f = &self.meta;
        io::Seek::rewind(&mut f).map_err(|source| TarSplitError::Read {
            path: self.meta_path.clone(),
            source,
        })?;
        let mut d =
            zstd::stream::read::Decoder::new(f).map_err(|e| self.corrupt(format!("zstd: {e}")))?;
        let mut magic = [0u8; 8];
        d.read_exact(&mut magic)
            .map_err(|e| self.corrupt(format!("header: {e}")))?;
        if &magic != MAGIC {
            return Err(self.corrupt("bad magic"));
        }
        Ok(d)
    }

    /// Pass 1: the moves and the total length.
    fn scan(&mut self) -> Result<(), TarSplitError> {
        let mut moves = Moves::default();
        let mut seq = 0u64;
        let mut total = 0u64;
        let len = {
            let mut d = self.decoder()?;
            loop {
                let rec = read_record(&mut d).map_err(|e| self.corrupt(e.to_string()))?;
                match rec {
                    Record::Segment(n) => {
                        let got = io::copy(&mut (&mut d).take(n.into()), &mut io::sink())
                            .map_err(|e| self.corrupt(e.to_string()))?;
                        if got != u64::from(n) {
                            return Err(self.corrupt("truncated segment"));
                        }
                        total += got;
                    }
                    Record::File(_, size) => {
                        seq += 1;
                        total += size;
                    }
                    Record::Moved(path, n) => {
                        seq += 1;
                        moves.add(path, seq, n);
                    }
                    Record::End(len) => break len,
                }
            }
        };
        if len != total {
            return Err(self.corrupt(format!("length {len} but records sum to {total}")));
        }
        self.moves = moves;
        self.len = len;
        Ok(())
    }

    /// Length of the regenerated tar.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the tar is empty (never, for a valid layer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tar, regenerated; the reader fails if the layer's files no longer give back
    /// the DiffID.
    pub fn reader(&self) -> Result<SplitTarReader<'_>, TarSplitError> {
        let dec = self.decoder()?;
        Ok(SplitTarReader {
            src: self,
            dec: Box::new(BufReader::with_capacity(1 << 16, dec)),
            cur: Cur::Between,
            seq: 0,
            hasher: Sha256::new(),
            out: 0,
            done: false,
        })
    }

    fn open_file(&self, path: &[u8], seq: u64) -> io::Result<File> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        let fd = match self.moves.locate(path, seq) {
            None => crate::resolve::openat2(
                &self.diff,
                std::ffi::OsStr::from_bytes(path),
                flags,
                Mode::empty(),
                resolve,
            )?,
            Some((n, rest)) => {
                let stash = self
                    .stash
                    .as_ref()
                    .ok_or_else(|| io::Error::other("layer has no stash"))?;
                let name = n.to_string();
                if rest.is_empty() {
                    rustix::fs::openat(stash, name.as_str(), flags, Mode::empty())?
                } else {
                    let dir = rustix::fs::openat(
                        stash,
                        name.as_str(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )?;
                    crate::resolve::openat2(
                        &dir,
                        std::ffi::OsStr::from_bytes(rest),
                        flags,
                        Mode::empty(),
                        resolve,
                    )?
                }
            }
        };
        Ok(File::from(fd))
    }
}

enum Cur {
    Between,
    Segment(u64),
    File { f: File, left: u64, path: Vec<u8> },
}

/// The regenerated tar of a [`SplitSource`].
pub struct SplitTarReader<'a> {
    src: &'a SplitSource,
    dec: Box<dyn Read + 'a>,
    cur: Cur,
    seq: u64,
    hasher: Sha256,
    out: u64,
    done: bool,
}

impl SplitTarReader<'_> {
    fn bad(&self, what: String) -> io::Error {
        io::Error::other(format!(
            "layer {} cannot be regenerated from {}: {what}",
            self.src.diff_id,
            self.src.meta_path.display()
        ))
    }

    /// Move to the next record with bytes; false at the end (after checking the digest).
    fn advance(&mut self) -> io::Result<bool> {
        loop {
            match read_record(&mut self.dec).map_err(|e| self.bad(e.to_string()))? {
                Record::Segment(0) => {}
                Record::Segment(n) => {
                    self.cur = Cur::Segment(n.into());
                    return Ok(true);
                }
                Record::File(path, size) => {
                    self.seq += 1;
                    let f = self.src.open_file(&path, self.seq).map_err(|e| {
                        self.bad(format!("{}: {e}", String::from_utf8_lossy(&path)))
                    })?;
                    let st = f.metadata()?;
                    if !st.is_file() || st.len() != size {
                        return Err(self.bad(format!(
                            "{} is no longer a file of {size} bytes",
                            String::from_utf8_lossy(&path)
                        )));
                    }
                    self.cur = Cur::File {
                        f,
                        left: size,
                        path,
                    };
                    return Ok(true);
                }
                Record::Moved(..) => self.seq += 1,
                Record::End(len) => {
                    let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
                    if len != self.out || DiffId(Digest(got)) != self.src.diff_id {
                        return Err(self.bad(format!(
                            "regenerated {} bytes with sha256:{}",
                            self.out,
                            hex::encode(got)
                        )));
                    }
                    self.done = true;
                    return Ok(false);
                }
            }
        }
    }
}

impl Read for SplitTarReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.done {
                return Ok(0);
            }
            let n = match &mut self.cur {
                Cur::Between => {
                    if !self.advance()? {
                        return Ok(0);
                    }
                    continue;
                }
                Cur::Segment(left) => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = self.dec.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(self.bad("segment cut short".into()));
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.cur = Cur::Between;
                    }
                    n
                }
                Cur::File { f, left, path } => {
                    let want = usize::try_from(*left).unwrap_or(usize::MAX).min(buf.len());
                    let n = f.read(&mut buf[..want])?;
                    if n == 0 {
                        let p = String::from_utf8_lossy(path).into_owned();
                        return Err(self.bad(format!("{p} shrank")));
                    }
                    *left -= n as u64;
                    if *left == 0 {
                        self.cur = Cur::Between;
                    }
                    n
                }
            };
            self.hasher.update(&buf[..n]);
            self.out += n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_locate_the_first_move_after_a_record() {
        let mut m = Moves::default();
        assert_eq!(m.locate(b"a/b", 1), None);
        m.add(b"a/b".to_vec(), 3, 0);
        m.add(b"a".to_vec(), 6, 1);
        // Written at 1, replaced at 3: in stash/0 itself.
        assert_eq!(m.locate(b"a/b", 1), Some((0, &b""[..])));
        // Written again at 4, its directory moved at 6: stash/1/b.
        assert_eq!(m.locate(b"a/b", 4), Some((1, &b"b"[..])));
        // Written after both moves: in diff/.
        assert_eq!(m.locate(b"a/b", 7), None);
        // A sibling only moves with the directory.
        assert_eq!(m.locate(b"a/c", 2), Some((1, &b"c"[..])));
        // A name that only shares a prefix is not below the directory.
        assert_eq!(m.locate(b"ab", 2), None);
    }

    #[test]
    fn records_read_back() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&[SEGMENT]);
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.extend_from_slice(&[FILE]);
        buf.extend_from_slice(&2u32.to_le_bytes());
        buf.extend_from_slice(b"ab");
        buf.extend_from_slice(&9u64.to_le_bytes());
        buf.extend_from_slice(&[END]);
        buf.extend_from_slice(&12u64.to_le_bytes());
        buf.push(9);
        let mut r = buf.as_slice();
        assert_eq!(read_record(&mut r).unwrap(), Record::Segment(3));
        assert_eq!(
            read_record(&mut r).unwrap(),
            Record::File(b"ab".to_vec(), 9)
        );
        assert_eq!(read_record(&mut r).unwrap(), Record::End(12));
        assert!(read_record(&mut r).is_err());
    }
}
