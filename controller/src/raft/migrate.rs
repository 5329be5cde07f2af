//! Migrations of the Raft database between state formats, run at open before anything
//! reads it. Each older layout is kept here, frozen, as the types that decode it.
//!
//! | format | change                                                   |
//! |--------|----------------------------------------------------------|
//! | 1      | the first (a database without a format key is format 1)  |
//! | 2      | `ClusterState.layers`: which node holds which layer      |
//!
//! The log entries need no migration: commands only gain variants at the end, which old
//! entries never use. The applied state and the snapshot hold the whole `ClusterState`
//! and are rewritten, in one fsynced batch with the new format number.

use super::db::{self, Db, CF_META, CF_SM, KEY_APPLIED, KEY_FORMAT, KEY_SNAPSHOT};
use super::state_machine::{Applied, StoredSnapshot};
use super::RaftError;
use openraft::{BasicNode, LogId, StoredMembership};
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use wharf_protocol::network::{Endpoint, NetworkRecord};
use wharf_protocol::state::{
    ClusterState, ContainerRecord, ImageRecord, RestartState, VolumeRecord,
};
use wharf_protocol::{ContainerId, ImageId};

/// `ClusterState` as format 1 stores it (frozen).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ClusterStateV1 {
    images: BTreeMap<ImageId, ImageRecord>,
    tags: BTreeMap<String, ImageId>,
    containers: BTreeMap<ContainerId, ContainerRecord>,
    volumes: BTreeMap<String, VolumeRecord>,
    restarts: BTreeMap<ContainerId, RestartState>,
    networks: BTreeMap<String, NetworkRecord>,
    connections: BTreeMap<ContainerId, BTreeMap<String, Vec<String>>>,
    endpoints: BTreeMap<ContainerId, Vec<Endpoint>>,
}

impl From<ClusterStateV1> for ClusterState {
    /// Format 2 adds where layers are: unknown until the agents report (empty).
    fn from(v: ClusterStateV1) -> ClusterState {
        ClusterState {
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

/// The applied state as format 1 stores it.
#[derive(Debug, Serialize, Deserialize)]
struct AppliedV1 {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    state: ClusterStateV1,
}

/// Bring a database of format `found` to `target`; nothing is written when a step fails.
pub(super) fn migrate(db: &Db, found: u32, target: u32) -> Result<(), RaftError> {
    let mut batch = WriteBatch::default();
    let mut format = found;
    if format == 1 && target >= 2 {
        one_to_two(db, &mut batch)?;
        format = 2;
    }
    batch.put_cf(
        db.cf(CF_META),
        KEY_FORMAT,
        db::encode(&format, "state format")?,
    );
    db.write(batch, true, "state format migration")?;
    tracing::info!(from = found, to = format, path = %db.path().display(), "raft database migrated");
    Ok(())
}

fn one_to_two(db: &Db, batch: &mut WriteBatch) -> Result<(), RaftError> {
    if let Some(old) = db.get::<AppliedV1>(CF_SM, KEY_APPLIED, "applied state (format 1)")? {
        let applied = Applied {
            last_applied: old.last_applied,
            membership: old.membership,
            state: old.state.into(),
        };
        batch.put_cf(
            db.cf(CF_SM),
            KEY_APPLIED,
            db::encode(&applied, "applied state")?,
        );
    }
    if let Some(snap) = db.get::<StoredSnapshot>(CF_SM, KEY_SNAPSHOT, "snapshot (format 1)")? {
        let old: ClusterStateV1 = db::decode(&snap.data, "snapshot data (format 1)")?;
        let state: ClusterState = old.into();
        let stored = StoredSnapshot {
            meta: snap.meta,
            data: db::encode(&state, "snapshot data")?,
        };
        batch.put_cf(db.cf(CF_SM), KEY_SNAPSHOT, db::encode(&stored, "snapshot")?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::db::STATE_FORMAT;
    use openraft::SnapshotMeta;
    use wharf_protocol::Digest;

    fn v1() -> ClusterStateV1 {
        let image = ImageRecord {
            id: ImageId(Digest::of(b"config")),
            config: b"config".to_vec(),
            diff_ids: vec![],
            size: 7,
            loaded_ns: 1,
        };
        let mut s = ClusterStateV1::default();
        s.tags.insert("a:1".into(), image.id);
        s.images.insert(image.id, image);
        s
    }

    /// A database as a format-1 build left it (no format key, the old layout of the
    /// applied state and the snapshot) opens in this build with everything in it.
    #[test]
    fn a_format_one_database_is_migrated_once_with_its_state_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let applied = AppliedV1 {
                last_applied: None,
                membership: StoredMembership::default(),
                state: v1(),
            };
            let snap = StoredSnapshot {
                meta: SnapshotMeta::default(),
                data: db::encode(&v1(), "v1").unwrap(),
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(
                db.cf(CF_SM),
                KEY_APPLIED,
                db::encode(&applied, "v1").unwrap(),
            );
            batch.put_cf(db.cf(CF_SM), KEY_SNAPSHOT, db::encode(&snap, "v1").unwrap());
            batch.delete_cf(db.cf(CF_META), KEY_FORMAT);
            db.write(batch, true, "v1").unwrap();
        }
        for _ in 0..2 {
            let db = Db::open(dir.path()).unwrap();
            assert_eq!(
                db.get::<u32>(CF_META, KEY_FORMAT, "format").unwrap(),
                Some(STATE_FORMAT)
            );
            let applied: Applied = db.get(CF_SM, KEY_APPLIED, "applied").unwrap().unwrap();
            assert_eq!(applied.state, ClusterState::from(v1()));
            assert_eq!(applied.state.images.len(), 1);
            let snap: StoredSnapshot = db.get(CF_SM, KEY_SNAPSHOT, "snap").unwrap().unwrap();
            let state: ClusterState = db::decode(&snap.data, "snap").unwrap();
            assert_eq!(state.tags.len(), 1);
            assert!(state.layers.is_empty());
        }
    }

    /// Decoding the old layout as the new one fails: the migration is needed, and the
    /// fixture test (store_test.rs) proves it is done.
    #[test]
    fn the_old_layout_does_not_decode_as_the_new_one() {
        let bytes = db::encode(&v1(), "v1").unwrap();
        assert!(db::decode::<ClusterState>(&bytes, "v2").is_err());
    }
}
