//! `POST /build`: the classic builder's endpoint. The body is the context tar, streamed
//! through to the agent that runs the build ([`BuildContext`]); the answer is a chunked
//! JSON-lines stream (`{"stream"}`, `{"aux":{"ID"}}`, `{"errorDetail"}`), started at once
//! so the client sees progress while the build runs.

use super::error::ApiError;
use super::http::{streaming, Query, Resp};
use crate::build::context::BuildContext;
use crate::build::executor::Builder;
use crate::build::{dockerfile, BuildError, BuildOptions, Output};
use crate::engine::Engine;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{info, Instrument};
use wharf_protocol::agent::FailureKind;

/// Parse the query of `POST /build`.
pub fn options(q: &Query) -> Result<BuildOptions, ApiError> {
    let json_map = |key: &str| -> Result<BTreeMap<String, Option<String>>, ApiError> {
        match q.get(key).filter(|v| !v.is_empty() && *v != "null") {
            None => Ok(BTreeMap::new()),
            Some(v) => serde_json::from_str(v)
                .map_err(|e| ApiError::bad_request(format!("invalid {key}: {e}"))),
        }
    };
    let mut tags = vec![];
    for t in q.all("t") {
        let t = t.trim();
        if t.is_empty() {
            continue;
        }
        if crate::engine::images::repo_tag(t, "").is_err() || t.contains(char::is_whitespace) {
            return Err(ApiError::bad_request(format!(
                "invalid reference format: repository name ({t}) must be lowercase"
            )));
        }
        tags.push(t.to_string());
    }
    let cache_from = match q.get("cachefrom").filter(|v| !v.is_empty()) {
        None => vec![],
        Some(v) => serde_json::from_str(v)
            .map_err(|e| ApiError::bad_request(format!("invalid cachefrom: {e}")))?,
    };
    Ok(BuildOptions {
        tags,
        dockerfile: q
            .get("dockerfile")
            .filter(|d| !d.is_empty())
            .unwrap_or("Dockerfile")
            .to_string(),
        build_args: json_map("buildargs")?,
        no_cache: q.bool("nocache"),
        rm: q.get("rm").is_none() || q.bool("rm"),
        force_rm: q.bool("forcerm"),
        quiet: q.bool("q"),
        labels: json_map("labels")?
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        target: q.get("target").unwrap_or("").to_string(),
        cache_from,
        pull: q.bool("pull"),
    })
}

/// `POST /build`.
pub async fn build(engine: Arc<Engine>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    if let Some(remote) = q.get("remote").filter(|r| !r.is_empty()) {
        return Err(ApiError::bad_request(format!(
            "remote build context {remote}: fetching it needs network access, which this host does not have; build from a local directory or tar"
        )));
    }
    let opts = options(&q)?;
    // Removed from the agent when dropped: when the build ends, however it ends.
    let context = BuildContext::new(engine.agents().clone(), engine.image_target()?);
    let (tx, rx) = mpsc::channel(16);
    let mut body = req.into_body();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let (Ok(data), Some(t)) = (f.into_data(), tx.as_ref()) {
                        if t.send(Ok(data)).await.is_err() {
                            tx = None;
                        }
                    }
                }
                Err(e) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(Err(io::Error::other(e))).await;
                    }
                    return;
                }
            }
        }
    });
    // As dockerd: what fails before the build starts (the context, the Dockerfile) is an
    // HTTP error, which the CLI prints as `Error response from daemon: …`.
    let df = prepare(&context, &opts, rx).await?;
    let (out_tx, resp) = streaming("application/json");
    let span = tracing::info_span!("build", build = %context.id());
    tokio::spawn(
        async move {
            let out = Output::new(out_tx, opts.quiet);
            let res = run(&engine, &opts, &out, &context, &df).await;
            match res {
                Ok(id) => info!(image = %id, "built"),
                Err(e) => {
                    info!(error = ?e, "build failed");
                    if let Some(line) = e.line() {
                        let _ = out.raw(line).await;
                    }
                }
            }
            drop(context);
        }
        .instrument(span),
    );
    Ok(resp)
}

/// Put the context on the agent (which reads its Dockerfile and applies `.dockerignore`),
/// parse the Dockerfile.
async fn prepare(
    context: &BuildContext,
    opts: &BuildOptions,
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
) -> Result<dockerfile::Dockerfile, ApiError> {
    let text = context
        .put(&opts.dockerfile, rx)
        .await
        .map_err(|f| match f.kind {
            FailureKind::InvalidInput => ApiError::bad_request(f.message),
            _ => ApiError::from(f),
        })?;
    dockerfile::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))
}

async fn run(
    engine: &Arc<Engine>,
    opts: &BuildOptions,
    out: &Output,
    context: &BuildContext,
    df: &dockerfile::Dockerfile,
) -> Result<wharf_protocol::ImageId, BuildError> {
    let mut b = Builder::new(engine, opts, out, context);
    let id = b.run(df).await?;
    b.finish(&id).await?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Query {
        Query::parse(Some(s))
    }

    #[test]
    fn query_parameters_as_the_cli_sends_them() {
        let o = options(&q(
            "t=app%3A1&t=app%3Alatest&dockerfile=sub%2FDockerfile&buildargs=%7B%22A%22%3A%221%22%2C%22B%22%3Anull%7D&nocache=1&rm=0&forcerm=1&q=true&labels=%7B%22k%22%3A%22v%22%7D&target=build&cachefrom=%5B%22busybox%22%5D&pull=1&version=1",
        ))
        .unwrap();
        assert_eq!(o.tags, ["app:1", "app:latest"]);
        assert_eq!(o.dockerfile, "sub/Dockerfile");
        assert_eq!(o.build_args.get("A"), Some(&Some("1".to_string())));
        assert_eq!(o.build_args.get("B"), Some(&None));
        assert!(o.no_cache && !o.rm && o.force_rm && o.quiet && o.pull);
        assert_eq!(o.labels.get("k").map(String::as_str), Some("v"));
        assert_eq!(o.target, "build");
        assert_eq!(o.cache_from, ["busybox"]);
    }

    #[test]
    fn defaults_and_bad_values() {
        let o = options(&q("")).unwrap();
        assert_eq!(o.dockerfile, "Dockerfile");
        assert!(o.rm, "rm defaults to true");
        assert!(!o.no_cache && !o.force_rm && !o.quiet);
        assert!(options(&q("buildargs=%7Bnot")).is_err());
        assert!(options(&q("t=Bad%20Name")).is_err());
        assert!(options(&q("cachefrom=x")).is_err());
    }
}
