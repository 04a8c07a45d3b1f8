//! The reusable part of `storage-admin`: pure logic that the binary and other crates (the
//! end-to-end tests read load oracles with it) share.
//!
//! - [`oracle`]: the load generator's record of acknowledged writes, and its reader.
//! - [`merge`]: what a read returns, given the SSTs' and the memtables' versions.
//! - [`workload`]: the load generator's flags, their validation, and the seeded writes.

#![forbid(unsafe_code)]

pub mod merge;
pub mod oracle;
pub mod workload;

pub use merge::{MergeError, NewestVersions, ScanMerge, Version, newest, visible};
pub use oracle::{OracleEntry, OracleError, latest, read_oracle};
pub use workload::{LoadSpec, Op, SpecError, TableWorkload};
