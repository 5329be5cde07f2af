//! `docker save`: writing images of the store as a Docker 25+ archive.
//!
//! ```text
//!  SaveImage{config, diff_ids, repo_tags} ──► save_plan (pure: names, index, manifests)
//!                                                 │
//!  image/layers/<diffid>.tar ──────────────────► tar stream: blobs/sha256/<diffid> (layers,
//!                                                 byte for byte as loaded), config, OCI
//!                                                 manifest, index.json, manifest.json,
//!                                                 oci-layout, repositories
//! ```
//!
//! Layers are the canonical tars the store kept at load, so their sha256 is the DiffID the
//! config names and `docker load` of the archive gives back the same image ID.

use super::store::{ImageStore, LayerTar, StoreError};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
pub use wharf_protocol::image::SaveImage;
use wharf_protocol::{ChainId, DiffId, Digest};

/// mtime of every archive member (Docker writes the Unix epoch too).
const MTIME: u64 = 0;

/// Why an archive could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The canonical tar of a layer is not on this host.
    #[error("layer {0} has no stored tar on this host")]
    MissingLayerTar(DiffId),
    /// A layer tar could not be opened or read.
    #[error("read layer tar {path}: {source}")]
    ReadLayer {
        /// The tar.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A layer's tar could not be opened.
    #[error("open layer tar: {0}")]
    OpenLayer(#[source] StoreError),
    /// Writing the archive failed (usually: the client went away).
    #[error("write archive: {0}")]
    Write(#[source] io::Error),
    /// A JSON document could not be serialised.
    #[error("encode {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// The small JSON members of an archive and the blobs it needs: a pure function of the
/// images, so it is unit-tested without a store.
#[derive(Debug, PartialEq, Eq)]
pub struct SavePlan {
    /// `(hex, bytes)` of configs and OCI manifests, sorted, unique.
    pub json_blobs: Vec<(String, Vec<u8>)>,
    /// Layers to write as `blobs/sha256/<diffid-hex>`, first use order, unique.
    pub layers: Vec<DiffId>,
    /// `index.json`.
    pub index: Vec<u8>,
    /// `manifest.json`.
    pub manifest: Vec<u8>,
    /// `repositories`.
    pub repositories: Vec<u8>,
}

/// `busybox:latest` → (`busybox`, `latest`); a port in the name is not a tag.
fn split_tag(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
        _ => (reference.to_string(), "latest".to_string()),
    }
}

/// The containerd name Docker writes in `index.json`: `docker.io/library/busybox:latest`.
fn full_name(repo: &str, tag: &str) -> String {
    let first = repo.split('/').next().unwrap_or(repo);
    let has_domain =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        format!("{repo}:{tag}")
    } else if repo.contains('/') {
        format!("docker.io/{repo}:{tag}")
    } else {
        format!("docker.io/library/{repo}:{tag}")
    }
}

fn encode(what: &'static str, v: &serde_json::Value) -> Result<Vec<u8>, SaveError> {
    serde_json::to_vec(v).map_err(|source| SaveError::Json { what, source })
}

/// Decide every member of the archive for `images`, given each layer tar's length (pure).
pub fn save_plan(
    images: &[SaveImage],
    layer_size: impl Fn(&DiffId) -> u64,
) -> Result<SavePlan, SaveError> {
    let mut json_blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut layers: Vec<DiffId> = Vec::new();
    let mut index_manifests = Vec::new();
    let mut manifest_json = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for img in images {
        let config_hex = Digest::of(&img.config).hex();
        let descs: Vec<serde_json::Value> = img
            .diff_ids
            .iter()
            .map(|d| {
                json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d.to_string(),
                    "size": layer_size(d),
                })
            })
            .collect();
        for d in &img.diff_ids {
            if !layers.contains(d) {
                layers.push(*d);
            }
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_hex}"),
                "size": img.config.len(),
            },
            "layers": descs,
        });
        let manifest = encode("manifest", &manifest)?;
        let manifest_hex = Digest::of(&manifest).hex();
        let layer_paths: Vec<String> = img
            .diff_ids
            .iter()
            .map(|d| format!("blobs/sha256/{}", d.0.hex()))
            .collect();
        if img.repo_tags.is_empty() {
            index_manifests.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_hex}"),
                "size": manifest.len(),
            }));
        }
        for r in &img.repo_tags {
            let (repo, tag) = split_tag(r);
            index_manifests.push(json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{manifest_hex}"),
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": full_name(&repo, &tag),
                    "org.opencontainers.image.ref.name": tag,
                },
            }));
            if let Some(top) = img.diff_ids.last() {
                repositories
                    .entry(repo)
                    .or_default()
                    .insert(tag, top.0.hex());
            }
        }
        manifest_json.push(json!({
            "Config": format!("blobs/sha256/{config_hex}"),
            "RepoTags": if img.repo_tags.is_empty() { serde_json::Value::Null } else { json!(img.repo_tags) },
            "Layers": layer_paths,
        }));
        json_blobs.insert(config_hex, img.config.clone());
        json_blobs.insert(manifest_hex, manifest);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_manifests,
    });
    Ok(SavePlan {
        json_blobs: json_blobs.into_iter().collect(),
        layers,
        index: encode("index.json", &index)?,
        manifest: encode("manifest.json", &json!(manifest_json))?,
        repositories: encode("repositories", &json!(repositories))?,
    })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// An archive ready to write: its plan and every layer tar already open, so the layers may
/// be unlinked meanwhile (a collection after `rmi`) without harm.
pub struct PreparedSave {
    plan: SavePlan,
    tars: Vec<(DiffId, LayerTar)>,
    images: usize,
}

impl ImageStore {
    /// Write `images` as a Docker 25+ `docker save` archive to `out` (blocking: call it
    /// inside `spawn_blocking`). Every layer must have its canonical tar on this host;
    /// that is checked before the first byte is written.
    pub fn save<W: Write>(&self, images: &[SaveImage], out: W) -> Result<W, SaveError> {
        self.prepare_save(images)?.write(out)
    }

    /// Open every layer tar `images` need and plan the archive; call under the layer lock,
    /// then [`PreparedSave::write`] without it (the client may read slowly).
    pub fn prepare_save(&self, images: &[SaveImage]) -> Result<PreparedSave, SaveError> {
        let mut tars = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for img in images {
            let chain = ChainId::chain(&img.diff_ids);
            for (d, c) in img.diff_ids.iter().zip(&chain) {
                if !seen.insert(*d) {
                    continue;
                }
                let tar = self.open_layer_tar(c, d).map_err(|e| match e {
                    StoreError::MissingLayer(_) => SaveError::MissingLayerTar(*d),
                    e => SaveError::OpenLayer(e),
                })?;
                tars.push((*d, tar));
            }
        }
        let sizes: std::collections::HashMap<DiffId, u64> =
            tars.iter().map(|(d, tar)| (*d, tar.len())).collect();
        let plan = save_plan(images, |d| sizes.get(d).copied().unwrap_or(0))?;
        Ok(PreparedSave {
            plan,
            tars,
            images: images.len(),
        })
    }
}

impl PreparedSave {
    /// Write the archive to `out`; returns `out`.
    pub fn write<W: Write>(self, out: W) -> Result<W, SaveError> {
        let PreparedSave { plan, tars, images } = self;
        let mut b = tar::Builder::new(out);
        let w = SaveError::Write;
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            "blobs/",
            io::empty(),
        )
        .map_err(w)?;
        b.append_data(
            &mut header(tar::EntryType::Directory, 0o755, 0),
            "blobs/sha256/",
            io::empty(),
        )
        .map_err(w)?;
        for (d, tar) in tars {
            let len = tar.len();
            let path = tar.describe();
            let mut h = header(tar::EntryType::Regular, 0o644, len);
            // A layer tar that changed length under us would corrupt the archive: take
            // exactly `len` bytes and fail if fewer arrive.
            let inner = tar.reader().map_err(|source| SaveError::ReadLayer {
                path: path.clone(),
                source,
            })?;
            let mut r = CountingReader {
                inner: io::Read::take(inner, len),
                n: 0,
            };
            b.append_data(&mut h, format!("blobs/sha256/{}", d.0.hex()), &mut r)
                .map_err(|source| SaveError::ReadLayer {
                    path: path.clone(),
                    source,
                })?;
            if r.n != len {
                return Err(SaveError::ReadLayer {
                    path,
                    source: io::Error::new(io::ErrorKind::UnexpectedEof, "layer tar shrank"),
                });
            }
        }
        for (hex, data) in &plan.json_blobs {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, format!("blobs/sha256/{hex}"), data.as_slice())
                .map_err(w)?;
        }
        for (name, data) in [
            ("index.json", &plan.index),
            ("manifest.json", &plan.manifest),
            ("oci-layout", &br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("repositories", &plan.repositories),
        ] {
            let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
            b.append_data(&mut h, name, data.as_slice()).map_err(w)?;
        }
        let out = b.into_inner().map_err(w)?;
        tracing::info!(images, layers = plan.layers.len(), "images saved");
        Ok(out)
    }
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: io::Read> io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::testutil::RawTar;
    use wharf_protocol::ChainId;

    fn image(layers: &[Vec<u8>], tags: &[&str]) -> SaveImage {
        let diff_ids: Vec<DiffId> = layers.iter().map(|l| DiffId(Digest::of(l))).collect();
        let ids: Vec<String> = diff_ids.iter().map(|d| d.to_string()).collect();
        SaveImage {
            config: serde_json::to_vec(&json!({"rootfs": {"type": "layers", "diff_ids": ids}}))
                .unwrap(),
            diff_ids,
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn plan_shares_layers_and_names_images_like_docker() {
        let base = RawTar::default().file("a", 0o644, b"a").finish();
        let top = RawTar::default().file("b", 0o644, b"b").finish();
        let one = image(std::slice::from_ref(&base), &["busybox:latest", "bb:1"]);
        let two = image(&[base.clone(), top], &["localhost:5000/app:v2"]);
        let plan = save_plan(&[one.clone(), two], |_| 7).unwrap();
        assert_eq!(plan.layers.len(), 2, "the shared base is written once");
        let index: serde_json::Value = serde_json::from_slice(&plan.index).unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            names,
            [
                "docker.io/library/busybox:latest",
                "docker.io/library/bb:1",
                "localhost:5000/app:v2"
            ]
        );
        let manifest: serde_json::Value = serde_json::from_slice(&plan.manifest).unwrap();
        assert_eq!(manifest[0]["RepoTags"], json!(["busybox:latest", "bb:1"]));
        assert_eq!(
            manifest[0]["Config"],
            format!("blobs/sha256/{}", Digest::of(&one.config).hex())
        );
        let repos: serde_json::Value = serde_json::from_slice(&plan.repositories).unwrap();
        assert_eq!(
            repos["localhost:5000/app"]["v2"].as_str().unwrap().len(),
            64
        );
        let by_id = save_plan(&[image(&[base], &[])], |_| 7).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&by_id.manifest).unwrap();
        assert!(manifest[0]["RepoTags"].is_null());
    }

    #[test]
    fn saved_archive_loads_back_to_the_same_image() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let base = RawTar::default()
            .dir("etc/", 0o755)
            .file("etc/x", 0o644, b"x\n")
            .finish();
        let img = image(std::slice::from_ref(&base), &["t:1"]);
        let chain = ChainId::chain(&img.diff_ids);
        s.unpack_layer(None, &chain[0], &img.diff_ids[0], base.as_slice())
            .unwrap();
        let bytes = s.save(std::slice::from_ref(&img), Vec::new()).unwrap();

        let other = tempfile::tempdir().unwrap();
        let s2 = ImageStore::open(other.path()).unwrap();
        let loaded = s2.load(bytes.as_slice()).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].config, img.config);
        assert_eq!(loaded[0].repo_tags, ["t:1"]);
        assert_eq!(
            crate::image::testutil::layer_tar_bytes(&s2, &img.diff_ids, 0),
            base
        );
    }

    #[test]
    fn missing_layer_tar_is_an_error_before_any_byte() {
        let tmp = tempfile::tempdir().unwrap();
        let s = ImageStore::open(tmp.path()).unwrap();
        let img = image(&[RawTar::default().finish()], &["t:1"]);
        let mut out = Vec::new();
        assert!(matches!(
            s.save(&[img], &mut out),
            Err(SaveError::MissingLayerTar(_))
        ));
        assert!(out.is_empty());
    }
}
