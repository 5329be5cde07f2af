//! Agent requests about the host as a whole: what it holds.

use crate::ids::{ChainId, DiffId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// A request about the host (see [`super::AgentRequest::Host`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostRequest {
    /// The layers the host holds. Answer: `Inventory`.
    Inventory,
    /// What `docker info` shows of the host. Answer: `Info`.
    Info,
}

/// What a [`HostRequest`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostResponse {
    /// The layers the host holds.
    Inventory(LayerInventory),
    /// What `docker info` shows of the host.
    Info(HostInfo),
}

/// What `docker info` shows of a host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// The agent's data directory (`DockerRootDir`).
    pub root_dir: String,
}

/// The layers a host holds: unpacked layers by chain (what containers run on) and the
/// canonical tars kept by DiffID. The controller names them by DiffID with the images it
/// knows (a chain is its image's layers up to one DiffID).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInventory {
    /// Unpacked image layers.
    pub chains: BTreeSet<ChainId>,
    /// Canonical layer tars.
    pub tars: BTreeSet<DiffId>,
}
