//! Helpers shared by this module's tests: raw (possibly hostile) tar writing, tree
//! snapshots and overlay mounts that always come down.

use super::layout::MountSpec;
use std::path::{Path, PathBuf};

/// Writes tar entries byte by byte, so names the `tar` crate's builder refuses (`..`,
/// absolute) can be tested.
#[derive(Default)]
pub struct RawTar(pub Vec<u8>);

impl RawTar {
    /// Append one entry; `name` and `link` must fit the 100-byte header fields.
    pub fn entry(
        &mut self,
        name: &str,
        kind: tar::EntryType,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> &mut Self {
        let mut h = tar::Header::new_gnu();
        {
            let old = h.as_old_mut();
            old.name[..name.len()].copy_from_slice(name.as_bytes());
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        self.0.extend_from_slice(h.as_bytes());
        self.0.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.0.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A regular file.
    pub fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Self {
        self.entry(name, tar::EntryType::Regular, "", mode, data)
    }

    /// A directory.
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.entry(name, tar::EntryType::Directory, "", mode, b"")
    }

    /// A symlink.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Symlink, target, 0o777, b"")
    }

    /// A hard link.
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(name, tar::EntryType::Link, target, 0o644, b"")
    }

    /// The archive with its end-of-archive marker.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = self.0.clone();
        out.extend(std::iter::repeat_n(0u8, 1024));
        out
    }
}

/// Every path under `root`, relative, sorted: compare before and after to prove a refused
/// operation changed nothing.
pub fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// Unmounts its target when dropped, so a failing test leaves no mount behind.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = super::unmount(&self.0);
    }
}

/// Mount `spec` from a thread with its own working directory (`unshare(CLONE_FS)`), so the
/// `chdir` in [`super::mount_overlay`] does not move the test runner's other threads.
pub fn mount(spec: &MountSpec) -> Mounted {
    let s = spec.clone();
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS).unwrap();
        super::mount_overlay(&s)
    })
    .join()
    .unwrap()
    .unwrap();
    Mounted(spec.target.clone())
}

/// The tar `docker save` would give for layer `i` of the chain `diff_ids` (its kept
/// canonical tar or its tar-split, regenerated and checked against the DiffID).
pub fn layer_tar_bytes(
    s: &super::ImageStore,
    diff_ids: &[wharf_protocol::DiffId],
    i: usize,
) -> Vec<u8> {
    let chain = wharf_protocol::ChainId::chain(diff_ids);
    let tar = s.open_layer_tar(&chain[i], &diff_ids[i]).unwrap();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut tar.reader().unwrap(), &mut out).unwrap();
    assert_eq!(out.len() as u64, tar.len());
    out
}
