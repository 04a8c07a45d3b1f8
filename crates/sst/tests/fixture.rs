//! Format v1 fixtures: files written once by this code and checked in under
//! `tests/fixtures/v1/`. They must keep reading exactly as below for as long as v1 is
//! supported: a change that breaks old files fails here.
//!
//! To (re)create a missing fixture: `SST_WRITE_FIXTURES=1 cargo test -p sst --test fixture`.
//! Never overwrite an existing one to make this test pass.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::{Entry, ikey, read_all};
use lsm::{MAX_SEQNO, ValueKind};
use sst::{Compression, SstBuilder, SstOptions, SstReader};

/// The fixture contents: 100 entries over 65 user keys, 20 tombstones, up to 3 versions.
fn fixture_entries() -> Vec<Entry> {
    let mut out = Vec::new();
    for i in 0u64..65 {
        let versions = if i < 60 {
            1 + u64::from(i % 3 == 0) + u64::from(i % 4 == 0)
        } else {
            1
        };
        for v in 0..versions {
            // Newest first: higher sequence numbers sort first.
            let seq = 10_000 + i * 10 + (versions - v);
            let kind = if (i * 7 + v) % 5 == 0 {
                ValueKind::Delete
            } else {
                ValueKind::Put
            };
            let value = match kind {
                ValueKind::Delete => Vec::new(),
                ValueKind::Put => format!("value-{i:03}-v{v}|")
                    .repeat(1 + (i as usize % 4))
                    .into_bytes(),
            };
            out.push((ikey(format!("key-{i:03}").as_bytes(), seq, kind), value));
        }
    }
    out
}

struct Fixture {
    name: &'static str,
    options: SstOptions,
    file_size: u64,
    data_blocks: u64,
}

fn fixtures() -> [Fixture; 3] {
    [
        Fixture {
            name: "uncompressed.sst",
            options: SstOptions {
                block_size: 512,
                restart_interval: 4,
                bloom_bits_per_key: 10,
                compression: Compression::None,
            },
            file_size: 8_895,
            data_blocks: 8,
        },
        Fixture {
            name: "lz4.sst",
            options: SstOptions {
                block_size: 1024,
                restart_interval: 16,
                bloom_bits_per_key: 10,
                compression: Compression::Lz4,
            },
            file_size: 2_620,
            data_blocks: 4,
        },
        Fixture {
            name: "zstd.sst",
            options: SstOptions {
                block_size: 4096,
                restart_interval: 16,
                bloom_bits_per_key: 0,
                compression: Compression::Zstd(3),
            },
            file_size: 1_615,
            data_blocks: 1,
        },
    ]
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn write_fixture(f: &Fixture) {
    let path = fixture_dir().join(f.name);
    let mut builder = SstBuilder::new(f.name, Vec::new(), f.options.clone()).expect("builder");
    builder.set_creation_time_ms(1_767_225_600_000); // 2026-01-01T00:00:00Z
    for (k, v) in fixture_entries() {
        builder.add(&k, &v).expect("add");
    }
    let (info, bytes) = builder.finish_into_inner().expect("finish");
    std::fs::create_dir_all(fixture_dir()).expect("mkdir");
    std::fs::write(&path, bytes).expect("write fixture");
    eprintln!(
        "wrote {} ({} bytes, {} data blocks)",
        path.display(),
        info.file_size,
        info.properties.data_block_count
    );
}

#[test]
fn v1_fixtures_read_exactly() {
    let expected = fixture_entries();
    assert_eq!(expected.len(), 100);
    let tombstones = expected
        .iter()
        .filter(|(k, _)| lsm::ParsedInternalKey::parse(k).map(|p| p.kind) == Ok(ValueKind::Delete))
        .count();
    assert_eq!(tombstones, 20);

    if std::env::var_os("SST_WRITE_FIXTURES").is_some() {
        for f in fixtures() {
            if !fixture_dir().join(f.name).exists() {
                write_fixture(&f);
            }
        }
    }
    for f in fixtures() {
        let path = fixture_dir().join(f.name);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()));
        assert_eq!(bytes.len() as u64, f.file_size, "{}", f.name);
        let reader = SstReader::open(Bytes::from(bytes), f.name).expect("fixture opens");

        assert_eq!(read_all(&reader).expect("iterate"), expected, "{}", f.name);

        let p = reader.properties();
        assert_eq!(p.entry_count, 100);
        assert_eq!(p.tombstone_count, 20);
        assert_eq!(p.user_key_count, 65);
        assert_eq!(p.data_block_count, f.data_blocks, "{}", f.name);
        assert_eq!(p.min_seq, 10_001);
        assert_eq!(p.max_seq, 10_641);
        assert_eq!(p.smallest_user_key(), b"key-000");
        assert_eq!(p.largest_user_key(), b"key-064");
        assert_eq!(p.compression, f.options.compression);
        assert_eq!(p.block_size, f.options.block_size as u64);
        assert_eq!(p.restart_interval, f.options.restart_interval as u64);
        assert_eq!(
            p.bloom_bits_per_key,
            u64::from(f.options.bloom_bits_per_key)
        );
        assert_eq!(p.created_by, "data-processor sst 0.1.0");
        assert_eq!(p.creation_time_ms, 1_767_225_600_000);
        assert_eq!(p.raw_key_bytes, 100 * 15);
        let estimate = p.key_sketch.estimate();
        assert!((estimate - 65.0).abs() < 3.0, "sketch estimate {estimate}");

        // Point lookups, snapshots and tombstones.
        let got = reader
            .get(b"key-000", MAX_SEQNO)
            .expect("get")
            .expect("present");
        assert_eq!((got.kind, got.seq), (ValueKind::Delete, 10_003));
        let got = reader
            .get(b"key-000", 10_002)
            .expect("get")
            .expect("older version");
        assert_eq!(
            (got.kind, got.seq, &got.value[..]),
            (ValueKind::Put, 10_002, &b"value-000-v1|"[..])
        );
        assert_eq!(reader.get(b"key-000", 10_000).expect("get"), None);
        let got = reader
            .get(b"key-063", MAX_SEQNO)
            .expect("get")
            .expect("present");
        assert_eq!(&got.value[..], "value-063-v0|".repeat(4).as_bytes());
        assert_eq!(reader.get(b"key-065", MAX_SEQNO).expect("get"), None);
        assert_eq!(reader.get(b"key", MAX_SEQNO).expect("get"), None);
    }
}
