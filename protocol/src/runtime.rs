//! What the controller and an agent say about a container's runtime: the shim's options
//! ([`ShimOptions`], part of `shim.json`), its healthcheck ([`HealthSpec`]) and health
//! ([`HealthState`], `health.json`), log rotation and log entries, a cgroup reading
//! ([`CgroupSample`]) and what an attach stream delivers ([`AttachEvent`]).
//!
//! ```text
//!  controller ──ShimOptions (LogRotation, HealthSpec, NetnsMode)──► agent ──► shim.json
//!  controller ◄──HealthState, LogEntry, CgroupSample, AttachEvent── agent ◄── shim, cgroupfs
//! ```
//!
//! Pure data and the pure rules that go with it; the agent reads and writes the files.
//! `shim.json` and `health.json` are these types as serde JSON, so their field names and
//! serde attributes are an on-disk format.

use crate::shim::Exit;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Per-container settings of the shim beyond the run spec (`HostConfig.LogConfig`,
/// `Config.Healthcheck`), resolved by the controller.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimOptions {
    /// When to rotate the json-file log (`--log-opt max-size,max-file`).
    #[serde(default)]
    pub log: LogRotation,
    /// The healthcheck to run, if any.
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// Run an init as PID 1 (`--init`, `HostConfig.Init`).
    #[serde(default)]
    pub init: bool,
    /// The container's network namespace (`--network`).
    #[serde(default)]
    pub netns: NetnsMode,
}

/// Which network namespace a container runs in.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetnsMode {
    /// A new one of its own (`none`, `bridge` and user networks).
    #[default]
    Own,
    /// The host's (`--network host`).
    Host,
    /// Another container's, by its `/proc/<pid>/ns/net` path (`--network container:<id>`):
    /// what the agent writes into `shim.json` for [`NetnsMode::JoinContainer`].
    Join(PathBuf),
    /// Another container's, by its ID (`--network container:<id>`): what the controller
    /// asks for; the agent finds that container's process and joins its namespace as
    /// [`NetnsMode::Join`] (a PID is a host fact the controller does not hold).
    JoinContainer(crate::ContainerId),
}

/// Results kept in [`HealthState::log`], as Docker keeps.
pub const MAX_LOG: usize = 5;
/// Output of one check kept, in bytes, as Docker keeps.
pub const MAX_OUTPUT: usize = 4096;

/// Docker's defaults, used where the check leaves a duration or count at zero.
const DEFAULT_INTERVAL_NS: u64 = 30_000_000_000;
const DEFAULT_TIMEOUT_NS: u64 = 30_000_000_000;
const DEFAULT_START_INTERVAL_NS: u64 = 5_000_000_000;
const DEFAULT_RETRIES: u32 = 3;

/// A container's healthcheck, resolved from the image's `HEALTHCHECK` and `--health-*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// The command to run in the container (argv; `CMD-SHELL` already turned into
    /// `/bin/sh -c`).
    pub args: Vec<String>,
    /// Time between checks, ns; 0 for Docker's 30 s.
    pub interval_ns: u64,
    /// Time a check may take, ns; 0 for Docker's 30 s.
    pub timeout_ns: u64,
    /// Time after start when failures do not count, ns.
    pub start_period_ns: u64,
    /// Time between checks during the start period, ns; 0 for Docker's 5 s.
    pub start_interval_ns: u64,
    /// Consecutive failures that make the container unhealthy; 0 for Docker's 3.
    pub retries: u32,
}

impl HealthSpec {
    /// The argv of Docker's `Healthcheck.Test`: `["CMD", args..]`, `["CMD-SHELL", cmd]`;
    /// `None` for `["NONE"]`, an empty test or an unknown kind (no check).
    pub fn args_from_test(test: &[String]) -> Option<Vec<String>> {
        let (kind, rest) = test.split_first()?;
        match kind.as_str() {
            "CMD" if !rest.is_empty() => Some(rest.to_vec()),
            "CMD-SHELL" if !rest.is_empty() => Some(vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                rest.join(" "),
            ]),
            _ => None,
        }
    }

    fn or(v: u64, default: u64) -> Duration {
        Duration::from_nanos(if v == 0 { default } else { v })
    }

    /// Time between checks outside the start period.
    pub fn interval(&self) -> Duration {
        Self::or(self.interval_ns, DEFAULT_INTERVAL_NS)
    }

    /// Time a check may take.
    pub fn timeout(&self) -> Duration {
        Self::or(self.timeout_ns, DEFAULT_TIMEOUT_NS)
    }

    /// Time between checks during the start period.
    pub fn start_interval(&self) -> Duration {
        Self::or(self.start_interval_ns, DEFAULT_START_INTERVAL_NS)
    }

    /// How long to wait before the next check, `elapsed` after the container started, as
    /// Docker does: the start interval while starting inside the start period, the rest of
    /// the start period if that is shorter than the interval, else the interval.
    pub fn next_wait(&self, elapsed: Duration, status: &str) -> Duration {
        let start_period = Duration::from_nanos(self.start_period_ns);
        let interval = self.interval();
        if elapsed >= start_period {
            return interval;
        }
        let remaining = start_period - elapsed;
        if remaining < interval {
            remaining
        } else if status == "starting" {
            self.start_interval()
        } else {
            interval
        }
    }

    /// Failures in a row that make the container unhealthy.
    pub fn retries(&self) -> u32 {
        if self.retries == 0 {
            DEFAULT_RETRIES
        } else {
            self.retries
        }
    }
}

/// One check, as Docker's `State.Health.Log` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    /// When the check started (RFC 3339).
    pub start: String,
    /// When it ended (RFC 3339).
    pub end: String,
    /// 0 healthy, 1 unhealthy, -1 could not run or timed out.
    pub exit_code: i32,
    /// Its stdout and stderr, at most [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// Docker's `State.Health`; `health.json` in the state dir.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthState {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    /// Failed checks in a row.
    pub failing_streak: u32,
    /// The last [`MAX_LOG`] checks, oldest first.
    pub log: Vec<HealthResult>,
}

impl Default for HealthState {
    fn default() -> HealthState {
        HealthState {
            status: "starting".to_string(),
            failing_streak: 0,
            log: Vec::new(),
        }
    }
}

impl HealthState {
    /// Fold one result in, as Docker does: success makes the container healthy; a failure
    /// during the start period does not count while it is still starting; otherwise
    /// `retries` failures in a row make it unhealthy.
    pub fn record(&mut self, result: HealthResult, in_start_period: bool, retries: u32) {
        if result.exit_code == 0 {
            self.status = "healthy".to_string();
            self.failing_streak = 0;
        } else if !(in_start_period && self.status == "starting") {
            self.failing_streak += 1;
            if self.failing_streak >= retries {
                self.status = "unhealthy".to_string();
            }
        }
        self.log.push(result);
        let extra = self.log.len().saturating_sub(MAX_LOG);
        self.log.drain(..extra);
    }
}

/// When the json-file log is rotated (`--log-opt max-size=…,max-file=…`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRotation {
    /// Rotate once the file holds this many bytes; 0 never rotates.
    pub max_size: u64,
    /// Files kept, the current one included (`<log>`, `<log>.1`, …); 0 counts as 1.
    pub max_file: u32,
}

impl LogRotation {
    /// Whether a file of `size` bytes must be rotated before the next write (Docker checks
    /// before writing, so a file may exceed `max_size` by one batch).
    pub fn due(&self, size: u64) -> bool {
        self.max_size > 0 && size >= self.max_size
    }

    /// The renames of a rotation, oldest first, for the log at `path`: `(from, to)`;
    /// with `max_file` ≤ 1 there are none (the file is truncated instead).
    pub fn renames(&self, path: &Path) -> Vec<(PathBuf, PathBuf)> {
        let keep = self.max_file.max(1);
        let mut out = Vec::new();
        for n in (1..keep).rev() {
            let from = if n == 1 {
                path.to_path_buf()
            } else {
                rotated_path(path, n - 1)
            };
            out.push((from, rotated_path(path, n)));
        }
        out
    }
}

/// `<log>.<n>`: the `n`-th newest rotated file of the log at `path`.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// 1 for stdout, 2 for stderr.
    pub stream: u8,
    /// The text, with its `\n` if it was a complete line.
    pub data: Vec<u8>,
    /// RFC 3339 time as written (for `--since`, `--timestamps`).
    pub time: String,
}

/// One reading of a container's counters; missing files read as 0 or empty.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSample {
    /// Bytes charged to the group (`memory.usage_in_bytes`).
    pub memory_usage: u64,
    /// Peak of that (`memory.max_usage_in_bytes`).
    pub memory_max_usage: u64,
    /// The limit, capped at the host's memory (`memory.limit_in_bytes`).
    pub memory_limit: u64,
    /// OOM events counted by the group (`memory.failcnt`).
    pub memory_failcnt: u64,
    /// `memory.stat`.
    pub memory_stat: BTreeMap<String, u64>,
    /// CPU time of the group, ns (`cpuacct.usage`).
    pub cpu_total_ns: u64,
    /// Per CPU, ns (`cpuacct.usage_percpu`).
    pub cpu_percpu_ns: Vec<u64>,
    /// Kernel-mode time, ns.
    pub cpu_kernel_ns: u64,
    /// User-mode time, ns.
    pub cpu_user_ns: u64,
    /// `cpu.stat`: nr_periods, nr_throttled, throttled_time.
    pub cpu_throttling: BTreeMap<String, u64>,
    /// Host CPU time since boot, ns (from /proc/stat).
    pub system_cpu_ns: u64,
    /// Online CPUs.
    pub online_cpus: u32,
    /// Tasks in the group (`pids.current`).
    pub pids_current: u64,
    /// `pids.max`; `None` for `max`.
    pub pids_limit: Option<u64>,
}

/// What an attach stream delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachEvent {
    /// Output: `stream` 1 (stdout) or 2 (stderr).
    Output {
        /// Stream number.
        stream: u8,
        /// The bytes.
        #[serde(with = "bytes_as_vec")]
        data: Bytes,
    },
    /// The container exited; nothing follows.
    Exit(Exit),
}

/// [`Bytes`] on the wire as a `Vec<u8>` would be (as [`crate::shim::AttachOutput`] sends
/// output), without the `serde` feature of `bytes`: turning that on changes the features
/// of `serde` itself and rebuilds every crate that depends on it.
mod bytes_as_vec {
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(data: &Bytes, serializer: S) -> Result<S::Ok, S::Error> {
        data.as_ref().serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Bytes::from)
    }
}

/// Split an `ExtraHosts` entry (`name:ip` or `name=ip`) at its first separator.
pub fn split_extra_host(entry: &str) -> Option<(&str, &str)> {
    let at = entry.find([':', '='])?;
    let (name, ip) = (&entry[..at], &entry[at + 1..]);
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    (!name.is_empty() && !ip.is_empty()).then_some((name, ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `shim.json`'s `options` as the agent wrote it before these types moved here
    /// (captured from `wharf_node::runtime::config::ShimOptions`): a shim started by an
    /// older agent must still read it, and a newer agent must write the same.
    const OLD_SHIM_OPTIONS: &str = r#"{"log":{"max_size":1024,"max_file":3},"health":{"args":["/bin/sh","-c","true"],"interval_ns":1,"timeout_ns":2,"start_period_ns":3,"start_interval_ns":4,"retries":5},"init":true,"netns":{"Join":"/proc/7/ns/net"}}"#;
    const OLD_DEFAULT_SHIM_OPTIONS: &str =
        r#"{"log":{"max_size":0,"max_file":0},"health":null,"init":false,"netns":"Own"}"#;
    /// `health.json` as the shim wrote it before the move.
    const OLD_HEALTH: &str = r#"{"Status":"starting","FailingStreak":1,"Log":[{"Start":"s","End":"e","ExitCode":1,"Output":"out"}]}"#;

    fn options() -> ShimOptions {
        ShimOptions {
            log: LogRotation {
                max_size: 1024,
                max_file: 3,
            },
            health: Some(HealthSpec {
                args: vec!["/bin/sh".into(), "-c".into(), "true".into()],
                interval_ns: 1,
                timeout_ns: 2,
                start_period_ns: 3,
                start_interval_ns: 4,
                retries: 5,
            }),
            init: true,
            netns: NetnsMode::Join(PathBuf::from("/proc/7/ns/net")),
        }
    }

    #[test]
    fn shim_options_json_is_unchanged() {
        assert_eq!(serde_json::to_string(&options()).unwrap(), OLD_SHIM_OPTIONS);
        assert_eq!(
            serde_json::from_str::<ShimOptions>(OLD_SHIM_OPTIONS).unwrap(),
            options()
        );
        assert_eq!(
            serde_json::to_string(&ShimOptions::default()).unwrap(),
            OLD_DEFAULT_SHIM_OPTIONS
        );
        assert_eq!(
            serde_json::to_string(&NetnsMode::Host).unwrap(),
            r#""Host""#
        );
        // Files of agents older than `options` have none of its fields.
        assert_eq!(
            serde_json::from_str::<ShimOptions>("{}").unwrap(),
            ShimOptions::default()
        );
    }

    #[test]
    fn health_json_is_unchanged() {
        let mut state = HealthState::default();
        let result = HealthResult {
            start: "s".into(),
            end: "e".into(),
            exit_code: 1,
            output: "out".into(),
        };
        state.record(result, false, 3);
        assert_eq!(serde_json::to_string(&state).unwrap(), OLD_HEALTH);
        assert_eq!(
            serde_json::from_str::<HealthState>(OLD_HEALTH).unwrap(),
            state
        );
    }

    #[test]
    fn rotation_renames_oldest_first() {
        let rot = LogRotation {
            max_size: 10,
            max_file: 3,
        };
        let log = Path::new("/x/c-json.log");
        assert_eq!(
            rot.renames(log),
            vec![
                (rotated_path(log, 1), rotated_path(log, 2)),
                (log.to_path_buf(), rotated_path(log, 1)),
            ]
        );
        assert_eq!(rotated_path(log, 2), Path::new("/x/c-json.log.2"));
        assert!(LogRotation::default().renames(log).is_empty());
        assert!(rot.due(10) && !rot.due(9) && !LogRotation::default().due(u64::MAX));
    }

    #[test]
    fn extra_hosts_split_at_the_first_separator() {
        assert_eq!(split_extra_host("db:10.0.0.2"), Some(("db", "10.0.0.2")));
        assert_eq!(split_extra_host("db=10.0.0.2"), Some(("db", "10.0.0.2")));
        assert_eq!(split_extra_host("v6:[::1]"), Some(("v6", "::1")));
        assert_eq!(split_extra_host("db:"), None);
        assert_eq!(split_extra_host("db"), None);
    }

    #[test]
    fn attach_events_round_trip_through_the_codec() {
        let events = vec![
            AttachEvent::Output {
                stream: 2,
                data: Bytes::from_static(b"err\n"),
            },
            AttachEvent::Exit(Exit {
                code: 137,
                oom_killed: true,
                started_at_ns: 1,
                finished_at_ns: 2,
            }),
        ];
        let bytes = crate::codec::encode(&events).unwrap();
        assert_eq!(
            crate::codec::decode::<Vec<AttachEvent>>(&bytes).unwrap(),
            events
        );
        // Output is framed as the shim's own attach output is.
        let shim = crate::shim::AttachOutput::Output {
            stream: 2,
            data: b"err\n".to_vec(),
        };
        assert_eq!(
            crate::codec::encode(&events[0]).unwrap(),
            crate::codec::encode(&shim).unwrap()
        );
    }
}
