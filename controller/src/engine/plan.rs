//! Planners: the replicated state and a request in, what to do out (quinn-proto's shape:
//! decisions apart from effects).
//!
//! ```text
//!  request ──► planner (pure: state, request, the leader's choices) ──► Plan
//!                                                                        │ steps, each an
//!                                                                        │ effect and its undo
//!  Engine::execute (executor.rs) ◄────────────────────────────────────────┘
//!    ├── Effect::Propose(Command) ──► Raft
//!    └── Effect::Agent{node, request} ──► that node's agent
//!    on a failed step: the undos of the steps done, newest first; then the error
//! ```
//!
//! A planner reads nothing but its arguments: the ID, the time and random names are the
//! leader's choices, passed in, so a plan is the same for the same state, request and
//! choices, and unit tests check plans without an agent or a store.

use super::error::EngineError;
use super::health;
use super::image_record;
use super::lifecycle::RestartPolicy;
use super::network::{check_network_request, connections_at_create, resolve_network};
use super::network_ops::PREDEFINED;
use super::volumes::{check_local_options, resolve_host_config, LOCAL_DRIVER};
use crate::docker_types::{self, CreateConfig, ImageConfigFile};
use std::collections::BTreeMap;
use wharf_protocol::agent::container::ContainerRequest;
use wharf_protocol::agent::network::NetworkRequest;
use wharf_protocol::agent::volume::VolumeRequest;
use wharf_protocol::agent::{AgentRequest, ContainerRunSpec};
use wharf_protocol::network::NetworkRecord;
use wharf_protocol::state::{
    ClusterState, Command, ContainerRecord, ContainerStatus, VolumeRecord,
};
use wharf_protocol::{ContainerId, ContainerName, NodeId};

/// One thing the executor does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Propose a command to the replicated state; a refusal fails the step.
    Propose(Command),
    /// Ask a node's agent; anything but `Done` fails the step.
    Agent {
        /// The node whose agent acts.
        node: NodeId,
        /// What it is asked.
        request: Box<AgentRequest>,
    },
    /// Make a node's packet rules what the state says by then (computed from the state
    /// when the step runs, as the rules of every container of the node depend on it).
    SyncRules {
        /// The node.
        node: NodeId,
    },
    /// Send a node's resolvers the tables of its user networks as the state says by then
    /// (see `dns.rs`); never fails (a table not sent is logged).
    SyncDns {
        /// The node.
        node: NodeId,
    },
}

impl Effect {
    /// Ask `node`'s agent for `request`.
    pub fn agent(node: NodeId, request: impl Into<AgentRequest>) -> Effect {
        Effect::Agent {
            node,
            request: Box::new(request.into()),
        }
    }
}

/// A step of a plan: an effect, and what undoes it once it is done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// What to do.
    pub effect: Effect,
    /// What undoes it, if a later step fails.
    pub undo: Option<Effect>,
    /// A failure of this step fails the plan; otherwise it is logged and the plan goes
    /// on (cleaning up after a change that is already recorded).
    pub required: bool,
    /// The effect may be half done when it fails (a bridge made, its address not set):
    /// then its own undo runs too.
    pub partial: bool,
}

/// What an operation does, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps.
    pub steps: Vec<Step>,
}

impl Plan {
    /// Add a step that must succeed, with its undo.
    pub fn then(&mut self, effect: Effect, undo: Option<Effect>) -> &mut Plan {
        self.steps.push(Step {
            effect,
            undo,
            required: true,
            partial: false,
        });
        self
    }

    /// Add a step that must succeed and may be half done when it fails: its undo runs
    /// then too.
    pub fn then_partial(&mut self, effect: Effect, undo: Effect) -> &mut Plan {
        self.steps.push(Step {
            effect,
            undo: Some(undo),
            required: true,
            partial: true,
        });
        self
    }

    /// Add a step whose failure is only logged.
    pub fn then_try(&mut self, effect: Effect) -> &mut Plan {
        self.steps.push(Step {
            effect,
            undo: None,
            required: false,
            partial: false,
        });
        self
    }

    /// The effects, in order (for tests and logs).
    pub fn effects(&self) -> impl Iterator<Item = &Effect> {
        self.steps.iter().map(|s| &s.effect)
    }
}

/// What the leader chose for a new container (randomness and time stay out of planners).
#[derive(Clone, Debug)]
pub struct CreateChoices {
    /// The container's ID.
    pub id: ContainerId,
    /// Its creation time, ns since the epoch.
    pub now_ns: i64,
    /// The node it is placed on.
    pub node: NodeId,
    /// Seeds of a generated name ([`crate::names::random_name`]).
    pub name_seeds: (usize, usize),
    /// The container this one replaces (a move off a Down node): recorded with
    /// `RescheduleContainer`, which frees the old one's name in the same step.
    pub replaces: Option<ContainerId>,
}

/// A planned `docker create`.
#[derive(Clone, Debug)]
pub struct CreatePlan {
    /// The record the plan writes.
    pub record: ContainerRecord,
    /// Whether the name was generated (a race for it is retried with another).
    pub generated_name: bool,
    /// The index of the step that records the container (where a name taken meanwhile
    /// fails).
    pub record_step: usize,
    /// The volumes it creates, for their events.
    pub new_volumes: Vec<String>,
    /// Check the host, create the volumes it lacks, record, connect, prepare the layer.
    pub plan: Plan,
}

/// A create request's first checks (pure): its JSON, its config's types, an image named,
/// and the name asked for; the body as JSON, its config and that name.
pub fn parse_create(
    body: &[u8],
    name: Option<&str>,
) -> Result<(serde_json::Value, CreateConfig, Option<ContainerName>), EngineError> {
    let raw = parse_json(body)?;
    let (req, requested) = read_create(&raw, name)?;
    Ok((raw, req, requested))
}

/// A create request's body as JSON, or Docker's 400 saying why it is not.
pub fn parse_json(body: &[u8]) -> Result<serde_json::Value, EngineError> {
    serde_json::from_slice(body).map_err(|e| EngineError::invalid(format!("invalid JSON: {e}")))
}

/// [`parse_create`] of a body already parsed: its typed view and the requested name.
pub fn read_create(
    raw: &serde_json::Value,
    name: Option<&str>,
) -> Result<(CreateConfig, Option<ContainerName>), EngineError> {
    use serde::Deserialize;
    if !raw.is_object() {
        return Err(EngineError::invalid("invalid JSON: body must be an object"));
    }
    let req = CreateConfig::deserialize(raw)
        .map_err(|e| EngineError::invalid(format!("invalid container config: {e}")))?;
    if req.image.is_empty() {
        return Err(EngineError::invalid(
            "no image given: Config.Image is empty",
        ));
    }
    let requested = match name {
        Some(n) if !n.is_empty() => Some(
            n.parse::<ContainerName>()
                .map_err(|e| EngineError::invalid(e.to_string()))?,
        ),
        _ => None,
    };
    Ok((req, requested))
}

/// Plan `POST /containers/create` (pure): validate the request against the image and
/// the state, build the record, and the steps that carry it out. `anon` names the
/// anonymous volumes.
pub fn create_container(
    state: &ClusterState,
    name: Option<&str>,
    request: &serde_json::Value,
    choices: &CreateChoices,
    anon: &mut dyn FnMut() -> String,
) -> Result<CreatePlan, EngineError> {
    let (req, requested) = read_create(request, name)?;
    // The request as sent (`request`) stays for what reads its networking after `raw`
    // gave it up.
    let mut raw = request.clone();
    let image = image_record(state, &req.image)?;
    let img_cfg: ImageConfigFile = serde_json::from_slice(&image.config)
        .map_err(|e| EngineError::internal(format!("image config of {}: {e}", image.id)))?;
    let run_cfg = img_cfg.config.unwrap_or_default();
    let (ep, cmd) = docker_types::merge_process(
        &run_cfg,
        req.entrypoint.clone().map(|e| e.into_vec()),
        req.cmd.clone().map(|c| c.into_vec()),
    );
    let args: Vec<String> = ep.iter().chain(cmd.iter()).cloned().collect();
    if args.is_empty() {
        return Err(EngineError::invalid("no command specified"));
    }
    let working_dir = if req.working_dir.is_empty() {
        if run_cfg.working_dir.is_empty() {
            "/".to_string()
        } else {
            run_cfg.working_dir.clone()
        }
    } else {
        req.working_dir.clone()
    };
    if !working_dir.starts_with('/') {
        return Err(EngineError::invalid(format!(
            "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )));
    }
    let stop_signal_name = req
        .stop_signal
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| Some(run_cfg.stop_signal.clone()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "SIGTERM".to_string());
    let stop_signal = docker_types::parse_signal(&stop_signal_name)
        .ok_or_else(|| EngineError::invalid(format!("Invalid signal: {stop_signal_name}")))?;
    let env = docker_types::merge_env(
        run_cfg.env.as_deref().unwrap_or_default(),
        req.env.as_deref().unwrap_or_default(),
    );
    let id = choices.id.clone();
    let hostname = if req.hostname.is_empty() {
        id.short().to_string()
    } else {
        req.hostname.clone()
    };
    let user = if req.user.is_empty() {
        run_cfg.user.clone()
    } else {
        req.user.clone()
    };
    let mut host_config = raw
        .as_object_mut()
        .and_then(|o| o.remove("HostConfig"))
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(o) = raw.as_object_mut() {
        o.remove("NetworkingConfig");
    }
    health::log_rotation(&host_config)?;
    if let Some(h) = health::merge_healthcheck(raw.get("Healthcheck"), &image.config)? {
        if let Some(o) = raw.as_object_mut() {
            o.insert("Healthcheck".into(), h);
        }
    }
    let auto_remove = req
        .host_config
        .as_ref()
        .map(|h| h.auto_remove)
        .unwrap_or(false);
    let policy = RestartPolicy::parse(&host_config).map_err(EngineError::invalid)?;
    if auto_remove && policy != RestartPolicy::No {
        return Err(EngineError::invalid(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    check_network_request(state, choices.node, &mut host_config, &raw, request)?;
    let (host, volume_needs, bind_sources) = resolve_host_config(state, &req, &run_cfg, anon)?;
    let (name, generated_name) = match requested {
        Some(n) => (n, false),
        None => (free_name(state, choices.name_seeds, &choices.id)?, true),
    };
    let run = ContainerRunSpec {
        id: id.clone(),
        image_id: image.id,
        diff_ids: image.diff_ids.clone(),
        args,
        env,
        working_dir,
        user,
        hostname,
        tty: req.tty,
        open_stdin: req.open_stdin,
        stop_signal,
        host,
    };
    let record = ContainerRecord {
        id: id.clone(),
        name,
        created_ns: choices.now_ns,
        node: choices.node,
        image_ref: req.image.clone(),
        run,
        config_json: raw.to_string(),
        host_config_json: host_config.to_string(),
        auto_remove,
        status: ContainerStatus::Created,
        exit_code: 0,
        started_ns: 0,
        finished_ns: 0,
        oom_killed: false,
        error: String::new(),
    };
    let node = choices.node;
    let mut plan = Plan::default();
    // What only the host knows (its runtime's capability and ulimit names, which sysctls
    // it namespaces, which paths exist) is checked by its agent before anything is
    // recorded; settings that name none of them are valid on any host, and a create of
    // them goes to its agent once (its `Create`), not twice.
    if record.run.host.needs_host_check() || !bind_sources.is_empty() {
        plan.then(
            Effect::agent(
                node,
                ContainerRequest::Check {
                    host: record.run.host.clone(),
                    bind_sources,
                },
            ),
            None,
        );
    }
    // Volumes first: a record that mounts them is removed before they are, on undo. A
    // named volume made here stays, as Docker keeps it; an anonymous one goes.
    let mut new_volumes = vec![];
    for need in &volume_needs {
        if state.volumes.contains_key(&need.name) || new_volumes.contains(&need.name) {
            continue;
        }
        let volume = VolumeRecord {
            name: need.name.clone(),
            driver: LOCAL_DRIVER.to_string(),
            labels: need.labels.clone(),
            options: need.options.clone(),
            created_ns: choices.now_ns,
            node,
            anonymous: need.anonymous,
        };
        plan.steps.extend(create_volume_steps(volume).steps);
        new_volumes.push(need.name.clone());
    }
    let record_step = plan.steps.len();
    match &choices.replaces {
        None => plan.then(
            Effect::Propose(Command::CreateContainer {
                container: Box::new(record.clone()),
            }),
            Some(Effect::Propose(Command::RemoveContainer { id: id.clone() })),
        ),
        // The old record is gone with this step: a failure after it leaves the new one
        // (Created, on its node) rather than nothing.
        Some(old) => plan.then(
            Effect::Propose(Command::RescheduleContainer {
                old: old.clone(),
                container: Box::new(record.clone()),
            }),
            None,
        ),
    };
    for connect in connections_at_create(state, &record, request)? {
        plan.then(Effect::Propose(connect), None);
    }
    plan.then(
        Effect::agent(
            node,
            ContainerRequest::Create {
                spec: record.run.clone(),
            },
        ),
        Some(Effect::agent(node, ContainerRequest::Remove { id })),
    );
    Ok(CreatePlan {
        record,
        generated_name,
        record_step,
        new_volumes,
        plan,
    })
}

/// A generated name no container has yet: Docker's `namesgenerator` (a digit added after
/// a clash), six tries, then the container's short ID as Docker's `generateNewName` falls
/// back to (so a cluster with more unnamed containers than names still creates them).
fn free_name(
    state: &ClusterState,
    (a, b): (usize, usize),
    id: &ContainerId,
) -> Result<ContainerName, EngineError> {
    let tries = (0..6).map(|retry| crate::names::random_name(a, b.wrapping_add(retry), retry));
    for name in tries.chain(std::iter::once(id.short().to_string())) {
        if state.name_holder(&name).is_none() {
            return name
                .parse()
                .map_err(|_| EngineError::internal("generated an invalid name"));
        }
    }
    Err(EngineError::internal("no free generated name"))
}

/// The steps that make a volume: its directory on its node, then its record. Only an
/// anonymous volume is undone (in the other order): its name is new, while a named one
/// may be made by a concurrent request at the same time (`CreateVolume` keeps the first
/// record), and an undo would take that one's data.
fn create_volume_steps(volume: VolumeRecord) -> Plan {
    let (node, name, undo) = (volume.node, volume.name.clone(), volume.anonymous);
    let mut plan = Plan::default();
    plan.then(
        Effect::agent(node, VolumeRequest::Create { name: name.clone() }),
        undo.then(|| Effect::agent(node, VolumeRequest::Remove { name: name.clone() })),
    );
    plan.then(
        Effect::Propose(Command::CreateVolume { volume }),
        undo.then_some(Effect::Propose(Command::RemoveVolume { name })),
    );
    plan
}

/// A planned `docker volume create`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VolumeCreate {
    /// A volume of that name exists: it is the answer, as it is.
    Exists(VolumeRecord),
    /// Make it.
    New(VolumeRecord, Plan),
}

/// A `docker volume create` request (the name already chosen when it gave none).
#[derive(Clone, Debug, Default)]
pub struct NewVolume<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its driver: empty or `local`.
    pub driver: &'a str,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// The `local` driver's options.
    pub options: BTreeMap<String, String>,
    /// Made for one container (`rm -v` removes it).
    pub anonymous: bool,
}

/// Plan `POST /volumes/create` (pure) on `node` at `now_ns`.
pub fn create_volume(
    state: &ClusterState,
    req: NewVolume<'_>,
    node: NodeId,
    now_ns: i64,
) -> Result<VolumeCreate, EngineError> {
    let NewVolume {
        name,
        driver,
        labels,
        options,
        anonymous,
    } = req;
    if !docker_types::valid_volume_name(name) {
        return Err(EngineError::invalid(docker_types::invalid_volume_name(
            name,
        )));
    }
    if !driver.is_empty() && driver != LOCAL_DRIVER {
        return Err(EngineError::not_found(format!(
            "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
        )));
    }
    check_local_options(&options).map_err(EngineError::invalid)?;
    if let Some(existing) = state.volumes.get(name) {
        return Ok(VolumeCreate::Exists(existing.clone()));
    }
    let volume = VolumeRecord {
        name: name.to_string(),
        driver: LOCAL_DRIVER.to_string(),
        labels,
        options,
        created_ns: now_ns,
        node,
        anonymous,
    };
    Ok(VolumeCreate::New(
        volume.clone(),
        create_volume_steps(volume),
    ))
}

/// Plan `DELETE /volumes/{name}` (pure): the record first (the state refuses while a
/// container mounts it), then its data, which may fail without undoing the removal.
/// `None`: nothing to do (`force` and no such volume).
pub fn remove_volume(
    state: &ClusterState,
    name: &str,
    force: bool,
) -> Result<Option<(VolumeRecord, Plan)>, EngineError> {
    let Some(volume) = state.volumes.get(name) else {
        if force {
            return Ok(None);
        }
        return Err(wharf_protocol::state::StateError::NoSuchVolume(name.to_string()).into());
    };
    let mut plan = Plan::default();
    plan.then(
        Effect::Propose(Command::RemoveVolume {
            name: name.to_string(),
        }),
        None,
    );
    plan.then_try(Effect::agent(
        volume.node,
        VolumeRequest::Remove {
            name: name.to_string(),
        },
    ));
    Ok(Some((volume.clone(), plan)))
}

/// Plan the record and bridge of a new network (pure; `record` is decided by
/// `network_state::new_network`): record it, then make its bridge on its node; a bridge
/// that fails takes the record back. Then its resolver starts (a user network's; one that
/// cannot listen fails nothing).
pub fn create_network(record: &NetworkRecord) -> Plan {
    let mut plan = Plan::default();
    plan.then(
        Effect::Propose(Command::CreateNetwork {
            network: record.clone(),
        }),
        Some(Effect::Propose(Command::RemoveNetwork {
            id: record.id.clone(),
        })),
    );
    plan.then_partial(
        Effect::agent(
            record.node,
            NetworkRequest::EnsureBridge {
                bridge: record.bridge.clone(),
                subnet: record.subnet,
                gateway: record.gateway,
                icc: record.icc(),
            },
        ),
        Effect::agent(
            record.node,
            NetworkRequest::RemoveBridge {
                bridge: record.bridge.clone(),
            },
        ),
    );
    plan.then_try(Effect::SyncDns { node: record.node });
    plan
}

/// Plan `DELETE /networks/{id}` (pure): refused for the predefined networks; the record
/// (the state refuses while containers are connected), then its resolver and the bridge.
pub fn remove_network(
    state: &ClusterState,
    reference: &str,
) -> Result<(NetworkRecord, Plan), EngineError> {
    if PREDEFINED.contains(&reference) {
        return Err(EngineError::forbidden(format!(
            "{reference} is a pre-defined network and cannot be removed"
        )));
    }
    let n = resolve_network(state, reference, None)?;
    if n.default {
        return Err(EngineError::forbidden(format!(
            "{} is a pre-defined network and cannot be removed",
            n.name
        )));
    }
    let mut plan = Plan::default();
    plan.then(
        Effect::Propose(Command::RemoveNetwork { id: n.id.clone() }),
        None,
    );
    plan.then_try(Effect::agent(
        n.node,
        NetworkRequest::StopDns {
            network: n.id.clone(),
        },
    ));
    plan.then_try(Effect::agent(
        n.node,
        NetworkRequest::RemoveBridge {
            bridge: n.bridge.clone(),
        },
    ));
    Ok((n.clone(), plan))
}

/// Plan the removal of a container that is not running (pure): its files on its node,
/// then its record.
pub fn remove_container(c: &ContainerRecord) -> Plan {
    let mut plan = remove_files(c.node, &c.id);
    plan.then(
        Effect::Propose(Command::RemoveContainer { id: c.id.clone() }),
        None,
    );
    plan
}

/// Plan the removal of a container's files on `node` alone (pure): the reconcile's
/// step for a container the state no longer records there.
pub fn remove_files(node: NodeId, id: &ContainerId) -> Plan {
    let mut plan = Plan::default();
    plan.then(
        Effect::agent(node, ContainerRequest::Remove { id: id.clone() }),
        None,
    );
    plan
}

/// Plan what a container that stopped, or failed to start, lets go of on `node` (pure):
/// its addresses (when it still has endpoints), then the rules and the resolvers' tables
/// follow the state, then its host ports. Clean-up: each step may fail without stopping
/// the rest.
pub fn release_network(node: NodeId, id: &ContainerId, has_endpoints: bool) -> Plan {
    let mut plan = Plan::default();
    if has_endpoints {
        plan.then_try(Effect::Propose(Command::ReleaseEndpoints {
            id: id.clone(),
        }));
    }
    plan.then_try(Effect::SyncRules { node });
    plan.then_try(Effect::SyncDns { node });
    plan.then_try(Effect::agent(
        node,
        NetworkRequest::Release { id: id.clone() },
    ));
    plan
}

/// Whether a container may be started (pure): a paused one is a conflict, a running
/// one needs nothing (304).
pub fn check_start(c: &ContainerRecord) -> Result<(), EngineError> {
    match c.status {
        ContainerStatus::Paused => Err(EngineError::conflict(
            "cannot start a paused container, try unpause instead",
        )),
        ContainerStatus::Running => Err(EngineError::not_modified()),
        _ => Ok(()),
    }
}

/// Plan what follows a start that failed on the agent or before it (pure): attaches
/// waiting for the run are let go, the run's leftovers cleaned up, its addresses, rules
/// and host ports released, then the exit recorded with `exit_code` and the reason.
/// Only the record must succeed; the rest is logged and tried again by the next start
/// or removal.
pub fn start_failed(
    c: &ContainerRecord,
    has_endpoints: bool,
    exit_code: i32,
    error: &str,
    now_ns: i64,
) -> Plan {
    let (node, id) = (c.node, c.id.clone());
    let mut plan = Plan::default();
    plan.then_try(Effect::agent(
        node,
        ContainerRequest::CancelAttaches { id: id.clone() },
    ));
    plan.then_try(Effect::agent(
        node,
        ContainerRequest::Cleanup { id: id.clone() },
    ));
    plan.steps
        .extend(release_network(node, &id, has_endpoints).steps);
    plan.then(
        Effect::Propose(Command::ContainerExited {
            id,
            exit_code,
            oom_killed: false,
            at_ns: now_ns,
            error: error.to_string(),
        }),
        None,
    );
    plan
}

#[cfg(test)]
#[path = "plan_test.rs"]
mod tests;
