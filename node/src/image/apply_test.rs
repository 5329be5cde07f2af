//! Tests of layer application, hostile archives first. They run as root (chown, mknod,
//! trusted xattrs) in their own temp dirs.

use super::*;
use crate::image::testutil::{tree, RawTar};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A temp dir with `root/` (the layer) and `outside/` (must never change).
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&root).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("secret"), b"secret").unwrap();
    std::fs::set_permissions(
        outside.join("secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    Fixture {
        _tmp: tmp,
        root,
        outside,
    }
}

impl Fixture {
    fn apply(&self, tar: &[u8]) -> Result<Applied, ApplyError> {
        let dir = std::fs::File::open(&self.root).unwrap();
        apply_layer(dir.as_fd(), tar, None)
    }

    fn assert_outside_untouched(&self) {
        assert_eq!(tree(&self.outside), vec!["secret".to_string()]);
        let m = std::fs::symlink_metadata(self.outside.join("secret")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o600);
        assert_eq!(m.uid(), 0);
        assert_eq!(
            std::fs::read(self.outside.join("secret")).unwrap(),
            b"secret"
        );
    }

    fn outside_str(&self) -> &str {
        self.outside.to_str().unwrap()
    }
}

fn lmeta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap()
}

#[test]
fn regular_layer_keeps_modes_owners_links_and_times() {
    let f = fixture();
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_mtime(1234);
    h.set_size(5);
    t.append_data(&mut h, "usr/bin/su", &b"hello"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o1777);
    h.set_mtime(777);
    h.set_size(0);
    t.append_data(&mut h, "tmp/", std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_uid(7);
    h.set_mtime(99);
    h.set_size(0);
    t.append_link(&mut h, "bin", "usr/bin").unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    t.append_link(&mut h, "usr/bin/su2", "usr/bin/su").unwrap();
    let bytes = t.into_inner().unwrap();

    let applied = f.apply(&bytes).unwrap();
    assert_eq!(applied.diff_id.0, Digest::of(&bytes));
    assert_eq!(applied.size, 5);

    let su = lmeta(&f.root.join("usr/bin/su"));
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid bit kept");
    assert_eq!((su.uid(), su.gid()), (1000, 1001));
    assert_eq!(su.mtime(), 1234);
    assert_eq!(std::fs::read(f.root.join("usr/bin/su")).unwrap(), b"hello");
    let su2 = lmeta(&f.root.join("usr/bin/su2"));
    assert_eq!(su2.ino(), su.ino(), "hard link shares the inode");
    let tmp = lmeta(&f.root.join("tmp"));
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(
        tmp.mtime(),
        777,
        "directory mtimes set after their children"
    );
    let bin = lmeta(&f.root.join("bin"));
    assert!(bin.file_type().is_symlink());
    assert_eq!(bin.uid(), 7);
    assert_eq!(bin.mtime(), 99);
    assert_eq!(
        std::fs::read_link(f.root.join("bin")).unwrap(),
        PathBuf::from("usr/bin")
    );
    // Implied parent directories.
    assert_eq!(lmeta(&f.root.join("usr")).mode() & 0o7777, 0o755);
}

#[test]
fn whiteouts_become_char_devices_and_opaque_xattrs() {
    let f = fixture();
    let tar = RawTar::default()
        .dir("etc/", 0o755)
        .file(".wh.gone", 0o644, b"")
        .file("etc/.wh..wh..opq", 0o644, b"")
        .file("etc/.wh..wh.plnk", 0o644, b"")
        .finish();
    f.apply(&tar).unwrap();
    let gone = lmeta(&f.root.join("gone"));
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    let mut buf = [0u8; 8];
    let n =
        rustix::fs::lgetxattr(f.root.join("etc"), "trusted.overlay.opaque", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"y");
    assert!(!f.root.join(".wh.gone").exists());
    assert!(!f.root.join("etc/.wh..wh.plnk").exists());

    let bare = RawTar::default().file("etc/.wh.", 0o644, b"").finish();
    assert!(matches!(
        f.apply(&bare),
        Err(ApplyError::BadWhiteout { .. })
    ));
}

#[test]
fn dot_dot_escapes_are_refused_and_absolute_names_made_relative() {
    for name in ["../evil", "a/../../evil", "./../../outside/evil"] {
        let f = fixture();
        let tar = RawTar::default().file(name, 0o644, b"x").finish();
        assert!(
            matches!(f.apply(&tar), Err(ApplyError::Escape { .. })),
            "{name}"
        );
        f.assert_outside_untouched();
        assert!(!f.root.parent().unwrap().join("evil").exists());
    }
    let f = fixture();
    let abs = format!("{}/evil", f.outside_str());
    let tar = RawTar::default()
        .file(&abs, 0o644, b"x")
        .file("a/../b", 0o644, b"y")
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    assert!(f.root.join(abs.trim_start_matches('/')).is_file());
    assert!(f.root.join("b").is_file());
}

#[test]
fn writes_through_symlinks_stay_inside_the_layer() {
    let f = fixture();
    let tar = RawTar::default()
        .symlink("evil", "/")
        .file("evil/pwned", 0o644, b"x")
        .symlink("up", "../../..")
        .file("up/pwned2", 0o644, b"x")
        .finish();
    f.apply(&tar).unwrap();
    assert!(f.root.join("pwned").is_file());
    assert!(f.root.join("pwned2").is_file());
    assert!(!Path::new("/pwned").exists());
    f.assert_outside_untouched();

    // A symlink straight at the outside dir: the write resolves inside the root, where
    // that path does not exist, so the entry fails; nothing lands outside.
    let f = fixture();
    let tar = RawTar::default()
        .symlink("evil", f.outside_str())
        .file("evil/pwned", 0o644, b"x")
        .finish();
    let _ = f.apply(&tar);
    f.assert_outside_untouched();
}

#[test]
fn chmod_and_chown_never_follow_a_symlink() {
    let f = fixture();
    let secret = format!("{}/secret", f.outside_str());
    let tar = RawTar::default()
        .symlink("l", &secret)
        .file("l", 0o4777, b"replaced")
        .symlink("d", f.outside_str())
        .dir("d", 0o777)
        .finish();
    f.apply(&tar).unwrap();
    f.assert_outside_untouched();
    let l = lmeta(&f.root.join("l"));
    assert!(l.file_type().is_file(), "the later entry replaced the link");
    assert_eq!(l.mode() & 0o7777, 0o4777);
    assert!(lmeta(&f.root.join("d")).is_dir());
}

#[test]
fn hardlinks_to_outside_are_refused() {
    let f = fixture();
    let tar = RawTar::default()
        .hardlink("h", "../outside/secret")
        .finish();
    assert!(matches!(f.apply(&tar), Err(ApplyError::Escape { .. })));
    let secret = format!("{}/secret", f.outside_str());
    let tar = RawTar::default().hardlink("h", &secret).finish();
    assert!(matches!(f.apply(&tar), Err(ApplyError::BadHardlink { .. })));
    let tar = RawTar::default()
        .symlink("s", f.outside_str())
        .hardlink("h", "s/secret")
        .finish();
    assert!(matches!(f.apply(&tar), Err(ApplyError::BadHardlink { .. })));
    let tar = RawTar::default()
        .dir("d", 0o755)
        .hardlink("h", "d")
        .finish();
    assert!(matches!(f.apply(&tar), Err(ApplyError::BadHardlink { .. })));
    f.assert_outside_untouched();
    assert!(!f.root.join("h").exists());
    let ino = lmeta(&f.outside.join("secret")).nlink();
    assert_eq!(ino, 1, "no new name for the outside file");
}

#[test]
fn device_nodes_and_fifos_are_skipped() {
    let f = fixture();
    let mut tar = RawTar::default();
    tar.entry("sda", tar::EntryType::Block, "", 0o666, b"")
        .entry("mem", tar::EntryType::Char, "", 0o666, b"")
        .entry("fifo", tar::EntryType::Fifo, "", 0o666, b"")
        .file("ok", 0o644, b"ok");
    f.apply(&tar.finish()).unwrap();
    assert_eq!(tree(&f.root), vec!["ok".to_string()]);
}

#[test]
fn truncated_archives_are_errors() {
    let full = RawTar::default()
        .file("a", 0o644, &[7u8; 3000])
        .file("b", 0o644, b"b")
        .finish();
    for cut in [100, 512 + 1000, 512 + 3072 + 100] {
        let f = fixture();
        let res = f.apply(&full[..cut]);
        assert!(
            matches!(
                res,
                Err(ApplyError::Truncated { .. }) | Err(ApplyError::Read(_))
            ),
            "cut at {cut}: {res:?}"
        );
    }
}

#[test]
fn later_entries_win() {
    let f = fixture();
    let tar = RawTar::default()
        .file("a", 0o644, b"one")
        .file("a", 0o600, b"two")
        .dir("d", 0o755)
        .file("d/x", 0o644, b"x")
        .file("d", 0o644, b"now a file")
        .file("e", 0o644, b"file")
        .dir("e", 0o700)
        .dir("m", 0o755)
        .file("m/keep", 0o644, b"k")
        .dir("m", 0o750)
        .finish();
    f.apply(&tar).unwrap();
    assert_eq!(std::fs::read(f.root.join("a")).unwrap(), b"two");
    assert_eq!(lmeta(&f.root.join("a")).mode() & 0o777, 0o600);
    assert_eq!(std::fs::read(f.root.join("d")).unwrap(), b"now a file");
    assert!(lmeta(&f.root.join("e")).is_dir());
    assert!(f.root.join("m/keep").is_file(), "directories merge");
    assert_eq!(lmeta(&f.root.join("m")).mode() & 0o777, 0o750);
}

#[test]
fn pax_xattrs_are_applied_except_overlay_ones() {
    let f = fixture();
    let mut t = tar::Builder::new(Vec::new());
    t.append_pax_extensions([
        ("SCHILY.xattr.user.color", &b"blue"[..]),
        ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
    ])
    .unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(1);
    t.append_data(&mut h, "f", &b"x"[..]).unwrap();
    f.apply(&t.into_inner().unwrap()).unwrap();
    let mut buf = [0u8; 16];
    let n = rustix::fs::lgetxattr(f.root.join("f"), "user.color", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"blue");
    assert!(
        rustix::fs::lgetxattr(f.root.join("f"), "trusted.overlay.redirect", &mut buf[..]).is_err()
    );
}

#[test]
fn clean_normalises_names() {
    let c = |s: &str| clean(s.as_bytes()).map(|v| v.join(&b'/'));
    assert_eq!(c("/a//b/./c/"), Some(b"a/b/c".to_vec()));
    assert_eq!(c("a/../b"), Some(b"b".to_vec()));
    assert_eq!(c("./"), Some(Vec::new()));
    assert_eq!(c("../a"), None);
    assert_eq!(c("/.."), None);
}

/// Contents that differ at every offset, so a block written at the wrong place shows.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// Large files of every shape the direct path splits differently: exactly one buffer,
/// several buffers plus a tail, a tail alone just under a block, and a small buffered one.
fn large_files_tar() -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let min = crate::image::copy::DIRECT_MIN as usize;
    let files = vec![
        ("exact", pattern(min, 1)),
        ("long", pattern(3 * min + 4096 * 7 + 123, 2)),
        ("blocks", pattern(min + 4095, 3)),
        ("small", pattern(5000, 4)),
    ];
    let mut t = RawTar::default();
    for (name, data) in &files {
        t.file(name, 0o640, data);
    }
    (t.finish(), files)
}

fn apply_direct(root: &Path, tar: &[u8]) -> Applied {
    let dir = std::fs::File::open(root).unwrap();
    let opts = ApplyOptions {
        direct_io: true,
        ..ApplyOptions::default()
    };
    apply_tar(dir.as_fd(), tar, None, &opts).unwrap()
}

fn assert_files(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (name, data) in files {
        let p = root.join(name);
        assert!(std::fs::read(&p).unwrap() == *data, "{name} differs");
        let m = lmeta(&p);
        assert_eq!(m.mode() & 0o7777, 0o640, "{name}");
        // Set after the last write, which would otherwise have moved it.
        assert_eq!(m.mtime(), 1000, "{name}");
    }
}

#[test]
fn large_files_written_directly_are_byte_identical_with_their_metadata() {
    let f = fixture();
    let (tar, files) = large_files_tar();
    let applied = apply_direct(&f.root, &tar);
    let total: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(applied.size, total);
    assert_files(&f.root, &files);
    f.assert_outside_untouched();
}

#[test]
fn direct_writes_fall_back_to_buffered_where_the_filesystem_refuses_them() {
    // ramfs has no direct I/O: setting O_DIRECT fails and every byte goes buffered.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("ramfs");
    std::fs::create_dir(&root).unwrap();
    nix::mount::mount(
        Some("ramfs"),
        &root,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let _unmount = crate::image::testutil::Mounted(root.clone());
    let (tar, files) = large_files_tar();
    apply_direct(&root, &tar);
    assert_files(&root, &files);
}

#[test]
fn a_large_file_cut_short_is_reported_truncated() {
    let f = fixture();
    let (tar, _) = large_files_tar();
    // Inside the second file's data, past its first buffer.
    let cut = 512 + crate::image::copy::DIRECT_MIN as usize + 512 + (1 << 20) + 100;
    let dir = std::fs::File::open(&f.root).unwrap();
    let opts = ApplyOptions {
        direct_io: true,
        ..ApplyOptions::default()
    };
    let err = apply_tar(dir.as_fd(), &tar[..cut], None, &opts).unwrap_err();
    assert!(
        matches!(err, ApplyError::Truncated { ref path, .. } if path == "long"),
        "{err:?}"
    );
    f.assert_outside_untouched();
}
