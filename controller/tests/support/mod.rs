//! A real `wharf up` under test, driven by the stock `docker` CLI.
//!
//! Each instance has its own data dir and port; dropping it runs `wharf down` and kills
//! the process, so a failing test leaves no container, mount or cgroup behind.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A running `wharf up`.
pub struct Wharf {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The loopback address the API listens on.
    pub ip: String,
    pub downed: bool,
    /// More arguments for `wharf up` (see [`Wharf::start_with`]).
    pub extra_args: Vec<String>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

pub fn wharf_bin() -> &'static str {
    env!("CARGO_BIN_EXE_wharf")
}

impl Wharf {
    /// Start `wharf up` on a new data dir and free port; returns once `client.env` exists.
    pub fn start() -> Wharf {
        Wharf::start_with(&[])
    }

    /// Like [`Wharf::start`], with more arguments for `wharf up`.
    pub fn start_with(extra_args: &[&str]) -> Wharf {
        let dir = tempfile::Builder::new()
            .prefix("wharf-test-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let mut w = Wharf {
            child: None,
            dir,
            port: free_port(),
            ip: "127.0.0.1".into(),
            downed: false,
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
        };
        w.spawn();
        w
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The instance's local API socket (under its temp dir, never the system default).
    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("run/docker.sock")
    }

    /// A `docker` command pointed at the instance's unix socket (no TLS).
    pub fn docker_unix_cmd(&self) -> Command {
        let mut c = Command::new("docker");
        let cfg = self.dir.path().join("docker-config");
        let _ = std::fs::create_dir_all(&cfg);
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.socket_path().display()),
        )
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("DOCKER_CONFIG", cfg)
        .env_remove("DOCKER_CONTEXT")
        .stdin(Stdio::null());
        c
    }

    /// (Re)start the process on the same data dir and port.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("wharf.log"))
            .expect("log file");
        let child = Command::new(wharf_bin())
            .args(["up", "--data-dir"])
            .arg(self.data_dir())
            .args(["--api-addr", &format!("{}:{}", self.ip, self.port)])
            .arg("--unix-socket")
            .arg(self.socket_path())
            .args(&self.extra_args)
            .env("WHARF_LOG", "info,wharf_controller=debug,wharf_node=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wharf up");
        self.child = Some(child);
        let env = self.data_dir().join("client.env");
        let _ = std::fs::remove_file(&env);
        let deadline = Instant::now() + Duration::from_secs(90);
        while !env.exists() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("wharf up exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "wharf up not ready in time:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("wharf.log")).unwrap_or_default()
    }

    pub fn client_env(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("client.env")).unwrap_or_default()
    }

    /// A `docker` command pointed at this instance (own config dir, no user settings).
    pub fn docker_cmd(&self) -> Command {
        let mut c = Command::new("docker");
        let cfg = self.dir.path().join("docker-config");
        let _ = std::fs::create_dir_all(&cfg);
        c.env("DOCKER_HOST", format!("tcp://{}:{}", self.ip, self.port))
            .env("DOCKER_TLS_VERIFY", "1")
            .env("DOCKER_CERT_PATH", self.data_dir().join("client"))
            .env("DOCKER_CONFIG", cfg)
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        c
    }

    /// Run `docker ARGS` and return its output.
    pub fn docker(&self, args: &[&str]) -> Output {
        let out = self.docker_cmd().args(args).output().expect("run docker");
        eprintln!(
            "$ docker {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
        out
    }

    /// Run `docker ARGS`, require success, return stdout.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed:\n{}\n--- wharf log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Send SIGTERM and wait for the process to exit.
    pub fn stop_process(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = child.try_wait().expect("wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("wharf did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `wharf down` on this data dir.
    pub fn down(&mut self) -> Output {
        self.downed = true;
        let out = Command::new(wharf_bin())
            .args(["down", "--data-dir"])
            .arg(self.data_dir())
            .output()
            .expect("run wharf down");
        if let Some(mut c) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        out
    }

    /// Mounts, processes, cgroups, the default bridge and iptables rules of this instance
    /// still present.
    pub fn leftovers(&self) -> Vec<String> {
        let data = self.data_dir();
        let mut left = vec![];
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for l in info.lines() {
            if let Some(m) = l.split(' ').nth(4) {
                if Path::new(m).starts_with(&data) {
                    left.push(format!("mount {m}"));
                }
            }
        }
        let needle = data.to_string_lossy().into_owned();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains(&needle) && e.file_name() != std::process::id().to_string().as_str()
                {
                    left.push(format!(
                        "process {}: {cmd}",
                        e.file_name().to_string_lossy()
                    ));
                }
            }
        }
        let names = wharf_node::network::names::InstanceNames::for_data_dir(&data);
        let bridge = names.default_bridge(&data);
        if Path::new("/sys/class/net").join(&bridge).exists() {
            left.push(format!("bridge {bridge}"));
        }
        for table in ["nat", "filter"] {
            if let Ok(out) = Command::new("iptables")
                .args(["-w", "-t", table, "-S"])
                .output()
            {
                for l in String::from_utf8_lossy(&out.stdout).lines() {
                    if l.contains(&names.tag) {
                        left.push(format!("iptables -t {table} {l}"));
                    }
                }
            }
        }
        let parent = wharf_controller::up::cgroup_parent(&data);
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let p = e.path().join(&parent);
                if p.exists() {
                    left.push(format!("cgroup {}", p.display()));
                }
            }
        }
        left
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        if !self.downed {
            let _ = self.down();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `docker save` tarball of the test busybox image, made once per test binary.
pub fn busybox_tar() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = images_dir();
        std::fs::create_dir_all(&dir).expect("image dir");
        // Removed when the test binary exits (a static is never dropped; without this
        // every run left a directory behind in /tmp).
        extern "C" fn remove_images_dir() {
            let _ = std::fs::remove_dir_all(images_dir());
        }
        // SAFETY: registers a plain function without arguments, run once at exit.
        unsafe {
            libc::atexit(remove_images_dir);
        }
        wharf_chaos_tests::busybox_image_tar(&dir, "busybox:latest").expect("build busybox image")
    })
    .clone()
}

/// Where this test binary keeps its generated images.
fn images_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wharf-test-images-{}", std::process::id()))
}

/// The instance's iptables rules (`-S` lines of its own chains and jumps).
pub fn iptables_text(w: &Wharf) -> String {
    let tag = wharf_node::network::names::InstanceNames::for_data_dir(&w.data_dir()).tag;
    let mut all = String::new();
    for table in ["nat", "filter"] {
        let out = Command::new("iptables")
            .args(["-w", "-t", table, "-S"])
            .output()
            .expect("iptables");
        for l in text(&out.stdout).lines().filter(|l| l.contains(&tag)) {
            all.push_str(l);
            all.push('\n');
        }
    }
    all
}

/// Bytes as text, for assertions on CLI output.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A new `wharf up` with the busybox image loaded.
pub fn loaded() -> Wharf {
    let w = Wharf::start();
    let tar = busybox_tar();
    w.docker_ok(&["load", "-i", tar.to_str().expect("utf-8 path")]);
    w
}

/// `docker inspect --format FORMAT NAME`, trimmed.
pub fn inspect(w: &Wharf, format: &str, name: &str) -> String {
    w.docker_ok(&["inspect", "--format", format, name])
        .trim()
        .to_string()
}

/// Poll `f` every 100 ms until it returns true or `secs` pass; true if it did.
pub fn eventually(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// The processes with a listening TCP socket on `port` (of this network namespace),
/// read from /proc: who holds a port a test expects free.
pub fn port_listeners(port: u16) -> Vec<u32> {
    let mut inodes = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            // State 0A is LISTEN.
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.insert(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let mut pids = vec![];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let fds = std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten();
        if fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.contains(l.to_string_lossy().as_ref()))
        }) {
            pids.push(pid);
        }
    }
    pids
}

impl Wharf {
    /// Whether process `pid` is this instance's: its `wharf up`, or a process started
    /// with its data dir on the command line (its shims).
    pub fn owns_process(&self, pid: u32) -> bool {
        if self.child.as_ref().is_some_and(|c| c.id() == pid) {
            return true;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let needle = self.dir.path().to_string_lossy().into_owned();
        String::from_utf8_lossy(&cmdline).contains(&needle)
    }
}

/// Runs a command in a pty of 33 rows and 101 columns; each step waits for a text (if
/// given) then types its input; then reads until the command ends.
pub const PTY_DRIVER: &str = r#"
import os, pty, sys, time, json, select, struct, fcntl, termios
args = json.loads(sys.argv[1]); steps = json.loads(sys.argv[2])
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack('HHHH', 33, 101, 0, 0))
    os.execvp(args[0], args)
out = b''
def read_until(pred, timeout):
    global out
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return False
            if not data:
                return False
            out += data
            if pred(out):
                return True
    return pred(out)
for wait, send in steps:
    if wait:
        read_until(lambda o: wait.encode() in o, 20)
    os.write(fd, send.encode('latin1'))
read_until(lambda o: False, 30)
_, status = os.waitpid(pid, 0)
print(json.dumps({"out": out.decode('utf-8', 'replace'), "code": os.waitstatus_to_exitcode(status)}))
"#;

/// Run `docker ARGS` with `env` in a pseudo-terminal with `steps` (wait-for text, input);
/// what the terminal showed and the exit code.
pub fn pty_docker(
    env: &[(String, String)],
    args: &[&str],
    steps: &[(Option<&str>, &str)],
) -> (String, i32) {
    let mut argv = vec!["docker"];
    argv.extend_from_slice(args);
    let steps: Vec<serde_json::Value> = steps
        .iter()
        .map(|(wait, send)| serde_json::json!([wait, send]))
        .collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(PTY_DRIVER)
        .arg(serde_json::to_string(&argv).expect("json"))
        .arg(serde_json::to_string(&steps).expect("json"))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("DOCKER_CONTEXT")
        .output()
        .expect("run python3");
    assert!(out.status.success(), "pty driver: {}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("driver output");
    let shown = v["out"].as_str().unwrap_or_default().to_string();
    let code = v["code"].as_i64().unwrap_or(-1) as i32;
    eprintln!(
        "$ [pty] docker {}\n  exit {code}\n  shown: {shown:?}",
        args.join(" ")
    );
    (shown, code)
}
