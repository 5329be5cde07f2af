//! Which entries of the [`ClusterState`] a command changes: what the Raft state machine
//! writes to disk after applying a log entry, instead of the whole state.
//!
//! ```text
//!   Command ──apply_entry_noting──> ClusterState (memory, changed)
//!                  │
//!                  └──> BTreeSet<StateKey> ──(controller)──> one record per key in RocksDB
//! ```
//!
//! [`ClusterState::apply_entry_noting`] applies a log entry exactly as
//! [`ClusterState::apply_entry`] does and notes, before each command of it, the keys that
//! command may change ([`touched`]). The set may hold keys whose entry did not change (a
//! refused command, a no-op): their record is written again as it is. It must never miss
//! one; the controller's round-trip test (`raft/records_test.rs`) proves that over every
//! command.

use std::collections::BTreeSet;

use crate::ids::{ContainerId, DiffId, ImageId, NodeId};
use crate::state::{ClusterState, Command, Response};

/// One entry of the [`ClusterState`]: a key of one of its maps or sets, or one of its
/// single values.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    /// `images[id]`.
    Image(ImageId),
    /// `tags[reference]`.
    Tag(String),
    /// `containers[id]`.
    Container(ContainerId),
    /// `volumes[name]`.
    Volume(String),
    /// `restarts[container]`.
    Restart(ContainerId),
    /// `networks[id]`.
    Network(String),
    /// `connections[container]`.
    Connection(ContainerId),
    /// `endpoints[container]`.
    Endpoint(ContainerId),
    /// `layers[diff_id]`.
    Layer(DiffId),
    /// `nodes[id]`.
    Node(NodeId),
    /// `revoked_nodes` contains `id`.
    RevokedNode(NodeId),
    /// `applied_keys`, as a whole (it is bounded and small).
    AppliedKeys,
    /// `settings`, as a whole.
    Settings,
    /// `pending[container]`.
    Pending(ContainerId),
}

impl ClusterState {
    /// Apply one log entry's command as [`ClusterState::apply_entry`] does, and add to
    /// `touched` every entry it may have changed; call from the state machine, which
    /// persists those entries.
    pub fn apply_entry_noting(
        &mut self,
        cmd: &Command,
        touched: &mut BTreeSet<StateKey>,
    ) -> Vec<Response> {
        match cmd {
            Command::Batch(cmds) => cmds.iter().map(|c| self.apply_noting(c, touched)).collect(),
            Command::Keyed { key, commands } => {
                if let Some(answers) = self.applied_keys.answers(key) {
                    return answers.to_vec();
                }
                let answers: Vec<Response> = commands
                    .iter()
                    .map(|c| self.apply_noting(c, touched))
                    .collect();
                self.applied_keys.record(*key, answers.clone());
                touched.insert(StateKey::AppliedKeys);
                answers
            }
            other => vec![self.apply_noting(other, touched)],
        }
    }

    /// [`ClusterState::apply`] of one command, noting what it may change.
    fn apply_noting(&mut self, cmd: &Command, touched: &mut BTreeSet<StateKey>) -> Response {
        match cmd {
            Command::Batch(_) | Command::Keyed { .. } => self
                .apply_entry_noting(cmd, touched)
                .into_iter()
                .find(Result::is_err)
                .unwrap_or(Ok(())),
            leaf => {
                touched.extend(touched_by(self, leaf));
                self.apply(leaf)
            }
        }
    }
}

/// The entries that applying `cmd` to `s` may change, judged on `s` as it is before.
/// Every command is named (no wildcard): a new one does not compile until it says what
/// it touches.
fn touched_by(s: &ClusterState, cmd: &Command) -> Vec<StateKey> {
    use StateKey as K;
    match cmd {
        // Groups are walked command by command by `apply_entry_noting`, each judged on the
        // state the ones before it left; as a whole, they may touch anything their
        // commands do, judged here on `s`.
        Command::Batch(cmds) | Command::Keyed { commands: cmds, .. } => {
            let mut keys: Vec<StateKey> = cmds.iter().flat_map(|c| touched_by(s, c)).collect();
            keys.push(K::AppliedKeys);
            keys
        }
        Command::PutImage { image } => vec![K::Image(image.id)],
        Command::Tag { reference, .. } | Command::Untag { reference } => {
            vec![K::Tag(reference.clone())]
        }
        Command::RemoveImage { image } | Command::RemoveImageForced { image } => {
            let mut keys = vec![K::Image(*image)];
            keys.extend(
                s.tags
                    .iter()
                    .filter(|(_, id)| *id == image)
                    .map(|(r, _)| K::Tag(r.clone())),
            );
            keys
        }
        Command::CreateContainer { container } => vec![K::Container(container.id.clone())],
        Command::ContainerStarted { id, .. }
        | Command::ContainerRunning { id, .. }
        | Command::PauseContainer { id, .. }
        | Command::RenameContainer { id, .. } => vec![K::Container(id.clone())],
        Command::ContainerExited { id, .. } => {
            vec![K::Container(id.clone()), K::Endpoint(id.clone())]
        }
        Command::RemoveContainer { id } => forgotten(id),
        Command::RescheduleContainer { old, container } => {
            let mut keys = forgotten(old);
            keys.push(K::Container(container.id.clone()));
            keys
        }
        Command::SetPending { id, .. } => vec![K::Pending(id.clone())],
        Command::UpdateSettings { .. } => vec![K::Settings],
        Command::SetRestartState { id, .. } => vec![K::Restart(id.clone())],
        Command::CreateVolume { volume } => vec![K::Volume(volume.name.clone())],
        Command::RemoveVolume { name } => vec![K::Volume(name.clone())],
        Command::CreateNetwork { network } => vec![K::Network(network.id.clone())],
        Command::RemoveNetwork { id } => vec![K::Network(id.clone())],
        Command::ConnectContainer { id, .. } => vec![K::Connection(id.clone())],
        Command::DisconnectContainer { id, .. } => {
            vec![K::Connection(id.clone()), K::Endpoint(id.clone())]
        }
        Command::AttachEndpoints { id, .. }
        | Command::AllocateEndpoints { id, .. }
        | Command::ReleaseEndpoints { id } => vec![K::Endpoint(id.clone())],
        Command::LayerInventory { node, layers } => {
            // The layers it reports, and those recorded for it that it may no longer hold.
            let mut keys: Vec<StateKey> = layers.iter().map(|d| K::Layer(*d)).collect();
            keys.extend(
                s.layers
                    .iter()
                    .filter(|(_, nodes)| nodes.contains(node))
                    .map(|(d, _)| K::Layer(*d)),
            );
            keys
        }
        Command::RegisterNode { id, .. }
        | Command::SetNodeState { id, .. }
        | Command::UpdateNode { id, .. } => vec![K::Node(*id)],
        Command::RemoveNode { id } => vec![K::Node(*id), K::RevokedNode(*id)],
    }
}

/// What forgetting container `id` changes: its record and everything kept about it.
fn forgotten(id: &ContainerId) -> Vec<StateKey> {
    vec![
        StateKey::Container(id.clone()),
        StateKey::Restart(id.clone()),
        StateKey::Connection(id.clone()),
        StateKey::Endpoint(id.clone()),
        StateKey::Pending(id.clone()),
    ]
}
