//! The compactor: a stateless worker that runs Compaction attempts (merging input SSTs into
//! output SSTs) and the Cleanup and StatisticsUpdate work items, reporting each result to
//! the scheduler with CompleteTask.
//!
//! Vocabulary: a *compaction spec* ([`request::CompactionSpec`]) says what should happen
//! (which files of which table to merge into which level, under which output ids); the
//! *task* is the scheduler's durable decision to do it; an *attempt*
//! ([`request::CompactionAttempt`]) is one running try of the task, fenced by its number:
//! the scheduler commits only the current attempt's report. A *subcompaction* is one key
//! range of an attempt, merged on its own thread.
//!
//! Modules of CompactLevel, from the wire inwards:
//! - [`request`] — the dispatch checked and converted (INVALID_ARGUMENT names the field);
//! - [`job`] — the attempt's IO: free-space and input checks, the merge on blocking
//!   threads, progress, report;
//! - [`merge`] — the core, inputs in, outputs out: [`merge::compact`] is what the RPC,
//!   the model tests and benchmarks run;
//! - [`sources`] — the inputs as merge sources (one per L0 file, one lazily-opening
//!   iterator per sorted level), bounded to a key range;
//! - [`ranges`] — subcompaction key ranges of about equal input bytes;
//! - [`store`] — where inputs are read and outputs written (storage or memory);
//! - [`throttle`] — the IO budget;
//! - [`error`] — why an attempt failed, mapped once to the reported `TaskError`;
//! - [`report`] — CompleteTask with retries (shared by every work item of this worker);
//! - [`observe`] — metrics;
//! - [`testing`] — fixture SSTs for tests and benchmarks.
//!
//! The other work items: [`cleanup`] (Cleanup) and [`stats`] (StatisticsUpdate).

pub mod cleanup;
pub mod error;
pub mod job;
pub mod merge;
pub mod observe;
pub mod ranges;
pub mod report;
pub mod request;
pub mod sources;
pub mod stats;
pub mod store;
pub mod testing;
pub mod throttle;
pub mod wal_input;

use std::sync::Arc;
use std::time::Instant;

use proto::v1::compactor_server::{Compactor, CompactorServer};
use proto::v1::scheduler_client::SchedulerClient;
use proto::v1::{
    self as pb, CompactLevelRequest, DispatchResponse, WorkerKind, WorkerStatus,
    WorkerStatusRequest,
};
use runtime::ServiceContext;
use runtime::worker::{AttemptGuard, RunningAttempts, serve_worker, service_info};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::job::CompactionContext;
use crate::observe::{CompactionMetrics, Outcome};
use crate::report::Reported;

struct CompactorApi {
    attempts: Arc<RunningAttempts>,
    advertised_address: String,
    started_at: Instant,
    /// Parent of every attempt's cancellation token.
    shutdown: CancellationToken,
    compactions: Arc<CompactionContext>,
}

#[tonic::async_trait]
impl Compactor for CompactorApi {
    /// Accepts the attempt at once (or refuses it: INVALID_ARGUMENT, RESOURCE_EXHAUSTED when
    /// every slot is busy) and runs it in the background; the result goes to CompleteTask.
    async fn compact_level(
        &self,
        request: Request<CompactLevelRequest>,
    ) -> Result<Response<DispatchResponse>, Status> {
        let attempt = request::parse_compact_request(request.into_inner())?;
        let guard = self
            .attempts
            .try_start(attempt.task_id, attempt.attempt, &self.shutdown)?;
        tracing::info!(
            task_id = attempt.task_id,
            attempt = attempt.attempt,
            table = %attempt.spec.table,
            compaction = %attempt.spec.describe(),
            reason = %attempt.spec.reason,
            "compaction accepted"
        );
        spawn_compaction(self.compactions.clone(), attempt, guard);
        Ok(Response::new(DispatchResponse { accepted: true }))
    }

    /// Cleanup: deletes the listed objects (the scheduler decided they are garbage).
    async fn run_cleanup(
        &self,
        request: Request<pb::RunCleanupRequest>,
    ) -> Result<Response<DispatchResponse>, Status> {
        let req = request.into_inner();
        let (d, spec) = dispatch_and_spec(req.dispatch, req.spec)?;
        // Validated before accepting: a bad path is the scheduler's bug, said at once.
        cleanup::CleanupPlan::from_spec(&spec)
            .map_err(|e| Status::invalid_argument(format!("spec: {e}")))?;
        let guard = self
            .attempts
            .try_start(d.task_id, d.attempt, &self.shutdown)?;
        let ctx = self.compactions.clone();
        let span = tracing::info_span!("cleanup", task_id = d.task_id, attempt = d.attempt, table = %spec.table, ssts = spec.sst_paths.len(), wal = spec.wal_paths.len(), dry_run = spec.dry_run);
        tokio::spawn(
            async move {
                // Deletes are the one thing a forged or stale dispatch could do harm with:
                // wait until the scheduler confirms the attempt (its next heartbeat reply).
                if !spec.dry_run && !guard.confirmed().await {
                    // Cancelled (by the scheduler, which does not know it, or by shutdown):
                    // nothing to report.
                    tracing::warn!(
                        "cleanup attempt cancelled before the scheduler confirmed it: nothing deleted"
                    );
                    return;
                }
                let outcome = match cleanup::run_cleanup(&ctx.storage, &spec, &guard.cancel).await {
                    Ok(r) => {
                        tracing::info!(
                            deleted = r.deleted.len(),
                            bytes = r.bytes_reclaimed,
                            "cleanup done"
                        );
                        Ok(pb::task_result::Result::Cleanup(r))
                    }
                    Err(e) => Err(pb::TaskError {
                        kind: e.kind() as i32,
                        message: format!("cleanup of table {:?}: {e}", spec.table),
                        file: e.file().unwrap_or_default().to_owned(),
                        offset: 0,
                        retriable: e.retriable(),
                        attempt: d.attempt,
                        at_unix_ms: job::now_ms(),
                    }),
                };
                finish(&ctx, &guard, d, outcome).await;
            }
            .instrument(span),
        );
        Ok(Response::new(DispatchResponse { accepted: true }))
    }

    /// StatisticsUpdate: recomputes the table's statistics from its current files.
    async fn update_statistics(
        &self,
        request: Request<pb::UpdateStatisticsRequest>,
    ) -> Result<Response<DispatchResponse>, Status> {
        let req = request.into_inner();
        let (d, spec) = dispatch_and_spec(req.dispatch, req.spec)?;
        stats::StatsSpec::from_proto(&spec)
            .map_err(|e| Status::invalid_argument(format!("spec: {e}")))?;
        let guard = self
            .attempts
            .try_start(d.task_id, d.attempt, &self.shutdown)?;
        let ctx = self.compactions.clone();
        let span = tracing::info_span!("statistics_update", task_id = d.task_id, attempt = d.attempt, table = %spec.table);
        tokio::spawn(
            async move {
                let outcome =
                    match stats::update_statistics(&ctx.storage, &spec, &guard.cancel).await {
                        Ok(s) => {
                            tracing::info!(
                                entries = s.entries,
                                live_keys = s.estimated_live_keys,
                                "statistics computed"
                            );
                            Ok(pb::task_result::Result::Statistics(s))
                        }
                        Err(e) => Err(pb::TaskError {
                            kind: e.kind() as i32,
                            message: format!("statistics of table {:?}: {e}", spec.table),
                            file: e.file().unwrap_or_default().to_owned(),
                            offset: e.offset().unwrap_or(0),
                            retriable: e.retriable(),
                            attempt: d.attempt,
                            at_unix_ms: job::now_ms(),
                        }),
                    };
                finish(&ctx, &guard, d, outcome).await;
            }
            .instrument(span),
        );
        Ok(Response::new(DispatchResponse { accepted: true }))
    }

    async fn get_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        Ok(Response::new(WorkerStatus {
            info: Some(service_info(
                "compactor",
                &self.advertised_address,
                self.started_at,
                &self.attempts,
            )),
            worker_id: self.attempts.worker_id(),
        }))
    }
}

/// The dispatch and spec of a work item, or INVALID_ARGUMENT naming the missing one.
fn dispatch_and_spec<T>(
    dispatch: Option<pb::DispatchRequest>,
    spec: Option<T>,
) -> Result<(pb::DispatchRequest, T), Status> {
    let d = dispatch.ok_or_else(|| Status::invalid_argument("dispatch: required"))?;
    let spec = spec.ok_or_else(|| Status::invalid_argument("spec: required"))?;
    Ok((d, spec))
}

/// Reports a Cleanup or StatisticsUpdate attempt (nothing when it was cancelled).
async fn finish(
    ctx: &CompactionContext,
    guard: &AttemptGuard,
    d: pb::DispatchRequest,
    outcome: Result<pb::task_result::Result, pb::TaskError>,
) {
    if guard.cancel.is_cancelled() {
        return;
    }
    let worker_id = ctx.attempts.worker_id();
    let request = match outcome {
        Ok(result) => pb::CompleteTaskRequest {
            task_id: d.task_id,
            attempt: d.attempt,
            worker_id,
            outcome: Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
                result: Some(result),
            })),
        },
        Err(error) => {
            tracing::warn!(error = %error.message, "work item failed");
            report::failure(d.task_id, d.attempt, worker_id, error)
        }
    };
    if let r @ (Reported::Refused(_) | Reported::GaveUp(_)) =
        report::complete_task(ctx.scheduler.clone(), request, &guard.cancel).await
    {
        tracing::warn!("work item result not recorded: {r:?}");
    }
}

/// Runs the attempt in its own task, inside its span. If it panics (a bug), its slot is
/// released by the unwinding guard and the attempt is reported as an internal error
/// instead of vanishing until its lease expires.
fn spawn_compaction(
    ctx: Arc<CompactionContext>,
    attempt: request::CompactionAttempt,
    guard: AttemptGuard,
) {
    let span = job::attempt_span(&attempt);
    let (task_id, attempt_no, spec) = (attempt.task_id, attempt.attempt, attempt.spec.clone());
    let cancel = guard.cancel.clone();
    let started = Instant::now();
    let job = tokio::spawn(job::run_attempt(ctx.clone(), attempt, guard).instrument(span.clone()));
    let supervisor = async move {
        let Err(e) = job.await else { return };
        if !e.is_panic() {
            return;
        }
        tracing::error!("compaction attempt panicked: {e}");
        ctx.metrics
            .attempt_ended(Outcome::Failed, started.elapsed(), 0);
        let error = error::CompactionError::Internal(format!("the attempt panicked: {e}"))
            .to_task_error(&spec, attempt_no, job::now_ms());
        let request = report::failure(task_id, attempt_no, ctx.attempts.worker_id(), error);
        if let r @ (Reported::Refused(_) | Reported::GaveUp(_)) =
            report::complete_task(ctx.scheduler.clone(), request, &cancel).await
        {
            tracing::warn!("could not report the panic: {r:?}");
        }
    };
    tokio::spawn(supervisor.instrument(span));
}

/// Runs the compactor until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let config = ctx.config.clone();
    let attempts = RunningAttempts::new(config.processor.worker_count);
    let storage = runtime::open_storage(&config)?;
    let scheduler =
        runtime::grpc::connect_lazy(&ctx.scheduler_endpoint, config.server.request_timeout.get())?;
    CompactionMetrics::describe();
    let metrics = CompactionMetrics::default();
    tokio::spawn(observe::run_rate_gauge(
        metrics.clone(),
        ctx.shutdown.clone(),
    ));
    let compactions = Arc::new(CompactionContext {
        storage,
        scheduler: SchedulerClient::new(scheduler),
        attempts: attempts.clone(),
        worker_count: config.processor.worker_count,
        limiter: throttle::RateLimiter::new(config.compaction.rate_limit_bytes_per_sec.as_u64())
            .map(Arc::new),
        sst_options: sst::SstOptions::default(),
        min_subcompaction_bytes: merge::DEFAULT_MIN_SUBCOMPACTION_BYTES,
        metrics,
    });
    let api = CompactorApi {
        attempts: attempts.clone(),
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
        shutdown: ctx.shutdown.clone(),
        compactions,
    };
    let max_message = ctx.config.server.max_message_size.as_u64() as usize;
    serve_worker(
        ctx,
        WorkerKind::Compactor,
        attempts,
        CompactorServer::new(api).max_decoding_message_size(max_message),
    )
    .await
}
