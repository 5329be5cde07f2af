//! Running a parsed Dockerfile on the engine: stage by stage, instruction by instruction,
//! each step probing the cache, then making an image (metadata only, or a layer from a
//! build container's writable layer). Thin: decisions on words and keys are in
//! [`super::dockerfile`] and [`super::cache`].

use super::cache::{nop_cmd, nop_cmd_string, run_cmd, CacheIndex};
use super::copy::{self, CopySpec};
use super::dockerfile::{self, Dockerfile, Instruction, Stage};
use super::ignore::clean_rel;
use super::{BuildError, BuildOptions, Output};
use crate::docker_types::parse_signal;
use crate::engine::{normalize_reference, now_ns, Engine, WaitCondition};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::{info, warn};
use wharf_node::archive::{self, ArchiveError, ExtractOptions};
use wharf_node::runtime::AttachEvent;
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
        let s = strings(self.config.get("Shell"));
        if s.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            s
        }
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
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

fn join_err(e: tokio::task::JoinError) -> BuildError {
    BuildError::Failed(format!("build task failed: {e}"))
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
    work: PathBuf,
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
    /// A builder over `engine`, writing to `out`, with the context unpacked in
    /// `work/context`.
    pub fn new(
        engine: &'a Arc<Engine>,
        opts: &'a BuildOptions,
        out: &'a Output,
        work: PathBuf,
    ) -> Builder<'a> {
        Builder {
            engine,
            opts,
            out,
            work,
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
                let _ = self.engine.remove(c.as_str(), true).await;
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
        match &ins.json {
            Some(words) => words.clone(),
            None => {
                let mut v = st.shell();
                v.push(ins.rest.clone());
                v
            }
        }
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
            "ENV" => {
                let pairs =
                    dockerfile::name_values("ENV", &ins.rest, &|n| st.lookup(n), self.escape)
                        .map_err(|e| fail(ins, e))?;
                let mut env = st.env();
                let mut shown = vec![];
                for (k, v) in pairs {
                    let kv = format!("{k}={v}");
                    match env
                        .iter_mut()
                        .find(|e| e.split('=').next() == Some(k.as_str()))
                    {
                        Some(slot) => *slot = kv.clone(),
                        None => env.push(kv.clone()),
                    }
                    shown.push(kv);
                }
                st.config.insert("Env".into(), json!(env));
                format!("ENV {}", shown.join(" "))
            }
            "LABEL" => {
                let pairs =
                    dockerfile::name_values("LABEL", &ins.rest, &|n| st.lookup(n), self.escape)
                        .map_err(|e| fail(ins, e))?;
                let slot = st.config.entry("Labels").or_insert_with(|| json!({}));
                if !slot.is_object() {
                    *slot = json!({});
                }
                let mut shown = vec![];
                if let Some(m) = slot.as_object_mut() {
                    for (k, v) in pairs {
                        shown.push(format!("{}={}", quote(&k), quote(&v)));
                        m.insert(k, json!(v));
                    }
                }
                format!("LABEL {}", shown.join(" "))
            }
            "MAINTAINER" => {
                let who = self.expand(st, ins, &ins.rest)?;
                if let Some(o) = st.full.as_object_mut() {
                    o.insert("author".into(), json!(who));
                }
                format!("MAINTAINER {who}")
            }
            "EXPOSE" => {
                let mut ports = st
                    .config
                    .get("ExposedPorts")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut shown = vec![];
                for w in self.expand_words(st, ins, &ins.rest)? {
                    let (port, proto) = w.split_once('/').unwrap_or((w.as_str(), "tcp"));
                    let ok = port
                        .split('-')
                        .all(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
                    if !ok || !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp")
                    {
                        return Err(fail(ins, format!("invalid containerPort: {w}")));
                    }
                    let k = format!("{port}/{}", proto.to_ascii_lowercase());
                    shown.push(k.clone());
                    ports.insert(k, json!({}));
                }
                st.config
                    .insert("ExposedPorts".into(), Value::Object(ports));
                format!("EXPOSE {}", shown.join(" "))
            }
            "VOLUME" => {
                let vols = match &ins.json {
                    Some(w) => w.clone(),
                    None => self.expand_words(st, ins, &ins.rest)?,
                };
                let mut m = st
                    .config
                    .get("Volumes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for v in &vols {
                    if v.trim().is_empty() {
                        return Err(fail(ins, "VOLUME specified can not be an empty string"));
                    }
                    m.insert(v.clone(), json!({}));
                }
                st.config.insert("Volumes".into(), Value::Object(m));
                format!("VOLUME {}", json!(vols))
            }
            "USER" => {
                let u = self.expand(st, ins, &ins.rest)?;
                st.config.insert("User".into(), json!(u));
                format!("USER {u}")
            }
            "STOPSIGNAL" => {
                let s = self.expand(st, ins, &ins.rest)?;
                if parse_signal(&s).is_none() {
                    return Err(fail(ins, format!("Invalid signal: {s}")));
                }
                st.config.insert("StopSignal".into(), json!(s));
                format!("STOPSIGNAL {s}")
            }
            "CMD" => {
                let cmd = Self::command(st, ins);
                st.config.insert("Cmd".into(), json!(cmd));
                st.cmd_set = true;
                format!("CMD {}", json!(cmd))
            }
            "ENTRYPOINT" => {
                let ep = Self::command(st, ins);
                let ep = if ins.rest.is_empty() { vec![] } else { ep };
                st.config.insert(
                    "Entrypoint".into(),
                    if ep.is_empty() {
                        Value::Null
                    } else {
                        json!(ep)
                    },
                );
                if !st.cmd_set {
                    st.config.insert("Cmd".into(), Value::Null);
                }
                format!("ENTRYPOINT {}", json!(ep))
            }
            "SHELL" => {
                let Some(sh) = ins.json.clone().filter(|s| !s.is_empty()) else {
                    return Err(fail(ins, "SHELL requires the arguments to be in JSON form"));
                };
                st.config.insert("Shell".into(), json!(sh));
                format!("SHELL {}", json!(sh))
            }
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
            "ONBUILD" => {
                let (word, _) = ins
                    .rest
                    .split_once(char::is_whitespace)
                    .unwrap_or((ins.rest.as_str(), ""));
                let w = word.to_ascii_uppercase();
                if matches!(w.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(fail(
                        ins,
                        format!("{w} isn't allowed as an ONBUILD trigger"),
                    ));
                }
                let mut ob = strings(st.config.get("OnBuild"));
                ob.push(ins.rest.clone());
                st.config.insert("OnBuild".into(), json!(ob));
                format!("ONBUILD {}", ins.rest)
            }
            "HEALTHCHECK" => {
                let hc = healthcheck(st, ins).map_err(|e| fail(ins, e))?;
                st.config.insert("Healthcheck".into(), hc.clone());
                format!("HEALTHCHECK {}", ins.rest)
            }
            other => return Err(fail(ins, format!("unknown instruction: {other}"))),
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
        if !self.engine.agent().has_layers(&rec.diff_ids) {
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
        let size = self.engine.agent().image_store().layers_size(&diff_ids);
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
        let id = self.engine.create_container(None, &bytes).await?;
        Ok(id)
    }

    /// Commit the writable layer of build container `cid` onto the stage.
    async fn commit_container(
        &self,
        st: &mut StageState,
        key: Value,
        cid: &ContainerId,
    ) -> Result<ImageId, BuildError> {
        let store = self.engine.agent().image_store().clone();
        let lock = store.layer_lock();
        let _held = lock.read().await;
        let parent = st.diff_ids.clone();
        let c = cid.clone();
        let layer = tokio::task::spawn_blocking(move || store.commit_rw_layer(c.as_str(), &parent))
            .await
            .map_err(join_err)??;
        self.commit(st, key, layer, Some(cid)).await
    }

    /// After a step's commit: a `RUN` container (`shown`) is removed with `rm` and says
    /// so, as Docker; the never-started containers of `COPY`/`ADD`/`WORKDIR` always go.
    async fn finish_container(&mut self, cid: &ContainerId, shown: bool) -> Result<(), BuildError> {
        if !shown || self.opts.rm {
            self.engine.remove(cid.as_str(), true).await?;
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

    async fn run_step(&mut self, st: &mut StageState, ins: &Instruction) -> Result<(), BuildError> {
        if ins.flag("mount").is_some()
            || ins.flag("network").is_some()
            || ins.flag("security").is_some()
        {
            return Err(fail(
                ins,
                "the --mount, --network and --security flags of RUN need BuildKit, which this classic builder is not",
            ));
        }
        if ins.rest.is_empty() {
            return Err(fail(ins, "RUN requires at least one argument"));
        }
        let cmd = Self::command(st, ins);
        let args = st.run_args();
        let mut key = st.config.clone();
        key.insert("Cmd".into(), json!(run_cmd(&args, &cmd)));
        key.insert("Entrypoint".into(), Value::Null);
        let key = Value::Object(key);
        if self.try_cache(st, &key).await? {
            return Ok(());
        }
        let mut env = st.env();
        for (k, v) in &args {
            env.push(format!("{k}={v}"));
        }
        let cid = self.create(st, &cmd, env).await?;
        self.leftover.push(cid.clone());
        self.out
            .stream(&format!(" ---> Running in {}\n", cid.short()))
            .await?;
        let code = self.run_container(&cid).await?;
        if code != 0 {
            return Err(BuildError::Run {
                command: cmd.join(" "),
                code,
            });
        }
        let id = self.commit_container(st, key, &cid).await?;
        self.finish_container(&cid, true).await?;
        self.out.stream(&format!(" ---> {}\n", short(&id))).await
    }

    /// Start `cid`, stream its output, and return its exit code. If the client goes away,
    /// the container is killed and removed.
    async fn run_container(&mut self, cid: &ContainerId) -> Result<i32, BuildError> {
        let agent = self.engine.agent().clone();
        let pending = agent.attach_after_start(cid, false);
        if let Err(e) = self.engine.start(cid.as_str()).await {
            let code = self
                .engine
                .container(cid.as_str())
                .map(|c| c.exit_code)
                .unwrap_or(1);
            self.out.stream(&format!("{}\n", e.message)).await?;
            return Ok(if code == 0 { 1 } else { code });
        }
        let mut stream = match pending.await {
            Ok(Ok(s)) => Some(s),
            _ => None,
        };
        let mut code = None;
        // Whitespace between JSON lines, which clients skip: writing it is how a client
        // that went away is noticed while a step prints nothing.
        let mut beat = tokio::time::interval(std::time::Duration::from_secs(1));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while let Some(s) = stream.as_mut() {
            tokio::select! {
                _ = beat.tick() => {
                    if self.out.raw(bytes::Bytes::from_static(b"\r\n")).await.is_err() {
                        self.cancel(cid).await;
                        return Err(BuildError::Cancelled);
                    }
                }
                ev = s.next() => match ev {
                    Ok(Some(AttachEvent::Output { data, .. })) => {
                        let text = String::from_utf8_lossy(&data).into_owned();
                        if self.out.stream(&text).await.is_err() {
                            self.cancel(cid).await;
                            return Err(BuildError::Cancelled);
                        }
                    }
                    Ok(Some(AttachEvent::Exit(e))) => {
                        code = Some(e.code);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                },
                _ = self.out.closed() => {
                    self.cancel(cid).await;
                    return Err(BuildError::Cancelled);
                }
            }
        }
        let waited = tokio::select! {
            w = self.engine.wait(cid, WaitCondition::NotRunning) => w,
            _ = self.out.closed() => {
                self.cancel(cid).await;
                return Err(BuildError::Cancelled);
            }
        };
        Ok(code.unwrap_or(waited.unwrap_or(1)))
    }

    /// The client went away: kill and remove the build container.
    async fn cancel(&mut self, cid: &ContainerId) {
        info!(container = %cid.short(), "build cancelled, removing its container");
        if let Err(e) = self.engine.remove(cid.as_str(), true).await {
            warn!(container = %cid.short(), error = %e.message, "removing build container failed");
        }
        self.leftover.retain(|c| c != cid);
    }

    async fn workdir_step(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
        let w = self.expand(st, ins, &ins.rest)?;
        let cur = st
            .config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let joined = if w.starts_with('/') {
            w.clone()
        } else {
            format!("{}/{w}", if cur.is_empty() { "/" } else { cur.as_str() })
        };
        let dir = format!("/{}", clean_rel(&joined));
        st.config.insert("WorkingDir".into(), json!(dir));
        let mut key = st.config.clone();
        key.insert(
            "Cmd".into(),
            json!(nop_cmd_string(&st.shell(), &format!("WORKDIR {dir}"))),
        );
        let key = Value::Object(key);
        if st.image.is_none() {
            return self.cached_or(st, key, None).await;
        }
        if self.try_cache(st, &key).await? {
            return Ok(());
        }
        // As Docker: the directory is created in the image when it is missing.
        let cid = self.create(st, &strings(key.get("Cmd")), st.env()).await?;
        self.leftover.push(cid.clone());
        let store = self.engine.agent().image_store().clone();
        let work = self.work.clone();
        let c = cid.clone();
        let rel = clean_rel(&dir);
        tokio::task::spawn_blocking(move || {
            archive::with_root(&store, c.as_str(), |root| {
                if rel.is_empty() || copy::is_dir_in(root, &rel) {
                    return Ok(());
                }
                let mut spool = archive::spool_file(&work).map_err(|e| ArchiveError::Io {
                    action: "create workdir spool",
                    path: rel.clone(),
                    source: e,
                })?;
                let mut b = tar::Builder::new(&mut spool);
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
                let wr = |e: std::io::Error| ArchiveError::Io {
                    action: "write workdir spool",
                    path: rel.clone(),
                    source: e,
                };
                b.append_data(&mut h, format!("{rel}/"), std::io::empty())
                    .map_err(wr)?;
                b.finish().map_err(wr)?;
                drop(b);
                archive::extract_archive(root, "/", &mut spool, &ExtractOptions::default())
            })
        })
        .await
        .map_err(join_err)??;
        let id = self.commit_container(st, key, &cid).await?;
        self.finish_container(&cid, false).await?;
        self.out.stream(&format!(" ---> {}\n", short(&id))).await
    }

    async fn copy_step(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
        let kw = ins.keyword.clone();
        let words = match &ins.json {
            Some(w) => w
                .iter()
                .map(|x| self.expand(st, ins, &dockerfile_quote(x)))
                .collect::<Result<Vec<_>, _>>()?,
            None => self.expand_words(st, ins, &ins.rest)?,
        };
        if words.len() < 2 {
            return Err(fail(ins, format!("{kw} requires at least two arguments")));
        }
        let (dest_raw, sources) = words
            .split_last()
            .map(|(d, s)| (d.clone(), s.to_vec()))
            .unwrap_or_default();
        if kw == "ADD" {
            if let Some(url) = sources.iter().find(|s| {
                s.starts_with("http://") || s.starts_with("https://") || s.starts_with("git@")
            }) {
                return Err(fail(
                    ins,
                    format!("cannot fetch {url}: remote sources need network access, which this builder does not have; download it into the build context and ADD the file"),
                ));
            }
        }
        let from = match ins.flag("from") {
            None => Source::Context,
            Some(f) => {
                let f = self.expand(st, ins, f)?;
                let lower = f.to_ascii_lowercase();
                let by_name = self
                    .stages
                    .iter()
                    .rev()
                    .find(|(n, _)| n.as_deref() == Some(lower.as_str()))
                    .map(|(_, id)| *id);
                let by_index = f
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| self.stages.get(i).map(|(_, id)| *id));
                match by_name.or(by_index) {
                    Some(id) => Source::Image(id),
                    None => Source::Image(
                        self.engine
                            .image(&f)
                            .map_err(|e| fail(ins, format!("{e} (COPY --from={f})")))?
                            .id,
                    ),
                }
            }
        };
        if kw == "ADD" && ins.flag("from").is_some() {
            return Err(fail(ins, "ADD does not support --from; use COPY"));
        }
        let chmod = match ins.flag("chmod") {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| fail(ins, format!("invalid chmod parameter: {m}")))?,
            ),
        };
        let chown = ins
            .flag("chown")
            .map(|c| self.expand(st, ins, c))
            .transpose()?;
        let numeric = chown.as_deref().and_then(numeric_owner);
        let by_name = chown.clone().filter(|_| numeric.is_none());
        let cur = st
            .config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let dest_path = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!(
                "{}/{dest_raw}",
                if cur.is_empty() { "/" } else { cur.as_str() }
            )
        };
        let syntax_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest = clean_rel(&dest_path);
        if dest.starts_with("..") {
            return Err(fail(ins, format!("invalid destination {dest_raw}")));
        }
        let mut spec = CopySpec {
            keyword: kw.clone(),
            sources: sources.clone(),
            dest: dest.clone(),
            dest_is_dir: syntax_dir || dest.is_empty(),
            chmod,
            owner: numeric.unwrap_or((0, 0)),
            unpack_archives: kw == "ADD",
            dest_missing: false,
        };
        // Collect the sources first: the cache key needs their content hash.
        let mut collected = self
            .collect(&from, &spec)
            .await
            .map_err(|e| prefixed(&kw, e))?;
        let chown_part = chown
            .as_ref()
            .map(|c| format!("--chown={c} "))
            .unwrap_or_default();
        let chmod_part = ins
            .flag("chmod")
            .map(|c| format!("--chmod={c} "))
            .unwrap_or_default();
        let comment = format!(
            "{kw} {chown_part}{chmod_part}{} in {} ",
            collected.hash,
            if dest_raw.starts_with('/') {
                dest_raw.clone()
            } else {
                format!("/{dest}")
            }
        );
        let mut key = st.config.clone();
        key.insert("Cmd".into(), json!(nop_cmd_string(&st.shell(), &comment)));
        let key = Value::Object(key);
        if self.try_cache(st, &key).await? {
            return Ok(());
        }
        let store = self.engine.agent().image_store().clone();
        if st.image.is_none() {
            // FROM scratch: the collected tar is the first layer as it is.
            if by_name.is_some() {
                return Err(fail(ins, "--chown with a user name needs /etc/passwd, which a scratch image does not have"));
            }
            let lock = store.layer_lock();
            let _held = lock.read().await;
            let s = store.clone();
            let spool = collected.spool;
            let diff = tokio::task::spawn_blocking(move || -> Result<DiffId, BuildError> {
                let layer = s.spool_import(spool)?;
                s.add_spooled_layer(&[], &layer)?;
                Ok(layer.diff_id())
            })
            .await
            .map_err(join_err)??;
            let id = self.commit(st, key, Some(diff), None).await?;
            return self.out.stream(&format!(" ---> {}\n", short(&id))).await;
        }
        let cid = self.create(st, &strings(key.get("Cmd")), st.env()).await?;
        self.leftover.push(cid.clone());
        {
            // `COPY file /existing-dir` copies into that directory, as Docker; a missing
            // destination directory is created with the copy's owner and mode.
            let s = store.clone();
            let c = cid.clone();
            let d = dest.clone();
            let is_dir = tokio::task::spawn_blocking(move || {
                archive::with_root(&s, c.as_str(), |root| Ok(copy::is_dir_in(root, &d)))
            })
            .await
            .map_err(join_err)??;
            let mut again = false;
            if is_dir && !spec.dest_is_dir && sources.len() == 1 {
                spec.dest_is_dir = true;
                again = true;
            }
            if !is_dir && collected.hash.starts_with("dir:") {
                spec.dest_missing = true;
                again = true;
            }
            if again {
                collected = self
                    .collect(&from, &spec)
                    .await
                    .map_err(|e| prefixed(&kw, e))?;
            }
        }
        let c = cid.clone();
        let mut spool = collected.spool;
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: false,
            chown_to_user: by_name,
        };
        let s = store.clone();
        tokio::task::spawn_blocking(move || {
            archive::with_root(&s, c.as_str(), |root| {
                archive::extract_archive(root, "/", &mut spool, &opts)
            })
        })
        .await
        .map_err(join_err)?
        .map_err(|e| copy_fail(&kw, e))?;
        let id = self.commit_container(st, key, &cid).await?;
        self.finish_container(&cid, false).await?;
        self.out.stream(&format!(" ---> {}\n", short(&id))).await
    }

    /// Collect `spec`'s sources from the context or from an image's filesystem.
    async fn collect(&self, from: &Source, spec: &CopySpec) -> Result<copy::Collected, BuildError> {
        let work = self.work.clone();
        let spec2 = spec.clone();
        match from {
            Source::Context => {
                let ctx = work.join("context");
                tokio::task::spawn_blocking(move || {
                    let root = copy::open_root(&ctx)?;
                    Ok(copy::collect(root.as_fd(), &spec2, &work)?)
                })
                .await
                .map_err(join_err)?
            }
            Source::Image(id) => {
                // A container on that image (never started) gives its filesystem.
                let body = json!({"Image": id.to_string(), "Cmd": ["#(nop) COPY --from"], "HostConfig": {"NetworkMode": "none"}});
                let bytes = serde_json::to_vec(&body)
                    .map_err(|e| BuildError::Failed(format!("encode container: {e}")))?;
                let cid = self.engine.create_container(None, &bytes).await?;
                let store = self.engine.agent().image_store().clone();
                let c = cid.clone();
                let res = tokio::task::spawn_blocking(move || {
                    archive::with_root(&store, c.as_str(), |root| {
                        Ok(copy::collect(root, &spec2, &work))
                    })
                })
                .await;
                if let Err(e) = self.engine.remove(cid.as_str(), true).await {
                    warn!(container = %cid.short(), error = %e.message, "removing copy container failed");
                }
                Ok(res.map_err(join_err)??.map_err(BuildError::from)?)
            }
        }
    }

    /// Tag `id` with every `t` and report, as the classic builder ends.
    pub async fn finish(&self, id: &ImageId) -> Result<(), BuildError> {
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

fn prefixed(kw: &str, e: BuildError) -> BuildError {
    match e {
        BuildError::Failed(m) => BuildError::Failed(format!("{kw} failed: {m}")),
        e => e,
    }
}

fn copy_fail(kw: &str, e: impl std::fmt::Display) -> BuildError {
    BuildError::Failed(format!("{kw} failed: {e}"))
}

/// `--chown=uid[:gid]` as numbers, if it is numeric.
fn numeric_owner(s: &str) -> Option<(u64, u64)> {
    let (u, g) = s.split_once(':').unwrap_or((s, s));
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// Quote a word for display and re-parsing when it holds spaces or quotes.
fn quote(s: &str) -> String {
    if s.is_empty()
        || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == '$')
    {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
        )
    } else {
        s.to_string()
    }
}

/// A JSON-form word is expanded without word splitting: quote it for [`dockerfile::expand`].
fn dockerfile_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
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

/// `HEALTHCHECK [flags] CMD …` / `HEALTHCHECK NONE` as the config's `Healthcheck`.
fn healthcheck(st: &StageState, ins: &Instruction) -> Result<Value, String> {
    let rest = ins.rest.trim();
    if rest.eq_ignore_ascii_case("none") {
        return Ok(json!({"Test": ["NONE"]}));
    }
    let (word, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !word.eq_ignore_ascii_case("cmd") {
        return Err(format!("Unknown type {word:?} in HEALTHCHECK (try CMD)"));
    }
    let cmd = cmd.trim();
    if cmd.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let test = match serde_json::from_str::<Vec<String>>(cmd) {
        Ok(words) if cmd.starts_with('[') => {
            let mut t = vec!["CMD".to_string()];
            t.extend(words);
            t
        }
        _ => {
            let _ = st;
            vec!["CMD-SHELL".to_string(), cmd.to_string()]
        }
    };
    let mut hc = json!({ "Test": test });
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = ins.flag(flag) {
            let ns = parse_duration_ns(v).ok_or_else(|| format!("invalid --{flag}: {v}"))?;
            hc[key] = json!(ns);
        }
    }
    if let Some(r) = ins.flag("retries") {
        let n: i64 = r.parse().map_err(|_| format!("invalid --retries: {r}"))?;
        hc["Retries"] = json!(n);
    }
    Ok(hc)
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `1h`) in nanoseconds.
fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(parse_duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration_ns("500ms"), Some(500_000_000));
        assert_eq!(parse_duration_ns("x"), None);
        assert_eq!(parse_duration_ns(""), None);
    }

    #[test]
    fn chown_numbers_and_quoting() {
        assert_eq!(numeric_owner("10:20"), Some((10, 20)));
        assert_eq!(numeric_owner("10"), Some((10, 10)));
        assert_eq!(numeric_owner("app:20"), None);
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("plain"), "plain");
    }
}
