//! Applying one layer tar to an empty directory, safely against hostile archives.
//!
//! The `tar` crate only *reads* entries; every write is done here relative to a directory
//! fd. Parents are resolved with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so a
//! symlink from an earlier entry (`evil -> /`) resolves inside the layer, and the last
//! component is always created with a call that never follows a symlink (`mkdirat`,
//! `openat(O_CREAT|O_EXCL|O_NOFOLLOW)`, `symlinkat`, `linkat`, `mknodat`). Modes and owners
//! are set on fds opened with `O_NOFOLLOW`, or with `AT_SYMLINK_NOFOLLOW` for symlinks.
//!
//! ```text
//!  uncompressed tar ──► HashReader (sha256 = DiffID, optional tee) ──► tar::Archive
//!                                                                        │ entries
//!                      root fd ◄── openat2(parent, IN_ROOT) ◄────────────┘
//! ```
//!
//! Entry policy, as Docker where it is safe:
//! - names are cleaned: absolute names become relative; `..` that would leave the layer is
//!   refused ([`ApplyError::Escape`]); the root entry itself is skipped;
//! - a later entry replaces an earlier one (a directory over a directory merges);
//! - `.wh.<name>` becomes a 0/0 character device `<name>`, `.wh..wh..opq` the xattr
//!   `trusted.overlay.opaque=y` on its directory, other `.wh..wh.*` entries are skipped;
//! - hard links must name an earlier entry of this layer; they are resolved inside it;
//! - character and block devices and fifos that are not whiteouts are **skipped** with a
//!   warning (a layer must not hand a container device nodes; Docker images rarely have any);
//! - `SCHILY.xattr.*` PAX records are applied, except `trusted.overlay.*`, which would let a
//!   layer steer overlayfs;
//! - directory mtimes are set after all entries, since adding children changes them;
//! - parents an archive does not list are created 0755 root:root (containerd copies them
//!   from the lower layers instead; archives from `docker save` always list them).

use super::copy::Copier;
use super::tarsplit::SplitWriter;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps, XattrFlags};
use rustix::fs::{Gid, Uid};
use sha2::{Digest as _, Sha256};
use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use wharf_protocol::{DiffId, Digest};

/// Why a layer could not be applied. `path` is the entry's name as the archive gives it.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The stream could not be read or is not a valid tar.
    #[error("read layer: {0}")]
    Read(#[source] io::Error),
    /// An entry ended before its declared size: the archive is truncated.
    #[error("truncated layer at {path:?}: expected {expected} bytes, got {got}")]
    Truncated {
        /// The entry.
        path: String,
        /// Its declared size.
        expected: u64,
        /// What the stream held.
        got: u64,
    },
    /// A name, or a hard link's target, leaves the layer through `..`.
    #[error("layer entry {path:?}: path escapes the layer root")]
    Escape {
        /// The entry (or link target).
        path: String,
    },
    /// A `.wh.` name with nothing after it.
    #[error("layer entry {path:?}: invalid whiteout name")]
    BadWhiteout {
        /// The entry.
        path: String,
    },
    /// A link entry without a target.
    #[error("layer entry {path:?}: link has no target")]
    NoLinkTarget {
        /// The entry.
        path: String,
    },
    /// A hard link names a directory, the layer root, or nothing that exists in this layer.
    #[error("layer entry {path:?}: invalid hard link target {target:?}")]
    BadHardlink {
        /// The entry.
        path: String,
        /// The target as the archive gives it.
        target: String,
    },
    /// A uid or gid does not fit 32 bits.
    #[error("layer entry {path:?}: owner {id} out of range")]
    Owner {
        /// The entry.
        path: String,
        /// The uid or gid.
        id: u64,
    },
    /// With [`ApplyOptions::no_overwrite_dir_non_dir`], an entry would replace a directory
    /// with a non-directory or the reverse.
    #[error("cannot overwrite {existing} {path:?} with {new}")]
    DirNonDir {
        /// The entry.
        path: String,
        /// "directory" or "non-directory": what is there.
        existing: &'static str,
        /// What the entry is.
        new: &'static str,
    },
    /// A regular file's size on disk, once all its contents were written, differs from
    /// what its entry declares.
    #[error("layer entry {path:?}: wrote {got} bytes, entry declares {expected}")]
    SizeMismatch {
        /// The entry.
        path: String,
        /// Its declared size.
        expected: u64,
        /// The file's size on disk.
        got: u64,
    },
    /// A file's writes or metadata were not all carried out when the layer was done:
    /// the layer is not committed.
    #[error("layer entry {path:?}: not finished: {detail}")]
    Unfinished {
        /// The entry, or "" when the writer lost count of which.
        path: String,
        /// What was left.
        detail: String,
    },
    /// A system call on the entry failed.
    #[error("layer entry {path:?}: {what}: {source}")]
    Os {
        /// The entry.
        path: String,
        /// The operation, e.g. "create file".
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What applying a layer produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// sha256 of every byte read from the stream (the layer's DiffID if it matches).
    pub diff_id: DiffId,
    /// Sum of the sizes of the regular files written (hard links counted once).
    pub size: u64,
}

/// How [`apply_tar`] treats an archive. The default is a layer: whiteouts, extracted at
/// the root, owners from the archive, replacing whatever is in the way.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Extract under this directory of the root (a cleaned, already resolved path inside
    /// it), as `docker cp` does; empty for the root itself.
    pub prefix: Vec<u8>,
    /// Take `.wh.` names as plain files, not overlay whiteouts (files copied into a
    /// container's merged view).
    pub plain_names: bool,
    /// Refuse ([`ApplyError::DirNonDir`]) to replace a directory with a non-directory or the
    /// reverse (`noOverwriteDirNonDir` of `PUT /containers/{id}/archive`).
    pub no_overwrite_dir_non_dir: bool,
    /// Own every entry by this uid and gid instead of the archive's (`docker cp -a`).
    pub chown: Option<(u32, u32)>,
    /// Write files of at least [`super::copy::DIRECT_MIN`] bytes with `O_DIRECT` where the
    /// filesystem allows it (see [`super::copy`]); for layers put into the store, not for
    /// files copied into a container.
    pub direct_io: bool,
}

/// Apply the uncompressed layer tar `reader` to the directory `root` (normally empty),
/// copying every byte read to `tee` when given; call with the `diff` dir of a layer being
/// built. The whole stream is read, so [`Applied::diff_id`] covers trailing padding too.
pub fn apply_layer(
    root: BorrowedFd<'_>,
    reader: impl Read,
    tee: Option<&mut dyn Write>,
) -> Result<Applied, ApplyError> {
    apply_tar(root, reader, tee, &ApplyOptions::default())
}

/// Apply the tar `reader` to `root` as `opts` says, with every write confined to `root`
/// as for a layer; call for layers through [`apply_layer`], and for `docker cp` into a
/// container's root filesystem with a prefix and plain names.
pub fn apply_tar(
    root: BorrowedFd<'_>,
    reader: impl Read,
    tee: Option<&mut dyn Write>,
    opts: &ApplyOptions,
) -> Result<Applied, ApplyError> {
    let (digest, size) = apply_inner(root, reader, tee, opts, None, true)?;
    Ok(Applied {
        diff_id: digest.unwrap_or(DiffId(Digest([0; 32]))),
        size,
    })
}

/// Apply a layer tar to `root` recording its tar-split in `split` (see
/// [`super::tarsplit`]): entries it replaces are moved to the split's stash instead of
/// deleted. With `hash`, also returns the stream's sha256 (callers that hash the stream
/// on another thread pass `false`). Returns that and the bytes of files written.
pub(crate) fn apply_layer_split(
    root: BorrowedFd<'_>,
    reader: impl Read,
    split: &RefCell<SplitWriter>,
    hash: bool,
) -> Result<(Option<DiffId>, u64), ApplyError> {
    let opts = ApplyOptions {
        direct_io: true,
        ..ApplyOptions::default()
    };
    apply_inner(root, reader, None, &opts, Some(split), hash)
}

fn apply_inner<'a>(
    root: BorrowedFd<'_>,
    reader: impl Read,
    tee: Option<&'a mut dyn Write>,
    opts: &ApplyOptions,
    split: Option<&'a RefCell<SplitWriter>>,
    hash: bool,
) -> Result<(Option<DiffId>, u64), ApplyError> {
    let mut hashed = HashReader {
        inner: reader,
        hasher: hash.then(Sha256::new),
        tee,
        split,
    };
    let mut dirs: Vec<(Vec<u8>, i64)> = Vec::new();
    let mut size = 0u64;
    Copier::run(opts.direct_io, |copier| -> Result<(), ApplyError> {
        let mut archive = tar::Archive::new(&mut hashed);
        for entry in archive.entries().map_err(ApplyError::Read)? {
            let mut entry = entry.map_err(ApplyError::Read)?;
            size += apply_entry(root, &mut entry, &mut dirs, opts, split, copier)?;
        }
        copier.finish_all()
    })?;
    // Whatever follows the end-of-archive marker is part of the DiffID too.
    io::copy(&mut hashed, &mut io::sink()).map_err(ApplyError::Read)?;
    for (path, mtime) in dirs {
        set_dir_mtime(root, &path, mtime);
    }
    let digest = hashed.hasher.map(|h| {
        let d: [u8; 32] = h.finalize().into();
        DiffId(Digest(d))
    });
    Ok((digest, size))
}

/// Reads through, hashing (and optionally copying, and recording for a tar-split) every
/// byte.
struct HashReader<'a, R> {
    inner: R,
    hasher: Option<Sha256>,
    tee: Option<&'a mut dyn Write>,
    split: Option<&'a RefCell<SplitWriter>>,
}

impl<R: Read> Read for HashReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        if let Some(t) = self.tee.as_mut() {
            t.write_all(&buf[..n])?;
        }
        if let Some(s) = self.split {
            s.borrow_mut().observe(&buf[..n]);
        }
        Ok(n)
    }
}

/// The components of `raw` with `.` and empty ones dropped and `..` applied; `None` if a
/// `..` would climb above the root. A leading `/` is ignored (absolute names are relative).
pub fn clean(raw: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out)
}

fn join(comps: &[&[u8]]) -> Vec<u8> {
    comps.join(&b'/')
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Attributes every created entry gets.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: i64,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

fn apply_entry<R: Read>(
    root: BorrowedFd<'_>,
    entry: &mut tar::Entry<'_, R>,
    dirs: &mut Vec<(Vec<u8>, i64)>,
    opts: &ApplyOptions,
    split: Option<&RefCell<SplitWriter>>,
    copier: &mut Copier,
) -> Result<u64, ApplyError> {
    let raw = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&raw).into_owned();
    let kind = entry.header().entry_type();
    if kind.is_pax_global_extensions()
        || kind.is_pax_local_extensions()
        || kind.is_gnu_longname()
        || kind.is_gnu_longlink()
    {
        return Ok(0);
    }
    let own = clean(&raw).ok_or_else(|| ApplyError::Escape {
        path: shown.clone(),
    })?;
    if own.is_empty() {
        tracing::debug!(path = %shown, "skipping the layer root entry");
        return Ok(0);
    }
    let prefix = clean(&opts.prefix).unwrap_or_default();
    let comps: Vec<&[u8]> = prefix.iter().copied().chain(own).collect();
    let Some((leaf, parents)) = comps.split_last() else {
        return Ok(0);
    };
    let os_err = |what: &'static str| {
        let path = shown.clone();
        move |e: rustix::io::Errno| ApplyError::Os {
            path,
            what,
            source: e.into(),
        }
    };

    if let Some(hidden) = leaf.strip_prefix(b".wh.").filter(|_| !opts.plain_names) {
        let parent = ensure_dir(root, parents, &shown)?;
        if hidden == b".wh..opq" {
            rustix::fs::fsetxattr(&parent, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(os_err("mark directory opaque"))?;
        } else if hidden.starts_with(b".wh.") {
            tracing::debug!(path = %shown, "skipping aufs metadata entry");
        } else if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(ApplyError::BadWhiteout { path: shown });
        } else {
            let mut path = join(parents);
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(hidden);
            let moved = split.map(|s| (s, path.as_slice()));
            remove_existing(parent.as_fd(), os(hidden), false, &shown, moved)?;
            rustix::fs::mknodat(
                &parent,
                os(hidden),
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(os_err("create whiteout"))?;
        }
        return Ok(0);
    }

    let mut meta = read_meta(entry, &shown)?;
    if let Some((uid, gid)) = opts.chown {
        meta.uid = Uid::from_raw(uid);
        meta.gid = Gid::from_raw(gid);
    }
    let leaf = os(leaf);
    let full = join(&comps);
    let moved = split.map(|s| (s, full.as_slice()));
    if kind.is_dir() {
        let parent = ensure_dir(root, parents, &shown)?;
        check_dir_non_dir(parent.as_fd(), leaf, true, opts, &shown)?;
        remove_existing(parent.as_fd(), leaf, true, &shown, moved)?;
        match rustix::fs::mkdirat(&parent, leaf, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(os_err("create directory")(e)),
        }
        let fd = rustix::fs::openat(
            &parent,
            leaf,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(os_err("open directory"))?;
        set_meta(&fd, &meta, false, &shown)?;
        dirs.push((full.clone(), meta.mtime));
        Ok(0)
    } else if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
        let parent = ensure_dir(root, parents, &shown)?;
        check_dir_non_dir(parent.as_fd(), leaf, false, opts, &shown)?;
        remove_existing(parent.as_fd(), leaf, false, &shown, moved)?;
        let fd = rustix::fs::openat(
            &parent,
            leaf,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(os_err("create file"))?;
        let expected = entry.size();
        if let Some(s) = split {
            s.borrow_mut()
                .begin_file(&full, expected, entry.raw_file_position());
        }
        let file = std::sync::Arc::new(std::fs::File::from(fd));
        let name = shown.clone();
        let finish = Box::new(move |f: &std::fs::File| set_meta(f, &meta, true, &name));
        let got = copier.copy(entry, &file, expected, &shown, finish)?;
        if got != expected {
            return Err(ApplyError::Truncated {
                path: shown,
                expected,
                got,
            });
        }
        Ok(got)
    } else if kind.is_symlink() {
        let target = entry
            .link_name_bytes()
            .ok_or_else(|| ApplyError::NoLinkTarget {
                path: shown.clone(),
            })?
            .into_owned();
        let parent = ensure_dir(root, parents, &shown)?;
        check_dir_non_dir(parent.as_fd(), leaf, false, opts, &shown)?;
        remove_existing(parent.as_fd(), leaf, false, &shown, moved)?;
        rustix::fs::symlinkat(os(&target), &parent, leaf).map_err(os_err("create symlink"))?;
        rustix::fs::chownat(
            &parent,
            leaf,
            Some(meta.uid),
            Some(meta.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(os_err("chown symlink"))?;
        let t = times(meta.mtime);
        rustix::fs::utimensat(&parent, leaf, &t, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(os_err("set symlink times"))?;
        Ok(0)
    } else if kind.is_hard_link() {
        let raw_target = entry
            .link_name_bytes()
            .ok_or_else(|| ApplyError::NoLinkTarget {
                path: shown.clone(),
            })?
            .into_owned();
        let bad = || ApplyError::BadHardlink {
            path: shown.clone(),
            target: String::from_utf8_lossy(&raw_target).into_owned(),
        };
        let target = clean(&raw_target).ok_or_else(|| ApplyError::Escape {
            path: String::from_utf8_lossy(&raw_target).into_owned(),
        })?;
        if target.is_empty() {
            return Err(bad());
        }
        let target: Vec<&[u8]> = prefix.iter().copied().chain(target).collect();
        if target == comps {
            return Ok(0);
        }
        let src = crate::resolve::openat2(
            root,
            os(&join(&target)),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|_| bad())?;
        let st = rustix::fs::fstat(&src).map_err(os_err("stat hard link target"))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            return Err(bad());
        }
        let parent = ensure_dir(root, parents, &shown)?;
        check_dir_non_dir(parent.as_fd(), leaf, false, opts, &shown)?;
        remove_existing(parent.as_fd(), leaf, false, &shown, moved)?;
        rustix::fs::linkat(&src, "", &parent, leaf, AtFlags::EMPTY_PATH)
            .map_err(os_err("create hard link"))?;
        Ok(0)
    } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
        tracing::warn!(path = %shown, "skipping device node or fifo in layer");
        Ok(0)
    } else {
        tracing::warn!(path = %shown, kind = ?kind, "skipping unsupported tar entry type");
        Ok(0)
    }
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, shown: &str) -> Result<Meta, ApplyError> {
    let h = entry.header();
    let id32 = |id: u64| {
        u32::try_from(id).map_err(|_| ApplyError::Owner {
            path: shown.to_string(),
            id,
        })
    };
    let old = h.as_old();
    let uid = id32(numeric(&old.uid, h.uid())?)?;
    let gid = id32(numeric(&old.gid, h.gid())?)?;
    let mode = numeric(&old.mode, h.mode().map(u64::from))? as u32 & 0o7777;
    let mtime = i64::try_from(numeric(&old.mtime, h.mtime())?).unwrap_or(0);
    let mut xattrs = Vec::new();
    if let Some(exts) = entry.pax_extensions().map_err(ApplyError::Read)? {
        for ext in exts {
            let ext = ext.map_err(ApplyError::Read)?;
            let Some(name) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") else {
                continue;
            };
            if name.starts_with(b"trusted.overlay.") {
                tracing::warn!(path = %shown, "ignoring overlay xattr in layer");
                continue;
            }
            xattrs.push((os(name).to_os_string(), ext.value_bytes().to_vec()));
        }
    }
    Ok(Meta {
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        mode: Mode::from_raw_mode(mode),
        mtime,
        xattrs,
    })
}

/// A numeric header field: an empty one (all NUL or spaces) is 0, as Go's `archive/tar`
/// reads it; anything else unparsable is an error.
fn numeric(raw: &[u8], parsed: io::Result<u64>) -> Result<u64, ApplyError> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        Err(e) => Err(ApplyError::Read(e)),
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Owner, then mode (chown clears setuid), then xattrs (chown clears capabilities), then
/// times, all on the fd itself.
fn set_meta(fd: impl AsFd, meta: &Meta, with_times: bool, shown: &str) -> Result<(), ApplyError> {
    let fd = fd.as_fd();
    let err = |what: &'static str| {
        move |e: rustix::io::Errno| ApplyError::Os {
            path: shown.to_string(),
            what,
            source: e.into(),
        }
    };
    rustix::fs::fchown(fd, Some(meta.uid), Some(meta.gid)).map_err(err("chown"))?;
    rustix::fs::fchmod(fd, meta.mode).map_err(err("chmod"))?;
    for (name, value) in &meta.xattrs {
        if let Err(e) = rustix::fs::fsetxattr(fd, name.as_os_str(), value, XattrFlags::empty()) {
            tracing::warn!(path = %shown, xattr = ?name, error = %e, "cannot set xattr");
        }
    }
    if with_times {
        rustix::fs::futimens(fd, &times(meta.mtime)).map_err(err("set times"))?;
    }
    Ok(())
}

fn resolve_dir(root: BorrowedFd<'_>, path: &[u8]) -> rustix::io::Result<OwnedFd> {
    let path: &[u8] = if path.is_empty() { b"." } else { path };
    crate::resolve::openat2(
        root,
        os(path),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Open directory `comps` inside `root`, creating missing ones (0755 root:root) one
/// component at a time, each created in an already resolved parent.
fn ensure_dir(root: BorrowedFd<'_>, comps: &[&[u8]], shown: &str) -> Result<OwnedFd, ApplyError> {
    let err = |e: rustix::io::Errno| ApplyError::Os {
        path: shown.to_string(),
        what: "open parent directory",
        source: e.into(),
    };
    match resolve_dir(root, &join(comps)) {
        Ok(fd) => return Ok(fd),
        Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(err(e)),
    }
    let mut dir = resolve_dir(root, b"").map_err(err)?;
    for i in 0..comps.len() {
        let prefix = join(&comps[..=i]);
        dir = match resolve_dir(root, &prefix) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => {
                match rustix::fs::mkdirat(&dir, os(comps[i]), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(err(e)),
                }
                resolve_dir(root, &prefix).map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
    }
    Ok(dir)
}

/// With [`ApplyOptions::no_overwrite_dir_non_dir`], refuse an entry whose kind (directory
/// or not) differs from what already is at `name` in `parent`.
fn check_dir_non_dir(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    new_is_dir: bool,
    opts: &ApplyOptions,
    shown: &str,
) -> Result<(), ApplyError> {
    if !opts.no_overwrite_dir_non_dir {
        return Ok(());
    }
    let Ok(st) = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
        return Ok(());
    };
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    let kind = |d: bool| if d { "directory" } else { "non-directory" };
    if is_dir != new_is_dir {
        return Err(ApplyError::DirNonDir {
            path: shown.to_string(),
            existing: kind(is_dir),
            new: kind(new_is_dir),
        });
    }
    Ok(())
}

/// Make room for a new entry `name` in `parent`: remove what is there, unless both it and
/// the new entry are directories (`keep_dir`), which merge. With `moved` (a tar-split
/// being recorded, and the entry's path in the layer), what is there is moved to the
/// split's stash instead, so the tar can still be regenerated.
fn remove_existing(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    keep_dir: bool,
    shown: &str,
    moved: Option<(&RefCell<SplitWriter>, &[u8])>,
) -> Result<(), ApplyError> {
    let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => {
            return Err(ApplyError::Os {
                path: shown.to_string(),
                what: "stat existing entry",
                source: e.into(),
            })
        }
    };
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    let res = if is_dir && keep_dir {
        return Ok(());
    } else if let Some((split, path)) = moved {
        let mut split = split.borrow_mut();
        let n = split.moved(path).to_string();
        rustix::fs::renameat(parent, name, &split.stash, n.as_str()).map_err(io::Error::from)
    } else if is_dir {
        remove_tree_at(parent, name)
    } else {
        rustix::fs::unlinkat(parent, name, AtFlags::empty()).map_err(io::Error::from)
    };
    res.map_err(|source| ApplyError::Os {
        path: shown.to_string(),
        what: "replace existing entry",
        source,
    })
}

/// Remove directory `name` in `parent` and everything below it, never following symlinks.
pub fn remove_tree_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    {
        let mut dir = rustix::fs::Dir::read_from(&fd)?;
        while let Some(e) = dir.read() {
            let e = e?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            children.push((OsStr::from_bytes(n).to_os_string(), e.file_type()));
        }
    }
    for (child, ty) in children {
        let ty = if ty == FileType::Unknown {
            let st = rustix::fs::statat(&fd, &child, AtFlags::SYMLINK_NOFOLLOW)?;
            FileType::from_raw_mode(st.st_mode)
        } else {
            ty
        };
        if ty == FileType::Directory {
            remove_tree_at(fd.as_fd(), &child)?;
        } else {
            rustix::fs::unlinkat(&fd, &child, AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)?;
    Ok(())
}

fn set_dir_mtime(root: BorrowedFd<'_>, path: &[u8], mtime: i64) {
    let fd = crate::resolve::openat2(
        root,
        os(path),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    );
    // A later entry may have replaced the directory; its own entry set its times.
    if let Ok(fd) = fd {
        if let Err(e) = rustix::fs::futimens(&fd, &times(mtime)) {
            tracing::debug!(path = %String::from_utf8_lossy(path), error = %e, "set directory mtime");
        }
    }
}

#[cfg(test)]
#[path = "apply_test.rs"]
mod tests;
