//! Replayer memory against its memtable budget (runs once; no criterion).
//!
//! Writes the ~64 MiB WAL of `common` into a temp dir `ROUNDS` times over (about 270 MiB of
//! log, every key overwritten each round), then starts this binary again as a child process
//! (fresh heap: building the log leaves nothing behind in it) that measures its RSS,
//! replays the log with the default configuration's limits — memtables frozen at
//! `max_memtable_size` 64 MiB × `flush_threshold` 0.8, at most `max_frozen_memtables` 4
//! frozen — until the replay stalls on backpressure, and measures RSS again. The budget of
//! a stalled table is 5 × 51.2 MiB (4 frozen memtables and the active one). Goal: RSS
//! growth ≤ 1.25 × budget.
//!
//! `cargo bench --workspace --features sst/rocksdb-bench,replayer/rocksdb-bench --bench replayer_memory`

mod common;

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use common::{Data, MIB, TABLE};
use replayer::replay::{PassInput, PassOutcome, PassStats, pass};
use replayer::table::{Limits, TableState};
use runtime::metrics::resident_memory_bytes;
use storage::Storage;

const CHILD_ENV: &str = "REPLAYER_MEMORY_WAL_DIR";
const FREEZE_BYTES: u64 = 64 * MIB * 8 / 10;
/// The data set written this many times: enough log to fill the budget and stall.
const ROUNDS: usize = 4;
const MAX_FROZEN: usize = 4;

fn main() {
    match std::env::var_os(CHILD_ENV) {
        Some(dir) => measure(std::path::Path::new(&dir)),
        None => parent(),
    }
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = Data::generate();
    let mut bytes = 0;
    for _ in 0..ROUNDS {
        bytes = rt.block_on(common::write_wal(&data, dir.path()));
    }
    drop(data);
    eprintln!("replayer_memory: {bytes} bytes of WAL");
    let exe = std::env::current_exe().expect("current exe");
    let status = std::process::Command::new(exe)
        .env(CHILD_ENV, dir.path())
        .status()
        .expect("run the measuring child");
    assert!(status.success(), "measuring child failed: {status}");
}

/// Peak RSS of this process so far (VmHWM).
fn peak_resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn measure(dir: &std::path::Path) {
    // Multi-threaded like the service.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let storage = Storage::local(dir).expect("storage");
    // Warm up what a first pass allocates once (runtime, storage, listing) outside the
    // measured growth: list the log before the baseline.
    rt.block_on(common::wal_segments(&storage));
    let baseline = resident_memory_bytes().expect("VmRSS");

    let state = Mutex::new(TableState::new(TABLE, 0, 1, 0));
    let ids = AtomicU64::new(2);
    let input = PassInput {
        storage: &storage,
        table: TABLE,
        mode: wal::RecoveryMode::TolerateCorruptedTail,
        batch_size: 1000,
        limits: Limits {
            freeze_bytes: FREEZE_BYTES,
            max_age_ms: i64::MAX,
            max_frozen: MAX_FROZEN,
        },
        last_read: None,
        checks: &wal::ReadChecks::default(),
        ids: &ids,
        now_ms: &|| 0,
    };
    let mut frozen = Vec::new();
    let mut stats = PassStats::default();
    let out = rt.block_on(pass(&input, &state, &mut frozen, &mut stats));
    assert!(matches!(out, PassOutcome::Stalled), "{out:?}");
    let after = resident_memory_bytes().expect("VmRSS");
    let peak = peak_resident_memory_bytes().expect("VmHWM");

    let st = state.lock().expect("state");
    let budget = (MAX_FROZEN as u64 + 1) * FREEZE_BYTES;
    let growth = after.saturating_sub(baseline);
    let accounted = st.memory_bytes();
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "replayer_memory: stalled after {} puts ({} user bytes), {} frozen memtables",
        stats.entries,
        stats.bytes,
        st.frozen_count()
    );
    println!(
        "replayer memory: rss growth {:.1} MiB for a budget of {:.1} MiB: ratio {:.2} (goal <= 1.25)",
        mib(growth),
        mib(budget),
        growth as f64 / budget as f64
    );
    println!(
        "replayer memory: memtable accounting (TableState::memory_bytes) {:.1} MiB: ratio {:.2}; \
         rss growth / accounting {:.2}",
        mib(accounted),
        accounted as f64 / budget as f64,
        growth as f64 / accounted as f64
    );
    println!(
        "replayer memory: peak rss growth during the pass {:.1} MiB: ratio {:.2}",
        mib(peak.saturating_sub(baseline)),
        peak.saturating_sub(baseline) as f64 / budget as f64
    );
}
