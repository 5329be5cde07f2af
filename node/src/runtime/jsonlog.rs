//! Docker's json-file log as the shim writes it: one JSON object per line,
//! `{"log":"<text incl. \n>","stream":"stdout","time":"<RFC3339Nano UTC>"}`.
//!
//! Output is split into lines as Docker's copier does: each complete line is one entry;
//! a line longer than [`MAX_LINE`] is written in pieces without `\n`, and an unfinished
//! line is flushed as its own entry when the stream ends. Splitting and formatting are
//! pure ([`LineSplitter`], [`format_entry`]); [`JsonLogWriter`] only appends.

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
pub use wharf_protocol::runtime::{rotated_path, LogRotation};
use wharf_protocol::shim::STDERR;

/// Longest piece of a line kept in memory before it is written as a partial entry
/// (Docker's copier buffer size).
pub const MAX_LINE: usize = 16 * 1024;

/// Splits a byte stream into log entries.
#[derive(Debug, Default)]
pub struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    /// Feed `data`; returns the entries it completes (lines with their `\n`, or
    /// [`MAX_LINE`]-sized pieces of a longer line).
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let room = MAX_LINE - self.pending.len();
            let take = data.len().min(room);
            match data[..take].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&data[..=i]);
                    out.push(std::mem::take(&mut self.pending));
                    data = &data[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.pending.len() == MAX_LINE {
                        out.push(std::mem::take(&mut self.pending));
                    }
                }
            }
        }
        out
    }

    /// The unfinished line, if any; called when the stream ends.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        if self.pending.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.pending))
        }
    }
}

/// `time` as Go's `time.RFC3339Nano` in UTC: nanoseconds without trailing zeros.
pub fn rfc3339_nano(time: DateTime<Utc>) -> String {
    let base = time.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = time.timestamp_subsec_nanos();
    if nanos == 0 {
        return format!("{base}Z");
    }
    let frac = format!("{nanos:09}");
    format!("{base}.{}Z", frac.trim_end_matches('0'))
}

/// The name Docker gives stream `stream` in its logs.
pub fn stream_name(stream: u8) -> &'static str {
    if stream == STDERR {
        "stderr"
    } else {
        "stdout"
    }
}

#[derive(Serialize)]
struct Line<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// One log line, JSON plus `\n`. Invalid UTF-8 becomes U+FFFD, as Go's encoder does.
pub fn format_entry(stream: u8, data: &[u8], time: DateTime<Utc>) -> Vec<u8> {
    let text = String::from_utf8_lossy(data);
    let line = Line {
        log: &text,
        stream: stream_name(stream),
        time: &rfc3339_nano(time),
    };
    // Serialising a struct of strings into a Vec cannot fail.
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// Appends a container's output to its json-file log.
pub struct JsonLogWriter {
    file: File,
    splitters: [LineSplitter; 2],
    path: PathBuf,
    rotation: LogRotation,
    size: u64,
}

impl JsonLogWriter {
    /// Open (create or append to) the log at `path`, never rotated.
    pub fn open(path: &Path) -> std::io::Result<JsonLogWriter> {
        JsonLogWriter::open_rotating(path, LogRotation::default())
    }

    /// Open (create or append to) the log at `path`, rotated as `rotation` says.
    pub fn open_rotating(path: &Path, rotation: LogRotation) -> std::io::Result<JsonLogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(JsonLogWriter {
            file,
            splitters: Default::default(),
            path: path.to_path_buf(),
            rotation,
            size,
        })
    }

    /// Append `buf`, rotating first if the file is full.
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.rotation.due(self.size) {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let renames = self.rotation.renames(&self.path);
        if renames.is_empty() {
            self.file.set_len(0)?;
        } else {
            for (from, to) in renames {
                match std::fs::rename(&from, &to) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            self.file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }

    fn splitter(&mut self, stream: u8) -> &mut LineSplitter {
        &mut self.splitters[usize::from(stream == STDERR)]
    }

    /// Log a chunk of `stream` output received at `now`.
    pub fn write(&mut self, stream: u8, data: &[u8], now: DateTime<Utc>) -> std::io::Result<()> {
        let entries = self.splitter(stream).push(data);
        if self.rotation.max_size > 0 {
            // Rotation is decided per entry, as Docker does.
            for entry in entries {
                self.append(&format_entry(stream, &entry, now))?;
            }
            return Ok(());
        }
        let mut buf = Vec::new();
        for entry in entries {
            buf.extend(format_entry(stream, &entry, now));
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.append(&buf)
    }

    /// Write out unfinished lines of `stream`; called when the stream ends.
    pub fn finish(&mut self, stream: u8, now: DateTime<Utc>) -> std::io::Result<()> {
        match self.splitter(stream).flush() {
            Some(rest) => self.append(&format_entry(stream, &rest, now)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn lines_are_split_like_docker() {
        let mut s = LineSplitter::default();
        assert_eq!(s.push(b"a\nbc"), vec![b"a\n".to_vec()]);
        assert_eq!(s.push(b"d\n\ne"), vec![b"bcd\n".to_vec(), b"\n".to_vec()]);
        assert_eq!(s.flush(), Some(b"e".to_vec()));
        assert_eq!(s.flush(), None);
        let long = vec![b'x'; MAX_LINE + 3];
        let out = s.push(&long);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(s.flush(), Some(b"xxx".to_vec()));
    }

    #[test]
    fn times_are_rfc3339_nano() {
        let t = Utc.timestamp_opt(1_700_000_000, 123_450_000).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12345Z");
        let t = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20Z");
        let t = Utc.timestamp_opt(1_700_000_000, 7).unwrap();
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.000000007Z");
    }

    #[test]
    fn entries_are_docker_json() {
        let t = Utc.timestamp_opt(1_700_000_000, 5_000).unwrap();
        let line = format_entry(1, b"hi \"there\"\n", t);
        assert_eq!(
            String::from_utf8(line).unwrap(),
            "{\"log\":\"hi \\\"there\\\"\\n\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20.000005Z\"}\n"
        );
        let line = format_entry(2, b"\xff\n", t);
        assert!(String::from_utf8(line)
            .unwrap()
            .starts_with("{\"log\":\"\u{fffd}\\n\",\"stream\":\"stderr\""));
    }

    #[test]
    fn rotation_keeps_max_file_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let rot = LogRotation {
            max_size: 100,
            max_file: 3,
        };
        assert_eq!(
            rot.renames(&path),
            vec![
                (rotated_path(&path, 1), rotated_path(&path, 2)),
                (path.clone(), rotated_path(&path, 1)),
            ]
        );
        let t = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
        let mut w = JsonLogWriter::open_rotating(&path, rot).unwrap();
        for i in 0..20 {
            w.write(1, format!("line {i}\n").as_bytes(), t).unwrap();
        }
        assert!(rotated_path(&path, 2).exists());
        assert!(!rotated_path(&path, 3).exists());
        assert!(std::fs::metadata(&path).unwrap().len() < 200);
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.contains("line 19"), "{last}");
        let mut one = JsonLogWriter::open_rotating(
            &dir.path().join("d-json.log"),
            LogRotation {
                max_size: 10,
                max_file: 1,
            },
        )
        .unwrap();
        one.write(1, b"a\n", t).unwrap();
        one.write(1, b"b\n", t).unwrap();
        let only = std::fs::read_to_string(dir.path().join("d-json.log")).unwrap();
        assert!(
            only.contains("\"b\\n\"") && !only.contains("\"a\\n\""),
            "{only}"
        );
    }
}
