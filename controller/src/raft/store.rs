//! [`Store`]: the controller's handle on the replicated cluster state.
//!
//! Opening a store opens RocksDB and builds the openraft node over [`LogStore`],
//! [`StateMachine`] and a [`PeerNetwork`]. A fresh store either forms a one-member cluster
//! ([`OpenMode::Bootstrap`]) or waits for the leader to add it ([`OpenMode::Join`]); a store
//! with data resumes. Afterwards commands go in with [`Store::propose`] (forwarded to the
//! leader when this node does not lead) and the state comes out with [`Store::read`],
//! [`Store::read_linearizable`] and [`Store::watch`]. Membership is in `membership.rs`,
//! forwarding and reads in `forward.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;
use wharf_protocol::proposal_key::ProposalKey;
use wharf_protocol::state::{ClusterState, Command, Response};

use super::db::Db;
use super::forward::Router;
use super::network::{NoNetwork, PeerNetwork};
use super::state_machine::{read_applied, SharedApplied, SnapshotStats};
use super::{LogStore, RaftError, StateMachine, TypeConfig};

/// How long [`Store::open`] waits for this node to lead with everything applied.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Store::shutdown`] waits for openraft's tasks to let go of the database.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Leader heartbeat interval (ms); a LAN round trip is far below it.
pub(super) const HEARTBEAT_MS: u64 = 250;
/// Shortest election timeout (ms): a follower that hears nothing this long may stand.
pub(super) const ELECTION_MIN_MS: u64 = 1000;
/// Longest election timeout (ms).
pub(super) const ELECTION_MAX_MS: u64 = 2000;
/// How long one snapshot chunk may take to send and, for the last, install (ms): the
/// receiver decodes the whole state and writes it with an fsync, far slower than a
/// heartbeat on a large state or a busy disk.
const SNAPSHOT_CHUNK_TIMEOUT_MS: u64 = 10_000;
/// Log entries since the last snapshot that trigger a new one. A snapshot writes the whole
/// state (91 MiB at 100,000 containers) while the state machine already keeps every key
/// in RocksDB: at 1,000 a burst of 100,000 creates built ten on every controller. At
/// 10,000 (etcd's default) the log before a snapshot stays tens of MiB, and a member
/// that lags by less catches up from it, cheaper than from a snapshot.
const SNAPSHOT_EVERY: u64 = 10_000;
/// How long [`Store::snapshot`] waits for the snapshot it asked for: far longer than a
/// state of 100,000 containers takes (about 1.5 s in a debug build).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Log entries kept before the last snapshot, so that a briefly lagging member catches up
/// from the log rather than by a snapshot.
const KEEP_BEFORE_SNAPSHOT: u64 = 100;

/// How a [`Store`] starts when its database holds no cluster yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Form a one-member cluster of this node (the first controller; `wharf up`).
    Bootstrap,
    /// Start empty and wait to be added by the leader ([`Store::add_controller`]).
    Join,
}

/// What [`Store::open_with`] needs.
#[derive(Clone, Debug)]
pub struct OpenOptions {
    /// This controller's Raft node id (unique in the cluster, never reused).
    pub node_id: u64,
    /// This controller's cluster address (`IP:port`), as peers dial it.
    pub addr: String,
    /// What to do with a fresh database; ignored when it holds a cluster already.
    pub mode: OpenMode,
    /// How to reach the other controllers.
    pub network: PeerNetwork,
}

/// The replicated cluster state of this controller; cheap to clone, shared by every task.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    raft: Raft<TypeConfig>,
    /// Writes command groups and finds read indexes, locally or through the leader.
    router: Router,
    network: PeerNetwork,
    /// Proposals for the group-commit task ([`propose_in_groups`]).
    proposals: mpsc::UnboundedSender<Proposal>,
    /// What the group-commit task counted.
    counts: Arc<ProposalCounts>,
    db: Arc<Db>,
    applied: SharedApplied,
    watch: Arc<watch::Sender<u64>>,
    /// Changes of the image and layer records ([`Store::watch_layers`]).
    layers: Arc<watch::Sender<u64>>,
    /// What the last snapshot built was.
    snapshots: Arc<watch::Sender<SnapshotStats>>,
    /// Set once by [`Store::shutdown`]; ends peer connections.
    closed: watch::Sender<bool>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("node_id", &self.inner.node_id)
            .field("path", &self.inner.db.path())
            .finish_non_exhaustive()
    }
}

/// The Raft timing and log compaction of Wharf's controllers.
pub(super) fn default_config() -> Config {
    Config {
        cluster_name: "wharf".to_string(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: ELECTION_MIN_MS,
        election_timeout_max: ELECTION_MAX_MS,
        install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT_MS,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(SNAPSHOT_EVERY),
        max_in_snapshot_log_to_keep: KEEP_BEFORE_SNAPSHOT,
        ..Config::default()
    }
}

impl Store {
    /// Open (or create) the Raft database at `dir` and start node `node_id`, advertised at
    /// `addr`, without a network; on an empty log, form a one-member cluster of this node.
    ///
    /// This is `wharf up`: [`Store::open_with`] with [`OpenMode::Bootstrap`] and
    /// [`NoNetwork`]. It returns when this node is leader and has applied everything
    /// committed. Fails if `dir` is held by another open store (in this process or another).
    pub async fn open(dir: &Path, node_id: u64, addr: String) -> Result<Store, RaftError> {
        let options = OpenOptions {
            node_id,
            addr,
            mode: OpenMode::Bootstrap,
            network: NoNetwork.into(),
        };
        Store::open_with(dir, options).await
    }

    /// Open (or create) the Raft database at `dir` and start this controller's node.
    ///
    /// Call once at controller start, before serving peers or requests. A fresh database
    /// forms a one-member cluster ([`OpenMode::Bootstrap`]; returns once this node leads) or
    /// waits to be added ([`OpenMode::Join`]; returns at once). A database with a cluster
    /// resumes: alone in it, this node leads before this returns; with other members it
    /// returns at once and follows whoever leads. Fails if `dir` is held by another open
    /// store (in this process or another).
    pub async fn open_with(dir: &Path, options: OpenOptions) -> Result<Store, RaftError> {
        Store::open_with_config(dir, options, default_config()).await
    }

    /// [`Store::open_with`] with an explicit openraft configuration (tests shrink the
    /// snapshot interval with it).
    pub(super) async fn open_with_config(
        dir: &Path,
        options: OpenOptions,
        config: Config,
    ) -> Result<Store, RaftError> {
        let span = tracing::info_span!("raft", node = options.node_id);
        Store::start(dir, options, config).instrument(span).await
    }

    async fn start(dir: &Path, options: OpenOptions, config: Config) -> Result<Store, RaftError> {
        let OpenOptions {
            node_id,
            addr,
            mode,
            network,
        } = options;
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| RaftError::Config(Box::new(e)))?,
        );
        let db = Arc::new(Db::open(dir)?);
        let sm = StateMachine::load(Arc::clone(&db))?;
        let applied = sm.applied();
        let watch = sm.watch();
        let layers = sm.layers_watch();
        let snapshots = sm.snapshot_stats();
        let log = LogStore::new(Arc::clone(&db));
        let raft = Raft::new(node_id, config, network.clone(), log, sm)
            .await
            .map_err(|e| RaftError::Start {
                node_id,
                source: Box::new(e),
            })?;
        let (proposals, queued) = mpsc::unbounded_channel();
        let counts = Arc::new(ProposalCounts::default());
        let router = Router::new(node_id, raft.clone(), network.clone());
        tokio::spawn(propose_in_groups(
            router.clone(),
            Keys::new(node_id),
            queued,
            Arc::clone(&counts),
        ));
        let store = Store {
            inner: Arc::new(Inner {
                node_id,
                raft,
                router,
                network,
                closed: watch::Sender::new(false),
                proposals,
                counts,
                db,
                applied,
                watch,
                layers,
                snapshots,
            }),
        };
        match store.recover(addr, mode).await {
            Ok(()) => Ok(store),
            Err(err) => {
                // Release the database so that the caller may retry.
                if let Err(e) = store.shutdown().await {
                    tracing::warn!(node = node_id, error = %e, "shut down raft after failed open");
                }
                Err(err)
            }
        }
    }

    /// Form the cluster if new and bootstrapping; then, if this node is the only voter,
    /// wait to lead with everything committed applied.
    async fn recover(&self, addr: String, mode: OpenMode) -> Result<(), RaftError> {
        let node_id = self.inner.node_id;
        let raft = &self.inner.raft;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Stopped {
                node_id,
                source: Box::new(e),
            })?;
        if !initialized && mode == OpenMode::Join {
            tracing::info!(node = node_id, %addr, "raft store open, waiting to be added by the leader");
            return Ok(());
        }
        if !initialized {
            tracing::info!(node = node_id, %addr, "forming one-member raft cluster");
            let members = BTreeMap::from([(node_id, BasicNode::new(addr))]);
            raft.initialize(members)
                .await
                .map_err(|e| RaftError::Initialize {
                    node_id,
                    source: Box::new(e),
                })?;
        }
        let voters: BTreeSet<u64> = raft
            .with_raft_state(|st| st.membership_state.effective().voter_ids().collect())
            .await
            .map_err(|e| RaftError::Stopped {
                node_id,
                source: Box::new(e),
            })?;
        if voters != BTreeSet::from([node_id]) {
            tracing::info!(
                node = node_id,
                ?voters,
                "raft store open, resuming as a member"
            );
            return Ok(());
        }
        let metrics = raft
            .wait(Some(OPEN_TIMEOUT))
            .metrics(
                |m| {
                    let caught_up = m.state == ServerState::Leader
                        && m.current_leader == Some(node_id)
                        && m.last_applied.map(|l| l.index) == m.last_log_index
                        && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term);
                    caught_up || m.running_state.is_err()
                },
                "lead with everything committed applied",
            )
            .await
            .map_err(|source| RaftError::Recover { node_id, source })?;
        if let Err(source) = &metrics.running_state {
            return Err(RaftError::Stopped {
                node_id,
                source: Box::new(source.clone()),
            });
        }
        tracing::info!(
            node = node_id,
            term = metrics.current_term,
            applied = ?metrics.last_applied,
            "raft store open"
        );
        Ok(())
    }

    /// Propose `cmd` to the cluster; returns the state machine's [`Response`] once the
    /// command is committed and applied on the leader (on this node too when it leads; a
    /// follower applies it shortly after: read with [`Store::read_linearizable`] to see it).
    ///
    /// `Ok(Err(_))` means the command was committed but refused by [`ClusterState::apply`]
    /// (the state is unchanged); `Err(_)` means it may not have been committed. Among those,
    /// [`RaftError::NoLeader`] and [`RaftError::NotLeader`] say that it certainly was not;
    /// [`RaftError::Undecided`] that it may have been: a try that may have been applied
    /// (the leader was lost between commit and answer) is made again under the same
    /// idempotency key, which the state machine applies once, and only a write still
    /// undecided after [`WRITE_TIMEOUT`](super::forward) is this error.
    ///
    /// Proposals made while another is being written wait for it and then go into the log
    /// together, as one [`Command::Keyed`] entry under a key this store makes: one append
    /// and one fsync for all of them (group commit), each answered as if alone. On a
    /// follower such a group is forwarded to the leader as one call.
    ///
    /// On a follower the answer waits until this node has applied the write too (read
    /// your writes: the caller's next [`Store::read`] sees it, as on the leader).
    pub async fn propose(&self, cmd: Command) -> Result<Response, RaftError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { cmd, reply })
            .map_err(|_| RaftError::Closed)?;
        let (answer, index) = answer.await.map_err(|_| RaftError::Abandoned)??;
        // Read your writes: a forwarded write is answered once this node applied the entry
        // that carried it too (the leader applied it before answering). Waiting for that
        // index costs no call to the leader, where a read index per write cost one.
        if let Err(e) = self
            .wait_applied(index, "not applied up to the entry of its own write")
            .await
        {
            tracing::warn!(index, error = %e, "a forwarded write is not applied here yet");
        }
        Ok(answer)
    }

    /// Synced writes (fsyncs of the database's WAL) since the store was opened: with
    /// group commit, many concurrent proposals share one.
    pub fn synced_writes(&self) -> u64 {
        self.inner.db.synced_writes()
    }

    /// What the store did since it was opened, for metrics.
    pub fn stats(&self) -> StoreStats {
        let counts = &self.inner.counts;
        StoreStats {
            synced_writes: self.synced_writes(),
            proposals: counts.proposals.load(std::sync::atomic::Ordering::Relaxed),
            entries: counts.entries.load(std::sync::atomic::Ordering::Relaxed),
            last_applied: *self.inner.watch.borrow(),
            snapshot: *self.inner.snapshots.borrow(),
        }
    }

    /// Build a snapshot of this controller's state now (as Raft does every
    /// [`SNAPSHOT_EVERY`] log entries, which purges the log before it) and wait until it
    /// is stored; what it was. For benchmarks and operators: the state is not changed.
    ///
    /// When a snapshot is being built already, Raft starts no other, and the answer is
    /// that one. Fails if none is built within [`SNAPSHOT_TIMEOUT`] (Raft stopped, or the
    /// build failed: Raft then stops too).
    pub async fn snapshot(&self) -> Result<SnapshotStats, RaftError> {
        let mut built = self.inner.snapshots.subscribe();
        let before = built.borrow_and_update().builds;
        self.inner
            .raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| RaftError::Stopped {
                node_id: self.inner.node_id,
                source: Box::new(e),
            })?;
        let stats = tokio::time::timeout(SNAPSHOT_TIMEOUT, built.wait_for(|s| s.builds > before))
            .await
            .map_err(|_| RaftError::SnapshotTimeout {
                secs: SNAPSHOT_TIMEOUT.as_secs(),
            })?
            .map_err(|_| RaftError::Closed)?;
        Ok(*stats)
    }

    /// Run `f` on the applied cluster state and return its result.
    ///
    /// `f` runs under a lock that applying commands waits for: copy out what you need and do
    /// no I/O or waiting inside it.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        f(&read_applied(&self.inner.applied).state)
    }

    /// Run `f` on the applied cluster state and the index of the last log entry applied to
    /// it (0 before any), read together: a revision of what `f` computes, comparable on
    /// every controller of the cluster. The same rules as [`Store::read`].
    pub fn read_indexed<R>(&self, f: impl FnOnce(&ClusterState, u64) -> R) -> R {
        let applied = read_applied(&self.inner.applied);
        f(&applied.state, applied.last_applied.map_or(0, |l| l.index))
    }

    /// A receiver of the last applied log index, which changes every time commands are
    /// applied; call to wait for a state condition (check it with [`Store::read`] after
    /// each change).
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.watch.subscribe()
    }

    /// Changes once an applied entry changed an image or layer record (or a snapshot
    /// replaced the state), not at every entry as [`Store::watch`] does.
    pub fn watch_layers(&self) -> watch::Receiver<u64> {
        self.inner.layers.subscribe()
    }

    /// The openraft node (peer RPCs go to it; tests look at its metrics, log and snapshot).
    pub(super) fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// This controller's node id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// What writes command groups and finds read indexes for this store.
    pub(super) fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The network to the other controllers.
    pub(super) fn network(&self) -> &PeerNetwork {
        &self.inner.network
    }

    /// Every log entry this node holds, in order (tests look for repeated keys).
    #[cfg(test)]
    pub(super) fn log_entries(&self) -> Vec<openraft::Entry<TypeConfig>> {
        super::LogStore::new(Arc::clone(&self.inner.db))
            .read_range(&(..))
            .expect("a test reads its own log")
    }

    /// The directory of this store's snapshot files.
    #[cfg(test)]
    pub(super) fn snapshot_dir(&self) -> std::path::PathBuf {
        super::snapshot::dir(&self.inner.db)
    }

    /// A receiver that turns `true` when the store is shut down.
    pub(super) fn closed(&self) -> watch::Receiver<bool> {
        self.inner.closed.subscribe()
    }

    /// Stop Raft, wait until its tasks release the database, and flush it to disk; call once
    /// before the controller exits. The database closes when the last clone is dropped.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        let node_id = self.inner.node_id;
        self.inner.closed.send_replace(true);
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(RaftError::Shutdown)?;
        // The state machine worker and snapshot tasks end shortly after the core task; each
        // holds the database.
        let deadline = tokio::time::Instant::now() + RELEASE_TIMEOUT;
        while Arc::strong_count(&self.inner.db) > 1 {
            if tokio::time::Instant::now() >= deadline {
                return Err(RaftError::Release {
                    secs: RELEASE_TIMEOUT.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.inner.db.flush()?;
        tracing::info!(node = node_id, "raft store shut down");
        Ok(())
    }
}

/// Counts of a store since it was opened ([`Store::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Synced writes (fsyncs) of the database.
    pub synced_writes: u64,
    /// Commands proposed.
    pub proposals: u64,
    /// Log entries those went into (fewer than proposals when grouped).
    pub entries: u64,
    /// The last applied log index.
    pub last_applied: u64,
    /// The last snapshot built.
    pub snapshot: SnapshotStats,
}

/// What [`propose_in_groups`] counts.
#[derive(Debug, Default)]
struct ProposalCounts {
    proposals: std::sync::atomic::AtomicU64,
    entries: std::sync::atomic::AtomicU64,
}

/// A command waiting to be proposed, and where its answer goes.
struct Proposal {
    cmd: Command,
    /// The answer, and the log index of the entry that carried it.
    reply: oneshot::Sender<Result<(Response, u64), RaftError>>,
}

/// The most commands one log entry carries.
const MAX_GROUP: usize = 128;

/// The idempotency keys of one store's proposal groups: its node id, a random incarnation
/// (each open of the store its own, so a restart never repeats a key), and a sequence.
struct Keys {
    origin: u64,
    incarnation: u64,
    next: u64,
}

impl Keys {
    fn new(origin: u64) -> Keys {
        Keys {
            origin,
            incarnation: rand::random(),
            next: 0,
        }
    }

    /// The key of the next group.
    fn next(&mut self) -> ProposalKey {
        let key = ProposalKey {
            origin: self.origin,
            incarnation: self.incarnation,
            seq: self.next,
        };
        self.next += 1;
        key
    }
}

/// Write proposals one entry at a time: each entry takes every proposal that queued while
/// the one before it was being committed (up to [`MAX_GROUP`]), under a key of its own. On
/// a follower the group is forwarded to the leader as one call. One group is in flight at a
/// time, and it alone is retried: what lets the state machine keep few keys per origin.
/// Ends when the store is dropped.
async fn propose_in_groups(
    router: Router,
    mut keys: Keys,
    mut queued: mpsc::UnboundedReceiver<Proposal>,
    counts: Arc<ProposalCounts>,
) {
    while let Some(first) = queued.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queued.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        let (cmds, replies): (Vec<Command>, Vec<_>) =
            group.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        counts
            .proposals
            .fetch_add(cmds.len() as u64, std::sync::atomic::Ordering::Relaxed);
        counts
            .entries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match router.write(keys.next(), cmds).await {
            Ok(written) => {
                for (reply, answer) in replies.into_iter().zip(written.answers) {
                    let _ = reply.send(Ok((answer, written.index)));
                }
            }
            Err(e) if replies.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(e));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(RaftError::Group(Arc::clone(&e))));
                }
            }
        }
    }
}
