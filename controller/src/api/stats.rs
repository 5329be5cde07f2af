//! `GET /containers/{id}/stats`: cgroup counters in Docker's JSON shape (cgroup v1
//! fields), once (`stream=0`, with a second sample so that `precpu_stats` is filled as
//! Docker fills it) or every second.

use super::containers::rfc3339;
use super::error::ApiError;
use super::http::{json, json_line, streaming, Query, Resp};
use crate::engine::{now_ns, Engine};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use wharf_protocol::runtime::CgroupSample;
use wharf_protocol::state::{ContainerRecord, ContainerStatus};

/// Time between the two samples of a one-off reading, and between streamed readings.
const INTERVAL: Duration = Duration::from_secs(1);

fn cpu_json(s: &CgroupSample) -> Value {
    json!({
        "cpu_usage": {
            "total_usage": s.cpu_total_ns,
            "percpu_usage": s.cpu_percpu_ns,
            "usage_in_kernelmode": s.cpu_kernel_ns,
            "usage_in_usermode": s.cpu_user_ns,
        },
        "system_cpu_usage": s.system_cpu_ns,
        "online_cpus": s.online_cpus,
        "throttling_data": {
            "periods": s.cpu_throttling.get("nr_periods").copied().unwrap_or(0),
            "throttled_periods": s.cpu_throttling.get("nr_throttled").copied().unwrap_or(0),
            "throttled_time": s.cpu_throttling.get("throttled_time").copied().unwrap_or(0),
        },
    })
}

/// One stats object: `cur` read at `read_ns`, `pre` (if any) at `pre_ns`. Pure.
pub fn stats_json(
    c: &ContainerRecord,
    cur: &CgroupSample,
    read_ns: i64,
    pre: Option<(&CgroupSample, i64)>,
) -> Value {
    let empty_cpu = json!({
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    });
    let (precpu, preread) = match pre {
        Some((p, at)) => (cpu_json(p), rfc3339(at)),
        None => (empty_cpu, rfc3339(0)),
    };
    let mut pids = json!({"current": cur.pids_current});
    if let Some(l) = cur.pids_limit {
        pids["limit"] = json!(l);
    }
    json!({
        "name": format!("/{}", c.name),
        "id": c.id.as_str(),
        "read": rfc3339(read_ns),
        "preread": preread,
        "pids_stats": pids,
        "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": cpu_json(cur),
        "precpu_stats": precpu,
        "memory_stats": {
            "usage": cur.memory_usage,
            "max_usage": cur.memory_max_usage,
            "stats": cur.memory_stat,
            "failcnt": cur.memory_failcnt,
            "limit": cur.memory_limit,
        },
    })
}

/// A reading of a container that does not run: Docker's zeroed object.
fn stopped_json(c: &ContainerRecord) -> Value {
    json!({
        "name": format!("/{}", c.name),
        "id": c.id.as_str(),
        "read": rfc3339(0),
        "preread": rfc3339(0),
        "pids_stats": {},
        "blkio_stats": {},
        "num_procs": 0,
        "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0}, "throttling_data": {}},
        "memory_stats": {},
    })
}

/// `GET /containers/{id}/stats?stream=&one-shot=`.
pub async fn stats(
    engine: Arc<Engine>,
    reference: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let stream = q.get("stream").is_none() || q.bool("stream");
    let one_shot = q.bool("one-shot");
    let c = engine.container(reference)?;
    let running = c.status == ContainerStatus::Running;
    if !stream {
        if !running {
            return Ok(json(StatusCode::OK, &stopped_json(&c)));
        }
        let first = engine.agents().stats(&c.node, &c.id).await?;
        let first_at = now_ns();
        if one_shot {
            return Ok(json(
                StatusCode::OK,
                &stats_json(&c, &first, first_at, None),
            ));
        }
        tokio::time::sleep(INTERVAL).await;
        let cur = engine.agents().stats(&c.node, &c.id).await?;
        let body = stats_json(&c, &cur, now_ns(), Some((&first, first_at)));
        return Ok(json(StatusCode::OK, &body));
    }
    let (out, resp) = streaming("application/json");
    tokio::spawn(async move {
        let mut pre: Option<(CgroupSample, i64)> = None;
        loop {
            let Ok(c) = engine.container(c.id.as_str()) else {
                return;
            };
            let body = if c.status == ContainerStatus::Running {
                // An agent that cannot be reached ends the stream.
                let Ok(cur) = engine.agents().stats(&c.node, &c.id).await else {
                    return;
                };
                let at = now_ns();
                let body = stats_json(&c, &cur, at, pre.as_ref().map(|(p, t)| (p, *t)));
                pre = Some((cur, at));
                body
            } else {
                pre = None;
                stopped_json(&c)
            };
            if out.send(json_line(&body)).await.is_err() {
                return;
            }
            tokio::time::sleep(INTERVAL).await;
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::{Digest, ImageId};

    fn record() -> ContainerRecord {
        let mut c = wharf_protocol::fixtures::container(3, "web");
        c.run.image_id = ImageId(Digest([1; 32]));
        c.status = ContainerStatus::Running;
        c.started_ns = 1;
        c
    }

    #[test]
    fn docker_shape() {
        let cur = CgroupSample {
            memory_usage: 1000,
            memory_limit: 4096,
            cpu_total_ns: 50,
            system_cpu_ns: 900,
            online_cpus: 2,
            pids_current: 3,
            pids_limit: Some(20),
            ..Default::default()
        };
        let pre = CgroupSample {
            cpu_total_ns: 10,
            system_cpu_ns: 100,
            ..cur.clone()
        };
        let j = stats_json(&record(), &cur, 2_000_000_000, Some((&pre, 1_000_000_000)));
        assert_eq!(j["name"], "/web");
        assert_eq!(j["memory_stats"]["usage"], 1000);
        assert_eq!(j["memory_stats"]["limit"], 4096);
        assert_eq!(j["cpu_stats"]["cpu_usage"]["total_usage"], 50);
        assert_eq!(j["precpu_stats"]["cpu_usage"]["total_usage"], 10);
        assert_eq!(j["precpu_stats"]["system_cpu_usage"], 100);
        assert_eq!(j["cpu_stats"]["online_cpus"], 2);
        assert_eq!(j["pids_stats"], json!({"current": 3, "limit": 20}));
        assert_eq!(j["read"], "1970-01-01T00:00:02.000000000Z");
        let j = stats_json(&record(), &cur, 5, None);
        assert_eq!(j["preread"], "0001-01-01T00:00:00Z");
    }
}
