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
