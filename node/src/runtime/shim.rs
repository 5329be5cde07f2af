//! The shim process: [`shim_main`] daemonizes, creates the container with libcontainer
//! (created, not started) and hands over to [`crate::runtime::server`].
//!
//! Creation runs single-threaded, before any async runtime exists: libcontainer clones
//! the container's processes and must not run inside a multi-threaded runtime. The
//! container's stdio are pipes (or a pty) owned by the shim, never the shim's own stdio.
//!
//! ```text
//!  wharf shim ─fork─► shim: setsid, subreaper, shim.log
//!     (exits 0)        │ load shim.json → mount overlay → resolve user & command
//!                      │ build_spec → bundle/config.json → libcontainer create
//!                      │ bind shim.sock → "ok\n" on the ready pipe → serve
//!                      └ on error: shim.error + "err <json>\n", unmount, exit 1
//! ```

use crate::runtime::config::{socket_path, ConfigError, ShimConfig, StatePaths};
use crate::runtime::lookup::{self, LookupError};
use crate::runtime::server::{self, Created};
use crate::runtime::spec::{self, SpecError};
use crate::runtime::user::{self, UserError};
use crate::runtime::{shim_log, ErrorKind};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Environment variable naming the fd on which the shim reports readiness to
/// [`crate::runtime::spawn_shim`].
pub const READY_FD_ENV: &str = "WHARF_SHIM_READY_FD";

/// What the shim reports when it could not create the container; `shim.error` and the
/// `err` line of the ready pipe carry it as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimErrorReport {
    /// The failure's kind (command not found, permission denied, ...).
    pub kind: ErrorKind,
    /// What failed, for the user.
    pub message: String,
}

/// Why the shim could not create its container.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `shim_main` was called with other threads running.
    #[error("shim must start single-threaded, found {0} threads")]
    Threads(usize),
    /// `shim.json` could not be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The overlay could not be mounted.
    #[error("mount rootfs at {target}: {message}")]
    Mount {
        /// The merged directory.
        target: PathBuf,
        /// The image module's error.
        message: String,
    },
    /// The user does not exist in the image.
    #[error(transparent)]
    User(#[from] UserError),
    /// The command cannot be executed.
    #[error(transparent)]
    Command(#[from] LookupError),
    /// The working directory could not be created (Docker's texts: "not a directory").
    #[error("create working directory {path}: {}", lookup::os_error_text(.error))]
    WorkingDir {
        /// The directory inside the container.
        path: String,
        /// The OS error.
        error: std::io::Error,
    },
    /// The working directory is one runc CVE-2024-21626 abused.
    #[error(transparent)]
    UnsafeWorkingDir(lookup::WorkdirError),
    /// The OCI spec could not be built.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A file of the state directory could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Pipes, sockets or signal setup failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being set up.
        what: &'static str,
        /// The OS error.
        #[source]
        source: nix::Error,
    },
    /// libcontainer failed to create the container.
    #[error("create container: {0}")]
    Create(String),
    /// The pty master of a TTY container did not arrive.
    #[error("receive pty master: {0}")]
    Console(String),
    /// Network files, devices, volumes or the loopback could not be prepared.
    #[error(transparent)]
    Prepare(#[from] crate::runtime::prepare::PrepareError),
}

impl SetupError {
    /// The [`ErrorKind`] an agent sees for this failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            SetupError::Command(LookupError::NotInPath(_) | LookupError::NoSuchFile(_)) => {
                ErrorKind::CommandNotFound
            }
            SetupError::Command(LookupError::PermissionDenied(_)) => ErrorKind::PermissionDenied,
            SetupError::WorkingDir { .. } => ErrorKind::WorkingDirectory,
            SetupError::Config(ConfigError::Version { .. }) => ErrorKind::UnsupportedVersion,
            _ => ErrorKind::Other,
        }
    }
}

/// The error and all its sources, joined by `: `.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// Entry point of `wharf shim --state-dir <dir>`; returns the process' exit code.
///
/// The `wharf` binary must call this before it starts any thread or async runtime. The
/// calling process returns at once (0) after forking the daemonized shim, which runs the
/// container until an agent sends Delete.
pub fn shim_main(state_dir: &Path) -> i32 {
    shim_main_ready(state_dir, ReadyPipe::from_env())
}

/// [`shim_main`] in a process forked by [`crate::runtime::zygote`], which hands over the
/// ready pipe's write end itself.
pub(crate) fn shim_main_with(state_dir: &Path, ready: Option<OwnedFd>) -> i32 {
    shim_main_ready(state_dir, ReadyPipe(ready.map(File::from)))
}

/// Report on the ready pipe `ready` that no shim could be started.
pub(crate) fn report_failure(ready: Option<OwnedFd>, message: &str) {
    ReadyPipe(ready.map(File::from)).fail(&ShimErrorReport {
        kind: ErrorKind::Other,
        message: message.to_string(),
    });
}

fn shim_main_ready(state_dir: &Path, ready: ReadyPipe) -> i32 {
    let threads = thread_count();
    if threads > 1 {
        ready.fail(&ShimErrorReport {
            kind: ErrorKind::Other,
            message: SetupError::Threads(threads).to_string(),
        });
        return 1;
    }
    // SAFETY: the caller guarantees a single-threaded process (checked again below in the
    // child); the child only continues this function.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => return 0,
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(e) => {
            ready.fail(&ShimErrorReport {
                kind: ErrorKind::Other,
                message: format!("fork shim: {e}"),
            });
            return 1;
        }
    }
    let _ = nix::unistd::setsid();
    let paths = StatePaths::new(state_dir);
    if let Ok(log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.shim_log())
    {
        shim_log::install(log);
    }
    let _ = std::fs::write(paths.pid(), std::process::id().to_string());
    let _ = std::fs::remove_file(paths.error());
    let _ = std::env::set_current_dir("/");

    let mut mounted: Option<PathBuf> = None;
    match create(&paths, &mut mounted) {
        Ok((created, listener)) => {
            tracing::info!(id = %created.id, pid = created.pid, "container created");
            // What create touched is given back once the shim is quiet, not while the
            // client waits for its container to start.
            ready.ok();
            server::serve(created, listener)
        }
        Err(e) => {
            let report = ShimErrorReport {
                kind: e.kind(),
                message: error_chain(&e),
            };
            tracing::error!(error = %report.message, "shim setup failed");
            if let Ok(json) = serde_json::to_vec(&report) {
                let _ = crate::runtime::config::write_atomic(&paths.error(), &json);
            }
            if let Some(target) = mounted {
                if let Err(e) = unmount_rootfs(&target) {
                    tracing::warn!(target = %target.display(), error = %e, "unmount after failure");
                }
            }
            ready.fail(&report);
            1
        }
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1)
}

/// Everything up to a created container and a bound socket.
fn create(
    paths: &StatePaths,
    mounted: &mut Option<PathBuf>,
) -> Result<(Created, UnixListener), SetupError> {
    let config = ShimConfig::load(paths.dir())?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|source| SetupError::Os {
        what: "set child subreaper",
        source,
    })?;

    remove_stale_container(&config.runtime_root, config.run.id.as_str());

    let rootfs = config.mount.target.clone();
    // A shim killed before Delete leaves its overlay mounted; never stack a second one.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if lookup::is_mount_point(&info, &rootfs) {
        tracing::warn!(target = %rootfs.display(), "unmounting a stale rootfs");
        if let Err(e) = unmount_rootfs(&rootfs) {
            tracing::warn!(error = %e, "unmount stale rootfs");
        }
    }
    crate::image::mount_overlay(&config.mount).map_err(|e| SetupError::Mount {
        target: rootfs.clone(),
        message: format!("{e}"),
    })?;
    *mounted = Some(rootfs.clone());

    let run = &config.run;
    let passwd = lookup::read_in_root(&rootfs, "/etc/passwd");
    let group = lookup::read_in_root(&rootfs, "/etc/group");
    let user = user::resolve_user(&run.user, passwd.as_deref(), group.as_deref())?;
    let mut plan = spec::plan(run, rootfs.clone(), user, &config.cgroups_path);
    plan.netns = config.options.netns.clone();
    plan.init = config.init_path.clone();
    crate::runtime::prepare::write_etc_files(&mut plan, paths.dir())?;
    crate::runtime::prepare::resolve_devices(&mut plan)?;
    crate::runtime::prepare::read_cap_bounding(&mut plan);
    crate::runtime::prepare::seed_volumes(&plan, &rootfs)?;
    lookup::check_working_dir(&plan.cwd).map_err(SetupError::UnsafeWorkingDir)?;
    lookup::ensure_dir_in_root(&rootfs, &plan.cwd).map_err(|error| SetupError::WorkingDir {
        path: plan.cwd.clone(),
        error,
    })?;
    lookup::resolve_command(&rootfs, &plan.args, &plan.env, &plan.cwd)?;
    let spec = spec::build_spec(&plan)?;

    let bundle = paths.bundle();
    std::fs::create_dir_all(&bundle).map_err(|source| SetupError::Write {
        path: bundle.clone(),
        source,
    })?;
    let config_json = bundle.join("config.json");
    let json = serde_json::to_vec_pretty(&spec).map_err(|e| SetupError::Write {
        path: config_json.clone(),
        source: std::io::Error::other(e),
    })?;
    crate::runtime::config::write_atomic(&config_json, &json).map_err(|source| {
        SetupError::Write {
            path: config_json.clone(),
            source,
        }
    })?;

    let dir_fd = File::open(paths.dir()).map_err(|source| SetupError::Write {
        path: paths.dir().to_path_buf(),
        source,
    })?;
    let id = run.id.as_str().to_string();
    let builder = ContainerBuilder::new(id.clone(), SyscallType::default())
        .with_root_path(&config.runtime_root)
        .map_err(|e| SetupError::Create(error_chain(&e)))?;

    // The container inherits signal dispositions: give it the default SIGPIPE (Rust
    // ignores it in its own processes).
    set_sigpipe(nix::sys::signal::SigHandler::SigDfl)?;
    let stdio = if run.tty {
        let _ = std::fs::remove_file(paths.console_socket());
        let listener = UnixListener::bind(socket_path(paths.dir(), Some(&dir_fd), "console.sock"))
            .map_err(|e| SetupError::Console(format!("bind console socket: {e}")))?;
        let container = builder
            .with_console_socket(Some(paths.console_socket()))
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| SetupError::Create(error_chain(&e)));
        let _ = std::fs::remove_file(paths.console_socket());
        let container = container?;
        let master = receive_pty_master(&listener)?;
        let stdin = if run.open_stdin {
            Some(dup(&master)?)
        } else {
            None
        };
        let output = dup(&master)?;
        Stdio {
            container,
            outputs: vec![(wharf_protocol::shim::STDOUT, output)],
            stdin,
            pty: Some(master),
        }
    } else {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (stdin_child, stdin): (OwnedFd, Option<OwnedFd>) = if run.open_stdin {
            let (r, w) = pipe()?;
            (r, Some(w))
        } else {
            let null = File::open("/dev/null").map_err(|source| SetupError::Write {
                path: "/dev/null".into(),
                source,
            })?;
            (null.into(), None)
        };
        // The builder owns the child's ends and drops them when build returns, so the
        // shim keeps only its own ends and sees EOF when the container's side closes.
        let container = builder
            .with_stdin(stdin_child)
            .with_stdout(out_w)
            .with_stderr(err_w)
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(|e| SetupError::Create(error_chain(&e)))?;
        Stdio {
            container,
            outputs: vec![
                (wharf_protocol::shim::STDOUT, out_r),
                (wharf_protocol::shim::STDERR, err_r),
            ],
            stdin,
            pty: None,
        }
    };
    set_sigpipe(nix::sys::signal::SigHandler::SigIgn)?;

    let pid = stdio
        .container
        .pid()
        .map(|p| p.as_raw())
        .ok_or_else(|| SetupError::Create("created container has no pid".into()))?;
    if plan.netns == crate::runtime::config::NetnsMode::Own {
        crate::runtime::prepare::loopback_up(pid)?;
    }

    let _ = std::fs::remove_file(paths.socket());
    let listener = UnixListener::bind(socket_path(paths.dir(), Some(&dir_fd), "shim.sock"))
        .map_err(|source| SetupError::Write {
            path: paths.socket(),
            source,
        })?;
    Ok((
        Created {
            id,
            paths: paths.clone(),
            cgroups_path: config.cgroups_path.clone(),
            rootfs,
            log_path: config.log_path.clone(),
            runtime_root: config.runtime_root.clone(),
            container: stdio.container,
            pid,
            outputs: stdio.outputs,
            stdin: stdio.stdin,
            pty: stdio.pty,
            options: config.options.clone(),
        },
        listener,
    ))
}

/// What [`crate::image::unmount`] returns, whichever shape it has (`()` or a `Result`).
pub(crate) trait UnmountOutcome {
    /// The failure, as text.
    fn failure(self) -> Option<String>;
}

impl UnmountOutcome for () {
    fn failure(self) -> Option<String> {
        None
    }
}

impl<T, E: std::fmt::Display> UnmountOutcome for Result<T, E> {
    fn failure(self) -> Option<String> {
        self.err().map(|e| e.to_string())
    }
}

/// Unmount the container's rootfs through the image module, then make sure it is gone
/// from the mount table (a lazy unmount of our own if not).
pub(crate) fn unmount_rootfs(target: &Path) -> Result<(), String> {
    let failure = crate::image::unmount(target).failure();
    let mounted = || {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        lookup::is_mount_point(&info, target)
    };
    for _ in 0..8 {
        if !mounted() {
            return Ok(());
        }
        if let Err(e) = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH) {
            return Err(failure.unwrap_or_else(|| format!("unmount {}: {e}", target.display())));
        }
    }
    Err(failure.unwrap_or_else(|| format!("{} is still mounted", target.display())))
}

/// Remove what a previous shim of this container left in libcontainer's root (it was
/// killed before Delete, or the host rebooted): its processes, cgroup and state, so that
/// create can succeed and nothing is left behind.
pub fn remove_stale_container(runtime_root: &Path, id: &str) {
    let stale = runtime_root.join(id);
    if !stale.exists() {
        return;
    }
    tracing::warn!(dir = %stale.display(), "removing a stale container state");
    match libcontainer::container::Container::load(stale.clone()) {
        Ok(mut old) => {
            if let Err(e) = old.delete(true) {
                tracing::warn!(error = %error_chain(&e), "delete stale container");
            }
        }
        Err(e) => tracing::warn!(error = %error_chain(&e), "load stale container"),
    }
    let _ = std::fs::remove_dir_all(&stale);
}

struct Stdio {
    container: libcontainer::container::Container,
    outputs: Vec<(u8, OwnedFd)>,
    stdin: Option<OwnedFd>,
    pty: Option<OwnedFd>,
}

fn set_sigpipe(handler: nix::sys::signal::SigHandler) -> Result<(), SetupError> {
    // SAFETY: SIG_DFL and SIG_IGN are not handler functions; nothing runs in signal context.
    unsafe { nix::sys::signal::signal(nix::sys::signal::Signal::SIGPIPE, handler) }
        .map(drop)
        .map_err(|source| SetupError::Os {
            what: "set SIGPIPE disposition",
            source,
        })
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SetupError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|source| SetupError::Os {
        what: "create stdio pipe",
        source,
    })
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, SetupError> {
    fd.try_clone()
        .map_err(|e| SetupError::Console(format!("dup pty master: {e}")))
}

/// Accept libcontainer's connection on the console socket and take the pty master it
/// sends (SCM_RIGHTS). libcontainer has sent it before `build` returns.
pub(crate) fn receive_pty_master(listener: &UnixListener) -> Result<OwnedFd, SetupError> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
    let (conn, _) = listener
        .accept()
        .map_err(|e| SetupError::Console(format!("accept: {e}")))?;
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(10)));
    let mut name = [0u8; 256];
    let mut iov = [IoSliceMut::new(&mut name)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| SetupError::Console(format!("recvmsg: {e}")))?;
    let cmsgs = msg
        .cmsgs()
        .map_err(|e| SetupError::Console(format!("control message: {e}")))?;
    for cmsg in cmsgs {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table for us alone.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(SetupError::Console("no fd in console message".into()))
}

/// The write end of the pipe [`crate::runtime::spawn_shim`] waits on, if any.
struct ReadyPipe(Option<File>);

impl ReadyPipe {
    fn from_env() -> ReadyPipe {
        let fd = std::env::var(READY_FD_ENV)
            .ok()
            .and_then(|v| v.parse::<RawFd>().ok())
            .filter(|&fd| fd > 2 && nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok());
        ReadyPipe(fd.map(|fd| {
            // SAFETY: the spawner passed this fd to us for this purpose only, and nothing
            // else in this process owns it.
            let file = unsafe { File::from_raw_fd(fd) };
            let _ = nix::fcntl::fcntl(
                file.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            file
        }))
    }

    fn ok(self) {
        if let Some(mut f) = self.0 {
            let _ = f.write_all(b"ok\n");
        }
    }

    fn fail(self, report: &ShimErrorReport) {
        if let Some(mut f) = self.0 {
            let json = serde_json::to_string(report).unwrap_or_default();
            let _ = f.write_all(format!("err {json}\n").as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_errors_map_to_docker_kinds() {
        let e = SetupError::Command(LookupError::NotInPath("x".into()));
        assert_eq!(e.kind(), ErrorKind::CommandNotFound);
        assert!(error_chain(&e).contains("executable file not found in $PATH"));
        let e = SetupError::Command(LookupError::PermissionDenied("/x".into()));
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert_eq!(SetupError::Create("x".into()).kind(), ErrorKind::Other);
    }
}
