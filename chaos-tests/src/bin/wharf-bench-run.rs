//! The run benchmark of issue 4 (not a test): starts `wharf up` on a temporary data dir and
//! prints, measured on this machine in this run, the floors and the end-to-end figures:
//!
//! ```text
//!  raw libcontainer create+start+exit   (busybox `true`, plain rootfs dir, no shim; each after
//!                                       100 ms idle, the floor, and back to back, shown beside)
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
use std::time::{Duration, Instant};
use wharf_chaos_tests::bench::cli::{find_docker, Cli};
use wharf_chaos_tests::bench::host::{machine, utc_now};
use wharf_chaos_tests::bench::procmem::memory_kib;
use wharf_chaos_tests::bench::raw::RawRuntime;
use wharf_chaos_tests::bench::wharf::WharfDaemon;

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

    let (raw, raw_b2b) = {
        let mut raw = RawRuntime::new(&dir.path().join("raw")).context("raw bundle")?;
        let b2b = measure(args.runs, || raw.run_once()).context("raw libcontainer run")?;
        let mut samples = Vec::with_capacity(args.runs);
        for _ in 0..args.runs {
            samples.push(raw.run_after_idle().context("raw libcontainer run")?);
        }
        (stats(&mut samples), b2b)
    };

    let image = wharf_chaos_tests::busybox_image_tar(dir.path(), "busybox:latest")?;
    let w = WharfDaemon::start(&args.wharf, &dir.path().join("wharf"))?;
    let docker = find_docker().context("no docker CLI on PATH")?;
    let cli = w.cli(&docker, false);
    run_wharf(&w, &cli, &image, args.runs, raw, raw_b2b)
}

fn run_wharf(
    w: &WharfDaemon,
    d: &Cli,
    image: &Path,
    runs: usize,
    raw: (f64, f64),
    raw_b2b: (f64, f64),
) -> Result<()> {
    d.run(&["load", "-i", &image.display().to_string()])?;
    let cli = measure(runs, || d.run(&["version"]).map(drop))?;
    let run = measure(runs, || {
        d.run(&["run", "--rm", "busybox", "true"]).map(drop)
    })?;
    d.run(&[
        "run",
        "-d",
        "--name",
        "bench-exec",
        "busybox",
        "sleep",
        "600",
    ])?;
    let exec = measure(runs, || d.run(&["exec", "bench-exec", "true"]).map(drop))?;
    let id = String::from_utf8_lossy(
        &d.run(&["inspect", "--format", "{{.Id}}", "bench-exec"])?
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
    let wharf_mem = memory_kib(w.pid())?;
    let shim_mem = memory_kib(shim_pid)?;
    // The zygote that forks the shims (its start-up pages are shared with every shim).
    let zygote_mem = std::fs::read_to_string(w.data.join("shim-zygote.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map(memory_kib)
        .transpose()?;
    let shim_smaps = std::fs::read_to_string(format!("/proc/{shim_pid}/smaps"))?;
    let wharf_exe = std::fs::read_link(format!("/proc/{shim_pid}/exe"))?;
    let shim_parts = breakdown(&shim_smaps, &wharf_exe.to_string_lossy());
    d.run(&["rm", "-f", "bench-exec"])?;

    let floor = (cli.0 + raw.0, cli.1 + raw.1);
    println!();
    println!("| what | median s | p90 s | floor (CLI + raw) median s | over floor s |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw libcontainer create+start+exit, after {} ms idle (the floor) | {:.4} | {:.4} | | |",
        wharf_chaos_tests::bench::raw::IDLE_BEFORE.as_millis(),
        raw.0,
        raw.1
    );
    println!(
        "| raw libcontainer create+start+exit, back to back (not a floor: skips the cgroup grace period) | {:.4} | {:.4} | | |",
        raw_b2b.0, raw_b2b.1
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
    match zygote_mem {
        Some(z) => println!(
            "| shim zygote (one per agent; forks every shim) | {} | {} |",
            z.0, z.1
        ),
        None => println!("| shim zygote | not running (shims exec'ed) | |"),
    }
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
