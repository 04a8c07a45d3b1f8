//! P6: the scheduler's dispatch path. An in-process scheduler (real gRPC on loopback, real
//! RocksDB catalog with synced writes) and fake flushers that complete every dispatch at
//! once with an empty result. Measures (1) tasks dispatched and committed per second when
//! `--tasks` flush requests arrive as fast as `--concurrency` clients can send them, and
//! (2) the latency from RequestFlush to the dispatch reaching a worker, at a fixed `--rate`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::v1 as pb;
use runtime::{Config, ServiceContext, ServiceKind};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Options of the scheduler workload.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Tasks for the throughput phase.
    #[arg(long, default_value_t = 5000)]
    pub tasks: u64,
    /// Concurrent clients sending RequestFlush in the throughput phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Fake flushers.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Fixed arrival rate (tasks/s) of the latency phase.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Length of the latency phase.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
}

/// Results.
#[derive(Debug, serde::Serialize)]
pub struct SchedulerResult {
    tasks: u64,
    throughput_tasks_per_sec: f64,
    latency_rate_per_sec: u64,
    latency_samples: usize,
    dispatch_p50_ms: f64,
    dispatch_p99_ms: f64,
    dispatch_max_ms: f64,
}

#[derive(Clone)]
struct NoopFlusher {
    scheduler: pb::scheduler_client::SchedulerClient<Channel>,
    worker_id: Arc<Mutex<u64>>,
    arrived: mpsc::UnboundedSender<(u64, Instant)>,
}

#[tonic::async_trait]
impl pb::flusher_server::Flusher for NoopFlusher {
    async fn flush_memtable(
        &self,
        r: Request<pb::FlushMemtableRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let d = r.into_inner().dispatch.unwrap_or_default();
        let _ = self.arrived.send((d.task_id, Instant::now()));
        let mut client = self.scheduler.clone();
        let worker_id = *self.worker_id.lock().unwrap_or_else(|e| e.into_inner());
        tokio::spawn(async move {
            let _ = client
                .complete_task(pb::CompleteTaskRequest {
                    task_id: d.task_id,
                    attempt: d.attempt,
                    worker_id,
                    outcome: Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
                        result: Some(pb::task_result::Result::Flush(pb::FlushResult::default())),
                    })),
                })
                .await;
        });
        Ok(Response::new(pb::DispatchResponse { accepted: true }))
    }
}

async fn start_worker(
    scheduler_url: &str,
    arrived: mpsc::UnboundedSender<(u64, Instant)>,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let scheduler =
        pb::scheduler_client::SchedulerClient::connect(scheduler_url.to_owned()).await?;
    let worker = NoopFlusher {
        scheduler: scheduler.clone(),
        worker_id: Arc::default(),
        arrived,
    };
    let id_slot = worker.worker_id.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::flusher_server::FlusherServer::new(worker))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = scheduler;
    let id = client
        .register_worker(pb::RegisterWorkerRequest {
            kind: pb::WorkerKind::Flusher as i32,
            advertised_address: address,
            slots: 1024,
            name: String::new(),
            version: "bench".into(),
        })
        .await?
        .into_inner()
        .worker_id;
    *id_slot.lock().unwrap_or_else(|e| e.into_inner()) = id;
    // Heartbeats keep the lease.
    tokio::spawn(async move {
        loop {
            let _ = client
                .heartbeat(pb::HeartbeatRequest {
                    worker_id: id,
                    ..Default::default()
                })
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    Ok(())
}

/// The replayer that holds the bench table: accepts the WalReplay dispatch, heartbeats.
#[derive(Clone, Default)]
struct HoldingReplayer {
    held: Arc<Mutex<Option<(u64, u32)>>>,
}

#[tonic::async_trait]
impl pb::replayer_server::Replayer for HoldingReplayer {
    async fn replay_from_checkpoint(
        &self,
        r: Request<pb::ReplayFromCheckpointRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let d = r.into_inner().dispatch.unwrap_or_default();
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = Some((d.task_id, d.attempt));
        Ok(Response::new(pb::DispatchResponse { accepted: true }))
    }
}

/// Starts the replayer; returns its address and the (task, attempt) holding the table.
async fn start_replayer(scheduler_url: &str) -> anyhow::Result<(String, (u64, u32))> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let replayer = HoldingReplayer::default();
    let held = replayer.held.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::replayer_server::ReplayerServer::new(replayer))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client =
        pb::scheduler_client::SchedulerClient::connect(scheduler_url.to_owned()).await?;
    let id = client
        .register_worker(pb::RegisterWorkerRequest {
            kind: pb::WorkerKind::Replayer as i32,
            advertised_address: address.clone(),
            slots: 4,
            name: String::new(),
            version: "bench".into(),
        })
        .await?
        .into_inner()
        .worker_id;
    let beat = held.clone();
    tokio::spawn(async move {
        loop {
            let running = beat
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|(task_id, attempt)| pb::TaskProgress {
                    task_id,
                    attempt,
                    ..Default::default()
                })
                .into_iter()
                .collect();
            let _ = client
                .heartbeat(pb::HeartbeatRequest {
                    worker_id: id,
                    running,
                    tables: Vec::new(),
                })
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    for _ in 0..200 {
        if let Some(owner) = *held.lock().unwrap_or_else(|e| e.into_inner()) {
            return Ok((address, owner));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::bail!("the scheduler never assigned the bench table to the replayer")
}

/// The flush of memtable `memtable_id` (1, 2, ...): ten seqs each, a contiguous chain from
/// seq 1, so the scheduler commits them all (in order) however they complete.
fn request(memtable_id: u64, replayer: &(String, (u64, u32))) -> pb::RequestFlushRequest {
    let after = (memtable_id - 1) * 10;
    pb::RequestFlushRequest {
        table: "bench".into(),
        memtable_id,
        first_seq: after + 1,
        last_seq: after + 10,
        size_bytes: 1,
        replayer_address: replayer.0.clone(),
        after_seq: after,
        replay_task_id: replayer.1.0,
        replay_attempt: replayer.1.1,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Runs both phases.
pub async fn run(o: Options) -> anyhow::Result<SchedulerResult> {
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::default();
    cfg.catalog.path = dir.path().join("catalog").display().to_string();
    cfg.storage.url = format!("file://{}", dir.path().join("storage").display());
    cfg.processor.queue_size = 1_000_000;
    cfg.memtable_flush.max_concurrent_flushes = 100_000;
    cfg.telemetry.log_level = "warn".into();
    let ctx = ServiceContext::bind_local(ServiceKind::Scheduler, cfg, "").await?;
    let url = format!("http://{}", ctx.advertised_address);
    let shutdown = ctx.shutdown.clone();
    tokio::spawn(scheduler::run(ctx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin = pb::admin_client::AdminClient::connect(url.clone()).await?;
    admin
        .create_table(pb::CreateTableRequest {
            name: "bench".into(),
            columns: vec![],
        })
        .await?;
    let replayer = Arc::new(start_replayer(&url).await?);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..o.workers {
        start_worker(&url, tx.clone()).await?;
    }
    let client = pb::scheduler_client::SchedulerClient::connect(url.clone()).await?;

    // Phase 1: throughput, until every task has succeeded.
    let started = Instant::now();
    let mut senders = Vec::new();
    let per = o.tasks.div_ceil(o.concurrency.max(1));
    for c in 0..o.concurrency {
        let mut client = client.clone();
        let replayer = replayer.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..per {
                let id = c * per + i + 1;
                let _ = client.request_flush(request(id, &replayer)).await;
            }
        }));
    }
    for s in senders {
        s.await?;
    }
    let total = per * o.concurrency;
    loop {
        let q = admin
            .get_queue_status(pb::GetQueueStatusRequest {})
            .await?
            .into_inner();
        // The WalReplay task holding the table runs for as long as the replayer lives.
        let busy: u32 = q
            .types
            .iter()
            .filter(|t| t.r#type != pb::TaskType::WalReplay as i32)
            .map(|t| t.pending + t.running)
            .sum();
        if busy == 0 {
            break;
        }
        // Polling is not free (GetQueueStatus reads the whole queue): keep it coarse.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let throughput = total as f64 / started.elapsed().as_secs_f64();
    while rx.try_recv().is_ok() {}

    // Phase 2: latency at a fixed rate.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / o.rate.max(1) as f64));
    let n = o.rate * o.seconds;
    let base = total + 1;
    for i in 0..n {
        ticker.tick().await;
        let mut client = client.clone();
        let sent = sent.clone();
        let replayer = replayer.clone();
        tokio::spawn(async move {
            let now = Instant::now();
            if let Ok(r) = client.request_flush(request(base + i, &replayer)).await {
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(r.into_inner().task_id, now);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut latencies = Vec::new();
    let sent = sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    while let Ok((task_id, at)) = rx.try_recv() {
        if let Some(t0) = sent.get(&task_id) {
            latencies.push(at.duration_since(*t0).as_secs_f64() * 1000.0);
        }
    }
    latencies.sort_by(f64::total_cmp);
    shutdown.cancel();
    Ok(SchedulerResult {
        tasks: total,
        throughput_tasks_per_sec: throughput,
        latency_rate_per_sec: o.rate,
        latency_samples: latencies.len(),
        dispatch_p50_ms: percentile(&latencies, 0.50),
        dispatch_p99_ms: percentile(&latencies, 0.99),
        dispatch_max_ms: latencies.last().copied().unwrap_or(0.0),
    })
}
