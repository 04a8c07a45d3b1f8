//! The data commands end to end against fakes: the real `storage-admin` binary, a fake
//! scheduler Admin API (tables, manifest, storage URL) and a fake replayer (memtable Get and
//! paged Scan) on port 0, and real WAL segments and SSTs in a temporary directory.
//!
//! The fakes let each test set up exactly the case it checks (a memtable version older
//! than the SST's, a replayer that does not hold the table yet, a tiny Scan page size),
//! which real services would produce only by timing.

use std::collections::BTreeMap;
use std::process::Output;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use admin::oracle::read_oracle;
use lsm::ValueKind;
use proto::v1 as pb;
use storage::Storage;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct AdminState {
    storage_url: String,
    tables: Vec<pb::TableInfo>,
    manifests: BTreeMap<String, pb::Manifest>,
}

#[derive(Clone, Default)]
struct FakeAdmin(Arc<Mutex<AdminState>>);

#[tonic::async_trait]
impl pb::admin_server::Admin for FakeAdmin {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let s = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        Ok(Response::new(pb::GetStatusResponse {
            storage_url: s.storage_url.clone(),
            ..Default::default()
        }))
    }

    async fn list_tables(
        &self,
        _: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let s = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        Ok(Response::new(pb::ListTablesResponse {
            tables: s.tables.clone(),
        }))
    }

    async fn get_manifest(
        &self,
        r: Request<pb::GetManifestRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let s = self.0.lock().map_err(|_| Status::internal("poisoned"))?;
        let table = r.into_inner().table;
        let m = s.manifests.get(&table).cloned().unwrap_or(pb::Manifest {
            table,
            ..Default::default()
        });
        Ok(Response::new(m))
    }
}

#[derive(Default)]
struct ReplayerState {
    /// Newest unflushed version per key, per table.
    memtables: BTreeMap<String, BTreeMap<Vec<u8>, pb::KeyValue>>,
    applied_seq: u64,
    /// Scan pages hold at most this many entries, whatever the request says.
    page_cap: usize,
}

#[derive(Clone, Default)]
struct FakeReplayer {
    state: Arc<Mutex<ReplayerState>>,
    /// Calls answered NOT_FOUND before the table is "held".
    not_found_calls: Arc<AtomicU32>,
    scans: Arc<AtomicU32>,
}

impl FakeReplayer {
    fn hold_check(&self) -> Result<(), Status> {
        let left = self.not_found_calls.load(Ordering::SeqCst);
        if left > 0 {
            self.not_found_calls.store(left - 1, Ordering::SeqCst);
            return Err(Status::not_found("table is not held here"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::replayer_server::Replayer for FakeReplayer {
    async fn get(
        &self,
        r: Request<pb::MemtableGetRequest>,
    ) -> Result<Response<pb::MemtableGetResponse>, Status> {
        self.hold_check()?;
        let r = r.into_inner();
        let s = self
            .state
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        let entry = s
            .memtables
            .get(&r.table)
            .and_then(|m| m.get(&r.key))
            .cloned();
        Ok(Response::new(pb::MemtableGetResponse {
            found: entry.is_some(),
            entry,
            applied_seq: s.applied_seq,
        }))
    }

    async fn scan(
        &self,
        r: Request<pb::MemtableScanRequest>,
    ) -> Result<Response<pb::MemtableScanResponse>, Status> {
        self.hold_check()?;
        self.scans.fetch_add(1, Ordering::SeqCst);
        let r = r.into_inner();
        let range = r.range.unwrap_or_default();
        let s = self
            .state
            .lock()
            .map_err(|_| Status::internal("poisoned"))?;
        let limit = (r.limit as usize).min(s.page_cap);
        let mut entries: Vec<pb::KeyValue> = s
            .memtables
            .get(&r.table)
            .map(|m| {
                m.range(range.start.clone()..)
                    .filter(|(k, _)| range.end.is_empty() || **k < range.end)
                    .map(|(_, v)| v.clone())
                    .take(limit + 1)
                    .collect()
            })
            .unwrap_or_default();
        let truncated = entries.len() > limit;
        entries.truncate(limit);
        Ok(Response::new(pb::MemtableScanResponse {
            entries,
            truncated,
            applied_seq: s.applied_seq,
        }))
    }
}

struct Cluster {
    admin: FakeAdmin,
    replayer: FakeReplayer,
    scheduler_address: String,
    replayer_address: String,
    storage: Storage,
    _dir: tempfile::TempDir,
    dir_path: std::path::PathBuf,
}

async fn listen() -> (tokio_stream::wrappers::TcpListenerStream, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    (
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        address,
    )
}

impl Cluster {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().display());
        let storage = Storage::from_url(&url, &storage::S3Options::default()).expect("storage");
        let admin = FakeAdmin::default();
        let replayer = FakeReplayer::default();
        if let Ok(mut s) = replayer.state.lock() {
            s.page_cap = usize::MAX;
        }
        let (incoming, scheduler_address) = listen().await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::admin_server::AdminServer::new(admin.clone()))
                .serve_with_incoming(incoming),
        );
        let (incoming, replayer_address) = listen().await;
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::replayer_server::ReplayerServer::new(replayer.clone()))
                .serve_with_incoming(incoming),
        );
        if let Ok(mut s) = admin.0.lock() {
            s.storage_url = url;
        }
        Self {
            admin,
            replayer,
            scheduler_address,
            replayer_address,
            storage,
            dir_path: dir.path().to_owned(),
            _dir: dir,
        }
    }

    fn add_table(&self, name: &str, checkpoint: u64) {
        if let Ok(mut s) = self.admin.0.lock() {
            s.tables.push(pb::TableInfo {
                name: name.into(),
                checkpoint,
                manifest_version: 1,
                replayer_address: self.replayer_address.clone(),
                ..Default::default()
            });
            s.manifests.insert(
                name.into(),
                pb::Manifest {
                    table: name.into(),
                    version: 1,
                    checkpoint,
                    ..Default::default()
                },
            );
        }
    }

    /// Writes an SST of `entries` (user key, seq, value or tombstone; any order) as file
    /// `file_id` of `level` and lists it in the manifest (L0: newest first).
    fn add_sst(
        &self,
        table: &str,
        level: u32,
        file_id: u64,
        entries: &[(&str, u64, Option<&str>)],
    ) {
        let mut sorted: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(k, seq, v)| {
                let kind = if v.is_some() {
                    ValueKind::Put
                } else {
                    ValueKind::Delete
                };
                let mut ik = Vec::new();
                lsm::key::encode_internal_key(k.as_bytes(), *seq, kind, &mut ik);
                (ik, v.unwrap_or("").as_bytes().to_vec())
            })
            .collect();
        sorted.sort_by(|a, b| lsm::key::compare_internal_keys(&a.0, &b.0));
        let table_name = storage::TableName::new(table).expect("table name");
        let rel = storage::paths::sst_file(&table_name, file_id);
        let path = self.dir_path.join(rel.as_ref());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        let file = std::fs::File::create(&path).expect("create sst");
        let mut b = sst::SstBuilder::new(rel.to_string(), file, sst::SstOptions::default())
            .expect("builder");
        for (k, v) in &sorted {
            b.add(k, v).expect("add");
        }
        b.finish().expect("finish");
        let meta = pb::FileMeta {
            file_id,
            smallest_key: entries.iter().map(|e| e.0).min().unwrap_or("").into(),
            largest_key: entries.iter().map(|e| e.0).max().unwrap_or("").into(),
            ..Default::default()
        };
        if let Ok(mut s) = self.admin.0.lock()
            && let Some(m) = s.manifests.get_mut(table)
        {
            match m.levels.iter_mut().find(|l| l.level == level) {
                Some(l) => l.files.insert(0, meta),
                None => {
                    m.levels.push(pb::Level {
                        level,
                        files: vec![meta],
                    });
                }
            }
        }
    }

    fn mem(&self, table: &str, key: &str, seq: u64, value: Option<&str>) {
        if let Ok(mut s) = self.replayer.state.lock() {
            s.applied_seq = s.applied_seq.max(seq);
            s.memtables.entry(table.into()).or_default().insert(
                key.as_bytes().to_vec(),
                pb::KeyValue {
                    key: key.as_bytes().to_vec(),
                    value: value.unwrap_or("").as_bytes().to_vec(),
                    seq,
                    tombstone: value.is_none(),
                },
            );
        }
    }

    /// Appends `n` filler writes to the WAL so its head is above the checkpoint.
    async fn wal_writes(&self, table: &str, n: usize) {
        let w = wal::WalWriter::open(self.storage.clone(), table, wal::WalWriterConfig::default())
            .await
            .expect("wal writer");
        for i in 0..n {
            let mut b = wal::WriteBatch::new();
            b.put(format!("filler-{i}"), "x");
            w.append(b).await.expect("append");
        }
    }

    async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_storage-admin"));
        cmd.arg("--scheduler")
            .arg(&self.scheduler_address)
            .args(args)
            .env_remove("DP__STORAGE__URL")
            .env_remove("DP_SCHEDULER");
        tokio::task::spawn_blocking(move || cmd.output().expect("run storage-admin"))
            .await
            .expect("join")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim_end().to_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A table whose data is spread over two SST levels and the memtable, with every case of
/// which version wins.
async fn spread_table(c: &Cluster) {
    c.add_table("t", 10);
    c.wal_writes("t", 12).await;
    // L1 (oldest data).
    c.add_sst(
        "t",
        1,
        1,
        &[
            ("a", 1, Some("a-l1")),
            ("b", 2, Some("b-l1")),
            ("c", 3, Some("c-l1")),
            ("d", 4, Some("d-l1")),
            ("e", 5, Some("e-l1")),
        ],
    );
    // L0, newer.
    c.add_sst(
        "t",
        0,
        2,
        &[
            ("b", 6, Some("b-l0")),
            ("c", 7, None),
            ("f", 8, Some("f-l0")),
        ],
    );
    // Memtable: d newer (tombstone), e newer (put), f *older* than the SST (a stale copy:
    // the SST must win), g only here.
    c.mem("t", "d", 11, None);
    c.mem("t", "e", 12, Some("e-mem"));
    c.mem("t", "f", 3, Some("f-stale"));
    c.mem("t", "g", 12, Some("g-mem"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_merges_ssts_and_memtables_by_seq() {
    let c = Cluster::start().await;
    spread_table(&c).await;
    for (key, want) in [
        ("a", Some("a-l1")),
        ("b", Some("b-l0")),
        ("c", None),
        ("d", None),
        ("e", Some("e-mem")),
        ("f", Some("f-l0")),
        ("g", Some("g-mem")),
        ("zz", None),
    ] {
        let o = c.run(&["get", "t", key]).await;
        match want {
            Some(v) => {
                assert!(o.status.success(), "get {key}: {}", stderr(&o));
                assert_eq!(stdout(&o), v, "get {key}");
            }
            None => {
                assert_eq!(o.status.code(), Some(1), "get {key}: {}", stderr(&o));
                assert!(
                    stderr(&o).contains(&format!("key {key} not found in table t")),
                    "{}",
                    stderr(&o)
                );
            }
        }
    }
    let o = c.run(&["--json", "get", "t", "f"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"key": "f", "value": "f-l0", "seq": 8})
    );
    // Hex in, hex out.
    let o = c.run(&["get", "t", "67", "--hex"]).await;
    assert_eq!(stdout(&o), hex("g-mem"));

    let o = c.run(&["get", "nosuch", "a"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("table nosuch not found"),
        "{}",
        stderr(&o)
    );
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_merges_and_pages_through_the_memtable() {
    let c = Cluster::start().await;
    spread_table(&c).await;
    // Many memtable-only keys and tombstones, served two per page.
    for i in 0..20 {
        let k = format!("m{i:02}");
        c.mem("t", &k, 12, if i % 4 == 0 { None } else { Some("m") });
    }
    if let Ok(mut s) = c.replayer.state.lock() {
        s.page_cap = 2;
    }
    let o = c.run(&["scan", "t"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want = vec!["a\ta-l1", "b\tb-l0", "e\te-mem", "f\tf-l0", "g\tg-mem"];
    let ms: Vec<String> = (0..20)
        .filter(|i| i % 4 != 0)
        .map(|i| format!("m{i:02}\tm"))
        .collect();
    want.extend(ms.iter().map(String::as_str));
    assert_eq!(stdout(&o), want.join("\n"));
    assert!(c.replayer.scans.load(Ordering::SeqCst) >= 10, "paged");

    let o = c
        .run(&[
            "--json", "scan", "t", "--start", "b", "--end", "m05", "--limit", "4",
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let keys: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| e["key"].as_str())
        .collect();
    assert_eq!(keys, vec!["b", "e", "f", "g"]);
    assert_eq!(v[2]["seq"], 8);

    let o = c
        .run(&["scan", "t", "--start", "m01", "--end", "m04"])
        .await;
    assert_eq!(stdout(&o), "m01\tm\nm02\tm\nm03\tm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_wait_for_the_replayer_and_fail_clearly_without_it() {
    let c = Cluster::start().await;
    spread_table(&c).await;
    // Not held for the first few calls (assignment in progress): the read retries.
    c.replayer.not_found_calls.store(3, Ordering::SeqCst);
    let o = c.run(&["get", "t", "g"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "g-mem");

    // Never held: an error that says why, not an answer from the SSTs alone.
    c.replayer.not_found_calls.store(u32::MAX, Ordering::SeqCst);
    let o = c.run(&["get", "t", "a", "--wait", "0.5"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not hold it"), "{}", stderr(&o));
    let o = c.run(&["scan", "t", "--wait", "0.5"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read its unflushed writes"),
        "{}",
        stderr(&o)
    );
    c.replayer.not_found_calls.store(0, Ordering::SeqCst);

    // Behind the WAL: not an answer either.
    if let Ok(mut s) = c.replayer.state.lock() {
        s.applied_seq = 5;
    }
    let o = c.run(&["get", "t", "a", "--wait", "0.5"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not yet through the head 12"),
        "{}",
        stderr(&o)
    );

    // A table whose checkpoint covers its WAL needs no replayer.
    c.add_table("flushed", 0);
    let o = c.run(&["scan", "flushed"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_append_to_the_wal_after_the_checkpoint() {
    let c = Cluster::start().await;
    // Every segment cleaned up: the writer must continue above the checkpoint.
    c.add_table("t", 100);
    let o = c.run(&["put", "t", "k", "v"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "put k in table t: seq 101");
    let o = c.run(&["--json", "delete", "t", "k"]).await;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["seq"], 102);
    assert_eq!(v["op"], "delete");
    let o = c.run(&["put", "t", "00ff", "0a0b", "--hex"]).await;
    assert!(o.status.success(), "{}", stderr(&o));
    let o = c.run(&["put", "t", "0g", "00", "--hex"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    let (entries, _) = wal::WalReader::open(&c.storage, "t")
        .await
        .expect("reader")
        .read_from(0, 100, wal::RecoveryMode::AbsoluteConsistency)
        .read_all()
        .await
        .expect("read");
    let got: Vec<(u64, ValueKind, Vec<u8>, Vec<u8>)> = entries
        .into_iter()
        .map(|e| (e.seq, e.kind, e.key.to_vec(), e.value.to_vec()))
        .collect();
    assert_eq!(
        got,
        vec![
            (101, ValueKind::Put, b"k".to_vec(), b"v".to_vec()),
            (102, ValueKind::Delete, b"k".to_vec(), Vec::new()),
            (103, ValueKind::Put, vec![0, 255], vec![10, 11]),
        ]
    );

    let o = c.run(&["put", "nosuch", "k", "v"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("table nosuch not found"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_records_exactly_the_acknowledged_writes() {
    let c = Cluster::start().await;
    c.add_table("a", 0);
    c.add_table("b", 0);
    let oracle = c.dir_path.join("oracle.jsonl");
    let oracle_arg = oracle.display().to_string();
    let o = c
        .run(&[
            "--json",
            "load",
            "a",
            "b",
            "--keys",
            "3001",
            "--value-size",
            "32",
            "--overwrite-ratio",
            "0.3",
            "--delete-ratio",
            "0.1",
            "--batch-size",
            "20",
            "--concurrency",
            "4",
            "--seed",
            "9",
            "--oracle",
            &oracle_arg,
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(summary["writes"], 3001);
    assert_eq!(summary["tables"][0]["writes"], 1501);
    assert!(summary["latency_ms"]["p99"].as_f64().is_some());

    let lines = read_oracle(&oracle).expect("oracle");
    assert_eq!(lines.len(), 3001);
    for table in ["a", "b"] {
        let (wal, _) = wal::WalReader::open(&c.storage, table)
            .await
            .expect("reader")
            .read_from(0, 1000, wal::RecoveryMode::AbsoluteConsistency)
            .read_all()
            .await
            .expect("read");
        let mut from_oracle: Vec<(u64, String, Option<String>)> = lines
            .iter()
            .filter(|l| l.table == table)
            .map(|l| (l.seq, l.key.clone(), l.value.clone()))
            .collect();
        from_oracle.sort();
        let from_wal: Vec<(u64, String, Option<String>)> = wal
            .iter()
            .map(|e| {
                (
                    e.seq,
                    String::from_utf8_lossy(&e.key).into_owned(),
                    (e.kind == ValueKind::Put)
                        .then(|| String::from_utf8_lossy(&e.value).into_owned()),
                )
            })
            .collect();
        assert_eq!(from_oracle, from_wal, "table {table}");
    }

    // The same seed writes the same keys and values again.
    let again = c.dir_path.join("again.jsonl");
    let again_arg = again.display().to_string();
    let o = c
        .run(&[
            "load",
            "a",
            "b",
            "--keys",
            "3001",
            "--value-size",
            "32",
            "--overwrite-ratio",
            "0.3",
            "--delete-ratio",
            "0.1",
            "--batch-size",
            "7",
            "--seed",
            "9",
            "--oracle",
            &again_arg,
        ])
        .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let kv = |v: Vec<admin::OracleEntry>| {
        let mut v: Vec<(String, String, Option<String>)> =
            v.into_iter().map(|l| (l.table, l.key, l.value)).collect();
        v.sort();
        v
    };
    assert_eq!(kv(read_oracle(&again).expect("oracle")), kv(lines));

    // Usage errors name the flag, exit 2, and write nothing.
    for (args, needle) in [
        (
            vec!["load", "a", "--delete-ratio", "1.5"],
            "--delete-ratio 1.5",
        ),
        (
            vec!["load", "a", "--keys", "0"],
            "--keys must be at least 1",
        ),
        (
            vec![
                "load",
                "a",
                "--overwrite-ratio",
                "0.6",
                "--delete-ratio",
                "0.6",
            ],
            "must add up to at most 1",
        ),
    ] {
        let o = c.run(&args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
    }
    let o = c.run(&["load", "a", "nosuch", "--keys", "10"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("table nosuch not found"),
        "{}",
        stderr(&o)
    );
}
