//! The agent's image layer store: unpacking `docker save` archives into moby's overlay2
//! layout, containers' writable layers, and the overlay mount of a container's rootfs.
//!
//! ```text
//!  docker save tar ──► load.rs (spool, manifest, configs) ──► store.rs (ImageStore)
//!                                                               │ per layer
//!                                                    apply.rs (openat2-confined writes)
//!  layout.rs: paths + MountSpec (pure) ──► mount.rs: mount(2)/umount2(2) (thin, in the shim)
//!  save.rs: docker save · gc.rs: freeing unused layers · lease.rs: what a collection
//!  keeps for the controller (layers added, image not yet recorded) · rwlayer.rs: diff, export,
//!  commit and import (writable layers in, new layers out) · tree.rs: a tree as a tar
//! ```
//!
//! Image configs and tags are returned ([`LoadedImage`]) for the controller to keep; only
//! layer data and layer metadata live here.

pub mod apply;
mod copy;
pub mod gc;
mod inventory;
pub mod layout;
pub mod lease;
pub mod load;
pub mod mount;
pub mod rwlayer;
pub mod save;
pub mod store;
pub mod tarsplit;
pub mod tree;

pub use apply::ApplyError;
pub use gc::Collected;
pub use layout::{Layout, MountSpec};
pub use load::{LoadError, LoadedImage};
pub use mount::{mount_overlay, unmount};
pub use rwlayer::{Change, ChangeKind, RwLayerError, SpooledLayer};
pub use save::{PreparedSave, SaveError, SaveImage};
pub use store::{ImageStore, LayerPin, LayerTar, StoreError};

#[cfg(test)]
mod copy_test;
#[cfg(test)]
mod testutil;
