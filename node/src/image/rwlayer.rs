//! Containers' writable layers and new layers: `docker diff`, `docker export`,
//! `docker commit` and `docker import`.
//!
//! ```text
//!  rw diff/ (upper) ──walk (fds)──► changes (A/C/D, whiteouts as D)        docker diff
//!         │        └─tree tar, whiteouts → .wh.* ──► spool ──► unpack_layer  docker commit
//!  l/<rw>:l/<img>... ──ro overlay in a private mount ns──► tree tar ──► out  docker export
//!  rootfs tarball ──(gzip/zstd)──► spool (sha256 = DiffID) ──► unpack_layer  docker import
//! ```
//!
//! Trees are read through directory fds with `O_NOFOLLOW` (a running container may swap a
//! directory for a symlink to `/`; the walk never leaves the tree). The export mount lives
//! in a mount namespace of one short-lived thread, so a crash can never leave it behind.

use super::layout::LINK_LEN;
use super::load::Compression;
use super::store::{ImageStore, StoreError};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use wharf_protocol::{ChainId, DiffId, Digest};

/// Why a writable-layer operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RwLayerError {
    /// The layer store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading a tree or writing its tar failed.
    #[error("{action} {path:?}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path inside the tree, or on the host.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The read-only overlay for an export could not be set up.
    #[error("mount export view of {container}: {source}")]
    Mount {
        /// The container.
        container: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An import stream could not be read or decompressed.
    #[error("read import stream: {0}")]
    Import(#[source] io::Error),
    /// The export thread died.
    #[error("export thread panicked")]
    Thread,
}

fn io_at(action: &'static str, path: &[u8]) -> impl FnOnce(rustix::io::Errno) -> RwLayerError {
    let path = String::from_utf8_lossy(path).into_owned();
    move |e| RwLayerError::Io {
        action,
        path,
        source: e.into(),
    }
}

fn io_path(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RwLayerError {
    let path = path.display().to_string();
    move |source| RwLayerError::Io {
        action,
        path,
        source,
    }
}

/// How a file differs from the image, as `GET /containers/{id}/changes` numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// `C`: present below and changed.
    Modified = 0,
    /// `A`: new.
    Added = 1,
    /// `D`: deleted.
    Deleted = 2,
}

/// One entry of `docker diff`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// Absolute path inside the container, e.g. `/tmp/x`.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
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

/// sha256 of the tar of an empty tree (two zero blocks): a commit that adds nothing.
pub fn empty_layer_diff_id() -> DiffId {
    DiffId(Digest::of(&[0u8; 1024]))
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The children of a directory fd, sorted by name (tars and diffs are deterministic).
fn children(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<Vec<u8>>> {
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

fn is_whiteout(st: &rustix::fs::Stat) -> bool {
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

fn header_for(st: &rustix::fs::Stat, kind: tar::EntryType) -> tar::Header {
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
struct Exact<R> {
    inner: R,
    left: u64,
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

/// Writes through to a file while hashing.
struct HashFile {
    file: io::BufWriter<std::fs::File>,
    hasher: Sha256,
}

impl Write for HashFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// A spooled file in `image/tmp`, removed on drop.
struct Spooled(PathBuf);

/// A layer tar spooled to disk with its DiffID, waiting to be unpacked; removed on drop.
pub struct SpooledLayer {
    file: Spooled,
    diff_id: DiffId,
}

impl SpooledLayer {
    /// sha256 of the (decompressed) tar.
    pub fn diff_id(&self) -> DiffId {
        self.diff_id
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ImageStore {
    /// Open the writable layer of `container_id`: its `diff` fd and the lower `diff`
    /// dirs of its image, uppermost first.
    fn rw_parts(&self, container_id: &str) -> Result<(OwnedFd, Vec<PathBuf>), RwLayerError> {
        let spec = self.rw_mount_spec(container_id, &[])?;
        let fd = rustix::fs::open(
            &spec.upperdir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_path("open", &spec.upperdir)(e.into()))?;
        let lowers = spec.lowerdir.iter().map(|l| spec.cwd.join(l)).collect();
        Ok((fd, lowers))
    }

    /// What the container changed against its image (`docker diff`), sorted by path.
    pub fn rw_changes(&self, container_id: &str) -> Result<Vec<Change>, RwLayerError> {
        let (upper, lowers) = self.rw_parts(container_id)?;
        let mut lower_fds = Vec::new();
        for l in &lowers {
            let fd = rustix::fs::open(
                l,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_path("open", l)(e.into()))?;
            lower_fds.push(fd);
        }
        let mut out = Vec::new();
        changes_walk(upper.as_fd(), b"", &lower_fds, &mut out)?;
        Ok(out)
    }

    /// Write the container's writable layer as a layer tar (whiteouts as `.wh.` entries)
    /// and add it to the store on top of `parent` (the image's DiffIDs); `None` when the
    /// container changed nothing (Docker then records an empty history entry).
    pub fn commit_rw_layer(
        &self,
        container_id: &str,
        parent: &[DiffId],
    ) -> Result<Option<DiffId>, RwLayerError> {
        let (upper, _) = self.rw_parts(container_id)?;
        let (spooled, diff_id) =
            self.spool_with(|w| write_tree(upper.as_fd(), TreeMode::Layer, w).map(|_| ()))?;
        if diff_id == empty_layer_diff_id() {
            return Ok(None);
        }
        self.add_layer(parent, diff_id, &spooled.0)?;
        tracing::info!(container = container_id, diff_id = %diff_id, "writable layer committed");
        Ok(Some(diff_id))
    }

    /// Add a root filesystem tarball (plain, gzip or zstd) as a one-layer chain
    /// (`docker import`); returns its DiffID. Hostile archives are refused like any layer.
    pub fn import_layer(&self, reader: impl Read) -> Result<DiffId, RwLayerError> {
        let spooled = self.spool_import(reader)?;
        self.add_spooled_layer(&[], &spooled)?;
        Ok(spooled.diff_id)
    }

    /// Decompress a root filesystem tarball (plain, gzip or zstd) into a spool file,
    /// hashing it; the first half of [`ImageStore::import_layer`], which needs no lock.
    pub fn spool_import(&self, reader: impl Read) -> Result<SpooledLayer, RwLayerError> {
        let mut r = BufReader::with_capacity(64 * 1024, reader);
        let head = r.fill_buf().map_err(RwLayerError::Import)?;
        let mut plain: Box<dyn Read> = match Compression::detect(head) {
            Compression::None => Box::new(r),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(RwLayerError::Import)?)
            }
        };
        let (file, diff_id) = self.spool_with(|w| {
            io::copy(&mut plain, w)
                .map(|_| ())
                .map_err(RwLayerError::Import)
        })?;
        Ok(SpooledLayer { file, diff_id })
    }

    /// Unpack a spooled layer on top of `parent` (the DiffIDs below it); the second half
    /// of [`ImageStore::import_layer`]. An invalid tar is refused and leaves the store as
    /// it was.
    pub fn add_spooled_layer(
        &self,
        parent: &[DiffId],
        layer: &SpooledLayer,
    ) -> Result<(), RwLayerError> {
        self.add_layer(parent, layer.diff_id, &layer.file.0)
    }

    /// Run `fill` on a fresh spool file, hashing what it writes; the file is synced.
    fn spool_with(
        &self,
        fill: impl FnOnce(&mut HashFile) -> Result<(), RwLayerError>,
    ) -> Result<(Spooled, DiffId), RwLayerError> {
        let p = self.layout().spool().join(self.tmp_name("layer"));
        let spooled = Spooled(p.clone());
        let file = std::fs::File::create(&p).map_err(io_path("create", &p))?;
        let mut w = HashFile {
            file: io::BufWriter::new(file),
            hasher: Sha256::new(),
        };
        fill(&mut w)?;
        w.flush().map_err(io_path("write", &p))?;
        let digest: [u8; 32] = w.hasher.finalize().into();
        Ok((spooled, DiffId(Digest(digest))))
    }

    /// Unpack the spooled layer tar at `path` as `diff_id` on top of `parent`.
    fn add_layer(
        &self,
        parent: &[DiffId],
        diff_id: DiffId,
        path: &Path,
    ) -> Result<(), RwLayerError> {
        let mut ids = parent.to_vec();
        ids.push(diff_id);
        let chain = ChainId::chain(&ids);
        let (top, below) = match chain.split_last() {
            Some(x) => x,
            None => return Ok(()),
        };
        if self.has_layer(top) && self.layer_tar_path(&diff_id).is_some() {
            return Ok(());
        }
        let f = std::fs::File::open(path).map_err(io_path("open", path))?;
        if self.has_layer(top) {
            self.store_layer_tar(&diff_id, f)?;
        } else {
            self.unpack_layer(below.last(), top, &diff_id, f)?;
        }
        Ok(())
    }

    /// Write the container's root filesystem as its image and writable layer make it
    /// (`docker export`) to `out`. The view is a read-only overlay mounted in a private
    /// mount namespace of a thread of its own; blocking.
    pub fn export_rw<W: Write + Send>(
        &self,
        container_id: &str,
        out: W,
    ) -> Result<W, RwLayerError> {
        let spec = self.rw_mount_spec(container_id, &[])?;
        let rw_dir = self.layout().rw_dir(container_id);
        let link = std::fs::read_to_string(rw_dir.join("link"))
            .map_err(io_path("read", &rw_dir.join("link")))?;
        let link = link.trim().to_string();
        if link.len() != LINK_LEN || !link.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(StoreError::Corrupt(rw_dir.join("link")).into());
        }
        let mut lowers = vec![format!("l/{link}")];
        lowers.extend(spec.lowerdir.iter().cloned());
        let data = super::layout::readonly_mount_data(&lowers)?;
        let target = self.layout().overlay().join(self.tmp_name("export"));
        std::fs::create_dir(&target).map_err(io_path("create", &target))?;
        let cwd = spec.cwd.clone();
        let container = container_id.to_string();
        let t = target.clone();
        let res = std::thread::scope(|s| {
            s.spawn(move || -> Result<W, RwLayerError> {
                let fail = |e: rustix::io::Errno| RwLayerError::Mount {
                    container: container.clone(),
                    source: e.into(),
                };
                nix::sched::unshare(
                    nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS,
                )
                .map_err(|e| fail(rustix::io::Errno::from_raw_os_error(e as i32)))?;
                rustix::mount::mount_change(
                    "/",
                    rustix::mount::MountPropagationFlags::PRIVATE
                        | rustix::mount::MountPropagationFlags::REC,
                )
                .map_err(fail)?;
                rustix::process::chdir(&cwd).map_err(fail)?;
                rustix::mount::mount(
                    "overlay",
                    &t,
                    "overlay",
                    rustix::mount::MountFlags::RDONLY,
                    Some(
                        std::ffi::CString::new(data)
                            .map_err(|_| fail(rustix::io::Errno::INVAL))?
                            .as_c_str(),
                    ),
                )
                .map_err(fail)?;
                let root = rustix::fs::open(
                    &t,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(fail)?;
                let res = write_tree(root.as_fd(), TreeMode::Export, out);
                drop(root);
                let _ = rustix::mount::unmount(&t, rustix::mount::UnmountFlags::DETACH);
                res
            })
            .join()
            .map_err(|_| RwLayerError::Thread)?
        });
        if let Err(e) = std::fs::remove_dir(&target) {
            tracing::warn!(path = %target.display(), error = %e, "cannot remove export mount point");
        }
        res
    }
}

/// Whether `rel` exists in the lower layers (uppermost first), a whiteout hiding it.
fn in_lowers(lowers: &[OwnedFd], rel: &[u8]) -> bool {
    for l in lowers {
        let fd = rustix::fs::openat2(
            l,
            OsStr::from_bytes(rel),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        );
        if let Ok(fd) = fd {
            return match rustix::fs::fstat(&fd) {
                Ok(st) => !is_whiteout(&st),
                Err(_) => false,
            };
        }
    }
    false
}

fn changes_walk(
    dir: BorrowedFd<'_>,
    prefix: &[u8],
    lowers: &[OwnedFd],
    out: &mut Vec<Change>,
) -> Result<(), RwLayerError> {
    for name in children(dir).map_err(io_at("read directory", prefix))? {
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            [prefix, b"/", &name].concat()
        };
        let os_name = OsStr::from_bytes(&name);
        let st = match rustix::fs::statat(dir, os_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io_at("stat", &rel)(e)),
        };
        let path = format!("/{}", String::from_utf8_lossy(&rel));
        if is_whiteout(&st) {
            out.push(Change {
                path,
                kind: ChangeKind::Deleted,
            });
            continue;
        }
        let below = in_lowers(lowers, &rel);
        let kind = if below {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        out.push(Change { path, kind });
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let fd = match open_dir_at(dir, os_name) {
                Ok(fd) => fd,
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::LOOP) => continue,
                Err(e) => return Err(io_at("open directory", &rel)(e)),
            };
            changes_walk(fd.as_fd(), &rel, lowers, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "rwlayer_test.rs"]
mod tests;
