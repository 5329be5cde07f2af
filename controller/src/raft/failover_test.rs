//! Writes through every controller while the leader stops: a history of what each
//! proposal was told, checked against the state the cluster ends with. A write told it
//! succeeded is there; a write told it certainly did not happen is not; the restarted
//! leader ends with the same state as the others.

use std::time::Duration;

use super::peer_harness::{has, image, put, three, wait_leader, wait_state, TestCa};
use super::store::default_config;
use super::{OpenMode, RaftError, Store};

/// What a proposal was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Committed and applied.
    Written,
    /// Certainly not written.
    NotWritten,
    /// May or may not have been written.
    Unknown,
}

/// The outcome `result` tells of a proposal; pure.
fn outcome(result: &Result<Result<(), wharf_protocol::state::StateError>, RaftError>) -> Outcome {
    match result {
        Ok(Ok(())) => Outcome::Written,
        Ok(Err(_)) => Outcome::Unknown,
        Err(RaftError::NoLeader { .. } | RaftError::NotLeader { .. } | RaftError::Closed) => {
            Outcome::NotWritten
        }
        Err(_) => Outcome::Unknown,
    }
}

/// Propose images `first..first + count` one after the other on `store`.
async fn write_many(store: Store, first: u32, count: u32) -> Vec<(u32, Outcome)> {
    let mut history = Vec::new();
    for n in first..first + count {
        let result = store.propose(put(n)).await;
        history.push((n, outcome(&result)));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    history
}

/// Whether each image of `history` is in `store`'s state, read linearizably.
async fn present(store: &Store, history: &[(u32, Outcome)]) -> Vec<(u32, bool)> {
    store
        .read_linearizable(|st| {
            history
                .iter()
                .map(|(n, _)| (*n, st.images.contains_key(&image(*n).id)))
                .collect()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_during_a_failover_keep_what_they_were_told() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(|p| p.store()).collect();
    let old = wait_leader(&stores).await;

    let writers: Vec<_> = stores
        .iter()
        .enumerate()
        .map(|(i, s)| tokio::spawn(write_many(s.clone(), 1000 * (i as u32 + 1), 60)))
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    peers[old].stop().await;

    let mut history = Vec::new();
    for w in writers {
        history.extend(w.await.unwrap());
    }
    let rest: Vec<Store> = (0..3)
        .filter(|&i| i != old)
        .map(|i| stores[i].clone())
        .collect();
    drop(stores);
    wait_leader(&rest).await;

    for s in &rest {
        let n = 9000 + s.node_id() as u32;
        let result = s.propose(put(n)).await;
        assert_eq!(outcome(&result), Outcome::Written, "{result:?}");
        history.push((n, Outcome::Written));
    }
    let seen = present(&rest[0], &history).await;
    for ((n, told), (_, present)) in history.iter().zip(&seen) {
        match told {
            Outcome::Written => assert!(present, "write {n} was acknowledged but is lost"),
            Outcome::NotWritten => assert!(!present, "write {n} was refused but is there"),
            Outcome::Unknown => {}
        }
    }
    assert_eq!(
        present(&rest[1], &history).await,
        seen,
        "the survivors agree"
    );

    // The old leader comes back and ends with the same state.
    let back = peers[old].open(OpenMode::Join, default_config()).await;
    let last = 9000 + rest[1].node_id() as u32;
    wait_state(&back, "the survivors' writes", |s| has(s, last)).await;
    assert_eq!(
        present(&back, &history).await,
        seen,
        "the restarted leader agrees"
    );

    for p in &peers {
        p.stop().await;
    }
}
