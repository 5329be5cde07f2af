//! `--change` instructions of `docker import` and `docker commit`: Dockerfile lines
//! (`CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`, `USER`, `LABEL`, `EXPOSE`, `VOLUME`,
//! `STOPSIGNAL`, `ONBUILD`) applied to an image's `config` object. Pure.

use serde_json::{json, Map, Value};

/// Why a change could not be applied; the text is Docker's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// An instruction that only a build can carry out (`RUN`, `COPY`, ...) or no instruction.
    #[error("{0} is not a valid change command")]
    NotAllowed(String),
    /// An instruction without the arguments it needs.
    #[error("{0} requires at least one argument")]
    MissingArgument(String),
    /// `ENV`/`LABEL` words that are not `key=value`.
    #[error("{instruction} names can not be blank: {word:?}")]
    BlankName {
        /// `ENV` or `LABEL`.
        instruction: String,
        /// The offending word.
        word: String,
    },
    /// A quote left open.
    #[error("unbalanced quotes in {0:?}")]
    Unbalanced(String),
}

/// Split `s` into words at unquoted whitespace, removing quotes; backslash escapes the
/// next character outside single quotes (Dockerfile word rules).
pub fn words(s: &str) -> Result<Vec<String>, ChangeError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') | (None, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                in_word = true;
            }
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(ChangeError::Unbalanced(s.to_string()));
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// A `CMD`/`ENTRYPOINT`/`VOLUME` argument: a JSON array of strings, or the shell form.
fn json_or_shell(rest: &str) -> Option<Vec<String>> {
    if rest.starts_with('[') {
        serde_json::from_str::<Vec<String>>(rest).ok()
    } else {
        None
    }
}

fn pairs(instruction: &str, rest: &str) -> Result<Vec<(String, String)>, ChangeError> {
    let ws = words(rest)?;
    if ws.is_empty() {
        return Err(ChangeError::MissingArgument(instruction.to_string()));
    }
    // Legacy form `ENV key value with spaces`.
    if !ws[0].contains('=') {
        let (key, value) = rest
            .trim()
            .split_once(char::is_whitespace)
            .unwrap_or((rest.trim(), ""));
        let value = words(value)?.join(" ");
        return Ok(vec![(key.to_string(), value)]);
    }
    ws.into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(ChangeError::BlankName {
                instruction: instruction.to_string(),
                word: w,
            }),
        })
        .collect()
}

/// `path` cleaned of `.`, `..` and repeated slashes, absolute.
fn clean_abs(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Insert `entries` into the object `cfg[key]`, replacing a non-object there.
fn extend_obj(cfg: &mut Map<String, Value>, key: &str, entries: Vec<(String, Value)>) {
    let slot = cfg.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    if let Some(m) = slot.as_object_mut() {
        m.extend(entries);
    }
}

/// Apply `changes` (each may hold several lines) to `cfg`, the image config's `config`
/// object, in order, as `docker commit --change` / `docker import --change` do.
pub fn apply_changes(cfg: &mut Map<String, Value>, changes: &[String]) -> Result<(), ChangeError> {
    let mut cmd_set = false;
    for line in changes.iter().flat_map(|c| c.lines()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let instruction = word.to_ascii_lowercase();
        let rest = rest.trim();
        let need = |rest: &str| {
            if rest.is_empty() {
                Err(ChangeError::MissingArgument(word.to_ascii_uppercase()))
            } else {
                Ok(())
            }
        };
        match instruction.as_str() {
            "cmd" | "entrypoint" => {
                let argv = json_or_shell(rest).unwrap_or_else(|| {
                    if rest.is_empty() {
                        vec![]
                    } else {
                        vec!["/bin/sh".into(), "-c".into(), rest.to_string()]
                    }
                });
                if instruction == "cmd" {
                    cfg.insert("Cmd".into(), json!(argv));
                    cmd_set = true;
                } else {
                    cfg.insert("Entrypoint".into(), json!(argv));
                    if !cmd_set {
                        cfg.insert("Cmd".into(), Value::Null);
                    }
                }
            }
            "env" => {
                let kvs = pairs("ENV", rest)?;
                let env = cfg.entry("Env").or_insert_with(|| json!([]));
                if !env.is_array() {
                    *env = json!([]);
                }
                if let Value::Array(list) = env {
                    for (k, v) in kvs {
                        let entry = json!(format!("{k}={v}"));
                        let prefix = format!("{k}=");
                        match list
                            .iter_mut()
                            .find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix) || s == k))
                        {
                            Some(slot) => *slot = entry,
                            None => list.push(entry),
                        }
                    }
                }
            }
            "label" => {
                let kvs = pairs("LABEL", rest)?;
                extend_obj(
                    cfg,
                    "Labels",
                    kvs.into_iter().map(|(k, v)| (k, json!(v))).collect(),
                );
            }
            "workdir" => {
                need(rest)?;
                let dir = words(rest)?.join(" ");
                let base = cfg
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or("/")
                    .to_string();
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{base}/{dir}")
                };
                cfg.insert("WorkingDir".into(), json!(clean_abs(&joined)));
            }
            "user" => {
                need(rest)?;
                cfg.insert("User".into(), json!(rest));
            }
            "stopsignal" => {
                need(rest)?;
                cfg.insert("StopSignal".into(), json!(rest));
            }
            "expose" => {
                need(rest)?;
                let ports = words(rest)?
                    .into_iter()
                    .map(|p| {
                        let p = if p.contains('/') {
                            p
                        } else {
                            format!("{p}/tcp")
                        };
                        (p, json!({}))
                    })
                    .collect();
                extend_obj(cfg, "ExposedPorts", ports);
            }
            "volume" => {
                need(rest)?;
                let list = match json_or_shell(rest) {
                    Some(v) => v,
                    None => words(rest)?,
                };
                extend_obj(
                    cfg,
                    "Volumes",
                    list.into_iter().map(|v| (v, json!({}))).collect(),
                );
            }
            "onbuild" => {
                need(rest)?;
                let ob = cfg.entry("OnBuild").or_insert_with(|| json!([]));
                if !ob.is_array() {
                    *ob = json!([]);
                }
                if let Value::Array(list) = ob {
                    list.push(json!(rest));
                }
            }
            _ => return Err(ChangeError::NotAllowed(instruction)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(start: Value, changes: &[&str]) -> Result<Value, ChangeError> {
        let mut m = start.as_object().cloned().unwrap_or_default();
        apply_changes(
            &mut m,
            &changes.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )?;
        Ok(Value::Object(m))
    }

    #[test]
    fn cmd_and_entrypoint_take_json_or_shell_form() {
        let c = apply(json!({}), &[r#"CMD ["sh", "-c", "echo hi"]"#]).unwrap();
        assert_eq!(c["Cmd"], json!(["sh", "-c", "echo hi"]));
        let c = apply(json!({}), &["cmd echo hi"]).unwrap();
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi"]));
        // ENTRYPOINT clears an inherited CMD, not one set by the same changes.
        let c = apply(json!({"Cmd": ["old"]}), &[r#"ENTRYPOINT ["/ep"]"#]).unwrap();
        assert_eq!(
            (c["Entrypoint"].clone(), c["Cmd"].clone()),
            (json!(["/ep"]), Value::Null)
        );
        let c = apply(json!({}), &[r#"CMD ["a"]"#, r#"ENTRYPOINT ["/ep"]"#]).unwrap();
        assert_eq!(c["Cmd"], json!(["a"]));
    }

    #[test]
    fn env_label_workdir_and_friends() {
        let c = apply(
            json!({"Env": ["PATH=/bin", "A=0"], "WorkingDir": "/srv"}),
            &[
                "ENV A=1 B=\"two words\"",
                "ENV C three four",
                "WORKDIR app/../data",
                "LABEL x=y \"k 2\"=v",
                "EXPOSE 80 53/udp",
                "USER nobody",
                "VOLUME [\"/v\"]\nSTOPSIGNAL SIGINT",
            ],
        )
        .unwrap();
        assert_eq!(
            c["Env"],
            json!(["PATH=/bin", "A=1", "B=two words", "C=three four"])
        );
        assert_eq!(c["WorkingDir"], "/srv/data");
        assert_eq!(c["Labels"], json!({"x": "y", "k 2": "v"}));
        assert_eq!(c["ExposedPorts"], json!({"80/tcp": {}, "53/udp": {}}));
        assert_eq!(c["User"], "nobody");
        assert_eq!(c["Volumes"], json!({"/v": {}}));
        assert_eq!(c["StopSignal"], "SIGINT");
        let c = apply(json!({}), &["WORKDIR /a/b", "WORKDIR c"]).unwrap();
        assert_eq!(c["WorkingDir"], "/a/b/c");
    }

    #[test]
    fn build_only_and_malformed_changes_are_refused() {
        assert_eq!(
            apply(json!({}), &["RUN rm -rf /"]).unwrap_err().to_string(),
            "run is not a valid change command"
        );
        assert!(apply(json!({}), &["FROM scratch"]).is_err());
        assert!(apply(json!({}), &["ENV"]).is_err());
        assert!(apply(json!({}), &["ENV =x"]).is_err());
        assert!(apply(json!({}), &["WORKDIR"]).is_err());
        assert!(apply(json!({}), &["LABEL a=\"open"]).is_err());
        assert_eq!(
            apply(json!({"A": 1}), &["", "# note"]).unwrap(),
            json!({"A": 1})
        );
    }

    #[test]
    fn words_follow_dockerfile_quoting() {
        assert_eq!(
            words(r#"a "b c" 'd e' f\ g"#).unwrap(),
            ["a", "b c", "d e", "f g"]
        );
        assert_eq!(words("").unwrap(), Vec::<String>::new());
    }
}
