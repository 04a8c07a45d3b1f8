//! Why a flush attempt failed, and the one mapping of that to the `TaskError` the scheduler
//! records (and the operator reads).
//!
//! Every reported error is retriable: the scheduler retries the task with a new attempt,
//! with backoff, up to `scheduler.max_attempts`, and owns the decision to give up. The
//! message always names the table, the memtable and the replayer, so one line in the queue
//! status says which flush failed and why.

use proto::v1 as pb;

use crate::request::FlushSpec;
use crate::write::WriteError;

/// A failed flush attempt.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Refused before writing anything: the SST would not fit on the local volume.
    #[error("not enough disk space at {path}: {needed} bytes needed, {available} available")]
    DiskSpace {
        needed: u64,
        available: u64,
        path: String,
    },
    /// The replayer could not be reached, does not hold the memtable (NOT_FOUND), or the
    /// stream broke off or stalled.
    #[error("reading the memtable from the replayer failed: {cause}")]
    Replayer { cause: String },
    /// The replayer's stream was malformed or empty; nothing was written.
    #[error("the replayer sent an invalid memtable stream: {0}")]
    BadStream(WriteError),
    /// Building the SST failed (an output error, an entry too large for the format).
    #[error("building the sst failed: {0}")]
    Build(WriteError),
    /// Writing to or checking the shared storage failed.
    #[error(transparent)]
    Storage(storage::StorageError),
    /// A bug: the build thread panicked or vanished.
    #[error("internal error: {0}")]
    Internal(String),
    /// The scheduler cancelled the attempt or the worker is shutting down. Not reported:
    /// the scheduler already knows (it cancelled) or retries once the lease expires.
    #[error("cancelled")]
    Cancelled,
}

impl From<storage::StorageError> for FlushError {
    fn from(e: storage::StorageError) -> Self {
        match e {
            storage::StorageError::DiskSpace {
                needed,
                available,
                path,
            } => Self::DiskSpace {
                needed,
                available,
                path,
            },
            other => Self::Storage(other),
        }
    }
}

impl From<WriteError> for FlushError {
    fn from(e: WriteError) -> Self {
        if e.is_bad_stream() {
            Self::BadStream(e)
        } else {
            Self::Build(e)
        }
    }
}

impl FlushError {
    /// A replayer failure from a gRPC status.
    pub fn replayer(status: &tonic::Status) -> Self {
        Self::Replayer {
            cause: format!("{:?}: {}", status.code(), status.message()),
        }
    }

    pub fn kind(&self) -> pb::ErrorKind {
        match self {
            Self::DiskSpace { .. } => pb::ErrorKind::DiskSpace,
            Self::Replayer { .. } | Self::BadStream(_) | Self::Build(_) | Self::Storage(_) => {
                pb::ErrorKind::Flush
            }
            Self::Internal(_) => pb::ErrorKind::Internal,
            Self::Cancelled => pb::ErrorKind::Cancelled,
        }
    }

    /// Whether the SST object is what the error is about (so it goes into `TaskError.file`).
    fn concerns_the_file(&self) -> bool {
        matches!(self, Self::Build(_) | Self::Storage(_))
    }

    /// The `TaskError` for this failure of `attempt` of a flush of `spec`, recorded at
    /// `now_ms` (milliseconds since the Unix epoch).
    pub fn to_task_error(&self, spec: &FlushSpec, attempt: u32, now_ms: i64) -> pb::TaskError {
        let path = spec.sst_path();
        pb::TaskError {
            kind: self.kind() as i32,
            message: format!(
                "flush of memtable {} of table {} from replayer {} into {path} failed: {self}",
                spec.memtable_id, spec.table, spec.replayer_address
            ),
            file: if self.concerns_the_file() {
                path.to_string()
            } else {
                String::new()
            },
            offset: 0,
            retriable: true,
            attempt,
            at_unix_ms: now_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::SeqRange;
    use storage::{StorageError, TableName};

    fn spec() -> FlushSpec {
        FlushSpec {
            table: TableName::new("users").expect("valid name"),
            memtable_id: 3,
            replayer_address: "10.0.0.7:50052".to_owned(),
            seqs: SeqRange {
                lowest: 11,
                highest: 20,
            },
            file_id: 42,
            size_bytes: 1000,
            io_bytes_per_sec: 0,
        }
    }

    const SST: &str = "tables/users/sst/00000000000000000042.sst";

    /// Every variant: (error, kind, whether `file` is set, words the message must hold).
    fn cases() -> Vec<(FlushError, pb::ErrorKind, bool, &'static str)> {
        vec![
            (
                FlushError::from(StorageError::DiskSpace {
                    needed: 2000,
                    available: 100,
                    path: "/data".to_owned(),
                }),
                pb::ErrorKind::DiskSpace,
                false,
                "2000 bytes needed, 100 available",
            ),
            (
                FlushError::replayer(&tonic::Status::not_found("no memtable 3")),
                pb::ErrorKind::Flush,
                false,
                "NotFound: no memtable 3",
            ),
            (
                FlushError::from(WriteError::Empty),
                pb::ErrorKind::Flush,
                false,
                "nothing to flush",
            ),
            (
                FlushError::from(WriteError::Sst(sst::SstError::InvalidOptions("x".into()))),
                pb::ErrorKind::Flush,
                true,
                "building the sst failed",
            ),
            (
                FlushError::from(StorageError::NotFound {
                    path: SST.to_owned(),
                }),
                pb::ErrorKind::Flush,
                true,
                "not found",
            ),
            (
                FlushError::Internal("build thread panicked".into()),
                pb::ErrorKind::Internal,
                false,
                "build thread panicked",
            ),
            (
                FlushError::Cancelled,
                pb::ErrorKind::Cancelled,
                false,
                "cancelled",
            ),
        ]
    }

    #[test]
    fn every_error_maps_to_a_retriable_task_error_naming_the_flush() {
        for (err, kind, has_file, cause) in cases() {
            let te = err.to_task_error(&spec(), 4, 123);
            assert_eq!(te.kind, kind as i32, "{err}");
            assert!(te.retriable, "{err}");
            assert_eq!((te.attempt, te.at_unix_ms), (4, 123));
            assert_eq!(te.file, if has_file { SST } else { "" }, "{err}");
            for needle in [
                "memtable 3",
                "table users",
                "replayer 10.0.0.7:50052",
                SST,
                cause,
            ] {
                assert!(
                    te.message.contains(needle),
                    "{needle:?} not in {:?}",
                    te.message
                );
            }
        }
    }

    #[test]
    fn bad_streams_and_build_failures_are_told_apart() {
        let bad = FlushError::from(WriteError::Empty);
        assert!(matches!(bad, FlushError::BadStream(_)), "{bad:?}");
        let build = FlushError::from(WriteError::Sst(sst::SstError::InvalidOptions("x".into())));
        assert!(matches!(build, FlushError::Build(_)), "{build:?}");
    }
}
