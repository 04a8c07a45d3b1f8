//! Fixture builders shared by this crate's unit tests, its integration tests (the model
//! tests, the service test) and benchmarks: SSTs from plain `(key, seq, value)` triples and
//! back.
//!
//! Not behind `cfg(test)`, so that `tests/` and benches can use them (like
//! `lsm::testing`); small, and they pull in nothing.

use bytes::Bytes;
use lsm::key::{compare_internal_keys, encode_internal_key};
use lsm::manifest::FileMeta;
use lsm::{BoxError, InternalIterator, ParsedInternalKey, SeqNo, ValueKind};
use sst::{SstBuilder, SstError, SstOptions, SstReader};

/// One version of a key: `(user key, seq, value or None for a tombstone)`.
pub type Entry = (Vec<u8>, SeqNo, Option<Vec<u8>>);

/// A version from string slices.
pub fn entry(key: &str, seq: SeqNo, value: Option<&str>) -> Entry {
    (
        key.as_bytes().to_vec(),
        seq,
        value.map(|v| v.as_bytes().to_vec()),
    )
}

/// An SST of `entries` (any order; sorted here) with id `file_id`: its metadata as the
/// manifest records it, and its bytes.
pub fn build_sst(
    file_id: u64,
    mut entries: Vec<Entry>,
    options: SstOptions,
) -> Result<(FileMeta, Bytes), SstError> {
    let encoded = |e: &Entry| {
        let kind = if e.2.is_some() {
            ValueKind::Put
        } else {
            ValueKind::Delete
        };
        let mut key = Vec::with_capacity(e.0.len() + 8);
        encode_internal_key(&e.0, e.1, kind, &mut key);
        key
    };
    entries.sort_by(|a, b| compare_internal_keys(&encoded(a), &encoded(b)));
    let mut builder = SstBuilder::new(format!("fixture-{file_id}.sst"), Vec::new(), options)?;
    for e in &entries {
        builder.add(&encoded(e), e.2.as_deref().unwrap_or_default())?;
    }
    let (info, bytes) = builder.finish_into_inner()?;
    let meta = FileMeta {
        id: file_id,
        size: bytes.len() as u64,
        smallest: info.smallest_user_key,
        largest: info.largest_user_key,
        smallest_seq: info.min_seq,
        largest_seq: info.max_seq,
        entries: info.entry_count,
        tombstones: info.tombstone_count,
    };
    Ok((meta, Bytes::from(bytes)))
}

/// Every entry of `iter` from its first, in order.
pub fn collect(iter: &mut dyn InternalIterator) -> Result<Vec<Entry>, BoxError> {
    iter.seek_to_first()?;
    let mut out = Vec::new();
    while iter.valid() {
        let k = ParsedInternalKey::parse(iter.key())?;
        let value = (k.kind == ValueKind::Put).then(|| iter.value().to_vec());
        out.push((k.user_key.to_vec(), k.seq, value));
        iter.next()?;
    }
    Ok(out)
}

/// Every entry of an SST, in order.
pub fn read_sst(bytes: Bytes) -> Result<Vec<Entry>, BoxError> {
    let reader = SstReader::open(bytes, "read.sst")?;
    collect(&mut reader.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixture_reads_back_sorted_with_its_metadata() {
        let entries = vec![
            entry("b", 2, None),
            entry("a", 1, Some("x")),
            entry("b", 5, Some("y")),
        ];
        let (meta, bytes) = build_sst(7, entries, SstOptions::default()).expect("sst");
        assert_eq!(
            read_sst(bytes.clone()).expect("read"),
            [
                entry("a", 1, Some("x")),
                entry("b", 5, Some("y")),
                entry("b", 2, None)
            ]
        );
        assert_eq!((meta.id, meta.size), (7, bytes.len() as u64));
        assert_eq!(
            (&meta.smallest[..], &meta.largest[..]),
            (&b"a"[..], &b"b"[..])
        );
        assert_eq!((meta.smallest_seq, meta.largest_seq), (1, 5));
        assert_eq!((meta.entries, meta.tombstones), (3, 1));
    }
}
