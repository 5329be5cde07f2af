//! Freeing layers no image or container needs any more.
//!
//! The store keeps no reference counts on disk: the controller knows which images and
//! containers exist, so it passes their layer chains and everything else is removed. What
//! to remove is a pure function of the directory listing and the chains ([`unused`]); the
//! removal is thin. A layer directory is first renamed to `.tmp-*` (so a crash midway
//! leaves nothing half-visible; [`ImageStore::open`] finishes the job).

use super::store::{ImageStore, StoreError};
use std::collections::HashSet;
use std::io;
use std::path::Path;
pub use wharf_protocol::image::Collected;
use wharf_protocol::{ChainId, DiffId, Digest};

/// The names among `layer_dirs` (ChainID hex) and `tar_names` (DiffID hex) that none of
/// `in_use` (DiffID chains, bottom first) needs (pure).
pub fn unused(
    layer_dirs: &[String],
    tar_names: &[String],
    in_use: &[Vec<DiffId>],
) -> (Vec<String>, Vec<String>) {
    let mut chains = HashSet::new();
    let mut diffs = HashSet::new();
    for ids in in_use {
        chains.extend(ChainId::chain(ids).iter().map(|c| c.0.hex()));
        diffs.extend(ids.iter().map(|d| d.0.hex()));
    }
    let dirs = layer_dirs
        .iter()
        .filter(|d| !chains.contains(*d))
        .cloned()
        .collect();
    let tars = tar_names
        .iter()
        .filter(|t| !diffs.contains(*t))
        .cloned()
        .collect();
    (dirs, tars)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

impl ImageStore {
    /// Remove every unpacked layer and canonical tar that no chain of `in_use` needs; call
    /// after images are deleted, with the layer chains of every image *and* container
    /// still known. Writable layers are never touched. Call under a lock that keeps loads
    /// from finishing meanwhile, or their fresh layers may go too.
    pub fn remove_unused_layers(&self, in_use: &[Vec<DiffId>]) -> Result<Collected, StoreError> {
        let layout = self.layout();
        let overlay = layout.overlay();
        let mut dirs = Vec::new();
        for e in std::fs::read_dir(&overlay).map_err(io_err("read", &overlay))? {
            let e = e.map_err(io_err("read", &overlay))?;
            let name = e.file_name().to_string_lossy().into_owned();
            // Image layers have a `size` file; writable layers (also 64 hex) do not.
            if is_hex64(&name) && e.path().join("size").is_file() {
                dirs.push(name);
            }
        }
        let tars_dir = layout.layer_tars();
        let mut tars = Vec::new();
        for e in std::fs::read_dir(&tars_dir).map_err(io_err("read", &tars_dir))? {
            let e = e.map_err(io_err("read", &tars_dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(hex) = name.strip_suffix(".tar").filter(|h| is_hex64(h)) {
                tars.push(hex.to_string());
            }
        }
        let (dead_dirs, dead_tars) = unused(&dirs, &tars, in_use);
        let mut out = Collected::default();
        // Children before parents is not needed (a child's `lower` only names links), but
        // removing uppermost first keeps any chain prefix mountable until the end.
        let mut dead_dirs = dead_dirs;
        dead_dirs.sort_by_key(|d| std::cmp::Reverse(self.depth(d)));
        for hex in dead_dirs {
            let mut raw = [0u8; 32];
            if hex::decode_to_slice(&hex, &mut raw).is_ok() && self.is_pinned(&ChainId(Digest(raw)))
            {
                // A `docker save` is reading it; the next collection frees it.
                tracing::debug!(layer = %hex, "unused layer kept while it is being saved");
                continue;
            }
            let dir = overlay.join(&hex);
            out.bytes += std::fs::read_to_string(dir.join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if let Ok(link) = std::fs::read_to_string(dir.join("link")) {
                let link = link.trim();
                if link.len() == super::layout::LINK_LEN
                    && link.bytes().all(|b| b.is_ascii_uppercase())
                {
                    let p = layout.links().join(link);
                    match std::fs::remove_file(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err("remove", &p)(e)),
                    }
                }
            }
            let tmp = overlay.join(self.tmp_name("gc"));
            std::fs::rename(&dir, &tmp).map_err(io_err("rename", &dir))?;
            std::fs::remove_dir_all(&tmp).map_err(io_err("remove", &tmp))?;
            let mut raw = [0u8; 32];
            if hex::decode_to_slice(&hex, &mut raw).is_ok() {
                out.layers.push(ChainId(Digest(raw)));
            }
            tracing::info!(layer = %hex, "unused layer removed");
        }
        for hex in dead_tars {
            let p = tars_dir.join(format!("{hex}.tar"));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p)(e)),
            }
        }
        Ok(out)
    }

    /// How many layers sit below the layer dir `hex` (entries of its `lower` file).
    fn depth(&self, hex: &str) -> usize {
        std::fs::read_to_string(self.layout().overlay().join(hex).join("lower"))
            .map(|l| l.split(':').filter(|s| !s.is_empty()).count())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::RawTar;

    #[test]
    fn unused_keeps_every_prefix_of_every_chain() {
        let d = |b: &[u8]| DiffId(Digest::of(b));
        let (a, b, c) = (d(b"a"), d(b"b"), d(b"c"));
        let ab = ChainId::chain(&[a, b]);
        let ac = ChainId::chain(&[a, c]);
        let dirs: Vec<String> = [ab[0], ab[1], ac[1]].iter().map(|c| c.0.hex()).collect();
        let tars: Vec<String> = [a, b, c].iter().map(|d| d.0.hex()).collect();
        let (dd, dt) = unused(&dirs, &tars, &[vec![a, b]]);
        assert_eq!(dd, vec![ac[1].0.hex()]);
        assert_eq!(dt, vec![c.0.hex()]);
        let (dd, dt) = unused(&dirs, &tars, &[]);
        assert_eq!((dd.len(), dt.len()), (3, 3));
    }

    #[test]
    fn unused_layers_and_tars_are_removed_and_used_ones_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let base = RawTar::default().file("base", 0o644, b"base").finish();
        let top = RawTar::default().file("top", 0o644, b"top!").finish();
        let ids = [DiffId(Digest::of(&base)), DiffId(Digest::of(&top))];
        let chain = ChainId::chain(&ids);
        s.unpack_layer(None, &chain[0], &ids[0], base.as_slice())
            .unwrap();
        s.unpack_layer(Some(&chain[0]), &chain[1], &ids[1], top.as_slice())
            .unwrap();
        s.create_rw_layer(&"c".repeat(64), &ids[..1]).unwrap();
        let links_before = std::fs::read_dir(s.layout().links()).unwrap().count();

        let got = s.remove_unused_layers(&[ids[..1].to_vec()]).unwrap();
        assert_eq!(got.layers, vec![chain[1]]);
        assert_eq!(got.bytes, 4);
        assert!(s.has_layers(&ids[..1]));
        assert!(!s.has_layer(&chain[1]));
        assert!(!s.has_layer_tar(&chain[1], &ids[1]));
        assert!(s.has_layer_tar(&chain[0], &ids[0]));
        assert!(s.layout().rw_dir(&"c".repeat(64)).is_dir());
        assert_eq!(
            std::fs::read_dir(s.layout().links()).unwrap().count(),
            links_before - 1
        );

        s.remove_rw_layer(&"c".repeat(64)).unwrap();
        let got = s.remove_unused_layers(&[]).unwrap();
        assert_eq!(got.layers, vec![chain[0]]);
        assert_eq!(std::fs::read_dir(s.layout().links()).unwrap().count(), 0);
        let left: Vec<_> = std::fs::read_dir(s.layout().overlay())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["l"]);
    }
}
