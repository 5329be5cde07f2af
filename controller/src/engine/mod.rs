//! The controller's engine: Docker semantics over the replicated state and the agent.
//!
//! ```text
//!  API handler ──► Engine ──► plan.rs (pure planners: state + request ─► Plan)
//!                    │            │
//!                    │            ▼
//!                    │        executor.rs: Propose ──► raft::Store (ClusterState, RocksDB)
//!                    │                     Agent   ──► Agents ──► a node's agent
//!                    │                     on failure: the undos of the steps done
//!                    └── streams (attach, exec, logs, load) call Agents directly
//! ```
//!
//! Every state change goes through Raft first; the agent is asked to act after the change
//! is committed (create, start) or reports what happened (exit), which becomes a command.
//! The leader chooses IDs, names and times and passes them to the planners. Errors are
//! [`EngineError`]s with kinds; `api/` maps them to Docker's status codes.
//!
//! The engine serves every node the cluster records: a new container's node is chosen by
//! [`scheduler::schedule`] (through [`placement::place_create`]), and from then on each
//! operation goes to the agent of the node its record names (container, volume,
//! network). A node is served once its agent is connected ([`Engine::node_connected`])
//! and stops being watched when the connection is lost ([`Engine::node_lost`]); see
//! `nodes.rs`.

mod archive;
mod attach;
pub mod copies;
pub mod dns;
pub mod error;
pub mod events;
mod exec;
mod executor;
pub mod health;
pub mod images;
mod layers;
mod lifecycle;
pub mod moves;
pub mod network;
mod network_ops;
pub mod network_options;
mod network_view;
mod nodes;
pub mod placement;
pub mod plan;
pub mod reconcile;
pub mod scheduler;
mod volumes;
pub use volumes::PruneFilter;

pub use attach::{parse_detach_keys, AttachSource, DEFAULT_DETACH_KEYS};
pub use error::{EngineError, ErrorKind};
pub use exec::{ExecCreate, ExecRecord};
pub use lifecycle::{restart_decision, ExitFacts, RestartPolicy};

use crate::agent_client::Agents;
use crate::raft::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};
use wharf_protocol::agent::FailureKind;
use wharf_protocol::shim::Exit;
use wharf_protocol::state::{ClusterState, Command, ContainerRecord, ContainerStatus, ImageRecord};
use wharf_protocol::{ContainerId, ImageId, NodeId};

/// Nanoseconds since the epoch, as the leader stamps commands.
pub fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

/// Normalise an image reference the way Docker shows it: `busybox` → `busybox:latest`,
/// `docker.io/library/busybox:1` → `busybox:1`.
pub fn normalize_reference(reference: &str) -> String {
    let r = reference.strip_prefix("docker.io/").unwrap_or(reference);
    let r = r.strip_prefix("index.docker.io/").unwrap_or(r);
    let r = r.strip_prefix("library/").unwrap_or(r);
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || r.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

/// Find an image by `name[:tag]`, full ID or unique ID prefix (pure).
pub fn find_image(state: &ClusterState, reference: &str) -> Option<ImageId> {
    if let Some(id) = state.tags.get(&normalize_reference(reference)) {
        return Some(*id);
    }
    let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
    if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    let mut hits = state
        .images
        .keys()
        .filter(|id| id.0.hex().starts_with(&hex));
    match (hits.next(), hits.next()) {
        (Some(id), None) => Some(*id),
        _ => None,
    }
}

/// The image `reference` names, or Docker's 404 naming the normalised reference (pure).
pub fn image_record<'a>(
    state: &'a ClusterState,
    reference: &str,
) -> Result<&'a ImageRecord, EngineError> {
    find_image(state, reference)
        .and_then(|id| state.images.get(&id))
        .ok_or_else(|| {
            let shown = if reference.starts_with("sha256:") {
                reference.to_string()
            } else {
                normalize_reference(reference)
            };
            EngineError::no_such_image(&shown)
        })
}

/// Find a container by full ID, name (with or without `/`) or unique ID prefix (pure).
pub fn find_container(state: &ClusterState, reference: &str) -> Option<ContainerId> {
    if let Ok(id) = reference.parse::<ContainerId>() {
        if state.containers.contains_key(&id) {
            return Some(id);
        }
    }
    let name = reference.strip_prefix('/').unwrap_or(reference);
    if let Some(id) = state.name_holder(name) {
        return Some(id.clone());
    }
    if reference.is_empty() || !reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut hits = state
        .containers
        .keys()
        .filter(|id| id.as_str().starts_with(reference));
    match (hits.next(), hits.next()) {
        (Some(id), None) => Some(id.clone()),
        _ => None,
    }
}

/// What `POST /containers/{id}/wait` waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitCondition {
    /// Return when the container is not running (at once if it is not).
    NotRunning,
    /// Return at the next exit.
    NextExit,
    /// Return once the container is removed.
    Removed,
}

/// How long a SIGKILL of `docker kill` waits for the exit to be recorded (moby: 10 s).
const KILL_WAIT: Duration = Duration::from_secs(10);

/// The controller's engine; one per controller process.
pub struct Engine {
    store: Store,
    /// The controller's own directory (build contexts are unpacked under it).
    data_dir: std::path::PathBuf,
    /// Every call to a host goes through here (the agent protocol).
    agents: Agents,
    /// The containers whose exit is being waited for, with their monitor.
    monitored: Mutex<HashMap<ContainerId, nodes::Monitor>>,
    /// Per connected node: the directory of its volumes, its layer tracker.
    hosts: Mutex<HashMap<NodeId, nodes::HostFacts>>,
    locks: Mutex<HashMap<ContainerId, Arc<tokio::sync::Mutex<()>>>>,
    events: events::EventBus,
    /// Exec instances by ID (memory only, as Docker).
    execs: Mutex<HashMap<String, ExecRecord>>,
    /// Per node: held while its rule set is computed from the state and applied, so that
    /// an older set never lands after a newer one. Per node, not one for all: at 10,000
    /// agents joining, one lock held across each agent's round trip let 3–5 nodes a
    /// second become Ready.
    rules_locks: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<()>>>>,
    /// Between recording new images and deciding which to remove: held shared while an
    /// image and its tags are recorded (load, import, commit), exclusively while `rmi` and
    /// `image prune` decide and remove, so they never see an image without its tags yet.
    /// Only records: the layers on the host are kept by leases (see `images`).
    image_records: tokio::sync::RwLock<()>,
    /// The cluster's layer copy count ([`copies`]).
    min_copies: std::sync::atomic::AtomicUsize,
    /// The heartbeat grace, in milliseconds (see [`Engine::set_heartbeat_grace`]).
    grace_ms: std::sync::atomic::AtomicU64,
    /// The heartbeat period in force, in nanoseconds (see
    /// [`Engine::set_heartbeat_period`]).
    period_ns: std::sync::atomic::AtomicU64,
    /// When a move off a Down node was last tried, by container (the leader's).
    move_tries: Mutex<HashMap<ContainerId, std::time::Instant>>,
}

impl Engine {
    /// Build the engine over an open store and the agents; `data_dir` is the controller's
    /// own directory. It serves no node until [`Engine::node_connected`] is called for it.
    pub fn new(store: Store, agents: Agents, data_dir: std::path::PathBuf) -> Arc<Engine> {
        Arc::new(Engine {
            store,
            data_dir,
            agents,
            monitored: Mutex::default(),
            hosts: Mutex::default(),
            locks: Mutex::default(),
            events: events::EventBus::new(),
            execs: Mutex::default(),
            rules_locks: Mutex::default(),
            image_records: tokio::sync::RwLock::default(),
            min_copies: std::sync::atomic::AtomicUsize::new(copies::DEFAULT_MIN_COPIES),
            grace_ms: std::sync::atomic::AtomicU64::new(4000),
            period_ns: std::sync::atomic::AtomicU64::new(1_000_000_000),
            move_tries: Mutex::default(),
        })
    }

    /// The event bus (`GET /events` subscribes here).
    pub fn events(&self) -> &events::EventBus {
        &self.events
    }

    /// Publish an event of any type, stamped now; `attributes` become `Actor.Attributes`.
    /// Call after the change it reports is committed.
    pub fn emit(
        &self,
        kind: events::EventType,
        action: &str,
        actor_id: &str,
        attributes: std::collections::BTreeMap<String, String>,
    ) {
        self.events.emit(events::Event {
            origin: None,
            kind,
            action: action.to_string(),
            actor_id: actor_id.to_string(),
            attributes,
            time_ns: now_ns(),
        });
    }

    /// Publish a container event: the container's labels, `image` and `name` are filled
    /// in from `c`, then `extra` (`exitCode`, `signal`, `oldName`, ...) is added.
    pub fn emit_container(&self, c: &ContainerRecord, action: &str, extra: &[(&str, String)]) {
        let mut attrs: std::collections::BTreeMap<String, String> =
            serde_json::from_str::<serde_json::Value>(&c.config_json)
                .ok()
                .and_then(|v| v.get("Labels").cloned())
                .and_then(|l| serde_json::from_value(l).ok())
                .unwrap_or_default();
        attrs.insert("image".into(), c.image_ref.clone());
        attrs.insert("name".into(), c.name.to_string());
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.emit(events::EventType::Container, action, c.id.as_str(), attrs);
    }

    /// Publish an image event for `id` (`sha256:…`); `name` is the reference concerned
    /// (the tag for tag/untag, the ID itself for load/delete of an untagged image).
    pub fn emit_image(&self, id: &ImageId, name: &str, action: &str) {
        let attrs = [("name".to_string(), name.to_string())].into();
        self.emit(events::EventType::Image, action, &id.to_string(), attrs);
    }

    /// The replicated state.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The controller's own directory (not a host's: a build's spools go under it).
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The agents, reached through the agent protocol.
    pub fn agents(&self) -> &Agents {
        &self.agents
    }

    /// Release what a finished run holds on its host; a failure is logged (the next
    /// start or removal tries again).
    async fn cleanup_run(&self, c: &ContainerRecord) {
        let id = &c.id;
        if let Err(e) = self.agents.cleanup(&c.node, id).await {
            warn!(container = %id.short(), error = %e, "cleanup failed");
        }
    }

    fn lock_for(&self, id: &ContainerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.clone()).or_default().clone()
    }

    async fn propose(&self, cmd: Command) -> Result<(), EngineError> {
        self.store.propose(cmd).await?.map_err(EngineError::from)
    }

    /// A container record by reference, or 404.
    pub fn container(&self, reference: &str) -> Result<ContainerRecord, EngineError> {
        self.store
            .read(|s| find_container(s, reference).and_then(|id| s.containers.get(&id).cloned()))
            .ok_or_else(|| EngineError::no_such_container(reference))
    }

    /// An image record by reference, or 404 naming the normalised reference.
    pub fn image(&self, reference: &str) -> Result<ImageRecord, EngineError> {
        self.store.read(|s| image_record(s, reference).cloned())
    }

    /// Load a `docker save` archive; returns the lines to stream to the client.
    /// The host leases the loaded layers until every image is recorded, so a collection
    /// meanwhile (`rmi`, `image prune`) cannot free them.
    pub async fn load_images(&self, body: images::ByteStream) -> Result<Vec<String>, EngineError> {
        let node = self.image_target()?;
        let (loaded, lease) = self
            .agents
            .load_images(&node, body)
            .await
            .map_err(|f| EngineError::invalid(f.message))?;
        let recording = self.image_records.read().await;
        let mut lines = vec![];
        let ids: Vec<ImageId> = loaded.iter().map(|i| i.id).collect();
        for img in loaded {
            self.propose(Command::PutImage {
                image: ImageRecord {
                    id: img.id,
                    config: img.config.clone(),
                    diff_ids: img.diff_ids.clone(),
                    size: img.size,
                    loaded_ns: now_ns(),
                },
            })
            .await?;
            self.emit_image(&img.id, &img.id.to_string(), "load");
            if img.repo_tags.is_empty() {
                lines.push(format!("Loaded image ID: {}\n", img.id));
            }
            for tag in &img.repo_tags {
                let reference = normalize_reference(tag);
                self.propose(Command::Tag {
                    reference: reference.clone(),
                    image: img.id,
                })
                .await?;
                self.emit_image(&img.id, &reference, "tag");
                lines.push(format!("Loaded image: {reference}\n"));
            }
        }
        drop(recording);
        self.sync_layers(node).await;
        lease.release().await;
        self.ensure_copies(&ids).await;
        Ok(lines)
    }

    /// `POST /containers/create`: placed by [`placement::place_create`] with the cluster's
    /// [`scheduler::Settings`] (which takes the `constraint:` and `affinity:` entries out
    /// of its environment and labels the reason), then
    /// [`Engine::create_container_on`] that node.
    pub async fn create_container(
        &self,
        name: Option<&str>,
        body: &[u8],
    ) -> Result<ContainerId, EngineError> {
        let (placed, request) = self.place_reachable(name, body)?;
        // The reason is kept in the record's `com.wharf.placement` label.
        debug!(node = %placed.node, reason = %placed.reason, "placed");
        self.create_on(name, &request, placed.node, None).await
    }

    /// [`placement::place_create`] on a node this controller reaches now (an agent back
    /// from a partition reconnects to each controller in its own time: a create placed
    /// where this controller has no connection would fail). The chosen node is checked,
    /// and placement runs again without it when it is not reached: one check per create
    /// where checking every node first cost more than the placement at 1,000 nodes.
    pub(super) fn place_reachable(
        &self,
        name: Option<&str>,
        body: &[u8],
    ) -> Result<(scheduler::Placement, serde_json::Value), EngineError> {
        let mut avoid = std::collections::BTreeSet::new();
        // Concurrent creates see the same state: a seed of their own spreads them over
        // the nodes the strategy rates equal.
        let tie_seed = rand::random::<u64>() | 1;
        loop {
            let (placed, body) = self.store.read(|s| {
                let settings = scheduler::Settings {
                    tie_seed,
                    sample: scheduler::SAMPLE,
                    ..scheduler::Settings::of(s)
                };
                placement::place_create(s, name, body, &settings, &avoid)
            })?;
            if self.agents.reaches(&placed.node) {
                return Ok((placed, body));
            }
            avoid.insert(placed.node);
        }
    }

    /// Create a container on `node`, chosen by the caller (a build's containers go to its
    /// node): the leader's choices (ID, time, name seeds), the plan
    /// ([`plan::create_container`]), its execution; a failed step takes back what the
    /// steps before it did. A generated name taken meanwhile is chosen again.
    pub async fn create_container_on(
        &self,
        name: Option<&str>,
        body: &[u8],
        node: NodeId,
    ) -> Result<ContainerId, EngineError> {
        self.create_on(name, &plan::parse_json(body)?, node, None)
            .await
    }

    /// [`Engine::create_container_on`], the record replacing `replaces` when given (a
    /// move off a Down node).
    async fn create_on(
        &self,
        name: Option<&str>,
        request: &serde_json::Value,
        node: NodeId,
        replaces: Option<ContainerId>,
    ) -> Result<ContainerId, EngineError> {
        let mut anon = || hex::encode(rand::random::<[u8; 32]>());
        let mut attempt = 0;
        loop {
            let choices = plan::CreateChoices {
                id: ContainerId::from_bytes(rand::random()),
                now_ns: now_ns(),
                node,
                name_seeds: (rand::random(), rand::random()),
                replaces: replaces.clone(),
            };
            let planned = self
                .store
                .read(|s| plan::create_container(s, name, request, &choices, &mut anon))?;
            let record = planned.record;
            match self.execute(planned.plan).await {
                Ok(()) => {
                    for v in &planned.new_volumes {
                        info!(volume = %v, "volume created");
                        self.emit_volume(v, "create");
                    }
                    // DEBUG, as dockerd: at thousands of creates a second a line each cost
                    // 2 % of a controller (`docker events` shows every create).
                    debug!(container = %record.id.short(), name = %record.name, image = %record.image_ref, node = %record.node, "created");
                    self.emit_container(&record, "create", &[]);
                    return Ok(record.id);
                }
                Err(f)
                    if planned.generated_name
                        && f.step == planned.record_step
                        && f.error.is(ErrorKind::Conflict)
                        && attempt < 10 =>
                {
                    attempt += 1;
                }
                Err(f) => {
                    if matches!(f.error.kind, ErrorKind::System | ErrorKind::Unavailable) {
                        warn!(container = %record.id.short(), error = %f.error, step = f.step, "create failed, rolled back");
                    } else {
                        info!(container = %record.id.short(), error = %f.error, step = f.step, "create refused, rolled back");
                    }
                    return Err(f.error);
                }
            }
        }
    }

    /// `POST /containers/{id}/start`: 304 if running; start errors as Docker words them.
    pub async fn start(self: &Arc<Self>, reference: &str) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        let c = self.container(c.id.as_str())?;
        plan::check_start(&c)?;
        // A previous run's shim may still be finishing.
        self.cleanup_run(&c).await;
        let net = match self.prepare_network(&c).await {
            Ok(net) => net,
            Err(e) => {
                self.start_failed(&c, 128, &e.message).await?;
                return Err(e);
            }
        };
        let options = Self::with_netns(self.shim_options(&c), &net);
        match self.agents.start(&c.node, &c.run, options, net.setup).await {
            // The process' PID stays with the agent: a host fact, not replicated state.
            Ok(_pid) => {
                self.propose(Command::ContainerRunning {
                    id: c.id.clone(),
                    at_ns: now_ns(),
                })
                .await?;
                self.emit_container(&c, "start", &[]);
                self.monitor(c.node, c.id.clone());
                // A container the leader would move is fenced on its host from now on.
                if self.store.read(|s| moves::wants_to_run(s, &c)) {
                    self.send_fence(c.node).await;
                }
                Ok(())
            }
            Err(e) => {
                let exit_code = start_failure_exit_code(e.shim);
                self.start_failed(&c, exit_code, &e.message).await?;
                Err(EngineError::invalid(format!(
                    "failed to create task for container: {}",
                    e.message
                )))
            }
        }
    }

    /// A start failed: carry out [`plan::start_failed`], report the death, and remove an
    /// `--rm` container.
    async fn start_failed(
        &self,
        c: &ContainerRecord,
        exit_code: i32,
        error: &str,
    ) -> Result<(), EngineError> {
        let has_endpoints = self.store.read(|s| s.endpoints.contains_key(&c.id));
        let steps = plan::start_failed(c, has_endpoints, exit_code, error, now_ns());
        self.execute(steps).await?;
        self.emit_container(c, "die", &[("exitCode", exit_code.to_string())]);
        if c.auto_remove {
            self.remove_locked(&c.id).await?;
        }
        Ok(())
    }

    /// Watch a running container's shim on its node until it exits, then record the exit.
    /// A container already watched is left to its monitor.
    fn monitor(self: &Arc<Self>, node: NodeId, id: ContainerId) {
        let generation: u64 = rand::random();
        {
            let mut m = self.monitored.lock().unwrap_or_else(|p| p.into_inner());
            if m.contains_key(&id) {
                return;
            }
            let engine = self.clone();
            let watched = id.clone();
            // Spawned under the lock: the task cannot forget itself before it is recorded.
            let task = tokio::spawn(async move {
                let id = watched;
                let waited = engine.agents.wait(&node, &id).await;
                {
                    let mut m = engine.monitored.lock().unwrap_or_else(|p| p.into_inner());
                    if m.get(&id).is_some_and(|mon| mon.generation == generation) {
                        m.remove(&id);
                    }
                }
                let exit = match waited {
                    Ok(exit) => exit,
                    // A lost agent says nothing about the container: it may still run
                    // (live-restore), keeps its recorded status, and is adopted again
                    // when the agent is back (`node_connected`).
                    Err(e) if e.kind == FailureKind::Unavailable => {
                        info!(container = %id.short(), node = %node, error = %e, "agent connection lost; no exit recorded");
                        return;
                    }
                    Err(e) => {
                        warn!(container = %id.short(), error = %e, "waiting for the exit failed");
                        return;
                    }
                };
                let code = exit.map_or(255, |e| e.code);
                engine.handle_exit(&id, exit).await;
                let ran_for = engine.last_run_time(&id);
                engine.after_exit(&id, code, ran_for, exit.is_none());
            });
            m.insert(
                id.clone(),
                nodes::Monitor {
                    node,
                    generation,
                    abort: task.abort_handle(),
                },
            );
        }
        self.watch_health(id);
    }

    async fn handle_exit(&self, id: &ContainerId, exit: Option<Exit>) {
        let (exit_code, oom_killed, at_ns, error) = match exit {
            Some(e) => (e.code, e.oom_killed, e.finished_at_ns as i64, String::new()),
            None => (
                255,
                false,
                now_ns(),
                "the container's shim is gone".to_string(),
            ),
        };
        info!(container = %id.short(), exit_code, "exited");
        // Free addresses, ports and rules before the exit is visible, so that a `docker
        // stop` that returns finds the port free.
        if let Ok(c) = self.container(id.as_str()) {
            self.network_released(&c).await;
        }
        if let Err(e) = self
            .propose(Command::ContainerExited {
                id: id.clone(),
                exit_code,
                oom_killed,
                at_ns,
                error,
            })
            .await
        {
            warn!(container = %id.short(), error = %e, "recording exit failed");
            return;
        }
        if let Ok(c) = self.container(id.as_str()) {
            self.emit_container(&c, "die", &[("exitCode", exit_code.to_string())]);
        }
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let Ok(c) = self.container(id.as_str()) else {
            return;
        };
        if c.status != ContainerStatus::Exited {
            return;
        }
        self.cleanup_run(&c).await;
        if c.auto_remove {
            if let Err(e) = self.remove_locked(id).await {
                warn!(container = %id.short(), error = %e, "auto-remove failed");
            }
        }
    }

    /// Wait until `pred` holds for the container's record (`None`: removed), or `timeout`.
    async fn wait_state(
        &self,
        id: &ContainerId,
        timeout: Option<Duration>,
        mut pred: impl FnMut(Option<&ContainerRecord>) -> bool,
    ) -> bool {
        let mut rx = self.store.watch();
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            if self.store.read(|s| pred(s.containers.get(id))) {
                return true;
            }
            let changed = rx.changed();
            match deadline {
                Some(d) => match tokio::time::timeout_at(d, changed).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) | Err(_) => return self.store.read(|s| pred(s.containers.get(id))),
                },
                None => {
                    if changed.await.is_err() {
                        return false;
                    }
                }
            }
        }
    }

    /// `POST /containers/{id}/wait`: the exit code once `condition` holds.
    pub async fn wait(
        &self,
        id: &ContainerId,
        condition: WaitCondition,
    ) -> Result<i32, EngineError> {
        let start = self.container(id.as_str())?;
        let mut code = start.exit_code;
        let first_finish = start.finished_ns;
        let ok = self
            .wait_state(id, None, |c| match c {
                None => true,
                Some(c) => {
                    if c.status == ContainerStatus::Exited {
                        code = c.exit_code;
                    }
                    match condition {
                        WaitCondition::NotRunning => {
                            !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                        }
                        WaitCondition::NextExit => {
                            c.status == ContainerStatus::Exited && c.finished_ns != first_finish
                        }
                        WaitCondition::Removed => false,
                    }
                }
            })
            .await;
        if !ok {
            return Err(EngineError::internal("shutting down"));
        }
        Ok(code)
    }

    /// `POST /containers/{id}/stop`: the stop signal, then SIGKILL after `timeout` seconds.
    pub async fn stop(
        &self,
        reference: &str,
        timeout: Option<i64>,
        signal: Option<i32>,
    ) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        self.note_manual_stop(&c.id).await;
        if c.status == ContainerStatus::Paused {
            // A frozen process cannot act on a signal: SIGKILL, which the shim thaws.
            self.kill(c.id.as_str(), 9).await?;
            self.wait_state(&c.id, Some(Duration::from_secs(30)), |c| {
                c.is_none_or(|c| c.status == ContainerStatus::Exited)
            })
            .await;
            return Ok(());
        }
        if c.status != ContainerStatus::Running {
            return Err(EngineError::not_modified());
        }
        let sig = signal.unwrap_or(c.run.stop_signal);
        // `--stop-timeout` (Config.StopTimeout) when the request gives none.
        let timeout = timeout.or_else(|| {
            serde_json::from_str::<serde_json::Value>(&c.config_json)
                .ok()
                .and_then(|v| v.get("StopTimeout").and_then(|t| t.as_i64()))
        });
        let grace = match timeout {
            Some(t) if t < 0 => None,
            Some(t) => Some(Duration::from_secs(t as u64)),
            None => Some(Duration::from_secs(10)),
        };
        let not_running =
            |c: Option<&ContainerRecord>| c.is_none_or(|c| c.status != ContainerStatus::Running);
        self.emit_container(&c, "kill", &[("signal", sig.to_string())]);
        if self.agents.kill(&c.node, &c.id, sig).await.is_ok()
            && self.wait_state(&c.id, grace, not_running).await
        {
            self.emit_container(&c, "stop", &[]);
            return Ok(());
        }
        info!(container = %c.id.short(), "stop timeout, sending SIGKILL");
        self.emit_container(&c, "kill", &[("signal", "9".to_string())]);
        let _ = self.agents.kill(&c.node, &c.id, 9).await;
        self.wait_state(&c.id, Some(Duration::from_secs(30)), not_running)
            .await;
        self.emit_container(&c, "stop", &[]);
        Ok(())
    }

    /// `POST /containers/{id}/kill`.
    pub async fn kill(&self, reference: &str, signal: i32) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        if !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused) {
            return Err(EngineError::conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        self.note_manual_stop(&c.id).await;
        self.emit_container(&c, "kill", &[("signal", signal.to_string())]);
        let sent = self.agents.kill(&c.node, &c.id, signal).await;
        if signal == libc::SIGKILL {
            // As moby's `Kill`: SIGKILL returns once the exit is recorded, so that an
            // inspect that follows sees it and a remove is not refused. (A shim that
            // refused because the process had just exited is waited for the same way.)
            let not_running = |c: Option<&ContainerRecord>| {
                c.is_none_or(|c| {
                    !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                })
            };
            if self.wait_state(&c.id, Some(KILL_WAIT), not_running).await {
                return Ok(());
            }
            sent?;
            return Err(EngineError::internal(
                "tried to kill container, but did not receive an exit event",
            ));
        }
        sent?;
        // As Docker: the stop signal thaws a paused container so it can act on it (the
        // shim thaws after SIGKILL itself).
        if c.status == ContainerStatus::Paused && signal == c.run.stop_signal && signal != 9 {
            if let Err(e) = self.pause(c.id.as_str(), false).await {
                warn!(container = %c.id.short(), error = %e.message, "thaw after kill failed");
            }
        }
        Ok(())
    }

    /// `DELETE /containers/{id}`: 409 if running unless `force`.
    pub async fn remove(&self, reference: &str, force: bool) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        if let Some(node) = self.down_node_of(&c) {
            return self.remove_on_down_node(c, &node, force).await;
        }
        if c.status == ContainerStatus::Paused && !force {
            return Err(EngineError::conflict(format!(
                "cannot remove container \"/{}\": container is paused and must be unpaused first",
                c.name
            )));
        }
        if matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused) {
            if !force {
                return Err(EngineError::conflict(format!(
                    "cannot remove container \"/{}\": container is running: stop the container before removing or force remove",
                    c.name
                )));
            }
            let _ = self.agents.kill(&c.node, &c.id, 9).await;
            let stopped = self
                .wait_state(&c.id, Some(Duration::from_secs(30)), |c| {
                    c.is_none_or(|c| {
                        !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                    })
                })
                .await;
            if !stopped {
                return Err(EngineError::internal(format!(
                    "could not kill container {}",
                    c.id
                )));
            }
        }
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        match self
            .store
            .read(|s| s.containers.get(&c.id).map(|c| c.status))
        {
            None => Ok(()),
            Some(ContainerStatus::Running | ContainerStatus::Paused) => {
                Err(EngineError::conflict(format!(
                    "cannot remove container \"/{}\": container is running",
                    c.name
                )))
            }
            Some(_) => self.remove_locked(&c.id).await,
        }
    }

    /// The host name of `c`'s node when the state records that node Down.
    fn down_node_of(&self, c: &ContainerRecord) -> Option<String> {
        self.store.read(|s| {
            s.nodes
                .get(&c.node)
                .filter(|n| n.state == wharf_protocol::node_state::NodeState::Down)
                .map(|n| n.description.hostname.clone())
        })
    }

    /// `docker rm` of a container whose node is Down: with `force`, its record goes (the
    /// node stops and removes what is left of it when it is back: the reconcile's
    /// `Remove`); without, a 409 that says so. Nothing is asked of the unreachable agent.
    async fn remove_on_down_node(
        &self,
        c: ContainerRecord,
        node: &str,
        force: bool,
    ) -> Result<(), EngineError> {
        if !force {
            return Err(EngineError::conflict(format!(
                "cannot remove container \"/{}\": its node {node} is down: force remove to forget it; the node removes its files when it is back",
                c.name
            )));
        }
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        self.propose(Command::RemoveContainer { id: c.id.clone() })
            .await?;
        self.forget_execs(&c.id);
        self.emit_container(&c, "destroy", &[]);
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&c.id);
        warn!(container = %c.id.short(), node, "removed the record of a container on a down node; the node removes its files when it is back");
        Ok(())
    }

    async fn remove_locked(&self, id: &ContainerId) -> Result<(), EngineError> {
        let record = self.container(id.as_str())?;
        self.execute(plan::remove_container(&record)).await?;
        self.forget_execs(id);
        self.emit_container(&record, "destroy", &[]);
        // `--rm` takes the container's anonymous volumes with it, as Docker does.
        if record.auto_remove {
            self.remove_anonymous_volumes(&record).await;
        }
        self.release_container_layers(&record.run.image_id).await;
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        info!(container = %id.short(), "removed");
        Ok(())
    }

    /// Remove every container of `node`, running or not (`wharf down`).
    pub async fn remove_all(&self, node: NodeId) {
        let ids: Vec<ContainerId> = self
            .store
            .read(|s| s.containers_on(node).map(|c| c.id.clone()).collect());
        for id in ids {
            let running = self.store.read(|s| {
                s.containers.get(&id).is_some_and(|c| {
                    matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                })
            });
            if running {
                let _ = self.agents.kill(&node, &id, 9).await;
                let exit = self.agents.wait(&node, &id).await.ok().flatten();
                self.handle_exit(&id, exit).await;
            }
            if self.store.read(|s| s.containers.contains_key(&id)) {
                if let Err(e) = self.remove(id.as_str(), true).await {
                    warn!(container = %id.short(), error = %e, "remove failed");
                }
            }
        }
    }
}

/// The exit code Docker records for a container whose process could not be started
/// (moby's `translateContainerdStartErr`): 127 when the command does not exist, 126 when
/// it cannot be invoked (not executable, or its working directory is not one), 128
/// otherwise.
pub fn start_failure_exit_code(kind: Option<wharf_protocol::shim::ErrorKind>) -> i32 {
    use wharf_protocol::shim::ErrorKind;
    match kind {
        Some(ErrorKind::CommandNotFound) => 127,
        Some(ErrorKind::PermissionDenied | ErrorKind::WorkingDirectory) => 126,
        _ => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::{DiffId, Digest};

    #[test]
    fn start_failures_are_classified_by_kind_not_text() {
        use wharf_protocol::shim::ErrorKind;
        assert_eq!(
            start_failure_exit_code(Some(ErrorKind::CommandNotFound)),
            127
        );
        assert_eq!(
            start_failure_exit_code(Some(ErrorKind::PermissionDenied)),
            126
        );
        assert_eq!(
            start_failure_exit_code(Some(ErrorKind::WorkingDirectory)),
            126
        );
        assert_eq!(start_failure_exit_code(Some(ErrorKind::Other)), 128);
        assert_eq!(start_failure_exit_code(None), 128);
    }

    #[test]
    fn references_normalise_like_docker() {
        assert_eq!(normalize_reference("busybox"), "busybox:latest");
        assert_eq!(normalize_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            normalize_reference("docker.io/library/busybox"),
            "busybox:latest"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app"),
            "localhost:5000/app:latest"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app:v1"),
            "localhost:5000/app:v1"
        );
    }

    #[test]
    fn images_found_by_tag_id_and_unique_prefix() {
        let mut s = ClusterState::default();
        let cfg = b"{}".to_vec();
        let id = ImageId(Digest::of(&cfg));
        s.apply(&Command::PutImage {
            image: ImageRecord {
                id,
                config: cfg,
                diff_ids: vec![DiffId(Digest::of(b"l"))],
                size: 1,
                loaded_ns: 0,
            },
        })
        .unwrap();
        s.apply(&Command::Tag {
            reference: "busybox:latest".into(),
            image: id,
        })
        .unwrap();
        assert_eq!(find_image(&s, "busybox"), Some(id));
        assert_eq!(find_image(&s, &id.to_string()), Some(id));
        assert_eq!(find_image(&s, &id.0.hex()[..6]), Some(id));
        assert_eq!(find_image(&s, "alpine"), None);
        assert_eq!(find_image(&s, ""), None);
    }
}

#[cfg(test)]
mod engine_test;

#[cfg(test)]
mod engine_nodes_test;
