//! The Wharf agent: the local engine on every host.
//!
//! It owns the overlay2 layer store ([`image`]), the container runtime with one shim process
//! per container ([`runtime`]), the user networks' embedded DNS resolvers ([`dns`]), and the
//! [`agent::Agent`] facade through which a controller,
//! local today and remote later, drives them.

pub mod agent;
pub mod archive;
pub mod build_context;
pub mod clock;
pub mod copy;
pub mod dns;
pub mod fence;
pub mod image;
pub mod memory;
pub mod network;
pub mod resolve;
pub mod runtime;
pub mod serve;
pub mod stats;
pub mod volumes;
