//! Size-tiered compaction, as Cassandra's STCS.
//!
//! Every file is a *tier* in L0 (they overlap freely) and a compaction writes its inputs
//! back to L0 as one bigger file (`target_file_size = u64::MAX`: not split, or the pieces
//! would be small tiers again). Files in deeper levels (a table that switched strategy) are
//! not tiered; they still count when deciding `bottommost`.
//!
//! *Buckets*: unlocked L0 files sorted by size (smallest first) each join the first bucket
//! whose average size `avg` satisfies `bucket_low × avg ≤ size ≤ bucket_high × avg`, or
//! where both the file and `avg` are below `min_sstable_size` (small files all land in one
//! bucket); otherwise they start a new bucket. A bucket with at least `min_threshold` files
//! is a candidate and is compacted whole, up to its `max_threshold` smallest files. (Files
//! are visited smallest first, as Cassandra does, so a file is never below its bucket's
//! average and in practice `bucket_high` decides; `bucket_low` is kept for Cassandra's
//! rule as written and applies to any other visiting order.)
//! Candidates are ordered by file count, then smallest average size. (Cassandra orders by
//! read *hotness*, which a pure picker over a manifest does not know; most files first is
//! its fallback and merges the most tiers per byte written.) Every candidate becomes a plan:
//! buckets share no file.
//!
//! `bottommost`: tombstones may be dropped only if the plan holds every file of the table
//! (any level, locked or not) that overlaps its key range: otherwise an older version of a
//! deleted key may live in a file outside the plan.
//!
//! Tombstone trigger (lower priority): an unlocked file with more than `tombstone_ratio`
//! tombstones and at least `tombstone_min_entries` entries is rewritten alone, in place,
//! if no other file overlaps it (as Cassandra without `unchecked_tombstone_compaction`:
//! with an overlapping file its tombstones could not be dropped, and the rewrite would
//! reclaim nothing).
//!
//! Readers must merge L0 files by internal key (sequence numbers decide), never stop at the
//! first L0 file that has the key: merging tiers of different ages interleaves the
//! sequence ranges of L0 files.

use serde::{Deserialize, Serialize};

use super::{
    CompactionPlan, DEFAULT_TOMBSTONE_MIN_ENTRIES, PickerInput, PickerOutput, Trigger, count,
    estimate, files_phrase, fmt_bytes, hull,
};
use crate::manifest::{FileMeta, Version};

/// Knobs of [`size_tiered`] (Cassandra's names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeTieredConfig {
    /// Files a bucket needs to be compacted (the compaction `trigger_threshold`).
    pub min_threshold: u32,
    /// Most files merged by one compaction.
    pub max_threshold: u32,
    /// A file joins a bucket if its size is at least `bucket_low ×` the bucket's average...
    pub bucket_low: f64,
    /// ... and at most `bucket_high ×` it.
    pub bucket_high: f64,
    /// Files below this size all share one bucket.
    pub min_sstable_size: u64,
    /// A file whose tombstones exceed this fraction of its entries is compacted alone.
    pub tombstone_ratio: f64,
    /// ... if it has at least this many entries.
    pub tombstone_min_entries: u64,
}

impl Default for SizeTieredConfig {
    fn default() -> Self {
        Self {
            min_threshold: 4,
            max_threshold: 32,
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_size: 50 << 20,
            tombstone_ratio: 0.5,
            tombstone_min_entries: DEFAULT_TOMBSTONE_MIN_ENTRIES,
        }
    }
}

/// Files of similar size.
struct Bucket<'a> {
    files: Vec<&'a FileMeta>,
    avg: f64,
}

/// The size-tiered picker (see the module docs).
pub fn size_tiered(config: &SizeTieredConfig, input: &PickerInput<'_>) -> PickerOutput {
    let version = input.version;
    let mut out = PickerOutput::default();
    let Some(l0) = version.levels.first() else {
        return out;
    };
    let deeper = version.levels.iter().skip(1).map(Vec::len).sum::<usize>();
    if deeper > 0 {
        out.skipped.push(format!(
            "{} in levels >= 1 not tiered by size_tiered (they count for bottommost)",
            count(deeper, "file")
        ));
    }
    let (locked, mut free): (Vec<&FileMeta>, Vec<&FileMeta>) =
        l0.iter().partition(|f| input.locked.contains(&f.id));
    if !locked.is_empty() {
        out.skipped.push(format!(
            "L0: {} locked by running compactions",
            files_phrase(locked.iter().map(|f| f.id))
        ));
    }
    free.sort_by_key(|f| (f.size, f.id));

    let min_threshold = config.min_threshold.max(2) as usize;
    let max_threshold = (config.max_threshold as usize).max(min_threshold);
    let mut candidates = Vec::new();
    for mut bucket in buckets(config, &free) {
        if bucket.files.len() < min_threshold {
            out.skipped.push(format!(
                "bucket of {} of ~{}: fewer than min_threshold {min_threshold}",
                count(bucket.files.len(), "file"),
                fmt_bytes(bucket.avg as u64)
            ));
            continue;
        }
        if bucket.files.len() > max_threshold {
            out.skipped.push(format!(
                "bucket of {} files of ~{}: the {} largest wait (max_threshold {max_threshold})",
                bucket.files.len(),
                fmt_bytes(bucket.avg as u64),
                bucket.files.len() - max_threshold
            ));
            bucket.files.truncate(max_threshold);
            bucket.avg =
                bucket.files.iter().map(|f| f.size as f64).sum::<f64>() / bucket.files.len() as f64;
        }
        candidates.push(bucket);
    }
    candidates.sort_by(|a, b| {
        b.files
            .len()
            .cmp(&a.files.len())
            .then(a.avg.total_cmp(&b.avg))
    });
    for bucket in candidates {
        let reason = format!(
            "bucket of {} files of ~{} >= min_threshold {min_threshold}",
            bucket.files.len(),
            fmt_bytes(bucket.avg as u64)
        );
        let score = bucket.files.len() as f64 / min_threshold as f64;
        out.plans.push(plan(
            Trigger::SizeTieredBucket,
            version,
            bucket.files,
            reason,
            score,
        ));
    }

    let planned: Vec<u64> = out.plans.iter().flat_map(|p| p.input_ids()).collect();
    let mut dense: Vec<&FileMeta> = free
        .iter()
        .copied()
        .filter(|f| f.tombstone_ratio() > config.tombstone_ratio && !planned.contains(&f.id))
        .collect();
    dense.sort_by(|a, b| {
        b.tombstone_ratio()
            .total_cmp(&a.tombstone_ratio())
            .then(a.id.cmp(&b.id))
    });
    for f in dense {
        let reason = format!(
            "tombstones {:.0}% in file {} (L0: {} of {} entries)",
            f.tombstone_ratio() * 100.0,
            f.id,
            f.tombstones,
            f.entries
        );
        if f.entries < config.tombstone_min_entries {
            out.skipped.push(format!(
                "{reason}: fewer than {} entries",
                config.tombstone_min_entries
            ));
            continue;
        }
        let others: Vec<u64> = version
            .levels
            .iter()
            .flatten()
            .filter(|o| o.id != f.id && o.overlaps(&f.smallest, &f.largest))
            .map(|o| o.id)
            .collect();
        if !others.is_empty() {
            out.skipped.push(format!(
                "{reason}: overlaps {}, so its tombstones could not be dropped",
                files_phrase(others)
            ));
            continue;
        }
        let score = f.tombstone_ratio();
        out.plans
            .push(plan(Trigger::Tombstones, version, vec![f], reason, score));
    }
    out
}

/// Groups files (sorted by size, smallest first) into buckets of similar size.
fn buckets<'a>(config: &SizeTieredConfig, files: &[&'a FileMeta]) -> Vec<Bucket<'a>> {
    let small = config.min_sstable_size as f64;
    let mut buckets: Vec<Bucket<'a>> = Vec::new();
    for &f in files {
        let size = f.size as f64;
        let fits = |b: &Bucket<'_>| {
            (size >= b.avg * config.bucket_low && size <= b.avg * config.bucket_high)
                || (size < small && b.avg < small)
        };
        match buckets.iter_mut().find(|b| fits(b)) {
            Some(b) => {
                let n = b.files.len() as f64;
                b.avg = (b.avg * n + size) / (n + 1.0);
                b.files.push(f);
            }
            None => buckets.push(Bucket {
                files: vec![f],
                avg: size,
            }),
        }
    }
    buckets
}

fn plan(
    trigger: Trigger,
    version: &Version,
    mut files: Vec<&FileMeta>,
    reason: String,
    score: f64,
) -> CompactionPlan {
    // L0 order: newest first.
    files.sort_by(|a, b| b.largest_seq.cmp(&a.largest_seq).then(b.id.cmp(&a.id)));
    let bottommost = hull(files.iter().copied()).is_none_or(|(s, e)| {
        version
            .levels
            .iter()
            .flatten()
            .filter(|o| o.overlaps(s, e))
            .all(|o| files.iter().any(|f| f.id == o.id))
    });
    let mut plan = CompactionPlan {
        trigger,
        inputs: vec![(0, files.into_iter().cloned().collect())],
        output_level: 0,
        bottommost,
        trivial_move: false,
        target_file_size: u64::MAX,
        reason,
        score,
        estimated_read_bytes: 0,
        estimated_write_bytes: 0,
    };
    estimate(&mut plan);
    plan
}

#[cfg(test)]
mod tests {
    use super::super::test_util::*;
    use super::*;

    struct Case {
        name: &'static str,
        config: SizeTieredConfig,
        version: Version,
        locked: &'static [u64],
        want: Vec<Want>,
        skipped: &'static [&'static str],
    }

    /// L0 files over `[a, m]`, ids from `first`, one per size in MiB.
    fn tiers(first: u64, mib: &[u64]) -> Vec<FileMeta> {
        (first..)
            .zip(mib)
            .map(|(id, size)| file(id, "a", "m").mib(*size))
            .collect()
    }

    fn l0(files: Vec<FileMeta>) -> Version {
        version(vec![(0, files)])
    }

    fn cases() -> Vec<Case> {
        use Trigger::*;
        let stcs = SizeTieredConfig::default;
        vec![
            Case {
                name: "fewer than min_threshold similar files: nothing",
                config: stcs(),
                version: l0(tiers(1, &[100, 100, 100])),
                locked: &[],
                want: vec![],
                skipped: &["bucket of 3 files of ~100 MiB: fewer than min_threshold 4"],
            },
            Case {
                name: "min_threshold similar files merge into one L0 file, newest first",
                config: stcs(),
                version: l0(tiers(1, &[100, 110, 90, 120])),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    true,
                    "bucket of 4 files of ~105 MiB >= min_threshold 4",
                )],
                skipped: &[],
            },
            Case {
                name: "bucket_high is inclusive: 1.5 x the average joins",
                config: stcs(),
                version: l0(tiers(1, &[100, 100, 100, 150])),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    true,
                    "",
                )],
                skipped: &[],
            },
            Case {
                name: "above bucket_high a file starts a new bucket",
                config: stcs(),
                version: l0(tiers(1, &[100, 100, 100, 151])),
                locked: &[],
                want: vec![],
                skipped: &[
                    "bucket of 3 files of ~100 MiB",
                    "bucket of 1 file of ~151 MiB",
                ],
            },
            Case {
                name: "tiers: only the bucket with min_threshold files is compacted",
                config: stcs(),
                version: l0(tiers(1, &[100, 100, 100, 100, 400, 400, 400, 1000])),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    false,
                    "~100 MiB",
                )],
                skipped: &[
                    "bucket of 3 files of ~400 MiB",
                    "bucket of 1 file of ~1000 MiB",
                ],
            },
            Case {
                name: "min_sstable_size: small files share a bucket whatever their sizes",
                config: stcs(),
                version: l0(tiers(1, &[1, 5, 20, 40])),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    true,
                    "bucket of 4 files of ~16 MiB",
                )],
                skipped: &[],
            },
            Case {
                name: "min_sstable_size: a file above it must fit bucket_high",
                config: stcs(),
                version: l0(tiers(1, &[1, 5, 20, 60])),
                locked: &[],
                want: vec![],
                skipped: &["bucket of 3 files of ~9 MiB", "bucket of 1 file of ~60 MiB"],
            },
            Case {
                name: "max_threshold: the smallest files go first",
                config: SizeTieredConfig {
                    max_threshold: 4,
                    ..stcs()
                },
                version: l0(tiers(1, &[105, 104, 103, 102, 101, 100])),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[6, 5, 4, 3])],
                    0,
                    false,
                    false,
                    "bucket of 4 files of ~102 MiB",
                )],
                skipped: &["bucket of 6 files of ~102 MiB: the 2 largest wait (max_threshold 4)"],
            },
            Case {
                name: "buckets: most files first, then the smallest average",
                config: stcs(),
                version: l0([
                    tiers(1, &[1000; 4]),
                    tiers(11, &[100; 5]),
                    tiers(21, &[10_000; 4]),
                ]
                .concat()),
                locked: &[],
                want: vec![
                    want(
                        SizeTieredBucket,
                        &[(0, &[15, 14, 13, 12, 11])],
                        0,
                        false,
                        false,
                        "5 files",
                    ),
                    want(
                        SizeTieredBucket,
                        &[(0, &[4, 3, 2, 1])],
                        0,
                        false,
                        false,
                        "~1000 MiB",
                    ),
                    want(
                        SizeTieredBucket,
                        &[(0, &[24, 23, 22, 21])],
                        0,
                        false,
                        false,
                        "~9.8 GiB",
                    ),
                ],
                skipped: &[],
            },
            Case {
                name: "locked files are not tiered",
                config: stcs(),
                version: l0(tiers(1, &[100; 5])),
                locked: &[1, 2],
                want: vec![],
                skipped: &[
                    "L0: files 2, 1 locked by running compactions",
                    "bucket of 3 files of ~100 MiB",
                ],
            },
            Case {
                name: "bottommost only if every overlapping file is in the plan",
                config: stcs(),
                version: l0([tiers(1, &[100; 4]), vec![file(9, "k", "z").mib(2000)]].concat()),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    false,
                    "",
                )],
                skipped: &[],
            },
            Case {
                name: "bottommost when no file outside the plan overlaps",
                config: stcs(),
                version: l0([tiers(1, &[100; 4]), vec![file(9, "n", "z").mib(2000)]].concat()),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    true,
                    "",
                )],
                skipped: &[],
            },
            Case {
                name: "files in deeper levels are not tiered but count for bottommost",
                config: stcs(),
                version: version(vec![
                    (0, tiers(1, &[100; 4])),
                    (6, vec![file(60, "c", "d")]),
                ]),
                locked: &[],
                want: vec![want(
                    SizeTieredBucket,
                    &[(0, &[4, 3, 2, 1])],
                    0,
                    false,
                    false,
                    "",
                )],
                skipped: &["1 file in levels >= 1 not tiered by size_tiered"],
            },
            Case {
                name: "tombstones: a file overlapping nothing is rewritten alone",
                config: stcs(),
                version: l0(vec![
                    file(1, "a", "c").mib(10).tombs(10_000, 7_000),
                    file(2, "x", "z").mib(10),
                ]),
                locked: &[],
                want: vec![want(
                    Tombstones,
                    &[(0, &[1])],
                    0,
                    false,
                    true,
                    "tombstones 70% in file 1 (L0: 7000 of 10000 entries)",
                )],
                skipped: &["bucket of 2 files of ~10 MiB"],
            },
            Case {
                name: "tombstones: skipped when another file overlaps",
                config: stcs(),
                version: l0(vec![
                    file(1, "a", "m").mib(10).tombs(10_000, 7_000),
                    file(2, "k", "z").mib(10),
                ]),
                locked: &[],
                want: vec![],
                skipped: &["overlaps file 2, so its tombstones could not be dropped"],
            },
            Case {
                name: "tombstones: a file with few entries is left alone",
                config: stcs(),
                version: l0(vec![file(1, "a", "m").tombs(100, 90)]),
                locked: &[],
                want: vec![],
                skipped: &["tombstones 90% in file 1 (L0: 90 of 100 entries): fewer than 1000"],
            },
        ]
    }

    #[test]
    fn size_tiered_cases() {
        for case in cases() {
            let locked = ids(case.locked);
            let out = size_tiered(
                &case.config,
                &PickerInput {
                    version: &case.version,
                    locked: &locked,
                },
            );
            check(case.name, &out, &locked, &case.want, case.skipped);
            for plan in &out.plans {
                assert_eq!(
                    plan.target_file_size,
                    u64::MAX,
                    "{}: one output file",
                    case.name
                );
            }
        }
    }

    #[test]
    fn bucket_low_rejects_a_file_below_the_average() {
        let config = SizeTieredConfig {
            min_sstable_size: 0,
            ..SizeTieredConfig::default()
        };
        // Visiting largest first, as no picker does, is the only way to reach bucket_low.
        for (sizes, want) in [
            (&[100, 50][..], vec![2]),
            (&[100, 49][..], vec![1, 1]),
            (&[100, 150][..], vec![2]),
            (&[100, 151][..], vec![1, 1]),
        ] {
            let files = tiers(1, sizes);
            let refs: Vec<&FileMeta> = files.iter().collect();
            let got: Vec<usize> = buckets(&config, &refs)
                .iter()
                .map(|b| b.files.len())
                .collect();
            assert_eq!(got, want, "{sizes:?}");
        }
    }
}
