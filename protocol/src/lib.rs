//! Wharf's wire and state types, with no I/O.
//!
//! Everything that crosses a process or host boundary, or goes into the Raft log, is
//! defined here: identifiers ([`ids`]), the replicated cluster state and the commands that
//! change it ([`state`]), what a controller asks of an agent ([`agent`]), what a user
//! network's resolver answers ([`dns`]), the shim's control protocol ([`shim`]), and the
//! one codec that puts them on the wire ([`codec`]).

pub mod agent;
pub mod archive;
pub mod cluster;
pub mod codec;
pub mod dns;
#[cfg(any(test, feature = "test-fixtures"))]
pub mod fixtures;
pub mod ids;
pub mod image;
pub mod layer_state;
pub mod network;
mod network_state;
pub mod node_state;
pub mod patterns;
pub mod proposal_key;
pub mod runtime;
pub mod settings;
pub mod shim;
pub mod state;
pub mod state_index;
#[cfg(test)]
mod state_index_test;
pub mod state_key;
#[cfg(test)]
mod state_keyed_test;
#[cfg(test)]
mod state_move_test;
pub mod wire;

pub use ids::{ChainId, ContainerId, ContainerName, DiffId, Digest, IdError, ImageId, NodeId};
