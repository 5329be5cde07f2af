//! Request parsing never panics: the path's version prefix, the query string, Docker's
//! `filters` JSON and timestamps, on arbitrary bytes as a client could send them.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_controller::api::http::{parse_timestamp, strip_version, Filters, Query};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A path and a query, split as hyper splits a request target.
    let (path, query) = text.split_once('?').unwrap_or((text, ""));
    if let Ok((version, rest)) = strip_version(path) {
        assert!(path.ends_with(rest));
        if let Some(v) = version {
            assert!(((1, 24)..=(1, 50)).contains(&v));
        }
    }
    let q = Query::parse(Some(query));
    let _ = q.bool("all");
    let _ = q.int("limit");
    for key in ["filters", "since", "until"] {
        if let Some(v) = q.get(key) {
            if let Ok(f) = Filters::parse(Some(v)) {
                let _ = f.validate(&["status", "name", "label"]);
                let _ = f.fuzzy_match("id", text);
                let _ = f.match_kv_list("label", &Default::default());
            }
            let _ = parse_timestamp(key, v);
        }
    }
    let _ = Filters::parse(Some(text));
});
