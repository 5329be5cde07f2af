//! The cases of the side-by-side bench, each run against both engines with the same CLI,
//! alternating subject, baseline, subject, baseline (Wharf and dockerd, or a new and an
//! old wharf) after warm-up runs, each giving one [`Row`]. A case that fails on one engine
//! is reported as `error: …` for that engine and the bench goes on.

use super::cli::Cli;
use super::floors::LoadFloors;
use super::signals;
use super::stats::Summary;
use super::table::{Floor, Row, Side, Target, Unit};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Unmeasured runs per engine before each measured series.
pub const WARM_UP: usize = 2;

/// One engine under test.
pub struct Engine<'a> {
    /// "Wharf", "dockerd", "new" or "old".
    pub name: &'static str,
    /// The CLI aimed at it.
    pub cli: Cli,
    /// Pids of its processes (engine, helpers, shims; not containers), for memory.
    pub pids: &'a (dyn Fn() -> Vec<u32> + Sync),
    /// Whether `--network bridge` works on it (not on the bench's `--bridge none` dockerd).
    pub bridge: bool,
}

/// Both engines and the run counts.
pub struct Bench<'a> {
    /// The engine under test: Wharf, or the new wharf.
    pub subject: Engine<'a>,
    /// What it is measured against: dockerd, or the old wharf.
    pub baseline: Engine<'a>,
    /// Measured runs of the quick cases.
    pub runs: usize,
    /// Measured runs of the slow cases (load, build, 50 concurrent runs).
    pub heavy_runs: usize,
}

/// The floors measured before the cases, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Floors {
    /// Raw libcontainer create+start+exit, median.
    pub raw: f64,
    /// `docker version`: the CLI plus one round trip, the lower of the two engines' medians.
    pub cli: f64,
}

/// Seconds `f` took.
pub fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// One engine's samples so far, or why it stopped.
enum Series {
    Samples(Vec<f64>),
    Failed(String),
}

impl Series {
    fn side(self) -> Side {
        match self {
            Series::Samples(v) => match Summary::of(&v) {
                Some(s) => Side::Measured(s, None),
                None => Side::Failed("no samples".into()),
            },
            Series::Failed(e) => Side::Failed(e),
        }
    }
}

impl Bench<'_> {
    fn engines(&self) -> [&Engine<'_>; 2] {
        [&self.subject, &self.baseline]
    }

    /// Run `sample` (which returns the seconds it measured) `warm` times per engine, then
    /// `runs` times alternating subject, baseline (run i of one, run i of the other), so
    /// that drift of the machine hits both; an engine whose sample fails keeps its error
    /// and is skipped from then on.
    fn alternate(
        &self,
        warm: usize,
        runs: usize,
        mut sample: impl FnMut(&Engine<'_>) -> Result<f64>,
    ) -> Result<(Side, Side)> {
        let mut series = [Series::Samples(Vec::new()), Series::Samples(Vec::new())];
        for (i, e) in self.engines().into_iter().enumerate() {
            for _ in 0..warm {
                signals::check()?;
                if let Err(err) = sample(e) {
                    series[i] = Series::Failed(format!("{err:#}"));
                    break;
                }
            }
        }
        for _ in 0..runs {
            for (i, e) in self.engines().into_iter().enumerate() {
                signals::check()?;
                if let Series::Samples(v) = &mut series[i] {
                    match sample(e) {
                        Ok(s) => v.push(s),
                        Err(err) => series[i] = Series::Failed(format!("{err:#}")),
                    }
                }
            }
        }
        let [s, b] = series;
        Ok((s.side(), b.side()))
    }

    /// `docker version` on each engine: the CLI's own floor (start-up plus one round trip).
    pub fn cli_floor(&self) -> Result<Row> {
        let (subject, baseline) = self.alternate(WARM_UP, self.runs, |e| {
            timed(|| e.cli.run(&["version"]).map(drop))
        })?;
        Ok(Row {
            case: "`docker version` (the CLI's floor)".into(),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: None,
            target: Target::default(),
        })
    }

    /// `docker run --rm --network none busybox true`.
    pub fn run_rm(&self, floors: Floors) -> Result<Row> {
        let (subject, baseline) = self.alternate(WARM_UP, self.runs, |e| {
            timed(|| {
                e.cli
                    .run(&["run", "--rm", "--network", "none", "busybox", "true"])
                    .map(drop)
            })
        })?;
        Ok(Row {
            case: "`docker run --rm --network none busybox true`".into(),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: Some(Floor {
                seconds: floors.cli + floors.raw,
                what: format!("CLI {:.4} + raw {:.4}", floors.cli, floors.raw),
            }),
            target: Target {
                max_ratio: Some(0.3),
                max_over_floor: Some(0.05),
            },
        })
    }

    /// `docker run -d` of a sleeping busybox then `docker rm -f` of it, timed together.
    pub fn run_detached_rm(&self, floors: Floors) -> Result<Row> {
        let (subject, baseline) = self.alternate(WARM_UP, self.runs, |e| {
            timed(|| {
                let id =
                    e.cli
                        .text(&["run", "-d", "--network", "none", "busybox", "sleep", "600"])?;
                e.cli.run(&["rm", "-f", &id]).map(drop)
            })
        })?;
        Ok(Row {
            case: "`docker run -d … sleep` + `docker rm -f`".into(),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: Some(Floor {
                seconds: 2.0 * floors.cli + floors.raw,
                what: "2 × CLI + raw".into(),
            }),
            target: Target::default(),
        })
    }

    /// `docker exec c true` in a running busybox.
    pub fn exec(&self, floors: Floors) -> Result<Row> {
        let name = "wharf-bench-exec";
        let up = |e: &Engine<'_>| -> Result<()> {
            e.cli
                .run(&[
                    "run",
                    "-d",
                    "--network",
                    "none",
                    "--name",
                    name,
                    "busybox",
                    "sleep",
                    "3600",
                ])
                .map(drop)
        };
        let ready = [up(&self.subject), up(&self.baseline)];
        let (mut subject, mut baseline) = self.alternate(WARM_UP, self.runs, |e| {
            timed(|| e.cli.run(&["exec", name, "true"]).map(drop))
        })?;
        for (side, r) in [(&mut subject, &ready[0]), (&mut baseline, &ready[1])] {
            if let Err(err) = r {
                *side = Side::Failed(format!("{err:#}"));
            }
        }
        for e in self.engines() {
            let _ = e.cli.run(&["rm", "-f", name]);
        }
        Ok(Row {
            case: "`docker exec c true`".into(),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: Some(Floor {
                seconds: floors.cli,
                what: "CLI".into(),
            }),
            target: Target {
                max_ratio: Some(0.5),
                max_over_floor: None,
            },
        })
    }

    /// `docker load -i` of the large image (removed, untimed, before each load).
    pub fn load(&self, tar: &Path, mib: usize, floors: &LoadFloors) -> Result<Row> {
        let tar = tar.display().to_string();
        let (subject, baseline) = self.alternate(1, self.heavy_runs, |e| {
            let _ = e.cli.run(&["rmi", "-f", "bench-big:latest"]);
            timed(|| e.cli.run(&["load", "-q", "-i", &tar]).map(drop))
        })?;
        for e in self.engines() {
            let _ = e.cli.run(&["rmi", "-f", "bench-big:latest"]);
        }
        Ok(Row {
            case: format!("`docker load` of a {mib} MiB image (uncompressed layers)"),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: Some(Floor {
                seconds: floors.floor(),
                what: floors.describe(),
            }),
            target: Target {
                max_ratio: Some(0.7),
                max_over_floor: None,
            },
        })
    }

    /// `docker build` of the seeds' Dockerfile pair, cold (images removed, `--no-cache`)
    /// and warm (after changing only the copied source: the RUN steps come from the cache,
    /// COPY and ENTRYPOINT are built again): two rows.
    pub fn build(&self, ctx: &Path) -> Result<[Row; 2]> {
        let ctx_dir = ctx.to_path_buf();
        let ctx = ctx.display().to_string();
        let build = |e: &Engine<'_>, no_cache: bool| -> Result<()> {
            for (file, tag) in [("Dockerfile.1", "seeds-1"), ("Dockerfile.2", "seeds-2")] {
                let mut args = vec!["build", "-q", "--network", "none", "-f"];
                let path = format!("{ctx}/{file}");
                args.extend([path.as_str(), "-t", tag]);
                if no_cache {
                    args.push("--no-cache");
                }
                args.push(&ctx);
                e.cli.run(&args)?;
            }
            Ok(())
        };
        let clean = |e: &Engine<'_>| {
            let _ = e.cli.run(&["rmi", "-f", "seeds-1", "seeds-2"]);
        };
        let (cw, cd) = self.alternate(1, self.heavy_runs, |e| {
            clean(e);
            timed(|| build(e, true))
        })?;
        let mut version = 0u64;
        let (ww, wd) = self.alternate(1, self.heavy_runs, |e| {
            version += 1;
            super::data::edit_source(&ctx_dir, version)?;
            timed(|| build(e, false))
        })?;
        for e in self.engines() {
            clean(e);
        }
        Ok([
            Row {
                case: "`docker build` cold (the seeds' Dockerfile pair, `--no-cache`)".into(),
                unit: Unit::Seconds,
                subject: cw,
                baseline: cd,
                floor: None,
                target: Target::default(),
            },
            Row {
                case: "`docker build` warm (the pair again after changing only the copied source)"
                    .into(),
                unit: Unit::Seconds,
                subject: ww,
                baseline: wd,
                floor: None,
                target: Target {
                    max_ratio: Some(0.5),
                    max_over_floor: None,
                },
            },
        ])
    }

    /// `docker ps` with `n` running containers.
    pub fn ps(&self, n: usize, floors: Floors) -> Result<Row> {
        let label = "wharf-bench=ps";
        let ready: Vec<Result<()>> = self
            .engines()
            .into_iter()
            .map(|e| start_many(&e.cli, n, label))
            .collect();
        let (mut subject, mut baseline) = self.alternate(WARM_UP, self.runs, |e| {
            let mut out = String::new();
            let t = timed(|| {
                out = e.cli.text(&["ps", "--no-trunc"])?;
                Ok(())
            })?;
            let listed = out.lines().count().saturating_sub(1);
            if listed < n {
                bail!("docker ps listed {listed} containers, {n} expected");
            }
            Ok(t)
        })?;
        for (side, r) in [(&mut subject, &ready[0]), (&mut baseline, &ready[1])] {
            if let Err(err) = r {
                *side = Side::Failed(format!("{err:#}"));
            }
        }
        for e in self.engines() {
            remove_labelled(&e.cli, label);
        }
        Ok(Row {
            case: format!("`docker ps` with {n} running containers"),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: Some(Floor {
                seconds: floors.cli,
                what: "CLI".into(),
            }),
            target: Target::default(),
        })
    }

    /// `n` concurrent `docker run --rm --network NETWORK busybox true`, wall time of all;
    /// on `bridge` (every run gets an address and a veth at once) only on the engines with
    /// a bridge (not dockerd, which runs with `--bridge none` here).
    pub fn concurrent(&self, n: usize, network: &str, floors: Floors, cores: usize) -> Result<Row> {
        let bridge = network == "bridge";
        let (subject, baseline) = self.alternate(1, self.heavy_runs, |e| {
            if bridge && !e.bridge {
                bail!("not measured");
            }
            timed(|| {
                let results: Vec<Result<()>> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..n)
                        .map(|_| {
                            s.spawn(|| {
                                e.cli
                                    .run(&["run", "--rm", "--network", network, "busybox", "true"])
                                    .map(drop)
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|_| bail!("thread panicked")))
                        .collect()
                });
                let failed: Vec<String> = results
                    .into_iter()
                    .filter_map(|r| r.err().map(|e| format!("{e:#}")))
                    .collect();
                if let Some(first) = failed.first() {
                    bail!("{} of {n} runs failed, first: {first}", failed.len());
                }
                Ok(())
            })
        })?;
        let floor = n as f64 * (floors.cli + floors.raw) / cores.max(1) as f64;
        let baseline = if bridge && !self.baseline.bridge {
            Side::NotApplicable(format!(
                "{} runs with `--bridge none` here",
                self.baseline.name
            ))
        } else {
            baseline
        };
        Ok(Row {
            case: format!("{n} concurrent `docker run --rm --network {network} busybox true`"),
            unit: Unit::Seconds,
            subject,
            baseline,
            floor: Some(Floor {
                seconds: floor,
                what: format!("{n} × (CLI + raw) / {cores} cores"),
            }),
            target: Target {
                max_ratio: Some(0.3),
                max_over_floor: None,
            },
        })
    }

    /// PSS (and RSS) of every process of each engine, idle, with `n` running containers:
    /// read `runs` times 100 ms apart, alternating the engines, after 5 s to settle.
    pub fn memory(&self, n: usize) -> Result<Row> {
        let label = "wharf-bench=memory";
        let ready: Vec<Result<()>> = self
            .engines()
            .into_iter()
            .map(|e| start_many(&e.cli, n, label))
            .collect();
        // Let both settle (Go's GC, RocksDB flushes) before reading.
        for _ in 0..50 {
            signals::check()?;
            std::thread::sleep(Duration::from_millis(100));
        }
        // Per engine: PSS and RSS in MiB of each reading, and the processes last counted.
        let mut readings: [(Vec<f64>, Vec<f64>, usize); 2] = Default::default();
        for _ in 0..self.runs {
            signals::check()?;
            for ((e, r), (pss, rss, procs)) in
                self.engines().into_iter().zip(&ready).zip(&mut readings)
            {
                if r.is_ok() {
                    let pids = (e.pids)();
                    let (r_kib, p_kib) = super::procmem::total_kib(&pids);
                    pss.push(p_kib as f64 / 1024.0);
                    rss.push(r_kib as f64 / 1024.0);
                    *procs = pids.len();
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let mut sides = ready.iter().zip(readings).map(|(r, (pss, rss, procs))| {
            match (r, Summary::of(&pss), Summary::of(&rss)) {
                (Err(err), _, _) => Side::Failed(format!("{err:#}")),
                (Ok(()), Some(pss), Some(rss)) => Side::Measured(
                    pss,
                    Some(format!("RSS {:.1} MiB, {procs} processes", rss.median)),
                ),
                (Ok(()), _, _) => Side::Failed("no readings".into()),
            }
        });
        let (Some(subject), Some(baseline)) = (sides.next(), sides.next()) else {
            bail!("two engines expected");
        };
        for e in self.engines() {
            remove_labelled(&e.cli, label);
        }
        Ok(Row {
            case: format!("idle memory, PSS of the engine's processes, {n} running containers"),
            unit: Unit::Mib,
            subject,
            baseline,
            floor: None,
            target: Target {
                max_ratio: Some(0.5),
                max_over_floor: None,
            },
        })
    }

    /// Wharf's bridge set-up cost: `docker run --rm --network bridge busybox true` minus
    /// the same with `--network none`, alternated on Wharf (dockerd runs `--bridge none`).
    /// Against dockerd only: the subject is Wharf, the baseline a dockerd without bridge.
    pub fn bridge(&self) -> Result<Row> {
        let w = &self.subject.cli;
        let na = Side::NotApplicable(format!(
            "{} runs with `--bridge none` here",
            self.baseline.name
        ));
        let probe = w.text(&[
            "run",
            "--rm",
            "--network",
            "bridge",
            "busybox",
            "cat",
            "/sys/class/net/eth0/address",
        ]);
        let subject = match probe {
            Err(e) => Side::Failed(format!("{e:#}")),
            Ok(mac) if mac.is_empty() => {
                Side::Failed("no eth0 in a `--network bridge` container".into())
            }
            Ok(_) => {
                let run = |net: &str| {
                    timed(|| {
                        w.run(&["run", "--rm", "--network", net, "busybox", "true"])
                            .map(drop)
                    })
                };
                let mut bridge = Vec::new();
                let mut none = Vec::new();
                let mut failed = None;
                for _ in 0..self.runs {
                    signals::check()?;
                    match (run("bridge"), run("none")) {
                        (Ok(b), Ok(n)) => {
                            bridge.push(b);
                            none.push(n);
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            failed = Some(format!("{e:#}"));
                            break;
                        }
                    }
                }
                match (failed, Summary::of(&bridge), Summary::of(&none)) {
                    (Some(e), _, _) => Side::Failed(e),
                    (None, Some(b), Some(n)) => Side::Measured(
                        Summary {
                            median: b.median - n.median,
                            p10: b.p10 - n.median,
                            p90: b.p90 - n.median,
                            n: b.n,
                        },
                        Some(format!("bridge {:.4} s − none {:.4} s", b.median, n.median)),
                    ),
                    _ => Side::Failed("no samples".into()),
                }
            }
        };
        Ok(Row {
            case: "bridge set-up: `run --rm --network bridge` minus `--network none` (Wharf only)"
                .into(),
            unit: Unit::Seconds,
            subject,
            baseline: na,
            floor: None,
            target: Target::default(),
        })
    }
}

/// Start `n` sleeping busybox containers labelled `label`, four CLI processes at a time.
fn start_many(cli: &Cli, n: usize, label: &str) -> Result<()> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                        signals::check()?;
                        cli.run(&[
                            "run",
                            "-d",
                            "--network",
                            "none",
                            "--label",
                            label,
                            "busybox",
                            "sleep",
                            "3600",
                        ])
                        .context("start a container")?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("thread panicked")))
            .collect()
    });
    results.into_iter().collect()
}

/// `docker rm -f` every container labelled `label` (best effort).
fn remove_labelled(cli: &Cli, label: &str) {
    let Ok(ids) = cli.text(&["ps", "-aq", "--filter", &format!("label={label}")]) else {
        return;
    };
    let ids: Vec<&str> = ids.split_whitespace().collect();
    for chunk in ids.chunks(50) {
        let mut args = vec!["rm", "-f"];
        args.extend(chunk);
        let _ = cli.run(&args);
    }
}

/// Where the bench keeps its files: a fresh directory under `base`, removed on drop.
pub fn work_dir(base: &Path) -> Result<tempfile::TempDir> {
    Ok(tempfile::Builder::new()
        .prefix("wharf-bench-")
        .tempdir_in(base)?)
}

/// The default `wharf` binary: beside the running bench binary (same cargo profile).
pub fn default_wharf() -> Option<PathBuf> {
    Some(std::env::current_exe().ok()?.parent()?.join("wharf"))
}
