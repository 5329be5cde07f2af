//! The pieces of the benches (`wharf-bench`, `wharf-bench-run`, `wharf-bench-cluster`): a
//! private `wharf up` ([`wharf`]), a private Docker Engine beside it ([`dockerd`]) or a
//! second `wharf up` of an older binary, the one `docker` CLI both are driven with
//! ([`cli`]), the floors ([`raw`], [`floors`]), the inputs ([`data`]), the cases
//! ([`cases`]), and the pure summary and table code ([`stats`], [`table`]); for the
//! cluster bench, a local cluster of its own ([`cluster`]) and a direct TLS client of the
//! Docker API ([`api`]).
//!
//! ```text
//!   wharf-bench ──► cases ──► Cli (docker 28.x) ──► WharfDaemon (wharf up, temp data dir)
//!        │                                     └──► Dockerd (private containerd + dockerd)
//!        │                                          or, with --against, WharfDaemon (old)
//!        ├──► floors: RawRuntime (libcontainer), sha256 / write+fsync / unzstd
//!        └──► table::render ──► Markdown file (and the README)
//! ```

pub mod api;
pub mod cases;
pub mod cli;
pub mod cluster;
pub mod data;
pub mod dockerd;
pub mod floors;
pub mod host;
pub mod procmem;
pub mod raw;
pub mod signals;
pub mod stats;
pub mod table;
pub mod wharf;
