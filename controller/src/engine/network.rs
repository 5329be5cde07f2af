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

use super::network_options::{check_run, endpoints_config};
pub use super::network_view::{
    network_names, network_settings_json, parse_port_filter, port_keys, ps_networks_json,
    ps_ports_json, PortKey,
};
use super::{find_container, now_ns, Engine};
use crate::engine::error::EngineError;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use tracing::{info, warn};
use wharf_protocol::agent::FailureKind;
use wharf_protocol::network::{
    host_veth, parse_binding, parse_port_key, pick_port, port_taken, ports_in_use, user_bridge,
    valid_network_name, AttachPlan, BridgeRule, Endpoint, NetworkRecord, NetworkSetup, PortMapping,
    PortRequest, PublishRule, RuleSet, Subnet,
};
use wharf_protocol::runtime::{NetnsMode, ShimOptions};
use wharf_protocol::state::{ClusterState, Command, ContainerRecord, ContainerStatus, StateError};
use wharf_protocol::{ContainerId, NodeId};

/// Times a start chooses its ephemeral host ports again after a concurrent start (or
/// another program on the host) took one: each try loses only to a start that won.
const MAX_PORT_TRIES: usize = 16;

/// How the agent sets up the interfaces of recorded endpoints `eps` of container `id`:
/// `eth0` on the first (default route), then one per further network, in order.
pub fn attach_plans(s: &ClusterState, id: &ContainerId, eps: &[Endpoint]) -> Vec<AttachPlan> {
    let mut plans: Vec<AttachPlan> = Vec::new();
    for (i, e) in eps.iter().enumerate() {
        let Some(n) = s.networks.get(&e.network) else {
            continue;
        };
        // An internal network gives no route out; the first other one does.
        let default_route = !n.internal() && !plans.iter().any(|p| p.default_route);
        plans.push(AttachPlan {
            host_veth: host_veth(id.as_str(), &n.id),
            ifname: format!("eth{i}"),
            bridge: n.bridge.clone(),
            ip: e.ip,
            prefix: n.subnet.prefix,
            gateway: n.gateway,
            mac: e.mac,
            default_route,
        });
    }
    plans
}

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

/// Whether `reference` names node `n` (its host name or ID).
fn names_node(s: &ClusterState, n: NodeId, reference: &str) -> bool {
    reference == n.to_string()
        || s.nodes
            .get(&n)
            .is_some_and(|r| r.description.hostname == reference)
}

/// A network by `NODE/name` (classic Swarm's), name, full ID or unique ID prefix (pure).
/// Names are unique per node: with `node` (the container's or the request's) a name is
/// that node's network; without, it must be unique in the cluster, else 400 as moby's
/// ambiguous reference.
pub fn resolve_network<'a>(
    s: &'a ClusterState,
    reference: &str,
    node: Option<NodeId>,
) -> Result<&'a NetworkRecord, EngineError> {
    let not_found = || EngineError::not_found(format!("network {reference} not found"));
    if let Some((on, name)) = reference.split_once('/') {
        return s
            .networks
            .values()
            .find(|n| n.name == name && names_node(s, n.node, on))
            .ok_or_else(not_found);
    }
    let named: Vec<&NetworkRecord> = s
        .networks
        .values()
        .filter(|n| n.name == reference && node.is_none_or(|on| n.node == on))
        .collect();
    match named.as_slice() {
        [n] => return Ok(n),
        [] => {}
        many => {
            return Err(EngineError::invalid(format!(
                "network {reference} is ambiguous ({} matches found based on name): name one as NODE/{reference}",
                many.len()
            )))
        }
    }
    if let Some(n) = s.networks.get(reference) {
        return Ok(n);
    }
    let mut hits = s.networks.values().filter(|n| n.id.starts_with(reference));
    match (hits.next(), hits.next()) {
        (Some(n), None) if !reference.is_empty() => Ok(n),
        _ => Err(not_found()),
    }
}

/// A network by name, full ID or unique ID prefix, on `node` when given (see
/// [`resolve_network`]); `None` when there is none or several.
pub fn find_network_on<'a>(
    s: &'a ClusterState,
    reference: &str,
    node: Option<NodeId>,
) -> Option<&'a NetworkRecord> {
    resolve_network(s, reference, node).ok()
}

/// A network by `NODE/name`, name (unique in the cluster), full ID or unique ID prefix.
pub fn find_network<'a>(s: &'a ClusterState, reference: &str) -> Option<&'a NetworkRecord> {
    find_network_on(s, reference, None)
}

/// The node prefix of the names `docker ps` and `docker network ls` show (classic
/// Swarm's `node-1/web`): the host name of `node` once more than one node runs
/// containers, else `None` (a single host shows names as Docker does).
pub fn node_prefix(s: &ClusterState, node: NodeId) -> Option<String> {
    let hosts = s
        .nodes
        .values()
        .filter(|r| r.description.runs_containers)
        .count();
    (hosts > 1).then(|| {
        s.nodes
            .get(&node)
            .map(|r| r.description.hostname.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| node.to_string())
    })
}

/// The name `docker ps` shows (`Names`): `/node-1/web` once more than one node runs
/// containers (classic Swarm's), else `/web`. `docker inspect` keeps `/web`.
pub fn shown_container_name(s: &ClusterState, c: &ContainerRecord) -> String {
    match node_prefix(s, c.node) {
        Some(node) => format!("/{node}/{}", c.name),
        None => format!("/{}", c.name),
    }
}

/// The name `docker network ls` shows: `node/name` (classic Swarm's) once more than one
/// node runs containers, else the name itself.
pub fn shown_network_name(s: &ClusterState, n: &NetworkRecord) -> String {
    match node_prefix(s, n.node) {
        Some(node) => format!("{node}/{}", n.name),
        None => n.name.clone(),
    }
}

/// The host address a published port shows (`docker ps`, `docker port`): in a cluster,
/// a port published on every address of its host is shown on the node's address, where
/// clients reach it (classic Swarm's); otherwise the address as published.
pub fn shown_host_ip(s: &ClusterState, node: NodeId, ip: std::net::Ipv4Addr) -> String {
    if ip.is_unspecified() && s.nodes.len() > 1 {
        if let Some(addr) = s
            .nodes
            .get(&node)
            .map(|n| n.description.addr.clone())
            .filter(|a| !a.is_empty())
        {
            return addr;
        }
    }
    ip.to_string()
}

/// Ports the container publishes: `PortBindings`, plus with `PublishAllPorts` every
/// exposed port (request and image) without a binding, on an ephemeral host port.
pub fn port_requests(
    host_config: &Value,
    config: &Value,
    image_config: &Value,
) -> Result<Vec<PortRequest>, EngineError> {
    let bad = |e: wharf_protocol::network::PortSpecError| EngineError::invalid(e.to_string());
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
pub fn exposed_ports(
    config: &Value,
    image_config: &Value,
) -> Result<BTreeSet<String>, EngineError> {
    let mut keys = BTreeSet::new();
    for v in [config.get("ExposedPorts"), image_config.get("ExposedPorts")]
        .into_iter()
        .flatten()
    {
        if let Some(o) = v.as_object() {
            for k in o.keys() {
                let (port, proto) =
                    parse_port_key(k).map_err(|e| EngineError::invalid(e.to_string()))?;
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
            internal: n.internal(),
            icc: n.icc(),
            masquerade: n.masquerade(),
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

/// A failed network call on the agent, answered as today: 500 with the agent's text.
fn agent_err(f: wharf_protocol::agent::AgentFailure) -> EngineError {
    EngineError::internal(f.message)
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

    /// Reconcile at a node's connection: its default network exists, each of its bridges
    /// is up, endpoints of its containers that no longer run are freed (a crash
    /// mid-start), its user networks' resolvers answer the names of the state, ports of
    /// running ones are held again and its rules equal the state.
    pub async fn init_network(&self, node: NodeId) -> Result<(), EngineError> {
        let has_default = self
            .store()
            .read(|s| s.networks.values().any(|n| n.default && n.node == node));
        if !has_default {
            let host = self.agents.network_host(&node).await.map_err(agent_err)?;
            let (bridge, subnet) = (host.default_bridge, host.default_subnet);
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
        }
        let stale: Vec<ContainerId> = self.store().read(|s| {
            stale_endpoints(s)
                .into_iter()
                .filter(|id| s.containers.get(id).is_none_or(|c| c.node == node))
                .collect()
        });
        for id in stale {
            info!(container = %id.short(), "freeing the endpoints of a container that is not running");
            self.propose(Command::ReleaseEndpoints { id }).await?;
        }
        // A restarted agent has no resolvers: each user network's starts again, with the
        // names of the containers that still run.
        self.sync_dns(node).await;
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
            if let Err(e) = self.agents.reserve_ports(&node, &id, vec![m]).await {
                warn!(error = %e, "could not hold a published port again");
            }
        }
        self.agents.ensure_jumps(&node).await.map_err(agent_err)?;
        self.sync_network_rules(node).await
    }

    /// Make network `n`'s bridge (and, for `enable_icc=false`, let iptables see bridged
    /// traffic).
    pub(super) async fn ensure_bridge(&self, n: &NetworkRecord) -> Result<(), EngineError> {
        self.agents
            .ensure_bridge(&n.node, &n.bridge, n.subnet, n.gateway, n.icc())
            .await
            .map_err(agent_err)
    }

    /// Make `node`'s kernel rules equal what the state says: the set is computed from the
    /// state and applied under one lock, so concurrent callers never apply an older
    /// state after a newer one.
    pub async fn sync_network_rules(&self, node: NodeId) -> Result<(), EngineError> {
        let lock = self
            .rules_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node)
            .or_default()
            .clone();
        let _applying = lock.lock().await;
        let rules = self.store().read(|s| rule_set(s, node));
        self.agents
            .sync_rules(&node, rules)
            .await
            .map_err(agent_err)
    }

    /// Let go of the host ports held for container `id` on `node`.
    async fn release_ports(&self, node: NodeId, id: &ContainerId) {
        if let Err(e) = self.agents.release_ports(&node, id).await {
            warn!(container = %id.short(), error = %e, "host ports not released");
        }
    }

    /// Decide and record a starting container's network: addresses, host ports (held
    /// before they are recorded), rules. On error nothing stays allocated.
    pub(super) async fn prepare_network(
        &self,
        c: &ContainerRecord,
    ) -> Result<NetStart, EngineError> {
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
                    .ok_or_else(|| EngineError::no_such_container(&r))?;
                if target.status != ContainerStatus::Running {
                    return Err(EngineError::conflict(format!(
                        "cannot join network namespace of a non running container: {}",
                        target.id
                    )));
                }
                // The agent finds the target's process and its namespace: host facts.
                return Ok(NetStart {
                    netns: NetnsMode::JoinContainer(target.id),
                    ..none
                });
            }
            NetworkMode::Network(name) => {
                let n = self
                    .store()
                    .read(|s| find_network_on(s, &name, Some(c.node)).cloned())
                    .ok_or_else(|| {
                        EngineError::not_found(format!(
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
        let ephemeral = requests.iter().any(|r| r.host_port == 0);
        let mut last_err = None;
        // Addresses are chosen in the log (AllocateEndpoints), so no start is refused for
        // one; the loop is for ephemeral host ports, chosen here and bound on the host,
        // which a concurrent start (or another program) may have taken meanwhile.
        for _ in 0..MAX_PORT_TRIES {
            let eps = self.choose_endpoints(c, &requests)?;
            let ports = eps.iter().flat_map(|e| e.ports.iter().copied()).collect();
            if let Err(f) = self.agents.reserve_ports(&c.node, &c.id, ports).await {
                self.release_ports(c.node, &c.id).await;
                // A port taken meanwhile: an ephemeral one is chosen again.
                if ephemeral && f.kind == FailureKind::Conflict {
                    last_err = Some(EngineError::internal(f.message));
                    continue;
                }
                return Err(EngineError::internal(format!(
                    "driver failed programming external connectivity on endpoint {}: {}",
                    c.name, f.message
                )));
            }
            match self
                .store()
                .propose(Command::AllocateEndpoints {
                    id: c.id.clone(),
                    endpoints: eps,
                })
                .await?
            {
                Ok(()) => {}
                // Another start recorded the ephemeral port first: choose again.
                Err(e @ StateError::PortInUse(_)) if ephemeral => {
                    self.release_ports(c.node, &c.id).await;
                    last_err = Some(e.into());
                    continue;
                }
                Err(e @ StateError::NoFreeAddress(_)) => {
                    self.release_ports(c.node, &c.id).await;
                    return Err(EngineError::internal(e.to_string()));
                }
                Err(e) => {
                    self.release_ports(c.node, &c.id).await;
                    return Err(EngineError::internal(format!(
                        "driver failed programming external connectivity on endpoint {}: {e}",
                        c.name
                    )));
                }
            }
            let (eps, plans) = self.store().read(|s| {
                let eps = s.endpoints.get(&c.id).cloned().unwrap_or_default();
                let plans = attach_plans(s, &c.id, &eps);
                (eps, plans)
            });
            if let Err(e) = self.sync_network_rules(c.node).await {
                let _ = self
                    .propose(Command::ReleaseEndpoints { id: c.id.clone() })
                    .await;
                let _ = self.sync_network_rules(c.node).await;
                self.sync_dns(c.node).await;
                self.release_ports(c.node, &c.id).await;
                return Err(e);
            }
            // Before the process starts, so that it resolves its own name at once.
            self.sync_dns(c.node).await;
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
        Err(last_err.unwrap_or_else(|| EngineError::internal("no free host port")))
    }

    /// The container's endpoints to allocate, from the current state: one per network
    /// it is connected to, the network of its `NetworkMode` first (it carries the default
    /// route and the published ports), each address left unspecified for the log to
    /// choose (`AllocateEndpoints`), ephemeral host ports chosen here.
    fn choose_endpoints(
        &self,
        c: &ContainerRecord,
        requests: &[PortRequest],
    ) -> Result<Vec<Endpoint>, EngineError> {
        let node = c.node;
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
            nets.sort_by_key(|(n, _)| !(n.name == primary || n.id == primary));
            let mut used_ports = ports_in_use(
                s.endpoints
                    .iter()
                    .filter(|(id, _)| **id != c.id)
                    .flat_map(|(_, e)| e),
                node,
            );
            let mut eps = vec![];
            for (i, (n, aliases)) in nets.iter().enumerate() {
                let mut ports = vec![];
                // As Docker: ports are not published from an internal network.
                if i == 0 && !n.internal() {
                    for r in requests {
                        let mut m = PortMapping {
                            proto: r.proto,
                            container_port: r.container_port,
                            host_ip: r.host_ip,
                            host_port: r.host_port,
                        };
                        if m.host_port == 0 {
                            m.host_port = pick_port(&used_ports, &m, rand::random())
                                .ok_or_else(|| EngineError::internal("no free host port"))?;
                        } else if port_taken(&used_ports, &m) {
                            return Err(EngineError::internal(format!(
                                "driver failed programming external connectivity on endpoint {}: Bind for {}:{} failed: port is already allocated",
                                c.name, m.host_ip, m.host_port
                            )));
                        }
                        used_ports.push(m);
                        ports.push(m);
                    }
                }
                eps.push(Endpoint {
                    network: n.id.clone(),
                    ip: Ipv4Addr::UNSPECIFIED,
                    mac: [0; 6],
                    ports,
                    aliases: aliases.clone(),
                    node,
                });
            }
            Ok(eps)
        })
    }

    /// After a container stopped (its endpoints freed by `ContainerExited`), or a start
    /// failed: rules and port reservations follow the state.
    pub(super) async fn network_released(&self, c: &ContainerRecord) {
        let id = &c.id;
        let has_endpoints = self.store().read(|s| s.endpoints.contains_key(id));
        let steps = super::plan::release_network(c.node, id, has_endpoints);
        // Every step is clean-up that may fail alone (logged by the executor).
        let _ = self.execute(steps).await;
    }

    /// The shim options with the container's network namespace.
    pub(super) fn with_netns(mut options: ShimOptions, start: &NetStart) -> ShimOptions {
        options.netns = start.netns.clone();
        options
    }

    /// `wharf down`: remove `node`'s rules and bridges (records stay in the state).
    pub async fn teardown_network(&self, node: NodeId) {
        let bridges: Vec<String> = self.store().read(|s| {
            s.networks
                .values()
                .filter(|n| n.node == node)
                .map(|n| n.bridge.clone())
                .collect()
        });
        if let Err(e) = self.agents.remove_rules(&node).await {
            warn!(error = %e, "rules not removed");
        }
        let default = match self.agents.network_host(&node).await {
            Ok(host) => vec![host.default_bridge],
            Err(e) => {
                warn!(error = %e, "default bridge unknown");
                vec![]
            }
        };
        for b in bridges.iter().chain(&default) {
            if let Err(e) = self.agents.remove_bridge(&node, b).await {
                warn!(bridge = %b, error = %e, "bridge not removed");
            }
        }
    }

    /// `NetworkSettings` of inspect; `sandbox_key` is the container's network namespace
    /// as its agent reports it (empty unless it runs).
    pub fn network_settings(&self, c: &ContainerRecord, sandbox_key: &str) -> Value {
        let (hc, cfg, _) = Self::net_json(c);
        let exposed = exposed_ports(&cfg, &self.image_config_json(c)).unwrap_or_default();
        self.store()
            .read(|s| network_settings_json(s, c, &hc, &exposed, sandbox_key))
    }

    /// The `Ports` list of `docker ps`.
    pub fn ps_ports(&self, c: &ContainerRecord) -> Value {
        self.store().read(|s| ps_ports_json(s, c))
    }
}

/// The networks of a create body's `NetworkingConfig.EndpointsConfig` beyond the one of
/// its network mode (`docker run --network a --network b`), with their settings.
/// Check a create request's networking (pure): the run's options, the network mode
/// (written back into `host_config` as Docker shows it), port requests, and that every
/// further network exists. As Docker, a missing network of the mode itself is only an
/// error at start.
pub fn check_network_request(
    state: &ClusterState,
    node: NodeId,
    host_config: &mut Value,
    config: &Value,
    request: &Value,
) -> Result<(), EngineError> {
    check_run(request, host_config)?;
    let mode = NetworkMode::parse(
        host_config
            .get("NetworkMode")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    if let Some(o) = host_config.as_object_mut() {
        o.insert("NetworkMode".into(), json!(mode.shown()));
    }
    port_requests(host_config, config, &Value::Null)?;
    for (name, _) in extra_networks(request, &mode) {
        if find_network_on(state, name, Some(node)).is_none() {
            return Err(EngineError::not_found(format!("network {name} not found")));
        }
    }
    Ok(())
}

/// The commands that record the networks a new container joins (its `NetworkMode`, and
/// the further ones of `docker run --network a --network b`) with the aliases of the
/// create request's `NetworkingConfig` (pure).
pub fn connections_at_create(
    state: &ClusterState,
    c: &ContainerRecord,
    req: &Value,
) -> Result<Vec<Command>, EngineError> {
    let mode = mode_of(c);
    let NetworkMode::Network(name) = &mode else {
        return Ok(vec![]);
    };
    let primary = find_network_on(state, name, Some(c.node));
    let mut commands = vec![];
    if let Some(n) = primary {
        commands.push(Command::ConnectContainer {
            id: c.id.clone(),
            network: n.id.clone(),
            aliases: endpoint_aliases(req, &n.name, name),
        });
    }
    for (typed, ep) in extra_networks(req, &mode) {
        let extra = find_network_on(state, typed, Some(c.node))
            .ok_or_else(|| EngineError::not_found(format!("network {typed} not found")))?;
        if primary.is_some_and(|n| n.id == extra.id) {
            continue;
        }
        commands.push(Command::ConnectContainer {
            id: c.id.clone(),
            network: extra.id.clone(),
            aliases: string_list(ep.get("Aliases")),
        });
    }
    Ok(commands)
}

fn extra_networks<'a>(req: &'a Value, mode: &NetworkMode) -> Vec<(&'a str, &'a Value)> {
    endpoints_config(req)
        .into_iter()
        .filter(|(name, _)| NetworkMode::parse(name) != *mode)
        .collect()
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
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
    string_list(ep.and_then(|e| e.get("Aliases")))
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
) -> Result<NetworkRecord, EngineError> {
    if !valid_network_name(name) {
        return Err(EngineError::invalid(format!(
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
                EngineError::internal(
                    "could not find an available, non-overlapping IPv4 address pool",
                )
            })?,
    };
    let gateway = gateway.unwrap_or_else(|| subnet.gateway());
    if !subnet.contains(gateway) {
        return Err(EngineError::invalid(format!(
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
#[path = "network_test.rs"]
mod tests;
