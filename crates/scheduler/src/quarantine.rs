//! Poison-input quarantine: pure policy.
//!
//! When a compaction fails on corrupt input, the scheduler does not fail the whole key
//! range for good (InfluxDB IOx skips a whole partition) nor crash (RisingWave panics): it
//! finds the one bad file by bisection and sets that file alone aside.
//!
//! 1. A compaction's first corruption error is retried once (the object may have been
//!    replaced meanwhile); its second fails the task and starts the bisection.
//! 2. Bisection splits the inputs into smaller *probe* compactions, each of one level
//!    rewritten into the same level: one probe per input level first, then halves of one
//!    level's files — in sequence order for L0, in key order for deeper levels, so that a
//!    probe's outputs never overlap a file of its level it did not read (level ≥ 1 stays
//!    non-overlapping; reads pick the newest sequence number across every file, so
//!    rewriting part of L0 into L0 changes nothing they see). A probe that succeeds has
//!    done useful work; one that fails on corruption is split again at once.
//! 3. A probe of a single file that fails on corruption quarantines that file: it stays in
//!    its manifest (still referenced, never deleted by Cleanup) and the picker leaves it
//!    out — an L0 file is hidden from the picker, so the rest of L0 compacts without it;
//!    a deeper file is treated as locked. While a table has quarantined files no
//!    compaction drops tombstones (the file may hold older versions they still shadow).
//! 4. `ReleaseQuarantined` (an operator replaced or checked the file) puts it back; if it
//!    is still corrupt, the next failure quarantines it again.
//!
//! The error may name the file, but bisection does not rely on it (errors do not always
//! name one, and a file can be named by a failure that it did not cause).

use std::collections::BTreeSet;

use catalog::{ErrorRecord, TaskRecord, TaskSpec};
use lsm::manifest::{FileMeta, Version};

/// The reason of every probe compaction starts with this.
pub const BISECT_REASON: &str = "poison-input bisection";

/// The reason of every WAL segment repair starts with this.
pub const REPAIR_REASON: &str = "repair of quarantined wal";

/// Whether `spec` is the repair of released WAL segments (a full compaction that merges
/// them in): never preempted, never bisected.
pub fn is_repair(spec: &TaskSpec) -> bool {
    matches!(spec, TaskSpec::Compaction { wal_inputs, .. } if !wal_inputs.is_empty())
}

/// Whether `spec` is a bisection probe.
pub fn is_probe(spec: &TaskSpec) -> bool {
    matches!(spec, TaskSpec::Compaction { reason, .. } if reason.starts_with(BISECT_REASON))
}

/// What to do about a compaction attempt that failed with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry once more, even if the worker called the error final.
    Retry,
    /// Fail the task and bisect its inputs (or quarantine its only input).
    Bisect,
}

/// The verdict for `task` (whose earlier errors are in `task.errors`, not yet `error`),
/// or `None` when the failure is not about corrupt input.
pub fn poison_verdict(task: &TaskRecord, error: &ErrorRecord) -> Option<Verdict> {
    let TaskSpec::Compaction {
        trivial_move: false,
        wal_inputs,
        ..
    } = &task.spec
    else {
        return None;
    };
    // A repair's failure goes back to its segment's quarantine record (see
    // `Core::finish_bookkeeping`), not into a bisection.
    if !wal_inputs.is_empty() {
        return None;
    }
    if error.kind != "corruption" {
        return None;
    }
    let before = task
        .errors
        .iter()
        .filter(|e| e.kind == "corruption")
        .count();
    if is_probe(&task.spec) || before >= 1 {
        Some(Verdict::Bisect)
    } else {
        Some(Verdict::Retry)
    }
}

/// What to do about a WalReplay attempt that failed with `error`: `(Retry, _)` the first
/// time a corruption names one of the table's WAL segments (it may have been replaced),
/// `(Bisect, first_seq)` the second time — for a replay, that means quarantine that
/// segment (its name pins it; there is nothing to bisect). `None`: not about a segment's
/// bytes (a missing segment, a newer format, a storage error).
pub fn wal_poison_verdict(task: &TaskRecord, error: &ErrorRecord) -> Option<(Verdict, u64)> {
    let TaskSpec::WalReplay { table, .. } = &task.spec else {
        return None;
    };
    if error.kind != "corruption" {
        return None;
    }
    let first_seq = wal_segment_of(table, &error.file)?;
    let before = task
        .errors
        .iter()
        .filter(|e| e.kind == "corruption" && e.file == error.file)
        .count();
    Some((
        if before >= 1 {
            Verdict::Bisect
        } else {
            Verdict::Retry
        },
        first_seq,
    ))
}

/// The first seq of `path` when it is exactly a WAL segment of `table`.
pub fn wal_segment_of(table: &str, path: &str) -> Option<u64> {
    let name = storage::TableName::new(table).ok()?;
    let first_seq = storage::paths::parse_wal_segment_name(path.rsplit('/').next()?)?;
    (storage::paths::wal_segment(&name, first_seq).as_ref() == path).then_some(first_seq)
}

/// The next step of a bisection over a failed compaction's inputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Split {
    /// One file left: it is the poison.
    Quarantine { level: u32, file_id: u64 },
    /// Smaller compactions to run, each `(level, files)` rewritten into `level`.
    Probes(Vec<(u32, Vec<FileMeta>)>),
}

/// Splits `inputs` (files by level) for the next round of probes: one per level when
/// there are several, else two halves of the level's files in order (L0 by sequence
/// number, deeper levels by key).
pub fn split(inputs: &[(u32, Vec<FileMeta>)]) -> Split {
    let levels: Vec<&(u32, Vec<FileMeta>)> = inputs.iter().filter(|(_, f)| !f.is_empty()).collect();
    if let [(level, files)] = levels.as_slice()
        && let [file] = files.as_slice()
    {
        return Split::Quarantine {
            level: *level,
            file_id: file.id,
        };
    }
    if levels.len() > 1 {
        return Split::Probes(levels.into_iter().cloned().collect());
    }
    let Some((level, files)) = levels.first() else {
        return Split::Probes(Vec::new());
    };
    let mut files = files.clone();
    if *level == 0 {
        files.sort_by_key(|f| (f.largest_seq, f.id));
    } else {
        files.sort_by(|a, b| a.smallest.cmp(&b.smallest));
    }
    let second = files.split_off(files.len() / 2);
    Split::Probes(vec![(*level, files), (*level, second)])
}

/// The version the picker sees for a table with quarantined files `poisoned`: without
/// its quarantined L0 files (`None`: the real version will do), and with the deeper
/// quarantined files added to `locked`.
pub fn picker_view(
    version: &Version,
    poisoned: &BTreeSet<u64>,
    locked: &mut BTreeSet<u64>,
) -> Option<Version> {
    if poisoned.is_empty() {
        return None;
    }
    let mut view = version.clone();
    let mut hidden = false;
    for (level, files) in view.levels.iter_mut().enumerate() {
        if level == 0 {
            let before = files.len();
            files.retain(|f| !poisoned.contains(&f.id));
            hidden |= files.len() != before;
        } else {
            locked.extend(
                files
                    .iter()
                    .map(|f| f.id)
                    .filter(|id| poisoned.contains(id)),
            );
        }
    }
    hidden.then_some(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use catalog::TaskState;
    use lsm::manifest::VersionEdit;

    fn file(id: u64, a: &str, b: &str, seq: u64) -> FileMeta {
        FileMeta {
            id,
            size: 100,
            smallest: Bytes::copy_from_slice(a.as_bytes()),
            largest: Bytes::copy_from_slice(b.as_bytes()),
            smallest_seq: seq,
            largest_seq: seq,
            entries: 1,
            tombstones: 0,
        }
    }

    fn ids(files: &[FileMeta]) -> Vec<u64> {
        files.iter().map(|f| f.id).collect()
    }

    fn task(reason: &str, errors: usize) -> TaskRecord {
        let e = ErrorRecord {
            attempt: 1,
            kind: "corruption".into(),
            message: "bad block".into(),
            file: String::new(),
            offset: 0,
            retriable: false,
            at_ms: 0,
        };
        TaskRecord {
            id: 1,
            spec: TaskSpec::Compaction {
                table: "t".into(),
                inputs: vec![(0, vec![file(1, "a", "b", 1)])],
                output_level: 1,
                bottommost: false,
                target_file_size: 1,
                trivial_move: false,
                reason: reason.into(),
                wal_inputs: Vec::new(),
            },
            state: TaskState::Running,
            attempt: 1,
            attempts: vec![],
            errors: vec![e; errors],
            created_at_ms: 0,
            not_before_ms: 0,
            priority: 0,
            finished_at_ms: 0,
            staged_files: None,
            trace_parent: String::new(),
        }
    }

    #[test]
    fn a_replay_corruption_naming_a_segment_is_retried_once_then_quarantines_it() {
        let seg = "tables/t/wal/00000000000000000101.wal";
        let corrupt = ErrorRecord {
            attempt: 1,
            kind: "corruption".into(),
            message: "corrupt record".into(),
            file: seg.into(),
            offset: 77,
            retriable: false,
            at_ms: 0,
        };
        let mut t = task("replay", 0);
        t.spec = TaskSpec::WalReplay {
            table: "t".into(),
            checkpoint: 0,
            recovery_mode: String::new(),
            explicit_start: false,
            skip_segments: Vec::new(),
        };
        assert_eq!(
            wal_poison_verdict(&t, &corrupt),
            Some((Verdict::Retry, 101))
        );
        t.errors.push(corrupt.clone());
        assert_eq!(
            wal_poison_verdict(&t, &corrupt),
            Some((Verdict::Bisect, 101))
        );
        // Another table's segment, a path that is not a segment, another kind: not ours.
        for (file, kind) in [
            ("tables/u/wal/00000000000000000101.wal", "corruption"),
            ("tables/t/wal/101.wal", "corruption"),
            ("tables/t/sst/00000000000000000101.sst", "corruption"),
            (seg, "replay"),
        ] {
            let e = ErrorRecord {
                file: file.into(),
                kind: kind.into(),
                ..corrupt.clone()
            };
            assert_eq!(wal_poison_verdict(&t, &e), None, "{file} {kind}");
        }
        // A compaction is never judged here, a replay never by poison_verdict.
        assert_eq!(poison_verdict(&t, &corrupt), None);
    }

    #[test]
    fn corruption_is_retried_once_then_bisected_and_a_probe_bisects_at_once() {
        let t = task("L0 file count 4 >= 4", 0);
        let corrupt = t_error("corruption");
        assert_eq!(poison_verdict(&t, &corrupt), Some(Verdict::Retry));
        assert_eq!(
            poison_verdict(&task("L0", 1), &corrupt),
            Some(Verdict::Bisect)
        );
        let probe = task(&format!("{BISECT_REASON} of task 7: 8 file(s) of L0"), 0);
        assert!(is_probe(&probe.spec));
        assert_eq!(poison_verdict(&probe, &corrupt), Some(Verdict::Bisect));
        assert_eq!(poison_verdict(&t, &t_error("disk_space")), None);
        assert_eq!(
            poison_verdict(
                &TaskRecord {
                    spec: TaskSpec::StatisticsUpdate { table: "t".into() },
                    ..t
                },
                &corrupt
            ),
            None
        );
    }

    fn t_error(kind: &str) -> ErrorRecord {
        ErrorRecord {
            attempt: 1,
            kind: kind.into(),
            message: String::new(),
            file: String::new(),
            offset: 0,
            retriable: false,
            at_ms: 0,
        }
    }

    #[test]
    fn bisection_splits_levels_then_halves_in_order_until_one_file_is_left() {
        // Two levels: one probe each.
        let l0 = vec![file(3, "a", "z", 30), file(1, "a", "z", 10)];
        let l1 = vec![file(9, "a", "m", 1)];
        match split(&[(0, l0.clone()), (1, l1.clone())]) {
            Split::Probes(p) => assert_eq!(p, vec![(0, l0.clone()), (1, l1)]),
            other => panic!("{other:?}"),
        }
        // L0 halves by sequence number.
        let l0: Vec<FileMeta> = (1..=5).rev().map(|i| file(i, "a", "z", i * 10)).collect();
        match split(&[(0, l0)]) {
            Split::Probes(p) => {
                assert_eq!(ids(&p[0].1), vec![1, 2]);
                assert_eq!(ids(&p[1].1), vec![3, 4, 5]);
            }
            other => panic!("{other:?}"),
        }
        // Deeper levels by key: each half is a contiguous key range of the level.
        let l2 = vec![
            file(7, "m", "n", 1),
            file(5, "a", "b", 1),
            file(6, "c", "d", 1),
        ];
        match split(&[(2, l2)]) {
            Split::Probes(p) => {
                assert_eq!(ids(&p[0].1), vec![5]);
                assert_eq!(ids(&p[1].1), vec![6, 7]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            split(&[(0, vec![]), (3, vec![file(4, "a", "b", 1)])]),
            Split::Quarantine {
                level: 3,
                file_id: 4
            }
        );
    }

    #[test]
    fn the_picker_does_not_see_quarantined_l0_files_and_finds_deeper_ones_locked() {
        let v = Version::new(3)
            .apply(&VersionEdit {
                removed: vec![],
                added: vec![
                    (0, file(1, "a", "z", 10)),
                    (0, file(2, "a", "z", 20)),
                    (1, file(3, "a", "c", 5)),
                ],
            })
            .expect("fixture");
        let mut locked = BTreeSet::new();
        assert!(picker_view(&v, &BTreeSet::new(), &mut locked).is_none());
        let view = picker_view(&v, &BTreeSet::from([1, 3]), &mut locked).expect("view");
        assert_eq!(ids(&view.levels[0]), vec![2]);
        assert_eq!(ids(&view.levels[1]), vec![3]);
        assert_eq!(locked, BTreeSet::from([3]));
        let mut locked = BTreeSet::new();
        assert!(picker_view(&v, &BTreeSet::from([3]), &mut locked).is_none());
        assert_eq!(locked, BTreeSet::from([3]));
    }
}
