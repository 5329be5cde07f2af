//! Bursts of mixed operations from many stock `docker` clients at once against one
//! `wharf up`: runs on the default bridge and on a user network, with and without
//! published ports, execs into running containers, volume create/remove, `rm -f` of
//! running containers, network connect/disconnect. No operation may fail for a reason the
//! client did not cause, every container that ran must have printed its output, and
//! afterwards no address, host port, mount, cgroup, shim or iptables rule may be left.
//!
//! The counts are printed; a run that did fewer operations than it states fails.

mod support;

use std::collections::BTreeSet;
use std::sync::{Barrier, Mutex};
use support::{loaded, port_listeners, text, Wharf};

/// Clients at once, rounds each.
const CLIENTS: usize = 16;
const ROUNDS: usize = 3;

/// What the clients did and what went wrong.
#[derive(Default)]
struct Tally {
    done: usize,
    failures: Vec<String>,
    /// Host ports handed out to published ports, one per running container (a port
    /// freed by `rm -f` may be handed out again later).
    ports: Vec<u16>,
}

/// Run `docker ARGS`, count it, and record a failure (or, with `want`, output that does
/// not contain it).
fn op(w: &Wharf, tally: &Mutex<Tally>, args: &[&str], want: Option<&str>) -> String {
    let out = w.docker_cmd().args(args).output().expect("run docker");
    let stdout = text(&out.stdout);
    let mut t = tally.lock().unwrap();
    t.done += 1;
    let bad_output = want.is_some_and(|w| !stdout.contains(w));
    if !out.status.success() || bad_output {
        t.failures.push(format!(
            "docker {}: exit {:?}, stdout {:?}, stderr {:?}",
            args.join(" "),
            out.status.code(),
            stdout.trim(),
            text(&out.stderr).trim()
        ));
    }
    stdout
}

/// One client's rounds; `i` names what it makes.
fn client(w: &Wharf, tally: &Mutex<Tally>, start: &Barrier, i: usize) {
    for r in 0..ROUNDS {
        // Every client's round starts at once: a burst, as a parallel test suite makes.
        start.wait();
        let tag = format!("{i}-{r}");
        let said = format!("ran-{tag}");
        // Short-lived runs, on the default bridge and on the user network with an
        // ephemeral published port.
        op(
            w,
            tally,
            &["run", "--rm", "busybox", "echo", &said],
            Some(&said),
        );
        op(
            w,
            tally,
            &[
                "run",
                "--rm",
                "--network",
                "stressnet",
                "-p",
                "80",
                "busybox",
                "echo",
                &said,
            ],
            Some(&said),
        );
        // An exec into one of the long-running containers.
        let target = format!("target{}", i % 4);
        let exec_said = format!("exec-{tag}");
        op(
            w,
            tally,
            &["exec", &target, "echo", &exec_said],
            Some(&exec_said),
        );
        // A volume made and removed.
        let vol = format!("stressvol-{tag}");
        op(w, tally, &["volume", "create", &vol], Some(&vol));
        op(w, tally, &["volume", "rm", &vol], Some(&vol));
        // A running container with a published port, connected to and disconnected from
        // the user network, then removed by force while it runs.
        let name = format!("k-{tag}");
        op(
            w,
            tally,
            &[
                "run", "-d", "--name", &name, "-p", "80", "busybox", "sleep", "600",
            ],
            None,
        );
        let port = op(w, tally, &["port", &name, "80/tcp"], Some(":"));
        if let Some(p) = port
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            tally.lock().unwrap().ports.push(p);
        }
        op(w, tally, &["network", "connect", "stressnet", &name], None);
        op(
            w,
            tally,
            &["network", "disconnect", "stressnet", &name],
            None,
        );
        op(w, tally, &["rm", "-f", &name], Some(&name));
    }
}

/// Operations one client does per round (as in [`client`]).
const OPS_PER_ROUND: usize = 10;

#[test]
fn concurrent_mixed_operations_all_succeed_and_leave_nothing_behind() {
    let w = loaded();
    w.docker_ok(&["network", "create", "stressnet"]);
    for t in 0..4 {
        let name = format!("target{t}");
        let net = if t % 2 == 0 { "bridge" } else { "stressnet" };
        w.docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            net,
            "busybox",
            "sleep",
            "600",
        ]);
    }
    let tally = Mutex::new(Tally::default());
    let start = Barrier::new(CLIENTS);
    std::thread::scope(|s| {
        for i in 0..CLIENTS {
            let (w, tally, start) = (&w, &tally, &start);
            s.spawn(move || client(w, tally, start, i));
        }
    });
    let t = tally.into_inner().unwrap();
    let stated = CLIENTS * ROUNDS * OPS_PER_ROUND;
    eprintln!(
        "stress: {} clients x {} rounds: {} operations done of {stated}, {} failed, {} host ports handed out",
        CLIENTS,
        ROUNDS,
        t.done,
        t.failures.len(),
        t.ports.len()
    );
    assert!(
        t.failures.is_empty(),
        "{} operations failed:\n{}\n--- wharf log ---\n{}",
        t.failures.len(),
        t.failures.join("\n"),
        w.log()
    );
    assert_eq!(t.done, stated, "fewer operations than stated");
    assert_eq!(
        t.ports.len(),
        CLIENTS * ROUNDS,
        "every running container shows its host port"
    );

    for t in 0..4 {
        w.docker_ok(&["rm", "-f", &format!("target{t}")]);
    }
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "");
    assert_eq!(w.docker_ok(&["volume", "ls", "-q"]).trim(), "");
    for net in ["bridge", "stressnet"] {
        assert_eq!(
            w.docker_ok(&["network", "inspect", "-f", "{{len .Containers}}", net])
                .trim(),
            "0",
            "addresses left on {net}"
        );
    }
    // Every host port handed out is free again: none is held by this instance. (The
    // ports are ephemeral ones, which another process of the machine, such as a test
    // running beside this one, may take once they are free.)
    for p in &t.ports {
        if std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok() {
            continue;
        }
        let holders = port_listeners(*p);
        assert!(
            !holders.iter().any(|pid| w.owns_process(*pid)),
            "host port {p} still held by this wharf (holders {holders:?})"
        );
    }
    let data = w.data_dir();
    let needle = data.to_string_lossy().into_owned();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&needle))
        .map(String::from)
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let shims: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("shim --state-dir") && c.contains(&needle))
        .collect();
    assert!(shims.is_empty(), "shims left: {shims:?}");
    let parent = wharf_controller::up::cgroup_parent(&data);
    for e in std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
        let p = e.path().join(&parent);
        let children: Vec<_> = std::fs::read_dir(&p)
            .map(|rd| {
                rd.flatten()
                    .filter(|c| c.path().is_dir())
                    .map(|c| c.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(children.is_empty(), "cgroups left: {children:?}");
    }
    let rules: Vec<String> = support::iptables_text(&w)
        .lines()
        .filter(|l| l.contains("-j DNAT"))
        .map(String::from)
        .collect();
    assert!(rules.is_empty(), "port rules left: {rules:?}");
}

/// `docker ARGS` from `n` clients at once; their outputs.
fn burst(w: &Wharf, n: usize, args: &[&str]) -> Vec<std::process::Output> {
    let start = Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    start.wait();
                    w.docker_cmd().args(args).output().expect("run docker")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn names_asked_for_at_once_are_handed_out_once() {
    let w = loaded();
    // A container name: one create wins, the others get Docker's conflict.
    let outs = burst(&w, 10, &["create", "--name", "same", "busybox", "true"]);
    let won = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(won, 1, "one create of a name succeeds");
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = text(&o.stderr);
        assert!(err.contains("is already in use by container"), "{err}");
    }
    assert_eq!(w.docker_ok(&["ps", "-aq"]).lines().count(), 1);
    // A network name: one create wins.
    let outs = burst(&w, 10, &["network", "create", "samenet"]);
    assert_eq!(outs.iter().filter(|o| o.status.success()).count(), 1);
    for o in outs.iter().filter(|o| !o.status.success()) {
        let err = text(&o.stderr);
        assert!(err.contains("already exists"), "{err}");
    }
    // A volume name: creating an existing volume is not an error (as Docker); one volume.
    let outs = burst(&w, 10, &["volume", "create", "samevol"]);
    assert!(outs.iter().all(|o| o.status.success()));
    assert_eq!(w.docker_ok(&["volume", "ls", "-q"]).trim(), "samevol");
    // Exec IDs: execs started at once into one container each run once, with their
    // own output.
    w.docker_ok(&["run", "-d", "--name", "busy", "busybox", "sleep", "600"]);
    let outs = burst(&w, 10, &["exec", "busy", "sh", "-c", "echo $$"]);
    let pids: BTreeSet<String> = outs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", text(&o.stderr));
            text(&o.stdout).trim().to_string()
        })
        .collect();
    assert_eq!(pids.len(), 10, "each exec is its own process: {pids:?}");
    // Builds at once, each with steps that run containers: each gets its own.
    let builds = 4;
    let ctx: Vec<std::path::PathBuf> = (0..builds)
        .map(|i| {
            let d = w.dir.path().join(format!("ctx{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(
                d.join("Dockerfile"),
                format!("FROM busybox\nRUN echo step-{i} > /f\nRUN cat /f > /g\n"),
            )
            .unwrap();
            d
        })
        .collect();
    let start = Barrier::new(builds);
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let handles: Vec<_> = ctx
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (w, start) = (&w, &start);
                s.spawn(move || {
                    start.wait();
                    let tag = format!("built{i}");
                    w.docker_cmd()
                        .env("DOCKER_BUILDKIT", "0")
                        .args(["build", "-q", "-t", &tag])
                        .arg(d)
                        .output()
                        .expect("run docker")
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, o) in outs.iter().enumerate() {
        assert!(o.status.success(), "build {i}: {}", text(&o.stderr));
        let got = w.docker_ok(&["run", "--rm", &format!("built{i}"), "cat", "/g"]);
        assert_eq!(got.trim(), format!("step-{i}"));
    }
}

/// The check of held ports finds a listener's process (here this test's own).
#[test]
fn a_listening_port_is_traced_to_its_process() {
    let l = std::net::TcpListener::bind(("0.0.0.0", 0)).expect("bind");
    let port = l.local_addr().expect("addr").port();
    assert!(port_listeners(port).contains(&std::process::id()));
    drop(l);
    assert!(!port_listeners(port).contains(&std::process::id()));
}
