//! A local multi-host cluster of the bench's own (`deploy/local-cluster up` on a
//! temporary DIR, with `WHARF_BIN` = the binary under test), taken down (`down`) when
//! dropped, also on error or Ctrl-C.

use super::cli::{Cli, Endpoint};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One host of the cluster, from `DIR/cluster.state`.
#[derive(Clone, Debug)]
pub struct Host {
    /// `ctl-1`, `node-1`, …: the name `docker node ls` shows.
    pub name: String,
    /// `controller` or `agent`.
    pub role: String,
    /// Its address (a controller serves the Docker API on `ADDR:2376`).
    pub addr: String,
}

/// A running local cluster; `deploy/local-cluster down` on drop.
pub struct LocalCluster {
    script: PathBuf,
    /// The cluster's DIR.
    pub dir: PathBuf,
    /// Its hosts, in the order of `cluster.state`.
    pub hosts: Vec<Host>,
    /// `DOCKER_CERT_PATH` of its clients (`ca.pem`, `cert.pem`, `key.pem`).
    pub cert_path: PathBuf,
}

/// `deploy/local-cluster` of this source tree.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local-cluster")
}

impl LocalCluster {
    /// `deploy/local-cluster up --dir DIR --controllers C --agents A` with `WHARF_BIN=wharf`.
    /// On failure the cluster is taken down before the error returns.
    pub fn up(
        script: &Path,
        wharf: &Path,
        dir: &Path,
        controllers: usize,
        agents: usize,
    ) -> Result<LocalCluster> {
        let mut c = LocalCluster {
            script: script.to_path_buf(),
            dir: dir.to_path_buf(),
            hosts: Vec::new(),
            cert_path: PathBuf::new(),
        };
        let wharf = std::fs::canonicalize(wharf)?;
        // The same process group: a Ctrl-C stops `up` too, and the drop runs `down`.
        let out = Command::new(script)
            .arg("up")
            .arg("--dir")
            .arg(dir)
            .args(["--controllers", &controllers.to_string()])
            .args(["--agents", &agents.to_string()])
            .env("WHARF_BIN", &wharf)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("spawn {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "local-cluster up failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let state = std::fs::read_to_string(dir.join("cluster.state"))?;
        for line in state.lines() {
            if let Some(rest) = line.strip_prefix("host=") {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() < 3 {
                    bail!("bad cluster.state line {line:?}");
                }
                c.hosts.push(Host {
                    name: f[0].into(),
                    role: f[1].into(),
                    addr: f[2].into(),
                });
            }
        }
        let env = std::fs::read_to_string(dir.join("client.env"))?;
        let cert = env
            .lines()
            .find_map(|l| l.strip_prefix("export DOCKER_CERT_PATH="))
            .context("no DOCKER_CERT_PATH in client.env")?;
        c.cert_path = PathBuf::from(cert.trim_matches(['\'', '"']));
        Ok(c)
    }

    /// The controllers, in order (`ctl-1` first).
    pub fn controllers(&self) -> Vec<&Host> {
        self.hosts
            .iter()
            .filter(|h| h.role == "controller")
            .collect()
    }

    /// The pid of `host`'s daemon (`DIR/hosts/NAME/pid`).
    pub fn pid(&self, host: &Host) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("hosts").join(&host.name).join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// The docker CLI aimed at `host`'s API over TLS.
    pub fn cli(&self, docker: &Path, host: &Host, config: &Path) -> Cli {
        Cli {
            docker: docker.to_path_buf(),
            endpoint: Endpoint::Tls {
                addr: format!("{}:2376", host.addr),
                cert_path: self.cert_path.clone(),
            },
            config: config.to_path_buf(),
        }
    }

    /// Copy the hosts' logs to `dest` (for a post-mortem once the temp dir is gone).
    pub fn keep_logs(dir: &Path, dest: &Path) -> Result<()> {
        std::fs::create_dir_all(dest)?;
        for e in std::fs::read_dir(dir.join("hosts"))?.flatten() {
            let log = e.path().join("wharf.log");
            if log.is_file() {
                std::fs::copy(
                    &log,
                    dest.join(format!("{}.log", e.file_name().to_string_lossy())),
                )?;
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let status = Command::new(&self.script)
            .arg("down")
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "warning: `{} down --dir {}` failed ({status:?}); run it again by hand",
                self.script.display(),
                self.dir.display()
            );
        }
    }
}
