//! Where layers are: which node holds which layer (by DiffID), as the agents report it.
//! Pure, like the rest of `apply`; what scheduling by layer locality and peer transfer
//! read.

use crate::agent::host::LayerInventory;
use crate::ids::{ChainId, DiffId, ImageId, NodeId};
use crate::state::{ClusterState, Command, ImageRecord, Response};
use std::collections::{BTreeMap, BTreeSet};

/// Apply the layer command; other commands are left to `ClusterState::apply`.
pub(crate) fn apply(s: &mut ClusterState, cmd: &Command) -> Response {
    if let Command::LayerInventory { node, layers } = cmd {
        let held: BTreeSet<&DiffId> = layers.iter().collect();
        s.layers.retain(|d, nodes| {
            if !held.contains(d) {
                nodes.remove(node);
            }
            !nodes.is_empty()
        });
        for d in held {
            s.layers.entry(*d).or_default().insert(*node);
        }
    }
    Ok(())
}

/// The layers, by DiffID, that an agent's `inventory` shows its node holds: its kept
/// tars, and the DiffID of every unpacked chain that some image of `s` names.
pub fn held_diff_ids(s: &ClusterState, inventory: &LayerInventory) -> BTreeSet<DiffId> {
    let mut held: BTreeSet<DiffId> = inventory.tars.clone();
    for image in s.images.values() {
        for (d, c) in image.diff_ids.iter().zip(ChainId::chain(&image.diff_ids)) {
            if inventory.chains.contains(&c) {
                held.insert(*d);
            }
        }
    }
    held
}

/// The command that brings the record of `node`'s layers in line with its agent's
/// `inventory`; `None` when it already is (the reconcile of the controller's loop).
pub fn inventory_command(
    s: &ClusterState,
    node: NodeId,
    inventory: &LayerInventory,
) -> Option<Command> {
    let held = held_diff_ids(s, inventory);
    let recorded: BTreeSet<DiffId> = s
        .layers
        .iter()
        .filter(|(_, nodes)| nodes.contains(&node))
        .map(|(d, _)| *d)
        .collect();
    (held != recorded).then(|| Command::LayerInventory {
        node,
        layers: held.into_iter().collect(),
    })
}

impl ClusterState {
    /// The nodes that hold layer `diff_id`.
    pub fn layer_nodes(&self, diff_id: &DiffId) -> BTreeSet<NodeId> {
        self.layers.get(diff_id).cloned().unwrap_or_default()
    }

    /// How many of `image`'s layers each node holds (nodes holding none are absent).
    pub fn image_presence(&self, image: &ImageRecord) -> BTreeMap<NodeId, usize> {
        let mut out = BTreeMap::new();
        let distinct: BTreeSet<&DiffId> = image.diff_ids.iter().collect();
        for d in distinct {
            for n in self.layer_nodes(d) {
                *out.entry(n).or_insert(0) += 1;
            }
        }
        out
    }

    /// The nodes that hold every layer of image `id` (none for an unknown image).
    pub fn nodes_with_image(&self, id: &ImageId) -> BTreeSet<NodeId> {
        let Some(image) = self.images.get(id) else {
            return BTreeSet::new();
        };
        let distinct: BTreeSet<&DiffId> = image.diff_ids.iter().collect();
        self.image_presence(image)
            .into_iter()
            .filter(|(_, held)| *held == distinct.len())
            .map(|(n, _)| n)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Digest;

    fn d(n: u8) -> DiffId {
        DiffId(Digest::of(&[n]))
    }

    fn image(layers: &[u8]) -> ImageRecord {
        ImageRecord {
            id: ImageId(Digest::of(layers)),
            config: vec![],
            diff_ids: layers.iter().map(|n| d(*n)).collect(),
            size: 0,
            loaded_ns: 0,
        }
    }

    #[test]
    fn an_inventory_replaces_what_a_node_held_and_leaves_other_nodes_alone() {
        let mut s = ClusterState::default();
        s.apply(&Command::LayerInventory {
            node: NodeId(1),
            layers: vec![d(1), d(2)],
        })
        .unwrap();
        s.apply(&Command::LayerInventory {
            node: NodeId(2),
            layers: vec![d(2), d(3)],
        })
        .unwrap();
        s.apply(&Command::LayerInventory {
            node: NodeId(1),
            layers: vec![d(3)],
        })
        .unwrap();
        assert_eq!(s.layer_nodes(&d(1)), BTreeSet::new());
        assert_eq!(s.layer_nodes(&d(2)), BTreeSet::from([NodeId(2)]));
        assert_eq!(s.layer_nodes(&d(3)), BTreeSet::from([NodeId(1), NodeId(2)]));
        assert!(!s.layers.contains_key(&d(1)), "no empty entries are kept");
    }

    #[test]
    fn an_inventory_names_chains_by_the_diff_ids_of_known_images_and_reconciles_once() {
        let mut s = ClusterState::default();
        let img = image(&[1, 2]);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        let chains = ChainId::chain(&img.diff_ids);
        let inv = LayerInventory {
            // Only the lower layer unpacked, plus a kept tar of a layer no image names.
            chains: BTreeSet::from([chains[0]]),
            tars: BTreeSet::from([d(7)]),
        };
        assert_eq!(held_diff_ids(&s, &inv), BTreeSet::from([d(1), d(7)]));
        let cmd = inventory_command(&s, NodeId(4), &inv).expect("a change to record");
        s.apply(&cmd).unwrap();
        assert_eq!(s.layer_nodes(&d(1)), BTreeSet::from([NodeId(4)]));
        assert_eq!(
            inventory_command(&s, NodeId(4), &inv),
            None,
            "nothing more to do"
        );
        // A chain of another image's layers is not the same layer at another DiffID.
        let other = LayerInventory {
            chains: BTreeSet::from([chains[1]]),
            tars: BTreeSet::new(),
        };
        assert_eq!(held_diff_ids(&s, &other), BTreeSet::from([d(2)]));
    }

    #[test]
    fn an_image_is_on_the_nodes_that_hold_all_of_its_layers() {
        let mut s = ClusterState::default();
        // A layer repeated in an image counts once.
        let img = image(&[1, 2, 1]);
        s.apply(&Command::PutImage { image: img.clone() }).unwrap();
        s.apply(&Command::LayerInventory {
            node: NodeId(1),
            layers: vec![d(1), d(2)],
        })
        .unwrap();
        s.apply(&Command::LayerInventory {
            node: NodeId(2),
            layers: vec![d(1)],
        })
        .unwrap();
        assert_eq!(
            s.image_presence(&img),
            BTreeMap::from([(NodeId(1), 2), (NodeId(2), 1)])
        );
        assert_eq!(s.nodes_with_image(&img.id), BTreeSet::from([NodeId(1)]));
        assert!(s.nodes_with_image(&ImageId(Digest::of(b"none"))).is_empty());
    }
}
