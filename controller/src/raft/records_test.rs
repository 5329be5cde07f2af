//! Per-key persistence against the whole state: for seeded random sequences of every
//! command, the state read back from RocksDB after each applied batch is the state in
//! memory, which is the state the plain pure apply reaches; snapshots carry it to another
//! database whole.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use wharf_protocol::agent::{MountKind, MountPoint};
use wharf_protocol::network::{mac_for, Endpoint, NetworkRecord, PortMapping, Proto, Subnet};
use wharf_protocol::node_state::{Availability, NodeDescription, NodeRole, NodeState};
use wharf_protocol::proposal_key::ProposalKey;
use wharf_protocol::settings::{ClusterSettings, Strategy};
use wharf_protocol::state::{ClusterState, Command, ImageRecord, VolumeRecord};
use wharf_protocol::{ContainerId, DiffId, Digest, NodeId};

use super::db::Db;
use super::records;
use super::state_machine::StateMachine;
use super::TypeConfig;

/// How many variants [`Command`] has; [`variant`] numbers them.
const VARIANTS: usize = 32;

/// The number of `cmd`'s variant. No wildcard: a new command does not compile until it is
/// numbered here, and the coverage assert then fails until [`command`] makes it.
fn variant(cmd: &Command) -> usize {
    match cmd {
        Command::PutImage { .. } => 0,
        Command::Tag { .. } => 1,
        Command::Untag { .. } => 2,
        Command::RemoveImage { .. } => 3,
        Command::CreateContainer { .. } => 4,
        Command::ContainerStarted { .. } => 5,
        Command::ContainerExited { .. } => 6,
        Command::RemoveContainer { .. } => 7,
        Command::RemoveImageForced { .. } => 8,
        Command::CreateVolume { .. } => 9,
        Command::RemoveVolume { .. } => 10,
        Command::PauseContainer { .. } => 11,
        Command::RenameContainer { .. } => 12,
        Command::SetRestartState { .. } => 13,
        Command::CreateNetwork { .. } => 14,
        Command::RemoveNetwork { .. } => 15,
        Command::ConnectContainer { .. } => 16,
        Command::DisconnectContainer { .. } => 17,
        Command::AttachEndpoints { .. } => 18,
        Command::ReleaseEndpoints { .. } => 19,
        Command::AllocateEndpoints { .. } => 20,
        Command::LayerInventory { .. } => 21,
        Command::ContainerRunning { .. } => 22,
        Command::Batch(_) => 23,
        Command::RegisterNode { .. } => 24,
        Command::SetNodeState { .. } => 25,
        Command::UpdateNode { .. } => 26,
        Command::RemoveNode { .. } => 27,
        Command::Keyed { .. } => 28,
        Command::UpdateSettings { .. } => 29,
        Command::RescheduleContainer { .. } => 30,
        Command::SetPending { .. } => 31,
    }
}

/// Count `cmd` and the commands inside it in `seen`.
fn count(cmd: &Command, seen: &mut BTreeMap<usize, usize>) {
    *seen.entry(variant(cmd)).or_default() += 1;
    if let Command::Batch(cmds) | Command::Keyed { commands: cmds, .. } = cmd {
        cmds.iter().for_each(|c| count(c, seen));
    }
}

fn image(n: u8) -> ImageRecord {
    let config = vec![b'{', n, b'}'];
    ImageRecord {
        id: wharf_protocol::ImageId(Digest::of(&config)),
        config,
        diff_ids: vec![layer(n), layer(n + 1)],
        size: 10,
        loaded_ns: 1,
    }
}

fn layer(n: u8) -> DiffId {
    DiffId(Digest::of(&[n]))
}

fn cid(n: u8) -> ContainerId {
    ContainerId::from_bytes([n; 32])
}

fn network(n: u8) -> NetworkRecord {
    let subnet = Subnet::parse(&format!("10.9.{n}.0/29")).expect("a valid subnet");
    NetworkRecord {
        id: format!("n{n}"),
        name: format!("net{}", n % 3),
        driver: "bridge".into(),
        subnet,
        gateway: subnet.gateway(),
        bridge: format!("br-n{n}"),
        node: NodeId(1),
        labels: BTreeMap::new(),
        created_ns: 1,
        default: false,
    }
}

fn volume(n: u8) -> VolumeRecord {
    VolumeRecord {
        name: format!("v{n}"),
        driver: "local".into(),
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
        created_ns: n.into(),
        node: NodeId(1),
        anonymous: n.is_multiple_of(2),
    }
}

/// A seeded generator of commands over small pools of IDs, so that they meet: names
/// clash, images are in use, addresses run out, keys repeat.
struct Gen {
    rng: StdRng,
    clock: i64,
}

impl Gen {
    fn small(&mut self, n: u8) -> u8 {
        self.rng.gen_range(0..n)
    }

    /// Mostly one of `existing`, so that commands meet what is there; else `fresh`.
    fn pick<T: Clone>(&mut self, existing: impl Iterator<Item = T>, fresh: T) -> T {
        let existing: Vec<T> = existing.collect();
        if existing.is_empty() || self.rng.gen_bool(0.2) {
            fresh
        } else {
            existing[self.rng.gen_range(0..existing.len())].clone()
        }
    }

    fn endpoint(&mut self, s: &ClusterState, choose: bool) -> Endpoint {
        let fresh = self.small(3);
        let n = self.pick(
            s.networks
                .keys()
                .filter_map(|k| k.strip_prefix('n')?.parse().ok()),
            fresh,
        );
        let ip = if choose {
            Ipv4Addr::UNSPECIFIED
        } else {
            Ipv4Addr::new(10, 9, n, 2 + self.small(4))
        };
        let ports = if self.rng.gen_bool(0.5) {
            vec![PortMapping {
                proto: Proto::Tcp,
                container_port: 80,
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: 8000 + u16::from(self.small(3)),
            }]
        } else {
            vec![]
        };
        Endpoint {
            network: format!("n{n}"),
            ip,
            mac: mac_for(ip),
            ports,
            aliases: vec![format!("a{}", self.small(2))],
            node: NodeId(1),
        }
    }

    fn leaves(&mut self, s: &ClusterState, depth: u8) -> Vec<Command> {
        let n = 1 + self.small(3);
        (0..n).map(|_| self.command(s, depth + 1)).collect()
    }

    /// One command of any variant, mostly naming what `s` holds; groups only at the top
    /// (`depth` 0) and one level in.
    fn command(&mut self, s: &ClusterState, depth: u8) -> Command {
        self.clock += 1;
        let at_ns = self.clock;
        let top = if depth < 2 { VARIANTS } else { VARIANTS - 2 };
        let pick = self.rng.gen_range(0..top);
        // Groups are numbered last here so that `top` can leave them out.
        let fresh = cid(1 + self.small(6));
        let c = self.pick(s.containers.keys().cloned(), fresh);
        let fresh = image(self.small(4)).id;
        let img = self.pick(s.images.keys().copied(), fresh);
        match pick {
            0 => Command::PutImage {
                image: image(self.small(4)),
            },
            1 => Command::Tag {
                reference: format!("r{}:latest", self.small(3)),
                image: img,
            },
            2 => Command::Untag {
                reference: format!("r{}:latest", self.small(3)),
            },
            3 => Command::RemoveImage { image: img },
            4 => {
                let n = 1 + self.small(6);
                let mut rec =
                    wharf_protocol::fixtures::container(n, &format!("c{}", self.small(4)));
                rec.run.image_id = img;
                if self.rng.gen_bool(0.3) {
                    rec.run.host.mounts.push(MountPoint {
                        kind: MountKind::Volume,
                        source: format!("v{}", self.small(3)),
                        target: "/data".into(),
                        ..Default::default()
                    });
                }
                Command::CreateContainer {
                    container: Box::new(rec),
                }
            }
            5 => Command::ContainerStarted {
                id: c,
                pid: 42,
                at_ns,
            },
            6 => Command::ContainerExited {
                id: c,
                exit_code: 3,
                oom_killed: self.rng.gen_bool(0.2),
                at_ns,
                error: String::new(),
            },
            7 => Command::RemoveContainer { id: c },
            8 => Command::RemoveImageForced { image: img },
            9 => Command::CreateVolume {
                volume: volume(self.small(3)),
            },
            10 => Command::RemoveVolume {
                name: format!("v{}", self.small(3)),
            },
            11 => Command::PauseContainer {
                id: c,
                paused: self.rng.gen_bool(0.5),
            },
            12 => Command::RenameContainer {
                id: c,
                name: format!("c{}", self.small(5))
                    .parse()
                    .expect("a valid container name"),
            },
            13 => Command::SetRestartState {
                id: c,
                count: self.small(4).into(),
                manually_stopped: self.rng.gen_bool(0.5),
                restarting: self.rng.gen_bool(0.5),
            },
            14 => Command::CreateNetwork {
                network: network(self.small(4)),
            },
            15 => Command::RemoveNetwork {
                id: format!("n{}", self.small(4)),
            },
            16 => Command::ConnectContainer {
                id: c,
                network: format!("n{}", self.small(3)),
                aliases: vec!["web".into()],
            },
            17 => Command::DisconnectContainer {
                id: c,
                network: format!("n{}", self.small(3)),
            },
            18 => Command::AttachEndpoints {
                id: c,
                endpoints: vec![self.endpoint(s, false)],
            },
            19 => Command::ReleaseEndpoints { id: c },
            20 => Command::AllocateEndpoints {
                id: c,
                endpoints: (0..1 + self.small(2))
                    .map(|_| self.endpoint(s, true))
                    .collect(),
            },
            21 => Command::LayerInventory {
                node: NodeId(1 + u64::from(self.small(3))),
                layers: (0..self.small(4)).map(|_| layer(self.small(6))).collect(),
            },
            22 => Command::ContainerRunning { id: c, at_ns },
            23 => Command::RegisterNode {
                id: NodeId(1 + u64::from(self.small(4))),
                role: if self.rng.gen_bool(0.5) {
                    NodeRole::Agent
                } else {
                    NodeRole::Controller
                },
                description: NodeDescription {
                    hostname: format!("h{}", self.small(3)),
                    ..Default::default()
                },
                at_ns,
            },
            24 => Command::SetNodeState {
                id: NodeId(1 + u64::from(self.small(4))),
                state: if self.rng.gen_bool(0.5) {
                    NodeState::Ready
                } else {
                    NodeState::Down
                },
                at_ns,
            },
            25 => Command::UpdateNode {
                id: NodeId(1 + u64::from(self.small(4))),
                availability: match self.small(3) {
                    0 => Availability::Active,
                    1 => Availability::Pause,
                    _ => Availability::Drain,
                },
                labels: BTreeMap::from([("k".to_string(), format!("{}", self.small(3)))]),
                at_ns,
            },
            26 => Command::RemoveNode {
                id: NodeId(1 + u64::from(self.small(4))),
            },
            27 => Command::UpdateSettings {
                settings: ClusterSettings {
                    strategy: if self.rng.gen_bool(0.5) {
                        Strategy::Spread
                    } else {
                        Strategy::Binpack
                    },
                    overcommit_milli: 1000 + 500 * u32::from(self.small(3)),
                    fencing: self.rng.gen_bool(0.5),
                    lease_ms: 1000 * u64::from(1 + self.small(3)),
                },
            },
            28 => {
                let name = match s.containers.get(&c) {
                    Some(old) if self.rng.gen_bool(0.6) => old.name.to_string(),
                    _ => format!("c{}", self.small(4)),
                };
                let rec = wharf_protocol::fixtures::container(1 + self.small(6), &name);
                Command::RescheduleContainer {
                    old: c,
                    container: Box::new(rec),
                }
            }
            29 => Command::SetPending {
                id: c,
                reason: self
                    .rng
                    .gen_bool(0.7)
                    .then(|| "pinned by volume".to_string()),
            },
            30 => Command::Batch(self.leaves(s, depth)),
            _ => Command::Keyed {
                key: ProposalKey {
                    origin: 1 + u64::from(self.small(2)),
                    incarnation: 7,
                    seq: self.small(12).into(),
                },
                commands: self.leaves(s, depth),
            },
        }
    }
}

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

/// The largest size each part of the state reached, to show the run exercised it.
fn grow(max: &mut BTreeMap<&'static str, usize>, s: &ClusterState) {
    let sizes = [
        ("images", s.images.len()),
        ("tags", s.tags.len()),
        ("containers", s.containers.len()),
        ("volumes", s.volumes.len()),
        ("restarts", s.restarts.len()),
        ("networks", s.networks.len()),
        ("connections", s.connections.len()),
        ("endpoints", s.endpoints.len()),
        ("layers", s.layers.len()),
        ("nodes", s.nodes.len()),
        ("revoked_nodes", s.revoked_nodes.len()),
        ("applied_keys", usize::from(!s.applied_keys.is_empty())),
        (
            "settings",
            usize::from(s.settings != ClusterSettings::default()),
        ),
        ("pending", s.pending.len()),
    ];
    for (name, n) in sizes {
        let m = max.entry(name).or_default();
        *m = (*m).max(n);
    }
}

/// The parts in which `a` and `b` differ, for a failure message shorter than two states.
fn differing(a: &ClusterState, b: &ClusterState) -> Vec<&'static str> {
    let mut parts = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            parts.push(name);
        }
    };
    check("images", a.images == b.images);
    check("tags", a.tags == b.tags);
    check("containers", a.containers == b.containers);
    check("volumes", a.volumes == b.volumes);
    check("restarts", a.restarts == b.restarts);
    check("networks", a.networks == b.networks);
    check("connections", a.connections == b.connections);
    check("endpoints", a.endpoints == b.endpoints);
    check("layers", a.layers == b.layers);
    check("nodes", a.nodes == b.nodes);
    check("revoked_nodes", a.revoked_nodes == b.revoked_nodes);
    check("applied_keys", a.applied_keys == b.applied_keys);
    check("settings", a.settings == b.settings);
    check("pending", a.pending == b.pending);
    if parts.is_empty() && a != b {
        parts.push("a part this list misses");
    }
    parts
}

/// For seeded sequences of batches of every command, after each batch: the state loaded
/// back from the database's records is the state in memory, which is what the plain
/// [`ClusterState::apply_entry`] reaches; a restart reads it back too.
#[test]
fn random_commands_read_back_from_the_records_as_applied() {
    let mut seen = BTreeMap::new();
    let mut max = BTreeMap::new();
    for seed in 0..24u64 {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let db = Arc::new(Db::open(dir.path()).expect("a new database"));
        let sm = StateMachine::load(Arc::clone(&db)).expect("an empty state machine");
        let mut want = ClusterState::default();
        let mut gen = Gen {
            rng: StdRng::seed_from_u64(seed),
            clock: 0,
        };
        let mut index = 0;
        for round in 0..40 {
            let mut entries = Vec::new();
            let mut answers = Vec::new();
            for _ in 0..1 + gen.small(4) {
                index += 1;
                let cmd = gen.command(&want, 0);
                count(&cmd, &mut seen);
                answers.push(want.apply_entry(&cmd));
                entries.push(entry(index, cmd));
            }
            let got = sm.apply_entries(entries).expect("applied");
            assert_eq!(got, answers, "seed {seed} round {round}: answers");
            let stored = records::load_state(&db).expect("records load");
            let parts = differing(&stored, &want);
            assert!(
                parts.is_empty(),
                "seed {seed} round {round}: records differ in {parts:?}"
            );
            let memory = super::state_machine::read_applied(&sm.applied())
                .state
                .clone();
            let parts = differing(&memory, &want);
            assert!(
                parts.is_empty(),
                "seed {seed} round {round}: memory differs in {parts:?}"
            );
            grow(&mut max, &want);
        }
        drop(sm);
        let again = StateMachine::load(db).expect("reopened");
        let applied = super::state_machine::read_applied(&again.applied()).clone();
        assert_eq!(applied.state, want, "seed {seed}: after a restart");
        assert_eq!(applied.last_applied.map(|l| l.index), Some(index));
    }
    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..VARIANTS).collect::<Vec<_>>(),
        "every command is generated: {seen:?}"
    );
    assert!(
        max.values().all(|n| *n > 0),
        "every part is exercised: {max:?}"
    );
}

/// A snapshot built from one database installs into another (replacing what was there):
/// the same state in memory, in its records and after a restart; the current snapshot is
/// the one installed.
#[test]
fn a_snapshot_carries_the_state_record_by_record() {
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from_db = Arc::new(Db::open(from_dir.path()).unwrap());
    let from = StateMachine::load(Arc::clone(&from_db)).unwrap();
    let to_db = Arc::new(Db::open(to_dir.path()).unwrap());
    let to = StateMachine::load(Arc::clone(&to_db)).unwrap();
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(99),
        clock: 0,
    };
    let mut shadow = ClusterState::default();
    let cmds: Vec<_> = (0..300)
        .map(|_| {
            let cmd = gen.command(&shadow, 0);
            shadow.apply_entry(&cmd);
            cmd
        })
        .collect();
    // The receiver has state of its own, which the snapshot replaces.
    to.apply_entries(vec![entry(1, cmds[0].clone()), entry(2, cmds[1].clone())])
        .unwrap();
    from.apply_entries(cmds.into_iter().zip(1..).map(|(c, i)| entry(i, c)))
        .unwrap();
    let want = super::state_machine::read_applied(&from.applied())
        .state
        .clone();
    assert!(!want.containers.is_empty() && !want.layers.is_empty());

    let snap = from.snapshot_builder().build().unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(300));
    let current = from.current_snapshot().unwrap().unwrap();
    assert_eq!(current.meta, snap.meta);
    assert_eq!(current.snapshot.path(), snap.snapshot.path());
    let data = std::fs::read(snap.snapshot.path()).unwrap();

    // Another store's file is copied, not taken.
    to.install_file(&snap.meta, snap.snapshot.path()).unwrap();
    assert!(snap.snapshot.path().exists());
    let applied = super::state_machine::read_applied(&to.applied()).clone();
    assert_eq!(applied.state, want);
    assert_eq!(applied.last_applied, snap.meta.last_log_id);
    assert_eq!(records::load_state(&to_db).unwrap(), want);
    let installed = to.current_snapshot().unwrap().unwrap();
    assert_eq!(installed.meta, snap.meta);
    assert_eq!(std::fs::read(installed.snapshot.path()).unwrap(), data);
    drop(to);
    let again = StateMachine::load(to_db).unwrap();
    assert_eq!(
        super::state_machine::read_applied(&again.applied()).state,
        want
    );
}

/// The current snapshot survives a restart as its file; a file deleted by hand is made
/// again from the state when openraft asks for the snapshot.
#[test]
fn the_current_snapshot_is_found_after_a_restart_or_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path()).unwrap());
    let sm = StateMachine::load(Arc::clone(&db)).unwrap();
    assert!(sm.current_snapshot().unwrap().is_none(), "none yet");
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(3),
        clock: 0,
    };
    let mut state = ClusterState::default();
    let cmds: Vec<_> = (0..50)
        .map(|_| {
            let cmd = gen.command(&state, 0);
            state.apply_entry(&cmd);
            cmd
        })
        .collect();
    sm.apply_entries(cmds.into_iter().zip(1..).map(|(c, i)| entry(i, c)))
        .unwrap();
    let built = sm.snapshot_builder().build().unwrap();
    let data = std::fs::read(built.snapshot.path()).unwrap();
    drop(sm);

    let sm = StateMachine::load(Arc::clone(&db)).unwrap();
    let found = sm.current_snapshot().unwrap().unwrap();
    assert_eq!(found.meta, built.meta);
    assert_eq!(std::fs::read(found.snapshot.path()).unwrap(), data);

    std::fs::remove_file(found.snapshot.path()).unwrap();
    let rebuilt = sm.current_snapshot().unwrap().unwrap();
    assert_eq!(rebuilt.meta.last_log_id, built.meta.last_log_id);
    assert_ne!(rebuilt.snapshot.path(), found.snapshot.path());
    assert_eq!(std::fs::read(rebuilt.snapshot.path()).unwrap(), data);
}

/// An install that a stop cut short after its mark and some of the records (the old
/// records deleted, the new ones partly written) is finished from the snapshot file at the
/// next open: the new state whole, never a mix; what no write named is deleted.
#[test]
fn an_install_cut_short_is_finished_at_the_next_open() {
    use super::snapshot::{self, StoredMeta};
    let (from_dir, to_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let from_db = Arc::new(Db::open(from_dir.path()).unwrap());
    let from = StateMachine::load(Arc::clone(&from_db)).unwrap();
    let to_db = Arc::new(Db::open(to_dir.path()).unwrap());
    let to = StateMachine::load(Arc::clone(&to_db)).unwrap();
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(5),
        clock: 0,
    };
    let mut want = ClusterState::default();
    let cmds: Vec<_> = (0..200)
        .map(|_| {
            let cmd = gen.command(&want, 0);
            want.apply_entry(&cmd);
            cmd
        })
        .collect();
    to.apply_entries(vec![entry(1, cmds[0].clone())]).unwrap();
    from.apply_entries(cmds.into_iter().zip(1..).map(|(c, i)| entry(i, c)))
        .unwrap();
    let snap = from.snapshot_builder().build().unwrap();
    drop(to);

    // As `replace_records` leaves it when stopped after its first batch of records.
    let new = StoredMeta {
        meta: snap.meta.clone(),
        generation: 1,
        bytes: std::fs::metadata(snap.snapshot.path()).unwrap().len(),
    };
    std::fs::copy(snap.snapshot.path(), snapshot::path_of(&to_db, 1)).unwrap();
    let partial = snapshot::begin_receiving(&to_db).unwrap();
    let mut batch = rocksdb::WriteBatch::default();
    snapshot::mark_installing(&to_db, &mut batch, &new).unwrap();
    records::delete_all(&mut batch, to_db.cf(super::db::CF_STATE));
    for (k, v) in snapshot::current_records(&from_db)
        .unwrap()
        .into_iter()
        .take(3)
    {
        batch.put_cf(to_db.cf(super::db::CF_STATE), k, v);
    }
    to_db.write(batch, true, "test").unwrap();
    let mixed = records::load_state(&to_db).unwrap();
    assert!(mixed != want && mixed != ClusterState::default());

    let again = StateMachine::load(Arc::clone(&to_db)).unwrap();
    let applied = super::state_machine::read_applied(&again.applied()).clone();
    assert_eq!(applied.state, want);
    assert_eq!(applied.last_applied, snap.meta.last_log_id);
    assert_eq!(records::load_state(&to_db).unwrap(), want);
    assert!(snapshot::installing(&to_db).unwrap().is_none());
    assert_eq!(again.current_snapshot().unwrap().unwrap().meta, snap.meta);
    assert!(
        !partial.path().exists(),
        "the reception cut short is deleted"
    );
    let files: Vec<_> = std::fs::read_dir(snapshot::dir(&to_db))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files, vec![snapshot::path_of(&to_db, 1)]);
}

/// A snapshot of a leader not upgraded yet (the whole state encoded) installs, and is
/// kept as records.
#[test]
fn a_whole_state_snapshot_of_the_previous_format_installs() {
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(7),
        clock: 0,
    };
    let mut want = ClusterState::default();
    for _ in 0..200 {
        let cmd = gen.command(&want, 0);
        want.apply_entry(&cmd);
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path()).unwrap());
    let sm = StateMachine::load(Arc::clone(&db)).unwrap();
    let meta = openraft::SnapshotMeta {
        last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), 200)),
        ..Default::default()
    };
    let file = dir.path().join("whole");
    std::fs::write(&file, wharf_protocol::codec::encode(&want).unwrap()).unwrap();
    sm.install_file(&meta, &file).unwrap();
    assert_eq!(records::load_state(&db).unwrap(), want);
    let mut kept = ClusterState::default();
    for (k, v) in super::snapshot::current_records(&db).unwrap() {
        records::load_record(&mut kept, &k, &v).unwrap();
    }
    assert_eq!(kept, want, "kept as records");
    std::fs::write(&file, b"\x05junk").unwrap();
    assert!(sm.install_file(&meta, &file).is_err());
    assert_eq!(
        records::load_state(&db).unwrap(),
        want,
        "a bad one changes nothing"
    );
}

/// Applying one command to a large state writes a few hundred bytes, not the state.
#[test]
fn an_apply_writes_what_changed_not_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(dir.path()).unwrap());
    let sm = StateMachine::load(Arc::clone(&db)).unwrap();
    let creates = (0..2000u32).map(|i| {
        let mut c = wharf_protocol::fixtures::container(1, &format!("c{i}"));
        let mut bytes = [0u8; 32];
        bytes[..4].copy_from_slice(&i.to_le_bytes());
        c.id = ContainerId::from_bytes(bytes);
        c.run.id = c.id.clone();
        Command::CreateContainer {
            container: Box::new(c),
        }
    });
    sm.apply_entries(creates.zip(1..).map(|(c, i)| entry(i, c)))
        .unwrap();
    let id = super::state_machine::read_applied(&sm.applied())
        .state
        .containers
        .keys()
        .next()
        .cloned()
        .unwrap();
    let before = db.bytes_written();
    sm.apply_entries([entry(2001, Command::ContainerRunning { id, at_ns: 5 })])
        .unwrap();
    let written = db.bytes_written() - before;
    assert!(
        written < 2_000,
        "one container's record and the log position, not 2000 containers: {written} bytes"
    );
}
