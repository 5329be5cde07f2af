//! `docker cp` in both directions through the stock CLI against `wharf up`: files,
//! directories and tar streams, running and stopped containers, Docker's errors, and
//! symlinks planted in a container that must not reach the host (moby CVE-2018-15664).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use support::{busybox_tar, text, Wharf};

/// One ustar entry: `kind` b'0' file, b'5' directory, b'2' symlink.
fn tar_entry(name: &str, kind: u8, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    let mode: &[u8] = if kind == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    h[100..108].copy_from_slice(mode);
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
    h[136..148].copy_from_slice(b"14500000000\0");
    h[148..156].copy_from_slice(b"        ");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut out = h.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn tar_of(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out: Vec<u8> = entries.concat();
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `docker ARGS` with `input` on stdin.
fn docker_stdin(w: &Wharf, args: &[&str], input: &[u8]) -> Output {
    let mut child = w
        .docker_cmd()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait docker");
    let _ = writer.join();
    eprintln!(
        "$ docker {} < ({} bytes)\n  exit {:?}\n  stderr: {}",
        args.join(" "),
        input.len(),
        out.status.code(),
        text(&out.stderr).trim_end()
    );
    out
}

/// Names in a tar stream, as GNU tar lists them.
fn tar_names(data: &[u8]) -> Vec<String> {
    let mut child = std::process::Command::new("tar")
        .args(["-tf", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(data).expect("feed tar");
    drop(stdin);
    let out = child.wait_with_output().expect("tar");
    assert!(out.status.success(), "not a tar");
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Wait until `docker exec c test -e path` succeeds (the container's setup has run).
fn wait_for(w: &Wharf, c: &str, path: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !w.docker(&["exec", c, "test", "-e", path]).status.success() {
        assert!(Instant::now() < deadline, "{path} never appeared in {c}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tmp_leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(".tmp"))
                .collect()
        })
        .unwrap_or_default()
}

fn finish(mut w: Wharf) {
    let out = w.down();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let left = w.leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn docker_cp_copies_out_of_and_into_containers() {
    let w = Wharf::start();
    w.docker_ok(&["load", "-i", busybox_tar().to_str().expect("utf-8")]);
    let work = w.dir.path().join("cp-work");
    std::fs::create_dir_all(&work).expect("work dir");
    let at = |p: &str| work.join(p).to_string_lossy().into_owned();

    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "cpr",
        "busybox",
        "sh",
        "-c",
        "mkdir -p /data/sub && echo hello > /data/sub/f && echo top > /data/top \
         && ln -s /data/top /data/link && touch /data/ready && sleep 300",
    ]);
    wait_for(&w, "cpr", "/data/ready");

    // Out: a file to stdout as a tar, named by its base name.
    let out = w.docker(&["cp", "cpr:/data/top", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tar_names(&out.stdout), vec!["top"]);
    // A directory, with its tree.
    w.docker_ok(&["cp", "cpr:/data", &at("out")]);
    assert_eq!(
        std::fs::read_to_string(work.join("out/sub/f")).expect("f"),
        "hello\n"
    );
    assert_eq!(
        std::fs::read_to_string(work.join("out/top")).expect("top"),
        "top\n"
    );
    assert_eq!(
        std::fs::read_link(work.join("out/link")).expect("link"),
        Path::new("/data/top")
    );
    // A file to a new local name; a symlink followed with -L.
    w.docker_ok(&["cp", "cpr:/data/sub/f", &at("local")]);
    assert_eq!(
        std::fs::read_to_string(at("local")).expect("local"),
        "hello\n"
    );
    w.docker_ok(&["cp", "-L", "cpr:/data/link", &at("followed")]);
    assert_eq!(
        std::fs::read_to_string(at("followed")).expect("followed"),
        "top\n"
    );

    // The raw endpoints: HEAD's stat header (base64 JSON, Go file modes), status codes.
    let sock = w.socket_path().to_string_lossy().into_owned();
    let curl = |args: &[&str]| -> String {
        let out = std::process::Command::new("curl")
            .args(["-s", "--unix-socket", &sock])
            .args(args)
            .output()
            .expect("run curl");
        text(&out.stdout)
    };
    let head = curl(&["-I", "http://d/containers/cpr/archive?path=/data/link"]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let b64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("x-docker-container-path-stat:")
                .then(|| l.split_once(':').map(|(_, v)| v.trim().to_string()))
                .flatten()
        })
        .unwrap_or_else(|| panic!("{head}"));
    let mut dec = std::process::Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("base64");
    dec.stdin
        .take()
        .expect("stdin")
        .write_all(b64.as_bytes())
        .expect("feed base64");
    let stat: serde_json::Value =
        serde_json::from_slice(&dec.wait_with_output().expect("base64").stdout).expect("json");
    assert_eq!(stat["name"], "link");
    assert_eq!(stat["linkTarget"], "/data/top");
    assert_eq!(stat["mode"], (1u64 << 27) | 0o777);
    let head = curl(&["-I", "http://d/containers/cpr/archive?path=/nope"]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let get = curl(&["-i", "http://d/containers/cpr/archive?path=/data/top"]);
    assert!(
        get.to_ascii_lowercase()
            .contains("content-type: application/x-tar"),
        "{get}"
    );
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "--data-binary",
        "not a tar",
        "http://d/containers/cpr/archive?path=/tmp",
    ]);
    assert_eq!(code, "400");
    let code = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PUT",
        "--data-binary",
        "x",
        "http://d/containers/cpr/archive?path=/data/top",
    ]);
    assert_eq!(code, "400", "extraction point is not a directory");

    // The per-container /etc/hostname (a bind mount over the image's), as in the container.
    let out = w.docker(&["cp", "cpr:/etc/hostname", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tar_names(&out.stdout), vec!["hostname"]);
    w.docker_ok(&["cp", "cpr:/etc/hostname", &at("hostname")]);
    let inside = w.docker_ok(&["exec", "cpr", "cat", "/etc/hostname"]);
    assert_ne!(inside, "busybox\n");
    assert_eq!(
        std::fs::read_to_string(at("hostname")).expect("hostname"),
        inside
    );

    // Errors: missing path, missing container.
    let out = w.docker(&["cp", "cpr:/nope", &at("x")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("Could not find the file /nope in container cpr"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["cp", "no-such-ctr:/etc", &at("x")]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No such container"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["cp", &at("local"), "no-such-ctr:/tmp/new-name"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("No such container"),
        "{}",
        text(&out.stderr)
    );

    // In: a file, a directory, a tar on stdin (`.wh.` names are plain files here).
    std::fs::write(at("in.txt"), "from host\n").expect("in.txt");
    w.docker_ok(&["cp", &at("in.txt"), "cpr:/tmp/"]);
    assert_eq!(
        w.docker_ok(&["exec", "cpr", "cat", "/tmp/in.txt"]),
        "from host\n"
    );
    std::fs::create_dir_all(work.join("indir/a")).expect("indir");
    std::fs::write(work.join("indir/a/b.txt"), "deep\n").expect("b.txt");
    w.docker_ok(&["cp", &at("indir"), "cpr:/tmp/"]);
    assert_eq!(
        w.docker_ok(&["exec", "cpr", "cat", "/tmp/indir/a/b.txt"]),
        "deep\n"
    );
    let t = tar_of(&[
        tar_entry("fromtar/", b'5', "", b""),
        tar_entry("fromtar/x.txt", b'0', "", b"x\n"),
        tar_entry("fromtar/.wh.keep", b'0', "", b"kept\n"),
    ]);
    let out = docker_stdin(&w, &["cp", "-", "cpr:/tmp"], &t);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        w.docker_ok(&[
            "exec",
            "cpr",
            "cat",
            "/tmp/fromtar/x.txt",
            "/tmp/fromtar/.wh.keep"
        ]),
        "x\nkept\n"
    );

    // Bad input writes nothing: a non-tar body, a directory over a file.
    let out = docker_stdin(&w, &["cp", "-", "cpr:/tmp"], b"this is not a tar archive\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid tar archive"),
        "{}",
        text(&out.stderr)
    );
    let t = tar_of(&[
        tar_entry("aaa-first.txt", b'0', "", b"must not land\n"),
        tar_entry("top/", b'5', "", b""),
        tar_entry("top/inner", b'0', "", b"no\n"),
    ]);
    let out = docker_stdin(&w, &["cp", "-", "cpr:/data"], &t);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot overwrite non-directory \"/data/top\" with directory"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(w.docker_ok(&["exec", "cpr", "cat", "/data/top"]), "top\n");
    assert!(!w
        .docker(&["exec", "cpr", "test", "-e", "/data/aaa-first.txt"])
        .status
        .success());
    let out = w.docker(&["cp", &at("indir"), "cpr:/data/top"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cannot copy directory"),
        "{}",
        text(&out.stderr)
    );

    // Read-only root filesystem: 403.
    w.docker_ok(&[
        "run",
        "-d",
        "--read-only",
        "--name",
        "cpro",
        "busybox",
        "sleep",
        "300",
    ]);
    let out = w.docker(&["cp", &at("in.txt"), "cpro:/tmp/"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("read-only"),
        "{}",
        text(&out.stderr)
    );

    // `-a` owns the files by the container's user; without it the archive's owner stays.
    w.docker_ok(&[
        "run",
        "-d",
        "--name",
        "cpu",
        "-u",
        "1234:5678",
        "busybox",
        "sleep",
        "300",
    ]);
    w.docker_ok(&["cp", "-a", &at("in.txt"), "cpu:/tmp/"]);
    w.docker_ok(&["cp", &at("local"), "cpu:/tmp/"]);
    assert_eq!(
        w.docker_ok(&[
            "exec",
            "cpu",
            "stat",
            "-c",
            "%u:%g",
            "/tmp/in.txt",
            "/tmp/local"
        ]),
        "1234:5678\n0:0\n"
    );
    // Paths under a volume are refused rather than copied beside it.
    w.docker_ok(&[
        "run", "-d", "--name", "cpv", "-v", "/vol", "busybox", "sleep", "300",
    ]);
    let out = w.docker(&["cp", &at("in.txt"), "cpv:/vol/in.txt"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("volume or bind mount"),
        "{}",
        text(&out.stderr)
    );
    let out = w.docker(&["cp", "cpv:/vol", &at("vol-out")]);
    assert!(!out.status.success());
    assert!(!work.join("vol-out").exists());

    // Stopped containers: created, then exited.
    w.docker_ok(&["create", "--name", "cps", "busybox", "cat", "/tmp/in.txt"]);
    w.docker_ok(&["cp", &at("in.txt"), "cps:/tmp/"]);
    let out = w.docker(&["cp", "cps:/tmp/in.txt", "-"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(tar_names(&out.stdout), vec!["in.txt"]);
    assert_eq!(w.docker_ok(&["start", "-a", "cps"]), "from host\n");
    w.docker_ok(&[
        "run",
        "--name",
        "cpe",
        "busybox",
        "sh",
        "-c",
        "echo bye > /bye",
    ]);
    w.docker_ok(&["cp", "cpe:/bye", &at("bye")]);
    assert_eq!(std::fs::read_to_string(at("bye")).expect("bye"), "bye\n");
    let out = w.docker(&["cp", "cpe:/nope", &at("x")]);
    assert!(text(&out.stderr).contains("Could not find the file /nope in container cpe"));
    assert!(tmp_leftovers(&w.data_dir().join("overlay2")).is_empty());

    w.docker_ok(&["rm", "-f", "-v", "cpr", "cpro", "cps", "cpe", "cpu", "cpv"]);
    finish(w);
}

#[test]
fn symlinks_in_a_container_never_reach_the_host() {
    let w = Wharf::start();
    w.docker_ok(&["load", "-i", busybox_tar().to_str().expect("utf-8")]);
    // A marker on the host; the container plants its own file at the same path.
    let marker_dir = w.dir.path().join("marker");
    std::fs::create_dir_all(&marker_dir).expect("marker dir");
    let marker = marker_dir.join("secret");
    std::fs::write(&marker, "host secret\n").expect("marker");
    let m = marker.to_string_lossy().into_owned();
    let md = marker_dir.to_string_lossy().into_owned();
    let host_hostname = std::fs::read("/etc/hostname").ok();
    let payload = format!("wharf-cp-payload-{}", std::process::id());
    let work = w.dir.path().join("cp-work");
    std::fs::create_dir_all(&work).expect("work");
    std::fs::write(work.join(&payload), "payload\n").expect("payload");
    let local = work.join(&payload).to_string_lossy().into_owned();

    let setup = format!(
        "ln -s / /escape && ln -s /etc /tmp/x && mkdir -p {md} && echo container > {m} \
         && ln -s {m} /tmp/marker-link && ln -s ../../../../../../../.. /tmp/up \
         && ln -s /proc/self/root /tmp/pr && touch /ready && sleep 300"
    );
    w.docker_ok(&["run", "-d", "--name", "evil", "busybox", "sh", "-c", &setup]);
    wait_for(&w, "evil", "/ready");

    let check = |w: &Wharf| {
        // Reads through planted symlinks see the container's file.
        for src in [
            format!("evil:/escape{m}"),
            format!("evil:/tmp/up{m}"),
            format!("evil:/escape{md}/"),
        ] {
            let out = w.docker(&["cp", &src, "-"]);
            assert!(out.status.success(), "{src}: {}", text(&out.stderr));
            let s = text(&out.stdout);
            assert!(
                s.contains("container\n") && !s.contains("host secret"),
                "{src}"
            );
        }
        let got = work.join("got");
        let _ = std::fs::remove_file(&got);
        w.docker_ok(&["cp", "-L", "evil:/tmp/marker-link", &got.to_string_lossy()]);
        assert_eq!(std::fs::read_to_string(&got).expect("got"), "container\n");
        // /proc/self/root is a magic link: refused, never the host's root.
        for src in [
            format!("evil:/tmp/pr{m}"),
            format!("evil:/proc/self/root{m}"),
        ] {
            let out = w.docker(&["cp", &src, "-"]);
            assert!(!out.status.success(), "{src}");
            assert!(!text(&out.stdout).contains("host secret"), "{src}");
        }
        // Writes through planted symlinks land in the container.
        w.docker_ok(&["cp", &local, &format!("evil:/escape{md}/")]);
        w.docker_ok(&["cp", &local, "evil:/tmp/x/"]);
        assert!(!marker_dir.join(&payload).exists());
        assert!(!Path::new("/etc").join(&payload).exists());
        // A hostile archive: a symlink to / and a file written through it stays inside;
        // a name climbing out is refused whole.
        let t = tar_of(&[
            tar_entry("lnk", b'2', "/", b""),
            tar_entry(
                &format!("lnk{m}").replace("//", "/"),
                b'0',
                "",
                b"overwritten\n",
            ),
        ]);
        let out = docker_stdin(w, &["cp", "-", "evil:/tmp"], &t);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let t = tar_of(&[tar_entry(
            &format!("../../../../../..{m}"),
            b'0',
            "",
            b"climbed\n",
        )]);
        let out = docker_stdin(w, &["cp", "-", "evil:/tmp"], &t);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("invalid tar archive"),
            "{}",
            text(&out.stderr)
        );
        assert_eq!(
            std::fs::read_to_string(&marker).expect("marker"),
            "host secret\n"
        );
        assert_eq!(std::fs::read("/etc/hostname").ok(), host_hostname);
    };

    check(&w);
    // In the container the writes went where its own symlinks point.
    assert_eq!(
        w.docker_ok(&[
            "exec",
            "evil",
            "cat",
            &m,
            &format!("{md}/{payload}"),
            &format!("/etc/{payload}")
        ]),
        "overwritten\npayload\npayload\n"
    );

    // The same against the stopped container's privately mounted view.
    w.docker_ok(&["exec", "evil", "sh", "-c", &format!("echo container > {m}")]);
    w.docker_ok(&["stop", "-t", "1", "evil"]);
    check(&w);
    assert!(tmp_leftovers(&w.data_dir().join("overlay2")).is_empty());

    w.docker_ok(&["rm", "-f", "evil"]);
    finish(w);
}
