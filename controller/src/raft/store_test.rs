//! Tests of [`Store`] over a real RocksDB in a temporary directory: proposals, refusals,
//! restarts (with and without a purged log), the watch channel and the database lock.

use std::path::Path;
use std::time::Duration;

use openraft::{BasicNode, Entry, EntryPayload, LogId, Membership, SnapshotPolicy};
use wharf_protocol::codec;
use wharf_protocol::state::{ClusterState, Command, ContainerRecord, ImageRecord, StateError};
use wharf_protocol::{ContainerId, DiffId, Digest, ImageId};

use super::store::default_config;
use super::{NoNetwork, OpenMode, OpenOptions, RaftError, Store, TypeConfig};

const ADDR: &str = "127.0.0.1:7946";

fn image(n: u8) -> ImageRecord {
    let config = vec![b'{', n, b'}'];
    ImageRecord {
        id: ImageId(Digest::of(&config)),
        config,
        diff_ids: vec![DiffId(Digest::of(&[n]))],
        size: 10,
        loaded_ns: 1,
    }
}

fn container(n: u8, name: &str, img: &ImageRecord) -> ContainerRecord {
    let mut c = wharf_protocol::fixtures::container(n, name);
    c.created_ns = 5;
    c.run.image_id = img.id;
    c.run.diff_ids = img.diff_ids.clone();
    c
}

fn create(n: u8, name: &str, img: &ImageRecord) -> Command {
    Command::CreateContainer {
        container: Box::new(container(n, name, img)),
    }
}

/// `s` without its table of applied keys: every proposal goes in under a key, which a
/// model applying the plain commands does not have.
fn unkeyed(s: &ClusterState) -> ClusterState {
    ClusterState {
        applied_keys: Default::default(),
        ..s.clone()
    }
}

async fn open(dir: &Path) -> Store {
    Store::open(dir, 1, ADDR.to_string()).await.unwrap()
}

async fn close(store: Store) {
    store.shutdown().await.unwrap();
    drop(store);
}

/// Propose `cmd` to `store` and to the model; both must answer the same.
async fn propose_both(store: &Store, model: &mut ClusterState, cmd: Command) {
    let want = model.apply(&cmd);
    let got = store.propose(cmd).await.unwrap();
    assert_eq!(got, want);
}

#[tokio::test]
async fn proposed_commands_are_applied_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let img = image(1);
    let web = container(1, "web", &img);

    assert_eq!(
        store
            .propose(Command::PutImage { image: img.clone() })
            .await
            .unwrap(),
        Ok(())
    );
    let tag = Command::Tag {
        reference: "busybox:latest".into(),
        image: img.id,
    };
    assert_eq!(store.propose(tag).await.unwrap(), Ok(()));
    assert_eq!(store.propose(create(1, "web", &img)).await.unwrap(), Ok(()));

    store.read(|s| {
        assert_eq!(s.images.get(&img.id), Some(&img));
        assert_eq!(s.tags.get("busybox:latest"), Some(&img.id));
        assert_eq!(s.containers.get(&web.id), Some(&web));
    });
    close(store).await;
}

#[tokio::test]
async fn refused_command_returns_the_state_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let img = image(1);
    store
        .propose(Command::PutImage { image: img.clone() })
        .await
        .unwrap()
        .unwrap();
    store
        .propose(create(1, "web", &img))
        .await
        .unwrap()
        .unwrap();
    let before = store.read(unkeyed);

    let got = store.propose(create(2, "web", &img)).await.unwrap();
    assert!(
        matches!(got, Err(StateError::NameInUse { ref name, .. }) if name == "web"),
        "{got:?}"
    );
    let unknown = image(9);
    let got = store
        .propose(Command::Tag {
            reference: "x:latest".into(),
            image: unknown.id,
        })
        .await
        .unwrap();
    assert_eq!(got, Err(StateError::NoSuchImage(unknown.id.to_string())));
    let got = store
        .propose(Command::RemoveImage { image: img.id })
        .await
        .unwrap();
    assert!(matches!(got, Err(StateError::ImageInUse { .. })), "{got:?}");

    assert_eq!(store.read(unkeyed), before);
    close(store).await;
}

#[tokio::test]
async fn watch_advances_on_every_proposal() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let img = image(1);
    let mut rx = store.watch();
    let start = *rx.borrow_and_update();
    assert!(start > 0, "the cluster's first entries are applied at open");

    store
        .propose(Command::PutImage { image: img.clone() })
        .await
        .unwrap()
        .unwrap();
    assert!(rx.has_changed().unwrap());
    let after_put = *rx.borrow_and_update();
    assert!(after_put > start);

    // A refused command is still applied (as a no-op) and still moves the index.
    store
        .propose(Command::Untag {
            reference: "nope:latest".into(),
        })
        .await
        .unwrap()
        .unwrap_err();
    assert!(*rx.borrow_and_update() > after_put);

    // A waiter sees the container go away.
    store
        .propose(create(1, "web", &img))
        .await
        .unwrap()
        .unwrap();
    let id = ContainerId::from_bytes([1; 32]);
    let waiter = {
        let store = store.clone();
        let id = id.clone();
        let mut rx = store.watch();
        tokio::spawn(async move {
            while store.read(|s| s.containers.contains_key(&id)) {
                rx.changed().await.unwrap();
            }
        })
    };
    store
        .propose(Command::RemoveContainer { id })
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    close(store).await;
}

/// The layers watch moves when an image or layer record changes, not at a container's
/// entries (a node's layer tracking reads the layers again only then).
#[tokio::test]
async fn the_layers_watch_moves_only_with_images_and_layers() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let img = image(1);
    let mut layers = store.watch_layers();
    layers.borrow_and_update();
    let ok = |r: Result<wharf_protocol::state::Response, RaftError>| r.unwrap().unwrap();
    ok(store
        .propose(Command::PutImage { image: img.clone() })
        .await);
    assert!(layers.has_changed().unwrap(), "an image recorded");
    layers.borrow_and_update();
    ok(store.propose(create(1, "web", &img)).await);
    ok(store
        .propose(Command::RemoveContainer {
            id: ContainerId::from_bytes([1; 32]),
        })
        .await);
    assert!(!layers.has_changed().unwrap(), "containers only");
    ok(store.propose(Command::RemoveImage { image: img.id }).await);
    assert!(layers.has_changed().unwrap(), "an image removed");
    close(store).await;
}

#[tokio::test]
async fn state_survives_repeated_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let img = image(1);
    let mut model = ClusterState::default();
    let mut last_index = 0;
    for round in 0..4u8 {
        let store = open(dir.path()).await;
        assert_eq!(store.read(unkeyed), model, "state after restart {round}");
        let index = *store.watch().borrow();
        assert!(
            index >= last_index,
            "restart {round}: applied index {index} < {last_index}"
        );
        if round == 0 {
            propose_both(&store, &mut model, Command::PutImage { image: img.clone() }).await;
        }
        let name = format!("c{round}");
        propose_both(&store, &mut model, create(round + 1, &name, &img)).await;
        let id = ContainerId::from_bytes([round + 1; 32]);
        // A log holds what older builds wrote beside what this one writes.
        let started = if round % 2 == 0 {
            Command::ContainerRunning { id, at_ns: 7 }
        } else {
            Command::ContainerStarted {
                id,
                pid: 100 + u32::from(round),
                at_ns: 7,
            }
        };
        propose_both(&store, &mut model, started).await;
        // Refused: the name is taken.
        propose_both(&store, &mut model, create(200, &name, &img)).await;
        last_index = *store.watch().borrow();
        close(store).await;
    }
    let store = open(dir.path()).await;
    assert_eq!(store.read(unkeyed), model);
    assert_eq!(store.read(|s| s.containers.len()), 4);
    close(store).await;
}

#[tokio::test]
async fn restart_after_snapshot_and_purge_recovers_without_the_old_log() {
    let dir = tempfile::tempdir().unwrap();
    let config = || openraft::Config {
        snapshot_policy: SnapshotPolicy::LogsSinceLast(3),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..default_config()
    };
    let options = || OpenOptions {
        node_id: 1,
        addr: ADDR.to_string(),
        mode: OpenMode::Bootstrap,
        network: NoNetwork.into(),
    };
    let open_small = || Store::open_with_config(dir.path(), options(), config());
    let store = open_small().await.unwrap();
    let mut model = ClusterState::default();
    let img = image(1);
    propose_both(&store, &mut model, Command::PutImage { image: img.clone() }).await;
    for n in 1..=10u8 {
        propose_both(&store, &mut model, create(n, &format!("c{n}"), &img)).await;
    }
    let metrics = store
        .raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.purged.is_some() && m.snapshot.is_some(),
            "snapshot and purge",
        )
        .await
        .unwrap();
    let purged = metrics.purged.unwrap().index;
    assert!(purged >= 3, "purged up to {purged}");
    close(store).await;
    {
        // On disk, the log starts after the purged index.
        let db = super::db::Db::open(dir.path()).unwrap();
        let logs = db.cf(super::db::CF_LOGS);
        let first = db
            .rocks()
            .iterator_cf(logs, rocksdb::IteratorMode::Start)
            .next();
        if let Some(item) = first {
            let first = super::db::log_index(&item.unwrap().0).unwrap();
            assert!(
                first > purged,
                "log entry {first} survived a purge up to {purged}"
            );
        }
    }

    let store = open_small().await.unwrap();
    assert_eq!(store.read(unkeyed), model);
    let snapshot = store.raft().get_snapshot().await.unwrap();
    assert!(snapshot.is_some(), "the snapshot survives a restart");
    // Still writable after recovering from the snapshot.
    propose_both(&store, &mut model, create(11, "c11", &img)).await;
    assert_eq!(store.read(unkeyed), model);
    close(store).await;
}

#[tokio::test]
async fn second_open_of_the_same_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let err = Store::open(dir.path(), 1, ADDR.to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, RaftError::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
    // The first store is unaffected.
    store
        .propose(Command::PutImage { image: image(1) })
        .await
        .unwrap()
        .unwrap();
    close(store).await;
    // And once it is closed the directory opens again.
    let store = open(dir.path()).await;
    assert_eq!(store.read(|s| s.images.len()), 1);
    close(store).await;
}

/// A corrupt record of the state, or of where it is in the log, fails the open with what
/// could not be read; nothing panics.
#[tokio::test]
async fn corrupt_applied_state_is_an_error_not_a_panic() {
    use super::db::{Db, CF_SM, CF_STATE, KEY_APPLIED_LOG};
    use super::records::record_key;
    use wharf_protocol::state_key::StateKey;
    let container = record_key(&StateKey::Container(ContainerId::from_bytes([1; 32]))).unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (CF_STATE, &container, "container record"),
        (CF_STATE, b"image/\x01", "state key"),
        (CF_SM, KEY_APPLIED_LOG, "applied log id"),
    ];
    for (cf, key, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(db.cf(cf), key, b"\x01garbage");
            db.write(batch, true, "test").unwrap();
        }
        let err = Store::open(dir.path(), 1, ADDR.to_string())
            .await
            .unwrap_err();
        assert!(
            matches!(err, RaftError::Decode { what, .. } if what == want),
            "{want}: {err:?}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    {
        let db = Db::open(dir.path()).unwrap();
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(db.cf(CF_STATE), b"gadget/1", b"\x01");
        db.write(batch, true, "test").unwrap();
    }
    let err = Store::open(dir.path(), 1, ADDR.to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, RaftError::StateRecord { .. }), "{err:?}");
}

#[test]
fn log_entries_round_trip_through_the_codec() {
    let log_id = LogId::new(openraft::CommittedLeaderId::new(3, 1), 42);
    let members = std::collections::BTreeMap::from([(1u64, BasicNode::new(ADDR))]);
    let entries: Vec<Entry<TypeConfig>> = vec![
        Entry {
            log_id,
            payload: EntryPayload::Blank,
        },
        Entry {
            log_id,
            payload: EntryPayload::Normal(create(1, "web", &image(1))),
        },
        Entry {
            log_id,
            payload: EntryPayload::Membership(Membership::new(vec![[1u64].into()], members)),
        },
    ];
    for entry in entries {
        let bytes = codec::encode(&entry).unwrap();
        let back: Entry<TypeConfig> = codec::decode(&bytes).unwrap();
        assert_eq!(format!("{back:?}"), format!("{entry:?}"));
    }
}

#[tokio::test]
async fn a_database_of_a_newer_state_format_is_refused_and_left_as_it_is() {
    use super::db::{encode, Db, CF_META, KEY_FORMAT, STATE_FORMAT};
    let dir = tempfile::tempdir().unwrap();
    {
        // A database this build made, then stamped by a newer wharf.
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(
            db.get::<u32>(CF_META, KEY_FORMAT, "format").unwrap(),
            Some(STATE_FORMAT),
            "a new database is stamped with this build's format"
        );
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(
            db.cf(CF_META),
            KEY_FORMAT,
            encode(&(STATE_FORMAT + 1), "format").unwrap(),
        );
        db.write(batch, true, "format").unwrap();
    }
    let err = Store::open(dir.path(), 1, ADDR.into()).await.err().unwrap();
    assert!(
        matches!(err, RaftError::NewerFormat { found, supported, .. }
            if found == STATE_FORMAT + 1 && supported == STATE_FORMAT),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("state format {}", STATE_FORMAT + 1))
            && text.contains(&format!("formats up to {STATE_FORMAT}")),
        "{text}"
    );
    let db = Db::open(dir.path()).err().unwrap();
    assert!(
        matches!(db, RaftError::NewerFormat { .. }),
        "still refused: {db}"
    );
}

/// Open the fixture `name` (a `wharf up` data dir's Raft database, see
/// `fixtures/make-fixture.sh`) in a temporary directory; its state once migrated, and
/// the format it is stamped with afterwards.
async fn open_fixture(name: &str) -> (ClusterState, Option<u32>) {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/raft/fixtures")
        .join(name);
    let dir = tempfile::tempdir().unwrap();
    tar::Archive::new(std::fs::File::open(&fixture).unwrap())
        .unpack(dir.path())
        .unwrap();
    let store = open(dir.path()).await;
    let s = store.read(|s| s.clone());
    close(store).await;
    use super::db::{Db, CF_META, KEY_FORMAT};
    let db = Db::open(dir.path()).unwrap();
    let format = db.get::<u32>(CF_META, KEY_FORMAT, "format").unwrap();
    (s, format)
}

/// What every fixture holds (see `fixtures/make-fixture.sh`): an imported image, a
/// volume, a user network with a label, an internal network without icc, and
/// containers created, exited (code 3) and running with a published port.
fn assert_fixture_contents(s: &ClusterState) {
    use wharf_protocol::state::ContainerStatus;
    let image = s
        .tags
        .get("fixture/busybox:1")
        .expect("the imported image's tag");
    assert!(s.images.contains_key(image));
    assert!(s.volumes.contains_key("fxvol"));
    let status = |name: &str| {
        s.containers
            .values()
            .find(|c| c.name.as_str() == name)
            .map(|c| (c.status, c.exit_code))
            .unwrap_or_else(|| panic!("container {name}"))
    };
    assert_eq!(status("fx-created"), (ContainerStatus::Created, 0));
    assert_eq!(status("fx-exited"), (ContainerStatus::Exited, 3));
    // Still running: the engine re-adopts it at start (`Engine::recover`), and its
    // agent answers for its PID.
    assert_eq!(status("fx-running"), (ContainerStatus::Running, 0));
    let running = s
        .containers
        .values()
        .find(|c| c.name.as_str() == "fx-running")
        .unwrap();
    assert!(running.started_ns > 0);
    let ports: Vec<u16> = s.endpoints[&running.id]
        .iter()
        .flat_map(|e| e.ports.iter().map(|p| p.host_port))
        .collect();
    assert_eq!(ports, vec![18080]);
    let net = |name: &str| {
        s.networks
            .values()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("network {name}"))
    };
    assert!(net("bridge").default);
    assert_eq!(
        net("fxnet").user_labels().get("tier").map(String::as_str),
        Some("db")
    );
    assert!(!net("fxnet").internal() && net("fxnet").icc());
    assert!(net("fxinternal").internal() && !net("fxinternal").icc());
    assert!(net("fxinternal").masquerade());
}

/// The Raft database of a `wharf up` data dir made with the build of 2026-12-07 (state
/// format 1), its daemon stopped with SIGTERM, as for an upgrade. Every later build
/// must open it and see all of it, or migrate it: this is what a user's data dir holds
/// when they upgrade.
#[tokio::test]
async fn a_data_dir_of_state_format_one_opens_with_everything_in_it() {
    use super::db::STATE_FORMAT;
    let (s, format) = open_fixture("format1-raft.tar").await;
    assert_eq!(
        format,
        Some(STATE_FORMAT),
        "migrated to this build's format"
    );
    assert!(
        s.layers.is_empty(),
        "where layers are is unknown until agents report"
    );
    assert_fixture_contents(&s);
}

/// As for format 1: the Raft database of a data dir made with the build of main at
/// e7f56d1 (state format 2, with the containers' host PIDs), made by
/// `fixtures/make-fixture.sh`.
#[tokio::test]
async fn a_data_dir_of_state_format_two_opens_with_everything_in_it() {
    use super::db::STATE_FORMAT;
    let (s, format) = open_fixture("format2-raft.tar").await;
    assert_eq!(
        format,
        Some(STATE_FORMAT),
        "migrated to this build's format"
    );
    assert_fixture_contents(&s);
    let image = s.tags["fixture/busybox:1"];
    let layer = s.images[&image].diff_ids[0];
    assert_eq!(
        s.layers.get(&layer).map(|n| n.len()),
        Some(1),
        "format 2 recorded where the layer is; the migration keeps it"
    );
}

/// As for format 1: the Raft database of a data dir made with the build of main at
/// 33abbde (state format 5: hosts and revoked IDs, no idempotency keys), made by
/// `fixtures/make-fixture.sh`. It opens in format 6 with its hosts, and a write after it
/// (keyed now) applies once.
#[tokio::test]
async fn a_data_dir_of_state_format_five_opens_with_everything_in_it() {
    use super::db::STATE_FORMAT;
    let (s, format) = open_fixture("format5-raft.tar").await;
    assert_eq!(
        format,
        Some(STATE_FORMAT),
        "migrated to this build's format"
    );
    assert_fixture_contents(&s);
    assert!(
        s.nodes
            .values()
            .any(|n| n.role == wharf_protocol::node_state::NodeRole::Controller),
        "format 5 recorded the host: {:?}",
        s.nodes
    );
    assert!(s.applied_keys.is_empty(), "no build of format 5 made keys");
}

/// As for format 1: the Raft database of a data dir made with the build of main at
/// 7892e36 (state format 6: idempotency keys, the whole state in one record, no cluster
/// settings yet), made by `fixtures/make-fixture.sh`. It opens with its keys and the
/// default settings.
#[tokio::test]
async fn a_data_dir_of_state_format_six_opens_with_everything_in_it() {
    use super::db::STATE_FORMAT;
    let (s, format) = open_fixture("format6-raft.tar").await;
    assert_eq!(
        format,
        Some(STATE_FORMAT),
        "migrated to this build's format"
    );
    assert_fixture_contents(&s);
    assert!(!s.applied_keys.is_empty(), "format 6 recorded keys");
    assert_eq!(s.settings, Default::default(), "none before format 7");
    assert!(s.pending.is_empty());
}

/// As for format 1: the Raft database of a data dir made with the build of main at
/// 13f2e8f (state format 8: one record per entry, the snapshot in chunks of the database),
/// made by `fixtures/make-fixture.sh`. It opens in format 9 with everything in it.
#[tokio::test]
async fn a_data_dir_of_state_format_eight_opens_with_everything_in_it() {
    use super::db::STATE_FORMAT;
    let (s, format) = open_fixture("format8-raft.tar").await;
    assert_eq!(
        format,
        Some(STATE_FORMAT),
        "migrated to this build's format"
    );
    assert_fixture_contents(&s);
    assert!(!s.applied_keys.is_empty(), "format 8 keeps the keys");
}

/// Group commit: proposals made at once share log appends, and with them fsyncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let img = image(1);
    store
        .propose(Command::PutImage { image: img.clone() })
        .await
        .unwrap()
        .unwrap();
    const N: u8 = 128;
    let before = store.synced_writes();
    let proposals: Vec<_> = (0..N)
        .map(|n| {
            let (store, cmd) = (store.clone(), create(n, &format!("c{n}"), &img));
            tokio::spawn(async move { store.propose(cmd).await })
        })
        .collect();
    // And names already taken, in the same burst: each is refused on its own.
    let clashes: Vec<_> = (0..8u8)
        .map(|n| {
            let (store, cmd) = (store.clone(), create(200 + n, "c0", &img));
            tokio::spawn(async move { store.propose(cmd).await })
        })
        .collect();
    for p in proposals {
        p.await.unwrap().unwrap().unwrap();
    }
    for p in clashes {
        let refused = p.await.unwrap().unwrap().unwrap_err();
        assert!(
            matches!(refused, StateError::NameInUse { .. }),
            "{refused:?}"
        );
    }
    let synced = store.synced_writes() - before;
    eprintln!("{N} concurrent proposals and 8 clashes: {synced} synced writes");
    assert_eq!(store.read(|s| s.containers.len()), usize::from(N));
    assert!(
        synced < u64::from(N) / 2,
        "{synced} synced writes for {N} proposals: no group commit"
    );
    close(store).await;
}
