//! The `local` volume driver on disk: one directory per volume, in moby's layout.
//!
//! ```text
//!   DATA_DIR/volumes/<name>/_data     what the container sees at the mount target
//! ```
//!
//! Which volumes exist is decided in the replicated state; this module only makes and
//! removes their directories and tells the shim where a volume lives
//! ([`resolve_sources`]). Names are validated by the controller and checked again here,
//! so that no name can leave the volumes directory.

use std::path::{Path, PathBuf};
use wharf_protocol::agent::{ContainerRunSpec, MountKind};

/// Why a volume directory could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The name could escape the volumes directory.
    #[error("invalid volume name {0:?}")]
    InvalidName(String),
    /// The directory could not be created or removed.
    #[error("{action} volume {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The volumes of one data directory.
#[derive(Clone, Debug)]
pub struct VolumeStore {
    root: PathBuf,
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl VolumeStore {
    /// The store under `DATA_DIR/volumes`.
    pub fn new(data_dir: &Path) -> VolumeStore {
        VolumeStore {
            root: data_dir.join("volumes"),
        }
    }

    /// The directory holding the volumes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory a container sees: `DATA_DIR/volumes/<name>/_data`
    /// ([`wharf_protocol::agent::volume::mountpoint`]).
    pub fn data_path(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    /// Create the volume's directory (idempotent).
    pub fn create(&self, name: &str) -> Result<PathBuf, VolumeError> {
        if !safe_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        let path = self.data_path(name);
        std::fs::create_dir_all(&path).map_err(|source| VolumeError::Io {
            action: "create",
            path: path.clone(),
            source,
        })?;
        Ok(path)
    }

    /// Remove the volume's directory and its data (idempotent).
    pub fn remove(&self, name: &str) -> Result<(), VolumeError> {
        if !safe_name(name) {
            return Err(VolumeError::InvalidName(name.to_string()));
        }
        let dir = self.root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(VolumeError::Io {
                action: "remove",
                path: dir,
                source,
            }),
        }
    }

    /// Bytes used by the volume's data (for `docker system df -v`; 0 if unreadable).
    pub fn size(&self, name: &str) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(rd) = std::fs::read_dir(p) else {
                return 0;
            };
            rd.flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        }
        walk(&self.data_path(name))
    }
}

/// The run spec a shim gets: every volume mount's source (a volume name) replaced by
/// the volume's directory on this host. Pure.
pub fn resolve_sources(run: &ContainerRunSpec, store: &VolumeStore) -> ContainerRunSpec {
    let mut out = run.clone();
    for m in &mut out.host.mounts {
        if m.kind == MountKind::Volume && !m.source.starts_with('/') {
            m.source = store.data_path(&m.source).display().to_string();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::agent::MountPoint;

    #[test]
    fn names_stay_inside_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let s = VolumeStore::new(tmp.path());
        assert!(matches!(s.create("../x"), Err(VolumeError::InvalidName(_))));
        assert!(matches!(s.create("a/b"), Err(VolumeError::InvalidName(_))));
        assert!(matches!(s.remove(".."), Err(VolumeError::InvalidName(_))));
        let p = s.create("data").unwrap();
        assert_eq!(p, tmp.path().join("volumes/data/_data"));
        std::fs::write(p.join("f"), b"1234").unwrap();
        assert_eq!(s.size("data"), 4);
        s.remove("data").unwrap();
        assert!(!tmp.path().join("volumes/data").exists());
        s.remove("data").unwrap();
    }

    #[test]
    fn the_controller_sees_the_same_mountpoint() {
        let s = VolumeStore::new(Path::new("/var/lib/w"));
        let shown = wharf_protocol::agent::volume::mountpoint(&s.root().display().to_string(), "v");
        assert_eq!(Path::new(&shown), s.data_path("v"));
    }

    #[test]
    fn volume_sources_become_host_paths() {
        let s = VolumeStore::new(Path::new("/d"));
        let mut run = ContainerRunSpec {
            id: wharf_protocol::ContainerId::from_bytes([1; 32]),
            image_id: wharf_protocol::ImageId(wharf_protocol::Digest([2; 32])),
            diff_ids: vec![],
            args: vec!["true".into()],
            env: vec![],
            working_dir: "/".into(),
            user: String::new(),
            hostname: "h".into(),
            tty: false,
            open_stdin: false,
            stop_signal: 15,
            host: Default::default(),
        };
        run.host.mounts = vec![
            MountPoint {
                kind: MountKind::Volume,
                source: "v1".into(),
                target: "/data".into(),
                ..Default::default()
            },
            MountPoint {
                kind: MountKind::Bind,
                source: "/srv".into(),
                target: "/srv".into(),
                ..Default::default()
            },
        ];
        let out = resolve_sources(&run, &s);
        assert_eq!(out.host.mounts[0].source, "/d/volumes/v1/_data");
        assert_eq!(out.host.mounts[1].source, "/srv");
    }
}
