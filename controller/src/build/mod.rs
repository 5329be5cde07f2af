//! `docker build` with the classic builder: a Dockerfile run step by step on this host,
//! each step an image, with Docker's layer cache.
//!
//! ```text
//!  POST /build (tar body) ──► BuildContext::put ──► agent: unpacked under its DATA_DIR/build/<id>/
//!        │                          .dockerignore pruned, Dockerfile read inside the root
//!        ▼ the Dockerfile's text
//!  dockerfile::parse (pure) ──► executor: per stage, per instruction
//!        probe CacheIndex (parent image, container config) ── hit ──► " ---> Using cache"
//!        miss: metadata ─► image config only
//!              RUN ─► container (network none) ─► output streamed ─► commit its layer
//!              COPY/ADD ─► collected by the agent (confined) ─► container root ─► commit its layer
//!        ─► JSON lines {"stream"}, {"aux":{"ID"}}, {"errorDetail"} to the client
//! ```
//!
//! Pure parts: [`dockerfile`] (parser, word expansion), [`ignore`] (patterns), [`cache`]
//! (cache keys and the [`cache::CacheIndex`] over the replicated image records). The rest
//! is thin: [`context`] is the build's handle on its context, which the agent holds;
//! [`executor`] drives the engine.

pub mod cache;
pub mod context;
pub mod dockerfile;
pub mod executor;
pub mod ignore;
pub mod metadata;

use bytes::Bytes;
use serde_json::json;
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// What `POST /build` asks for.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `t`: references to tag the result with (normalised).
    pub tags: Vec<String>,
    /// `dockerfile`: its path in the context (default `Dockerfile`).
    pub dockerfile: String,
    /// `buildargs`: `--build-arg` values (`None`: given without a value).
    pub build_args: BTreeMap<String, Option<String>>,
    /// `nocache`.
    pub no_cache: bool,
    /// `rm`: remove intermediate containers after a successful step (default true).
    pub rm: bool,
    /// `forcerm`: remove them even after a failed step.
    pub force_rm: bool,
    /// `q`: only the image ID.
    pub quiet: bool,
    /// `labels`: set on the final image.
    pub labels: BTreeMap<String, String>,
    /// `target`: the last stage to build.
    pub target: String,
    /// `cachefrom`: images whose steps may be reused (local images are anyway).
    pub cache_from: Vec<String>,
    /// `pull`: there is no registry; the local image is used, with a note.
    pub pull: bool,
}

/// Why a build stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A failure reported to the client as `{"errorDetail":{"message"}}`.
    Failed(String),
    /// A `RUN` exited non-zero: `errorDetail` carries the code, which the CLI exits with.
    Run {
        /// The command as Docker shows it.
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// The client went away; nothing more can be sent.
    Cancelled,
}

impl BuildError {
    /// The in-stream error line for the client.
    pub fn line(&self) -> Option<Bytes> {
        let v = match self {
            BuildError::Failed(m) => json!({"errorDetail": {"message": m}, "error": m}),
            BuildError::Run { command, code } => {
                let m = format!("The command '{command}' returned a non-zero code: {code}");
                json!({"errorDetail": {"code": code, "message": m}, "error": m})
            }
            BuildError::Cancelled => return None,
        };
        Some(line(&v))
    }
}

impl<E: std::fmt::Display> From<E> for BuildError
where
    E: std::error::Error,
{
    fn from(e: E) -> BuildError {
        BuildError::Failed(e.to_string())
    }
}

fn line(v: &serde_json::Value) -> Bytes {
    let mut s = v.to_string();
    s.push_str("\r\n");
    Bytes::from(s)
}

/// The JSON-lines stream to the client.
pub struct Output {
    tx: mpsc::Sender<Bytes>,
    quiet: bool,
}

impl Output {
    /// Wrap the response body's sender; `quiet` drops the `stream` lines.
    pub fn new(tx: mpsc::Sender<Bytes>, quiet: bool) -> Output {
        Output { tx, quiet }
    }

    /// Send `{"stream": text}` (unless quiet).
    pub async fn stream(&self, text: &str) -> Result<(), BuildError> {
        if self.quiet {
            return Ok(());
        }
        self.raw(line(&json!({ "stream": text }))).await
    }

    /// Send `{"aux":{"ID": id}}`.
    pub async fn aux(&self, id: &str) -> Result<(), BuildError> {
        self.raw(line(&json!({"aux": {"ID": id}}))).await
    }

    /// Send a prepared line.
    pub async fn raw(&self, b: Bytes) -> Result<(), BuildError> {
        self.tx.send(b).await.map_err(|_| BuildError::Cancelled)
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}
