//! The read and compaction paths against a model.
//!
//! A random history of puts, overwrites and deletes over a small key space (with user keys
//! that are prefixes of each other) is split by sequence number into several sources, as a
//! table's data is split between the memtable, frozen memtables and SSTs. Whatever the
//! split, the merged user view at any snapshot must equal a `BTreeMap` model's view, and a
//! compaction's output, read back as the only source, must too.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use lsm::testing::{Entry, VecIterator, collect_entries};
use lsm::{
    BoxedIterator, CompactionIterator, InternalIterator, MAX_SEQNO, Memtable, MergingIterator,
    ParsedInternalKey, SeqNo, ValueKind, VisibleIterator,
};
use proptest::prelude::*;

const KEYS: [&[u8]; 8] = [b"", b"a", b"a\0", b"aa", b"ab", b"b", b"ba", b"c"];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, Vec<u8>),
    Delete(usize),
}

/// One write: `(user key, seq, value or None for a tombstone)`.
type Write = (Vec<u8>, SeqNo, Option<Vec<u8>>);

/// A version of a key: its seq and its value, `None` for a tombstone.
type Version = (SeqNo, Option<Vec<u8>>);

/// Every version of every key, the history the sources are built from.
#[derive(Debug, Default)]
struct Model {
    versions: BTreeMap<Vec<u8>, Vec<Version>>,
    writes: Vec<Write>,
}

impl Model {
    fn new(ops: &[Op]) -> Self {
        let mut m = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let seq = i as SeqNo + 1;
            let (key, value) = match op {
                Op::Put(k, v) => (KEYS[*k].to_vec(), Some(v.clone())),
                Op::Delete(k) => (KEYS[*k].to_vec(), None),
            };
            m.versions
                .entry(key.clone())
                .or_default()
                .push((seq, value.clone()));
            m.writes.push((key, seq, value));
        }
        m
    }

    /// The newest version of each key at `snapshot`, tombstones included.
    fn newest(&self, snapshot: SeqNo) -> BTreeMap<Vec<u8>, Version> {
        self.versions
            .iter()
            .filter_map(|(k, vs)| {
                let v = vs.iter().rev().find(|(s, _)| *s <= snapshot)?;
                Some((k.clone(), v.clone()))
            })
            .collect()
    }

    /// What a reader at `snapshot` sees.
    fn view(&self, snapshot: SeqNo) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.newest(snapshot)
            .into_iter()
            .filter_map(|(k, (_, v))| Some((k, v?)))
            .collect()
    }
}

/// A history and how to split it into sources.
#[derive(Debug, Clone)]
struct Scenario {
    ops: Vec<Op>,
    /// Split points into `ops` (sorted, deduplicated by `sources`).
    cuts: Vec<usize>,
    /// Also add a copy of one frozen memtable as an SST source, as while a flush's output
    /// is already visible but the memtable is not yet dropped.
    duplicate: Option<usize>,
    snapshots: Vec<SeqNo>,
    seeks: Vec<(usize, Option<usize>)>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..KEYS.len(), proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(k, v)| Op::Put(k, v)),
        1 => (0..KEYS.len()).prop_map(Op::Delete),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    proptest::collection::vec(op(), 0..80).prop_flat_map(|ops| {
        let n = ops.len();
        (
            Just(ops),
            proptest::collection::vec(0..=n, 0..5),
            proptest::option::of(0..5usize),
            proptest::collection::vec(0..=n as SeqNo + 1, 0..4),
            proptest::collection::vec((0..KEYS.len(), proptest::option::of(0..KEYS.len())), 1..6),
        )
            .prop_map(|(ops, cuts, duplicate, snapshots, seeks)| Scenario {
                ops,
                cuts,
                duplicate,
                snapshots,
                seeks,
            })
    })
}

/// The sources, newest first: the newest slice of the history as a mutable memtable, older
/// slices alternately as frozen memtables and as sorted "SST" runs.
fn sources(model: &Model, scenario: &Scenario) -> Vec<BoxedIterator> {
    let mut cuts = scenario.cuts.clone();
    cuts.push(0);
    cuts.push(model.writes.len());
    cuts.sort_unstable();
    cuts.dedup();
    let slices: Vec<&[Write]> = cuts.windows(2).map(|w| &model.writes[w[0]..w[1]]).collect();
    let mut out: Vec<BoxedIterator> = Vec::new();
    for (age, slice) in slices.iter().rev().enumerate() {
        if age % 2 == 0 {
            let table = Arc::new(Memtable::new(age as u64));
            for (key, seq, value) in slice.iter() {
                let kind = if value.is_some() {
                    ValueKind::Put
                } else {
                    ValueKind::Delete
                };
                table
                    .insert(key, *seq, kind, value.as_deref().unwrap_or_default())
                    .expect("insert");
            }
            if age > 0 {
                table.freeze();
            }
            out.push(Box::new(table.iter()));
            if scenario.duplicate == Some(age) {
                out.push(Box::new(sst(slice)));
            }
        } else {
            out.push(Box::new(sst(slice)));
        }
    }
    out
}

fn sst(writes: &[Write]) -> VecIterator {
    VecIterator::new(
        writes
            .iter()
            .map(|(key, seq, value)| {
                let kind = if value.is_some() {
                    ValueKind::Put
                } else {
                    ValueKind::Delete
                };
                let mut k = Vec::new();
                lsm::key::encode_internal_key(key, *seq, kind, &mut k);
                (k, value.clone().unwrap_or_default())
            })
            .collect(),
    )
}

fn scan<I: InternalIterator>(view: &mut VisibleIterator<I>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut last: Option<Vec<u8>> = None;
    while view.valid() {
        let key = view.key().to_vec();
        assert!(
            last.as_ref().is_none_or(|l| *l < key),
            "keys ascend and repeat never"
        );
        out.insert(key.clone(), view.value().to_vec());
        last = Some(key);
        view.next().expect("next");
    }
    out
}

/// Runs a compaction over all sources; returns its output entries and checks the stats.
fn compact(
    model: &Model,
    scenario: &Scenario,
    bottommost: bool,
    snapshots: &[SeqNo],
) -> Vec<Entry> {
    let merged = MergingIterator::new(sources(model, scenario));
    let mut it = CompactionIterator::new(merged, bottommost, snapshots);
    it.seek_to_first().expect("seek");
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next().expect("next");
    }
    let stats = it.stats();
    let dup = scenario.duplicate.is_some_and(|d| d % 2 == 0) as u64;
    assert!(stats.input_entries >= model.writes.len() as u64);
    assert!(stats.input_entries <= model.writes.len() as u64 * (1 + dup));
    assert_eq!(stats.output_entries, out.len() as u64);
    assert_eq!(
        stats.input_entries,
        stats.output_entries + stats.shadowed_dropped + stats.tombstones_dropped
    );
    out
}

fn decoded(entries: &[Entry]) -> Vec<Write> {
    entries
        .iter()
        .map(|(k, v)| {
            let p = ParsedInternalKey::parse(k).expect("key");
            let value = (p.kind == ValueKind::Put).then(|| v.clone());
            (p.user_key.to_vec(), p.seq, value)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merged_view_equals_the_model_at_every_snapshot(s in scenario()) {
        let model = Model::new(&s.ops);
        let n = model.writes.len() as SeqNo;
        let mut snapshots = s.snapshots.clone();
        snapshots.extend([0, n, MAX_SEQNO]);
        for &snapshot in &snapshots {
            let mut view = VisibleIterator::new(MergingIterator::new(sources(&model, &s)), snapshot);
            view.seek_to_first().expect("seek");
            prop_assert_eq!(scan(&mut view), model.view(snapshot), "snapshot {}", snapshot);

            for key in KEYS {
                let want = model.view(snapshot).get(key).cloned();
                prop_assert_eq!(view.get(key).expect("get").map(<[u8]>::to_vec), want);
            }

            for &(lo, hi) in &s.seeks {
                let (lo, hi) = (KEYS[lo], hi.map(|h| KEYS[h]));
                let mut view = VisibleIterator::new(MergingIterator::new(sources(&model, &s)), snapshot);
                if let Some(hi) = hi {
                    view = view.with_upper_bound(hi);
                }
                view.seek(lo).expect("seek");
                let upper = hi.map_or(Bound::Unbounded, |h| Bound::Excluded(h.to_vec()));
                let want: BTreeMap<_, _> = if hi.is_some_and(|h| h < lo) {
                    BTreeMap::new()
                } else {
                    model
                        .view(snapshot)
                        .range((Bound::Included(lo.to_vec()), upper))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                };
                prop_assert_eq!(scan(&mut view), want, "seek {:?}..{:?} at {}", lo, hi, snapshot);
            }
        }
    }

    #[test]
    fn bottommost_compaction_keeps_exactly_the_live_keys(s in scenario()) {
        let model = Model::new(&s.ops);
        let out = decoded(&compact(&model, &s, true, &[]));
        let want: Vec<_> = model
            .newest(MAX_SEQNO)
            .into_iter()
            .filter(|(_, (_, v))| v.is_some())
            .map(|(k, (seq, v))| (k, seq, v))
            .collect();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn compaction_above_the_bottom_keeps_the_newest_version_and_tombstones(s in scenario()) {
        let model = Model::new(&s.ops);
        let out = decoded(&compact(&model, &s, false, &[]));
        let want: Vec<_> = model
            .newest(MAX_SEQNO)
            .into_iter()
            .map(|(k, (seq, v))| (k, seq, v))
            .collect();
        prop_assert_eq!(out, want);
    }

    #[test]
    fn compaction_output_alone_reads_like_the_model(s in scenario(), bottommost in any::<bool>()) {
        let model = Model::new(&s.ops);
        // Snapshots the compaction must preserve, and a reader at the newest data.
        let out = compact(&model, &s, bottommost, &s.snapshots);
        let mut readers = s.snapshots.clone();
        readers.push(MAX_SEQNO);
        for snapshot in readers {
            let source: BoxedIterator = Box::new(VecIterator::new(out.clone()));
            let mut view = VisibleIterator::new(MergingIterator::new(vec![source]), snapshot);
            view.seek_to_first().expect("seek");
            prop_assert_eq!(scan(&mut view), model.view(snapshot), "snapshot {}", snapshot);
        }
        // Output is strictly ordered: no duplicate internal keys survive.
        let mut sorted = VecIterator::new(out.clone());
        sorted.seek_to_first().expect("seek");
        let again = collect_entries(&mut sorted).expect("entries");
        prop_assert_eq!(&again, &out);
        prop_assert!(out.windows(2).all(|w| lsm::key::compare_internal_keys(&w[0].0, &w[1].0).is_lt()));
    }
}
