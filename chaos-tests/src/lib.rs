//! Test support for Wharf: generated images ([`images`]) that unit and integration tests
//! load into a real store, so no test depends on a registry or on files outside the repo
//! other than `/bin/busybox`; the benches' building blocks ([`bench`]); and simulated agents ([`sim`]) for
//! benchmarks and scale tests.

pub mod bench;
pub mod images;
pub mod sim;

pub use images::{busybox_image_tar, layer_tar, write_save_tar, ImageSpec, LayerEntry};
