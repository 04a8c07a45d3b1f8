//! Subcompactions: cutting a compaction's key space into ranges that run on their own
//! threads.
//!
//! A range is a half-open interval of user keys, so every version of a user key falls in
//! exactly one range: each range drops shadowed versions and tombstones on its own exactly
//! as one merge over everything would, and its outputs never share a user key with another
//! range's. Cuts are placed at the inputs' boundary keys (smallest and largest keys of the
//! files), the only points where the manifest says anything about where data is. How many
//! bytes lie between two boundary keys is estimated by spreading each file's size evenly
//! over the boundary intervals it spans; each cut is then the file start nearest to the
//! next `1/n` of the whole. Pure: metadata in, ranges out.
//!
//! File boundaries alone cannot split inputs that all span the same keys (L0 files of a
//! uniformly spread workload): [`plan_ranges_sampled`] also takes keys sampled from the
//! inputs' index blocks (`SstReader::sample_user_keys`), which sit where the data is dense,
//! as more anchors and cut candidates.

use lsm::manifest::FileMeta;

/// User keys `start <= k < end`; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRange {
    pub start: Option<Vec<u8>>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Every key.
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether a file with keys in `[smallest, largest]` may hold keys of this range.
    pub fn overlaps(&self, smallest: &[u8], largest: &[u8]) -> bool {
        self.start.as_deref().is_none_or(|s| largest >= s)
            && self.end.as_deref().is_none_or(|e| smallest < e)
    }

    /// Whether `user_key` is past the end of the range.
    pub fn is_past_end(&self, user_key: &[u8]) -> bool {
        self.end.as_deref().is_some_and(|e| user_key >= e)
    }
}

/// Splits the key space of `files` into at most `max_ranges` ranges of about equal input
/// bytes, none below `min_range_bytes` (so small compactions stay on one thread). The
/// ranges are in key order, cover every key, and do not overlap.
pub fn plan_ranges<'a>(
    files: impl IntoIterator<Item = &'a FileMeta>,
    max_ranges: usize,
    min_range_bytes: u64,
) -> Vec<KeyRange> {
    plan_ranges_sampled(files, &[], max_ranges, min_range_bytes)
}

/// [`plan_ranges`] with `samples`: user keys from inside the inputs (index-block
/// separators, evenly spread over each file's blocks), used as anchors and cut candidates
/// besides the file boundaries.
pub fn plan_ranges_sampled<'a>(
    files: impl IntoIterator<Item = &'a FileMeta>,
    samples: &[Vec<u8>],
    max_ranges: usize,
    min_range_bytes: u64,
) -> Vec<KeyRange> {
    let files: Vec<&FileMeta> = files.into_iter().collect();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let by_size = usize::try_from(total / min_range_bytes.max(1)).unwrap_or(usize::MAX);
    let wanted = max_ranges.min(by_size).max(1);
    if wanted == 1 {
        return vec![KeyRange::all()];
    }

    let mut anchors: Vec<&[u8]> = files
        .iter()
        .flat_map(|f| [f.smallest.as_ref(), f.largest.as_ref()])
        .chain(samples.iter().map(Vec::as_slice))
        .collect();
    anchors.sort_unstable();
    anchors.dedup();
    if anchors.len() < 2 {
        return vec![KeyRange::all()];
    }

    // weights[j]: estimated bytes with keys in [anchors[j], anchors[j + 1]).
    let intervals = anchors.len() - 1;
    let mut weights = vec![0f64; intervals];
    let index = |key: &[u8]| anchors.partition_point(|a| *a < key);
    for f in &files {
        let (i0, i1) = (index(&f.smallest), index(&f.largest));
        if i1 > i0 {
            let share = f.size as f64 / (i1 - i0) as f64;
            for w in &mut weights[i0..i1] {
                *w += share;
            }
        } else {
            // A single-key file: its bytes are at its key.
            weights[i0.min(intervals - 1)] += f.size as f64;
        }
    }

    let starts: std::collections::BTreeSet<&[u8]> =
        files.iter().map(|f| f.smallest.as_ref()).collect();
    let sampled: std::collections::BTreeSet<&[u8]> = samples.iter().map(Vec::as_slice).collect();
    // Cut candidates: the smallest key of a file (cutting at a largest key would split
    // that file's last key off), after the first key, with the bytes that lie before it.
    let mut before = 0f64;
    let mut candidates: Vec<(&[u8], f64)> = Vec::new();
    for (i, anchor) in anchors.iter().enumerate().skip(1) {
        before += weights[i - 1];
        if starts.contains(anchor) || sampled.contains(anchor) {
            candidates.push((anchor, before));
        }
    }
    // For each share, the candidate nearest its ideal position, in increasing order.
    let step = before / wanted as f64;
    let mut cuts: Vec<&[u8]> = Vec::with_capacity(wanted - 1);
    let mut from = 0;
    for k in 1..wanted {
        let target = step * k as f64;
        let best = candidates
            .iter()
            .enumerate()
            .skip(from)
            .min_by(|(_, a), (_, b)| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()));
        if let Some((i, (key, _))) = best {
            cuts.push(key);
            from = i + 1;
        }
    }

    let mut ranges = Vec::with_capacity(cuts.len() + 1);
    let mut start: Option<Vec<u8>> = None;
    for cut in cuts {
        ranges.push(KeyRange {
            start: start.take(),
            end: Some(cut.to_vec()),
        });
        start = Some(cut.to_vec());
    }
    ranges.push(KeyRange { start, end: None });
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(a: &str, b: &str, size: u64) -> FileMeta {
        FileMeta {
            id: 0,
            size,
            smallest: a.as_bytes().to_vec().into(),
            largest: b.as_bytes().to_vec().into(),
            smallest_seq: 0,
            largest_seq: 0,
            entries: 1,
            tombstones: 0,
        }
    }

    fn cuts(ranges: &[KeyRange]) -> Vec<String> {
        ranges
            .iter()
            .filter_map(|r| r.end.as_ref())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect()
    }

    /// Ranges chain: the first starts unbounded, each ends where the next starts, the
    /// last ends unbounded.
    fn assert_chained(ranges: &[KeyRange]) {
        assert_eq!(ranges.first().and_then(|r| r.start.clone()), None);
        assert_eq!(ranges.last().and_then(|r| r.end.clone()), None);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert!(w[0].start < w[1].start || w[0].start.is_none());
        }
    }

    #[test]
    fn equal_disjoint_files_split_evenly() {
        let files = [
            file("a", "b", 100),
            file("c", "d", 100),
            file("e", "f", 100),
            file("g", "h", 100),
        ];
        let r = plan_ranges(&files, 4, 1);
        assert_chained(&r);
        assert_eq!(cuts(&r), ["c", "e", "g"]);
        let r = plan_ranges(&files, 2, 1);
        assert_eq!(cuts(&r), ["e"]);
    }

    #[test]
    fn one_range_when_small_or_single_threaded() {
        let files = [file("a", "m", 100), file("n", "z", 100)];
        assert_eq!(plan_ranges(&files, 1, 1), [KeyRange::all()]);
        assert_eq!(plan_ranges(&files, 8, 150), [KeyRange::all()]);
        assert_eq!(plan_ranges(&files, 8, 100).len(), 2);
        assert_eq!(
            plan_ranges(&[file("k", "k", 1 << 30)], 8, 1),
            [KeyRange::all()]
        );
        assert_eq!(plan_ranges(&[], 8, 0), [KeyRange::all()]);
    }

    #[test]
    fn a_wide_file_is_spread_over_the_boundaries_inside_it() {
        // One big file over a..z and small ones inside it: the cut follows the big file's
        // bytes, not just the small files' starts.
        let files = [
            file("a", "z", 1000),
            file("b", "c", 10),
            file("m", "n", 10),
            file("x", "y", 10),
        ];
        let r = plan_ranges(&files, 2, 1);
        assert_chained(&r);
        assert_eq!(cuts(&r), ["m"]);
    }

    #[test]
    fn never_more_ranges_than_boundaries_allow() {
        let files = [file("a", "b", 1000), file("a", "b", 1000)];
        let r = plan_ranges(&files, 8, 1);
        assert_chained(&r);
        assert_eq!(r.len(), 1, "{r:?}");
    }

    #[test]
    fn overlap_and_end_checks() {
        let r = KeyRange {
            start: Some(b"c".to_vec()),
            end: Some(b"f".to_vec()),
        };
        assert!(r.overlaps(b"a", b"c"));
        assert!(r.overlaps(b"e", b"z"));
        assert!(!r.overlaps(b"a", b"b"));
        assert!(!r.overlaps(b"f", b"z"));
        assert!(r.is_past_end(b"f") && !r.is_past_end(b"ez"));
        assert!(KeyRange::all().overlaps(b"a", b"b") && !KeyRange::all().is_past_end(b"z"));
    }

    #[test]
    fn samples_split_inputs_that_all_span_the_same_keys() {
        // Four L0 files over the whole key space: file boundaries offer no cut.
        let files: Vec<FileMeta> = (0..4).map(|_| file("a000", "z999", 100 << 20)).collect();
        assert_eq!(plan_ranges(&files, 2, 1).len(), 1, "no cut inside the data");
        // Index samples of each file, evenly spread: the cut lands in the middle.
        let samples: Vec<Vec<u8>> = (0..4)
            .flat_map(|_| {
                (1..64).map(|i| {
                    format!("{}{:03}", (b'a' + (i * 25 / 64) as u8) as char, 0).into_bytes()
                })
            })
            .collect();
        let split = plan_ranges_sampled(&files, &samples, 2, 1);
        assert_eq!(split.len(), 2, "{split:?}");
        let cut = split[0].end.clone().expect("a cut");
        assert!(
            cut.as_slice() > b"k".as_slice() && cut.as_slice() < b"p".as_slice(),
            "{:?}",
            String::from_utf8_lossy(&cut)
        );
        assert_eq!(split[1].start.as_ref(), Some(&cut));
    }
}
