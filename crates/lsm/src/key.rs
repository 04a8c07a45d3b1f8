//! Internal keys: `(user key ascending, sequence number descending, kind)`.
//!
//! Encoding (as RocksDB's): the user key bytes followed by an 8-byte little-endian trailer
//! `(seq << 8) | kind`. Encoded keys are ordered by [`compare_internal_keys`], never by plain
//! byte comparison (a user key that is a prefix of another would sort wrongly).
//!
//! A lookup of `user_key` as of sequence number `s` seeks to `(user_key, s, Put)`: the first
//! entry at or after it is the newest version of that key with `seq <= s`, because `Put`
//! is the largest kind and larger trailers sort first.

use std::cmp::Ordering;

use bytes::Bytes;

/// A sequence number. Each table's writes carry strictly increasing sequence numbers.
pub type SeqNo = u64;

/// The largest sequence number an internal key can carry (56 bits).
pub const MAX_SEQNO: SeqNo = (1 << 56) - 1;

/// Length of the trailer appended to the user key.
pub const TRAILER_LEN: usize = 8;

/// What an entry says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ValueKind {
    /// A tombstone: the key is deleted as of this sequence number.
    Delete = 0,
    /// A value.
    Put = 1,
}

impl ValueKind {
    /// Decodes a kind byte.
    pub fn from_u8(b: u8) -> Result<Self, KeyError> {
        match b {
            0 => Ok(Self::Delete),
            1 => Ok(Self::Put),
            other => Err(KeyError::UnknownKind(other)),
        }
    }
}

/// A malformed encoded internal key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("internal key of {0} bytes is shorter than its 8-byte trailer")]
    TooShort(usize),
    #[error("unknown value kind {0} in internal key trailer")]
    UnknownKind(u8),
}

/// A borrowed, decoded internal key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedInternalKey<'a> {
    pub user_key: &'a [u8],
    pub seq: SeqNo,
    pub kind: ValueKind,
}

impl<'a> ParsedInternalKey<'a> {
    /// Decodes an encoded internal key.
    pub fn parse(encoded: &'a [u8]) -> Result<Self, KeyError> {
        let split = encoded
            .len()
            .checked_sub(TRAILER_LEN)
            .ok_or(KeyError::TooShort(encoded.len()))?;
        let (user_key, trailer) = encoded.split_at(split);
        let mut t = [0u8; TRAILER_LEN];
        t.copy_from_slice(trailer);
        let packed = u64::from_le_bytes(t);
        Ok(Self {
            user_key,
            seq: packed >> 8,
            kind: ValueKind::from_u8((packed & 0xff) as u8)?,
        })
    }

    /// Appends the encoding of this key to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        encode_internal_key(self.user_key, self.seq, self.kind, out);
    }
}

/// An owned internal key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InternalKey {
    pub user_key: Bytes,
    pub seq: SeqNo,
    pub kind: ValueKind,
}

impl InternalKey {
    pub fn new(user_key: impl Into<Bytes>, seq: SeqNo, kind: ValueKind) -> Self {
        Self {
            user_key: user_key.into(),
            seq,
            kind,
        }
    }

    /// The encoded form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.user_key.len() + TRAILER_LEN);
        encode_internal_key(&self.user_key, self.seq, self.kind, &mut out);
        out
    }

    pub fn as_parsed(&self) -> ParsedInternalKey<'_> {
        ParsedInternalKey {
            user_key: &self.user_key,
            seq: self.seq,
            kind: self.kind,
        }
    }
}

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.user_key
            .cmp(&other.user_key)
            .then_with(|| other.seq.cmp(&self.seq))
            .then_with(|| (other.kind as u8).cmp(&(self.kind as u8)))
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Packs sequence number and kind into the trailer value.
#[inline]
pub fn pack_trailer(seq: SeqNo, kind: ValueKind) -> u64 {
    debug_assert!(seq <= MAX_SEQNO, "sequence number {seq} exceeds 56 bits");
    (seq << 8) | kind as u64
}

/// Appends the encoding of `(user_key, seq, kind)` to `out`.
#[inline]
pub fn encode_internal_key(user_key: &[u8], seq: SeqNo, kind: ValueKind, out: &mut Vec<u8>) {
    out.extend_from_slice(user_key);
    out.extend_from_slice(&pack_trailer(seq, kind).to_le_bytes());
}

/// The user-key part of an encoded internal key (the whole slice if it is too short).
#[inline]
pub fn user_key(encoded: &[u8]) -> &[u8] {
    &encoded[..encoded.len().saturating_sub(TRAILER_LEN)]
}

/// The trailer of an encoded internal key (0 if it is too short).
#[inline]
fn trailer(encoded: &[u8]) -> u64 {
    match encoded.len().checked_sub(TRAILER_LEN) {
        Some(split) => {
            let mut t = [0u8; TRAILER_LEN];
            t.copy_from_slice(&encoded[split..]);
            u64::from_le_bytes(t)
        }
        None => 0,
    }
}

/// Orders encoded internal keys: user key ascending, then trailer (sequence number, kind)
/// descending. Never panics, even on malformed keys.
#[inline]
pub fn compare_internal_keys(a: &[u8], b: &[u8]) -> Ordering {
    user_key(a)
        .cmp(user_key(b))
        .then_with(|| trailer(b).cmp(&trailer(a)))
}

/// The encoded key to seek to for the newest version of `user_key` visible at `snapshot`.
pub fn lookup_key(user_key: &[u8], snapshot: SeqNo) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    encode_internal_key(user_key, snapshot.min(MAX_SEQNO), ValueKind::Put, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn newer_versions_sort_first() {
        let old = InternalKey::new(&b"k"[..], 5, ValueKind::Put).encode();
        let new = InternalKey::new(&b"k"[..], 9, ValueKind::Delete).encode();
        assert_eq!(compare_internal_keys(&new, &old), Ordering::Less);
        let lk = lookup_key(b"k", 7);
        assert_eq!(compare_internal_keys(&lk, &old), Ordering::Less);
        assert_eq!(compare_internal_keys(&lk, &new), Ordering::Greater);
    }

    #[test]
    fn prefix_user_keys_order_by_user_key() {
        let a = InternalKey::new(&b"a"[..], 1, ValueKind::Put).encode();
        let a0 = InternalKey::new(&b"a\x00"[..], 100, ValueKind::Put).encode();
        assert_eq!(compare_internal_keys(&a, &a0), Ordering::Less);
    }

    #[test]
    fn parse_rejects_short_and_unknown_kind() {
        assert_eq!(ParsedInternalKey::parse(b"abc"), Err(KeyError::TooShort(3)));
        let mut k = b"k".to_vec();
        k.extend_from_slice(&((5u64 << 8) | 7).to_le_bytes());
        assert_eq!(ParsedInternalKey::parse(&k), Err(KeyError::UnknownKind(7)));
    }

    proptest! {
        #[test]
        fn encoding_round_trips_and_orders_like_owned_keys(
            a in (proptest::collection::vec(any::<u8>(), 0..8), 0..MAX_SEQNO, any::<bool>()),
            b in (proptest::collection::vec(any::<u8>(), 0..8), 0..MAX_SEQNO, any::<bool>()),
        ) {
            let kind = |d: bool| if d { ValueKind::Delete } else { ValueKind::Put };
            let ka = InternalKey::new(a.0.clone(), a.1, kind(a.2));
            let kb = InternalKey::new(b.0.clone(), b.1, kind(b.2));
            let (ea, eb) = (ka.encode(), kb.encode());
            let pa = ParsedInternalKey::parse(&ea).expect("valid key");
            prop_assert_eq!(pa, ka.as_parsed());
            prop_assert_eq!(compare_internal_keys(&ea, &eb), ka.cmp(&kb));
        }
    }
}
