//! End-to-end tests of the shim: a real busybox rootfs, a real overlay mount, real
//! namespaces and cgroups, driven through `spawn_shim`, `ShimClient` and `attach` as the
//! agent drives them. Needs root; skipped otherwise.
//!
//! The shim binary is `wharf-shim-test` (node/src/bin), which dispatches
//! `shim --state-dir <dir>` exactly as `wharf` does. Every test cleans up through a guard,
//! even when it fails: it kills what is left, unmounts and removes its cgroups.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use wharf_node::image::MountSpec;
use wharf_node::runtime::{
    self, attach, read_log_entries, AttachEvent, ErrorKind, Exit, ShimClient, ShimConfig, Status,
};
use wharf_protocol::agent::ContainerRunSpec;
use wharf_protocol::ids::{Digest, ImageId};
use wharf_protocol::ContainerId;

static COUNTER: AtomicU32 = AtomicU32::new(0);
const SHIM_EXE: &str = env!("CARGO_BIN_EXE_wharf-shim-test");

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One container's world: temp dirs, a rootfs, a unique cgroup; cleaned up on drop.
struct Fixture {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    state: PathBuf,
    merged: PathBuf,
    runtime_root: PathBuf,
    cgroup_parent: String,
    cgroups_path: String,
    id: ContainerId,
}

impl Fixture {
    fn new() -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let tmp = tempfile::Builder::new()
            .prefix("wharf-shim-")
            .tempdir()
            .unwrap();
        let base = tmp.path().to_path_buf();
        let lower = base.join("lower");
        for d in ["bin", "etc", "tmp"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
        for applet in ["sh", "echo", "sleep", "cat", "ls"] {
            std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
        }
        std::fs::write(lower.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(lower.join("etc/group"), "root:x:0:\n").unwrap();
        std::fs::write(lower.join("etc/notexec"), "x\n").unwrap();
        for d in ["upper", "work", "merged", "runtime"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        let mut bytes = [0u8; 32];
        let seed = format!(
            "{}-{}-{:?}",
            std::process::id(),
            n,
            std::time::SystemTime::now()
        );
        bytes.copy_from_slice(&Digest::of(seed.as_bytes()).0);
        let id = ContainerId::from_bytes(bytes);
        let state = base.join("containers").join(id.as_str());
        std::fs::create_dir_all(&state).unwrap();
        let cgroup_parent = format!("wharf-test-{}-{}", std::process::id(), n);
        Fixture {
            cgroups_path: format!("/{}/{}", cgroup_parent, id.as_str()),
            cgroup_parent,
            merged: base.join("merged"),
            runtime_root: base.join("runtime"),
            state,
            base,
            id,
            _tmp: tmp,
        }
    }

    fn run_spec(&self, args: &[&str]) -> ContainerRunSpec {
        ContainerRunSpec {
            id: self.id.clone(),
            image_id: ImageId(Digest([0; 32])),
            diff_ids: vec![],
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            working_dir: "/".into(),
            user: String::new(),
            hostname: "shimtest".into(),
            tty: false,
            open_stdin: false,
            stop_signal: 15,
            host: Default::default(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.state.join(format!("{}-json.log", self.id.as_str()))
    }

    fn write_config(&self, run: ContainerRunSpec) {
        let config = ShimConfig {
            version: runtime::SHIM_CONFIG_VERSION,
            run,
            mount: MountSpec {
                lowerdir: vec![self.base.join("lower").display().to_string()],
                upperdir: self.base.join("upper"),
                workdir: self.base.join("work"),
                target: self.merged.clone(),
                cwd: self.base.clone(),
            },
            cgroups_path: self.cgroups_path.clone(),
            runtime_root: self.runtime_root.clone(),
            log_path: self.log_path(),
            options: Default::default(),
            init_path: None,
        };
        config.write(&self.state).unwrap();
    }

    async fn spawn(&self, run: ContainerRunSpec) -> Result<(), runtime::RuntimeError> {
        self.write_config(run);
        runtime::spawn_shim(Path::new(SHIM_EXE), &self.state).await
    }

    fn shim_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.state.join("shim.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let leaf = e.path().join(self.cgroups_path.trim_start_matches('/'));
                if leaf.exists() {
                    out.push(leaf);
                }
            }
        }
        out
    }

    fn is_mounted(&self) -> bool {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let target = self.merged.display().to_string();
        info.lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
    }
}

/// Alive and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
            !matches!(state, Some(Some('Z')) | Some(Some('X')))
        }
        Err(_) => false,
    }
}

async fn gone_within(pid: i32, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !alive(pid)
}

impl Drop for Fixture {
    fn drop(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        if let Some(pid) = self.shim_pid() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // Kill whatever is left in the container's cgroup, then remove the cgroups.
        for leaf in self.cgroup_dirs() {
            if let Ok(procs) = std::fs::read_to_string(leaf.join("cgroup.procs")) {
                for p in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            let _ = nix::mount::umount2(&self.merged, nix::mount::MntFlags::MNT_DETACH);
        }
        for leaf in self.cgroup_dirs() {
            let _ = std::fs::remove_dir(&leaf);
        }
        if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in entries.flatten() {
                let _ = std::fs::remove_dir(e.path().join(&self.cgroup_parent));
            }
        }
    }
}

/// Collect an attach stream until the exit: (stdout, stderr, exit).
async fn collect(stream: &mut runtime::AttachStream) -> (Vec<u8>, Vec<u8>, Option<Exit>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = async {
        while let Some(event) = stream.next().await.unwrap() {
            match event {
                AttachEvent::Output { stream: 1, data } => out.extend_from_slice(&data),
                AttachEvent::Output { data, .. } => err.extend_from_slice(&data),
                AttachEvent::Exit(exit) => return Some(exit),
            }
        }
        None
    };
    let exit = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("container did not exit within 30s");
    (out, err, exit)
}

/// Delete and check that nothing is left: shim, container process, mount, cgroup.
async fn delete_and_check(fx: &Fixture, container_pid: Option<i32>) {
    let shim_pid = fx.shim_pid().expect("shim.pid");
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    client.delete().await.unwrap();
    assert!(
        gone_within(shim_pid, Duration::from_secs(10)).await,
        "shim {shim_pid} still runs"
    );
    if let Some(pid) = container_pid {
        assert!(!alive(pid), "container process {pid} still runs");
    }
    assert!(!fx.is_mounted(), "rootfs still mounted");
    assert!(
        fx.cgroup_dirs().is_empty(),
        "cgroups left: {:?}",
        fx.cgroup_dirs()
    );
    assert!(
        !fx.runtime_root.join(fx.id.as_str()).exists(),
        "libcontainer state left"
    );
    assert!(!fx.state.join("shim.sock").exists(), "socket left");
    assert!(ShimClient::connect(&fx.state).await.is_err());
}

#[tokio::test]
async fn echo_reaches_attacher_and_log() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    fx.spawn(fx.run_spec(&["echo", "hi"])).await.unwrap();
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    assert_eq!(client.state().await.unwrap().status, Status::Created);
    let mut stream = attach(&fx.state, false).await.unwrap();
    let pid = client.start().await.unwrap();
    assert!(pid > 0);
    let (out, err, exit) = collect(&mut stream).await;
    assert_eq!(String::from_utf8_lossy(&out), "hi\n");
    assert!(err.is_empty(), "stderr: {}", String::from_utf8_lossy(&err));
    let exit = exit.expect("exit frame");
    assert_eq!(exit.code, 0);
    assert!(exit.started_at_ns > 0 && exit.finished_at_ns >= exit.started_at_ns);
    assert_eq!(client.wait().await.unwrap().code, 0);
    let state = client.state().await.unwrap();
    assert_eq!(
        (state.status, state.exit.map(|e| e.code)),
        (Status::Exited, Some(0))
    );
    assert_eq!(runtime::read_exit(&fx.state).map(|e| e.code), Some(0));

    let log = std::fs::read_to_string(fx.log_path()).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].starts_with(r#"{"log":"hi\n","stream":"stdout","time":""#),
        "{log}"
    );
    assert!(lines[0].ends_with(r#"Z"}"#), "{log}");
    let entries = read_log_entries(&fx.log_path()).unwrap();
    assert_eq!(
        (entries[0].stream, entries[0].data.as_slice()),
        (1, &b"hi\n"[..])
    );

    // A late attacher gets the exit at once.
    let mut late = attach(&fx.state, false).await.unwrap();
    assert_eq!(late.next().await.unwrap(), Some(AttachEvent::Exit(exit)));
    delete_and_check(&fx, Some(pid as i32)).await;
    assert_eq!(
        runtime::read_exit(&fx.state).map(|e| e.code),
        Some(0),
        "exit.json outlives the shim"
    );
}

#[tokio::test]
async fn exit_code_and_stderr() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    fx.spawn(fx.run_spec(&["sh", "-c", "echo out; echo err >&2; printf partial; exit 3"]))
        .await
        .unwrap();
    let mut stream = attach(&fx.state, false).await.unwrap();
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    client.start().await.unwrap();
    let (out, err, exit) = collect(&mut stream).await;
    assert_eq!(String::from_utf8_lossy(&out), "out\npartial");
    assert_eq!(String::from_utf8_lossy(&err), "err\n");
    assert_eq!(exit.map(|e| e.code), Some(3));
    assert_eq!(client.wait().await.unwrap().code, 3);
    let entries = read_log_entries(&fx.log_path()).unwrap();
    let mut got: Vec<(u8, String)> = entries
        .iter()
        .map(|e| (e.stream, String::from_utf8_lossy(&e.data).into_owned()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            (1, "out\n".to_string()),
            (1, "partial".to_string()),
            (2, "err\n".to_string())
        ]
    );
    delete_and_check(&fx, None).await;
}

#[tokio::test]
async fn sigkill_gives_137() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    fx.spawn(fx.run_spec(&["sleep", "60"])).await.unwrap();
    let mut stream = attach(&fx.state, false).await.unwrap();
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    let pid = client.start().await.unwrap();
    let state = client.state().await.unwrap();
    assert_eq!((state.status, state.pid), (Status::Running, pid));
    assert!(alive(pid as i32));
    client.kill(9).await.unwrap();
    let exit = client.wait().await.unwrap();
    assert_eq!(exit.code, 137);
    assert!(!exit.oom_killed);
    let (_, _, attached_exit) = collect(&mut stream).await;
    assert_eq!(attached_exit, Some(exit));
    let refused = client.kill(9).await.unwrap_err();
    assert_eq!(refused.kind(), Some(ErrorKind::InvalidState));
    delete_and_check(&fx, Some(pid as i32)).await;
}

#[tokio::test]
async fn stdin_reaches_the_container() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    let mut run = fx.run_spec(&["cat"]);
    run.open_stdin = true;
    fx.spawn(run).await.unwrap();
    let mut stream = attach(&fx.state, true).await.unwrap();
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    client.start().await.unwrap();
    stream.send_stdin(b"hello\n").await.unwrap();
    stream.close_stdin().await.unwrap();
    let (out, _, exit) = collect(&mut stream).await;
    assert_eq!(String::from_utf8_lossy(&out), "hello\n");
    assert_eq!(exit.map(|e| e.code), Some(0));
    delete_and_check(&fx, None).await;
}

#[tokio::test]
async fn delete_of_a_created_container_leaves_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    fx.spawn(fx.run_spec(&["sleep", "60"])).await.unwrap();
    assert!(fx.is_mounted());
    assert!(
        !fx.cgroup_dirs().is_empty(),
        "container cgroup exists while created"
    );
    delete_and_check(&fx, None).await;
    assert_eq!(runtime::read_exit(&fx.state).map(|e| e.code), Some(137));
}

#[tokio::test]
async fn bulk_output_reaches_every_early_attacher_and_the_log() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    let script = "i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done";
    fx.spawn(fx.run_spec(&["sh", "-c", script])).await.unwrap();
    let mut first = attach(&fx.state, false).await.unwrap();
    let mut second = attach(&fx.state, false).await.unwrap();
    ShimClient::connect(&fx.state)
        .await
        .unwrap()
        .start()
        .await
        .unwrap();
    let want: String = (0..3000).map(|i| format!("line{i}\n")).collect();
    for stream in [&mut first, &mut second] {
        let (out, _, exit) = collect(stream).await;
        assert_eq!(exit.map(|e| e.code), Some(0));
        assert!(
            String::from_utf8_lossy(&out) == want,
            "output differs ({} bytes)",
            out.len()
        );
    }
    let entries = read_log_entries(&fx.log_path()).unwrap();
    let logged: String = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.data))
        .collect();
    assert_eq!(entries.len(), 3000);
    assert!(logged == want);
    delete_and_check(&fx, None).await;
}

#[tokio::test]
async fn tty_containers_get_a_terminal() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    let mut run = fx.run_spec(&["sh", "-c", "read line; echo got:$line; stty size"]);
    run.tty = true;
    run.open_stdin = true;
    fx.spawn(run).await.unwrap();
    let mut stream = attach(&fx.state, true).await.unwrap();
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    client.resize(33, 101).await.unwrap();
    client.start().await.unwrap();
    stream.send_stdin(b"abc\n").await.unwrap();
    let (out, err, exit) = collect(&mut stream).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("got:abc\r\n"), "{out:?}");
    assert!(out.contains("33 101"), "{out:?}");
    assert!(err.is_empty(), "a TTY has one stream");
    assert_eq!(exit.map(|e| e.code), Some(0));
    delete_and_check(&fx, None).await;
}

#[tokio::test]
async fn a_shim_killed_hard_is_replaced_cleanly() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    fx.spawn(fx.run_spec(&["sleep", "60"])).await.unwrap();
    let old_pid = ShimClient::connect(&fx.state)
        .await
        .unwrap()
        .start()
        .await
        .unwrap() as i32;
    let old_shim = fx.shim_pid().unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_shim),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(gone_within(old_shim, Duration::from_secs(5)).await);
    assert!(alive(old_pid), "the container outlives its shim");

    // A new shim for the same container clears the old state, processes and mount.
    fx.spawn(fx.run_spec(&["sleep", "60"])).await.unwrap();
    assert!(
        gone_within(old_pid, Duration::from_secs(5)).await,
        "old process still runs"
    );
    let mut client = ShimClient::connect(&fx.state).await.unwrap();
    let pid = client.start().await.unwrap() as i32;
    client.kill(9).await.unwrap();
    assert_eq!(client.wait().await.unwrap().code, 137);
    delete_and_check(&fx, Some(pid)).await;
}

#[tokio::test]
async fn missing_or_unexecutable_commands_fail_like_docker() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let fx = Fixture::new();
    let err = fx.spawn(fx.run_spec(&["nope"])).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::CommandNotFound), "{err}");
    assert!(
        err.to_string()
            .contains("executable file not found in $PATH"),
        "{err}"
    );
    assert!(
        !fx.is_mounted(),
        "rootfs left mounted after a failed create"
    );

    let err = fx.spawn(fx.run_spec(&["/etc/notexec"])).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::PermissionDenied), "{err}");
    assert!(err.to_string().contains("permission denied"), "{err}");
    assert!(!fx.is_mounted());
    assert!(fx.cgroup_dirs().is_empty());
}
