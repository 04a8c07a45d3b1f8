//! Leveled compaction, as RocksDB's `kCompactionStyleLevel`.
//!
//! L0 holds flushed files, overlapping, newest first; every deeper level is one sorted run
//! of non-overlapping files with a byte *target*. Each level gets a *score*:
//!
//! - L0: unlocked files / `trigger_threshold`;
//! - Ln (base level ≤ n < last level): bytes of unlocked files / target of Ln (files held by
//!   running compactions are already on their way down, as RocksDB's
//!   `level_bytes_no_compacting`).
//!
//! Every level with a score ≥ 1 yields at most one plan, highest score first:
//!
//! - L0 → base level: every unlocked L0 file plus the base-level files overlapping their key
//!   range. If locked L0 files (a running L0 compaction) overlap that range, nothing is
//!   picked: newer L0 files must not reach the base level before older ones. If the L0
//!   files overlap neither each other nor the base level (sequential keys), the plan is a
//!   trivial move of all of them, as RocksDB's `TryPickL0TrivialMove`.
//! - Ln → Ln+1: one file of Ln, the one with the least bytes overlapping it in Ln+1 per byte
//!   of its own (RocksDB's `kMinOverlappingRatio`), skipping locked files, files whose
//!   next-level overlap is locked, and files whose range a running compaction may be
//!   writing into Ln+1. A file with no overlap is a *trivial move*: re-levelled, not
//!   rewritten. (User keys never span two files of a level here, so RocksDB's expansion to
//!   clean-cut boundaries is not needed.)
//!
//! After those, the *tombstone trigger* (lower priority): a file of L1 or deeper whose
//! tombstone ratio exceeds `tombstone_ratio` and that has at least `tombstone_min_entries`
//! entries is rewritten alone. If nothing below its level overlaps it (always so in the last
//! level) it is rewritten *in place* (output level = its own level, bottommost: the
//! tombstones are dropped, as RocksDB's bottommost-files compaction); otherwise it goes to
//! the next level with the files it overlaps there (as RocksDB's deletion-triggered
//! compaction), never as a trivial move, which would drop nothing.
//!
//! Level targets ([`level_targets`]):
//!
//! - static: L1 = `max_bytes_for_level_base`, Ln = L1 × `level_multiplier`^(n−1); L0
//!   compacts into L1.
//! - `dynamic_level_bytes`, RocksDB's `CalculateBaseBytes`: targets are derived from the
//!   largest level below L0 (normally the last) upward, dividing by the multiplier, so that
//!   the last level holds about 90% of the data. The *base level* is the shallowest level
//!   whose target is still above `max_bytes_for_level_base / multiplier`; levels above it
//!   stay empty and L0 compacts straight into it. No target is below
//!   `max_bytes_for_level_base`. An empty tree has the last level as base level. Not
//!   implemented: RocksDB's draining of "unnecessary" levels (data above the base level after
//!   the table shrinks) and its L0-size adjustments of the base level's target.
//!
//! The level count is the version's own (`Version::new(num_levels)` sizes new tables); a
//! mismatch with `num_levels` is reported in `skipped`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{
    CompactionPlan, DEFAULT_TOMBSTONE_MIN_ENTRIES, PickerInput, PickerOutput, Trigger, count,
    estimate, files_phrase, fmt_bytes, hull, overlaps_below,
};
use crate::manifest::{FileMeta, Version};

/// Knobs of [`level_based`] (RocksDB's names where it has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelConfig {
    /// L0 file count that triggers an L0 compaction (`level0_file_num_compaction_trigger`).
    pub trigger_threshold: u32,
    /// Target of the base level.
    pub max_bytes_for_level_base: u64,
    /// Each level's target is this many times the one above (values below 1 count as 1).
    pub level_multiplier: f64,
    /// Derive targets from the last level's size (see the module docs).
    pub dynamic_level_bytes: bool,
    /// Levels including L0.
    pub num_levels: u32,
    /// Workers split outputs at this size.
    pub target_file_size: u64,
    /// A file whose tombstones exceed this fraction of its entries is compacted alone.
    pub tombstone_ratio: f64,
    /// ... if it has at least this many entries.
    pub tombstone_min_entries: u64,
}

impl Default for LevelConfig {
    fn default() -> Self {
        Self {
            trigger_threshold: 4,
            max_bytes_for_level_base: 256 << 20,
            level_multiplier: 10.0,
            dynamic_level_bytes: true,
            num_levels: 7,
            target_file_size: 256 << 20,
            tombstone_ratio: 0.5,
            tombstone_min_entries: DEFAULT_TOMBSTONE_MIN_ENTRIES,
        }
    }
}

/// Where L0 goes and how big each level may grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LevelTargets {
    /// The level L0 compacts into.
    pub base_level: u32,
    /// Target bytes by level; `None` for L0 and for the levels above the base level.
    pub target_bytes: Vec<Option<u64>>,
}

/// Level targets of `version` under `config` (see the module docs).
pub fn level_targets(version: &Version, config: &LevelConfig) -> LevelTargets {
    let n = version.levels.len();
    let last = n.saturating_sub(1);
    let mult = config.level_multiplier.max(1.0);
    let base_max = config.max_bytes_for_level_base.max(1) as f64;
    let mut target_bytes = vec![None; n];
    if !config.dynamic_level_bytes {
        let mut size = base_max;
        for target in target_bytes.iter_mut().skip(1) {
            *target = Some(size as u64);
            size *= mult;
        }
        return LevelTargets {
            base_level: 1.min(last) as u32,
            target_bytes,
        };
    }
    let sizes: Vec<u64> = (0..n).map(|l| version.level_bytes(l)).collect();
    let Some(first_non_empty) = (1..n).find(|&l| sizes[l] > 0) else {
        if let Some(t) = target_bytes.get_mut(last) {
            *t = Some(base_max as u64);
        }
        return LevelTargets {
            base_level: last as u32,
            target_bytes,
        };
    };
    let max_level_size = sizes.iter().skip(1).copied().max().unwrap_or(0);
    let base_min = base_max / mult;
    // The size the first non-empty level would need for the largest level to sit at the
    // bottom with every level `mult` times the one above.
    let mut cur = max_level_size as f64 / mult.powi((last - first_non_empty) as i32);
    let (base_level, base_size) = if cur <= base_min {
        (first_non_empty, base_min + 1.0)
    } else {
        let mut level = first_non_empty;
        while level > 1 && cur > base_max {
            level -= 1;
            cur /= mult;
        }
        (
            level,
            if cur > base_max {
                base_max
            } else {
                cur.max(1.0)
            },
        )
    };
    let mut size = base_size;
    for (level, target) in target_bytes.iter_mut().enumerate().skip(base_level) {
        if level > base_level {
            size *= mult;
        }
        *target = Some(size.max(base_max) as u64);
    }
    LevelTargets {
        base_level: base_level as u32,
        target_bytes,
    }
}

/// The leveled picker (see the module docs).
pub fn level_based(config: &LevelConfig, input: &PickerInput<'_>) -> PickerOutput {
    let version = input.version;
    let mut out = PickerOutput::default();
    let n = version.levels.len();
    if n < 2 {
        out.skipped.push(format!(
            "the version has {n} level(s): nothing to compact into"
        ));
        return out;
    }
    if n != config.num_levels as usize {
        out.skipped.push(format!(
            "the version has {n} levels, the config says {}: using the version's",
            config.num_levels
        ));
    }
    let targets = level_targets(version, config);
    let mut picker = Picker {
        config,
        version,
        running: input.locked,
        planned: BTreeSet::new(),
        base_level: targets.base_level,
        out,
    };
    for (level, score, reason) in picker.scores(&targets) {
        let plan = if level == 0 {
            picker.pick_l0(score, reason)
        } else {
            picker.pick_level(level, score, reason)
        };
        match plan {
            Ok(plan) => picker.push(plan),
            Err(why) => picker.out.skipped.push(why),
        }
    }
    picker.pick_tombstones();
    picker.out
}

/// Why a locked file is unavailable: held by a running compaction or by a plan picked
/// earlier in the same call.
const IN_USE: &str = "in use by running or planned compactions";

struct Picker<'a> {
    config: &'a LevelConfig,
    version: &'a Version,
    /// Files of running compactions.
    running: &'a BTreeSet<u64>,
    /// Files of the plans picked so far in this call.
    planned: BTreeSet<u64>,
    base_level: u32,
    out: PickerOutput,
}

impl<'a> Picker<'a> {
    fn locked(&self, id: u64) -> bool {
        self.running.contains(&id) || self.planned.contains(&id)
    }

    fn files(&self, level: u32) -> &'a [FileMeta] {
        self.version
            .levels
            .get(level as usize)
            .map_or(&[], |l| l.as_slice())
    }

    /// Levels with a score ≥ 1, highest first, as `(level, score, reason)`; every other
    /// non-empty level gets a line in `skipped`.
    fn scores(&mut self, targets: &LevelTargets) -> Vec<(u32, f64, String)> {
        let mut candidates = Vec::new();
        let l0 = self.files(0);
        let free = l0.iter().filter(|f| !self.running.contains(&f.id)).count();
        let trigger = self.config.trigger_threshold.max(1);
        let score = free as f64 / f64::from(trigger);
        if score >= 1.0 {
            candidates.push((
                0,
                score,
                format!("L0 has {} >= trigger {trigger}", count(free, "file")),
            ));
        } else if !l0.is_empty() {
            let busy = l0.len() - free;
            let running = if busy > 0 {
                format!(" ({busy} more in a running compaction)")
            } else {
                String::new()
            };
            self.out.skipped.push(format!(
                "L0: {} < trigger {trigger}{running}",
                count(free, "file")
            ));
        }
        let last = self.version.levels.len() - 1;
        for level in (targets.base_level as usize).max(1)..last {
            let Some(target) = targets.target_bytes[level] else {
                continue;
            };
            let bytes: u64 = self
                .files(level as u32)
                .iter()
                .filter(|f| !self.running.contains(&f.id))
                .map(|f| f.size)
                .sum();
            if bytes == 0 {
                continue;
            }
            let score = bytes as f64 / target.max(1) as f64;
            let reason = format!(
                "L{level} score {score:.1} ({} / {})",
                fmt_bytes(bytes),
                fmt_bytes(target)
            );
            if score >= 1.0 {
                candidates.push((level as u32, score, reason));
            } else {
                self.out.skipped.push(format!("{reason} < 1"));
            }
        }
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        candidates
    }

    /// Whether a new plan may write `[start, end]` into `output_level`: not if a locked
    /// file shows that a running (or already planned) compaction may be writing there (see
    /// [`PickerInput`]).
    fn writable(&self, output_level: u32, start: &[u8], end: &[u8]) -> Result<(), String> {
        match self.writer(output_level, start, end) {
            None => Ok(()),
            Some(id) => Err(format!(
                "a running compaction (locked file {id}) may be writing that range into L{output_level}"
            )),
        }
    }

    fn writer(&self, output_level: u32, start: &[u8], end: &[u8]) -> Option<u64> {
        let locked_overlap = |level: u32| {
            self.files(level)
                .iter()
                .find(|f| self.locked(f.id) && f.overlaps(start, end))
                .map(|f| f.id)
        };
        if output_level == 0 {
            return None;
        }
        if let Some(id) = locked_overlap(output_level) {
            return Some(id);
        }
        if output_level >= 2
            && let Some(id) = locked_overlap(output_level - 1)
        {
            return Some(id);
        }
        if output_level == self.base_level {
            let l0 = self.files(0).iter().filter(|f| self.locked(f.id));
            if let Some((a, b)) = hull(l0.clone())
                && a <= end
                && b >= start
            {
                return l0.map(|f| f.id).next();
            }
        }
        None
    }

    fn pick_l0(&mut self, score: f64, reason: String) -> Result<CompactionPlan, String> {
        let base = self.base_level;
        let (locked, free): (Vec<&FileMeta>, Vec<&FileMeta>) =
            self.files(0).iter().partition(|f| self.locked(f.id));
        let Some((start, end)) = hull(free.iter().copied()) else {
            return Err(format!("{reason}: every L0 file is locked"));
        };
        if let Some((a, b)) = hull(locked.iter().copied())
            && a <= end
            && b >= start
        {
            return Err(format!(
                "{reason}: waits for the running compaction of L0 {} (overlapping range)",
                files_phrase(locked.iter().map(|f| f.id))
            ));
        }
        let overlaps = self.version.overlapping(base as usize, start, end);
        let busy: Vec<u64> = overlaps
            .iter()
            .filter(|f| self.locked(f.id))
            .map(|f| f.id)
            .collect();
        if !busy.is_empty() {
            return Err(format!("{reason}: L{base} {} {IN_USE}", files_phrase(busy)));
        }
        let (rs, re) = hull(free.iter().chain(&overlaps).copied()).unwrap_or((start, end));
        self.writable(base, rs, re)
            .map_err(|why| format!("{reason}: {why}"))?;
        let trivial_move = overlaps.is_empty() && disjoint(&free);
        let inputs = inputs(0, free, base, overlaps);
        Ok(self.plan(
            Trigger::L0FileCount,
            inputs,
            base,
            trivial_move,
            reason,
            score,
        ))
    }

    fn pick_level(
        &mut self,
        level: u32,
        score: f64,
        reason: String,
    ) -> Result<CompactionPlan, String> {
        let next = level + 1;
        let mut locked = Vec::new();
        let mut best: Option<(f64, &FileMeta, Vec<&FileMeta>)> = None;
        for f in self.files(level) {
            if self.locked(f.id) {
                locked.push(f.id);
                continue;
            }
            let overlaps = match self.next_level_inputs(level, f) {
                Ok(overlaps) => overlaps,
                Err(why) => {
                    self.out
                        .skipped
                        .push(format!("L{level}: file {} skipped: {why}", f.id));
                    continue;
                }
            };
            let overlap: u64 = overlaps.iter().map(|o| o.size).sum();
            let ratio = overlap as f64 / f.size.max(1) as f64;
            if best.as_ref().is_none_or(|(r, _, _)| ratio < *r) {
                best = Some((ratio, f, overlaps));
            }
        }
        if !locked.is_empty() {
            self.out
                .skipped
                .push(format!("L{level}: {} {IN_USE}", files_phrase(locked)));
        }
        let Some((ratio, f, overlaps)) = best else {
            return Err(format!("{reason}: no L{level} file can be compacted now"));
        };
        let reason = format!("{reason}; file {}, overlap ratio {ratio:.2}", f.id);
        let trivial_move = overlaps.is_empty();
        let inputs = inputs(level, vec![f], next, overlaps);
        Ok(self.plan(
            Trigger::LevelSize,
            inputs,
            next,
            trivial_move,
            reason,
            score,
        ))
    }

    fn pick_tombstones(&mut self) {
        let threshold = self.config.tombstone_ratio;
        let mut candidates: Vec<(u32, &FileMeta)> = (1..self.version.levels.len() as u32)
            .flat_map(|l| self.files(l).iter().map(move |f| (l, f)))
            .filter(|(_, f)| f.tombstone_ratio() > threshold)
            .collect();
        candidates.sort_by(|a, b| {
            b.1.tombstone_ratio()
                .total_cmp(&a.1.tombstone_ratio())
                .then(a.0.cmp(&b.0))
                .then(a.1.id.cmp(&b.1.id))
        });
        let last = self.version.levels.len() as u32 - 1;
        for (level, f) in candidates {
            let pct = f.tombstone_ratio() * 100.0;
            let reason = format!(
                "tombstones {pct:.0}% in file {} (L{level}: {} of {} entries)",
                f.id, f.tombstones, f.entries
            );
            match self.tombstone_plan(level, last, f, reason) {
                Ok(plan) => self.push(plan),
                Err(why) => self.out.skipped.push(why),
            }
        }
    }

    fn tombstone_plan(
        &self,
        level: u32,
        last: u32,
        f: &FileMeta,
        reason: String,
    ) -> Result<CompactionPlan, String> {
        if f.entries < self.config.tombstone_min_entries {
            return Err(format!(
                "{reason}: fewer than {} entries",
                self.config.tombstone_min_entries
            ));
        }
        if self.running.contains(&f.id) {
            return Err(format!("{reason}: the file is in a running compaction"));
        }
        if self.planned.contains(&f.id) {
            return Err(format!("{reason}: the file is already in a plan above"));
        }
        let score = f.tombstone_ratio();
        let in_place =
            level == last || !overlaps_below(self.version, level, &f.smallest, &f.largest);
        if in_place {
            self.writable(level, &f.smallest, &f.largest)
                .map_err(|why| format!("{reason}: {why}"))?;
            return Ok(self.plan(
                Trigger::Tombstones,
                vec![(level, vec![f.clone()])],
                level,
                false,
                reason,
                score,
            ));
        }
        let next = level + 1;
        let overlaps = self
            .next_level_inputs(level, f)
            .map_err(|why| format!("{reason}: {why}"))?;
        let inputs = inputs(level, vec![f], next, overlaps);
        Ok(self.plan(Trigger::Tombstones, inputs, next, false, reason, score))
    }

    /// The files of the next level that `f` (of `level`) would be compacted with, or why it
    /// cannot be compacted now.
    fn next_level_inputs(&self, level: u32, f: &'a FileMeta) -> Result<Vec<&'a FileMeta>, String> {
        let next = level + 1;
        let overlaps = self
            .version
            .overlapping(next as usize, &f.smallest, &f.largest);
        let locked: Vec<u64> = overlaps
            .iter()
            .filter(|o| self.locked(o.id))
            .map(|o| o.id)
            .collect();
        if !locked.is_empty() {
            return Err(format!("L{next} {} {IN_USE}", files_phrase(locked)));
        }
        let (s, e) = hull(std::iter::once(f).chain(overlaps.iter().copied()))
            .unwrap_or((&f.smallest, &f.largest));
        self.writable(next, s, e)?;
        Ok(overlaps)
    }

    fn plan(
        &self,
        trigger: Trigger,
        inputs: Vec<(u32, Vec<FileMeta>)>,
        output_level: u32,
        trivial_move: bool,
        reason: String,
        score: f64,
    ) -> CompactionPlan {
        let bottommost = hull(inputs.iter().flat_map(|(_, fs)| fs))
            .is_none_or(|(s, e)| !overlaps_below(self.version, output_level, s, e));
        let mut plan = CompactionPlan {
            trigger,
            inputs,
            output_level,
            bottommost,
            trivial_move,
            target_file_size: self.config.target_file_size,
            reason,
            score,
            estimated_read_bytes: 0,
            estimated_write_bytes: 0,
        };
        estimate(&mut plan);
        plan
    }

    fn push(&mut self, plan: CompactionPlan) {
        self.planned.extend(plan.input_ids());
        self.out.plans.push(plan);
    }
}

/// Plan inputs: the start level's files, then the output level's, if any.
fn inputs(
    start: u32,
    files: Vec<&FileMeta>,
    output: u32,
    overlaps: Vec<&FileMeta>,
) -> Vec<(u32, Vec<FileMeta>)> {
    let mut inputs = vec![(start, files.into_iter().cloned().collect())];
    if !overlaps.is_empty() {
        inputs.push((output, overlaps.into_iter().cloned().collect()));
    }
    inputs
}

/// Whether no two of `files` overlap.
fn disjoint(files: &[&FileMeta]) -> bool {
    let mut sorted = files.to_vec();
    sorted.sort_by(|a, b| a.smallest.cmp(&b.smallest));
    sorted.windows(2).all(|w| w[0].largest < w[1].smallest)
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;
    use crate::manifest::Version;

    fn static_levels() -> LevelConfig {
        LevelConfig {
            dynamic_level_bytes: false,
            ..LevelConfig::default()
        }
    }

    struct Case {
        name: &'static str,
        config: LevelConfig,
        version: Version,
        locked: &'static [u64],
        want: Vec<Want>,
        /// Each must be a substring of some `skipped` line.
        skipped: &'static [&'static str],
    }

    fn l0_quad(a: &str, b: &str) -> Vec<FileMeta> {
        (1..=4).map(|id| file(id, a, b)).collect()
    }

    fn ratio_levels(l1_mib: u64) -> Vec<(u32, Vec<FileMeta>)> {
        vec![
            (
                1,
                vec![
                    file(10, "a", "c").mib(l1_mib),
                    file(11, "d", "f").mib(l1_mib),
                    file(12, "g", "i").mib(l1_mib),
                ],
            ),
            (
                2,
                vec![
                    file(20, "a", "c").mib(500),
                    file(21, "d", "f").mib(50),
                    file(22, "g", "h").mib(100),
                    file(23, "hh", "i").mib(100),
                ],
            ),
        ]
    }

    fn with(mut levels: Vec<(u32, Vec<FileMeta>)>, more: (u32, Vec<FileMeta>)) -> Version {
        levels.push(more);
        version(levels)
    }

    fn cases() -> Vec<Case> {
        use Trigger::*;
        vec![
            Case {
                name: "L0 below the trigger: nothing",
                config: static_levels(),
                version: version(vec![(
                    0,
                    vec![file(1, "a", "m"), file(2, "b", "n"), file(3, "c", "o")],
                )]),
                locked: &[],
                want: vec![],
                skipped: &["L0: 3 files < trigger 4"],
            },
            Case {
                name: "L0 trigger: every L0 file and the overlapping base-level files",
                config: static_levels(),
                version: version(vec![
                    (
                        0,
                        vec![
                            file(1, "c", "e"),
                            file(2, "d", "f"),
                            file(3, "e", "h"),
                            file(4, "g", "k"),
                        ],
                    ),
                    (
                        1,
                        vec![
                            file(10, "a", "b"),
                            file(11, "c", "d"),
                            file(12, "j", "l"),
                            file(13, "x", "z"),
                        ],
                    ),
                    (2, vec![file(20, "a", "c")]),
                ]),
                locked: &[],
                want: vec![want(
                    L0FileCount,
                    &[(0, &[4, 3, 2, 1]), (1, &[11, 12])],
                    1,
                    false,
                    false,
                    "L0 has 4 files >= trigger 4",
                )],
                skipped: &[],
            },
            Case {
                name: "dynamic: L0 compacts into the base level (L4 when L6 holds 3 GiB)",
                config: LevelConfig::default(),
                version: version(vec![
                    (0, l0_quad("a", "z")),
                    (6, vec![file(60, "a", "z").mib(3072)]),
                ]),
                locked: &[],
                want: vec![want(
                    L0FileCount,
                    &[(0, &[4, 3, 2, 1])],
                    4,
                    false,
                    false,
                    "L0 has 4 files",
                )],
                skipped: &[],
            },
            Case {
                name: "dynamic, empty tree: L0 goes to the last level, bottommost",
                config: LevelConfig::default(),
                version: version(vec![(0, l0_quad("a", "z"))]),
                locked: &[],
                want: vec![want(
                    L0FileCount,
                    &[(0, &[4, 3, 2, 1])],
                    6,
                    false,
                    true,
                    "L0 has 4 files",
                )],
                skipped: &[],
            },
            Case {
                name: "L0 files overlapping nothing move trivially",
                config: static_levels(),
                version: version(vec![
                    (
                        0,
                        vec![
                            file(1, "a", "b"),
                            file(2, "c", "d"),
                            file(3, "e", "f"),
                            file(4, "g", "h"),
                        ],
                    ),
                    (1, vec![file(10, "x", "z")]),
                ]),
                locked: &[],
                want: vec![want(
                    L0FileCount,
                    &[(0, &[4, 3, 2, 1])],
                    1,
                    true,
                    true,
                    "L0 has 4 files",
                )],
                skipped: &[],
            },
            Case {
                name: "L0 waits for base-level files held by a running compaction",
                config: static_levels(),
                version: version(vec![
                    (0, l0_quad("c", "k")),
                    (1, vec![file(11, "c", "d")]),
                    (2, vec![file(21, "c", "d")]),
                ]),
                locked: &[11, 21],
                want: vec![],
                skipped: &["L1 file 11 in use by running or planned compactions"],
            },
            Case {
                name: "a running L0 compaction makes newer overlapping L0 files wait",
                config: static_levels(),
                version: version(vec![(
                    0,
                    (1..=4)
                        .map(|id| file(id, "a", "z"))
                        .chain((5..=8).map(|id| file(id, "c", "d")))
                        .collect(),
                )]),
                locked: &[1, 2, 3, 4],
                want: vec![],
                skipped: &["waits for the running compaction of L0 files 4, 3, 2, 1"],
            },
            Case {
                name: "level scores: highest first, one plan per level, plans independent",
                config: static_levels(),
                version: version(vec![
                    (
                        1,
                        vec![file(10, "a", "c").mib(150), file(11, "d", "f").mib(150)],
                    ),
                    (
                        2,
                        vec![file(20, "a", "b").mib(2000), file(21, "m", "n").mib(2000)],
                    ),
                ]),
                locked: &[],
                want: vec![
                    want(
                        LevelSize,
                        &[(2, &[20])],
                        3,
                        true,
                        true,
                        "L2 score 1.6 (3.9 GiB / 2.5 GiB); file 20, overlap ratio 0.00",
                    ),
                    want(
                        LevelSize,
                        &[(1, &[11])],
                        2,
                        true,
                        true,
                        "L1 score 1.2 (300 MiB / 256 MiB); file 11",
                    ),
                ],
                skipped: &[],
            },
            Case {
                name: "minimum overlapping ratio picks the file with the least next-level overlap",
                config: static_levels(),
                version: version(ratio_levels(100)),
                locked: &[],
                want: vec![want(
                    LevelSize,
                    &[(1, &[11]), (2, &[21])],
                    2,
                    false,
                    true,
                    "file 11, overlap ratio 0.50",
                )],
                skipped: &["L2 score 0.3 (750 MiB / 2.5 GiB) < 1"],
            },
            Case {
                name: "locked files are skipped (and not counted in the score)",
                config: static_levels(),
                version: version(ratio_levels(150)),
                locked: &[11, 21],
                want: vec![want(
                    LevelSize,
                    &[(1, &[12]), (2, &[22, 23])],
                    2,
                    false,
                    true,
                    "L1 score 1.2 (300 MiB / 256 MiB); file 12, overlap ratio 1.33",
                )],
                skipped: &["L1: file 11 in use"],
            },
            Case {
                name: "a file whose next-level overlap is locked is skipped",
                config: static_levels(),
                version: version(ratio_levels(100)),
                locked: &[21],
                want: vec![want(
                    LevelSize,
                    &[(1, &[12]), (2, &[22, 23])],
                    2,
                    false,
                    true,
                    "file 12",
                )],
                skipped: &["L1: file 11 skipped: L2 file 21 in use"],
            },
            Case {
                name: "not bottommost when a deeper level overlaps the inputs",
                config: static_levels(),
                version: with(ratio_levels(100), (4, vec![file(40, "e", "e")])),
                locked: &[],
                want: vec![want(
                    LevelSize,
                    &[(1, &[11]), (2, &[21])],
                    2,
                    false,
                    false,
                    "file 11",
                )],
                skipped: &[],
            },
            Case {
                name: "a higher-score plan takes the base-level file the L0 plan needed",
                config: LevelConfig::default(),
                version: version(vec![
                    (0, l0_quad("b", "c")),
                    (4, vec![file(40, "a", "m").mib(300)]),
                    (6, vec![file(60, "a", "z").mib(3072)]),
                ]),
                locked: &[],
                want: vec![want(
                    LevelSize,
                    &[(4, &[40])],
                    5,
                    true,
                    false,
                    "L4 score 1.2 (300 MiB / 256 MiB)",
                )],
                skipped: &["L0 has 4 files >= trigger 4: L4 file 40 in use"],
            },
            Case {
                name: "tombstones: rewritten in place in the last level, bottommost",
                config: LevelConfig::default(),
                version: version(vec![(
                    6,
                    vec![
                        file(60, "a", "m").mib(100).tombs(10_000, 6_200),
                        file(61, "n", "z").mib(100),
                    ],
                )]),
                locked: &[],
                want: vec![want(
                    Tombstones,
                    &[(6, &[60])],
                    6,
                    false,
                    true,
                    "tombstones 62% in file 60",
                )],
                skipped: &[],
            },
            Case {
                name: "tombstones: pushed to the next level when data lies below, never moved",
                config: static_levels(),
                version: version(vec![
                    (2, vec![file(20, "d", "f").mib(10).tombs(5_000, 4_000)]),
                    (4, vec![file(40, "a", "z").mib(1000)]),
                ]),
                locked: &[],
                want: vec![want(
                    Tombstones,
                    &[(2, &[20])],
                    3,
                    false,
                    false,
                    "tombstones 80% in file 20 (L2: 4000 of 5000 entries)",
                )],
                skipped: &[],
            },
            Case {
                name: "tombstones: a file with few entries is left alone",
                config: LevelConfig::default(),
                version: version(vec![(6, vec![file(60, "a", "m").tombs(500, 400)])]),
                locked: &[],
                want: vec![],
                skipped: &["tombstones 80% in file 60 (L6: 400 of 500 entries): fewer than 1000"],
            },
            Case {
                name: "tombstones: a locked file is left alone",
                config: LevelConfig::default(),
                version: version(vec![(6, vec![file(60, "a", "m").tombs(10_000, 9_000)])]),
                locked: &[60],
                want: vec![],
                skipped: &["the file is in a running compaction"],
            },
            Case {
                name: "tombstone plans come after size-triggered plans",
                config: static_levels(),
                version: version(vec![
                    (1, vec![file(10, "a", "c").mib(300)]),
                    (3, vec![file(30, "x", "z").mib(10).tombs(10_000, 9_000)]),
                ]),
                locked: &[],
                want: vec![
                    want(LevelSize, &[(1, &[10])], 2, true, true, "L1 score 1.2"),
                    want(Tombstones, &[(3, &[30])], 3, false, true, "tombstones 90%"),
                ],
                skipped: &[],
            },
            Case {
                name: "a tombstone plan waits while a running L0 compaction may write its range",
                config: static_levels(),
                version: version(vec![
                    (0, vec![file(1, "a", "z")]),
                    (1, vec![file(10, "m", "n").tombs(10_000, 7_000)]),
                ]),
                locked: &[1],
                want: vec![],
                skipped: &[
                    "L0: 0 files < trigger 4 (1 more in a running compaction)",
                    "a running compaction (locked file 1) may be writing that range into L1",
                ],
            },
        ]
    }

    #[test]
    fn level_based_cases() {
        for case in cases() {
            let locked = ids(case.locked);
            let out = level_based(
                &case.config,
                &PickerInput {
                    version: &case.version,
                    locked: &locked,
                },
            );
            check(case.name, &out, &locked, &case.want, case.skipped);
        }
    }

    #[test]
    fn level_targets_static_and_dynamic() {
        let mib = |t: Option<u64>| t.map(|b| (b as f64 / MIB as f64 * 100.0).round() / 100.0);
        let only =
            |level: u32, size: u64| version(vec![(level, vec![file(1, "a", "z").mib(size)])]);
        // (name, config, version, base level, targets in MiB)
        type TargetCase = (&'static str, LevelConfig, Version, u32, [Option<f64>; 7]);
        let cases: Vec<TargetCase> = vec![
            (
                "static: base × multiplier^(n-1) from L1",
                static_levels(),
                Version::new(7),
                1,
                [
                    None,
                    Some(256.0),
                    Some(2560.0),
                    Some(25600.0),
                    Some(256000.0),
                    Some(2560000.0),
                    Some(25600000.0),
                ],
            ),
            (
                "dynamic, empty: the last level is the base",
                LevelConfig::default(),
                Version::new(7),
                6,
                [None, None, None, None, None, None, Some(256.0)],
            ),
            (
                "dynamic, L6 below the base size: L6 is the base level",
                LevelConfig::default(),
                only(6, 100),
                6,
                [None, None, None, None, None, None, Some(256.0)],
            ),
            (
                "dynamic, L6 300 MiB: L5 opens as base with the base size",
                LevelConfig::default(),
                only(6, 300),
                5,
                [None, None, None, None, None, Some(256.0), Some(300.0)],
            ),
            (
                "dynamic, L6 3 GiB: base L4, targets divide down from L6",
                LevelConfig::default(),
                only(6, 3072),
                4,
                [
                    None,
                    None,
                    None,
                    None,
                    Some(256.0),
                    Some(307.2),
                    Some(3072.0),
                ],
            ),
            (
                "dynamic, L6 1 TiB: base L2",
                LevelConfig::default(),
                only(6, 1 << 20),
                2,
                [
                    None,
                    None,
                    Some(256.0),
                    Some(1048.58),
                    Some(10485.76),
                    Some(104857.6),
                    Some(1048576.0),
                ],
            ),
            (
                "dynamic, small tree with data in L5: L5 stays the base level",
                LevelConfig::default(),
                version(vec![
                    (5, vec![file(1, "a", "b").mib(10)]),
                    (6, vec![file(2, "a", "z").mib(100)]),
                ]),
                5,
                [None, None, None, None, None, Some(256.0), Some(256.0)],
            ),
        ];
        for (name, config, v, base, targets) in cases {
            let got = level_targets(&v, &config);
            assert_eq!(got.base_level, base, "{name}");
            let got: Vec<Option<f64>> = got.target_bytes.into_iter().map(mib).collect();
            assert_eq!(got, targets, "{name}");
        }
    }

    #[test]
    fn reports_a_level_count_mismatch() {
        let v = version_with(4, vec![]);
        let out = level_based(
            &LevelConfig::default(),
            &PickerInput {
                version: &v,
                locked: &ids(&[]),
            },
        );
        assert!(out.plans.is_empty());
        assert_eq!(
            out.skipped,
            ["the version has 4 levels, the config says 7: using the version's"]
        );
    }
}
