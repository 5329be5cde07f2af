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
use std::path::Path;
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
}

impl JsonLogWriter {
    /// Open (create or append to) the log at `path`.
    pub fn open(path: &Path) -> std::io::Result<JsonLogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonLogWriter {
            file,
            splitters: Default::default(),
        })
    }

    fn splitter(&mut self, stream: u8) -> &mut LineSplitter {
        &mut self.splitters[usize::from(stream == STDERR)]
    }

    /// Log a chunk of `stream` output received at `now`.
    pub fn write(&mut self, stream: u8, data: &[u8], now: DateTime<Utc>) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for entry in self.splitter(stream).push(data) {
            buf.extend(format_entry(stream, &entry, now));
        }
        if buf.is_empty() {
            return Ok(());
        }
        self.file.write_all(&buf)
    }

    /// Write out unfinished lines of `stream`; called when the stream ends.
    pub fn finish(&mut self, stream: u8, now: DateTime<Utc>) -> std::io::Result<()> {
        match self.splitter(stream).flush() {
            Some(rest) => self.file.write_all(&format_entry(stream, &rest, now)),
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
}
