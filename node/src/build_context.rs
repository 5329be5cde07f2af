//! Build contexts on this host: the `docker build` upload unpacked under
//! `DATA_DIR/build/<build>/context` with the layer applier's rules (names confined, links
//! resolved inside, devices skipped), its Dockerfile read inside it, `.dockerignore`
//! applied; `COPY` sources are collected from it ([`crate::copy`]) until the controller
//! removes it or its connection closes ([`ConnContexts`]). Blocking.
//!
//! ```text
//!  ContextPut items ─► unpack (plain, gzip, zstd) ─► DATA_DIR/build/<build>/context
//!        └─ failed or cut short: the build's directory is removed
//!  read_dockerfile (inside the root) ─► apply_dockerignore (prune) ─► Dockerfile text
//!  ContextRemove, or the connection that put it closes ─► remove
//! ```

use crate::copy::{open_root, read_in, CopyError};
use crate::image::apply::{apply_tar, ApplyError, ApplyOptions};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wharf_protocol::agent::files::{check_build_id, MAX_DOCKERFILE};
use wharf_protocol::patterns::{IgnoreRules, PatternError};

/// Why a build context could not be prepared or used; the texts are Docker's where it has
/// one (what `docker build` prints before the build starts).
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The build ID cannot name a directory.
    #[error("{0}")]
    BadId(String),
    /// A context of that build exists already.
    #[error("build context {0} exists already")]
    Exists(String),
    /// No context of that build.
    #[error("no build context {0}")]
    NotFound(String),
    /// The build directory could not be created.
    #[error("create build dir {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The body could not be read or decompressed.
    #[error("read build context: {0}")]
    Read(#[source] io::Error),
    /// The context tar is not valid or has hostile entries.
    #[error("invalid build context: {0}")]
    Unpack(#[source] ApplyError),
    /// No Dockerfile by that name.
    #[error("Cannot locate specified Dockerfile: {0}")]
    NoDockerfile(String),
    /// The Dockerfile is bigger than [`MAX_DOCKERFILE`].
    #[error("the Dockerfile {0} is too large: more than {MAX_DOCKERFILE} bytes")]
    TooLarge(String),
    /// The Dockerfile is not text.
    #[error("the Dockerfile {0} is not UTF-8 text")]
    NotText(String),
    /// A `.dockerignore` pattern is invalid.
    #[error("read .dockerignore: {0}")]
    Ignore(#[source] PatternError),
    /// Reading a context file failed.
    #[error(transparent)]
    File(#[from] CopyError),
    /// Listing the context failed.
    #[error("read build context {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The directory every build's context lives under.
fn build_root(data_dir: &Path) -> PathBuf {
    data_dir.join("build")
}

/// The directory of `build` (its context in `context/`), once its ID is checked.
pub fn build_dir(data_dir: &Path, build: &str) -> Result<PathBuf, ContextError> {
    check_build_id(build).map_err(ContextError::BadId)?;
    Ok(build_root(data_dir).join(build))
}

/// The unpacked context of `build`; fails when there is none.
pub fn context_dir(data_dir: &Path, build: &str) -> Result<PathBuf, ContextError> {
    let dir = build_dir(data_dir, build)?.join("context");
    if !dir.is_dir() {
        return Err(ContextError::NotFound(build.to_string()));
    }
    Ok(dir)
}

/// Remove what a killed process left in `DATA_DIR/build`, the first time a process asks
/// about contexts of `data_dir` (one agent serves a data dir, so nothing else can be
/// using them).
pub fn sweep_once(data_dir: &Path) {
    static SWEPT: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
    if !swept.iter().any(|d| d == data_dir) {
        let _ = std::fs::remove_dir_all(build_root(data_dir));
        swept.push(data_dir.to_path_buf());
    }
}

/// Create the empty context directory of `build`; returns it.
pub fn create(data_dir: &Path, build: &str) -> Result<PathBuf, ContextError> {
    let dir = build_dir(data_dir, build)?;
    sweep_once(data_dir);
    let root = build_root(data_dir);
    std::fs::create_dir_all(&root).map_err(|source| ContextError::Create { path: root, source })?;
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(ContextError::Exists(build.to_string()))
        }
        Err(source) => return Err(ContextError::Create { path: dir, source }),
    }
    let context = dir.join("context");
    std::fs::create_dir(&context).map_err(|source| ContextError::Create {
        path: context.clone(),
        source,
    })?;
    Ok(context)
}

/// Remove the directory of `build`; a build without one is fine.
pub fn remove(data_dir: &Path, build: &str) -> Result<(), ContextError> {
    let dir = build_dir(data_dir, build)?;
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            tracing::warn!(path = %dir.display(), error = %e, "cannot remove build dir");
        }
        _ => {}
    }
    Ok(())
}

/// Create the context of `build` from the tar `body`, read its Dockerfile `dockerfile`,
/// apply `.dockerignore`; returns the Dockerfile's text. `finish` runs once the tar is
/// unpacked and must read the rest of the body (an error there is a body cut short). On
/// any failure the build's directory is removed.
pub fn put<R: Read>(
    data_dir: &Path,
    build: &str,
    dockerfile: &str,
    body: &mut R,
    finish: impl FnOnce(&mut R) -> io::Result<()>,
) -> Result<String, ContextError> {
    let context = create(data_dir, build)?;
    let res = (|| {
        unpack(&mut *body, &context)?;
        finish(body).map_err(ContextError::Read)?;
        let text = read_dockerfile(&context, dockerfile)?;
        apply_dockerignore(&context)?;
        Ok(text)
    })();
    if res.is_err() {
        remove(data_dir, build)?;
    }
    res
}

/// Unpack the context tar (plain, gzip or zstd) from `body` into `dir`.
pub fn unpack(body: impl Read, dir: &Path) -> Result<(), ContextError> {
    let mut r = BufReader::with_capacity(64 * 1024, body);
    let head = r.fill_buf().map_err(ContextError::Read)?;
    let input: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(ContextError::Read)?)
    } else {
        Box::new(r)
    };
    let root = open_root(dir)?;
    let opts = ApplyOptions {
        plain_names: true,
        ..ApplyOptions::default()
    };
    apply_tar(root.as_fd(), input, None, &opts).map_err(ContextError::Unpack)?;
    Ok(())
}

/// Read the Dockerfile `name` of the context (inside it; symlinks cannot leave it).
pub fn read_dockerfile(dir: &Path, name: &str) -> Result<String, ContextError> {
    let root = open_root(dir)?;
    let bytes = read_in(root.as_fd(), name, MAX_DOCKERFILE as u64)?
        .ok_or_else(|| ContextError::NoDockerfile(name.to_string()))?;
    if bytes.len() > MAX_DOCKERFILE {
        return Err(ContextError::TooLarge(name.to_string()));
    }
    String::from_utf8(bytes).map_err(|_| ContextError::NotText(name.to_string()))
}

/// Apply the context's `.dockerignore`: remove what it excludes, the Dockerfile and
/// `.dockerignore` included when listed (they were read already), as Docker does, so that
/// `COPY` does not see them.
pub fn apply_dockerignore(dir: &Path) -> Result<(), ContextError> {
    let root = open_root(dir)?;
    let Some(text) = read_in(root.as_fd(), ".dockerignore", 1 << 20)? else {
        return Ok(());
    };
    let rules =
        IgnoreRules::parse(&String::from_utf8_lossy(&text)).map_err(ContextError::Ignore)?;
    if rules.is_empty() {
        return Ok(());
    }
    prune(dir, "", &rules)
}

/// Remove ignored entries below `dir/rel`; a directory whose every child is gone and
/// that is itself ignored goes too.
fn prune(dir: &Path, rel: &str, rules: &IgnoreRules) -> Result<(), ContextError> {
    let here = if rel.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(rel)
    };
    let rd = std::fs::read_dir(&here).map_err(|source| ContextError::List {
        path: here.clone(),
        source,
    })?;
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(ft) = entry.file_type() else {
            continue;
        };
        let ignored = rules.ignored(&child);
        let path = entry.path();
        if ft.is_dir() {
            if ignored && !rules.has_exclusions() {
                let _ = std::fs::remove_dir_all(&path);
                continue;
            }
            prune(dir, &child, rules)?;
            if ignored {
                // Kept only if something below it was re-included.
                let _ = std::fs::remove_dir(&path);
            }
        } else if ignored {
            let _ = std::fs::remove_file(&path);
        }
    }
    Ok(())
}

/// The contexts one controller connection put; dropped (the connection closed and its
/// last call ended), it removes those still there, as image leases are let go.
pub struct ConnContexts {
    data_dir: PathBuf,
    builds: Mutex<BTreeSet<String>>,
}

impl ConnContexts {
    /// No contexts yet, for a connection to the agent of `data_dir`.
    pub fn new(data_dir: &Path) -> ConnContexts {
        ConnContexts {
            data_dir: data_dir.to_path_buf(),
            builds: Mutex::new(BTreeSet::new()),
        }
    }

    /// The data directory the contexts live in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Record `build` as this connection's (before its directory is made).
    pub fn add(&self, build: &str) {
        self.lock().insert(build.to_string());
    }

    /// `build` is gone (removed, or never made).
    pub fn forget(&self, build: &str) {
        self.lock().remove(build);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.builds.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for ConnContexts {
    fn drop(&mut self) {
        let builds = std::mem::take(&mut *self.lock());
        if builds.is_empty() {
            return;
        }
        let data_dir = self.data_dir.clone();
        let work = move || {
            for b in &builds {
                let _ = remove(&data_dir, b);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(work)),
            Err(_) => work(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn dockerignore_removes_matches_and_keeps_reincluded_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(
            p.join(".dockerignore"),
            "*.log\nbuild\n!build/keep\nsecret\n",
        )
        .unwrap();
        std::fs::write(p.join("a.log"), "").unwrap();
        std::fs::write(p.join("app.py"), "").unwrap();
        std::fs::create_dir_all(p.join("build/sub")).unwrap();
        std::fs::write(p.join("build/keep"), "").unwrap();
        std::fs::write(p.join("build/sub/x.o"), "").unwrap();
        std::fs::create_dir_all(p.join("secret")).unwrap();
        std::fs::write(p.join("secret/key"), "").unwrap();
        apply_dockerignore(p).unwrap();
        assert!(!p.join("a.log").exists());
        assert!(p.join("app.py").exists());
        assert!(p.join("build/keep").exists());
        assert!(!p.join("build/sub/x.o").exists());
        assert!(!p.join("secret").exists());
        assert!(p.join(".dockerignore").exists(), "kept when not listed");
    }

    /// A tar of regular `files` (name, text), as a client sends a build context.
    pub(crate) fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, text) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(text.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, text.as_bytes()).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_first_context_sweeps_what_a_killed_process_left() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join("build/0123456789abcdef/context");
        std::fs::create_dir_all(&stale).unwrap();
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n")]);
        put(d.path(), "aa", "Dockerfile", &mut &tar[..], |_| Ok(())).unwrap();
        assert!(!stale.exists());
        put(d.path(), "bb", "Dockerfile", &mut &tar[..], |_| Ok(())).unwrap();
        assert!(
            context_dir(d.path(), "aa").is_ok(),
            "a live context is not swept"
        );
        remove(d.path(), "aa").unwrap();
        assert!(!d.path().join("build/aa").exists());
        assert!(matches!(
            context_dir(d.path(), "aa"),
            Err(ContextError::NotFound(_))
        ));
        remove(d.path(), "aa").unwrap();
    }

    #[test]
    fn a_context_is_put_once_and_its_dockerfile_read() {
        let d = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("sub/D", "FROM scratch\n"), ("a.log", "x")]);
        let text = put(d.path(), "c1", "sub/D", &mut &tar[..], |_| Ok(())).unwrap();
        assert_eq!(text, "FROM scratch\n");
        assert!(context_dir(d.path(), "c1").unwrap().join("a.log").exists());
        let e = put(d.path(), "c1", "sub/D", &mut &tar[..], |_| Ok(())).unwrap_err();
        assert!(matches!(e, ContextError::Exists(_)), "{e}");
        let e = put(d.path(), "c2", "Dockerfile", &mut &tar[..], |_| Ok(())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Cannot locate specified Dockerfile: Dockerfile"
        );
        assert!(
            !d.path().join("build/c2").exists(),
            "a failed put leaves nothing"
        );
    }

    #[test]
    fn a_body_cut_short_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n"), ("big", &"x".repeat(4096))]);
        // Broken off in the middle of an entry.
        let mut reader = (&tar[..1024]).chain(FailingReader);
        let e = put(d.path(), "c3", "Dockerfile", &mut reader, |_| Ok(())).unwrap_err();
        assert!(matches!(e, ContextError::Unpack(_)), "{e}");
        assert!(!d.path().join("build/c3").exists());
        // Whole tar, but the stream aborted after it.
        let e = put(d.path(), "c4", "Dockerfile", &mut &tar[..], |_| {
            Err(io::Error::other("the stream was cut short"))
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "read build context: the stream was cut short"
        );
        assert!(!d.path().join("build/c4").exists());
    }

    struct FailingReader;

    impl Read for FailingReader {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::other("the stream was cut short"))
        }
    }

    #[test]
    fn bad_build_ids_are_refused_before_any_path_is_made() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../../etc", "", "AB", "a/b"] {
            let e = put(d.path(), bad, "Dockerfile", &mut &[][..], |_| Ok(())).unwrap_err();
            assert!(matches!(e, ContextError::BadId(_)), "{bad}: {e}");
            assert!(remove(d.path(), bad).is_err());
            assert!(context_dir(d.path(), bad).is_err());
        }
        assert!(!d.path().join("build").exists());
    }

    #[test]
    fn contexts_of_a_connection_go_with_it() {
        let d = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("Dockerfile", "FROM scratch\n")]);
        let conn = ConnContexts::new(d.path());
        for b in ["d1", "d2"] {
            conn.add(b);
            put(d.path(), b, "Dockerfile", &mut &tar[..], |_| Ok(())).unwrap();
        }
        // Another connection's context stays.
        put(d.path(), "d3", "Dockerfile", &mut &tar[..], |_| Ok(())).unwrap();
        drop(conn);
        assert!(!d.path().join("build/d1").exists());
        assert!(!d.path().join("build/d2").exists());
        assert!(d.path().join("build/d3/context").exists());
    }

    #[test]
    fn hostile_context_entries_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`, so the name is written raw.
        h.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"../evil");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let e = unpack(&tar[..], d.path()).unwrap_err();
        assert!(matches!(e, ContextError::Unpack(_)), "{e}");
        assert!(e.to_string().contains("escapes"), "{e}");
        assert!(!d.path().parent().unwrap().join("evil").exists());
    }

    #[test]
    fn dockerfile_is_read_inside_the_context() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("Dockerfile")).unwrap();
        let e = read_dockerfile(d.path(), "Dockerfile").unwrap_err();
        assert!(matches!(e, ContextError::NoDockerfile(_)), "{e}");
    }
}
