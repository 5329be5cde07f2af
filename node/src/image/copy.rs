//! Copying a layer's file contents out of its tar stream into the files being created.
//!
//! Large files of a layer are written with `O_DIRECT`, on a second thread, so that the
//! device writes one block while the next is copied out of the stream:
//!
//! ```text
//!  tar entry ──read──► aligned buffer ──job──► writer thread: pwrite(O_DIRECT) ──► disk
//!        ▲                                          │
//!        └──────────── buffer back (or redone buffered if the write fell short) ◄┘
//!  a file's last block written ──► its tail (under a block) written buffered
//!                              ──► its owner, mode, xattrs and times set (`Finish`)
//! ```
//!
//! The applier goes on to the next entries while a file's blocks are written; a file is
//! finished (metadata set, after the data, since writing moves the mtime) when its last
//! block is, and [`Copier::finish_all`] waits for every file before the apply ends.
//!
//! Why direct: a load writes hundreds of MiB that the final sync must write out anyway;
//! through the page cache that is a second copy of every byte, pages to allocate (which a
//! VM's host pays for again), and a sync that waits for all of it at the end. Small files,
//! the tail of a file under one block, and filesystems that refuse `O_DIRECT` are written
//! buffered.

use super::apply::ApplyError;
use rustix::fs::OFlags;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

/// Largest buffer a file's contents are copied through (`io::copy` uses 8 KiB, which
/// costs a write call per 8 KiB of a layer).
/// Direct writes are this large, so that each wake-up of the writer thread gives the
/// device a long write.
pub(crate) const COPY_BUF: usize = 2 << 20;

/// Files at least this large are written with `O_DIRECT` when the copier allows it.
/// Smaller ones stay buffered, where one device round trip each would cost more than the
/// copy into the page cache.
pub const DIRECT_MIN: u64 = 1 << 20;

/// Alignment of direct writes' memory, file offsets and lengths: a page, a multiple of
/// every logical block size `O_DIRECT` asks for.
const DIRECT_ALIGN: usize = 4096;

/// Buffers per copier: one being filled while the others are written.
pub(crate) const BUFFERS: usize = 6;

/// A [`COPY_BUF`]-byte buffer aligned for `O_DIRECT` (the heap block does not move when
/// the buffer is sent to the writer thread and back).
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    fn new() -> AlignedBuf {
        AlignedBuf {
            raw: vec![0u8; COPY_BUF + DIRECT_ALIGN],
        }
    }

    fn slice(&mut self) -> &mut [u8] {
        let off = self.raw.as_ptr().align_offset(DIRECT_ALIGN);
        &mut self.raw[off..off + COPY_BUF]
    }
}

/// One direct write for the writer thread.
struct Job {
    file: Arc<File>,
    buf: AlignedBuf,
    offset: u64,
    len: usize,
}

/// What is left to do once a file's contents are on disk: set its metadata.
pub(crate) type Finish = Box<dyn FnOnce(&File) -> Result<(), ApplyError>>;

/// A file whose blocks are being written. It is queued before its first block is
/// submitted, so every finished job belongs to the oldest queued file: jobs come back in
/// the order they were submitted, and a file's jobs all follow the previous file's.
struct Pending {
    file: Arc<File>,
    /// The entry's name, for errors.
    path: String,
    /// Its jobs submitted and not finished yet.
    jobs: usize,
    /// Whether all its blocks have been submitted (until then `jobs == 0` does not mean
    /// the file is written).
    sealed: bool,
    /// Its size as the archive declares it: the file must have it once complete.
    size: u64,
    /// The bytes after the last whole block, and where they go.
    tail: Vec<u8>,
    tail_at: u64,
    /// What to run once its contents are on disk; `None` for a file whose entry ended
    /// early (the apply fails; its blocks are only waited for).
    finish: Option<Finish>,
}

/// A finished job and what its `pwrite` returned.
type Done = (Job, io::Result<usize>);

struct Writer {
    jobs: SyncSender<Job>,
    done: Receiver<Done>,
    in_flight: usize,
}

/// Copies file contents out of a tar stream (see the module doc). Made by [`Copier::run`].
pub(crate) struct Copier {
    free: Vec<AlignedBuf>,
    made: usize,
    writer: Option<Writer>,
    /// Files being written, oldest first (the writer takes jobs in order).
    pending: VecDeque<Pending>,
    /// The first failure of a write or a finish, returned by the next call.
    failed: Option<ApplyError>,
    /// Files handed to [`Copier::copy`] whole, and files finished: equal once
    /// [`Copier::finish_all`] succeeds, or the apply fails.
    started: u64,
    finished: u64,
}

impl Copier {
    /// Run `f` with a copier; with `direct`, one that writes large files with `O_DIRECT`
    /// on a writer thread living as long as `f`.
    pub(crate) fn run<T>(direct: bool, f: impl FnOnce(&mut Copier) -> T) -> T {
        let mut copier = Copier {
            free: Vec::new(),
            made: 0,
            writer: None,
            pending: VecDeque::new(),
            failed: None,
            started: 0,
            finished: 0,
        };
        if !direct {
            return f(&mut copier);
        }
        std::thread::scope(|scope| {
            let (jobs, job_rx) = std::sync::mpsc::sync_channel::<Job>(BUFFERS);
            let (done_tx, done) = std::sync::mpsc::channel::<Done>();
            scope.spawn(move || {
                for job in job_rx {
                    let res = write_once(&job);
                    if done_tx.send((job, res)).is_err() {
                        break;
                    }
                }
            });
            copier.writer = Some(Writer {
                jobs,
                done,
                in_flight: 0,
            });
            let out = f(&mut copier);
            // Closes the job channel, so the writer thread ends with the scope.
            drop(copier);
            out
        })
    }

    /// Copy a regular file's contents (`size` bytes expected) from `src` to `file`, which
    /// was just created empty, and then run `finish` on it; returns the bytes read from
    /// `src` (fewer than `size` if it ends early; `finish` is then not run). A large file
    /// may still be being written when this returns: see [`Copier::finish_all`].
    pub(crate) fn copy(
        &mut self,
        src: &mut impl Read,
        file: &Arc<File>,
        size: u64,
        path: &str,
        finish: Finish,
    ) -> Result<u64, ApplyError> {
        self.check()?;
        if self.writer.is_some() && size >= DIRECT_MIN && set_direct(file, true) {
            return self.copy_direct(src, file, size, path, finish);
        }
        let mut buf = self.take().map_err(|e| write_err(path, e))?;
        let res = copy_buffered(src, &mut &**file, buf.slice(), path);
        self.free.push(buf);
        let got = res?;
        if got == size {
            self.started += 1;
            check_size(file, size, path)?;
            finish(file)?;
            self.finished += 1;
        }
        Ok(got)
    }

    /// Wait for every file being written and finish each; the first error. Fails, too,
    /// if any file handed to [`Copier::copy`] whole was not finished: a layer is never
    /// committed with a file whose tail or metadata was not written.
    pub(crate) fn finish_all(&mut self) -> Result<(), ApplyError> {
        while self.writer.as_ref().is_some_and(|w| w.in_flight > 0) {
            self.finish_one();
        }
        self.check()?;
        if let Some(p) = self.pending.front() {
            return Err(ApplyError::Unfinished {
                path: p.path.clone(),
                detail: format!("{} of its writes not done", p.jobs),
            });
        }
        if self.started != self.finished {
            return Err(ApplyError::Unfinished {
                path: String::new(),
                detail: format!(
                    "the layer writer finished {} of {} files",
                    self.finished, self.started
                ),
            });
        }
        Ok(())
    }

    fn check(&mut self) -> Result<(), ApplyError> {
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The direct part of [`Copier::copy`]: the file queued, whole blocks submitted to
    /// the writer, the file finished after its last one (see [`Pending`]).
    fn copy_direct(
        &mut self,
        src: &mut impl Read,
        file: &Arc<File>,
        size: u64,
        path: &str,
        finish: Finish,
    ) -> Result<u64, ApplyError> {
        self.pending.push_back(Pending {
            file: file.clone(),
            path: path.to_string(),
            jobs: 0,
            sealed: false,
            size,
            tail: Vec::new(),
            tail_at: 0,
            finish: None,
        });
        let res = self.submit_blocks(src, file, path);
        // Sealed whatever happened: its submitted blocks still come back.
        let Some(p) = self.pending.back_mut() else {
            return Err(ApplyError::Unfinished {
                path: path.to_string(),
                detail: "its queue entry is gone".to_string(),
            });
        };
        p.sealed = true;
        let (offset, tail) = res?;
        if offset == size {
            self.started += 1;
            p.tail_at = offset - tail.len() as u64;
            p.tail = tail;
            p.finish = Some(finish);
        }
        if p.jobs == 0 {
            if let Some(p) = self.pending.pop_back() {
                self.complete(p);
            }
        }
        Ok(offset)
    }

    /// Read the entry through buffers, submitting each buffer's whole blocks for the
    /// newest queued file; returns the bytes read and the last partial block.
    fn submit_blocks(
        &mut self,
        src: &mut impl Read,
        file: &Arc<File>,
        path: &str,
    ) -> Result<(u64, Vec<u8>), ApplyError> {
        let mut offset = 0u64;
        loop {
            let mut buf = self.take().map_err(|e| write_err(path, e))?;
            let n = match read_full(src, buf.slice()) {
                Ok(n) => n,
                Err(e) => {
                    self.free.push(buf);
                    return Err(ApplyError::Read(e));
                }
            };
            let aligned = n - n % DIRECT_ALIGN;
            let tail = buf.slice()[aligned..n].to_vec();
            if aligned > 0 {
                self.submit(Job {
                    file: file.clone(),
                    buf,
                    offset,
                    len: aligned,
                })
                .map_err(|e| write_err(path, e))?;
                if let Some(p) = self.pending.back_mut() {
                    p.jobs += 1;
                }
            } else {
                self.free.push(buf);
            }
            offset += n as u64;
            // `read_full` falls short only at the end of the entry.
            if n < COPY_BUF {
                return Ok((offset, tail));
            }
        }
    }

    fn submit(&mut self, job: Job) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Err(io::Error::other("no writer thread"));
        };
        w.jobs
            .send(job)
            .map_err(|_| io::Error::other("layer writer thread ended"))?;
        w.in_flight += 1;
        Ok(())
    }

    /// A free buffer: an idle one, a new one while fewer than [`BUFFERS`] exist, or the
    /// next one the writer gives back.
    fn take(&mut self) -> io::Result<AlignedBuf> {
        if let Some(b) = self.free.pop() {
            return Ok(b);
        }
        let waiting = self.writer.as_ref().is_some_and(|w| w.in_flight > 0);
        if self.made < BUFFERS || !waiting {
            self.made += 1;
            return Ok(AlignedBuf::new());
        }
        self.finish_one();
        Ok(self.free.pop().unwrap_or_else(AlignedBuf::new))
    }

    /// Take the next finished write: a write that fell short or was refused as direct
    /// is finished buffered; the file it belongs to is finished after its last one.
    /// Failures are kept for [`Copier::check`].
    fn finish_one(&mut self) {
        let Some(w) = self.writer.as_mut() else {
            return;
        };
        let Ok((mut job, res)) = w.done.recv() else {
            w.in_flight = 0;
            self.fail(ApplyError::Read(io::Error::other(
                "layer writer thread ended",
            )));
            return;
        };
        w.in_flight -= 1;
        let res = match res {
            Ok(n) if n == job.len => Ok(()),
            // Short, or refused as direct after all (alignment the filesystem will not
            // take): the rest buffered.
            Ok(n) => finish_buffered(&mut job, n),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => finish_buffered(&mut job, 0),
            Err(e) => Err(e),
        };
        let file = job.file;
        self.free.push(job.buf);
        // Jobs come back in the order they were submitted, and a file is queued before
        // its first job: this job is the oldest queued file's.
        let Some(front) = self
            .pending
            .front_mut()
            .filter(|p| Arc::ptr_eq(&p.file, &file))
        else {
            self.fail(ApplyError::Unfinished {
                path: String::new(),
                detail: "a finished write matches no queued file".to_string(),
            });
            return;
        };
        front.jobs -= 1;
        let err = res.err().map(|e| write_err(&front.path, e));
        let done = front.sealed && front.jobs == 0;
        if let Some(err) = err {
            self.fail(err);
        }
        if done {
            if let Some(p) = self.pending.pop_front() {
                self.complete(p);
            }
        }
    }

    /// A file whose blocks are all written: its tail, its size checked, then its
    /// metadata. A file whose entry ended early is left as it is.
    fn complete(&mut self, p: Pending) {
        let Some(finish) = p.finish else {
            return;
        };
        let res = (|| {
            if !p.tail.is_empty() {
                if !set_direct(&p.file, false) {
                    return Err(write_err(
                        &p.path,
                        io::Error::other("cannot clear O_DIRECT"),
                    ));
                }
                p.file
                    .write_all_at(&p.tail, p.tail_at)
                    .map_err(|e| write_err(&p.path, e))?;
            }
            check_size(&p.file, p.size, &p.path)?;
            finish(&p.file)
        })();
        match res {
            Ok(()) => self.finished += 1,
            Err(e) => self.fail(e),
        }
    }

    fn fail(&mut self, e: ApplyError) {
        self.failed.get_or_insert(e);
    }
}

/// Write what a short or refused direct write of `job` left, from `written` on, buffered.
fn finish_buffered(job: &mut Job, written: usize) -> io::Result<()> {
    if !set_direct(&job.file, false) {
        return Err(io::Error::other("cannot clear O_DIRECT"));
    }
    let (len, offset) = (job.len, job.offset);
    job.file
        .write_all_at(&job.buf.slice()[written..len], offset + written as u64)
}

/// Fail unless `file` holds exactly the `size` bytes its entry declares.
fn check_size(file: &File, size: u64, path: &str) -> Result<(), ApplyError> {
    let got = file.metadata().map_err(|e| write_err(path, e))?.len();
    if got != size {
        return Err(ApplyError::SizeMismatch {
            path: path.to_string(),
            expected: size,
            got,
        });
    }
    Ok(())
}

fn write_err(path: &str, source: io::Error) -> ApplyError {
    ApplyError::Os {
        path: path.to_string(),
        what: "write file",
        source,
    }
}

/// One `pwrite` of a job (retried only when interrupted); the caller finishes a short one.
fn write_once(job: &Job) -> io::Result<usize> {
    let off = job.buf.raw.as_ptr().align_offset(DIRECT_ALIGN);
    let data = &job.buf.raw[off..off + job.len];
    loop {
        match job.file.write_at(data, job.offset) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            res => return res,
        }
    }
}

fn copy_buffered(
    src: &mut impl Read,
    dst: &mut impl Write,
    buf: &mut [u8],
    path: &str,
) -> Result<u64, ApplyError> {
    let mut total = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ApplyError::Read(e)),
        };
        dst.write_all(&buf[..n]).map_err(|e| write_err(path, e))?;
        total += n as u64;
    }
}

/// Set or clear `O_DIRECT` on `f`; whether that took (a filesystem without direct I/O
/// refuses it).
fn set_direct(f: &File, on: bool) -> bool {
    let Ok(flags) = rustix::fs::fcntl_getfl(f) else {
        return false;
    };
    let flags = if on {
        flags | OFlags::DIRECT
    } else {
        flags - OFlags::DIRECT
    };
    rustix::fs::fcntl_setfl(f, flags).is_ok()
}

/// Read until `buf` is full or `src` ends; the bytes read (fewer than `buf.len()` only at
/// the end of `src`).
pub(crate) fn read_full(src: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match src.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> (tempfile::TempDir, Arc<File>) {
        let dir = tempfile::tempdir().unwrap();
        let f = File::create(dir.path().join("f")).unwrap();
        (dir, Arc::new(f))
    }

    #[test]
    fn a_file_left_queued_fails_the_layer() {
        let (_dir, f) = file();
        let err = Copier::run(true, |c| {
            c.pending.push_back(Pending {
                file: f.clone(),
                path: "big".into(),
                jobs: 1,
                sealed: true,
                size: 8192,
                tail: Vec::new(),
                tail_at: 0,
                finish: Some(Box::new(|_| Ok(()))),
            });
            c.finish_all()
        })
        .unwrap_err();
        assert!(
            matches!(err, ApplyError::Unfinished { ref path, .. } if path == "big"),
            "{err:?}"
        );
    }

    #[test]
    fn a_file_started_and_never_finished_fails_the_layer() {
        let err = Copier::run(true, |c| {
            c.started += 1;
            c.finish_all()
        })
        .unwrap_err();
        assert!(matches!(err, ApplyError::Unfinished { .. }), "{err:?}");
    }

    #[test]
    fn a_file_shorter_than_its_entry_is_not_finished() {
        let (_dir, f) = file();
        let finished = std::rc::Rc::new(std::cell::Cell::new(false));
        let set = finished.clone();
        let err = Copier::run(true, |c| {
            c.pending.push_back(Pending {
                file: f.clone(),
                path: "short".into(),
                jobs: 0,
                sealed: true,
                size: 10,
                tail: b"12345".to_vec(),
                tail_at: 0,
                finish: Some(Box::new(move |_| {
                    set.set(true);
                    Ok(())
                })),
            });
            c.started += 1;
            let p = c.pending.pop_front().unwrap();
            c.complete(p);
            c.finish_all()
        })
        .unwrap_err();
        assert!(
            matches!(
                err,
                ApplyError::SizeMismatch {
                    expected: 10,
                    got: 5,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!finished.get(), "metadata set on a short file");
    }

    #[test]
    fn every_size_around_the_thresholds_lands_whole_with_its_metadata_set_once() {
        let sizes = [
            0,
            1,
            4095,
            4096,
            4097,
            DIRECT_MIN as usize - 1,
            DIRECT_MIN as usize,
            DIRECT_MIN as usize + 1,
            COPY_BUF - 1,
            COPY_BUF,
            COPY_BUF + 1,
            BUFFERS * COPY_BUF - 1,
            BUFFERS * COPY_BUF,
            BUFFERS * COPY_BUF + 1,
            3 * BUFFERS * COPY_BUF + 4097,
        ];
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let finished = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        Copier::run(true, |c| {
            for (i, size) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..*size).map(|j| (j * 7 + i) as u8).collect();
                let f = Arc::new(File::create(dir.path().join(i.to_string())).unwrap());
                let done = finished.clone();
                let got = c
                    .copy(
                        &mut data.as_slice(),
                        &f,
                        *size as u64,
                        &i.to_string(),
                        Box::new(move |_| {
                            done.borrow_mut().push(i);
                            Ok(())
                        }),
                    )
                    .unwrap();
                assert_eq!(got, *size as u64);
            }
            c.finish_all().unwrap();
        });
        let mut done = finished.borrow().clone();
        done.sort();
        assert_eq!(done, (0..sizes.len()).collect::<Vec<_>>());
        for (i, size) in sizes.iter().enumerate() {
            let data = std::fs::read(dir.path().join(i.to_string())).unwrap();
            assert_eq!(data.len(), *size, "file {i}");
            assert!(
                data.iter()
                    .enumerate()
                    .all(|(j, b)| *b == (j * 7 + i) as u8),
                "file {i} differs"
            );
        }
    }
}
