//! The cluster state in RocksDB, one record per entry (state format 8): what the state
//! machine writes after each applied batch, what it loads at open, and what a snapshot
//! carries.
//!
//! ```text
//!   cf `state`:  "image/"      + ImageId      -> ImageRecord
//!                "tag/"        + reference    -> ImageId
//!                "container/"  + ContainerId  -> ContainerRecord
//!                "volume/"     + name         -> VolumeRecord
//!                "restart/"    + ContainerId  -> RestartState
//!                "network/"    + network id   -> NetworkRecord
//!                "connection/" + ContainerId  -> network id -> aliases
//!                "endpoint/"   + ContainerId  -> [Endpoint]
//!                "layer/"      + DiffId       -> {NodeId}
//!                "node/"       + NodeId       -> NodeRecord
//!                "revoked/"    + NodeId       -> ()
//!                "applied_keys/"              -> AppliedKeys (bounded: one record)
//!                "settings/"                  -> ClusterSettings
//!                "pending/"    + ContainerId  -> why it cannot move
//! ```
//!
//! A key is its kind's prefix followed by the encoded map key; every value goes through
//! the codec. An entry absent from the state has no record.

use std::collections::BTreeSet;

use rocksdb::{ColumnFamily, WriteBatch};
use wharf_protocol::state::ClusterState;
use wharf_protocol::state_key::StateKey;

use super::db::{self, Db};
use super::RaftError;

/// Column family of the cluster state, one record per entry.
pub(super) const CF_STATE: &str = "state";

/// The RocksDB key of the record of `key`.
pub(super) fn record_key(key: &StateKey) -> Result<Vec<u8>, RaftError> {
    let what = "state key";
    let (prefix, rest): (&[u8], Vec<u8>) = match key {
        StateKey::Image(id) => (b"image/", db::encode(id, what)?),
        StateKey::Tag(r) => (b"tag/", db::encode(r, what)?),
        StateKey::Container(id) => (b"container/", db::encode(id, what)?),
        StateKey::Volume(n) => (b"volume/", db::encode(n, what)?),
        StateKey::Restart(id) => (b"restart/", db::encode(id, what)?),
        StateKey::Network(id) => (b"network/", db::encode(id, what)?),
        StateKey::Connection(id) => (b"connection/", db::encode(id, what)?),
        StateKey::Endpoint(id) => (b"endpoint/", db::encode(id, what)?),
        StateKey::Layer(d) => (b"layer/", db::encode(d, what)?),
        StateKey::Node(id) => (b"node/", db::encode(id, what)?),
        StateKey::RevokedNode(id) => (b"revoked/", db::encode(id, what)?),
        StateKey::AppliedKeys => (b"applied_keys/", Vec::new()),
        StateKey::Settings => (b"settings/", Vec::new()),
        StateKey::Pending(id) => (b"pending/", db::encode(id, what)?),
    };
    let mut k = Vec::with_capacity(prefix.len() + rest.len());
    k.extend_from_slice(prefix);
    k.extend(rest);
    Ok(k)
}

/// The encoded value of `key` in `s`; `None` when `s` has no such entry.
pub(super) fn record_value(s: &ClusterState, key: &StateKey) -> Result<Option<Vec<u8>>, RaftError> {
    fn enc<T: serde::Serialize>(
        v: Option<&T>,
        what: &'static str,
    ) -> Result<Option<Vec<u8>>, RaftError> {
        v.map(|v| db::encode(v, what)).transpose()
    }
    match key {
        StateKey::Image(id) => enc(s.images.get(id), "image record"),
        StateKey::Tag(r) => enc(s.tags.get(r), "tag record"),
        StateKey::Container(id) => enc(s.containers.get(id), "container record"),
        StateKey::Volume(n) => enc(s.volumes.get(n), "volume record"),
        StateKey::Restart(id) => enc(s.restarts.get(id), "restart record"),
        StateKey::Network(id) => enc(s.networks.get(id), "network record"),
        StateKey::Connection(id) => enc(s.connections.get(id), "connection record"),
        StateKey::Endpoint(id) => enc(s.endpoints.get(id), "endpoint record"),
        StateKey::Layer(d) => enc(s.layers.get(d), "layer record"),
        StateKey::Node(id) => enc(s.nodes.get(id), "node record"),
        StateKey::RevokedNode(id) => enc(s.revoked_nodes.get(id).map(|_| &()), "revoked node"),
        StateKey::AppliedKeys => enc(Some(&s.applied_keys), "applied keys"),
        StateKey::Settings => enc(Some(&s.settings), "settings"),
        StateKey::Pending(id) => enc(s.pending.get(id), "pending record"),
    }
}

/// Put into `batch` the record of each of `keys` as `s` has it now, or its deletion.
pub(super) fn put_touched(
    batch: &mut WriteBatch,
    cf: &ColumnFamily,
    s: &ClusterState,
    keys: &BTreeSet<StateKey>,
) -> Result<(), RaftError> {
    for key in keys {
        let k = record_key(key)?;
        match record_value(s, key)? {
            Some(v) => batch.put_cf(cf, k, v),
            None => batch.delete_cf(cf, k),
        }
    }
    Ok(())
}

/// Every entry of `s` as a state key. Every field is named (no `..`): a field added to
/// [`ClusterState`] does not compile until it is persisted.
pub(super) fn all_keys(s: &ClusterState) -> impl Iterator<Item = StateKey> + '_ {
    let ClusterState {
        images,
        tags,
        containers,
        volumes,
        restarts,
        networks,
        connections,
        endpoints,
        layers,
        nodes,
        revoked_nodes,
        applied_keys: _,
        settings: _,
        pending,
        index: _,
    } = s;
    images
        .keys()
        .map(|k| StateKey::Image(*k))
        .chain(tags.keys().map(|k| StateKey::Tag(k.clone())))
        .chain(containers.keys().map(|k| StateKey::Container(k.clone())))
        .chain(volumes.keys().map(|k| StateKey::Volume(k.clone())))
        .chain(restarts.keys().map(|k| StateKey::Restart(k.clone())))
        .chain(networks.keys().map(|k| StateKey::Network(k.clone())))
        .chain(connections.keys().map(|k| StateKey::Connection(k.clone())))
        .chain(endpoints.keys().map(|k| StateKey::Endpoint(k.clone())))
        .chain(layers.keys().map(|k| StateKey::Layer(*k)))
        .chain(nodes.keys().map(|k| StateKey::Node(*k)))
        .chain(revoked_nodes.iter().map(|k| StateKey::RevokedNode(*k)))
        .chain(pending.keys().map(|k| StateKey::Pending(k.clone())))
        .chain([StateKey::AppliedKeys, StateKey::Settings])
}

/// Call `f` with the key and value of every record of `s`; for a migration and a
/// snapshot of an older build, which hold the state whole.
pub(super) fn for_each_record<F>(s: &ClusterState, mut f: F) -> Result<(), RaftError>
where
    F: FnMut(&[u8], &[u8]) -> Result<(), RaftError>,
{
    for key in all_keys(s) {
        if let Some(v) = record_value(s, &key)? {
            f(&record_key(&key)?, &v)?;
        }
    }
    Ok(())
}

/// Add the record `key` → `value` (read from disk or a peer's snapshot) to `s`.
pub(super) fn load_record(s: &mut ClusterState, key: &[u8], value: &[u8]) -> Result<(), RaftError> {
    let split = key.iter().position(|b| *b == b'/').map_or(0, |i| i + 1);
    let (prefix, rest) = key.split_at(split);
    let k = "state key";
    match prefix {
        b"image/" => {
            s.images
                .insert(db::decode(rest, k)?, db::decode(value, "image record")?);
        }
        b"tag/" => {
            s.tags
                .insert(db::decode(rest, k)?, db::decode(value, "tag record")?);
        }
        b"container/" => {
            s.containers
                .insert(db::decode(rest, k)?, db::decode(value, "container record")?);
        }
        b"volume/" => {
            s.volumes
                .insert(db::decode(rest, k)?, db::decode(value, "volume record")?);
        }
        b"restart/" => {
            s.restarts
                .insert(db::decode(rest, k)?, db::decode(value, "restart record")?);
        }
        b"network/" => {
            s.networks
                .insert(db::decode(rest, k)?, db::decode(value, "network record")?);
        }
        b"connection/" => {
            s.connections.insert(
                db::decode(rest, k)?,
                db::decode(value, "connection record")?,
            );
        }
        b"endpoint/" => {
            s.endpoints
                .insert(db::decode(rest, k)?, db::decode(value, "endpoint record")?);
        }
        b"layer/" => {
            s.layers
                .insert(db::decode(rest, k)?, db::decode(value, "layer record")?);
        }
        b"node/" => {
            s.nodes
                .insert(db::decode(rest, k)?, db::decode(value, "node record")?);
        }
        b"revoked/" => {
            db::decode::<()>(value, "revoked node")?;
            s.revoked_nodes.insert(db::decode(rest, k)?);
        }
        b"applied_keys/" if rest.is_empty() => {
            s.applied_keys = db::decode(value, "applied keys")?;
        }
        b"settings/" if rest.is_empty() => {
            s.settings = db::decode(value, "settings")?;
        }
        b"pending/" => {
            s.pending
                .insert(db::decode(rest, k)?, db::decode(value, "pending record")?);
        }
        _ => {
            return Err(RaftError::StateRecord {
                key: String::from_utf8_lossy(&key[..key.len().min(32)]).into_owned(),
            })
        }
    }
    Ok(())
}

/// The state whose records `db` holds; call once at open.
pub(super) fn load_state(db: &Db) -> Result<ClusterState, RaftError> {
    let mut s = ClusterState::default();
    let iter = db
        .rocks()
        .iterator_cf(db.cf(CF_STATE), rocksdb::IteratorMode::Start);
    for item in iter {
        let (k, v) = item.map_err(|source| RaftError::Read {
            what: "state record",
            source,
        })?;
        load_record(&mut s, &k, &v)?;
    }
    Ok(s)
}

/// Put into `batch` the deletion of every record of the state: the first step of
/// replacing it by a snapshot's. Every key starts with a lowercase prefix, below 0xff.
pub(super) fn delete_all(batch: &mut WriteBatch, cf: &ColumnFamily) {
    batch.delete_range_cf(cf, [0u8].as_slice(), [0xffu8].as_slice());
}
