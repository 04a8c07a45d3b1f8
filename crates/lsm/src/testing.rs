//! Test helpers for any crate that implements or consumes [`InternalIterator`]: an
//! in-memory source and a source that fails on purpose.
//!
//! Not behind `cfg(test)`, so the sst, flusher and compactor crates can use them in their
//! own tests (a `cfg(test)` item is invisible outside its crate). They are small and pull
//! in nothing.

use crate::iter::{BoxError, InternalIterator};
use crate::key::{InternalKey, compare_internal_keys};

/// An owned `(encoded internal key, value)` pair.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A source over a sorted `Vec` of `(encoded internal key, value)`.
#[derive(Debug, Clone, Default)]
pub struct VecIterator {
    entries: Vec<Entry>,
    /// Index of the current entry; `entries.len()` when not on one.
    pos: usize,
}

impl VecIterator {
    /// Sorts `entries` by internal key (stably: identical keys keep their order). Not
    /// positioned until a seek.
    pub fn new(mut entries: Vec<Entry>) -> Self {
        entries.sort_by(|a, b| compare_internal_keys(&a.0, &b.0));
        let pos = entries.len();
        Self { entries, pos }
    }

    /// Like [`VecIterator::new`], from owned keys.
    pub fn from_keys(entries: impl IntoIterator<Item = (InternalKey, Vec<u8>)>) -> Self {
        Self::new(entries.into_iter().map(|(k, v)| (k.encode(), v)).collect())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl InternalIterator for VecIterator {
    fn valid(&self) -> bool {
        self.pos < self.entries.len()
    }

    fn key(&self) -> &[u8] {
        self.entries.get(self.pos).map_or(&[], |e| &e.0)
    }

    fn value(&self) -> &[u8] {
        self.entries.get(self.pos).map_or(&[], |e| &e.1)
    }

    fn next(&mut self) -> Result<(), BoxError> {
        self.pos = (self.pos + 1).min(self.entries.len());
        Ok(())
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        self.pos = self
            .entries
            .partition_point(|(k, _)| compare_internal_keys(k, target).is_lt());
        Ok(())
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.pos = 0;
        Ok(())
    }
}

/// The error a [`FailingIterator`] injects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected failure at entry {index}")]
pub struct InjectedError {
    /// The index of the entry the iterator tried to move to.
    pub index: usize,
}

/// A [`VecIterator`] that cannot read past entry `fail_at` (say, a corrupt block): every
/// move that would land on an entry at index `>= fail_at` returns [`InjectedError`] and
/// leaves the iterator invalid.
#[derive(Debug, Clone)]
pub struct FailingIterator {
    inner: VecIterator,
    fail_at: usize,
    failed: bool,
}

impl FailingIterator {
    pub fn new(inner: VecIterator, fail_at: usize) -> Self {
        Self {
            inner,
            fail_at,
            failed: false,
        }
    }

    fn check(&mut self) -> Result<(), BoxError> {
        self.failed = self.inner.valid() && self.inner.pos >= self.fail_at;
        if self.failed {
            return Err(InjectedError {
                index: self.inner.pos,
            }
            .into());
        }
        Ok(())
    }
}

impl InternalIterator for FailingIterator {
    fn valid(&self) -> bool {
        !self.failed && self.inner.valid()
    }

    fn key(&self) -> &[u8] {
        if self.failed { &[] } else { self.inner.key() }
    }

    fn value(&self) -> &[u8] {
        if self.failed { &[] } else { self.inner.value() }
    }

    fn next(&mut self) -> Result<(), BoxError> {
        if !self.valid() {
            return Ok(());
        }
        self.inner.next()?;
        self.check()
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        self.inner.seek(target)?;
        self.check()
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.inner.seek_to_first()?;
        self.check()
    }
}

/// Reads `iter` from where it is to the end into `(key, value)` pairs.
pub fn collect_entries<I: InternalIterator + ?Sized>(iter: &mut I) -> Result<Vec<Entry>, BoxError> {
    let mut out = Vec::new();
    while iter.valid() {
        out.push((iter.key().to_vec(), iter.value().to_vec()));
        iter.next()?;
    }
    Ok(out)
}
