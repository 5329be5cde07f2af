//! Container spec to OCI runtime spec: [`plan`] merges the run spec with what was found in
//! the image (user, home) into a [`RuntimePlan`]; [`build_spec`] turns that into the
//! `config.json` libcontainer reads, with Docker's defaults (namespaces, mounts,
//! capabilities, masked and read-only paths). Both are pure.

use crate::runtime::lookup::DEFAULT_PATH;
use crate::runtime::user::ResolvedUser;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder, UserBuilder,
};
use std::path::PathBuf;
use wharf_protocol::agent::{ContainerRunSpec, HostSpec, MountKind, MountPoint};

/// The OCI runtime spec version written into `config.json`.
pub const OCI_VERSION: &str = "1.2.0";

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths Docker hides from containers (moby `oci/defaults.go`).
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in containers (moby `oci/defaults.go`).
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything [`build_spec`] needs, already resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimePlan {
    /// The merged overlay directory, the container's `/`.
    pub rootfs: PathBuf,
    /// argv; `args[0]` is looked up in `PATH` by the runtime.
    pub args: Vec<String>,
    /// The process' complete environment.
    pub env: Vec<String>,
    /// Absolute working directory inside the container.
    pub cwd: String,
    /// Who the process runs as.
    pub user: ResolvedUser,
    /// The UTS host name.
    pub hostname: String,
    /// Give the process a terminal.
    pub tty: bool,
    /// cgroup path (cgroupfs driver).
    pub cgroups_path: String,
    /// Docker's `HostConfig`, resolved: volume sources are host paths by now.
    pub host: HostSpec,
    /// Host files to bind at `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`; `None`
    /// keeps the image's.
    pub etc_files: Option<EtcFiles>,
    /// Host devices for `--device`, as the shim found them.
    pub devices: Vec<HostDevice>,
    /// The shim's bounding set (bit N = capability N); capabilities outside it cannot be
    /// granted and are left out, as runc does. `None`: not known, grant as asked.
    pub cap_bounding: Option<u64>,
    /// The network namespace to run in.
    pub netns: crate::runtime::config::NetnsMode,
    /// `--init`: the host's init binary, bound read-only at [`INIT_PATH`] and run as PID 1
    /// with the container's argv after `--`.
    pub init: Option<PathBuf>,
}

/// Where `--init` puts the init binary in the container (Docker's place for docker-init).
pub const INIT_PATH: &str = "/sbin/docker-init";

/// The process' argv: `args`, behind the init and `--` for `--init` (as Docker).
pub fn process_args(plan: &RuntimePlan) -> Vec<String> {
    match plan.init {
        Some(_) => [INIT_PATH.to_string(), "--".to_string()]
            .into_iter()
            .chain(plan.args.iter().cloned())
            .collect(),
        None => plan.args.clone(),
    }
}

/// The per-container network files in the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcFiles {
    /// Bound at `/etc/hosts`.
    pub hosts: PathBuf,
    /// Bound at `/etc/hostname`.
    pub hostname: PathBuf,
    /// Bound at `/etc/resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// A host device node as `stat` found it, to recreate inside the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostDevice {
    /// Path inside the container.
    pub path: String,
    /// Block (`true`) or character device.
    pub block: bool,
    /// Major number.
    pub major: i64,
    /// Minor number.
    pub minor: i64,
    /// Permission bits of the node.
    pub file_mode: u32,
    /// cgroup access, some of `rwm`.
    pub permissions: String,
}

/// Every capability of Linux 6.x (`cap_last_cap` 40), for `--privileged` and `--cap-add ALL`.
pub const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// sysctls of the IPC namespace that a container may set (moby `opts.ValidateSysctl`);
/// `fs.mqueue.*` and `net.*` are allowed as prefixes.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Docker's default size of `/dev/shm`: 64 MiB.
pub const DEFAULT_SHM_SIZE: i64 = 64 * 1024 * 1024;

/// CFS period Docker uses for `--cpus`, in µs.
const CPU_PERIOD: u64 = 100_000;

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// oci-spec refused a value.
    #[error("build oci spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
    /// `--cap-add`/`--cap-drop` named no capability.
    #[error("unknown capability: \"{0}\"")]
    UnknownCapability(String),
    /// `--ulimit` named no resource.
    #[error("invalid ulimit type: {0}")]
    UnknownUlimit(String),
    /// `--ulimit` with a soft limit above the hard one.
    #[error("ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")]
    UlimitOrder {
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// `--sysctl` of a setting that is not namespaced.
    #[error("sysctl '{0}' is not allowed")]
    Sysctl(String),
    /// `--sysctl` of an IPC setting while sharing the host's IPC namespace.
    #[error("sysctl '{0}' is not allowed in host ipc mode")]
    SysctlHostIpc(String),
    /// A network namespace named by container, which the agent resolves to a path
    /// before the shim sees it.
    #[error("network namespace of container {0} not resolved to a path")]
    UnresolvedNetns(String),
}

/// Replace the values of keys that `overrides` sets and append the others, as moby's
/// `ReplaceOrAppendEnvValues`.
fn replace_or_append(mut env: Vec<String>, overrides: &[String]) -> Vec<String> {
    for o in overrides {
        let key = o.split_once('=').map(|(k, _)| k).unwrap_or(o);
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map(|(k, _)| k).unwrap_or(e) == key)
        {
            Some(slot) => *slot = o.clone(),
            None => env.push(o.clone()),
        }
    }
    env
}

/// The process' environment as Docker builds it: `PATH`, `HOSTNAME`, `TERM` for a TTY,
/// overridden by the container's own `env`, then `HOME` from the user if still unset.
pub fn container_env(run: &ContainerRunSpec, home: &str) -> Vec<String> {
    let mut base = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={}", run.hostname),
    ];
    if run.tty {
        base.push("TERM=xterm".to_string());
    }
    let mut env = replace_or_append(base, &run.env);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={home}"));
    }
    env
}

/// Merge the run spec with the resolved user into a [`RuntimePlan`].
pub fn plan(
    run: &ContainerRunSpec,
    rootfs: PathBuf,
    user: ResolvedUser,
    cgroups_path: &str,
) -> RuntimePlan {
    let cwd = if run.working_dir.starts_with('/') {
        run.working_dir.clone()
    } else {
        format!("/{}", run.working_dir)
    };
    RuntimePlan {
        rootfs,
        args: run.args.clone(),
        env: container_env(run, &user.home),
        cwd,
        user,
        hostname: run.hostname.clone(),
        tty: run.tty,
        cgroups_path: cgroups_path.to_string(),
        host: run.host.clone(),
        etc_files: None,
        devices: Vec::new(),
        cap_bounding: None,
        netns: Default::default(),
        init: None,
    }
}

fn parse_capability(name: &str) -> Result<Capability, SpecError> {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .map_err(|_| SpecError::UnknownCapability(name.to_string()))
}

/// The process' capabilities: Docker's defaults tweaked by `--cap-add`/`--cap-drop`
/// (moby `caps.TweakCapabilities`: `ALL` in add grants all, in drop starts from none),
/// or every capability when privileged.
pub fn capabilities(host: &HostSpec) -> Result<Capabilities, SpecError> {
    if host.privileged {
        return Ok(ALL_CAPABILITIES.into_iter().collect());
    }
    let is_all = |c: &String| c.eq_ignore_ascii_case("ALL") || c.eq_ignore_ascii_case("CAP_ALL");
    let mut caps: Capabilities = if host.cap_add.iter().any(is_all) {
        ALL_CAPABILITIES.into_iter().collect()
    } else if host.cap_drop.iter().any(is_all) {
        Capabilities::new()
    } else {
        DEFAULT_CAPABILITIES.into_iter().collect()
    };
    for c in host.cap_drop.iter().filter(|c| !is_all(c)) {
        caps.remove(&parse_capability(c)?);
    }
    for c in host.cap_add.iter().filter(|c| !is_all(c)) {
        caps.insert(parse_capability(c)?);
    }
    if host.cap_add.iter().any(is_all) {
        for c in host.cap_drop.iter().filter(|c| !is_all(c)) {
            caps.remove(&parse_capability(c)?);
        }
    }
    Ok(caps)
}

fn rlimit_type(name: &str) -> Result<PosixRlimitType, SpecError> {
    serde_json::from_value(serde_json::Value::String(format!(
        "RLIMIT_{}",
        name.to_ascii_uppercase()
    )))
    .map_err(|_| SpecError::UnknownUlimit(name.to_string()))
}

/// Check what `build_spec` would refuse in a container's host settings, so that create
/// (not start) reports it: capabilities, ulimits, sysctls.
pub fn validate_host(host: &HostSpec) -> Result<(), SpecError> {
    // What is checked below is what `needs_host_check` names: a create of settings
    // without any does not ask (a new check must be named there too, or it is skipped).
    if !host.needs_host_check() {
        return Ok(());
    }
    capabilities(host)?;
    for u in &host.ulimits {
        rlimit_type(&u.name)?;
        if u.soft > u.hard {
            return Err(SpecError::UlimitOrder {
                soft: u.soft,
                hard: u.hard,
            });
        }
    }
    for key in host.sysctls.keys() {
        let ipc = IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.");
        if ipc && host.ipc_host {
            return Err(SpecError::SysctlHostIpc(key.clone()));
        }
        if !ipc && !key.starts_with("net.") {
            return Err(SpecError::Sysctl(key.clone()));
        }
    }
    Ok(())
}

/// The OCI mount for one user mount (`source` of a volume is its host directory by now).
fn user_mount(m: &MountPoint) -> Result<Mount, SpecError> {
    match m.kind {
        MountKind::Tmpfs => {
            let mut options = vec!["nosuid".to_string(), "nodev".to_string()];
            if !m.options.iter().any(|o| o == "exec") {
                options.push("noexec".to_string());
            }
            options.extend(m.options.iter().filter(|o| *o != "exec").cloned());
            if m.read_only {
                options.push("ro".to_string());
            }
            Ok(MountBuilder::default()
                .destination(&m.target)
                .typ("tmpfs")
                .source("tmpfs")
                .options(options)
                .build()?)
        }
        MountKind::Volume if !m.driver_opts.is_empty() => {
            let typ = m
                .driver_opts
                .get("type")
                .map(String::as_str)
                .unwrap_or("none");
            let device = m.driver_opts.get("device").cloned().unwrap_or_default();
            let mut options: Vec<String> = m
                .driver_opts
                .get("o")
                .map(|o| {
                    o.split(',')
                        .filter(|x| !x.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if m.read_only {
                options.push("ro".to_string());
            }
            // `type=none,o=bind,device=/path`: a bind mount of the device path.
            let is_bind = options.iter().any(|o| o == "bind" || o == "rbind");
            let typ = if typ == "none" && is_bind {
                "bind"
            } else {
                typ
            };
            Ok(MountBuilder::default()
                .destination(&m.target)
                .typ(typ)
                .source(device)
                .options(options)
                .build()?)
        }
        MountKind::Bind | MountKind::Volume => {
            let propagation = if m.propagation.is_empty() {
                "rprivate".to_string()
            } else {
                m.propagation.clone()
            };
            let mut options = vec!["rbind".to_string(), propagation];
            if m.read_only {
                options.push("ro".to_string());
            }
            Ok(MountBuilder::default()
                .destination(&m.target)
                .typ("bind")
                .source(&m.source)
                .options(options)
                .build()?)
        }
    }
}

fn etc_mounts(files: &EtcFiles, read_only: bool) -> Result<Vec<Mount>, SpecError> {
    let mut options = vec!["rbind", "rprivate"];
    if read_only {
        options.push("ro");
    }
    let bind = |dest: &str, src: &PathBuf| -> Result<Mount, SpecError> {
        Ok(MountBuilder::default()
            .destination(dest)
            .typ("bind")
            .source(src)
            .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
            .build()?)
    };
    Ok(vec![
        bind("/etc/resolv.conf", &files.resolv_conf)?,
        bind("/etc/hostname", &files.hostname)?,
        bind("/etc/hosts", &files.hosts)?,
    ])
}

/// Every mount of the container in order: Docker's defaults (minus those a user mount
/// replaces), the network files, then the user's mounts, parents before children.
fn all_mounts(plan: &RuntimePlan) -> Result<Vec<Mount>, SpecError> {
    let host = &plan.host;
    let shm_size = if host.shm_size > 0 {
        host.shm_size
    } else {
        DEFAULT_SHM_SIZE
    };
    let user: Vec<&MountPoint> = host.mounts.iter().collect();
    let taken = |dest: &str| user.iter().any(|m| m.target.trim_end_matches('/') == dest);
    let mut mounts = vec![];
    for mut m in default_mounts()? {
        let dest = m.destination().to_string_lossy().into_owned();
        if taken(&dest) {
            continue;
        }
        if dest == "/dev/shm" {
            if host.ipc_host {
                m = MountBuilder::default()
                    .destination("/dev/shm")
                    .typ("bind")
                    .source("/dev/shm")
                    .options(vec!["rbind".to_string(), "rprivate".to_string()])
                    .build()?;
            } else {
                m.set_options(Some(vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "mode=1777".into(),
                    format!("size={}k", shm_size / 1024),
                ]));
            }
        }
        if host.privileged && (dest == "/sys" || dest == "/sys/fs/cgroup") {
            let opts = m
                .options()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .filter(|o| o != "ro")
                .collect::<Vec<_>>();
            m.set_options(Some(opts));
        }
        mounts.push(m);
    }
    // The network files and the user's mounts, parents before children (moby's
    // `sortMounts`), so that a volume at /etc does not hide /etc/hosts.
    let mut rest = vec![];
    if let Some(files) = &plan.etc_files {
        for m in etc_mounts(files, host.read_only)? {
            if !taken(&m.destination().to_string_lossy()) {
                rest.push(m);
            }
        }
    }
    if let Some(init) = &plan.init {
        rest.push(
            MountBuilder::default()
                .destination(INIT_PATH)
                .typ("bind")
                .source(init)
                .options(vec!["bind".to_string(), "ro".to_string()])
                .build()?,
        );
    }
    for m in user {
        rest.push(user_mount(m)?);
    }
    rest.sort_by_key(|m| {
        m.destination()
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .count()
    });
    mounts.extend(rest);
    Ok(mounts)
}

/// linux.resources: the device rules and the cgroup limits.
fn resources(plan: &RuntimePlan) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    let host = &plan.host;
    let mut devices = vec![LinuxDeviceCgroupBuilder::default()
        .allow(host.privileged)
        .access("rwm")
        .build()?];
    // Privileged containers are allowed every device already.
    for d in plan.devices.iter().filter(|_| !host.privileged) {
        devices.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(if d.block {
                    LinuxDeviceType::B
                } else {
                    LinuxDeviceType::C
                })
                .major(d.major)
                .minor(d.minor)
                .access(d.permissions.clone())
                .build()?,
        );
    }
    let mut b = LinuxResourcesBuilder::default().devices(devices);
    let r = &host.resources;
    if r.memory > 0 || r.memory_swap != 0 {
        let mut m = LinuxMemoryBuilder::default();
        if r.memory > 0 {
            m = m.limit(r.memory);
        }
        if r.memory_swap != 0 {
            m = m.swap(r.memory_swap);
        }
        b = b.memory(m.build()?);
    }
    if r.nano_cpus > 0 || r.cpu_shares > 0 || r.cpu_quota != 0 || r.cpu_period > 0 {
        let mut c = LinuxCpuBuilder::default();
        if r.cpu_shares > 0 {
            c = c.shares(r.cpu_shares);
        }
        if r.nano_cpus > 0 {
            c = c
                .period(CPU_PERIOD)
                .quota(r.nano_cpus * CPU_PERIOD as i64 / 1_000_000_000);
        } else {
            if r.cpu_period > 0 {
                c = c.period(r.cpu_period);
            }
            if r.cpu_quota != 0 {
                c = c.quota(r.cpu_quota);
            }
        }
        b = b.cpu(c.build()?);
    }
    if r.pids_limit > 0 {
        b = b.pids(LinuxPidsBuilder::default().limit(r.pids_limit).build()?);
    }
    Ok(b.build()?)
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

/// Docker's default mounts (moby `oci/defaults.go`).
fn default_mounts() -> Result<Vec<Mount>, SpecError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
    ])
}

/// Build the OCI runtime spec for `plan` with Docker's defaults: new pid, mount, uts, ipc
/// and network (loopback only) namespaces; Docker's mounts, capabilities, masked and
/// read-only paths; all devices denied except the runtime's defaults.
pub fn build_spec(plan: &RuntimePlan) -> Result<Spec, SpecError> {
    let host = &plan.host;
    validate_host(host)?;
    let mut caps = capabilities(host)?;
    if let Some(mask) = plan.cap_bounding {
        caps.retain(|c| {
            ALL_CAPABILITIES
                .iter()
                .position(|x| x == c)
                .is_some_and(|n| mask & (1u64 << n) != 0)
        });
    }
    let seccomp = if host.privileged || host.seccomp_unconfined {
        None
    } else {
        Some(crate::runtime::seccomp::default_profile(
            &caps,
            crate::runtime::seccomp::go_arch(),
        )?)
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?;
    let mut user = UserBuilder::default().uid(plan.user.uid).gid(plan.user.gid);
    if !plan.user.additional_gids.is_empty() {
        user = user.additional_gids(plan.user.additional_gids.clone());
    }
    let rlimits = host
        .ulimits
        .iter()
        .map(|u| {
            Ok(PosixRlimitBuilder::default()
                .typ(rlimit_type(&u.name)?)
                .soft(u.soft)
                .hard(u.hard)
                .build()?)
        })
        .collect::<Result<Vec<_>, SpecError>>()?;
    let process = ProcessBuilder::default()
        .terminal(plan.tty)
        .user(user.build()?)
        .args(process_args(plan))
        .env(plan.env.clone())
        .cwd(plan.cwd.clone())
        .capabilities(capabilities)
        .rlimits(rlimits);
    // Left unset unless asked for: libcontainer loads seccomp before dropping
    // capabilities only when the field is absent. The builder fills unset fields from
    // oci-spec's `Process::default()`, which sets it, so it is set explicitly here.
    let mut process = process.build()?;
    process.set_no_new_privileges(host.no_new_privileges.then_some(true));

    let mut kinds = vec![];
    if !host.pid_host {
        kinds.push(LinuxNamespaceType::Pid);
    }
    kinds.push(LinuxNamespaceType::Mount);
    kinds.push(LinuxNamespaceType::Uts);
    if !host.ipc_host {
        kinds.push(LinuxNamespaceType::Ipc);
    }
    let mut namespaces = kinds
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
    match &plan.netns {
        crate::runtime::config::NetnsMode::Own => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()?,
        ),
        crate::runtime::config::NetnsMode::Host => {}
        crate::runtime::config::NetnsMode::Join(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()?,
        ),
        crate::runtime::config::NetnsMode::JoinContainer(id) => {
            return Err(SpecError::UnresolvedNetns(id.to_string()))
        }
    }
    let devices = plan
        .devices
        .iter()
        .map(|d| {
            LinuxDeviceBuilder::default()
                .path(&d.path)
                .typ(if d.block {
                    LinuxDeviceType::B
                } else {
                    LinuxDeviceType::C
                })
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.file_mode)
                .uid(0u32)
                .gid(0u32)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (masked, readonly): (Vec<String>, Vec<String>) = if host.privileged {
        (vec![], vec![])
    } else {
        (
            MASKED_PATHS.iter().map(|p| p.to_string()).collect(),
            READONLY_PATHS.iter().map(|p| p.to_string()).collect(),
        )
    };
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&plan.cgroups_path))
        .resources(resources(plan)?)
        .masked_paths(masked)
        .readonly_paths(readonly)
        .devices(devices);
    if !host.sysctls.is_empty() {
        linux = linux.sysctl(
            host.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    }
    if let Some(profile) = seccomp {
        linux = linux.seccomp(profile);
    }
    let linux = linux.build()?;

    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(plan.rootfs.clone())
                .readonly(host.read_only)
                .build()?,
        )
        .hostname(plan.hostname.clone())
        .mounts(all_mounts(plan)?)
        .process(process)
        .linux(linux)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::ids::{Digest, ImageId};
    use wharf_protocol::ContainerId;

    fn run() -> ContainerRunSpec {
        ContainerRunSpec {
            id: ContainerId::from_bytes([1; 32]),
            image_id: ImageId(Digest([2; 32])),
            diff_ids: vec![],
            args: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["PATH=/bin".into(), "FOO=bar".into()],
            working_dir: "/work".into(),
            user: String::new(),
            hostname: "abc".into(),
            tty: false,
            open_stdin: false,
            stop_signal: 15,
            host: Default::default(),
        }
    }

    fn root() -> ResolvedUser {
        ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: "/root".into(),
        }
    }

    #[test]
    fn env_is_merged_as_docker_does() {
        let r = run();
        assert_eq!(
            container_env(&r, "/root"),
            ["PATH=/bin", "HOSTNAME=abc", "FOO=bar", "HOME=/root"]
        );
        let mut r = run();
        r.tty = true;
        r.env = vec!["HOME=/h".into()];
        assert_eq!(
            container_env(&r, "/root"),
            [
                format!("PATH={DEFAULT_PATH}").as_str(),
                "HOSTNAME=abc",
                "TERM=xterm",
                "HOME=/h"
            ]
        );
    }

    #[test]
    fn spec_has_docker_defaults() {
        let user = ResolvedUser {
            uid: 33,
            gid: 44,
            additional_gids: vec![5],
            home: "/".into(),
        };
        let p = plan(&run(), PathBuf::from("/merged"), user, "/wharf-x/id");
        let spec = build_spec(&p).unwrap();
        assert!(spec.version().starts_with("1."));
        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            &PathBuf::from("/merged")
        );
        assert_eq!(spec.hostname().as_deref(), Some("abc"));

        let proc = spec.process().as_ref().unwrap();
        assert_eq!(proc.args().as_ref().unwrap(), &run().args);
        assert_eq!(proc.cwd(), &PathBuf::from("/work"));
        assert_eq!(proc.terminal(), Some(false));
        assert_eq!((proc.user().uid(), proc.user().gid()), (33, 44));
        assert_eq!(proc.user().additional_gids().as_deref(), Some(&[5u32][..]));
        let caps = proc.capabilities().as_ref().unwrap();
        let bounding = caps.bounding().as_ref().unwrap();
        assert_eq!(bounding.len(), 14);
        assert!(bounding.contains(&Capability::NetBindService));
        assert!(!bounding.contains(&Capability::SysAdmin));
        assert!(caps.inheritable().as_ref().unwrap().is_empty());

        let linux = spec.linux().as_ref().unwrap();
        let ns: Vec<LinuxNamespaceType> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert_eq!(
            ns,
            [
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Network
            ]
        );
        assert!(linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .all(|n| n.path().is_none()));
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(std::path::Path::new("/wharf-x/id"))
        );
        assert!(linux
            .masked_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/kcore".to_string()));
        assert!(linux
            .readonly_paths()
            .as_ref()
            .unwrap()
            .contains(&"/proc/sys".to_string()));

        let mounts = spec.mounts().as_ref().unwrap();
        let dests: Vec<&str> = mounts
            .iter()
            .map(|m| m.destination().to_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        let sys = &mounts[3];
        assert!(sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    }

    #[test]
    fn tty_and_relative_workdir() {
        let mut r = run();
        r.tty = true;
        r.working_dir = "app".into();
        let spec = build_spec(&plan(&r, "/m".into(), root(), "/c")).unwrap();
        let proc = spec.process().as_ref().unwrap();
        assert_eq!(proc.terminal(), Some(true));
        assert_eq!(proc.cwd(), &PathBuf::from("/app"));
        assert!(proc
            .env()
            .as_ref()
            .unwrap()
            .contains(&"TERM=xterm".to_string()));
        // The spec survives a round trip through config.json.
        let json = serde_json::to_string(&spec).unwrap();
        let back: Spec = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }
}

#[cfg(test)]
#[path = "spec_test.rs"]
mod spec_test;
