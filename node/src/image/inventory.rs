//! What layers the store holds, for the agent's inventory reports.

use super::store::{ImageStore, StoreError};
use std::collections::BTreeSet;
use std::path::Path;
use wharf_protocol::agent::host::LayerInventory;
use wharf_protocol::{ChainId, DiffId, Digest};

/// The 32 bytes of a 64-hex-digit name; `None` for any other name.
fn hex32(name: &str) -> Option<Digest> {
    let mut raw = [0u8; 32];
    (name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| hex::decode_to_slice(name, &mut raw).ok())
        .flatten()
        .map(|()| Digest(raw))
}

/// Names of the entries of `dir` (none if it does not exist).
fn names(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, StoreError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                action: "read",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    Ok(rd
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect())
}

impl ImageStore {
    /// The layers this store holds: unpacked image layers by chain (a `size` file marks
    /// an image layer; writable layers have none), canonical tars by DiffID.
    pub fn inventory(&self) -> Result<LayerInventory, StoreError> {
        let layout = self.layout();
        let chains: BTreeSet<ChainId> = names(&layout.overlay())?
            .into_iter()
            .filter(|(_, path)| path.join("size").is_file() && path.join("diff").is_dir())
            .filter_map(|(name, _)| hex32(&name).map(ChainId))
            .collect();
        let tars: BTreeSet<DiffId> = names(&layout.layer_tars())?
            .into_iter()
            .filter_map(|(name, _)| name.strip_suffix(".tar").and_then(hex32).map(DiffId))
            .collect();
        Ok(LayerInventory { chains, tars })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_image_layers_and_canonical_tars_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let layout = store.layout();
        let chain = ChainId(Digest::of(b"c"));
        let layer = layout.layer_dir(&chain);
        std::fs::create_dir_all(layer.join("diff")).unwrap();
        std::fs::write(layer.join("size"), "0").unwrap();
        // A writable layer: 64 hex digits, no size file.
        std::fs::create_dir_all(layout.rw_dir(&"a".repeat(64)).join("diff")).unwrap();
        // A temporary of a load in progress.
        std::fs::create_dir_all(layout.overlay().join("tmp-load-1")).unwrap();
        let diff = DiffId(Digest::of(b"d"));
        std::fs::create_dir_all(layout.layer_tars()).unwrap();
        std::fs::write(layout.layer_tar(&diff), b"").unwrap();
        std::fs::write(layout.layer_tars().join("junk.tar"), b"").unwrap();
        let inv = store.inventory().unwrap();
        assert_eq!(inv.chains, BTreeSet::from([chain]));
        assert_eq!(inv.tars, BTreeSet::from([diff]));
    }
}
