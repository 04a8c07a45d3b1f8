//! WAL errors. Every decoding error names the segment (its object path) and the byte offset
//! of the damaged header or record, and says how far the log was intact
//! (`valid_through`): the highest sequence number decoded intact before the damage in this
//! read. A caller that must not apply anything past a damage (absolute consistency) applies
//! nothing after that sequence number.

use lsm::SeqNo;
use storage::StorageError;

use crate::batch::BatchError;
use crate::format::FORMAT_VERSION;

/// What is wrong with a damaged header or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptionReason {
    #[error("bad magic {found:02x?}")]
    BadMagic { found: Vec<u8> },
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum { stored: u32, computed: u32 },
    #[error("malformed header: {0}")]
    BadHeader(String),
    #[error("segment belongs to table {found:?}, expected {expected:?}")]
    TableMismatch { expected: String, found: String },
    #[error("segment name says first sequence number {named}, header says {header}")]
    NameMismatch { named: SeqNo, header: SeqNo },
    #[error("record checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    RecordChecksum { stored: u32, computed: u32 },
    #[error("malformed write batch: {0}")]
    BadBatch(#[from] BatchError),
    #[error("first batch starts at sequence number {found}, segment header says {expected}")]
    FirstSeqMismatch { expected: SeqNo, found: SeqNo },
    #[error("sequence numbers go backwards: batch starts at {found} after {previous}")]
    SeqNotIncreasing { previous: SeqNo, found: SeqNo },
    #[error(
        "batch ends at sequence number {last}, not below the next segment's first {next_first}"
    )]
    OverlapsNextSegment { last: SeqNo, next_first: SeqNo },
}

/// Formats the `valid_through` suffix of damage messages.
fn through(valid_through: &Option<SeqNo>) -> String {
    match valid_through {
        Some(seq) => format!(" (log intact through seq {seq})"),
        None => String::new(),
    }
}

/// A WAL failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WalError {
    /// An incomplete record (or header) at the end of a segment, where recovery mode does not
    /// tolerate it: any torn tail in `absolute_consistency`, a torn non-newest segment in
    /// `tolerate_corrupted_tail`.
    #[error("torn record at the end of wal segment {segment} at offset {offset}{}", through(.valid_through))]
    TornTail {
        segment: String,
        offset: u64,
        valid_through: Option<SeqNo>,
    },

    /// A damaged header or record.
    #[error("corrupt record in wal segment {segment} at offset {offset}: {reason}{}", through(.valid_through))]
    Corruption {
        segment: String,
        offset: u64,
        reason: CorruptionReason,
        valid_through: Option<SeqNo>,
    },

    /// A segment written by a newer (or unknown) format. Never skipped, in any mode: it is
    /// not damage, and skipping it would silently lose data.
    #[error(
        "wal segment {segment} has format version {version}; this build reads version {FORMAT_VERSION}"
    )]
    UnsupportedVersion { segment: String, version: u16 },

    /// Another writer created the segment this writer was about to create: it extended the
    /// log, and this writer may never write again.
    #[error(
        "wal writer for table {table} is fenced: segment {segment} already exists (another writer extended the log at seq {first_seq})"
    )]
    Fenced {
        table: String,
        first_seq: SeqNo,
        segment: String,
    },

    /// A segment put failed. Its outcome is unknown (the store may have kept it), so the
    /// writer stops; reopening it re-reads the end of the log.
    #[error(
        "writing wal segment {segment} of table {table} (seqs from {first_seq}) failed: {source}"
    )]
    WriteFailed {
        table: String,
        first_seq: SeqNo,
        segment: String,
        #[source]
        source: StorageError,
    },

    /// The writer stopped after an earlier failed write.
    #[error(
        "wal writer for table {table} stopped after the failed write of segment {segment}; reopen it"
    )]
    Poisoned { table: String, segment: String },

    /// Between two segments of a listing, sequence numbers no segment holds: the segment
    /// after `segment` (which ends at `last_seq`) starts at `next_first_seq`. Writers number
    /// segments without holes, so either the listing missed a segment created while it ran
    /// (a directory listing is not a snapshot: list again) or a segment is gone.
    #[error(
        "wal of table {table}: no segment holds seqs {}..={} (segment {segment} ends at seq {last_seq}, the next starts at {next_first_seq})",
        .last_seq + 1,
        .next_first_seq - 1
    )]
    MissingSegment {
        table: String,
        segment: String,
        last_seq: SeqNo,
        next_first_seq: SeqNo,
    },

    #[error("empty write batch for table {table}")]
    EmptyBatch { table: String },

    #[error(
        "write batch of {bytes} bytes for table {table} exceeds the record limit of {max} bytes"
    )]
    BatchTooLarge {
        table: String,
        bytes: usize,
        max: usize,
    },

    #[error("sequence numbers of table {table} exhausted after {last_seq}")]
    SeqExhausted { table: String, last_seq: SeqNo },

    #[error("wal writer for table {table} is closed")]
    Closed { table: String },

    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl WalError {
    /// For torn tails and corruption: the highest sequence number decoded intact before it.
    pub fn valid_through(&self) -> Option<SeqNo> {
        match self {
            Self::TornTail { valid_through, .. } | Self::Corruption { valid_through, .. } => {
                *valid_through
            }
            _ => None,
        }
    }

    /// Whether this is damage found while decoding (torn tail or corruption).
    pub fn is_damage(&self) -> bool {
        matches!(self, Self::TornTail { .. } | Self::Corruption { .. })
    }
}
