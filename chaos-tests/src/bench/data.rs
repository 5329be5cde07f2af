//! What both engines are given: the large image for `docker load`, and the build context
//! with the Dockerfile pair (a base image, and an app image built `FROM` it).

use crate::images::{layer_tar, random_bytes, ImageSpec, LayerEntry};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Files per layer of the large image are this big (MiB).
const FILE_MIB: usize = 4;

/// The uncompressed layers of the large image: `mib` MiB of pseudo-random files (so
/// nothing compresses or deduplicates by accident) in 4 layers, over the busybox layer.
pub fn big_layers(mib: usize) -> Result<Vec<Vec<u8>>> {
    let mut layers = vec![layer_tar(&crate::images::busybox_rootfs()?)?];
    let per_layer = mib.div_ceil(4).max(1);
    let mut left = mib;
    for l in 0..4u64 {
        if left == 0 {
            break;
        }
        let this = per_layer.min(left);
        left -= this;
        let mut entries = vec![LayerEntry::Dir {
            path: format!("data{l}"),
            mode: 0o755,
        }];
        let mut done = 0;
        let mut n = 0u64;
        while done < this {
            let size = FILE_MIB.min(this - done);
            entries.push(LayerEntry::File {
                path: format!("data{l}/{n}.bin"),
                mode: 0o644,
                uid: 0,
                gid: 0,
                data: random_bytes(l * 1_000_003 + n + 1, size << 20),
            });
            done += size;
            n += 1;
        }
        layers.push(layer_tar(&entries)?);
    }
    Ok(layers)
}

/// Write the `docker save` archive of `layers` tagged `bench-big:latest` to `out`.
pub fn big_image_tar(out: &Path, layers: Vec<Vec<u8>>) -> Result<()> {
    crate::write_save_tar(
        out,
        &[ImageSpec {
            name_tag: "bench-big:latest".into(),
            layers,
            cmd: vec!["sh".into()],
        }],
    )
}

/// The seeds' first Dockerfile, on busybox: two RUN steps that do measurable work (in the
/// seeds: `apt-get install`, `pip install`), then the copied source and an entrypoint.
pub const DOCKERFILE_1: &str = "\
FROM busybox
RUN i=0; while [ $i -lt 20000 ]; do echo \"package $i\"; i=$((i+1)); done > /packages.txt
RUN mkdir -p /opt/lib && sort -r /packages.txt > /opt/lib/installed && wc -l < /opt/lib/installed > /opt/lib/count
COPY . /opt/source-code
ENTRYPOINT [\"sh\", \"/opt/source-code/app.sh\"]
";

/// The seeds' second Dockerfile: the same first three instructions, then only `app2.sh`.
pub const DOCKERFILE_2: &str = "\
FROM busybox
RUN i=0; while [ $i -lt 20000 ]; do echo \"package $i\"; i=$((i+1)); done > /packages.txt
RUN mkdir -p /opt/lib && sort -r /packages.txt > /opt/lib/installed && wc -l < /opt/lib/installed > /opt/lib/count
COPY app2.sh /opt/source-code
ENTRYPOINT [\"sh\", \"/opt/source-code/app2.sh\"]
";

/// Change the copied source of both Dockerfiles (`app.sh`, `app2.sh`) to version `n`, as a
/// developer's edit before a warm rebuild.
pub fn edit_source(ctx: &Path, n: u64) -> Result<()> {
    std::fs::write(ctx.join("app.sh"), format!("echo \"app version {n}\"\n"))?;
    std::fs::write(ctx.join("app2.sh"), format!("echo \"app2 version {n}\"\n"))?;
    Ok(())
}

/// Write the build context under `dir`: both Dockerfiles, `app.sh`, `app2.sh` and 64 files
/// of 16 KiB under `files/` (the source the first Dockerfile copies); returns the context
/// dir.
pub fn build_context(dir: &Path) -> Result<PathBuf> {
    let ctx = dir.join("build-context");
    let files = ctx.join("files");
    std::fs::create_dir_all(&files)?;
    std::fs::write(ctx.join("Dockerfile.1"), DOCKERFILE_1)?;
    std::fs::write(ctx.join("Dockerfile.2"), DOCKERFILE_2)?;
    edit_source(&ctx, 0)?;
    for i in 0..64u64 {
        std::fs::write(
            files.join(format!("f{i}.bin")),
            random_bytes(i + 77, 16 << 10),
        )?;
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_layers_hold_the_requested_size() {
        let layers = big_layers(9).unwrap();
        // busybox + 4 data layers of 3+3+3 MiB (last one empty is skipped).
        assert_eq!(layers.len(), 4);
        let data: usize = layers[1..].iter().map(Vec::len).sum();
        assert!(
            ((9 << 20)..(9 << 20) + (64 << 10)).contains(&data),
            "{data}"
        );
    }
}
