//! Agent requests about the `local` volume driver's directories on a host.
//!
//! ```text
//!   <root>/<name>/_data     what a container sees at the mount target (moby's layout)
//! ```
//!
//! Which volumes exist is decided in the replicated state; the agent only makes, removes
//! and measures their directories.

use serde::{Deserialize, Serialize};

/// A request about volumes (see [`super::AgentRequest::Volume`]).
/// bincode does not describe itself: new variants go at the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeRequest {
    /// The directory holding the host's volumes. Answer: `Root`.
    Root,
    /// Make the volume's directory (idempotent). Answer: `Done`, or `InvalidInput` for a
    /// name that could leave the volumes directory.
    Create {
        /// The volume.
        name: String,
    },
    /// Remove the volume's directory and its data (idempotent). Answer: `Done`.
    Remove {
        /// The volume.
        name: String,
    },
    /// Bytes used by each volume's data (0 when unreadable). Answer: `Sizes`, in the
    /// order of `names`.
    Sizes {
        /// The volumes.
        names: Vec<String>,
    },
}

/// What a [`VolumeRequest`] answers beyond `Done`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeResponse {
    /// The directory holding the volumes.
    Root(String),
    /// Sizes in bytes.
    Sizes(Vec<u64>),
}

/// The directory a container sees of volume `name` under the volumes directory `root`:
/// `<root>/<name>/_data`. Pure.
pub fn mountpoint(root: &str, name: &str) -> String {
    format!("{}/{name}/_data", root.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mountpoint_is_the_data_folder_of_the_volume() {
        assert_eq!(
            mountpoint("/var/lib/wharf/volumes", "v1"),
            "/var/lib/wharf/volumes/v1/_data"
        );
        assert_eq!(mountpoint("/x/volumes/", "a"), "/x/volumes/a/_data");
    }
}
