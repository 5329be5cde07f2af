//! Placement as the stock docker CLI sees it on `wharf up` (one node): `inspect` shows the
//! container's node as classic Swarm did, `-e constraint:` entries choose the node and
//! leave the environment, and a constraint no node meets is refused with its text.

mod support;

use support::{inspect, loaded, text};

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
