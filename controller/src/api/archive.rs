//! `docker cp` routes: `HEAD`, `GET` and `PUT /containers/{id}/archive?path=`.
//!
//! ```text
//!  HEAD ─► 200 + X-Docker-Container-Path-Stat (base64 JSON)   or 404
//!  GET  ─► 200 application/x-tar (stream) + the same header
//!  PUT  ─► body streamed to the agent (spooled there) ─► Engine::archive_put ─► 200
//! ```

use super::error::ApiError;
use super::http::{empty, Body, Query, Resp};
use crate::engine::Engine;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use wharf_protocol::archive::PathStat;

/// The header carrying a path's stat.
const STAT_HEADER: &str = "X-Docker-Container-Path-Stat";

/// Standard base64 with padding. Pure.
pub fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ABC[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The header value Docker sends: base64 of `{"name","size","mode","mtime","linkTarget"}`,
/// `mtime` in RFC 3339 with nanoseconds. Pure.
pub fn stat_header(stat: &PathStat) -> String {
    let mtime = chrono::DateTime::from_timestamp(stat.mtime_secs, stat.mtime_nanos)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    let v = json!({
        "name": stat.name,
        "size": stat.size,
        "mode": stat.mode,
        "mtime": mtime,
        "linkTarget": stat.link_target,
    });
    base64(v.to_string().as_bytes())
}

fn path_param(req: &Request<Incoming>) -> (Query, String) {
    let q = Query::parse(req.uri().query());
    let path = q.get("path").unwrap_or("").to_string();
    (q, path)
}

fn with_stat(mut r: Resp, stat: &PathStat) -> Result<Resp, ApiError> {
    let v = HeaderValue::from_str(&stat_header(stat))
        .map_err(|e| ApiError::internal(format!("stat header: {e}")))?;
    r.headers_mut().insert(STAT_HEADER, v);
    Ok(r)
}

/// `HEAD /containers/{id}/archive?path=`.
pub async fn stat(engine: &Engine, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let (_, path) = path_param(req);
    let stat = engine.archive_stat(id, &path).await?;
    with_stat(Response::new(empty()), &stat)
}

/// `GET /containers/{id}/archive?path=`: the path as a tar stream.
pub async fn get(engine: &Engine, id: &str, req: &Request<Incoming>) -> Result<Resp, ApiError> {
    let (_, path) = path_param(req);
    let (stat, rx) = engine.archive_get(id, &path).await?;
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let mut r: Response<Body> = Response::new(BodyExt::boxed(StreamBody::new(s)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    with_stat(r, &stat)
}

/// `PUT /containers/{id}/archive?path=&noOverwriteDirNonDir=&copyUIDGID=`: extract the
/// tar body into the directory `path`. The agent spools the body first, so nothing is
/// written from a transfer that breaks off.
pub async fn put(engine: &Engine, id: &str, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (q, path) = path_param(&req);
    let mut body = req.into_body();
    if let Err(e) = engine.container(id) {
        // Read the upload before answering, so the client sees the error, not a broken
        // pipe.
        while let Some(Ok(_)) = body.frame().await {}
        return Err(e.into());
    }
    let chunks = Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
                Err(e) => {
                    let e =
                        crate::engine::EngineError::invalid(format!("reading request body: {e}"));
                    return Some((Err(e), body));
                }
            }
        }
    }));
    engine
        .archive_put(
            id,
            &path,
            chunks,
            q.bool("noOverwriteDirNonDir"),
            q.bool("copyUIDGID"),
        )
        .await?;
    Ok(super::http::status(StatusCode::OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn stat_header_is_docker_json() {
        let s = PathStat {
            name: "etc".into(),
            size: 4096,
            mode: (1 << 31) | 0o755,
            mtime_secs: 1_700_000_000,
            mtime_nanos: 5,
            link_target: String::new(),
        };
        let h = stat_header(&s);
        let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut bits = Vec::new();
        for c in h.bytes().filter(|c| *c != b'=') {
            let v = abc.iter().position(|a| *a == c).unwrap();
            bits.extend((0..6).rev().map(|i| (v >> i) & 1));
        }
        let bytes: Vec<u8> = bits
            .chunks_exact(8)
            .map(|b| b.iter().fold(0u8, |acc, bit| (acc << 1) | *bit as u8))
            .collect();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["name"], "etc");
        assert_eq!(v["size"], 4096);
        assert_eq!(v["mode"], 2_147_484_141u64);
        assert_eq!(v["mtime"], "2023-11-14T22:13:20.000000005Z");
        assert_eq!(v["linkTarget"], "");
    }
}
