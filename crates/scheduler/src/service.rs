//! The scheduler's IO edge: the worker-facing `Scheduler` service, the operators' `Admin`
//! service, and the dispatch loop. State lives in the pure [`Core`]; every change is
//! persisted to the catalog (one synced WriteBatch) before anyone acts on it.
//!
//! Order of persistence, written down once: (1) the core mutates its in-memory state and
//! marks what changed; (2) [`SchedulerState::mutate`] queues those changes while still
//! holding the core's lock, so batches reach the catalog in the order the changes were
//! made, and waits until they are durable — a group commit writes every queued batch with
//! one synced write; (3) only then are replies sent and dispatch RPCs made. Reads wait the
//! same way for what they saw. If a catalog write fails the process stops: a restart
//! reloads the last durable state, and what was not persisted was never acted on.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use catalog::{Catalog, CatalogBatch, CatalogStore, ColumnDef, TaskKind, TaskSpec, TaskState};
use proto::v1 as pb;
use runtime::ServiceContext;
use runtime::config::Config;
use runtime::grpc::{TracedChannel, connect_lazy, endpoint_url};
pub use runtime::now_ms;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

use lsm::compaction::{LevelConfig, SizeTieredConfig, Strategy};

use crate::convert::{self, DispatchCall, status_of};
use crate::core::{Core, CoreConfig, Dispatch};

/// Attempts ended by the scheduler's timers, by `reason` (`no_heartbeat`, `stuck`).
pub const LEASE_EXPIRIES: &str = "processor_lease_expiries_total";
/// Completions refused because the attempt was stale or its inputs were gone.
pub const STALE_COMMITS_REFUSED: &str = "processor_stale_commits_refused_total";

/// Seconds until L0 reaches `compaction.l0_stop_threshold` at its current growth, by
/// table (negative: not approaching).
pub const STALL_FORECAST: &str = "processor_stall_forecast_seconds";
/// Bytes compaction still owes, by table.
pub const COMPACTION_DEBT: &str = "processor_compaction_debt_bytes";
/// Files quarantined as poison inputs, by table.
pub const QUARANTINED_FILES: &str = "processor_quarantined_files";
/// WAL bytes/s the replayers last reported, by table (what traffic-aware scheduling uses).
pub const INGEST_RATE: &str = "processor_ingest_bytes_per_sec";

/// Priorities: flushes and replays first, then L0 compactions, deeper compactions, then
/// housekeeping. Waiting time is added by the core, so nothing starves.
pub fn priority_of(spec: &TaskSpec) -> i32 {
    match spec {
        TaskSpec::MemtableFlush { .. } => 100,
        TaskSpec::WalReplay { .. } => 90,
        TaskSpec::Compaction { inputs, .. } => {
            let top = inputs.first().map_or(0, |(l, _)| *l as i32);
            80 - 5 * top
        }
        TaskSpec::Cleanup { .. } | TaskSpec::StatisticsUpdate { .. } => 10,
    }
}

/// The core's limits and timers from the service config.
pub fn core_config(cfg: &Config) -> CoreConfig {
    let s = &cfg.scheduler;
    let mut max_running = std::collections::HashMap::new();
    max_running.insert(
        TaskKind::MemtableFlush,
        cfg.memtable_flush.max_concurrent_flushes as usize,
    );
    max_running.insert(
        TaskKind::Compaction,
        cfg.compaction.max_concurrent_compactions as usize,
    );
    max_running.insert(
        TaskKind::WalReplay,
        cfg.wal_replay.max_parallel_replays as usize,
    );
    CoreConfig {
        queue_size: cfg.processor.queue_size as usize,
        max_attempts: s.max_attempts,
        backoff_base_ms: s.retry_backoff_base.get().as_millis() as i64,
        backoff_max_ms: s.retry_backoff_max.get().as_millis() as i64,
        heartbeat_timeout_ms: s.heartbeat_timeout.get().as_millis() as i64,
        stuck_timeout_ms: s.stuck_timeout.get().as_millis() as i64,
        max_running,
        num_levels: cfg.compaction.level_based.num_levels as usize,
        aging_ms: 1000,
        assign_replays: true,
        traffic: crate::traffic::TrafficPolicy {
            peak_ingest_bytes_per_sec: s.peak_ingest_bytes_per_sec.as_u64(),
            windows: s.maintenance_windows.clone(),
        },
        io_budget_bytes_per_sec: s.io_budget.as_u64(),
    }
}

/// The picker strategy from the service config.
pub fn strategy(cfg: &Config) -> Strategy {
    strategy_with(cfg.compaction.strategy, &cfg.compaction)
}

/// The picker strategy of `kind` with the knobs of `c` (the what-if plan overrides some).
pub fn strategy_with(
    kind: runtime::config::Strategy,
    c: &runtime::config::CompactionConfig,
) -> Strategy {
    match kind {
        runtime::config::Strategy::LevelBased => Strategy::LevelBased(LevelConfig {
            trigger_threshold: c.trigger_threshold,
            max_bytes_for_level_base: c.level_based.max_bytes_for_level_base.as_u64(),
            level_multiplier: c.level_based.level_multiplier,
            dynamic_level_bytes: c.level_based.dynamic_level_bytes,
            num_levels: c.level_based.num_levels,
            target_file_size: c.target_file_size.as_u64(),
            tombstone_ratio: c.tombstone_ratio,
            ..LevelConfig::default()
        }),
        runtime::config::Strategy::SizeTiered => Strategy::SizeTiered(SizeTieredConfig {
            min_threshold: c.trigger_threshold,
            max_threshold: c.size_tiered.max_threshold,
            bucket_low: c.size_tiered.bucket_low,
            bucket_high: c.size_tiered.bucket_high,
            min_sstable_size: c.size_tiered.min_sstable_size.as_u64(),
            tombstone_ratio: c.tombstone_ratio,
            ..SizeTieredConfig::default()
        }),
    }
}

/// Where the scheduler's time comes from: the system clock in production, simulated time
/// in deterministic simulation (lease expiry, backoff and every timestamp the core records
/// then replay exactly).
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock ([`runtime::now_ms`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// How the scheduler reaches a worker at an advertised address: a lazily connecting
/// channel with timeouts and HTTP/2 keepalive. In production a TCP channel
/// ([`TcpConnector`]); in simulation, one over the simulated network.
pub trait WorkerConnector: Send + Sync + 'static {
    fn connect(&self, address: &str, request_timeout: Duration) -> Result<TracedChannel, String>;
}

/// Channels over TCP ([`runtime::grpc::connect_lazy`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl WorkerConnector for TcpConnector {
    fn connect(&self, address: &str, request_timeout: Duration) -> Result<TracedChannel, String> {
        connect_lazy(&endpoint_url(address), request_timeout).map_err(|e| e.to_string())
    }
}

/// Where the committer writes from.
pub enum CommitMode {
    /// A dedicated thread (production: a RocksDB write blocks for its fsync).
    Thread,
    /// A task on the current tokio runtime, each write after `write_delay` (simulation:
    /// everything on the host's runtime, so a seed replays exactly, and a crash during the
    /// delay loses what was not yet written, as a crash before an fsync would).
    Task { write_delay: Duration },
}

/// What [`SchedulerState::with_parts`] builds the state from (tests and simulation inject
/// their own catalog, clock and network).
pub struct SchedulerParts {
    pub config: Arc<Config>,
    pub advertised_address: String,
    pub store: Box<dyn CatalogStore>,
    pub commit_mode: CommitMode,
    pub clock: Arc<dyn Clock>,
    pub connector: Arc<dyn WorkerConnector>,
    pub storage: storage::Storage,
}

/// Group commit: changes are queued in the order the core made them (under the core's
/// lock); the committer (a dedicated thread, or a task in simulation) writes everything
/// queued as one durable catalog write and publishes the highest durable sequence number;
/// requests `await` it without blocking a runtime thread. One fsync covers every request
/// that arrived while the previous one ran.
struct Committer {
    queue: Mutex<CommitQueue>,
    work: Condvar,
    /// Wakes the committer task ([`CommitMode::Task`]).
    work_task: Notify,
    /// The highest durable sequence number, and its waiters. (Not a `watch` channel: its
    /// waiters wake in an order drawn from tokio's unseeded RNG, and a simulated run must
    /// replay exactly.)
    durable: std::sync::atomic::AtomicU64,
    durable_changed: Notify,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct CommitQueue {
    last_seq: u64,
    pending: Vec<CatalogBatch>,
    stopped: bool,
}

impl Committer {
    /// Starts the committer over `store`.
    fn start(store: Box<dyn CatalogStore>, mode: CommitMode) -> std::io::Result<Arc<Self>> {
        let committer = Arc::new(Self {
            queue: Mutex::new(CommitQueue::default()),
            work: Condvar::new(),
            work_task: Notify::new(),
            durable: std::sync::atomic::AtomicU64::new(0),
            durable_changed: Notify::new(),
            thread: Mutex::new(None),
        });
        let c = committer.clone();
        match mode {
            CommitMode::Thread => {
                let thread = std::thread::Builder::new()
                    .name("catalog-committer".into())
                    .spawn(move || c.run(store))?;
                *committer.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
            }
            CommitMode::Task { write_delay } => {
                tokio::spawn(async move { c.run_task(store, write_delay).await });
            }
        }
        Ok(committer)
    }

    fn run(&self, store: Box<dyn CatalogStore>) {
        loop {
            let (batches, last) = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                while q.pending.is_empty() && !q.stopped {
                    q = self.work.wait(q).unwrap_or_else(|e| e.into_inner());
                }
                if q.pending.is_empty() && q.stopped {
                    return;
                }
                (std::mem::take(&mut q.pending), q.last_seq)
            };
            self.persist(store.as_ref(), batches, last);
        }
    }

    async fn run_task(&self, store: Box<dyn CatalogStore>, write_delay: Duration) {
        loop {
            let taken = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                if q.pending.is_empty() && q.stopped {
                    return;
                }
                (!q.pending.is_empty()).then(|| (std::mem::take(&mut q.pending), q.last_seq))
            };
            let Some((batches, last)) = taken else {
                self.work_task.notified().await;
                continue;
            };
            tokio::time::sleep(write_delay).await;
            self.persist(store.as_ref(), batches, last);
        }
    }

    fn persist(&self, store: &dyn CatalogStore, batches: Vec<CatalogBatch>, last: u64) {
        if let Err(e) = store.write_many(batches) {
            // Fail-stop: nothing of these changes was acted on; a restart reloads the
            // last durable state.
            tracing::error!("catalog write failed: {e}; stopping");
            eprintln!("error: catalog write failed: {e}; stopping");
            std::process::exit(70);
        }
        self.durable
            .fetch_max(last, std::sync::atomic::Ordering::AcqRel);
        self.durable_changed.notify_waiters();
    }

    /// Queues a batch; returns the sequence number to wait for (the last one queued when
    /// the batch is empty).
    fn enqueue(&self, batch: CatalogBatch) -> u64 {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if !batch.is_empty() {
            q.last_seq += 1;
            q.pending.push(batch);
            self.work.notify_one();
            self.work_task.notify_one();
        }
        q.last_seq
    }

    fn last_enqueued(&self) -> u64 {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_seq
    }

    async fn wait_durable(&self, seq: u64) {
        loop {
            // Registered before the check, so a write that lands in between still wakes us.
            let notified = self.durable_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.durable.load(std::sync::atomic::Ordering::Acquire) >= seq {
                return;
            }
            notified.await;
        }
    }

    fn stop(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        self.work.notify_all();
        self.work_task.notify_one();
    }

    /// Stops after writing what is queued, and waits for the thread, which closes the
    /// catalog (RocksDB) on its way out: the database must be closed before the process
    /// exits, or RocksDB's static destructors race with an open instance.
    fn close(&self) {
        self.stop();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for SchedulerState {
    fn drop(&mut self) {
        self.committer.stop();
    }
}

/// Shared state of the scheduler process.
pub struct SchedulerState {
    config: Arc<Config>,
    strategy: Strategy,
    advertised_address: String,
    started_at: std::time::Instant,
    core: Mutex<Core>,
    committer: Arc<Committer>,
    clock: Arc<dyn Clock>,
    connector: Arc<dyn WorkerConnector>,
    /// Wakes the dispatch loop when there may be work to hand out.
    wake: Notify,
    channels: Mutex<BTreeMap<String, TracedChannel>>,
    /// The shared storage (Cleanup lists it; CreateTable checks a name has no leftovers).
    storage: storage::Storage,
}

impl SchedulerState {
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn storage(&self) -> &storage::Storage {
        &self.storage
    }

    /// Writes what is queued and closes the catalog. Called once serving has stopped;
    /// later changes are not persisted (the process is exiting).
    pub fn close(&self) {
        self.committer.close();
    }

    /// Wakes the dispatch loop (new work was queued).
    pub(crate) fn wake(&self) {
        self.wake.notify_one();
    }

    /// Opens the catalog and rebuilds the state from it.
    pub fn open(ctx: &ServiceContext) -> anyhow::Result<Self> {
        let path = std::path::Path::new(&ctx.config.catalog.path);
        std::fs::create_dir_all(path)
            .map_err(|e| anyhow::anyhow!("catalog.path {}: {e}", path.display()))?;
        let mut state = Self::with_parts(SchedulerParts {
            config: ctx.config.clone(),
            advertised_address: ctx.advertised_address.clone(),
            store: Box::new(Catalog::open(path)?),
            commit_mode: CommitMode::Thread,
            clock: Arc::new(SystemClock),
            connector: Arc::new(TcpConnector),
            storage: runtime::open_storage(&ctx.config)?,
        })?;
        state.started_at = ctx.started_at;
        Ok(state)
    }

    /// Rebuilds the state from `parts.store` and starts its committer (in
    /// [`CommitMode::Task`], inside a tokio runtime).
    pub fn with_parts(parts: SchedulerParts) -> anyhow::Result<Self> {
        let snapshot = parts.store.load()?;
        let core = Core::from_snapshot(core_config(&parts.config), snapshot, parts.clock.now_ms());
        Ok(Self {
            strategy: strategy(&parts.config),
            config: parts.config,
            advertised_address: parts.advertised_address,
            started_at: std::time::Instant::now(),
            core: Mutex::new(core),
            committer: Committer::start(parts.store, parts.commit_mode)?,
            clock: parts.clock,
            connector: parts.connector,
            wake: Notify::new(),
            channels: Mutex::new(BTreeMap::new()),
            storage: parts.storage,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the core and returns its result once what it changed (and everything
    /// changed before it) is durable in the catalog.
    pub async fn mutate<R>(&self, f: impl FnOnce(&mut Core, i64) -> R) -> R {
        let (out, seq) = {
            let mut core = self.lock();
            let out = f(&mut core, self.clock.now_ms());
            let batch = core.take_batch();
            // Enqueued under the core's lock: the commit order is the order of the changes.
            (out, self.committer.enqueue(batch))
        };
        self.committer.wait_durable(seq).await;
        out
    }

    /// Reads the core; returns once everything the read may have seen is durable, so no
    /// reply ever shows state a crash could take back.
    pub async fn read<R>(&self, f: impl FnOnce(&Core, i64) -> R) -> R {
        let (out, seq) = {
            let core = self.lock();
            (
                f(&core, self.clock.now_ms()),
                self.committer.last_enqueued(),
            )
        };
        self.committer.wait_durable(seq).await;
        out
    }

    fn channel(&self, address: &str) -> Result<TracedChannel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let c = self
            .connector
            .connect(address, self.config.server.request_timeout.get())
            .map_err(|e| Status::unavailable(format!("worker address {address}: {e}")))?;
        channels.insert(address.to_owned(), c.clone());
        Ok(c)
    }

    /// Sends one dispatch RPC inside a `dispatch` span (its trace context travels to the
    /// worker); a refusal or an unreachable worker returns the task to the queue.
    async fn send(self: Arc<Self>, d: Dispatch) {
        let span = tracing::info_span!("dispatch", task_id = d.task_id, attempt = d.attempt, table = d.spec.table(), task_type = d.spec.kind().label(), worker = %d.address);
        // Every attempt continues the trace of the decision that created the task.
        runtime::telemetry::set_parent_from(&span, &d.trace_parent);
        tracing::Instrument::instrument(self.send_in_span(d), span).await
    }

    async fn send_in_span(self: Arc<Self>, d: Dispatch) {
        let result = async {
            let channel = self.channel(&d.address)?;
            let accepted = match convert::dispatch_call(&d) {
                DispatchCall::Replay(r) => {
                    pb::replayer_client::ReplayerClient::new(channel)
                        .replay_from_checkpoint(r)
                        .await?
                        .into_inner()
                        .accepted
                }
                DispatchCall::Flush(r) => {
                    pb::flusher_client::FlusherClient::new(channel)
                        .flush_memtable(r)
                        .await?
                        .into_inner()
                        .accepted
                }
                DispatchCall::Compact(r) => {
                    pb::compactor_client::CompactorClient::new(channel)
                        .compact_level(r)
                        .await?
                        .into_inner()
                        .accepted
                }
                DispatchCall::Cleanup(r) => {
                    pb::compactor_client::CompactorClient::new(channel)
                        .run_cleanup(r)
                        .await?
                        .into_inner()
                        .accepted
                }
                DispatchCall::Statistics(r) => {
                    pb::compactor_client::CompactorClient::new(channel)
                        .update_statistics(r)
                        .await?
                        .into_inner()
                        .accepted
                }
            };
            Ok::<bool, Status>(accepted)
        };
        let outcome = tokio::task::unconstrained(result).await;
        match outcome {
            Ok(true) => tracing::info!("dispatched"),
            // Busy, unreachable or slow: not the task's fault; back to the queue.
            Ok(false) => self.requeue(&d, "worker did not accept".to_owned()).await,
            // Nothing listens there (a killed worker whose lease has not run out yet).
            Err(s) if s.code() == tonic::Code::Unavailable => {
                tracing::warn!(reason = %s.message(), "worker unreachable; task goes back to the queue");
                self.mutate(|c, now| c.dispatch_unreachable(d.task_id, d.attempt, now))
                    .await;
                self.wake.notify_one();
            }
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Cancelled
                ) =>
            {
                self.requeue(&d, format!("{:?}: {}", s.code(), s.message()))
                    .await
            }
            // The worker rejected the work itself (unimplemented, invalid): a failed
            // attempt, so max_attempts bounds it instead of an endless requeue.
            Err(s) => {
                tracing::warn!(code = ?s.code(), "dispatch rejected: {}", s.message());
                let error = catalog::ErrorRecord {
                    attempt: d.attempt,
                    kind: "internal".to_owned(),
                    message: format!(
                        "dispatch rejected by {}: {:?}: {}",
                        d.address,
                        s.code(),
                        s.message()
                    ),
                    file: String::new(),
                    offset: 0,
                    retriable: true,
                    at_ms: 0,
                };
                let _ = self
                    .mutate(|c, now| {
                        c.complete(
                            d.task_id,
                            d.attempt,
                            crate::core::Outcome::Failure(error),
                            now,
                        )
                    })
                    .await;
                self.wake.notify_one();
            }
        }
    }

    /// Forecasts of one table (or all, for an empty name).
    pub async fn forecasts(&self, table: &str) -> Vec<crate::forecast::Forecast> {
        let level = match &self.strategy {
            Strategy::LevelBased(c) => c.clone(),
            Strategy::SizeTiered(c) => LevelConfig {
                trigger_threshold: c.min_threshold,
                ..LevelConfig::default()
            },
        };
        let stop = self.config.compaction.l0_stop_threshold;
        self.read(|c, now| {
            c.tables()
                .filter(|t| table.is_empty() || t.name == table)
                .filter_map(|t| c.forecast(&t.name, &level, stop, now))
                .collect()
        })
        .await
    }

    async fn requeue(&self, d: &Dispatch, reason: String) {
        tracing::warn!(reason = %reason, "dispatch refused; task goes back to the queue");
        self.mutate(|c, now| c.dispatch_refused(d.task_id, d.attempt, now))
            .await;
        self.wake.notify_one();
    }

    async fn publish_metrics(&self) {
        let (counts, (expired, stuck)) = self.read(|c, _| (c.counts(), c.timer_expiries())).await;
        metrics::counter!(LEASE_EXPIRIES, "reason" => "no_heartbeat").absolute(expired);
        metrics::counter!(LEASE_EXPIRIES, "reason" => "stuck").absolute(stuck);
        for f in self.forecasts("").await {
            metrics::gauge!(STALL_FORECAST, "table" => f.table.clone()).set(f.seconds_to_stall);
            metrics::gauge!(COMPACTION_DEBT, "table" => f.table).set(f.debt_bytes as f64);
        }
        let quarantined: BTreeMap<String, usize> = self
            .read(|c, _| {
                let mut by_table: BTreeMap<String, usize> =
                    c.tables().map(|t| (t.name.clone(), 0)).collect();
                for q in c.quarantined() {
                    *by_table.entry(q.table.clone()).or_default() += 1;
                }
                by_table
            })
            .await;
        for (table, n) in quarantined {
            metrics::gauge!(QUARANTINED_FILES, "table" => table).set(n as f64);
        }
        for (table, rate) in self.read(|c, now| c.ingest_by_table(now)).await {
            metrics::gauge!(INGEST_RATE, "table" => table).set(rate);
        }
        for (kind, c) in counts {
            metrics::gauge!(runtime::metrics::QUEUE_DEPTH, "type" => kind.label(), "service" => "scheduler")
                .set(c.pending as f64);
        }
        // Table statistics (the last StatisticsUpdate) and the flushed checkpoint.
        let tables: Vec<(String, u64, Option<pb::TableStatistics>, u64, u64)> = self
            .read(|c, _| {
                c.tables()
                    .map(|t| {
                        let name = t.name.clone();
                        (
                            name.clone(),
                            c.manifest(&name).map_or(0, |m| m.checkpoint),
                            c.stats(&name).and_then(convert::stats_from_json),
                            c.counter(&format!("io:{name}:ingested")),
                            c.counter(&format!("io:{name}:written")),
                        )
                    })
                    .collect()
            })
            .await;
        for (table, checkpoint, stats, ingested, written) in tables {
            metrics::gauge!("table_flushed_checkpoint", "table" => table.clone())
                .set(checkpoint as f64);
            if ingested > 0 {
                metrics::gauge!("table_write_amplification", "table" => table.clone())
                    .set(written as f64 / ingested as f64);
            }
            let Some(s) = stats else { continue };
            metrics::gauge!("table_entries", "table" => table.clone()).set(s.entries as f64);
            metrics::gauge!("table_tombstones", "table" => table.clone()).set(s.tombstones as f64);
            metrics::gauge!("table_estimated_live_keys", "table" => table.clone())
                .set(s.estimated_live_keys as f64);
            metrics::gauge!("table_space_amplification", "table" => table.clone())
                .set(s.space_amplification);
            for l in &s.levels {
                let level = l.level.to_string();
                metrics::gauge!("table_level_files", "table" => table.clone(), "level" => level.clone())
                    .set(l.files as f64);
                metrics::gauge!("table_level_bytes", "table" => table.clone(), "level" => level)
                    .set(l.bytes as f64);
            }
            for col in &s.columns {
                metrics::gauge!("table_column_null_count", "table" => table.clone(), "column" => col.name.clone())
                    .set(col.null_count as f64);
                metrics::gauge!("table_column_distinct_estimate", "table" => table.clone(), "column" => col.name.clone())
                    .set(col.distinct_estimate as f64);
            }
        }
    }
}

/// Gives every new task a trace: a short `decide` span (a child of the current span — the
/// RPC that asked for the work, when there is one) whose context the task keeps, so each
/// attempt's dispatch, the worker's execution and the commit are one trace with it, and the
/// gap between `decide` and `dispatch` is the time spent queued.
pub(crate) fn trace_new_tasks(c: &mut Core) {
    for (id, kind, table, reason) in c.untraced() {
        let span = tracing::info_span!("decide", task_id = id, task_type = kind.label(), table = %table, reason = %reason);
        let tp = runtime::telemetry::traceparent_of(&span);
        c.set_trace_parent(id, if tp.is_empty() { "none".to_owned() } else { tp });
    }
}

/// The dispatch loop: on a short ticker and whenever woken, expire leases, pick
/// compactions for the tables that changed (all tables every `scheduler.pick_interval`)
/// and hand out work; every 5 s also forget old finished tasks.
pub async fn dispatch_loop(
    state: Arc<SchedulerState>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds: u64 = 0;
    let pick_every = state.config.scheduler.pick_interval.get();
    let mut last_pick = tokio::time::Instant::now();
    loop {
        // Biased: the same branch wins every time several are ready, so a simulated run
        // replays exactly (tokio's random branch order is not seeded on stable).
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
            _ = state.wake.notified() => {}
        }
        rounds += 1;
        // Tables whose stall forecast is below the preemption threshold (twice a second).
        let preempt_below = state
            .config
            .scheduler
            .preempt_below_stall_forecast
            .get()
            .as_secs_f64();
        let stalling: std::collections::BTreeSet<String> =
            if preempt_below > 0.0 && rounds.is_multiple_of(5) {
                state
                    .forecasts("")
                    .await
                    .into_iter()
                    .filter(|f| f.seconds_to_stall >= 0.0 && f.seconds_to_stall < preempt_below)
                    .map(|f| f.table)
                    .collect()
            } else {
                Default::default()
            };
        // Every round picks the tables that changed (cheap: usually none); every
        // pick_interval, all of them.
        let all = last_pick.elapsed() >= pick_every;
        if all {
            last_pick = tokio::time::Instant::now();
        }
        let dispatches = state
            .mutate(|c, now| {
                if rounds.is_multiple_of(50) {
                    c.prune_finished(10_000);
                }
                let (queued, moved) = c.plan_compactions(&state.strategy, all, now);
                if all {
                    let interval = state.config.statistics.interval.get().as_millis() as i64;
                    // After a change, statistics wait for things to settle a little.
                    c.queue_statistics(interval, interval.min(10_000), now);
                }
                trace_new_tasks(c);
                for (task_id, attempt) in c.preempt_for_stalls(&stalling) {
                    tracing::info!(
                        task_id,
                        attempt,
                        tables = ?stalling,
                        "stall forecast below scheduler.preempt_below_stall_forecast: preempting a deep compaction"
                    );
                }
                if !queued.is_empty() || moved > 0 {
                    tracing::info!(
                        queued = queued.len(),
                        trivially_moved = moved,
                        "compaction picker"
                    );
                }
                c.tick(now)
            })
            .await;
        for d in dispatches {
            tokio::spawn(state.clone().send(d));
        }
        if rounds.is_multiple_of(10) {
            state.publish_metrics().await;
        }
    }
}

/// The worker-facing service.
pub struct SchedulerApi(pub Arc<SchedulerState>);

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        let kind = convert::worker_kind_name(req.kind).ok_or_else(|| {
            Status::invalid_argument(format!("kind: unknown worker kind {}", req.kind))
        })?;
        let id = self
            .0
            .mutate(|c, now| {
                c.register_worker(
                    kind,
                    &req.name,
                    &req.advertised_address,
                    req.slots,
                    &req.version,
                    now,
                )
            })
            .await
            .map_err(status_of)?;
        tracing::info!(worker_id = id, kind, address = %req.advertised_address, "worker registered");
        self.0.wake.notify_one();
        Ok(Response::new(pb::RegisterWorkerResponse {
            worker_id: id,
            heartbeat_interval_ms: self.0.config.scheduler.heartbeat_interval.get().as_millis()
                as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let running: Vec<_> = req.running.iter().map(convert::progress_from_pb).collect();
        let (reply, checkpoints) = self
            .0
            .mutate(|c, now| {
                let reply = c.heartbeat(req.worker_id, &running, now);
                if !reply.reregister {
                    for t in &req.tables {
                        c.record_ingest(&t.table, t.ingest_bytes_per_sec, now);
                    }
                }
                // A replayer learns each table's checkpoint and drops the memtables it covers.
                let checkpoints: Vec<pb::CommittedFlush> = req
                    .tables
                    .iter()
                    .filter_map(|t| {
                        c.manifest(&t.table).map(|m| pb::CommittedFlush {
                            table: t.table.clone(),
                            memtable_id: 0,
                            checkpoint: m.checkpoint,
                        })
                    })
                    .collect();
                (reply, checkpoints)
            })
            .await;
        Ok(Response::new(pb::HeartbeatResponse {
            cancel: reply
                .cancel
                .iter()
                .map(|(task_id, attempt)| pb::TaskRef {
                    task_id: *task_id,
                    attempt: *attempt,
                })
                .collect(),
            reregister: reply.reregister,
            committed_flushes: checkpoints,
            freeze_tables: reply.freeze,
            preempt: reply
                .preempt
                .iter()
                .map(|(task_id, attempt)| pb::TaskRef {
                    task_id: *task_id,
                    attempt: *attempt,
                })
                .collect(),
            budgets: reply
                .budgets
                .iter()
                .map(|(task_id, attempt, b)| pb::TaskBudget {
                    task_id: *task_id,
                    attempt: *attempt,
                    io_bytes_per_sec: *b,
                })
                .collect(),
        }))
    }

    async fn complete_task(
        &self,
        request: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let req = request.into_inner();
        // Bytes for the write-amplification counters: (ingested, written).
        let io = match &req.outcome {
            Some(pb::complete_task_request::Outcome::Result(r)) => match &r.result {
                Some(pb::task_result::Result::Flush(f)) => {
                    (f.bytes_read, f.files.iter().map(|f| f.size_bytes).sum())
                }
                Some(pb::task_result::Result::Compaction(c)) => {
                    (0, c.outputs.iter().map(|f| f.size_bytes).sum())
                }
                _ => (0, 0),
            },
            _ => (0, 0),
        };
        let outcome = convert::outcome_from_pb(req.outcome)?;
        let failed = matches!(outcome, crate::core::Outcome::Failure(_));
        // The commit, a child of this RPC's span and so of the worker's attempt: the last
        // span of the task's trace.
        let commit = tracing::info_span!(
            "commit",
            task_id = req.task_id,
            attempt = req.attempt,
            task_type = tracing::field::Empty,
            table = tracing::field::Empty,
            failed,
            status = tracing::field::Empty,
        );
        // One pass through the core (one durability wait) for the commit and what the
        // metrics need to know about it.
        let (kind, started_ms, result, state, advanced) = tracing::Instrument::instrument(
            self.0.mutate(|c, now| {
                let t = c.task(req.task_id);
                let kind = t.map(|t| t.kind());
                let started = t.and_then(|t| t.current_attempt()).map(|a| a.started_at_ms);
                let table = t.map(|t| t.spec.table().to_owned()).unwrap_or_default();
                commit.record("table", table.as_str());
                let checkpoint =
                    |c: &crate::core::Core| c.manifest(&table).map_or(0, |m| m.checkpoint);
                let before = checkpoint(c);
                let result = c.complete(req.task_id, req.attempt, outcome, now);
                if result.is_ok() && !failed && !table.is_empty() {
                    // A staged flush counts now: it commits (in order) later.
                    c.add_counter(&format!("io:{table}:ingested"), io.0);
                    c.add_counter(&format!("io:{table}:written"), io.1);
                }
                // Crash points: the commit is applied in memory, not yet in the catalog.
                let advanced = checkpoint(c) > before;
                if result.is_ok() && !failed {
                    runtime::failpoint::hit_sync("scheduler.commit.before_write");
                    if advanced {
                        runtime::failpoint::hit_sync("scheduler.checkpoint.before_write");
                    }
                }
                let state = c.task(req.task_id).map(|t| t.state);
                (kind, started, result, state, advanced)
            }),
            commit.clone(),
        )
        .await;
        // Crash points: durable in the catalog, the worker not told.
        if result.is_ok() && !failed {
            runtime::failpoint::hit("scheduler.commit.after_write").await;
            if advanced {
                runtime::failpoint::hit("scheduler.checkpoint.after_write").await;
            }
        }
        let label = kind.map_or("unknown", |k| k.label());
        commit.record("task_type", label);
        match result {
            Ok(()) => {
                let status = match state {
                    Some(TaskState::Succeeded) => "succeeded",
                    Some(TaskState::Failed) => "failed",
                    _ => "retried",
                };
                commit.record("status", status);
                metrics::counter!(runtime::metrics::TASKS_TOTAL, "type" => label, "status" => status, "service" => "scheduler").increment(1);
                if let Some(started) = started_ms {
                    let secs = (self.0.clock.now_ms() - started).max(0) as f64 / 1000.0;
                    metrics::histogram!(runtime::metrics::TASK_DURATION, "type" => label)
                        .record(secs);
                }
                tracing::info!(
                    task_id = req.task_id,
                    attempt = req.attempt,
                    task_type = label,
                    status,
                    failed,
                    "attempt completed"
                );
                self.0.wake.notify_one();
                Ok(Response::new(pb::CompleteTaskResponse { accepted: true }))
            }
            Err(e) => {
                commit.record("status", "refused");
                metrics::counter!(runtime::metrics::TASKS_TOTAL, "type" => label, "status" => "refused", "service" => "scheduler").increment(1);
                if matches!(e, crate::core::CoreError::Refused(_)) {
                    metrics::counter!(STALE_COMMITS_REFUSED).increment(1);
                }
                tracing::warn!(
                    task_id = req.task_id,
                    attempt = req.attempt,
                    "completion refused: {e}"
                );
                Err(status_of(e))
            }
        }
    }

    async fn request_flush(
        &self,
        request: Request<pb::RequestFlushRequest>,
    ) -> Result<Response<pb::RequestFlushResponse>, Status> {
        let req = request.into_inner();
        if req.first_seq == 0 || req.last_seq < req.first_seq {
            return Err(Status::invalid_argument(format!(
                "first_seq/last_seq: invalid sequence range {}..={}",
                req.first_seq, req.last_seq
            )));
        }
        if req.replayer_address.is_empty() {
            return Err(Status::invalid_argument(
                "replayer_address: must not be empty",
            ));
        }
        if req.after_seq >= req.first_seq {
            return Err(Status::invalid_argument(format!(
                "after_seq: {} must be below first_seq {}",
                req.after_seq, req.first_seq
            )));
        }
        let (replay_task_id, replay_attempt) = (req.replay_task_id, req.replay_attempt);
        let spec = TaskSpec::MemtableFlush {
            table: req.table,
            memtable_id: req.memtable_id,
            replayer_address: req.replayer_address,
            first_seq: req.first_seq,
            last_seq: req.last_seq,
            after_seq: req.after_seq,
            replay_task_id,
            size_bytes: req.size_bytes,
        };
        let priority = priority_of(&spec);
        let id = self
            .0
            .mutate(|c, now| {
                c.check_flush_request(spec.table(), replay_task_id, replay_attempt)?;
                // Already durable (the replayer has not heard of the commit yet): no task.
                if let TaskSpec::MemtableFlush { last_seq, .. } = &spec
                    && c.manifest(spec.table())
                        .is_some_and(|m| m.checkpoint >= *last_seq)
                {
                    return Ok(0);
                }
                let id = c.submit(spec, priority, now);
                trace_new_tasks(c);
                id
            })
            .await
            .map_err(status_of)?;
        self.0.wake.notify_one();
        Ok(Response::new(pb::RequestFlushResponse { task_id: id }))
    }
}

/// The operators' service.
pub struct AdminApi(pub Arc<SchedulerState>);

fn table_to_pb(c: &Core, name: &str) -> Option<pb::TableInfo> {
    let t = c.table(name)?;
    let m = c.manifest(name);
    Some(pb::TableInfo {
        name: t.name.clone(),
        columns: t
            .columns
            .iter()
            .map(|col| pb::ColumnDef {
                name: col.name.clone(),
                r#type: col.kind.clone(),
            })
            .collect(),
        created_at_unix_ms: t.created_at_ms,
        checkpoint: m.map_or(0, |m| m.checkpoint),
        manifest_version: m.map_or(0, |m| m.version),
        replayer_address: t.replayer_address.clone(),
    })
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminApi {
    async fn get_status(
        &self,
        _request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let s = &self.0;
        let resp = s
            .read(|c, now| {
                let counts = c.counts();
                pb::GetStatusResponse {
                    scheduler: Some(pb::ServiceInfo {
                        service: "scheduler".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        uptime_seconds: s.started_at.elapsed().as_secs(),
                        advertised_address: s.advertised_address.clone(),
                        slots: 0,
                        running: Vec::new(),
                        memory_bytes: runtime::metrics::resident_memory_bytes().unwrap_or(0),
                    }),
                    workers: c
                        .workers()
                        .map(|w| pb::WorkerInfo {
                            worker_id: w.record.id,
                            kind: convert::worker_kind_pb(&w.record.kind) as i32,
                            name: w.record.name.clone(),
                            address: w.record.address.clone(),
                            slots: w.record.slots,
                            running: w.assigned.len() as u32,
                            last_heartbeat_ms_ago: (now - w.last_heartbeat_ms).max(0) as u64,
                            alive: c.is_alive(w, now),
                            version: w.record.version.clone(),
                        })
                        .collect(),
                    running_tasks: counts.values().map(|k| k.running as u32).sum(),
                    pending_tasks: counts.values().map(|k| k.pending as u32).sum(),
                    tables: c.tables().count() as u32,
                    storage_url: runtime::absolute_storage_url(&s.config.storage.url),
                }
            })
            .await;
        Ok(Response::new(resp))
    }

    async fn trigger_flush(
        &self,
        request: Request<pb::TriggerFlushRequest>,
    ) -> Result<Response<pb::TriggerResponse>, Status> {
        let req = request.into_inner();
        let asked = self
            .0
            .mutate(|c, _| {
                let tables: Vec<String> = c
                    .tables()
                    .filter(|t| req.table.is_empty() || t.name == req.table)
                    .map(|t| t.name.clone())
                    .collect();
                if tables.is_empty() && !req.table.is_empty() {
                    return Err(crate::core::CoreError::TableNotFound(req.table.clone()));
                }
                let mut asked = Vec::new();
                for t in tables {
                    match c.request_freeze(&t) {
                        Ok(_) => asked.push(t),
                        // One table: say why. Every table: skip the unassigned ones.
                        Err(e) if !req.table.is_empty() => return Err(e),
                        Err(_) => {}
                    }
                }
                Ok(asked)
            })
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::TriggerResponse {
            task_ids: Vec::new(),
            message: format!(
                "asked the replayer to freeze and flush {} table(s): {}; the MemtableFlush tasks appear after its next heartbeat",
                asked.len(),
                asked.join(", ")
            ),
        }))
    }

    async fn get_queue_status(
        &self,
        _request: Request<pb::GetQueueStatusRequest>,
    ) -> Result<Response<pb::GetQueueStatusResponse>, Status> {
        let resp = self
            .0
            .read(|c, now| {
                let counts = c.counts();
                let limits = &c.config().max_running;
                pb::GetQueueStatusResponse {
                    types: counts
                        .iter()
                        .map(|(k, v)| pb::QueueTypeStatus {
                            r#type: convert::kind_to_pb(*k) as i32,
                            pending: v.pending as u32,
                            running: v.running as u32,
                            failed: v.failed as u32,
                            limit: limits.get(k).map_or(0, |l| *l as u32),
                        })
                        .collect(),
                    depth: counts.values().map(|k| k.pending as u32).sum(),
                    capacity: c.config().queue_size as u32,
                    waiting: c
                        .tasks()
                        .filter(|t| t.state == TaskState::Pending)
                        .take(100)
                        .map(|t| {
                            convert::task_to_pb(t, c.waiting_reason(t, now), |id, a| {
                                c.progress(id, a)
                            })
                        })
                        .collect(),
                    ingest_bytes_per_sec: c.ingest_bytes_per_sec(now),
                    deferral: c.deferral(now).unwrap_or_default(),
                }
            })
            .await;
        Ok(Response::new(resp))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let req = request.into_inner();
        let page = match req.page_size {
            0 => 100,
            n if n > 1000 => {
                return Err(Status::invalid_argument(format!(
                    "page_size: {n} exceeds the limit of 1000"
                )));
            }
            n => n as usize,
        };
        let state = if req.state == 0 {
            None
        } else {
            Some(convert::state_from_pb(req.state).ok_or_else(|| {
                Status::invalid_argument(format!("state: unknown task state {}", req.state))
            })?)
        };
        let kind = if req.r#type == 0 {
            None
        } else {
            Some(convert::kind_from_pb(req.r#type).ok_or_else(|| {
                Status::invalid_argument(format!("type: unknown task type {}", req.r#type))
            })?)
        };
        let resp = self
            .0
            .read(|c, now| {
                let mut tasks: Vec<pb::Task> = c
                    .tasks()
                    .filter(|t| t.id > req.after_task_id)
                    .filter(|t| req.table.is_empty() || t.spec.table() == req.table)
                    .filter(|t| state.is_none_or(|s| t.state == s))
                    .filter(|t| kind.is_none_or(|k| t.kind() == k))
                    .take(page + 1)
                    .map(|t| {
                        convert::task_to_pb(t, c.waiting_reason(t, now), |id, a| c.progress(id, a))
                    })
                    .collect();
                let next = if tasks.len() > page {
                    tasks.truncate(page);
                    tasks.last().map_or(0, |t| t.task_id)
                } else {
                    0
                };
                pb::ListTasksResponse {
                    tasks,
                    next_after_task_id: next,
                }
            })
            .await;
        Ok(Response::new(resp))
    }

    async fn get_task(
        &self,
        request: Request<pb::GetTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let id = request.into_inner().task_id;
        self.0
            .read(|c, now| {
                c.task(id).map(|t| {
                    convert::task_to_pb(t, c.waiting_reason(t, now), |i, a| c.progress(i, a))
                })
            })
            .await
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("task {id} not found")))
    }

    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::Task>, Status> {
        let id = request.into_inner().task_id;
        let task = self
            .0
            .mutate(|c, now| {
                c.cancel(id, now)
                    .map(|t| convert::task_to_pb(t, String::new(), |_, _| None))
            })
            .await
            .map_err(status_of)?;
        metrics::counter!(runtime::metrics::TASKS_TOTAL, "type" => convert::kind_from_pb(task.r#type).map_or("unknown", |k| k.label()), "status" => "cancelled", "service" => "scheduler").increment(1);
        Ok(Response::new(task))
    }

    async fn trigger_compaction(
        &self,
        request: Request<pb::TriggerCompactionRequest>,
    ) -> Result<Response<pb::TriggerResponse>, Status> {
        let req = request.into_inner();
        let target = self.0.config.compaction.target_file_size.as_u64();
        let range = req.range.unwrap_or_default();
        let result = self
            .0
            .mutate(|c, now| {
                let tables: Vec<String> = if req.table.is_empty() {
                    c.tables().map(|t| t.name.clone()).collect()
                } else if c.table(&req.table).is_some() {
                    vec![req.table.clone()]
                } else {
                    return Err(crate::core::CoreError::TableNotFound(req.table.clone()));
                };
                let mut ids = Vec::new();
                for table in tables {
                    if let Some(spec) = crate::manual::manual_compaction(
                        c,
                        &table,
                        req.level,
                        &range.start,
                        &range.end,
                        target,
                        req.force,
                    )? {
                        let p = priority_of(&spec);
                        ids.push(c.submit(spec, p, now)?);
                    }
                }
                trace_new_tasks(c);
                Ok(ids)
            })
            .await;
        let ids = result.map_err(status_of)?;
        self.0.wake.notify_one();
        let message = if ids.is_empty() {
            "nothing to compact".to_owned()
        } else {
            format!("{} compaction task(s) queued", ids.len())
        };
        Ok(Response::new(pb::TriggerResponse {
            task_ids: ids,
            message,
        }))
    }

    async fn trigger_wal_replay(
        &self,
        request: Request<pb::TriggerWalReplayRequest>,
    ) -> Result<Response<pb::TriggerResponse>, Status> {
        let req = request.into_inner();
        let ids = self
            .0
            .mutate(|c, now| {
                let tables: Vec<(String, u64)> = c
                    .tables()
                    .filter(|t| req.table.is_empty() || t.name == req.table)
                    .map(|t| {
                        (
                            t.name.clone(),
                            c.manifest(&t.name).map_or(0, |m| m.checkpoint),
                        )
                    })
                    .collect();
                if tables.is_empty() && !req.table.is_empty() {
                    return Err(crate::core::CoreError::TableNotFound(req.table.clone()));
                }
                let ids = tables
                    .into_iter()
                    .map(|(table, checkpoint)| {
                        let spec = TaskSpec::WalReplay {
                            table,
                            checkpoint: if req.from_seq > 0 {
                                req.from_seq.saturating_sub(1)
                            } else {
                                checkpoint
                            },
                            recovery_mode: String::new(),
                            explicit_start: req.from_seq > 0,
                            skip_segments: Vec::new(),
                        };
                        let p = priority_of(&spec);
                        c.submit(spec, p, now)
                    })
                    .collect::<Result<Vec<_>, _>>();
                trace_new_tasks(c);
                ids
            })
            .await
            .map_err(status_of)?;
        self.0.wake.notify_one();
        Ok(Response::new(pb::TriggerResponse {
            message: format!("{} WAL replay task(s) queued", ids.len()),
            task_ids: ids,
        }))
    }

    async fn create_table(
        &self,
        request: Request<pb::CreateTableRequest>,
    ) -> Result<Response<pb::TableInfo>, Status> {
        let req = request.into_inner();
        let mut columns = Vec::new();
        for col in req.columns {
            if !matches!(col.r#type.as_str(), "int" | "float" | "string" | "bool") {
                return Err(Status::invalid_argument(format!(
                    "columns: column {:?} has unknown type {:?} (use int, float, string or bool)",
                    col.name, col.r#type
                )));
            }
            if col.name.is_empty() {
                return Err(Status::invalid_argument("columns: a column name is empty"));
            }
            columns.push(ColumnDef {
                name: col.name,
                kind: col.r#type,
            });
        }
        crate::core::validate_table_name(&req.name).map_err(status_of)?;
        let exists = self.0.read(|c, _| c.table(&req.name).is_some()).await;
        if !exists {
            // A dropped table's objects stay until Cleanup deletes them: a new table of the
            // same name would replay the old WAL and read the old SSTs.
            let name = storage::TableName::new(req.name.as_str())
                .map_err(|e| Status::invalid_argument(format!("name: {e}")))?;
            let leftovers = self
                .0
                .storage
                .list(&storage::paths::table_dir(&name))
                .await
                .map_err(|e| Status::unavailable(format!("listing storage: {e}")))?;
            if let Some(first) = leftovers.first() {
                return Err(Status::failed_precondition(format!(
                    "storage still holds {} object(s) of a dropped table {:?} (e.g. {}); Cleanup deletes them cleanup.grace_period ({}) after the drop: create the table then, or use another name",
                    leftovers.len(),
                    req.name,
                    first.location,
                    humantime_secs(self.0.config.cleanup.grace_period.get())
                )));
            }
        }
        let info = self
            .0
            .mutate(|c, now| {
                c.create_table(&req.name, columns, now)?;
                table_to_pb(c, &req.name)
                    .ok_or_else(|| crate::core::CoreError::TableNotFound(req.name.clone()))
            })
            .await
            .map_err(status_of)?;
        tracing::info!(table = %req.name, "table created");
        Ok(Response::new(info))
    }

    async fn list_tables(
        &self,
        _request: Request<pb::ListTablesRequest>,
    ) -> Result<Response<pb::ListTablesResponse>, Status> {
        let tables = self
            .0
            .read(|c, _| c.tables().filter_map(|t| table_to_pb(c, &t.name)).collect())
            .await;
        Ok(Response::new(pb::ListTablesResponse { tables }))
    }

    async fn drop_table(
        &self,
        request: Request<pb::DropTableRequest>,
    ) -> Result<Response<pb::DropTableResponse>, Status> {
        let name = request.into_inner().name;
        self.0
            .mutate(|c, now| c.drop_table(&name, now))
            .await
            .map_err(status_of)?;
        tracing::info!(table = %name, "table dropped");
        Ok(Response::new(pb::DropTableResponse {}))
    }

    async fn get_manifest(
        &self,
        request: Request<pb::GetManifestRequest>,
    ) -> Result<Response<pb::Manifest>, Status> {
        let table = request.into_inner().table;
        self.0
            .read(|c, _| {
                let m = c.manifest(&table)?;
                Some(pb::Manifest {
                    table: table.clone(),
                    version: m.version,
                    checkpoint: m.checkpoint,
                    levels: m
                        .levels
                        .levels
                        .iter()
                        .enumerate()
                        .map(|(l, files)| pb::Level {
                            level: l as u32,
                            files: files.iter().map(convert::file_to_pb).collect(),
                        })
                        .collect(),
                    locked_file_ids: c
                        .locked_files()
                        .keys()
                        .copied()
                        .filter(|id| m.levels.find(*id).is_some())
                        .collect(),
                })
            })
            .await
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("table {table:?} not found")))
    }

    async fn get_stall_forecast(
        &self,
        request: Request<pb::GetStallForecastRequest>,
    ) -> Result<Response<pb::GetStallForecastResponse>, Status> {
        let table = request.into_inner().table;
        let tables = self.0.forecasts(&table).await;
        if tables.is_empty() && !table.is_empty() {
            return Err(Status::not_found(format!("table {table:?} not found")));
        }
        Ok(Response::new(pb::GetStallForecastResponse {
            tables: tables
                .into_iter()
                .map(|f| pb::StallForecast {
                    table: f.table,
                    debt_bytes: f.debt_bytes,
                    drain_bytes_per_sec: f.drain_bytes_per_sec,
                    l0_growth_files_per_sec: f.l0_growth_files_per_sec,
                    l0_files: f.l0_files,
                    l0_stop_threshold: f.l0_stop_threshold,
                    seconds_to_stall: f.seconds_to_stall,
                })
                .collect(),
        }))
    }

    async fn plan_compaction(
        &self,
        request: Request<pb::PlanCompactionRequest>,
    ) -> Result<Response<pb::PlanCompactionResponse>, Status> {
        let req = request.into_inner();
        let mut knobs = self.0.config.compaction.clone();
        let kind = match req.strategy.as_str() {
            "" => knobs.strategy,
            "level_based" => runtime::config::Strategy::LevelBased,
            "size_tiered" => runtime::config::Strategy::SizeTiered,
            other => {
                return Err(Status::invalid_argument(format!(
                    "strategy: unknown strategy {other:?} (use level_based or size_tiered)"
                )));
            }
        };
        if req.trigger_threshold == 1 {
            return Err(Status::invalid_argument(
                "trigger_threshold: must be at least 2",
            ));
        }
        if req.trigger_threshold > 0 {
            knobs.trigger_threshold = req.trigger_threshold;
        }
        if req.target_file_size > 0 {
            knobs.target_file_size = runtime::config::ByteSize(req.target_file_size);
        }
        let strategy = strategy_with(kind, &knobs);
        let plan = self
            .0
            .read(|c, _| {
                let m = c.manifest(&req.table)?;
                let locked: std::collections::BTreeSet<u64> =
                    c.locked_files().keys().copied().collect();
                Some(lsm::compaction::pick(
                    &strategy,
                    &lsm::compaction::PickerInput {
                        version: &m.levels,
                        locked: &locked,
                    },
                ))
            })
            .await
            .ok_or_else(|| Status::not_found(format!("table {:?} not found", req.table)))?;
        let (mut read, mut written) = (0u64, 0u64);
        let compactions = plan
            .plans
            .iter()
            .map(|p| {
                read += p.estimated_read_bytes;
                written += p.estimated_write_bytes;
                let spec = TaskSpec::Compaction {
                    table: req.table.clone(),
                    inputs: p.inputs.clone(),
                    output_level: p.output_level,
                    bottommost: p.bottommost,
                    target_file_size: p.target_file_size,
                    trivial_move: p.trivial_move,
                    reason: p.reason.clone(),
                    wal_inputs: Vec::new(),
                };
                let compaction = match convert::spec_to_pb(&spec, &[]).spec {
                    Some(pb::task_spec::Spec::Compaction(c)) => Some(c),
                    _ => None,
                };
                pb::PlannedCompaction {
                    spec: compaction,
                    estimated_bytes_read: p.estimated_read_bytes,
                    estimated_bytes_written: p.estimated_write_bytes,
                }
            })
            .collect();
        Ok(Response::new(pb::PlanCompactionResponse {
            compactions,
            estimated_write_amplification: if read == 0 {
                0.0
            } else {
                written as f64 / read as f64
            },
            skipped: plan.skipped,
        }))
    }

    async fn get_table_stats(
        &self,
        request: Request<pb::GetTableStatsRequest>,
    ) -> Result<Response<pb::TableStatistics>, Status> {
        let table = request.into_inner().table;
        self.0
            .read(|c, _| {
                if c.table(&table).is_none() {
                    return Err(Status::not_found(format!("table {table:?} not found")));
                }
                let mut stats = c
                    .stats(&table)
                    .and_then(convert::stats_from_json)
                    .ok_or_else(|| {
                        Status::not_found(format!("table {table:?} has no statistics yet"))
                    })?;
                // Write amplification from the scheduler's own counters: bytes written by
                // flushes and compactions over bytes ingested (read from memtables).
                let ingested = c.counter(&format!("io:{table}:ingested"));
                let written = c.counter(&format!("io:{table}:written"));
                if ingested > 0 {
                    stats.write_amplification = written as f64 / ingested as f64;
                }
                Ok(stats)
            })
            .await
            .map(Response::new)
    }

    async fn list_quarantined(
        &self,
        _request: Request<pb::ListQuarantinedRequest>,
    ) -> Result<Response<pb::ListQuarantinedResponse>, Status> {
        let files = self
            .0
            .read(|c, _| c.quarantined().map(convert::quarantined_to_pb).collect())
            .await;
        Ok(Response::new(pb::ListQuarantinedResponse { files }))
    }

    async fn release_quarantined(
        &self,
        request: Request<pb::ReleaseQuarantinedRequest>,
    ) -> Result<Response<pb::ReleaseQuarantinedResponse>, Status> {
        let req = request.into_inner();
        if req.table.is_empty() {
            return Err(Status::invalid_argument("table: required"));
        }
        let released = self
            .0
            .mutate(|c, _| c.release_quarantined(&req.table, req.file_id))
            .await
            .map_err(status_of)?;
        tracing::info!(table = %released.table, file_id = released.file_id, "quarantined file released");
        self.0.wake.notify_one();
        Ok(Response::new(pb::ReleaseQuarantinedResponse {}))
    }
}

/// A duration for messages: "300s", "1.5s".
fn humantime_secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
