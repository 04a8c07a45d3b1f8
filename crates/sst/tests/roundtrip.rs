//! Round trips against a model: whatever goes in comes out, in order, through iteration,
//! seeks and point lookups, for every compression and a range of block shapes.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{Entry, build, ikey, read_all};
use lsm::key::{compare_internal_keys, lookup_key};
use lsm::{InternalIterator, MAX_SEQNO, ValueKind};
use proptest::prelude::*;
use sst::{Compression, Found, SstOptions, SstReader};

/// Model: user key -> (seq -> (kind, value)).
type Model = BTreeMap<Vec<u8>, BTreeMap<u64, (ValueKind, Vec<u8>)>>;

fn entries_of(model: &Model) -> Vec<Entry> {
    let mut out = Vec::new();
    for (uk, versions) in model {
        for (&seq, (kind, value)) in versions.iter().rev() {
            out.push((ikey(uk, seq, *kind), value.clone()));
        }
    }
    out
}

fn model_get(model: &Model, uk: &[u8], snapshot: u64) -> Option<Found> {
    let (&seq, (kind, value)) = model.get(uk)?.range(..=snapshot).next_back()?;
    Some(Found {
        kind: *kind,
        value: Bytes::copy_from_slice(value),
        seq,
    })
}

fn model_strategy() -> impl Strategy<Value = Model> {
    // Small alphabets make shared prefixes, prefix-of-each-other keys and many versions.
    let user_key = proptest::collection::vec(
        prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)],
        0..6,
    );
    let version = (
        1u64..200,
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..48),
    );
    proptest::collection::vec((user_key, proptest::collection::vec(version, 1..4)), 0..120)
        .prop_map(|keys| {
            let mut model = Model::new();
            for (uk, versions) in keys {
                let slot = model.entry(uk).or_default();
                for (seq, delete, value) in versions {
                    let entry = if delete {
                        (ValueKind::Delete, Vec::new())
                    } else {
                        (ValueKind::Put, value)
                    };
                    slot.insert(seq, entry);
                }
            }
            model
        })
}

fn options_strategy() -> impl Strategy<Value = SstOptions> {
    (
        prop_oneof![Just(64usize), Just(200), Just(1024), Just(4096)],
        1usize..20,
        prop_oneof![Just(0u32), Just(10)],
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Lz4),
            Just(Compression::Zstd(1)),
            Just(Compression::Zstd(-5))
        ],
    )
        .prop_map(
            |(block_size, restart_interval, bloom_bits_per_key, compression)| SstOptions {
                block_size,
                restart_interval,
                bloom_bits_per_key,
                compression,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn iterate_seek_and_get_match_the_model(
        model in model_strategy(),
        options in options_strategy(),
        seeks in proptest::collection::vec((proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)], 0..6), 0u64..210), 20),
    ) {
        let entries = entries_of(&model);
        let (bytes, info) = build(&entries, options.clone());
        let reader = SstReader::open(bytes, "test.sst").expect("open");

        // Full iteration equals the input.
        prop_assert_eq!(read_all(&reader).expect("iterate"), entries.clone());

        // Properties.
        let p = reader.properties();
        prop_assert_eq!(p, &info.properties);
        prop_assert_eq!(p.entry_count, entries.len() as u64);
        let tombstones = model.values().flat_map(|v| v.values()).filter(|(k, _)| *k == ValueKind::Delete).count();
        prop_assert_eq!(p.tombstone_count, tombstones as u64);
        prop_assert_eq!(p.user_key_count, model.len() as u64);
        prop_assert_eq!(p.compression, options.compression);
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            prop_assert_eq!(&p.smallest_key[..], &first.0[..]);
            prop_assert_eq!(&p.largest_key[..], &last.0[..]);
            prop_assert_eq!(&info.smallest_user_key[..], lsm::key::user_key(&first.0));
            prop_assert_eq!(&info.largest_user_key[..], lsm::key::user_key(&last.0));
        }
        let seqs = model.values().flat_map(|v| v.keys().copied());
        prop_assert_eq!(info.min_seq, seqs.clone().min().unwrap_or(0));
        prop_assert_eq!(info.max_seq, seqs.max().unwrap_or(0));

        // Seeks land where the model says and continue in order.
        let mut it = reader.iter();
        for (uk, seq) in &seeks {
            let target = ikey(uk, *seq, ValueKind::Put);
            it.seek(&target).expect("seek");
            let expected: Vec<&Entry> = entries
                .iter()
                .filter(|(k, _)| compare_internal_keys(k, &target).is_ge())
                .take(5)
                .collect();
            for e in expected {
                prop_assert!(it.valid());
                prop_assert_eq!(it.key(), &e.0[..]);
                prop_assert_eq!(it.value(), &e.1[..]);
                it.next().expect("next");
            }
            if entries.iter().filter(|(k, _)| compare_internal_keys(k, &target).is_ge()).count() <= 5 {
                prop_assert!(!it.valid());
            }
        }

        // Point lookups: every present key at several snapshots, and the seek targets.
        let mut probes: Vec<(Vec<u8>, u64)> = seeks.clone();
        for (uk, versions) in &model {
            for &seq in versions.keys() {
                probes.push((uk.clone(), seq));
                probes.push((uk.clone(), seq - 1));
            }
            probes.push((uk.clone(), MAX_SEQNO));
        }
        for (uk, snapshot) in probes {
            prop_assert_eq!(reader.get(&uk, snapshot).expect("get"), model_get(&model, &uk, snapshot));
            if model.contains_key(&uk) {
                prop_assert!(reader.may_contain(&uk));
            }
        }
    }
}

fn many_entries(n: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let uk = format!("user-key-{:08}", i * 7);
            (
                ikey(uk.as_bytes(), 1000 + i, ValueKind::Put),
                format!("value for {i}, padded with some text").into_bytes(),
            )
        })
        .collect()
}

#[test]
fn large_file_with_many_blocks_and_bloom() {
    let entries = many_entries(20_000);
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd(3)] {
        let options = SstOptions {
            compression,
            ..SstOptions::default()
        };
        let (bytes, info) = build(&entries, options);
        let reader = SstReader::open(bytes.clone(), "big.sst").expect("open");
        assert!(
            reader.data_block_count() > 100,
            "{}",
            reader.data_block_count()
        );
        assert_eq!(read_all(&reader).expect("iterate"), entries);
        // Blocks stay near the target size (uncompressed).
        if compression == Compression::None {
            let avg = info.properties.data_size / info.properties.data_block_count;
            assert!((3500..4400).contains(&avg), "average block {avg}");
        } else {
            assert!(
                info.properties.data_size
                    < info.properties.raw_key_bytes + info.properties.raw_value_bytes
            );
        }
        // Present keys hit, absent keys are mostly filtered out without reading a block.
        for (i, (k, v)) in entries.iter().enumerate().step_by(97) {
            let uk = lsm::key::user_key(k);
            let found = reader.get(uk, MAX_SEQNO).expect("get").expect("present");
            assert_eq!(
                (found.kind, &found.value[..], found.seq),
                (ValueKind::Put, &v[..], 1000 + i as u64)
            );
            assert_eq!(reader.get(uk, 999 + i as u64).expect("get"), None);
        }
        let before = reader.stats();
        for i in 0..1000 {
            assert_eq!(
                reader
                    .get(format!("absent-{i}").as_bytes(), MAX_SEQNO)
                    .expect("get"),
                None
            );
        }
        let after = reader.stats();
        assert_eq!(after.gets - before.gets, 1000);
        assert!(after.bloom_negatives - before.bloom_negatives > 970);
        assert!(after.blocks_read - before.blocks_read < 30);
    }
}

#[test]
fn empty_file() {
    for bloom in [0, 10] {
        let (bytes, info) = build(
            &[],
            SstOptions {
                bloom_bits_per_key: bloom,
                ..SstOptions::default()
            },
        );
        assert_eq!(info.entry_count, 0);
        assert!(info.smallest_user_key.is_empty());
        let reader = SstReader::open(bytes, "empty.sst").expect("open");
        assert!(read_all(&reader).expect("iterate").is_empty());
        assert_eq!(reader.get(b"k", MAX_SEQNO).expect("get"), None);
        let mut it = reader.iter();
        it.seek(&lookup_key(b"k", 5)).expect("seek");
        assert!(!it.valid());
    }
}

#[test]
fn reads_from_a_local_file() {
    use std::io::Write;
    let entries = many_entries(3000);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("1.sst");
    let file = std::fs::File::create(&path).expect("create");
    let mut builder = sst::SstBuilder::new(
        "1.sst",
        std::io::BufWriter::new(file),
        SstOptions::default(),
    )
    .expect("builder");
    builder.set_creation_time_ms(1_234);
    for (k, v) in &entries {
        builder.add(k, v).expect("add");
    }
    let (info, mut writer) = builder.finish_into_inner().expect("finish");
    writer.flush().expect("flush");
    writer.get_ref().sync_all().expect("sync");
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        info.file_size
    );

    let reader =
        SstReader::open(std::fs::File::open(&path).expect("open"), "1.sst").expect("open sst");
    assert_eq!(reader.properties().creation_time_ms, 1_234);
    assert!(
        reader
            .properties()
            .created_by
            .starts_with("data-processor sst ")
    );
    assert_eq!(read_all(&reader).expect("iterate"), entries);
    // The reader is shareable across threads.
    let shared = std::sync::Arc::new(reader);
    std::thread::scope(|s| {
        for t in 0..2 {
            let r = std::sync::Arc::clone(&shared);
            let entries = &entries;
            s.spawn(move || {
                for (k, v) in entries.iter().skip(t).step_by(13) {
                    let got = r
                        .get(lsm::key::user_key(k), MAX_SEQNO)
                        .expect("get")
                        .expect("present");
                    assert_eq!(&got.value[..], &v[..]);
                }
            });
        }
    });
}

#[test]
fn iterator_errors_carry_the_typed_error() {
    let entries = many_entries(500);
    let (bytes, _) = build(&entries, SstOptions::default());
    let mut damaged = bytes.to_vec();
    damaged[100] ^= 0x01; // inside the first data block
    let reader = SstReader::open(Bytes::from(damaged), "7.sst").expect("metadata is intact");
    let err = read_all(&reader).expect_err("damaged block");
    let err = err.downcast::<sst::SstError>().expect("typed error");
    match *err {
        sst::SstError::Corruption {
            ref file,
            offset,
            ref reason,
        } => {
            assert_eq!(file, "7.sst");
            assert_eq!(offset, 0);
            assert!(reason.contains("checksum"), "{reason}");
        }
        ref other => panic!("unexpected {other}"),
    }
    assert!(err.to_string().contains("corrupt sst 7.sst at offset 0"));
}

#[test]
fn compression_is_skipped_when_it_does_not_pay() {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let entries: Vec<Entry> = (0..2000u32)
        .map(|i| {
            let mut v = vec![0u8; 100];
            rng.fill_bytes(&mut v);
            (ikey(format!("{i:08}").as_bytes(), 1, ValueKind::Put), v)
        })
        .collect();
    let (plain, _) = build(&entries, SstOptions::default());
    let (lz4, info) = build(
        &entries,
        SstOptions {
            compression: Compression::Lz4,
            ..SstOptions::default()
        },
    );
    // Random values do not compress: data blocks are stored as they are.
    let raw_blocks = info.properties.data_size;
    let (_, plain_info) = build(&entries, SstOptions::default());
    assert_eq!(raw_blocks, plain_info.properties.data_size);
    assert!(lz4.len() <= plain.len());
    let reader = SstReader::open(lz4, "lz4.sst").expect("open");
    assert_eq!(read_all(&reader).expect("iterate"), entries);
}

#[test]
fn huge_values_and_keys() {
    let big = vec![7u8; 100_000];
    let entries = vec![
        (ikey(&vec![b'a'; 5000], 3, ValueKind::Put), big.clone()),
        (ikey(&[b'b'; 10], 2, ValueKind::Put), Vec::new()),
        (ikey(&[b'c'; 10], 1, ValueKind::Delete), Vec::new()),
        (ikey(&[b'd'; 10], 1, ValueKind::Put), big),
    ];
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd(1)] {
        let (bytes, _) = build(
            &entries,
            SstOptions {
                compression,
                ..SstOptions::default()
            },
        );
        let reader = SstReader::open(bytes, "big.sst").expect("open");
        assert_eq!(read_all(&reader).expect("iterate"), entries);
        let found = reader
            .get(&[b'c'; 10], 10)
            .expect("get")
            .expect("tombstone");
        assert_eq!(found.kind, ValueKind::Delete);
    }
}

#[test]
fn sst_iterators_merge_with_other_sources() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SstReader>();
    fn assert_send<T: Send>() {}
    assert_send::<sst::SstIterator>();

    // Three sources with interleaved keys and versions of the same user keys.
    let all: Vec<Entry> = common::sort_entries(
        (0u64..3000)
            .map(|i| {
                let kind = if i % 11 == 0 {
                    ValueKind::Delete
                } else {
                    ValueKind::Put
                };
                (
                    ikey(format!("k{:04}", i % 1000).as_bytes(), i + 1, kind),
                    i.to_le_bytes().to_vec(),
                )
            })
            .collect(),
    );
    let parts: Vec<Vec<Entry>> = (0..3)
        .map(|p| {
            all.iter()
                .enumerate()
                .filter(|(i, _)| i % 3 == p)
                .map(|(_, e)| e.clone())
                .collect()
        })
        .collect();
    let small = SstOptions {
        block_size: 256,
        ..SstOptions::default()
    };
    let a = SstReader::open(build(&parts[0], small.clone()).0, "a.sst").expect("open");
    let b = SstReader::open(build(&parts[1], small).0, "b.sst").expect("open");
    let mem = lsm::testing::VecIterator::new(parts[2].clone());
    let mut merged = lsm::merge::MergingIterator::new(vec![
        Box::new(mem),
        Box::new(a.iter()),
        Box::new(b.iter()),
    ]);
    merged.seek_to_first().expect("seek");
    assert_eq!(
        lsm::testing::collect_entries(&mut merged).expect("merge"),
        all
    );
    let target = ikey(b"k0500", 2000, ValueKind::Put);
    merged.seek(&target).expect("seek");
    let tail: Vec<Entry> = all
        .iter()
        .filter(|(k, _)| compare_internal_keys(k, &target).is_ge())
        .cloned()
        .collect();
    assert_eq!(
        lsm::testing::collect_entries(&mut merged).expect("merge"),
        tail
    );
}
