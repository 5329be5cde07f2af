//! Docker Engine API request bodies and image config fields the controller reads.
//!
//! Only the fields Wharf acts on are typed; unknown fields are ignored as Docker ignores
//! them. The raw JSON is kept beside for `inspect`.

use serde::Deserialize;
use std::collections::BTreeMap;

/// `Cmd` and `Entrypoint` are arrays, but old clients may send a single string.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum StrOrVec {
    /// `"sh -c x"`: split by the shell form rules of the caller (taken as one word here).
    One(String),
    /// `["sh", "-c", "x"]`.
    Many(Vec<String>),
}

impl StrOrVec {
    /// As a list of words.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StrOrVec::One(s) if s.is_empty() => vec![],
            StrOrVec::One(s) => vec![s],
            StrOrVec::Many(v) => v,
        }
    }
}

/// `Config` of `POST /containers/create` (the top level of the body).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateConfig {
    /// Image reference as the user typed it.
    pub image: String,
    /// Arguments, or the command when there is no entrypoint.
    pub cmd: Option<StrOrVec>,
    /// Entrypoint override; `[""]`/`""` clears the image's.
    pub entrypoint: Option<StrOrVec>,
    /// `KEY=value` additions.
    pub env: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: String,
    /// `user[:group]`.
    pub user: String,
    /// Host name.
    pub hostname: String,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Stop signal name or number.
    pub stop_signal: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Host settings.
    pub host_config: Option<HostConfig>,
}

/// `HostConfig` fields the skeleton acts on.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `--rm`.
    pub auto_remove: bool,
}

/// The `config` object of an image config (Docker's and OCI's field names agree).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageRunConfig {
    /// Default environment.
    pub env: Option<Vec<String>>,
    /// Default arguments.
    pub cmd: Option<Vec<String>>,
    /// Default entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Default working directory.
    pub working_dir: String,
    /// Default user.
    pub user: String,
    /// Default stop signal.
    pub stop_signal: String,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
}

/// The parts of an image config file the controller reads.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct ImageConfigFile {
    /// Run defaults.
    pub config: Option<ImageRunConfig>,
    /// RFC 3339 creation time.
    pub created: Option<String>,
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
}

/// Parse a signal given as a name (`SIGTERM`, `TERM`) or number; `None` if unknown.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        _ => return None,
    };
    Some(n)
}

/// The resolved process of a container: Docker's entrypoint/cmd merge.
///
/// A request `Entrypoint` replaces the image's and then drops the image's `Cmd`; an empty
/// request entrypoint (`--entrypoint ""`) clears it; request `Cmd` replaces the image's.
pub fn merge_process(
    image: &ImageRunConfig,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
) -> (Vec<String>, Vec<String>) {
    let (ep, cmd) = match entrypoint {
        Some(ep) => {
            let ep: Vec<String> = if ep.len() == 1 && ep[0].is_empty() {
                vec![]
            } else {
                ep
            };
            (ep, cmd.unwrap_or_default())
        }
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            cmd.or_else(|| image.cmd.clone()).unwrap_or_default(),
        ),
    };
    (ep, cmd)
}

/// Image env overridden key by key by the request's env (Docker's `ReplaceOrAppendEnvValues`).
pub fn merge_env(image: &[String], request: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
    let mut out: Vec<String> = image.to_vec();
    for kv in request {
        let k = key(kv);
        if !kv.contains('=') {
            // `-e NAME` without a value and no such variable on the client: drop it.
            out.retain(|e| key(e) != k);
            continue;
        }
        match out.iter_mut().find(|e| key(e) == k) {
            Some(slot) => *slot = kv.clone(),
            None => out.push(kv.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cmd_replaces_image_cmd_and_entrypoint_drops_it() {
        let img = ImageRunConfig {
            entrypoint: Some(v(&["/ep"])),
            cmd: Some(v(&["a"])),
            ..Default::default()
        };
        assert_eq!(merge_process(&img, None, None), (v(&["/ep"]), v(&["a"])));
        assert_eq!(
            merge_process(&img, None, Some(v(&["b"]))),
            (v(&["/ep"]), v(&["b"]))
        );
        assert_eq!(
            merge_process(&img, Some(v(&["/x"])), None),
            (v(&["/x"]), v(&[]))
        );
        assert_eq!(
            merge_process(&img, Some(v(&[""])), Some(v(&["sh"]))),
            (v(&[]), v(&["sh"]))
        );
    }

    #[test]
    fn env_overrides_by_key() {
        let out = merge_env(&v(&["PATH=/bin", "A=1"]), &v(&["A=2", "B=3", "PATH"]));
        assert_eq!(out, v(&["A=2", "B=3"]));
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn create_body_ignores_unknown_fields_and_accepts_string_cmd() {
        let c: CreateConfig = serde_json::from_str(
            r#"{"Image":"busybox","Cmd":"true","Whatever":{"x":1},"HostConfig":{"AutoRemove":true,"Binds":null}}"#,
        )
        .unwrap();
        assert_eq!(c.cmd.unwrap().into_vec(), v(&["true"]));
        assert!(c.host_config.unwrap().auto_remove);
    }
}
