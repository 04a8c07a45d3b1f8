//! WAL throughput: encode + append (to memory and to a local directory, one append at a
//! time and 16 concurrent appends sharing group commits), pure encoding, and read/decode.
//! Batches are 100 entries of 16-byte keys and 100-byte values.
//!
//! `cargo bench -p wal -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::future::join_all;
use storage::Storage;
use storage::paths::{self, TableName};
use tokio::runtime::Runtime;
use wal::{
    RecoveryMode, WalReader, WalWriter, WalWriterConfig, WriteBatch, decode_segment, encode_segment,
};

const ENTRIES: usize = 100;
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;

fn make_batch(seed: u64) -> WriteBatch {
    let mut b = WriteBatch::with_capacity(ENTRIES * (KEY_LEN + VALUE_LEN + 3));
    for i in 0..ENTRIES as u64 {
        let key = format!("{:016x}", seed.wrapping_mul(1_000_003).wrapping_add(i));
        let value = [(seed + i) as u8; VALUE_LEN];
        b.put(&key.as_bytes()[..KEY_LEN], value);
    }
    b
}

/// Times `iters` rounds of `concurrency` appends, deleting the segments (untimed) every
/// few hundred rounds so the store does not grow without bound.
fn time_appends(rt: &Runtime, storage: &Storage, concurrency: usize, iters: u64) -> Duration {
    let batch = make_batch(1);
    rt.block_on(async {
        let writer = WalWriter::open(storage.clone(), "bench", WalWriterConfig::default())
            .await
            .expect("open writer");
        let wal_dir = paths::wal_dir(&TableName::new("bench").expect("table"));
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < iters {
            let n = (iters - done).min(200);
            let start = Instant::now();
            for _ in 0..n {
                if concurrency == 1 {
                    writer.append(batch.clone()).await.expect("append");
                } else {
                    for ack in
                        join_all((0..concurrency).map(|_| writer.append(batch.clone()))).await
                    {
                        ack.expect("append");
                    }
                }
            }
            total += start.elapsed();
            done += n;
            for meta in storage.list(&wal_dir).await.expect("list") {
                storage.delete(&meta.location).await.expect("delete");
            }
        }
        total
    })
}

fn append(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let batch_bytes = make_batch(1).payload_len() as u64;
    let mut g = c.benchmark_group("wal_append");
    for concurrency in [1usize, 16] {
        g.throughput(Throughput::Bytes(batch_bytes * concurrency as u64));
        g.bench_function(format!("memory/x{concurrency}"), |b| {
            b.iter_custom(|iters| time_appends(&rt, &Storage::in_memory(), concurrency, iters))
        });
        g.bench_function(format!("local_fs/x{concurrency}"), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("tempdir");
                let storage = Storage::local(dir.path()).expect("local storage");
                time_appends(&rt, &storage, concurrency, iters)
            })
        });
    }
    g.finish();
}

fn encode(c: &mut Criterion) {
    let batch = make_batch(2);
    let mut g = c.benchmark_group("wal_encode");
    g.throughput(Throughput::Bytes(batch.payload_len() as u64));
    g.bench_function("batch_build_and_encode", |b| {
        b.iter(|| {
            let batch = make_batch(black_box(2));
            black_box(encode_segment("bench", 1, [&batch]))
        })
    });
    g.bench_function("encode_only", |b| {
        b.iter(|| black_box(encode_segment("bench", 1, [black_box(&batch)])))
    });
    g.finish();
}

fn read(c: &mut Criterion) {
    let rt = Runtime::new().expect("runtime");
    let batches: Vec<WriteBatch> = (0..40).map(make_batch).collect();
    let (segment, _) = encode_segment("bench", 1, &batches);
    let segment = Bytes::from(segment);
    let mut g = c.benchmark_group("wal_read");
    g.throughput(Throughput::Bytes(segment.len() as u64));
    g.bench_function("decode_segment", |b| {
        b.iter(|| {
            let decoded = decode_segment(&segment, RecoveryMode::AbsoluteConsistency, "s", true)
                .expect("decode");
            black_box(decoded.entries.len())
        })
    });

    // A log of 64 segments in memory, read through the reader in chunks of 1000.
    let storage = Storage::in_memory();
    let table = TableName::new("bench").expect("table");
    let mut total = 0u64;
    rt.block_on(async {
        let mut seq = 1;
        for _ in 0..64 {
            let (bytes, last) = encode_segment("bench", seq, &batches[..4]);
            total += bytes.len() as u64;
            storage
                .put(&paths::wal_segment(&table, seq), Bytes::from(bytes))
                .await
                .expect("put");
            seq = last + 1;
        }
    });
    g.throughput(Throughput::Bytes(total));
    g.bench_function("reader_64_segments_memory", |b| {
        b.iter(|| {
            rt.block_on(async {
                let reader = WalReader::open(&storage, "bench").await.expect("open");
                let mut chunks = reader.read_from(0, 1000, RecoveryMode::default());
                let mut n = 0;
                while let Some(chunk) = chunks.next_chunk().await.expect("chunk") {
                    n += chunk.len();
                }
                black_box(n)
            })
        })
    });
    g.finish();
}

criterion_group!(benches, append, encode, read);
criterion_main!(benches);
