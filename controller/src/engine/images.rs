//! The engine's image side beyond `load`: save, tag, rmi, prune, history, import, and the
//! container-layer operations diff, export and commit.
//!
//! ```text
//!  API ──► Engine (this file; create.rs: import, commit) ──propose──► ClusterState
//!            │  decisions: delete.rs (rmi rules), changes.rs (--change lines)   [pure]
//!            └─agent messages─► the host's layer store (save, import, commit, diff,
//!                               export, collection); bytes as stream items
//! ```
//!
//! Layers are freed by collection, not reference counts: after images are removed, every
//! chain still named by an image or a container is kept and the rest deleted. Load,
//! import and commit get a lease on the layers they add and release it once their image
//! is recorded; a collection never frees leased layers (see
//! `wharf_protocol::agent::image`). Apart from layers, `rmi` and `prune` decide under the
//! engine's image-records lock held exclusively, while load, import and commit record an
//! image and its tags under it shared.

mod changes;
mod create;
mod delete;
mod stream;

pub use changes::{apply_changes, ChangeError};
pub use create::{CommitRequest, ImportRequest};
pub use delete::{plan_delete, plan_prune, DeleteError, DeletePlan};
pub use stream::{stream_from_reader, ByteStream};

use super::{normalize_reference, Engine};
use crate::engine::error::EngineError;
use serde_json::{json, Value};
use tracing::{info, warn};
use wharf_protocol::agent::AgentFailure;
use wharf_protocol::image::{Change, Collected, SaveImage};
use wharf_protocol::state::{ClusterState, Command, ImageRecord};
use wharf_protocol::{DiffId, ImageId, NodeId};

/// One line of `docker rmi` / `docker image prune` output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeleteItem {
    /// `Untagged: busybox:latest`.
    Untagged(String),
    /// `Deleted: sha256:…` (an image or a freed layer).
    Deleted(String),
}

/// Validate `repo[:tag]` as Docker's reference grammar does and return it normalised
/// (`busybox:latest`); `None` when `repo` is empty. Pure.
pub fn repo_tag(repo: &str, tag: &str) -> Result<Option<String>, EngineError> {
    if repo.is_empty() {
        if tag.is_empty() {
            return Ok(None);
        }
        return Err(EngineError::invalid(
            "invalid reference format: tag without a repository",
        ));
    }
    let (name, tag) = match (repo.rsplit_once(':'), tag.is_empty()) {
        (Some((n, t)), true) if !t.contains('/') => (n, t),
        _ => (repo, if tag.is_empty() { "latest" } else { tag }),
    };
    let invalid = || EngineError::invalid("invalid reference format");
    if name.contains('@') || name.len() > 255 {
        return Err(invalid());
    }
    let comps: Vec<&str> = name.split('/').collect();
    for (i, c) in comps.iter().enumerate() {
        let domain =
            i == 0 && comps.len() > 1 && (c.contains('.') || c.contains(':') || *c == "localhost");
        if c.is_empty() {
            return Err(invalid());
        }
        if domain {
            let (host, port) = c.split_once(':').unwrap_or((c, "1"));
            if host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
                || port.is_empty()
                || !port.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid());
            }
            continue;
        }
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(EngineError::invalid(format!(
                "invalid reference format: repository name ({name}) must be lowercase"
            )));
        }
        let ok_chars = c.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        let ends_ok = c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok_chars || !ends_ok {
            return Err(invalid());
        }
    }
    let tag_ok = tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !tag_ok {
        return Err(invalid());
    }
    Ok(Some(normalize_reference(&format!("{name}:{tag}"))))
}

/// Every layer chain the cluster still needs on this host: images' and containers'. Pure.
pub fn chains_in_use(state: &ClusterState) -> Vec<Vec<DiffId>> {
    state
        .images
        .values()
        .map(|i| i.diff_ids.clone())
        .chain(state.containers.values().map(|c| c.run.diff_ids.clone()))
        .collect()
}

/// `docker history` rows of an image config, newest first, given each layer's size (pure).
pub fn history_rows(
    id: &ImageId,
    config: &[u8],
    tags: &[String],
    layer_sizes: &[u64],
) -> Vec<Value> {
    let cfg: Value = serde_json::from_slice(config).unwrap_or_default();
    let entries = cfg
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut layer = 0usize;
    let mut rows: Vec<Value> = entries
        .iter()
        .map(|h| {
            let empty = h
                .get("empty_layer")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let size = if empty {
                0
            } else {
                let s = layer_sizes.get(layer).copied().unwrap_or(0);
                layer += 1;
                s
            };
            let created = h
                .get("created")
                .and_then(Value::as_str)
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
                .map(|t| t.timestamp())
                .unwrap_or(0);
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": h.get("created_by").and_then(Value::as_str).unwrap_or(""),
                "Tags": null,
                "Size": size,
                "Comment": h.get("comment").and_then(Value::as_str).unwrap_or(""),
            })
        })
        .collect();
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top["Id"] = json!(id.to_string());
        top["Tags"] = json!(tags);
    }
    rows
}

/// A failure of the host's layer store, as a 500 whatever its kind (as before the
/// agent protocol: these were internal errors of the store).
fn store_err(f: AgentFailure) -> EngineError {
    EngineError::internal(f.message)
}

impl Engine {
    fn tags_of(&self, image: &ImageId) -> Vec<String> {
        self.store.read(|s| {
            s.tags
                .iter()
                .filter(|(_, id)| *id == image)
                .map(|(t, _)| t.clone())
                .collect()
        })
    }

    /// `GET /images/get?names=…`: check every name, then stream a `docker save` archive of
    /// them. An image named by tag carries that tag; one named by ID carries none.
    pub async fn save_images(&self, names: &[String]) -> Result<ByteStream, EngineError> {
        if names.is_empty() {
            return Err(EngineError::invalid("no images given to save"));
        }
        let mut list: Vec<SaveImage> = Vec::new();
        let mut ids: Vec<ImageId> = Vec::new();
        for name in names {
            let img = self.image(name)?;
            let tag = self.store.read(|s| {
                let r = normalize_reference(name);
                (s.tags.get(&r) == Some(&img.id)).then_some(r)
            });
            match ids.iter().position(|i| *i == img.id) {
                Some(p) => list[p].repo_tags.extend(tag),
                None => {
                    ids.push(img.id);
                    list.push(SaveImage {
                        config: img.config.clone(),
                        diff_ids: img.diff_ids.clone(),
                        repo_tags: tag.into_iter().collect(),
                    });
                }
            }
        }
        let node = match ids.first() {
            Some(first) => {
                let img = self.image(&first.to_string())?;
                let node = self.image_node(&img)?;
                let all_there = self
                    .store
                    .read(|s| ids.iter().all(|id| s.nodes_with_image(id).contains(&node)));
                if !all_there {
                    return Err(EngineError::conflict(
                        "the images to save are not all on one node",
                    ));
                }
                node
            }
            None => return Err(EngineError::invalid("no images given to save")),
        };
        let stream = self
            .agents
            .save_images(&node, list)
            .await
            .map_err(store_err)?;
        for id in &ids {
            self.emit_image(id, &id.to_string(), "save");
        }
        Ok(stream)
    }

    /// `POST /images/{name}/tag?repo=&tag=`.
    pub async fn tag_image(&self, source: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let img = self.image(source)?;
        let reference = repo_tag(repo, tag)?.ok_or_else(|| {
            EngineError::invalid("repository name must have at least one component")
        })?;
        self.propose(Command::Tag {
            reference: reference.clone(),
            image: img.id,
        })
        .await?;
        self.emit_image(&img.id, &reference, "tag");
        info!(image = %img.id, %reference, "tagged");
        Ok(())
    }

    /// Free the layers nothing needs any more (leased ones stay), on every node that
    /// holds layers (as the state records them) and every connected node; a node whose
    /// agent is not connected is skipped (its next collection frees them).
    async fn collect_layers(&self) -> Result<Collected, EngineError> {
        let mut nodes: std::collections::BTreeSet<NodeId> = self
            .store
            .read(|s| s.layers.values().flatten().copied().collect());
        nodes.extend(self.with_hosts(|h| h.keys().copied().collect::<Vec<_>>()));
        let mut all = Collected::default();
        for node in nodes {
            match self
                .agents
                .collect_layers(&node, || self.store.read(chains_in_use))
                .await
            {
                Ok(c) => {
                    for l in c.layers {
                        if !all.layers.contains(&l) {
                            all.layers.push(l);
                        }
                    }
                    all.bytes += c.bytes;
                }
                Err(f) if f.kind == wharf_protocol::agent::FailureKind::Unavailable => {
                    warn!(node = %node, error = %f, "layers not collected on a node that is not connected");
                }
                Err(f) => return Err(store_err(f)),
            }
        }
        Ok(all)
    }

    /// A Ready node holding every layer of `img` (the first by ID), or 409 naming the
    /// nodes that hold it.
    pub fn image_node(&self, img: &ImageRecord) -> Result<NodeId, EngineError> {
        self.store.read(|s| {
            let holders = s.nodes_with_image(&img.id);
            holders
                .iter()
                .find(|n| {
                    s.nodes
                        .get(n)
                        .is_some_and(|r| r.state == wharf_protocol::node_state::NodeState::Ready)
                })
                .copied()
                .ok_or_else(|| {
                    super::scheduler::Unschedulable::ImageElsewhere {
                        image: img.id.to_string(),
                        holders: holders
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", "),
                    }
                    .into()
                })
        })
    }

    /// After a container is removed: if its image is already gone (`rmi -f` past it), free
    /// the layers it was the last to use. Failures are logged, not returned (the container
    /// is gone either way; the next collection retries).
    pub async fn release_container_layers(&self, image: &ImageId) {
        if self.store.read(|s| s.images.contains_key(image)) {
            return;
        }
        match self.collect_layers().await {
            Ok(freed) if !freed.layers.is_empty() => {
                info!(image = %image, layers = freed.layers.len(), "layers of a removed image freed")
            }
            Ok(_) => {}
            Err(e) => warn!(image = %image, error = %e, "freeing unused layers failed"),
        }
    }

    /// `DELETE /images/{name}?force=`: untag and/or delete as Docker does, then free the
    /// layers no image or container uses. Returns the lines to show.
    pub async fn delete_image(
        &self,
        reference: &str,
        force: bool,
    ) -> Result<Vec<DeleteItem>, EngineError> {
        let _deciding = self.image_records.write().await;
        let plan = self
            .store
            .read(|s| plan_delete(s, reference, force))
            .map_err(|e| match e {
                DeleteError::NoSuchImage(r) => EngineError::no_such_image(&r),
                other => EngineError::conflict(other.to_string()),
            })?;
        let mut out = Vec::new();
        for t in &plan.untag {
            self.propose(Command::Untag {
                reference: t.clone(),
            })
            .await?;
            self.emit_image(&plan.image, t, "untag");
            out.push(DeleteItem::Untagged(t.clone()));
        }
        if plan.delete {
            let chain = self
                .store
                .read(|s| crate::build::cache::removable_parents(s, &plan.image));
            let cmd = if plan.forced {
                Command::RemoveImageForced { image: plan.image }
            } else {
                Command::RemoveImage { image: plan.image }
            };
            self.propose(cmd).await?;
            self.emit_image(&plan.image, &plan.image.to_string(), "delete");
            out.push(DeleteItem::Deleted(plan.image.to_string()));
            // A built image's intermediate images go with it, as with Docker.
            for parent in chain {
                self.propose(Command::RemoveImage { image: parent }).await?;
                self.emit_image(&parent, &parent.to_string(), "delete");
                out.push(DeleteItem::Deleted(parent.to_string()));
            }
            let freed = self.collect_layers().await?;
            out.extend(
                freed
                    .layers
                    .iter()
                    .map(|c| DeleteItem::Deleted(format!("sha256:{}", c.0.hex()))),
            );
        }
        info!(%reference, force, lines = out.len(), "image delete");
        Ok(out)
    }

    /// `POST /images/prune`: remove images no container uses, only dangling ones unless
    /// `all`; returns the lines and the bytes of layers freed.
    pub async fn prune_images(&self, all: bool) -> Result<(Vec<DeleteItem>, u64), EngineError> {
        let _deciding = self.image_records.write().await;
        let victims = self.store.read(|s| plan_prune(s, all));
        let mut out = Vec::new();
        for (id, tags) in victims {
            match self.propose(Command::RemoveImage { image: id }).await {
                Ok(()) => {}
                // A container was created meanwhile: the image stays.
                Err(e) if e.is(crate::engine::ErrorKind::Conflict) => continue,
                Err(e) => return Err(e),
            }
            for t in tags {
                self.emit_image(&id, &t, "untag");
                out.push(DeleteItem::Untagged(t));
            }
            self.emit_image(&id, &id.to_string(), "delete");
            out.push(DeleteItem::Deleted(id.to_string()));
        }
        let freed = self.collect_layers().await?;
        out.extend(
            freed
                .layers
                .iter()
                .map(|c| DeleteItem::Deleted(format!("sha256:{}", c.0.hex()))),
        );
        Ok((out, freed.bytes))
    }

    /// `GET /images/{name}/history`.
    pub async fn image_history(&self, reference: &str) -> Result<Value, EngineError> {
        let img = self.image(reference)?;
        let node = self.image_node(&img)?;
        let sizes = self
            .agents
            .layer_sizes(&node, &img.diff_ids)
            .await
            .map_err(store_err)?;
        let tags = self.tags_of(&img.id);
        Ok(Value::Array(history_rows(
            &img.id,
            &img.config,
            &tags,
            &sizes,
        )))
    }

    /// `GET /containers/{id}/changes`.
    pub async fn container_changes(&self, reference: &str) -> Result<Vec<Change>, EngineError> {
        let c = self.container(reference)?;
        self.agents.changes(&c.node, &c.id).await.map_err(store_err)
    }

    /// `GET /containers/{id}/export`: a tar stream of the container's root filesystem.
    pub async fn export_container(&self, reference: &str) -> Result<ByteStream, EngineError> {
        let c = self.container(reference)?;
        let stream = self
            .agents
            .export_rootfs(&c.node, &c.id)
            .await
            .map_err(store_err)?;
        self.emit_container(&c, "export", &[]);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::Digest;

    #[test]
    fn references_are_validated_and_normalised() {
        assert_eq!(repo_tag("", "").unwrap(), None);
        assert_eq!(repo_tag("app", "").unwrap().unwrap(), "app:latest");
        assert_eq!(repo_tag("app", "v1.2").unwrap().unwrap(), "app:v1.2");
        assert_eq!(repo_tag("app:v2", "").unwrap().unwrap(), "app:v2");
        assert_eq!(
            repo_tag("localhost:5000/team/app", "x").unwrap().unwrap(),
            "localhost:5000/team/app:x"
        );
        assert_eq!(
            repo_tag("docker.io/library/app", "").unwrap().unwrap(),
            "app:latest"
        );
        for (r, t) in [
            ("App", ""),
            ("a//b", ""),
            ("-a", ""),
            ("a", "-x"),
            ("a", "x y"),
            ("", "t"),
            ("a@sha256:00", ""),
        ] {
            assert!(repo_tag(r, t).is_err(), "{r:?} {t:?}");
        }
        assert!(repo_tag("Up", "")
            .unwrap_err()
            .message
            .contains("must be lowercase"));
    }

    #[test]
    fn history_maps_layers_to_non_empty_entries_newest_first() {
        let config = serde_json::to_vec(&json!({
            "history": [
                {"created": "2024-01-01T00:00:00Z", "created_by": "ADD rootfs"},
                {"created": "2024-01-02T00:00:00Z", "created_by": "ENV A=1", "empty_layer": true},
                {"created": "2024-01-03T00:00:00Z", "created_by": "RUN x", "comment": "c"},
            ]
        }))
        .unwrap();
        let id = ImageId(Digest::of(&config));
        let rows = history_rows(&id, &config, &["a:latest".into()], &[100, 7]);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["Id"], id.to_string());
        assert_eq!(rows[0]["Tags"], json!(["a:latest"]));
        assert_eq!(
            (rows[0]["Size"].clone(), rows[0]["Comment"].clone()),
            (json!(7), json!("c"))
        );
        assert_eq!(rows[1]["Size"], 0);
        assert_eq!(rows[2]["Id"], "<missing>");
        assert_eq!(rows[2]["Size"], 100);
        assert_eq!(rows[2]["Created"], 1_704_067_200);
        assert!(history_rows(&id, b"{}", &[], &[]).is_empty());
    }
}
