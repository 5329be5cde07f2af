//! Which containers `GET /containers/json` lists and `POST /containers/prune` removes:
//! Docker's `filters` applied to the cluster state (pure), and the prune route.

use super::error::ApiError;
use super::http::{json, parse_timestamp, Filters, Query, Resp};
use crate::engine::{find_container, find_image, now_ns, Engine};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use wharf_protocol::state::{ClusterState, ContainerRecord, ContainerStatus};
use wharf_protocol::ImageId;

/// Filter keys `docker ps` may send (moby's `acceptedPsFilterTags`).
const PS_FILTERS: &[&str] = &[
    "ancestor",
    "before",
    "expose",
    "exited",
    "health",
    "id",
    "isolation",
    "is-task",
    "label",
    "name",
    "network",
    "node",
    "publish",
    "since",
    "status",
    "volume",
];

/// Whether the restart policy will start `c` again after its back-off.
pub fn is_restarting(state: &ClusterState, c: &ContainerRecord) -> bool {
    c.status == ContainerStatus::Exited && state.restarts.get(&c.id).is_some_and(|r| r.restarting)
}

/// Docker's state name of `c` (`restarting` during a restart policy's back-off).
pub fn shown_status(state: &ClusterState, c: &ContainerRecord) -> &'static str {
    if is_restarting(state, c) {
        "restarting"
    } else {
        c.status.as_str()
    }
}

/// The states a `status` filter may name.
const STATES: &[&str] = &[
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

/// A container's labels, from the `Config` it was created with.
pub fn labels_of(c: &ContainerRecord) -> BTreeMap<String, String> {
    serde_json::from_str::<serde_json::Value>(&c.config_json)
        .ok()
        .and_then(|v| v.get("Labels").cloned())
        .and_then(|l| serde_json::from_value(l).ok())
        .unwrap_or_default()
}

fn invalid(key: &str, value: &str) -> ApiError {
    ApiError::bad_request(format!("invalid filter '{key}={value}'"))
}

/// moby's `Args.Match`: exact, else the value as a regular expression.
fn regex_match(f: &Filters, key: &str, source: &str) -> bool {
    !f.contains(key)
        || f.values(key).any(|v| {
            v == source
                || regex::RegexBuilder::new(v)
                    .size_limit(1 << 20)
                    .build()
                    .is_ok_and(|re| re.is_match(source))
        })
}

/// The containers `docker ps` shows for `filters`, newest first (pure but for `health`,
/// which gives a container's health status, `none` without a healthcheck, and is only
/// called for a `health` filter).
///
/// Without `all` (or a `status` filter, which implies it, or a `limit`) only running
/// containers are listed, as Docker does.
pub fn select<'a>(
    state: &'a ClusterState,
    f: &Filters,
    mut all: bool,
    limit: Option<i64>,
    health: &dyn Fn(&ContainerRecord) -> String,
) -> Result<Vec<&'a ContainerRecord>, ApiError> {
    f.validate(PS_FILTERS)?;
    for s in f.values("status") {
        if !STATES.contains(&s) {
            return Err(invalid("status", s));
        }
        all = true;
    }
    let exited: BTreeSet<i32> = f
        .values("exited")
        .map(|v| v.parse().map_err(|_| invalid("exited", v)))
        .collect::<Result<_, _>>()?;
    for h in f.values("health") {
        if !["starting", "healthy", "unhealthy", "none"].contains(&h) {
            return Err(invalid("health", h));
        }
    }
    let created_of = |key: &str| -> Result<Option<i64>, ApiError> {
        match f.values(key).next() {
            None => Ok(None),
            Some(r) => find_container(state, r)
                .and_then(|id| state.containers.get(&id))
                .map(|c| Some(c.created_ns))
                .ok_or_else(|| ApiError::no_such_container(r)),
        }
    };
    let (before, since) = (created_of("before")?, created_of("since")?);
    let ancestors: Option<BTreeSet<ImageId>> = f.contains("ancestor").then(|| {
        f.values("ancestor")
            .filter_map(|a| find_image(state, a))
            .collect()
    });
    let mut out: Vec<&ContainerRecord> = state
        .containers
        .values()
        .filter(|c| {
            all || limit.is_some_and(|l| l > 0)
                // As Docker: a paused or restarting container is running.
                || matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
                || is_restarting(state, c)
        })
        // Each filter looks at a container only when it is given: some read the
        // container's configuration (labels, ports), which for 100,000 containers made a
        // `docker ps -n 100` take half a second.
        .filter(|c| !f.contains("status") || f.exact_match("status", shown_status(state, c)))
        .filter(|c| {
            if !f.contains("name") {
                return true;
            }
            let name = c.name.to_string();
            regex_match(f, "name", &format!("/{name}")) || regex_match(f, "name", &name)
        })
        .filter(|c| f.fuzzy_match("id", c.id.as_str()))
        // Classic Swarm's: the node's host name or ID.
        .filter(|c| {
            !f.contains("node")
                || state.nodes.get(&c.node).is_some_and(|n| {
                    f.values("node").any(|v| {
                        v == n.description.hostname
                            || v == crate::cluster::identity::node_id_text(n.id)
                    })
                })
        })
        .filter(|c| !f.contains("label") || f.match_kv_list("label", &labels_of(c)))
        .filter(|c| {
            exited.is_empty()
                || (c.status == ContainerStatus::Exited
                    && c.started_ns != 0
                    && exited.contains(&c.exit_code))
        })
        .filter(|c| !f.contains("health") || f.exact_match("health", &health(c)))
        .filter(|c| {
            !f.contains("network")
                || crate::engine::network::network_names(state, c)
                    .iter()
                    .any(|n| f.exact_match("network", n))
        })
        .filter(|_| f.exact_match("is-task", "false"))
        // Linux containers have no isolation technology (Docker shows "").
        .filter(|_| f.exact_match("isolation", ""))
        // A volume or bind by name or source, or any mount by its path in the container.
        .filter(|c| {
            !f.contains("volume")
                || c.run.host.mounts.iter().any(|m| {
                    f.values("volume")
                        .any(|v| v == m.target || (!m.source.is_empty() && v == m.source))
                })
        })
        .filter(|c| {
            if !f.contains("publish") && !f.contains("expose") {
                return true;
            }
            let (published, exposed) = crate::engine::network::port_keys(c);
            let matches = |key: &str, ports: &[(u16, wharf_protocol::network::Proto)]| {
                !f.contains(key)
                    || f.values(key).any(|v| {
                        crate::engine::network::parse_port_filter(v).is_some_and(
                            |(lo, hi, proto)| {
                                ports
                                    .iter()
                                    .any(|(p, pr)| *pr == proto && (lo..=hi).contains(p))
                            },
                        )
                    })
            };
            matches("publish", &published) && matches("expose", &exposed)
        })
        .filter(|c| {
            ancestors
                .as_ref()
                .is_none_or(|a| a.contains(&c.run.image_id))
        })
        .filter(|c| before.is_none_or(|b| c.created_ns < b))
        .filter(|c| since.is_none_or(|s| c.created_ns > s))
        .collect();
    out.sort_by_key(|c| std::cmp::Reverse(c.created_ns));
    if let Some(l) = limit.filter(|l| *l > 0) {
        out.truncate(l as usize);
    }
    Ok(out)
}

/// The containers `POST /containers/prune` removes for `filters`: every one not running
/// or paused, created before `until` and matching `label` / `label!` (pure).
pub fn prunable(
    state: &ClusterState,
    f: &Filters,
    now: i64,
) -> Result<Vec<ContainerRecord>, ApiError> {
    f.validate(&["until", "label", "label!"])?;
    let until = match f.values("until").next() {
        None => None,
        Some(u) => Some(parse_until(u, now)?),
    };
    Ok(state
        .containers
        .values()
        .filter(|c| !matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused))
        .filter(|c| until.is_none_or(|u| c.created_ns < u))
        .filter(|c| {
            let labels = labels_of(c);
            f.match_kv_list("label", &labels)
                && !(f.contains("label!")
                    && f.values("label!").any(|want| match want.split_once('=') {
                        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                        None => labels.contains_key(want),
                    }))
        })
        .cloned()
        .collect())
}

/// `until` of a prune filter: a timestamp, an RFC 3339 time or a Go duration such as
/// `24h` / `10m` / `30s` before `now`.
fn parse_until(v: &str, now: i64) -> Result<i64, ApiError> {
    if let Ok(t) = parse_timestamp("until", v) {
        return Ok(t);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(v) {
        return t.timestamp_nanos_opt().ok_or_else(|| invalid("until", v));
    }
    let unit = v.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    let number = &v[..v.len() - unit.len()];
    let scale: f64 = match unit {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        "m" => 60e9,
        "h" => 3600e9,
        _ => return Err(invalid("until", v)),
    };
    let n: f64 = number.parse().map_err(|_| invalid("until", v))?;
    Ok(now - (n * scale) as i64)
}

/// `POST /containers/prune?filters=`: remove stopped containers.
pub async fn prune(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let filters = Filters::parse(q.get("filters"))?;
    let victims = engine.store().read(|s| prunable(s, &filters, now_ns()))?;
    let mut deleted = vec![];
    let mut reclaimed: u64 = 0;
    for c in victims {
        let size = engine
            .agents()
            .usage(&c.node, &c.id)
            .await
            .map_or(0, |u| u.0);
        match engine.remove(c.id.as_str(), false).await {
            Ok(()) => {
                deleted.push(c.id.to_string());
                reclaimed += size;
            }
            // Started or removed meanwhile: not ours to prune any more.
            Err(e) => tracing::debug!(container = %c.id.short(), error = %e, "not pruned"),
        }
    }
    Ok(json(
        StatusCode::OK,
        &json!({"ContainersDeleted": deleted, "SpaceReclaimed": reclaimed}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::agent::ContainerRunSpec;
    use wharf_protocol::state::Command;
    use wharf_protocol::{ContainerId, Digest, NodeId};

    fn add(s: &mut ClusterState, n: u8, name: &str, status: ContainerStatus, code: i32) -> String {
        let id = ContainerId::from_bytes([n; 32]);
        let image = ImageId(Digest::of(b"{}"));
        let record = ContainerRecord {
            id: id.clone(),
            name: name.parse().unwrap(),
            created_ns: i64::from(n) * 1_000,
            node: NodeId(1),
            image_ref: "busybox".into(),
            run: ContainerRunSpec {
                id: id.clone(),
                image_id: image,
                diff_ids: vec![],
                args: vec!["sh".into()],
                env: vec![],
                working_dir: "/".into(),
                user: String::new(),
                hostname: "h".into(),
                tty: false,
                open_stdin: false,
                stop_signal: 15,
                host: Default::default(),
            },
            config_json: format!(r#"{{"Labels":{{"n":"{n}","app":"x"}}}}"#),
            host_config_json: "{}".into(),
            auto_remove: false,
            status,
            exit_code: code,
            started_ns: if status == ContainerStatus::Created {
                0
            } else {
                5
            },
            finished_ns: 0,
            oom_killed: false,
            error: String::new(),
        };
        s.apply(&Command::CreateContainer {
            container: Box::new(record),
        })
        .unwrap();
        id.to_string()
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        add(&mut s, 1, "web", ContainerStatus::Running, 0);
        add(&mut s, 2, "db", ContainerStatus::Exited, 3);
        add(&mut s, 3, "new", ContainerStatus::Created, 0);
        add(&mut s, 4, "webber", ContainerStatus::Exited, 0);
        s
    }

    fn names(s: &ClusterState, filters: &str, all: bool) -> Vec<String> {
        let f = Filters::parse(Some(filters)).unwrap();
        let health = |c: &ContainerRecord| {
            if c.name.as_str() == "web" {
                "healthy".to_string()
            } else {
                "none".to_string()
            }
        };
        select(s, &f, all, None, &health)
            .unwrap()
            .iter()
            .map(|c| c.name.to_string())
            .collect()
    }

    #[test]
    fn running_only_unless_all_or_status() {
        let s = state();
        assert_eq!(names(&s, "{}", false), ["web"]);
        assert_eq!(names(&s, "{}", true), ["webber", "new", "db", "web"]);
        assert_eq!(
            names(&s, r#"{"status":["exited"]}"#, false),
            ["webber", "db"]
        );
        assert_eq!(names(&s, r#"{"status":{"created":true}}"#, false), ["new"]);
    }

    #[test]
    fn name_id_label_exited_filters() {
        let s = state();
        assert_eq!(names(&s, r#"{"name":["web"]}"#, true), ["webber", "web"]);
        assert_eq!(names(&s, r#"{"name":["^web$"]}"#, true), ["web"]);
        assert_eq!(names(&s, r#"{"name":["^/db$"]}"#, true), ["db"]);
        assert_eq!(names(&s, r#"{"id":["0202"]}"#, true), ["db"]);
        assert_eq!(names(&s, r#"{"label":["n=3"]}"#, true), ["new"]);
        assert_eq!(names(&s, r#"{"label":["app"]}"#, false), ["web"]);
        assert_eq!(names(&s, r#"{"exited":["3"]}"#, true), ["db"]);
        assert_eq!(names(&s, r#"{"exited":["0"]}"#, true), ["webber"]);
        assert_eq!(names(&s, r#"{"since":["db"]}"#, true), ["webber", "new"]);
        assert_eq!(names(&s, r#"{"before":["db"]}"#, true), ["web"]);
        assert!(names(&s, r#"{"ancestor":["alpine"]}"#, true).is_empty());
        assert!(names(&s, r#"{"publish":["80"]}"#, true).is_empty());
        assert!(names(&s, r#"{"isolation":["default"]}"#, true).is_empty());
        assert_eq!(names(&s, r#"{"health":["healthy"]}"#, true), ["web"]);
        assert_eq!(names(&s, r#"{"health":["none"]}"#, true).len(), 3);
    }

    #[test]
    fn volume_filter_matches_name_source_or_target() {
        let mut s = state();
        let id = add(&mut s, 5, "withvol", ContainerStatus::Running, 0);
        let mut c = s
            .containers
            .values()
            .find(|c| c.id.as_str() == id)
            .unwrap()
            .clone();
        c.run.host.mounts.push(wharf_protocol::agent::MountPoint {
            kind: wharf_protocol::agent::MountKind::Volume,
            source: "data".into(),
            target: "/srv".into(),
            ..Default::default()
        });
        s.containers.insert(c.id.clone(), c);
        assert_eq!(names(&s, r#"{"volume":["data"]}"#, true), ["withvol"]);
        assert_eq!(names(&s, r#"{"volume":["/srv"]}"#, true), ["withvol"]);
        assert!(names(&s, r#"{"volume":["other"]}"#, true).is_empty());
    }

    fn none(_: &ContainerRecord) -> String {
        "none".to_string()
    }

    #[test]
    fn bad_filters_are_400() {
        let s = state();
        for bad in [
            r#"{"status":["sleeping"]}"#,
            r#"{"exited":["x"]}"#,
            r#"{"colour":["red"]}"#,
            r#"{"before":["nope"]}"#,
        ] {
            let e = select(&s, &Filters::parse(Some(bad)).unwrap(), true, None, &none).unwrap_err();
            assert!(e.status.is_client_error(), "{bad}: {e:?}");
        }
        assert_eq!(
            select(
                &s,
                &Filters::parse(Some(r#"{"status":["sleeping"]}"#)).unwrap(),
                true,
                None,
                &none
            )
            .unwrap_err()
            .message,
            "invalid filter 'status=sleeping'"
        );
    }

    #[test]
    fn prune_takes_stopped_containers_matching_filters() {
        let s = state();
        let pick = |f: &str| -> Vec<String> {
            prunable(&s, &Filters::parse(Some(f)).unwrap(), 10_000)
                .unwrap()
                .iter()
                .map(|c| c.name.to_string())
                .collect()
        };
        assert_eq!(pick("{}"), ["db", "new", "webber"]);
        assert_eq!(pick(r#"{"label":["n=2"]}"#), ["db"]);
        assert_eq!(pick(r#"{"label!":["n=2"]}"#), ["new", "webber"]);
        assert_eq!(pick(r#"{"until":["0.000003500"]}"#), ["db", "new"]);
        assert_eq!(pick(r#"{"until":["7us"]}"#), ["db"]);
        assert!(prunable(
            &s,
            &Filters::parse(Some(r#"{"until":["soon"]}"#)).unwrap(),
            0
        )
        .is_err());
    }
}
