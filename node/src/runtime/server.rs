//! The shim's event loop, after the container is created: serves `shim.sock`, reaps the
//! process (and orphans, as subreaper), records the exit and cleans up on Delete. The
//! container's stdio (output pumps, attach streams, stdin) lives in `stdio`.
//!
//! It runs on a current-thread tokio runtime (the container already exists, so no clone
//! happens inside it). Shared state lives in one `Rc<Shim>`; no borrow is held across an
//! await.
//!
//! ```text
//!  stdout/stderr pipe ─► pump ─► json-file log
//!                          └───► every attacher's queue ─► attach connection
//!  SIGCHLD / pidfd ─► reaper ─► exit.json, waiters; Exit to attachers after the pumps end
//!  shim.sock ─► connection: Hello, then Start | State | Kill | Wait | Delete | Attach
//!                            | Exec (→ `exec`) | ResizeExec | Pause | Resume
//!  Start ─► health loop (→ `health`, if configured) ─► exec the check ─► health.json
//!  create, connection, exec end ─► 1 s quiet ─► footprint::give_back
//! ```
//!
//! Attachers registered before Start see all output: nothing is read before the process
//! runs, and the pumps never drop a frame.

use crate::runtime::config::StatePaths;
use crate::runtime::exit::{exit_code, now_ns, oom_kills, write_exit};
use crate::runtime::framing::{read_frame, write_frame, FramingError};
use crate::runtime::jsonlog::JsonLogWriter;
use crate::runtime::shim::error_chain;
use crate::runtime::stdio;
use libcontainer::container::Container;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};
use wharf_protocol::shim::{
    AttachOutput, ErrorKind, Exit, Request, Response, ShimState, Status, PROTOCOL_VERSION,
};

/// How long the exit is held back for the pumps to drain what the process wrote.
const DRAIN_WAIT: Duration = Duration::from_secs(2);
/// How long Delete waits for a SIGKILLed container to be reaped.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A created container, handed over by [`crate::runtime::shim`].
pub(crate) struct Created {
    pub id: String,
    pub paths: StatePaths,
    pub cgroups_path: String,
    pub rootfs: PathBuf,
    pub log_path: PathBuf,
    pub runtime_root: PathBuf,
    pub container: Container,
    pub pid: i32,
    /// Read ends of the container's output: (stream number, fd).
    pub outputs: Vec<(u8, OwnedFd)>,
    /// Write end of the container's stdin (a pipe, or the pty master).
    pub stdin: Option<OwnedFd>,
    /// The pty master of a TTY container, for resizes.
    pub pty: Option<OwnedFd>,
    /// Log rotation and healthcheck.
    pub options: crate::runtime::config::ShimOptions,
}

/// What changes while the shim runs.
pub(super) struct State {
    pub(super) status: Status,
    pub(super) started_at_ns: u64,
    pub(super) exit: Option<Exit>,
    pub(super) attachers: Vec<mpsc::Sender<AttachOutput>>,
    pub(super) stdin: Option<Rc<AsyncFd<OwnedFd>>>,
    /// The container's cgroup is frozen (Pause).
    pub(super) paused: bool,
}

/// Everything the shim's tasks share, behind one `Rc`.
pub(super) struct Shim {
    pub(super) id: String,
    pub(super) paths: StatePaths,
    pub(super) cgroups_path: String,
    pub(super) rootfs: PathBuf,
    pub(super) pid: i32,
    pub(super) container: RefCell<Container>,
    pub(super) state: RefCell<State>,
    pub(super) log: RefCell<Option<JsonLogWriter>>,
    pub(super) pty: Option<OwnedFd>,
    /// libcontainer's state root, for exec (tenant) processes.
    pub(super) runtime_root: PathBuf,
    /// Exec processes not yet reaped: host PID → where their exit code goes.
    pub(super) execs: RefCell<HashMap<i32, oneshot::Sender<i32>>>,
    /// Pty masters of running TTY exec processes, by exec ID, for ResizeExec.
    pub(super) exec_ptys: RefCell<HashMap<String, Rc<OwnedFd>>>,
    /// Wakes the reaper (an exec process ended: it sends no SIGCHLD).
    pub(super) reap_kick: Notify,
    /// Something happened (a connection, an exec's end): give memory back once quiet.
    pub(super) activity: Notify,
    /// True once the exit is recorded.
    pub(super) exited: watch::Sender<bool>,
    /// Output pumps still reading.
    pub(super) pumps_left: watch::Sender<usize>,
    /// True once Delete has cleaned up: the loop ends.
    pub(super) shutdown: watch::Sender<bool>,
    /// The healthcheck, started with the container.
    pub(super) health: Option<crate::runtime::health::HealthSpec>,
}

/// Run the event loop until Delete; returns the shim's exit code.
pub(crate) fn serve(created: Created, listener: std::os::unix::net::UnixListener) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "build runtime");
            return 1;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(created, listener))
}

async fn run(c: Created, listener: std::os::unix::net::UnixListener) -> i32 {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|_| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listen on shim socket");
            return 1;
        }
    };
    let log = match JsonLogWriter::open_rotating(&c.log_path, c.options.log) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::error!(path = %c.log_path.display(), error = %e, "open container log");
            None
        }
    };
    let stdin = match c.stdin.map(stdio::nonblocking).transpose() {
        Ok(s) => s.map(Rc::new),
        Err(e) => {
            tracing::error!(error = %e, "stdin pipe");
            None
        }
    };
    let shim = Rc::new(Shim {
        id: c.id,
        paths: c.paths,
        cgroups_path: c.cgroups_path,
        rootfs: c.rootfs,
        pid: c.pid,
        container: RefCell::new(c.container),
        state: RefCell::new(State {
            status: Status::Created,
            started_at_ns: 0,
            exit: None,
            attachers: Vec::new(),
            stdin,
            paused: false,
        }),
        log: RefCell::new(log),
        pty: c.pty,
        runtime_root: c.runtime_root,
        execs: RefCell::default(),
        exec_ptys: RefCell::default(),
        reap_kick: Notify::new(),
        activity: Notify::new(),
        exited: watch::Sender::new(false),
        pumps_left: watch::Sender::new(c.outputs.len()),
        shutdown: watch::Sender::new(false),
        health: c.options.health,
    });
    for (stream, fd) in c.outputs {
        tokio::task::spawn_local(stdio::pump(shim.clone(), stream, fd));
    }
    tokio::task::spawn_local(reaper(shim.clone()));
    tokio::task::spawn_local(give_back_when_quiet(shim.clone()));
    // Creating the container was a burst too: give back what it touched once quiet.
    shim.activity.notify_one();

    let mut shutdown = shim.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shim.activity.notify_one();
                    let shim = shim.clone();
                    tokio::task::spawn_local(async move {
                        if let Err(e) = connection(shim, stream).await {
                            tracing::debug!(error = %e, "shim connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = shutdown.wait_for(|done| *done) => break,
        }
    }
    tracing::info!(id = %shim.id, "shim exits");
    0
}

/// How long the shim must be quiet before it gives memory back.
const QUIET: Duration = Duration::from_secs(1);

/// After each burst of activity, once nothing happened for [`QUIET`], give back the
/// code pages and heap the burst touched ([`crate::runtime::footprint`]).
async fn give_back_when_quiet(shim: Rc<Shim>) {
    let mut shutdown = shim.shutdown.subscribe();
    loop {
        tokio::select! {
            _ = shim.activity.notified() => {}
            _ = shutdown.wait_for(|d| *d) => return,
        }
        while tokio::time::timeout(QUIET, shim.activity.notified())
            .await
            .is_ok()
        {}
        crate::runtime::footprint::give_back();
    }
}

/// Reap the container's process and any orphan; record the exit once.
async fn reaper(shim: Rc<Shim>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "SIGCHLD handler; polling instead");
            None
        }
    };
    // A pidfd turns readable when the process ends, whatever signal it sends its parent.
    let pidfd = rustix::process::Pid::from_raw(shim.pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .and_then(|fd| stdio::register(fd).ok());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut shutdown = shim.shutdown.subscribe();
    let mut init_done = false;
    loop {
        loop {
            let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
            match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid");
                    break;
                }
                Ok(status) => {
                    let is_init = status.pid() == Some(Pid::from_raw(shim.pid));
                    let exec = status
                        .pid()
                        .and_then(|p| shim.execs.borrow_mut().remove(&p.as_raw()));
                    match (exit_code(status), exec) {
                        (Some(code), _) if is_init && !init_done => {
                            init_done = true;
                            tracing::info!(id = %shim.id, code, ?status, "container exited");
                            tokio::task::spawn_local(record_exit(shim.clone(), code));
                        }
                        (Some(code), Some(tx)) => {
                            tracing::info!(id = %shim.id, code, ?status, "exec process exited");
                            let _ = tx.send(code);
                        }
                        (None, Some(tx)) => {
                            // Stopped or continued, not ended: keep waiting for it.
                            if let Some(pid) = status.pid() {
                                shim.execs.borrow_mut().insert(pid.as_raw(), tx);
                            }
                        }
                        _ => tracing::debug!(?status, "reaped"),
                    }
                }
            }
        }
        let watch_pidfd = pidfd.is_some() && !init_done;
        tokio::select! {
            Some(()) = async { sigchld.as_mut()?.recv().await } => {}
            Some(()) = async { pidfd.as_ref()?.readable().await.ok().map(|mut g| g.retain_ready()) },
                if watch_pidfd => {}
            // Polling only without a SIGCHLD handler: an idle shim does not wake up.
            _ = tick.tick(), if sigchld.is_none() => {}
            _ = shim.reap_kick.notified() => {}
            _ = shutdown.wait_for(|d| *d) => return,
        }
    }
}

/// Record the exit: exit.json, state, waiters; then Exit to attachers after all output.
async fn record_exit(shim: Rc<Shim>, code: i32) {
    let finished_at_ns = now_ns();
    let mut pumps = shim.pumps_left.subscribe();
    if tokio::time::timeout(DRAIN_WAIT, pumps.wait_for(|n| *n == 0))
        .await
        .is_err()
    {
        // Another process holds the output open: the exit cannot wait for it.
        tracing::info!(id = %shim.id, "output still open after the exit; recording the exit");
    }
    let exit = Exit {
        code,
        oom_killed: oom_kills(&shim.cgroups_path) > 0,
        started_at_ns: shim.state.borrow().started_at_ns,
        finished_at_ns,
    };
    if let Err(e) = write_exit(&shim.paths.exit(), &exit) {
        tracing::error!(error = %e, "write exit.json");
    }
    {
        let mut st = shim.state.borrow_mut();
        st.status = Status::Exited;
        st.exit = Some(exit);
        st.stdin = None;
    }
    shim.exited.send_replace(true);
    let _ = pumps.wait_for(|n| *n == 0).await;
    let attachers = std::mem::take(&mut shim.state.borrow_mut().attachers);
    for tx in attachers {
        let _ = tx.send(AttachOutput::Exit(exit)).await;
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

/// One client connection: Hello, then requests until it closes or attaches.
async fn connection(shim: Rc<Shim>, mut stream: UnixStream) -> Result<(), FramingError> {
    match read_frame::<_, Request>(&mut stream).await? {
        Request::Hello { version } if version >= 1 => {
            let hello = Response::Hello {
                version: PROTOCOL_VERSION,
                shim_pid: std::process::id(),
            };
            write_frame(&mut stream, &hello).await?;
        }
        _ => {
            let refuse = error(
                ErrorKind::UnsupportedVersion,
                "expected Hello with a version",
            );
            return write_frame(&mut stream, &refuse).await;
        }
    }
    loop {
        let request = match read_frame::<_, Request>(&mut stream).await {
            Err(FramingError::Closed) => return Ok(()),
            other => other?,
        };
        tracing::debug!(?request, "request");
        match request {
            Request::Attach { stdin } => {
                write_frame(&mut stream, &Response::Ok).await?;
                return stdio::attach(shim, stream, stdin).await;
            }
            Request::Wait => {
                let exit = wait_exit(&shim).await;
                write_frame(&mut stream, &Response::Exited(exit)).await?;
            }
            Request::Delete => {
                let response = delete(&shim).await;
                let ok = response == Response::Ok;
                write_frame(&mut stream, &response).await?;
                if ok {
                    shim.shutdown.send_replace(true);
                    return Ok(());
                }
            }
            Request::Hello { .. } => {
                write_frame(
                    &mut stream,
                    &error(ErrorKind::InvalidState, "hello sent twice"),
                )
                .await?
            }
            Request::Start => write_frame(&mut stream, &start(&shim)).await?,
            Request::State => write_frame(&mut stream, &Response::State(state(&shim))).await?,
            Request::Kill { signal } => write_frame(&mut stream, &kill(&shim, signal)).await?,
            Request::Resize { height, width } => {
                write_frame(&mut stream, &resize(&shim, height, width)).await?
            }
            Request::Exec { spec } => return crate::runtime::exec::serve(shim, stream, spec).await,
            Request::ResizeExec {
                exec_id,
                height,
                width,
            } => {
                let pty = shim.exec_ptys.borrow().get(&exec_id).cloned();
                let response = match pty {
                    Some(fd) => set_winsize(&fd, height, width),
                    None => error(
                        ErrorKind::InvalidState,
                        format!("exec {exec_id} has no running terminal"),
                    ),
                };
                write_frame(&mut stream, &response).await?
            }
            Request::Pause => write_frame(&mut stream, &pause(&shim, true)).await?,
            Request::Resume => write_frame(&mut stream, &pause(&shim, false)).await?,
        }
    }
}

fn state(shim: &Shim) -> ShimState {
    let st = shim.state.borrow();
    ShimState {
        status: st.status,
        pid: if st.exit.is_some() {
            0
        } else {
            u32::try_from(shim.pid).unwrap_or(0)
        },
        exit: st.exit,
    }
}

fn start(shim: &Rc<Shim>) -> Response {
    let status = shim.state.borrow().status;
    match status {
        Status::Created => {}
        Status::Running => {
            return error(
                ErrorKind::InvalidState,
                format!("container {} is already running", shim.id),
            )
        }
        Status::Exited => {
            return error(
                ErrorKind::InvalidState,
                format!("container {} has exited", shim.id),
            )
        }
    }
    let started = shim.container.borrow_mut().start();
    match started {
        Ok(()) => {
            let mut st = shim.state.borrow_mut();
            if st.status == Status::Created {
                st.status = Status::Running;
            }
            st.started_at_ns = now_ns();
            tracing::info!(id = %shim.id, pid = shim.pid, "container started");
            if let Some(health) = shim.health.clone() {
                crate::runtime::health::reset_health(shim.paths.dir());
                tokio::task::spawn_local(crate::runtime::health::run(shim.clone(), health));
            }
            Response::Started {
                pid: u32::try_from(shim.pid).unwrap_or(0),
            }
        }
        Err(e) => error(
            ErrorKind::Other,
            format!("start container: {}", error_chain(&e)),
        ),
    }
}

fn kill(shim: &Shim, signal: i32) -> Response {
    if shim.state.borrow().exit.is_some() {
        return error(
            ErrorKind::InvalidState,
            format!("container {} is not running", shim.id),
        );
    }
    let signal = match Signal::try_from(signal) {
        Ok(s) => s,
        Err(_) => return error(ErrorKind::Other, format!("invalid signal {signal}")),
    };
    // The process is our child and not yet reaped, so the PID cannot have been reused.
    match nix::sys::signal::kill(Pid::from_raw(shim.pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => return error(ErrorKind::Other, format!("kill {}: {e}", shim.pid)),
    }
    // A frozen process cannot die: thaw it after SIGKILL, as Docker does.
    if signal == Signal::SIGKILL && shim.state.borrow().paused {
        let _ = pause(shim, false);
    }
    Response::Ok
}

/// Freeze (`freeze`) or thaw the container's cgroup through libcontainer.
fn pause(shim: &Shim, freeze: bool) -> Response {
    {
        let st = shim.state.borrow();
        if st.exit.is_some() || st.status != Status::Running {
            return error(
                ErrorKind::InvalidState,
                format!("container {} is not running", shim.id),
            );
        }
        if st.paused == freeze {
            let what = if freeze {
                "already paused"
            } else {
                "not paused"
            };
            return error(
                ErrorKind::InvalidState,
                format!("container {} is {what}", shim.id),
            );
        }
    }
    let done = if freeze {
        shim.container.borrow_mut().pause()
    } else {
        shim.container.borrow_mut().resume()
    };
    match done {
        Ok(()) => {
            shim.state.borrow_mut().paused = freeze;
            tracing::info!(id = %shim.id, freeze, "freezer state changed");
            Response::Ok
        }
        Err(e) => error(
            ErrorKind::Other,
            format!(
                "{} container: {}",
                if freeze { "pause" } else { "resume" },
                error_chain(&e)
            ),
        ),
    }
}

fn resize(shim: &Shim, height: u16, width: u16) -> Response {
    let Some(pty) = shim.pty.as_ref() else {
        return error(
            ErrorKind::InvalidState,
            format!("container {} has no terminal", shim.id),
        );
    };
    set_winsize(pty, height, width)
}

/// Set the window size of the terminal whose master is `pty`.
pub(super) fn set_winsize(pty: &OwnedFd, height: u16, width: u16) -> Response {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(pty.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return error(ErrorKind::Other, format!("resize terminal: {e}"));
    }
    Response::Ok
}

async fn wait_exit(shim: &Shim) -> Exit {
    let mut exited = shim.exited.subscribe();
    let _ = exited.wait_for(|e| *e).await;
    let exit = shim.state.borrow().exit;
    // The flag is set only after the exit is stored.
    exit.unwrap_or(Exit {
        code: -1,
        oom_killed: false,
        started_at_ns: 0,
        finished_at_ns: 0,
    })
}

/// Kill the container if it still runs, then remove it, its cgroup and its rootfs mount.
async fn delete(shim: &Shim) -> Response {
    if shim.state.borrow().exit.is_none() {
        let _ = kill(shim, libc::SIGKILL);
        let mut exited = shim.exited.subscribe();
        if tokio::time::timeout(KILL_WAIT, exited.wait_for(|e| *e))
            .await
            .is_err()
        {
            return error(
                ErrorKind::Other,
                format!("container {} did not exit after SIGKILL", shim.id),
            );
        }
    }
    let mut failures = Vec::new();
    let deleted = shim.container.borrow_mut().delete(true);
    if let Err(e) = deleted {
        failures.push(format!("delete container: {}", error_chain(&e)));
    }
    if let Err(e) = crate::runtime::shim::unmount_rootfs(&shim.rootfs) {
        failures.push(e);
    }
    let _ = std::fs::remove_file(shim.paths.socket());
    let _ = std::fs::remove_dir_all(shim.paths.bundle());
    let _ = std::fs::remove_file(shim.paths.pid());
    if failures.is_empty() {
        tracing::info!(id = %shim.id, "container deleted");
        Response::Ok
    } else {
        let message = failures.join("; ");
        tracing::error!(id = %shim.id, error = %message, "delete");
        error(ErrorKind::Other, message)
    }
}
