//! Generated test images: `docker save` archives built from files on this machine, with
//! fixed mtimes and owners so the bytes, and hence the image ID, never change between runs.
//!
//! ```text
//!   /bin/busybox ──► layer tar ──► blobs/sha256/<diffid>  ┐
//!                    config    ──► blobs/sha256/<imageid> ├─► <out_dir>/<name>.tar
//!                    OCI manifest, index.json, oci-layout ┘   (+ manifest.json, repositories)
//! ```

use anyhow::{bail, Context};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The mtime of every entry and the `created` time of the config (2024-01-01T00:00:00Z).
const EPOCH: u64 = 1_704_067_200;
const CREATED: &str = "2024-01-01T00:00:00Z";

/// One file of a layer, in the order it is written to the tar.
pub enum LayerEntry {
    /// A directory with its mode (permission bits incl. sticky/setuid).
    Dir {
        /// Path without a leading `/`, e.g. `tmp`.
        path: String,
        /// Mode bits, e.g. `0o1777`.
        mode: u32,
    },
    /// A regular file.
    File {
        /// Path without a leading `/`.
        path: String,
        /// Mode bits.
        mode: u32,
        /// Owner uid.
        uid: u64,
        /// Owner gid.
        gid: u64,
        /// Contents.
        data: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Path of the link.
        path: String,
        /// What the link points to, verbatim.
        target: String,
    },
    /// A hard link to an earlier entry of the same layer.
    Hardlink {
        /// Path of the new name.
        path: String,
        /// Path of the earlier entry.
        target: String,
    },
}

/// Serialise `entries` as an uncompressed layer tar with fixed mtimes (root-owned unless
/// the entry says otherwise); call to build layers for tests, hostile ones included.
pub fn layer_tar(entries: &[LayerEntry]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(EPOCH);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            LayerEntry::Dir { path, mode } => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                let p = if path.ends_with('/') {
                    path.clone()
                } else {
                    format!("{path}/")
                };
                b.append_data(&mut h, p, std::io::empty())?;
            }
            LayerEntry::File {
                path,
                mode,
                uid,
                gid,
                data,
            } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*gid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            LayerEntry::Symlink { path, target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
            LayerEntry::Hardlink { path, target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// One image of a generated archive: its layers (uncompressed tars) and what `docker run`
/// needs from its config.
pub struct ImageSpec {
    /// `repo:tag` recorded in `manifest.json` `RepoTags`, e.g. `busybox:latest`.
    pub name_tag: String,
    /// Uncompressed layer tars, bottom first.
    pub layers: Vec<Vec<u8>>,
    /// The config's `config.Cmd`.
    pub cmd: Vec<String>,
}

/// The sha256 of `bytes` as 64 hex digits.
fn sha_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The config JSON bytes of `spec` (sorted keys, so deterministic).
pub fn image_config(spec: &ImageSpec) -> Vec<u8> {
    let diff_ids: Vec<String> = spec
        .layers
        .iter()
        .map(|l| format!("sha256:{}", sha_hex(l)))
        .collect();
    let history: Vec<serde_json::Value> = spec
        .layers
        .iter()
        .enumerate()
        .map(|(i, _)| {
            json!({
                "created": CREATED,
                "created_by": format!("/bin/sh -c #(nop) ADD file:wharf-test-layer-{i} in / "),
            })
        })
        .collect();
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": spec.cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history,
    });
    // A json! value always serialises.
    serde_json::to_vec(&config).unwrap_or_default()
}

/// Write a Docker 25+ `docker save` archive (OCI layout plus `manifest.json` and
/// `repositories`) holding `images` to `out`; call to build any test image, hostile
/// layers included. Layers are stored uncompressed, named by their DiffID.
pub fn write_save_tar(out: &Path, images: &[ImageSpec]) -> anyhow::Result<()> {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut manifest_json = Vec::new();
    let mut index_manifests = Vec::new();
    let mut repositories = serde_json::Map::new();
    for img in images {
        let mut layer_descs = Vec::new();
        let mut layer_paths = Vec::new();
        for layer in &img.layers {
            let hex = sha_hex(layer);
            layer_descs.push(json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{hex}"),
                "size": layer.len(),
            }));
            layer_paths.push(format!("blobs/sha256/{hex}"));
            blobs.push((hex, layer.clone()));
        }
        let config = image_config(img);
        let config_hex = sha_hex(&config);
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{config_hex}"),
                "size": config.len(),
            },
            "layers": layer_descs,
        }))?;
        let manifest_hex = sha_hex(&manifest);
        let (repo, tag) = match img.name_tag.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r.to_string(), t.to_string()),
            _ => (img.name_tag.clone(), "latest".to_string()),
        };
        index_manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": format!("docker.io/library/{repo}:{tag}"),
                "org.opencontainers.image.ref.name": tag,
            },
        }));
        manifest_json.push(json!({
            "Config": format!("blobs/sha256/{config_hex}"),
            "RepoTags": [img.name_tag],
            "Layers": layer_paths,
        }));
        repositories.insert(repo, json!({ tag: img.layers.last().map(|l| sha_hex(l)) }));
        blobs.push((config_hex, config));
        blobs.push((manifest_hex, manifest));
    }
    blobs.sort_by(|a, b| a.0.cmp(&b.0));
    blobs.dedup_by(|a, b| a.0 == b.0);

    let file = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(file));
    let dir = |b: &mut tar::Builder<_>, p: &str| -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(EPOCH);
        h.set_size(0);
        b.append_data(&mut h, p, std::io::empty())?;
        Ok(())
    };
    let file = |b: &mut tar::Builder<_>, p: &str, data: &[u8]| -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(EPOCH);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, p, data)?;
        Ok(())
    };
    dir(&mut b, "blobs/")?;
    dir(&mut b, "blobs/sha256/")?;
    for (hex, data) in &blobs {
        file(&mut b, &format!("blobs/sha256/{hex}"), data)?;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_manifests,
    });
    file(&mut b, "index.json", &serde_json::to_vec(&index)?)?;
    file(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest_json)?,
    )?;
    file(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    file(&mut b, "repositories", &serde_json::to_vec(&repositories)?)?;
    b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// The root filesystem of the busybox test image as layer entries: `/bin/busybox` from this
/// machine, a symlink per applet it lists, `/etc/passwd` (root, nobody, app=1000),
/// `/etc/group`, `/tmp` (1777) and the usual empty directories.
pub fn busybox_rootfs() -> anyhow::Result<Vec<LayerEntry>> {
    let busybox = std::fs::read("/bin/busybox").context("read /bin/busybox")?;
    let out = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .context("run busybox --list")?;
    if !out.status.success() {
        bail!("busybox --list failed: {}", out.status);
    }
    let mut applets: Vec<String> = String::from_utf8(out.stdout)?
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
        .map(str::to_string)
        .collect();
    applets.sort();
    applets.dedup();

    let dir = |path: &str, mode: u32| LayerEntry::Dir {
        path: path.to_string(),
        mode,
    };
    let text = |path: &str, data: &str| LayerEntry::File {
        path: path.to_string(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        data: data.as_bytes().to_vec(),
    };
    let mut entries = vec![
        dir("bin", 0o755),
        LayerEntry::File {
            path: "bin/busybox".to_string(),
            mode: 0o755,
            uid: 0,
            gid: 0,
            data: busybox,
        },
    ];
    for a in &applets {
        entries.push(LayerEntry::Symlink {
            path: format!("bin/{a}"),
            target: "busybox".to_string(),
        });
    }
    entries.extend([
        dir("dev", 0o755),
        dir("etc", 0o755),
        text(
            "etc/group",
            "root:x:0:\ndaemon:x:1:\ntty:x:5:\nusers:x:100:\napp:x:1000:\nnogroup:x:65534:\n",
        ),
        text("etc/hostname", "busybox\n"),
        text(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\n\
             app:x:1000:1000:app:/home/app:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        ),
        dir("home", 0o755),
        dir("home/app", 0o755),
        dir("proc", 0o755),
        dir("root", 0o700),
        dir("sys", 0o755),
        dir("tmp", 0o1777),
        dir("usr", 0o755),
        dir("usr/bin", 0o755),
        dir("usr/sbin", 0o755),
        dir("var", 0o755),
        dir("var/log", 0o755),
    ]);
    Ok(entries)
}

/// Write `<out_dir>/<name>.tar`, a `docker save` archive (Docker 25+ layout) of a one-layer
/// busybox image tagged `name_tag` (e.g. `busybox:latest`), and return its path; call from
/// tests that need a real image to load and run. Same machine, same bytes, same image ID.
pub fn busybox_image_tar(out_dir: &Path, name_tag: &str) -> anyhow::Result<PathBuf> {
    let layer = layer_tar(&busybox_rootfs()?)?;
    let file_name: String = name_tag
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out = out_dir.join(format!("{file_name}.tar"));
    write_save_tar(
        &out,
        &[ImageSpec {
            name_tag: name_tag.to_string(),
            layers: vec![layer],
            cmd: vec!["sh".to_string()],
        }],
    )?;
    Ok(out)
}

/// One member of a tar archive as [`tar_members`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarMember {
    /// The member's name as stored (e.g. `blobs/sha256/<hex>`, `etc/`).
    pub path: String,
    /// Regular file, directory, symlink, ...
    pub kind: tar::EntryType,
    /// Contents (empty but for regular files).
    pub data: Vec<u8>,
    /// Link target of symlinks and hard links.
    pub link: Option<String>,
}

/// Every member of the tar archive `bytes`, in order; call in tests to look inside what
/// `docker save` or `docker export` wrote.
pub fn tar_members(bytes: &[u8]) -> anyhow::Result<Vec<TarMember>> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(bytes);
    for e in a.entries()? {
        let mut e = e?;
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let kind = e.header().entry_type();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned());
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data)?;
        out.push(TarMember {
            path,
            kind,
            data,
            link,
        });
    }
    Ok(out)
}

/// `len` pseudo-random bytes from `seed` (xorshift64*), the same on every run; call to
/// make layers that do not compress or deduplicate by accident.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_are_stable_and_seeded() {
        let a = random_bytes(1, 1000);
        assert_eq!(a, random_bytes(1, 1000));
        assert_ne!(a, random_bytes(2, 1000));
        assert_eq!(a.len(), 1000);
        let tar = layer_tar(&[LayerEntry::File {
            path: "f".into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            data: a.clone(),
        }])
        .unwrap();
        let m = tar_members(&tar).unwrap();
        assert_eq!((m[0].path.as_str(), &m[0].data), ("f", &a));
    }

    #[test]
    fn busybox_archive_is_deterministic_and_complete() {
        let dir = tempfile::tempdir().unwrap();
        let a = busybox_image_tar(dir.path(), "busybox:latest").unwrap();
        let first = std::fs::read(&a).unwrap();
        let b = busybox_image_tar(dir.path(), "busybox:latest").unwrap();
        assert_eq!(first, std::fs::read(&b).unwrap());

        let mut names = Vec::new();
        let mut manifest = None;
        let mut ar = tar::Archive::new(first.as_slice());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if p == "manifest.json" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                manifest = Some(s);
            }
            names.push(p);
        }
        for want in ["oci-layout", "index.json", "manifest.json", "repositories"] {
            assert!(names.iter().any(|n| n == want), "missing {want}");
        }
        let m: serde_json::Value = serde_json::from_str(&manifest.unwrap()).unwrap();
        assert_eq!(m[0]["RepoTags"][0], "busybox:latest");
        let layer = m[0]["Layers"][0].as_str().unwrap();
        assert!(names.iter().any(|n| n == layer));
    }
}
