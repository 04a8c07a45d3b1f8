//! Model-based tests of compaction, one per picker strategy.
//!
//! A seeded random workload of puts, overwrites and deletes is flushed batch by batch into
//! L0 SSTs (in memory). After every flush the real picker
//! ([`lsm::compaction::pick`]) runs over the table's [`Version`], as the scheduler runs it:
//! trivial moves are applied as [`CompactionPlan::move_edit`], every other plan is executed
//! by [`compactor::merge::compact`] (the function the CompactLevel RPC runs, here with one
//! or several subcompaction threads) and committed as [`CompactionPlan::edit`] of its
//! outputs, after which the inputs are deleted (as Cleanup would). After every commit:
//!
//! - (a) the merged view of every file (newest version per key, tombstones hidden) equals
//!   a `BTreeMap` model of the writes;
//! - (b) [`Version::check`] passes (levels ≥ 1 sorted and not overlapping), and every
//!   file's metadata matches its content;
//! - (c) no tombstone written by a bottommost compaction hides nothing: each such tombstone
//!   still in the table has an older version of its key in another file (with no
//!   snapshots, a bottommost compaction keeps no tombstone at all);
//!
//! and the store holds exactly the version's files (no output leaked, no input kept).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use compactor::merge::{Compacted, Control, MergeOptions, compact};
use compactor::request::CompactionSpec;
use compactor::store::MemorySstStore;
use compactor::testing::{Entry, build_sst, read_sst};
use lsm::compaction::{CompactionPlan, LevelConfig, PickerInput, SizeTieredConfig, Strategy, pick};
use lsm::manifest::{FileMeta, Version, VersionEdit};
use lsm::{BoxedIterator, MAX_SEQNO, MergingIterator, SeqNo, VisibleIterator};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sst::{SstOptions, SstReader};
use storage::TableName;

type Model = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The workload and the checks of one run.
struct Run {
    strategy: Strategy,
    version: Version,
    store: Arc<MemorySstStore>,
    model: Model,
    rng: StdRng,
    seq: SeqNo,
    next_id: u64,
    /// Files written by bottommost compactions.
    bottommost_outputs: BTreeSet<u64>,
    stats: RunStats,
}

#[derive(Debug, Default)]
struct RunStats {
    compactions: usize,
    bottommost: usize,
    trivial_moves: usize,
    multi_range: usize,
    outputs: usize,
    tombstones_dropped: u64,
    shadowed_dropped: u64,
    deepest_level: usize,
}

const KEYS: u32 = 2000;
const FLUSHES: usize = 200;
const WRITES_PER_FLUSH: usize = 50;

fn table() -> TableName {
    TableName::new("model").expect("valid name")
}

impl Run {
    fn new(strategy: Strategy, levels: usize, seed: u64) -> Self {
        Self {
            strategy,
            version: Version::new(levels),
            store: Arc::new(MemorySstStore::new(table())),
            model: Model::new(),
            rng: StdRng::seed_from_u64(seed),
            seq: 0,
            next_id: 1,
            bottommost_outputs: BTreeSet::new(),
            stats: RunStats::default(),
        }
    }

    fn allocate(&mut self, n: u64) -> Vec<u64> {
        let ids = (self.next_id..self.next_id + n).collect();
        self.next_id += n;
        ids
    }

    /// One memtable's worth of writes, every version kept (as a flush writes them), as a
    /// new L0 file.
    fn flush(&mut self) {
        let mut entries: Vec<Entry> = Vec::with_capacity(WRITES_PER_FLUSH);
        for _ in 0..WRITES_PER_FLUSH {
            self.seq += 1;
            // Skewed towards a hot set, so keys get overwritten often.
            let key = if self.rng.random_bool(0.3) {
                self.rng.random_range(0..KEYS / 20)
            } else {
                self.rng.random_range(0..KEYS)
            };
            let key = format!("key{key:06}").into_bytes();
            let value = (!self.rng.random_bool(0.2)).then(|| {
                let len = self.rng.random_range(0..60);
                let mut v = format!("{}:", self.seq).into_bytes();
                v.resize(v.len() + len, b'v');
                v
            });
            self.model.insert(key.clone(), value.clone());
            entries.push((key, self.seq, value));
        }
        let id = self.allocate(1)[0];
        let (meta, bytes) = build_sst(id, entries, SstOptions::default()).expect("flushed sst");
        self.store.insert(id, bytes);
        let edit = VersionEdit {
            removed: Vec::new(),
            added: vec![(0, meta)],
        };
        self.commit(&edit, "flush");
    }

    /// Picks and runs compactions until the picker proposes none.
    fn compact_until_quiet(&mut self) {
        for _ in 0..100 {
            let none = BTreeSet::new();
            let plans = pick(
                &self.strategy,
                &PickerInput {
                    version: &self.version,
                    locked: &none,
                },
            )
            .plans;
            if plans.is_empty() {
                return;
            }
            // The plans of one pick are independent: all of them commit, in order.
            for plan in plans {
                if plan.trivial_move {
                    self.stats.trivial_moves += 1;
                    self.commit(&plan.move_edit(), &plan.reason);
                } else {
                    self.run_plan(&plan);
                }
            }
        }
        panic!("the picker never settles");
    }

    /// Executes a plan with the compactor's merge and commits it.
    fn run_plan(&mut self, plan: &CompactionPlan) {
        // As the scheduler allocates: twice the inputs over the target, plus 16.
        let ids = 2 * plan.input_bytes().div_ceil(plan.target_file_size.max(1)) + 16;
        let ids = self.allocate(ids);
        let spec = CompactionSpec::from_plan(table(), plan, ids);
        let threads = if self.rng.random_bool(0.5) { 1 } else { 3 };
        let options = MergeOptions {
            threads,
            min_subcompaction_bytes: 1,
            ..MergeOptions::default()
        };
        let compacted: Compacted = compact(&self.store, &spec, &options, &Control::default())
            .unwrap_or_else(|e| panic!("{}: {e}", plan.reason));

        let s = compacted.stats;
        assert_eq!(
            s.input_entries,
            plan.input_files().map(|(_, f)| f.entries).sum::<u64>(),
            "{}: every input entry is read",
            plan.reason
        );
        assert_eq!(
            s.input_entries,
            s.output_entries + s.shadowed_dropped + s.tombstones_dropped
        );
        self.stats.compactions += 1;
        self.stats.outputs += compacted.outputs.len();
        self.stats.tombstones_dropped += s.tombstones_dropped;
        self.stats.shadowed_dropped += s.shadowed_dropped;
        if compacted.subcompactions > 1 {
            self.stats.multi_range += 1;
        }
        if plan.bottommost {
            self.stats.bottommost += 1;
            self.bottommost_outputs
                .extend(compacted.outputs.iter().map(|o| o.file_id));
        }
        // Only the last output of a range may be below the target.
        if compacted.subcompactions == 1 {
            let cut = compacted.outputs.len().saturating_sub(1);
            for o in &compacted.outputs[..cut] {
                assert!(
                    o.size >= plan.target_file_size,
                    "{}: output {} of {} bytes is not the last",
                    plan.reason,
                    o.file_id,
                    o.size
                );
            }
        }
        let edit = plan.edit(compacted.outputs.iter().map(|o| o.manifest_meta()));
        self.commit(&edit, &plan.reason);
    }

    /// Applies an edit, deletes the files it removed (as Cleanup does once no version
    /// references them), and checks every invariant.
    fn commit(&mut self, edit: &VersionEdit, what: &str) {
        self.version = self
            .version
            .apply(edit)
            .unwrap_or_else(|e| panic!("{what}: the edit does not apply: {e}"));
        let live = self.version.file_ids();
        for (_, id) in &edit.removed {
            if !live.contains(id) {
                self.store.remove(*id);
            }
        }
        let deepest = self
            .version
            .levels
            .iter()
            .rposition(|l| !l.is_empty())
            .unwrap_or(0);
        self.stats.deepest_level = self.stats.deepest_level.max(deepest);
        self.check(what);
    }

    fn check(&self, what: &str) {
        // (b) The version's shape, and the store holds exactly its files.
        self.version
            .check()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let stored: BTreeSet<u64> = self.store.file_ids().into_iter().collect();
        assert_eq!(
            stored,
            self.version.file_ids(),
            "{what}: store and version differ"
        );

        let files: Vec<(u32, &FileMeta, Vec<Entry>)> = self
            .version
            .levels
            .iter()
            .enumerate()
            .flat_map(|(l, files)| files.iter().map(move |f| (l as u32, f)))
            .map(|(l, f)| {
                let bytes = self.store.get(f.id).expect("stored");
                (l, f, read_sst(bytes).expect("readable"))
            })
            .collect();
        for (level, f, entries) in &files {
            check_meta(f, entries, &format!("{what}: L{level} file {}", f.id));
        }

        // (a) The merged view equals the model.
        let sources: Vec<BoxedIterator> = files
            .iter()
            .map(|(_, f, _)| {
                let reader =
                    SstReader::open(self.store.get(f.id).expect("stored"), f.id.to_string())
                        .expect("readable");
                Box::new(reader.iter()) as BoxedIterator
            })
            .collect();
        let mut view = VisibleIterator::new(MergingIterator::new(sources), MAX_SEQNO);
        view.seek_to_first().expect("seek");
        let mut seen: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        while view.valid() {
            seen.push((view.key().to_vec(), view.value().to_vec()));
            view.next().expect("next");
        }
        let expected: Vec<(Vec<u8>, Vec<u8>)> = self
            .model
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), v.clone())))
            .collect();
        if seen != expected {
            let first = seen
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(seen.len().min(expected.len()));
            panic!(
                "{what}: the merged view differs from the model at entry {first}: {:?} vs {:?} \
                 ({} vs {} live keys)",
                seen.get(first)
                    .map(|e| String::from_utf8_lossy(&e.0).into_owned()),
                expected
                    .get(first)
                    .map(|e| String::from_utf8_lossy(&e.0).into_owned()),
                seen.len(),
                expected.len()
            );
        }

        // (c) No tombstone from a bottommost compaction hides nothing.
        for (level, f, entries) in &files {
            if !self.bottommost_outputs.contains(&f.id) {
                continue;
            }
            for (key, seq, value) in entries {
                if value.is_some() {
                    continue;
                }
                let hides_something = files.iter().any(|(_, other, others)| {
                    other.id != f.id && others.iter().any(|(k, s, _)| k == key && s < seq)
                });
                assert!(
                    hides_something,
                    "{what}: L{level} file {} (bottommost output) keeps a tombstone of {:?}@{seq} \
                     with nothing older below it",
                    f.id,
                    String::from_utf8_lossy(key)
                );
            }
        }
    }
}

/// The metadata the manifest holds for a file matches the file.
fn check_meta(f: &FileMeta, entries: &[Entry], what: &str) {
    assert!(!entries.is_empty(), "{what}: an empty file");
    assert_eq!(f.entries, entries.len() as u64, "{what}: entries");
    let tombstones = entries.iter().filter(|e| e.2.is_none()).count() as u64;
    assert_eq!(f.tombstones, tombstones, "{what}: tombstones");
    assert_eq!(
        f.smallest.as_ref(),
        entries[0].0.as_slice(),
        "{what}: smallest"
    );
    assert_eq!(
        f.largest.as_ref(),
        entries[entries.len() - 1].0.as_slice(),
        "{what}: largest"
    );
    let seqs = entries.iter().map(|e| e.1);
    assert_eq!(
        (f.smallest_seq, f.largest_seq),
        (seqs.clone().min().unwrap_or(0), seqs.max().unwrap_or(0)),
        "{what}: seqs"
    );
}

fn run(strategy: Strategy, levels: usize, seed: u64) -> RunStats {
    let mut r = Run::new(strategy, levels, seed);
    for _ in 0..FLUSHES {
        r.flush();
        r.compact_until_quiet();
    }
    r.stats
}

/// Small sizes, so that 200 flushes of ~3 KiB fill several levels.
fn leveled(dynamic_level_bytes: bool) -> LevelConfig {
    LevelConfig {
        trigger_threshold: 4,
        max_bytes_for_level_base: 24 << 10,
        level_multiplier: 4.0,
        dynamic_level_bytes,
        num_levels: 5,
        target_file_size: 8 << 10,
        tombstone_ratio: 0.3,
        tombstone_min_entries: 20,
    }
}

const SEEDS: [u64; 3] = [1, 2, 3];

fn level_based(dynamic: bool) {
    for seed in SEEDS {
        let config = leveled(dynamic);
        let levels = config.num_levels as usize;
        let stats = run(Strategy::LevelBased(config), levels, seed);
        eprintln!("level_based dynamic={dynamic} seed={seed}: {stats:?}");
        assert!(stats.compactions >= 20, "{stats:?}");
        assert!(
            stats.bottommost > 0 && stats.tombstones_dropped > 0,
            "{stats:?}"
        );
        assert!(
            stats.shadowed_dropped > 0 && stats.multi_range > 0,
            "{stats:?}"
        );
        assert!(stats.trivial_moves > 0, "{stats:?}");
        assert!(
            stats.outputs > stats.compactions,
            "outputs are split: {stats:?}"
        );
        assert!(stats.deepest_level >= 3, "{stats:?}");
    }
}

#[test]
fn level_based_compaction_with_static_targets_keeps_the_model() {
    level_based(false);
}

#[test]
fn level_based_compaction_with_dynamic_targets_keeps_the_model() {
    level_based(true);
}

#[test]
fn size_tiered_compaction_keeps_the_model() {
    for seed in SEEDS {
        let config = SizeTieredConfig {
            min_threshold: 4,
            max_threshold: 8,
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_size: 8 << 10,
            tombstone_ratio: 0.3,
            tombstone_min_entries: 20,
        };
        let stats = run(Strategy::SizeTiered(config), 2, seed);
        eprintln!("size_tiered seed={seed}: {stats:?}");
        assert!(stats.compactions >= 20, "{stats:?}");
        assert!(
            stats.bottommost > 0 && stats.tombstones_dropped > 0,
            "{stats:?}"
        );
        assert!(
            stats.shadowed_dropped > 0 && stats.multi_range > 0,
            "{stats:?}"
        );
    }
}
