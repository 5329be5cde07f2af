//! The Python docker SDK (docker-py 7.1) drives `wharf up` over mutual TLS: the calls of
//! the SDK table, each a test of `docker_py_test.py`.

mod support;

use std::process::Command;
use support::{busybox_tar, Wharf};

#[test]
fn docker_py_sdk_drives_wharf() {
    let mut w = Wharf::start();
    let images = w.dir.path().join("images");
    std::fs::create_dir_all(&images).expect("image dir");
    let rm_tar =
        wharf_chaos_tests::busybox_image_tar(&images, "pytest-rm:latest").expect("second tag");
    let out = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/docker_py_test.py"
        ))
        // On this machine these override the SDK's CA bundle (REFERENCE.md).
        .env_remove("REQUESTS_CA_BUNDLE")
        .env_remove("CURL_CA_BUNDLE")
        .env_remove("DOCKER_HOST")
        .env_remove("DOCKER_TLS_VERIFY")
        .env_remove("DOCKER_CERT_PATH")
        .env("WHARF_URL", format!("https://127.0.0.1:{}", w.port))
        .env("WHARF_CERT_DIR", w.data_dir().join("client"))
        .env("WHARF_BUSYBOX_TAR", busybox_tar())
        .env("WHARF_RMTAG_TAR", &rm_tar)
        .output()
        .expect("run python3");
    let report = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{report}");
    assert!(
        out.status.success(),
        "docker-py tests failed:\n{report}\n--- wharf log ---\n{}",
        w.log()
    );
    // Every row ran and passed (a skipped row would say `skipped`).
    assert_eq!(report.matches(") ... ok").count(), 13, "{report}");
    assert!(report.contains("test_03_images_get_missing_raises_image_not_found"));
    // Nothing the SDK created is left running.
    assert_eq!(w.docker_ok(&["ps", "-q"]).trim(), "");
    assert!(w.down().status.success());
    assert!(w.leftovers().is_empty(), "{:#?}", w.leftovers());
}
