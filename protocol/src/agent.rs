//! What a controller asks of an agent: the resolved, runtime-ready description of a
//! container. The controller merges the Docker request with the image config; the agent
//! turns this into an OCI runtime spec and never looks at Docker's JSON.

use crate::ids::{ContainerId, DiffId, ImageId};
use serde::{Deserialize, Serialize};

/// A container as the agent runs it: everything already resolved by the controller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRunSpec {
    /// The container's ID.
    pub id: ContainerId,
    /// The image the writable layer sits on.
    pub image_id: ImageId,
    /// The image's layers, lowest first.
    pub diff_ids: Vec<DiffId>,
    /// argv of the container's process: entrypoint and cmd merged, never empty.
    pub args: Vec<String>,
    /// `KEY=value` strings: the image's Env overridden by the request's.
    pub env: Vec<String>,
    /// Absolute working directory inside the container (`/` when unset).
    pub working_dir: String,
    /// `user[:group]` as given, empty for root; resolved by the agent from the image.
    pub user: String,
    /// The container's host name.
    pub hostname: String,
    /// Allocate a pseudo-terminal for the process.
    pub tty: bool,
    /// Keep stdin open for attach.
    pub open_stdin: bool,
    /// Signal that `docker stop` sends first (a number, e.g. 15).
    pub stop_signal: i32,
}
