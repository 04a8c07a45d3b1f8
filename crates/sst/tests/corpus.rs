//! Replays the fuzz corpus (`fuzz/corpus/sst_reader/`) through open, iteration and lookups:
//! every input the fuzzer ever saved must keep not panicking, without running the fuzzer.
//!
//! To (re)seed the corpus with small valid and damaged files:
//! `SST_WRITE_CORPUS=1 cargo test -p sst --test corpus`.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::{Entry, build, exercise, ikey};
use lsm::ValueKind;
use sst::{Compression, SstOptions};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/sst_reader")
}

fn seed_entries(n: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let kind = if i % 4 == 3 {
                ValueKind::Delete
            } else {
                ValueKind::Put
            };
            let value = if kind == ValueKind::Put {
                format!("val{i}").into_bytes()
            } else {
                Vec::new()
            };
            (
                ikey(format!("key{:03}", i / 2).as_bytes(), 500 - i, kind),
                value,
            )
        })
        .collect()
}

fn write_seeds(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let small = SstOptions {
        block_size: 64,
        restart_interval: 2,
        ..SstOptions::default()
    };
    let seeds: Vec<(&str, Bytes)> = vec![
        ("valid-none", build(&seed_entries(12), small.clone()).0),
        (
            "valid-lz4",
            build(
                &seed_entries(40),
                SstOptions {
                    compression: Compression::Lz4,
                    ..small.clone()
                },
            )
            .0,
        ),
        (
            "valid-zstd",
            build(
                &seed_entries(40),
                SstOptions {
                    compression: Compression::Zstd(1),
                    ..small.clone()
                },
            )
            .0,
        ),
        (
            "valid-nofilter-lz4",
            build(
                &seed_entries(8),
                SstOptions {
                    bloom_bits_per_key: 0,
                    compression: Compression::Lz4,
                    ..small.clone()
                },
            )
            .0,
        ),
        (
            "empty-lz4",
            build(
                &[],
                SstOptions {
                    compression: Compression::Lz4,
                    ..small.clone()
                },
            )
            .0,
        ),
    ];
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(format!("{name}.sst")), bytes).expect("write seed");
    }
    // Damaged variants of the lz4 file: a flipped bit in the first data block, in the
    // footer, and a truncation.
    let lz4 = &seeds[1].1;
    let mut flipped = lz4.to_vec();
    flipped[3] ^= 0x10;
    std::fs::write(dir.join("damaged-data-bit.sst"), flipped).expect("write seed");
    let mut footer = lz4.to_vec();
    let n = footer.len();
    footer[n - 20] ^= 0x01;
    std::fs::write(dir.join("damaged-footer-bit.sst"), footer).expect("write seed");
    std::fs::write(dir.join("truncated.sst"), &lz4[..lz4.len() - 7]).expect("write seed");
}

#[test]
fn corpus_replays_without_panics() {
    let dir = corpus_dir();
    if std::env::var_os("SST_WRITE_CORPUS").is_some() {
        write_seeds(&dir);
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus too small: {}", files.len());
    let mut opened = 0;
    for path in &files {
        let bytes = std::fs::read(path).expect("read corpus file");
        if exercise(Bytes::from(bytes)).is_some() {
            opened += 1;
        }
    }
    eprintln!("replayed {} corpus files, {opened} opened", files.len());
    // The seeds include valid files: the replay must actually exercise the reader.
    assert!(opened >= 1);
}
