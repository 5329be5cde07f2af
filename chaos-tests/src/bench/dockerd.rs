//! A private Docker Engine beside Wharf: Debian's `docker.io` installed if absent, then a
//! `containerd` and a `dockerd` of the bench's own, every path under one temporary root,
//! no bridge, no iptables; stopped and wiped when dropped, even on error or Ctrl-C.
//!
//! ```text
//!  ROOT/containerd/{containerd.toml, root/, state/, containerd.sock}   private containerd
//!  ROOT/{data/, exec/, dockerd.pid, daemon.json, key.json, docker.sock} private dockerd
//!      -H unix://ROOT/docker.sock  -H tcp://127.0.0.1:PORT (--tlsverify, Wharf's CA + cert)
//!      --bridge none --iptables=false --ip-masq=false --cgroup-parent wharf-bench-dockerd-PID
//! ```

use super::cli::{Cli, Endpoint};
use super::procmem;
use super::signals;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first executable `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Make sure `dockerd`, `containerd` and `runc` exist: install Debian's `docker.io`
/// (`--no-install-recommends`) when one is missing, with a `policy-rc.d` that keeps the
/// package from starting a system dockerd. Returns what was done, for the report.
pub fn ensure_installed() -> Result<String> {
    if ["dockerd", "containerd", "runc"]
        .iter()
        .all(|b| which(b).is_some())
    {
        return Ok("docker.io already installed".into());
    }
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let wrote_policy = !policy.exists();
    if wrote_policy {
        std::fs::write(
            policy,
            "#!/bin/sh\n# wharf-bench: no service starts\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "docker.io"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    eprintln!("installing Debian's docker.io (apt-get install docker.io)");
    let mut ok = install().map(|s| s.success()).unwrap_or(false);
    if !ok {
        let _ = Command::new("apt-get").arg("update").status();
        ok = install().map(|s| s.success()).unwrap_or(false);
    }
    if wrote_policy {
        let _ = std::fs::remove_file(policy);
    }
    if !ok {
        bail!("apt-get install docker.io failed");
    }
    Ok("docker.io installed by this run".into())
}

/// A running private `containerd` + `dockerd`; both stopped, their mounts, cgroups and
/// files (but the logs) removed on drop.
pub struct Dockerd {
    dockerd: Option<Child>,
    containerd: Option<Child>,
    root: PathBuf,
    /// dockerd's unix socket.
    pub socket: PathBuf,
    /// dockerd's TLS address, `127.0.0.1:PORT`.
    pub addr: String,
    containerd_socket: PathBuf,
    cgroup_parent: String,
    run_containerd_existed: bool,
    cleanup_cli: Option<Cli>,
}

impl Dockerd {
    /// Start containerd and dockerd under `root` (created), serving TLS with the given
    /// `(ca, cert, key)`; returns once `docker version` answers on the unix socket.
    pub fn start(root: &Path, docker: &Path, tls: (&Path, &Path, &Path)) -> Result<Dockerd> {
        let ctd = root.join("containerd");
        std::fs::create_dir_all(&ctd)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut d = Dockerd {
            dockerd: None,
            containerd: None,
            root: root.to_path_buf(),
            socket: root.join("docker.sock"),
            addr: format!("127.0.0.1:{port}"),
            containerd_socket: ctd.join("containerd.sock"),
            cgroup_parent: format!("wharf-bench-dockerd-{}", std::process::id()),
            run_containerd_existed: Path::new("/run/containerd").exists(),
            cleanup_cli: None,
        };
        let config = ctd.join("containerd.toml");
        std::fs::write(&config, containerd_config(&ctd))?;
        let log = std::fs::File::create(root.join("containerd.log"))?;
        d.containerd = Some(
            Command::new(which("containerd").context("containerd not on PATH")?)
                .arg("--config")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .context("spawn containerd")?,
        );
        wait_for(&d.containerd_socket, d.containerd.as_mut(), "containerd")?;

        // dockerd 20.10 writes its libtrust key to /etc/docker/key.json unless told.
        let daemon_json = serde_json::json!({
            "deprecated-key-path": root.join("key.json").display().to_string(),
        });
        std::fs::write(root.join("daemon.json"), daemon_json.to_string())?;
        let log = std::fs::File::create(root.join("dockerd.log"))?;
        let (ca, cert, key) = tls;
        let mut cmd = Command::new(which("dockerd").context("dockerd not on PATH")?);
        cmd.arg("--config-file")
            .arg(root.join("daemon.json"))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .arg("--containerd")
            .arg(&d.containerd_socket)
            .arg("-H")
            .arg(format!("unix://{}", d.socket.display()))
            .arg("-H")
            .arg(format!("tcp://{}", d.addr))
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(ca)
            .arg("--tlscert")
            .arg(cert)
            .arg("--tlskey")
            .arg(key)
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver",
                "overlay2",
                "--log-level",
                "warn",
                "--cgroup-parent",
            ])
            .arg(format!("/{}", d.cgroup_parent))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0);
        d.dockerd = Some(cmd.spawn().context("spawn dockerd")?);
        let cli = d.cli_with(docker, None);
        d.cleanup_cli = Some(cli.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            signals::check()?;
            if cli.run(&["version"]).is_ok() {
                break;
            }
            if let Some(Ok(Some(status))) = d.dockerd.as_mut().map(Child::try_wait) {
                bail!("dockerd exited ({status}); see {}", d.log().display());
            }
            if Instant::now() > deadline {
                bail!("dockerd not ready after 60 s; see {}", d.log().display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(d)
    }

    /// dockerd's log file.
    pub fn log(&self) -> PathBuf {
        self.root.join("dockerd.log")
    }

    /// The CLI aimed at this dockerd, over its unix socket or over mutual TLS with the
    /// client certificates in `certs` (Wharf's: dockerd trusts Wharf's CA).
    pub fn cli_with(&self, docker: &Path, tls_certs: Option<&Path>) -> Cli {
        let endpoint = match tls_certs {
            Some(certs) => Endpoint::Tls {
                addr: self.addr.clone(),
                cert_path: certs.to_path_buf(),
            },
            None => Endpoint::Unix(self.socket.clone()),
        };
        let config = self.root.join("docker-config");
        let _ = std::fs::create_dir_all(&config);
        Cli {
            docker: docker.to_path_buf(),
            endpoint,
            config,
        }
    }

    /// Pids of every process of this engine: dockerd, containerd and the containerd shims
    /// (not the containers' own processes).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = [&self.dockerd, &self.containerd]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect();
        pids.extend(procmem::containerd_shims(&self.containerd_socket));
        pids
    }

    fn stop_child(child: &mut Option<Child>, grace: Duration) {
        let Some(c) = child.as_mut() else {
            return;
        };
        if let Ok(pid) = i32::try_from(c.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        *child = None;
    }
}

/// The containerd 1.6 configuration keeping every path under `dir`.
fn containerd_config(dir: &Path) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    format!(
        "version = 2\n\
         root = \"{root}\"\n\
         state = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n\
         [ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [debug]\n  address = \"\"\n\
         [metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
        root = p("root"),
        state = p("state"),
        sock = p("containerd.sock"),
        opt = p("opt"),
    )
}

fn wait_for(socket: &Path, child: Option<&mut Child>, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    while !socket.exists() {
        signals::check()?;
        if let Some(Ok(Some(status))) = child.as_mut().map(|c| c.try_wait()) {
            bail!("{what} exited ({status})");
        }
        if Instant::now() > deadline {
            bail!("{what} not ready after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Mount points at or under `root`, deepest first, from the text of `/proc/self/mountinfo`.
pub fn mounts_under(mountinfo: &str, root: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mount)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(root))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    out.dedup();
    out
}

/// Undo mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Remove the cgroup directory `name` under every hierarchy, children first.
fn remove_cgroups(name: &str) {
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(rd.flatten().map(|e| e.path()));
    }
    for r in roots {
        remove_tree_of_dirs(&r.join(name));
    }
}

fn remove_tree_of_dirs(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree_of_dirs(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(cli) = &self.cleanup_cli {
            if self.dockerd.is_some() {
                cli.remove_all_containers();
            }
        }
        Dockerd::stop_child(&mut self.dockerd, Duration::from_secs(20));
        // Shims left behind (dockerd killed mid-way): their containers first, then them.
        for shim in procmem::containerd_shims(&self.containerd_socket) {
            for pid in procmem::children(shim) {
                if let Ok(p) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
                }
            }
            if let Ok(p) = i32::try_from(shim) {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
        }
        Dockerd::stop_child(&mut self.containerd, Duration::from_secs(10));
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in mounts_under(&mountinfo, &self.root) {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        remove_cgroups(&self.cgroup_parent);
        if !self.run_containerd_existed {
            // Shim sockets live in /run/containerd/s whatever the config says.
            let _ = std::fs::remove_dir("/run/containerd/s");
            let _ = std::fs::remove_dir("/run/containerd");
        }
        // Everything but the logs (the harness keeps them when it fails).
        for sub in ["data", "exec", "containerd", "docker-config"] {
            let _ = std::fs::remove_dir_all(self.root.join(sub));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_root_deepest_first() {
        let info = "\
22 1 0:21 / / rw - ext4 /dev/vda rw
90 22 0:50 / /var/tmp/b/dockerd/data/overlay2/x/merged rw - overlay overlay rw
91 22 0:51 / /var/tmp/b/dockerd/exec/netns/default rw - nsfs nsfs rw
92 22 0:52 / /var/tmp/b/other rw - tmpfs tmpfs rw
93 22 0:53 / /var/tmp/b/dockerd/with\\040space rw - tmpfs tmpfs rw
";
        let m = mounts_under(info, Path::new("/var/tmp/b/dockerd"));
        assert_eq!(
            m,
            vec![
                PathBuf::from("/var/tmp/b/dockerd/data/overlay2/x/merged"),
                PathBuf::from("/var/tmp/b/dockerd/exec/netns/default"),
                PathBuf::from("/var/tmp/b/dockerd/with space"),
            ]
        );
    }

    #[test]
    fn containerd_config_keeps_paths_private() {
        let c = containerd_config(Path::new("/r/c"));
        assert!(c.contains("root = \"/r/c/root\""));
        assert!(c.contains("address = \"/r/c/containerd.sock\""));
        assert!(!c.contains("/var/lib/containerd") && !c.contains("/run/containerd"));
    }
}
