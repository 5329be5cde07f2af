//! Healthchecks and log options of containers, as Docker resolves them: the image's
//! `HEALTHCHECK` merged with `--health-*` at create ([`merge_healthcheck`]), the
//! `json-file` options checked at create ([`log_rotation`]), both turned into the shim's
//! options at start ([`Engine::shim_options`]); the shim runs the check and the engine
//! reads back its state for inspect, `docker ps` and `health_status` events.
//!
//! ```text
//!  create body + image config ─► merge_healthcheck ─► Config.Healthcheck (config_json)
//!  HostConfig.LogConfig ─► log_rotation (400 on bad opts)
//!  start ─► shim_options ─► shim.json ─► shim: health loop ─► health.json ─► inspect/ps/events
//! ```

use super::Engine;
use crate::engine::error::EngineError;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use wharf_protocol::runtime::{HealthSpec, HealthState, LogRotation, ShimOptions};
use wharf_protocol::state::{ContainerRecord, ContainerStatus};
use wharf_protocol::ContainerId;

/// How often a health watch checks that its container is still monitored (a local
/// check; the statuses themselves are pushed by the agent).
const MONITOR_CHECK: Duration = Duration::from_millis(500);

/// Durations of `Healthcheck`, with their names in Docker's messages.
const DURATIONS: [&str; 4] = ["Interval", "Timeout", "StartPeriod", "StartInterval"];

/// The container's `Healthcheck`: the create request's (`Config.Healthcheck`) merged with
/// the image's (`config.Healthcheck` of `image_config`) as Docker merges them, and
/// validated. `None` when neither has one.
pub fn merge_healthcheck(
    user: Option<&Value>,
    image_config: &[u8],
) -> Result<Option<Value>, EngineError> {
    let image: Option<Value> = serde_json::from_slice::<Value>(image_config)
        .ok()
        .and_then(|v| v.get("config").and_then(|c| c.get("Healthcheck")).cloned())
        .filter(Value::is_object);
    let user = user.filter(|v| v.is_object()).cloned();
    let merged = match (user, image) {
        (None, image) => image,
        (Some(user), None) => Some(user),
        (Some(mut user), Some(image)) => {
            if let Some(o) = user.as_object_mut() {
                let empty_test = o
                    .get("Test")
                    .and_then(Value::as_array)
                    .is_none_or(|t| t.is_empty());
                if empty_test {
                    o.insert(
                        "Test".into(),
                        image.get("Test").cloned().unwrap_or(Value::Null),
                    );
                }
                for key in DURATIONS.iter().copied().chain(["Retries"]) {
                    if o.get(key).and_then(Value::as_i64).unwrap_or(0) == 0 {
                        if let Some(v) = image.get(key) {
                            o.insert(key.into(), v.clone());
                        }
                    }
                }
            }
            Some(user)
        }
    };
    if let Some(h) = &merged {
        for key in DURATIONS {
            let v = h.get(key).and_then(Value::as_i64).unwrap_or(0);
            if v != 0 && v < 1_000_000 {
                return Err(EngineError::invalid(format!(
                    "{key} in Healthcheck cannot be less than 1ms"
                )));
            }
        }
        if h.get("Retries").and_then(Value::as_i64).unwrap_or(0) < 0 {
            return Err(EngineError::invalid(
                "Retries in Healthcheck cannot be negative",
            ));
        }
    }
    Ok(merged)
}

/// The check the shim runs for a stored `Config.Healthcheck`; `None` for `NONE` or no test.
pub fn health_spec(healthcheck: &Value) -> Option<HealthSpec> {
    let test: Vec<String> = serde_json::from_value(healthcheck.get("Test")?.clone()).ok()?;
    let ns = |k: &str| {
        healthcheck
            .get(k)
            .and_then(Value::as_i64)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    };
    Some(HealthSpec {
        args: HealthSpec::args_from_test(&test)?,
        interval_ns: ns("Interval"),
        timeout_ns: ns("Timeout"),
        start_period_ns: ns("StartPeriod"),
        start_interval_ns: ns("StartInterval"),
        retries: u32::try_from(ns("Retries")).unwrap_or(u32::MAX),
    })
}

/// A size as Docker's `units.RAMInBytes`: a number with an optional `b`, `k`, `m`, `g`,
/// `t`, `p` suffix (binary multiples, an optional trailing `b`/`ib`), case-insensitive.
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    let lower = s.trim().to_ascii_lowercase();
    let split = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(split);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(unit);
    let mult: f64 = match unit {
        "" | "b" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => return None,
    };
    Some((num * mult) as i64)
}

/// The json-file rotation of a create request's `HostConfig.LogConfig`, refusing what
/// Docker refuses: another driver, an unknown option, a bad `max-size` or `max-file`.
pub fn log_rotation(host_config: &Value) -> Result<LogRotation, EngineError> {
    let Some(lc) = host_config.get("LogConfig").filter(|v| v.is_object()) else {
        return Ok(LogRotation::default());
    };
    let driver = lc.get("Type").and_then(Value::as_str).unwrap_or("");
    if !driver.is_empty() && driver != "json-file" {
        return Err(EngineError::invalid(format!(
            "logger: no log driver named '{driver}' is registered"
        )));
    }
    let opts: std::collections::BTreeMap<String, String> = match lc.get("Config") {
        None | Some(Value::Null) => Default::default(),
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| EngineError::invalid(format!("invalid LogConfig.Config: {e}")))?,
    };
    let mut rotation = LogRotation {
        max_size: 0,
        max_file: 1,
    };
    for (key, value) in &opts {
        match key.as_str() {
            // `-1` is Docker's "no limit".
            "max-size" if value.trim() == "-1" => rotation.max_size = 0,
            "max-size" => {
                let size = ram_in_bytes(value)
                    .ok_or_else(|| EngineError::invalid(format!("invalid size: '{value}'")))?;
                if size <= 0 {
                    return Err(EngineError::invalid("max-size must be a positive number"));
                }
                rotation.max_size = u64::try_from(size).unwrap_or(0);
            }
            "max-file" => {
                let n: i64 = value.parse().map_err(|_| {
                    EngineError::invalid(format!(
                        "strconv.Atoi: parsing \"{value}\": invalid syntax"
                    ))
                })?;
                if n < 1 {
                    return Err(EngineError::invalid("max-file cannot be less than 1"));
                }
                rotation.max_file = u32::try_from(n).unwrap_or(u32::MAX);
            }
            "compress" | "labels" | "labels-regex" | "env" | "env-regex" | "tag" => {}
            other => {
                return Err(EngineError::invalid(format!(
                    "unknown log opt '{other}' for json-file log driver"
                )))
            }
        }
    }
    Ok(rotation)
}

/// The `docker ps` STATUS suffix of a health status.
pub fn status_suffix(status: &str) -> String {
    match status {
        "starting" => " (health: starting)".to_string(),
        other => format!(" ({other})"),
    }
}

impl Engine {
    /// The shim's options for a container about to start: log rotation and healthcheck.
    pub(crate) fn shim_options(&self, c: &ContainerRecord) -> ShimOptions {
        let config: Value = serde_json::from_str(&c.config_json).unwrap_or_else(|_| json!({}));
        let host_config: Value =
            serde_json::from_str(&c.host_config_json).unwrap_or_else(|_| json!({}));
        ShimOptions {
            // Checked at create; a record that no longer parses rotates nothing.
            log: log_rotation(&host_config).unwrap_or_default(),
            health: config.get("Healthcheck").and_then(health_spec),
            netns: Default::default(),
            init: host_config.get("Init").and_then(Value::as_bool) == Some(true),
        }
    }

    /// The health state the container's shim last recorded (`.State.Health`).
    pub async fn health(&self, id: &ContainerId) -> Option<HealthState> {
        let node = self.node_of(id).ok()?;
        match self.agents.health(&node, id).await {
            Ok(h) => h,
            Err(e) => {
                tracing::debug!(container = %id.short(), error = %e, "health not read");
                None
            }
        }
    }

    /// The health of every running container that has a healthcheck.
    pub async fn health_of_running(&self) -> std::collections::HashMap<ContainerId, HealthState> {
        let ids: Vec<ContainerId> = self.store.read(|s| {
            s.containers
                .values()
                .filter(|c| c.status == ContainerStatus::Running)
                .map(|c| c.id.clone())
                .collect()
        });
        let mut out = std::collections::HashMap::new();
        for id in ids {
            let has_check = self
                .container(id.as_str())
                .is_ok_and(|c| self.shim_options(&c).health.is_some());
            if has_check {
                if let Some(h) = self.health(&id).await {
                    out.insert(id, h);
                }
            }
        }
        out
    }

    /// Emit `health_status: <status>` events while a container with a healthcheck is
    /// monitored; called when the engine starts monitoring a container (start,
    /// live-restore).
    pub(crate) fn watch_health(self: &Arc<Self>, id: ContainerId) {
        let has_check = self
            .container(id.as_str())
            .is_ok_and(|c| self.shim_options(&c).health.is_some());
        if !has_check {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let still_monitored = || {
                engine
                    .monitored
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&id)
            };
            // The agent pushes each change; nothing polls across the connection.
            let Ok(node) = engine.node_of(&id) else {
                return;
            };
            let mut watch = match engine.agents.watch_health(&node, &id).await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(container = %id.short(), error = %e, "health not watched");
                    return;
                }
            };
            let mut last: Option<String> = None;
            loop {
                let status = tokio::select! {
                    next = watch.next() => match next {
                        Ok(Some(status)) => status,
                        Ok(None) | Err(_) => return,
                    },
                    // The container stopped: its monitor is gone; the watch ends with it.
                    _ = tokio::time::sleep(MONITOR_CHECK) => {
                        if still_monitored() {
                            continue;
                        }
                        return;
                    }
                };
                if !still_monitored() {
                    return;
                }
                let first = last.is_none();
                if last.as_deref() == Some(status.as_str()) {
                    continue;
                }
                last = Some(status.clone());
                // The initial `starting` is not an event in Docker; every change after is.
                if first && status == "starting" {
                    continue;
                }
                tracing::info!(container = %id.short(), %status, "health status");
                if let Ok(c) = engine.container(id.as_str()) {
                    engine.emit_container(&c, &format!("health_status: {status}"), &[]);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthchecks_merge_like_docker() {
        let image = br#"{"config":{"Healthcheck":{"Test":["CMD-SHELL","true"],"Interval":5000000000,"Retries":2}}}"#;
        let merged = merge_healthcheck(None, image).unwrap().unwrap();
        assert_eq!(merged["Test"], json!(["CMD-SHELL", "true"]));
        let user = json!({"Test": [], "Interval": 1_000_000_000});
        let merged = merge_healthcheck(Some(&user), image).unwrap().unwrap();
        assert_eq!(merged["Test"], json!(["CMD-SHELL", "true"]));
        assert_eq!(merged["Interval"], json!(1_000_000_000));
        assert_eq!(merged["Retries"], json!(2));
        let none = json!({"Test": ["NONE"]});
        let merged = merge_healthcheck(Some(&none), image).unwrap().unwrap();
        assert!(health_spec(&merged).is_none());
        assert!(merge_healthcheck(None, b"{}").unwrap().is_none());
        let bad = json!({"Test": ["CMD", "true"], "Interval": 500});
        let e = merge_healthcheck(Some(&bad), b"{}").unwrap_err();
        assert!(e
            .to_string()
            .contains("Interval in Healthcheck cannot be less than 1ms"));
    }

    #[test]
    fn specs_carry_durations() {
        let h = json!({"Test": ["CMD", "true"], "Interval": 2_000_000_000, "Retries": 4});
        let s = health_spec(&h).unwrap();
        assert_eq!(s.args, vec!["true".to_string()]);
        assert_eq!(s.interval_ns, 2_000_000_000);
        assert_eq!(s.retries, 4);
    }

    #[test]
    fn log_opts_are_checked_like_docker() {
        let lc = |cfg: Value| json!({"LogConfig": {"Type": "json-file", "Config": cfg}});
        let r = log_rotation(&lc(json!({"max-size": "1k", "max-file": "3"}))).unwrap();
        assert_eq!((r.max_size, r.max_file), (1024, 3));
        assert_eq!(log_rotation(&json!({})).unwrap(), LogRotation::default());
        let e = log_rotation(&lc(json!({"max-size": "abc"}))).unwrap_err();
        assert!(e.to_string().contains("invalid size: 'abc'"), "{e}");
        let e = log_rotation(&lc(json!({"bogus": "1"}))).unwrap_err();
        assert!(e
            .to_string()
            .contains("unknown log opt 'bogus' for json-file log driver"));
        let e = log_rotation(&lc(json!({"max-file": "0"}))).unwrap_err();
        assert!(e.to_string().contains("max-file cannot be less than 1"));
        let e = log_rotation(&json!({"LogConfig": {"Type": "syslog"}})).unwrap_err();
        assert!(e.to_string().contains("no log driver named 'syslog'"));
        let r = log_rotation(&lc(json!({"max-size": "-1"}))).unwrap();
        assert_eq!(r.max_size, 0);
        let e = log_rotation(&lc(json!({"max-size": "0"}))).unwrap_err();
        assert!(e.to_string().contains("max-size must be a positive number"));
        assert_eq!(ram_in_bytes("10MB"), Some(10 << 20));
        assert_eq!(ram_in_bytes("2kib"), Some(2048));
        assert_eq!(ram_in_bytes("100"), Some(100));
        assert_eq!(ram_in_bytes("x"), None);
    }

    #[test]
    fn ps_suffixes() {
        assert_eq!(status_suffix("starting"), " (health: starting)");
        assert_eq!(status_suffix("healthy"), " (healthy)");
    }
}
