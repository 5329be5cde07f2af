//! What the controller and an agent say about `docker cp`: the stat of a container path
//! ([`PathStat`]) and how to extract into one ([`ExtractOptions`]).
//!
//! ```text
//!  controller ──path, ExtractOptions──► agent ──► container rootfs
//!  controller ◄──PathStat──────────────  agent ◄── container rootfs
//! ```

use serde::{Deserialize, Serialize};

/// What `HEAD /containers/{id}/archive` reports about a path (Docker's
/// `ContainerPathStat`, sent base64 JSON in `X-Docker-Container-Path-Stat`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStat {
    /// Base name of the path as asked (`/` for the root).
    pub name: String,
    /// Size in bytes.
    pub size: i64,
    /// Go `os.FileMode` bits: permissions, plus type bits (directory `1<<31`, symlink
    /// `1<<27`, ...).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nanos: u32,
    /// For a symlink, its target fully resolved inside the container (absolute).
    pub link_target: String,
}

/// What `PUT /containers/{id}/archive` may do beyond extracting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// Own the new files by the container's user (`docker cp -a`): its `User` spec,
    /// resolved against the container's `/etc/passwd` and `/etc/group`.
    pub chown_to_user: Option<String>,
}

/// A container path as moby's `ResolvePath` reads it: absolute, cleaned lexically (`..`
/// stops at `/`), and whether the last component is followed when it is a symlink (only
/// when the path ends in `/` or `/.`). Pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPath {
    /// Components below the root.
    pub comps: Vec<Vec<u8>>,
    /// Follow a symlink in the last component.
    pub follow_last: bool,
}

impl ContainerPath {
    /// Parse `path` (relative paths are taken from `/`).
    pub fn parse(path: &str) -> ContainerPath {
        let mut comps: Vec<Vec<u8>> = Vec::new();
        for c in path.as_bytes().split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    comps.pop();
                }
                c => comps.push(c.to_vec()),
            }
        }
        let follow_last = path.ends_with('/') || path.ends_with("/.") || path == ".";
        ContainerPath { comps, follow_last }
    }

    /// The name an archive of this path uses for it: its last component, `/` for the root.
    pub fn name(&self) -> String {
        self.comps
            .last()
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .unwrap_or_else(|| "/".to_string())
    }
}

/// What one `COPY`/`ADD` of a build copies (the agent collects it from a container's
/// filesystem for `COPY --from`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySpec {
    /// `COPY` or `ADD` (for messages).
    pub keyword: String,
    /// Sources as written (expanded), relative to the root.
    pub sources: Vec<String>,
    /// The destination: absolute, cleaned, without a trailing `/`, `""` for `/`.
    pub dest: String,
    /// The destination is a directory (`/` at the end, several sources, a glob, or an
    /// existing directory of the image).
    pub dest_is_dir: bool,
    /// `--chmod`: permission bits for every entry.
    pub chmod: Option<u32>,
    /// Numeric owner for every entry (`--chown=uid:gid`, or 0:0).
    pub owner: (u64, u64),
    /// `ADD`: unpack local tar archives.
    pub unpack_archives: bool,
    /// The destination directory does not exist yet: a directory source then gives it
    /// its own entry (owner and mode as `--chown`/`--chmod` say). Not part of the hash.
    pub dest_missing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn records_round_trip_through_the_codec() {
        let stat = PathStat {
            name: "x".into(),
            size: 3,
            mode: 1 << 27 | 0o777,
            mtime_secs: -1,
            mtime_nanos: 5,
            link_target: "/y".into(),
        };
        assert_eq!(decode::<PathStat>(&encode(&stat).unwrap()).unwrap(), stat);
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir: true,
            chown_to_user: Some("1000:1000".into()),
        };
        assert_eq!(
            decode::<ExtractOptions>(&encode(&opts).unwrap()).unwrap(),
            opts
        );
    }
}
