//! The replicated cluster state and the commands that change it.
//!
//! [`ClusterState::apply`] is a pure function: no clock, no randomness, no disk. The leader
//! puts times and IDs into each [`Command`] before it enters the Raft log, so every
//! controller that applies the log reaches the same state.

use crate::agent::ContainerRunSpec;
use crate::ids::{ContainerId, ContainerName, DiffId, ImageId, NodeId};
use crate::network::{Endpoint, NetworkRecord};
use crate::proposal_key::ProposalKey;
use crate::settings::ClusterSettings;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// An image known to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// sha256 of `config`.
    pub id: ImageId,
    /// The image config JSON exactly as loaded (its digest is the ID).
    pub config: Vec<u8>,
    /// Layers, lowest first.
    pub diff_ids: Vec<crate::DiffId>,
    /// Bytes of the unpacked layers.
    pub size: u64,
    /// When the image entered the cluster, in ns since the epoch.
    pub loaded_ns: i64,
}

/// Where a container is in its life, as Docker names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerStatus {
    /// Created, never started.
    Created,
    /// Its process runs.
    Running,
    /// Frozen.
    Paused,
    /// Its process ended.
    Exited,
    /// Could not be removed.
    Dead,
}

impl ContainerStatus {
    /// Docker's lowercase name (`State.Status`, the `State` of `docker ps`).
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Dead => "dead",
        }
    }
}

/// A container known to the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Full ID.
    pub id: ContainerId,
    /// Unique name.
    pub name: ContainerName,
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
    /// The agent that runs it.
    pub node: NodeId,
    /// The image reference as the user typed it (`Config.Image`).
    pub image_ref: String,
    /// What the agent runs.
    pub run: ContainerRunSpec,
    /// Docker's `Config` of the create request, as JSON, for inspect.
    pub config_json: String,
    /// Docker's `HostConfig` of the create request, as JSON, for inspect.
    pub host_config_json: String,
    /// Remove the container when it exits (`--rm`).
    pub auto_remove: bool,
    /// Observed status. Its process' host PID is a host fact, which its agent holds
    /// (state format 3; format 2 recorded it here).
    pub status: ContainerStatus,
    /// Exit code of the last run.
    pub exit_code: i32,
    /// Start of the last run, ns since the epoch, 0 if never started.
    pub started_ns: i64,
    /// End of the last run, ns since the epoch, 0 if never ended.
    pub finished_ns: i64,
    /// The last run was killed by the OOM killer.
    pub oom_killed: bool,
    /// Why the last start failed, empty if it did not.
    pub error: String,
}

/// A volume of the `local` driver, on the node that holds its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Unique name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, or 64 hex digits when anonymous).
    pub name: String,
    /// Driver name; `local`.
    pub driver: String,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// Driver options.
    pub options: BTreeMap<String, String>,
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
    /// The node holding the data.
    pub node: NodeId,
    /// Made for one container (`-v /path`, image `VOLUME`); `rm -v` removes it with it.
    pub anonymous: bool,
}

/// The containers of `state` that mount the volume `name`, as short IDs.
pub fn volume_users(state: &ClusterState, name: &str) -> Vec<String> {
    state
        .containers
        .values()
        .filter(|c| {
            c.run
                .host
                .mounts
                .iter()
                .any(|m| m.kind == crate::agent::MountKind::Volume && m.source == name)
        })
        .map(|c| c.id.to_string())
        .collect()
}

/// A change to the cluster state; the only way state changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Record an image (idempotent for the same ID).
    PutImage {
        /// The image.
        image: ImageRecord,
    },
    /// Point `reference` (`name:tag`) at an image, moving it if it pointed elsewhere.
    Tag {
        /// Normalised `name:tag`.
        reference: String,
        /// Target image.
        image: ImageId,
    },
    /// Remove a tag.
    Untag {
        /// Normalised `name:tag`.
        reference: String,
    },
    /// Forget an image and its tags.
    RemoveImage {
        /// The image.
        image: ImageId,
    },
    /// Add a container; refused if the name is taken.
    CreateContainer {
        /// The new container.
        container: Box<ContainerRecord>,
    },
    /// The container's process started; what builds of state format 2 and older wrote,
    /// applied as [`Command::ContainerRunning`]. Kept for the log entries they left.
    ContainerStarted {
        /// Which container.
        id: ContainerId,
        /// Legacy: the host PID the engine recorded then; ignored (the agent holds it).
        pid: u32,
        /// When, ns since the epoch.
        at_ns: i64,
    },
    /// The container's process ended (or never started, with `error`).
    ContainerExited {
        /// Which container.
        id: ContainerId,
        /// Exit code (128+signal when killed).
        exit_code: i32,
        /// Killed by the OOM killer.
        oom_killed: bool,
        /// When, ns since the epoch.
        at_ns: i64,
        /// Start error, empty when the process ran.
        error: String,
    },
    /// Forget a container.
    RemoveContainer {
        /// Which container.
        id: ContainerId,
    },
    /// Forget an image and its tags although stopped containers still use it (`docker
    /// rmi -f`; they keep their layers); refused while one of them runs.
    RemoveImageForced {
        /// The image.
        image: ImageId,
    },
    /// Add a volume; a volume of that name already there is kept as it is.
    CreateVolume {
        /// The new volume.
        volume: VolumeRecord,
    },
    /// Forget a volume; refused while a container mounts it.
    RemoveVolume {
        /// Its name.
        name: String,
    },
    /// Freeze (`paused`) or thaw a running container.
    PauseContainer {
        /// Which container.
        id: ContainerId,
        /// True to freeze, false to thaw.
        paused: bool,
    },
    /// Give a container a new name; refused if the name is taken.
    RenameContainer {
        /// Which container.
        id: ContainerId,
        /// The new name.
        name: ContainerName,
    },
    /// Record the restart policy's bookkeeping of a container.
    SetRestartState {
        /// Which container.
        id: ContainerId,
        /// Restarts done by the policy since the last manual start (`RestartCount`).
        count: u32,
        /// Stopped or killed by a user: `always`/`unless-stopped` do not restart it.
        manually_stopped: bool,
        /// The policy will start it again after its back-off (Docker's "restarting").
        restarting: bool,
    },
    /// Add a network; refused if its name is taken or its subnet overlaps another
    /// network of the same node.
    CreateNetwork {
        /// The new network.
        network: NetworkRecord,
    },
    /// Forget a network; refused while a container is connected to it.
    RemoveNetwork {
        /// Its ID.
        id: String,
    },
    /// Connect a container to a network (from its next start on), with aliases.
    ConnectContainer {
        /// Which container.
        id: ContainerId,
        /// The network's ID.
        network: String,
        /// Extra names on that network.
        aliases: Vec<String>,
    },
    /// Disconnect a container from a network.
    DisconnectContainer {
        /// Which container.
        id: ContainerId,
        /// The network's ID.
        network: String,
    },
    /// Record the addresses and published ports a starting container holds; refused if
    /// an address or host port is taken. Its previous endpoints are replaced.
    AttachEndpoints {
        /// Which container.
        id: ContainerId,
        /// One per network.
        endpoints: Vec<Endpoint>,
    },
    /// Free the addresses and host ports of a container (it stopped).
    ReleaseEndpoints {
        /// Which container.
        id: ContainerId,
    },
    /// As [`Command::AttachEndpoints`], except that an endpoint whose `ip` is unspecified
    /// (`0.0.0.0`) is given the lowest free address of its network here, in log order,
    /// with its MAC: concurrent starts can never be handed the same address, and none is
    /// refused because another start took the address it had looked at.
    AllocateEndpoints {
        /// Which container.
        id: ContainerId,
        /// One per network; `ip` unspecified for "choose".
        endpoints: Vec<Endpoint>,
    },
    /// Every layer `node` holds, by DiffID (from its agent's inventory), replacing what
    /// was recorded for it.
    LayerInventory {
        /// The node.
        node: NodeId,
        /// The layers it holds, by DiffID.
        layers: Vec<DiffId>,
    },
    /// The container's process started (state format 3: without its host PID, which
    /// only its agent knows).
    ContainerRunning {
        /// Which container.
        id: ContainerId,
        /// When, ns since the epoch.
        at_ns: i64,
    },
    /// Commands proposed at once, in one log entry (group commit; state format 4). Each
    /// is applied in order as if alone: one refused leaves the others applied.
    Batch(Vec<Command>),
    /// A host joined or its daemon connected again: record it, or renew its description
    /// keeping its availability and labels; refused for a revoked ID (state format 5).
    RegisterNode {
        /// Its ID, chosen by the controller that admitted it.
        id: NodeId,
        /// Controller or agent.
        role: crate::node_state::NodeRole,
        /// What it says of itself.
        description: crate::node_state::NodeDescription,
        /// When, ns since the epoch.
        at_ns: i64,
    },
    /// The leader saw a node become Ready or Down (only transitions are recorded).
    SetNodeState {
        /// The node.
        id: NodeId,
        /// Ready or Down.
        state: crate::node_state::NodeState,
        /// When, ns since the epoch.
        at_ns: i64,
    },
    /// `docker node update`: the node's availability and labels, as a whole.
    UpdateNode {
        /// The node.
        id: NodeId,
        /// Active, pause or drain.
        availability: crate::node_state::Availability,
        /// Its labels, all of them.
        labels: BTreeMap<String, String>,
        /// When, ns since the epoch.
        at_ns: i64,
    },
    /// `docker node rm`: forget a node that is Down and revoke its ID for good.
    RemoveNode {
        /// The node.
        id: NodeId,
    },
    /// Commands proposed at once under the idempotency key of the controller that received
    /// them (state format 6): applied as a [`Command::Batch`] the first time; an entry with
    /// a key already applied changes nothing and is answered as the first was (the
    /// controller proposes it again when it cannot tell whether the first was applied).
    Keyed {
        /// Made by the controller that received the commands.
        key: crate::proposal_key::ProposalKey,
        /// The group, each applied as if alone.
        commands: Vec<Command>,
    },
    /// `wharf cluster update`: the cluster's settings, as a whole (state format 7).
    UpdateSettings {
        /// The new settings (checked by the controller: [`ClusterSettings::check`]).
        settings: ClusterSettings,
    },
    /// A container moved off a Down node (state format 7): its record `old` is replaced
    /// by `container`, a new container (new ID) of the same name on another node, in one
    /// step, so the name is never free and the move happens once. The old ID is gone from
    /// the state: when its node is back, the node's copy has no record and is removed
    /// (the fence).
    RescheduleContainer {
        /// The container on the Down node.
        old: ContainerId,
        /// Its successor, created (not started) on another node.
        container: Box<ContainerRecord>,
    },
    /// Why a container cannot move off its node (pinned by a volume, nowhere to go), or
    /// `None` once that no longer holds (state format 7).
    SetPending {
        /// The container.
        id: ContainerId,
        /// The reason, as `docker node inspect` shows it.
        reason: Option<String>,
    },
}

/// Why a command was refused; the state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum StateError {
    /// A container name is taken.
    #[error("Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name.")]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The container holding it.
        holder: String,
    },
    /// No container with that ID.
    #[error("No such container: {0}")]
    NoSuchContainer(String),
    /// No image with that ID.
    #[error("No such image: {0}")]
    NoSuchImage(String),
    /// A container still uses the image.
    #[error("conflict: unable to delete {image} - image is being used by container {container}")]
    ImageInUse {
        /// Short image ID.
        image: String,
        /// Short container ID.
        container: String,
    },
    /// No volume of that name.
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    /// Containers still mount the volume.
    #[error("remove {name}: volume is in use - [{}]", .containers.join(", "))]
    VolumeInUse {
        /// The volume.
        name: String,
        /// Full IDs of the containers using it.
        containers: Vec<String>,
    },
    /// No network of that ID or name.
    #[error("network {0} not found")]
    NoSuchNetwork(String),
    /// A network of that name exists.
    #[error("network with name {0} already exists")]
    NetworkNameInUse(String),
    /// The subnet overlaps another network's.
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    SubnetOverlap,
    /// Containers are connected to the network.
    #[error("error while removing network: network {name} id {id} has active endpoints")]
    NetworkInUse {
        /// The network's name.
        name: String,
        /// Its ID.
        id: String,
    },
    /// An address is held by another container or outside the subnet.
    #[error("Address already in use: {0}")]
    AddressInUse(String),
    /// A host port is published already.
    #[error("Bind for {0} failed: port is already allocated")]
    PortInUse(String),
    /// The container is already connected to the network.
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected {
        /// The container's name.
        container: String,
        /// The network's name.
        network: String,
    },
    /// The container is not connected to the network.
    #[error("container {container} is not connected to network {network}")]
    NotConnected {
        /// The container's ID.
        container: String,
        /// The network's name.
        network: String,
    },
    /// Every address of the network's subnet is held.
    #[error("no available IPv4 addresses on network {0}")]
    NoFreeAddress(String),
    /// No node of that ID.
    #[error("node {0} not found")]
    NoSuchNode(String),
    /// The node's ID was revoked by `docker node rm`.
    #[error("node {0} was removed from the cluster; it must join again")]
    NodeRevoked(String),
    /// `docker node rm` of a node that is still Ready.
    #[error(
        "rpc error: code = FailedPrecondition desc = node {0} is not down and can't be removed"
    )]
    NodeNotDown(String),
}

/// The outcome of applying one command.
pub type Response = Result<(), StateError>;

/// Everything the controllers agree on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Images by ID.
    pub images: BTreeMap<ImageId, ImageRecord>,
    /// `name:tag` → image.
    pub tags: BTreeMap<String, ImageId>,
    /// Containers by ID.
    pub containers: BTreeMap<ContainerId, ContainerRecord>,
    /// Volumes by name.
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeRecord>,
    /// Restart-policy bookkeeping by container (absent: never restarted, not stopped).
    #[serde(default)]
    pub restarts: BTreeMap<ContainerId, RestartState>,
    /// Networks by ID.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkRecord>,
    /// The networks each container is connected to (network ID → aliases).
    #[serde(default)]
    pub connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    /// The live endpoints of running containers.
    #[serde(default)]
    pub endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
    /// Which nodes hold each layer, by DiffID, as their agents report it (state format 2).
    #[serde(default)]
    pub layers: BTreeMap<DiffId, BTreeSet<NodeId>>,
    /// The hosts of the cluster (state format 5).
    #[serde(default)]
    pub nodes: BTreeMap<NodeId, crate::node_state::NodeRecord>,
    /// IDs removed by `docker node rm`: never admitted again (state format 5).
    #[serde(default)]
    pub revoked_nodes: BTreeSet<NodeId>,
    /// The idempotency keys of the last [`Command::Keyed`] entries applied, with their
    /// answers (state format 6).
    #[serde(default)]
    pub applied_keys: crate::proposal_key::AppliedKeys,
    /// The cluster's settings (state format 7).
    #[serde(default)]
    pub settings: ClusterSettings,
    /// Containers that cannot move off their node, with the reason (state format 7).
    #[serde(default)]
    pub pending: BTreeMap<ContainerId, String>,
    /// Lookups derived from `containers` (names, per-node usage): a cache, not state.
    #[serde(skip)]
    pub index: crate::state_index::IndexCache,
}

/// What the restart policy remembers about a container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartState {
    /// Restarts done by the policy since the last manual start (`RestartCount`).
    pub count: u32,
    /// Stopped or killed by a user (Docker's `HasBeenManuallyStopped`).
    pub manually_stopped: bool,
    /// The policy will start it again after its back-off (Docker's `State.Restarting`).
    pub restarting: bool,
}

impl ClusterState {
    /// Apply each of `cmds` in order, as if each were its own log entry; the answer of
    /// each, in order.
    pub fn apply_each(&mut self, cmds: &[Command]) -> Vec<Response> {
        cmds.iter().map(|c| self.apply(c)).collect()
    }

    /// The answers of one log entry's command: one for a plain command, one per command of
    /// a [`Command::Batch`] or a [`Command::Keyed`] group.
    pub fn apply_entry(&mut self, cmd: &Command) -> Vec<Response> {
        match cmd {
            Command::Batch(cmds) => self.apply_each(cmds),
            Command::Keyed { key, commands } => self.apply_keyed(key, commands),
            other => vec![self.apply(other)],
        }
    }

    /// Apply `cmds` as one group under `key`, once: if `key` was applied already, the
    /// answers it was given then, and nothing changes.
    pub fn apply_keyed(&mut self, key: &ProposalKey, cmds: &[Command]) -> Vec<Response> {
        if let Some(answers) = self.applied_keys.answers(key) {
            return answers.to_vec();
        }
        let answers = self.apply_each(cmds);
        self.applied_keys.record(*key, answers.clone());
        answers
    }

    /// Apply one committed command; call from the state machine, in log order.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        match cmd {
            Command::Batch(cmds) => self
                .apply_each(cmds)
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(())),
            Command::Keyed { key, commands } => self
                .apply_keyed(key, commands)
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(())),
            Command::PutImage { image } => {
                self.images.entry(image.id).or_insert_with(|| image.clone());
                Ok(())
            }
            Command::Tag { reference, image } => {
                if !self.images.contains_key(image) {
                    return Err(StateError::NoSuchImage(image.to_string()));
                }
                self.tags.insert(reference.clone(), *image);
                Ok(())
            }
            Command::Untag { reference } => self
                .tags
                .remove(reference)
                .map(|_| ())
                .ok_or_else(|| StateError::NoSuchImage(reference.clone())),
            Command::RemoveImage { image } => {
                if !self.images.contains_key(image) {
                    return Err(StateError::NoSuchImage(image.to_string()));
                }
                if let Some(c) = self.containers.values().find(|c| c.run.image_id == *image) {
                    return Err(StateError::ImageInUse {
                        image: image.0.short(),
                        container: c.id.short().to_string(),
                    });
                }
                self.images.remove(image);
                self.tags.retain(|_, id| id != image);
                Ok(())
            }
            Command::UpdateSettings { settings } => {
                self.settings = *settings;
                Ok(())
            }
            Command::RescheduleContainer { old, container } => {
                if !self.containers.contains_key(old) {
                    return Err(StateError::NoSuchContainer(old.to_string()));
                }
                if let Some(holder) = self
                    .name_holder(container.name.as_str())
                    .filter(|holder| *holder != old)
                {
                    return Err(StateError::NameInUse {
                        name: container.name.to_string(),
                        holder: holder.to_string(),
                    });
                }
                self.forget_container(old);
                self.insert_container((**container).clone());
                Ok(())
            }
            Command::SetPending { id, reason } => {
                match reason {
                    Some(r) if self.containers.contains_key(id) => {
                        self.pending.insert(id.clone(), r.clone());
                    }
                    Some(_) => return Err(StateError::NoSuchContainer(id.to_string())),
                    None => {
                        self.pending.remove(id);
                    }
                }
                Ok(())
            }
            Command::CreateContainer { container } => {
                if let Some(holder) = self.name_holder(container.name.as_str()) {
                    return Err(StateError::NameInUse {
                        name: container.name.to_string(),
                        holder: holder.to_string(),
                    });
                }
                self.insert_container((**container).clone());
                Ok(())
            }
            Command::ContainerStarted { id, pid: _, at_ns }
            | Command::ContainerRunning { id, at_ns } => {
                let c = self.container_mut(id)?;
                c.status = ContainerStatus::Running;
                c.started_ns = *at_ns;
                c.exit_code = 0;
                c.oom_killed = false;
                c.error.clear();
                Ok(())
            }
            Command::ContainerExited {
                id,
                exit_code,
                oom_killed,
                at_ns,
                error,
            } => {
                let c = self.container_mut(id)?;
                c.status = ContainerStatus::Exited;
                c.exit_code = *exit_code;
                c.oom_killed = *oom_killed;
                c.finished_ns = *at_ns;
                c.error = error.clone();
                self.endpoints.remove(id);
                Ok(())
            }
            Command::RemoveContainer { id } => self
                .forget_container(id)
                .map(|_| ())
                .ok_or_else(|| StateError::NoSuchContainer(id.to_string())),
            Command::RemoveImageForced { image } => {
                if !self.images.contains_key(image) {
                    return Err(StateError::NoSuchImage(image.to_string()));
                }
                if let Some(c) = self.containers.values().find(|c| {
                    c.run.image_id == *image
                        && matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                }) {
                    return Err(StateError::ImageInUse {
                        image: image.0.short(),
                        container: c.id.short().to_string(),
                    });
                }
                self.images.remove(image);
                self.tags.retain(|_, id| id != image);
                Ok(())
            }
            Command::CreateVolume { volume } => {
                self.volumes
                    .entry(volume.name.clone())
                    .or_insert_with(|| volume.clone());
                Ok(())
            }
            Command::RemoveVolume { name } => {
                if !self.volumes.contains_key(name) {
                    return Err(StateError::NoSuchVolume(name.clone()));
                }
                let users = volume_users(self, name);
                if !users.is_empty() {
                    return Err(StateError::VolumeInUse {
                        name: name.clone(),
                        containers: users,
                    });
                }
                self.volumes.remove(name);
                Ok(())
            }
            Command::PauseContainer { id, paused } => {
                let c = self.container_mut(id)?;
                c.status = match (c.status, paused) {
                    (ContainerStatus::Running, true) => ContainerStatus::Paused,
                    (ContainerStatus::Paused, false) => ContainerStatus::Running,
                    (status, _) => status,
                };
                Ok(())
            }
            Command::RenameContainer { id, name } => {
                if let Some(holder) = self.name_holder(name.as_str()).filter(|h| *h != id) {
                    return Err(StateError::NameInUse {
                        name: name.to_string(),
                        holder: holder.to_string(),
                    });
                }
                let c = self.container_mut(id)?;
                let old = std::mem::replace(&mut c.name, name.clone());
                if let Some(ix) = self.index.built_mut() {
                    ix.renamed(id, &old, name);
                }
                Ok(())
            }
            Command::SetRestartState {
                id,
                count,
                manually_stopped,
                restarting,
            } => {
                self.container_mut(id)?;
                self.restarts.insert(
                    id.clone(),
                    RestartState {
                        count: *count,
                        manually_stopped: *manually_stopped,
                        restarting: *restarting,
                    },
                );
                Ok(())
            }
            Command::CreateNetwork { .. }
            | Command::RemoveNetwork { .. }
            | Command::ConnectContainer { .. }
            | Command::DisconnectContainer { .. }
            | Command::AttachEndpoints { .. }
            | Command::ReleaseEndpoints { .. }
            | Command::AllocateEndpoints { .. } => crate::network_state::apply(self, cmd),
            Command::LayerInventory { .. } => crate::layer_state::apply(self, cmd),
            Command::RegisterNode { .. }
            | Command::SetNodeState { .. }
            | Command::UpdateNode { .. }
            | Command::RemoveNode { .. } => crate::node_state::apply(self, cmd),
        }
    }

    /// Remove container `id` and everything kept about it; its record, if it had one.
    fn forget_container(&mut self, id: &ContainerId) -> Option<ContainerRecord> {
        self.restarts.remove(id);
        self.connections.remove(id);
        self.endpoints.remove(id);
        self.pending.remove(id);
        let gone = self.containers.remove(id)?;
        if let Some(ix) = self.index.built_mut() {
            ix.removed(&gone);
        }
        Some(gone)
    }

    /// Record container `c`, replacing nothing (its ID is new: the leader chose it).
    fn insert_container(&mut self, c: ContainerRecord) {
        if let Some(ix) = self.index.built_mut() {
            ix.added(&c);
        }
        if self.containers.insert(c.id.clone(), c).is_some() {
            // Not reached (IDs are fresh); if it ever is, the next read rebuilds the index.
            self.index.reset();
        }
    }

    /// The lookups derived from the containers (built on first use).
    pub fn index(&self) -> &crate::state_index::StateIndex {
        self.index.get(self)
    }

    /// The IDs of the nodes that accept placements (Ready, active, running containers),
    /// in ID order; built on first use and kept until a node command.
    pub fn placeable_nodes(&self) -> &[NodeId] {
        self.index.placeable(self)
    }

    /// The containers recorded on `node`.
    pub fn containers_on(&self, node: NodeId) -> impl Iterator<Item = &ContainerRecord> + '_ {
        self.index()
            .on_node(node)
            .filter_map(move |id| self.containers.get(id))
    }

    /// The container named `name` (without a leading `/`), if any.
    pub fn name_holder(&self, name: &str) -> Option<&ContainerId> {
        self.index().holder(name)
    }

    fn container_mut(&mut self, id: &ContainerId) -> Result<&mut ContainerRecord, StateError> {
        self.containers
            .get_mut(id)
            .ok_or_else(|| StateError::NoSuchContainer(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DiffId, Digest};

    fn image(n: u8) -> ImageRecord {
        let config = vec![b'{', n, b'}'];
        ImageRecord {
            id: ImageId(Digest::of(&config)),
            config,
            diff_ids: vec![DiffId(Digest::of(&[n]))],
            size: 10,
            loaded_ns: 1,
        }
    }

    fn container(n: u8, name: &str, img: &ImageRecord) -> ContainerRecord {
        let mut c = crate::fixtures::container(n, name);
        c.created_ns = 5;
        c.run.image_id = img.id;
        c.run.diff_ids = img.diff_ids.clone();
        c
    }

    #[test]
    fn names_are_unique() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        let b = container(2, "web", &img);
        s.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        let err = s
            .apply(&Command::CreateContainer {
                container: Box::new(b),
            })
            .unwrap_err();
        assert!(matches!(err, StateError::NameInUse { .. }));
        assert_eq!(s.containers.len(), 1);
        assert!(err.to_string().contains("\"/web\" is already in use"));
    }

    #[test]
    fn lifecycle_records_start_and_exit() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        s.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        s.apply(&Command::ContainerRunning {
            id: a.id.clone(),
            at_ns: 7,
        })
        .unwrap();
        let c = &s.containers[&a.id];
        assert_eq!((c.status, c.started_ns), (ContainerStatus::Running, 7));
        s.apply(&Command::ContainerExited {
            id: a.id.clone(),
            exit_code: 3,
            oom_killed: false,
            at_ns: 9,
            error: "e".into(),
        })
        .unwrap();
        let c = &s.containers[&a.id];
        assert_eq!(
            (c.status, c.exit_code, c.finished_ns, c.error.as_str()),
            (ContainerStatus::Exited, 3, 9, "e")
        );
        s.apply(&Command::ContainerRunning {
            id: a.id.clone(),
            at_ns: 11,
        })
        .unwrap();
        let c = &s.containers[&a.id];
        assert_eq!(
            (c.status, c.exit_code, c.started_ns, c.error.as_str()),
            (ContainerStatus::Running, 0, 11, ""),
            "a new run forgets the last one's exit"
        );
    }

    /// A log entry of a format-2 build (`ContainerStarted` with a PID) applies as
    /// `ContainerRunning` does: same state, the PID dropped.
    #[test]
    fn a_legacy_container_started_applies_as_container_running() {
        let img = image(1);
        let a = container(1, "web", &img);
        let mut base = ClusterState::default();
        base.apply(&Command::PutImage { image: img.clone() })
            .unwrap();
        base.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        let mut old = base.clone();
        let mut new = base;
        old.apply(&Command::ContainerStarted {
            id: a.id.clone(),
            pid: 42,
            at_ns: 7,
        })
        .unwrap();
        new.apply(&Command::ContainerRunning {
            id: a.id.clone(),
            at_ns: 7,
        })
        .unwrap();
        assert_eq!(old, new);
        assert_eq!(old.containers[&a.id].status, ContainerStatus::Running);
        let gone = ContainerId::from_bytes([9; 32]);
        for cmd in [
            Command::ContainerStarted {
                id: gone.clone(),
                pid: 1,
                at_ns: 1,
            },
            Command::ContainerRunning { id: gone, at_ns: 1 },
        ] {
            assert!(matches!(
                old.apply(&cmd),
                Err(StateError::NoSuchContainer(_))
            ));
        }
    }

    #[test]
    fn image_in_use_cannot_be_removed_and_tags_go_with_the_image() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        s.apply(&Command::Tag {
            reference: "busybox:latest".into(),
            image: img.id,
        })
        .unwrap();
        let a = container(1, "web", &img);
        s.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        let before = s.clone();
        assert!(matches!(
            s.apply(&Command::RemoveImage { image: img.id }),
            Err(StateError::ImageInUse { .. })
        ));
        assert_eq!(s, before);
        s.apply(&Command::RemoveContainer { id: a.id }).unwrap();
        s.apply(&Command::RemoveImage { image: img.id }).unwrap();
        assert!(s.tags.is_empty() && s.images.is_empty());
    }

    #[test]
    fn forced_image_removal_skips_stopped_but_not_running_containers() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        s.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        s.apply(&Command::ContainerRunning {
            id: a.id.clone(),
            at_ns: 1,
        })
        .unwrap();
        let before = s.clone();
        assert!(matches!(
            s.apply(&Command::RemoveImageForced { image: img.id }),
            Err(StateError::ImageInUse { .. })
        ));
        assert_eq!(s, before);
        s.apply(&Command::ContainerExited {
            id: a.id.clone(),
            exit_code: 0,
            oom_killed: false,
            at_ns: 2,
            error: String::new(),
        })
        .unwrap();
        s.apply(&Command::RemoveImageForced { image: img.id })
            .unwrap();
        assert!(s.images.is_empty());
        assert_eq!(s.containers.len(), 1, "the container stays");
        assert!(s
            .apply(&Command::RemoveImageForced { image: img.id })
            .is_err());
    }

    fn volume(name: &str) -> VolumeRecord {
        VolumeRecord {
            name: name.into(),
            driver: "local".into(),
            labels: BTreeMap::from([("a".to_string(), "b".to_string())]),
            options: BTreeMap::new(),
            created_ns: 3,
            node: NodeId(1),
            anonymous: false,
        }
    }

    #[test]
    fn volumes_are_created_once_and_not_removed_while_in_use() {
        let mut s = ClusterState::default();
        s.apply(&Command::CreateVolume {
            volume: volume("data"),
        })
        .unwrap();
        let mut again = volume("data");
        again.labels.clear();
        s.apply(&Command::CreateVolume { volume: again }).unwrap();
        assert_eq!(s.volumes["data"], volume("data"), "the first one is kept");

        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let mut c = container(1, "web", &img);
        c.run.host.mounts.push(crate::agent::MountPoint {
            kind: crate::agent::MountKind::Volume,
            source: "data".into(),
            target: "/data".into(),
            ..Default::default()
        });
        s.apply(&Command::CreateContainer {
            container: Box::new(c.clone()),
        })
        .unwrap();
        let before = s.clone();
        let err = s
            .apply(&Command::RemoveVolume {
                name: "data".into(),
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("remove data: volume is in use - [{}]", c.id)
        );
        assert_eq!(s, before);
        s.apply(&Command::RemoveContainer { id: c.id }).unwrap();
        s.apply(&Command::RemoveVolume {
            name: "data".into(),
        })
        .unwrap();
        assert!(s.volumes.is_empty());
        assert_eq!(
            s.apply(&Command::RemoveVolume {
                name: "data".into()
            }),
            Err(StateError::NoSuchVolume("data".into()))
        );
    }

    #[test]
    fn tag_of_unknown_image_is_refused() {
        let mut s = ClusterState::default();
        let img = image(1);
        assert!(s
            .apply(&Command::Tag {
                reference: "x:latest".into(),
                image: img.id
            })
            .is_err());
        assert!(s.tags.is_empty());
    }

    #[test]
    fn pause_only_moves_between_running_and_paused() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        s.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        let pause = |paused| Command::PauseContainer {
            id: a.id.clone(),
            paused,
        };
        s.apply(&pause(true)).unwrap();
        assert_eq!(s.containers[&a.id].status, ContainerStatus::Created);
        s.apply(&Command::ContainerRunning {
            id: a.id.clone(),
            at_ns: 1,
        })
        .unwrap();
        s.apply(&pause(true)).unwrap();
        assert_eq!(s.containers[&a.id].status, ContainerStatus::Paused);
        s.apply(&pause(false)).unwrap();
        assert_eq!(s.containers[&a.id].status, ContainerStatus::Running);
        s.apply(&pause(true)).unwrap();
        s.apply(&Command::ContainerExited {
            id: a.id.clone(),
            exit_code: 137,
            oom_killed: false,
            at_ns: 2,
            error: String::new(),
        })
        .unwrap();
        assert_eq!(s.containers[&a.id].status, ContainerStatus::Exited);
    }

    #[test]
    fn rename_refuses_a_taken_name_and_allows_its_own() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        let b = container(2, "db", &img);
        for c in [&a, &b] {
            s.apply(&Command::CreateContainer {
                container: Box::new(c.clone()),
            })
            .unwrap();
        }
        let before = s.clone();
        let err = s
            .apply(&Command::RenameContainer {
                id: a.id.clone(),
                name: "db".parse().unwrap(),
            })
            .unwrap_err();
        assert!(matches!(err, StateError::NameInUse { .. }));
        assert_eq!(s, before);
        s.apply(&Command::RenameContainer {
            id: a.id.clone(),
            name: "web".parse().unwrap(),
        })
        .unwrap();
        s.apply(&Command::RenameContainer {
            id: a.id.clone(),
            name: "front".parse().unwrap(),
        })
        .unwrap();
        assert_eq!(s.containers[&a.id].name.as_str(), "front");
        let gone = ContainerId::from_bytes([9; 32]);
        assert!(s
            .apply(&Command::RenameContainer {
                id: gone,
                name: "x1".parse().unwrap(),
            })
            .is_err());
    }

    #[test]
    fn restart_state_is_kept_until_the_container_is_removed() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        s.apply(&Command::CreateContainer {
            container: Box::new(a.clone()),
        })
        .unwrap();
        s.apply(&Command::SetRestartState {
            id: a.id.clone(),
            count: 2,
            manually_stopped: true,
            restarting: false,
        })
        .unwrap();
        assert_eq!(
            s.restarts[&a.id],
            RestartState {
                count: 2,
                manually_stopped: true,
                restarting: false,
            }
        );
        s.apply(&Command::RemoveContainer { id: a.id.clone() })
            .unwrap();
        assert!(s.restarts.is_empty());
        assert!(s
            .apply(&Command::SetRestartState {
                id: a.id,
                count: 1,
                manually_stopped: false,
                restarting: true,
            })
            .is_err());
    }

    #[test]
    fn a_batch_applies_each_command_as_if_alone() {
        let mut s = ClusterState::default();
        let img = image(1);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let a = container(1, "web", &img);
        let mut clash = container(2, "web", &img);
        clash.created_ns = 9;
        let b = container(3, "db", &img);
        let batch = vec![
            Command::CreateContainer {
                container: Box::new(a.clone()),
            },
            Command::CreateContainer {
                container: Box::new(clash),
            },
            Command::CreateContainer {
                container: Box::new(b.clone()),
            },
        ];
        let mut one_by_one = s.clone();
        let alone: Vec<Response> = batch.iter().map(|c| one_by_one.apply(c)).collect();
        let answers = s.apply_entry(&Command::Batch(batch));
        assert_eq!(answers, alone);
        assert!(answers[0].is_ok() && answers[2].is_ok());
        assert!(matches!(answers[1], Err(StateError::NameInUse { .. })));
        assert_eq!(s, one_by_one);
        assert_eq!(s.containers.len(), 2);
        assert_eq!(
            s.apply_entry(&Command::PutImage { image: img }),
            vec![Ok(())],
            "a plain command has one answer"
        );
    }
}
