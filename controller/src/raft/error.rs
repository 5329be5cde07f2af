//! Why the replicated state could not be opened, written or shut down.

use std::path::PathBuf;

use openraft::error::{ClientWriteError, Fatal, InitializeError};
use openraft::BasicNode;
use wharf_protocol::codec::CodecError;

/// openraft's error of one API call.
type ApiError<E> = openraft::error::RaftError<u64, E>;

/// A failure of the Raft store; the cluster state is unchanged unless a write said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// RocksDB could not open the database (missing permissions, or another process or
    /// [`Store`](super::Store) holds its lock).
    #[error("open raft database {path}: {source}")]
    Open {
        /// The database directory.
        path: PathBuf,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// Reading a key of the database failed.
    #[error("read {what} from raft database: {source}")]
    Read {
        /// The record being read.
        what: &'static str,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// Writing to the database failed.
    #[error("write {what} to raft database: {source}")]
    Write {
        /// The record being written.
        what: &'static str,
        /// RocksDB's reason.
        #[source]
        source: rocksdb::Error,
    },
    /// A record in the database is not a valid message of its type.
    #[error("decode {what} from raft database: {source}")]
    Decode {
        /// The record being decoded.
        what: &'static str,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// A value could not be encoded for the database.
    #[error("encode {what} for raft database: {source}")]
    Encode {
        /// The record being encoded.
        what: &'static str,
        /// The codec's reason.
        #[source]
        source: CodecError,
    },
    /// A log key is not an 8-byte big-endian index.
    #[error("corrupt raft log key of {len} bytes")]
    LogKey {
        /// Length of the key found.
        len: usize,
    },
    /// A log entry is stored under an index other than its own.
    #[error("raft log entry {found} stored under index {key}")]
    LogIndex {
        /// The index of the key.
        key: u64,
        /// The index inside the entry.
        found: u64,
    },
    /// The Raft configuration is invalid.
    #[error("raft config: {0}")]
    Config(#[source] Box<openraft::ConfigError>),
    /// The Raft node could not start (its storage failed while loading).
    #[error("start raft node {node_id}: {source}")]
    Start {
        /// This node.
        node_id: u64,
        /// openraft's reason.
        #[source]
        source: Box<Fatal<u64>>,
    },
    /// Forming the one-member cluster failed.
    #[error("initialize raft cluster of node {node_id}: {source}")]
    Initialize {
        /// This node.
        node_id: u64,
        /// openraft's reason.
        #[source]
        source: Box<ApiError<InitializeError<u64, BasicNode>>>,
    },
    /// This node did not become leader with everything committed applied.
    #[error("raft node {node_id} did not become leader: {source}")]
    Recover {
        /// This node.
        node_id: u64,
        /// Timeout or shutdown while waiting.
        #[source]
        source: openraft::metrics::WaitError,
    },
    /// Raft stopped because of an error (usually its storage) while recovering.
    #[error("raft node {node_id} stopped: {source}")]
    Stopped {
        /// This node.
        node_id: u64,
        /// openraft's reason.
        #[source]
        source: Box<Fatal<u64>>,
    },
    /// A proposed command was not committed (not leader, or Raft stopped).
    #[error("propose to raft: {0}")]
    Propose(#[source] Box<ApiError<ClientWriteError<u64, BasicNode>>>),
    /// The store was shut down before the proposal was written.
    #[error("raft store is shut down")]
    Closed,
    /// A batch of proposals got another number of answers than it had commands.
    #[error("a batch of {sent} commands was answered {got} times")]
    BatchAnswers {
        /// Commands in the batch.
        sent: usize,
        /// Answers the state machine gave.
        got: usize,
    },
    /// There is no network to peers yet; every RPC fails with this.
    #[error("no raft network to node {target}")]
    NoNetwork {
        /// The peer an RPC was for.
        target: u64,
    },
    /// The Raft task did not end cleanly.
    #[error("shut down raft: {0}")]
    Shutdown(#[source] tokio::task::JoinError),
    /// The database was written by a newer Wharf, in a state format this build cannot
    /// read; nothing was changed.
    #[error("raft database {path} holds state format {found}; this build of wharf reads formats up to {supported}: run the newer wharf, or restore a backup made by this one")]
    NewerFormat {
        /// The database directory.
        path: PathBuf,
        /// The format recorded in it.
        found: u32,
        /// The newest format this build reads.
        supported: u32,
    },
    /// Raft's storage tasks kept the database open after shutdown.
    #[error("raft storage still holds the database {secs}s after shutdown")]
    Release {
        /// How long shutdown waited.
        secs: u64,
    },
}
