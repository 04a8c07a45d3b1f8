//! Write batches and their record payload encoding (pure: no IO).
//!
//! A [`WriteBatch`] is what a client appends: an ordered list of puts and deletes that
//! become durable together and get consecutive sequence numbers. It keeps its entries
//! already encoded (like RocksDB's `WriteBatch::rep_`), so the writer only prepends the
//! first sequence number and count and copies the bytes into the segment.
//!
//! Payload layout (all integers little-endian):
//!
//! ```text
//! first_seq  u64
//! count      u32          number of entries, >= 1
//! entries    count times:
//!   kind       u8         lsm::ValueKind: 0 = Delete, 1 = Put
//!   key_len    varint32   unsigned LEB128, at most 5 bytes
//!   key        key_len bytes
//!   value_len  varint32   0 for a Delete
//!   value      value_len bytes
//! ```
//!
//! Entry `i` (from 0) has sequence number `first_seq + i`. The payload must be consumed
//! exactly: trailing bytes are corruption.

use std::ops::Range;

use bytes::Bytes;
use lsm::{MAX_SEQNO, SeqNo, ValueKind};

/// Bytes before the entries: `first_seq` (8) and `count` (4).
pub const BATCH_HEADER_LEN: usize = 12;

/// The smallest encoded entry: kind, empty key, empty value.
const MIN_ENTRY_LEN: usize = 3;

/// One decoded WAL entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WalEntry {
    pub seq: SeqNo,
    pub kind: ValueKind,
    pub key: Bytes,
    /// Empty for a [`ValueKind::Delete`].
    pub value: Bytes,
}

/// An ordered group of puts and deletes, appended atomically with consecutive sequence
/// numbers.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// The encoded entries (without the 12-byte batch header).
    rep: Vec<u8>,
    count: u32,
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("count", &self.count)
            .field("bytes", &self.rep.len())
            .finish()
    }
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch with room for about `bytes` of encoded entries.
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            rep: Vec::with_capacity(bytes),
            count: 0,
        }
    }

    /// Adds a put of `key` → `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> &mut Self {
        self.push(ValueKind::Put, key.as_ref(), value.as_ref())
    }

    /// Adds a delete (tombstone) of `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> &mut Self {
        self.push(ValueKind::Delete, key.as_ref(), &[])
    }

    fn push(&mut self, kind: ValueKind, key: &[u8], value: &[u8]) -> &mut Self {
        self.rep.push(kind as u8);
        put_varint(&mut self.rep, key.len() as u64);
        self.rep.extend_from_slice(key);
        put_varint(&mut self.rep, value.len() as u64);
        self.rep.extend_from_slice(value);
        self.count = self.count.saturating_add(1);
        self
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the record payload this batch encodes to.
    pub fn payload_len(&self) -> usize {
        BATCH_HEADER_LEN + self.rep.len()
    }

    /// Removes every entry, keeping the allocation.
    pub fn clear(&mut self) {
        self.rep.clear();
        self.count = 0;
    }

    /// The entries as `(kind, key, value)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (ValueKind, &[u8], &[u8])> + '_ {
        let mut pos = 0;
        std::iter::from_fn(move || {
            let raw = decode_entry(&self.rep, pos).ok()?;
            pos = raw.end;
            Some((raw.kind, &self.rep[raw.key], &self.rep[raw.value]))
        })
    }

    /// The batch's entries with sequence numbers assigned from `first_seq`.
    pub fn to_entries(&self, first_seq: SeqNo) -> Vec<WalEntry> {
        self.iter()
            .zip(first_seq..)
            .map(|((kind, key, value), seq)| WalEntry {
                seq,
                kind,
                key: Bytes::copy_from_slice(key),
                value: Bytes::copy_from_slice(value),
            })
            .collect()
    }
}

/// Appends the record payload of `batch` with sequence numbers from `first_seq` to `out`.
pub fn encode_batch(first_seq: SeqNo, batch: &WriteBatch, out: &mut Vec<u8>) {
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&batch.count.to_le_bytes());
    out.extend_from_slice(&batch.rep);
}

/// Why a payload does not decode (the caller adds segment and offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch payload of {0} bytes is shorter than its 12-byte header")]
    TooShort(usize),
    #[error("batch has no entries")]
    Empty,
    #[error("batch declares {count} entries but its payload holds at most {max}")]
    CountTooLarge { count: u32, max: usize },
    #[error("batch first sequence number is 0")]
    ZeroSeq,
    #[error("batch sequence numbers {first_seq}+{count} exceed the largest sequence number")]
    SeqOverflow { first_seq: SeqNo, count: u32 },
    #[error("entry {index}: {what}")]
    Entry { index: u32, what: EntryError },
    #[error("{0} trailing bytes after the last entry")]
    TrailingBytes(usize),
}

/// A malformed entry inside a batch payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("truncated")]
    Truncated,
    #[error("unknown value kind {0}")]
    UnknownKind(u8),
    #[error("malformed varint length")]
    BadVarint,
    #[error("tombstone carries a {0}-byte value")]
    DeleteWithValue(usize),
}

/// Decodes a record payload into its first sequence number and entries. The entries'
/// keys and values are slices of `payload` (no copy).
pub fn decode_batch(payload: &Bytes) -> Result<(SeqNo, Vec<WalEntry>), BatchError> {
    if payload.len() < BATCH_HEADER_LEN {
        return Err(BatchError::TooShort(payload.len()));
    }
    let first_seq = u64::from_le_bytes(array_at(payload, 0));
    let count = u32::from_le_bytes(array_at(payload, 8));
    if count == 0 {
        return Err(BatchError::Empty);
    }
    let max = (payload.len() - BATCH_HEADER_LEN) / MIN_ENTRY_LEN;
    if count as usize > max {
        return Err(BatchError::CountTooLarge { count, max });
    }
    if first_seq == 0 {
        return Err(BatchError::ZeroSeq);
    }
    if first_seq > MAX_SEQNO - (u64::from(count) - 1) {
        return Err(BatchError::SeqOverflow { first_seq, count });
    }
    let mut entries = Vec::with_capacity(count as usize);
    let mut pos = BATCH_HEADER_LEN;
    for index in 0..count {
        let raw = decode_entry(payload, pos).map_err(|what| BatchError::Entry { index, what })?;
        entries.push(WalEntry {
            seq: first_seq + u64::from(index),
            kind: raw.kind,
            key: payload.slice(raw.key),
            value: payload.slice(raw.value),
        });
        pos = raw.end;
    }
    if pos != payload.len() {
        return Err(BatchError::TrailingBytes(payload.len() - pos));
    }
    Ok((first_seq, entries))
}

/// Where an encoded entry's parts lie in its buffer.
struct RawEntry {
    kind: ValueKind,
    key: Range<usize>,
    value: Range<usize>,
    /// Offset just after the entry.
    end: usize,
}

/// Decodes the entry at `pos`.
fn decode_entry(buf: &[u8], pos: usize) -> Result<RawEntry, EntryError> {
    let kind_byte = *buf.get(pos).ok_or(EntryError::Truncated)?;
    let kind = ValueKind::from_u8(kind_byte).map_err(|_| EntryError::UnknownKind(kind_byte))?;
    let (key_len, key_start) = get_varint32(buf, pos + 1)?;
    let key_end = key_start
        .checked_add(key_len)
        .ok_or(EntryError::Truncated)?;
    let (value_len, value_start) = get_varint32(buf, key_end)?;
    let value_end = value_start
        .checked_add(value_len)
        .filter(|end| *end <= buf.len())
        .ok_or(EntryError::Truncated)?;
    if kind == ValueKind::Delete && value_len != 0 {
        return Err(EntryError::DeleteWithValue(value_len));
    }
    Ok(RawEntry {
        kind,
        key: key_start..key_end,
        value: value_start..value_end,
        end: value_end,
    })
}

/// Appends `v` as unsigned LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint32 (at most 5 bytes, value < 2^32) at `pos`.
fn get_varint32(buf: &[u8], mut pos: usize) -> Result<(usize, usize), EntryError> {
    let mut v: u64 = 0;
    for i in 0..5 {
        let b = *buf.get(pos).ok_or(EntryError::Truncated)?;
        pos += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let v = u32::try_from(v).map_err(|_| EntryError::BadVarint)?;
            return Ok((v as usize, pos));
        }
    }
    Err(EntryError::BadVarint)
}

/// The `N` bytes at `pos`; the caller has checked the length.
pub(crate) fn array_at<const N: usize>(buf: &[u8], pos: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&buf[pos..pos + N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(first_seq: SeqNo, batch: &WriteBatch) -> Bytes {
        let mut out = Vec::new();
        encode_batch(first_seq, batch, &mut out);
        Bytes::from(out)
    }

    #[test]
    fn round_trip_with_deletes_and_empty_values() {
        let mut b = WriteBatch::new();
        b.put("a", "1")
            .delete("b")
            .put("", "")
            .put(vec![0u8; 300], vec![7u8; 20_000]);
        assert_eq!(b.len(), 4);
        let p = payload(10, &b);
        assert_eq!(p.len(), b.payload_len());
        let (first, entries) = decode_batch(&p).expect("decodes");
        assert_eq!(first, 10);
        assert_eq!(entries, b.to_entries(10));
        assert_eq!(entries[1].kind, ValueKind::Delete);
        assert_eq!(entries[3].seq, 13);
        assert_eq!(entries[3].key.len(), 300);
        assert_eq!(entries[3].value.len(), 20_000);
    }

    #[test]
    fn rejects_malformed_payloads() {
        let mut b = WriteBatch::new();
        b.put("k", "v");
        let good = payload(5, &b).to_vec();

        let decode = |bytes: Vec<u8>| decode_batch(&Bytes::from(bytes));
        assert_eq!(decode(good[..11].to_vec()), Err(BatchError::TooShort(11)));
        let mut empty = good.clone();
        empty[8..12].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(decode(empty), Err(BatchError::Empty));
        let mut many = good.clone();
        many[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(many),
            Err(BatchError::CountTooLarge { .. })
        ));
        let mut zero = good.clone();
        zero[..8].copy_from_slice(&0u64.to_le_bytes());
        assert_eq!(decode(zero), Err(BatchError::ZeroSeq));
        let mut overflow = good.clone();
        overflow[..8].copy_from_slice(&(MAX_SEQNO + 1).to_le_bytes());
        assert!(matches!(
            decode(overflow),
            Err(BatchError::SeqOverflow { .. })
        ));
        let mut kind = good.clone();
        kind[12] = 9;
        assert!(matches!(
            decode(kind),
            Err(BatchError::Entry {
                index: 0,
                what: EntryError::UnknownKind(9)
            })
        ));
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0, 0, 0]);
        assert_eq!(decode(trailing), Err(BatchError::TrailingBytes(3)));
        let mut tomb = good.clone();
        tomb[12] = ValueKind::Delete as u8;
        assert!(matches!(
            decode(tomb),
            Err(BatchError::Entry {
                what: EntryError::DeleteWithValue(1),
                ..
            })
        ));
        let mut varint = good[..12].to_vec();
        varint.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert!(matches!(
            decode(varint),
            Err(BatchError::Entry {
                what: EntryError::BadVarint,
                ..
            })
        ));
    }

    fn varint_len(mut v: u64) -> usize {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }
    #[test]
    fn varints_round_trip_at_boundaries() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::from(u32::MAX)] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            assert_eq!(get_varint32(&out, 0), Ok((v as usize, out.len())));
        }
    }
}
