//! Volumes and the host side of a container's mounts, as Docker's `local` driver does it.
//!
//! ```text
//!  volume create / -v name:/p ──► CreateVolume (Raft) ──► agent: DATA_DIR/volumes/<name>/_data
//!  volume rm / prune / rm -v  ──► RemoveVolume (Raft; refused while mounted) ──► agent: rm -r
//! ```
//!
//! The state decides (a volume is in use while a container record mounts it); the agent
//! only makes and removes directories.

use super::{now_ns, plan, Engine};
use crate::docker_types::{self, CreateConfig, ImageRunConfig, VolumeNeed};
use crate::engine::error::EngineError;
use std::collections::BTreeMap;
use tracing::{info, warn};
use wharf_protocol::agent::{HostSpec, MountKind};
use wharf_protocol::state::{ClusterState, ContainerRecord, StateError, VolumeRecord};
use wharf_protocol::NodeId;

/// The only volume driver there is.
pub const LOCAL_DRIVER: &str = "local";

/// What `docker volume prune` removes.
#[derive(Clone, Debug, Default)]
pub struct PruneFilter {
    /// Named volumes too (`--all`), not only anonymous ones.
    pub all: bool,
    /// `label=k` or `label=k=v` that must match.
    pub labels: Vec<String>,
    /// `label!=k` or `label!=k=v` that must not match.
    pub not_labels: Vec<String>,
}

/// Whether `labels` match a `k` or `k=v` filter (pure).
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// The `local` driver's options: `type`, `device` and `o` (moby's `validOpts`, less
/// `size`, which needs xfs quotas); `device` is required when `type` is given. Pure.
pub fn check_local_options(options: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(key) = options
        .keys()
        .find(|k| !matches!(k.as_str(), "type" | "device" | "o"))
    {
        return Err(format!("invalid option: \"{key}\""));
    }
    if options.contains_key("type") && !options.contains_key("device") {
        return Err("missing required option: \"device\"".to_string());
    }
    if options.contains_key("device") && !options.contains_key("type") {
        return Err("missing required option: \"type\"".to_string());
    }
    Ok(())
}

/// A create request's mounts and limits, resolved against the state (pure): the host
/// settings, the volumes to create, and the `--mount type=bind` sources that must exist
/// on the host (its agent checks them; the missing sources of `-v` binds it makes).
/// `anon` names each anonymous volume.
pub fn resolve_host_config(
    state: &ClusterState,
    req: &CreateConfig,
    image: &ImageRunConfig,
    anon: &mut dyn FnMut() -> String,
) -> Result<(HostSpec, Vec<VolumeNeed>, Vec<String>), EngineError> {
    let hc = req.host_config.clone().unwrap_or_default();
    let config_volumes: Vec<String> = req.volumes.keys().cloned().collect();
    let image_volumes: Vec<String> = image.volumes.keys().cloned().collect();
    let (mut host, needs) = docker_types::resolve_host(&hc, &config_volumes, &image_volumes, anon)
        .map_err(EngineError::invalid)?;
    let bind_sources = hc
        .mounts
        .iter()
        .filter(|b| b.typ == "bind")
        .map(|b| b.source.clone())
        .collect();
    for m in &mut host.mounts {
        if m.kind != MountKind::Volume {
            continue;
        }
        // An existing volume keeps its options; a new one takes the mount's.
        m.driver_opts = match state.volumes.get(&m.source) {
            Some(v) => v.options.clone(),
            None => needs
                .iter()
                .find(|n| n.name == m.source)
                .map(|n| n.options.clone())
                .unwrap_or_default(),
        };
        check_local_options(&m.driver_opts).map_err(EngineError::invalid)?;
    }
    Ok((host, needs, bind_sources))
}

impl Engine {
    /// Every volume, by name.
    pub fn volumes(&self) -> Vec<VolumeRecord> {
        self.store.read(|s| s.volumes.values().cloned().collect())
    }

    /// One volume, or Docker's 404.
    pub fn volume(&self, name: &str) -> Result<VolumeRecord, EngineError> {
        self.store
            .read(|s| s.volumes.get(name).cloned())
            .ok_or_else(|| EngineError::from(StateError::NoSuchVolume(name.to_string())))
    }

    /// The directory a volume's data lives in on its host (its node's volumes root, as
    /// that node's agent told at connection).
    pub fn volume_mountpoint(&self, name: &str) -> String {
        let root = self
            .store
            .read(|s| s.volumes.get(name).map(|v| v.node))
            .map(|node| self.volumes_root(node))
            .unwrap_or_default();
        wharf_protocol::agent::volume::mountpoint(&root, name)
    }

    /// Bytes used by each volume of `names`, in order, each asked of its node's agent; 0
    /// where the agent cannot tell.
    pub async fn volume_sizes(&self, names: Vec<String>) -> Vec<u64> {
        let mut sizes = vec![0; names.len()];
        let mut by_node: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
        self.store.read(|s| {
            for (i, n) in names.iter().enumerate() {
                if let Some(v) = s.volumes.get(n) {
                    by_node.entry(v.node).or_default().push(i);
                }
            }
        });
        for (node, idx) in by_node {
            let asked: Vec<String> = idx.iter().map(|i| names[*i].clone()).collect();
            match self.agents.volume_sizes(&node, asked).await {
                Ok(got) => {
                    for (i, size) in idx.iter().zip(got) {
                        sizes[*i] = size;
                    }
                }
                Err(e) => warn!(node = %node, error = %e, "volume sizes unknown"),
            }
        }
        sizes
    }

    /// The containers (full IDs) that mount the volume.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.store
            .read(|s| wharf_protocol::state::volume_users(s, name))
    }

    /// `POST /volumes/create`: an existing volume of that name is returned as it is
    /// ([`plan::create_volume`]).
    pub async fn create_volume(
        &self,
        name: &str,
        driver: &str,
        labels: BTreeMap<String, String>,
        options: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<VolumeRecord, EngineError> {
        let name = if name.is_empty() {
            hex::encode(rand::random::<[u8; 32]>())
        } else {
            name.to_string()
        };
        let (now, node) = (now_ns(), self.image_target()?);
        let req = plan::NewVolume {
            name: &name,
            driver,
            labels,
            options,
            anonymous,
        };
        let planned = self
            .store
            .read(|s| plan::create_volume(s, req, node, now))?;
        match planned {
            plan::VolumeCreate::Exists(v) => Ok(v),
            plan::VolumeCreate::New(_, steps) => {
                self.execute(steps).await?;
                info!(volume = %name, anonymous, "volume created");
                self.emit_volume(&name, "create");
                self.volume(&name)
            }
        }
    }

    /// `DELETE /volumes/{name}`: 409 while a container mounts it, even with `force`
    /// ([`plan::remove_volume`]).
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<(), EngineError> {
        let Some((_, steps)) = self.store.read(|s| plan::remove_volume(s, name, force))? else {
            return Ok(());
        };
        match self.execute(steps).await {
            Ok(()) => {}
            // Removed meanwhile by another request.
            Err(f) if force && f.error.is(crate::engine::ErrorKind::NotFound) => return Ok(()),
            Err(f) => return Err(f.error),
        }
        info!(volume = %name, "volume removed");
        self.emit_volume(name, "destroy");
        Ok(())
    }

    /// Publish a volume event.
    pub(super) fn emit_volume(&self, name: &str, action: &str) {
        self.emit(
            super::events::EventType::Volume,
            action,
            name,
            [("driver".to_string(), LOCAL_DRIVER.to_string())].into(),
        );
    }

    /// `POST /volumes/prune`: remove unused volumes (anonymous ones unless `all`);
    /// returns their names and the bytes freed.
    pub async fn prune_volumes(&self, filter: &PruneFilter) -> (Vec<String>, u64) {
        let candidates: Vec<VolumeRecord> = self.volumes();
        let mut removed = vec![];
        let mut freed = 0;
        for v in candidates {
            if !filter.all && !v.anonymous {
                continue;
            }
            if !filter.labels.iter().all(|l| label_matches(&v.labels, l))
                || filter
                    .not_labels
                    .iter()
                    .any(|l| label_matches(&v.labels, l))
            {
                continue;
            }
            if !self.volume_users(&v.name).is_empty() {
                continue;
            }
            let size = self.volume_sizes(vec![v.name.clone()]).await[0];
            if self.remove_volume(&v.name, false).await.is_ok() {
                freed += size;
                removed.push(v.name);
            }
        }
        (removed, freed)
    }

    /// After `rm -v` (or `--rm`): remove the anonymous volumes the container mounted
    /// that no other container uses.
    pub async fn remove_anonymous_volumes(&self, c: &ContainerRecord) {
        for m in &c.run.host.mounts {
            if m.kind != MountKind::Volume || !m.anonymous {
                continue;
            }
            if let Err(e) = self.remove_volume(&m.source, true).await {
                warn!(volume = %m.source, error = %e, "anonymous volume kept");
            }
        }
    }

    /// `Mounts` of `docker inspect`.
    pub fn mounts_json(&self, c: &ContainerRecord) -> serde_json::Value {
        let mounts: Vec<serde_json::Value> = c
            .run
            .host
            .mounts
            .iter()
            .map(|m| {
                let mut j = serde_json::json!({
                    "Type": m.kind.as_str(),
                    "Destination": m.target,
                    "Mode": if m.read_only { "ro" } else { "" },
                    "RW": !m.read_only,
                    "Propagation": match m.kind {
                        MountKind::Bind if m.propagation.is_empty() => "rprivate",
                        MountKind::Bind => m.propagation.as_str(),
                        _ => "",
                    },
                });
                match m.kind {
                    MountKind::Volume => {
                        j["Name"] = m.source.clone().into();
                        j["Source"] = self.volume_mountpoint(&m.source).into();
                        j["Driver"] = LOCAL_DRIVER.into();
                    }
                    MountKind::Bind => j["Source"] = m.source.clone().into(),
                    MountKind::Tmpfs => j["Source"] = "".into(),
                }
                j
            })
            .collect();
        serde_json::Value::Array(mounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_driver_options() {
        let o = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(check_local_options(&o(&[])).is_ok());
        assert!(check_local_options(&o(&[
            ("type", "tmpfs"),
            ("device", "tmpfs"),
            ("o", "size=1m")
        ]))
        .is_ok());
        assert_eq!(
            check_local_options(&o(&[("size", "1g")])),
            Err("invalid option: \"size\"".to_string())
        );
        assert!(check_local_options(&o(&[("type", "nfs")]))
            .unwrap_err()
            .contains("\"device\""));
        assert!(check_local_options(&o(&[("device", "/dev/sdb")]))
            .unwrap_err()
            .contains("\"type\""));
    }

    #[test]
    fn label_filters() {
        let l = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        assert!(label_matches(&l, "env"));
        assert!(label_matches(&l, "env=prod"));
        assert!(!label_matches(&l, "env=dev"));
        assert!(!label_matches(&l, "team"));
    }
}
