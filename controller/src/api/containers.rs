//! Container routes: create, list, inspect, start, stop, kill, wait, remove.

use super::error::ApiError;
use super::http::{json, json_bytes, read_body, status, streaming, Query, Resp};
use crate::docker_types::parse_signal;
use crate::engine::{now_ns, Engine, WaitCondition};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;
use wharf_protocol::runtime::HealthState;
use wharf_protocol::state::{ClusterState, ContainerRecord, ContainerStatus};
use wharf_protocol::NodeId;

/// Docker's zero time, for times that never happened.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 with nanoseconds, as Docker formats times; the zero time for 0.
pub fn rfc3339(ns: i64) -> String {
    if ns == 0 {
        return ZERO_TIME.to_string();
    }
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// go-units' `HumanDuration`, which `docker ps` shows in STATUS.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (m, h) = (s / 60, s / 3600);
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if m == 1 {
        "About a minute".into()
    } else if m < 60 {
        format!("{m} minutes")
    } else if (h as f64) < 1.5 {
        "About an hour".into()
    } else if h < 48 {
        format!("{h} hours")
    } else if h < 24 * 7 * 2 {
        format!("{} days", h / 24)
    } else if h < 24 * 30 * 2 {
        format!("{} weeks", h / 24 / 7)
    } else if h < 24 * 365 * 2 {
        format!("{} months", h / 24 / 30)
    } else {
        format!("{} years", h / 24 / 365)
    }
}

/// The STATUS column of `docker ps` for a container, at time `now`.
pub fn status_text(c: &ContainerRecord, now: i64) -> String {
    let since = |t: i64| human_duration((now - t) / 1_000_000_000);
    match c.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => format!("Up {}", since(c.started_ns)),
        ContainerStatus::Paused => format!("Up {} (Paused)", since(c.started_ns)),
        ContainerStatus::Exited => format!("Exited ({}) {} ago", c.exit_code, since(c.finished_ns)),
        ContainerStatus::Dead => "Dead".into(),
    }
}

/// `POST /containers/create?name=`.
pub async fn create(engine: &Engine, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let name = q.get("name").map(str::to_string);
    let body = read_body(req.into_body()).await?;
    let id = engine.create_container(name.as_deref(), &body).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": id.as_str(), "Warnings": []}),
    ))
}

/// Whether `c` was running on a node now Down: nobody can say how it is.
fn on_down_node(state: &ClusterState, c: &ContainerRecord) -> bool {
    matches!(
        c.status,
        wharf_protocol::state::ContainerStatus::Running
            | wharf_protocol::state::ContainerStatus::Paused
    ) && state
        .nodes
        .get(&c.node)
        .is_some_and(|n| n.state == wharf_protocol::node_state::NodeState::Down)
}

fn list_entry(state: &ClusterState, c: &ContainerRecord, now: i64) -> serde_json::Value {
    let labels: serde_json::Value = serde_json::from_str::<serde_json::Value>(&c.config_json)
        .ok()
        .and_then(|v| v.get("Labels").cloned())
        .filter(|l| l.is_object())
        .unwrap_or_else(|| json!({}));
    json!({
        "Id": c.id.as_str(),
        "Names": [crate::engine::network::shown_container_name(state, c)],
        "Image": c.image_ref,
        "ImageID": c.run.image_id.to_string(),
        "Command": c.run.args.join(" "),
        "Created": c.created_ns / 1_000_000_000,
        "Ports": crate::engine::network::ps_ports_json(state, c),
        "Labels": labels,
        "State": super::ps::shown_status(state, c),
        "Status": if on_down_node(state, c) {
            // Classic Swarm's word for a container whose node cannot be asked.
            "unknown (node down)".to_string()
        } else if super::ps::is_restarting(state, c) {
            // moby `State.String` while restarting.
            format!(
                "Restarting ({}) {} ago",
                c.exit_code,
                human_duration((now - c.finished_ns) / 1_000_000_000)
            )
        } else {
            status_text(c, now)
        },
        "HostConfig": {"NetworkMode": crate::engine::network::mode_of(c).shown()},
        "NetworkSettings": {"Networks": crate::engine::network::ps_networks_json(state, c)},
        "Mounts": [],
    })
}

/// `GET /containers/json?all=&limit=&filters=` (the selection is [`super::ps::select`]).
pub async fn list(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let all = q.bool("all");
    let limit = q.int("limit")?;
    let filters = super::http::Filters::parse(q.get("filters"))?;
    let now = now_ns();
    let healths = engine.health_of_running().await;
    let body = engine.store().read(|s| -> Result<Vec<u8>, ApiError> {
        let health = |c: &ContainerRecord| -> String {
            match c.status {
                ContainerStatus::Running => healths
                    .get(&c.id)
                    .map(|h| h.status.clone())
                    .unwrap_or_else(|| "none".to_string()),
                _ => "none".to_string(),
            }
        };
        let items = super::ps::select(s, &filters, all, limit, &health)?;
        // Written entry by entry: the whole list as one tree of JSON values took several
        // times its bytes (100,000 containers: gigabytes on the controller serving it).
        let mut out = Vec::with_capacity(2 + items.len() * 512);
        out.push(b'[');
        for (i, c) in items.into_iter().enumerate() {
            let mut entry = list_entry(s, c, now);
            add_health_status(&healths, &mut entry);
            if i > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, &entry)
                .map_err(|e| ApiError::internal(format!("encode the container list: {e}")))?;
        }
        out.push(b']');
        Ok(out)
    })?;
    Ok(json_bytes(StatusCode::OK, body))
}

/// Append `(healthy)`, `(health: starting)` or `(unhealthy)` to the STATUS of a running
/// container with a healthcheck, as `docker ps` shows it.
fn add_health_status(
    healths: &std::collections::HashMap<wharf_protocol::ContainerId, HealthState>,
    entry: &mut serde_json::Value,
) {
    let up = entry["State"] == "running";
    let Some(id) = entry["Id"].as_str().filter(|_| up) else {
        return;
    };
    let Ok(id) = id.parse::<wharf_protocol::ContainerId>() else {
        return;
    };
    if let (Some(h), Some(text)) = (healths.get(&id), entry["Status"].as_str()) {
        let status = format!("{text}{}", crate::engine::health::status_suffix(&h.status));
        entry["Status"] = json!(status);
    }
}

/// `GET /containers/{id}/json`.
pub async fn inspect(engine: &Engine, reference: &str) -> Result<Resp, ApiError> {
    let c = engine.container(reference)?;
    let health = engine.health(&c.id).await;
    // Paths, PID and network namespace are host facts: the agent's, not the state's.
    let local = engine
        .agents()
        .local(&c.node, &c.id)
        .await
        .unwrap_or_default();
    let state_dir = std::path::Path::new(&local.state_dir);
    let mut config: serde_json::Value =
        serde_json::from_str(&c.config_json).unwrap_or_else(|_| json!({}));
    let mut host_config: serde_json::Value =
        serde_json::from_str(&c.host_config_json).unwrap_or_else(|_| json!({}));
    if let Some(o) = config.as_object_mut() {
        o.insert("Image".into(), json!(c.image_ref));
        o.insert("Env".into(), json!(c.run.env));
        o.insert("WorkingDir".into(), json!(c.run.working_dir));
        o.insert("Hostname".into(), json!(c.run.hostname));
        o.insert("User".into(), json!(c.run.user));
        o.insert("Tty".into(), json!(c.run.tty));
        o.insert("OpenStdin".into(), json!(c.run.open_stdin));
        o.entry("Labels").or_insert_with(|| json!({}));
        o.entry("Cmd").or_insert(serde_json::Value::Null);
        o.entry("Entrypoint").or_insert(serde_json::Value::Null);
    }
    if let Some(o) = host_config.as_object_mut() {
        let log_opts = o
            .get("LogConfig")
            .and_then(|l| l.get("Config"))
            .filter(|c| c.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        o.insert(
            "LogConfig".into(),
            json!({"Type": "json-file", "Config": log_opts}),
        );
        o.entry("NetworkMode").or_insert(json!("bridge"));
        o.entry("AutoRemove").or_insert(json!(c.auto_remove));
        o.entry("RestartPolicy")
            .or_insert(json!({"Name": "no", "MaximumRetryCount": 0}));
    }
    // As Docker: a paused container is still running, and so is a restarting one.
    let restarting = c.status == ContainerStatus::Exited && engine.restart_state(&c.id).restarting;
    let live = matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused);
    let running = live || restarting;
    // A process the state no longer counts as running (it exited, its exit not yet
    // cleaned up) shows no PID, as before.
    let (pid, sandbox_key) = if live {
        (local.pid, local.sandbox_key.as_str())
    } else {
        (0, "")
    };
    Ok(json(
        StatusCode::OK,
        &json!({
            "Id": c.id.as_str(),
            "Created": rfc3339(c.created_ns),
            "Path": c.run.args.first().cloned().unwrap_or_default(),
            "Args": c.run.args.get(1..).unwrap_or_default(),
            "State": {
                "Status": if restarting { "restarting" } else { c.status.as_str() },
                "Running": running,
                "Paused": c.status == ContainerStatus::Paused,
                "Restarting": restarting,
                "OOMKilled": c.oom_killed,
                "Dead": c.status == ContainerStatus::Dead,
                "Pid": pid,
                "ExitCode": c.exit_code,
                "Error": c.error,
                "StartedAt": rfc3339(c.started_ns),
                "FinishedAt": rfc3339(c.finished_ns),
                "Health": health,
            },
            "Image": c.run.image_id.to_string(),
            "ResolvConfPath": state_dir.join("resolv.conf").display().to_string(),
            "HostnamePath": state_dir.join("hostname").display().to_string(),
            "HostsPath": state_dir.join("hosts").display().to_string(),
            "LogPath": local.log_path,
            "Name": format!("/{}", c.name),
            "RestartCount": engine.restart_state(&c.id).count,
            "Driver": "overlay2",
            "Platform": "linux",
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": Some(engine.exec_ids(&c.id)).filter(|v| !v.is_empty()),
            "HostConfig": host_config,
            "GraphDriver": {"Name": "overlay2", "Data": {"WorkDir": state_dir.display().to_string()}},
            "Mounts": engine.mounts_json(&c),
            "Config": config,
            "NetworkSettings": engine.network_settings(&c, sandbox_key),
            "Node": engine.store().read(|s| node_json(s, c.node)),
        }),
    ))
}

/// The `Node` of a container's inspect, as classic Swarm showed it (`ID`, `IP`, `Addr`,
/// `Name`, `Cpus`, `Memory`, `Labels`), from the node's record; only the ID when the
/// node is not recorded.
pub fn node_json(s: &ClusterState, node: NodeId) -> serde_json::Value {
    let Some(n) = s.nodes.get(&node) else {
        return json!({"ID": node.to_string(), "IP": "", "Addr": "", "Name": "", "Cpus": 0, "Memory": 0, "Labels": {}});
    };
    let addr = &n.description.addr;
    let ip = addr
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip().to_string())
        .or_else(|_| addr.parse::<std::net::IpAddr>().map(|a| a.to_string()))
        .unwrap_or_else(|_| {
            addr.rsplit_once(':')
                .map_or(addr.as_str(), |(h, _)| h)
                .to_string()
        });
    json!({
        "ID": node.to_string(),
        "IP": ip,
        "Addr": addr,
        "Name": n.description.hostname,
        "Cpus": n.description.cpus,
        "Memory": n.description.memory,
        "Labels": n.labels,
    })
}

/// `POST /containers/{id}/start`: 204, or 304 when already running.
pub async fn start(engine: &Arc<Engine>, reference: &str) -> Result<Resp, ApiError> {
    engine.start_manual(reference).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// The `t` (or `timeout`) and `signal` query parameters of stop and restart.
fn stop_params(req: &Request<Incoming>) -> Result<(Option<i64>, Option<i32>), ApiError> {
    let q = Query::parse(req.uri().query());
    let timeout = q.int("t")?.or(q.int("timeout")?);
    let signal = match q.get("signal").filter(|s| !s.is_empty()) {
        None => None,
        Some(s) => Some(
            parse_signal(s).ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {s}")))?,
        ),
    };
    Ok((timeout, signal))
}

/// `POST /containers/{id}/stop?t=&signal=`.
pub async fn stop(
    engine: &Engine,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (timeout, signal) = stop_params(req)?;
    engine.stop(reference, timeout, signal).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(
    engine: &Engine,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let s = q
        .get("signal")
        .filter(|s| !s.is_empty())
        .unwrap_or("SIGKILL");
    let signal =
        parse_signal(s).ok_or_else(|| ApiError::bad_request(format!("Invalid signal: {s}")))?;
    engine.kill(reference, signal).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/wait?condition=`: headers at once, the body when the
/// condition holds (the CLI calls this before start and blocks on the headers).
pub fn wait(
    engine: Arc<Engine>,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let condition = match q.get("condition").unwrap_or("") {
        "" | "not-running" => WaitCondition::NotRunning,
        "next-exit" => WaitCondition::NextExit,
        "removed" => WaitCondition::Removed,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid condition: \"{other}\""
            )))
        }
    };
    let c = engine.container(reference)?;
    let (out, resp) = streaming("application/json");
    tokio::spawn(async move {
        // A client that goes away ends the wait (no task left behind per dropped wait).
        let result = tokio::select! {
            r = engine.wait(&c.id, condition) => r,
            _ = out.closed() => return,
        };
        let body = match result {
            Ok(code) => json!({"StatusCode": code, "Error": null}),
            Err(e) => json!({"StatusCode": -1, "Error": {"Message": e.message}}),
        };
        let mut line = body.to_string();
        line.push('\n');
        let _ = out.send(bytes::Bytes::from(line)).await;
    });
    Ok(resp)
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn remove(
    engine: &Engine,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    // `-v`: the anonymous volumes go with the container.
    let record = if q.bool("v") {
        engine.container(reference).ok()
    } else {
        None
    };
    engine.remove(reference, q.bool("force")).await?;
    if let Some(c) = record {
        engine.remove_anonymous_volumes(&c).await;
    }
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/restart?t=&signal=`.
pub async fn restart(
    engine: &Arc<Engine>,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let (timeout, signal) = stop_params(req)?;
    engine.restart(reference, timeout, signal).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/pause` (`freeze`) and `POST /containers/{id}/unpause`.
pub async fn pause(engine: &Engine, reference: &str, freeze: bool) -> Result<Resp, ApiError> {
    engine.pause(reference, freeze).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(
    engine: &Engine,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    engine
        .rename(reference, q.get("name").unwrap_or(""))
        .await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `GET /containers/{id}/top?ps_args=`.
pub async fn top(
    engine: &Engine,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let (titles, processes) = engine
        .top(reference, q.get("ps_args").unwrap_or(""))
        .await?;
    Ok(json(
        StatusCode::OK,
        &json!({"Titles": titles, "Processes": processes}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(3 * 86400), "3 days");
    }

    #[test]
    fn times_are_rfc3339_nanos() {
        assert_eq!(rfc3339(0), "0001-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_500_000_000_123_456_789),
            "2017-07-14T02:40:00.123456789Z"
        );
    }
}
