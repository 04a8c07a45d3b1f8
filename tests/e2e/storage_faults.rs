//! Shared storage misbehaving under the real processes: (1) every service's storage fails
//! or stalls a seeded fraction of its operations (503s, timeouts, connection resets after
//! a write was applied, slow answers) while a load runs, flushes and compactions commit,
//! and a replayer restarts — no acknowledged write is lost and every file the manifest
//! references exists; (2) the storage volume is full: flushes are refused with a disk-space
//! error before writing anything, nothing is lost, and the work completes once space
//! returns.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tests::data::{DataCluster, tail};
use tests::{http_get, wait_until};

/// Sum of `storage_faults_injected_total` on `http_port`'s /metrics, for the given kinds.
fn injected(http_port: u16, kinds: &[&str]) -> u64 {
    let Ok((200, body)) = http_get(http_port, "/metrics") else {
        return 0;
    };
    body.lines()
        .filter(|l| l.starts_with("storage_faults_injected_total{"))
        .filter(|l| kinds.iter().any(|k| l.contains(&format!("kind=\"{k}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

const FAULTS: [(&str, &str); 10] = [
    ("DP__STORAGE__FAULTS__SEED", "20261207"),
    ("DP__STORAGE__FAULTS__ERROR_RATE", "0.03"),
    ("DP__STORAGE__FAULTS__TIMEOUT_RATE", "0.01"),
    ("DP__STORAGE__FAULTS__RESET_RATE", "0.02"),
    ("DP__STORAGE__FAULTS__SLOW_RATE", "0.05"),
    ("DP__STORAGE__FAULTS__DELAY", "100ms"),
    ("DP__CLEANUP__INTERVAL", "500ms"),
    ("DP__CLEANUP__GRACE_PERIOD", "1s"),
    ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
    ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
];

#[test]
fn failing_and_slow_storage_loses_nothing_and_the_work_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(dir.path(), &FAULTS);
    c.start_flusher();
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t", "u"]);
    let oracle = dir.path().join("oracle.jsonl");
    // The load generator writes the WAL without faults: it stands for the engine's
    // writers, whose acknowledgements the oracle records.
    c.load("t", 6000, 1, (0.3, 0.1), &oracle);
    c.load("u", 3000, 2, (0.3, 0.1), &oracle);

    // The replayer restarts mid-way and replays the WAL through the faulty storage.
    DataCluster::kill(&mut c.replayer);
    c.start_replayer();
    c.load("t", 3000, 3, (0.3, 0.1), &oracle);

    for t in ["t", "u"] {
        let acked = DataCluster::last_acked(&oracle, t);
        if !wait_until(Duration::from_secs(180), || c.checkpoint(t) >= acked) {
            let logs: Vec<String> = c
                .flushers
                .iter()
                .chain(c.compactors.iter())
                .flatten()
                .map(|p| tail(&p.log_text(), 15))
                .collect();
            panic!(
                "table {t} never flushed through seq {acked} (checkpoint {}): tasks:\n{}\nworker logs:\n{}\nreplayer log:\n{}",
                c.checkpoint(t),
                tail(&c.admin(&["tasks", "list"]).stdout, 30),
                logs.join("\n---\n"),
                tail(&c.replayer.as_ref().unwrap().log_text(), 30)
            );
        }
    }
    assert!(
        wait_until(Duration::from_secs(180), || c
            .idle(&["compaction", "memtable_flush"])),
        "flushes and compactions settle despite the faults: {}\n{}\nflusher log: {}",
        c.admin(&["processor", "queue-status"]).stdout,
        serde_json::from_str::<serde_json::Value>(&c.admin(&["tasks", "list", "--json"]).stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["state"] == "pending")
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
        c.sched
            .as_ref()
            .unwrap()
            .log_text()
            .lines()
            .filter(|l| l.contains("ERROR") || l.contains("panick") || l.contains("task_id=12"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let checked = c.check_oracle(&oracle, &["t", "u"]);
    assert!(checked > 5000, "{checked} keys checked");
    for t in ["t", "u"] {
        let stored = c.stored_ssts(t);
        let missing: Vec<u64> = c.manifest_ids(t).difference(&stored).copied().collect();
        assert!(
            missing.is_empty(),
            "{t}: referenced files missing: {missing:?}"
        );
    }
    assert!(
        c.level_counts("t").iter().skip(1).sum::<usize>() > 0,
        "compactions committed: {:?}",
        c.level_counts("t")
    );

    // The faults really happened, in every kind of service.
    let mut ports = vec![
        ("scheduler", c.sched_ports.http),
        ("replayer", c.replayer_ports.http),
    ];
    ports.extend(c.worker_ports.iter().map(|p| ("worker", p.http)));
    let failing = ["error", "timeout", "reset"];
    let mut total = 0;
    for (name, port) in &ports {
        let n = injected(*port, &failing);
        tests::report!("{name} (:{port}): {n} failed storage operations injected");
        total += n;
    }
    let replayer = injected(c.replayer_ports.http, &failing);
    let workers: u64 = c
        .worker_ports
        .iter()
        .map(|p| injected(p.http, &failing))
        .sum();
    assert!(replayer > 0, "the replayer's reads failed at times");
    assert!(
        workers >= 10,
        "flushers and compactor saw failures: {workers}"
    );
    assert!(
        injected(c.worker_ports[0].http, &["slow"]) + injected(c.worker_ports[1].http, &["slow"])
            > 0
    );
    tests::report!(
        "storage faults: {total} failed operations injected, 0 acknowledged writes lost"
    );
}

/// A tmpfs of `size` at `dir` (needs root, as CI has).
fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mounting a tmpfs at {} failed (this test needs root): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_full_disk_refuses_flushes_loses_nothing_and_work_resumes_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    mount_tmpfs(&storage, "48m");
    let _unmount = Unmount(storage.clone());

    // Memtables large enough to hold the whole load: the replayer applies all of it
    // while no flush can happen.
    let mut c = DataCluster::start(
        dir.path(),
        &[("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "8MB")],
    );
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    // Written while no flusher runs: the data sits in the WAL and the replayer's memtables.
    c.load("t", 6000, 7, (0.3, 0.1), &oracle);
    let acked = DataCluster::last_acked(&oracle, "t");

    // Fill the volume, leaving less than one memtable's SST needs.
    let filler = storage.join("filler");
    let keep = 64 * 1024;
    let fill = free_bytes(&storage).saturating_sub(keep);
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    assert!(free_bytes(&storage) < 256 * 1024);

    let f = c.start_flusher();
    let log = c.flushers[f].as_ref().unwrap().log.clone();
    let refused = wait_until(Duration::from_secs(60), || {
        let o = c.admin(&["tasks", "list", "--json"]);
        o.code == 0 && o.stdout.contains("disk space")
    });
    assert!(
        refused,
        "a flush is refused for lack of disk space: {}\nflusher log: {}",
        c.admin(&["tasks", "list"]).stdout,
        tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20)
    );
    assert_eq!(
        c.checkpoint("t"),
        0,
        "nothing flushed, the checkpoint stays"
    );
    assert!(c.manifest_ids("t").is_empty(), "no file committed");
    let stray: Vec<_> = walk(&storage)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .collect();
    assert!(
        stray.is_empty(),
        "nothing written before refusing: {stray:?}"
    );
    // Reads still see every acknowledged write (from the memtables).
    c.check_oracle(&oracle, &["t"]);

    // Space returns: the refused flushes are retried and complete.
    std::fs::remove_file(&filler).unwrap();
    c.wait_flushed("t", acked, Duration::from_secs(120));
    assert!(!c.manifest_ids("t").is_empty());
    let checked = c.check_oracle(&oracle, &["t"]);
    assert!(checked > 3000, "{checked}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
