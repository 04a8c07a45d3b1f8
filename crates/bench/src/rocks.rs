//! RocksDB's side of every workload (RocksDB 10.4 through the `rocksdb` crate 0.24), with
//! the same settings as ours: 4 KiB blocks, full bloom filter at 10 bits/key, CRC32C block
//! checksums, no compression, the same memtable / file / level sizes, one background job.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rocksdb::statistics::Ticker;
use rocksdb::{
    BlockBasedOptions, Cache, ChecksumType, DB, DBCompactionStyle, DBCompressionType, Env,
    FlushOptions, Options, UniversalCompactOptions, WriteBatch, WriteOptions,
};

use crate::data::{EntryReader, dir_bytes};
use crate::ours::{TreeTotals, compaction_figures, flush_figures, replay_figures, tree_figures};
use crate::settings::Settings;
use crate::{Figures, sys};

/// Options shared by every workload: table format, no compression, one background job.
fn base_options(s: &Settings) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_size(s.block_size);
    table.set_bloom_filter(f64::from(s.bloom_bits_per_key), false);
    table.set_checksum_type(ChecksumType::CRC32c);
    let mut o = Options::default();
    o.create_if_missing(true);
    o.set_compression_type(DBCompressionType::None);
    o.set_block_based_table_factory(&table);
    o.set_max_background_jobs(1);
    o
}

fn no_wal() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.disable_wal(true);
    w
}

fn int_property(db: &DB, name: &str) -> anyhow::Result<u64> {
    db.property_int_value(name)?
        .with_context(|| format!("rocksdb property {name}"))
}

/// Writes `entries` (WAL off) in batches of 1000.
fn write_all(db: &DB, entries: &[crate::data::Entry]) -> anyhow::Result<()> {
    for chunk in entries.chunks(1000) {
        let mut batch = WriteBatch::default();
        for e in chunk {
            batch.put(e.key, e.value);
        }
        db.write_opt(batch, &no_wal())?;
    }
    Ok(())
}

/// P1: fillseq-style writes with the WAL and auto compactions off into a memtable large
/// enough to hold one P1 memtable's entries (not timed), then `flush` (wait; timed, with
/// the process's CPU time meanwhile), `p1_memtables` times.
pub fn p1_flush(s: &Settings, entries: &Path, work: &Path) -> anyhow::Result<Figures> {
    let mut o = base_options(s);
    o.set_disable_auto_compactions(true);
    o.set_write_buffer_size((s.p1_memtable_bytes * 4) as usize);
    let db = DB::open(&o, work)?;
    let mut reader = EntryReader::open(entries)?;
    let (mut took, mut cpu) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..s.p1_memtables {
        let batch = reader.take(s.p1_entries_per_memtable())?;
        write_all(&db, &batch)?;
        drop(batch);
        let mut f = FlushOptions::default();
        f.set_wait(true);
        let (start, cpu0) = (Instant::now(), sys::cpu_time());
        db.flush_opt(&f)?;
        took += start.elapsed();
        cpu += sys::cpu_time().saturating_sub(cpu0);
    }
    let files = int_property(&db, "rocksdb.num-files-at-level0")?;
    if files != s.p1_memtables {
        bail!("rocksdb: {files} L0 files after {} flushes", s.p1_memtables);
    }
    drop(db);
    Ok(flush_figures(
        reader.entries,
        took,
        cpu,
        dir_bytes(work, ".sst"),
    ))
}

/// P2 preparation: a template DB whose L0 holds one file per chunk of the entries file
/// (the same chunks as ours), written with the WAL off and flushed chunk by chunk.
pub fn p2_prepare(s: &Settings, entries: &Path, dir: &Path) -> anyhow::Result<u64> {
    let mut o = base_options(s);
    o.set_disable_auto_compactions(true);
    o.set_level_zero_file_num_compaction_trigger(1 << 20);
    o.set_level_zero_slowdown_writes_trigger(1 << 20);
    o.set_level_zero_stop_writes_trigger(1 << 20);
    o.set_write_buffer_size((s.p2_file_bytes * 4 + (16 << 20)) as usize);
    let db = DB::open(&o, dir)?;
    let mut reader = EntryReader::open(entries)?;
    for _ in 0..s.p2_files {
        let batch = reader.take(s.p2_entries_per_file())?;
        write_all(&db, &batch)?;
        db.flush()?;
    }
    let files = int_property(&db, "rocksdb.num-files-at-level0")?;
    if files != s.p2_files {
        bail!("rocksdb template: {files} L0 files, wanted {}", s.p2_files);
    }
    Ok(reader.entries)
}

/// A fresh copy of a closed DB: SSTs (immutable) hard-linked, the rest copied.
fn copy_db(from: &Path, to: &Path, link_ssts: bool) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if link_ssts && entry.path().extension().is_some_and(|x| x == "sst") {
            std::fs::hard_link(entry.path(), &dest)?;
        } else if entry.file_type()?.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}

/// P2: a copy of the template (not timed), opened with `max_subcompactions` and a
/// compaction pool of that many threads; `compact_range` of everything, timed.
pub fn p2_compact(
    s: &Settings,
    template: &Path,
    work: &Path,
    threads: u32,
) -> anyhow::Result<Figures> {
    copy_db(template, work, true)?;
    let input_bytes = dir_bytes(work, ".sst");
    let mut o = base_options(s);
    o.set_disable_auto_compactions(true);
    o.set_target_file_size_base(64 << 20);
    o.set_max_subcompactions(threads);
    // A second subcompaction takes a second thread of the compaction pool.
    o.set_max_background_jobs(threads.max(1) as i32 + 1);
    o.enable_statistics();
    let db = DB::open(&o, work)?;
    let (start, cpu0) = (Instant::now(), sys::cpu_time());
    db.compact_range(None::<&[u8]>, None::<&[u8]>);
    let (took, cpu) = (start.elapsed(), sys::cpu_time().saturating_sub(cpu0));
    if int_property(&db, "rocksdb.num-files-at-level0")? != 0 {
        bail!("rocksdb: L0 not empty after compact_range");
    }
    let written = o.get_ticker_count(Ticker::CompactWriteBytes);
    drop(db);
    // Entries in and out from the LOG's `compaction_finished` event (what RocksDB itself
    // counted), so the report can compare them with ours.
    let log = std::fs::read_to_string(work.join("LOG")).unwrap_or_default();
    let input_records = log_field(&log, "compaction_finished", "num_input_records")
        .context("rocksdb LOG: no num_input_records in compaction_finished")?;
    let output_entries =
        log_field(&log, "compaction_finished", "num_output_records").unwrap_or_default();
    // Throughput counts the entries written into the template (the same entries file as
    // ours). RocksDB's flushes already dropped the versions shadowed inside one memtable,
    // which ours keep until compaction: its compaction reads `input_records` of them.
    let entries = s.p2_files * s.p2_entries_per_file();
    let mut f = compaction_figures(entries, output_entries, input_bytes, written, took, cpu);
    f.insert("compaction_input_records".into(), input_records as f64);
    Ok(f)
}

/// P3 (`leveled`) and P4 (universal): the entries file written with the WAL off into a DB
/// with the workload's settings, then a flush and a wait until no flush or compaction is
/// pending or running. Write amplification from the statistics' flush and compaction
/// write bytes; peak space by sampling the directory's SST bytes every 20 ms.
pub fn tree(s: &Settings, leveled: bool, entries: &Path, work: &Path) -> anyhow::Result<Figures> {
    let mut o = base_options(s);
    o.set_write_buffer_size(s.memtable_bytes as usize);
    o.set_target_file_size_base(s.target_file_bytes);
    o.set_level_zero_file_num_compaction_trigger(s.l0_trigger as i32);
    if leveled {
        o.set_compaction_style(DBCompactionStyle::Level);
        o.set_level_compaction_dynamic_level_bytes(true);
        o.set_max_bytes_for_level_base(s.base_level_bytes);
        o.set_max_bytes_for_level_multiplier(s.level_multiplier);
    } else {
        o.set_compaction_style(DBCompactionStyle::Universal);
        let mut u = UniversalCompactOptions::default();
        u.set_size_ratio(1);
        u.set_min_merge_width(2);
        u.set_max_size_amplification_percent(200);
        o.set_universal_compaction_options(&u);
    }
    o.enable_statistics();
    let db = DB::open(&o, work)?;
    let sampler = sys::SpaceSampler::start(work.to_path_buf(), Duration::from_millis(20));
    let mut reader = EntryReader::open(entries)?;
    let start = Instant::now();
    let w = no_wal();
    while let Some(e) = reader.next_entry()? {
        db.put_opt(e.key, e.value, &w)?;
    }
    let load_s = start.elapsed().as_secs_f64();
    db.flush()?;
    let took = wait_until_quiet(&db)?.duration_since(start);
    let peak = sampler.stop(0);
    let flushed = o.get_ticker_count(Ticker::FlushWriteBytes);
    let compaction_written = o.get_ticker_count(Ticker::CompactWriteBytes);
    let live_end = int_property(&db, "rocksdb.live-sst-files-size")?;
    let mut levels = Vec::new();
    for l in 0..7 {
        levels.push(int_property(
            &db,
            &format!("rocksdb.num-files-at-level{l}"),
        )?);
    }
    drop(db);
    let mut f = tree_figures(TreeTotals {
        entries: reader.entries,
        distinct: s.p3_load_keys,
        flushed,
        compaction_written,
        peak_space: peak,
        live_end,
        took,
        load_s,
    });
    for (i, n) in levels.iter().enumerate() {
        f.insert(format!("files_l{i}"), *n as f64);
    }
    Ok(f)
}

/// Waits until no flush or compaction runs or is pending; returns when that began.
///
/// Universal compaction can report `compaction-pending` while its picker finds nothing to
/// do (as many sorted runs as the trigger allows, none eligible): nothing running and no
/// flush pending for a whole second also counts as quiet, from the start of that second.
fn wait_until_quiet(db: &DB) -> anyhow::Result<Instant> {
    let mut idle_since: Option<Instant> = None;
    loop {
        let running = int_property(db, "rocksdb.num-running-compactions")?
            + int_property(db, "rocksdb.num-running-flushes")?
            + int_property(db, "rocksdb.mem-table-flush-pending")?;
        let now = Instant::now();
        if running == 0 {
            if int_property(db, "rocksdb.compaction-pending")? == 0 {
                return Ok(now);
            }
            let since = *idle_since.get_or_insert(now);
            if now.duration_since(since) >= Duration::from_secs(1) {
                return Ok(since);
            }
        } else {
            idle_since = None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// P5 preparation, run in a child that the parent kills with SIGKILL once it prints
/// `ready`: every entry written as its own put with the WAL on (not synced) into a DB
/// whose memtable holds the whole log, so nothing is flushed.
pub fn p5_write(s: &Settings, entries: &Path, dir: &Path) -> anyhow::Result<u64> {
    let mut o = base_options(s);
    o.set_disable_auto_compactions(true);
    o.set_write_buffer_size(memtable_for_log(s));
    let db = DB::open(&o, dir)?;
    let mut reader = EntryReader::open(entries)?;
    while let Some(e) = reader.next_entry()? {
        db.put(e.key, e.value)?;
    }
    if dir_bytes(dir, ".sst") != 0 {
        bail!("rocksdb flushed while writing the log");
    }
    // Left open on purpose: the parent kills this process.
    std::mem::forget(db);
    Ok(reader.entries)
}

/// A memtable that holds all of P5's log (entries plus the skiplist's overhead).
fn memtable_for_log(s: &Settings) -> usize {
    (s.p5_entries() * 300 + (64 << 20)) as usize
}

/// After the writer was killed: turns on `avoid_flush_during_recovery` in the newest
/// OPTIONS file (the 0.24 crate has no setter), so a reopen replays into the memtable only.
pub fn p5_patch_options(dir: &Path) -> anyhow::Result<()> {
    let latest = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| Some((n.strip_prefix("OPTIONS-")?.parse::<u64>().ok()?, n)))
        .max()
        .map(|(_, n)| dir.join(n))
        .context("no OPTIONS file in the killed DB")?;
    let text = std::fs::read_to_string(&latest)?;
    let patched = text.replace(
        "avoid_flush_during_recovery=false",
        "avoid_flush_during_recovery=true",
    );
    if patched == text {
        bail!(
            "avoid_flush_during_recovery not found in {}",
            latest.display()
        );
    }
    std::fs::write(&latest, patched)?;
    Ok(())
}

/// P5: a copy of the killed DB (not timed), reopened with its stored options: `DB::open`
/// replays the WAL into the memtable (timed). Entries from the memtable counters.
pub fn p5_replay(template: &Path, work: &Path) -> anyhow::Result<Figures> {
    copy_db(template, work, false)?;
    let env = Env::new()?;
    let (options, cfs) = Options::load_latest(work, env, false, Cache::new_lru_cache(8 << 20))?;
    let (start, cpu0) = (Instant::now(), sys::cpu_time());
    let db = DB::open_cf_descriptors(&options, work, cfs)?;
    let (took, cpu) = (start.elapsed(), sys::cpu_time().saturating_sub(cpu0));
    if dir_bytes(work, ".sst") != 0 {
        bail!("rocksdb flushed during recovery");
    }
    let entries = int_property(&db, "rocksdb.num-entries-active-mem-table")?
        + int_property(&db, "rocksdb.num-entries-imm-mem-tables")?;
    std::mem::forget(db); // freeing the memtable is not part of the replay
    Ok(replay_figures(entries, took, cpu))
}

/// The number `"field": N` of the last `event` in a RocksDB LOG.
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
