//! Keyed writes whose answer is lost: the decision to try again ([`Retry`], pure), and
//! three controllers where the leader does a forwarded create and its answer never reaches
//! the follower, which sends the same entry again and gets the first answer.

use std::time::Duration;

use tokio::time::Instant;
use wharf_protocol::state::{Command, StateError};

use super::forward::{Attempt, Next, Retry, Written, LEADER_WAIT, WRITE_TIMEOUT};
use super::peer_harness::{image, put, three, wait_leader, wait_state, Peer, TestCa};
use super::store::default_config;
use super::{RaftError, Store};

fn no_leader() -> RaftError {
    RaftError::NoLeader {
        node_id: 2,
        secs: 10,
    }
}

fn lost() -> RaftError {
    RaftError::ForwardUncertain {
        leader: 1,
        source: Box::new(RaftError::PeerClosed),
    }
}

/// A write that certainly did nothing is tried until `LEADER_WAIT`, then fails saying so.
#[test]
fn not_done_is_tried_again_until_the_leader_wait_then_fails_as_not_written() {
    let start = Instant::now();
    let mut retry = Retry::new(start);
    assert!(matches!(
        retry.after(
            Attempt::NotDone(no_leader()),
            start + Duration::from_secs(1)
        ),
        Next::Again
    ));
    let last = retry.after(Attempt::NotDone(no_leader()), start + LEADER_WAIT);
    assert!(
        matches!(last, Next::Answer(Err(RaftError::NoLeader { .. }))),
        "{last:?}"
    );
}

/// Once a try may have been applied, tries go on for `WRITE_TIMEOUT` after it, and giving
/// up never says "not written", whatever the last try said.
#[test]
fn an_uncertain_try_extends_the_wait_and_giving_up_is_undecided() {
    let start = Instant::now();
    let mut retry = Retry::new(start);
    let lost_at = start + Duration::from_secs(8);
    assert!(matches!(
        retry.after(Attempt::Uncertain(lost()), lost_at),
        Next::Again
    ));
    assert_eq!(retry.deadline(), lost_at + WRITE_TIMEOUT);
    // No leader past the first wait: still tried, the write may be in the new leader's log.
    assert!(matches!(
        retry.after(Attempt::NotDone(no_leader()), start + LEADER_WAIT),
        Next::Again
    ));
    assert!(matches!(
        retry.after(Attempt::Uncertain(lost()), lost_at + Duration::from_secs(1)),
        Next::Again
    ));
    assert_eq!(
        retry.deadline(),
        lost_at + WRITE_TIMEOUT,
        "not extended again"
    );
    let last = retry.after(Attempt::NotDone(no_leader()), lost_at + WRITE_TIMEOUT);
    match last {
        Next::Answer(Err(RaftError::Undecided { tries: 4, source })) => {
            assert!(matches!(*source, RaftError::NoLeader { .. }));
        }
        other => panic!("{other:?}"),
    }
    // A final failure after an uncertain try is undecided too.
    let mut retry = Retry::new(start);
    retry.after(Attempt::Uncertain(lost()), start);
    let last = retry.after(Attempt::Failed(RaftError::Closed), start);
    assert!(
        matches!(last, Next::Answer(Err(RaftError::Undecided { .. }))),
        "{last:?}"
    );
}

/// A success answers at once, even after uncertain tries: it is the one application's.
#[test]
fn an_answer_ends_the_tries() {
    let start = Instant::now();
    let mut retry = Retry::new(start);
    retry.after(Attempt::Uncertain(lost()), start);
    let written = Written {
        answers: vec![Ok(())],
        index: 7,
    };
    let got = retry.after(
        Attempt::Done(written.clone()),
        start + Duration::from_secs(2),
    );
    assert!(matches!(got, Next::Answer(Ok(ref w)) if w == &written));
    let mut retry = Retry::new(start);
    let got = retry.after(Attempt::Failed(RaftError::Closed), start);
    assert!(
        matches!(got, Next::Answer(Err(RaftError::Closed))),
        "{got:?}"
    );
}

fn create(name: &str) -> Command {
    let mut c = wharf_protocol::fixtures::container(1, name);
    c.run.image_id = image(1).id;
    Command::CreateContainer {
        container: Box::new(c),
    }
}

/// The leader commits a create forwarded by a follower and its answer is lost; the
/// follower sends the same keyed entry again: the caller gets the create's own answer (not
/// "name in use"), every controller has one container of that name, and the log shows the
/// entry twice under one key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_create_whose_answer_is_lost_is_answered_once() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();
    let leader = wait_leader(&stores).await;
    let follower = (leader + 1) % stores.len();
    assert_eq!(stores[follower].propose(put(1)).await.unwrap(), Ok(()));

    peers[leader].drop_forward_replies(1);
    let answer = stores[follower].propose(create("web")).await;
    assert_eq!(
        peers[leader].dropped_forward_replies(),
        1,
        "an answer was lost"
    );
    assert_eq!(answer.unwrap(), Ok(()), "the create's own answer");

    for s in &stores {
        wait_state(s, "the create", |st| !st.containers.is_empty()).await;
        let named = s
            .read_linearizable(|st| {
                st.containers
                    .values()
                    .filter(|c| c.name.as_str() == "web")
                    .count()
            })
            .await
            .unwrap();
        assert_eq!(named, 1, "node {}", s.node_id());
    }
    let keys: Vec<_> = stores[leader]
        .log_entries()
        .into_iter()
        .filter_map(|e| match e.payload {
            openraft::EntryPayload::Normal(Command::Keyed { key, commands })
                if commands.iter().any(|c| *c == create("web")) =>
            {
                Some(key)
            }
            _ => None,
        })
        .collect();
    assert_eq!(keys.len(), 2, "sent twice: {keys:?}");
    assert_eq!(keys[0], keys[1], "under one key");
    assert_eq!(keys[0].origin, stores[follower].node_id());

    // A new create of the same name is a new proposal, refused as Docker does.
    let again = stores[follower].propose(create("web")).await.unwrap();
    assert!(
        matches!(again, Err(StateError::NameInUse { .. })),
        "{again:?}"
    );
    for p in &peers {
        p.stop().await;
    }
}

#[tokio::test]
async fn reads_arriving_during_a_round_share_the_next_and_never_an_earlier_one() {
    use super::forward::ReadRounds;
    use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
    use std::sync::Arc;
    let rounds = Arc::new(ReadRounds::default());
    let ran = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // A round's index is its number × 10 (a later round, a later commit index).
    let round = |ran: Arc<AtomicU64>, gate: Arc<tokio::sync::Semaphore>| async move {
        let n = ran.fetch_add(1, SeqCst) + 1;
        gate.acquire().await.unwrap().forget();
        Ok::<u64, super::forward::Local>(n * 10)
    };
    let first = {
        let (rounds, ran, gate) = (rounds.clone(), ran.clone(), gate.clone());
        tokio::spawn(async move { rounds.read_index(|| round(ran, gate)).await.ok() })
    };
    while ran.load(SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Ten reads arrive while round 1 runs: none may take round 1's index.
    let late: Vec<_> = (0..10)
        .map(|_| {
            let (rounds, ran, gate) = (rounds.clone(), ran.clone(), gate.clone());
            tokio::spawn(async move { rounds.read_index(|| round(ran, gate)).await.ok() })
        })
        .collect();
    tokio::task::yield_now().await;
    gate.add_permits(100);
    assert_eq!(first.await.unwrap(), Some(10));
    for r in late {
        assert_eq!(
            r.await.unwrap(),
            Some(20),
            "the round begun after they arrived"
        );
    }
    assert_eq!(ran.load(SeqCst), 2, "the ten shared one round");
    // A read after both rounds ended runs a round of its own.
    let again = rounds
        .read_index(|| round(ran.clone(), gate.clone()))
        .await
        .ok();
    assert_eq!(again, Some(30));
}
