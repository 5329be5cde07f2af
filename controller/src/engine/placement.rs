//! Placement of `docker create`: what a create body asks of the scheduler (its
//! expressions, limits, ports, pins), the scheduler's answer, and the reason recorded on
//! the container. The decision itself is [`scheduler::schedule`] (pure, deterministic).
//!
//! ```text
//!  create body ──► request_from_create: `constraint:` / `affinity:` out of Env,
//!                  com.wharf.constraint and classic Swarm's labels, pins, limits, ports
//!                        │
//!  ClusterState ─────────┴──► scheduler::schedule(state, request, Settings::of(state))
//!                        │
//!                        ▼
//!  body with com.wharf.placement = reason ──► create_container_on(node)
//! ```
//!
//! Expressions come from `-e constraint:EXPR` and `-e affinity:EXPR` (taken out of the
//! container's environment, as classic Swarm did), from the `com.wharf.constraint` label
//! (`,`-separated, each with or without `constraint:`; `affinity:` entries too), and from
//! classic Swarm's `com.docker.swarm.constraints` / `com.docker.swarm.affinities` labels
//! (JSON lists of strings). Labels are kept.

use super::error::EngineError;
use super::scheduler::expr::{Expr, ExprKind};
use super::scheduler::{self, ImageNeed, Pin, Placement, Request, Settings, Unschedulable};
use super::{find_container, find_image, image_record};
use serde_json::Value;
use wharf_protocol::network::{parse_binding, PortMapping};
use wharf_protocol::state::ClusterState;

pub use scheduler::image_targets;

/// The container label holding more constraints, separated by `,`.
pub const CONSTRAINT_LABEL: &str = "com.wharf.constraint";
/// The container label recording why it was placed where it is.
pub const PLACEMENT_LABEL: &str = "com.wharf.placement";
/// Classic Swarm's label of constraints, a JSON list.
pub const SWARM_CONSTRAINTS_LABEL: &str = "com.docker.swarm.constraints";
/// Classic Swarm's label of affinities, a JSON list.
pub const SWARM_AFFINITIES_LABEL: &str = "com.docker.swarm.affinities";

/// The 503 of a cluster with no node to act on.
pub fn no_ready_agent() -> EngineError {
    Unschedulable::NoReadyAgent.into()
}

/// Choose the node for `req` with the cluster's default settings (pure); see
/// [`scheduler::schedule`].
pub fn place(s: &ClusterState, req: &Request) -> Result<Placement, Unschedulable> {
    scheduler::schedule(s, req, &Settings::of(s))
}

/// The expression of an environment entry or label entry: `constraint:EXPR` or
/// `affinity:EXPR`; `None` for anything else.
fn prefixed(text: &str) -> Option<Result<Expr, Unschedulable>> {
    for kind in [ExprKind::Constraint, ExprKind::Affinity] {
        if let Some(rest) = text
            .strip_prefix(kind.as_str())
            .and_then(|r| r.strip_prefix(':'))
        {
            return Some(Expr::parse(kind, rest).map_err(Unschedulable::from));
        }
    }
    None
}

/// The container label of classic Swarm's reschedule policies (`["on-node-failure"]`).
pub const SWARM_RESCHEDULE_LABEL: &str = "com.docker.swarm.reschedule-policies";
/// The environment entry that opts a container into moving off a Down node.
const RESCHEDULE_ENV: &str = "reschedule:on-node-failure";

/// Add `text` to the JSON list of label `key` in `body` (pure; a list that does not
/// parse is left to [`exprs_from_create`], which refuses it).
fn push_to_list_label(body: &mut Value, key: &str, text: &str) {
    let Some(l) = labels_mut(body) else {
        return;
    };
    let mut list: Vec<String> = match l.get(key).and_then(Value::as_str) {
        Some(t) => match serde_json::from_str(t) {
            Ok(list) => list,
            Err(_) => return,
        },
        None => vec![],
    };
    if !list.iter().any(|e| e == text) {
        list.push(text.to_string());
    }
    l.insert(
        key.into(),
        Value::String(serde_json::to_string(&list).unwrap_or_default()),
    );
}

/// The expressions of `body` (pure): `constraint:` and `affinity:` entries are taken out
/// of its `Env` and kept in classic Swarm's labels (`com.docker.swarm.constraints` /
/// `.affinities`, as classic Swarm did), so that a container moved off a Down node is
/// placed by the same rules; `reschedule:on-node-failure` becomes
/// `com.docker.swarm.reschedule-policies`. Labels are read and kept.
pub fn exprs_from_create(body: &mut Value) -> Result<Vec<Expr>, Unschedulable> {
    let mut moved: Vec<(&'static str, String)> = vec![];
    if let Some(env) = body.get_mut("Env").and_then(Value::as_array_mut) {
        let mut kept = vec![];
        for e in env.drain(..) {
            let text = e.as_str().unwrap_or_default();
            if text == RESCHEDULE_ENV {
                moved.push((SWARM_RESCHEDULE_LABEL, "on-node-failure".into()));
                continue;
            }
            match prefixed(text) {
                Some(x) => {
                    let x = x?;
                    let key = match x.kind {
                        ExprKind::Constraint => SWARM_CONSTRAINTS_LABEL,
                        ExprKind::Affinity => SWARM_AFFINITIES_LABEL,
                    };
                    let (_, rest) = text.split_once(':').unwrap_or(("", text));
                    moved.push((key, rest.to_string()));
                }
                None => kept.push(e),
            }
        }
        *env = kept;
    }
    for (key, text) in &moved {
        push_to_list_label(body, key, text);
    }
    let mut exprs = vec![];
    let labels = body.get("Labels");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    if let Some(text) = label(CONSTRAINT_LABEL) {
        for c in text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            exprs.push(match prefixed(c) {
                Some(x) => x?,
                None => Expr::parse(ExprKind::Constraint, c)?,
            });
        }
    }
    for (key, kind) in [
        (SWARM_CONSTRAINTS_LABEL, ExprKind::Constraint),
        (SWARM_AFFINITIES_LABEL, ExprKind::Affinity),
    ] {
        if let Some(text) = label(key) {
            let list: Vec<String> =
                serde_json::from_str(text).map_err(|_| Unschedulable::BadLabel {
                    label: key.to_string(),
                    text: text.to_string(),
                })?;
            for e in list {
                exprs.push(Expr::parse(kind, &e)?);
            }
        }
    }
    Ok(exprs)
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// What the scheduler needs from a create body (pure): its expressions
/// ([`exprs_from_create`], which takes them out of its `Env`), image, limits, fixed host
/// ports and pins. Anything else malformed is left to the create planner.
pub fn request_from_create(s: &ClusterState, body: &mut Value) -> Result<Request, Unschedulable> {
    let mut req = Request {
        exprs: exprs_from_create(body)?,
        ..Request::default()
    };
    if let Some(image) = body.get("Image").and_then(Value::as_str) {
        req.image = find_image(s, image).map(|id| ImageNeed {
            id,
            reference: image.to_string(),
            must_hold: true,
        });
    }
    let hc = body.get("HostConfig").cloned().unwrap_or(Value::Null);
    req.nano_cpus = hc.get("NanoCpus").and_then(Value::as_i64).unwrap_or(0);
    req.memory = hc.get("Memory").and_then(Value::as_i64).unwrap_or(0);
    if let Some(b) = hc.get("PortBindings").and_then(Value::as_object) {
        for (key, list) in b {
            for e in list.as_array().into_iter().flatten() {
                let ip = e.get("HostIp").and_then(Value::as_str).unwrap_or("");
                let port = e.get("HostPort").and_then(Value::as_str).unwrap_or("");
                if let Ok(r) = parse_binding(key, ip, port) {
                    if r.host_port != 0 {
                        req.host_ports.push(PortMapping {
                            proto: r.proto,
                            container_port: r.container_port,
                            host_ip: r.host_ip,
                            host_port: r.host_port,
                        });
                    }
                }
            }
        }
    }
    let mut volumes: Vec<String> = str_list(hc.get("Binds"))
        .iter()
        .filter_map(|b| b.split(':').next().map(str::to_string))
        .filter(|src| !src.is_empty() && !src.starts_with('/'))
        .collect();
    for m in hc
        .get("Mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if m.get("Type").and_then(Value::as_str) == Some("volume") {
            if let Some(src) = m.get("Source").and_then(Value::as_str) {
                volumes.push(src.to_string());
            }
        }
    }
    for v in volumes {
        if let Some(rec) = s.volumes.get(&v) {
            req.pins.push(Pin {
                what: format!("volume {v}"),
                node: rec.node,
            });
        }
    }
    let mut containers: Vec<(&str, String)> = vec![];
    let mode = hc.get("NetworkMode").and_then(Value::as_str).unwrap_or("");
    match mode {
        "" | "default" | "bridge" | "host" | "none" => {}
        m => match m.strip_prefix("container:") {
            Some(c) => containers.push(("--network container:", c.to_string())),
            None => req.network = Some(m.to_string()),
        },
    }
    for f in str_list(hc.get("VolumesFrom")) {
        let c = f.split(':').next().unwrap_or("").to_string();
        containers.push(("--volumes-from ", c));
    }
    for (how, reference) in containers {
        if let Some(c) = find_container(s, &reference).and_then(|id| s.containers.get(&id)) {
            req.pins.push(Pin {
                what: format!("{how}{reference}"),
                node: c.node,
            });
        }
    }
    Ok(req)
}

/// Place a `docker create` named `name` (pure): the planner's first checks and the
/// image's existence (Docker's 400s and 404) come before any placement error, then
/// [`scheduler::schedule`] with `settings`; the body comes back without its
/// `constraint:` / `affinity:` environment entries and with the reason as its
/// [`PLACEMENT_LABEL`].
pub fn place_create(
    s: &ClusterState,
    name: Option<&str>,
    body: &[u8],
    settings: &Settings,
    avoid: &std::collections::BTreeSet<wharf_protocol::NodeId>,
) -> Result<(Placement, Value), EngineError> {
    let (mut raw, config, _) = super::plan::parse_create(body, name)?;
    image_record(s, &config.image)?;
    let mut req = request_from_create(s, &mut raw)?;
    req.avoid = avoid.clone();
    let placed = scheduler::schedule(s, &req, settings)?;
    label_placement(&mut raw, &placed.reason);
    Ok((placed, raw))
}

/// Record why the container was placed where it is, as its [`PLACEMENT_LABEL`].
pub fn label_placement(body: &mut Value, reason: &str) {
    if let Some(l) = labels_mut(body) {
        l.insert(PLACEMENT_LABEL.into(), Value::String(reason.to_string()));
    }
}

/// The `Labels` object of a create body, made (or replacing what is not an object) when
/// needed; `None` when the body itself is not an object.
pub(super) fn labels_mut(body: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    let labels = body
        .as_object_mut()?
        .entry("Labels")
        .or_insert_with(|| Value::Object(Default::default()));
    if !labels.is_object() {
        *labels = Value::Object(Default::default());
    }
    labels.as_object_mut()
}

#[cfg(test)]
#[path = "placement_test.rs"]
mod tests;
