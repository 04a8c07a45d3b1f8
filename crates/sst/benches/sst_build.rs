//! Build throughput: 200k entries (16-byte keys, 100-byte random values), uncompressed,
//! 4 KiB blocks, 10 bits/key bloom, into a file in a temp dir, fsync'ed at the end.
//!
//! With `--features rocksdb-bench`, the same data is also written by RocksDB's
//! `SstFileWriter` with equivalent options (CRC32C block checksums, full bloom filter at 10
//! bits/key). RocksDB's `Finish` always fdatasyncs, so ours does too (`sync_data`).
//!
//! `cargo bench -p sst --bench sst_build [--features rocksdb-bench] -- --warm-up-time 1 --measurement-time 5`

mod common;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Data, N};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lsm::ValueKind;
use lsm::key::pack_trailer;
use sst::{Compression, SstBuilder, SstOptions};

fn build_ours(data: &Data, path: &Path) -> u64 {
    let file = File::create(path).expect("create");
    let options = SstOptions {
        block_size: 4096,
        restart_interval: 16,
        bloom_bits_per_key: 10,
        compression: Compression::None,
    };
    // RocksDB buffers its writes internally (1 MiB); give ours the same.
    let writer = BufWriter::with_capacity(1 << 20, file);
    let mut builder = SstBuilder::new("bench.sst", writer, options).expect("builder");
    let trailer = pack_trailer(1, ValueKind::Put).to_le_bytes();
    let mut key = Vec::with_capacity(32);
    for (i, uk) in data.keys.iter().enumerate() {
        // Encode the internal key here, as RocksDB does inside `put`.
        key.clear();
        key.extend_from_slice(uk);
        key.extend_from_slice(&trailer);
        builder.add(&key, data.value(i)).expect("add");
    }
    let (info, writer) = builder.finish_into_inner().expect("finish");
    let file = writer.into_inner().expect("flush");
    file.sync_data().expect("fdatasync");
    info.file_size
}

#[cfg(feature = "rocksdb-bench")]
fn build_rocksdb(data: &Data, path: &Path) -> u64 {
    use rocksdb::{BlockBasedOptions, ChecksumType, DBCompressionType, Options, SstFileWriter};
    let mut table = BlockBasedOptions::default();
    table.set_block_size(4096);
    table.set_bloom_filter(10.0, false);
    // RocksDB 10's default is XXH3: ask for CRC32C, as our format uses.
    table.set_checksum_type(ChecksumType::CRC32c);
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::None);
    options.set_block_based_table_factory(&table);
    let mut writer = SstFileWriter::create(&options);
    writer.open(path).expect("open");
    for (i, uk) in data.keys.iter().enumerate() {
        writer.put(uk, data.value(i)).expect("put");
    }
    writer.finish().expect("finish"); // fdatasyncs
    writer.file_size()
}

/// Times `build` over fresh files: deleting the previous output is not timed.
fn timed(iters: u64, path: &Path, mut build: impl FnMut(&Path) -> u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let _ = std::fs::remove_file(path);
        let start = Instant::now();
        std::hint::black_box(build(path));
        total += start.elapsed();
    }
    total
}

fn bench_build(c: &mut Criterion) {
    let data = Data::generate();
    let dir = tempfile::tempdir().expect("tempdir");
    let ours = dir.path().join("ours.sst");
    eprintln!(
        "sst_build: {N} entries, ours {} bytes",
        build_ours(&data, &ours)
    );
    #[cfg(feature = "rocksdb-bench")]
    let theirs = dir.path().join("rocksdb.sst");
    #[cfg(feature = "rocksdb-bench")]
    eprintln!("sst_build: rocksdb {} bytes", build_rocksdb(&data, &theirs));

    let mut group = c.benchmark_group("sst_build");
    group.throughput(Throughput::Bytes(data.raw_bytes()));
    group.sample_size(10);
    group.sampling_mode(criterion::SamplingMode::Flat);
    group.bench_function("ours", |b| {
        b.iter_custom(|iters| timed(iters, &ours, |p| build_ours(&data, p)))
    });
    #[cfg(feature = "rocksdb-bench")]
    group.bench_function("rocksdb", |b| {
        b.iter_custom(|iters| timed(iters, &theirs, |p| build_rocksdb(&data, p)))
    });
    group.finish();
}

criterion_group!(benches, bench_build);
criterion_main!(benches);
