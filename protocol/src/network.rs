//! Networks, container endpoints and published ports as cluster state, and the pure
//! decisions about them: subnets and their overlap, IP allocation (IPAM), host-port
//! allocation and Docker's port-spec texts.
//!
//! ```text
//!  leader (engine)                          every controller (apply)
//!  pick_ip / pick_port on the state   ──►   Command::AttachEndpoints: check subnet,
//!  (the only place with randomness)          free IP, free host port; record
//! ```
//!
//! A host port is a resource of the node that publishes it: two endpoints on the same
//! node may not publish the same `(protocol, host port)` on overlapping host addresses.
//! The scheduler of a multi-host cluster reads [`ports_in_use`] for the same reason.
//!
//! What the controller hands an agent to carry out is here too: a starting container's
//! interfaces ([`NetworkSetup`], [`AttachPlan`]), the instance's iptables rules
//! ([`RuleSet`]) and the names of the kernel objects both sides must agree on
//! ([`host_veth`], [`user_bridge`]).

use crate::ids::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 subnet: its network address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Subnet {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

/// Why a subnet text is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubnetError {
    /// Not `a.b.c.d/n`.
    #[error("invalid subnet {0}: expected an IPv4 CIDR such as 10.1.0.0/24")]
    Syntax(String),
    /// Host bits set, as Docker refuses them.
    #[error("invalid subnet {0}: it has host bits set")]
    HostBits(String),
    /// Too small to hold a gateway and one container.
    #[error("invalid subnet {0}: the prefix must be between 8 and 30")]
    Size(String),
}

impl Subnet {
    /// Parse `a.b.c.d/n` with no host bits set and a prefix of 8 to 30.
    pub fn parse(text: &str) -> Result<Subnet, SubnetError> {
        let (a, p) = text
            .split_once('/')
            .ok_or_else(|| SubnetError::Syntax(text.into()))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| SubnetError::Syntax(text.into()))?;
        let prefix: u8 = p.parse().map_err(|_| SubnetError::Syntax(text.into()))?;
        if !(8..=30).contains(&prefix) {
            return Err(SubnetError::Size(text.into()));
        }
        let s = Subnet { addr, prefix };
        if u32::from(addr) & !s.mask() != 0 {
            return Err(SubnetError::HostBits(text.into()));
        }
        Ok(s)
    }

    /// The netmask as a number.
    pub fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// True if `ip` lies in the subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// True if the two subnets share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        let m = self.mask() & other.mask();
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }

    /// The first host address, Docker's default gateway (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A bridge network of the cluster (`docker network create`, or the default `bridge`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Driver; `bridge`.
    pub driver: String,
    /// The subnet containers get addresses from.
    pub subnet: Subnet,
    /// The bridge's own address, containers' default route.
    pub gateway: Ipv4Addr,
    /// The Linux bridge interface on the node.
    pub bridge: String,
    /// The node whose bridge it is (bridge networks are local to one agent).
    pub node: NodeId,
    /// User labels, and the network's settings under the keys of [`SETTING_KEYS`] (read
    /// them with [`NetworkRecord::internal`] and its siblings, show users
    /// [`NetworkRecord::user_labels`]). The settings live here, not in fields of their own,
    /// so that the record's encoding, and with it every data dir made before they existed,
    /// stays readable.
    pub labels: BTreeMap<String, String>,
    /// Creation time, ns since the epoch.
    pub created_ns: i64,
    /// The agent's default network (`bridge`): no name resolution, cannot be removed.
    pub default: bool,
}

/// Key of [`NetworkRecord::labels`] set to `true` for `docker network create --internal`.
pub const KEY_INTERNAL: &str = "com.docker.network.internal";
/// Key of [`NetworkRecord::labels`] set to `false` for `-o
/// com.docker.network.bridge.enable_icc=false`.
pub const KEY_ICC: &str = "com.docker.network.bridge.enable_icc";
/// Key of [`NetworkRecord::labels`] set to `false` for `-o
/// com.docker.network.bridge.enable_ip_masquerade=false`.
pub const KEY_MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// The label keys that hold a network's settings rather than a user's labels.
pub const SETTING_KEYS: [&str; 3] = [KEY_INTERNAL, KEY_ICC, KEY_MASQUERADE];

impl NetworkRecord {
    /// `docker network create --internal`: no route out of the host, no NAT, no
    /// published ports; its containers reach each other only.
    pub fn internal(&self) -> bool {
        self.labels.get(KEY_INTERNAL).is_some_and(|v| v == "true")
    }

    /// Containers of the network may reach each other (default true).
    pub fn icc(&self) -> bool {
        self.labels.get(KEY_ICC).is_none_or(|v| v != "false")
    }

    /// Outbound traffic is masqueraded to the host's address (default true).
    pub fn masquerade(&self) -> bool {
        self.labels.get(KEY_MASQUERADE).is_none_or(|v| v != "false")
    }

    /// Record the network's settings (only those that differ from the defaults).
    pub fn set_settings(&mut self, internal: bool, icc: bool, masquerade: bool) {
        for (key, value, default) in [
            (KEY_INTERNAL, internal, false),
            (KEY_ICC, icc, true),
            (KEY_MASQUERADE, masquerade, true),
        ] {
            if value == default {
                self.labels.remove(key);
            } else {
                self.labels.insert(key.to_string(), value.to_string());
            }
        }
    }

    /// The labels a user gave, without the settings' keys.
    pub fn user_labels(&self) -> BTreeMap<String, String> {
        self.labels
            .iter()
            .filter(|(k, _)| !SETTING_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// Docker's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// Protocol.
    pub proto: Proto,
    /// Port inside the container.
    pub container_port: u16,
    /// Host address it is published on; `0.0.0.0` for every address.
    pub host_ip: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
}

/// A container's attachment to a network, while it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The network's ID.
    pub network: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The container's MAC address.
    pub mac: [u8; 6],
    /// Published ports (only on the endpoint that carries them).
    pub ports: Vec<PortMapping>,
    /// Extra names the container answers to on this network (`--network-alias`).
    pub aliases: Vec<String>,
    /// The node the container runs on.
    pub node: NodeId,
}

/// Docker's MAC for an address: `02:42` followed by the four bytes of the IP.
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// `02:42:0a:...` text of a MAC.
pub fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Every address in use on `network` in `endpoints`.
pub fn ips_in_use<'a>(
    endpoints: impl Iterator<Item = &'a Endpoint>,
    network: &str,
) -> BTreeSet<Ipv4Addr> {
    endpoints
        .filter(|e| e.network == network)
        .map(|e| e.ip)
        .collect()
}

/// Every published `(proto, host_ip, host_port)` on `node`.
pub fn ports_in_use<'a>(
    endpoints: impl Iterator<Item = &'a Endpoint>,
    node: NodeId,
) -> Vec<PortMapping> {
    endpoints
        .filter(|e| e.node == node)
        .flat_map(|e| e.ports.iter().copied())
        .collect()
}

/// True if publishing `m` collides with `used` (same protocol and port, and one of the two
/// host addresses is the wildcard or both are equal).
pub fn port_taken(used: &[PortMapping], m: &PortMapping) -> bool {
    used.iter().any(|u| {
        u.proto == m.proto
            && u.host_port == m.host_port
            && (u.host_ip == m.host_ip || u.host_ip.is_unspecified() || m.host_ip.is_unspecified())
    })
}

/// The lowest free container address of `subnet` (from `.2` up, skipping the gateway,
/// the network and broadcast addresses); `None` when the subnet is full.
pub fn pick_ip(subnet: &Subnet, gateway: Ipv4Addr, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(subnet.addr) + 1;
    let last = u32::from(subnet.broadcast()).checked_sub(1)?;
    (first..=last)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

/// The range Docker picks ephemeral host ports from (Linux's `ip_local_port_range`).
pub const EPHEMERAL_PORTS: std::ops::RangeInclusive<u16> = 32768..=60999;

/// A free ephemeral host port for `m` (its `host_port` ignored), trying from `start` (a
/// random offset chosen by the leader) round the range; `None` when all are taken.
pub fn pick_port(used: &[PortMapping], m: &PortMapping, start: u16) -> Option<u16> {
    let lo = *EPHEMERAL_PORTS.start() as u32;
    let n = (*EPHEMERAL_PORTS.end() as u32) - lo + 1;
    (0..n)
        .map(|i| (lo + (u32::from(start) + i) % n) as u16)
        .find(|p| {
            !port_taken(
                used,
                &PortMapping {
                    host_port: *p,
                    ..*m
                },
            )
        })
}

/// A port the user asked to publish, before an ephemeral host port is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRequest {
    /// Protocol.
    pub proto: Proto,
    /// Port inside the container.
    pub container_port: u16,
    /// Host address; `0.0.0.0` for all.
    pub host_ip: Ipv4Addr,
    /// Host port; 0 for an ephemeral one.
    pub host_port: u16,
}

/// Why a port spec of the API is refused (Docker's texts).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortSpecError {
    /// The `port/proto` key is not one.
    #[error("invalid port specification: \"{0}\"")]
    Port(String),
    /// Protocol other than tcp or udp.
    #[error("invalid proto: {0}")]
    Proto(String),
    /// The host address is not an IPv4 address.
    #[error("invalid IP address: {0}")]
    HostIp(String),
    /// The host port is not a port or a range.
    #[error("invalid hostPort: {0}")]
    HostPort(String),
}

/// Parse a `port[/proto]` key of `ExposedPorts` or `PortBindings` (`80/tcp`, `53/udp`).
pub fn parse_port_key(key: &str) -> Result<(u16, Proto), PortSpecError> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" | "" => Proto::Tcp,
        "udp" => Proto::Udp,
        _ => return Err(PortSpecError::Proto(proto.to_string())),
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok((p, proto)),
        _ => Err(PortSpecError::Port(key.to_string())),
    }
}

/// One `PortBindings` entry (`{"HostIp": "", "HostPort": "8080"}`) for container port
/// `key`; an empty `HostPort` asks for an ephemeral port, an empty `HostIp` for all
/// addresses. A range (`8000-8010`) takes its first port.
pub fn parse_binding(
    key: &str,
    host_ip: &str,
    host_port: &str,
) -> Result<PortRequest, PortSpecError> {
    let (container_port, proto) = parse_port_key(key)?;
    let host_ip = if host_ip.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        host_ip
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| PortSpecError::HostIp(host_ip.to_string()))?
    };
    let first = host_port.split('-').next().unwrap_or_default();
    let host_port = if host_port.is_empty() {
        0
    } else {
        first
            .parse::<u16>()
            .map_err(|_| PortSpecError::HostPort(host_port.to_string()))?
    };
    Ok(PortRequest {
        proto,
        container_port,
        host_ip,
        host_port,
    })
}

/// `docker network` names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, as Docker accepts them.
pub fn valid_network_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One interface to give a container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPlan {
    /// Host end of the veth.
    pub host_veth: String,
    /// Name inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// The bridge to plug the host end into.
    pub bridge: String,
    /// The container's address.
    pub ip: Ipv4Addr,
    /// The subnet's prefix length.
    pub prefix: u8,
    /// The gateway; the default route goes there when `default_route`.
    pub gateway: Ipv4Addr,
    /// The container's MAC.
    pub mac: [u8; 6],
    /// Route everything not local through this interface.
    pub default_route: bool,
}

/// What a starting container gets beyond its spec: interfaces, `/etc/hosts` lines
/// (`name:ip`) and name servers (used unless the container sets `--dns`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSetup {
    /// Interfaces, the first one with the default route.
    pub plans: Vec<AttachPlan>,
    /// `name:ip` entries for `/etc/hosts`.
    pub hosts: Vec<String>,
    /// Name servers for `/etc/resolv.conf`.
    pub dns: Vec<String>,
}

/// A bridge of the instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeRule {
    /// Interface name.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Subnet,
    /// `--internal`: traffic stays within the subnet; no NAT, no published ports.
    pub internal: bool,
    /// Containers on the bridge may reach each other.
    pub icc: bool,
    /// Outbound traffic from the subnet is masqueraded.
    pub masquerade: bool,
}

/// One published port of a running container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRule {
    /// The bridge the container is on.
    pub bridge: String,
    /// The container's address.
    pub container_ip: Ipv4Addr,
    /// Protocol.
    pub proto: Proto,
    /// Port in the container.
    pub container_port: u16,
    /// Host address (`0.0.0.0`: every local address).
    pub host_ip: Ipv4Addr,
    /// Host port.
    pub host_port: u16,
}

/// The whole iptables rule set of an instance, as the agent applies it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Bridges, in a stable order.
    pub bridges: Vec<BridgeRule>,
    /// Published ports, in a stable order.
    pub publishes: Vec<PublishRule>,
}

/// Linux's limit on interface names (IFNAMSIZ 16, with the final NUL).
pub const IFNAME_MAX: usize = 15;

/// The bridge of a user network: `br-` and the first 12 hex digits of its ID (Docker's).
pub fn user_bridge(network_id: &str) -> String {
    let hexid: String = network_id.chars().take(12).collect();
    format!("br-{hexid}")
}

/// The host end of a container's veth on a network: `wv` and 13 hex digits of a digest of
/// both IDs, so that it is stable across restarts of the agent and unique per endpoint.
pub fn host_veth(container_id: &str, network_id: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let d = Sha256::digest(format!("{container_id}/{network_id}").as_bytes());
    let mut name = format!("wv{}", hex::encode(&d[..7]));
    name.truncate(IFNAME_MAX);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_live_in_labels_and_are_not_shown_as_user_labels() {
        let subnet = Subnet::parse("10.9.0.0/24").unwrap();
        let mut n = NetworkRecord {
            id: "n".into(),
            name: "n".into(),
            driver: "bridge".into(),
            subnet,
            gateway: subnet.gateway(),
            bridge: "br-n".into(),
            node: NodeId(1),
            labels: [("tier".to_string(), "db".to_string())].into(),
            created_ns: 0,
            default: false,
        };
        assert!(!n.internal() && n.icc() && n.masquerade(), "defaults");
        n.set_settings(true, false, false);
        assert!(n.internal() && !n.icc() && !n.masquerade());
        assert_eq!(
            n.user_labels(),
            [("tier".to_string(), "db".to_string())].into()
        );
        n.set_settings(false, true, true);
        assert!(!n.internal() && n.icc() && n.masquerade());
        assert_eq!(n.labels.len(), 1, "defaults leave no key behind");
    }

    fn sn(s: &str) -> Subnet {
        Subnet::parse(s).unwrap()
    }

    #[test]
    fn subnets_parse_and_refuse_like_docker() {
        assert_eq!(sn("10.1.2.0/24").to_string(), "10.1.2.0/24");
        assert_eq!(sn("10.1.2.0/24").gateway(), Ipv4Addr::new(10, 1, 2, 1));
        assert_eq!(sn("10.1.2.0/24").broadcast(), Ipv4Addr::new(10, 1, 2, 255));
        assert!(matches!(
            Subnet::parse("10.1.2.1/24"),
            Err(SubnetError::HostBits(_))
        ));
        assert!(matches!(
            Subnet::parse("10.1.2.0"),
            Err(SubnetError::Syntax(_))
        ));
        assert!(matches!(
            Subnet::parse("10.1.2.0/31"),
            Err(SubnetError::Size(_))
        ));
        assert!(matches!(
            Subnet::parse("fd00::/64"),
            Err(SubnetError::Syntax(_))
        ));
    }

    #[test]
    fn overlap_is_symmetric_and_exact() {
        assert!(sn("10.0.0.0/8").overlaps(&sn("10.5.0.0/16")));
        assert!(sn("10.5.0.0/16").overlaps(&sn("10.0.0.0/8")));
        assert!(!sn("10.5.0.0/24").overlaps(&sn("10.5.1.0/24")));
        assert!(sn("10.5.0.0/23").overlaps(&sn("10.5.1.0/24")));
    }

    #[test]
    fn ips_are_allocated_lowest_first_skipping_gateway_and_broadcast() {
        let s = sn("10.9.0.0/30");
        let gw = s.gateway();
        let mut used = BTreeSet::new();
        let a = pick_ip(&s, gw, &used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        used.insert(a);
        assert_eq!(pick_ip(&s, gw, &used), None, "/30 holds one container");
        used.clear();
        let s = sn("10.9.0.0/24");
        used.insert(Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(pick_ip(&s, gw, &used), Some(Ipv4Addr::new(10, 9, 0, 3)));
        assert_eq!(mac_text(&mac_for(a)), "02:42:0a:09:00:02");
    }

    fn m(ip: [u8; 4], port: u16, proto: Proto) -> PortMapping {
        PortMapping {
            proto,
            container_port: 80,
            host_ip: Ipv4Addr::from(ip),
            host_port: port,
        }
    }

    #[test]
    fn host_ports_collide_on_wildcard_or_same_address_and_protocol() {
        let used = vec![
            m([0, 0, 0, 0], 8080, Proto::Tcp),
            m([127, 0, 0, 1], 9000, Proto::Tcp),
        ];
        assert!(port_taken(&used, &m([127, 0, 0, 1], 8080, Proto::Tcp)));
        assert!(!port_taken(&used, &m([0, 0, 0, 0], 8080, Proto::Udp)));
        assert!(port_taken(&used, &m([0, 0, 0, 0], 9000, Proto::Tcp)));
        assert!(!port_taken(&used, &m([127, 0, 0, 2], 9000, Proto::Tcp)));
    }

    #[test]
    fn ephemeral_ports_skip_used_ones_and_wrap() {
        let used = vec![m([0, 0, 0, 0], 60999, Proto::Tcp)];
        let want = m([0, 0, 0, 0], 0, Proto::Tcp);
        assert_eq!(pick_port(&used, &want, 60999 - 32768), Some(32768));
        assert_eq!(pick_port(&used, &want, 0), Some(32768));
        assert_eq!(pick_port(&[], &want, 5), Some(32773));
    }

    #[test]
    fn port_specs_parse_and_fail_with_dockers_texts() {
        assert_eq!(parse_port_key("80/tcp"), Ok((80, Proto::Tcp)));
        assert_eq!(parse_port_key("53/udp"), Ok((53, Proto::Udp)));
        assert_eq!(parse_port_key("8080"), Ok((8080, Proto::Tcp)));
        assert_eq!(
            parse_port_key("80/sctp").unwrap_err().to_string(),
            "invalid proto: sctp"
        );
        assert_eq!(
            parse_port_key("0/tcp").unwrap_err().to_string(),
            "invalid port specification: \"0/tcp\""
        );
        assert_eq!(
            parse_port_key("http/tcp").unwrap_err().to_string(),
            "invalid port specification: \"http/tcp\""
        );
        let b = parse_binding("80/tcp", "127.0.0.1", "8080").unwrap();
        assert_eq!(
            (b.host_ip, b.host_port, b.container_port),
            (Ipv4Addr::LOCALHOST, 8080, 80)
        );
        assert_eq!(parse_binding("80", "", "").unwrap().host_port, 0);
        assert_eq!(
            parse_binding("80", "", "8000-8005").unwrap().host_port,
            8000
        );
        assert_eq!(
            parse_binding("80", "", "x").unwrap_err().to_string(),
            "invalid hostPort: x"
        );
        assert_eq!(
            parse_binding("80", "nope", "1").unwrap_err().to_string(),
            "invalid IP address: nope"
        );
    }

    #[test]
    fn network_names() {
        assert!(valid_network_name("front_end-1.x"));
        assert!(!valid_network_name("-x"));
        assert!(!valid_network_name(""));
        assert!(!valid_network_name("a b"));
    }

    #[test]
    fn agent_names_are_stable() {
        // Existing veths and bridges carry these names: they may not change.
        assert_eq!(host_veth("c1", "n1"), "wv6f41f14b84861");
        assert_eq!(
            host_veth(&"a".repeat(64), &"b".repeat(64)).len(),
            IFNAME_MAX
        );
        assert_eq!(user_bridge("0123456789abcdef"), "br-0123456789ab");
    }
}
