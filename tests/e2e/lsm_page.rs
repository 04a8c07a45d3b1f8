//! The LSM picture on the scheduler's HTTP port, rendered by headless Chromium: the page
//! draws every file of the table, marks the ones a running compaction holds, and lists the
//! queue and workers. Leaves a screenshot (`DP_LSM_SCREENSHOT=path` keeps a copy).

#![expect(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

use proto::v1 as pb;
use tests::cluster::Sched;
use tests::fake::FakeWorker;
use tests::http_get;

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned())
}

fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--virtual-time-budget=4000",
        "--window-size=1100,700",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lsm_page_draws_files_and_running_compactions() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sched::start(dir.path(), &[], None).await;
    let ports = s.ports;
    s.create_table("orders").await;
    let mut w = FakeWorker::start(pb::WorkerKind::Flusher, &ports.grpc_addr(), 2).await;
    s.flush_through(
        &mut w,
        "orders",
        &[
            (1, 10, b"a000", b"m999", 4096),
            (2, 20, b"c000", b"t999", 8192),
            (3, 30, b"k000", b"z999", 12288),
        ],
    )
    .await;
    let mut admin = s.admin.clone();
    // A compaction holds the L0 files (no compactor is registered, so it stays queued).
    admin
        .trigger_compaction(pb::TriggerCompactionRequest {
            table: "orders".into(),
            level: Some(0),
            range: None,
            force: true,
        })
        .await
        .unwrap();

    let (code, body) = tokio::task::block_in_place(|| http_get(ports.http, "/lsm.json")).unwrap();
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let files = v["tables"][0]["levels"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert!(files.iter().all(|f| f["locked"] == true), "{files:?}");

    let page = format!("http://127.0.0.1:{}/lsm", ports.http);
    let profile = dir.path().join("chromium");
    let dom = Command::new(chromium())
        .args(chromium_args(&profile))
        .arg("--dump-dom")
        .arg(&page)
        .output()
        .expect("chromium not found: run `make test-tools` (apt-get install chromium)");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert_eq!(
        dom.matches("class=\"file locked\"").count(),
        3,
        "three locked files drawn:\n{dom}"
    );
    assert!(
        dom.contains("orders") && dom.contains("memtable_flush") && dom.contains("flusher"),
        "{dom}"
    );

    let png = dir.path().join("lsm.png");
    let out = Command::new(chromium())
        .args(chromium_args(&profile))
        .arg(format!("--screenshot={}", png.display()))
        .arg(&page)
        .output()
        .unwrap();
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
    assert!(
        bytes.len() > 5_000,
        "screenshot suspiciously small: {} bytes",
        bytes.len()
    );
    if let Ok(keep) = std::env::var("DP_LSM_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
