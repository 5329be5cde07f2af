//! A multi-host cluster on `deploy/local-cluster` (3 controllers, 3 agents: real `wharf
//! controller` and `wharf node` processes, each host its own network namespace), driven by
//! the stock docker CLI through every controller. One cluster for the whole binary: the
//! scenarios run in order in one test, and the cluster is taken down even when one fails.
//!
//! Times the issue bounds (a node Down, a new leader, a restarted agent Ready) are printed
//! and checked against generous bounds only (30 s); the printed figures are the record.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{busybox_tar, text, wharf_bin};

const BOUND: Duration = Duration::from_secs(30);

struct Cluster {
    dir: PathBuf,
    /// Host name → its address on the cluster's bridge.
    addrs: BTreeMap<String, String>,
    env: Vec<(String, String)>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster")
}

fn local_cluster(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .arg(args[0])
        .arg("--dir")
        .arg(dir)
        .args(&args[1..])
        .env("WHARF_BIN", wharf_bin());
    cmd.output().expect("run deploy/local-cluster")
}

impl Cluster {
    fn up() -> Cluster {
        Cluster::up_with(
            "wct",
            &[
                "node-3:disk=ssd",
                "node-1:rack=r1",
                "node-2:rack=r2",
                "node-3:rack=r3",
            ],
        )
    }

    /// 3 controllers and 3 agents under `/tmp/{name}-PID` (each test its own `name`, so
    /// tests of this binary can run at once), the agents' engine labels `HOST:k=v`.
    fn up_with(name: &str, labels: &[&str]) -> Cluster {
        let dir = PathBuf::from(format!("/tmp/{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let started = Instant::now();
        let mut args = vec!["up", "--controllers", "3", "--agents", "3"];
        for l in labels {
            args.extend(["--label", l]);
        }
        let out = local_cluster(&dir, &args);
        let mut c = Cluster {
            dir: dir.clone(),
            addrs: BTreeMap::new(),
            env: vec![],
        };
        assert!(
            out.status.success(),
            "local-cluster up: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!(
            "cluster up (3 controllers, 3 agents) in {:?}",
            started.elapsed()
        );
        let state = std::fs::read_to_string(dir.join("cluster.state")).unwrap();
        for line in state.lines().filter_map(|l| l.strip_prefix("host=")) {
            let f: Vec<&str> = line.split_whitespace().collect();
            c.addrs.insert(f[0].to_string(), f[2].to_string());
        }
        let env = std::fs::read_to_string(dir.join("client.env")).unwrap();
        for line in env.lines() {
            let (k, v) = line
                .strip_prefix("export ")
                .and_then(|l| l.split_once('='))
                .expect("client.env line");
            c.env
                .push((k.to_string(), v.trim_matches('\'').to_string()));
        }
        assert_eq!(c.env.len(), 3, "client.env: {env}");
        c
    }

    /// `docker ARGS` through controller `via` (a host name).
    fn docker_via(&self, via: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.env("DOCKER_HOST", format!("tcp://{}:2376", self.addrs[via]));
        cmd.args(args).output().expect("run docker")
    }

    /// The output of `docker ARGS` through `via`, or "" when it fails (for polling while
    /// the cluster settles: a transient 503 is then one more round, not a failure).
    fn try_via(&self, via: &str, args: &[&str]) -> String {
        let out = self.docker_via(via, args);
        if out.status.success() {
            text(&out.stdout)
        } else {
            String::new()
        }
    }

    /// `wharf cluster update ARGS` on controller `host`'s local socket.
    fn cluster_update(&self, host: &str, args: &[&str]) -> Output {
        Command::new(wharf_bin())
            .args(["cluster", "update", "--unix-socket"])
            .arg(self.dir.join("hosts").join(host).join("data/docker.sock"))
            .args(args)
            .output()
            .unwrap()
    }

    fn ok_via(&self, via: &str, args: &[&str]) -> String {
        let out = self.docker_via(via, args);
        assert!(
            out.status.success(),
            "docker {args:?} via {via}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    fn fault(&self, args: &[&str]) {
        let out = local_cluster(&self.dir, args);
        assert!(
            out.status.success(),
            "local-cluster {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    /// `HOSTNAME STATUS MANAGER-STATUS` of every node, through `via`.
    fn nodes_via(&self, via: &str) -> BTreeMap<String, (String, String)> {
        let out = self.docker_via(
            via,
            &[
                "node",
                "ls",
                "--format",
                "{{.Hostname}} {{.Status}} {{.ManagerStatus}}",
            ],
        );
        text(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((
                    f.next()?.to_string(),
                    (f.next()?.to_string(), f.next().unwrap_or("").to_string()),
                ))
            })
            .collect()
    }

    fn leader_via(&self, via: &str) -> Option<String> {
        self.nodes_via(via)
            .into_iter()
            .find(|(_, (_, m))| m == "Leader")
            .map(|(h, _)| h)
    }

    /// Wait until `f` holds; how long it took, or a panic naming `what` after `BOUND`.
    fn until(&self, what: &str, mut f: impl FnMut() -> bool) -> Duration {
        let started = Instant::now();
        while started.elapsed() < BOUND {
            if f() {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{what}: not within {BOUND:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for host in self.addrs.keys() {
                let log =
                    std::fs::read_to_string(self.dir.join("hosts").join(host).join("wharf.log"))
                        .unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                eprintln!("--- last lines of {host}'s log:");
                for l in &lines[lines.len().saturating_sub(25)..] {
                    eprintln!("{l}");
                }
            }
        }
        let out = local_cluster(&self.dir, &["down"]);
        if !out.status.success() {
            eprintln!(
                "local-cluster down: {}{}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_three_controller_cluster_through_the_stock_cli() {
    if std::env::var("WHARF_AGENT_TRANSPORT").as_deref() == Ok("unix") {
        eprintln!(
            "skipped: the agent transport setting is wharf up's; this cluster's agents are remote"
        );
        return;
    }
    let c = Cluster::up();
    let controllers = ["ctl-1", "ctl-2", "ctl-3"];
    let agents = ["node-1", "node-2", "node-3"];

    // The fleet as `docker node ls` shows it, the same through every controller.
    for via in controllers {
        let nodes = c.nodes_via(via);
        assert_eq!(nodes.len(), 6, "{nodes:?}");
        assert!(nodes.values().all(|(s, _)| s == "Ready"), "{nodes:?}");
        let leaders = nodes.values().filter(|(_, m)| m == "Leader").count();
        assert_eq!(leaders, 1, "{nodes:?}");
        for a in agents {
            assert_eq!(nodes[a].1, "", "an agent has no manager status");
        }
    }
    let info = c.ok_via(
        "ctl-3",
        &[
            "info",
            "--format",
            "{{.Swarm.LocalNodeState}} {{.Swarm.Nodes}} {{.Swarm.Managers}} {{.Name}} {{.NCPU}}",
        ],
    );
    let cpus: usize = 3 * std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(
        info.trim(),
        format!("active 6 3 ctl-3 {cpus}"),
        "the cluster's totals: the agents' CPUs"
    );
    let worker = c.ok_via(
        "ctl-2",
        &[
            "node",
            "inspect",
            "--format",
            "{{.Spec.Role}} {{.ManagerStatus}} {{.Spec.Labels.disk}}",
            "node-3",
        ],
    );
    assert_eq!(worker.trim(), "worker <nil> ssd");
    let manager = c.ok_via(
        "ctl-3",
        &[
            "node",
            "inspect",
            "--format",
            "{{.Spec.Role}} {{.ManagerStatus.Addr}}",
            "ctl-1",
        ],
    );
    assert_eq!(manager.trim(), format!("manager {}:2376", c.addrs["ctl-1"]));

    // Wrong joins are refused with the reason, on both sides.
    let tokens = c.dir.join("hosts/ctl-1/data");
    let agent_token = text(
        &Command::new(wharf_bin())
            .args(["cluster", "token", "agent", "--data-dir"])
            .arg(&tokens)
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    let (head, _) = agent_token.rsplit_once('-').unwrap();
    let (_, digest) = head.split_at("WHARF-1-".len());
    let other_ca = format!("WHARF-1-{}-{}", "0".repeat(digest.len()), "ab".repeat(20));
    for (token, says) in [
        (
            format!("{head}-{}", "ab".repeat(20)),
            "not this cluster's agent token",
        ),
        (other_ca, "not the one the join token names"),
    ] {
        let dir = c.dir.join("stranger");
        let out = Command::new(wharf_bin())
            .args(["node", "--data-dir"])
            .arg(&dir)
            .args([
                "--join",
                &format!("{}:2377", c.addrs["ctl-1"]),
                "--token",
                &token,
            ])
            .args(["--node-name", "stranger", "--advertise-addr", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
        assert!(!dir.join("membership.json").exists(), "nothing joined");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let log = std::fs::read_to_string(c.dir.join("hosts/ctl-1/wharf.log")).unwrap();
    assert!(
        log.contains("refused a join"),
        "the controller logs the refusal"
    );
    assert_eq!(c.nodes_via("ctl-1").len(), 6, "no host was added");

    // An image loaded through a follower lands on two agents.
    let tar = busybox_tar();
    c.ok_via("ctl-2", &["load", "-i", tar.to_str().unwrap()]);
    let holders: Vec<&str> = agents
        .iter()
        .copied()
        .filter(|a| {
            c.docker_via(
                "ctl-1",
                &[
                    "run",
                    "--rm",
                    "-e",
                    &format!("constraint:node=={a}"),
                    "busybox",
                    "true",
                ],
            )
            .status
            .success()
        })
        .collect();
    assert_eq!(holders.len(), 2, "two copies: {holders:?}");
    let missing = agents.iter().find(|a| !holders.contains(a)).unwrap();
    let out = c.docker_via(
        "ctl-1",
        &[
            "run",
            "--rm",
            "-e",
            &format!("constraint:node=={missing}"),
            "busybox",
            "true",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("not on a node that can take the container")
            && !err.contains("Unable to find image"),
        "a 409 naming the holders, never a pull: {err}"
    );

    // run, exit codes and output through every controller.
    for via in controllers {
        let out = c.docker_via(
            via,
            &[
                "run",
                "--rm",
                "busybox",
                "sh",
                "-c",
                "echo out-$0; exit 3",
                via,
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "via {via}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), format!("out-{via}\n"));
    }

    // A detached container through a follower; logs, exec, cp and inspect through another.
    let home = holders[0];
    c.ok_via(
        "ctl-2",
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-e",
            &format!("constraint:node=={home}"),
            "busybox",
            "sh",
            "-c",
            "echo started; echo data > /f; exec sleep 1000",
        ],
    );
    assert_eq!(
        c.ok_via(
            "ctl-3",
            &["inspect", "-f", "{{.Node.Name}} {{.State.Running}}", "web"]
        )
        .trim(),
        format!("{home} true")
    );
    c.until("web's first log line", || {
        text(&c.docker_via("ctl-3", &["logs", "web"]).stdout) == "started\n"
    });
    assert_eq!(c.ok_via("ctl-3", &["exec", "web", "cat", "/f"]), "data\n");
    let out = c.docker_via("ctl-1", &["exec", "web", "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // Hijacked streams through a follower: stdin, a TTY of the client's size, exit codes.
    let mut env = c.env.clone();
    env.retain(|(k, _)| k != "DOCKER_HOST");
    env.push((
        "DOCKER_HOST".into(),
        format!("tcp://{}:2376", c.addrs["ctl-3"]),
    ));
    let (shown, code) = support::pty_docker(
        &env,
        &["exec", "-it", "web", "sh"],
        &[(Some("# "), "stty size; tty; exit 4\r")],
    );
    assert_eq!(code, 4, "{shown}");
    assert!(
        shown.contains("33 101") && shown.contains("/dev/pts/"),
        "{shown}"
    );
    let (shown, code) = support::pty_docker(
        &env,
        &[
            "run",
            "-it",
            "--rm",
            "-e",
            &format!("constraint:node=={home}"),
            "busybox",
            "sh",
        ],
        &[(Some("# "), "echo in-$((6*7)); exit 5\r")],
    );
    assert_eq!(code, 5, "{shown}");
    assert!(shown.contains("in-42"), "{shown}");
    let mut child = Command::new("docker")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["run", "--rm", "-i", "busybox", "sh", "-c", "cat; exit 6"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"piped through ctl-3\n")
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(text(&out.stdout), "piped through ctl-3\n");
    let cp_dir = c.dir.join("cp");
    std::fs::create_dir_all(&cp_dir).unwrap();
    c.ok_via("ctl-1", &["cp", "web:/f", cp_dir.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(cp_dir.join("f")).unwrap(), "data\n");

    // `docker events` on one controller shows what happens through another (and what the
    // leader's monitors see).
    let mut events = Command::new("docker")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args([
            "events",
            "--filter",
            "container=evtest",
            "--format",
            "{{.Action}}",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        use std::io::BufRead;
        let (seen, stdout) = (seen.clone(), events.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                seen.lock().unwrap().push(line);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    c.ok_via(
        "ctl-2",
        &["run", "--rm", "--name", "evtest", "busybox", "true"],
    );
    let took = c.until(
        "create, start, die and destroy on another controller",
        || {
            let seen = seen.lock().unwrap();
            ["create", "start", "die", "destroy"]
                .iter()
                .all(|a| seen.iter().any(|l| l == a))
        },
    );
    eprintln!("events of a run through ctl-2 seen on ctl-3 within {took:?}");
    let _ = events.kill();
    let _ = events.wait();
    let _ = reader.join();

    // One endpoint for the whole cluster, as classic Swarm showed it: `docker ps` names
    // `node/name`, a published port is on its agent's address (and answers there), a
    // name is unique cluster-wide, a bridge network is made on every agent and prune
    // covers them all.
    let served = c
        .ok_via(
            "ctl-2",
            &[
                "run",
                "-d",
                "--name",
                "pub",
                "-p",
                "18080:80",
                "-e",
                &format!("constraint:node=={home}"),
                "busybox",
                "sh",
                "-c",
                "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 80 -h /www",
            ],
        )
        .trim()
        .to_string();
    let at = format!("{}:18080", c.addrs[home]);
    assert_eq!(c.ok_via("ctl-3", &["port", "pub", "80"]).trim(), at);
    let ps = c.ok_via("ctl-1", &["ps", "--format", "{{.Names}} {{.Ports}}"]);
    assert!(
        ps.lines().any(|l| l == format!("{home}/pub {at}->80/tcp")),
        "{ps}"
    );
    // `--filter node=` (classic Swarm's) picks one node's containers.
    let on_home = c.ok_via(
        "ctl-2",
        &[
            "ps",
            "--filter",
            &format!("node={home}"),
            "--format",
            "{{.Names}}",
        ],
    );
    assert!(
        on_home.lines().any(|l| l == format!("{home}/pub")),
        "{on_home}"
    );
    assert!(
        on_home.lines().all(|l| l.starts_with(&format!("{home}/"))),
        "{on_home}"
    );
    let page = c.until("the published port answers on the agent's address", || {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(&at) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got.ends_with("served\n")
    });
    eprintln!("a port published on {home} answered on {at} within {page:?}");
    let out = c.docker_via("ctl-3", &["create", "--name", "pub", "busybox"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success() && said.contains("is already in use") && said.contains(&served),
        "{said}"
    );
    c.ok_via("ctl-1", &["rm", "-f", "pub"]);

    c.ok_via("ctl-2", &["network", "create", "wide"]);
    let nets = c.ok_via("ctl-3", &["network", "ls", "--format", "{{.Name}}"]);
    for agent in agents {
        assert!(
            nets.lines().any(|l| l == format!("{agent}/wide")),
            "{agent}: {nets}"
        );
    }
    c.ok_via("ctl-1", &["network", "rm", "wide"]);
    c.ok_via("ctl-2", &["network", "create", "wide"]);
    let pruned = c.ok_via("ctl-1", &["network", "prune", "-f"]);
    assert_eq!(pruned.matches("wide").count(), agents.len(), "{pruned}");
    let nets = c.ok_via("ctl-2", &["network", "ls", "--format", "{{.Name}}"]);
    assert!(!nets.contains("wide"), "{nets}");

    user_network_names_resolve_on_a_remote_agent_and_after_its_restart(&c);
    affinities_and_constraints_place_across_hosts(&c);
    the_strategy_is_a_cluster_setting(&c);

    // Labels set with `docker node update` drive placement.
    c.ok_via(
        "ctl-1",
        &["node", "update", "--label-add", "zone=blue", home],
    );
    assert_eq!(
        c.ok_via(
            "ctl-2",
            &["node", "inspect", "-f", "{{.Spec.Labels.zone}}", home]
        )
        .trim(),
        "blue"
    );
    c.ok_via(
        "ctl-2",
        &[
            "run",
            "-d",
            "--name",
            "blue",
            "-e",
            "constraint:node.labels.zone==blue",
            "busybox",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(
        c.ok_via("ctl-1", &["inspect", "-f", "{{.Node.Name}}", "blue"])
            .trim(),
        home
    );
    c.ok_via("ctl-1", &["node", "update", "--label-rm", "zone", home]);

    // A container to forget while its node is down (below).
    let stale = c
        .ok_via(
            "ctl-2",
            &[
                "run",
                "-d",
                "--name",
                "stale",
                "-e",
                &format!("constraint:node=={home}"),
                "busybox",
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_string();

    // kill + restart of the agent: its containers keep running and are adopted again.
    c.fault(&["kill", home]);
    let down = c.until("the killed agent Down", || {
        c.nodes_via("ctl-1")
            .get(home)
            .is_some_and(|(s, _)| s == "Down")
    });
    eprintln!("{home} killed: Down after {down:?}");
    assert!(
        down < Duration::from_secs(10),
        "Down in under 10 s: {down:?}"
    );
    let out = c.docker_via("ctl-2", &["logs", "web"]);
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains(home) && err.contains("not connected"),
        "{err}"
    );
    // `docker rm` of a container on a Down node says why it cannot; `rm -f` forgets it
    // at once (the node still runs it), and the node removes it when it is back.
    let out = c.docker_via("ctl-3", &["rm", "stale"]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !out.status.success() && said.contains(&format!("its node {home} is down")),
        "{said}"
    );
    c.ok_via("ctl-3", &["rm", "-f", "stale"]);
    assert!(!c
        .docker_via("ctl-1", &["inspect", "stale"])
        .status
        .success());
    let stale_dir = c.dir.join(format!("hosts/{home}/data/containers/{stale}"));
    assert!(
        stale_dir.is_dir(),
        "still on its host: {}",
        stale_dir.display()
    );
    let shim_of_stale = || {
        Command::new("pgrep")
            .args(["-f", &format!("shim --state-dir {}", stale_dir.display())])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(
        shim_of_stale(),
        "its shim still runs while its node is down"
    );
    let started = Instant::now();
    c.fault(&["restart", home]);
    eprintln!("{home} restarted: Ready after {:?}", started.elapsed());
    // Removed before the node shows Ready again (`restart` returns once it does).
    assert!(
        !stale_dir.exists() && !shim_of_stale(),
        "the forgotten container is gone before {home} shows Ready"
    );
    c.until("web answers again", || {
        c.docker_via("ctl-3", &["exec", "web", "true"])
            .status
            .success()
    });
    assert_eq!(
        c.ok_via("ctl-3", &["exec", "web", "cat", "/f"]),
        "data\n",
        "the same container, still running"
    );
    assert_eq!(
        c.ok_via("ctl-1", &["inspect", "-f", "{{.State.Running}}", "web"])
            .trim(),
        "true"
    );

    // A partitioned agent: Down within the heartbeat grace, its containers' calls refused
    // naming it (never a hang); after heal it is Ready again with its containers.
    c.fault(&["partition", home]);
    let down = c.until("the partitioned agent Down", || {
        c.nodes_via("ctl-2")
            .get(home)
            .is_some_and(|(s, _)| s == "Down")
    });
    eprintln!("{home} partitioned: Down after {down:?}");
    assert!(
        down < Duration::from_secs(10),
        "Down in under 10 s: {down:?}"
    );
    // Every controller's own connection to it goes within the grace; a call meanwhile
    // fails when it does, never hangs.
    for via in controllers {
        let started = Instant::now();
        let out = c.docker_via(via, &["exec", "web", "true"]);
        let took = started.elapsed();
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            !out.status.success() && said.contains(home),
            "exec via {via}: {:?} {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            took < Duration::from_secs(10),
            "refused within the grace: {took:?}"
        );
    }
    c.fault(&["heal"]);
    let back = c.until("the healed agent Ready", || {
        c.nodes_via("ctl-2")
            .get(home)
            .is_some_and(|(s, _)| s == "Ready")
            && c.docker_via("ctl-3", &["exec", "web", "true"])
                .status
                .success()
    });
    eprintln!("{home} healed: Ready and serving after {back:?}");

    // A follower that alone loses its connection to an agent says nothing of the agent's
    // liveness: only the leader's view decides, so the agent stays Ready (and serves
    // through the others) while that one follower refuses its containers' calls.
    let leader = c.leader_via("ctl-1").expect("a leader");
    let follower = *controllers.iter().find(|h| **h != leader).unwrap();
    let netns = |host: &str| {
        let state = std::fs::read_to_string(c.dir.join("cluster.state")).unwrap();
        state
            .lines()
            .filter_map(|l| l.strip_prefix("host="))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f[0] == host)
            // A controller's veth is `wlc<HASH>c<k>`; its namespace `wlc-<HASH>-<host>`.
            .and_then(|f| Some(f[3].strip_prefix("wlc")?.rsplit_once('c')?.0.to_string()))
            .map(|hash| format!("wlc-{hash}-{host}"))
            .unwrap()
    };
    let cut = |op: &str| {
        for (chain, dir) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
            let out = Command::new("ip")
                .args(["netns", "exec", &netns(follower), "iptables", op, chain])
                .args([dir, &c.addrs[home], "-j", "DROP"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", text(&out.stderr));
        }
    };
    let home_id = c
        .ok_via(&leader, &["node", "inspect", "-f", "{{.ID}}", home])
        .trim()
        .to_string();
    let leader_log = c.dir.join(format!("hosts/{leader}/wharf.log"));
    // The leader's corrections of a node's recorded state (a follower's view recorded
    // against its own).
    let corrections = || {
        std::fs::read_to_string(&leader_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("the leader records a node's state") && l.contains(&home_id))
            .count()
    };
    let before = corrections();
    cut("-I");
    c.until("the cut follower refuses the agent's containers", || {
        let out = c.docker_via(follower, &["exec", "web", "true"]);
        !out.status.success()
            && format!("{}{}", text(&out.stdout), text(&out.stderr)).contains(home)
    });
    // (Read a few times over a second or so: a follower recording Down would do it
    // within milliseconds of dropping its connection.)
    let seen: Vec<_> = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(250));
            c.nodes_via(&leader).get(home).map(|(s, _)| s.clone())
        })
        .collect();
    cut("-D");
    assert!(
        seen.iter().all(|s| s.as_deref() == Some("Ready")),
        "{home} Ready while only {follower} lost it: {seen:?}"
    );
    assert_eq!(
        corrections(),
        before,
        "nothing recorded {home} Down meanwhile"
    );
    c.until("the follower serves the agent again", || {
        c.docker_via(follower, &["exec", "web", "true"])
            .status
            .success()
    });

    // logs -f through a follower follows the container on its agent.
    let mut follow = Command::new("docker")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(["logs", "-f", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let first = {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(follow.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    };
    assert_eq!(first, "started\n");
    assert!(follow.try_wait().unwrap().is_none(), "still following");
    let _ = follow.kill();
    let _ = follow.wait();

    // kill of the leader: a new one within seconds, the others keep serving, nothing lost.
    let leader = c.leader_via("ctl-1").expect("a leader");
    let others: Vec<&str> = controllers
        .iter()
        .copied()
        .filter(|h| *h != leader)
        .collect();
    c.fault(&["kill", &leader]);
    let elected = c.until("a new leader", || {
        c.leader_via(others[0]).is_some_and(|l| l != leader)
    });
    eprintln!("leader {leader} killed: a new leader after {elected:?}");
    let marked = c.until("the killed leader Down and Unreachable", || {
        c.nodes_via(others[1])
            .get(leader.as_str())
            .is_some_and(|(s, m)| s == "Down" && m == "Unreachable")
    });
    eprintln!("leader {leader} killed: shown Down/Unreachable {marked:?} after the election");
    for via in &others {
        let out = c.docker_via(via, &["run", "--rm", "busybox", "echo", "still"]);
        assert_eq!(
            text(&out.stdout),
            "still\n",
            "via {via}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(c.ok_via(others[1], &["exec", "web", "cat", "/f"]), "data\n");
    let ps = c.ok_via(others[0], &["ps", "--format", "{{.Names}}"]);
    assert!(ps.contains("web") && ps.contains("blue"), "{ps}");
    c.fault(&["restart", &leader]);
    c.until("the old leader back and reachable", || {
        c.nodes_via(others[0])
            .get(leader.as_str())
            .is_some_and(|(s, m)| s == "Ready" && (m == "Reachable" || m == "Leader"))
    });
    a_lost_leader_mid_create_answers_once(&c, &controllers);
    a_wiped_controller_rejoins_under_a_new_id(&c, &controllers);

    // Drain: a `--restart always` container moves (started elsewhere, then its old copy
    // stops); one without a policy stays, and `docker node inspect` says why; with no
    // other node to take it (the other holder paused), the mover waits, still running.
    let spare = holders.iter().copied().find(|a| *a != home).unwrap();
    let soft = format!("constraint:node==~{spare}");
    let drained_id = c
        .ok_via(
            "ctl-1",
            &[
                "run",
                "-d",
                "--name",
                "drainme",
                "--restart",
                "always",
                "-e",
                &soft,
                "busybox",
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_string();
    c.ok_via(
        "ctl-1",
        &[
            "run", "-d", "--name", "stay", "-e", &soft, "busybox", "sleep", "1000",
        ],
    );
    let availability = |node: &str, a: &str| {
        c.ok_via("ctl-2", &["node", "update", "--availability", a, node]);
    };
    let message = |node: &str| {
        c.try_via(
            "ctl-3",
            &["node", "inspect", "-f", "{{.Status.Message}}", node],
        )
    };
    availability(home, "pause");
    availability(spare, "drain");
    c.until("the drained node says why its containers stay", || {
        let m = message(spare);
        m.contains("drainme (no node to move to") && m.contains("stay (not moved: only containers")
    });
    assert_eq!(
        c.ok_via(
            "ctl-1",
            &[
                "inspect",
                "-f",
                "{{.Node.Name}} {{.State.Running}}",
                "drainme"
            ]
        )
        .trim(),
        format!("{spare} true"),
        "nothing lost while it cannot move"
    );
    let started = Instant::now();
    availability(home, "active");
    c.until("the drained container running on the other node", || {
        c.try_via(
            "ctl-1",
            &[
                "inspect",
                "-f",
                "{{.Node.Name}} {{.State.Running}}",
                "drainme",
            ],
        )
        .trim()
            == format!("{home} true")
    });
    let old_dir = c
        .dir
        .join(format!("hosts/{spare}/data/containers/{drained_id}"));
    let gone = c.until("the drained node's copy removed", || !old_dir.exists());
    eprintln!(
        "drain of {spare}: its --restart always container running on {home} {:?} after {home} accepted it, the old copy gone {gone:?} later",
        started.elapsed()
    );
    let ps = c.ok_via("ctl-3", &["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(
        ps.lines().filter(|l| l.ends_with("/drainme")).count(),
        1,
        "{ps}"
    );
    assert!(!message(spare).contains("drainme"), "{}", message(spare));
    availability(spare, "active");
    c.ok_via("ctl-1", &["rm", "-f", "drainme", "stay"]);

    // Fencing on: a living agent cut off from every controller stops its `--restart
    // always` container after the lease (2 s), before the leader (grace 4 s) starts the
    // successor elsewhere: no overlap, measured from the agent's log and the successor's
    // start. After heal, the cut-off copy is removed.
    fenced_partition_leaves_no_overlap(&c, spare, home);

    // A host whose daemon was killed while its containers live on cannot fence: the
    // copy overlaps the successor until the daemon is back, and goes before it is Ready.
    killed_daemon_overlaps_until_it_returns(&c, spare);

    // A host lost (poweroff) with containers on it: a running `--restart always` one is
    // re-created on another node once, under its name; one pinned by a named volume
    // stays, pending with the reason; one without a policy stays, its status unknown.
    for (name, extra) in [
        ("mover", vec!["--restart", "always"]),
        ("pinned", vec!["--restart", "always", "-v", "pinvol:/data"]),
        ("plain", vec![]),
    ] {
        let mut args = vec!["run", "-d", "--name", name, "-e", &soft];
        args.extend(extra);
        args.extend(["busybox", "sleep", "1000"]);
        c.ok_via("ctl-3", &args);
        assert_eq!(
            c.ok_via("ctl-1", &["inspect", "-f", "{{.Node.Name}}", name])
                .trim(),
            spare
        );
    }
    let lost = Instant::now();
    c.fault(&["poweroff", spare]);
    c.until("the powered-off agent Down", || {
        c.nodes_via("ctl-2")
            .get(spare)
            .is_some_and(|(s, _)| s == "Down")
    });
    let down_after = lost.elapsed();
    c.until(
        "the --restart always container running on another node",
        || {
            c.try_via(
                "ctl-2",
                &[
                    "inspect",
                    "-f",
                    "{{.Node.Name}} {{.State.Running}}",
                    "mover",
                ],
            )
            .trim()
                == format!("{home} true")
        },
    );
    eprintln!(
        "{spare} powered off: Down after {down_after:?}, its --restart always container running on {home} {:?} after the poweroff",
        lost.elapsed()
    );
    let moved_from = c.ok_via(
        "ctl-1",
        &[
            "inspect",
            "-f",
            "{{index .Config.Labels \"com.wharf.moved-from\"}}",
            "mover",
        ],
    );
    assert!(moved_from.starts_with(spare), "{moved_from}");
    let ps = c.ok_via("ctl-3", &["ps", "-a", "--format", "{{.Names}}|{{.Status}}"]);
    assert_eq!(
        ps.lines().filter(|l| l.contains("mover")).count(),
        1,
        "moved once: {ps}"
    );
    for name in ["pinned", "plain"] {
        assert!(
            ps.lines()
                .any(|l| l == format!("{spare}/{name}|unknown (node down)")),
            "{name}: {ps}"
        );
    }
    let message = c.until("the pinned container pending with its reason", || {
        c.try_via(
            "ctl-1",
            &["node", "inspect", "-f", "{{.Status.Message}}", spare],
        )
        .contains(&format!("pinned (pinned by volume pinvol on {spare})"))
    });
    eprintln!("{spare}: the pinned container reported pending {message:?} later");
    c.ok_via("ctl-2", &["rm", "-f", "mover", "pinned", "plain"]);
    c.ok_via("ctl-2", &["node", "rm", spare]);
    assert!(!c.nodes_via("ctl-3").contains_key(spare));
    let mut restart = Command::new("bash");
    restart
        .arg(script())
        .args(["restart", "--dir"])
        .arg(&c.dir)
        .arg(spare)
        .env("WHARF_BIN", wharf_bin())
        .env("WHARF_LOCAL_CLUSTER_TIMEOUT", "8");
    let out = restart.output().unwrap();
    assert!(!out.status.success(), "a removed node does not come back");
    let log = std::fs::read_to_string(c.dir.join("hosts").join(spare).join("wharf.log")).unwrap();
    assert!(
        log.contains("removed from the cluster") || log.contains("cannot reach a controller"),
        "the refused node says why"
    );
    let ctl_logs: String = controllers
        .iter()
        .map(|h| {
            std::fs::read_to_string(c.dir.join("hosts").join(h).join("wharf.log"))
                .unwrap_or_default()
        })
        .collect();
    assert!(
        ctl_logs.contains("was removed from the cluster (docker node rm)"),
        "a controller logs the refusal"
    );

    // A controller that is down leaves the Raft group through the leader.
    let leader = c.leader_via("ctl-1").expect("a leader");
    let gone = controllers.iter().copied().find(|h| *h != leader).unwrap();
    let socket = |h: &str| c.dir.join("hosts").join(h).join("data/docker.sock");
    let members = |h: &str| {
        let out = Command::new(wharf_bin())
            .args(["cluster", "members", "--unix-socket"])
            .arg(socket(h))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let before = members(&leader);
    assert_eq!(
        before.lines().count(),
        4,
        "a header and 3 controllers: {before}"
    );
    assert_eq!(
        before.lines().filter(|l| l.ends_with("yes")).count(),
        1,
        "{before}"
    );
    let refused = Command::new(wharf_bin())
        .args(["cluster", "remove", "--unix-socket"])
        .arg(socket(&leader))
        .arg(gone)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "a controller that answers is not removed"
    );
    assert!(
        text(&refused.stderr).contains("stop it first"),
        "{}",
        text(&refused.stderr)
    );
    c.fault(&["kill", gone]);
    c.until("the killed controller Down", || {
        c.nodes_via(&leader)
            .get(gone)
            .is_some_and(|(s, _)| s == "Down")
    });
    let out = Command::new(wharf_bin())
        .args(["cluster", "remove", "--unix-socket"])
        .arg(socket(&leader))
        .arg(gone)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = members(&leader);
    assert_eq!(after.lines().count(), 3, "{after}");
    assert!(!after.contains(gone), "{after}");
    let out = c.docker_via(&leader, &["run", "--rm", "busybox", "echo", "two"]);
    assert_eq!(
        text(&out.stdout),
        "two\n",
        "two controllers still commit: {}",
        text(&out.stderr)
    );

    c.ok_via(&leader, &["rm", "-f", "web", "blue"]);
}

/// What one `docker create` of [`a_lost_leader_mid_create_answers_once`] was told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Told {
    /// Exit 0 with this ID.
    Created,
    /// A 409 name conflict: the name is someone's (a create sent twice would say so).
    Conflict,
    /// Any other error: nothing was created.
    Failed,
}

/// Whether what `docker create --name NAME` was told agrees with the containers that
/// exist afterwards (`ids`: the IDs holding NAME); pure. Exit 0 ⇒ exactly one, the ID
/// printed; a 409 ⇒ exactly one; another error ⇒ none (never "error but created").
fn create_agrees(told: Told, printed: &str, ids: &[String]) -> Result<(), String> {
    match (told, ids) {
        (Told::Created, [id]) if id == printed => Ok(()),
        (Told::Conflict, [_]) | (Told::Failed, []) => Ok(()),
        _ => Err(format!("told {told:?} ({printed}) but holders are {ids:?}")),
    }
}

/// A lost Raft leader mid-request: many named creates through a follower while the
/// leader is SIGKILLed, then restarted. Each client got an error or its container, never
/// both and never two; `docker ps -a` has no duplicate.
fn a_lost_leader_mid_create_answers_once(c: &Cluster, controllers: &[&str]) {
    const CREATES: usize = 60;
    let leader = c.leader_via(controllers[0]).expect("a leader");
    let via = controllers
        .iter()
        .copied()
        .find(|h| *h != leader)
        .expect("a follower");
    let other = controllers
        .iter()
        .copied()
        .find(|h| *h != leader && *h != via)
        .expect("a third controller");
    // A controller restarted just before may not be connected to every agent yet.
    for agent in ["node-1", "node-2", "node-3"] {
        c.until(&format!("{via} reaches {agent}"), || {
            let out = c.docker_via(
                via,
                &[
                    "run",
                    "--rm",
                    "-e",
                    &format!("constraint:node=={agent}"),
                    "busybox",
                    "true",
                ],
            );
            out.status.success()
                || text(&out.stderr).contains("not on a node that can take the container")
        });
    }
    let started = Instant::now();
    let creates: Vec<_> = (0..CREATES)
        .map(|i| {
            std::thread::sleep(Duration::from_millis(20));
            let name = format!("idem-{i}");
            let out_env = c.env.clone();
            let addr = c.addrs[via].clone();
            let began = started.elapsed();
            let handle = std::thread::spawn(move || {
                let out = Command::new("docker")
                    .envs(out_env)
                    .env("DOCKER_HOST", format!("tcp://{addr}:2376"))
                    .args(["create", "--name", &name, "busybox", "true"])
                    .output()
                    .expect("run docker");
                (out, started.elapsed())
            });
            if i == CREATES / 4 {
                c.fault(&["kill", &leader]);
            }
            (i, began, handle)
        })
        .collect();
    let killed_at = creates[CREATES / 4].1;
    let mut told = BTreeMap::new();
    let mut in_flight = 0;
    for (i, began, handle) in creates {
        let (out, ended) = handle.join().expect("a create's thread");
        if began <= killed_at && ended > killed_at {
            in_flight += 1;
        }
        let err = text(&out.stderr);
        let kind = if out.status.success() {
            Told::Created
        } else if err.contains("is already in use") {
            Told::Conflict
        } else {
            Told::Failed
        };
        told.insert(
            format!("idem-{i}"),
            (kind, text(&out.stdout).trim().to_string(), err),
        );
    }
    eprintln!(
        "leader {leader} killed during {CREATES} creates through {via}: {in_flight} in flight at the kill, all answered after {:?}",
        started.elapsed()
    );
    c.fault(&["restart", &leader]);
    c.until("the killed leader back and reachable", || {
        c.nodes_via(other)
            .get(leader.as_str())
            .is_some_and(|(s, m)| s == "Ready" && (m == "Reachable" || m == "Leader"))
    });

    let ps = c.ok_via(
        other,
        &["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
    );
    let mut holders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for line in ps.lines() {
        let (id, name) = line.split_once(' ').expect("ID NAME");
        // `docker ps` names a container `node/name` in a cluster.
        let name = name.rsplit('/').next().unwrap_or(name);
        assert!(ids.insert(id.to_string()), "{id} listed twice: {ps}");
        holders
            .entry(name.to_string())
            .or_default()
            .push(id.to_string());
    }
    for (name, ids) in &holders {
        assert_eq!(ids.len(), 1, "two containers named {name}: {ids:?}");
    }
    let (mut ok, mut failed, mut conflicts) = (0, 0, 0);
    for (name, (kind, printed, err)) in &told {
        let ids = holders.get(name).map(Vec::as_slice).unwrap_or_default();
        if let Err(e) = create_agrees(*kind, printed, ids) {
            panic!("{name}: {e}; stderr: {err}");
        }
        match kind {
            Told::Created => ok += 1,
            Told::Conflict => conflicts += 1,
            Told::Failed => failed += 1,
        }
    }
    eprintln!("creates through {via} across the leader's kill: {ok} ok, {failed} failed (none created), {conflicts} name conflicts (one created)");
    for (_, (kind, _, err)) in told.iter().filter(|(_, (k, ..))| *k != Told::Created) {
        eprintln!("  {kind:?}: {}", err.trim());
    }
    let names: Vec<&str> = holders
        .keys()
        .map(String::as_str)
        .filter(|n| n.starts_with("idem-"))
        .collect();
    let mut rm = vec!["rm", "-f"];
    rm.extend(&names);
    if !names.is_empty() {
        c.ok_via(other, &rm);
    }
}

/// A controller whose disk is wiped cannot come back under its old ID: it joins again
/// under a new one; the old one is Down/Unreachable until `docker node rm`, which revokes
/// its certificate; the cluster serves throughout. Ends with three controllers again.
fn a_wiped_controller_rejoins_under_a_new_id(c: &Cluster, controllers: &[&str]) {
    let leader = c.leader_via(controllers[0]).expect("a leader");
    // Not the first controller: its data dir holds the client certificate of client.env.
    let victim = controllers[1..]
        .iter()
        .copied()
        .find(|h| *h != leader)
        .expect("a follower");
    let listing = |via: &str| -> Vec<(String, String, String, String)> {
        let out = c.ok_via(
            via,
            &[
                "node",
                "ls",
                "--format",
                "{{.ID}} {{.Hostname}} {{.Status}} {{.ManagerStatus}}",
            ],
        );
        out.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let at = |i: usize| f.get(i).copied().unwrap_or("").to_string();
                (at(0), at(1), at(2), at(3))
            })
            .collect()
    };
    let old_id = c
        .ok_via(&leader, &["node", "inspect", "-f", "{{.ID}}", victim])
        .trim()
        .to_string();
    let certs = c.dir.join("hosts").join(victim).join("data/certs");
    let kept = c.dir.join(format!("old-certs-{victim}"));
    std::fs::create_dir_all(&kept).unwrap();
    for f in ["ca.pem", "node.pem", "node-key.pem"] {
        std::fs::copy(certs.join(f), kept.join(f)).unwrap();
    }

    c.fault(&["poweroff", victim]);
    c.until("the powered-off controller Down", || {
        listing(&leader)
            .iter()
            .any(|(id, _, s, _)| *id == old_id && s == "Down")
    });
    c.fault(&["wipe", victim]);
    let started = Instant::now();
    c.fault(&["restart", victim]);
    eprintln!(
        "{victim} wiped and restarted: joined and Ready after {:?}",
        started.elapsed()
    );
    let nodes = listing(&leader);
    let new: Vec<_> = nodes
        .iter()
        .filter(|(_, h, s, _)| h == victim && s == "Ready")
        .collect();
    assert_eq!(new.len(), 1, "{nodes:?}");
    let new_id = new[0].0.clone();
    assert_ne!(new_id, old_id, "a wiped controller joins under a new ID");
    assert!(
        nodes
            .iter()
            .any(|(id, _, s, m)| *id == old_id && s == "Down" && m == "Unreachable"),
        "the old ID Down/Unreachable: {nodes:?}"
    );
    let out = c.docker_via(&leader, &["run", "--rm", "busybox", "echo", "serving"]);
    assert_eq!(text(&out.stdout), "serving\n", "{}", text(&out.stderr));

    c.ok_via(&leader, &["node", "rm", &old_id]);
    let nodes = listing(victim);
    assert!(
        nodes.iter().all(|(id, ..)| *id != old_id),
        "the old ID is gone: {nodes:?}"
    );
    assert_eq!(
        nodes.iter().filter(|(_, _, _, m)| !m.is_empty()).count(),
        3,
        "three controllers: {nodes:?}"
    );
    // The old certificate no longer admits anyone to the cluster port.
    let leader_addr = format!("{}:2377", c.addrs[&leader]);
    let probe = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &leader_addr,
            "-alpn",
            "wharf-raft/1",
        ])
        .arg("-cert")
        .arg(kept.join("node.pem"))
        .arg("-key")
        .arg(kept.join("node-key.pem"))
        .arg("-CAfile")
        .arg(kept.join("ca.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let log = c.dir.join("hosts").join(&leader).join("wharf.log");
    let refusal = format!("node {old_id} was removed from the cluster (docker node rm)");
    c.until("the leader refuses the old certificate", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&refusal))
    });
    eprintln!(
        "{victim}: old ID {old_id} removed and its certificate refused (openssl said {:?}); new ID {new_id}",
        text(&probe.stdout).lines().find(|l| l.contains("ALPN")).unwrap_or("")
    );
    // The others served throughout; the new controller once it has reached the agents
    // (it is Ready in docker node ls before its connections to them are up).
    let still = |via: &str| {
        let out = c.docker_via(via, &["run", "--rm", "busybox", "echo", "still"]);
        (text(&out.stdout) == "still\n", text(&out.stderr))
    };
    for via in controllers.iter().filter(|h| **h != victim) {
        let (ok, err) = still(via);
        assert!(ok, "via {via}: {err}");
    }
    let took = c.until("the new controller runs containers", || still(victim).0);
    eprintln!("{victim} (new ID) runs containers {took:?} after its old ID was removed");
}

#[test]
fn create_outcomes_agree_only_with_what_exists() {
    let id = || "a".repeat(64);
    assert!(create_agrees(Told::Created, &id(), &[id()]).is_ok());
    assert!(create_agrees(Told::Created, &id(), &[]).is_err());
    assert!(create_agrees(Told::Created, &id(), &["b".repeat(64)]).is_err());
    assert!(create_agrees(Told::Failed, "", &[]).is_ok());
    assert!(
        create_agrees(Told::Failed, "", &[id()]).is_err(),
        "an error but the container exists: both"
    );
    assert!(create_agrees(Told::Conflict, "", &[id()]).is_ok());
    assert!(create_agrees(Told::Conflict, "", &[]).is_err());
}

/// `wharf controller --bootstrap --with-agent`: one host that is both a controller and an
/// agent, listed once as a manager, taking placements; `wharf down` of its data dir
/// removes its containers, bridge and rules.
#[test]
fn a_controller_with_an_agent_runs_containers() {
    if std::env::var("WHARF_AGENT_TRANSPORT").as_deref() == Ok("unix") {
        eprintln!("skipped: the agent transport setting is wharf up's");
        return;
    }
    let dir = PathBuf::from(format!("/tmp/wca-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (api, cluster) = (support::free_port(), support::free_port());
    let bridge = format!("wca{}", std::process::id() % 100_000);
    let subnet = format!("10.249.{}.0/24", std::process::id() % 250);
    let socket = dir.join("docker.sock");
    let common: Vec<String> = vec![
        "--data-dir".into(),
        dir.display().to_string(),
        "--unix-socket".into(),
        socket.display().to_string(),
        "--bridge-name".into(),
        bridge.clone(),
        "--bridge-subnet".into(),
        subnet,
    ];
    struct Down(Vec<String>, PathBuf);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = Command::new(wharf_bin()).arg("down").args(&self.0).output();
            let _ = std::fs::remove_dir_all(&self.1);
        }
    }
    let down = Down(common.clone(), dir.clone());
    let log = std::fs::File::create(dir.with_extension("log")).unwrap();
    let mut daemon = Command::new(wharf_bin())
        .args([
            "controller",
            "--bootstrap",
            "--with-agent",
            "--node-name",
            "solo",
        ])
        .args(["--api-addr", &format!("127.0.0.1:{api}")])
        .args(["--cluster-addr", &format!("127.0.0.1:{cluster}")])
        .args(&common)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let docker = |args: &[&str]| {
        Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        support::eventually(30, || text(
            &docker(&[
                "node",
                "ls",
                "--format",
                "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"
            ])
            .stdout
        ) == "solo Ready Leader\n"),
        "one host, a manager, Ready: {}",
        std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default()
    );
    let tar = busybox_tar();
    assert!(docker(&["load", "-i", tar.to_str().unwrap()])
        .status
        .success());
    let out = docker(&["run", "--rm", "busybox", "echo", "here"]);
    assert_eq!(text(&out.stdout), "here\n", "{}", text(&out.stderr));
    assert!(
        docker(&["run", "-d", "--name", "kept", "busybox", "sleep", "1000"])
            .status
            .success()
    );
    assert_eq!(
        text(&docker(&["inspect", "-f", "{{.Node.Name}} {{.State.Running}}", "kept"]).stdout)
            .trim(),
        "solo true"
    );
    let pid: i32 = text(&docker(&["inspect", "-f", "{{.State.Pid}}", "kept"]).stdout)
        .trim()
        .parse()
        .unwrap();
    let out = Command::new(wharf_bin())
        .arg("down")
        .args(&common)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = daemon.wait();
    assert!(
        support::eventually(10, || !Path::new(&format!("/proc/{pid}")).exists()),
        "the container's process is gone"
    );
    let link = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .unwrap();
    assert!(!link.status.success(), "the bridge is removed");
    let rules = text(&Command::new("iptables-save").output().unwrap().stdout);
    assert!(!rules.contains(&bridge), "no rule names the bridge");
    drop(down);
    let _ = std::fs::remove_file(dir.with_extension("log"));
}

/// A user network on a remote agent, through a follower: two containers on that agent
/// resolve each other by name and alias (the resolver is the agent's, on the network's
/// gateway), and again after the agent is killed and restarted (the leader sends the
/// tables when it reconnects). Its own cluster, left empty before it goes down.
fn user_network_names_resolve_on_a_remote_agent_and_after_its_restart(c: &Cluster) {
    let leader = c.leader_via("ctl-1").expect("a leader");
    let via = ["ctl-1", "ctl-2", "ctl-3"]
        .into_iter()
        .find(|h| *h != leader)
        .unwrap();
    c.ok_via(via, &["load", "-i", busybox_tar().to_str().unwrap()]);
    let home = ["node-1", "node-2", "node-3"]
        .into_iter()
        .find(|a| {
            c.docker_via(
                via,
                &[
                    "run",
                    "--rm",
                    "-e",
                    &format!("constraint:node=={a}"),
                    "busybox",
                    "true",
                ],
            )
            .status
            .success()
        })
        .expect("an agent holding busybox");
    c.ok_via(via, &["network", "create", &format!("{home}/dnsnet")]);
    let on_home = format!("constraint:node=={home}");
    for (name, extra) in [("dns-a", &["--network-alias", "alpha"][..]), ("dns-b", &[])] {
        let mut args = vec!["run", "-d", "--name", name, "--network", "dnsnet"];
        args.extend_from_slice(extra);
        args.extend(["-e", &on_home, "busybox", "sleep", "1000"]);
        c.ok_via(via, &args);
    }
    let ip = |name: &str| {
        c.ok_via(
            via,
            &[
                "inspect",
                "-f",
                "{{.Node.Name}} {{.NetworkSettings.Networks.dnsnet.IPAddress}}",
                name,
            ],
        )
        .trim()
        .strip_prefix(&format!("{home} "))
        .unwrap_or_else(|| panic!("{name} is not on {home}"))
        .to_string()
    };
    let (ip_a, ip_b) = (ip("dns-a"), ip("dns-b"));
    // What `nslookup NAME` run in container `from` prints, through the follower.
    let lookup = |from: &str, name: &str| {
        let out = c.docker_via(via, &["exec", from, "nslookup", name]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    };
    let resolves = |from: &str, name: &str, ip: &str| {
        lookup(from, name)
            .lines()
            .any(|l| l.starts_with("Address") && l.split_whitespace().any(|w| w == ip))
    };
    for (from, name, ip) in [
        ("dns-b", "dns-a", &ip_a),
        ("dns-b", "alpha", &ip_a),
        ("dns-a", "dns-b", &ip_b),
    ] {
        assert!(resolves(from, name, ip), "{from}: {}", lookup(from, name));
    }
    let out = c.docker_via(
        via,
        &["exec", "dns-a", "ping", "-c", "1", "-W", "5", "dns-b"],
    );
    assert!(
        out.status.success(),
        "ping dns-b by name: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let unknown = lookup("dns-b", "no-such-container");
    assert!(
        !unknown.contains(&ip_a) && !unknown.contains(&ip_b),
        "{unknown}"
    );

    // The agent is killed (its containers live on) and restarted: names resolve again.
    c.fault(&["kill", home]);
    c.until("the killed agent Down", || {
        c.nodes_via(via).get(home).is_some_and(|(s, _)| s == "Down")
    });
    c.fault(&["restart", home]);
    let back = c.until("names resolve again after the agent's restart", || {
        resolves("dns-b", "dns-a", &ip_a)
    });
    eprintln!("{home} restarted: names resolve again {back:?} after it was Ready");
    assert!(
        resolves("dns-b", "alpha", &ip_a),
        "{}",
        lookup("dns-b", "alpha")
    );
    assert!(
        resolves("dns-a", "dns-b", &ip_b),
        "{}",
        lookup("dns-a", "dns-b")
    );

    c.ok_via(via, &["rm", "-f", "dns-a", "dns-b"]);
    c.ok_via(via, &["network", "rm", "dnsnet"]);
}

/// The scheduler across hosts, through the stock CLI on the local cluster: affinity to a
/// container (`==` follows it to its agent, `!=` keeps away), a soft constraint no node
/// meets still places (the reason says it was dropped), a hard one is refused naming it,
/// and constraints on engine labels (`wharf node --label`) hold after an operator
/// removes the node label of the same name.
fn affinities_and_constraints_place_across_hosts(c: &Cluster) {
    let agents = ["node-1", "node-2", "node-3"];
    let rack = |a: &str| format!("r{}", &a["node-".len()..]);
    let tar = busybox_tar();
    c.ok_via("ctl-1", &["load", "-i", tar.to_str().unwrap()]);
    // The image is on two agents: those are where containers can go.
    let holders: Vec<&str> = agents
        .iter()
        .copied()
        .filter(|a| {
            let on = format!("constraint:node=={a}");
            c.docker_via("ctl-2", &["run", "--rm", "-e", &on, "busybox", "true"])
                .status
                .success()
        })
        .collect();
    assert_eq!(holders.len(), 2, "{holders:?}");
    let (h1, h2) = (holders[0], holders[1]);
    let node_of = |name: &str| {
        c.ok_via("ctl-3", &["inspect", "-f", "{{.Node.Name}}", name])
            .trim()
            .to_string()
    };
    let reason = |name: &str| {
        c.ok_via(
            "ctl-1",
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.wharf.placement\"}}",
                name,
            ],
        )
    };
    let run = |via: &str, name: &str, exprs: &[&str]| {
        let mut args = vec!["run", "-d", "--name", name];
        for e in exprs {
            args.extend(["-e", e]);
        }
        args.extend(["busybox", "sleep", "1000"]);
        c.docker_via(via, &args)
    };
    let ok = |out: Output| {
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    };

    // affinity:container== follows web to its host, != keeps away from it.
    ok(run(
        "ctl-1",
        "sched-web",
        &[&format!("constraint:node=={h1}")],
    ));
    ok(run(
        "ctl-2",
        "sched-near",
        &["affinity:container==sched-web"],
    ));
    assert_eq!(node_of("sched-near"), h1);
    assert!(reason("sched-near").contains("affinity container==sched-web"));
    ok(run(
        "ctl-3",
        "sched-far",
        &["affinity:container!=sched-web"],
    ));
    assert_eq!(node_of("sched-far"), h2);
    assert!(reason("sched-far").contains("affinity container!=sched-web"));
    // Away from both: the third agent, which lacks the image. Two expressions of the
    // same `KEY!` go in a label: the docker CLI keeps one `-e` per name before the `=`.
    let out = c.docker_via(
        "ctl-1",
        &[
            "run",
            "-d",
            "--name",
            "sched-none",
            "--label",
            "com.wharf.constraint=affinity:container!=sched-web,affinity:container!=sched-far",
            "busybox",
            "true",
        ],
    );
    let err = text(&out.stderr);
    assert!(
        !out.status.success() && err.contains("is not on a node that can take the container"),
        "{err}"
    );

    // A soft constraint no node meets still places; a hard one is refused naming it.
    ok(run("ctl-2", "sched-soft", &["constraint:rack==~r9"]));
    let why = reason("sched-soft");
    assert!(
        why.contains("soft constraint rack==~r9 dropped: no candidate meets it"),
        "{why}"
    );
    let out = run("ctl-3", "sched-hard", &["constraint:rack==r9"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no node meets the constraint rack==r9") && !err.contains("Unable to find"),
        "{err}"
    );
    let out = run(
        "ctl-1",
        "sched-ghost",
        &["affinity:container==sched-ghost-web"],
    );
    assert!(text(&out.stderr).contains("no node meets the affinity container==sched-ghost-web"));

    // Engine labels: `rack` as the agent started with it, also after the operator removes
    // the node label of that name (which then no longer matches).
    let r2 = rack(h2);
    ok(run(
        "ctl-2",
        "sched-rack",
        &[&format!("constraint:rack=={r2}")],
    ));
    assert_eq!(node_of("sched-rack"), h2);
    ok(run(
        "ctl-3",
        "sched-re",
        &[
            "constraint:rack==/^r[0-9]$/",
            &format!("constraint:node!={h1}"),
        ],
    ));
    assert_eq!(node_of("sched-re"), h2);
    c.ok_via("ctl-1", &["node", "update", "--label-rm", "rack", h2]);
    let out = run(
        "ctl-2",
        "sched-gone",
        &[&format!("constraint:node.labels.rack=={r2}")],
    );
    assert!(!out.status.success(), "the node label is gone");
    ok(run(
        "ctl-3",
        "sched-kept",
        &[&format!("constraint:rack=={r2}")],
    ));
    assert_eq!(node_of("sched-kept"), h2);
    c.ok_via(
        "ctl-1",
        &["node", "update", "--label-add", &format!("rack={r2}"), h2],
    );

    c.ok_via(
        "ctl-1",
        &[
            "rm",
            "-f",
            "sched-web",
            "sched-near",
            "sched-far",
            "sched-soft",
            "sched-rack",
            "sched-re",
            "sched-kept",
        ],
    );
    let left = c.ok_via(
        "ctl-2",
        &[
            "ps",
            "-a",
            "--filter",
            "name=sched-",
            "--format",
            "{{.Names}}",
        ],
    );
    assert_eq!(
        left, "",
        "nothing is left; the refused creates made nothing"
    );
}

/// `wharf cluster update` on one controller's host changes how every controller places:
/// with `binpack` two containers go to the same agent, with `spread` to two; a wrong
/// value is refused with the reason and changes nothing.
fn the_strategy_is_a_cluster_setting(c: &Cluster) {
    let update = |host: &str, args: &[&str]| c.cluster_update(host, args);
    let out = update("ctl-2", &["--strategy", "binpack", "--overcommit", "1.5"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("strategy:   binpack") && shown.contains("overcommit: 1.5"),
        "{shown}"
    );
    let out = update("ctl-3", &["--lease", "9"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("shorter than the heartbeat grace"),
        "{}",
        text(&out.stderr)
    );
    let out = update("ctl-1", &[]);
    assert!(
        text(&out.stdout).contains("strategy:   binpack"),
        "read on another controller: {}",
        text(&out.stdout)
    );
    let placed = |names: [&str; 2]| {
        for name in names {
            c.ok_via("ctl-3", &["create", "--name", name, "busybox", "true"]);
        }
        let nodes: Vec<String> = names
            .iter()
            .map(|n| {
                c.ok_via("ctl-1", &["inspect", "-f", "{{.Node.Name}}", n])
                    .trim()
                    .to_string()
            })
            .collect();
        let reason = c.ok_via(
            "ctl-1",
            &[
                "inspect",
                "-f",
                "{{index .Config.Labels \"com.wharf.placement\"}}",
                names[1],
            ],
        );
        c.ok_via("ctl-1", &["rm", names[0], names[1]]);
        (nodes, reason)
    };
    let (nodes, reason) = placed(["pack-1", "pack-2"]);
    assert_eq!(nodes[0], nodes[1], "binpack: one agent ({reason})");
    assert!(reason.starts_with("binpack"), "{reason}");
    let out = update("ctl-1", &["--strategy", "spread", "--overcommit", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, reason) = placed(["spread-1", "spread-2"]);
    assert!(reason.starts_with("spread"), "{reason}");
}

/// The time at the start of a log line of wharf (tracing's, in colour), if it has one.
fn log_time(line: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let plain: String = {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(ch);
            }
        }
        out
    };
    let first = plain.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(first)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn fenced_partition_leaves_no_overlap(c: &Cluster, spare: &str, home: &str) {
    let update = |args: &[&str]| {
        let out = c.cluster_update("ctl-1", args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    update(&["--fencing", "on", "--lease", "2"]);
    let soft = format!("constraint:node==~{spare}");
    let old = c
        .ok_via(
            "ctl-2",
            &[
                "run",
                "-d",
                "--name",
                "fenced",
                "--restart",
                "always",
                "-e",
                &soft,
                "busybox",
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_string();
    assert_eq!(
        c.ok_via("ctl-1", &["inspect", "-f", "{{.Node.Name}}", "fenced"])
            .trim(),
        spare
    );
    let cut = chrono::Utc::now();
    c.fault(&["partition", spare]);
    c.until("the cut-off container running on another node", || {
        c.try_via(
            "ctl-1",
            &[
                "inspect",
                "-f",
                "{{.Node.Name}} {{.State.Running}}",
                "fenced",
            ],
        )
        .trim()
            == format!("{home} true")
    });
    let started = c.ok_via(
        "ctl-1",
        &["inspect", "-f", "{{.State.StartedAt}}", "fenced"],
    );
    let started = chrono::DateTime::parse_from_rfc3339(started.trim())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let log = std::fs::read_to_string(c.dir.join(format!("hosts/{spare}/wharf.log"))).unwrap();
    let stopped = log
        .lines()
        .filter(|l| l.contains("fenced: container stopped") && l.contains(&old[..12]))
        .filter_map(log_time)
        .next_back()
        .unwrap_or_else(|| panic!("{spare} logs no fence of {old}"));
    let overlap = (stopped - started).num_milliseconds();
    eprintln!(
        "{spare} cut off with fencing on: its copy stopped {} ms after the cut, the successor started on {home} {} ms after the cut: overlap {} ms",
        (stopped - cut).num_milliseconds(),
        (started - cut).num_milliseconds(),
        overlap.max(0)
    );
    assert!(overlap <= 0, "the copies overlapped by {overlap} ms");
    c.fault(&["heal"]);
    let old_dir = c.dir.join(format!("hosts/{spare}/data/containers/{old}"));
    c.until("the cut-off copy removed after heal", || !old_dir.exists());
    // Each controller places there again once its own connection is back.
    let on = format!("constraint:node=={spare}");
    c.until("every controller reaches the healed agent", || {
        ["ctl-1", "ctl-2", "ctl-3"].iter().all(|via| {
            c.docker_via(via, &["run", "--rm", "-e", &on, "busybox", "true"])
                .status
                .success()
        })
    });
    update(&["--fencing", "off"]);
    c.ok_via("ctl-1", &["rm", "-f", "fenced"]);
}

/// The time of the last line of host `host`'s log that says `what` of the container whose
/// ID starts with `id12`, not before `after`.
fn logged(
    c: &Cluster,
    host: &str,
    what: &str,
    id12: &str,
    after: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let log = std::fs::read_to_string(c.dir.join(format!("hosts/{host}/wharf.log"))).ok()?;
    log.lines()
        .filter(|l| l.contains(what) && l.contains(id12))
        .filter_map(log_time)
        .rfind(|t| *t >= after)
}

fn killed_daemon_overlaps_until_it_returns(c: &Cluster, spare: &str) {
    let soft = format!("constraint:node==~{spare}");
    let placed = chrono::Utc::now();
    let old = c
        .ok_via(
            "ctl-2",
            &[
                "run",
                "-d",
                "--name",
                "orphaned",
                "--restart",
                "always",
                "-e",
                &soft,
                "busybox",
                "sleep",
                "1000",
            ],
        )
        .trim()
        .to_string();
    let at = c.ok_via(
        "ctl-1",
        &["inspect", "-f", "{{.Node.Name}} {{.State.Pid}}", "orphaned"],
    );
    let (node, pid) = at.trim().split_once(' ').unwrap();
    assert_eq!(node, spare);
    let pid: u32 = pid.parse().unwrap();
    // Its process, in its cgroup under that host's: alive, and still the container's.
    let old_runs = || {
        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|cg| cg.contains(&old))
            && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
                st.rsplit_once(')')
                    .is_some_and(|(_, r)| !r.trim_start().starts_with('Z'))
            })
    };
    assert!(old_runs(), "{old} runs as pid {pid} on {spare}");
    assert!(logged(c, spare, "started", &old[..12], placed).is_some());

    let killed = Instant::now();
    c.fault(&["kill", spare]);
    c.until("the agent whose daemon was killed Down", || {
        c.nodes_via("ctl-3")
            .get(spare)
            .is_some_and(|(s, _)| s == "Down")
    });
    let down = killed.elapsed();
    let mut successor = (String::new(), String::new());
    c.until(
        "its --restart always container running on another node",
        || {
            let out = c.try_via(
                "ctl-1",
                &[
                    "inspect",
                    "-f",
                    "{{.Id}} {{.Node.Name}} {{.State.Running}}",
                    "orphaned",
                ],
            );
            match out.split_whitespace().collect::<Vec<_>>()[..] {
                [id, node, "true"] if id != old && node != spare => {
                    successor = (id.to_string(), node.to_string());
                    true
                }
                _ => false,
            }
        },
    );
    let (new, to) = successor;
    let moved = killed.elapsed();
    let started = logged(c, &to, "started", &new[..12], placed)
        .unwrap_or_else(|| panic!("{to} logs no start of {new}"));
    // Nothing on the host stops the old copy: its shim and process live on.
    let old_dir = c.dir.join(format!("hosts/{spare}/data/containers/{old}"));
    assert!(
        old_runs() && old_dir.is_dir(),
        "the old copy still runs on {spare} beside its successor on {to}"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert!(old_runs(), "the old copy still runs 3 s later");

    let restarted = chrono::Utc::now();
    c.fault(&["restart", spare]);
    let ready = chrono::Utc::now();
    assert!(
        !old_runs() && !old_dir.exists(),
        "the old copy stopped and removed before {spare} shows Ready"
    );
    let stopped = logged(c, spare, "signalled", &old[..12], restarted)
        .unwrap_or_else(|| panic!("{spare} logs no stop of {old} after its restart"));
    let overlap = (stopped - started).num_milliseconds();
    let after_restart = (stopped - restarted).num_milliseconds();
    eprintln!(
        "{spare}'s daemon killed, its container's shim alive: Down after {down:?}, the successor \
         running on {to} {moved:?} after the kill; the old copy stopped {after_restart} ms after \
         `restart` (Ready {} ms after it): overlap {overlap} ms",
        (ready - restarted).num_milliseconds()
    );
    assert!(
        overlap > 0,
        "the copies overlapped while the daemon was away"
    );
    assert!(stopped <= ready, "stopped before {spare} shows Ready");
    assert!(
        after_restart <= BOUND.as_millis() as i64,
        "the old copy stopped within {BOUND:?} of the restart: {after_restart} ms"
    );

    // As the scenarios after this one expect: every controller places there again, and
    // the successor is gone.
    let on = format!("constraint:node=={spare}");
    c.until("every controller reaches the restarted agent", || {
        ["ctl-1", "ctl-2", "ctl-3"].iter().all(|via| {
            c.docker_via(via, &["run", "--rm", "-e", &on, "busybox", "true"])
                .status
                .success()
        })
    });
    c.ok_via("ctl-1", &["rm", "-f", "orphaned"]);
}
