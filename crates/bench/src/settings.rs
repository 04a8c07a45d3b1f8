//! The settings both engines run with, and how `--scale` shrinks them.
//!
//! Issue #9 fixes one set of settings for both sides: 16-byte keys, 100-byte incompressible
//! values, no compression, CRC32C, 4 KiB blocks, 10 bits/key bloom, 64 MiB memtable, L0
//! trigger 4, base level 256 MiB × 10, 64 MiB target files, one background job. The full
//! sizes of P2–P4 do not fit a 15-minute run on two cores, so `scale` multiplies the key
//! counts *and* the size settings (memtable, target file, base level, size-tiered minimum)
//! by the same factor: the tree has the shape (files per level, levels, compactions per
//! flush) it would have at full size, with fewer bytes. P1 keeps the full memtable size
//! (it measures flushing one memtable) and scales the number of memtables; P5 has its own
//! size (`p5_wal_mib`).

use serde::{Deserialize, Serialize};

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// User bytes of one entry (key plus value).
pub const ENTRY_BYTES: u64 = (KEY_LEN + VALUE_LEN) as u64;
pub const MIB: u64 = 1 << 20;

/// Every size and count of one suite run (printed and written to the JSON).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Settings {
    /// The factor applied to P2–P4's key counts and size settings (1.0 = the sizes).
    pub scale: f64,
    /// Measured runs per engine (alternating ours / RocksDB).
    pub reps: usize,
    /// Seed of every generated key and value.
    pub seed: u64,
    pub block_size: usize,
    pub bloom_bits_per_key: u32,
    /// Memtable of P1 (full size: P1 measures one memtable's flush).
    pub p1_memtable_bytes: u64,
    /// Memtables flushed per P1 run.
    pub p1_memtables: u64,
    /// L0 files of P2.
    pub p2_files: u64,
    /// User bytes per P2 L0 file (= the scaled memtable).
    pub p2_file_bytes: u64,
    /// Memtable of P3 and P4 (scaled).
    pub memtable_bytes: u64,
    /// Target output file size (scaled).
    pub target_file_bytes: u64,
    /// Leveled: L0 file count that triggers a compaction.
    pub l0_trigger: u32,
    /// Leveled: base level target (scaled) and multiplier.
    pub base_level_bytes: u64,
    pub level_multiplier: f64,
    /// P3/P4: distinct keys loaded, then random overwrites.
    pub p3_load_keys: u64,
    pub p3_overwrites: u64,
    /// P4 (ours): size-tiered `min_threshold`; RocksDB universal `min_merge_width` is 2.
    pub p4_min_threshold: u32,
    /// P4 (ours): files below this size share one bucket (scaled 50 MiB).
    pub p4_min_sstable_bytes: u64,
    /// P5: WAL size to replay, about (single-put batches).
    pub p5_wal_bytes: u64,
    /// P6: tasks of the throughput phase, rate and length of the latency phase.
    pub p6_tasks: u64,
    pub p6_rate: u64,
    pub p6_seconds: u64,
    /// P7: memtable size of the replayer under load (frozen at 80%, 4 frozen at most).
    pub p7_memtable_bytes: u64,
}

impl Settings {
    /// The settings at `scale`, with P5's WAL of `p5_wal_mib` MiB.
    pub fn new(scale: f64, reps: usize, p1_memtables: u64, p5_wal_mib: u64) -> Self {
        let s = |bytes: u64| ((bytes as f64 * scale) as u64).max(64 << 10);
        let n = |count: u64| ((count as f64 * scale) as u64).max(1000);
        let p5_wal_bytes = p5_wal_mib * MIB;
        Self {
            scale,
            reps: reps.max(1),
            seed: 0x5eed_0009,
            block_size: 4096,
            bloom_bits_per_key: 10,
            p1_memtable_bytes: if scale >= 0.05 {
                64 * MIB
            } else {
                s(64 * MIB * 20)
            },
            p1_memtables: p1_memtables.max(1),
            p2_files: 36,
            p2_file_bytes: s(64 * MIB),
            memtable_bytes: s(64 * MIB),
            target_file_bytes: s(64 * MIB),
            l0_trigger: 4,
            base_level_bytes: s(256 * MIB),
            level_multiplier: 10.0,
            p3_load_keys: n(20_000_000),
            p3_overwrites: n(40_000_000),
            p4_min_threshold: 4,
            p4_min_sstable_bytes: s(50 * MIB),
            p5_wal_bytes,
            p6_tasks: if scale >= 0.005 { 5000 } else { 1000 },
            p6_rate: 1000,
            p6_seconds: if scale >= 0.05 { 5 } else { 2 },
            // The replayer's default memtable, unless P5's log is too small to fill the
            // budget of 5 memtables (then an eighth of the log).
            p7_memtable_bytes: (64 * MIB).min(p5_wal_bytes / 8).max(MIB),
        }
    }

    /// Entries of one P1 memtable (its user bytes fill the memtable size).
    pub fn p1_entries_per_memtable(&self) -> u64 {
        self.p1_memtable_bytes / ENTRY_BYTES
    }

    /// Entries of one P2 L0 file.
    pub fn p2_entries_per_file(&self) -> u64 {
        self.p2_file_bytes / ENTRY_BYTES
    }

    /// Puts in P5's log: its size over what one single-put record costs, about.
    pub fn p5_entries(&self) -> u64 {
        (self.p5_wal_bytes / (ENTRY_BYTES + 20)).max(1000)
    }

    /// Our leveled picker's configuration.
    pub fn level_config(&self) -> lsm::compaction::LevelConfig {
        lsm::compaction::LevelConfig {
            trigger_threshold: self.l0_trigger,
            max_bytes_for_level_base: self.base_level_bytes,
            level_multiplier: self.level_multiplier,
            dynamic_level_bytes: true,
            num_levels: 7,
            target_file_size: self.target_file_bytes,
            ..lsm::compaction::LevelConfig::default()
        }
    }

    /// Our size-tiered picker's configuration.
    pub fn size_tiered_config(&self) -> lsm::compaction::SizeTieredConfig {
        lsm::compaction::SizeTieredConfig {
            min_threshold: self.p4_min_threshold,
            min_sstable_size: self.p4_min_sstable_bytes,
            ..lsm::compaction::SizeTieredConfig::default()
        }
    }

    /// Our SST options (the same as RocksDB's table options in [`crate::rocks`]).
    pub fn sst_options(&self) -> sst::SstOptions {
        sst::SstOptions {
            block_size: self.block_size,
            bloom_bits_per_key: self.bloom_bits_per_key,
            ..sst::SstOptions::default()
        }
    }
}
