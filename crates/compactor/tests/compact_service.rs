//! CompactLevel through the compactor's real gRPC API, in this process: a fake scheduler
//! (records CompleteTask, can cancel attempts by heartbeat) on port 0, storage in a
//! temporary directory holding the input SSTs.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use compactor::testing::{Entry, build_sst, entry, read_sst};
use proto::v1 as pb;
use proto::v1::compactor_client::CompactorClient;
use proto::v1::scheduler_server::{Scheduler, SchedulerServer};
use runtime::{Config, ServiceContext, ServiceKind};
use sst::{Bytes, SstOptions};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

const WORKER_ID: u64 = 9;
const TABLE: &str = "users";

#[derive(Default)]
struct FakeScheduler {
    completions: Mutex<Option<mpsc::UnboundedSender<pb::CompleteTaskRequest>>>,
    /// Attempts the next heartbeat replies cancel.
    cancel: Mutex<Vec<pb::TaskRef>>,
    /// Latest progress heartbeated per (task, attempt).
    progress: Mutex<HashMap<(u64, u32), pb::TaskProgress>>,
    registered: AtomicU64,
    /// Answers of the next CompleteTask calls (recorded all the same); then accepted.
    complete_errors: Mutex<VecDeque<Status>>,
}

#[tonic::async_trait]
impl Scheduler for FakeScheduler {
    async fn register_worker(
        &self,
        _request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        self.registered.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id: WORKER_ID,
            heartbeat_interval_ms: 50,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let mut progress = self.progress.lock().expect("lock");
        for p in request.into_inner().running {
            progress.insert((p.task_id, p.attempt), p);
        }
        Ok(Response::new(pb::HeartbeatResponse {
            cancel: self.cancel.lock().expect("lock").clone(),
            ..Default::default()
        }))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        if let Some(tx) = self.completions.lock().expect("lock").as_ref() {
            let _ = tx.send(request.into_inner());
        }
        if let Some(status) = self.complete_errors.lock().expect("lock").pop_front() {
            return Err(status);
        }
        Ok(Response::new(pb::CompleteTaskResponse { accepted: true }))
    }
}

struct Cluster {
    scheduler: Arc<FakeScheduler>,
    compactor: CompactorClient<Channel>,
    completions: mpsc::UnboundedReceiver<pb::CompleteTaskRequest>,
    storage_dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl Cluster {
    async fn start(worker_count: u32) -> Self {
        let shutdown = CancellationToken::new();
        let (tx, completions) = mpsc::unbounded_channel();
        let scheduler = Arc::new(FakeScheduler::default());
        *scheduler.completions.lock().expect("lock") = Some(tx);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let scheduler_address = listener.local_addr().expect("address").to_string();
        tokio::spawn(
            Server::builder()
                .add_service(SchedulerServer::from_arc(scheduler.clone()))
                .serve_with_incoming_shutdown(
                    TcpListenerStream::new(listener),
                    shutdown.clone().cancelled_owned(),
                ),
        );

        let storage_dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.storage.url = format!("file://{}", storage_dir.path().display());
        config.processor.worker_count = worker_count;
        let ctx = ServiceContext::bind_local(
            ServiceKind::Compactor,
            config,
            &format!("http://{scheduler_address}"),
        )
        .await
        .expect("bind compactor");
        let compactor_address = format!("http://{}", ctx.advertised_address);
        let compactor_shutdown = ctx.shutdown.clone();
        tokio::spawn(compactor::run(ctx));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            compactor_shutdown.cancel();
        });

        let cluster = Self {
            scheduler,
            compactor: connect(&compactor_address).await,
            completions,
            storage_dir,
            shutdown,
        };
        cluster
            .eventually("the compactor registers", || {
                cluster.scheduler.registered.load(Ordering::SeqCst) > 0
            })
            .await;
        cluster
    }

    fn sst_path(&self, file_id: u64) -> PathBuf {
        self.storage_dir
            .path()
            .join(format!("tables/{TABLE}/sst/{file_id:020}.sst"))
    }

    /// Writes an input SST into the storage; returns its manifest record.
    fn put_input(&self, file_id: u64, entries: Vec<Entry>) -> pb::FileMeta {
        let (meta, bytes) = build_sst(file_id, entries, SstOptions::default()).expect("sst");
        let path = self.sst_path(file_id);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &bytes).expect("write input");
        pb::FileMeta {
            file_id,
            size_bytes: meta.size,
            smallest_key: meta.smallest.to_vec(),
            largest_key: meta.largest.to_vec(),
            smallest_seq: meta.smallest_seq,
            largest_seq: meta.largest_seq,
            entry_count: meta.entries,
            tombstone_count: meta.tombstones,
        }
    }

    /// Appends `batch` to the table's WAL (first seq above `min_last_seq`); returns the
    /// segment's path on disk.
    async fn write_wal(&self, min_last_seq: u64, batch: wal::WriteBatch) -> PathBuf {
        let storage = storage::Storage::local(self.storage_dir.path()).expect("storage");
        let config = wal::WalWriterConfig {
            min_last_seq,
            ..wal::WalWriterConfig::default()
        };
        let writer = wal::WalWriter::open(storage, TABLE, config)
            .await
            .expect("writer");
        let appended = writer.append(batch).await.expect("append");
        self.storage_dir
            .path()
            .join("tables")
            .join(TABLE)
            .join("wal")
            .join(storage::paths::wal_segment_name(appended.first_seq))
    }

    async fn dispatch(&mut self, request: pb::CompactLevelRequest) -> Result<(), Status> {
        let resp = self.compactor.compact_level(request).await?.into_inner();
        assert!(resp.accepted);
        Ok(())
    }

    async fn next_completion(&mut self) -> pb::CompleteTaskRequest {
        tokio::time::timeout(Duration::from_secs(20), self.completions.recv())
            .await
            .expect("a CompleteTask within 20 s")
            .expect("scheduler alive")
    }

    /// Every file under `tables/` (staging files included), sorted.
    fn stored_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.storage_dir.path().join("tables"), &mut out);
        out.sort();
        out
    }

    async fn running(&mut self) -> usize {
        let status = self
            .compactor
            .get_status(pb::WorkerStatusRequest {})
            .await
            .expect("status")
            .into_inner();
        status.info.map_or(0, |i| i.running.len())
    }

    /// Waits until no attempt holds a slot.
    async fn wait_idle(&mut self) {
        for _ in 0..400 {
            if self.running().await == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("an attempt still holds its slot");
    }

    async fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..400 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting until {what}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn connect(address: &str) -> CompactorClient<Channel> {
    for _ in 0..100 {
        if let Ok(c) = CompactorClient::connect(address.to_owned()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("compactor at {address} never answered");
}

/// A compaction of `inputs` (by level) into L1, outputs named 100, 101, ...
fn request(task_id: u64, inputs: Vec<(u32, Vec<pb::FileMeta>)>) -> pb::CompactLevelRequest {
    pb::CompactLevelRequest {
        dispatch: Some(pb::DispatchRequest {
            task_id,
            attempt: 1,
        }),
        spec: Some(pb::CompactionSpec {
            table: TABLE.to_owned(),
            input_levels: inputs.iter().map(|(l, _)| *l).collect(),
            inputs: inputs
                .into_iter()
                .map(|(level, files)| pb::Level { level, files })
                .collect(),
            output_level: 1,
            bottommost: true,
            target_file_size: 64 << 20,
            trivial_move: false,
            output_file_ids: (100..120).collect(),
            io_bytes_per_sec: 0,
            reason: "L0 has 2 files".to_owned(),
            max_subcompactions: 1,
            wal_inputs: vec![],
            grandparent_bounds: vec![],
        }),
    }
}

fn with_spec(
    mut req: pb::CompactLevelRequest,
    f: impl FnOnce(&mut pb::CompactionSpec),
) -> pb::CompactLevelRequest {
    if let Some(spec) = req.spec.as_mut() {
        f(spec);
    }
    req
}

fn task_error(c: &pb::CompleteTaskRequest) -> &pb::TaskError {
    match &c.outcome {
        Some(pb::complete_task_request::Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn compaction_result(c: pb::CompleteTaskRequest) -> pb::CompactionResult {
    match c.outcome {
        Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
            result: Some(pb::task_result::Result::Compaction(r)),
        })) => r,
        other => panic!("expected a compaction result, got {other:?}"),
    }
}

/// `n` keys with values of `len` bytes at seqs `seq0 + i`.
fn keys(prefix: &str, n: u64, len: usize, seq0: u64) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i:06}").into_bytes(),
                seq0 + i,
                Some(vec![b'a' + (i % 26) as u8; len]),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_compaction_merges_its_inputs_and_reports_the_outputs() {
    let mut c = Cluster::start(2).await;
    let l0_new = c.put_input(
        3,
        vec![
            entry("a", 30, Some("a-new")),
            entry("b", 31, None),
            entry("d", 32, Some("d-new")),
        ],
    );
    let l0_old = c.put_input(2, vec![entry("a", 20, Some("a-mid")), entry("c", 21, None)]);
    let l1 = c.put_input(
        1,
        vec![
            entry("a", 1, Some("a-old")),
            entry("b", 2, Some("b-old")),
            entry("e", 3, Some("e-old")),
        ],
    );
    let inputs = [c.sst_path(1), c.sst_path(2), c.sst_path(3)];
    c.dispatch(request(1, vec![(0, vec![l0_new, l0_old]), (1, vec![l1])]))
        .await
        .expect("accepted");

    let done = c.next_completion().await;
    assert_eq!(
        (done.task_id, done.attempt, done.worker_id),
        (1, 1, WORKER_ID)
    );
    let r = compaction_result(done);
    assert_eq!(r.outputs.len(), 1);
    let out = &r.outputs[0];
    let bytes = std::fs::read(c.sst_path(100)).expect("output 100 exists");
    assert_eq!(
        *out,
        pb::FileMeta {
            file_id: 100,
            size_bytes: bytes.len() as u64,
            smallest_key: b"a".to_vec(),
            largest_key: b"e".to_vec(),
            smallest_seq: 3,
            largest_seq: 32,
            entry_count: 3,
            tombstone_count: 0,
        }
    );
    assert_eq!(
        read_sst(Bytes::from(bytes)).expect("readable output"),
        [
            entry("a", 30, Some("a-new")),
            entry("d", 32, Some("d-new")),
            entry("e", 3, Some("e-old")),
        ]
    );
    assert!(r.consumed_inputs.is_empty(), "every input consumed");
    assert_eq!((r.entries_in, r.entries_out), (8, 3));
    assert_eq!((r.shadowed_dropped, r.tombstones_dropped), (3, 2));
    assert_eq!(r.bytes_written, out.size_bytes);
    assert!(r.bytes_read > 0);
    // The compactor never deletes its inputs: the scheduler's commit and Cleanup do.
    let mut expected = inputs.to_vec();
    expected.push(c.sst_path(100));
    assert_eq!(c.stored_files(), expected);
    c.wait_idle().await;
}

#[tokio::test]
async fn large_inputs_are_split_into_outputs_named_in_order() {
    let mut c = Cluster::start(2).await;
    // Two L0 files of 3000 keys with 200-byte values over the same keys: ~1.2 MB in,
    // ~600 KB out, cut at 128 KiB.
    let newer = c.put_input(2, keys("k", 3000, 200, 10_000));
    let older = c.put_input(1, keys("k", 3000, 200, 1));
    let req = with_spec(request(1, vec![(0, vec![newer, older])]), |s| {
        s.target_file_size = 128 << 10;
        s.max_subcompactions = 2;
    });
    c.dispatch(req).await.expect("accepted");
    let r = compaction_result(c.next_completion().await);
    assert!(r.outputs.len() >= 4, "{} outputs", r.outputs.len());
    let ids: Vec<u64> = r.outputs.iter().map(|o| o.file_id).collect();
    assert_eq!(ids, (100..100 + ids.len() as u64).collect::<Vec<_>>());
    let mut all = Vec::new();
    for (i, o) in r.outputs.iter().enumerate() {
        let bytes = std::fs::read(c.sst_path(o.file_id)).expect("output exists");
        assert_eq!(o.size_bytes, bytes.len() as u64);
        if i + 1 < r.outputs.len() {
            assert!(o.size_bytes >= 128 << 10, "{o:?}");
        }
        all.extend(read_sst(Bytes::from(bytes)).expect("readable"));
    }
    assert_eq!(all.len(), 3000);
    assert!(all.iter().all(|e| e.1 >= 10_000), "only the newer versions");
    for w in r.outputs.windows(2) {
        assert!(w[0].largest_key < w[1].smallest_key);
    }
    assert_eq!((r.entries_in, r.shadowed_dropped), (6000, 3000));
    c.wait_idle().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_the_field() {
    let mut c = Cluster::start(2).await;
    for (field, req) in [
        (
            "spec.trivial_move",
            with_spec(request(1, vec![]), |s| s.trivial_move = true),
        ),
        ("spec.inputs", request(1, vec![])),
        (
            "spec.output_file_ids",
            with_spec(request(1, vec![(0, vec![pb::FileMeta::default()])]), |s| {
                s.output_file_ids.clear()
            }),
        ),
    ] {
        let status = c.dispatch(req).await.expect_err("invalid");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(status.message().contains(field), "{field}: {status:?}");
    }
    assert_eq!(c.running().await, 0);
}

#[tokio::test]
async fn a_corrupt_input_fails_the_task_with_file_and_offset_and_writes_nothing() {
    let mut c = Cluster::start(2).await;
    let good = c.put_input(2, keys("k", 2000, 100, 5000));
    let bad = c.put_input(1, keys("k", 2000, 100, 1));
    // Flip a byte in a data block in the middle of file 1.
    let path = c.sst_path(1);
    let mut bytes = std::fs::read(&path).expect("input");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x08;
    std::fs::write(&path, &bytes).expect("damage");
    let before = c.stored_files();

    c.dispatch(request(4, vec![(0, vec![good, bad])]))
        .await
        .expect("accepted");
    let done = c.next_completion().await;
    assert_eq!(done.task_id, 4);
    let e = task_error(&done);
    assert_eq!(e.kind, pb::ErrorKind::Corruption as i32, "{e:?}");
    assert!(!e.retriable);
    assert_eq!(e.file, format!("tables/{TABLE}/sst/{:020}.sst", 1));
    assert!(e.offset > 0 && e.offset <= at as u64, "{e:?}");
    for needle in ["CompactionError: ", "table users", &e.file, "checksum"] {
        assert!(
            e.message.contains(needle),
            "{needle:?} not in {:?}",
            e.message
        );
    }
    c.wait_idle().await;
    assert!(
        c.completions.try_recv().is_err(),
        "one report, not a success"
    );
    assert_eq!(c.stored_files(), before, "no output left behind");
}

#[tokio::test]
async fn a_vanished_input_is_a_final_compaction_error() {
    let mut c = Cluster::start(2).await;
    let kept = c.put_input(2, keys("k", 10, 10, 100));
    let gone = c.put_input(1, keys("k", 10, 10, 1));
    std::fs::remove_file(c.sst_path(1)).expect("delete");
    c.dispatch(request(5, vec![(0, vec![kept, gone])]))
        .await
        .expect("accepted");
    let e = task_error(&c.next_completion().await).clone();
    assert_eq!(e.kind, pb::ErrorKind::Compaction as i32);
    assert!(!e.retriable, "the same inputs cannot come back: {e:?}");
    assert!(
        e.message.contains("is gone") && e.message.contains(&e.file),
        "{e:?}"
    );
    assert_eq!(c.stored_files(), [c.sst_path(2)]);
}

#[tokio::test]
async fn a_compaction_that_would_not_fit_is_refused_before_reading() {
    let mut c = Cluster::start(2).await;
    let mut huge = c.put_input(1, keys("k", 10, 10, 1));
    huge.size_bytes = u64::MAX / 4;
    c.dispatch(request(6, vec![(0, vec![huge])]))
        .await
        .expect("accepted");
    let e = task_error(&c.next_completion().await).clone();
    assert_eq!(e.kind, pb::ErrorKind::DiskSpace as i32);
    assert!(e.retriable);
    assert!(e.message.contains("bytes needed"), "{e:?}");
    assert_eq!(c.stored_files(), [c.sst_path(1)]);
}

#[tokio::test]
async fn a_cancelled_compaction_stops_reports_nothing_and_leaves_no_output() {
    let mut c = Cluster::start(1).await;
    // 10 000 entries of ~100 bytes at 2 KB/s: minutes, unless cancelled.
    let input = c.put_input(1, keys("k", 10_000, 100, 1));
    let req = with_spec(request(7, vec![(0, vec![input.clone()])]), |s| {
        s.io_bytes_per_sec = 2000;
        s.target_file_size = 64 << 10;
    });
    c.dispatch(req).await.expect("accepted");

    // The slot is taken: a second attempt is refused at once.
    let busy = c
        .dispatch(request(8, vec![(0, vec![input])]))
        .await
        .expect_err("busy");
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted);

    // Progress reaches the scheduler while the budget holds the merge back.
    let sched = c.scheduler.clone();
    c.eventually("progress is heartbeated", || {
        sched
            .progress
            .lock()
            .expect("lock")
            .get(&(7, 1))
            .is_some_and(|p| p.entries > 0 && p.bytes_read > 0 && p.bytes_written > 0)
    })
    .await;

    c.scheduler.cancel.lock().expect("lock").push(pb::TaskRef {
        task_id: 7,
        attempt: 1,
    });
    c.wait_idle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.completions.try_recv().is_err(), "nothing reported");
    assert_eq!(
        c.stored_files(),
        [c.sst_path(1)],
        "outputs abandoned or deleted"
    );
}

#[tokio::test]
async fn a_refused_completion_is_final_and_the_outputs_stay_for_cleanup() {
    let mut c = Cluster::start(2).await;
    c.scheduler.complete_errors.lock().expect("lock").extend([
        Status::unavailable("restarting"),
        Status::failed_precondition("attempt 1 of task 9 is stale"),
    ]);
    let input = c.put_input(1, keys("k", 10, 10, 1));
    c.dispatch(request(9, vec![(0, vec![input])]))
        .await
        .expect("accepted");
    // Retried once (unavailable), then refused: two calls, no third.
    compaction_result(c.next_completion().await);
    compaction_result(c.next_completion().await);
    c.wait_idle().await;
    assert!(c.completions.try_recv().is_err(), "a refusal is final");
    assert_eq!(c.stored_files(), [c.sst_path(1), c.sst_path(100)]);
}

/// The repair of a released WAL segment: the segment's writes join the merge by sequence
/// number (a newer version in the levels wins over the segment's, the segment's tombstone
/// shadows an older value), the temporary SST of the segment is gone afterwards, and the
/// segment itself is left for Cleanup.
#[tokio::test]
async fn a_repair_merges_a_wal_segment_by_sequence_number_and_leaves_no_trace_of_it() {
    let mut c = Cluster::start(1).await;
    let mut batch = wal::WriteBatch::new();
    batch.put("a", "a-wal").delete("d").put("f", "f-wal");
    let segment = c.write_wal(49, batch).await;
    assert!(
        segment.ends_with(storage::paths::wal_segment_name(50)),
        "seqs 50..=52"
    );
    let l1 = c.put_input(
        1,
        vec![
            entry("a", 60, Some("a-newer")),
            entry("d", 40, Some("d-old")),
            entry("e", 3, Some("e-old")),
        ],
    );
    c.dispatch(with_spec(request(1, vec![(1, vec![l1])]), |s| {
        s.wal_inputs = vec![50];
    }))
    .await
    .expect("accepted");
    let r = compaction_result(c.next_completion().await);
    assert_eq!(r.outputs.len(), 1);
    assert_eq!(r.outputs[0].file_id, 100);
    let bytes = std::fs::read(c.sst_path(100)).expect("output");
    assert_eq!(
        read_sst(Bytes::from(bytes)).expect("readable"),
        [
            entry("a", 60, Some("a-newer")),
            entry("e", 3, Some("e-old")),
            entry("f", 52, Some("f-wal")),
        ]
    );
    c.wait_idle().await;
    assert_eq!(
        c.stored_files(),
        vec![c.sst_path(1), c.sst_path(100), segment],
        "the segment's temporary sst is deleted; the segment stays for Cleanup"
    );
}

/// A repair of a segment that is still damaged fails as corruption naming the segment,
/// and writes nothing.
#[tokio::test]
async fn a_repair_of_a_still_corrupt_segment_fails_naming_it() {
    let mut c = Cluster::start(1).await;
    let mut batch = wal::WriteBatch::new();
    batch.put("a", "a-wal");
    let segment = c.write_wal(0, batch).await;
    let mut bytes = std::fs::read(&segment).expect("segment");
    let at = bytes.len() - 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&segment, &bytes).expect("corrupt");
    let l1 = c.put_input(1, vec![entry("b", 3, Some("b"))]);
    c.dispatch(with_spec(request(1, vec![(1, vec![l1])]), |s| {
        s.wal_inputs = vec![1];
    }))
    .await
    .expect("accepted");
    let done = c.next_completion().await;
    let e = task_error(&done);
    assert_eq!(e.kind, pb::ErrorKind::Corruption as i32, "{e:?}");
    assert!(
        e.file.ends_with(&storage::paths::wal_segment_name(1)),
        "{e:?}"
    );
    c.wait_idle().await;
    assert_eq!(c.stored_files(), vec![c.sst_path(1), segment]);
}
