//! Running a parsed Dockerfile on the engine: stage by stage, instruction by instruction,
//! each step probing the cache, then making an image (metadata only, or a layer from a
//! build container's writable layer). Thin: decisions on words and keys are in
//! [`super::dockerfile`] and [`super::cache`].

use super::cache::{nop_cmd, CacheIndex};
use super::context::BuildContext;
use super::dockerfile::{self, Dockerfile, Instruction, Stage};
use super::metadata::{self, quote, strings};
use super::{BuildError, BuildOptions, Output};

mod copy_step;
mod run;
use crate::engine::{normalize_reference, now_ns, Engine};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use wharf_protocol::state::{Command, ImageRecord};
use wharf_protocol::{ContainerId, DiffId, Digest, ImageId};

/// The image state of the stage being built.
struct StageState {
    /// The current image (`None`: `FROM scratch` before its first step).
    image: Option<ImageId>,
    /// The current image's DiffIDs.
    diff_ids: Vec<DiffId>,
    /// The current full image config.
    full: Value,
    /// The run config (`Env`, `Cmd`, `Entrypoint`, ...), Docker's key names.
    config: Map<String, Value>,
    /// Declared `ARG`s of this stage with their values.
    args: Vec<(String, Option<String>)>,
    /// `CMD` given in this stage (an `ENTRYPOINT` then keeps it).
    cmd_set: bool,
}

impl StageState {
    fn env(&self) -> Vec<String> {
        strings(self.config.get("Env"))
    }

    /// A variable for word expansion: the config's env, then the declared args.
    fn lookup(&self, name: &str) -> Option<String> {
        for kv in self.env().iter().rev() {
            if let Some((k, v)) = kv.split_once('=') {
                if k == name {
                    return Some(v.to_string());
                }
            }
        }
        self.args
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }

    /// Build args in effect for `RUN`: declared, with a value, not shadowed by `ENV`.
    fn run_args(&self) -> Vec<(String, String)> {
        let env = self.env();
        let mut seen = BTreeMap::new();
        for (k, v) in &self.args {
            if let Some(v) = v {
                if !env.iter().any(|e| e.split('=').next() == Some(k.as_str())) {
                    seen.insert(k.clone(), v.clone());
                }
            }
        }
        seen.into_iter().collect()
    }

    fn shell(&self) -> Vec<String> {
        metadata::shell(&self.config)
    }

    /// Every variable for word expansion, in lookup order (args, then env over them).
    fn vars(&self) -> Vec<(String, Option<String>)> {
        let mut v = self.args.clone();
        for kv in self.env() {
            let (k, val) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            v.push((k.to_string(), Some(val.to_string())));
        }
        v
    }
}

fn short(id: &ImageId) -> String {
    id.0.hex()[..12].to_string()
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn fail(ins: &Instruction, msg: impl std::fmt::Display) -> BuildError {
    BuildError::Failed(format!(
        "dockerfile line {}: {}: {msg}",
        ins.line, ins.keyword
    ))
}

/// How a `COPY`/`ADD` finds its sources.
enum Source {
    Context,
    Image(ImageId),
}

/// One build.
pub struct Builder<'a> {
    engine: &'a Arc<Engine>,
    opts: &'a BuildOptions,
    out: &'a Output,
    context: &'a BuildContext,
    escape: char,
    step: usize,
    total: usize,
    /// Final image of each finished stage, with its name.
    stages: Vec<(Option<String>, ImageId)>,
    /// Build args some `ARG` declared.
    used_args: BTreeSet<String>,
    /// Values of the pre-`FROM` args.
    meta: Vec<(String, Option<String>)>,
    /// Build containers left after a failure (removed with `forcerm`).
    leftover: Vec<ContainerId>,
}

impl<'a> Builder<'a> {
    /// A builder over `engine`, writing to `out`, with `context` put on the agent.
    pub fn new(
        engine: &'a Arc<Engine>,
        opts: &'a BuildOptions,
        out: &'a Output,
        context: &'a BuildContext,
    ) -> Builder<'a> {
        Builder {
            engine,
            opts,
            out,
            context,
            escape: '\\',
            step: 0,
            total: 0,
            stages: vec![],
            used_args: BTreeSet::new(),
            meta: vec![],
            leftover: vec![],
        }
    }

    /// Run the Dockerfile; returns the final image.
    pub async fn run(&mut self, df: &Dockerfile) -> Result<ImageId, BuildError> {
        let res = self.run_inner(df).await;
        if res.is_err() && self.opts.force_rm {
            for c in std::mem::take(&mut self.leftover) {
                let _ = self.remove_container(&c).await;
            }
        }
        res
    }

    async fn run_inner(&mut self, df: &Dockerfile) -> Result<ImageId, BuildError> {
        self.escape = df.escape;
        let last = if self.opts.target.is_empty() {
            df.stages.len() - 1
        } else {
            let t = self.opts.target.to_ascii_lowercase();
            df.stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.as_str()))
                .ok_or_else(|| {
                    BuildError::Failed(format!(
                        "failed to reach build target {} in Dockerfile",
                        self.opts.target
                    ))
                })?
        };
        let mut stages: Vec<Stage> = df.stages[..=last].to_vec();
        if !self.opts.labels.is_empty() {
            // As moby: the labels become one more LABEL step of the last stage.
            let words: Vec<String> = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                .collect();
            let rest = words.join(" ");
            if let Some(s) = stages.last_mut() {
                s.instructions.push(Instruction {
                    keyword: "LABEL".into(),
                    original: format!("LABEL {rest}"),
                    line: 0,
                    flags: vec![],
                    rest,
                    json: None,
                });
            }
        }
        self.total = stages.iter().map(|s| 1 + s.instructions.len()).sum();
        for a in &df.meta_args {
            let (k, v) = self.arg_decl(a, &|n| lookup_pairs(&self.meta, n))?;
            let v = match self.opts.build_args.get(&k) {
                Some(Some(given)) => Some(given.clone()),
                _ => v,
            };
            self.used_args.insert(k.clone());
            self.meta.push((k, v));
        }
        let mut image = None;
        for stage in &stages {
            let id = self.run_stage(stage).await?;
            self.stages.push((stage.name.clone(), id));
            image = Some(id);
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !is_predefined_arg(k))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.out
                .stream(&format!(
                    "[Warning] One or more build-args [{}] were not consumed\n",
                    names.join(" ")
                ))
                .await?;
        }
        image.ok_or_else(|| BuildError::Failed("no build stage".into()))
    }

    fn arg_decl(
        &self,
        ins: &Instruction,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(String, Option<String>), BuildError> {
        let words = dockerfile::split_raw(&ins.rest, self.escape);
        if words.len() != 1 {
            return Err(fail(ins, "ARG requires exactly one argument"));
        }
        let w = dockerfile::expand(&words[0], env, self.escape).map_err(|e| fail(ins, e))?;
        Ok(match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
    }

    async fn announce(&mut self, ins: &Instruction) -> Result<(), BuildError> {
        self.step += 1;
        self.out
            .stream(&format!(
                "Step {}/{} : {}",
                self.step, self.total, ins.original
            ))
            .await?;
        self.out.stream("\n").await
    }

    async fn run_stage(&mut self, stage: &Stage) -> Result<ImageId, BuildError> {
        self.announce(&stage.from).await?;
        let meta = self.meta.clone();
        let base = dockerfile::expand(&stage.base, &|n| lookup_pairs(&meta, n), self.escape)
            .map_err(|e| fail(&stage.from, e))?;
        if self.opts.pull {
            self.out
                .stream(" ---> [Warning] pull: this host has no registry; using the local image\n")
                .await?;
        }
        let mut st = if base.eq_ignore_ascii_case("scratch") {
            StageState {
                image: None,
                diff_ids: vec![],
                full: json!({"architecture": architecture(), "os": "linux"}),
                config: Map::new(),
                args: vec![],
                cmd_set: false,
            }
        } else {
            let by_stage = self
                .stages
                .iter()
                .rev()
                .find(|(n, _)| n.as_deref() == Some(base.to_ascii_lowercase().as_str()))
                .map(|(_, id)| *id);
            let rec = match by_stage {
                Some(id) => self.engine.image(&id.to_string()),
                None => self.engine.image(&base),
            }
            .map_err(|e| {
                BuildError::Failed(format!(
                    "{e} (FROM {base}: this builder does not pull from a registry; load the image first)"
                ))
            })?;
            let full: Value = serde_json::from_slice(&rec.config).unwrap_or_else(|_| json!({}));
            let config = full
                .get("config")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            self.out
                .stream(&format!(" ---> {}\n", short(&rec.id)))
                .await?;
            StageState {
                image: Some(rec.id),
                diff_ids: rec.diff_ids.clone(),
                full,
                config,
                args: vec![],
                cmd_set: false,
            }
        };
        let triggers = strings(st.config.get("OnBuild"));
        if !triggers.is_empty() {
            // As Docker: the base image's ONBUILD triggers run first, as steps of this
            // stage without step lines, and are not passed on.
            st.config.insert("OnBuild".into(), Value::Null);
            let n = triggers.len();
            self.out
                .stream(&format!(
                    "# Executing {n} build trigger{}\n",
                    if n == 1 { "" } else { "s" }
                ))
                .await?;
            let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
            let parsed = dockerfile::parse(&text).map_err(|e| fail(&stage.from, e))?;
            for df_stage in &parsed.stages {
                for ins in &df_stage.instructions {
                    self.instruction(&mut st, ins).await?;
                }
            }
        }
        for ins in &stage.instructions {
            self.announce(ins).await?;
            self.instruction(&mut st, ins).await?;
        }
        match st.image {
            Some(id) => Ok(id),
            None => {
                // `FROM scratch` and nothing else: an image with no layers, as Docker.
                let key = Value::Object(st.config.clone());
                let id = self.commit(&mut st, key, None, None).await?;
                Ok(id)
            }
        }
    }

    fn expand(&self, st: &StageState, ins: &Instruction, s: &str) -> Result<String, BuildError> {
        dockerfile::expand(s, &|n| st.lookup(n), self.escape).map_err(|e| fail(ins, e))
    }

    fn expand_words(
        &self,
        st: &StageState,
        ins: &Instruction,
        s: &str,
    ) -> Result<Vec<String>, BuildError> {
        dockerfile::expand_words(s, &|n| st.lookup(n), self.escape).map_err(|e| fail(ins, e))
    }

    /// Shell form: `SHELL… rest`; exec form: the JSON words.
    fn command(st: &StageState, ins: &Instruction) -> Vec<String> {
        metadata::command(&st.config, ins)
    }

    async fn instruction(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
        let kw = ins.keyword.as_str();
        if ins.rest.is_empty() && !matches!(kw, "RUN" | "CMD" | "ENTRYPOINT") {
            return Err(fail(ins, format!("{kw} requires at least one argument")));
        }
        match kw {
            "RUN" => return self.run_step(st, ins).await,
            "COPY" | "ADD" => return self.copy_step(st, ins).await,
            "WORKDIR" => return self.workdir_step(st, ins).await,
            _ => {}
        }
        let comment = match kw {
            "ARG" => {
                let (k, default) = self.arg_decl(ins, &|n| st.lookup(n))?;
                let meta = lookup_pairs(&self.meta, &k);
                let v = match self.opts.build_args.get(&k) {
                    Some(Some(given)) => Some(given.clone()),
                    _ => default.or(meta),
                };
                self.used_args.insert(k.clone());
                let shown = match &v {
                    Some(_) if ins.rest.contains('=') => ins.rest.clone(),
                    _ => k.clone(),
                };
                st.args.push((k, v));
                format!("ARG {shown}")
            }
            _ => {
                let vars = st.vars();
                let lookup = |n: &str| lookup_pairs(&vars, n);
                let mut author = None;
                let c = metadata::apply(
                    &mut st.config,
                    &mut author,
                    &mut st.cmd_set,
                    ins,
                    self.escape,
                    &lookup,
                )
                .map_err(|e| fail(ins, e))?;
                if let (Some(who), Some(o)) = (author, st.full.as_object_mut()) {
                    o.insert("author".into(), json!(who));
                }
                c
            }
        };
        let mut key = st.config.clone();
        key.insert("Cmd".into(), json!(nop_cmd(&st.shell(), &comment)));
        self.cached_or(st, Value::Object(key), None).await
    }

    /// Probe the cache for `key`; on a hit, move the stage to the cached image and say so.
    async fn try_cache(&self, st: &mut StageState, key: &Value) -> Result<bool, BuildError> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let parent = st.image;
        let hit = self.engine.store().read(|s| {
            s.probe(parent.as_ref(), key)
                .and_then(|id| s.images.get(&id).cloned())
        });
        let Some(rec) = hit else {
            return Ok(false);
        };
        let node = self.context.node();
        if !self
            .engine
            .agents()
            .has_layers(&node, &rec.diff_ids)
            .await?
        {
            return Ok(false);
        }
        self.adopt(st, &rec);
        self.out.stream(" ---> Using cache\n").await?;
        self.out
            .stream(&format!(" ---> {}\n", short(&rec.id)))
            .await?;
        Ok(true)
    }

    fn adopt(&self, st: &mut StageState, rec: &ImageRecord) {
        st.image = Some(rec.id);
        st.diff_ids = rec.diff_ids.clone();
        st.full = serde_json::from_slice(&rec.config).unwrap_or_else(|_| json!({}));
    }

    /// A metadata step: the cached image, or a new image without a new layer.
    async fn cached_or(
        &mut self,
        st: &mut StageState,
        key: Value,
        layer: Option<DiffId>,
    ) -> Result<(), BuildError> {
        if self.try_cache(st, &key).await? {
            return Ok(());
        }
        let id = self.commit(st, key, layer, None).await?;
        self.out.stream(&format!(" ---> {}\n", short(&id))).await
    }

    /// Record the image made by a step: the stage's config, `key` as its container config,
    /// `layer` on top of the stage's layers.
    async fn commit(
        &self,
        st: &mut StageState,
        key: Value,
        layer: Option<DiffId>,
        container: Option<&ContainerId>,
    ) -> Result<ImageId, BuildError> {
        let created = now_rfc3339();
        let mut full = st.full.clone();
        let created_by = strings(key.get("Cmd")).join(" ");
        let mut diff_ids = st.diff_ids.clone();
        diff_ids.extend(layer);
        let mut history = full
            .get("history")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut entry = json!({"created": created, "created_by": created_by});
        if layer.is_none() {
            entry["empty_layer"] = json!(true);
        }
        history.push(entry);
        let Some(o) = full.as_object_mut() else {
            return Err(BuildError::Failed("image config is not an object".into()));
        };
        o.insert("config".into(), Value::Object(st.config.clone()));
        o.insert("container_config".into(), key);
        o.insert("created".into(), json!(created));
        o.insert("history".into(), Value::Array(history));
        o.insert(
            "rootfs".into(),
            json!({"type": "layers", "diff_ids": diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>()}),
        );
        match st.image {
            Some(p) => o.insert("parent".into(), json!(p.to_string())),
            None => o.remove("parent"),
        };
        match container {
            Some(c) => o.insert("container".into(), json!(c.as_str())),
            None => o.remove("container"),
        };
        o.entry("architecture")
            .or_insert_with(|| json!(architecture()));
        o.entry("os").or_insert_with(|| json!("linux"));
        let bytes = serde_json::to_vec(&full)
            .map_err(|e| BuildError::Failed(format!("encode image config: {e}")))?;
        let id = ImageId(Digest::of(&bytes));
        let node = self.context.node();
        let size = self.engine.agents().layers_size(&node, &diff_ids).await?;
        self.engine
            .store()
            .propose(Command::PutImage {
                image: ImageRecord {
                    id,
                    config: bytes,
                    diff_ids: diff_ids.clone(),
                    size,
                    loaded_ns: now_ns(),
                },
            })
            .await
            .map_err(|e| BuildError::Failed(format!("record image: {e}")))?
            .map_err(|e| BuildError::Failed(format!("record image: {e}")))?;
        st.image = Some(id);
        st.diff_ids = diff_ids;
        st.full = full;
        Ok(id)
    }

    /// Create a container on the stage's image that runs `cmd` (never started for
    /// `COPY`/`ADD`/`WORKDIR`).
    async fn create(
        &self,
        st: &StageState,
        cmd: &[String],
        env: Vec<String>,
    ) -> Result<ContainerId, BuildError> {
        let Some(image) = st.image else {
            return Err(BuildError::Failed(
                "this step needs a base image (FROM scratch has no filesystem to run in)".into(),
            ));
        };
        let mut body = json!({
            "Image": image.to_string(),
            "Cmd": cmd,
            "Entrypoint": [""],
            "Env": env,
            "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {"NetworkMode": "none"},
        });
        for k in ["WorkingDir", "User"] {
            if let Some(v) = st
                .config
                .get(k)
                .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
            {
                body[k] = v.clone();
            }
        }
        let bytes = serde_json::to_vec(&body)
            .map_err(|e| BuildError::Failed(format!("encode build container: {e}")))?;
        let id = self
            .engine
            .create_container_on(None, &bytes, self.context.node())
            .await?;
        Ok(id)
    }

    /// Commit the writable layer of build container `cid` onto the stage.
    async fn commit_container(
        &self,
        st: &mut StageState,
        key: Value,
        cid: &ContainerId,
    ) -> Result<ImageId, BuildError> {
        // The host leases the new layer until the step's image is recorded.
        let node = self.context.node();
        let (layer, _, lease) = self
            .engine
            .agents()
            .commit_layer(&node, cid, st.diff_ids.clone())
            .await?;
        let id = self.commit(st, key, layer, Some(cid)).await?;
        lease.release().await;
        Ok(id)
    }

    /// Remove a build container and the anonymous volumes the image's `VOLUME`s gave it
    /// (as Docker's builder removes with `RemoveVolume`).
    async fn remove_container(&self, cid: &ContainerId) -> Result<(), BuildError> {
        let record = self.engine.container(cid.as_str()).ok();
        self.engine.remove(cid.as_str(), true).await?;
        if let Some(c) = record {
            self.engine.remove_anonymous_volumes(&c).await;
        }
        Ok(())
    }

    /// After a step's commit: a `RUN` container (`shown`) is removed with `rm` and says
    /// so, as Docker; the never-started containers of `COPY`/`ADD`/`WORKDIR` always go.
    async fn finish_container(&mut self, cid: &ContainerId, shown: bool) -> Result<(), BuildError> {
        if !shown || self.opts.rm {
            self.remove_container(cid).await?;
        }
        if shown && self.opts.rm {
            self.out
                .stream(&format!(
                    " ---> Removed intermediate container {}\n",
                    cid.short()
                ))
                .await?;
        }
        self.leftover.retain(|c| c != cid);
        Ok(())
    }

    /// Tag `id` with every `t` and report, as the classic builder ends.
    pub async fn finish(&self, id: &ImageId) -> Result<(), BuildError> {
        // Where the image is, recorded before the client learns it exists.
        self.engine.sync_layers(self.context.node()).await;
        self.engine.ensure_copies(&[*id]).await;
        self.out.aux(&id.to_string()).await?;
        if self.opts.quiet {
            // As moby's router: with `q` the one stream line is the image ID, which the
            // CLI prints.
            let line = serde_json::json!({"stream": format!("{id}\n")});
            let mut text = line.to_string();
            text.push_str("\r\n");
            self.out.raw(bytes::Bytes::from(text)).await?;
        }
        self.out
            .stream(&format!("Successfully built {}\n", short(id)))
            .await?;
        for t in &self.opts.tags {
            let reference = normalize_reference(t);
            self.engine
                .store()
                .propose(Command::Tag {
                    reference: reference.clone(),
                    image: *id,
                })
                .await
                .map_err(|e| BuildError::Failed(format!("tag {reference}: {e}")))?
                .map_err(|e| BuildError::Failed(format!("tag {reference}: {e}")))?;
            self.engine.emit_image(id, &reference, "tag");
            self.out
                .stream(&format!("Successfully tagged {reference}\n"))
                .await?;
        }
        Ok(())
    }
}

fn lookup_pairs(pairs: &[(String, Option<String>)], name: &str) -> Option<String> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v.clone())
}

/// Build args Docker accepts without an `ARG` (proxies).
fn is_predefined_arg(k: &str) -> bool {
    matches!(
        k.to_ascii_lowercase().as_str(),
        "http_proxy" | "https_proxy" | "ftp_proxy" | "no_proxy" | "all_proxy"
    )
}
