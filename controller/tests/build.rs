//! `docker build` (classic builder) through the stock CLI against `wharf up`: the seeds'
//! Dockerfile pair and its layer cache, instructions, multi-stage builds, COPY/ADD, and
//! bad input (unknown instruction, missing base, paths and links out of the context,
//! hostile context tars, a huge Dockerfile, a RUN cancelled with its client).

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use support::{eventually, loaded, text, Wharf};

/// A build context directory with `files` (path, content) in it.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("wharf-build-ctx-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    for (p, c) in files {
        let full = d.path().join(p);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(full, c).expect("write");
    }
    d
}

/// `docker build ARGS DIR` with the classic builder; the output, echoed.
fn build(w: &Wharf, dir: &Path, args: &[&str]) -> Output {
    let mut c = w.docker_cmd();
    c.env("DOCKER_BUILDKIT", "0")
        .current_dir(dir)
        .arg("build")
        .args(args)
        .arg(dir);
    let out = c.output().expect("run docker build");
    eprintln!(
        "$ docker build {} {}\n  exit {:?}\n  stdout: {}\n  stderr: {}",
        args.join(" "),
        dir.display(),
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Like [`build`], requiring success; stdout.
fn build_ok(w: &Wharf, dir: &Path, args: &[&str]) -> String {
    let out = build(w, dir, args);
    assert!(
        out.status.success(),
        "build failed:\n{}\n--- wharf log ---\n{}",
        text(&out.stderr),
        w.log()
    );
    text(&out.stdout)
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// No container is left (build containers are removed).
fn no_containers(w: &Wharf) -> bool {
    w.docker_ok(&["ps", "-aq"]).trim().is_empty()
}

const SEEDS_1: &str = "FROM busybox
RUN echo installing python > /python.txt
RUN mkdir -p /opt/lib && echo flask > /opt/lib/pip.txt
COPY . /opt/source-code
ENTRYPOINT [\"cat\"]
";

const SEEDS_2: &str = "FROM busybox
RUN echo installing python > /python.txt
RUN mkdir -p /opt/lib && echo flask > /opt/lib/pip.txt
COPY app2.py /opt/source-code
ENTRYPOINT [\"cat\"]
";

#[test]
fn seeds_pair_reuses_exactly_the_two_shared_run_steps() {
    let w = loaded();
    let ctx = context(&[
        ("Dockerfile", SEEDS_1),
        ("Dockerfile.2", SEEDS_2),
        ("app.py", "print('app one')\n"),
        ("app2.py", "print('app two')\n"),
    ]);
    let first = build_ok(&w, ctx.path(), &["-t", "app1"]);
    assert!(first.contains("Step 1/5 : FROM busybox"), "{first}");
    assert!(
        first.contains("Step 4/5 : COPY . /opt/source-code"),
        "{first}"
    );
    assert_eq!(count(&first, " ---> Using cache"), 0, "{first}");
    assert_eq!(count(&first, " ---> Running in "), 2, "{first}");
    assert!(first.contains("Successfully built "), "{first}");
    assert!(first.contains("Successfully tagged app1:latest"), "{first}");

    let second = build_ok(&w, ctx.path(), &["-f", "Dockerfile.2", "-t", "app2"]);
    assert_eq!(count(&second, " ---> Using cache"), 2, "{second}");
    assert_eq!(count(&second, " ---> Running in "), 0, "{second}");
    // The cached steps are the two RUNs: their lines follow their Step lines.
    let after = |step: &str| {
        let i = second.find(step).expect("step line");
        second[i..].lines().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(after("Step 2/5 : RUN"), " ---> Using cache");
    assert_eq!(after("Step 3/5 : RUN"), " ---> Using cache");
    assert!(!after("Step 4/5 : COPY").contains("Using cache"));

    assert_eq!(
        w.docker_ok(&["run", "--rm", "app1", "/opt/source-code/app.py"]),
        "print('app one')\n"
    );
    assert_eq!(
        w.docker_ok(&[
            "run",
            "--rm",
            "app2",
            "/opt/source-code",
            "/opt/lib/pip.txt"
        ]),
        "print('app two')\nflask\n"
    );
    // Building the first again hits the cache for every step, COPY included.
    let again = build_ok(&w, ctx.path(), &["-t", "app1"]);
    assert_eq!(count(&again, " ---> Using cache"), 4, "{again}");
    // A new mtime alone is no change (the hash leaves times out); a new mode is.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("app.py"))
        .expect("open");
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .expect("mtime");
    drop(f);
    let touched = build_ok(&w, ctx.path(), &["-t", "app1"]);
    assert_eq!(count(&touched, " ---> Using cache"), 4, "{touched}");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        ctx.path().join("app.py"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    let moded = build_ok(&w, ctx.path(), &["-t", "app1"]);
    assert_eq!(count(&moded, " ---> Using cache"), 2, "{moded}");
    // A changed file changes the COPY step only.
    std::fs::write(ctx.path().join("app.py"), "print('changed')\n").expect("write");
    let changed = build_ok(&w, ctx.path(), &["-t", "app1"]);
    assert_eq!(count(&changed, " ---> Using cache"), 2, "{changed}");
    // -q prints the image ID only (the CLI takes it from the aux line).
    let quiet = build_ok(&w, ctx.path(), &["-q", "-t", "app1"]);
    let id = support::inspect(&w, "{{.Id}}", "app1");
    assert_eq!(quiet.trim(), id);
    // --cache-from and --pull are accepted (local images are the cache; nothing is
    // pulled); --rm=false keeps the RUN containers.
    let kept = build_ok(
        &w,
        ctx.path(),
        &[
            "--no-cache",
            "--rm=false",
            "--cache-from",
            "busybox",
            "--pull",
            "-t",
            "app1",
        ],
    );
    assert!(kept.contains("this host has no registry"), "{kept}");
    assert_eq!(w.docker_ok(&["ps", "-aq"]).lines().count(), 2);
    w.docker_ok(&["container", "prune", "-f"]);
    // --no-cache runs everything.
    let fresh = build_ok(&w, ctx.path(), &["--no-cache", "-t", "app1"]);
    assert_eq!(count(&fresh, " ---> Using cache"), 0, "{fresh}");
    assert_eq!(count(&fresh, " ---> Running in "), 2, "{fresh}");

    assert!(no_containers(&w), "build containers are removed");
    // The image of step 2 is an intermediate image: listed with -a only.
    let lines: Vec<&str> = first.lines().collect();
    let step3 = lines
        .iter()
        .position(|l| l.starts_with("Step 3/5"))
        .expect("step 3");
    let step2_image = lines[step3 - 1].trim_start_matches(" ---> ").to_string();
    assert_eq!(step2_image.len(), 12, "{first}");
    let images = w.docker_ok(&["images", "-q"]);
    assert!(!images.contains(&step2_image), "hidden: {images}");
    let all = w.docker_ok(&["images", "-aq"]);
    assert!(all.contains(&step2_image), "listed with -a: {all}");
    let history = w.docker_ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "app2",
    ]);
    assert!(
        history.contains("/bin/sh -c mkdir -p /opt/lib"),
        "{history}"
    );
    assert!(history.contains("#(nop) COPY file:"), "{history}");
    // rmi takes the intermediate images only app2 used (its COPY step), as Docker; the
    // shared RUN steps stay for app1.
    let before = w.docker_ok(&["images", "-aq"]).lines().count();
    let rmi = w.docker_ok(&["rmi", "app2"]);
    assert!(rmi.contains("Untagged: app2:latest"), "{rmi}");
    let after = w.docker_ok(&["images", "-aq"]).lines().count();
    assert_eq!(before - after, 2);
    assert!(w.docker_ok(&["images", "-aq"]).contains(&step2_image));
    // `image prune` removes the dangling finals of earlier app1 builds with the step images
    // only they used, but not the cache app1 still builds on.
    let before = w.docker_ok(&["images", "-aq"]).lines().count();
    w.docker_ok(&["image", "prune", "-f"]);
    let after = w.docker_ok(&["images", "-aq"]).lines().count();
    assert!(after < before, "{before} -> {after}");
    assert!(w.docker_ok(&["images", "-aq"]).contains(&step2_image));
    let again = build_ok(&w, ctx.path(), &["-t", "app1"]);
    assert_eq!(count(&again, " ---> Using cache"), 4, "{again}");
}

#[test]
fn a_failing_run_exits_with_its_code() {
    let w = loaded();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo before && sleep 2 && exit 3\nRUN echo never\n",
    )]);
    let out = build(&w, ctx.path(), &["-t", "broken"]);
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(
        err.contains(
            "The command '/bin/sh -c echo before && sleep 2 && exit 3' returned a non-zero code: 3"
        ),
        "{err}"
    );
    assert!(
        text(&out.stdout).contains("before"),
        "RUN output is streamed"
    );
    // The keep-alive whitespace sent while the step is silent shows nothing.
    assert!(
        !text(&out.stdout).contains("before\n\n"),
        "{}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("Step 3/3"));
    // As Docker: the failed step's container stays without --force-rm.
    assert!(!no_containers(&w));
    w.docker_ok(&["container", "prune", "-f"]);
    let out = build(&w, ctx.path(), &["--force-rm", "-t", "broken"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(no_containers(&w), "--force-rm removes it");
    let missing = w.docker(&["image", "inspect", "broken"]);
    assert!(!missing.status.success());
}

#[test]
fn instructions_make_the_image_config() {
    let w = loaded();
    let df = r#"ARG BASE=busybox
FROM ${BASE}
ARG VERSION=1.0
ARG FLAVOUR
ENV APP_HOME=/srv/app GREETING="hello world"
WORKDIR $APP_HOME
WORKDIR sub
RUN echo "$VERSION-$FLAVOUR" > version && pwd > where
LABEL org.example.version=$VERSION "with space"="a b"
EXPOSE 8080 53/udp
VOLUME ["/data"]
RUN ls -d /data
USER 1000:1000
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --retries=2 CMD echo ok
ONBUILD RUN echo child
SHELL ["/bin/sh", "-ec"]
CMD ["cat", "version"]
"#;
    let ctx = context(&[("Dockerfile", df)]);
    let out = build_ok(
        &w,
        ctx.path(),
        &[
            "--build-arg",
            "FLAVOUR=spicy",
            "--build-arg",
            "UNUSED=1",
            "--label",
            "built.by=test",
            "-t",
            "cfg",
        ],
    );
    assert!(
        out.contains("[Warning] One or more build-args [UNUSED] were not consumed"),
        "{out}"
    );
    let get = |f: &str| support::inspect(&w, f, "cfg");
    assert_eq!(get("{{.Config.WorkingDir}}"), "/srv/app/sub");
    assert_eq!(get("{{.Config.User}}"), "1000:1000");
    assert_eq!(get("{{.Config.StopSignal}}"), "SIGINT");
    assert_eq!(get("{{json .Config.Cmd}}"), r#"["cat","version"]"#);
    assert_eq!(get("{{json .Config.Shell}}"), r#"["/bin/sh","-ec"]"#);
    assert_eq!(get("{{json .Config.OnBuild}}"), r#"["RUN echo child"]"#);
    assert_eq!(
        get("{{json .Config.ExposedPorts}}"),
        r#"{"53/udp":{},"8080/tcp":{}}"#
    );
    assert_eq!(get("{{json .Config.Volumes}}"), r#"{"/data":{}}"#);
    assert_eq!(
        get("{{json .Config.Healthcheck.Test}}"),
        r#"["CMD-SHELL","echo ok"]"#
    );
    assert_eq!(get("{{.Config.Healthcheck.Interval}}"), "5s");
    assert_eq!(
        get(r#"{{index .Config.Labels "org.example.version"}}"#),
        "1.0"
    );
    assert_eq!(get(r#"{{index .Config.Labels "with space"}}"#), "a b");
    assert_eq!(get(r#"{{index .Config.Labels "built.by"}}"#), "test");
    let env = get("{{json .Config.Env}}");
    assert!(env.contains(r#""GREETING=hello world""#), "{env}");
    assert!(
        !env.contains("VERSION"),
        "build args are not kept in the image: {env}"
    );
    // The build arg reached RUN, in the WORKDIR.
    assert_eq!(w.docker_ok(&["run", "--rm", "cfg"]), "1.0-spicy\n");
    assert_eq!(
        w.docker_ok(&["run", "--rm", "cfg", "cat", "where"]),
        "/srv/app/sub\n"
    );
    // The escape directive: a backtick continues lines, a backslash is a plain character.
    let esc = context(&[(
        "Dockerfile",
        "# escape=`\nFROM busybox\nRUN echo 'C:\\dir' `\n    > /path.txt\nCMD [\"cat\", \"/path.txt\"]\n",
    )]);
    build_ok(&w, esc.path(), &["-t", "esc"]);
    assert_eq!(w.docker_ok(&["run", "--rm", "esc"]), "C:\\dir\n");
    // A child build runs the ONBUILD trigger first and does not pass it on.
    let child = context(&[("Dockerfile", "FROM cfg\nLABEL child=1\n")]);
    let out = build_ok(&w, child.path(), &["-t", "child"]);
    assert!(out.contains("# Executing 1 build trigger"), "{out}");
    assert!(out.contains("child\n"), "the trigger ran: {out}");
    assert_eq!(
        support::inspect(&w, "{{json .Config.OnBuild}}", "child"),
        "null"
    );
    // Another build arg value reruns the RUN only (its cache key holds the args).
    let other = build_ok(
        &w,
        ctx.path(),
        &[
            "--build-arg",
            "FLAVOUR=mild",
            "--label",
            "built.by=test",
            "-t",
            "cfg",
        ],
    );
    assert!(other.contains(" ---> Running in "), "{other}");
    let same = build_ok(
        &w,
        ctx.path(),
        &[
            "--build-arg",
            "FLAVOUR=mild",
            "--label",
            "built.by=test",
            "-t",
            "cfg",
        ],
    );
    assert!(!same.contains(" ---> Running in "), "{same}");
    assert!(no_containers(&w));
    assert_eq!(
        w.docker_ok(&["volume", "ls", "-q"]).trim(),
        "",
        "the RUN containers' anonymous volumes are removed with them"
    );
}

#[test]
fn multi_stage_copy_from_target_and_scratch() {
    let w = loaded();
    let df = "FROM busybox AS builder
RUN mkdir /out && echo compiled > /out/app.bin && echo extra > /out/extra.txt
FROM busybox
COPY --from=builder /out/app.bin /usr/local/bin/
FROM scratch AS minimal
COPY --from=builder /out /
COPY --from=0 /bin/busybox /bin/cat
COPY --from=busybox /bin/busybox /bin/busybox
CMD [\"/bin/cat\", \"/app.bin\"]
";
    let ctx = context(&[("Dockerfile", df)]);
    // The stock CLI without buildx picks the classic builder by itself (the ping says
    // `Builder-Version: 1`), no DOCKER_BUILDKIT=0 needed.
    let plain = w
        .docker_cmd()
        .env_remove("DOCKER_BUILDKIT")
        .current_dir(ctx.path())
        .args(["build", "-t", "ms", "."])
        .output()
        .expect("docker build");
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let out = text(&plain.stdout);
    assert!(out.contains("Step 1/9 : FROM busybox AS builder"), "{out}");
    assert_eq!(w.docker_ok(&["run", "--rm", "ms"]), "compiled\n");
    assert_eq!(
        w.docker_ok(&["run", "--rm", "ms", "/bin/cat", "/extra.txt"]),
        "extra\n"
    );
    let layers = support::inspect(&w, "{{len .RootFS.Layers}}", "ms");
    assert_eq!(layers, "3", "scratch + three COPY layers");
    assert_eq!(
        w.docker_ok(&["run", "--rm", "ms", "/bin/busybox", "echo", "from an image"]),
        "from an image\n",
        "COPY --from an image name"
    );
    let out = build_ok(&w, ctx.path(), &["--target", "builder", "-t", "ms-builder"]);
    assert!(out.contains("Step 2/2 :"), "only the target stage: {out}");
    assert_eq!(
        w.docker_ok(&["run", "--rm", "ms-builder", "cat", "/out/app.bin"]),
        "compiled\n"
    );
    let bad = build(&w, ctx.path(), &["--target", "nope"]);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("failed to reach build target nope"));
    assert!(no_containers(&w));
}

#[test]
fn copy_and_add_globs_owners_modes_archives_and_dockerignore() {
    let w = loaded();
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox
COPY *.txt /texts/
COPY --chown=1000:2000 --chmod=0700 dir /owned
ADD bundle.tar.gz /unpacked/
ADD plain.txt /plain-added.txt
COPY --chown=app:users a.txt /home/named/
COPY b.txt /tmp/
COPY keep.md ignored.log* /docs/
CMD [\"sh\"]
",
        ),
        ("a.txt", "A\n"),
        ("b.txt", "B\n"),
        ("dir/inner/file", "inner\n"),
        ("plain.txt", "just a file\n"),
        ("keep.md", "kept\n"),
        ("ignored.log", "secret\n"),
        (".dockerignore", "*.log\n"),
    ]);
    let bundle = context(&[("pkg/readme", "from the archive\n")]);
    let st = std::process::Command::new("tar")
        .arg("-czf")
        .arg(ctx.path().join("bundle.tar.gz"))
        .arg("-C")
        .arg(bundle.path())
        .arg("pkg")
        .status()
        .expect("tar");
    assert!(st.success());
    build_ok(&w, ctx.path(), &["-t", "cp"]);
    let run = |cmd: &str| w.docker_ok(&["run", "--rm", "cp", "sh", "-c", cmd]);
    assert_eq!(run("cat /texts/a.txt /texts/b.txt"), "A\nB\n");
    assert_eq!(
        run("stat -c '%u:%g %a' /owned /owned/inner/file"),
        "1000:2000 700\n1000:2000 700\n"
    );
    assert_eq!(run("cat /unpacked/pkg/readme"), "from the archive\n");
    assert_eq!(run("cat /plain-added.txt"), "just a file\n");
    assert_eq!(
        run("stat -c '%U:%G' /home/named/a.txt"),
        "app:users\n",
        "--chown by name, from the image's /etc/passwd and /etc/group"
    );
    assert_eq!(
        run("stat -c '%a' /tmp"),
        "1777\n",
        "an existing destination directory keeps its mode"
    );
    assert_eq!(
        run("ls /docs"),
        "keep.md\n",
        ".dockerignore left ignored.log out"
    );

    let direct = context(&[
        ("Dockerfile", "FROM busybox\nCOPY ignored.log /x\n"),
        ("ignored.log", "s"),
        (".dockerignore", "ignored.log\n"),
    ]);
    let out = build(&w, direct.path(), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("file not found in build context or excluded by .dockerignore"),
        "{}",
        text(&out.stderr)
    );
    let url = context(&[(
        "Dockerfile",
        "FROM busybox\nADD https://example.com/x.tgz /x\n",
    )]);
    let out = build(&w, url.path(), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("network access"),
        "{}",
        text(&out.stderr)
    );
    assert!(no_containers(&w));
}

#[test]
fn bad_input_is_refused_with_clear_errors() {
    let w = loaded();
    let cases: &[(&str, &str)] = &[
        (
            "FROM busybox\nFROBNICATE now\n",
            "Error response from daemon: dockerfile parse error on line 2: unknown instruction: FROBNICATE",
        ),
        (
            "FROM nosuchimage:1\nRUN true\n",
            "No such image: nosuchimage:1",
        ),
        (
            "FROM busybox\nCOPY ../outside /x\n",
            "forbidden path outside the build context",
        ),
        (
            "FROM busybox\nCOPY evil /x\n",
            "file not found in build context",
        ),
    ];
    for (df, want) in cases {
        let ctx = context(&[("Dockerfile", df)]);
        std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("evil")).expect("symlink");
        let out = build(&w, ctx.path(), &[]);
        assert!(!out.status.success(), "{df}");
        assert!(
            text(&out.stderr).contains(want),
            "{df}: {}",
            text(&out.stderr)
        );
    }
    // A Dockerfile of megabytes.
    let big = format!("FROM busybox\n{}", "RUN true\n".repeat(400_000));
    let ctx = context(&[("Dockerfile", big.as_str())]);
    let out = build(&w, ctx.path(), &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("too large"),
        "{}",
        text(&out.stderr)
    );

    // A hostile context tar sent as is (`docker build - < ctx.tar`): a name climbing out,
    // then a symlink to / and a file written through it.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(26);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_path("Dockerfile").expect("path");
    h.set_cksum();
    b.append(&h, &b"FROM busybox\nCOPY . /ctx/\n"[..])
        .expect("append");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    b.append_link(&mut link, "root", "/").expect("link");
    let marker = format!("wharf-build-escape-{}", std::process::id());
    let mut f = tar::Header::new_gnu();
    f.set_size(1);
    f.set_mode(0o644);
    f.set_entry_type(tar::EntryType::Regular);
    f.set_path(format!("root/tmp/{marker}")).expect("path");
    f.set_cksum();
    b.append(&f, &b"x"[..]).expect("append");
    let mut evil = tar::Header::new_gnu();
    evil.set_size(1);
    evil.set_mode(0o644);
    evil.set_entry_type(tar::EntryType::Regular);
    evil.as_gnu_mut().expect("gnu").name[..13].copy_from_slice(b"../../escaped");
    evil.set_cksum();
    b.append(&evil, &b"x"[..]).expect("append");
    let tar_bytes = b.into_inner().expect("tar");
    let mut c = w.docker_cmd();
    c.env("DOCKER_BUILDKIT", "0")
        .args(["build", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("docker build -");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&tar_bytes).expect("write tar");
    }
    let out = child.wait_with_output().expect("wait");
    eprintln!("hostile: {}", text(&out.stderr));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("invalid build context"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !Path::new("/tmp").join(&marker).exists(),
        "nothing written through the link"
    );
    assert!(!w.data_dir().join("escaped").exists());
    assert!(!w.data_dir().join("build/escaped").exists());
    assert!(no_containers(&w));
    // The build dirs are gone.
    let left = std::fs::read_dir(w.data_dir().join("build"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(left, 0);
}

#[test]
fn a_run_that_never_ends_is_cancelled_with_its_client() {
    let w = loaded();
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo started && sleep 100000\n",
    )]);
    let mut c = w.docker_cmd();
    c.env("DOCKER_BUILDKIT", "0")
        .arg("build")
        .arg(ctx.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().expect("docker build");
    let started = eventually(60, || {
        w.docker_ok(&["ps", "-q", "--filter", "status=running"])
            .lines()
            .count()
            == 1
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "the RUN container ran:\n{}", w.log());
    assert!(
        eventually(30, || no_containers(&w)),
        "the build container is killed and removed:\n{}",
        w.log()
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        w.leftovers().iter().all(|l| !l.contains("sleep")),
        "{:?}",
        w.leftovers()
    );
}

#[test]
fn docker_py_builds_a_raw_context_with_its_dockerignore() {
    let w = loaded();
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/build_py.py"))
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("WHARF_URL", format!("https://127.0.0.1:{}", w.port))
        .env("WHARF_CERT_DIR", w.data_dir().join("client"))
        .output()
        .expect("run python3");
    let report = text(&out.stderr);
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "{report}\n--- wharf log ---\n{}",
        w.log()
    );
    assert_eq!(report.matches(") ... ok").count(), 2, "{report}");
    assert!(no_containers(&w));
}
