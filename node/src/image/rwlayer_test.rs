//! Tests of diff, commit, export and import on a real store (root: whiteouts, xattrs and
//! overlay mounts).

use super::*;
use crate::image::testutil::RawTar;

const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A store with a two-file base layer and a container on it.
fn setup() -> (tempfile::TempDir, ImageStore, Vec<DiffId>) {
    let tmp = tempfile::tempdir().unwrap();
    let s = ImageStore::open(tmp.path()).unwrap();
    let base = RawTar::default()
        .dir("etc/", 0o755)
        .file("etc/motd", 0o644, b"hello\n")
        .file("etc/os-release", 0o644, b"base\n")
        .dir("var/", 0o755)
        .dir("var/cache/", 0o755)
        .file("var/cache/old", 0o644, b"old")
        .finish();
    let ids = vec![DiffId(Digest::of(&base))];
    let chain = ChainId::chain(&ids);
    s.unpack_layer(None, &chain[0], &ids[0], base.as_slice())
        .unwrap();
    s.create_rw_layer(CID, &ids).unwrap();
    (tmp, s, ids)
}

/// What a container would leave in its upper dir: a new file, a changed file, a deleted
/// file (whiteout) and a directory emptied and recreated (opaque).
fn change_things(s: &ImageStore) {
    let upper = s.layout().rw_dir(CID).join("diff");
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::write(upper.join("etc/os-release"), b"changed\n").unwrap();
    std::fs::write(upper.join("etc/new"), b"new\n").unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        upper.join("etc/motd"),
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .unwrap();
    std::fs::create_dir_all(upper.join("var/cache")).unwrap();
    rustix::fs::setxattr(
        upper.join("var/cache"),
        "trusted.overlay.opaque",
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    std::fs::write(upper.join("var/cache/fresh"), b"f").unwrap();
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

#[test]
fn changes_report_added_changed_and_deleted() {
    let (_tmp, s, _) = setup();
    assert!(s.rw_changes(CID).unwrap().is_empty());
    change_things(&s);
    let got: Vec<(String, ChangeKind)> = s
        .rw_changes(CID)
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    use ChangeKind::*;
    let want = [
        ("/etc", Modified),
        ("/etc/motd", Deleted),
        ("/etc/new", Added),
        ("/etc/os-release", Modified),
        ("/var", Modified),
        ("/var/cache", Modified),
        ("/var/cache/fresh", Added),
    ];
    let want: Vec<(String, ChangeKind)> = want.iter().map(|(p, k)| (p.to_string(), *k)).collect();
    assert_eq!(got, want);
    assert!(matches!(
        s.rw_changes("nope"),
        Err(RwLayerError::Store(StoreError::NoSuchRwLayer(_)))
    ));
}

#[test]
fn commit_turns_overlay_markers_back_into_whiteouts() {
    let (_tmp, s, ids) = setup();
    assert_eq!(
        s.commit_rw_layer(CID, &ids).unwrap(),
        None,
        "nothing changed"
    );
    change_things(&s);
    let diff_id = s.commit_rw_layer(CID, &ids).unwrap().unwrap();
    let mut all = ids.clone();
    all.push(diff_id);
    assert!(s.has_layers(&all));
    let tar = crate::image::testutil::layer_tar_bytes(&s, &all, all.len() - 1);
    assert_eq!(DiffId(Digest::of(&tar)), diff_id);
    assert_eq!(
        tar_names(&tar),
        [
            "etc/",
            "etc/.wh.motd",
            "etc/new",
            "etc/os-release",
            "var/",
            "var/cache/",
            "var/cache/.wh..wh..opq",
            "var/cache/fresh"
        ]
    );
    // The committed layer, unpacked, is a whiteout again.
    let top = s.layout().layer_dir(ChainId::chain(&all).last().unwrap());
    let motd = std::fs::symlink_metadata(top.join("diff/etc/motd")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &motd.file_type()
    ));
    // Committing again is idempotent.
    assert_eq!(s.commit_rw_layer(CID, &ids).unwrap(), Some(diff_id));
}

#[test]
fn export_shows_the_merged_view_without_deleted_files() {
    let (_tmp, s, _) = setup();
    change_things(&s);
    let tar = s.export_rw(CID, Vec::new()).unwrap();
    let names = tar_names(&tar);
    assert_eq!(
        names,
        [
            ".dockerenv",
            "dev/",
            "dev/console",
            "dev/pts/",
            "dev/shm/",
            "etc/",
            "etc/hostname",
            "etc/hosts",
            "etc/mtab",
            "etc/new",
            "etc/os-release",
            "etc/resolv.conf",
            "proc/",
            "sys/",
            "var/",
            "var/cache/",
            "var/cache/fresh"
        ]
    );
    let mut a = tar::Archive::new(tar.as_slice());
    let mut release = String::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("os-release") {
            std::io::Read::read_to_string(&mut e, &mut release).unwrap();
        }
    }
    assert_eq!(release, "changed\n");
    // Nothing stays mounted or left behind.
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(&s.layout().overlay().display().to_string()));
    let left: Vec<_> = std::fs::read_dir(s.layout().overlay())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn import_accepts_plain_gzip_and_zstd_and_refuses_hostile_tars() {
    let tmp = tempfile::tempdir().unwrap();
    let s = ImageStore::open(tmp.path()).unwrap();
    let rootfs = RawTar::default()
        .dir("bin/", 0o755)
        .file("bin/tool", 0o755, b"#!/bin/sh\n")
        .finish();
    let want = DiffId(Digest::of(&rootfs));
    assert_eq!(s.import_layer(rootfs.as_slice()).unwrap(), want);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&rootfs).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(s.import_layer(gz.as_slice()).unwrap(), want);
    let zst = zstd::encode_all(rootfs.as_slice(), 1).unwrap();
    assert_eq!(s.import_layer(zst.as_slice()).unwrap(), want);
    assert!(s.has_layers(&[want]));
    assert!(s.has_layer_tar(&ChainId::chain(&[want])[0], &want));

    let before = crate::image::testutil::tree(tmp.path());
    let evil = RawTar::default().file("../escape", 0o644, b"x").finish();
    assert!(s.import_layer(evil.as_slice()).is_err());
    let truncated = &rootfs[..700];
    assert!(s.import_layer(truncated).is_err());
    assert_eq!(crate::image::testutil::tree(tmp.path()), before);
}
