//! Framing of the agent protocol: one connection per agent carries many calls at once.
//!
//! A controller opens a call with a [`FrameBody::Request`]; the agent answers it with
//! exactly one [`FrameBody::Response`]. Around that, either side may stream
//! [`StreamItem`]s on the call (a `docker load` body to the agent, attach output from it),
//! each direction closed by [`FrameBody::End`] (or [`FrameBody::Abort`] with a failure).
//! A sender may have at most [`WINDOW`] items of a call unacknowledged; the receiver
//! returns [`FrameBody::Credit`] as its consumer takes them, so one slow stream holds up
//! neither the others nor the connection, and nothing buffers without bound.
//!
//! ```text
//!  controller                                    agent
//!    | -- Hello{version} (call 0) ------------->   |
//!    | <------------- Hello{version} (call 0) --   |
//!    | -- Request(Load) (call 7) -------------->   |   upload: items, then End
//!    | -- Item(Bytes) / Item(Bytes) / End ----->   |
//!    | <------------------------ Credit(8) -----   |
//!    | <------------ Response(Loaded) (call 7)   |   one response per call
//!    | -- Request(Attach) (call 9) ------------>   |   download: response, then items
//!    | <------ Response(Ok), Item(Output)... ---   |
//!    | <---------------------- Event(..) (0) ---   |   what the agent reports unasked
//! ```
//!
//! On the wire every frame is a `u32` big-endian length and then the bytes of
//! [`crate::codec::encode`] of a [`Frame`]; the in-process agent of `wharf up` goes through
//! the same bytes. This module is pure: [`encode_frame`] and [`FrameReader`] turn frames
//! into bytes and back, and the drivers (node's server, the controller's client) do the
//! reading and writing.

use crate::agent::{AgentEvent, AgentFailure, AgentRequest, AgentResponse};
use crate::codec::{self, CodecError};
use serde::{Deserialize, Serialize};

/// The agent protocol version this build speaks; both sides send it in `Hello` and
/// refuse a peer of another one. 2: `ContainerRequest::Check` carries the bind sources
/// that must exist.
/// 3: `NetworkRequest::SetDnsTable` and `StopDns`: user networks' resolvers run on the
/// agent; `HostRequest::Containers` lists the host's containers (reconcile);
/// `HostRequest::Fence` sets how the host fences itself.
/// 4: `HostRequest::Beat`, the heartbeat, carries the controller's stretch of its period.
pub const AGENT_PROTOCOL_VERSION: u32 = 4;

/// Largest frame either side accepts (a byte item is at most [`ITEM_BYTES`]).
pub const MAX_FRAME: u32 = 4 * 1024 * 1024;

/// Largest payload a sender puts into one byte item. With [`WINDOW`] this bounds what a
/// call holds in flight (4 MiB each way): small enough that a 500 MiB `docker load` does
/// not leave the allocator holding more after it, large enough that framing costs little.
pub const ITEM_BYTES: usize = 256 * 1024;

/// Items a sender may have in flight on one call and direction before it needs credit.
pub const WINDOW: u32 = 16;

/// A receiver returns credit once it has taken this many items (half the window, so the
/// sender rarely waits).
pub const CREDIT_BATCH: u32 = WINDOW / 2;

/// Number of a call on its connection; chosen by the controller, 0 is the connection's own.
pub type CallId = u64;

/// One frame of the connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The call it belongs to (0: the connection itself: `Hello`, events).
    pub call: CallId,
    /// What it says.
    pub body: FrameBody,
}

/// What a frame says.
// Frames are built and moved one at a time (see `AgentRequest`).
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameBody {
    /// The first frame of each side, on call 0: the protocol version it speaks.
    Hello {
        /// [`AGENT_PROTOCOL_VERSION`] of the sender.
        version: u32,
    },
    /// Controller → agent: open a call.
    Request(Box<AgentRequest>),
    /// Agent → controller: the one answer of a call.
    Response(AgentResponse),
    /// Either way, after the request: one item of the call's stream.
    Item(StreamItem),
    /// Either way: the sender has no more items for this call.
    End,
    /// Either way: the sender's stream failed; nothing more comes from it on this call.
    Abort(AgentFailure),
    /// Either way: the receiver has taken this many more items of the call.
    Credit(u32),
    /// Controller → agent: the caller is gone; stop the call and forget it.
    Cancel,
    /// Agent → controller, on call 0: something happened on the host.
    Event(AgentEvent),
}

/// One item of a call's stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamItem {
    /// Bytes of a body (a tar of `docker load`, `save`, `export`, `cp`); shared, so a
    /// body's chunks are framed without a copy of their own.
    Bytes(#[serde(with = "shared_bytes")] bytes::Bytes),
    /// Output of an attached or exec'd process: stream 1 (stdout) or 2 (stderr).
    Output {
        /// Stream number, as Docker's frames.
        stream: u8,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// The attached or exec'd process ended; nothing follows.
    Exit(crate::shim::Exit),
    /// Bytes for the process' stdin.
    Stdin(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Close the process' stdin (once every stdin attacher has).
    CloseStdin,
    /// Stop sending stdin but leave it open (Docker's detach keys).
    Detach,
    /// Entries of a container's log (`docker logs`), oldest first, a batch of at most
    /// [`ITEM_BYTES`] of data (see [`crate::agent::files::log_batches`]).
    LogEntries(Vec<crate::runtime::LogEntry>),
    /// A container's health status changed: `starting`, `healthy` or `unhealthy`
    /// (`ContainerRequest::WatchHealth`).
    Health(String),
}

/// `bytes::Bytes` on the wire exactly as `serde_bytes` puts a `Vec<u8>` (its length,
/// then its bytes), without the `serde` feature of `bytes` (which rebuilds every crate
/// that depends on `serde`).
mod shared_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &bytes::Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| bytes::Bytes::from(b.into_vec()))
    }
}

/// Why bytes could not be read as frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A frame announced a length over [`MAX_FRAME`].
    #[error("agent frame of {0} bytes is over the limit of {MAX_FRAME}")]
    TooLarge(u32),
    /// A frame's bytes are not a valid message.
    #[error("agent frame: {0}")]
    Codec(#[from] CodecError),
}

/// The bytes of `frame` on the wire: its length, then the codec's bytes.
pub fn encode_frame(frame: &Frame) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_frame_into(&mut out, frame)?;
    Ok(out)
}

/// [`encode_frame`] appended to `out`, with no copy of its own (a writer batches frames
/// in one buffer); on an error `out` is as it was.
pub fn encode_frame_into(out: &mut Vec<u8>, frame: &Frame) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let encoded = codec::encode_into(out, frame);
    let len = out.len() - start - 4;
    match (encoded, u32::try_from(len).ok().filter(|l| *l <= MAX_FRAME)) {
        (Ok(()), Some(len)) => {
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
            Ok(())
        }
        (Err(e), _) => {
            out.truncate(start);
            Err(e.into())
        }
        (Ok(()), None) => {
            out.truncate(start);
            Err(WireError::TooLarge(u32::try_from(len).unwrap_or(u32::MAX)))
        }
    }
}

/// Bytes of buffer a reader or writer keeps once it has nothing pending.
pub const KEEP_IDLE: usize = 256 * 1024;

/// Collects bytes as they arrive and hands out the frames they complete.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    /// A reader with nothing buffered.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Add bytes read from the connection.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer_mut().extend_from_slice(bytes);
    }

    /// The buffer to read the connection's next bytes into (append to it, e.g. with
    /// tokio's `read_buf`): saves [`FrameReader::push`]'s copy.
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        &mut self.buf
    }

    /// Bytes still missing from the frame being received (at least its length prefix):
    /// what to make room for before the next read.
    pub fn wanted(&self) -> usize {
        let pending = &self.buf[self.start..];
        match pending.get(..4) {
            Some(h) => {
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]).min(MAX_FRAME) as usize;
                (4 + len).saturating_sub(pending.len())
            }
            None => 4 - pending.len(),
        }
    }

    /// Let go of a buffer a burst grew, once nothing is pending (call when the connection
    /// looks idle).
    pub fn shrink(&mut self) {
        if self.buffered() == 0 && self.buf.capacity() > KEEP_IDLE {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// The next complete frame, if the bytes so far hold one; an error means the
    /// connection carries something else and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let pending = &self.buf[self.start..];
        let Some(head) = pending.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        let end = 4 + len as usize;
        let Some(body) = pending.get(4..end) else {
            return Ok(None);
        };
        let frame = codec::decode(body)?;
        self.start += end;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(frame))
    }

    /// Bytes received that do not make a whole frame yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// Counts items taken by a receiver and says when to return credit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvWindow(u32);

impl RecvWindow {
    /// One item was taken; returns the credit to send now, if any.
    pub fn taken(&mut self) -> Option<u32> {
        self.0 += 1;
        if self.0 >= CREDIT_BATCH {
            let n = self.0;
            self.0 = 0;
            Some(n)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentResponse, FailureKind};

    fn frames() -> Vec<Frame> {
        vec![
            Frame {
                call: 0,
                body: FrameBody::Hello {
                    version: AGENT_PROTOCOL_VERSION,
                },
            },
            Frame {
                call: 7,
                body: FrameBody::Item(StreamItem::Bytes(vec![1, 2, 3].into())),
            },
            Frame {
                call: 7,
                body: FrameBody::Response(AgentResponse::Done),
            },
            Frame {
                call: 9,
                body: FrameBody::Abort(AgentFailure::new(FailureKind::NotRunning, "gone")),
            },
            Frame {
                call: 9,
                body: FrameBody::Credit(8),
            },
        ]
    }

    #[test]
    fn frames_survive_any_split_of_their_bytes() {
        let all: Vec<u8> = frames()
            .iter()
            .flat_map(|f| encode_frame(f).unwrap())
            .collect();
        for step in [1, 2, 3, 5, 7, 64, all.len()] {
            let mut r = FrameReader::new();
            let mut got = Vec::new();
            for chunk in all.chunks(step) {
                r.push(chunk);
                while let Some(f) = r.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames(), "chunks of {step}");
            assert_eq!(r.buffered(), 0);
        }
    }

    /// The wire format of a frame: changing it breaks agents of other builds, so it needs
    /// a new [`AGENT_PROTOCOL_VERSION`].
    #[test]
    fn golden_bytes_of_frames() {
        let hello = encode_frame(&frames()[0]).unwrap();
        assert_eq!(
            hex::encode(hello),
            "00000011\
             01\
             0000000000000000\
             00000000\
             04000000"
        );
        let item = encode_frame(&frames()[1]).unwrap();
        assert_eq!(
            hex::encode(item),
            "0000001c\
             01\
             0700000000000000\
             03000000\
             00000000\
             0300000000000000\
             010203"
        );
    }

    #[test]
    fn golden_bytes_of_log_entries() {
        let frame = Frame {
            call: 7,
            body: FrameBody::Item(StreamItem::LogEntries(vec![crate::runtime::LogEntry {
                stream: 2,
                data: b"hi".to_vec(),
                time: "t".into(),
            }])),
        };
        assert_eq!(
            hex::encode(encode_frame(&frame).unwrap()),
            "0000002d\
             01\
             0700000000000000\
             03000000\
             06000000\
             0100000000000000\
             02\
             0200000000000000\
             6869\
             0100000000000000\
             74"
        );
    }

    #[test]
    fn golden_bytes_of_a_health_change() {
        let frame = Frame {
            call: 7,
            body: FrameBody::Item(StreamItem::Health("healthy".into())),
        };
        assert_eq!(
            hex::encode(encode_frame(&frame).unwrap()),
            "00000020\
             01\
             0700000000000000\
             03000000\
             07000000\
             0700000000000000\
             6865616c746879"
        );
    }

    #[test]
    fn frames_read_into_the_readers_own_buffer_come_out_whole() {
        let all: Vec<u8> = frames()
            .iter()
            .flat_map(|f| encode_frame(f).unwrap())
            .collect();
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        let mut at = 0;
        while at < all.len() {
            let n = r.wanted().min(all.len() - at).min(5);
            assert!(n > 0, "a reader that waits always wants something");
            r.buffer_mut().extend_from_slice(&all[at..at + n]);
            at += n;
            while let Some(f) = r.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames());
        r.shrink();
        assert_eq!(r.wanted(), 4);
    }

    #[test]
    fn encoding_into_a_buffer_appends_exactly_the_frame() {
        let mut out = vec![9u8];
        for f in frames() {
            encode_frame_into(&mut out, &f).unwrap();
        }
        let expected: Vec<u8> = std::iter::once(9u8)
            .chain(frames().iter().flat_map(|f| encode_frame(f).unwrap()))
            .collect();
        assert_eq!(out, expected);
        let huge = Frame {
            call: 1,
            body: FrameBody::Item(StreamItem::Bytes(vec![0; MAX_FRAME as usize + 1].into())),
        };
        assert!(matches!(
            encode_frame_into(&mut out, &huge),
            Err(WireError::TooLarge(_))
        ));
        assert_eq!(out, expected, "a refused frame leaves the buffer as it was");
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_reading_it() {
        let mut r = FrameReader::new();
        r.push(&(MAX_FRAME + 1).to_be_bytes());
        assert!(matches!(r.next_frame(), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = FrameReader::new();
        r.push(&[0, 0, 0, 3, 1, 0xff, 0xff]);
        assert!(matches!(r.next_frame(), Err(WireError::Codec(_))));
    }

    #[test]
    fn credit_is_returned_in_batches_that_add_up_to_what_was_taken() {
        let mut r = RecvWindow::default();
        let back: u32 = (0..WINDOW * 3).filter_map(|_| r.taken()).sum();
        assert_eq!(back, WINDOW * 3);
        assert_eq!(r.taken(), None);
    }
}
