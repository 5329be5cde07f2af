//! Volume routes: `docker volume create / ls / inspect / rm / prune`.

use super::error::ApiError;
use super::http::{json, read_body, status, Filters, Query, Resp};
use crate::engine::{Engine, PruneFilter};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use wharf_protocol::state::VolumeRecord;

/// Body of `POST /volumes/create`.
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: Option<String>,
    driver: Option<String>,
    driver_opts: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
}

/// A volume as Docker shows it (`docker volume inspect`).
pub fn volume_json(engine: &Engine, v: &VolumeRecord) -> serde_json::Value {
    let created = chrono::DateTime::from_timestamp_nanos(v.created_ns)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({
        "Name": v.name,
        "Driver": v.driver,
        "Mountpoint": engine.volume_mountpoint(&v.name),
        "Labels": v.labels,
        "Scope": "local",
        "Options": if v.options.is_empty() { serde_json::Value::Null } else { json!(v.options) },
        "CreatedAt": created,
    })
}

/// `POST /volumes/create`.
pub async fn create(engine: &Engine, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let body = read_body(req.into_body()).await?;
    let b: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?
    };
    let v = engine
        .create_volume(
            b.name.as_deref().unwrap_or(""),
            b.driver.as_deref().unwrap_or(""),
            b.labels.unwrap_or_default(),
            b.driver_opts.unwrap_or_default(),
            false,
        )
        .await?;
    Ok(json(StatusCode::CREATED, &volume_json(engine, &v)))
}

/// `GET /volumes?filters=` (`name`, `label`, `driver`, `dangling`).
pub fn list(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let f = Filters::parse(q.get("filters"))?;
    f.validate(&["name", "label", "driver", "dangling"])?;
    let dangling: Option<bool> = match f.values("dangling").next() {
        None => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid filter 'dangling={other}'"
            )))
        }
    };
    let out: Vec<serde_json::Value> = engine
        .volumes()
        .iter()
        .filter(|v| {
            (!f.contains("name") || f.values("name").any(|n| v.name.contains(n)))
                && f.exact_match("driver", &v.driver)
                && f.match_kv_list("label", &v.labels)
                && dangling.is_none_or(|d| engine.volume_users(&v.name).is_empty() == d)
        })
        .map(|v| volume_json(engine, v))
        .collect();
    Ok(json(
        StatusCode::OK,
        &json!({"Volumes": out, "Warnings": null}),
    ))
}

/// `GET /volumes/{name}`.
pub fn inspect(engine: &Engine, name: &str) -> Result<Resp, ApiError> {
    let v = engine.volume(name)?;
    Ok(json(StatusCode::OK, &volume_json(engine, &v)))
}

/// `DELETE /volumes/{name}?force=`: 204; 404 unknown; 409 in use.
pub async fn remove(
    engine: &Engine,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    engine.remove_volume(name, q.bool("force")).await?;
    Ok(status(StatusCode::NO_CONTENT))
}

/// `POST /volumes/prune?filters=` (`all`, `label`, `label!`).
pub async fn prune(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let f = Filters::parse(q.get("filters"))?;
    f.validate(&["all", "label", "label!"])?;
    let filter = PruneFilter {
        all: f.values("all").any(|v| v == "true" || v == "1"),
        labels: f.values("label").map(str::to_string).collect(),
        not_labels: f.values("label!").map(str::to_string).collect(),
    };
    let (removed, freed) = engine.prune_volumes(&filter).await;
    Ok(json(
        StatusCode::OK,
        &json!({"VolumesDeleted": removed, "SpaceReclaimed": freed}),
    ))
}
