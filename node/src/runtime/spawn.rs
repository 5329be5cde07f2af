//! Launching a container's shim from the agent: [`spawn_shim`] runs
//! `<wharf> shim --state-dir <dir>` in a new session with stdio on `/dev/null`, reaps the
//! launcher at once (the real shim is its forked child, so it survives the agent being
//! SIGKILLed and is never the agent's child), and waits on a pipe for the shim's verdict.

use crate::runtime::config::StatePaths;
use crate::runtime::shim::{ShimErrorReport, READY_FD_ENV};
use crate::runtime::zygote::{ForkError, Zygote};
use crate::runtime::{ErrorKind, RuntimeError};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How long [`spawn_shim`] waits for the shim to create the container.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);

/// The fd number the shim finds its ready pipe on.
const READY_FD: i32 = 3;

/// What the ready pipe said.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `ok`: the container is created and `shim.sock` accepts connections.
    Ready,
    /// `err <json>`: the shim failed and exited.
    Failed(ShimErrorReport),
}

/// Parse the first line the shim wrote on its ready pipe.
pub fn parse_verdict(line: &[u8]) -> Option<Verdict> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line == b"ok" {
        return Some(Verdict::Ready);
    }
    let json = line.strip_prefix(b"err ")?;
    serde_json::from_slice(json).ok().map(Verdict::Failed)
}

/// Start the shim for the container whose `shim.json` is in `state_dir` and return once
/// it has created the container (not started) and serves `shim.sock`.
///
/// The error of a failed creation carries the shim's [`ErrorKind`] (e.g.
/// [`ErrorKind::CommandNotFound`]).
pub async fn spawn_shim(wharf_exe: &Path, state_dir: &Path) -> Result<(), RuntimeError> {
    spawn_shim_with_timeout(wharf_exe, state_dir, SPAWN_TIMEOUT).await
}

/// [`spawn_shim`] through the agent's shim zygote ([`super::zygote`]), which forks the
/// shim instead of exec'ing `wharf shim`; falls back to that when the zygote cannot be
/// used.
pub async fn spawn_shim_via(
    zygote: &std::sync::Arc<Zygote>,
    wharf_exe: &Path,
    state_dir: &Path,
) -> Result<(), RuntimeError> {
    let paths = StatePaths::new(state_dir);
    let _ = std::fs::remove_file(paths.error());
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Launch {
            exe: wharf_exe.to_path_buf(),
            source: e.into(),
        })?;
    let z = zygote.clone();
    let dir = state_dir.to_path_buf();
    let forked = tokio::task::spawn_blocking(move || {
        let res = z.fork_shim(&dir, &write_end);
        // Our copy of the write end goes, so the pipe ends when the shim's does.
        drop(write_end);
        res
    })
    .await;
    let why = match forked {
        // A shim may be on its way even unacknowledged: its verdict (or the pipe's end,
        // once every holder of the write end is gone) decides; never exec a second one.
        Ok(Ok(())) | Ok(Err(ForkError::Unacknowledged(_))) => {
            return wait_verdict(read_end, &paths, state_dir, SPAWN_TIMEOUT).await
        }
        Ok(Err(e @ ForkError::NotAsked(_))) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(error = %why, "shim zygote unavailable; exec'ing the shim");
    spawn_shim(wharf_exe, state_dir).await
}

/// [`spawn_shim`] with a custom time limit.
pub async fn spawn_shim_with_timeout(
    wharf_exe: &Path,
    state_dir: &Path,
    limit: Duration,
) -> Result<(), RuntimeError> {
    let paths = StatePaths::new(state_dir);
    let launch = |source: std::io::Error| RuntimeError::Launch {
        exe: wharf_exe.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(paths.error());
    let (read_end, write_end) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| launch(e.into()))?;
    let child_fd = write_end.as_raw_fd();
    let mut cmd = tokio::process::Command::new(wharf_exe);
    cmd.arg("shim")
        .arg("--state-dir")
        .arg(state_dir)
        .env(READY_FD_ENV, READY_FD.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: see `hand_over_fd`.
    unsafe {
        cmd.pre_exec(hand_over_fd(child_fd, READY_FD));
    }
    let mut launcher = cmd.spawn().map_err(launch)?;
    drop(write_end);
    // The launcher forks the shim and exits at once.
    let status = launcher.wait().await.map_err(launch)?;
    tracing::debug!(?status, state_dir = %state_dir.display(), "shim launcher exited");
    wait_verdict(read_end, &paths, state_dir, limit).await
}

/// The `pre_exec` closure of a launched helper (shim or zygote): the child's copy of
/// `child_fd` becomes fd `target`, kept across exec, and the child gets its own session.
/// It calls only async-signal-safe functions (dup2, fcntl, setsid) on fds that exist in
/// the child, so it is fit to run between fork and exec.
pub(super) fn hand_over_fd(
    child_fd: i32,
    target: i32,
) -> impl FnMut() -> std::io::Result<()> + Send + Sync + 'static {
    move || {
        // SAFETY: plain system calls on integer fds of this (child) process.
        unsafe {
            if child_fd == target {
                if libc::fcntl(target, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(child_fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Wait (at most `limit`) for the shim's verdict on the ready pipe's read end.
async fn wait_verdict(
    read_end: OwnedFd,
    paths: &StatePaths,
    state_dir: &Path,
    limit: Duration,
) -> Result<(), RuntimeError> {
    let read = tokio::time::timeout(limit, read_line(read_end)).await;
    match read {
        Ok(Ok(line)) if !line.is_empty() => match parse_verdict(&line) {
            Some(Verdict::Ready) => Ok(()),
            Some(Verdict::Failed(report)) => Err(RuntimeError::Shim {
                kind: report.kind,
                message: report.message,
            }),
            None => Err(RuntimeError::Shim {
                kind: ErrorKind::Other,
                message: format!("shim said {:?}", String::from_utf8_lossy(&line)),
            }),
        },
        Ok(_) => Err(failure_from_files(paths)),
        Err(_) => Err(RuntimeError::Timeout {
            state_dir: state_dir.to_path_buf(),
            secs: limit.as_secs(),
        }),
    }
}

fn failure_from_files(paths: &StatePaths) -> RuntimeError {
    let report = std::fs::read(paths.error())
        .ok()
        .and_then(|b| serde_json::from_slice::<ShimErrorReport>(&b).ok());
    match report {
        Some(r) => RuntimeError::Shim {
            kind: r.kind,
            message: r.message,
        },
        None => RuntimeError::Shim {
            kind: ErrorKind::Other,
            message: format!(
                "shim exited without reporting; see {}",
                paths.shim_log().display()
            ),
        },
    }
}

/// Read the ready pipe up to the first newline or EOF.
async fn read_line(fd: OwnedFd) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut line = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = pipe.read(&mut buf).await?;
        if n == 0 {
            return Ok(line);
        }
        line.extend_from_slice(&buf[..n]);
        if let Some(i) = line.iter().position(|&b| b == b'\n') {
            line.truncate(i + 1);
            return Ok(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_parse() {
        assert_eq!(parse_verdict(b"ok\n"), Some(Verdict::Ready));
        let line = br#"err {"kind":"CommandNotFound","message":"exec: \"x\": executable file not found in $PATH"}"#;
        match parse_verdict(line) {
            Some(Verdict::Failed(r)) => {
                assert_eq!(r.kind, ErrorKind::CommandNotFound);
                assert!(r.message.contains("not found in $PATH"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_verdict(b"junk\n"), None);
    }
}
