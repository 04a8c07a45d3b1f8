//! The iterator contract shared by memtables, SSTs and the merging iterator.
//!
//! Synchronous on purpose: sources that live in object storage are read through a blocking
//! adapter with readahead, so the merge loop stays a tight CPU loop.

/// Errors travel through iterators boxed, so an SST reader's typed corruption error (naming
/// file and offset) reaches the caller intact and can be downcast.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A cursor over encoded internal keys in [`crate::key::compare_internal_keys`] order.
///
/// `key()` and `value()` may only be called while `valid()` is true. After an error the
/// iterator is invalid.
pub trait InternalIterator {
    /// Whether the cursor is on an entry.
    fn valid(&self) -> bool;
    /// The current encoded internal key.
    fn key(&self) -> &[u8];
    /// The current value (empty for tombstones).
    fn value(&self) -> &[u8];
    /// Moves to the next entry.
    fn next(&mut self) -> Result<(), BoxError>;
    /// Moves to the first entry whose key is `>=` `target` (an encoded internal key).
    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError>;
    /// Moves to the first entry.
    fn seek_to_first(&mut self) -> Result<(), BoxError>;
}

impl<I: InternalIterator + ?Sized> InternalIterator for Box<I> {
    fn valid(&self) -> bool {
        (**self).valid()
    }
    fn key(&self) -> &[u8] {
        (**self).key()
    }
    fn value(&self) -> &[u8] {
        (**self).value()
    }
    fn next(&mut self) -> Result<(), BoxError> {
        (**self).next()
    }
    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        (**self).seek(target)
    }
    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        (**self).seek_to_first()
    }
}
