//! Fake workers for scheduler tests: small real gRPC servers that implement the Flusher and
//! Compactor dispatch RPCs, record what they were asked to do, and leave registration,
//! heartbeats and completion to the test, so it can play a dead, stuck or zombie worker.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// One dispatch a fake worker received.
#[derive(Debug, Clone)]
pub struct Received {
    pub task_id: u64,
    pub attempt: u32,
    pub output_file_ids: Vec<u64>,
    pub spec: pb::TaskSpec,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<mpsc::UnboundedSender<Received>>>);

impl Sink {
    fn push(
        &self,
        d: Option<pb::DispatchRequest>,
        outputs: Vec<u64>,
        spec: pb::task_spec::Spec,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let d = d.ok_or_else(|| Status::invalid_argument("dispatch: required"))?;
        if let Ok(s) = self.0.lock() {
            let _ = s.send(Received {
                task_id: d.task_id,
                attempt: d.attempt,
                output_file_ids: outputs,
                spec: pb::TaskSpec { spec: Some(spec) },
            });
        }
        Ok(Response::new(pb::DispatchResponse { accepted: true }))
    }
}

#[tonic::async_trait]
impl pb::flusher_server::Flusher for Sink {
    async fn flush_memtable(
        &self,
        r: Request<pb::FlushMemtableRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let r = r.into_inner();
        let spec = r.spec.unwrap_or_default();
        self.push(
            r.dispatch,
            spec.output_file_ids.clone(),
            pb::task_spec::Spec::Flush(spec),
        )
    }
}

#[tonic::async_trait]
impl pb::compactor_server::Compactor for Sink {
    async fn compact_level(
        &self,
        r: Request<pb::CompactLevelRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let r = r.into_inner();
        let spec = r.spec.unwrap_or_default();
        self.push(
            r.dispatch,
            spec.output_file_ids.clone(),
            pb::task_spec::Spec::Compaction(spec),
        )
    }

    // The scheduler's periodic work goes elsewhere: a fake compactor is always "busy" for it
    // (the scheduler requeues without counting a failure), so tests see only compactions.
    async fn run_cleanup(
        &self,
        _r: Request<pb::RunCleanupRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        Err(Status::resource_exhausted(
            "fake compactor: compactions only",
        ))
    }

    async fn update_statistics(
        &self,
        _r: Request<pb::UpdateStatisticsRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        Err(Status::resource_exhausted(
            "fake compactor: compactions only",
        ))
    }
}

/// A fake worker with a real gRPC server on 127.0.0.1.
pub struct FakeWorker {
    pub worker_id: u64,
    pub address: String,
    pub kind: pb::WorkerKind,
    pub received: mpsc::UnboundedReceiver<Received>,
    pub scheduler: pb::scheduler_client::SchedulerClient<Channel>,
    shutdown: tokio::sync::watch::Sender<bool>,
    /// Attempts received and not yet reported: `next_dispatch`'s heartbeats list them, as
    /// a real worker's do (an attempt its worker does not list is a lost dispatch).
    held: Vec<(u64, u32)>,
}

impl FakeWorker {
    /// Starts the server and registers with the scheduler at `scheduler_addr`.
    pub async fn start(kind: pb::WorkerKind, scheduler_addr: &str, slots: u32) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let (tx, received) = mpsc::unbounded_channel();
        let sink = Sink(Arc::new(Mutex::new(tx)));
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let router = tonic::transport::Server::builder()
            .add_service(pb::flusher_server::FlusherServer::new(sink.clone()))
            .add_service(pb::compactor_server::CompactorServer::new(sink));
        tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async move {
                let _ = stop_rx.wait_for(|v| *v).await;
            },
        ));
        let mut scheduler =
            pb::scheduler_client::SchedulerClient::connect(format!("http://{scheduler_addr}"))
                .await
                .expect("connect to the scheduler");
        let worker_id = scheduler
            .register_worker(pb::RegisterWorkerRequest {
                kind: kind as i32,
                advertised_address: address.clone(),
                slots,
                name: format!("fake-{address}"),
                version: "test".into(),
            })
            .await
            .expect("register")
            .into_inner()
            .worker_id;
        Self {
            worker_id,
            address,
            kind,
            received,
            scheduler,
            shutdown: stop_tx,
            held: Vec::new(),
        }
    }

    /// Sends one heartbeat reporting `running` as (task, attempt, bytes_read).
    pub async fn heartbeat(&mut self, running: &[(u64, u32, u64)]) -> pb::HeartbeatResponse {
        self.scheduler
            .heartbeat(pb::HeartbeatRequest {
                worker_id: self.worker_id,
                running: running
                    .iter()
                    .map(|(t, a, b)| pb::TaskProgress {
                        task_id: *t,
                        attempt: *a,
                        bytes_read: *b,
                        ..Default::default()
                    })
                    .collect(),
                tables: Vec::new(),
            })
            .await
            .expect("heartbeat")
            .into_inner()
    }

    /// Waits for the next dispatch, heartbeating (listing the attempts received and not yet
    /// reported) meanwhile so the worker stays alive.
    pub async fn next_dispatch(&mut self, timeout: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(d) = self.received.try_recv() {
                self.held.push((d.task_id, d.attempt));
                return Some(d);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            let held: Vec<(u64, u32, u64)> = self.held.iter().map(|&(t, a)| (t, a, 0)).collect();
            let _ = self.heartbeat(&held).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reports success with `files`.
    pub async fn complete_flush(
        &mut self,
        d: &Received,
        files: Vec<pb::FileMeta>,
    ) -> Result<(), Status> {
        self.complete(
            d.task_id,
            d.attempt,
            pb::task_result::Result::Flush(pb::FlushResult {
                files,
                bytes_read: 0,
            }),
        )
        .await
    }

    /// Reports success of `(task, attempt)`.
    pub async fn complete(
        &mut self,
        task_id: u64,
        attempt: u32,
        result: pb::task_result::Result,
    ) -> Result<(), Status> {
        self.held.retain(|&k| k != (task_id, attempt));
        self.scheduler
            .complete_task(pb::CompleteTaskRequest {
                task_id,
                attempt,
                worker_id: self.worker_id,
                outcome: Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
                    result: Some(result),
                })),
            })
            .await
            .map(|_| ())
    }

    /// Reports a failure.
    pub async fn fail(&mut self, task_id: u64, attempt: u32, message: &str) -> Result<(), Status> {
        self.held.retain(|&k| k != (task_id, attempt));
        self.scheduler
            .complete_task(pb::CompleteTaskRequest {
                task_id,
                attempt,
                worker_id: self.worker_id,
                outcome: Some(pb::complete_task_request::Outcome::Error(pb::TaskError {
                    kind: pb::ErrorKind::Flush as i32,
                    message: message.to_owned(),
                    retriable: true,
                    attempt,
                    ..Default::default()
                })),
            })
            .await
            .map(|_| ())
    }
}

impl Drop for FakeWorker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A fake replayer: a real gRPC server that accepts every WalReplay dispatch (holding the
/// table under that attempt) and heartbeats in the background, so the scheduler sees a live
/// replayer owning the tables, and flush requests can quote the owning attempt.
pub struct FakeReplayer {
    pub address: String,
    held: Arc<Mutex<std::collections::BTreeMap<String, (u64, u32)>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

#[derive(Clone)]
struct ReplaySink(Arc<Mutex<std::collections::BTreeMap<String, (u64, u32)>>>);

#[tonic::async_trait]
impl pb::replayer_server::Replayer for ReplaySink {
    async fn replay_from_checkpoint(
        &self,
        r: Request<pb::ReplayFromCheckpointRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let r = r.into_inner();
        let d = r
            .dispatch
            .ok_or_else(|| Status::invalid_argument("dispatch: required"))?;
        let table = r.spec.unwrap_or_default().table;
        if let Ok(mut held) = self.0.lock() {
            held.insert(table, (d.task_id, d.attempt));
        }
        Ok(Response::new(pb::DispatchResponse { accepted: true }))
    }
}

impl FakeReplayer {
    /// Starts the server, registers with the scheduler and heartbeats every 200 ms until
    /// dropped (re-registering if the scheduler forgot it).
    pub async fn start(scheduler_addr: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let held = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut server_stop = stop_rx.clone();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(pb::replayer_server::ReplayerServer::new(ReplaySink(
                    held.clone(),
                )))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async move {
                        let _ = server_stop.wait_for(|v| *v).await;
                    },
                ),
        );
        let mut scheduler =
            pb::scheduler_client::SchedulerClient::connect(format!("http://{scheduler_addr}"))
                .await
                .expect("connect to the scheduler");
        let register = pb::RegisterWorkerRequest {
            kind: pb::WorkerKind::Replayer as i32,
            advertised_address: address.clone(),
            slots: 64,
            name: format!("fake-replayer-{address}"),
            version: "test".into(),
        };
        let mut worker_id = scheduler
            .register_worker(register.clone())
            .await
            .expect("register")
            .into_inner()
            .worker_id;
        let beat_held = held.clone();
        tokio::spawn(async move {
            while !*stop_rx.borrow() {
                let running: Vec<pb::TaskProgress> = beat_held
                    .lock()
                    .map(|h| {
                        h.values()
                            .map(|(t, a)| pb::TaskProgress {
                                task_id: *t,
                                attempt: *a,
                                ..Default::default()
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let reply = scheduler
                    .heartbeat(pb::HeartbeatRequest {
                        worker_id,
                        running,
                        tables: Vec::new(),
                    })
                    .await;
                // An error: the scheduler is restarting; keep trying.
                if let Ok(r) = reply {
                    let r = r.into_inner();
                    if let Ok(mut h) = beat_held.lock() {
                        h.retain(|_, (t, a)| {
                            !r.cancel.iter().any(|c| c.task_id == *t && c.attempt == *a)
                        });
                    }
                    if r.reregister
                        && let Ok(resp) = scheduler.register_worker(register.clone()).await
                    {
                        worker_id = resp.into_inner().worker_id;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            address,
            held,
            shutdown: stop_tx,
        }
    }

    /// The WalReplay (task, attempt) under which `table` is held, waiting up to 10 s for
    /// the scheduler to assign it.
    pub async fn owner(&self, table: &str) -> (u64, u32) {
        for _ in 0..200 {
            if let Some(o) = self.held.lock().ok().and_then(|h| h.get(table).copied()) {
                return o;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("table {table} was never assigned to the fake replayer");
    }
}

impl Drop for FakeReplayer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A file as a flusher would report it.
pub fn file(id: u64, smallest: &[u8], largest: &[u8], seq: u64) -> pb::FileMeta {
    pb::FileMeta {
        file_id: id,
        size_bytes: 4096,
        smallest_key: smallest.to_vec(),
        largest_key: largest.to_vec(),
        smallest_seq: seq,
        largest_seq: seq,
        entry_count: 10,
        tombstone_count: 0,
    }
}
