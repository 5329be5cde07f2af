//! Unit tests of [`super`]: the rule text, and what the forward chains decide for a
//! packet, found by running the generated filter rules through a small evaluator of the
//! iptables matches they use (`-i -o -s -d -p --dport --ctstate`, each negatable).

use super::*;
use std::net::Ipv4Addr;
use std::path::Path;
use wharf_protocol::network::{Proto, Subnet};

const ETH: &str = "eth0";

fn subnet(s: &str) -> Subnet {
    Subnet::parse(s).unwrap()
}

fn bridge(name: &str, net: &str) -> BridgeRule {
    BridgeRule {
        bridge: name.into(),
        subnet: subnet(net),
        internal: false,
        icc: true,
        masquerade: true,
    }
}

fn publish(bridge: &str, ip: [u8; 4], port: u16, host_port: u16) -> PublishRule {
    PublishRule {
        bridge: bridge.into(),
        container_ip: Ipv4Addr::from(ip),
        proto: Proto::Tcp,
        container_port: port,
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_port,
    }
}

fn names() -> InstanceNames {
    InstanceNames::for_data_dir(Path::new("/x"))
}

/// A packet as the filter table's FORWARD hook sees it.
#[derive(Clone, Copy)]
struct Packet<'a> {
    i: &'a str,
    o: &'a str,
    src: [u8; 4],
    dst: [u8; 4],
    proto: &'a str,
    dport: u16,
    /// conntrack state: `NEW`, `ESTABLISHED` or `RELATED`.
    state: &'a str,
    /// The connection's destination was rewritten by a DNAT rule (a published port
    /// reached through a host address).
    dnat: bool,
}

fn tcp<'a>(i: &'a str, o: &'a str, src: [u8; 4], dst: [u8; 4], dport: u16) -> Packet<'a> {
    Packet {
        i,
        o,
        src,
        dst,
        proto: "tcp",
        dport,
        state: "NEW",
        dnat: false,
    }
}

fn icmp<'a>(i: &'a str, o: &'a str, src: [u8; 4], dst: [u8; 4]) -> Packet<'a> {
    Packet {
        proto: "icmp",
        dport: 0,
        ..tcp(i, o, src, dst, 0)
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Accept,
    Drop,
    /// No rule of the instance decided: the builtin chain goes on.
    NotOurs,
}

/// The `-A` lines of `table` in `text`, as (chain, tokens).
fn table_rules<'t>(text: &'t str, table: &str) -> Vec<(&'t str, Vec<&'t str>)> {
    let mut inside = false;
    let mut out = vec![];
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            inside = t == table;
        } else if inside {
            if let Some(rule) = line.strip_prefix("-A ") {
                let mut tokens = rule.split_whitespace();
                let chain = tokens.next().unwrap();
                out.push((chain, tokens.collect()));
            }
        }
    }
    out
}

/// `a.b.c.d/n` (any n, /32 too) contains `ip`.
fn cidr_contains(cidr: &str, ip: [u8; 4]) -> bool {
    let (a, n) = cidr.split_once('/').unwrap();
    let a = u32::from(a.parse::<Ipv4Addr>().unwrap());
    let n: u32 = n.parse().unwrap();
    let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
    a & mask == u32::from(Ipv4Addr::from(ip)) & mask
}

fn rule_matches(tokens: &[&str], p: &Packet) -> (bool, Option<String>) {
    let mut target = None;
    let mut neg = false;
    let mut all = true;
    let mut it = tokens.iter();
    while let Some(&t) = it.next() {
        let cond = match t {
            "!" => {
                neg = true;
                continue;
            }
            "-m" => {
                it.next();
                continue;
            }
            "-j" => {
                target = it.next().map(|s| s.to_string());
                continue;
            }
            "-i" => *it.next().unwrap() == p.i,
            "-o" => *it.next().unwrap() == p.o,
            "-s" => cidr_contains(it.next().unwrap(), p.src),
            "-d" => cidr_contains(it.next().unwrap(), p.dst),
            "-p" => *it.next().unwrap() == p.proto,
            "--dport" => it.next().unwrap().parse::<u16>().unwrap() == p.dport,
            "--ctstate" => it.next().unwrap().split(',').any(|s| match s {
                "DNAT" => p.dnat,
                s => s == p.state,
            }),
            other => panic!("the evaluator does not know {other}"),
        };
        all &= cond != neg;
        neg = false;
    }
    (all, target)
}

fn run_chain(rules: &[(&str, Vec<&str>)], chain: &str, p: &Packet) -> Verdict {
    for (c, tokens) in rules.iter().filter(|(c, _)| *c == chain) {
        let (hit, target) = rule_matches(tokens, p);
        if !hit {
            continue;
        }
        match target.as_deref() {
            Some("ACCEPT") => return Verdict::Accept,
            Some("DROP") => return Verdict::Drop,
            Some(next) if next != *c => match run_chain(rules, next, p) {
                Verdict::NotOurs => continue,
                v => return v,
            },
            t => panic!("unexpected target {t:?}"),
        }
    }
    Verdict::NotOurs
}

/// What the instance's forward chain decides for `p`.
fn forward(set: &RuleSet, p: Packet) -> Verdict {
    let names = names();
    let text = restore_text(&names, set);
    run_chain(&table_rules(&text, "filter"), &names.fwd_chain, &p)
}

/// Networks A (10.1.0.0/24), B (10.2.0.0/24) and the default bridge D (10.3.0.0/24),
/// with a port of a container on A published as host port 8080.
fn three_networks() -> RuleSet {
    RuleSet {
        bridges: vec![
            bridge("br-a", "10.1.0.0/24"),
            bridge("br-b", "10.2.0.0/24"),
            bridge("wh-d", "10.3.0.0/24"),
        ],
        publishes: vec![publish("br-a", [10, 1, 0, 2], 80, 8080)],
    }
}

const A1: [u8; 4] = [10, 1, 0, 2];
const A2: [u8; 4] = [10, 1, 0, 3];
const B1: [u8; 4] = [10, 2, 0, 2];
const D1: [u8; 4] = [10, 3, 0, 2];
const OUTSIDE: [u8; 4] = [192, 0, 2, 7];

#[test]
fn two_user_networks_do_not_reach_each_other_either_way() {
    let set = three_networks();
    for p in [
        tcp("br-b", "br-a", B1, A1, 80),
        tcp("br-a", "br-b", A1, B1, 80),
        tcp("br-b", "br-a", B1, A1, 22),
        icmp("br-b", "br-a", B1, A1),
        icmp("br-a", "br-b", A1, B1),
    ] {
        assert_eq!(forward(&set, p), Verdict::Drop, "{} -> {}", p.i, p.o);
    }
    // Not even a reply can be made up: an established state never crosses either.
    let reply = Packet {
        state: "ESTABLISHED",
        ..tcp("br-a", "br-b", A1, B1, 40000)
    };
    assert_eq!(forward(&set, reply), Verdict::Drop);
}

#[test]
fn containers_of_one_network_reach_each_other_and_one_on_both_reaches_each() {
    let set = three_networks();
    // Bridged traffic seen by iptables (br_netfilter): in and out of the same bridge.
    assert_eq!(
        forward(&set, tcp("br-a", "br-a", A1, A2, 80)),
        Verdict::Accept
    );
    assert_eq!(forward(&set, icmp("br-a", "br-a", A2, A1)), Verdict::Accept);
    // A container on A and B has an address on each: it talks to each over that bridge.
    let both_a = [10, 1, 0, 9];
    let both_b = [10, 2, 0, 9];
    assert_eq!(
        forward(&set, tcp("br-a", "br-a", both_a, A1, 80)),
        Verdict::Accept
    );
    assert_eq!(
        forward(&set, tcp("br-b", "br-b", both_b, B1, 80)),
        Verdict::Accept
    );
    assert_eq!(
        forward(&set, tcp("br-b", "br-b", B1, both_b, 80)),
        Verdict::Accept
    );
}

#[test]
fn the_default_bridge_and_a_user_network_are_isolated() {
    let set = three_networks();
    assert_eq!(
        forward(&set, tcp("wh-d", "br-a", D1, A1, 80)),
        Verdict::Drop
    );
    assert_eq!(
        forward(&set, tcp("br-a", "wh-d", A1, D1, 80)),
        Verdict::Drop
    );
    assert_eq!(forward(&set, icmp("wh-d", "br-b", D1, B1)), Verdict::Drop);
    assert_eq!(
        forward(&set, tcp("wh-d", "wh-d", D1, [10, 3, 0, 3], 80)),
        Verdict::Accept
    );
}

#[test]
fn published_ports_are_reached_through_the_host_only() {
    let set = three_networks();
    let dnat = |p: Packet<'static>| Packet { dnat: true, ..p };
    // From outside and from another network through a host address (DNAT'd): accepted,
    // and so are the replies.
    assert_eq!(
        forward(&set, dnat(tcp(ETH, "br-a", OUTSIDE, A1, 80))),
        Verdict::Accept
    );
    assert_eq!(
        forward(&set, dnat(tcp("br-b", "br-a", B1, A1, 80))),
        Verdict::Accept
    );
    let reply = Packet {
        state: "ESTABLISHED",
        dnat: true,
        ..tcp("br-a", "br-b", A1, B1, 40000)
    };
    assert_eq!(forward(&set, reply), Verdict::Accept);
    // Straight to the container's address, from outside or another network: dropped.
    assert_eq!(
        forward(&set, tcp(ETH, "br-a", OUTSIDE, A1, 80)),
        Verdict::Drop
    );
    assert_eq!(
        forward(&set, tcp("br-b", "br-a", B1, A1, 80)),
        Verdict::Drop
    );
    // A port that is not published: dropped even when DNAT'd (by someone else's rule).
    assert_eq!(
        forward(&set, dnat(tcp(ETH, "br-a", OUTSIDE, A1, 81))),
        Verdict::Drop
    );
}

#[test]
fn containers_go_out_and_get_their_replies() {
    let set = three_networks();
    assert_eq!(
        forward(&set, tcp("br-b", ETH, B1, OUTSIDE, 443)),
        Verdict::Accept
    );
    let reply = Packet {
        state: "ESTABLISHED",
        ..tcp(ETH, "br-b", OUTSIDE, B1, 40000)
    };
    assert_eq!(forward(&set, reply), Verdict::Accept);
    assert_eq!(
        forward(&set, tcp(ETH, "br-b", OUTSIDE, B1, 22)),
        Verdict::Drop
    );
    // Traffic between interfaces that are not the instance's is none of its business.
    assert_eq!(
        forward(&set, tcp(ETH, "eth1", OUTSIDE, OUTSIDE, 22)),
        Verdict::NotOurs
    );
    let text = restore_text(&names(), &set);
    for net in ["10.1.0.0/24", "10.2.0.0/24", "10.3.0.0/24"] {
        assert!(text.contains(&format!("-s {net} ! -o ")), "{text}");
    }
}

#[test]
fn an_internal_network_keeps_to_itself() {
    let mut set = three_networks();
    set.bridges.push(BridgeRule {
        internal: true,
        ..bridge("br-i", "10.4.0.0/24")
    });
    // An endpoint of an internal network never has published ports; even if the state
    // said so, nothing is published.
    set.publishes.push(publish("br-i", [10, 4, 0, 2], 80, 8081));
    let i1 = [10, 4, 0, 2];
    let i2 = [10, 4, 0, 3];
    assert_eq!(
        forward(&set, tcp("br-i", "br-i", i1, i2, 80)),
        Verdict::Accept
    );
    assert_eq!(forward(&set, icmp("br-i", "br-i", i2, i1)), Verdict::Accept);
    for p in [
        tcp("br-i", ETH, i1, OUTSIDE, 443),
        icmp("br-i", ETH, i1, OUTSIDE),
        tcp(ETH, "br-i", OUTSIDE, i1, 80),
        tcp("br-i", "br-a", i1, A1, 80),
        tcp("br-a", "br-i", A1, i1, 80),
        Packet {
            dnat: true,
            ..tcp(ETH, "br-i", OUTSIDE, i1, 80)
        },
        Packet {
            state: "ESTABLISHED",
            ..tcp(ETH, "br-i", OUTSIDE, i1, 40000)
        },
    ] {
        assert_eq!(forward(&set, p), Verdict::Drop, "{} -> {}", p.i, p.o);
    }
    let text = restore_text(&names(), &set);
    assert!(!text.contains("10.4.0.0/24 ! -o"), "no NAT out: {text}");
    assert!(!text.contains("-o br-i -m addrtype"), "{text}");
    assert!(!text.contains("8081"), "no published port: {text}");
    assert!(!text.contains("10.4.0.2/32 -d"), "{text}");
}

#[test]
fn icc_off_stops_container_to_container_on_that_network_only() {
    let mut set = three_networks();
    set.bridges[0].icc = false;
    assert_eq!(
        forward(&set, tcp("br-a", "br-a", A1, A2, 80)),
        Verdict::Drop
    );
    assert_eq!(forward(&set, icmp("br-a", "br-a", A2, A1)), Verdict::Drop);
    assert_eq!(
        forward(&set, tcp("br-a", ETH, A1, OUTSIDE, 443)),
        Verdict::Accept
    );
    let dnat = Packet {
        dnat: true,
        ..tcp(ETH, "br-a", OUTSIDE, A1, 80)
    };
    assert_eq!(
        forward(&set, dnat),
        Verdict::Accept,
        "published ports still served"
    );
    assert_eq!(
        forward(&set, tcp("br-b", "br-b", B1, [10, 2, 0, 3], 80)),
        Verdict::Accept
    );
    assert_eq!(
        forward(&set, tcp("br-b", "br-a", B1, A1, 80)),
        Verdict::Drop
    );
}

#[test]
fn masquerade_off_keeps_the_source_address() {
    let mut set = three_networks();
    set.bridges[1].masquerade = false;
    let text = restore_text(&names(), &set);
    assert!(
        !text.contains("-s 10.2.0.0/24 ! -o br-b -j MASQUERADE"),
        "{text}"
    );
    assert!(
        text.contains("-s 10.1.0.0/24 ! -o br-a -j MASQUERADE"),
        "{text}"
    );
    assert_eq!(
        forward(&set, tcp("br-b", ETH, B1, OUTSIDE, 443)),
        Verdict::Accept
    );
}

#[test]
fn rule_text_publishes_masquerades_and_accepts() {
    let names = names();
    let set = RuleSet {
        bridges: vec![bridge("wh-1", "10.130.4.0/24")],
        publishes: vec![PublishRule {
            host_ip: Ipv4Addr::LOCALHOST,
            ..publish("wh-1", [10, 130, 4, 2], 80, 8080)
        }],
    };
    let text = restore_text(&names, &set);
    let nat = &names.nat_chain;
    assert!(text.starts_with(&format!("*nat\n:{nat} - [0:0]\n")));
    assert!(text.contains(&format!(
        "-A {nat} -d 127.0.0.1/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.130.4.2:80\n"
    )));
    assert!(text.contains("-s 10.130.4.0/24 ! -o wh-1 -j MASQUERADE"));
    assert!(
        text.contains("-s 10.130.4.2/32 -d 10.130.4.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE")
    );
    assert_eq!(text.matches("COMMIT").count(), 2);
}

#[test]
fn an_empty_set_still_declares_and_so_flushes_every_chain() {
    let names = names();
    let text = restore_text(&names, &RuleSet::default());
    for (_, c) in chains(&names) {
        assert!(text.contains(&format!(":{c} - [0:0]")));
    }
    assert!(!text.contains("-A "));
    assert_eq!(jumps(&names).len(), 4);
}
