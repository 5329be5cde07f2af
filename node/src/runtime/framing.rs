//! Frames on the shim socket, for both ends: a `u32` big-endian length, then a message of
//! [`wharf_protocol::codec`]. The layout lives in [`wharf_protocol::shim`]; this module
//! only moves the bytes.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use wharf_protocol::codec::{decode, encode, CodecError};
use wharf_protocol::shim::{frame, frame_len, FrameError};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between frames.
    #[error("connection closed")]
    Closed,
    /// The frame's header is not acceptable.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame's payload is not a valid message.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

/// Write `msg` as one frame and flush.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), FramingError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let bytes = frame(&encode(msg)?)?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(())
}

/// Read one frame and decode it; [`FramingError::Closed`] on a clean end of stream.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, FramingError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut header = [0u8; 4];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(FramingError::Closed)
        }
        Err(e) => return Err(e.into()),
    }
    let len = frame_len(header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    Ok(decode(&payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::shim::Request;

    #[tokio::test]
    async fn frames_round_trip_and_reject_junk() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        write_frame(&mut a, &Request::Kill { signal: 9 })
            .await
            .unwrap();
        let got: Request = read_frame(&mut b).await.unwrap();
        assert_eq!(got, Request::Kill { signal: 9 });
        a.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FramingError::Frame(FrameError::TooLarge(_)))
        ));
        drop(a);
        assert!(matches!(
            read_frame::<_, Request>(&mut b).await,
            Err(FramingError::Closed)
        ));
    }
}
