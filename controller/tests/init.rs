//! `docker run --init`: the init binary (Debian's static tini, from `--init-path`) runs as
//! the container's PID 1 from a read-only bind at /sbin/docker-init, starts the command as
//! its child, forwards signals to it, reaps orphans and exits with its code, as Docker's
//! docker-init does.

mod support;

use support::{busybox_tar, inspect, text, Wharf};

/// Debian's `tini` package (deploy/deps.sh installs it).
const TINI: &str = "/usr/bin/tini-static";

#[test]
fn init_is_pid_1_forwards_signals_and_reaps() {
    // The instance's init binary is a copy the test owns, so that it can also be removed.
    let tmp = tempfile::Builder::new()
        .prefix("wharf-test-init-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let init = tmp.path().join("tini");
    std::fs::copy(TINI, &init).expect("copy tini-static (install Debian's tini)");
    let w = Wharf::start_with(&["--init-path", init.to_str().expect("utf-8 path")]);
    let tar = busybox_tar();
    w.docker_ok(&["load", "-i", tar.to_str().expect("utf-8 path")]);

    // PID 1 is docker-init, with the command after `--`; the command is its child.
    let cmdline = w.docker_ok(&["run", "--rm", "--init", "busybox", "cat", "/proc/1/cmdline"]);
    assert_eq!(
        cmdline.split('\0').collect::<Vec<_>>(),
        ["/sbin/docker-init", "--", "cat", "/proc/1/cmdline", ""]
    );
    let ppid = w.docker_ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "echo $$ $PPID",
    ]);
    let ppid: Vec<&str> = ppid.split_whitespace().collect();
    assert_ne!(ppid[0], "1", "{ppid:?}");
    assert_eq!(ppid[1], "1", "{ppid:?}");
    // Without --init the command is PID 1 itself.
    assert_eq!(
        w.docker_ok(&["run", "--rm", "busybox", "sh", "-c", "echo $$"])
            .trim(),
        "1"
    );
    // The bind is read-only.
    let out = w.docker(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "echo x > /sbin/docker-init",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("Read-only file system"),
        "{}",
        text(&out.stderr)
    );

    // The exit code comes through.
    let out = w.docker(&["run", "--rm", "--init", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));

    // An orphan is reparented to the init and reaped: no zombie stays.
    let ps = w.docker_ok(&[
        "run",
        "--rm",
        "--init",
        "busybox",
        "sh",
        "-c",
        "sh -c 'sleep 0.2 &'; sleep 0.5; \
         for i in $(seq 100); do ps -o stat | grep -q Z || break; sleep 0.1; done; \
         ps -o pid,ppid,stat,comm",
    ]);
    assert!(
        !ps.lines().skip(1).any(|l| l.contains(" Z")),
        "a zombie is left:\n{ps}"
    );

    // `docker stop`: the init forwards SIGTERM to a command that, as PID 1, would not get
    // it; the command dies of it (143) instead of being killed after the timeout (137).
    w.docker_ok(&[
        "run", "-d", "--init", "--name", "svc", "busybox", "sleep", "600",
    ]);
    assert_eq!(inspect(&w, "{{.HostConfig.Init}}", "svc"), "true");
    w.docker_ok(&["stop", "-t", "60", "svc"]);
    assert_eq!(inspect(&w, "{{.State.ExitCode}}", "svc"), "143");
    w.docker_ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "600"]);
    w.docker_ok(&["stop", "-t", "1", "plain"]);
    assert_eq!(inspect(&w, "{{.State.ExitCode}}", "plain"), "137");
    // exec works beside the init, and a restart runs the init again.
    w.docker_ok(&["start", "svc"]);
    assert_eq!(
        w.docker_ok(&["exec", "svc", "cat", "/proc/1/comm"]).trim(),
        "docker-init"
    );
    w.docker_ok(&["rm", "-f", "svc", "plain"]);

    // Without the init binary, --init fails with a clear message; no other container cares.
    std::fs::remove_file(&init).expect("remove the init copy");
    let out = w.docker(&["run", "--name", "noinit", "--init", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "--init: cannot use the init binary {}",
            init.display()
        )) && err.contains("No such file or directory")
            && err.contains("--init-path"),
        "{err}"
    );
    w.docker_ok(&["rm", "-f", "noinit"]);
    w.docker_ok(&["run", "--rm", "busybox", "true"]);

    let mut w = w;
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "", "containers left");
    let out = w.down();
    assert!(out.status.success(), "wharf down: {}", text(&out.stderr));
    assert_eq!(w.leftovers(), Vec::<String>::new());
}
