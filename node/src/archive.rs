//! `docker cp`: stat, read and write paths of a container's root filesystem, running or
//! not, without ever leaving it (moby CVE-2018-15664).
//!
//! ```text
//!  running:  DATA_DIR/overlay2/<id>/merged (the shim's mount) ──┐
//!  stopped:  rw overlay in a private mount ns of one thread ────┴─► root fd
//!     path ──ContainerPath::parse (pure)──► openat2(root, RESOLVE_IN_ROOT|NO_MAGICLINKS)
//!        HEAD ► PathStat   GET ► tar (entry, then write_tree's children renamed base/…)
//!        PUT  ► spool ► validate (a tar, names inside, no dir/non-dir clash) ► apply_tar
//! ```
//!
//! Every lookup starts at the container's root fd and resolves with `RESOLVE_IN_ROOT`, so
//! an absolute symlink planted in the container (`/escape -> /`) means the container's
//! root, and `..` stops there. Writes go through [`apply_tar`], which creates each entry
//! in a parent resolved the same way. Paths under volumes and bind mounts are not seen:
//! the view is the overlay alone.

use crate::image::apply::{apply_tar, clean, ApplyError, ApplyOptions};
use crate::image::mount::{with_private_overlay, PrivateMountError};
use crate::image::rwlayer::RwLayerError;
use crate::image::tree::{header_for, write_tree, Exact, TreeMode};
use crate::image::{ImageStore, StoreError};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::mount::MountFlags;
use std::ffi::OsStr;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;
pub use wharf_protocol::archive::{ContainerPath, ExtractOptions, PathStat};

/// Why a copy to or from a container failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The path does not exist in the container (or a parent is not a directory).
    #[error("could not find the file {path}")]
    NotFound {
        /// The path as the client gave it.
        path: String,
    },
    /// `PUT` to a path that is not a directory.
    #[error("extraction point is not a directory")]
    NotADirectory,
    /// The request body is not a tar, or it names entries outside the extraction point.
    #[error("invalid tar archive: {0}")]
    BadArchive(String),
    /// An entry would replace a directory with a non-directory or the reverse.
    #[error("{0}")]
    Conflict(String),
    /// The container's writable layer could not be found.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The private mount of a stopped container's root filesystem failed.
    #[error("mount the root filesystem of {container}: {source}")]
    Mount {
        /// The container.
        container: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A system call on a path inside the container, or on the spool, failed.
    #[error("{action} {path:?}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path inside the container.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the archive's entries failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Reading a directory tree into the archive failed.
    #[error(transparent)]
    Tree(#[from] RwLayerError),
    /// A helper thread died.
    #[error("archive thread panicked")]
    Thread,
}

impl ArchiveError {
    /// Whether the failure is the container filesystem being read-only (`EROFS`).
    pub fn is_read_only(&self) -> bool {
        let os = match self {
            ArchiveError::Io { source, .. } => source.raw_os_error(),
            ArchiveError::Apply(ApplyError::Os { source, .. }) => source.raw_os_error(),
            _ => None,
        };
        os == Some(libc::EROFS)
    }
}

fn io_err(action: &'static str, path: &[u8]) -> impl FnOnce(rustix::io::Errno) -> ArchiveError {
    let path = String::from_utf8_lossy(path).into_owned();
    move |e| ArchiveError::Io {
        action,
        path,
        source: e.into(),
    }
}

/// Go's `os.FileMode` for a `st_mode`. Pure.
pub fn go_file_mode(st_mode: u32) -> u32 {
    let mut m = st_mode & 0o777;
    m |= match FileType::from_raw_mode(st_mode) {
        FileType::Directory => 1 << 31,
        FileType::Symlink => 1 << 27,
        FileType::BlockDevice => 1 << 26,
        FileType::Fifo => 1 << 25,
        FileType::Socket => 1 << 24,
        FileType::CharacterDevice => (1 << 26) | (1 << 21),
        _ => 0,
    };
    if st_mode & 0o4000 != 0 {
        m |= 1 << 23;
    }
    if st_mode & 0o2000 != 0 {
        m |= 1 << 22;
    }
    if st_mode & 0o1000 != 0 {
        m |= 1 << 20;
    }
    m
}

/// One private mount at a time: two overlays on one upper dir are undefined behaviour.
static PRIVATE_MOUNT: Mutex<()> = Mutex::new(());

/// Run `f` on the root directory fd of container `container_id`'s filesystem: the
/// shim's overlay mount while the container runs, else the overlay mounted read-write in a
/// private mount namespace of a thread of its own, unmounted when `f` returns. Blocking.
pub fn with_root<T, F>(store: &ImageStore, container_id: &str, f: F) -> Result<T, ArchiveError>
where
    T: Send,
    F: FnOnce(BorrowedFd<'_>) -> Result<T, ArchiveError> + Send,
{
    let spec = store.rw_mount_spec(container_id, &[])?;
    if let Some(root) = open_if_mounted(&spec.target) {
        return f(root.as_fd());
    }
    let _one = PRIVATE_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    let data = spec.data()?;
    let target = store.layout().overlay().join(store.tmp_name("cp"));
    std::fs::create_dir(&target).map_err(|source| ArchiveError::Mount {
        container: container_id.to_string(),
        source,
    })?;
    let res = with_private_overlay(&spec.cwd, &target, data, MountFlags::empty(), f)
        .map_err(|e| match e {
            PrivateMountError::Setup(source) => ArchiveError::Mount {
                container: container_id.to_string(),
                source,
            },
            PrivateMountError::Thread => ArchiveError::Thread,
        })
        .and_then(|r| r);
    if let Err(e) = std::fs::remove_dir(&target) {
        tracing::warn!(path = %target.display(), error = %e, "cannot remove cp mount point");
    }
    res
}

/// The merged dir as a directory fd if an overlay is mounted there (its device differs
/// from its parent's).
fn open_if_mounted(merged: &Path) -> Option<OwnedFd> {
    let fd = rustix::fs::open(
        merged,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let here = rustix::fs::fstat(&fd).ok()?;
    let parent = rustix::fs::statat(&fd, "..", AtFlags::empty()).ok()?;
    (here.st_dev != parent.st_dev).then_some(fd)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Open `comps` under `root`, every symlink resolved inside it.
fn open_in(root: BorrowedFd<'_>, comps: &[Vec<u8>], flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let joined = if comps.is_empty() {
        b".".to_vec()
    } else {
        comps.join(&b'/')
    };
    crate::resolve::openat2(
        root,
        os(&joined),
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Whether `path` inside `root` is a directory, symlinks followed inside it.
pub fn is_dir(root: BorrowedFd<'_>, path: &str) -> bool {
    open_in(
        root,
        &ContainerPath::parse(path).comps,
        OFlags::PATH | OFlags::DIRECTORY,
    )
    .is_ok()
}

/// The path of `fd` below `root`, as components (empty for the root itself).
fn rel_path(root: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> Result<Vec<Vec<u8>>, ArchiveError> {
    let link = |fd: BorrowedFd<'_>| {
        let p = format!("/proc/thread-self/fd/{}", fd.as_raw_fd());
        rustix::fs::readlink(p.as_str(), Vec::new())
            .map(|c| c.into_bytes())
            .map_err(io_err("read fd path", p.as_bytes()))
    };
    let base = link(root)?;
    let full = link(fd)?;
    let rest = full
        .strip_prefix(base.as_slice())
        .filter(|r| r.is_empty() || r.starts_with(b"/"))
        .ok_or_else(|| ArchiveError::Io {
            action: "locate",
            path: String::from_utf8_lossy(&full).into_owned(),
            source: io::Error::other("resolved outside the container root"),
        })?;
    Ok(clean(rest)
        .unwrap_or_default()
        .into_iter()
        .map(<[u8]>::to_vec)
        .collect())
}

/// A path found in the container: the root itself, or `name` in the directory `parent`.
enum Found {
    Root,
    Entry {
        parent: OwnedFd,
        parent_comps: Vec<Vec<u8>>,
        name: Vec<u8>,
    },
}

fn not_found(shown: &str) -> impl FnOnce(rustix::io::Errno) -> ArchiveError + '_ {
    move |e| match e {
        rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP => {
            ArchiveError::NotFound {
                path: shown.to_string(),
            }
        }
        e => io_err("resolve", shown.as_bytes())(e),
    }
}

/// Find `path` in the container and lstat it (a followed last symlink is replaced by
/// its resolved location).
fn find(root: BorrowedFd<'_>, path: &str) -> Result<(Found, Stat), ArchiveError> {
    let mut p = ContainerPath::parse(path);
    if p.follow_last && !p.comps.is_empty() {
        // `dir/` and `dir/.` name a directory, as the kernel reads a trailing slash.
        let fd =
            open_in(root, &p.comps, OFlags::PATH | OFlags::DIRECTORY).map_err(not_found(path))?;
        p.comps = rel_path(root, fd.as_fd())?;
    }
    let Some((name, parent_comps)) = p.comps.split_last() else {
        let st = rustix::fs::fstat(root).map_err(io_err("stat", b"/"))?;
        return Ok((Found::Root, st));
    };
    let parent =
        open_in(root, parent_comps, OFlags::PATH | OFlags::DIRECTORY).map_err(not_found(path))?;
    let st = rustix::fs::statat(&parent, os(name), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(not_found(path))?;
    Ok((
        Found::Entry {
            parent,
            parent_comps: parent_comps.to_vec(),
            name: name.clone(),
        },
        st,
    ))
}

/// `HEAD /containers/{id}/archive?path=`: stat `path` inside `root`.
pub fn stat_path(root: BorrowedFd<'_>, path: &str) -> Result<PathStat, ArchiveError> {
    let (found, st) = find(root, path)?;
    let mut link_target = String::new();
    if let Found::Entry {
        parent,
        parent_comps,
        name,
    } = &found
    {
        if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
            let mut all = parent_comps.clone();
            all.push(name.clone());
            let resolved = match open_in(root, &all, OFlags::PATH) {
                Ok(fd) => rel_path(root, fd.as_fd())?,
                // Dangling: its target, read lexically from where the link is.
                Err(_) => {
                    let t = rustix::fs::readlinkat(parent, os(name), Vec::new())
                        .map_err(io_err("read link", name))?;
                    let t = t.as_bytes();
                    let joined = if t.starts_with(b"/") {
                        t.to_vec()
                    } else {
                        [parent_comps.join(&b'/').as_slice(), b"/", t].concat()
                    };
                    ContainerPath::parse(&String::from_utf8_lossy(&joined)).comps
                }
            };
            link_target = format!("/{}", String::from_utf8_lossy(&resolved.join(&b'/')));
        }
    }
    Ok(PathStat {
        name: ContainerPath::parse(path).name(),
        size: st.st_size,
        mode: go_file_mode(st.st_mode),
        mtime_secs: st.st_mtime,
        mtime_nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        link_target,
    })
}

/// `GET /containers/{id}/archive?path=`: write `path` inside `root` as a tar to `out`,
/// its entries named from the path's base name (`etc/`, `etc/hostname`, ...).
pub fn write_archive<W: Write>(
    root: BorrowedFd<'_>,
    path: &str,
    out: W,
) -> Result<W, ArchiveError> {
    let (found, st) = find(root, path)?;
    let (parent, name) = match found {
        Found::Root => {
            let dir = open_in(root, &[], OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(io_err("open", b"/"))?;
            return Ok(write_tree(dir.as_fd(), TreeMode::Export, out)?);
        }
        Found::Entry { parent, name, .. } => (parent, name),
    };
    let shown = ContainerPath::parse(path).name().into_bytes();
    let wr = |e: io::Error| ArchiveError::Io {
        action: "write tar entry",
        path: path.to_string(),
        source: e,
    };
    let mut b = tar::Builder::new(out);
    let p = Path::new(os(&shown));
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            let dir = rustix::fs::openat(
                &parent,
                os(&name),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(not_found(path))?;
            let mut h = header_for(&st, tar::EntryType::Directory);
            let dir_name = [shown.as_slice(), b"/"].concat();
            b.append_data(&mut h, Path::new(os(&dir_name)), io::empty())
                .map_err(wr)?;
            append_children(&mut b, dir.as_fd(), &shown)?;
        }
        FileType::RegularFile => {
            let fd = rustix::fs::openat(
                &parent,
                os(&name),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(not_found(path))?;
            let st = rustix::fs::fstat(&fd).map_err(io_err("stat", path.as_bytes()))?;
            let size = u64::try_from(st.st_size).unwrap_or(0);
            let mut h = header_for(&st, tar::EntryType::Regular);
            h.set_size(size);
            let r = Exact {
                inner: std::fs::File::from(fd),
                left: size,
            };
            b.append_data(&mut h, p, r).map_err(wr)?;
        }
        FileType::Symlink => {
            let target =
                rustix::fs::readlinkat(&parent, os(&name), Vec::new()).map_err(not_found(path))?;
            let mut h = header_for(&st, tar::EntryType::Symlink);
            b.append_link(&mut h, p, Path::new(os(target.as_bytes())))
                .map_err(wr)?;
        }
        ft => {
            let kind = match ft {
                FileType::CharacterDevice => tar::EntryType::Char,
                FileType::BlockDevice => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            };
            let mut h = header_for(&st, kind);
            h.set_device_major(rustix::fs::major(st.st_rdev))
                .map_err(wr)?;
            h.set_device_minor(rustix::fs::minor(st.st_rdev))
                .map_err(wr)?;
            b.append_data(&mut h, p, io::empty()).map_err(wr)?;
        }
    }
    b.into_inner().map_err(wr)
}

/// Stat the host file `file` (opened without following a symlink) standing in at a
/// container path whose base name is `name`; call for the per-container `/etc/hostname`,
/// `/etc/hosts` and `/etc/resolv.conf`, which are bind mounts over the rootfs.
pub fn host_file_stat(file: &Path, name: &str) -> Result<PathStat, ArchiveError> {
    let st = rustix::fs::lstat(file).map_err(io_err("stat", name.as_bytes()))?;
    Ok(PathStat {
        name: name.to_string(),
        size: st.st_size,
        mode: go_file_mode(st.st_mode),
        mtime_secs: st.st_mtime,
        mtime_nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        link_target: String::new(),
    })
}

/// Write the host file `file` as a one-entry tar named `name` to `out` (see
/// [`host_file_stat`]).
pub fn write_host_file<W: Write>(file: &Path, name: &str, out: W) -> Result<W, ArchiveError> {
    let fd = rustix::fs::open(
        file,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io_err("open", name.as_bytes()))?;
    let st = rustix::fs::fstat(&fd).map_err(io_err("stat", name.as_bytes()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(ArchiveError::NotFound {
            path: name.to_string(),
        });
    }
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let mut h = header_for(&st, tar::EntryType::Regular);
    h.set_size(size);
    let wr = |e: io::Error| ArchiveError::Io {
        action: "write tar entry",
        path: name.to_string(),
        source: e,
    };
    let mut b = tar::Builder::new(out);
    let r = Exact {
        inner: std::fs::File::from(fd),
        left: size,
    };
    b.append_data(&mut h, Path::new(name), r).map_err(wr)?;
    b.into_inner().map_err(wr)
}

/// Append the tree under `dir` with every name put under `prefix/`: [`write_tree`] runs
/// in a second thread into a pipe, and its entries are renamed here.
fn append_children<W: Write>(
    b: &mut tar::Builder<W>,
    dir: BorrowedFd<'_>,
    prefix: &[u8],
) -> Result<(), ArchiveError> {
    let (r, w) = io::pipe().map_err(|source| ArchiveError::Io {
        action: "create pipe",
        path: String::from_utf8_lossy(prefix).into_owned(),
        source,
    })?;
    std::thread::scope(|s| {
        // The pipe's write end must close when the walk ends (write_tree hands it back), or
        // the renaming side never sees end of file.
        let walker = s.spawn(move || write_tree(dir, TreeMode::Export, w).map(drop));
        let renamed = rename_entries(b, r, prefix);
        let walked = walker.join().map_err(|_| ArchiveError::Thread)?;
        renamed?;
        walked.map_err(ArchiveError::from)
    })
}

fn rename_entries<W: Write>(
    b: &mut tar::Builder<W>,
    input: impl Read,
    prefix: &[u8],
) -> Result<(), ArchiveError> {
    let rd = |e: io::Error| ArchiveError::Io {
        action: "read tree tar",
        path: String::from_utf8_lossy(prefix).into_owned(),
        source: e,
    };
    let mut a = tar::Archive::new(input);
    for entry in a.entries().map_err(rd)? {
        let mut entry = entry.map_err(rd)?;
        let name = [prefix, b"/", &entry.path_bytes()].concat();
        let wr = |e: io::Error| ArchiveError::Io {
            action: "write tar entry",
            path: String::from_utf8_lossy(&name).into_owned(),
            source: e,
        };
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(rd)? {
            for ext in exts {
                let ext = ext.map_err(rd)?;
                if let Ok(k) = ext.key() {
                    if k.starts_with("SCHILY.xattr.") {
                        xattrs.push((k.to_string(), ext.value_bytes().to_vec()));
                    }
                }
            }
        }
        if !xattrs.is_empty() {
            b.append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(wr)?;
        }
        let mut h = entry.header().clone();
        let kind = h.entry_type();
        let p = Path::new(os(&name));
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let target = if kind.is_hard_link() {
                [prefix, b"/", &target].concat()
            } else {
                target
            };
            b.append_link(&mut h, p, Path::new(os(&target)))
                .map_err(wr)?;
        } else {
            b.append_data(&mut h, p, &mut entry).map_err(wr)?;
        }
    }
    let mut rest = a.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(rd)?;
    Ok(())
}

/// An unnamed temporary file in `dir` (`O_TMPFILE`) to spool a `PUT` body into; it
/// disappears when closed, whatever happens.
pub fn spool_file(dir: &Path) -> io::Result<std::fs::File> {
    let fd = rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    Ok(std::fs::File::from(fd))
}

/// `PUT /containers/{id}/archive?path=`: extract the tar in `spool` into directory
/// `path` inside `root`. The whole archive is checked first (a tar, every name inside
/// the extraction point, no directory/non-directory clash when refused), so a bad body
/// writes nothing.
pub fn extract_archive(
    root: BorrowedFd<'_>,
    path: &str,
    spool: &mut std::fs::File,
    opts: &ExtractOptions,
) -> Result<(), ArchiveError> {
    let p = ContainerPath::parse(path);
    let dest = open_in(root, &p.comps, OFlags::PATH).map_err(not_found(path))?;
    let st = rustix::fs::fstat(&dest).map_err(io_err("stat", path.as_bytes()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return Err(ArchiveError::NotADirectory);
    }
    let prefix = rel_path(root, dest.as_fd())?;
    let rewind = |f: &mut std::fs::File| {
        f.rewind().map_err(|source| ArchiveError::Io {
            action: "rewind spool",
            path: path.to_string(),
            source,
        })
    };
    rewind(spool)?;
    validate(root, &prefix, &mut *spool, opts.no_overwrite_dir_non_dir)?;
    rewind(spool)?;
    let chown = match &opts.chown_to_user {
        Some(user) => Some(container_user(root, user)?),
        None => None,
    };
    let apply = ApplyOptions {
        prefix: prefix.join(&b'/'),
        plain_names: true,
        no_overwrite_dir_non_dir: opts.no_overwrite_dir_non_dir,
        chown,
        direct_io: false,
    };
    match apply_tar(root, &mut *spool, None, &apply) {
        Ok(_) => Ok(()),
        Err(e @ ApplyError::DirNonDir { .. }) => Err(ArchiveError::Conflict(e.to_string())),
        Err(e @ ApplyError::Os { .. }) => Err(ArchiveError::Apply(e)),
        Err(e) => Err(ArchiveError::BadArchive(e.to_string())),
    }
}

/// Check an archive before anything is written: it parses as a tar to its end, no name
/// (or hard link target) climbs out of the extraction point, and, with `no_overwrite`,
/// no entry replaces a directory with a non-directory or the reverse.
fn validate(
    root: BorrowedFd<'_>,
    prefix: &[Vec<u8>],
    input: impl Read,
    no_overwrite: bool,
) -> Result<(), ArchiveError> {
    let bad = |e: io::Error| ArchiveError::BadArchive(e.to_string());
    let mut counted = CountingReader {
        inner: input,
        count: 0,
    };
    {
        let mut a = tar::Archive::new(&mut counted);
        for entry in a.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let Some(own) = clean(&raw) else {
                return Err(ArchiveError::BadArchive(format!(
                    "{shown:?} is outside of the extraction point"
                )));
            };
            let kind = entry.header().entry_type();
            if kind.is_hard_link() {
                let target = entry.link_name_bytes().unwrap_or_default();
                if clean(&target).is_none_or(|t| t.is_empty()) {
                    return Err(ArchiveError::BadArchive(format!(
                        "invalid hard link target for {shown:?}"
                    )));
                }
            }
            let expected = entry.size();
            let got = io::copy(&mut entry, &mut io::sink()).map_err(bad)?;
            if got != expected {
                return Err(ArchiveError::BadArchive(format!("{shown:?} is truncated")));
            }
            let Some((leaf, parents)) = own.split_last() else {
                continue;
            };
            if !no_overwrite {
                continue;
            }
            let mut dir: Vec<Vec<u8>> = prefix.to_vec();
            dir.extend(parents.iter().map(|c| c.to_vec()));
            let Ok(parent) = open_in(root, &dir, OFlags::PATH | OFlags::DIRECTORY) else {
                continue;
            };
            let Ok(st) = rustix::fs::statat(&parent, os(leaf), AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            let new_dir = kind.is_dir();
            if is_dir != new_dir {
                let kind = |d: bool| if d { "directory" } else { "non-directory" };
                dir.push(leaf.to_vec());
                let at = format!("/{}", String::from_utf8_lossy(&dir.join(&b'/')));
                return Err(ArchiveError::Conflict(format!(
                    "cannot overwrite {} {at:?} with {}",
                    kind(is_dir),
                    kind(new_dir)
                )));
            }
        }
    }
    if counted.count == 0 {
        return Err(ArchiveError::BadArchive("empty request body".to_string()));
    }
    Ok(())
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The uid and gid of the container user `spec`, from the container's own
/// `/etc/passwd` and `/etc/group`.
fn container_user(root: BorrowedFd<'_>, spec: &str) -> Result<(u32, u32), ArchiveError> {
    let read = |name: &str| -> Option<String> {
        let comps: Vec<Vec<u8>> = vec![b"etc".to_vec(), name.as_bytes().to_vec()];
        let fd = open_in(root, &comps, OFlags::RDONLY | OFlags::NONBLOCK).ok()?;
        let mut text = String::new();
        std::fs::File::from(fd)
            .take(4 << 20)
            .read_to_string(&mut text)
            .ok()?;
        Some(text)
    };
    let passwd = read("passwd");
    let group = read("group");
    crate::runtime::user::resolve_user(spec, passwd.as_deref(), group.as_deref())
        .map(|u| (u.uid, u.gid))
        .map_err(|e| ArchiveError::BadArchive(format!("resolve container user: {e}")))
}

#[cfg(test)]
#[path = "archive_test.rs"]
mod tests;
