//! A stand-in for `wharf shim --state-dir <dir>`, so the runtime's integration tests can
//! run real shims before the `wharf` binary exists: it dispatches exactly as `wharf` must.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, cmd, flag, dir] if cmd == "shim" && flag == "--state-dir" => {
            std::process::exit(wharf_node::runtime::shim_main(std::path::Path::new(dir)))
        }
        _ => {
            eprintln!("usage: wharf-shim-test shim --state-dir <dir>");
            std::process::exit(2)
        }
    }
}
