//! The process side of a container through the stock `docker` CLI against `wharf up`:
//! exec, TTYs and detach keys, kill/restart/pause/rename/top/attach, restart policies,
//! the host-reboot recovery, and Docker's exit codes for start failures.
//!
//! Interactive commands run in a real pseudo-terminal driven by python3's `pty` module.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{eventually, inspect, loaded, text, Wharf};

/// Run `docker ARGS` in a pseudo-terminal with `steps` (wait-for text, input); returns
/// what the terminal showed and the exit code.
fn pty_docker(w: &Wharf, args: &[&str], steps: &[(Option<&str>, &str)]) -> (String, i32) {
    let env = [
        (
            "DOCKER_HOST".to_string(),
            format!("tcp://{}:{}", w.ip, w.port),
        ),
        ("DOCKER_TLS_VERIFY".to_string(), "1".to_string()),
        (
            "DOCKER_CERT_PATH".to_string(),
            w.data_dir().join("client").display().to_string(),
        ),
        (
            "DOCKER_CONFIG".to_string(),
            w.dir.path().join("docker-config").display().to_string(),
        ),
    ];
    support::pty_docker(&env, args, steps)
}

/// Run `docker ARGS` with `input` on its stdin.
fn docker_with_stdin(w: &Wharf, args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = w
        .docker_cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn docker");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write stdin");
    child.wait_with_output().expect("docker output")
}

fn assert_clean(w: &mut Wharf) {
    let out = w.down();
    assert!(out.status.success(), "wharf down: {}", text(&out.stderr));
    let left = w.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn exec_runs_processes_inside_the_container() {
    let mut w = loaded();
    w.docker_ok(&["run", "-d", "--name", "ex", "busybox", "sleep", "600"]);

    // Output, exit codes and stderr, as Docker.
    assert_eq!(w.docker_ok(&["exec", "ex", "echo", "hi"]), "hi\n");
    let out = w.docker(&["exec", "ex", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    let out = w.docker(&["exec", "ex", "sh", "-c", "echo a; echo err >&2; echo b"]);
    assert_eq!(text(&out.stdout), "a\nb\n");
    assert_eq!(text(&out.stderr), "err\n");

    // The container's namespaces: its PID 1, its host name; -e, -w, -u.
    let pid1 = w.docker_ok(&["exec", "ex", "cat", "/proc/1/cmdline"]);
    assert_eq!(pid1, "sleep\x00600\x00");
    let host = w.docker_ok(&["exec", "ex", "hostname"]);
    let id = inspect(&w, "{{.Id}}", "ex");
    assert_eq!(host.trim(), &id[..12]);
    let out = w.docker_ok(&[
        "exec",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "ex",
        "sh",
        "-c",
        "echo $FOO $(pwd)",
    ]);
    assert_eq!(out, "bar /tmp\n");
    assert_eq!(
        w.docker_ok(&["exec", "-u", "1234:5678", "ex", "id"]).trim(),
        "uid=1234 gid=5678"
    );
    assert!(w
        .docker_ok(&["exec", "-u", "nobody", "ex", "id"])
        .starts_with("uid=65534(nobody)"));
    assert_eq!(
        w.docker_ok(&["exec", "-u", "nobody", "ex", "sh", "-c", "echo $HOME"]),
        "/nonexistent\n"
    );
    // The exec runs in the container's cgroup.
    let cg_host = std::fs::read_to_string(format!(
        "/proc/{}/cgroup",
        inspect(&w, "{{.State.Pid}}", "ex")
    ))
    .expect("cgroup of the container");
    let cg_exec = w.docker_ok(&["exec", "ex", "cat", "/proc/self/cgroup"]);
    let pids_line = |s: &str| {
        s.lines()
            .find(|l| l.contains(":pids:"))
            .map(|l| l.to_string())
    };
    assert!(pids_line(&cg_host).is_some(), "{cg_host}");
    assert_eq!(
        pids_line(&cg_host).map(|l| l.rsplit('/').next().map(str::to_string)),
        pids_line(&cg_exec).map(|l| l.rsplit('/').next().map(str::to_string)),
        "host view {cg_host} / exec view {cg_exec}"
    );

    // stdin with -i.
    let out = docker_with_stdin(&w, &["exec", "-i", "ex", "cat"], b"piped\n");
    assert_eq!(text(&out.stdout), "piped\n");
    assert_eq!(out.status.code(), Some(0));

    // -d: runs on after the CLI returns.
    w.docker_ok(&[
        "exec",
        "-d",
        "ex",
        "sh",
        "-c",
        "sleep 0.5; echo done > /tmp/marker",
    ]);
    assert!(eventually(10, || w
        .docker(&["exec", "ex", "cat", "/tmp/marker"])
        .stdout
        == b"done\n"));

    // -it: a terminal of the client's size.
    let (shown, code) = pty_docker(
        &w,
        &["exec", "-it", "ex", "sh"],
        &[(Some("# "), "stty size; tty; exit 3\r")],
    );
    assert_eq!(code, 3);
    assert!(shown.contains("33 101"), "{shown}");
    assert!(shown.contains("/dev/pts/"), "{shown}");

    // Docker's exit codes and texts for what cannot start.
    let out = w.docker(&["exec", "ex", "nosuchcmd"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stdout).contains("executable file not found in $PATH"),
        "{}",
        text(&out.stdout)
    );
    let out = w.docker(&["exec", "ex", "/etc"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stdout).contains("permission denied"));
    let out = w.docker(&["exec", "-w", "/etc/passwd", "ex", "pwd"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(text(&out.stdout).contains("not a directory"));
    let out = w.docker(&["exec", "-w", "/proc/self/fd/3", "ex", "pwd"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("CVE-2024-21626"));
    let out = w.docker(&["exec", "-u", "nosuchuser", "ex", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("nosuchuser"),
        "{}",
        text(&out.stdout)
    );
    let out = w.docker(&["exec", "nosuchcontainer", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("No such container: nosuchcontainer"));

    // Exec instances are listed by inspect.
    let ids = inspect(&w, "{{len .ExecIDs}}", "ex");
    assert!(ids.parse::<usize>().unwrap_or(0) >= 10, "{ids}");

    // Live-restore: exec into a container started before wharf restarted; a paused
    // container stays paused and can be unpaused.
    w.docker_ok(&["run", "-d", "--name", "frozen", "busybox", "sleep", "600"]);
    w.docker_ok(&["pause", "frozen"]);
    w.stop_process();
    w.spawn();
    assert_eq!(inspect(&w, "{{.State.Status}}", "frozen"), "paused");
    w.docker_ok(&["unpause", "frozen"]);
    assert_eq!(
        w.docker_ok(&["exec", "frozen", "echo", "thawed"]),
        "thawed\n"
    );
    assert_eq!(w.docker_ok(&["exec", "ex", "echo", "again"]), "again\n");
    let out = w.docker(&["exec", "ex", "sh", "-c", "exit 4"]);
    assert_eq!(out.status.code(), Some(4));

    // A stopped container refuses exec.
    w.docker_ok(&["stop", "-t", "0", "ex"]);
    let out = w.docker(&["exec", "ex", "true"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );

    assert_clean(&mut w);
}

#[test]
fn tty_run_attach_resize_and_detach_keys() {
    let mut w = loaded();

    // `docker run -it busybox sh` is a usable shell of the client's size.
    let (shown, code) = pty_docker(
        &w,
        &["run", "-it", "--rm", "busybox", "sh"],
        &[(
            Some("# "),
            "sleep 0.3; stty size; echo hi-$((6*7)); exit 7\r",
        )],
    );
    assert_eq!(code, 7, "{shown}");
    assert!(shown.contains("hi-42\r\n"), "{shown}");
    assert!(shown.contains("33 101"), "{shown}");

    // -t without -i: raw terminal output (the pty turns \n into \r\n).
    let out = w.docker(&["run", "--rm", "-t", "busybox", "echo", "raw"]);
    assert_eq!(text(&out.stdout), "raw\r\n");

    // ctrl-p ctrl-q detaches and leaves the container running with its stdin open.
    let (shown, code) = pty_docker(
        &w,
        &["run", "-it", "--name", "tt", "busybox", "sh"],
        &[
            (Some("# "), "echo before\r"),
            (Some("before\r\n"), "\u{10}\u{11}"),
        ],
    );
    assert_eq!(code, 0, "{shown}");
    assert_eq!(inspect(&w, "{{.State.Status}}", "tt"), "running");

    // Attach again: the same shell, its exit code.
    let (shown, code) = pty_docker(
        &w,
        &["attach", "tt"],
        &[
            (None, "echo attached-$((1+1))\r"),
            (Some("attached-2"), "exit 9\r"),
        ],
    );
    assert_eq!(code, 9, "{shown}");
    assert!(eventually(10, || inspect(
        &w,
        "{{.State.Status}} {{.State.ExitCode}}",
        "tt"
    ) == "exited 9"));

    // create -it, then start -ai: the same terminal session.
    w.docker_ok(&["create", "-it", "--name", "later", "busybox", "sh"]);
    let (shown, code) = pty_docker(
        &w,
        &["start", "-ai", "later"],
        &[(Some("# "), "echo started-$((2+2)); exit 4\r")],
    );
    assert_eq!(code, 4, "{shown}");
    assert!(shown.contains("started-4\r\n"), "{shown}");

    // A stopped container cannot be attached to.
    let out = w.docker(&["attach", "tt"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out.stderr).contains("cannot attach to a stopped container"));

    assert_clean(&mut w);
}

#[test]
fn kill_restart_pause_rename_top_and_attach() {
    let mut w = loaded();

    // kill -s: the signal reaches the process.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "trap",
        "busybox",
        "sh",
        "-c",
        "trap 'echo got USR1; exit 3' USR1; echo ready; while true; do sleep 0.1; done",
    ]);
    assert!(eventually(10, || w.docker_ok(&["logs", "trap"]) == "ready\n"));
    w.docker_ok(&["kill", "-s", "USR1", "trap"]);
    assert_eq!(w.docker_ok(&["wait", "trap"]).trim(), "3");
    assert_eq!(w.docker_ok(&["logs", "trap"]), "ready\ngot USR1\n");
    let out = w.docker(&["kill", "-s", "NOPE", "trap"]);
    assert_ne!(out.status.code(), Some(0));
    let out = w.docker(&["kill", "trap"]);
    assert!(
        text(&out.stderr).contains("is not running"),
        "{}",
        text(&out.stderr)
    );

    // restart: a new run of the same container.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "busybox",
        "sh",
        "-c",
        "echo start; sleep 600",
    ]);
    let first = inspect(&w, "{{.State.StartedAt}} {{.State.Pid}}", "svc");
    assert_eq!(w.docker_ok(&["restart", "-t", "1", "svc"]).trim(), "svc");
    assert_eq!(inspect(&w, "{{.State.Status}}", "svc"), "running");
    assert_ne!(
        inspect(&w, "{{.State.StartedAt}} {{.State.Pid}}", "svc"),
        first
    );
    assert!(eventually(10, || w.docker_ok(&["logs", "svc"]) == "start\nstart\n"));

    // pause / unpause: frozen (no output), shown as Docker does, exec refused.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "ticker",
        "busybox",
        "sh",
        "-c",
        "while true; do echo t; sleep 0.05; done",
    ]);
    assert!(eventually(10, || !w
        .docker_ok(&["logs", "ticker"])
        .is_empty()));
    w.docker_ok(&["pause", "ticker"]);
    assert_eq!(
        inspect(
            &w,
            "{{.State.Status}} {{.State.Paused}} {{.State.Running}}",
            "ticker"
        ),
        "paused true true"
    );
    let ps = w.docker_ok(&["ps", "--filter", "name=ticker", "--format", "{{.Status}}"]);
    assert!(ps.trim().ends_with("(Paused)"), "{ps}");
    let frozen = w.docker_ok(&["logs", "ticker"]).len();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        w.docker_ok(&["logs", "ticker"]).len(),
        frozen,
        "output while paused"
    );
    let out = w.docker(&["exec", "ticker", "true"]);
    assert!(
        text(&out.stderr).contains("is paused"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["pause", "ticker"]);
    assert!(text(&out.stderr).contains("already paused"));
    let out = w.docker(&["rm", "ticker"]);
    assert_ne!(out.status.code(), Some(0));
    w.docker_ok(&["unpause", "ticker"]);
    assert!(eventually(10, || w.docker_ok(&["logs", "ticker"]).len() > frozen));
    let out = w.docker(&["unpause", "ticker"]);
    assert!(text(&out.stderr).contains("is not paused"));
    // stop and kill work on a paused container.
    w.docker_ok(&["pause", "ticker"]);
    w.docker_ok(&["stop", "ticker"]);
    assert_eq!(
        inspect(&w, "{{.State.Status}} {{.State.ExitCode}}", "ticker"),
        "exited 137"
    );
    let out = w.docker(&["pause", "ticker"]);
    assert!(text(&out.stderr).contains("is not running"));
    // The stop signal thaws a paused container, which then acts on it.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "thaw",
        "busybox",
        "sh",
        "-c",
        "trap 'echo term; exit 5' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    assert!(eventually(10, || w.docker_ok(&["logs", "thaw"]) == "up\n"));
    w.docker_ok(&["pause", "thaw"]);
    w.docker_ok(&["kill", "-s", "TERM", "thaw"]);
    assert_eq!(w.docker_ok(&["wait", "thaw"]).trim(), "5");
    assert_eq!(w.docker_ok(&["logs", "thaw"]), "up\nterm\n");
    w.docker_ok(&["run", "-d", "--name", "icy", "busybox", "sleep", "600"]);
    w.docker_ok(&["pause", "icy"]);
    w.docker_ok(&["kill", "icy"]);
    assert_eq!(w.docker_ok(&["wait", "icy"]).trim(), "137");
    w.docker_ok(&["run", "-d", "--name", "icy2", "busybox", "sleep", "600"]);
    w.docker_ok(&["pause", "icy2"]);
    w.docker_ok(&["rm", "-f", "icy2"]);
    let out = w.docker(&["inspect", "icy2"]);
    assert_ne!(out.status.code(), Some(0));

    // rename.
    w.docker_ok(&["rename", "svc", "svc2"]);
    let names = w.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert!(names.lines().any(|l| l == "svc2"), "{names}");
    let out = w.docker(&["rename", "svc2", "trap"]);
    assert!(text(&out.stderr).contains("is already in use"));
    let out = w.docker(&["rename", "nosuch", "x1"]);
    assert!(text(&out.stderr).contains("No such container: nosuch"));
    let out = w.docker(&["rename", "svc2", "bad name"]);
    assert_ne!(out.status.code(), Some(0));

    // top: the container's processes only.
    let top = w.docker_ok(&["top", "svc2"]);
    let mut lines = top.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.contains("PID") && header.contains("CMD"), "{top}");
    let rows: Vec<&str> = lines.collect();
    // busybox sh execs its last command: one process, the container's main one.
    assert_eq!(rows.len(), 1, "{top}");
    assert!(rows[0].ends_with("sleep 600"), "{top}");
    let pid = inspect(&w, "{{.State.Pid}}", "svc2");
    assert_eq!(
        rows[0].split_whitespace().nth(1),
        Some(pid.as_str()),
        "{top}"
    );
    let out = w.docker(&["top", "trap"]);
    assert!(text(&out.stderr).contains("is not running"));

    // create + start -a; attach to a running container.
    w.docker_ok(&[
        "create",
        "--name",
        "later",
        "busybox",
        "sh",
        "-c",
        "echo created-run; exit 4",
    ]);
    assert_eq!(inspect(&w, "{{.State.Status}}", "later"), "created");
    let out = w.docker(&["start", "-a", "later"]);
    assert_eq!(text(&out.stdout), "created-run\n");
    assert_eq!(out.status.code(), Some(4));
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "att",
        "busybox",
        "sh",
        "-c",
        "sleep 2; echo late; exit 6",
    ]);
    let out = w.docker(&["attach", "att"]);
    assert_eq!(text(&out.stdout), "late\n");
    assert_eq!(out.status.code(), Some(6));

    // --stop-signal and --stop-timeout.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "polite",
        "--stop-signal",
        "USR1",
        "busybox",
        "sh",
        "-c",
        "trap 'echo bye; exit 0' USR1; echo up; while true; do sleep 0.1; done",
    ]);
    assert!(eventually(10, || w.docker_ok(&["logs", "polite"]) == "up\n"));
    w.docker_ok(&["stop", "polite"]);
    assert_eq!(inspect(&w, "{{.State.ExitCode}}", "polite"), "0");
    assert_eq!(w.docker_ok(&["logs", "polite"]), "up\nbye\n");
    // busybox sleep as PID 1 ignores SIGTERM: stop waits --stop-timeout (1 s, not the
    // default 10 s), then kills.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "stubborn",
        "--stop-timeout",
        "1",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(inspect(&w, "{{.Config.StopTimeout}}", "stubborn"), "1");
    let t = Instant::now();
    w.docker_ok(&["stop", "stubborn"]);
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop ignored --stop-timeout"
    );
    assert_eq!(inspect(&w, "{{.State.ExitCode}}", "stubborn"), "137");

    assert_clean(&mut w);
}

#[test]
fn restart_policies_follow_docker() {
    let mut w = loaded();

    // on-failure:2 — two restarts, then it stays exited.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:2",
        "busybox",
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    assert!(eventually(20, || inspect(
        &w,
        "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
        "flaky"
    ) == "exited 1 2"));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(inspect(&w, "{{.RestartCount}}", "flaky"), "2");
    assert_eq!(w.docker_ok(&["logs", "flaky"]), "run\nrun\nrun\n");
    assert_eq!(
        inspect(&w, "{{.HostConfig.RestartPolicy.Name}}", "flaky"),
        "on-failure"
    );

    // on-failure does not restart a success.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "fine",
        "--restart",
        "on-failure",
        "busybox",
        "true",
    ]);
    assert!(eventually(10, || inspect(&w, "{{.State.Status}}", "fine") == "exited"));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(inspect(&w, "{{.RestartCount}}", "fine"), "0");

    // always restarts whatever the exit, until a user stops it.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "loop",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        // Long enough that the `kill` right after the manual `start` below finds it
        // running on a loaded machine (at 0.2 s it could be in its restart back-off).
        "sleep 1",
    ]);
    assert!(eventually(20, || inspect(&w, "{{.RestartCount}}", "loop")
        .parse::<u32>()
        .unwrap_or(0)
        >= 2));
    w.docker_ok(&["stop", "loop"]);
    let count = inspect(&w, "{{.RestartCount}}", "loop");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(inspect(&w, "{{.State.Status}}", "loop"), "exited");
    assert_eq!(inspect(&w, "{{.RestartCount}}", "loop"), count);
    // A manual start resets the count.
    w.docker_ok(&["start", "loop"]);
    assert_eq!(inspect(&w, "{{.RestartCount}}", "loop"), "0");
    w.docker_ok(&["kill", "loop"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(inspect(&w, "{{.State.Status}}", "loop"), "exited");

    // A crash loop shows as restarting during its back-off, as Docker shows it, and a
    // restart of wharf does not lose the pending restart.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "crash",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "exit 1",
    ]);
    assert!(
        eventually(30, || {
            let ps = w.docker_ok(&["ps", "--filter", "name=crash", "--format", "{{.Status}}"]);
            ps.starts_with("Restarting (1) ")
                && inspect(&w, "{{.RestartCount}}", "crash")
                    .parse::<u32>()
                    .unwrap_or(0)
                    >= 4
        }),
        "{}",
        w.log()
    );
    // The container is briefly running between back-offs: look until a sample lands
    // inside one.
    let id = inspect(&w, "{{.Id}}", "crash");
    assert!(
        eventually(10, || {
            w.docker_ok(&["ps", "-q", "--filter", "status=restarting"])
                .trim()
                == &id[..12]
        }),
        "the filter never showed the restarting container"
    );
    let before: u32 = inspect(&w, "{{.RestartCount}}", "crash")
        .parse()
        .unwrap_or(0);
    w.stop_process();
    w.spawn();
    assert!(eventually(20, || inspect(&w, "{{.RestartCount}}", "crash")
        .parse::<u32>()
        .unwrap_or(0)
        > before));
    w.docker_ok(&["stop", "crash"]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        inspect(&w, "{{.State.Status}} {{.State.Restarting}}", "crash"),
        "exited false"
    );

    // Bad policies are refused by the daemon.
    let out = w.docker(&["run", "--restart", "bogus", "busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("invalid restart policy"));

    assert_clean(&mut w);
}

/// Everything a reboot takes away: SIGKILL wharf, kill every shim and container process
/// of the instance, unmount its mounts.
fn simulate_reboot(w: &mut Wharf) {
    if let Some(mut child) = w.child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let data = w.data_dir();
    let needle = data.to_string_lossy().into_owned();
    let me = std::process::id().to_string();
    let kill = |pid: i32| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if name != me && text(&cmd).replace('\0', " ").contains(&needle) {
            kill(pid);
        }
    }
    let parent = wharf_controller::up::cgroup_parent(&data);
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .expect("cgroupfs")
        .flatten()
    {
        let Ok(groups) = std::fs::read_dir(root.path().join(&parent)) else {
            continue;
        };
        for g in groups.flatten() {
            let procs = std::fs::read_to_string(g.path().join("cgroup.procs")).unwrap_or_default();
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                kill(pid);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in info.lines().filter_map(|l| l.split(' ').nth(4)) {
        if Path::new(m).starts_with(&data) {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn after_a_host_reboot_policies_bring_containers_back() {
    let mut w = loaded();
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "always",
        "--restart",
        "always",
        "busybox",
        "sh",
        "-c",
        "echo boot; sleep 600",
    ]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "unless",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "600",
    ]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "stopped",
        "--restart",
        "unless-stopped",
        "busybox",
        "sleep",
        "600",
    ]);
    w.docker_ok(&["stop", "-t", "0", "stopped"]);
    w.docker_ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "600"]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "retry",
        "--restart",
        "on-failure:1",
        "busybox",
        "sleep",
        "600",
    ]);
    let old_pid = inspect(&w, "{{.State.Pid}}", "always");

    simulate_reboot(&mut w);
    w.spawn();

    for name in ["always", "unless", "retry"] {
        assert!(
            eventually(20, || inspect(&w, "{{.State.Status}}", name) == "running"),
            "{name} not restarted:\n{}",
            w.log()
        );
    }
    assert_ne!(inspect(&w, "{{.State.Pid}}", "always"), old_pid);
    // As dockerd at its start: a fresh restart count.
    assert_eq!(inspect(&w, "{{.RestartCount}}", "always"), "0");
    assert_eq!(w.docker_ok(&["exec", "always", "echo", "ok"]), "ok\n");
    assert_eq!(w.docker_ok(&["logs", "always"]), "boot\nboot\n");
    // The others are shown as exited: the one without a policy with 255, as the shim
    // that would have recorded its exit is gone; the stopped one as it was stopped.
    assert_eq!(
        inspect(&w, "{{.State.Status}} {{.State.ExitCode}}", "plain"),
        "exited 255"
    );
    assert_eq!(
        inspect(&w, "{{.State.Status}} {{.State.ExitCode}}", "stopped"),
        "exited 137"
    );
    // Their stale runtime state and cgroups are gone; they start again cleanly.
    let plain = inspect(&w, "{{.Id}}", "plain");
    assert!(!w.data_dir().join("runtime").join(&plain).exists());
    w.docker_ok(&["start", "plain"]);
    assert_eq!(inspect(&w, "{{.State.Status}}", "plain"), "running");

    assert_clean(&mut w);
}

#[test]
fn start_failures_exit_like_docker() {
    let mut w = loaded();

    // A missing entrypoint: 127 with a clear message.
    let out = w.docker(&["run", "--name", "noent", "busybox", "/nope"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("/nope: no such file or directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(inspect(&w, "{{.State.ExitCode}}", "noent"), "127");
    let out = w.docker(&["run", "--rm", "busybox", "nosuchcmd"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(text(&out.stderr).contains("executable file not found in $PATH"));

    // -w that is a file: "not a directory"; the CLI exits 125, the state says 126.
    let out = w.docker(&[
        "run",
        "--name",
        "wfile",
        "-w",
        "/etc/passwd",
        "busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("not a directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(inspect(&w, "{{.State.ExitCode}}", "wfile"), "126");

    // The runc CVE-2024-21626 pattern is refused.
    let out = w.docker(&["run", "--rm", "-w", "/proc/self/fd/7", "busybox", "pwd"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("CVE-2024-21626"),
        "{}",
        text(&out.stderr)
    );

    // Nothing of the failed starts is left running or mounted.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let data = w.data_dir();
    assert!(
        !info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|m| Path::new(m).starts_with(&data)),
        "a mount is left"
    );

    assert_clean(&mut w);
}

/// docker-py's view of the same features: `exec_run` (plain, demuxed, TTY, detached,
/// failing), pause, rename, top, restart.
const DOCKER_PY_SCRIPT: &str = r#"
import os, docker
tls = docker.tls.TLSConfig(
    client_cert=(os.path.join(os.environ["CERTS"], "cert.pem"), os.path.join(os.environ["CERTS"], "key.pem")),
    ca_cert=os.path.join(os.environ["CERTS"], "ca.pem"), verify=True)
c = docker.DockerClient(base_url=os.environ["URL"], tls=tls)
ct = c.containers.get("py")
r = ct.exec_run("sh -c 'echo hi; echo err >&2; exit 3'")
assert (r.exit_code, r.output) == (3, b"hi\nerr\n"), r
r = ct.exec_run("sh -c 'echo out; echo err >&2'", demux=True)
assert (r.exit_code, r.output) == (0, (b"out\n", b"err\n")), r
r = ct.exec_run("echo tty", tty=True)
assert (r.exit_code, r.output) == (0, b"tty\r\n"), r
r = ct.exec_run("sleep 1", detach=True)
assert r.exit_code is None, r
r = ct.exec_run("nosuch")
assert r.exit_code == 127 and b"executable file not found" in r.output, r
ct.pause()
assert c.containers.get("py").status == "paused"
ct.unpause()
ct.rename("py2")
assert c.containers.get("py2").name == "py2"
top = ct.top()
assert top["Titles"][1] == "PID" and any(p[-1] == "sleep 600" for p in top["Processes"]), top
ct.restart(timeout=0)
ct.reload()
assert ct.status == "running" and ct.attrs["RestartCount"] == 0, ct.attrs["State"]
print("ok")
"#;

#[test]
fn docker_py_exec_and_lifecycle() {
    let mut w = loaded();
    w.docker_ok(&["run", "-d", "--name", "py", "busybox", "sleep", "600"]);
    let out = Command::new("python3")
        .arg("-c")
        .arg(DOCKER_PY_SCRIPT)
        // On this machine these override the SDK's CA bundle (REFERENCE.md).
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env("URL", format!("https://127.0.0.1:{}", w.port))
        .env("CERTS", w.data_dir().join("client"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success() && text(&out.stdout).trim() == "ok",
        "docker-py:\n{}{}\n--- wharf log ---\n{}",
        text(&out.stdout),
        text(&out.stderr),
        w.log()
    );
    assert_clean(&mut w);
}

/// `/proc/PID/cmdline` with NULs as spaces and trailing blanks dropped.
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    text(&raw).replace('\0', " ").trim_end().to_string()
}

fn pid_in(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("pid")
}

#[test]
fn shims_are_forked_by_the_zygote_which_is_replaced_when_killed_and_ends_with_wharf() {
    let mut w = loaded();
    let data = w.data_dir();
    let id = w.docker_ok(&["run", "-d", "--name", "z1", "busybox", "sleep", "600"]);
    let state = data.join("containers").join(id.trim());
    let shim = pid_in(&state.join("shim.pid"));
    // A forked shim reads like an exec'ed one, for `ps` and for `wharf down`'s sweep.
    assert_eq!(
        cmdline(shim),
        format!(
            "{} shim --state-dir {}",
            support::wharf_bin(),
            state.display()
        )
    );
    let zygote_file = data.join("shim-zygote.pid");
    let zygote = pid_in(&zygote_file);
    assert!(
        cmdline(zygote).starts_with(&format!(
            "{} shim-zygote --containers-dir {}",
            support::wharf_bin(),
            data.join("containers").display()
        )),
        "{}",
        cmdline(zygote)
    );
    // The shim shares the zygote's start-up pages: its parent is not the agent, and it
    // is not the zygote itself.
    assert_ne!(shim, zygote);

    // A killed zygote is replaced at the next start; containers keep working.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(zygote as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill zygote");
    assert_eq!(
        w.docker_ok(&["run", "--rm", "busybox", "echo", "after"])
            .trim(),
        "after"
    );
    let second = pid_in(&zygote_file);
    assert_ne!(second, zygote);
    assert!(Path::new(&format!("/proc/{second}")).exists());
    assert_eq!(
        w.docker_ok(&["exec", "z1", "echo", "still"]).trim(),
        "still"
    );

    // The zygote ends with `wharf up` (SIGTERM: containers stay for live-restore), and
    // is started again by the next one.
    let status = w.stop_process();
    assert!(status.success(), "{status:?}");
    assert!(
        eventually(10, || !Path::new(&format!("/proc/{second}/cmdline"))
            .exists()
            || cmdline(second).is_empty()),
        "zygote {second} outlived wharf up: {}",
        cmdline(second)
    );
    assert!(
        Path::new(&format!("/proc/{shim}")).exists(),
        "shim died with wharf up"
    );
    w.spawn();
    assert_eq!(w.docker_ok(&["exec", "z1", "echo", "back"]).trim(), "back");
    w.docker_ok(&["rm", "-f", "z1"]);
    assert_clean(&mut w);
}
