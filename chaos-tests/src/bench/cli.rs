//! The one stock `docker` CLI both engines are driven with, pointed at one endpoint.
//!
//! ```text
//!   harness ──spawn──► /usr/local/bin/docker (28.x) ──unix socket or TLS──► wharf up
//!                                                    └─────────────────────► dockerd
//! ```

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// How the CLI reaches a daemon.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// `DOCKER_HOST=unix://PATH`.
    Unix(PathBuf),
    /// `DOCKER_HOST=tcp://ADDR` with `DOCKER_TLS_VERIFY=1` and the client certificates.
    Tls {
        /// `127.0.0.1:PORT`.
        addr: String,
        /// Directory with `ca.pem`, `cert.pem`, `key.pem`.
        cert_path: PathBuf,
    },
}

/// The `docker` CLI aimed at one engine, with a private `DOCKER_CONFIG`.
#[derive(Clone, Debug)]
pub struct Cli {
    /// Path of the CLI binary (the same for both engines).
    pub docker: PathBuf,
    /// Where it connects.
    pub endpoint: Endpoint,
    /// A private config dir, so no user context or credential helper interferes.
    pub config: PathBuf,
}

/// The CLI to use: the first `docker` on `PATH` that is not Debian's `/usr/bin/docker`
/// (docker.io ships an old CLI there), else `/usr/local/bin/docker`, else Debian's (both
/// engines still get the same client; the table names its version).
pub fn find_docker() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("docker"))
        .find(|p| {
            p.is_file() && std::fs::canonicalize(p).is_ok_and(|c| c != Path::new("/usr/bin/docker"))
        })
        .or_else(|| {
            ["/usr/local/bin/docker", "/usr/bin/docker"]
                .into_iter()
                .map(PathBuf::from)
                .find(|p| p.is_file())
        })
}

impl Cli {
    /// A `Command` for `docker ARGS` against this engine (stdin closed).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.docker);
        c.env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH")
            .env_remove("DOCKER_CONTEXT")
            .env("DOCKER_CONFIG", &self.config)
            // The classic builder on both sides (the CLI has no buildx here).
            .env("DOCKER_BUILDKIT", "0")
            .env("DOCKER_CLI_HINTS", "false");
        match &self.endpoint {
            Endpoint::Unix(p) => {
                c.env("DOCKER_HOST", format!("unix://{}", p.display()));
            }
            Endpoint::Tls { addr, cert_path } => {
                c.env("DOCKER_HOST", format!("tcp://{addr}"))
                    .env("DOCKER_TLS_VERIFY", "1")
                    .env("DOCKER_CERT_PATH", cert_path);
            }
        }
        c.args(args).stdin(Stdio::null());
        c
    }

    /// Run `docker ARGS` and fail with its stderr unless it exits 0.
    pub fn run(&self, args: &[&str]) -> Result<Output> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("run {}", self.docker.display()))?;
        if !out.status.success() {
            bail!(
                "docker {}: {}",
                args.first().copied().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Run `docker ARGS` and return its trimmed stdout.
    pub fn text(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.run(args)?.stdout)
            .trim()
            .to_string())
    }

    /// Remove every container this engine has (best effort, for clean-up).
    pub fn remove_all_containers(&self) {
        let Ok(ids) = self.text(&["ps", "-aq"]) else {
            return;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        for chunk in ids.chunks(50) {
            let mut args = vec!["rm", "-f"];
            args.extend(chunk);
            let _ = self.command(&args).output();
        }
    }
}
