//! Docker's default seccomp profile (moby `profiles/seccomp/default.json`), as a data
//! table, and [`default_profile`], which turns it into the OCI `linux.seccomp` for a
//! container's capabilities and this host's architecture. Pure.
//!
//! Everything not allowed fails with `EPERM`; `clone3` fails with `ENOSYS` without
//! `CAP_SYS_ADMIN` so that libc falls back to `clone`, whose namespace flags are refused.
//! libcontainer skips names the running kernel does not know.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder,
};

/// `EPERM`: what a refused system call returns.
const EPERM: u32 = 1;
/// `ENOSYS`: what `clone3` returns without `CAP_SYS_ADMIN`.
const ENOSYS: u32 = 38;
/// The namespace flags of `clone` (`CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC |
/// CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP`).
const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// System calls every container may make.
pub const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];

/// What a rule does to the calls it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Allow,
    Errno(u32),
}

/// A comparison of one argument: (index, value, operator, second value).
type ArgCmp = (usize, u64, LinuxSeccompOperator, Option<u64>);

/// One conditional rule of the profile.
struct Rule {
    names: &'static [&'static str],
    action: Action,
    args: &'static [ArgCmp],
    /// Only on these Go architecture names (empty: all).
    arches: &'static [&'static str],
    /// Not on these.
    not_arches: &'static [&'static str],
    /// Only when the container has one of these capabilities (empty: always).
    caps: &'static [Capability],
    /// Not when it has one of these.
    not_caps: &'static [Capability],
}

const fn rule(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        action: Action::Allow,
        args: &[],
        arches: &[],
        not_arches: &[],
        caps: &[],
        not_caps: &[],
    }
}

const fn personality(args: &'static [ArgCmp]) -> Rule {
    Rule {
        args,
        ..rule(&["personality"])
    }
}

const EQ: LinuxSeccompOperator = LinuxSeccompOperator::ScmpCmpEq;

/// The conditional part of the profile, in moby's order.
const RULES: &[Rule] = &[
    rule(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    // socket(AF_VSOCK) is refused.
    Rule {
        args: &[(0, 40, LinuxSeccompOperator::ScmpCmpNe, None)],
        ..rule(&["socket"])
    },
    // personality: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, query.
    personality(&[(0, 0, EQ, None)]),
    personality(&[(0, 8, EQ, None)]),
    personality(&[(0, 0x20000, EQ, None)]),
    personality(&[(0, 0x20008, EQ, None)]),
    personality(&[(0, 0xffff_ffff, EQ, None)]),
    Rule {
        arches: &["ppc64le"],
        ..rule(&["sync_file_range2", "swapcontext"])
    },
    Rule {
        arches: &["arm", "arm64"],
        ..rule(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ])
    },
    Rule {
        arches: &["amd64", "x32"],
        ..rule(&["arch_prctl"])
    },
    Rule {
        arches: &["amd64", "x32", "x86"],
        ..rule(&["modify_ldt"])
    },
    Rule {
        arches: &["s390", "s390x"],
        ..rule(&[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ])
    },
    Rule {
        arches: &["riscv64"],
        ..rule(&["riscv_flush_icache"])
    },
    Rule {
        caps: &[Capability::DacReadSearch],
        ..rule(&["open_by_handle_at"])
    },
    Rule {
        caps: &[Capability::SysAdmin],
        ..rule(&[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ])
    },
    // Without CAP_SYS_ADMIN, clone without namespace flags only.
    Rule {
        args: &[(
            0,
            CLONE_NAMESPACE_FLAGS,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            Some(0),
        )],
        not_caps: &[Capability::SysAdmin],
        not_arches: &["s390", "s390x"],
        ..rule(&["clone"])
    },
    Rule {
        args: &[(
            1,
            CLONE_NAMESPACE_FLAGS,
            LinuxSeccompOperator::ScmpCmpMaskedEq,
            Some(0),
        )],
        arches: &["s390", "s390x"],
        not_caps: &[Capability::SysAdmin],
        ..rule(&["clone"])
    },
    Rule {
        action: Action::Errno(ENOSYS),
        not_caps: &[Capability::SysAdmin],
        ..rule(&["clone3"])
    },
    Rule {
        caps: &[Capability::SysBoot],
        ..rule(&["reboot"])
    },
    Rule {
        caps: &[Capability::SysChroot],
        ..rule(&["chroot"])
    },
    Rule {
        caps: &[Capability::SysModule],
        ..rule(&["delete_module", "init_module", "finit_module"])
    },
    Rule {
        caps: &[Capability::SysPacct],
        ..rule(&["acct"])
    },
    Rule {
        caps: &[Capability::SysPtrace],
        ..rule(&[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ])
    },
    Rule {
        caps: &[Capability::SysRawio],
        ..rule(&["iopl", "ioperm"])
    },
    Rule {
        caps: &[Capability::SysTime],
        ..rule(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
    },
    Rule {
        caps: &[Capability::SysTtyConfig],
        ..rule(&["vhangup"])
    },
    Rule {
        caps: &[Capability::SysNice],
        ..rule(&[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ])
    },
    Rule {
        caps: &[Capability::Syslog],
        ..rule(&["syslog"])
    },
    Rule {
        caps: &[Capability::Bpf],
        ..rule(&["bpf"])
    },
    Rule {
        caps: &[Capability::Perfmon],
        ..rule(&["perf_event_open"])
    },
];

/// Go's name of the architecture Wharf was built for (moby's rule conditions use it).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "x86",
        "aarch64" => "arm64",
        "arm" => "arm",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The seccomp architectures of a Go architecture: the native one and its compat ABIs.
fn architectures(arch: &str) -> Vec<Arch> {
    match arch {
        "amd64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => vec![Arch::ScmpArchAarch64, Arch::ScmpArchArm],
        "s390x" => vec![Arch::ScmpArchS390x, Arch::ScmpArchS390],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => vec![],
    }
}

/// Docker's default profile for a container with capabilities `caps` on `arch` (a Go
/// architecture name, see [`go_arch`]).
pub fn default_profile(
    caps: &Capabilities,
    arch: &str,
) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let mut syscalls = vec![LinuxSyscallBuilder::default()
        .names(ALLOWED.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .action(LinuxSeccompAction::ScmpActAllow)
        .build()?];
    for r in RULES {
        let applies = (r.arches.is_empty() || r.arches.contains(&arch))
            && !r.not_arches.contains(&arch)
            && (r.caps.is_empty() || r.caps.iter().any(|c| caps.contains(c)))
            && !r.not_caps.iter().any(|c| caps.contains(c));
        if !applies {
            continue;
        }
        let mut b = LinuxSyscallBuilder::default()
            .names(r.names.iter().map(|n| n.to_string()).collect::<Vec<_>>());
        b = match r.action {
            Action::Allow => b.action(LinuxSeccompAction::ScmpActAllow),
            Action::Errno(e) => b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(e),
        };
        if !r.args.is_empty() {
            let args = r
                .args
                .iter()
                .map(|&(index, value, op, two)| {
                    let mut a = LinuxSeccompArgBuilder::default()
                        .index(index)
                        .value(value)
                        .op(op);
                    if let Some(v) = two {
                        a = a.value_two(v);
                    }
                    a.build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            b = b.args(args);
        }
        syscalls.push(b.build()?);
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(architectures(arch))
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::DEFAULT_CAPABILITIES;

    fn names_allowed(p: &LinuxSeccomp) -> Vec<String> {
        p.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| {
                s.action() == LinuxSeccompAction::ScmpActAllow
                    && s.args().as_ref().is_none_or(|a| a.is_empty())
            })
            .flat_map(|s| s.names().clone())
            .collect()
    }

    #[test]
    fn default_caps_on_amd64() {
        let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        let p = default_profile(&caps, "amd64").unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), Some(EPERM));
        assert_eq!(p.architectures().as_ref().unwrap()[0], Arch::ScmpArchX86_64);
        let allowed = names_allowed(&p);
        for n in ["read", "execve", "arch_prctl", "ptrace", "chroot"] {
            assert!(allowed.iter().any(|a| a == n), "{n}");
        }
        for n in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "bpf",
            "keyctl",
            "cacheflush",
        ] {
            assert!(!allowed.iter().any(|a| a == n), "{n}");
        }
        let sys = p.syscalls().as_ref().unwrap();
        let clone = sys
            .iter()
            .find(|s| s.names() == &["clone".to_string()])
            .unwrap();
        let arg = clone.args().as_ref().unwrap()[0];
        assert_eq!(
            (arg.index(), arg.value(), arg.op()),
            (
                0,
                CLONE_NAMESPACE_FLAGS,
                LinuxSeccompOperator::ScmpCmpMaskedEq
            )
        );
        let clone3 = sys
            .iter()
            .find(|s| s.names() == &["clone3".to_string()])
            .unwrap();
        assert_eq!(clone3.errno_ret(), Some(ENOSYS));
        assert_eq!(
            sys.iter()
                .filter(|s| s.names() == &["personality".to_string()])
                .count(),
            5
        );
    }

    #[test]
    fn sys_admin_unlocks_namespaces() {
        let mut caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
        caps.insert(Capability::SysAdmin);
        let p = default_profile(&caps, "amd64").unwrap();
        let allowed = names_allowed(&p);
        for n in ["mount", "unshare", "setns", "clone", "clone3"] {
            assert!(allowed.iter().any(|a| a == n), "{n}");
        }
        assert!(!p
            .syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .any(|s| s.action() == LinuxSeccompAction::ScmpActErrno));
    }

    #[test]
    fn arch_specific_rules() {
        let caps = Capabilities::new();
        let allowed = names_allowed(&default_profile(&caps, "arm64").unwrap());
        assert!(allowed.iter().any(|a| a == "cacheflush"));
        assert!(!allowed.iter().any(|a| a == "arch_prctl"));
        assert!(!allowed.iter().any(|a| a == "chroot"));
    }
}
