//! Where the store keeps things on disk, and the overlay mount a layer chain needs: pure
//! functions of the data directory and the chain, no I/O.
//!
//! ```text
//! <root>/overlay2/<chainid-hex>/diff        unpacked layer (named by ChainID, as moby)
//!                              /link        26-char short name of this layer
//!                              /lower       "l/<parent>:l/<grandparent>:..." (not on the bottom layer)
//!                              /work        empty (non-bottom layers, as moby)
//!                              /size        bytes of regular files in diff (wharf only)
//!                              /tar-split   the layer tar minus file contents (wharf only;
//!                                           `docker save` regenerates the tar from it + diff)
//!                              /stash/<n>   entries the layer itself replaced (tar-split)
//! <root>/overlay2/<container-id>/{diff,work,merged,link,lower}   writable layer
//! <root>/overlay2/<container-id>-init/{diff,link}  mount points and /.dockerenv, below it
//! <root>/overlay2/l/<short> -> ../<dir>/diff                     keeps mount data short
//! <root>/overlay2/.tmp-*                    half-built dirs, removed at open
//! <root>/image/layers/<diffid-hex>.tar      canonical layer tar of layers made by commit or
//!                                           import (loaded layers have a tar-split instead)
//! <root>/image/tmp/                         spooled archives being loaded
//! ```

use super::store::StoreError;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};
use wharf_protocol::{ChainId, DiffId};

/// Length of the short names in `overlay2/l/`, as moby's `idLength`.
pub const LINK_LEN: usize = 26;

/// The most lower layers a container may stack, as moby's `maxDepth`.
pub const MAX_LAYERS: usize = 128;

/// Prefix of half-built directories under `overlay2/` and `image/`.
pub const TMP_PREFIX: &str = ".tmp-";

/// Paths of a store rooted at a data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout of the store at `<root>`.
    pub fn new(root: &Path) -> Layout {
        Layout {
            root: root.to_path_buf(),
        }
    }

    /// `<root>/overlay2`, the directory `l/` names are relative to.
    pub fn overlay(&self) -> PathBuf {
        self.root.join("overlay2")
    }

    /// `<root>/overlay2/l`.
    pub fn links(&self) -> PathBuf {
        self.overlay().join("l")
    }

    /// `<root>/overlay2/<chainid-hex>`, the unpacked layer `chain` names.
    pub fn layer_dir(&self, chain: &ChainId) -> PathBuf {
        self.overlay().join(chain.0.hex())
    }

    /// `<root>/overlay2/<container-id>`, a container's writable layer.
    pub fn rw_dir(&self, container_id: &str) -> PathBuf {
        self.overlay().join(container_id)
    }

    /// `<root>/image`.
    pub fn image(&self) -> PathBuf {
        self.root.join("image")
    }

    /// `<root>/image/layers`, the canonical layer tars.
    pub fn layer_tars(&self) -> PathBuf {
        self.image().join("layers")
    }

    /// `<root>/image/layers/<diffid-hex>.tar`.
    pub fn layer_tar(&self, diff_id: &DiffId) -> PathBuf {
        self.layer_tars().join(format!("{}.tar", diff_id.0.hex()))
    }

    /// `<root>/image/tmp`, where archives are spooled while they load.
    pub fn spool(&self) -> PathBuf {
        self.image().join("tmp")
    }

    /// The mount of container `container_id`'s writable layer over `lowers` (the `l/<short>`
    /// names, uppermost first).
    pub fn rw_mount(&self, container_id: &str, lowers: Vec<String>) -> MountSpec {
        let dir = self.rw_dir(container_id);
        MountSpec {
            lowerdir: lowers,
            upperdir: dir.join("diff"),
            workdir: dir.join("work"),
            target: dir.join("merged"),
            cwd: self.overlay(),
        }
    }
}

/// The short name under `l/` for the layer directory `dir_name`: 26 uppercase letters
/// derived from the name (not random, so the layout is a pure function of the chain and two
/// agents racing on one layer agree).
pub fn link_name(dir_name: &str) -> String {
    let hash = Sha256::digest(format!("wharf-overlay2-link {dir_name}").as_bytes());
    hash.iter()
        .take(LINK_LEN)
        .map(|b| char::from(b'A' + b % 26))
        .collect()
}

/// The `lower` file of a layer whose parent has short name `parent_link` and `lower`
/// file `parent_lower` (`None` for the bottom layer).
pub fn child_lower(parent_link: &str, parent_lower: Option<&str>) -> String {
    match parent_lower {
        Some(l) if !l.is_empty() => format!("l/{parent_link}:{l}"),
        _ => format!("l/{parent_link}"),
    }
}

/// The directory name of a container's init layer, `<id>-init` as moby names it.
pub fn init_dir_name(container_id: &str) -> String {
    format!("{container_id}-init")
}

/// Whether `id` may name a writable layer directory: a single path component of ASCII
/// letters, digits, `_` and `-`, at most 128 bytes, and not `l`.
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "l"
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The overlay mount of a container's root filesystem, as [`super::mount_overlay`] does it.
///
/// `lowerdir` names are relative to `cwd`, which is why the mount changes directory first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// `l/<26 chars>` names of the image layers, uppermost first.
    pub lowerdir: Vec<String>,
    /// The writable layer's `diff` directory.
    pub upperdir: PathBuf,
    /// The writable layer's `work` directory (same filesystem as `upperdir`).
    pub workdir: PathBuf,
    /// Where the merged root filesystem is mounted.
    pub target: PathBuf,
    /// `<root>/overlay2`, the directory the `l/` names are relative to.
    pub cwd: PathBuf,
}

impl MountSpec {
    /// The overlay option string for this host's page size; call just before mounting.
    pub fn data(&self) -> Result<String, StoreError> {
        self.data_for_page_size(page_size())
    }

    /// The overlay option string `lowerdir=l/A:l/B,upperdir=..,workdir=..`, as moby builds
    /// it: absolute upper and work dirs when the string fits in `page_size - 512` bytes,
    /// otherwise upper and work relative to `cwd`; an error if even that does not fit the
    /// kernel's one page (`page_size - 1` bytes). Pure; call [`MountSpec::data`] in code.
    pub fn data_for_page_size(&self, page_size: usize) -> Result<String, StoreError> {
        if self.lowerdir.is_empty() {
            return Err(StoreError::NoLowerLayers);
        }
        // The image's layers and the container's init layer.
        if self.lowerdir.len() > MAX_LAYERS + 1 {
            return Err(StoreError::TooManyLayers {
                count: self.lowerdir.len(),
                max: MAX_LAYERS + 1,
            });
        }
        for p in self
            .lowerdir
            .iter()
            .map(String::as_str)
            .chain([path_str(&self.upperdir)?, path_str(&self.workdir)?])
        {
            if p.is_empty() || p.contains([',', ':', '\0']) {
                return Err(StoreError::BadMountPath(p.to_string()));
            }
        }
        let lower = self.lowerdir.join(":");
        let absolute = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            path_str(&self.upperdir)?,
            path_str(&self.workdir)?
        );
        if absolute.len() <= page_size.saturating_sub(512) {
            return Ok(absolute);
        }
        let rel = |p: &Path| -> Result<String, StoreError> {
            let r = p
                .strip_prefix(&self.cwd)
                .map_err(|_| StoreError::BadMountPath(p.display().to_string()))?;
            Ok(path_str(r)?.to_string())
        };
        let relative = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            rel(&self.upperdir)?,
            rel(&self.workdir)?
        );
        if relative.len() > page_size.saturating_sub(1) {
            return Err(StoreError::MountDataTooLong {
                len: relative.len(),
                max: page_size.saturating_sub(1),
            });
        }
        Ok(relative)
    }
}

/// The option string of a read-only overlay over `lowers` (`l/<short>` names, uppermost
/// first, relative to `overlay2/`), as `docker export` mounts a container's view: at least
/// two layers (the kernel's rule without an upper dir), at most [`MAX_LAYERS`] + 2 (the
/// writable and init layers over the image's), and within one page. Pure.
pub fn readonly_mount_data(lowers: &[String]) -> Result<String, StoreError> {
    readonly_mount_data_for_page_size(lowers, page_size())
}

/// [`readonly_mount_data`] for a given page size; unit-tested.
pub fn readonly_mount_data_for_page_size(
    lowers: &[String],
    page_size: usize,
) -> Result<String, StoreError> {
    if lowers.len() < 2 {
        return Err(StoreError::NoLowerLayers);
    }
    if lowers.len() > MAX_LAYERS + 2 {
        return Err(StoreError::TooManyLayers {
            count: lowers.len(),
            max: MAX_LAYERS + 2,
        });
    }
    for l in lowers {
        if l.is_empty() || l.contains([',', ':', '\0']) {
            return Err(StoreError::BadMountPath(l.clone()));
        }
    }
    let data = format!("lowerdir={}", lowers.join(":"));
    if data.len() > page_size.saturating_sub(1) {
        return Err(StoreError::MountDataTooLong {
            len: data.len(),
            max: page_size.saturating_sub(1),
        });
    }
    Ok(data)
}

fn path_str(p: &Path) -> Result<&str, StoreError> {
    p.to_str()
        .ok_or_else(|| StoreError::BadMountPath(p.display().to_string()))
}

/// This host's page size (4096 when it cannot be read).
pub fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_protocol::Digest;

    fn spec(layers: usize) -> MountSpec {
        let layout = Layout::new(Path::new("/var/lib/wharf"));
        let lowers = (0..layers)
            .map(|i| format!("l/{}", link_name(&i.to_string())))
            .collect();
        layout.rw_mount(&"c".repeat(64), lowers)
    }

    #[test]
    fn link_names_are_26_uppercase_letters_and_stable() {
        let a = link_name("abc");
        assert_eq!(a.len(), LINK_LEN);
        assert!(a.bytes().all(|b| b.is_ascii_uppercase()));
        assert_eq!(a, link_name("abc"));
        assert_ne!(a, link_name("abd"));
    }

    #[test]
    fn lower_files_list_the_parent_first() {
        assert_eq!(child_lower("AAA", None), "l/AAA");
        assert_eq!(child_lower("BBB", Some("l/AAA")), "l/BBB:l/AAA");
    }

    #[test]
    fn small_chains_use_absolute_upper_and_work() {
        let s = spec(2);
        let d = s.data_for_page_size(4096).unwrap();
        let want = format!(
            "lowerdir={}:{},upperdir=/var/lib/wharf/overlay2/{c}/diff,workdir=/var/lib/wharf/overlay2/{c}/work",
            s.lowerdir[0],
            s.lowerdir[1],
            c = "c".repeat(64)
        );
        assert_eq!(d, want);
    }

    #[test]
    fn long_chains_switch_to_relative_paths_then_fail_past_a_page() {
        let s = spec(MAX_LAYERS + 1);
        let d = s.data_for_page_size(4096).unwrap();
        assert!(d.contains(&format!(",upperdir={}/diff,", "c".repeat(64))));
        assert!(d.len() <= 4095);
        assert!(d.len() > 4096 - 512);
        // The same chain cannot fit a smaller page.
        assert!(matches!(
            s.data_for_page_size(2048),
            Err(StoreError::MountDataTooLong { .. })
        ));
        assert!(matches!(
            spec(MAX_LAYERS + 2).data_for_page_size(1 << 20),
            Err(StoreError::TooManyLayers { .. })
        ));
        assert!(matches!(
            spec(0).data_for_page_size(4096),
            Err(StoreError::NoLowerLayers)
        ));
    }

    #[test]
    fn separators_in_paths_are_refused() {
        let mut s = spec(1);
        s.upperdir = PathBuf::from("/a,lowerdir=/etc/diff");
        assert!(matches!(
            s.data_for_page_size(4096),
            Err(StoreError::BadMountPath(_))
        ));
        let mut s = spec(1);
        s.lowerdir[0] = "l/A:/".to_string();
        assert!(s.data_for_page_size(4096).is_err());
    }

    #[test]
    fn readonly_views_stack_the_writable_layer_over_the_image() {
        let lowers: Vec<String> = (0..MAX_LAYERS + 2)
            .map(|i| format!("l/{}", link_name(&i.to_string())))
            .collect();
        let d = readonly_mount_data_for_page_size(&lowers, 4096).unwrap();
        assert!(d.starts_with(&format!("lowerdir={}:{}", lowers[0], lowers[1])));
        assert!(d.len() < 4096);
        assert!(matches!(
            readonly_mount_data_for_page_size(&lowers[..1], 4096),
            Err(StoreError::NoLowerLayers)
        ));
        let mut too_many = lowers.clone();
        too_many.push("l/X".into());
        assert!(readonly_mount_data_for_page_size(&too_many, 1 << 20).is_err());
        assert!(readonly_mount_data_for_page_size(&lowers, 2048).is_err());
        let bad = vec!["l/A".to_string(), "l/B,upperdir=/".to_string()];
        assert!(readonly_mount_data_for_page_size(&bad, 4096).is_err());
    }

    #[test]
    fn container_ids_must_be_one_safe_component() {
        assert!(valid_container_id(&"a".repeat(64)));
        for bad in ["", "l", "..", "a/b", ".tmp-x", "a b", &"a".repeat(129)] {
            assert!(!valid_container_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_follow_the_moby_layout() {
        let l = Layout::new(Path::new("/d"));
        let c = ChainId(Digest::of(b"x"));
        assert_eq!(
            l.layer_dir(&c),
            PathBuf::from(format!("/d/overlay2/{}", c.0.hex()))
        );
        let d = DiffId(Digest::of(b"y"));
        assert_eq!(
            l.layer_tar(&d),
            PathBuf::from(format!("/d/image/layers/{}.tar", d.0.hex()))
        );
    }
}
