//! Agent requests about images and layers: load, save, import, commit, a container's
//! changes and export, layer facts, and the collection of layers nothing uses.
//!
//! Layers a request adds (load, import, commit) stay on the host under a [`LeaseId`]
//! until the controller has recorded the image that names them and sends `Release`; a
//! collection never frees a leased layer. Collections come in two calls, so that a lease
//! released while the controller was reading its records still counts:
//!
//! ```text
//!  controller                                  agent
//!  Load/Import/Commit ───────────────────────► add layers, lease them
//!            ◄─────────────── Loaded{lease} ── (no lock held across the network)
//!  record image (Raft); Release{lease} ──────► lease ends (kept for older collections)
//!
//!  BeginCollect ─────────────────────────────► ticket t
//!  read chains in use (Raft)
//!  Collect{t, in_use} ───────────────────────► keep in_use + leased + released after t
//! ```

use crate::image::{Change, Collected, LoadedImage, SaveImage};
use crate::{ContainerId, DiffId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A hold an agent keeps on the layers a request added, until released or until the
/// connection that got it closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseId(pub u64);

/// A collection begun with `BeginCollect`: leases released after it are still kept by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CollectTicket(pub u64);

/// A request about images and layers (see [`super::AgentRequest::Image`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageRequest {
    /// Load a `docker save` archive uploaded as `Bytes` items (`docker load`). Answer:
    /// `Loaded`, once the upload has ended and every layer is in place and leased.
    Load,
    /// Write a `docker save` archive of `images`. Answer: `Done` once every layer's tar
    /// is known to be here (`NotFound` otherwise), then the archive as `Bytes` items.
    Save {
        /// The images, with the tags to record.
        images: Vec<SaveImage>,
    },
    /// The container's root filesystem as a tar (`docker export`). Answer: `Done`, then
    /// the tar as `Bytes` items.
    Export {
        /// The container.
        id: ContainerId,
    },
    /// The container's writable layer becomes a layer on top of `parent` (`docker
    /// commit`, a build step). Answer: `Committed`.
    Commit {
        /// The container.
        id: ContainerId,
        /// Its image's DiffIDs, bottom first.
        parent: Vec<DiffId>,
    },
    /// What the container changed against its image (`docker diff`). Answer: `Changes`.
    Changes {
        /// The container.
        id: ContainerId,
    },
    /// A root filesystem tarball (plain, gzip or zstd) uploaded as `Bytes` items becomes
    /// a layer on top of `parent` (`docker import`, a build's `COPY` onto scratch).
    /// Answer: `Imported`; `InvalidInput` for an archive that is refused.
    Import {
        /// The DiffIDs below the new layer, bottom first (empty: a first layer).
        parent: Vec<DiffId>,
    },
    /// Each layer's own size, in bytes of regular files, of the chain `diff_ids`; a
    /// missing layer counts 0. Answer: `Sizes`.
    LayerSizes {
        /// The chain, bottom first.
        diff_ids: Vec<DiffId>,
    },
    /// Whether every layer of the chain is unpacked here. Answer: `Present`.
    HasLayers {
        /// The chain, bottom first.
        diff_ids: Vec<DiffId>,
    },
    /// Let the layers of a lease go (the image naming them is recorded, or was not made).
    /// Answer: `Done`.
    Release {
        /// The lease.
        lease: LeaseId,
    },
    /// Begin a collection; call before reading which chains are in use. Answer: `Ticket`.
    BeginCollect,
    /// Remove every layer no chain of `in_use` needs and no lease holds. Answer:
    /// `Collected`.
    Collect {
        /// From `BeginCollect`.
        ticket: CollectTicket,
        /// The chains of every image and container, bottom first.
        in_use: Vec<Vec<DiffId>>,
    },
    /// The overlay directories of the chain, as `docker image inspect` shows them in
    /// `GraphDriver.Data`. Answer: `GraphDriver`.
    GraphDriver {
        /// The chain, bottom first.
        diff_ids: Vec<DiffId>,
    },
}

/// What an [`ImageRequest`] answers beyond `Done`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageResponse {
    /// The images of the archive, in manifest order; their layers are leased.
    Loaded {
        /// The images.
        images: Vec<LoadedImage>,
        /// The hold on their layers.
        lease: LeaseId,
    },
    /// The committed layer (`None`: the container changed nothing), leased.
    Committed {
        /// The new layer's DiffID.
        diff_id: Option<DiffId>,
        /// Bytes of regular files of the whole chain, new layer included.
        size: u64,
        /// The hold on the chain.
        lease: LeaseId,
    },
    /// The imported layer, leased.
    Imported {
        /// Its DiffID.
        diff_id: DiffId,
        /// Bytes of regular files of the whole chain, new layer included.
        size: u64,
        /// The hold on the chain.
        lease: LeaseId,
    },
    /// `docker diff` entries, sorted by path.
    Changes(Vec<Change>),
    /// One size per layer, bottom first.
    Sizes(Vec<u64>),
    /// Whether every layer is present.
    Present(bool),
    /// A collection begun.
    Ticket(CollectTicket),
    /// What a collection removed.
    Collected(Collected),
    /// `GraphDriver.Data` (`MergedDir`, `UpperDir`, `WorkDir`, `LowerDir`); empty for a
    /// chain without layers.
    GraphDriver(BTreeMap<String, String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{AgentRequest, AgentResponse};
    use crate::codec::{decode, encode};
    use crate::Digest;

    #[test]
    fn image_messages_round_trip_through_the_codec() {
        let d = DiffId(Digest::of(b"layer"));
        let req = AgentRequest::Image(ImageRequest::Collect {
            ticket: CollectTicket(3),
            in_use: vec![vec![d]],
        });
        assert_eq!(decode::<AgentRequest>(&encode(&req).unwrap()).unwrap(), req);
        let resp = AgentResponse::Image(ImageResponse::Committed {
            diff_id: Some(d),
            size: 9,
            lease: LeaseId(7),
        });
        assert_eq!(
            decode::<AgentResponse>(&encode(&resp).unwrap()).unwrap(),
            resp
        );
    }
}
