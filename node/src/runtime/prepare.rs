//! What the shim prepares on the host before libcontainer creates the container, and the
//! one change it makes in the container's network namespace afterwards:
//!
//! ```text
//!  RuntimePlan ──► write hosts, hostname, resolv.conf into the state dir (etc_files)
//!              ──► stat --device nodes (devices)
//!              ──► seed new volumes from the image's content at their target
//!  created     ──► bring `lo` up in the container's network namespace
//! ```
//!
//! What goes into those files and mounts is decided in [`crate::runtime::etc_files`] and
//! [`crate::runtime::spec`]; this module only carries it out.

use crate::runtime::etc_files;
use crate::runtime::lookup::open_in_root;
use crate::runtime::spec::{EtcFiles, HostDevice, RuntimePlan};
use rustix::fs::OFlags;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wharf_protocol::agent::MountKind;

/// Why the container's host-side files could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// A network file could not be written.
    #[error("write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A `--device` path is not a device node.
    #[error(
        "error gathering device information while adding custom device \"{0}\": not a device node"
    )]
    NotADevice(String),
    /// A `--device` path could not be read.
    #[error("error gathering device information while adding custom device \"{path}\": {source}")]
    Device {
        /// The host path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A volume could not be seeded from the image.
    #[error("copy image content at {target} into volume {volume}: {source}")]
    Seed {
        /// Path inside the container.
        target: String,
        /// The volume's directory.
        volume: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The container's network namespace could not be entered or configured.
    #[error("bring up loopback in the container's network namespace: {0}")]
    Loopback(String),
}

/// Write `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` for the container into
/// `state_dir` and record them in the plan, so that [`crate::runtime::build_spec`] binds them.
pub fn write_etc_files(plan: &mut RuntimePlan, state_dir: &Path) -> Result<(), PrepareError> {
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let files = EtcFiles {
        hosts: state_dir.join("hosts"),
        hostname: state_dir.join("hostname"),
        resolv_conf: state_dir.join("resolv.conf"),
    };
    let h = &plan.host;
    let contents = [
        (&files.hosts, etc_files::hosts_file(&h.extra_hosts)),
        (&files.hostname, etc_files::hostname_file(&plan.hostname)),
        (
            &files.resolv_conf,
            etc_files::resolv_conf(&host_resolv, &h.dns, &h.dns_search, &h.dns_options),
        ),
    ];
    for (path, text) in contents {
        std::fs::write(path, text).map_err(|source| PrepareError::Write {
            path: path.clone(),
            source,
        })?;
    }
    plan.etc_files = Some(files);
    Ok(())
}

/// Look up every `--device` of the plan on the host and record its numbers.
pub fn resolve_devices(plan: &mut RuntimePlan) -> Result<(), PrepareError> {
    let mut out = vec![];
    for d in &plan.host.devices {
        let meta = std::fs::metadata(&d.path_on_host).map_err(|source| PrepareError::Device {
            path: d.path_on_host.clone(),
            source,
        })?;
        let ft = meta.file_type();
        if !ft.is_char_device() && !ft.is_block_device() {
            return Err(PrepareError::NotADevice(d.path_on_host.clone()));
        }
        let rdev = meta.rdev();
        let target = if d.path_in_container.is_empty() {
            d.path_on_host.clone()
        } else {
            d.path_in_container.clone()
        };
        out.push(HostDevice {
            path: target,
            block: ft.is_block_device(),
            major: i64::from(rustix::fs::major(rdev)),
            minor: i64::from(rustix::fs::minor(rdev)),
            file_mode: meta.permissions().mode() & 0o7777,
            permissions: if d.permissions.is_empty() {
                "rwm".to_string()
            } else {
                d.permissions.clone()
            },
        });
    }
    if plan.host.privileged {
        for d in host_devices(Path::new("/dev")) {
            if !out.iter().any(|o| o.path == d.path) {
                out.push(d);
            }
        }
    }
    plan.devices = out;
    Ok(())
}

/// Every device node under `dir` (the host's /dev), as runc's `HostDevices` finds them
/// for `--privileged`: not in `pts`, `shm`, `fd`, `mqueue` and hidden directories, not
/// the console, not `ptmx` (the container gets its own).
pub fn host_devices(dir: &Path) -> Vec<HostDevice> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            if !matches!(name.as_ref(), "pts" | "shm" | "fd" | "mqueue") && !name.starts_with('.') {
                out.extend(host_devices(&path));
            }
            continue;
        }
        if !(ft.is_char_device() || ft.is_block_device()) || name == "console" || name == "ptmx" {
            continue;
        }
        let rdev = meta.rdev();
        out.push(HostDevice {
            path: path.display().to_string(),
            block: ft.is_block_device(),
            major: i64::from(rustix::fs::major(rdev)),
            minor: i64::from(rustix::fs::minor(rdev)),
            file_mode: meta.permissions().mode() & 0o7777,
            permissions: "rwm".to_string(),
        });
    }
    out
}

/// Fill every empty volume of the plan with the image's content at its target, as Docker
/// does for a new volume (unless `nocopy`). `rootfs` is the mounted container root.
pub fn seed_volumes(plan: &RuntimePlan, rootfs: &Path) -> Result<(), PrepareError> {
    for m in &plan.host.mounts {
        if m.kind != MountKind::Volume || m.no_copy || !m.driver_opts.is_empty() {
            continue;
        }
        let volume = PathBuf::from(&m.source);
        let seed_err = |source| PrepareError::Seed {
            target: m.target.clone(),
            volume: volume.clone(),
            source,
        };
        std::fs::create_dir_all(&volume).map_err(seed_err)?;
        let empty = std::fs::read_dir(&volume)
            .map_err(seed_err)?
            .next()
            .is_none();
        if !empty {
            continue;
        }
        let root = File::open(rootfs).map_err(seed_err)?;
        let Ok(dir) = open_in_root(&root, &m.target, OFlags::PATH | OFlags::DIRECTORY) else {
            continue;
        };
        let src = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let src = std::fs::read_link(&src).unwrap_or(src);
        // The directory itself gives the volume its owner and mode.
        let meta = std::fs::symlink_metadata(&src).map_err(seed_err)?;
        std::os::unix::fs::lchown(&volume, Some(meta.uid()), Some(meta.gid())).map_err(seed_err)?;
        std::fs::set_permissions(&volume, meta.permissions()).map_err(seed_err)?;
        copy_tree(&src, &volume).map_err(seed_err)?;
    }
    Ok(())
}

/// Copy a directory tree without following symlinks, keeping modes and owners; device
/// nodes, fifos and sockets are skipped. Called before the container runs, on its rootfs.
fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from)?, &to)?;
        } else if ft.is_dir() {
            std::fs::create_dir(&to)?;
            copy_tree(&from, &to)?;
            std::fs::set_permissions(&to, meta.permissions())?;
        } else if ft.is_file() {
            std::fs::copy(&from, &to)?;
            std::fs::set_permissions(&to, meta.permissions())?;
        } else {
            continue;
        }
        std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

/// Record the shim's own capability bounding set (`CapBnd` of /proc/self/status) in the
/// plan: a container cannot get a capability the shim does not have.
pub fn read_cap_bounding(plan: &mut RuntimePlan) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    plan.cap_bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok());
}

/// Bring the loopback interface up in the network namespace of process `pid` (the
/// created container), as Docker's `none` network does. Runs on a short-lived thread so
/// that the shim's own namespace is never changed.
pub fn loopback_up(pid: i32) -> Result<(), PrepareError> {
    let ns = File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|e| PrepareError::Loopback(format!("open netns of {pid}: {e}")))?;
    std::thread::spawn(move || -> Result<(), String> {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))?;
        set_lo_up()
    })
    .join()
    .map_err(|_| PrepareError::Loopback("thread panicked".into()))?
    .map_err(PrepareError::Loopback)
}

fn set_lo_up() -> Result<(), String> {
    // SAFETY: socket(2) with constant arguments; the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!("SIOCGIFFLAGS: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the union's flags member was just filled by the kernel.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads `req` only.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!("SIOCSIFFLAGS: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
