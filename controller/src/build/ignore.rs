//! `.dockerignore` rules and the path and pattern rules of `COPY`: pure, shared with the
//! agent's collector, so they live in [`wharf_protocol::patterns`].

pub use wharf_protocol::patterns::*;
