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
        Cluster::up_with("wct", &["node-3:disk=ssd"])
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
    let started = Instant::now();
    c.fault(&["restart", home]);
    eprintln!("{home} restarted: Ready after {:?}", started.elapsed());
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

    // docker node rm of a Down node: its certificate no longer admits it.
    let spare = agents.iter().copied().find(|a| *a != home).unwrap();
    c.fault(&["poweroff", spare]);
    c.until("the powered-off agent Down", || {
        c.nodes_via("ctl-2")
            .get(spare)
            .is_some_and(|(s, _)| s == "Down")
    });
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

/// The scheduler across hosts, through the stock CLI on the local cluster: affinity to a
/// container (`==` follows it to its agent, `!=` keeps away), a soft constraint no node
/// meets still places (the reason says it was dropped), a hard one is refused naming it,
/// and constraints on engine labels (`wharf node --label`) hold after an operator
/// removes the node label of the same name.
#[test]
fn affinities_and_constraints_place_across_hosts() {
    if std::env::var("WHARF_AGENT_TRANSPORT").as_deref() == Ok("unix") {
        eprintln!("skipped: the agent transport setting is wharf up's");
        return;
    }
    let agents = ["node-1", "node-2", "node-3"];
    let rack = |a: &str| format!("r{}", &a["node-".len()..]);
    let c = Cluster::up_with(
        "wcs",
        &["node-1:rack=r1", "node-2:rack=r2", "node-3:rack=r3"],
    );
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
