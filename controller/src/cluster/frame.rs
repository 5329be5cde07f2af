//! One message per frame: a 4-byte big-endian length, then the codec's bytes. Used for
//! joins and the first frames of an agent's connection; the agent protocol has its own.

use super::ClusterError;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted: joins and hellos are small.
pub const MAX_FRAME: u32 = 1 << 20;

/// Write `msg` as one frame and flush.
pub async fn write<W: AsyncWrite + Unpin, T: Serialize>(
    w: &mut W,
    msg: &T,
    what: &'static str,
) -> Result<(), ClusterError> {
    let mut buf = Vec::new();
    encode_into(&mut buf, msg, what)?;
    write_all(w, &buf, what).await
}

/// Append `msg` as one frame to `buf` (frames written together go in one write).
pub fn encode_into<T: Serialize>(
    buf: &mut Vec<u8>,
    msg: &T,
    what: &'static str,
) -> Result<(), ClusterError> {
    let bytes = wharf_protocol::codec::encode(msg)
        .map_err(|source| ClusterError::Codec { what, source })?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| ClusterError::Identity(format!("{what} is too large")))?;
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&bytes);
    Ok(())
}

/// Write frames made with [`encode_into`] and flush.
pub async fn write_all<W: AsyncWrite + Unpin>(
    w: &mut W,
    frames: &[u8],
    what: &'static str,
) -> Result<(), ClusterError> {
    w.write_all(frames)
        .await
        .map_err(ClusterError::io(format!("send {what}")))?;
    w.flush()
        .await
        .map_err(ClusterError::io(format!("send {what}")))
}

/// Read one frame as a `T`.
pub async fn read<R: AsyncRead + Unpin, T: DeserializeOwned>(
    r: &mut R,
    what: &'static str,
) -> Result<T, ClusterError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)
        .await
        .map_err(ClusterError::io(format!("read {what}")))?;
    let len = u32::from_be_bytes(len);
    if len > MAX_FRAME {
        return Err(ClusterError::Io {
            what: format!("read {what}"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame of {len} bytes"),
            ),
        });
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)
        .await
        .map_err(ClusterError::io(format!("read {what}")))?;
    wharf_protocol::codec::decode(&buf).map_err(|source| ClusterError::Codec { what, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        write(&mut a, &("hello".to_string(), 7u32), "test")
            .await
            .unwrap();
        let got: (String, u32) = read(&mut b, "test").await.unwrap();
        assert_eq!(got, ("hello".to_string(), 7));
        // Frames encoded together read back one by one.
        let mut buf = Vec::new();
        encode_into(&mut buf, &1u32, "test").unwrap();
        encode_into(&mut buf, &"two".to_string(), "test").unwrap();
        write_all(&mut a, &buf, "test").await.unwrap();
        assert_eq!(read::<_, u32>(&mut b, "test").await.unwrap(), 1);
        assert_eq!(read::<_, String>(&mut b, "test").await.unwrap(), "two");
        a.write_all(&(MAX_FRAME + 1).to_be_bytes()).await.unwrap();
        let e = read::<_, String>(&mut b, "test").await.unwrap_err();
        assert!(e.to_string().contains("frame of"), "{e}");
    }
}
