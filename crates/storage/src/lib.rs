//! Shared storage access for every service: one [`Storage`] handle over `object_store`.
//!
//! Why a crate of its own: the WAL writer, the replayer, flushers and compactors all read and
//! write the same shared storage (`storage.url`), and they must agree on three things that
//! `object_store` alone does not give:
//!
//! - **the layout** ([`paths`]): where a table's WAL segments and SSTs live and how their
//!   names encode sequence numbers and file ids, written down once;
//! - **durability and fencing**: a put returns only once the object is durable (on a local
//!   directory: written to a staging file, fsynced, renamed/linked, directory fsynced: see
//!   the `local` module), and [`Storage::put_if_absent`] is the conditional create that
//!   fences WAL writers ([`StorageError::AlreadyExists`]);
//! - **typed errors** ([`StorageError`]) naming the object, so a failure reaches the operator
//!   with the path in it, and free-space checks ([`Storage::check_space`]) so work that would
//!   not fit on a local volume is refused before it writes anything.
//!
//! Backends by URL: `file:///path` (default; a local directory or shared volume),
//! `s3://bucket/prefix` (S3, MinIO, any S3-compatible store), `memory://` (tests).
//!
//! Synchronous code (SST iterators on a blocking thread) reads through a
//! [`BlockingReader`], which streams an object with readahead instead of buffering it.

#![forbid(unsafe_code)]

mod blocking;
pub mod delete_journal;
mod error;
pub mod faults;
mod local;
pub mod paths;
mod store;

pub use blocking::{BlockingReader, BlockingReaderConfig, BlockingWriter};
pub use error::StorageError;
pub use faults::{FaultConfig, FaultCounts};
pub use object_store::ObjectMeta;
pub use object_store::path::Path as ObjectPath;
pub use paths::TableName;
pub use store::{ObjectWriter, S3Options, Storage, check_space_against};
