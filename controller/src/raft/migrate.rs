//! Migrations of the Raft database between state formats, run at open before anything
//! reads it. Each older layout is kept here, frozen, as the types that decode it.
//!
//! | format | change                                                            |
//! |--------|-------------------------------------------------------------------|
//! | 1      | the first (a database without a format key is format 1)           |
//! | 2      | `ClusterState.layers`: which node holds which layer               |
//! | 3      | `ContainerRecord` without `pid`: a host fact, which the agent holds |
//! | 4      | `Command::Batch` log entries (group commit); nothing stored changes  |
//! | 5      | `ClusterState.nodes` and `revoked_nodes`: the hosts of the cluster   |
//! | 6      | `ClusterState.applied_keys`; `Command::Keyed` log entries            |
//! | 7      | `ClusterState.settings` and `pending`; `UpdateSettings`, `RescheduleContainer`, `SetPending` entries |
//! | 8      | the state one record per entry (records.rs), the snapshot a stream of them in chunks of cf `sm` |
//! | 9      | the snapshot a file of those records (snapshot.rs), named by `sm/snapshot_file` |
//!
//! The log entries need no migration: commands only gain variants at the end, and the
//! old ones still decode and apply (format 3 writes `ContainerRunning`; the
//! `ContainerStarted` of older entries applies the same, its PID ignored). Up to format 7
//! the applied state (`sm/applied`) and the snapshot (`sm/snapshot`) hold the whole
//! `ClusterState`: each is decoded from whichever older layout it is in and written as
//! this build's records (cf `state`, `sm/applied_log`) and snapshot file, the old keys
//! deleted, in one fsynced batch with the new format number. Format 8's snapshot chunks
//! are copied one by one into a snapshot file, and deleted in that batch. The file is
//! written and renamed before the batch: a crash before it leaves a file that the next open
//! deletes (snapshot.rs) before migrating again.
//!
//! ```text
//!   format 1 ──ClusterStateV1──► ClusterStateV2 ──► ClusterStateV4 ──► ClusterStateV5 ──► ClusterStateV6 ──► ClusterState
//!   format 2 ──ClusterStateV2──────────────────────┘                  │                 │                 │    │
//!   formats 3, 4 ──ClusterStateV4─────────────────────────────────────┘                 │                 │    │
//!   format 5 ──ClusterStateV5───────────────────────────────────────────────────────────┘                 │    │
//!   format 6 ──ClusterStateV6─────────────────────────────────────────────────────────────────────────────┘    │
//!   format 7 ──ClusterState (whole)────────────────────────────────────────────────────────────────────────────┤
//!                                                                                                             ▼
//!                                                                    records (9): cf `state` + snapshot file
//!   format 8: cf `state` kept; snapshot chunks ──copied──> snapshot file ─────────────────────────────────────┘
//! ```

use super::db::{
    self, Db, CF_META, CF_SM, CF_STATE, KEY_APPLIED, KEY_APPLIED_LOG, KEY_FORMAT, KEY_SNAPSHOT,
};
use super::records;
use super::snapshot::{self, FileWriter, StoredMeta};
use super::state_machine::AppliedLog;
use super::RaftError;
use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use rocksdb::WriteBatch;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use wharf_protocol::agent::ContainerRunSpec;
use wharf_protocol::network::{Endpoint, NetworkRecord};
use wharf_protocol::node_state::NodeRecord;
use wharf_protocol::proposal_key::AppliedKeys;
use wharf_protocol::state::{
    ClusterState, ContainerRecord, ContainerStatus, ImageRecord, RestartState, VolumeRecord,
};
use wharf_protocol::{ContainerId, ContainerName, DiffId, ImageId, NodeId};

/// `ContainerRecord` as formats 1 and 2 store it (frozen): with the host PID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ContainerRecordV2 {
    id: ContainerId,
    name: ContainerName,
    created_ns: i64,
    node: NodeId,
    image_ref: String,
    run: ContainerRunSpec,
    config_json: String,
    host_config_json: String,
    auto_remove: bool,
    status: ContainerStatus,
    /// Host PID while it ran, else 0; dropped by the migration (the agent knows it).
    pid: u32,
    exit_code: i32,
    started_ns: i64,
    finished_ns: i64,
    oom_killed: bool,
    error: String,
}

impl From<ContainerRecordV2> for ContainerRecord {
    /// Format 3 keeps everything but the PID: a running container's is asked of its
    /// agent, which adopts it from its shim.
    fn from(v: ContainerRecordV2) -> ContainerRecord {
        ContainerRecord {
            id: v.id,
            name: v.name,
            created_ns: v.created_ns,
            node: v.node,
            image_ref: v.image_ref,
            run: v.run,
            config_json: v.config_json,
            host_config_json: v.host_config_json,
            auto_remove: v.auto_remove,
            status: v.status,
            exit_code: v.exit_code,
            started_ns: v.started_ns,
            finished_ns: v.finished_ns,
            oom_killed: v.oom_killed,
            error: v.error,
        }
    }
}

/// `ClusterState` as format 1 stores it (frozen).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterStateV1 {
    images: BTreeMap<ImageId, ImageRecord>,
    tags: BTreeMap<String, ImageId>,
    containers: BTreeMap<ContainerId, ContainerRecordV2>,
    volumes: BTreeMap<String, VolumeRecord>,
    restarts: BTreeMap<ContainerId, RestartState>,
    networks: BTreeMap<String, NetworkRecord>,
    connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
}

/// `ClusterState` as format 2 stores it (frozen).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterStateV2 {
    images: BTreeMap<ImageId, ImageRecord>,
    tags: BTreeMap<String, ImageId>,
    containers: BTreeMap<ContainerId, ContainerRecordV2>,
    volumes: BTreeMap<String, VolumeRecord>,
    restarts: BTreeMap<ContainerId, RestartState>,
    networks: BTreeMap<String, NetworkRecord>,
    connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
    layers: BTreeMap<DiffId, BTreeSet<NodeId>>,
}

impl From<ClusterStateV1> for ClusterStateV2 {
    /// Format 2 adds where layers are: unknown until the agents report (empty).
    fn from(v: ClusterStateV1) -> ClusterStateV2 {
        ClusterStateV2 {
            images: v.images,
            tags: v.tags,
            containers: v.containers,
            volumes: v.volumes,
            restarts: v.restarts,
            networks: v.networks,
            connections: v.connections,
            endpoints: v.endpoints,
            layers: BTreeMap::new(),
        }
    }
}

/// `ClusterState` as formats 3 and 4 store it (frozen).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterStateV4 {
    images: BTreeMap<ImageId, ImageRecord>,
    tags: BTreeMap<String, ImageId>,
    containers: BTreeMap<ContainerId, ContainerRecord>,
    volumes: BTreeMap<String, VolumeRecord>,
    restarts: BTreeMap<ContainerId, RestartState>,
    networks: BTreeMap<String, NetworkRecord>,
    connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
    layers: BTreeMap<DiffId, BTreeSet<NodeId>>,
}

/// `ClusterState` as format 5 stores it (frozen).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterStateV5 {
    images: BTreeMap<ImageId, ImageRecord>,
    tags: BTreeMap<String, ImageId>,
    containers: BTreeMap<ContainerId, ContainerRecord>,
    volumes: BTreeMap<String, VolumeRecord>,
    restarts: BTreeMap<ContainerId, RestartState>,
    networks: BTreeMap<String, NetworkRecord>,
    connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
    layers: BTreeMap<DiffId, BTreeSet<NodeId>>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    revoked_nodes: BTreeSet<NodeId>,
}

impl From<ClusterStateV4> for ClusterStateV5 {
    /// Format 5 adds the hosts: they register again when their daemons connect.
    fn from(v: ClusterStateV4) -> ClusterStateV5 {
        ClusterStateV5 {
            images: v.images,
            tags: v.tags,
            containers: v.containers,
            volumes: v.volumes,
            restarts: v.restarts,
            networks: v.networks,
            connections: v.connections,
            endpoints: v.endpoints,
            layers: v.layers,
            nodes: BTreeMap::new(),
            revoked_nodes: BTreeSet::new(),
        }
    }
}

/// `ClusterState` as format 6 stores it (frozen): before the settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterStateV6 {
    images: BTreeMap<ImageId, ImageRecord>,
    tags: BTreeMap<String, ImageId>,
    containers: BTreeMap<ContainerId, ContainerRecord>,
    volumes: BTreeMap<String, VolumeRecord>,
    restarts: BTreeMap<ContainerId, RestartState>,
    networks: BTreeMap<String, NetworkRecord>,
    connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
    layers: BTreeMap<DiffId, BTreeSet<NodeId>>,
    nodes: BTreeMap<NodeId, NodeRecord>,
    revoked_nodes: BTreeSet<NodeId>,
    applied_keys: AppliedKeys,
}

impl From<ClusterStateV5> for ClusterStateV6 {
    /// Format 6 adds the idempotency keys of applied groups: none yet (an older build
    /// proposed none).
    fn from(v: ClusterStateV5) -> ClusterStateV6 {
        ClusterStateV6 {
            images: v.images,
            tags: v.tags,
            containers: v.containers,
            volumes: v.volumes,
            restarts: v.restarts,
            networks: v.networks,
            connections: v.connections,
            endpoints: v.endpoints,
            layers: v.layers,
            nodes: v.nodes,
            revoked_nodes: v.revoked_nodes,
            applied_keys: AppliedKeys::default(),
        }
    }
}

impl From<ClusterStateV6> for ClusterState {
    /// Format 7 adds the cluster's settings (the defaults, which format 6 used) and the
    /// containers that cannot move (none yet).
    fn from(v: ClusterStateV6) -> ClusterState {
        ClusterState {
            images: v.images,
            tags: v.tags,
            containers: v.containers,
            volumes: v.volumes,
            restarts: v.restarts,
            networks: v.networks,
            connections: v.connections,
            endpoints: v.endpoints,
            layers: v.layers,
            nodes: v.nodes,
            revoked_nodes: v.revoked_nodes,
            applied_keys: v.applied_keys,
            settings: Default::default(),
            pending: BTreeMap::new(),
            index: Default::default(),
        }
    }
}

impl From<ClusterStateV5> for ClusterState {
    fn from(v: ClusterStateV5) -> ClusterState {
        ClusterStateV6::from(v).into()
    }
}

impl From<ClusterStateV4> for ClusterState {
    fn from(v: ClusterStateV4) -> ClusterState {
        ClusterStateV5::from(v).into()
    }
}

impl From<ClusterStateV2> for ClusterState {
    fn from(v: ClusterStateV2) -> ClusterState {
        ClusterStateV4::from(v).into()
    }
}

impl From<ClusterStateV2> for ClusterStateV4 {
    /// Format 3 drops the containers' host PIDs.
    fn from(v: ClusterStateV2) -> ClusterStateV4 {
        ClusterStateV4 {
            images: v.images,
            tags: v.tags,
            containers: v
                .containers
                .into_iter()
                .map(|(id, c)| (id, c.into()))
                .collect(),
            volumes: v.volumes,
            restarts: v.restarts,
            networks: v.networks,
            connections: v.connections,
            endpoints: v.endpoints,
            layers: v.layers,
        }
    }
}

impl From<ClusterStateV1> for ClusterState {
    fn from(v: ClusterStateV1) -> ClusterState {
        ClusterStateV2::from(v).into()
    }
}

/// The applied state of an older format, whose `ClusterState` is `S`.
#[derive(Debug, Serialize, Deserialize)]
struct AppliedOf<S> {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: S,
}

/// A snapshot as formats 1 to 7 store it under `sm/snapshot` (frozen).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct WholeSnapshot {
    pub(super) meta: SnapshotMeta<u64, BasicNode>,
    /// The encoded `ClusterState` of its format.
    pub(super) data: Vec<u8>,
}

/// Key of the snapshot's [`StoredMetaV8`] in [`CF_SM`], format 8 (frozen).
pub(super) const KEY_SNAPSHOT_META_V8: &[u8] = b"snapshot_meta";

/// Prefix of the keys of format 8's snapshot chunks in [`CF_SM`] (frozen).
const CHUNK_PREFIX_V8: &[u8] = b"snapshot_chunk/";

/// Where format 8 keeps the snapshot (frozen): its chunks of generation `generation`,
/// `chunks` of them, under `snapshot_chunk/` + generation (u64 BE) + index (u32 BE).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct StoredMetaV8 {
    pub(super) meta: SnapshotMeta<u64, BasicNode>,
    pub(super) generation: u64,
    pub(super) chunks: u32,
}

/// Key of chunk `index` of generation `generation`, format 8.
pub(super) fn chunk_key_v8(generation: u64, index: u32) -> Vec<u8> {
    let mut k = CHUNK_PREFIX_V8.to_vec();
    k.extend(generation.to_be_bytes());
    k.extend(index.to_be_bytes());
    k
}

/// Bring a database of format `found` to `target` (this build's); nothing is written
/// to the database when a step fails.
pub(super) fn migrate(db: &Db, found: u32, target: u32) -> Result<(), RaftError> {
    let mut batch = WriteBatch::default();
    debug_assert_eq!(target, 9, "a new format needs its step here");
    // Format 4 only added `Command::Batch` log entries; 3 and 4 store the same layout.
    match found {
        0 | 1 => rewrite::<ClusterStateV1>(db, &mut batch, 1)?,
        2 => rewrite::<ClusterStateV2>(db, &mut batch, 2)?,
        3 | 4 => rewrite::<ClusterStateV4>(db, &mut batch, 4)?,
        5 => rewrite::<ClusterStateV5>(db, &mut batch, 5)?,
        6 => rewrite::<ClusterStateV6>(db, &mut batch, 6)?,
        7 => rewrite::<ClusterState>(db, &mut batch, 7)?,
        _ => chunks_to_file(db, &mut batch)?,
    }
    let format = target;
    batch.put_cf(
        db.cf(CF_META),
        KEY_FORMAT,
        db::encode(&format, "state format")?,
    );
    db.write(batch, true, "state format migration")?;
    tracing::info!(from = found, to = format, path = %db.path().display(), "raft database migrated");
    Ok(())
}

/// Put into `batch` the applied state and the snapshot of `db`, stored whole as format
/// `from` with its `ClusterState` laid out as `S`, as this build's records, and the
/// deletion of the old keys.
fn rewrite<S>(db: &Db, batch: &mut WriteBatch, from: u32) -> Result<(), RaftError>
where
    S: DeserializeOwned,
    ClusterState: From<S>,
{
    let (applied_what, snapshot_what, data_what) = match from {
        1 => (
            "applied state (format 1)",
            "snapshot (format 1)",
            "snapshot data (format 1)",
        ),
        2 => (
            "applied state (format 2)",
            "snapshot (format 2)",
            "snapshot data (format 2)",
        ),
        4 => (
            "applied state (format 3 or 4)",
            "snapshot (format 3 or 4)",
            "snapshot data (format 3 or 4)",
        ),
        5 => (
            "applied state (format 5)",
            "snapshot (format 5)",
            "snapshot data (format 5)",
        ),
        6 => (
            "applied state (format 6)",
            "snapshot (format 6)",
            "snapshot data (format 6)",
        ),
        _ => (
            "applied state (format 7)",
            "snapshot (format 7)",
            "snapshot data (format 7)",
        ),
    };
    if let Some(old) = db.get::<AppliedOf<S>>(CF_SM, KEY_APPLIED, applied_what)? {
        let state = ClusterState::from(old.state);
        let cf = db.cf(CF_STATE);
        records::for_each_record(&state, |k, v| {
            batch.put_cf(cf, k, v);
            Ok(())
        })?;
        let log = AppliedLog {
            last_applied: old.last_applied,
            membership: old.membership,
        };
        batch.put_cf(
            db.cf(CF_SM),
            KEY_APPLIED_LOG,
            db::encode(&log, "applied log id")?,
        );
        batch.delete_cf(db.cf(CF_SM), KEY_APPLIED);
    }
    if let Some(snap) = db.get::<WholeSnapshot>(CF_SM, KEY_SNAPSHOT, snapshot_what)? {
        let old: S = db::decode(&snap.data, data_what)?;
        let state = ClusterState::from(old);
        let mut writer = FileWriter::create(db)?;
        records::for_each_record(&state, |k, v| writer.push(k, v))?;
        let (temp, bytes) = writer.finish()?;
        let meta = StoredMeta {
            meta: snap.meta,
            generation: 1,
            bytes,
        };
        snapshot::persist(db, temp, meta.generation)?;
        snapshot::point_at(db, batch, &meta)?;
        batch.delete_cf(db.cf(CF_SM), KEY_SNAPSHOT);
    }
    Ok(())
}

/// Copy format 8's snapshot chunks, one at a time, into a snapshot file, and put into
/// `batch` the meta naming it and the deletion of the chunks.
fn chunks_to_file(db: &Db, batch: &mut WriteBatch) -> Result<(), RaftError> {
    let what = "snapshot meta (format 8)";
    let Some(old) = db.get::<StoredMetaV8>(CF_SM, KEY_SNAPSHOT_META_V8, what)? else {
        return Ok(());
    };
    let mut writer = FileWriter::create_raw(db)?;
    let mut copied = 0u64;
    for index in 0..old.chunks {
        let chunk = db
            .rocks()
            .get_pinned_cf(db.cf(CF_SM), chunk_key_v8(old.generation, index))
            .map_err(|source| RaftError::Read {
                what: "snapshot chunk (format 8)",
                source,
            })?
            .ok_or(RaftError::SnapshotData {
                offset: copied,
                len: copied,
            })?;
        writer.write_raw(&chunk)?;
        copied += chunk.len() as u64;
    }
    let (temp, bytes) = writer.finish()?;
    let meta = StoredMeta {
        meta: old.meta,
        generation: 1,
        bytes,
    };
    snapshot::persist(db, temp, meta.generation)?;
    snapshot::point_at(db, batch, &meta)?;
    batch.delete_cf(db.cf(CF_SM), KEY_SNAPSHOT_META_V8);
    // Every key of the prefix: "snapshot_chunk0" is the key after them ('0' follows '/').
    batch.delete_range_cf(db.cf(CF_SM), CHUNK_PREFIX_V8, b"snapshot_chunk0".as_slice());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::db::STATE_FORMAT;
    use std::sync::Arc;
    use wharf_protocol::network::{PortMapping, Proto, Subnet};
    use wharf_protocol::Digest;

    fn image() -> ImageRecord {
        ImageRecord {
            id: ImageId(Digest::of(b"config")),
            config: b"config".to_vec(),
            diff_ids: vec![DiffId(Digest::of(b"layer"))],
            size: 7,
            loaded_ns: 1,
        }
    }

    /// A container of the format-2 layout, every field set apart from the fixture's.
    fn record_v2(n: u8, name: &str, status: ContainerStatus, pid: u32) -> ContainerRecordV2 {
        let c = wharf_protocol::fixtures::container(n, name);
        ContainerRecordV2 {
            id: c.id,
            name: c.name,
            created_ns: 3,
            node: NodeId(2),
            image_ref: "busybox:1".into(),
            run: c.run,
            config_json: r#"{"Cmd":null}"#.into(),
            host_config_json: r#"{"AutoRemove":true}"#.into(),
            auto_remove: true,
            status,
            pid,
            exit_code: 5,
            started_ns: 7,
            finished_ns: 8,
            oom_killed: true,
            error: "e".into(),
        }
    }

    /// What [`record_v2`] is in format 3: the same without its PID.
    fn record_v3(n: u8, name: &str, status: ContainerStatus) -> ContainerRecord {
        let mut c = wharf_protocol::fixtures::container(n, name);
        c.created_ns = 3;
        c.node = NodeId(2);
        c.image_ref = "busybox:1".into();
        c.config_json = r#"{"Cmd":null}"#.into();
        c.host_config_json = r#"{"AutoRemove":true}"#.into();
        c.auto_remove = true;
        c.status = status;
        c.exit_code = 5;
        c.started_ns = 7;
        c.finished_ns = 8;
        c.oom_killed = true;
        c.error = "e".into();
        c
    }

    fn v1() -> ClusterStateV1 {
        let image = image();
        let mut s = ClusterStateV1::default();
        s.tags.insert("a:1".into(), image.id);
        s.images.insert(image.id, image);
        let c = record_v2(1, "up", ContainerStatus::Running, 42);
        s.containers.insert(c.id.clone(), c);
        s
    }

    /// A format-2 state with something in every field: a running container with its
    /// PID, an exited one, a volume, restart bookkeeping, a network, a connection, an
    /// endpoint with a published port, and where a layer is.
    fn v2() -> ClusterStateV2 {
        let image = image();
        let mut s = ClusterStateV2::default();
        s.tags.insert("a:1".into(), image.id);
        s.layers
            .insert(image.diff_ids[0], BTreeSet::from([NodeId(1), NodeId(2)]));
        s.images.insert(image.id, image);
        let up = record_v2(1, "up", ContainerStatus::Running, 42);
        let down = record_v2(2, "down", ContainerStatus::Exited, 0);
        s.volumes.insert(
            "data".into(),
            VolumeRecord {
                name: "data".into(),
                driver: "local".into(),
                labels: BTreeMap::from([("k".into(), "v".into())]),
                options: BTreeMap::new(),
                created_ns: 4,
                node: NodeId(2),
                anonymous: false,
            },
        );
        s.restarts.insert(
            down.id.clone(),
            RestartState {
                count: 2,
                manually_stopped: true,
                restarting: false,
            },
        );
        s.networks.insert(
            "n1".into(),
            NetworkRecord {
                id: "n1".into(),
                name: "front".into(),
                driver: "bridge".into(),
                subnet: Subnet::parse("10.1.2.0/24").unwrap(),
                gateway: std::net::Ipv4Addr::new(10, 1, 2, 1),
                bridge: "br-n1".into(),
                node: NodeId(2),
                labels: BTreeMap::new(),
                created_ns: 9,
                default: false,
            },
        );
        s.connections.insert(
            up.id.clone(),
            BTreeMap::from([("n1".into(), vec!["web".into()])]),
        );
        s.endpoints.insert(
            up.id.clone(),
            vec![Endpoint {
                network: "n1".into(),
                ip: std::net::Ipv4Addr::new(10, 1, 2, 2),
                mac: [2, 0x42, 10, 1, 2, 2],
                ports: vec![PortMapping {
                    proto: Proto::Tcp,
                    container_port: 80,
                    host_ip: std::net::Ipv4Addr::UNSPECIFIED,
                    host_port: 8080,
                }],
                aliases: vec!["web".into()],
                node: NodeId(2),
            }],
        );
        s.containers.insert(up.id.clone(), up);
        s.containers.insert(down.id.clone(), down);
        s
    }

    /// A container record as formats 1 and 2 store it (golden bytes of the old layout):
    /// the host PID right after the status, then the last run.
    #[test]
    fn golden_bytes_of_a_format_two_container_record() {
        let c = record_v2(0xab, "web", ContainerStatus::Running, 0x0102_0304);
        let bytes = db::encode(&c, "v2").unwrap();
        let text = |s: &str| {
            let mut v = (s.len() as u64).to_le_bytes().to_vec();
            v.extend(s.as_bytes());
            v
        };
        let mut want = vec![1u8];
        want.extend(text(&"ab".repeat(32)));
        want.extend(text("web"));
        want.extend(3i64.to_le_bytes());
        want.extend(2u64.to_le_bytes());
        want.extend(text("busybox:1"));
        want.extend(&db::encode(&c.run, "run").unwrap()[1..]);
        want.extend(text(r#"{"Cmd":null}"#));
        want.extend(text(r#"{"AutoRemove":true}"#));
        want.push(1);
        want.extend(1u32.to_le_bytes());
        want.extend([4, 3, 2, 1]);
        want.extend(5i32.to_le_bytes());
        want.extend(7i64.to_le_bytes());
        want.extend(8i64.to_le_bytes());
        want.push(1);
        want.extend(text("e"));
        assert_eq!(bytes, want);
        assert_eq!(db::decode::<ContainerRecordV2>(&bytes, "v2").unwrap(), c);
    }

    /// Everything of a format-2 state is in its format-3 state, the PIDs aside.
    #[test]
    fn a_format_two_state_keeps_every_field_but_the_pids() {
        let old = v2();
        let bytes = db::encode(&old, "v2").unwrap();
        let decoded: ClusterStateV2 = db::decode(&bytes, "v2").unwrap();
        assert_eq!(decoded, old);
        let new = ClusterState::from(decoded);
        let up = record_v3(1, "up", ContainerStatus::Running);
        let down = record_v3(2, "down", ContainerStatus::Exited);
        let want = ClusterState {
            images: old.images.clone(),
            tags: old.tags.clone(),
            containers: BTreeMap::from([(up.id.clone(), up), (down.id.clone(), down)]),
            volumes: old.volumes.clone(),
            restarts: old.restarts.clone(),
            networks: old.networks.clone(),
            connections: old.connections.clone(),
            endpoints: old.endpoints.clone(),
            layers: old.layers.clone(),
            ..ClusterState::default()
        };
        assert_eq!(new, want);
        assert!(!new.layers.is_empty() && !new.endpoints.is_empty());
    }

    /// Write `applied` and `snapshot` (encoded `ClusterState` of an older layout) into a
    /// new database at `dir`, stamped `format` (`None`: no format key, as format 1).
    fn old_database<S: Serialize>(dir: &std::path::Path, state: &S, format: Option<u32>) {
        let db = Db::open(dir).unwrap();
        let applied = AppliedOf {
            last_applied: None,
            membership: StoredMembership::default(),
            state,
        };
        let snap = WholeSnapshot {
            meta: SnapshotMeta::default(),
            data: db::encode(state, "old").unwrap(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(
            db.cf(CF_SM),
            KEY_APPLIED,
            db::encode(&applied, "old").unwrap(),
        );
        batch.put_cf(
            db.cf(CF_SM),
            KEY_SNAPSHOT,
            db::encode(&snap, "old").unwrap(),
        );
        match format {
            Some(f) => batch.put_cf(db.cf(CF_META), KEY_FORMAT, db::encode(&f, "f").unwrap()),
            None => batch.delete_cf(db.cf(CF_META), KEY_FORMAT),
        }
        db.write(batch, true, "old").unwrap();
    }

    /// Open `dir` twice (the second finds it migrated); the applied state and the
    /// snapshot must both be `want`, and the format this build's.
    fn opens_as(dir: &std::path::Path, want: &ClusterState) {
        for _ in 0..2 {
            let db = Db::open(dir).unwrap();
            assert_eq!(
                db.get::<u32>(CF_META, KEY_FORMAT, "format").unwrap(),
                Some(STATE_FORMAT)
            );
            assert_eq!(&records::load_state(&db).unwrap(), want);
            let log: Option<AppliedLog> = db.get(CF_SM, KEY_APPLIED_LOG, "log").unwrap();
            assert_eq!(log, Some(AppliedLog::default()));
            let mut state = ClusterState::default();
            for (k, v) in snapshot::current_records(&db).unwrap() {
                records::load_record(&mut state, &k, &v).unwrap();
            }
            assert_eq!(&state, want);
            for old in [KEY_APPLIED, KEY_SNAPSHOT] {
                assert!(db.get::<Vec<u8>>(CF_SM, old, "old").unwrap().is_none());
            }
        }
    }

    /// A database as a format-1 build left it (no format key, the old layout of the
    /// applied state and the snapshot) opens in this build with everything in it.
    #[test]
    fn a_format_one_database_is_migrated_once_with_its_state_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        old_database(dir.path(), &v1(), None);
        let want = ClusterState::from(v1());
        assert_eq!(want.images.len(), 1);
        assert!(want.layers.is_empty());
        assert_eq!(
            want.containers.values().next(),
            Some(&record_v3(1, "up", ContainerStatus::Running))
        );
        opens_as(dir.path(), &want);
    }

    /// A database as a format-2 build left it opens in this build with everything in
    /// it, its containers without PIDs.
    #[test]
    fn a_format_two_database_is_migrated_once_with_its_state_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        old_database(dir.path(), &v2(), Some(2));
        opens_as(dir.path(), &ClusterState::from(v2()));
    }

    /// Databases of formats 3 and 4 (the same layout; 4 only added batch entries to the
    /// log) open in this build with everything in them and no hosts yet: each host
    /// registers again when its daemon connects.
    #[test]
    fn formats_three_and_four_gain_an_empty_list_of_hosts() {
        for format in [3, 4] {
            let dir = tempfile::tempdir().unwrap();
            let old = ClusterStateV4::from(v2());
            old_database(dir.path(), &old, Some(format));
            let want = ClusterState::from(old);
            assert!(want.nodes.is_empty() && want.revoked_nodes.is_empty());
            assert_eq!(want.containers.len(), 2);
            opens_as(dir.path(), &want);
        }
    }

    /// Decoding an old layout as the new one fails: the migration is needed, and the
    /// fixture tests (store_test.rs) prove it is done.
    #[test]
    fn the_old_layouts_do_not_decode_as_the_new_one() {
        let bytes = db::encode(&v1(), "v1").unwrap();
        assert!(db::decode::<ClusterState>(&bytes, "v3").is_err());
        let bytes = db::encode(&v2(), "v2").unwrap();
        assert!(db::decode::<ClusterState>(&bytes, "v3").is_err());
        let bytes = db::encode(&ClusterStateV4::from(v2()), "v4").unwrap();
        assert!(db::decode::<ClusterState>(&bytes, "v5").is_err());
        let bytes = db::encode(&v5(), "v5").unwrap();
        assert!(db::decode::<ClusterState>(&bytes, "v6").is_err());
    }

    /// A format-5 state: the format-2 one with a host and a revoked ID.
    fn v5() -> ClusterStateV5 {
        let mut s = ClusterStateV5::from(ClusterStateV4::from(v2()));
        let node = NodeRecord {
            id: NodeId(7),
            role: wharf_protocol::node_state::NodeRole::Agent,
            description: wharf_protocol::node_state::NodeDescription {
                hostname: "node-7".into(),
                runs_containers: true,
                ..Default::default()
            },
            labels: BTreeMap::from([("disk".into(), "ssd".into())]),
            availability: Default::default(),
            state: Default::default(),
            created_ns: 3,
            updated_ns: 4,
        };
        s.nodes.insert(node.id, node);
        s.revoked_nodes.insert(NodeId(9));
        s
    }

    /// A database of format 5 opens in this build with everything in it, its hosts and
    /// revoked IDs too, and no idempotency keys yet.
    #[test]
    fn format_five_gains_an_empty_table_of_keys() {
        let dir = tempfile::tempdir().unwrap();
        let old = v5();
        old_database(dir.path(), &old, Some(5));
        let want = ClusterState::from(old.clone());
        assert!(want.applied_keys.is_empty());
        assert_eq!(want.nodes, old.nodes);
        assert_eq!(want.revoked_nodes, old.revoked_nodes);
        assert_eq!(want.containers.len(), 2);
        opens_as(dir.path(), &want);
    }

    /// A database of format 6 opens in this build with everything in it, its idempotency
    /// keys too, the default settings and no pending containers.
    #[test]
    fn format_six_gains_the_default_settings() {
        let dir = tempfile::tempdir().unwrap();
        let old = ClusterStateV6::from(v5());
        old_database(dir.path(), &old, Some(6));
        let want = ClusterState::from(old.clone());
        assert_eq!(want.settings, Default::default());
        assert!(want.pending.is_empty());
        assert_eq!(want.containers.len(), 2);
        assert_eq!(want.nodes, old.nodes);
        opens_as(dir.path(), &want);
    }

    /// A database of format 8 (the state as records, the snapshot in chunks of the
    /// database) opens with its snapshot copied into a file, the chunks gone, the records
    /// untouched; a crash before the migration's write leaves a file the next open deletes.
    #[test]
    fn format_eight_moves_its_snapshot_chunks_into_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let state = ClusterState::from(ClusterStateV6::from(v5()));
        let mut data = vec![snapshot::SNAPSHOT_RECORDS];
        let mut batch = WriteBatch::default();
        let db = Db::open(dir.path()).unwrap();
        records::for_each_record(&state, |k, v| {
            batch.put_cf(db.cf(CF_STATE), k, v);
            for part in [k, v] {
                data.extend((part.len() as u32).to_le_bytes());
                data.extend(part);
            }
            Ok(())
        })
        .unwrap();
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(2, 1), 40)),
            snapshot_id: "2-1-40-x".into(),
            ..Default::default()
        };
        // Chunks of 100 bytes, cutting records anywhere, as format 8 stored them.
        let chunks: Vec<&[u8]> = data.chunks(100).collect();
        assert!(chunks.len() > 3);
        for (i, chunk) in (0u32..).zip(&chunks) {
            batch.put_cf(db.cf(CF_SM), chunk_key_v8(5, i), chunk);
        }
        let old = StoredMetaV8 {
            meta: meta.clone(),
            generation: 5,
            chunks: chunks.len() as u32,
        };
        batch.put_cf(
            db.cf(CF_SM),
            KEY_SNAPSHOT_META_V8,
            db::encode(&old, "old").unwrap(),
        );
        batch.put_cf(db.cf(CF_META), KEY_FORMAT, db::encode(&8u32, "f").unwrap());
        db.write(batch, true, "old").unwrap();
        drop(db);
        // A file a migration cut short by a crash left.
        std::fs::create_dir_all(dir.path().join("snapshots")).unwrap();
        std::fs::write(dir.path().join("snapshots/build-1.tmp"), b"partial").unwrap();

        for _ in 0..2 {
            let db = Arc::new(Db::open(dir.path()).unwrap());
            assert_eq!(
                db.get::<u32>(CF_META, KEY_FORMAT, "format").unwrap(),
                Some(STATE_FORMAT)
            );
            assert_eq!(records::load_state(&db).unwrap(), state);
            let stored = snapshot::current_meta(&db).unwrap().unwrap();
            assert_eq!(stored.meta, meta);
            let file = snapshot::path_of(&db, stored.generation);
            assert_eq!(std::fs::read(&file).unwrap(), data);
            assert!(db
                .get::<StoredMetaV8>(CF_SM, KEY_SNAPSHOT_META_V8, "old")
                .unwrap()
                .is_none());
            let left = db
                .rocks()
                .prefix_iterator_cf(db.cf(CF_SM), CHUNK_PREFIX_V8)
                .filter_map(Result::ok)
                .filter(|(k, _)| k.starts_with(CHUNK_PREFIX_V8))
                .count();
            assert_eq!(left, 0, "the chunks are deleted");
            // Opening the state machine deletes what no write named.
            let sm = super::super::StateMachine::load(Arc::clone(&db)).unwrap();
            let files: Vec<_> = std::fs::read_dir(snapshot::dir(&db))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            assert_eq!(files, vec![file]);
            let current = sm.current_snapshot().unwrap().unwrap();
            assert_eq!(current.meta, meta);
        }
    }

    /// A database of format 7 (the whole state in one record, settings and pending
    /// containers in it) opens in this build as one record per entry, nothing lost.
    #[test]
    fn format_seven_becomes_one_record_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut old = ClusterState::from(ClusterStateV6::from(v5()));
        old.settings.fencing = !old.settings.fencing;
        old.settings.overcommit_milli = 1500;
        let id = old.containers.keys().next().unwrap().clone();
        old.pending.insert(id, "pinned by volume data".into());
        old_database(dir.path(), &old, Some(7));
        opens_as(dir.path(), &old);
    }
}
