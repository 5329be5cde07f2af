//! `GET /events`: the engine's events as Docker streams them.
//!
//! ```text
//!  EventBus ──(recent ring, since..until)──┐
//!           ──(live broadcast)─────────────┴─► filter ─► JSON line per event (chunked)
//! ```
//!
//! The stream ends at `until` (at once after the replay when `until` is in the past) or
//! when the client goes away.

use super::error::ApiError;
use super::http::{parse_timestamp, streaming, Filters, Query, Resp};
use crate::engine::events::{Event, EventType};
use crate::engine::{now_ns, Engine};
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

/// Filter keys `GET /events` accepts (moby's list).
const ACCEPTED_FILTERS: &[&str] = &[
    "config",
    "container",
    "daemon",
    "event",
    "image",
    "label",
    "network",
    "node",
    "plugin",
    "scope",
    "secret",
    "service",
    "type",
    "volume",
];

/// `busybox:latest` → `busybox`; IDs and names without a tag are returned unchanged.
fn strip_tag(reference: &str) -> &str {
    let last_slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[last_slash..].rfind(':') {
        Some(i) => &reference[..last_slash + i],
        None => reference,
    }
}

/// Whether `ev` passes `f`, with moby's rules (`daemon/events/filter.go`): `container`
/// matches the ID or name by prefix, `image` the image (with or without tag) of a
/// container event or the ID/name of an image event, `event` the action (by prefix for
/// `exec_*` and `health_status`), `label` the attributes.
pub fn matches(f: &Filters, ev: &Event) -> bool {
    let name = ev.attributes.get("name").map(String::as_str).unwrap_or("");
    let fuzzy_actor = |key: &str, kind: EventType| {
        !f.contains(key)
            || (ev.kind == kind && (f.fuzzy_match(key, &ev.actor_id) || f.fuzzy_match(key, name)))
    };
    let action_ok = if f
        .values("event")
        .any(|v| matches!(v, "exec_create" | "exec_start" | "health_status"))
    {
        f.fuzzy_match("event", &ev.action)
    } else {
        f.exact_match("event", &ev.action)
    };
    let image_ok = !f.contains("image") || {
        let image_name = match ev.kind {
            EventType::Image => name,
            _ => ev.attributes.get("image").map(String::as_str).unwrap_or(""),
        };
        [
            ev.actor_id.as_str(),
            image_name,
            strip_tag(&ev.actor_id),
            strip_tag(image_name),
        ]
        .iter()
        .any(|c| !c.is_empty() && f.values("image").any(|v| v == *c))
    };
    action_ok
        && f.exact_match("type", ev.kind.as_str())
        && f.exact_match("scope", "local")
        && fuzzy_actor("container", EventType::Container)
        && fuzzy_actor("volume", EventType::Volume)
        && fuzzy_actor("network", EventType::Network)
        && fuzzy_actor("daemon", EventType::Daemon)
        && !["plugin", "service", "node", "secret", "config"]
            .iter()
            .any(|k| f.contains(k))
        && image_ok
        && f.match_kv_list("label", &ev.attributes)
}

/// One event as Docker's JSON (`events.Message`), with the legacy `status`/`id`/`from`.
pub fn to_json(ev: &Event) -> serde_json::Value {
    let mut v = json!({
        "Type": ev.kind.as_str(),
        "Action": ev.action,
        "Actor": {"ID": ev.actor_id, "Attributes": ev.attributes},
        "scope": "local",
        "time": ev.time_ns.div_euclid(1_000_000_000),
        "timeNano": ev.time_ns,
    });
    if matches!(ev.kind, EventType::Container | EventType::Image) {
        if let Some(o) = v.as_object_mut() {
            o.insert("status".into(), json!(ev.action));
            o.insert("id".into(), json!(ev.actor_id));
            if let Some(from) = ev
                .attributes
                .get("image")
                .filter(|_| ev.kind == EventType::Container)
            {
                o.insert("from".into(), json!(from));
            }
        }
    }
    v
}

fn line(ev: &Event) -> Bytes {
    let mut s = to_json(ev).to_string();
    s.push('\n');
    Bytes::from(s)
}

/// `GET /events?since=&until=&filters=`.
pub fn events(engine: Arc<Engine>, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let filters = Filters::parse(q.get("filters"))?;
    filters.validate(ACCEPTED_FILTERS)?;
    let ts = |key: &str| match q.get(key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => parse_timestamp(key, v).map(Some),
    };
    let (since, until) = (ts("since")?, ts("until")?);
    if let (Some(s), Some(u)) = (since, until) {
        if u < s {
            return Err(ApiError::bad_request(
                "`since` time cannot be after `until` time",
            ));
        }
    }
    let now = now_ns();
    let (recent, mut live) = engine.events().subscribe();
    let replay: Vec<Event> = if since.is_none() && until.is_none() {
        vec![]
    } else {
        recent
            .into_iter()
            .filter(|e| e.time_ns >= since.unwrap_or(0) && until.is_none_or(|u| e.time_ns <= u))
            .filter(|e| matches(&filters, e))
            .collect()
    };
    let (out, resp) = streaming("application/json");
    tokio::spawn(async move {
        for e in &replay {
            if out.send(line(e)).await.is_err() {
                return;
            }
        }
        let end = match until {
            Some(u) if u <= now => return,
            Some(u) => tokio::time::Instant::now() + Duration::from_nanos((u - now) as u64),
            // Far enough to never fire; tokio clamps it.
            None => tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400),
        };
        loop {
            tokio::select! {
                r = live.recv() => match r {
                    Ok(e) => {
                        if until.is_some_and(|u| e.time_ns > u) {
                            return;
                        }
                        if since.is_some_and(|s| e.time_ns < s) {
                            continue;
                        }
                        if matches(&filters, &e) && out.send(line(&e)).await.is_err() {
                            return;
                        }
                    }
                    Err(RecvError::Lagged(n)) => debug!(lost = n, "events subscriber fell behind"),
                    Err(RecvError::Closed) => return,
                },
                _ = tokio::time::sleep_until(end) => return,
                _ = out.closed() => return,
            }
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn container(action: &str, id: &str, name: &str, image: &str) -> Event {
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), name.to_string());
        attributes.insert("image".to_string(), image.to_string());
        attributes.insert("tier".to_string(), "web".to_string());
        Event {
            origin: None,
            kind: EventType::Container,
            action: action.into(),
            actor_id: id.into(),
            attributes,
            time_ns: 1_700_000_000_500_000_000,
        }
    }

    fn f(json: &str) -> Filters {
        Filters::parse(Some(json)).unwrap()
    }

    #[test]
    fn filters_select_like_docker() {
        let ev = container("die", "abcdef", "web1", "busybox:latest");
        assert!(matches(&Filters::default(), &ev));
        assert!(matches(&f(r#"{"type":["container"]}"#), &ev));
        assert!(!matches(&f(r#"{"type":["image"]}"#), &ev));
        assert!(matches(&f(r#"{"event":["die","stop"]}"#), &ev));
        assert!(!matches(&f(r#"{"event":["start"]}"#), &ev));
        assert!(matches(&f(r#"{"container":["abc"]}"#), &ev));
        assert!(matches(&f(r#"{"container":["web1"]}"#), &ev));
        assert!(!matches(&f(r#"{"container":["db"]}"#), &ev));
        assert!(matches(&f(r#"{"image":["busybox"]}"#), &ev));
        assert!(matches(&f(r#"{"image":["busybox:latest"]}"#), &ev));
        assert!(!matches(&f(r#"{"image":["alpine"]}"#), &ev));
        assert!(matches(&f(r#"{"label":["tier=web"]}"#), &ev));
        assert!(!matches(&f(r#"{"label":["tier=db"]}"#), &ev));
        assert!(!matches(&f(r#"{"service":["x"]}"#), &ev));
        let exec = container("exec_start: sh -c true", "abcdef", "web1", "busybox");
        assert!(matches(&f(r#"{"event":["exec_start"]}"#), &exec));
    }

    #[test]
    fn image_events_match_their_id_and_name() {
        let mut attributes = BTreeMap::new();
        attributes.insert("name".to_string(), "busybox:latest".to_string());
        let ev = Event {
            origin: None,
            kind: EventType::Image,
            action: "tag".into(),
            actor_id: "sha256:1234".into(),
            attributes,
            time_ns: 5,
        };
        assert!(matches(&f(r#"{"image":["busybox"]}"#), &ev));
        assert!(matches(&f(r#"{"image":["sha256:1234"]}"#), &ev));
        assert!(!matches(&f(r#"{"container":["sha256"]}"#), &ev));
        assert_eq!(strip_tag("localhost:5000/app:v1"), "localhost:5000/app");
        assert_eq!(strip_tag("localhost:5000/app"), "localhost:5000/app");
    }

    #[test]
    fn json_has_dockers_fields() {
        let v = to_json(&container("die", "abc", "web1", "busybox"));
        assert_eq!(v["Type"], "container");
        assert_eq!(v["Action"], "die");
        assert_eq!(v["Actor"]["ID"], "abc");
        assert_eq!(v["Actor"]["Attributes"]["name"], "web1");
        assert_eq!(v["scope"], "local");
        assert_eq!(v["time"], 1_700_000_000);
        assert_eq!(v["timeNano"], 1_700_000_000_500_000_000_i64);
        assert_eq!(v["status"], "die");
        assert_eq!(v["from"], "busybox");
    }
}
