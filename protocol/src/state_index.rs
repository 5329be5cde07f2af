//! Lookups derived from the [`ClusterState`] that would otherwise scan every container:
//! the container holding a name, each node's containers, and what they reserve. Placement,
//! generated names, name lookups and the name checks of `apply` read them once per
//! create; at 100,000 containers a scan per read made every create O(containers).
//!
//! ```text
//!  ClusterState.containers ──(built on first read)──► StateIndex
//!        ▲ apply: create / reschedule / rename / remove ──► index updated in place
//! ```
//!
//! The index is a cache, never stored or sent: it is built from the containers the first
//! time it is read (a state decoded from a snapshot or the records starts without one),
//! and `apply` keeps a built one up to date. Two states compare equal whatever their
//! caches hold.

use crate::ids::{ContainerId, ContainerName};
use crate::state::{ClusterState, ContainerRecord};
use crate::NodeId;
use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;

/// What a node's containers reserve, as placement counts it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Containers recorded on the node, in any status (classic Swarm counted them all:
    /// a stopped container may start again).
    pub containers: u32,
    /// CPU its containers reserve (`--cpus`), in 1e-9 CPUs.
    pub nano_cpus: i64,
    /// Memory its containers reserve (`--memory`), bytes.
    pub memory: i64,
}

/// The derived lookups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateIndex {
    /// Containers indexed (to catch a state changed outside `apply`).
    count: usize,
    names: HashMap<ContainerName, ContainerId>,
    usage: HashMap<NodeId, Usage>,
    on_node: HashMap<NodeId, BTreeSet<ContainerId>>,
}

impl StateIndex {
    /// The index of `containers`, from scratch (pure; one pass).
    pub fn build<'a>(containers: impl IntoIterator<Item = &'a ContainerRecord>) -> StateIndex {
        let mut ix = StateIndex::default();
        for c in containers {
            ix.added(c);
        }
        ix
    }

    /// The container named `name`, if any.
    pub fn holder(&self, name: &str) -> Option<&ContainerId> {
        // ContainerName is a validated String; the map is keyed by it, so look it up
        // through a borrowed str (Borrow<str> is implemented for ContainerName).
        self.names.get(name)
    }

    /// The containers recorded on `node`, by ID.
    pub fn on_node(&self, node: NodeId) -> impl Iterator<Item = &ContainerId> + '_ {
        self.on_node.get(&node).into_iter().flatten()
    }

    /// What `node`'s containers reserve (zeros for a node with none).
    pub fn usage(&self, node: NodeId) -> Usage {
        self.usage.get(&node).copied().unwrap_or_default()
    }

    pub(crate) fn added(&mut self, c: &ContainerRecord) {
        self.count += 1;
        self.names.insert(c.name.clone(), c.id.clone());
        self.on_node.entry(c.node).or_default().insert(c.id.clone());
        let r = &c.run.host.resources;
        let u = self.usage.entry(c.node).or_default();
        u.containers = u.containers.saturating_add(1);
        u.nano_cpus = u.nano_cpus.saturating_add(r.nano_cpus.max(0));
        u.memory = u.memory.saturating_add(r.memory.max(0));
    }

    pub(crate) fn removed(&mut self, c: &ContainerRecord) {
        self.count = self.count.saturating_sub(1);
        if self.names.get(&c.name) == Some(&c.id) {
            self.names.remove(&c.name);
        }
        if let Some(ids) = self.on_node.get_mut(&c.node) {
            ids.remove(&c.id);
            if ids.is_empty() {
                self.on_node.remove(&c.node);
            }
        }
        let r = &c.run.host.resources;
        if let Some(u) = self.usage.get_mut(&c.node) {
            u.containers = u.containers.saturating_sub(1);
            u.nano_cpus = u.nano_cpus.saturating_sub(r.nano_cpus.max(0));
            u.memory = u.memory.saturating_sub(r.memory.max(0));
            if u.containers == 0 {
                self.usage.remove(&c.node);
            }
        }
    }

    pub(crate) fn renamed(&mut self, id: &ContainerId, old: &ContainerName, new: &ContainerName) {
        if self.names.get(old) == Some(id) {
            self.names.remove(old);
        }
        self.names.insert(new.clone(), id.clone());
    }
}

/// The cache [`ClusterState`] keeps its [`StateIndex`] in, and the IDs of the nodes that
/// accept placements (the scheduler draws its sample from them without going over every
/// node): not serialized, equal to any other, built on first read. The node list is
/// forgotten by every node command ([`IndexCache::reset_nodes`]).
#[derive(Clone, Default)]
pub struct IndexCache(OnceLock<StateIndex>, OnceLock<Vec<NodeId>>);

impl IndexCache {
    /// The index of `s`, built now if it was not yet.
    pub(crate) fn get<'a>(&'a self, s: &ClusterState) -> &'a StateIndex {
        let ix = self
            .0
            .get_or_init(|| StateIndex::build(s.containers.values()));
        debug_assert_eq!(
            ix.count,
            s.containers.len(),
            "containers changed outside apply after the index was built: reset it"
        );
        ix
    }

    /// The built index to update in place; `None` when none was built (the next read
    /// builds it from the containers as they are then).
    pub(crate) fn built_mut(&mut self) -> Option<&mut StateIndex> {
        self.0.get_mut()
    }

    /// The nodes of `s` that accept placements, by ID, built now if they were not yet.
    pub(crate) fn placeable<'a>(&'a self, s: &ClusterState) -> &'a [NodeId] {
        let ids = self.1.get_or_init(|| placeable_nodes(s));
        debug_assert_eq!(
            *ids,
            placeable_nodes(s),
            "nodes changed outside apply after the list was built: reset it"
        );
        ids
    }

    /// Forget the built index and node list (after changes made outside `apply`).
    pub fn reset(&mut self) {
        self.0 = OnceLock::new();
        self.reset_nodes();
    }

    /// Forget the node list (a node was added, removed or changed).
    pub fn reset_nodes(&mut self) {
        self.1 = OnceLock::new();
    }
}

/// The IDs of the nodes of `s` that accept placements, in ID order (pure; one pass).
fn placeable_nodes(s: &ClusterState) -> Vec<NodeId> {
    s.nodes
        .values()
        .filter(|n| n.accepts_placements())
        .map(|n| n.id)
        .collect()
}

impl PartialEq for IndexCache {
    fn eq(&self, _: &IndexCache) -> bool {
        true
    }
}

impl Eq for IndexCache {}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() || self.1.get().is_some() {
            "IndexCache(built)"
        } else {
            "IndexCache(empty)"
        })
    }
}
