//! The image side through the stock `docker` CLI against `wharf up`: save, tag, rmi,
//! prune, history, inspect, import, diff, export, commit, layer sharing on disk, and a
//! load interrupted by SIGKILL.

mod support;

use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{busybox_tar, text, Wharf};
use wharf_chaos_tests::images::{random_bytes, tar_members, TarMember};
use wharf_chaos_tests::{layer_tar, write_save_tar, ImageSpec, LayerEntry};

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn member<'a>(members: &'a [TarMember], path: &str) -> &'a TarMember {
    members
        .iter()
        .find(|m| m.path == path)
        .unwrap_or_else(|| panic!("no {path} in archive"))
}

fn json_of(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("json member")
}

/// Bytes on disk (allocated blocks, hard links once) under `paths`, as `du` counts them.
fn disk_usage(paths: &[PathBuf]) -> u64 {
    fn walk(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
        let Ok(md) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if !seen.insert((md.dev(), md.ino())) {
            return 0;
        }
        let mut total = md.blocks() * 512;
        if md.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    total += walk(&e.path(), seen);
                }
            }
        }
        total
    }
    let mut seen = std::collections::HashSet::new();
    paths.iter().map(|p| walk(p, &mut seen)).sum()
}

/// Names under `dir` starting with `.tmp-`.
fn tmp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}

/// Image layer directories (64 hex, with a `size` file) under `overlay2/`.
fn layer_dirs(w: &Wharf) -> Vec<String> {
    let ov = w.data_dir().join("overlay2");
    let mut out: Vec<String> = std::fs::read_dir(&ov)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("size").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn layer_tars(w: &Wharf) -> usize {
    std::fs::read_dir(w.data_dir().join("image/layers"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
                .count()
        })
        .unwrap_or(0)
}

fn finish(mut w: Wharf) {
    let out = w.down();
    assert!(out.status.success(), "wharf down: {}", text(&out.stderr));
    let left = w.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn save_gives_back_every_layer_byte_for_byte() {
    let w = Wharf::start();
    let original = std::fs::read(busybox_tar()).expect("busybox tar");
    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);
    w.docker_ok(&["tag", "busybox", "second:v1"]);
    let id = w.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "busybox"]);
    let id = id.trim().to_string();

    let out_dir = tempfile::tempdir().expect("tempdir");
    let saved = out_dir.path().join("saved.tar");
    w.docker_ok(&["save", "-o", path_str(&saved), "busybox", "second:v1"]);
    let bytes = std::fs::read(&saved).expect("saved archive");
    let members = tar_members(&bytes).expect("a tar");

    // The Docker 25+ layout.
    assert_eq!(
        member(&members, "oci-layout").data,
        br#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let manifest = json_of(&member(&members, "manifest.json").data);
    assert_eq!(manifest.as_array().map(Vec::len), Some(1), "{manifest}");
    assert_eq!(
        manifest[0]["RepoTags"],
        serde_json::json!(["busybox:latest", "second:v1"])
    );
    let config_path = manifest[0]["Config"].as_str().expect("Config");
    let config_bytes = &member(&members, config_path).data;
    assert_eq!(format!("sha256:{}", sha(config_bytes)), id);
    let config = json_of(config_bytes);
    let diff_ids = config["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let layers = manifest[0]["Layers"].as_array().expect("Layers");
    assert_eq!(diff_ids.len(), layers.len());
    let original_members = tar_members(&original).expect("original tar");
    for (d, l) in diff_ids.iter().zip(layers) {
        let d = d.as_str().expect("diff id");
        let l = l.as_str().expect("layer path");
        assert_eq!(l, format!("blobs/sha256/{}", &d[7..]));
        let data = &member(&members, l).data;
        assert_eq!(
            format!("sha256:{}", sha(data)),
            d,
            "layer named by its DiffID"
        );
        assert_eq!(data, &member(&original_members, l).data, "byte-identical");
    }
    let index = json_of(&member(&members, "index.json").data);
    let names: Vec<&str> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| m["annotations"]["io.containerd.image.name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:latest",
            "docker.io/library/second:v1"
        ]
    );
    let oci_manifest_digest = index["manifests"][0]["digest"].as_str().expect("digest");
    let oci_manifest = json_of(
        &member(
            &members,
            &format!("blobs/sha256/{}", &oci_manifest_digest[7..]),
        )
        .data,
    );
    assert_eq!(oci_manifest["config"]["digest"], id.as_str());
    assert_eq!(
        oci_manifest["layers"][0]["size"].as_u64(),
        Some(
            member(&members, layers[0].as_str().expect("layer"))
                .data
                .len() as u64
        )
    );
    let repos = json_of(&member(&members, "repositories").data);
    assert!(repos["busybox"]["latest"].is_string(), "{repos}");

    // Streamed to stdout (GET /images/{name}/get is the API's other form).
    let piped = w
        .docker_cmd()
        .args(["save", "busybox"])
        .output()
        .expect("docker save");
    assert!(piped.status.success(), "{}", text(&piped.stderr));
    let piped = tar_members(&piped.stdout).expect("a tar on stdout");
    assert_eq!(
        json_of(&member(&piped, "manifest.json").data)[0]["RepoTags"],
        serde_json::json!(["busybox:latest"])
    );

    // Gone and back: the saved archive loads to the same image ID, and it runs.
    w.docker_ok(&["rmi", "busybox", "second:v1"]);
    assert!(
        layer_dirs(&w).is_empty(),
        "layers freed: {:?}",
        layer_dirs(&w)
    );
    let loaded = w.docker_ok(&["load", "-i", path_str(&saved)]);
    assert!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");
    assert!(loaded.contains("Loaded image: second:v1"), "{loaded}");
    let again = w.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "second:v1"]);
    assert_eq!(again.trim(), id);
    assert_eq!(
        text(&w.docker(&["run", "--rm", "second:v1", "echo", "ok"]).stdout),
        "ok\n"
    );

    // By ID the archive carries no tag.
    let by_id = w
        .docker_cmd()
        .args(["save", &id[7..19]])
        .output()
        .expect("docker save");
    let by_id = tar_members(&by_id.stdout).expect("a tar");
    assert!(json_of(&member(&by_id, "manifest.json").data)[0]["RepoTags"].is_null());

    // Bad input: an unknown image fails before any byte is written.
    let missing = w.docker(&[
        "save",
        "-o",
        path_str(&out_dir.path().join("x.tar")),
        "nope:1",
    ]);
    assert_ne!(missing.status.code(), Some(0));
    assert!(
        text(&missing.stderr).contains("No such image: nope:1"),
        "{}",
        text(&missing.stderr)
    );
    finish(w);
}

#[test]
fn tag_rmi_prune_history_and_inspect_follow_docker() {
    let w = Wharf::start();
    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);
    let id = w.docker_ok(&["image", "inspect", "--format", "{{.Id}}", "busybox"]);
    let id = id.trim().to_string();
    let short = &id[7..19];

    // inspect and images: fields a user looks at.
    let fields = w.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Os}} {{.Architecture}} {{len .RootFS.Layers}} {{json .Config.Cmd}} {{.Created}} {{json .RepoTags}}",
        "busybox",
    ]);
    assert_eq!(
        fields.trim(),
        "linux amd64 1 [\"sh\"] 2024-01-01T00:00:00Z [\"busybox:latest\"]"
    );
    let upper = w.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.GraphDriver.Name}} {{.GraphDriver.Data.UpperDir}}",
        "busybox",
    ]);
    let (driver, upper) = upper.trim().split_once(' ').expect("two fields");
    assert_eq!(driver, "overlay2");
    assert!(Path::new(upper).join("bin/busybox").is_file(), "{upper}");
    let size: u64 = w
        .docker_ok(&["image", "inspect", "--format", "{{.Size}}", "busybox"])
        .trim()
        .parse()
        .expect("size");
    let busybox_bin = std::fs::metadata("/bin/busybox").expect("busybox").len();
    assert!(
        size >= busybox_bin && size < busybox_bin + 64 * 1024,
        "{size}"
    );
    let listed = w.docker_ok(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}",
    ]);
    let row = listed.lines().next().expect("one image");
    assert!(
        row.starts_with(&format!("busybox:latest {short} ")),
        "{row}"
    );
    assert!(!row.ends_with(" 0B"), "{row}");

    // Short ID and name:tag lookups.
    assert_eq!(
        w.docker_ok(&["image", "inspect", "--format", "{{.Id}}", &id[7..13]])
            .trim(),
        id
    );
    assert_eq!(
        text(&w.docker(&["run", "--rm", short, "echo", "by-id"]).stdout),
        "by-id\n"
    );

    // history: the config's entries, newest first, sizes from the layers.
    let hist = w.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}|{{.Size}}",
        "busybox",
    ]);
    let rows: Vec<&str> = hist.lines().collect();
    assert_eq!(rows.len(), 1, "{hist}");
    assert!(
        rows[0].starts_with(&format!(
            "{id}|/bin/sh -c #(nop) ADD file:wharf-test-layer-0"
        )),
        "{hist}"
    );
    let missing = w.docker(&["history", "nope"]);
    assert!(
        text(&missing.stderr).contains("No such image: nope"),
        "{}",
        text(&missing.stderr)
    );

    // tag, then rmi of one tag only untags.
    w.docker_ok(&["tag", "busybox", "mine:1"]);
    w.docker_ok(&["tag", short, "localhost:5000/team/app:v2"]);
    let tags = w.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .RepoTags}}",
        "busybox",
    ]);
    assert_eq!(
        tags.trim(),
        r#"["busybox:latest","localhost:5000/team/app:v2","mine:1"]"#
    );
    // `docker images NAME` and filters.
    let rows = w.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "mine"]);
    assert_eq!(rows, "mine:1\n");
    let rows = w.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "*/team/*"]);
    assert_eq!(rows, "localhost:5000/team/app:v2\n");
    assert_eq!(w.docker_ok(&["images", "-q", "nothing-like-it"]), "");
    assert_eq!(
        w.docker_ok(&["images", "-q", "--filter", "dangling=true"]),
        ""
    );
    assert_eq!(w.docker_ok(&["images", "-q", "--filter", "label=none"]), "");
    let refused = w.docker(&["images", "--filter", "before=busybox"]);
    assert!(
        text(&refused.stderr).contains("invalid filter 'before'"),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(w.docker_ok(&["rmi", "mine:1"]), "Untagged: mine:1\n");
    assert_eq!(
        w.docker_ok(&["rmi", "localhost:5000/team/app:v2"]),
        "Untagged: localhost:5000/team/app:v2\n"
    );
    let bad = w.docker(&["tag", "busybox", "Bad:tag"]);
    assert_ne!(bad.status.code(), Some(0));
    let bad = w.docker(&["tag", "nope", "x:1"]);
    assert!(
        text(&bad.stderr).contains("No such image: nope"),
        "{}",
        text(&bad.stderr)
    );

    // A stopped container holds the image: conflicts unless forced.
    w.docker_ok(&["create", "--name", "holder", "busybox", "true"]);
    let refused = w.docker(&["rmi", "busybox"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused.stderr).contains(
            "conflict: unable to remove repository reference \"busybox\" (must force) - container"
        ),
        "{}",
        text(&refused.stderr)
    );
    let refused = w.docker(&["rmi", short]);
    assert!(
        text(&refused.stderr).contains(&format!("conflict: unable to delete {short} (must be forced) - image is being used by stopped container")),
        "{}",
        text(&refused.stderr)
    );
    // A running one holds it even against -f.
    w.docker_ok(&["run", "-d", "--name", "runner", "busybox", "sleep", "60"]);
    let refused = w.docker(&["rmi", "-f", short]);
    assert!(
        text(&refused.stderr).contains(&format!("conflict: unable to delete {short} (cannot be forced) - image is being used by running container")),
        "{}",
        text(&refused.stderr)
    );
    assert_eq!(layer_dirs(&w).len(), 1);
    w.docker_ok(&["rm", "-f", "runner", "holder"]);

    // The last tag: untag, delete the image and free its layer on disk.
    let out = w.docker_ok(&["rmi", "busybox"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Untagged: busybox:latest");
    assert_eq!(lines[1], format!("Deleted: {id}"));
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[2].starts_with("Deleted: sha256:"), "{out}");
    assert!(layer_dirs(&w).is_empty(), "{:?}", layer_dirs(&w));
    assert_eq!(layer_tars(&w), 0);
    assert_eq!(w.docker_ok(&["images", "-q"]).trim(), "");
    let gone = w.docker(&["rmi", "busybox"]);
    assert!(
        text(&gone.stderr).contains("No such image: busybox:latest"),
        "{}",
        text(&gone.stderr)
    );

    // rmi -f past a stopped container: the image goes, the container keeps its layers and
    // still runs; they are freed once it is removed and nothing else needs them.
    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);
    w.docker_ok(&[
        "create",
        "--name",
        "orphan",
        "busybox",
        "echo",
        "still-here",
    ]);
    let out = w.docker_ok(&["rmi", "-f", "busybox"]);
    assert_eq!(out, format!("Untagged: busybox:latest\nDeleted: {id}\n"));
    assert_eq!(
        layer_dirs(&w).len(),
        1,
        "the container still needs its layer"
    );
    assert_eq!(
        text(&w.docker(&["start", "-a", "orphan"]).stdout),
        "still-here\n"
    );
    w.docker_ok(&["rm", "orphan"]);
    assert!(
        layer_dirs(&w).is_empty(),
        "freed with the last container using them"
    );
    assert_eq!(layer_tars(&w), 0);

    // prune: only dangling images unless -a; images in use stay.
    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(
        &rootfs,
        layer_tar(&[LayerEntry::File {
            path: "hello".into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            data: b"hi".to_vec(),
        }])
        .expect("layer"),
    )
    .expect("write rootfs");
    let dangling = w.docker_ok(&["import", path_str(&rootfs)]);
    let dangling = dangling.trim();
    assert!(dangling.starts_with("sha256:"), "{dangling}");
    let images = w.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(images.lines().any(|l| l == "<none>:<none>"), "{images}");
    assert_eq!(
        w.docker_ok(&["images", "-q", "--no-trunc", "--filter", "dangling=true"])
            .trim(),
        dangling
    );
    let pruned = w.docker_ok(&["image", "prune", "-f"]);
    assert!(pruned.contains(&format!("deleted: {dangling}")), "{pruned}");
    assert!(pruned.contains("Total reclaimed space:"), "{pruned}");
    assert_eq!(w.docker_ok(&["images", "-q"]).trim(), short);
    w.docker_ok(&["create", "--name", "keeper", "busybox", "true"]);
    let pruned = w.docker_ok(&["image", "prune", "-a", "-f"]);
    assert!(!pruned.contains("deleted:"), "{pruned}");
    w.docker_ok(&["rm", "keeper"]);
    let pruned = w.docker_ok(&["image", "prune", "-a", "-f"]);
    assert!(pruned.contains("untagged: busybox:latest"), "{pruned}");
    assert!(pruned.contains(&format!("deleted: {id}")), "{pruned}");
    assert!(layer_dirs(&w).is_empty());
    finish(w);
}

/// Write `bytes` to `path` compressed by the command `prog` (`gzip`, `zstd`).
fn compress(prog: &str, bytes: &[u8], path: &Path) {
    let mut child = std::process::Command::new(prog)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let data = bytes.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("compress");
    feeder.join().expect("feeder").expect("write to compressor");
    assert!(out.status.success());
    std::fs::write(path, out.stdout).expect("write compressed");
}

#[test]
fn import_makes_a_one_layer_image_with_changes() {
    let w = Wharf::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = layer_tar(&wharf_chaos_tests::images::busybox_rootfs().expect("rootfs"))
        .expect("rootfs tar");
    let gz = dir.path().join("rootfs.tar.gz");
    compress("gzip", &rootfs, &gz);
    let out = w.docker_ok(&[
        "import",
        "--change",
        r#"CMD ["sh", "-c", "echo $GREETING from $(pwd)"]"#,
        "--change",
        "ENV GREETING=hello",
        "--change",
        "WORKDIR /tmp",
        "-m",
        "from a tarball",
        path_str(&gz),
        "imported:1",
    ]);
    let id = out.trim();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{out}");
    assert_eq!(
        text(&w.docker(&["run", "--rm", "imported:1"]).stdout),
        "hello from /tmp\n"
    );
    let fields = w.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}} {{len .RootFS.Layers}} {{index .RootFS.Layers 0}} {{.Comment}}",
        "imported:1",
    ]);
    assert_eq!(
        fields.trim(),
        format!("{id} 1 sha256:{} from a tarball", sha(&rootfs))
    );
    let hist = w.docker_ok(&["history", "--format", "{{.Comment}}", "imported:1"]);
    assert_eq!(hist.trim(), "from a tarball");

    // zstd through stdin, no tag, no changes: the same layer, stored once.
    let zst = dir.path().join("rootfs.tar.zst");
    compress("zstd", &rootfs, &zst);
    let mut child = w
        .docker_cmd()
        .args(["import", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker import -");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(&std::fs::read(&zst).expect("zst"))
        .expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("docker import -");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let untagged = text(&out.stdout).trim().to_string();
    assert_eq!(
        w.docker_ok(&["history", "--format", "{{.Comment}}", &untagged])
            .trim(),
        "Imported from -"
    );
    assert_eq!(layer_dirs(&w).len(), 1, "one layer for both imports");

    // Bad input: a build-only change, a hostile archive, a truncated one, a bad name.
    let refused = w.docker(&["import", "--change", "RUN rm -rf /", path_str(&gz)]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused.stderr).contains("run is not a valid change command"),
        "{}",
        text(&refused.stderr)
    );
    let evil = dir.path().join("evil.tar");
    let mut raw = Vec::new();
    {
        let mut h = [0u8; 512];
        h[..9].copy_from_slice(b"../escape");
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(b"00000000001");
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = b'0';
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        raw.extend_from_slice(&h);
        let mut data = [0u8; 512];
        data[0] = b'x';
        raw.extend_from_slice(&data);
        raw.extend_from_slice(&[0u8; 1024]);
    }
    std::fs::write(&evil, &raw).expect("evil tar");
    let before = layer_dirs(&w);
    let refused = w.docker(&["import", path_str(&evil), "evil:1"]);
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        text(&refused.stderr).contains("escapes the layer root"),
        "{}",
        text(&refused.stderr)
    );
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &rootfs[..rootfs.len() / 2]).expect("truncated");
    let refused = w.docker(&["import", path_str(&truncated), "cut:1"]);
    assert_ne!(refused.status.code(), Some(0), "{}", text(&refused.stdout));
    assert_eq!(
        layer_dirs(&w),
        before,
        "refused imports leave the store as it was"
    );
    assert!(tmp_leftovers(&w.data_dir().join("overlay2")).is_empty());
    let images = w.docker_ok(&["images", "--format", "{{.Repository}}"]);
    assert!(
        !images.contains("evil") && !images.contains("cut"),
        "{images}"
    );
    finish(w);
}

#[test]
fn diff_export_and_commit_work_on_the_writable_layer() {
    let w = Wharf::start();
    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);
    w.docker_ok(&[
        "run",
        "--name",
        "changer",
        "busybox",
        "sh",
        "-c",
        "echo new > /tmp/new && rm /etc/group && echo extra >> /etc/passwd && mkdir -p /srv/app",
    ]);
    let diff = w.docker_ok(&["diff", "changer"]);
    let lines: Vec<&str> = diff.lines().collect();
    for want in [
        "C /etc",
        "D /etc/group",
        "C /etc/passwd",
        "C /tmp",
        "A /tmp/new",
        "A /srv",
        "A /srv/app",
    ] {
        assert!(lines.contains(&want), "{want} missing from:\n{diff}");
    }
    assert!(!lines.iter().any(|l| l.contains("/bin/busybox")), "{diff}");
    // The runtime's mount points live in the init layer below, as with Docker.
    for hidden in [
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/.dockerenv",
        "/proc",
        "/dev",
    ] {
        assert!(
            !lines.iter().any(|l| l[2..] == *hidden),
            "{hidden} in:\n{diff}"
        );
    }
    assert_eq!(
        w.docker_ok(&["run", "--rm", "busybox", "ls", "/.dockerenv"]),
        "/.dockerenv\n"
    );
    let missing = w.docker(&["diff", "nope"]);
    assert!(
        text(&missing.stderr).contains("No such container: nope"),
        "{}",
        text(&missing.stderr)
    );

    // export: the merged view, deletions applied.
    let dir = tempfile::tempdir().expect("tempdir");
    let fs_tar = dir.path().join("fs.tar");
    w.docker_ok(&["export", "-o", path_str(&fs_tar), "changer"]);
    let members = tar_members(&std::fs::read(&fs_tar).expect("export")).expect("a tar");
    assert_eq!(member(&members, "tmp/new").data, b"new\n");
    assert!(member(&members, "etc/passwd").data.ends_with(b"extra\n"));
    assert_eq!(
        member(&members, "bin/busybox").data,
        std::fs::read("/bin/busybox").expect("busybox")
    );
    assert_eq!(member(&members, "bin/sh").link.as_deref(), Some("busybox"));
    assert!(!members.iter().any(|m| m.path == "etc/group"));
    // A running container exports too.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "live",
        "busybox",
        "sh",
        "-c",
        "echo live > /tmp/live; sleep 60",
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = w
            .docker_cmd()
            .args(["export", "live"])
            .output()
            .expect("export");
        assert!(out.status.success(), "{}", text(&out.stderr));
        let m = tar_members(&out.stdout).expect("a tar");
        if m.iter()
            .any(|m| m.path == "tmp/live" && m.data == b"live\n")
        {
            break;
        }
        assert!(Instant::now() < deadline, "tmp/live never showed up");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A running container commits too (frozen meanwhile, then thawed: it keeps counting).
    let id = w.docker_ok(&["commit", "live", "live-snapshot:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    let snap = w.docker_ok(&["run", "--rm", "live-snapshot:1", "cat", "/tmp/live"]);
    assert_eq!(snap, "live\n");
    let live_id = w.docker_ok(&["inspect", "--format", "{{.Id}}", "live"]);
    let rel = format!(
        "{}/{}",
        wharf_controller::up::cgroup_parent(&w.data_dir()),
        live_id.trim()
    );
    let state = [
        format!("/sys/fs/cgroup/freezer/{rel}/freezer.state"),
        format!("/sys/fs/cgroup/{rel}/cgroup.freeze"),
        format!("/sys/fs/cgroup/unified/{rel}/cgroup.freeze"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .expect("the container's freezer state");
    assert!(
        matches!(state.trim(), "THAWED" | "0"),
        "left frozen after the commit: {state}"
    );
    w.docker_ok(&["rm", "-f", "live"]);

    // commit: a new layer on the image's chain, config from the container and changes.
    let out = w.docker_ok(&[
        "commit",
        "-m",
        "added things",
        "-a",
        "Tester <t@example.com>",
        "--change",
        r#"CMD ["cat", "/tmp/new"]"#,
        "--change",
        "ENV COMMITTED=1",
        "changer",
        "committed:1",
    ]);
    let id = out.trim();
    assert!(id.starts_with("sha256:"), "{out}");
    assert_eq!(
        text(&w.docker(&["run", "--rm", "committed:1"]).stdout),
        "new\n"
    );
    let gone = w.docker(&["run", "--rm", "committed:1", "ls", "/etc/group"]);
    assert_ne!(
        gone.status.code(),
        Some(0),
        "the deletion is in the committed layer"
    );
    let env = w.docker_ok(&["run", "--rm", "committed:1", "sh", "-c", "echo $COMMITTED"]);
    assert_eq!(env, "1\n");
    let fields = w.docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{len .RootFS.Layers}}|{{.Author}}|{{.Comment}}|{{json .Config.Cmd}}",
        "committed:1",
    ]);
    assert_eq!(
        fields.trim(),
        r#"2|Tester <t@example.com>|added things|["cat","/tmp/new"]"#
    );
    let hist = w.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.CreatedBy}}|{{.Comment}}",
        "committed:1",
    ]);
    let rows: Vec<&str> = hist.lines().collect();
    assert_eq!(rows.len(), 2, "{hist}");
    assert!(
        rows[0].starts_with(&format!("{id}|sh -c echo new")),
        "{hist}"
    );
    assert!(rows[0].ends_with("|added things"), "{hist}");
    assert!(rows[1].starts_with("<missing>|"), "{hist}");
    // The committed layer carries the deletion as a whiteout.
    let saved = w
        .docker_cmd()
        .args(["save", "committed:1"])
        .output()
        .expect("save");
    let saved = tar_members(&saved.stdout).expect("a tar");
    let manifest = json_of(&member(&saved, "manifest.json").data);
    let top = manifest[0]["Layers"][1].as_str().expect("top layer");
    let top = tar_members(&member(&saved, top).data).expect("layer tar");
    assert!(
        top.iter().any(|m| m.path == "etc/.wh.group"),
        "{:?}",
        top.iter().map(|m| &m.path).collect::<Vec<_>>()
    );
    assert!(top.iter().any(|m| m.path == "tmp/new"));

    let refused = w.docker(&["commit", "--change", "COPY a b", "changer", "x:1"]);
    assert!(
        text(&refused.stderr).contains("copy is not a valid change command"),
        "{}",
        text(&refused.stderr)
    );
    let refused = w.docker(&["commit", "nope", "x:1"]);
    assert!(
        text(&refused.stderr).contains("No such container: nope"),
        "{}",
        text(&refused.stderr)
    );
    w.docker_ok(&["rm", "changer"]);
    finish(w);
}

/// A layer with one file of `len` pseudo-random bytes at `path`.
fn random_layer(seed: u64, path: &str, len: usize) -> Vec<u8> {
    layer_tar(&[LayerEntry::File {
        path: path.to_string(),
        mode: 0o644,
        uid: 0,
        gid: 0,
        data: random_bytes(seed, len),
    }])
    .expect("layer")
}

#[test]
fn identical_layers_are_stored_once() {
    const N: usize = 20 << 20;
    let w = Wharf::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let busybox = layer_tar(&wharf_chaos_tests::images::busybox_rootfs().expect("rootfs"))
        .expect("busybox layer");
    let base = random_layer(7, "base.bin", N);
    let store = || vec![w.data_dir().join("overlay2"), w.data_dir().join("image")];
    let before = disk_usage(&store());
    for i in 0..3u64 {
        let tar = dir.path().join(format!("app{i}.tar"));
        write_save_tar(
            &tar,
            &[ImageSpec {
                name_tag: format!("app{i}:latest"),
                layers: vec![
                    busybox.clone(),
                    base.clone(),
                    random_layer(100 + i, "top.bin", 4096),
                ],
                cmd: vec!["sh".into()],
            }],
        )
        .expect("archive");
        w.docker_ok(&["load", "-i", path_str(&tar)]);
    }
    let grown = disk_usage(&store()) - before;
    eprintln!(
        "three images sharing a {} MiB base grew the store by {:.1} MiB",
        N >> 20,
        grown as f64 / (1 << 20) as f64
    );
    assert!(
        (grown as f64) < 2.5 * N as f64,
        "grew by {grown} bytes for a {N}-byte shared base"
    );
    // Each image still sees the shared file.
    for i in 0..3 {
        let out = w.docker_ok(&[
            "run",
            "--rm",
            &format!("app{i}"),
            "sh",
            "-c",
            "wc -c < /base.bin; wc -c < /top.bin",
        ]);
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            [N.to_string(), "4096".into()]
        );
    }
    // 1 busybox + 1 base + 3 tops.
    assert_eq!(layer_dirs(&w).len(), 5);
    w.docker_ok(&["rmi", "app0", "app1"]);
    assert_eq!(layer_dirs(&w).len(), 3, "only app2's chain is left");
    finish(w);
}

#[test]
fn a_load_killed_midway_leaves_no_half_layer_and_can_be_repeated() {
    let mut w = Wharf::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let busybox = layer_tar(&wharf_chaos_tests::images::busybox_rootfs().expect("rootfs"))
        .expect("busybox layer");
    let mut layers = vec![busybox];
    for i in 0..4u64 {
        layers.push(random_layer(i, &format!("data/{i}.bin"), 48 << 20));
    }
    let tar = dir.path().join("big.tar");
    write_save_tar(
        &tar,
        &[ImageSpec {
            name_tag: "big:latest".into(),
            layers,
            cmd: vec!["sh".into()],
        }],
    )
    .expect("archive");
    let bytes = std::fs::read(&tar).expect("archive bytes");
    let overlay = w.data_dir().join("overlay2");
    let spool = w.data_dir().join("image/tmp");

    let sigkill = |w: &mut Wharf| {
        let mut child = w.child.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
    };
    let check_clean = |w: &Wharf| {
        assert!(tmp_leftovers(&w.data_dir().join("overlay2")).is_empty());
        assert!(tmp_leftovers(&w.data_dir().join("image/layers")).is_empty());
        let spooled: Vec<_> = std::fs::read_dir(w.data_dir().join("image/tmp"))
            .expect("spool dir")
            .collect();
        assert!(spooled.is_empty(), "{spooled:?}");
        for l in layer_dirs(w) {
            let d = w.data_dir().join("overlay2").join(&l);
            assert!(
                d.join("diff").is_dir() && d.join("link").is_file(),
                "incomplete {l}"
            );
        }
        let images = w.docker_ok(&["images", "--format", "{{.Repository}}"]);
        assert!(!images.contains("big"), "{images}");
    };

    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);

    // 1. Killed while the archive streams in: half of it written, slowly.
    let mut load = w
        .docker_cmd()
        .args(["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker load");
    let mut stdin = load.stdin.take().expect("stdin");
    for chunk in bytes[..bytes.len() / 2].chunks(1 << 20) {
        stdin.write_all(chunk).expect("feed docker load");
        std::thread::sleep(Duration::from_millis(5));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&spool).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the load never started spooling");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A stalled upload holds nothing: an image can be removed meanwhile.
    let mut rmi = w.docker_cmd();
    rmi.args(["rmi", "busybox"]);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(rmi.output());
    });
    let rmi = done_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("rmi waited for a stalled load")
        .expect("run docker rmi");
    assert!(rmi.status.success(), "{}", text(&rmi.stderr));
    assert!(text(&rmi.stdout).contains("Untagged: busybox:latest"));
    sigkill(&mut w);
    drop(stdin);
    let out = load.wait_with_output().expect("docker load exits");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a load cut off by SIGKILL cannot succeed"
    );
    w.spawn();
    check_clean(&w);

    // 2. Killed while a layer is being unpacked (a `.tmp-` dir under overlay2).
    let mut load = w
        .docker_cmd()
        .args(["load", "-i", path_str(&tar)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker load");
    let deadline = Instant::now() + Duration::from_secs(120);
    while tmp_leftovers(&overlay).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no layer was ever being unpacked"
        );
        assert!(
            load.try_wait().expect("poll").is_none(),
            "the load finished before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    sigkill(&mut w);
    let out = load.wait_with_output().expect("docker load exits");
    assert_ne!(
        out.status.code(),
        Some(0),
        "killed before the image was complete"
    );
    w.spawn();
    check_clean(&w);

    // 3. The load is simply repeated, and the image is whole.
    let out = w.docker_ok(&["load", "-i", path_str(&tar)]);
    assert!(out.contains("Loaded image: big:latest"), "{out}");
    let sizes = w.docker_ok(&["run", "--rm", "big", "sh", "-c", "wc -c /data/*.bin | sort"]);
    assert_eq!(
        sizes
            .lines()
            .filter(|l| l.contains(&(48u64 << 20).to_string()))
            .count(),
        4,
        "{sizes}"
    );
    finish(w);
}

/// The same operations through the Python docker SDK (docker-py 7.1), which streams save
/// and export in chunks and sends filters and changes its own way.
const DOCKER_PY_SCRIPT: &str = r#"
import io, json, os, tarfile
import docker, docker.errors, docker.tls

cert = os.environ["WHARF_CERT_DIR"]
tls = docker.tls.TLSConfig(client_cert=(f"{cert}/cert.pem", f"{cert}/key.pem"),
                           ca_cert=f"{cert}/ca.pem", verify=True)
d = docker.DockerClient(base_url=os.environ["WHARF_URL"], tls=tls, timeout=120)

img = d.images.get("busybox")
saved = b"".join(img.save(named=False))
t = tarfile.open(fileobj=io.BytesIO(saved))
manifest = json.load(t.extractfile("manifest.json"))
assert manifest[0]["Config"] == "blobs/sha256/" + img.id[7:], manifest
assert manifest[0]["RepoTags"] is None, manifest
named = tarfile.open(fileobj=io.BytesIO(b"".join(img.save(named=True))))
assert json.load(named.extractfile("manifest.json"))[0]["RepoTags"] == ["busybox:latest"]

assert img.tag("pyrepo", "t1")
assert "pyrepo:t1" in d.images.get("pyrepo:t1").tags
history = img.history()
assert history[0]["Id"] == img.id and history[0]["Tags"] == ["busybox:latest", "pyrepo:t1"], history

c = d.containers.run("busybox", ["sh", "-c", "echo py > /tmp/py"], detach=True)
assert c.wait()["StatusCode"] == 0
assert {"Path": "/tmp/py", "Kind": 1} in c.diff(), c.diff()
exported = tarfile.open(fileobj=io.BytesIO(b"".join(c.export())))
assert exported.extractfile("tmp/py").read() == b"py\n"
new = c.commit(repository="pycommit", tag="1", message="from py", author="py",
               changes=['CMD ["cat", "/tmp/py"]'])
assert new.attrs["Comment"] == "from py" and new.attrs["Author"] == "py", new.attrs
assert d.containers.run("pycommit:1", remove=True) == b"py\n"
c.remove()

out = d.api.import_image(src=os.environ["WHARF_ROOTFS"], repository="pyimport", tag="1",
                         changes=["ENV FROM_PY=1"])
assert "sha256:" in out, out
assert "FROM_PY=1" in d.images.get("pyimport:1").attrs["Config"]["Env"]

removed = d.api.remove_image("pyrepo:t1")
assert removed == [{"Untagged": "pyrepo:t1"}], removed
try:
    d.images.remove("nope:1")
    raise AssertionError("removing a missing image succeeded")
except docker.errors.ImageNotFound:
    pass
pruned = d.images.prune(filters={"dangling": False})
deleted = [x.get("Deleted") for x in pruned["ImagesDeleted"] or []]
assert new.id in deleted and img.id in deleted, pruned
assert pruned["SpaceReclaimed"] > 0, pruned
assert d.images.list() == [], d.images.list()
print("docker-py image operations ok")
"#;

#[test]
fn docker_py_saves_commits_imports_and_prunes() {
    let w = Wharf::start();
    w.docker_ok(&["load", "-i", path_str(&busybox_tar())]);
    let dir = tempfile::tempdir().expect("tempdir");
    let rootfs = dir.path().join("rootfs.tar");
    std::fs::write(
        &rootfs,
        layer_tar(&wharf_chaos_tests::images::busybox_rootfs().expect("rootfs")).expect("tar"),
    )
    .expect("write rootfs");
    let out = std::process::Command::new("python3")
        .args(["-c", DOCKER_PY_SCRIPT])
        // On this machine these override the SDK's CA bundle (REFERENCE.md).
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("DOCKER_HOST")
        .env("WHARF_URL", format!("https://127.0.0.1:{}", w.port))
        .env("WHARF_CERT_DIR", w.data_dir().join("client"))
        .env("WHARF_ROOTFS", &rootfs)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "docker-py:\n{}{}\n--- wharf log ---\n{}",
        text(&out.stdout),
        text(&out.stderr),
        w.log()
    );
    assert_eq!(text(&out.stdout), "docker-py image operations ok\n");
    assert!(layer_dirs(&w).is_empty(), "{:?}", layer_dirs(&w));
    finish(w);
}
