//! Real `wharf controller` processes on loopback for the simulated fleet: the first
//! bootstraps the cluster, the others join it with the controller token, one at a time;
//! each has its own data dir, API port, cluster port and socket. Killed (SIGKILL, by the
//! PIDs this harness started) and their data dirs removed when dropped.

use anyhow::{bail, Context, Result};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One controller process.
pub struct Controller {
    /// `ctl-1`, `ctl-2`, ...
    pub name: String,
    /// Its Docker API (mutual TLS).
    pub api: SocketAddr,
    /// Its cluster port (joins, agents, Raft).
    pub cluster: SocketAddr,
    /// Its data dir.
    pub data_dir: PathBuf,
    child: Child,
}

impl Controller {
    /// Its process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Controllers on loopback; killed when dropped.
pub struct LoopbackCluster {
    /// The controllers, `ctl-1` (the bootstrap one) first.
    pub controllers: Vec<Controller>,
    /// `DOCKER_CERT_PATH` of the cluster's client certificate.
    pub cert_path: PathBuf,
    /// The agent join token.
    pub agent_token: String,
    dir: PathBuf,
}

/// A free TCP port on loopback (bound then released: another process could take it in
/// between, which only fails the start).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn token(wharf: &Path, data_dir: &Path, role: &str) -> Result<String> {
    let out = Command::new(wharf)
        .args(["cluster", "token", "--data-dir"])
        .arg(data_dir)
        .arg(role)
        .output()
        .with_context(|| format!("run {}", wharf.display()))?;
    let t = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || t.is_empty() {
        bail!(
            "wharf cluster token {role}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(t)
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let t = Instant::now();
    while !ready() {
        if t.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl LoopbackCluster {
    /// Start `n` controllers of `wharf` under `dir`, each with `extra` arguments too
    /// (e.g. `--heartbeat-period 1`); returns once each serves its API.
    pub fn start(wharf: &Path, dir: &Path, n: usize, extra: &[String]) -> Result<LoopbackCluster> {
        std::fs::create_dir_all(dir)?;
        let mut c = LoopbackCluster {
            controllers: Vec::new(),
            cert_path: PathBuf::new(),
            agent_token: String::new(),
            dir: dir.to_path_buf(),
        };
        let mut controller_token = String::new();
        for i in 1..=n {
            let name = format!("ctl-{i}");
            let data_dir = dir.join(&name);
            std::fs::create_dir_all(&data_dir)?;
            let api: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let cluster: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
            let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
            let mut cmd = Command::new(wharf);
            cmd.arg("controller")
                .arg("--data-dir")
                .arg(&data_dir)
                .args(["--node-name", &name])
                .args(["--api-addr", &api.to_string()])
                .args(["--cluster-addr", &cluster.to_string()])
                .arg("--unix-socket")
                .arg(data_dir.join("docker.sock"))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log);
            if i == 1 {
                cmd.arg("--bootstrap");
            } else {
                cmd.args(["--join", &c.controllers[0].cluster.to_string()])
                    .args(["--token", &controller_token]);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("start {}", wharf.display()))?;
            c.controllers.push(Controller {
                name: name.clone(),
                api,
                cluster,
                data_dir: data_dir.clone(),
                child,
            });
            if i == 1 {
                let env = data_dir.join("client.env");
                wait_for(
                    &format!("{name} writes client.env"),
                    Duration::from_secs(60),
                    || env.is_file(),
                )?;
                let text = std::fs::read_to_string(&env)?;
                let cert = text
                    .lines()
                    .find_map(|l| l.strip_prefix("export DOCKER_CERT_PATH="))
                    .context("no DOCKER_CERT_PATH in client.env")?;
                c.cert_path = PathBuf::from(cert.trim_matches(['\'', '"']));
                controller_token = token(wharf, &data_dir, "controller")?;
                c.agent_token = token(wharf, &data_dir, "agent")?;
            }
            let tls = crate::bench::api::Tls::from_cert_path(&c.cert_path)?;
            wait_for(
                &format!("{name} answers GET /_ping"),
                Duration::from_secs(60),
                || {
                    tls.connect(api)
                        .and_then(|mut conn| conn.request("GET", "/_ping", None))
                        .is_ok_and(|r| r.status == 200)
                },
            )?;
            // One membership change at a time: the next joins once this one is a voter.
            wait_for(
                &format!("{name} is a Raft member"),
                Duration::from_secs(60),
                || c.managers(&tls).is_ok_and(|m| m >= i),
            )?;
        }
        Ok(c)
    }

    /// How many controllers `GET /nodes` lists as reachable managers.
    fn managers(&self, tls: &crate::bench::api::Tls) -> Result<usize> {
        let r = tls
            .connect(self.controllers[0].api)?
            .request("GET", "/nodes", None)?;
        if r.status != 200 {
            bail!("GET /nodes: {}", r.status);
        }
        Ok(r.json()?
            .as_array()
            .into_iter()
            .flatten()
            .filter(|n| n["ManagerStatus"]["Reachability"] == "reachable")
            .count())
    }

    /// The controller whose `GET /nodes` entry says `Leader`.
    pub fn leader(&self, tls: &crate::bench::api::Tls) -> Result<&Controller> {
        let r = tls
            .connect(self.controllers[0].api)?
            .request("GET", "/nodes", None)?;
        let nodes = r.json()?;
        let addr = nodes
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["ManagerStatus"]["Leader"] == true)
            .and_then(|n| n["ManagerStatus"]["Addr"].as_str())
            .context("no controller is Leader in GET /nodes")?
            .to_string();
        self.controllers
            .iter()
            .find(|c| c.api.to_string() == addr || c.cluster.to_string() == addr)
            .with_context(|| format!("the leader {addr} is none of ours"))
    }

    /// Keep the controllers' logs in `dest`.
    pub fn keep_logs(&self, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        for c in &self.controllers {
            let log = self.dir.join(format!("{}.log", c.name));
            std::fs::copy(&log, dest.join(format!("{}.log", c.name)))?;
        }
        Ok(())
    }
}

impl Drop for LoopbackCluster {
    fn drop(&mut self) {
        for c in &mut self.controllers {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
        for c in &self.controllers {
            let _ = std::fs::remove_dir_all(&c.data_dir);
        }
    }
}
