//! What the controller and an agent say about images and layers: a container's changes
//! ([`Change`]), an image to save ([`SaveImage`]) or one loaded ([`LoadedImage`]), and
//! what a layer collection removed ([`Collected`]).
//!
//! ```text
//!  controller ──SaveImage──► agent ──► image archive
//!  controller ◄──LoadedImage, Change, Collected── agent ◄── layer store
//! ```

use crate::ids::{ChainId, DiffId, ImageId};
use serde::{Deserialize, Serialize};

/// How a file differs from the image, as `GET /containers/{id}/changes` numbers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeKind {
    /// `C`: present below and changed.
    Modified = 0,
    /// `A`: new.
    Added = 1,
    /// `D`: deleted.
    Deleted = 2,
}

/// One entry of `docker diff`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Absolute path inside the container, e.g. `/tmp/x`.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

/// One image to write: what the controller keeps about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveImage {
    /// The config JSON exactly as stored (its sha256 is the image ID).
    pub config: Vec<u8>,
    /// `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<DiffId>,
    /// `name:tag` references to record (empty when saved by ID).
    pub repo_tags: Vec<String>,
}

/// An image read from an archive; its config is for the controller to keep.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedImage {
    /// sha256 of `config`.
    pub id: ImageId,
    /// The config JSON, byte for byte as in the archive.
    pub config: Vec<u8>,
    /// `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<DiffId>,
    /// `RepoTags` of `manifest.json`, e.g. `busybox:latest` (may be empty).
    pub repo_tags: Vec<String>,
    /// The agent's `ImageStore::layers_size` of the image.
    pub size: u64,
}

/// What a collection removed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collected {
    /// Unpacked layers removed, by ChainID.
    pub layers: Vec<ChainId>,
    /// Bytes of regular files they held (their `size` files).
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::Digest;

    #[test]
    fn change_kinds_keep_docker_numbers() {
        let n = |k: ChangeKind| k as u8;
        assert_eq!(
            (
                n(ChangeKind::Modified),
                n(ChangeKind::Added),
                n(ChangeKind::Deleted)
            ),
            (0, 1, 2)
        );
    }

    #[test]
    fn records_round_trip_through_the_codec() {
        let diff = DiffId(Digest::of(b"layer"));
        let loaded = LoadedImage {
            id: ImageId(Digest::of(b"{}")),
            config: b"{}".to_vec(),
            diff_ids: vec![diff],
            repo_tags: vec!["busybox:latest".into()],
            size: 42,
        };
        assert_eq!(
            decode::<LoadedImage>(&encode(&loaded).unwrap()).unwrap(),
            loaded
        );
        let collected = Collected {
            layers: ChainId::chain(&[diff]),
            bytes: 7,
        };
        assert_eq!(
            decode::<Collected>(&encode(&collected).unwrap()).unwrap(),
            collected
        );
        let change = Change {
            path: "/tmp/x".into(),
            kind: ChangeKind::Deleted,
        };
        assert_eq!(decode::<Change>(&encode(&change).unwrap()).unwrap(), change);
    }
}
