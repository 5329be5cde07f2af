//! The connection under an upgraded stream (attach, exec start): its socket, so that
//! the first bytes of the stream are sent only once the client has read the 101 answer.
//!
//! ```text
//!  server: 101 headers ──────────────► client kernel ──► client reads the headers
//!          (wait: SIOCOUTQ == 0) ─────► first stream bytes
//! ```
//!
//! docker-py reads the answer's headers through a buffered reader, then reads the stream
//! from the raw socket underneath it: stream bytes that arrived together with the headers
//! sit in that buffer and are lost to it (docker-py issues #425, #3332; a short command's
//! output "disappears"). Over a unix socket `SIOCOUTQ` counts the bytes the peer has not
//! read yet, so waiting for it to reach 0 orders the stream after the client's read of the
//! headers. Over TCP it counts the bytes not yet acknowledged: the headers then reach the
//! client in a segment of their own. TLS needs neither (a record per write, and Python's
//! TLS socket returns one record per read).

use std::os::fd::RawFd;
use std::time::Duration;

/// How long a stream waits for its client to read the 101 answer (a client that reads
/// nothing does not hold the stream back longer). Generous: on a loaded host a client
/// may take seconds to be scheduled, and a stream sent before it reads is lost to it.
const READ_WAIT: Duration = Duration::from_secs(10);
/// How often the socket's send queue is looked at meanwhile.
const READ_POLL: Duration = Duration::from_millis(1);

/// The socket of a plain (not TLS) API connection, carried in the request's extensions.
#[derive(Clone, Copy, Debug)]
pub struct PeerSocket {
    /// The connection's file descriptor; valid while the connection (or the upgraded
    /// stream that owns it) is alive.
    pub fd: RawFd,
}

/// Bytes written on `fd` that the peer has not consumed (unix socket) or acknowledged
/// (TCP); `None` if the socket cannot say.
fn unsent(fd: RawFd) -> Option<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (= SIOCOUTQ) writes one int through the pointer, which is valid
    // for the call; the fd is open as long as the caller holds the connection.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
    (rc == 0).then_some(n)
}

/// Wait (at most [`READ_WAIT`]) until the client has taken in everything written on its
/// connection so far, i.e. the 101 answer. Call after the upgrade, while holding the
/// upgraded stream, before writing the first byte of the stream.
pub async fn wait_answer_read(peer: Option<PeerSocket>) {
    let Some(peer) = peer else {
        return;
    };
    let deadline = tokio::time::Instant::now() + READ_WAIT;
    while let Some(n) = unsent(peer.fd).filter(|n| *n > 0) {
        if tokio::time::Instant::now() >= deadline {
            // The stream goes out anyway; a docker-py client may miss its first bytes.
            tracing::info!(unread = n, "client did not read the upgrade answer in time");
            return;
        }
        tokio::time::sleep(READ_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn unix_send_queue_empties_once_the_peer_reads() {
        let (mut a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(unsent(a.as_raw_fd()), Some(0));
        a.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
            .unwrap();
        assert!(unsent(a.as_raw_fd()).unwrap() > 0);
        let mut buf = [0u8; 64];
        let n = b.read(&mut buf).unwrap();
        assert!(n > 0);
        assert_eq!(unsent(a.as_raw_fd()), Some(0));
    }
}
