//! Confined path resolution: `openat2(2)` with `RESOLVE_IN_ROOT` or `RESOLVE_BENEATH`,
//! repeated when the kernel asks for it.
//!
//! With those flags the kernel answers `EAGAIN` when a rename or a mount anywhere on the
//! host raced the lookup of a path with `..` in it: it cannot prove the result stayed
//! inside, so it refuses rather than guess. Nothing was opened, and the lookup is safe to
//! repeat; a busy host (parallel `docker cp`, builds, container starts) hits it now and
//! then, which turned into a spurious `Resource temporarily unavailable` for the client.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::os::fd::{AsFd, OwnedFd};

/// Tries before `EAGAIN` is given to the caller; each one only loses to a rename or mount
/// elsewhere on the host during the lookup.
const TRIES: usize = 64;

/// [`rustix::fs::openat2`], repeated while the kernel answers `EAGAIN`; call it for every
/// confined lookup.
pub fn openat2<Fd: AsFd, P: rustix::path::Arg + Copy>(
    dirfd: Fd,
    path: P,
    oflags: OFlags,
    mode: Mode,
    resolve: ResolveFlags,
) -> rustix::io::Result<OwnedFd> {
    let dir = dirfd.as_fd();
    for _ in 1..TRIES {
        match rustix::fs::openat2(dir, path, oflags, mode, resolve) {
            Err(rustix::io::Errno::AGAIN) => {}
            res => return res,
        }
    }
    rustix::fs::openat2(dir, path, oflags, mode, resolve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Lookups through `..` while another thread renames on the same filesystem: the
    /// kernel answers some with `EAGAIN` (the plain call is counted to show the race is
    /// there); none of ours fails.
    #[test]
    fn lookups_through_dot_dot_survive_concurrent_renames() {
        let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
        std::fs::create_dir_all(tmp.path().join("root/a")).unwrap();
        std::fs::write(tmp.path().join("root/b"), b"b").unwrap();
        let root = std::fs::File::open(tmp.path().join("root")).unwrap();
        let stop = AtomicBool::new(false);
        let (mut plain_again, mut ours_failed) = (0, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let (x, y) = (tmp.path().join("x"), tmp.path().join("y"));
                std::fs::write(&x, b"").unwrap();
                while !stop.load(Ordering::Relaxed) {
                    std::fs::rename(&x, &y).unwrap();
                    std::fs::rename(&y, &x).unwrap();
                }
            });
            let flags = OFlags::RDONLY | OFlags::CLOEXEC;
            let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
            for _ in 0..20_000 {
                if let Err(rustix::io::Errno::AGAIN) =
                    rustix::fs::openat2(&root, "a/../b", flags, Mode::empty(), resolve)
                {
                    plain_again += 1;
                }
                if openat2(&root, "a/../b", flags, Mode::empty(), resolve).is_err() {
                    ours_failed += 1;
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        eprintln!("plain openat2 answered EAGAIN {plain_again} times of 20000");
        assert_eq!(ours_failed, 0);
    }
}
