//! Volumes and the host side of a container's mounts, as Docker's `local` driver does it.
//!
//! ```text
//!  volume create / -v name:/p ──► CreateVolume (Raft) ──► agent: DATA_DIR/volumes/<name>/_data
//!  volume rm / prune / rm -v  ──► RemoveVolume (Raft; refused while mounted) ──► agent: rm -r
//! ```
//!
//! The state decides (a volume is in use while a container record mounts it); the agent
//! only makes and removes directories.

use super::{now_ns, Engine};
use crate::docker_types::{self, CreateConfig, ImageRunConfig, VolumeNeed};
use crate::engine::error::EngineError;
use std::collections::BTreeMap;
use tracing::{info, warn};
use wharf_protocol::agent::{HostSpec, MountKind};
use wharf_protocol::state::{Command, ContainerRecord, StateError, VolumeRecord};

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

    /// Ask the node's agent what the engine shows of its host (where volumes live); call
    /// once, after [`Engine::new`] and before serving.
    pub async fn learn_host(&self) -> Result<(), EngineError> {
        let root = self.agents.volumes_root(&self.node).await?;
        let _ = self.volumes_root.set(root);
        Ok(())
    }

    /// The directory a volume's data lives in on its host.
    pub fn volume_mountpoint(&self, name: &str) -> String {
        let root = self.volumes_root.get().map_or("", String::as_str);
        wharf_protocol::agent::volume::mountpoint(root, name)
    }

    /// Bytes used by each volume of `names`, in order; 0 where the agent cannot tell.
    pub async fn volume_sizes(&self, names: Vec<String>) -> Vec<u64> {
        let n = names.len();
        match self.agents.volume_sizes(&self.node, names).await {
            Ok(sizes) => sizes,
            Err(e) => {
                warn!(error = %e, "volume sizes unknown");
                vec![0; n]
            }
        }
    }

    /// The containers (full IDs) that mount the volume.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.store
            .read(|s| wharf_protocol::state::volume_users(s, name))
    }

    /// `POST /volumes/create`: an existing volume of that name is returned as it is.
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
        if !docker_types::valid_volume_name(&name) {
            return Err(EngineError::invalid(docker_types::invalid_volume_name(
                &name,
            )));
        }
        if !driver.is_empty() && driver != LOCAL_DRIVER {
            return Err(EngineError::not_found(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            )));
        }
        check_local_options(&options).map_err(EngineError::invalid)?;
        if let Ok(existing) = self.volume(&name) {
            return Ok(existing);
        }
        self.agents
            .create_volume(&self.node, &name)
            .await
            .map_err(|f| EngineError::internal(f.message))?;
        let record = VolumeRecord {
            name: name.clone(),
            driver: LOCAL_DRIVER.to_string(),
            labels,
            options,
            created_ns: now_ns(),
            node: self.node,
            anonymous,
        };
        self.propose(Command::CreateVolume {
            volume: record.clone(),
        })
        .await?;
        info!(volume = %name, anonymous, "volume created");
        self.emit(
            super::events::EventType::Volume,
            "create",
            &name,
            [("driver".to_string(), LOCAL_DRIVER.to_string())].into(),
        );
        self.volume(&name)
    }

    /// `DELETE /volumes/{name}`: 409 while a container mounts it, even with `force`.
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<(), EngineError> {
        match self
            .propose(Command::RemoveVolume {
                name: name.to_string(),
            })
            .await
        {
            Ok(()) => {}
            Err(e) if force && e.is(crate::engine::ErrorKind::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Err(e) = self.agents.remove_volume(&self.node, name).await {
            warn!(volume = %name, error = %e, "removing volume data failed");
        }
        info!(volume = %name, "volume removed");
        self.emit(
            super::events::EventType::Volume,
            "destroy",
            name,
            [("driver".to_string(), LOCAL_DRIVER.to_string())].into(),
        );
        Ok(())
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

    /// Resolve a create request's mounts and limits (pure parse), then make missing
    /// `-v` bind sources and refuse missing `--mount` ones, as Docker does.
    pub(crate) fn resolve_host_config(
        &self,
        req: &CreateConfig,
        image: &ImageRunConfig,
    ) -> Result<(HostSpec, Vec<VolumeNeed>), EngineError> {
        let hc = req.host_config.clone().unwrap_or_default();
        let config_volumes: Vec<String> = req.volumes.keys().cloned().collect();
        let image_volumes: Vec<String> = image.volumes.keys().cloned().collect();
        let mut anon = || hex::encode(rand::random::<[u8; 32]>());
        let (host, needs) =
            docker_types::resolve_host(&hc, &config_volumes, &image_volumes, &mut anon)
                .map_err(EngineError::invalid)?;
        for b in &hc.mounts {
            if b.typ == "bind" && !std::path::Path::new(&b.source).exists() {
                return Err(EngineError::invalid(format!(
                    "invalid mount config for type \"bind\": bind source path does not exist: {}",
                    b.source
                )));
            }
        }
        let mut host = host;
        for m in &mut host.mounts {
            if m.kind != MountKind::Volume {
                continue;
            }
            // An existing volume keeps its options; a new one takes the mount's.
            m.driver_opts = match self.volume(&m.source) {
                Ok(v) => v.options,
                Err(_) => needs
                    .iter()
                    .find(|n| n.name == m.source)
                    .map(|n| n.options.clone())
                    .unwrap_or_default(),
            };
            check_local_options(&m.driver_opts).map_err(EngineError::invalid)?;
        }
        for m in &host.mounts {
            if m.kind == MountKind::Bind && !std::path::Path::new(&m.source).exists() {
                std::fs::create_dir_all(&m.source).map_err(|e| {
                    EngineError::internal(format!(
                        "error while creating mount source path '{}': {e}",
                        m.source
                    ))
                })?;
            }
        }
        Ok((host, needs))
    }

    /// Create the volumes a new container needs that do not exist yet.
    pub(crate) async fn ensure_volumes(&self, needs: &[VolumeNeed]) -> Result<(), EngineError> {
        for n in needs {
            if self.volume(&n.name).is_err() {
                self.create_volume(
                    &n.name,
                    LOCAL_DRIVER,
                    n.labels.clone(),
                    n.options.clone(),
                    n.anonymous,
                )
                .await?;
            }
        }
        Ok(())
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
