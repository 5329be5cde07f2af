//! `wharf up` and `wharf down`: the single-host cluster's process life.
//!
//! Start-up order: lock DATA_DIR → certificates → Raft state (recovery) → agent →
//! API listeners bound (mutual-TLS TCP, the unix socket, and the loopback plain TCP of
//! `--insecure-api-addr`) → the node registered (Ready) → the engine told its agent is
//! connected (volumes root, bridges, endpoints, rules, layers, re-adopt running
//! containers) → serve → `client.env` written atomically. The
//! file's presence therefore means "ready". SIGTERM/SIGINT stop the API and Raft and leave
//! containers running under their shims (live-restore).

use crate::agent_client::{in_process, unix};
use crate::agent_client::{AgentClient, Agents};
use crate::api::Listener;
use crate::certs::{self, Authority};
use crate::engine::Engine;
use crate::raft::Store;
use crate::settings::AgentTransport;
use crate::settings::{client_env, Settings};
use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use wharf_node::agent::{Agent, AgentConfig};
use wharf_protocol::NodeId;

/// The exclusive lock on a data dir, held for the life of the instance.
pub struct DataDirLock {
    _lock: Flock<std::fs::File>,
}

fn lock_path(data_dir: &Path) -> PathBuf {
    data_dir.join("wharf.lock")
}

/// Take the data dir's lock, or say which process holds it.
pub fn lock_data_dir(data_dir: &Path) -> anyhow::Result<DataDirLock> {
    std::fs::create_dir_all(data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let path = lock_path(data_dir);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, errno)) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "{} is in use by another wharf (pid {}): {errno}",
                data_dir.display(),
                holder.trim()
            );
        }
    };
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    lock.sync_all()?;
    Ok(DataDirLock { _lock: lock })
}

/// The parent cgroup name of an instance: unique per data dir.
pub fn cgroup_parent(data_dir: &Path) -> String {
    let digest = wharf_protocol::Digest::of(data_dir.as_os_str().as_encoded_bytes());
    format!("wharf-{}", &digest.hex()[..12])
}

pub(crate) fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// This host's agent (its layers, containers and networks under DATA_DIR), as every
/// role that runs containers opens it.
pub(crate) fn open_agent(s: &Settings) -> anyhow::Result<Agent> {
    Agent::open(AgentConfig {
        data_dir: s.data_dir.clone(),
        wharf_exe: std::env::current_exe().context("find the wharf executable")?,
        cgroup_parent: cgroup_parent(&s.data_dir),
        bridge_name: s.bridge_name.clone(),
        bridge_subnet: s.bridge_subnet()?,
        init_path: s.init_path.clone(),
    })
    .context("open the agent")
}

/// Certificates for this instance: CA, server cert for the address, client cert.
pub(crate) fn ensure_certs(s: &Settings) -> anyhow::Result<()> {
    let dir = s.data_dir.join("certs");
    let ca = Authority::open_or_create(&dir)?;
    let sans = certs::server_sans(s.api_addr.ip(), &hostname());
    if ca.ensure_server(&dir, &sans)? {
        info!(?sans, "issued API server certificate");
    }
    let client = s.client_dir();
    let current = std::fs::read_to_string(client.join("ca.pem")).unwrap_or_default();
    if current != ca.ca_pem()
        || !client.join("cert.pem").exists()
        || !client.join("key.pem").exists()
    {
        ca.issue_client("wharf-admin", &client)?;
        info!(dir = %client.display(), "issued client certificate");
    }
    Ok(())
}

struct Instance {
    _lock: DataDirLock,
    store: Store,
    engine: Arc<Engine>,
    node: NodeId,
}

/// Logical CPUs in `/proc/cpuinfo` text (its `processor` lines).
fn cpu_count(cpuinfo: &str) -> u32 {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `MemTotal` of `/proc/meminfo` text, in bytes (0 if absent).
fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb.saturating_mul(1024))
}

/// Record this host as the cluster's node (a controller that runs containers) and as
/// Ready, so that placement sees it; before serving.
async fn register_node(s: &Settings, store: &Store, node: NodeId) -> anyhow::Result<()> {
    use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
    use wharf_protocol::state::Command;
    let description = NodeDescription {
        hostname: hostname(),
        addr: s.api_addr.ip().to_string(),
        api_addr: s.api_addr.to_string(),
        cluster_addr: String::new(),
        cpus: cpu_count(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default()),
        memory: mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default()),
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_labels: s.label_map()?,
        runs_containers: true,
    };
    let at_ns = crate::engine::now_ns();
    for cmd in [
        Command::RegisterNode {
            id: node,
            role: NodeRole::Controller,
            description,
            at_ns,
        },
        Command::SetNodeState {
            id: node,
            state: NodeState::Ready,
            at_ns,
        },
    ] {
        store
            .propose(cmd)
            .await
            .context("record the node")?
            .map_err(|e| anyhow::anyhow!("record the node: {e}"))?;
    }
    Ok(())
}

async fn open_instance(s: &Settings) -> anyhow::Result<Instance> {
    if !nix::unistd::geteuid().is_root() {
        bail!("wharf must run as root (it mounts, creates namespaces and cgroups)");
    }
    let lock = lock_data_dir(&s.data_dir)?;
    ensure_certs(s)?;
    let store = Store::open(&s.data_dir.join("raft"), s.node_id, s.api_addr.to_string())
        .await
        .context("open the cluster state")?;
    let agent = open_agent(s)?;
    let node = NodeId(s.node_id);
    let client: Arc<dyn AgentClient> = match s.agent_transport {
        AgentTransport::InProcess => Arc::new(in_process::start(agent.clone(), node)),
        AgentTransport::Unix => {
            let path = s.data_dir.join("agent.sock");
            wharf_node::serve::listen_unix(agent.clone(), &path).context("serve the agent")?;
            Arc::new(
                unix::connect(&path, node)
                    .await
                    .context("connect to the agent")?,
            )
        }
    };
    let engine = Engine::new(store.clone(), Agents::new(client), s.data_dir.clone());
    Ok(Instance {
        _lock: lock,
        store,
        engine,
        node,
    })
}

/// `wharf up`: run until SIGTERM or SIGINT.
pub async fn up(s: Settings) -> anyhow::Result<()> {
    s.check_insecure_api_addr()?;
    let env_path = s.client_env_path();
    // A client.env from an earlier run must not announce readiness before we are ready.
    let _ = std::fs::remove_file(&env_path);
    let inst = open_instance(&s).await?;
    let api = ApiListeners::bind(&s).await?;
    // The node after the listeners: an instance that cannot listen changes nothing.
    if let Err(e) = register_node(&s, &inst.store, inst.node).await {
        let _ = std::fs::remove_file(&s.unix_socket);
        return Err(e);
    }
    let events = inst.engine.agents().events(&inst.node);
    if let Err(e) = inst.engine.node_connected(inst.node, events).await {
        let _ = std::fs::remove_file(&s.unix_socket);
        bail!("set up the node: {}", e.message);
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    api.serve_until_signal(&s, inst.engine.clone(), stop_tx, stop_rx, "wharf is up")
        .await?;
    if let Err(e) = inst.store.shutdown().await {
        warn!(error = %e, "raft shutdown");
    }
    // Tasks still holding the engine keep RocksDB open until the process exits; hold the
    // data dir lock until then too, so that `wharf down` or a new `wharf up` that got the
    // lock never finds the database still locked.
    std::mem::forget(inst._lock);
    Ok(())
}

/// The Docker API listeners of an instance, bound: mutual TLS on `--api-addr`, the plain
/// loopback one of `--insecure-api-addr`, and the unix socket.
pub(crate) struct ApiListeners {
    listeners: Vec<Listener>,
    addr: std::net::SocketAddr,
    socket_identity: Option<(u64, u64)>,
}

impl ApiListeners {
    /// Bind them all (the certificates must exist).
    pub(crate) async fn bind(s: &Settings) -> anyhow::Result<ApiListeners> {
        let listener = tokio::net::TcpListener::bind(s.api_addr)
            .await
            .with_context(|| format!("listen on {}", s.api_addr))?;
        let addr = listener.local_addr()?;
        let tls = certs::server_config(&s.data_dir.join("certs"))?;
        let mut listeners = vec![Listener::Tls { tcp: listener, tls }];
        if let Some(plain) = s.insecure_api_addr {
            let tcp = tokio::net::TcpListener::bind(plain)
                .await
                .with_context(|| format!("listen on {plain}"))?;
            warn!(addr = %plain, "serving the API without TLS or authentication (--insecure-api-addr)");
            listeners.push(Listener::Plain(tcp));
        }
        listeners.push(Listener::Unix(bind_unix_socket(&s.unix_socket)?));
        let socket_identity = file_identity(&s.unix_socket);
        Ok(ApiListeners {
            listeners,
            addr,
            socket_identity,
        })
    }

    /// Serve the API until SIGTERM or SIGINT, with `client.env` written once serving
    /// (its presence means "ready"); then stop every listener (`stop`, which other
    /// servers may share), and remove our socket and `client.env`.
    pub(crate) async fn serve_until_signal(
        self,
        s: &Settings,
        engine: Arc<Engine>,
        stop_tx: tokio::sync::watch::Sender<bool>,
        stop_rx: tokio::sync::watch::Receiver<bool>,
        up_message: &str,
    ) -> anyhow::Result<()> {
        let mut servers = vec![];
        for l in self.listeners {
            info!(listener = %l.describe(), "serving the Docker API");
            servers.push(tokio::spawn(crate::api::serve(
                l,
                engine.clone(),
                stop_rx.clone(),
            )));
        }
        let env_path = s.client_env_path();
        let text = client_env(self.addr, &s.client_dir());
        certs::write_atomic(&env_path, text.as_bytes(), 0o644)?;
        info!(addr = %self.addr, data_dir = %s.data_dir.display(), "{up_message}");
        print!("{text}");
        let _ = std::io::stdout().flush();
        wait_for_signal().await?;
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join_all(servers),
        )
        .await;
        // Only our own socket: a later instance may have replaced a file we no longer own.
        if self.socket_identity.is_some() && file_identity(&s.unix_socket) == self.socket_identity {
            let _ = std::fs::remove_file(&s.unix_socket);
        }
        let _ = std::fs::remove_file(&env_path);
        Ok(())
    }
}

/// Wait for SIGTERM or SIGINT (containers keep running after either).
pub(crate) async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down, containers keep running"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT: shutting down, containers keep running"),
    }
    Ok(())
}

/// Bind the local API socket: owned by root, mode 0660, never reachable with looser
/// permissions (bound under a temporary name, chmod-ed, then renamed into place).
/// A stale socket file (nobody answering) is replaced; a live one is an error.
pub(crate) fn bind_unix_socket(path: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .with_context(|| format!("unix socket {} has no parent directory", path.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "unix socket {} is in use by another process (another wharf or dockerd?); \
             give this instance its own with --unix-socket",
            path.display()
        );
    }
    let name = path
        .file_name()
        .with_context(|| format!("unix socket {} has no file name", path.display()))?;
    let tmp = parent.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)
        .with_context(|| format!("listen on {}", tmp.display()))?;
    let secure = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
        .and_then(|()| std::os::unix::fs::chown(&tmp, Some(0), Some(0)))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = secure {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("set up unix socket {}", path.display()));
    }
    Ok(listener)
}

/// The (device, inode) of a file, to recognise it later.
pub(crate) fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Remove the local API socket if nobody answers on it any more.
pub(crate) fn remove_stale_socket(path: &Path) {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Ask a running instance of `data_dir` to stop, and wait until its lock is free.
pub(crate) async fn stop_running(data_dir: &Path) -> anyhow::Result<()> {
    let path = lock_path(data_dir);
    let Ok(mut f) = std::fs::File::open(&path) else {
        return Ok(());
    };
    let mut pid = String::new();
    f.read_to_string(&mut pid)?;
    drop(f);
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return Ok(());
    };
    for i in 0..300 {
        let probe = std::fs::File::open(&path)?;
        match Flock::lock(probe, FlockArg::LockExclusiveNonblock) {
            Ok(_) => return Ok(()),
            Err(_) if i == 0 => {
                info!(pid, "stopping the running instance");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the instance (pid {pid}) did not stop within 30 s")
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub(crate) fn mounts_below(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// Remove the instance's cgroups (v1 hierarchies and v2), killing what is left in them.
pub(crate) fn remove_cgroups(parent: &str) {
    let Ok(roots) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for root in roots.flatten() {
        let dir = root.path().join(parent);
        if !dir.is_dir() {
            continue;
        }
        let mut dirs: Vec<PathBuf> = vec![];
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                stack.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            for pid in std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            for _ in 0..50 {
                match std::fs::remove_dir(&d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

/// `wharf down`: stop the instance and remove its containers, shims, mounts and cgroups.
/// Images and certificates stay in DATA_DIR.
pub async fn down(s: Settings) -> anyhow::Result<()> {
    if !s.data_dir.join("raft").exists() {
        bail!("{} holds no wharf instance", s.data_dir.display());
    }
    stop_running(&s.data_dir).await?;
    let inst = open_instance(&s).await?;
    let before = inst.store.read(|st| st.containers.len());
    inst.engine.remove_all(inst.node).await;
    inst.engine.teardown_network(inst.node).await;
    let left = inst.store.read(|st| st.containers.len());
    inst.store.shutdown().await.context("raft shutdown")?;
    for m in mounts_below(&s.data_dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            warn!(mount = %m.display(), error = %e, "unmount failed");
        }
    }
    // Shims that outlived their container (none, normally) go too.
    wharf_node::runtime::orphans::kill_shims_of(&s.data_dir.join("containers"));
    remove_cgroups(&cgroup_parent(&s.data_dir));
    remove_stale_socket(&s.unix_socket);
    let _ = std::fs::remove_file(s.client_env_path());
    println!("removed {} containers", before - left);
    if left > 0 {
        bail!("{left} containers could not be removed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_size_is_read_from_proc_text() {
        let cpuinfo = "processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\nmodel name\t: x\n";
        assert_eq!(cpu_count(cpuinfo), 2);
        assert_eq!(cpu_count(""), 0);
        let meminfo = "MemTotal:        2048 kB\nMemFree:  1 kB\n";
        assert_eq!(mem_total(meminfo), 2048 * 1024);
        assert_eq!(mem_total("MemFree: 1 kB\n"), 0);
    }
}
