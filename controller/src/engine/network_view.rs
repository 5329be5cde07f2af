//! Read-only views of the network state in Docker's shapes: `NetworkSettings` of inspect,
//! `Ports` and `Networks` of `docker ps`, the `publish`/`expose` filters. Pure functions
//! of the cluster state.

use super::network::{mode_of, NetworkMode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use wharf_protocol::network::{mac_text, parse_port_key, Endpoint, NetworkRecord, Proto};
use wharf_protocol::state::{ClusterState, ContainerRecord};

/// The `Ports` list of `docker ps` for `c`.
pub fn ps_ports_json(s: &ClusterState, c: &ContainerRecord) -> Value {
    let mut out = vec![];
    for e in s.endpoints.get(&c.id).into_iter().flatten() {
        for p in &e.ports {
            out.push(json!({
                "IP": super::network::shown_host_ip(s, c.node, p.host_ip),
                "PrivatePort": p.container_port,
                "PublicPort": p.host_port,
                "Type": p.proto.as_str(),
            }));
        }
    }
    Value::Array(out)
}

/// A container port and its protocol.
pub type PortKey = (u16, Proto);

/// The container ports `c` publishes (`PortBindings`) and exposes (`ExposedPorts` and
/// the published ones), for `docker ps --filter publish=/expose=`.
pub fn port_keys(c: &ContainerRecord) -> (Vec<PortKey>, Vec<PortKey>) {
    let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
    let cfg: Value = serde_json::from_str(&c.config_json).unwrap_or(Value::Null);
    let keys = |v: Option<&Value>| -> Vec<PortKey> {
        v.and_then(Value::as_object)
            .map(|o| o.keys().filter_map(|k| parse_port_key(k).ok()).collect())
            .unwrap_or_default()
    };
    let published = keys(hc.get("PortBindings"));
    let mut exposed = keys(cfg.get("ExposedPorts"));
    exposed.extend(published.iter().copied());
    (published, exposed)
}

/// A `publish`/`expose` filter value: `80`, `80/udp`, `8000-8080/tcp`.
pub fn parse_port_filter(v: &str) -> Option<(u16, u16, Proto)> {
    let (ports, proto) = v.split_once('/').unwrap_or((v, "tcp"));
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return None,
    };
    let (lo, hi) = ports.split_once('-').unwrap_or((ports, ports));
    Some((lo.parse().ok()?, hi.parse().ok()?, proto))
}

/// Names of the networks `c` is on (`none`/`host` for those modes).
pub fn network_names(s: &ClusterState, c: &ContainerRecord) -> Vec<String> {
    match mode_of(c) {
        NetworkMode::None => vec!["none".into()],
        NetworkMode::Host => vec!["host".into()],
        NetworkMode::Container(_) => vec![],
        NetworkMode::Network(_) => s
            .connections
            .get(&c.id)
            .into_iter()
            .flat_map(|m| m.keys())
            .filter_map(|id| s.networks.get(id).map(|n| n.name.clone()))
            .collect(),
    }
}

/// `NetworkSettings.Networks` of `docker ps`.
pub fn ps_networks_json(s: &ClusterState, c: &ContainerRecord) -> Value {
    let settings = network_settings_json(s, c, &Value::Null, &BTreeSet::new(), "");
    settings
        .get("Networks")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// Docker's `NetworkSettings` for `c` (pure over the state); `sandbox_key` is its
/// network namespace as its agent reports it (empty unless it runs).
pub fn network_settings_json(
    s: &ClusterState,
    c: &ContainerRecord,
    host_config: &Value,
    exposed: &BTreeSet<String>,
    sandbox_key: &str,
) -> Value {
    let eps = s.endpoints.get(&c.id).cloned().unwrap_or_default();
    let mut ports = serde_json::Map::new();
    let running = eps.iter().any(|e| !e.ports.is_empty());
    for k in exposed {
        ports.insert(k.clone(), Value::Null);
    }
    if !running {
        // Docker shows the requested bindings' keys while stopped, without host ports.
        if let Some(b) = host_config.get("PortBindings").and_then(Value::as_object) {
            for k in b.keys() {
                if let Ok((p, proto)) = parse_port_key(k) {
                    ports.insert(format!("{p}/{}", proto.as_str()), Value::Null);
                }
            }
        }
    }
    for e in &eps {
        for p in &e.ports {
            let key = format!("{}/{}", p.container_port, p.proto.as_str());
            let entry = ports.entry(key).or_insert_with(|| json!([]));
            if !entry.is_array() {
                *entry = json!([]);
            }
            if let Some(a) = entry.as_array_mut() {
                a.push(
                    json!({"HostIp": super::network::shown_host_ip(s, c.node, p.host_ip), "HostPort": p.host_port.to_string()}),
                );
            }
        }
    }
    let mut networks = serde_json::Map::new();
    let conns = s.connections.get(&c.id).cloned().unwrap_or_default();
    let mode = mode_of(c);
    let mut top = json!({"IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "", "EndpointID": ""});
    match &mode {
        NetworkMode::None | NetworkMode::Host => {
            let name = mode.shown();
            networks.insert(name.clone(), endpoint_json("", "", None, None, &[], &name));
        }
        _ => {}
    }
    for (net_id, aliases) in &conns {
        let Some(n) = s.networks.get(net_id) else {
            continue;
        };
        let ep = eps.iter().find(|e| &e.network == net_id);
        let endpoint_id = ep
            .map(|e| {
                format!(
                    "{}{}",
                    &hex_of(&c.id.to_string()),
                    mac_text(&e.mac).replace(':', "")
                )
            })
            .unwrap_or_default();
        let v = endpoint_json(
            &n.id,
            &endpoint_id,
            ep,
            Some(n),
            aliases,
            &c.name.to_string(),
        );
        if n.default {
            if let Some(e) = ep {
                top = json!({
                    "IPAddress": e.ip.to_string(),
                    "IPPrefixLen": n.subnet.prefix,
                    "Gateway": n.gateway.to_string(),
                    "MacAddress": mac_text(&e.mac),
                    "EndpointID": endpoint_id,
                });
            }
        }
        networks.insert(n.name.clone(), v);
    }
    let mut out = json!({
        "Bridge": "",
        "SandboxID": "",
        "SandboxKey": sandbox_key,
        "HairpinMode": false,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "Ports": ports,
        "SecondaryIPAddresses": null,
        "SecondaryIPv6Addresses": null,
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPv6Gateway": "",
        "Networks": networks,
    });
    if let (Some(o), Some(t)) = (out.as_object_mut(), top.as_object()) {
        for (k, v) in t {
            o.insert(k.clone(), v.clone());
        }
    }
    out
}

fn hex_of(id: &str) -> String {
    id.chars().take(52).collect()
}

fn endpoint_json(
    network_id: &str,
    endpoint_id: &str,
    ep: Option<&Endpoint>,
    n: Option<&NetworkRecord>,
    aliases: &[String],
    name: &str,
) -> Value {
    let dns_names: Option<Vec<String>> = n.filter(|n| !n.default).map(|_| {
        let mut v = vec![name.to_string()];
        v.extend(aliases.iter().cloned());
        v
    });
    json!({
        "IPAMConfig": null,
        "Links": null,
        "Aliases": if aliases.is_empty() { Value::Null } else { json!(aliases) },
        "MacAddress": ep.map(|e| mac_text(&e.mac)).unwrap_or_default(),
        "DriverOpts": null,
        "NetworkID": network_id,
        "EndpointID": endpoint_id,
        "Gateway": match (ep, n) { (Some(_), Some(n)) => n.gateway.to_string(), _ => String::new() },
        "IPAddress": ep.map(|e| e.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": match (ep, n) { (Some(_), Some(n)) => n.subnet.prefix, _ => 0 },
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": dns_names,
    })
}
