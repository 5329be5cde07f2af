//! Tests of `docker load`: real busybox image, both archive layouts, compressed layers and
//! malformed archives (each refused with the store unchanged).

use super::*;
use crate::image::testutil::{mount, tree, RawTar};

fn store() -> (tempfile::TempDir, ImageStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s = ImageStore::open(&tmp.path().join("data")).unwrap();
    (tmp, s)
}

/// A tar of `(name, bytes)` members, in order.
fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn config_for(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn sha(b: &[u8]) -> String {
    Digest::of(b).to_string()
}

fn layer() -> Vec<u8> {
    RawTar::default()
        .dir("etc/", 0o755)
        .file("etc/hello", 0o644, b"hello\n")
        .finish()
}

/// The pre-25 layout: `<id>/layer.tar`, `<id>.json`, `manifest.json` (manifest last).
fn legacy_archive(stored_layer: &[u8], diff_ids: &[String]) -> (Vec<u8>, Vec<u8>) {
    let config = config_for(diff_ids);
    let id = Digest::of(&config).hex();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("{id}.json"),
        "RepoTags": ["legacy:1"],
        "Layers": ["abc/layer.tar"],
    }]))
    .unwrap();
    let tar = archive(&[
        ("abc/layer.tar", stored_layer),
        (&format!("{id}.json"), &config),
        ("manifest.json", &manifest),
    ]);
    (tar, config)
}

#[test]
fn busybox_loads_mounts_and_runs() {
    let (tmp, s) = store();
    let path = wharf_chaos_tests::busybox_image_tar(tmp.path(), "busybox:latest").unwrap();
    let loaded = s.load(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(loaded.len(), 1);
    let img = &loaded[0];
    assert_eq!(img.repo_tags, vec!["busybox:latest".to_string()]);
    assert_eq!(img.id.0, Digest::of(&img.config));
    assert_eq!(img.diff_ids.len(), 1);
    assert!(img.size > 1_000_000, "busybox itself is counted");
    assert!(s.has_layers(&img.diff_ids));
    let kept = crate::image::testutil::layer_tar_bytes(&s, &img.diff_ids, 0);
    assert_eq!(Digest::of(&kept), img.diff_ids[0].0);

    // Loading again skips the layer and gives the same image.
    let before = tree(tmp.path());
    let again = s.load(std::fs::File::open(&path).unwrap()).unwrap();
    assert_eq!(&again[0], img);
    assert_eq!(tree(tmp.path()), before);

    let cid = "e".repeat(64);
    let spec = s.create_rw_layer(&cid, &img.diff_ids).unwrap();
    {
        let _m = mount(&spec);
        let passwd = std::fs::read_to_string(spec.target.join("etc/passwd")).unwrap();
        assert!(passwd.contains("app:x:1000:1000"));
        let out = std::process::Command::new("chroot")
            .arg(&spec.target)
            .args([
                "/bin/sh",
                "-c",
                "echo hi from $(id -u) > /tmp/out; cat /tmp/out",
            ])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hi from 0\n",
            "{out:?}"
        );
    }
    assert!(spec.upperdir.join("tmp/out").is_file());
    s.remove_rw_layer(&cid).unwrap();
}

#[test]
fn legacy_layout_with_gzip_and_zstd_layers_loads() {
    let l = layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(l.as_slice(), 3).unwrap();
    for (what, stored) in [("plain", l.clone()), ("gzip", gz), ("zstd", zst)] {
        let (_tmp, s) = store();
        let (tar, config) = legacy_archive(&stored, &[sha(&l)]);
        let loaded = s.load(tar.as_slice()).unwrap();
        assert_eq!(loaded[0].config, config, "{what}");
        assert_eq!(loaded[0].repo_tags, vec!["legacy:1".to_string()]);
        let chain = ChainId::chain(&loaded[0].diff_ids);
        let hello = s.layout().layer_dir(&chain[0]).join("diff/etc/hello");
        assert_eq!(std::fs::read(hello).unwrap(), b"hello\n", "{what}");
        let kept = crate::image::testutil::layer_tar_bytes(&s, &loaded[0].diff_ids, 0);
        assert_eq!(kept, l, "{what}: the uncompressed tar is kept");
    }
}

/// Load `tar` into a fresh store; the error, after checking the store did not change.
fn refused(tar: &[u8]) -> LoadError {
    let (tmp, s) = store();
    let before = tree(tmp.path());
    let err = s.load(tar).unwrap_err();
    assert_eq!(tree(tmp.path()), before, "store changed after: {err}");
    err
}

#[test]
fn diff_id_mismatches_are_refused_with_dockers_message() {
    let l = layer();
    let other = DiffId(Digest::of(b"other"));
    let (tar, _) = legacy_archive(&l, &[other.to_string()]);
    let err = refused(&tar);
    assert_eq!(
        err.to_string(),
        format!(
            "invalid diffID for layer 0: expected \"{other}\", got \"{}\"",
            sha(&l)
        )
    );
    // Compressed: found while unpacking.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l).unwrap();
    let (tar, _) = legacy_archive(&gz.finish().unwrap(), &[other.to_string()]);
    assert!(matches!(
        refused(&tar),
        LoadError::InvalidDiffId { layer: 0, .. }
    ));
}

#[test]
fn malformed_archives_are_refused() {
    let l = layer();
    let config = config_for(&[sha(&l)]);
    let cfg_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = |cfg: &str, layers: &[&str]| {
        serde_json::to_vec(&serde_json::json!([{"Config": cfg, "Layers": layers}])).unwrap()
    };

    let no_manifest = archive(&[("abc/layer.tar", &l)]);
    assert!(matches!(refused(&no_manifest), LoadError::NoManifest));

    let bad_manifest = archive(&[("manifest.json", b"{not json")]);
    assert!(matches!(refused(&bad_manifest), LoadError::Manifest(_)));

    let m = manifest("missing.json", &["abc/layer.tar"]);
    let missing_config = archive(&[("abc/layer.tar", &l), ("manifest.json", &m)]);
    assert!(matches!(
        refused(&missing_config),
        LoadError::MissingFile { path } if path == "missing.json"
    ));

    let m = manifest(&cfg_name, &["nope/layer.tar"]);
    let missing_layer = archive(&[(&cfg_name, &config), ("manifest.json", &m)]);
    assert!(matches!(
        refused(&missing_layer),
        LoadError::MissingFile { path } if path == "nope/layer.tar"
    ));

    let m = manifest("c.json", &["abc/layer.tar"]);
    let not_json = archive(&[
        ("abc/layer.tar", &l),
        ("c.json", b"\x00\x01"),
        ("manifest.json", &m),
    ]);
    assert!(matches!(refused(&not_json), LoadError::Config { .. }));

    let m = manifest(&cfg_name, &[]);
    let count = archive(&[(&cfg_name, &config), ("manifest.json", &m)]);
    assert!(matches!(refused(&count), LoadError::LayerCount { .. }));

    let bad_id = config_for(&["sha256:xyz".to_string()]);
    let m = manifest("c.json", &["abc/layer.tar"]);
    let bad_diff = archive(&[
        ("abc/layer.tar", &l),
        ("c.json", &bad_id),
        ("manifest.json", &m),
    ]);
    assert!(matches!(refused(&bad_diff), LoadError::BadDiffId { .. }));

    // A blob whose name is not its digest.
    let wrong = format!("blobs/sha256/{}", "0".repeat(64));
    let m = manifest(&wrong, &["abc/layer.tar"]);
    let blob = archive(&[
        ("abc/layer.tar", &l),
        (&wrong, &config),
        ("manifest.json", &m),
    ]);
    assert!(matches!(refused(&blob), LoadError::BlobDigest { .. }));

    // A hostile layer inside an otherwise valid archive.
    let hostile = RawTar::default().file("../../x", 0o644, b"x").finish();
    let (tar, _) = legacy_archive(&hostile, &[sha(&hostile)]);
    assert!(matches!(
        refused(&tar),
        LoadError::Store(StoreError::Apply { .. })
    ));
}

#[test]
fn truncated_archives_are_refused() {
    let l = layer();
    let (tar, _) = legacy_archive(&l, &[sha(&l)]);
    for cut in [600, 1500, tar.len() - 1500] {
        let err = refused(&tar[..cut]);
        assert!(
            matches!(
                err,
                LoadError::Truncated { .. } | LoadError::Read(_) | LoadError::NoManifest
            ),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn symlinked_members_are_followed_inside_the_archive() {
    let l = layer();
    let config = config_for(&[sha(&l), sha(&l)]);
    let m = serde_json::to_vec(&serde_json::json!([{
        "Config": "c.json",
        "RepoTags": null,
        "Layers": ["a/layer.tar", "b/layer.tar"],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("a/layer.tar", &l),
        ("c.json", &config),
        ("manifest.json", &m),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "b/layer.tar", "../a/layer.tar")
        .unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "loop", "loop").unwrap();
    let (_tmp, s) = store();
    let loaded = s.load(b.into_inner().unwrap().as_slice()).unwrap();
    assert_eq!(loaded[0].diff_ids.len(), 2);
    assert!(loaded[0].repo_tags.is_empty());
    assert!(s.has_layers(&loaded[0].diff_ids));
}

#[test]
fn layers_read_before_the_manifest_keep_only_what_it_names() {
    let l = layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l).unwrap();
    let gz = gz.finish().unwrap();
    let unused = RawTar::default().file("unused", 0o644, b"u").finish();
    let hostile = RawTar::default().file("../../x", 0o644, b"x").finish();
    let config = config_for(&[sha(&l)]);
    let m = serde_json::to_vec(&serde_json::json!([{
        "Config": "c.json",
        "Layers": ["a/layer.tar"],
    }]))
    .unwrap();
    // Layers first, one named, one unused, one hostile and unused; the manifest last.
    let tar = archive(&[
        ("a/layer.tar", &gz),
        ("b/layer.tar", &unused),
        ("evil/layer.tar", &hostile),
        ("c.json", &config),
        ("manifest.json", &m),
    ]);
    let (tmp, s) = store();
    let loaded = s.load(tar.as_slice()).unwrap();
    assert!(s.has_layers(&loaded[0].diff_ids));
    let kept = crate::image::testutil::layer_tar_bytes(&s, &loaded[0].diff_ids, 0);
    assert_eq!(kept, l, "the uncompressed tar is kept");
    let data = tmp.path().join("data");
    let dirs: Vec<String> = tree(&data)
        .into_iter()
        .filter(|p| p.contains(".tmp") || p.ends_with(".tar"))
        .collect();
    assert!(
        dirs.is_empty(),
        "no temporary left, no tar copy (a tar-split instead): {dirs:?}"
    );
    assert_eq!(
        std::fs::read_dir(data.join("overlay2"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "l")
            .count(),
        1,
        "only the named layer is unpacked"
    );
}
