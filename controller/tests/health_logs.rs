//! Healthchecks and logs through the stock `docker` CLI against `wharf up`:
//! `--health-*` and the image's `HEALTHCHECK` (run by the shim, shown by `docker ps` and
//! inspect, kept across a wharf restart), `health_status` events, and `docker logs` with
//! `--tail`, `--since`, `--until`, `-t`, `-f` and json-file rotation (`--log-opt`).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{busybox_tar, eventually, inspect, loaded, text, Wharf};

fn health(w: &Wharf, name: &str) -> serde_json::Value {
    serde_json::from_str(&inspect(w, "{{json .State.Health}}", name)).expect("health json")
}

fn ps_status(w: &Wharf, name: &str) -> String {
    w.docker_ok(&[
        "ps",
        "-a",
        "--filter",
        &format!("name=^{name}$"),
        "--format",
        "{{.Status}}",
    ])
    .trim()
    .to_string()
}

/// Rewrites the busybox `docker save` archive into `<tag>` whose image config carries
/// `config.Healthcheck` = argv[4] (config, OCI manifest, index and manifest.json redone).
const ADD_HEALTHCHECK: &str = r#"
import tarfile, json, hashlib, sys, io
src, dst, tag, hc = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
t = tarfile.open(src)
files = {m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}
manifest = json.loads(files['manifest.json'])
cfg_name = manifest[0]['Config']
cfg = json.loads(files.pop(cfg_name))
cfg.setdefault('config', {})['Healthcheck'] = hc
new_cfg = json.dumps(cfg).encode()
h = hashlib.sha256(new_cfg).hexdigest()
files['blobs/sha256/' + h] = new_cfg
manifest[0]['Config'] = 'blobs/sha256/' + h
manifest[0]['RepoTags'] = [tag]
files['manifest.json'] = json.dumps(manifest).encode()
idx = json.loads(files['index.json'])
for d in idx['manifests']:
    m = json.loads(files.pop('blobs/sha256/' + d['digest'].split(':')[1]))
    m['config']['digest'] = 'sha256:' + h
    m['config']['size'] = len(new_cfg)
    nm = json.dumps(m).encode()
    nh = hashlib.sha256(nm).hexdigest()
    files['blobs/sha256/' + nh] = nm
    d['digest'] = 'sha256:' + nh
    d['size'] = len(nm)
    d['annotations'] = {'io.containerd.image.name': 'docker.io/library/' + tag,
                        'org.opencontainers.image.ref.name': tag.split(':')[1]}
files['index.json'] = json.dumps(idx).encode()
repo, tg = tag.split(':')
layer = manifest[0]['Layers'][-1].split('/')[-1]
files['repositories'] = json.dumps({repo: {tg: layer}}).encode()
with tarfile.open(dst, 'w') as out:
    for name in sorted(files):
        info = tarfile.TarInfo(name)
        info.size = len(files[name])
        info.mtime = 1704067200
        out.addfile(info, io.BytesIO(files[name]))
"#;

#[test]
fn health_cmd_states_show_in_ps_and_inspect() {
    let w = loaded();
    // Healthy: `(health: starting)` until the first check passes, then `(healthy)`.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hc-ok",
        "--health-cmd",
        "echo checked",
        "--health-interval",
        "2s",
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(inspect(&w, "{{.State.Health.Status}}", "hc-ok"), "starting");
    let status = ps_status(&w, "hc-ok");
    assert!(status.ends_with("(health: starting)"), "{status}");
    assert!(
        eventually(20, || inspect(&w, "{{.State.Health.Status}}", "hc-ok")
            == "healthy"),
        "{}",
        w.log()
    );
    let status = ps_status(&w, "hc-ok");
    assert!(
        status.starts_with("Up ") && status.ends_with("(healthy)"),
        "{status}"
    );
    let h = health(&w, "hc-ok");
    assert_eq!(h["FailingStreak"], 0);
    let log = h["Log"].as_array().expect("Log");
    assert!(!log.is_empty());
    assert_eq!(log[0]["ExitCode"], 0);
    assert_eq!(log[0]["Output"], "checked\n");
    assert!(log[0]["Start"].as_str().unwrap_or("").ends_with('Z'));
    // The container's Config shows the check as Docker stores it.
    assert_eq!(
        inspect(&w, "{{json .Config.Healthcheck.Test}}", "hc-ok"),
        r#"["CMD-SHELL","echo checked"]"#
    );
    // Docker's event for the change (the engine notices it within a second).
    let health_events = || {
        let until = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        w.docker_ok(&[
            "events",
            "--since",
            "0",
            "--until",
            &until.to_string(),
            "--filter",
            "container=hc-ok",
            "--format",
            "{{.Action}}",
        ])
    };
    assert!(
        eventually(10, || health_events()
            .lines()
            .any(|l| l == "health_status: healthy")),
        "{}",
        health_events()
    );

    // Unhealthy after --health-retries failures; the output of the check is kept.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hc-bad",
        "--health-cmd",
        "echo oops; exit 3",
        "--health-interval",
        "1s",
        "--health-retries",
        "2",
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(
        eventually(20, || inspect(&w, "{{.State.Health.Status}}", "hc-bad")
            == "unhealthy"),
        "{}",
        w.log()
    );
    let h = health(&w, "hc-bad");
    assert!(h["FailingStreak"].as_u64().unwrap_or(0) >= 2, "{h}");
    let last = h["Log"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .expect("a result");
    assert_eq!(last["ExitCode"], 3, "the check's own exit code, as Docker");
    assert_eq!(last["Output"], "oops\n");
    assert!(ps_status(&w, "hc-bad").ends_with("(unhealthy)"));

    // A check that runs past --health-timeout is killed and fails.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hc-slow",
        "--health-cmd",
        "sleep 30",
        "--health-interval",
        "1s",
        "--health-timeout",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(eventually(20, || inspect(
        &w,
        "{{.State.Health.Status}}",
        "hc-slow"
    ) == "unhealthy"));
    let h = health(&w, "hc-slow");
    let last = h["Log"]
        .as_array()
        .and_then(|l| l.last())
        .cloned()
        .expect("a result");
    assert_eq!(last["ExitCode"], -1);
    assert_eq!(last["Output"], "Health check exceeded timeout (1s)");

    // Failures inside the start period do not count.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hc-start",
        "--health-cmd",
        "exit 1",
        "--health-interval",
        "1s",
        "--health-start-period",
        "60s",
        "--health-start-interval",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(eventually(20, || health(&w, "hc-start")["Log"]
        .as_array()
        .is_some_and(|l| l.len() >= 2)));
    let h = health(&w, "hc-start");
    assert_eq!(h["Status"], "starting", "{h}");
    assert_eq!(h["FailingStreak"], 0, "{h}");

    // Without a healthcheck there is no Health, and ps shows no suffix.
    w.docker_ok(&["run", "-d", "--name", "hc-none", "busybox", "sleep", "60"]);
    assert_eq!(inspect(&w, "{{.State.Health}}", "hc-none"), "<nil>");
    let status = ps_status(&w, "hc-none");
    assert!(!status.contains('('), "{status}");

    // docker ps --filter health=…
    let names = |h: &str| {
        let out = w.docker_ok(&[
            "ps",
            "--filter",
            &format!("health={h}"),
            "--format",
            "{{.Names}}",
        ]);
        let mut v: Vec<String> = out.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(names("healthy"), ["hc-ok"]);
    assert_eq!(names("unhealthy"), ["hc-bad", "hc-slow"]);
    assert_eq!(names("starting"), ["hc-start"]);
    assert_eq!(names("none"), ["hc-none"]);
    let bad = w.docker(&["ps", "--filter", "health=fine"]);
    assert_ne!(bad.status.code(), Some(0));
    assert!(
        text(&bad.stderr).contains("invalid filter 'health=fine'"),
        "{}",
        text(&bad.stderr)
    );

    // Bad input: Docker's minimum duration.
    let bad = w.docker(&[
        "run",
        "-d",
        "--name",
        "hc-tiny",
        "--health-cmd",
        "true",
        "--health-interval",
        "500us",
        "busybox",
        "true",
    ]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(
        text(&bad.stderr).contains("Interval in Healthcheck cannot be less than 1ms"),
        "{}",
        text(&bad.stderr)
    );
    assert!(w.docker(&["inspect", "hc-tiny"]).status.code() != Some(0));

    // A stopped container's health stays as it was last seen.
    w.docker_ok(&["rm", "-f", "hc-bad", "hc-slow", "hc-start", "hc-none"]);
    w.docker_ok(&["stop", "-t", "0", "hc-ok"]);
    let status = ps_status(&w, "hc-ok");
    assert!(
        status.starts_with("Exited") && !status.contains("health"),
        "{status}"
    );
    assert_eq!(inspect(&w, "{{.State.Health.Status}}", "hc-ok"), "healthy");
    w.docker_ok(&["rm", "hc-ok"]);
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "");
}

#[test]
fn image_healthcheck_is_used_merged_and_disabled() {
    let w = loaded();
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("hcbox.tar");
    let hc = r#"{"Test":["CMD-SHELL","echo from-image"],"Interval":1000000000,"Retries":1}"#;
    let made = Command::new("python3")
        .args(["-c", ADD_HEALTHCHECK])
        .arg(busybox_tar())
        .arg(&out)
        .args(["hcbox:latest", hc])
        .output()
        .expect("python3");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let loaded = w.docker_ok(&["load", "-i", out.to_str().expect("utf-8 path")]);
    assert!(loaded.contains("hcbox:latest"), "{loaded}");
    assert_eq!(
        w.docker_ok(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Healthcheck.Test}}",
            "hcbox"
        ])
        .trim(),
        r#"["CMD-SHELL","echo from-image"]"#
    );

    // The image's check runs as is.
    w.docker_ok(&["run", "-d", "--name", "img-hc", "hcbox", "sleep", "60"]);
    assert!(
        eventually(20, || inspect(&w, "{{.State.Health.Status}}", "img-hc")
            == "healthy"),
        "{}",
        w.log()
    );
    let h = health(&w, "img-hc");
    assert_eq!(h["Log"][0]["Output"], "from-image\n");

    // --health-cmd replaces the test but keeps the image's interval and retries.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "img-over",
        "--health-cmd",
        "exit 1",
        "hcbox",
        "sleep",
        "60",
    ]);
    assert!(eventually(20, || inspect(
        &w,
        "{{.State.Health.Status}}",
        "img-over"
    ) == "unhealthy"));
    assert_eq!(
        inspect(&w, "{{.Config.Healthcheck.Interval}}", "img-over"),
        "1s"
    );

    // --no-healthcheck disables the image's.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "img-off",
        "--no-healthcheck",
        "hcbox",
        "sleep",
        "60",
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(inspect(&w, "{{.State.Health}}", "img-off"), "<nil>");
    assert_eq!(
        inspect(&w, "{{json .Config.Healthcheck.Test}}", "img-off"),
        r#"["NONE"]"#
    );
    assert!(!ps_status(&w, "img-off").contains('('));
    w.docker_ok(&["rm", "-f", "img-hc", "img-over", "img-off"]);
}

#[test]
fn health_checks_continue_across_a_wharf_restart() {
    let mut w = loaded();
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hc-live",
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "120",
    ]);
    assert!(eventually(20, || inspect(
        &w,
        "{{.State.Health.Status}}",
        "hc-live"
    ) == "unhealthy"));
    // SIGKILL the engine: the shim keeps the container and its checks.
    let mut child = w.child.take().expect("wharf runs");
    child.kill().expect("SIGKILL wharf");
    let _ = child.wait();
    w.spawn();
    assert_eq!(
        inspect(&w, "{{.State.Health.Status}}", "hc-live"),
        "unhealthy"
    );
    w.docker_ok(&["exec", "hc-live", "touch", "/tmp/ok"]);
    assert!(
        eventually(20, || inspect(&w, "{{.State.Health.Status}}", "hc-live")
            == "healthy"),
        "{}",
        w.log()
    );
    assert!(ps_status(&w, "hc-live").ends_with("(healthy)"));
    // A restart starts over from `starting` but keeps the results, as Docker does.
    let before = health(&w, "hc-live")["Log"].as_array().map_or(0, Vec::len);
    assert!(before > 0);
    w.docker_ok(&["restart", "-t", "0", "hc-live"]);
    let h = health(&w, "hc-live");
    assert!(h["Log"].as_array().map_or(0, Vec::len) >= before, "{h}");
    assert!(
        eventually(20, || inspect(&w, "{{.State.Health.Status}}", "hc-live")
            == "healthy"),
        "{}",
        w.log()
    );
    w.docker_ok(&["rm", "-f", "hc-live"]);
}

/// `docker logs` lines of `name` with extra flags.
fn logs(w: &Wharf, name: &str, flags: &[&str]) -> String {
    let mut args = vec!["logs"];
    args.extend_from_slice(flags);
    args.push(name);
    let out = w.docker(&args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn logs_tail_since_until_timestamps_and_follow() {
    let w = loaded();
    w.docker_ok(&[
        "run",
        "--name",
        "lg",
        "busybox",
        "sh",
        "-c",
        "echo one; echo two; echo three; sleep 2; echo four",
    ]);
    assert_eq!(logs(&w, "lg", &[]), "one\ntwo\nthree\nfour\n");
    assert_eq!(logs(&w, "lg", &["--tail", "2"]), "three\nfour\n");
    assert_eq!(logs(&w, "lg", &["--tail", "0"]), "");

    // -t: RFC 3339 nano timestamps in front of each line.
    let stamped = logs(&w, "lg", &["-t"]);
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = stamped
        .lines()
        .map(|l| {
            let (t, rest) = l.split_once(' ').expect("timestamp and text");
            assert!(t.ends_with('Z'), "{l}");
            assert!(["one", "two", "three", "four"].contains(&rest), "{l}");
            chrono::DateTime::parse_from_rfc3339(t).expect("rfc3339")
        })
        .collect();
    assert_eq!(times.len(), 4);
    // --since / --until around the pause.
    let mid = times[2] + chrono::Duration::milliseconds(1000);
    let mid = format!("{}.{:09}", mid.timestamp(), mid.timestamp_subsec_nanos());
    assert_eq!(logs(&w, "lg", &["--since", &mid]), "four\n");
    assert_eq!(logs(&w, "lg", &["--until", &mid]), "one\ntwo\nthree\n");
    assert_eq!(
        logs(&w, "lg", &["--since", &mid, "--tail", "1", "-t"])
            .split_once(' ')
            .map(|(_, t)| t.to_string()),
        Some("four\n".to_string())
    );

    // -f on a container that ends: returns when it exits, with everything.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "lg-f",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3; do echo f$i; sleep 1; done",
    ]);
    let out = w.docker(&["logs", "-f", "lg-f"]);
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "f1\nf2\nf3\n");

    // -f on a running container: lines arrive as written; the CLI is killed after.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "lg-run",
        "busybox",
        "sh",
        "-c",
        "echo a; sleep 1; echo b >&2; sleep 1; echo c; sleep 60",
    ]);
    let mut cli = w
        .docker_cmd()
        .args(["logs", "-f", "--tail", "all", "lg-run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker logs -f");
    let stdout = cli.stdout.take().expect("stdout");
    let stderr = cli.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stderr).read_line(&mut line);
        line
    });
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok);
    let second = lines.next().and_then(Result::ok);
    assert_eq!(first.as_deref(), Some("a"));
    assert_eq!(second.as_deref(), Some("c"));
    assert_eq!(err_reader.join().expect("stderr reader"), "b\n");
    assert!(
        cli.try_wait().expect("try_wait").is_none(),
        "-f still follows"
    );
    cli.kill().expect("kill docker logs");
    let _ = cli.wait();
    w.docker_ok(&["rm", "-f", "lg", "lg-f", "lg-run"]);
}

#[test]
fn log_rotation_and_bad_log_opts() {
    let w = loaded();
    let id = w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "rot",
        "--log-opt",
        "max-size=1k",
        "--log-opt",
        "max-file=3",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    let id = id.trim().to_string();
    assert_eq!(w.docker_ok(&["wait", "rot"]).trim(), "0");
    let dir = w.data_dir().join("containers").join(&id);
    let log = dir.join(format!("{id}-json.log"));
    let rotated = |n: u32| dir.join(format!("{id}-json.log.{n}"));
    assert!(
        rotated(1).exists() && rotated(2).exists(),
        "{:?}",
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    assert!(!rotated(3).exists(), "max-file=3 keeps 3 files");
    for p in [log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&p).expect("log file").len();
        assert!(size < 1024 + 100, "{} is {size} bytes", p.display());
    }
    assert_eq!(
        inspect(&w, "{{json .HostConfig.LogConfig.Config}}", "rot"),
        r#"{"max-file":"3","max-size":"1k"}"#
    );
    // `docker logs` reads the rotated files first, in order, without gaps.
    let out = logs(&w, "rot", &[]);
    let nums: Vec<u32> = out
        .lines()
        .map(|l| {
            l.strip_prefix("line-")
                .and_then(|n| n.parse().ok())
                .expect(l)
        })
        .collect();
    assert_eq!(nums.last(), Some(&199));
    assert!(
        nums.len() > 25 && nums.len() < 200,
        "{} lines kept",
        nums.len()
    );
    assert!(nums.windows(2).all(|p| p[1] == p[0] + 1), "{nums:?}");
    assert_eq!(logs(&w, "rot", &["--tail", "2"]), "line-198\nline-199\n");

    // max-file=1: the one file is truncated, never renamed.
    let id1 = w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "rot1",
        "--log-opt",
        "max-size=1k",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 100 ]; do echo x-$i; i=$((i+1)); done",
    ]);
    let id1 = id1.trim().to_string();
    assert_eq!(w.docker_ok(&["wait", "rot1"]).trim(), "0");
    let dir1 = w.data_dir().join("containers").join(&id1);
    assert!(!dir1.join(format!("{id1}-json.log.1")).exists());
    assert!(logs(&w, "rot1", &[]).ends_with("x-99\n"));

    // Bad options: refused at create with Docker's words, nothing created.
    for (flags, want) in [
        (vec!["--log-opt", "max-size=abc"], "invalid size: 'abc'"),
        (
            vec!["--log-opt", "foo=bar"],
            "unknown log opt 'foo' for json-file log driver",
        ),
        (
            vec!["--log-opt", "max-file=0"],
            "max-file cannot be less than 1",
        ),
        (
            vec!["--log-driver", "syslog"],
            "logger: no log driver named 'syslog' is registered",
        ),
    ] {
        let mut args = vec!["run", "-d", "--name", "bad-log"];
        args.extend(flags.iter().copied());
        args.extend(["busybox", "true"]);
        let out = w.docker(&args);
        assert_eq!(out.status.code(), Some(125), "{flags:?}");
        let err = text(&out.stderr);
        assert!(err.contains(want), "{flags:?}: {err}");
        assert!(err.contains("Error response from daemon"), "{err}");
    }
    w.docker_ok(&["rm", "rot", "rot1"]);
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "");
}
