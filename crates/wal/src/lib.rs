//! The write-ahead log: its segment format (version 1), a group-commit writer over shared
//! storage, and a reader with RocksDB's recovery modes.
//!
//! The engine's write path only appends write batches to a table's WAL; everything else
//! (memtables, SSTs, compaction) is rebuilt from it by the background services. So this
//! crate owns the one promise the whole system rests on: **an acknowledged write is durable
//! and is read back exactly**, and damage is detected, located and handled as the operator
//! chose instead of being replayed as data.
//!
//! # Vocabulary
//!
//! - **batch** ([`WriteBatch`]): puts and deletes appended together; its entries get
//!   consecutive sequence numbers.
//! - **record**: one batch in a segment, framed by length and checksum.
//! - **segment**: one immutable object `tables/<table>/wal/<first_seq:020>.wal` holding the
//!   batches of one group commit ([`WalWriter`]).
//! - **torn tail** vs **corruption**: a segment that ends inside a record, vs a record that
//!   is wrong ([`WalError::TornTail`], [`WalError::Corruption`]); a [`RecoveryMode`] decides
//!   which are errors.
//!
//! # Segment format, version 1
//!
//! All integers are little-endian. CRCs are CRC32C (Castagnoli), stored *masked* as RocksDB
//! does: `masked = rotate_right(crc, 15) + 0xa282ead8 (wrapping)`.
//!
//! Header (`26 + n` bytes for a table name of `n` bytes):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `44 50 57 41 4c 0d 0a 1a` (`"DPWAL\r\n\x1a"`) |
//! | 8 | 2 | format version, `1` |
//! | 10 | 2 | `n`, table name length (1..=128) |
//! | 12 | n | table name, `[A-Za-z0-9_-]` |
//! | 12+n | 8 | first sequence number of the segment (>= 1, = the number in its name) |
//! | 20+n | 4 | masked CRC32C of bytes `0 .. 20+n` |
//!
//! Then records, back to back until the end of the object:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | payload length `L` |
//! | 4 | 4 | masked CRC32C of the payload |
//! | 8 | L | payload: a write batch |
//!
//! Batch payload:
//!
//! | size | field |
//! |---|---|
//! | 8 | first sequence number `s` (>= 1) |
//! | 4 | entry count `c` (>= 1) |
//! | … | `c` entries: kind `u8` (`lsm::ValueKind`: 0 Delete, 1 Put), key length varint32, key, value length varint32 (0 for Delete), value |
//!
//! Entry `i` has sequence number `s + i`. Varints are unsigned LEB128 of at most 5 bytes.
//! The first batch of a segment starts at the header's first sequence number; every later
//! batch starts above the previous batch's last; every entry lies below the next segment's
//! first sequence number (gaps are allowed, overlaps are corruption). Writers leave no
//! gap between segments; a tailing reader may ask for holes to be reported
//! ([`ReadChecks::holes`]), because a directory listing that runs while segments are
//! written can miss one and show its successor.
//!
//! The format is pinned by checked-in fixture files (`tests/fixtures/v1/`): a change that
//! cannot read them fails the tests. A new format gets a new version number; a reader meets
//! an unknown version with [`WalError::UnsupportedVersion`] in every mode.

#![forbid(unsafe_code)]

mod batch;
mod error;
mod format;
mod reader;
mod writer;

pub use batch::{BatchError, EntryError, WalEntry, WriteBatch, decode_batch, encode_batch};
/// Re-exported so callers (and the fuzzer) need no direct `bytes` dependency.
pub use bytes::Bytes;
pub use error::{CorruptionReason, WalError};
pub use format::{
    Damage, DamageAction, DamageKind, DecodedSegment, FORMAT_VERSION, MAGIC, MAX_PAYLOAD_LEN,
    RECORD_HEADER_LEN, RecoveryMode, SegmentContext, SegmentHeader, decode_segment,
    decode_segment_with, encode_header, encode_record, encode_segment, header_len, mask_crc,
    record_len, unmask_crc,
};
pub use reader::{ReadChecks, RecoveryReport, SegmentInfo, WalChunks, WalReader};
pub use writer::{Appended, WalWriter, WalWriterConfig};
