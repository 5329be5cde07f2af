//! Idempotency keys of proposal groups, and the bounded table of the keys the state machine
//! has applied with their answers.
//!
//! The controller that receives a write (the stock docker CLI sends no key) puts every group
//! of commands it proposes under a [`ProposalKey`] of its own making, and proposes the group
//! again under the same key when it cannot tell whether the first try was applied (the
//! leader was lost between commit and answer). [`ClusterState::apply_entry`] applies a key
//! once; a later entry with the same key changes nothing and is answered what the first
//! was, from [`AppliedKeys`]. The table is part of the replicated state, and so of
//! snapshots: a new leader knows the keys its predecessor applied.
//!
//! ```text
//!   controller: key = (origin, incarnation, seq) ── Keyed { key, commands } ──> Raft log
//!   apply:      key in AppliedKeys? ── yes ──> its stored answers, state unchanged
//!                                   └─ no ───> apply each command, remember (key, answers)
//! ```
//!
//! The table is bounded without a clock: per origin, its last [`KEYS_PER_ORIGIN`] keys; at
//! most [`MAX_ORIGINS`] origins, the one whose last key was applied longest ago (counted
//! in keyed entries applied) forgotten first. An origin proposes one group at a time and
//! retries only that one, so a retry always finds its key.
//!
//! [`ClusterState::apply_entry`]: crate::state::ClusterState::apply_entry

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::state::Response;

/// Keys remembered per origin. An origin has one group in flight at a time, so one would
/// do; the rest is margin.
pub const KEYS_PER_ORIGIN: usize = 8;

/// Origins remembered (controllers that proposed, over the cluster's life).
pub const MAX_ORIGINS: usize = 32;

/// The idempotency key of one group of commands, made by the controller that received them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalKey {
    /// The Raft node id of the controller that made the key.
    pub origin: u64,
    /// Random for each start of that controller's store: a restart never reuses a key.
    pub incarnation: u64,
    /// Counts that incarnation's groups.
    pub seq: u64,
}

impl std::fmt::Display for ProposalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:016x}/{}", self.origin, self.incarnation, self.seq)
    }
}

/// One applied key of an origin, with the answers of its commands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct AppliedKey {
    incarnation: u64,
    seq: u64,
    answers: Vec<Response>,
}

/// What is remembered of one origin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct OriginKeys {
    /// The value of [`AppliedKeys::applied`] when its last key was applied.
    last: u64,
    /// Its last keys, oldest first.
    keys: VecDeque<AppliedKey>,
}

/// The keys of the last keyed entries applied, with their answers; bounded (see the module
/// documentation). Part of [`ClusterState`](crate::state::ClusterState) (state format 6).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedKeys {
    /// Keyed entries applied so far: the clock that orders origins for forgetting.
    applied: u64,
    /// By origin.
    origins: BTreeMap<u64, OriginKeys>,
}

impl AppliedKeys {
    /// The answers the entry with `key` was given, if it was applied and is still
    /// remembered.
    pub fn answers(&self, key: &ProposalKey) -> Option<&[Response]> {
        self.origins
            .get(&key.origin)?
            .keys
            .iter()
            .find(|k| k.incarnation == key.incarnation && k.seq == key.seq)
            .map(|k| k.answers.as_slice())
    }

    /// Remember that the entry with `key` was applied and answered `answers`, forgetting
    /// the oldest keys beyond the bounds; call once per key, from apply.
    pub fn record(&mut self, key: ProposalKey, answers: Vec<Response>) {
        self.applied += 1;
        let origin = self.origins.entry(key.origin).or_default();
        origin.last = self.applied;
        origin.keys.push_back(AppliedKey {
            incarnation: key.incarnation,
            seq: key.seq,
            answers,
        });
        while origin.keys.len() > KEYS_PER_ORIGIN {
            origin.keys.pop_front();
        }
        while self.origins.len() > MAX_ORIGINS {
            let oldest = self
                .origins
                .iter()
                .min_by_key(|(id, o)| (o.last, **id))
                .map(|(id, _)| *id);
            match oldest {
                Some(id) => self.origins.remove(&id),
                None => break,
            };
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.origins.values().map(|o| o.keys.len()).sum()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateError;

    fn key(origin: u64, seq: u64) -> ProposalKey {
        ProposalKey {
            origin,
            incarnation: 0xfeed,
            seq,
        }
    }

    #[test]
    fn a_recorded_key_is_answered_and_another_is_not() {
        let mut t = AppliedKeys::default();
        let answers = vec![Ok(()), Err(StateError::NoSuchContainer("x".into()))];
        t.record(key(1, 0), answers.clone());
        assert_eq!(t.answers(&key(1, 0)), Some(answers.as_slice()));
        assert_eq!(t.answers(&key(1, 1)), None);
        assert_eq!(t.answers(&key(2, 0)), None);
        let other_start = ProposalKey {
            incarnation: 0xbeef,
            ..key(1, 0)
        };
        assert_eq!(t.answers(&other_start), None, "a restart's keys are new");
    }

    #[test]
    fn each_origin_keeps_its_last_keys_and_the_oldest_origins_go() {
        let mut t = AppliedKeys::default();
        for seq in 0..(KEYS_PER_ORIGIN as u64 + 3) {
            t.record(key(1, seq), vec![Ok(())]);
        }
        assert_eq!(t.len(), KEYS_PER_ORIGIN);
        assert_eq!(t.answers(&key(1, 2)), None, "forgotten");
        assert!(t.answers(&key(1, 3)).is_some());
        // Origin 1 is the oldest once others follow it; its last key survives them all
        // but one round.
        for origin in 2..=(MAX_ORIGINS as u64) {
            t.record(key(origin, 0), vec![Ok(())]);
        }
        assert!(t.answers(&key(1, 3)).is_some(), "{MAX_ORIGINS} origins fit");
        t.record(key(1000, 0), vec![Ok(())]);
        assert_eq!(t.answers(&key(1, 3)), None, "the oldest origin went");
        assert!(t.answers(&key(2, 0)).is_some());
        assert_eq!(t.len(), MAX_ORIGINS);
        // Whatever comes, the table stays bounded.
        for n in 0..1000 {
            t.record(key(n % 97, n), vec![Ok(())]);
        }
        assert!(t.len() <= KEYS_PER_ORIGIN * MAX_ORIGINS);
        assert_eq!(t.origins.len(), MAX_ORIGINS);
    }

    #[test]
    fn the_table_is_the_same_whoever_applies_the_same_keys() {
        let run = || {
            let mut t = AppliedKeys::default();
            for n in 0..500u64 {
                t.record(key(n * 7 % 41, n), vec![Ok(())]);
            }
            t
        };
        assert_eq!(run(), run());
    }
}
