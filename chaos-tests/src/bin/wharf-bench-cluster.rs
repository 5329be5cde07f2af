//! `wharf-bench-cluster`: the two benchmarks of issue 17 on a 3-controller local cluster
//! (`deploy/local-cluster up --controllers 3 --agents 1` on a temporary DIR, with
//! `WHARF_BIN` = the binary under test; taken down at the end, also on error or Ctrl-C).
//!
//! 1. `docker run --rm --network none busybox true` through a follower controller, through
//!    the leader, and on a private `wharf up` of the same binary (its own data dir, socket,
//!    port, bridge and subnet), one run on each in turn, every run over mutual TLS with the
//!    same `docker` CLI; per side runs, p50, p90, mean and the ratio to `wharf up`
//!    (target: follower ≤ 1.3 × single host; printed, not asserted). A run that fails or
//!    prints anything is an error, not a sample.
//! 2. `POST /containers/create` from C concurrent clients (default 64; one kept-alive TLS
//!    connection each, spread round-robin over the 3 controllers, so two thirds go through
//!    followers), N creates in all (default 2000): creates committed per second, p50/p99 of
//!    one create, and the leader's fsyncs (`wharf_raft_synced_writes_total` of its
//!    `/metrics`) per create. Afterwards `GET /containers/json?all=1` must count N; then
//!    they are pruned (untimed).
//!
//! Run as root:
//! `cargo build --release -p wharf-controller --bin wharf -p wharf-chaos-tests --bins &&
//! /var/cache/wharf/target-release/release/wharf-bench-cluster` (see `--help`).

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;
use wharf_chaos_tests::bench::api::{create_burst, Conn, Tls};
use wharf_chaos_tests::bench::cli::{self, Cli};
use wharf_chaos_tests::bench::cluster::{self, Host, LocalCluster};
use wharf_chaos_tests::bench::stats::Summary;
use wharf_chaos_tests::bench::wharf::WharfDaemon;
use wharf_chaos_tests::bench::{cases, host, signals};

const USAGE: &str = "\
usage: wharf-bench-cluster [options]     (as root)
  --runs N             measured `docker run --rm` per side (default 20; after 2 warm-up)
  --creates N          containers created by the create bench (default 2000; 0 skips it)
  --clients N          concurrent create clients (default 64)
  --wharf PATH         the wharf binary (default: beside this binary)
  --docker PATH        the docker CLI (default: first `docker` on PATH but /usr/bin/docker)
  --local-cluster PATH deploy/local-cluster (default: the one of this source tree)
  --dir DIR            where the temporary files go (default /var/tmp)
  --out FILE           where the Markdown goes (default wharf-bench-cluster.md)";

struct Args {
    runs: usize,
    creates: usize,
    clients: usize,
    wharf: PathBuf,
    docker: Option<PathBuf>,
    script: PathBuf,
    dir: PathBuf,
    out: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        runs: 20,
        creates: 2000,
        clients: 64,
        wharf: cases::default_wharf().context("no path for the wharf binary")?,
        docker: None,
        script: cluster::default_script(),
        dir: PathBuf::from("/var/tmp"),
        out: PathBuf::from("wharf-bench-cluster.md"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--runs" => a.runs = value()?.parse()?,
            "--creates" => a.creates = value()?.parse()?,
            "--clients" => a.clients = value()?.parse()?,
            "--wharf" => a.wharf = PathBuf::from(value()?),
            "--docker" => a.docker = Some(PathBuf::from(value()?)),
            "--local-cluster" => a.script = PathBuf::from(value()?),
            "--dir" => a.dir = PathBuf::from(value()?),
            "--out" => a.out = PathBuf::from(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if a.runs == 0 || a.clients == 0 {
        bail!("--runs and --clients must be positive");
    }
    if !a.wharf.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p wharf-controller --bin wharf) or pass --wharf",
            a.wharf.display()
        );
    }
    if !a.script.is_file() {
        bail!(
            "{}: no such file (pass --local-cluster)",
            a.script.display()
        );
    }
    Ok(a)
}

fn log(msg: &str) {
    eprintln!("[{}] {msg}", host::utc_now());
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("wharf-bench-cluster must run as root (it starts a cluster and containers)");
    }
    signals::install()?;
    let docker = args
        .docker
        .clone()
        .or_else(cli::find_docker)
        .filter(|d| d.is_file())
        .context("no docker CLI found: pass --docker PATH")?;
    let work = cases::work_dir(&args.dir)?;
    if let Err(e) = run(&args, &docker, work.path()) {
        let dest = args.out.with_extension("logs");
        let mut kept = String::new();
        if LocalCluster::keep_logs(&work.path().join("cluster"), &dest).is_ok() {
            let _ = std::fs::copy(
                work.path().join("wharf/wharf.log"),
                dest.join("wharf-up.log"),
            );
            kept = format!("host logs kept in {}", dest.display());
        }
        drop(work);
        eprintln!("wharf-bench-cluster failed: {e:#}\n{kept}");
        std::process::exit(1);
    }
    Ok(())
}

/// One series of bench 1.
struct Side {
    what: String,
    cli: Cli,
    samples: Vec<f64>,
}

/// `docker run --rm --network none busybox true` once; its seconds, or an error if it
/// failed or printed anything.
fn run_once(cli: &Cli) -> Result<f64> {
    let args = ["run", "--rm", "--network", "none", "busybox", "true"];
    let t = Instant::now();
    let out = cli
        .command(&args)
        .output()
        .with_context(|| format!("run {}", cli.docker.display()))?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() || !out.stdout.is_empty() {
        bail!(
            "`docker {}` exited {} with stdout {:?}, stderr {:?}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(secs)
}

/// The controller whose `GET /nodes` entry says `Leader`: its API address.
fn leader_addr(conn: &mut Conn) -> Result<SocketAddr> {
    let r = conn.request("GET", "/nodes", None)?;
    if r.status != 200 {
        bail!("GET /nodes: {} {}", r.status, r.text());
    }
    let nodes = r.json()?;
    let addr = nodes
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["ManagerStatus"]["Leader"] == true)
        .and_then(|n| n["ManagerStatus"]["Addr"].as_str())
        .context("no controller is Leader in GET /nodes")?;
    addr.parse()
        .with_context(|| format!("leader address {addr:?}"))
}

/// The Raft counters of one controller's `/metrics`: (proposals, log entries, fsyncs).
fn raft_counters(conn: &mut Conn) -> Result<[u64; 3]> {
    let r = conn.request("GET", "/metrics", None)?;
    if r.status != 200 {
        bail!("GET /metrics: {} {}", r.status, r.text());
    }
    let text = r.text();
    let get = |name: &str| -> Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no {name} in /metrics"))?
            .trim()
            .parse()
            .with_context(|| format!("{name} is not a number"))
    };
    Ok([
        get("wharf_raft_proposals_total")?,
        get("wharf_raft_log_entries_total")?,
        get("wharf_raft_synced_writes_total")?,
    ])
}

/// How many containers `GET /containers/json?all=1` lists.
fn container_count(conn: &mut Conn) -> Result<usize> {
    let r = conn.request("GET", "/containers/json?all=1", None)?;
    if r.status != 200 {
        bail!("GET /containers/json: {} {}", r.status, r.text());
    }
    r.json()?
        .as_array()
        .map(Vec::len)
        .context("GET /containers/json is not a list")
}

/// CPU seconds (user + system) `pid` has used so far, from `/proc/PID/stat`; its threads
/// included, its children not.
fn cpu_seconds(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').context("bad /proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, indexes 11 and 12 of `rest`.
    let ticks: u64 = f.get(11).context("no utime")?.parse::<u64>()?
        + f.get(12).context("no stime")?.parse::<u64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100);
    Ok(ticks as f64 / hz.max(1) as f64)
}

/// Nearest-rank percentile `q` (0..1) of sorted `v`.
fn pct(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// What the create bench measured.
struct Creates {
    n: usize,
    clients: usize,
    wall: f64,
    latencies: Vec<f64>,
    /// Per controller: name, creates sent to it, their p50 (s), its Raft counter deltas
    /// (proposals, log entries, fsyncs).
    per_controller: Vec<(String, usize, f64, [u64; 3])>,
    leader: String,
    /// CPU seconds each host's daemon and the harness used during the timed creates.
    cpu: Vec<(String, f64)>,
    /// Seconds the (untimed) `POST /containers/prune` took, and containers left after it.
    prune: (f64, usize),
    leader_changed: bool,
}

fn run(args: &Args, docker: &Path, work: &Path) -> Result<()> {
    let started = host::utc_now();
    let load_start = host::load();
    let config = work.join("docker-config");
    std::fs::create_dir_all(&config)?;
    let busybox = wharf_chaos_tests::busybox_image_tar(work, "busybox:latest")?;
    let busybox = busybox.display().to_string();

    log("deploy/local-cluster up --controllers 3 --agents 1");
    let t = Instant::now();
    let cluster = LocalCluster::up(&args.script, &args.wharf, &work.join("cluster"), 3, 1)?;
    log(&format!("cluster up in {:.1} s", t.elapsed().as_secs_f64()));
    signals::check()?;
    let tls = Tls::from_cert_path(&cluster.cert_path)?;
    let ctls: Vec<&Host> = cluster.controllers();
    if ctls.len() != 3 {
        bail!(
            "expected 3 controllers in cluster.state, found {}",
            ctls.len()
        );
    }
    let api = |h: &Host| -> Result<SocketAddr> { Ok(format!("{}:2376", h.addr).parse()?) };
    let mut probe = tls.connect(api(ctls[0])?)?;
    let leader = leader_addr(&mut probe)?;
    let leader_host = *ctls
        .iter()
        .find(|h| api(h).ok() == Some(leader))
        .with_context(|| format!("leader {leader} is not a controller of cluster.state"))?;
    let follower_host = *ctls
        .iter()
        .find(|h| h.name != leader_host.name)
        .context("no follower")?;
    log(&format!(
        "leader {} ({}), follower used for runs {} ({})",
        leader_host.name, leader_host.addr, follower_host.name, follower_host.addr
    ));

    log("starting wharf up (single host)");
    let single = WharfDaemon::start(&args.wharf, &work.join("wharf"))?;
    let mut sides = [
        Side {
            what: format!("through a follower ({})", follower_host.name),
            cli: cluster.cli(docker, follower_host, &config),
            samples: Vec::new(),
        },
        Side {
            what: format!("through the leader ({})", leader_host.name),
            cli: cluster.cli(docker, leader_host, &config),
            samples: Vec::new(),
        },
        Side {
            what: "`wharf up` (single host)".into(),
            cli: single.cli(docker, true),
            samples: Vec::new(),
        },
    ];
    sides[0]
        .cli
        .run(&["load", "-q", "-i", &busybox])
        .context("load busybox into the cluster")?;
    sides[2]
        .cli
        .run(&["load", "-q", "-i", &busybox])
        .context("load busybox into wharf up")?;

    log(&format!(
        "bench 1: {} warm-up + {} measured runs per side, alternating",
        cases::WARM_UP,
        args.runs
    ));
    for s in &sides {
        for _ in 0..cases::WARM_UP {
            signals::check()?;
            run_once(&s.cli).with_context(|| format!("warm-up run {}", s.what))?;
        }
    }
    for i in 0..args.runs {
        for s in &mut sides {
            signals::check()?;
            let secs = run_once(&s.cli).with_context(|| format!("run {} {}", i + 1, s.what))?;
            s.samples.push(secs);
        }
    }
    drop(single);
    // The sides are named by the roles at the start: say so if the leader moved meanwhile.
    let leader_after_runs = leader_addr(&mut tls.connect(api(ctls[0])?)?)?;
    if leader_after_runs != leader {
        log(&format!(
            "warning: the leader moved to {leader_after_runs} during the runs"
        ));
    }

    let creates = if args.creates > 0 {
        signals::check()?;
        Some(create_bench(args, &tls, &cluster, leader)?)
    } else {
        None
    };
    let load_end = host::load();
    let wharf_version = host::binary(&args.wharf);
    drop(probe);
    log("deploy/local-cluster down");
    drop(cluster);

    let mut md = format!(
        "Run {started} on {}; load average (1/5/15 min) at start {load_start}, at end {load_end}; {wharf_version}; docker CLI {}; harness built {}.\n\n",
        host::machine(),
        host::version_of(docker, &["version", "--format", "{{.Client.Version}}"]),
        host::profile()
    );
    md.push_str(&format!(
        "**`docker run --rm --network none busybox true`**: a 3-controller local cluster with 1 agent, and `wharf up` of the same binary beside it; every run over mutual TLS with the same CLI, {} warm-up runs per side, then one run on each in turn.\n\n",
        cases::WARM_UP
    ));
    md.push_str("| where | runs | p50 | p90 | mean | p50 / single host | mean / single host |\n");
    md.push_str("|---|---|---|---|---|---|---|\n");
    let summaries: Vec<(Summary, f64)> = sides
        .iter()
        .map(|s| (Summary::of(&s.samples).expect("runs > 0"), mean(&s.samples)))
        .collect();
    let (base, base_mean) = summaries[2];
    for (s, (sum, m)) in sides.iter().zip(&summaries) {
        md.push_str(&format!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} | {:.2} |\n",
            s.what,
            sum.n,
            sum.median * 1e3,
            sum.p90 * 1e3,
            m * 1e3,
            sum.median / base.median,
            m / base_mean,
        ));
    }
    let ratio = summaries[0].0.median / base.median;
    md.push_str(&format!(
        "\nfollower / single host (p50): {ratio:.2}× (target ≤ 1.3×: {}){}\n",
        if ratio <= 1.3 { "met" } else { "**over**" },
        if leader_after_runs != leader {
            format!("; **the leader moved to {leader_after_runs} during the runs**")
        } else {
            String::new()
        }
    ));
    if let Some(c) = &creates {
        let mut v = c.latencies.clone();
        v.sort_by(f64::total_cmp);
        let lead = c
            .per_controller
            .iter()
            .find(|p| p.0 == c.leader)
            .map_or([0; 3], |p| p.3);
        let sum = |k: usize| c.per_controller.iter().map(|p| p.3[k]).sum::<u64>();
        md.push_str(&format!(
            "\n**`POST /containers/create`** (busybox `true`, `--network none`) from {} concurrent clients, each one kept-alive TLS connection of its own (a direct API client, no CLI), round-robin over the 3 controllers; leader {}{}.\n\n",
            c.clients,
            c.leader,
            if c.leader_changed { " (**leadership changed during the bench**)" } else { "" }
        ));
        md.push_str("| creates | clients | wall | creates committed/s | p50 | p99 | leader fsyncs | fsyncs / create (leader) |\n");
        md.push_str("|---|---|---|---|---|---|---|---|\n");
        md.push_str(&format!(
            "| {} | {} | {:.2} s | {:.0} | {:.1} ms | {:.1} ms | {} | {:.3} |\n",
            c.n,
            c.clients,
            c.wall,
            c.n as f64 / c.wall,
            pct(&v, 0.5) * 1e3,
            pct(&v, 0.99) * 1e3,
            lead[2],
            lead[2] as f64 / c.n as f64,
        ));
        md.push_str("\nBy controller (Raft counters: deltas of each one's `/metrics` over the timed creates; proposals and log entries count where a write was proposed, a follower forwarding its group to the leader as one entry; fsyncs count where they happen):\n\n");
        md.push_str("| controller | creates sent | p50 of its creates | proposals | log entries | fsyncs |\n");
        md.push_str("|---|---|---|---|---|---|\n");
        for (name, n, p50, [p, e, f]) in &c.per_controller {
            let role = if *name == c.leader {
                "leader"
            } else {
                "follower"
            };
            md.push_str(&format!(
                "| {name} ({role}) | {n} | {:.1} ms | {p} | {e} | {f} |\n",
                p50 * 1e3
            ));
        }
        md.push_str(&format!(
            "| all | {} | | {} | {} | {} |\n",
            c.n,
            sum(0),
            sum(1),
            sum(2)
        ));
        md.push_str(&format!(
            "\nCPU used during the {:.2} s of creates (user + system; {} cores give {:.2} s): {}.\n",
            c.wall,
            host::cores(),
            c.wall * host::cores() as f64,
            c.cpu
                .iter()
                .map(|(n, s)| format!("{n} {s:.2} s"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        md.push_str(&format!(
            "\nverified: `GET /containers/json?all=1` listed all {} created containers; then one `POST /containers/prune` on the leader (untimed) took {:.1} s and left {}.\n",
            c.n, c.prune.0, c.prune.1
        ));
    }
    std::fs::write(&args.out, &md).with_context(|| format!("write {}", args.out.display()))?;
    println!("{md}");
    log(&format!("table written to {}", args.out.display()));
    Ok(())
}

fn create_bench(
    args: &Args,
    tls: &Tls,
    cluster: &LocalCluster,
    leader: SocketAddr,
) -> Result<Creates> {
    let ctls = cluster.controllers();
    let addrs: Vec<SocketAddr> = ctls
        .iter()
        .map(|h| format!("{}:2376", h.addr).parse())
        .collect::<Result<_, _>>()?;
    // A fresh connection for each reading: no idle connection to time out meanwhile.
    let metrics = || tls.connect(leader);
    let before_count = container_count(&mut metrics()?)?;
    if before_count != 0 {
        bail!("the cluster lists {before_count} containers before the create bench; expected 0");
    }
    log(&format!(
        "bench 2: {} creates from {} clients over {} controllers",
        args.creates,
        args.clients,
        addrs.len()
    ));
    // Every controller's counters: proposals and log entries count where a write was
    // proposed (a follower forwards its group to the leader as one entry), fsyncs where
    // they happen.
    let counters = || -> Result<Vec<[u64; 3]>> {
        addrs
            .iter()
            .map(|a| raft_counters(&mut tls.connect(*a)?))
            .collect()
    };
    // CPU of every host's daemon and of this harness (its 64 clients) over the creates.
    let mut procs: Vec<(String, String)> = cluster
        .hosts
        .iter()
        .filter_map(|h| Some((h.name.clone(), cluster.pid(h)?.to_string())))
        .collect();
    procs.push(("harness (the clients)".into(), "self".into()));
    let cpu = || -> Vec<f64> {
        procs
            .iter()
            .map(|(_, pid)| cpu_seconds(pid).unwrap_or(f64::NAN))
            .collect()
    };
    let before = counters()?;
    let cpu_before = cpu();
    let (wall, results) = create_burst(tls, &addrs, args.clients, args.creates, "busybox")?;
    let cpu_used: Vec<(String, f64)> = procs
        .iter()
        .zip(cpu().iter().zip(&cpu_before))
        .map(|((name, _), (a, b))| (name.clone(), a - b))
        .collect();
    let after = counters()?;
    let leader_after = leader_addr(&mut metrics()?)?;
    let latencies: Vec<f64> = results
        .iter()
        .flat_map(|(_, l)| l.iter().copied())
        .collect();
    let per_controller = ctls
        .iter()
        .zip(&addrs)
        .zip(before.iter().zip(&after))
        .map(|((h, a), (b, f))| {
            let mut lat: Vec<f64> = results
                .iter()
                .filter(|(addr, _)| addr == a)
                .flat_map(|(_, l)| l.iter().copied())
                .collect();
            lat.sort_by(f64::total_cmp);
            let p50 = if lat.is_empty() { 0.0 } else { pct(&lat, 0.5) };
            let delta = [f[0] - b[0], f[1] - b[1], f[2] - b[2]];
            (h.name.clone(), lat.len(), p50, delta)
        })
        .collect();
    let listed = container_count(&mut metrics()?)?;
    if listed != args.creates {
        bail!(
            "GET /containers/json?all=1 lists {listed} containers after {} creates",
            args.creates
        );
    }
    log(&format!(
        "verified {listed} containers; pruning them (untimed)"
    ));
    let pruning = Instant::now();
    let r = metrics()?.request("POST", "/containers/prune", Some(b"{}"))?;
    let prune_secs = pruning.elapsed().as_secs_f64();
    if r.status != 200 {
        bail!("POST /containers/prune: {} {}", r.status, r.text());
    }
    let left = container_count(&mut metrics()?)?;
    log(&format!(
        "prune took {prune_secs:.1} s; {left} containers left"
    ));
    let leader_name = ctls
        .iter()
        .zip(&addrs)
        .find(|(_, a)| **a == leader)
        .map_or(leader.to_string(), |(h, _)| h.name.clone());
    Ok(Creates {
        n: args.creates,
        clients: args.clients,
        wall,
        latencies,
        per_controller,
        leader: leader_name,
        cpu: cpu_used,
        prune: (prune_secs, left),
        leader_changed: leader_after != leader,
    })
}
