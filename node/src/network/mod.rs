//! Container networking on one host: the instance's bridges, a veth pair per container
//! endpoint, iptables rules for outbound NAT and published ports, and the host-port
//! reservations that keep other programs (and other instances) off published ports.
//!
//! ```text
//!  controller (decides: networks, IPs, host ports in the Raft state)
//!      │ ensure_bridge / attach(pid, plans) / sync_rules(|| RuleSet) / reserve, release_ports
//!      ▼
//!  NetHost ──► netlink (bridge, veth, addresses, routes; netlink-packet-route)
//!          ──► iptables-restore --noflush of the instance's own chains (rules.rs)
//!          ──► bound-but-idle sockets holding each published host port
//! ```
//!
//! Everything here is blocking; async callers run it with `spawn_blocking`. Names of
//! kernel objects come from [`names`], rule texts from [`rules`]: both pure.

pub mod names;
pub mod netlink;
pub mod rules;

use names::InstanceNames;
use netlink::{index_of, Netlink, NetlinkError};
use rules::RuleSet;
use std::collections::HashMap;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use tracing::{info, warn};
pub use wharf_protocol::network::{AttachPlan, NetworkSetup};
use wharf_protocol::network::{PortMapping, Proto, Subnet};

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A netlink request failed.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// An interface that should exist does not.
    #[error("no interface {0}")]
    NoInterface(String),
    /// A sysctl could not be written.
    #[error("write {path}: {source}")]
    Sysctl {
        /// The /proc/sys file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// iptables failed.
    #[error("iptables {args}: {message}")]
    Iptables {
        /// What was run.
        args: String,
        /// Its stderr or spawn error.
        message: String,
    },
    /// The container's network namespace could not be opened or entered.
    #[error("network namespace of pid {pid}: {message}")]
    Netns {
        /// The container's init pid.
        pid: u32,
        /// What failed.
        message: String,
    },
    /// A host port could not be reserved.
    #[error("Bind for {addr}:{port} failed: {message}")]
    PortBusy {
        /// Host address.
        addr: Ipv4Addr,
        /// Host port.
        port: u16,
        /// The OS error.
        message: String,
    },
    /// The configured bridge name is not a valid interface name.
    #[error("invalid bridge name {0:?}: 1 to 15 characters, no '/', ':' or spaces")]
    BridgeName(String),
    /// No default subnet is free of the host's routes.
    #[error("no free 10.128.0.0/10 subnet for the default bridge; set --bridge-subnet")]
    NoSubnet,
}

/// The network side of one agent.
pub struct NetHost {
    names: InstanceNames,
    default_bridge: String,
    default_subnet: Subnet,
    reservations: Mutex<HashMap<PortMapping, (String, OwnedFd)>>,
    applied: Mutex<Option<RuleSet>>,
}

impl NetHost {
    /// Set up the network side of the instance of `data_dir`: `bridge` and `subnet` are
    /// the configured default bridge (derived from the data dir when `None`; the subnet
    /// is then the first candidate clear of the host's routes and of `taken`).
    pub fn new(
        data_dir: &Path,
        bridge: Option<String>,
        subnet: Option<Subnet>,
        taken: &[Subnet],
    ) -> Result<NetHost, NetError> {
        let names = InstanceNames::for_data_dir(data_dir);
        let default_bridge = bridge.unwrap_or_else(|| names.default_bridge(data_dir));
        if !names::valid_ifname(&default_bridge) {
            return Err(NetError::BridgeName(default_bridge));
        }
        let default_subnet = match subnet {
            Some(s) => s,
            None => {
                let routes =
                    names::routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default());
                names
                    .default_subnets()
                    .find(|s| !routes.iter().chain(taken).any(|r| r.overlaps(s)))
                    .ok_or(NetError::NoSubnet)?
            }
        };
        Ok(NetHost {
            names,
            default_bridge,
            default_subnet,
            reservations: Mutex::default(),
            applied: Mutex::default(),
        })
    }

    /// The instance's names.
    pub fn names(&self) -> &InstanceNames {
        &self.names
    }

    /// The default bridge's interface name and subnet.
    pub fn default_bridge(&self) -> (&str, Subnet) {
        (&self.default_bridge, self.default_subnet)
    }

    /// The host's routes, for choosing subnets that do not overlap them.
    pub fn host_routes(&self) -> Vec<Subnet> {
        names::routes(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
    }

    /// Create bridge `name` with the gateway address if missing, bring it up, let it route
    /// 127/8 (published ports from localhost) and turn on IPv4 forwarding. Idempotent.
    pub fn ensure_bridge(
        &self,
        name: &str,
        subnet: Subnet,
        gateway: Ipv4Addr,
    ) -> Result<(), NetError> {
        let mut nl = Netlink::open()?;
        nl.create_bridge(name)?;
        let index = index_of(name).ok_or_else(|| NetError::NoInterface(name.into()))?;
        nl.add_address(index, gateway, subnet.prefix)?;
        nl.set_up(index)?;
        sysctl(
            &format!("/proc/sys/net/ipv4/conf/{name}/route_localnet"),
            "1",
        )?;
        sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        Ok(())
    }

    /// Let iptables see the traffic between the ports of a bridge (`br_netfilter`,
    /// `net.bridge.bridge-nf-call-iptables=1`), without which a network's
    /// `enable_icc=false` rule never matches; call before creating such a network, as
    /// dockerd does. The module is loaded when its sysctl is missing.
    pub fn ensure_bridge_netfilter(&self) -> Result<(), NetError> {
        const PATH: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
        if !Path::new(PATH).exists() {
            match Command::new("modprobe")
                .arg("br_netfilter")
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) if out.status.success() => {}
                Ok(out) => {
                    warn!(error = %String::from_utf8_lossy(&out.stderr).trim(), "modprobe br_netfilter failed")
                }
                Err(e) => warn!(error = %e, "modprobe br_netfilter failed"),
            }
        }
        sysctl(PATH, "1")
    }

    /// Delete bridge `name` (its veths go with their containers); absent is fine.
    pub fn remove_bridge(&self, name: &str) -> Result<(), NetError> {
        if let Some(index) = index_of(name) {
            Netlink::open()?.delete_link(index)?;
            info!(bridge = name, "bridge removed");
        }
        Ok(())
    }

    /// Give the container whose init is `pid` one interface per plan: a veth whose host
    /// end is plugged into the plan's bridge and whose other end, renamed, holds the
    /// address (and the default route) inside the container's network namespace.
    /// A host end left by an earlier attempt is deleted first.
    pub fn attach(&self, pid: u32, plans: &[AttachPlan]) -> Result<(), NetError> {
        let netns = move |message: String| NetError::Netns { pid, message };
        let ns = File::open(format!("/proc/{pid}/ns/net")).map_err(|e| netns(e.to_string()))?;
        let mut nl = Netlink::open()?;
        for p in plans {
            if let Some(stale) = index_of(&p.host_veth) {
                let _ = nl.delete_link(stale);
            }
            nl.create_veth(&p.host_veth, &p.ifname, p.mac, ns.as_raw_fd())?;
            let host =
                index_of(&p.host_veth).ok_or_else(|| NetError::NoInterface(p.host_veth.clone()))?;
            let bridge =
                index_of(&p.bridge).ok_or_else(|| NetError::NoInterface(p.bridge.clone()))?;
            nl.enslave_up(host, bridge)?;
            // Hairpin: a container reaching its own published port comes back the same way.
            let _ = std::fs::write(
                format!("/sys/class/net/{}/brport/hairpin_mode", p.host_veth),
                "1",
            );
        }
        let plans = plans.to_vec();
        std::thread::spawn(move || -> Result<(), NetError> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| netns(format!("setns: {e}")))?;
            let mut nl = Netlink::open()?;
            if let Some(lo) = index_of("lo") {
                nl.set_up(lo)?;
            }
            for p in &plans {
                let i =
                    index_of(&p.ifname).ok_or_else(|| NetError::NoInterface(p.ifname.clone()))?;
                nl.add_address(i, p.ip, p.prefix)?;
                nl.set_up(i)?;
                if p.default_route {
                    nl.add_default_route(i, p.gateway)?;
                }
            }
            Ok(())
        })
        .join()
        .map_err(|_| netns("configuring thread panicked".into()))?
    }

    /// Make the instance's chains hold exactly the rule set `current` returns; it is
    /// called under the lock, so concurrent callers never apply an older state after a
    /// newer one. Nothing runs when the set is what this process applied last.
    pub fn sync_rules(&self, current: impl FnOnce() -> RuleSet) -> Result<(), NetError> {
        let mut applied = self.applied.lock().unwrap_or_else(|p| p.into_inner());
        let set = current();
        if applied.as_ref() == Some(&set) {
            return Ok(());
        }
        let text = rules::restore_text(&self.names, &set);
        *applied = None;
        run_with_stdin("iptables-restore", &["-w", "--noflush"], &text)?;
        *applied = Some(set);
        Ok(())
    }

    /// Create the instance's chains and their jumps from the builtin chains if missing;
    /// call once at start-up.
    pub fn ensure_jumps(&self) -> Result<(), NetError> {
        for (table, chain) in rules::chains(&self.names) {
            if iptables(&["-w", "-t", table, "-S", &chain]).is_err() {
                iptables(&["-w", "-t", table, "-N", &chain])?;
            }
        }
        for (table, builtin, rule) in rules::jumps(&self.names) {
            let mut check = vec!["-w", "-t", table, "-C", builtin];
            check.extend(rule.iter().map(String::as_str));
            if iptables(&check).is_err() {
                let mut insert = vec!["-w", "-t", table, "-I", builtin, "1"];
                insert.extend(rule.iter().map(String::as_str));
                iptables(&insert)?;
            }
        }
        Ok(())
    }

    /// Remove the instance's jumps and chains (`wharf down`); missing ones are fine.
    pub fn remove_rules(&self) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
        for (table, builtin, rule) in rules::jumps(&self.names) {
            let mut del = vec!["-w", "-t", table, "-D", builtin];
            del.extend(rule.iter().map(String::as_str));
            while iptables(&del).is_ok() {}
        }
        for (table, chain) in rules::chains(&self.names) {
            let _ = iptables(&["-w", "-t", table, "-F", &chain]);
            let _ = iptables(&["-w", "-t", table, "-X", &chain]);
        }
    }

    /// Hold host port `m` for `owner` (a container ID) with a bound, idle socket so that
    /// no other program or instance takes it; already held for the same owner is fine.
    pub fn reserve(&self, owner: &str, m: &PortMapping) -> Result<(), NetError> {
        let mut held = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        match held.get(m) {
            Some((o, _)) if o == owner => return Ok(()),
            Some(_) => {
                return Err(NetError::PortBusy {
                    addr: m.host_ip,
                    port: m.host_port,
                    message: "port is already allocated".into(),
                })
            }
            None => {}
        }
        let fd = bind_port(m).map_err(|e| NetError::PortBusy {
            addr: m.host_ip,
            port: m.host_port,
            message: if e == nix::errno::Errno::EADDRINUSE {
                "port is already allocated".into()
            } else {
                e.desc().to_string()
            },
        })?;
        held.insert(*m, (owner.to_string(), fd));
        Ok(())
    }

    /// Let go of every port held for `owner`.
    pub fn release_ports(&self, owner: &str) {
        let mut held = self.reservations.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (o, _)| o != owner);
    }
}

fn bind_port(m: &PortMapping) -> Result<OwnedFd, nix::errno::Errno> {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let ty = match m.proto {
        Proto::Tcp => SockType::Stream,
        Proto::Udp => SockType::Datagram,
    };
    let fd = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC, None)?;
    let o = m.host_ip.octets();
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::new(o[0], o[1], o[2], o[3], m.host_port),
    )?;
    Ok(fd)
}

fn sysctl(path: &str, value: &str) -> Result<(), NetError> {
    if std::fs::read_to_string(path).is_ok_and(|v| v.trim() == value) {
        return Ok(());
    }
    std::fs::write(path, value).map_err(|source| NetError::Sysctl {
        path: path.to_string(),
        source,
    })
}

fn iptables(args: &[&str]) -> Result<(), NetError> {
    let out = Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Iptables {
            args: args.join(" "),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Iptables {
            args: args.join(" "),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Result<(), NetError> {
    use std::io::Write;
    let fail = |message: String| NetError::Iptables {
        args: format!("{program} {}", args.join(" ")),
        message,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
        warn!(error = %message, "iptables-restore failed");
        Err(fail(message))
    }
}
