//! Facts about this machine and this moment for the table's header: cores, memory,
//! kernel, load, UTC date, and the versions (and digests) of the programs compared.

use std::path::Path;
use std::process::Command;

/// `nproc=2, memory=23.5 GiB, kernel 6.1.0`: cores, total memory and kernel release.
pub fn machine() -> String {
    let nproc = cores();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next().and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "nproc={nproc}, memory={:.1} GiB, kernel {}",
        mem_kib as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

/// The number of CPUs this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them.
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The current UTC time as `2026-11-23T12:04:05Z`.
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// The first non-empty line `program args` prints, or `unknown (why)`.
pub fn version_of(program: &Path, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            text.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("unknown")
                .to_string()
        }
        Err(e) => format!("unknown ({e})"),
    }
}

/// Whether this binary was built without optimisations (then the harness itself, not the
/// engines, is slower: it only spawns the CLI, so the figures barely move).
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "dev"
    } else {
        "release"
    }
}

/// `wharf 0.1.0 (`PATH`, sha256 0123456789ab)`: what `--version` says and a short digest of
/// the file, so that two builds of one version are told apart in the table's header.
pub fn binary(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = std::fs::File::open(path)
        .and_then(|mut f| {
            let mut h = Sha256::new();
            std::io::copy(&mut f, &mut h)?;
            Ok(hex::encode(&h.finalize()[..6]))
        })
        .unwrap_or_else(|e| format!("unreadable: {e}"));
    format!(
        "{} (`{}`, sha256 {digest})",
        version_of(path, &["--version"]),
        path.display()
    )
}
