//! `RUN`: a build container on the stage's image, its output streamed to the client, its
//! writable layer committed; killed and removed when the client goes away.

use super::{fail, short, Builder, StageState};
use crate::build::cache::run_cmd;
use crate::build::dockerfile::Instruction;
use crate::build::BuildError;
use crate::engine::WaitCondition;
use serde_json::{json, Value};
use tracing::{info, warn};
use wharf_protocol::runtime::AttachEvent;
use wharf_protocol::ContainerId;

impl Builder<'_> {
    pub(super) async fn run_step(
        &mut self,
        st: &mut StageState,
        ins: &Instruction,
    ) -> Result<(), BuildError> {
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
        let engine = self.engine.clone();
        let pending = engine
            .agents()
            .attach_next_start(&self.context.node(), cid, false)
            .await
            .map_err(|e| BuildError::Failed(e.message))?;
        if let Err(e) = self.engine.start(cid.as_str()).await {
            let code = self
                .engine
                .container(cid.as_str())
                .map(|c| c.exit_code)
                .unwrap_or(1);
            self.out.stream(&format!("{}\n", e.message)).await?;
            return Ok(if code == 0 { 1 } else { code });
        }
        let mut stream = Some(pending);
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
        if let Err(BuildError::Failed(e)) = self.remove_container(cid).await {
            warn!(container = %cid.short(), error = %e, "removing build container failed");
        }
        self.leftover.retain(|c| c != cid);
    }
}
