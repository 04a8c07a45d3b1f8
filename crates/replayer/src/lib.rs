//! The replayer: owns the memtables of the tables the scheduler assigns to it. For each
//! table (a WalReplay attempt) it replays the WAL from the flushed checkpoint, keeps tailing
//! new segments, freezes full (or old, or operator-flushed) memtables and asks the scheduler
//! for their flush, serves frozen memtables to flushers (`ReadMemtable`) and unflushed data
//! to readers (`Get`, `Scan`), and drops a frozen memtable only once the checkpoint the
//! scheduler reports in heartbeat replies covers it.
//!
//! Backpressure: while `wal_replay.max_frozen_memtables` memtables of a table wait for their
//! flush, the table's WAL is not read (the log grows, memory does not).

pub mod replay;
pub mod table;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use proto::v1 as pb;
use proto::v1::replayer_server::{Replayer, ReplayerServer};
use runtime::ServiceContext;
use runtime::grpc::TracedChannel;
use runtime::now_ms;
use runtime::worker::{
    AttemptGuard, HeartbeatSource, RunningAttempts, serve_worker_with, service_info,
};
use storage::Storage;
use tokio::sync::Notify;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::replay::{PassInput, PassOutcome, PassStats};
use crate::table::{Frozen, Limits, TableState, Version};

/// A frozen memtable whose flush was acknowledged is asked for again after this long
/// (its task may have failed for good; a live task is simply returned again).
const REREQUEST_MS: i64 = 10_000;
/// Entries per ReadMemtable message unless the flusher asks otherwise.
const DEFAULT_CHUNK: usize = 4096;

/// A table held under one WalReplay attempt.
struct Held {
    task: (u64, u32),
    state: Arc<Mutex<TableState>>,
    /// Stops the table's replay loop.
    cancel: CancellationToken,
}

/// State shared by the gRPC service, the replay loops, the flush requester and heartbeats.
struct Shared {
    config: Arc<runtime::Config>,
    storage: Storage,
    advertised_address: String,
    attempts: Arc<RunningAttempts>,
    tables: Mutex<HashMap<String, Held>>,
    /// Memtable ids: unique on this replayer and, seeded from the clock, across restarts
    /// (a flush task names its memtable by id).
    ids: AtomicU64,
    /// Wakes the flush requester (a memtable was frozen).
    flush_wake: Notify,
    /// Wakes the replay loops (a checkpoint moved: a stalled table may go on).
    replay_wake: Notify,
    scheduler: pb::scheduler_client::SchedulerClient<TracedChannel>,
    shutdown: CancellationToken,
    started_at: Instant,
    /// Entries applied over all tables (for the replay rate).
    applied_total: AtomicU64,
}

impl Shared {
    fn tables(&self) -> std::sync::MutexGuard<'_, HashMap<String, Held>> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn limits(&self) -> Limits {
        let c = &self.config;
        let max = c.memtable_flush.max_memtable_size.0 as f64;
        Limits {
            freeze_bytes: (max * c.memtable_flush.flush_threshold).max(1.0) as u64,
            max_age_ms: c.wal_replay.flush_interval.get().as_millis() as i64,
            max_frozen: c.wal_replay.max_frozen_memtables as usize,
        }
    }

    /// The state of `table`, or NOT_FOUND.
    fn state(&self, table: &str) -> Result<Arc<Mutex<TableState>>, Status> {
        self.tables()
            .get(table)
            .map(|h| h.state.clone())
            .ok_or_else(|| {
                Status::not_found(format!(
                    "table {table:?} is not held by replayer {} (not assigned here, or being replayed after a restart)",
                    self.advertised_address
                ))
            })
    }
}

fn lock(state: &Mutex<TableState>) -> std::sync::MutexGuard<'_, TableState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

impl HeartbeatSource for Shared {
    fn running(&self) -> Vec<pb::TaskProgress> {
        self.attempts.running()
    }

    fn tables(&self) -> Vec<pb::TableReplayState> {
        self.tables()
            .values()
            .map(|h| {
                let mut st = lock(&h.state);
                let ingest_bytes_per_sec = st.ingest_rate(runtime::now_ms());
                pb::TableReplayState {
                    table: st.table.clone(),
                    wal_head_seq: st.wal_head_seq.max(st.applied_seq()),
                    applied_seq: st.applied_seq(),
                    memtable_bytes: st.memory_bytes(),
                    frozen_memtables: st.frozen_count() as u32,
                    ingest_bytes_per_sec,
                    task_id: h.task.0,
                    attempt: h.task.1,
                    error: st.error.clone().unwrap_or_default(),
                    checkpoint: st.checkpoint(),
                }
            })
            .collect()
    }

    fn on_reply(&self, reply: &pb::HeartbeatResponse) {
        self.attempts.on_reply(reply);
        let mut released = 0;
        {
            let tables = self.tables();
            for c in &reply.committed_flushes {
                if let Some(h) = tables.get(&c.table) {
                    released += lock(&h.state).release(c.checkpoint);
                }
            }
            for t in &reply.freeze_tables {
                if let Some(h) = tables.get(t) {
                    lock(&h.state).freeze_requested = true;
                }
            }
        }
        if released > 0 || !reply.freeze_tables.is_empty() {
            self.replay_wake.notify_waiters();
        }
    }

    fn on_registered(&self, worker_id: u64) {
        self.attempts.on_registered(worker_id);
    }
}

/// Takes `table` under `(task, attempt)` and replays it until cancelled.
async fn replay_table(
    shared: Arc<Shared>,
    guard: AttemptGuard,
    spec: pb::WalReplaySpec,
    state: Arc<Mutex<TableState>>,
) {
    let table = spec.table.clone();
    let mode = replay::recovery_mode(spec.recovery_mode, shared.config.wal_replay.recovery_mode);
    let span = tracing::info_span!("wal_replay", table = %table, checkpoint = spec.checkpoint, mode = %mode);
    let _enter = span.enter();
    drop(_enter);
    tracing::info!(parent: &span, "replaying from the checkpoint and tailing the wal");
    let limits = shared.limits();
    // How often a caught-up table lists its WAL for new segments.
    let poll = shared.config.wal_replay.poll_interval.get();
    let mut last_read = None;
    let mut backoff = poll;
    // Quarantined segments are not read; holes between segments are checked (a listing
    // can miss a segment being written) and, once a fresh listing shows one is real,
    // read past as the format allows.
    let mut checks = wal::ReadChecks {
        skip: spec.skip_segments.clone(),
        holes: Some(Default::default()),
    };
    loop {
        if guard.cancel.is_cancelled() {
            break;
        }
        // Age- and operator-triggered freezes happen between passes.
        {
            let now = now_ms();
            let mut st = lock(&state);
            // At the frozen cap nothing more is frozen (memory stays bounded); the
            // age or operator trigger fires again once a flush commits.
            if st.freeze_due(&limits, now).is_some() && !st.is_stalled(&limits) {
                let id = shared.ids.fetch_add(1, Ordering::Relaxed);
                if st.freeze(id, now).is_some() {
                    shared.flush_wake.notify_one();
                }
            }
        }
        let mut frozen = Vec::new();
        let mut stats = PassStats::default();
        let input = PassInput {
            storage: &shared.storage,
            table: &table,
            mode,
            batch_size: shared.config.wal_replay.batch_size as usize,
            limits,
            last_read,
            checks: &checks,
            ids: &shared.ids,
            now_ms: &now_ms,
        };
        let outcome = replay::pass(&input, &state, &mut frozen, &mut stats).await;
        shared
            .applied_total
            .fetch_add(stats.entries, Ordering::Relaxed);
        let applied = lock(&state).applied_seq();
        guard.progress(|p| {
            p.applied_seq = applied;
            p.entries += stats.entries;
            p.bytes_read += stats.bytes;
        });
        if !frozen.is_empty() {
            shared.flush_wake.notify_one();
        }
        let wait = match outcome {
            PassOutcome::CaughtUp { newest } => {
                last_read = newest;
                backoff = poll;
                poll
            }
            PassOutcome::NothingNew | PassOutcome::Stalled => poll,
            PassOutcome::Relist => Duration::ZERO,
            PassOutcome::Hole {
                next_first_seq,
                message,
            } => {
                tracing::warn!(parent: &span, "{message}; reading past it (the format allows holes, but writers leave none: a segment may have been lost)");
                if let Some(h) = checks.holes.as_mut() {
                    h.insert(next_first_seq);
                }
                Duration::ZERO
            }
            PassOutcome::Storage(e) => {
                tracing::warn!(parent: &span, error = %e, "reading the wal failed; retrying");
                // Back off on failures in a row, not on a pass that failed after making
                // progress: with a storage that fails now and then, a long WAL is read a
                // stretch per pass, and waiting seconds between stretches would let the
                // replay fall ever further behind.
                backoff = if stats.entries > 0 {
                    poll
                } else {
                    (backoff * 2).min(Duration::from_secs(5))
                };
                backoff
            }
            PassOutcome::Damaged(err) => {
                tracing::error!(parent: &span, segment = %err.segment, offset = err.offset, "{err}");
                lock(&state).error = Some(err.to_string());
                report_replay_error(&shared, &guard, &spec, &err).await;
                // The table stays readable (and visible in status) until the scheduler
                // assigns it again; the attempt is over.
                return;
            }
        };
        tokio::select! {
            _ = guard.cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
            _ = shared.replay_wake.notified() => {}
        }
    }
    tracing::info!(parent: &span, "stopped replaying (cancelled or shutting down)");
    let mut tables = shared.tables();
    if tables
        .get(&table)
        .is_some_and(|h| Arc::ptr_eq(&h.state, &state))
    {
        tables.remove(&table);
    }
}

async fn report_replay_error(
    shared: &Shared,
    guard: &AttemptGuard,
    spec: &pb::WalReplaySpec,
    err: &replay::ReplayError,
) {
    let (task_id, attempt) = guard.key();
    let req = pb::CompleteTaskRequest {
        task_id,
        attempt,
        worker_id: shared.attempts.worker_id(),
        outcome: Some(pb::complete_task_request::Outcome::Error(pb::TaskError {
            // Damaged bytes are corruption: the scheduler quarantines the segment if it
            // fails the same way twice (see the scheduler's quarantine module).
            kind: if err.quarantinable {
                pb::ErrorKind::Corruption as i32
            } else {
                pb::ErrorKind::Replay as i32
            },
            message: err.to_string(),
            file: err.segment.clone(),
            offset: err.offset,
            retriable: false,
            attempt,
            at_unix_ms: now_ms(),
        })),
    };
    let reported =
        runtime::report::complete_task(shared.scheduler.clone(), req, &guard.cancel).await;
    if !matches!(reported, runtime::report::Reported::Accepted) {
        tracing::warn!(table = %spec.table, "the ReplayError was not recorded: {reported:?}");
    }
}

/// Asks the scheduler for the flush of every frozen memtable not asked for recently.
async fn request_flushes(shared: Arc<Shared>) {
    let mut client = shared.scheduler.clone();
    loop {
        let now = now_ms();
        let mut wanted: Vec<(String, (u64, u32), Frozen)> = Vec::new();
        for (name, h) in shared.tables().iter() {
            let st = lock(&h.state);
            if st.error.is_some() {
                continue;
            }
            for f in st.frozen() {
                if f.requested_at_ms == 0 || now - f.requested_at_ms > REREQUEST_MS {
                    wanted.push((name.clone(), h.task, f.clone()));
                }
            }
        }
        for (table, (task_id, attempt), f) in wanted {
            let req = pb::RequestFlushRequest {
                table: table.clone(),
                memtable_id: f.memtable.id(),
                first_seq: f.first_seq,
                last_seq: f.last_seq,
                size_bytes: f.bytes,
                replayer_address: shared.advertised_address.clone(),
                after_seq: f.after_seq,
                replay_task_id: task_id,
                replay_attempt: attempt,
            };
            match client.request_flush(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    tracing::debug!(table = %table, memtable_id = f.memtable.id(), task_id = r.task_id, "flush requested");
                    if let Some(h) = shared.tables().get(&table) {
                        lock(&h.state).mark_requested(f.memtable.id(), now_ms());
                    }
                }
                Err(s) => {
                    tracing::warn!(table = %table, memtable_id = f.memtable.id(), code = ?s.code(), error = %s.message(), "flush request refused or failed; asking again later");
                }
            }
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = shared.flush_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Publishes the replay rate and per-table gauges once a second.
async fn publish_metrics(shared: Arc<Shared>) {
    let mut last = (Instant::now(), shared.applied_total.load(Ordering::Relaxed));
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Instant::now();
        let total = shared.applied_total.load(Ordering::Relaxed);
        let secs = now.duration_since(last.0).as_secs_f64();
        if secs > 0.0 {
            metrics::gauge!(runtime::metrics::WAL_REPLAY_RATE, "service" => "replayer")
                .set((total - last.1) as f64 / secs);
        }
        last = (now, total);
        for (name, h) in shared.tables().iter() {
            let st = lock(&h.state);
            let t = name.clone();
            metrics::gauge!("replayer_replay_lag", "table" => t.clone())
                .set(st.wal_head_seq.saturating_sub(st.applied_seq()) as f64);
            metrics::gauge!("replayer_applied_seq", "table" => t.clone())
                .set(st.applied_seq() as f64);
            metrics::gauge!("replayer_memtable_bytes", "table" => t.clone())
                .set(st.memory_bytes() as f64);
            metrics::gauge!("replayer_frozen_memtables", "table" => t)
                .set(st.frozen_count() as f64);
        }
    }
}

fn version_to_pb(v: Version) -> pb::KeyValue {
    pb::KeyValue {
        key: v.key.to_vec(),
        value: v.value.to_vec(),
        seq: v.seq,
        tombstone: v.tombstone,
    }
}

struct ReplayerApi(Arc<Shared>);

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ReadMemtableResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Replayer for ReplayerApi {
    async fn replay_from_checkpoint(
        &self,
        request: Request<pb::ReplayFromCheckpointRequest>,
    ) -> Result<Response<pb::DispatchResponse>, Status> {
        let req = request.into_inner();
        let d = req
            .dispatch
            .ok_or_else(|| Status::invalid_argument("dispatch: required"))?;
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: required"))?;
        storage::paths::validate_table_name(&spec.table)
            .map_err(|e| Status::invalid_argument(format!("spec.table: {e}")))?;
        let s = &self.0;
        let guard = s.attempts.try_start(d.task_id, d.attempt, &s.shutdown)?;
        let id = s.ids.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(Mutex::new(TableState::new(
            &spec.table,
            spec.checkpoint,
            id,
            now_ms(),
        )));
        let held = Held {
            task: (d.task_id, d.attempt),
            state: state.clone(),
            cancel: guard.cancel.clone(),
        };
        // A newer attempt replaces whatever this replayer held for the table (its
        // memtables' flushes were cancelled with the reassignment).
        if let Some(old) = s.tables().insert(spec.table.clone(), held) {
            old.cancel.cancel();
        }
        tracing::info!(table = %spec.table, task_id = d.task_id, attempt = d.attempt, checkpoint = spec.checkpoint, "table assigned");
        tokio::spawn(replay_table(s.clone(), guard, spec, state));
        Ok(Response::new(pb::DispatchResponse { accepted: true }))
    }

    async fn read_memtable(
        &self,
        request: Request<pb::ReadMemtableRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let req = request.into_inner();
        let memtable = {
            let state = self.0.state(&req.table)?;
            let st = lock(&state);
            st.frozen_memtable(req.memtable_id).ok_or_else(|| {
                Status::not_found(format!(
                    "memtable {} of table {:?} is not frozen on this replayer (already flushed and dropped, or never existed)",
                    req.memtable_id, req.table
                ))
            })?
        };
        let chunk = match req.chunk_entries {
            0 => DEFAULT_CHUNK,
            n => (n as usize).min(1 << 16),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let result = table::read_chunks(&memtable, chunk, |versions| {
                let msg = pb::ReadMemtableResponse {
                    entries: versions.into_iter().map(version_to_pb).collect(),
                };
                tx.blocking_send(Ok(msg)).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::internal(format!(
                    "reading memtable {}: {e}",
                    memtable.id()
                ))));
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get(
        &self,
        request: Request<pb::MemtableGetRequest>,
    ) -> Result<Response<pb::MemtableGetResponse>, Status> {
        let req = request.into_inner();
        runtime::limits::check_key("key", &req.key)?;
        let state = self.0.state(&req.table)?;
        let (memtables, applied_seq) = {
            let st = lock(&state);
            (st.memtables(), st.applied_seq())
        };
        let found = table::get(&memtables, &req.key);
        Ok(Response::new(pb::MemtableGetResponse {
            found: found.is_some(),
            entry: found.map(version_to_pb),
            applied_seq,
        }))
    }

    async fn scan(
        &self,
        request: Request<pb::MemtableScanRequest>,
    ) -> Result<Response<pb::MemtableScanResponse>, Status> {
        let req = request.into_inner();
        let range = req.range.unwrap_or_default();
        runtime::limits::check_key("range.start", &range.start)?;
        runtime::limits::check_key("range.end", &range.end)?;
        runtime::limits::check_page("limit", req.limit, runtime::limits::MAX_SCAN_PAGE)?;
        let state = self.0.state(&req.table)?;
        let (memtables, applied_seq) = {
            let st = lock(&state);
            (st.memtables(), st.applied_seq())
        };
        let limit = match req.limit {
            0 => 1000,
            n => n as usize,
        };
        let (entries, truncated) = tokio::task::spawn_blocking(move || {
            table::scan(&memtables, &range.start, &range.end, limit)
        })
        .await
        .map_err(|e| Status::internal(format!("scan task: {e}")))?
        .map_err(|e| Status::internal(format!("scan of table {:?}: {e}", req.table)))?;
        Ok(Response::new(pb::MemtableScanResponse {
            entries: entries.into_iter().map(version_to_pb).collect(),
            truncated,
            applied_seq,
        }))
    }

    async fn get_status(
        &self,
        _request: Request<pb::WorkerStatusRequest>,
    ) -> Result<Response<pb::ReplayerStatus>, Status> {
        let s = &self.0;
        Ok(Response::new(pb::ReplayerStatus {
            info: Some(service_info(
                "replayer",
                &s.advertised_address,
                s.started_at,
                &s.attempts,
            )),
            tables: HeartbeatSource::tables(s.as_ref()),
        }))
    }
}

/// Runs the replayer until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let attempts = RunningAttempts::new(ctx.config.wal_replay.max_parallel_replays);
    let storage = runtime::open_storage(&ctx.config)?;
    let channel = runtime::grpc::connect_lazy(
        &ctx.scheduler_endpoint,
        ctx.config.server.request_timeout.get(),
    )?;
    let seed = (now_ms().max(1) as u64).saturating_mul(1000);
    let shared = Arc::new(Shared {
        config: ctx.config.clone(),
        storage,
        advertised_address: ctx.advertised_address.clone(),
        attempts,
        tables: Mutex::new(HashMap::new()),
        ids: AtomicU64::new(seed),
        flush_wake: Notify::new(),
        replay_wake: Notify::new(),
        scheduler: pb::scheduler_client::SchedulerClient::new(channel),
        shutdown: ctx.shutdown.clone(),
        started_at: ctx.started_at,
        applied_total: AtomicU64::new(0),
    });
    tokio::spawn(request_flushes(shared.clone()));
    tokio::spawn(publish_metrics(shared.clone()));
    let max_message = ctx.config.server.max_message_size.as_u64() as usize;
    serve_worker_with(
        ctx,
        pb::WorkerKind::Replayer,
        shared.clone(),
        ReplayerServer::new(ReplayerApi(shared)).max_decoding_message_size(max_message),
    )
    .await
}
