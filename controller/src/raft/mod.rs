//! The replicated cluster state: openraft 0.9 with its log and state machine in RocksDB.
//!
//! This module owns everything between a [`Command`] proposed by the API and the
//! [`ClusterState`] every controller reads: the Raft node, its durable log and vote, the state
//! machine that applies committed commands with the pure [`ClusterState::apply`], the
//! snapshots that let the log be purged, and the peer protocol between controllers (Raft
//! RPCs, writes forwarded to the leader, read indexes for linearizable reads) over mutual
//! TLS: [`TlsNetwork`] dials, [`serve_peer`] answers. `wharf up` runs one member without a
//! network ([`NoNetwork`]).
//!
//! Files: `store.rs` opens and shuts down ([`Store`], [`OpenMode`]); `forward.rs` routes
//! writes and reads to the leader; `membership.rs` adds and removes controllers; `rpc.rs` is
//! the wire protocol and its server; `tls_network.rs` its client; `network.rs` picks one.
//!
//! ```text
//!   Store::propose(cmd) ──> group ──> Router ──(follower)──TLS──> leader's serve_peer
//!                                       │ (leader)
//!                                       ▼
//!                              openraft::Raft ──append──> LogStore ──> RocksDB cf `logs`, `meta`
//!                                │ (committed)       └──TlsNetwork──> followers' serve_peer
//!                                └──apply──> StateMachine ──> ClusterState (memory)
//!                                                  │          + RocksDB cf `sm`, `state`
//!   Store::read(f) <── ClusterState <──────────────┘          + watch: last applied index
//!                                     snapshots: files in raft/snapshots/ (snapshot.rs)
//! ```
//!
//! [`Command`]: wharf_protocol::state::Command
//! [`ClusterState`]: wharf_protocol::state::ClusterState
//! [`ClusterState::apply`]: wharf_protocol::state::ClusterState::apply

mod db;
mod error;
mod forward;
mod log_store;
mod membership;
mod migrate;
pub mod network;
mod records;
mod rpc;
mod snapshot;
mod state_machine;
mod store;
mod tls_network;

#[cfg(test)]
mod cluster_test;
#[cfg(test)]
mod failover_test;
#[cfg(test)]
mod forward_test;
#[cfg(test)]
mod peer_harness;
#[cfg(test)]
mod records_bench;
#[cfg(test)]
mod records_test;
#[cfg(test)]
mod store_test;
#[cfg(test)]
mod suite_test;
#[cfg(test)]
mod tls_network_test;

use openraft::BasicNode;
use wharf_protocol::state::{Command, Response};

pub use error::RaftError;
pub use log_store::LogStore;
pub use membership::Member;
pub use network::{NoNetwork, PeerNetwork};
pub use rpc::{serve_peer, RAFT_ALPN};
pub use snapshot::SnapshotFile;
pub use state_machine::{SnapshotBuilder, SnapshotStats, StateMachine};
pub use store::{OpenMode, OpenOptions, Store, StoreStats};
pub use tls_network::{TlsClient, TlsNetwork};

openraft::declare_raft_types!(
    /// The openraft type configuration of Wharf's controllers: log entries carry a
    /// [`Command`], applying one yields a [`Response`] per command (several for a
    /// [`Command::Batch`] or a [`Command::Keyed`] group), members are `u64` ids with an
    /// address, snapshot data is a file ([`SnapshotFile`]).
    pub TypeConfig:
        D = Command,
        R = Vec<Response>,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);
