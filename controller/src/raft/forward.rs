//! Writes and linearizable reads from any member: the [`Router`] does them on this node when
//! it leads, and asks the leader over the peer network otherwise.
//!
//! ```text
//!   follower: Store::propose ─> group ─> Router::write ──Call::Forward──> leader: write_local
//!   leader:   Store::propose ─> group ─> Router::write ─> Raft::client_write
//!   follower: read_linearizable ─Call::ReadIndex─> leader: get_read_log_id;  wait applied ≥ it
//! ```
//!
//! A call that certainly did nothing (no leader yet, no connection, the node asked no longer
//! leads) is tried again, against the leader as this node then knows it, until
//! [`LEADER_WAIT`]. A write goes into the log as one [`Command::Keyed`] entry under a key
//! this node made ([`ProposalKey`]), so that one that may have been applied (the leader
//! failed it, the connection broke or timed out after sending, or this node lost its
//! leadership before the commit) is sent again, the same entry under the same key, to the
//! leader as then known, for up to [`WRITE_TIMEOUT`] more: the state machine applies a key
//! once and answers a repeat with the first answers, so the caller gets the answer of the
//! one application. Only a write still undecided then fails, with
//! [`RaftError::Undecided`]; [`Retry`] decides, without I/O.

use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError as ApiError};
use openraft::metrics::WaitError;
use openraft::Raft;
use tokio::time::Instant;
use wharf_protocol::proposal_key::ProposalKey;
use wharf_protocol::state::{ClusterState, Command, Response};

use super::network::PeerNetwork;
use super::rpc::{Call, Refusal, Reply};
use super::tls_network::CallError;
use super::{RaftError, Store, TypeConfig};

/// How long a write may take to commit once the leader has it.
pub(super) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower waits for the leader's answer to a forwarded write: longer than the
/// leader waits for the commit, so that a leader's timeout arrives as its answer.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(WRITE_TIMEOUT.as_secs() + 5);
/// How long a write or read looks for a reachable leader before giving up.
pub(super) const LEADER_WAIT: Duration = Duration::from_secs(10);
/// How long the leader may take to confirm its leadership, and a follower to apply up to
/// the leader's read index.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before trying a call that certainly did nothing again.
pub(super) const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Why this node did not do a leader-only step itself.
pub(super) enum Local {
    /// It does not lead; nothing was done.
    NotLeader(Option<u64>),
    /// It failed.
    Failed(RaftError),
}

/// Why a call to the leader failed.
enum Remote {
    /// It certainly did nothing; it may be tried again.
    NotDone(RaftError),
    /// It may have done something.
    Failed(RaftError),
}

/// What one try of a keyed write came to.
#[derive(Debug)]
pub(super) enum Attempt {
    /// Applied (now or by an earlier try): the answers.
    Done(Written),
    /// Certainly not applied.
    NotDone(RaftError),
    /// Maybe applied: the same entry may be sent again.
    Uncertain(RaftError),
    /// A final failure: trying again cannot help.
    Failed(RaftError),
}

/// A write's answers, one per command, and the index of the log entry that carried it (of
/// the last try: a key sent again is answered with the first application's answers, under
/// a later index). A follower has applied its own write once it has applied that index.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Written {
    /// One answer per command.
    pub(super) answers: Vec<Response>,
    /// The log index of the entry.
    pub(super) index: u64,
}

/// What to do after a try ([`Retry::after`]).
#[derive(Debug)]
pub(super) enum Next {
    /// Give the caller this.
    Answer(Result<Written, RaftError>),
    /// Pause [`RETRY_PAUSE`] and try the same entry again.
    Again,
}

/// When a keyed write is tried again and when it gives up; pure (time comes in).
///
/// A write that certainly did nothing is tried again until [`LEADER_WAIT`] after it began.
/// One that may have been applied extends that to [`WRITE_TIMEOUT`] after the first such
/// try (time for an election and a commit); once any try was uncertain, giving up is
/// [`RaftError::Undecided`], never an error that says "not written".
#[derive(Debug)]
pub(super) struct Retry {
    until: Instant,
    uncertain: bool,
    tries: u32,
}

impl Retry {
    /// A write that begins at `now`.
    pub(super) fn new(now: Instant) -> Retry {
        Retry {
            until: now + LEADER_WAIT,
            uncertain: false,
            tries: 0,
        }
    }

    /// Until when a leader is looked for.
    pub(super) fn deadline(&self) -> Instant {
        self.until
    }

    /// What to do after `attempt`, which ended at `now`.
    pub(super) fn after(&mut self, attempt: Attempt, now: Instant) -> Next {
        self.tries += 1;
        let error = match attempt {
            Attempt::Done(answers) => return Next::Answer(Ok(answers)),
            Attempt::Failed(e) => return Next::Answer(Err(self.give_up(e))),
            Attempt::NotDone(e) => e,
            Attempt::Uncertain(e) => {
                if !self.uncertain {
                    self.uncertain = true;
                    self.until = self.until.max(now + WRITE_TIMEOUT);
                }
                e
            }
        };
        if now + RETRY_PAUSE >= self.until {
            return Next::Answer(Err(self.give_up(error)));
        }
        Next::Again
    }

    fn give_up(&self, last: RaftError) -> RaftError {
        if self.uncertain {
            RaftError::Undecided {
                tries: self.tries,
                source: Box::new(last),
            }
        } else {
            last
        }
    }
}

/// How many answers applying `entry` gives: one per command of a group.
fn answer_count(entry: &Command) -> usize {
    match entry {
        Command::Batch(cmds) | Command::Keyed { commands: cmds, .. } => cmds.len(),
        _ => 1,
    }
}

/// Routes writes and read-index requests to the leader; cheap to clone.
#[derive(Clone)]
pub(super) struct Router {
    node_id: u64,
    raft: Raft<TypeConfig>,
    network: PeerNetwork,
    /// Leadership confirmations for read indexes, shared by the reads that wait together.
    reads: std::sync::Arc<ReadRounds>,
}

/// Read-index requests share leadership confirmations: openraft sends a heartbeat round to
/// the voters for every `get_read_log_id`, so 10,000 agents reconnecting (each reconcile
/// reads linearizably) made 10,000 concurrent rounds, which timed out and cost the
/// leadership. One round runs at a time; a read answers with the index of a round that
/// began after the read arrived (that round confirmed the leadership, and read the commit
/// index, after the read began: what a read index of its own would have done), so all the
/// reads that arrive during a round share the next one.
#[derive(Default)]
pub(super) struct ReadRounds {
    /// Rounds begun so far.
    begun: std::sync::atomic::AtomicU64,
    /// Held while a round runs; holds the last successful round: (its number, its index).
    last: tokio::sync::Mutex<Option<(u64, u64)>>,
}

impl ReadRounds {
    /// The read index for a read that arrives now: a round that begins later, run by this
    /// caller (`round`) or shared with another's. Failures are not shared.
    pub(super) async fn read_index<F, Fut>(&self, round: F) -> Result<u64, Local>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<u64, Local>>,
    {
        use std::sync::atomic::Ordering::SeqCst;
        let arrived = self.begun.load(SeqCst);
        let mut last = self.last.lock().await;
        if let Some((n, index)) = *last {
            if n > arrived {
                return Ok(index);
            }
        }
        let n = self.begun.fetch_add(1, SeqCst) + 1;
        let r = round().await;
        if let Ok(index) = r {
            *last = Some((n, index));
        }
        r
    }
}

impl Router {
    pub(super) fn new(node_id: u64, raft: Raft<TypeConfig>, network: PeerNetwork) -> Router {
        Router {
            node_id,
            raft,
            network,
            reads: Default::default(),
        }
    }

    /// The leader this node knows of, with its address; waits for one until `deadline`.
    async fn leader(&self, deadline: Instant) -> Result<(u64, String), RaftError> {
        let no_leader = || RaftError::NoLeader {
            node_id: self.node_id,
            secs: LEADER_WAIT.as_secs(),
        };
        let wait = deadline.saturating_duration_since(Instant::now());
        let metrics = self
            .raft
            .wait(Some(wait))
            .metrics(
                |m| {
                    m.current_leader.is_some_and(|l| {
                        l == m.id || m.membership_config.membership().get_node(&l).is_some()
                    }) || m.running_state.is_err()
                },
                "a known leader",
            )
            .await
            .map_err(|e| match e {
                WaitError::ShuttingDown => RaftError::Closed,
                WaitError::Timeout(..) => no_leader(),
            })?;
        if metrics.running_state.is_err() {
            return Err(RaftError::Closed);
        }
        let leader = metrics.current_leader.ok_or_else(no_leader)?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Ok((leader, addr))
    }

    /// Write `cmds` as one log entry on this node, which must lead; one answer per command
    /// (per command of the group when `cmds` is one [`Command::Keyed`] group).
    async fn write_entry(&self, mut cmds: Vec<Command>) -> Result<Written, Local> {
        let entry = match cmds.len() {
            1 => cmds.remove(0),
            _ => Command::Batch(cmds),
        };
        let sent = answer_count(&entry);
        let written = tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(entry)).await;
        match written {
            Err(_) => Err(Local::Failed(RaftError::WriteTimeout {
                secs: WRITE_TIMEOUT.as_secs(),
            })),
            Ok(Ok(w)) if w.data.len() == sent => Ok(Written {
                answers: w.data,
                index: w.log_id.index,
            }),
            Ok(Ok(w)) => Err(Local::Failed(RaftError::BatchAnswers {
                sent,
                got: w.data.len(),
            })),
            Ok(Err(ApiError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(Local::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(Local::Failed(RaftError::Propose(Box::new(e)))),
        }
    }

    /// Write `cmds` as one log entry on this node for a follower that forwarded them.
    pub(super) async fn write_local(&self, cmds: Vec<Command>) -> Result<Written, Refusal> {
        self.write_entry(cmds).await.map_err(|e| self.refusal(e))
    }

    /// The log index a linearizable read must wait for, confirmed by a quorum; this node must
    /// lead.
    async fn read_index_here(&self) -> Result<u64, Local> {
        self.reads.read_index(|| self.confirm_read_index()).await
    }

    /// One leadership confirmation and the read index it gives ([`ReadRounds`]).
    async fn confirm_read_index(&self) -> Result<u64, Local> {
        let read = tokio::time::timeout(READ_TIMEOUT, self.raft.get_read_log_id()).await;
        match read {
            Err(_) => Err(Local::Failed(RaftError::ReadTimeout {
                node_id: self.node_id,
                what: "leadership not confirmed by a quorum",
                secs: READ_TIMEOUT.as_secs(),
            })),
            Ok(Ok((read, _applied))) => Ok(read.map_or(0, |l| l.index)),
            Ok(Err(ApiError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(Local::NotLeader(f.leader_id))
            }
            Ok(Err(e)) => Err(Local::Failed(RaftError::ReadIndex(Box::new(e)))),
        }
    }

    /// [`Router::read_index_here`] for a follower that asked.
    pub(super) async fn local_read_index(&self) -> Result<u64, Refusal> {
        self.read_index_here().await.map_err(|e| self.refusal(e))
    }

    fn refusal(&self, e: Local) -> Refusal {
        match e {
            Local::NotLeader(leader) => Refusal::NotLeader {
                node: self.node_id,
                leader,
            },
            Local::Failed(e) => Refusal::Failed {
                node: self.node_id,
                reason: e.to_string(),
            },
        }
    }

    fn not_leader(&self, leader: Option<u64>) -> RaftError {
        RaftError::NotLeader {
            node_id: self.node_id,
            leader,
        }
    }

    /// Write `cmds` as one log entry under `key` through the leader; one answer per command.
    ///
    /// A try that may have been applied is made again with the same entry (see [`Retry`]);
    /// the state machine applies the key once.
    pub(super) async fn write(
        &self,
        key: ProposalKey,
        cmds: Vec<Command>,
    ) -> Result<Written, RaftError> {
        let entry = Command::Keyed {
            key,
            commands: cmds,
        };
        let mut retry = Retry::new(Instant::now());
        loop {
            let attempt = match self.leader(retry.deadline()).await {
                Ok((leader, addr)) => self.try_write(leader, &addr, &entry).await,
                Err(e @ RaftError::NoLeader { .. }) => Attempt::NotDone(e),
                Err(e) => Attempt::Failed(e),
            };
            match &attempt {
                Attempt::Uncertain(e) => {
                    tracing::info!(node = self.node_id, %key, error = %e, "write may have been applied, sending it again under its key");
                }
                Attempt::NotDone(e) => {
                    tracing::debug!(node = self.node_id, %key, error = %e, "write not done, trying again");
                }
                Attempt::Done(_) | Attempt::Failed(_) => {}
            }
            match retry.after(attempt, Instant::now()) {
                Next::Answer(answer) => return answer,
                Next::Again => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    /// One try of writing `entry`: on this node if it is `leader`, else forwarded to it.
    async fn try_write(&self, leader: u64, addr: &str, entry: &Command) -> Attempt {
        if leader == self.node_id {
            return match self.write_entry(vec![entry.clone()]).await {
                Ok(answers) => Attempt::Done(answers),
                Err(Local::NotLeader(l)) => Attempt::NotDone(self.not_leader(l)),
                Err(Local::Failed(e @ RaftError::BatchAnswers { .. })) => Attempt::Failed(e),
                Err(Local::Failed(e)) => Attempt::Uncertain(e),
            };
        }
        match self.forward(leader, addr, vec![entry.clone()]).await {
            Ok(answers) => Attempt::Done(answers),
            Err(Remote::NotDone(e)) => Attempt::NotDone(e),
            Err(Remote::Failed(e @ RaftError::BatchAnswers { .. })) => Attempt::Failed(e),
            Err(Remote::Failed(e)) => Attempt::Uncertain(e),
        }
    }

    /// The index a linearizable read must wait for, from the leader.
    pub(super) async fn read_index(&self) -> Result<u64, RaftError> {
        let deadline = Instant::now() + LEADER_WAIT;
        loop {
            let (leader, addr) = self.leader(deadline).await?;
            let not_done = if leader == self.node_id {
                match self.read_index_here().await {
                    Ok(index) => return Ok(index),
                    Err(Local::Failed(e)) => return Err(e),
                    Err(Local::NotLeader(l)) => self.not_leader(l),
                }
            } else {
                match self.remote_read_index(leader, &addr).await {
                    Ok(index) => return Ok(index),
                    Err(Remote::Failed(e)) => return Err(e),
                    Err(Remote::NotDone(e)) => e,
                }
            };
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(not_done);
            }
            tracing::debug!(node = self.node_id, error = %not_done, "read index not served, trying again");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Call `leader` at `addr`; a call not sent is [`Remote::NotDone`].
    async fn call(
        &self,
        leader: u64,
        addr: &str,
        call: Call,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<Reply, Remote> {
        let PeerNetwork::Tls(network) = &self.network else {
            return Err(Remote::NotDone(RaftError::NoNetwork { target: leader }));
        };
        match network.call(leader, addr, call, timeout, idempotent).await {
            Ok(Reply::WrongNode { id }) => Err(Remote::NotDone(RaftError::WrongNode {
                addr: addr.to_string(),
                want: leader,
                found: id,
            })),
            Ok(reply) => Ok(reply),
            Err(e @ CallError::Connect(_)) => Err(Remote::NotDone(e.into_raft(leader))),
            Err(e) => Err(Remote::Failed(e.into_raft(leader))),
        }
    }

    async fn forward(
        &self,
        leader: u64,
        addr: &str,
        cmds: Vec<Command>,
    ) -> Result<Written, Remote> {
        let sent = match cmds.as_slice() {
            [one] => answer_count(one),
            _ => cmds.len(),
        };
        let uncertain = |source: RaftError| {
            Remote::Failed(RaftError::ForwardUncertain {
                leader,
                source: Box::new(source),
            })
        };
        // Idempotent: every forward is one keyed entry, which the state machine applies
        // once and answers again with the first answers; so it may go out on a pooled
        // connection and again on a new one when that one turns out closed (a handshake
        // per forward cost more CPU than the write itself).
        let reply = self
            .call(leader, addr, Call::Forward(cmds), FORWARD_TIMEOUT, true)
            .await
            .map_err(|e| match e {
                Remote::Failed(e) => uncertain(e),
                not_done => not_done,
            })?;
        match reply {
            Reply::Forward(Ok(w)) if w.answers.len() == sent => Ok(w),
            Reply::Forward(Ok(w)) => Err(Remote::Failed(RaftError::BatchAnswers {
                sent,
                got: w.answers.len(),
            })),
            Reply::Forward(Err(Refusal::NotLeader { node, leader })) => {
                Err(Remote::NotDone(RaftError::NotLeader {
                    node_id: node,
                    leader,
                }))
            }
            Reply::Forward(Err(Refusal::Failed { reason, .. })) => {
                Err(Remote::Failed(RaftError::ForwardFailed { leader, reason }))
            }
            _ => Err(uncertain(RaftError::PeerReply { target: leader })),
        }
    }

    async fn remote_read_index(&self, leader: u64, addr: &str) -> Result<u64, Remote> {
        let reply = self
            .call(leader, addr, Call::ReadIndex, READ_TIMEOUT, true)
            .await?;
        match reply {
            Reply::ReadIndex(Ok(index)) => Ok(index),
            Reply::ReadIndex(Err(Refusal::NotLeader { node, leader })) => {
                Err(Remote::NotDone(RaftError::NotLeader {
                    node_id: node,
                    leader,
                }))
            }
            Reply::ReadIndex(Err(Refusal::Failed { reason, .. })) => {
                Err(Remote::Failed(RaftError::ReadRefused { leader, reason }))
            }
            _ => Err(Remote::Failed(RaftError::PeerReply { target: leader })),
        }
    }
}

impl Store {
    /// Run `f` on a state that includes every write committed before this call began,
    /// wherever it was made (a linearizable read), and return its result.
    ///
    /// The leader confirms with a quorum that it still leads and names the log index to
    /// wait for; this node (leader or follower) waits until it has applied that index,
    /// then reads as [`Store::read`] does. Use where reading a stale state would be wrong
    /// (an API answer right after a write through another controller); [`Store::read`] is
    /// enough on the leader's own write path.
    pub async fn read_linearizable<R>(
        &self,
        f: impl FnOnce(&ClusterState) -> R,
    ) -> Result<R, RaftError> {
        let index = self.router().read_index().await?;
        self.wait_applied(index, "not applied up to the leader's read index")
            .await?;
        Ok(self.read(f))
    }

    /// Wait until this node has applied log `index`, for up to [`READ_TIMEOUT`]; `what`
    /// names the wait in the timeout's error.
    pub(super) async fn wait_applied(
        &self,
        index: u64,
        what: &'static str,
    ) -> Result<(), RaftError> {
        let mut applied = self.watch();
        let caught_up = tokio::time::timeout(READ_TIMEOUT, async {
            applied.wait_for(|&a| a >= index).await.map(|_| ())
        })
        .await;
        match caught_up {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(RaftError::Closed),
            Err(_) => Err(RaftError::ReadTimeout {
                node_id: self.node_id(),
                what,
                secs: READ_TIMEOUT.as_secs(),
            }),
        }
    }
}
