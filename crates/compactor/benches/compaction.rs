//! One full compaction of overlapping L0 files into L1, against RocksDB's `compact_range`
//! of the same entries in the same run (issue #6). Method and figures:
//! `docs/bench/compaction.md`.
//!
//! Data: `DP_BENCH_COMPACTION_MB` (default 2048) MiB of input SSTs, about: 16-byte keys
//! `key-{:012}` and incompressible 100-byte values in [`FILES`] L0 files. The distinct keys
//! are a shuffled permutation (fixed seed) cut into one chunk per file, so every file holds a
//! random subset of the whole key range; on top of that, 10% of all entries overwrite a
//! random key of an earlier file (a higher seq: the older version is shadowed and dropped).
//! Seqs increase from the oldest file to the newest.
//!
//! Ours: [`compactor::merge::compact`] over [`StorageSstStore`] on `Storage::local` (files
//! on local disk through the object-store layer, outputs fsynced as production writes
//! them), bottommost, outputs of 64 MiB, `threads` 1 and 2 (readahead as `job.rs` sets it).
//! RocksDB (with `--features compactor/rocksdb-bench`): the same entries flushed as L0 files
//! of a DB with the same table options (4 KiB blocks, 10 bits/key bloom, CRC32C, no
//! compression); each iteration hard-links the template's SSTs into a fresh directory
//! (copies the rest), opens it, and times `compact_range(None, None)` with
//! `max_subcompactions` 1 and 2, `target_file_size_base` 64 MiB. A second RocksDB template
//! uses XXH3 block checksums: this build of RocksDB computes CRC32C in software (see
//! [`theirs::Checksum`]). Opening, closing and deleting are not timed on either side; after
//! each run the bench runs `sync` and waits a second, so that freeing the previous run's
//! blocks does not land in the next one. Throughput is in bytes of *our* input SSTs for
//! every variant (RocksDB's own input bytes are printed too). Each run prints the CPU time
//! of this process (`/proc/self/stat`; for RocksDB also its LOG's compaction CPU time) and
//! of everything else on the machine meanwhile (`/proc/stat`): other work on the same
//! cores shows up there, and the run is disturbed.
//!
//! `cargo bench --workspace --features sst/rocksdb-bench,replayer/rocksdb-bench,compactor/rocksdb-bench --bench compaction`
//!
//! Env: `DP_BENCH_COMPACTION_MB` (data size), `DP_BENCH_COMPACTION_RUNS` (runs per variant,
//! default 3), `DP_BENCH_COMPACTION_DIR` (where the temp dir goes; default the system's),
//! `DP_BENCH_COMPACTION_ONLY` (`ours` or `rocksdb`: one side only),
//! `DP_BENCH_COMPACTION_XXH3=0` (no XXH3 variant of RocksDB).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compactor::merge::{Compacted, Control, MergeOptions, compact};
use compactor::ranges::plan_ranges;
use compactor::request::CompactionSpec;
use compactor::store::{StorageSstStore, readahead_for};
use lsm::ValueKind;
use lsm::key::encode_internal_key;
use lsm::manifest::FileMeta;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use sst::{SstBuilder, SstOptions};
use storage::{Storage, TableName};

/// L0 files.
const FILES: usize = 8;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
/// Bytes of our SST per entry, about (24-byte internal key prefix-compressed, 100-byte
/// value, lengths, restarts, bloom, index): turns the size asked for into entries.
const SST_BYTES_PER_ENTRY: u64 = 120;
/// One entry in ten overwrites a key of an earlier file.
const OVERWRITE_PERCENT: u64 = 10;
const TARGET_FILE_SIZE: u64 = 64 << 20;
const FIRST_OUTPUT_ID: u64 = 1000;
const TABLE: &str = "bench";
const MIB: f64 = (1u64 << 20) as f64;

/// The entries of one L0 file, in key order: key numbers, seqs, values.
struct FileData {
    keys: Vec<u64>,
    first_seq: u64,
    values: Vec<u8>,
}

impl FileData {
    fn len(&self) -> usize {
        self.keys.len()
    }

    fn key(&self, i: usize) -> [u8; KEY_LEN] {
        let mut k = [0u8; KEY_LEN];
        k.copy_from_slice(format!("key-{:012}", self.keys[i]).as_bytes());
        k
    }

    fn seq(&self, i: usize) -> u64 {
        self.first_seq + i as u64
    }

    fn value(&self, i: usize) -> &[u8] {
        &self.values[i * VALUE_LEN..(i + 1) * VALUE_LEN]
    }
}

/// The workload: which keys each file holds. Values are generated file by file
/// ([`Workload::file`]) so that the whole data set is never in memory at once.
struct Workload {
    /// Distinct keys.
    distinct: u64,
    /// Overwriting entries (all files).
    overwrites: u64,
    /// The shuffled key numbers; file `f`'s own keys are chunk `f`.
    order: Vec<u64>,
    rng: StdRng,
    next_seq: u64,
}

impl Workload {
    fn new(total_entries: u64) -> Self {
        let overwrites = total_entries * OVERWRITE_PERCENT / 100;
        let distinct = total_entries - overwrites;
        let mut rng = StdRng::seed_from_u64(0x5eed_c0de);
        let mut order: Vec<u64> = (0..distinct).collect();
        order.shuffle(&mut rng);
        Self {
            distinct,
            overwrites,
            order,
            rng,
            next_seq: 1,
        }
    }

    fn chunk(&self, f: usize) -> std::ops::Range<usize> {
        let per = self.order.len() / FILES;
        let end = if f + 1 == FILES {
            self.order.len()
        } else {
            (f + 1) * per
        };
        f * per..end
    }

    /// File `f` (0 is the oldest): its chunk of keys, and for `f > 0` its share of the
    /// overwrites, distinct keys drawn from the chunks of files `0..f`.
    fn file(&mut self, f: usize) -> FileData {
        let mut keys: Vec<u64> = self.order[self.chunk(f)].to_vec();
        if f > 0 {
            let share = self.overwrites / (FILES as u64 - 1)
                + u64::from((f as u64) <= self.overwrites % (FILES as u64 - 1));
            let earlier = self.chunk(f - 1).end;
            let picked = rand::seq::index::sample(&mut self.rng, earlier, share as usize);
            keys.extend(picked.iter().map(|i| self.order[i]));
        }
        keys.sort_unstable();
        let mut values = vec![0u8; keys.len() * VALUE_LEN];
        self.rng.fill_bytes(&mut values);
        let first_seq = self.next_seq;
        self.next_seq += keys.len() as u64;
        FileData {
            keys,
            first_seq,
            values,
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    // Multi-threaded like the service: the storage layer's reads and writes run on it while
    // the merge runs on its own threads.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn table() -> TableName {
    TableName::new(TABLE).expect("table name")
}

/// Writes file `id` into the storage layout under `root` (fsynced); returns its metadata.
fn write_ours(root: &Path, id: u64, data: &FileData) -> FileMeta {
    let path = root.join(storage::paths::sst_file(&table(), id).as_ref());
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let file = File::create(&path).expect("create");
    let writer = BufWriter::with_capacity(1 << 20, file);
    let mut builder =
        SstBuilder::new(path.display().to_string(), writer, SstOptions::default()).expect("sst");
    let mut key = Vec::with_capacity(KEY_LEN + 8);
    for i in 0..data.len() {
        key.clear();
        encode_internal_key(&data.key(i), data.seq(i), ValueKind::Put, &mut key);
        builder.add(&key, data.value(i)).expect("add");
    }
    let (info, writer) = builder.finish_into_inner().expect("finish");
    writer
        .into_inner()
        .expect("flush")
        .sync_all()
        .expect("fsync");
    FileMeta {
        id,
        size: info.file_size,
        smallest: info.smallest_user_key,
        largest: info.largest_user_key,
        smallest_seq: info.min_seq,
        largest_seq: info.max_seq,
        entries: info.entry_count,
        tombstones: info.tombstone_count,
    }
}

fn spec(l0_newest_first: &[FileMeta], threads: usize) -> CompactionSpec {
    CompactionSpec {
        table: table(),
        inputs: vec![(0, l0_newest_first.to_vec())],
        output_level: 1,
        bottommost: true,
        target_file_size: TARGET_FILE_SIZE,
        output_file_ids: (FIRST_OUTPUT_ID..FIRST_OUTPUT_ID + 10_000).collect(),
        io_bytes_per_sec: 0,
        reason: "bench: full compaction of L0".to_owned(),
        max_subcompactions: threads as u32,
        grandparent_bounds: Vec::new(),
    }
}

/// One compaction of ours, timed; its outputs are deleted afterwards (not timed).
fn run_ours(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    root: &Path,
    l0: &[FileMeta],
    threads: usize,
) -> (Duration, Cpu, Compacted) {
    let spec = spec(l0, threads);
    // As `job.rs` builds it: every L0 file is read at once by each range.
    let store = Arc::new(StorageSstStore::new(
        storage.clone(),
        rt.handle().clone(),
        table(),
        readahead_for(l0.len() * threads),
    ));
    let options = MergeOptions {
        threads,
        ..MergeOptions::default()
    };
    let (start, meter) = (Instant::now(), CpuMeter::start());
    let compacted = compact(&store, &spec, &options, &Control::default()).expect("compacted");
    let (took, cpu) = (start.elapsed(), meter.stop());
    for o in &compacted.outputs {
        let path = root.join(spec.sst_path(o.file_id).as_ref());
        std::fs::remove_file(&path).expect("remove output");
    }
    settle();
    (took, cpu, compacted)
}

/// Lets the file system finish what deleting the previous run's files started (the journal
/// commit, and with `-o discard` the discards of the freed blocks) before the next timed
/// run: runs `sync`, then waits a second.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(1));
}

/// User plus system CPU time of this process so far (every thread, exited ones included),
/// from `/proc/self/stat` in clock ticks of 10 ms; zero where that file does not exist.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may hold spaces): state is the first, utime
    // and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// CPU time every core of the machine spent busy so far (all but idle and iowait), from
/// `/proc/stat` in ticks of 10 ms; zero where that file does not exist.
fn machine_busy() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return Duration::ZERO;
    };
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = fields
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Duration::from_millis(busy * 10)
}

/// CPU spent during a run: by this process, and by everything else on the machine (other
/// processes compete for the same cores: a run with much of it was disturbed).
#[derive(Debug, Clone, Copy)]
struct Cpu {
    ours: Duration,
    others: Duration,
}

struct CpuMeter {
    process: Duration,
    machine: Duration,
}

impl CpuMeter {
    fn start() -> Self {
        Self {
            process: cpu_time(),
            machine: machine_busy(),
        }
    }

    fn stop(&self) -> Cpu {
        let ours = cpu_time().saturating_sub(self.process);
        let all = machine_busy().saturating_sub(self.machine);
        Cpu {
            ours,
            others: all.saturating_sub(ours),
        }
    }
}

/// Min and median.
fn summary(times: &[Duration]) -> (Duration, Duration) {
    let mut t = times.to_vec();
    t.sort();
    (t[0], t[t.len() / 2])
}

fn mib_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / MIB / d.as_secs_f64()
}

struct Variant {
    name: String,
    times: Vec<Duration>,
    cpu: Vec<Cpu>,
}

impl Variant {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            times: Vec::new(),
            cpu: Vec::new(),
        }
    }

    /// Throughput of the median run and of the fastest.
    fn rates(&self, bytes: u64) -> (f64, f64) {
        let (min, median) = summary(&self.times);
        (mib_per_s(bytes, median), mib_per_s(bytes, min))
    }

    /// The summary line: throughput (median / best), times, CPU time (median).
    fn line(&self, bytes: u64) -> String {
        let (median, best) = self.rates(bytes);
        let (min_t, med_t) = summary(&self.times);
        let (_, cpu) = summary(&self.cpu.iter().map(|c| c.ours).collect::<Vec<_>>());
        let (_, others) = summary(&self.cpu.iter().map(|c| c.others).collect::<Vec<_>>());
        format!(
            "  {:<32} {median:6.1} / {best:6.1} MiB/s  (median {med_t:.2?}, min {min_t:.2?}; \
             median cpu {cpu:.2?}, others {others:.2?})",
            self.name
        )
    }
}

fn main() {
    let mb = env_u64("DP_BENCH_COMPACTION_MB", 2048);
    let runs = env_u64("DP_BENCH_COMPACTION_RUNS", 3).max(1) as usize;
    let only = std::env::var("DP_BENCH_COMPACTION_ONLY").unwrap_or_default();
    let (run_ours_side, run_rocksdb_side) = match only.as_str() {
        "" => (true, cfg!(feature = "rocksdb-bench")),
        "ours" => (true, false),
        "rocksdb" => (false, true),
        other => panic!("DP_BENCH_COMPACTION_ONLY={other}: expected ours or rocksdb"),
    };
    assert!(
        cfg!(feature = "rocksdb-bench") || !run_rocksdb_side,
        "DP_BENCH_COMPACTION_ONLY=rocksdb needs --features compactor/rocksdb-bench"
    );
    let total_entries = (mb << 20) / SST_BYTES_PER_ENTRY;
    let dir = match std::env::var_os("DP_BENCH_COMPACTION_DIR") {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .expect("tempdir");
    let ours_root = dir.path().join("ours");

    // Build every side's L0 files from the same entries, one file at a time.
    let started = Instant::now();
    let mut workload = Workload::new(total_entries);
    #[cfg(feature = "rocksdb-bench")]
    let mut rocks: Vec<theirs::Builder> = if run_rocksdb_side {
        theirs::checksums()
            .into_iter()
            .map(|c| theirs::Builder::new(dir.path(), c, total_entries / FILES as u64 + 1))
            .collect()
    } else {
        Vec::new()
    };
    let mut l0 = Vec::with_capacity(FILES);
    for f in 0..FILES {
        let data = workload.file(f);
        if run_ours_side {
            l0.push(write_ours(&ours_root, f as u64 + 1, &data));
        }
        #[cfg(feature = "rocksdb-bench")]
        for r in &mut rocks {
            r.add_file(&data);
        }
    }
    #[cfg(feature = "rocksdb-bench")]
    let rocks: Vec<theirs::Template> = rocks.into_iter().map(theirs::Builder::finish).collect();
    let distinct = workload.distinct;
    eprintln!(
        "compaction: {} entries ({} distinct keys, {} overwrites) in {FILES} L0 files, \
         built in {:.1?}",
        distinct + workload.overwrites,
        distinct,
        workload.overwrites,
        started.elapsed()
    );
    drop(workload);
    l0.reverse(); // newest first, as the manifest lists L0
    #[cfg_attr(not(feature = "rocksdb-bench"), allow(unused_mut))]
    let mut input_bytes: u64 = l0.iter().map(|f| f.size).sum();
    if run_ours_side {
        eprintln!(
            "compaction: ours {input_bytes} bytes of input ({:.1} MiB), files {:?}",
            input_bytes as f64 / MIB,
            l0.iter().rev().map(|f| f.size).collect::<Vec<_>>()
        );
        let ranges = plan_ranges(&l0, 2, MergeOptions::default().min_subcompaction_bytes);
        let cuts: Vec<String> = ranges
            .iter()
            .filter_map(|r| r.end.as_ref())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        eprintln!(
            "compaction: ours with 2 threads plans {} ranges, cut at {cuts:?}",
            ranges.len()
        );
    }
    #[cfg(feature = "rocksdb-bench")]
    for t in &rocks {
        eprintln!(
            "compaction: rocksdb ({}) {} bytes of input ({:.1} MiB)",
            t.checksum.name(),
            t.bytes,
            t.bytes as f64 / MIB
        );
    }
    // Throughput is counted in our input bytes on every side; without ours, in RocksDB's.
    #[cfg(feature = "rocksdb-bench")]
    if !run_ours_side {
        input_bytes = rocks.first().map_or(0, |t| t.bytes);
    }

    let rt = runtime();
    let storage = Storage::local(&ours_root).expect("storage");
    let mut ours = [
        Variant::new("ours, 1 thread"),
        Variant::new("ours, 2 threads"),
    ];
    #[cfg(feature = "rocksdb-bench")]
    let mut theirs_v: Vec<(&theirs::Template, u32, Variant)> = rocks
        .iter()
        .flat_map(|t| {
            [1, 2].map(|n| {
                let name = format!(
                    "rocksdb {}, {n} subcompaction{}",
                    t.checksum.name(),
                    if n == 1 { "" } else { "s" }
                );
                (t, n, Variant::new(&name))
            })
        })
        .collect();
    let mut last_ours: Option<Compacted> = None;
    settle();
    // Rounds interleave the variants, so that drift of the machine spreads over all.
    for round in 0..runs {
        if run_ours_side {
            for (v, threads) in ours.iter_mut().zip([1, 2]) {
                let (took, cpu, c) = run_ours(&rt, &storage, &ours_root, &l0, threads);
                eprintln!(
                    "compaction: round {round} {}: {took:.2?} ({:.1} MiB/s), cpu {:.2?} \
                     (others {:.2?}), {} ranges, {} outputs, {} bytes read, {} bytes written",
                    v.name,
                    mib_per_s(input_bytes, took),
                    cpu.ours,
                    cpu.others,
                    c.subcompactions,
                    c.outputs.len(),
                    c.bytes_read,
                    c.bytes_written,
                );
                v.times.push(took);
                v.cpu.push(cpu);
                last_ours = Some(c);
            }
        }
        #[cfg(feature = "rocksdb-bench")]
        for (template, subcompactions, v) in &mut theirs_v {
            let run = template.timed_compaction(&dir.path().join("copy"), *subcompactions);
            let log = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
            eprintln!(
                "compaction: round {round} {}: {:.2?} ({:.1} MiB/s), cpu {:.2?} (others \
                 {:.2?}; compaction threads {:.2?}), {} subcompactions, {} outputs, {} bytes \
                 read, {} bytes written (LOG)",
                v.name,
                run.took,
                mib_per_s(input_bytes, run.took),
                run.cpu.ours,
                run.cpu.others,
                Duration::from_micros(run.log.cpu_micros.unwrap_or_default()),
                log(run.log.subcompactions),
                log(run.log.output_files),
                log(run.log.input_bytes),
                log(run.log.output_bytes),
            );
            v.times.push(run.took);
            v.cpu.push(run.cpu);
        }
    }

    // Correctness, once: one version per distinct key survives.
    if let Some(c) = &last_ours {
        let entries: u64 = c.outputs.iter().map(|o| o.info.entry_count).sum();
        assert_eq!(entries, distinct, "ours: output entries");
        assert_eq!(c.stats.output_entries, distinct);
        assert_eq!(c.stats.shadowed_dropped, c.stats.input_entries - distinct);
        eprintln!("compaction: ours checked: {entries} entries out = distinct keys");
    }
    #[cfg(feature = "rocksdb-bench")]
    for t in &rocks {
        let count = t.compact_and_count(&dir.path().join("copy"));
        assert_eq!(count, distinct, "rocksdb: keys after compaction");
        eprintln!(
            "compaction: rocksdb ({}) checked: {count} keys after compaction = distinct keys",
            t.checksum.name()
        );
    }

    println!(
        "compaction: {:.1} MiB of input ({input_bytes} bytes), {runs} runs each, \
         throughput in input MiB/s (median / best)",
        input_bytes as f64 / MIB
    );
    for v in ours.iter().filter(|v| !v.times.is_empty()) {
        println!("{}", v.line(input_bytes));
    }
    #[cfg(feature = "rocksdb-bench")]
    {
        for (_, _, v) in &theirs_v {
            println!("{}", v.line(input_bytes));
        }
        if run_ours_side {
            for pair in theirs_v.chunks(2) {
                let [(t, _, one), (_, _, two)] = pair else {
                    continue;
                };
                println!(
                    "  ours / rocksdb {} (medians): 1 thread {:.2}x, 2 threads {:.2}x",
                    t.checksum.name(),
                    ours[0].rates(input_bytes).0 / one.rates(input_bytes).0,
                    ours[1].rates(input_bytes).0 / two.rates(input_bytes).0
                );
            }
        }
    }
    drop(storage);
    drop(rt);
    let _ = std::fs::remove_dir_all(dir.path());
}

#[cfg(feature = "rocksdb-bench")]
mod theirs {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use rocksdb::{
        BlockBasedOptions, ChecksumType, DB, DBCompressionType, IteratorMode, Options, WriteBatch,
        WriteOptions,
    };

    use super::{Cpu, CpuMeter, FILES, FileData, TARGET_FILE_SIZE, settle};

    /// The block checksum of a RocksDB setup.
    #[derive(Debug, Clone, Copy)]
    pub enum Checksum {
        /// As our format: the like-for-like comparison.
        Crc32c,
        /// RocksDB's default. This build of RocksDB (librocksdb-sys without SSE4.2 flags)
        /// computes CRC32C with a table-driven loop; XXH3 shows what RocksDB costs with a
        /// checksum it computes at hardware speed.
        Xxh3,
    }

    impl Checksum {
        pub fn name(self) -> &'static str {
            match self {
                Self::Crc32c => "crc32c",
                Self::Xxh3 => "xxh3",
            }
        }
    }

    /// The setups to run: CRC32C, and XXH3 unless `DP_BENCH_COMPACTION_XXH3=0`.
    pub fn checksums() -> Vec<Checksum> {
        match std::env::var("DP_BENCH_COMPACTION_XXH3").as_deref() {
            Ok("0") => vec![Checksum::Crc32c],
            _ => vec![Checksum::Crc32c, Checksum::Xxh3],
        }
    }

    /// The table options equivalent to our `SstOptions::default()` (but the checksum), and
    /// the DB options of the bench: no compaction but the one asked for, nothing stalls.
    fn options(checksum: Checksum, subcompactions: u32, write_buffer: usize) -> Options {
        let mut table = BlockBasedOptions::default();
        table.set_block_size(4096);
        table.set_bloom_filter(10.0, false);
        table.set_checksum_type(match checksum {
            Checksum::Crc32c => ChecksumType::CRC32c,
            Checksum::Xxh3 => ChecksumType::XXH3,
        });
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(DBCompressionType::None);
        options.set_block_based_table_factory(&table);
        options.set_disable_auto_compactions(true);
        options.set_level_zero_file_num_compaction_trigger(1 << 20);
        options.set_level_zero_slowdown_writes_trigger(1 << 20);
        options.set_level_zero_stop_writes_trigger(1 << 20);
        options.set_write_buffer_size(write_buffer);
        options.set_target_file_size_base(TARGET_FILE_SIZE);
        options.set_max_subcompactions(subcompactions);
        // Subcompactions beyond the first take threads from the compaction pool: make
        // sure there are two.
        options.set_max_background_jobs(4);
        options
    }

    /// Fills a template DB, one flushed L0 file per [`Builder::add_file`].
    pub struct Builder {
        db: DB,
        dir: PathBuf,
        checksum: Checksum,
    }

    impl Builder {
        pub fn new(parent: &Path, checksum: Checksum, max_entries_per_file: u64) -> Self {
            let dir = parent.join(format!("rocksdb-{}", checksum.name()));
            // Room for one file's entries in one memtable (less than 200 bytes each with
            // the skiplist node), so each flush writes one L0 file.
            let buffer = usize::try_from(max_entries_per_file * 400).expect("size") + (64 << 20);
            let db = DB::open(&options(checksum, 1, buffer), &dir).expect("open rocksdb");
            Self { db, dir, checksum }
        }

        /// Writes the entries of one file (WAL off) and flushes them as one L0 file.
        pub fn add_file(&mut self, data: &FileData) {
            let mut no_wal = WriteOptions::default();
            no_wal.disable_wal(true);
            for first in (0..data.len()).step_by(1000) {
                let mut batch = WriteBatch::default();
                for i in first..(first + 1000).min(data.len()) {
                    batch.put(data.key(i), data.value(i));
                }
                self.db.write_opt(batch, &no_wal).expect("write");
            }
            self.db.flush().expect("flush");
        }

        pub fn finish(self) -> Template {
            let files = self
                .db
                .property_int_value("rocksdb.num-files-at-level0")
                .expect("property");
            assert_eq!(files, Some(FILES as u64), "one L0 file per flush");
            drop(self.db);
            Template {
                bytes: ssts(&self.dir).iter().sum(),
                dir: self.dir,
                checksum: self.checksum,
            }
        }
    }

    /// A closed DB holding the L0 files, copied for each run.
    pub struct Template {
        pub dir: PathBuf,
        pub checksum: Checksum,
        /// Bytes of its SSTs.
        pub bytes: u64,
    }

    /// Sizes of the SSTs in `dir`.
    fn ssts(dir: &Path) -> Vec<u64> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry"))
            .filter(|e| e.path().extension().is_some_and(|x| x == "sst"))
            .map(|e| e.metadata().expect("metadata").len())
            .collect()
    }

    pub struct Run {
        pub took: Duration,
        pub cpu: Cpu,
        pub log: LogFigures,
    }

    /// What the LOG's `compaction_started` and `compaction_finished` events say.
    pub struct LogFigures {
        pub input_bytes: Option<u64>,
        pub output_bytes: Option<u64>,
        pub output_files: Option<u64>,
        pub subcompactions: Option<u64>,
        /// CPU time of the compaction's threads.
        pub cpu_micros: Option<u64>,
    }

    impl LogFigures {
        fn read(dir: &Path) -> Self {
            let log = std::fs::read_to_string(dir.join("LOG")).unwrap_or_default();
            Self {
                input_bytes: log_field(&log, "compaction_started", "input_data_size"),
                output_bytes: log_field(&log, "compaction_finished", "total_output_size"),
                output_files: log_field(&log, "compaction_finished", "num_output_files"),
                subcompactions: log_field(&log, "compaction_finished", "num_subcompactions"),
                cpu_micros: log_field(&log, "compaction_finished", "compaction_time_cpu_micros"),
            }
        }
    }

    /// The number `"field": N` of the last `event` in the LOG.
    fn log_field(log: &str, event: &str, field: &str) -> Option<u64> {
        let event = format!("\"event\": \"{event}\"");
        let line = log.lines().rev().find(|l| l.contains(&event))?;
        let key = format!("\"{field}\": ");
        let at = line.find(&key)? + key.len();
        let digits: String = line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }

    impl Template {
        /// A fresh copy at `to`: SSTs (immutable) hard-linked, the rest copied.
        fn copy_to(&self, to: &Path) {
            let _ = std::fs::remove_dir_all(to);
            std::fs::create_dir_all(to).expect("mkdir");
            for entry in std::fs::read_dir(&self.dir).expect("read dir") {
                let entry = entry.expect("entry");
                let dest = to.join(entry.file_name());
                if entry.path().extension().is_some_and(|x| x == "sst") {
                    std::fs::hard_link(entry.path(), &dest).expect("link");
                } else if entry.file_type().expect("type").is_file() {
                    std::fs::copy(entry.path(), &dest).expect("copy");
                }
            }
        }

        /// Copies the template to `copy`, opens it and times one `compact_range` of
        /// everything; then closes and deletes the copy (not timed).
        pub fn timed_compaction(&self, copy: &Path, subcompactions: u32) -> Run {
            self.copy_to(copy);
            let db = DB::open(&options(self.checksum, subcompactions, 64 << 20), copy)
                .expect("open rocksdb");
            let (start, meter) = (Instant::now(), CpuMeter::start());
            db.compact_range(None::<&[u8]>, None::<&[u8]>);
            let (took, cpu) = (start.elapsed(), meter.stop());
            let l0 = db
                .property_int_value("rocksdb.num-files-at-level0")
                .expect("property");
            assert_eq!(l0, Some(0), "rocksdb: L0 compacted");
            drop(db);
            let log = LogFigures::read(copy);
            std::fs::remove_dir_all(copy).expect("remove copy");
            settle();
            Run { took, cpu, log }
        }

        /// Compacts a copy and counts its keys by a full iteration.
        pub fn compact_and_count(&self, copy: &Path) -> u64 {
            self.copy_to(copy);
            let count = {
                let db =
                    DB::open(&options(self.checksum, 1, 64 << 20), copy).expect("open rocksdb");
                db.compact_range(None::<&[u8]>, None::<&[u8]>);
                let mut n = 0u64;
                for item in db.iterator(IteratorMode::Start) {
                    item.expect("iterate");
                    n += 1;
                }
                n
            };
            std::fs::remove_dir_all(copy).expect("remove copy");
            count
        }
    }
}
