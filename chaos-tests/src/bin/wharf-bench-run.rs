//! The run benchmark of issue 4 (not a test): starts `wharf up` on a temporary data dir and
//! prints, measured on this machine in this run, the floors and the end-to-end figures:
//!
//! ```text
//!  raw libcontainer create+start+exit   (busybox `true`, plain rootfs dir, no shim)
//!  docker version                       (the CLI alone: its floor)
//!  docker run --rm busybox true         (beside floor = CLI + raw)
//!  docker exec c true                   (beside the same floor)
//!  RSS / PSS of the idle wharf process and of one shim (/proc/PID/smaps_rollup),
//!  and the shim's by kind of mapping (/proc/PID/smaps)
//! ```
//!
//! Run as root: `cargo build --release -p wharf-controller --bin wharf && cargo run
//! --release -p wharf-chaos-tests --bin wharf-bench-run -- [--runs N] [--wharf PATH]`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs not counted, before each measured series.
const WARM_UP: usize = 3;

struct Args {
    runs: usize,
    wharf: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut runs = 20;
    let mut wharf = std::env::current_exe()?
        .parent()
        .context("exe dir")?
        .join("wharf");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--wharf" => wharf = PathBuf::from(it.next().context("--wharf PATH")?),
            other => bail!("unknown argument {other}; usage: [--runs N] [--wharf PATH]"),
        }
    }
    if !wharf.exists() {
        bail!(
            "{} not found: build it first (cargo build [--release] -p wharf-controller --bin wharf) or pass --wharf",
            wharf.display()
        );
    }
    Ok(Args { runs, wharf })
}

/// Median and 90th percentile of `samples`, in seconds.
fn stats(samples: &mut [f64]) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.9))
}

/// Time `f` `runs` times after [`WARM_UP`] unmeasured runs.
fn measure(runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<(f64, f64)> {
    for _ in 0..WARM_UP {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed().as_secs_f64());
    }
    Ok(stats(&mut samples))
}

/// A container of busybox `true` straight through libcontainer: the floor of any engine.
struct RawRuntime {
    bundle: PathBuf,
    root: PathBuf,
    cgroup_parent: String,
    n: usize,
}

impl RawRuntime {
    fn new(dir: &Path) -> Result<RawRuntime> {
        let bundle = dir.join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        let layer = wharf_chaos_tests::layer_tar(&wharf_chaos_tests::images::busybox_rootfs()?)
            .context("busybox layer")?;
        tar::Archive::new(layer.as_slice())
            .unpack(&rootfs)
            .context("unpack busybox")?;
        let cgroup_parent = format!("wharf-bench-{}", std::process::id());
        let mut spec = oci_spec::runtime::Spec::default();
        let mut process = spec.process().clone().context("default process")?;
        process.set_args(Some(vec!["/bin/true".to_string()]));
        process.set_terminal(Some(false));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().context("default linux")?;
        linux.set_cgroups_path(Some(PathBuf::from(format!("/{cgroup_parent}/raw"))));
        spec.set_linux(Some(linux));
        spec.save(bundle.join("config.json"))
            .context("write config.json")?;
        Ok(RawRuntime {
            bundle,
            root: dir.join("state"),
            cgroup_parent,
            n: 0,
        })
    }

    fn run_once(&mut self) -> Result<()> {
        use libcontainer::container::builder::ContainerBuilder;
        use libcontainer::syscall::syscall::SyscallType;
        self.n += 1;
        let id = format!("bench{}", self.n);
        let mut container = ContainerBuilder::new(id, SyscallType::default())
            .with_root_path(&self.root)
            .context("libcontainer root")?
            .as_init(&self.bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .context("libcontainer create")?;
        container.start().context("libcontainer start")?;
        let pid = container.pid().context("no pid")?.as_raw();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None)?;
        container.delete(true)?;
        Ok(())
    }

    fn cleanup(&self) {
        if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
            for e in rd.flatten() {
                let _ = std::fs::remove_dir(e.path().join(&self.cgroup_parent).join("raw"));
                let _ = std::fs::remove_dir(e.path().join(&self.cgroup_parent));
            }
        }
    }
}

/// A running `wharf up` and a `docker` pointed at its unix socket.
struct Wharf {
    child: Child,
    wharf: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    config: PathBuf,
}

impl Wharf {
    fn start(wharf: &Path, dir: &Path) -> Result<Wharf> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("data");
        let socket = dir.join("docker.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::File::create(dir.join("wharf.log"))?;
        let child = Command::new(wharf)
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--api-addr", &format!("127.0.0.1:{port}")])
            .arg("--unix-socket")
            .arg(&socket)
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn wharf up")?;
        let w = Wharf {
            child,
            wharf: wharf.to_path_buf(),
            data: data.clone(),
            socket,
            config: dir.join("docker-config"),
        };
        std::fs::create_dir_all(&w.config)?;
        let deadline = Instant::now() + Duration::from_secs(90);
        while !data.join("client.env").exists() {
            if Instant::now() > deadline {
                bail!(
                    "wharf up not ready; see {}",
                    dir.join("wharf.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(w)
    }

    fn docker(&self, args: &[&str]) -> Result<Output> {
        let out = Command::new("docker")
            .env("DOCKER_HOST", format!("unix://{}", self.socket.display()))
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", &self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run docker")?;
        if !out.status.success() {
            bail!(
                "docker {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    fn down(mut self) {
        let _ = Command::new(&self.wharf)
            .args(["down", "--data-dir"])
            .arg(&self.data)
            .output();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `(Rss, Pss)` of process `pid` in KiB, from `/proc/PID/smaps_rollup`.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("Rss:"), field("Pss:")))
}

fn machine() -> String {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc={nproc}, memory={:.1} GiB, kernel {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let dir = tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir_in("/var/tmp")?;
    let profile = if cfg!(debug_assertions) {
        "dev (debug build: slower than --release)"
    } else {
        "release"
    };
    println!("wharf-bench-run  date={}", utc_now());
    println!("machine: {}", machine());
    println!(
        "profile: {profile}; {} runs after {WARM_UP} warm-up runs; docker CLI over the unix socket",
        args.runs
    );

    let mut raw = RawRuntime::new(&dir.path().join("raw")).context("raw bundle")?;
    let raw_result = measure(args.runs, || raw.run_once()).context("raw libcontainer run");
    raw.cleanup();
    let (raw_med, raw_p90) = raw_result?;

    let image = wharf_chaos_tests::busybox_image_tar(dir.path(), "busybox:latest")?;
    let w = Wharf::start(&args.wharf, &dir.path().join("wharf"))?;
    let result = run_wharf(&w, &image, args.runs, (raw_med, raw_p90));
    w.down();
    result
}

fn run_wharf(w: &Wharf, image: &Path, runs: usize, raw: (f64, f64)) -> Result<()> {
    w.docker(&["load", "-i", &image.display().to_string()])?;
    let cli = measure(runs, || w.docker(&["version"]).map(drop))?;
    let run = measure(runs, || {
        w.docker(&["run", "--rm", "busybox", "true"]).map(drop)
    })?;
    w.docker(&[
        "run",
        "-d",
        "--name",
        "bench-exec",
        "busybox",
        "sleep",
        "600",
    ])?;
    let exec = measure(runs, || w.docker(&["exec", "bench-exec", "true"]).map(drop))?;
    let id = String::from_utf8_lossy(
        &w.docker(&["inspect", "--format", "{{.Id}}", "bench-exec"])?
            .stdout,
    )
    .trim()
    .to_string();
    let shim_pid: u32 =
        std::fs::read_to_string(w.data.join("containers").join(&id).join("shim.pid"))
            .context("shim.pid")?
            .trim()
            .parse()?;
    // Idle: the shim gives back what the execs touched after a second of quiet.
    std::thread::sleep(Duration::from_secs(3));
    let wharf_mem = memory_kib(w.child.id())?;
    let shim_mem = memory_kib(shim_pid)?;
    let shim_smaps = std::fs::read_to_string(format!("/proc/{shim_pid}/smaps"))?;
    let wharf_exe = std::fs::read_link(format!("/proc/{shim_pid}/exe"))?;
    let shim_parts = breakdown(&shim_smaps, &wharf_exe.to_string_lossy());
    w.docker(&["rm", "-f", "bench-exec"])?;

    let floor = (cli.0 + raw.0, cli.1 + raw.1);
    println!();
    println!("| what | median s | p90 s | floor (CLI + raw) median s | over floor s |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw libcontainer create+start+exit | {:.4} | {:.4} | | |",
        raw.0, raw.1
    );
    println!(
        "| `docker version` (CLI floor) | {:.4} | {:.4} | | |",
        cli.0, cli.1
    );
    for (what, m) in [
        ("`docker run --rm busybox true`", run),
        ("`docker exec c true`", exec),
    ] {
        println!(
            "| {what} | {:.4} | {:.4} | {:.4} | {:+.4} |",
            m.0,
            m.1,
            floor.0,
            m.0 - floor.0
        );
    }
    println!();
    println!("| process | RSS KiB | PSS KiB |");
    println!("|---|---|---|");
    println!(
        "| wharf up (idle, 1 container) | {} | {} |",
        wharf_mem.0, wharf_mem.1
    );
    println!(
        "| shim of `busybox sleep` | {} | {} |",
        shim_mem.0, shim_mem.1
    );
    println!();
    println!("| shim, by mapping | RSS KiB | PSS KiB | private dirty KiB |");
    println!("|---|---|---|---|");
    for (what, m) in shim_parts {
        println!("| {what} | {} | {} | {} |", m.rss, m.pss, m.private_dirty);
    }
    Ok(())
}

/// Memory of a group of mappings, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Mem {
    rss: u64,
    pss: u64,
    private_dirty: u64,
}

/// `/proc/PID/smaps` summed by kind of mapping: the `wharf` binary's code, its read-only
/// data (with the relocated `.data.rel.ro`/GOT), its writable data, the heap, the stack,
/// other anonymous memory (`.bss`, malloc's mmaps, runtime buffers) and shared libraries.
fn breakdown(smaps: &str, exe: &str) -> Vec<(&'static str, Mem)> {
    const KINDS: [&str; 7] = [
        "wharf code (r-x)",
        "wharf read-only data (r--)",
        "wharf writable data (rw-)",
        "heap",
        "stack",
        "other anonymous (.bss, mmaps)",
        "shared libraries and vdso",
    ];
    let mut sums = [Mem::default(); 7];
    let mut kind = None;
    for line in smaps.lines() {
        let mut f = line.splitn(6, ' ');
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        if range.contains('-') && range.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = f.nth(3).map(str::trim).unwrap_or("");
            kind = Some(match (path, perms) {
                (p, "r-xp") if p == exe => 0,
                (p, "r--p") if p == exe => 1,
                (p, _) if p == exe => 2,
                ("[heap]", _) => 3,
                ("[stack]", _) => 4,
                ("", _) => 5,
                _ => 6,
            });
            continue;
        }
        let Some(k) = kind else { continue };
        let kib = |rest: &str| -> u64 {
            rest.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        if let Some(v) = line.strip_prefix("Rss:") {
            sums[k].rss += kib(v);
        } else if let Some(v) = line.strip_prefix("Pss:") {
            sums[k].pss += kib(v);
        } else if let Some(v) = line.strip_prefix("Private_Dirty:") {
            sums[k].private_dirty += kib(v);
        }
    }
    KINDS.into_iter().zip(sums).collect()
}

fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    out.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smaps_are_summed_by_kind() {
        let smaps = "\
00200000-0082b000 r--p 00000000 fe:00 1 /usr/bin/wharf
Rss:                 100 kB
Pss:                  50 kB
Private_Dirty:         0 kB
0082b000-01eaa000 r-xp 0062a000 fe:00 1 /usr/bin/wharf
Rss:                 400 kB
Pss:                 200 kB
01ff9000-02026000 rw-p 00000000 00:00 0 
Rss:                  8 kB
Pss:                   8 kB
Private_Dirty:         8 kB
02026000-020aa000 rw-p 00000000 00:00 0                                  [heap]
Rss:                  30 kB
Pss:                  30 kB
Private_Dirty:        30 kB
7f0000000000-7f0000100000 r-xp 00000000 fe:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 800 kB
Pss:                  20 kB
";
        let parts = breakdown(smaps, "/usr/bin/wharf");
        let get = |name: &str| parts.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
        assert_eq!(get("wharf code").rss, 400);
        assert_eq!(get("wharf code").pss, 200);
        assert_eq!(get("wharf read-only").pss, 50);
        assert_eq!(get("heap").private_dirty, 30);
        assert_eq!(get("other anonymous").rss, 8);
        assert_eq!(get("shared libraries").pss, 20);
        assert_eq!(get("stack"), Mem::default());
    }
}
