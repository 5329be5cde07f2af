//! Bytes between blocking code and async bodies: a `Write` (or a local file) whose bytes
//! become a stream of chunks.

use bytes::Bytes;
use std::io::{self, Read, Write};
use tokio::sync::mpsc;
use tracing::warn;

/// Bytes produced or consumed by a blocking task, chunk by chunk; an `Err` ends the stream
/// as failed.
pub type ByteStream = mpsc::Receiver<Result<Bytes, io::Error>>;

/// Size of the chunks a [`ChunkWriter`] sends.
const CHUNK: usize = 256 * 1024;

/// A `Write` that sends its bytes as chunks to async code; blocks when the reader lags.
pub(super) struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Run `f` with a writer whose bytes become the returned stream; a failure ends the stream
/// with an error (the client sees a broken transfer, never a silently short archive).
pub(super) fn stream_from_blocking<F>(what: &'static str, f: F) -> ByteStream
where
    F: FnOnce(&mut ChunkWriter) -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut w = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let res = f(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
        if let Err(e) = res {
            warn!(error = %e, "{what} failed mid-stream");
            let _ = tx.blocking_send(Err(io::Error::other(e)));
        }
    });
    rx
}

/// The bytes of `reader` (a local spool file) as a stream, read on a blocking thread; a
/// read error ends the stream with an error.
pub fn stream_from_reader<R: Read + Send + 'static>(
    what: &'static str,
    mut reader: R,
) -> ByteStream {
    stream_from_blocking(what, move |w| {
        io::copy(&mut reader, w)
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}
