//! Reading a container's json-file log back for `docker logs`, once ([`read_log_entries`])
//! or following it as it grows ([`LogFollower::next_batch`], for `docker logs -f`).

use serde::Deserialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;
pub use wharf_protocol::runtime::LogEntry;
use wharf_protocol::shim::{STDERR, STDOUT};

/// How often a follower looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The file could not be opened or read.
    #[error("read log {path}: {source}")]
    Io {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct Line {
    log: String,
    stream: String,
    #[serde(default)]
    time: String,
}

/// Parse one line of the log; `None` for a line that is not a log entry (skipped, as a
/// torn last line after a crash would be).
pub fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let l: Line = serde_json::from_slice(line).ok()?;
    let stream = match l.stream.as_str() {
        "stderr" => STDERR,
        _ => STDOUT,
    };
    Some(LogEntry {
        stream,
        data: l.log.into_bytes(),
        time: l.time,
    })
}

/// All entries of the log at `path` (none if it does not exist yet).
pub fn read_log_entries(path: &Path) -> Result<Vec<LogEntry>, LogError> {
    let mut follower = LogFollower::open(path, 0)?;
    follower.read_available()
}

/// The entries of the rotated files of the log at `path` (`<log>.N` … `<log>.1`), oldest
/// first; `docker logs` shows them before the current file's.
pub fn read_rotated_entries(path: &Path) -> Result<Vec<LogEntry>, LogError> {
    let mut n = 1;
    while crate::runtime::jsonlog::rotated_path(path, n).exists() {
        n += 1;
    }
    let mut out = Vec::new();
    for k in (1..n).rev() {
        out.extend(read_log_entries(&crate::runtime::jsonlog::rotated_path(
            path, k,
        ))?);
    }
    Ok(out)
}

/// Reads a log incrementally: each call returns the entries completed since the last.
pub struct LogFollower {
    path: PathBuf,
    file: Option<File>,
    offset: u64,
    partial: Vec<u8>,
}

impl LogFollower {
    /// Follow the log at `path` from byte `offset` (0 for the start). The file need not
    /// exist yet.
    pub fn open(path: &Path, offset: u64) -> Result<LogFollower, LogError> {
        let mut f = LogFollower {
            path: path.to_path_buf(),
            file: None,
            offset,
            partial: Vec::new(),
        };
        f.ensure_open()?;
        Ok(f)
    }

    /// Byte offset up to which entries have been returned.
    pub fn offset(&self) -> u64 {
        self.offset - self.partial.len() as u64
    }

    fn ensure_open(&mut self) -> Result<(), LogError> {
        if self.file.is_some() {
            return Ok(());
        }
        match File::open(&self.path) {
            Ok(mut file) => {
                file.seek(SeekFrom::Start(self.offset))
                    .map_err(|source| self.io(source))?;
                self.file = Some(file);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(self.io(source)),
        }
    }

    fn io(&self, source: std::io::Error) -> LogError {
        LogError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The complete entries written since the last call (possibly none).
    pub fn read_available(&mut self) -> Result<Vec<LogEntry>, LogError> {
        self.ensure_open()?;
        let Some(file) = self.file.as_mut() else {
            return Ok(Vec::new());
        };
        let mut buf = Vec::new();
        let n = file.read_to_end(&mut buf).map_err(|source| LogError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        if n == 0 && self.rotated() {
            // The shim rotated the log: what we hold is complete; go on with the new file.
            self.file = None;
            self.offset = 0;
            self.partial.clear();
            return self.read_available();
        }
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            if let Some(entry) = parse_line(&self.partial[start..start + i]) {
                out.push(entry);
            }
            start += i + 1;
        }
        self.partial.drain(..start);
        Ok(out)
    }

    /// Whether the file at the path is no longer the one being read.
    fn rotated(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Some(file) = self.file.as_ref() else {
            return false;
        };
        match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(open), Ok(now)) => open.ino() != now.ino() || open.dev() != now.dev(),
            _ => false,
        }
    }

    /// Wait for new entries: returns the next non-empty batch, or `None` once `stop` has
    /// become true (or its sender is gone) and everything written before has been
    /// returned. Serves `docker logs -f`: the agent sets `stop` when the container exits
    /// or the client goes away.
    pub async fn next_batch(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Vec<LogEntry>>, LogError> {
        loop {
            let stopping = *stop.borrow_and_update();
            let batch = self.read_available()?;
            if !batch.is_empty() {
                return Ok(Some(batch));
            }
            if stopping {
                return Ok(None);
            }
            tokio::select! {
                changed = stop.changed() => {
                    if changed.is_err() {
                        // The sender is gone: drain once more, then end.
                        let batch = self.read_available()?;
                        return Ok(if batch.is_empty() { None } else { Some(batch) });
                    }
                }
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_entries_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-json.log");
        assert!(read_log_entries(&path).unwrap().is_empty());
        std::fs::write(
            &path,
            "{\"log\":\"a\\n\",\"stream\":\"stdout\",\"time\":\"t1\"}\nnot json\n\
             {\"log\":\"b\",\"stream\":\"stderr\",\"time\":\"t2\"}\n{\"log\":\"torn",
        )
        .unwrap();
        let entries = read_log_entries(&path).unwrap();
        assert_eq!(
            entries,
            vec![
                LogEntry {
                    stream: 1,
                    data: b"a\n".to_vec(),
                    time: "t1".into()
                },
                LogEntry {
                    stream: 2,
                    data: b"b".to_vec(),
                    time: "t2".into()
                },
            ]
        );
    }

    #[test]
    fn rotated_files_come_first_and_followers_move_on() {
        use crate::runtime::jsonlog::{rotated_path, JsonLogWriter, LogRotation};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r-json.log");
        let rot = LogRotation {
            max_size: 120,
            max_file: 10,
        };
        let mut w = JsonLogWriter::open_rotating(&path, rot).unwrap();
        let mut follower = LogFollower::open(&path, 0).unwrap();
        let mut followed = Vec::new();
        let now = chrono::Utc::now();
        for i in 0..12 {
            w.write(1, format!("n{i}\n").as_bytes(), now).unwrap();
            followed.extend(follower.read_available().unwrap());
        }
        assert!(rotated_path(&path, 2).exists());
        let mut all = read_rotated_entries(&path).unwrap();
        all.extend(read_log_entries(&path).unwrap());
        let text = |v: &[LogEntry]| -> Vec<String> {
            v.iter()
                .map(|e| String::from_utf8_lossy(&e.data).trim().to_string())
                .collect()
        };
        let want: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        assert_eq!(text(&all), want);
        assert_eq!(text(&followed), want, "a follower reads across rotations");
    }

    #[tokio::test]
    async fn follow_sees_appends_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f-json.log");
        let mut follower = LogFollower::open(&path, 0).unwrap();
        let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
        let writer_path = path.clone();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&writer_path)
                .unwrap();
            f.write_all(
                b"{\"log\":\"one\\n\",\"stream\":\"stdout\",\"time\":\"t\"}\n{\"log\":\"tw",
            )
            .unwrap();
            tokio::time::sleep(Duration::from_millis(150)).await;
            f.write_all(b"o\\n\",\"stream\":\"stderr\",\"time\":\"t\"}\n")
                .unwrap();
            stop_tx.send(true).unwrap();
        });
        let mut got = Vec::new();
        while let Some(batch) = follower.next_batch(&mut stop).await.unwrap() {
            got.extend(batch);
        }
        writer.await.unwrap();
        let texts: Vec<&[u8]> = got.iter().map(|e| e.data.as_slice()).collect();
        assert_eq!(texts, [&b"one\n"[..], &b"two\n"[..]]);
        assert_eq!(got[1].stream, 2);
        assert_eq!(follower.offset(), std::fs::metadata(&path).unwrap().len());
    }
}
