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
    /// Mounts, limits and security settings from Docker's `HostConfig`.
    #[serde(default)]
    pub host: HostSpec,
}

/// What kind of filesystem a [`MountPoint`] puts at its target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountKind {
    /// A host directory or file (`-v /host:/ctr`, `--mount type=bind`).
    #[default]
    Bind,
    /// A named or anonymous volume of the `local` driver.
    Volume,
    /// A fresh tmpfs (`--tmpfs`, `--mount type=tmpfs`).
    Tmpfs,
}

impl MountKind {
    /// Docker's name (`Mounts[].Type` of inspect).
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount of a container beside its rootfs, already validated by the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    /// Bind, volume or tmpfs.
    pub kind: MountKind,
    /// Bind: the absolute host path; volume: the volume's name; tmpfs: empty.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
    /// Bind propagation (`rprivate`, `shared`, ...); empty for the default (`rprivate`).
    pub propagation: String,
    /// tmpfs options (`size=…`, `mode=…`, `noexec`, ...).
    pub options: Vec<String>,
    /// A volume without a name of the user's (`-v /path`, image `VOLUME`): `rm -v` removes it.
    pub anonymous: bool,
    /// Volume: do not seed a new volume from the image's content at `target`.
    pub no_copy: bool,
    /// Volume: the `local` driver's options (`type`, `device`, `o`); when set, the
    /// container mounts `device` as `type` with options `o` instead of the volume directory.
    #[serde(default)]
    pub driver_opts: std::collections::BTreeMap<String, String>,
}

/// A host device given to the container (`--device`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// The device node on the host.
    pub path_on_host: String,
    /// Where it appears in the container.
    pub path_in_container: String,
    /// cgroup permissions, some of `rwm`.
    pub permissions: String,
}

/// A resource limit of the process (`--ulimit name=soft:hard`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name (`nofile`, `nproc`, ...).
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// cgroup limits; 0 (or a negative pids limit) means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Memory limit in bytes (`--memory`).
    pub memory: i64,
    /// Memory plus swap in bytes (`--memory-swap`); -1 unlimited swap.
    pub memory_swap: i64,
    /// CPU quota in billionths of a CPU (`--cpus`).
    pub nano_cpus: i64,
    /// Relative CPU weight (`--cpu-shares`).
    pub cpu_shares: u64,
    /// Maximum number of tasks (`--pids-limit`); 0 or negative: unlimited.
    pub pids_limit: i64,
    /// CFS period in µs (`--cpu-period`).
    pub cpu_period: u64,
    /// CFS quota in µs (`--cpu-quota`).
    pub cpu_quota: i64,
}

/// The host-side settings of a container (Docker's `HostConfig`), resolved and validated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    /// `name:ip` lines for `/etc/hosts` (`--add-host`).
    pub extra_hosts: Vec<String>,
    /// Name servers for `/etc/resolv.conf` (`--dns`); empty: the host's.
    pub dns: Vec<String>,
    /// Search domains (`--dns-search`).
    pub dns_search: Vec<String>,
    /// resolver options (`--dns-option`).
    pub dns_options: Vec<String>,
    /// Mount the rootfs read-only (`--read-only`).
    pub read_only: bool,
    /// Capabilities added to Docker's default set (`CAP_` names).
    pub cap_add: Vec<String>,
    /// Capabilities removed from it; `ALL` removes every one.
    pub cap_drop: Vec<String>,
    /// `--privileged`: every capability and device, no masked paths, no seccomp.
    pub privileged: bool,
    /// Host devices (`--device`).
    pub devices: Vec<DeviceMapping>,
    /// Process limits (`--ulimit`).
    pub ulimits: Vec<Ulimit>,
    /// Size of `/dev/shm` in bytes; 0: Docker's 64 MiB.
    pub shm_size: i64,
    /// Namespaced sysctls (`--sysctl`).
    pub sysctls: std::collections::BTreeMap<String, String>,
    /// Share the host's PID namespace (`--pid host`).
    pub pid_host: bool,
    /// Share the host's IPC namespace (`--ipc host`).
    pub ipc_host: bool,
    /// Volumes, binds and tmpfs mounts, in the order they are mounted.
    pub mounts: Vec<MountPoint>,
    /// cgroup limits.
    pub resources: Resources,
    /// Skip Docker's default seccomp profile (`--security-opt seccomp=unconfined`).
    pub seccomp_unconfined: bool,
    /// Set the process' no_new_privs bit (`--security-opt no-new-privileges`).
    pub no_new_privileges: bool,
}

impl HostSpec {
    /// Whether only a host can tell if these settings are valid: capability, ulimit and
    /// sysctl names (`ContainerRequest::Check` asks it before the container is recorded).
    /// Without any, the settings are valid on every host, and a create skips that round
    /// trip; the agent's check looks at nothing else (it returns at once without them).
    pub fn needs_host_check(&self) -> bool {
        !self.cap_add.is_empty()
            || !self.cap_drop.is_empty()
            || !self.ulimits.is_empty()
            || !self.sysctls.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// The agent protocol's messages. Framing, streams and flow control: [`crate::wire`].

pub mod container;
pub mod files;
pub mod host;
pub mod image;
pub mod network;
pub mod volume;

/// What a controller asks of an agent; each request opens one call (see [`crate::wire`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
// A request is built once and moved into its frame, which boxes it (`FrameBody::Request`):
// the size of the small variants costs nothing worth another indirection.
#[allow(clippy::large_enum_variant)]
pub enum AgentRequest {
    /// A container's lifecycle, processes and files.
    Container(container::ContainerRequest),
    /// The host as a whole.
    Host(host::HostRequest),
    /// The host's bridges, container interfaces, rules and port reservations.
    Network(network::NetworkRequest),
    /// The `local` volume driver's directories.
    Volume(volume::VolumeRequest),
    /// Images and layers: load, save, import, commit, diff, export, collection.
    Image(image::ImageRequest),
    /// A container's log and the paths of its root filesystem; a build's context.
    Files(files::FilesRequest),
}

macro_rules! request_area {
    ($($area:ident($t:ty)),*) => {$(
        impl From<$t> for AgentRequest {
            fn from(r: $t) -> AgentRequest {
                AgentRequest::$area(r)
            }
        }
    )*};
}
request_area!(
    Container(container::ContainerRequest),
    Host(host::HostRequest),
    Network(network::NetworkRequest),
    Volume(volume::VolumeRequest),
    Image(image::ImageRequest),
    Files(files::FilesRequest)
);

/// The one answer of a call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentResponse {
    /// Carried out; nothing to report.
    Done,
    /// Not carried out, or carried out only in part (then the failure says so).
    Failed(AgentFailure),
    /// The answer of a [`container::ContainerRequest`] that returns something.
    Container(container::ContainerResponse),
    /// The answer of a [`host::HostRequest`].
    Host(host::HostResponse),
    /// The answer of a [`network::NetworkRequest`] that returns something.
    Network(network::NetworkResponse),
    /// The answer of a [`volume::VolumeRequest`] that returns something.
    Volume(volume::VolumeResponse),
    /// The answer of an [`image::ImageRequest`] that returns something.
    Image(image::ImageResponse),
    /// The answer of a [`files::FilesRequest`] that returns something.
    Files(files::FilesResponse),
}

/// What an agent reports without being asked, on call 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentEvent {
    /// The layers the host holds changed: all of them now (sent when they differ from
    /// the last report on this connection).
    Inventory(host::LayerInventory),
}

/// What kind of failure a call met; the controller maps it to its own errors (and those
/// to Docker's status codes) by kind, never by message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// Anything not covered below.
    Internal,
    /// The container has no running process (shim gone, exited).
    NotRunning,
    /// The object asked for is not on this host.
    NotFound,
    /// The request itself is wrong (a path that is not a directory, a bad tar).
    InvalidInput,
    /// The request conflicts with what the host holds (a port in use, a name taken).
    Conflict,
    /// The agent could not be reached or went away during the call.
    Unavailable,
    /// The request needs a newer agent protocol than the peer speaks.
    Unsupported,
}

/// Why a call failed: its kind, the shim's kind for a process that could not be
/// started, and the text for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFailure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// For a process that could not start: the shim's kind (not found, permission, ...).
    pub shim: Option<crate::shim::ErrorKind>,
    /// What failed and on what, lowercase.
    pub message: String,
}

impl AgentFailure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> AgentFailure {
        AgentFailure {
            kind,
            shim: None,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for AgentFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentFailure {}
