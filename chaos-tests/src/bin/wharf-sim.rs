//! `wharf-sim`: the benchmarks of issue 18 on simulated agents (chaos_tests::sim), each
//! printing a Markdown table.
//!
//! - `place`: N real `wharf controller` processes on loopback (default 3) and A simulated
//!   agents (default 1,000); K creates (default 100,000) from C concurrent clients (raw
//!   HTTP over mutual TLS, round-robin over the controllers): placements committed per
//!   second, p50/p99 of one create, the controllers' CPU seconds per placement. Checked:
//!   every create answered 201, the simulated hosts acknowledged exactly K creates, and
//!   `GET /containers/json?all=1` puts on each node exactly what its host holds.
//! - `quality`: spread and binpack with the controller's scheduler over a synthetic fleet
//!   of mixed sizes: imbalance (max/mean containers per node), share of nodes used.
//! - `agents`: run A simulated agents against a cluster until Ctrl-C (for scale tests by
//!   hand: `--join ADDR --token TOKEN`).
//!
//! Run as root (the controllers need it):
//! `CARGO_TARGET_DIR=/var/cache/wharf/target-sim cargo build --release -p wharf-controller
//! --bin wharf -p wharf-chaos-tests --bin wharf-sim &&
//! /var/cache/wharf/target-sim/release/wharf-sim place`.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wharf_chaos_tests::bench::api::{create_burst, Tls};
use wharf_chaos_tests::bench::procmem::cpu_seconds;
use wharf_chaos_tests::bench::{cases, host, signals};
use wharf_chaos_tests::sim::archive::{images_of, sim_image};
use wharf_chaos_tests::sim::controllers::LoopbackCluster;
use wharf_chaos_tests::sim::fleet::{fds_needed, raise_nofile, shapes, shapes_from, Fleet};
use wharf_chaos_tests::sim::{quality, FleetConfig};
use wharf_controller::cluster::identity::Token;
use wharf_controller::engine::scheduler::Strategy;

const USAGE: &str = "\
usage: wharf-sim COMMAND [options]
  place      --controllers N (3) --agents A (1000) --creates K (100000) --clients C (64)
             --wharf PATH (beside this binary) --dir DIR (/var/tmp) --out FILE
  fleet      place's options (defaults --agents 10000), then --idle-secs S (60): an idle
             minute, API p99s, RSS, 100 agents killed at once until Down
  quality    --agents A (1000) --containers K (4 per agent: about half their CPU)
  agents     --agents A --join ADDR --token TOKEN [--addr IP (127.0.0.1)] [--dir DIR]
             [--first I (0): names from sim-(I+1)] [--uniform: 4 CPUs, 8 GiB each]
             [--report FILE: counters and containers per host, as JSON, every 0.5 s]

A fleet larger than one process' open-file limit allows (3 connections per agent) is
split: place and fleet run the rest as `wharf-sim agents` child processes.";

#[derive(Clone)]
struct Args {
    controllers: usize,
    agents: usize,
    creates: usize,
    clients: usize,
    wharf: PathBuf,
    dir: PathBuf,
    out: Option<PathBuf>,
    join: Option<SocketAddr>,
    token: Option<String>,
    addr: String,
    idle_secs: u64,
    agents_given: bool,
    first: usize,
    uniform: bool,
    report: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        controllers: 3,
        agents: 1000,
        creates: 100_000,
        clients: 64,
        wharf: cases::default_wharf().context("no path for the wharf binary")?,
        dir: PathBuf::from("/var/tmp"),
        out: None,
        join: None,
        token: None,
        addr: "127.0.0.1".into(),
        idle_secs: 60,
        agents_given: false,
        first: 0,
        uniform: false,
        report: None,
    };
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .with_context(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--controllers" => a.controllers = value()?.parse()?,
            "--agents" => {
                a.agents = value()?.parse()?;
                a.agents_given = true;
            }
            "--idle-secs" => a.idle_secs = value()?.parse()?,
            "--creates" | "--containers" => a.creates = value()?.parse()?,
            "--clients" => a.clients = value()?.parse()?,
            "--wharf" => a.wharf = PathBuf::from(value()?),
            "--dir" => a.dir = PathBuf::from(value()?),
            "--out" => a.out = Some(PathBuf::from(value()?)),
            "--join" => a.join = Some(value()?.parse()?),
            "--token" => a.token = Some(value()?),
            "--addr" => a.addr = value()?,
            "--first" => a.first = value()?.parse()?,
            "--uniform" => a.uniform = true,
            "--report" => a.report = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if a.agents == 0 || a.clients == 0 || a.controllers == 0 {
        bail!("--agents, --clients and --controllers must be positive");
    }
    Ok(a)
}

fn log(msg: &str) {
    eprintln!("[{}] {msg}", host::utc_now());
}

fn main() -> Result<()> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_default();
    if cmd == "-h" || cmd == "--help" || cmd.is_empty() {
        println!("{USAGE}");
        return Ok(());
    }
    let mut args = parse_args(it)?;
    signals::install()?;
    let md = match cmd.as_str() {
        "quality" => {
            if args.creates == 100_000 {
                // About half the fleet's CPU: room left for both strategies to choose.
                args.creates = args.agents * 4;
            }
            quality_table(&args)
        }
        "place" => place(&args, false)?,
        "fleet" => place(&args, true)?,
        "agents" => return agents(&args),
        other => bail!("unknown command {other}\n{USAGE}"),
    };
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("write {}", out.display()))?;
    }
    println!("{md}");
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn quality_table(args: &Args) -> String {
    let mut md = format!(
        "**Scheduling quality**: the controller's scheduler (`schedule`, overcommit 1.0) places {} containers one by one (`--cpus`/`--memory` cycling 0.25/128 MiB, 0.5/512 MiB, 1/1 GiB, 2/4 GiB) over {} Ready agents of mixed sizes (cycling 2 CPU/4 GiB, 4/8, 8/32, 16/64); each placement recorded before the next.\n\n",
        args.creates, args.agents
    );
    md.push_str("| strategy | placed | max / node | mean / node | imbalance (max/mean) | nodes used | CPU reserved on used nodes | time |\n");
    md.push_str("|---|---|---|---|---|---|---|---|\n");
    for (strategy, sampled) in [
        (Strategy::Spread, false),
        (Strategy::Spread, true),
        (Strategy::Binpack, false),
    ] {
        let t = Instant::now();
        let q = quality::run(strategy, args.agents, args.creates, sampled);
        let name = if sampled {
            format!(
                "{}, {} nodes drawn per placement (as the engine places)",
                strategy.as_str(),
                wharf_controller::engine::scheduler::SAMPLE
            )
        } else {
            format!("{}, every node scored", strategy.as_str())
        };
        md.push_str(&format!(
            "| {} | {} of {} | {} | {:.2} | {:.2} | {} of {} ({:.1} %) | {:.1} % | {:.1} s |\n",
            name,
            q.placed,
            q.asked,
            q.max,
            q.mean,
            if q.mean > 0.0 {
                q.max as f64 / q.mean
            } else {
                0.0
            },
            q.used,
            q.nodes,
            100.0 * q.used as f64 / q.nodes as f64,
            100.0 * q.cpu_fill,
            t.elapsed().as_secs_f64(),
        ));
    }
    md
}

/// `agents`: keep a fleet joined to an existing cluster until Ctrl-C.
fn agents(args: &Args) -> Result<()> {
    let (Some(join), Some(token)) = (args.join, args.token.as_deref()) else {
        bail!("agents needs --join ADDR --token TOKEN\n{USAGE}");
    };
    let limit = raise_nofile(fds_needed(args.agents, 5))?;
    log(&format!("open-file limit {limit}"));
    let work = tempfile::Builder::new()
        .prefix("wharf-sim-")
        .tempdir_in(&args.dir)?;
    let archive = sim_image(work.path())?;
    let images = images_of(&archive)?;
    let cfg = FleetConfig {
        join,
        token: Token::parse(token)?,
        addr: args.addr.parse()?,
        dir: work.path().join("agents"),
        preload: Arc::new((archive, images)),
    };
    runtime()?.block_on(async {
        let shapes = shapes_from(args.first, args.agents, !args.uniform);
        let fleet = Fleet::start(&cfg, shapes, 64).await?;
        log(&format!("{} simulated agents joined", fleet.agents.len()));
        if let Some(report) = &args.report {
            // For a parent bench: what this share of the fleet was asked, and holds.
            while !signals::stopped() {
                write_report(&fleet, args.controllers, report)?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            write_report(&fleet, args.controllers, report)?;
            return Ok(());
        }
        while !signals::stopped() {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let c = fleet.counters();
            log(&format!(
                "connected {} / {}; heartbeats {}, creates {}, starts {}, exits {}",
                fleet.connected(1),
                fleet.agents.len(),
                c.heartbeats,
                c.creates,
                c.starts,
                c.exits
            ));
        }
        anyhow::Ok(())
    })
}

/// Write `fleet`'s counters, its agents connected to all `controllers`, and containers per
/// host to `path` (atomically).
fn write_report(fleet: &Fleet, controllers: usize, path: &Path) -> Result<()> {
    let c = fleet.counters();
    let held: serde_json::Map<String, serde_json::Value> = fleet
        .agents
        .iter()
        .map(|a| {
            (
                a.hostname.clone(),
                a.with_host(|h| h.containers.len()).into(),
            )
        })
        .collect();
    let doc = serde_json::json!({
        "connected": fleet.connected(controllers),
        "agents": fleet.agents.len(),
        "heartbeats": c.heartbeats,
        "creates": c.creates,
        "held": held,
    });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&doc)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The rest of a fleet, in `wharf-sim agents` child processes: each joins its share and
/// reports ([`write_report`]) until it is stopped.
struct Children {
    procs: Vec<(std::process::Child, PathBuf)>,
}

impl Children {
    /// Start children for agents `first..total`, `per` at most each, and wait until every
    /// one of their agents is connected.
    fn start(
        first: usize,
        total: usize,
        per: usize,
        controllers: usize,
        join: SocketAddr,
        token: &str,
        work: &Path,
    ) -> Result<Children> {
        let exe = std::env::current_exe()?;
        let mut procs = vec![];
        let mut at = first;
        while at < total {
            let n = per.min(total - at);
            let report = work.join(format!("report-{at}.json"));
            let dir = work.join(format!("child-{at}"));
            std::fs::create_dir_all(&dir)?;
            let child = std::process::Command::new(&exe)
                .args([
                    "agents",
                    "--agents",
                    &n.to_string(),
                    "--first",
                    &at.to_string(),
                ])
                .args(["--join", &join.to_string(), "--token", token, "--uniform"])
                .args(["--controllers", &controllers.to_string()])
                .arg("--dir")
                .arg(&dir)
                .arg("--report")
                .arg(&report)
                .stdout(std::process::Stdio::null())
                .spawn()?;
            procs.push((child, report));
            at += n;
        }
        let mut children = Children { procs };
        let t = Instant::now();
        loop {
            signals::check()?;
            let reports = children.reports();
            let connected: usize = reports
                .iter()
                .map(|r| r["connected"].as_u64().unwrap_or(0) as usize)
                .sum();
            if reports.len() == children.procs.len() && connected == total - first {
                break;
            }
            for (c, _) in &mut children.procs {
                if let Some(status) = c.try_wait()? {
                    bail!("a wharf-sim agents child process ended early: {status}");
                }
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!(
                    "{connected} of {} agents in child processes connected after 600 s",
                    total - first
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(children)
    }

    /// The children's last reports (those written so far).
    fn reports(&self) -> Vec<serde_json::Value> {
        self.procs
            .iter()
            .filter_map(|(_, r)| std::fs::read(r).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }

    /// Sum of a counter over the children.
    fn counter(&self, key: &str) -> u64 {
        self.reports()
            .iter()
            .map(|r| r[key].as_u64().unwrap_or(0))
            .sum()
    }

    /// Containers held per host, over the children.
    fn held(&self) -> std::collections::BTreeMap<String, usize> {
        let mut out = std::collections::BTreeMap::new();
        for r in self.reports() {
            for (k, v) in r["held"].as_object().into_iter().flatten() {
                out.insert(k.clone(), v.as_u64().unwrap_or(0) as usize);
            }
        }
        out
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (c, _) in &mut self.procs {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for (c, _) in &mut self.procs {
            let _ = c.wait();
        }
    }
}

/// Nearest-rank percentile `q` (0..1) of sorted `v`.
fn pct(v: &[f64], q: f64) -> f64 {
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

fn place(args: &Args, fleet_scale: bool) -> Result<String> {
    let mut args = args.clone();
    if fleet_scale && !args.agents_given {
        args.agents = 10_000;
    }
    let args = &args;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("wharf-sim place must run as root (it starts wharf controllers)");
    }
    if !args.wharf.is_file() {
        bail!(
            "{} not found: build it (cargo build --release -p wharf-controller --bin wharf) or pass --wharf",
            args.wharf.display()
        );
    }
    let limit = raise_nofile(fds_needed(args.agents, args.controllers))?;
    let work = tempfile::Builder::new()
        .prefix("wharf-sim-")
        .tempdir_in(&args.dir)?;
    let started = host::utc_now();
    log(&format!(
        "starting {} controllers on loopback (open-file limit {limit})",
        args.controllers
    ));
    let cluster =
        LoopbackCluster::start(&args.wharf, &work.path().join("ctl"), args.controllers, &[])?;
    let r = place_on(args, &cluster, work.path(), fleet_scale, limit);
    if r.is_err() {
        let dest = PathBuf::from("wharf-sim-place.logs");
        if cluster.keep_logs(&dest).is_ok() {
            log(&format!("controller logs kept in {}", dest.display()));
        }
    }
    let md = r?;
    Ok(format!(
        "Run {started} on {}; {}; harness built {}.\n\n{md}",
        host::machine(),
        host::binary(&args.wharf),
        host::profile()
    ))
}

/// A joined fleet with the `sim` image loaded and every agent Ready.
struct Setup {
    rt: tokio::runtime::Runtime,
    fleet: Fleet,
    /// The agents past what this process' open-file limit allows.
    children: Option<Children>,
    tls: Tls,
    leader: usize,
    joined: f64,
}

fn setup(args: &Args, cluster: &LoopbackCluster, work: &Path, limit: u64) -> Result<Setup> {
    let tls = Tls::from_cert_path(&cluster.cert_path)?;
    let archive = sim_image(work)?;
    let images = images_of(&archive)?;
    let cfg = FleetConfig {
        join: cluster.controllers[0].cluster,
        token: Token::parse(&cluster.agent_token)?,
        addr: "127.0.0.1".parse()?,
        dir: work.join("agents"),
        preload: Arc::new((archive.clone(), images)),
    };
    let rt = runtime()?;
    let t = Instant::now();
    // One connection per controller per agent: what fits under the open-file limit runs
    // here, the rest in child processes.
    let per_process = (limit.saturating_sub(4096) / args.controllers as u64).max(1) as usize;
    let here = args.agents.min(per_process);
    let fleet = rt.block_on(async {
        let fleet = Fleet::start(&cfg, shapes(here, false), 32).await?;
        fleet
            .wait_connected(args.controllers, Duration::from_secs(300))
            .await?;
        anyhow::Ok(fleet)
    })?;
    let children = if here < args.agents {
        Some(Children::start(
            here,
            args.agents,
            per_process,
            args.controllers,
            cluster.controllers[0].cluster,
            &cluster.agent_token,
            work,
        )?)
    } else {
        None
    };
    let joined = t.elapsed().as_secs_f64();
    log(&format!(
        "{} simulated agents joined and connected to every controller in {joined:.1} s ({here} in this process, {} child processes)",
        args.agents,
        children.as_ref().map_or(0, |c| c.procs.len())
    ));
    let leader = cluster.leader(&tls)?;
    let leader_index = cluster
        .controllers
        .iter()
        .position(|c| c.name == leader.name)
        .context("the leader")?;
    // Every agent Ready in the leader's view.
    let ready = |c: &SocketAddr| -> Result<usize> {
        let r = tls.connect(*c)?.request("GET", "/nodes", None)?;
        Ok(r.json()?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["Status"]["State"] == "ready" && n["Spec"]["Role"] == "worker")
            .count())
    };
    let t = Instant::now();
    loop {
        let n = ready(&leader.api)?;
        if n >= args.agents {
            break;
        }
        if t.elapsed() > Duration::from_secs(300) {
            bail!("{n} of {} agents Ready after 300 s", args.agents);
        }
        // Not faster: at 10,000 agents one list is megabytes the leader must build.
        std::thread::sleep(Duration::from_secs(2));
    }
    log(&format!(
        "every agent Ready in the leader's view {:.1} s after all joined",
        t.elapsed().as_secs_f64()
    ));
    // Loaded once every agent is Ready (a load goes to a Ready agent; with a few agents
    // the load came before any was, and failed).
    let r = tls
        .connect(leader.api)?
        .request("POST", "/images/load?quiet=1", Some(&archive))?;
    if r.status != 200 || r.text().contains("errorDetail") {
        bail!("POST /images/load: {} {}", r.status, r.text());
    }
    std::thread::sleep(Duration::from_secs(2));
    signals::check()?;
    Ok(Setup {
        rt,
        fleet,
        children,
        tls,
        leader: leader_index,
        joined,
    })
}

/// `n` creates from `clients` clients round-robin over `addrs`: wall seconds and every
/// create's latency (all answered 201, or an error).
fn create_many(
    tls: &Tls,
    addrs: &[SocketAddr],
    clients: usize,
    n: usize,
) -> Result<(f64, Vec<f64>)> {
    let (wall, per_conn) = create_burst(tls, addrs, clients, n, "sim")?;
    Ok((wall, per_conn.into_iter().flat_map(|(_, l)| l).collect()))
}

fn place_on(
    args: &Args,
    cluster: &LoopbackCluster,
    work: &Path,
    fleet_scale: bool,
    limit: u64,
) -> Result<String> {
    let Setup {
        rt,
        fleet,
        children,
        tls,
        leader,
        joined,
    } = setup(args, cluster, work, limit)?;
    let child_creates = || children.as_ref().map_or(0, |c| c.counter("creates"));
    let leader = &cluster.controllers[leader];
    let addrs: Vec<SocketAddr> = cluster.controllers.iter().map(|c| c.api).collect();
    let pids: Vec<u32> = cluster.controllers.iter().map(|c| c.pid()).collect();
    let cpu = || -> Vec<f64> {
        pids.iter()
            .map(|p| cpu_seconds(*p).unwrap_or(f64::NAN))
            .collect()
    };
    let self_cpu = || cpu_seconds(std::process::id()).unwrap_or(f64::NAN);
    let before_creates = fleet.counters().creates + child_creates();
    let raft0 = raft_counters(&tls, leader.api)?;
    let (cpu0, self0) = (cpu(), self_cpu());
    log(&format!(
        "{} creates from {} clients over {} controllers",
        args.creates,
        args.clients,
        addrs.len()
    ));
    let (wall, latencies) = create_many(&tls, &addrs, args.clients, args.creates)?;
    let (cpu1, self1) = (cpu(), self_cpu());
    let raft1 = raft_counters(&tls, leader.api)?;
    if children.is_some() {
        // The children report every 0.5 s.
        std::thread::sleep(Duration::from_millis(1200));
    }
    let acked = fleet.counters().creates + child_creates() - before_creates;
    // What the state says against what the simulated hosts hold.
    log("checking the state against the simulated hosts");
    let r = tls
        .connect(leader.api)?
        .request("GET", "/containers/json?all=1", None)?;
    if r.status != 200 {
        bail!("GET /containers/json: {}", r.status);
    }
    let mut by_node: std::collections::BTreeMap<String, usize> = Default::default();
    let list = r.json()?;
    for c in list.as_array().context("not a list")? {
        let name = c["Names"][0].as_str().unwrap_or("");
        let node = name.trim_start_matches('/').split('/').next().unwrap_or("");
        *by_node.entry(node.to_string()).or_default() += 1;
    }
    let listed: usize = by_node.values().sum();
    let mut held: std::collections::BTreeMap<String, usize> =
        children.as_ref().map(Children::held).unwrap_or_default();
    for a in &fleet.agents {
        held.insert(a.hostname.clone(), a.with_host(|h| h.containers.len()));
    }
    let mut mismatched = 0;
    for (host, n) in &held {
        if by_node.get(host).copied().unwrap_or(0) != *n {
            mismatched += 1;
        }
    }
    if held.len() != args.agents {
        bail!("{} hosts reported, {} joined", held.len(), args.agents);
    }
    if listed != args.creates || acked != args.creates as u64 || mismatched > 0 {
        bail!(
            "the state lists {listed} containers, the simulated hosts acknowledged {acked}, {mismatched} nodes disagree; {} were created",
            args.creates
        );
    }
    let per: Vec<usize> = held.values().copied().collect();
    let (min, max) = (
        per.iter().min().copied().unwrap_or(0),
        per.iter().max().copied().unwrap_or(0),
    );
    let mut v = latencies;
    v.sort_by(f64::total_cmp);
    let ctl_cpu: Vec<f64> = cpu1.iter().zip(&cpu0).map(|(a, b)| a - b).collect();
    let total_cpu: f64 = ctl_cpu.iter().sum();
    let mut md = format!(
        "**Placement throughput**: {} `wharf controller` processes on loopback (leader {}), {} simulated agents (each its own node certificate and one agent-protocol connection per controller; {:.1} s to join and connect), `POST /containers/create` (`sim` image, `true`, `--network none`) from {} concurrent clients, each one kept-alive TLS connection, round-robin over the controllers.\n\n",
        args.controllers, leader.name, args.agents, joined, args.clients
    );
    md.push_str("| creates | clients | wall | placements committed/s | p50 | p99 | controllers' CPU | CPU ms / placement | harness CPU |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    md.push_str(&format!(
        "| {} | {} | {:.1} s | {:.0} | {:.1} ms | {:.1} ms | {:.1} s ({}) | {:.2} | {:.1} s |\n",
        args.creates,
        args.clients,
        wall,
        args.creates as f64 / wall,
        pct(&v, 0.5) * 1e3,
        pct(&v, 0.99) * 1e3,
        total_cpu,
        cluster
            .controllers
            .iter()
            .zip(&ctl_cpu)
            .map(|(c, s)| format!("{} {s:.1}", c.name))
            .collect::<Vec<_>>()
            .join(", "),
        total_cpu * 1e3 / args.creates as f64,
        self1 - self0,
    ));
    md.push_str(&format!(
        "\nverified: all {} creates answered 201; the simulated hosts acknowledged {} `Create` calls; `GET /containers/json?all=1` lists {} containers and, node by node, exactly what each simulated host holds (min {min}, max {max} per node).\n",
        args.creates, acked, listed
    ));
    let d: Vec<f64> = raft1.iter().zip(&raft0).map(|(a, b)| a - b).collect();
    md.push_str(&format!(
        "\nthe leader's Raft meanwhile: {:.0} proposals in {:.0} log entries ({:.1} per entry), {:.0} synced writes, {:.0} snapshots built.\n",
        d[0],
        d[1],
        d[0] / d[1].max(1.0),
        d[2],
        d[3]
    ));
    if fleet_scale {
        md.push_str(&fleet_table(
            args,
            cluster,
            &tls,
            leader,
            fleet,
            children.as_ref(),
            &rt,
        )?);
    }
    drop(children);
    drop(rt);
    Ok(md)
}

/// The Raft counters of the controller at `addr` (`GET /metrics`): proposals, log
/// entries, synced writes, snapshots built.
fn raft_counters(tls: &Tls, addr: SocketAddr) -> Result<[f64; 4]> {
    let r = tls.connect(addr)?.request("GET", "/metrics", None)?;
    if r.status != 200 {
        bail!("GET /metrics: {}", r.status);
    }
    let text = String::from_utf8_lossy(&r.body);
    let value = |name: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("{name} missing from /metrics"))
    };
    Ok([
        value("wharf_raft_proposals_total")?,
        value("wharf_raft_log_entries_total")?,
        value("wharf_raft_synced_writes_total")?,
        value("wharf_raft_snapshots_built_total")?,
    ])
}

/// p50 and p99 (ms) of `n` runs of `GET path` on `addr`, one kept-alive connection.
fn api_p99(tls: &Tls, addr: SocketAddr, path: &str, n: usize) -> Result<(f64, f64, usize)> {
    let mut conn = tls.connect(addr)?;
    let mut v = Vec::with_capacity(n);
    let mut items = 0;
    for _ in 0..n {
        let t = Instant::now();
        let r = conn.request("GET", path, None)?;
        v.push(t.elapsed().as_secs_f64());
        if r.status != 200 {
            bail!("GET {path}: {} {}", r.status, r.text());
        }
        items = r.json()?.as_array().map_or(0, Vec::len);
    }
    v.sort_by(f64::total_cmp);
    Ok((pct(&v, 0.5) * 1e3, pct(&v, 0.99) * 1e3, items))
}

/// Bench 2: the fleet at rest, the read API at this size, and 100 agents killed at once.
fn fleet_table(
    args: &Args,
    cluster: &LoopbackCluster,
    tls: &Tls,
    leader: &wharf_chaos_tests::sim::controllers::Controller,
    mut fleet: Fleet,
    children: Option<&Children>,
    rt: &tokio::runtime::Runtime,
) -> Result<String> {
    let heartbeats = |fleet: &Fleet| {
        fleet.counters().heartbeats + children.map_or(0, |c| c.counter("heartbeats"))
    };
    let _guard = rt.enter();
    log(&format!(
        "idle for {} s with the agents connected",
        args.idle_secs
    ));
    let (c0, h0) = (cpu_seconds(leader.pid())?, heartbeats(&fleet));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(args.idle_secs) {
        signals::check()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    let idle = t.elapsed().as_secs_f64();
    let (c1, h1) = (cpu_seconds(leader.pid())?, heartbeats(&fleet));
    // Before the list calls: the full `docker ps` builds its answer whole on the leader.
    let rss_at_rest = cluster
        .controllers
        .iter()
        .map(|c| wharf_chaos_tests::bench::procmem::memory_kib(c.pid()).map(|(rss, _)| rss))
        .collect::<std::io::Result<Vec<_>>>()?;
    let x = &fleet.agents[0].hostname;
    let filter = format!("%7B%22node%22%3A%7B%22{x}%22%3Atrue%7D%7D");
    let calls = [
        ("`docker node ls`", "/nodes".to_string(), 20),
        (
            "`docker ps -a --filter node=X`",
            format!("/containers/json?all=1&filters={filter}"),
            20,
        ),
        (
            "`docker ps -a -n 100`",
            "/containers/json?all=1&limit=100".to_string(),
            20,
        ),
        (
            "`docker ps -a` (every container)",
            "/containers/json?all=1".to_string(),
            5,
        ),
    ];
    let mut md = format!(
        "
**Fleet at rest**: the same cluster after the creates, {} agents heartbeating at the default period, {} containers in the state.

| measure | value |
|---|---|
",
        args.agents, args.creates
    );
    md.push_str(&format!(
        "| leader ({}) CPU over {idle:.0} s idle, agents connected | {:.1} % of one core ({} heartbeats answered by the fleet, all controllers) |\n",
        leader.name,
        100.0 * (c1 - c0) / idle,
        h1 - h0
    ));
    for (what, path, n) in calls {
        let endpoint = path.split('?').next().unwrap_or("").to_string();
        match api_p99(tls, leader.api, &path, n) {
            Ok((p50, p99, items)) => md.push_str(&format!(
                "| {what}: p50 / p99 of {n} (`GET {endpoint}`, {items} items) | {p50:.1} ms / {p99:.1} ms |\n"
            )),
            Err(e) => md.push_str(&format!("| {what} | n/a: {e:#} |\n")),
        }
    }
    for (c, at_rest) in cluster.controllers.iter().zip(&rss_at_rest) {
        let (rss, _) = wharf_chaos_tests::bench::procmem::memory_kib(c.pid())?;
        md.push_str(&format!(
            "| RSS of {}: at rest / after the list calls above | {:.0} MiB / {:.0} MiB |\n",
            c.name,
            *at_rest as f64 / 1024.0,
            rss as f64 / 1024.0
        ));
    }
    for c in &cluster.controllers {
        // `POST /wharf/raft/snapshot`: built now from the records, timed by the controller.
        let t = Instant::now();
        let r = tls
            .connect(c.api)?
            .request("POST", "/wharf/raft/snapshot", None)?;
        let wall = t.elapsed().as_secs_f64();
        if r.status != 200 {
            bail!(
                "POST /wharf/raft/snapshot on {}: {} {}",
                c.name,
                r.status,
                r.text()
            );
        }
        let j = r.json()?;
        md.push_str(&format!(
            "| Raft snapshot of {} (`POST /wharf/raft/snapshot`): build / request | {} ms / {:.0} ms ({:.1} MiB, log index {}) |\n",
            c.name,
            j["millis"],
            wall * 1e3,
            j["bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            j["index"]
        ));
    }
    // 100 agents lose power at once: every connection drops, nothing said. Each first
    // runs one movable container (`--restart always`, a soft constraint to it), which
    // the leader must start on another node.
    let killed: Vec<String> = fleet
        .agents
        .iter()
        .rev()
        .take(100)
        .map(|a| a.hostname.clone())
        .collect();
    for (i, host) in killed.iter().enumerate() {
        let body = serde_json::to_vec(&serde_json::json!({
            "Image": "sim",
            "Cmd": ["sleep", "1d"],
            "Env": [format!("constraint:node==~{host}")],
            "HostConfig": {"RestartPolicy": {"Name": "always"}, "NetworkMode": "none"},
        }))?;
        let mut conn = tls.connect(leader.api)?;
        let r = conn.request(
            "POST",
            &format!("/containers/create?name=mv-{i}"),
            Some(&body),
        )?;
        if r.status != 201 {
            bail!("create mv-{i}: {} {}", r.status, r.text());
        }
        let r = conn.request("POST", &format!("/containers/mv-{i}/start"), None)?;
        if r.status != 204 {
            bail!("start mv-{i}: {} {}", r.status, r.text());
        }
    }
    let placed_on_killed = |list: &serde_json::Value| -> (usize, usize) {
        // (running movable containers, of those on a killed node)
        let mut running = 0;
        let mut on_killed = 0;
        for c in list.as_array().into_iter().flatten() {
            let name = c["Names"][0].as_str().unwrap_or("");
            let mut parts = name.trim_start_matches('/').splitn(2, '/');
            let (node, short) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !short.starts_with("mv-") || c["State"] != "running" {
                continue;
            }
            running += 1;
            if killed.iter().any(|k| k == node) {
                on_killed += 1;
            }
        }
        (running, on_killed)
    };
    let filter = "%7B%22name%22%3A%7B%22mv-%22%3Atrue%7D%7D";
    let list = tls
        .connect(leader.api)?
        .request("GET", &format!("/containers/json?filters={filter}"), None)?
        .json()?;
    let (running, on_killed) = placed_on_killed(&list);
    if running != killed.len() || on_killed != killed.len() {
        bail!(
            "{running} movable containers running, {on_killed} on the agents to kill (want {} and {})",
            killed.len(),
            killed.len()
        );
    }
    let t = Instant::now();
    for a in fleet.agents.iter_mut().rev().take(100) {
        a.kill();
    }
    let down = loop {
        signals::check()?;
        let r = tls.connect(leader.api)?.request("GET", "/nodes", None)?;
        let nodes = r.json()?;
        let n = nodes
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| {
                n["Status"]["State"] == "down"
                    && n["Description"]["Hostname"]
                        .as_str()
                        .is_some_and(|h| killed.iter().any(|k| k == h))
            })
            .count();
        if n == killed.len() {
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("{n} of {} killed agents Down after 120 s", killed.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let moved = loop {
        signals::check()?;
        let list = tls
            .connect(leader.api)?
            .request(
                "GET",
                &format!("/containers/json?all=1&filters={filter}"),
                None,
            )?
            .json()?;
        let (running, on_killed) = placed_on_killed(&list);
        let listed = list.as_array().map_or(0, Vec::len);
        if running == killed.len() && on_killed == 0 {
            if listed != killed.len() {
                bail!(
                    "{listed} movable containers listed after the move, want {} (moved once)",
                    killed.len()
                );
            }
            break t.elapsed().as_secs_f64();
        }
        if t.elapsed() > Duration::from_secs(120) {
            bail!("{running} movable containers running ({on_killed} on killed nodes) after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    md.push_str(&format!(
        "| 100 agents killed at once → all Down (`GET /nodes`, polled every 100 ms) | {down:.1} s |\n| → their 100 movable containers (`--restart always`) running once each on other nodes (`GET /containers/json`) | {moved:.1} s |\n"
    ));
    drop(fleet);
    Ok(md)
}
