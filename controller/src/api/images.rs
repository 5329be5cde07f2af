//! Image routes: load, save, list, inspect, tag, rmi, prune, history, import (and the
//! pull entry point), plus the container-layer routes diff, export and commit.

use super::error::ApiError;
use super::http::{json, json_error_line, json_line, streaming, Body, Query, Resp};
use crate::docker_types::ImageConfigFile;
use crate::engine::images::{ByteStream, CommitRequest, DeleteItem, ImportRequest};
use crate::engine::{normalize_reference, Engine};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use std::sync::Arc;
use wharf_protocol::state::{ClusterState, ImageRecord};

/// Feed a request body to a consumer (an upload to the agent). Once the consumer stops
/// (done, or failed early), the rest of the body is read and dropped, so the client can
/// finish sending and read the answer instead of failing with a broken pipe.
fn body_stream(req: Request<Incoming>) -> ByteStream {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut body = req.into_body();
    tokio::spawn(async move {
        let mut consumer = Some(tx);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let (Ok(data), Some(tx)) = (f.into_data(), consumer.as_ref()) {
                        if tx.send(Ok(data)).await.is_err() {
                            consumer = None;
                        }
                    }
                }
                Err(e) => {
                    if let Some(tx) = consumer.take() {
                        let _ = tx.send(Err(std::io::Error::other(e))).await;
                    }
                    return;
                }
            }
        }
        drop(consumer);
    });
    rx
}

/// A 200 response whose body is `stream` (chunked); an error item aborts the body.
fn byte_stream_response(stream: ByteStream, content_type: &'static str) -> Resp {
    let s = futures_util::stream::unfold(stream, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let mut r: Response<Body> = Response::new(BodyExt::boxed(StreamBody::new(s)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

fn delete_items(items: &[DeleteItem]) -> Vec<serde_json::Value> {
    items
        .iter()
        .map(|i| match i {
            DeleteItem::Untagged(t) => json!({ "Untagged": t }),
            DeleteItem::Deleted(d) => json!({ "Deleted": d }),
        })
        .collect()
}

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
    // The host leases the loaded layers until the images are recorded, so a layer
    // collection (`rmi`, `prune`) cannot free them meanwhile.
    let rx = body_stream(req);
    let result = engine.load_images(rx).await;
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

/// `GET /images/get?names=a&names=b`: a `docker save` archive, streamed.
pub async fn save(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let stream = engine.save_images(q.all("names")).await?;
    Ok(byte_stream_response(stream, "application/x-tar"))
}

/// `GET /images/{name}/get`: a `docker save` archive of one image, streamed.
pub async fn save_one(engine: &Engine, name: &str) -> Result<Resp, ApiError> {
    let stream = engine.save_images(&[name.to_string()]).await?;
    Ok(byte_stream_response(stream, "application/x-tar"))
}

/// `POST /images/{name}/tag?repo=&tag=`: 201.
pub async fn tag(engine: &Engine, name: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    engine
        .tag_image(
            name,
            q.get("repo").unwrap_or(""),
            q.get("tag").unwrap_or(""),
        )
        .await?;
    Ok(super::http::status(StatusCode::CREATED))
}

/// `DELETE /images/{name}?force=`: the untag/delete lines.
pub async fn remove(
    engine: &Engine,
    name: &str,
    req: &Request<Incoming>,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let items = engine.delete_image(name, q.bool("force")).await?;
    Ok(json(StatusCode::OK, &json!(delete_items(&items))))
}

/// Whether a prune's `filters` ask for dangling images only (the default); other filters
/// are refused.
fn prune_dangling_only(filters: Option<&str>) -> Result<bool, ApiError> {
    let Some(raw) = filters.filter(|f| !f.is_empty()) else {
        return Ok(true);
    };
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid filters: not an object"))?;
    let mut dangling = true;
    for (k, vals) in obj {
        if k != "dangling" {
            return Err(ApiError::bad_request(format!(
                "invalid filter '{k}': only 'dangling' is supported by this Wharf version"
            )));
        }
        let words: Vec<String> = match vals {
            serde_json::Value::Object(m) => m.keys().cloned().collect(),
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            _ => vec![],
        };
        for w in words {
            dangling = match w.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "invalid filter 'dangling={w}'"
                    )))
                }
            };
        }
    }
    Ok(dangling)
}

/// `POST /images/prune`.
pub async fn prune(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let dangling = prune_dangling_only(q.get("filters"))?;
    let (items, bytes) = engine.prune_images(!dangling).await?;
    let deleted = if items.is_empty() {
        serde_json::Value::Null
    } else {
        json!(delete_items(&items))
    };
    Ok(json(
        StatusCode::OK,
        &json!({ "ImagesDeleted": deleted, "SpaceReclaimed": bytes }),
    ))
}

/// `GET /images/{name}/history`.
pub async fn history(engine: &Engine, name: &str) -> Result<Resp, ApiError> {
    Ok(json(StatusCode::OK, &engine.image_history(name).await?))
}

/// `GET /containers/{id}/changes`.
pub async fn changes(engine: &Engine, id: &str) -> Result<Resp, ApiError> {
    let list = engine.container_changes(id).await?;
    let body: Vec<serde_json::Value> = list
        .iter()
        .map(|c| json!({ "Path": c.path, "Kind": c.kind as u8 }))
        .collect();
    Ok(json(StatusCode::OK, &json!(body)))
}

/// `GET /containers/{id}/export`: the container's filesystem as a tar stream.
pub async fn export(engine: &Engine, id: &str) -> Result<Resp, ApiError> {
    let stream = engine.export_container(id).await?;
    Ok(byte_stream_response(stream, "application/x-tar"))
}

/// `POST /commit?container=&repo=&tag=&comment=&author=&changes=`: 201 `{"Id"}`.
pub async fn commit(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let container = q.get("container").unwrap_or("");
    if container.is_empty() {
        return Err(ApiError::bad_request("no container given to commit"));
    }
    let id = engine
        .commit_container(&CommitRequest {
            container: container.to_string(),
            repo: q.get("repo").unwrap_or("").to_string(),
            tag: q.get("tag").unwrap_or("").to_string(),
            comment: q.get("comment").unwrap_or("").to_string(),
            author: q.get("author").unwrap_or("").to_string(),
            changes: q.all("changes").to_vec(),
            // Absent means yes, as in Docker since API 1.13.
            pause: q.get("pause").is_none_or(|_| q.bool("pause")),
        })
        .await?;
    Ok(json(StatusCode::CREATED, &json!({ "Id": id.to_string() })))
}

/// `path.Match`-style glob: `*` any run of characters but `/`, `?` one character but `/`.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => {
            glob(rest, text)
                || matches!(text.split_first(), Some((c, t)) if *c != b'/' && glob(pattern, t))
        }
        (Some((b'?', rest)), Some((c, t))) => *c != b'/' && glob(rest, t),
        (Some((p, rest)), Some((c, t))) => p == c && glob(rest, t),
        _ => false,
    }
}

/// Whether the tag `name:tag` matches a `reference` filter: with a tag in the pattern the
/// whole reference is matched, without one the name alone (Docker's `FamiliarMatch`).
fn reference_matches(pattern: &str, tag: &str) -> bool {
    let pattern = pattern
        .strip_prefix("docker.io/library/")
        .or_else(|| pattern.strip_prefix("docker.io/"))
        .unwrap_or(pattern);
    let has_tag = pattern
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains(':'));
    let subject = if has_tag {
        tag
    } else {
        tag.rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map(|(n, _)| n)
            .unwrap_or(tag)
    };
    glob(pattern.as_bytes(), subject.as_bytes())
}

/// The filters of `GET /images/json` Wharf applies.
#[derive(Debug, Default, PartialEq)]
struct ListFilter {
    references: Vec<String>,
    dangling: Option<bool>,
    labels: Vec<String>,
}

fn filter_values(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Object(m) => m.keys().cloned().collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    }
}

fn parse_list_filter(raw: Option<&str>) -> Result<ListFilter, ApiError> {
    let mut f = ListFilter::default();
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(f);
    };
    let v: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filters: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("invalid filters: not an object"))?;
    for (k, vals) in obj {
        let vals = filter_values(vals);
        match k.as_str() {
            "reference" => f.references = vals,
            "label" => f.labels = vals,
            "dangling" => {
                for d in vals {
                    f.dangling = Some(match d.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(ApiError::bad_request(format!(
                                "invalid filter 'dangling={d}'"
                            )))
                        }
                    });
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "invalid filter '{other}': this Wharf version filters images by reference, dangling and label"
                )))
            }
        }
    }
    Ok(f)
}

/// `GET /images/json` (`filters`: `reference`, `dangling`, `label`).
pub fn list(engine: &Engine, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let filter = parse_list_filter(q.get("filters"))?;
    let all = q.bool("all");
    let entries: Vec<serde_json::Value> = engine.store().read(|s| {
        // Build steps' images are parents of the next step's: untagged, they are shown
        // with `-a` only, as Docker's intermediate images.
        let parents = crate::build::cache::parents(s);
        let is_parent: std::collections::HashSet<&String> = parents.values().collect();
        s.images
            .values()
            .filter_map(|img| {
                let parent = parents.get(&img.id).cloned().unwrap_or_default();
                if !all && tags_of(s, img).is_empty() && is_parent.contains(&img.id.to_string()) {
                    return None;
                }
                let cfg: ImageConfigFile = serde_json::from_slice(&img.config).unwrap_or_default();
                let labels = cfg
                    .config
                    .as_ref()
                    .and_then(|c| c.labels.clone())
                    .unwrap_or_default();
                let mut tags = tags_of(s, img);
                if filter.dangling.is_some_and(|d| d != tags.is_empty()) {
                    return None;
                }
                let label_ok = filter.labels.iter().all(|l| match l.split_once('=') {
                    Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
                    None => labels.contains_key(l),
                });
                if !label_ok {
                    return None;
                }
                if !filter.references.is_empty() {
                    tags.retain(|t| filter.references.iter().any(|p| reference_matches(p, t)));
                    if tags.is_empty() {
                        return None;
                    }
                }
                Some(json!({
                    "Id": img.id.to_string(),
                    "ParentId": parent,
                    "RepoTags": tags,
                    "RepoDigests": [],
                    "Created": created_secs(&cfg),
                    "Size": img.size,
                    "SharedSize": -1,
                    "Labels": labels,
                    "Containers": -1,
                }))
            })
            .collect()
    });
    Ok(json(StatusCode::OK, &serde_json::Value::Array(entries)))
}

/// `GraphDriver.Data` of an image as moby shows it (the host's overlay dirs, which its
/// agent knows); `null` for an image without layers.
async fn graph_driver_data(
    engine: &Engine,
    img: &ImageRecord,
) -> Result<serde_json::Value, ApiError> {
    // On a node that holds the image; an image no Ready node holds shows none.
    let Ok(node) = engine.image_node(img) else {
        return Ok(serde_json::Value::Null);
    };
    let data = engine
        .agents()
        .graph_driver(&node, &img.diff_ids)
        .await
        .map_err(|f| ApiError::internal(f.message))?;
    Ok(if data.is_empty() {
        serde_json::Value::Null
    } else {
        json!(data)
    })
}

/// `GET /images/{name}/json`.
pub async fn inspect(engine: &Engine, name: &str) -> Result<Resp, ApiError> {
    let img = engine.image(name)?;
    let graph_driver = graph_driver_data(engine, &img).await?;
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
            "Parent": crate::build::cache::parent_of(&cfg).unwrap_or(""),
            "Comment": cfg.get("comment").cloned().unwrap_or(json!("")),
            "Created": parsed.created.clone().unwrap_or_default(),
            "DockerVersion": cfg.get("docker_version").cloned().unwrap_or(json!("")),
            "Author": cfg.get("author").cloned().unwrap_or(json!("")),
            "Config": cfg.get("config").cloned().unwrap_or(json!({})),
            "Architecture": parsed.architecture,
            "Os": parsed.os,
            "Size": img.size,
            "GraphDriver": {"Name": "overlay2", "Data": graph_driver},
            "RootFS": {"Type": "layers", "Layers": layers},
            "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
        }),
    ))
}

/// `POST /images/create`: `fromSrc=-` imports the body as a root filesystem (`docker
/// import`); pulling (`fromImage`) needs a registry, which this host cannot reach: the
/// failure is sent in-stream as dockerd does, so `docker run` prints its usual lines.
pub async fn create(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    if let Some(src) = q.get("fromSrc") {
        if src != "-" {
            return Err(ApiError::bad_request(format!(
                "importing from {src:?} is not supported: this host fetches nothing; send the file itself (docker import FILE, or - for stdin)"
            )));
        }
        let import = ImportRequest {
            repo: q.get("repo").unwrap_or("").to_string(),
            tag: q.get("tag").unwrap_or("").to_string(),
            changes: q.all("changes").to_vec(),
            message: q.get("message").unwrap_or("").to_string(),
            platform: q.get("platform").unwrap_or("").to_string(),
        };
        let rx = body_stream(req);
        let result = engine.import_image(rx, &import).await;
        let (out, resp) = streaming("application/json");
        tokio::spawn(async move {
            let line = match result {
                Ok(id) => json_line(&json!({ "status": id.to_string() })),
                Err(e) => json_error_line(&e.message),
            };
            let _ = out.send(line).await;
        });
        return Ok(resp);
    }
    let Some(from) = q.get("fromImage").filter(|f| !f.is_empty()) else {
        return Err(ApiError::bad_request("fromImage or fromSrc is required"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_filters_match_like_docker() {
        assert!(reference_matches("busybox", "busybox:latest"));
        assert!(reference_matches("busybox:latest", "busybox:latest"));
        assert!(!reference_matches("busybox:1", "busybox:latest"));
        assert!(reference_matches("busy*", "busybox:1"));
        assert!(!reference_matches("busy", "busybox:latest"));
        assert!(reference_matches("*/app", "team/app:v1"));
        assert!(!reference_matches("*", "team/app:v1"), "* stops at /");
        assert!(reference_matches(
            "localhost:5000/app",
            "localhost:5000/app:v2"
        ));
        assert!(reference_matches(
            "docker.io/library/busybox",
            "busybox:latest"
        ));
        assert!(reference_matches("app:v?", "app:v2"));
    }

    #[test]
    fn list_filters_parse_and_refuse_the_unknown() {
        let f = parse_list_filter(Some(
            r#"{"reference":{"busybox":true},"dangling":["false"],"label":["a=b"]}"#,
        ))
        .unwrap();
        assert_eq!(
            f,
            ListFilter {
                references: vec!["busybox".into()],
                dangling: Some(false),
                labels: vec!["a=b".into()],
            }
        );
        assert_eq!(parse_list_filter(None).unwrap(), ListFilter::default());
        assert!(parse_list_filter(Some(r#"{"before":["x"]}"#)).is_err());
        assert!(parse_list_filter(Some(r#"{"dangling":["x"]}"#)).is_err());
    }

    #[test]
    fn prune_filters_default_to_dangling_and_refuse_the_unknown() {
        assert!(prune_dangling_only(None).unwrap());
        assert!(prune_dangling_only(Some(r#"{"dangling":{"true":true}}"#)).unwrap());
        assert!(!prune_dangling_only(Some(r#"{"dangling":{"false":true}}"#)).unwrap());
        assert!(!prune_dangling_only(Some(r#"{"dangling":["0"]}"#)).unwrap());
        assert!(prune_dangling_only(Some(r#"{"until":["1h"]}"#)).is_err());
        assert!(prune_dangling_only(Some(r#"{"dangling":["maybe"]}"#)).is_err());
        assert!(prune_dangling_only(Some("nope")).is_err());
    }
}
