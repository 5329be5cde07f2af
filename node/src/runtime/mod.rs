//! The container runtime: one shim process per container, built on youki's libcontainer.
//!
//! The agent prepares a state directory per container, writes [`ShimConfig`] into it as
//! `shim.json` and calls [`spawn_shim`], which runs `wharf shim --state-dir <dir>` (the
//! `wharf` binary dispatches that subcommand to [`shim_main`]). The shim daemonizes, mounts
//! the rootfs, creates the container (not started) and serves `shim.sock`; the agent drives
//! it with [`ShimClient`] and [`attach`]. The shim owns the container's stdio, writes the
//! json-file log, reaps the process and records `exit.json`, so a container outlives an
//! agent restart and the agent can adopt it again.
//!
//! ```text
//!   agent ──spawn_shim──► wharf shim ──fork──► shim (setsid, subreaper)
//!     │                                        │ mount overlay, build_spec, libcontainer create
//!     │◄────────── "ok" on the ready pipe ─────┤
//!     │── ShimClient / attach ─► shim.sock ───►│── start / kill / delete
//!     │◄── Output / Exit frames ───────────────│◄── stdout/stderr pipes ◄── container
//!                                              │──► <id>-json.log, exit.json
//! ```
//!
//! Decisions live in pure modules ([`spec`], [`user`], [`lookup`], [`jsonlog`], [`exit`]);
//! [`shim`], [`server`] and [`spawn`] carry them out.

pub mod client;
pub mod config;
pub mod etc_files;
pub mod exec;
pub mod exec_seccomp;
pub mod exit;
pub mod footprint;
pub mod framing;
pub mod health;
pub mod jsonlog;
pub mod logs;
pub mod lookup;
pub mod orphans;
pub mod prepare;
pub mod seccomp;
pub mod server;
pub mod shim;
mod shim_log;
pub mod spawn;
pub mod spec;
mod stdio;
pub mod user;
pub mod zygote;

pub use client::{attach, exec, read_exit, AttachEvent, AttachStream, ShimClient};
pub use config::{NetnsMode, ShimConfig, ShimOptions, StatePaths, SHIM_CONFIG_VERSION};
pub use logs::{read_log_entries, read_rotated_entries, LogEntry, LogFollower};
pub use shim::shim_main;
pub use spawn::spawn_shim;
pub use spec::{build_spec, RuntimePlan};
pub(crate) use stdio::register as register_fd;
pub use wharf_protocol::shim::{ErrorKind, ExecSpec, Exit, ShimState, Status};

/// Why talking to, or starting, a shim failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The shim's socket could not be reached.
    #[error("connect to shim at {path}: {source}")]
    Connect {
        /// The socket path.
        path: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing the shim's socket failed.
    #[error("shim connection: {0}")]
    Io(#[from] framing::FramingError),
    /// The shim refused or failed the request; `kind` says why (see [`ErrorKind`]).
    #[error("{message}")]
    Shim {
        /// The failure's kind, for Docker's status codes.
        kind: ErrorKind,
        /// The shim's reason.
        message: String,
    },
    /// The shim answered something the request does not allow.
    #[error("unexpected answer from shim: {0}")]
    Unexpected(String),
    /// The shim process could not be launched.
    #[error("launch shim {exe}: {source}")]
    Launch {
        /// The executable.
        exe: std::path::PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `shim.json` could not be written.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The shim did not become ready in time.
    #[error("shim for {state_dir} did not become ready within {secs}s")]
    Timeout {
        /// The container's state directory.
        state_dir: std::path::PathBuf,
        /// The limit.
        secs: u64,
    },
}

impl RuntimeError {
    /// The [`ErrorKind`] the shim reported, if this is a shim's refusal.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            RuntimeError::Shim { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}
