//! Physical floors of `docker load` on the bench image, measured in the same run: hashing
//! (sha256 of every layer), disk (write + fsync of the same bytes), and zstd decompression
//! (what a compressed image would cost on top).

use anyhow::Result;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// Seconds each floor took on the image's layers.
#[derive(Clone, Copy, Debug)]
pub struct LoadFloors {
    /// sha256 of every uncompressed layer.
    pub sha256: f64,
    /// Writing every layer to one file under the bench dir, then fsync.
    pub write_fsync: f64,
    /// zstd (level 3) decompression of every layer.
    pub unzstd: f64,
    /// Bytes measured.
    pub bytes: usize,
}

impl LoadFloors {
    /// The floor of an uncompressed load: it must both hash and write every byte.
    pub fn floor(&self) -> f64 {
        self.sha256.max(self.write_fsync)
    }

    /// `sha256 1.20 s (430 MB/s), write+fsync ...` for the table.
    pub fn describe(&self) -> String {
        let mbps = |s: f64| self.bytes as f64 / 1e6 / s.max(1e-9);
        format!(
            "slowest of sha256 {:.2} s ({:.0} MB/s), write+fsync {:.2} s ({:.0} MB/s); unzstd {:.2} s ({:.0} MB/s)",
            self.sha256,
            mbps(self.sha256),
            self.write_fsync,
            mbps(self.write_fsync),
            self.unzstd,
            mbps(self.unzstd)
        )
    }
}

/// Measure the three floors on `layers`, writing the scratch file in `dir`.
pub fn measure(layers: &[Vec<u8>], dir: &Path) -> Result<LoadFloors> {
    let bytes = layers.iter().map(Vec::len).sum();
    let t = Instant::now();
    for l in layers {
        std::hint::black_box(Sha256::digest(l));
    }
    let sha256 = t.elapsed().as_secs_f64();

    let target = dir.join("fsync-floor.bin");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&target)?;
        for l in layers {
            f.write_all(l)?;
        }
        f.sync_all()?;
    }
    let write_fsync = t.elapsed().as_secs_f64();
    std::fs::remove_file(&target)?;

    let compressed: Vec<Vec<u8>> = layers
        .iter()
        .map(|l| zstd::encode_all(l.as_slice(), 3))
        .collect::<Result<_, _>>()?;
    let t = Instant::now();
    for c in &compressed {
        std::io::copy(
            &mut zstd::stream::read::Decoder::new(c.as_slice())?,
            &mut std::io::sink(),
        )?;
    }
    let unzstd = t.elapsed().as_secs_f64();
    Ok(LoadFloors {
        sha256,
        write_fsync,
        unzstd,
        bytes,
    })
}
