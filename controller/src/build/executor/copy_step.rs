//! `COPY`/`ADD` and `WORKDIR`: sources collected (and hashed) first for the cache key,
//! then written into a container's root filesystem, whose writable layer becomes the step's
//! layer (`FROM scratch`: the collected tar is the layer itself).

use super::{fail, short, Builder, Source, StageState};
use crate::agent_client::ArchiveDownload;
use crate::build::cache::nop_cmd_string;
use crate::build::dockerfile::Instruction;
use crate::build::ignore::{clean_abs, clean_rel};
use crate::build::metadata::strings;
use crate::build::BuildError;
use serde_json::{json, Value};
use tracing::warn;
use wharf_protocol::archive::{CopySpec, ExtractOptions};

impl Builder<'_> {
    pub(super) async fn workdir_step(
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
        let dir = format!("/{}", clean_abs(&joined));
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
        let rel = clean_rel(&dir);
        let agents = self.engine.agents();
        let node = self.context.node();
        let present = rel.is_empty() || agents.is_dir(&node, &cid, &rel).await?;
        if !present {
            let tar = workdir_tar(&rel)
                .map_err(|e| BuildError::Failed(format!("write workdir spool {rel:?}: {e}")))?;
            let mut upload = agents.archive_put(&node, &cid, "/", ExtractOptions::default())?;
            if upload.send(&tar).await.is_err() {
                return Err(upload.failure().await.into());
            }
            upload.finish().await?;
        }
        let id = self.commit_container(st, key, &cid).await?;
        self.finish_container(&cid, false).await?;
        self.out.stream(&format!(" ---> {}\n", short(&id))).await
    }

    pub(super) async fn copy_step(
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
        let dest = clean_abs(&dest_path);
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
        if st.image.is_none() {
            // FROM scratch: the collected tar is the first layer as it is, leased by the
            // host until the step's image is recorded.
            if by_name.is_some() {
                return Err(fail(ins, "--chown with a user name needs /etc/passwd, which a scratch image does not have"));
            }
            let body = crate::engine::images::stream_from_reader("copy", collected.spool);
            let node = self.context.node();
            let (diff, _, lease) = self
                .engine
                .agents()
                .import_layer(&node, Vec::new(), body)
                .await?;
            let id = self.commit(st, key, Some(diff), None).await?;
            lease.release().await;
            return self.out.stream(&format!(" ---> {}\n", short(&id))).await;
        }
        let cid = self.create(st, &strings(key.get("Cmd")), st.env()).await?;
        self.leftover.push(cid.clone());
        {
            // `COPY file /existing-dir` copies into that directory, as Docker; a missing
            // destination directory is created with the copy's owner and mode.
            let is_dir = if dest.is_empty() {
                true
            } else {
                self.engine
                    .agents()
                    .is_dir(&self.context.node(), &cid, &dest)
                    .await?
            };
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
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: false,
            chown_to_user: by_name,
        };
        self.engine
            .agents()
            .extract_file(&self.context.node(), &cid, "/", collected.spool, opts)
            .await
            .map_err(|e| copy_fail(&kw, e))?;
        let id = self.commit_container(st, key, &cid).await?;
        self.finish_container(&cid, false).await?;
        self.out.stream(&format!(" ---> {}\n", short(&id))).await
    }

    /// Collect `spec`'s sources from the context or from an image's filesystem.
    async fn collect(&self, from: &Source, spec: &CopySpec) -> Result<Collected, BuildError> {
        match from {
            Source::Context => {
                let (hash, tar) = self.context.collect(spec.clone()).await?;
                self.spool(hash, tar).await
            }
            Source::Image(id) => {
                // A container on that image (never started) gives its filesystem.
                let body = json!({"Image": id.to_string(), "Cmd": ["#(nop) COPY --from"], "HostConfig": {"NetworkMode": "none"}});
                let bytes = serde_json::to_vec(&body)
                    .map_err(|e| BuildError::Failed(format!("encode container: {e}")))?;
                let cid = self
                    .engine
                    .create_container_on(None, &bytes, self.context.node())
                    .await?;
                let res = self.collect_from(&cid, spec.clone()).await;
                if let Err(BuildError::Failed(e)) = self.remove_container(&cid).await {
                    warn!(container = %cid.short(), error = %e, "removing copy container failed");
                }
                res
            }
        }
    }
}

/// Collected `COPY`/`ADD` sources: a tar of entries named from the root of the image
/// (`opt/app/x`) and the content hash the build cache keys on.
struct Collected {
    /// The tar, in an unnamed file of the controller's data dir, rewound.
    spool: std::fs::File,
    /// `file:<hex>`, `dir:<hex>` or `multi:<hex>`.
    hash: String,
}

impl Builder<'_> {
    /// Collect `spec`'s sources from the filesystem of container `cid` on the agent.
    async fn collect_from(
        &self,
        cid: &wharf_protocol::ContainerId,
        spec: CopySpec,
    ) -> Result<Collected, BuildError> {
        let (hash, tar) = self
            .engine
            .agents()
            .collect(&self.context.node(), cid, spec)
            .await?;
        self.spool(hash, tar).await
    }

    /// The collected tar the agent sends, spooled into an unnamed file of the controller's
    /// data dir (the agent may be on another host; the container it goes into, too).
    async fn spool(&self, hash: String, mut tar: ArchiveDownload) -> Result<Collected, BuildError> {
        use tokio::io::{AsyncSeekExt, AsyncWriteExt};
        let spool_err = |e: std::io::Error| BuildError::Failed(format!("copy spool: {e}"));
        let file = tempfile::tempfile_in(self.engine.data_dir()).map_err(spool_err)?;
        let mut spool = tokio::fs::File::from_std(file);
        while let Some(chunk) = tar.next().await? {
            spool.write_all(&chunk).await.map_err(spool_err)?;
        }
        spool.flush().await.map_err(spool_err)?;
        spool.rewind().await.map_err(spool_err)?;
        let spool = spool.into_std().await;
        Ok(Collected { spool, hash })
    }
}

/// A tar holding the one directory `rel/` (0755, now), for a `WORKDIR` that is missing.
fn workdir_tar(rel: &str) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_size(0);
    h.set_mtime(chrono::Utc::now().timestamp().max(0) as u64);
    b.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
    b.into_inner()
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

/// A JSON-form word is expanded without word splitting: quote it for [`dockerfile::expand`].
fn dockerfile_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_numbers() {
        assert_eq!(numeric_owner("10:20"), Some((10, 20)));
        assert_eq!(numeric_owner("10"), Some((10, 10)));
        assert_eq!(numeric_owner("app:20"), None);
    }
}
