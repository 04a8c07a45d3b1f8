//! The format on disk: checked-in v1 fixtures, robustness against every single-bit flip and
//! every truncation, and the fuzz corpus replayed.
//!
//! The fixtures under `tests/fixtures/v1/` were produced once by `generate_v1_fixtures`
//! (ignored; run it with `--ignored` only to create fixtures for a *new* format version in
//! a new directory). They must never be regenerated for v1: a change that cannot read them,
//! or would write different bytes, breaks old logs.

mod common;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use lsm::ValueKind;
use storage::Storage;
use wal::{
    DamageAction, DecodedSegment, RecoveryMode, SegmentContext, WalEntry, WalError, WalReader,
    WriteBatch, decode_segment, decode_segment_with, encode_segment, header_len,
};

const FIXTURE_TABLE: &str = "fixture";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/wal_reader")
}

/// The v1 fixture log: three segments, puts, deletes, empty keys and values, binary keys,
/// a multi-byte varint, and a gap in sequence numbers between segments 2 and 3.
fn fixture_segments() -> Vec<(u64, Vec<WriteBatch>)> {
    let mut s1a = WriteBatch::new();
    s1a.put("apple", "red").delete("banana").put("cherry", "");
    let mut s1b = WriteBatch::new();
    s1b.put("date", "brown");
    let mut s2 = WriteBatch::new();
    s2.put([0u8, 255, 1], (0..200u8).collect::<Vec<_>>())
        .delete("apple");
    let mut s3a = WriteBatch::new();
    s3a.put("", "empty key");
    let mut s3b = WriteBatch::new();
    s3b.put("e", "").delete("");
    vec![(1, vec![s1a, s1b]), (5, vec![s2]), (10, vec![s3a, s3b])]
}

fn segment_file(first_seq: u64) -> PathBuf {
    fixtures_dir()
        .join("tables")
        .join(FIXTURE_TABLE)
        .join("wal")
        .join(storage::paths::wal_segment_name(first_seq))
}

/// What the fixture log holds, spelled out by hand (not derived from the encoder).
fn expected_fixture_entries() -> Vec<WalEntry> {
    let e = |seq, kind, key: &[u8], value: &[u8]| WalEntry {
        seq,
        kind,
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
    };
    let long: Vec<u8> = (0..200u8).collect();
    vec![
        e(1, ValueKind::Put, b"apple", b"red"),
        e(2, ValueKind::Delete, b"banana", b""),
        e(3, ValueKind::Put, b"cherry", b""),
        e(4, ValueKind::Put, b"date", b"brown"),
        e(5, ValueKind::Put, &[0, 255, 1], &long),
        e(6, ValueKind::Delete, b"apple", b""),
        e(10, ValueKind::Put, b"", b"empty key"),
        e(11, ValueKind::Put, b"e", b""),
        e(12, ValueKind::Delete, b"", b""),
    ]
}

#[test]
#[ignore = "writes fixture files; run once per new format version"]
fn generate_v1_fixtures() {
    for (first_seq, batches) in fixture_segments() {
        let (bytes, _) = encode_segment(FIXTURE_TABLE, first_seq, &batches);
        let path = segment_file(first_seq);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &bytes).expect("write fixture");
    }
    seed_corpus();
}

/// Seeds the fuzz corpus with valid and damaged segments.
fn seed_corpus() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).expect("mkdir corpus");
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (first_seq, batches) in fixture_segments() {
        let (bytes, _) = encode_segment(FIXTURE_TABLE, first_seq, &batches);
        seeds.push((format!("valid-{first_seq}"), bytes));
    }
    let (valid, _) = encode_segment(FIXTURE_TABLE, 1, &fixture_segments()[0].1);
    let h = header_len(FIXTURE_TABLE.len());
    seeds.push(("torn-tail".into(), valid[..valid.len() - 5].to_vec()));
    seeds.push(("torn-header".into(), valid[..h - 3].to_vec()));
    seeds.push(("header-only".into(), valid[..h].to_vec()));
    let mut flipped = valid.clone();
    flipped[h + 10] ^= 0x10;
    seeds.push(("bad-record-crc".into(), flipped));
    let mut magic = valid.clone();
    magic[0] = b'X';
    seeds.push(("bad-magic".into(), magic));
    let mut long = valid.clone();
    long[h..h + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    seeds.push(("huge-length".into(), long));
    seeds.push(("empty".into(), Vec::new()));
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).expect("write seed");
    }
}

#[test]
fn v1_fixtures_decode_to_their_known_contents() {
    let mut all = Vec::new();
    let segments = fixture_segments();
    for (i, (first_seq, _)) in segments.iter().enumerate() {
        let path = segment_file(*first_seq);
        let bytes = Bytes::from(
            std::fs::read(&path)
                .unwrap_or_else(|e| panic!("fixture {} missing: {e}", path.display())),
        );
        let decoded = decode_segment(
            &bytes,
            RecoveryMode::AbsoluteConsistency,
            &path.display().to_string(),
            i + 1 == segments.len(),
        )
        .expect("fixture decodes");
        let header = decoded.header.expect("header");
        assert_eq!((header.version, header.table.as_str()), (1, FIXTURE_TABLE));
        assert_eq!(header.first_seq, *first_seq);
        assert!(decoded.damage.is_empty());
        all.extend(decoded.entries);
    }
    assert_eq!(all, expected_fixture_entries());
}

#[test]
fn v1_fixtures_are_what_the_encoder_writes() {
    for (first_seq, batches) in fixture_segments() {
        let (bytes, _) = encode_segment(FIXTURE_TABLE, first_seq, &batches);
        let on_disk = std::fs::read(segment_file(first_seq)).expect("fixture");
        assert_eq!(
            bytes, on_disk,
            "the encoder no longer writes format v1 byte for byte (segment {first_seq})"
        );
    }
}

#[tokio::test]
async fn v1_fixtures_read_through_storage() {
    let storage = Storage::local(fixtures_dir()).expect("fixture storage");
    let reader = WalReader::open(&storage, FIXTURE_TABLE)
        .await
        .expect("open");
    assert_eq!(
        reader
            .segments()
            .iter()
            .map(|s| s.first_seq)
            .collect::<Vec<_>>(),
        vec![1, 5, 10]
    );
    for mode in RecoveryMode::ALL {
        for from in [0u64, 1, 4, 5, 7, 10, 12, 13] {
            let (entries, report) = reader
                .read_from(from, 2, mode)
                .read_all()
                .await
                .expect("read");
            let want: Vec<_> = expected_fixture_entries()
                .into_iter()
                .filter(|e| e.seq >= from)
                .collect();
            assert_eq!(entries, want, "{mode} from {from}");
            assert!(report.is_clean());
        }
    }
}

/// A small segment of three records and its entries, per record.
fn small_segment() -> (Vec<u8>, Vec<WalEntry>, Vec<usize>) {
    let mut a = WriteBatch::new();
    a.put("k1", "v1").delete("k2");
    let mut b = WriteBatch::new();
    b.put("k3", "");
    let mut c = WriteBatch::new();
    c.put("", "v4").put("k5", "value five");
    let batches = [a, b, c];
    let (bytes, _) = encode_segment("t", 7, &batches);
    // Byte offsets where each record ends.
    let mut ends = Vec::new();
    let mut end = header_len(1);
    for batch in &batches {
        end += wal::record_len(batch);
        ends.push(end);
    }
    assert_eq!(end, bytes.len());
    (bytes, common::entries_of(7, &batches), ends)
}

/// Entries a decode may return: a subsequence of the original ones (the same seq → the
/// same entry); for every mode but skip_corrupted, a prefix.
fn assert_no_wrong_entry(mode: RecoveryMode, got: &[WalEntry], original: &[WalEntry], what: &str) {
    if mode == RecoveryMode::SkipCorrupted {
        let mut it = original.iter();
        for e in got {
            assert!(
                it.any(|o| o == e),
                "{what}: {mode} returned a wrong entry {e:?}"
            );
        }
    } else {
        assert!(
            got.len() <= original.len() && got == &original[..got.len()],
            "{what}: {mode} returned {got:?}, not a prefix of the original"
        );
    }
}

#[test]
fn every_bit_flip_is_caught() {
    let (bytes, original, _) = small_segment();
    let header = header_len(1);
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        let damaged = Bytes::from(damaged);
        // Without and with what a reader knows from the listing (table, name).
        let contexts = [
            SegmentContext::default(),
            SegmentContext {
                table: Some("t"),
                named_first_seq: Some(7),
                ..SegmentContext::default()
            },
        ];
        for (ctx, mode, is_last) in contexts
            .iter()
            .flat_map(|c| RecoveryMode::ALL.map(|m| (c, m)))
            .flat_map(|(c, m)| [(c, m, true), (c, m, false)])
        {
            {
                let what = format!(
                    "bit {bit} (byte {}), last={is_last}, table known={}",
                    bit / 8,
                    ctx.table.is_some()
                );
                match decode_segment_with(&damaged, mode, "seg", is_last, ctx) {
                    Ok(decoded) => {
                        assert_no_wrong_entry(mode, &decoded.entries, &original, &what);
                        // Something was lost, so the damage must be reported.
                        assert!(!decoded.damage.is_empty(), "{what}: {mode} hid the damage");
                        if bit / 8 < header {
                            // A damaged header loses the whole segment.
                            assert!(decoded.entries.is_empty(), "{what}: {mode}");
                            // Knowing the table, no header damage passes for a torn tail.
                            assert!(
                                ctx.table.is_none() || mode != RecoveryMode::TolerateCorruptedTail,
                                "{what}: header damage tolerated"
                            );
                        }
                        match mode {
                            RecoveryMode::AbsoluteConsistency => {
                                panic!("{what}: absolute_consistency accepted damage")
                            }
                            RecoveryMode::TolerateCorruptedTail => {
                                // Only a torn-looking tail of the newest segment is survived
                                // (a flipped length bit can make the last record look torn).
                                assert!(is_last, "{what}");
                                assert!(
                                    decoded
                                        .damage
                                        .iter()
                                        .all(|d| d.action == DamageAction::Tolerated)
                                );
                            }
                            _ => {}
                        }
                    }
                    Err(err) => {
                        assert!(
                            err.is_damage() || matches!(err, WalError::UnsupportedVersion { .. }),
                            "{what}: {mode}: unexpected error kind {err}"
                        );
                        assert!(err.to_string().contains("seg"), "{err}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_truncation_yields_the_intact_prefix_or_a_torn_tail_error() {
    let (bytes, original, ends) = small_segment();
    let header = header_len(1);
    for len in 0..bytes.len() {
        let truncated = Bytes::copy_from_slice(&bytes[..len]);
        // Records wholly inside the first `len` bytes.
        let intact = ends.iter().take_while(|e| **e <= len).count();
        let prefix = intact_entries(intact);
        let at_boundary = len == header || ends.contains(&len);
        for mode in RecoveryMode::ALL {
            for is_last in [true, false] {
                let what = format!("truncated to {len}, last={is_last}");
                let result = decode_segment(&truncated, mode, "seg", is_last);
                let tolerant = match mode {
                    RecoveryMode::TolerateCorruptedTail => is_last,
                    RecoveryMode::AbsoluteConsistency => false,
                    RecoveryMode::PointInTime | RecoveryMode::SkipCorrupted => true,
                };
                match result {
                    Ok(DecodedSegment {
                        entries, damage, ..
                    }) => {
                        assert!(
                            tolerant || at_boundary,
                            "{what}: {mode} accepted a torn tail"
                        );
                        assert_eq!(entries, &original[..prefix], "{what}: {mode}");
                        assert_eq!(damage.is_empty(), at_boundary, "{what}: {mode}");
                    }
                    Err(WalError::TornTail {
                        offset,
                        valid_through,
                        ..
                    }) => {
                        assert!(!tolerant && !at_boundary, "{what}: {mode}");
                        let expected_offset = if intact == 0 && len < header {
                            0
                        } else if intact == 0 {
                            header
                        } else {
                            ends[intact - 1]
                        };
                        assert_eq!(offset as usize, expected_offset, "{what}: {mode}");
                        assert_eq!(
                            valid_through,
                            original[..prefix].last().map(|e| e.seq),
                            "{what}: {mode}"
                        );
                    }
                    Err(other) => panic!("{what}: {mode}: expected a torn tail, got {other}"),
                }
            }
        }
    }
}

/// Entries in the first `records` records of [`small_segment`].
fn intact_entries(records: usize) -> usize {
    [2, 1, 2].iter().take(records).sum()
}

#[test]
fn fuzz_corpus_replays_without_panic() {
    let dir = corpus_dir();
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} missing: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    assert!(files.len() >= 5, "corpus has only {} files", files.len());
    for path in files {
        let bytes = Bytes::from(std::fs::read(&path).expect("read corpus file"));
        for mode in RecoveryMode::ALL {
            for is_last in [true, false] {
                let _ = decode_segment(&bytes, mode, &path.display().to_string(), is_last);
            }
        }
    }
}
