//! `storage-admin`, the real binary, against a real scheduler process: every command in
//! text and `--json`, and the one-line errors and exit codes scripts rely on.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::process::Command;

use proto::v1 as pb;
use serde_json::Value;
use tests::bin;
use tests::cluster::Sched;
use tests::fake::FakeWorker;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn admin(addr: &str, args: &[&str]) -> Out {
    let out = Command::new(bin("storage-admin"))
        .arg("--scheduler")
        .arg(addr)
        .args(args)
        .env_remove("DP_SCHEDULER")
        .output()
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok_json(addr: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let o = admin(addr, &a);
    assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    serde_json::from_str(&o.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", o.stdout))
}

fn ok_text(addr: &str, args: &[&str]) -> String {
    let o = admin(addr, args);
    assert_eq!(o.code, 0, "{args:?}: {}", o.stderr);
    o.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sched::start(dir.path(), &[], None).await;
    let ports = s.ports;
    let addr = ports.grpc_addr();

    assert!(ok_text(&addr, &["tables", "create", "t"]).contains('t'));
    // Two flushed L0 files through a fake flusher, so the manifest and tasks have content.
    let mut w = FakeWorker::start(pb::WorkerKind::Flusher, &addr, 2).await;
    s.flush_through(
        &mut w,
        "t",
        &[(1, 10, b"a", b"m", 4096), (2, 20, b"c", b"z", 4096)],
    )
    .await;
    let _ = w.heartbeat(&[]).await;

    tokio::task::block_in_place(|| {
        let text = ok_text(&addr, &["status", "--service", "data-processor"]);
        assert!(text.contains("flusher") && text.contains("alive"), "{text}");
        let status = ok_json(&addr, &["status"]);
        let kinds: Vec<&str> = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["kind"].as_str().unwrap())
            .collect();
        assert!(
            kinds.contains(&"flusher") && kinds.contains(&"replayer"),
            "{kinds:?}"
        );
        assert_eq!(status["tables"], 1);
        // Two flushes and no compactor: L0 grows, and the forecast says when it would stall.
        let f = &status["forecast"][0];
        assert_eq!(f["table"], "t");
        assert_eq!(f["l0_files"], 2);
        assert!(f["l0_growth_files_per_sec"].as_f64().unwrap() > 0.0, "{f}");
        let stall = f["seconds_to_stall"].as_f64().unwrap();
        assert!(stall > 0.0 && stall < 36.0 * 60.0, "{f}");
        assert!(text.contains("stall in"), "{text}");

        let http = format!("127.0.0.1:{}", ports.http);
        let text = ok_text(
            &addr,
            &["metrics", "--service", "scheduler", "--http", &http],
        );
        assert!(text.contains("processor_tasks_total"), "{text}");
        let mj = ok_json(
            &addr,
            &["metrics", "--service", "scheduler", "--http", &http],
        );
        let keys: Vec<&String> = mj["metrics"].as_object().unwrap().keys().collect();
        assert!(
            keys.iter().any(|k| k.starts_with("processor_queue_depth")),
            "{keys:?}"
        );
        assert!(!keys.iter().any(|k| k.contains("_bucket")), "{keys:?}");
        let e = admin(&addr, &["metrics", "--service", "nosuch"]);
        assert_eq!(e.code, 2, "{}", e.stderr);

        let q = ok_json(&addr, &["processor", "queue-status"]);
        assert_eq!(q["types"].as_array().unwrap().len(), 5);
        assert!(ok_text(&addr, &["processor", "queue-status"]).contains("memtable_flush"));

        assert_eq!(ok_json(&addr, &["tables", "create", "u"])[0]["name"], "u");
        let names: Vec<String> = ok_json(&addr, &["tables", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["t", "u"]);
        assert!(ok_text(&addr, &["tables", "drop", "u"]).contains("dropped"));

        let m = ok_json(&addr, &["manifest", "--table", "t"]);
        assert_eq!(m["checkpoint"], 20);
        assert_eq!(m["levels"][0]["files"].as_array().unwrap().len(), 2);
        assert!(ok_text(&addr, &["manifest", "--table", "t"]).contains("L0: 2 files"));

        let tasks = ok_json(&addr, &["tasks", "list", "--state", "succeeded"]);
        assert_eq!(tasks.as_array().unwrap().len(), 2);
        let id = tasks[0]["id"].as_u64().unwrap().to_string();
        assert_eq!(
            ok_json(&addr, &["tasks", "show", &id])["state"],
            "succeeded"
        );
        assert!(ok_text(&addr, &["tasks", "list"]).contains("memtable_flush"));

        let c = ok_json(
            &addr,
            // The fake compactor never finishes: do not wait for the task.
            &[
                "compact",
                "--force",
                "--table",
                "t",
                "--level",
                "0",
                "--no-wait",
            ],
        );
        let cid = c["task_ids"][0].as_u64().unwrap().to_string();
        let m = ok_json(&addr, &["manifest", "--table", "t"]);
        assert!(
            m["levels"][0]["files"]
                .as_array()
                .unwrap()
                .iter()
                .all(|f| f["locked"] == true)
        );
        assert_eq!(
            ok_json(&addr, &["tasks", "cancel", &cid])["state"],
            "cancelled"
        );

        let r = ok_json(&addr, &["wal", "replay", "--table", "t"]);
        assert_eq!(r["task_ids"].as_array().unwrap().len(), 1);

        // Errors: one line, an exit code that says which kind.
        let e = admin(&addr, &["manifest", "--table", "nope"]);
        assert_eq!(e.code, 1, "{}", e.stderr);
        assert_eq!(e.stderr.trim().lines().count(), 1, "{}", e.stderr);
        assert!(
            e.stderr.contains("NotFound") && e.stderr.contains("nope"),
            "{}",
            e.stderr
        );
        let e = admin("127.0.0.1:1", &["status"]);
        assert_eq!(e.code, 3, "{}", e.stderr);
        assert_eq!(e.stderr.trim().lines().count(), 1, "{}", e.stderr);
        assert!(e.stderr.contains("unreachable"), "{}", e.stderr);
        let e = admin(&addr, &["tasks", "list", "--state", "sleeping"]);
        assert_eq!(e.code, 2, "{}", e.stderr);
    });
}
