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
use super::tree::{children, io_at, is_whiteout, open_dir_at, write_tree, TreeMode};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
pub use wharf_protocol::image::{Change, ChangeKind};
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

fn io_path(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RwLayerError {
    let path = path.display().to_string();
    move |source| RwLayerError::Io {
        action,
        path,
        source,
    }
}

/// sha256 of the tar of an empty tree (two zero blocks): a commit that adds nothing.
pub fn empty_layer_diff_id() -> DiffId {
    DiffId(Digest::of(&[0u8; 1024]))
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
        if self.has_layer(top) && self.has_layer_tar(top, &diff_id) {
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
        let res = super::mount::with_private_overlay(
            &spec.cwd,
            &target,
            data,
            rustix::mount::MountFlags::RDONLY,
            |root| write_tree(root, TreeMode::Export, out),
        )
        .map_err(|e| match e {
            super::mount::PrivateMountError::Setup(source) => RwLayerError::Mount {
                container: container_id.to_string(),
                source,
            },
            super::mount::PrivateMountError::Thread => RwLayerError::Thread,
        })
        .and_then(|r| r);
        if let Err(e) = std::fs::remove_dir(&target) {
            tracing::warn!(path = %target.display(), error = %e, "cannot remove export mount point");
        }
        res
    }
}

/// Whether `rel` exists in the lower layers (uppermost first), a whiteout hiding it.
fn in_lowers(lowers: &[OwnedFd], rel: &[u8]) -> bool {
    for l in lowers {
        let fd = crate::resolve::openat2(
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
