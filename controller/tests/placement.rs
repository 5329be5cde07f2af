//! Placement as the stock docker CLI sees it on `wharf up` (one node): `inspect` shows the
//! container's node as classic Swarm did, `-e constraint:` entries choose the node and
//! leave the environment, and a constraint no node meets is refused with its text;
//! affinities, engine labels, soft expressions and malformed ones (400 with the text).

mod support;

use support::{busybox_tar, inspect, loaded, text, Wharf};

fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn inspect_shows_the_node_and_constraints_choose_it() {
    let w = loaded();
    let host = hostname();
    let constraint = format!("constraint:node=={host}");
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "placed",
        "-e",
        "A=1",
        "-e",
        &constraint,
        "busybox",
        "sleep",
        "60",
    ]);
    assert_eq!(inspect(&w, "{{.Node.Name}}", "placed"), host);
    assert!(!inspect(&w, "{{.Node.ID}}", "placed").is_empty());
    let env = w.docker_ok(&["exec", "placed", "env"]);
    assert!(env.contains("A=1"), "{env}");
    assert!(!env.contains("constraint"), "{env}");
    let reason = inspect(
        &w,
        "{{index .Config.Labels \"com.wharf.placement\"}}",
        "placed",
    );
    assert!(
        reason.contains(&constraint["constraint:".len()..]),
        "{reason}"
    );
    // `docker ps` names the container as it is, without its node.
    let names = w.docker_ok(&["ps", "--format", "{{.Names}}"]);
    assert_eq!(names.trim(), "placed");

    let out = w.docker(&[
        "run",
        "-d",
        "-e",
        "constraint:node==no-such-host",
        "busybox",
        "true",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no node meets the constraint node==no-such-host"),
        "{err}"
    );
    assert!(!err.contains("Unable to find image"), "never a pull: {err}");
    let out = w.docker(&["run", "-d", "-e", "constraint:node=x", "busybox", "true"]);
    assert!(text(&out.stderr).contains("invalid constraint \"node=x\""));
    w.docker_ok(&["rm", "-f", "placed"]);
}

/// `POST /containers/create` with `body` over the instance's socket: the HTTP status.
fn create_status(w: &Wharf, body: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--unix-socket",
        ])
        .arg(w.socket_path())
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
        ])
        .arg("http://localhost/containers/create")
        .output()
        .expect("curl");
    text(&out.stdout)
}

#[test]
fn affinities_engine_labels_and_soft_expressions_through_the_cli() {
    let w = Wharf::start_with(&["--label", "disk=ssd"]);
    let tar = busybox_tar();
    w.docker_ok(&["load", "-i", tar.to_str().unwrap()]);
    w.docker_ok(&["run", "-d", "--name", "anchor", "busybox", "sleep", "60"]);
    let reason = |name: &str| inspect(&w, "{{index .Config.Labels \"com.wharf.placement\"}}", name);

    // Affinity to a container, an engine label, a regex and a soft miss: placed, each said.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "follower",
        "-e",
        "affinity:container==anchor",
        "-e",
        "constraint:disk==ssd",
        "-e",
        "constraint:node==/.+/",
        "-e",
        "affinity:image==busy*",
        "-e",
        "constraint:zone==~eu-*",
        "busybox",
        "sleep",
        "60",
    ]);
    let why = reason("follower");
    assert!(why.starts_with("spread: "), "{why}");
    for said in [
        "affinity container==anchor",
        "constraint disk==ssd",
        "constraint node==/.+/",
        "affinity image==busy*",
        "soft constraint zone==~eu-* dropped: no candidate meets it",
    ] {
        assert!(why.contains(said), "{said}: {why}");
    }
    let env = inspect(&w, "{{json .Config.Env}}", "follower");
    assert!(
        !env.contains("affinity") && !env.contains("constraint"),
        "{env}"
    );
    // Classic Swarm's labels: read and kept.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "labelled",
        "--label",
        "com.docker.swarm.affinities=[\"container==anchor\"]",
        "busybox",
        "sleep",
        "60",
    ]);
    assert!(reason("labelled").contains("affinity container==anchor"));
    assert_eq!(
        inspect(
            &w,
            "{{index .Config.Labels \"com.docker.swarm.affinities\"}}",
            "labelled"
        ),
        "[\"container==anchor\"]"
    );

    // What no node meets: refused naming it, never a pull.
    for (expr, says) in [
        (
            "affinity:container==nosuch",
            "no node meets the affinity container==nosuch",
        ),
        (
            "affinity:container!=anchor",
            "no node meets the affinity container!=anchor",
        ),
        (
            "affinity:image==nginx",
            "no node meets the affinity image==nginx",
        ),
        (
            "constraint:disk==hdd",
            "no node meets the constraint disk==hdd",
        ),
        (
            "constraint:node.labels.disk!=ssd",
            "no node meets the constraint node.labels.disk!=ssd",
        ),
    ] {
        let out = w.docker(&["run", "-d", "-e", expr, "busybox", "true"]);
        assert!(!out.status.success(), "{expr}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{expr}: {err}");
        assert!(!err.contains("Unable to find image"), "never a pull: {err}");
    }
    assert_eq!(
        create_status(
            &w,
            r#"{"Image":"busybox","Env":["affinity:container==nosuch"]}"#
        ),
        "409"
    );

    // Malformed: 400 with the offending text.
    for (args, says) in [
        (
            vec!["-e", "affinity:container=anchor"],
            "invalid affinity \"container=anchor\"",
        ),
        (
            vec!["-e", "affinity:volume==x"],
            "invalid affinity \"volume==x\"",
        ),
        (
            vec!["-e", "constraint:disk==/[/"],
            "invalid constraint \"disk==/[/\"",
        ),
        (
            vec!["-e", "constraint:node.zone==a"],
            "invalid constraint \"node.zone==a\"",
        ),
        (
            vec!["--label", "com.docker.swarm.constraints=disk==ssd"],
            "invalid label com.docker.swarm.constraints",
        ),
    ] {
        let mut all = vec!["run", "-d"];
        all.extend(&args);
        all.extend(["busybox", "true"]);
        let out = w.docker(&all);
        assert!(!out.status.success(), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!(
        create_status(
            &w,
            r#"{"Image":"busybox","Env":["affinity:container=anchor"]}"#
        ),
        "400"
    );
    let ps = w.docker_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    let mut names: Vec<&str> = ps.lines().collect();
    names.sort();
    assert_eq!(
        names,
        ["anchor", "follower", "labelled"],
        "nothing else was created"
    );
    w.docker_ok(&["rm", "-f", "anchor", "follower", "labelled"]);
}
