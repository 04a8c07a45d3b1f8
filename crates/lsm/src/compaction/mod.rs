//! Compaction pickers: which files of a table to merge next, and why.
//!
//! Vocabulary. A *picker* is a pure function over a *state view* ([`PickerInput`]: one
//! [`Version`] of the table and the ids of the files that running compactions hold) that
//! returns *plans* ([`CompactionPlan`]: which files to read, which level to write, what it
//! should cost) plus the reasons it passed over everything else ([`PickerOutput::skipped`]).
//! A plan is a proposal: the scheduler turns the ones it accepts into compaction *tasks*
//! (the durable decision), locks their input files, and commits each task's outputs as one
//! [`VersionEdit`]. Pickers read no clock, do no IO and keep no state between calls: the
//! scheduler calls them again after every commit, and operators call them for a "what-if"
//! view of the same decision.
//!
//! Two strategies ([`Strategy`]):
//! - [`level_based`] — RocksDB's leveled compaction (L0 file-count trigger, per-level size
//!   targets, static or dynamic, minimum-overlapping-ratio file choice, trivial moves).
//! - [`size_tiered`] — Cassandra's STCS (every file is a tier in L0; files of similar size
//!   are merged into one bigger file).
//!
//! Both add a lower-priority *tombstone trigger*: one file whose tombstones exceed a
//! fraction of its entries is rewritten alone so the space they hide can be reclaimed.
//!
//! The plans of one [`PickerOutput`] are in priority order and can all run at once: no file
//! is in two of them (nor in a running compaction), and no two of them write overlapping key
//! ranges into the same level. A running compaction is known only by its locked files, so
//! the picker is conservative about where it may be writing (see [`PickerInput`]).
//!
//! [`sim`] runs the pickers over a synthetic write stream to measure write and space
//! amplification offline.

mod level_based;
pub mod sim;
mod size_tiered;

#[cfg(test)]
mod test_util;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::manifest::{FileMeta, Version, VersionEdit};

pub use level_based::{LevelConfig, LevelTargets, level_based, level_targets};
pub use size_tiered::{SizeTieredConfig, size_tiered};

/// Entries a file needs before its tombstone ratio counts (a 10-entry file that is 60%
/// tombstones is not worth a compaction of its own).
pub const DEFAULT_TOMBSTONE_MIN_ENTRIES: u64 = 1000;

/// The state a picker decides on.
///
/// `locked` holds the ids of every file that a running compaction reads. A file is in at
/// most one running compaction, so locked files are never inputs. Where a running
/// compaction writes is inferred from its locked files: it writes into the level of its
/// locked files or the one below, within their key range, and an L0 compaction writes into
/// the base level within the range of the locked L0 files. A new plan that would write an
/// overlapping range into such a level is held back (conservatively: this can refuse a
/// plan that would in fact be safe, never the reverse).
#[derive(Debug, Clone, Copy)]
pub struct PickerInput<'a> {
    pub version: &'a Version,
    pub locked: &'a BTreeSet<u64>,
}

/// What a picker proposes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PickerOutput {
    /// In priority order; pairwise independent (see the module docs).
    pub plans: Vec<CompactionPlan>,
    /// Why levels, buckets or files were passed over, for operators.
    pub skipped: Vec<String>,
}

/// What made a picker propose a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trigger {
    /// L0 reached `trigger_threshold` files (leveled).
    L0FileCount,
    /// A level outgrew its target (leveled).
    LevelSize,
    /// A bucket of similar-sized files reached `min_threshold` (size-tiered).
    SizeTieredBucket,
    /// One file is mostly tombstones (both strategies).
    Tombstones,
}

/// One proposed compaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactionPlan {
    /// What triggered it (for metrics; `reason` says it in words).
    pub trigger: Trigger,
    /// Input files by level, shallowest level first; the first entry is the *start level*
    /// (the level whose score or trigger chose the plan). Levels without inputs are absent.
    pub inputs: Vec<(u32, Vec<FileMeta>)>,
    /// Level the outputs go to.
    pub output_level: u32,
    /// No file in a level below `output_level` (nor, for size-tiered, any other file)
    /// overlaps the inputs' key range: tombstones that hide nothing may be dropped.
    pub bottommost: bool,
    /// The inputs (one file, or L0 files that overlap nothing) move to `output_level` as
    /// they are, without a rewrite: see [`CompactionPlan::move_edit`].
    pub trivial_move: bool,
    /// Workers split outputs at this size (`u64::MAX`: one output file).
    pub target_file_size: u64,
    /// Human-readable trigger, e.g. `"L0 has 5 files >= trigger 4"`.
    pub reason: String,
    /// Urgency: `>= 1` for size- and count-triggered plans, the tombstone ratio for
    /// tombstone plans. The order of [`PickerOutput::plans`] is authoritative.
    pub score: f64,
    /// Bytes read: every input (0 for a trivial move).
    pub estimated_read_bytes: u64,
    /// Bytes written: an upper bound (duplicates are not known), less the tombstones of a
    /// bottommost compaction (0 for a trivial move).
    pub estimated_write_bytes: u64,
}

impl CompactionPlan {
    /// Level the plan was triggered from.
    pub fn start_level(&self) -> u32 {
        self.inputs.first().map_or(self.output_level, |(l, _)| *l)
    }

    /// Every input file with its level.
    pub fn input_files(&self) -> impl Iterator<Item = (u32, &FileMeta)> {
        self.inputs
            .iter()
            .flat_map(|(l, files)| files.iter().map(move |f| (*l, f)))
    }

    /// Ids of every input file (what the scheduler locks).
    pub fn input_ids(&self) -> Vec<u64> {
        self.input_files().map(|(_, f)| f.id).collect()
    }

    /// Bytes of every input file.
    pub fn input_bytes(&self) -> u64 {
        self.input_files().map(|(_, f)| f.size).sum()
    }

    /// Smallest and largest user key over all inputs.
    pub fn key_range(&self) -> Option<(&[u8], &[u8])> {
        hull(self.input_files().map(|(_, f)| f))
    }

    /// Bytes written per byte taken from the start level: how much this plan adds to the
    /// table's write amplification. 0 for a trivial move; about 1 for a size-tiered merge;
    /// `1 + overlap ratio` for a leveled Ln → Ln+1 compaction.
    pub fn estimated_write_amplification(&self) -> f64 {
        let start: u64 = self
            .inputs
            .first()
            .map_or(0, |(_, files)| files.iter().map(|f| f.size).sum());
        if start == 0 {
            0.0
        } else {
            self.estimated_write_bytes as f64 / start as f64
        }
    }

    /// The edit that commits this plan: remove every input, add `outputs` to the output
    /// level.
    pub fn edit(&self, outputs: impl IntoIterator<Item = FileMeta>) -> VersionEdit {
        VersionEdit {
            removed: self.input_files().map(|(l, f)| (l, f.id)).collect(),
            added: outputs
                .into_iter()
                .map(|f| (self.output_level, f))
                .collect(),
        }
    }

    /// The edit of a trivial move: the inputs re-levelled, unchanged.
    pub fn move_edit(&self) -> VersionEdit {
        self.edit(
            self.input_files()
                .map(|(_, f)| f.clone())
                .collect::<Vec<_>>(),
        )
    }
}

/// A strategy and its knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Strategy {
    LevelBased(LevelConfig),
    SizeTiered(SizeTieredConfig),
}

/// The largest user keys, ascending, of the files in the level below `output_level` that
/// `inputs` overlap (the *grandparents*): where a compaction's outputs should end to line
/// up with the files their next compaction meets (see the compactor's
/// `CompactionSpec::grandparent_bounds`). Empty when the output level is the last.
pub fn grandparent_bounds(
    version: &Version,
    inputs: &[(u32, Vec<FileMeta>)],
    output_level: u32,
) -> Vec<Vec<u8>> {
    let Some((start, end)) = hull(inputs.iter().flat_map(|(_, f)| f.iter())) else {
        return Vec::new();
    };
    let mut bounds: Vec<Vec<u8>> = version
        .overlapping(output_level as usize + 1, start, end)
        .into_iter()
        .map(|f| f.largest.to_vec())
        .collect();
    bounds.sort();
    bounds
}

/// Runs the strategy's picker.
pub fn pick(strategy: &Strategy, input: &PickerInput<'_>) -> PickerOutput {
    match strategy {
        Strategy::LevelBased(config) => level_based(config, input),
        Strategy::SizeTiered(config) => size_tiered(config, input),
    }
}

/// Smallest and largest user key of `files`.
fn hull<'a>(files: impl IntoIterator<Item = &'a FileMeta>) -> Option<(&'a [u8], &'a [u8])> {
    files.into_iter().fold(None, |acc, f| {
        let (s, l) = (f.smallest.as_ref(), f.largest.as_ref());
        Some(match acc {
            None => (s, l),
            Some((a, b)) => (a.min(s), b.max(l)),
        })
    })
}

/// Whether any file in a level deeper than `level` overlaps `[start, end]`.
fn overlaps_below(version: &Version, level: u32, start: &[u8], end: &[u8]) -> bool {
    version
        .levels
        .iter()
        .skip(level as usize + 1)
        .flatten()
        .any(|f| f.overlaps(start, end))
}

/// Fills in the estimates of a plan from its inputs.
fn estimate(plan: &mut CompactionPlan) {
    if plan.trivial_move {
        plan.estimated_read_bytes = 0;
        plan.estimated_write_bytes = 0;
        return;
    }
    let read = plan.input_bytes();
    let dropped = if plan.bottommost {
        plan.input_files()
            .map(|(_, f)| (f.size as f64 * f.tombstone_ratio()) as u64)
            .sum()
    } else {
        0
    };
    plan.estimated_read_bytes = read;
    plan.estimated_write_bytes = read.saturating_sub(dropped);
}

/// `"file 7"` / `"files 7, 9"`.
fn files_phrase(ids: impl IntoIterator<Item = u64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|id| id.to_string()).collect();
    match ids.len() {
        1 => format!("file {}", ids[0]),
        _ => format!("files {}", ids.join(", ")),
    }
}

/// `"1 file"` / `"3 files"`.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Sizes for people: `"430 MiB"`, `"1.5 GiB"`.
pub fn fmt_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.0} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.0} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::*;
    use super::*;

    #[test]
    fn plan_helpers() {
        let plan = CompactionPlan {
            trigger: Trigger::LevelSize,
            inputs: vec![
                (1, vec![file(1, "c", "f").mib(10)]),
                (
                    2,
                    vec![file(2, "a", "d").mib(10), file(3, "e", "k").mib(20)],
                ),
            ],
            output_level: 2,
            bottommost: false,
            trivial_move: false,
            target_file_size: 64 << 20,
            reason: String::new(),
            score: 1.0,
            estimated_read_bytes: 40 << 20,
            estimated_write_bytes: 40 << 20,
        };
        assert_eq!(plan.start_level(), 1);
        assert_eq!(plan.input_ids(), [1, 2, 3]);
        assert_eq!(plan.input_bytes(), 40 << 20);
        assert_eq!(plan.key_range(), Some((&b"a"[..], &b"k"[..])));
        assert!((plan.estimated_write_amplification() - 4.0).abs() < 1e-9);
        let edit = plan.edit([file(9, "a", "k").mib(38)]);
        assert_eq!(edit.removed, [(1, 1), (2, 2), (2, 3)]);
        assert_eq!(edit.added.len(), 1);
        assert_eq!(edit.added[0].0, 2);
    }

    #[test]
    fn grandparent_bounds_are_the_sorted_ends_of_the_overlapped_files_below_the_output() {
        let v = version(vec![
            (1, vec![file(1, "c", "f")]),
            (2, vec![file(2, "a", "d"), file(3, "e", "k")]),
            (
                3,
                vec![
                    file(6, "a", "b"),
                    file(4, "c", "e"),
                    file(5, "f", "h"),
                    file(7, "x", "z"),
                ],
            ),
        ]);
        let inputs = vec![
            (1, vec![file(1, "c", "f")]),
            (2, vec![file(2, "a", "d"), file(3, "e", "k")]),
        ];
        // L3 files overlapping [a, k]: a-b, c-e, f-h (not x-z).
        assert_eq!(
            grandparent_bounds(&v, &inputs, 2),
            [b"b".to_vec(), b"e".to_vec(), b"h".to_vec()]
        );
        // Into the last level: nothing below.
        assert!(grandparent_bounds(&v, &inputs[1..], 3).is_empty());
        assert!(grandparent_bounds(&v, &[], 2).is_empty());
    }

    #[test]
    fn bytes_for_people() {
        for (bytes, text) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (2048, "2 KiB"),
            (430 << 20, "430 MiB"),
            (3 << 29, "1.5 GiB"),
        ] {
            assert_eq!(fmt_bytes(bytes), text);
        }
    }

    #[test]
    fn pick_dispatches_on_the_strategy() {
        let v = version(vec![(0, (1..=4).map(|id| file(id, "a", "z")).collect())]);
        let locked = ids(&[]);
        let input = PickerInput {
            version: &v,
            locked: &locked,
        };
        let leveled = pick(&Strategy::LevelBased(LevelConfig::default()), &input);
        assert_eq!(leveled.plans.len(), 1);
        assert_eq!(leveled.plans[0].trigger, Trigger::L0FileCount);
        assert_eq!(leveled.plans[0].output_level, 6);
        let tiered = pick(&Strategy::SizeTiered(SizeTieredConfig::default()), &input);
        assert_eq!(tiered.plans.len(), 1);
        assert_eq!(tiered.plans[0].trigger, Trigger::SizeTieredBucket);
        assert_eq!(tiered.plans[0].output_level, 0);
    }
}

/// Properties over random versions: whatever the tree, plans never touch locked files or
/// share one, `bottommost` is true only when it may be, and the plans of one pick, with
/// or without a compaction already running, can all commit in any order.
#[cfg(test)]
mod properties {
    use proptest::prelude::{ProptestConfig, any, prop, prop_assert, prop_assert_eq, proptest};
    use proptest::strategy::Strategy as _;

    use super::test_util::*;
    use super::*;

    fn key(k: u32) -> String {
        format!("k{k:03}")
    }

    /// `(l0 files as (a, b, mib, tombstone %), deeper levels as sorted key points and sizes)`.
    type Shape = (Vec<(u32, u32, u64, u64)>, Vec<(Vec<u32>, Vec<u64>)>);

    fn shape() -> impl proptest::strategy::Strategy<Value = Shape> {
        let l0 = prop::collection::vec((0u32..200, 0u32..40, 1u64..400, 0u64..100), 0..8).prop_map(
            |v| {
                v.into_iter()
                    .map(|(a, len, mib, t)| (a, a + len, mib, t))
                    .collect()
            },
        );
        let level = (
            prop::collection::btree_set(0u32..200, 0..14),
            prop::collection::vec(1u64..3000, 7),
        )
            .prop_map(|(points, sizes)| (points.into_iter().collect(), sizes));
        (l0, prop::collection::vec(level, 6))
    }

    fn build((l0, deeper): Shape) -> Version {
        let mut id = 0;
        let mut next = || {
            id += 1;
            id
        };
        let mut levels = vec![(
            0,
            l0.into_iter()
                .map(|(a, b, mib, t)| {
                    file(next(), &key(a), &key(b))
                        .mib(mib)
                        .tombs(10_000, t * 100)
                })
                .collect(),
        )];
        for (l, (points, sizes)) in deeper.into_iter().enumerate() {
            let files = points
                .chunks_exact(2)
                .zip(sizes)
                .map(|(p, mib)| {
                    file(next(), &key(p[0]), &key(p[1]))
                        .mib(mib)
                        .tombs(10_000, mib % 10 * 1000)
                })
                .collect();
            levels.push((l as u32 + 1, files));
        }
        version(levels)
    }

    fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
        let leveled = (2u32..6, 32u64..512, 4u32..11, any::<bool>()).prop_map(
            |(trigger, base, mult, dynamic)| {
                Strategy::LevelBased(LevelConfig {
                    trigger_threshold: trigger,
                    max_bytes_for_level_base: base << 20,
                    level_multiplier: f64::from(mult),
                    dynamic_level_bytes: dynamic,
                    target_file_size: 64 << 20,
                    ..LevelConfig::default()
                })
            },
        );
        let tiered = (2u32..6, 0u64..100).prop_map(|(min, small)| {
            Strategy::SizeTiered(SizeTieredConfig {
                min_threshold: min,
                min_sstable_size: small << 20,
                ..SizeTieredConfig::default()
            })
        });
        proptest::prop_oneof![leveled, tiered]
    }

    /// The edit a plan commits, with one output file over the inputs' whole key range
    /// (the widest output a worker can produce).
    fn commit_edit(plan: &CompactionPlan, id: u64) -> VersionEdit {
        if plan.trivial_move {
            return plan.move_edit();
        }
        let (a, b) = plan.key_range().expect("plans have inputs");
        let seq = plan
            .input_files()
            .map(|(_, f)| f.largest_seq)
            .max()
            .unwrap_or(0);
        plan.edit([FileMeta {
            id,
            size: plan.estimated_write_bytes,
            smallest: a.to_vec().into(),
            largest: b.to_vec().into(),
            smallest_seq: 0,
            largest_seq: seq,
            entries: 1,
            tombstones: 0,
        }])
    }

    fn apply_all<'a>(
        mut v: Version,
        plans: impl IntoIterator<Item = &'a CompactionPlan>,
        next_id: &mut u64,
    ) -> Result<Version, String> {
        for plan in plans {
            *next_id += 1;
            v = v
                .apply(&commit_edit(plan, *next_id))
                .map_err(|e| format!("{}: {e}", plan.reason))?;
        }
        Ok(v)
    }

    fn check_plans(v: &Version, locked: &BTreeSet<u64>, out: &PickerOutput) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for plan in &out.plans {
            for id in plan.input_ids() {
                if locked.contains(&id) {
                    return Err(format!("{}: locked file {id}", plan.reason));
                }
                if !seen.insert(id) {
                    return Err(format!("{}: file {id} in two plans", plan.reason));
                }
            }
            let (a, b) = plan.key_range().ok_or("a plan without inputs")?;
            let level_based = plan.target_file_size != u64::MAX;
            let may_drop = if level_based {
                !overlaps_below(v, plan.output_level, a, b)
            } else {
                v.levels
                    .iter()
                    .flatten()
                    .filter(|f| f.overlaps(a, b))
                    .all(|f| plan.input_ids().contains(&f.id))
            };
            if plan.bottommost != may_drop {
                return Err(format!("{}: bottommost {}", plan.reason, plan.bottommost));
            }
            if plan.estimated_write_bytes > plan.estimated_read_bytes {
                return Err(format!("{}: writes more than it reads", plan.reason));
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn plans_are_safe_and_independent(
            shape in shape(),
            strategy in strategy(),
            lock_mask in any::<u64>(),
        ) {
            let v = build(shape);
            let mut next_id = 1000;

            // Random locks: no plan touches one.
            let locked: BTreeSet<u64> =
                v.file_ids().into_iter().filter(|id| lock_mask >> (id % 64) & 1 == 1).collect();
            let out = pick(&strategy, &PickerInput { version: &v, locked: &locked });
            prop_assert_eq!(check_plans(&v, &locked, &out), Ok(()));

            // Nothing running: every plan of one pick commits, in order.
            let none = BTreeSet::new();
            let first = pick(&strategy, &PickerInput { version: &v, locked: &none });
            prop_assert_eq!(check_plans(&v, &none, &first), Ok(()));
            prop_assert!(apply_all(v.clone(), &first.plans, &mut next_id).is_ok());

            // The first plan running: what the picker proposes next commits before or
            // after it.
            if let Some(running) = first.plans.first() {
                let locked: BTreeSet<u64> = running.input_ids().into_iter().collect();
                let next = pick(&strategy, &PickerInput { version: &v, locked: &locked });
                prop_assert_eq!(check_plans(&v, &locked, &next), Ok(()));
                let before = apply_all(v.clone(), next.plans.iter().chain([running]), &mut next_id);
                prop_assert!(before.is_ok(), "{:?}", before.err());
                let after = apply_all(v.clone(), [running].into_iter().chain(&next.plans), &mut next_id);
                prop_assert!(after.is_ok(), "{:?}", after.err());
            }
        }
    }
}
