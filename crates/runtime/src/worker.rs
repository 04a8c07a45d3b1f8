//! A worker's side of the dispatch protocol's first step: register with the scheduler,
//! then heartbeat with the progress of running attempts, re-registering when the scheduler
//! says it does not know us (it restarted), and handing cancellations back to the worker.
//!
//! The loop never gives up: while the scheduler is unreachable the worker is not ready and
//! keeps retrying with backoff.

use std::sync::Arc;
use std::time::Duration;

use proto::v1::scheduler_client::SchedulerClient;
use proto::v1::{
    HeartbeatRequest, HeartbeatResponse, RegisterWorkerRequest, TableReplayState, TaskProgress,
    WorkerKind,
};
use tokio_util::sync::CancellationToken;

use crate::grpc::TracedChannel;
use crate::http::Readiness;

/// What the heartbeat loop asks of the worker it runs for.
pub trait HeartbeatSource: Send + Sync + 'static {
    /// Progress of every running attempt.
    fn running(&self) -> Vec<TaskProgress>;
    /// Replayers: per-table replay state. Others: empty.
    fn tables(&self) -> Vec<TableReplayState> {
        Vec::new()
    }
    /// The scheduler's reply (cancellations, committed flushes).
    fn on_reply(&self, reply: &HeartbeatResponse);
    /// The worker id changed (after a (re)registration).
    fn on_registered(&self, worker_id: u64) {
        let _ = worker_id;
    }
}

/// Identity of this worker for RegisterWorker.
#[derive(Clone, Debug)]
pub struct WorkerIdentity {
    pub kind: WorkerKind,
    pub name: String,
    pub advertised_address: String,
    pub slots: u32,
}

/// Registers and heartbeats until `shutdown` is cancelled.
pub async fn run_heartbeats(
    channel: TracedChannel,
    identity: WorkerIdentity,
    source: Arc<dyn HeartbeatSource>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let mut client = SchedulerClient::new(channel);
    let mut backoff = Duration::from_millis(100);
    let mut worker_id: Option<u64> = None;
    let mut interval = Duration::from_secs(1);
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let id = match worker_id {
            Some(id) => id,
            None => {
                let req = RegisterWorkerRequest {
                    kind: identity.kind as i32,
                    advertised_address: identity.advertised_address.clone(),
                    slots: identity.slots,
                    name: identity.name.clone(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                };
                let span = tracing::info_span!("register_worker", kind = ?identity.kind);
                match tracing::Instrument::instrument(client.register_worker(req), span).await {
                    Ok(resp) => {
                        let resp = resp.into_inner();
                        tracing::info!(worker_id = resp.worker_id, "registered with the scheduler");
                        interval =
                            Duration::from_millis(resp.heartbeat_interval_ms.clamp(50, 60_000));
                        worker_id = Some(resp.worker_id);
                        source.on_registered(resp.worker_id);
                        readiness.set(true);
                        backoff = Duration::from_millis(100);
                        resp.worker_id
                    }
                    Err(status) => {
                        tracing::warn!(error = %status.message(), code = ?status.code(), "registration with the scheduler failed; retrying");
                        readiness.set(false);
                        sleep_or_cancel(backoff, &shutdown).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
        };
        let req = HeartbeatRequest {
            worker_id: id,
            running: source.running(),
            tables: source.tables(),
        };
        match client.heartbeat(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                readiness.set(true);
                source.on_reply(&resp);
                if resp.reregister {
                    tracing::info!("scheduler does not know this worker; registering again");
                    worker_id = None;
                    continue;
                }
            }
            Err(status) => {
                tracing::warn!(error = %status.message(), code = ?status.code(), "heartbeat failed");
                readiness.set(false);
            }
        }
        sleep_or_cancel(interval, &shutdown).await;
    }
}

async fn sleep_or_cancel(d: Duration, shutdown: &CancellationToken) {
    // Biased: the same branch wins a tie on every run of a simulation.
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

/// The attempts running on a worker, with their progress and cancellation tokens, bounded
/// by the worker's slots. Every worker kind uses it as its [`HeartbeatSource`].
#[derive(Default)]
pub struct RunningAttempts {
    slots: u32,
    inner: std::sync::Mutex<RunningInner>,
}

#[derive(Default)]
struct RunningInner {
    worker_id: u64,
    attempts: std::collections::BTreeMap<(u64, u32), (TaskProgress, CancellationToken)>,
}

/// A slot held by one attempt; reports progress and releases the slot when dropped.
pub struct AttemptGuard {
    owner: Arc<RunningAttempts>,
    key: (u64, u32),
    /// Cancelled when the scheduler cancels the attempt or the worker shuts down.
    pub cancel: CancellationToken,
}

impl AttemptGuard {
    /// The (task, attempt) this guard holds.
    pub fn key(&self) -> (u64, u32) {
        self.key
    }

    /// Updates the progress the next heartbeat reports.
    pub fn progress(&self, update: impl FnOnce(&mut TaskProgress)) {
        if let Some((p, _)) = self.owner.lock().attempts.get_mut(&self.key) {
            update(p);
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        self.owner.lock().attempts.remove(&self.key);
    }
}

impl RunningAttempts {
    pub fn new(slots: u32) -> Arc<Self> {
        Arc::new(Self {
            slots,
            inner: Default::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunningInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for `(task_id, attempt)`, or refuses with RESOURCE_EXHAUSTED when every
    /// slot is busy (the scheduler then tries another worker).
    pub fn try_start(
        self: &Arc<Self>,
        task_id: u64,
        attempt: u32,
        parent: &CancellationToken,
    ) -> Result<AttemptGuard, tonic::Status> {
        let mut inner = self.lock();
        if inner.attempts.contains_key(&(task_id, attempt)) {
            return Err(tonic::Status::already_exists(format!(
                "task {task_id} attempt {attempt} is already running here"
            )));
        }
        if inner.attempts.len() >= self.slots as usize {
            return Err(tonic::Status::resource_exhausted(format!(
                "all {} slots busy",
                self.slots
            )));
        }
        let cancel = parent.child_token();
        inner.attempts.insert(
            (task_id, attempt),
            (
                TaskProgress {
                    task_id,
                    attempt,
                    ..Default::default()
                },
                cancel.clone(),
            ),
        );
        Ok(AttemptGuard {
            owner: self.clone(),
            key: (task_id, attempt),
            cancel,
        })
    }

    /// The worker id assigned by the scheduler (0 before registration).
    pub fn worker_id(&self) -> u64 {
        self.lock().worker_id
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }
}

impl HeartbeatSource for RunningAttempts {
    fn running(&self) -> Vec<TaskProgress> {
        self.lock().attempts.values().map(|(p, _)| *p).collect()
    }

    fn on_reply(&self, reply: &HeartbeatResponse) {
        let inner = self.lock();
        for c in &reply.cancel {
            if let Some((_, token)) = inner.attempts.get(&(c.task_id, c.attempt)) {
                tracing::info!(
                    task_id = c.task_id,
                    attempt = c.attempt,
                    "scheduler cancelled the attempt"
                );
                token.cancel();
            }
        }
    }

    fn on_registered(&self, worker_id: u64) {
        self.lock().worker_id = worker_id;
    }
}

/// The `ServiceInfo` every worker's GetStatus returns.
pub fn service_info(
    service: &str,
    advertised_address: &str,
    started_at: std::time::Instant,
    attempts: &RunningAttempts,
) -> proto::v1::ServiceInfo {
    proto::v1::ServiceInfo {
        service: service.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: started_at.elapsed().as_secs(),
        advertised_address: advertised_address.to_owned(),
        slots: attempts.slots(),
        running: attempts.running(),
        memory_bytes: crate::metrics::resident_memory_bytes().unwrap_or(0),
    }
}

/// Starts the heartbeat loop of a worker service in the background.
pub fn spawn_heartbeats(
    ctx: &crate::ServiceContext,
    kind: WorkerKind,
    source: Arc<dyn HeartbeatSource>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let channel = crate::grpc::connect_lazy(
        &ctx.scheduler_endpoint,
        ctx.config.server.request_timeout.get(),
    )?;
    let identity = WorkerIdentity {
        kind,
        name: std::env::var("HOSTNAME").unwrap_or_else(|_| ctx.advertised_address.clone()),
        advertised_address: ctx.advertised_address.clone(),
        slots: ctx.config.processor.worker_count,
    };
    Ok(tokio::spawn(run_heartbeats(
        channel,
        identity,
        source,
        ctx.readiness.clone(),
        ctx.shutdown.clone(),
    )))
}

/// Runs a worker service until `ctx.shutdown`: its gRPC service (with Health, marked
/// serving, and reflection) on the bound listener, and the registration/heartbeat loop.
pub async fn serve_worker<S>(
    ctx: crate::ServiceContext,
    kind: WorkerKind,
    attempts: Arc<RunningAttempts>,
    service: S,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    serve_worker_with(ctx, kind, attempts, service).await
}

/// [`serve_worker`] with a heartbeat source of the worker's own (a replayer reports its
/// tables and acts on checkpoints).
pub async fn serve_worker_with<S>(
    ctx: crate::ServiceContext,
    kind: WorkerKind,
    source: Arc<dyn HeartbeatSource>,
    service: S,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
        + tonic::server::NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: axum::response::IntoResponse,
    S::Future: Send + 'static,
{
    let heartbeats = spawn_heartbeats(&ctx, kind, source)?;
    let (health, router) = crate::grpc::router(&ctx.config.server)?;
    health.set_serving::<S>().await;
    router
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(ctx.grpc_listener),
            ctx.shutdown.clone().cancelled_owned(),
        )
        .await?;
    heartbeats.abort();
    Ok(())
}

/// A malformed dispatch, naming the field (INVALID_ARGUMENT at the edge).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidRequest {
    pub field: &'static str,
    pub reason: String,
}

impl From<InvalidRequest> for tonic::Status {
    fn from(e: InvalidRequest) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}

/// An [`InvalidRequest`] for `field`.
pub fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field,
        reason: reason.into(),
    }
}
