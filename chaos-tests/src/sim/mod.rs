//! Simulated agents for benchmarks and scale tests (issue 18): thousands of agents in
//! one process, each with its own key, node certificate and connection per controller,
//! speaking the real agent protocol through the real codec (register, heartbeat,
//! acknowledge placements, report exits) and running nothing. Never part of the
//! product's own path: only the bench binaries and tests of this crate start them.
//!
//! ```text
//!  fleet.rs   Fleet::start ─► N × agent.rs SimAgent (join, one link per controller)
//!                                   └─► host.rs SimHost::answer (pure)
//!  archive.rs the images of a `docker save` archive a host loads or starts with (pure)
//! ```

pub mod agent;
pub mod archive;
pub mod controllers;
pub mod fleet;
pub mod host;
pub mod quality;

pub use agent::{FleetConfig, Shape, SimAgent};
pub use fleet::Fleet;
pub use host::SimHost;
