//! Scheduler intelligence with real processes.
//!
//! - Traffic: while WAL ingest is above `scheduler.peak_ingest_bytes_per_sec`, or no
//!   `scheduler.maintenance_windows` range is open, deep compactions, cleanup and
//!   statistics wait (the queue says why) while flushes and L0 compactions go on; the
//!   deferred work runs once ingest drops or the window opens.
//! - Quarantine: a corrupt SST among the inputs of a compaction is found by bisection and
//!   set aside alone; everything else is compacted; after the file is replaced and
//!   released, it is compacted too and every acknowledged write reads back.
//! - IO budget: compactions together write at `scheduler.io_budget`.
//! - WAL quarantine: a corrupt segment in the middle of a log is quarantined, replay goes
//!   on without it, Cleanup keeps it; released after repair, a full compaction merges its
//!   writes back in.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tests::data::{DataCluster, tail};
use tests::wait_until;

/// Small levels without dynamic level sizing: L0 goes to L1, and L1 is over its target at
/// once, so L1 -> L2 ("deep") compactions are picked as soon as L1 has data.
const LEVELS: [(&str, &str); 9] = [
    ("DP__CLEANUP__INTERVAL", "500ms"),
    ("DP__CLEANUP__GRACE_PERIOD", "1s"),
    ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
    ("DP__STATISTICS__INTERVAL", "1s"),
    ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
    ("DP__COMPACTION__LEVEL_BASED__DYNAMIC_LEVEL_BYTES", "false"),
    ("DP__COMPACTION__LEVEL_BASED__NUM_LEVELS", "3"),
    (
        "DP__COMPACTION__LEVEL_BASED__MAX_BYTES_FOR_LEVEL_BASE",
        "16KB",
    ),
    ("DP__COMPACTION__LEVEL_BASED__LEVEL_MULTIPLIER", "2"),
];

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn tasks(c: &DataCluster) -> Vec<Value> {
    c.admin_json(&["tasks", "list"])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The class of a task as the scheduler sees it: "urgent" (flush, replay, L0
/// compaction) or "deferrable" (deeper compaction, cleanup, statistics).
fn class(t: &Value) -> &'static str {
    match t["type"].as_str().unwrap_or("") {
        "wal_replay" | "memtable_flush" => "urgent",
        "compaction" => {
            let top = t["compaction"]["inputs"][0]["level"].as_u64().unwrap_or(0);
            if top == 0 { "urgent" } else { "deferrable" }
        }
        _ => "deferrable",
    }
}

fn is_deep_compaction(t: &Value) -> bool {
    t["type"] == "compaction" && class(t) == "deferrable"
}

/// Start times of every attempt of tasks matching `pred`.
fn attempt_starts(ts: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<(u64, String, i64)> {
    ts.iter()
        .filter(|t| pred(t))
        .flat_map(|t| {
            let id = t["id"].as_u64().unwrap();
            let ty = t["type"].as_str().unwrap().to_owned();
            t["attempts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |a| (id, ty.clone(), a["started_at_ms"].as_i64().unwrap()))
        })
        .collect()
}

/// Pending tasks of `pred` whose waiting reason contains `why`.
fn waiting_for(ts: &[Value], why: &str, pred: impl Fn(&Value) -> bool) -> Vec<u64> {
    ts.iter()
        .filter(|t| {
            t["state"] == "pending"
                && pred(t)
                && t["waiting_reason"]
                    .as_str()
                    .is_some_and(|r| r.contains(why))
        })
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

fn succeeded_after(ts: &[Value], after_ms: i64, pred: impl Fn(&Value) -> bool) -> bool {
    ts.iter().any(|t| {
        t["state"] == "succeeded"
            && pred(t)
            && t["attempts"]
                .as_array()
                .and_then(|a| a.last())
                .and_then(|a| a["started_at_ms"].as_i64())
                .is_some_and(|s| s >= after_ms)
    })
}

#[test]
fn peak_ingest_defers_deep_compactions_and_cleanup_while_flushes_and_l0_compactions_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = LEVELS.to_vec();
    env.push(("DP__SCHEDULER__PEAK_INGEST_BYTES_PER_SEC", "20KB"));
    let mut c = DataCluster::start(dir.path(), &env);
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    // About 110 KB/s of keys and values for 25 s: far above the 20 KB/s peak.
    let mut writer = c.spawn_admin(&[
        "load",
        "t",
        "--keys",
        "25000",
        "--rate",
        "1000",
        "--batch-size",
        "50",
        "--value-size",
        "100",
        "--overwrite-ratio",
        "0.3",
        "--seed",
        "5",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    let load_start = now_ms();
    // The queue says ingest is above the peak, and deep compactions and cleanup wait for
    // that reason while L0 compactions run and commit.
    let mut seen_deep = Vec::new();
    let mut seen_cleanup = Vec::new();
    let mut l0_done_during_load = false;
    let deferred = wait_until(Duration::from_secs(60), || {
        let q = c.admin_json(&["processor", "queue-status"]);
        let ts = tasks(&c);
        let why = "deferred: ingest";
        seen_deep.extend(waiting_for(&ts, why, is_deep_compaction));
        seen_cleanup.extend(waiting_for(&ts, why, |t| t["type"] == "cleanup"));
        l0_done_during_load |= succeeded_after(&ts, load_start + 5_000, |t| {
            t["type"] == "compaction" && class(t) == "urgent"
        });
        q["deferral"]
            .as_str()
            .is_some_and(|d| d.contains("peak_ingest_bytes_per_sec"))
            && !seen_deep.is_empty()
            && !seen_cleanup.is_empty()
            && l0_done_during_load
    });
    assert!(
        deferred,
        "expected deferred deep compactions ({seen_deep:?}) and cleanups ({seen_cleanup:?}) while L0 compactions commit ({l0_done_during_load}); queue:\n{}\nscheduler log:\n{}",
        c.admin(&["processor", "queue-status"]).stdout,
        tail(&c.sched.as_ref().unwrap().log_text(), 30)
    );
    // The queue status shows the waiting reason of each.
    let text = c.admin(&["processor", "queue-status"]).stdout;
    assert!(
        text.contains("deferred: ingest"),
        "queue-status shows why: {text}"
    );
    let status = writer.wait().unwrap();
    assert!(status.success(), "load failed");
    let load_end = now_ms();

    // While ingest was above the peak (from a few seconds after the load began, when the
    // replayer's window had filled, to its end), no deferrable task started; flushes did.
    let ts = tasks(&c);
    let during = |s: i64| s >= load_start + 5_000 && s <= load_end;
    let started: Vec<_> = attempt_starts(&ts, |t| class(t) == "deferrable")
        .into_iter()
        .filter(|(_, _, s)| during(*s))
        .collect();
    assert!(
        started.is_empty(),
        "deferrable work started during peak ingest: {started:?}"
    );
    let flushes = attempt_starts(&ts, |t| class(t) == "urgent" && t["type"] != "compaction")
        .into_iter()
        .filter(|(_, _, s)| during(*s))
        .count();
    assert!(flushes >= 3, "flushes ran during the load: {flushes}");

    // Ingest drops: the deferred work runs.
    let ran = wait_until(Duration::from_secs(90), || {
        let ts = tasks(&c);
        succeeded_after(&ts, load_end, is_deep_compaction)
            && succeeded_after(&ts, load_end, |t| t["type"] == "cleanup")
            && succeeded_after(&ts, load_end, |t| t["type"] == "statistics_update")
    });
    assert!(
        ran,
        "deferred work never ran after the load; queue:\n{}",
        c.admin(&["processor", "queue-status"]).stdout
    );
    let q = c.admin_json(&["processor", "queue-status"]);
    assert_eq!(q["deferral"], "", "nothing deferred any more: {q}");
    c.check_oracle(&oracle, &["t"]);
}

#[test]
fn a_closed_maintenance_window_defers_deep_compactions_and_cleanup_until_it_opens() {
    // A window that opens at the first whole minute at least 45 s from now (time for the
    // data to be written and L0 compacted while it is closed) and lasts 10 minutes.
    let opens_ms = (now_ms() + 45_000).div_euclid(60_000) * 60_000 + 60_000;
    let minute = (opens_ms.rem_euclid(86_400_000) / 60_000) as u32;
    let end = (minute + 10) % 1440;
    let window = format!(
        "{:02}:{:02}-{:02}:{:02}",
        minute / 60,
        minute % 60,
        end / 60,
        end % 60
    );
    let dir = tempfile::tempdir().unwrap();
    let mut env = LEVELS.to_vec();
    env.push(("DP__SCHEDULER__MAINTENANCE_WINDOWS", window.as_str()));
    let mut c = DataCluster::start(dir.path(), &env);
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    c.load("t", 8000, 9, (0.3, 0.1), &oracle);
    let mut seen_deep = Vec::new();
    let mut seen_cleanup = Vec::new();
    let why = format!("outside scheduler.maintenance_windows {window}");
    let deferred = wait_until(Duration::from_secs(40), || {
        let ts = tasks(&c);
        seen_deep.extend(waiting_for(&ts, &why, is_deep_compaction));
        seen_cleanup.extend(waiting_for(&ts, &why, |t| t["type"] == "cleanup"));
        !seen_deep.is_empty()
            && !seen_cleanup.is_empty()
            && ts.iter().any(|t| {
                t["type"] == "compaction" && class(t) == "urgent" && t["state"] == "succeeded"
            })
    });
    assert!(
        now_ms() < opens_ms,
        "the test ran too slowly: the window opened before the checks"
    );
    assert!(
        deferred,
        "expected deferred deep compactions ({seen_deep:?}) and cleanups ({seen_cleanup:?}) while an L0 compaction commits; queue:\n{}",
        c.admin(&["processor", "queue-status"]).stdout
    );
    let started_early = |c: &DataCluster| -> Vec<_> {
        attempt_starts(&tasks(c), |t| class(t) == "deferrable")
            .into_iter()
            .filter(|(_, _, s)| *s < opens_ms)
            .collect()
    };
    let early = started_early(&c);
    assert!(
        early.is_empty(),
        "deferrable work ran while the window was closed: {early:?}"
    );

    // The window opens: the deferred work runs.
    let ran = wait_until(Duration::from_secs(150), || {
        let ts = tasks(&c);
        succeeded_after(&ts, opens_ms, is_deep_compaction)
            && succeeded_after(&ts, opens_ms, |t| t["type"] == "cleanup")
    });
    assert!(
        ran,
        "deferred work never ran once the window opened; queue:\n{}",
        c.admin(&["processor", "queue-status"]).stdout
    );
    let early = started_early(&c);
    assert!(
        early.is_empty(),
        "deferrable work ran before the window: {early:?}"
    );
    c.check_oracle(&oracle, &["t"]);
}

#[test]
fn a_corrupt_sst_among_sixteen_inputs_is_quarantined_alone_and_released_after_repair() {
    let dir = tempfile::tempdir().unwrap();
    // Only explicit flushes (one L0 file each); L0 compacts at 16 files.
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "64MB"),
            ("DP__WAL_REPLAY__FLUSH_INTERVAL", "1h"),
            ("DP__COMPACTION__TRIGGER_THRESHOLD", "16"),
            ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
            ("DP__CLEANUP__INTERVAL", "500ms"),
            ("DP__CLEANUP__GRACE_PERIOD", "1s"),
            ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
        ],
    );
    c.start_flusher();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    let mut all = Vec::new();
    for round in 0..16u64 {
        let part = dir.path().join(format!("oracle-{round}.jsonl"));
        let o = c.admin(&[
            "load",
            "t",
            "--keys",
            "400",
            "--value-size",
            "100",
            "--overwrite-ratio",
            "0.3",
            "--delete-ratio",
            "0.1",
            "--seed",
            &(100 + round).to_string(),
            "--oracle",
            part.to_str().unwrap(),
        ]);
        assert_eq!(o.code, 0, "load: {}", o.stderr);
        // Right after the table is created its replay may not be assigned yet (the
        // scheduler refuses a flush of a table no replayer holds): ask until it is.
        let mut last = String::new();
        let flushed = wait_until(Duration::from_secs(30), || {
            let o = c.admin(&["flush", "t"]);
            last = o.stderr;
            o.code == 0
        });
        assert!(flushed, "flush: {last}");
        c.wait_flushed(
            "t",
            DataCluster::last_acked(&part, "t"),
            Duration::from_secs(60),
        );
        all.extend(std::fs::read(&part).unwrap());
    }
    std::fs::write(&oracle, &all).unwrap();
    let l0: Vec<u64> = c.admin_json(&["manifest", "--table", "t"])["levels"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_u64().unwrap())
        .collect();
    assert_eq!(l0.len(), 16, "one L0 file per flush: {l0:?}");

    // Corrupt one of them in the middle (a data block: its checksum no longer matches).
    let bad = l0[5];
    let path = dir
        .path()
        .join(format!("storage/tables/t/sst/{bad:020}.sst"));
    let original = std::fs::read(&path).unwrap();
    let mut broken = original.clone();
    let at = broken.len() / 3;
    for b in &mut broken[at..at + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&path, &broken).unwrap();

    // A compactor starts: the L0 compaction of all 16 fails, bisection finds the file.
    c.start_compactor();
    let found = wait_until(Duration::from_secs(120), || {
        let q = c.admin_json(&["processor", "queue-status"]);
        q["quarantined"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert!(
        found,
        "nothing quarantined; tasks:\n{}\nscheduler log:\n{}",
        c.admin(&["tasks", "list"]).stdout,
        tail(&c.sched.as_ref().unwrap().log_text(), 40)
    );
    let q = c.admin_json(&["processor", "queue-status"]);
    let files = q["quarantined"].as_array().unwrap();
    assert_eq!(files.len(), 1, "only the corrupt file: {files:?}");
    assert_eq!(files[0]["file_id"].as_u64(), Some(bad), "{files:?}");
    assert_eq!(files[0]["table"], "t");
    assert!(
        files[0]["path"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{bad}.sst")),
        "{files:?}"
    );
    let error = files[0]["error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("corrupt"), "{error}");
    let text = c.admin(&["processor", "queue-status"]).stdout;
    assert!(
        text.contains(&format!("quarantined: table t sst {bad}")),
        "{text}"
    );

    // The other 15 were compacted (rewritten by the probes), the bad one is still there.
    let others_done = wait_until(Duration::from_secs(60), || {
        let ids = c.manifest_ids("t");
        ids.contains(&bad) && l0.iter().all(|id| *id == bad || !ids.contains(id))
    });
    assert!(
        others_done,
        "manifest {:?}, inputs {l0:?}",
        c.manifest_ids("t")
    );
    // Cleanup never deletes it, the metric counts it.
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.stored_ssts("t").contains(&bad));
    let (code, body) = tests::http_get(c.sched_ports.http, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.lines()
            .any(|l| l.starts_with("processor_quarantined_files{")
                && l.contains("table=\"t\"")
                && l.ends_with(" 1")),
        "{}",
        body.lines()
            .filter(|l| l.contains("quarantine"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // It survives a scheduler restart.
    DataCluster::kill(&mut c.sched);
    c.start_scheduler();
    let q = c.admin_json(&["processor", "queue-status"]);
    assert_eq!(q["quarantined"][0]["file_id"].as_u64(), Some(bad), "{q}");

    // Releasing something not quarantined is a clear error and changes nothing.
    let o = c.admin(&[
        "processor",
        "release-quarantined",
        "--table",
        "t",
        "--file-id",
        "999999",
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("not quarantined"), "{}", o.stderr);

    // The operator restores the file and releases it: it is compacted again, and every
    // acknowledged write reads back.
    std::fs::write(&path, &original).unwrap();
    let o = c.admin(&[
        "processor",
        "release-quarantined",
        "--table",
        "t",
        "--file-id",
        &bad.to_string(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let q = c.admin_json(&["processor", "queue-status"]);
    assert_eq!(q["quarantined"].as_array().map(Vec::len), Some(0), "{q}");
    let o = c.admin(&[
        "compact",
        "--force",
        "--table",
        "t",
        "--level",
        "0",
        "--timeout",
        "120",
    ]);
    assert_eq!(o.code, 0, "compact: {}\n{}", o.stdout, o.stderr);
    assert!(
        !c.manifest_ids("t").contains(&bad),
        "the released file was compacted: {:?}",
        c.manifest_ids("t")
    );
    c.check_oracle(&oracle, &["t"]);
}

#[test]
fn two_compactions_together_write_at_the_io_budget() {
    const BUDGET: f64 = 512.0 * 1024.0;
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__SCHEDULER__IO_BUDGET", "512KB"),
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "1MB"),
            ("DP__COMPACTION__MAX_CONCURRENT_COMPACTIONS", "2"),
            ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
            ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
        ],
    );
    c.start_flusher();
    c.create_tables(&["a", "b"]);
    // About 7 MB per table, flushed as L0 files before any compactor runs.
    for (t, seed) in [("a", 1), ("b", 2)] {
        let part = dir.path().join(format!("oracle-{t}.jsonl"));
        let o = c.admin(&[
            "load",
            t,
            "--keys",
            "60000",
            "--value-size",
            "100",
            "--seed",
            &seed.to_string(),
            "--oracle",
            part.to_str().unwrap(),
        ]);
        assert_eq!(o.code, 0, "load: {}", o.stderr);
        c.wait_flushed(
            t,
            DataCluster::last_acked(&part, t),
            Duration::from_secs(120),
        );
        assert!(c.level_counts(t)[0] >= 4, "{t}: {:?}", c.level_counts(t));
    }
    // One compactor with room for both compactions: each gets half of the budget, and
    // whichever runs alone gets all of it.
    c.start_compactor();
    let done = wait_until(Duration::from_secs(240), || {
        let ts = tasks(&c);
        ts.iter()
            .filter(|t| t["type"] == "compaction" && t["state"] == "succeeded")
            .count()
            >= 2
            && !ts.iter().any(|t| {
                t["type"] == "compaction" && (t["state"] == "pending" || t["state"] == "running")
            })
    });
    assert!(
        done,
        "compactions never finished: {}",
        c.admin(&["tasks", "list"]).stdout
    );
    // The picker may first take a few of the L0 files, then the rest: the last compaction
    // of each table wrote the files its manifest holds now. Those two ran together.
    let ts = tasks(&c);
    let mut last: Vec<&Value> = Vec::new();
    for table in ["a", "b"] {
        let t = ts
            .iter()
            .filter(|t| t["type"] == "compaction" && t["table"] == table)
            .max_by_key(|t| t["id"].as_u64())
            .unwrap();
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(t["attempt"], 1, "no retry: {t}");
        last.push(t);
    }
    let spans: Vec<(i64, i64)> = last
        .iter()
        .map(|t| {
            let a = &t["attempts"][0];
            (
                a["started_at_ms"].as_i64().unwrap(),
                a["ended_at_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    let overlap =
        spans.iter().map(|s| s.1).min().unwrap() - spans.iter().map(|s| s.0).max().unwrap();
    let secs = (end - start) as f64 / 1000.0;
    assert!(
        secs >= 20.0,
        "the compactions ran {secs} s: make them bigger"
    );
    assert!(
        overlap as f64 >= 0.9 * (end - start) as f64,
        "the two compactions did not run together: {spans:?}"
    );
    // Bytes the two wrote: their outputs, the tables' files now.
    let written: f64 = ["a", "b"]
        .iter()
        .flat_map(|t| c.files(t))
        .map(|f| f["size"].as_u64().unwrap() as f64)
        .sum();
    let rate = written / secs;
    println!("{written} bytes in {secs:.1} s: {rate:.0} B/s for a budget of {BUDGET} B/s");
    assert!(
        (rate - BUDGET).abs() <= 0.1 * BUDGET,
        "compactions wrote {rate:.0} B/s together ({written} bytes in {secs:.1} s); the budget is {BUDGET} B/s"
    );
}

fn load_into(c: &DataCluster, table: &str, keys: u64, seed: u64, oracle: &std::path::Path) {
    c.load(table, keys, seed, (0.2, 0.1), oracle);
    c.wait_flushed(
        table,
        DataCluster::last_acked(oracle, table),
        Duration::from_secs(120),
    );
}

/// Runs `compact args...` once no compaction of `table` is pending or running (the picker
/// may have started one meanwhile: a LockError is tried again).
fn compact_when_idle(c: &DataCluster, table: &str, args: &[&str]) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        let idle = wait_until(Duration::from_secs(120), || {
            !tasks(c).iter().any(|t| {
                t["type"] == "compaction"
                    && t["table"] == table
                    && (t["state"] == "pending" || t["state"] == "running")
            })
        });
        assert!(idle, "compactions of {table} never ended");
        let mut a = vec!["compact", "--force", "--table", table];
        a.extend_from_slice(args);
        let o = c.admin(&a);
        if o.code == 0 {
            return o.stdout;
        }
        assert!(
            o.stderr.contains("LockError"),
            "compact {args:?}: {}",
            o.stderr
        );
        last = o.stderr;
    }
    panic!("compact {args:?} kept meeting locks: {last}");
}

#[test]
fn a_forced_stall_preempts_a_long_deep_compaction_whose_partial_result_is_correct() {
    let dir = tempfile::tempdir().unwrap();
    // One compaction at a time, slow ones (an IO budget), small output files (many cut
    // points), no size-triggered deep compactions; any L0 growth counts as a stall.
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__COMPACTION__MAX_CONCURRENT_COMPACTIONS", "1"),
            ("DP__SCHEDULER__IO_BUDGET", "256KB"),
            ("DP__SCHEDULER__PREEMPT_BELOW_STALL_FORECAST", "1h"),
            ("DP__COMPACTION__TARGET_FILE_SIZE", "64KB"),
            ("DP__COMPACTION__LEVEL_BASED__DYNAMIC_LEVEL_BYTES", "false"),
            ("DP__COMPACTION__LEVEL_BASED__NUM_LEVELS", "3"),
            (
                "DP__COMPACTION__LEVEL_BASED__MAX_BYTES_FOR_LEVEL_BASE",
                "1GB",
            ),
            ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
            ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
        ],
    );
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["deep", "hot"]);
    // `deep`: one load compacted down to L2, a second one into L1.
    let first = dir.path().join("deep-1.jsonl");
    let second = dir.path().join("deep-2.jsonl");
    load_into(&c, "deep", 15000, 21, &first);
    compact_when_idle(&c, "deep", &["--level", "0", "--timeout", "300"]);
    compact_when_idle(&c, "deep", &["--level", "1", "--timeout", "300"]);
    load_into(&c, "deep", 15000, 22, &second);
    compact_when_idle(&c, "deep", &["--level", "0", "--timeout", "300"]);
    let levels = c.level_counts("deep");
    assert!(levels[1] > 0 && levels[2] > 1, "{levels:?}");

    // The long deep compaction: L1 -> L2 at a share of 256 KB/s.
    compact_when_idle(&c, "deep", &["--level", "1", "--no-wait"]);
    let deep_task = || {
        tasks(&c)
            .into_iter()
            .filter(|t| {
                t["type"] == "compaction"
                    && t["table"] == "deep"
                    && t["compaction"]["inputs"][0]["level"] == 1
            })
            .max_by_key(|t| t["id"].as_u64())
    };
    let running = wait_until(Duration::from_secs(30), || {
        deep_task().is_some_and(|t| t["state"] == "running")
    });
    assert!(
        running,
        "the deep compaction never started: {:?}",
        deep_task()
    );

    // `hot` stalls: L0 grows while the only compaction slot is taken.
    let hot_oracle = dir.path().join("hot.jsonl");
    load_into(&c, "hot", 8000, 23, &hot_oracle);

    // The deep compaction is preempted and commits a partial result; the L0 compaction
    // of `hot` gets the slot and runs.
    let done = wait_until(Duration::from_secs(90), || {
        deep_task().is_some_and(|t| t["state"] == "succeeded")
    });
    let deep = deep_task().unwrap();
    assert!(
        done,
        "the deep compaction did not end: {deep}\nscheduler log:\n{}",
        tail(&c.sched.as_ref().unwrap().log_text(), 30)
    );
    let sched_log = c.sched.as_ref().unwrap().log_text();
    assert!(
        sched_log.contains("preempting a deep compaction"),
        "{}",
        tail(&sched_log, 30)
    );
    let inputs: Vec<u64> = deep["compaction"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            l["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_u64().unwrap())
        })
        .collect();
    let ids = c.manifest_ids("deep");
    let kept: Vec<&u64> = inputs.iter().filter(|id| ids.contains(id)).collect();
    assert!(
        !kept.is_empty(),
        "a partial result keeps the inputs it did not finish: {inputs:?} vs {ids:?}"
    );
    assert!(
        kept.len() < inputs.len(),
        "the preempted compaction committed some work: kept {kept:?} of {inputs:?}"
    );
    let deep_end = deep["attempts"][0]["ended_at_ms"].as_i64().unwrap();
    let hot_ran = wait_until(Duration::from_secs(90), || {
        succeeded_after(&tasks(&c), deep_end - 1000, |t| {
            t["type"] == "compaction" && t["table"] == "hot"
        })
    });
    assert!(
        hot_ran,
        "the L0 compaction of hot never ran: {}",
        c.admin(&["tasks", "list"]).stdout
    );
    // Level 1 and 2 stay non-overlapping (the manifest would refuse otherwise) and every
    // acknowledged write reads back: the model check.
    let oracle = dir.path().join("deep.jsonl");
    let mut all = std::fs::read(&first).unwrap();
    all.extend(std::fs::read(&second).unwrap());
    std::fs::write(&oracle, all).unwrap();
    c.check_oracle(&oracle, &["deep"]);
    c.check_oracle(&hot_oracle, &["hot"]);
}

/// The WAL segments of `table` on disk, oldest first: (first seq, path).
fn wal_segments(c: &DataCluster, table: &str) -> Vec<(u64, std::path::PathBuf)> {
    let dir = c.dir.join("storage/tables").join(table).join("wal");
    let mut segs: Vec<(u64, std::path::PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            let seq = p.file_stem()?.to_str()?.parse().ok()?;
            (p.extension()? == "wal").then_some((seq, p))
        })
        .collect();
    segs.sort();
    segs
}

/// A corrupt WAL segment in the middle of a log: replay fails on it twice, the segment is
/// quarantined (named with its error), and replay goes on without it — later writes are
/// applied and flushed, the segment's writes stay invisible, Cleanup keeps it although the
/// checkpoint passed it. After a good copy is put back and it is released, a repair
/// compaction merges its writes in: every acknowledged write reads back, nothing is left in
/// quarantine, and Cleanup may then delete the segment.
#[test]
fn a_corrupt_wal_segment_is_quarantined_replay_goes_on_and_its_repair_restores_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &LEVELS);
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let first = dir.path().join("first.jsonl");
    c.load("t", 2000, 1, (0.3, 0.1), &first);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&first, "t"),
        Duration::from_secs(60),
    );

    // Writes the replayer has not read yet, then one of their segments is damaged.
    DataCluster::kill(&mut c.replayer);
    let checkpoint = c.checkpoint("t");
    let second = dir.path().join("second.jsonl");
    c.load("t", 3000, 2, (0.3, 0.1), &second);
    let fresh: Vec<(u64, std::path::PathBuf)> = wal_segments(&c, "t")
        .into_iter()
        .filter(|(s, _)| *s > checkpoint)
        .collect();
    assert!(fresh.len() >= 3, "{fresh:?}");
    let (seg_first, seg) = fresh[fresh.len() / 2].clone();
    let seg_last = fresh[fresh.len() / 2 + 1].0 - 1;
    let good = std::fs::read(&seg).unwrap();
    let mut bad = good.clone();
    let at = bad.len() - 4;
    bad[at] ^= 0x5a;
    std::fs::write(&seg, &bad).unwrap();
    c.start_replayer();

    // Quarantined, named with its error.
    let mut entry = Value::Null;
    let found = wait_until(Duration::from_secs(60), || {
        let q = c.admin_json(&["processor", "queue-status"]);
        entry = q["quarantined"]
            .as_array()
            .and_then(|a| a.iter().find(|f| f["kind"] == "wal").cloned())
            .unwrap_or(Value::Null);
        !entry.is_null()
    });
    assert!(
        found,
        "the segment was never quarantined; replayer log:\n{}",
        tail(&c.replayer.as_ref().unwrap().log_text(), 30)
    );
    let name = seg.file_name().unwrap().to_str().unwrap();
    assert!(entry["path"].as_str().unwrap().ends_with(name), "{entry}");
    assert_eq!(entry["first_seq"], seg_first, "{entry}");
    assert!(
        entry["error"].as_str().unwrap().contains("corrupt record"),
        "{entry}"
    );
    let text = c.admin(&["processor", "queue-status"]).stdout;
    assert!(text.contains("quarantined: table t wal"), "{text}");

    // Replay went on: everything after the segment is flushed.
    let last = DataCluster::last_acked(&second, "t");
    c.wait_flushed("t", last, Duration::from_secs(120));
    let all = dir.path().join("all.jsonl");
    let acked = tests::oracles::merge_oracles(&[first.clone(), second.clone()], &all);
    let mut newest: std::collections::BTreeMap<String, (u64, Option<String>)> =
        std::collections::BTreeMap::new();
    for e in &acked {
        if newest.get(&e.key).is_none_or(|(s, _)| *s < e.seq) {
            newest.insert(e.key.clone(), (e.seq, e.value.clone()));
        }
    }
    let got = c.scan_all("t");
    let (mut outside, mut hidden) = (0, 0);
    for (k, (seq, v)) in &newest {
        if (seg_first..=seg_last).contains(seq) {
            if got.get(k) != v.as_ref() {
                hidden += 1;
            }
        } else {
            outside += 1;
            assert_eq!(got.get(k), v.as_ref(), "{k}: newest write at seq {seq}");
        }
    }
    assert!(
        outside > 0 && hidden > 0,
        "outside {outside}, hidden {hidden}"
    );

    // Cleanup deletes the segments the checkpoint covers (all but the newest), but keeps
    // the quarantined one.
    let kept = wait_until(Duration::from_secs(30), || {
        wal_segments(&c, "t")
            .iter()
            .filter(|(s, _)| *s != seg_first)
            .count()
            <= 1
    });
    assert!(kept, "cleanup never deleted the covered segments");
    assert!(seg.exists(), "the quarantined segment was deleted");

    // A good copy back, released: the repair merges its writes in.
    std::fs::write(&seg, &good).unwrap();
    let id = entry["file_id"].as_u64().unwrap().to_string();
    let o = c.admin(&[
        "processor",
        "release-quarantined",
        "--table",
        "t",
        "--file-id",
        &id,
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let repaired = wait_until(Duration::from_secs(120), || {
        c.admin_json(&["processor", "queue-status"])["quarantined"]
            .as_array()
            .is_some_and(|a| a.is_empty())
    });
    assert!(
        repaired,
        "the repair never committed: {}",
        c.admin(&["tasks", "list"]).stdout
    );
    let checked = c.check_oracle(&all, &["t"]);
    tests::report!(
        "wal quarantine: {checked} keys checked after the repair; {hidden} were hidden while quarantined"
    );
    let gone = wait_until(Duration::from_secs(30), || !seg.exists());
    assert!(
        gone,
        "the repaired segment is garbage once the checkpoint covers it"
    );
}
