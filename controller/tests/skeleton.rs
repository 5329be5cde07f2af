//! The walking skeleton, end to end: `wharf up`, then the stock `docker` CLI over mutual
//! TLS loads an image and runs containers; `wharf down` leaves nothing behind.

mod support;

use std::process::Command;
use support::{busybox_tar, text, wharf_bin, Wharf};

#[test]
fn docker_cli_runs_containers_through_wharf_up() {
    let mut w = Wharf::start();

    // client.env: exactly the three export lines.
    let env = w.client_env();
    let lines: Vec<&str> = env.lines().collect();
    assert_eq!(lines.len(), 3, "{env}");
    assert_eq!(
        lines[0],
        format!("export DOCKER_HOST=tcp://127.0.0.1:{}", w.port)
    );
    assert_eq!(lines[1], "export DOCKER_TLS_VERIFY=1");
    assert!(lines[2].starts_with("export DOCKER_CERT_PATH="));

    let version = w.docker_ok(&["version"]);
    assert!(version.contains("Server:"), "{version}");
    assert!(version.contains("1.50"), "API version shown: {version}");
    let info = w.docker_ok(&[
        "info",
        "--format",
        "{{.Driver}} {{.OSType}} {{.LoggingDriver}}",
    ]);
    assert_eq!(info.trim(), "overlay2 linux json-file");

    // An image that is not loaded: the CLI's usual pull attempt, then a clean failure.
    let missing = w.docker(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(text(&missing.stderr).contains("Unable to find image 'busybox:latest' locally"));

    let tar = busybox_tar();
    let loaded = w.docker_ok(&["load", "-i", tar.to_str().expect("utf-8 path")]);
    assert!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");
    let images = w.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]);
    assert!(
        images.lines().any(|l| l.starts_with("busybox:latest ")),
        "{images}"
    );

    // Foreground run: output and exit code.
    let out = w.docker(&["run", "--rm", "busybox", "echo", "hi"]);
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(out.status.code(), Some(0));
    let out = w.docker(&["run", "--rm", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{}", w.log());
    let out = w.docker(&["run", "--rm", "busybox", "sh", "-c", "echo to-err >&2"]);
    assert_eq!(text(&out.stderr), "to-err\n");
    assert_eq!(text(&out.stdout), "");

    // --rm left nothing.
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "");

    // Detached.
    let id = w.docker_ok(&["run", "-d", "--name", "sleeper", "busybox", "sleep", "60"]);
    let id = id.trim();
    assert_eq!(id.len(), 64, "{id}");
    let ps = w.docker_ok(&[
        "ps",
        "--format",
        "{{.ID}} {{.Names}} {{.Status}} {{.Command}}",
    ]);
    let row = ps
        .lines()
        .find(|l| l.contains("sleeper"))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(row.contains(" Up "), "{row}");

    // The container has its own PID namespace: its process is PID 1 inside.
    let pid = w.docker_ok(&["inspect", "--format", "{{.State.Pid}}", "sleeper"]);
    let pid: u32 = pid.trim().parse().expect("pid");
    assert!(pid > 1);
    let ns = |p: &str, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
    for kind in ["pid", "mnt", "uts", "ipc", "net"] {
        assert_ne!(
            ns(&pid.to_string(), kind),
            ns("self", kind),
            "{kind} namespace shared with the host"
        );
    }

    // Logs, stdout and stderr kept apart.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "talker",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2",
    ]);
    let code = w.docker_ok(&["wait", "talker"]);
    assert_eq!(code.trim(), "0");
    let logs = w.docker(&["logs", "talker"]);
    assert_eq!(text(&logs.stdout), "out\n");
    assert_eq!(text(&logs.stderr), "err\n");

    // Stop: busybox sleep as PID 1 ignores SIGTERM, so SIGKILL after the timeout.
    assert_eq!(
        w.docker_ok(&["stop", "-t", "1", "sleeper"]).trim(),
        "sleeper"
    );
    let state = w.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "sleeper",
    ]);
    assert_eq!(state.trim(), "exited 137");
    let ps = w.docker_ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
    assert!(
        ps.lines().any(|l| l.starts_with("sleeper Exited (137)")),
        "{ps}"
    );

    // rm of a running container is refused, then both are removed.
    w.docker_ok(&["run", "-d", "--name", "busy", "busybox", "sleep", "60"]);
    let refused = w.docker(&["rm", "busy"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused.stderr).contains("container is running"),
        "{}",
        text(&refused.stderr)
    );
    w.docker_ok(&["rm", "sleeper", "talker"]);
    w.docker_ok(&["rm", "-f", "busy"]);
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "");
    let gone = w.docker(&["rm", "sleeper"]);
    assert!(
        text(&gone.stderr).contains("No such container: sleeper"),
        "{}",
        text(&gone.stderr)
    );

    // A container left running for `wharf down` to clean up.
    w.docker_ok(&["run", "-d", "busybox", "sleep", "300"]);
    let out = w.down();
    assert!(
        out.status.success(),
        "wharf down: {}\n{}",
        text(&out.stderr),
        w.log()
    );
    let left = w.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn containers_keep_running_while_wharf_restarts() {
    let mut w = Wharf::start();
    w.docker_ok(&["load", "-i", busybox_tar().to_str().expect("utf-8 path")]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "survivor",
        "busybox",
        "sh",
        "-c",
        "echo started; sleep 300",
    ]);
    let pid = w.docker_ok(&["inspect", "--format", "{{.State.Pid}}", "survivor"]);
    let pid = pid.trim().to_string();

    let status = w.stop_process();
    assert!(status.success(), "wharf exited with {status}:\n{}", w.log());
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container died with wharf"
    );
    assert!(
        !w.data_dir().join("client.env").exists(),
        "client.env outlived the instance"
    );

    // Restart on another address: the server certificate is re-issued for it and
    // client.env rewritten; the stock CLI verifies the new name.
    w.ip = "127.0.0.2".into();
    w.port = support::free_port();
    w.spawn();
    assert_eq!(
        w.client_env().lines().next(),
        Some(format!("export DOCKER_HOST=tcp://127.0.0.2:{}", w.port).as_str())
    );
    let ps = w.docker_ok(&["ps", "--format", "{{.Names}} {{.Status}}"]);
    assert!(ps.lines().any(|l| l.starts_with("survivor Up")), "{ps}");
    assert_eq!(text(&w.docker(&["logs", "survivor"]).stdout), "started\n");
    w.docker_ok(&["stop", "-t", "0", "survivor"]);
    let state = w.docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.State.ExitCode}}",
        "survivor",
    ]);
    assert_eq!(state.trim(), "exited 137");
    let out = w.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn tls_refuses_clients_without_a_cluster_certificate() {
    let w = Wharf::start();
    let data = w.data_dir();
    let url = format!("https://127.0.0.1:{}/_ping", w.port);
    let ca = data.join("client/ca.pem");

    let with_cert = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(data.join("client/cert.pem"))
        .arg("--key")
        .arg(data.join("client/key.pem"))
        .arg(&url)
        .output()
        .expect("curl");
    assert_eq!(text(&with_cert.stdout), "OK", "{}", text(&with_cert.stderr));

    let no_cert = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(&url)
        .output()
        .expect("curl");
    assert!(
        !no_cert.status.success(),
        "a client without a certificate was served"
    );

    // A certificate from another CA (another instance's) is refused too.
    let other = tempfile::tempdir().expect("tempdir");
    let made = Command::new(wharf_bin())
        .args(["certs", "client", "--data-dir"])
        .arg(other.path().join("d"))
        .arg("--out")
        .arg(other.path().join("c"))
        .output()
        .expect("wharf certs");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let foreign = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(other.path().join("c/cert.pem"))
        .arg("--key")
        .arg(other.path().join("c/key.pem"))
        .arg(&url)
        .output()
        .expect("curl");
    assert!(
        !foreign.status.success(),
        "a foreign client certificate was accepted"
    );

    // A second instance on the same data dir refuses to start.
    let second = Command::new(wharf_bin())
        .args(["up", "--data-dir"])
        .arg(&data)
        .args(["--api-addr", &format!("127.0.0.1:{}", support::free_port())])
        .arg("--unix-socket")
        .arg(w.dir.path().join("second.sock"))
        .output()
        .expect("second wharf");
    assert!(!second.status.success());
    assert!(
        text(&second.stderr).contains("in use by another wharf"),
        "{}",
        text(&second.stderr)
    );
}

#[test]
fn settings_come_from_a_config_file_and_the_environment() {
    let dir = tempfile::Builder::new()
        .prefix("wharf-cfg-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let data = dir.path().join("data");
    let port = support::free_port();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\napi_addr = \"127.0.0.1:1\"\nunix_socket = \"{}\"\n",
            data.display(),
            dir.path().join("d.sock").display()
        ),
    )
    .expect("write config");
    // The environment beats the file: the port comes from WHARF_API_ADDR.
    let mut child = Command::new(wharf_bin())
        .args(["up", "--config"])
        .arg(&cfg)
        .env("WHARF_API_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.log")).expect("log file"))
        .spawn()
        .expect("spawn");
    let env = data.join("client.env");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !env.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let text_env = std::fs::read_to_string(&env).unwrap_or_default();
    let _ = Command::new(wharf_bin())
        .args(["down", "--config"])
        .arg(&cfg)
        .output();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("wait");
    let log = std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
    assert!(
        text_env.starts_with(&format!("export DOCKER_HOST=tcp://127.0.0.1:{port}\n")),
        "{text_env}\n{log}"
    );
    assert!(
        text(&out.stdout).contains(&text_env),
        "up prints the client lines"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "data-dir = \"/x\"\n").expect("write");
    let refused = Command::new(wharf_bin())
        .args(["up", "--config"])
        .arg(&bad)
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("unknown field"),
        "{}",
        text(&refused.stderr)
    );
}
