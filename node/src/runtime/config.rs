//! What the agent hands a shim ([`ShimConfig`], `shim.json`) and where a shim keeps its
//! files inside a container's state directory ([`StatePaths`]).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use wharf_protocol::agent::ContainerRunSpec;
pub use wharf_protocol::runtime::{NetnsMode, ShimOptions};

/// The [`ShimConfig::version`] this build writes and reads.
pub const SHIM_CONFIG_VERSION: u32 = 1;

/// Everything a shim needs to create and run one container; `<state>/shim.json`.
#[derive(Serialize, Deserialize)]
pub struct ShimConfig {
    /// [`SHIM_CONFIG_VERSION`] of the agent that wrote it.
    pub version: u32,
    /// The container as the controller resolved it.
    pub run: ContainerRunSpec,
    /// The overlay to mount as the container's rootfs (`target` is the merged dir).
    pub mount: crate::image::MountSpec,
    /// cgroup path for the cgroupfs driver, e.g. `/wharf-<instance>/<id>`.
    pub cgroups_path: String,
    /// libcontainer's state root, shared by the agent's containers (e.g. `<data>/runtime`).
    pub runtime_root: PathBuf,
    /// The json-file log, e.g. `<state>/<id>-json.log`.
    pub log_path: PathBuf,
    /// Log rotation and healthcheck; absent in files of older agents.
    #[serde(default)]
    pub options: ShimOptions,
    /// `--init`: the host's init binary, bound at `/sbin/docker-init` and run as PID 1.
    #[serde(default)]
    pub init_path: Option<PathBuf>,
}

/// Why `shim.json` could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read or written.
    #[error("shim config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid config.
    #[error("shim config {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by an agent newer than this shim.
    #[error("shim config {path}: version {version} is newer than {SHIM_CONFIG_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version it names.
        version: u32,
    },
}

impl ShimConfig {
    /// Read `<state_dir>/shim.json`; called by the shim at start-up.
    pub fn load(state_dir: &Path) -> Result<ShimConfig, ConfigError> {
        let path = StatePaths::new(state_dir).config();
        let bytes = std::fs::read(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let config: ShimConfig =
            serde_json::from_slice(&bytes).map_err(|source| ConfigError::Json {
                path: path.clone(),
                source,
            })?;
        if config.version > SHIM_CONFIG_VERSION {
            return Err(ConfigError::Version {
                path,
                version: config.version,
            });
        }
        Ok(config)
    }

    /// Write `<state_dir>/shim.json` atomically; called by the agent before
    /// [`crate::runtime::spawn_shim`].
    pub fn write(&self, state_dir: &Path) -> Result<(), crate::runtime::RuntimeError> {
        let path = StatePaths::new(state_dir).config();
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| ConfigError::Json {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes).map_err(|source| ConfigError::Io { path, source })?;
        Ok(())
    }
}

/// Write `bytes` to `path` through a temporary file and a rename, so readers never see a
/// partial file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}

/// The files of one container's state directory.
#[derive(Clone, Debug)]
pub struct StatePaths {
    dir: PathBuf,
}

impl StatePaths {
    /// Paths inside `state_dir` (`<data>/containers/<id>`).
    pub fn new(state_dir: &Path) -> StatePaths {
        StatePaths {
            dir: state_dir.to_path_buf(),
        }
    }

    /// The state directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `shim.json`: the [`ShimConfig`].
    pub fn config(&self) -> PathBuf {
        self.dir.join("shim.json")
    }

    /// `shim.sock`: the shim's control socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("shim.sock")
    }

    /// `shim.error`: why the shim failed to create the container (JSON).
    pub fn error(&self) -> PathBuf {
        self.dir.join("shim.error")
    }

    /// `shim.log`: the shim's own tracing log.
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// `shim.pid`: the daemonized shim's PID.
    pub fn pid(&self) -> PathBuf {
        self.dir.join("shim.pid")
    }

    /// `exit.json`: how the container's process ended.
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit.json")
    }

    /// `bundle/`: the OCI bundle (`config.json`) given to libcontainer.
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle")
    }

    /// `console.sock`: where libcontainer sends a TTY container's pty master.
    pub fn console_socket(&self) -> PathBuf {
        self.dir.join("console.sock")
    }
}

/// A path usable for `bind`/`connect` of a unix socket named `name` in `dir`, short
/// enough for `sun_path` (108 bytes) however long `dir` is: long paths go through
/// `/proc/self/fd/<n>` of `dir_fd`, which must stay open while the path is used.
pub(crate) fn socket_path(dir: &Path, dir_fd: Option<&std::fs::File>, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    let full = dir.join(name);
    match dir_fd {
        Some(fd) if full.as_os_str().len() >= 100 => {
            PathBuf::from(format!("/proc/self/fd/{}/{}", fd.as_raw_fd(), name))
        }
        _ => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_socket_paths_go_through_proc() {
        let dir = tempfile::tempdir().unwrap();
        let fd = std::fs::File::open(dir.path()).unwrap();
        let short = socket_path(dir.path(), Some(&fd), "shim.sock");
        assert_eq!(short, dir.path().join("shim.sock"));
        let long_dir = PathBuf::from(format!("/x/{}", "a".repeat(120)));
        let via_proc = socket_path(&long_dir, Some(&fd), "shim.sock");
        assert!(via_proc.starts_with("/proc/self/fd/"), "{via_proc:?}");
        assert!(via_proc.as_os_str().len() < 100);
    }
}
