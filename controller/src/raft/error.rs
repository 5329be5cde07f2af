//! Why the replicated state could not be opened, written or shut down.

use std::path::PathBuf;

use openraft::error::{CheckIsLeaderError, ClientWriteError, Fatal, InitializeError};
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
    /// The store was shut down before the proposal was written; it was not.
    #[error("raft store is shut down")]
    Closed,
    /// The store stopped while the proposal was being written; it may have been applied.
    #[error("raft store stopped while writing the proposal (it may have been applied)")]
    Abandoned,
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
    /// A record of the state's column family whose key names no part of the state.
    #[error("raft database holds a state record of unknown kind {key:?}")]
    StateRecord {
        /// The start of its key, lossily as text.
        key: String,
    },
    /// Snapshot data that ends inside a record or starts with an unknown header.
    #[error("corrupt raft snapshot data at byte {offset} of {len}")]
    SnapshotData {
        /// Where the bad record starts.
        offset: u64,
        /// Length of the data.
        len: u64,
    },
    /// A snapshot file or its directory could not be created, written, read or renamed.
    #[error("{action} raft snapshot file {path}: {source}")]
    SnapshotFile {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
    /// Reading the records of snapshot data failed.
    #[error("read raft snapshot data: {0}")]
    SnapshotRead(#[source] std::io::Error),
    /// The task building or installing a snapshot panicked or was cancelled.
    #[error("raft snapshot task: {0}")]
    SnapshotTask(#[source] tokio::task::JoinError),
    /// A snapshot asked for ([`Store::snapshot`](super::Store::snapshot)) was not built in
    /// time (Raft stopped, or the build failed).
    #[error("raft snapshot not built within {secs}s")]
    SnapshotTimeout {
        /// How long it was waited for.
        secs: u64,
    },
    /// Raft's storage tasks kept the database open after shutdown.
    #[error("raft storage still holds the database {secs}s after shutdown")]
    Release {
        /// How long shutdown waited.
        secs: u64,
    },
    /// A peer connection broke.
    #[error("raft peer connection: {0}")]
    PeerIo(#[source] std::io::Error),
    /// A peer announced a frame larger than any message.
    #[error("raft peer sent a frame of {len} bytes")]
    PeerFrame {
        /// The announced length.
        len: u32,
    },
    /// A peer sent a message that does not decode.
    #[error("decode raft peer message: {0}")]
    PeerDecode(#[source] CodecError),
    /// A peer message could not be encoded.
    #[error("encode raft peer message: {0}")]
    PeerEncode(#[source] CodecError),
    /// A peer closed the connection before answering.
    #[error("raft peer closed the connection before answering")]
    PeerClosed,
    /// A member's address is not `IP:port`.
    #[error("raft peer address {addr:?} is not IP:port")]
    PeerAddr {
        /// The address in the membership.
        addr: String,
    },
    /// No TLS connection could be made to a peer.
    #[error("connect to raft peer {addr}: {source}")]
    Connect {
        /// The peer's address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A call to a peer failed.
    #[error("call raft node {target}: {source}")]
    Peer {
        /// The peer.
        target: u64,
        /// Why.
        #[source]
        source: Box<RaftError>,
    },
    /// A peer did not answer in time.
    #[error("raft node {target} did not answer within {millis} ms")]
    PeerTimeout {
        /// The peer.
        target: u64,
        /// The time allowed.
        millis: u64,
    },
    /// The controller at a member's address has another node id.
    #[error("raft peer at {addr} is node {found}, not node {want}")]
    WrongNode {
        /// The address dialled.
        addr: String,
        /// The node expected there.
        want: u64,
        /// The node that answered.
        found: u64,
    },
    /// A peer answered a call with the reply of another.
    #[error("raft node {target} answered with the reply of another call")]
    PeerReply {
        /// The peer.
        target: u64,
    },
    /// No leader was known (or reachable) in time; nothing was written.
    #[error("raft node {node_id} found no reachable leader within {secs}s")]
    NoLeader {
        /// This node.
        node_id: u64,
        /// How long it waited.
        secs: u64,
    },
    /// A leader-only operation was asked of another node; nothing was changed.
    #[error("raft node {node_id} is not the leader (leader: {leader:?})")]
    NotLeader {
        /// This node.
        node_id: u64,
        /// The leader it knows of.
        leader: Option<u64>,
    },
    /// The leader failed a forwarded write: it may or may not have been applied.
    #[error("leader {leader} failed the forwarded write (it may or may not have been applied): {reason}")]
    ForwardFailed {
        /// The leader.
        leader: u64,
        /// Its error.
        reason: String,
    },
    /// A forwarded write got no answer: it may or may not have been applied.
    #[error("forwarded write to leader {leader} got no answer (it may or may not have been applied): {source}")]
    ForwardUncertain {
        /// The leader.
        leader: u64,
        /// What happened to the call.
        #[source]
        source: Box<RaftError>,
    },
    /// A write was not committed in time; it may still be.
    #[error("raft write not committed within {secs}s (it may still be applied)")]
    WriteTimeout {
        /// The time allowed.
        secs: u64,
    },
    /// A write that may have been applied was sent again under its idempotency key until
    /// the time allowed, and still no try was answered: it may or may not be applied.
    #[error(
        "write not decided after {tries} tries (it may or may not have been applied): {source}"
    )]
    Undecided {
        /// Tries made.
        tries: u32,
        /// What the last try came to.
        #[source]
        source: Box<RaftError>,
    },
    /// A linearizable read could not be served in time.
    #[error("linearizable read on raft node {node_id}: {what} within {secs}s")]
    ReadTimeout {
        /// This node.
        node_id: u64,
        /// What did not happen.
        what: &'static str,
        /// The time allowed.
        secs: u64,
    },
    /// The leader could not confirm its leadership for a read.
    #[error("confirm raft leadership for a read: {0}")]
    ReadIndex(#[source] Box<ApiError<CheckIsLeaderError<u64, BasicNode>>>),
    /// The leader refused a read-index request.
    #[error("read index from leader {leader}: {reason}")]
    ReadRefused {
        /// The leader.
        leader: u64,
        /// Its error.
        reason: String,
    },
    /// A membership change failed.
    #[error("change raft membership ({what}): {source}")]
    Membership {
        /// The change.
        what: String,
        /// openraft's reason.
        #[source]
        source: Box<ApiError<ClientWriteError<u64, BasicNode>>>,
    },
    /// A new controller did not catch up; it stays a learner (adding it again retries).
    #[error("controller {id} did not catch up with the leader within {secs}s; it stays a non-voting learner")]
    CatchUp {
        /// The controller.
        id: u64,
        /// The time allowed.
        secs: u64,
    },
    /// The controller is already a member under another address.
    #[error("controller {id} is already a member at {have}, not {want}")]
    MemberAddr {
        /// The controller.
        id: u64,
        /// Its address in the membership.
        have: String,
        /// The address asked for.
        want: String,
    },
    /// Removing this member would leave the cluster without voters.
    #[error("controller {id} is the last voter of the cluster and cannot be removed")]
    LastVoter {
        /// The controller.
        id: u64,
    },
    /// No member has this id.
    #[error("no controller {id} in the raft membership")]
    UnknownMember {
        /// The id asked for.
        id: u64,
    },
    /// The write of the group of proposals this one was committed with failed.
    #[error(transparent)]
    Group(std::sync::Arc<RaftError>),
}
