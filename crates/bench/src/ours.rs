//! Our side of every workload, on our production code paths:
//!
//! - flush: `lsm::Memtable` iterated into `sst::SstBuilder` through a 1 MiB buffer, then
//!   fdatasync (the flusher's write minus its gRPC stream);
//! - compaction: `compactor::merge::compact` over `StorageSstStore` on `Storage::local`
//!   (as a compactor with local storage runs it);
//! - trees (P3, P4): an in-process driver — entries → memtable of the configured size →
//!   flush to an L0 SST → the version gets the file → OUR picker (`lsm::compaction::pick`)
//!   → each plan executed by `compact` (or applied as a trivial move) → the edit applied,
//!   until the picker proposes nothing. Like RocksDB with one background job, compactions
//!   run one at a time on their own thread while the writer keeps filling and flushing
//!   memtables (writes stop while L0 holds 36 files, RocksDB's default stop trigger), so
//!   L0 grows while a compaction runs and the next L0 compaction takes all of it;
//! - replay (P5, P7): `replayer::replay::pass` over a WAL written by `wal::WalWriter`.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use compactor::merge::{Control, MergeOptions, compact};
use compactor::request::CompactionSpec;
use compactor::store::{StorageSstStore, readahead_for};
use lsm::compaction::{PickerInput, Strategy, pick};
use lsm::manifest::{FileMeta, Version, VersionEdit};
use lsm::{InternalIterator, Memtable, ValueKind};
use replayer::replay::{PassInput, PassOutcome, PassStats, pass};
use replayer::table::{Limits, TableState};
use sst::{SstBuilder, SstOptions};
use storage::{Storage, TableName};

use crate::data::{Entry, EntryReader, dir_bytes};
use crate::settings::{ENTRY_BYTES, Settings};
use crate::{Figures, sys};

pub const TABLE: &str = "bench";

fn table() -> anyhow::Result<TableName> {
    TableName::new(TABLE).map_err(|e| anyhow::anyhow!("table name: {e}"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Multi-threaded like the services: storage IO runs on it while merges run on their
    // own threads.
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Path of SST `id` in the storage layout under `root`.
pub fn sst_path(root: &Path, id: u64) -> anyhow::Result<std::path::PathBuf> {
    let object = storage::paths::sst_file(&table()?, id);
    Ok(root.join(object.as_ref()))
}

/// Writes the entries of `memtable` as SST `id` under `root` and fdatasyncs it.
pub fn flush_memtable(
    memtable: &Arc<Memtable>,
    root: &Path,
    id: u64,
    options: &SstOptions,
) -> anyhow::Result<FileMeta> {
    let path = sst_path(root, id)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let writer = BufWriter::with_capacity(1 << 20, file);
    let mut builder = SstBuilder::new(path.display().to_string(), writer, options.clone())?;
    let mut it = memtable.iter();
    it.seek_to_first().map_err(|e| anyhow::anyhow!("{e}"))?;
    while it.valid() {
        builder.add(it.key(), it.value())?;
        it.next().map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let (info, writer) = builder.finish_into_inner()?;
    let file = writer.into_inner().map_err(|e| e.into_error())?;
    file.sync_data()?;
    Ok(FileMeta {
        id,
        size: info.file_size,
        smallest: info.smallest_user_key,
        largest: info.largest_user_key,
        smallest_seq: info.min_seq,
        largest_seq: info.max_seq,
        entries: info.entry_count,
        tombstones: info.tombstone_count,
    })
}

/// A memtable holding `entries`, sequence numbers from `first_seq`.
fn fill(id: u64, entries: &[Entry], first_seq: u64) -> anyhow::Result<Arc<Memtable>> {
    let m = Arc::new(Memtable::new(id));
    for (i, e) in entries.iter().enumerate() {
        m.insert(&e.key, first_seq + i as u64, ValueKind::Put, &e.value)?;
    }
    m.freeze();
    Ok(m)
}

/// P1: `p1_memtables` memtables of `p1_entries_per_memtable` entries each, filled from the
/// entries file (not timed), each flushed to an SST (timed, with the CPU time of the flush).
pub fn p1_flush(s: &Settings, entries: &Path, work: &Path) -> anyhow::Result<Figures> {
    let mut reader = EntryReader::open(entries)?;
    let (mut took, mut cpu, mut sst_bytes) = (Duration::ZERO, Duration::ZERO, 0u64);
    let mut seq = 1;
    for m in 0..s.p1_memtables {
        let batch = reader.take(s.p1_entries_per_memtable())?;
        let memtable = fill(m + 1, &batch, seq)?;
        seq += batch.len() as u64;
        drop(batch);
        let (start, cpu0) = (Instant::now(), sys::cpu_time());
        let meta = flush_memtable(&memtable, work, m + 1, &s.sst_options())?;
        took += start.elapsed();
        cpu += sys::cpu_time().saturating_sub(cpu0);
        sst_bytes += meta.size;
        std::fs::remove_file(sst_path(work, m + 1)?)?;
    }
    Ok(flush_figures(reader.entries, took, cpu, sst_bytes))
}

/// P1's figures from the totals of either engine.
pub fn flush_figures(entries: u64, took: Duration, cpu: Duration, sst_bytes: u64) -> Figures {
    let user = entries * ENTRY_BYTES;
    Figures::from([
        ("entries".into(), entries as f64),
        ("user_bytes".into(), user as f64),
        ("flush_s".into(), took.as_secs_f64()),
        ("flush_mb_s".into(), mb(user) / took.as_secs_f64()),
        (
            "flush_cpu_s_per_gb".into(),
            cpu.as_secs_f64() / (user as f64 / 1e9),
        ),
        ("sst_bytes".into(), sst_bytes as f64),
    ])
}

/// MB (10^6 bytes).
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// P2 preparation: the entries file cut into `p2_files` consecutive chunks, each written
/// as one L0 SST (sorted, sequence numbers increasing along the file), into the storage
/// layout under `root`; the metadata goes to `root/l0.json`.
pub fn p2_prepare(s: &Settings, entries: &Path, root: &Path) -> anyhow::Result<u64> {
    let mut reader = EntryReader::open(entries)?;
    let mut metas = Vec::new();
    let mut seq = 1;
    for f in 0..s.p2_files {
        let batch = reader.take(s.p2_entries_per_file())?;
        // Through a memtable: it sorts by internal key as a flush would.
        let memtable = fill(f + 1, &batch, seq)?;
        seq += batch.len() as u64;
        metas.push(flush_memtable(&memtable, root, f + 1, &s.sst_options())?);
    }
    metas.reverse(); // newest first, as the manifest lists L0
    std::fs::write(root.join("l0.json"), serde_json::to_vec(&metas)?)?;
    Ok(reader.entries)
}

/// P2: one full compaction of the prepared L0 files with `threads` merge threads. Outputs
/// are deleted afterwards (not timed).
pub fn p2_compact(root: &Path, threads: usize) -> anyhow::Result<Figures> {
    let l0: Vec<FileMeta> = serde_json::from_slice(
        &std::fs::read(root.join("l0.json")).context("read l0.json (prepared?)")?,
    )?;
    let rt = runtime()?;
    let storage = Storage::local(root)?;
    let spec = CompactionSpec {
        table: table()?,
        inputs: vec![(0, l0.clone())],
        output_level: 1,
        bottommost: true,
        target_file_size: 64 << 20,
        output_file_ids: (1_000_000..1_100_000).collect(),
        io_bytes_per_sec: 0,
        reason: "bench: full compaction of L0".to_owned(),
        max_subcompactions: threads as u32,
        grandparent_bounds: Vec::new(),
    };
    let store = Arc::new(StorageSstStore::new(
        storage,
        rt.handle().clone(),
        table()?,
        readahead_for(l0.len() * threads),
    ));
    let options = MergeOptions {
        threads,
        ..MergeOptions::default()
    };
    let (start, cpu0) = (Instant::now(), sys::cpu_time());
    let c = compact(&store, &spec, &options, &Control::default())?;
    let (took, cpu) = (start.elapsed(), sys::cpu_time().saturating_sub(cpu0));
    for o in &c.outputs {
        std::fs::remove_file(sst_path(root, o.file_id)?)?;
    }
    let input_entries: u64 = l0.iter().map(|f| f.entries).sum();
    let mut f = compaction_figures(
        input_entries,
        c.stats.output_entries,
        l0.iter().map(|f| f.size).sum(),
        c.bytes_written,
        took,
        cpu,
    );
    f.insert("compaction_input_records".into(), input_entries as f64);
    Ok(f)
}

/// P2's figures from either engine. Throughput is in input *user* bytes (entries × 116),
/// the same count on both sides.
pub fn compaction_figures(
    input_entries: u64,
    output_entries: u64,
    input_bytes: u64,
    output_bytes: u64,
    took: Duration,
    cpu: Duration,
) -> Figures {
    let user = input_entries * ENTRY_BYTES;
    Figures::from([
        ("entries".into(), input_entries as f64),
        ("output_entries".into(), output_entries as f64),
        ("input_sst_bytes".into(), input_bytes as f64),
        ("output_sst_bytes".into(), output_bytes as f64),
        ("compaction_s".into(), took.as_secs_f64()),
        ("input_mb_s".into(), mb(user) / took.as_secs_f64()),
        ("compaction_cpu_s".into(), cpu.as_secs_f64()),
    ])
}

/// What a tree run (P3, P4) counted.
#[derive(Debug, Default)]
struct TreeCounts {
    flushes: u64,
    flushed_bytes: u64,
    compactions: u64,
    trivial_moves: u64,
    compaction_read: u64,
    compaction_written: u64,
    /// Largest sum of live files plus the outputs of the compaction running at the time.
    peak_space: u64,
    /// Times the writer waited for L0 to shrink below the stop trigger.
    stalls: u64,
}

/// L0 files at which writes stop until a compaction shrinks L0 (RocksDB's default
/// `level0_stop_writes_trigger`).
const L0_STOP: usize = 36;

/// The tree shared by the writer (flushes) and the compaction thread.
struct Tree {
    version: Mutex<(Version, TreeCounts)>,
    changed: std::sync::Condvar,
    done: std::sync::atomic::AtomicBool,
    next_id: AtomicU64,
}

fn live_bytes(v: &Version) -> u64 {
    v.levels.iter().flatten().map(|f| f.size).sum()
}

fn lock(tree: &Tree) -> std::sync::MutexGuard<'_, (Version, TreeCounts)> {
    tree.version
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Tree {
    /// The writer's side: flushes `memtable` to an L0 file and adds it; waits first while
    /// L0 is at the stop trigger.
    fn add_l0(&self, s: &Settings, root: &Path, memtable: &Arc<Memtable>) -> anyhow::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let meta = flush_memtable(memtable, root, id, &s.sst_options())?;
        let mut g = lock(self);
        if g.0.levels[0].len() >= L0_STOP {
            g.1.stalls += 1;
            while g.0.levels[0].len() >= L0_STOP {
                g = self
                    .changed
                    .wait(g)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        let (version, counts) = &mut *g;
        counts.flushes += 1;
        counts.flushed_bytes += meta.size;
        *version = version.apply(&VersionEdit {
            removed: Vec::new(),
            added: vec![(0, meta)],
        })?;
        counts.peak_space = counts.peak_space.max(live_bytes(version));
        self.changed.notify_all();
        Ok(())
    }

    /// The compaction thread (one background job): runs the picker's first plan, applies
    /// its edit, and again, until the writer is done and the picker proposes nothing.
    fn compact_loop(
        &self,
        s: &Settings,
        strategy: &Strategy,
        root: &Path,
        storage: &Storage,
        rt: &tokio::runtime::Runtime,
    ) -> anyhow::Result<()> {
        let locked = BTreeSet::new();
        loop {
            let (plan, grandparents) = {
                let mut g = lock(self);
                loop {
                    let out = pick(
                        strategy,
                        &PickerInput {
                            version: &g.0,
                            locked: &locked,
                        },
                    );
                    if let Some(plan) = out.plans.into_iter().next() {
                        let bounds = lsm::compaction::grandparent_bounds(
                            &g.0,
                            &plan.inputs,
                            plan.output_level,
                        );
                        break (plan, bounds);
                    }
                    if self.done.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    g = self
                        .changed
                        .wait(g)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            };
            if plan.trivial_move {
                let mut g = lock(self);
                g.0 = g.0.apply(&plan.move_edit())?;
                g.1.trivial_moves += 1;
                self.changed.notify_all();
                continue;
            }
            let ids = plan.input_bytes() / plan.target_file_size.max(1) + 64;
            let first = self.next_id.fetch_add(ids, Ordering::Relaxed);
            let mut spec =
                CompactionSpec::from_plan(table()?, &plan, (first..first + ids).collect());
            spec.grandparent_bounds = grandparents;
            let store = Arc::new(StorageSstStore::new(
                storage.clone(),
                rt.handle().clone(),
                table()?,
                readahead_for(spec.input_count()),
            ));
            let c = compact(
                &store,
                &spec,
                &MergeOptions {
                    sst_options: s.sst_options(),
                    ..MergeOptions::default()
                },
                &Control::default(),
            )?;
            if c.consumed.is_some() {
                bail!("compaction preempted: {}", plan.reason);
            }
            {
                let mut g = lock(self);
                let (version, counts) = &mut *g;
                counts.peak_space = counts.peak_space.max(live_bytes(version) + c.bytes_written);
                counts.compactions += 1;
                counts.compaction_read += c.bytes_read;
                counts.compaction_written += c.bytes_written;
                *version =
                    version.apply(&plan.edit(c.outputs.iter().map(|o| o.manifest_meta())))?;
                self.changed.notify_all();
            }
            for (_, f) in plan.input_files() {
                std::fs::remove_file(sst_path(root, f.id)?)?;
            }
        }
    }
}

/// P3 and P4: the entries file through our tree with `strategy` (see the module docs).
pub fn tree(s: &Settings, leveled: bool, entries: &Path, root: &Path) -> anyhow::Result<Figures> {
    let strategy = if leveled {
        Strategy::LevelBased(s.level_config())
    } else {
        Strategy::SizeTiered(s.size_tiered_config())
    };
    let rt = runtime()?;
    let storage = Storage::local(root)?;
    let tree = Tree {
        version: Mutex::new((Version::new(7), TreeCounts::default())),
        changed: std::sync::Condvar::new(),
        done: std::sync::atomic::AtomicBool::new(false),
        next_id: AtomicU64::new(1),
    };
    let sampler = sys::SpaceSampler::start(root.to_path_buf(), Duration::from_millis(20));
    let mut reader = EntryReader::open(entries)?;
    let start = Instant::now();
    let (load_s, compacted) = std::thread::scope(|scope| {
        let compactor = scope.spawn(|| tree.compact_loop(s, &strategy, root, &storage, &rt));
        let written = (|| -> anyhow::Result<f64> {
            let mut seq = 1;
            let mut memtable = Arc::new(Memtable::new(1));
            while let Some(e) = reader.next_entry()? {
                memtable.insert(&e.key, seq, ValueKind::Put, &e.value)?;
                seq += 1;
                if memtable.approximate_memory_usage() as u64 >= s.memtable_bytes {
                    memtable.freeze();
                    tree.add_l0(s, root, &memtable)?;
                    memtable = Arc::new(Memtable::new(seq));
                }
            }
            let load_s = start.elapsed().as_secs_f64();
            if !memtable.is_empty() {
                memtable.freeze();
                tree.add_l0(s, root, &memtable)?;
            }
            Ok(load_s)
        })();
        tree.done.store(true, Ordering::Release);
        tree.changed.notify_all();
        let compacted = compactor
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("compaction thread panicked")));
        (written, compacted)
    });
    let load_s = load_s?;
    compacted?;
    let took = start.elapsed();
    let g = lock(&tree);
    let (version, c) = &*g;
    let sampled = sampler.stop(c.peak_space);
    let user = reader.entries * ENTRY_BYTES;
    let mut f = tree_figures(TreeTotals {
        entries: reader.entries,
        distinct: s.p3_load_keys,
        flushed: c.flushed_bytes,
        compaction_written: c.compaction_written,
        peak_space: sampled,
        live_end: live_bytes(version),
        took,
        load_s,
    });
    f.insert("flushes".into(), c.flushes as f64);
    f.insert("compactions".into(), c.compactions as f64);
    f.insert("trivial_moves".into(), c.trivial_moves as f64);
    f.insert("write_stalls".into(), c.stalls as f64);
    f.insert("compaction_read_bytes".into(), c.compaction_read as f64);
    f.insert("peak_space_exact_bytes".into(), c.peak_space as f64);
    f.insert("user_bytes".into(), user as f64);
    for (i, l) in version.levels.iter().enumerate() {
        f.insert(format!("files_l{i}"), l.len() as f64);
    }
    Ok(f)
}

/// Totals of a tree run, either engine.
pub struct TreeTotals {
    pub entries: u64,
    pub distinct: u64,
    pub flushed: u64,
    pub compaction_written: u64,
    pub peak_space: u64,
    pub live_end: u64,
    pub took: Duration,
    pub load_s: f64,
}

/// P3/P4 figures: write amplification = (flush + compaction bytes written) / bytes flushed;
/// space amplification = peak SST bytes / live bytes, where live bytes are the distinct
/// keys' user bytes (the same figure for both engines).
pub fn tree_figures(t: TreeTotals) -> Figures {
    let live = t.distinct * ENTRY_BYTES;
    Figures::from([
        ("entries".into(), t.entries as f64),
        ("flushed_bytes".into(), t.flushed as f64),
        (
            "compaction_written_bytes".into(),
            t.compaction_written as f64,
        ),
        (
            "write_amp".into(),
            (t.flushed + t.compaction_written) as f64 / t.flushed.max(1) as f64,
        ),
        ("peak_space_bytes".into(), t.peak_space as f64),
        ("live_bytes".into(), live as f64),
        ("space_amp".into(), t.peak_space as f64 / live.max(1) as f64),
        ("sst_bytes_at_end".into(), t.live_end as f64),
        ("time_to_quiesce_s".into(), t.took.as_secs_f64()),
        ("load_s".into(), t.load_s),
    ])
}

/// P5 preparation: the entries file appended to our WAL under `root`, one put per batch.
/// Appends are submitted 1000 at a time, as concurrent clients would (the writer's group
/// commit then fills its segments). Returns (entries, WAL bytes).
pub fn p5_prepare(entries: &Path, root: &Path) -> anyhow::Result<(u64, u64)> {
    let rt = runtime()?;
    std::fs::create_dir_all(root)?;
    let storage = Storage::local(root)?;
    let mut reader = EntryReader::open(entries)?;
    rt.block_on(async {
        let writer =
            wal::WalWriter::open(storage.clone(), TABLE, wal::WalWriterConfig::default()).await?;
        loop {
            let group = reader.take(1000)?;
            if group.is_empty() {
                break;
            }
            let appends = group.iter().map(|e| {
                let mut b = wal::WriteBatch::with_capacity(128);
                b.put(e.key, e.value);
                writer.append(b)
            });
            for r in futures::future::join_all(appends).await {
                r?;
            }
        }
        drop(writer);
        anyhow::Ok(())
    })?;
    Ok((reader.entries, dir_bytes(root, ".wal")))
}

/// P5: one replay of the whole log into a fresh table state (as the replayer runs it:
/// memtables frozen at 80% of 64 MiB, none ever flushed).
pub fn p5_replay(root: &Path) -> anyhow::Result<Figures> {
    let rt = runtime()?;
    let storage = Storage::local(root)?;
    let (start, cpu0) = (Instant::now(), sys::cpu_time());
    let (stats, out) = replay(&rt, &storage, (64 << 20) * 8 / 10, usize::MAX)?;
    let (took, cpu) = (start.elapsed(), sys::cpu_time().saturating_sub(cpu0));
    if !matches!(out, PassOutcome::CaughtUp { .. }) {
        bail!("replay did not catch up: {out:?}");
    }
    Ok(replay_figures(stats.entries, took, cpu))
}

/// P5's figures, either engine (throughput in user bytes replayed).
pub fn replay_figures(entries: u64, took: Duration, cpu: Duration) -> Figures {
    Figures::from([
        ("entries".into(), entries as f64),
        ("replay_s".into(), took.as_secs_f64()),
        (
            "replay_mb_s".into(),
            mb(entries * ENTRY_BYTES) / took.as_secs_f64(),
        ),
        ("replay_cpu_s".into(), cpu.as_secs_f64()),
    ])
}

fn replay(
    rt: &tokio::runtime::Runtime,
    storage: &Storage,
    freeze_bytes: u64,
    max_frozen: usize,
) -> anyhow::Result<(PassStats, PassOutcome)> {
    let state = Mutex::new(TableState::new(TABLE, 0, 1, 0));
    let ids = AtomicU64::new(2);
    // What the service reads with: holes between segments checked.
    let checks = wal::ReadChecks {
        skip: Vec::new(),
        holes: Some(Default::default()),
    };
    let input = PassInput {
        storage,
        table: TABLE,
        mode: wal::RecoveryMode::TolerateCorruptedTail,
        batch_size: 1000,
        limits: Limits {
            freeze_bytes,
            max_age_ms: i64::MAX,
            max_frozen,
        },
        last_read: None,
        checks: &checks,
        ids: &ids,
        now_ms: &|| 0,
    };
    let mut frozen = Vec::new();
    let mut stats = PassStats::default();
    let out = rt.block_on(pass(&input, &state, &mut frozen, &mut stats));
    // Freeing the memtables is not part of the replay.
    std::mem::forget(state);
    std::mem::forget(frozen);
    Ok((stats, out))
}

/// P7: the replayer under steady load until backpressure stalls it: memtables of
/// `p7_memtable_bytes` frozen at 80%, at most 4 frozen; RSS growth over the budget of 5
/// memtables (4 frozen plus the active one).
pub fn p7_memory(s: &Settings, root: &Path) -> anyhow::Result<Figures> {
    let rt = runtime()?;
    let storage = Storage::local(root)?;
    // What a first pass allocates once (runtime, listing) stays out of the growth.
    rt.block_on(async {
        wal::WalReader::open(&storage, TABLE)
            .await
            .map(|r| r.segments().len())
    })?;
    let baseline = sys::rss_bytes();
    let peak0 = sys::peak_rss_bytes();
    let freeze = s.p7_memtable_bytes * 8 / 10;
    let (stats, out) = replay(&rt, &storage, freeze, 4)?;
    let after = sys::rss_bytes();
    let budget = 5 * freeze;
    let growth = after.saturating_sub(baseline);
    let peak_growth = sys::peak_rss_bytes().max(peak0).saturating_sub(baseline);
    Ok(Figures::from([
        ("entries".into(), stats.entries as f64),
        (
            "stalled".into(),
            f64::from(u8::from(matches!(out, PassOutcome::Stalled))),
        ),
        ("budget_bytes".into(), budget as f64),
        ("rss_growth_bytes".into(), growth as f64),
        ("rss_over_budget".into(), growth as f64 / budget as f64),
        (
            "peak_rss_growth_over_budget".into(),
            peak_growth as f64 / budget as f64,
        ),
    ]))
}
