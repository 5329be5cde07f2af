//! `wharf-bench-load`: how fast the layer store loads a large image, beside the floors
//! measured on the same data in the same run (sha256, gzip and zstd decompression, disk
//! write with fsync). Not run in CI; see the README for the command.
//!
//! ```text
//!  generated layers (half random, half text) ──► plain / gzip / zstd `docker save` archives
//!      floors: sha256 · gunzip · unzstd · write+fsync        (MB/s of uncompressed bytes)
//!      load:   ImageStore::load(archive) into a fresh store  (per variant)
//!      apply:  ImageStore::unpack_layer(uncompressed layer)  (no archive, no spool)
//!      after each, untimed: every file of every layer compared with the generated tar
//! ```
//!
//! A load whose files differ from the source fails the bench: a fast wrong load never
//! counts.

use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;
use wharf_node::image::ImageStore;
use wharf_protocol::{ChainId, DiffId};

/// What the bench was asked for.
struct Args {
    size_mib: usize,
    layers: usize,
    dir: PathBuf,
    runs: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        size_mib: 512,
        layers: 4,
        dir: PathBuf::from("/var/tmp"),
        runs: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--size-mib" => a.size_mib = value()?.parse().map_err(|e| format!("{e}"))?,
            "--layers" => a.layers = value()?.parse().map_err(|e| format!("{e}"))?,
            "--dir" => a.dir = PathBuf::from(value()?),
            "--runs" => a.runs = value()?.parse().map_err(|e| format!("{e}"))?,
            _ => return Err(
                "usage: wharf-bench-load [--size-mib 512] [--layers 4] [--dir /var/tmp] [--runs 1]"
                    .into(),
            ),
        }
    }
    if a.layers == 0 || a.size_mib == 0 || a.runs == 0 {
        return Err("--size-mib, --layers and --runs must be positive".into());
    }
    Ok(a)
}

/// Layer contents: files of 4 MiB, alternately pseudo-random and repetitive text, so the
/// compressed variants compress like real images do (about 2:1) without being trivial;
/// every third file is 24 MiB and a few KiB, longer than the store's buffer pool and not
/// a whole number of blocks.
fn layer(seed: u64, bytes: usize) -> std::io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::with_capacity(bytes + bytes / 64));
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut written = 0;
    let mut n = 0;
    while written < bytes {
        let file = if n % 3 == 2 {
            (24 << 20) + 3891
        } else {
            4 << 20
        };
        let len = file.min(bytes - written);
        let mut data = Vec::with_capacity(len + 8);
        if n % 2 == 0 {
            while data.len() < len {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                data.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
            }
        } else {
            let mut i = 0u64;
            while data.len() < len {
                data.extend_from_slice(
                    format!("line {i} of layer {seed}: lorem ipsum\n").as_bytes(),
                );
                i += 1;
            }
        }
        data.truncate(len);
        let mut h = tar::Header::new_gnu();
        h.set_mode(if n % 2 == 0 { 0o755 } else { 0o640 });
        h.set_size(len as u64);
        h.set_mtime(1_704_067_200 + n as u64);
        b.append_data(&mut h, format!("data/{seed}/{n}.bin"), data.as_slice())?;
        written += len;
        n += 1;
    }
    b.into_inner()
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    Gzip,
    Zstd,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "uncompressed",
            Variant::Gzip => "gzip",
            Variant::Zstd => "zstd",
        }
    }
    fn compress(self, data: &[u8]) -> std::io::Result<Vec<u8>> {
        match self {
            Variant::Plain => Ok(data.to_vec()),
            Variant::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data)?;
                e.finish()
            }
            Variant::Zstd => zstd::encode_all(data, 3),
        }
    }
}

/// A `docker save` archive (manifest.json + config + blobs) of `layers` as given.
fn archive(path: &Path, plain: &[Vec<u8>], blobs: &[Vec<u8>]) -> std::io::Result<()> {
    let hex = |b: &[u8]| hex::encode(Sha256::digest(b));
    let diff_ids: Vec<String> = plain.iter().map(|l| format!("sha256:{}", hex(l))).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": format!("blobs/sha256/{}", hex(&config)),
        "RepoTags": ["bench:latest"],
        "Layers": blobs.iter().map(|b| format!("blobs/sha256/{}", hex(b))).collect::<Vec<_>>(),
    }]))?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(path)?));
    let mut add = |name: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data)
    };
    for blob in blobs {
        add(format!("blobs/sha256/{}", hex(blob)), blob)?;
    }
    add(format!("blobs/sha256/{}", hex(&config)), &config)?;
    add("manifest.json".into(), &manifest)?;
    // Synced here, so that the load's own sync does not also write out the archive (a
    // client's archive arrives over a socket, not as dirty pages of the same disk).
    let f = b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()
}

fn mbps(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed().as_secs_f64())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let work = tempfile_dir(&args.dir)?;
    let per_layer = (args.size_mib << 20) / args.layers;
    eprintln!(
        "generating {} layers of {} MiB in {}",
        args.layers,
        per_layer >> 20,
        work.display()
    );
    let plain: Vec<Vec<u8>> = (0..args.layers as u64)
        .map(|i| layer(i + 1, per_layer))
        .collect::<Result<_, _>>()?;
    let total: usize = plain.iter().map(Vec::len).sum();
    let mut shas = Vec::new();
    let mut all_disks: Vec<(f64, f64)> = Vec::new();
    let mut all_rows: Vec<Vec<Row>> = Vec::new();
    for run in 0..args.runs {
        eprintln!("run {} of {}", run + 1, args.runs);
        let (sha, disks, rows) = measure(&plain, total, &work)?;
        shas.push(sha);
        all_disks.extend(disks);
        all_rows.push(rows);
    }
    let _ = std::fs::remove_dir_all(&work);

    let sha = median(&shas);
    let best: Vec<f64> = all_disks.iter().map(|(b, d)| b.max(*d)).collect();
    let disk = median(&best);
    let shown: Vec<String> = all_disks
        .iter()
        .map(|(b, d)| format!("{b:.0}/{d:.0}"))
        .collect();
    println!(
        "data: {} MiB uncompressed in {} layers; medians of {} runs",
        total >> 20,
        args.layers,
        args.runs
    );
    println!(
        "floors: sha256 {sha:.0} MB/s, write+fsync {disk:.0} MB/s (median of the faster of buffered/O_DIRECT: {}, measured before each step)",
        shown.join(" / ")
    );
    println!();
    println!("| what | MB/s (median) | each run | decompress floor | slowest floor | % of slowest | target 70% |");
    println!("|---|---|---|---|---|---|---|");
    for (i, (name, _, dec)) in all_rows[0].iter().enumerate() {
        let speeds: Vec<f64> = all_rows.iter().map(|r| r[i].1).collect();
        let speed = median(&speeds);
        let runs: Vec<String> = speeds.iter().map(|s| format!("{s:.0}")).collect();
        let slowest = [Some(sha), Some(disk), *dec]
            .into_iter()
            .flatten()
            .fold(f64::INFINITY, f64::min);
        let dec = dec.map(|d| format!("{d:.0}")).unwrap_or_else(|| "-".into());
        let pct = 100.0 * speed / slowest;
        let ok = if pct >= 70.0 { "met" } else { "missed" };
        println!(
            "| {name} | {speed:.0} | {} | {dec} | {slowest:.0} | {pct:.0}% | {ok} |",
            runs.join(" / ")
        );
    }
    Ok(())
}

/// Check that the layers of `diff_ids` in `store` hold exactly the regular files of the
/// generated tars `plain`: content, size, mode and mtime.
fn verify(
    store: &ImageStore,
    plain: &[Vec<u8>],
    diff_ids: &[DiffId],
) -> Result<(), Box<dyn std::error::Error>> {
    use std::os::unix::fs::MetadataExt;
    let chain = ChainId::chain(diff_ids);
    if diff_ids.len() != plain.len() {
        return Err(format!("loaded {} layers of {}", diff_ids.len(), plain.len()).into());
    }
    let mut files = 0;
    for (i, layer) in plain.iter().enumerate() {
        let diff = store.layout().layer_dir(&chain[i]).join("diff");
        for entry in tar::Archive::new(layer.as_slice()).entries()? {
            let mut entry = entry?;
            let name = entry.path()?.into_owned();
            let (mode, mtime) = (entry.header().mode()?, entry.header().mtime()?);
            let mut want = Vec::new();
            entry.read_to_end(&mut want)?;
            let path = diff.join(&name);
            let meta = std::fs::symlink_metadata(&path)?;
            let got = std::fs::read(&path)?;
            if got.len() != want.len() || Sha256::digest(&got) != Sha256::digest(&want) {
                return Err(format!(
                    "layer {i} {}: {} bytes differ from the source's {}",
                    name.display(),
                    got.len(),
                    want.len()
                )
                .into());
            }
            if meta.mode() & 0o7777 != mode || meta.mtime() != mtime as i64 {
                return Err(format!(
                    "layer {i} {}: mode {:o} mtime {} instead of {mode:o} {mtime}",
                    name.display(),
                    meta.mode() & 0o7777,
                    meta.mtime()
                )
                .into());
            }
            files += 1;
        }
    }
    if files == 0 {
        return Err("no file checked".into());
    }
    Ok(())
}

/// One measured step: its name, MB/s and decompression floor (compressed variants).
type Row = (String, f64, Option<f64>);

/// One run: the sha256 floor, the write+fsync floors (buffered, direct) and the rows.
type Sample = (f64, Vec<(f64, f64)>, Vec<Row>);

/// Seconds to write `layers` to a new file at `path` and fsync it, buffered or with
/// `O_DIRECT` (through one page-aligned 1 MiB buffer, the tail buffered); the file is
/// removed after.
fn write_floor(path: &Path, layers: &[Vec<u8>], direct: bool) -> std::io::Result<f64> {
    use std::os::unix::fs::OpenOptionsExt;
    const BUF: usize = 1 << 20;
    let mut raw = vec![0u8; BUF + 4096];
    let off = raw.as_ptr().align_offset(4096);
    let buf = &mut raw[off..off + BUF];
    let (res, t) = timed(|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(path)?;
        if !direct {
            for l in layers {
                f.write_all(l)?;
            }
            return f.sync_all();
        }
        // The layers as one stream through the aligned buffer; the last partial buffer
        // is written after clearing O_DIRECT, as the store writes a file's tail.
        let mut filled = 0;
        for l in layers {
            let mut rest = l.as_slice();
            while !rest.is_empty() {
                let n = rest.len().min(BUF - filled);
                buf[filled..filled + n].copy_from_slice(&rest[..n]);
                filled += n;
                rest = &rest[n..];
                if filled == BUF {
                    f.write_all(buf)?;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            let flags = rustix::fs::fcntl_getfl(&f)?;
            rustix::fs::fcntl_setfl(&f, flags - rustix::fs::OFlags::DIRECT)?;
            f.write_all(&buf[..filled])?;
        }
        f.sync_all()
    });
    res?;
    std::fs::remove_file(path)?;
    Ok(t)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One run: the sha256 floor, the write+fsync floors (one before each step) and the rows.
fn measure(
    plain: &[Vec<u8>],
    total: usize,
    work: &Path,
) -> Result<Sample, Box<dyn std::error::Error>> {
    // Floors on the same data.
    let (_, t) = timed(|| {
        for l in plain {
            std::hint::black_box(Sha256::digest(l));
        }
    });
    let sha = mbps(total, t);
    // The disk floor swings several-fold between runs on a shared VM disk (host write
    // cache), so it is measured again right before each timed step, under the same
    // conditions; `disks` keeps every measurement for the summary line.
    //
    // Both ways of writing are measured, buffered (write, then fsync) and direct (O_DIRECT
    // writes of 1 MiB, then fsync, as the store writes large layer files), and the faster
    // is the floor: what this disk can take, not what one way of writing gets out of it.
    let target = work.join("fsync.bin");
    let mut disks = Vec::new();
    let mut disk_floor = || -> std::io::Result<f64> {
        let buffered = write_floor(&target, plain, false)?;
        let direct = write_floor(&target, plain, true)?;
        let d = mbps(total, buffered.min(direct));
        disks.push((mbps(total, buffered), mbps(total, direct)));
        Ok(d)
    };
    let mut rows = Vec::new();
    for v in [Variant::Plain, Variant::Gzip, Variant::Zstd] {
        let blobs: Vec<Vec<u8>> = plain
            .iter()
            .map(|l| v.compress(l))
            .collect::<Result<_, _>>()?;
        let floor_decompress = match v {
            Variant::Plain => None,
            _ => {
                let (res, t) = timed(|| -> std::io::Result<()> {
                    for b in &blobs {
                        let mut sink = std::io::sink();
                        match v {
                            Variant::Gzip => {
                                std::io::copy(
                                    &mut flate2::read::MultiGzDecoder::new(b.as_slice()),
                                    &mut sink,
                                )?;
                            }
                            _ => {
                                std::io::copy(
                                    &mut zstd::stream::read::Decoder::new(b.as_slice())?,
                                    &mut sink,
                                )?;
                            }
                        }
                    }
                    Ok(())
                });
                res?;
                Some(mbps(total, t))
            }
        };
        let path = work.join(format!("{}.tar", v.name()));
        archive(&path, plain, &blobs)?;
        let store_dir = work.join(format!("store-{}", v.name()));
        let store = ImageStore::open(&store_dir)?;
        disk_floor()?;
        let (res, t) = timed(|| -> Result<_, Box<dyn std::error::Error>> {
            let mut f = std::fs::File::open(&path)?;
            Ok(store.load(&mut f as &mut dyn Read)?)
        });
        let loaded = res?;
        let load = mbps(total, t);
        let [image] = loaded.as_slice() else {
            return Err(format!("{} images loaded instead of one", loaded.len()).into());
        };
        verify(&store, plain, &image.diff_ids)?;
        std::fs::remove_dir_all(&store_dir)?;
        std::fs::remove_file(&path)?;
        rows.push((format!("load {}", v.name()), load, floor_decompress));
    }

    // Layer apply alone: no archive, no spool, uncompressed input.
    let store_dir = work.join("store-apply");
    let store = ImageStore::open(&store_dir)?;
    let ids: Vec<DiffId> = plain
        .iter()
        .map(|l| DiffId(wharf_protocol::Digest(Sha256::digest(l).into())))
        .collect();
    let chain = ChainId::chain(&ids);
    disk_floor()?;
    let (res, t) = timed(|| -> Result<(), Box<dyn std::error::Error>> {
        for (i, l) in plain.iter().enumerate() {
            let parent = i.checked_sub(1).map(|p| &chain[p]);
            store.unpack_layer(parent, &chain[i], &ids[i], l.as_slice())?;
        }
        Ok(())
    });
    res?;
    let apply = mbps(total, t);
    verify(&store, plain, &ids)?;
    std::fs::remove_dir_all(&store_dir)?;
    rows.push(("apply uncompressed".into(), apply, None));
    Ok((sha, disks, rows))
}

/// A fresh directory under `base`, named after this process.
fn tempfile_dir(base: &Path) -> std::io::Result<PathBuf> {
    let p = base.join(format!("wharf-bench-load-{}", std::process::id()));
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("wharf-bench-load: {e}");
        std::process::exit(1);
    }
}
