//! The iptables rules of one instance, as data: a pure function of its bridges and
//! published ports. Wharf uses iptables (the `iptables` binary, nft or legacy backend, as
//! dockerd does) with chains of its own, each hooked from a builtin chain by one jump:
//!
//! ```text
//!  nat    PREROUTING  -m addrtype --dst-type LOCAL -j WHARF-<tag>       DNAT of published ports
//!  nat    OUTPUT      -m addrtype --dst-type LOCAL -j WHARF-<tag>       (also from 127.0.0.1)
//!  nat    POSTROUTING -j WHARF-<tag>-POST                               outbound NAT, loopback, hairpin
//!  filter FORWARD     -j WHARF-<tag>-FWD                                accept published / outbound
//! ```
//!
//! Every change rewrites the own chains in one `iptables-restore --noflush` transaction
//! (a declared chain is flushed first), so the rules always equal what the state says,
//! after a crash too. Cleanup flushes and deletes the chains and removes the jumps.

use super::names::InstanceNames;
use std::net::Ipv4Addr;
use wharf_protocol::network::{Proto, Subnet};

/// A bridge of the instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeRule {
    /// Interface name.
    pub bridge: String,
    /// Its subnet.
    pub subnet: Subnet,
}

/// One published port of a running container.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// The whole rule set of an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// Bridges, in a stable order.
    pub bridges: Vec<BridgeRule>,
    /// Published ports, in a stable order.
    pub publishes: Vec<PublishRule>,
}

/// The `iptables-restore --noflush` input that makes the instance's chains hold `set`.
pub fn restore_text(names: &InstanceNames, set: &RuleSet) -> String {
    let (nat, post, fwd) = (&names.nat_chain, &names.post_chain, &names.fwd_chain);
    let mut out = format!("*nat\n:{nat} - [0:0]\n:{post} - [0:0]\n");
    for p in &set.publishes {
        let proto = p.proto.as_str();
        let dst = if p.host_ip.is_unspecified() {
            String::new()
        } else {
            format!(" -d {}/32", p.host_ip)
        };
        out.push_str(&format!(
            "-A {nat}{dst} -p {proto} -m {proto} --dport {} -j DNAT --to-destination {}:{}\n",
            p.host_port, p.container_ip, p.container_port
        ));
    }
    for b in &set.bridges {
        out.push_str(&format!(
            "-A {post} -s {} ! -o {} -j MASQUERADE\n",
            b.subnet, b.bridge
        ));
        out.push_str(&format!(
            "-A {post} -o {} -m addrtype --src-type LOCAL -j MASQUERADE\n",
            b.bridge
        ));
    }
    for p in &set.publishes {
        let proto = p.proto.as_str();
        out.push_str(&format!(
            "-A {post} -s {ip}/32 -d {ip}/32 -p {proto} -m {proto} --dport {} -j MASQUERADE\n",
            p.container_port,
            ip = p.container_ip
        ));
    }
    out.push_str(&format!("COMMIT\n*filter\n:{fwd} - [0:0]\n"));
    for b in &set.bridges {
        out.push_str(&format!(
            "-A {fwd} -o {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
            b.bridge
        ));
        out.push_str(&format!("-A {fwd} -i {} -j ACCEPT\n", b.bridge));
    }
    for p in &set.publishes {
        let proto = p.proto.as_str();
        out.push_str(&format!(
            "-A {fwd} -d {}/32 -o {} -p {proto} -m {proto} --dport {} -j ACCEPT\n",
            p.container_ip, p.bridge, p.container_port
        ));
    }
    for b in &set.bridges {
        out.push_str(&format!("-A {fwd} -o {} -j DROP\n", b.bridge));
    }
    out.push_str("COMMIT\n");
    out
}

/// The jumps from builtin chains: `(table, builtin chain, rule arguments)`.
pub fn jumps(names: &InstanceNames) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (
            "nat",
            "PREROUTING",
            v(&[
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                &names.nat_chain,
            ]),
        ),
        (
            "nat",
            "OUTPUT",
            v(&[
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "-j",
                &names.nat_chain,
            ]),
        ),
        ("nat", "POSTROUTING", v(&["-j", &names.post_chain])),
        ("filter", "FORWARD", v(&["-j", &names.fwd_chain])),
    ]
}

/// The own chains: `(table, chain)`.
pub fn chains(names: &InstanceNames) -> Vec<(&'static str, String)> {
    vec![
        ("nat", names.nat_chain.clone()),
        ("nat", names.post_chain.clone()),
        ("filter", names.fwd_chain.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn rule_text_publishes_masquerades_and_accepts() {
        let names = InstanceNames::for_data_dir(Path::new("/x"));
        let set = RuleSet {
            bridges: vec![BridgeRule {
                bridge: "wh-1".into(),
                subnet: Subnet::parse("10.130.4.0/24").unwrap(),
            }],
            publishes: vec![PublishRule {
                bridge: "wh-1".into(),
                container_ip: Ipv4Addr::new(10, 130, 4, 2),
                proto: Proto::Tcp,
                container_port: 80,
                host_ip: Ipv4Addr::LOCALHOST,
                host_port: 8080,
            }],
        };
        let text = restore_text(&names, &set);
        let nat = &names.nat_chain;
        assert!(text.starts_with(&format!("*nat\n:{nat} - [0:0]\n")));
        assert!(text.contains(&format!(
            "-A {nat} -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.130.4.2:80\n"
        )));
        assert!(text.contains("-s 10.130.4.0/24 ! -o wh-1 -j MASQUERADE"));
        assert!(text
            .contains("-s 10.130.4.2/32 -d 10.130.4.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE"));
        let accept = text.find("--dport 80 -j ACCEPT").unwrap();
        let drop = text.find("-o wh-1 -j DROP").unwrap();
        assert!(
            accept < drop,
            "published ports are accepted before the drop"
        );
        assert_eq!(text.matches("COMMIT").count(), 2);
    }

    #[test]
    fn an_empty_set_still_declares_and_so_flushes_every_chain() {
        let names = InstanceNames::for_data_dir(Path::new("/x"));
        let text = restore_text(&names, &RuleSet::default());
        for (_, c) in chains(&names) {
            assert!(text.contains(&format!(":{c} - [0:0]")));
        }
        assert!(!text.contains("-A "));
        assert_eq!(jumps(&names).len(), 4);
    }
}
