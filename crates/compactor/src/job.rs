//! One compaction attempt, end to end: the IO around [`crate::merge::compact`].
//!
//! The order of steps, and why:
//!
//! 1. **Free space first**, before anything is read or written: outputs that cannot fit
//!    (at most the inputs' size: a merge only drops data) are refused as a
//!    `DiskSpaceError` rather than failing halfway.
//! 2. **Check the inputs exist** (one HEAD each): an input that Cleanup already deleted
//!    (the table's files changed after the task was planned) fails the attempt at once,
//!    before any output is created, with an error saying the input is gone; an object whose
//!    size differs from the manifest's is damaged (reported as corruption).
//! 3. **Merge** on a blocking thread (the merge is CPU work, and its readers and writers
//!    block on storage), with subcompactions on further threads when the spec and the
//!    worker allow them. Outputs stream to storage as multipart uploads; an output becomes
//!    visible only when finished, and a failed or cancelled merge abandons the open ones
//!    and deletes the finished ones. Meanwhile this task copies the merge's progress into
//!    the attempt's heartbeat every `PROGRESS_INTERVAL`.
//! 4. **Report** with CompleteTask ([`crate::report`]); a cancelled attempt reports
//!    nothing. Right before a success is reported the failpoint `compactor.before_complete`
//!    is hit (crash tests stop the process there: outputs written, nothing committed).
//!
//! The attempt's guard lives until the end of [`run_attempt`]: the slot stays taken, and
//! heartbeats carry the attempt's progress, until the report is done.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use proto::v1 as pb;
use proto::v1::scheduler_client::SchedulerClient;
use runtime::grpc::TracedChannel;
pub(crate) use runtime::now_ms;
use runtime::report::log_unreported;
use runtime::worker::{AttemptGuard, RunningAttempts};
use sst::SstOptions;
use storage::Storage;
use tracing::Instrument;

use crate::error::CompactionError;
use crate::merge::{Compacted, Control, MergeOptions, Progress, compact};
use crate::observe::{CompactionMetrics, Outcome};
use crate::report::{self, Reported};
use crate::request::{CompactionAttempt, CompactionSpec};
use crate::store::{StorageSstStore, readahead_for};
use crate::throttle::RateLimiter;

/// How often the merge's progress is copied into the attempt's heartbeat.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// What every compaction attempt shares.
pub struct CompactionContext {
    pub storage: Storage,
    pub scheduler: SchedulerClient<TracedChannel>,
    pub attempts: Arc<RunningAttempts>,
    /// `processor.worker_count`: also the most threads one attempt may use.
    pub worker_count: u32,
    /// The worker's IO budget (`compaction.rate_limit_bytes_per_sec`), shared by every
    /// attempt whose spec sets none of its own; `None`: unlimited.
    pub limiter: Option<Arc<RateLimiter>>,
    pub sst_options: SstOptions,
    /// See [`crate::merge::DEFAULT_MIN_SUBCOMPACTION_BYTES`].
    pub min_subcompaction_bytes: u64,
    pub metrics: CompactionMetrics,
}

/// The span of one attempt. Created where the dispatch RPC is handled (the RPC's server
/// span is current there), so that it is a child of the RPC's span and the attempt joins
/// the trace the scheduler started; its CompleteTask call carries the same trace back, so
/// the scheduler's commit is part of it too. Its children: `check_inputs`, `merge` (with
/// `subcompaction`, `read_inputs`, `open_input` and `write_output` below it, see
/// [`crate::merge`]) and `report`. Every log line of the attempt carries its fields.
pub fn attempt_span(attempt: &CompactionAttempt) -> tracing::Span {
    tracing::info_span!(
        "compaction",
        task_id = attempt.task_id,
        attempt = attempt.attempt,
        table = %attempt.spec.table,
        task_type = "compaction",
        output_level = attempt.spec.output_level,
    )
}

/// Runs one attempt to its end, reports it, and releases its slot (`guard`). Run it inside
/// [`attempt_span`].
pub async fn run_attempt(
    ctx: Arc<CompactionContext>,
    attempt: CompactionAttempt,
    guard: AttemptGuard,
) {
    let started = Instant::now();
    let result = if attempt.wal_inputs.is_empty() {
        compact_attempt(&ctx, &attempt.spec, &guard, true).await
    } else {
        repair_attempt(&ctx, &attempt, &guard).await
    };
    let outcome = finish(&ctx, &attempt, &guard, result, started).await;
    ctx.metrics
        .attempt_ended(outcome, started.elapsed(), attempt.spec.input_count());
}

/// Logs and reports the result of [`compact_attempt`]; returns how the attempt ended.
async fn finish(
    ctx: &CompactionContext,
    attempt: &CompactionAttempt,
    guard: &AttemptGuard,
    result: Result<Compacted, CompactionError>,
    started: Instant,
) -> Outcome {
    let worker_id = ctx.attempts.worker_id();
    let spec = &attempt.spec;
    let request = match result {
        Err(CompactionError::Cancelled) => {
            tracing::info!("compaction cancelled; outputs abandoned, nothing reported");
            return Outcome::Cancelled;
        }
        Err(e) => {
            let error = e.to_task_error(spec, attempt.attempt, now_ms());
            if e.kind() == pb::ErrorKind::Corruption {
                tracing::error!(error = %error.message, file = %error.file, offset = error.offset, "compaction failed on corrupt input");
            } else {
                tracing::warn!(error = %error.message, retriable = error.retriable, "compaction failed");
            }
            let request = report::failure(attempt.task_id, attempt.attempt, worker_id, error);
            let reported = report::complete_task(ctx.scheduler.clone(), request, &guard.cancel)
                .instrument(report_span("failure"))
                .await;
            log_unreported(&reported);
            return Outcome::Failed;
        }
        Ok(compacted) => {
            ctx.metrics
                .bytes(compacted.bytes_read, compacted.bytes_written);
            if guard.cancel.is_cancelled() {
                tracing::info!(
                    "compaction cancelled after writing its outputs; deleting them, nothing reported"
                );
                discard(&ctx.storage, spec, &compacted).await;
                return Outcome::Cancelled;
            }
            let s = compacted.stats;
            tracing::info!(
                inputs = spec.input_count(),
                outputs = compacted.outputs.len(),
                bytes_read = compacted.bytes_read,
                bytes_written = compacted.bytes_written,
                entries_in = s.input_entries,
                entries_out = s.output_entries,
                shadowed_dropped = s.shadowed_dropped,
                tombstones_dropped = s.tombstones_dropped,
                subcompactions = compacted.subcompactions,
                duration_ms = started.elapsed().as_millis() as u64,
                "compacted"
            );
            // Crash tests stop here: the outputs are written, the scheduler does not know.
            runtime::failpoint::hit("compactor.before_complete").await;
            report::success(
                attempt.task_id,
                attempt.attempt,
                worker_id,
                pb::task_result::Result::Compaction(report::compaction_result(&compacted)),
            )
        }
    };
    match report::complete_task(ctx.scheduler.clone(), request, &guard.cancel)
        .instrument(report_span("success"))
        .await
    {
        Reported::Accepted => {
            runtime::failpoint::hit("compactor.after_complete").await;
            Outcome::Succeeded
        }
        Reported::Refused(status) => {
            tracing::warn!(
                code = ?status.code(),
                error = %status.message(),
                "scheduler refused the compaction (a stale attempt, inputs that changed, or a \
                 retry of a completion that was already committed); the outputs are left for \
                 Cleanup"
            );
            Outcome::Refused
        }
        other => {
            log_unreported(&other);
            Outcome::Failed
        }
    }
}

/// The span of the CompleteTask call(s): the scheduler's handling of the report is its
/// child.
fn report_span(outcome: &'static str) -> tracing::Span {
    tracing::info_span!("report", outcome)
}

/// Steps 1 to 3 of the module doc.
async fn compact_attempt(
    ctx: &CompactionContext,
    spec: &CompactionSpec,
    guard: &AttemptGuard,
    preemptible: bool,
) -> Result<Compacted, CompactionError> {
    ctx.storage.check_space(spec.input_bytes())?;
    check_inputs(&ctx.storage, spec)
        .instrument(tracing::info_span!(
            "check_inputs",
            inputs = spec.input_count()
        ))
        .await?;

    let threads = spec.max_subcompactions.min(ctx.worker_count).max(1) as usize;
    let options = MergeOptions {
        sst_options: ctx.sst_options.clone(),
        threads,
        min_subcompaction_bytes: ctx.min_subcompaction_bytes,
        creation_time_ms: u64::try_from(now_ms()).unwrap_or(0),
    };
    // A share of the scheduler's IO budget replaces the worker's own limit, and follows
    // the rebalanced share the heartbeat replies bring.
    let limiter = match RateLimiter::new(spec.io_bytes_per_sec) {
        Some(own) => {
            let own = Arc::new(own);
            guard.pace_with(own.clone());
            Some(own)
        }
        None => ctx.limiter.clone(),
    };
    let control = Control {
        cancel: guard.cancel.clone(),
        progress: Arc::new(Progress::default()),
        limiter,
        preempt: if preemptible {
            guard.preempt.clone()
        } else {
            tokio_util::sync::CancellationToken::new()
        },
    };
    let store = Arc::new(StorageSstStore::new(
        ctx.storage.clone(),
        tokio::runtime::Handle::current(),
        spec.table.clone(),
        readahead_for(sources_at_once(spec) * threads),
    ));

    // The blocking thread has no current span of its own: enter the attempt's, so that the
    // merge's spans are its children and its log lines carry the attempt's ids.
    let span = tracing::Span::current();
    let merge = {
        let (spec, control) = (spec.clone(), control.clone());
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            compact(&store, &spec, &options, &control)
        })
    };
    tokio::pin!(merge);
    let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
    let joined = loop {
        tokio::select! {
            joined = &mut merge => break joined,
            _ = ticker.tick() => publish(guard, &control.progress),
        }
    };
    publish(guard, &control.progress);
    joined.map_err(|e| CompactionError::Internal(format!("the merge thread failed: {e}")))?
}

/// A repair of released WAL segments ([`crate::wal_input`]): the segments become SSTs
/// among the inputs, the merge runs as for any compaction (never preempted: a partial
/// result could not say which of the segments' writes it kept), and those SSTs are deleted
/// afterwards. The report names only the spec's own inputs.
async fn repair_attempt(
    ctx: &CompactionContext,
    attempt: &CompactionAttempt,
    guard: &AttemptGuard,
) -> Result<Compacted, CompactionError> {
    let mut spec = attempt.spec.clone();
    let written = crate::wal_input::add_wal_inputs(
        &ctx.storage,
        &mut spec,
        &attempt.wal_inputs,
        &ctx.sst_options,
    )
    .instrument(tracing::info_span!(
        "wal_inputs",
        segments = attempt.wal_inputs.len()
    ))
    .await?;
    let result = if spec.inputs.is_empty() {
        // Nothing to merge: empty segments of a table without files.
        Ok(Compacted {
            outputs: Vec::new(),
            stats: Default::default(),
            bytes_read: 0,
            bytes_written: 0,
            subcompactions: 0,
            consumed: None,
        })
    } else {
        compact_attempt(ctx, &spec, guard, false).await
    };
    crate::wal_input::discard(&ctx.storage, &written).await;
    result
}

/// Copies the merge's progress into the attempt's next heartbeat.
fn publish(guard: &AttemptGuard, progress: &Progress) {
    guard.progress(|p| {
        p.bytes_read = progress.bytes_read.load(Ordering::Relaxed);
        p.bytes_written = progress.bytes_written.load(Ordering::Relaxed);
        p.entries = progress.entries.load(Ordering::Relaxed);
    });
}

/// Inputs one range reads at the same time: every L0 file, one file per deeper level.
fn sources_at_once(spec: &CompactionSpec) -> usize {
    spec.inputs
        .iter()
        .map(|(level, files)| if *level == 0 { files.len() } else { 1 })
        .sum()
}

/// Step 2: every input exists, at the size the manifest records.
async fn check_inputs(storage: &Storage, spec: &CompactionSpec) -> Result<(), CompactionError> {
    for (_, file) in spec.input_files() {
        let path = spec.sst_path(file.id);
        match storage.head(&path).await {
            Ok(meta) if meta.size == file.size => {}
            Ok(meta) => {
                return Err(CompactionError::Corruption {
                    file: path.to_string(),
                    offset: meta.size.min(file.size),
                    reason: format!(
                        "the object is {} bytes, the manifest records {}",
                        meta.size, file.size
                    ),
                });
            }
            Err(e) if e.is_not_found() => {
                return Err(CompactionError::InputMissing {
                    file: path.to_string(),
                });
            }
            Err(e) => {
                return Err(CompactionError::ReadInput {
                    file: path.to_string(),
                    cause: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Deletes the outputs of a merge that will not be reported (best effort: Cleanup deletes
/// what stays behind).
async fn discard(storage: &Storage, spec: &CompactionSpec, compacted: &Compacted) {
    for output in &compacted.outputs {
        let path = spec.sst_path(output.file_id);
        if let Err(e) = storage.delete(&path).await {
            tracing::warn!(%path, error = %e, "could not delete an unreported output; Cleanup will");
        }
    }
}
