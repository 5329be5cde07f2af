//! Which run's stream an attach gets (`docker attach`, the attach of `docker run` and
//! `docker start -a`, the SDK's `attach`).
//!
//! ```text
//!  attach ─► container lock ─► running?  ─► shim stream, open before the 101 answer
//!                           └► otherwise ─► registered for the next start (the agent
//!                                           hands the stream over before the process runs)
//!  start  ─► container lock ─► spawn shim ─► pending attachers ─► run ─► ContainerStarted
//! ```
//!
//! The decision is taken under the container's lock, which a start holds from before its
//! shim is spawned until the run is recorded: an attach can no longer see `created` (or
//! `exited`) while a start has already handed out the streams of its run, and then wait
//! for a start that has already happened.

use super::Engine;
use crate::agent_client::AttachCall;
use crate::engine::error::EngineError;
use tracing::debug;
use wharf_protocol::state::ContainerStatus;
use wharf_protocol::ContainerId;

/// Where an attach's stream comes from.
pub enum AttachSource {
    /// The container runs: its output from now on, then its exit.
    Running(AttachCall),
    /// The container runs but its shim could not be reached (it is exiting): nothing to
    /// stream.
    Gone,
    /// The container does not run: the stream of its next start, registered with the
    /// agent; its items come once the start has happened (aborted if the start fails or
    /// the container is removed).
    NextStart(AttachCall),
}

impl Engine {
    /// Open the stream of an attach to container `id`, with its stdin if `stdin`; call
    /// before answering the client, so that none of the output that follows the answer
    /// is missed.
    pub async fn open_attach(
        &self,
        id: &ContainerId,
        stdin: bool,
    ) -> Result<AttachSource, EngineError> {
        let lock = self.lock_for(id);
        let _guard = lock.lock().await;
        let c = self.container(id.as_str())?;
        match c.status {
            ContainerStatus::Running | ContainerStatus::Paused => {
                match self.agents.attach(&c.node, id, stdin).await {
                    Ok(stream) => Ok(AttachSource::Running(stream)),
                    Err(e) => {
                        debug!(container = %id.short(), error = %e, "attach to running container failed");
                        Ok(AttachSource::Gone)
                    }
                }
            }
            _ => Ok(AttachSource::NextStart(
                self.agents.attach_next_start(&c.node, id, stdin).await?,
            )),
        }
    }
}

/// Docker's default detach sequence, ctrl-p ctrl-q.
pub const DEFAULT_DETACH_KEYS: [u8; 2] = [0x10, 0x11];

/// Parse Docker's detach keys (`ctrl-p,ctrl-q`, `a`, `ctrl-@`, ...) into bytes, as moby's
/// `term.ToBytes`; empty means the default.
pub fn parse_detach_keys(keys: &str) -> Result<Vec<u8>, EngineError> {
    if keys.is_empty() {
        return Ok(DEFAULT_DETACH_KEYS.to_vec());
    }
    let invalid = || EngineError::invalid(format!("Invalid detach keys ({keys}) provided"));
    let mut out = Vec::new();
    for key in keys.split(',') {
        let k = key.trim();
        if let Some(c) = k.strip_prefix("ctrl-") {
            let c = c.as_bytes();
            if c.len() != 1 {
                return Err(invalid());
            }
            let b = c[0].to_ascii_lowercase();
            out.push(match b {
                b'a'..=b'z' => b - b'a' + 1,
                b'@' => 0,
                b'[' => 27,
                b'\\' => 28,
                b']' => 29,
                b'^' => 30,
                b'_' => 31,
                _ => return Err(invalid()),
            });
        } else if k.len() == 1 {
            out.push(k.as_bytes()[0]);
        } else {
            return Err(invalid());
        }
    }
    Ok(out)
}
