//! The iptables rules of one instance, as data: a pure function of its bridges and
//! published ports. Wharf uses iptables (the `iptables` binary, nft or legacy backend, as
//! dockerd does) with chains of its own, each hooked from a builtin chain by one jump:
//!
//! ```text
//!  nat    PREROUTING  -m addrtype --dst-type LOCAL -j WHARF-<tag>       DNAT of published ports
//!  nat    OUTPUT      -m addrtype --dst-type LOCAL -j WHARF-<tag>       (also from 127.0.0.1)
//!  nat    POSTROUTING -j WHARF-<tag>-POST                               outbound NAT, loopback, hairpin
//!  filter FORWARD     -j WHARF-<tag>-FWD                                isolation, accept published / outbound
//!                        └─ -j WHARF-<tag>-ISO                          drop: into another bridge of the instance
//! ```
//!
//! The forward chain, in order (Docker Engine's DOCKER-ISOLATION-STAGE-1/2, internal
//! networks and inter-container communication):
//!
//! ```text
//!  -i B ! -o B, not DNAT'd          -> ISO: -o <any bridge of the instance> DROP   (isolation)
//!  internal B: ! -s net -o B        DROP                                           (nothing in)
//!              -i B ! -d net        DROP                                           (nothing out)
//!  -o B RELATED,ESTABLISHED         ACCEPT                                         (replies)
//!  icc off: -i B -o B               DROP                                           (no container to container)
//!  -i B                             ACCEPT                                         (among the network, and out)
//!  published port, DNAT'd, -o B     ACCEPT                                         (not on internal networks)
//!  -o B                             DROP
//! ```
//!
//! Only connections to a published port that came through a host address (DNAT'd) cross
//! from one bridge to another; a container's address is reachable from its own networks
//! and from the host only. Internal networks get no NAT and no published ports.
//!
//! Every change rewrites the own chains in one `iptables-restore --noflush` transaction
//! (a declared chain is flushed first), so the rules always equal what the state says,
//! after a crash too. Cleanup flushes and deletes the chains and removes the jumps.

use super::names::InstanceNames;
pub use wharf_protocol::network::{BridgeRule, PublishRule, RuleSet};

/// The `iptables-restore --noflush` input that makes the instance's chains hold `set`.
pub fn restore_text(names: &InstanceNames, set: &RuleSet) -> String {
    let (nat, post, fwd, iso) = (
        &names.nat_chain,
        &names.post_chain,
        &names.fwd_chain,
        &names.iso_chain,
    );
    let internal = |bridge: &str| set.bridges.iter().any(|b| b.bridge == bridge && b.internal);
    // Internal networks publish nothing, whatever the endpoints say.
    let publishes: Vec<&PublishRule> = set
        .publishes
        .iter()
        .filter(|p| !internal(&p.bridge))
        .collect();
    let outbound: Vec<&BridgeRule> = set.bridges.iter().filter(|b| !b.internal).collect();
    let mut out = format!("*nat\n:{nat} - [0:0]\n:{post} - [0:0]\n");
    for p in &publishes {
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
    for b in &outbound {
        if b.masquerade {
            out.push_str(&format!(
                "-A {post} -s {} ! -o {} -j MASQUERADE\n",
                b.subnet, b.bridge
            ));
        }
        out.push_str(&format!(
            "-A {post} -o {} -m addrtype --src-type LOCAL -j MASQUERADE\n",
            b.bridge
        ));
    }
    for p in &publishes {
        let proto = p.proto.as_str();
        out.push_str(&format!(
            "-A {post} -s {ip}/32 -d {ip}/32 -p {proto} -m {proto} --dport {} -j MASQUERADE\n",
            p.container_port,
            ip = p.container_ip
        ));
    }
    out.push_str(&format!(
        "COMMIT\n*filter\n:{fwd} - [0:0]\n:{iso} - [0:0]\n"
    ));
    for b in &set.bridges {
        out.push_str(&format!(
            "-A {fwd} -i {b} ! -o {b} -m conntrack ! --ctstate DNAT -j {iso}\n",
            b = b.bridge
        ));
        out.push_str(&format!("-A {iso} -o {} -j DROP\n", b.bridge));
    }
    for b in set.bridges.iter().filter(|b| b.internal) {
        out.push_str(&format!(
            "-A {fwd} ! -s {} -o {} -j DROP\n",
            b.subnet, b.bridge
        ));
        out.push_str(&format!(
            "-A {fwd} -i {} ! -d {} -j DROP\n",
            b.bridge, b.subnet
        ));
    }
    for b in &outbound {
        out.push_str(&format!(
            "-A {fwd} -o {} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
            b.bridge
        ));
    }
    for b in set.bridges.iter().filter(|b| !b.icc) {
        out.push_str(&format!("-A {fwd} -i {b} -o {b} -j DROP\n", b = b.bridge));
    }
    for b in &set.bridges {
        out.push_str(&format!("-A {fwd} -i {} -j ACCEPT\n", b.bridge));
    }
    for p in &publishes {
        let proto = p.proto.as_str();
        out.push_str(&format!(
            "-A {fwd} -d {}/32 -o {} -p {proto} -m {proto} --dport {} -m conntrack --ctstate DNAT -j ACCEPT\n",
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
        ("filter", names.iso_chain.clone()),
    ]
}

#[cfg(test)]
#[path = "rules_test.rs"]
mod tests;
