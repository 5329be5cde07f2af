//! Unit tests of [`super`] on a plain directory standing in for a container's root.

use super::*;
use std::os::unix::fs::symlink;

/// One raw tar entry (names the builder refuses, such as `..`, included).
fn entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
    h.set_size(data.len() as u64);
    h.set_mtime(1000);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish(mut t: Vec<u8>) -> std::fs::File {
    t.extend_from_slice(&[0u8; 1024]);
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(&t).unwrap();
    f
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    fd: OwnedFd,
}

/// A root with planted symlinks (`/escape -> /`, `/tmp/x -> /etc`, `/tmp/up -> ../../..`)
/// beside an `outside` directory holding a marker.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("marker"), "host\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "ctr\n").unwrap();
    symlink("/", root.join("escape")).unwrap();
    symlink("/etc", root.join("tmp/x")).unwrap();
    symlink("../../..", root.join("tmp/up")).unwrap();
    // The container's own copy of the outside path.
    let mirror = root.join(outside.strip_prefix("/").unwrap());
    std::fs::create_dir_all(&mirror).unwrap();
    std::fs::write(mirror.join("marker"), "container\n").unwrap();
    let fd = rustix::fs::open(
        &root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        root,
        outside,
        fd,
    }
}

fn names(tar_bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(tar_bytes);
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

#[test]
fn stat_resolves_symlinks_inside_the_root() {
    let f = fixture();
    let st = stat_path(f.fd.as_fd(), "/tmp/x").unwrap();
    assert_eq!(st.mode & (1 << 27), 1 << 27);
    assert_eq!(st.link_target, "/etc");
    assert_eq!(st.name, "x");
    let st = stat_path(f.fd.as_fd(), "/tmp/x/").unwrap();
    assert_eq!(st.mode & (1 << 31), 1 << 31);
    let st = stat_path(f.fd.as_fd(), "/tmp/up/etc/hostname").unwrap();
    assert_eq!(st.size, 4);
    assert!(matches!(
        stat_path(f.fd.as_fd(), "/nope/x"),
        Err(ArchiveError::NotFound { .. })
    ));
    assert!(matches!(
        stat_path(f.fd.as_fd(), "/etc/hostname/x"),
        Err(ArchiveError::NotFound { .. })
    ));
    assert!(matches!(
        stat_path(f.fd.as_fd(), "/etc/hostname/"),
        Err(ArchiveError::NotFound { .. })
    ));
}

#[test]
fn reads_through_planted_symlinks_see_the_container() {
    let f = fixture();
    let path = format!("/escape{}/marker", f.outside.display());
    let out = write_archive(f.fd.as_fd(), &path, Vec::new()).unwrap();
    let mut a = tar::Archive::new(&out[..]);
    let mut e = a.entries().unwrap().next().unwrap().unwrap();
    assert_eq!(&*e.path_bytes(), b"marker");
    let mut s = String::new();
    e.read_to_string(&mut s).unwrap();
    assert_eq!(s, "container\n");
    // A directory is named by its base name, children below it.
    let out = write_archive(f.fd.as_fd(), "/tmp/x/", Vec::new()).unwrap();
    assert_eq!(names(&out), vec!["x/", "x/hostname"]);
}

#[test]
fn writes_through_planted_symlinks_stay_inside() {
    let f = fixture();
    let mut t = Vec::new();
    entry(&mut t, "new.txt", tar::EntryType::Regular, "", b"new\n");
    entry(&mut t, "lnk", tar::EntryType::Symlink, "/", b"");
    entry(
        &mut t,
        "lnk/etc/through",
        tar::EntryType::Regular,
        "",
        b"t\n",
    );
    entry(&mut t, ".wh.plain", tar::EntryType::Regular, "", b"p\n");
    let mut spool = finish(t);
    let dest = format!("/escape{}", f.outside.display());
    extract_archive(f.fd.as_fd(), &dest, &mut spool, &ExtractOptions::default()).unwrap();
    let mirror = f.root.join(f.outside.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(mirror.join("new.txt")).unwrap(),
        "new\n"
    );
    assert_eq!(
        std::fs::read_to_string(mirror.join(".wh.plain")).unwrap(),
        "p\n"
    );
    assert_eq!(
        std::fs::read_to_string(f.root.join("etc/through")).unwrap(),
        "t\n"
    );
    assert!(!f.outside.join("new.txt").exists());
    assert_eq!(
        std::fs::read_to_string(f.outside.join("marker")).unwrap(),
        "host\n"
    );
    // Into a symlink to a directory: its target inside the root.
    let mut t = Vec::new();
    entry(&mut t, "via-x", tar::EntryType::Regular, "", b"x\n");
    let mut spool = finish(t);
    extract_archive(
        f.fd.as_fd(),
        "/tmp/x",
        &mut spool,
        &ExtractOptions::default(),
    )
    .unwrap();
    assert!(f.root.join("etc/via-x").exists());
}

#[test]
fn bad_archives_write_nothing() {
    let f = fixture();
    let opts = ExtractOptions {
        no_overwrite_dir_non_dir: true,
        chown_to_user: None,
    };
    let mut garbage = tempfile::tempfile().unwrap();
    garbage.write_all(b"not a tar at all").unwrap();
    assert!(matches!(
        extract_archive(f.fd.as_fd(), "/tmp", &mut garbage, &opts),
        Err(ArchiveError::BadArchive(_))
    ));
    let mut empty = tempfile::tempfile().unwrap();
    assert!(matches!(
        extract_archive(f.fd.as_fd(), "/tmp", &mut empty, &opts),
        Err(ArchiveError::BadArchive(_))
    ));
    let mut t = Vec::new();
    entry(&mut t, "first", tar::EntryType::Regular, "", b"1\n");
    entry(
        &mut t,
        "../../outside/evil",
        tar::EntryType::Regular,
        "",
        b"e\n",
    );
    let mut spool = finish(t);
    assert!(matches!(
        extract_archive(f.fd.as_fd(), "/tmp", &mut spool, &opts),
        Err(ArchiveError::BadArchive(_))
    ));
    let mut t = Vec::new();
    entry(&mut t, "first", tar::EntryType::Regular, "", b"1\n");
    entry(&mut t, "hostname/", tar::EntryType::Directory, "", b"");
    let mut spool = finish(t);
    let e = extract_archive(f.fd.as_fd(), "/etc", &mut spool, &opts).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot overwrite non-directory \"/etc/hostname\" with directory"),
        "{e}"
    );
    assert!(!f.root.join("tmp/first").exists());
    assert!(!f.root.join("etc/first").exists());
    assert!(!f.outside.join("evil").exists());
    let mut t = Vec::new();
    entry(&mut t, "f", tar::EntryType::Regular, "", b"1\n");
    let mut spool = finish(t);
    assert!(matches!(
        extract_archive(f.fd.as_fd(), "/etc/hostname", &mut spool, &opts),
        Err(ArchiveError::NotADirectory)
    ));
    assert!(matches!(
        extract_archive(f.fd.as_fd(), "/missing", &mut spool, &opts),
        Err(ArchiveError::NotFound { .. })
    ));
}

#[test]
fn container_paths_are_cleaned_inside_the_root() {
    let p = ContainerPath::parse("../../etc/./passwd");
    assert_eq!(p.comps, vec![b"etc".to_vec(), b"passwd".to_vec()]);
    assert!(!p.follow_last);
    assert_eq!(p.name(), "passwd");
    let p = ContainerPath::parse("/tmp/link/");
    assert!(p.follow_last);
    assert_eq!(p.name(), "link");
    assert!(ContainerPath::parse("/x/.").follow_last);
    let root = ContainerPath::parse("/..");
    assert!(root.comps.is_empty());
    assert_eq!(root.name(), "/");
}

#[test]
fn modes_use_go_file_mode_bits() {
    assert_eq!(go_file_mode(0o040755), (1 << 31) | 0o755);
    assert_eq!(go_file_mode(0o120777), (1 << 27) | 0o777);
    assert_eq!(go_file_mode(0o100644), 0o644);
    assert_eq!(go_file_mode(0o104755), (1 << 23) | 0o755);
    assert_eq!(go_file_mode(0o041777), (1 << 31) | (1 << 20) | 0o777);
}
