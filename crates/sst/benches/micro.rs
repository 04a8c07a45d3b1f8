//! The SST format's hot inner loops in isolation, so a regression shows without the noise
//! of a whole build or read: data block encode (prefix compression, restarts) and decode
//! (a full scan and point seeks), and the bloom filter (build, probe). Memtable insert and
//! the merging iterator are in `crates/lsm/benches/lsm.rs`.
//!
//! Entries as in the dp-bench workloads: 16-byte user keys (a 24-byte internal key) and
//! 100-byte values, 4 KiB blocks, restart interval 16, 10 bits/key bloom.
//!
//! `cargo bench -p sst --bench micro -- --warm-up-time 1 --measurement-time 3`

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lsm::ValueKind;
use lsm::key::encode_internal_key;
use sst::block::{Block, BlockBuilder};
use sst::bloom::{BloomFilter, build_filter, key_hash};

const BLOCK_SIZE: usize = 4096;
const VALUE: [u8; 100] = [0x5a; 100];

/// Sorted internal keys: `n` 16-byte user keys, one version each.
fn internal_keys(n: u64) -> Vec<Vec<u8>> {
    let mut users: Vec<[u8; 16]> = (0..n)
        .map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()).to_be_bytes())
        .collect();
    users.sort_unstable();
    users
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let mut k = Vec::with_capacity(24);
            encode_internal_key(u, i as u64 + 1, ValueKind::Put, &mut k);
            k
        })
        .collect()
}

/// The entries that fill one 4 KiB block, and the encoded block.
fn one_block(keys: &[Vec<u8>]) -> (usize, Bytes) {
    let mut b = BlockBuilder::new(16, BLOCK_SIZE + 256);
    let mut n = 0;
    for k in keys {
        if b.estimated_size() >= BLOCK_SIZE {
            break;
        }
        b.add(k, &VALUE).expect("entry fits");
        n += 1;
    }
    (n, Bytes::copy_from_slice(b.finish()))
}

fn bench_block(c: &mut Criterion) {
    let keys = internal_keys(10_000);
    let (n, encoded) = one_block(&keys);
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode_4k", |b| {
        let mut builder = BlockBuilder::new(16, BLOCK_SIZE + 256);
        b.iter(|| {
            builder.reset();
            for k in &keys[..n] {
                builder.add(k, &VALUE).expect("entry fits");
            }
            std::hint::black_box(builder.finish().len())
        })
    });
    g.bench_function("decode_scan_4k", |b| {
        b.iter(|| {
            let mut it = Block::new(encoded.clone()).expect("valid block").iter();
            it.seek_to_first().expect("seek");
            let mut bytes = 0;
            while it.valid() {
                bytes += it.key().len() + it.value().len();
                it.next().expect("next");
            }
            std::hint::black_box(bytes)
        })
    });
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("seek_every_key_4k", |b| {
        let block = Block::new(encoded.clone()).expect("valid block");
        b.iter_batched(
            || block.clone(),
            |block| {
                let mut it = block.iter();
                for k in &keys[..n] {
                    it.seek(k).expect("seek");
                    std::hint::black_box(it.valid());
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_bloom(c: &mut Criterion) {
    const N: u64 = 100_000;
    let keys: Vec<[u8; 16]> = (0..N)
        .map(|i| xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()).to_be_bytes())
        .collect();
    let hashes: Vec<u64> = keys.iter().map(|k| key_hash(k)).collect();
    let mut g = c.benchmark_group("bloom");
    g.throughput(Throughput::Elements(N));
    g.bench_function("hash_100k_keys", |b| {
        b.iter(|| {
            keys.iter()
                .map(|k| key_hash(k))
                .fold(0u64, u64::wrapping_add)
        })
    });
    g.bench_function("build_100k_10bits", |b| {
        b.iter(|| std::hint::black_box(build_filter(&hashes, 10).len()))
    });
    let filter = BloomFilter::new(Bytes::from(build_filter(&hashes, 10))).expect("filter");
    g.bench_function("probe_100k_present", |b| {
        b.iter(|| {
            hashes
                .iter()
                .filter(|h| filter.may_contain_hash(**h))
                .count()
        })
    });
    let absent: Vec<u64> = (N..2 * N)
        .map(|i| key_hash(&xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()).to_be_bytes()))
        .collect();
    g.bench_function("probe_100k_absent", |b| {
        b.iter(|| {
            absent
                .iter()
                .filter(|h| filter.may_contain_hash(**h))
                .count()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_block, bench_bloom);
criterion_main!(benches);
