//! `wharf controller` and `wharf node`: the two daemons of a multi-host cluster, and
//! `wharf cluster token`.
//!
//! ```text
//!  DATA_DIR/membership.json   this host's ID and role, and the controllers it knows
//!  DATA_DIR/certs/            CA, node certificate and key (see cluster::tls); a
//!                             controller's also its API certificate and the join tokens
//! ```
//!
//! A host joins once; restarted, it finds its membership and certificates and connects
//! again without a token.

use crate::agent_client::Agents;
use crate::certs::{self, Authority};
use crate::cluster::dial::dial_controller;
use crate::cluster::identity::node_id_text;
use crate::cluster::identity::{JoinTokens, Token};
use crate::cluster::join::{self, JoinService};
use crate::cluster::listener::ClusterPort;
use crate::cluster::registry::{Liveness, NodeHooks, Registry};
use crate::engine::Engine;
use crate::raft::{serve_peer, OpenMode, OpenOptions, Store, TlsNetwork};
use crate::settings::Settings;
use crate::up::{self, lock_data_dir};
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::future::Future;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{info, warn};
use wharf_protocol::agent::AgentEvent;
use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
use wharf_protocol::state::Command;
use wharf_protocol::NodeId;

/// What a host remembers of its place in the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// Its node ID.
    pub id: u64,
    /// `controller` or `agent`.
    pub role: String,
    /// The controllers' cluster addresses, as last told.
    pub controllers: Vec<String>,
}

fn membership_path(data_dir: &Path) -> PathBuf {
    data_dir.join("membership.json")
}

/// This data dir's membership, if it joined or bootstrapped.
pub fn read_membership(data_dir: &Path) -> anyhow::Result<Option<Membership>> {
    let path = membership_path(data_dir);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("read {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

fn write_membership(data_dir: &Path, m: &Membership) -> anyhow::Result<()> {
    let bytes = serde_json::to_vec_pretty(m)?;
    certs::write_atomic(&membership_path(data_dir), &bytes, 0o600)?;
    Ok(())
}

fn tokens_path(data_dir: &Path) -> PathBuf {
    data_dir.join("certs").join("join-tokens")
}

/// The join tokens a controller's data dir holds (made at bootstrap).
pub fn read_tokens(data_dir: &Path) -> anyhow::Result<JoinTokens> {
    let path = tokens_path(data_dir);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "read {} (is {} a controller's data dir?)",
            path.display(),
            data_dir.display()
        )
    })?;
    let mut agent = None;
    let mut controller = None;
    for line in text.lines() {
        match line.split_once(' ') {
            Some(("agent", t)) => agent = Some(t.trim().to_string()),
            Some(("controller", t)) => controller = Some(t.trim().to_string()),
            _ => {}
        }
    }
    match (agent, controller) {
        (Some(agent), Some(controller)) => Ok(JoinTokens { agent, controller }),
        _ => bail!("{} is not a token file", path.display()),
    }
}

fn write_tokens(data_dir: &Path, t: &JoinTokens) -> anyhow::Result<()> {
    let text = format!("agent {}\ncontroller {}\n", t.agent, t.controller);
    certs::write_atomic(&tokens_path(data_dir), text.as_bytes(), 0o600)?;
    Ok(())
}

/// `wharf cluster token ROLE`: print the join token of `role`.
pub fn print_token(data_dir: &Path, role: &str) -> anyhow::Result<()> {
    let t = read_tokens(data_dir)?;
    match role {
        "agent" | "worker" | "node" => println!("{}", t.agent),
        "controller" | "manager" => println!("{}", t.controller),
        other => bail!("unknown role {other:?}: use agent or controller"),
    }
    Ok(())
}

/// One request to a running controller's local API socket: (status, body).
fn local_api(socket: &Path, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    local_api_with(socket, method, path, "")
}

fn local_api_with(
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "connect to {} (is a controller running there? see --unix-socket)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: wharf\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP answer")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 answer.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn api_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string())
}

/// `wharf cluster members`: the controllers as the running controller sees them.
pub fn print_members(socket: &Path) -> anyhow::Result<()> {
    let (status, body) = local_api(socket, "GET", "/nodes")?;
    if status != 200 {
        bail!("{}", api_message(&body));
    }
    let nodes: Vec<serde_json::Value> = serde_json::from_str(&body).context("read /nodes")?;
    println!(
        "{:<18} {:<16} {:<22} {:<7} LEADER",
        "ID", "HOST", "ADDRESS", "STATE"
    );
    for n in nodes.iter().filter(|n| n["Spec"]["Role"] == "manager") {
        println!(
            "{:<18} {:<16} {:<22} {:<7} {}",
            n["ID"].as_str().unwrap_or(""),
            n["Description"]["Hostname"].as_str().unwrap_or(""),
            n["ManagerStatus"]["Addr"].as_str().unwrap_or(""),
            n["Status"]["State"].as_str().unwrap_or(""),
            if n["ManagerStatus"]["Leader"] == true {
                "yes"
            } else {
                ""
            },
        );
    }
    Ok(())
}

/// What `wharf cluster update` changes (`None`: kept).
#[derive(Debug, Default)]
pub struct SettingsChange {
    /// `--strategy spread|binpack`.
    pub strategy: Option<String>,
    /// `--overcommit RATIO`.
    pub overcommit: Option<f64>,
    /// `--fencing on|off`.
    pub fencing: Option<String>,
    /// `--lease SECONDS`.
    pub lease: Option<f64>,
}

/// `wharf cluster update`: change the cluster's settings through the local socket of a
/// controller and print them all (with nothing to change, print them).
pub fn update_settings(socket: &Path, change: &SettingsChange) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    if let Some(s) = &change.strategy {
        body.insert("Strategy".into(), s.as_str().into());
    }
    if let Some(r) = change.overcommit {
        body.insert("Overcommit".into(), r.into());
    }
    if let Some(f) = &change.fencing {
        let on = match f.as_str() {
            "on" => true,
            "off" => false,
            other => bail!("--fencing takes on or off, not {other:?}"),
        };
        body.insert("Fencing".into(), on.into());
    }
    if let Some(l) = change.lease {
        body.insert("LeaseSeconds".into(), l.into());
    }
    let (status, answer) = if body.is_empty() {
        local_api(socket, "GET", "/wharf/settings")?
    } else {
        let body = serde_json::Value::Object(body).to_string();
        local_api_with(socket, "POST", "/wharf/settings", &body)?
    };
    if status != 200 {
        bail!("{}", api_message(&answer));
    }
    let v: serde_json::Value = serde_json::from_str(&answer).context("read the settings")?;
    println!("strategy:   {}", v["Strategy"].as_str().unwrap_or(""));
    println!("overcommit: {}", v["Overcommit"]);
    println!(
        "fencing:    {}",
        if v["Fencing"] == true { "on" } else { "off" }
    );
    println!("lease:      {} s", v["LeaseSeconds"]);
    Ok(())
}

/// `wharf cluster remove NODE`: as `docker node rm` (a controller leaves the Raft group).
pub fn remove_node(socket: &Path, node: &str) -> anyhow::Result<()> {
    let bad = node.is_empty()
        || !node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if bad {
        bail!("{node:?} is not a node ID or host name");
    }
    let (status, body) = local_api(socket, "DELETE", &format!("/nodes/{node}"))?;
    if status != 200 {
        bail!("{}", api_message(&body));
    }
    println!("removed {node}");
    Ok(())
}

/// Logical CPUs and memory bytes of this host.
fn host_resources() -> (u32, u64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (cpus, memory)
}

fn node_name(s: &Settings) -> String {
    s.node_name.clone().unwrap_or_else(up::hostname)
}

/// The engine's side of agents coming and going, on the leader only: the duties of a
/// node (its default network, re-adopting and watching its containers, recording its
/// layers) are the leader's, so that no two controllers record the same exit or layer
/// inventory. Every controller keeps its connection to every agent, to carry the calls
/// of the requests it serves.
///
/// ```text
///  agent connects ──► pending (events kept) ──► leader? ──► engine.node_connected
///  leadership gained ──► every connected node ──────────────► engine.node_connected
///  leadership lost / agent gone ─────────────────────────────► engine.node_lost
/// ```
struct LeaderDuties {
    engine: Arc<Engine>,
    store: Store,
    connected:
        Mutex<std::collections::HashMap<NodeId, Option<mpsc::UnboundedReceiver<AgentEvent>>>>,
    active: Mutex<BTreeSet<NodeId>>,
    /// Nodes whose duties were taken on (reconciled, networks made): the leader shows
    /// them Ready.
    settled: Mutex<BTreeSet<NodeId>>,
}

impl LeaderDuties {
    fn new(engine: Arc<Engine>, store: Store) -> Arc<LeaderDuties> {
        Arc::new(LeaderDuties {
            engine,
            store,
            connected: Mutex::default(),
            active: Mutex::default(),
            settled: Mutex::default(),
        })
    }

    /// Take on `node`'s duties here (this controller leads and the node is connected).
    async fn activate(&self, node: NodeId) -> Result<(), String> {
        let events = {
            let mut c = self.connected.lock().unwrap_or_else(|p| p.into_inner());
            match c.get_mut(&node) {
                Some(events) => events.take(),
                None => return Ok(()),
            }
        };
        if !self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node)
        {
            return Ok(());
        }
        let done = self
            .engine
            .node_connected(node, events)
            .await
            .map_err(|e| e.message);
        // Settled even when a step failed (logged by the caller): the node serves.
        if self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&node)
        {
            self.settled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node);
        }
        done
    }

    fn deactivate(&self, node: NodeId) {
        self.settled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
        if self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node)
        {
            self.engine.node_lost(node);
        }
    }

    /// Follow this controller's leadership: take on every connected node's duties when
    /// it becomes leader, drop them when it stops being leader; while leading for a grace
    /// (on the registry's monotonic clock), record the nodes' transitions.
    async fn follow_leadership(self: Arc<Self>, registry: Arc<Registry>) {
        let clock = registry.clock();
        let mut leading = false;
        let mut since = clock.monotonic();
        loop {
            // The period and grace in force (stretched past the beat rate): `docker
            // info` shows the period; a new leader waits the grace.
            let liveness = registry.liveness();
            self.engine.set_heartbeat_period(liveness.period);
            let now = self.store.is_leader();
            if now && !leading {
                since = clock.monotonic();
                info!("this controller leads: it takes on the nodes' duties");
                let nodes: Vec<NodeId> = self
                    .connected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .keys()
                    .copied()
                    .collect();
                for node in nodes {
                    if let Err(e) = self.activate(node).await {
                        warn!(%node, error = %e, "could not adopt the node's containers and networks");
                    }
                }
            } else if !now && leading {
                info!("this controller no longer leads: it drops the nodes' duties");
                let nodes: Vec<NodeId> = self
                    .active
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .copied()
                    .collect();
                for node in nodes {
                    self.deactivate(node);
                }
            }
            leading = now;
            // A new leader has not heard from every member yet: it waits a grace period.
            if leading && clock.monotonic().saturating_sub(since) >= liveness.grace {
                let members = self.store.members();
                let me = NodeId(self.store.node_id());
                let connected: BTreeSet<NodeId> = registry.connected().into_iter().collect();
                let settled = self
                    .settled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let changes = self.store.read(|st| {
                    let mut c = controller_transitions(st, &members, me);
                    c.extend(agent_transitions(st, &settled, &connected));
                    c
                });
                // Proposed together: group commit puts them in few entries (thousands of
                // agents joining at once became Ready a few per round when each waited
                // for the one before).
                let at_ns = clock.wall_ns();
                let store = &self.store;
                let proposals = changes.into_iter().map(|(id, state)| async move {
                    info!(node = %crate::cluster::identity::node_id_text(id), state = ?state, "the leader records a node's state");
                    let cmd = Command::SetNodeState { id, state, at_ns };
                    if let Err(e) = store.propose(cmd).await {
                        warn!(node = %id, error = %e, "a node's state was not recorded");
                    }
                });
                futures_util::future::join_all(proposals).await;
                // Containers of Down nodes that asked to be kept running move.
                self.engine.move_off_down_nodes().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The controllers whose recorded state differs from what the leader sees of the Raft
/// group: Ready when it answers (or is the leader itself), Down otherwise (pure).
pub fn controller_transitions(
    state: &wharf_protocol::state::ClusterState,
    members: &[crate::raft::Member],
    me: NodeId,
) -> Vec<(NodeId, NodeState)> {
    state
        .nodes
        .values()
        .filter(|n| n.role == NodeRole::Controller)
        .filter_map(|n| {
            let answers = n.id == me || members.iter().any(|m| m.id == n.id.0 && m.reachable);
            let want = if answers {
                NodeState::Ready
            } else {
                NodeState::Down
            };
            (n.state != want).then_some((n.id, want))
        })
        .collect()
}

/// The agents whose recorded state differs from what the leader's own connections show
/// (pure): Ready once the leader has taken on its duties (`settled`: reconciled, so its
/// stale copies are stopped first), Down when it has no connection to the leader, as it
/// was while in between. The leader's registry records each transition as it sees it;
/// this catches what it missed (a leader that took over, a transition recorded by a
/// former leader).
pub fn agent_transitions(
    state: &wharf_protocol::state::ClusterState,
    settled: &BTreeSet<NodeId>,
    connected: &BTreeSet<NodeId>,
) -> Vec<(NodeId, NodeState)> {
    state
        .nodes
        .values()
        .filter(|n| n.role == NodeRole::Agent)
        .filter_map(|n| {
            let want = if settled.contains(&n.id) {
                NodeState::Ready
            } else if !connected.contains(&n.id) {
                NodeState::Down
            } else {
                return None;
            };
            (n.state != want).then_some((n.id, want))
        })
        .collect()
}

struct EngineHooks(Arc<LeaderDuties>);

impl NodeHooks for EngineHooks {
    fn connected(
        &self,
        node: NodeId,
        events: Option<mpsc::UnboundedReceiver<AgentEvent>>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let duties = &self.0;
            duties
                .connected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(node, events);
            // A reconnect: the duties start again with the new connection.
            duties.deactivate(node);
            if duties.store.is_leader() {
                duties.activate(node).await
            } else {
                Ok(())
            }
        })
    }

    fn lost(&self, node: NodeId) {
        self.0
            .connected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&node);
        self.0.deactivate(node);
    }
}

/// `wharf controller`: a Raft member serving the Docker API and the cluster port.
pub async fn controller(s: Settings) -> anyhow::Result<()> {
    s.check_insecure_api_addr()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("wharf must run as root");
    }
    let (period, grace) = s.liveness()?;
    let env_path = s.client_env_path();
    let _ = std::fs::remove_file(&env_path);
    let lock = lock_data_dir(&s.data_dir)?;
    let cluster_addr = s.cluster_addr();
    if cluster_addr.ip().is_unspecified() {
        bail!("--cluster-addr must be this host's own address (other hosts dial it), not {cluster_addr}");
    }
    let certs_dir = s.data_dir.join("certs");
    let (cpus, memory) = host_resources();
    let me = NodeDescription {
        hostname: node_name(&s),
        addr: cluster_addr.ip().to_string(),
        api_addr: s.api_addr.to_string(),
        cluster_addr: cluster_addr.to_string(),
        cpus,
        memory,
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_labels: s.label_map()?,
        runs_containers: s.with_agent,
    };
    let (membership, mode) = match read_membership(&s.data_dir)? {
        Some(m) if m.role == "controller" => (m, OpenMode::Join),
        Some(m) => bail!(
            "{} is an {}'s data dir, not a controller's",
            s.data_dir.display(),
            m.role
        ),
        None if s.bootstrap => {
            let ca = Authority::open_or_create(&certs_dir)?;
            let digest = ca.digest()?;
            write_tokens(
                &s.data_dir,
                &JoinTokens {
                    agent: Token::generate(digest).to_string(),
                    controller: Token::generate(digest).to_string(),
                },
            )?;
            let m = Membership {
                id: loop {
                    let id: u64 = rand::random();
                    if id != 0 {
                        break id;
                    }
                },
                role: "controller".into(),
                controllers: vec![cluster_addr.to_string()],
            };
            write_membership(&s.data_dir, &m)?;
            info!(id = %node_id_text(NodeId(m.id)), "bootstrapped a new cluster");
            (m, OpenMode::Bootstrap)
        }
        None => {
            let (Some(addr), Some(token)) = (s.join, s.token.as_deref()) else {
                bail!(
                    "{} holds no cluster: start the first controller with --bootstrap, or join one with --join ADDR --token TOKEN",
                    s.data_dir.display()
                );
            };
            let token = Token::parse(token)?;
            let key = rcgen::KeyPair::generate().context("make the node key")?;
            let admission = join::join(addr, &token, NodeRole::Controller, me.clone(), &key)
                .await
                .with_context(|| format!("join the cluster at {addr}"))?;
            join::install(&certs_dir, &admission, &key)?;
            let Some((agent, controller)) = admission.tokens.clone() else {
                bail!("the cluster admitted this controller without its join tokens");
            };
            write_tokens(&s.data_dir, &JoinTokens { agent, controller })?;
            let m = Membership {
                id: admission.node.0,
                role: "controller".into(),
                controllers: admission.controllers.clone(),
            };
            write_membership(&s.data_dir, &m)?;
            info!(id = %node_id_text(admission.node), "joined the cluster as a controller");
            (m, OpenMode::Join)
        }
    };
    let id = NodeId(membership.id);
    let ca = Authority::open_or_create(&certs_dir)?;
    join::ensure_own_node_cert(&certs_dir, &ca, NodeRole::Controller, id, cluster_addr.ip())?;
    up::ensure_certs(&s)?;
    let tokens = read_tokens(&s.data_dir)?;
    let network = TlsNetwork::new(crate::cluster::tls::node_client_config(
        &certs_dir,
        crate::raft::RAFT_ALPN,
    )?);
    let store = Store::open_with(
        &s.data_dir.join("raft"),
        OpenOptions {
            node_id: id.0,
            addr: cluster_addr.to_string(),
            mode,
            network: network.into(),
        },
    )
    .await
    .context("open the cluster state")?;
    let registry = Registry::new(
        store.clone(),
        Liveness {
            period,
            grace,
            max_beats_per_sec: s.heartbeat_max_rate,
        },
    );
    let engine = Engine::new(
        store.clone(),
        Agents::new(registry.clone()),
        s.data_dir.clone(),
    );
    // Recorded through the leader once this controller is a member (a joining one is
    // added after its listener serves Raft).
    let me_agent = me.clone();
    tokio::spawn(register_self(store.clone(), id, me));
    if s.min_layer_copies == 0 {
        bail!("--min-layer-copies must be at least 1");
    }
    engine.set_min_copies(s.min_layer_copies);
    engine.set_heartbeat_grace(grace);
    let duties = LeaderDuties::new(engine.clone(), store.clone());
    tokio::spawn(duties.clone().follow_leadership(registry.clone()));
    let port = Arc::new(ClusterPort {
        store: store.clone(),
        join: Arc::new(JoinService {
            authority: ca,
            tokens,
            store: store.clone(),
        }),
        registry,
        hooks: Arc::new(EngineHooks(duties.clone())),
        raft: Some({
            let store = store.clone();
            Arc::new(move |tls| {
                let store = store.clone();
                Box::pin(async move {
                    if let Err(e) = serve_peer(store, tls).await {
                        tracing::debug!(error = %e, "raft peer connection ended");
                    }
                })
            })
        }),
        engine: Some(engine.clone()),
    });
    tokio::spawn(crate::cluster::events::follow_peers(
        engine.clone(),
        store.clone(),
        certs_dir.clone(),
        id,
    ));
    if s.with_agent {
        // This host's own agent, over the same protocol as a remote one.
        let agent = up::open_agent(&s)?;
        let (ours, theirs) = tokio::io::duplex(512 * 1024);
        let (r, w) = tokio::io::split(theirs);
        tokio::spawn(async move {
            if let Err(e) = wharf_node::serve::serve_connection(agent, r, w).await {
                warn!(error = %e, "the in-process agent's connection ended");
            }
        });
        let (registry, hooks) = (port.registry.clone(), port.hooks.clone());
        let desc = me_agent.clone();
        tokio::spawn(async move {
            registry
                .attach(hooks, id, NodeRole::Controller, desc, ours)
                .await;
        });
    }
    let cluster_listener = tokio::net::TcpListener::bind(cluster_addr)
        .await
        .with_context(|| format!("listen on {cluster_addr}"))?;
    let cluster_tls = crate::cluster::tls::cluster_server_config(&certs_dir)?;
    let api = up::ApiListeners::bind(&s).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    info!(addr = %cluster_addr, "serving the cluster port");
    tokio::spawn(port.serve(cluster_listener, cluster_tls, stop_rx.clone()));
    api.serve_until_signal(&s, engine.clone(), stop_tx, stop_rx, "controller is up")
        .await?;
    if let Err(e) = store.shutdown().await {
        warn!(error = %e, "raft shutdown");
    }
    std::mem::forget(lock);
    Ok(())
}

/// Record this controller (its description, Ready) once the cluster takes writes from it.
async fn register_self(store: Store, id: NodeId, me: NodeDescription) {
    for attempt in 0u32.. {
        let at_ns = crate::engine::now_ns();
        let cmds = [
            Command::RegisterNode {
                id,
                role: NodeRole::Controller,
                description: me.clone(),
                at_ns,
            },
            Command::SetNodeState {
                id,
                state: NodeState::Ready,
                at_ns,
            },
        ];
        let mut done = true;
        for cmd in cmds {
            match store.propose(cmd).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %e, "this controller was refused by the cluster");
                    return;
                }
                Err(e) => {
                    if attempt % 10 == 0 {
                        info!(error = %e, "waiting to record this controller");
                    }
                    done = false;
                    break;
                }
            }
        }
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `wharf node`: an agent that joins (once) and serves every controller it knows.
pub async fn node(s: Settings) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("wharf must run as root (it mounts, creates namespaces and cgroups)");
    }
    let _lock = lock_data_dir(&s.data_dir)?;
    let certs_dir = s.data_dir.join("certs");
    let labels = s.label_map()?;
    let (cpus, memory) = host_resources();
    let hostname = node_name(&s);
    let describe = move |addr: IpAddr| NodeDescription {
        hostname: hostname.clone(),
        addr: addr.to_string(),
        api_addr: String::new(),
        cluster_addr: String::new(),
        cpus,
        memory,
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        engine_labels: labels.clone(),
        runs_containers: true,
    };
    let membership = match read_membership(&s.data_dir)? {
        Some(m) if m.role == "agent" => m,
        Some(m) => bail!(
            "{} is a {}'s data dir, not an agent's",
            s.data_dir.display(),
            m.role
        ),
        None => {
            let (Some(addr), Some(token)) = (s.join, s.token.as_deref()) else {
                bail!(
                    "{} has not joined a cluster: give --join ADDR --token TOKEN (`wharf cluster token agent` on a controller prints it)",
                    s.data_dir.display()
                );
            };
            let token = Token::parse(token)?;
            let own = match s.advertise_addr {
                Some(ip) => ip,
                None => local_addr_towards(addr).await?,
            };
            let key = rcgen::KeyPair::generate().context("make the node key")?;
            let admission = join::join(addr, &token, NodeRole::Agent, describe(own), &key)
                .await
                .with_context(|| format!("join the cluster at {addr}"))?;
            join::install(&certs_dir, &admission, &key)?;
            let mut controllers = admission.controllers.clone();
            if !controllers.contains(&addr.to_string()) {
                controllers.push(addr.to_string());
            }
            let m = Membership {
                id: admission.node.0,
                role: "agent".into(),
                controllers,
            };
            write_membership(&s.data_dir, &m)?;
            info!(node = %crate::cluster::identity::node_id_text(admission.node), "joined the cluster");
            m
        }
    };
    let agent = up::open_agent(&s)?;
    // A host cut off from every controller for its lease stops what would be moved.
    tokio::spawn(wharf_node::fence::watch(agent.clone()));
    let known: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let membership = Arc::new(Mutex::new(membership));
    let (found_tx, mut found_rx) = mpsc::unbounded_channel::<String>();
    let initial: Vec<String> = membership
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .controllers
        .clone();
    for c in initial.into_iter().chain(s.join.map(|a| a.to_string())) {
        let _ = found_tx.send(c);
    }
    let ctx = Arc::new(NodeCtx {
        certs_dir,
        agent,
        advertise: s.advertise_addr,
        describe: Box::new(describe),
        found: found_tx,
        membership,
        data_dir: s.data_dir.clone(),
    });
    info!(data_dir = %s.data_dir.display(), "agent is up");
    let signal = up::wait_for_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            r = &mut signal => return r,
            Some(addr) = found_rx.recv() => {
                if known.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.clone()) {
                    match addr.parse::<SocketAddr>() {
                        Ok(a) => {
                            tokio::spawn(ctx.clone().serve_controller(a));
                        }
                        Err(_) => warn!(%addr, "a controller address that is not IP:port"),
                    }
                }
            }
        }
    }
}

struct NodeCtx {
    certs_dir: PathBuf,
    agent: wharf_node::agent::Agent,
    advertise: Option<IpAddr>,
    describe: Box<dyn Fn(IpAddr) -> NodeDescription + Send + Sync>,
    found: mpsc::UnboundedSender<String>,
    membership: Arc<Mutex<Membership>>,
    data_dir: PathBuf,
}

impl NodeCtx {
    /// Keep a connection to the controller at `addr`, reconnecting with back-off.
    async fn serve_controller(self: Arc<Self>, addr: SocketAddr) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let own = match self.advertise {
                Some(ip) => Ok(ip),
                None => local_addr_towards(addr).await,
            };
            let dialed = match own {
                Ok(ip) => dial_controller(addr, &self.certs_dir, (self.describe)(ip))
                    .await
                    .map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match dialed {
                Ok((tls, controllers)) => {
                    info!(controller = %addr, "connected to a controller");
                    backoff = Duration::from_millis(200);
                    self.learn(controllers);
                    let (r, w) = tokio::io::split(tls);
                    if let Err(e) =
                        wharf_node::serve::serve_connection(self.agent.clone(), r, w).await
                    {
                        warn!(controller = %addr, error = %e, "controller connection ended");
                    } else {
                        warn!(controller = %addr, "controller connection ended");
                    }
                }
                Err(e) => {
                    warn!(controller = %addr, error = %format!("{e:#}"), "cannot reach a controller")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Remember controllers a welcome named, and connect to the new ones.
    fn learn(&self, controllers: Vec<String>) {
        let mut m = self.membership.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for c in controllers {
            if !m.controllers.contains(&c) {
                m.controllers.push(c.clone());
                changed = true;
            }
            let _ = self.found.send(c);
        }
        if changed {
            if let Err(e) = write_membership(&self.data_dir, &m) {
                warn!(error = %e, "could not save the controllers");
            }
        }
    }
}

/// The local address this host uses to reach `addr`.
async fn local_addr_towards(addr: SocketAddr) -> anyhow::Result<IpAddr> {
    let sock = tokio::net::UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .await?;
    sock.connect(addr).await?;
    Ok(sock.local_addr()?.ip())
}

/// Remove what an agent of this data dir made on the host: its containers' processes
/// (shims and what they run), its mounts and cgroups, its iptables chains and default
/// bridge. Call with the data dir locked and its daemon stopped.
async fn remove_host_parts(s: &Settings) {
    wharf_node::runtime::orphans::kill_shims_of(&s.data_dir.join("containers"));
    up::remove_cgroups(&up::cgroup_parent(&s.data_dir));
    for m in up::mounts_below(&s.data_dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            warn!(mount = %m.display(), error = %e, "unmount failed");
        }
    }
    match up::open_agent(s) {
        Ok(agent) => {
            // The agent's own requests, as the engine's teardown sends them.
            let node = NodeId(0);
            let agents = Agents::new(Arc::new(crate::agent_client::in_process::start(
                agent, node,
            )));
            if let Err(e) = agents.remove_rules(&node).await {
                warn!(error = %e, "iptables rules not removed");
            }
            match agents.network_host(&node).await {
                Ok(host) => {
                    let bridge = host.default_bridge.to_string();
                    if let Err(e) = agents.remove_bridge(&node, &bridge).await {
                        warn!(%bridge, error = %e, "bridge not removed");
                    }
                }
                Err(e) => warn!(error = %e, "default bridge unknown"),
            }
        }
        Err(e) => {
            warn!(error = %format!("{e:#}"), "the agent could not be opened to remove its network")
        }
    }
}

/// `wharf down` of a controller's data dir: stop its daemon (the cluster's containers
/// run on agents and stay).
pub async fn controller_down(s: &Settings) -> anyhow::Result<()> {
    up::stop_running(&s.data_dir).await?;
    up::remove_stale_socket(&s.unix_socket);
    let _ = std::fs::remove_file(s.client_env_path());
    // What a controller started `--with-agent` ran here.
    if s.data_dir.join("containers").exists() {
        let _lock = lock_data_dir(&s.data_dir)?;
        remove_host_parts(s).await;
    }
    println!("stopped the controller of {}", s.data_dir.display());
    Ok(())
}

/// `wharf down` of an agent's data dir: stop its daemon, then remove its containers'
/// processes, mounts and cgroups.
pub async fn node_down(s: &Settings) -> anyhow::Result<()> {
    up::stop_running(&s.data_dir).await?;
    let _lock = lock_data_dir(&s.data_dir)?;
    remove_host_parts(s).await;
    println!("stopped the agent of {}", s.data_dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_membership_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        let t = JoinTokens {
            agent: Token::generate([1; 32]).to_string(),
            controller: Token::generate([1; 32]).to_string(),
        };
        write_tokens(dir.path(), &t).unwrap();
        assert_eq!(read_tokens(dir.path()).unwrap(), t);
        assert!(read_membership(dir.path()).unwrap().is_none());
        let m = Membership {
            id: 42,
            role: "agent".into(),
            controllers: vec!["10.0.0.1:2377".into()],
        };
        write_membership(dir.path(), &m).unwrap();
        assert_eq!(read_membership(dir.path()).unwrap(), Some(m));
        let e = read_tokens(&dir.path().join("nowhere")).unwrap_err();
        assert!(format!("{e:#}").contains("controller's data dir"), "{e:#}");
    }

    /// A state with these nodes registered (Down, as registered nodes start).
    fn registered(nodes: &[(u64, NodeRole)]) -> wharf_protocol::state::ClusterState {
        let mut s = wharf_protocol::state::ClusterState::default();
        for (id, role) in nodes {
            s.apply(&Command::RegisterNode {
                id: NodeId(*id),
                role: *role,
                description: NodeDescription::default(),
                at_ns: 0,
            })
            .unwrap();
        }
        s
    }

    /// Agents' liveness is the leader's view: Ready while connected to it, Down when not,
    /// whatever a follower's own connection shows; controllers are left to
    /// `controller_transitions`.
    #[test]
    fn the_leader_records_which_agents_are_connected_to_it() {
        use wharf_protocol::state::ClusterState;
        let mut s = registered(&[
            (1, NodeRole::Controller),
            (4, NodeRole::Agent),
            (5, NodeRole::Agent),
            (6, NodeRole::Agent),
        ]);
        let ready = |s: &mut ClusterState, id| {
            s.apply(&Command::SetNodeState {
                id: NodeId(id),
                state: NodeState::Ready,
                at_ns: 1,
            })
            .unwrap()
        };
        // 5 recorded Ready (by a follower's connection, or a former leader) but not
        // connected to the leader; 6 connected but recorded Down.
        ready(&mut s, 4);
        ready(&mut s, 5);
        let connected: BTreeSet<NodeId> = [NodeId(1), NodeId(4), NodeId(6)].into();
        // 6 is connected but its duties are not taken on yet: it stays as it is.
        let settled: BTreeSet<NodeId> = [NodeId(4)].into();
        assert_eq!(
            agent_transitions(&s, &settled, &connected),
            vec![(NodeId(5), NodeState::Down)]
        );
        let settled: BTreeSet<NodeId> = [NodeId(4), NodeId(6)].into();
        assert_eq!(
            agent_transitions(&s, &settled, &connected),
            vec![(NodeId(5), NodeState::Down), (NodeId(6), NodeState::Ready)]
        );
        ready(&mut s, 6);
        s.apply(&Command::SetNodeState {
            id: NodeId(5),
            state: NodeState::Down,
            at_ns: 2,
        })
        .unwrap();
        assert!(agent_transitions(&s, &settled, &connected).is_empty());
    }

    #[test]
    fn the_leader_records_which_controllers_answer() {
        let mut s = registered(&[
            (1, NodeRole::Controller),
            (2, NodeRole::Controller),
            (3, NodeRole::Controller),
            (4, NodeRole::Agent),
        ]);
        let member = |id, reachable| crate::raft::Member {
            id,
            addr: String::new(),
            voter: true,
            leader: id == 1,
            reachable,
        };
        let members = [member(1, true), member(2, true), member(3, false)];
        let t = controller_transitions(&s, &members, NodeId(1));
        assert_eq!(
            t,
            vec![(NodeId(1), NodeState::Ready), (NodeId(2), NodeState::Ready)],
            "3 stays Down, the agent is not the leader's to judge here"
        );
        for (id, state) in t {
            s.apply(&Command::SetNodeState {
                id,
                state,
                at_ns: 1,
            })
            .unwrap();
        }
        assert!(controller_transitions(&s, &members, NodeId(1)).is_empty());
        let members = [member(1, true), member(2, false), member(3, false)];
        assert_eq!(
            controller_transitions(&s, &members, NodeId(1)),
            vec![(NodeId(2), NodeState::Down)]
        );
    }

    /// A new leader waits a full grace on the monotonic clock before it records any node
    /// Down: a date set hours forward or back is no grace passed, and an agent that keeps
    /// answering stays Ready through it; the grace passed, an agent recorded Ready but not
    /// connected to it is Down, stamped with the date as set.
    #[tokio::test]
    async fn a_jump_of_the_date_marks_no_node_down_on_a_new_leader() {
        use crate::cluster::registry::tests::{self as reg, HOUR_NS};
        use wharf_node::clock::Clock;
        let t = reg::setup().await;
        let (answering, away) = (NodeId(4), NodeId(5));
        let agent = t.attach(answering).await;
        // `away` was seen Ready by a former leader.
        for cmd in [
            Command::RegisterNode {
                id: away,
                role: NodeRole::Agent,
                description: NodeDescription::default(),
                at_ns: 0,
            },
            Command::SetNodeState {
                id: away,
                state: NodeState::Ready,
                at_ns: 0,
            },
        ] {
            t.store.propose(cmd).await.unwrap().unwrap();
        }
        let engine = Engine::new(
            t.store.clone(),
            Agents::new(t.registry.clone()),
            t.dir.path().join("engine"),
        );
        let duties = LeaderDuties::new(engine.clone(), t.store.clone());
        duties.settled.lock().unwrap().insert(answering);
        let grace = reg::LIVENESS.grace;
        tokio::spawn(duties.follow_leadership(t.registry.clone()));
        let rounds = || tokio::time::sleep(Duration::from_millis(600));
        // It leads from its first round, at monotonic zero.
        rounds().await;
        // `docker info` shows the registry's period in force (20 ms here, not stretched).
        assert_eq!(
            engine.heartbeat_period_ns(),
            reg::LIVENESS.period.as_nanos() as u64
        );
        for jump_h in [10, -20, 48, -72] {
            t.clock.jump_wall(jump_h * HOUR_NS);
            t.clock.advance(Duration::from_millis(900));
            rounds().await;
            for node in [answering, away] {
                assert_eq!(
                    t.state(node),
                    Some(NodeState::Ready),
                    "date moved {jump_h} h"
                );
            }
        }
        t.clock.advance(grace - Duration::from_millis(3_600));
        reg::until("the absent agent Down", || {
            t.state(away) == Some(NodeState::Down)
        })
        .await;
        assert_eq!(t.stamped(away), Some(t.clock.wall_ns()));
        let seen = agent.answered();
        t.clock.jump_wall(100 * HOUR_NS);
        rounds().await;
        assert!(agent.answered() > seen, "heartbeats arrive");
        assert_eq!(t.state(answering), Some(NodeState::Ready));
        assert!(!t.hooks.lost_any());
    }

    #[test]
    fn chunked_answers_are_read() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
        assert_eq!(
            api_message(r#"{"message":"node x not found"}"#),
            "node x not found"
        );
        assert_eq!(api_message("plain\n"), "plain");
    }

    #[test]
    fn resources_are_read() {
        let (cpus, memory) = host_resources();
        assert!(cpus >= 1 && memory > 0);
    }
}
