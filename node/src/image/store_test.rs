//! Tests of the layer store on disk, including real overlay mounts (root only).

use super::*;
use crate::image::testutil::{mount, tree, RawTar};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use wharf_protocol::Digest;

fn store() -> (tempfile::TempDir, ImageStore) {
    let tmp = tempfile::tempdir().unwrap();
    let s = ImageStore::open(tmp.path()).unwrap();
    (tmp, s)
}

fn diff_id(tar: &[u8]) -> DiffId {
    DiffId(Digest::of(tar))
}

/// Unpack `layers` bottom first; returns their DiffIDs.
fn unpack_all(s: &ImageStore, layers: &[Vec<u8>]) -> Vec<DiffId> {
    let ids: Vec<DiffId> = layers.iter().map(|l| diff_id(l)).collect();
    let chain = ChainId::chain(&ids);
    for (i, l) in layers.iter().enumerate() {
        let parent = i.checked_sub(1).map(|p| &chain[p]);
        s.unpack_layer(parent, &chain[i], &ids[i], l.as_slice())
            .unwrap();
    }
    ids
}

fn two_layers() -> Vec<Vec<u8>> {
    let base = RawTar::default()
        .dir("etc/", 0o755)
        .file("etc/os-release", 0o644, b"base\n")
        .file("etc/motd", 0o644, b"hello\n")
        .dir("tmp/", 0o1777)
        .finish();
    let top = RawTar::default()
        .dir("etc/", 0o755)
        .file("etc/os-release", 0o644, b"top\n")
        .file("etc/.wh.motd", 0o644, b"")
        .finish();
    vec![base, top]
}

#[test]
fn layers_are_stored_in_the_moby_layout() {
    let (tmp, s) = store();
    let layers = two_layers();
    let ids = unpack_all(&s, &layers);
    let chain = ChainId::chain(&ids);
    assert!(s.has_layers(&ids));
    assert!(!s.has_layers(&[ids[1]]), "a layer alone is another chain");
    let ov = tmp.path().join("overlay2");
    let base = ov.join(chain[0].0.hex());
    let top = ov.join(chain[1].0.hex());
    let base_link = std::fs::read_to_string(base.join("link")).unwrap();
    let top_link = std::fs::read_to_string(top.join("link")).unwrap();
    assert_eq!(base_link.len(), 26);
    assert!(
        !base.join("lower").exists(),
        "the bottom layer has no lower file"
    );
    assert_eq!(
        std::fs::read_to_string(top.join("lower")).unwrap(),
        format!("l/{base_link}")
    );
    assert_eq!(
        std::fs::read_link(ov.join("l").join(&top_link)).unwrap(),
        std::path::PathBuf::from(format!("../{}/diff", chain[1].0.hex()))
    );
    assert!(top
        .join("diff/etc/motd")
        .metadata()
        .unwrap()
        .file_type()
        .is_char_device());
    assert_eq!(s.layers_size(&ids), 5 + 6 + 4);
    for (i, l) in layers.iter().enumerate() {
        let kept = crate::image::testutil::layer_tar_bytes(&s, &ids, i);
        assert_eq!(&kept, l, "the canonical tar is kept verbatim");
    }
    // Again: nothing changes.
    let before = tree(tmp.path());
    unpack_all(&s, &layers);
    assert_eq!(tree(tmp.path()), before);
}

#[test]
fn a_diff_id_mismatch_leaves_the_store_unchanged() {
    let (tmp, s) = store();
    let before = tree(tmp.path());
    let layer = &two_layers()[0];
    let wrong = DiffId(Digest::of(b"something else"));
    let c = ChainId(wrong.0);
    let err = s
        .unpack_layer(None, &c, &wrong, layer.as_slice())
        .unwrap_err();
    assert!(
        matches!(err, StoreError::DiffIdMismatch { got, .. } if got == diff_id(layer)),
        "{err}"
    );
    assert_eq!(tree(tmp.path()), before);
    assert!(!s.has_layer(&c));
}

#[test]
fn a_hostile_layer_leaves_the_store_unchanged() {
    let (tmp, s) = store();
    let before = tree(tmp.path());
    let bad = RawTar::default()
        .file("ok", 0o644, b"fine")
        .file("../../escape", 0o644, b"x")
        .finish();
    let id = diff_id(&bad);
    let err = s
        .unpack_layer(None, &ChainId(id.0), &id, bad.as_slice())
        .unwrap_err();
    assert!(matches!(err, StoreError::Apply { .. }), "{err}");
    assert_eq!(tree(tmp.path()), before);
    assert!(!tmp.path().parent().unwrap().join("escape").exists());
}

#[test]
fn open_removes_leftovers_of_a_crash() {
    let (tmp, s) = store();
    let ids = unpack_all(&s, &two_layers()[..1]);
    let ov = tmp.path().join("overlay2");
    std::fs::create_dir_all(ov.join(".tmp-abc-1-0/diff/x")).unwrap();
    std::fs::write(tmp.path().join("image/layers/.tmp-abc-1-1"), b"half").unwrap();
    std::fs::create_dir_all(tmp.path().join("image/tmp/.tmp-load-1-2")).unwrap();
    drop(s);
    let s = ImageStore::open(tmp.path()).unwrap();
    let left: Vec<String> = tree(tmp.path())
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    assert!(s.has_layers(&ids), "complete layers survive");
}

#[test]
fn writable_layers_are_created_found_and_removed() {
    let (tmp, s) = store();
    let ids = unpack_all(&s, &two_layers());
    let cid = "c".repeat(64);
    let spec = s.create_rw_layer(&cid, &ids).unwrap();
    assert_eq!(
        spec.lowerdir.len(),
        3,
        "init layer over the two image layers"
    );
    let init = tmp.path().join("overlay2").join(format!("{cid}-init"));
    assert_eq!(
        spec.lowerdir[0],
        format!("l/{}", std::fs::read_to_string(init.join("link")).unwrap())
    );
    for f in [
        ".dockerenv",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "dev/console",
    ] {
        assert!(init.join("diff").join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_link(init.join("diff/etc/mtab")).unwrap(),
        std::path::PathBuf::from("/proc/mounts")
    );
    assert_eq!(spec.cwd, tmp.path().join("overlay2"));
    assert_eq!(
        spec.upperdir,
        tmp.path().join("overlay2").join(&cid).join("diff")
    );
    assert!(spec.target.is_dir() && spec.workdir.is_dir());
    assert_eq!(s.rw_mount_spec(&cid, &ids).unwrap(), spec);
    assert_eq!(s.rw_mount_spec(&cid, &[]).unwrap(), spec);
    assert_eq!(s.create_rw_layer(&cid, &ids).unwrap(), spec, "idempotent");
    assert!(matches!(
        s.rw_mount_spec(&cid, &ids[..1]),
        Err(StoreError::RwLayerMismatch(_))
    ));
    let link =
        std::fs::read_to_string(tmp.path().join("overlay2").join(&cid).join("link")).unwrap();
    assert!(tmp.path().join("overlay2/l").join(&link).exists());

    s.remove_rw_layer(&cid).unwrap();
    assert!(!tmp.path().join("overlay2").join(&cid).exists());
    assert!(!init.exists(), "the init layer goes with it");
    assert!(std::fs::symlink_metadata(tmp.path().join("overlay2/l").join(&link)).is_err());
    assert!(matches!(
        s.rw_mount_spec(&cid, &[]),
        Err(StoreError::NoSuchRwLayer(_))
    ));
    s.remove_rw_layer(&cid).unwrap();

    let missing = DiffId(Digest::of(b"nope"));
    assert!(matches!(
        s.create_rw_layer(&cid, &[missing]),
        Err(StoreError::MissingLayer(d)) if d == missing
    ));
    assert!(matches!(
        s.create_rw_layer("../x", &ids),
        Err(StoreError::InvalidContainerId(_))
    ));
    assert!(matches!(
        s.create_rw_layer(&cid, &[]),
        Err(StoreError::NoLowerLayers)
    ));
}

#[test]
fn two_layer_overlay_mounts_and_shows_the_merged_tree() {
    let (_tmp, s) = store();
    let ids = unpack_all(&s, &two_layers());
    let cid = "a".repeat(64);
    let spec = s.create_rw_layer(&cid, &ids).unwrap();
    {
        let _m = mount(&spec);
        let merged = &spec.target;
        assert_eq!(
            std::fs::read_to_string(merged.join("etc/os-release")).unwrap(),
            "top\n"
        );
        assert!(
            !merged.join("etc/motd").exists(),
            "whiteout hides the lower file"
        );
        let tmp_mode = merged.join("tmp").metadata().unwrap().permissions().mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
        std::fs::write(merged.join("tmp/new"), b"x").unwrap();
        assert!(
            spec.upperdir.join("tmp/new").is_file(),
            "writes land in the upper dir"
        );
    }
    // Removing works whether or not it is still mounted.
    let _m = mount(&spec);
    s.remove_rw_layer(&cid).unwrap();
    assert!(!spec.target.exists());
}

#[test]
fn one_hundred_twenty_eight_layers_mount() {
    let (_tmp, s) = store();
    let layers: Vec<Vec<u8>> = (0..layout::MAX_LAYERS)
        .map(|i| {
            RawTar::default()
                .file(&format!("f{i}"), 0o644, i.to_string().as_bytes())
                .file("top", 0o644, i.to_string().as_bytes())
                .finish()
        })
        .collect();
    let ids = unpack_all(&s, &layers);
    let cid = "b".repeat(64);
    let spec = s.create_rw_layer(&cid, &ids).unwrap();
    assert_eq!(
        spec.lowerdir.len(),
        129,
        "128 image layers and the init layer"
    );
    let _m = mount(&spec);
    assert_eq!(
        std::fs::read_to_string(spec.target.join("f0")).unwrap(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(spec.target.join("f127")).unwrap(),
        "127"
    );
    assert_eq!(
        std::fs::read_to_string(spec.target.join("top")).unwrap(),
        "127"
    );
}

/// A layer that replaces its own entries (as Docker allows): a file written twice, a
/// directory replaced by a file, a file replaced by a whiteout and by a hard link, plus
/// PAX long names, an empty file and trailing bytes after the end-of-archive blocks.
fn self_replacing_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_mtime(1000);
        h.set_size(data.len() as u64);
        match link {
            Some(l) => b.append_link(&mut h, name, l).unwrap(),
            None => b.append_data(&mut h, name, data).unwrap(),
        }
    };
    add("a/", tar::EntryType::Directory, None, b"");
    add("a/twice", tar::EntryType::Regular, None, b"first version\n");
    add(
        "a/twice",
        tar::EntryType::Regular,
        None,
        b"second, longer version\n",
    );
    add("d/", tar::EntryType::Directory, None, b"");
    add("d/inner", tar::EntryType::Regular, None, &[7u8; 3000]);
    add("d", tar::EntryType::Regular, None, b"d is a file now\n");
    add("gone", tar::EntryType::Regular, None, b"whited out\n");
    add(".wh.gone", tar::EntryType::Regular, None, b"");
    add(
        "linked",
        tar::EntryType::Regular,
        None,
        b"replaced by a link\n",
    );
    add("linked", tar::EntryType::Link, Some("a/twice"), b"");
    add("empty", tar::EntryType::Regular, None, b"");
    let long = format!("{}/long-name-file", "x".repeat(150));
    add(&long, tar::EntryType::Regular, None, &[1u8; 70_000]);
    let mut tar = b.into_inner().unwrap();
    tar.extend_from_slice(b"trailing bytes after the archive");
    tar
}

#[test]
fn tar_split_gives_back_every_byte_of_a_self_replacing_layer() {
    let (_tmp, s) = store();
    let layer = self_replacing_layer();
    let ids = unpack_all(&s, std::slice::from_ref(&layer));
    let chain = ChainId::chain(&ids);
    let dir = s.layout().layer_dir(&chain[0]);
    // No canonical copy: the tar is regenerated from the layer's files.
    assert!(s.layer_tar_path(&ids[0]).is_none());
    assert!(dir.join("tar-split").is_file());
    let diff = dir.join("diff");
    assert_eq!(
        std::fs::read(diff.join("a/twice")).unwrap(),
        b"second, longer version\n"
    );
    assert_eq!(std::fs::read(diff.join("d")).unwrap(), b"d is a file now\n");
    assert!(std::fs::symlink_metadata(diff.join("gone"))
        .unwrap()
        .file_type()
        .is_char_device());
    let back = crate::image::testutil::layer_tar_bytes(&s, &ids, 0);
    assert_eq!(back.len(), layer.len());
    assert!(back == layer, "regenerated tar differs");
    // Replaced entries are kept outside the layer's diff, where no container sees them.
    assert_eq!(
        tree(&diff).iter().filter(|p| p.contains("inner")).count(),
        0
    );
}

#[test]
fn a_changed_layer_file_fails_the_regenerated_tar_instead_of_lying() {
    let (_tmp, s) = store();
    let layers = two_layers();
    let ids = unpack_all(&s, &layers);
    let chain = ChainId::chain(&ids);
    let f = s.layout().layer_dir(&chain[0]).join("diff/etc/motd");
    // Same size, other bytes: only the digest check can notice.
    std::fs::write(&f, b"HELLO\n").unwrap();
    let tar = s.open_layer_tar(&chain[0], &ids[0]).unwrap();
    let mut out = Vec::new();
    let err = std::io::Read::read_to_end(&mut tar.reader().unwrap(), &mut out).unwrap_err();
    assert!(err.to_string().contains("cannot be regenerated"), "{err}");
    // Another size: refused when the file is reached.
    std::fs::write(&f, b"HELLO, WORLD\n").unwrap();
    let err = std::io::Read::read_to_end(&mut tar.reader().unwrap(), &mut Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("no longer a file of 6 bytes"),
        "{err}"
    );
}

#[test]
fn a_layer_being_saved_is_not_collected_until_the_save_ends() {
    let (_tmp, s) = store();
    let layers = two_layers();
    let ids = unpack_all(&s, &layers);
    let chain = ChainId::chain(&ids);
    let tar = s.open_layer_tar(&chain[1], &ids[1]).unwrap();
    s.remove_unused_layers(&[ids[..1].to_vec()]).unwrap();
    assert!(s.has_layer(&chain[1]), "pinned by the save");
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut tar.reader().unwrap(), &mut out).unwrap();
    assert_eq!(out, layers[1]);
    drop(tar);
    s.remove_unused_layers(&[ids[..1].to_vec()]).unwrap();
    assert!(!s.has_layer(&chain[1]));
    assert!(s.has_layer(&chain[0]));
}

#[test]
fn layers_with_large_files_written_directly_give_back_every_byte() {
    let (_tmp, s) = store();
    let big = |len: usize, seed: u8| -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    };
    let first = big(3 << 20, 1);
    let second = big((2 << 20) + 777, 2);
    let other = big(1 << 20, 3);
    let layer = RawTar::default()
        .dir("data/", 0o755)
        .file("data/big", 0o644, &first)
        .file("data/other", 0o600, &other)
        // A later entry replaces the first version, which the tar-split must keep.
        .file("data/big", 0o644, &second)
        .finish();
    let ids = unpack_all(&s, std::slice::from_ref(&layer));
    let chain = ChainId::chain(&ids);
    let diff = s.layout().layer_dir(&chain[0]).join("diff");
    assert!(std::fs::read(diff.join("data/big")).unwrap() == second);
    assert!(std::fs::read(diff.join("data/other")).unwrap() == other);
    let back = crate::image::testutil::layer_tar_bytes(&s, &ids, 0);
    assert_eq!(back.len(), layer.len());
    assert!(back == layer, "regenerated tar differs");
}
