//! The segment format (version 1): encoding, and decoding under a [`RecoveryMode`].
//!
//! Pure functions over bytes: the writer, the reader and the fuzzer share them. The layout
//! is documented byte by byte in the crate docs.
//!
//! Decoding classifies every problem as one of two kinds of damage:
//!
//! - a **torn tail**: the segment ends inside its header or inside a record (fewer than 8
//!   bytes left for a record header, or a length that runs past the end). This is what an
//!   interrupted write leaves behind;
//! - **corruption**: a bad magic or checksum, a malformed batch, sequence numbers that do not
//!   increase, a segment that does not belong where it is.
//!
//! What happens next is the recovery mode's decision, as in RocksDB (`db/log_reader.cc`,
//! "WAL Recovery Modes"); see [`RecoveryMode`].

use bytes::Bytes;
use lsm::SeqNo;
use serde::{Deserialize, Serialize};

use crate::batch::{WalEntry, WriteBatch, array_at, decode_batch, encode_batch};
use crate::error::{CorruptionReason, WalError};

/// First bytes of every segment: "DPWAL", then CR LF and ^Z, which catch a file mangled by
/// line-ending conversion or read as text.
pub const MAGIC: [u8; 8] = *b"DPWAL\r\n\x1a";

/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;

/// Bytes of a record header: payload length (u32) and masked CRC32C (u32).
pub const RECORD_HEADER_LEN: usize = 8;

/// Largest record payload (the length field is a u32).
pub const MAX_PAYLOAD_LEN: usize = u32::MAX as usize;

/// Bytes of the segment header before the table name: magic, version, name length.
const HEADER_PREFIX_LEN: usize = 8 + 2 + 2;
/// Bytes of the segment header after the table name: first_seq, header CRC.
const HEADER_SUFFIX_LEN: usize = 8 + 4;

/// Size of a segment header for a table name of `table_len` bytes.
pub const fn header_len(table_len: usize) -> usize {
    HEADER_PREFIX_LEN + table_len + HEADER_SUFFIX_LEN
}

/// Size of the record that holds `batch`.
pub fn record_len(batch: &WriteBatch) -> usize {
    RECORD_HEADER_LEN + batch.payload_len()
}

const MASK_DELTA: u32 = 0xa282_ead8;

/// RocksDB's checksum masking: a CRC of data that itself contains CRCs is weak, so stored
/// CRCs are rotated and offset.
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask_crc`].
pub fn unmask_crc(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// A decoded segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub table: String,
    pub first_seq: SeqNo,
    /// Bytes the header occupies; records start here.
    pub len: usize,
}

/// Appends a segment header to `out`.
pub fn encode_header(table: &str, first_seq: SeqNo, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // Table names are validated to at most 128 bytes before they get here.
    out.extend_from_slice(&(table.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&first_seq.to_le_bytes());
    let crc = mask_crc(crc32c::crc32c(&out[start..]));
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Appends the record holding `batch` (with sequence numbers from `first_seq`) to `out`.
/// The caller ensures `batch.payload_len() <= MAX_PAYLOAD_LEN`.
pub fn encode_record(first_seq: SeqNo, batch: &WriteBatch, out: &mut Vec<u8>) {
    let header_at = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    encode_batch(first_seq, batch, out);
    let payload = &out[header_at + RECORD_HEADER_LEN..];
    let len = payload.len() as u32;
    let crc = mask_crc(crc32c::crc32c(payload));
    out[header_at..header_at + 4].copy_from_slice(&len.to_le_bytes());
    out[header_at + 4..header_at + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Encodes a whole segment: header, then one record per batch with consecutive sequence
/// numbers from `first_seq`. Returns the bytes and the last sequence number.
pub fn encode_segment<'a>(
    table: &str,
    first_seq: SeqNo,
    batches: impl IntoIterator<Item = &'a WriteBatch>,
) -> (Vec<u8>, SeqNo) {
    let mut out = Vec::new();
    encode_header(table, first_seq, &mut out);
    let mut next = first_seq;
    for batch in batches {
        encode_record(next, batch, &mut out);
        next += batch.len() as u64;
    }
    (out, next.saturating_sub(1))
}

/// How to react to damage, with RocksDB's names and semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryMode {
    /// An incomplete record at the end of the newest segment (an interrupted write) is
    /// ignored and the intact prefix is returned; any other damage is an error.
    #[default]
    TolerateCorruptedTail,
    /// Any damage, even a torn tail, is an error; nothing past it may be applied.
    AbsoluteConsistency,
    /// Stop at the first damage anywhere and return the consistent prefix before it, without
    /// an error; later records and segments are ignored. The report says where it stopped.
    PointInTime,
    /// Skip damaged records (resynchronising at the next record boundary when the length
    /// field is plausible, otherwise skipping the rest of the segment) and go on; the report
    /// lists what was skipped. Only for salvaging data: the result may have holes.
    SkipCorrupted,
}

impl RecoveryMode {
    /// Every mode, for tables of tests.
    pub const ALL: [RecoveryMode; 4] = [
        Self::TolerateCorruptedTail,
        Self::AbsoluteConsistency,
        Self::PointInTime,
        Self::SkipCorrupted,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TolerateCorruptedTail => "tolerate_corrupted_tail",
            Self::AbsoluteConsistency => "absolute_consistency",
            Self::PointInTime => "point_in_time",
            Self::SkipCorrupted => "skip_corrupted",
        }
    }
}

impl std::fmt::Display for RecoveryMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RecoveryMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown recovery mode {s:?}: expected one of tolerate_corrupted_tail, absolute_consistency, point_in_time, skip_corrupted"
                )
            })
    }
}

/// The kind of a damage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageKind {
    /// The segment ends inside its header or a record.
    TornTail,
    /// A damaged header or record.
    Corruption(CorruptionReason),
}

/// What the decoder did about a damage it did not turn into an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DamageAction {
    /// `tolerate_corrupted_tail`: the torn tail of the newest segment was ignored.
    Tolerated,
    /// `point_in_time`: reading stopped here; nothing after it was returned.
    Stopped,
    /// `skip_corrupted`: this many bytes were skipped, then reading went on.
    Skipped { bytes: u64 },
}

/// A damage found and survived (per the recovery mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Object path (or name) of the segment.
    pub segment: String,
    /// Byte offset of the damaged header (0) or record.
    pub offset: u64,
    pub kind: DamageKind,
    pub action: DamageAction,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            DamageKind::TornTail => write!(f, "torn record in wal segment {}", self.segment)?,
            DamageKind::Corruption(reason) => {
                write!(f, "corrupt record in wal segment {}", self.segment)?;
                write!(f, " at offset {}: {reason}", self.offset)?;
                return self.fmt_action(f);
            }
        }
        write!(f, " at offset {}", self.offset)?;
        self.fmt_action(f)
    }
}

impl Damage {
    fn fmt_action(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.action {
            DamageAction::Tolerated => f.write_str(" (tolerated torn tail)"),
            DamageAction::Stopped => f.write_str(" (stopped: nothing after it was read)"),
            DamageAction::Skipped { bytes } => write!(f, " (skipped {bytes} bytes)"),
        }
    }
}

/// The result of decoding one segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecodedSegment {
    /// The header, if it decoded.
    pub header: Option<SegmentHeader>,
    /// The entries of every intact record, in order.
    pub entries: Vec<WalEntry>,
    /// Damage survived per the mode (tolerated, stopped at, or skipped).
    pub damage: Vec<Damage>,
    /// `point_in_time` stopped in this segment: later segments must not be read.
    pub stop: bool,
}

impl DecodedSegment {
    /// The last intact sequence number.
    pub fn last_seq(&self) -> Option<SeqNo> {
        self.entries.last().map(|e| e.seq)
    }
}

/// What a caller knows about a segment from outside its bytes (its table, its name, its
/// neighbours); checked while decoding, so damage found this way follows the recovery mode
/// too. [`crate::WalReader`] fills it in from the listing.
#[derive(Debug, Clone, Default)]
pub struct SegmentContext<'a> {
    /// The table the segment must belong to.
    pub table: Option<&'a str>,
    /// The first sequence number its name carries.
    pub named_first_seq: Option<SeqNo>,
    /// The first sequence number of the next segment: every entry must be below it.
    pub next_first_seq: Option<SeqNo>,
    /// The highest sequence number read intact before this segment (for error messages).
    pub valid_through: Option<SeqNo>,
}

/// Decodes one segment under `mode`. `segment` names it in errors and damage reports;
/// `is_last` says whether it is the newest segment of its table (only there is a torn tail
/// tolerated by `tolerate_corrupted_tail`).
///
/// Returns an error when the mode does not survive a damage; otherwise the intact entries
/// and what was survived. Never panics, whatever the bytes.
pub fn decode_segment(
    bytes: &Bytes,
    mode: RecoveryMode,
    segment: &str,
    is_last: bool,
) -> Result<DecodedSegment, WalError> {
    decode_segment_with(bytes, mode, segment, is_last, &SegmentContext::default())
}

/// A problem with the header.
enum HeaderProblem {
    Torn,
    Corrupt(CorruptionReason),
    Version(u16),
}

/// Decodes the header; `expected_table` (when known) lets a damaged name length be told
/// apart from a torn header.
fn decode_header(
    bytes: &[u8],
    expected_table: Option<&str>,
) -> Result<SegmentHeader, HeaderProblem> {
    let magic_len = bytes.len().min(MAGIC.len());
    if bytes[..magic_len] != MAGIC[..magic_len] {
        return Err(HeaderProblem::Corrupt(CorruptionReason::BadMagic {
            found: bytes[..magic_len].to_vec(),
        }));
    }
    if bytes.len() < HEADER_PREFIX_LEN {
        return Err(HeaderProblem::Torn);
    }
    let version = u16::from_le_bytes(array_at(bytes, 8));
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::Version(version));
    }
    let name_len = u16::from_le_bytes(array_at(bytes, 10)) as usize;
    if name_len == 0 || name_len > storage::paths::MAX_TABLE_NAME_LEN {
        // Checked before "is the header complete?", so that a damaged length is reported as
        // corruption rather than mistaken for a torn (and tolerated) header.
        return Err(HeaderProblem::Corrupt(CorruptionReason::BadHeader(
            format!(
                "table name length {name_len} outside 1..={}",
                storage::paths::MAX_TABLE_NAME_LEN
            ),
        )));
    }
    if let Some(expected) = expected_table.filter(|t| t.len() != name_len) {
        return Err(HeaderProblem::Corrupt(CorruptionReason::BadHeader(
            format!(
                "table name length {name_len}, expected {} for table {expected:?}",
                expected.len()
            ),
        )));
    }
    let len = header_len(name_len);
    if bytes.len() < len {
        return Err(HeaderProblem::Torn);
    }
    let crc_at = len - 4;
    let stored = unmask_crc(u32::from_le_bytes(array_at(bytes, crc_at)));
    let computed = crc32c::crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(HeaderProblem::Corrupt(CorruptionReason::HeaderChecksum {
            stored,
            computed,
        }));
    }
    let bad = |what: String| HeaderProblem::Corrupt(CorruptionReason::BadHeader(what));
    let table = std::str::from_utf8(&bytes[HEADER_PREFIX_LEN..HEADER_PREFIX_LEN + name_len])
        .map_err(|_| bad("table name is not UTF-8".into()))?;
    storage::paths::validate_table_name(table).map_err(|e| bad(e.to_string()))?;
    let first_seq = u64::from_le_bytes(array_at(bytes, HEADER_PREFIX_LEN + name_len));
    if first_seq == 0 || first_seq > lsm::MAX_SEQNO {
        return Err(bad(format!(
            "first sequence number {first_seq} out of range"
        )));
    }
    Ok(SegmentHeader {
        version,
        table: table.to_owned(),
        first_seq,
        len,
    })
}

/// What to do after a damage the mode survives.
enum Flow {
    /// Go on decoding at this offset.
    ResumeAt(usize),
    /// Stop decoding this segment; later segments may still be read.
    EndSegment,
    /// Stop decoding; read no later segment either.
    StopAll,
}

/// The decoder's state for one segment.
struct Decoder<'a> {
    mode: RecoveryMode,
    segment: &'a str,
    is_last: bool,
    len: usize,
    out: DecodedSegment,
    valid_through: Option<SeqNo>,
}

impl Decoder<'_> {
    /// Applies the recovery mode to a damage at `offset`; `resume` is where the next record
    /// starts if the damage has a known end.
    fn damage(
        &mut self,
        kind: DamageKind,
        offset: usize,
        resume: Option<usize>,
    ) -> Result<Flow, WalError> {
        let error = || match &kind {
            DamageKind::TornTail => WalError::TornTail {
                segment: self.segment.to_owned(),
                offset: offset as u64,
                valid_through: self.valid_through,
            },
            DamageKind::Corruption(reason) => WalError::Corruption {
                segment: self.segment.to_owned(),
                offset: offset as u64,
                reason: reason.clone(),
                valid_through: self.valid_through,
            },
        };
        let (action, flow) = match (self.mode, &kind) {
            (RecoveryMode::AbsoluteConsistency, _) => return Err(error()),
            (RecoveryMode::TolerateCorruptedTail, DamageKind::TornTail) if self.is_last => {
                (DamageAction::Tolerated, Flow::EndSegment)
            }
            (RecoveryMode::TolerateCorruptedTail, _) => return Err(error()),
            (RecoveryMode::PointInTime, _) => {
                self.out.stop = true;
                (DamageAction::Stopped, Flow::StopAll)
            }
            (RecoveryMode::SkipCorrupted, _) => match resume {
                Some(next) => (
                    DamageAction::Skipped {
                        bytes: (next - offset) as u64,
                    },
                    Flow::ResumeAt(next),
                ),
                None => (
                    DamageAction::Skipped {
                        bytes: (self.len - offset) as u64,
                    },
                    Flow::EndSegment,
                ),
            },
        };
        self.out.damage.push(Damage {
            segment: self.segment.to_owned(),
            offset: offset as u64,
            kind,
            action,
        });
        Ok(flow)
    }
}

/// [`decode_segment`] with what the caller knows about the segment checked too.
pub fn decode_segment_with(
    bytes: &Bytes,
    mode: RecoveryMode,
    segment: &str,
    is_last: bool,
    ctx: &SegmentContext<'_>,
) -> Result<DecodedSegment, WalError> {
    let mut d = Decoder {
        mode,
        segment,
        is_last,
        len: bytes.len(),
        out: DecodedSegment::default(),
        valid_through: ctx.valid_through,
    };

    let header = match decode_header(bytes, ctx.table) {
        Ok(h) => h,
        Err(HeaderProblem::Version(version)) => {
            return Err(WalError::UnsupportedVersion {
                segment: segment.to_owned(),
                version,
            });
        }
        Err(HeaderProblem::Torn) => {
            d.damage(DamageKind::TornTail, 0, None)?;
            return Ok(d.out);
        }
        Err(HeaderProblem::Corrupt(reason)) => {
            d.damage(DamageKind::Corruption(reason), 0, None)?;
            return Ok(d.out);
        }
    };
    let mismatch = if let Some(expected) = ctx.table.filter(|t| *t != header.table) {
        Some(CorruptionReason::TableMismatch {
            expected: expected.to_owned(),
            found: header.table.clone(),
        })
    } else {
        ctx.named_first_seq
            .filter(|named| *named != header.first_seq)
            .map(|named| CorruptionReason::NameMismatch {
                named,
                header: header.first_seq,
            })
    };
    if let Some(reason) = mismatch {
        d.damage(DamageKind::Corruption(reason), 0, None)?;
        return Ok(d.out);
    }

    let first_record = header.len;
    let header_first_seq = header.first_seq;
    d.out.header = Some(header);
    let mut prev_last: Option<SeqNo> = None;
    let mut pos = first_record;
    while pos < bytes.len() {
        let remaining = bytes.len() - pos;
        let flow = 'record: {
            if remaining < RECORD_HEADER_LEN {
                break 'record d.damage(DamageKind::TornTail, pos, None)?;
            }
            let len = u32::from_le_bytes(array_at(bytes, pos)) as usize;
            if len > remaining - RECORD_HEADER_LEN {
                break 'record d.damage(DamageKind::TornTail, pos, None)?;
            }
            let end = pos + RECORD_HEADER_LEN + len;
            let corrupt = |reason| (DamageKind::Corruption(reason), pos, Some(end));
            let payload = bytes.slice(pos + RECORD_HEADER_LEN..end);
            let stored = unmask_crc(u32::from_le_bytes(array_at(bytes, pos + 4)));
            let computed = crc32c::crc32c(&payload);
            let checked = if stored != computed {
                Err(corrupt(CorruptionReason::RecordChecksum {
                    stored,
                    computed,
                }))
            } else {
                decode_batch(&payload).map_err(|e| corrupt(e.into()))
            };
            let (first_seq, entries) = match checked {
                Ok(batch) => batch,
                Err((kind, at, resume)) => break 'record d.damage(kind, at, resume)?,
            };
            let last = first_seq + (entries.len() as u64 - 1);
            let order = if pos == first_record && first_seq != header_first_seq {
                Err(CorruptionReason::FirstSeqMismatch {
                    expected: header_first_seq,
                    found: first_seq,
                })
            } else if first_seq < header_first_seq || prev_last.is_some_and(|p| first_seq <= p) {
                Err(CorruptionReason::SeqNotIncreasing {
                    previous: prev_last.unwrap_or(header_first_seq - 1),
                    found: first_seq,
                })
            } else if let Some(next_first) = ctx.next_first_seq.filter(|n| last >= *n) {
                Err(CorruptionReason::OverlapsNextSegment { last, next_first })
            } else {
                Ok(())
            };
            if let Err(reason) = order {
                let (kind, at, resume) = corrupt(reason);
                break 'record d.damage(kind, at, resume)?;
            }
            d.out.entries.extend(entries);
            prev_last = Some(last);
            d.valid_through = Some(last);
            Flow::ResumeAt(end)
        };
        match flow {
            Flow::ResumeAt(next) => pos = next,
            Flow::EndSegment | Flow::StopAll => break,
        }
    }
    Ok(d.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_round_trips() {
        for crc in [0, 1, 0xdead_beef, u32::MAX, MASK_DELTA] {
            assert_eq!(unmask_crc(mask_crc(crc)), crc);
            assert_ne!(mask_crc(crc), crc);
        }
    }

    #[test]
    fn recovery_mode_names_match_rocksdb_and_serde() {
        for mode in RecoveryMode::ALL {
            let json = serde_json::to_string(&mode).expect("serializes");
            assert_eq!(json, format!("\"{}\"", mode.as_str()));
            let back: RecoveryMode = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, mode);
            assert_eq!(mode.as_str().parse::<RecoveryMode>(), Ok(mode));
        }
        assert_eq!(RecoveryMode::default(), RecoveryMode::TolerateCorruptedTail);
        assert!("tolerate".parse::<RecoveryMode>().is_err());
    }

    #[test]
    fn header_layout_is_as_documented() {
        let mut out = Vec::new();
        encode_header("t1", 7, &mut out);
        assert_eq!(out.len(), header_len(2));
        assert_eq!(&out[..8], b"DPWAL\r\n\x1a");
        assert_eq!(&out[8..10], &[1, 0]);
        assert_eq!(&out[10..12], &[2, 0]);
        assert_eq!(&out[12..14], b"t1");
        assert_eq!(&out[14..22], &7u64.to_le_bytes());
        let crc = mask_crc(crc32c::crc32c(&out[..22]));
        assert_eq!(&out[22..26], &crc.to_le_bytes());
        let h = decode_header(&out, Some("t1")).ok().expect("decodes");
        assert_eq!((h.table.as_str(), h.first_seq, h.len), ("t1", 7, 26));
    }

    #[test]
    fn decodes_what_it_encodes() {
        let mut a = WriteBatch::new();
        a.put("k1", "v1").delete("k2");
        let mut b = WriteBatch::new();
        b.put("k3", "");
        let (bytes, last) = encode_segment("t", 5, [&a, &b]);
        assert_eq!(last, 7);
        let seg = decode_segment(
            &Bytes::from(bytes),
            RecoveryMode::AbsoluteConsistency,
            "s",
            true,
        )
        .expect("decodes");
        let mut expected = a.to_entries(5);
        expected.extend(b.to_entries(7));
        assert_eq!(seg.entries, expected);
        assert!(seg.damage.is_empty());
        assert!(!seg.stop);
    }

    #[test]
    fn checks_the_context() {
        let mut a = WriteBatch::new();
        a.put("k", "v");
        let (bytes, _) = encode_segment("t", 5, [&a]);
        let bytes = Bytes::from(bytes);
        let decode = |ctx: SegmentContext<'_>| {
            decode_segment_with(&bytes, RecoveryMode::AbsoluteConsistency, "s", true, &ctx)
        };
        let reason = |r: Result<DecodedSegment, WalError>| match r {
            Err(WalError::Corruption { reason, .. }) => reason,
            other => panic!("expected corruption, got {other:?}"),
        };
        assert!(matches!(
            reason(decode(SegmentContext {
                table: Some("u"),
                ..Default::default()
            })),
            CorruptionReason::TableMismatch { .. }
        ));
        assert!(matches!(
            reason(decode(SegmentContext {
                named_first_seq: Some(4),
                ..Default::default()
            })),
            CorruptionReason::NameMismatch {
                named: 4,
                header: 5
            }
        ));
        assert!(matches!(
            reason(decode(SegmentContext {
                next_first_seq: Some(5),
                ..Default::default()
            })),
            CorruptionReason::OverlapsNextSegment { .. }
        ));
        assert!(
            decode(SegmentContext {
                table: Some("t"),
                named_first_seq: Some(5),
                next_first_seq: Some(6),
                valid_through: Some(4),
            })
            .is_ok()
        );
    }

    #[test]
    fn sequence_numbers_must_increase_within_a_segment() {
        let mut a = WriteBatch::new();
        a.put("k", "v").put("k2", "v");
        let mut bytes = Vec::new();
        encode_header("t", 5, &mut bytes);
        encode_record(5, &a, &mut bytes);
        encode_record(6, &a, &mut bytes); // overlaps 5..=6
        let err = decode_segment(
            &Bytes::from(bytes),
            RecoveryMode::TolerateCorruptedTail,
            "s",
            true,
        )
        .expect_err("overlap");
        match err {
            WalError::Corruption {
                reason:
                    CorruptionReason::SeqNotIncreasing {
                        previous: 6,
                        found: 6,
                    },
                offset,
                valid_through: Some(6),
                ..
            } => assert_eq!(offset as usize, header_len(1) + record_len(&a)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn unsupported_version_is_an_error_in_every_mode() {
        let mut bytes = Vec::new();
        encode_header("t", 1, &mut bytes);
        bytes[8] = 2;
        let bytes = Bytes::from(bytes);
        for mode in RecoveryMode::ALL {
            assert!(matches!(
                decode_segment(&bytes, mode, "s", true),
                Err(WalError::UnsupportedVersion { version: 2, .. })
            ));
        }
    }
}
