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
    let oracle = dir.path().join("oracle.jsonl");
    // A paced load (about 5 s), during which memtables freeze and flush continuously.
    let writer = c.spawn_admin(&[
        "load",
        TABLES[0],
        TABLES[1],
        "--keys",
        "15000",
        "--value-size",
        "64",
        "--rate",
        "3000",
        "--overwrite-ratio",
        "0.3",
        "--delete-ratio",
        "0.1",
        "--seed",
        "3",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        c.checkpoint(TABLES[0]) > 0,
        "flushes were committing before the kill"
    );
    DataCluster::kill(&mut c.sched);
    // Writers do not need the scheduler: the WAL keeps growing while it is down.
    std::thread::sleep(Duration::from_secs(1));
    c.start_scheduler();
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_all_flushed(&c, &oracle);
    c.check_oracle(&oracle, &TABLES);
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
    // Two frozen memtables plus the active one, each frozen at 0.8 × 128 KiB of allocated
    // arena; the arena grows in doubling chunks, so a tiny memtable's last chunk can add up
    // to half again (for the default 64 MiB the chunk cap makes that under 2%).
    assert!(
        bytes <= 3 * 128 * 1024 * 3 / 2,
        "memtables use {bytes} bytes"
    );
    assert_eq!(c.checkpoint(TABLES[0]), 0);
    // Flushers return: it drains.
    c.start_flusher();
    c.start_flusher();
    c.wait_flushed(TABLES[0], last, Duration::from_secs(90));
    c.check_oracle(&oracle, &TABLES[..1]);
    let log = c.replayer.as_ref().unwrap().log_text();
    assert!(!log.contains("panicked"), "{}", tail(&log, 30));
}

/// Five `put`s into `table` (one WAL segment each), the replayer killed afterwards; returns
/// the segment files, oldest first.
fn five_segments_then_kill_the_replayer(
    c: &mut DataCluster,
    table: &str,
) -> Vec<std::path::PathBuf> {
    for i in 1..=5 {
        let o = c.admin(&["put", table, &format!("k{i}"), &format!("v{i}")]);
        assert_eq!(o.code, 0, "{}", o.stderr);
    }
    DataCluster::kill(&mut c.replayer);
    let wal = c.dir.join("storage/tables").join(table).join("wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    segs.sort();
    assert_eq!(segs.len(), 5, "{segs:?}");
    segs
}

/// The replayer's view of `table` (GetStatus through grpcurl, proto JSON names).
fn replayer_table(c: &DataCluster, table: &str) -> serde_json::Value {
    let out = tests::run_grpcurl(&[
        "-plaintext",
        &c.replayer_ports.grpc_addr(),
        "dataprocessor.v1.Replayer/GetStatus",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["tables"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["table"] == table).cloned())
        .unwrap_or_default()
}

#[test]
fn a_torn_wal_tail_replays_its_intact_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &[("DP__WAL_REPLAY__FLUSH_INTERVAL", "1h")]);
    c.create_tables(&["t"]);
    let segs = five_segments_then_kill_the_replayer(&mut c, "t");
    // The last write was interrupted: its record is cut short.
    let last = &segs[4];
    let len = std::fs::metadata(last).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(last).unwrap();
    f.set_len(len - 3).unwrap();
    c.start_replayer();
    let ok = wait_until(Duration::from_secs(20), || {
        replayer_table(&c, "t")["appliedSeq"].as_str() == Some("4")
    });
    assert!(ok, "replayed {}", replayer_table(&c, "t"));
    std::thread::sleep(Duration::from_millis(500));
    let t = replayer_table(&c, "t");
    assert_eq!(t["appliedSeq"], "4", "{t}");
    assert!(t["error"].is_null(), "a torn tail is not an error: {t}");
    for i in 1..=4 {
        let o = c.admin(&["get", "t", &format!("k{i}"), "--wait", "2"]);
        assert_eq!(o.stdout.trim_end(), format!("v{i}"), "k{i}: {}", o.stderr);
    }
}

#[test]
fn wal_corrupted_in_the_middle_stops_replay_with_a_replay_error_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__WAL_REPLAY__FLUSH_INTERVAL", "1h"),
            ("DP__WAL_REPLAY__RECOVERY_MODE", "absolute_consistency"),
        ],
    );
    c.create_tables(&["t"]);
    let segs = five_segments_then_kill_the_replayer(&mut c, "t");
    // Flip a byte inside the third segment's record.
    let mut bytes = std::fs::read(&segs[2]).unwrap();
    let at = bytes.len() - 4;
    bytes[at] ^= 0x5a;
    std::fs::write(&segs[2], &bytes).unwrap();
    c.start_replayer();
    let failed = wait_until(Duration::from_secs(30), || {
        let o = c.admin(&["tasks", "list", "--state", "failed", "--json"]);
        o.code == 0 && o.stdout.contains("wal_replay")
    });
    assert!(failed, "the replay never failed");
    let tasks = c.admin_json(&["tasks", "list", "--state", "failed"]);
    let id = tasks[0]["id"].as_u64().unwrap();
    let task = c.admin_json(&["tasks", "show", &id.to_string()]);
    let err = &task["errors"].as_array().unwrap().last().unwrap().clone();
    let segment = segs[2].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err["file"].as_str().unwrap().ends_with(&segment),
        "names the segment {segment}: {err}"
    );
    assert!(
        err["offset"].as_u64().unwrap() > 0,
        "names the offset: {err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("ReplayError"),
        "{err}"
    );
    assert_eq!(err["retriable"], false);
    // Nothing past the damage was applied.
    let t = replayer_table(&c, "t");
    assert_eq!(t["appliedSeq"], "2", "{t}");
    assert!(t["error"].as_str().unwrap().contains(&segment), "{t}");
    assert_eq!(c.checkpoint("t"), 0, "nothing was flushed");
}
