//! How a container ended: the exit code as Docker computes it ([`exit_code`]), whether the
//! OOM killer struck ([`parse_oom_kill`]), and `exit.json`, which outlives the shim so a
//! restarted agent still learns the result ([`write_exit`], [`read_exit_file`]).

use crate::runtime::config::write_atomic;
use nix::sys::wait::WaitStatus;
use std::path::{Path, PathBuf};
use wharf_protocol::shim::Exit;

/// Why `exit.json` could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExitError {
    /// Writing the file failed.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The exit code Docker reports for a wait status: the code, or 128 + signal; `None`
/// for statuses that are not an end (stopped, continued).
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

/// The `oom_kill` counter of a cgroup v1 `memory.oom_control` or v2 `memory.events`
/// file's contents (0 when absent).
pub fn parse_oom_kill(contents: &str) -> u64 {
    contents
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The files that may hold the OOM kill counter of the cgroup at `cgroups_path`.
pub fn oom_counter_files(cgroups_path: &str) -> [PathBuf; 2] {
    let rel = cgroups_path.trim_start_matches('/');
    [
        Path::new("/sys/fs/cgroup/memory")
            .join(rel)
            .join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(rel).join("memory.events"),
    ]
}

/// Read the OOM kill counter of the container's cgroup (0 if it cannot be read).
pub fn oom_kills(cgroups_path: &str) -> u64 {
    oom_counter_files(cgroups_path)
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|c| parse_oom_kill(&c))
        .max()
        .unwrap_or(0)
}

/// Write `exit` to `path` (`exit.json`) atomically.
pub fn write_exit(path: &Path, exit: &Exit) -> Result<(), ExitError> {
    // Serialising plain integers and a bool cannot fail.
    let bytes = serde_json::to_vec(exit).unwrap_or_default();
    write_atomic(path, &bytes).map_err(|source| ExitError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Read an `exit.json`; `None` if it is missing or unreadable.
pub fn read_exit_file(path: &Path) -> Option<Exit> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::unistd::Pid;

    #[test]
    fn exit_codes_as_docker() {
        let pid = Pid::from_raw(5);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            Some(143)
        );
        assert_eq!(exit_code(WaitStatus::Stopped(pid, Signal::SIGSTOP)), None);
    }

    #[test]
    fn oom_counters() {
        assert_eq!(
            parse_oom_kill("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
            2
        );
        assert_eq!(
            parse_oom_kill("low 0\nhigh 0\nmax 1\noom 1\noom_kill 1\n"),
            1
        );
        assert_eq!(parse_oom_kill("oom_kill_disable 0\n"), 0);
        assert_eq!(parse_oom_kill(""), 0);
    }

    #[test]
    fn exit_json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert_eq!(read_exit_file(&path), None);
        let exit = Exit {
            code: 3,
            oom_killed: false,
            started_at_ns: 1,
            finished_at_ns: 2,
        };
        write_exit(&path, &exit).unwrap();
        assert_eq!(read_exit_file(&path), Some(exit));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            r#"{"code":3,"oom_killed":false,"started_at_ns":1,"finished_at_ns":2}"#
        );
    }
}
