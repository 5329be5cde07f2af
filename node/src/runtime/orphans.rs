//! Shim processes found by their command line (`wharf shim --state-dir <dir>`, and the
//! shim zygote's `wharf shim-zygote --containers-dir <dir>`), for when a
//! shim no longer answers on its socket: the agent kills such a shim when it cleans up its
//! container, and `wharf down` kills every shim of its data directory that is left.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Whether the NUL-separated `cmdline` is a shim whose state directory is `dir` or below
/// it. Pure.
pub fn is_shim_of(cmdline: &[u8], dir: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let under = |p: &[u8]| Path::new(std::ffi::OsStr::from_bytes(p)).starts_with(dir);
    match args.as_slice() {
        [_, b"shim", b"--state-dir", state, ..] => under(state),
        // The zygote that forks the shims of a containers directory (a forked shim sets
        // its own command line to the first form).
        [_, b"shim-zygote", b"--containers-dir", containers, ..] => under(containers),
        _ => false,
    }
}

/// PIDs of the live shims whose state directory is `dir` or below it.
pub fn shims_of(dir: &Path) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| is_shim_of(&c, dir))
        })
        .collect()
}

/// SIGKILL every shim of `dir` (see [`shims_of`]); returns how many were signalled.
pub fn kill_shims_of(dir: &Path) -> usize {
    let pids = shims_of(dir);
    for pid in &pids {
        if let Ok(pid) = i32::try_from(*pid) {
            tracing::warn!(pid, dir = %dir.display(), "killing a shim that outlived its container");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    pids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shims_are_recognised_by_their_state_dir() {
        let dir = Path::new("/var/lib/wharf/containers");
        let shim = b"/usr/bin/wharf\0shim\0--state-dir\0/var/lib/wharf/containers/abc\0";
        assert!(is_shim_of(shim, dir));
        assert!(is_shim_of(shim, Path::new("/var/lib/wharf/containers/abc")));
        assert!(!is_shim_of(
            shim,
            Path::new("/var/lib/wharf/containers/abd")
        ));
        // Another instance's data dir that only shares a prefix.
        assert!(!is_shim_of(
            b"/usr/bin/wharf\0shim\0--state-dir\0/var/lib/wharf2/containers/abc\0",
            Path::new("/var/lib/wharf")
        ));
        assert!(!is_shim_of(
            b"/usr/bin/wharf\0up\0--data-dir\0/var/lib/wharf\0",
            dir
        ));
        assert!(!is_shim_of(b"", dir));
        // The zygote of this containers directory, not another instance's.
        let zygote = b"/usr/bin/wharf\0shim-zygote\0--containers-dir\0/var/lib/wharf/containers\0";
        assert!(is_shim_of(zygote, dir));
        assert!(is_shim_of(zygote, Path::new("/var/lib/wharf")));
        assert!(!is_shim_of(
            zygote,
            Path::new("/var/lib/wharf/containers/abc")
        ));
        assert!(!is_shim_of(
            b"/usr/bin/wharf\0shim-zygote\0--containers-dir\0/var/lib/wharf2/containers\0",
            dir
        ));
    }
}
