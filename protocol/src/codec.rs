//! The one codec for everything Wharf puts on the wire or in the Raft log.
//!
//! Callers use [`encode`] and [`decode`] only; bincode 1.3 (complete, no longer developed,
//! RUSTSEC-2025-0141) stays behind this module so that the format can move to a maintained
//! codec without touching callers. Every message starts with a one-byte format version.
//! bincode does not describe itself: new enum variants go at the end, and the golden-byte
//! tests below pin the format.

use serde::{de::DeserializeOwned, Serialize};

/// The format byte that starts every encoded message: bincode 1.3, fixed-width little endian.
pub const FORMAT_BINCODE1: u8 = 1;

/// Largest message [`decode`] accepts, so a corrupt length cannot allocate without bound.
pub const MAX_MESSAGE: u64 = 256 * 1024 * 1024;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The value could not be serialised.
    #[error("encode: {0}")]
    Encode(#[source] bincode::Error),
    /// The bytes are not a valid message of the expected type.
    #[error("decode: {0}")]
    Decode(#[source] bincode::Error),
    /// The message is empty.
    #[error("decode: empty message")]
    Empty,
    /// The message names a format this build does not know.
    #[error("decode: unknown format version {0}")]
    UnknownFormat(u8),
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .with_limit(MAX_MESSAGE)
        .reject_trailing_bytes()
}

/// Encode `value` as a versioned message.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    use bincode::Options;
    let mut out = vec![FORMAT_BINCODE1];
    options()
        .serialize_into(&mut out, value)
        .map_err(CodecError::Encode)?;
    Ok(out)
}

/// [`encode`] appended to `out` (no intermediate buffer); on an error `out` may hold
/// part of the message, which the caller truncates.
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), CodecError> {
    use bincode::Options;
    out.push(FORMAT_BINCODE1);
    options()
        .serialize_into(&mut *out, value)
        .map_err(CodecError::Encode)
}

/// Decode a message made by [`encode`]; never panics on any input.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    use bincode::Options;
    let (&format, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if format != FORMAT_BINCODE1 {
        return Err(CodecError::UnknownFormat(format));
    }
    options().deserialize(body).map_err(CodecError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ContainerId, Digest, ImageId};
    use crate::state::Command;

    /// A network record as every data dir holds one (the default `bridge`): its layout
    /// must not change without a state format version and a migration (settings such as
    /// `--internal` are kept in its labels for that reason).
    #[test]
    fn golden_bytes_of_a_network_record() {
        use crate::network::{NetworkRecord, Subnet};
        let n = NetworkRecord {
            id: "n1".into(),
            name: "b".into(),
            driver: "bridge".into(),
            subnet: Subnet::parse("10.1.2.0/24").unwrap(),
            gateway: std::net::Ipv4Addr::new(10, 1, 2, 1),
            bridge: "br0".into(),
            node: crate::ids::NodeId(7),
            labels: [("k".to_string(), "v".to_string())].into(),
            created_ns: 9,
            default: true,
        };
        let bytes = encode(&n).unwrap();
        let mut want = vec![1u8];
        let text = |s: &str| {
            let mut v = (s.len() as u64).to_le_bytes().to_vec();
            v.extend(s.as_bytes());
            v
        };
        want.extend(text("n1"));
        want.extend(text("b"));
        want.extend(text("bridge"));
        want.extend([10, 1, 2, 0, 24, 10, 1, 2, 1]);
        want.extend(text("br0"));
        want.extend(7u64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(text("k"));
        want.extend(text("v"));
        want.extend(9i64.to_le_bytes());
        want.push(1);
        assert_eq!(bytes, want);
        assert_eq!(decode::<NetworkRecord>(&bytes).unwrap(), n);
    }

    /// `ContainerStarted` as builds of state format 2 and older wrote it (with a PID):
    /// their log entries must still decode.
    #[test]
    fn golden_bytes_of_a_command() {
        let cmd = Command::ContainerStarted {
            id: ContainerId::from_bytes([0xab; 32]),
            pid: 0x0102_0304,
            at_ns: 5,
        };
        let bytes = encode(&cmd).unwrap();
        let mut want = vec![1u8, 5, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0];
        want.extend(std::iter::repeat_n(b"ab", 32).flatten());
        want.extend([4, 3, 2, 1, 5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes, want);
        assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
    }

    /// What format-3 builds write when a container starts: no host PID.
    #[test]
    fn golden_bytes_of_container_running() {
        let cmd = Command::ContainerRunning {
            id: ContainerId::from_bytes([0xab; 32]),
            at_ns: 5,
        };
        let bytes = encode(&cmd).unwrap();
        let mut want = vec![1u8, 22, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0];
        want.extend(std::iter::repeat_n(b"ab", 32).flatten());
        want.extend([5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(bytes, want);
        assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
    }

    /// A group-committed entry (format 4): the variant after `ContainerRunning`, then the
    /// commands as the log stores them one by one.
    #[test]
    fn golden_bytes_of_a_batch() {
        let running = Command::ContainerRunning {
            id: ContainerId::from_bytes([0xab; 32]),
            at_ns: 5,
        };
        let cmd = Command::Batch(vec![running.clone(), running.clone()]);
        let bytes = encode(&cmd).unwrap();
        let one = encode(&running).unwrap();
        let mut want = vec![1u8, 23, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        want.extend(&one[1..]);
        want.extend(&one[1..]);
        assert_eq!(bytes, want);
        assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
    }

    /// A keyed group (format 6): the variant after `RemoveNode`, the key's origin,
    /// incarnation and sequence, then the commands as a batch holds them.
    #[test]
    fn golden_bytes_of_a_keyed_group() {
        use crate::proposal_key::ProposalKey;
        let running = Command::ContainerRunning {
            id: ContainerId::from_bytes([0xab; 32]),
            at_ns: 5,
        };
        let cmd = Command::Keyed {
            key: ProposalKey {
                origin: 3,
                incarnation: 0x0102_0304_0506_0708,
                seq: 9,
            },
            commands: vec![running.clone()],
        };
        let bytes = encode(&cmd).unwrap();
        let one = encode(&running).unwrap();
        let mut want = vec![1u8, 28, 0, 0, 0];
        want.extend(3u64.to_le_bytes());
        want.extend([8, 7, 6, 5, 4, 3, 2, 1]);
        want.extend(9u64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(&one[1..]);
        assert_eq!(bytes, want);
        assert_eq!(decode::<Command>(&bytes).unwrap(), cmd);
    }

    /// A container record as state format 3 stores it: after the run spec, the status
    /// and the last run, and no host PID (format 2's layout, with the PID after the
    /// status, is pinned in the controller's `raft/migrate.rs`).
    #[test]
    fn golden_bytes_of_a_container_record() {
        use crate::state::{ContainerRecord, ContainerStatus};
        let mut c = crate::fixtures::container(0xab, "web");
        c.status = ContainerStatus::Running;
        c.exit_code = 3;
        c.started_ns = 5;
        c.finished_ns = 6;
        c.oom_killed = true;
        c.error = "e".into();
        let bytes = encode(&c).unwrap();
        let text = |s: &str| {
            let mut v = (s.len() as u64).to_le_bytes().to_vec();
            v.extend(s.as_bytes());
            v
        };
        let mut want = vec![1u8];
        want.extend(text(&"ab".repeat(32)));
        want.extend(text("web"));
        want.extend(1i64.to_le_bytes());
        want.extend(1u64.to_le_bytes());
        want.extend(text("busybox"));
        want.extend(&encode(&c.run).unwrap()[1..]);
        want.extend(text("{}"));
        want.extend(text("{}"));
        want.push(0);
        want.extend(1u32.to_le_bytes());
        want.extend(3i32.to_le_bytes());
        want.extend(5i64.to_le_bytes());
        want.extend(6i64.to_le_bytes());
        want.push(1);
        want.extend(text("e"));
        assert_eq!(bytes, want);
        assert_eq!(decode::<ContainerRecord>(&bytes).unwrap(), c);
    }

    #[test]
    fn golden_bytes_of_a_tag() {
        let cmd = Command::Tag {
            reference: "a:b".into(),
            image: ImageId(Digest([7; 32])),
        };
        let bytes = encode(&cmd).unwrap();
        let mut want = vec![1u8, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, b'a', b':', b'b'];
        want.extend([7u8; 32]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn junk_is_an_error_not_a_panic() {
        assert!(matches!(decode::<Command>(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            decode::<Command>(&[9, 0]),
            Err(CodecError::UnknownFormat(9))
        ));
        assert!(decode::<Command>(&[1, 0xff, 0xff, 0xff, 0xff]).is_err());
        // A length prefix far beyond the limit must not allocate.
        assert!(decode::<Command>(&[
            1, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
        ])
        .is_err());
        let mut ok = encode(&Command::Untag {
            reference: "x".into(),
        })
        .unwrap();
        ok.push(0);
        assert!(
            decode::<Command>(&ok).is_err(),
            "trailing bytes are refused"
        );
    }
}
