//! The filters: which nodes can take a container, in classic Swarm's order, each hard
//! filter failing with the [`Unschedulable`] that names what no node met, then the soft
//! expressions and free host ports as preferences that never refuse a create.
//!
//! ```text
//!  nodes accepting placements ─► hard constraints/affinities (as written, in order)
//!    ─► pins (volume, container:X, --volumes-from) ─► network ─► image held
//!    ─► CPU/memory (capacity × overcommit)
//!    ─► soft constraints/affinities (each kept if some candidate meets it, else dropped)
//!    ─► free host ports (preferred) ─► Filtered { candidates, notes }
//! ```
//!
//! Candidates stay in node ID order throughout (the state's order; every step keeps
//! order), which lets the layer count walk the candidates and a layer's holders together.

use super::expr::{Expr, Key, Op};
use super::view::{ClusterView, Usage};
use super::{Request, Settings, Unschedulable};
use crate::engine::{find_container, find_image};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use wharf_protocol::network::port_taken;
use wharf_protocol::node_state::NodeRecord;
use wharf_protocol::state::{ClusterState, ImageRecord};
use wharf_protocol::{DiffId, ImageId, NodeId};

/// A node that passed the hard filters, with the figures the ranking reads.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    /// The node.
    pub node: &'a NodeRecord,
    /// What its containers take.
    pub usage: Usage,
    /// How many distinct layers of the container's image it holds (0 without an image).
    pub layers: usize,
}

/// What is left after filtering, with what the reason should say of each step.
#[derive(Debug)]
pub struct Filtered<'a> {
    /// The nodes that can take the container, by ID.
    pub candidates: Vec<Candidate<'a>>,
    /// The steps that shaped the choice, as the placement reason states them
    /// (`constraint node==a`, `soft affinity image==~x dropped: no candidate meets it`).
    pub notes: Vec<String>,
}

/// Whether node `n` meets constraint `e` (affinities are decided by [`holders`]).
fn node_meets(e: &Expr, n: &NodeRecord) -> bool {
    let ids = || {
        [
            n.id.to_string(),
            crate::cluster::identity::node_id_text(n.id),
        ]
    };
    let host = n.description.hostname.as_str();
    match &e.key {
        Key::Node => {
            let [dec, hex] = ids();
            e.meets([host, dec.as_str(), hex.as_str()].into_iter())
        }
        Key::NodeId => {
            let [dec, hex] = ids();
            e.meets([dec.as_str(), hex.as_str()].into_iter())
        }
        Key::NodeHostname => e.meets(std::iter::once(host)),
        Key::NodeRole => e.meets(std::iter::once(n.role.docker_name())),
        Key::NodeLabel(k) => e.meets(n.labels.get(k).map(String::as_str).into_iter()),
        Key::EngineLabel(k) => e.meets(
            n.description
                .engine_labels
                .get(k)
                .map(String::as_str)
                .into_iter(),
        ),
        Key::Container | Key::Image => false,
    }
}

/// The nodes holding something an affinity's value matches: a container (by name or
/// full ID; an exact value also as Docker resolves it, by unique ID prefix) or a whole
/// image (by `name:tag`, repository name, or ID; an exact value as `docker run` resolves
/// it). Computed once per expression, not per node.
fn holders(v: &ClusterView, e: &Expr) -> BTreeSet<NodeId> {
    let s = v.state;
    match e.key {
        Key::Container => {
            if let Some(exact) = e.value.exact() {
                return find_container(s, exact)
                    .and_then(|id| s.containers.get(&id))
                    .map(|c| c.node)
                    .into_iter()
                    .collect();
            }
            s.containers
                .values()
                .filter(|c| e.value.matches(c.name.as_str()) || e.value.matches(c.id.as_str()))
                .map(|c| c.node)
                .collect()
        }
        Key::Image => {
            let images: BTreeSet<ImageId> = match e.value.exact() {
                Some(exact) => find_image(s, exact).into_iter().collect(),
                None => {
                    let mut facts: BTreeMap<ImageId, Vec<&str>> = BTreeMap::new();
                    for (tag, id) in &s.tags {
                        let repo = tag.rsplit_once(':').map_or(tag.as_str(), |(r, _)| r);
                        facts.entry(*id).or_default().extend([tag.as_str(), repo]);
                    }
                    s.images
                        .keys()
                        .filter(|id| {
                            let hex = id.0.hex();
                            let full = format!("sha256:{hex}");
                            e.value.matches(&hex)
                                || e.value.matches(&full)
                                || facts
                                    .get(id)
                                    .is_some_and(|f| f.iter().any(|t| e.value.matches(t)))
                        })
                        .copied()
                        .collect()
                }
            };
            images.iter().flat_map(|i| s.nodes_with_image(i)).collect()
        }
        _ => BTreeSet::new(),
    }
}

/// The items of `items` whose node (`node_of`) meets `e`, in order.
fn meeting<T: Copy>(
    v: &ClusterView,
    e: &Expr,
    items: &[T],
    node_of: impl Fn(&T) -> &NodeRecord,
) -> Vec<T> {
    match e.key {
        Key::Container | Key::Image => {
            let with = holders(v, e);
            let want = e.op == Op::Eq;
            items
                .iter()
                .filter(|i| with.contains(&node_of(i).id) == want)
                .copied()
                .collect()
        }
        _ => items
            .iter()
            .filter(|i| node_meets(e, node_of(i)))
            .copied()
            .collect(),
    }
}

/// How many distinct layers of `image` each of `nodes` (in ID order) holds, in order.
/// Per layer, a merge walk of the candidates and the layer's holders (both in ID order),
/// or a binary search per holder when the holders are few: no map, no clone.
pub fn layers_held(s: &ClusterState, image: &ImageRecord, nodes: &[&NodeRecord]) -> Vec<usize> {
    let mut held = vec![0; nodes.len()];
    let distinct: BTreeSet<&DiffId> = image.diff_ids.iter().collect();
    for d in distinct {
        let Some(holders) = s.layers.get(d) else {
            continue;
        };
        if holders.len() < nodes.len() / 8 {
            for h in holders {
                if let Ok(i) = nodes.binary_search_by_key(h, |n| n.id) {
                    held[i] += 1;
                }
            }
            continue;
        }
        if nodes.len() < holders.len() / 8 {
            // A sample among a layer most nodes hold: look each node up.
            for (i, n) in nodes.iter().enumerate() {
                held[i] += usize::from(holders.contains(&n.id));
            }
            continue;
        }
        let mut h = holders.iter().peekable();
        for (i, n) in nodes.iter().enumerate() {
            while h.next_if(|x| **x < n.id).is_some() {}
            if h.peek() == Some(&&n.id) {
                held[i] += 1;
            }
        }
    }
    held
}

/// The capacity of a resource a node reported, times the overcommit ratio; `None` when
/// the node reported none (not limited on it).
fn capacity(reported: u128, overcommit: f64) -> Option<i128> {
    (reported > 0).then_some((reported as f64 * overcommit) as i128)
}

/// Whether candidate `c` has `req`'s CPU and memory unreserved (with `settings`'
/// overcommit).
pub fn fits(c: &Candidate, req: &Request, settings: &Settings) -> (bool, bool) {
    let (n, u) = (c.node, c.usage);
    let cpu_cap = capacity(
        u128::from(n.description.cpus) * 1_000_000_000,
        settings.overcommit,
    );
    let mem_cap = capacity(u128::from(n.description.memory), settings.overcommit);
    let ok = |asked: i64, used: i64, cap: Option<i128>| {
        asked <= 0 || cap.is_none_or(|c| i128::from(used) + i128::from(asked) <= c)
    };
    (
        ok(req.nano_cpus, u.nano_cpus, cpu_cap),
        ok(req.memory, u.memory, mem_cap),
    )
}

/// Whether `req` may be placed among a sample of the nodes (pure): `spread` with a seed
/// and a sample size, and nothing that a sample could answer differently from the whole
/// fleet (constraints and affinities, hard or soft, pins, published ports).
pub fn may_sample(req: &Request, settings: &Settings) -> bool {
    settings.strategy == super::Strategy::Spread
        && settings.tie_seed != 0
        && settings.sample > 0
        && req.exprs.is_empty()
        && req.pins.is_empty()
        && req.host_ports.is_empty()
}

/// `k` distinct positions among `n` (more than `k`) drawn with `seed`, ascending (pure):
/// a partial Fisher-Yates shuffle on splitmix64 that holds only the `k` or so positions it
/// moved (O(k), not O(n): the whole fleet is not gone over for each placement).
pub fn drawn_positions(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        super::rank::mix(state)
    };
    // Position → what the shuffle put there, for the positions it touched.
    let mut moved: HashMap<usize, usize> = HashMap::with_capacity(2 * k);
    let mut chosen = Vec::with_capacity(k);
    for i in 0..k {
        let j = i + (next() % (n - i) as u64) as usize;
        let at_j = moved.get(&j).copied().unwrap_or(j);
        let at_i = moved.get(&i).copied().unwrap_or(i);
        moved.insert(j, at_i);
        chosen.push(at_j);
    }
    chosen.sort_unstable();
    chosen
}

/// Filter the nodes of `v` for `req` (pure): the candidates by node ID, or the first
/// hard filter that left none. With [`may_sample`], among [`Settings::sample`] of them
/// drawn with the seed ([`drawn_positions`] over the placeable nodes not avoided) first,
/// and among every node when none of the sample can take it.
pub fn filter<'a>(
    v: &ClusterView<'a>,
    req: &Request,
    settings: &Settings,
) -> Result<Filtered<'a>, Unschedulable> {
    if may_sample(req, settings) {
        // The placeable nodes not avoided: the listing below, without going over every
        // node when nothing is avoided.
        let placeable = v.state.placeable_nodes();
        let ids: std::borrow::Cow<[NodeId]> = if req.avoid.is_empty() {
            placeable.into()
        } else {
            placeable
                .iter()
                .filter(|id| !req.avoid.contains(id))
                .copied()
                .collect::<Vec<_>>()
                .into()
        };
        if ids.len() > settings.sample {
            let drawn = drawn_positions(ids.len(), settings.sample, settings.tie_seed)
                .into_iter()
                .filter_map(|i| v.state.nodes.get(&ids[i]))
                .collect();
            if let Ok(mut f) = filter_among(v, req, settings, drawn) {
                f.notes.push(format!(
                    "among {} nodes drawn of {}",
                    settings.sample,
                    ids.len()
                ));
                return Ok(f);
            }
        }
    }
    let cands: Vec<&NodeRecord> = v
        .state
        .nodes
        .values()
        .filter(|n| n.accepts_placements() && !req.avoid.contains(&n.id))
        .collect();
    if cands.is_empty() {
        return Err(Unschedulable::NoReadyAgent);
    }
    filter_among(v, req, settings, cands)
}

/// [`filter`] over `cands` (not empty, in ID order).
fn filter_among<'a>(
    v: &ClusterView<'a>,
    req: &Request,
    settings: &Settings,
    mut cands: Vec<&'a NodeRecord>,
) -> Result<Filtered<'a>, Unschedulable> {
    let s = v.state;
    let mut notes = vec![];
    for e in req.exprs.iter().filter(|e| !e.soft) {
        cands = meeting(v, e, &cands, |n| n);
        if cands.is_empty() {
            return Err(Unschedulable::Unmet(e.to_string()));
        }
        notes.push(e.to_string());
    }
    let pinned: BTreeSet<NodeId> = req.pins.iter().map(|p| p.node).collect();
    if pinned.len() > 1 {
        let what: Vec<&str> = req.pins.iter().map(|p| p.what.as_str()).collect();
        return Err(Unschedulable::PinsDisagree(what.join(", ")));
    }
    if let Some(p) = req.pins.first() {
        cands.retain(|n| n.id == p.node);
        if cands.is_empty() {
            return Err(Unschedulable::Pinned {
                what: p.what.clone(),
                node: v.name(p.node),
            });
        }
        notes.push(format!("with {}", p.what));
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
                return Err(Unschedulable::Network {
                    name: name.clone(),
                    nodes: v.names(with),
                });
            }
        }
    }
    let image = req.image.as_ref();
    let record = image.and_then(|i| s.images.get(&i.id));
    let held = match record {
        Some(r) => layers_held(s, r, &cands),
        None => vec![0; cands.len()],
    };
    let mut cands: Vec<Candidate> = cands
        .into_iter()
        .zip(held)
        .map(|(node, layers)| Candidate {
            node,
            usage: v.usage(node.id),
            layers,
        })
        .collect();
    if let (Some(img), Some(r)) = (image.filter(|i| i.must_hold), record) {
        let total = r.diff_ids.iter().collect::<BTreeSet<_>>().len();
        cands.retain(|c| c.layers == total);
        if cands.is_empty() {
            return Err(Unschedulable::ImageElsewhere {
                image: img.reference.clone(),
                holders: v.names(s.nodes_with_image(&img.id)),
            });
        }
    }
    let fit: Vec<(bool, bool)> = cands.iter().map(|c| fits(c, req, settings)).collect();
    if !fit.iter().any(|(c, m)| *c && *m) {
        // Short of one resource everywhere, or of one or the other on each node.
        let what = match (fit.iter().any(|f| f.0), fit.iter().any(|f| f.1)) {
            (false, true) => "CPU",
            (true, false) => "memory",
            _ => "CPU and memory",
        };
        return Err(Unschedulable::Resources(format!(
            "{what} (asked: {} CPUs, {} bytes of memory; overcommit {})",
            req.nano_cpus as f64 / 1e9,
            req.memory,
            settings.overcommit
        )));
    }
    let mut fit = fit.into_iter();
    cands.retain(|_| fit.next().is_some_and(|(c, m)| c && m));
    for e in req.exprs.iter().filter(|e| e.soft) {
        let kept = meeting(v, e, &cands, |c| c.node);
        if kept.is_empty() {
            notes.push(format!("{e} dropped: no candidate meets it"));
        } else {
            cands = kept;
            notes.push(e.to_string());
        }
    }
    // Host ports are a preference: with none free anywhere the container is still
    // created, and its start reports Docker's "port is already allocated".
    if !req.host_ports.is_empty() {
        let free: Vec<Candidate> = cands
            .iter()
            .copied()
            .filter(|c| {
                !req.host_ports
                    .iter()
                    .any(|m| port_taken(v.ports(c.node.id), m))
            })
            .collect();
        if free.is_empty() {
            notes.push("host port taken on every candidate".into());
        } else {
            cands = free;
        }
    }
    Ok(Filtered {
        candidates: cands,
        notes,
    })
}
