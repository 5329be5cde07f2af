//! The only code that mounts or unmounts: carries out a [`MountSpec`] decided elsewhere.

use super::layout::MountSpec;
use super::store::StoreError;
use rustix::mount::{MountFlags, UnmountFlags};
use std::ffi::CString;
use std::path::Path;

/// Mount the overlay `spec` describes: `chdir(spec.cwd)`, then
/// `mount("overlay", target, "overlay", 0, data)`. It changes the process's working
/// directory (the `l/` names in the data are relative to it), so call it only from a
/// single-threaded process such as a shim, or a thread that did `unshare(CLONE_FS)`.
pub fn mount_overlay(spec: &MountSpec) -> Result<(), StoreError> {
    let data = spec.data()?;
    let data = CString::new(data).map_err(|e| StoreError::BadMountPath(e.to_string()))?;
    let fail = |e: rustix::io::Errno| StoreError::Mount {
        target: spec.target.clone(),
        source: e.into(),
    };
    rustix::process::chdir(&spec.cwd).map_err(fail)?;
    rustix::mount::mount(
        "overlay",
        &spec.target,
        "overlay",
        MountFlags::empty(),
        Some(data.as_c_str()),
    )
    .map_err(fail)?;
    tracing::debug!(target = %spec.target.display(), layers = spec.lowerdir.len(), "overlay mounted");
    Ok(())
}

/// Detach the mount at `target` (lazily, as `umount -l`); call when a container's rootfs
/// is no longer needed. Not mounted, or not there, is not an error.
pub fn unmount(target: &Path) -> Result<(), StoreError> {
    match rustix::mount::unmount(target, UnmountFlags::DETACH | UnmountFlags::NOFOLLOW) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(StoreError::Unmount {
            target: target.to_path_buf(),
            source: e.into(),
        }),
    }
}

/// Why [`with_private_overlay`] could not run its closure.
#[derive(Debug)]
pub enum PrivateMountError {
    /// Entering the private namespace, or mounting, failed.
    Setup(std::io::Error),
    /// The mount thread panicked.
    Thread,
}

/// Mount an overlay described by `data` (its `l/` names relative to `cwd`) at `target` in
/// a private mount namespace of a scoped thread of its own, run `f` on the mount's root
/// directory fd there, then detach the mount. Nothing is visible to other threads or
/// processes, and the caller's working directory is untouched. Blocking; `target` must
/// exist. Call for a one-off view of a stopped container (`docker export`, `docker cp`).
pub fn with_private_overlay<T, F>(
    cwd: &Path,
    target: &Path,
    data: String,
    flags: MountFlags,
    f: F,
) -> Result<T, PrivateMountError>
where
    T: Send,
    F: FnOnce(std::os::fd::BorrowedFd<'_>) -> T + Send,
{
    use std::os::fd::AsFd;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T, PrivateMountError> {
            let fail = |e: rustix::io::Errno| PrivateMountError::Setup(e.into());
            nix::sched::unshare(
                nix::sched::CloneFlags::CLONE_NEWNS | nix::sched::CloneFlags::CLONE_FS,
            )
            .map_err(|e| fail(rustix::io::Errno::from_raw_os_error(e as i32)))?;
            rustix::mount::mount_change(
                "/",
                rustix::mount::MountPropagationFlags::PRIVATE
                    | rustix::mount::MountPropagationFlags::REC,
            )
            .map_err(fail)?;
            rustix::process::chdir(cwd).map_err(fail)?;
            let data = CString::new(data).map_err(|_| fail(rustix::io::Errno::INVAL))?;
            rustix::mount::mount("overlay", target, "overlay", flags, Some(data.as_c_str()))
                .map_err(fail)?;
            let res = rustix::fs::open(
                target,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(fail)
            .map(|root| f(root.as_fd()));
            if let Err(e) = rustix::mount::unmount(target, UnmountFlags::DETACH) {
                tracing::warn!(target = %target.display(), error = %e, "cannot unmount private view");
            }
            res
        })
        .join()
        .map_err(|_| PrivateMountError::Thread)?
    })
}
