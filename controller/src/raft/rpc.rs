//! The peer protocol between controllers: its messages, its framing, and the server side
//! ([`serve_peer`]) that answers them from a [`Store`].
//!
//! The server speaks first: a [`Hello`] with its node id, sent only while its store runs, so
//! that a client knows a request it sends after the hello reaches a live node, and that a
//! connection that ends before it carried nothing. Then a connection carries one request at a
//! time: the client writes a frame, the server answers it with one frame, then the next
//! request may follow. A client that gives up on a request (timeout) drops the connection;
//! concurrent requests use several connections (see [`TlsNetwork`](super::TlsNetwork)).
//!
//! ```text
//!   frame   = length (u32, big endian) ‖ wharf_protocol::codec message
//!   client <── Hello { node } ────────────  serve_peer
//!          ── PeerRequest { to, call } ──>             ──> Raft / Store
//!          <── Reply ─────────────────────
//! ```
//!
//! New [`Call`] and [`Reply`] variants go at the end (bincode numbers them in order).

use openraft::error::{InstallSnapshotError, RaftError as ApiError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wharf_protocol::codec;
use wharf_protocol::state::Command;

use super::{RaftError, Store, TypeConfig};

/// The ALPN protocol of the Raft peer transport on a controller's cluster port.
pub const RAFT_ALPN: &[u8] = b"wharf-raft/1";

/// Largest frame either side reads, so that a corrupt length cannot allocate without bound.
pub(super) const MAX_FRAME: u32 = codec::MAX_MESSAGE as u32;

/// The first frame on every peer connection, from the server.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Hello {
    /// The serving node's id.
    pub(super) node: u64,
}

/// One request to a peer: which node it is meant for, and the call.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct PeerRequest {
    /// The node id the sender believes it is talking to; a node with another id refuses
    /// ([`Reply::WrongNode`]), so that a reused address never gets another node's traffic.
    pub(super) to: u64,
    /// What is asked.
    pub(super) call: Call,
}

/// What a peer is asked to do.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Call {
    /// Raft: append entries (and heartbeat).
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<u64>),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Write these commands as one log entry (asked of the leader by a follower; this
    /// build sends one [`Command::Keyed`] group, sent again under its key if the answer
    /// is lost).
    Forward(Vec<Command>),
    /// Confirm leadership and name the log index a linearizable read must wait for.
    ReadIndex,
}

/// The answer to a [`Call`], variant for variant.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    /// Answer to [`Call::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<u64>, ApiError<u64>>),
    /// Answer to [`Call::Vote`].
    Vote(Result<VoteResponse<u64>, ApiError<u64>>),
    /// Answer to [`Call::InstallSnapshot`].
    InstallSnapshot(Result<InstallSnapshotResponse<u64>, ApiError<u64, InstallSnapshotError>>),
    /// Answer to [`Call::Forward`]: one response per command, and the entry's log index.
    Forward(Result<super::forward::Written, Refusal>),
    /// Answer to [`Call::ReadIndex`]: the index to wait for.
    ReadIndex(Result<u64, Refusal>),
    /// The request named another node than this one.
    WrongNode {
        /// This node's id.
        id: u64,
    },
}

/// Why the leader did not do a forwarded call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The node asked is not the leader; nothing was written.
    #[error("node {node} is not the raft leader (it knows leader {leader:?})")]
    NotLeader {
        /// The node asked.
        node: u64,
        /// The leader it knows of, if any.
        leader: Option<u64>,
    },
    /// The call failed on the leader; a forwarded write may or may not have been applied.
    #[error("raft node {node}: {reason}")]
    Failed {
        /// The node asked.
        node: u64,
        /// Its error.
        reason: String,
    },
}

/// Write `payload` as one frame.
pub(super) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("peer message of {} bytes is too large", payload.len()),
            )
        })?;
    // One write, so that the frame leaves in one TLS record and one segment: two small
    // writes in a row wait for a delayed ACK under Nagle's algorithm.
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame).await?;
    w.flush().await
}

/// Read one frame; `None` when the stream ended cleanly before a new frame.
pub(super) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<u8>>, RaftError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(RaftError::PeerIo(e)),
    }
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(RaftError::PeerFrame { len });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf).await.map_err(RaftError::PeerIo)?;
    Ok(Some(buf))
}

/// Serve one peer connection (already authenticated by the caller: TLS with ALPN
/// [`RAFT_ALPN`] and a controller's client certificate) until the peer closes it, it breaks,
/// or `store` is shut down.
///
/// Call in its own task for every accepted connection. Returns an error for a broken stream
/// or a message that does not decode (the connection is then closed); a clean close is `Ok`.
pub async fn serve_peer<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    store: Store,
    mut stream: S,
) -> Result<(), RaftError> {
    let mut closed = store.closed();
    if *closed.borrow() {
        return Ok(());
    }
    let hello = codec::encode(&Hello {
        node: store.node_id(),
    })
    .map_err(RaftError::PeerEncode)?;
    write_frame(&mut stream, &hello)
        .await
        .map_err(RaftError::PeerIo)?;
    loop {
        let frame = tokio::select! {
            frame = read_frame(&mut stream) => frame?,
            _ = closed.wait_for(|c| *c) => return Ok(()),
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        let request: PeerRequest = codec::decode(&frame).map_err(RaftError::PeerDecode)?;
        let reply = tokio::select! {
            reply = answer(&store, request) => reply,
            _ = closed.wait_for(|c| *c) => return Ok(()),
        };
        let bytes = codec::encode(&reply).map_err(RaftError::PeerEncode)?;
        write_frame(&mut stream, &bytes)
            .await
            .map_err(RaftError::PeerIo)?;
    }
}

/// The answer of this node to one request.
async fn answer(store: &Store, request: PeerRequest) -> Reply {
    let id = store.node_id();
    if request.to != id {
        tracing::warn!(node = id, to = request.to, "peer request for another node");
        return Reply::WrongNode { id };
    }
    let raft = store.raft();
    match request.call {
        Call::AppendEntries(rpc) => Reply::AppendEntries(raft.append_entries(rpc).await),
        Call::Vote(rpc) => Reply::Vote(raft.vote(rpc).await),
        Call::InstallSnapshot(rpc) => Reply::InstallSnapshot(raft.install_snapshot(rpc).await),
        Call::Forward(cmds) => Reply::Forward(store.router().write_local(cmds).await),
        Call::ReadIndex => Reply::ReadIndex(store.router().local_read_index().await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_index_request_has_a_fixed_layout() {
        let req = PeerRequest {
            to: 3,
            call: Call::ReadIndex,
        };
        let bytes = codec::encode(&req).unwrap();
        assert_eq!(bytes, [1, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
    }

    #[test]
    fn a_hello_has_a_fixed_layout() {
        let bytes = codec::encode(&Hello { node: 5 }).unwrap();
        assert_eq!(bytes, [1, 5, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn replies_round_trip() {
        let reply = Reply::Forward(Err(Refusal::NotLeader {
            node: 2,
            leader: Some(1),
        }));
        let back: Reply = codec::decode(&codec::encode(&reply).unwrap()).unwrap();
        assert!(matches!(
            back,
            Reply::Forward(Err(Refusal::NotLeader {
                node: 2,
                leader: Some(1)
            }))
        ));
        let reply = Reply::ReadIndex(Ok(42));
        let back: Reply = codec::decode(&codec::encode(&reply).unwrap()).unwrap();
        assert!(matches!(back, Reply::ReadIndex(Ok(42))));
    }

    #[tokio::test]
    async fn frames_round_trip_and_a_huge_length_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            write_frame(&mut a, b"hello").await.unwrap();
            write_frame(&mut a, b"").await.unwrap();
            a.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
        });
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut b).await.unwrap().unwrap(), b"");
        let err = read_frame(&mut b).await.unwrap_err();
        assert!(matches!(err, RaftError::PeerFrame { .. }), "{err}");
        writer.await.unwrap();
        assert!(read_frame(&mut b).await.unwrap().is_none(), "clean end");
    }
}
