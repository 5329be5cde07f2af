//! Container networking in the engine: which network a container joins, the addresses
//! and host ports it gets (chosen here, on the leader, and recorded through Raft), and
//! the agent calls that make the kernel match.
//!
//! ```text
//!  start:  mode (HostConfig.NetworkMode) ─► pick IP + host ports ─► reserve host ports
//!          ─► AttachEndpoints (Raft) ─► rules from state ─► agent: veth in the netns ─► run
//!  exit:   ContainerExited (Raft; frees the endpoints) ─► rules from state ─► free ports
//!  boot:   bridges of every network ─► drop endpoints of containers that do not run
//!          (killed mid-setup) ─► reserve the ports of running ones ─► rules from state
//! ```

use super::{find_container, now_ns, Engine};
use crate::api::error::ApiError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use tracing::{info, warn};
use wharf_node::network::names::{host_veth, user_bridge};
use wharf_node::network::rules::{BridgeRule, PublishRule, RuleSet};
use wharf_node::network::{AttachPlan, NetworkSetup};
use wharf_node::runtime::{NetnsMode, ShimOptions};
use wharf_protocol::network::{
    ips_in_use, mac_for, mac_text, parse_binding, parse_port_key, pick_ip, pick_port, port_taken,
    ports_in_use, valid_network_name, Endpoint, NetworkRecord, PortMapping, PortRequest, Proto,
    Subnet,
};
use wharf_protocol::state::{ClusterState, Command, ContainerRecord, ContainerStatus, StateError};
use wharf_protocol::{ContainerId, NodeId};

/// The network a container asked for (`HostConfig.NetworkMode`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Only loopback.
    None,
    /// The host's network namespace.
    Host,
    /// Another container's network namespace.
    Container(String),
    /// A bridge network by name or ID (`bridge` is the default one).
    Network(String),
}

impl NetworkMode {
    /// Parse Docker's `NetworkMode` text; empty and `default` mean `bridge`.
    pub fn parse(text: &str) -> NetworkMode {
        match text {
            "" | "default" | "bridge" => NetworkMode::Network("bridge".into()),
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            t => match t.strip_prefix("container:") {
                Some(c) => NetworkMode::Container(c.to_string()),
                None => NetworkMode::Network(t.to_string()),
            },
        }
    }

    /// The text inspect shows.
    pub fn shown(&self) -> String {
        match self {
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Container(c) => format!("container:{c}"),
            NetworkMode::Network(n) => n.clone(),
        }
    }
}

/// The mode recorded in a container's `HostConfig`.
pub fn mode_of(c: &ContainerRecord) -> NetworkMode {
    let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
    NetworkMode::parse(hc.get("NetworkMode").and_then(Value::as_str).unwrap_or(""))
}

/// A network by name, full ID or unique ID prefix.
pub fn find_network<'a>(s: &'a ClusterState, reference: &str) -> Option<&'a NetworkRecord> {
    if let Some(n) = s.networks.values().find(|n| n.name == reference) {
        return Some(n);
    }
    if let Some(n) = s.networks.get(reference) {
        return Some(n);
    }
    let mut hits = s.networks.values().filter(|n| n.id.starts_with(reference));
    match (hits.next(), hits.next()) {
        (Some(n), None) if !reference.is_empty() => Some(n),
        _ => None,
    }
}

/// Ports the container publishes: `PortBindings`, plus with `PublishAllPorts` every
/// exposed port (request and image) without a binding, on an ephemeral host port.
pub fn port_requests(
    host_config: &Value,
    config: &Value,
    image_config: &Value,
) -> Result<Vec<PortRequest>, ApiError> {
    let bad = |e: wharf_protocol::network::PortSpecError| ApiError::bad_request(e.to_string());
    let mut out = vec![];
    if let Some(b) = host_config.get("PortBindings").and_then(Value::as_object) {
        for (key, list) in b {
            let list = list.as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                out.push(parse_binding(key, "", "").map_err(bad)?);
            }
            for e in list {
                let ip = e.get("HostIp").and_then(Value::as_str).unwrap_or("");
                let port = e.get("HostPort").and_then(Value::as_str).unwrap_or("");
                out.push(parse_binding(key, ip, port).map_err(bad)?);
            }
        }
    }
    if host_config.get("PublishAllPorts").and_then(Value::as_bool) == Some(true) {
        for key in exposed_ports(config, image_config)? {
            let (port, proto) = parse_port_key(&key).map_err(bad)?;
            if !out
                .iter()
                .any(|r| r.container_port == port && r.proto == proto)
            {
                out.push(parse_binding(&key, "", "").map_err(bad)?);
            }
        }
    }
    Ok(out)
}

/// `ExposedPorts` of the request and the image, as `port/proto` keys.
pub fn exposed_ports(config: &Value, image_config: &Value) -> Result<BTreeSet<String>, ApiError> {
    let mut keys = BTreeSet::new();
    for v in [config.get("ExposedPorts"), image_config.get("ExposedPorts")]
        .into_iter()
        .flatten()
    {
        if let Some(o) = v.as_object() {
            for k in o.keys() {
                let (port, proto) =
                    parse_port_key(k).map_err(|e| ApiError::bad_request(e.to_string()))?;
                keys.insert(format!("{port}/{}", proto.as_str()));
            }
        }
    }
    Ok(keys)
}

/// The instance's rule set for the networks and endpoints of `node` in `s` (pure).
pub fn rule_set(s: &ClusterState, node: NodeId) -> RuleSet {
    let bridges = s
        .networks
        .values()
        .filter(|n| n.node == node)
        .map(|n| BridgeRule {
            bridge: n.bridge.clone(),
            subnet: n.subnet,
        })
        .collect();
    let mut publishes = vec![];
    for eps in s.endpoints.values() {
        for e in eps.iter().filter(|e| e.node == node) {
            let Some(n) = s.networks.get(&e.network) else {
                continue;
            };
            for p in &e.ports {
                publishes.push(PublishRule {
                    bridge: n.bridge.clone(),
                    container_ip: e.ip,
                    proto: p.proto,
                    container_port: p.container_port,
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                });
            }
        }
    }
    RuleSet { bridges, publishes }
}

/// Containers holding endpoints although they do not run (wharf was killed between
/// recording a start's endpoints and the start, or the container died while wharf was
/// down): their addresses and ports are to be freed at boot.
pub fn stale_endpoints(s: &ClusterState) -> Vec<ContainerId> {
    s.endpoints
        .keys()
        .filter(|id| {
            !s.containers.get(*id).is_some_and(|c| {
                matches!(c.status, ContainerStatus::Running | ContainerStatus::Paused)
            })
        })
        .cloned()
        .collect()
}

/// What a starting container needs from the agent for its network.
pub struct NetStart {
    /// Its network namespace.
    pub netns: NetnsMode,
    /// Interfaces, hosts lines and name servers.
    pub setup: NetworkSetup,
}

fn blocking_err(e: tokio::task::JoinError) -> ApiError {
    ApiError::internal(format!("network task failed: {e}"))
}

impl Engine {
    fn net_json(c: &ContainerRecord) -> (Value, Value, Value) {
        let hc: Value = serde_json::from_str(&c.host_config_json).unwrap_or(Value::Null);
        let cfg: Value = serde_json::from_str(&c.config_json).unwrap_or(Value::Null);
        (hc, cfg, Value::Null)
    }

    fn image_config_json(&self, c: &ContainerRecord) -> Value {
        self.store()
            .read(|s| s.images.get(&c.run.image_id).map(|i| i.config.clone()))
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v.get("config").cloned())
            .unwrap_or(Value::Null)
    }

    /// Boot-time reconcile: the default network exists, every bridge of this node is up,
    /// endpoints of containers that no longer run are freed (a crash mid-start), ports of
    /// running ones are held again and the rules equal the state.
    pub async fn init_network(&self) -> Result<(), ApiError> {
        let node = self.node;
        let has_default = self
            .store()
            .read(|s| s.networks.values().any(|n| n.default && n.node == node));
        if !has_default {
            let (bridge, subnet) = self.agent().net().default_bridge();
            let network = NetworkRecord {
                id: hex::encode(rand::random::<[u8; 32]>()),
                name: "bridge".into(),
                driver: "bridge".into(),
                subnet,
                gateway: subnet.gateway(),
                bridge: bridge.to_string(),
                node,
                labels: BTreeMap::new(),
                created_ns: now_ns(),
                default: true,
            };
            self.propose(Command::CreateNetwork { network }).await?;
        }
        let networks: Vec<NetworkRecord> = self.store().read(|s| {
            s.networks
                .values()
                .filter(|n| n.node == node)
                .cloned()
                .collect()
        });
        for n in networks {
            self.ensure_bridge(&n).await?;
            if !n.default {
                self.dns
                    .start(self.store().clone(), n.id.clone(), n.gateway)
                    .await;
            }
        }
        let stale: Vec<ContainerId> = self.store().read(stale_endpoints);
        for id in stale {
            info!(container = %id.short(), "freeing the endpoints of a container that is not running");
            self.propose(Command::ReleaseEndpoints { id }).await?;
        }
        let held: Vec<(ContainerId, PortMapping)> = self.store().read(|s| {
            s.endpoints
                .iter()
                .flat_map(|(id, eps)| {
                    eps.iter()
                        .filter(|e| e.node == node)
                        .flat_map(move |e| e.ports.iter().map(move |p| (id.clone(), *p)))
                })
                .collect()
        });
        for (id, m) in held {
            if let Err(e) = self.agent().net().reserve(id.as_str(), &m) {
                warn!(error = %e, "could not hold a published port again");
            }
        }
        let net = self.agent().net().clone();
        tokio::task::spawn_blocking(move || net.ensure_jumps())
            .await
            .map_err(blocking_err)?
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.sync_network_rules().await
    }

    async fn ensure_bridge(&self, n: &NetworkRecord) -> Result<(), ApiError> {
        let net = self.agent().net().clone();
        let (bridge, subnet, gateway) = (n.bridge.clone(), n.subnet, n.gateway);
        tokio::task::spawn_blocking(move || net.ensure_bridge(&bridge, subnet, gateway))
            .await
            .map_err(blocking_err)?
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Make the kernel's rules equal what the state says.
    pub async fn sync_network_rules(&self) -> Result<(), ApiError> {
        let node = self.node;
        let store = self.store().clone();
        let net = self.agent().net().clone();
        tokio::task::spawn_blocking(move || net.sync_rules(|| store.read(|s| rule_set(s, node))))
            .await
            .map_err(blocking_err)?
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Check a create request's network settings before the container is recorded:
    /// the network exists, the port specs parse.
    pub(super) fn check_network_request(
        &self,
        host_config: &mut Value,
        config: &Value,
    ) -> Result<(), ApiError> {
        let mode = NetworkMode::parse(
            host_config
                .get("NetworkMode")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        if let Some(o) = host_config.as_object_mut() {
            o.insert("NetworkMode".into(), json!(mode.shown()));
        }
        // As Docker: a network that does not exist yet is only an error at start.
        port_requests(host_config, config, &Value::Null)?;
        Ok(())
    }

    /// Record the network a new container joins (its `NetworkMode`) with the aliases of
    /// the create request's `NetworkingConfig`.
    pub(super) async fn connect_at_create(
        &self,
        c: &ContainerRecord,
        body: &[u8],
    ) -> Result<(), ApiError> {
        let NetworkMode::Network(name) = mode_of(c) else {
            return Ok(());
        };
        let Some(n) = self.store().read(|s| find_network(s, &name).cloned()) else {
            return Ok(());
        };
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let aliases = endpoint_aliases(&req, &n.name, &name);
        self.propose(Command::ConnectContainer {
            id: c.id.clone(),
            network: n.id,
            aliases,
        })
        .await
    }

    /// Decide and record a starting container's network: addresses, host ports (held
    /// before they are recorded), rules. On error nothing stays allocated.
    pub(super) async fn prepare_network(&self, c: &ContainerRecord) -> Result<NetStart, ApiError> {
        let none = NetStart {
            netns: NetnsMode::Own,
            setup: NetworkSetup::default(),
        };
        match mode_of(c) {
            NetworkMode::None => return Ok(none),
            NetworkMode::Host => {
                return Ok(NetStart {
                    netns: NetnsMode::Host,
                    ..none
                })
            }
            NetworkMode::Container(r) => {
                let target = self
                    .store()
                    .read(|s| find_container(s, &r).and_then(|id| s.containers.get(&id).cloned()))
                    .ok_or_else(|| ApiError::no_such_container(&r))?;
                if target.status != ContainerStatus::Running || target.pid == 0 {
                    return Err(ApiError::conflict(format!(
                        "cannot join network namespace of a non running container: {}",
                        target.id
                    )));
                }
                return Ok(NetStart {
                    netns: NetnsMode::Join(format!("/proc/{}/ns/net", target.pid).into()),
                    ..none
                });
            }
            NetworkMode::Network(name) => {
                let n = self
                    .store()
                    .read(|s| find_network(s, &name).cloned())
                    .ok_or_else(|| {
                        ApiError::not_found(format!(
                            "failed to set up container networking: network {name} not found"
                        ))
                    })?;
                let connected = self.store().read(|s| {
                    s.connections
                        .get(&c.id)
                        .is_some_and(|m| m.contains_key(&n.id))
                });
                if !connected {
                    self.propose(Command::ConnectContainer {
                        id: c.id.clone(),
                        network: n.id.clone(),
                        aliases: vec![],
                    })
                    .await?;
                }
            }
        }
        let (hc, cfg, _) = Self::net_json(c);
        let requests = port_requests(&hc, &cfg, &self.image_config_json(c))?;
        let mut last_err = None;
        for _ in 0..5 {
            let (eps, plans) = self.choose_endpoints(c, &requests)?;
            let mut failed = None;
            for p in eps.iter().flat_map(|e| e.ports.iter()) {
                match self.agent().net().reserve(c.id.as_str(), p) {
                    Ok(()) => {}
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            let release = |engine: &Engine| engine.agent().net().release_ports(c.id.as_str());
            if let Some(message) = failed {
                release(self);
                return Err(ApiError::internal(format!(
                    "driver failed programming external connectivity on endpoint {}: {message}",
                    c.name
                )));
            }
            match self
                .store()
                .propose(Command::AttachEndpoints {
                    id: c.id.clone(),
                    endpoints: eps.clone(),
                })
                .await?
            {
                Ok(()) => {}
                // Another start took the address or an ephemeral port: choose again.
                Err(e @ StateError::AddressInUse(_)) => {
                    release(self);
                    last_err = Some(e);
                    continue;
                }
                Err(e @ StateError::PortInUse(_)) if requests.iter().all(|r| r.host_port == 0) => {
                    release(self);
                    last_err = Some(e);
                    continue;
                }
                Err(e) => {
                    release(self);
                    return Err(ApiError::internal(format!(
                        "driver failed programming external connectivity on endpoint {}: {e}",
                        c.name
                    )));
                }
            }
            if let Err(e) = self.sync_network_rules().await {
                let _ = self
                    .propose(Command::ReleaseEndpoints { id: c.id.clone() })
                    .await;
                let _ = self.sync_network_rules().await;
                self.agent().net().release_ports(c.id.as_str());
                return Err(e);
            }
            let hosts = eps
                .first()
                .map(|e| vec![format!("{}:{}", c.run.hostname, e.ip)])
                .unwrap_or_default();
            // On a user network the embedded resolver (on the gateway) answers names.
            let dns = self.store().read(|s| {
                eps.first()
                    .and_then(|e| s.networks.get(&e.network))
                    .filter(|n| !n.default)
                    .map(|n| vec![n.gateway.to_string()])
                    .unwrap_or_default()
            });
            return Ok(NetStart {
                netns: NetnsMode::Own,
                setup: NetworkSetup { plans, hosts, dns },
            });
        }
        Err(last_err.map_or_else(|| ApiError::internal("no address"), ApiError::from))
    }

    /// Addresses and host ports for the container's networks, from the current state.
    fn choose_endpoints(
        &self,
        c: &ContainerRecord,
        requests: &[PortRequest],
    ) -> Result<(Vec<Endpoint>, Vec<AttachPlan>), ApiError> {
        let node = self.node;
        let primary = match mode_of(c) {
            NetworkMode::Network(n) => n,
            _ => String::new(),
        };
        self.store().read(|s| {
            let conns = s.connections.get(&c.id).cloned().unwrap_or_default();
            let mut nets: Vec<(&NetworkRecord, Vec<String>)> = conns
                .iter()
                .filter_map(|(id, aliases)| s.networks.get(id).map(|n| (n, aliases.clone())))
                .collect();
            // The network of NetworkMode first: it carries the default route and the ports.
            nets.sort_by_key(|(n, _)| !(n.name == primary || n.id == primary));
            let others = || {
                s.endpoints
                    .iter()
                    .filter(|(id, _)| **id != c.id)
                    .flat_map(|(_, e)| e)
            };
            let mut used_ports = ports_in_use(others(), node);
            let mut eps = vec![];
            let mut plans = vec![];
            for (i, (n, aliases)) in nets.iter().enumerate() {
                let ip = pick_ip(&n.subnet, n.gateway, &ips_in_use(others(), &n.id))
                    .ok_or_else(|| {
                        ApiError::internal(format!("no available IPv4 addresses on network {}", n.name))
                    })?;
                let mut ports = vec![];
                if i == 0 {
                    for r in requests {
                        let mut m = PortMapping {
                            proto: r.proto,
                            container_port: r.container_port,
                            host_ip: r.host_ip,
                            host_port: r.host_port,
                        };
                        if m.host_port == 0 {
                            m.host_port = pick_port(&used_ports, &m, rand::random())
                                .ok_or_else(|| ApiError::internal("no free host port"))?;
                        } else if port_taken(&used_ports, &m) {
                            return Err(ApiError::internal(format!(
                                "driver failed programming external connectivity on endpoint {}: Bind for {}:{} failed: port is already allocated",
                                c.name, m.host_ip, m.host_port
                            )));
                        }
                        used_ports.push(m);
                        ports.push(m);
                    }
                }
                let mac = mac_for(ip);
                plans.push(AttachPlan {
                    host_veth: host_veth(c.id.as_str(), &n.id),
                    ifname: format!("eth{i}"),
                    bridge: n.bridge.clone(),
                    ip,
                    prefix: n.subnet.prefix,
                    gateway: n.gateway,
                    mac,
                    default_route: i == 0,
                });
                eps.push(Endpoint {
                    network: n.id.clone(),
                    ip,
                    mac,
                    ports,
                    aliases: aliases.clone(),
                    node,
                });
            }
            Ok((eps, plans))
        })
    }

    /// A start that failed in [`Engine::prepare_network`] (nothing was set up): record the
    /// failure as Docker does (exit 128 with the error), drop waiting attachers, and remove
    /// an `--rm` container so that `docker run --rm` returns.
    pub(super) async fn network_start_failed(
        &self,
        c: &ContainerRecord,
        e: &ApiError,
    ) -> Result<(), ApiError> {
        self.agent().cancel_pending(&c.id);
        self.propose(Command::ContainerExited {
            id: c.id.clone(),
            exit_code: 128,
            oom_killed: false,
            at_ns: now_ns(),
            error: e.message.clone(),
        })
        .await?;
        self.emit_container(c, "die", &[("exitCode", "128".to_string())]);
        if c.auto_remove {
            self.remove_locked(&c.id).await?;
        }
        Ok(())
    }

    /// After a container stopped (its endpoints freed by `ContainerExited`), or a start
    /// failed: rules and port reservations follow the state.
    pub(super) async fn network_released(&self, id: &ContainerId) {
        if self.store().read(|s| s.endpoints.contains_key(id)) {
            let _ = self
                .propose(Command::ReleaseEndpoints { id: id.clone() })
                .await;
        }
        if let Err(e) = self.sync_network_rules().await {
            warn!(container = %id.short(), error = %e, "network rules not updated");
        }
        self.agent().net().release_ports(id.as_str());
    }

    /// The shim options with the container's network namespace.
    pub(super) fn with_netns(mut options: ShimOptions, start: &NetStart) -> ShimOptions {
        options.netns = start.netns.clone();
        options
    }

    /// `wharf down`: remove the instance's rules and bridges (records stay in the state).
    pub async fn teardown_network(&self) {
        let node = self.node;
        let bridges: Vec<String> = self.store().read(|s| {
            s.networks
                .values()
                .filter(|n| n.node == node)
                .map(|n| n.bridge.clone())
                .collect()
        });
        let net = self.agent().net().clone();
        let _ = tokio::task::spawn_blocking(move || {
            net.remove_rules();
            let default = net.default_bridge().0.to_string();
            for b in bridges.iter().chain(std::iter::once(&default)) {
                if let Err(e) = net.remove_bridge(b) {
                    warn!(bridge = %b, error = %e, "bridge not removed");
                }
            }
        })
        .await;
    }

    /// `NetworkSettings` of inspect and the `Ports`/`NetworkSettings` of `docker ps`.
    pub fn network_settings(&self, c: &ContainerRecord) -> Value {
        let (hc, cfg, _) = Self::net_json(c);
        let exposed = exposed_ports(&cfg, &self.image_config_json(c)).unwrap_or_default();
        self.store()
            .read(|s| network_settings_json(s, c, &hc, &exposed))
    }

    /// The `Ports` list of `docker ps`.
    pub fn ps_ports(&self, c: &ContainerRecord) -> Value {
        self.store().read(|s| ps_ports_json(s, c))
    }
}

/// The `Ports` list of `docker ps` for `c`.
pub fn ps_ports_json(s: &ClusterState, c: &ContainerRecord) -> Value {
    let mut out = vec![];
    for e in s.endpoints.get(&c.id).into_iter().flatten() {
        for p in &e.ports {
            out.push(json!({
                "IP": p.host_ip.to_string(),
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
    let (hc, cfg, _) = Engine::net_json(c);
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
    let settings = network_settings_json(s, c, &Value::Null, &BTreeSet::new());
    settings
        .get("Networks")
        .cloned()
        .unwrap_or_else(|| json!({}))
}

/// Aliases for network `name` (or as the user typed it, `typed`) in a create body's
/// `NetworkingConfig.EndpointsConfig`.
fn endpoint_aliases(req: &Value, name: &str, typed: &str) -> Vec<String> {
    let eps = req
        .get("NetworkingConfig")
        .and_then(|n| n.get("EndpointsConfig"));
    let ep = eps
        .and_then(|e| e.get(name))
        .or_else(|| eps.and_then(|e| e.get(typed)));
    ep.and_then(|e| e.get("Aliases"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Docker's `NetworkSettings` for `c` (pure over the state).
pub fn network_settings_json(
    s: &ClusterState,
    c: &ContainerRecord,
    host_config: &Value,
    exposed: &BTreeSet<String>,
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
                    json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}),
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
        "SandboxKey": if c.pid != 0 { format!("/proc/{}/ns/net", c.pid) } else { String::new() },
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

/// A new user network's record: the subnet given, or the first free `/24` of
/// 10.192.0.0/10 that overlaps neither another network of the node nor a host route.
#[allow(clippy::too_many_arguments)]
pub fn new_network(
    s: &ClusterState,
    node: NodeId,
    name: &str,
    subnet: Option<Subnet>,
    gateway: Option<Ipv4Addr>,
    labels: BTreeMap<String, String>,
    routes: &[Subnet],
    id: String,
    seed: u16,
) -> Result<NetworkRecord, ApiError> {
    if !valid_network_name(name) {
        return Err(ApiError::bad_request(format!(
            "invalid network name \"{name}\": only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    let taken: Vec<Subnet> = s
        .networks
        .values()
        .filter(|n| n.node == node)
        .map(|n| n.subnet)
        .collect();
    let subnet = match subnet {
        Some(sn) => sn,
        None => (0..16384u32)
            .map(|i| {
                let n = (u32::from(seed) + i) % 16384;
                Subnet {
                    addr: Ipv4Addr::new(10, 192 + (n / 256) as u8, (n % 256) as u8, 0),
                    prefix: 24,
                }
            })
            .find(|c| !taken.iter().chain(routes).any(|t| t.overlaps(c)))
            .ok_or_else(|| {
                ApiError::internal("could not find an available, non-overlapping IPv4 address pool")
            })?,
    };
    let gateway = gateway.unwrap_or_else(|| subnet.gateway());
    if !subnet.contains(gateway) {
        return Err(ApiError::bad_request(format!(
            "invalid gateway {gateway}: not in subnet {subnet}"
        )));
    }
    Ok(NetworkRecord {
        bridge: user_bridge(&id),
        id,
        name: name.to_string(),
        driver: "bridge".into(),
        subnet,
        gateway,
        node,
        labels,
        created_ns: now_ns(),
        default: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_endpoint(status: ContainerStatus) -> (ClusterState, ContainerId) {
        let mut s = ClusterState::default();
        let net = new_network(
            &s,
            NodeId(1),
            "front",
            Some(Subnet::parse("10.77.0.0/24").unwrap()),
            None,
            BTreeMap::new(),
            &[],
            "ab".repeat(32),
            0,
        )
        .unwrap();
        s.apply(&Command::CreateNetwork {
            network: net.clone(),
        })
        .unwrap();
        let id = ContainerId::from_bytes([3; 32]);
        let rec = ContainerRecord {
            id: id.clone(),
            name: "web".parse().unwrap(),
            created_ns: 1,
            node: NodeId(1),
            image_ref: "busybox".into(),
            run: wharf_protocol::agent::ContainerRunSpec {
                id: id.clone(),
                image_id: wharf_protocol::ImageId(wharf_protocol::Digest::of(b"x")),
                diff_ids: vec![],
                args: vec!["true".into()],
                env: vec![],
                working_dir: "/".into(),
                user: String::new(),
                hostname: "h".into(),
                tty: false,
                open_stdin: false,
                stop_signal: 15,
                host: Default::default(),
            },
            config_json: "{}".into(),
            host_config_json: r#"{"NetworkMode":"front"}"#.into(),
            auto_remove: false,
            status,
            pid: 0,
            exit_code: 0,
            started_ns: 0,
            finished_ns: 0,
            oom_killed: false,
            error: String::new(),
        };
        s.apply(&Command::CreateContainer {
            container: Box::new(rec),
        })
        .unwrap();
        s.apply(&Command::ConnectContainer {
            id: id.clone(),
            network: net.id.clone(),
            aliases: vec![],
        })
        .unwrap();
        let ip = Ipv4Addr::new(10, 77, 0, 2);
        s.apply(&Command::AttachEndpoints {
            id: id.clone(),
            endpoints: vec![Endpoint {
                network: net.id.clone(),
                ip,
                mac: mac_for(ip),
                ports: vec![PortMapping {
                    proto: wharf_protocol::network::Proto::Tcp,
                    container_port: 80,
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: 8080,
                }],
                aliases: vec![],
                node: NodeId(1),
            }],
        })
        .unwrap();
        (s, id)
    }

    #[test]
    fn rules_follow_the_endpoints_and_stale_ones_are_found() {
        let (s, id) = state_with_endpoint(ContainerStatus::Running);
        let set = rule_set(&s, NodeId(1));
        assert_eq!(set.bridges.len(), 1);
        assert_eq!(set.bridges[0].bridge, "br-abababababab");
        assert_eq!(set.publishes.len(), 1);
        assert_eq!(
            (set.publishes[0].container_ip, set.publishes[0].host_port),
            (Ipv4Addr::new(10, 77, 0, 2), 8080)
        );
        assert!(
            rule_set(&s, NodeId(2)).publishes.is_empty(),
            "other nodes publish nothing"
        );
        assert!(stale_endpoints(&s).is_empty());
        let (s, _) = state_with_endpoint(ContainerStatus::Created);
        assert_eq!(stale_endpoints(&s), vec![id]);
        let shown = network_settings_json(
            &s,
            &s.containers.values().next().unwrap().clone(),
            &json!({}),
            &BTreeSet::new(),
        );
        assert_eq!(shown["Ports"]["80/tcp"][0]["HostPort"], "8080");
        assert_eq!(shown["Networks"]["front"]["IPAddress"], "10.77.0.2");
        assert_eq!(
            shown["IPAddress"], "",
            "top-level fields are the default bridge's only"
        );
    }

    #[test]
    fn port_filters_parse() {
        assert_eq!(parse_port_filter("80"), Some((80, 80, Proto::Tcp)));
        assert_eq!(parse_port_filter("53/udp"), Some((53, 53, Proto::Udp)));
        assert_eq!(
            parse_port_filter("8000-8080/tcp"),
            Some((8000, 8080, Proto::Tcp))
        );
        assert_eq!(parse_port_filter("x"), None);
    }

    #[test]
    fn modes_parse_like_docker() {
        assert_eq!(
            NetworkMode::parse(""),
            NetworkMode::Network("bridge".into())
        );
        assert_eq!(
            NetworkMode::parse("default"),
            NetworkMode::Network("bridge".into())
        );
        assert_eq!(NetworkMode::parse("none"), NetworkMode::None);
        assert_eq!(NetworkMode::parse("host"), NetworkMode::Host);
        assert_eq!(
            NetworkMode::parse("container:web"),
            NetworkMode::Container("web".into())
        );
        assert_eq!(
            NetworkMode::parse("front"),
            NetworkMode::Network("front".into())
        );
    }

    #[test]
    fn port_requests_merge_bindings_and_publish_all() {
        let hc = json!({
            "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}]},
            "PublishAllPorts": true
        });
        let cfg = json!({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}});
        let img = json!({"ExposedPorts": {"9000": {}}});
        let mut r = port_requests(&hc, &cfg, &img).unwrap();
        r.sort_by_key(|r| r.container_port);
        let got: Vec<(u16, u16)> = r.iter().map(|r| (r.container_port, r.host_port)).collect();
        assert_eq!(got, vec![(53, 0), (80, 8080), (443, 0), (9000, 0)]);
        assert!(port_requests(&json!({"PortBindings": {"x/tcp": []}}), &cfg, &img).is_err());
    }

    #[test]
    fn new_networks_avoid_taken_subnets_and_routes() {
        let s = ClusterState::default();
        let routes = [Subnet::parse("10.192.0.0/24").unwrap()];
        let n = new_network(
            &s,
            NodeId(1),
            "front",
            None,
            None,
            BTreeMap::new(),
            &routes,
            "ab".repeat(32),
            0,
        )
        .unwrap();
        assert_eq!(n.subnet.to_string(), "10.192.1.0/24");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 192, 1, 1));
        assert_eq!(n.bridge, "br-abababababab");
        assert!(new_network(
            &s,
            NodeId(1),
            "-x",
            None,
            None,
            BTreeMap::new(),
            &[],
            "a".into(),
            0
        )
        .is_err());
        let sn = Subnet::parse("10.9.0.0/24").unwrap();
        assert!(new_network(
            &s,
            NodeId(1),
            "x",
            Some(sn),
            Some(Ipv4Addr::new(10, 8, 0, 1)),
            BTreeMap::new(),
            &[],
            "a".into(),
            0
        )
        .is_err());
    }
}
