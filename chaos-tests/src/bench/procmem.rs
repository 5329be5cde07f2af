//! Memory of processes from `/proc/PID/smaps_rollup` (RSS and PSS), and the process lists
//! each engine is made of, so the idle-memory row sums the same kind of thing on both sides.

use std::path::Path;

/// `(Rss, Pss)` of process `pid` in KiB.
pub fn memory_kib(pid: u32) -> std::io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(parse_rollup(&text))
}

/// `(Rss, Pss)` in KiB from the text of a `smaps_rollup` file (0 where a field is missing).
pub fn parse_rollup(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("Rss:"), field("Pss:"))
}

/// CPU seconds (user + system) process `pid` has used so far, from `/proc/PID/stat`; its
/// threads included, its children not.
pub fn cpu_seconds(pid: u32) -> std::io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad /proc/PID/stat");
    // Fields after the command name (in parentheses, may hold spaces); utime and stime
    // are fields 14 and 15 of the line, indexes 11 and 12 after the name.
    let rest = stat.rsplit_once(')').ok_or_else(bad)?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).ok_or_else(bad);
    let ticks = field(11)? + field(12)?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    Ok(ticks as f64 / hz.max(1) as f64)
}

/// Sum of `(Rss, Pss)` in KiB over `pids`; processes that are gone count as 0.
pub fn total_kib(pids: &[u32]) -> (u64, u64) {
    pids.iter()
        .filter_map(|p| memory_kib(*p).ok())
        .fold((0, 0), |(r, p), (r2, p2)| (r + r2, p + p2))
}

/// Every live process as `(pid, ppid, argv)`.
pub fn processes() -> Vec<(u32, u32, Vec<String>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| parse_ppid(&s))
            .unwrap_or(0);
        out.push((pid, ppid, argv));
    }
    out
}

/// The parent pid from the text of `/proc/PID/stat` (after the parenthesised name).
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Pids of containerd shims serving the containerd at `address` (their `-address` flag).
pub fn containerd_shims(address: &Path) -> Vec<u32> {
    let want = address.to_string_lossy();
    processes()
        .into_iter()
        .filter(|(_, _, argv)| {
            argv.first().is_some_and(|a| a.contains("containerd-shim"))
                && argv.windows(2).any(|w| w[0] == "-address" && w[1] == want)
        })
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Direct children of `parent`.
pub fn children(parent: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|(_, ppid, _)| *ppid == parent)
        .map(|(pid, _, _)| pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_and_stat_parse() {
        let text = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:   1234 kB\nPss:  567 kB\nPss_Anon: 3 kB\n";
        assert_eq!(parse_rollup(text), (1234, 567));
        assert_eq!(parse_rollup(""), (0, 0));
        assert_eq!(parse_ppid("42 (a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn this_process_has_memory_and_a_parent() {
        let me = std::process::id();
        let (rss, pss) = memory_kib(me).unwrap();
        assert!(rss > 0 && pss > 0 && pss <= rss);
        let parent = std::os::unix::process::parent_id();
        assert!(children(parent).contains(&me));
    }
}
