//! Container networking through the stock `docker` CLI: the default bridge, published
//! ports (from the host, from another network namespace, from 127.0.0.1), `docker port`,
//! user networks with name resolution, network modes, bad input, and that nothing is
//! left behind (bridge, veths, iptables chains) after `wharf down` or a crash.
//!
//! Each `wharf up` derives its own bridge, subnet and chain names from its data dir, so
//! these tests run in parallel with each other and with other instances on the machine.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;
use support::{eventually, free_port, inspect, iptables_text, loaded, text, Wharf};
use wharf_node::network::names::InstanceNames;

/// `GET /` on `addr`, the body if the server answered.
fn http_get(addr: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.contains("200 OK").then_some(out)
}

/// A container serving `body` on port 80 with busybox httpd.
fn serve(w: &Wharf, name: &str, extra: &[&str], body: &str) {
    let script =
        format!("mkdir -p /www && echo {body} > /www/index.html && exec httpd -f -p 80 -h /www");
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "sh", "-c", &script]);
    w.docker_ok(&args);
}

fn names(w: &Wharf) -> InstanceNames {
    InstanceNames::for_data_dir(&w.data_dir())
}

/// Interfaces of this instance: its bridges (`wh-<tag>`, `br-…` of its networks) and veths.
fn links() -> String {
    text(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip link")
            .stdout,
    )
}

/// A network namespace joined to the host by a veth, with addresses of its own; deleted
/// on drop even when the test fails.
struct OtherNetns {
    ns: String,
    host_veth: String,
    host_ip: String,
}

impl OtherNetns {
    fn new() -> OtherNetns {
        let n: u32 = rand_u32() % 60000;
        let (a, b) = ((n >> 8) as u8, (n & 0xfc) as u8);
        let ns = format!("wt-net-{n}");
        let host_veth = format!("wtn{n}h");
        let peer = format!("wtn{n}p");
        let host_ip = format!("10.253.{a}.{}", b + 1);
        let ns_ip = format!("10.253.{a}.{}", b + 2);
        let me = OtherNetns {
            ns: ns.clone(),
            host_veth: host_veth.clone(),
            host_ip: host_ip.clone(),
        };
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
        };
        run(&["netns", "add", &ns]);
        run(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["link", "set", &peer, "netns", &ns]);
        run(&["addr", "add", &format!("{host_ip}/30"), "dev", &host_veth]);
        run(&["link", "set", &host_veth, "up"]);
        run(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &peer,
        ]);
        run(&["-n", &ns, "link", "set", &peer, "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        me
    }

    /// `wget -qO-` of `url` from inside the namespace.
    fn wget(&self, url: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.ns, "wget", "-q", "-T", "3", "-O-", url,
            ])
            .output()
            .expect("wget");
        text(&out.stdout)
    }
}

impl Drop for OtherNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u32::from_le_bytes(b)
}

#[test]
fn published_port_serves_http_to_the_host_another_netns_and_loopback() {
    let w = loaded();
    let port = free_port();
    serve(&w, "web", &["-p", &format!("{port}:80")], "hello-wharf");
    let ip = inspect(&w, "{{.NetworkSettings.IPAddress}}", "web");
    let gw = inspect(&w, "{{.NetworkSettings.Gateway}}", "web");
    assert!(ip.starts_with("10."), "container address {ip:?}");
    assert_eq!(
        inspect(
            &w,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            "web"
        ),
        ip
    );
    assert!(
        eventually(20, || http_get(&format!("127.0.0.1:{port}"))
            .is_some_and(|b| b.contains("hello-wharf"))),
        "published port not reachable on 127.0.0.1:{port}\n{}",
        w.log()
    );
    // Straight to the container's address from the host too.
    assert!(http_get(&format!("{ip}:80")).is_some_and(|b| b.contains("hello-wharf")));

    let other = OtherNetns::new();
    let body = other.wget(&format!("http://{}:{port}/", other.host_ip));
    assert!(
        body.contains("hello-wharf"),
        "from another netns: {body:?}\n{}",
        iptables_text(&w)
    );

    assert_eq!(
        w.docker_ok(&["port", "web"]).trim(),
        format!("80/tcp -> 0.0.0.0:{port}")
    );
    let ps = w.docker_ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(ps.contains(&format!("0.0.0.0:{port}->80/tcp")), "{ps}");
    let by_port = |f: &str| w.docker_ok(&["ps", "--filter", f, "--format", "{{.Names}}"]);
    assert_eq!(by_port("publish=80").trim(), "web");
    assert_eq!(by_port("publish=70-90/tcp").trim(), "web");
    assert_eq!(by_port("publish=80/udp").trim(), "");
    assert_eq!(by_port("expose=80").trim(), "web");
    // Outbound: the container reaches the host through its gateway.
    let out = w.docker_ok(&["exec", "web", "sh", "-c", "ip route; ping -c 1 -W 2 $(ip route | awk '/default/ {print $3}') >/dev/null && echo gw-ok"]);
    assert!(out.contains(&format!("default via {gw}")), "{out}");
    assert!(out.contains("gw-ok"), "{out}");

    // Stopping frees the port: its rule goes, and the port can be bound again.
    w.docker_ok(&["stop", "-t", "1", "web"]);
    assert!(
        !iptables_text(&w).contains(&format!("--dport {port}")),
        "{}",
        iptables_text(&w)
    );
    assert!(http_get(&format!("127.0.0.1:{port}")).is_none());
    assert!(
        std::net::TcpListener::bind(("0.0.0.0", port)).is_ok(),
        "port still held"
    );
    assert_eq!(inspect(&w, "{{.NetworkSettings.IPAddress}}", "web"), "");
}

#[test]
fn ephemeral_ports_publish_all_and_restart_keep_working() {
    let w = loaded();
    serve(&w, "eph", &["-p", "80", "--expose", "9999", "-P"], "eph");
    let ports = w.docker_ok(&["port", "eph"]);
    assert!(ports.contains("80/tcp -> 0.0.0.0:"), "{ports}");
    assert!(ports.contains("9999/tcp -> 0.0.0.0:"), "{ports}");
    let host_port: u16 = w
        .docker_ok(&["port", "eph", "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((32768..=60999).contains(&host_port), "{host_port}");
    assert!(eventually(20, || http_get(&format!(
        "127.0.0.1:{host_port}"
    ))
    .is_some()));
    // The container restarts with a new start of its network; the port is published again.
    w.docker_ok(&["restart", "-t", "1", "eph"]);
    let again: u16 = w
        .docker_ok(&["port", "eph", "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(eventually(20, || http_get(&format!("127.0.0.1:{again}")).is_some()));
}

#[test]
fn a_taken_host_port_is_refused_and_nothing_stays_configured() {
    let w = loaded();
    let port = free_port();
    serve(&w, "first", &["-p", &format!("{port}:80")], "first");
    let out = w.docker(&[
        "run",
        "-d",
        "--name",
        "second",
        "-p",
        &format!("{port}:80"),
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("port is already allocated"),
        "{}",
        text(&out.stderr)
    );
    assert_ne!(inspect(&w, "{{.State.Status}}", "second"), "running");
    assert_eq!(inspect(&w, "{{.NetworkSettings.IPAddress}}", "second"), "");

    // A port another program listens on is refused too.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let p2 = taken.local_addr().unwrap().port();
    let out = w.docker(&[
        "run",
        "-d",
        "--name",
        "third",
        "-p",
        &format!("{p2}:80"),
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("{p2}")),
        "{}",
        text(&out.stderr)
    );
    assert!(!iptables_text(&w).contains(&format!("--dport {p2}")));

    // Invalid specs: refused by the CLI or by Wharf, with Docker's words.
    let out = w.docker(&["create", "-p", "80/sctp", "busybox", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid proto: sctp"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["create", "-p", "99999:80", "busybox", "true"]);
    assert!(!out.status.success());
}

#[test]
fn user_network_containers_resolve_each_other_by_name_and_alias() {
    let w = loaded();
    let id = w
        .docker_ok(&["network", "create", "front"])
        .trim()
        .to_string();
    assert_eq!(id.len(), 64);
    let ls = w.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for want in ["bridge bridge", "front bridge", "host host", "none null"] {
        assert!(ls.contains(want), "{ls}");
    }
    serve(
        &w,
        "api",
        &["--network", "front", "--network-alias", "backend"],
        "from-api",
    );
    let api_ip = inspect(&w, "{{.NetworkSettings.Networks.front.IPAddress}}", "api");
    assert!(!api_ip.is_empty());
    for name in ["api", "backend"] {
        let out = w.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "front",
            "busybox",
            "nslookup",
            name,
        ]);
        assert!(out.contains(&api_ip), "nslookup {name}: {out}");
    }
    // Reach it by name and alias over TCP (busybox `nc`; Debian's busybox-static `wget`
    // crashes in glibc's static NSS even on an IP literal).
    for name in ["api", "backend"] {
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {name} 80");
        let out = w.docker_ok(&[
            "run",
            "--rm",
            "--network",
            "front",
            "busybox",
            "sh",
            "-c",
            &script,
        ]);
        assert!(out.contains("from-api"), "nc {name}: {out}");
    }
    let inspected = w.docker_ok(&[
        "network",
        "inspect",
        "front",
        "--format",
        "{{range .Containers}}{{.Name}} {{end}}",
    ]);
    assert!(inspected.contains("api"), "{inspected}");

    // In use: 409; overlapping subnets refused; rm after the container is gone.
    let out = w.docker(&["network", "rm", "front"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("has active endpoints"),
        "{}",
        text(&out.stderr)
    );
    w.docker_ok(&["rm", "-f", "api"]);
    w.docker_ok(&["network", "rm", "front"]);
    let base = 100 + (rand_u32() % 100) as u8;
    w.docker_ok(&[
        "network",
        "create",
        "--subnet",
        &format!("10.251.{base}.0/24"),
        "n1",
    ]);
    let out = w.docker(&[
        "network",
        "create",
        "--subnet",
        &format!("10.251.{base}.128/25"),
        "n2",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("overlaps"),
        "{}",
        text(&out.stderr)
    );
    let pruned = w.docker_ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("n1"), "{pruned}");
}

#[test]
fn network_modes_none_host_and_container() {
    let w = loaded();
    let out = w.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(out.contains("lo:") && !out.contains("eth0"), "{out}");
    let bridge = names(&w).default_bridge(&w.data_dir());
    let out = w.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        "busybox",
        "ip",
        "-o",
        "link",
    ]);
    assert!(
        out.contains(&bridge),
        "host mode sees the host's links: {out}"
    );
    w.docker_ok(&["run", "-d", "--name", "base", "busybox", "sleep", "600"]);
    let ip = inspect(&w, "{{.NetworkSettings.IPAddress}}", "base");
    let out = w.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "container:base",
        "busybox",
        "ip",
        "-o",
        "addr",
    ]);
    assert!(out.contains(&ip), "{ip} in {out}");
    // The PID and namespace inspect shows are the host's, from the container's agent,
    // and a container joining `base` is in that namespace.
    let pid = inspect(&w, "{{.State.Pid}}", "base");
    let key = inspect(&w, "{{.NetworkSettings.SandboxKey}}", "base");
    assert_eq!(key, format!("/proc/{pid}/ns/net"));
    let base_ns = std::fs::read_link(&key).expect("base's network namespace");
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "side",
        "--network",
        "container:base",
        "busybox",
        "sleep",
        "600",
    ]);
    let side_pid = inspect(&w, "{{.State.Pid}}", "side");
    assert_eq!(
        std::fs::read_link(format!("/proc/{side_pid}/ns/net")).unwrap(),
        base_ns
    );
    w.docker_ok(&["rm", "-f", "side"]);
    w.docker_ok(&["stop", "-t", "1", "base"]);
    assert_eq!(inspect(&w, "{{.State.Pid}}", "base"), "0");
    assert_eq!(inspect(&w, "{{.NetworkSettings.SandboxKey}}", "base"), "");
    let out = w.docker(&[
        "run",
        "--rm",
        "--network",
        "container:base",
        "busybox",
        "true",
    ]);
    assert!(
        text(&out.stderr).contains("cannot join network namespace of a non running container"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(inspect(&w, "{{.HostConfig.NetworkMode}}", "base"), "bridge");
    let out = w.docker(&["run", "--rm", "--network", "nope", "busybox", "true"]);
    assert!(
        text(&out.stderr).contains("network nope not found"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn live_restore_keeps_ports_and_a_crash_leaks_nothing() {
    let mut w = loaded();
    let port = free_port();
    serve(&w, "keep", &["-p", &format!("{port}:80")], "kept");
    w.docker_ok(&[
        "run", "-d", "--name", "victim", "-p", "80", "busybox", "sleep", "600",
    ]);
    let victim_port = w
        .docker_ok(&["port", "victim", "80"])
        .trim()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    assert!(eventually(20, || http_get(&format!("127.0.0.1:{port}")).is_some()));
    let victim_pid = inspect(&w, "{{.State.Pid}}", "victim");

    // SIGKILL wharf; the victim dies while nobody watches.
    if let Some(c) = w.child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = Command::new("kill").args(["-9", &victim_pid]).output();
    assert!(
        http_get(&format!("127.0.0.1:{port}")).is_some(),
        "port works while wharf is down"
    );
    w.spawn();
    assert!(eventually(20, || http_get(&format!("127.0.0.1:{port}")).is_some()));
    assert!(eventually(20, || inspect(
        &w,
        "{{.State.Status}}",
        "victim"
    ) == "exited"));
    assert!(
        eventually(10, || !iptables_text(&w)
            .contains(&format!("--dport {victim_port}"))),
        "{}",
        iptables_text(&w)
    );
    assert_eq!(inspect(&w, "{{.NetworkSettings.IPAddress}}", "victim"), "");

    // wharf down: no bridge, veth or chain of this instance is left.
    let bridge = names(&w).default_bridge(&w.data_dir());
    let net_id = w.docker_ok(&["network", "inspect", "-f", "{{.Id}}", "bridge"]);
    let keep_id = inspect(&w, "{{.Id}}", "keep");
    let veth = wharf_protocol::network::host_veth(&keep_id, net_id.trim());
    assert!(
        links().contains(&format!(" {veth}@")),
        "{veth}: {}",
        links()
    );
    let out = w.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!links().contains(&format!(" {bridge}:")), "{}", links());
    assert!(!links().contains(&veth), "{}", links());
    assert_eq!(iptables_text(&w), "");
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn explicit_bridge_name_and_subnet() {
    let n = rand_u32();
    let bridge = format!("wt{:08x}", n);
    let subnet = format!("10.252.{}.0/24", n % 250);
    let w = Wharf::start_with(&["--bridge-name", &bridge, "--bridge-subnet", &subnet]);
    let tar = support::busybox_tar();
    w.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    let out = w.docker_ok(&[
        "run", "--rm", "busybox", "ip", "-o", "-4", "addr", "show", "eth0",
    ]);
    assert!(out.contains(&format!("10.252.{}.2/24", n % 250)), "{out}");
    assert!(links().contains(&format!(" {bridge}:")));
    let out = w.docker_ok(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Subnet}}{{end}}",
    ]);
    assert_eq!(out.trim(), subnet);
}

#[test]
fn connect_and_disconnect_a_running_container() {
    let w = loaded();
    w.docker_ok(&["network", "create", "side"]);
    w.docker_ok(&["run", "-d", "--name", "multi", "busybox", "sleep", "600"]);
    w.docker_ok(&["network", "connect", "--alias", "m2", "side", "multi"]);
    let side_ip = inspect(&w, "{{.NetworkSettings.Networks.side.IPAddress}}", "multi");
    assert!(!side_ip.is_empty());
    let addrs = w.docker_ok(&["exec", "multi", "ip", "-o", "-4", "addr"]);
    assert!(
        addrs.contains(&format!("eth1    inet {side_ip}/")),
        "{addrs}"
    );
    let out = w.docker_ok(&[
        "run",
        "--rm",
        "--network",
        "side",
        "busybox",
        "nslookup",
        "m2",
    ]);
    assert!(out.contains(&side_ip), "{out}");
    w.docker_ok(&["network", "disconnect", "side", "multi"]);
    let addrs = w.docker_ok(&["exec", "multi", "ip", "-o", "-4", "addr"]);
    assert!(!addrs.contains("eth1"), "{addrs}");
    assert_eq!(
        inspect(&w, "{{len .NetworkSettings.Networks}}", "multi"),
        "1"
    );
    w.docker_ok(&["network", "rm", "side"]);
}
