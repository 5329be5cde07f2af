//! The shim zygote: one long-lived, single-threaded `wharf shim-zygote` process per agent
//! that forks every shim, so that what the binary sets up before `main` is shared.
//!
//! A shim exec'ed afresh runs the binary's C++ static constructors (RocksDB's option maps
//! and thread-status tables, libstdc++'s exception pool) and clap's parse again: ~700 KiB
//! of heap and `.bss` written before `main`, private to every shim for its whole life. A
//! shim forked from the zygote starts with those pages shared copy-on-write with the zygote
//! and every other shim, and never writes most of them again, so PSS divides them.
//!
//! ```text
//!  agent ──(state dir, ready pipe fd)──► zygote (SOCK_SEQPACKET, SCM_RIGHTS)
//!                                          └─fork─► launcher: cmdline set to
//!                                                   `wharf shim --state-dir <dir>`,
//!                                                   shim::shim_main_with ─fork─► shim
//!  agent ◄─────────────── "ok" / "err <json>" on the ready pipe ──────────────────┘
//! ```
//!
//! The zygote never starts a thread or a runtime (libcontainer needs a single-threaded
//! process), ends when the agent's end of the socket closes, and is started again by the
//! agent if it is found dead. Shims are the same processes as exec'ed ones: same command
//! line (set with `PR_SET_MM`), same session handling, same ready pipe; the agent falls back
//! to exec'ing `wharf shim` when the zygote cannot be used.

use crate::runtime::shim;
use std::ffi::OsStr;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The fd number the zygote finds its end of the socket on.
pub const ZYGOTE_FD: RawFd = 3;

/// File in the data directory holding the zygote's pid (for benches and operators).
pub const PID_FILE: &str = "shim-zygote.pid";

/// Longest state directory path a request carries.
const MAX_PATH: usize = 4096;

/// Entry point of `wharf shim-zygote`: serve fork requests on [`ZYGOTE_FD`] until the
/// agent closes its end; returns the exit code. Call before any thread is started.
pub fn zygote_main() -> i32 {
    // SAFETY: the agent passed this socket to us for this purpose only.
    let sock = unsafe { OwnedFd::from_raw_fd(ZYGOTE_FD) };
    let _ = nix::fcntl::fcntl(
        sock.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    // Start-up touched code this loop never runs again (argument parsing and the like):
    // give it back. The heap and `.bss` the static constructors wrote stay: they are what
    // the shims share.
    super::footprint::give_back();
    loop {
        let (dir, ready) = match receive(&sock) {
            Ok(Some(req)) => req,
            // The agent is gone.
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("shim-zygote: receive: {e}");
                continue;
            }
        };
        // SAFETY: this process is single-threaded (nothing here starts a thread), so the
        // child may run any code.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(sock);
                set_cmdline(&dir);
                std::process::exit(shim::shim_main_with(&dir, Some(ready)));
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(ready);
                // Tell the agent the shim is on its way (it falls back to exec'ing one when
                // no acknowledgement comes).
                let _ = nix::sys::socket::send(
                    sock.as_raw_fd(),
                    b"f",
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                );
                // The launcher forks the shim and exits at once.
                let _ = nix::sys::wait::waitpid(child, None);
            }
            Err(e) => {
                shim::report_failure(Some(ready), &format!("fork shim: {e}"));
            }
        }
    }
}

/// Read one request: the state directory and the ready pipe's write end. `None` at EOF.
fn receive(sock: &OwnedFd) -> std::io::Result<Option<(PathBuf, OwnedFd)>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = vec![0u8; MAX_PATH];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut fd = None;
    for c in msg.cmsgs().map_err(std::io::Error::from)? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for raw in fds {
                // SAFETY: the kernel just installed this fd for us.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                if fd.is_none() {
                    fd = Some(owned);
                }
            }
        }
    }
    let n = msg.bytes;
    if n == 0 && fd.is_none() {
        return Ok(None);
    }
    let Some(fd) = fd else {
        return Err(std::io::Error::other("request without a ready pipe"));
    };
    let dir = PathBuf::from(OsStr::from_bytes(&buf[..n]));
    Ok(Some((dir, fd)))
}

/// Make `/proc/self/cmdline` read `wharf shim --state-dir <dir>`, as an exec'ed shim's
/// does, for `ps` and for [`super::orphans`]: the new arguments are written over the
/// original ones, as `setproctitle` does (the agent starts the zygote with a blank
/// `--room` argument that makes the space). Skipped when they do not fit.
fn set_cmdline(dir: &Path) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some((start, end)) = arg_range(&stat) else {
        return;
    };
    let exe = std::env::args_os().next().unwrap_or_else(|| "wharf".into());
    let line = shim_cmdline(exe.as_bytes(), dir.as_os_str().as_bytes());
    let len = end - start;
    if line.len() > len {
        return;
    }
    // SAFETY: [start, end) is this process' own argument area on its initial stack
    // (arg_start/arg_end of /proc/self/stat): mapped, writable, and not borrowed by any
    // Rust value (std keeps only raw pointers into it, read by `env::args`). This process
    // is single-threaded here.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    area[..line.len()].copy_from_slice(&line);
    area[line.len()..].fill(0);
}

/// `exe shim --state-dir <dir>`, NUL-separated as in `/proc/PID/cmdline`. Pure.
fn shim_cmdline(exe: &[u8], dir: &[u8]) -> Vec<u8> {
    let mut line = Vec::new();
    for part in [exe, b"shim", b"--state-dir", dir] {
        line.extend_from_slice(part);
        line.push(0);
    }
    line
}

/// `arg_start` and `arg_end` (fields 48 and 49) of a `/proc/PID/stat` line. Pure.
fn arg_range(stat: &str) -> Option<(usize, usize)> {
    // Fields after the command name, which may hold spaces, start with field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start: usize = fields.get(48 - 3)?.parse().ok()?;
    let end: usize = fields.get(49 - 3)?.parse().ok()?;
    (start < end).then_some((start, end))
}

/// Blank room the agent adds to the zygote's arguments for [`set_cmdline`]: what
/// `shim --state-dir <containers>/<64-hex id>` needs beyond `shim-zygote
/// --containers-dir <containers>`, with some to spare.
const CMDLINE_ROOM: usize = 128;

/// The agent's handle on its zygote (started on first use, again if found dead).
pub struct Zygote {
    wharf_exe: PathBuf,
    containers_dir: PathBuf,
    pid_file: PathBuf,
    running: Mutex<Option<Running>>,
}

/// A started zygote: our end of its socket, and the process (reaped when replaced).
struct Running {
    sock: OwnedFd,
    child: std::process::Child,
}

impl Zygote {
    /// A zygote of `wharf_exe` for the containers under `containers_dir`; its pid is kept
    /// in `pid_file`. Nothing is started yet.
    pub fn new(wharf_exe: &Path, containers_dir: &Path, pid_file: &Path) -> Zygote {
        Zygote {
            wharf_exe: wharf_exe.to_path_buf(),
            containers_dir: containers_dir.to_path_buf(),
            pid_file: pid_file.to_path_buf(),
            running: Mutex::new(None),
        }
    }

    /// Ask the zygote to fork the shim of `state_dir`, handing it `ready` (the write end
    /// of the ready pipe). [`ForkError::NotAsked`] means no shim was asked for: exec one
    /// instead. [`ForkError::Unacknowledged`] means the request was delivered but its
    /// acknowledgement did not come: a shim may be on its way, so the caller must wait on
    /// the ready pipe, never ask for a second one (two shims of one container).
    pub fn fork_shim(&self, state_dir: &Path, ready: &OwnedFd) -> Result<(), ForkError> {
        let path = state_dir.as_os_str().as_bytes();
        if path.len() > MAX_PATH {
            return Err(ForkError::NotAsked(std::io::Error::other(
                "state directory path too long",
            )));
        }
        let mut guard = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            let running = match guard.take() {
                Some(r) => r,
                None => self.start().map_err(ForkError::NotAsked)?,
            };
            let res = match send(&running.sock, path, ready) {
                Ok(()) => acknowledged(&running.sock).map_err(ForkError::Unacknowledged),
                Err(e) => Err(ForkError::NotAsked(e)),
            };
            if res.is_ok() {
                *guard = Some(running);
                return Ok(());
            }
            let Running { sock, mut child } = running;
            drop(sock);
            let _ = child.kill();
            let _ = child.wait();
            match res {
                Err(ForkError::NotAsked(e)) => {
                    tracing::warn!(error = %e, attempt, "shim zygote gone; starting another");
                }
                other => return other,
            }
        }
        Err(ForkError::NotAsked(std::io::Error::other(
            "shim zygote unavailable",
        )))
    }

    fn start(&self) -> std::io::Result<Running> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(std::io::Error::from)?;
        let child_fd = theirs.as_raw_fd();
        let mut cmd = std::process::Command::new(&self.wharf_exe);
        cmd.arg("shim-zygote")
            .arg("--containers-dir")
            .arg(&self.containers_dir)
            .arg("--room")
            .arg(" ".repeat(CMDLINE_ROOM))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: see `spawn::hand_over_fd`.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(
                &mut cmd,
                super::spawn::hand_over_fd(child_fd, ZYGOTE_FD),
            );
        }
        let child = cmd.spawn()?;
        drop(theirs);
        nix::sys::socket::setsockopt(
            &ours,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(ACK_WAIT.as_secs() as _, 0),
        )
        .map_err(std::io::Error::from)?;
        let _ = std::fs::write(&self.pid_file, child.id().to_string());
        tracing::info!(pid = child.id(), "shim zygote started");
        Ok(Running { sock: ours, child })
    }
}

impl Drop for Zygote {
    /// Closing our end ends the zygote; it is reaped here so that no zombie is left.
    fn drop(&mut self) {
        let running = self.running.get_mut().map(Option::take);
        if let Ok(Some(Running { sock, mut child })) = running {
            drop(sock);
            let _ = child.wait();
            let _ = std::fs::remove_file(&self.pid_file);
        }
    }
}

/// Why [`Zygote::fork_shim`] did not get a fork acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    /// No request reached a zygote: no shim was asked for.
    #[error("shim zygote unavailable: {0}")]
    NotAsked(#[source] std::io::Error),
    /// A request reached the zygote, which then did not acknowledge it in time (or closed
    /// its socket): it may have forked the shim.
    #[error("shim zygote did not acknowledge a fork: {0}")]
    Unacknowledged(#[source] std::io::Error),
}

/// Wait (at most [`ACK_WAIT`]) for the zygote's word that it forked the shim.
fn acknowledged(sock: &OwnedFd) -> std::io::Result<()> {
    let mut b = [0u8; 1];
    match nix::sys::socket::recv(
        sock.as_raw_fd(),
        &mut b,
        nix::sys::socket::MsgFlags::empty(),
    ) {
        Ok(1) if b[0] == b'f' => Ok(()),
        Ok(_) => Err(std::io::Error::other("shim zygote closed its socket")),
        Err(e) => Err(e.into()),
    }
}

/// How long the agent waits for the zygote to acknowledge a fork.
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn send(sock: &OwnedFd, path: &[u8], ready: &OwnedFd) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [ready.as_fd().as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(path)];
    let n = sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(std::io::Error::from)?;
    if n != path.len() {
        return Err(std::io::Error::other("short send to the shim zygote"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_shim_gets_the_command_line_of_an_execed_one() {
        let line = shim_cmdline(b"/usr/bin/wharf", b"/var/lib/wharf/containers/abc");
        assert_eq!(
            line,
            b"/usr/bin/wharf\0shim\0--state-dir\0/var/lib/wharf/containers/abc\0"
        );
        assert!(super::super::orphans::is_shim_of(
            &[line.as_slice(), &[0; 40]].concat(),
            Path::new("/var/lib/wharf/containers/abc")
        ));
    }

    #[test]
    fn the_argument_area_is_read_from_proc_stat() {
        // A real line of /proc/PID/stat (fields 48 and 49 are arg_start and arg_end), with
        // a command name holding a space and a parenthesis.
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    500 1000000 200 18446744073709551615 4194304 4200000 140730000000000 0 0 0 0 \
                    0 0 0 0 0 17 1 0 0 0 0 0 6300000 6300100 7000000 140730000001000 \
                    140730000001100 140730000001100 140730000001200 0";
        assert_eq!(arg_range(stat), Some((140730000001000, 140730000001100)));
        assert_eq!(arg_range("1 (x) S 1"), None);
        // The real one of this process.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (start, end) = arg_range(&own).unwrap();
        assert!(end - start >= std::fs::read("/proc/self/cmdline").unwrap().len());
    }
}
