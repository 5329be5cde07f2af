//! HTTP plumbing shared by the handlers: bodies, JSON and streamed responses, query
//! parameters parsed as Docker parses them, and the headers every response carries.

use super::error::ApiError;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::{Body as _, Frame, Incoming};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Every response body.
pub type Body = BoxBody<Bytes, std::io::Error>;
/// A complete response.
pub type Resp = Response<Body>;

/// Highest API version served; the CLI 28.x uses min(this, 1.50).
pub const API_VERSION: &str = "1.50";
/// Lowest API version served.
pub const MIN_API_VERSION: &str = "1.24";
/// Largest JSON request body accepted.
pub const MAX_JSON_BODY: usize = 4 * 1024 * 1024;

/// A body of fixed bytes.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// `status` with a JSON body.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Resp {
    json_bytes(status, value.to_string().into_bytes())
}

/// `status` with a JSON body already encoded.
pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `status` with no body.
pub fn status(status: StatusCode) -> Resp {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
}

/// Docker's error body: `{"message": ...}` with `Content-Type: application/json` exactly.
pub fn error(e: &ApiError) -> Resp {
    if e.status == StatusCode::NOT_MODIFIED {
        return status(StatusCode::NOT_MODIFIED);
    }
    json(e.status, &serde_json::json!({ "message": e.message }))
}

/// A chunked streaming response fed by the returned sender; the stream ends when the
/// sender is dropped. Headers go out at once, before the first chunk.
pub fn streaming(content_type: &'static str) -> (tokio::sync::mpsc::Sender<Bytes>, Resp) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    (tx, r)
}

/// One JSON-lines message of a progress stream.
pub fn json_line(value: &serde_json::Value) -> Bytes {
    let mut s = value.to_string();
    s.push_str("\r\n");
    Bytes::from(s)
}

/// An in-stream error line, as Docker sends when a stream has already begun.
pub fn json_error_line(message: &str) -> Bytes {
    json_line(&serde_json::json!({"errorDetail": {"message": message}, "error": message}))
}

/// Read a JSON request body, refusing more than [`MAX_JSON_BODY`] with 413: at once when
/// `Content-Length` says so (a client sending `Expect: 100-continue` then never sends the
/// body), else as soon as the limit is crossed. Never truncates.
pub async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    if body.size_hint().lower() > MAX_JSON_BODY as u64 {
        return Err(too_large());
    }
    match Limited::new(body, MAX_JSON_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body larger than {MAX_JSON_BODY} bytes"),
    )
}

/// Query parameters, decoded; repeated keys keep every value.
#[derive(Debug, Default)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    /// Parse the query string of a URI.
    pub fn parse(q: Option<&str>) -> Query {
        let mut map: HashMap<String, Vec<String>> = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.entry(decode(k)).or_default().push(decode(v));
        }
        Query(map)
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.first()).map(String::as_str)
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> &[String] {
        self.0.get(key).map(Vec::as_slice).unwrap_or_default()
    }

    /// A boolean as Docker's `BoolValue`: absent, "", 0, no, false, none are false.
    pub fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            ),
        }
    }

    /// An integer; 400 if present and not a number.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
        }
    }
}

/// Docker's `filters` query parameter, decoded: each key with its set of values.
///
/// Accepts the map form `{"status":{"running":true}}` and the legacy list form
/// `{"status":["running"]}`, as moby's `filters.FromJSON` does; a value mapped to `false`
/// is dropped.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, BTreeSet<String>>);

impl Filters {
    /// Parse the JSON text of a `filters` parameter; absent or empty means no filter.
    pub fn parse(raw: Option<&str>) -> Result<Filters, ApiError> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Ok(Filters::default()),
            Some(r) => r,
        };
        if let Ok(map) = serde_json::from_str::<BTreeMap<String, BTreeMap<String, bool>>>(raw) {
            return Ok(Filters(
                map.into_iter()
                    .map(|(k, vs)| {
                        (
                            k,
                            vs.into_iter()
                                .filter(|(_, on)| *on)
                                .map(|(v, _)| v)
                                .collect(),
                        )
                    })
                    .collect(),
            ));
        }
        match serde_json::from_str::<BTreeMap<String, Vec<String>>>(raw) {
            Ok(map) => Ok(Filters(
                map.into_iter()
                    .map(|(k, vs)| (k, vs.into_iter().collect()))
                    .collect(),
            )),
            Err(e) => Err(ApiError::bad_request(format!("invalid filter: {e}"))),
        }
    }

    /// 400 `invalid filter 'key'` unless every key is one of `accepted`.
    pub fn validate(&self, accepted: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !accepted.contains(&k.as_str())) {
            Some(k) => Err(ApiError::bad_request(format!("invalid filter '{k}'"))),
            None => Ok(()),
        }
    }

    /// Whether `key` has any value.
    pub fn contains(&self, key: &str) -> bool {
        self.0.get(key).is_some_and(|v| !v.is_empty())
    }

    /// The values of `key`.
    pub fn values(&self, key: &str) -> impl Iterator<Item = &str> {
        self.0.get(key).into_iter().flatten().map(String::as_str)
    }

    /// True when `key` is unset or one of its values equals `source`.
    pub fn exact_match(&self, key: &str, source: &str) -> bool {
        !self.contains(key) || self.values(key).any(|v| v == source)
    }

    /// True when `key` is unset or one of its values is `source` or a prefix of it.
    pub fn fuzzy_match(&self, key: &str, source: &str) -> bool {
        !self.contains(key) || self.values(key).any(|v| source.starts_with(v))
    }

    /// True when `key` is unset or every value (`k` or `k=v`) is found in `labels`.
    pub fn match_kv_list(&self, key: &str, labels: &BTreeMap<String, String>) -> bool {
        self.values(key).all(|want| match want.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(want),
        })
    }
}

/// Parse a Docker timestamp parameter (`since`, `until`): Unix seconds with an optional
/// fraction of up to nine digits, as the CLI sends them; nanoseconds since the epoch.
pub fn parse_timestamp(key: &str, value: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::bad_request(format!("invalid value for {key}: {value:?}"));
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    secs.checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(nanos))
        .ok_or_else(bad)
}

/// Percent-decode a query component (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An API version from a path prefix: (major, minor).
pub type ApiVersion = (u32, u32);

/// Split `/v1.NN/rest` into the version and the rest; 400 for versions not served.
pub fn strip_version(path: &str) -> Result<(Option<ApiVersion>, &str), ApiError> {
    let Some(rest) = path.strip_prefix("/v") else {
        return Ok((None, path));
    };
    let (ver, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let Some((major, minor)) = ver.split_once('.') else {
        return Ok((None, path));
    };
    let (Ok(major), Ok(minor)) = (major.parse::<u32>(), minor.parse::<u32>()) else {
        return Ok((None, path));
    };
    if (major, minor) > (1, 50) {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too new. Maximum supported API version is {API_VERSION}"
        )));
    }
    if (major, minor) < (1, 24) {
        return Err(ApiError::bad_request(format!(
            "client version {ver} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
        )));
    }
    Ok((Some((major, minor)), tail))
}

/// Add the headers Docker puts on every response.
pub fn add_common_headers(r: &mut Resp) {
    let h = r.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static(API_VERSION));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert(
        http::header::SERVER,
        HeaderValue::from_static(concat!("Wharf/", env!("CARGO_PKG_VERSION"), " (linux)")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_stripped_or_refused() {
        assert_eq!(
            strip_version("/v1.50/containers/json").unwrap(),
            (Some((1, 50)), "/containers/json")
        );
        assert_eq!(
            strip_version("/containers/json").unwrap(),
            (None, "/containers/json")
        );
        assert_eq!(strip_version("/v1.24/_ping").unwrap().1, "/_ping");
        assert!(strip_version("/v1.51/info")
            .unwrap_err()
            .message
            .contains("too new"));
        assert!(strip_version("/v1.12/info")
            .unwrap_err()
            .message
            .contains("too old"));
        assert_eq!(strip_version("/volumes").unwrap(), (None, "/volumes"));
    }

    #[test]
    fn booleans_parse_like_docker() {
        let q = Query::parse(Some(
            "a=1&b=true&c=yes&d=0&e=false&f=no&g=none&h=&t=x&t=y&n=a%2Fb+c",
        ));
        assert!(q.bool("a") && q.bool("b") && q.bool("c"));
        assert!(!q.bool("d") && !q.bool("e") && !q.bool("f") && !q.bool("g") && !q.bool("h"));
        assert!(!q.bool("missing"));
        assert_eq!(q.all("t"), ["x", "y"]);
        assert_eq!(q.get("n"), Some("a/b c"));
        assert!(Query::parse(Some("x=%zz%4")).get("x").is_some());
    }

    #[test]
    fn filters_parse_in_map_and_legacy_forms() {
        let m = Filters::parse(Some(
            r#"{"status":{"running":true,"exited":false},"name":{"web":true}}"#,
        ))
        .unwrap();
        assert_eq!(m.values("status").collect::<Vec<_>>(), ["running"]);
        assert!(m.exact_match("name", "web") && !m.exact_match("name", "db"));
        assert!(m.exact_match("label", "anything"), "unset key matches all");
        let l = Filters::parse(Some(r#"{"status":["running","paused"]}"#)).unwrap();
        assert_eq!(l.values("status").count(), 2);
        assert_eq!(Filters::parse(None).unwrap(), Filters::default());
        assert_eq!(Filters::parse(Some("")).unwrap(), Filters::default());
        for bad in ["{", "[1]", r#"{"a":1}"#, r#"{"a":{"b":"x"}}"#, "null x"] {
            let e = Filters::parse(Some(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
        }
        assert!(m.validate(&["status", "name"]).is_ok());
        assert_eq!(
            m.validate(&["status"]).unwrap_err().message,
            "invalid filter 'name'"
        );
    }

    #[test]
    fn filter_matching_like_moby() {
        let f = Filters::parse(Some(r#"{"id":["abc"],"label":["a","b=2"]}"#)).unwrap();
        assert!(f.fuzzy_match("id", "abcdef") && !f.fuzzy_match("id", "xabc"));
        let mut labels = BTreeMap::new();
        labels.insert("a".to_string(), "1".to_string());
        assert!(!f.match_kv_list("label", &labels));
        labels.insert("b".to_string(), "2".to_string());
        assert!(f.match_kv_list("label", &labels));
        labels.insert("b".to_string(), "3".to_string());
        assert!(!f.match_kv_list("label", &labels));
    }

    #[test]
    fn timestamps_parse_like_the_cli_sends_them() {
        assert_eq!(parse_timestamp("since", "12").unwrap(), 12_000_000_000);
        assert_eq!(parse_timestamp("since", "12.5").unwrap(), 12_500_000_000);
        assert_eq!(
            parse_timestamp("since", "1700000000.000000001").unwrap(),
            1_700_000_000_000_000_001
        );
        for bad in [
            "",
            "x",
            "1.x",
            "1.1234567890",
            "99999999999999999999",
            "1.-1",
        ] {
            assert!(parse_timestamp("since", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_body_is_docker_shaped() {
        let r = error(&ApiError::no_such_container("x"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
