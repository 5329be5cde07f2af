//! Keyed groups ([`Command::Keyed`]) through the pure apply: a key applies once, is
//! answered the same every time, stays bounded, and survives a snapshot.

use crate::codec;
use crate::proposal_key::{ProposalKey, KEYS_PER_ORIGIN, MAX_ORIGINS};
use crate::state::{ClusterState, Command, StateError};

fn key(origin: u64, seq: u64) -> ProposalKey {
    ProposalKey {
        origin,
        incarnation: 77,
        seq,
    }
}

fn create(n: u8, name: &str) -> Command {
    Command::CreateContainer {
        container: Box::new(crate::fixtures::container(n, name)),
    }
}

fn keyed(key: ProposalKey, commands: Vec<Command>) -> Command {
    Command::Keyed { key, commands }
}

/// The same group proposed twice under one key (a retry after a lost answer): one
/// container, and the retry answered as the first try was, not "name in use".
#[test]
fn a_key_applied_twice_has_one_effect_and_the_same_answers() {
    let mut s = ClusterState::default();
    s.apply(&create(9, "taken")).unwrap();
    let group = keyed(key(1, 0), vec![create(1, "web"), create(2, "taken")]);
    let first = s.apply_entry(&group);
    assert!(first[0].is_ok());
    assert!(matches!(first[1], Err(StateError::NameInUse { .. })));
    let after_first = s.clone();
    let again = s.apply_entry(&group);
    assert_eq!(again, first, "the stored answers");
    assert_eq!(s, after_first, "nothing changed");
    assert_eq!(
        s.containers
            .values()
            .filter(|c| c.name.as_str() == "web")
            .count(),
        1
    );
    // `apply` of the entry (one answer) dedups too.
    assert_eq!(s.apply(&group), first[1].clone());
    assert_eq!(s, after_first);

    // Another key is another proposal: applied, and refused as a second create is.
    let other = s.apply_entry(&keyed(key(1, 1), vec![create(3, "web")]));
    assert!(matches!(other[0], Err(StateError::NameInUse { .. })));
    // Unkeyed commands are applied every time, as before.
    assert!(s.apply(&create(4, "web")).is_err());
}

/// A keyed group is applied as a batch of the same commands would be.
#[test]
fn a_keyed_group_applies_as_its_batch() {
    let cmds = vec![create(1, "aa"), create(2, "aa"), create(3, "bb")];
    let mut batch = ClusterState::default();
    let want = batch.apply_entry(&Command::Batch(cmds.clone()));
    let mut s = ClusterState::default();
    assert_eq!(s.apply_entry(&keyed(key(5, 0), cmds)), want);
    assert_eq!(s.containers, batch.containers);
    assert_eq!(s.applied_keys.len(), 1);
}

/// However many groups are applied, the table keeps at most its bound, and the newest
/// key of each origin still dedups.
#[test]
fn the_table_of_keys_stays_bounded() {
    let mut s = ClusterState::default();
    for n in 0..2000u64 {
        let origin = n % (MAX_ORIGINS as u64 + 5);
        s.apply_entry(&keyed(
            key(origin, n),
            vec![Command::Untag {
                reference: format!("x:{n}"),
            }],
        ));
    }
    assert!(s.applied_keys.len() <= KEYS_PER_ORIGIN * MAX_ORIGINS);
    let last = key(1999 % (MAX_ORIGINS as u64 + 5), 1999);
    let before = s.clone();
    let answers = s.apply_entry(&keyed(last, vec![create(1, "late")]));
    assert_eq!(s, before, "a remembered key applies nothing");
    assert!(answers[0].is_err(), "its answer: the untag's");
}

/// A snapshot (the encoded state) carries the keys: a node that installs it, as a new
/// leader may have, answers a retry from it instead of applying it again.
#[test]
fn applied_keys_survive_a_snapshot() {
    let mut s = ClusterState::default();
    let group = keyed(key(2, 4), vec![create(1, "web")]);
    let first = s.apply_entry(&group);
    let bytes = codec::encode(&s).unwrap();
    let mut installed: ClusterState = codec::decode(&bytes).unwrap();
    assert_eq!(installed, s);
    assert_eq!(installed.apply_entry(&group), first);
    assert_eq!(installed, s, "the retry changed nothing");
}
