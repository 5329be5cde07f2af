//! Container configuration through the stock `docker` CLI against `wharf up`: the
//! container's filesystem and network files, `run` flags, volumes, bind mounts and
//! `--mount`, resource limits and stats. Each test looks from inside the container
//! (busybox reading /proc, /sys, /etc) and, where it matters, from the host.

mod support;

use std::path::PathBuf;
use support::{loaded, text, Wharf};

/// `docker run --rm busybox ARGS...` with `flags` before the image; stdout.
fn run(w: &Wharf, flags: &[&str], cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.push("busybox");
    args.extend_from_slice(cmd);
    w.docker_ok(&args)
}

/// Same, expecting failure; (exit code, stderr).
fn run_fails(w: &Wharf, flags: &[&str], cmd: &[&str]) -> (Option<i32>, String) {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.push("busybox");
    args.extend_from_slice(cmd);
    let out = w.docker(&args);
    assert!(!out.status.success(), "docker {args:?} succeeded");
    (out.status.code(), text(&out.stderr))
}

/// `POST /containers/create` with a raw JSON body over the instance's unix socket (curl,
/// for what the CLI refuses before it reaches the API); (status, body).
fn api_create(w: &Wharf, body: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "--unix-socket"])
        .arg(w.socket_path())
        .args([
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "http://wharf/v1.50/containers/create",
        ])
        .output()
        .expect("run curl");
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), body.to_string())
}

fn finish(mut w: Wharf) {
    assert_eq!(w.docker_ok(&["ps", "-aq"]).trim(), "", "containers left");
    let out = w.down();
    assert!(out.status.success(), "wharf down: {}", text(&out.stderr));
    assert_eq!(w.leftovers(), Vec::<String>::new());
}

/// The `CapEff` mask of the container's process.
fn cap_eff(w: &Wharf, flags: &[&str]) -> String {
    let status = run(w, flags, &["cat", "/proc/self/status"]);
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap_or_else(|| panic!("{status}"))
        .trim()
        .to_string()
}

#[test]
fn container_filesystem_is_dockers() {
    let w = loaded();

    // Network files, per container.
    assert_eq!(
        run(&w, &["--hostname", "web1"], &["cat", "/etc/hostname"]),
        "web1\n"
    );
    assert_eq!(run(&w, &["--hostname", "web1"], &["hostname"]), "web1\n");
    let hosts = run(
        &w,
        &["--add-host", "db:10.1.2.3", "--add-host", "v6:fd00::1"],
        &["cat", "/etc/hosts"],
    );
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");
    assert!(hosts.contains("\n10.1.2.3\tdb\n"), "{hosts}");
    assert!(hosts.contains("\nfd00::1\tv6\n"), "{hosts}");
    let resolv = run(
        &w,
        &["--dns", "1.1.1.1", "--dns-search", "example.org"],
        &["cat", "/etc/resolv.conf"],
    );
    assert_eq!(resolv, "nameserver 1.1.1.1\nsearch example.org\n");
    let resolv = run(&w, &[], &["cat", "/etc/resolv.conf"]);
    let servers: Vec<&str> = resolv
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver "))
        .collect();
    assert!(!servers.is_empty(), "{resolv}");
    assert!(
        servers
            .iter()
            .all(|s| !s.starts_with("127.") && *s != "::1"),
        "loopback name servers must not reach the container: {resolv}"
    );
    let id = w
        .docker_ok(&["create", "busybox", "true"])
        .trim()
        .to_string();
    let hosts_path = w.docker_ok(&["inspect", "-f", "{{.HostsPath}}", &id]);
    assert!(
        PathBuf::from(hosts_path.trim()).starts_with(w.data_dir()),
        "{hosts_path}"
    );
    w.docker_ok(&["rm", &id]);

    // The default bridge network gives eth0 beside the loopback; `--network none` only a
    // loopback interface, and it is up (IFF_UP|IFF_LOOPBACK = 0x9).
    assert_eq!(run(&w, &[], &["ls", "/sys/class/net"]), "eth0\nlo\n");
    assert_eq!(
        run(&w, &["--network", "none"], &["ls", "/sys/class/net"]),
        "lo\n"
    );
    assert_eq!(run(&w, &[], &["cat", "/sys/class/net/lo/flags"]), "0x9\n");

    // Minimal /dev.
    let dev = run(&w, &[], &["ls", "/dev"]);
    for want in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
    ] {
        assert!(dev.split_whitespace().any(|d| d == want), "{want}: {dev}");
    }
    assert!(!dev.split_whitespace().any(|d| d == "sda" || d == "kmsg"));

    // /sys read-only, masked and read-only /proc paths.
    let (_, err) = run_fails(&w, &[], &["touch", "/sys/kernel/x"]);
    assert!(err.contains("Read-only file system"), "{err}");
    // Masked: /dev/null over the file (the host's /proc/interrupts is never empty).
    assert_eq!(
        run(&w, &[], &["wc", "-c", "/proc/interrupts"]).trim(),
        "0 /proc/interrupts"
    );
    let (_, err) = run_fails(
        &w,
        &[],
        &["sh", "-c", "echo 1 > /proc/sys/kernel/domainname"],
    );
    assert!(err.contains("Read-only file system"), "{err}");

    // Docker's default capabilities, tweaked by flags.
    assert_eq!(cap_eff(&w, &[]), "00000000a80425fb");
    assert_eq!(cap_eff(&w, &["--cap-add", "SYS_ADMIN"]), "00000000a82425fb");
    assert_eq!(
        cap_eff(&w, &["--cap-drop", "NET_RAW", "--cap-drop", "CAP_CHOWN"]),
        "00000000a80405fa"
    );
    assert_eq!(cap_eff(&w, &["--cap-drop", "ALL"]), "0000000000000000");
    // Privileged: every capability the engine itself holds.
    let own = std::fs::read_to_string("/proc/self/status").expect("status");
    let own_bnd = own
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd")
        .trim();
    assert_eq!(cap_eff(&w, &["--privileged"]), own_bnd);
    // Docker's seccomp profile: filtered by default, not when unconfined or privileged;
    // creating a user namespace is refused by the profile (not by capabilities).
    let mode = |flags: &[&str]| {
        run(&w, flags, &["grep", "^Seccomp:", "/proc/self/status"])
            .split_whitespace()
            .nth(1)
            .map(str::to_string)
    };
    assert_eq!(mode(&[]).as_deref(), Some("2"));
    assert_eq!(
        mode(&["--security-opt", "seccomp=unconfined"]).as_deref(),
        Some("0")
    );
    assert_eq!(mode(&["--privileged"]).as_deref(), Some("0"));
    let (_, err) = run_fails(&w, &[], &["unshare", "-U", "true"]);
    assert!(err.contains("Operation not permitted"), "{err}");
    run(
        &w,
        &["--security-opt", "seccomp=unconfined"],
        &["unshare", "-U", "true"],
    );
    let nnp = run(
        &w,
        &["--security-opt", "no-new-privileges"],
        &["grep", "-E", "^(NoNewPrivs|Seccomp):", "/proc/self/status"],
    );
    assert_eq!(
        nnp.split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1", "Seccomp:", "2"]
    );
    // Allowed calls still work: threads (clone without namespace flags), personality.
    assert_eq!(run(&w, &[], &["linux32", "uname", "-m"]).trim(), "i686");

    let (code, err) = run_fails(&w, &["--cap-add", "NOPE"], &["true"]);
    assert_eq!(code, Some(125));
    assert!(err.contains("unknown capability: \"CAP_NOPE\""), "{err}");

    finish(w);
}

#[test]
fn run_flags_mean_what_they_mean_in_docker() {
    let w = loaded();

    // -u
    let id = run(&w, &["-u", "1000:1001"], &["id"]);
    assert!(id.starts_with("uid=1000(app) gid=1001"), "{id}");

    // --read-only, with --tmpfs for scratch space.
    let (_, err) = run_fails(&w, &["--read-only"], &["touch", "/x"]);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        run(
            &w,
            &["--read-only", "--tmpfs", "/scratch:size=1m"],
            &["sh", "-c", "touch /scratch/x && df -k /scratch | tail -1"]
        )
        .split_whitespace()
        .nth(1),
        Some("1024")
    );
    let mounts = run(&w, &["--tmpfs", "/t"], &["cat", "/proc/self/mountinfo"]);
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/t"))
        .unwrap_or_else(|| panic!("{mounts}"));
    assert!(
        line.contains("noexec") && line.contains(" - tmpfs "),
        "{line}"
    );

    // --ulimit, --shm-size, --sysctl.
    assert_eq!(
        run(
            &w,
            &["--ulimit", "nofile=100:200"],
            &["sh", "-c", "ulimit -n; ulimit -Hn"]
        ),
        "100\n200\n"
    );
    let shm = run(&w, &["--shm-size", "128m"], &["df", "-k", "/dev/shm"]);
    assert_eq!(
        shm.lines().last().and_then(|l| l.split_whitespace().nth(1)),
        Some("131072")
    );
    let shm = run(&w, &[], &["df", "-k", "/dev/shm"]);
    assert_eq!(
        shm.lines().last().and_then(|l| l.split_whitespace().nth(1)),
        Some("65536")
    );
    assert_eq!(
        run(
            &w,
            &[
                "--sysctl",
                "net.ipv4.ip_forward=1",
                "--sysctl",
                "kernel.shmmni=1000"
            ],
            &[
                "sh",
                "-c",
                "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni"
            ]
        ),
        "1\n1000\n"
    );
    let (code, err) = run_fails(&w, &["--sysctl", "kernel.hostname=x"], &["true"]);
    assert_eq!(code, Some(125));
    assert!(err.contains("is not allowed"), "{err}");
    // The API refuses it too, for clients that do not check.
    let (status, body) = api_create(
        &w,
        r#"{"Image":"busybox","HostConfig":{"Sysctls":{"kernel.hostname":"x"}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body.trim(),
        r#"{"message":"sysctl 'kernel.hostname' is not allowed"}"#
    );
    let (status, body) = api_create(
        &w,
        r#"{"Image":"busybox","HostConfig":{"IpcMode":"host","Sysctls":{"kernel.shmmax":"1"}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not allowed in host ipc mode"), "{body}");

    // --pid host: the host's init is visible; otherwise the container's own process is 1.
    assert_eq!(
        run(&w, &[], &["cat", "/proc/1/cmdline"]),
        "cat\0/proc/1/cmdline\0"
    );
    let host_init = std::fs::read("/proc/1/cmdline").expect("host init");
    assert_eq!(
        run(&w, &["--pid", "host"], &["cat", "/proc/1/cmdline"]).into_bytes(),
        host_init
    );

    // --ipc host shares the host's IPC namespace; private and shareable do not.
    let host_ipc = std::fs::read_link("/proc/self/ns/ipc").expect("host ipc ns");
    let host_ipc = host_ipc.to_string_lossy();
    assert_eq!(
        run(&w, &["--ipc", "host"], &["readlink", "/proc/self/ns/ipc"]).trim(),
        host_ipc
    );
    for mode in ["private", "shareable"] {
        assert_ne!(
            run(&w, &["--ipc", mode], &["readlink", "/proc/self/ns/ipc"]).trim(),
            host_ipc
        );
    }

    // --device, with the cgroup allowing it.
    assert_eq!(
        run(
            &w,
            &["--device", "/dev/zero:/dev/myzero"],
            &["sh", "-c", "head -c 5 /dev/myzero | wc -c"]
        )
        .trim(),
        "5"
    );
    let (code, err) = run_fails(&w, &["--device", "/etc/hostname"], &["true"]);
    assert_eq!(code, Some(125));
    assert!(err.contains("not a device node"), "{err}");

    // --privileged: the host's device nodes, and the cgroup lets them be used.
    let dev = run(&w, &["--privileged"], &["ls", "/dev"]);
    let host_dev: Vec<String> = std::fs::read_dir("/dev")
        .expect("/dev")
        .flatten()
        .filter(|e| {
            use std::os::unix::fs::FileTypeExt;
            e.file_type()
                .is_ok_and(|t| t.is_block_device() || t.is_char_device())
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "console" && n != "ptmx")
        .collect();
    assert!(!host_dev.is_empty());
    for d in &host_dev {
        assert!(dev.split_whitespace().any(|x| x == d), "{d} missing: {dev}");
    }
    assert_eq!(
        run(
            &w,
            &["--privileged"],
            &["sh", "-c", "head -c 3 /dev/kmsg >/dev/null && echo read"]
        ),
        "read\n"
    );
    let (_, err) = run_fails(&w, &[], &["ls", "/dev/kmsg"]);
    assert!(err.contains("No such file"), "{err}");

    // --label
    let id = w.docker_ok(&["create", "--label", "team=infra", "busybox", "true"]);
    let id = id.trim();
    assert_eq!(
        w.docker_ok(&["inspect", "-f", "{{.Config.Labels.team}}", id])
            .trim(),
        "infra"
    );
    let ps = w.docker_ok(&["ps", "-a", "--filter", "label=team=infra", "-q"]);
    assert_eq!(ps.trim(), &id[..12]);
    w.docker_ok(&["rm", id]);

    finish(w);
}

#[test]
fn volumes_outlive_containers() {
    let w = loaded();
    let name = "wharf-cfg-vol";

    // create / ls / inspect
    assert_eq!(
        w.docker_ok(&["volume", "create", "--label", "env=test", name])
            .trim(),
        name
    );
    let ls = w.docker_ok(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    assert!(ls.lines().any(|l| l == format!("local {name}")), "{ls}");
    let mountpoint = w.docker_ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", name]);
    let mountpoint = PathBuf::from(mountpoint.trim());
    assert_eq!(
        mountpoint,
        w.data_dir().join("volumes").join(name).join("_data")
    );
    assert!(mountpoint.is_dir());
    assert_eq!(
        w.docker_ok(&[
            "volume",
            "inspect",
            "-f",
            "{{.Labels.env}} {{.Scope}}",
            name
        ])
        .trim(),
        "test local"
    );
    let filtered = w.docker_ok(&["volume", "ls", "-q", "--filter", "label=env=test"]);
    assert_eq!(filtered.trim(), name);

    // Data written by one container is read by the next; and lands in the mountpoint.
    run(
        &w,
        &["-v", &format!("{name}:/data")],
        &["sh", "-c", "echo persisted > /data/f"],
    );
    assert_eq!(
        run(
            &w,
            &["-v", &format!("{name}:/data:ro")],
            &["cat", "/data/f"]
        ),
        "persisted\n"
    );
    assert_eq!(
        std::fs::read_to_string(mountpoint.join("f")).expect("volume file"),
        "persisted\n"
    );

    // In use: rm refused with 409, even forced.
    let holder = w.docker_ok(&["create", "-v", &format!("{name}:/data"), "busybox", "true"]);
    let holder = holder.trim();
    let out = w.docker(&["volume", "rm", name]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("remove {name}: volume is in use - [{holder}]")),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["volume", "rm", "-f", name]);
    assert!(!out.status.success());
    let mounts = w.docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}} {{.RW}}{{end}}",
        holder,
    ]);
    assert_eq!(mounts.trim(), format!("volume {name} /data true"));
    w.docker_ok(&["rm", holder]);
    w.docker_ok(&["volume", "rm", name]);
    assert!(!mountpoint.exists());
    let out = w.docker(&["volume", "inspect", name]);
    assert!(
        text(&out.stderr).contains("no such volume"),
        "{}",
        text(&out.stderr)
    );

    // -v name:/path creates the volume, seeded with the image's content at /path.
    let seeded = "wharf-cfg-seeded";
    assert!(run(
        &w,
        &["-v", &format!("{seeded}:/etc")],
        &["cat", "/etc/passwd"]
    )
    .contains("root:"));
    let data = w.data_dir().join("volumes").join(seeded).join("_data");
    assert!(std::fs::read_to_string(data.join("passwd"))
        .expect("seeded passwd")
        .contains("root:"));
    // ... but only when new: content the volume already has is kept.
    std::fs::write(data.join("passwd"), "mine\n").expect("write");
    assert_eq!(
        run(
            &w,
            &["-v", &format!("{seeded}:/etc")],
            &["cat", "/etc/passwd"]
        ),
        "mine\n"
    );
    w.docker_ok(&["volume", "rm", seeded]);

    // Anonymous volumes: kept by rm, removed by rm -v and by prune.
    let a = w.docker_ok(&["create", "-v", "/scratch", "busybox", "true"]);
    let a = a.trim();
    let anon = w.docker_ok(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", a]);
    let anon = anon.trim().to_string();
    assert_eq!(anon.len(), 64, "{anon}");
    w.docker_ok(&["rm", "-v", a]);
    assert!(!w.docker_ok(&["volume", "ls", "-q"]).contains(&anon));
    let b = w.docker_ok(&["create", "-v", "/scratch", "busybox", "true"]);
    let b = b.trim();
    let anon = w.docker_ok(&["inspect", "-f", "{{range .Mounts}}{{.Name}}{{end}}", b]);
    let anon = anon.trim().to_string();
    w.docker_ok(&["rm", b]);
    w.docker_ok(&["volume", "create", "keepme"]);
    let busy = w.docker_ok(&["create", "-v", "wharf-busy:/b", "busybox", "true"]);
    let dangling = w.docker_ok(&["volume", "ls", "-q", "--filter", "dangling=true"]);
    assert!(dangling.lines().any(|l| l == "keepme"), "{dangling}");
    assert!(!dangling.contains("wharf-busy"), "{dangling}");
    let used = w.docker_ok(&["volume", "ls", "-q", "--filter", "dangling=false"]);
    assert_eq!(used.trim(), "wharf-busy");
    w.docker_ok(&["rm", busy.trim()]);
    w.docker_ok(&["volume", "rm", "wharf-busy"]);
    let pruned = w.docker_ok(&["volume", "prune", "-f"]);
    assert!(pruned.contains(&anon), "{pruned}");
    let left = w.docker_ok(&["volume", "ls", "-q"]);
    assert_eq!(left.trim(), "keepme", "named volumes survive a plain prune");
    let pruned = w.docker_ok(&["volume", "prune", "-af"]);
    assert!(pruned.contains("keepme"), "{pruned}");
    // An image's VOLUME: an anonymous volume seeded with the image's content there.
    w.docker_ok(&[
        "run",
        "--name",
        "wharf-mk",
        "busybox",
        "sh",
        "-c",
        "mkdir /data && echo seeded > /data/seed",
    ]);
    w.docker_ok(&[
        "commit",
        "--change",
        "VOLUME /data",
        "wharf-mk",
        "wharf-vimg",
    ]);
    w.docker_ok(&["rm", "wharf-mk"]);
    assert_eq!(
        w.docker_ok(&[
            "run",
            "--name",
            "wharf-vr",
            "wharf-vimg",
            "cat",
            "/data/seed"
        ]),
        "seeded\n"
    );
    let m = w.docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Destination}} {{len .Name}}{{end}}",
        "wharf-vr",
    ]);
    assert_eq!(m.trim(), "volume /data 64");
    w.docker_ok(&["rm", "-v", "wharf-vr"]);
    w.docker_ok(&["rmi", "wharf-vimg"]);
    assert_eq!(w.docker_ok(&["volume", "ls", "-q"]).trim(), "");

    // --rm takes anonymous volumes with it.
    run(&w, &["-v", "/gone"], &["true"]);
    assert_eq!(w.docker_ok(&["volume", "ls", "-q"]).trim(), "");

    // Bad input.
    let out = w.docker(&["volume", "create", "a/b"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("includes invalid characters for a local volume name"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["volume", "rm", "nosuchvolume"]);
    assert!(
        text(&out.stderr).contains("no such volume"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["volume", "create", "--driver", "nfs", "x1"]);
    assert!(
        text(&out.stderr).contains("plugin \"nfs\" not found"),
        "{}",
        text(&out.stderr)
    );

    finish(w);
}

#[test]
fn bind_mounts_and_mount_flag() {
    let w = loaded();
    let host = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let hp = host.path().to_str().expect("utf-8").to_string();
    std::fs::write(host.path().join("in"), "from-host\n").expect("write");

    // -v /host:/ctr and :ro
    assert_eq!(
        run(
            &w,
            &["-v", &format!("{hp}:/mnt")],
            &["sh", "-c", "cat /mnt/in; echo out > /mnt/out"]
        ),
        "from-host\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).expect("out"),
        "out\n"
    );
    let (_, err) = run_fails(&w, &["-v", &format!("{hp}:/mnt:ro")], &["touch", "/mnt/x"]);
    assert!(err.contains("Read-only file system"), "{err}");

    // A missing -v source is created; a missing --mount source is an error.
    let fresh = host.path().join("new/dir");
    run(&w, &["-v", &format!("{}:/n", fresh.display())], &["true"]);
    assert!(fresh.is_dir());
    let (code, err) = run_fails(
        &w,
        &["--mount", "type=bind,source=/nonexistent-wharf,target=/x"],
        &["true"],
    );
    assert_eq!(code, Some(125));
    assert!(
        err.contains("bind source path does not exist: /nonexistent-wharf"),
        "{err}"
    );

    // --mount bind readonly with propagation; tmpfs; volume. The host dir is made a
    // shared mount so that rslave shows as a `master:` peer group in the container.
    let shared = SharedMount::new(host.path());
    let mounts = run(
        &w,
        &[
            "--mount",
            &format!("type=bind,source={hp},target=/b,readonly,bind-propagation=rslave"),
            "--mount",
            "type=tmpfs,target=/t,tmpfs-size=2m",
            "--mount",
            "type=volume,source=wharf-mnt-vol,target=/v",
        ],
        &["sh", "-c", "cat /b/in; cat /proc/self/mountinfo"],
    );
    assert!(mounts.starts_with("from-host\n"), "{mounts}");
    let find = |target: &str| {
        mounts
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .unwrap_or_else(|| panic!("{target}: {mounts}"))
            .to_string()
    };
    let b = find("/b");
    assert!(
        b.split(' ').nth(5).is_some_and(|o| o.starts_with("ro")),
        "{b}"
    );
    assert!(b.contains(" master:"), "rslave propagation: {b}");
    drop(shared);
    assert!(find("/t").contains(" - tmpfs "), "{mounts}");
    find("/v");
    assert!(w
        .docker_ok(&["volume", "ls", "-q"])
        .contains("wharf-mnt-vol"));
    w.docker_ok(&["volume", "rm", "wharf-mnt-vol"]);

    // inspect Mounts of a bind.
    let id = w.docker_ok(&["create", "-v", &format!("{hp}:/mnt:ro"), "busybox", "true"]);
    let id = id.trim();
    let m = w.docker_ok(&[
        "inspect",
        "-f",
        "{{range .Mounts}}{{.Type}} {{.Source}} {{.Destination}} {{.Mode}} {{.RW}} {{.Propagation}}{{end}}",
        id,
    ]);
    assert_eq!(m.trim(), format!("bind {hp} /mnt ro false rprivate"));
    w.docker_ok(&["rm", id]);

    // Bad input: over /proc, relative target, volume-opt the local driver cannot do.
    let (code, err) = run_fails(&w, &["-v", &format!("{hp}:/proc")], &["true"]);
    assert_eq!(code, Some(125));
    assert!(
        err.contains("cannot be mounted because it is not of type proc"),
        "{err}"
    );
    let (_, err) = run_fails(&w, &["-v", &format!("{hp}:/proc/sys")], &["true"]);
    assert!(
        err.contains("cannot be mounted because it is inside /proc"),
        "{err}"
    );
    let (_, err) = run_fails(
        &w,
        &[
            "--mount",
            "type=volume,source=wharf-opt,target=/v,volume-opt=type=nfs",
        ],
        &["true"],
    );
    assert!(err.contains("missing required option: \"device\""), "{err}");
    assert!(!w.docker_ok(&["volume", "ls", "-q"]).contains("wharf-opt"));
    let out = w.docker(&["volume", "create", "--opt", "size=1g", "wharf-size"]);
    assert!(
        text(&out.stderr).contains("invalid option: \"size\""),
        "{}",
        text(&out.stderr)
    );

    // The local driver's options: a tmpfs volume from --mount volume-opt, and a
    // `type=none,o=bind` volume over a host directory.
    let df = run(
        &w,
        &[
            "--mount",
            "type=volume,source=wharf-tmpfs,target=/v,volume-opt=type=tmpfs,volume-opt=device=tmpfs,volume-opt=o=size=1m",
        ],
        &["sh", "-c", "df -k /v | tail -1; grep ' /v ' /proc/self/mountinfo"],
    );
    assert_eq!(df.split_whitespace().nth(1), Some("1024"), "{df}");
    assert!(df.contains(" - tmpfs "), "{df}");
    assert_eq!(
        w.docker_ok(&[
            "volume",
            "inspect",
            "-f",
            "{{.Options.type}} {{.Options.o}}",
            "wharf-tmpfs"
        ])
        .trim(),
        "tmpfs size=1m"
    );
    w.docker_ok(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &format!("device={hp}"),
        "wharf-bindvol",
    ]);
    assert_eq!(
        run(&w, &["-v", "wharf-bindvol:/b"], &["cat", "/b/in"]),
        "from-host\n"
    );
    w.docker_ok(&["volume", "rm", "wharf-tmpfs", "wharf-bindvol"]);
    assert!(
        host.path().join("in").exists(),
        "removing a bind volume keeps the host data"
    );

    finish(w);
}

/// A directory bind-mounted on itself and made shared; unmounted on drop.
struct SharedMount(PathBuf);

impl SharedMount {
    fn new(dir: &std::path::Path) -> SharedMount {
        let sh = |args: &[&str]| {
            let ok = std::process::Command::new("mount")
                .args(args)
                .arg(dir)
                .args(if args[0] == "--bind" {
                    vec![dir]
                } else {
                    vec![]
                })
                .status()
                .expect("run mount")
                .success();
            assert!(ok, "mount {args:?} {}", dir.display());
        };
        sh(&["--bind"]);
        let guard = SharedMount(dir.to_path_buf());
        sh(&["--make-shared"]);
        guard
    }
}

impl Drop for SharedMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// The container's cgroup directory of `controller` on the host.
fn cgroup_dir(w: &Wharf, controller: &str, id: &str) -> PathBuf {
    let parent = wharf_controller::up::cgroup_parent(&w.data_dir());
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(parent)
        .join(id)
}

fn read_trim(p: &PathBuf) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn resource_limits_stats_and_oom() {
    let w = loaded();
    let id = w.docker_ok(&[
        "run",
        "-d",
        "--memory",
        "64m",
        "--memory-swap",
        "96m",
        "--cpus",
        "0.5",
        "--cpu-shares",
        "512",
        "--pids-limit",
        "20",
        "busybox",
        "sleep",
        "60",
    ]);
    let id = id.trim();
    let mem = cgroup_dir(&w, "memory", id);
    assert_eq!(read_trim(&mem.join("memory.limit_in_bytes")), "67108864");
    assert_eq!(
        read_trim(&mem.join("memory.memsw.limit_in_bytes")),
        "100663296"
    );
    let cpu = cgroup_dir(&w, "cpu", id);
    assert_eq!(read_trim(&cpu.join("cpu.cfs_quota_us")), "50000");
    assert_eq!(read_trim(&cpu.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read_trim(&cpu.join("cpu.shares")), "512");
    assert_eq!(
        read_trim(&cgroup_dir(&w, "pids", id).join("pids.max")),
        "20"
    );
    // The container sees its own limit.
    let inside = w.docker_ok(&[
        "exec",
        id,
        "cat",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    assert_eq!(inside.trim(), "67108864");
    let hc = w.docker_ok(&[
        "inspect",
        "-f",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}} {{.HostConfig.PidsLimit}}",
        id,
    ]);
    assert_eq!(hc.trim(), "67108864 500000000 20");

    // stats --no-stream
    let stats = w.docker_ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.ID}}|{{.MemUsage}}|{{.PIDs}}|{{.CPUPerc}}",
        id,
    ]);
    let f: Vec<&str> = stats.trim().split('|').collect();
    assert_eq!(f.len(), 4, "{stats}");
    assert_eq!(f[0], &id[..12]);
    assert!(f[1].ends_with("/ 64MiB"), "{stats}");
    assert!(!f[1].starts_with("0B"), "{stats}");
    assert_eq!(f[2], "1", "{stats}");
    assert!(f[3].ends_with('%'), "{stats}");
    w.docker_ok(&["rm", "-f", id]);

    // The pids limit holds: the sixth task cannot be forked.
    let out = w.docker(&[
        "run",
        "--rm",
        "--pids-limit",
        "5",
        "busybox",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
    ]);
    assert!(
        text(&out.stderr).contains("can't fork"),
        "{}",
        text(&out.stderr)
    );

    // OOM: killed, 137, OOMKilled.
    let oom = w.docker(&[
        "run",
        "--name",
        "wharf-oom",
        "--memory",
        "16m",
        "--memory-swap",
        "16m",
        "busybox",
        "sh",
        "-c",
        "x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(oom.status.code(), Some(137), "{}", text(&oom.stderr));
    assert_eq!(
        w.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.OOMKilled}} {{.State.ExitCode}}",
            "wharf-oom"
        ])
        .trim(),
        "true 137"
    );
    w.docker_ok(&["rm", "wharf-oom"]);

    // Bad input.
    let (code, err) = run_fails(&w, &["--memory", "1m"], &["true"]);
    assert_eq!(code, Some(125));
    assert!(err.contains("Minimum memory limit allowed is 6MB"), "{err}");
    let (_, err) = run_fails(&w, &["--memory", "32m", "--memory-swap", "16m"], &["true"]);
    assert!(
        err.contains("Minimum memoryswap limit should be larger than memory limit"),
        "{err}"
    );

    finish(w);
}

/// docker-py 7.1, over the instance's unix socket: the SDK's volume calls and the
/// `HostConfig` it builds for volumes, tmpfs, limits and capabilities.
const DOCKER_PY_SCRIPT: &str = r#"
import os, sys, docker
c = docker.DockerClient(base_url="unix://" + os.environ["WHARF_SOCK"], version="auto")
v = c.volumes.create("pyvol", labels={"by": "py"})
assert v.name == "pyvol" and v.attrs["Driver"] == "local", v.attrs
assert [x.name for x in c.volumes.list(filters={"label": "by=py"})] == ["pyvol"]
out = c.containers.run("busybox", ["sh", "-c", "echo py > /d/f; cat /d/f; df -k /t | tail -1"],
    volumes={"pyvol": {"bind": "/d", "mode": "rw"}}, tmpfs={"/t": "size=2m"}, remove=True)
lines = out.decode().splitlines()
assert lines[0] == "py", lines
assert lines[1].split()[1] == "2048", lines
out = c.containers.run("busybox", ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    "/sys/fs/cgroup/pids/pids.max"], mem_limit="32m", pids_limit=7, cap_drop=["ALL"], remove=True)
assert out.decode().split() == ["33554432", "7"], out
ctr = c.containers.create("busybox", "true", volumes={"pyvol": {"bind": "/d", "mode": "ro"}})
try:
    c.volumes.get("pyvol").remove()
    sys.exit("removing a volume in use succeeded")
except docker.errors.APIError as e:
    assert e.status_code == 409 and "volume is in use" in str(e), e
ctr.remove()
c.volumes.get("pyvol").remove()
try:
    c.volumes.get("pyvol")
    sys.exit("a removed volume is still there")
except docker.errors.NotFound:
    pass
print("docker-py ok")
"#;

#[test]
fn docker_py_volumes_and_limits() {
    let w = loaded();
    let out = std::process::Command::new("python3")
        .args(["-c", DOCKER_PY_SCRIPT])
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("DOCKER_HOST")
        .env("WHARF_SOCK", w.socket_path())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "docker-py:\n{}\n{}\n--- wharf log ---\n{}",
        text(&out.stdout),
        text(&out.stderr),
        w.log()
    );
    assert_eq!(text(&out.stdout).trim(), "docker-py ok");
    finish(w);
}
