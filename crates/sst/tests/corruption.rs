//! Damage every part of a small file, one bit or one truncation at a time: the reader must
//! never panic, and must never hand out an entry that was not written (every byte of the
//! file is under a CRC, so single-bit damage is always reported as a typed error).

mod common;

use bytes::Bytes;
use common::{Entry, build, ikey, read_all};
use lsm::{MAX_SEQNO, ValueKind};
use sst::{Compression, SstOptions, SstReader};

fn small_entries() -> Vec<Entry> {
    (0u64..24)
        .map(|i| {
            let kind = if i % 6 == 5 {
                ValueKind::Delete
            } else {
                ValueKind::Put
            };
            let value = if kind == ValueKind::Put {
                format!("v{i}").repeat(3).into_bytes()
            } else {
                Vec::new()
            };
            (
                ikey(format!("k{:02}", i / 2).as_bytes(), 100 - i, kind),
                value,
            )
        })
        .collect()
}

/// Opens, iterates, and looks up every key of `bytes`. Returns true if any step reported
/// an error; panics (fails the test) if anything returned differs from `expected`.
fn check_damaged(bytes: Bytes, expected: &[Entry], original: &SstReader, what: &str) -> bool {
    let reader = match SstReader::open(bytes, "damaged.sst") {
        Ok(r) => r,
        Err(e) => {
            assert!(
                e.is_corruption() || matches!(e, sst::SstError::Io { .. }),
                "{what}: {e}"
            );
            return true;
        }
    };
    let mut detected = false;
    match read_all(&reader) {
        Ok(entries) => assert_eq!(entries, expected, "{what}: undetected damage in iteration"),
        Err(e) => {
            let e = e.downcast::<sst::SstError>().expect("typed error");
            assert!(e.is_corruption(), "{what}: {e}");
            detected = true;
        }
    }
    // Also a partial iteration must only yield original entries.
    let mut it = reader.iter();
    let mut pos = 0;
    use lsm::InternalIterator;
    if it.seek_to_first().is_ok() {
        while it.valid() {
            assert_eq!(
                (it.key(), it.value()),
                (&expected[pos].0[..], &expected[pos].1[..]),
                "{what}"
            );
            pos += 1;
            if it.next().is_err() {
                break;
            }
        }
    }
    for (k, _) in expected {
        let uk = lsm::key::user_key(k);
        for snapshot in [MAX_SEQNO, 90] {
            match reader.get(uk, snapshot) {
                Ok(got) => assert_eq!(got, original.get(uk, snapshot).expect("original"), "{what}"),
                Err(e) => {
                    assert!(e.is_corruption(), "{what}: {e}");
                    detected = true;
                }
            }
        }
    }
    detected
}

fn flip_and_truncate(options: SstOptions) {
    let entries = small_entries();
    let (bytes, _) = build(&entries, options.clone());
    let original = SstReader::open(bytes.clone(), "orig.sst").expect("open");
    assert_eq!(read_all(&original).expect("iterate"), entries);
    eprintln!(
        "{:?}: {} bytes, {} data blocks",
        options.compression,
        bytes.len(),
        original.data_block_count()
    );
    assert!(original.data_block_count() >= 3);

    let mut undetected = Vec::new();
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.to_vec();
        damaged[bit / 8] ^= 1 << (bit % 8);
        if !check_damaged(
            Bytes::from(damaged),
            &entries,
            &original,
            &format!("bit {bit}"),
        ) {
            undetected.push(bit);
        }
    }
    assert!(undetected.is_empty(), "flips not detected: {undetected:?}");

    for len in 0..bytes.len() {
        let truncated = bytes.slice(..len);
        match SstReader::open(truncated, "truncated.sst") {
            Ok(_) => panic!("truncation to {len} bytes opened"),
            Err(e) => assert!(e.is_corruption(), "truncation to {len}: {e}"),
        }
    }
}

#[test]
fn every_bit_flip_and_truncation_uncompressed() {
    flip_and_truncate(SstOptions {
        block_size: 96,
        restart_interval: 3,
        ..SstOptions::default()
    });
}

#[test]
fn every_bit_flip_and_truncation_lz4() {
    flip_and_truncate(SstOptions {
        block_size: 128,
        compression: Compression::Lz4,
        ..SstOptions::default()
    });
}

#[test]
fn every_bit_flip_zstd_no_filter() {
    flip_and_truncate(SstOptions {
        block_size: 128,
        bloom_bits_per_key: 0,
        compression: Compression::Zstd(1),
        ..SstOptions::default()
    });
}

#[test]
fn garbage_is_rejected_with_typed_errors() {
    for input in [&b""[..], b"x", &[0u8; 64], &[0xffu8; 200]] {
        let e = SstReader::open(Bytes::copy_from_slice(input), "junk.sst").expect_err("junk");
        assert!(e.is_corruption(), "{e}");
    }
    // A valid footer pointing at garbage.
    let (bytes, _) = build(&small_entries(), SstOptions::default());
    let mut v = bytes.to_vec();
    let n = v.len();
    for b in &mut v[..n - sst::FOOTER_LEN] {
        *b = 0xAB;
    }
    assert!(
        SstReader::open(Bytes::from(v), "junk.sst")
            .expect_err("junk")
            .is_corruption()
    );
}
