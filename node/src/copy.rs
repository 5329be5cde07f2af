//! `COPY`/`ADD` sources turned into one tar, confined to a root: the build context (a
//! directory this host unpacked) or another stage's filesystem. Blocking.
//!
//! ```text
//!  sources ──clean (no `..` out)──► globs (readdir, filepath.Match) ──► stat in root
//!     symlinked source: followed inside the root (RESOLVE_IN_ROOT), never onto the host
//!  write_archive(root, src) ──► entries renamed under the destination, owner 0:0 or
//!  --chown, --chmod ──► spool tar + content hash (names, modes, owners, bytes; no mtimes)
//! ```
//!
//! `ADD` of a local tar (plain, gzip or zstd) copies the archive's entries instead; its
//! names are cleaned and refused when they climb out, and the container side applies them
//! with the layer applier, which refuses links and names that leave the root.

use crate::archive::{self, ArchiveError};
use flate2::read::MultiGzDecoder;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use sha2::{Digest as _, Sha256};
use std::ffi::OsStr;
use std::io::{self, BufReader, Read, Seek, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
pub use wharf_protocol::archive::CopySpec;
use wharf_protocol::patterns::{clean_rel, has_wildcards, pattern_regex};

/// Why sources could not be collected; the texts are Docker's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A source climbs out of the context.
    #[error("forbidden path outside the build context: {0} ()")]
    Outside(String),
    /// A source does not exist (or was excluded by `.dockerignore`).
    #[error("file not found in build context or excluded by .dockerignore: stat {0}: file does not exist")]
    NotFound(String),
    /// A glob matched nothing.
    #[error("no source files were specified")]
    NoSources,
    /// Several sources into something that is not a directory.
    #[error("When using {0} with more than one source file, the destination must be a directory and end with a /")]
    DestNotDir(String),
    /// An `ADD` archive names an entry outside its destination.
    #[error("archive {archive}: entry {entry:?} is outside of the destination")]
    ArchiveEscape {
        /// The source archive.
        archive: String,
        /// The entry.
        entry: String,
    },
    /// A symlink chain that does not end.
    #[error("too many levels of symbolic links: {0}")]
    Loop(String),
    /// Reading the source tree failed.
    #[error("{0}")]
    Archive(#[from] ArchiveError),
    /// The spool could not be written or read.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io(action: &'static str) -> impl FnOnce(io::Error) -> CopyError {
    move |source| CopyError::Io { action, source }
}

/// The collected sources: a tar of entries named from the root of the image (`opt/app/x`)
/// and the content hash the build cache keys on.
pub struct Collected {
    /// The spooled tar, rewound.
    pub spool: std::fs::File,
    /// `file:<hex>`, `dir:<hex>` or `multi:<hex>`.
    pub hash: String,
}

/// Open `rel` below `root`, every symlink resolved inside it.
fn open_in(root: BorrowedFd<'_>, rel: &str, flags: OFlags) -> rustix::io::Result<OwnedFd> {
    let p = if rel.is_empty() { "." } else { rel };
    crate::resolve::openat2(
        root,
        p,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// Paths below `root` matching the glob `pattern` (cleaned, relative), sorted.
fn glob(root: BorrowedFd<'_>, pattern: &str) -> Vec<String> {
    let comps: Vec<&str> = pattern.split('/').collect();
    let mut found = vec![String::new()];
    for (i, comp) in comps.iter().enumerate() {
        let mut next = vec![];
        for base in &found {
            if !has_wildcards(comp) {
                let p = if base.is_empty() {
                    comp.to_string()
                } else {
                    format!("{base}/{comp}")
                };
                next.push(p);
                continue;
            }
            let Ok(fd) = open_in(root, base, OFlags::RDONLY | OFlags::DIRECTORY) else {
                continue;
            };
            let Ok(dir) = rustix::fs::Dir::read_from(&fd) else {
                continue;
            };
            let Ok(re) = pattern_regex(comp, false) else {
                continue;
            };
            for e in dir.flatten() {
                let name = String::from_utf8_lossy(e.file_name().to_bytes()).into_owned();
                if name == "." || name == ".." || !re.is_match(&name) {
                    continue;
                }
                let p = if base.is_empty() {
                    name
                } else {
                    format!("{base}/{name}")
                };
                next.push(p);
            }
        }
        found = next;
        if i + 1 < comps.len() {
            found.retain(|p| open_in(root, p, OFlags::PATH | OFlags::DIRECTORY).is_ok());
        }
    }
    found.retain(|p| !p.is_empty() && archive::stat_path(root, p).is_ok());
    found.sort();
    found
}

/// The path `rel` stands for once symlinks (of it and its parents) are followed inside
/// `root`; with whether it is a directory.
fn resolve(root: BorrowedFd<'_>, rel: &str, shown: &str) -> Result<(String, bool), CopyError> {
    let mut p = rel.to_string();
    for _ in 0..40 {
        let st = archive::stat_path(root, &format!("/{p}")).map_err(|e| match e {
            ArchiveError::NotFound { .. } => CopyError::NotFound(shown.to_string()),
            e => CopyError::Archive(e),
        })?;
        if st.link_target.is_empty() {
            return Ok((p, st.mode & (1 << 31) != 0));
        }
        p = clean_rel(&st.link_target);
    }
    Err(CopyError::Loop(shown.to_string()))
}

/// Hashes entries as written (everything but times).
struct EntryHasher(Sha256);

impl EntryHasher {
    fn header(&mut self, name: &[u8], h: &tar::Header, link: &[u8]) {
        self.0.update(name);
        self.0.update([0, h.entry_type().as_byte()]);
        for v in [
            u64::from(h.mode().unwrap_or(0)),
            h.uid().unwrap_or(0),
            h.gid().unwrap_or(0),
            h.size().unwrap_or(0),
        ] {
            self.0.update(v.to_le_bytes());
        }
        self.0.update(link);
        self.0.update([0]);
    }
}

/// A reader that hashes what passes through.
struct Tee<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The output tar being built.
struct Out {
    b: tar::Builder<std::fs::File>,
    hasher: EntryHasher,
    chmod: Option<u32>,
    owner: Option<(u64, u64)>,
}

impl Out {
    /// Append `entry` as `name` (hard link targets renamed by `rename`).
    fn append<R: Read>(
        &mut self,
        mut entry: tar::Entry<'_, R>,
        name: &str,
        rename: &dyn Fn(&[u8]) -> Option<String>,
    ) -> Result<(), CopyError> {
        let h = entry.header().clone();
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        self.append_parts(h, &link, &mut entry, name, rename)
    }

    /// Append an entry given as its header, link name and content.
    fn append_parts(
        &mut self,
        mut h: tar::Header,
        link: &[u8],
        content: &mut dyn Read,
        name: &str,
        rename: &dyn Fn(&[u8]) -> Option<String>,
    ) -> Result<(), CopyError> {
        let kind = h.entry_type();
        if let Some((u, g)) = self.owner {
            h.set_uid(u);
            h.set_gid(g);
            let _ = h.set_username("");
            let _ = h.set_groupname("");
        }
        if let Some(m) = self.chmod {
            let keep = h.mode().unwrap_or(0) & !0o7777;
            h.set_mode(keep | m);
        }
        let wr = io("write copy spool");
        if kind.is_hard_link() {
            let Some(target) = rename(link) else {
                return Ok(());
            };
            self.hasher.header(name.as_bytes(), &h, target.as_bytes());
            return self.b.append_link(&mut h, name, target).map_err(wr);
        }
        if kind.is_symlink() {
            self.hasher.header(name.as_bytes(), &h, link);
            return self
                .b
                .append_link(&mut h, name, Path::new(OsStr::from_bytes(link)))
                .map_err(wr);
        }
        if !(kind.is_file() || kind.is_dir() || kind == tar::EntryType::Continuous) {
            // Devices and fifos are skipped, as the layer applier would skip them.
            return Ok(());
        }
        self.hasher.header(name.as_bytes(), &h, b"");
        let tee = Tee {
            inner: content,
            hasher: &mut self.hasher.0,
        };
        self.b.append_data(&mut h, name, tee).map_err(wr)
    }
}

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{name}"),
    }
}

enum Kind {
    Plain,
    Gzip,
    Zstd,
}

/// Whether the first bytes look like an archive `ADD` unpacks.
fn archive_kind(head: &[u8]) -> Option<Kind> {
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some(Kind::Gzip);
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(Kind::Zstd);
    }
    if head.len() >= 512 && &head[257..262] == b"ustar" {
        return Some(Kind::Plain);
    }
    None
}

/// Collect the sources of `spec` below `root` into a tar under `tmp`.
pub fn collect(root: BorrowedFd<'_>, spec: &CopySpec, tmp: &Path) -> Result<Collected, CopyError> {
    let mut matched: Vec<(String, String)> = vec![];
    for src in &spec.sources {
        let cleaned = clean_rel(src);
        if cleaned == ".." || cleaned.starts_with("../") {
            return Err(CopyError::Outside(src.clone()));
        }
        if has_wildcards(&cleaned) {
            for m in glob(root, &cleaned) {
                matched.push((m.clone(), m));
            }
        } else {
            matched.push((cleaned, src.clone()));
        }
    }
    if matched.is_empty() {
        return Err(CopyError::NoSources);
    }
    let many = matched.len() > 1 || spec.sources.iter().any(|s| has_wildcards(s));
    if many && !spec.dest_is_dir {
        return Err(CopyError::DestNotDir(spec.keyword.clone()));
    }
    let spool = archive::spool_file(tmp).map_err(io("create copy spool"))?;
    let mut out = Out {
        b: tar::Builder::new(spool),
        hasher: EntryHasher(Sha256::new()),
        chmod: spec.chmod,
        owner: Some(spec.owner),
    };
    let mut kinds = vec![];
    for (rel, shown) in &matched {
        let (path, is_dir) = resolve(root, rel, shown)?;
        kinds.push(is_dir);
        let mut staged = archive::spool_file(tmp).map_err(io("create copy stage"))?;
        let staged_ref = &mut staged;
        archive::write_archive(root, &format!("/{path}"), staged_ref)?;
        staged.rewind().map_err(io("rewind copy stage"))?;
        let base = path.rsplit('/').next().unwrap_or("").to_string();
        let mut a = tar::Archive::new(BufReader::new(&mut staged));
        let rd = io("read copy stage");
        if is_dir {
            // `base/x` → `dest/x`; the root of the archive is `x` already.
            let strip = |raw: &[u8]| -> Option<String> {
                let s = String::from_utf8_lossy(raw).into_owned();
                let rest = if path.is_empty() {
                    clean_rel(&s)
                } else {
                    let c = clean_rel(&s);
                    if c == base {
                        String::new()
                    } else {
                        c.strip_prefix(&format!("{base}/"))?.to_string()
                    }
                };
                Some(rest)
            };
            let rename = |raw: &[u8]| strip(raw).map(|r| join(&spec.dest, &r));
            for entry in a.entries().map_err(rd)? {
                let entry = entry.map_err(io("read copy stage"))?;
                let Some(rest) = strip(&entry.path_bytes()) else {
                    continue;
                };
                if rest.is_empty() {
                    if spec.dest_missing && !spec.dest.is_empty() {
                        // Hashed aside: whether the directory exists is no content.
                        let h = entry.header().clone();
                        let saved = std::mem::replace(&mut out.hasher, EntryHasher(Sha256::new()));
                        let res = out.append_parts(
                            h,
                            b"",
                            &mut io::empty(),
                            &format!("{}/", spec.dest),
                            &|_| None,
                        );
                        out.hasher = saved;
                        res?;
                    }
                    continue;
                }
                let name = join(&spec.dest, &rest);
                out.append(entry, &name, &rename)?;
            }
            continue;
        }
        let name = if spec.dest_is_dir {
            join(&spec.dest, &base)
        } else {
            spec.dest.clone()
        };
        let mut entries = a.entries().map_err(io("read copy stage"))?;
        let Some(entry) = entries.next() else {
            continue;
        };
        let mut entry = entry.map_err(io("read copy stage"))?;
        if spec.unpack_archives && entry.header().entry_type().is_file() {
            let mut head = Vec::with_capacity(512);
            (&mut entry)
                .take(512)
                .read_to_end(&mut head)
                .map_err(io("read source"))?;
            let h = entry.header().clone();
            let mut whole = io::Cursor::new(head.clone()).chain(&mut entry);
            match archive_kind(&head) {
                Some(k) => {
                    let inner: Box<dyn Read + '_> = match k {
                        Kind::Plain => Box::new(whole),
                        Kind::Gzip => Box::new(MultiGzDecoder::new(whole)),
                        Kind::Zstd => {
                            Box::new(zstd::stream::read::Decoder::new(whole).map_err(io("zstd"))?)
                        }
                    };
                    unpack_into(&mut out, inner, &spec.dest, shown)?;
                }
                None => out.append_parts(h, b"", &mut whole, &name, &|_| None)?,
            }
            continue;
        }
        out.append(entry, &name, &|_| None)?;
    }
    let hash = hex::encode(out.hasher.0.finalize());
    let mut spool = out.b.into_inner().map_err(io("finish copy spool"))?;
    spool.flush().map_err(io("flush copy spool"))?;
    spool.rewind().map_err(io("rewind copy spool"))?;
    let prefix = match kinds.as_slice() {
        [false] => "file",
        [true] => "dir",
        _ => "multi",
    };
    Ok(Collected {
        spool,
        hash: format!("{prefix}:{hash}"),
    })
}

/// `ADD archive dest/`: the archive's entries under `dest`, owners as the archive gives
/// them (unless `--chown`); names that climb out are refused.
fn unpack_into(
    out: &mut Out,
    input: Box<dyn Read + '_>,
    dest: &str,
    shown: &str,
) -> Result<(), CopyError> {
    let mut a = tar::Archive::new(input);
    let escape = |entry: &str| CopyError::ArchiveEscape {
        archive: shown.to_string(),
        entry: entry.to_string(),
    };
    let saved = out.owner.take();
    let owner = if saved == Some((0, 0)) { None } else { saved };
    out.owner = owner;
    let res = (|| {
        for entry in a.entries().map_err(io("read archive"))? {
            let entry = entry.map_err(io("read archive"))?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let cleaned = clean_rel(raw.trim_start_matches('/'));
            if cleaned == ".." || cleaned.starts_with("../") {
                return Err(escape(&raw));
            }
            if cleaned.is_empty() {
                continue;
            }
            let name = join(dest, &cleaned);
            let rename = |t: &[u8]| {
                let t = clean_rel(String::from_utf8_lossy(t).trim_start_matches('/'));
                (!(t.is_empty() || t == ".." || t.starts_with("../"))).then(|| join(dest, &t))
            };
            out.append(entry, &name, &rename)?;
        }
        Ok(())
    })();
    out.owner = saved;
    res
}

/// Open the context directory `dir` as a root fd for [`collect`].
pub fn open_root(dir: &Path) -> Result<OwnedFd, CopyError> {
    rustix::fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| CopyError::Io {
        action: "open build context",
        source: e.into(),
    })
}

/// Read the file `rel` of `root` (resolved inside it), at most `limit` bytes; `None` when
/// it does not exist. Bigger files give `Some` of `limit + 1` bytes, so callers can refuse.
pub fn read_in(root: BorrowedFd<'_>, rel: &str, limit: u64) -> Result<Option<Vec<u8>>, CopyError> {
    match open_in(root, &clean_rel(rel), OFlags::RDONLY | OFlags::NONBLOCK) {
        Ok(fd) => {
            let mut buf = vec![];
            std::fs::File::from(fd)
                .take(limit + 1)
                .read_to_end(&mut buf)
                .map_err(io("read build context file"))?;
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NOTDIR) => Ok(None),
        Err(e) => Err(CopyError::Io {
            action: "open build context file",
            source: e.into(),
        }),
    }
}

/// Whether `rel` is a directory below `root` (symlinks followed inside it).
pub fn is_dir_in(root: BorrowedFd<'_>, rel: &str) -> bool {
    open_in(root, &clean_rel(rel), OFlags::PATH | OFlags::DIRECTORY).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn ctx() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.py"), "print(1)\n").unwrap();
        std::fs::write(d.path().join("b.py"), "print(2)\n").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/x.txt"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("evil")).unwrap();
        std::os::unix::fs::symlink("dir/x.txt", d.path().join("good")).unwrap();
        d
    }

    fn names(c: Collected) -> Vec<(String, u64, u64)> {
        let mut a = tar::Archive::new(c.spool);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    h.uid().unwrap(),
                    u64::from(h.mode().unwrap() & 0o7777),
                )
            })
            .collect()
    }

    fn spec(sources: &[&str], dest: &str, dir: bool) -> CopySpec {
        CopySpec {
            keyword: "COPY".into(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            dest: dest.into(),
            dest_is_dir: dir,
            ..Default::default()
        }
    }

    #[test]
    fn files_dirs_and_globs_land_under_the_destination() {
        let d = ctx();
        let root = open_root(d.path()).unwrap();
        let tmp = d.path();
        let c = collect(root.as_fd(), &spec(&["*.py"], "opt/src", true), tmp).unwrap();
        assert!(c.hash.starts_with("multi:"));
        let n: Vec<String> = names(c).into_iter().map(|x| x.0).collect();
        assert_eq!(n, ["opt/src/a.py", "opt/src/b.py"]);
        let c = collect(root.as_fd(), &spec(&["dir"], "data", true), tmp).unwrap();
        assert!(c.hash.starts_with("dir:"));
        assert_eq!(names(c)[0].0, "data/x.txt");
        let c = collect(root.as_fd(), &spec(&["a.py"], "app.py", false), tmp).unwrap();
        assert_eq!(names(c)[0].0, "app.py");
        let c = collect(root.as_fd(), &spec(&["good"], "", true), tmp).unwrap();
        assert_eq!(
            names(c)[0].0,
            "x.txt",
            "a symlinked source is followed in the context"
        );
    }

    #[test]
    fn chmod_and_owner_apply_and_change_the_hash() {
        let d = ctx();
        let root = open_root(d.path()).unwrap();
        let plain = collect(root.as_fd(), &spec(&["a.py"], "a.py", false), d.path()).unwrap();
        let mut s = spec(&["a.py"], "a.py", false);
        s.chmod = Some(0o751);
        s.owner = (7, 8);
        let changed = collect(root.as_fd(), &s, d.path()).unwrap();
        assert_ne!(plain.hash, changed.hash);
        assert_eq!(names(changed)[0], ("a.py".to_string(), 7, 0o751));
        let again = collect(root.as_fd(), &spec(&["a.py"], "a.py", false), d.path()).unwrap();
        assert_eq!(plain.hash, again.hash, "same content, same hash");
    }

    #[test]
    fn add_unpacks_local_archives_and_refuses_escaping_entries() {
        let d = ctx();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o600);
        h.set_uid(5);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, "pkg/f", &b"hi"[..]).unwrap();
        std::fs::write(d.path().join("ok.tar"), b.into_inner().unwrap()).unwrap();
        let root = open_root(d.path()).unwrap();
        let mut s = spec(&["ok.tar"], "opt", true);
        s.unpack_archives = true;
        let got = names(collect(root.as_fd(), &s, d.path()).unwrap());
        assert_eq!(got, [("opt/pkg/f".to_string(), 5, 0o600)], "owners kept");

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../../etc");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        std::fs::write(d.path().join("evil.tar"), b.into_inner().unwrap()).unwrap();
        let mut s = spec(&["evil.tar"], "opt", true);
        s.unpack_archives = true;
        let e = collect(root.as_fd(), &s, d.path()).err();
        assert!(matches!(e, Some(CopyError::ArchiveEscape { .. })), "{e:?}");
        // COPY does not unpack.
        let got = names(collect(root.as_fd(), &spec(&["ok.tar"], "opt", true), d.path()).unwrap());
        assert_eq!(got[0].0, "opt/ok.tar");
    }

    #[test]
    fn escapes_and_missing_sources_are_refused() {
        let d = ctx();
        let root = open_root(d.path()).unwrap();
        let e = collect(root.as_fd(), &spec(&["../x"], "x", false), d.path()).err();
        assert!(matches!(e, Some(CopyError::Outside(_))), "{e:?}");
        let e = collect(root.as_fd(), &spec(&["evil"], "x", false), d.path()).err();
        assert!(matches!(e, Some(CopyError::NotFound(_))), "{e:?}");
        let e = collect(root.as_fd(), &spec(&["nope*"], "x/", true), d.path()).err();
        assert!(matches!(e, Some(CopyError::NoSources)), "{e:?}");
        let e = collect(root.as_fd(), &spec(&["a.py", "b.py"], "x", false), d.path()).err();
        assert!(matches!(e, Some(CopyError::DestNotDir(_))), "{e:?}");
    }
}
