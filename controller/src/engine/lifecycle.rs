//! Container lifecycle beyond create/start/stop: restart policies (Docker's back-off),
//! restart, pause/unpause, rename, top, resize.
//!
//! ```text
//!  exit ─► handle_exit ─► after_exit: restart_decision(policy, exit, count, stopped)
//!                              └ Some(delay) ─► sleep ─► still exited & not stopped? ─► start
//!  stop / kill ─► note_manual_stop (SetRestartState{manually_stopped: true})
//!  docker start / restart ─► start_manual ─► SetRestartState{count: 0, stopped: false}
//! ```
//!
//! The decisions ([`RestartPolicy::parse`], [`restart_decision`], [`parse_ps`]) are pure;
//! the engine methods carry them out.

use super::Engine;
use crate::engine::error::EngineError;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};
use wharf_protocol::state::{Command, ContainerStatus, RestartState};
use wharf_protocol::{ContainerId, ContainerName, NodeId};

/// First back-off delay of a restart (moby restartmanager `defaultTimeout`).
pub const RESTART_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest back-off delay (moby `maxRestartTimeout`).
pub const RESTART_MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off (moby: 10 s).
pub const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);

/// `HostConfig.RestartPolicy`, as Docker names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    /// `no` (or empty): never restart.
    #[default]
    No,
    /// `on-failure[:N]`: restart on a non-zero exit, at most N times (0: no limit).
    OnFailure(u32),
    /// `always`: restart whatever the exit, unless stopped by a user.
    Always,
    /// `unless-stopped`: as always, and not after a reboot if stopped by a user.
    UnlessStopped,
}

impl RestartPolicy {
    /// Read and validate `HostConfig.RestartPolicy` (Docker's errors for bad values).
    pub fn parse(host_config: &serde_json::Value) -> Result<RestartPolicy, String> {
        let rp = host_config.get("RestartPolicy");
        let name = rp
            .and_then(|r| r.get("Name"))
            .and_then(|n| n.as_str())
            .unwrap_or("");
        let max = rp
            .and_then(|r| r.get("MaximumRetryCount"))
            .and_then(|n| n.as_i64())
            .unwrap_or(0);
        if max < 0 {
            return Err("invalid restart policy: maximum retry count cannot be negative".into());
        }
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure(u32::try_from(max).unwrap_or(u32::MAX)),
            other => return Err(format!("invalid restart policy: unknown policy '{other}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'")),
        };
        if max > 0 && !matches!(policy, RestartPolicy::OnFailure(_)) {
            return Err(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'"
                    .into(),
            );
        }
        Ok(policy)
    }

    /// Whether a container that was running when its shim was lost (a host reboot) comes
    /// back when Wharf starts, as at dockerd's start with a fresh restart manager: `always`
    /// does, `unless-stopped` unless a user stopped it, `on-failure` too (the lost run
    /// counts as exit 255, a failure, and the count starts again).
    pub fn restart_on_boot(self, manually_stopped: bool) -> bool {
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::UnlessStopped | RestartPolicy::OnFailure(_) => !manually_stopped,
        }
    }
}

/// How a run ended, as the restart policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitFacts {
    /// The exit code.
    pub code: i32,
    /// How long the run lasted.
    pub ran_for: Duration,
}

/// Whether, and after which delay, the policy restarts a container that just exited
/// (moby restartmanager `ShouldRestart`): nothing after a user's stop or kill; the delay
/// doubles from 100 ms per restart up to a minute, back to 100 ms after a run of 10 s.
pub fn restart_decision(
    policy: RestartPolicy,
    exit: ExitFacts,
    restart_count: u32,
    manually_stopped: bool,
) -> Option<Duration> {
    if manually_stopped {
        return None;
    }
    let restart = match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure(max) => exit.code != 0 && (max == 0 || restart_count < max),
    };
    if !restart {
        return None;
    }
    if exit.ran_for >= RESTART_RESET_AFTER {
        return Some(RESTART_FIRST_DELAY);
    }
    let factor = 1u32.checked_shl(restart_count.min(20)).unwrap_or(u32::MAX);
    Some(
        RESTART_FIRST_DELAY
            .checked_mul(factor)
            .unwrap_or(RESTART_MAX_DELAY)
            .min(RESTART_MAX_DELAY),
    )
}

/// Keep the rows of `ps` output (`text`, header first) whose PID column is one of
/// `pids` (moby `parsePSOutput`); returns the titles and the rows, CMD keeping its spaces.
pub fn parse_ps(text: &str, pids: &[u32]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or_else(|| "Couldn't find PID field in ps output".to_string())?;
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let mut fields: Vec<String> = Vec::with_capacity(titles.len());
        let mut rest = line.trim_start();
        while fields.len() + 1 < titles.len() {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            fields.push(rest[..end].to_string());
            rest = rest[end..].trim_start();
        }
        fields.push(rest.to_string());
        let pid: u32 = fields
            .get(pid_col)
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("Unexpected pid '{}'", fields[pid_col]))?;
        if pids.contains(&pid) {
            rows.push(fields);
        }
    }
    Ok((titles, rows))
}

impl Engine {
    /// The container's restart policy (`no` when its HostConfig has none or a bad one).
    pub fn restart_policy(&self, id: &ContainerId) -> RestartPolicy {
        self.container(id.as_str())
            .ok()
            .and_then(|c| serde_json::from_str(&c.host_config_json).ok())
            .and_then(|h: serde_json::Value| RestartPolicy::parse(&h).ok())
            .unwrap_or_default()
    }

    /// The restart bookkeeping of a container.
    pub fn restart_state(&self, id: &ContainerId) -> RestartState {
        self.store
            .read(|s| s.restarts.get(id).copied())
            .unwrap_or_default()
    }

    async fn set_restart_state(&self, id: &ContainerId, st: RestartState) {
        if self.restart_state(id) == st {
            return;
        }
        let cmd = Command::SetRestartState {
            id: id.clone(),
            count: st.count,
            manually_stopped: st.manually_stopped,
            restarting: st.restarting,
        };
        if let Err(e) = self.propose(cmd).await {
            warn!(container = %id.short(), error = %e.message, "recording restart state failed");
        }
    }

    /// A user stopped or killed the container: its policy must not bring it back.
    pub async fn note_manual_stop(&self, id: &ContainerId) {
        let st = self.restart_state(id);
        self.set_restart_state(
            id,
            RestartState {
                manually_stopped: true,
                restarting: false,
                ..st
            },
        )
        .await;
    }

    /// `docker start`: start, then reset the policy's count and the manual-stop mark.
    pub async fn start_manual(self: &Arc<Self>, reference: &str) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        self.start(c.id.as_str()).await?;
        self.set_restart_state(&c.id, RestartState::default()).await;
        Ok(())
    }

    /// After an exit has been recorded and cleaned up: apply the restart policy.
    /// `shim_lost`: the run ended without a recorded exit (the host rebooted), which is
    /// decided as at dockerd's start and resets `RestartCount`, as Docker does.
    pub(super) fn after_exit(
        self: &Arc<Self>,
        id: &ContainerId,
        code: i32,
        ran_for: Duration,
        shim_lost: bool,
    ) {
        let policy = self.restart_policy(id);
        let st = self.restart_state(id);
        let exit = ExitFacts { code, ran_for };
        let (delay, next_count) = if shim_lost {
            if !policy.restart_on_boot(st.manually_stopped) {
                return;
            }
            (RESTART_FIRST_DELAY, 0)
        } else {
            match restart_decision(policy, exit, st.count, st.manually_stopped) {
                Some(d) => (d, st.count.saturating_add(1)),
                None => return,
            }
        };
        info!(container = %id.short(), ?policy, ?delay, count = st.count, "restarting by policy");
        let engine = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let restarting = RestartState {
                count: st.count,
                manually_stopped: false,
                restarting: true,
            };
            engine.set_restart_state(&id, restarting).await;
            engine.restart_after(&id, delay, next_count).await;
        });
    }

    /// Containers whose back-off was cut short by a restart of Wharf: start them again.
    pub(super) fn resume_restarts(self: &Arc<Self>, node: NodeId) {
        let pending: Vec<(ContainerId, u32)> = self.store.read(|s| {
            s.restarts
                .iter()
                .filter(|(id, r)| {
                    r.restarting
                        && s.containers
                            .get(*id)
                            .is_some_and(|c| c.node == node && c.status == ContainerStatus::Exited)
                })
                .map(|(id, r)| (id.clone(), r.count))
                .collect()
        });
        for (id, count) in pending {
            info!(container = %id.short(), "resuming a restart by policy");
            let engine = self.clone();
            tokio::spawn(async move {
                engine
                    .restart_after(&id, RESTART_FIRST_DELAY, count.saturating_add(1))
                    .await;
            });
        }
    }

    /// Wait out the back-off, then start the container unless a user stopped, started or
    /// removed it meanwhile.
    async fn restart_after(self: &Arc<Self>, id: &ContainerId, delay: Duration, count: u32) {
        tokio::time::sleep(delay).await;
        let Ok(c) = self.container(id.as_str()) else {
            return;
        };
        let st = self.restart_state(id);
        if c.status != ContainerStatus::Exited || st.manually_stopped || !st.restarting {
            if st.restarting {
                let done = RestartState {
                    restarting: false,
                    ..st
                };
                self.set_restart_state(id, done).await;
            }
            return;
        }
        let next = RestartState {
            count,
            manually_stopped: false,
            restarting: false,
        };
        self.set_restart_state(id, next).await;
        if let Err(e) = self.start(id.as_str()).await {
            warn!(container = %id.short(), error = %e.message, "restart by policy failed");
        }
    }

    /// The run time of the container's last run, for the back-off.
    pub(super) fn last_run_time(&self, id: &ContainerId) -> Duration {
        self.container(id.as_str())
            .ok()
            .filter(|c| c.started_ns > 0 && c.finished_ns >= c.started_ns)
            .map(|c| Duration::from_nanos((c.finished_ns - c.started_ns) as u64))
            .unwrap_or_default()
    }

    /// `POST /containers/{id}/restart`: stop (signal, then SIGKILL after the timeout) if
    /// running, then start.
    pub async fn restart(
        self: &Arc<Self>,
        reference: &str,
        timeout: Option<i64>,
        signal: Option<i32>,
    ) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        match self.stop(c.id.as_str(), timeout, signal).await {
            Ok(()) => {}
            Err(e) if e.is(crate::engine::ErrorKind::NotModified) => {}
            Err(e) => return Err(e),
        }
        match self.start_manual(c.id.as_str()).await {
            Err(e) if e.is(crate::engine::ErrorKind::NotModified) => {}
            other => other?,
        }
        self.emit_container(&self.container(c.id.as_str())?, "restart", &[]);
        Ok(())
    }

    /// `POST /containers/{id}/pause` (`freeze`) and `/unpause`.
    pub async fn pause(&self, reference: &str, freeze: bool) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        let lock = self.lock_for(&c.id);
        let _guard = lock.lock().await;
        let c = self.container(c.id.as_str())?;
        match (c.status, freeze) {
            (ContainerStatus::Running, true) | (ContainerStatus::Paused, false) => {}
            (ContainerStatus::Paused, true) => {
                return Err(EngineError::conflict(format!(
                    "cannot pause container {}: container {} is already paused",
                    c.id, c.id
                )))
            }
            (ContainerStatus::Running, false) => {
                return Err(EngineError::conflict(format!(
                    "Container {} is not paused",
                    c.id
                )))
            }
            _ => {
                return Err(EngineError::conflict(format!(
                    "Container {} is not running",
                    c.id
                )))
            }
        }
        self.agents.pause(&c.node, &c.id, freeze).await?;
        self.propose(Command::PauseContainer {
            id: c.id.clone(),
            paused: freeze,
        })
        .await?;
        self.emit_container(&c, if freeze { "pause" } else { "unpause" }, &[]);
        info!(container = %c.id.short(), freeze, "pause state changed");
        Ok(())
    }

    /// `POST /containers/{id}/rename?name=`.
    pub async fn rename(&self, reference: &str, new_name: &str) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        let name = new_name.strip_prefix('/').unwrap_or(new_name);
        if name.is_empty() {
            return Err(EngineError::invalid(
                "Neither old nor new names may be empty",
            ));
        }
        let name: ContainerName = name
            .parse()
            .map_err(|e: wharf_protocol::IdError| EngineError::invalid(e.to_string()))?;
        if name == c.name {
            return Err(EngineError::invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        self.propose(Command::RenameContainer {
            id: c.id.clone(),
            name: name.clone(),
        })
        .await?;
        if self.store().read(|s| s.endpoints.contains_key(&c.id)) {
            self.sync_dns(c.node).await;
        }
        self.emit_container(
            &self.container(c.id.as_str())?,
            "rename",
            &[("oldName", format!("/{}", c.name))],
        );
        info!(container = %c.id.short(), from = %c.name, to = %name, "renamed");
        Ok(())
    }

    /// `GET /containers/{id}/top?ps_args=`: the host's `ps` filtered to the container's
    /// cgroup, as Docker does.
    pub async fn top(
        &self,
        reference: &str,
        ps_args: &str,
    ) -> Result<(Vec<String>, Vec<Vec<String>>), EngineError> {
        let c = self.container(reference)?;
        if !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused) {
            return Err(EngineError::conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        let pids = self.agents.pids(&c.node, &c.id).await?;
        let args: Vec<&str> = if ps_args.trim().is_empty() {
            vec!["-ef"]
        } else {
            ps_args.split_whitespace().collect()
        };
        let out = tokio::process::Command::new("ps")
            .args(&args)
            .output()
            .await
            .map_err(|e| EngineError::internal(format!("running ps: {e}")))?;
        if !out.status.success() {
            return Err(EngineError::internal(format!(
                "ps: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        parse_ps(&String::from_utf8_lossy(&out.stdout), &pids).map_err(EngineError::internal)
    }

    /// `POST /containers/{id}/resize?h=&w=`: the container's terminal (a no-op without one).
    pub async fn resize(
        &self,
        reference: &str,
        height: u16,
        width: u16,
    ) -> Result<(), EngineError> {
        let c = self.container(reference)?;
        if !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused) {
            return Err(EngineError::conflict(format!(
                "Container {} is not running",
                c.id
            )));
        }
        if !c.run.tty {
            return Ok(());
        }
        self.agents.resize(&c.node, &c.id, height, width).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(code: i32, secs: u64) -> ExitFacts {
        ExitFacts {
            code,
            ran_for: Duration::from_secs(secs),
        }
    }

    #[test]
    fn policies_parse_and_bad_ones_are_refused_like_docker() {
        let p = |v| RestartPolicy::parse(&json!({ "RestartPolicy": v }));
        assert_eq!(RestartPolicy::parse(&json!({})), Ok(RestartPolicy::No));
        assert_eq!(p(json!({"Name": ""})), Ok(RestartPolicy::No));
        assert_eq!(p(json!({"Name": "always"})), Ok(RestartPolicy::Always));
        assert_eq!(
            p(json!({"Name": "unless-stopped"})),
            Ok(RestartPolicy::UnlessStopped)
        );
        assert_eq!(
            p(json!({"Name": "on-failure", "MaximumRetryCount": 3})),
            Ok(RestartPolicy::OnFailure(3))
        );
        assert!(p(json!({"Name": "sometimes"}))
            .unwrap_err()
            .contains("unknown policy 'sometimes'"));
        assert!(p(json!({"Name": "always", "MaximumRetryCount": 2}))
            .unwrap_err()
            .contains("only be used with 'on-failure'"));
        assert!(p(json!({"Name": "on-failure", "MaximumRetryCount": -1}))
            .unwrap_err()
            .contains("cannot be negative"));
    }

    #[test]
    fn decisions_follow_the_policy() {
        use RestartPolicy::*;
        assert_eq!(restart_decision(No, facts(1, 0), 0, false), None);
        assert_eq!(restart_decision(OnFailure(0), facts(0, 0), 0, false), None);
        assert_eq!(
            restart_decision(OnFailure(0), facts(3, 0), 50, false),
            Some(RESTART_MAX_DELAY)
        );
        assert_eq!(
            restart_decision(OnFailure(2), facts(3, 0), 1, false),
            Some(Duration::from_millis(200))
        );
        assert_eq!(restart_decision(OnFailure(2), facts(3, 0), 2, false), None);
        assert_eq!(
            restart_decision(Always, facts(0, 0), 0, false),
            Some(RESTART_FIRST_DELAY)
        );
        assert_eq!(
            restart_decision(UnlessStopped, facts(0, 0), 0, false),
            Some(RESTART_FIRST_DELAY)
        );
        for p in [Always, UnlessStopped, OnFailure(0)] {
            assert_eq!(restart_decision(p, facts(1, 0), 0, true), None, "{p:?}");
        }
    }

    #[test]
    fn back_off_doubles_up_to_a_minute_and_resets_after_a_long_run() {
        let d = |count, secs| restart_decision(RestartPolicy::Always, facts(1, secs), count, false);
        assert_eq!(d(0, 0), Some(Duration::from_millis(100)));
        assert_eq!(d(1, 0), Some(Duration::from_millis(200)));
        assert_eq!(d(4, 0), Some(Duration::from_millis(1600)));
        assert_eq!(d(10, 0), Some(RESTART_MAX_DELAY));
        assert_eq!(d(u32::MAX, 0), Some(RESTART_MAX_DELAY));
        assert_eq!(d(10, 10), Some(RESTART_FIRST_DELAY));
    }

    #[test]
    fn boot_restarts_every_policy_but_no_unless_a_user_stopped_it() {
        assert!(RestartPolicy::Always.restart_on_boot(true));
        assert!(RestartPolicy::UnlessStopped.restart_on_boot(false));
        assert!(!RestartPolicy::UnlessStopped.restart_on_boot(true));
        assert!(RestartPolicy::OnFailure(1).restart_on_boot(false));
        assert!(!RestartPolicy::OnFailure(1).restart_on_boot(true));
        assert!(!RestartPolicy::No.restart_on_boot(false));
    }

    #[test]
    fn ps_output_is_filtered_to_the_container() {
        let text = "UID        PID  PPID  C STIME TTY          TIME CMD\n\
                    root         1     0  0 09:44 ?        00:00:09 /sbin/init splash\n\
                    root       812   800  0 09:45 ?        00:00:00 sleep 600\n\
                    root       813   812  0 09:45 pts/0    00:00:00 sh -c echo a  b\n";
        let (titles, rows) = parse_ps(text, &[812, 813]).unwrap();
        assert_eq!(
            titles,
            ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0][7], "sleep 600");
        assert_eq!(rows[1][7], "sh -c echo a  b");
        assert_eq!(rows[1][5], "pts/0");
        assert!(parse_ps("USER COMMAND\nroot x\n", &[1]).is_err());
    }
}
