//! `wharf-bench`: Wharf side by side with Docker Engine (issue 8). Installs Debian's
//! `docker.io` if absent, starts a private `wharf up` and a private containerd + dockerd,
//! loads the same generated images into both, runs each case against both with the same
//! stock `docker` CLI (alternating, after warm-up), and writes a Markdown table with
//! median, spread, ratio Wharf/dockerd, target and floor. Both daemons are stopped and
//! their files, mounts and cgroups removed at the end, also on error or Ctrl-C.
//!
//! With `--against OLD` it compares two wharf binaries instead (issue 16): a second
//! private `wharf up` of the old binary takes dockerd's place (nothing of Docker Engine is
//! started or installed), the columns are "new" and "old", and every row is judged
//! against "within 10% or 5 ms of the old build".
//!
//! Run as root:
//! `cargo build --release -p wharf-controller --bin wharf && cargo run --release -p
//! wharf-chaos-tests --bin wharf-bench -- all` (see `--help`).

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use wharf_chaos_tests::bench::cases::{self, Bench, Engine, Floors};
use wharf_chaos_tests::bench::table::{Comparison, Regression};
use wharf_chaos_tests::bench::wharf::WharfDaemon;
use wharf_chaos_tests::bench::{cli, data, dockerd, floors, host, raw, signals, table};

const USAGE: &str = "\
usage: wharf-bench [CASE...] [options]     (as root)
cases: all (default) run detach exec load build ps concurrent memory bridge
       with --against: run exec load memory (default); all = every case but bridge
options:
  --runs N               measured runs of the quick cases per engine (default 20)
  --heavy-runs N         measured runs of load, build and concurrent (default 5)
  --image-mib N          size of the image for `docker load` (default 500)
  --containers N         running containers for `docker ps` (default 200)
  --concurrent N         concurrent `docker run --rm` (default 50)
  --memory-containers N  running containers while memory is read (default 20)
  --tls                  reach both daemons over mutual TLS on loopback (default: unix sockets)
  --wharf PATH           the wharf binary (default: beside this binary)
  --against PATH         compare --wharf (\"new\") with this older wharf binary (\"old\")
                         instead of dockerd, each row within 10% or 5 ms of old
  --docker PATH          the docker CLI (default: first `docker` on PATH but /usr/bin/docker)
  --dir DIR              where the temporary files go (default /var/tmp)
  --out FILE             where the Markdown goes (default wharf-bench.md)";

/// The cases of issue 16's bound, run by default with `--against`.
const REGRESSION: [&str; 4] = ["memory", "run", "exec", "load"];

const ALL: [&str; 9] = [
    "memory",
    "run",
    "detach",
    "exec",
    "concurrent",
    "ps",
    "build",
    "load",
    "bridge",
];

struct Args {
    cases: Vec<String>,
    runs: usize,
    heavy_runs: usize,
    image_mib: usize,
    containers: usize,
    concurrent: usize,
    memory_containers: usize,
    tls: bool,
    wharf: PathBuf,
    against: Option<PathBuf>,
    docker: Option<PathBuf>,
    dir: PathBuf,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        cases: Vec::new(),
        runs: 20,
        heavy_runs: 5,
        image_mib: 500,
        containers: 200,
        concurrent: 50,
        memory_containers: 20,
        tls: false,
        wharf: cases::default_wharf().context("no path for the wharf binary")?,
        against: None,
        docker: None,
        dir: PathBuf::from("/var/tmp"),
        out: PathBuf::from("wharf-bench.md"),
    };
    let mut all_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--heavy-runs" => a.heavy_runs = value()?.parse()?,
            "--image-mib" => a.image_mib = value()?.parse()?,
            "--containers" => a.containers = value()?.parse()?,
            "--concurrent" => a.concurrent = value()?.parse()?,
            "--memory-containers" => a.memory_containers = value()?.parse()?,
            "--tls" => a.tls = true,
            "--wharf" => a.wharf = PathBuf::from(value()?),
            "--against" => a.against = Some(PathBuf::from(value()?)),
            "--docker" => a.docker = Some(PathBuf::from(value()?)),
            "--dir" => a.dir = PathBuf::from(value()?),
            "--out" => a.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "all" => all_given = true,
            c if ALL.contains(&c) => a.cases.push(c.to_string()),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let against = a.against.is_some();
    if against && a.cases.iter().any(|c| c == "bridge") {
        bail!("bridge measures Wharf's bridge beside a dockerd without one: not with --against");
    }
    let every: Vec<&str> = ALL
        .into_iter()
        .filter(|c| !(against && *c == "bridge"))
        .collect();
    if all_given {
        a.cases.extend(every.iter().map(|c| c.to_string()));
    } else if a.cases.is_empty() {
        let default = if against { &REGRESSION[..] } else { &every[..] };
        a.cases.extend(default.iter().map(|c| c.to_string()));
    }
    let mut seen = std::collections::HashSet::new();
    a.cases.retain(|c| seen.insert(c.clone()));
    if a.runs == 0 || a.heavy_runs == 0 || a.image_mib == 0 {
        bail!("--runs, --heavy-runs and --image-mib must be positive");
    }
    if !a.wharf.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p wharf-controller --bin wharf) or pass --wharf",
            a.wharf.display()
        );
    }
    if let Some(old) = a.against.as_ref().filter(|p| !p.is_file()) {
        bail!("--against {}: no such file", old.display());
    }
    Ok(a)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("wharf-bench must run as root (it starts daemons and containers)");
    }
    signals::install()?;
    let installed = match args.against {
        Some(_) => String::new(),
        None => dockerd::ensure_installed()?,
    };
    let docker = args
        .docker
        .clone()
        .or_else(cli::find_docker)
        .filter(|d| d.is_file())
        .context("no docker CLI found: pass --docker PATH")?;
    let work = cases::work_dir(&args.dir)?;
    let result = run(&args, &docker, work.path(), &installed);
    if let Err(e) = result {
        let logs = keep_logs(work.path(), &args.out);
        drop(work);
        eprintln!("wharf-bench failed: {e:#}\n{logs}");
        std::process::exit(1);
    }
    Ok(())
}

/// Copy the daemons' logs beside `out` (`OUT.logs/`) before the work dir goes.
fn keep_logs(work: &std::path::Path, out: &std::path::Path) -> String {
    let dest = out.with_extension("logs");
    if std::fs::create_dir_all(&dest).is_err() {
        return String::new();
    }
    for (from, name) in [
        ("wharf/wharf.log", "wharf.log"),
        ("wharf-old/wharf.log", "wharf-old.log"),
        ("dockerd/dockerd.log", "dockerd.log"),
        ("dockerd/containerd.log", "containerd.log"),
    ] {
        let _ = std::fs::copy(work.join(from), dest.join(name));
    }
    format!("daemon logs kept in {}", dest.display())
}

/// What the wharf under test is measured against.
enum Baseline {
    /// A private containerd + dockerd.
    Dockerd(dockerd::Dockerd),
    /// A second private `wharf up`, of the old binary (`--against`).
    OldWharf(WharfDaemon),
}

fn log(msg: &str) {
    eprintln!("[{}] {msg}", host::utc_now());
}

fn run(
    args: &Args,
    docker: &std::path::Path,
    work: &std::path::Path,
    installed: &str,
) -> Result<()> {
    let started = host::utc_now();
    let load_start = host::load();

    log("raw libcontainer floor");
    let raw_summary = {
        let mut raw = raw::RawRuntime::new(&work.join("raw")).context("raw bundle")?;
        for _ in 0..cases::WARM_UP {
            raw.run_once()?;
        }
        let mut samples = Vec::new();
        for _ in 0..args.runs {
            signals::check()?;
            samples.push(raw.run_after_idle()?);
        }
        wharf_chaos_tests::bench::stats::Summary::of(&samples).context("no raw samples")?
    };

    let busybox = wharf_chaos_tests::busybox_image_tar(work, "busybox:latest")?;
    let comparison = match args.against {
        Some(_) => Comparison::OldWharf(Regression::ISSUE_16),
        None => Comparison::Dockerd,
    };
    let (subject_name, baseline_name) = comparison.names();
    log(&format!("starting wharf up ({subject_name})"));
    let w = WharfDaemon::start(&args.wharf, &work.join("wharf"))?;
    let base = match &args.against {
        Some(old) => {
            log(&format!(
                "starting wharf up ({baseline_name}: {})",
                old.display()
            ));
            Baseline::OldWharf(WharfDaemon::start(old, &work.join("wharf-old"))?)
        }
        None => {
            log("starting containerd + dockerd");
            let (ca, cert, key) = w.server_certs();
            Baseline::Dockerd(dockerd::Dockerd::start(
                &work.join("dockerd"),
                docker,
                (&ca, &cert, &key),
            )?)
        }
    };
    let client_certs = w.client_certs();
    let subject_pids = || w.pids();
    let baseline_pids = || match &base {
        Baseline::Dockerd(d) => d.pids(),
        Baseline::OldWharf(o) => o.pids(),
    };
    let bench = Bench {
        subject: Engine {
            name: subject_name,
            cli: w.cli(docker, args.tls),
            pids: &subject_pids,
            bridge: true,
        },
        baseline: Engine {
            name: baseline_name,
            cli: match &base {
                Baseline::Dockerd(d) => {
                    d.cli_with(docker, args.tls.then_some(client_certs.as_path()))
                }
                Baseline::OldWharf(o) => o.cli(docker, args.tls),
            },
            pids: &baseline_pids,
            bridge: matches!(base, Baseline::OldWharf(_)),
        },
        runs: args.runs,
        heavy_runs: args.heavy_runs,
    };
    let busybox_path = busybox.display().to_string();
    for e in [&bench.subject, &bench.baseline] {
        e.cli
            .run(&["load", "-q", "-i", &busybox_path])
            .with_context(|| format!("load busybox into {}", e.name))?;
    }

    log("CLI floor (docker version)");
    let cli_row = bench.cli_floor()?;
    let cli_floor = [&cli_row.subject, &cli_row.baseline]
        .into_iter()
        .filter_map(|s| match s {
            table::Side::Measured(s, _) => Some(s.median),
            _ => None,
        })
        .fold(f64::INFINITY, f64::min);
    if !cli_floor.is_finite() {
        bail!("`docker version` failed on both engines: {cli_row:?}");
    }
    let fl = Floors {
        raw: raw_summary.median,
        cli: cli_floor,
    };
    let mut rows = vec![cli_row];
    let mut load_floors = None;
    for case in &args.cases {
        signals::check()?;
        log(&format!("case {case}"));
        match case.as_str() {
            "memory" => rows.push(bench.memory(args.memory_containers)?),
            "run" => rows.push(bench.run_rm(fl)?),
            "detach" => rows.push(bench.run_detached_rm(fl)?),
            "exec" => rows.push(bench.exec(fl)?),
            "concurrent" => {
                for network in ["none", "bridge"] {
                    rows.push(bench.concurrent(args.concurrent, network, fl, host::cores())?);
                }
            }
            "ps" => rows.push(bench.ps(args.containers, fl)?),
            "build" => {
                let ctx = data::build_context(work)?;
                rows.extend(bench.build(&ctx)?);
            }
            "load" => {
                log(&format!("generating the {} MiB image", args.image_mib));
                let layers = data::big_layers(args.image_mib)?;
                let lf = floors::measure(&layers, work)?;
                let tar = work.join("bench-big.tar");
                data::big_image_tar(&tar, layers)?;
                rows.push(bench.load(&tar, args.image_mib, &lf)?);
                std::fs::remove_file(&tar)?;
                load_floors = Some(lf);
            }
            "bridge" => rows.push(bench.bridge()?),
            other => bail!("unknown case {other}"),
        }
    }

    let cli_version = format!(
        "docker CLI {} (`{}`)",
        host::version_of(docker, &["version", "--format", "{{.Client.Version}}"]),
        docker.display(),
    );
    let versions = match &args.against {
        None => format!(
            "{cli_version}; {}; {}; {}; wharf {} (`{}`); {installed}",
            host::version_of(
                &dockerd::which("dockerd").unwrap_or_default(),
                &["--version"]
            ),
            host::version_of(
                &dockerd::which("containerd").unwrap_or_default(),
                &["--version"]
            ),
            host::version_of(&dockerd::which("runc").unwrap_or_default(), &["--version"]),
            host::version_of(&args.wharf, &["--version"]),
            args.wharf.display(),
        ),
        Some(old) => format!(
            "{cli_version}; {subject_name}: {}; {baseline_name}: {}",
            host::binary(&args.wharf),
            host::binary(old),
        ),
    };
    drop(bench);
    log("stopping both daemons");
    drop(base);
    drop(w);

    let mut md = String::new();
    md.push_str(&format!("Run {started} on {}.\n\n", host::machine()));
    md.push_str(&format!(
        "- load average (1/5/15 min) at start {load_start}, at end {}\n",
        host::load()
    ));
    md.push_str(&format!("- versions: {versions}\n"));
    md.push_str(&format!(
        "- transport: {}; each engine gets {} warm-up runs, then {} measured runs (load, build, concurrent: 1 and {}; memory: {} readings 100 ms apart), alternating {subject_name}, {baseline_name}\n",
        if args.tls {
            "mutual TLS on loopback (one client certificate, both daemons serve Wharf's CA)"
        } else {
            "unix sockets"
        },
        cases::WARM_UP,
        args.runs,
        args.heavy_runs,
        args.runs
    ));
    match comparison {
        Comparison::Dockerd => md.push_str(&format!(
            "- dockerd: private data-root, exec-root, pidfile, sockets and containerd; `--bridge none --iptables=false --ip-masq=false`; every container `--network none` on both engines; harness built {}\n",
            host::profile()
        )),
        Comparison::OldWharf(bound) => md.push_str(&format!(
            "- engines: two private `wharf up`, each with its own data dir, unix socket, loopback port, bridge, subnet, iptables chains and cgroups; no dockerd; every container `--network none`; harness built {}\n\
             - bound (issue 16): {subject_name} median ≤ {baseline_name} median × {} or ≤ {baseline_name} median + {:.0} ms (memory: the ratio alone)\n",
            host::profile(),
            bound.max_ratio,
            bound.max_excess * 1e3,
        )),
    }
    md.push_str(&format!(
        "- floors: raw libcontainer create+start+exit of busybox `true`, each after 100 ms idle as `docker run` meets the kernel, {:.4} s (p10–p90 {:.4}–{:.4}); CLI = the lower `docker version` median, {:.4} s",
        raw_summary.median, raw_summary.p10, raw_summary.p90, cli_floor
    ));
    if let Some(lf) = load_floors {
        md.push_str(&format!(
            "; load of {} MiB: {}",
            lf.bytes >> 20,
            lf.describe()
        ));
    }
    md.push_str("\n\n");
    md.push_str(&table::render(&rows, comparison));
    std::fs::write(&args.out, &md).with_context(|| format!("write {}", args.out.display()))?;
    println!("{md}");
    log(&format!("table written to {}", args.out.display()));
    Ok(())
}
