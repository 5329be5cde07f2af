//! Exec instances (`docker exec`): created, started once, inspected for their exit code.
//!
//! Like Docker, Wharf keeps them in the engine's memory only: they are not replicated and
//! do not survive a restart of `wharf` (the processes they started keep running in their
//! container). The shim runs the process; see the agent's `runtime::exec`.
//!
//! ```text
//!  POST /containers/X/exec ─► create_exec ─► ExecRecord{started: false}
//!  POST /exec/E/start ───────► start_exec ─► agent.exec ─► shim (tenant process)
//!                                 └ stream ─► client; Exit ─► finish_exec(code)
//!  GET /exec/E/json ─────────► exec_record (ExitCode, Running, Pid)
//! ```

use super::Engine;
use crate::agent_client::AttachCall;
use crate::engine::error::EngineError;
use tracing::info;
use wharf_protocol::shim::{ErrorKind, ExecSpec};
use wharf_protocol::state::ContainerStatus;
use wharf_protocol::ContainerId;

/// What `POST /containers/{id}/exec` asks for (Docker's `ExecConfig`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecCreate {
    /// Attach the client's stdin.
    pub attach_stdin: bool,
    /// Attach stdout.
    pub attach_stdout: bool,
    /// Attach stderr.
    pub attach_stderr: bool,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
    /// The command, never empty.
    pub cmd: Option<Vec<String>>,
    /// `KEY=value` additions to the container's environment.
    pub env: Option<Vec<String>>,
    /// `user[:group]`; empty for the container's user.
    pub user: String,
    /// Working directory; empty for the container's.
    pub working_dir: String,
    /// Docker's detach keys for this exec (`ctrl-p,ctrl-q` when empty). docker-py sends
    /// them as `detachKeys` (Go's JSON decoding ignores the case of names).
    #[serde(alias = "detachKeys")]
    pub detach_keys: String,
    /// Extended privileges (accepted and shown; the process gets the container's).
    pub privileged: bool,
}

/// One exec instance, as `GET /exec/{id}/json` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecRecord {
    /// 64 hex digits.
    pub id: String,
    /// The container it runs in.
    pub container: ContainerId,
    /// What was asked for.
    pub config: ExecCreate,
    /// Start was called (an exec starts at most once).
    pub started: bool,
    /// The process runs.
    pub running: bool,
    /// Host PID of the process once started, else 0.
    pub pid: u32,
    /// Exit code once it ended (or failed to start).
    pub exit_code: Option<i32>,
    /// When it ended; finished instances are forgotten [`EXEC_KEEP`] later.
    pub finished_at: Option<std::time::Instant>,
}

/// How long a finished exec instance stays inspectable (moby's exec GC: 5 minutes).
pub const EXEC_KEEP: std::time::Duration = std::time::Duration::from_secs(300);

/// Exit code Docker gives an exec that could not start (moby `translateContainerdStartErr`).
pub fn start_failure_code(kind: Option<ErrorKind>) -> i32 {
    match kind {
        Some(ErrorKind::CommandNotFound) => 127,
        Some(ErrorKind::PermissionDenied) => 126,
        _ => 126,
    }
}

/// The command of an exec as Docker's events show it (`exec_start: sh -c true`).
fn exec_command(c: &ExecCreate) -> String {
    c.cmd.clone().unwrap_or_default().join(" ")
}

impl Engine {
    /// `POST /containers/{id}/exec`: validate and record an exec instance; returns its ID.
    pub fn create_exec(&self, reference: &str, req: ExecCreate) -> Result<String, EngineError> {
        let c = self.container(reference)?;
        match c.status {
            ContainerStatus::Running => {}
            ContainerStatus::Paused => {
                return Err(EngineError::conflict(format!(
                    "container {} is paused, unpause the container before exec",
                    c.id
                )))
            }
            _ => {
                return Err(EngineError::conflict(format!(
                    "container {} is not running",
                    c.id
                )))
            }
        }
        if req.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(EngineError::invalid("No exec command specified"));
        }
        if !req.working_dir.is_empty() && !req.working_dir.starts_with('/') {
            return Err(EngineError::invalid(format!(
                "the working directory '{}' is invalid, it needs to be an absolute path",
                req.working_dir
            )));
        }
        if !req.detach_keys.is_empty() {
            super::parse_detach_keys(&req.detach_keys)?;
        }
        let id = hex::encode(rand::random::<[u8; 32]>());
        let record = ExecRecord {
            id: id.clone(),
            container: c.id.clone(),
            config: req,
            started: false,
            running: false,
            pid: 0,
            exit_code: None,
            finished_at: None,
        };
        let action = format!("exec_create: {}", exec_command(&record.config));
        let mut execs = self.execs_lock();
        execs.retain(|_, e| e.finished_at.is_none_or(|t| t.elapsed() < EXEC_KEEP));
        execs.insert(id.clone(), record);
        drop(execs);
        self.emit_container(&c, &action, &[("execID", id.clone())]);
        info!(container = %c.id.short(), exec = %&id[..12], "exec created");
        Ok(id)
    }

    fn execs_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, ExecRecord>> {
        self.execs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An exec instance by ID, or Docker's 404.
    pub fn exec_record(&self, id: &str) -> Result<ExecRecord, EngineError> {
        self.execs_lock()
            .get(id)
            .cloned()
            .ok_or_else(|| EngineError::not_found(format!("No such exec instance: {id}")))
    }

    /// IDs of the exec instances of a container (inspect's `ExecIDs`).
    pub fn exec_ids(&self, container: &ContainerId) -> Vec<String> {
        let mut ids: Vec<String> = self
            .execs_lock()
            .values()
            .filter(|e| &e.container == container)
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Check that exec `id` may start now and mark it started (409 otherwise).
    pub fn claim_exec(&self, id: &str) -> Result<ExecRecord, EngineError> {
        let record = self.exec_record(id)?;
        let c = self.container(record.container.as_str())?;
        match c.status {
            ContainerStatus::Running => {}
            ContainerStatus::Paused => {
                return Err(EngineError::conflict(format!(
                    "container {} is paused, unpause the container before exec",
                    c.id
                )))
            }
            _ => {
                return Err(EngineError::conflict(format!(
                    "container {} is not running",
                    c.id
                )))
            }
        }
        let mut execs = self.execs_lock();
        let e = execs
            .get_mut(id)
            .ok_or_else(|| EngineError::not_found(format!("No such exec instance: {id}")))?;
        if e.started {
            return Err(EngineError::conflict(format!(
                "exec command {id} is already running"
            )));
        }
        e.started = true;
        Ok(e.clone())
    }

    /// Start a claimed exec in its container; returns its stream. A failure records
    /// Docker's exit code (126/127) and returns the text Docker shows.
    pub async fn start_exec(
        &self,
        record: &ExecRecord,
        want_stdin: bool,
    ) -> Result<AttachCall, String> {
        let spec = ExecSpec {
            exec_id: record.id.clone(),
            args: record.config.cmd.clone().unwrap_or_default(),
            env: record.config.env.clone().unwrap_or_default(),
            working_dir: record.config.working_dir.clone(),
            user: record.config.user.clone(),
            tty: record.config.tty,
            stdin: want_stdin && record.config.attach_stdin,
        };
        let node = self
            .node_of(&record.container)
            .map_err(|e| e.message.clone())?;
        match self.agents.exec(&node, &record.container, spec).await {
            Ok((pid, stream)) => {
                if let Some(e) = self.execs_lock().get_mut(&record.id) {
                    e.running = true;
                    e.pid = pid;
                }
                if let Ok(c) = self.container(record.container.as_str()) {
                    let action = format!("exec_start: {}", exec_command(&record.config));
                    self.emit_container(&c, &action, &[("execID", record.id.clone())]);
                }
                info!(exec = %&record.id[..12], pid, "exec started");
                Ok(stream)
            }
            Err(e) => {
                self.finish_exec(&record.id, start_failure_code(e.shim));
                Err(format!(
                    "OCI runtime exec failed: exec failed: unable to start container process: {e}: unknown"
                ))
            }
        }
    }

    /// Record the end of an exec process.
    pub fn finish_exec(&self, id: &str, code: i32) {
        let container = self.execs_lock().get_mut(id).map(|e| {
            e.running = false;
            e.exit_code = Some(code);
            e.finished_at = Some(std::time::Instant::now());
            e.container.clone()
        });
        if let Some(c) = container.and_then(|c| self.container(c.as_str()).ok()) {
            let attrs = [("execID", id.to_string()), ("exitCode", code.to_string())];
            self.emit_container(&c, "exec_die", &attrs);
        }
        info!(exec = %id.get(..12).unwrap_or(id), code, "exec ended");
    }

    /// `POST /exec/{id}/resize`.
    pub async fn resize_exec(&self, id: &str, height: u16, width: u16) -> Result<(), EngineError> {
        let record = self.exec_record(id)?;
        if !record.running {
            return Err(EngineError::conflict(format!("exec {id} is not running")));
        }
        let node = self.node_of(&record.container)?;
        self.agents
            .resize_exec(&node, &record.container, id, height, width)
            .await?;
        Ok(())
    }

    /// Forget the exec instances of a removed container.
    pub fn forget_execs(&self, container: &ContainerId) {
        self.execs_lock().retain(|_, e| &e.container != container);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_failures_exit_like_docker() {
        assert_eq!(start_failure_code(Some(ErrorKind::CommandNotFound)), 127);
        assert_eq!(start_failure_code(Some(ErrorKind::PermissionDenied)), 126);
        assert_eq!(start_failure_code(None), 126);
    }

    #[test]
    fn exec_config_parses_docker_json() {
        let body = r#"{"AttachStdin":true,"AttachStdout":true,"AttachStderr":true,
            "Tty":true,"Cmd":["sh"],"Env":["A=1"],"User":"nobody","WorkingDir":"/tmp",
            "DetachKeys":"","Privileged":false,"ConsoleSize":[24,80]}"#;
        let c: ExecCreate = serde_json::from_str(body).unwrap();
        assert!(c.attach_stdin && c.tty);
        assert_eq!(c.cmd.as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(c.user, "nobody");
        assert_eq!(c.working_dir, "/tmp");
        let c: ExecCreate = serde_json::from_str("{}").unwrap();
        assert_eq!(c, ExecCreate::default());
        // docker-py's spelling, from the client config's `detachKeys`.
        let c: ExecCreate =
            serde_json::from_str(r#"{"Cmd":["sh"],"detachKeys":"ctrl-a"}"#).unwrap();
        assert_eq!(c.detach_keys, "ctrl-a");
    }
}
