//! `docker load`: reading a `docker save` archive into the layer store, in one pass.
//!
//! ```text
//!  archive stream ──► member
//!     layer (gzip/zstd/tar magic) ─► decompress ─► chunks ─► 2nd thread: sha256 (DiffID)
//!                                                      └─► 3rd thread: apply to
//!                                                          overlay2/.tmp-*/diff + tar-split
//!     other member (sha256 = blob digest) ─► memory if small (JSON), else spool
//!                                            (image/tmp/.tmp-load-*)
//!  end of archive ─► manifest.json ─► config ─► rootfs.diff_ids checked ─► syncfs
//!                 ─► each layer renamed to overlay2/<ChainID> (link, lower, size)
//! ```
//!
//! An archive's member order is not fixed (the manifest may come last), so layers are
//! applied before it is known which image uses them: overlay layer directories hold only
//! their own changes, so no parent is needed until they are put in place. Both layouts
//! are read: Docker 25+ (`blobs/sha256/<hex>`, which is checked against its name) and the
//! older `<id>/layer.tar` + `<id>.json`; symlinks between members are followed inside the
//! archive. Layers already present are skipped; a malformed archive or a layer that does
//! not match its DiffID leaves the store as it was.

use super::apply::clean;
use super::copy::read_full;
use super::store::{ImageStore, StoreError, TempLayer};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::PathBuf;
pub use wharf_protocol::image::LoadedImage;
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
    /// `manifest.json` names a layer member as an image config.
    #[error("invalid archive: {path:?} is a layer, not JSON")]
    NotJson {
        /// The member.
        path: String,
    },
    /// Unpacking a layer failed.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Members up to this size that do not look like layers are kept in memory; larger ones
/// are spooled to disk.
const MAX_IN_MEMORY: u64 = 1 << 20;

/// Read buffer for a layer member.
const LAYER_BUF: usize = 1 << 20;

/// What is kept of one regular archive member.
enum Body {
    /// A small member (JSON, an empty layer), in memory.
    Memory(Vec<u8>),
    /// A larger member that does not look like a layer, spooled to disk.
    Spooled(PathBuf),
    /// A layer, applied while it was read; taken by the first manifest entry using it.
    Applied(Option<Result<TempLayer, StoreError>>),
}

struct Member {
    /// sha256 of the member's bytes, checked against a `blobs/sha256/<hex>` name; for an
    /// uncompressed layer its DiffID (computed once, `None` if it failed to apply); `None`
    /// for a compressed layer, whose content the DiffID check covers.
    sha: Option<Digest>,
    body: Body,
}

/// The archive read in one pass: regular members by cleaned name, and links between them.
struct Members {
    dir: PathBuf,
    files: HashMap<String, Member>,
    links: HashMap<String, String>,
    /// Layer members already put in place, and the chain they were put at.
    placed: HashMap<String, ChainId>,
}

impl Drop for Members {
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

/// Whether a member starting with `head` is a layer: gzip, zstd, or a tar with a ustar
/// (POSIX or GNU) header.
fn looks_like_layer(head: &[u8]) -> bool {
    Compression::detect(head) != Compression::None
        || head.get(257..262).is_some_and(|m| m == b"ustar")
}

/// Reads through, counting and (with a hasher) hashing every byte.
struct Hashing<R> {
    inner: R,
    hasher: Option<Sha256>,
    n: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.n += n as u64;
        Ok(n)
    }
}

impl Members {
    fn read(store: &ImageStore, dir: PathBuf, reader: impl Read) -> Result<Members, LoadError> {
        // Made at once (it marks a load in progress), though only large members that are
        // not layers are spooled into it.
        std::fs::create_dir(&dir).map_err(|source| LoadError::Spool {
            path: dir.clone(),
            source,
        })?;
        let mut members = Members {
            dir,
            files: HashMap::new(),
            links: HashMap::new(),
            placed: HashMap::new(),
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
                let expected = entry.size();
                let member = members.read_member(store, n, &name, &mut entry, expected)?;
                members.files.insert(name, member);
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
                    members.links.insert(name, t);
                }
            }
        }
        // Drain padding so a sender streaming the body sees it consumed.
        io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(LoadError::Read)?;
        Ok(members)
    }

    /// Read one regular member of `expected` bytes: a layer is applied to a temporary
    /// directory as it streams by (its failure kept for when a manifest names it), a small
    /// member kept in memory, anything else spooled.
    fn read_member(
        &mut self,
        store: &ImageStore,
        n: usize,
        name: &str,
        entry: &mut impl Read,
        expected: u64,
    ) -> Result<Member, LoadError> {
        let mut head = [0u8; 512];
        let got = read_full(entry, &mut head).map_err(LoadError::Read)?;
        let head = &head[..got];
        // A layer is not hashed here: applying it hashes its uncompressed bytes, which
        // for a plain layer are its blob's too. A compressed blob's own digest is not
        // checked (as moby's load): the DiffID check covers its content.
        let mut h = Hashing {
            inner: head.chain(entry),
            hasher: (!looks_like_layer(head)).then(Sha256::new),
            n: 0,
        };
        let body = if looks_like_layer(head) {
            let res = match decompress(BufReader::with_capacity(LAYER_BUF, &mut h)) {
                Ok((_, layer)) => store.apply_pipelined(layer),
                Err(source) => Err(StoreError::Apply {
                    diff_id: DiffId(Digest([0; 32])),
                    source: super::apply::ApplyError::Read(source),
                }),
            };
            // Whatever the decompressor left is part of the blob digest too.
            io::copy(&mut h, &mut io::sink()).map_err(LoadError::Read)?;
            Body::Applied(Some(res))
        } else if expected <= MAX_IN_MEMORY {
            let mut out = Vec::with_capacity(expected as usize);
            h.read_to_end(&mut out).map_err(LoadError::Read)?;
            Body::Memory(out)
        } else {
            let path = self.dir.join(n.to_string());
            copy_to(&mut h, &path)?;
            Body::Spooled(path)
        };
        if h.n != expected {
            return Err(LoadError::Truncated {
                path: name.to_string(),
                expected,
                got: h.n,
            });
        }
        let plain_layer = Compression::detect(head) == Compression::None;
        let sha = match (h.hasher, &body) {
            (Some(hasher), _) => Some(Digest(hasher.finalize().into())),
            (None, Body::Applied(Some(Ok(t)))) if plain_layer => Some(t.diff_id.0),
            (None, _) => None,
        };
        Ok(Member { sha, body })
    }

    /// The key of the regular member `name` refers to, following links inside the
    /// archive, after checking it against its `blobs/sha256/<hex>` name if it has one.
    fn resolve(&self, name: &str) -> Result<String, LoadError> {
        let missing = || LoadError::MissingFile {
            path: name.to_string(),
        };
        let mut cur = clean_name(name.as_bytes()).ok_or_else(missing)?;
        for _ in 0..16 {
            if let Some(f) = self.files.get(&cur) {
                if let Some(hex) = clean_name(name.as_bytes())
                    .as_deref()
                    .and_then(|n| n.strip_prefix("blobs/sha256/"))
                {
                    match f.sha {
                        Some(sha) if hex != sha.hex() => {
                            return Err(LoadError::BlobDigest {
                                path: name.to_string(),
                                got: sha,
                            })
                        }
                        // Unknown only for a layer that failed to apply: that error is
                        // reported when the layer is used.
                        _ => {}
                    }
                }
                return Ok(cur);
            }
            cur = self.links.get(&cur).ok_or_else(missing)?.clone();
        }
        Err(missing())
    }

    fn read_json(&self, name: &str) -> Result<Vec<u8>, LoadError> {
        let key = self.resolve(name)?;
        let too_large = || LoadError::TooLarge {
            path: name.to_string(),
            max: MAX_JSON,
        };
        match self.files.get(&key).map(|m| &m.body) {
            Some(Body::Memory(b)) => Ok(b.clone()),
            Some(Body::Spooled(path)) => {
                let spool_err = |source| LoadError::Spool {
                    path: path.clone(),
                    source,
                };
                let file = std::fs::File::open(path).map_err(spool_err)?;
                let mut out = Vec::new();
                file.take(MAX_JSON + 1)
                    .read_to_end(&mut out)
                    .map_err(spool_err)?;
                if out.len() as u64 > MAX_JSON {
                    return Err(too_large());
                }
                Ok(out)
            }
            Some(Body::Applied(_)) => Err(LoadError::NotJson {
                path: name.to_string(),
            }),
            None => Err(LoadError::MissingFile {
                path: name.to_string(),
            }),
        }
    }
}

fn copy_to(src: &mut impl Read, path: &std::path::Path) -> Result<(), LoadError> {
    let spool_err = |source| LoadError::Spool {
        path: path.to_path_buf(),
        source,
    };
    let mut out =
        io::BufWriter::with_capacity(LAYER_BUF, std::fs::File::create(path).map_err(spool_err)?);
    let mut buf = vec![0u8; LAYER_BUF];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(LoadError::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(spool_err)?;
    }
    out.flush().map_err(spool_err)
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

/// The uncompressed stream of a layer member, by its magic bytes.
fn decompress<'a>(mut r: impl BufRead + 'a) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let c = Compression::detect(r.fill_buf()?);
    let out: Box<dyn Read + 'a> = match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    };
    Ok((c, out))
}

/// Docker's wording for a layer whose content is not its DiffID; the expected DiffID
/// in apply errors of layers read before the manifest.
fn layer_error(e: StoreError, layer: usize, expected: DiffId) -> LoadError {
    match e {
        StoreError::DiffIdMismatch { expected, got } => LoadError::InvalidDiffId {
            layer,
            expected,
            got,
        },
        StoreError::Apply { source, .. } => LoadError::Store(StoreError::Apply {
            diff_id: expected,
            source,
        }),
        e => e.into(),
    }
}

/// A layer member kept in memory or spooled, as manifest entry `i` names it.
struct LayerSource<'a> {
    i: usize,
    name: &'a str,
    sha: Option<Digest>,
    /// The spool file, which an uncompressed layer's tar is linked to instead of copied.
    spooled: Option<&'a PathBuf>,
}

/// One image of `manifest.json`, checked against its config.
struct Planned {
    config: Vec<u8>,
    diff_ids: Vec<DiffId>,
    layers: Vec<String>,
    repo_tags: Vec<String>,
}

impl ImageStore {
    /// Load a `docker save` tarball read from `reader` (blocking: call it inside
    /// `spawn_blocking`); returns every image of its `manifest.json`, in order. The archive
    /// is read once: layers are applied to temporary directories as they stream by, then
    /// checked against the configs' `rootfs.diff_ids` and moved into place; layers
    /// already present are skipped. A malformed archive or a layer that does not match
    /// leaves the store as it was.
    pub fn load(&self, reader: impl Read) -> Result<Vec<LoadedImage>, LoadError> {
        let dir = self.layout().spool().join(self.tmp_name("load"));
        let mut members = Members::read(self, dir, reader)?;
        if !members.files.contains_key("manifest.json") {
            return Err(LoadError::NoManifest);
        }
        let manifest: Vec<ManifestItem> =
            serde_json::from_slice(&members.read_json("manifest.json")?)
                .map_err(LoadError::Manifest)?;
        let mut plans = Vec::with_capacity(manifest.len());
        let mut seen: HashMap<String, DiffId> = HashMap::new();
        for item in manifest {
            plans.push(self.plan(&mut members, &mut seen, item)?);
        }
        // One sync for every layer applied while reading, before any is moved into place.
        if members
            .files
            .values()
            .any(|m| matches!(m.body, Body::Applied(Some(Ok(_)))))
        {
            self.sync_filesystem()?;
        }
        let mut out = Vec::with_capacity(plans.len());
        for plan in plans {
            out.push(self.load_one(&mut members, plan)?);
        }
        Ok(out)
    }

    /// Check one manifest entry: its config, its layer count, and every layer applied
    /// while reading against its DiffID.
    fn plan(
        &self,
        members: &mut Members,
        seen: &mut HashMap<String, DiffId>,
        item: ManifestItem,
    ) -> Result<Planned, LoadError> {
        let config = members.read_json(&item.config)?;
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
        let mut layers = Vec::with_capacity(item.layers.len());
        for (i, name) in item.layers.iter().enumerate() {
            let key = members.resolve(name)?;
            let expected = diff_ids[i];
            if let Some(Member {
                body: Body::Applied(slot),
                ..
            }) = members.files.get_mut(&key)
            {
                let got = match slot {
                    Some(Ok(t)) => t.diff_id,
                    Some(Err(_)) => match slot.take() {
                        Some(Err(e)) => return Err(layer_error(e, i, expected)),
                        _ => continue,
                    },
                    None => continue,
                };
                seen.insert(key.clone(), got);
            }
            if let Some(got) = seen.get(&key) {
                if *got != expected {
                    return Err(LoadError::InvalidDiffId {
                        layer: i,
                        expected,
                        got: *got,
                    });
                }
            }
            layers.push(key);
        }
        Ok(Planned {
            config,
            diff_ids,
            layers,
            repo_tags: item.repo_tags.unwrap_or_default(),
        })
    }

    fn load_one(&self, members: &mut Members, plan: Planned) -> Result<LoadedImage, LoadError> {
        let Planned {
            config,
            diff_ids,
            layers,
            repo_tags,
        } = plan;
        let chain = ChainId::chain(&diff_ids);
        for (i, key) in layers.iter().enumerate() {
            let expected = diff_ids[i];
            let parent = i.checked_sub(1).map(|p| &chain[p]);
            let present = self.has_layer(&chain[i]);
            if present && self.has_layer_tar(&chain[i], &expected) {
                tracing::debug!(layer = %chain[i], "layer already present");
                continue;
            }
            let Some(member) = members.files.get_mut(key) else {
                return Err(LoadError::MissingFile { path: key.clone() });
            };
            let sha = member.sha;
            match &mut member.body {
                Body::Applied(slot) => {
                    let res = match slot.take() {
                        Some(Ok(temp)) => {
                            let res = self.commit_temp(temp, parent, &chain[i], false);
                            members.placed.insert(key.clone(), chain[i]);
                            res
                        }
                        Some(Err(e)) => Err(e),
                        // Put in place by an earlier image at another chain: unpack its tar
                        // again on this parent.
                        None => match members.placed.get(key) {
                            Some(earlier) if !present => {
                                self.open_layer_tar(earlier, &expected).and_then(|tar| {
                                    let r = tar.reader().map_err(|source| StoreError::Io {
                                        action: "read",
                                        path: tar.describe(),
                                        source,
                                    })?;
                                    self.unpack_layer(
                                        parent,
                                        &chain[i],
                                        &expected,
                                        BufReader::with_capacity(LAYER_BUF, r),
                                    )
                                })
                            }
                            _ => Err(StoreError::MissingLayer(expected)),
                        },
                    };
                    res.map_err(|e| layer_error(e, i, expected))?;
                }
                Body::Memory(bytes) => {
                    let layer = LayerSource {
                        i,
                        name: key,
                        sha,
                        spooled: None,
                    };
                    self.load_layer(parent, &chain[i], &expected, &layer, bytes.as_slice())?;
                }
                Body::Spooled(path) => {
                    let file = std::fs::File::open(&*path).map_err(|source| LoadError::Spool {
                        path: path.clone(),
                        source,
                    })?;
                    let r = BufReader::with_capacity(LAYER_BUF, file);
                    let layer = LayerSource {
                        i,
                        name: key,
                        sha,
                        spooled: Some(path),
                    };
                    self.load_layer(parent, &chain[i], &expected, &layer, r)?;
                }
            }
        }
        let id = ImageId(Digest::of(&config));
        tracing::info!(image = %id, tags = ?repo_tags, layers = diff_ids.len(), "image loaded");
        Ok(LoadedImage {
            id,
            size: self.layers_size(&diff_ids),
            config,
            diff_ids,
            repo_tags,
        })
    }

    /// Unpack a layer from a member kept in memory or spooled.
    fn load_layer(
        &self,
        parent: Option<&ChainId>,
        chain: &ChainId,
        expected: &DiffId,
        layer: &LayerSource<'_>,
        member: impl BufRead,
    ) -> Result<(), LoadError> {
        let LayerSource {
            i,
            name,
            sha,
            spooled,
        } = *layer;
        let present = self.has_layer(chain);
        let (compression, reader) = decompress(member).map_err(|source| LoadError::Decompress {
            path: name.to_string(),
            source,
        })?;
        if let Some(sha) = sha.filter(|s| compression == Compression::None && *s != expected.0) {
            return Err(LoadError::InvalidDiffId {
                layer: i,
                expected: *expected,
                got: DiffId(sha),
            });
        }
        // An uncompressed member already hashed to its DiffID is the canonical tar:
        // link it into place instead of writing a copy while unpacking.
        let adopted = match spooled {
            Some(path) if compression == Compression::None => {
                self.layer_tar_path(expected).is_none() && self.adopt_layer_tar(expected, path)?
            }
            _ => false,
        };
        let res = if present && adopted {
            Ok(())
        } else if present {
            self.store_layer_tar(expected, reader)
        } else {
            let res = self
                .unpack_layer(parent, chain, expected, reader)
                .map(|_| ());
            if res.is_err() && adopted {
                self.forget_layer_tar(expected);
            }
            res
        };
        res.map_err(|e| layer_error(e, i, *expected))
    }
}

#[cfg(test)]
#[path = "load_test.rs"]
mod tests;
