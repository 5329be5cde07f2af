//! `docker exec` and healthcheck processes run under the container's seccomp filter, as
//! with Docker: what the container's profile refuses, an exec process is refused too, and
//! the process keeps exactly the container's capabilities. Containers without a filter
//! (`--privileged`, `seccomp=unconfined`) give exec processes none.

mod support;

use support::{eventually, inspect, loaded, text, Wharf};

/// `Key:` lines of /proc/self/status of `docker exec [flags] c`, as `key value` pairs.
fn exec_status(w: &Wharf, flags: &[&str], c: &str, keys: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["exec"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&[c, "cat", "/proc/self/status"]);
    status_lines(&w.docker_ok(&args), keys)
}

/// The same lines of the container's own process (PID 1 inside it).
fn init_status(w: &Wharf, c: &str, keys: &[&str]) -> Vec<(String, String)> {
    status_lines(&w.docker_ok(&["exec", c, "cat", "/proc/1/status"]), keys)
}

fn status_lines(status: &str, keys: &[&str]) -> Vec<(String, String)> {
    keys.iter()
        .map(|k| {
            let v = status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .unwrap_or_else(|| panic!("no {k} in {status}"))
                .trim()
                .to_string();
            (k.to_string(), v)
        })
        .collect()
}

fn pair(k: &str, v: &str) -> (String, String) {
    (k.to_string(), v.to_string())
}

const KEYS: [&str; 5] = ["Seccomp", "NoNewPrivs", "CapEff", "CapPrm", "CapBnd"];

#[test]
fn exec_processes_get_the_containers_seccomp_filter() {
    let w = loaded();
    w.docker_ok(&["run", "-d", "--name", "dflt", "busybox", "sleep", "600"]);

    // The exec process is filtered like the container, with the container's capabilities
    // (CAP_SYS_ADMIN, held only to load the filter, is gone again).
    let exec = exec_status(&w, &[], "dflt", &KEYS);
    assert_eq!(exec[0], pair("Seccomp", "2"));
    assert_eq!(exec[1], pair("NoNewPrivs", "0"));
    assert_eq!(exec, init_status(&w, "dflt", &KEYS));
    assert_eq!(exec[2], pair("CapEff", "00000000a80425fb"));
    // Through a pty and as another user too.
    let tty = exec_status(&w, &["-t"], "dflt", &["Seccomp"]);
    assert_eq!(tty, [pair("Seccomp", "2")]);
    let user = exec_status(
        &w,
        &["-u", "1000"],
        "dflt",
        &["Seccomp", "CapEff", "CapBnd"],
    );
    assert_eq!(
        user,
        [
            pair("Seccomp", "2"),
            pair("CapEff", "0000000000000000"),
            pair("CapBnd", "00000000a80425fb")
        ]
    );

    // A call the profile refuses (a user namespace needs no capability) fails in exec.
    let out = w.docker(&["exec", "dflt", "unshare", "-U", "true"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Operation not permitted"),
        "{}",
        text(&out.stderr)
    );
    // Allowed calls still work.
    assert_eq!(
        w.docker_ok(&["exec", "dflt", "linux32", "uname", "-m"])
            .trim(),
        "i686"
    );

    // An unconfined or privileged container gives its exec processes no filter.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "open",
        "--security-opt",
        "seccomp=unconfined",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(
        exec_status(&w, &[], "open", &["Seccomp"]),
        [pair("Seccomp", "0")]
    );
    w.docker_ok(&["exec", "open", "unshare", "-U", "true"]);
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "priv",
        "--privileged",
        "busybox",
        "sleep",
        "600",
    ]);
    assert_eq!(
        exec_status(&w, &[], "priv", &["Seccomp"]),
        [pair("Seccomp", "0")]
    );

    // no-new-privileges: the filter loads without raising anything.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "nnp",
        "--security-opt",
        "no-new-privileges",
        "busybox",
        "sleep",
        "600",
    ]);
    let nnp = exec_status(&w, &[], "nnp", &KEYS);
    assert_eq!(nnp[0], pair("Seccomp", "2"));
    assert_eq!(nnp[1], pair("NoNewPrivs", "1"));
    assert_eq!(nnp, init_status(&w, "nnp", &KEYS));

    // A container that holds CAP_SYS_ADMIN keeps it, and its (wider) filter.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "admin",
        "--cap-add",
        "SYS_ADMIN",
        "busybox",
        "sleep",
        "600",
    ]);
    let admin = exec_status(&w, &[], "admin", &KEYS);
    assert_eq!(admin[0], pair("Seccomp", "2"));
    assert_eq!(admin, init_status(&w, "admin", &KEYS));
    w.docker_ok(&["exec", "admin", "unshare", "-U", "true"]);

    w.docker_ok(&["rm", "-f", "dflt", "open", "priv", "nnp", "admin"]);
    finish(w);
}

#[test]
fn healthchecks_run_under_the_containers_seccomp_filter() {
    let w = loaded();
    // Healthy only while the check itself is filtered and refused a user namespace.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "grep ^Seccomp: /proc/self/status && ! unshare -U true",
        "--health-interval",
        "1s",
        "busybox",
        "sleep",
        "600",
    ]);
    assert!(
        eventually(60, || inspect(&w, "{{.State.Health.Status}}", "hc")
            == "healthy"),
        "{}",
        inspect(&w, "{{json .State.Health}}", "hc")
    );
    let log = inspect(&w, "{{(index .State.Health.Log 0).Output}}", "hc");
    assert!(log.contains("Seccomp:\t2"), "{log}");
    w.docker_ok(&["rm", "-f", "hc"]);
    finish(w);
}

fn finish(mut w: Wharf) {
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "", "containers left");
    let out = w.down();
    assert!(out.status.success(), "wharf down: {}", text(&out.stderr));
    assert_eq!(w.leftovers(), Vec::<String>::new());
}
