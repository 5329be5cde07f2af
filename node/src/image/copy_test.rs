//! Differential test of the layer copier: generated layers, applied by the store (direct
//! writes on a writer thread, tar-split recorded), against a plain extraction of the same
//! tar by the `tar` crate. Sizes sit at and past every threshold of [`super::copy`]; the
//! seed of a failing case is in its message.

use super::copy::{BUFFERS, COPY_BUF, DIRECT_MIN};
use super::testutil::{layer_tar_bytes, Mounted};
use super::ImageStore;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use wharf_protocol::{ChainId, DiffId, Digest};

/// splitmix64: a seeded generator, so a case is rebuilt from its seed alone.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

const MIB: u64 = 1 << 20;

/// Every size the copier treats differently, and one on each side of it.
fn thresholds() -> Vec<u64> {
    let pool = (BUFFERS * COPY_BUF) as u64;
    let buf = COPY_BUF as u64;
    vec![
        0,
        1,
        4095,
        4096,
        4097,
        DIRECT_MIN - 1,
        DIRECT_MIN,
        DIRECT_MIN + 1,
        buf - 1,
        buf,
        buf + 1,
        pool - 1,
        pool,
        pool + 1,
    ]
}

/// Contents of `len` bytes from `rng`: random, or with long zero runs (whole blocks and
/// odd lengths) between random stretches.
fn contents(rng: &mut Rng, len: u64) -> Vec<u8> {
    let zeros = rng.below(3) == 0;
    let mut out = Vec::with_capacity(len as usize);
    while (out.len() as u64) < len {
        let left = len - out.len() as u64;
        let run = (1 + rng.below(3 * MIB)).min(left);
        if zeros && rng.below(2) == 0 {
            out.resize(out.len() + run as usize, 0);
        } else {
            let start = out.len();
            out.resize(start + run as usize, 0);
            for chunk in out[start..].chunks_mut(8) {
                let v = rng.next().to_le_bytes();
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
        }
    }
    out
}

/// A generated layer: directories, regular files of threshold sizes in random order,
/// hard links to large files, symlinks, a file replaced by a later entry, random modes,
/// owners, times and user xattrs.
fn layer(seed: u64, with_64_mib: bool) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut b = tar::Builder::new(Vec::new());
    let header = |rng: &mut Rng, kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(rng.below(3) * 1000);
        h.set_gid(rng.below(3) * 1000 + 7);
        h.set_mtime(1_600_000_000 + rng.below(100_000_000));
        h.set_size(size);
        h
    };
    for d in ["d0/", "d1/", "d1/sub/"] {
        let mut h = header(&mut rng, tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, d, std::io::empty()).unwrap();
    }
    let mut sizes = thresholds();
    // A few at random among them, so each case has its own mix and order.
    for _ in 0..4 {
        let s = *rng.pick(&thresholds());
        sizes.push(s);
    }
    if with_64_mib {
        sizes.push(64 * MIB);
    }
    // Random order, by a Fisher-Yates shuffle.
    for i in (1..sizes.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        sizes.swap(i, j);
    }
    let modes = [0o755, 0o644, 0o600, 0o4755, 0o2711, 0o444, 0o1777];
    let mut large = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let dir = rng.pick(&["", "d0/", "d1/sub/"]);
        let name = format!("{dir}f{i}-{size}");
        if rng.below(4) == 0 {
            let value = format!("v{}", rng.next());
            b.append_pax_extensions([("SCHILY.xattr.user.wharf", value.as_bytes())])
                .unwrap();
        }
        let mode = *rng.pick(&modes);
        let mut h = header(&mut rng, tar::EntryType::Regular, mode, *size);
        let data = contents(&mut rng, *size);
        b.append_data(&mut h, &name, data.as_slice()).unwrap();
        if *size >= DIRECT_MIN {
            large.push(name);
        }
    }
    for (i, target) in large.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let mut h = header(&mut rng, tar::EntryType::Link, 0o644, 0);
        b.append_link(&mut h, format!("d0/link{i}"), target)
            .unwrap();
    }
    let mut h = header(&mut rng, tar::EntryType::Symlink, 0o777, 0);
    b.append_link(&mut h, "d1/sym", "../d0").unwrap();
    // The first large file again, replaced by a later entry of another size.
    if let Some(first) = large.first() {
        let size = *rng.pick(&thresholds());
        let mut h = header(&mut rng, tar::EntryType::Regular, 0o640, size);
        let data = contents(&mut rng, size);
        b.append_data(&mut h, first, data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

/// What a user sees of one entry of a tree.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// The first path (in name order) of the tree with the same inode: hard links.
    same_as: String,
    size: u64,
    sha256: String,
    link: String,
    xattr: Option<Vec<u8>>,
}

fn walk(root: &Path) -> BTreeMap<String, Seen> {
    fn go(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Seen, u64)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let t = m.file_type();
            let kind = if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_file() {
                "file"
            } else if t.is_char_device() {
                "char"
            } else {
                "other"
            };
            let sha256 = if t.is_file() {
                hex::encode(Sha256::digest(std::fs::read(&p).unwrap()))
            } else {
                String::new()
            };
            let link = if t.is_symlink() {
                std::fs::read_link(&p).unwrap().display().to_string()
            } else {
                String::new()
            };
            let xattr = if t.is_symlink() {
                None
            } else {
                rustix::fs::getxattr(&p, "user.wharf", &mut [0u8; 256][..])
                    .ok()
                    .map(|n| {
                        let mut v = vec![0u8; n];
                        rustix::fs::getxattr(&p, "user.wharf", &mut v[..]).unwrap();
                        v
                    })
            };
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                (
                    Seen {
                        kind,
                        mode: m.mode() & 0o7777,
                        uid: m.uid(),
                        gid: m.gid(),
                        mtime: m.mtime(),
                        same_as: String::new(),
                        size: if t.is_dir() { 0 } else { m.size() },
                        sha256,
                        link,
                        xattr,
                    },
                    m.ino(),
                ),
            );
            if t.is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut seen = BTreeMap::new();
    go(root, root, &mut seen);
    let mut first: BTreeMap<u64, String> = BTreeMap::new();
    for (path, (_, ino)) in &seen {
        first.entry(*ino).or_insert_with(|| path.clone());
    }
    seen.into_iter()
        .map(|(path, (mut s, ino))| {
            s.same_as = first[&ino].clone();
            (path, s)
        })
        .collect()
}

/// The same tar extracted entry by entry by the `tar` crate, keeping owners, modes and
/// times, with what the crate leaves out done beside it: each entry's xattrs set right
/// after it (this build of the crate has no xattr support) and directories' mtimes set
/// at the end (it sets only files').
fn plain_extract(tar: &[u8], dir: &Path) {
    let mut a = tar::Archive::new(tar);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_preserve_mtime(true);
    a.set_overwrite(true);
    let mut dir_times = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = dir.join(e.path().unwrap());
        if e.header().entry_type().is_dir() {
            dir_times.push((path.clone(), e.header().mtime().unwrap() as i64));
        }
        let xattr = e.pax_extensions().unwrap().and_then(|exts| {
            exts.flatten()
                .find(|x| x.key_bytes() == b"SCHILY.xattr.user.wharf")
                .map(|x| x.value_bytes().to_vec())
        });
        assert!(e.unpack_in(dir).unwrap());
        if let Some(v) = xattr {
            rustix::fs::setxattr(&path, "user.wharf", &v, rustix::fs::XattrFlags::empty()).unwrap();
        }
    }
    for (path, mtime) in dir_times {
        let t = rustix::fs::Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        };
        let times = rustix::fs::Timestamps {
            last_access: t,
            last_modification: t,
        };
        rustix::fs::utimensat(rustix::fs::CWD, &path, &times, rustix::fs::AtFlags::empty())
            .unwrap();
    }
}

/// A directory for a case on the filesystem the data dir is on, or on a tmpfs mounted
/// for it (unmounted when dropped).
struct Place {
    tmp: tempfile::TempDir,
    _mounted: Option<Mounted>,
}

impl Place {
    fn new(tmpfs: bool) -> Place {
        let tmp = tempfile::tempdir_in("/var/tmp").unwrap();
        let mut mounted = None;
        if tmpfs {
            nix::mount::mount(
                Some("tmpfs"),
                tmp.path(),
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=1g"),
            )
            .unwrap();
            mounted = Some(Mounted(tmp.path().to_path_buf()));
        }
        Place {
            tmp,
            _mounted: mounted,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

/// Load the layer of `seed` into a store and compare its `diff` with a plain
/// extraction, and the tar the store gives back with the original.
fn check_case(seed: u64, tmpfs: bool, with_64_mib: bool) {
    let tar = layer(seed, with_64_mib);
    let place = Place::new(tmpfs);
    let reference = place.path("reference");
    plain_extract(&tar, &reference);
    let store = ImageStore::open(&place.path("store")).unwrap();
    let id = DiffId(Digest::of(&tar));
    let chain = ChainId::chain(&[id]);
    store
        .unpack_layer(None, &chain[0], &id, tar.as_slice())
        .unwrap_or_else(|e| panic!("seed {seed:#x} tmpfs {tmpfs}: load failed: {e}"));
    let diff = store.layout().layer_dir(&chain[0]).join("diff");
    let (want, got) = (walk(&reference), walk(&diff));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "seed {seed:#x} tmpfs {tmpfs}: entries differ"
    );
    for (path, w) in &want {
        assert_eq!(
            Some(w),
            got.get(path),
            "seed {seed:#x} tmpfs {tmpfs}: {path} differs"
        );
    }
    let back = layer_tar_bytes(&store, &[id], 0);
    assert!(
        back == tar,
        "seed {seed:#x} tmpfs {tmpfs}: saved tar differs from the loaded one"
    );
}

/// A case cut at a random point: the load fails and the store holds nothing of it.
fn check_truncated(seed: u64, tmpfs: bool) {
    let tar = layer(seed, false);
    let mut rng = Rng(seed ^ 0x7472_756e_6361_7465);
    // Inside the archive's entries, not in the end-of-archive zeros (which a reader may
    // accept as a complete archive).
    let cut = 512 + rng.below(tar.len() as u64 - 2048) as usize;
    let place = Place::new(tmpfs);
    let root = place.path("store");
    let store = ImageStore::open(&root).unwrap();
    let id = DiffId(Digest::of(&tar));
    let chain = ChainId::chain(&[id]);
    let res = store.unpack_layer(None, &chain[0], &id, &tar[..cut]);
    assert!(
        res.is_err(),
        "seed {seed:#x} cut {cut}: truncated load succeeded"
    );
    assert!(!store.has_layer(&chain[0]), "seed {seed:#x} cut {cut}");
    let overlay = store.layout().overlay();
    let left: Vec<_> = std::fs::read_dir(&overlay)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "l")
        .collect();
    assert!(left.is_empty(), "seed {seed:#x} cut {cut}: left {left:?}");
}

/// Seeds of the cases; the first carries a 64 MiB file.
const SEEDS: [u64; 6] = [
    0x5eed_0001,
    0x5eed_0002,
    0x5eed_0003,
    0x5eed_0004,
    0x5eed_0005,
    0x5eed_0006,
];

#[test]
fn generated_layers_load_as_a_plain_extraction_on_the_data_dir_filesystem() {
    for (i, seed) in SEEDS.iter().enumerate() {
        check_case(*seed, false, i == 0);
    }
}

#[test]
fn generated_layers_load_as_a_plain_extraction_on_tmpfs() {
    for (i, seed) in SEEDS.iter().enumerate() {
        check_case(*seed, true, i == 1);
    }
}

#[test]
fn truncated_generated_layers_leave_nothing_committed() {
    for seed in SEEDS {
        check_truncated(seed, false);
        check_truncated(seed ^ 1, true);
    }
}

/// The shape of the report: a file larger than the buffer pool, then a busybox-sized one
/// with a tail under a block, both written directly.
#[test]
fn a_file_larger_than_the_buffer_pool_then_another_large_file_land_whole() {
    let mut rng = Rng(7);
    let big = contents(&mut rng, 32 * MIB);
    let busybox = contents(&mut rng, 1_982_256);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in [("big", &big, 0o644), ("bin/busybox", &busybox, 0o755)] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(mode);
        h.set_mtime(1234);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let place = Place::new(false);
    let root = place.path("root");
    let dir = std::fs::File::open(&root).unwrap();
    let opts = super::apply::ApplyOptions {
        direct_io: true,
        ..Default::default()
    };
    super::apply::apply_tar(std::os::fd::AsFd::as_fd(&dir), tar.as_slice(), None, &opts).unwrap();
    for (name, data, mode) in [("big", &big, 0o644), ("bin/busybox", &busybox, 0o755)] {
        let p = root.join(name);
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.len(), data.len() as u64, "{name}");
        assert_eq!(m.mode() & 0o7777, mode, "{name}");
        assert_eq!(m.mtime(), 1234, "{name}");
        assert!(std::fs::read(&p).unwrap() == *data, "{name} differs");
    }
}
