//! Helpers shared by the WAL integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use storage::Storage;
use storage::paths::{self, TableName};
use wal::{WalEntry, WriteBatch, encode_segment};

/// A batch of `n` puts (every third a delete) with keys derived from `tag`; its size depends
/// only on `n` (for `tag < 10^6`, `n < 10^4`).
pub fn batch(tag: u64, n: usize) -> WriteBatch {
    let mut b = WriteBatch::new();
    for i in 0..n {
        let key = format!("key-{tag:06}-{i:04}");
        if i % 3 == 2 {
            b.delete(key);
        } else {
            b.put(key, format!("value-{tag:06}-{i:04}"));
        }
    }
    b
}

/// Writes a segment of `batches` starting at `first_seq` directly (no writer), returns its
/// bytes and the entries it holds.
pub async fn put_segment(
    storage: &Storage,
    table: &str,
    first_seq: u64,
    batches: &[WriteBatch],
) -> (Bytes, Vec<WalEntry>) {
    let (bytes, _) = encode_segment(table, first_seq, batches);
    let bytes = Bytes::from(bytes);
    let path = paths::wal_segment(&TableName::new(table).expect("table"), first_seq);
    storage
        .put(&path, bytes.clone())
        .await
        .expect("put segment");
    (bytes, entries_of(first_seq, batches))
}

/// The entries `batches` get when written from `first_seq`.
pub fn entries_of(first_seq: u64, batches: &[WriteBatch]) -> Vec<WalEntry> {
    let mut out = Vec::new();
    let mut next = first_seq;
    for b in batches {
        out.extend(b.to_entries(next));
        next += b.len() as u64;
    }
    out
}

/// Sequence numbers of `entries`.
pub fn seqs(entries: &[WalEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}
