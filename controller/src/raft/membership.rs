//! Which controllers form the cluster: adding one (learner, catch up, voter), removing one,
//! and the membership as this node sees it ([`Member`], decided by the pure
//! [`members_view`] from openraft's metrics and the network's last contacts).
//!
//! Whether the cluster has 1, 3 or 5 voters is the operator's choice; the store only refuses
//! to remove the last voter.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError as ApiError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};

use super::network::PeerNetwork;
use super::store::ELECTION_MIN_MS;
use super::{RaftError, Store};

/// How long [`Store::add_controller`] waits for a new controller to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

/// How recently the leader must have had an answer from a peer to call it reachable: two
/// election timeouts, many heartbeats.
const REACHABLE_WITHIN: Duration = Duration::from_millis(2 * ELECTION_MIN_MS);

/// One controller of the Raft membership, as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its node id.
    pub id: u64,
    /// Its cluster address (`IP:port`).
    pub addr: String,
    /// Whether it votes (else it is a learner that only receives the log).
    pub voter: bool,
    /// Whether this node believes it leads.
    pub leader: bool,
    /// Whether it answers: this node itself always; on the leader, a peer that answered a
    /// call within two election timeouts; on a follower, the leader it follows.
    pub reachable: bool,
}

/// The members in `metrics`' membership with what this node knows of them; pure.
///
/// `contacts` is when each peer last answered this node (see
/// [`TlsNetwork::last_contacts`](super::TlsNetwork::last_contacts)).
pub(super) fn members_view(
    metrics: &RaftMetrics<u64, BasicNode>,
    contacts: &BTreeMap<u64, Instant>,
    now: Instant,
) -> Vec<Member> {
    let membership = metrics.membership_config.membership();
    let voters: BTreeSet<u64> = membership.voter_ids().collect();
    let leading = metrics.state == ServerState::Leader;
    let recent = |id: &u64| {
        contacts
            .get(id)
            .is_some_and(|&at| now.saturating_duration_since(at) <= REACHABLE_WITHIN)
    };
    membership
        .nodes()
        .map(|(&id, node)| {
            let reachable =
                id == metrics.id || recent(&id) || (!leading && metrics.current_leader == Some(id));
            Member {
                id,
                addr: node.addr.clone(),
                voter: voters.contains(&id),
                leader: metrics.current_leader == Some(id),
                reachable,
            }
        })
        .collect()
}

impl Store {
    /// The controllers in the membership as this node sees it, by id.
    pub fn members(&self) -> Vec<Member> {
        let metrics = self.raft().metrics().borrow().clone();
        let contacts = match self.network() {
            PeerNetwork::Tls(n) => n.last_contacts(),
            PeerNetwork::None(_) => BTreeMap::new(),
        };
        members_view(&metrics, &contacts, Instant::now())
    }

    /// The leader this node knows of, with its cluster address.
    pub fn leader(&self) -> Option<(u64, String)> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        Some((id, addr))
    }

    /// Whether this node believes it leads (without asking a quorum; see
    /// [`Store::read_linearizable`] for a confirmed answer).
    pub fn is_leader(&self) -> bool {
        let metrics = self.raft().metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.node_id())
    }

    fn require_leader(&self) -> Result<(), RaftError> {
        if self.is_leader() {
            return Ok(());
        }
        Err(RaftError::NotLeader {
            node_id: self.node_id(),
            leader: self.leader().map(|(id, _)| id),
        })
    }

    fn membership_error(
        &self,
        what: String,
        e: ApiError<u64, ClientWriteError<u64, BasicNode>>,
    ) -> RaftError {
        match e {
            ApiError::APIError(ClientWriteError::ForwardToLeader(f)) => RaftError::NotLeader {
                node_id: self.node_id(),
                leader: f.leader_id,
            },
            e => RaftError::Membership {
                what,
                source: Box::new(e),
            },
        }
    }

    /// Add controller `id`, reachable at `addr`, as a voter: first as a learner, then, once
    /// it has caught up with the log, as a voter. Call on the leader, after the new
    /// controller's store is open in [`OpenMode::Join`](super::OpenMode::Join).
    ///
    /// Adding a voter again is a no-op; a learner (a former add that did not catch up in
    /// time) is caught up and promoted. Fails with [`RaftError::NotLeader`] elsewhere, and
    /// with [`RaftError::CatchUp`] if it does not catch up within two minutes (it then stays
    /// a learner).
    pub async fn add_controller(&self, id: u64, addr: String) -> Result<(), RaftError> {
        self.require_leader()?;
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if let Some(node) = membership.get_node(&id) {
            if node.addr != addr {
                return Err(RaftError::MemberAddr {
                    id,
                    have: node.addr.clone(),
                    want: addr,
                });
            }
            if membership.voter_ids().any(|v| v == id) {
                return Ok(());
            }
        }
        tracing::info!(id, %addr, "adding controller as raft learner");
        let added = self
            .raft()
            .add_learner(id, BasicNode::new(addr), false)
            .await
            .map_err(|e| self.membership_error(format!("add learner {id}"), e))?;
        let target = added.log_id.index;
        let caught_up = self
            .raft()
            .wait(Some(CATCH_UP_TIMEOUT))
            .metrics(
                |m| {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten());
                    matched.is_some_and(|l| l.index >= target) || m.state != ServerState::Leader
                },
                "new controller caught up",
            )
            .await
            .map_err(|_| RaftError::CatchUp {
                id,
                secs: CATCH_UP_TIMEOUT.as_secs(),
            })?;
        if caught_up.state != ServerState::Leader {
            return Err(RaftError::NotLeader {
                node_id: self.node_id(),
                leader: caught_up.current_leader,
            });
        }
        tracing::info!(id, "controller caught up; promoting it to raft voter");
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| self.membership_error(format!("promote {id} to voter"), e))?;
        Ok(())
    }

    /// Remove controller `id` from the membership (voter or learner). Call on the leader;
    /// refuses to remove the last voter. The removed controller stops receiving the log;
    /// stop it and do not reuse its id.
    pub async fn remove_member(&self, id: u64) -> Result<(), RaftError> {
        self.require_leader()?;
        let metrics = self.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(RaftError::UnknownMember { id });
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(RaftError::LastVoter { id });
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(id, "removing controller from raft membership");
        self.raft()
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(format!("remove {id}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{Membership, StoredMembership};
    use std::sync::Arc;

    fn metrics(me: u64, state: ServerState, leader: Option<u64>) -> RaftMetrics<u64, BasicNode> {
        let nodes = BTreeMap::from([
            (1, BasicNode::new("10.0.0.1:7000")),
            (2, BasicNode::new("10.0.0.2:7000")),
            (3, BasicNode::new("10.0.0.3:7000")),
        ]);
        let membership = Membership::new(vec![BTreeSet::from([1, 2])], nodes);
        let mut m = RaftMetrics::new_initial(me);
        m.state = state;
        m.current_leader = leader;
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    #[test]
    fn the_leader_sees_peers_that_answered_recently_as_reachable() {
        let now = Instant::now();
        let contacts = BTreeMap::from([
            (2, now - Duration::from_millis(300)),
            (3, now - REACHABLE_WITHIN - Duration::from_millis(1)),
        ]);
        let view = members_view(&metrics(1, ServerState::Leader, Some(1)), &contacts, now);
        let want = vec![
            Member {
                id: 1,
                addr: "10.0.0.1:7000".into(),
                voter: true,
                leader: true,
                reachable: true,
            },
            Member {
                id: 2,
                addr: "10.0.0.2:7000".into(),
                voter: true,
                leader: false,
                reachable: true,
            },
            Member {
                id: 3,
                addr: "10.0.0.3:7000".into(),
                voter: false,
                leader: false,
                reachable: false,
            },
        ];
        assert_eq!(view, want);
    }

    #[test]
    fn a_follower_sees_itself_and_its_leader_as_reachable() {
        let now = Instant::now();
        let view = members_view(
            &metrics(3, ServerState::Learner, Some(2)),
            &BTreeMap::new(),
            now,
        );
        let reachable: Vec<(u64, bool, bool)> =
            view.iter().map(|m| (m.id, m.leader, m.reachable)).collect();
        assert_eq!(
            reachable,
            vec![(1, false, false), (2, true, true), (3, false, true)]
        );
    }
}
