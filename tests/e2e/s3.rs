//! The data path on S3: the services and storage-admin run against `moto_server` (PyPI
//! `moto[server]`, installed by `make test-tools`) on 127.0.0.1 with `storage.url:
//! s3://…` — WAL segments created with conditional puts, SSTs uploaded (multipart when
//! large), listed, read by range and deleted by Cleanup — and every acknowledged write is
//! still readable with its newest value.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeSet;
use std::time::Duration;

use tests::data::DataCluster;
use tests::moto::Moto;
use tests::wait_until;

/// Object keys under `prefix` in bucket `dp-e2e` (ListObjectsV2, following continuation).
fn list(m: &Moto, prefix: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut token = String::new();
    loop {
        let mut path = format!("/dp-e2e?list-type=2&prefix={prefix}");
        if !token.is_empty() {
            path.push_str(&format!("&continuation-token={token}"));
        }
        let reply = m.http("GET", &path).unwrap();
        for part in reply.split("<Key>").skip(1) {
            if let Some(k) = part.split("</Key>").next() {
                keys.insert(k.to_owned());
            }
        }
        match reply
            .split("<NextContinuationToken>")
            .nth(1)
            .and_then(|p| p.split("</NextContinuationToken>").next())
        {
            Some(t) => token = t.to_owned(),
            None => return keys,
        }
    }
}

#[test]
fn flush_compaction_and_cleanup_run_on_s3_and_nothing_acknowledged_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let m = Moto::start();
    let endpoint = m.endpoint();
    let aws = [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let mut env: Vec<(&str, &str)> = vec![
        ("DP__STORAGE__URL", "s3://dp-e2e/cluster"),
        ("DP__STORAGE__S3__ENDPOINT", &endpoint),
        ("DP__STORAGE__S3__REGION", "us-east-1"),
        ("DP__STORAGE__S3__ALLOW_HTTP", "true"),
        ("DP__CLEANUP__INTERVAL", "500ms"),
        ("DP__CLEANUP__GRACE_PERIOD", "1s"),
        ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
    ];
    env.extend(aws);
    let mut c = DataCluster::start(dir.path(), &env);
    // storage-admin learns the URL from the scheduler; the endpoint from AWS_* variables.
    c.admin_env = aws
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([
            ("AWS_ENDPOINT".to_owned(), endpoint.clone()),
            ("AWS_ALLOW_HTTP".to_owned(), "true".to_owned()),
        ])
        .collect();
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    c.load("t", 8000, 51, (0.3, 0.1), &oracle);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    // A compaction ran there, and Cleanup left exactly the manifest's SSTs in the bucket.
    let settled = wait_until(Duration::from_secs(60), || {
        let ssts: BTreeSet<u64> = list(&m, "cluster/tables/t/sst/")
            .iter()
            .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".sst")?.parse().ok())
            .collect();
        c.level_counts("t").iter().skip(1).any(|n| *n > 0) && ssts == c.manifest_ids("t")
    });
    assert!(
        settled,
        "levels {:?}, bucket {:?}, manifest {:?}",
        c.level_counts("t"),
        list(&m, "cluster/tables/t/sst/"),
        c.manifest_ids("t")
    );
    // WAL segments the checkpoint covers are gone from the bucket (the newest stays).
    let wal_clean = wait_until(Duration::from_secs(30), || {
        list(&m, "cluster/tables/t/wal/").len() <= 1
    });
    assert!(wal_clean, "{:?}", list(&m, "cluster/tables/t/wal/"));
    c.check_oracle(&oracle, &["t"]);
}
