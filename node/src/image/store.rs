//! The agent's layer store: unpacked image layers and containers' writable layers in moby's
//! overlay2 layout (see [`super::layout`]), plus each layer's canonical tar for `docker save`.
//!
//! Every directory becomes visible complete or not at all: it is built under
//! `overlay2/.tmp-*`, its `link`/`lower`/`size` files written and synced, then renamed into
//! place. [`ImageStore::open`] removes what a crash left behind. Image metadata (configs,
//! tags) is not kept here: the controller owns it.

use super::apply::{apply_layer_split, ApplyError};
use super::copy::read_full;
use super::layout::{self, Layout, MountSpec, MAX_LAYERS, TMP_PREFIX};
use super::tarsplit::{SplitSource, SplitWriter, TarSplitError};
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use wharf_protocol::{ChainId, DiffId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory of the store could not be read, written or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "create".
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A layer tar could not be applied.
    #[error("apply layer {diff_id}: {source}")]
    Apply {
        /// The layer's expected DiffID.
        diff_id: DiffId,
        /// What went wrong in the archive.
        #[source]
        source: ApplyError,
    },
    /// A layer's content does not hash to the DiffID the image config gives.
    #[error("layer content mismatch: expected {expected}, got {got}")]
    DiffIdMismatch {
        /// The DiffID the config names.
        expected: DiffId,
        /// The sha256 of what was read.
        got: DiffId,
    },
    /// A layer of the chain has not been loaded on this host.
    #[error("layer {0} is not present")]
    MissingLayer(DiffId),
    /// An overlay needs at least one lower layer; images without layers cannot run.
    #[error("image has no layers")]
    NoLowerLayers,
    /// The chain is deeper than overlay mounts allow.
    #[error("max depth exceeded: {count} layers, at most {max}")]
    TooManyLayers {
        /// Layers in the chain.
        count: usize,
        /// [`MAX_LAYERS`].
        max: usize,
    },
    /// The overlay option string does not fit in one page.
    #[error("overlay mount data is {len} bytes, more than the {max} a mount accepts")]
    MountDataTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A path cannot be put in overlay mount data (separator, not UTF-8, outside `cwd`).
    #[error("cannot use path {0:?} in overlay mount data")]
    BadMountPath(String),
    /// The container id cannot name a directory.
    #[error("invalid container id {0:?}")]
    InvalidContainerId(String),
    /// The container has no writable layer.
    #[error("no writable layer for container {0}")]
    NoSuchRwLayer(String),
    /// The writable layer exists but sits on other image layers than asked.
    #[error("writable layer of container {0} sits on other layers than its image")]
    RwLayerMismatch(String),
    /// A store metadata file holds something this code never writes.
    #[error("corrupt layer metadata {0}")]
    Corrupt(PathBuf),
    /// A layer's tar-split could not be read.
    #[error(transparent)]
    TarSplit(#[from] TarSplitError),
    /// A collection named a ticket this host does not know.
    #[error(transparent)]
    Lease(#[from] super::lease::LeaseError),
    /// `mount(2)` failed.
    #[error("mount overlay on {target}: {source}")]
    Mount {
        /// The merged directory.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `umount2(2)` failed with something other than "not mounted".
    #[error("unmount {target}: {source}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// Layers and writable layers on this host; cheap to clone, safe to share between threads.
#[derive(Clone, Debug)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    seq: AtomicU64,
    layer_lock: Arc<tokio::sync::RwLock<()>>,
    /// Layer directories a `docker save` is reading: a collection leaves them.
    pins: Mutex<HashMap<ChainId, usize>>,
    /// Layers added and not yet recorded by the controller, and open collections.
    leases: Mutex<super::lease::Leases>,
}

/// Keeps layer directory `chain` from being collected while it lives.
pub struct LayerPin {
    store: ImageStore,
    chain: ChainId,
}

impl Drop for LayerPin {
    fn drop(&mut self) {
        let mut pins = self
            .store
            .inner
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.chain) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.chain);
            }
        }
    }
}

/// Where `docker save` reads a layer's tar from: the kept canonical tar, or the layer's
/// directory through its tar-split.
pub enum LayerTar {
    /// `image/layers/<diffid>.tar`, already open.
    Kept {
        /// Its path (for errors).
        path: PathBuf,
        /// The open file.
        file: std::fs::File,
        /// Its length.
        len: u64,
    },
    /// Regenerated from `overlay2/<chain>/tar-split` and the layer's files.
    Split {
        /// The tar-split, read once.
        source: SplitSource,
        /// Keeps the directory from being collected meanwhile.
        pin: LayerPin,
    },
}

impl LayerTar {
    /// Length of the tar.
    pub fn len(&self) -> u64 {
        match self {
            LayerTar::Kept { len, .. } => *len,
            LayerTar::Split { source, .. } => source.len(),
        }
    }

    /// Whether the tar is empty (never for a valid layer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tar's bytes, from the start.
    pub fn reader(&self) -> io::Result<Box<dyn Read + '_>> {
        match self {
            LayerTar::Kept { file, .. } => {
                let mut f = file;
                io::Seek::rewind(&mut f)?;
                Ok(Box::new(f))
            }
            LayerTar::Split { source, .. } => {
                Ok(Box::new(source.reader().map_err(io::Error::other)?))
            }
        }
    }

    /// Where the tar comes from, for errors.
    pub fn describe(&self) -> PathBuf {
        match self {
            LayerTar::Kept { path, .. } => path.clone(),
            LayerTar::Split { pin, .. } => pin
                .store
                .layout()
                .layer_dir(&pin.chain)
                .join(super::tarsplit::FILE_NAME),
        }
    }
}

/// Removes a half-built path on drop unless disarmed.
struct TmpGuard(Option<PathBuf>);

/// A layer applied to a temporary directory (with its tar-split), not yet in its ChainID
/// place; dropping it removes it.
pub(crate) struct TempLayer {
    dir: TmpGuard,
    /// sha256 of the uncompressed tar.
    pub(crate) diff_id: DiffId,
    /// Bytes of regular files written.
    pub(crate) size: u64,
}

impl TmpGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for TmpGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let res = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove temporary");
                }
            }
        }
    }
}

impl ImageStore {
    /// Open (creating if needed) the store under data directory `root`, removing
    /// half-built directories a crash left; call once at agent start.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        let layout = Layout::new(root);
        for dir in [
            layout.overlay(),
            layout.links(),
            layout.layer_tars(),
            layout.spool(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        for dir in [layout.overlay(), layout.layer_tars(), layout.spool()] {
            let spool = dir == layout.spool();
            for e in std::fs::read_dir(&dir).map_err(io_err("read", &dir))? {
                let e = e.map_err(io_err("read", &dir))?;
                if !spool && !e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    continue;
                }
                let p = e.path();
                tracing::info!(path = %p.display(), "removing leftover from an interrupted operation");
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                let res = if is_dir {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                res.map_err(io_err("remove", &p))?;
            }
        }
        Ok(ImageStore {
            inner: Arc::new(Inner {
                layout,
                seq: AtomicU64::new(0),
                layer_lock: Arc::default(),
                pins: Mutex::default(),
                leases: Mutex::default(),
            }),
        })
    }

    /// The lock between adding layers and collecting unused ones, held within one agent
    /// call only: shared while a load, import or commit puts layers in place and leases
    /// them, exclusively around a collection ([`ImageStore::collect`]), so a collection
    /// never frees a layer that is about to be leased. What outlives the call (until the
    /// controller has recorded the image) is the lease (see [`super::lease`]).
    pub fn layer_lock(&self) -> Arc<tokio::sync::RwLock<()>> {
        self.inner.layer_lock.clone()
    }

    /// The leases and open collections (see [`super::lease`]).
    pub(crate) fn leases(&self) -> std::sync::MutexGuard<'_, super::lease::Leases> {
        self.inner.leases.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where everything lives.
    pub fn layout(&self) -> &Layout {
        &self.inner.layout
    }

    /// A fresh `.tmp-<what>-<pid>-<n>` name, unique within this host.
    pub(crate) fn tmp_name(&self, what: &str) -> String {
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        format!("{TMP_PREFIX}{what}-{}-{n}", std::process::id())
    }

    /// Whether the unpacked layer `chain` is present.
    pub fn has_layer(&self, chain: &ChainId) -> bool {
        self.layout().layer_dir(chain).join("diff").is_dir()
    }

    /// True when every layer of the chain is present.
    pub fn has_layers(&self, diff_ids: &[DiffId]) -> bool {
        ChainId::chain(diff_ids).iter().all(|c| self.has_layer(c))
    }

    /// Bytes of regular files in the unpacked layers of the chain, summed (what `docker
    /// images` shows as SIZE); layers that are missing count 0.
    pub fn layers_size(&self, diff_ids: &[DiffId]) -> u64 {
        ChainId::chain(diff_ids)
            .iter()
            .filter_map(|c| {
                let p = self.layout().layer_dir(c).join("size");
                std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok()
            })
            .sum()
    }

    /// The canonical uncompressed tar of layer `diff_id`, if kept; call to `docker save`.
    pub fn layer_tar_path(&self, diff_id: &DiffId) -> Option<PathBuf> {
        let p = self.layout().layer_tar(diff_id);
        p.is_file().then_some(p)
    }

    /// Whether `docker save` can give back the tar of layer `diff_id`, unpacked as
    /// `chain`: its canonical tar is kept, or the layer directory has a tar-split.
    pub fn has_layer_tar(&self, chain: &ChainId, diff_id: &DiffId) -> bool {
        self.layout().layer_tar(diff_id).is_file()
            || self
                .layout()
                .layer_dir(chain)
                .join(super::tarsplit::FILE_NAME)
                .is_file()
    }

    /// Open the tar of layer `diff_id` (unpacked as `chain`) for reading: the kept
    /// canonical tar if there is one, otherwise the layer's tar-split, pinned so that a
    /// collection leaves the layer until the result is dropped.
    pub fn open_layer_tar(
        &self,
        chain: &ChainId,
        diff_id: &DiffId,
    ) -> Result<LayerTar, StoreError> {
        let kept = self.layout().layer_tar(diff_id);
        match std::fs::File::open(&kept) {
            Ok(file) => {
                let len = file.metadata().map_err(io_err("stat", &kept))?.len();
                return Ok(LayerTar::Kept {
                    path: kept,
                    file,
                    len,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("open", &kept)(e)),
        }
        let pin = self.pin(chain);
        let dir = self.layout().layer_dir(chain);
        if !dir.join(super::tarsplit::FILE_NAME).is_file() {
            return Err(StoreError::MissingLayer(*diff_id));
        }
        let source = SplitSource::open(&dir, *diff_id).map_err(StoreError::TarSplit)?;
        Ok(LayerTar::Split { source, pin })
    }

    /// Keep layer directory `chain` from being collected until the result is dropped.
    pub fn pin(&self, chain: &ChainId) -> LayerPin {
        let mut pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
        *pins.entry(*chain).or_default() += 1;
        LayerPin {
            store: self.clone(),
            chain: *chain,
        }
    }

    /// Whether a [`LayerPin`] of `chain` is alive.
    pub(crate) fn is_pinned(&self, chain: &ChainId) -> bool {
        let pins = self.inner.pins.lock().unwrap_or_else(|p| p.into_inner());
        pins.contains_key(chain)
    }

    /// Unpack the uncompressed layer tar `reader` as layer `chain` on top of `parent`
    /// (`None` for the bottom layer), checking its sha256 against `expected`; also keeps
    /// the tar as `image/layers/<diffid>.tar` if not there yet. Returns the layer's size.
    /// If the layer is already present, returns at once without reading `reader`. On any
    /// error the store is left as it was.
    pub fn unpack_layer(
        &self,
        parent: Option<&ChainId>,
        chain: &ChainId,
        expected: &DiffId,
        reader: impl Read,
    ) -> Result<u64, StoreError> {
        if self.has_layer(chain) {
            return Ok(self.layers_size_of(chain));
        }
        if let Some(p) = parent {
            if !self.has_layer(p) {
                return Err(StoreError::MissingLayer(DiffId(p.0)));
            }
        }
        let temp = self.apply_pipelined(reader).map_err(|e| match e {
            StoreError::Apply { source, .. } => StoreError::Apply {
                diff_id: *expected,
                source,
            },
            e => e,
        })?;
        if temp.diff_id != *expected {
            return Err(StoreError::DiffIdMismatch {
                expected: *expected,
                got: temp.diff_id,
            });
        }
        self.commit_temp(temp, parent, chain, true)
    }

    /// Apply the uncompressed layer tar `reader` to a fresh temporary directory (overlay
    /// layer directories hold only their own changes, so no parent is needed), recording
    /// its tar-split there; nothing is synced. With `hash`, the DiffID is computed here;
    /// without, the caller sets it (see [`ImageStore::apply_pipelined`]). `expected` only
    /// names the layer in errors. Dropping the result removes everything it made.
    pub(crate) fn apply_to_temp(
        &self,
        reader: impl Read,
        expected: Option<&DiffId>,
        hash: bool,
    ) -> Result<TempLayer, StoreError> {
        let layout = self.layout();
        let tmp = layout.overlay().join(self.tmp_name("layer"));
        let guard = TmpGuard(Some(tmp.clone()));
        let diff = tmp.join("diff");
        std::fs::create_dir(&tmp).map_err(io_err("create", &tmp))?;
        std::fs::create_dir(&diff).map_err(io_err("create", &diff))?;
        let diff_fd = std::fs::File::open(&diff).map_err(io_err("open", &diff))?;
        let split = SplitWriter::create(&tmp).map_err(io_err("create tar-split in", &tmp))?;
        let split = RefCell::new(split);
        let zero = DiffId(wharf_protocol::Digest([0; 32]));
        let (digest, size) =
            apply_layer_split(diff_fd.as_fd(), reader, &split, hash).map_err(|source| {
                StoreError::Apply {
                    diff_id: expected.copied().unwrap_or(zero),
                    source,
                }
            })?;
        split
            .into_inner()
            .finish()
            .map_err(io_err("write tar-split in", &tmp))?;
        Ok(TempLayer {
            dir: guard,
            diff_id: digest.unwrap_or(zero),
            size,
        })
    }

    /// [`ImageStore::apply_to_temp`] reading `reader` on this thread, hashing and
    /// applying it on two others (see [`apply_pipelined`]).
    pub(crate) fn apply_pipelined(&self, reader: impl Read) -> Result<TempLayer, StoreError> {
        apply_pipelined(self, reader)
    }

    /// Put a layer applied by [`ImageStore::apply_to_temp`] (its DiffID checked by the
    /// caller) in place as layer `chain` on top of `parent`, with its tar-split. With
    /// `sync`, its files are synced first; without, the caller has synced the filesystem
    /// since the layer was applied. An already present layer
    /// wins; the temporary is then removed. Returns the layer's size.
    pub(crate) fn commit_temp(
        &self,
        mut temp: TempLayer,
        parent: Option<&ChainId>,
        chain: &ChainId,
        sync: bool,
    ) -> Result<u64, StoreError> {
        let layout = self.layout();
        let hex = chain.0.hex();
        let final_dir = layout.layer_dir(chain);
        let size = if self.has_layer(chain) {
            self.layers_size_of(chain)
        } else {
            let lower = match parent {
                None => None,
                Some(p) => {
                    if !self.has_layer(p) {
                        return Err(StoreError::MissingLayer(DiffId(p.0)));
                    }
                    let (link, lower) = self.read_link_lower(&layout.layer_dir(p))?;
                    Some(layout::child_lower(&link, lower.as_deref()))
                }
            };
            let tmp = temp.dir.0.clone().ok_or_else(|| {
                StoreError::Corrupt(layout.overlay().join("(committed temporary)"))
            })?;
            let link = layout::link_name(&hex);
            write_file(&tmp.join("link"), link.as_bytes())?;
            if let Some(lower) = &lower {
                write_file(&tmp.join("lower"), lower.as_bytes())?;
                let work = tmp.join("work");
                std::fs::create_dir(&work).map_err(io_err("create", &work))?;
            }
            write_file(&tmp.join("size"), temp.size.to_string().as_bytes())?;
            if sync {
                let diff = tmp.join("diff");
                std::fs::File::open(&diff)
                    .and_then(|f| rustix::fs::syncfs(&f).map_err(io::Error::from))
                    .map_err(io_err("sync", &diff))?;
            }
            self.make_link(&link, &hex)?;
            match std::fs::rename(&tmp, &final_dir) {
                Ok(()) => temp.dir.disarm(),
                // Another load of the same layer won the race; its directory is as good.
                Err(_) if self.has_layer(chain) => {}
                Err(e) => return Err(io_err("rename", &tmp)(e)),
            }
            sync_dir(&layout.overlay())?;
            tracing::info!(layer = %chain, diff_id = %temp.diff_id, size = temp.size, "layer unpacked");
            temp.size
        };
        Ok(size)
    }

    /// Sync the filesystems of the layer directories and layer tars (once after applying
    /// several layers with [`ImageStore::apply_to_temp`], before committing them).
    pub(crate) fn sync_filesystem(&self) -> Result<(), StoreError> {
        for dir in [self.layout().overlay(), self.layout().layer_tars()] {
            std::fs::File::open(&dir)
                .and_then(|f| rustix::fs::syncfs(&f).map_err(io::Error::from))
                .map_err(io_err("sync", &dir))?;
        }
        Ok(())
    }

    /// Keep `reader` (an uncompressed layer tar) as the canonical tar of `expected` after
    /// checking its sha256; call when a layer is present but its tar is not.
    pub fn store_layer_tar(
        &self,
        expected: &DiffId,
        mut reader: impl Read,
    ) -> Result<(), StoreError> {
        use sha2::Digest as _;
        let layout = self.layout();
        let tar_final = layout.layer_tar(expected);
        if tar_final.is_file() {
            return Ok(());
        }
        let p = layout
            .layer_tars()
            .join(self.tmp_name(&expected.0.hex()[..12]));
        let mut guard = TmpGuard(Some(p.clone()));
        let f = std::fs::File::create(&p).map_err(io_err("create", &p))?;
        let mut w = BufWriter::new(f);
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read layer for", &p)(e)),
            };
            hasher.update(&buf[..n]);
            w.write_all(&buf[..n]).map_err(io_err("write", &p))?;
        }
        let got = DiffId(wharf_protocol::Digest(hasher.finalize().into()));
        if got != *expected {
            return Err(StoreError::DiffIdMismatch {
                expected: *expected,
                got,
            });
        }
        let f = w
            .into_inner()
            .map_err(|e| io_err("write", &p)(e.into_error()))?;
        f.sync_all().map_err(io_err("sync", &p))?;
        std::fs::rename(&p, &tar_final).map_err(io_err("rename", &p))?;
        guard.disarm();
        Ok(())
    }

    /// Make the already hashed, uncompressed layer tar at `path` (a spool file on this
    /// filesystem) the canonical tar of `diff_id` by hard-linking it into place after a
    /// sync; `false` when there already is one. The caller has checked its sha256.
    pub(crate) fn adopt_layer_tar(
        &self,
        diff_id: &DiffId,
        path: &Path,
    ) -> Result<bool, StoreError> {
        let layout = self.layout();
        let tar_final = layout.layer_tar(diff_id);
        if tar_final.is_file() {
            return Ok(false);
        }
        let tmp = layout
            .layer_tars()
            .join(self.tmp_name(&diff_id.0.hex()[..12]));
        let mut guard = TmpGuard(Some(tmp.clone()));
        std::fs::hard_link(path, &tmp).map_err(io_err("link", &tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err("sync", &tmp))?;
        std::fs::rename(&tmp, &tar_final).map_err(io_err("rename", &tmp))?;
        guard.disarm();
        sync_dir(&layout.layer_tars())?;
        Ok(true)
    }

    /// Remove the canonical tar of `diff_id` (a layer that failed to apply after its tar
    /// was adopted); failures are logged.
    pub(crate) fn forget_layer_tar(&self, diff_id: &DiffId) {
        let p = self.layout().layer_tar(diff_id);
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %p.display(), error = %e, "cannot remove layer tar");
            }
        }
    }

    fn layers_size_of(&self, chain: &ChainId) -> u64 {
        let p = self.layout().layer_dir(chain).join("size");
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `link` and, unless this is a bottom layer, `lower` of a layer or writable layer dir.
    fn read_link_lower(&self, dir: &Path) -> Result<(String, Option<String>), StoreError> {
        let link_path = dir.join("link");
        let link = std::fs::read_to_string(&link_path).map_err(io_err("read", &link_path))?;
        let link = link.trim().to_string();
        if link.len() != layout::LINK_LEN || !link.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(StoreError::Corrupt(link_path));
        }
        let lower_path = dir.join("lower");
        let lower = match std::fs::read_to_string(&lower_path) {
            Ok(s) => Some(s.trim().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &lower_path)(e)),
        };
        Ok((link, lower))
    }

    /// `l/<link> -> ../<dir>/diff`; an existing identical link is fine.
    fn make_link(&self, link: &str, dir_name: &str) -> Result<(), StoreError> {
        let path = self.layout().links().join(link);
        let target = PathBuf::from(format!("../{dir_name}/diff"));
        match std::os::unix::fs::symlink(&target, &path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match std::fs::read_link(&path) {
                Ok(t) if t == target => Ok(()),
                _ => Err(StoreError::Corrupt(path)),
            },
            Err(e) => Err(io_err("symlink", &path)(e)),
        }
    }

    /// The `l/<short>` names of the chain's layers, uppermost first.
    fn chain_lowers(&self, diff_ids: &[DiffId]) -> Result<Vec<String>, StoreError> {
        if diff_ids.is_empty() {
            return Err(StoreError::NoLowerLayers);
        }
        if diff_ids.len() > MAX_LAYERS {
            return Err(StoreError::TooManyLayers {
                count: diff_ids.len(),
                max: MAX_LAYERS,
            });
        }
        let chain = ChainId::chain(diff_ids);
        for (c, d) in chain.iter().zip(diff_ids) {
            if !self.has_layer(c) {
                return Err(StoreError::MissingLayer(*d));
            }
        }
        let top = chain.last().ok_or(StoreError::NoLowerLayers)?;
        let (link, lower) = self.read_link_lower(&self.layout().layer_dir(top))?;
        let mut out = vec![format!("l/{link}")];
        out.extend(
            lower
                .iter()
                .flat_map(|l| l.split(':'))
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        );
        if out.len() != diff_ids.len() {
            return Err(StoreError::Corrupt(
                self.layout().layer_dir(top).join("lower"),
            ));
        }
        Ok(out)
    }

    /// Create the writable layer for a container on top of the image's layers; returns its
    /// mount spec. Idempotent: an existing writable layer on the same layers is returned.
    pub fn create_rw_layer(
        &self,
        container_id: &str,
        diff_ids: &[DiffId],
    ) -> Result<MountSpec, StoreError> {
        if !layout::valid_container_id(container_id) {
            return Err(StoreError::InvalidContainerId(container_id.to_string()));
        }
        let mut lowers = self.chain_lowers(diff_ids)?;
        let layout = self.layout();
        let dir = layout.rw_dir(container_id);
        if dir.exists() {
            return self.rw_mount_spec(container_id, diff_ids);
        }
        let init_link = self.create_init_layer(container_id)?;
        lowers.insert(0, format!("l/{init_link}"));
        let tmp = layout.overlay().join(self.tmp_name("rw"));
        let mut guard = TmpGuard(Some(tmp.clone()));
        for sub in ["", "diff", "work", "merged"] {
            let p = tmp.join(sub);
            std::fs::create_dir(&p).map_err(io_err("create", &p))?;
        }
        let link = layout::link_name(container_id);
        write_file(&tmp.join("link"), link.as_bytes())?;
        write_file(&tmp.join("lower"), lowers.join(":").as_bytes())?;
        self.make_link(&link, container_id)?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => guard.disarm(),
            Err(_) if dir.exists() => return self.rw_mount_spec(container_id, diff_ids),
            Err(e) => return Err(io_err("rename", &tmp)(e)),
        }
        sync_dir(&layout.overlay())?;
        tracing::info!(
            container = container_id,
            layers = lowers.len(),
            "writable layer created"
        );
        Ok(layout.rw_mount(container_id, lowers))
    }

    /// Create the container's init layer `<id>-init` (moby's): the mount points the
    /// runtime binds over (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`,
    /// `/dev/console`, `/dev/pts`, `/dev/shm`, `/proc`, `/sys`), `/.dockerenv` and
    /// `/etc/mtab -> /proc/mounts`, so that they never land in the writable layer (and in
    /// `docker diff` or `docker commit`). Returns its short link name; an existing one is
    /// reused.
    fn create_init_layer(&self, container_id: &str) -> Result<String, StoreError> {
        let layout = self.layout();
        let name = layout::init_dir_name(container_id);
        let link = layout::link_name(&name);
        let dir = layout.rw_dir(&name);
        if dir.join("diff").is_dir() {
            self.make_link(&link, &name)?;
            return Ok(link);
        }
        let tmp = layout.overlay().join(self.tmp_name("init"));
        let mut guard = TmpGuard(Some(tmp.clone()));
        let diff = tmp.join("diff");
        for sub in [
            "",
            "diff",
            "diff/dev",
            "diff/dev/pts",
            "diff/dev/shm",
            "diff/etc",
            "diff/proc",
            "diff/sys",
        ] {
            let p = tmp.join(sub);
            std::fs::create_dir(&p).map_err(io_err("create", &p))?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &p))?;
        }
        for f in [
            ".dockerenv",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "dev/console",
        ] {
            let p = diff.join(f);
            std::fs::File::create(&p).map_err(io_err("create", &p))?;
            std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io_err("chmod", &p))?;
        }
        let mtab = diff.join("etc/mtab");
        std::os::unix::fs::symlink("/proc/mounts", &mtab).map_err(io_err("symlink", &mtab))?;
        write_file(&tmp.join("link"), link.as_bytes())?;
        self.make_link(&link, &name)?;
        match std::fs::rename(&tmp, &dir) {
            Ok(()) => guard.disarm(),
            Err(_) if dir.join("diff").is_dir() => {}
            Err(e) => return Err(io_err("rename", &tmp)(e)),
        }
        Ok(link)
    }

    /// The mount spec of an existing writable layer (after an agent restart). With
    /// `diff_ids` empty the layers recorded on disk are used unchecked; otherwise they must
    /// be the chain's.
    pub fn rw_mount_spec(
        &self,
        container_id: &str,
        diff_ids: &[DiffId],
    ) -> Result<MountSpec, StoreError> {
        if !layout::valid_container_id(container_id) {
            return Err(StoreError::InvalidContainerId(container_id.to_string()));
        }
        let dir = self.layout().rw_dir(container_id);
        if !dir.join("diff").is_dir() {
            return Err(StoreError::NoSuchRwLayer(container_id.to_string()));
        }
        let (_, lower) = self.read_link_lower(&dir)?;
        let lowers: Vec<String> = lower
            .unwrap_or_default()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !diff_ids.is_empty() {
            // Writable layers made before init layers existed have none.
            let init = format!(
                "l/{}",
                layout::link_name(&layout::init_dir_name(container_id))
            );
            let image_lowers = match lowers.split_first() {
                Some((first, rest)) if *first == init => rest,
                _ => &lowers[..],
            };
            if self.chain_lowers(diff_ids)? != image_lowers {
                return Err(StoreError::RwLayerMismatch(container_id.to_string()));
            }
        }
        Ok(self.layout().rw_mount(container_id, lowers))
    }

    /// Remove a container's writable layer, unmounting it first if it is still mounted.
    /// Removing one that does not exist is not an error.
    pub fn remove_rw_layer(&self, container_id: &str) -> Result<(), StoreError> {
        if !layout::valid_container_id(container_id) {
            return Err(StoreError::InvalidContainerId(container_id.to_string()));
        }
        let layout = self.layout();
        let dir = layout.rw_dir(container_id);
        if !dir.exists() {
            return Ok(());
        }
        super::mount::unmount(&dir.join("merged"))?;
        if let Ok((link, _)) = self.read_link_lower(&dir) {
            let p = layout.links().join(link);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(io_err("remove", &p)(e));
                }
            }
        }
        let tmp = layout.overlay().join(self.tmp_name("rm"));
        std::fs::rename(&dir, &tmp).map_err(io_err("rename", &dir))?;
        std::fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        let init_name = layout::init_dir_name(container_id);
        let init = layout.rw_dir(&init_name);
        if init.exists() {
            let p = layout.links().join(layout::link_name(&init_name));
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(io_err("remove", &p)(e));
                }
            }
            let tmp = layout.overlay().join(self.tmp_name("rm"));
            std::fs::rename(&init, &tmp).map_err(io_err("rename", &init))?;
            std::fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
        }
        tracing::info!(container = container_id, "writable layer removed");
        Ok(())
    }
}

/// Chunks in flight to each of the hashing and applying threads.
const PIPE_DEPTH: usize = 16;

/// Size of those chunks: small enough that a chunk is still in the cache when both
/// threads read it.
const PIPE_CHUNK: usize = 256 << 10;

/// Nice value of the hashing thread (see [`apply_pipelined`]).
const HASHER_NICE: i32 = -5;

/// The applying side of [`apply_pipelined`]: shared chunks in.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Arc<Vec<u8>>>,
    cur: Arc<Vec<u8>>,
    pos: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.cur.len() {
            let Ok(next) = self.rx.recv() else {
                return Ok(0);
            };
            // Dropping the used chunk lets the reader reuse it.
            self.cur = next;
            self.pos = 0;
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// [`ImageStore::apply_to_temp`] on three threads, so that hashing, the costliest step,
/// has a core to itself:
///
/// ```text
///  this thread: read `layer` (decompressing) ──chunk──► hashing thread: sha256 (DiffID)
///                                            └─chunk──► applying thread: tar ─► diff/
/// ```
///
/// Chunks are shared, and reused once both threads dropped them. An error on the reading
/// side wins over whatever the applying side made of the stream cut short.
fn apply_pipelined(store: &ImageStore, mut layer: impl Read) -> Result<TempLayer, StoreError> {
    let read_err = |source| StoreError::Apply {
        diff_id: DiffId(wharf_protocol::Digest([0; 32])),
        source: ApplyError::Read(source),
    };
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(PIPE_DEPTH);
        let (htx, hrx) = std::sync::mpsc::sync_channel::<Arc<Vec<u8>>>(PIPE_DEPTH);
        let worker = scope.spawn(move || {
            let r = ChunkReader {
                rx,
                cur: Arc::default(),
                pos: 0,
            };
            store.apply_to_temp(r, None, false)
        });
        let hasher = scope.spawn(move || {
            // The hash is the load's critical path (the other threads together need less
            // than a core): ahead of this load's own reading and applying threads, so that
            // they fill the other core instead of taking turns with it. Best effort (it
            // needs CAP_SYS_NICE); the thread ends with the layer.
            let _ = rustix::process::setpriority_process(None, HASHER_NICE);
            let mut h = Sha256::new();
            for chunk in hrx {
                h.update(chunk.as_slice());
            }
            let d: [u8; 32] = h.finalize().into();
            DiffId(wharf_protocol::Digest(d))
        });
        let fed = (|| -> Result<(), StoreError> {
            let mut pool: Vec<Arc<Vec<u8>>> = Vec::new();
            loop {
                let mut chunk = match pool.iter().position(|c| Arc::strong_count(c) == 1) {
                    Some(i) => pool.swap_remove(i),
                    None => Arc::default(),
                };
                // Unique here (a free pooled chunk or a new one), so this never copies.
                let buf = Arc::make_mut(&mut chunk);
                buf.resize(PIPE_CHUNK, 0);
                let n = read_full(&mut layer, buf).map_err(read_err)?;
                if n == 0 {
                    return Ok(());
                }
                buf.truncate(n);
                if htx.send(chunk.clone()).is_err() || tx.send(chunk.clone()).is_err() {
                    // The applying side stopped: its error says why.
                    return Ok(());
                }
                pool.push(chunk);
            }
        })();
        drop(tx);
        drop(htx);
        let applied = worker
            .join()
            .unwrap_or_else(|_| Err(read_err(io::Error::other("layer apply thread panicked"))));
        let diff_id = hasher
            .join()
            .map_err(|_| read_err(io::Error::other("layer hash thread panicked")));
        fed?;
        let mut temp = applied?;
        temp.diff_id = diff_id?;
        Ok(temp)
    })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let mut f = std::fs::File::create(path).map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("sync", path))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("sync", path))
}

#[cfg(test)]
#[path = "store_test.rs"]
mod tests;
