//! `docker exec` inside the shim: a process joins the running container's namespaces and
//! cgroup through libcontainer's tenant builder, and one shim connection carries its
//! stream.
//!
//! ```text
//!  agent ── Exec{spec} ──► shim: resolve user/cwd/command, write exec-<id>.json
//!                            └ ContainerBuilder::as_tenant().build() ─► process (our child)
//!  agent ◄─ ExecStarted{pid} ─┤
//!  agent ◄─ Output … Exit ────┤◄── pipes or pty ◄── process;  reaper ─► exit code
//!  agent ── Stdin / CloseStdin ►── process stdin
//! ```
//!
//! The process gets the container's seccomp filter through [`exec_seccomp`].
//! The tenant process is cloned with `CLONE_PARENT` and no exit signal, so its end is
//! seen through a pidfd, which wakes the reaper. Building runs synchronously on the
//! shim's single thread, so no reap can happen before the process is registered.
//! [`exec_process`] and [`merge_env`] are the pure decisions.

use crate::runtime::config::{socket_path, write_atomic};
use crate::runtime::exec_seccomp;
use crate::runtime::exit::now_ns;
use crate::runtime::framing::{read_frame, write_frame, FramingError};
use crate::runtime::lookup::{self, LookupError};
use crate::runtime::server::Shim;
use crate::runtime::shim::error_chain;
use crate::runtime::stdio;
use crate::runtime::user::{self, ResolvedUser};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::{Process, Spec, UserBuilder};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::net::unix::OwnedReadHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use wharf_protocol::shim::{
    AttachInput, AttachOutput, ErrorKind, ExecSpec, Exit, Response, Status, STDERR, STDOUT,
};

/// How long output may still arrive after the exec process ended (children holding the
/// pipes open are not waited for longer).
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// Why an exec process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The container does not run.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// The container is paused.
    #[error("container {0} is paused, unpause the container before exec")]
    Paused(String),
    /// The exec ID would not make a safe file name.
    #[error("invalid exec id {0:?}")]
    BadId(String),
    /// The container's OCI spec could not be read.
    #[error("read container spec {path}: {message}")]
    Spec {
        /// bundle/config.json.
        path: PathBuf,
        /// The error.
        message: String,
    },
    /// The user does not exist in the container.
    #[error(transparent)]
    User(#[from] user::UserError),
    /// The command cannot be executed.
    #[error(transparent)]
    Command(#[from] LookupError),
    /// The working directory is not a directory of the container (runc's text).
    #[error("chdir to cwd ({path:?}) set in config.json failed: {}", lookup::os_error_text(.error))]
    Cwd {
        /// The directory.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The working directory is refused (CVE-2024-21626).
    #[error(transparent)]
    Workdir(#[from] lookup::WorkdirError),
    /// A file, pipe or socket could not be set up.
    #[error("{what}: {source}")]
    Io {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// libcontainer refused or failed.
    #[error("exec failed: {0}")]
    Tenant(String),
}

impl ExecError {
    /// The [`ErrorKind`] an agent sees for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ExecError::Command(LookupError::NotInPath(_) | LookupError::NoSuchFile(_)) => {
                ErrorKind::CommandNotFound
            }
            ExecError::Command(LookupError::PermissionDenied(_)) => ErrorKind::PermissionDenied,
            ExecError::Cwd { error, .. } if error.kind() == std::io::ErrorKind::NotFound => {
                ErrorKind::CommandNotFound
            }
            ExecError::NotRunning(_) | ExecError::Paused(_) => ErrorKind::InvalidState,
            _ => ErrorKind::Other,
        }
    }
}

/// Environment of an exec process: the container's, with the exec's `KEY=value` entries
/// replacing same-named ones and the rest appended; `TERM=xterm` added for a TTY when
/// unset (as Docker does).
pub fn merge_env(base: &[String], overrides: &[String], tty: bool) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut env: Vec<String> = base.to_vec();
    for o in overrides {
        let k = key(o);
        match env.iter_mut().find(|e| key(e) == k) {
            Some(slot) => *slot = o.clone(),
            None => env.push(o.clone()),
        }
    }
    if tty && !env.iter().any(|e| key(e) == "TERM") {
        env.push("TERM=xterm".to_string());
    }
    env
}

/// The OCI process of an exec: the container's process (capabilities, rlimits,
/// no-new-privileges, ...) with the exec's argv, environment, directory, user and terminal.
pub fn exec_process(
    base: &Process,
    spec: &ExecSpec,
    user: Option<&ResolvedUser>,
) -> Result<Process, oci_spec::OciSpecError> {
    let mut p = base.clone();
    p.set_args(Some(spec.args.clone()));
    let base_env = base.env().clone().unwrap_or_default();
    p.set_env(Some(merge_env(&base_env, &spec.env, spec.tty)));
    if !spec.working_dir.is_empty() {
        p.set_cwd(PathBuf::from(&spec.working_dir));
    }
    if let Some(u) = user {
        // The user's home, as runc sets it, unless the exec sets HOME itself.
        if !spec.env.iter().any(|e| e.starts_with("HOME=")) {
            let env = merge_env(
                &p.env().clone().unwrap_or_default(),
                &[format!("HOME={}", u.home)],
                false,
            );
            p.set_env(Some(env));
        }
        let mut b = UserBuilder::default().uid(u.uid).gid(u.gid);
        if !u.additional_gids.is_empty() {
            b = b.additional_gids(u.additional_gids.clone());
        }
        p.set_user(b.build()?);
    }
    p.set_terminal(Some(spec.tty));
    p.set_console_size(None);
    Ok(p)
}

/// A started exec process and its stdio, in the shim.
struct Launched {
    pid: i32,
    outputs: Vec<(u8, OwnedFd)>,
    stdin: Option<OwnedFd>,
    exit: oneshot::Receiver<i32>,
    started_at_ns: u64,
}

/// Serve one Exec request on `stream`: start the process, stream it, end with its Exit.
pub(super) async fn serve(
    shim: Rc<Shim>,
    mut stream: UnixStream,
    spec: ExecSpec,
) -> Result<(), FramingError> {
    let launched = match launch(&shim, &spec) {
        Ok(l) => l,
        Err(e) => {
            let message = error_chain(&e);
            tracing::info!(id = %shim.id, exec = %spec.exec_id, error = %message, "exec refused");
            let refuse = Response::Error {
                kind: e.kind(),
                message,
            };
            return write_frame(&mut stream, &refuse).await;
        }
    };
    tracing::info!(id = %shim.id, exec = %spec.exec_id, pid = launched.pid, "exec started");
    let pid = launched.pid;
    write_frame(
        &mut stream,
        &Response::ExecStarted {
            pid: u32::try_from(pid).unwrap_or(0),
        },
    )
    .await?;
    let (rd, mut wr) = stream.into_split();
    if let Some(fd) = launched.stdin {
        match stdio::nonblocking(fd) {
            Ok(fd) => {
                tokio::task::spawn_local(feed_stdin(rd, fd));
            }
            Err(e) => tracing::warn!(error = %e, "exec stdin"),
        }
    }
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    for (n, fd) in launched.outputs {
        tokio::task::spawn_local(pump(n, fd, tx.clone()));
    }
    drop(tx);
    tokio::task::spawn_local(watch_pid(shim.clone(), pid));

    let mut exit_rx = launched.exit;
    let mut code: Option<i32> = None;
    let mut client_gone = false;
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain);
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some((n, data)) => {
                    if !client_gone {
                        let frame = AttachOutput::Output { stream: n, data };
                        client_gone = write_frame(&mut wr, &frame).await.is_err();
                    }
                }
                None => break,
            },
            c = &mut exit_rx, if code.is_none() => {
                code = Some(c.unwrap_or(-1));
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_WAIT);
            },
            _ = &mut drain, if code.is_some() => break,
        }
    }
    let code = match code {
        Some(c) => c,
        None => exit_rx.await.unwrap_or(-1),
    };
    shim.exec_ptys.borrow_mut().remove(&spec.exec_id);
    let _ = std::fs::remove_file(exec_json(&shim, &spec.exec_id));
    tracing::info!(id = %shim.id, exec = %spec.exec_id, code, "exec ended");
    shim.activity.notify_one();
    let exit = Exit {
        code,
        oom_killed: false,
        started_at_ns: launched.started_at_ns,
        finished_at_ns: now_ns(),
    };
    if !client_gone {
        write_frame(&mut wr, &AttachOutput::Exit(exit)).await?;
    }
    Ok(())
}

fn exec_json(shim: &Shim, exec_id: &str) -> PathBuf {
    shim.paths.dir().join(format!("exec-{exec_id}.json"))
}

/// Resolve and start the process; registers it with the reaper before returning.
fn launch(shim: &Shim, spec: &ExecSpec) -> Result<Launched, ExecError> {
    {
        let st = shim.state.borrow();
        if st.exit.is_some() || st.status != Status::Running {
            return Err(ExecError::NotRunning(shim.id.clone()));
        }
        if st.paused {
            return Err(ExecError::Paused(shim.id.clone()));
        }
    }
    let id_ok = !spec.exec_id.is_empty()
        && spec.exec_id.len() <= 64
        && spec.exec_id.bytes().all(|b| b.is_ascii_alphanumeric());
    if !id_ok {
        return Err(ExecError::BadId(spec.exec_id.clone()));
    }
    let config_json = shim.paths.bundle().join("config.json");
    let container = Spec::load(&config_json).map_err(|e| ExecError::Spec {
        path: config_json.clone(),
        message: e.to_string(),
    })?;
    let seccomp = container.linux().as_ref().and_then(|l| l.seccomp().clone());
    let base = container.process().clone().ok_or_else(|| ExecError::Spec {
        path: config_json.clone(),
        message: "no process".into(),
    })?;
    let user = if spec.user.is_empty() {
        None
    } else {
        let passwd = lookup::read_in_root(&shim.rootfs, "/etc/passwd");
        let group = lookup::read_in_root(&shim.rootfs, "/etc/group");
        Some(user::resolve_user(
            &spec.user,
            passwd.as_deref(),
            group.as_deref(),
        )?)
    };
    let process = exec_process(&base, spec, user.as_ref()).map_err(|e| ExecError::Spec {
        path: config_json.clone(),
        message: e.to_string(),
    })?;
    let env = process.env().clone().unwrap_or_default();
    let cwd = process.cwd().to_string_lossy().into_owned();
    lookup::check_working_dir(&cwd)?;
    lookup::check_dir_in_root(&shim.rootfs, &cwd).map_err(|error| ExecError::Cwd {
        path: cwd.clone(),
        error,
    })?;
    lookup::resolve_command(&shim.rootfs, &spec.args, &env, &cwd)?;
    // The container's seccomp filter, which libcontainer's tenant builder leaves out.
    let (process, filter) = exec_seccomp::plan(&process, seccomp.as_ref());

    let json_path = exec_json(shim, &spec.exec_id);
    let json = serde_json::to_vec(&process).map_err(|e| ExecError::Io {
        what: "encode exec process",
        source: std::io::Error::other(e),
    })?;
    write_atomic(&json_path, &json).map_err(|source| ExecError::Io {
        what: "write exec process",
        source,
    })?;
    let launched = build(shim, spec, &json_path, filter);
    if launched.is_err() {
        let _ = std::fs::remove_file(&json_path);
    }
    // Memory the launch touched is given back once the shim is quiet
    // (`server::give_back_when_quiet`), not here, where the client waits.
    launched
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ExecError {
    move |source| ExecError::Io { what, source }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), ExecError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| io("create exec pipe")(std::io::Error::from(e)))
}

fn build(
    shim: &Shim,
    spec: &ExecSpec,
    process_json: &std::path::Path,
    filter: Option<exec_seccomp::FilterPlan>,
) -> Result<Launched, ExecError> {
    let mut builder = ContainerBuilder::new(shim.id.clone(), SyscallType::default())
        .with_root_path(&shim.runtime_root)
        .map_err(|e| ExecError::Tenant(error_chain(&e)))?;
    if let Some(filter) = filter {
        builder = builder.with_executor(exec_seccomp::FilterExecutor::new(filter));
    }
    let dir_fd = File::open(shim.paths.dir()).map_err(io("open state dir"))?;
    let tenant = |b: ContainerBuilder| {
        b.as_tenant()
            .with_process(Some(process_json))
            .with_detach(true)
    };
    // The process inherits signal dispositions: give it the default SIGPIPE.
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl);
    let built = if spec.tty {
        let name = format!("exec-{}.sock", &spec.exec_id[..spec.exec_id.len().min(12)]);
        let path = shim.paths.dir().join(&name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(socket_path(shim.paths.dir(), Some(&dir_fd), &name))
            .map_err(io("bind exec console socket"));
        let built = listener.and_then(|listener| {
            let pid = tenant(builder.with_console_socket(Some(&path)))
                .build()
                .map_err(|e| ExecError::Tenant(error_chain(&e)))?;
            let master = crate::runtime::shim::receive_pty_master(&listener)
                .map_err(|e| ExecError::Tenant(e.to_string()))?;
            Ok((pid, master))
        });
        let _ = std::fs::remove_file(&path);
        built.and_then(|(pid, master)| {
            let output = master.try_clone().map_err(io("dup pty master"))?;
            let stdin = if spec.stdin {
                Some(master.try_clone().map_err(io("dup pty master"))?)
            } else {
                None
            };
            shim.exec_ptys
                .borrow_mut()
                .insert(spec.exec_id.clone(), Rc::new(master));
            Ok((pid, vec![(STDOUT, output)], stdin))
        })
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_child, stdin): (OwnedFd, Option<OwnedFd>) = if spec.stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            (
                File::open("/dev/null")
                    .map_err(io("open /dev/null"))?
                    .into(),
                None,
            )
        };
        tenant(
            builder
                .with_stdin(stdin_child)
                .with_stdout(out_w)
                .with_stderr(err_w),
        )
        .build()
        .map_err(|e| ExecError::Tenant(error_chain(&e)))
        .map(|pid| (pid, vec![(STDOUT, out_r), (STDERR, err_r)], stdin))
    };
    set_sigpipe(nix::sys::signal::SigHandler::SigIgn);
    let (pid, outputs, stdin) = built?;
    let (tx, rx) = oneshot::channel();
    // Registered before any await: the reaper cannot have seen this PID yet.
    shim.execs.borrow_mut().insert(pid.as_raw(), tx);
    Ok(Launched {
        pid: pid.as_raw(),
        outputs,
        stdin,
        exit: rx,
        started_at_ns: now_ns(),
    })
}

fn set_sigpipe(handler: nix::sys::signal::SigHandler) {
    // SAFETY: SIG_DFL and SIG_IGN are not handler functions; nothing runs in signal context.
    if let Err(e) = unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler) }
    {
        tracing::warn!(error = %e, "set SIGPIPE disposition");
    }
}

/// Wake the reaper when the process ends (it sends its parent no SIGCHLD).
async fn watch_pid(shim: Rc<Shim>, pid: i32) {
    let pidfd = rustix::process::Pid::from_raw(pid)
        .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
        .and_then(|fd| stdio::register(fd).ok());
    if let Some(fd) = pidfd {
        let _ = fd.readable().await;
    }
    shim.reap_kick.notify_one();
}

/// Copy one output of the process to the stream's queue until EOF; keeps reading (and
/// dropping) when the stream is gone, so the process never blocks on a full pipe.
async fn pump(stream: u8, fd: OwnedFd, tx: mpsc::Sender<(u8, Vec<u8>)>) {
    let fd = match stdio::nonblocking(fd) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "exec output");
            return;
        }
    };
    let mut buf = vec![0u8; 32 * 1024];
    let mut open = true;
    loop {
        let n = match stdio::read_fd(&fd, &mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EIO) => break,
            Err(e) => {
                tracing::debug!(error = %e, "read exec output");
                break;
            }
        };
        if open && tx.send((stream, buf[..n].to_vec())).await.is_err() {
            open = false;
        }
    }
}

/// Copy stdin frames to the process; CloseStdin or the end of the connection closes a
/// pipe (a pty is closed only with the process).
async fn feed_stdin(mut rd: OwnedReadHalf, fd: tokio::io::unix::AsyncFd<OwnedFd>) {
    // CloseStdin, Detach, a broken frame or the end of the connection end the input. A pty
    // stays open through the output's copy of the master; a pipe closes here.
    while let Ok(AttachInput::Stdin { data }) = read_frame::<_, AttachInput>(&mut rd).await {
        if let Err(e) = stdio::write_all_fd(&fd, &data).await {
            tracing::debug!(error = %e, "exec stdin closed");
            return;
        }
    }
    tracing::debug!(fd = fd.as_raw_fd(), "exec stdin ends");
}

/// Run `spec` to its end without a client (a healthcheck): its exit code and up to
/// `crate::runtime::health::MAX_OUTPUT` + 1 bytes of stdout and stderr; `None` for the code
/// when it ran past `timeout` (it is then killed).
pub(super) async fn run_captured(
    shim: &Rc<Shim>,
    spec: &ExecSpec,
    timeout: Duration,
) -> Result<(Option<i32>, Vec<u8>), ExecError> {
    let launched = launch(shim, spec)?;
    let pid = launched.pid;
    let (tx, mut rx) = mpsc::channel::<(u8, Vec<u8>)>(64);
    for (n, fd) in launched.outputs {
        tokio::task::spawn_local(pump(n, fd, tx.clone()));
    }
    drop(tx);
    tokio::task::spawn_local(watch_pid(shim.clone(), pid));
    let mut exit_rx = launched.exit;
    let mut code: Option<i32> = None;
    let mut output = Vec::new();
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain);
    let mut timed_out = false;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some((_, data)) => {
                    // One byte more than is kept, so the caller can tell it was cut.
                    let room = (crate::runtime::health::MAX_OUTPUT + 1).saturating_sub(output.len());
                    output.extend_from_slice(&data[..data.len().min(room)]);
                }
                None if code.is_some() || timed_out => break,
                None => {
                    code = Some((&mut exit_rx).await.unwrap_or(-1));
                    break;
                }
            },
            c = &mut exit_rx, if code.is_none() && !timed_out => {
                code = Some(c.unwrap_or(-1));
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_WAIT);
            },
            _ = &mut deadline, if code.is_none() && !timed_out => {
                timed_out = true;
                // Still registered with the reaper, so the PID is still ours.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_WAIT);
            },
            _ = &mut drain, if code.is_some() || timed_out => break,
        }
    }
    let _ = std::fs::remove_file(exec_json(shim, &spec.exec_id));
    shim.activity.notify_one();
    Ok((if timed_out { None } else { code }, output))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::ProcessBuilder;

    fn spec(tty: bool) -> ExecSpec {
        ExecSpec {
            exec_id: "e1".into(),
            args: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec!["A=2".into(), "NEW=x".into()],
            working_dir: "/tmp".into(),
            user: String::new(),
            tty,
            stdin: false,
        }
    }

    #[test]
    fn env_overrides_replace_and_append() {
        let base = vec!["PATH=/bin".to_string(), "A=1".to_string()];
        assert_eq!(
            merge_env(&base, &["A=2".into(), "B=3".into()], false),
            ["PATH=/bin", "A=2", "B=3"]
        );
        assert_eq!(
            merge_env(&base, &[], true),
            ["PATH=/bin", "A=1", "TERM=xterm"]
        );
        let with_term = vec!["TERM=dumb".to_string()];
        assert_eq!(merge_env(&with_term, &[], true), ["TERM=dumb"]);
    }

    #[test]
    fn exec_process_keeps_the_container_process_and_changes_the_rest() {
        let base = ProcessBuilder::default()
            .args(vec!["sleep".to_string()])
            .env(vec!["A=1".to_string()])
            .cwd("/")
            .no_new_privileges(true)
            .build()
            .unwrap();
        let user = ResolvedUser {
            uid: 1000,
            gid: 100,
            additional_gids: vec![5],
            home: "/home/u".into(),
        };
        let p = exec_process(&base, &spec(true), Some(&user)).unwrap();
        assert_eq!(p.args().as_deref().unwrap(), ["sh", "-c", "true"]);
        assert_eq!(
            p.env().as_deref().unwrap(),
            ["A=2", "NEW=x", "TERM=xterm", "HOME=/home/u"]
        );
        assert_eq!(p.cwd(), &PathBuf::from("/tmp"));
        assert_eq!(p.user().uid(), 1000);
        assert_eq!(p.user().gid(), 100);
        assert_eq!(p.user().additional_gids().as_deref(), Some(&[5][..]));
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.no_new_privileges(), Some(true));

        let mut s = spec(false);
        s.working_dir.clear();
        let p = exec_process(&base, &s, None).unwrap();
        assert_eq!(p.cwd(), &PathBuf::from("/"));
        assert_eq!(p.user().uid(), 0);
        assert_eq!(p.terminal(), Some(false));
    }

    #[test]
    fn missing_commands_map_to_docker_kinds() {
        let e = ExecError::Command(LookupError::NotInPath("nope".into()));
        assert_eq!(e.kind(), ErrorKind::CommandNotFound);
        let e = ExecError::Command(LookupError::PermissionDenied("/etc".into()));
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(
            ExecError::NotRunning("c".into()).kind(),
            ErrorKind::InvalidState
        );
    }
}
