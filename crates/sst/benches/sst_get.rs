//! Point lookups and scans on a 200k-entry SST (16-byte keys, 100-byte random values,
//! uncompressed, 4 KiB blocks, 10 bits/key bloom): present keys, absent keys (the bloom
//! filter answers), from memory (`Bytes`) and from a local file (pread, page cache warm).
//!
//! `cargo bench -p sst --bench sst_get -- --warm-up-time 1 --measurement-time 5`

mod common;

use bytes::Bytes;
use common::{Data, N, user_key};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lsm::key::pack_trailer;
use lsm::{InternalIterator, MAX_SEQNO, ValueKind};
use sst::{SstBuilder, SstOptions, SstReader};

fn build(data: &Data) -> Vec<u8> {
    let mut builder =
        SstBuilder::new("get.sst", Vec::new(), SstOptions::default()).expect("builder");
    let trailer = pack_trailer(1, ValueKind::Put).to_le_bytes();
    let mut key = Vec::new();
    for (i, uk) in data.keys.iter().enumerate() {
        key.clear();
        key.extend_from_slice(uk);
        key.extend_from_slice(&trailer);
        builder.add(&key, data.value(i)).expect("add");
    }
    builder.finish_into_inner().expect("finish").1
}

fn bench_get(c: &mut Criterion) {
    let data = Data::generate();
    let bytes = build(&data);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("get.sst");
    std::fs::write(&path, &bytes).expect("write");

    let memory = SstReader::open(Bytes::from(bytes), "get.sst").expect("open");
    let file = SstReader::open(std::fs::File::open(&path).expect("open"), "get.sst").expect("open");

    // Lookup orders: present keys in a scrambled order, absent keys from another seed.
    let present: Vec<[u8; 16]> = (0..N).map(|i| data.keys[(i * 7919) % N]).collect();
    let absent: Vec<[u8; 16]> = (0..N as u64).map(|i| user_key(i, 0xabad_1dea)).collect();

    let mut group = c.benchmark_group("sst_get");
    group.throughput(Throughput::Elements(1));
    for (source, reader) in [("memory", &memory), ("file", &file)] {
        let mut i = 0usize;
        group.bench_function(format!("{source}/present"), |b| {
            b.iter(|| {
                i = (i + 1) % N;
                let found = reader.get(&present[i], MAX_SEQNO).expect("get");
                assert!(found.is_some());
                found
            })
        });
        let before = reader.stats();
        let mut i = 0usize;
        group.bench_function(format!("{source}/absent"), |b| {
            b.iter(|| {
                i = (i + 1) % N;
                reader.get(&absent[i], MAX_SEQNO).expect("get")
            })
        });
        let after = reader.stats();
        let gets = after.gets - before.gets;
        let filtered = after.bloom_negatives - before.bloom_negatives;
        eprintln!(
            "sst_get {source}/absent: {filtered} of {gets} answered by the bloom filter ({:.2}% false positives)",
            100.0 * (gets - filtered) as f64 / gets.max(1) as f64
        );
    }
    group.finish();

    let mut group = c.benchmark_group("sst_scan");
    group.throughput(Throughput::Bytes(data.raw_bytes()));
    group.sample_size(10);
    group.bench_function("memory/full", |b| {
        b.iter(|| {
            let mut it = memory.iter();
            it.seek_to_first().expect("seek");
            let mut n = 0usize;
            while it.valid() {
                n += it.value().len();
                it.next().expect("next");
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench_get);
criterion_main!(benches);
