//! Layer collections racing loads: `docker image prune` collects unused layers while
//! `docker load` puts new ones in place; the host leases a load's layers until its image
//! is recorded, so a loaded image always runs.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use support::{text, Wharf};
use wharf_chaos_tests::images::random_bytes;
use wharf_chaos_tests::{layer_tar, write_save_tar, ImageSpec, LayerEntry};

const ROUNDS: usize = 8;
const TOP: usize = 8 << 20;

#[test]
fn collections_during_loads_never_free_the_loaded_layers() {
    let w = Wharf::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let busybox = layer_tar(&wharf_chaos_tests::images::busybox_rootfs().expect("rootfs"))
        .expect("busybox layer");
    let top = layer_tar(&[LayerEntry::File {
        path: "top.bin".into(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        data: random_bytes(11, TOP),
    }])
    .expect("top layer");
    let tar = dir.path().join("race.tar");
    write_save_tar(
        &tar,
        &[ImageSpec {
            name_tag: "race:latest".into(),
            layers: vec![busybox, top],
            cmd: vec!["sh".into()],
        }],
    )
    .expect("archive");
    let tar = tar.to_str().expect("utf-8 path").to_string();

    let done = AtomicBool::new(false);
    /// Stops the pruner however the rounds end (a failed round must not hang the test).
    struct Stop<'a>(&'a AtomicBool);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let collections = std::thread::scope(|s| {
        // Nothing is dangling: every prune only collects layers no image names.
        let pruner = s.spawn(|| {
            let mut n = 0usize;
            while !done.load(Ordering::SeqCst) {
                w.docker_ok(&["image", "prune", "-f"]);
                n += 1;
            }
            n
        });
        let stop = Stop(&done);
        for round in 0..ROUNDS {
            let out = w.docker_ok(&["load", "-i", &tar]);
            assert!(out.contains("Loaded image: race:latest"), "{out}");
            let size = w.docker(&["run", "--rm", "race", "sh", "-c", "wc -c < /top.bin"]);
            assert!(
                size.status.success() && text(&size.stdout).trim() == TOP.to_string(),
                "round {round}: the loaded image lost layers to a collection: {} {}\n{}",
                text(&size.stdout),
                text(&size.stderr),
                w.log()
            );
            // Its layers become unused again, for the next load to put back.
            w.docker_ok(&["rmi", "race"]);
        }
        drop(stop);
        pruner.join().expect("pruner")
    });
    eprintln!("{ROUNDS} loads raced {collections} collections");
    assert!(collections > 0, "no collection ran during the loads");
    let out = w.docker_ok(&["images", "-q"]);
    assert_eq!(out.trim(), "", "every image was removed");
}
