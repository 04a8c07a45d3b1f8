//! The storage error type: one enum for every backend, with the object path (or URL) in each
//! message so an operator can tell which object a failure is about.

use std::sync::Arc;

/// A failed storage operation.
///
/// `object_store` errors are kept as the source (wrapped in an [`Arc`] so the error can be
/// cloned and handed to every waiter of a group commit).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The storage URL could not be understood.
    #[error("invalid storage url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    /// A storage option that the backend does not accept.
    #[error("invalid storage option {key:?}: {reason}")]
    InvalidOption { key: String, reason: String },

    /// A table name outside `[A-Za-z0-9_-]{1,128}`.
    #[error("invalid table name {}: {reason}", shown(name))]
    InvalidTableName { name: String, reason: String },

    /// An object path that the layout or the backend rejects.
    #[error("invalid object path {}: {reason}", shown(path))]
    InvalidPath { path: String, reason: String },

    /// The object does not exist.
    #[error("object {path} not found")]
    NotFound { path: String },

    /// A conditional create (put-if-absent) found the object already there.
    #[error("object {path} already exists")]
    AlreadyExists { path: String },

    /// A range outside the object.
    #[error("range {start}..{end} is outside object {path} of {size} bytes")]
    OutOfRange {
        path: String,
        start: u64,
        end: u64,
        size: u64,
    },

    /// Refused before writing: the work would not fit on the local volume.
    #[error("not enough disk space at {path}: {needed} bytes needed, {available} available")]
    DiskSpace {
        needed: u64,
        available: u64,
        path: String,
    },

    /// A local file-system operation (fsync, staging file, statvfs) failed.
    #[error("{op} failed for {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// Any other failure reported by the object store.
    #[error("{op} failed for {path}: {source}")]
    ObjectStore {
        op: &'static str,
        path: String,
        #[source]
        source: Arc<object_store::Error>,
    },
}

impl StorageError {
    /// Maps an `object_store` error, turning the cases callers branch on into their own
    /// variants.
    pub(crate) fn from_store(op: &'static str, path: &str, err: object_store::Error) -> Self {
        match err {
            object_store::Error::NotFound { .. } => Self::NotFound {
                path: path.to_owned(),
            },
            object_store::Error::AlreadyExists { .. } => Self::AlreadyExists {
                path: path.to_owned(),
            },
            other => Self::ObjectStore {
                op,
                path: path.to_owned(),
                source: Arc::new(other),
            },
        }
    }

    pub(crate) fn io(op: &'static str, path: impl std::fmt::Display, err: std::io::Error) -> Self {
        if err.kind() == std::io::ErrorKind::NotFound {
            return Self::NotFound {
                path: path.to_string(),
            };
        }
        Self::Io {
            op,
            path: path.to_string(),
            source: Arc::new(err),
        }
    }

    /// Whether the object was missing.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether a conditional create lost against an existing object.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

impl From<StorageError> for std::io::Error {
    /// For the blocking reader: the typed error travels inside the `io::Error` and can be
    /// recovered with `get_ref().downcast_ref::<StorageError>()`.
    fn from(err: StorageError) -> Self {
        let kind = match &err {
            StorageError::NotFound { .. } => std::io::ErrorKind::NotFound,
            StorageError::OutOfRange { .. } => std::io::ErrorKind::UnexpectedEof,
            StorageError::AlreadyExists { .. } => std::io::ErrorKind::AlreadyExists,
            StorageError::InvalidUrl { .. }
            | StorageError::InvalidOption { .. }
            | StorageError::InvalidTableName { .. }
            | StorageError::InvalidPath { .. } => std::io::ErrorKind::InvalidInput,
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, err)
    }
}

/// `s` quoted for an error message; a hostile input of any size is cut to its first 64
/// characters (messages travel back in gRPC headers, which have a size limit).
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &s[..cut], s.len()),
    }
}
