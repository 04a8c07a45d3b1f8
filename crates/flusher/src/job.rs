//! One flush attempt, end to end: the IO around [`crate::write`].
//!
//! The order of steps, and why:
//!
//! 1. **Free space first**, before anything is written: an SST that cannot fit is refused as
//!    a `DiskSpaceError` rather than failing halfway and leaving a staging file behind.
//! 2. **Open the replayer's stream** (`ReadMemtable`) before creating the object, so that a
//!    replayer that is down or no longer holds the memtable (NOT_FOUND) costs no storage
//!    call at all.
//! 3. **Stream into one SST.** The SST is streamed to storage (a multipart upload through
//!    [`storage::BlockingWriter`]), not built in memory, so a flusher running several
//!    attempts holds about one data block and one upload part per attempt instead of whole
//!    memtables. The builder runs on a blocking thread (it is CPU work and its writer blocks
//!    on uploads); this task receives messages and hands their entries over a small bounded
//!    channel, so the network read of the next chunk overlaps the build of this one and a
//!    slow upload slows the stream down instead of buffering it.
//!    Nothing becomes visible at the object path unless the whole stream was valid and the
//!    upload finished: any failure, or cancellation, drops the writer, which aborts the
//!    upload.
//! 4. **Report** with CompleteTask ([`crate::report`]); a cancelled attempt reports
//!    nothing.
//!
//! The attempt's guard lives until the end of [`run_attempt`]: the slot stays taken, and
//! heartbeats carry the attempt's progress, until the report is done.

use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use proto::v1 as pb;
use proto::v1::replayer_client::ReplayerClient;
use proto::v1::scheduler_client::SchedulerClient;
use runtime::grpc::TracedChannel;
pub(crate) use runtime::now_ms;
use runtime::report::log_unreported;
use runtime::throttle::RateLimiter;
use runtime::worker::{AttemptGuard, RunningAttempts};
use sst::{SstError, SstInfo, SstOptions};
use storage::{BlockingWriter, ObjectWriter, Storage};
use tokio::sync::mpsc;
use tonic::Streaming;
use tracing::Instrument;

use crate::error::FlushError;
use crate::observe::{FlushMetrics, Outcome};
use crate::report::{self, Reported};
use crate::request::{FlushAttempt, FlushSpec};
use crate::write::{Entry, MemtableSstWriter, WriteError};

/// Entries per `ReadMemtable` message.
pub const CHUNK_ENTRIES: u32 = 4096;
/// Largest `ReadMemtable` message accepted. tonic's default (4 MiB) is too small: 4096
/// entries of 1 KiB values already exceed it, and one entry may be as large as a memtable.
const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// Free space asked for, as a multiple of the memtable's size: the SST is about the size of
/// the memtable's entries (uncompressed, plus index, filter and properties), and twice that
/// leaves room for other attempts writing to the same volume at once.
const SPACE_MARGIN: u64 = 2;
/// Chunks waiting between the stream and the build thread.
const FEED_DEPTH: usize = 2;
/// Buffer in front of the upload (one block is written per `write`).
const OUTPUT_BUFFER: usize = 1 << 20;

/// What every attempt shares.
pub struct FlushContext {
    pub storage: Storage,
    pub scheduler: SchedulerClient<TracedChannel>,
    pub attempts: Arc<RunningAttempts>,
    /// Per-RPC timeout; also the longest the replayer's stream may stay silent.
    pub request_timeout: Duration,
    pub sst_options: SstOptions,
    pub metrics: FlushMetrics,
}

/// A written SST.
#[derive(Debug)]
struct Flushed {
    info: SstInfo,
    /// Size of the stored object.
    size: u64,
    /// Bytes of `ReadMemtable` messages received.
    bytes_read: u64,
}

/// The span of one attempt. Created where the dispatch RPC is handled (the RPC's server
/// span is current there), so that it is a child of the RPC's span and the attempt joins
/// the trace the scheduler started; its CompleteTask call carries the same trace back to
/// the scheduler's commit. Its children: `read_memtable` (the replayer's stream, whose
/// server span is in turn its child), `build_sst` (the build thread) with `write_output`
/// (finishing the SST and its upload) below it, and `report`. Every log line of the
/// attempt carries its fields.
pub fn attempt_span(attempt: &FlushAttempt) -> tracing::Span {
    tracing::info_span!(
        "memtable_flush",
        task_id = attempt.task_id,
        attempt = attempt.attempt,
        table = %attempt.spec.table,
        task_type = "memtable_flush",
        memtable_id = attempt.spec.memtable_id,
    )
}

/// Runs one attempt to its end, reports it, and releases its slot (`guard`). Run it inside
/// [`attempt_span`].
pub async fn run_attempt(ctx: Arc<FlushContext>, attempt: FlushAttempt, guard: AttemptGuard) {
    let started = Instant::now();
    let result = flush(&ctx, &attempt, &guard).await;
    let outcome = finish(&ctx, &attempt, &guard, result, started).await;
    ctx.metrics.attempt_ended(outcome, started.elapsed());
}

/// Logs and reports the result of [`flush`]; returns how the attempt ended for metrics.
async fn finish(
    ctx: &FlushContext,
    attempt: &FlushAttempt,
    guard: &AttemptGuard,
    result: Result<Flushed, FlushError>,
    started: Instant,
) -> Outcome {
    let worker_id = ctx.attempts.worker_id();
    let request = match result {
        Err(FlushError::Cancelled) => {
            tracing::info!("flush cancelled; nothing written, nothing reported");
            return Outcome::Cancelled;
        }
        Err(e) => {
            tracing::warn!(error = %e, "flush failed");
            let error = e.to_task_error(&attempt.spec, attempt.attempt, now_ms());
            let request = report::failure(attempt.task_id, attempt.attempt, worker_id, error);
            let reported = report::complete_task(ctx.scheduler.clone(), request, &guard.cancel)
                .instrument(report_span("failure"))
                .await;
            log_unreported(&reported);
            return Outcome::Failed;
        }
        Ok(flushed) => {
            ctx.metrics.bytes_written(flushed.size);
            if guard.cancel.is_cancelled() {
                tracing::info!(
                    path = %attempt.spec.sst_path(),
                    "flush cancelled after writing its sst; not reported (Cleanup deletes the orphan)"
                );
                return Outcome::Cancelled;
            }
            tracing::info!(
                path = %attempt.spec.sst_path(),
                bytes_written = flushed.size,
                bytes_read = flushed.bytes_read,
                entries = flushed.info.entry_count,
                duration_ms = started.elapsed().as_millis() as u64,
                "memtable flushed"
            );
            // Crash tests stop here: the SST is written, the scheduler does not know it.
            runtime::failpoint::hit("flusher.before_complete").await;
            let file = report::file_meta(attempt.spec.file_id, &flushed.info, flushed.size);
            report::success(
                attempt.task_id,
                attempt.attempt,
                worker_id,
                file,
                flushed.bytes_read,
            )
        }
    };
    match report::complete_task(ctx.scheduler.clone(), request, &guard.cancel)
        .instrument(report_span("success"))
        .await
    {
        Reported::Accepted => {
            runtime::failpoint::hit("flusher.after_complete").await;
            Outcome::Succeeded
        }
        Reported::Refused(status) => {
            tracing::warn!(
                code = ?status.code(),
                error = %status.message(),
                path = %attempt.spec.sst_path(),
                "scheduler refused the flush (a stale attempt, or a retry of a completion \
                 that was already committed); the sst is left for Cleanup"
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
async fn flush(
    ctx: &FlushContext,
    attempt: &FlushAttempt,
    guard: &AttemptGuard,
) -> Result<Flushed, FlushError> {
    let spec = &attempt.spec;
    ctx.storage
        .check_space(spec.size_bytes.saturating_mul(SPACE_MARGIN))?;
    // One span over the whole stream, from the call until its last message.
    let read_span = tracing::info_span!(
        "read_memtable",
        replayer = %spec.replayer_address,
        bytes_read = tracing::field::Empty,
    );
    let mut stream = open_stream(spec, ctx.request_timeout, guard)
        .instrument(read_span.clone())
        .await?;
    let object = ctx.storage.writer(&spec.sst_path()).await?;

    let (tx, rx) = mpsc::channel(FEED_DEPTH);
    let written = Arc::new(AtomicU64::new(0));
    // A share of the scheduler's IO budget paces the writes; the share follows the
    // rebalanced value the heartbeat replies bring.
    let pace = RateLimiter::new(spec.io_bytes_per_sec).map(|l| {
        let l = Arc::new(l);
        guard.pace_with(l.clone());
        Pace {
            limiter: l,
            cancel: guard.cancel.clone(),
        }
    });
    let build = spawn_build(
        object,
        BuildParams {
            file_name: spec.sst_path().to_string(),
            options: ctx.sst_options.clone(),
            range: spec.seqs,
            creation_time_ms: u64::try_from(now_ms()).unwrap_or(0),
            pace,
        },
        rx,
        written.clone(),
    );
    let pumped = pump(&mut stream, tx, guard, &written, ctx.request_timeout)
        .instrument(read_span.clone())
        .await;
    if let Pumped::Complete { bytes_read } = &pumped {
        read_span.record("bytes_read", bytes_read);
    }
    drop(read_span);
    // Always wait for the build thread: once it returns, an aborted upload is gone.
    let built = build
        .await
        .map_err(|e| FlushError::Internal(format!("the sst build thread failed: {e}")))
        .and_then(|r| r);
    match (pumped, built) {
        (Pumped::Failed(e), _) => Err(e),
        (_, Err(e)) => Err(e),
        (Pumped::Complete { bytes_read }, Ok((info, size))) => {
            runtime::failpoint::hit("flusher.after_upload").await;
            Ok(Flushed {
                info,
                size,
                bytes_read,
            })
        }
        (Pumped::BuilderStopped, Ok(_)) => Err(FlushError::Internal(
            "the sst build thread stopped early without an error".to_owned(),
        )),
    }
}

/// Connects to the replayer and starts `ReadMemtable`.
async fn open_stream(
    spec: &FlushSpec,
    timeout: Duration,
    guard: &AttemptGuard,
) -> Result<Streaming<pb::ReadMemtableResponse>, FlushError> {
    let endpoint = runtime::grpc::endpoint_url(&spec.replayer_address);
    let channel =
        runtime::grpc::connect_lazy(&endpoint, timeout).map_err(|e| FlushError::Replayer {
            cause: format!("invalid replayer address {endpoint:?}: {e}"),
        })?;
    let mut client = ReplayerClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let request = pb::ReadMemtableRequest {
        table: spec.table.to_string(),
        memtable_id: spec.memtable_id,
        chunk_entries: CHUNK_ENTRIES,
    };
    let response = tokio::select! {
        biased;
        _ = guard.cancel.cancelled() => return Err(FlushError::Cancelled),
        r = client.read_memtable(request) => r,
    };
    response
        .map(tonic::Response::into_inner)
        .map_err(|status| FlushError::replayer(&status))
}

/// What the stream hands the build thread.
#[derive(Debug)]
enum Feed {
    Chunk(Vec<pb::KeyValue>),
    /// The stream ended normally. A channel closed without it means the stream failed or
    /// the attempt was cancelled: the build thread then abandons the file.
    End,
}

/// How [`pump`] ended.
#[derive(Debug)]
enum Pumped {
    Complete {
        bytes_read: u64,
    },
    /// The build thread stopped taking chunks: its result says why.
    BuilderStopped,
    Failed(FlushError),
}

/// Moves the stream's chunks to the build thread, updating progress, until the stream
/// ends, fails, stalls for `idle`, or the attempt is cancelled.
async fn pump(
    stream: &mut Streaming<pb::ReadMemtableResponse>,
    tx: mpsc::Sender<Feed>,
    guard: &AttemptGuard,
    written: &AtomicU64,
    idle: Duration,
) -> Pumped {
    let (mut bytes_read, mut entries) = (0u64, 0u64);
    loop {
        let message = tokio::select! {
            biased;
            _ = guard.cancel.cancelled() => return Pumped::Failed(FlushError::Cancelled),
            m = tokio::time::timeout(idle, stream.message()) => m,
        };
        let chunk = match message {
            Err(_) => {
                return Pumped::Failed(FlushError::Replayer {
                    cause: format!("the stream sent nothing for {idle:?}"),
                });
            }
            Ok(Err(status)) => return Pumped::Failed(FlushError::replayer(&status)),
            Ok(Ok(None)) => {
                return match send(&tx, Feed::End, guard).await {
                    Ok(true) => Pumped::Complete { bytes_read },
                    Ok(false) => Pumped::BuilderStopped,
                    Err(e) => Pumped::Failed(e),
                };
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        bytes_read += prost::Message::encoded_len(&chunk) as u64;
        entries += chunk.entries.len() as u64;
        if !chunk.entries.is_empty() {
            match send(&tx, Feed::Chunk(chunk.entries), guard).await {
                Ok(true) => {}
                Ok(false) => return Pumped::BuilderStopped,
                Err(e) => return Pumped::Failed(e),
            }
        }
        guard.progress(|p| {
            p.bytes_read = bytes_read;
            p.entries = entries;
            p.bytes_written = written.load(Ordering::Relaxed);
        });
    }
}

/// Sends to the build thread: `Ok(false)` if it stopped, `Err(Cancelled)` if the attempt
/// was cancelled while waiting for room.
async fn send(
    tx: &mpsc::Sender<Feed>,
    feed: Feed,
    guard: &AttemptGuard,
) -> Result<bool, FlushError> {
    tokio::select! {
        biased;
        _ = guard.cancel.cancelled() => Err(FlushError::Cancelled),
        r = tx.send(feed) => Ok(r.is_ok()),
    }
}

/// What the build thread needs besides its input and output.
struct BuildParams {
    file_name: String,
    options: SstOptions,
    range: crate::write::SeqRange,
    creation_time_ms: u64,
    pace: Option<Pace>,
}

/// The IO budget of a flush attempt: the build thread sleeps to stay within it.
struct Pace {
    limiter: Arc<RateLimiter>,
    cancel: tokio_util::sync::CancellationToken,
}

/// Starts the build thread: chunks from `rx` into an SST uploaded through `object`.
/// Returns the file's info and stored size.
fn spawn_build(
    object: ObjectWriter,
    params: BuildParams,
    mut rx: mpsc::Receiver<Feed>,
    written: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<(SstInfo, u64), FlushError>> {
    let handle = tokio::runtime::Handle::current();
    // Created here, where the attempt's span is current, and entered on the blocking thread
    // (which has no current span of its own).
    let span = tracing::info_span!(
        "build_sst",
        file = %params.file_name,
        entries = tracing::field::Empty,
        bytes = tracing::field::Empty,
    );
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        // Every early return drops the writer here, on this thread, which aborts the upload
        // (`BlockingWriter` must not be dropped on an async thread).
        let sink = BufWriter::with_capacity(OUTPUT_BUFFER, BlockingWriter::new(handle, object));
        let mut writer =
            MemtableSstWriter::new(params.file_name.clone(), sink, params.options, params.range)?;
        writer.set_creation_time_ms(params.creation_time_ms);
        if !feed(&mut writer, &mut rx, &written, params.pace.as_ref())? {
            return Err(FlushError::Internal(
                "the memtable stream stopped before its end".to_owned(),
            ));
        }
        // Index, filter and footer, then the upload's last part and its completion.
        let _write = tracing::info_span!("write_output").entered();
        let (info, sink) = writer.finish()?;
        let sink = sink.into_inner().map_err(|e| {
            FlushError::from(WriteError::Sst(SstError::Io {
                file: params.file_name,
                source: e.into_error(),
            }))
        })?;
        let size = sink.finish()?;
        span.record("entries", info.entry_count);
        span.record("bytes", size);
        Ok((info, size))
    })
}

/// Adds every chunk from `rx` to `writer` (blocking). `Ok(true)` once [`Feed::End`]
/// arrives; `Ok(false)` if the channel closed without it (the attempt stopped).
fn feed<W: Write>(
    writer: &mut MemtableSstWriter<W>,
    rx: &mut mpsc::Receiver<Feed>,
    written: &AtomicU64,
    pace: Option<&Pace>,
) -> Result<bool, WriteError> {
    while let Some(message) = rx.blocking_recv() {
        match message {
            Feed::End => return Ok(true),
            Feed::Chunk(entries) => {
                let before = writer.bytes_written();
                writer.add_all(entries.iter().map(entry))?;
                written.store(writer.bytes_written(), Ordering::Relaxed);
                if let Some(p) = pace
                    && !p
                        .limiter
                        .acquire(writer.bytes_written().saturating_sub(before), &p.cancel)
                {
                    // Cancelled while paced: the attempt stops like a closed stream.
                    return Ok(false);
                }
            }
        }
    }
    Ok(false)
}

/// The gRPC edge of an entry.
fn entry(kv: &pb::KeyValue) -> Entry<'_> {
    Entry {
        user_key: &kv.key,
        value: &kv.value,
        seq: kv.seq,
        tombstone: kv.tombstone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::SeqRange;

    fn kv(key: &str, seq: u64, value: Option<&str>) -> pb::KeyValue {
        pb::KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.unwrap_or_default().as_bytes().to_vec(),
            seq,
            tombstone: value.is_none(),
        }
    }

    fn writer() -> MemtableSstWriter<Vec<u8>> {
        MemtableSstWriter::new(
            "t.sst",
            Vec::new(),
            SstOptions::default(),
            SeqRange {
                lowest: 1,
                highest: 100,
            },
        )
        .expect("options")
    }

    #[test]
    fn feed_builds_every_chunk_until_the_end_marker() {
        let (tx, mut rx) = mpsc::channel(8);
        for feed in [
            Feed::Chunk(vec![kv("a", 3, Some("x")), kv("a", 1, None)]),
            Feed::Chunk(vec![kv("b", 2, Some("y"))]),
            Feed::End,
        ] {
            tx.try_send(feed).expect("room");
        }
        let written = AtomicU64::new(0);
        let mut w = writer();
        assert!(feed(&mut w, &mut rx, &written, None).expect("valid stream"));
        assert_eq!(w.entries(), 3);
        let (info, bytes) = w.finish().expect("finish");
        assert_eq!((info.entry_count, info.tombstone_count), (3, 1));
        assert!(!bytes.is_empty());
    }

    #[test]
    fn a_stream_that_stops_without_its_end_is_not_finished() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.try_send(Feed::Chunk(vec![kv("a", 3, Some("x"))]))
            .expect("room");
        drop(tx);
        let mut w = writer();
        assert!(!feed(&mut w, &mut rx, &AtomicU64::new(0), None).expect("no bad entry"));
    }

    #[test]
    fn a_budget_paces_the_build_and_a_cancellation_stops_it() {
        let chunk = |n: u64| {
            Feed::Chunk(
                (0..20)
                    .map(|i| kv(&format!("k{n:02}{i:02}"), 1, Some(&"v".repeat(1000))))
                    .collect(),
            )
        };
        let (tx, mut rx) = mpsc::channel(8);
        for n in 0..4 {
            tx.try_send(chunk(n)).expect("room");
        }
        tx.try_send(Feed::End).expect("room");
        let rate = 100_000;
        let pace = Pace {
            limiter: Arc::new(RateLimiter::new(rate).expect("limited")),
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        let mut w = writer();
        let start = Instant::now();
        assert!(feed(&mut w, &mut rx, &AtomicU64::new(0), Some(&pace)).expect("valid"));
        let paid = w.bytes_written() as f64;
        assert!(paid > 40_000.0, "{paid}");
        // The bucket starts with a tenth of a second's worth; the rest is paced.
        let at_least = (paid - rate as f64 * 0.1) / rate as f64;
        let took = start.elapsed().as_secs_f64();
        assert!(
            took >= 0.9 * at_least,
            "{paid} bytes in {took} s at {rate} B/s"
        );

        // Cancelled while waiting for the budget: the feed stops unfinished.
        let (tx, mut rx) = mpsc::channel(8);
        tx.try_send(chunk(0)).expect("room");
        tx.try_send(Feed::End).expect("room");
        let slow = Pace {
            limiter: Arc::new(RateLimiter::new(1).expect("limited")),
            cancel: tokio_util::sync::CancellationToken::new(),
        };
        slow.cancel.cancel();
        assert!(
            !feed(&mut writer(), &mut rx, &AtomicU64::new(0), Some(&slow)).expect("no bad entry")
        );
    }

    #[test]
    fn feed_stops_at_the_first_bad_entry() {
        let (tx, mut rx) = mpsc::channel(8);
        tx.try_send(Feed::Chunk(vec![
            kv("b", 3, Some("x")),
            kv("a", 4, Some("y")),
        ]))
        .expect("room");
        tx.try_send(Feed::End).expect("room");
        let err = feed(&mut writer(), &mut rx, &AtomicU64::new(0), None).expect_err("out of order");
        assert!(
            matches!(err, WriteError::OutOfOrder { index: 1, .. }),
            "{err:?}"
        );
    }
}
