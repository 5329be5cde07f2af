//! Looking things up inside a container's rootfs without ever leaving it: the command's
//! executable (as `exec.LookPath` in the container's `PATH`), `/etc/passwd`, the working
//! directory. Every path is resolved by `openat2(RESOLVE_IN_ROOT)`, so a symlink in the
//! image such as `/bin -> /` or `/etc/passwd -> /../../host` stays inside the root.
//!
//! The decision ([`decide`]) is pure; [`resolve_command`] only probes the candidates.

use rustix::fs::{Mode, OFlags, ResolveFlags};
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

/// The `PATH` runc and Docker use when the container's environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why the command cannot be executed; texts as Docker shows them.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// A bare command name found in no `PATH` directory (Docker: exit 127).
    #[error("exec: \"{0}\": executable file not found in $PATH")]
    NotInPath(String),
    /// A command given as a path that does not exist (Docker: exit 127).
    #[error("exec: \"{0}\": stat {0}: no such file or directory")]
    NoSuchFile(String),
    /// The command exists but is not an executable file (Docker: exit 126).
    #[error("exec: \"{0}\": permission denied")]
    PermissionDenied(String),
    /// The argv is empty.
    #[error("no command specified")]
    Empty,
}

/// Why a working directory is refused before anything is created.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WorkdirError {
    /// Under `/proc`: `/proc/self/fd/N` would be a descriptor the runtime holds, possibly
    /// a host directory (runc CVE-2024-21626).
    #[error("working directory {0} is under /proc: refused, it could reach the host's files (CVE-2024-21626)")]
    UnderProc(String),
}

/// Refuse working directories that could leak host file descriptors: anything under
/// `/proc` once `.` and `..` are resolved lexically (runc CVE-2024-21626).
pub fn check_working_dir(cwd: &str) -> Result<(), WorkdirError> {
    let mut parts: Vec<&str> = Vec::new();
    for p in cwd.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.first() == Some(&"proc") {
        return Err(WorkdirError::UnderProc(cwd.to_string()));
    }
    Ok(())
}

/// An OS error as Go prints it ("not a directory"), without Rust's "(os error N)".
pub fn os_error_text(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => {
            let text = nix::errno::Errno::from_raw(n).desc();
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => e.to_string(),
            }
        }
        None => e.to_string(),
    }
}

/// What probing one candidate path found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Nothing there.
    Missing,
    /// A directory, or a file without any execute bit.
    NotExecutable,
    /// A regular file with an execute bit.
    Executable,
}

/// The value of `PATH` in `KEY=value` strings, if any.
pub fn path_env(env: &[String]) -> Option<&str> {
    env.iter().rev().find_map(|e| e.strip_prefix("PATH="))
}

/// The paths (inside the container) where `cmd` may be, in the order they are tried.
/// A command with a `/` is taken as a path (relative ones against `cwd`); a bare name is
/// searched in `path` (or [`DEFAULT_PATH`]), where empty entries mean `cwd`.
pub fn candidates(cmd: &str, path: Option<&str>, cwd: &str) -> Vec<String> {
    let join = |dir: &str, name: &str| {
        if dir.ends_with('/') {
            format!("{dir}{name}")
        } else {
            format!("{dir}/{name}")
        }
    };
    if cmd.contains('/') {
        if cmd.starts_with('/') {
            return vec![cmd.to_string()];
        }
        return vec![join(cwd, cmd)];
    }
    path.unwrap_or(DEFAULT_PATH)
        .split(':')
        .map(|dir| if dir.is_empty() { cwd } else { dir })
        .map(|dir| join(dir, cmd))
        .collect()
}

/// Decide from the probes of [`candidates`] which path to execute, as Go's
/// `exec.LookPath`: the first executable candidate wins.
pub fn decide(cmd: &str, probes: &[(String, Probe)]) -> Result<String, LookupError> {
    if cmd.is_empty() {
        return Err(LookupError::Empty);
    }
    if let Some((path, _)) = probes.iter().find(|(_, p)| *p == Probe::Executable) {
        return Ok(path.clone());
    }
    if cmd.contains('/') {
        return Err(match probes.first().map(|(_, p)| *p) {
            Some(Probe::NotExecutable) => LookupError::PermissionDenied(cmd.to_string()),
            _ => LookupError::NoSuchFile(cmd.to_string()),
        });
    }
    Err(LookupError::NotInPath(cmd.to_string()))
}

/// Open `path` (absolute inside the container) relative to the directory `root`,
/// resolving every component, `..` and symlink inside it.
pub fn open_in_root(root: &File, path: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    // openat2 refuses any flag but CLOEXEC, DIRECTORY and NOFOLLOW next to O_PATH.
    let extra = if flags.contains(OFlags::PATH) {
        OFlags::CLOEXEC
    } else {
        OFlags::CLOEXEC | OFlags::NOCTTY
    };
    Ok(crate::resolve::openat2(
        root,
        rel,
        flags | extra,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

fn open_root(root: &Path) -> std::io::Result<File> {
    let fd = rustix::fs::open(
        root,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(File::from(fd))
}

/// Probe one candidate inside `root`.
fn probe(root: &File, path: &str) -> Probe {
    let Ok(fd) = open_in_root(root, path, OFlags::PATH) else {
        return Probe::Missing;
    };
    match rustix::fs::fstat(&fd) {
        Ok(st) => {
            let file_type = rustix::fs::FileType::from_raw_mode(st.st_mode);
            if file_type == rustix::fs::FileType::RegularFile && st.st_mode & 0o111 != 0 {
                Probe::Executable
            } else {
                Probe::NotExecutable
            }
        }
        Err(_) => Probe::Missing,
    }
}

/// Find the executable for `args[0]` in the rootfs at `root`, with the container's `env`
/// and working directory `cwd`; returns the path inside the container.
pub fn resolve_command(
    root: &Path,
    args: &[String],
    env: &[String],
    cwd: &str,
) -> Result<String, LookupError> {
    let cmd = args.first().map(String::as_str).unwrap_or("");
    if cmd.is_empty() {
        return Err(LookupError::Empty);
    }
    let probes: Vec<(String, Probe)> = match open_root(root) {
        Ok(dir) => candidates(cmd, path_env(env), cwd)
            .into_iter()
            .map(|c| {
                let p = probe(&dir, &c);
                (c, p)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    decide(cmd, &probes)
}

/// Read a small text file (such as `/etc/passwd`) inside the rootfs; `None` if it does not
/// exist or cannot be read.
pub fn read_in_root(root: &Path, path: &str) -> Option<String> {
    let dir = open_root(root).ok()?;
    let fd = open_in_root(&dir, path, OFlags::RDONLY).ok()?;
    let mut text = String::new();
    File::from(fd)
        .take(16 * 1024 * 1024)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

/// Create the directory `path` (absolute inside the container) and its parents inside
/// `root`, as Docker does for a missing working directory.
pub fn ensure_dir_in_root(root: &Path, path: &str) -> std::io::Result<()> {
    let dir = open_root(root)?;
    let mut current = String::from("/");
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        let parent = open_in_root(&dir, &current, OFlags::PATH | OFlags::DIRECTORY)?;
        match rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        if !current.ends_with('/') {
            current.push('/');
        }
        current.push_str(part);
    }
    // The result must be a directory, whatever symlinks led there.
    open_in_root(&dir, &current, OFlags::PATH | OFlags::DIRECTORY).map(drop)
}

/// Check that `path` (absolute inside the container) is a directory inside `root`.
pub fn check_dir_in_root(root: &Path, path: &str) -> std::io::Result<()> {
    let dir = open_root(root)?;
    open_in_root(&dir, path, OFlags::PATH | OFlags::DIRECTORY).map(drop)
}

/// Whether `target` is a mount point according to `/proc/self/mountinfo` contents
/// (field 5, with the kernel's octal escapes for space, tab, newline and backslash).
pub fn is_mount_point(mountinfo: &str, target: &Path) -> bool {
    let want = target.to_string_lossy();
    mountinfo.lines().any(|line| {
        line.split(' ').nth(4).is_some_and(|field| {
            field
                .replace("\\040", " ")
                .replace("\\011", "\t")
                .replace("\\012", "\n")
                .replace("\\134", "\\")
                == want
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn candidates_follow_path_and_cwd() {
        assert_eq!(
            candidates("ls", Some("/bin:/usr/bin/:"), "/w"),
            ["/bin/ls", "/usr/bin/ls", "/w/ls"]
        );
        assert_eq!(candidates("/x/y", Some("/bin"), "/"), ["/x/y"]);
        assert_eq!(candidates("./run.sh", None, "/app"), ["/app/./run.sh"]);
        assert_eq!(candidates("sh", None, "/").len(), 6);
        assert_eq!(path_env(&["A=1".into(), "PATH=/a".into()]), Some("/a"));
    }

    #[test]
    fn decisions_match_docker_texts() {
        use Probe::*;
        let p = |v: &[(&str, Probe)]| {
            v.iter()
                .map(|(a, b)| (a.to_string(), *b))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            decide("ls", &p(&[("/a/ls", NotExecutable), ("/b/ls", Executable)])).unwrap(),
            "/b/ls"
        );
        assert_eq!(
            decide("nope", &p(&[("/a/nope", Missing)]))
                .unwrap_err()
                .to_string(),
            "exec: \"nope\": executable file not found in $PATH"
        );
        assert_eq!(
            decide("/etc", &p(&[("/etc", NotExecutable)]))
                .unwrap_err()
                .to_string(),
            "exec: \"/etc\": permission denied"
        );
        assert_eq!(
            decide("/x", &p(&[("/x", Missing)]))
                .unwrap_err()
                .to_string(),
            "exec: \"/x\": stat /x: no such file or directory"
        );
        assert_eq!(decide("", &[]), Err(LookupError::Empty));
    }

    #[test]
    fn mount_points_from_mountinfo() {
        let info = "22 1 0:21 / / rw - ext4 /dev/sda1 rw\n\
                    90 22 0:50 / /var/lib/wharf/a\\040b/merged rw - overlay overlay rw\n";
        assert!(is_mount_point(info, Path::new("/var/lib/wharf/a b/merged")));
        assert!(!is_mount_point(info, Path::new("/var/lib/wharf")));
        assert!(is_mount_point(info, Path::new("/")));
    }

    #[test]
    fn lookups_stay_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::write(r.join("bin/tool"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(r.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::write(r.join("bin/data"), b"x").unwrap();
        std::fs::create_dir(r.join("etc")).unwrap();
        // An absolute symlink must resolve inside the root, not on the host.
        std::os::unix::fs::symlink("/bin", r.join("sbin")).unwrap();
        std::os::unix::fs::symlink("/../../../../etc", r.join("hostetc")).unwrap();
        let env = vec!["PATH=/sbin".to_string()];
        let args = |s: &str| vec![s.to_string()];
        assert_eq!(
            resolve_command(r, &args("tool"), &env, "/").unwrap(),
            "/sbin/tool"
        );
        assert_eq!(
            resolve_command(r, &args("data"), &env, "/"),
            Err(LookupError::NotInPath("data".into()))
        );
        assert_eq!(
            resolve_command(r, &args("/bin/data"), &env, "/"),
            Err(LookupError::PermissionDenied("/bin/data".into()))
        );
        assert_eq!(
            read_in_root(r, "/hostetc/passwd"),
            None,
            "must not read the host's passwd"
        );
        ensure_dir_in_root(r, "/hostetc/new/dir").unwrap();
        assert!(r.join("etc/new/dir").is_dir());
    }

    #[test]
    fn working_dirs_under_proc_are_refused() {
        assert!(check_working_dir("/").is_ok());
        assert!(check_working_dir("/app/proc").is_ok());
        assert!(check_working_dir("/procfs").is_ok());
        for bad in [
            "/proc/self/fd/7",
            "/proc",
            "//proc/1/cwd",
            "/tmp/../proc/self/cwd",
        ] {
            assert_eq!(
                check_working_dir(bad),
                Err(WorkdirError::UnderProc(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn os_errors_read_like_go() {
        let e = std::io::Error::from_raw_os_error(libc::ENOTDIR);
        assert_eq!(os_error_text(&e), "not a directory");
        assert_eq!(os_error_text(&std::io::Error::other("x")), "x");
    }
}
