//! The build context on disk: the request body unpacked into a private directory with
//! the layer applier's rules (names confined, links resolved inside, devices skipped),
//! `.dockerignore` applied, and removed when the build ends. Blocking.

use super::copy::{open_root, read_in, CopyError};
use super::dockerfile::MAX_DOCKERFILE;
use super::ignore::{IgnoreRules, PatternError};
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use wharf_node::image::apply::{apply_tar, ApplyError, ApplyOptions};

/// Why the context could not be prepared; the texts are Docker's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
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

/// A build's private directory (`context/` and spools); removed on drop.
pub struct WorkDir {
    /// The directory.
    pub path: PathBuf,
}

impl WorkDir {
    /// Create `DATA_DIR/build/<random>` with an empty `context/` in it. The first build
    /// of a process first removes what a killed process left in `DATA_DIR/build` (one
    /// process serves a data dir, so nothing else can be using it).
    pub fn create(data_dir: &Path) -> Result<WorkDir, ContextError> {
        static SWEPT: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
        {
            let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
            if !swept.iter().any(|d| d == data_dir) {
                let _ = std::fs::remove_dir_all(data_dir.join("build"));
                swept.push(data_dir.to_path_buf());
            }
        }
        let path = data_dir
            .join("build")
            .join(hex::encode(rand::random::<[u8; 8]>()));
        match std::fs::create_dir_all(path.join("context")) {
            Ok(()) => Ok(WorkDir { path }),
            Err(source) => Err(ContextError::Create { path, source }),
        }
    }

    /// The unpacked context.
    pub fn context(&self) -> PathBuf {
        self.path.join("context")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove build dir");
        }
    }
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_first_build_sweeps_what_a_killed_process_left() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join("build/0123456789abcdef/context");
        std::fs::create_dir_all(&stale).unwrap();
        let w = WorkDir::create(d.path()).unwrap();
        assert!(!stale.exists());
        let second = WorkDir::create(d.path()).unwrap();
        assert!(w.context().exists(), "a running build's dir is not swept");
        drop(second);
        let p = w.path.clone();
        drop(w);
        assert!(!p.exists());
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
