//! Issue 15: attach, exec, kill and wait as programs written for Docker drive them, with
//! the Python SDK (`sdk_streams_test.py`, over the unix socket) and the stock CLI. A hang
//! is bounded: the SDK's socket timeout, and a limit on the whole script.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{busybox_tar, inspect, loaded, text, Wharf};

/// The whole SDK script may not run longer (its rows have their own 20 s socket timeout).
const SCRIPT_LIMIT: Duration = Duration::from_secs(600);

#[test]
fn docker_py_attach_exec_kill_and_wait() {
    let mut w = Wharf::start();
    // docker-py takes `detachKeys` from the client config, as the CLI does.
    let config = w.dir.path().join("py-docker-config");
    std::fs::create_dir_all(&config).expect("config dir");
    std::fs::write(config.join("config.json"), r#"{"detachKeys": "ctrl-a"}"#)
        .expect("client config");
    let mut child = Command::new("python3")
        // Unclosed-socket warnings would split the rows' "... ok" lines.
        .args(["-W", "ignore"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk_streams_test.py"
        ))
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("DOCKER_CONFIG", &config)
        .env("WHARF_SOCKET", w.socket_path())
        .env("WHARF_BUSYBOX_TAR", busybox_tar())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for python3") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let report = reader.join().unwrap_or_default();
    eprintln!("{report}");
    assert!(
        status.is_some_and(|s| s.success()),
        "docker-py rows failed or hung ({status:?}):\n{report}\n--- wharf log ---\n{}",
        w.log()
    );
    // Every row ran and passed.
    assert_eq!(report.matches(") ... ok").count(), 18, "{report}");
    assert!(w.down().status.success());
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}

#[test]
fn cli_kill_returns_once_exited_and_exec_tty_output_is_whole() {
    let mut w = loaded();
    for i in 0..3 {
        let name = format!("k{i}");
        w.docker_ok(&["run", "-d", "--name", &name, "busybox", "sleep", "300"]);
        w.docker_ok(&["kill", &name]);
        // Right after: exited with 137, and removable.
        assert_eq!(
            inspect(
                &w,
                "{{.State.Running}} {{.State.Status}} {{.State.ExitCode}}",
                &name
            ),
            "false exited 137"
        );
        w.docker_ok(&["rm", &name]);
    }
    // Another signal returns once delivered; the container acts on it.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "busybox",
        "sh",
        "-c",
        "trap 'exit 3' USR1; while true; do sleep 0.05; done",
    ]);
    w.docker_ok(&["kill", "-s", "USR1", "usr1"]);
    assert_eq!(w.docker_ok(&["wait", "usr1"]).trim(), "3");
    // `docker exec -t`: the whole output, raw.
    w.docker_ok(&["run", "-d", "--name", "ex", "busybox", "sleep", "300"]);
    for _ in 0..5 {
        let out = w.docker(&["exec", "-t", "ex", "echo", "hello out"]);
        assert!(out.status.success());
        assert_eq!(text(&out.stdout), "hello out\r\n");
    }
    // A stopped container cannot be attached to (the CLI checks), and `logs` of it ends.
    w.docker_ok(&["kill", "ex"]);
    let out = w.docker(&["attach", "ex"]);
    assert!(!out.status.success());
    assert_eq!(w.docker_ok(&["logs", "-f", "usr1"]), "");
    w.docker_ok(&["rm", "usr1", "ex"]);
    assert!(w.down().status.success());
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}
