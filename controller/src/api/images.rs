//! Image routes: load, list, inspect, and the pull entry point.

use super::error::ApiError;
use super::http::{json, json_error_line, json_line, streaming, Query, Resp};
use crate::docker_types::ImageConfigFile;
use crate::engine::{normalize_reference, Engine};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use std::sync::Arc;
use wharf_protocol::state::{ClusterState, ImageRecord};

/// Tags pointing at `image`, sorted.
fn tags_of(state: &ClusterState, image: &ImageRecord) -> Vec<String> {
    state
        .tags
        .iter()
        .filter(|(_, id)| **id == image.id)
        .map(|(t, _)| t.clone())
        .collect()
}

fn created_secs(cfg: &ImageConfigFile) -> i64 {
    cfg.created
        .as_deref()
        .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// `POST /images/load`: the body is a `docker save` tarball.
pub async fn load(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut body = req.into_body();
    let pump = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Ok(data) = f.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    break;
                }
            }
        }
    });
    let result = engine.load_images(rx).await;
    pump.abort();
    let (out, resp) = streaming("application/json");
    tokio::spawn(async move {
        match result {
            Ok(lines) => {
                for l in lines {
                    let _ = out.send(json_line(&json!({ "stream": l }))).await;
                }
            }
            Err(e) => {
                let _ = out.send(json_error_line(&e.message)).await;
            }
        }
    });
    Ok(resp)
}

/// `GET /images/json`.
pub fn list(engine: &Engine) -> Result<Resp, ApiError> {
    let entries: Vec<serde_json::Value> = engine.store().read(|s| {
        s.images
            .values()
            .map(|img| {
                let cfg: ImageConfigFile = serde_json::from_slice(&img.config).unwrap_or_default();
                let labels = cfg
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                json!({
                    "Id": img.id.to_string(),
                    "ParentId": "",
                    "RepoTags": tags_of(s, img),
                    "RepoDigests": [],
                    "Created": created_secs(&cfg),
                    "Size": img.size,
                    "SharedSize": -1,
                    "Labels": labels,
                    "Containers": -1,
                })
            })
            .collect()
    });
    Ok(json(StatusCode::OK, &serde_json::Value::Array(entries)))
}

/// `GET /images/{name}/json`.
pub fn inspect(engine: &Engine, name: &str) -> Result<Resp, ApiError> {
    let img = engine.image(name)?;
    let cfg: serde_json::Value = serde_json::from_slice(&img.config)
        .map_err(|e| ApiError::internal(format!("image config of {}: {e}", img.id)))?;
    let parsed: ImageConfigFile = serde_json::from_value(cfg.clone()).unwrap_or_default();
    let tags = engine.store().read(|s| tags_of(s, &img));
    let layers: Vec<String> = img.diff_ids.iter().map(|d| d.to_string()).collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "Id": img.id.to_string(),
            "RepoTags": tags,
            "RepoDigests": [],
            "Parent": "",
            "Comment": cfg.get("comment").cloned().unwrap_or(json!("")),
            "Created": parsed.created.clone().unwrap_or_default(),
            "DockerVersion": cfg.get("docker_version").cloned().unwrap_or(json!("")),
            "Author": cfg.get("author").cloned().unwrap_or(json!("")),
            "Config": cfg.get("config").cloned().unwrap_or(json!({})),
            "Architecture": parsed.architecture,
            "Os": parsed.os,
            "Size": img.size,
            "GraphDriver": {"Name": "overlay2", "Data": null},
            "RootFS": {"Type": "layers", "Layers": layers},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        }),
    ))
}

/// `POST /images/create`: pulling needs a registry, which this host cannot reach; the
/// failure is sent in-stream as dockerd does, so `docker run` prints its usual lines.
pub async fn create(req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let Some(from) = q.get("fromImage").filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request(
            "importing a root filesystem (fromSrc) is not supported by this Wharf version",
        ));
    };
    let reference = match q.get("tag").filter(|t| !t.is_empty()) {
        Some(tag) if !from.contains('@') => normalize_reference(&format!("{from}:{tag}")),
        _ => normalize_reference(from),
    };
    let (out, resp) = streaming("application/json");
    let message = format!(
        "pull access denied for {reference}: this Wharf host has no registry configured; load the image with `docker load`"
    );
    tokio::spawn(async move {
        let _ = out.send(json_error_line(&message)).await;
    });
    Ok(resp)
}
