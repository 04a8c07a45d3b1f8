//! `storage-admin`, the real binary, against a live cluster of real processes (scheduler,
//! replayer, flusher, compactor): every command in text and `--json`, checked against what
//! the cluster did (the data read back, the manifest, the tasks); `compact` waits for its
//! tasks, reports a cancelled one with exit 1 and gives up at `--timeout`; and the errors
//! scripts rely on: nothing listening at `--scheduler` is exit 3 with one line naming the
//! address, an unknown table is exit 1 with one line naming the table, a usage error is
//! exit 2.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::data::{DataCluster, Out};
use tests::{bin, free_port, wait_until};

const ENV: [(&str, &str); 5] = [
    ("DP__STATISTICS__INTERVAL", "1s"),
    ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
    // The pickers stay out of the way: every compaction here is one the test asks for.
    ("DP__COMPACTION__TRIGGER_THRESHOLD", "30"),
    ("DP__CLEANUP__INTERVAL", "1s"),
    ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
];

/// `storage-admin` at `addr` (not the cluster's), environment cleaned.
fn admin_at(addr: &str, args: &[&str]) -> Out {
    let out = Command::new(bin("storage-admin"))
        .arg("--scheduler")
        .arg(addr)
        .args(args)
        .env_remove("DP_SCHEDULER")
        .env_remove("DP__STORAGE__URL")
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Text output of a command that must succeed (and say nothing on stderr).
fn text(c: &DataCluster, args: &[&str]) -> String {
    let o = c.admin(args);
    assert_eq!(o.code, 0, "{args:?}: {}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.is_empty(),
        "{args:?} wrote to stderr: {}",
        o.stderr
    );
    o.stdout
}

/// A failure: exit `code`, exactly one line on stderr (returned), nothing on stdout.
fn fails(o: &Out, code: i32, what: &str) -> String {
    assert_eq!(o.code, code, "{what}: {}{}", o.stdout, o.stderr);
    let line = o.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{what}: not one line: {line:?}");
    assert!(line.starts_with("error: "), "{what}: {line:?}");
    assert!(o.stdout.is_empty(), "{what}: {}", o.stdout);
    line.to_owned()
}

fn kinds_alive(status: &Value) -> BTreeSet<String> {
    status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["alive"] == true && w["reachable"] == true)
        .map(|w| w["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// The HTTP port a service process was started with (from its environment: DataCluster
/// keeps only the scheduler's and the replayer's ports).
fn http_port_of(pid: u32, service: &str) -> Option<u16> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let key = format!("DP__SERVER__{}__HTTP_PORT=", service.to_ascii_uppercase());
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(key.as_str()))
        .and_then(|p| p.parse().ok())
}

fn metrics_of(c: &DataCluster, service: &str, port: u16, series: &str) {
    let http = format!("127.0.0.1:{port}");
    let args = ["metrics", "--service", service, "--http", &http];
    let t = text(c, &args);
    assert!(t.starts_with(&format!("{service} metrics:")), "{t}");
    assert!(t.contains(series), "{service}: no {series} in\n{t}");
    let j = c.admin_json(&args);
    assert_eq!(j["service"], service);
    let m = j["metrics"].as_object().unwrap();
    assert!(m.keys().any(|k| k.starts_with(series)), "{service}: {m:?}");
    assert!(m.values().all(Value::is_number), "{service}: {m:?}");
    assert!(!m.keys().any(|k| k.contains("_bucket")), "{service}: {m:?}");
}

/// `load` of 2000 writes into `big`, recorded in `oracle`, in text or `--json` form.
fn load(c: &DataCluster, seed: &str, oracle: &Path, json: bool) {
    let args = [
        "load",
        "big",
        "--keys",
        "2000",
        "--value-size",
        "100",
        "--overwrite-ratio",
        "0.2",
        "--delete-ratio",
        "0.05",
        "--seed",
        seed,
        "--oracle",
        oracle.to_str().unwrap(),
    ];
    if json {
        let j = c.admin_json(&args);
        assert_eq!(j["writes"], 2000, "{j}");
        assert_eq!(
            j["puts"].as_u64().unwrap() + j["deletes"].as_u64().unwrap(),
            2000,
            "{j}"
        );
        assert_eq!(j["tables"][0]["name"], "big", "{j}");
    } else {
        let t = text(c, &args);
        assert!(t.starts_with("2000 writes ("), "{t}");
        assert!(t.contains("tables: big (2000 writes, last seq "), "{t}");
    }
    let acked = admin::oracle::read_oracle(oracle).unwrap();
    assert_eq!(
        acked.len(),
        2000,
        "every acknowledged write is in the oracle"
    );
}

/// Compaction tasks of `table` not final yet (pending, or dispatched to a compactor the
/// scheduler does not yet know is dead).
fn unfinished_compactions(c: &DataCluster, table: &str) -> Vec<u64> {
    c.admin_json(&["tasks", "list", "--table", table])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| {
            t["type"] == "compaction" && (t["state"] == "pending" || t["state"] == "running")
        })
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn every_command_against_a_live_cluster() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &ENV);
    c.start_flusher();
    c.start_compactor();
    let addr = c.admin_addr();

    // ---- help and exit codes ------------------------------------------------------------
    let help = text(&c, &["--help"]);
    assert!(
        help.contains("Exit codes:") && help.contains("3  unreachable"),
        "{help}"
    );
    assert!(text(&c, &["compact", "--help"]).contains("storage-admin compact --force"));

    // ---- status: every kind of service, alive and answering ------------------------------
    let all = BTreeSet::from(["compactor", "flusher", "replayer"].map(String::from));
    let up = wait_until(Duration::from_secs(20), || {
        let o = c.admin(&["status", "--json"]);
        o.code == 0 && kinds_alive(&serde_json::from_str(&o.stdout).unwrap()) == all
    });
    assert!(up, "workers not all alive: {}", text(&c, &["status"]));
    let s = text(&c, &["status", "--service", "data-processor"]);
    assert!(s.starts_with(&format!("scheduler {addr}  version ")), "{s}");
    for kind in ["replayer", "flusher", "compactor"] {
        let line = s
            .lines()
            .find(|l| l.trim_start().starts_with(kind))
            .unwrap_or_else(|| panic!("no {kind} in\n{s}"));
        assert!(
            line.contains(" alive ") && line.contains("  up ") && line.contains("memory"),
            "{line}"
        );
    }
    let j = c.admin_json(&["status", "--service", "data-processor"]);
    assert!(
        !j["scheduler"]["version"].as_str().unwrap().is_empty(),
        "{j}"
    );
    assert!(j["scheduler"]["memory_bytes"].as_u64().unwrap() > 0, "{j}");
    for w in j["workers"].as_array().unwrap() {
        assert!(!w["version"].as_str().unwrap().is_empty(), "{w}");
        assert!(
            w["uptime_seconds"].is_u64() && w["memory_bytes"].as_u64() > Some(0),
            "{w}"
        );
    }
    let only = c.admin_json(&["status", "--service", "flusher"]);
    assert_eq!(kinds_alive(&only), BTreeSet::from(["flusher".to_owned()]));

    // ---- tables ----------------------------------------------------------------------------
    assert!(text(&c, &["tables", "create", "t"]).contains("\nt "));
    assert_eq!(c.admin_json(&["tables", "create", "big"])[0]["name"], "big");
    assert_eq!(
        c.admin_json(&["tables", "create", "gone"])[0]["name"],
        "gone"
    );
    let listed = text(&c, &["tables", "list"]);
    assert!(
        listed.starts_with("table") && listed.contains("\ngone "),
        "{listed}"
    );
    assert!(text(&c, &["tables", "drop", "gone"]).contains("table gone dropped"));
    let names: Vec<String> = c.tables().into_keys().collect();
    assert_eq!(names, ["big", "t"]);

    // ---- put, get, delete, scan ------------------------------------------------------------
    let put = text(&c, &["put", "t", "k1", "v1"]);
    assert!(put.starts_with("put k1 in table t: seq "), "{put}");
    let p2 = c.admin_json(&["put", "t", "k2", "v2"]);
    assert_eq!(
        (p2["op"].as_str(), p2["key"].as_str()),
        (Some("put"), Some("k2"))
    );
    let seq2 = p2["seq"].as_u64().unwrap();
    assert!(seq2 >= 2, "{p2}");
    assert_eq!(
        text(&c, &["put", "t", "6b33", "7633", "--hex"]).trim_end(),
        format!("put k3 in table t: seq {}", seq2 + 1)
    );
    assert_eq!(text(&c, &["get", "t", "k1"]), "v1\n");
    let g = c.admin_json(&["get", "t", "k2"]);
    assert_eq!(
        (g["value"].as_str(), g["seq"].as_u64()),
        (Some("v2"), Some(seq2))
    );
    assert_eq!(text(&c, &["get", "t", "6b33", "--hex"]), "7633\n");
    let d = text(&c, &["delete", "t", "k1"]);
    assert!(d.starts_with("delete k1 in table t: seq "), "{d}");
    assert_eq!(c.admin_json(&["delete", "t", "k3"])["op"], "delete");
    let missing = c.admin(&["get", "t", "k1"]);
    fails(&missing, 1, "get of a deleted key");
    assert_eq!(text(&c, &["scan", "t"]), "k2\tv2\n");
    let sc = c.admin_json(&["scan", "t", "--start", "k", "--end", "k3"]);
    assert_eq!(sc.as_array().unwrap().len(), 1, "{sc}");
    assert_eq!(
        (sc[0]["key"].as_str(), sc[0]["value"].as_str()),
        (Some("k2"), Some("v2"))
    );

    // ---- load (text and JSON), flush -> several L0 files ---------------------------------
    let oracle1 = dir.path().join("oracle1.jsonl");
    let oracle2 = dir.path().join("oracle2.jsonl");
    load(&c, "7", &oracle1, false);
    let f = text(&c, &["flush", "big"]);
    assert!(f.contains("freeze and flush 1 table(s): big"), "{f}");
    load(&c, "8", &oracle2, true);
    let fj = c.admin_json(&["flush", "big"]);
    assert!(fj["message"].as_str().unwrap().contains("big"), "{fj}");
    assert_eq!(fj["task_ids"], serde_json::json!([]), "{fj}");
    // One oracle of both runs (same table, increasing sequence numbers).
    let oracle = dir.path().join("oracle.jsonl");
    let mut both = std::fs::read_to_string(&oracle1).unwrap();
    both.push_str(&std::fs::read_to_string(&oracle2).unwrap());
    std::fs::write(&oracle, both).unwrap();
    let last = DataCluster::last_acked(&oracle, "big");
    c.wait_flushed("big", last, Duration::from_secs(30));
    assert!(c.checkpoint("big") >= last);
    c.check_oracle(&oracle, &["big"]);

    // ---- manifest and levels ----------------------------------------------------------------
    let m = c.admin_json(&["manifest", "--table", "big"]);
    let l0 = m["levels"][0]["files"].as_array().unwrap().clone();
    assert!(l0.len() >= 2, "two loads and two flushes: {m}");
    let mt = text(&c, &["manifest", "--table", "big"]);
    assert!(mt.contains(&format!("\nL0: {} files, ", l0.len())), "{mt}");
    let lv = c.admin_json(&["levels", "--table", "big"]);
    assert_eq!(lv["table"], "big");
    assert_eq!(lv["version"], m["version"]);
    for (l, ml) in lv["levels"]
        .as_array()
        .unwrap()
        .iter()
        .zip(m["levels"].as_array().unwrap())
    {
        let files = ml["files"].as_array().unwrap();
        assert_eq!(l["level"], ml["level"]);
        assert_eq!(l["files"].as_u64().unwrap() as usize, files.len(), "{l}");
        assert_eq!(l["bytes"], ml["bytes"], "{l}");
        let entries: u64 = files.iter().map(|f| f["entries"].as_u64().unwrap()).sum();
        assert_eq!(l["entries"].as_u64(), Some(entries), "{l}");
        if !files.is_empty() {
            let smallest = files.iter().map(|f| f["smallest"].as_str().unwrap()).min();
            assert_eq!(l["smallest"].as_str(), smallest, "{l}");
        }
    }
    // L0 against the write-stop threshold: the same figures as status's forecast.
    let forecast = c.admin_json(&["status"])["forecast"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["table"] == "big")
        .cloned()
        .unwrap();
    let stop = forecast["l0_stop_threshold"].as_u64().unwrap();
    assert_eq!(lv["l0_stop_threshold"].as_u64(), Some(stop), "{lv}");
    let lt = text(&c, &["levels", "--table", "big"]);
    assert!(
        lt.contains("level  files")
            && lt.contains("\nL0 ")
            && lt.contains(&format!(" {}/{stop} files before writes stop", l0.len())),
        "{lt}"
    );

    // ---- plan: both strategies on the L0 files -----------------------------------------------
    for strategy in ["level_based", "size_tiered"] {
        let args = [
            "plan",
            "--table",
            "big",
            "--strategy",
            strategy,
            "--trigger-threshold",
            "2",
        ];
        let p = c.admin_json(&args);
        let plans = p["compactions"].as_array().unwrap();
        assert!(!plans.is_empty(), "{strategy}: {p}");
        assert!(
            plans[0]["estimated_bytes_read"].as_u64().unwrap() > 0,
            "{strategy}: {p}"
        );
        let t = text(&c, &args);
        assert!(
            t.starts_with(&format!("{} compaction(s)", plans.len())),
            "{strategy}: {t}"
        );
    }
    // The configured threshold (30) proposes nothing.
    assert!(text(&c, &["plan", "--table", "big"]).starts_with("0 compaction(s)"));

    // ---- processor queue-status, tasks list/show ---------------------------------------------
    let q = c.admin_json(&["processor", "queue-status"]);
    assert_eq!(q["types"].as_array().unwrap().len(), 5, "{q}");
    let qt = text(&c, &["processor", "queue-status"]);
    assert!(
        qt.starts_with("queue depth ")
            && qt.contains("memtable_flush")
            && qt.contains("compaction"),
        "{qt}"
    );
    let flushes: Vec<Value> = c
        .admin_json(&["tasks", "list", "--table", "big", "--state", "succeeded"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["type"] == "memtable_flush")
        .cloned()
        .collect();
    assert!(flushes.len() >= 2, "{flushes:?}");
    let id = flushes[0]["id"].as_u64().unwrap().to_string();
    let shown = c.admin_json(&["tasks", "show", &id]);
    assert_eq!(
        (shown["state"].as_str(), shown["table"].as_str()),
        (Some("succeeded"), Some("big"))
    );
    assert!(!shown["attempts"].as_array().unwrap().is_empty(), "{shown}");
    let st = text(&c, &["tasks", "show", &id]);
    assert!(
        st.starts_with(&format!("task {id}  memtable_flush  succeeded  table big")),
        "{st}"
    );
    assert!(st.contains("\nattempt 1 on worker "), "{st}");
    let lt = text(&c, &["tasks", "list", "--state", "succeeded"]);
    assert!(
        lt.lines()
            .any(|l| l.trim_start().starts_with(&format!("{id} memtable_flush"))),
        "{lt}"
    );

    // ---- compact without a compactor: cancelled while waiting (exit 1), then a timeout -------
    let old = c.compactors.len() - 1;
    DataCluster::kill(&mut c.compactors[old]);
    let waiting = Command::new(bin("storage-admin"))
        .args([
            "--scheduler",
            &addr,
            "compact",
            "--force",
            "--table",
            "big",
            "--timeout",
            "30",
        ])
        .env_remove("DP_SCHEDULER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut queued = Vec::new();
    assert!(wait_until(Duration::from_secs(10), || {
        queued = unfinished_compactions(&c, "big");
        !queued.is_empty()
    }));
    let id = queued[0].to_string();
    let cancelled = text(&c, &["tasks", "cancel", &id]);
    assert!(
        cancelled.starts_with(&format!("task {id}  compaction  cancelled")),
        "{cancelled}"
    );
    let out = waiting.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!("error: compaction task {id} of table big cancelled")
    );
    assert!(
        stdout.contains(&format!("\ntask {id}  cancelled  table big")),
        "{stdout}"
    );

    let to = c.admin(&[
        "compact",
        "--force",
        "--table",
        "big",
        "--timeout",
        "1",
        "--json",
    ]);
    let line = fails_with_stdout(&to, 1, "compact --timeout 1");
    assert!(
        line.contains("timed out after 1 s waiting for compaction task(s) "),
        "{line}"
    );
    let tj: Value = serde_json::from_str(&to.stdout).unwrap();
    let state = tj["tasks"][0]["state"].as_str().unwrap();
    assert!(state == "pending" || state == "running", "{tj}");
    let tid = tj["task_ids"][0].as_u64().unwrap().to_string();
    assert_eq!(
        c.admin_json(&["tasks", "cancel", &tid])["state"],
        "cancelled"
    );
    // The dead compactor: the scheduler stops hearing it, status says so.
    let dead = wait_until(Duration::from_secs(10), || {
        let s = c.admin_json(&["status", "--service", "compactor"]);
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["alive"] == false && w["reachable"] == false)
    });
    assert!(dead, "{}", text(&c, &["status"]));
    assert!(text(&c, &["status"]).contains(" DEAD "));

    // ---- compact with a compactor: waits, succeeds; then --no-wait ------------------------
    c.start_compactor();
    let done = c.admin(&["compact", "--force", "--table", "big"]);
    assert_eq!(done.code, 0, "{}{}", done.stdout, done.stderr);
    assert!(
        done.stderr.is_empty(),
        "no progress line without a terminal: {}",
        done.stderr
    );
    assert!(
        done.stdout
            .starts_with("1 compaction task(s) queued\ntask "),
        "{}",
        done.stdout
    );
    let summary = format!(
        "  succeeded  table big  attempt 1  L0 {} file(s) (",
        l0.len()
    );
    assert!(
        done.stdout.contains(&summary) && done.stdout.contains(") -> L1  in "),
        "{}",
        done.stdout
    );
    let lv = c.admin_json(&["levels", "--table", "big"]);
    assert_eq!(lv["levels"][0]["files"], 0, "L0 compacted away: {lv}");
    assert!(
        lv["levels"]
            .as_array()
            .unwrap()
            .iter()
            .skip(1)
            .any(|l| l["files"].as_u64() > Some(0)),
        "{lv}"
    );
    c.check_oracle(&oracle, &["big"]);

    let nw = c.admin_json(&[
        "compact",
        "--force",
        "--table",
        "big",
        "--level",
        "1",
        "--start",
        "key",
        "--no-wait",
    ]);
    let nid = nw["task_ids"][0].as_u64().unwrap().to_string();
    assert!(nw.get("tasks").is_none(), "--no-wait does not wait: {nw}");
    let mut shown = Value::Null;
    let finished = wait_until(Duration::from_secs(20), || {
        shown = c.admin_json(&["tasks", "show", &nid]);
        shown["state"] == "succeeded"
    });
    assert!(finished, "{}", text(&c, &["tasks", "show", &nid]));
    assert_eq!(shown["compaction"]["inputs"][0]["level"], 1, "{shown}");
    assert_eq!(shown["compaction"]["output_level"], 2, "{shown}");
    // The key range reaches the scheduler: past the last key, nothing to compact.
    let none = text(
        &c,
        &[
            "compact", "--table", "big", "--level", "2", "--start", "zzz",
        ],
    );
    assert_eq!(none, "nothing to compact\n");
    let every = c.admin_json(&["compact", "--force"]);
    let tasks = every["tasks"].as_array().unwrap();
    assert_eq!(
        tasks.len(),
        every["task_ids"].as_array().unwrap().len(),
        "{every}"
    );
    assert!(
        tasks.iter().all(|t| t["state"] == "succeeded"
            && t["type"] == "compaction"
            && t["compaction"]["input_bytes"].as_u64() > Some(0)),
        "{every}"
    );
    assert!(tasks.iter().any(|t| t["table"] == "big"), "{every}");
    c.check_oracle(&oracle, &["big"]);

    // ---- stats, once a StatisticsUpdate has covered the compacted manifest ------------------
    let per_level = |v: &Value, files: &str| -> Vec<(u64, u64, u64)> {
        v["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                let n = l[files].as_u64().unwrap_or_default();
                (
                    l["level"].as_u64().unwrap(),
                    n,
                    l["bytes"].as_u64().unwrap(),
                )
            })
            .filter(|(_, n, _)| *n > 0)
            .collect()
    };
    let lv = c.admin_json(&["levels", "--table", "big"]);
    let mut stats = Value::Null;
    let fresh = wait_until(Duration::from_secs(20), || {
        let o = c.admin(&["stats", "--table", "big", "--json"]);
        o.code == 0 && {
            stats = serde_json::from_str(&o.stdout).unwrap();
            per_level(&stats, "files") == per_level(&lv, "files")
        }
    });
    assert!(fresh, "statistics never matched the manifest {lv}: {stats}");
    let entries: u64 = lv["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["entries"].as_u64().unwrap())
        .sum();
    let tombstones: u64 = lv["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["tombstones"].as_u64().unwrap())
        .sum();
    assert_eq!(stats["entries"].as_u64(), Some(entries), "{stats}");
    assert_eq!(stats["tombstones"].as_u64(), Some(tombstones), "{stats}");
    let live = admin::oracle::latest(&admin::oracle::read_oracle(&oracle).unwrap())
        .values()
        .filter(|e| e.value.is_some())
        .count() as u64;
    assert_eq!(c.scan_all("big").len() as u64, live);
    assert!(entries >= live, "{entries} entries, {live} live keys");
    assert!(
        stats["estimated_live_keys"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let stt = text(&c, &["stats", "--table", "big"]);
    assert!(
        stt.starts_with(&format!(
            "table big  entries {entries}  tombstones {tombstones}"
        )),
        "{stt}"
    );
    assert!(stt.contains("write amplification"), "{stt}");

    // ---- metrics of each service ------------------------------------------------------------
    metrics_of(&c, "scheduler", c.sched_ports.http, "processor_tasks_total");
    metrics_of(&c, "replayer", c.replayer_ports.http, "wal_replay");
    for (service, procs, series) in [
        ("flusher", &c.flushers, "memtable_flush_bytes_total"),
        ("compactor", &c.compactors, "compaction_bytes_written_total"),
    ] {
        let pid = procs.last().unwrap().as_ref().unwrap().child.id();
        match http_port_of(pid, service) {
            Some(port) => metrics_of(&c, service, port, series),
            None => eprintln!("{service}: HTTP port unknown (no /proc): metrics not checked"),
        }
    }

    // ---- wal replay ---------------------------------------------------------------------------
    let wr = text(&c, &["wal", "replay", "--table", "t"]);
    assert!(wr.contains("(tasks "), "{wr}");
    let from = (c.checkpoint("t") + 1).to_string();
    let wj = c.admin_json(&["wal", "replay", "--table", "t", "--from", &from]);
    assert_eq!(wj["task_ids"].as_array().unwrap().len(), 1, "{wj}");
    // The table is readable through its (re)assigned replayer.
    assert_eq!(text(&c, &["get", "t", "k2", "--wait", "20"]), "v2\n");

    // ---- errors -------------------------------------------------------------------------------
    // Nothing listens at the address: exit 3, one line naming it.
    let nowhere = format!("127.0.0.1:{}", free_port());
    for args in [
        vec!["status"],
        vec!["tables", "list", "--json"],
        vec!["manifest", "--table", "big"],
        vec!["put", "big", "k", "v"],
        vec!["get", "big", "k"],
        vec!["compact", "--force"],
    ] {
        let o = admin_at(&nowhere, &args);
        let line = fails(&o, 3, &format!("{args:?} at {nowhere}"));
        assert!(
            line.contains(&format!("unreachable at {nowhere}")),
            "{args:?}: {line}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: {}", o.stdout);
    }
    // An unknown table: exit 1, one line naming it.
    for args in [
        vec!["get", "nosuch", "k"],
        vec!["put", "nosuch", "k", "v"],
        vec!["delete", "nosuch", "k"],
        vec!["scan", "nosuch"],
        vec!["manifest", "--table", "nosuch"],
        vec!["levels", "--table", "nosuch"],
        vec!["stats", "--table", "nosuch"],
        vec!["compact", "--force", "--table", "nosuch"],
        vec!["plan", "--table", "nosuch"],
        vec!["tables", "drop", "nosuch"],
        vec!["load", "nosuch", "--keys", "10"],
    ] {
        for json in [false, true] {
            let mut a = args.clone();
            if json {
                a.push("--json");
            }
            let o = c.admin(&a);
            let line = fails(&o, 1, &format!("{a:?}"));
            assert!(
                line.contains("nosuch") && line.contains("not found"),
                "{a:?}: {line}"
            );
            assert!(o.stdout.is_empty(), "{a:?}: {}", o.stdout);
        }
    }
    let o = c.admin(&["tasks", "show", "999999"]);
    assert!(fails(&o, 1, "unknown task").contains("999999"));
    // Usage errors: exit 2.
    for args in [
        vec!["frobnicate"],
        vec!["tasks", "show", "seven"],
        vec!["status", "--service", "nosuch"],
        vec!["compact", "--level", "x"],
        vec!["compact", "--force", "--timeout", "-1"],
        vec!["get", "t"],
        vec!["scan", "t", "--start", "zz", "--hex", "--end", "0"],
    ] {
        let o = c.admin(&args);
        assert_eq!(o.code, 2, "{args:?}: {}{}", o.stdout, o.stderr);
        assert!(o.stdout.is_empty(), "{args:?}: {}", o.stdout);
    }
    // The scheduler address from the environment.
    let env = Command::new(bin("storage-admin"))
        .args(["tables", "list", "--json"])
        .env("DP_SCHEDULER", &addr)
        .output()
        .unwrap();
    assert!(
        env.status.success(),
        "{}",
        String::from_utf8_lossy(&env.stderr)
    );
    assert!(String::from_utf8_lossy(&env.stdout).contains("\"big\""));

    eprintln!("admin_live took {:.1} s", started.elapsed().as_secs_f64());
}

/// A failure that still printed a report on stdout (compact's task summaries).
fn fails_with_stdout(o: &Out, code: i32, what: &str) -> String {
    assert_eq!(o.code, code, "{what}: {}{}", o.stdout, o.stderr);
    assert!(!o.stdout.is_empty(), "{what}: no report on stdout");
    let line = o.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{what}: not one line: {line:?}");
    line.to_owned()
}
