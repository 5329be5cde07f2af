//! Healthchecks, run by the shim: the check as the agent resolved it ([`HealthSpec`], in
//! `shim.json`), the state Docker shows as `.State.Health` ([`HealthState`], kept in
//! `<state>/health.json`), and the loop that runs the check as an exec process.
//!
//! ```text
//!  shim.json options.health ─► loop: sleep interval ─► exec test in the container
//!                                 └─ exit code, output ─► HealthState::record ─► health.json
//! ```
//!
//! The state machine ([`HealthState::record`]) is pure; the loop only runs the process
//! and writes the file. Because the shim keeps running across an agent restart, so do
//! its checks (live-restore).

use crate::runtime::config::write_atomic;
use crate::runtime::jsonlog::rfc3339_nano;
use crate::runtime::server::Shim;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;
pub use wharf_protocol::runtime::{HealthResult, HealthSpec, HealthState, MAX_LOG, MAX_OUTPUT};
use wharf_protocol::shim::ExecSpec;

/// `<state_dir>/health.json`.
pub fn health_path(state_dir: &Path) -> PathBuf {
    state_dir.join("health.json")
}

/// The health state the shim of the container at `state_dir` last wrote; `None` when the
/// container has no healthcheck or the file is unreadable.
pub fn read_health(state_dir: &Path) -> Option<HealthState> {
    let bytes = std::fs::read(health_path(state_dir)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_health(state_dir: &Path, state: &HealthState) {
    let bytes = match serde_json::to_vec(state) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "encode health state");
            return;
        }
    };
    if let Err(e) = write_atomic(&health_path(state_dir), &bytes) {
        tracing::warn!(error = %e, "write health.json");
    }
}

/// Record `starting` in `state_dir`, keeping the results of an earlier run as Docker does;
/// called by the shim when the container starts, before it answers, so inspect never sees
/// a started container without its health.
pub fn reset_health(state_dir: &Path) {
    let mut state = read_health(state_dir).unwrap_or_default();
    state.status = "starting".to_string();
    state.failing_streak = 0;
    write_health(state_dir, &state);
}

/// Output of a check as Docker keeps it: lossy UTF-8 of at most [`MAX_OUTPUT`] bytes, with
/// `...` appended when there was more.
pub fn clip_output(mut out: Vec<u8>) -> String {
    let cut = out.len() > MAX_OUTPUT;
    out.truncate(MAX_OUTPUT);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if cut {
        text.push_str("...");
    }
    text
}

/// Run the check every interval while the container runs; called by the shim once the
/// container has started.
pub(super) async fn run(shim: Rc<Shim>, spec: HealthSpec) {
    let dir = shim.paths.dir().to_path_buf();
    let mut state = read_health(&dir).unwrap_or_default();
    let started = tokio::time::Instant::now();
    let start_period = Duration::from_nanos(spec.start_period_ns);
    let mut exited = shim.exited.subscribe();
    let mut n: u64 = 0;
    loop {
        let wait = spec.next_wait(started.elapsed(), &state.status);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = exited.wait_for(|e| *e) => return,
        }
        if shim.state.borrow().paused {
            continue;
        }
        n += 1;
        let exec = ExecSpec {
            exec_id: format!("health{n}"),
            args: spec.args.clone(),
            env: Vec::new(),
            working_dir: String::new(),
            user: String::new(),
            tty: false,
            stdin: false,
        };
        let start = rfc3339_nano(chrono::Utc::now());
        let in_start_period = started.elapsed() < start_period;
        let (exit_code, output) =
            match crate::runtime::exec::run_captured(&shim, &exec, spec.timeout()).await {
                Ok((Some(code), out)) => (code, clip_output(out)),
                Ok((None, out)) => {
                    let limit = format!("{}s", spec.timeout().as_secs_f64());
                    let out = clip_output(out);
                    if out.is_empty() {
                        (-1, format!("Health check exceeded timeout ({limit})"))
                    } else {
                        (
                            -1,
                            format!("Health check exceeded timeout ({limit}): {out}"),
                        )
                    }
                }
                Err(e) => (-1, crate::runtime::shim::error_chain(&e)),
            };
        if *shim.exited.borrow() {
            return;
        }
        let result = HealthResult {
            start,
            end: rfc3339_nano(chrono::Utc::now()),
            exit_code,
            output,
        };
        let before = state.status.clone();
        state.record(result, in_start_period, spec.retries());
        if state.status != before {
            tracing::info!(id = %shim.id, status = %state.status, "health status changed");
        }
        write_health(&dir, &state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: i32) -> HealthResult {
        HealthResult {
            start: "s".into(),
            end: "e".into(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn tests_become_argv() {
        let v = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            HealthSpec::args_from_test(&v(&["CMD", "true", "x"])),
            Some(v(&["true", "x"]))
        );
        assert_eq!(
            HealthSpec::args_from_test(&v(&["CMD-SHELL", "test -f /x"])),
            Some(v(&["/bin/sh", "-c", "test -f /x"]))
        );
        assert_eq!(HealthSpec::args_from_test(&v(&["NONE"])), None);
        assert_eq!(HealthSpec::args_from_test(&v(&["CMD"])), None);
        assert_eq!(HealthSpec::args_from_test(&[]), None);
    }

    #[test]
    fn status_follows_docker() {
        let mut s = HealthState::default();
        s.record(result(1), true, 2);
        assert_eq!((s.status.as_str(), s.failing_streak), ("starting", 0));
        s.record(result(1), false, 2);
        assert_eq!((s.status.as_str(), s.failing_streak), ("starting", 1));
        s.record(result(1), false, 2);
        assert_eq!((s.status.as_str(), s.failing_streak), ("unhealthy", 2));
        s.record(result(0), false, 2);
        assert_eq!((s.status.as_str(), s.failing_streak), ("healthy", 0));
        s.record(result(1), true, 2);
        assert_eq!(
            s.failing_streak, 1,
            "start period only shields a starting container"
        );
        for _ in 0..10 {
            s.record(result(0), false, 2);
        }
        assert_eq!(s.log.len(), MAX_LOG);
    }

    #[test]
    fn state_is_docker_json() {
        let mut s = HealthState::default();
        s.record(result(0), false, 3);
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["Status"], "healthy");
        assert_eq!(v["FailingStreak"], 0);
        assert_eq!(v["Log"][0]["ExitCode"], 0);
        assert_eq!(v["Log"][0]["Start"], "s");
        assert_eq!(
            clip_output(vec![b'a'; MAX_OUTPUT + 9]).len(),
            MAX_OUTPUT + 3
        );
        assert_eq!(clip_output(b"ok\n".to_vec()), "ok\n");
    }

    #[test]
    fn waits_follow_docker() {
        let s = HealthSpec {
            interval_ns: 10_000_000_000,
            start_period_ns: 30_000_000_000,
            start_interval_ns: 2_000_000_000,
            ..HealthSpec::default()
        };
        let secs = Duration::from_secs;
        assert_eq!(s.next_wait(secs(0), "starting"), secs(2));
        assert_eq!(s.next_wait(secs(0), "healthy"), secs(10));
        assert_eq!(s.next_wait(secs(25), "starting"), secs(5));
        assert_eq!(s.next_wait(secs(40), "starting"), secs(10));
        let plain = HealthSpec::default();
        assert_eq!(plain.next_wait(secs(0), "starting"), secs(30));
    }
}
