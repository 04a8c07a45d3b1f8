//! Writer → reader round trips, group commit, recovery of the last sequence number on
//! reopen, and fencing.

mod common;

use std::collections::BTreeSet;

use bytes::Bytes;
use common::{batch, seqs};
use futures::future::join_all;
use proptest::prelude::*;
use storage::Storage;
use storage::paths::{self, TableName};
use wal::{
    ReadChecks, RecoveryMode, WalEntry, WalError, WalReader, WalWriter, WalWriterConfig, WriteBatch,
};

async fn read_all(storage: &Storage, table: &str, from: u64) -> Vec<WalEntry> {
    let reader = WalReader::open(storage, table).await.expect("open reader");
    let (entries, report) = reader
        .read_from(from, 1000, RecoveryMode::AbsoluteConsistency)
        .read_all()
        .await
        .expect("read");
    assert!(report.is_clean(), "{report:?}");
    entries
}

fn arb_batch() -> impl Strategy<Value = WriteBatch> {
    let entry = (
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..16),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    proptest::collection::vec(entry, 1..10).prop_map(|entries| {
        let mut b = WriteBatch::new();
        for (put, k, v) in entries {
            if put {
                b.put(k, v);
            } else {
                b.delete(k);
            }
        }
        b
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever is appended (concurrently, grouped in any way) is read back exactly, with
    /// its acknowledged sequence numbers, from any sequence number, in any chunk size.
    #[test]
    fn appended_batches_read_back_exactly(
        rounds in proptest::collection::vec(proptest::collection::vec(arb_batch(), 1..6), 1..5),
        max_segment_bytes in 64usize..4096,
        from_pick in any::<proptest::sample::Index>(),
        batch_size in 1usize..40,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let storage = Storage::in_memory();
            let config = WalWriterConfig { max_segment_bytes, ..WalWriterConfig::default() };
            let writer = WalWriter::open(storage.clone(), "prop", config).await.expect("open");
            let mut expected = Vec::new();
            for round in rounds {
                // Batches of one round are appended concurrently: they may share a segment.
                let acks = join_all(round.iter().map(|b| writer.append(b.clone()))).await;
                for (b, ack) in round.iter().zip(acks) {
                    let ack = ack.expect("append");
                    prop_assert_eq!(ack.last_seq - ack.first_seq + 1, b.len() as u64);
                    expected.extend(b.to_entries(ack.first_seq));
                }
            }
            expected.sort_by_key(|e| e.seq);
            let all: Vec<u64> = seqs(&expected);
            prop_assert_eq!(all.clone(), (1..=all.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(writer.last_seq(), all.len() as u64);

            let from = from_pick.index(all.len() + 3) as u64;
            let reader = WalReader::open(&storage, "prop").await.expect("reader");
            let mut chunks = reader.read_from(from, batch_size, RecoveryMode::default());
            let mut got = Vec::new();
            let mut sizes = Vec::new();
            while let Some(chunk) = chunks.next_chunk().await.expect("chunk") {
                sizes.push(chunk.len());
                got.extend(chunk);
            }
            prop_assert!(chunks.report().is_clean());
            let want: Vec<WalEntry> = expected.into_iter().filter(|e| e.seq >= from).collect();
            prop_assert_eq!(got, want);
            if let Some((last, full)) = sizes.split_last() {
                prop_assert!(full.iter().all(|n| *n == batch_size), "{:?}", sizes);
                prop_assert!(*last >= 1 && *last <= batch_size);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_group_committed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::local(dir.path()).expect("local");
    let writer = WalWriter::open(storage.clone(), "gc", WalWriterConfig::default())
        .await
        .expect("open");
    let n = 200u64;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let w = writer.clone();
            tokio::spawn(async move { (i, w.append(batch(i, 3)).await) })
        })
        .collect();
    let mut ranges = Vec::new();
    let mut segments = BTreeSet::new();
    for t in tasks {
        let (i, ack) = t.await.expect("task");
        let ack = ack.expect("append");
        assert_eq!(ack.last_seq - ack.first_seq, 2);
        segments.insert(ack.segment.clone());
        ranges.push((ack.first_seq, i));
    }
    ranges.sort_unstable();
    let firsts: Vec<u64> = ranges.iter().map(|r| r.0).collect();
    assert_eq!(firsts, (0..n).map(|i| 1 + 3 * i).collect::<Vec<_>>());
    assert!(
        (segments.len() as u64) < n,
        "{} segments for {n} concurrent appends: no group commit",
        segments.len()
    );
    let listed = storage
        .list(&paths::wal_dir(&TableName::new("gc").expect("name")))
        .await
        .expect("list");
    assert_eq!(listed.len(), segments.len());

    let entries = read_all(&storage, "gc", 0).await;
    assert_eq!(seqs(&entries), (1..=3 * n).collect::<Vec<_>>());
    for (first, i) in ranges {
        let got = &entries[(first - 1) as usize..(first + 2) as usize];
        assert_eq!(got, &batch(i, 3).to_entries(first)[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_segment_bytes_caps_a_group() {
    let storage = Storage::in_memory();
    let config = WalWriterConfig {
        max_segment_bytes: 1024,
        ..WalWriterConfig::default()
    };
    let writer = WalWriter::open(storage.clone(), "cap", config)
        .await
        .expect("open");
    // One batch far over the cap still gets written, alone.
    let mut big = WriteBatch::new();
    big.put("big", vec![7u8; 5000]);
    let acks = join_all(
        (0..60)
            .map(|i| batch(i, 6))
            .chain(std::iter::once(big))
            .map(|b| writer.append(b)),
    )
    .await;
    for ack in acks {
        ack.expect("append");
    }
    let listed = storage
        .list(&paths::wal_dir(&TableName::new("cap").expect("name")))
        .await
        .expect("list");
    let reader = WalReader::open(&storage, "cap").await.expect("reader");
    for (meta, info) in listed.iter().zip(reader.segments()) {
        let bytes = storage.get(&meta.location).await.expect("get");
        let decoded = wal::decode_segment(&bytes, RecoveryMode::AbsoluteConsistency, "s", true)
            .expect("decodes");
        assert!(
            meta.size <= 1024 || decoded.entries.len() <= 6,
            "segment {} of {} bytes holds more than one batch",
            info.path,
            meta.size
        );
        assert!(!decoded.entries.is_empty());
    }
    assert_eq!(read_all(&storage, "cap", 0).await.len(), 60 * 6 + 1);
}

#[tokio::test]
async fn reopen_continues_after_the_newest_segment() {
    let storage = Storage::in_memory();
    let w = WalWriter::open(storage.clone(), "t", WalWriterConfig::default())
        .await
        .expect("open");
    assert_eq!(w.last_seq(), 0);
    let a = w.append(batch(1, 4)).await.expect("append");
    assert_eq!((a.first_seq, a.last_seq), (1, 4));
    assert_eq!(a.segment.as_ref(), "tables/t/wal/00000000000000000001.wal");
    drop(w);

    let w = WalWriter::open(storage.clone(), "t", WalWriterConfig::default())
        .await
        .expect("reopen");
    assert_eq!(w.last_seq(), 4);
    let b = w.append(batch(2, 2)).await.expect("append");
    assert_eq!((b.first_seq, b.last_seq), (5, 6));

    // A floor from a durable source (all segments cleaned up) is respected.
    let fresh = Storage::in_memory();
    let config = WalWriterConfig {
        min_last_seq: 100,
        ..WalWriterConfig::default()
    };
    let w = WalWriter::open(fresh, "t", config).await.expect("open");
    assert_eq!(w.append(batch(3, 1)).await.expect("append").first_seq, 101);

    let entries = read_all(&storage, "t", 0).await;
    assert_eq!(seqs(&entries), (1..=6).collect::<Vec<_>>());
    assert_eq!(seqs(&read_all(&storage, "t", 5).await), vec![5, 6]);
    assert!(read_all(&storage, "t", 7).await.is_empty());
}

#[tokio::test]
async fn empty_batches_and_bad_tables_are_refused() {
    let storage = Storage::in_memory();
    let w = WalWriter::open(storage.clone(), "t", WalWriterConfig::default())
        .await
        .expect("open");
    assert!(matches!(
        w.append(WriteBatch::new()).await,
        Err(WalError::EmptyBatch { .. })
    ));
    assert!(matches!(
        WalWriter::open(storage.clone(), "no/slash", WalWriterConfig::default()).await,
        Err(WalError::Storage(
            storage::StorageError::InvalidTableName { .. }
        ))
    ));
    assert!(WalReader::open(&storage, "").await.is_err());
}

#[tokio::test]
async fn a_writer_does_not_continue_a_damaged_log() {
    let storage = Storage::in_memory();
    let (bytes, _) = common::put_segment(&storage, "t", 1, &[batch(1, 3), batch(2, 3)]).await;
    let path = paths::wal_segment(&TableName::new("t").expect("name"), 1);
    storage
        .put(&path, bytes.slice(..bytes.len() - 3))
        .await
        .expect("truncate");
    let err = WalWriter::open(storage, "t", WalWriterConfig::default())
        .await
        .expect_err("damaged end");
    assert!(
        matches!(&err, WalError::TornTail { segment, valid_through: Some(3), .. } if segment == path.as_ref()),
        "{err}"
    );
}

#[tokio::test]
async fn the_second_writer_of_a_log_is_fenced() {
    let storage = Storage::in_memory();
    let w0 = WalWriter::open(storage.clone(), "f", WalWriterConfig::default())
        .await
        .expect("open");
    w0.append(batch(0, 2)).await.expect("append");

    // Both open on the same log state (last seq 2).
    let a = WalWriter::open(storage.clone(), "f", WalWriterConfig::default())
        .await
        .expect("open a");
    let b = WalWriter::open(storage.clone(), "f", WalWriterConfig::default())
        .await
        .expect("open b");
    let ack = a.append(batch(1, 3)).await.expect("a extends the log");
    assert_eq!(ack.first_seq, 3);
    let err = b.append(batch(2, 1)).await.expect_err("b is fenced");
    match &err {
        WalError::Fenced {
            table,
            first_seq,
            segment,
        } => {
            assert_eq!((table.as_str(), *first_seq), ("f", 3));
            assert_eq!(segment, "tables/f/wal/00000000000000000003.wal");
        }
        other => panic!("expected Fenced, got {other}"),
    }
    assert!(err.to_string().contains("fenced"), "{err}");
    // Fenced for good, even where it would not collide now.
    assert!(matches!(
        b.append(batch(3, 1)).await,
        Err(WalError::Fenced { .. })
    ));
    // The winner goes on.
    assert_eq!(a.append(batch(4, 1)).await.expect("append").first_seq, 6);
    let entries = read_all(&storage, "f", 0).await;
    assert_eq!(seqs(&entries), (1..=6).collect::<Vec<_>>());
    assert_eq!(&entries[2..5], &batch(1, 3).to_entries(3)[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_have_exactly_one_winner() {
    for round in 0..20u64 {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path()).expect("local");
        let a = WalWriter::open(storage.clone(), "r", WalWriterConfig::default())
            .await
            .expect("open a");
        let b = WalWriter::open(storage.clone(), "r", WalWriterConfig::default())
            .await
            .expect("open b");
        let (ra, rb) = tokio::join!(a.append(batch(round, 2)), b.append(batch(round + 100, 2)));
        let fenced = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(WalError::Fenced { .. })))
            .count();
        assert_eq!(fenced, 1, "round {round}: {ra:?} {rb:?}");
        let winner = if ra.is_ok() { round } else { round + 100 };
        let entries = read_all(&storage, "r", 0).await;
        assert_eq!(entries, batch(winner, 2).to_entries(1));
    }
}

#[tokio::test]
async fn a_failed_put_poisons_the_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::local(dir.path()).expect("local");
    let w = WalWriter::open(storage.clone(), "p", WalWriterConfig::default())
        .await
        .expect("open");
    // The WAL directory's place is taken by a file: the put cannot succeed.
    std::fs::create_dir_all(dir.path().join("tables/p")).expect("mkdir");
    std::fs::write(dir.path().join("tables/p/wal"), b"not a directory").expect("write");
    let err = w.append(batch(1, 1)).await.expect_err("put fails");
    assert!(
        matches!(err, WalError::WriteFailed { first_seq: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("tables/p/wal/00000000000000000001.wal"),
        "{err}"
    );
    let err = w.append(batch(2, 1)).await.expect_err("poisoned");
    assert!(matches!(err, WalError::Poisoned { .. }), "{err}");
}

#[tokio::test]
async fn foreign_objects_in_the_wal_directory_are_ignored() {
    let storage = Storage::in_memory();
    common::put_segment(&storage, "t", 1, &[batch(1, 2)]).await;
    storage
        .put(
            &storage::ObjectPath::from("tables/t/wal/README.txt"),
            Bytes::from_static(b"hello"),
        )
        .await
        .expect("put");
    let reader = WalReader::open(&storage, "t").await.expect("open");
    assert_eq!(reader.segments().len(), 1);
    assert_eq!(read_all(&storage, "t", 0).await.len(), 2);
}

/// Segments of seqs 1..=4, 5..=8 and 9..=12 of table `t`.
async fn three_segments_of_four() -> (Storage, Vec<storage::ObjectPath>) {
    let storage = Storage::in_memory();
    let w = WalWriter::open(storage.clone(), "t", WalWriterConfig::default())
        .await
        .expect("open");
    let mut segments = Vec::new();
    for i in 0..3 {
        segments.push(w.append(batch(i, 4)).await.expect("append").segment);
    }
    (storage, segments)
}

/// A listing that misses a segment (one created while a directory listing ran, or one that
/// is gone) must not be read past: the entries before the hole come out, then an error
/// naming the missing seqs; a read that starts after the hole is unaffected.
#[tokio::test]
async fn a_hole_between_segments_stops_the_read_with_the_missing_seqs() {
    let (storage, segments) = three_segments_of_four().await;
    storage.delete(&segments[1]).await.expect("delete");

    let reader = WalReader::open(&storage, "t").await.expect("open");
    let checked = ReadChecks {
        holes: Some(Default::default()),
        ..ReadChecks::default()
    };
    let mut chunks = reader.read_from_checked(1, 100, RecoveryMode::SkipCorrupted, 2, &checked);
    let first = chunks.next_chunk().await.expect("entries before the hole");
    assert_eq!(seqs(&first.unwrap_or_default()), vec![1, 2, 3, 4]);
    let err = chunks.next_chunk().await.expect_err("the hole");
    assert!(
        matches!(
            err,
            WalError::MissingSegment {
                last_seq: 4,
                next_first_seq: 9,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no segment holds seqs 5..=8"),
        "{err}"
    );

    // A hole the caller has checked (the segment after it starts at 9) is read past, as
    // is any hole when none are checked (the format allows them).
    let allowed = ReadChecks {
        holes: Some([9].into_iter().collect()),
        ..ReadChecks::default()
    };
    let (entries, _) = reader
        .read_from_checked(1, 100, RecoveryMode::SkipCorrupted, 2, &allowed)
        .read_all()
        .await
        .expect("allowed hole");
    assert_eq!(seqs(&entries), vec![1, 2, 3, 4, 9, 10, 11, 12]);
    assert_eq!(seqs(&read_all(&storage, "t", 1).await), seqs(&entries));
    assert_eq!(seqs(&read_all(&storage, "t", 9).await), vec![9, 10, 11, 12]);
}

/// A quarantined segment is skipped: its seqs are not returned, it is not fetched (here it
/// is garbage that would fail any mode), and it is no hole.
#[tokio::test]
async fn a_skipped_segment_is_not_read_and_is_no_hole() {
    let (storage, segments) = three_segments_of_four().await;
    storage
        .put(
            &segments[1],
            Bytes::from_static(b"not a wal segment at all"),
        )
        .await
        .expect("overwrite");

    let reader = WalReader::open(&storage, "t").await.expect("open");
    let checks = ReadChecks {
        skip: vec![5],
        holes: Some(Default::default()),
    };
    let (entries, _) = reader
        .read_from_checked(1, 3, RecoveryMode::AbsoluteConsistency, 2, &checks)
        .read_all()
        .await
        .expect("no error: the damaged segment is skipped");
    assert_eq!(seqs(&entries), vec![1, 2, 3, 4, 9, 10, 11, 12]);
    // Without the skip the same read fails on it.
    let err = reader
        .read_from(1, 3, RecoveryMode::AbsoluteConsistency)
        .read_all()
        .await
        .expect_err("damaged");
    assert!(err.is_damage(), "{err}");
}
