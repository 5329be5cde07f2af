//! Links the `wharf` binary as a position-dependent executable (`-no-pie`) on Linux.
//!
//! Every shim is this binary, resident for its container's whole life. In a PIE the
//! dynamic loader relocates `.data.rel.ro` and the GOT at each start (~1 MiB here, every
//! page private and dirty in every process); a fixed-address executable has them resolved
//! at link time, clean and shared through the page cache. The libraries' objects are PIC
//! and link fine into it; proc-macros, build scripts and tests are not affected (the
//! argument goes to the `wharf` binary's link only). The cost is that the binary's own
//! code and data are not randomised (ASLR still applies to the stack, heap, mmaps and
//! shared libraries), as with Go's default builds of dockerd and containerd shims.
//! `WHARF_PIE=1` at build time keeps the default PIE link.

fn main() {
    println!("cargo:rerun-if-env-changed=WHARF_PIE");
    println!("cargo:rerun-if-changed=build.rs");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let pie = std::env::var("WHARF_PIE").is_ok_and(|v| v == "1");
    if linux && !pie {
        println!("cargo:rustc-link-arg-bin=wharf=-no-pie");
    }
}
