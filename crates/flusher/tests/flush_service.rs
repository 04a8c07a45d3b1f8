//! The flusher service through its real gRPC API, in this process: a fake scheduler
//! (records CompleteTask, can cancel attempts by heartbeat) and a fake replayer (serves
//! memtables as configured) on port 0, storage in a temporary directory.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1 as pb;
use proto::v1::flusher_client::FlusherClient;
use proto::v1::replayer_server::{Replayer, ReplayerServer};
use proto::v1::scheduler_server::{Scheduler, SchedulerServer};
use runtime::{Config, ServiceContext, ServiceKind};
use sst::{Bytes, InternalIterator, SstReader};
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
    complete_errors: Mutex<std::collections::VecDeque<Status>>,
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

/// What the fake replayer serves for a memtable id.
#[derive(Clone)]
enum Memtable {
    /// These chunks, then the end of the stream.
    Chunks(Vec<Vec<pb::KeyValue>>),
    /// These chunks, then nothing ever again.
    Hang(Vec<Vec<pb::KeyValue>>),
}

#[derive(Default)]
struct FakeReplayer {
    memtables: HashMap<u64, Memtable>,
    reads: AtomicU64,
}

type ChunkStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ReadMemtableResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Replayer for FakeReplayer {
    async fn read_memtable(
        &self,
        request: Request<pb::ReadMemtableRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        use tokio_stream::StreamExt;
        self.reads.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        assert_eq!(req.table, TABLE);
        assert_eq!(req.chunk_entries, 4096);
        let chunks = |c: &Vec<Vec<pb::KeyValue>>| {
            tokio_stream::iter(
                c.iter()
                    .map(|entries| {
                        Ok(pb::ReadMemtableResponse {
                            entries: entries.clone(),
                        })
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let stream: ChunkStream = match self.memtables.get(&req.memtable_id) {
            None => {
                return Err(Status::not_found(format!(
                    "no frozen memtable {}",
                    req.memtable_id
                )));
            }
            Some(Memtable::Chunks(c)) => Box::pin(chunks(c)),
            Some(Memtable::Hang(c)) => Box::pin(chunks(c).chain(tokio_stream::pending())),
        };
        Ok(Response::new(stream))
    }
}

struct Cluster {
    scheduler: Arc<FakeScheduler>,
    replayer: Arc<FakeReplayer>,
    replayer_address: String,
    flusher: FlusherClient<Channel>,
    completions: mpsc::UnboundedReceiver<pb::CompleteTaskRequest>,
    storage_dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

async fn serve_on_port_0<S>(service: S, shutdown: CancellationToken) -> String
where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
            Error = std::convert::Infallible,
        > + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(
        Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                TcpListenerStream::new(listener),
                shutdown.cancelled_owned(),
            ),
    );
    address
}

impl Cluster {
    async fn start(memtables: HashMap<u64, Memtable>, worker_count: u32) -> Self {
        let shutdown = CancellationToken::new();
        let (tx, completions) = mpsc::unbounded_channel();
        let scheduler = Arc::new(FakeScheduler::default());
        *scheduler.completions.lock().expect("lock") = Some(tx);
        let replayer = Arc::new(FakeReplayer {
            memtables,
            ..Default::default()
        });
        let scheduler_address = serve_on_port_0(
            SchedulerServer::from_arc(scheduler.clone()),
            shutdown.clone(),
        )
        .await;
        let replayer_address =
            serve_on_port_0(ReplayerServer::from_arc(replayer.clone()), shutdown.clone()).await;

        let storage_dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::default();
        config.storage.url = format!("file://{}", storage_dir.path().display());
        config.processor.worker_count = worker_count;
        let ctx = ServiceContext::bind_local(
            ServiceKind::Flusher,
            config,
            &format!("http://{scheduler_address}"),
        )
        .await
        .expect("bind flusher");
        let flusher_address = format!("http://{}", ctx.advertised_address);
        let flusher_shutdown = ctx.shutdown.clone();
        tokio::spawn(flusher::run(ctx));
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.cancelled().await;
            flusher_shutdown.cancel();
        });

        let flusher = connect(&flusher_address).await;
        let cluster = Self {
            scheduler,
            replayer,
            replayer_address,
            flusher,
            completions,
            storage_dir,
            shutdown,
        };
        cluster
            .eventually("the flusher registers", || {
                cluster.scheduler.registered.load(Ordering::SeqCst) > 0
            })
            .await;
        cluster
    }

    fn request(&self, task_id: u64, memtable_id: u64) -> pb::FlushMemtableRequest {
        pb::FlushMemtableRequest {
            dispatch: Some(pb::DispatchRequest {
                task_id,
                attempt: 1,
            }),
            spec: Some(pb::FlushSpec {
                table: TABLE.to_owned(),
                memtable_id,
                replayer_address: self.replayer_address.clone(),
                first_seq: 11,
                last_seq: 20,
                output_file_ids: vec![100 + task_id],
                after_seq: 10,
                size_bytes: 4096,
                io_bytes_per_sec: 0,
            }),
        }
    }

    async fn dispatch(&mut self, request: pb::FlushMemtableRequest) -> Result<(), Status> {
        let resp = self.flusher.flush_memtable(request).await?.into_inner();
        assert!(resp.accepted);
        Ok(())
    }

    async fn next_completion(&mut self) -> pb::CompleteTaskRequest {
        tokio::time::timeout(Duration::from_secs(20), self.completions.recv())
            .await
            .expect("a CompleteTask within 20 s")
            .expect("scheduler alive")
    }

    fn sst_path(&self, file_id: u64) -> std::path::PathBuf {
        self.storage_dir
            .path()
            .join(format!("tables/{TABLE}/sst/{file_id:020}.sst"))
    }

    /// Every file under `tables/` (staging files included).
    fn stored_files(&self) -> Vec<std::path::PathBuf> {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
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
        out
    }

    async fn running(&mut self) -> usize {
        let status = self
            .flusher
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

async fn connect(address: &str) -> FlusherClient<Channel> {
    for _ in 0..100 {
        if let Ok(c) = FlusherClient::connect(address.to_owned()).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("flusher at {address} never answered");
}

fn kv(key: &str, seq: u64, value: Option<&str>) -> pb::KeyValue {
    pb::KeyValue {
        key: key.as_bytes().to_vec(),
        value: value.unwrap_or_default().as_bytes().to_vec(),
        seq,
        tombstone: value.is_none(),
    }
}

fn task_error(c: &pb::CompleteTaskRequest) -> &pb::TaskError {
    match &c.outcome {
        Some(pb::complete_task_request::Outcome::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_flush_writes_one_sst_and_reports_its_metadata() {
    let chunks = vec![
        vec![
            kv("a", 15, Some("1")),
            kv("a", 12, None),
            kv("b", 11, Some("2")),
        ],
        vec![],
        vec![kv("c", 20, Some("3")), kv("d", 13, None)],
    ];
    let mut c = Cluster::start(HashMap::from([(3, Memtable::Chunks(chunks.clone()))]), 2).await;
    c.dispatch(c.request(1, 3)).await.expect("accepted");

    let done = c.next_completion().await;
    assert_eq!(
        (done.task_id, done.attempt, done.worker_id),
        (1, 1, WORKER_ID)
    );
    let Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
        result: Some(pb::task_result::Result::Flush(result)),
    })) = done.outcome
    else {
        panic!("expected a flush result: {done:?}");
    };
    let path = c.sst_path(101);
    let bytes = std::fs::read(&path).expect("the sst exists");
    assert_eq!(
        result.files,
        vec![pb::FileMeta {
            file_id: 101,
            size_bytes: bytes.len() as u64,
            smallest_key: b"a".to_vec(),
            largest_key: b"d".to_vec(),
            smallest_seq: 11,
            largest_seq: 20,
            entry_count: 5,
            tombstone_count: 2,
        }]
    );
    assert!(result.bytes_read > 0);

    let reader = SstReader::open(Bytes::from(bytes), "flushed.sst").expect("a valid sst");
    let mut it = reader.iter();
    it.seek_to_first().expect("seek");
    let mut read = Vec::new();
    while it.valid() {
        let k = lsm::ParsedInternalKey::parse(it.key()).expect("internal key");
        read.push(pb::KeyValue {
            key: k.user_key.to_vec(),
            value: it.value().to_vec(),
            seq: k.seq,
            tombstone: k.kind == lsm::ValueKind::Delete,
        });
        it.next().expect("next");
    }
    assert_eq!(read, chunks.concat());
    assert_eq!(c.stored_files(), vec![path], "no staging file left behind");
    c.wait_idle().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_the_field() {
    let mut c = Cluster::start(HashMap::new(), 2).await;
    let mut req = c.request(1, 3);
    if let Some(s) = req.spec.as_mut() {
        s.output_file_ids.clear();
    }
    let status = c.dispatch(req).await.expect_err("invalid");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("spec.output_file_ids"),
        "{status:?}"
    );
    assert_eq!(c.replayer.reads.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_missing_memtable_is_a_retriable_flush_error() {
    let mut c = Cluster::start(HashMap::new(), 2).await;
    c.dispatch(c.request(1, 77)).await.expect("accepted");
    let done = c.next_completion().await;
    let e = task_error(&done);
    assert_eq!(e.kind, pb::ErrorKind::Flush as i32);
    assert!(e.retriable);
    assert_eq!(e.attempt, 1);
    for needle in [
        "memtable 77",
        "table users",
        &c.replayer_address,
        "NotFound",
    ] {
        assert!(
            e.message.contains(needle),
            "{needle:?} not in {:?}",
            e.message
        );
    }
    assert!(c.stored_files().is_empty());
}

#[tokio::test]
async fn an_unreachable_replayer_is_a_retriable_flush_error() {
    let mut c = Cluster::start(HashMap::new(), 2).await;
    // A port nobody listens on.
    let closed = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
    let address = closed.local_addr().expect("address").to_string();
    drop(closed);
    let mut req = c.request(1, 3);
    if let Some(s) = req.spec.as_mut() {
        s.replayer_address = address.clone();
    }
    c.dispatch(req).await.expect("accepted");
    let e = task_error(&c.next_completion().await).clone();
    assert_eq!(e.kind, pb::ErrorKind::Flush as i32);
    assert!(e.retriable && e.message.contains(&address), "{e:?}");
}

#[tokio::test]
async fn a_corrupt_stream_writes_nothing() {
    let out_of_order = vec![vec![kv("b", 15, Some("1"))], vec![kv("a", 14, Some("2"))]];
    let out_of_range = vec![vec![kv("a", 15, Some("1")), kv("b", 21, Some("2"))]];
    let mut c = Cluster::start(
        HashMap::from([
            (1, Memtable::Chunks(out_of_order)),
            (2, Memtable::Chunks(out_of_range)),
            (3, Memtable::Chunks(Vec::new())),
        ]),
        4,
    )
    .await;
    for (task, memtable, words) in [
        (1, 1, "does not sort after"),
        (2, 2, "outside the memtable's range 11..=20"),
        (3, 3, "nothing to flush"),
    ] {
        c.dispatch(c.request(task, memtable))
            .await
            .expect("accepted");
        let done = c.next_completion().await;
        let e = task_error(&done);
        assert_eq!((done.task_id, e.kind), (task, pb::ErrorKind::Flush as i32));
        assert!(
            e.message.contains(words),
            "{words:?} not in {:?}",
            e.message
        );
        assert!(
            e.file.is_empty(),
            "a bad stream is not about the file: {e:?}"
        );
    }
    assert!(c.stored_files().is_empty(), "{:?}", c.stored_files());
}

#[tokio::test]
async fn a_flush_that_would_not_fit_is_refused_before_reading() {
    let mut c = Cluster::start(
        HashMap::from([(3, Memtable::Chunks(vec![vec![kv("a", 15, Some("1"))]]))]),
        2,
    )
    .await;
    let mut req = c.request(1, 3);
    if let Some(s) = req.spec.as_mut() {
        s.size_bytes = u64::MAX / 4;
    }
    c.dispatch(req).await.expect("accepted");
    let e = task_error(&c.next_completion().await).clone();
    assert_eq!(e.kind, pb::ErrorKind::DiskSpace as i32);
    assert!(e.retriable);
    assert!(
        e.message.contains("bytes needed") && e.message.contains("available"),
        "{e:?}"
    );
    assert_eq!(c.replayer.reads.load(Ordering::SeqCst), 0);
    assert!(c.stored_files().is_empty());
}

#[tokio::test]
async fn a_cancelled_attempt_stops_reports_nothing_and_writes_nothing() {
    let first = vec![vec![kv("a", 15, Some("1"))]];
    let mut c = Cluster::start(HashMap::from([(3, Memtable::Hang(first))]), 1).await;
    c.dispatch(c.request(1, 3)).await.expect("accepted");

    // The slot is taken: a second attempt is refused at once.
    let busy = c.dispatch(c.request(2, 3)).await.expect_err("busy");
    assert_eq!(busy.code(), tonic::Code::ResourceExhausted);

    // Progress reaches the scheduler while the stream hangs.
    let sched = c.scheduler.clone();
    c.eventually("progress is heartbeated", || {
        sched
            .progress
            .lock()
            .expect("lock")
            .get(&(1, 1))
            .is_some_and(|p| p.entries == 1 && p.bytes_read > 0)
    })
    .await;

    c.scheduler.cancel.lock().expect("lock").push(pb::TaskRef {
        task_id: 1,
        attempt: 1,
    });
    c.wait_idle().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.completions.try_recv().is_err(), "nothing reported");
    assert!(c.stored_files().is_empty(), "{:?}", c.stored_files());
}

fn one_entry() -> HashMap<u64, Memtable> {
    HashMap::from([(3, Memtable::Chunks(vec![vec![kv("a", 15, Some("1"))]]))])
}

#[tokio::test]
async fn complete_task_is_retried_while_the_scheduler_is_unavailable() {
    let mut c = Cluster::start(one_entry(), 2).await;
    c.scheduler.complete_errors.lock().expect("lock").extend([
        Status::unavailable("restarting"),
        Status::unavailable("restarting"),
    ]);
    c.dispatch(c.request(1, 3)).await.expect("accepted");
    for _ in 0..3 {
        let done = c.next_completion().await;
        assert!(
            matches!(
                done.outcome,
                Some(pb::complete_task_request::Outcome::Result(_))
            ),
            "{done:?}"
        );
    }
    c.wait_idle().await;
    assert!(
        c.completions.try_recv().is_err(),
        "no call after the accepted one"
    );
}

#[tokio::test]
async fn a_refused_completion_is_not_retried_and_the_file_stays_for_cleanup() {
    let mut c = Cluster::start(one_entry(), 2).await;
    c.scheduler
        .complete_errors
        .lock()
        .expect("lock")
        .push_back(Status::failed_precondition("attempt 1 of task 1 is stale"));
    c.dispatch(c.request(1, 3)).await.expect("accepted");
    c.next_completion().await;
    c.wait_idle().await;
    assert!(c.completions.try_recv().is_err(), "a refusal is final");
    assert_eq!(c.stored_files(), vec![c.sst_path(101)]);
}

#[tokio::test]
async fn a_large_memtable_streams_in_big_messages_into_a_multipart_upload() {
    // 10 000 entries of 1.2 KB: about 12 MB, more than one upload part (8 MiB), and each
    // 4096-entry message (about 5 MB) is above tonic's default 4 MiB decoding limit.
    let entries: Vec<pb::KeyValue> = (0..10_000u64)
        .map(|i| pb::KeyValue {
            key: format!("key{i:06}").into_bytes(),
            value: vec![b'a' + (i % 26) as u8; 1200],
            seq: i + 1,
            tombstone: false,
        })
        .collect();
    let chunks: Vec<Vec<pb::KeyValue>> = entries.chunks(4096).map(<[_]>::to_vec).collect();
    let mut c = Cluster::start(HashMap::from([(3, Memtable::Chunks(chunks))]), 2).await;
    let mut req = c.request(1, 3);
    if let Some(s) = req.spec.as_mut() {
        (s.first_seq, s.last_seq, s.after_seq) = (1, 10_000, 0);
        s.size_bytes = 12 << 20;
    }
    c.dispatch(req).await.expect("accepted");
    let done = c.next_completion().await;
    let Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
        result: Some(pb::task_result::Result::Flush(result)),
    })) = done.outcome
    else {
        panic!("expected a flush result: {done:?}");
    };
    let meta = &result.files[0];
    assert_eq!(meta.entry_count, 10_000);
    assert_eq!((meta.smallest_seq, meta.largest_seq), (1, 10_000));
    let bytes = std::fs::read(c.sst_path(101)).expect("the sst exists");
    assert_eq!(meta.size_bytes, bytes.len() as u64);
    assert!(meta.size_bytes > 8 << 20, "{}", meta.size_bytes);
    assert!(result.bytes_read > 12_000_000, "{}", result.bytes_read);
    let reader = SstReader::open(Bytes::from(bytes), "large.sst").expect("a valid sst");
    let found = reader
        .get(b"key004242", u64::MAX >> 8)
        .expect("get")
        .expect("found");
    assert_eq!(found.seq, 4243);
    c.wait_idle().await;
}
