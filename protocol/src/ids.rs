//! Identifiers as newtypes: parsed once at the edge, trusted everywhere after.
//!
//! Digests follow the OCI image spec (`sha256:<64 hex>`); a layer's DiffID is the digest of
//! its uncompressed tar, a ChainID names a stack of layers and an ImageID is the digest of
//! the image's config bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::str::FromStr;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The digest is not `sha256:` followed by 64 lowercase hex digits.
    #[error("invalid digest {0:?}: want sha256:<64 hex digits>")]
    Digest(String),
    /// The container id is not 64 lowercase hex digits.
    #[error("invalid container id {0:?}")]
    ContainerId(String),
    /// The container name does not match `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    #[error("Invalid container name ({0}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")]
    ContainerName(String),
}

/// A sha256 content digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of `bytes`; call to name content by what it is.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// The 64 hex digits without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, as Docker shows short IDs.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }

    /// Parse bare 64 hex digits (no prefix).
    pub fn from_hex(s: &str) -> Result<Digest, IdError> {
        if s.len() != 64
            || !s
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(IdError::Digest(s.to_string()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| IdError::Digest(s.to_string()))?;
        Ok(Digest(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

impl FromStr for Digest {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Digest, IdError> {
        let hex = s
            .strip_prefix("sha256:")
            .ok_or_else(|| IdError::Digest(s.to_string()))?;
        Digest::from_hex(hex).map_err(|_| IdError::Digest(s.to_string()))
    }
}

macro_rules! digest_newtype {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub Digest);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<$name, IdError> {
                Ok($name(s.parse()?))
            }
        }
    };
}

digest_newtype!(
    /// sha256 of a layer's uncompressed tar (`rootfs.diff_ids[i]`).
    DiffId
);
digest_newtype!(
    /// Names a stack of layers: `ChainID(L0)=DiffID(L0)`, then `sha256(parent + " " + diff)`.
    ChainId
);
digest_newtype!(
    /// sha256 of an image's config JSON bytes.
    ImageId
);

impl ChainId {
    /// ChainIDs of every prefix of `diff_ids`; element `i` names layers `0..=i`.
    pub fn chain(diff_ids: &[DiffId]) -> Vec<ChainId> {
        let mut out: Vec<ChainId> = Vec::with_capacity(diff_ids.len());
        for d in diff_ids {
            let next = match out.last() {
                None => ChainId(d.0),
                Some(parent) => ChainId(Digest::of(format!("{} {}", parent, d).as_bytes())),
            };
            out.push(next);
        }
        out
    }
}

/// A container's full ID: 64 lowercase hex digits, as Docker's.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerId(String);

impl ContainerId {
    /// Build an ID from 32 random bytes chosen by the leader.
    pub fn from_bytes(bytes: [u8; 32]) -> ContainerId {
        ContainerId(hex::encode(bytes))
    }

    /// The ID as 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, as `docker ps` shows.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl FromStr for ContainerId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<ContainerId, IdError> {
        Digest::from_hex(s).map_err(|_| IdError::ContainerId(s.to_string()))?;
        Ok(ContainerId(s.to_string()))
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// A container name without the leading `/`, validated as Docker validates it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug)]
pub struct ContainerName(String);

impl ContainerName {
    /// The name without a leading slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerName {
    type Err = IdError;
    /// Accepts an optional leading `/`, then `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
    fn from_str(s: &str) -> Result<ContainerName, IdError> {
        let name = s.strip_prefix('/').unwrap_or(s);
        let bytes = name.as_bytes();
        let ok = bytes.len() >= 2
            && bytes[0].is_ascii_alphanumeric()
            && bytes[1..]
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(ContainerName(name.to_string()))
        } else {
            Err(IdError::ContainerName(name.to_string()))
        }
    }
}

// A name hashes and compares as its text, so maps keyed by names are looked up by `&str`.
impl std::borrow::Borrow<str> for ContainerName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cluster member (controller or agent), chosen when it joins.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Debug, Default,
)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trips_and_rejects_junk() {
        let d = Digest::of(b"hello");
        let s = d.to_string();
        assert_eq!(
            s,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(s.parse::<Digest>().unwrap(), d);
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!(
            "md5:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
                .parse::<Digest>()
                .is_err()
        );
        assert!(
            "sha256:2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824"
                .parse::<Digest>()
                .is_err()
        );
    }

    #[test]
    fn chain_ids_follow_the_oci_definition() {
        let a = DiffId(Digest::of(b"a"));
        let b = DiffId(Digest::of(b"b"));
        let chain = ChainId::chain(&[a, b]);
        assert_eq!(chain[0].0, a.0);
        let want = Digest::of(format!("{} {}", a, b).as_bytes());
        assert_eq!(chain[1].0, want);
        assert!(ChainId::chain(&[]).is_empty());
    }

    #[test]
    fn container_names_are_validated_like_docker() {
        assert_eq!("/web-1".parse::<ContainerName>().unwrap().as_str(), "web-1");
        assert!("a_b.c-d".parse::<ContainerName>().is_ok());
        assert!("a".parse::<ContainerName>().is_err());
        assert!("-ab".parse::<ContainerName>().is_err());
        assert!("a/b".parse::<ContainerName>().is_err());
        assert!("".parse::<ContainerName>().is_err());
    }
}
