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
    /// The scheduler's reply to a heartbeat that reported `sent` as running. An attempt
    /// in `sent` that the reply does not cancel is one the scheduler knows as the current
    /// attempt of a running task on this worker.
    fn on_reply_to(&self, sent: &[TaskProgress], reply: &HeartbeatResponse) {
        let _ = sent;
        self.on_reply(reply);
    }
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
        let running = source.running();
        let req = HeartbeatRequest {
            worker_id: id,
            running: running.clone(),
            tables: source.tables(),
        };
        match client.heartbeat(req).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                readiness.set(true);
                if resp.reregister {
                    source.on_reply(&resp);
                } else {
                    source.on_reply_to(&running, &resp);
                }
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
    /// The IO limiter of each attempt that paces to a share of the scheduler's budget.
    limiters: std::collections::BTreeMap<(u64, u32), Arc<crate::throttle::RateLimiter>>,
    /// Cancelled when the scheduler preempts the attempt (see [`AttemptGuard::preempt`]).
    preempts: std::collections::BTreeMap<(u64, u32), CancellationToken>,
    /// Cancelled (fired) once the scheduler has confirmed the attempt (see
    /// [`AttemptGuard::confirmed`]).
    confirmations: std::collections::BTreeMap<(u64, u32), CancellationToken>,
}

/// A slot held by one attempt; reports progress and releases the slot when dropped.
pub struct AttemptGuard {
    owner: Arc<RunningAttempts>,
    key: (u64, u32),
    /// Cancelled when the scheduler cancels the attempt or the worker shuts down.
    pub cancel: CancellationToken,
    /// Cancelled when the scheduler asks the attempt to stop early and report what it has
    /// finished (a compaction preempted for urgent work).
    pub preempt: CancellationToken,
    confirmed: CancellationToken,
}

impl AttemptGuard {
    /// The (task, attempt) this guard holds.
    pub fn key(&self) -> (u64, u32) {
        self.key
    }

    /// Paces this attempt with `limiter`, whose rate follows the share of the IO budget
    /// the scheduler sends in heartbeat replies.
    pub fn pace_with(&self, limiter: Arc<crate::throttle::RateLimiter>) {
        self.owner.lock().limiters.insert(self.key, limiter);
    }

    /// Updates the progress the next heartbeat reports.
    pub fn progress(&self, update: impl FnOnce(&mut TaskProgress)) {
        if let Some((p, _)) = self.owner.lock().attempts.get_mut(&self.key) {
            update(p);
        }
    }

    /// Waits until the scheduler has confirmed this attempt — a heartbeat reported it
    /// running and the reply did not cancel it, so it is the current attempt of a live
    /// task the scheduler dispatched to this worker — and returns true; false if the
    /// attempt is cancelled first. Destructive work (Cleanup's deletes) waits for it, so a
    /// forged or stale dispatch (an unknown task id, an old attempt) deletes nothing.
    pub async fn confirmed(&self) -> bool {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => false,
            _ = self.confirmed.cancelled() => !self.cancel.is_cancelled(),
        }
    }
}

impl Drop for AttemptGuard {
    fn drop(&mut self) {
        let mut inner = self.owner.lock();
        inner.attempts.remove(&self.key);
        inner.limiters.remove(&self.key);
        inner.preempts.remove(&self.key);
        inner.confirmations.remove(&self.key);
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
        let preempt = CancellationToken::new();
        inner.preempts.insert((task_id, attempt), preempt.clone());
        let confirmed = CancellationToken::new();
        inner
            .confirmations
            .insert((task_id, attempt), confirmed.clone());
        Ok(AttemptGuard {
            owner: self.clone(),
            key: (task_id, attempt),
            cancel,
            preempt,
            confirmed,
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
        for p in &reply.preempt {
            if let Some(token) = inner.preempts.get(&(p.task_id, p.attempt)) {
                tracing::info!(
                    task_id = p.task_id,
                    attempt = p.attempt,
                    "scheduler preempted the attempt: stopping at the next output boundary"
                );
                token.cancel();
            }
        }
        for b in &reply.budgets {
            if let Some(l) = inner.limiters.get(&(b.task_id, b.attempt))
                && l.bytes_per_sec() != b.io_bytes_per_sec
                && b.io_bytes_per_sec > 0
            {
                tracing::debug!(
                    task_id = b.task_id,
                    attempt = b.attempt,
                    bytes_per_sec = b.io_bytes_per_sec,
                    "new IO budget share"
                );
                l.set_bytes_per_sec(b.io_bytes_per_sec);
            }
        }
    }

    fn on_reply_to(&self, sent: &[TaskProgress], reply: &HeartbeatResponse) {
        self.on_reply(reply);
        let inner = self.lock();
        for p in sent {
            let key = (p.task_id, p.attempt);
            let cancelled = reply.cancel.iter().any(|c| (c.task_id, c.attempt) == key);
            if let Some(token) = inner.confirmations.get(&key)
                && !cancelled
            {
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
    let (health, router) = crate::grpc::router(&ctx.config)?;
    let incoming = crate::grpc::incoming(ctx.grpc_listener, &ctx.config)?;
    health.set_serving::<S>().await;
    router
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, ctx.shutdown.clone().cancelled_owned())
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
        tonic::Status::invalid_argument(bounded_message(e.to_string()))
    }
}

/// A status message of at most 1 KiB: reasons may quote the request, and a message that
/// echoes a huge input would exceed the client's header limit (gRPC sends it as a header),
/// turning a clear INVALID_ARGUMENT into an HTTP/2 protocol error.
pub fn bounded_message(mut message: String) -> String {
    const MAX: usize = 1024;
    if message.len() > MAX {
        let mut cut = MAX;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("… (truncated)");
    }
    message
}

/// An [`InvalidRequest`] for `field`.
pub fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidRequest {
    InvalidRequest {
        field,
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::v1::TaskBudget;

    #[test]
    fn a_heartbeat_reply_sets_the_new_budget_share_of_a_paced_attempt() {
        let attempts = RunningAttempts::new(2);
        let parent = CancellationToken::new();
        let paced = attempts.try_start(1, 1, &parent).expect("slot");
        let limiter = Arc::new(crate::throttle::RateLimiter::new(1000).expect("limited"));
        paced.pace_with(limiter.clone());
        let _unpaced = attempts.try_start(2, 1, &parent).expect("slot");
        let budget = |task_id, attempt, io_bytes_per_sec| TaskBudget {
            task_id,
            attempt,
            io_bytes_per_sec,
        };
        attempts.on_reply(&HeartbeatResponse {
            budgets: vec![budget(1, 1, 4000), budget(2, 1, 9), budget(1, 2, 7)],
            ..Default::default()
        });
        assert_eq!(
            limiter.bytes_per_sec(),
            4000,
            "only its own attempt's share"
        );
        // Once the attempt ends, a late share changes nothing.
        drop(paced);
        attempts.on_reply(&HeartbeatResponse {
            budgets: vec![budget(1, 1, 10)],
            ..Default::default()
        });
        assert_eq!(limiter.bytes_per_sec(), 4000);
    }
}
