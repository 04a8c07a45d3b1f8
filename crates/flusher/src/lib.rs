//! The flusher: a stateless worker that, for each MemtableFlush attempt, streams a frozen
//! memtable from the replayer holding it, writes it as one L0 SST, and reports the file to
//! the scheduler with CompleteTask.
//!
//! Vocabulary: a *flush spec* ([`request::FlushSpec`]) says what should happen (which
//! memtable of which table, held by which replayer, written as which file); the *task* is
//! the scheduler's durable decision to do it; an *attempt* ([`request::FlushAttempt`]) is
//! one running try of the task, fenced by its number: the scheduler commits only the
//! current attempt's report.
//!
//! Modules, from the wire inwards:
//! - [`request`] — the dispatch checked and converted (INVALID_ARGUMENT names the field);
//! - [`job`] — the attempt's IO: free-space check, `ReadMemtable` stream, upload, report;
//! - [`write`] — the pure part, entries in, SST out, with the stream's checks;
//! - [`error`] — why an attempt failed, mapped once to the reported `TaskError`;
//! - [`report`] — CompleteTask with retries;
//! - [`observe`] — metrics.
//!
//! One flush writes one SST, named by the first of the file ids the catalog allocated: a
//! memtable is at most `memtable_flush.max_memtable_size` (64 MiB by default), so splitting
//! it would only add L0 files.

pub mod error;
pub mod job;
pub mod observe;
pub mod report;
pub mod request;
pub mod write;

use std::sync::Arc;
use std::time::Instant;

use proto::v1::flusher_server::{Flusher, FlusherServer};
use proto::v1::scheduler_client::SchedulerClient;
use proto::v1::{
    DispatchResponse, FlushMemtableRequest, WorkerKind, WorkerStatus, WorkerStatusRequest,
};
use runtime::ServiceContext;
use runtime::worker::{RunningAttempts, serve_worker, service_info};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::job::FlushContext;
use crate::observe::FlushMetrics;
use crate::report::Reported;

struct FlusherApi {
    attempts: Arc<RunningAttempts>,
    advertised_address: String,
    started_at: Instant,
    /// Parent of every attempt's cancellation token.
    shutdown: CancellationToken,
    jobs: Arc<FlushContext>,
}

#[tonic::async_trait]
impl Flusher for FlusherApi {
    /// Accepts the attempt at once (or refuses it: INVALID_ARGUMENT, RESOURCE_EXHAUSTED when
    /// every slot is busy) and runs it in the background; the result goes to CompleteTask.
    async fn flush_memtable(
        &self,
        request: Request<FlushMemtableRequest>,
    ) -> Result<Response<DispatchResponse>, Status> {
        let attempt = request::parse_flush_request(request.into_inner())?;
        let guard = self
            .attempts
            .try_start(attempt.task_id, attempt.attempt, &self.shutdown)?;
        tracing::info!(
            task_id = attempt.task_id,
            attempt = attempt.attempt,
            table = %attempt.spec.table,
            memtable_id = attempt.spec.memtable_id,
            replayer = %attempt.spec.replayer_address,
            "flush accepted"
        );
        spawn_supervised(self.jobs.clone(), attempt, guard);
        Ok(Response::new(DispatchResponse { accepted: true }))
    }

    async fn get_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        Ok(Response::new(WorkerStatus {
            info: Some(service_info(
                "flusher",
                &self.advertised_address,
                self.started_at,
                &self.attempts,
            )),
            worker_id: self.attempts.worker_id(),
        }))
    }
}

/// Runs the attempt in its own task, inside its span. If it panics (a bug), its slot is
/// released by the unwinding guard and the attempt is reported as an internal error
/// instead of vanishing until its lease expires.
fn spawn_supervised(
    jobs: Arc<FlushContext>,
    attempt: request::FlushAttempt,
    guard: runtime::worker::AttemptGuard,
) {
    let span = job::attempt_span(&attempt);
    let (task_id, attempt_no, spec) = (attempt.task_id, attempt.attempt, attempt.spec.clone());
    let cancel = guard.cancel.clone();
    let started = Instant::now();
    let job = tokio::spawn(job::run_attempt(jobs.clone(), attempt, guard).instrument(span.clone()));
    let supervisor = async move {
        let Err(e) = job.await else { return };
        if !e.is_panic() {
            return;
        }
        tracing::error!("flush attempt panicked: {e}");
        jobs.metrics
            .attempt_ended(observe::Outcome::Failed, started.elapsed());
        let error = error::FlushError::Internal(format!("the flush attempt panicked: {e}"))
            .to_task_error(&spec, attempt_no, job::now_ms());
        let worker_id = jobs.attempts.worker_id();
        let request = report::failure(task_id, attempt_no, worker_id, error);
        if let r @ (Reported::Refused(_) | Reported::GaveUp(_)) =
            report::complete_task(jobs.scheduler.clone(), request, &cancel).await
        {
            tracing::warn!("could not report the panic: {r:?}");
        }
    };
    tokio::spawn(supervisor.instrument(span));
}

/// Runs the flusher until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let attempts = RunningAttempts::new(ctx.config.processor.worker_count);
    let storage = runtime::open_storage(&ctx.config)?;
    let scheduler = runtime::grpc::connect_lazy(
        &ctx.scheduler_endpoint,
        ctx.config.server.request_timeout.get(),
    )?;
    FlushMetrics::describe();
    let metrics = FlushMetrics::default();
    tokio::spawn(observe::run_rate_gauge(
        metrics.clone(),
        ctx.shutdown.clone(),
    ));
    let jobs = Arc::new(FlushContext {
        storage,
        scheduler: SchedulerClient::new(scheduler),
        attempts: attempts.clone(),
        request_timeout: ctx.config.server.request_timeout.get(),
        sst_options: sst::SstOptions::default(),
        metrics,
    });
    let api = FlusherApi {
        attempts: attempts.clone(),
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
        shutdown: ctx.shutdown.clone(),
        jobs,
    };
    let max_message = ctx.config.server.max_message_size.as_u64() as usize;
    let server = FlusherServer::new(api).max_decoding_message_size(max_message);
    serve_worker(ctx, WorkerKind::Flusher, attempts, server).await
}
