//! Why a compaction attempt failed, how a reading error is classified, and the one mapping
//! of a failure to the `TaskError` the scheduler records (and the operator reads).
//!
//! Retriable or not is decided here, once: a retry runs the same spec on the same inputs,
//! so a failure that the inputs themselves cause (a corrupt or vanished input, too few
//! output ids for what the inputs hold) is final, and the scheduler fails the task at once
//! instead of burning its attempts; a failure of the moment (storage unreachable, disk
//! full) is worth another attempt. Every message starts with `CompactionError:` and names
//! the table, the inputs and, where one is at fault, the file.

use proto::v1 as pb;
use sst::SstError;
use storage::StorageError;

use crate::request::CompactionSpec;

/// A failed compaction attempt.
#[derive(Debug, thiserror::Error)]
pub enum CompactionError {
    /// Refused before writing anything: the outputs would not fit on the local volume.
    #[error("not enough disk space at {path}: {needed} bytes needed, {available} available")]
    DiskSpace {
        needed: u64,
        available: u64,
        path: String,
    },
    /// An input object no longer exists: Cleanup deleted it after the manifest stopped
    /// referencing it, so this task's view of the table is stale.
    #[error("input {file} is gone (deleted after the table's files changed?)")]
    InputMissing { file: String },
    /// An input's bytes are damaged; `offset` is that of the block (or footer) that failed.
    #[error("corrupt input sst {file} at offset {offset}: {reason}")]
    Corruption {
        file: String,
        offset: u64,
        reason: String,
    },
    /// The merged input is not a valid stream of internal keys (the failing file is not
    /// known: every file passed its own checks).
    #[error("malformed input: {reason}")]
    MalformedInput { reason: String },
    /// Reading an input failed for a reason other than damage (storage unreachable).
    #[error("reading input {file} failed: {cause}")]
    ReadInput { file: String, cause: String },
    /// Writing an output failed. Not retriable when the builder refused the data itself
    /// (an entry too large for the format), which another attempt would refuse again.
    #[error("writing output {file} failed: {cause}")]
    WriteOutput {
        file: String,
        cause: String,
        retriable: bool,
    },
    /// The inputs hold more than the allotted output ids can name. Ids are never invented
    /// or reused: an id the catalog did not allocate could collide with another file.
    #[error(
        "ran out of output file ids: all {allotted} allotted ids are used and more output remains"
    )]
    OutOfFileIds { allotted: usize },
    /// A storage call around the merge (checking the inputs, creating an output) failed.
    #[error(transparent)]
    Storage(StorageError),
    /// A bug: a merge thread panicked or vanished.
    #[error("internal error: {0}")]
    Internal(String),
    /// The scheduler cancelled the attempt or the worker is shutting down. Not reported:
    /// the scheduler already knows (it cancelled) or retries once the lease expires.
    #[error("cancelled")]
    Cancelled,
}

impl From<StorageError> for CompactionError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::DiskSpace {
                needed,
                available,
                path,
            } => Self::DiskSpace {
                needed,
                available,
                path,
            },
            StorageError::NotFound { path } => Self::InputMissing { file: path },
            other => Self::Storage(other),
        }
    }
}

impl CompactionError {
    /// Classifies an error from opening or reading input `file` (whose object is `size`
    /// bytes: a bad magic number or version is reported at the footer's offset).
    pub fn from_input(err: SstError, size: u64) -> Self {
        match err {
            SstError::Corruption {
                file,
                offset,
                reason,
            } => Self::Corruption {
                file,
                offset,
                reason,
            },
            e @ SstError::BadMagic { .. } => Self::Corruption {
                file: sst_file(&e),
                offset: size.saturating_sub(sst::FOOTER_LEN as u64),
                reason: e.to_string(),
            },
            e @ SstError::UnsupportedVersion { .. } => Self::Corruption {
                file: sst_file(&e),
                offset: size.saturating_sub(sst::FOOTER_LEN as u64),
                reason: e.to_string(),
            },
            SstError::Io { file, source } => {
                let missing = source.kind() == std::io::ErrorKind::NotFound
                    || source
                        .get_ref()
                        .and_then(|e| e.downcast_ref::<StorageError>())
                        .is_some_and(StorageError::is_not_found);
                if missing {
                    Self::InputMissing { file }
                } else {
                    Self::ReadInput {
                        file,
                        cause: source.to_string(),
                    }
                }
            }
            other => Self::Internal(format!("reading an input: {other}")),
        }
    }

    /// Classifies an error that came out of the merge (an input iterator, or the merge
    /// itself). `size_of` gives the size of an input by its path.
    pub fn from_merge(err: lsm::BoxError, size_of: impl Fn(&str) -> u64) -> Self {
        let err = match err.downcast::<CompactionError>() {
            Ok(e) => return *e,
            Err(other) => other,
        };
        let err = match err.downcast::<SstError>() {
            Ok(e) => {
                let size = size_of(&sst_file(&e));
                return Self::from_input(*e, size);
            }
            Err(other) => other,
        };
        match err.downcast::<lsm::KeyError>() {
            Ok(e) => Self::MalformedInput {
                reason: format!("an entry is not an internal key: {e}"),
            },
            Err(other) => Self::Internal(format!("the merge failed: {other}")),
        }
    }

    /// Classifies an error of the SST builder writing output `file`.
    pub fn from_output(err: SstError, file: &str) -> Self {
        let retriable = matches!(err, SstError::Io { .. } | SstError::BuilderFailed { .. });
        Self::WriteOutput {
            file: file.to_owned(),
            cause: err.to_string(),
            retriable,
        }
    }

    pub fn kind(&self) -> pb::ErrorKind {
        match self {
            Self::DiskSpace { .. } => pb::ErrorKind::DiskSpace,
            Self::Corruption { .. } | Self::MalformedInput { .. } => pb::ErrorKind::Corruption,
            Self::InputMissing { .. }
            | Self::ReadInput { .. }
            | Self::WriteOutput { .. }
            | Self::OutOfFileIds { .. }
            | Self::Storage(_) => pb::ErrorKind::Compaction,
            Self::Internal(_) => pb::ErrorKind::Internal,
            Self::Cancelled => pb::ErrorKind::Cancelled,
        }
    }

    /// Whether another attempt of the same spec could succeed (see the module docs).
    pub fn retriable(&self) -> bool {
        match self {
            Self::Corruption { .. }
            | Self::MalformedInput { .. }
            | Self::InputMissing { .. }
            | Self::OutOfFileIds { .. } => false,
            Self::WriteOutput { retriable, .. } => *retriable,
            Self::DiskSpace { .. }
            | Self::ReadInput { .. }
            | Self::Storage(_)
            | Self::Internal(_)
            | Self::Cancelled => true,
        }
    }

    /// The file the error is about, if one is.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::InputMissing { file }
            | Self::Corruption { file, .. }
            | Self::ReadInput { file, .. }
            | Self::WriteOutput { file, .. } => Some(file),
            _ => None,
        }
    }

    /// The offset of the damage, for corruption.
    pub fn offset(&self) -> u64 {
        match self {
            Self::Corruption { offset, .. } => *offset,
            _ => 0,
        }
    }

    /// The `TaskError` for this failure of `attempt` of `spec`, recorded at `now_ms`
    /// (milliseconds since the Unix epoch).
    pub fn to_task_error(&self, spec: &CompactionSpec, attempt: u32, now_ms: i64) -> pb::TaskError {
        pb::TaskError {
            kind: self.kind() as i32,
            message: format!(
                "CompactionError: compaction of table {} ({}) failed: {self}",
                spec.table,
                spec.describe()
            ),
            file: self.file().unwrap_or_default().to_owned(),
            offset: self.offset(),
            retriable: self.retriable(),
            attempt,
            at_unix_ms: now_ms,
        }
    }
}

/// The file an [`SstError`] names (empty for options errors, which name none).
fn sst_file(e: &SstError) -> String {
    match e {
        SstError::Corruption { file, .. }
        | SstError::Io { file, .. }
        | SstError::BadMagic { file, .. }
        | SstError::UnsupportedVersion { file, .. }
        | SstError::OutOfOrder { file, .. }
        | SstError::InvalidKey { file, .. }
        | SstError::TooLarge { file, .. }
        | SstError::BuilderFailed { file } => file.clone(),
        SstError::InvalidOptions(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::CompactionSpec;
    use lsm::manifest::FileMeta;
    use storage::TableName;

    const SST: &str = "tables/users/sst/00000000000000000005.sst";

    fn spec() -> CompactionSpec {
        let file = |id: u64| FileMeta {
            id,
            size: 100,
            smallest: "a".into(),
            largest: "z".into(),
            smallest_seq: 1,
            largest_seq: 9,
            entries: 3,
            tombstones: 0,
        };
        CompactionSpec {
            table: TableName::new("users").expect("valid name"),
            inputs: vec![(0, vec![file(5), file(4)]), (1, vec![file(2)])],
            output_level: 1,
            bottommost: false,
            target_file_size: 1 << 20,
            output_file_ids: vec![10, 11],
            io_bytes_per_sec: 0,
            reason: "test".to_owned(),
            max_subcompactions: 1,
            grandparent_bounds: Vec::new(),
        }
    }

    fn io(kind: std::io::ErrorKind) -> SstError {
        SstError::Io {
            file: SST.to_owned(),
            source: std::io::Error::new(kind, "boom"),
        }
    }

    /// Every variant: (error, kind, retriable, file, offset, words the message must hold).
    fn cases() -> Vec<(
        CompactionError,
        pb::ErrorKind,
        bool,
        &'static str,
        u64,
        &'static str,
    )> {
        use pb::ErrorKind::{Compaction, Corruption, DiskSpace, Internal};
        vec![
            (
                StorageError::DiskSpace {
                    needed: 2000,
                    available: 100,
                    path: "/data".to_owned(),
                }
                .into(),
                DiskSpace,
                true,
                "",
                0,
                "2000 bytes needed, 100 available",
            ),
            (
                StorageError::NotFound {
                    path: SST.to_owned(),
                }
                .into(),
                Compaction,
                false,
                SST,
                0,
                "is gone",
            ),
            (
                CompactionError::from_input(
                    SstError::Corruption {
                        file: SST.to_owned(),
                        offset: 4096,
                        reason: "block checksum mismatch".to_owned(),
                    },
                    9000,
                ),
                Corruption,
                false,
                SST,
                4096,
                "block checksum mismatch",
            ),
            (
                CompactionError::from_input(
                    SstError::BadMagic {
                        file: SST.to_owned(),
                        found: 7,
                    },
                    9000,
                ),
                Corruption,
                false,
                SST,
                9000 - 64,
                "bad magic",
            ),
            (
                CompactionError::MalformedInput {
                    reason: "short key".to_owned(),
                },
                Corruption,
                false,
                "",
                0,
                "malformed input: short key",
            ),
            (
                CompactionError::from_input(io(std::io::ErrorKind::NotFound), 9000),
                Compaction,
                false,
                SST,
                0,
                "is gone",
            ),
            (
                CompactionError::from_input(io(std::io::ErrorKind::ConnectionReset), 9000),
                Compaction,
                true,
                SST,
                0,
                "reading input",
            ),
            (
                CompactionError::from_output(io(std::io::ErrorKind::Other), "out.sst"),
                Compaction,
                true,
                "out.sst",
                0,
                "writing output out.sst",
            ),
            (
                CompactionError::from_output(
                    SstError::TooLarge {
                        file: "out.sst".to_owned(),
                        what: "entry",
                    },
                    "out.sst",
                ),
                Compaction,
                false,
                "out.sst",
                0,
                "too large",
            ),
            (
                CompactionError::OutOfFileIds { allotted: 2 },
                Compaction,
                false,
                "",
                0,
                "all 2 allotted ids",
            ),
            (
                StorageError::InvalidPath {
                    path: "x".to_owned(),
                    reason: "y".to_owned(),
                }
                .into(),
                Compaction,
                true,
                "",
                0,
                "invalid object path",
            ),
            (
                CompactionError::Internal("thread panicked".to_owned()),
                Internal,
                true,
                "",
                0,
                "thread panicked",
            ),
        ]
    }

    #[test]
    fn every_error_maps_to_a_task_error_naming_the_compaction() {
        for (err, kind, retriable, file, offset, words) in cases() {
            let te = err.to_task_error(&spec(), 3, 123);
            assert_eq!(te.kind, kind as i32, "{err}");
            assert_eq!(te.retriable, retriable, "{err}");
            assert_eq!((te.file.as_str(), te.offset), (file, offset), "{err}");
            assert_eq!((te.attempt, te.at_unix_ms), (3, 123));
            for needle in [
                "CompactionError: ",
                "table users",
                "L0 [5, 4] + L1 [2] -> L1",
                words,
                file,
            ] {
                assert!(
                    te.message.contains(needle),
                    "{needle:?} not in {:?}",
                    te.message
                );
            }
        }
        assert_eq!(CompactionError::Cancelled.kind(), pb::ErrorKind::Cancelled);
    }

    #[test]
    fn merge_errors_are_downcast_to_their_typed_cause() {
        let size_of = |path: &str| if path == SST { 5000 } else { 0 };
        let corrupt: lsm::BoxError = Box::new(SstError::BadMagic {
            file: SST.to_owned(),
            found: 1,
        });
        let e = CompactionError::from_merge(corrupt, size_of);
        assert!(
            matches!(&e, CompactionError::Corruption { file, offset: 4936, .. } if file == SST),
            "{e:?}"
        );
        let ours: lsm::BoxError = Box::new(CompactionError::InputMissing {
            file: SST.to_owned(),
        });
        assert!(matches!(
            CompactionError::from_merge(ours, size_of),
            CompactionError::InputMissing { .. }
        ));
        let key: lsm::BoxError = Box::new(lsm::KeyError::TooShort(3));
        assert!(matches!(
            CompactionError::from_merge(key, size_of),
            CompactionError::MalformedInput { .. }
        ));
        let other: lsm::BoxError = "odd".into();
        assert!(matches!(
            CompactionError::from_merge(other, size_of),
            CompactionError::Internal(_)
        ));
    }
}
