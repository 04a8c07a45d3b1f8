//! The whole suite at a tiny scale through the real binary: every workload runs on both
//! engines (P6 and P7 on ours only), and what a user of the report relies on holds — finite
//! positive figures, the same entries on both sides, write and space amplification at least
//! 1, and a JSON document that parses and describes the machine.
//!
//! Small enough for a debug build (about 35k entries per workload, a 4 MiB WAL).

use std::process::Command;

use serde_json::Value;

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn every_workload_reports_figures_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("results.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dp-bench"))
        .args([
            "suite",
            "--preset",
            "tiny",
            "--scale",
            "0.0005",
            "--p5-wal-mib",
            "4",
        ])
        .arg("--dir")
        .arg(dir.path())
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run dp-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dp-bench failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // The table names every workload and its ratios.
    for w in ["p1", "p2", "p2x2", "p3", "p4", "p5", "p6", "p7"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{w} "))),
            "no row for {w} in:\n{stdout}"
        );
    }

    let doc: Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json parses");
    let machine = &doc["machine"];
    for field in ["cpu_model", "kernel", "rustc", "git_commit", "date_utc"] {
        assert!(
            machine[field].as_str().is_some_and(|s| !s.is_empty()),
            "machine.{field} missing: {machine}"
        );
    }
    assert!(machine["cores"].as_u64().is_some_and(|c| c > 0));
    assert!(machine["memory_bytes"].as_u64().is_some_and(|m| m > 0));
    assert_eq!(num(&doc["settings"]["scale"]), 0.0005);

    let workloads = doc["workloads"].as_array().expect("workloads");
    assert_eq!(workloads.len(), 8, "every workload ran");
    for w in workloads {
        let id = w["id"].as_str().expect("id");
        let engines: &[&str] = if matches!(id, "p6" | "p7") {
            &["ours"]
        } else {
            &["ours", "rocksdb"]
        };
        let runs = w["runs"].as_array().expect("runs");
        assert_eq!(runs.len(), engines.len(), "{id}: one run per engine");
        for e in engines {
            let m = &w["medians"][*e];
            assert!(num(&m["cpu_s"]) >= 0.0, "{id} {e}: cpu_s");
            assert!(num(&m["peak_rss_bytes"]) > 0.0, "{id} {e}: peak rss");
            assert!(num(&m["entries"]) > 0.0, "{id} {e}: entries");
        }
        for row in w["rows"].as_array().expect("rows") {
            let metric = row["key"].as_str().expect("key");
            // CPU times come in 10 ms ticks: a tiny run may take less than one.
            let positive =
                |x: f64| x.is_finite() && (x > 0.0 || (metric.contains("cpu") && x == 0.0));
            let ours = num(&row["ours"]);
            assert!(positive(ours), "{id} {metric}: ours = {ours}");
            if engines.len() == 2 {
                let theirs = num(&row["rocksdb"]);
                assert!(positive(theirs), "{id} {metric}: rocksdb = {theirs}");
                if !metric.contains("cpu") {
                    assert!(num(&row["ratio"]).is_finite(), "{id} {metric}: ratio");
                }
            }
        }
        if engines.len() == 2 {
            assert_eq!(w["same_entries"], Value::Bool(true), "{id}: same entries");
        }
        if matches!(id, "p3" | "p4") {
            for e in engines {
                let m = &w["medians"][*e];
                assert!(num(&m["write_amp"]) >= 1.0, "{id} {e}: write amp");
                assert!(num(&m["space_amp"]) >= 1.0, "{id} {e}: space amp");
            }
        }
    }
}
