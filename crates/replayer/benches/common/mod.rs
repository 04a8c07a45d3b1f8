//! Benchmark data shared by the replayer benches: `N` puts with 16-byte keys `key-{:012}`
//! in a shuffled order (fixed seed, every key distinct) and incompressible 100-byte values,
//! appended to a table's WAL in batches of `BATCH` puts.

#![allow(dead_code, reason = "each bench binary uses a part of it")]

use std::path::Path;

use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use storage::Storage;
use wal::{WalReader, WalWriter, WalWriterConfig, WriteBatch};

/// Puts in the WAL: about 64 MiB of log (119 encoded bytes per put).
pub const N: usize = 564_000;
pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;
/// Puts per WAL append (and per RocksDB `WriteBatch`).
pub const BATCH: usize = 100;
pub const TABLE: &str = "t";
pub const MIB: u64 = 1024 * 1024;

pub struct Data {
    /// User keys in write order.
    pub keys: Vec<[u8; KEY_LEN]>,
    /// `N * VALUE_LEN` random bytes; value `i` is `values[i * VALUE_LEN..][..VALUE_LEN]`.
    pub values: Vec<u8>,
}

impl Data {
    pub fn generate() -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut order: Vec<usize> = (0..N).collect();
        order.shuffle(&mut rng);
        let keys = order
            .into_iter()
            .map(|i| {
                let mut k = [0u8; KEY_LEN];
                k.copy_from_slice(format!("key-{i:012}").as_bytes());
                k
            })
            .collect();
        let mut values = vec![0u8; N * VALUE_LEN];
        rng.fill_bytes(&mut values);
        Self { keys, values }
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * VALUE_LEN..(i + 1) * VALUE_LEN]
    }

    /// User bytes (keys plus values) of the first `n` puts.
    pub fn raw_bytes(n: usize) -> u64 {
        (n * (KEY_LEN + VALUE_LEN)) as u64
    }

    /// The puts `[first, first + BATCH)` as a WAL batch.
    pub fn wal_batch(&self, first: usize) -> WriteBatch {
        let mut b = WriteBatch::with_capacity(BATCH * (KEY_LEN + VALUE_LEN + 3));
        for i in first..(first + BATCH).min(N) {
            b.put(self.keys[i], self.value(i));
        }
        b
    }
}

/// Appends every put to `TABLE`'s WAL under `root` with the production writer and returns
/// the log's size (sum of its segments).
///
/// Appends are submitted up to 1000 at a time, as concurrent clients would: the writer's
/// group commit then fills 4 MiB segments. One append at a time would make every 100-put
/// batch a segment of its own (about 12 KiB), which is not what a loaded WAL looks like.
pub async fn write_wal(data: &Data, root: &Path) -> u64 {
    let storage = Storage::local(root).expect("local storage");
    let writer = WalWriter::open(storage.clone(), TABLE, WalWriterConfig::default())
        .await
        .expect("wal writer");
    let starts: Vec<usize> = (0..N).step_by(BATCH).collect();
    for group in starts.chunks(1000) {
        let appends = group
            .iter()
            .map(|&first| writer.append(data.wal_batch(first)));
        for r in futures::future::join_all(appends).await {
            r.expect("append");
        }
    }
    drop(writer);
    wal_bytes(&storage).await
}

/// Sum of the sizes of `TABLE`'s WAL segments.
pub async fn wal_bytes(storage: &Storage) -> u64 {
    let reader = WalReader::open(storage, TABLE).await.expect("wal reader");
    reader.segments().iter().map(|s| s.size).sum()
}

/// Number of `TABLE`'s WAL segments.
pub async fn wal_segments(storage: &Storage) -> usize {
    let reader = WalReader::open(storage, TABLE).await.expect("wal reader");
    reader.segments().len()
}
