//! What `docker network create` and the network part of `docker run` may ask for, checked
//! before anything is recorded. The options Wharf carries out are parsed into types; every
//! other one that Docker would act on is refused with a 400 naming it, instead of being
//! accepted and ignored. Pure: the request's JSON in, a decision out.
//!
//! Carried out: `--subnet`, `--gateway`, `--internal`, `--label`, and the bridge driver
//! options `com.docker.network.bridge.enable_icc` and
//! `com.docker.network.bridge.enable_ip_masquerade`. Refused: other driver options
//! (`-o`), `--ipv6`, `--ipv4=false`, `--attachable`, `--ingress`, `--config-only`,
//! `--config-from`, `--scope` other than local, `--ipam-driver`, `--ipam-opt`,
//! `--ip-range`, `--aux-address` and a second `--subnet`; on `run`, `--ip`, `--ip6`,
//! `--link-local-ip`, `--mac-address`, `--link`, endpoint `driver-opt`s, `--domainname`,
//! `NetworkDisabled`, and (as Docker) aliases on the default bridge and the options that
//! conflict with `--network container:`.

use super::network::NetworkMode;
use crate::engine::error::EngineError;
use serde_json::Value;
use std::collections::BTreeMap;

/// The bridge driver option turning inter-container communication on or off.
pub const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
/// The bridge driver option turning outbound masquerading on or off.
pub const ENABLE_IP_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";

/// Why a network create or container create request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A driver other than `bridge` (Docker answers 404 for a missing plugin).
    #[error("plugin \"{0}\" not found")]
    NoPlugin(String),
    /// A field of the request has the wrong JSON type.
    #[error("invalid JSON: {field}: {expected} expected")]
    Type {
        /// The field.
        field: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A bridge driver option (`-o key=value`) Wharf does not carry out.
    #[error(
        "network option {0:?} is not supported by wharf (supported: {ENABLE_ICC}, {ENABLE_IP_MASQUERADE})"
    )]
    DriverOption(String),
    /// A boolean driver option with another value.
    #[error("invalid value {value:?} for network option {key}: expected true or false")]
    Bool {
        /// The option.
        key: String,
        /// The value given.
        value: String,
    },
    /// A feature Wharf does not have, named as the CLI's flag.
    #[error("{0} is not supported by wharf")]
    Unsupported(String),
    /// As [`OptionError::Unsupported`], with what to do instead.
    #[error("{what} is not supported by wharf; {instead}")]
    Instead {
        /// The feature, named as the CLI's flag.
        what: &'static str,
        /// What to use instead.
        instead: &'static str,
    },
    /// A combination Docker refuses, with Docker's words.
    #[error("{0}")]
    Conflict(&'static str),
    /// A label under a key that holds a network setting (set it with its option).
    #[error("label {0:?} is reserved: set it with --internal or -o")]
    ReservedLabel(String),
}

impl From<OptionError> for EngineError {
    fn from(e: OptionError) -> EngineError {
        match e {
            OptionError::NoPlugin(_) => EngineError::not_found(e.to_string()),
            _ => EngineError::invalid(e.to_string()),
        }
    }
}

/// A `POST /networks/create` request that Wharf can carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkCreate {
    /// The network's name.
    pub name: String,
    /// `--subnet`, as given.
    pub subnet: Option<String>,
    /// `--gateway`, as given.
    pub gateway: Option<String>,
    /// `--label`s.
    pub labels: BTreeMap<String, String>,
    /// `--internal`.
    pub internal: bool,
    /// `enable_icc` (default true).
    pub icc: bool,
    /// `enable_ip_masquerade` (default true).
    pub masquerade: bool,
}

fn unsupported(what: &str) -> OptionError {
    OptionError::Unsupported(what.to_string())
}

fn flag(body: &Value, field: &'static str) -> Result<Option<bool>, OptionError> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(OptionError::Type {
            field,
            expected: "a boolean",
        }),
    }
}

fn text<'a>(v: &'a Value, field: &'static str) -> Result<&'a str, OptionError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(""),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(OptionError::Type {
            field,
            expected: "a string",
        }),
    }
}

/// True when `v` holds something: a non-empty string, array or object, or `true`.
fn given(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(_) => true,
    }
}

/// Go's `strconv.ParseBool`, which dockerd uses for driver options.
fn parse_bool(key: &str, value: &str) -> Result<bool, OptionError> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(OptionError::Bool {
            key: key.to_string(),
            value: value.to_string(),
        }),
    }
}

/// Check a `POST /networks/create` body and take out what Wharf carries out.
pub fn parse_create(body: &Value) -> Result<NetworkCreate, OptionError> {
    let driver = text(body, "Driver")?;
    if !driver.is_empty() && driver != "bridge" {
        return Err(OptionError::NoPlugin(driver.to_string()));
    }
    match text(body, "Scope")? {
        "" | "local" => {}
        other => return Err(unsupported(&format!("network scope {other:?} (--scope)"))),
    }
    for (field, what) in [
        ("Attachable", "an attachable network (--attachable)"),
        ("Ingress", "an ingress network (--ingress)"),
        ("ConfigOnly", "a configuration-only network (--config-only)"),
        ("EnableIPv6", "IPv6 (--ipv6)"),
    ] {
        if flag(body, field)? == Some(true) {
            return Err(unsupported(what));
        }
    }
    if flag(body, "EnableIPv4")? == Some(false) {
        return Err(unsupported("a network without IPv4 (--ipv4=false)"));
    }
    if given(body.get("ConfigFrom").and_then(|c| c.get("Network"))) {
        return Err(unsupported(
            "a network configured from another (--config-from)",
        ));
    }
    let ipam = body.get("IPAM").cloned().unwrap_or(Value::Null);
    match text(&ipam, "Driver")? {
        "" | "default" => {}
        other => {
            return Err(unsupported(&format!(
                "IPAM driver {other:?} (--ipam-driver)"
            )))
        }
    }
    if given(ipam.get("Options")) {
        return Err(unsupported("IPAM options (--ipam-opt)"));
    }
    let configs = match ipam.get("Config") {
        None | Some(Value::Null) => vec![],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(OptionError::Type {
                field: "IPAM.Config",
                expected: "an array",
            })
        }
    };
    if configs.len() > 1 {
        return Err(unsupported("more than one subnet per network (--subnet)"));
    }
    let config = configs.into_iter().next().unwrap_or(Value::Null);
    if given(config.get("IPRange")) {
        return Err(unsupported("an allocation range (--ip-range)"));
    }
    if given(config.get("AuxiliaryAddresses")) {
        return Err(unsupported("auxiliary addresses (--aux-address)"));
    }
    let non_empty = |s: &str| Some(s.to_string()).filter(|s| !s.is_empty());
    let subnet = non_empty(text(&config, "Subnet")?);
    let gateway = non_empty(text(&config, "Gateway")?);
    let (mut icc, mut masquerade) = (true, true);
    match body.get("Options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (key, value) in o {
                let value = value.as_str().ok_or(OptionError::Type {
                    field: "Options",
                    expected: "string values",
                })?;
                match key.as_str() {
                    ENABLE_ICC => icc = parse_bool(key, value)?,
                    ENABLE_IP_MASQUERADE => masquerade = parse_bool(key, value)?,
                    _ => return Err(OptionError::DriverOption(key.clone())),
                }
            }
        }
        Some(_) => {
            return Err(OptionError::Type {
                field: "Options",
                expected: "an object",
            })
        }
    }
    let labels: BTreeMap<String, String> = match body.get("Labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(l) => serde_json::from_value(l.clone()).map_err(|_| OptionError::Type {
            field: "Labels",
            expected: "an object of strings",
        })?,
    };
    if let Some(key) = labels
        .keys()
        .find(|k| wharf_protocol::network::SETTING_KEYS.contains(&k.as_str()))
    {
        return Err(OptionError::ReservedLabel(key.clone()));
    }
    Ok(NetworkCreate {
        name: text(body, "Name")?.to_string(),
        subnet,
        gateway,
        labels,
        internal: flag(body, "Internal")?.unwrap_or(false),
        icc,
        masquerade,
    })
}

/// The driver options inspect shows for a network: those that differ from the default.
pub fn shown_options(icc: bool, masquerade: bool) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    if !icc {
        out.insert(ENABLE_ICC, "false".to_string());
    }
    if !masquerade {
        out.insert(ENABLE_IP_MASQUERADE, "false".to_string());
    }
    out
}

/// The networks of a create request's `NetworkingConfig.EndpointsConfig`, by the name the
/// client used, with their settings.
pub fn endpoints_config(body: &Value) -> Vec<(&str, &Value)> {
    body.get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object)
        .map(|o| o.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default()
}

/// True when `name` (as in `NetworkMode` or `EndpointsConfig`) is a user-defined network,
/// not the default bridge, `host`, `none` or `container:`.
fn user_defined(name: &str) -> bool {
    match NetworkMode::parse(name) {
        NetworkMode::Network(n) => n != "bridge",
        _ => false,
    }
}

/// Check one endpoint's settings (`EndpointsConfig` of a create, `EndpointConfig` of
/// `docker network connect`) on a network that is `user_defined` or not.
pub fn check_endpoint(user_defined: bool, ep: &Value) -> Result<(), OptionError> {
    let ipam = ep.get("IPAMConfig").cloned().unwrap_or(Value::Null);
    if given(ipam.get("IPv4Address")) || given(ipam.get("IPv6Address")) {
        return Err(unsupported("a fixed address (--ip, --ip6)"));
    }
    if given(ipam.get("LinkLocalIPs")) {
        return Err(unsupported("link-local addresses (--link-local-ip)"));
    }
    if given(ep.get("MacAddress")) {
        return Err(unsupported("a fixed MAC address (--mac-address)"));
    }
    if given(ep.get("Links")) {
        return Err(unsupported("legacy container links (--link)"));
    }
    if given(ep.get("DriverOpts")) {
        return Err(unsupported(
            "endpoint driver options (--network driver-opt=, --driver-opt)",
        ));
    }
    if !user_defined && given(ep.get("Aliases")) {
        return Err(OptionError::Conflict(
            "network-scoped aliases are only supported for user-defined networks",
        ));
    }
    Ok(())
}

/// Check the network settings of a `POST /containers/create` body (`body` the whole
/// request, `host_config` its `HostConfig`): refuse what Wharf does not carry out and
/// what Docker refuses.
pub fn check_run(body: &Value, host_config: &Value) -> Result<(), OptionError> {
    let mode_text = text(host_config, "NetworkMode")?;
    let mode = NetworkMode::parse(mode_text);
    if let NetworkMode::Container(target) = &mode {
        if target.is_empty() {
            return Err(OptionError::Conflict(
                "invalid network mode: invalid container format container:<name|id>",
            ));
        }
        let conflicts: [(bool, &'static str); 7] = [
            (
                given(body.get("Hostname")),
                "conflicting options: hostname and the network mode",
            ),
            (
                given(host_config.get("Links")),
                "conflicting options: container type network can't be used with links. This would result in undefined behavior",
            ),
            (
                given(host_config.get("Dns")),
                "conflicting options: dns and the network mode",
            ),
            (
                given(host_config.get("ExtraHosts")),
                "conflicting options: custom host-to-IP mapping and the network mode",
            ),
            (
                given(host_config.get("PortBindings"))
                    || given(host_config.get("PublishAllPorts")),
                "conflicting options: port publishing and the container type network mode",
            ),
            (
                given(body.get("ExposedPorts")),
                "conflicting options: port exposing and the container type network mode",
            ),
            (
                given(body.get("MacAddress")),
                "conflicting options: mac-address and the network mode",
            ),
        ];
        if let Some((_, message)) = conflicts.iter().find(|(hit, _)| *hit) {
            return Err(OptionError::Conflict(message));
        }
    }
    if mode == NetworkMode::Host && given(host_config.get("Links")) {
        return Err(OptionError::Conflict(
            "conflicting options: host type networking can't be used with links. This would result in undefined behavior",
        ));
    }
    if given(host_config.get("Links")) {
        return Err(OptionError::Instead {
            what: "legacy container links (--link)",
            instead: "put the containers on a user-defined network and reach them by name",
        });
    }
    if given(body.get("MacAddress")) {
        return Err(unsupported("a fixed MAC address (--mac-address)"));
    }
    if given(body.get("Domainname")) {
        return Err(unsupported("a domain name (--domainname)"));
    }
    if given(body.get("NetworkDisabled")) {
        return Err(OptionError::Instead {
            what: "NetworkDisabled",
            instead: "use --network none",
        });
    }
    for (name, ep) in endpoints_config(body) {
        if NetworkMode::parse(name) != mode {
            match mode {
                NetworkMode::Network(_) => {}
                NetworkMode::None => return Err(OptionError::Conflict(
                    "container cannot be connected to multiple networks with one of the networks in private (none) mode",
                )),
                NetworkMode::Host | NetworkMode::Container(_) => return Err(OptionError::Conflict(
                    "container sharing network namespace with another container or host cannot be connected to any other network",
                )),
            }
        }
        check_endpoint(user_defined(name), ep)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "network_options_test.rs"]
mod tests;
