//! The user's view of a merged stream: Get and Scan as of a snapshot.

use crate::iter::{BoxError, InternalIterator};
use crate::key::{ParsedInternalKey, SeqNo, ValueKind, lookup_key, user_key};

use super::MergingIterator;

/// Yields, for each user key in order, the newest version with `seq <= snapshot`, and skips
/// the key when that version is a tombstone. An optional exclusive upper bound on user keys
/// ends a scan without reading past it.
///
/// A cursor like [`InternalIterator`], but over user keys: `key()` is a user key. Not
/// positioned when created. Errors from the sources (or a malformed key) are returned and
/// leave the iterator invalid until the next seek.
pub struct VisibleIterator<I = MergingIterator> {
    inner: I,
    snapshot: SeqNo,
    upper_bound: Option<Vec<u8>>,
    /// The user key whose remaining (older) versions are being skipped.
    skip: Vec<u8>,
    valid: bool,
}

impl<I: InternalIterator> VisibleIterator<I> {
    /// A view of `inner` as of `snapshot` (use [`crate::MAX_SEQNO`] for "everything").
    pub fn new(inner: I, snapshot: SeqNo) -> Self {
        Self {
            inner,
            snapshot,
            upper_bound: None,
            skip: Vec::new(),
            valid: false,
        }
    }

    /// Stops before the first user key `>= bound`.
    pub fn with_upper_bound(mut self, bound: impl Into<Vec<u8>>) -> Self {
        self.upper_bound = Some(bound.into());
        self
    }

    pub fn snapshot(&self) -> SeqNo {
        self.snapshot
    }

    pub fn valid(&self) -> bool {
        self.valid
    }

    /// The current user key.
    pub fn key(&self) -> &[u8] {
        if self.valid {
            user_key(self.inner.key())
        } else {
            &[]
        }
    }

    /// The current value.
    pub fn value(&self) -> &[u8] {
        if self.valid { self.inner.value() } else { &[] }
    }

    /// Moves to the first visible user key.
    pub fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.valid = false;
        self.inner.seek_to_first()?;
        self.settle(false)
    }

    /// Moves to the first visible user key `>= key`.
    pub fn seek(&mut self, key: &[u8]) -> Result<(), BoxError> {
        self.valid = false;
        // Lands on the newest version of `key` visible at the snapshot, or past `key`.
        self.inner.seek(&lookup_key(key, self.snapshot))?;
        self.settle(false)
    }

    /// Moves to the next visible user key.
    #[expect(
        clippy::should_implement_trait,
        reason = "a fallible cursor step, like InternalIterator::next"
    )]
    pub fn next(&mut self) -> Result<(), BoxError> {
        if !self.valid {
            return Ok(());
        }
        self.valid = false;
        self.skip.clear();
        self.skip.extend_from_slice(user_key(self.inner.key()));
        self.inner.next()?;
        self.settle(true)
    }

    /// Point lookup: the value of `key` as of the snapshot, `None` if absent or deleted.
    /// Leaves the cursor where a `seek(key)` would.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<&[u8]>, BoxError> {
        self.seek(key)?;
        Ok((self.valid && self.key() == key).then(|| self.value()))
    }

    pub fn into_inner(self) -> I {
        self.inner
    }

    /// Advances `inner` to the newest visible version of the next live user key. With
    /// `skipping`, first passes the older versions of the user key in `skip`.
    fn settle(&mut self, mut skipping: bool) -> Result<(), BoxError> {
        while self.inner.valid() {
            let key = ParsedInternalKey::parse(self.inner.key())?;
            if skipping && key.user_key == self.skip.as_slice() {
                self.inner.next()?;
                continue;
            }
            skipping = false;
            if self
                .upper_bound
                .as_deref()
                .is_some_and(|bound| key.user_key >= bound)
            {
                return Ok(());
            }
            if key.seq > self.snapshot {
                self.inner.next()?;
                continue;
            }
            match key.kind {
                ValueKind::Put => {
                    self.valid = true;
                    return Ok(());
                }
                ValueKind::Delete => {
                    self.skip.clear();
                    self.skip.extend_from_slice(key.user_key);
                    skipping = true;
                    self.inner.next()?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::InternalKey;
    use crate::testing::{FailingIterator, InjectedError, VecIterator};

    fn entry(k: &str, seq: u64, v: Option<&str>) -> (InternalKey, Vec<u8>) {
        let kind = if v.is_some() {
            ValueKind::Put
        } else {
            ValueKind::Delete
        };
        (
            InternalKey::new(k.as_bytes().to_vec(), seq, kind),
            v.unwrap_or_default().as_bytes().to_vec(),
        )
    }

    fn fixture() -> VecIterator {
        VecIterator::from_keys(vec![
            entry("a", 1, Some("a1")),
            entry("a", 5, None),
            entry("b", 2, Some("b2")),
            entry("b", 6, Some("b6")),
            entry("c", 7, Some("c7")),
            entry("d", 3, None),
            entry("d", 4, Some("d4")),
        ])
    }

    fn scan(it: &mut VisibleIterator<VecIterator>) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while it.valid() {
            let k = String::from_utf8_lossy(it.key()).into_owned();
            out.push((k, String::from_utf8_lossy(it.value()).into_owned()));
            it.next().expect("next");
        }
        out
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_snapshot_sees_its_versions() {
        let mut it = VisibleIterator::new(fixture(), 10);
        it.seek_to_first().expect("seek");
        assert_eq!(
            scan(&mut it),
            pairs(&[("b", "b6"), ("c", "c7"), ("d", "d4")])
        );

        let mut it = VisibleIterator::new(fixture(), 4);
        it.seek_to_first().expect("seek");
        assert_eq!(
            scan(&mut it),
            pairs(&[("a", "a1"), ("b", "b2"), ("d", "d4")])
        );

        let mut it = VisibleIterator::new(fixture(), 3);
        it.seek_to_first().expect("seek");
        assert_eq!(scan(&mut it), pairs(&[("a", "a1"), ("b", "b2")]));

        let mut it = VisibleIterator::new(fixture(), 0);
        it.seek_to_first().expect("seek");
        assert!(scan(&mut it).is_empty());
    }

    #[test]
    fn seek_get_and_upper_bound() {
        let mut it = VisibleIterator::new(fixture(), 10).with_upper_bound("d");
        it.seek(b"a").expect("seek");
        assert_eq!(scan(&mut it), pairs(&[("b", "b6"), ("c", "c7")]));
        assert_eq!(it.get(b"b").expect("get"), Some(&b"b6"[..]));
        assert_eq!(it.get(b"a").expect("get"), None);
        assert_eq!(it.get(b"bb").expect("get"), None);

        let mut it = VisibleIterator::new(fixture(), 2);
        assert_eq!(it.get(b"b").expect("get"), Some(&b"b2"[..]));
        assert_eq!(it.get(b"d").expect("get"), None);
    }

    #[test]
    fn a_source_error_reaches_the_reader() {
        let failing = FailingIterator::new(
            VecIterator::from_keys(vec![entry("b", 1, Some("b")), entry("d", 1, Some("d"))]),
            1,
        );
        let merged = MergingIterator::new(vec![Box::new(fixture()), Box::new(failing)]);
        let mut it = VisibleIterator::new(merged, 10);
        it.seek_to_first().expect("seek");
        assert_eq!(it.key(), b"b");
        // Moving on reads b's older versions, one of them from the failing source.
        let err = it.next().expect_err("must fail");
        assert_eq!(
            err.downcast_ref::<InjectedError>(),
            Some(&InjectedError { index: 1 })
        );
        assert!(!it.valid());
        assert_eq!((it.key(), it.value()), (&[][..], &[][..]));
        assert!(it.get(b"d").is_err());
    }

    #[test]
    fn a_malformed_key_is_an_error() {
        let inner = VecIterator::new(vec![(b"short".to_vec(), Vec::new())]);
        let mut it = VisibleIterator::new(inner, 10);
        assert!(it.seek_to_first().is_err());
        assert!(!it.valid());
    }
}
