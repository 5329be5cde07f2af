//! Links the `wharf` binary for a small resident shim: position-dependent (`-no-pie`)
//! and with the C++ standard library (RocksDB's) linked statically, on Linux.
//!
//! Every shim is this binary, resident for its container's whole life.
//! - In a PIE the dynamic loader relocates `.data.rel.ro` and the GOT at each start
//!   (~1 MiB here, every page private and dirty in every process); a fixed-address
//!   executable has them resolved at link time, clean and shared through the page cache.
//!   The libraries' objects are PIC and link fine into it; proc-macros, build scripts and
//!   tests are not affected (the argument goes to the `wharf` binary's link only). The
//!   cost is that the binary's own code and data are not randomised (ASLR still applies
//!   to the stack, heap, mmaps and shared libraries), as with Go's default builds of
//!   dockerd and containerd shims. `WHARF_PIE=1` at build time keeps the default PIE link.
//! - A dynamically linked `libstdc++.so` costs every process its own relocated copy of the
//!   library's tables and of the binary's references into it (~200 KiB private per
//!   shim). RocksDB's build asks for `-lstdc++`; a directory searched first that holds
//!   only `libstdc++.a` (a link to the compiler's) makes the linker take the archive, so
//!   those references are resolved at link time. `WHARF_DYNAMIC_STDCXX=1` keeps the
//!   shared library; so does a compiler that has no `libstdc++.a`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=WHARF_PIE");
    println!("cargo:rerun-if-env-changed=WHARF_DYNAMIC_STDCXX");
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let pie = std::env::var("WHARF_PIE").is_ok_and(|v| v == "1");
    if linux && !pie {
        println!("cargo:rustc-link-arg-bin=wharf=-no-pie");
    }
    let dynamic = std::env::var("WHARF_DYNAMIC_STDCXX").is_ok_and(|v| v == "1");
    if linux && !dynamic {
        if let Some(archive) = static_stdcxx() {
            let out = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default());
            let dir = out.join("static-stdcxx");
            let link = dir.join("libstdc++.a");
            let _ = std::fs::remove_file(&link);
            if std::fs::create_dir_all(&dir).is_ok()
                && std::os::unix::fs::symlink(&archive, &link).is_ok()
            {
                println!("cargo:rustc-link-search=native={}", dir.display());
            }
        }
    }
}

/// The C++ compiler's `libstdc++.a`, if it has one.
fn static_stdcxx() -> Option<PathBuf> {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let out = Command::new(cxx)
        .arg("-print-file-name=libstdc++.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    // Without the file the compiler prints the bare name back.
    (path.is_absolute() && Path::new(&path).is_file()).then_some(path)
}
