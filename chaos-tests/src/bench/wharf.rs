//! A `wharf up` of the bench's own: temporary data dir, free loopback port, private unix
//! socket; `wharf down` on that data dir when dropped, even on error or Ctrl-C. Two of
//! them (a new and an old binary) run side by side without sharing anything: the
//! default bridge, its subnet, the iptables chains (`WHARF-<tag>*`) and the cgroup parent
//! are all derived by `wharf up` from the data dir.

use super::cli::{Cli, Endpoint};
use super::signals;
use anyhow::{bail, Context, Result};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `wharf up`; stopped and cleaned (`wharf down`) on drop.
pub struct WharfDaemon {
    child: Child,
    wharf: PathBuf,
    /// Its data dir (containers, certificates, `client.env`).
    pub data: PathBuf,
    /// Its unix socket.
    pub socket: PathBuf,
    /// Its TLS address, `127.0.0.1:PORT`.
    pub addr: String,
    config: PathBuf,
    dir: PathBuf,
}

impl WharfDaemon {
    /// Start `wharf up` under `dir` (created) and wait until it has written `client.env`.
    pub fn start(wharf: &Path, dir: &Path) -> Result<WharfDaemon> {
        std::fs::create_dir_all(dir)?;
        let data = dir.join("data");
        let socket = dir.join("docker.sock");
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("wharf.log"))?;
        let child = Command::new(wharf)
            .args(["up", "--data-dir"])
            .arg(&data)
            .args(["--api-addr", &addr])
            .arg("--unix-socket")
            .arg(&socket)
            .env("WHARF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C in the terminal reaches the harness, which
            // then stops the daemon through `wharf down`.
            .process_group(0)
            .spawn()
            .with_context(|| format!("spawn {} up", wharf.display()))?;
        let mut w = WharfDaemon {
            child,
            wharf: wharf.to_path_buf(),
            data: data.clone(),
            socket,
            addr,
            config: dir.join("docker-config"),
            dir: dir.to_path_buf(),
        };
        std::fs::create_dir_all(&w.config)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !data.join("client.env").exists() {
            signals::check()?;
            if let Some(status) = w.child.try_wait()? {
                bail!("wharf up exited ({status}); see {}", w.log().display());
            }
            if Instant::now() > deadline {
                bail!("wharf up not ready after 120 s; see {}", w.log().display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(w)
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("wharf.log")
    }

    /// The pid of `wharf up`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The CLI aimed at this Wharf, over its unix socket or over mutual TLS.
    pub fn cli(&self, docker: &Path, tls: bool) -> Cli {
        let endpoint = if tls {
            Endpoint::Tls {
                addr: self.addr.clone(),
                cert_path: self.client_certs(),
            }
        } else {
            Endpoint::Unix(self.socket.clone())
        };
        Cli {
            docker: docker.to_path_buf(),
            endpoint,
            config: self.config.clone(),
        }
    }

    /// The client certificate dir (`ca.pem`, `cert.pem`, `key.pem`) `wharf up` issued.
    pub fn client_certs(&self) -> PathBuf {
        self.data.join("client")
    }

    /// The CA and server certificate `wharf up` serves TLS with: `(ca, cert, key)`;
    /// dockerd is given the same so one client identity works for both.
    pub fn server_certs(&self) -> (PathBuf, PathBuf, PathBuf) {
        let c = self.data.join("certs");
        (
            c.join("ca.pem"),
            c.join("server.pem"),
            c.join("server-key.pem"),
        )
    }

    /// Pids of every process of this engine: `wharf up`, its shim zygote and the shims of
    /// its containers (from `containers/*/shim.pid`), not the containers' own processes.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.child.id()];
        // The shim zygote, which forks the shims, is part of the engine too.
        if let Some(pid) = std::fs::read_to_string(self.data.join("shim-zygote.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            pids.push(pid);
        }
        if let Ok(rd) = std::fs::read_dir(self.data.join("containers")) {
            for e in rd.flatten() {
                if let Some(pid) = std::fs::read_to_string(e.path().join("shim.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                {
                    pids.push(pid);
                }
            }
        }
        pids
    }
}

impl Drop for WharfDaemon {
    fn drop(&mut self) {
        // The same socket as `up`: `down` removes it if stale, and must not touch the
        // default /run/wharf/docker.sock of another instance.
        let _ = Command::new(&self.wharf)
            .args(["down", "--data-dir"])
            .arg(&self.data)
            .arg("--unix-socket")
            .arg(&self.socket)
            .args(["--api-addr", &self.addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
