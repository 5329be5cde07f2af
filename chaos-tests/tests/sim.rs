//! Simulated agents against one real `wharf controller` (as root, as CI runs the suite):
//! 20 of them join with the token, each with its own node certificate and connection;
//! `docker node ls` lists them Ready; a container of the stock CLI lands on one of them,
//! and the exit its simulated host reports is what `docker wait` and `docker inspect` show.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use wharf_chaos_tests::sim::archive::{images_of, sim_image};
use wharf_chaos_tests::sim::controllers::LoopbackCluster;
use wharf_chaos_tests::sim::fleet::{shapes, Fleet};
use wharf_chaos_tests::sim::FleetConfig;

/// The `wharf` binary `cargo test --workspace` built beside this test.
fn wharf_bin() -> PathBuf {
    if let Ok(p) = std::env::var("WHARF_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/debug/deps/sim-HASH → target/debug/wharf
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("wharf"))
        .expect("a target directory")
}

fn docker(socket: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .args(args)
        .output()
        .context("run docker")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn simulated_agents_join_take_a_placement_and_report_its_exit() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        bail!("this test starts wharf controller, which runs as root");
    }
    let wharf = wharf_bin();
    assert!(
        wharf.is_file(),
        "{} not built: cargo build -p wharf-controller --bin wharf",
        wharf.display()
    );
    let dir = tempfile::Builder::new()
        .prefix("wharf-sim-")
        .tempdir_in("/tmp")?;
    let cluster = LoopbackCluster::start(&wharf, &dir.path().join("ctl"), 1, &[])?;
    let socket = cluster.controllers[0].data_dir.join("docker.sock");
    let result = (|| -> Result<()> {
        let archive = sim_image(dir.path())?;
        let images = images_of(&archive)?;
        let cfg = FleetConfig {
            join: cluster.controllers[0].cluster,
            token: wharf_controller::cluster::identity::Token::parse(&cluster.agent_token)?,
            addr: "127.0.0.1".parse()?,
            dir: dir.path().join("agents"),
            preload: std::sync::Arc::new((archive, images)),
        };
        let rt = tokio::runtime::Runtime::new()?;
        let fleet = rt.block_on(async {
            let fleet = Fleet::start(&cfg, shapes(20, true), 8).await?;
            fleet.wait_connected(1, Duration::from_secs(30)).await?;
            anyhow::Ok(fleet)
        })?;
        let ready = (0..300)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(100));
                docker(
                    &socket,
                    &["node", "ls", "--format", "{{.Hostname}} {{.Status}}"],
                )
                .unwrap_or_default()
            })
            .find(|ls| {
                ls.lines()
                    .filter(|l| l.starts_with("sim-") && l.ends_with(" Ready"))
                    .count()
                    == 20
            })
            .context("20 simulated agents Ready in docker node ls")?;
        assert_eq!(
            ready.lines().count(),
            21,
            "the controller and 20 agents: {ready}"
        );
        docker(
            &socket,
            &[
                "load",
                "-i",
                dir.path().join("sim.tar").to_str().context("path")?,
            ],
        )?;
        docker(
            &socket,
            &["run", "-d", "--name", "one", "sim", "sh", "-c", "exit 3"],
        )?;
        assert_eq!(docker(&socket, &["wait", "one"])?.trim(), "3");
        let seen = docker(
            &socket,
            &[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}} {{.Node.Name}}",
                "one",
            ],
        )?;
        let f: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(f[..2], ["exited", "3"], "{seen}");
        let host = fleet
            .agents
            .iter()
            .find(|a| a.hostname == f[2])
            .with_context(|| format!("the container is on {}, no simulated agent", f[2]))?;
        let id = docker(&socket, &["inspect", "-f", "{{.Id}}", "one"])?;
        let held = host.with_host(|h| {
            h.containers
                .iter()
                .find(|(c, _)| c.as_str() == id.trim())
                .map(|(_, c)| c.exit.map(|e| e.code))
        });
        assert_eq!(held, Some(Some(3)), "its host holds it, exited 3");
        let c = fleet.counters();
        assert_eq!((c.creates, c.starts, c.exits), (1, 1, 1));
        assert!(c.heartbeats >= 20, "every agent was asked at least once");
        drop(fleet);
        Ok(())
    })();
    if result.is_err() {
        let _ = cluster.keep_logs(Path::new("/tmp/wharf-sim-test-logs"));
    }
    result
}
