//! Replay and flush throughput of the replayer's core loops, against RocksDB in the same run.
//!
//! `wal_replay`: about 64 MiB of WAL (564k puts of 16-byte keys and 100-byte values, 100
//! puts per append, see `common`) read into memtables. Ours is [`replayer::replay::pass`]
//! over the whole log into a fresh `TableState`, freezing at 64 MiB × 0.8, as the service
//! runs it. RocksDB (with `--features rocksdb-bench`) replays a WAL of the same batches in
//! `DB::open` with `avoid_flush_during_recovery` (into the memtable only, no SST written):
//! each iteration opens a fresh copy of a template DB (the copy is not timed). Both report
//! throughput in bytes of *our* WAL, so criterion's MB/s compare time for the same entries.
//!
//! `memtable_flush`: a frozen memtable of about 32 MiB of user data (the first half of the
//! same puts) written as one SST: ours iterates the memtable into `sst::SstBuilder`
//! (default options: 4 KiB blocks, 10 bits/key bloom, CRC32C, no compression) through a
//! 1 MiB `BufWriter` and fdatasyncs, as a flusher does minus the gRPC stream; RocksDB times
//! `DB::flush` (wait) of a memtable filled with the WAL disabled (filling is not timed),
//! with the same table options. Throughput in user bytes (keys plus values).
//!
//! `cargo bench --workspace --features sst/rocksdb-bench,replayer/rocksdb-bench --bench replay_flush -- --warm-up-time 1 --measurement-time 5 --sample-size 10`

mod common;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Data, MIB, N, TABLE};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use lsm::{InternalIterator, Memtable, ValueKind};
use replayer::replay::{PassInput, PassOutcome, PassStats, pass};
use replayer::table::{Limits, TableState};
use sst::{SstBuilder, SstOptions};
use storage::Storage;

/// The default memtable size (64 MiB) × the default flush threshold (0.8).
const FREEZE_BYTES: u64 = 64 * MIB * 8 / 10;
/// Puts in the flushed memtable: about 32 MiB of keys and values.
const FLUSH_N: usize = N / 2;

fn runtime() -> tokio::runtime::Runtime {
    // Multi-threaded like the service: segment fetches overlap decoding and inserting.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// One replay of the whole log into a fresh table state; returns it so that freeing the
/// memtables is not timed.
fn replay_ours(rt: &tokio::runtime::Runtime, storage: &Storage) -> Mutex<TableState> {
    let state = Mutex::new(TableState::new(TABLE, 0, 1, 0));
    let ids = AtomicU64::new(2);
    let input = PassInput {
        storage,
        table: TABLE,
        mode: wal::RecoveryMode::TolerateCorruptedTail,
        batch_size: 1000,
        limits: Limits {
            freeze_bytes: FREEZE_BYTES,
            max_age_ms: i64::MAX,
            max_frozen: usize::MAX,
        },
        last_read: None,
        checks: &wal::ReadChecks::default(),
        ids: &ids,
        now_ms: &|| 0,
    };
    let mut frozen = Vec::new();
    let mut stats = PassStats::default();
    let out = rt.block_on(pass(&input, &state, &mut frozen, &mut stats));
    assert!(matches!(out, PassOutcome::CaughtUp { .. }), "{out:?}");
    assert_eq!(stats.entries, N as u64);
    state
}

fn bench_replay(c: &mut Criterion) {
    let data = Data::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime();
    let ours_root = dir.path().join("ours");
    std::fs::create_dir_all(&ours_root).expect("mkdir");
    let wal_bytes = rt.block_on(common::write_wal(&data, &ours_root));
    let storage = Storage::local(&ours_root).expect("storage");
    let segments = rt.block_on(common::wal_segments(&storage));
    eprintln!(
        "wal_replay: {N} puts, ours {wal_bytes} bytes of WAL in {segments} segments, \
         {} user bytes",
        Data::raw_bytes(N)
    );
    #[cfg(feature = "rocksdb-bench")]
    let template = {
        let template = dir.path().join("rocksdb-template");
        let log = theirs::write_template(&data, &template);
        // RocksDB's WAL is about as big as ours (7-byte headers per 32 KiB block, a
        // 12-byte batch header, kind + varint lengths per put): printed for the record.
        eprintln!("wal_replay: rocksdb {log} bytes of WAL");
        template
    };
    drop(data);

    let mut group = c.benchmark_group("wal_replay");
    group.throughput(Throughput::Bytes(wal_bytes));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let state = replay_ours(&rt, &storage);
                total += start.elapsed();
                drop(state);
            }
            total
        })
    });
    #[cfg(feature = "rocksdb-bench")]
    group.bench_function("rocksdb", |b| {
        let copy = dir.path().join("rocksdb-copy");
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                theirs::copy_dir(&template, &copy);
                total += theirs::timed_open(&copy);
                std::fs::remove_dir_all(&copy).expect("remove copy");
            }
            total
        })
    });
    group.finish();
}

/// A frozen memtable of the first `FLUSH_N` puts, sequence numbers from 1.
fn frozen_memtable(data: &Data) -> Arc<Memtable> {
    let m = Arc::new(Memtable::new(1));
    for i in 0..FLUSH_N {
        m.insert(&data.keys[i], i as u64 + 1, ValueKind::Put, data.value(i))
            .expect("insert");
    }
    m.freeze();
    m
}

/// Writes `memtable` as an SST at `path` and fdatasyncs it; returns the file size.
fn flush_ours(memtable: &Arc<Memtable>, path: &Path) -> u64 {
    let file = File::create(path).expect("create");
    // RocksDB buffers its writes internally (1 MiB); give ours the same.
    let writer = BufWriter::with_capacity(1 << 20, file);
    let mut builder = SstBuilder::new("bench.sst", writer, SstOptions::default()).expect("builder");
    let mut it = memtable.iter();
    it.seek_to_first().expect("seek");
    while it.valid() {
        builder.add(it.key(), it.value()).expect("add");
        it.next().expect("next");
    }
    let (info, writer) = builder.finish_into_inner().expect("finish");
    let file = writer.into_inner().expect("flush");
    file.sync_data().expect("fdatasync");
    info.file_size
}

fn bench_flush(c: &mut Criterion) {
    let data = Data::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let memtable = frozen_memtable(&data);
    let ours = dir.path().join("ours.sst");
    eprintln!(
        "memtable_flush: {FLUSH_N} puts, memtable {} bytes, ours {} bytes of SST",
        memtable.approximate_memory_usage(),
        flush_ours(&memtable, &ours)
    );

    let mut group = c.benchmark_group("memtable_flush");
    group.throughput(Throughput::Bytes(Data::raw_bytes(FLUSH_N)));
    group.sampling_mode(SamplingMode::Flat);
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let _ = std::fs::remove_file(&ours);
                let start = Instant::now();
                std::hint::black_box(flush_ours(&memtable, &ours));
                total += start.elapsed();
            }
            total
        })
    });
    #[cfg(feature = "rocksdb-bench")]
    {
        let db_dir = dir.path().join("rocksdb");
        let sst = theirs::fill_and_flush(&data, &db_dir).1;
        eprintln!("memtable_flush: rocksdb {sst} bytes of SST");
        group.bench_function("rocksdb", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += theirs::fill_and_flush(&data, &db_dir).0;
                }
                total
            })
        });
    }
    group.finish();
}

#[cfg(feature = "rocksdb-bench")]
mod theirs {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use rocksdb::{
        BlockBasedOptions, Cache, ChecksumType, DB, DBCompressionType, Env, FlushOptions, Options,
        WriteBatch, WriteOptions,
    };

    use super::FLUSH_N;
    use crate::common::{BATCH, Data, N};

    fn files_with(dir: &Path, ext: &str) -> Vec<std::fs::DirEntry> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("dir entry"))
            .filter(|e| e.path().extension().is_some_and(|x| x == ext))
            .collect()
    }

    /// Writes every put, in the same batches as our WAL, into a new DB at `dir` with the
    /// WAL on and nothing ever flushed, closes it, and turns on `avoid_flush_during_recovery`
    /// in its OPTIONS file (the 0.24 crate has no setter for it). Returns the WAL's size.
    pub fn write_template(data: &Data, dir: &Path) -> u64 {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_write_buffer_size(1 << 30);
        options.set_disable_auto_compactions(true);
        options.set_compression_type(DBCompressionType::None);
        {
            let db = DB::open(&options, dir).expect("open rocksdb");
            for first in (0..N).step_by(BATCH) {
                let mut batch = WriteBatch::default();
                for i in first..(first + BATCH).min(N) {
                    batch.put(data.keys[i], data.value(i));
                }
                db.write(batch).expect("write"); // WAL on, not synced (ours is not either)
            }
            // Closing with everything in the WAL does not flush (only writes made with the
            // WAL off are flushed at shutdown): checked below.
        }
        assert!(
            files_with(dir, "sst").is_empty(),
            "rocksdb flushed at close"
        );
        let wal: u64 = files_with(dir, "log")
            .iter()
            .map(|e| e.metadata().expect("metadata").len())
            .sum();
        // RocksDB writes an OPTIONS-<number> file at each open: the highest is current.
        let latest = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter_map(|n| Some((n.strip_prefix("OPTIONS-")?.parse::<u64>().ok()?, n)))
            .max()
            .map(|(_, n)| dir.join(n));
        let latest = latest.expect("an OPTIONS file");
        let text = std::fs::read_to_string(&latest).expect("read OPTIONS");
        let patched = text.replace(
            "avoid_flush_during_recovery=false",
            "avoid_flush_during_recovery=true",
        );
        assert_ne!(
            text, patched,
            "avoid_flush_during_recovery not in {latest:?}"
        );
        std::fs::write(&latest, patched).expect("write OPTIONS");
        wal
    }

    pub fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }

    /// Opens the DB copy at `dir` with its stored options (WAL replayed into the memtable,
    /// nothing flushed); returns how long `DB::open` took. Loading the options and closing
    /// are not timed.
    pub fn timed_open(dir: &Path) -> Duration {
        let env = Env::new().expect("env");
        let (options, cfs) =
            Options::load_latest(dir, env, false, Cache::new_lru_cache(8 << 20)).expect("options");
        let start = Instant::now();
        let db = DB::open_cf_descriptors(&options, dir, cfs).expect("open rocksdb");
        let took = start.elapsed();
        assert!(
            files_with(dir, "sst").is_empty(),
            "rocksdb flushed during recovery"
        );
        drop(db);
        took
    }

    /// Fills a fresh DB at `dir` with the first `FLUSH_N` puts, WAL off (not timed), then
    /// flushes its memtable; returns how long the flush took and the SST's size.
    pub fn fill_and_flush(data: &Data, dir: &Path) -> (Duration, u64) {
        let _ = std::fs::remove_dir_all(dir);
        let mut table = BlockBasedOptions::default();
        table.set_block_size(4096);
        table.set_bloom_filter(10.0, false);
        // RocksDB 10's default is XXH3: ask for CRC32C, as our format uses.
        table.set_checksum_type(ChecksumType::CRC32c);
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_write_buffer_size(256 << 20);
        options.set_disable_auto_compactions(true);
        options.set_compression_type(DBCompressionType::None);
        options.set_block_based_table_factory(&table);
        let db = DB::open(&options, dir).expect("open rocksdb");
        let mut no_wal = WriteOptions::default();
        no_wal.disable_wal(true);
        for first in (0..FLUSH_N).step_by(BATCH) {
            let mut batch = WriteBatch::default();
            for i in first..(first + BATCH).min(FLUSH_N) {
                batch.put(data.keys[i], data.value(i));
            }
            db.write_opt(batch, &no_wal).expect("write");
        }
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        let start = Instant::now();
        db.flush_opt(&flush).expect("flush");
        let took = start.elapsed();
        drop(db);
        let sst = files_with(dir, "sst");
        assert_eq!(sst.len(), 1, "one SST per flush");
        (took, sst[0].metadata().expect("metadata").len())
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench_replay, bench_flush
}
criterion_main!(benches);
