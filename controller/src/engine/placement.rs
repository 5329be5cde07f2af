//! Placement: which node a new container goes to (pure; classic Swarm's filters and its
//! `spread` strategy over the replicated state).
//!
//! ```text
//!  create body ──► request_from_create (constraints out of Env, pins, limits, ports)
//!                        │
//!  ClusterState ─────────┴──► place: nodes accepting placements
//!                                  ─► constraints ─► pins (volume, container:X,
//!                                  --volumes-from) ─► network ─► image held ─► CPU/memory
//!                                  ─► host ports free (preferred: with none, the start
//!                                  reports Docker's error) ─► fewest containers, then ID
//! ```
//!
//! Constraints are classic Swarm's: `-e constraint:node==HOST` (or `!=`), and
//! `-e constraint:node.labels.KEY==VALUE` (or `!=`) against the node's labels. `node`
//! matches the host name or the node ID. Values match exactly (no globs or regular
//! expressions). The container label `com.wharf.constraint` holds more, separated by
//! `,` (each with or without the `constraint:` prefix). `constraint:` entries are removed
//! from the container's environment, as classic Swarm did.
//!
//! The same ranking chooses where new images go ([`image_targets`]).

use super::error::{EngineError, ErrorKind};
use super::{find_container, find_image, image_record};
use serde_json::Value;
use std::collections::BTreeSet;
use wharf_protocol::network::{parse_binding, port_taken, ports_in_use, PortMapping};
use wharf_protocol::node_state::NodeRecord;
use wharf_protocol::state::ClusterState;
use wharf_protocol::{ImageId, NodeId};

/// The container label holding more constraints, separated by `,`.
pub const CONSTRAINT_LABEL: &str = "com.wharf.constraint";
/// The container label recording why it was placed where it is.
pub const PLACEMENT_LABEL: &str = "com.wharf.placement";
/// The prefix of a constraint in a container's environment.
const ENV_PREFIX: &str = "constraint:";

/// What a constraint compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConstraintKey {
    /// The node's host name or ID.
    Node,
    /// One of the node's labels.
    Label(String),
}

/// One constraint, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    /// What it compares.
    pub key: ConstraintKey,
    /// `==` (true) or `!=`.
    pub equal: bool,
    /// The value compared with.
    pub value: String,
    /// The text the user wrote (without `constraint:`), for messages.
    pub text: String,
}

impl Constraint {
    /// Parse `node==x`, `node!=x`, `node.labels.k==v`, `node.labels.k!=v`.
    pub fn parse(text: &str) -> Result<Constraint, PlacementError> {
        let text = text.trim();
        let bad = || PlacementError::Malformed(text.to_string());
        let (at, equal) = match (text.find("=="), text.find("!=")) {
            (Some(e), Some(n)) => (e.min(n), e < n),
            (Some(e), None) => (e, true),
            (None, Some(n)) => (n, false),
            (None, None) => return Err(bad()),
        };
        let (key, value) = (text[..at].trim(), text[at + 2..].trim());
        if value.is_empty() {
            return Err(bad());
        }
        let key = match key {
            "node" => ConstraintKey::Node,
            k => match k.strip_prefix("node.labels.") {
                Some(l) if !l.is_empty() => ConstraintKey::Label(l.to_string()),
                _ => return Err(bad()),
            },
        };
        Ok(Constraint {
            key,
            equal,
            value: value.to_string(),
            text: text.to_string(),
        })
    }

    /// Whether node `n` meets it.
    pub fn matches(&self, n: &NodeRecord) -> bool {
        let hit = match &self.key {
            ConstraintKey::Node => {
                n.description.hostname == self.value || n.id.to_string() == self.value
            }
            ConstraintKey::Label(k) => n.labels.get(k) == Some(&self.value),
        };
        hit == self.equal
    }
}

/// Something that ties the container to the node of an existing object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// What, for messages (`volume data`, `container web`).
    pub what: String,
    /// Its node.
    pub node: NodeId,
}

/// What placement needs to know of a new container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlacementRequest {
    /// Its image, when it exists (an unknown image is the create planner's 404).
    pub image: Option<(ImageId, String)>,
    /// `--cpus`, in 1e-9 CPUs (`HostConfig.NanoCpus`).
    pub nano_cpus: i64,
    /// `--memory`, bytes (`HostConfig.Memory`).
    pub memory: i64,
    /// Fixed host ports of `-p`.
    pub host_ports: Vec<PortMapping>,
    /// Its constraints.
    pub constraints: Vec<Constraint>,
    /// Objects whose node it must run on.
    pub pins: Vec<Pin>,
    /// A user network it joins by name (`--network NAME`).
    pub network: Option<String>,
}

/// Where a container goes, and why (recorded as its [`PLACEMENT_LABEL`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The node.
    pub node: NodeId,
    /// Why it was chosen.
    pub reason: String,
}

/// Why no node can take a container.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// No node is Ready, active and running containers.
    #[error("no agent is ready to run containers")]
    NoReadyAgent,
    /// A constraint is not written as `node==x` or `node.labels.k==v` (or `!=`).
    #[error("invalid constraint \"{0}\": expected node==HOST, node!=HOST, node.labels.KEY==VALUE or node.labels.KEY!=VALUE")]
    Malformed(String),
    /// No node that accepts placements meets the constraint.
    #[error("no node meets the constraint {0}")]
    Unmet(String),
    /// A pinning object is on a node that accepts no placement or fails another filter.
    #[error("{what} is on node {node}, which cannot take the container")]
    Pinned {
        /// What pins it.
        what: String,
        /// That object's node.
        node: String,
    },
    /// Several pinning objects are on different nodes.
    #[error("{0} are on different nodes")]
    PinsDisagree(String),
    /// The user network exists, on no candidate node.
    #[error("network {name} is on node(s) {nodes}, which cannot take the container")]
    Network {
        /// The network's name.
        name: String,
        /// The nodes that have one of that name.
        nodes: String,
    },
    /// The image is recorded, but on no candidate node.
    #[error("image {image} is not on a node that can take the container (held by: {holders})")]
    ImageElsewhere {
        /// The image reference.
        image: String,
        /// The nodes holding it, or `none`.
        holders: String,
    },
    /// No candidate node has enough unreserved CPU or memory.
    #[error("no node has enough free {0}")]
    Resources(String),
}

/// Placement failures as the API shows them: 503 with no ready agent, 400 for a malformed
/// constraint, 409 otherwise (never 404: the CLI would pull the image).
impl From<PlacementError> for EngineError {
    fn from(e: PlacementError) -> EngineError {
        let kind = match e {
            PlacementError::NoReadyAgent => ErrorKind::Unavailable,
            PlacementError::Malformed(_) => ErrorKind::InvalidParameter,
            _ => ErrorKind::Conflict,
        };
        EngineError::new(kind, e.to_string())
    }
}

/// The 503 of a cluster with no node to act on.
pub fn no_ready_agent() -> EngineError {
    PlacementError::NoReadyAgent.into()
}

fn name_of(s: &ClusterState, id: NodeId) -> String {
    s.nodes
        .get(&id)
        .map(|n| n.description.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| id.to_string())
}

fn names(s: &ClusterState, ids: impl IntoIterator<Item = NodeId>) -> String {
    let v: Vec<String> = ids.into_iter().map(|n| name_of(s, n)).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// How many containers each node has (the spread strategy's load).
fn load(s: &ClusterState, node: NodeId) -> usize {
    s.containers.values().filter(|c| c.node == node).count()
}

/// The nodes accepting placements, best first: fewest containers, then node ID.
fn ranked<'a>(s: &'a ClusterState, mut nodes: Vec<&'a NodeRecord>) -> Vec<&'a NodeRecord> {
    nodes.sort_by_key(|n| (load(s, n.id), n.id));
    nodes
}

/// The nodes new images go to (`load`, `import`, `commit`, `build`), best first: those
/// accepting placements, by the placement ranking. One decision, used everywhere.
pub fn image_targets(s: &ClusterState) -> Vec<NodeId> {
    let accepting = s
        .nodes
        .values()
        .filter(|n| n.accepts_placements())
        .collect();
    ranked(s, accepting).into_iter().map(|n| n.id).collect()
}

/// The CPU (1e-9 CPUs) and memory (bytes) the containers of `node` reserve.
fn reserved(s: &ClusterState, node: NodeId) -> (i64, i64) {
    s.containers
        .values()
        .filter(|c| c.node == node)
        .fold((0, 0), |(cpu, mem), c| {
            let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
            let get = |k: &str| hc.get(k).and_then(Value::as_i64).unwrap_or(0).max(0);
            (cpu + get("NanoCpus"), mem + get("Memory"))
        })
}

/// Whether `n` has `req`'s CPU and memory unreserved; a node that reported no CPUs or no
/// memory is not limited on that resource.
fn fits(s: &ClusterState, n: &NodeRecord, req: &PlacementRequest) -> (bool, bool) {
    let (cpu, mem) = reserved(s, n.id);
    let cpu_cap = i64::from(n.description.cpus).saturating_mul(1_000_000_000);
    let mem_cap = i64::try_from(n.description.memory).unwrap_or(i64::MAX);
    let cpu_ok = req.nano_cpus <= 0 || cpu_cap == 0 || cpu + req.nano_cpus <= cpu_cap;
    let mem_ok = req.memory <= 0 || mem_cap == 0 || mem + req.memory <= mem_cap;
    (cpu_ok, mem_ok)
}

/// Choose the node for a new container (pure, deterministic): filter the nodes that
/// accept placements, then take the one with the fewest containers (ties: lowest ID).
/// The first filter that leaves no node gives the error.
pub fn place(s: &ClusterState, req: &PlacementRequest) -> Result<Placement, PlacementError> {
    let mut cands: Vec<&NodeRecord> = s
        .nodes
        .values()
        .filter(|n| n.accepts_placements())
        .collect();
    if cands.is_empty() {
        return Err(PlacementError::NoReadyAgent);
    }
    for c in &req.constraints {
        cands.retain(|n| c.matches(n));
        if cands.is_empty() {
            return Err(PlacementError::Unmet(c.text.clone()));
        }
    }
    let pinned: BTreeSet<NodeId> = req.pins.iter().map(|p| p.node).collect();
    if pinned.len() > 1 {
        let what: Vec<&str> = req.pins.iter().map(|p| p.what.as_str()).collect();
        return Err(PlacementError::PinsDisagree(what.join(", ")));
    }
    if let Some(p) = req.pins.first() {
        cands.retain(|n| n.id == p.node);
        if cands.is_empty() {
            return Err(PlacementError::Pinned {
                what: p.what.clone(),
                node: name_of(s, p.node),
            });
        }
    }
    if let Some(name) = &req.network {
        let with: BTreeSet<NodeId> = s
            .networks
            .values()
            .filter(|n| &n.name == name)
            .map(|n| n.node)
            .collect();
        // A network that exists nowhere is the start's 404, as Docker's.
        if !with.is_empty() {
            cands.retain(|n| with.contains(&n.id));
            if cands.is_empty() {
                return Err(PlacementError::Network {
                    name: name.clone(),
                    nodes: names(s, with),
                });
            }
        }
    }
    if let Some((id, reference)) = &req.image {
        let holders = s.nodes_with_image(id);
        cands.retain(|n| holders.contains(&n.id));
        if cands.is_empty() {
            return Err(PlacementError::ImageElsewhere {
                image: reference.clone(),
                holders: names(s, holders),
            });
        }
    }
    let fit: Vec<(bool, bool)> = cands.iter().map(|n| fits(s, n, req)).collect();
    if !fit.iter().any(|(c, m)| *c && *m) {
        // Short of one resource everywhere, or of one or the other on each node.
        let what = match (fit.iter().any(|f| f.0), fit.iter().any(|f| f.1)) {
            (false, true) => "CPU",
            (true, false) => "memory",
            _ => "CPU and memory",
        };
        let asked = format!(
            "{what} (asked: {} CPUs, {} bytes of memory)",
            req.nano_cpus as f64 / 1e9,
            req.memory
        );
        return Err(PlacementError::Resources(asked));
    }
    let mut i = 0;
    cands.retain(|_| {
        i += 1;
        fit[i - 1].0 && fit[i - 1].1
    });
    // Host ports are a preference: with none free anywhere the container is still
    // created, and its start reports Docker's "port is already allocated".
    let free: Vec<&NodeRecord> = cands
        .iter()
        .copied()
        .filter(|n| {
            let used = ports_in_use(s.endpoints.values().flatten(), n.id);
            !req.host_ports.iter().any(|m| port_taken(&used, m))
        })
        .collect();
    if !free.is_empty() {
        cands = free;
    }
    let count = cands.len();
    let best = ranked(s, cands)[0];
    let mut reason = format!(
        "spread: {} container(s) on {}, fewest of {count} candidate node(s)",
        load(s, best.id),
        name_of(s, best.id)
    );
    for c in &req.constraints {
        reason.push_str(&format!("; constraint {}", c.text));
    }
    if let Some(p) = req.pins.first() {
        reason.push_str(&format!("; with {}", p.what));
    }
    Ok(Placement {
        node: best.id,
        reason,
    })
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What placement needs from a create body (pure); `constraint:` entries are taken out
/// of its `Env`. Anything else malformed is left to the create planner.
pub fn request_from_create(
    s: &ClusterState,
    body: &mut Value,
) -> Result<PlacementRequest, PlacementError> {
    let mut req = PlacementRequest::default();
    if let Some(env) = body.get_mut("Env").and_then(Value::as_array_mut) {
        let mut kept = vec![];
        for e in env.drain(..) {
            match e.as_str().and_then(|t| t.strip_prefix(ENV_PREFIX)) {
                Some(c) => req.constraints.push(Constraint::parse(c)?),
                None => kept.push(e),
            }
        }
        *env = kept;
    }
    if let Some(text) = body
        .get("Labels")
        .and_then(|l| l.get(CONSTRAINT_LABEL))
        .and_then(Value::as_str)
    {
        for c in text.split(',').filter(|c| !c.trim().is_empty()) {
            let c = c.trim();
            req.constraints
                .push(Constraint::parse(c.strip_prefix(ENV_PREFIX).unwrap_or(c))?);
        }
    }
    if let Some(image) = body.get("Image").and_then(Value::as_str) {
        req.image = find_image(s, image).map(|id| (id, image.to_string()));
    }
    let hc = body.get("HostConfig").cloned().unwrap_or(Value::Null);
    req.nano_cpus = hc.get("NanoCpus").and_then(Value::as_i64).unwrap_or(0);
    req.memory = hc.get("Memory").and_then(Value::as_i64).unwrap_or(0);
    if let Some(b) = hc.get("PortBindings").and_then(Value::as_object) {
        for (key, list) in b {
            for e in list.as_array().into_iter().flatten() {
                let ip = e.get("HostIp").and_then(Value::as_str).unwrap_or("");
                let port = e.get("HostPort").and_then(Value::as_str).unwrap_or("");
                if let Ok(r) = parse_binding(key, ip, port) {
                    if r.host_port != 0 {
                        req.host_ports.push(PortMapping {
                            proto: r.proto,
                            container_port: r.container_port,
                            host_ip: r.host_ip,
                            host_port: r.host_port,
                        });
                    }
                }
            }
        }
    }
    let mut volumes: Vec<String> = str_list(hc.get("Binds"))
        .iter()
        .filter_map(|b| b.split(':').next().map(str::to_string))
        .filter(|src| !src.is_empty() && !src.starts_with('/'))
        .collect();
    for m in hc
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("Type").and_then(Value::as_str) == Some("volume") {
            if let Some(src) = m.get("Source").and_then(Value::as_str) {
                volumes.push(src.to_string());
            }
        }
    }
    for v in volumes {
        if let Some(rec) = s.volumes.get(&v) {
            req.pins.push(Pin {
                what: format!("volume {v}"),
                node: rec.node,
            });
        }
    }
    let mut containers: Vec<(&str, String)> = vec![];
    let mode = hc.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
    match mode {
        "" | "default" | "bridge" | "host" | "none" => {}
        m => match m.strip_prefix("container:") {
            Some(c) => containers.push(("--network container:", c.to_string())),
            None => req.network = Some(m.to_string()),
        },
    }
    for f in str_list(hc.get("VolumesFrom")) {
        let c = f.split(':').next().unwrap_or("").to_string();
        containers.push(("--volumes-from ", c));
    }
    for (how, reference) in containers {
        if let Some(c) = find_container(s, &reference).and_then(|id| s.containers.get(&id)) {
            req.pins.push(Pin {
                what: format!("{how}{reference}"),
                node: c.node,
            });
        }
    }
    Ok(req)
}

/// Place a `docker create` named `name` (pure): the planner's first checks and the
/// image's existence (Docker's 400s and 404) come before any placement error, then
/// [`place`]; the body comes back without its `constraint:` environment entries and
/// with the reason as its [`PLACEMENT_LABEL`].
pub fn place_create(
    s: &ClusterState,
    name: Option<&str>,
    body: &[u8],
) -> Result<(Placement, Vec<u8>), EngineError> {
    let (mut raw, config, _) = super::plan::parse_create(body, name)?;
    image_record(s, &config.image)?;
    let req = request_from_create(s, &mut raw)?;
    let placed = place(s, &req)?;
    label_placement(&mut raw, &placed.reason);
    let body = serde_json::to_vec(&raw)
        .map_err(|e| EngineError::internal(format!("encode the create request: {e}")))?;
    Ok((placed, body))
}

/// Record why the container was placed where it is, as its [`PLACEMENT_LABEL`].
pub fn label_placement(body: &mut Value, reason: &str) {
    let Some(o) = body.as_object_mut() else {
        return;
    };
    let labels = o
        .entry("Labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    if let Some(l) = labels.as_object_mut() {
        l.insert(PLACEMENT_LABEL.into(), Value::String(reason.to_string()));
    }
}

#[cfg(test)]
#[path = "placement_test.rs"]
mod tests;
