//! What a simulated agent reads of a `docker save` archive (pure): the images it names,
//! as an agent's `Load` answers them, and the layer chains a host holding them has. The
//! layers themselves are skipped: a simulated host stores nothing, and the DiffIDs are
//! taken from each config's `rootfs.diff_ids` as they stand.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Read;
use wharf_protocol::agent::host::LayerInventory;
use wharf_protocol::image::LoadedImage;
use wharf_protocol::{ChainId, DiffId, Digest, ImageId};

/// The images of the `docker save` archive `bytes`, in `manifest.json` order.
pub fn images_of(bytes: &[u8]) -> Result<Vec<LoadedImage>> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for entry in ar.entries().context("read the archive")? {
        let mut entry = entry.context("read an archive entry")?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        // Manifests and configs are small; big members (layer tars) are read past.
        if path == "manifest.json" || entry.size() < 1 << 20 {
            let mut data = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut data)?;
            files.insert(path, data);
        }
    }
    let manifest = files
        .get("manifest.json")
        .context("the archive has no manifest.json")?;
    let manifest: serde_json::Value =
        serde_json::from_slice(manifest).context("manifest.json is not JSON")?;
    let mut out = Vec::new();
    for m in manifest.as_array().context("manifest.json is not a list")? {
        let config_path = m["Config"]
            .as_str()
            .context("a manifest entry has no Config")?;
        let config = files
            .get(config_path)
            .with_context(|| format!("the archive has no {config_path}"))?
            .clone();
        let parsed: serde_json::Value = serde_json::from_slice(&config)
            .with_context(|| format!("{config_path} is not JSON"))?;
        let diff_ids = parsed["rootfs"]["diff_ids"]
            .as_array()
            .with_context(|| format!("{config_path} has no rootfs.diff_ids"))?
            .iter()
            .map(|d| {
                d.as_str()
                    .context("a DiffID is not a string")?
                    .parse::<DiffId>()
                    .map_err(anyhow::Error::from)
            })
            .collect::<Result<Vec<_>>>()?;
        let layers = m["Layers"].as_array().map_or(0, Vec::len);
        if layers != diff_ids.len() {
            bail!(
                "{config_path} names {} layers, its manifest entry {layers}",
                diff_ids.len()
            );
        }
        let repo_tags = m["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        out.push(LoadedImage {
            id: ImageId(Digest::of(&config)),
            config,
            diff_ids,
            repo_tags,
            size: 0,
        });
    }
    Ok(out)
}

/// The layers a host holding `images` has: every chain and every canonical tar.
pub fn inventory_of(images: &[LoadedImage]) -> LayerInventory {
    let mut inv = LayerInventory::default();
    for i in images {
        inv.chains.extend(ChainId::chain(&i.diff_ids));
        inv.tars.extend(i.diff_ids.iter().copied());
    }
    inv
}

/// The bench image `sim:latest` (one tiny layer, command `true`) as a `docker save`
/// archive: written to `dir/sim.tar`, and its bytes.
pub fn sim_image(dir: &std::path::Path) -> Result<Vec<u8>> {
    use crate::images::{layer_tar, write_save_tar, ImageSpec, LayerEntry};
    let layer = layer_tar(&[LayerEntry::File {
        path: "hello".into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        data: b"simulated\n".to_vec(),
    }])?;
    let out = dir.join("sim.tar");
    write_save_tar(
        &out,
        &[ImageSpec {
            name_tag: "sim:latest".into(),
            layers: vec![layer],
            cmd: vec!["true".into()],
        }],
    )?;
    Ok(std::fs::read(out)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::{layer_tar, write_save_tar, ImageSpec, LayerEntry};

    #[test]
    fn an_archive_gives_its_images_and_their_chains() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sim.tar");
        let layers = vec![
            layer_tar(&[LayerEntry::File {
                path: "a".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                data: b"one".to_vec(),
            }])
            .unwrap(),
            layer_tar(&[LayerEntry::File {
                path: "b".into(),
                mode: 0o644,
                uid: 0,
                gid: 0,
                data: b"two".to_vec(),
            }])
            .unwrap(),
        ];
        write_save_tar(
            &out,
            &[ImageSpec {
                name_tag: "sim:latest".into(),
                layers: layers.clone(),
                cmd: vec!["true".into()],
            }],
        )
        .unwrap();
        let images = images_of(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(images.len(), 1);
        let want: Vec<DiffId> = layers.iter().map(|l| DiffId(Digest::of(l))).collect();
        assert_eq!(images[0].diff_ids, want);
        assert_eq!(images[0].repo_tags, vec!["sim:latest".to_string()]);
        assert_eq!(images[0].id, ImageId(Digest::of(&images[0].config)));
        let inv = inventory_of(&images);
        assert_eq!(inv.chains.len(), 2);
        assert_eq!(inv.tars.len(), 2);
        assert!(images_of(b"not a tar at all").is_err());
    }
}
