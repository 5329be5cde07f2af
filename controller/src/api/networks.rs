//! Network routes: `docker network create / ls / inspect / rm / connect / disconnect /
//! prune`. `host` and `none` are shown as Docker's predefined networks; `bridge` is the
//! agent's default bridge network.

use super::error::ApiError;
use super::http::{json, read_body, status, Filters, Query, Resp};
use crate::engine::network::{resolve_network, shown_network_name};
use crate::engine::network_options::{check_endpoint, parse_create, shown_options};
use crate::engine::Engine;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use wharf_protocol::network::{mac_text, NetworkRecord};
use wharf_protocol::state::ClusterState;

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A stable ID for the predefined `host` and `none` networks.
fn predefined_id(name: &str) -> String {
    wharf_protocol::Digest::of(format!("wharf-predefined-{name}").as_bytes()).hex()
}

fn predefined_json(name: &str) -> Value {
    let driver = if name == "none" { "null" } else { "host" };
    json!({
        "Name": name,
        "Id": predefined_id(name),
        "Created": rfc3339(0),
        "Scope": "local",
        "Driver": driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": null},
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

/// A network as Docker shows it (`docker network inspect`).
pub fn network_json(s: &ClusterState, n: &NetworkRecord) -> Value {
    let mut containers = serde_json::Map::new();
    for (id, eps) in &s.endpoints {
        for e in eps.iter().filter(|e| e.network == n.id) {
            let name = s
                .containers
                .get(id)
                .map(|c| c.name.to_string())
                .unwrap_or_default();
            containers.insert(
                id.to_string(),
                json!({
                    "Name": name,
                    "EndpointID": format!("{}{}", &id.as_str()[..52], mac_text(&e.mac).replace(':', "")),
                    "MacAddress": mac_text(&e.mac),
                    "IPv4Address": format!("{}/{}", e.ip, n.subnet.prefix),
                    "IPv6Address": "",
                }),
            );
        }
    }
    let mut options = shown_options(n.icc(), n.masquerade());
    options.insert("com.docker.network.bridge.name", n.bridge.clone());
    if n.default {
        options.insert("com.docker.network.bridge.default_bridge", "true".into());
    }
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created_ns),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv4": true,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": null,
            "Config": [{"Subnet": n.subnet.to_string(), "Gateway": n.gateway.to_string()}],
        },
        "Internal": n.internal(),
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.user_labels(),
    })
}

/// `GET /networks?filters=` (`name`, `id`, `driver`, `label`, `type`, `scope`).
pub fn list(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let f = Filters::parse(q.get("filters"))?;
    f.validate(&["name", "id", "driver", "label", "type", "scope", "dangling"])?;
    let mut out: Vec<Value> = engine
        .store()
        .read(|s| {
            s.networks
                .values()
                .map(|n| {
                    let mut v = network_json(s, n);
                    v["Name"] = json!(shown_network_name(s, n));
                    (n.default, n.user_labels(), v)
                })
                .collect::<Vec<_>>()
        })
        .into_iter()
        .filter(|(default, labels, v)| {
            let name = v["Name"].as_str().unwrap_or_default();
            let id = v["Id"].as_str().unwrap_or_default();
            (!f.contains("name") || f.values("name").any(|x| name.contains(x)))
                && (!f.contains("id") || f.values("id").any(|x| id.starts_with(x)))
                && f.exact_match("driver", "bridge")
                && f.match_kv_list("label", labels)
                && f.exact_match("type", if *default { "builtin" } else { "custom" })
                && f.exact_match("scope", "local")
        })
        .map(|(_, _, v)| v)
        .collect();
    for name in ["host", "none"] {
        let v = predefined_json(name);
        let driver = v["Driver"].as_str().unwrap_or_default().to_string();
        if (!f.contains("name") || f.values("name").any(|x| name.contains(x)))
            && (!f.contains("id") || f.values("id").any(|x| predefined_id(name).starts_with(x)))
            && f.exact_match("driver", &driver)
            && !f.contains("label")
            && f.exact_match("type", "builtin")
            && f.exact_match("scope", "local")
        {
            out.push(v);
        }
    }
    Ok(json(StatusCode::OK, &Value::Array(out)))
}

/// `GET /networks/{id}`.
pub fn inspect(engine: &Engine, reference: &str) -> Result<Resp, ApiError> {
    for name in ["host", "none"] {
        if reference == name || (reference.len() >= 3 && predefined_id(name).starts_with(reference))
        {
            return Ok(json(StatusCode::OK, &predefined_json(name)));
        }
    }
    let v = engine
        .store()
        .read(|s| resolve_network(s, reference, None).map(|n| network_json(s, n)))?;
    Ok(json(StatusCode::OK, &v))
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// `POST /networks/create` → 201 `{"Id", "Warning"}`; options Wharf does not carry out
/// are refused (400) by [`parse_create`].
pub async fn create(engine: &Engine, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = body_json(&read_body(req.into_body()).await?)?;
    let request = parse_create(&body).map_err(crate::engine::EngineError::from)?;
    if request.name.is_empty() {
        return Err(ApiError::bad_request("network name must not be empty"));
    }
    let n = engine.create_network(request).await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({"Id": n.id, "Warning": ""}),
    ))
}

/// `DELETE /networks/{id}` → 204.
pub async fn remove(engine: &Engine, reference: &str) -> Result<Resp, ApiError> {
    engine.remove_network(reference).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /networks/{id}/connect` with `{"Container", "EndpointConfig": {"Aliases"}}`.
pub async fn connect(
    engine: &Engine,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body = body_json(&read_body(req.into_body()).await?)?;
    let container = body
        .get("Container")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(ep) = body.get("EndpointConfig") {
        let n = engine.network(reference)?;
        check_endpoint(!n.default, ep).map_err(crate::engine::EngineError::from)?;
    }
    let aliases: Vec<String> = body
        .get("EndpointConfig")
        .and_then(|e| e.get("Aliases"))
        .cloned()
        .and_then(|a| serde_json::from_value(a).ok())
        .unwrap_or_default();
    engine
        .connect_network(reference, container, aliases)
        .await?;
    Ok(status(StatusCode::OK))
}

/// `POST /networks/{id}/disconnect` with `{"Container", "Force"}`.
pub async fn disconnect(
    engine: &Engine,
    reference: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let body = body_json(&read_body(req.into_body()).await?)?;
    let container = body
        .get("Container")
        .and_then(Value::as_str)
        .unwrap_or_default();
    engine.disconnect_network(reference, container).await?;
    Ok(status(StatusCode::OK))
}

/// `POST /networks/prune` → `{"NetworksDeleted": [...]}`.
pub async fn prune(engine: &Engine) -> Result<Resp, ApiError> {
    let removed = engine.prune_networks().await?;
    Ok(json(StatusCode::OK, &json!({"NetworksDeleted": removed})))
}
