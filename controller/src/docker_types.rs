//! Docker Engine API request bodies and image config fields the controller reads.
//!
//! Only the fields Wharf acts on are typed; unknown fields are ignored as Docker ignores
//! them. The raw JSON is kept beside for `inspect`.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use wharf_protocol::agent::{DeviceMapping, HostSpec, MountKind, MountPoint, Resources, Ulimit};

/// Deserialize `null` as the type's default (Docker clients send `null` for unset lists).
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `Cmd` and `Entrypoint` are arrays, but old clients may send a single string.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum StrOrVec {
    /// `"sh -c x"`: split by the shell form rules of the caller (taken as one word here).
    One(String),
    /// `["sh", "-c", "x"]`.
    Many(Vec<String>),
}

impl StrOrVec {
    /// As a list of words.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StrOrVec::One(s) if s.is_empty() => vec![],
            StrOrVec::One(s) => vec![s],
            StrOrVec::Many(v) => v,
        }
    }
}

/// `Config` of `POST /containers/create` (the top level of the body).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateConfig {
    /// Image reference as the user typed it.
    pub image: String,
    /// Arguments, or the command when there is no entrypoint.
    pub cmd: Option<StrOrVec>,
    /// Entrypoint override; `[""]`/`""` clears the image's.
    pub entrypoint: Option<StrOrVec>,
    /// `KEY=value` additions.
    pub env: Option<Vec<String>>,
    /// Working directory.
    pub working_dir: String,
    /// `user[:group]`.
    pub user: String,
    /// Host name.
    pub hostname: String,
    /// Allocate a TTY.
    pub tty: bool,
    /// Keep stdin open.
    pub open_stdin: bool,
    /// Stop signal name or number.
    pub stop_signal: Option<String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// Host settings.
    pub host_config: Option<HostConfig>,
    /// Anonymous volumes (`-v /path`): the keys are container paths.
    #[serde(deserialize_with = "nullable")]
    pub volumes: BTreeMap<String, serde_json::Value>,
}

/// `HostConfig` fields Wharf acts on.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `--rm`.
    pub auto_remove: bool,
    /// `-v src:dst[:opts]`.
    #[serde(deserialize_with = "nullable")]
    pub binds: Vec<String>,
    /// `--mount`.
    #[serde(deserialize_with = "nullable")]
    pub mounts: Vec<ApiMount>,
    /// `--tmpfs path[:opts]`: path → comma-separated options.
    #[serde(deserialize_with = "nullable")]
    pub tmpfs: BTreeMap<String, String>,
    /// `--read-only`.
    #[serde(deserialize_with = "nullable")]
    pub readonly_rootfs: bool,
    /// `--cap-add`.
    #[serde(deserialize_with = "nullable")]
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    #[serde(deserialize_with = "nullable")]
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    #[serde(deserialize_with = "nullable")]
    pub privileged: bool,
    /// `--device`.
    #[serde(deserialize_with = "nullable")]
    pub devices: Vec<ApiDevice>,
    /// `--ulimit`.
    #[serde(deserialize_with = "nullable")]
    pub ulimits: Vec<ApiUlimit>,
    /// `--shm-size` in bytes.
    #[serde(deserialize_with = "nullable")]
    pub shm_size: i64,
    /// `--sysctl`.
    #[serde(deserialize_with = "nullable")]
    pub sysctls: BTreeMap<String, String>,
    /// `--pid`: `host` or empty.
    #[serde(deserialize_with = "nullable")]
    pub pid_mode: String,
    /// `--ipc`: `host`, `private`, `shareable` or empty.
    #[serde(deserialize_with = "nullable")]
    pub ipc_mode: String,
    /// `--dns`.
    #[serde(deserialize_with = "nullable")]
    pub dns: Vec<String>,
    /// `--dns-option`.
    #[serde(deserialize_with = "nullable")]
    pub dns_options: Vec<String>,
    /// `--dns-search`.
    #[serde(deserialize_with = "nullable")]
    pub dns_search: Vec<String>,
    /// `--add-host name:ip`.
    #[serde(deserialize_with = "nullable")]
    pub extra_hosts: Vec<String>,
    /// `--security-opt`.
    #[serde(deserialize_with = "nullable")]
    pub security_opt: Vec<String>,
    /// `--memory` in bytes.
    #[serde(deserialize_with = "nullable")]
    pub memory: i64,
    /// `--memory-swap` in bytes (-1: unlimited).
    #[serde(deserialize_with = "nullable")]
    pub memory_swap: i64,
    /// `--cpus` × 10⁹.
    #[serde(deserialize_with = "nullable")]
    pub nano_cpus: i64,
    /// `--cpu-shares`.
    #[serde(deserialize_with = "nullable")]
    pub cpu_shares: i64,
    /// `--cpu-period` in µs.
    #[serde(deserialize_with = "nullable")]
    pub cpu_period: i64,
    /// `--cpu-quota` in µs.
    #[serde(deserialize_with = "nullable")]
    pub cpu_quota: i64,
    /// `--pids-limit`.
    #[serde(deserialize_with = "nullable")]
    pub pids_limit: i64,
}

/// One `--mount` (`HostConfig.Mounts[]`).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiMount {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "Type")]
    pub typ: String,
    /// Host path or volume name.
    #[serde(deserialize_with = "nullable")]
    pub source: String,
    /// Path in the container.
    #[serde(deserialize_with = "nullable")]
    pub target: String,
    /// `readonly`.
    #[serde(deserialize_with = "nullable")]
    pub read_only: bool,
    /// bind options.
    pub bind_options: Option<ApiBindOptions>,
    /// volume options.
    pub volume_options: Option<ApiVolumeOptions>,
    /// tmpfs options.
    pub tmpfs_options: Option<ApiTmpfsOptions>,
}

/// `BindOptions` of a mount.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiBindOptions {
    /// `bind-propagation`.
    #[serde(deserialize_with = "nullable")]
    pub propagation: String,
}

/// `VolumeOptions` of a mount.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiVolumeOptions {
    /// `volume-nocopy`.
    #[serde(deserialize_with = "nullable")]
    pub no_copy: bool,
    /// `volume-label`s for a volume the mount creates.
    #[serde(deserialize_with = "nullable")]
    pub labels: BTreeMap<String, String>,
    /// `volume-driver` and `volume-opt`s.
    pub driver_config: Option<ApiDriverConfig>,
}

/// `DriverConfig` of volume options.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiDriverConfig {
    /// Driver name.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Driver options.
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

/// `TmpfsOptions` of a mount.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiTmpfsOptions {
    /// `tmpfs-size` in bytes.
    #[serde(deserialize_with = "nullable")]
    pub size_bytes: i64,
    /// `tmpfs-mode`, as a number.
    #[serde(deserialize_with = "nullable")]
    pub mode: u32,
}

/// One `--device`.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiDevice {
    /// Host device node.
    #[serde(deserialize_with = "nullable")]
    pub path_on_host: String,
    /// Path in the container.
    #[serde(deserialize_with = "nullable")]
    pub path_in_container: String,
    /// `rwm` subset.
    #[serde(deserialize_with = "nullable")]
    pub cgroup_permissions: String,
}

/// One `--ulimit`.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiUlimit {
    /// Resource name.
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// Soft limit.
    #[serde(deserialize_with = "nullable")]
    pub soft: i64,
    /// Hard limit.
    #[serde(deserialize_with = "nullable")]
    pub hard: i64,
}

/// A volume a container needs that may not exist yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeNeed {
    /// Volume name.
    pub name: String,
    /// Created for this container only (`rm -v` removes it).
    pub anonymous: bool,
    /// Labels for a volume `--mount` creates.
    pub labels: BTreeMap<String, String>,
    /// Driver options for a volume `--mount` creates.
    pub options: BTreeMap<String, String>,
}

/// Whether `name` is a valid local volume name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_volume_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Docker's refusal of a volume name.
pub fn invalid_volume_name(name: &str) -> String {
    format!(
        "create {name}: \"{name}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
    )
}

/// Container paths a mount may not cover (runc's `checkProcMount`, Docker's `/` rule).
fn check_target(kind: &str, target: &str) -> Result<(), String> {
    if !target.starts_with('/') {
        return Err(format!(
            "invalid mount config for type \"{kind}\": invalid mount path: '{target}' mount path must be absolute"
        ));
    }
    let clean = target.trim_end_matches('/');
    if clean.is_empty() {
        return Err(format!(
            "invalid mount config for type \"{kind}\": invalid specification: destination can't be '/'"
        ));
    }
    if clean == "/proc" {
        return Err(format!(
            "invalid mount config for type \"{kind}\": \"/proc\" cannot be mounted because it is not of type proc"
        ));
    }
    if clean.starts_with("/proc/") {
        return Err(format!(
            "invalid mount config for type \"{kind}\": \"{clean}\" cannot be mounted because it is inside /proc"
        ));
    }
    Ok(())
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

/// Parse one `-v` bind (`src:dst[:opts]`); a relative `src` is a volume name.
pub fn parse_bind(spec: &str) -> Result<(MountPoint, Option<VolumeNeed>), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let invalid = || format!("invalid volume specification: '{spec}'");
    let (src, dst, opts) = match parts.as_slice() {
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => return Err(invalid()),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(invalid());
    }
    let mut m = MountPoint {
        target: dst.to_string(),
        ..Default::default()
    };
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => m.read_only = true,
            "rw" | "z" | "Z" => {}
            "nocopy" => m.no_copy = true,
            p if PROPAGATIONS.contains(&p) => m.propagation = p.to_string(),
            _ => return Err(format!("invalid mode: {o}")),
        }
    }
    if src.starts_with('/') {
        check_target("bind", dst)?;
        m.kind = MountKind::Bind;
        m.source = src.to_string();
        return Ok((m, None));
    }
    check_target("volume", dst)?;
    if !valid_volume_name(src) {
        return Err(invalid_volume_name(src));
    }
    m.kind = MountKind::Volume;
    m.source = src.to_string();
    let need = VolumeNeed {
        name: src.to_string(),
        anonymous: false,
        labels: BTreeMap::new(),
        options: BTreeMap::new(),
    };
    Ok((m, Some(need)))
}

/// Parse one `--mount`; an empty volume source makes an anonymous volume named by `anon`.
pub fn parse_api_mount(
    a: &ApiMount,
    anon: &mut dyn FnMut() -> String,
) -> Result<(MountPoint, Option<VolumeNeed>), String> {
    let mut m = MountPoint {
        target: a.target.clone(),
        read_only: a.read_only,
        ..Default::default()
    };
    match a.typ.as_str() {
        "bind" => {
            check_target("bind", &a.target)?;
            if !a.source.starts_with('/') {
                return Err(format!(
                    "invalid mount config for type \"bind\": invalid mount path: '{}' mount path must be absolute",
                    a.source
                ));
            }
            m.kind = MountKind::Bind;
            m.source = a.source.clone();
            if let Some(b) = &a.bind_options {
                if !b.propagation.is_empty() && !PROPAGATIONS.contains(&b.propagation.as_str()) {
                    return Err(format!("invalid propagation mode: {}", b.propagation));
                }
                m.propagation = b.propagation.clone();
            }
            Ok((m, None))
        }
        "volume" => {
            check_target("volume", &a.target)?;
            let (name, anonymous) = if a.source.is_empty() {
                (anon(), true)
            } else if valid_volume_name(&a.source) {
                (a.source.clone(), false)
            } else {
                return Err(invalid_volume_name(&a.source));
            };
            m.kind = MountKind::Volume;
            m.source = name.clone();
            m.anonymous = anonymous;
            let opts = a.volume_options.clone().unwrap_or_default();
            m.no_copy = opts.no_copy;
            let driver = opts.driver_config.unwrap_or_default();
            Ok((
                m,
                Some(VolumeNeed {
                    name,
                    anonymous,
                    labels: opts.labels,
                    options: driver.options,
                }),
            ))
        }
        "tmpfs" => {
            check_target("tmpfs", &a.target)?;
            if !a.source.is_empty() {
                return Err(
                    "invalid mount config for type \"tmpfs\": source must not be specified"
                        .to_string(),
                );
            }
            m.kind = MountKind::Tmpfs;
            if let Some(t) = &a.tmpfs_options {
                if t.size_bytes > 0 {
                    m.options
                        .push(format!("size={}k", (t.size_bytes + 1023) / 1024));
                }
                if t.mode != 0 {
                    m.options.push(format!("mode={:o}", t.mode));
                }
            }
            Ok((m, None))
        }
        other => Err(format!("mount type unknown: \"{other}\"")),
    }
}

/// Resolve a create request's `HostConfig`, its `Config.Volumes` and the image's
/// `VOLUME`s into the agent's [`HostSpec`] and the volumes to create. `anon` names
/// anonymous volumes. Pure; errors are Docker's texts (400).
pub fn resolve_host(
    hc: &HostConfig,
    config_volumes: &[String],
    image_volumes: &[String],
    anon: &mut dyn FnMut() -> String,
) -> Result<(HostSpec, Vec<VolumeNeed>), String> {
    let mut mounts: Vec<MountPoint> = vec![];
    let mut needs: Vec<VolumeNeed> = vec![];
    let mut add = |m: MountPoint, need: Option<VolumeNeed>| -> Result<(), String> {
        if mounts.iter().any(|x| x.target == m.target) {
            return Err(format!("Duplicate mount point: {}", m.target));
        }
        mounts.push(m);
        needs.extend(need);
        Ok(())
    };
    for b in &hc.binds {
        let (m, need) = parse_bind(b)?;
        add(m, need)?;
    }
    for a in &hc.mounts {
        let (m, need) = parse_api_mount(a, anon)?;
        add(m, need)?;
    }
    for (path, opts) in &hc.tmpfs {
        check_target("tmpfs", path)?;
        let m = MountPoint {
            kind: MountKind::Tmpfs,
            target: path.clone(),
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
            ..Default::default()
        };
        add(m, None)?;
    }
    // Anonymous volumes: the request's, then the image's, unless a mount covers the path.
    for path in config_volumes.iter().chain(image_volumes) {
        let path = path.trim_end_matches('/');
        let path = if path.is_empty() { "/" } else { path };
        check_target("volume", path)?;
        if mounts
            .iter()
            .any(|m| m.target.trim_end_matches('/') == path)
        {
            continue;
        }
        let name = anon();
        mounts.push(MountPoint {
            kind: MountKind::Volume,
            source: name.clone(),
            target: path.to_string(),
            anonymous: true,
            ..Default::default()
        });
        needs.push(VolumeNeed {
            name,
            anonymous: true,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
        });
    }
    let devices = hc
        .devices
        .iter()
        .map(|d| DeviceMapping {
            path_on_host: d.path_on_host.clone(),
            path_in_container: d.path_in_container.clone(),
            permissions: d.cgroup_permissions.clone(),
        })
        .collect();
    let ulimits = hc
        .ulimits
        .iter()
        .map(|u| {
            if u.soft < 0 || u.hard < 0 {
                return Err(format!("invalid ulimit: {}={}:{}", u.name, u.soft, u.hard));
            }
            Ok(Ulimit {
                name: u.name.clone(),
                soft: u.soft as u64,
                hard: u.hard as u64,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let pid_host = match hc.pid_mode.as_str() {
        "" | "private" => false,
        "host" => true,
        other => return Err(format!("invalid PID mode: {other}")),
    };
    let ipc_host = match hc.ipc_mode.as_str() {
        "" | "private" | "shareable" | "none" => false,
        "host" => true,
        other => return Err(format!("invalid IPC mode: {other}")),
    };
    if hc.memory != 0 && hc.memory < 6 * 1024 * 1024 {
        return Err("Minimum memory limit allowed is 6MB".to_string());
    }
    if hc.memory_swap > 0 && hc.memory > 0 && hc.memory_swap < hc.memory {
        return Err(
            "Minimum memoryswap limit should be larger than memory limit, see usage".to_string(),
        );
    }
    if hc.memory_swap > 0 && hc.memory == 0 {
        return Err(
            "You should always set the Memory limit when using Memoryswap limit, see usage"
                .to_string(),
        );
    }
    if hc.nano_cpus < 0 || hc.cpu_shares < 0 {
        return Err("invalid CPU limit: must not be negative".to_string());
    }
    if hc.nano_cpus > 0 && (hc.cpu_quota > 0 || hc.cpu_period > 0) {
        return Err("Conflicting options: Nano CPUs and CPU Period cannot both be set".to_string());
    }
    // Docker gives as much swap as memory when only --memory is set.
    let memory_swap = if hc.memory > 0 && hc.memory_swap == 0 {
        hc.memory * 2
    } else {
        hc.memory_swap
    };
    let mut seccomp_unconfined = false;
    let mut no_new_privileges = false;
    for o in &hc.security_opt {
        match o.split_once(['=', ':']) {
            Some(("seccomp", "unconfined")) => seccomp_unconfined = true,
            Some(("no-new-privileges", v)) => {
                no_new_privileges = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("invalid --security-opt: {o:?}")),
                }
            }
            Some(("label", _)) | Some(("apparmor", _)) => {}
            _ if o == "no-new-privileges" => no_new_privileges = true,
            _ => return Err(format!("invalid --security-opt: {o:?}")),
        }
    }
    for e in &hc.extra_hosts {
        let ok = wharf_protocol::runtime::split_extra_host(e)
            .is_some_and(|(_, ip)| ip.parse::<std::net::IpAddr>().is_ok() || ip == "host-gateway");
        if !ok {
            return Err(format!("invalid IP address in add-host: \"{e}\""));
        }
    }
    let host = HostSpec {
        extra_hosts: hc.extra_hosts.clone(),
        dns: hc.dns.clone(),
        dns_search: hc.dns_search.clone(),
        dns_options: hc.dns_options.clone(),
        read_only: hc.readonly_rootfs,
        cap_add: hc.cap_add.clone(),
        cap_drop: hc.cap_drop.clone(),
        privileged: hc.privileged,
        devices,
        ulimits,
        shm_size: hc.shm_size,
        sysctls: hc.sysctls.clone(),
        pid_host,
        ipc_host,
        mounts,
        resources: Resources {
            memory: hc.memory,
            memory_swap,
            nano_cpus: hc.nano_cpus,
            cpu_shares: hc.cpu_shares as u64,
            pids_limit: hc.pids_limit,
            cpu_period: hc.cpu_period.max(0) as u64,
            cpu_quota: hc.cpu_quota,
        },
        seccomp_unconfined,
        no_new_privileges,
    };
    // Capability and ulimit names and sysctls are checked by the agent that will run it
    // (`Agents::check_host`): they are facts of its host's runtime.
    Ok((host, needs))
}

/// The `config` object of an image config (Docker's and OCI's field names agree).
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageRunConfig {
    /// Default environment.
    pub env: Option<Vec<String>>,
    /// Default arguments.
    pub cmd: Option<Vec<String>>,
    /// Default entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Default working directory.
    pub working_dir: String,
    /// Default user.
    pub user: String,
    /// Default stop signal.
    pub stop_signal: String,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
    /// `VOLUME`s: the keys are container paths.
    #[serde(deserialize_with = "nullable")]
    pub volumes: BTreeMap<String, serde_json::Value>,
}

/// The parts of an image config file the controller reads.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(default)]
pub struct ImageConfigFile {
    /// Run defaults.
    pub config: Option<ImageRunConfig>,
    /// RFC 3339 creation time.
    pub created: Option<String>,
    /// CPU architecture.
    pub architecture: String,
    /// Operating system.
    pub os: String,
}

/// Parse a signal given as a name (`SIGTERM`, `TERM`) or number; `None` if unknown.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = s.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" => 31,
        _ => return None,
    };
    Some(n)
}

/// The resolved process of a container: Docker's entrypoint/cmd merge.
///
/// A request `Entrypoint` replaces the image's and then drops the image's `Cmd`; an empty
/// request entrypoint (`--entrypoint ""`) clears it; request `Cmd` replaces the image's.
pub fn merge_process(
    image: &ImageRunConfig,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
) -> (Vec<String>, Vec<String>) {
    let (ep, cmd) = match entrypoint {
        Some(ep) => {
            let ep: Vec<String> = if ep.len() == 1 && ep[0].is_empty() {
                vec![]
            } else {
                ep
            };
            (ep, cmd.unwrap_or_default())
        }
        None => (
            image.entrypoint.clone().unwrap_or_default(),
            cmd.or_else(|| image.cmd.clone()).unwrap_or_default(),
        ),
    };
    (ep, cmd)
}

/// Image env overridden key by key by the request's env (Docker's `ReplaceOrAppendEnvValues`).
pub fn merge_env(image: &[String], request: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split('=').next().unwrap_or("").to_string();
    let mut out: Vec<String> = image.to_vec();
    for kv in request {
        let k = key(kv);
        if !kv.contains('=') {
            // `-e NAME` without a value and no such variable on the client: drop it.
            out.retain(|e| key(e) != k);
            continue;
        }
        match out.iter_mut().find(|e| key(e) == k) {
            Some(slot) => *slot = kv.clone(),
            None => out.push(kv.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn cmd_replaces_image_cmd_and_entrypoint_drops_it() {
        let img = ImageRunConfig {
            entrypoint: Some(v(&["/ep"])),
            cmd: Some(v(&["a"])),
            ..Default::default()
        };
        assert_eq!(merge_process(&img, None, None), (v(&["/ep"]), v(&["a"])));
        assert_eq!(
            merge_process(&img, None, Some(v(&["b"]))),
            (v(&["/ep"]), v(&["b"]))
        );
        assert_eq!(
            merge_process(&img, Some(v(&["/x"])), None),
            (v(&["/x"]), v(&[]))
        );
        assert_eq!(
            merge_process(&img, Some(v(&[""])), Some(v(&["sh"]))),
            (v(&[]), v(&["sh"]))
        );
    }

    #[test]
    fn env_overrides_by_key() {
        let out = merge_env(&v(&["PATH=/bin", "A=1"]), &v(&["A=2", "B=3", "PATH"]));
        assert_eq!(out, v(&["A=2", "B=3"]));
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM"), Some(15));
        assert_eq!(parse_signal("kill"), Some(9));
        assert_eq!(parse_signal("10"), Some(10));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("0"), None);
    }

    #[test]
    fn create_body_ignores_unknown_fields_and_accepts_string_cmd() {
        let c: CreateConfig = serde_json::from_str(
            r#"{"Image":"busybox","Cmd":"true","Whatever":{"x":1},"HostConfig":{"AutoRemove":true,"Binds":null}}"#,
        )
        .unwrap();
        assert_eq!(c.cmd.unwrap().into_vec(), v(&["true"]));
        assert!(c.host_config.unwrap().auto_remove);
    }
}

#[cfg(test)]
#[path = "docker_types_test.rs"]
mod host_config_tests;
