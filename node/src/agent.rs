//! The agent facade: everything a controller asks of a host goes through [`Agent`].
//!
//! ```text
//!   controller (same process today, over mTLS later)
//!        │  load / create / start / attach / kill / wait / remove / logs
//!        ▼
//!     Agent ──► ImageStore (overlay2 layers, writable layers)
//!        │
//!        └────► one `wharf shim` process per running container ──► libcontainer
//!                 (holds stdio, writes logs, reaps, records the exit status)
//! ```
//!
//! A container's state lives in `DATA_DIR/containers/<id>/`: `shim.json` (what to run),
//! `shim.sock`, `exit.json`, `<id>-json.log`. The agent keeps nothing about a container
//! in memory that it cannot rebuild from that folder, so it can restart at any time.

use crate::image::ImageStore;
use crate::runtime::{self, AttachStream, Exit, ShimClient, ShimConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tracing::{info, warn};
use wharf_protocol::agent::ContainerRunSpec;
use wharf_protocol::ContainerId;

/// The network namespace of the process `pid` (Docker's `SandboxKey` of a running
/// container, and what `--network container:<id>` joins).
pub fn netns_path(pid: u32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/net"))
}

/// Why the agent could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The image store failed.
    #[error(transparent)]
    Store(#[from] crate::image::StoreError),
    /// Loading an image archive failed.
    #[error(transparent)]
    Load(#[from] crate::image::LoadError),
    /// The runtime or shim failed.
    #[error(transparent)]
    Runtime(#[from] runtime::RuntimeError),
    /// A container folder could not be created, read or removed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The source of a `-v /path:/target` bind could not be made (moby's text).
    #[error("error while creating mount source path '{path}': {source}")]
    MountSource {
        /// The bind's source.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The container has no running shim.
    #[error("container {0} is not running")]
    NotRunning(String),
    /// A blocking task died.
    #[error("agent task failed: {0}")]
    Join(String),
    /// The container's network could not be set up.
    #[error(transparent)]
    Network(#[from] crate::network::NetError),
    /// `--init` was asked for and the init binary is missing or not a file.
    #[error(
        "--init: cannot use the init binary {path}: {source} (install Debian's tini package, \
         or point wharf's --init-path at a static init such as tini-static)"
    )]
    Init {
        /// The configured init binary.
        path: PathBuf,
        /// Why it cannot be used.
        source: std::io::Error,
    },
}

impl AgentError {
    /// The kind of a shim's refusal (command not found, not executable, ...), so callers
    /// decide on it instead of on the message; `None` for any other failure.
    pub fn kind(&self) -> Option<wharf_protocol::shim::ErrorKind> {
        match self {
            AgentError::Runtime(e) => e.kind(),
            _ => None,
        }
    }
}

/// How an agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The instance's data directory.
    pub data_dir: PathBuf,
    /// The `wharf` executable that runs shims (`wharf shim --state-dir …`).
    pub wharf_exe: PathBuf,
    /// Parent cgroup of every container of this instance (unique per data dir).
    pub cgroup_parent: String,
    /// The default bridge's name (`--bridge-name`); derived from the data dir if `None`.
    pub bridge_name: Option<String>,
    /// The default bridge's subnet (`--bridge-subnet`); chosen per instance if `None`.
    pub bridge_subnet: Option<wharf_protocol::network::Subnet>,
    /// The init binary of `docker run --init` (bound at `/sbin/docker-init`).
    pub init_path: PathBuf,
}

struct PendingAttach {
    stdin: bool,
    reply: oneshot::Sender<Result<AttachStream, AgentError>>,
}

/// The local engine of one host.
#[derive(Clone)]
pub struct Agent {
    cfg: Arc<AgentConfig>,
    images: ImageStore,
    pending: Arc<Mutex<HashMap<ContainerId, Vec<PendingAttach>>>>,
    net: Arc<crate::network::NetHost>,
    /// The user networks' embedded DNS resolvers.
    resolvers: Arc<crate::dns::Resolvers>,
    /// Forks the shims (see [`runtime::zygote`]); started on the first container.
    zygote: Arc<runtime::zygote::Zygote>,
    /// How the host fences itself when it hears no controller ([`crate::fence`]).
    fence: Arc<crate::fence::Fence>,
    /// When this agent last started each container, on the monotonic clock: the age the
    /// reconcile judges a start by, which a jump of the wall clock must not change.
    started: Arc<Mutex<HashMap<ContainerId, std::time::Instant>>>,
}

impl Agent {
    /// Open the agent's stores under `cfg.data_dir`; call once at start-up.
    pub fn open(cfg: AgentConfig) -> Result<Agent, AgentError> {
        let images = ImageStore::open(&cfg.data_dir)?;
        let containers = cfg.data_dir.join("containers");
        std::fs::create_dir_all(&containers).map_err(|source| AgentError::Io {
            action: "create",
            path: containers,
            source,
        })?;
        let net = crate::network::NetHost::new(
            &cfg.data_dir,
            cfg.bridge_name.clone(),
            cfg.bridge_subnet,
            &[],
        )?;
        let zygote = runtime::zygote::Zygote::new(
            &cfg.wharf_exe,
            &cfg.data_dir.join("containers"),
            &cfg.data_dir.join(runtime::zygote::PID_FILE),
        );
        let fence = Arc::new(crate::fence::Fence::open(&cfg.data_dir));
        Ok(Agent {
            cfg: Arc::new(cfg),
            images,
            pending: Arc::default(),
            net: Arc::new(net),
            resolvers: Arc::default(),
            zygote: Arc::new(zygote),
            fence,
            started: Arc::default(),
        })
    }

    /// The host's fence ([`crate::fence`]).
    pub fn fence(&self) -> &crate::fence::Fence {
        &self.fence
    }

    /// The host's network side: bridges, veths, rules, port reservations.
    pub fn net(&self) -> &Arc<crate::network::NetHost> {
        &self.net
    }

    /// The embedded DNS resolvers of the user networks whose bridges are on this host.
    pub fn resolvers(&self) -> &crate::dns::Resolvers {
        &self.resolvers
    }

    /// The folder holding a container's runtime state.
    pub fn state_dir(&self, id: &ContainerId) -> PathBuf {
        self.cfg.data_dir.join("containers").join(id.as_str())
    }

    /// The container's json-file log.
    pub fn log_path(&self, id: &ContainerId) -> PathBuf {
        self.state_dir(id).join(format!("{}-json.log", id.as_str()))
    }

    /// Prepare a container: its writable layer and state folder. Nothing runs yet.
    pub async fn create(&self, spec: &ContainerRunSpec) -> Result<(), AgentError> {
        // As Docker: the missing source of a `-v /path:/target` bind is made at create
        // (those of `--mount type=bind` must exist: `ContainerRequest::Check`).
        for m in &spec.host.mounts {
            let path = std::path::Path::new(&m.source);
            if m.kind == wharf_protocol::agent::MountKind::Bind && !path.exists() {
                std::fs::create_dir_all(path).map_err(|source| AgentError::MountSource {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        let dir = self.state_dir(&spec.id);
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let images = self.images.clone();
        let (id, diff_ids) = (spec.id.clone(), spec.diff_ids.clone());
        let made =
            tokio::task::spawn_blocking(move || images.create_rw_layer(id.as_str(), &diff_ids))
                .await
                .map_err(|e| AgentError::Join(e.to_string()));
        match made {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e.into())
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Start a created or exited container: spawn its shim, connect the attachers that
    /// were waiting for it, then let the process run. Returns its host PID.
    pub async fn start(&self, spec: &ContainerRunSpec) -> Result<u32, AgentError> {
        self.start_with(spec, runtime::ShimOptions::default()).await
    }

    /// [`Agent::start`] with the shim's log rotation and healthcheck.
    pub async fn start_with(
        &self,
        spec: &ContainerRunSpec,
        options: runtime::ShimOptions,
    ) -> Result<u32, AgentError> {
        self.start_networked(spec, options, crate::network::NetworkSetup::default())
            .await
    }

    /// [`Agent::start_with`] that also gives the container the interfaces of
    /// `setup.plans` (before its process runs), its `/etc/hosts` lines and name servers.
    pub async fn start_networked(
        &self,
        spec: &ContainerRunSpec,
        options: runtime::ShimOptions,
        setup: crate::network::NetworkSetup,
    ) -> Result<u32, AgentError> {
        let mut options = options;
        options.netns = self.resolve_netns(options.netns).await?;
        let crate::network::NetworkSetup { plans, hosts, dns } = setup;
        let dir = self.state_dir(&spec.id);
        let mount = self
            .images
            .rw_mount_spec(spec.id.as_str(), &spec.diff_ids)?;
        let init_path = if options.init {
            Some(self.init_binary()?)
        } else {
            None
        };
        // A previous run's exit record and socket belong to that run.
        let _ = std::fs::remove_file(dir.join("exit.json"));
        let mut run = crate::volumes::resolve_sources(spec, &self.volumes());
        run.host.extra_hosts.extend(hosts);
        if run.host.dns.is_empty() {
            run.host.dns = dns;
        }
        let config = ShimConfig {
            version: runtime::SHIM_CONFIG_VERSION,
            run,
            mount,
            cgroups_path: format!("/{}/{}", self.cfg.cgroup_parent, spec.id.as_str()),
            runtime_root: self.cfg.data_dir.join("runtime"),
            log_path: self.log_path(&spec.id),
            options,
            init_path,
        };
        config.write(&dir)?;
        self.started()
            .insert(spec.id.clone(), std::time::Instant::now());
        runtime::spawn::spawn_shim_via(&self.zygote, &self.cfg.wharf_exe, &dir).await?;
        let waiting = self
            .pending
            .lock()
            .map(|mut p| p.remove(&spec.id).unwrap_or_default())
            .unwrap_or_default();
        for p in waiting {
            // An attacher that went away meanwhile gets nothing; one that goes away now
            // lets go of the stdin it would have held, without closing it.
            if p.reply.is_closed() {
                continue;
            }
            let stream = runtime::attach(&dir, p.stdin)
                .await
                .map_err(AgentError::from);
            if let Err(Ok(stream)) = p.reply.send(stream) {
                let (_, mut input) = stream.into_split();
                let _ = input.detach().await;
            }
        }
        let mut client = ShimClient::connect(&dir).await?;
        if !plans.is_empty() {
            let created = client.state().await?.pid;
            let net = self.net.clone();
            tokio::task::spawn_blocking(move || net.attach(created, &plans))
                .await
                .map_err(|e| AgentError::Join(e.to_string()))??;
        }
        let pid = client.start().await?;
        info!(container = %spec.id.short(), pid, "started");
        Ok(pid)
    }

    /// `--network container:<id>`: the namespace of that container's process, as a path
    /// the shim joins; the other modes as they are.
    async fn resolve_netns(
        &self,
        netns: runtime::NetnsMode,
    ) -> Result<runtime::NetnsMode, AgentError> {
        match netns {
            runtime::NetnsMode::JoinContainer(target) => match self.main_pid(&target).await {
                Some(pid) => Ok(runtime::NetnsMode::Join(netns_path(pid))),
                None => Err(AgentError::NotRunning(target.to_string())),
            },
            other => Ok(other),
        }
    }

    /// Host PID of the container's main process while it has one, from its shim; `None`
    /// when no shim answers or its process has ended. A host fact: controllers ask for
    /// it and never record it.
    pub async fn main_pid(&self, id: &ContainerId) -> Option<u32> {
        let state = self.client(id).await.ok()?.state().await.ok()?;
        (state.pid != 0 && state.exit.is_none()).then_some(state.pid)
    }

    /// The containers this host holds (every state folder under `containers/`), with
    /// whether each runs and how long ago it last started (its folder's last change for
    /// a container started before this agent did): what the controller reconciles with
    /// its records after a restart of either side.
    pub async fn containers(&self) -> Vec<wharf_protocol::agent::host::HostContainer> {
        let root = self.cfg.data_dir.join("containers");
        let found = tokio::task::spawn_blocking(move || container_folders(&root))
            .await
            .unwrap_or_default();
        let now = std::time::Instant::now();
        let found: Vec<(ContainerId, u64)> = {
            let started = self.started();
            found
                .into_iter()
                .map(|(id, changed)| {
                    let age = age_secs(changed, started.get(&id).copied(), now);
                    (id, age)
                })
                .collect()
        };
        let mut out = Vec::with_capacity(found.len());
        for (id, age_secs) in found {
            let running = self.main_pid(&id).await.is_some();
            out.push(wharf_protocol::agent::host::HostContainer {
                id,
                running,
                age_secs,
            });
        }
        out
    }

    /// When this agent last started each container (a panic elsewhere while it was held
    /// leaves it usable).
    fn started(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, std::time::Instant>> {
        self.started.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured init binary for `--init`, if it is an executable file.
    fn init_binary(&self) -> Result<PathBuf, AgentError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.cfg.init_path.clone();
        let unusable = |source| AgentError::Init {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(unusable)?;
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return Err(unusable(std::io::Error::other("not an executable file")));
        }
        Ok(path)
    }

    /// The health state the container's shim last recorded; `None` without a healthcheck.
    pub fn health(&self, id: &ContainerId) -> Option<runtime::health::HealthState> {
        runtime::health::read_health(&self.state_dir(id))
    }

    /// Attach to a running container's stdio.
    pub async fn attach(&self, id: &ContainerId, stdin: bool) -> Result<AttachStream, AgentError> {
        Ok(runtime::attach(&self.state_dir(id), stdin).await?)
    }

    /// Register an attach to the container's next start; the stream arrives once the shim
    /// runs and before the process starts, so no output of that run is missed. Call before
    /// answering the client, so that a start that follows at once cannot run ahead.
    pub fn attach_after_start(
        &self,
        id: &ContainerId,
        stdin: bool,
    ) -> oneshot::Receiver<Result<AttachStream, AgentError>> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.entry(id.clone())
                .or_default()
                .push(PendingAttach { stdin, reply: tx });
        }
        rx
    }

    /// Drop attachers still waiting for a start that will not come (start failed, removed).
    pub fn cancel_pending(&self, id: &ContainerId) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(id);
        }
    }

    /// Send a signal to the container's process; logged, with its start, as the host's
    /// record of when its copies ran (the cluster test measures overlaps from it).
    pub async fn kill(&self, id: &ContainerId, signal: i32) -> Result<(), AgentError> {
        let mut client = ShimClient::connect(&self.state_dir(id))
            .await
            .map_err(|_| AgentError::NotRunning(id.to_string()))?;
        client.kill(signal).await?;
        info!(container = %id.short(), signal, "signalled");
        Ok(())
    }

    /// Wait for the container's process to end. If its shim is already gone (the host
    /// rebooted, or the shim finished while the agent was down), the exit recorded on
    /// disk is returned; `None` when there is none.
    pub async fn wait(&self, id: &ContainerId) -> Option<Exit> {
        let dir = self.state_dir(id);
        if let Ok(mut client) = ShimClient::connect(&dir).await {
            match client.wait().await {
                Ok(exit) => return Some(exit),
                Err(e) => warn!(container = %id.short(), error = %e, "wait on shim failed"),
            }
        }
        runtime::read_exit(&dir)
    }

    /// Release what a finished run holds (shim, mount, cgroup); keeps the writable layer.
    pub async fn cleanup(&self, id: &ContainerId) {
        let dir = self.state_dir(id);
        if let Ok(mut client) = ShimClient::connect(&dir).await {
            let shim_pid = client.shim_pid();
            if let Err(e) = client.delete().await {
                warn!(container = %id.short(), error = %e, "shim delete failed");
            }
            // The shim exits once it answered: wait for that, so that nothing of the
            // container outlives its cleanup (a `wharf down` right after sees no shim);
            // one that does not is killed.
            if !wait_gone(shim_pid).await {
                runtime::orphans::kill_shims_of(&dir);
            }
        } else {
            // A shim that no longer answers must not outlive its container either. One
            // that was deleted (or never ran) left neither its pid file nor its socket:
            // then there is no process to look for, and the scan of /proc is skipped.
            let paths = runtime::config::StatePaths::new(&dir);
            if paths.pid().exists() || paths.socket().exists() {
                runtime::orphans::kill_shims_of(&dir);
            }
            // No shim (killed, or the host rebooted): remove libcontainer's stale state
            // and the container's cgroup ourselves.
            let root = self.cfg.data_dir.join("runtime");
            let cid = id.as_str().to_string();
            let _ = tokio::task::spawn_blocking(move || {
                runtime::shim::remove_stale_container(&root, &cid)
            })
            .await;
        }
        if let Ok(mount) = self.images.rw_mount_spec(id.as_str(), &[]) {
            if let Err(e) = crate::image::unmount(&mount.target) {
                warn!(container = %id.short(), error = %e, "unmount failed");
            }
        }
    }

    /// Remove a container that no longer runs: writable layer, logs and state folder.
    pub async fn remove(&self, id: &ContainerId) -> Result<(), AgentError> {
        self.cancel_pending(id);
        self.started().remove(id);
        self.cleanup(id).await;
        let images = self.images.clone();
        let cid = id.clone();
        tokio::task::spawn_blocking(move || images.remove_rw_layer(cid.as_str()))
            .await
            .map_err(|e| AgentError::Join(e.to_string()))??;
        let dir = self.state_dir(id);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(AgentError::Io {
                action: "remove",
                path: dir,
                source,
            }),
        }
    }

    /// Run a process in the running container (`docker exec`); returns its host PID and
    /// its stream (output, then its exit).
    pub async fn exec(
        &self,
        id: &ContainerId,
        spec: runtime::ExecSpec,
    ) -> Result<(u32, AttachStream), AgentError> {
        Ok(runtime::exec(&self.state_dir(id), spec).await?)
    }

    /// Resize a TTY container's terminal.
    pub async fn resize(
        &self,
        id: &ContainerId,
        height: u16,
        width: u16,
    ) -> Result<(), AgentError> {
        let mut client = self.client(id).await?;
        Ok(client.resize(height, width).await?)
    }

    /// Resize the terminal of a running TTY exec process.
    pub async fn resize_exec(
        &self,
        id: &ContainerId,
        exec_id: &str,
        height: u16,
        width: u16,
    ) -> Result<(), AgentError> {
        let mut client = self.client(id).await?;
        Ok(client.resize_exec(exec_id, height, width).await?)
    }

    /// Freeze (`true`) or thaw the container's processes.
    pub async fn pause(&self, id: &ContainerId, freeze: bool) -> Result<(), AgentError> {
        let mut client = self.client(id).await?;
        if freeze {
            client.pause().await?;
        } else {
            client.resume().await?;
        }
        Ok(())
    }

    async fn client(&self, id: &ContainerId) -> Result<ShimClient, AgentError> {
        ShimClient::connect(&self.state_dir(id))
            .await
            .map_err(|_| AgentError::NotRunning(id.to_string()))
    }

    /// Host PIDs of every process in the container's cgroup (for `docker top`), from the
    /// first hierarchy that has the group.
    pub fn container_pids(&self, id: &ContainerId) -> Vec<u32> {
        let rel = format!("{}/{}", self.cfg.cgroup_parent, id.as_str());
        let root = Path::new("/sys/fs/cgroup");
        let mut dirs = vec![root.join(&rel)];
        if let Ok(rd) = std::fs::read_dir(root) {
            dirs.extend(rd.flatten().map(|e| e.path().join(&rel)));
        }
        for d in dirs {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                let pids: Vec<u32> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
                if !pids.is_empty() {
                    return pids;
                }
            }
        }
        Vec::new()
    }

    /// Read the container's cgroup counters (`docker stats`).
    pub fn stats(&self, id: &ContainerId) -> crate::stats::CgroupSample {
        let rel = format!("{}/{}", self.cfg.cgroup_parent, id.as_str());
        crate::stats::sample(Path::new("/sys/fs/cgroup"), &rel)
    }

    /// Bytes the container uses: its state folder, and its writable layer's changes.
    pub fn disk_usage(&self, id: &ContainerId) -> (u64, u64) {
        let rw = self.images.layout().rw_dir(id.as_str()).join("diff");
        (
            crate::stats::dir_size(&self.state_dir(id)),
            crate::stats::dir_size(&rw),
        )
    }

    /// The `local` volume driver's directories on this host.
    pub fn volumes(&self) -> crate::volumes::VolumeStore {
        crate::volumes::VolumeStore::new(&self.cfg.data_dir)
    }

    /// The layer store, for the image operations the engine runs in blocking tasks (save,
    /// import, commit, diff, export, collecting unused layers).
    pub fn image_store(&self) -> &ImageStore {
        &self.images
    }

    /// The data directory this agent owns.
    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }
}

/// Wait (up to 5 s) until process `pid` has exited (gone, or a zombie); false if it has not.
async fn wait_gone(pid: u32) -> bool {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(5);
    // A pidfd turns readable the moment the process exits: no polling interval added to
    // every container's removal. Polling /proc stays as the fallback.
    let pidfd = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .map(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()));
    match pidfd {
        Some(Err(rustix::io::Errno::SRCH)) => return true,
        Some(Ok(fd)) => {
            if let Ok(fd) = runtime::register_fd(fd) {
                if tokio::time::timeout(LIMIT, fd.readable()).await.is_ok() {
                    return true;
                }
                warn!(pid, "shim still running 5 s after delete");
                return false;
            }
        }
        _ => {}
    }
    for _ in 0..2500 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            // The state follows the parenthesised command name.
            Ok(stat)
                if stat
                    .rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z')) =>
            {
                return true
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(2)).await,
        }
    }
    warn!(pid, "shim still running 5 s after delete");
    false
}

/// How old a container's start is (pure): by the monotonic clock when this agent started
/// it (`started`), so that a jump of the wall clock neither makes a start in progress
/// look old (the reconcile would stop it) nor a stale copy young; else the seconds since
/// its folder changed (`changed_secs`, wall clock: a container started before this agent).
fn age_secs(
    changed_secs: u64,
    started: Option<std::time::Instant>,
    now: std::time::Instant,
) -> u64 {
    started.map_or(changed_secs, |t| now.saturating_duration_since(t).as_secs())
}

/// The containers' state folders under `root`, with the seconds since each last changed
/// (the newest of the folder, its shim's pid file and its exit record: a start or a stop
/// counts, log lines do not). Names that are not container IDs are skipped.
fn container_folders(root: &Path) -> Vec<(ContainerId, u64)> {
    let Ok(rd) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now();
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let id: ContainerId = e.file_name().to_str()?.parse().ok()?;
            let dir = e.path();
            let paths = runtime::config::StatePaths::new(&dir);
            let changed = [dir.clone(), paths.pid(), paths.exit()]
                .iter()
                .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
                .max()?;
            let age = now.duration_since(changed).map_or(0, |d| d.as_secs());
            Some((id, age))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_folders_are_listed_by_id_with_their_age() {
        let root = tempfile::tempdir().unwrap();
        let id = ContainerId::from_bytes([7; 32]);
        std::fs::create_dir(root.path().join(id.as_str())).unwrap();
        // Not containers: a stray folder, a file named like an ID, a short name.
        std::fs::create_dir(root.path().join("lost+found")).unwrap();
        std::fs::write(
            root.path().join(ContainerId::from_bytes([8; 32]).as_str()),
            b"",
        )
        .unwrap();
        std::fs::create_dir(root.path().join("abc")).unwrap();
        let found = container_folders(root.path());
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, id);
        assert!(found[0].1 < 60, "just made: {}", found[0].1);
        assert!(container_folders(&root.path().join("missing")).is_empty());
    }

    /// A start this agent made is aged on the monotonic clock: the wall clock jumping an
    /// hour forward (the folder then looks an hour old) does not age it, and one jumping
    /// back (the folder looks new) does not make an old start young. A container this
    /// agent did not start is aged by its folder.
    #[test]
    fn a_start_this_agent_made_is_aged_on_the_monotonic_clock() {
        let started = std::time::Instant::now();
        let at = |secs| started + std::time::Duration::from_secs(secs);
        assert_eq!(age_secs(3600, Some(started), at(2)), 2, "forward jump");
        assert_eq!(age_secs(0, Some(started), at(300)), 300, "backward jump");
        assert_eq!(age_secs(3600, None, at(2)), 3600);
        assert_eq!(age_secs(3600, Some(started), started), 0);
    }
}
