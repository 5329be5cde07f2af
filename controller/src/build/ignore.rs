//! `.dockerignore` rules and the path and pattern rules of `COPY` (pure; shared with the
//! agent's collector, [`wharf_node::copy::ignore`]).

pub use wharf_node::copy::ignore::*;
