//! The scheduler: which node a new container goes to, and why. Pure and deterministic:
//! the same state, request and settings give the same node on every controller (no
//! clock, no randomness; ties go to the lowest node ID, or to the order a seed given in
//! the settings makes, [`Settings::tie_seed`]).
//!
//! ```text
//!  ClusterState ──► ClusterView (per-node counts, one pass)            view.rs
//!  Request ───────► filter: hard constraints/affinities, pins, network,
//!                           image, CPU/memory; soft ones; free ports    filter.rs
//!  Settings ──────► rank: spread | binpack, then layer locality, ID     rank.rs
//!                      └──► Placement { node, reason } | Unschedulable
//! ```
//!
//! Expressions are classic Swarm's ([`expr`]): `constraint:KEY==VALUE` / `!=` with keys
//! `node` (host name or ID), `node.id`, `node.hostname`, `node.role`, `node.labels.K`
//! (operator labels) and a plain `K` (the engine labels the node's daemon started with);
//! `affinity:container==NAME_OR_ID` / `!=` (nodes running, or not, a matching container)
//! and `affinity:image==NAME_OR_ID` / `!=` (nodes holding, or not, a matching image).
//! A VALUE is exact, a glob with `*`, or a `/regular expression/`. `==~` / `!=~` make
//! one soft: it is applied after every hard filter, and dropped (the reason says so)
//! when no remaining candidate meets it, one soft expression at a time, in order.
//!
//! Strategies ([`Strategy`], a cluster setting): `spread` (the default) takes the node
//! with the fewest containers, then the most free CPU and memory; `binpack` the node
//! that would be the fullest (CPU and memory reserved, as shares of capacity ×
//! overcommit) and still fits, then the most containers. Layer locality sits between a
//! strategy's first and second criterion: among nodes the strategy rates equal on its
//! first criterion, the one holding more of the image's layers wins (layer sizes are
//! not recorded, so layers are counted). It never overrides the strategy (spread does
//! not stack containers to save a transfer, binpack does not open an emptier node), and
//! it decides before the finer resource comparison, since a missing layer costs a copy
//! while a small difference in free resources costs nothing now. While the image must be
//! whole on the node (no peer transfer yet: [`ImageNeed::must_hold`]), every candidate
//! holds all its layers and locality only shows in the reason.
//!
//! Volume affinity: a named volume that exists pins the container to its node (a
//! [`Pin`]); one that does not exist yet is created where the container goes.
//!
//! Large fleets: with `spread` and a seed, a plain request (no expression, pin or
//! published port) is filtered and ranked among [`Settings::sample`] nodes drawn with the
//! seed, not every node (the engine draws [`SAMPLE`]); when none of them can take it,
//! among every node. Tested against the plain path over the same nodes.

pub mod expr;
pub mod filter;
pub mod rank;
pub mod view;

use super::error::{EngineError, ErrorKind};
use expr::{Expr, ExprError};
use wharf_protocol::network::PortMapping;
use wharf_protocol::state::ClusterState;
use wharf_protocol::{ImageId, NodeId};

pub use view::ClusterView;

pub use wharf_protocol::settings::Strategy;

/// The cluster's scheduling settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// How candidates are ranked.
    pub strategy: Strategy,
    /// How much CPU and memory may be reserved, as a multiple of what a node has: 1.0
    /// reserves no more than there is, 1.5 half as much again.
    pub overcommit: f64,
    /// How nodes the strategy rates equal are ordered, per placement: 0 takes the lowest
    /// node ID; another value orders them by a hash of the node ID and this seed. The
    /// engine draws one per create, so that concurrent creates, which see the same state,
    /// spread over the equal nodes instead of all taking the lowest ID.
    pub tie_seed: u64,
    /// With `spread`, a seed (`tie_seed` not 0) and more nodes accepting placements than
    /// this, a plain request (no constraint or affinity, no pin, no published port) is
    /// placed among this many of them, drawn with the seed ([`filter::drawn_positions`]),
    /// instead of scoring every node: the "power of d choices" (Nomad also limits the
    /// nodes it scores), so a placement costs the same over 10,000 nodes as over 16.
    /// When none of the sample can take the container, every node is filtered as
    /// without it. 0: always every node.
    pub sample: usize,
}

/// The engine's [`Settings::sample`]: 16 nodes per placement. Filtering a node costs a
/// few lookups in maps of the whole fleet (its record, usage, layers): at 64 the sample
/// was the scheduler's largest cost, and 16 places as evenly (the quality bench's sampled
/// row; Nomad scores about log2(N) nodes for the same reason).
pub const SAMPLE: usize = 16;

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            strategy: Strategy::Spread,
            overcommit: 1.0,
            tie_seed: 0,
            sample: 0,
        }
    }
}

impl Settings {
    /// Whether `ratio` is an overcommit ratio the scheduler can use: finite and above 0
    /// (below 1.0 keeps part of each node unreserved). What a command that sets it checks.
    pub fn valid_overcommit(ratio: f64) -> bool {
        ratio.is_finite() && ratio > 0.0
    }

    /// The settings the cluster `s` schedules with (`wharf cluster update`).
    pub fn of(s: &ClusterState) -> Settings {
        Settings {
            strategy: s.settings.strategy,
            overcommit: f64::from(s.settings.overcommit_milli) / 1000.0,
            tie_seed: 0,
            sample: 0,
        }
    }
}

/// Something that ties the container to the node of an existing object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// What, for messages (`volume data`, `--network container:web`).
    pub what: String,
    /// Its node.
    pub node: NodeId,
}

/// The image a container runs, as placement needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageNeed {
    /// Its ID.
    pub id: ImageId,
    /// The reference as the user wrote it, for messages.
    pub reference: String,
    /// Only nodes holding every layer qualify (true until peer transfer lets a node
    /// fetch missing layers; then locality alone prefers the holders).
    pub must_hold: bool,
}

/// What the scheduler needs to know of a new container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Nodes this controller cannot reach now (it carries the create out itself).
    pub avoid: std::collections::BTreeSet<NodeId>,
    /// Its image, when it exists (an unknown image is the create planner's 404).
    pub image: Option<ImageNeed>,
    /// `--cpus`, in 1e-9 CPUs (`HostConfig.NanoCpus`).
    pub nano_cpus: i64,
    /// `--memory`, bytes (`HostConfig.Memory`).
    pub memory: i64,
    /// Fixed host ports of `-p`.
    pub host_ports: Vec<PortMapping>,
    /// Its constraints and affinities, in the order written.
    pub exprs: Vec<Expr>,
    /// Objects whose node it must run on.
    pub pins: Vec<Pin>,
    /// A user network it joins by name (`--network NAME`).
    pub network: Option<String>,
}

/// Where a container goes, and why (recorded as its `com.wharf.placement` label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The node.
    pub node: NodeId,
    /// Why: the strategy and what decided, then the filters that shaped the choice
    /// (`spread: b, 0 containers, fewest of 3 candidates; holds 1/1 layers`).
    pub reason: String,
}

/// Why no node can take a container, or the request cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unschedulable {
    /// No node is Ready, active and running containers.
    #[error("no agent is ready to run containers")]
    NoReadyAgent,
    /// A constraint or affinity that is not an expression.
    #[error(transparent)]
    Malformed(#[from] ExprError),
    /// A `com.docker.swarm.constraints` / `.affinities` label that is not a JSON list of
    /// strings.
    #[error("invalid label {label}: expected a JSON list of strings, got {text}")]
    BadLabel {
        /// The label.
        label: String,
        /// Its value.
        text: String,
    },
    /// No candidate meets a hard constraint or affinity (`constraint node==a`).
    #[error("no node meets the {0}")]
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

/// Scheduling failures as the API shows them: 503 with no ready agent; 400 for what
/// cannot be read; 409 for what no node meets. Classic Swarm answered 500 to all, but
/// an unmet constraint is a conflict with the cluster's current state (adding a label
/// or a node makes the same request succeed), which is Docker's 409; and never 404,
/// which makes the CLI pull an image that exists.
impl From<Unschedulable> for EngineError {
    fn from(e: Unschedulable) -> EngineError {
        let kind = match e {
            Unschedulable::NoReadyAgent => ErrorKind::Unavailable,
            Unschedulable::Malformed(_) | Unschedulable::BadLabel { .. } => {
                ErrorKind::InvalidParameter
            }
            _ => ErrorKind::Conflict,
        };
        EngineError::new(kind, e.to_string())
    }
}

/// Choose the node for a new container (pure, deterministic): [`schedule_view`] over
/// a view of `s` built for this call.
pub fn schedule(
    s: &ClusterState,
    req: &Request,
    settings: &Settings,
) -> Result<Placement, Unschedulable> {
    schedule_view(&ClusterView::new(s), req, settings)
}

/// Choose the node for a new container over a prepared view: filter, rank, and the
/// reason; the first hard filter that leaves no node gives the error.
pub fn schedule_view(
    v: &ClusterView,
    req: &Request,
    settings: &Settings,
) -> Result<Placement, Unschedulable> {
    let filtered = filter::filter(v, req, settings)?;
    let image = req.image.as_ref().and_then(|i| v.state.images.get(&i.id));
    let (best, next) = rank::best_two(&filtered, req, settings);
    // The filter never returns an empty list; should it, it is a cluster without nodes.
    let best = best.ok_or(Unschedulable::NoReadyAgent)?;
    let mut reason = format!(
        "{}: {}, {}",
        settings.strategy.as_str(),
        v.name(best.node),
        rank::deciding_factor(v, settings, &best, next.as_ref(), filtered.candidates.len())
    );
    if let Some(i) = image {
        let total = i
            .diff_ids
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        reason.push_str(&format!("; holds {}/{total} layers", best.layers));
    }
    for n in &filtered.notes {
        reason.push_str("; ");
        reason.push_str(n);
    }
    Ok(Placement {
        node: best.node,
        reason,
    })
}

/// The nodes new images go to (`load`, `import`, `commit`, `build`), best first: those
/// accepting placements, fewest containers first, then node ID.
pub fn image_targets(s: &ClusterState) -> Vec<NodeId> {
    let v = ClusterView::new(s);
    let accepting = s
        .nodes
        .values()
        .filter(|n| n.accepts_placements())
        .collect();
    rank::by_load(&v, accepting)
        .into_iter()
        .map(|n| n.id)
        .collect()
}

#[cfg(test)]
mod filter_test;
#[cfg(test)]
mod rank_test;
#[cfg(test)]
mod schedule_test;
#[cfg(test)]
pub mod testkit;
