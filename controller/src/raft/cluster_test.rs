//! Three controllers' [`Store`]s in one process over loopback mutual TLS (see
//! [`peer_harness`](super::peer_harness)): membership changes, forwarded writes,
//! linearizable reads on followers, a new leader after the leader stops, restarts, and
//! catching up by snapshot after a purge.

use openraft::{Config, SnapshotPolicy};

use super::peer_harness::{has, put, three, wait_leader, wait_state, Peer, TestCa, WAIT};
use super::rpc::{Call, Refusal, Reply};
use super::store::default_config;
use super::{OpenMode, RaftError, Store, TlsNetwork};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_controllers_replicate_forward_and_read_linearizably() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();

    let members = stores[0].members();
    let seen: Vec<(u64, &str, bool, bool, bool)> = members
        .iter()
        .map(|m| (m.id, m.addr.as_str(), m.voter, m.leader, m.reachable))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, peers[0].addr.as_str(), true, true, true),
            (2, peers[1].addr.as_str(), true, false, true),
            (3, peers[2].addr.as_str(), true, false, true),
        ]
    );
    assert_eq!(stores[2].leader(), Some((1, peers[0].addr.clone())));
    let err = stores[1].add_controller(4, "127.0.0.1:1".into()).await;
    assert!(
        matches!(
            err,
            Err(RaftError::NotLeader {
                leader: Some(1),
                ..
            })
        ),
        "{err:?}"
    );

    // A follower asked to write a forwarded command refuses it, names the leader, and
    // nothing is written.
    let net = TlsNetwork::new(ca.client_config(9));
    let call = Call::Forward(vec![put(7)]);
    let reply = net
        .call(2, &peers[1].addr, call, WAIT, false)
        .await
        .unwrap();
    assert!(
        matches!(
            reply,
            Reply::Forward(Err(Refusal::NotLeader {
                node: 2,
                leader: Some(1)
            }))
        ),
        "{reply:?}"
    );
    assert!(!stores[0].read_linearizable(|s| has(s, 7)).await.unwrap());

    // A write on a follower is forwarded to the leader and applied everywhere.
    assert_eq!(stores[1].propose(put(1)).await.unwrap(), Ok(()));
    for s in &stores {
        wait_state(s, "image 1", |st| has(st, 1)).await;
    }

    // Concurrent writes on a follower go to the leader as groups; each gets its answer.
    let writes: Vec<_> = (10..30)
        .map(|n| {
            let s = stores[2].clone();
            tokio::spawn(async move { s.propose(put(n)).await })
        })
        .collect();
    for w in writes {
        assert_eq!(w.await.unwrap().unwrap(), Ok(()));
    }

    // A write committed through one follower is seen by a linearizable read on the other.
    for n in 100..105 {
        stores[1].propose(put(n)).await.unwrap().unwrap();
        let seen = stores[2].read_linearizable(|s| has(s, n)).await.unwrap();
        assert!(seen, "read on node 3 after write {n} through node 2");
    }
    assert!(stores[0].read_linearizable(|s| has(s, 104)).await.unwrap());
    assert!(stores[2].read(|s| (10..30).all(|n| has(s, n))));

    // Removing a follower leaves two voters that still accept writes.
    stores[0].remove_member(3).await.unwrap();
    peers[2].stop().await;
    let ids: Vec<u64> = stores[0].members().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2]);
    assert_eq!(stores[1].propose(put(200)).await.unwrap(), Ok(()));
    wait_state(&stores[0], "image 200", |s| has(s, 200)).await;
    let err = stores[0].remove_member(3).await;
    assert!(
        matches!(err, Err(RaftError::UnknownMember { id: 3 })),
        "{err:?}"
    );

    for p in &peers[..2] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_voter_cannot_be_removed() {
    let ca = TestCa::new();
    let peer = Peer::new(&ca, 1).await;
    let store = peer.open(OpenMode::Bootstrap, default_config()).await;
    let err = store.remove_member(1).await;
    assert!(
        matches!(err, Err(RaftError::LastVoter { id: 1 })),
        "{err:?}"
    );
    assert_eq!(store.propose(put(1)).await.unwrap(), Ok(()));
    assert!(store.read_linearizable(|s| has(s, 1)).await.unwrap());
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_and_a_restarted_member_catches_up() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();
    stores[2].propose(put(1)).await.unwrap().unwrap();

    // The leader stops: one of the other two leads, and both accept writes.
    let old = wait_leader(&stores).await;
    peers[old].stop().await;
    let rest: Vec<Store> = (0..3)
        .filter(|&i| i != old)
        .map(|i| stores[i].clone())
        .collect();
    drop(stores);
    let new = wait_leader(&rest).await;
    assert_ne!(rest[new].node_id(), peers[old].id);
    for (i, s) in rest.iter().enumerate() {
        let n = 10 + i as u32;
        assert_eq!(
            s.propose(put(n)).await.unwrap(),
            Ok(()),
            "write on node {}",
            s.node_id()
        );
    }
    for s in &rest {
        assert!(s
            .read_linearizable(|st| has(st, 10) && has(st, 11))
            .await
            .unwrap());
    }

    // The old leader restarts with its data, follows, and catches up.
    let back = peers[old].open(OpenMode::Join, default_config()).await;
    wait_state(&back, "writes made while it was down", |s| {
        has(s, 1) && has(s, 10) && has(s, 11)
    })
    .await;
    assert!(!back.is_leader() || back.node_id() == rest[new].node_id());
    assert_eq!(back.propose(put(20)).await.unwrap(), Ok(()));
    for s in &rest {
        wait_state(s, "image 20", |st| has(st, 20)).await;
    }

    for p in &peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_a_purge_catches_up_by_snapshot() {
    let small = || Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..default_config()
    };
    let ca = TestCa::new();
    let peers = three(&ca, small).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();
    let leader = wait_leader(&stores).await;
    let lagging = (leader + 1) % 3;
    stores[leader].propose(put(1)).await.unwrap().unwrap();
    wait_state(&stores[lagging], "image 1", |s| has(s, 1)).await;
    let behind = stores[lagging]
        .raft()
        .metrics()
        .borrow()
        .last_log_index
        .unwrap_or(0);
    let others: Vec<Store> = (0..3)
        .filter(|&i| i != lagging)
        .map(|i| stores[i].clone())
        .collect();
    let leader = others
        .iter()
        .position(|s| s.node_id() == stores[leader].node_id())
        .unwrap();
    drop(stores);
    peers[lagging].stop().await;

    for n in 10..40 {
        others[leader].propose(put(n)).await.unwrap().unwrap();
    }
    // The leader has purged past everything the stopped member has: it can only catch up
    // from a snapshot.
    others[leader]
        .raft()
        .wait(Some(WAIT))
        .metrics(
            |m| m.purged.is_some_and(|p| p.index > behind + 5),
            "leader purged past the stopped member",
        )
        .await
        .unwrap();

    let back = peers[lagging].open(OpenMode::Join, small()).await;
    wait_state(&back, "writes made while it was down", |s| {
        (10..40).all(|n| has(s, n))
    })
    .await;
    let snapshot = back.raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some_and(|s| s.index > behind),
        "installed snapshot {snapshot:?}, was at {behind}"
    );
    // Received into a file of its own, which became its snapshot; nothing else is left.
    let files: Vec<String> = std::fs::read_dir(back.snapshot_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.len() == 1 && files[0].starts_with("snapshot-"),
        "{files:?}"
    );

    for p in &peers {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_removes_itself_hands_over() {
    let ca = TestCa::new();
    let peers = three(&ca, default_config).await;
    let stores: Vec<Store> = peers.iter().map(Peer::store).collect();
    stores[0].remove_member(1).await.unwrap();

    let rest = stores[1..].to_vec();
    let new = wait_leader(&rest).await;
    let ids: Vec<u64> = rest[new].members().iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![2, 3]);
    for s in &rest {
        assert_eq!(s.propose(put(s.node_id() as u32)).await.unwrap(), Ok(()));
    }
    assert!(rest[0]
        .read_linearizable(|s| has(s, 2) && has(s, 3))
        .await
        .unwrap());

    drop((stores, rest));
    for p in &peers {
        p.stop().await;
    }
}
