//! The second half of the data path with real processes: compactors merge the flushed L0
//! files, Cleanup deletes what nothing references (after its grace period), statistics
//! describe the data. A compactor SIGKILLed after writing its outputs but before reporting
//! them leaves orphans that are never committed and later removed; Cleanup racing
//! flushes and compactions never deletes a file a reader of the current manifest needs.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use tests::data::{DataCluster, tail};
use tests::wait_until;

const FAST: [(&str, &str); 5] = [
    ("DP__CLEANUP__INTERVAL", "500ms"),
    ("DP__CLEANUP__GRACE_PERIOD", "1s"),
    ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
    ("DP__STATISTICS__INTERVAL", "1s"),
    ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
];

#[test]
fn a_compactor_killed_before_reporting_leaves_orphans_that_are_never_committed_and_are_cleaned_up()
{
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &FAST);
    c.start_flusher();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    c.load("t", 8000, 11, (0.3, 0.1), &oracle);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    let l0 = c.level_counts("t")[0];
    assert!(l0 >= 4, "enough L0 files to trigger a compaction: {l0}");
    let before = c.stored_ssts("t");
    assert_eq!(before, c.manifest_ids("t"), "no orphan yet");

    // This compactor writes its outputs, then stops before reporting them: killed there.
    let doomed = c.start_compactor_with(&[("DP_FAILPOINTS", "compactor.before_complete=pause")]);
    let log = c.compactors[doomed].as_ref().unwrap().log.clone();
    let paused = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .is_ok_and(|l| l.contains("failpoint compactor.before_complete"))
    });
    assert!(paused, "the compactor never reached the failpoint");
    let orphans: BTreeSet<u64> = c.stored_ssts("t").difference(&before).copied().collect();
    assert!(!orphans.is_empty(), "the doomed compaction wrote outputs");
    DataCluster::kill(&mut c.compactors[doomed]);

    // A healthy compactor retries the task (after the dead one's lease expires).
    c.start_compactor();
    let done = wait_until(Duration::from_secs(60), || {
        c.level_counts("t").iter().skip(1).any(|n| *n > 0) && c.idle(&["compaction"])
    });
    assert!(
        done,
        "compaction never committed: levels {:?}; scheduler log:\n{}",
        c.level_counts("t"),
        tail(&c.sched.as_ref().unwrap().log_text(), 30)
    );
    let manifest = c.manifest_ids("t");
    assert!(
        manifest.is_disjoint(&orphans),
        "orphans {orphans:?} committed: {manifest:?}"
    );
    // The data did not change.
    c.check_oracle(&oracle, &["t"]);

    // Cleanup removes the orphans and the compacted-away inputs; the manifest's files stay.
    let clean = wait_until(Duration::from_secs(30), || {
        c.stored_ssts("t") == c.manifest_ids("t")
    });
    assert!(
        clean,
        "storage {:?} vs manifest {:?}",
        c.stored_ssts("t"),
        c.manifest_ids("t")
    );
    assert!(c.stored_ssts("t").is_disjoint(&orphans));
    c.check_oracle(&oracle, &["t"]);

    // Statistics describe the files: exact entry and tombstone counts.
    let files = c.files("t");
    let entries: u64 = files.iter().map(|f| f["entries"].as_u64().unwrap()).sum();
    let tombstones: u64 = files
        .iter()
        .map(|f| f["tombstones"].as_u64().unwrap())
        .sum();
    let stats_ok = wait_until(Duration::from_secs(30), || {
        let o = c.admin(&["stats", "--table", "t", "--json"]);
        serde_json::from_str::<serde_json::Value>(&o.stdout).is_ok_and(|v| {
            v["entries"].as_u64() == Some(entries) && v["tombstones"].as_u64() == Some(tombstones)
        })
    });
    assert!(
        stats_ok,
        "statistics never matched the manifest ({entries} entries, {tombstones} tombstones): {}",
        c.admin(&["stats", "--table", "t"]).stdout
    );
    let s = c.admin_json(&["stats", "--table", "t"]);
    // Flushes wrote the data once, the compaction once more (minus what it dropped).
    let wa = s["write_amplification"].as_f64().unwrap();
    assert!(wa > 1.0 && wa < 3.0, "write amplification {wa}");
    let levels: u64 = s["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["files"].as_u64().unwrap())
        .sum();
    assert_eq!(levels as usize, files.len());
}

#[test]
fn cleanup_racing_flushes_and_compactions_never_deletes_a_file_the_manifest_needs() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__CLEANUP__INTERVAL", "200ms"),
            ("DP__CLEANUP__GRACE_PERIOD", "1s"),
            ("DP__SCHEDULER__PICK_INTERVAL", "200ms"),
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "128KB"),
        ],
    );
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    // A paced load: flushes and compactions keep committing for several seconds.
    let writer = c.spawn_admin(&[
        "load",
        "t",
        "--keys",
        "30000",
        "--value-size",
        "100",
        "--rate",
        "4000",
        "--overwrite-ratio",
        "0.5",
        "--delete-ratio",
        "0.1",
        "--seed",
        "12",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    // Meanwhile, read like a reader: fetch the manifest, then every file it names must be
    // there (the grace period covers a reader holding the previous version).
    let started = Instant::now();
    let mut checks = 0;
    let mut versions = BTreeSet::new();
    while started.elapsed() < Duration::from_secs(8) {
        let m = c.admin_json(&["manifest", "--table", "t"]);
        versions.insert(m["version"].as_u64().unwrap());
        let ids: BTreeSet<u64> = m["levels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["files"].as_array().cloned().unwrap_or_default())
            .filter_map(|f| f["id"].as_u64())
            .collect();
        let stored = c.stored_ssts("t");
        let missing: Vec<&u64> = ids.difference(&stored).collect();
        assert!(
            missing.is_empty(),
            "manifest v{} files missing from storage: {missing:?}",
            m["version"]
        );
        checks += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = writer.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(checks > 20, "{checks}");
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    let idle = wait_until(Duration::from_secs(60), || c.idle(&["compaction"]));
    assert!(idle, "compactions never settled");
    // Compactions really ran during the race, and cleanup really deleted things.
    let compacted = c.admin_json(&["tasks", "list", "--state", "succeeded"]);
    let kinds: Vec<&str> = compacted
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["type"].as_str())
        .collect();
    assert!(kinds.contains(&"compaction"), "{kinds:?}");
    assert!(kinds.contains(&"cleanup"), "{kinds:?}");
    assert!(versions.len() > 5, "the manifest moved: {versions:?}");
    // Everything unreferenced is gone after the grace period; nothing referenced is.
    let clean = wait_until(Duration::from_secs(30), || {
        c.stored_ssts("t") == c.manifest_ids("t")
    });
    assert!(
        clean,
        "storage {:?} vs manifest {:?}",
        c.stored_ssts("t"),
        c.manifest_ids("t")
    );
    // WAL segments the checkpoint covers are gone too (the newest stays).
    let wal = dir.path().join("storage/tables/t/wal");
    let wal_clean = wait_until(Duration::from_secs(30), || {
        std::fs::read_dir(&wal).map(|d| d.count()).unwrap_or(0) <= 1
    });
    assert!(wal_clean, "covered WAL segments were not cleaned up");
    c.check_oracle(&oracle, &["t"]);
}

#[test]
fn size_tiered_compaction_runs_for_real_and_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = FAST.to_vec();
    env.push(("DP__COMPACTION__STRATEGY", "size_tiered"));
    let mut c = DataCluster::start(dir.path(), &env);
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    c.load("t", 10000, 13, (0.3, 0.1), &oracle);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    let compacted = wait_until(Duration::from_secs(60), || {
        let o = c.admin(&["tasks", "list", "--state", "succeeded", "--json"]);
        o.stdout.contains("\"compaction\"") && c.idle(&["compaction"])
    });
    assert!(compacted, "no size-tiered compaction ran");
    c.check_oracle(&oracle, &["t"]);
    let clean = wait_until(Duration::from_secs(30), || {
        c.stored_ssts("t") == c.manifest_ids("t")
    });
    assert!(clean, "inputs of the compactions were not cleaned up");
}

#[test]
fn column_statistics_describe_the_live_rows_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &FAST);
    c.start_flusher();
    c.start_compactor();
    let o = c.admin(&[
        "tables",
        "create",
        "people",
        "--column",
        "age:int",
        "--column",
        "name:string",
        "--column",
        "vip:bool",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let bad = c.admin(&["tables", "create", "x", "--column", "age:decimal"]);
    assert_eq!(
        bad.code, 2,
        "a bad column type is a usage error: {}",
        bad.stderr
    );
    // 60 rows; every 10th has no age; names repeat every 20; then overwrites and deletes.
    let row = |i: u32, age: Option<u32>| {
        let mut v =
            serde_json::json!({ "name": format!("n{:02}", i % 20), "vip": i.is_multiple_of(3) });
        if let Some(a) = age {
            v["age"] = a.into();
        }
        v.to_string()
    };
    let mut live: std::collections::BTreeMap<String, String> = Default::default();
    for i in 0..60u32 {
        let age = (!i.is_multiple_of(10)).then_some(20 + i);
        let (k, v) = (format!("p{i:03}"), row(i, age));
        assert_eq!(c.admin(&["put", "people", &k, &v]).code, 0);
        live.insert(k, v);
    }
    // The oldest person is deleted; one row gets a new, larger age.
    assert_eq!(c.admin(&["delete", "people", "p059"]).code, 0);
    live.remove("p059");
    let v = row(5, Some(120));
    assert_eq!(c.admin(&["put", "people", "p005", &v]).code, 0);
    live.insert("p005".into(), v);
    assert_eq!(c.admin(&["flush", "people"]).code, 0);
    c.wait_flushed("people", 62, Duration::from_secs(30));
    let ages: Vec<i64> = live
        .values()
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).unwrap()["age"].as_i64())
        .collect();
    let nulls = (live.len() - ages.len()) as u64;
    let (min, max) = (ages.iter().min().unwrap(), ages.iter().max().unwrap());
    let ok = wait_until(Duration::from_secs(30), || {
        let o = c.admin(&["stats", "--table", "people", "--json"]);
        serde_json::from_str::<serde_json::Value>(&o.stdout).is_ok_and(|s| {
            let age = s["columns"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["name"] == "age").cloned())
                .unwrap_or_default();
            age["null_count"].as_u64() == Some(nulls)
                && age["min"].as_str() == Some(min.to_string().as_str())
                && age["max"].as_str() == Some(max.to_string().as_str())
        })
    });
    let s = c.admin_json(&["stats", "--table", "people"]);
    assert!(
        ok,
        "age statistics: want nulls {nulls}, min {min}, max {max}; got {s}"
    );
    let col = |n: &str| {
        s["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .cloned()
            .unwrap()
    };
    assert_eq!(col("name")["null_count"], 0);
    assert_eq!(col("name")["distinct_estimate"], 20, "{s}");
    assert_eq!(col("vip")["min"], "false");
    assert_eq!(col("vip")["max"], "true");
    assert_eq!(col("vip")["distinct_estimate"], 2);
    assert_eq!(col("name")["min"], "\"n00\"");
}

/// The stall forecast of `table` from `storage-admin status --json`.
fn forecast(c: &DataCluster, table: &str) -> Option<serde_json::Value> {
    let o = c.admin(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).ok()?;
    v["forecast"]
        .as_array()?
        .iter()
        .find(|f| f["table"] == table)
        .cloned()
}

#[test]
fn the_stall_forecast_falls_without_compactors_and_recovers_when_they_return() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(
        dir.path(),
        &[
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "128KB"),
            ("DP__COMPACTION__L0_STOP_THRESHOLD", "200"),
            ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
        ],
    );
    c.start_flusher();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    // No compactor: L0 only grows while the load runs.
    let writer = c.spawn_admin(&[
        "load",
        "t",
        "--keys",
        "24000",
        "--value-size",
        "100",
        "--rate",
        "4000",
        "--seed",
        "21",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    let mut samples = Vec::new();
    let mut writer = writer;
    while writer.try_wait().unwrap().is_none() {
        if let Some(f) = forecast(&c, "t") {
            samples.push(f);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(writer.wait().unwrap().success());
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    let stalls: Vec<f64> = samples
        .iter()
        .filter_map(|f| f["seconds_to_stall"].as_f64())
        .filter(|s| *s > 0.0)
        .collect();
    assert!(stalls.len() >= 3, "L0 grew toward a stall: {samples:?}");
    let (first, last) = (stalls[0], stalls[stalls.len() - 1]);
    assert!(last < first, "the forecast falls as L0 grows: {stalls:?}");
    let grown = forecast(&c, "t").unwrap();
    let debt = grown["debt_bytes"].as_u64().unwrap();
    assert!(debt > 0, "compaction owes bytes: {grown}");
    assert!(grown["l0_files"].as_u64().unwrap() >= 8, "{grown}");

    // Compactors return: the debt drains and the forecast recovers.
    c.start_compactor();
    let recovered = wait_until(Duration::from_secs(60), || {
        forecast(&c, "t").is_some_and(|f| {
            f["debt_bytes"].as_u64().unwrap_or(u64::MAX) < debt / 4
                && f["seconds_to_stall"]
                    .as_f64()
                    .is_some_and(|s| s < 0.0 || s > 2.0 * first)
                && f["drain_bytes_per_sec"].as_f64().unwrap_or(0.0) > 0.0
        })
    });
    assert!(recovered, "no recovery: {:?}", forecast(&c, "t"));
    c.check_oracle(&oracle, &["t"]);
}

/// Metric-looking identifiers of a PromQL expression (not functions, keywords or labels).
fn metric_names(expr: &str) -> Vec<String> {
    const NOT_METRICS: [&str; 8] = [
        "histogram_quantile",
        "label_replace",
        "count_over_time",
        "avg_over_time",
        "max_over_time",
        "min_over_time",
        "sum_over_time",
        "group_left",
    ];
    // Drop label matchers ({...}) and by/without clauses first.
    let mut cleaned = String::new();
    let mut depth = 0;
    for ch in expr.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth == 0 => cleaned.push(ch),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let words: Vec<&str> = cleaned
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    let mut skip_labels = false;
    for w in words {
        if w == "by" || w == "without" {
            skip_labels = true;
            continue;
        }
        if w.is_empty() {
            continue;
        }
        if skip_labels {
            // The parenthesised label list after by/without.
            skip_labels = !w.contains('_') && w.chars().all(|c| c.is_ascii_lowercase());
            if skip_labels {
                continue;
            }
        }
        if w.contains('_') && !NOT_METRICS.contains(&w) && !w.chars().all(|c| c.is_ascii_digit()) {
            out.push(w.to_owned());
        }
    }
    out
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported_by_a_running_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &FAST);
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    c.load("t", 8000, 31, (0.3, 0.1), &oracle);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    // Let a compaction, a cleanup and a statistics update run, so every series exists.
    let busy = wait_until(Duration::from_secs(60), || {
        let o = c.admin(&["tasks", "list", "--state", "succeeded", "--json"]);
        ["\"compaction\"", "\"cleanup\"", "\"statistics_update\""]
            .iter()
            .all(|k| o.stdout.contains(k))
    });
    assert!(busy, "{}", c.admin(&["tasks", "list"]).stdout);
    std::thread::sleep(Duration::from_secs(2));
    let mut ports = vec![c.sched_ports.http, c.replayer_ports.http];
    ports.extend(c.worker_ports.iter().map(|p| p.http));
    let mut exported = BTreeSet::new();
    for port in ports {
        let (code, body) = tests::http_get(port, "/metrics").unwrap();
        assert_eq!(code, 200);
        for line in body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            exported.insert(name.to_owned());
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/dashboards/data-processor.json"))
            .unwrap(),
    )
    .unwrap();
    let mut queries: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let alerts = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    queries.extend(
        alerts
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("expr:"))
            .map(|e| e.trim().to_owned()),
    );
    assert!(queries.len() > 15, "{queries:?}");
    // The extractor finds the names (and only names).
    let named: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    for n in [
        "processor_tasks_total",
        "replayer_replay_lag",
        "cleanup_files_deleted_total",
        "table_write_amplification",
    ] {
        assert!(named.contains(n), "{n} not extracted from {named:?}");
    }
    assert!(
        !named
            .iter()
            .any(|n| n == "type" || n == "table" || n == "kind"),
        "{named:?}"
    );
    let mut unknown = Vec::new();
    for q in &queries {
        for name in metric_names(q) {
            let found = exported.contains(&name)
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| exported.contains(&format!("{name}{s}")));
            if !found {
                unknown.push(format!("{name} (in {q})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "queried but exported by no service: {unknown:#?}\nexported: {exported:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_plans_show_exactly_what_the_pickers_choose_on_a_real_manifest() {
    use lsm::compaction::{PickerInput, pick};
    use lsm::manifest::{FileMeta, Version, VersionEdit};
    use proto::v1 as pb;
    let dir = tempfile::tempdir().unwrap();
    // No compactor, and a trigger the scheduler's own picker never reaches: the flushed L0
    // files stay, unlocked, for the plans to look at.
    let mut c = tokio::task::block_in_place(|| {
        let mut c = DataCluster::start(
            dir.path(),
            &[
                ("DP__COMPACTION__TRIGGER_THRESHOLD", "30"),
                ("DP__COMPACTION__L0_STOP_THRESHOLD", "200"),
            ],
        );
        c.start_flusher();
        c.create_tables(&["t"]);
        let oracle = dir.path().join("oracle.jsonl");
        c.load("t", 8000, 41, (0.3, 0.1), &oracle);
        c.wait_flushed(
            "t",
            DataCluster::last_acked(&oracle, "t"),
            Duration::from_secs(60),
        );
        c
    });
    let mut admin = pb::admin_client::AdminClient::connect(format!("http://{}", c.admin_addr()))
        .await
        .unwrap();
    let m = admin
        .get_manifest(pb::GetManifestRequest { table: "t".into() })
        .await
        .unwrap()
        .into_inner();
    let edit = VersionEdit {
        removed: vec![],
        added: m
            .levels
            .iter()
            .flat_map(|l| {
                l.files.iter().map(move |f| {
                    (
                        l.level,
                        FileMeta {
                            id: f.file_id,
                            size: f.size_bytes,
                            smallest: bytes::Bytes::from(f.smallest_key.clone()),
                            largest: bytes::Bytes::from(f.largest_key.clone()),
                            smallest_seq: f.smallest_seq,
                            largest_seq: f.largest_seq,
                            entries: f.entry_count,
                            tombstones: f.tombstone_count,
                        },
                    )
                })
            })
            .collect(),
    };
    let mut config = runtime::Config::default();
    let version = Version::new(config.compaction.level_based.num_levels as usize)
        .apply(&edit)
        .unwrap();
    assert!(
        version.levels[0].len() >= 4,
        "{:?}",
        version.levels[0].len()
    );
    config.compaction.trigger_threshold = 4;
    for (name, kind) in [
        ("level_based", runtime::config::Strategy::LevelBased),
        ("size_tiered", runtime::config::Strategy::SizeTiered),
    ] {
        let strategy = scheduler::strategy_with(kind, &config.compaction);
        let want = pick(
            &strategy,
            &PickerInput {
                version: &version,
                locked: &Default::default(),
            },
        );
        let want: Vec<(Vec<u64>, u32)> = want
            .plans
            .iter()
            .map(|p| (p.input_ids(), p.output_level))
            .collect();
        assert!(!want.is_empty(), "{name}: the picker proposes something");
        let got = tokio::task::block_in_place(|| {
            c.admin_json(&[
                "plan",
                "--table",
                "t",
                "--strategy",
                name,
                "--trigger-threshold",
                "4",
            ])
        });
        let got: Vec<(Vec<u64>, u32)> = got["compactions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let mut ids: Vec<u64> = p["inputs"]
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
                ids.sort_unstable();
                (ids, p["output_level"].as_u64().unwrap() as u32)
            })
            .collect();
        let mut want = want;
        for w in &mut want {
            w.0.sort_unstable();
        }
        assert_eq!(
            got, want,
            "{name}: the plan shows exactly the picker's compactions"
        );
    }
    // Planning queued and dispatched nothing.
    let tasks = tokio::task::block_in_place(|| c.admin_json(&["tasks", "list"]));
    assert!(
        !tasks
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["type"] == "compaction"),
        "{tasks}"
    );
    let _ = &mut c;
}

#[test]
fn a_dropped_table_name_is_reusable_only_once_cleanup_removed_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &FAST);
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    for (k, v) in [("k1", "old"), ("k2", "old")] {
        assert_eq!(c.admin(&["put", "t", k, v]).code, 0);
    }
    assert_eq!(c.admin(&["flush", "t"]).code, 0);
    c.wait_flushed("t", 2, Duration::from_secs(30));
    assert_eq!(c.admin(&["tables", "drop", "t"]).code, 0);
    // At once: the old WAL and SSTs are still there, a new "t" would inherit them.
    let o = c.admin(&["tables", "create", "t"]);
    assert_eq!(o.code, 1, "{}", o.stdout);
    assert!(
        o.stderr.contains("dropped table") && o.stderr.contains("grace_period"),
        "one clear line: {}",
        o.stderr
    );
    // Cleanup removes everything of the dropped table (its newest WAL segment too).
    let created = wait_until(Duration::from_secs(30), || {
        c.admin(&["tables", "create", "t"]).code == 0
    });
    assert!(created, "the name never became free");
    assert!(c.stored_ssts("t").is_empty());
    let wal = dir.path().join("storage/tables/t/wal");
    assert_eq!(std::fs::read_dir(&wal).map(|d| d.count()).unwrap_or(0), 0);
    // The new table starts empty: nothing of the old one is readable.
    let o = c.admin(&["get", "t", "k1"]);
    assert_eq!(o.code, 1, "the old k1 must not come back: {}", o.stdout);
    assert_eq!(c.admin(&["put", "t", "k1", "new"]).code, 0);
    let o = c.admin(&["get", "t", "k1"]);
    assert_eq!(o.stdout.trim_end(), "new", "{}", o.stderr);
}
