//! New images built on this host: `docker import` (a root filesystem tarball) and
//! `docker commit` (a container's writable layer), each a config written here and a layer
//! added by the host's agent, leased until the image is recorded.

use super::stream::ByteStream;
use super::{apply_changes, repo_tag, store_err, ChangeError};
use crate::docker_types::{self, CreateConfig, ImageConfigFile};
use crate::engine::error::EngineError;
use crate::engine::{now_ns, Engine};
use serde_json::{json, Map, Value};
use tracing::{info, warn};
use wharf_protocol::state::{Command, ContainerStatus, ImageRecord};
use wharf_protocol::{DiffId, Digest, ImageId};

/// What `POST /commit` asks for.
#[derive(Clone, Debug, Default)]
pub struct CommitRequest {
    /// The container reference.
    pub container: String,
    /// Repository to tag the new image with (empty: untagged).
    pub repo: String,
    /// Tag (empty: `latest`).
    pub tag: String,
    /// `--message`.
    pub comment: String,
    /// `--author`.
    pub author: String,
    /// `--change` lines.
    pub changes: Vec<String>,
    /// Freeze a running container while its layer is read (Docker's default).
    pub pause: bool,
}

/// What `POST /images/create?fromSrc=-` asks for.
#[derive(Clone, Debug, Default)]
pub struct ImportRequest {
    /// Repository to tag the new image with (empty: untagged).
    pub repo: String,
    /// Tag (empty: `latest`).
    pub tag: String,
    /// `--change` lines.
    pub changes: Vec<String>,
    /// `--message`.
    pub message: String,
    /// `--platform` OS/architecture, if given.
    pub platform: String,
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn change_err(e: ChangeError) -> EngineError {
    EngineError::invalid(e.to_string())
}

impl Engine {
    /// Record a new image built on this host (import, commit) and tag it; `size` is the
    /// bytes of its layers on the host.
    async fn record_image(
        &self,
        config: Vec<u8>,
        diff_ids: Vec<DiffId>,
        size: u64,
        reference: Option<String>,
    ) -> Result<ImageId, EngineError> {
        let id = ImageId(Digest::of(&config));
        let _recording = self.image_records.read().await;
        self.propose(Command::PutImage {
            image: ImageRecord {
                id,
                config,
                diff_ids,
                size,
                loaded_ns: now_ns(),
            },
        })
        .await?;
        if let Some(r) = reference {
            self.propose(Command::Tag {
                reference: r.clone(),
                image: id,
            })
            .await?;
            self.emit_image(&id, &r, "tag");
        }
        Ok(id)
    }

    /// `POST /images/create?fromSrc=-`: the body is a root filesystem tarball (plain,
    /// gzip or zstd) that becomes a one-layer image.
    pub async fn import_image(
        &self,
        body: ByteStream,
        req: &ImportRequest,
    ) -> Result<ImageId, EngineError> {
        let reference = repo_tag(&req.repo, &req.tag)?;
        let mut run_cfg = Map::new();
        apply_changes(&mut run_cfg, &req.changes).map_err(change_err)?;
        let (os, arch) = match req.platform.split_once('/') {
            Some((os, arch)) => (
                os.to_string(),
                arch.split('/').next().unwrap_or(arch).to_string(),
            ),
            None if !req.platform.is_empty() => (req.platform.clone(), architecture().to_string()),
            None => ("linux".to_string(), architecture().to_string()),
        };
        if os != "linux" {
            return Err(EngineError::invalid(format!(
                "operating system is not supported: {os}"
            )));
        }
        // The host leases the new layer until the image is recorded (a refused archive is
        // InvalidInput: 400).
        let node = self.image_target()?;
        let (diff_id, size, lease) = self.agents.import_layer(&node, Vec::new(), body).await?;
        let created = now_rfc3339();
        let comment = if req.message.is_empty() {
            "Imported from -".to_string()
        } else {
            req.message.clone()
        };
        let mut config = json!({
            "architecture": arch,
            "os": os,
            "created": created,
            "config": Value::Object(run_cfg),
            "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
            "history": [{"created": created, "comment": comment}],
        });
        if !req.message.is_empty() {
            config["comment"] = json!(req.message);
        }
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| EngineError::internal(format!("encode image config: {e}")))?;
        let id = self
            .record_image(bytes, vec![diff_id], size, reference)
            .await?;
        self.sync_layers(node).await;
        lease.release().await;
        self.ensure_copies(&[id]).await;
        self.emit_image(&id, &id.to_string(), "import");
        info!(image = %id, layer = %diff_id, "imported");
        Ok(id)
    }

    /// `POST /commit`: the container's writable layer becomes a new layer on its image's
    /// chain, with a config from the container's settings and `changes`.
    pub async fn commit_container(&self, req: &CommitRequest) -> Result<ImageId, EngineError> {
        let c = self.container(&req.container)?;
        let reference = repo_tag(&req.repo, &req.tag)?;
        let base: Value = self
            .store
            .read(|s| s.images.get(&c.run.image_id).map(|i| i.config.clone()))
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| json!({"architecture": architecture(), "os": "linux"}));
        let parsed: ImageConfigFile = serde_json::from_value(base.clone()).unwrap_or_default();
        let img_run = parsed.config.unwrap_or_default();
        let create: CreateConfig = serde_json::from_str(&c.config_json).unwrap_or_default();
        let (ep, cmd) = docker_types::merge_process(
            &img_run,
            create.entrypoint.clone().map(|e| e.into_vec()),
            create.cmd.clone().map(|c| c.into_vec()),
        );
        let mut run_cfg = base
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let or_null = |v: &Vec<String>| if v.is_empty() { Value::Null } else { json!(v) };
        run_cfg.insert("Cmd".into(), or_null(&cmd));
        run_cfg.insert("Entrypoint".into(), or_null(&ep));
        run_cfg.insert("Env".into(), json!(c.run.env));
        if !create.working_dir.is_empty() {
            run_cfg.insert("WorkingDir".into(), json!(create.working_dir));
        }
        if !create.user.is_empty() {
            run_cfg.insert("User".into(), json!(create.user));
        }
        if let Some(labels) = &create.labels {
            let slot = run_cfg.entry("Labels").or_insert_with(|| json!({}));
            if !slot.is_object() {
                *slot = json!({});
            }
            if let Some(m) = slot.as_object_mut() {
                for (k, v) in labels {
                    m.insert(k.clone(), json!(v));
                }
            }
        }
        apply_changes(&mut run_cfg, &req.changes).map_err(change_err)?;

        let parent = c.run.diff_ids.clone();
        // A consistent snapshot: freeze a running container while its layer is read, and
        // thaw it after whatever happened (a container the user paused stays paused).
        let freeze = req.pause && c.status == ContainerStatus::Running;
        if freeze {
            self.agents
                .pause(&c.node, &c.id, true)
                .await
                .map_err(|e| EngineError::internal(format!("pause for commit: {e}")))?;
        }
        let layer = self.agents.commit_layer(&c.node, &c.id, parent).await;
        if freeze {
            if let Err(e) = self.agents.pause(&c.node, &c.id, false).await {
                warn!(container = %c.id.short(), error = %e, "unpause after commit failed");
            }
        }
        let (new_layer, size, lease) = layer.map_err(store_err)?;
        let mut diff_ids = c.run.diff_ids.clone();
        diff_ids.extend(new_layer);
        let created = now_rfc3339();
        let mut config = base;
        let mut history = config
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut entry = json!({"created": created, "created_by": cmd.join(" ")});
        if !req.author.is_empty() {
            entry["author"] = json!(req.author);
        }
        if !req.comment.is_empty() {
            entry["comment"] = json!(req.comment);
        }
        if new_layer.is_none() {
            entry["empty_layer"] = json!(true);
        }
        history.push(entry);
        if let Some(o) = config.as_object_mut() {
            o.insert("config".into(), Value::Object(run_cfg));
            o.insert("created".into(), json!(created));
            o.insert("container".into(), json!(c.id.as_str()));
            o.insert("history".into(), Value::Array(history));
            o.insert(
                "rootfs".into(),
                json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
            );
            for (k, v) in [("author", &req.author), ("comment", &req.comment)] {
                if v.is_empty() {
                    o.remove(k);
                } else {
                    o.insert(k.into(), json!(v));
                }
            }
        }
        let bytes = serde_json::to_vec(&config)
            .map_err(|e| EngineError::internal(format!("encode image config: {e}")))?;
        let id = self.record_image(bytes, diff_ids, size, reference).await?;
        self.sync_layers(c.node).await;
        lease.release().await;
        self.ensure_copies(&[id]).await;
        self.emit_container(&c, "commit", &[]);
        info!(container = %c.id.short(), image = %id, "committed");
        Ok(id)
    }
}
