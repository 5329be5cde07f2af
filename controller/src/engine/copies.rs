//! Image copies: an image that enters the cluster (load, import, commit, build) is put on
//! the cluster's layer copy count of Ready agents (`--min-layer-copies`, 2 by default;
//! fewer when fewer run containers) before the request is answered, so that losing one
//! host never loses an image. Until peer transfer lands the copy goes through this
//! controller: a save on a node that holds it, streamed into a load on the next.
//!
//! ```text
//!  image made on A ──► copy_plan(state, ids, want) ──► [B, …] (pure)
//!                      for each: save on A ──stream──► load on B ──► B's layers recorded
//! ```

use super::placement::image_targets;
use super::{Engine, EngineError};
use std::collections::BTreeSet;
use tracing::{info, warn};
use wharf_protocol::image::SaveImage;
use wharf_protocol::state::ClusterState;
use wharf_protocol::{ImageId, NodeId};

/// The copy count of a cluster unless configured (`--min-layer-copies`).
pub const DEFAULT_MIN_COPIES: usize = 2;

/// Where images `ids` must be copied so that `want` nodes that take placements hold them
/// all: the source (a node holding them all) and the targets, in placement order; `None`
/// when nothing is to do or no node holds them all (pure).
pub fn copy_plan(s: &ClusterState, ids: &[ImageId], want: usize) -> Option<(NodeId, Vec<NodeId>)> {
    let ranked = image_targets(s);
    let holds_all = |n: &NodeId| ids.iter().all(|id| s.nodes_with_image(id).contains(n));
    let holders: BTreeSet<NodeId> = ranked.iter().copied().filter(holds_all).collect();
    let source = *holders.iter().next()?;
    let missing = want.min(ranked.len()).saturating_sub(holders.len());
    let targets: Vec<NodeId> = ranked
        .into_iter()
        .filter(|n| !holders.contains(n))
        .take(missing)
        .collect();
    (!targets.is_empty()).then_some((source, targets))
}

impl Engine {
    /// Put images `ids` (just recorded) on the cluster's copy count of nodes. A copy that
    /// fails is logged: the image stays on the nodes that hold it.
    pub async fn ensure_copies(&self, ids: &[ImageId]) {
        let want = self.min_copies();
        let Some((source, targets)) = self.store.read(|s| copy_plan(s, ids, want)) else {
            return;
        };
        let images: Vec<SaveImage> = self.store.read(|s| {
            ids.iter()
                .filter_map(|id| s.images.get(id))
                .map(|i| SaveImage {
                    config: i.config.clone(),
                    diff_ids: i.diff_ids.clone(),
                    repo_tags: vec![],
                })
                .collect()
        });
        for target in targets {
            match self.copy_images(source, target, images.clone()).await {
                Ok(()) => info!(from = %source, to = %target, images = ids.len(), "image copied"),
                Err(e) => {
                    warn!(from = %source, to = %target, error = %e.message, "image not copied; it stays on fewer nodes")
                }
            }
        }
    }

    async fn copy_images(
        &self,
        from: NodeId,
        to: NodeId,
        images: Vec<SaveImage>,
    ) -> Result<(), EngineError> {
        let stream = self.agents.save_images(&from, images).await?;
        let (_, lease) = self.agents.load_images(&to, stream).await?;
        self.sync_layers(to).await;
        lease.release().await;
        Ok(())
    }

    /// The cluster's layer copy count.
    pub fn min_copies(&self) -> usize {
        self.min_copies.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set the cluster's layer copy count (`--min-layer-copies`, at least 1).
    pub fn set_min_copies(&self, n: usize) {
        self.min_copies
            .store(n.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// Set the heartbeat grace the controller marks nodes Down after (settings are
    /// checked against it: an agent's lease must be shorter).
    pub fn set_heartbeat_grace(&self, grace: std::time::Duration) {
        self.grace_ms.store(
            u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The heartbeat grace, in milliseconds.
    pub fn heartbeat_grace_ms(&self) -> u64 {
        self.grace_ms.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Set the heartbeat period in force (stretched for the fleet), which `docker info`
    /// shows as the swarm dispatcher's `HeartbeatPeriod`.
    pub fn set_heartbeat_period(&self, period: std::time::Duration) {
        self.period_ns.store(
            u64::try_from(period.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// The heartbeat period in force, in nanoseconds (1 s until a controller sets it).
    pub fn heartbeat_period_ns(&self) -> u64 {
        self.period_ns.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::node_state::{NodeDescription, NodeRole, NodeState};
    use wharf_protocol::state::{Command, ImageRecord};
    use wharf_protocol::{DiffId, Digest};

    fn cluster(agents: u64) -> (ClusterState, ImageId) {
        let mut s = ClusterState::default();
        for id in 1..=agents {
            s.apply(&Command::RegisterNode {
                id: NodeId(id),
                role: NodeRole::Agent,
                description: NodeDescription {
                    hostname: format!("node-{id}"),
                    runs_containers: true,
                    ..Default::default()
                },
                at_ns: 0,
            })
            .unwrap();
            s.apply(&Command::SetNodeState {
                id: NodeId(id),
                state: NodeState::Ready,
                at_ns: 0,
            })
            .unwrap();
        }
        let diff = DiffId(Digest::of(b"layer"));
        let image = ImageRecord {
            id: ImageId(Digest::of(b"config")),
            config: b"{}".to_vec(),
            diff_ids: vec![diff],
            size: 1,
            loaded_ns: 0,
        };
        let id = image.id;
        s.apply(&Command::PutImage { image }).unwrap();
        (s, id)
    }

    fn hold(s: &mut ClusterState, node: u64) {
        let layers: Vec<DiffId> = s.images.values().flat_map(|i| i.diff_ids.clone()).collect();
        s.apply(&Command::LayerInventory {
            node: NodeId(node),
            layers,
        })
        .unwrap();
    }

    #[test]
    fn an_image_on_one_node_is_copied_to_one_more() {
        let (mut s, id) = cluster(3);
        hold(&mut s, 2);
        let (source, targets) = copy_plan(&s, &[id], 2).unwrap();
        assert_eq!(source, NodeId(2));
        assert_eq!(targets.len(), 1);
        assert_ne!(targets[0], NodeId(2));
        hold(&mut s, targets[0].0);
        assert_eq!(copy_plan(&s, &[id], 2), None, "two copies: done");
        assert_eq!(copy_plan(&s, &[id], 3).unwrap().1.len(), 1);
    }

    #[test]
    fn a_small_cluster_needs_fewer_copies_and_no_holder_means_nothing_to_copy() {
        let (mut s, id) = cluster(1);
        assert_eq!(copy_plan(&s, &[id], 2), None, "no node holds it");
        hold(&mut s, 1);
        assert_eq!(copy_plan(&s, &[id], 2), None, "one node: one copy");
        let (mut s, id) = cluster(2);
        hold(&mut s, 1);
        s.apply(&Command::SetNodeState {
            id: NodeId(2),
            state: NodeState::Down,
            at_ns: 1,
        })
        .unwrap();
        assert_eq!(copy_plan(&s, &[id], 2), None, "a Down node takes no copy");
    }
}
