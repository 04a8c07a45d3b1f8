//! The crate's error type: every failure names the file and, for corruption, the offset.

use std::fmt;

/// Everything that can go wrong while building or reading an SST.
#[derive(Debug, thiserror::Error)]
pub enum SstError {
    /// The bytes do not decode: a checksum mismatch, a length that points outside its block,
    /// a malformed varint, a key that is not an internal key, and so on. `offset` is the file
    /// offset of the block (or footer) that failed, `reason` says what and where inside it.
    #[error("corrupt sst {file} at offset {offset}: {reason}")]
    Corruption {
        file: String,
        offset: u64,
        reason: String,
    },
    /// The underlying writer or source failed.
    #[error("io error on sst {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The last 8 bytes are not the SST magic: not an SST, or truncated.
    #[error("sst {file}: bad magic {found:#018x} (not an sst file, or truncated)")]
    BadMagic { file: String, found: u64 },
    /// A well-formed footer of a format version this code does not read.
    #[error("sst {file}: unsupported format version {version}")]
    UnsupportedVersion { file: String, version: u32 },
    /// The builder was given a key that does not sort strictly after the previous one.
    #[error("sst {file}: key {key} added out of order after {previous}")]
    OutOfOrder {
        file: String,
        previous: KeyDisplay,
        key: KeyDisplay,
    },
    /// The builder was given bytes that are not an encoded internal key.
    #[error("sst {file}: invalid internal key {key}: {reason}")]
    InvalidKey {
        file: String,
        key: KeyDisplay,
        reason: lsm::KeyError,
    },
    /// An entry or a block too large for the format (lengths are u32).
    #[error("sst {file}: {what} too large for the format")]
    TooLarge { file: String, what: &'static str },
    /// Options out of range (zero block size, zero restart interval, ...).
    #[error("invalid sst options: {0}")]
    InvalidOptions(String),
    /// The builder already failed (an IO error leaves the output in an unknown state).
    #[error("sst {file}: builder already failed")]
    BuilderFailed { file: String },
}

impl SstError {
    pub(crate) fn corruption(file: &str, offset: u64, reason: impl Into<String>) -> Self {
        Self::Corruption {
            file: file.to_owned(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(file: &str, source: std::io::Error) -> Self {
        Self::Io {
            file: file.to_owned(),
            source,
        }
    }

    /// Whether this error says the file's bytes are damaged (as opposed to an IO failure or
    /// misuse of the builder).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            Self::Corruption { .. } | Self::BadMagic { .. } | Self::UnsupportedVersion { .. }
        )
    }
}

/// A key shown in an error message: hex-escaped and shortened, so errors stay one line.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyDisplay(pub Vec<u8>);

impl KeyDisplay {
    const MAX_SHOWN: usize = 64;
}

impl fmt::Display for KeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for &b in self.0.iter().take(Self::MAX_SHOWN) {
            for c in std::ascii::escape_default(b) {
                f.write_str(char::from(c).encode_utf8(&mut [0u8; 4]))?;
            }
        }
        if self.0.len() > Self::MAX_SHOWN {
            write!(f, "...({} bytes)", self.0.len())?;
        }
        f.write_str("\"")
    }
}

impl fmt::Debug for KeyDisplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = SstError> = std::result::Result<T, E>;
