//! Network isolation through the stock `docker` CLI (issue 19): containers on different
//! networks (user networks and the default bridge) do not reach each other by address,
//! by TCP or ICMP, in either direction, unless a container is on both; `--internal`
//! networks have no way out and publish nothing; `enable_icc=false` stops traffic within
//! a network; options Wharf does not carry out are refused; an agent restart repairs the
//! rules and `wharf down` removes them.
//!
//! Each check that something is blocked is paired with a check, from the same probe
//! container, that something else gets through, so a probe that is broken in itself
//! fails the test instead of passing it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use support::{eventually, free_port, inspect, iptables_text, loaded, text, Wharf};
use wharf_node::network::names::InstanceNames;

/// A container serving `body` over HTTP on port 80 with busybox httpd.
fn serve(w: &Wharf, name: &str, extra: &[&str], body: &str) {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    w.docker_ok(&args);
}

/// A long-running container to probe from.
fn prober(w: &Wharf, name: &str, extra: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sleep", "600"]);
    w.docker_ok(&args);
}

/// What `GET /` on `addr` (`ip` or `ip:port`, port 80 by default) returns when sent from
/// inside container `from` with busybox `nc`; empty when nothing answered in 3 s.
fn fetch(w: &Wharf, from: &str, addr: &str) -> String {
    let (ip, port) = addr.split_once(':').unwrap_or((addr, "80"));
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}");
    text(&w.docker(&["exec", from, "sh", "-c", &script]).stdout)
}

/// True if `ip` answers one ping from inside container `from`.
fn pings(w: &Wharf, from: &str, ip: &str) -> bool {
    w.docker(&["exec", from, "ping", "-c", "1", "-W", "2", ip])
        .status
        .success()
}

fn ip_on(w: &Wharf, container: &str, network: &str) -> String {
    let ip = inspect(
        w,
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        container,
    );
    assert!(ip.starts_with("10."), "{container} on {network}: {ip:?}");
    ip
}

fn gateway_of(w: &Wharf, network: &str) -> String {
    w.docker_ok(&[
        "network",
        "inspect",
        network,
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ])
    .trim()
    .to_string()
}

/// `GET /` on `addr` from the host; the body if the server answered.
fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.contains("200 OK").then_some(out)
}

#[test]
fn user_networks_are_isolated_both_ways_and_a_container_on_both_reaches_each() {
    let mut w = loaded();
    w.docker_ok(&["network", "create", "neta"]);
    w.docker_ok(&["network", "create", "netb"]);
    serve(&w, "srva", &["--network", "neta"], "from-a");
    serve(&w, "srvb", &["--network", "netb"], "from-b");
    prober(&w, "pa", &["--network", "neta"]);
    prober(&w, "pb", &["--network", "netb"]);
    let (ipa, ipb) = (ip_on(&w, "srva", "neta"), ip_on(&w, "srvb", "netb"));

    let isolated = |w: &Wharf| {
        // Within a network: TCP and ICMP get through (the probes themselves work).
        assert!(
            fetch(w, "pa", &ipa).contains("from-a"),
            "{}",
            iptables_text(w)
        );
        assert!(fetch(w, "pb", &ipb).contains("from-b"));
        assert!(pings(w, "pa", &ipa) && pings(w, "pb", &ipb));
        // Across: nothing, either way.
        assert_eq!(fetch(w, "pb", &ipa), "", "netb reached neta by TCP");
        assert_eq!(fetch(w, "pa", &ipb), "", "neta reached netb by TCP");
        assert!(!pings(w, "pb", &ipa), "netb pinged neta");
        assert!(!pings(w, "pa", &ipb), "neta pinged netb");
    };
    isolated(&w);

    // A container on both networks (docker run --network twice) reaches each.
    prober(&w, "pab", &["--network", "neta", "--network", "netb"]);
    ip_on(&w, "pab", "neta");
    ip_on(&w, "pab", "netb");
    assert!(fetch(&w, "pab", &ipa).contains("from-a"));
    assert!(fetch(&w, "pab", &ipb).contains("from-b"));
    assert!(pings(&w, "pab", &ipa) && pings(&w, "pab", &ipb));
    // ... and so does one connected later; the others stay apart.
    w.docker_ok(&["network", "connect", "netb", "pa"]);
    assert!(fetch(&w, "pa", &ipb).contains("from-b"));
    w.docker_ok(&["network", "disconnect", "netb", "pa"]);
    isolated(&w);

    // An agent restart re-derives the rules from the state: wharf is killed, its
    // forward chains are emptied behind its back, and the restarted wharf repairs them.
    let pb_pid = inspect(&w, "{{.State.Pid}}", "pb");
    if let Some(c) = w.child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let names = InstanceNames::for_data_dir(&w.data_dir());
    for chain in [&names.fwd_chain, &names.iso_chain] {
        let out = Command::new("iptables")
            .args(["-w", "-F", chain])
            .output()
            .expect("iptables");
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // The damage is real: the instance's isolation rules are gone. (Whether pb then
    // reaches srva depends on what else is in FORWARD: other instances of the tests
    // running in parallel, the host's policy; so the rules are checked, not the traffic.)
    let iso_rules = || {
        let out = Command::new("iptables")
            .args(["-w", "-S", &names.iso_chain])
            .output()
            .expect("iptables");
        text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("-A "))
            .count()
    };
    assert_eq!(iso_rules(), 0, "the isolation chain was flushed");
    let connect = format!("exec 3<>/dev/tcp/{ipa}/80");
    let reaches = || {
        Command::new("nsenter")
            .args(["-t", &pb_pid, "-n", "timeout", "3", "bash", "-c", &connect])
            .status()
            .is_ok_and(|s| s.success())
    };
    w.spawn();
    assert!(
        eventually(20, || iso_rules() > 0 && !reaches()),
        "{}",
        iptables_text(&w)
    );
    isolated(&w);

    // wharf down removes every rule of the instance.
    let out = w.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(iptables_text(&w), "");
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn the_default_bridge_and_a_user_network_are_isolated_but_published_ports_serve_all() {
    let w = loaded();
    w.docker_ok(&["network", "create", "user"]);
    let port = free_port();
    serve(&w, "srvd", &["-p", &format!("{port}:80")], "from-default");
    serve(&w, "srvu", &["--network", "user"], "from-user");
    prober(&w, "pd", &[]);
    prober(&w, "pu", &["--network", "user"]);
    let ipd = ip_on(&w, "srvd", "bridge");
    let ipu = ip_on(&w, "srvu", "user");

    assert!(fetch(&w, "pd", &ipd).contains("from-default"));
    assert!(fetch(&w, "pu", &ipu).contains("from-user"));
    assert_eq!(
        fetch(&w, "pu", &ipd),
        "",
        "user network reached the default bridge"
    );
    assert_eq!(
        fetch(&w, "pd", &ipu),
        "",
        "default bridge reached the user network"
    );
    assert!(!pings(&w, "pu", &ipd));
    assert!(!pings(&w, "pd", &ipu));

    // A published port stays reachable: from the host, and from the other network
    // through a host address (its gateway), though not at the container's own address.
    assert!(eventually(20, || http_get(&format!("127.0.0.1:{port}"))
        .is_some_and(|b| b.contains("from-default"))));
    let gw = gateway_of(&w, "user");
    assert!(
        fetch(&w, "pu", &format!("{gw}:{port}")).contains("from-default"),
        "{}",
        iptables_text(&w)
    );
    assert_eq!(fetch(&w, "pu", &format!("{ipd}:80")), "");
}

#[test]
fn an_internal_network_has_no_way_out_and_publishes_nothing() {
    let w = loaded();
    w.docker_ok(&["network", "create", "--internal", "inner"]);
    w.docker_ok(&["network", "create", "outer"]);
    assert_eq!(
        w.docker_ok(&["network", "inspect", "inner", "--format", "{{.Internal}}"])
            .trim(),
        "true"
    );
    let port = free_port();
    // As Docker: -p is accepted on an internal network and publishes nothing.
    serve(
        &w,
        "srvi",
        &["--network", "inner", "-p", &format!("{port}:80")],
        "from-inner",
    );
    serve(&w, "srvo", &["--network", "outer"], "from-outer");
    let ipi = ip_on(&w, "srvi", "inner");
    let ipo = ip_on(&w, "srvo", "outer");
    assert_eq!(w.docker_ok(&["port", "srvi"]).trim(), "");
    assert!(http_get(&format!("127.0.0.1:{port}")).is_none());
    assert!(!iptables_text(&w).contains(&format!("--dport {port}")));

    // Among its containers, by address and by name, traffic works.
    let gwi = gateway_of(&w, "inner");
    prober(&w, "pi", &["--network", "inner", "--cap-add", "NET_ADMIN"]);
    prober(&w, "po", &["--network", "outer", "--cap-add", "NET_ADMIN"]);
    assert!(fetch(&w, "pi", &ipi).contains("from-inner"));
    assert!(fetch(&w, "pi", "srvi").contains("from-inner"));
    assert!(pings(&w, "pi", &ipi));

    // No default route; and even with one added by hand, nothing is forwarded out of
    // the network: not to another network, not beyond the host.
    let routes = w.docker_ok(&["exec", "pi", "ip", "route"]);
    assert!(!routes.contains("default"), "{routes}");
    w.docker_ok(&["exec", "pi", "ip", "route", "add", "default", "via", &gwi]);
    assert_eq!(
        fetch(&w, "pi", &ipo),
        "",
        "internal reached another network"
    );
    assert!(!pings(&w, "pi", &ipo));
    assert_eq!(
        fetch(&w, "po", &ipi),
        "",
        "another network reached internal"
    );
    // The control: from an ordinary network, the same way out works.
    assert!(w
        .docker_ok(&["exec", "po", "ip", "route"])
        .contains("default"));
    let outside = Outside::new();
    assert!(pings(&w, "po", &outside.ns_ip), "ordinary network goes out");
    assert!(
        !pings(&w, "pi", &outside.ns_ip),
        "internal network went out"
    );
    // No NAT for the internal subnet (there is for the ordinary one).
    let rules = iptables_text(&w);
    let nat_out = |net: &str| format!("-s {} ! -o", subnet_of(&w, net));
    assert!(!rules.contains(&nat_out("inner")), "{rules}");
    assert!(rules.contains(&nat_out("outer")), "{rules}");
}

fn subnet_of(w: &Wharf, network: &str) -> String {
    w.docker_ok(&[
        "network",
        "inspect",
        network,
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ])
    .trim()
    .to_string()
}

#[test]
fn enable_icc_false_stops_traffic_within_the_network() {
    let w = loaded();
    w.docker_ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.bridge.enable_icc=false",
        "quiet",
    ]);
    w.docker_ok(&["network", "create", "chatty"]);
    assert!(w
        .docker_ok(&[
            "network",
            "inspect",
            "quiet",
            "--format",
            "{{json .Options}}"
        ])
        .contains("\"com.docker.network.bridge.enable_icc\":\"false\""));
    let port = free_port();
    serve(
        &w,
        "srvq",
        &["--network", "quiet", "-p", &format!("{port}:80")],
        "from-quiet",
    );
    serve(&w, "srvc", &["--network", "chatty"], "from-chatty");
    prober(&w, "pq", &["--network", "quiet"]);
    prober(&w, "pc", &["--network", "chatty"]);
    let ipq = ip_on(&w, "srvq", "quiet");
    let ipc = ip_on(&w, "srvc", "chatty");
    // The control: with icc on (the default), the same probe gets through.
    assert!(fetch(&w, "pc", &ipc).contains("from-chatty"));
    assert!(pings(&w, "pc", &ipc));
    assert_eq!(
        fetch(&w, "pq", &ipq),
        "",
        "icc=false let a container reach another"
    );
    assert!(!pings(&w, "pq", &ipq));
    assert!(
        !w.docker_ok(&["exec", "pq", "nslookup", "srvq"]).is_empty(),
        "names still resolve"
    );
    // Published ports and the gateway still work.
    assert!(eventually(20, || http_get(&format!("127.0.0.1:{port}"))
        .is_some_and(|b| b.contains("from-quiet"))));
    assert!(pings(&w, "pq", &gateway_of(&w, "quiet")));
}

#[test]
fn options_without_effect_are_refused_with_a_clear_message() {
    let w = loaded();
    for (args, want) in [
        (
            vec!["-o", "com.docker.network.driver.mtu=1400"],
            "\"com.docker.network.driver.mtu\" is not supported by wharf",
        ),
        (vec!["--ipv6"], "IPv6 (--ipv6) is not supported by wharf"),
        (
            vec!["--attachable"],
            "(--attachable) is not supported by wharf",
        ),
        (
            vec!["--subnet", "10.250.7.0/24", "--ip-range", "10.250.7.0/25"],
            "(--ip-range) is not supported by wharf",
        ),
        (
            vec!["-o", "com.docker.network.bridge.enable_icc=maybe"],
            "invalid value \"maybe\"",
        ),
    ] {
        let mut full = vec!["network", "create"];
        full.extend(args.iter().copied());
        full.push("refused");
        let out = w.docker(&full);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let ls = w.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!ls.contains("refused"), "{ls}");

    w.docker_ok(&["network", "create", "plain"]);
    w.docker_ok(&["run", "-d", "--name", "target", "busybox", "sleep", "600"]);
    for (args, want) in [
        (
            vec!["--network", "plain", "--ip", "10.250.8.9"],
            "(--ip, --ip6) is not supported",
        ),
        (
            vec!["--mac-address", "02:42:0a:00:00:09"],
            "(--mac-address) is not supported",
        ),
        (vec!["--link", "target:db"], "(--link)"),
        (
            vec!["--domainname", "example.org"],
            "(--domainname) is not supported",
        ),
        (
            vec!["--network-alias", "x"],
            "network-scoped aliases are only supported for user-defined networks",
        ),
        (
            vec!["--network", "container:target", "-p", "80"],
            "conflicting options: port publishing and the container type network mode",
        ),
    ] {
        let mut full = vec!["create"];
        full.extend(args.iter().copied());
        full.extend(["busybox", "true"]);
        let out = w.docker(&full);
        assert!(!out.status.success(), "{args:?} accepted");
        assert!(
            text(&out.stderr).contains(want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let all = w.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.trim(), "target", "a refused create left a container");
    let out = w.docker(&[
        "network",
        "connect",
        "--ip",
        "10.250.8.9",
        "plain",
        "target",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("(--ip, --ip6) is not supported"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        inspect(&w, "{{len .NetworkSettings.Networks}}", "target"),
        "1",
        "a refused connect connected"
    );
}

/// A network namespace beyond the host, joined by a veth with a /30 of its own; deleted
/// on drop even when the test fails.
struct Outside {
    ns: String,
    host_veth: String,
    ns_ip: String,
}

impl Outside {
    fn new() -> Outside {
        let mut b = [0u8; 2];
        if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
            let _ = f.read_exact(&mut b);
        }
        let n = u16::from_le_bytes(b) % 60000;
        let (hi, lo) = ((n >> 8) as u8, (n & 0xfc) as u8);
        let me = Outside {
            ns: format!("wt-iso-{n}"),
            host_veth: format!("wti{n}h"),
            ns_ip: format!("10.254.{hi}.{}", lo + 2),
        };
        let peer = format!("wti{n}p");
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        };
        run(&["netns", "add", &me.ns]);
        run(&[
            "link",
            "add",
            &me.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ]);
        run(&["link", "set", &peer, "netns", &me.ns]);
        run(&[
            "addr",
            "add",
            &format!("10.254.{hi}.{}/30", lo + 1),
            "dev",
            &me.host_veth,
        ]);
        run(&["link", "set", &me.host_veth, "up"]);
        run(&[
            "-n",
            &me.ns,
            "addr",
            "add",
            &format!("{}/30", me.ns_ip),
            "dev",
            &peer,
        ]);
        run(&["-n", &me.ns, "link", "set", &peer, "up"]);
        me
    }
}

impl Drop for Outside {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
