//! Figures of per-key persistence, printed, never asserted (timings are benchmarks):
//!
//! ```text
//! cargo test -p wharf-controller --lib raft::records_bench -- --ignored --nocapture
//! ```
//!
//! For states of 10,000 and 100,000 containers: bytes written and time per applied batch
//! of one command, the whole state rewritten per apply (formats 1 to 7) against the
//! records it changed (format 8 on); then the build and install of a snapshot of the
//! larger state (a file, format 9), with its size and the growth of the peak resident
//! memory while each runs (`VmHWM` of /proc/self/status, reset by `clear_refs`, minus
//! `VmRSS` before).

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, StoredMembership};
use rocksdb::WriteBatch;
use serde::Serialize;
use wharf_protocol::state::{ClusterState, Command, ContainerStatus};
use wharf_protocol::ContainerId;

use super::db::{self, Db, CF_SM, CF_STATE, KEY_APPLIED};
use super::records;
use super::snapshot;
use super::state_machine::{read_applied, StateMachine};
use super::TypeConfig;

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn id(i: u32) -> ContainerId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_le_bytes());
    ContainerId::from_bytes(bytes)
}

/// A container as `docker run` records it: its create request's JSON is most of it.
fn create(i: u32) -> Command {
    let mut c = wharf_protocol::fixtures::container(1, &format!("c{i}"));
    c.id = id(i);
    c.run.id = c.id.clone();
    c.config_json = format!(
        r#"{{"Image":"busybox","Cmd":["sleep","1d"],"Env":["{}"]}}"#,
        "K=V;".repeat(40)
    );
    c.host_config_json = format!(
        r#"{{"NetworkMode":"bridge","Binds":["{}"]}}"#,
        "/x".repeat(20)
    );
    Command::CreateContainer {
        container: Box::new(c),
    }
}

/// The peak resident memory (VmHWM) minus the resident memory now, in MiB, after `f`;
/// the heap malloc keeps free is returned to the kernel first (`malloc_trim`), so that
/// what `f` allocates shows as growth instead of reusing pages already resident, and the
/// peak is reset (`clear_refs` 5).
fn peak_growth<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let read = |field: &str| -> f64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = read("VmRSS:");
    let out = f();
    (out, read("VmHWM:") - before)
}

/// The whole applied state, as formats 1 to 7 wrote it after every batch.
#[derive(Serialize)]
struct WholeApplied<'a> {
    last_applied: Option<LogId<u64>>,
    membership: &'a StoredMembership<u64, BasicNode>,
    state: &'a ClusterState,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[test]
#[ignore = "a benchmark: prints figures"]
fn per_key_persistence_figures() {
    println!();
    println!("| containers | layout | bytes written per apply | time per apply |");
    println!("|---:|---|---:|---:|");
    let mut big = None;
    for n in [10_000u32, 100_000] {
        // The state is written as records directly (as a migration does): creating
        // containers one by one checks each name against all, quadratic in `n`.
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(dir.path()).unwrap());
        {
            let mut state = ClusterState::default();
            for i in 0..n {
                if let Command::CreateContainer { container } = create(i) {
                    state.containers.insert(container.id.clone(), *container);
                }
            }
            let mut batch = WriteBatch::default();
            records::for_each_record(&state, |k, v| {
                batch.put_cf(db.cf(CF_STATE), k, v);
                if batch.size_in_bytes() > 8 << 20 {
                    db.write(std::mem::take(&mut batch), false, "bench")?;
                }
                Ok(())
            })
            .unwrap();
            db.write(batch, false, "bench").unwrap();
        }
        let sm = StateMachine::load(Arc::clone(&db)).unwrap();
        let mut index = 0;
        let toggle = |i: u32, at: i64| -> Command {
            if at % 2 == 0 {
                Command::ContainerRunning {
                    id: id(i),
                    at_ns: at,
                }
            } else {
                Command::ContainerExited {
                    id: id(i),
                    exit_code: 0,
                    oom_killed: false,
                    at_ns: at,
                    error: String::new(),
                }
            }
        };

        // Formats 1 to 7: apply, then encode and write the whole applied state.
        let mut state = read_applied(&sm.applied()).state.clone();
        let membership = StoredMembership::default();
        let rounds = if n > 10_000 { 5 } else { 20 };
        let (mut bytes, started) = (0usize, Instant::now());
        for r in 0..rounds {
            state.apply_entry(&toggle(r, i64::from(r)));
            let whole = WholeApplied {
                last_applied: None,
                membership: &membership,
                state: &state,
            };
            let mut batch = WriteBatch::default();
            batch.put_cf(
                db.cf(CF_SM),
                KEY_APPLIED,
                db::encode(&whole, "bench").unwrap(),
            );
            bytes += batch.size_in_bytes();
            db.write(batch, false, "bench").unwrap();
        }
        let per = started.elapsed() / rounds;
        println!(
            "| {n} | whole state (formats 1-7) | {} | {:.1} ms |",
            bytes / rounds as usize,
            ms(per)
        );
        drop(state);

        // Format 8: the records the command changed.
        let rounds = 2000u32;
        let (before, started) = (db.bytes_written(), Instant::now());
        for r in 0..rounds {
            index += 1;
            sm.apply_entries([entry(index, toggle(r % n, i64::from(r)))])
                .unwrap();
        }
        let per = started.elapsed() / rounds;
        println!(
            "| {n} | one record per entry (format 8) | {} | {:.3} ms |",
            (db.bytes_written() - before) / u64::from(rounds),
            ms(per)
        );
        assert_eq!(
            read_applied(&sm.applied()).state.containers[&id(1)].status,
            ContainerStatus::Exited
        );
        big = Some((dir, db, sm));
    }

    let Some((_dir, db, sm)) = big else {
        return;
    };
    // RocksDB's background flushes and compactions of the records just written would
    // count in the peak of whatever runs next: done now.
    db.flush().unwrap();
    db.rocks()
        .compact_range_cf(db.cf(CF_STATE), None::<&[u8]>, None::<&[u8]>);
    let busy = || {
        [
            "rocksdb.num-running-compactions",
            "rocksdb.num-running-flushes",
        ]
        .iter()
        .map(|p| {
            db.rocks()
                .property_int_value(*p)
                .ok()
                .flatten()
                .unwrap_or(0)
        })
        .sum::<u64>()
    };
    while busy() > 0 {
        std::thread::sleep(Duration::from_millis(50));
    }
    let whole_bytes = db::encode(&read_applied(&sm.applied()).state, "bench")
        .unwrap()
        .len();
    let started = Instant::now();
    let (snap, build_peak) = peak_growth(|| sm.snapshot_builder().build().unwrap());
    let build = started.elapsed();
    let size = std::fs::metadata(snap.snapshot.path()).unwrap().len() as usize;
    let to_dir = tempfile::tempdir().unwrap();
    let to_db = Arc::new(Db::open(to_dir.path()).unwrap());
    let to = StateMachine::load(Arc::clone(&to_db)).unwrap();
    // As the leader's chunks arrive: into a file of the receiver's.
    let received = snapshot::begin_receiving(&to_db)
        .unwrap()
        .path()
        .to_path_buf();
    std::fs::copy(snap.snapshot.path(), &received).unwrap();
    let meta = snap.meta.clone();
    drop(snap);
    let started = Instant::now();
    let ((), install_peak) = peak_growth(|| to.install_file(&meta, &received).unwrap());
    let install = started.elapsed();
    assert_eq!(read_applied(&to.applied()).state.containers.len(), 100_000);
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!();
    println!("| snapshot of 100000 containers | time | size | peak memory growth |");
    println!("|---|---:|---:|---:|");
    println!(
        "| build (records to a file) | {:.0} ms | {:.1} MiB | {build_peak:.0} MiB |",
        ms(build),
        mib(size)
    );
    println!(
        "| install (file to records + state) | {:.0} ms | {:.1} MiB | {install_peak:.0} MiB |",
        ms(install),
        mib(size)
    );
    let (loaded, load_peak) = peak_growth(|| records::load_state(&db).unwrap());
    assert_eq!(loaded.containers.len(), 100_000);
    println!(
        "(the whole state encoded at once: {:.1} MiB; the state in memory, loaded from its \
         records: {load_peak:.0} MiB peak growth)",
        mib(whole_bytes)
    );
}
