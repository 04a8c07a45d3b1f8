//! Merging many sorted sources into one, and the two views built on the merge.
//!
//! A read or a compaction sees a table as several sorted *sources*: the mutable memtable,
//! frozen memtables waiting for a flush, and SSTs. [`MergingIterator`] interleaves them into
//! one stream in internal-key order, so every *version* (entry) of a user key comes out
//! together, newest first. On top of that stream:
//!
//! - [`VisibleIterator`] is the user's view as of a *snapshot* (a sequence number): one
//!   value per live user key, tombstoned keys hidden. Get and Scan use it.
//! - [`CompactionIterator`] applies the rules that let a compaction drop data: versions no
//!   snapshot can see any more, and tombstones that hide nothing.
//!
//! Sources are passed newest first (memtable, then frozen memtables from newest, then L0
//! files from newest, then deeper levels). Two sources can only hold the same internal key
//! if they hold the same write twice (a memtable being flushed while its SST is already
//! visible, say); the merge then yields both, the one from the *lower source index first*,
//! and both views treat the second copy as an older, shadowed version.

mod compaction;
mod visible;

pub use compaction::{CompactionIterator, CompactionStats};
pub use visible::VisibleIterator;

use std::cmp::Ordering;

use crate::iter::{BoxError, InternalIterator};
use crate::key::compare_internal_keys;

/// A merge source: any iterator, boxed, that can move to a worker thread.
pub type BoxedIterator = Box<dyn InternalIterator + Send>;

/// A k-way merge of sorted sources; see the module docs for the order of sources and the
/// tie rule.
///
/// A binary min-heap of source indices: advancing the current source costs one sift-down,
/// about `2 log2(k)` key comparisons. A new iterator is not positioned: call
/// `seek_to_first` or `seek` first. An error from any source is returned as is and leaves
/// the merge invalid until the next seek.
pub struct MergingIterator {
    sources: Vec<BoxedIterator>,
    /// Indices of the valid sources, ordered as a heap by (current key, source index).
    heap: Vec<usize>,
}

impl MergingIterator {
    pub fn new(sources: Vec<BoxedIterator>) -> Self {
        let heap = Vec::with_capacity(sources.len());
        Self { sources, heap }
    }

    pub fn num_sources(&self) -> usize {
        self.sources.len()
    }

    /// The index of the source the current entry comes from.
    pub fn current_source(&self) -> Option<usize> {
        self.heap.first().copied()
    }

    /// Rebuilds the heap after every source was repositioned.
    fn rebuild(&mut self) {
        self.heap.clear();
        self.heap
            .extend((0..self.sources.len()).filter(|&i| self.sources[i].valid()));
        for i in (0..self.heap.len() / 2).rev() {
            sift_down(&self.sources, &mut self.heap, i);
        }
    }

    fn reposition(
        &mut self,
        mut op: impl FnMut(&mut BoxedIterator) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        for source in &mut self.sources {
            if let Err(e) = op(source) {
                self.heap.clear();
                return Err(e);
            }
        }
        self.rebuild();
        Ok(())
    }
}

/// Whether the entry at source `a` comes before the entry at source `b`.
#[inline]
fn before(sources: &[BoxedIterator], a: usize, b: usize) -> bool {
    match compare_internal_keys(sources[a].key(), sources[b].key()) {
        Ordering::Less => true,
        Ordering::Greater => false,
        Ordering::Equal => a < b,
    }
}

fn sift_down(sources: &[BoxedIterator], heap: &mut [usize], mut i: usize) {
    loop {
        let left = 2 * i + 1;
        if left >= heap.len() {
            return;
        }
        let right = left + 1;
        let child = if right < heap.len() && before(sources, heap[right], heap[left]) {
            right
        } else {
            left
        };
        if !before(sources, heap[child], heap[i]) {
            return;
        }
        heap.swap(i, child);
        i = child;
    }
}

impl InternalIterator for MergingIterator {
    fn valid(&self) -> bool {
        !self.heap.is_empty()
    }

    fn key(&self) -> &[u8] {
        self.heap.first().map_or(&[], |&i| self.sources[i].key())
    }

    fn value(&self) -> &[u8] {
        self.heap.first().map_or(&[], |&i| self.sources[i].value())
    }

    fn next(&mut self) -> Result<(), BoxError> {
        let Some(&top) = self.heap.first() else {
            return Ok(());
        };
        if let Err(e) = self.sources[top].next() {
            self.heap.clear();
            return Err(e);
        }
        if !self.sources[top].valid() {
            self.heap.swap_remove(0);
        }
        sift_down(&self.sources, &mut self.heap, 0);
        Ok(())
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        self.reposition(|s| s.seek(target))
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.reposition(|s| s.seek_to_first())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{InternalKey, ValueKind};
    use crate::testing::{FailingIterator, InjectedError, VecIterator, collect_entries};

    fn put(k: &str, seq: u64, v: &str) -> (InternalKey, Vec<u8>) {
        (
            InternalKey::new(k.as_bytes().to_vec(), seq, ValueKind::Put),
            v.as_bytes().to_vec(),
        )
    }

    fn source(entries: Vec<(InternalKey, Vec<u8>)>) -> BoxedIterator {
        Box::new(VecIterator::from_keys(entries))
    }

    #[test]
    fn merges_in_internal_key_order() {
        let mut m = MergingIterator::new(vec![
            source(vec![put("b", 9, "b9"), put("d", 8, "d8")]),
            source(vec![put("a", 3, "a3"), put("b", 2, "b2")]),
            source(vec![]),
            source(vec![put("c", 1, "c1")]),
        ]);
        assert!(!m.valid());
        m.seek_to_first().expect("seek");
        let got: Vec<_> = collect_entries(&mut m)
            .expect("merge")
            .into_iter()
            .map(|(_, v)| String::from_utf8(v).expect("utf8"))
            .collect();
        assert_eq!(got, ["a3", "b9", "b2", "c1", "d8"]);
    }

    #[test]
    fn identical_keys_come_from_the_lower_source_first() {
        let mut m = MergingIterator::new(vec![
            source(vec![put("k", 5, "new")]),
            source(vec![put("k", 5, "old")]),
        ]);
        m.seek_to_first().expect("seek");
        assert_eq!((m.current_source(), m.value()), (Some(0), &b"new"[..]));
        m.next().expect("next");
        assert_eq!((m.current_source(), m.value()), (Some(1), &b"old"[..]));
        m.next().expect("next");
        assert!(!m.valid());
    }

    #[test]
    fn seek_positions_every_source() {
        let mut m = MergingIterator::new(vec![
            source(vec![put("a", 1, "a"), put("c", 1, "c")]),
            source(vec![put("b", 1, "b"), put("d", 1, "d")]),
        ]);
        m.seek(&InternalKey::new(&b"b"[..], 7, ValueKind::Put).encode())
            .expect("seek");
        let got: Vec<_> = collect_entries(&mut m)
            .expect("merge")
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(got, [b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn an_error_from_any_source_is_returned_and_invalidates() {
        let failing = FailingIterator::new(
            VecIterator::from_keys(vec![put("a", 1, ""), put("c", 1, ""), put("e", 1, "")]),
            2,
        );
        let mut m = MergingIterator::new(vec![
            source(vec![put("b", 1, ""), put("d", 1, "")]),
            Box::new(failing),
        ]);
        m.seek_to_first().expect("seek");
        let mut seen = 0;
        let err = loop {
            seen += 1;
            if let Err(e) = m.next() {
                break e;
            }
        };
        // a, b and c are yielded; moving the failing source past c (onto its entry 2) fails
        // even though d, from the healthy source, would come next.
        assert_eq!(seen, 3);
        assert_eq!(
            err.downcast_ref::<InjectedError>(),
            Some(&InjectedError { index: 2 })
        );
        assert!(!m.valid());
        // A failing seek is reported too.
        let err = m
            .seek(&InternalKey::new(&b"e"[..], 1, ValueKind::Put).encode())
            .expect_err("seek onto the failing entry");
        assert!(err.downcast_ref::<InjectedError>().is_some());
        assert!(!m.valid());
    }
}
