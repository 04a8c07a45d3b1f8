//! The data path end to end with the real binaries as processes: writes go to the WAL
//! (`storage-admin load`, which records every acknowledged write in an oracle file), the
//! replayer replays them into memtables, flushers write L0 SSTs, the scheduler commits them
//! in order; reads (`storage-admin get/scan`) merge SSTs with the replayer's memtables.
//! Then the same with the replayer, a flusher and the scheduler SIGKILLed at bad moments.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;
use std::time::Duration;

use tests::data::{DataCluster, tail};
use tests::wait_until;

const TABLES: [&str; 2] = ["alpha", "beta"];

/// Loads `keys` writes (30% overwrites, 10% deletes) into both tables, recording the
/// acknowledged ones in `oracle`.
fn load(c: &DataCluster, oracle: &Path, keys: u64, seed: u64) {
    let keys = keys.to_string();
    let seed = seed.to_string();
    let o = c.admin(&[
        "load",
        TABLES[0],
        TABLES[1],
        "--keys",
        &keys,
        "--value-size",
        "64",
        "--overwrite-ratio",
        "0.3",
        "--delete-ratio",
        "0.1",
        "--batch-size",
        "20",
        "--seed",
        &seed,
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "load failed: {}\n{}", o.stderr, o.stdout);
}

fn wait_all_flushed(c: &DataCluster, oracle: &Path) {
    for t in TABLES {
        let last = DataCluster::last_acked(oracle, t);
        assert!(last > 0, "nothing acknowledged for {t}");
        c.wait_flushed(t, last, Duration::from_secs(60));
    }
}

#[test]
fn acknowledged_writes_are_flushed_to_l0_and_readable_with_their_newest_value() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &[]);
    c.start_flusher();
    c.create_tables(&TABLES);
    let oracle = dir.path().join("oracle.jsonl");
    load(&c, &oracle, 6000, 1);
    // Readable at once (memtables), whatever has been flushed so far.
    let checked = c.check_oracle(&oracle, &TABLES);
    assert!(checked > 1000, "{checked}");
    wait_all_flushed(&c, &oracle);
    for t in TABLES {
        let last = DataCluster::last_acked(&oracle, t);
        // The checkpoint is exactly the last flushed sequence number.
        assert_eq!(c.checkpoint(t), last, "{t}");
        let files = c.files(t);
        assert!(
            files.len() >= 2,
            "{t}: several memtables flushed: {files:?}"
        );
        let max_seq = files
            .iter()
            .map(|f| f["largest_seq"].as_u64().unwrap())
            .max()
            .unwrap();
        assert_eq!(
            max_seq, last,
            "{t}: the newest L0 file ends at the checkpoint"
        );
        // Every acknowledged write is in exactly one L0 file (no compactor runs here).
        let entries: u64 = files.iter().map(|f| f["entries"].as_u64().unwrap()).sum();
        let acked = admin::oracle::read_oracle(&oracle)
            .unwrap()
            .iter()
            .filter(|e| e.table == t)
            .count() as u64;
        assert_eq!(
            entries, acked,
            "{t}: entries in SSTs vs acknowledged writes"
        );
    }
    // Now everything is in SSTs; reads give the same answers.
    c.check_oracle(&oracle, &TABLES);
}

#[test]
fn sigkill_of_the_replayer_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Big memtables and no age trigger: the first load stays in memory, unflushed.
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "64MB"),
            ("DP__WAL_REPLAY__FLUSH_INTERVAL", "1h"),
        ],
    );
    c.start_flusher();
    c.create_tables(&TABLES);
    let oracle = dir.path().join("oracle.jsonl");
    load(&c, &oracle, 3000, 2);
    c.check_oracle(&oracle, &TABLES);
    assert_eq!(
        c.checkpoint(TABLES[0]),
        0,
        "nothing flushed before the kill"
    );
    DataCluster::kill(&mut c.replayer);
    c.start_replayer();
    // It replays from the checkpoint (0): everything is back.
    let ok = wait_until(Duration::from_secs(30), || {
        let o = c.admin(&["get", TABLES[0], "key-000000000000"]);
        o.code != 3 && !o.stderr.contains("not held")
    });
    assert!(ok, "the restarted replayer never took the table back");
    c.check_oracle(&oracle, &TABLES);
    // Flush everything, then check that SSTs hold each acknowledged write exactly once.
    for t in TABLES {
        let o = c.admin(&["flush", t]);
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    wait_all_flushed(&c, &oracle);
    for t in TABLES {
        let entries: u64 = c
            .files(t)
            .iter()
            .map(|f| f["entries"].as_u64().unwrap())
            .sum();
        let acked = admin::oracle::read_oracle(&oracle)
            .unwrap()
            .iter()
            .filter(|e| e.table == t)
            .count() as u64;
        assert_eq!(entries, acked, "{t}: no write lost or duplicated");
    }
    c.check_oracle(&oracle, &TABLES);
}

#[test]
fn sigkill_of_a_flusher_mid_flush_retries_elsewhere_and_leaves_an_orphan_outside_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &[]);
    // This flusher stops after writing its SST, before reporting it: we kill it there.
    let doomed = c.start_flusher_with(&[("DP_FAILPOINTS", "flusher.before_complete=pause")]);
    c.create_tables(&TABLES[..1]);
    let oracle = dir.path().join("oracle.jsonl");
    let o = c.admin(&[
        "load",
        TABLES[0],
        "--keys",
        "500",
        "--value-size",
        "64",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let log = c.flushers[doomed].as_ref().unwrap().log.clone();
    let paused = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("failpoint flusher.before_complete"))
    });
    assert!(paused, "the flusher never reached the failpoint");
    let ssts = dir
        .path()
        .join("storage/tables")
        .join(TABLES[0])
        .join("sst");
    let written: Vec<String> = std::fs::read_dir(&ssts)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        written.len(),
        1,
        "the doomed flush wrote its SST: {written:?}"
    );
    DataCluster::kill(&mut c.flushers[doomed]);
    // Another flusher takes the task over once the dead one's lease expires.
    c.start_flusher();
    let last = DataCluster::last_acked(&oracle, TABLES[0]);
    c.wait_flushed(TABLES[0], last, Duration::from_secs(60));
    let in_manifest: Vec<u64> = c
        .files(TABLES[0])
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect();
    let orphan: u64 = written[0].trim_end_matches(".sst").parse().unwrap();
    assert!(
        !in_manifest.contains(&orphan),
        "the orphan {orphan} is not in the manifest {in_manifest:?}"
    );
    assert!(
        ssts.join(&written[0]).exists(),
        "the orphan stays for Cleanup"
    );
    c.check_oracle(&oracle, &TABLES[..1]);
}

#[test]
fn sigkill_of_the_scheduler_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &[]);
    c.start_flusher();
    c.create_tables(&TABLES);
    let oracle1 = dir.path().join("oracle1.jsonl");
    load(&c, &oracle1, 3000, 3);
    DataCluster::kill(&mut c.sched);
    // Writers do not need the scheduler: the WAL keeps growing while it is down (the load
    // generator only asks it where storage is, so give it the URL).
    let url = format!("file://{}", dir.path().join("storage").display());
    let oracle2 = dir.path().join("oracle2.jsonl");
    let o = c.admin(&[
        "load",
        TABLES[0],
        "--keys",
        "1000",
        "--value-size",
        "64",
        "--seed",
        "4",
        "--storage-url",
        &url,
        "--oracle",
        oracle2.to_str().unwrap(),
    ]);
    // Without a scheduler the table check cannot run: either refused up front, or written.
    let wrote_without_scheduler = o.code == 0;
    c.start_scheduler();
    wait_all_flushed(&c, &oracle1);
    c.check_oracle(&oracle1, &TABLES[1..]);
    if wrote_without_scheduler {
        let last = DataCluster::last_acked(&oracle2, TABLES[0]);
        c.wait_flushed(TABLES[0], last, Duration::from_secs(60));
    }
    // Both loads, merged, for the first table: every acknowledged write, newest wins.
    let merged = dir.path().join("merged.jsonl");
    let mut text = std::fs::read_to_string(&oracle1).unwrap();
    text.push_str(&std::fs::read_to_string(&oracle2).unwrap_or_default());
    std::fs::write(&merged, text).unwrap();
    c.check_oracle(&merged, &TABLES[..1]);
}

#[test]
fn backpressure_bounds_replayer_memory_until_flushers_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "128KB"),
            ("DP__WAL_REPLAY__MAX_FROZEN_MEMTABLES", "2"),
        ],
    );
    c.create_tables(&TABLES[..1]);
    let oracle = dir.path().join("oracle.jsonl");
    let o = c.admin(&[
        "load",
        TABLES[0],
        "--keys",
        "20000",
        "--value-size",
        "100",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let last = DataCluster::last_acked(&oracle, TABLES[0]);
    // No flusher: the replayer stops at its cap while the WAL holds far more.
    let status = || {
        let out = tests::run_grpcurl(&[
            "-plaintext",
            &c.replayer_ports.grpc_addr(),
            "dataprocessor.v1.Replayer/GetStatus",
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["tables"][0].clone()
    };
    let stalled = wait_until(Duration::from_secs(20), || {
        status()["frozenMemtables"].as_u64() == Some(2)
    });
    assert!(stalled, "never reached the frozen cap: {}", status());
    std::thread::sleep(Duration::from_secs(2));
    let s = status();
    let applied: u64 = s["appliedSeq"].as_str().unwrap_or("0").parse().unwrap();
    let bytes: u64 = s["memtableBytes"].as_str().unwrap_or("0").parse().unwrap();
    assert!(
        applied < last / 2,
        "replay stopped early: applied {applied} of {last}"
    );
    // Two frozen memtables plus the active one, each at most ~the freeze size (0.8 × 128 KiB).
    assert!(bytes <= 3 * 128 * 1024, "memtables use {bytes} bytes");
    assert_eq!(c.checkpoint(TABLES[0]), 0);
    // Flushers return: it drains.
    c.start_flusher();
    c.start_flusher();
    c.wait_flushed(TABLES[0], last, Duration::from_secs(90));
    c.check_oracle(&oracle, &TABLES[..1]);
    let log = c.replayer.as_ref().unwrap().log_text();
    assert!(!log.contains("panicked"), "{}", tail(&log, 30));
}
