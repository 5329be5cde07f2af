//! The replicated cluster state: openraft 0.9 with its log and state machine in RocksDB.
//!
//! This module owns everything between a [`Command`] proposed by the API and the
//! [`ClusterState`] every controller reads: the Raft node, its durable log and vote, the state
//! machine that applies committed commands with the pure [`ClusterState::apply`], and the
//! snapshots that let the log be purged. Today the cluster has one member (`wharf up`); the
//! network in [`network`] refuses every RPC until the QUIC transport replaces it.
//!
//! ```text
//!   Store::propose(cmd) ──> openraft::Raft ──append──> LogStore ──> RocksDB cf `logs`, `meta`
//!                                │ (committed)
//!                                └──apply──> StateMachine ──> ClusterState (memory)
//!                                                  │          + RocksDB cf `sm`
//!   Store::read(f) <── ClusterState <──────────────┘          + watch: last applied index
//! ```
//!
//! [`Command`]: wharf_protocol::state::Command
//! [`ClusterState`]: wharf_protocol::state::ClusterState
//! [`ClusterState::apply`]: wharf_protocol::state::ClusterState::apply

mod db;
mod error;
mod log_store;
mod migrate;
pub mod network;
mod state_machine;
mod store;

#[cfg(test)]
mod store_test;
#[cfg(test)]
mod suite_test;

use std::io::Cursor;

use openraft::BasicNode;
use wharf_protocol::state::{Command, Response};

pub use error::RaftError;
pub use log_store::LogStore;
pub use state_machine::{SnapshotBuilder, StateMachine};
pub use store::{Store, StoreStats};

openraft::declare_raft_types!(
    /// The openraft type configuration of Wharf's controllers: log entries carry a
    /// [`Command`], applying one yields a [`Response`] per command (several for a
    /// [`Command::Batch`]), members are `u64` ids with an address.
    pub TypeConfig:
        D = Command,
        R = Vec<Response>,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
