//! The recovery-mode matrix: the same damaged WAL read under every mode, table-driven.
//!
//! The log: three segments of three records of two entries each.
//! Segment 0 holds seqs 1..=6, segment 1 holds 7..=12, segment 2 holds 13..=18; record `r`
//! of segment `s` holds seqs `1 + 6s + 2r` and the next.

mod common;

use bytes::Bytes;
use storage::Storage;
use storage::paths::{self, TableName};
use wal::{DamageAction, DamageKind, RecoveryMode, WalError, WalReader, header_len, record_len};

const TABLE: &str = "m";

/// How the log is damaged.
#[derive(Debug, Clone, Copy)]
enum Scenario {
    /// The newest segment ends inside its last record (seqs 17, 18).
    TornTailOfNewest,
    /// A flipped byte in record 1 of segment 1 (seqs 9, 10).
    CorruptRecordInMiddle,
    /// Segment 1's header is damaged (seqs 7..=12).
    CorruptMiddleSegment,
    /// Segment 1, not the newest, ends inside its last record (seqs 11, 12).
    TornMiddleSegment,
}

/// What a read must give.
#[derive(Debug)]
enum Expect {
    /// These seqs, with damage survived by this action.
    Entries(Vec<u64>, Option<DamageAction>),
    /// A torn-tail error in `segment` at `offset`, intact through `valid_through`.
    Torn {
        segment: usize,
        offset: usize,
        valid_through: u64,
    },
    /// A corruption error in `segment` at `offset`, intact through `valid_through`.
    Corrupt {
        segment: usize,
        offset: usize,
        valid_through: u64,
    },
}

fn range(a: u64, b: u64) -> Vec<u64> {
    (a..=b).collect()
}

fn cat(parts: &[Vec<u64>]) -> Vec<u64> {
    parts.concat()
}

/// Byte offset of record `r` in a segment.
fn record_offset(r: usize) -> usize {
    header_len(TABLE.len()) + r * record_len(&common::batch(0, 2))
}

/// Writes the log with `scenario`'s damage.
async fn damaged_log(scenario: Scenario) -> Storage {
    let storage = Storage::in_memory();
    let table = TableName::new(TABLE).expect("table");
    for s in 0..3u64 {
        let batches: Vec<_> = (0..3).map(|r| common::batch(s * 10 + r, 2)).collect();
        let (bytes, entries) = common::put_segment(&storage, TABLE, 1 + 6 * s, &batches).await;
        assert_eq!(entries.len(), 6);
        let mut bytes = bytes.to_vec();
        match (scenario, s) {
            (Scenario::TornTailOfNewest, 2) | (Scenario::TornMiddleSegment, 1) => {
                bytes.truncate(record_offset(2) + 11);
            }
            (Scenario::CorruptRecordInMiddle, 1) => bytes[record_offset(1) + 20] ^= 0x01,
            (Scenario::CorruptMiddleSegment, 1) => bytes[14] ^= 0xff,
            _ => continue,
        }
        storage
            .put(&paths::wal_segment(&table, 1 + 6 * s), Bytes::from(bytes))
            .await
            .expect("put damaged segment");
    }
    storage
}

fn expectations() -> Vec<(Scenario, RecoveryMode, u64, Expect)> {
    use Expect::*;
    use RecoveryMode::*;
    use Scenario::*;
    let tolerated = Some(DamageAction::Tolerated);
    let stopped = Some(DamageAction::Stopped);
    let skipped = |bytes| Some(DamageAction::Skipped { bytes });
    let rec = record_len(&common::batch(0, 2)) as u64;
    let torn_len = rec - 11; // what is missing of the torn record
    let seg_len = record_offset(3) as u64;
    vec![
        // A torn tail on the newest segment: only absolute consistency refuses it.
        (
            TornTailOfNewest,
            TolerateCorruptedTail,
            0,
            Entries(range(1, 16), tolerated),
        ),
        (
            TornTailOfNewest,
            AbsoluteConsistency,
            0,
            Torn {
                segment: 2,
                offset: record_offset(2),
                valid_through: 16,
            },
        ),
        (
            TornTailOfNewest,
            PointInTime,
            0,
            Entries(range(1, 16), stopped),
        ),
        (
            TornTailOfNewest,
            SkipCorrupted,
            0,
            Entries(range(1, 16), skipped(rec - torn_len)),
        ),
        // A corrupt record in the middle: an error unless the mode stops or skips.
        (
            CorruptRecordInMiddle,
            TolerateCorruptedTail,
            0,
            Corrupt {
                segment: 1,
                offset: record_offset(1),
                valid_through: 8,
            },
        ),
        (
            CorruptRecordInMiddle,
            AbsoluteConsistency,
            0,
            Corrupt {
                segment: 1,
                offset: record_offset(1),
                valid_through: 8,
            },
        ),
        (
            CorruptRecordInMiddle,
            PointInTime,
            0,
            Entries(range(1, 8), stopped),
        ),
        (
            CorruptRecordInMiddle,
            SkipCorrupted,
            0,
            Entries(cat(&[range(1, 8), range(11, 18)]), skipped(rec)),
        ),
        // Reading from past the damaged segment never touches it.
        (
            CorruptRecordInMiddle,
            AbsoluteConsistency,
            13,
            Entries(range(13, 18), None),
        ),
        (
            CorruptRecordInMiddle,
            TolerateCorruptedTail,
            14,
            Entries(range(14, 18), None),
        ),
        // A damaged segment header loses the whole segment.
        (
            CorruptMiddleSegment,
            TolerateCorruptedTail,
            0,
            Corrupt {
                segment: 1,
                offset: 0,
                valid_through: 6,
            },
        ),
        (
            CorruptMiddleSegment,
            AbsoluteConsistency,
            0,
            Corrupt {
                segment: 1,
                offset: 0,
                valid_through: 6,
            },
        ),
        (
            CorruptMiddleSegment,
            PointInTime,
            0,
            Entries(range(1, 6), stopped),
        ),
        (
            CorruptMiddleSegment,
            SkipCorrupted,
            0,
            Entries(cat(&[range(1, 6), range(13, 18)]), skipped(seg_len)),
        ),
        (
            CorruptMiddleSegment,
            SkipCorrupted,
            8,
            Entries(range(13, 18), skipped(seg_len)),
        ),
        // A torn segment that is not the newest is not a tail: tolerate refuses it.
        (
            TornMiddleSegment,
            TolerateCorruptedTail,
            0,
            Torn {
                segment: 1,
                offset: record_offset(2),
                valid_through: 10,
            },
        ),
        (
            TornMiddleSegment,
            AbsoluteConsistency,
            0,
            Torn {
                segment: 1,
                offset: record_offset(2),
                valid_through: 10,
            },
        ),
        (
            TornMiddleSegment,
            PointInTime,
            0,
            Entries(range(1, 10), stopped),
        ),
        (
            TornMiddleSegment,
            SkipCorrupted,
            0,
            Entries(cat(&[range(1, 10), range(13, 18)]), skipped(rec - torn_len)),
        ),
    ]
}

#[tokio::test]
async fn every_mode_handles_every_damage_as_documented() {
    for (scenario, mode, from, expect) in expectations() {
        let what = format!("{scenario:?} under {mode} from {from}");
        let storage = damaged_log(scenario).await;
        let reader = WalReader::open(&storage, TABLE).await.expect("open");
        let segment_path = |s: usize| reader.segments()[s].path.to_string();
        let result = reader.read_from(from, 4, mode).read_all().await;
        match (expect, result) {
            (Expect::Entries(seqs, action), Ok((entries, report))) => {
                assert_eq!(common::seqs(&entries), seqs, "{what}");
                match action {
                    None => assert!(report.is_clean(), "{what}: {report:?}"),
                    Some(action) => {
                        assert_eq!(report.damage.len(), 1, "{what}: {report:?}");
                        assert_eq!(report.damage[0].action, action, "{what}");
                        assert_eq!(
                            report.stopped_at().is_some(),
                            action == DamageAction::Stopped,
                            "{what}"
                        );
                    }
                }
                // Every entry is the one that was written.
                for e in &entries {
                    let s = (e.seq - 1) / 6;
                    let r = (e.seq - 1) % 6 / 2;
                    let first = 1 + 6 * s + 2 * r;
                    let written = common::batch(s * 10 + r, 2).to_entries(first);
                    assert_eq!(&written[(e.seq - first) as usize], e, "{what}");
                }
            }
            (
                Expect::Torn {
                    segment,
                    offset,
                    valid_through,
                },
                Err(err),
            ) => {
                let WalError::TornTail {
                    segment: s,
                    offset: o,
                    valid_through: v,
                } = &err
                else {
                    panic!("{what}: expected a torn tail, got {err}");
                };
                assert_eq!(
                    (s.as_str(), *o as usize, *v),
                    (segment_path(segment).as_str(), offset, Some(valid_through)),
                    "{what}"
                );
                assert!(err.to_string().contains(&segment_path(segment)), "{err}");
            }
            (
                Expect::Corrupt {
                    segment,
                    offset,
                    valid_through,
                },
                Err(err),
            ) => {
                let WalError::Corruption {
                    segment: s,
                    offset: o,
                    valid_through: v,
                    ..
                } = &err
                else {
                    panic!("{what}: expected corruption, got {err}");
                };
                assert_eq!(
                    (s.as_str(), *o as usize, *v),
                    (segment_path(segment).as_str(), offset, Some(valid_through)),
                    "{what}"
                );
                let msg = err.to_string();
                assert!(
                    msg.starts_with("corrupt record in wal segment tables/m/wal/")
                        && msg.contains(&format!("at offset {offset}")),
                    "{msg}"
                );
            }
            (expect, result) => panic!("{what}: expected {expect:?}, got {result:?}"),
        }
    }
}

#[tokio::test]
async fn the_damage_report_names_segment_offset_and_kind() {
    let storage = damaged_log(Scenario::CorruptRecordInMiddle).await;
    let reader = WalReader::open(&storage, TABLE).await.expect("open");
    let (_, report) = reader
        .read_from(0, 100, RecoveryMode::SkipCorrupted)
        .read_all()
        .await
        .expect("read");
    let damage = &report.damage[0];
    assert_eq!(damage.segment, "tables/m/wal/00000000000000000007.wal");
    assert_eq!(damage.offset as usize, record_offset(1));
    assert!(matches!(
        damage.kind,
        DamageKind::Corruption(wal::CorruptionReason::RecordChecksum { .. })
    ));
    assert_eq!(report.segments_read, 3);
    assert_eq!(report.last_seq, Some(18));
    let text = damage.to_string();
    assert!(
        text.contains("00000000000000000007.wal") && text.contains("skipped"),
        "{text}"
    );
}

#[tokio::test]
async fn an_error_ends_the_read_and_nothing_of_the_damaged_segment_is_returned() {
    let storage = damaged_log(Scenario::CorruptRecordInMiddle).await;
    let reader = WalReader::open(&storage, TABLE).await.expect("open");
    let mut chunks = reader.read_from(0, 4, RecoveryMode::AbsoluteConsistency);
    let mut got = Vec::new();
    let err = loop {
        match chunks.next_chunk().await {
            Ok(Some(chunk)) => got.extend(chunk),
            Ok(None) => panic!("expected an error"),
            Err(err) => break err,
        }
    };
    // Every entry of the whole, clean segments before the damage is handed out (even those
    // still buffered when the damage was found), then the error; nothing of the damaged one.
    assert_eq!(common::seqs(&got), range(1, 6));
    assert_eq!(err.valid_through(), Some(8));
    assert!(chunks.next_chunk().await.expect("fused").is_none());
}
