//! Resource usage of a container from its cgroup v1 files, for `docker stats`.
//!
//! ```text
//!   /sys/fs/cgroup/memory/<parent>/<id>/memory.{usage,max_usage,limit}_in_bytes, memory.stat
//!   /sys/fs/cgroup/cpuacct/<parent>/<id>/cpuacct.usage{,_percpu,_sys,_user}
//!   /sys/fs/cgroup/cpu/<parent>/<id>/cpu.stat          (throttling)
//!   /sys/fs/cgroup/pids/<parent>/<id>/pids.{current,max}
//!   /proc/stat, /proc/meminfo                          (host totals)
//! ```
//!
//! [`sample`] only reads files; the parsing ([`parse_kv`], [`parse_u64`],
//! [`system_cpu_ns`]) is pure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
pub use wharf_protocol::runtime::CgroupSample;

/// The kernel's `USER_HZ`: /proc/stat counts in 1/100 s on Linux.
const USER_HZ: u64 = 100;

/// Parse a file of `key value` lines (memory.stat, cpu.stat).
pub fn parse_kv(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// Parse a single number; `None` for anything else (such as `max`).
pub fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Host CPU time in ns from the `cpu` line of /proc/stat (Docker's `system_cpu_usage`),
/// and the number of `cpuN` lines.
pub fn system_cpu_ns(proc_stat: &str) -> (u64, u32) {
    let mut total = 0;
    let mut cpus = 0;
    for l in proc_stat.lines() {
        let mut words = l.split_whitespace();
        match words.next() {
            Some("cpu") => {
                total = words
                    .take(7)
                    .filter_map(|w| w.parse::<u64>().ok())
                    .sum::<u64>()
                    * (1_000_000_000 / USER_HZ);
            }
            Some(w) if w.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus)
}

/// `MemTotal` of /proc/meminfo in bytes.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file)).unwrap_or_default()
}

/// Bytes of the regular files under `dir` (0 for what cannot be read); symlinks are not
/// followed.
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) if m.is_file() => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// Read the counters of the cgroup `rel` (`<parent>/<id>`) under `root` (/sys/fs/cgroup).
pub fn sample(root: &Path, rel: &str) -> CgroupSample {
    let dir = |c: &str| -> PathBuf { root.join(c).join(rel) };
    let mem = dir("memory");
    let acct = dir("cpuacct");
    let host_mem = mem_total(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
    let limit = parse_u64(&read(&mem, "memory.limit_in_bytes")).unwrap_or(u64::MAX);
    let (system_cpu_ns, online_cpus) =
        system_cpu_ns(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
    let acct_stat = parse_kv(&read(&acct, "cpuacct.stat"));
    let ticks = 1_000_000_000 / USER_HZ;
    CgroupSample {
        memory_usage: parse_u64(&read(&mem, "memory.usage_in_bytes")).unwrap_or(0),
        memory_max_usage: parse_u64(&read(&mem, "memory.max_usage_in_bytes")).unwrap_or(0),
        memory_limit: host_mem.map_or(limit, |m| limit.min(m)),
        memory_failcnt: parse_u64(&read(&mem, "memory.failcnt")).unwrap_or(0),
        memory_stat: parse_kv(&read(&mem, "memory.stat")),
        cpu_total_ns: parse_u64(&read(&acct, "cpuacct.usage")).unwrap_or(0),
        cpu_percpu_ns: read(&acct, "cpuacct.usage_percpu")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect(),
        cpu_kernel_ns: acct_stat.get("system").copied().unwrap_or(0) * ticks,
        cpu_user_ns: acct_stat.get("user").copied().unwrap_or(0) * ticks,
        cpu_throttling: parse_kv(&read(&dir("cpu"), "cpu.stat")),
        system_cpu_ns,
        online_cpus,
        pids_current: parse_u64(&read(&dir("pids"), "pids.current")).unwrap_or(0),
        pids_limit: parse_u64(&read(&dir("pids"), "pids.max")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_in_ns() {
        let (ns, cpus) = system_cpu_ns(
            "cpu  10 0 20 70 0 0 0 5 0 0\ncpu0 5 0 10 35 0 0 0 0 0 0\ncpu1 5 0 10 35 0 0 0 0 0 0\nintr 1\n",
        );
        assert_eq!(ns, 100 * 10_000_000);
        assert_eq!(cpus, 2);
    }

    #[test]
    fn kv_numbers_and_meminfo() {
        let kv = parse_kv("cache 4096\nrss 8192\nbad\n");
        assert_eq!(kv["rss"], 8192);
        assert_eq!(kv.len(), 2);
        assert_eq!(parse_u64("max\n"), None);
        assert_eq!(parse_u64("20\n"), Some(20));
        assert_eq!(
            mem_total("MemTotal:  1000 kB\nMemFree: 1 kB\n"),
            Some(1_024_000)
        );
    }

    #[test]
    fn a_missing_group_reads_as_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let s = sample(tmp.path(), "x/y");
        assert_eq!(s.memory_usage, 0);
        assert_eq!(s.pids_limit, None);
        assert!(s.online_cpus >= 1);
    }
}
