//! `docker load`: reading a `docker save` archive into the layer store.
//!
//! ```text
//!  archive stream ──► spool (image/tmp/.tmp-load-*/<n>, sha256 of each file)
//!                        │ manifest.json ─► Config ─► rootfs.diff_ids
//!                        ▼ Layers[i] (plain, gzip or zstd by magic bytes)
//!                     ImageStore::unpack_layer(ChainID[i], DiffID[i]) ─► LoadedImage
//! ```
//!
//! An archive's member order is not fixed (the manifest may come last), so the archive is
//! spooled to disk first, one file per member, then read in manifest order. Both layouts
//! are read: Docker 25+ (`blobs/sha256/<hex>`, which is checked against its name) and the
//! older `<id>/layer.tar` + `<id>.json`; symlinks between members are followed inside the
//! archive. Layers already present are skipped.

use super::apply::clean;
use super::store::{ImageStore, StoreError};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use wharf_protocol::{ChainId, DiffId, Digest, ImageId};

/// Largest `manifest.json` or image config read into memory.
const MAX_JSON: u64 = 32 << 20;

/// Why an archive could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The archive stream could not be read or is not a tar.
    #[error("read archive: {0}")]
    Read(#[source] io::Error),
    /// A member ended before its declared size.
    #[error("truncated archive at {path:?}: expected {expected} bytes, got {got}")]
    Truncated {
        /// The member.
        path: String,
        /// Its declared size.
        expected: u64,
        /// What the stream held.
        got: u64,
    },
    /// A member could not be spooled to disk.
    #[error("spool {path}: {source}")]
    Spool {
        /// The spool file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The archive has no `manifest.json`.
    #[error("invalid archive: no manifest.json")]
    NoManifest,
    /// `manifest.json` is not the expected JSON.
    #[error("invalid manifest.json: {0}")]
    Manifest(#[source] serde_json::Error),
    /// `manifest.json` names a member the archive does not hold.
    #[error("invalid archive: {path:?} named by manifest.json is missing")]
    MissingFile {
        /// The name as `manifest.json` gives it.
        path: String,
    },
    /// A JSON member is larger than [`MAX_JSON`].
    #[error("{path:?} is larger than {max} bytes")]
    TooLarge {
        /// The member.
        path: String,
        /// The limit.
        max: u64,
    },
    /// The image config is not JSON with `rootfs.diff_ids`.
    #[error("invalid image config {path:?}: {source}")]
    Config {
        /// The member.
        path: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A `rootfs.diff_ids` entry is not a sha256 digest.
    #[error("invalid image config {path:?}: bad diff_id {value:?}")]
    BadDiffId {
        /// The config member.
        path: String,
        /// The value.
        value: String,
    },
    /// `blobs/sha256/<hex>` does not hash to `<hex>`.
    #[error("invalid archive: {path:?} has digest {got}")]
    BlobDigest {
        /// The member.
        path: String,
        /// Its actual digest.
        got: Digest,
    },
    /// `manifest.json` and the config disagree on the number of layers.
    #[error(
        "invalid archive: {config:?} lists {diff_ids} diff_ids but manifest.json {layers} layers"
    )]
    LayerCount {
        /// The config member.
        config: String,
        /// `rootfs.diff_ids` length.
        diff_ids: usize,
        /// `Layers` length.
        layers: usize,
    },
    /// A layer does not hash to its `rootfs.diff_ids` entry (Docker's wording).
    #[error("invalid diffID for layer {layer}: expected \"{expected}\", got \"{got}\"")]
    InvalidDiffId {
        /// Index in `rootfs.diff_ids`.
        layer: usize,
        /// The config's DiffID.
        expected: DiffId,
        /// The sha256 of the uncompressed layer.
        got: DiffId,
    },
    /// The compressed layer could not be opened for decompression.
    #[error("decompress layer {path:?}: {source}")]
    Decompress {
        /// The member.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Unpacking a layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An image read from an archive; its config is for the controller to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadedImage {
    /// sha256 of `config`.
    pub id: ImageId,
    /// The config JSON, byte for byte as in the archive.
    pub config: Vec<u8>,
    /// `rootfs.diff_ids`, bottom first.
    pub diff_ids: Vec<DiffId>,
    /// `RepoTags` of `manifest.json`, e.g. `busybox:latest` (may be empty).
    pub repo_tags: Vec<String>,
    /// [`ImageStore::layers_size`] of the image.
    pub size: u64,
}

#[derive(serde::Deserialize)]
struct ManifestItem {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ConfigRootfs {
    rootfs: Rootfs,
}

#[derive(serde::Deserialize)]
struct Rootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Clone)]
struct SpoolFile {
    path: PathBuf,
    sha: Digest,
}

/// The archive on disk: regular members by cleaned name, and links between members.
struct Spool {
    dir: PathBuf,
    files: HashMap<String, SpoolFile>,
    links: HashMap<String, String>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove load spool");
        }
    }
}

fn clean_name(raw: &[u8]) -> Option<String> {
    let comps = clean(raw)?;
    String::from_utf8(comps.join(&b'/')).ok()
}

impl Spool {
    fn read(dir: PathBuf, reader: impl Read) -> Result<Spool, LoadError> {
        std::fs::create_dir(&dir).map_err(|source| LoadError::Spool {
            path: dir.clone(),
            source,
        })?;
        let mut spool = Spool {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
        };
        let mut archive = tar::Archive::new(reader);
        for (n, entry) in archive.entries().map_err(LoadError::Read)?.enumerate() {
            let mut entry = entry.map_err(LoadError::Read)?;
            let raw = entry.path_bytes().into_owned();
            let Some(name) = clean_name(&raw) else {
                tracing::warn!(path = %String::from_utf8_lossy(&raw), "skipping archive member outside the archive");
                continue;
            };
            let kind = entry.header().entry_type();
            if matches!(kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
                let path = spool.dir.join(n.to_string());
                let expected = entry.size();
                let (sha, got) = copy_hashed(&mut entry, &path)?;
                if got != expected {
                    return Err(LoadError::Truncated {
                        path: name,
                        expected,
                        got,
                    });
                }
                spool.files.insert(name, SpoolFile { path, sha });
            } else if kind.is_symlink() || kind.is_hard_link() {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let full = if kind.is_hard_link() || target.starts_with(b"/") {
                    target.into_owned()
                } else {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    [dir.as_bytes(), b"/", &target].concat()
                };
                if let Some(t) = clean_name(&full) {
                    spool.links.insert(name, t);
                }
            }
        }
        // Drain padding so a sender streaming the body sees it consumed.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(LoadError::Read)?;
        Ok(spool)
    }

    /// The regular member `name` refers to, following links inside the archive.
    fn get(&self, name: &str) -> Result<&SpoolFile, LoadError> {
        let missing = || LoadError::MissingFile {
            path: name.to_string(),
        };
        let mut cur = clean_name(name.as_bytes()).ok_or_else(missing)?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&cur) {
                return Ok(f);
            }
            cur = self.links.get(&cur).ok_or_else(missing)?.clone();
        }
        Err(missing())
    }

    /// The member's bytes, checked against its `blobs/sha256/<hex>` name if it has one.
    fn open(&self, name: &str) -> Result<(&SpoolFile, std::fs::File), LoadError> {
        let f = self.get(name)?;
        if let Some(hex) = clean_name(name.as_bytes())
            .as_deref()
            .and_then(|n| n.strip_prefix("blobs/sha256/"))
        {
            if hex != f.sha.hex() {
                return Err(LoadError::BlobDigest {
                    path: name.to_string(),
                    got: f.sha,
                });
            }
        }
        let file = std::fs::File::open(&f.path).map_err(|source| LoadError::Spool {
            path: f.path.clone(),
            source,
        })?;
        Ok((f, file))
    }

    fn read_json(&self, name: &str) -> Result<Vec<u8>, LoadError> {
        let (f, file) = self.open(name)?;
        let mut out = Vec::new();
        file.take(MAX_JSON + 1)
            .read_to_end(&mut out)
            .map_err(|source| LoadError::Spool {
                path: f.path.clone(),
                source,
            })?;
        if out.len() as u64 > MAX_JSON {
            return Err(LoadError::TooLarge {
                path: name.to_string(),
                max: MAX_JSON,
            });
        }
        Ok(out)
    }
}

fn copy_hashed(src: &mut impl Read, path: &std::path::Path) -> Result<(Digest, u64), LoadError> {
    let spool_err = |source| LoadError::Spool {
        path: path.to_path_buf(),
        source,
    };
    let mut out = io::BufWriter::new(std::fs::File::create(path).map_err(spool_err)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadError::Read(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(spool_err)?;
        total += n as u64;
    }
    out.flush().map_err(spool_err)?;
    Ok((Digest(hasher.finalize().into()), total))
}

/// How a layer member is compressed, by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Detect from the first bytes of a member; anything unknown is taken as a plain tar.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

fn decompressed<'a>(
    file: std::fs::File,
    name: &str,
) -> Result<(Compression, Box<dyn Read + 'a>), LoadError> {
    let mut r = BufReader::with_capacity(64 * 1024, file);
    let head = r.fill_buf().map_err(|source| LoadError::Decompress {
        path: name.to_string(),
        source,
    })?;
    let c = Compression::detect(head);
    let out: Box<dyn Read> = match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r).map_err(
            |source| LoadError::Decompress {
                path: name.to_string(),
                source,
            },
        )?),
    };
    Ok((c, out))
}

impl ImageStore {
    /// Load a `docker save` tarball read from `reader` (blocking: call it inside
    /// `spawn_blocking`); returns every image of its `manifest.json`, in order. Each layer
    /// is checked against the config's `rootfs.diff_ids`; layers already present are
    /// skipped. Layers unpacked before a failure stay (they are valid and complete).
    pub fn load(&self, reader: impl Read) -> Result<Vec<LoadedImage>, LoadError> {
        let dir = self.layout().spool().join(self.tmp_name("load"));
        let spool = Spool::read(dir, reader)?;
        if !spool.files.contains_key("manifest.json") {
            return Err(LoadError::NoManifest);
        }
        let manifest: Vec<ManifestItem> =
            serde_json::from_slice(&spool.read_json("manifest.json")?)
                .map_err(LoadError::Manifest)?;
        let mut out = Vec::with_capacity(manifest.len());
        for item in manifest {
            out.push(self.load_one(&spool, item)?);
        }
        Ok(out)
    }

    fn load_one(&self, spool: &Spool, item: ManifestItem) -> Result<LoadedImage, LoadError> {
        let config = spool.read_json(&item.config)?;
        let parsed: ConfigRootfs =
            serde_json::from_slice(&config).map_err(|source| LoadError::Config {
                path: item.config.clone(),
                source,
            })?;
        let diff_ids = parsed
            .rootfs
            .diff_ids
            .iter()
            .map(|s| {
                s.parse::<DiffId>().map_err(|_| LoadError::BadDiffId {
                    path: item.config.clone(),
                    value: s.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if diff_ids.len() != item.layers.len() {
            return Err(LoadError::LayerCount {
                config: item.config.clone(),
                diff_ids: diff_ids.len(),
                layers: item.layers.len(),
            });
        }
        let chain = ChainId::chain(&diff_ids);
        for (i, name) in item.layers.iter().enumerate() {
            let expected = diff_ids[i];
            let parent = i.checked_sub(1).map(|p| &chain[p]);
            let present = self.has_layer(&chain[i]);
            if present && self.layer_tar_path(&expected).is_some() {
                tracing::debug!(layer = %chain[i], "layer already present");
                continue;
            }
            let (member, file) = spool.open(name)?;
            let (compression, reader) = decompressed(file, name)?;
            if compression == Compression::None && member.sha != expected.0 {
                return Err(LoadError::InvalidDiffId {
                    layer: i,
                    expected,
                    got: DiffId(member.sha),
                });
            }
            // An uncompressed member already hashed to its DiffID is the canonical tar:
            // link it into place instead of writing a copy while unpacking.
            let adopted = compression == Compression::None
                && self.layer_tar_path(&expected).is_none()
                && self.adopt_layer_tar(&expected, &member.path)?;
            let res = if present && adopted {
                Ok(())
            } else if present {
                self.store_layer_tar(&expected, reader)
            } else {
                let res = self
                    .unpack_layer(parent, &chain[i], &expected, reader)
                    .map(|_| ());
                if res.is_err() && adopted {
                    self.forget_layer_tar(&expected);
                }
                res
            };
            match res {
                Ok(()) => {}
                Err(StoreError::DiffIdMismatch { expected, got }) => {
                    return Err(LoadError::InvalidDiffId {
                        layer: i,
                        expected,
                        got,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
        let id = ImageId(Digest::of(&config));
        let repo_tags = item.repo_tags.unwrap_or_default();
        tracing::info!(image = %id, tags = ?repo_tags, layers = diff_ids.len(), "image loaded");
        Ok(LoadedImage {
            id,
            size: self.layers_size(&diff_ids),
            config,
            diff_ids,
            repo_tags,
        })
    }
}

#[cfg(test)]
#[path = "load_test.rs"]
mod tests;
