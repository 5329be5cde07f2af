//! Metadata instructions (`ENV`, `LABEL`, `EXPOSE`, `VOLUME`, `USER`, `STOPSIGNAL`,
//! `CMD`, `ENTRYPOINT`, `SHELL`, `ONBUILD`, `HEALTHCHECK`, `MAINTAINER`) applied to an
//! image's run config, with the comment the step's `#(nop)` command carries. Pure.

use super::dockerfile::{self, Instruction};
use crate::docker_types::parse_signal;
use serde_json::{json, Map, Value};

/// The strings of a JSON array (empty if it is none).
pub fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The config's `SHELL`, or `/bin/sh -c`.
pub fn shell(cfg: &Map<String, Value>) -> Vec<String> {
    let s = strings(cfg.get("Shell"));
    if s.is_empty() {
        vec!["/bin/sh".into(), "-c".into()]
    } else {
        s
    }
}

/// An instruction's command: the JSON words (exec form), or `SHELL… rest`.
pub fn command(cfg: &Map<String, Value>, ins: &Instruction) -> Vec<String> {
    match &ins.json {
        Some(words) => words.clone(),
        None => {
            let mut v = shell(cfg);
            v.push(ins.rest.clone());
            v
        }
    }
}

/// Quote a word for display and re-parsing when it holds spaces or quotes.
pub fn quote(s: &str) -> String {
    if s.is_empty()
        || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\' || c == '$')
    {
        format!(
            "\"{}\"",
            s.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
        )
    } else {
        s.to_string()
    }
}

/// Apply the metadata instruction `ins` to the run config `cfg` (and the image's
/// `author`); `cmd_set` records a `CMD` of this stage, which a later `ENTRYPOINT` keeps.
/// Returns the comment for the step's `#(nop)` command, or why the instruction is invalid.
pub fn apply(
    cfg: &mut Map<String, Value>,
    author: &mut Option<String>,
    cmd_set: &mut bool,
    ins: &Instruction,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let kw = ins.keyword.as_str();
    let comment = match kw {
        "ENV" => {
            let pairs = dockerfile::name_values("ENV", &ins.rest, lookup, escape)?;
            let mut env = strings(cfg.get("Env"));
            let mut shown = vec![];
            for (k, v) in pairs {
                let kv = format!("{k}={v}");
                match env
                    .iter_mut()
                    .find(|e| e.split('=').next() == Some(k.as_str()))
                {
                    Some(slot) => *slot = kv.clone(),
                    None => env.push(kv.clone()),
                }
                shown.push(kv);
            }
            cfg.insert("Env".into(), json!(env));
            format!("ENV {}", shown.join(" "))
        }
        "LABEL" => {
            let pairs = dockerfile::name_values("LABEL", &ins.rest, lookup, escape)?;
            let slot = cfg.entry("Labels").or_insert_with(|| json!({}));
            if !slot.is_object() {
                *slot = json!({});
            }
            let mut shown = vec![];
            if let Some(m) = slot.as_object_mut() {
                for (k, v) in pairs {
                    shown.push(format!("{}={}", quote(&k), quote(&v)));
                    m.insert(k, json!(v));
                }
            }
            format!("LABEL {}", shown.join(" "))
        }
        "MAINTAINER" => {
            let who = dockerfile::expand(&ins.rest, lookup, escape).map_err(|e| e.to_string())?;
            *author = Some(who.clone());
            format!("MAINTAINER {who}")
        }
        "EXPOSE" => {
            let mut ports = cfg
                .get("ExposedPorts")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let mut shown = vec![];
            for w in
                dockerfile::expand_words(&ins.rest, lookup, escape).map_err(|e| e.to_string())?
            {
                let (port, proto) = w.split_once('/').unwrap_or((w.as_str(), "tcp"));
                let ok = port
                    .split('-')
                    .all(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
                if !ok || !matches!(proto.to_ascii_lowercase().as_str(), "tcp" | "udp" | "sctp") {
                    return Err(format!("invalid containerPort: {w}"));
                }
                let k = format!("{port}/{}", proto.to_ascii_lowercase());
                shown.push(k.clone());
                ports.insert(k, json!({}));
            }
            cfg.insert("ExposedPorts".into(), Value::Object(ports));
            format!("EXPOSE {}", shown.join(" "))
        }
        "VOLUME" => {
            let vols = match &ins.json {
                Some(w) => w.clone(),
                None => dockerfile::expand_words(&ins.rest, lookup, escape)
                    .map_err(|e| e.to_string())?,
            };
            let mut m = cfg
                .get("Volumes")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for v in &vols {
                if v.trim().is_empty() {
                    return Err("VOLUME specified can not be an empty string".to_string());
                }
                m.insert(v.clone(), json!({}));
            }
            cfg.insert("Volumes".into(), Value::Object(m));
            format!("VOLUME {}", json!(vols))
        }
        "USER" => {
            let u = dockerfile::expand(&ins.rest, lookup, escape).map_err(|e| e.to_string())?;
            cfg.insert("User".into(), json!(u));
            format!("USER {u}")
        }
        "STOPSIGNAL" => {
            let s = dockerfile::expand(&ins.rest, lookup, escape).map_err(|e| e.to_string())?;
            if parse_signal(&s).is_none() {
                return Err(format!("Invalid signal: {s}"));
            }
            cfg.insert("StopSignal".into(), json!(s));
            format!("STOPSIGNAL {s}")
        }
        "CMD" => {
            let cmd = command(cfg, ins);
            cfg.insert("Cmd".into(), json!(cmd));
            *cmd_set = true;
            format!("CMD {}", json!(cmd))
        }
        "ENTRYPOINT" => {
            let ep = command(cfg, ins);
            let ep = if ins.rest.is_empty() { vec![] } else { ep };
            cfg.insert(
                "Entrypoint".into(),
                if ep.is_empty() {
                    Value::Null
                } else {
                    json!(ep)
                },
            );
            if !*cmd_set {
                cfg.insert("Cmd".into(), Value::Null);
            }
            format!("ENTRYPOINT {}", json!(ep))
        }
        "SHELL" => {
            let Some(sh) = ins.json.clone().filter(|s| !s.is_empty()) else {
                return Err("SHELL requires the arguments to be in JSON form".to_string());
            };
            cfg.insert("Shell".into(), json!(sh));
            format!("SHELL {}", json!(sh))
        }
        "ONBUILD" => {
            let (word, _) = ins
                .rest
                .split_once(char::is_whitespace)
                .unwrap_or((ins.rest.as_str(), ""));
            let w = word.to_ascii_uppercase();
            if matches!(w.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(format!("{w} isn't allowed as an ONBUILD trigger"));
            }
            let mut ob = strings(cfg.get("OnBuild"));
            ob.push(ins.rest.clone());
            cfg.insert("OnBuild".into(), json!(ob));
            format!("ONBUILD {}", ins.rest)
        }
        "HEALTHCHECK" => {
            let hc = healthcheck(ins)?;
            cfg.insert("Healthcheck".into(), hc.clone());
            format!("HEALTHCHECK {}", ins.rest)
        }
        other => return Err(format!("not a metadata instruction: {other}")),
    };
    Ok(comment)
}

/// `HEALTHCHECK [flags] CMD …` / `HEALTHCHECK NONE` as the config's `Healthcheck`.
fn healthcheck(ins: &Instruction) -> Result<Value, String> {
    let rest = ins.rest.trim();
    if rest.eq_ignore_ascii_case("none") {
        return Ok(json!({"Test": ["NONE"]}));
    }
    let (word, cmd) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    if !word.eq_ignore_ascii_case("cmd") {
        return Err(format!("Unknown type {word:?} in HEALTHCHECK (try CMD)"));
    }
    let cmd = cmd.trim();
    if cmd.is_empty() {
        return Err("Missing command after HEALTHCHECK CMD".into());
    }
    let test = match serde_json::from_str::<Vec<String>>(cmd) {
        Ok(words) if cmd.starts_with('[') => {
            let mut t = vec!["CMD".to_string()];
            t.extend(words);
            t
        }
        _ => {
            vec!["CMD-SHELL".to_string(), cmd.to_string()]
        }
    };
    let mut hc = json!({ "Test": test });
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(v) = ins.flag(flag) {
            let ns = parse_duration_ns(v).ok_or_else(|| format!("invalid --{flag}: {v}"))?;
            hc[key] = json!(ns);
        }
    }
    if let Some(r) = ins.flag("retries") {
        let n: i64 = r.parse().map_err(|_| format!("invalid --retries: {r}"))?;
        hc["Retries"] = json!(n);
    }
    Ok(hc)
}

/// A Go duration (`30s`, `1m30s`, `500ms`, `1h`) in nanoseconds.
pub fn parse_duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

#[cfg(test)]
#[path = "metadata_test.rs"]
mod tests;
