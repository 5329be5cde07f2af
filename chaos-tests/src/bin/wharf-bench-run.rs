//! The run benchmark of issue 4 (not a test): starts `wharf up` on a temporary data dir and
//! prints, measured on this machine in this run, the floors and the end-to-end figures:
//!
//! ```text
//!  raw libcontainer create+start+exit   (busybox `true`, plain rootfs dir, no shim)
//!  docker version                       (the CLI alone: its floor)
//!  docker run --rm busybox true         (beside floor = CLI + raw)
//!  docker exec c true                   (beside the same floor)
//!  RSS / PSS of the idle wharf process and of one shim (/proc/PID/smaps_rollup)
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

    let (raw_med, raw_p90) = {
        let mut raw = RawRuntime::new(&dir.path().join("raw")).context("raw bundle")?;
        measure(args.runs, || raw.run_once()).context("raw libcontainer run")?
    };

    let image = wharf_chaos_tests::busybox_image_tar(dir.path(), "busybox:latest")?;
    let w = WharfDaemon::start(&args.wharf, &dir.path().join("wharf"))?;
    let docker = find_docker().context("no docker CLI on PATH")?;
    let cli = w.cli(&docker, false);
    run_wharf(&w, &cli, &image, args.runs, (raw_med, raw_p90))
}

fn run_wharf(w: &WharfDaemon, d: &Cli, image: &Path, runs: usize, raw: (f64, f64)) -> Result<()> {
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
    std::thread::sleep(Duration::from_secs(2));
    let wharf_mem = memory_kib(w.pid())?;
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
    let shim_mem = memory_kib(shim_pid)?;
    d.run(&["rm", "-f", "bench-exec"])?;

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
    Ok(())
}
