//! Agent requests about one container: its lifecycle, processes, files and counters.

use super::{ContainerRunSpec, HostSpec};
use crate::network::NetworkSetup;
use crate::runtime::{CgroupSample, HealthState, ShimOptions};
use crate::shim::{ExecSpec, Exit};
use crate::ContainerId;
use serde::{Deserialize, Serialize};

/// A request about a container (see [`super::AgentRequest::Container`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerRequest {
    /// Make the writable layer and state folder; nothing runs. Answer: `Done`.
    Create {
        /// What to run.
        spec: ContainerRunSpec,
    },
    /// Attach to the process' stdio. Answer: `Done` once the attach is set up, then the
    /// process' output as items (`Output`, ending with `Exit`); stdin as items the other
    /// way. With `next_start`, the stream is that of the container's next start: the
    /// answer comes at once and the items once the start has happened; a start that
    /// fails, or a removal, aborts the stream.
    Attach {
        /// The container.
        id: ContainerId,
        /// Take stdin as well.
        stdin: bool,
        /// Wait for the next start instead of attaching to the running process.
        next_start: bool,
    },
    /// Drop attaches waiting for a start that will not come. Answer: `Done`.
    CancelAttaches {
        /// The container.
        id: ContainerId,
    },
    /// Send a signal to the main process. Answer: `Done`, or `NotRunning`.
    Kill {
        /// The container.
        id: ContainerId,
        /// The signal number.
        signal: i32,
    },
    /// Wait for the main process to end. Answer: `Exited`.
    Wait {
        /// The container.
        id: ContainerId,
    },
    /// Release what a finished run holds (shim, mount, cgroup). Answer: `Done`.
    Cleanup {
        /// The container.
        id: ContainerId,
    },
    /// Remove a container that no longer runs: writable layer, logs, state. Answer: `Done`.
    Remove {
        /// The container.
        id: ContainerId,
    },
    /// Run a process in the running container. Answer: `ExecStarted`, then the stream as
    /// for `Attach`.
    Exec {
        /// The container.
        id: ContainerId,
        /// What to run.
        spec: ExecSpec,
    },
    /// Resize the container's terminal. Answer: `Done`.
    Resize {
        /// The container.
        id: ContainerId,
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Resize an exec process' terminal. Answer: `Done`.
    ResizeExec {
        /// The container.
        id: ContainerId,
        /// The exec instance.
        exec_id: String,
        /// Rows.
        height: u16,
        /// Columns.
        width: u16,
    },
    /// Freeze (`true`) or thaw the container's processes. Answer: `Done`.
    Pause {
        /// The container.
        id: ContainerId,
        /// Freeze or thaw.
        freeze: bool,
    },
    /// Host PIDs of the container's processes (`docker top`). Answer: `Pids`.
    Pids {
        /// The container.
        id: ContainerId,
    },
    /// Start a created or exited container: its shim, its interfaces, the attaches
    /// waiting for it, then its process. Answer: `Started`.
    Start {
        /// What to run.
        spec: ContainerRunSpec,
        /// Log rotation, healthcheck, network namespace, init.
        options: ShimOptions,
        /// Interfaces, `/etc/hosts` lines and name servers.
        setup: NetworkSetup,
    },
    /// The health the container's shim last recorded. Answer: `Health`.
    Health {
        /// The container.
        id: ContainerId,
    },
    /// The container's cgroup counters (`docker stats`). Answer: `Stats`.
    Stats {
        /// The container.
        id: ContainerId,
    },
    /// Where the container's files are on its host, as `docker inspect` shows them.
    /// Answer: `Paths`. Superseded by `Local`, which answers these and more; kept, as
    /// every variant is, for peers that still send it.
    Paths {
        /// The container.
        id: ContainerId,
    },
    /// Bytes the container uses on its host (`docker ps -s`, `system df`, prune).
    /// Answer: `Usage`.
    Usage {
        /// The container.
        id: ContainerId,
    },
    /// Whether the host can run a container with these settings (capability and ulimit
    /// names, sysctls, the sources of `--mount type=bind`), before it is recorded.
    /// Answer: `Done`, or an `InvalidInput` failure saying what is wrong.
    Check {
        /// The settings.
        host: HostSpec,
        /// Host paths that must exist already (`--mount type=bind` sources; those of
        /// `-v /path:/target` are made by `Create`, as Docker does).
        bind_sources: Vec<String>,
    },
    /// What `docker inspect` shows of the container that only its host knows: its
    /// files' paths and its process (the replicated state holds no host PIDs).
    /// Answer: `Local`.
    Local {
        /// The container.
        id: ContainerId,
    },
    /// Push the container's health status while it runs: `Done`, then a
    /// [`crate::wire::StreamItem::Health`] at once and at every change, as its shim's
    /// checks find it (read on the host, so nothing polls across the connection). Goes
    /// on until the controller ends its stream.
    WatchHealth {
        /// The container.
        id: ContainerId,
    },
}

/// What a [`ContainerRequest`] answers beyond `Done`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerResponse {
    /// The process' host PID.
    Started {
        /// Host PID.
        pid: u32,
    },
    /// How the process ended; `None` when it never ran and left no record.
    Exited(Option<Exit>),
    /// An exec process runs.
    ExecStarted {
        /// Its host PID.
        pid: u32,
    },
    /// Host PIDs.
    Pids(Vec<u32>),
    /// The recorded health; `None` without a healthcheck.
    Health(Option<HealthState>),
    /// Counters.
    Stats(CgroupSample),
    /// Host paths of a container.
    Paths {
        /// Its state folder (`hosts`, `resolv.conf`, `hostname` are in it).
        state_dir: String,
        /// Its json-file log.
        log_path: String,
    },
    /// Bytes a container uses.
    Usage {
        /// Its state folder (logs, state), what `container prune` reclaims.
        state_bytes: u64,
        /// Its writable layer's changes (`SizeRw`).
        rw_bytes: u64,
    },
    /// What the host knows of a container.
    Local(ContainerLocal),
}

/// What only a container's host knows of it, for `docker inspect`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLocal {
    /// Its state folder (`hosts`, `resolv.conf`, `hostname` are in it).
    pub state_dir: String,
    /// Its json-file log.
    pub log_path: String,
    /// Host PID of its main process while it has one (`State.Pid`), else 0.
    pub pid: u32,
    /// Its network namespace while it runs (`NetworkSettings.SandboxKey`), else empty.
    pub sandbox_key: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::runtime::NetnsMode;

    fn text(s: &str) -> Vec<u8> {
        let mut v = (s.len() as u64).to_le_bytes().to_vec();
        v.extend(s.as_bytes());
        v
    }

    /// The request and answer of a container's host facts: variants after every older
    /// one, so agents and controllers of other builds read the rest unchanged.
    #[test]
    fn golden_bytes_of_local() {
        let id = ContainerId::from_bytes([0xab; 32]);
        let request = ContainerRequest::Local { id: id.clone() };
        let mut want = vec![1u8, 18, 0, 0, 0];
        want.extend(text(&"ab".repeat(32)));
        assert_eq!(encode(&request).unwrap(), want);
        assert_eq!(decode::<ContainerRequest>(&want).unwrap(), request);

        let answer = ContainerResponse::Local(ContainerLocal {
            state_dir: "/d".into(),
            log_path: "/l".into(),
            pid: 0x0102_0304,
            sandbox_key: "/k".into(),
        });
        let mut want = vec![1u8, 8, 0, 0, 0];
        want.extend(text("/d"));
        want.extend(text("/l"));
        want.extend([4, 3, 2, 1]);
        want.extend(text("/k"));
        assert_eq!(encode(&answer).unwrap(), want);
        assert_eq!(decode::<ContainerResponse>(&want).unwrap(), answer);
    }

    /// `--network container:<id>` as the controller sends it: by ID, the last mode.
    #[test]
    fn golden_bytes_of_joining_a_container_by_id() {
        let mode = NetnsMode::JoinContainer(ContainerId::from_bytes([0xab; 32]));
        let mut want = vec![1u8, 3, 0, 0, 0];
        want.extend(text(&"ab".repeat(32)));
        assert_eq!(encode(&mode).unwrap(), want);
        assert_eq!(decode::<NetnsMode>(&want).unwrap(), mode);
        let path = NetnsMode::Join("/proc/7/ns/net".into());
        let mut want = vec![1u8, 2, 0, 0, 0];
        want.extend(text("/proc/7/ns/net"));
        assert_eq!(encode(&path).unwrap(), want, "joining by path is unchanged");
    }
}
