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

/// The base image's Dockerfile (built as `bench-base`).
pub const DOCKERFILE_BASE: &str = "\
FROM busybox
RUN mkdir -p /app/etc && echo base > /app/etc/role
COPY files/ /app/files/
RUN find /app/files -type f | wc -l > /app/etc/count
ENV APP_HOME=/app
";

/// The app image's Dockerfile (built as `bench-app`, `FROM bench-base`).
pub const DOCKERFILE_APP: &str = "\
FROM bench-base
WORKDIR /app
COPY app.sh /app/app.sh
RUN sh /app/app.sh > /app/etc/out
ENV MODE=bench
LABEL org.example.bench=app
CMD [\"sh\", \"/app/app.sh\"]
";

/// Write the build context under `dir`: both Dockerfiles, `app.sh` and 64 files of 16 KiB
/// under `files/`; returns the context dir.
pub fn build_context(dir: &Path) -> Result<PathBuf> {
    let ctx = dir.join("build-context");
    let files = ctx.join("files");
    std::fs::create_dir_all(&files)?;
    std::fs::write(ctx.join("Dockerfile.base"), DOCKERFILE_BASE)?;
    std::fs::write(ctx.join("Dockerfile.app"), DOCKERFILE_APP)?;
    std::fs::write(
        ctx.join("app.sh"),
        "i=0; while [ $i -lt 200 ]; do echo \"line $i\"; i=$((i+1)); done\n",
    )?;
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
