//! Container spec to OCI runtime spec: [`plan`] merges the run spec with what was found in
//! the image (user, home) into a [`RuntimePlan`]; [`build_spec`] turns that into the
//! `config.json` libcontainer reads, with Docker's defaults (namespaces, mounts,
//! capabilities, masked and read-only paths). Both are pure.

use crate::runtime::lookup::DEFAULT_PATH;
use crate::runtime::user::ResolvedUser;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::path::PathBuf;
use wharf_protocol::agent::ContainerRunSpec;

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
}

/// Why a spec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// oci-spec refused a value.
    #[error("build oci spec: {0}")]
    Build(#[from] oci_spec::OciSpecError),
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
    }
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
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
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
    let process = ProcessBuilder::default()
        .terminal(plan.tty)
        .user(user.build()?)
        .args(plan.args.clone())
        .env(plan.env.clone())
        .cwd(plan.cwd.clone())
        .capabilities(capabilities)
        .rlimits(Vec::new())
        .no_new_privileges(false)
        .build()?;

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<Result<Vec<_>, _>>()?;
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&plan.cgroups_path))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![deny_all])
                .build()?,
        )
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>(),
        )
        .build()?;

    Ok(SpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path(plan.rootfs.clone())
                .readonly(false)
                .build()?,
        )
        .hostname(plan.hostname.clone())
        .mounts(default_mounts()?)
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
