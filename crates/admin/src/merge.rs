//! The read path's merge: what `storage-admin get` and `scan` answer, given what the SSTs
//! and the replayer's memtables hold. Pure: no IO, no protobuf types.
//!
//! A table's data lives in two places: SSTs (the manifest's files) and the replayer's
//! unflushed memtables. Both may hold a version of the same key — a memtable being flushed
//! while its SST is already in the manifest, or an older SST version under a newer memtable
//! one — so the answer for a key is always the version with the **highest sequence number**
//! among every place that has one, and a tombstone winning hides the key. Which place a
//! version comes from decides nothing.
//!
//! # Vocabulary
//!
//! - **version** ([`Version`]): one key's value (or tombstone) at one sequence number.
//! - **newest-per-key stream**: versions in ascending key order, one per key, the newest the
//!   source has (tombstones included). The replayer's Scan pages are such streams, and
//!   [`NewestVersions`] makes one out of merged SST iterators.
//! - **page**: one replayer Scan reply; the memtable side of a scan arrives page by page,
//!   and [`ScanMerge`] consumes SST versions only up to the last key the pages have covered,
//!   so a limit on the replayer's side never hides memtable versions from the merge.

use std::iter::Peekable;

use bytes::Bytes;
use lsm::key::lookup_key;
use lsm::{BoxError, InternalIterator, MAX_SEQNO, ParsedInternalKey, SeqNo, ValueKind};

/// One version of a key. `value == None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: Bytes,
    pub seq: SeqNo,
    pub value: Option<Bytes>,
}

impl Version {
    pub fn put(key: impl Into<Bytes>, seq: SeqNo, value: impl Into<Bytes>) -> Self {
        Self {
            key: key.into(),
            seq,
            value: Some(value.into()),
        }
    }

    pub fn tombstone(key: impl Into<Bytes>, seq: SeqNo) -> Self {
        Self {
            key: key.into(),
            seq,
            value: None,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// The newest of `candidates` (all versions of one key, from any source in any order): the
/// highest sequence number; on a tie (the same write seen twice) the first one. Tombstones
/// included.
pub fn newest(candidates: impl IntoIterator<Item = Version>) -> Option<Version> {
    candidates.into_iter().fold(None, |best, v| match best {
        Some(b) if b.seq >= v.seq => Some(b),
        _ => Some(v),
    })
}

/// What a point read answers: the newest of `candidates`, or `None` when there is none or
/// the newest is a tombstone.
pub fn visible(candidates: impl IntoIterator<Item = Version>) -> Option<Version> {
    newest(candidates).filter(|v| !v.is_tombstone())
}

/// Newest-per-key stream over an internal iterator (e.g. a [`lsm::MergingIterator`] over
/// SSTs), restricted to the user keys in `[start, end)` (`end` empty: unbounded).
/// Tombstones are yielded: the caller merges them with other sources before hiding keys.
/// Errors from the source (a corrupt block) end the stream.
pub struct NewestVersions<I> {
    inner: I,
    start: Vec<u8>,
    end: Vec<u8>,
    positioned: bool,
    done: bool,
}

impl<I: InternalIterator> NewestVersions<I> {
    pub fn new(inner: I, start: &[u8], end: &[u8]) -> Self {
        Self {
            inner,
            start: start.to_vec(),
            end: end.to_vec(),
            positioned: false,
            done: false,
        }
    }

    fn step(&mut self) -> Result<Option<Version>, BoxError> {
        if !self.positioned {
            self.positioned = true;
            self.inner.seek(&lookup_key(&self.start, MAX_SEQNO))?;
        }
        if !self.inner.valid() {
            return Ok(None);
        }
        let parsed = ParsedInternalKey::parse(self.inner.key())?;
        if !self.end.is_empty() && parsed.user_key >= self.end.as_slice() {
            return Ok(None);
        }
        // Internal-key order puts a user key's newest version first.
        let key = Bytes::copy_from_slice(parsed.user_key);
        let version = Version {
            seq: parsed.seq,
            value: (parsed.kind == ValueKind::Put)
                .then(|| Bytes::copy_from_slice(self.inner.value())),
            key,
        };
        // Skip the older versions of the same user key.
        loop {
            self.inner.next()?;
            if !self.inner.valid() {
                break;
            }
            let next = ParsedInternalKey::parse(self.inner.key())?;
            if next.user_key != version.key.as_ref() {
                break;
            }
        }
        Ok(Some(version))
    }
}

impl<I: InternalIterator> Iterator for NewestVersions<I> {
    type Item = Result<Version, BoxError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(v)) => Some(Ok(v)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// A scan that cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The SST side failed (a corrupt or unreadable block).
    #[error("reading SSTs: {0}")]
    Sst(BoxError),
    /// A memtable page broke the newest-per-key contract (keys not strictly ascending
    /// within and across pages): merging it would give wrong answers.
    #[error("memtable scan returned key {key:?} after {previous:?}: keys must ascend")]
    Unordered { previous: Bytes, key: Bytes },
    /// A page said more follows but brought nothing: paging could not advance.
    #[error("memtable scan page was truncated but empty")]
    EmptyTruncatedPage,
}

/// Merges a newest-per-key SST stream with memtable pages into the visible scan result:
/// ascending keys, for each the newest version across both sides, tombstoned keys left
/// out, at most `limit` keys.
///
/// Feed pages in order with [`ScanMerge::feed`]: after a page, SST versions are consumed
/// only up to that page's last key (the memtable is known exactly up to there), so the next
/// page — which the caller asks for from just after that key — merges correctly.
pub struct ScanMerge<S: Iterator<Item = Result<Version, BoxError>>> {
    sst: Peekable<S>,
    limit: usize,
    out: Vec<Version>,
    /// The last memtable key seen, to check order across pages.
    last_mem_key: Option<Bytes>,
    complete: bool,
}

impl<S: Iterator<Item = Result<Version, BoxError>>> ScanMerge<S> {
    pub fn new(sst: S, limit: usize) -> Self {
        Self {
            sst: sst.peekable(),
            limit,
            out: Vec::new(),
            last_mem_key: None,
            complete: limit == 0,
        }
    }

    /// True once the result is final: `limit` keys collected, or every source exhausted.
    /// No more pages are needed then.
    pub fn is_done(&self) -> bool {
        self.complete || self.out.len() >= self.limit
    }

    /// The key after which the next memtable page must start (exclusive).
    pub fn resume_after(&self) -> Option<&Bytes> {
        self.last_mem_key.as_ref()
    }

    /// Merges one memtable page (ascending keys, one newest version per key, tombstones
    /// included). `last_page`: the memtable holds nothing further in the range.
    pub fn feed(&mut self, page: Vec<Version>, last_page: bool) -> Result<(), MergeError> {
        if !last_page && page.is_empty() {
            return Err(MergeError::EmptyTruncatedPage);
        }
        for m in page {
            if let Some(previous) = &self.last_mem_key
                && m.key <= *previous
            {
                return Err(MergeError::Unordered {
                    previous: previous.clone(),
                    key: m.key,
                });
            }
            self.last_mem_key = Some(m.key.clone());
            // SST keys before this memtable key have no memtable version.
            while !self.is_done() {
                let Some(s) = self.peek_sst()? else { break };
                if s.key >= m.key {
                    break;
                }
                let s = self.take_sst()?;
                self.emit(s);
            }
            if self.is_done() {
                return Ok(());
            }
            let same = match self.peek_sst()? {
                Some(s) => s.key == m.key,
                None => false,
            };
            let winner = if same {
                let s = self.take_sst()?;
                // Compare sequence numbers: the memtable is not newer by assumption. A tie
                // is the same write in both places.
                if s.seq > m.seq { s } else { m }
            } else {
                m
            };
            self.emit(winner);
        }
        if last_page {
            while !self.is_done() {
                let Some(_) = self.peek_sst()? else { break };
                let s = self.take_sst()?;
                self.emit(s);
            }
            self.complete = true;
        }
        Ok(())
    }

    /// The visible versions, ascending by key.
    pub fn finish(self) -> Vec<Version> {
        self.out
    }

    fn emit(&mut self, v: Version) {
        if !v.is_tombstone() && self.out.len() < self.limit {
            self.out.push(v);
        }
    }

    fn peek_sst(&mut self) -> Result<Option<&Version>, MergeError> {
        if matches!(self.sst.peek(), Some(Err(_)))
            && let Some(Err(e)) = self.sst.next()
        {
            return Err(MergeError::Sst(e));
        }
        Ok(self.sst.peek().and_then(|r| r.as_ref().ok()))
    }

    fn take_sst(&mut self) -> Result<Version, MergeError> {
        match self.sst.next() {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(MergeError::Sst(e)),
            None => Err(MergeError::Sst("sst stream ended after a peek".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::testing::VecIterator;
    use lsm::{BoxedIterator, InternalKey, MergingIterator};

    fn put(k: &str, seq: SeqNo, v: &str) -> Version {
        Version::put(
            Bytes::copy_from_slice(k.as_bytes()),
            seq,
            Bytes::copy_from_slice(v.as_bytes()),
        )
    }

    fn del(k: &str, seq: SeqNo) -> Version {
        Version::tombstone(Bytes::copy_from_slice(k.as_bytes()), seq)
    }

    fn ok_stream(vs: Vec<Version>) -> impl Iterator<Item = Result<Version, BoxError>> {
        vs.into_iter().map(Ok)
    }

    fn keys(vs: &[Version]) -> Vec<String> {
        vs.iter()
            .map(|v| String::from_utf8_lossy(&v.key).into_owned())
            .collect()
    }

    /// An SST-like source from (key, seq, Some(value) | None) triples.
    fn source(entries: &[(&str, SeqNo, Option<&str>)]) -> BoxedIterator {
        Box::new(VecIterator::from_keys(entries.iter().map(|(k, s, v)| {
            let kind = if v.is_some() {
                ValueKind::Put
            } else {
                ValueKind::Delete
            };
            (
                InternalKey::new(Bytes::copy_from_slice(k.as_bytes()), *s, kind),
                v.unwrap_or("").as_bytes().to_vec(),
            )
        })))
    }

    #[test]
    fn point_read_takes_the_highest_seq_wherever_it_is() {
        // Memtable newer than the SST.
        assert_eq!(
            visible([put("k", 9, "mem"), put("k", 3, "sst")]),
            Some(put("k", 9, "mem"))
        );
        // SST newer than the memtable (e.g. a stale memtable copy): the SST wins.
        assert_eq!(
            visible([put("k", 3, "mem"), put("k", 9, "sst")]),
            Some(put("k", 9, "sst"))
        );
        // A newer tombstone hides; an older one does not.
        assert_eq!(visible([del("k", 10), put("k", 9, "sst")]), None);
        assert_eq!(
            visible([del("k", 2), put("k", 9, "sst")]),
            Some(put("k", 9, "sst"))
        );
        assert_eq!(newest([del("k", 10), put("k", 9, "v")]), Some(del("k", 10)));
        // The same write seen twice: the first candidate.
        assert_eq!(
            visible([put("k", 5, "a"), put("k", 5, "b")]),
            Some(put("k", 5, "a"))
        );
        assert_eq!(visible(Vec::new()), None);
    }

    #[test]
    fn newest_versions_yields_one_version_per_key_within_the_range() {
        let merged = MergingIterator::new(vec![
            source(&[("a", 5, Some("a5")), ("c", 7, None), ("d", 2, Some("d2"))]),
            source(&[
                ("a", 3, Some("a3")),
                ("b", 4, Some("b4")),
                ("c", 1, Some("c1")),
            ]),
        ]);
        let all: Vec<Version> = NewestVersions::new(merged, b"", b"")
            .collect::<Result<_, _>>()
            .expect("no error");
        assert_eq!(
            all,
            vec![
                put("a", 5, "a5"),
                put("b", 4, "b4"),
                del("c", 7),
                put("d", 2, "d2")
            ]
        );

        let merged = MergingIterator::new(vec![source(&[
            ("a", 5, Some("a5")),
            ("b", 4, Some("b4")),
            ("c", 7, None),
            ("d", 2, Some("d2")),
        ])]);
        let range: Vec<Version> = NewestVersions::new(merged, b"b", b"d")
            .collect::<Result<_, _>>()
            .expect("no error");
        assert_eq!(range, vec![put("b", 4, "b4"), del("c", 7)]);
    }

    #[test]
    fn newest_versions_passes_source_errors_on() {
        let failing = lsm::testing::FailingIterator::new(
            VecIterator::from_keys((0..5u64).map(|i| {
                (
                    InternalKey::new(Bytes::from(format!("k{i}")), i + 1, ValueKind::Put),
                    b"v".to_vec(),
                )
            })),
            2,
        );
        let results: Vec<_> = NewestVersions::new(failing, b"", b"").collect();
        assert!(
            results.iter().any(Result::is_err),
            "the injected error surfaces"
        );
        assert!(
            results.last().is_some_and(Result::is_err),
            "and ends the stream"
        );
    }

    #[test]
    fn scan_merges_by_seq_and_hides_tombstones() {
        let sst = vec![
            put("a", 1, "a1"),
            put("b", 2, "b2"),
            put("c", 3, "c3"),
            put("d", 9, "d9"), // newer than the memtable's d
            del("e", 4),
            put("f", 5, "f5"),
        ];
        let mem = vec![
            put("b", 10, "b10"),
            del("c", 11),
            put("d", 6, "d6"),
            put("e", 12, "e12"),
            put("g", 13, "g13"),
        ];
        let mut m = ScanMerge::new(ok_stream(sst), 1000);
        m.feed(mem, true).expect("merges");
        assert!(m.is_done());
        assert_eq!(
            m.finish(),
            vec![
                put("a", 1, "a1"),
                put("b", 10, "b10"),
                put("d", 9, "d9"),
                put("e", 12, "e12"),
                put("f", 5, "f5"),
                put("g", 13, "g13"),
            ]
        );
    }

    #[test]
    fn scan_pages_give_the_same_answer_as_one_page() {
        let sst: Vec<Version> = (0..40)
            .map(|i| {
                let k = format!("k{i:03}");
                if i % 7 == 0 {
                    del(&k, i)
                } else {
                    put(&k, i, &format!("sst{i}"))
                }
            })
            .collect();
        // Memtable versions on every third key (some older than the SST's), tombstones on
        // every fifth, and keys the SSTs do not have.
        let mut mem: Vec<Version> = Vec::new();
        for i in 0..45u64 {
            let k = format!("k{i:03}");
            if i % 5 == 0 {
                mem.push(del(&k, 100 + i));
            } else if i % 3 == 0 {
                let seq = if i % 2 == 0 {
                    100 + i
                } else {
                    i.saturating_sub(1)
                };
                mem.push(put(&k, seq, &format!("mem{i}")));
            } else if i >= 40 {
                mem.push(put(&k, 100 + i, &format!("mem{i}")));
            }
        }
        for limit in [1usize, 3, 10, 1000] {
            let mut one = ScanMerge::new(ok_stream(sst.clone()), limit);
            one.feed(mem.clone(), true).expect("merges");
            let expected = one.finish();
            for page_size in [1usize, 2, 5] {
                let mut paged = ScanMerge::new(ok_stream(sst.clone()), limit);
                let mut rest = mem.as_slice();
                while !paged.is_done() {
                    let n = page_size.min(rest.len());
                    let (page, tail) = rest.split_at(n);
                    rest = tail;
                    paged.feed(page.to_vec(), rest.is_empty()).expect("merges");
                }
                assert_eq!(
                    paged.finish(),
                    expected,
                    "limit {limit}, page size {page_size}"
                );
            }
            assert_eq!(expected.len(), limit.min(expected.len()));
        }
        // Spot checks on the full answer.
        let mut full = ScanMerge::new(ok_stream(sst), 1000);
        full.feed(mem, true).expect("merges");
        let out = full.finish();
        let ks = keys(&out);
        assert!(!ks.contains(&"k000".to_owned()), "deleted in both");
        assert!(
            !ks.contains(&"k005".to_owned()),
            "memtable tombstone is newer"
        );
        assert!(
            !ks.contains(&"k014".to_owned()),
            "sst tombstone, no memtable version"
        );
        let k009 = out.iter().find(|v| v.key.as_ref() == b"k009");
        assert_eq!(
            k009,
            Some(&put("k009", 9, "sst9")),
            "older memtable version loses"
        );
        let k006 = out.iter().find(|v| v.key.as_ref() == b"k006");
        assert_eq!(k006, Some(&put("k006", 106, "mem6")));
        assert!(
            ks.contains(&"k044".to_owned()),
            "memtable-only keys after the ssts"
        );
    }

    #[test]
    fn scan_stops_at_the_limit_and_on_empty_sources() {
        let mut m = ScanMerge::new(ok_stream(vec![put("a", 1, "1"), put("b", 2, "2")]), 1);
        m.feed(Vec::new(), true).expect("merges");
        assert_eq!(keys(&m.finish()), vec!["a"]);

        let mut m = ScanMerge::new(ok_stream(Vec::new()), 10);
        assert!(!m.is_done());
        m.feed(Vec::new(), true).expect("merges");
        assert!(m.is_done());
        assert!(m.finish().is_empty());

        let m = ScanMerge::new(ok_stream(vec![put("a", 1, "1")]), 0);
        assert!(m.is_done());
    }

    #[test]
    fn scan_rejects_pages_that_break_the_contract() {
        let mut m = ScanMerge::new(ok_stream(Vec::new()), 10);
        let err = m
            .feed(vec![put("b", 1, "1"), put("a", 2, "2")], true)
            .expect_err("out of order");
        assert!(matches!(err, MergeError::Unordered { .. }), "{err}");

        let mut m = ScanMerge::new(ok_stream(Vec::new()), 10);
        m.feed(vec![put("b", 1, "1")], false).expect("first page");
        assert_eq!(m.resume_after().map(|k| k.as_ref()), Some(&b"b"[..]));
        let err = m
            .feed(vec![put("b", 1, "1")], true)
            .expect_err("repeated key");
        assert!(matches!(err, MergeError::Unordered { .. }), "{err}");

        let mut m = ScanMerge::new(ok_stream(Vec::new()), 10);
        let err = m.feed(Vec::new(), false).expect_err("no progress");
        assert!(matches!(err, MergeError::EmptyTruncatedPage), "{err}");
    }

    #[test]
    fn scan_reports_sst_errors() {
        let sst: Vec<Result<Version, BoxError>> = vec![
            Ok(put("a", 1, "1")),
            Err("corrupt block in sst 7 at offset 42".into()),
        ];
        let mut m = ScanMerge::new(sst.into_iter(), 10);
        let err = m.feed(Vec::new(), true).expect_err("sst error");
        assert!(err.to_string().contains("corrupt block in sst 7"), "{err}");
    }
}
