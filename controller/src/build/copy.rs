//! `COPY`/`ADD` sources turned into one tar, confined to a root (the collector lives with
//! the agent's confined filesystem access, [`wharf_node::copy`]): here, for the build
//! context, which is the client's upload this controller unpacked; a stage's or image's
//! filesystem is collected by the agent (`FilesRequest::Collect`).

pub use wharf_node::copy::{collect, open_root, read_in, Collected, CopyError, CopySpec};
