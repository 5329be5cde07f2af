//! Writing a directory tree as a tar, through directory fds that never follow a symlink:
//! the merged view of `docker export`, or an overlay upper dir turned back into a layer
//! (0/0 character devices → `.wh.<name>`, opaque directories → `.wh..wh..opq`).
//!
//! ```text
//!  dir fd ──children (sorted)──► statat(NOFOLLOW) ──► header (mode, owner, mtime, xattrs)
//!     │                                 └─ regular: openat(NOFOLLOW), exactly st_size bytes
//!     └─ openat(DIRECTORY|NOFOLLOW) ──► recurse                        ──► tar::Builder
//! ```

use super::rwlayer::RwLayerError;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(super) fn io_at(
    action: &'static str,
    path: &[u8],
) -> impl FnOnce(rustix::io::Errno) -> RwLayerError {
    let path = String::from_utf8_lossy(path).into_owned();
    move |e| RwLayerError::Io {
        action,
        path,
        source: e.into(),
    }
}

/// How [`write_tree`] treats overlay markers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeMode {
    /// A merged view: every entry as it is.
    Export,
    /// An overlay upper dir becoming a layer: 0/0 character devices become `.wh.<name>`
    /// entries, `trusted.overlay.opaque=y` a `.wh..wh..opq` entry.
    Layer,
}

pub(super) fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The children of a directory fd, sorted by name (tars and diffs are deterministic).
pub(super) fn children(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(e) = d.read() {
        let n = e?.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            out.push(n);
        }
    }
    out.sort();
    Ok(out)
}

pub(super) fn is_whiteout(st: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_opaque(fd: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 4];
    matches!(
        rustix::fs::fgetxattr(fd, "trusted.overlay.opaque", &mut buf[..]),
        Ok(1) if buf[0] == b'y'
    )
}

/// `SCHILY.xattr.*` records of an fd, without overlay's own.
fn xattrs(fd: BorrowedFd<'_>) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::flistxattr(fd, &mut names[..]) else {
        return vec![];
    };
    let mut out = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        if let Ok(len) = rustix::fs::fgetxattr(fd, name, &mut value[..]) {
            value.truncate(len);
            out.push((format!("SCHILY.xattr.{name}"), value));
        }
    }
    out
}

/// A tar header with `st`'s mode, owner and mtime, size 0, of entry type `kind`.
pub(crate) fn header_for(st: &rustix::fs::Stat, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(u64::from(st.st_uid));
    h.set_gid(u64::from(st.st_gid));
    h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
    h.set_size(0);
    h
}

/// Pads a short read with zeros, so a file that shrank mid-read keeps the tar valid.
pub(crate) struct Exact<R> {
    /// The file being read.
    pub(crate) inner: R,
    /// Bytes still owed to the tar entry.
    pub(crate) left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

struct TreeWriter<W: Write> {
    b: tar::Builder<W>,
    mode: TreeMode,
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> TreeWriter<W> {
    fn walk(&mut self, dir: BorrowedFd<'_>, prefix: &[u8]) -> Result<(), RwLayerError> {
        for name in children(dir).map_err(io_at("read directory", prefix))? {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                [prefix, b"/", &name].concat()
            };
            let os_name = OsStr::from_bytes(&name);
            let st = match rustix::fs::statat(dir, os_name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Deleted while we walked (a running container): leave it out.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(io_at("stat", &path)(e)),
            };
            self.entry(dir, os_name, &name, &path, &st)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        dir: BorrowedFd<'_>,
        os_name: &OsStr,
        name: &[u8],
        path: &[u8],
        st: &rustix::fs::Stat,
    ) -> Result<(), RwLayerError> {
        let wr = |e: io::Error| RwLayerError::Io {
            action: "write tar entry",
            path: String::from_utf8_lossy(path).into_owned(),
            source: e,
        };
        let p = Path::new(OsStr::from_bytes(path));
        let ft = FileType::from_raw_mode(st.st_mode);
        if self.mode == TreeMode::Layer && is_whiteout(st) {
            let parent = &path[..path.len() - name.len()];
            let wh = [parent, b".wh.", name].concat();
            let mut h = header_for(st, tar::EntryType::Regular);
            h.set_mode(0o644);
            self.b
                .append_data(&mut h, Path::new(OsStr::from_bytes(&wh)), io::empty())
                .map_err(wr)?;
            return Ok(());
        }
        match ft {
            FileType::Directory => {
                let fd = match open_dir_at(dir, os_name) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(()),
                    Err(e) => return Err(io_at("open directory", path)(e)),
                };
                let x = xattrs(fd.as_fd());
                if !x.is_empty() {
                    self.b
                        .append_pax_extensions(x.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                        .map_err(wr)?;
                }
                let mut h = header_for(st, tar::EntryType::Directory);
                let dir_path = [path, b"/"].concat();
                self.b
                    .append_data(&mut h, Path::new(OsStr::from_bytes(&dir_path)), io::empty())
                    .map_err(wr)?;
                if self.mode == TreeMode::Layer && is_opaque(fd.as_fd()) {
                    let opq = [path, b"/.wh..wh..opq"].concat();
                    let mut h = header_for(st, tar::EntryType::Regular);
                    h.set_mode(0o644);
                    self.b
                        .append_data(&mut h, Path::new(OsStr::from_bytes(&opq)), io::empty())
                        .map_err(wr)?;
                }
                self.walk(fd.as_fd(), path)
            }
            FileType::RegularFile => {
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key) {
                        let mut h = header_for(st, tar::EntryType::Link);
                        let target = Path::new(OsStr::from_bytes(first)).to_path_buf();
                        self.b.append_link(&mut h, p, target).map_err(wr)?;
                        return Ok(());
                    }
                    self.links.insert(key, path.to_vec());
                }
                let fd = match rustix::fs::openat(
                    dir,
                    os_name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
                    Mode::empty(),
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => return Ok(()),
                    Err(e) => return Err(io_at("open file", path)(e)),
                };
                let st = rustix::fs::fstat(&fd).map_err(io_at("stat", path))?;
                if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                    return Ok(());
                }
                let x = xattrs(fd.as_fd());
                if !x.is_empty() {
                    self.b
                        .append_pax_extensions(x.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                        .map_err(wr)?;
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                let mut h = header_for(&st, tar::EntryType::Regular);
                h.set_size(size);
                let r = Exact {
                    inner: std::fs::File::from(fd),
                    left: size,
                };
                self.b.append_data(&mut h, p, r).map_err(wr)
            }
            FileType::Symlink => {
                let target = match rustix::fs::readlinkat(dir, os_name, Vec::new()) {
                    Ok(t) => t,
                    Err(rustix::io::Errno::NOENT) => return Ok(()),
                    Err(e) => return Err(io_at("read link", path)(e)),
                };
                let mut h = header_for(st, tar::EntryType::Symlink);
                let target = Path::new(OsStr::from_bytes(target.as_bytes())).to_path_buf();
                self.b.append_link(&mut h, p, target).map_err(wr)
            }
            FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo => {
                let kind = match ft {
                    FileType::CharacterDevice => tar::EntryType::Char,
                    FileType::BlockDevice => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                };
                let mut h = header_for(st, kind);
                h.set_device_major(rustix::fs::major(st.st_rdev))
                    .map_err(wr)?;
                h.set_device_minor(rustix::fs::minor(st.st_rdev))
                    .map_err(wr)?;
                self.b.append_data(&mut h, p, io::empty()).map_err(wr)
            }
            _ => Ok(()),
        }
    }
}

/// Write the tree under directory fd `root` (not the root itself) as a tar to `out`,
/// entries sorted by name, hard links kept as links; returns `out`.
pub fn write_tree<W: Write>(
    root: BorrowedFd<'_>,
    mode: TreeMode,
    out: W,
) -> Result<W, RwLayerError> {
    let mut w = TreeWriter {
        b: tar::Builder::new(out),
        mode,
        links: HashMap::new(),
    };
    w.walk(root, b"")?;
    w.b.into_inner().map_err(|source| RwLayerError::Io {
        action: "finish tar",
        path: String::new(),
        source,
    })
}
