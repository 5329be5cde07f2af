//! Agent requests about files: a container's log (`docker logs`), paths of its root
//! filesystem (`docker cp`), and a build's context (`docker build`).
//!
//! ```text
//!  controller ──Logs{query}──► agent: reads <log>.N … <log>, tail, since/until, streams
//!  controller ◄──Done, Item(LogEntries)… End──  (follow: until the controller ends its side)
//!  controller ──Stat / Get{path}──► agent ◄── rootfs (or the container's /etc file)
//!  controller ◄──Stat, Item(Bytes)… End──
//!  controller ──Put{path}, Item(Bytes)… End──► agent: spool, then extract ──► Done
//!  controller ──ContextPut{build}, Item(Bytes)… End──► agent: unpack into
//!             DATA_DIR/build/<build>/context, read the Dockerfile, .dockerignore ──► Dockerfile
//!  controller ──ContextCollect{build, spec}──► agent ◄── Collected, Item(Bytes)… End
//!  controller ──ContextRemove{build}──► agent (also when the connection closes) ──► Done
//! ```
//!
//! A `docker build` context lives on the agent that runs the build's containers: the
//! controller streams the client's upload through and only ever sees the Dockerfile's
//! text and the collected `COPY` sources.
//!
//! The reader's filtering ([`LogQuery`]: streams, tail, since/until) happens on the agent,
//! so a `--tail 10` of a big log does not cross the wire whole; the rendering for HTTP
//! (stdcopy frames, timestamps) stays with the controller. This module is pure.

use crate::archive::ExtractOptions;
use crate::runtime::LogEntry;
use crate::wire::ITEM_BYTES;
use crate::ContainerId;
use serde::{Deserialize, Serialize};

/// A request about a container's files or a build's context (see
/// [`super::AgentRequest::Files`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilesRequest {
    /// Read the container's json-file log, rotated files first. Answer: `Done` once the
    /// log has been read up to now (or `Failed` when it could not be), then the entries
    /// `query` keeps as `LogEntries` items. Without `follow` the stream ends after them;
    /// with it, entries written later follow until the controller ends its own stream
    /// (the container stopped), then what was written up to then, then the end.
    Logs {
        /// The container.
        id: ContainerId,
        /// Which entries.
        query: LogQuery,
    },
    /// Stat a path of the container's root filesystem (the container's `/etc/hostname`,
    /// `/etc/hosts`, `/etc/resolv.conf` once it has run). Answer: `Stat`; fails
    /// `NotFound` for a path that does not exist.
    Stat {
        /// The container.
        id: ContainerId,
        /// The path as the client gave it.
        path: String,
    },
    /// A path of the container as a tar. Answer: `Stat` (failures as for `Stat`), then the
    /// tar as `Bytes` items and the end; a failure part way aborts the stream.
    Get {
        /// The container.
        id: ContainerId,
        /// The path as the client gave it.
        path: String,
    },
    /// Extract a tar into the directory `path` of the container. The tar comes as `Bytes`
    /// items; the agent spools them and extracts only once the stream has ended (the
    /// controller ends it once nothing can race the extraction, e.g. a start), so a body
    /// that breaks off (an aborted stream) writes nothing. Answer, after the stream:
    /// `Done`; fails `NotFound` (no such path), `InvalidInput` (not a directory, not a
    /// tar, a directory/non-directory clash: the message is Docker's), `Conflict` (the
    /// path is on a read-only filesystem).
    Put {
        /// The container.
        id: ContainerId,
        /// The directory to extract into, as the client gave it.
        path: String,
        /// Overwrite rules and ownership.
        options: ExtractOptions,
    },
    /// Whether `path` of the container's root filesystem is a directory, symlinks
    /// followed inside it (a build's `COPY` destination, `WORKDIR`). Answer: `IsDir`.
    IsDir {
        /// The container.
        id: ContainerId,
        /// The path, relative to the root or absolute.
        path: String,
    },
    /// Collect a build's `COPY --from` sources from the container's root filesystem (a
    /// container that never ran, on the stage's or image's filesystem). Answer:
    /// `Collected`, then the tar of the entries named under the destination as `Bytes`
    /// items and the end; fails `InvalidInput` for sources that are missing, climb out
    /// or do not fit the destination (the message is Docker's).
    Collect {
        /// The container.
        id: ContainerId,
        /// What to copy.
        spec: crate::archive::CopySpec,
    },
    /// Unpack a build context: the tar (plain, gzip or zstd) comes as `Bytes` items and is
    /// unpacked as it arrives under the agent's directory for `build` (names confined,
    /// links resolved inside, devices skipped), then the Dockerfile `dockerfile` is read
    /// inside it and `.dockerignore` applied. Answer, after the stream: the Dockerfile's
    /// text as `Dockerfile`; fails `InvalidInput` for a bad `build` ([`check_build_id`]),
    /// a tar that is not valid, a missing or oversized Dockerfile, a bad `.dockerignore`
    /// (the messages are those `docker build` shows), `Conflict` when `build` exists. A
    /// stream that breaks off leaves nothing. The context lives until `ContextRemove` or
    /// until the connection that put it closes.
    ContextPut {
        /// The build's ID, chosen by the controller ([`check_build_id`]).
        build: String,
        /// The Dockerfile's path in the context.
        dockerfile: String,
    },
    /// Collect a build's `COPY`/`ADD` sources from the context of `build`, as `Collect`
    /// does from a container's filesystem. Answer: `Collected`, then the tar as `Bytes`
    /// items and the end; fails `NotFound` for an unknown build, `InvalidInput` as
    /// `Collect` does.
    ContextCollect {
        /// The build's ID.
        build: String,
        /// What to copy.
        spec: crate::archive::CopySpec,
    },
    /// Remove the context of `build`. Answer: `Done`, also for a build without one.
    ContextRemove {
        /// The build's ID.
        build: String,
    },
}

/// Longest build ID a [`FilesRequest::ContextPut`] accepts.
pub const MAX_BUILD_ID: usize = 64;

/// Longest Dockerfile a build reads, in bytes (Docker has no limit; this one keeps a
/// hostile context from filling memory).
pub const MAX_DOCKERFILE: usize = 2 << 20;

/// Check a build ID before it names a directory: 1 to [`MAX_BUILD_ID`] lowercase hex
/// digits. Pure; the agent calls it on every context request.
pub fn check_build_id(build: &str) -> Result<(), String> {
    let hex = build
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if build.is_empty() || build.len() > MAX_BUILD_ID || !hex {
        let shown: String = build.chars().take(MAX_BUILD_ID).collect();
        return Err(format!(
            "invalid build id {shown:?}: want 1 to {MAX_BUILD_ID} lowercase hex digits"
        ));
    }
    Ok(())
}

/// What a [`FilesRequest`] answers beyond `Done`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilesResponse {
    /// The stat of a container path.
    Stat(crate::archive::PathStat),
    /// Whether the path is a directory.
    IsDir(bool),
    /// Sources collected; the tar follows as items.
    Collected {
        /// The content hash the build cache keys on (`file:<hex>`, `dir:<hex>`, ...).
        hash: String,
    },
    /// A build context was unpacked: its Dockerfile's text.
    Dockerfile(String),
}

/// Which log entries a [`FilesRequest::Logs`] sends (`docker logs` options that select
/// entries; the ones that only change how they look stay with the controller).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogQuery {
    /// Entries of stdout.
    pub stdout: bool,
    /// Entries of stderr.
    pub stderr: bool,
    /// Only the last `n` entries of the log as it is when read (counted before the other
    /// filters, as `docker logs --tail` of wharf always did); `None` for all.
    pub tail: Option<u64>,
    /// Entries before this time (ns since the epoch) are left out; 0 for none.
    pub since_ns: i64,
    /// Entries after this time (ns since the epoch) are left out; 0 for none.
    pub until_ns: i64,
    /// Go on with the entries written later.
    pub follow: bool,
}

impl LogQuery {
    /// Whether `entry` is sent: its stream asked for, its time within since/until (an
    /// entry whose time does not parse counts as time 0).
    pub fn keeps(&self, entry: &LogEntry) -> bool {
        if (entry.stream == 1 && !self.stdout) || (entry.stream == 2 && !self.stderr) {
            return false;
        }
        if self.since_ns != 0 || self.until_ns != 0 {
            let t = chrono::DateTime::parse_from_rfc3339(&entry.time)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or(0);
            if (self.since_ns != 0 && t < self.since_ns)
                || (self.until_ns != 0 && t > self.until_ns)
            {
                return false;
            }
        }
        true
    }

    /// The entries of the log read so far that are sent: the tail of `entries`, then
    /// those [`LogQuery::keeps`].
    pub fn select(&self, mut entries: Vec<LogEntry>) -> Vec<LogEntry> {
        if let Some(n) = self.tail {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            let skip = entries.len().saturating_sub(n);
            entries.drain(..skip);
        }
        entries.retain(|e| self.keeps(e));
        entries
    }
}

/// Split `entries` into the batches of `LogEntries` items: each batch carries at most
/// [`ITEM_BYTES`] of data, so a frame stays under the limit whatever the log holds (an
/// entry larger than that, which the shim never writes, goes in pieces). Pure.
pub fn log_batches(entries: Vec<LogEntry>) -> Vec<Vec<LogEntry>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut size = 0;
    for e in entries {
        let pieces: Vec<LogEntry> = if e.data.len() + e.time.len() <= ITEM_BYTES {
            vec![e]
        } else {
            e.data
                .chunks(ITEM_BYTES / 2)
                .map(|c| LogEntry {
                    stream: e.stream,
                    data: c.to_vec(),
                    time: e.time.clone(),
                })
                .collect()
        };
        for p in pieces {
            let n = p.data.len() + p.time.len();
            if !batch.is_empty() && size + n > ITEM_BYTES {
                out.push(std::mem::take(&mut batch));
                size = 0;
            }
            size += n;
            batch.push(p);
        }
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: u8, data: &str, time: &str) -> LogEntry {
        LogEntry {
            stream,
            data: data.as_bytes().to_vec(),
            time: time.into(),
        }
    }

    #[test]
    fn tail_counts_every_entry_before_the_filters() {
        let log = vec![
            entry(1, "a", "2024-01-01T00:00:01Z"),
            entry(2, "b", "2024-01-01T00:00:02Z"),
            entry(1, "c", "2024-01-01T00:00:03Z"),
            entry(2, "d", "2024-01-01T00:00:04Z"),
        ];
        let q = LogQuery {
            stdout: true,
            tail: Some(3),
            ..LogQuery::default()
        };
        assert_eq!(
            q.select(log.clone()),
            vec![entry(1, "c", "2024-01-01T00:00:03Z")]
        );
        let q = LogQuery {
            stdout: true,
            stderr: true,
            since_ns: 2_000_000_000 + 1_704_067_200_000_000_000,
            until_ns: 3_000_000_000 + 1_704_067_200_000_000_000,
            ..LogQuery::default()
        };
        assert_eq!(q.select(log.clone()), log[1..3].to_vec());
        let q = LogQuery {
            stdout: true,
            stderr: true,
            tail: Some(0),
            ..LogQuery::default()
        };
        assert!(q.select(log).is_empty());
    }

    #[test]
    fn batches_stay_under_the_item_size() {
        let big = "x".repeat(ITEM_BYTES + 10);
        let small = "y".repeat(ITEM_BYTES / 2);
        let batches = log_batches(vec![
            entry(1, &small, "t"),
            entry(1, &small, "t"),
            entry(2, &big, "t"),
        ]);
        for b in &batches {
            assert!(b.iter().map(|e| e.data.len() + e.time.len()).sum::<usize>() <= ITEM_BYTES);
        }
        let all: Vec<u8> = batches
            .iter()
            .flatten()
            .flat_map(|e| e.data.clone())
            .collect();
        assert_eq!(all.len(), 2 * small.len() + big.len());
        assert_eq!(batches.iter().flatten().count(), 5);
        assert!(log_batches(Vec::new()).is_empty());
    }

    #[test]
    fn requests_round_trip_through_the_codec() {
        use crate::codec::{decode, encode};
        let r = FilesRequest::Logs {
            id: format!("{:064x}", 7).parse().unwrap(),
            query: LogQuery {
                stdout: true,
                tail: Some(10),
                follow: true,
                ..LogQuery::default()
            },
        };
        assert_eq!(decode::<FilesRequest>(&encode(&r).unwrap()).unwrap(), r);
    }

    #[test]
    fn build_ids_are_short_lowercase_hex() {
        assert!(check_build_id("0123456789abcdef").is_ok());
        assert!(check_build_id(&"a".repeat(MAX_BUILD_ID)).is_ok());
        for bad in ["", "../x", "ABCDEF", "ab/cd", "ab cd", "."] {
            assert!(check_build_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_build_id(&"a".repeat(MAX_BUILD_ID + 1)).is_err());
    }

    /// The context variants are pinned: they went at the end of the enums, after
    /// `Collect` (5) and `Collected` (2).
    #[test]
    fn golden_bytes_of_the_context_messages() {
        use crate::agent::{AgentRequest, AgentResponse};
        use crate::codec::encode;
        let put = AgentRequest::Files(FilesRequest::ContextPut {
            build: "ab".into(),
            dockerfile: "D".into(),
        });
        assert_eq!(
            hex::encode(encode(&put).unwrap()),
            "01\
             05000000\
             06000000\
             0200000000000000\
             6162\
             0100000000000000\
             44"
        );
        let remove = AgentRequest::Files(FilesRequest::ContextRemove { build: "ab".into() });
        assert_eq!(
            hex::encode(encode(&remove).unwrap()),
            "01050000000800000002000000000000006162"
        );
        let answer = AgentResponse::Files(FilesResponse::Dockerfile("F".into()));
        assert_eq!(
            hex::encode(encode(&answer).unwrap()),
            "01\
             07000000\
             03000000\
             0100000000000000\
             46"
        );
    }
}
