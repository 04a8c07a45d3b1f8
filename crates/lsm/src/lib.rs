//! Pure LSM logic shared by every service: internal keys, the memtable, the merging
//! iterator, the manifest model and the compaction pickers.
//!
//! Nothing here does IO, reads a clock or touches protobuf types: callers pass state in and
//! get a plan (or an iterator) out, so everything is tested with small in-memory fixtures.

pub mod compaction;
pub mod iter;
pub mod key;
pub mod manifest;
pub mod memtable;
pub mod merge;
pub mod testing;

pub use iter::{BoxError, InternalIterator};
pub use key::{InternalKey, KeyError, MAX_SEQNO, ParsedInternalKey, SeqNo, ValueKind};
pub use memtable::{Memtable, MemtableError, MemtableId, MemtableIterator};
pub use merge::{
    BoxedIterator, CompactionIterator, CompactionStats, MergingIterator, VisibleIterator,
};
