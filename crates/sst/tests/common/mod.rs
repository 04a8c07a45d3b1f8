//! Helpers shared by the integration tests: building files from entry lists, reading them
//! back, and a "do everything, never panic" exercise used on damaged files.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use bytes::Bytes;
use lsm::key::compare_internal_keys;
use lsm::{BoxError, InternalIterator, InternalKey, ValueKind};
use sst::{SstBuilder, SstOptions, SstReader};

/// An entry: encoded internal key and value.
pub type Entry = (Vec<u8>, Vec<u8>);

pub fn ikey(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    InternalKey::new(user_key.to_vec(), seq, kind).encode()
}

/// Builds an SST in memory from entries already in internal-key order.
pub fn build(entries: &[Entry], options: SstOptions) -> (Bytes, sst::SstInfo) {
    let mut builder = SstBuilder::new("test.sst", Vec::new(), options).expect("valid options");
    for (k, v) in entries {
        builder.add(k, v).expect("sorted input");
    }
    let (info, bytes) = builder.finish_into_inner().expect("finish");
    assert_eq!(info.file_size, bytes.len() as u64);
    (Bytes::from(bytes), info)
}

/// Every entry from the first, or the first error.
pub fn read_all(reader: &SstReader) -> Result<Vec<Entry>, BoxError> {
    let mut it = reader.iter();
    it.seek_to_first()?;
    let mut out = Vec::new();
    while it.valid() {
        out.push((it.key().to_vec(), it.value().to_vec()));
        it.next()?;
    }
    Ok(out)
}

/// Sorts entries by internal-key order and drops duplicate keys.
pub fn sort_entries(mut entries: Vec<Entry>) -> Vec<Entry> {
    entries.sort_by(|a, b| compare_internal_keys(&a.0, &b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    entries
}

/// Opens `bytes`, iterates everything, seeks and gets, ignoring results: for damaged or
/// arbitrary input, where the only requirement is no panic (and no runaway loop).
/// Returns how many entries iteration produced before stopping, or None if open failed.
pub fn exercise(bytes: Bytes) -> Option<usize> {
    let reader = SstReader::open(bytes, "fuzz.sst").ok()?;
    let _ = reader.properties().key_sketch.estimate();
    let mut it = reader.iter();
    let mut n = 0usize;
    let mut keys = Vec::new();
    if it.seek_to_first().is_ok() {
        while it.valid() {
            n += 1;
            if keys.len() < 64 {
                keys.push(it.key().to_vec());
            }
            if it.next().is_err() || n > 10_000_000 {
                break;
            }
        }
    }
    for k in &keys {
        let uk = lsm::key::user_key(k);
        let _ = reader.may_contain(uk);
        let _ = reader.get(uk, lsm::MAX_SEQNO);
        let _ = reader.get(uk, 1);
        if it.seek(k).is_ok() && it.valid() {
            let _ = it.next();
        }
    }
    let _ = reader.get(b"absent", 5);
    let _ = it.seek(b"");
    Some(n)
}
