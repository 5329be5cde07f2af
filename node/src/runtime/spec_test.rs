//! Unit tests of the host settings in [`super::build_spec`]: capabilities, mounts,
//! namespaces, limits and validation.

use super::*;
use wharf_protocol::agent::{Resources, Ulimit};
use wharf_protocol::ids::{Digest, ImageId};
use wharf_protocol::ContainerId;

fn run_with(host: HostSpec) -> ContainerRunSpec {
    ContainerRunSpec {
        id: ContainerId::from_bytes([1; 32]),
        image_id: ImageId(Digest([2; 32])),
        diff_ids: vec![],
        args: vec!["true".into()],
        env: vec![],
        working_dir: "/".into(),
        user: String::new(),
        hostname: "h".into(),
        tty: false,
        open_stdin: false,
        stop_signal: 15,
        host,
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

fn spec_of(host: HostSpec) -> Spec {
    build_spec(&plan(&run_with(host), "/m".into(), root(), "/p/c")).unwrap()
}

fn caps(host: HostSpec) -> Capabilities {
    capabilities(&host).unwrap()
}

#[test]
fn capabilities_tweaked_like_docker() {
    assert_eq!(caps(HostSpec::default()).len(), 14);
    let c = caps(HostSpec {
        cap_add: vec!["sys_admin".into(), "CAP_NET_ADMIN".into()],
        cap_drop: vec!["CHOWN".into()],
        ..Default::default()
    });
    assert!(c.contains(&Capability::SysAdmin) && c.contains(&Capability::NetAdmin));
    assert!(!c.contains(&Capability::Chown));
    assert_eq!(c.len(), 15);
    let c = caps(HostSpec {
        cap_drop: vec!["ALL".into()],
        cap_add: vec!["KILL".into()],
        ..Default::default()
    });
    assert_eq!(c, [Capability::Kill].into_iter().collect());
    let c = caps(HostSpec {
        cap_add: vec!["ALL".into()],
        cap_drop: vec!["SYS_ADMIN".into()],
        ..Default::default()
    });
    assert_eq!(c.len(), 40);
    let c = caps(HostSpec {
        privileged: true,
        cap_drop: vec!["ALL".into()],
        ..Default::default()
    });
    assert_eq!(c.len(), 41);
    let err = capabilities(&HostSpec {
        cap_add: vec!["NOPE".into()],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "unknown capability: \"NOPE\"");
}

#[test]
fn only_namespaced_sysctls_pass() {
    let with = |k: &str, ipc_host: bool| {
        validate_host(&HostSpec {
            sysctls: [(k.to_string(), "1".to_string())].into_iter().collect(),
            ipc_host,
            ..Default::default()
        })
    };
    assert!(with("net.ipv4.ip_forward", false).is_ok());
    assert!(with("kernel.shmmax", false).is_ok());
    assert!(with("fs.mqueue.msg_max", false).is_ok());
    assert!(matches!(
        with("kernel.hostname", false),
        Err(SpecError::Sysctl(_))
    ));
    assert!(matches!(
        with("vm.swappiness", false),
        Err(SpecError::Sysctl(_))
    ));
    assert!(matches!(
        with("kernel.shmmax", true),
        Err(SpecError::SysctlHostIpc(_))
    ));
    let bad_ulimit = validate_host(&HostSpec {
        ulimits: vec![Ulimit {
            name: "nofile".into(),
            soft: 10,
            hard: 5,
        }],
        ..Default::default()
    });
    assert!(matches!(bad_ulimit, Err(SpecError::UlimitOrder { .. })));
    let unknown = validate_host(&HostSpec {
        ulimits: vec![Ulimit {
            name: "bogus".into(),
            soft: 1,
            hard: 1,
        }],
        ..Default::default()
    });
    assert!(matches!(unknown, Err(SpecError::UnknownUlimit(_))));
}

/// A create skips the host's check when `needs_host_check` says so: every setting it does
/// not name passes the check whatever its value, and a bad value of each it names fails.
#[test]
fn the_host_check_fails_only_on_what_needs_host_check_names() {
    let others = HostSpec {
        extra_hosts: vec!["not a host line".into()],
        dns: vec!["not an address".into()],
        dns_search: vec!["x".into()],
        dns_options: vec!["bogus".into()],
        read_only: true,
        privileged: true,
        devices: vec![wharf_protocol::agent::DeviceMapping {
            path_on_host: "/dev/does-not-exist".into(),
            path_in_container: "relative".into(),
            permissions: "xyz".into(),
        }],
        shm_size: -1,
        pid_host: true,
        ipc_host: true,
        mounts: vec![MountPoint {
            source: "/does/not/exist".into(),
            target: "relative".into(),
            ..Default::default()
        }],
        resources: Resources {
            nano_cpus: -5,
            memory: -1,
            ..Default::default()
        },
        seccomp_unconfined: true,
        no_new_privileges: true,
        ..Default::default()
    };
    assert!(!others.needs_host_check());
    assert!(validate_host(&others).is_ok());
    let bad = [
        HostSpec {
            cap_add: vec!["NOPE".into()],
            ..others.clone()
        },
        HostSpec {
            cap_drop: vec!["NOPE".into()],
            ..others.clone()
        },
        HostSpec {
            ulimits: vec![Ulimit {
                name: "bogus".into(),
                soft: 1,
                hard: 1,
            }],
            ..others.clone()
        },
        HostSpec {
            sysctls: [("vm.swappiness".to_string(), "1".to_string())].into(),
            ..others.clone()
        },
    ];
    for h in bad {
        // `--privileged` takes every capability whatever the names.
        let h = HostSpec {
            privileged: false,
            ..h
        };
        assert!(h.needs_host_check(), "{h:?}");
        assert!(validate_host(&h).is_err(), "{h:?}");
    }
}

fn dests(spec: &Spec) -> Vec<String> {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.destination().display().to_string())
        .collect()
}

#[test]
fn mounts_in_order_with_network_files_and_user_mounts() {
    let host = HostSpec {
        read_only: true,
        shm_size: 128 * 1024 * 1024,
        mounts: vec![
            MountPoint {
                kind: MountKind::Bind,
                source: "/srv/a".into(),
                target: "/data/sub".into(),
                read_only: true,
                propagation: "rslave".into(),
                ..Default::default()
            },
            MountPoint {
                kind: MountKind::Volume,
                source: "/vol/_data".into(),
                target: "/data".into(),
                ..Default::default()
            },
            MountPoint {
                kind: MountKind::Tmpfs,
                target: "/tmp".into(),
                options: vec!["size=1m".into(), "exec".into()],
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let mut p = plan(&run_with(host), "/m".into(), root(), "/p/c");
    p.etc_files = Some(EtcFiles {
        hosts: "/s/hosts".into(),
        hostname: "/s/hostname".into(),
        resolv_conf: "/s/resolv.conf".into(),
    });
    let spec = build_spec(&p).unwrap();
    assert!(spec.root().as_ref().unwrap().readonly().unwrap_or(false));
    assert_eq!(
        dests(&spec),
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/sys",
            "/sys/fs/cgroup",
            "/dev/mqueue",
            "/dev/shm",
            "/data",
            "/tmp",
            "/etc/resolv.conf",
            "/etc/hostname",
            "/etc/hosts",
            "/data/sub"
        ]
    );
    let m = spec.mounts().as_ref().unwrap();
    let opts = |i: usize| m[i].options().clone().unwrap_or_default();
    assert!(opts(6).contains(&"size=131072k".to_string()));
    // Network files follow --read-only.
    assert!(opts(9).contains(&"ro".to_string()));
    assert_eq!(
        m[7].source().as_deref(),
        Some(std::path::Path::new("/vol/_data"))
    );
    assert_eq!(opts(7), ["rbind", "rprivate"]);
    assert_eq!(m[8].typ().as_deref(), Some("tmpfs"));
    assert_eq!(opts(8), ["nosuid", "nodev", "size=1m"]);
    assert_eq!(opts(12), ["rbind", "rslave", "ro"]);
}

#[test]
fn a_user_mount_replaces_a_default_one() {
    let spec = spec_of(HostSpec {
        mounts: vec![MountPoint {
            kind: MountKind::Tmpfs,
            target: "/dev/shm".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let shm: Vec<&Mount> = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.destination() == std::path::Path::new("/dev/shm"))
        .collect();
    assert_eq!(shm.len(), 1);
    assert!(shm[0]
        .options()
        .as_ref()
        .unwrap()
        .contains(&"noexec".to_string()));
}

#[test]
fn host_namespaces_privileged_and_limits() {
    let spec = spec_of(HostSpec {
        pid_host: true,
        ipc_host: true,
        privileged: true,
        ulimits: vec![Ulimit {
            name: "nofile".into(),
            soft: 100,
            hard: 200,
        }],
        sysctls: [("net.core.somaxconn".to_string(), "512".to_string())]
            .into_iter()
            .collect(),
        resources: Resources {
            memory: 64 << 20,
            memory_swap: 96 << 20,
            nano_cpus: 500_000_000,
            cpu_shares: 512,
            pids_limit: 20,
            ..Default::default()
        },
        ..Default::default()
    });
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
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network
        ]
    );
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    assert_eq!(
        linux.sysctl().as_ref().unwrap()["net.core.somaxconn"],
        "512".to_string()
    );
    let r = linux.resources().as_ref().unwrap();
    assert!(r.devices().as_ref().unwrap()[0].allow());
    let mem = r.memory().as_ref().unwrap();
    assert_eq!((mem.limit(), mem.swap()), (Some(64 << 20), Some(96 << 20)));
    let cpu = r.cpu().as_ref().unwrap();
    assert_eq!(
        (cpu.quota(), cpu.period(), cpu.shares()),
        (Some(50_000), Some(100_000), Some(512))
    );
    assert_eq!(r.pids().as_ref().unwrap().limit(), 20);
    let rl = spec.process().as_ref().unwrap().rlimits().as_ref().unwrap();
    assert_eq!(rl[0].typ(), PosixRlimitType::RlimitNofile);
    assert_eq!((rl[0].soft(), rl[0].hard()), (100, 200));
    let sys = &spec.mounts().as_ref().unwrap()[3];
    assert!(!sys.options().as_ref().unwrap().contains(&"ro".to_string()));
    let shm = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == std::path::Path::new("/dev/shm"))
        .unwrap();
    assert_eq!(shm.typ().as_deref(), Some("bind"));
}

#[test]
fn capabilities_the_shim_lacks_are_left_out() {
    let mut p = plan(
        &run_with(HostSpec {
            privileged: true,
            ..Default::default()
        }),
        "/m".into(),
        root(),
        "/c",
    );
    p.cap_bounding = Some(0x1ff_feff_ffff);
    let spec = build_spec(&p).unwrap();
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    let bounding = caps.bounding().as_ref().unwrap();
    assert_eq!(bounding.len(), 40);
    assert!(!bounding.contains(&Capability::SysResource));
}

#[test]
fn devices_are_created_and_allowed() {
    let mut p = plan(&run_with(HostSpec::default()), "/m".into(), root(), "/c");
    p.devices = vec![HostDevice {
        path: "/dev/myzero".into(),
        block: false,
        major: 1,
        minor: 5,
        file_mode: 0o666,
        permissions: "rw".into(),
    }];
    let spec = build_spec(&p).unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let d = &linux.devices().as_ref().unwrap()[0];
    assert_eq!(
        (d.path().to_str(), d.major(), d.minor()),
        (Some("/dev/myzero"), 1, 5)
    );
    let rules = linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 2);
    assert!(!rules[0].allow());
    assert!(rules[1].allow());
    assert_eq!(rules[1].access().as_deref(), Some("rw"));
}

#[test]
fn seccomp_unless_privileged_or_unconfined() {
    let spec = spec_of(HostSpec::default());
    let sc = spec.linux().as_ref().unwrap().seccomp().as_ref().unwrap();
    assert_eq!(sc.default_errno_ret(), Some(1));
    for host in [
        HostSpec {
            privileged: true,
            ..Default::default()
        },
        HostSpec {
            seccomp_unconfined: true,
            ..Default::default()
        },
    ] {
        assert!(spec_of(host).linux().as_ref().unwrap().seccomp().is_none());
    }
}

#[test]
fn no_new_privileges_only_when_asked_for() {
    let nnp = |host: HostSpec| {
        spec_of(host)
            .process()
            .as_ref()
            .unwrap()
            .no_new_privileges()
    };
    assert_eq!(nnp(HostSpec::default()), None);
    let asked = HostSpec {
        no_new_privileges: true,
        ..Default::default()
    };
    assert_eq!(nnp(asked), Some(true));
}

#[test]
fn local_driver_options_mount_the_device() {
    let opts = |kv: &[(&str, &str)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let spec = spec_of(HostSpec {
        mounts: vec![
            MountPoint {
                kind: MountKind::Volume,
                source: "/vol/a/_data".into(),
                target: "/a".into(),
                driver_opts: opts(&[
                    ("type", "tmpfs"),
                    ("device", "tmpfs"),
                    ("o", "size=1m,uid=5"),
                ]),
                ..Default::default()
            },
            MountPoint {
                kind: MountKind::Volume,
                source: "/vol/b/_data".into(),
                target: "/b".into(),
                read_only: true,
                driver_opts: opts(&[("type", "none"), ("device", "/srv"), ("o", "bind")]),
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let m = spec.mounts().as_ref().unwrap();
    let a = m
        .iter()
        .find(|x| x.destination() == std::path::Path::new("/a"))
        .unwrap();
    assert_eq!(a.typ().as_deref(), Some("tmpfs"));
    assert_eq!(a.options().as_ref().unwrap(), &["size=1m", "uid=5"]);
    let b = m
        .iter()
        .find(|x| x.destination() == std::path::Path::new("/b"))
        .unwrap();
    assert_eq!(b.typ().as_deref(), Some("bind"));
    assert_eq!(b.source().as_deref(), Some(std::path::Path::new("/srv")));
    assert_eq!(b.options().as_ref().unwrap(), &["bind", "ro"]);
}

#[test]
fn init_runs_first_from_a_read_only_bind() {
    let mut p = plan(&run_with(HostSpec::default()), "/m".into(), root(), "/p/c");
    p.args = vec!["sh".into(), "-c".into(), "sleep 1".into()];
    let without = build_spec(&p).unwrap();
    assert!(!dests(&without).contains(&INIT_PATH.to_string()));
    assert_eq!(
        without
            .process()
            .as_ref()
            .unwrap()
            .args()
            .as_deref()
            .unwrap(),
        ["sh", "-c", "sleep 1"]
    );

    p.init = Some("/usr/bin/tini-static".into());
    let spec = build_spec(&p).unwrap();
    assert_eq!(
        spec.process().as_ref().unwrap().args().as_deref().unwrap(),
        ["/sbin/docker-init", "--", "sh", "-c", "sleep 1"]
    );
    let m = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == std::path::Path::new(INIT_PATH))
        .expect("init mount");
    assert_eq!(m.typ().as_deref(), Some("bind"));
    assert_eq!(
        m.source().as_deref(),
        Some(std::path::Path::new("/usr/bin/tini-static"))
    );
    assert_eq!(m.options().as_deref().unwrap(), ["bind", "ro"]);
}
