//! The API layer through real clients: the local unix socket and the loopback-only plain
//! listener, `docker events`, `docker ps` filters, `system df`, `container prune`, and
//! hostile or broken HTTP clients (raw requests from `raw_http.py` over mutual TLS), the
//! metrics and a Raft snapshot on request.

mod support;

use std::io::BufRead;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::{busybox_tar, free_port, text, wharf_bin, Wharf};

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

fn load_busybox(w: &Wharf) {
    w.docker_ok(&["load", "-i", busybox_tar().to_str().expect("utf-8 path")]);
}

/// Run a scenario of `raw_http.py` against `w`; panics with its checks on failure.
fn raw(w: &Wharf, scenario: &str, args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/raw_http.py");
    let out: Output = Command::new("python3")
        .arg(script)
        .arg(w.data_dir().join("client"))
        .arg(&w.ip)
        .arg(w.port.to_string())
        .arg(scenario)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "raw_http.py {scenario} failed:\n{}\n{}\n--- wharf log ---\n{}",
        text(&out.stdout),
        text(&out.stderr),
        w.log()
    );
    eprintln!("{}", text(&out.stdout));
}

/// A Unix time two seconds ahead, for `docker events --until`: the CLI sends whole
/// seconds, so `--until 0s` would leave out the events of the current second.
fn soon() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    (now.as_secs() + 2).to_string()
}

fn open_fds(w: &Wharf) -> usize {
    let pid = w.child.as_ref().expect("running").id();
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn unix_socket_and_loopback_plain_listener_serve_the_same_api() {
    let plain = free_port();
    let mut w = Wharf::start_with(&["--insecure-api-addr", &format!("127.0.0.1:{plain}")]);
    let sock = w.socket_path();
    let meta = std::fs::metadata(&sock).expect("socket exists");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o660, "socket mode");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "socket owner");

    // The stock CLI over the unix socket, no TLS: load, run (attach + wait), ps.
    let unix = |args: &[&str]| -> Output {
        let out = w.docker_unix_cmd().args(args).output().expect("docker");
        eprintln!(
            "$ docker(unix) {args:?}\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    };
    let v = unix(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(text(&v.stdout).trim(), "1.50", "{}", text(&v.stderr));
    let tar = busybox_tar();
    assert!(unix(&["load", "-i", tar.to_str().expect("utf-8")])
        .status
        .success());
    let run = unix(&["run", "--rm", "busybox", "echo", "via-unix"]);
    assert_eq!(text(&run.stdout), "via-unix\n", "{}", text(&run.stderr));
    assert!(
        unix(&["run", "-d", "--name", "u1", "busybox", "sleep", "60"])
            .status
            .success()
    );
    // The TLS listener sees the same state.
    assert_eq!(w.docker_ok(&["ps", "--format", "{{.Names}}"]).trim(), "u1");

    // Plain TCP on loopback: the same API without TLS.
    let out = Command::new("docker")
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{plain}"))
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("DOCKER_CONFIG", w.dir.path().join("docker-config"))
        .args(["ps", "--format", "{{.Names}}"])
        .output()
        .expect("docker");
    assert_eq!(text(&out.stdout).trim(), "u1", "{}", text(&out.stderr));
    // The TLS port never answers plain HTTP.
    let curl = Command::new("curl")
        .args(["-sS", "-m", "5"])
        .arg(format!("http://127.0.0.1:{}/_ping", w.port))
        .output()
        .expect("curl");
    assert_ne!(text(&curl.stdout), "OK");

    // A live socket is not taken over by another instance.
    let other = tempfile::Builder::new()
        .prefix("wharf-test-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let second = Command::new(wharf_bin())
        .args(["up", "--data-dir"])
        .arg(other.path().join("data"))
        .args(["--api-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--unix-socket")
        .arg(&sock)
        .output()
        .expect("second wharf");
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("in use by another process"),
        "{}",
        text(&second.stderr)
    );
    assert!(sock.exists(), "the live socket was removed");

    let out = w.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!sock.exists(), "wharf down left the socket behind");
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn plain_listener_off_loopback_is_refused_with_the_reason() {
    let dir = tempfile::Builder::new()
        .prefix("wharf-test-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    for addr in ["0.0.0.0:2375", "[::]:2375", "192.0.2.1:2375"] {
        let out = Command::new(wharf_bin())
            .args(["up", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--api-addr", &format!("127.0.0.1:{}", free_port())])
            .arg("--unix-socket")
            .arg(dir.path().join("docker.sock"))
            .args(["--insecure-api-addr", addr])
            .output()
            .expect("wharf up");
        assert_eq!(out.status.code(), Some(1));
        let err = text(&out.stderr);
        assert!(
            err.contains("not a loopback address") && err.contains("root on every host"),
            "{addr}: {err}"
        );
        assert!(!dir.path().join("docker.sock").exists());
        assert!(
            !dir.path().join("data").exists(),
            "refused before touching DATA_DIR"
        );
    }
}

#[test]
fn docker_events_stream_and_replay_with_filters() {
    let mut w = Wharf::start();
    load_busybox(&w);

    // Live: a subscriber started before the container sees its whole life.
    let mut live = w
        .docker_cmd()
        .args(["events", "--filter", "container=ev-live", "--format"])
        .arg("{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.image}}")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker events");
    let stdout = live.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(stdout).lines() {
            let Ok(l) = l else { return };
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    // Wait until the subscription is registered.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w
        .docker_ok(&["info", "--format", "{{.NEventsListener}}"])
        .trim()
        != "1"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "events listener never registered"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    w.docker_ok(&["run", "-d", "--name", "ev-live", "busybox", "sleep", "60"]);
    w.docker_ok(&["kill", "ev-live"]);
    w.docker_ok(&["wait", "ev-live"]);
    w.docker_ok(&["rm", "ev-live"]);
    let mut seen = vec![];
    while !seen.iter().any(|l: &String| l.contains(" destroy ")) {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => seen.push(l),
            Err(_) => break,
        }
    }
    let _ = live.kill();
    let _ = live.wait();
    // The subscriber's task ends with its connection.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while w
        .docker_ok(&["info", "--format", "{{.NEventsListener}}"])
        .trim()
        != "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "events listener outlived its client"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let actions: Vec<&str> = seen
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        ["create", "start", "kill", "die", "destroy"],
        "{seen:#?}"
    );
    assert!(
        seen.iter()
            .all(|l| l.starts_with("container ") && l.ends_with(" ev-live busybox")),
        "{seen:#?}"
    );

    // Replay with --since, type filter, exit code.
    w.docker_ok(&[
        "run", "-d", "--name", "ev-a", "--label", "tier=web", "busybox", "sh", "-c", "exit 3",
    ]);
    assert_eq!(w.docker_ok(&["wait", "ev-a"]).trim(), "3");
    w.docker_ok(&["rm", "ev-a"]);
    let fmt = "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}";
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "type=container",
        "--filter",
        "container=ev-a",
        "--format",
        fmt,
    ]);
    assert_eq!(
        lines(&out),
        [
            "container create ev-a <no value>",
            "container start ev-a <no value>",
            "container die ev-a 3",
            "container destroy ev-a <no value>",
        ],
        "{out}"
    );
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "event=die",
        "--format",
        fmt,
    ]);
    assert_eq!(lines(&out).len(), 2, "{out}");
    assert!(
        out.lines().all(|l| l.starts_with("container die ")),
        "{out}"
    );
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "label=tier=web",
        "--format",
        fmt,
    ]);
    assert_eq!(lines(&out).len(), 4, "{out}");
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "type=image",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ]);
    assert!(
        out.lines().any(|l| l.starts_with("image load sha256:")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "image tag busybox:latest"),
        "{out}"
    );

    // Volume events, and the attach of a foreground run.
    w.docker_ok(&["volume", "create", "ev-vol"]);
    w.docker_ok(&["volume", "rm", "ev-vol"]);
    w.docker_ok(&["run", "--rm", "--name", "ev-att", "busybox", "true"]);
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "type=volume",
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.driver}}",
    ]);
    assert!(
        out.lines().any(|l| l == "volume create ev-vol local"),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l == "volume destroy ev-vol local"),
        "{out}"
    );
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "container=ev-att",
        "--format",
        "{{.Action}}",
    ]);
    let actions: Vec<&str> = out.lines().collect();
    assert_eq!(
        actions,
        ["create", "attach", "start", "die", "destroy"],
        "{out}"
    );

    // Docker's JSON fields, as SDKs read them.
    let out = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "event=create",
        "--format",
        "{{json .}}",
    ]);
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("an event")).expect("json");
    assert_eq!(first["Type"], "container");
    assert_eq!(first["Action"], "create");
    assert_eq!(first["scope"], "local");
    assert_eq!(first["Actor"]["Attributes"]["name"], "ev-live");
    assert_eq!(first["Actor"]["ID"].as_str().map(str::len), Some(64));
    let (t, tn) = (first["time"].as_i64(), first["timeNano"].as_i64());
    assert_eq!(t, tn.map(|n| n / 1_000_000_000), "{first}");

    // Nothing happened in the future; an `until` before `since` is refused.
    let later = (soon().parse::<u64>().expect("a number") + 1).to_string();
    let out = w.docker_ok(&["events", "--since", &soon(), "--until", &later]);
    assert_eq!(out, "");
    let bad = w.docker(&["events", "--since", &later, "--until", "1m"]);
    assert!(
        text(&bad.stderr).contains("cannot be after"),
        "{}",
        text(&bad.stderr)
    );
    let bad = w.docker(&["events", "--filter", "colour=red"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).contains("invalid filter 'colour'"),
        "{}",
        text(&bad.stderr)
    );

    assert!(w.down().status.success());
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn ps_filters_system_df_and_container_prune() {
    let mut w = Wharf::start();
    load_busybox(&w);
    let web = w.docker_ok(&[
        "run", "-d", "--name", "ps-web", "--label", "app=web", "busybox", "sleep", "300",
    ]);
    let web = web.trim().to_string();
    w.docker_ok(&["run", "--name", "ps-ok", "busybox", "true"]);
    assert_eq!(
        w.docker(&["run", "--name", "ps-bad", "busybox", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    w.docker_ok(&["create", "--name", "ps-new", "busybox", "true"]);

    let names = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["ps"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["--format", "{{.Names}}"]);
        let mut v = lines(&w.docker_ok(&a));
        v.sort();
        v
    };
    assert_eq!(names(&[]), ["ps-web"]);
    assert_eq!(names(&["-a"]).len(), 4);
    assert_eq!(
        names(&["-a", "--filter", "status=exited"]),
        ["ps-bad", "ps-ok"]
    );
    assert_eq!(names(&["--filter", "status=created"]), ["ps-new"]);
    assert_eq!(names(&["-a", "--filter", "status=running"]), ["ps-web"]);
    assert_eq!(names(&["-a", "--filter", "name=ps-w"]), ["ps-web"]);
    assert_eq!(
        names(&["-a", "--filter", "name=^ps-(ok|bad)$"]),
        ["ps-bad", "ps-ok"]
    );
    assert_eq!(names(&["-a", "--filter", "label=app=web"]), ["ps-web"]);
    assert_eq!(
        names(&["-a", "--filter", "label=app=db"]),
        Vec::<String>::new()
    );
    assert_eq!(names(&["-a", "--filter", "exited=3"]), ["ps-bad"]);
    assert_eq!(names(&["-a", "--filter", "exited=0"]), ["ps-ok"]);
    assert_eq!(names(&["-a", "--filter", "ancestor=busybox"]).len(), 4);
    assert_eq!(
        names(&["-a", "--filter", "ancestor=nope"]),
        Vec::<String>::new()
    );
    assert_eq!(
        names(&["-a", "--filter", &format!("id={}", &web[..8])]),
        ["ps-web"]
    );
    assert_eq!(
        names(&[
            "-a",
            "--filter",
            "status=exited",
            "--filter",
            "status=created"
        ]),
        ["ps-bad", "ps-new", "ps-ok"]
    );
    assert_eq!(
        w.docker_ok(&["ps", "-q", "--filter", "label=app"]).trim(),
        &web[..12]
    );
    assert_eq!(lines(&w.docker_ok(&["ps", "-aq"])).len(), 4);
    let row = w.docker_ok(&[
        "ps",
        "-a",
        "--filter",
        "name=ps-bad",
        "--format",
        "{{.Image}}|{{.Status}}|{{.Command}}",
    ]);
    assert!(row.starts_with("busybox|Exited (3) "), "{row}");
    let bad = w.docker(&["ps", "--filter", "status=sleeping"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).contains("invalid filter 'status=sleeping'"),
        "{}",
        text(&bad.stderr)
    );

    w.docker_ok(&["volume", "create", "ps-vol"]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ps-volc",
        "-v",
        "ps-vol:/data",
        "busybox",
        "sleep",
        "300",
    ]);
    assert_eq!(names(&["--filter", "volume=ps-vol"]), ["ps-volc"]);
    assert_eq!(names(&["--filter", "volume=/data"]), ["ps-volc"]);
    assert_eq!(
        names(&["-a", "--filter", "volume=other"]),
        Vec::<String>::new()
    );
    w.docker_ok(&["rm", "-f", "ps-volc"]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ps-health",
        "--health-cmd",
        "true",
        "--health-interval",
        "1s",
        "busybox",
        "sleep",
        "300",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while names(&["--filter", "health=healthy"]) != ["ps-health"] {
        assert!(std::time::Instant::now() < deadline, "never healthy");
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(names(&["--filter", "health=none"]), ["ps-web"]);
    assert_eq!(
        names(&["--filter", "health=unhealthy"]),
        Vec::<String>::new()
    );
    w.docker_ok(&["rm", "-f", "ps-health"]);
    // system df: one image used by four containers, one of them running; one unused volume.
    let df = w.docker_ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}}|{{.TotalCount}}|{{.Active}}",
    ]);
    let df = lines(&df);
    assert!(df.contains(&"Images|1|1".to_string()), "{df:?}");
    assert!(df.contains(&"Containers|4|1".to_string()), "{df:?}");
    assert!(df.contains(&"Local Volumes|1|0".to_string()), "{df:?}");
    let plain = w.docker_ok(&["system", "df"]);
    assert!(plain.starts_with("TYPE "), "{plain}");

    // Prune: a label filter that matches only the running one removes nothing.
    let none = w.docker_ok(&["container", "prune", "-f", "--filter", "label=app=web"]);
    assert!(none.contains("Total reclaimed space"), "{none}");
    assert_eq!(names(&["-a"]).len(), 4);
    let pruned = w.docker_ok(&["container", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Containers:\n"), "{pruned}");
    assert_eq!(
        pruned.lines().filter(|l| l.len() == 64).count(),
        3,
        "{pruned}"
    );
    assert_eq!(names(&["-a"]), ["ps-web"]);
    let destroyed = w.docker_ok(&[
        "events",
        "--since",
        "1m",
        "--until",
        &soon(),
        "--filter",
        "event=destroy",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    let mut destroyed = lines(&destroyed);
    destroyed.sort();
    assert_eq!(
        destroyed,
        ["ps-bad", "ps-health", "ps-new", "ps-ok", "ps-volc"]
    );

    assert!(w.down().status.success());
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn malformed_requests_are_refused_and_the_daemon_keeps_serving() {
    let mut w = Wharf::start();
    raw(&w, "bad_input", &[]);
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "");
    let v = w.docker_ok(&["version", "--format", "{{.Server.APIVersion}}"]);
    assert_eq!(v.trim(), "1.50");
    // The prefix forms the CLI and SDKs use are all served.
    for prefix in ["", "/v1.24", "/v1.44", "/v1.50"] {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(w.data_dir().join("client/ca.pem"))
            .arg("--cert")
            .arg(w.data_dir().join("client/cert.pem"))
            .arg("--key")
            .arg(w.data_dir().join("client/key.pem"))
            .arg(format!("https://127.0.0.1:{}{prefix}/_ping", w.port))
            .output()
            .expect("curl");
        assert_eq!(text(&out.stdout), "OK", "{prefix}");
    }
    assert!(w.down().status.success());
}

#[test]
fn stream_headers_come_first_and_dropped_clients_leak_nothing() {
    let mut w = Wharf::start();
    load_busybox(&w);
    let id = w.docker_ok(&[
        "create",
        "--name",
        "hf",
        "busybox",
        "sh",
        "-c",
        "echo hello; exit 7",
    ]);
    raw(&w, "headers_first", &[id.trim()]);

    let id = w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "dropper",
        "busybox",
        "sh",
        "-c",
        "while true; do echo x; sleep 0.2; done",
    ]);
    // Connections settle (keep-alive ones of the CLI close) before counting.
    std::thread::sleep(Duration::from_secs(1));
    let before = open_fds(&w);
    raw(&w, "drop", &[id.trim()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_fds(&w) > before + 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        open_fds(&w) <= before + 2,
        "file descriptors grew from {before} to {}",
        open_fds(&w)
    );
    let ps = w.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.lines().any(|l| l.starts_with("dropper Up")), "{ps}");
    let logs = w.docker_ok(&["logs", "--tail", "1", "dropper"]);
    assert_eq!(logs, "x\n");
    let run = w.docker(&["run", "--rm", "busybox", "echo", "still-fine"]);
    assert_eq!(text(&run.stdout), "still-fine\n");
    assert!(w.down().status.success());
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn slow_and_idle_connections_are_closed_while_others_are_served() {
    let mut w = Wharf::start();
    raw(&w, "slow", &[]);
    assert!(w.down().status.success());
}

#[test]
fn docker_port_reports_no_published_ports_on_the_none_network() {
    let mut w = Wharf::start();
    load_busybox(&w);
    w.docker_ok(&["run", "-d", "--name", "porty", "busybox", "sleep", "60"]);
    assert_eq!(w.docker_ok(&["port", "porty"]), "");
    let one = w.docker(&["port", "porty", "80"]);
    assert_ne!(one.status.code(), Some(0));
    assert!(
        text(&one.stderr).contains("No public port '80' published for porty"),
        "{}",
        text(&one.stderr)
    );
    let missing = w.docker(&["port", "nope"]);
    assert!(
        text(&missing.stderr).contains("No such container: nope"),
        "{}",
        text(&missing.stderr)
    );
    w.docker_ok(&["rm", "-f", "porty"]);
    let out = w.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

/// `GET /metrics` (Prometheus text) over the unix socket, read with curl: the Raft
/// counters and the containers by status follow what the CLI does; concurrent creates
/// share log entries and fsyncs (group commit).
#[test]
fn metrics_follow_the_state_and_show_group_commit() {
    let w = Wharf::start();
    load_busybox(&w);
    let metrics = || -> std::collections::BTreeMap<String, u64> {
        let out = Command::new("curl")
            .args(["-sS", "-m", "5", "--unix-socket"])
            .arg(w.socket_path())
            .arg("http://localhost/metrics")
            .output()
            .expect("curl");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (name, value) = l.rsplit_once(' ').expect("a sample line");
                (name.to_string(), value.parse().expect("a count"))
            })
            .collect()
    };
    let before = metrics();
    assert_eq!(before["wharf_containers{status=\"created\"}"], 0);
    assert!(before["wharf_images"] >= 1);
    let names: Vec<String> = (0..16).map(|n| format!("m{n}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            let w = &w;
            s.spawn(move || w.docker_ok(&["create", "--name", name, "busybox", "true"]));
        }
    });
    let after = metrics();
    assert_eq!(after["wharf_containers{status=\"created\"}"], 16);
    let proposed = after["wharf_raft_proposals_total"] - before["wharf_raft_proposals_total"];
    let entries = after["wharf_raft_log_entries_total"] - before["wharf_raft_log_entries_total"];
    let fsyncs = after["wharf_raft_synced_writes_total"] - before["wharf_raft_synced_writes_total"];
    eprintln!("16 concurrent creates: {proposed} proposals in {entries} entries, {fsyncs} fsyncs");
    assert!(proposed >= 16, "every create is proposed");
    assert!(
        entries <= proposed && fsyncs <= entries + 1,
        "{entries} entries, {fsyncs} fsyncs"
    );
    assert!(after["wharf_raft_last_applied_index"] > before["wharf_raft_last_applied_index"]);
}

/// `POST /wharf/raft/snapshot` over the unix socket, with curl: the controller builds a
/// snapshot of everything applied and answers its index, size and build time; the file is
/// in the data dir's `raft/snapshots/`, and `/metrics` shows the same snapshot.
#[test]
fn a_snapshot_is_built_on_request_and_shown_in_the_metrics() {
    let w = Wharf::start();
    w.docker_ok(&["volume", "create", "snapvol"]);
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args(["-sS", "-m", "60", "--unix-socket"])
            .arg(w.socket_path())
            .args(args)
            .output()
            .expect("curl");
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let post = || -> serde_json::Value {
        let body = curl(&["-X", "POST", "http://localhost/wharf/raft/snapshot"]);
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    let first = post();
    let index = first["index"].as_u64().expect("an index");
    let bytes = first["bytes"].as_u64().expect("a size");
    assert!(index > 0 && bytes > 1, "{first}");
    assert!(first["millis"].is_u64(), "{first}");
    let files: Vec<_> = std::fs::read_dir(w.data_dir().join("raft/snapshots"))
        .expect("the snapshot directory")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(std::fs::metadata(&files[0]).expect("stat").len(), bytes);

    w.docker_ok(&["volume", "create", "snapvol2"]);
    let second = post();
    assert!(
        second["index"].as_u64() > Some(index),
        "{first} then {second}"
    );
    let metrics = curl(&["http://localhost/metrics"]);
    for line in [
        format!("wharf_raft_snapshot_index {}", second["index"]),
        format!("wharf_raft_snapshot_bytes {}", second["bytes"]),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    let built = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wharf_raft_snapshots_built_total "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(built >= Some(2), "{metrics}");
}
