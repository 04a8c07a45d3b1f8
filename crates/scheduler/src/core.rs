//! The scheduler's state machine: tables, manifests, the task queue, workers, leases and
//! locks, and every transition between them. No IO, no clock, no async: each method takes
//! the current time in milliseconds and mutates in-memory state, marking what changed; the
//! caller persists the changes ([`Core::take_batch`], one synced WriteBatch) **before** it
//! acts on them (dispatches, replies). If persisting fails the process stops, and a restart
//! reloads the last persisted state ([`Core::from_snapshot`]).
//!
//! Life of a task: `Pending` → (dispatch: new attempt, lease starts) → `Running` →
//! `Succeeded` (the current attempt's result committed) | back to `Pending` with backoff
//! (attempt failed, lease expired, stuck) | `Failed` (after `max_attempts`, or a
//! non-retriable error) | `Cancelled`. Only the current attempt of a live task may commit,
//! and a compaction commits only if all its inputs are still in the manifest (fencing).
//!
//! Two timers guard a running attempt: no heartbeat from its worker for
//! `heartbeat_timeout` → the worker is presumed dead; heartbeats whose progress does not
//! move for `stuck_timeout` → the attempt is stuck. Either way the task is retried.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use catalog::{
    AttemptRecord, CatalogBatch, CatalogSnapshot, ColumnDef, ErrorRecord, ManifestRecord,
    QuarantineRecord, TableRecord, TaskKind, TaskRecord, TaskSpec, TaskState, WorkerRecord,
};
use lsm::compaction::{PickerInput, Strategy, pick};
use lsm::manifest::{FileMeta, Version, VersionEdit};

/// Limits and timers of the state machine.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Pending tasks allowed at once; more are refused.
    pub queue_size: usize,
    pub max_attempts: u32,
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub heartbeat_timeout_ms: i64,
    pub stuck_timeout_ms: i64,
    /// Cluster-wide limits of running tasks per kind (absent: unlimited).
    pub max_running: HashMap<TaskKind, usize>,
    /// Levels of a new table, L0 included.
    pub num_levels: usize,
    /// Milliseconds of waiting that add one priority point (no starvation).
    pub aging_ms: i64,
    /// Keep a WalReplay task live for every table (the table is assigned to a replayer),
    /// unless the table's last replay failed for good (an operator retries it).
    pub assign_replays: bool,
    /// When deferrable work waits (peak ingest, maintenance windows).
    pub traffic: crate::traffic::TrafficPolicy,
    /// Bytes/s shared by running flushes and compactions; 0 = unlimited.
    pub io_budget_bytes_per_sec: u64,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            queue_size: 1000,
            max_attempts: 5,
            backoff_base_ms: 1000,
            backoff_max_ms: 60_000,
            heartbeat_timeout_ms: 10_000,
            stuck_timeout_ms: 120_000,
            max_running: HashMap::new(),
            num_levels: 7,
            aging_ms: 1000,
            assign_replays: false,
            traffic: crate::traffic::TrafficPolicy::default(),
            io_budget_bytes_per_sec: 0,
        }
    }
}

/// Why a request was refused. Each maps to one gRPC status at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    #[error("queue full: {pending} tasks pending (processor.queue_size = {capacity})")]
    QueueFull { pending: usize, capacity: usize },
    #[error("LockError: file {file_id} of table {table} is locked by running task {task_id}")]
    Lock {
        table: String,
        file_id: u64,
        task_id: u64,
    },
    #[error("table {0:?} not found")]
    TableNotFound(String),
    #[error("table {0:?} already exists")]
    TableExists(String),
    #[error("task {0} not found")]
    TaskNotFound(u64),
    #[error("file {file_id} of table {table:?} is not quarantined")]
    NotQuarantined { table: String, file_id: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A completion that must not change anything: stale attempt, finished task, inputs
    /// gone. Nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
}

/// A registered worker and its lease.
#[derive(Debug, Clone)]
pub struct LiveWorker {
    pub record: WorkerRecord,
    pub last_heartbeat_ms: i64,
    /// (task, attempt) dispatched to it and not finished.
    pub assigned: BTreeSet<(u64, u32)>,
    /// A dispatch could not reach it: no more dispatches until it heartbeats again (a
    /// killed worker would otherwise burn an attempt number every retry until its lease
    /// runs out).
    pub unreachable: bool,
}

/// Progress last reported for an attempt, and when it last moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub entries: u64,
    pub applied_seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct ProgressMark {
    value: Progress,
    changed_at_ms: i64,
}

/// A dispatch the caller must send: call `address`'s RPC for `spec` with `(task_id, attempt)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    pub task_id: u64,
    pub attempt: u32,
    pub worker_id: u64,
    pub address: String,
    pub spec: TaskSpec,
    pub output_file_ids: Vec<u64>,
    /// StatisticsUpdate: the table's files at dispatch, by level, and its columns.
    pub levels: Vec<(u32, Vec<FileMeta>)>,
    pub columns: Vec<ColumnDef>,
    /// The trace the task belongs to (its `decide` span), for the dispatch span's parent.
    pub trace_parent: String,
    /// Flushes and compactions: the attempt's share of the IO budget (0 = unlimited).
    pub io_bytes_per_sec: u64,
    /// Compactions: where outputs should end to line up with the files of the level below
    /// the output level, as the manifest is at dispatch (see
    /// [`lsm::compaction::grandparent_bounds`]).
    pub grandparent_bounds: Vec<Vec<u8>>,
}

/// What a worker reported when it finished an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Success: files written (flush/compaction outputs), inputs fully consumed
    /// (compaction; empty = all inputs), statistics (StatisticsUpdate).
    Success {
        files: Vec<FileMeta>,
        consumed_inputs: Vec<u64>,
        stats: Option<serde_json::Value>,
        /// A preempted compaction's partial result: exactly `consumed_inputs` (possibly
        /// none) are replaced.
        partial: bool,
    },
    /// Failure, with the worker's typed error.
    Failure(ErrorRecord),
}

/// The reply to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeartbeatReply {
    /// The worker id is unknown: register again.
    pub reregister: bool,
    /// Attempts to stop.
    pub cancel: Vec<(u64, u32)>,
    /// Replayers: tables whose active memtable must be frozen and flushed now.
    pub freeze: Vec<String>,
    /// Compactors: attempts to stop early with a partial result (preempted).
    pub preempt: Vec<(u64, u32)>,
    /// The current IO-budget share (bytes/s) of each of the worker's running attempts,
    /// when a budget is set.
    pub budgets: Vec<(u64, u32, u64)>,
}

/// Per-kind queue figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub pending: usize,
    pub running: usize,
    pub failed: usize,
}

/// The state machine.
pub struct Core {
    cfg: CoreConfig,
    tables: BTreeMap<String, TableRecord>,
    manifests: BTreeMap<String, ManifestRecord>,
    tasks: BTreeMap<u64, TaskRecord>,
    /// Ids of pending and running tasks: the hot paths scan these, not every task kept.
    live: BTreeSet<u64>,
    workers: BTreeMap<u64, LiveWorker>,
    stats: BTreeMap<String, serde_json::Value>,
    counters: BTreeMap<String, u64>,
    /// file id → compaction task holding it.
    locks: BTreeMap<u64, u64>,
    progress: HashMap<(u64, u32), ProgressMark>,
    /// Cancellations to deliver with each worker's next heartbeat reply.
    pending_cancels: BTreeMap<u64, Vec<(u64, u32)>>,
    /// Tables each replayer must freeze (TriggerFlush), delivered with its next heartbeat.
    pending_freezes: BTreeMap<u64, BTreeSet<String>>,
    /// Attempts ended by the two timers since start: (lease expired, stuck).
    timer_expiries: (u64, u64),
    /// L0 and compaction samples for the stall forecast.
    forecast: crate::forecast::Tracker,
    /// The latest ingest rate the replayers reported per table.
    ingest: crate::traffic::IngestRates,
    /// Poison inputs by file id: kept in their manifests, excluded from picking.
    quarantined: BTreeMap<u64, QuarantineRecord>,
    /// Preemptions to deliver with each worker's next heartbeat reply.
    pending_preempts: BTreeMap<u64, Vec<(u64, u32)>>,
    /// Attempts already asked to stop early (asked once).
    preempted: BTreeSet<(u64, u32)>,
    /// Tables whose manifest or compaction locks changed since the last pick: only their
    /// picks can differ.
    repick: BTreeSet<String>,
    /// Tables whose files changed since their statistics were last queued, and when that was.
    stats_dirty: BTreeSet<String>,
    stats_queued_ms: HashMap<String, i64>,
    /// File id → when a commit removed it from its manifest (cleanup waits a grace period
    /// from then, not from the file's creation). In memory: see [`Core::started_ms`].
    obsolete_since: BTreeMap<u64, i64>,
    /// Live flush tasks by (table, memtable id): a repeated request finds its task at once.
    live_flushes: HashMap<(String, u64), u64>,
    /// Staged flushes by (table, after_seq): the next one to commit is found at once.
    staged: BTreeMap<(String, u64), u64>,
    /// Tasks queued since the last [`Core::untraced`] call.
    untraced: BTreeSet<u64>,
    /// When this state was loaded: files made obsolete before a restart are unknown, so
    /// nothing is collected until a grace period after it.
    started_ms: i64,
    dirty: Dirty,
}

#[derive(Default)]
struct Dirty {
    tables: BTreeSet<String>,
    dropped: BTreeSet<String>,
    manifests: BTreeSet<String>,
    tasks: BTreeSet<u64>,
    workers: BTreeSet<u64>,
    deleted_workers: BTreeSet<u64>,
    stats: BTreeSet<String>,
    counters: bool,
    /// Quarantine records to put (present) or delete (absent).
    quarantine: BTreeSet<u64>,
}

const NEXT_TASK_ID: &str = "next_task_id";
const NEXT_FILE_ID: &str = "next_file_id";
const NEXT_WORKER_ID: &str = "next_worker_id";

/// Output file ids reserved per flush attempt.
const FLUSH_OUTPUT_IDS: u64 = 16;

impl Core {
    pub fn new(cfg: CoreConfig) -> Self {
        Self::from_snapshot(cfg, CatalogSnapshot::default(), 0)
    }

    /// Rebuilds the state from the catalog after a (re)start. Loaded workers get a fresh
    /// lease from `now_ms`: those still alive keep heartbeating and their running attempts
    /// go on; the others' leases expire and their tasks are retried.
    pub fn from_snapshot(cfg: CoreConfig, snap: CatalogSnapshot, now_ms: i64) -> Self {
        let mut core = Self {
            cfg,
            tables: snap.tables,
            manifests: snap.manifests,
            live: snap
                .tasks
                .values()
                .filter(|t| !t.state.is_final())
                .map(|t| t.id)
                .collect(),
            tasks: snap.tasks,
            workers: BTreeMap::new(),
            stats: snap.stats,
            counters: snap.counters,
            locks: BTreeMap::new(),
            progress: HashMap::new(),
            pending_cancels: BTreeMap::new(),
            pending_freezes: BTreeMap::new(),
            timer_expiries: (0, 0),
            forecast: crate::forecast::Tracker::default(),
            ingest: crate::traffic::IngestRates::default(),
            quarantined: snap.quarantined,
            pending_preempts: BTreeMap::new(),
            preempted: BTreeSet::new(),
            repick: BTreeSet::new(),
            stats_dirty: BTreeSet::new(),
            stats_queued_ms: HashMap::new(),
            obsolete_since: BTreeMap::new(),
            live_flushes: HashMap::new(),
            staged: BTreeMap::new(),
            untraced: BTreeSet::new(),
            started_ms: now_ms,
            dirty: Dirty::default(),
        };
        for (id, record) in snap.workers {
            core.workers.insert(
                id,
                LiveWorker {
                    record,
                    last_heartbeat_ms: now_ms,
                    assigned: BTreeSet::new(),
                    unreachable: false,
                },
            );
        }
        let live: Vec<(u64, TaskSpec, TaskState, u32, Option<u64>)> = core
            .tasks
            .values()
            .filter(|t| !t.state.is_final())
            .map(|t| {
                (
                    t.id,
                    t.spec.clone(),
                    t.state,
                    t.attempt,
                    t.current_attempt().map(|a| a.worker_id),
                )
            })
            .collect();
        for (id, spec, state, attempt, worker) in live {
            let staged = core
                .tasks
                .get(&id)
                .is_some_and(|t| t.staged_files.is_some());
            for f in spec.input_file_ids() {
                core.locks.insert(f, id);
            }
            if let TaskSpec::MemtableFlush {
                table,
                memtable_id,
                after_seq,
                ..
            } = &spec
            {
                core.live_flushes.insert((table.clone(), *memtable_id), id);
                if staged {
                    core.staged.insert((table.clone(), *after_seq), id);
                }
            }
            // A staged flush's work is done: it holds no worker slot (as when it was
            // staged), or after a restart the flushes it waits for could find no slot.
            if state == TaskState::Running && !staged {
                core.progress.insert(
                    (id, attempt),
                    ProgressMark {
                        value: Progress::default(),
                        changed_at_ms: now_ms,
                    },
                );
                if let Some(w) = worker.and_then(|w| core.workers.get_mut(&w)) {
                    w.assigned.insert((id, attempt));
                }
            }
        }
        core
    }

    pub fn config(&self) -> &CoreConfig {
        &self.cfg
    }

    /// Compaction debt and stall forecast of `table`.
    pub fn forecast(
        &self,
        table: &str,
        config: &lsm::compaction::LevelConfig,
        l0_stop_threshold: u32,
        now_ms: i64,
    ) -> Option<crate::forecast::Forecast> {
        let m = self.manifests.get(table)?;
        Some(
            self.forecast
                .forecast(table, &m.levels, config, l0_stop_threshold, now_ms),
        )
    }

    /// Records the ingest rate a replayer reported for `table`.
    pub fn record_ingest(&mut self, table: &str, bytes_per_sec: f64, now_ms: i64) {
        if self.tables.contains_key(table) {
            self.ingest.record(table, bytes_per_sec, now_ms);
        }
    }

    /// The cluster's ingest in bytes/s: the latest report of every table whose replayer
    /// still heartbeats.
    pub fn ingest_bytes_per_sec(&self, now_ms: i64) -> f64 {
        self.ingest.total(now_ms, self.cfg.heartbeat_timeout_ms)
    }

    /// Per-table ingest rates (bytes/s) of the live reports.
    pub fn ingest_by_table(&self, now_ms: i64) -> Vec<(String, f64)> {
        self.ingest.by_table(now_ms, self.cfg.heartbeat_timeout_ms)
    }

    /// Why deferrable work waits now (peak ingest, closed maintenance window), if it does.
    pub fn deferral(&self, now_ms: i64) -> Option<String> {
        crate::traffic::defer_reason(&self.cfg.traffic, self.ingest_bytes_per_sec(now_ms), now_ms)
    }

    /// The IO-budget share (bytes/s) of every running flush and compaction attempt; empty
    /// without a budget.
    pub fn io_shares(&self) -> BTreeMap<(u64, u32), u64> {
        let budget = self.cfg.io_budget_bytes_per_sec;
        if budget == 0 {
            return BTreeMap::new();
        }
        let running: Vec<((u64, u32), bool)> = self
            .live_tasks()
            .filter(|t| {
                t.state == TaskState::Running
                    && t.staged_files.is_none()
                    && matches!(t.kind(), TaskKind::MemtableFlush | TaskKind::Compaction)
            })
            .map(|t| ((t.id, t.attempt), crate::traffic::is_urgent(&t.spec)))
            .collect();
        let flags: Vec<bool> = running.iter().map(|(_, u)| *u).collect();
        running
            .iter()
            .map(|(k, _)| *k)
            .zip(crate::traffic::io_shares(budget, &flags))
            .collect()
    }

    /// Attempts ended since start because their worker stopped heartbeating, and because
    /// they made no progress.
    pub fn timer_expiries(&self) -> (u64, u64) {
        self.timer_expiries
    }

    /// Pending and running tasks.
    fn live_tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.live.iter().filter_map(|id| self.tasks.get(id))
    }

    /// The changes since the last call, as one catalog batch (empty if nothing changed).
    pub fn take_batch(&mut self) -> CatalogBatch {
        let dirty = std::mem::take(&mut self.dirty);
        let mut b = CatalogBatch::new();
        for name in &dirty.dropped {
            b.delete_table(name);
        }
        for name in &dirty.tables {
            if let Some(t) = self.tables.get(name) {
                b.put_table(t);
            }
        }
        for name in &dirty.manifests {
            if let Some(m) = self.manifests.get(name) {
                b.put_manifest(m);
            }
        }
        for id in &dirty.tasks {
            match self.tasks.get(id) {
                Some(t) => b.put_task(t),
                None => b.delete_task(*id),
            };
        }
        for id in &dirty.workers {
            if let Some(w) = self.workers.get(id) {
                b.put_worker(&w.record);
            }
        }
        for id in &dirty.deleted_workers {
            b.delete_worker(*id);
        }
        for name in &dirty.stats {
            if let Some(s) = self.stats.get(name) {
                b.put_stats(name, s);
            }
        }
        for id in &dirty.quarantine {
            match self.quarantined.get(id) {
                Some(q) => b.put_quarantine(q),
                None => b.delete_quarantine(*id),
            };
        }
        if dirty.counters {
            for (name, v) in &self.counters {
                b.set_counter(name, *v);
            }
        }
        b
    }

    fn next(&mut self, counter: &str, n: u64) -> u64 {
        let v = self.counters.entry(counter.to_owned()).or_insert(1);
        let first = *v;
        *v += n;
        self.dirty.counters = true;
        first
    }

    // ---- tables -------------------------------------------------------------------------

    pub fn create_table(
        &mut self,
        name: &str,
        columns: Vec<ColumnDef>,
        now_ms: i64,
    ) -> Result<&TableRecord, CoreError> {
        validate_table_name(name)?;
        if self.tables.contains_key(name) {
            return Err(CoreError::TableExists(name.to_owned()));
        }
        self.tables.insert(
            name.to_owned(),
            TableRecord {
                name: name.to_owned(),
                columns,
                created_at_ms: now_ms,
                replayer_address: String::new(),
            },
        );
        self.manifests.insert(
            name.to_owned(),
            ManifestRecord {
                table: name.to_owned(),
                version: 1,
                checkpoint: 0,
                levels: Version::new(self.cfg.num_levels),
            },
        );
        self.dirty.dropped.remove(name);
        self.dirty.tables.insert(name.to_owned());
        self.manifest_changed(name);
        self.tables
            .get(name)
            .ok_or_else(|| CoreError::TableNotFound(name.to_owned()))
    }

    /// Drops a table; its live tasks are cancelled and its files become garbage.
    pub fn drop_table(&mut self, name: &str, now_ms: i64) -> Result<(), CoreError> {
        if self.tables.remove(name).is_none() {
            return Err(CoreError::TableNotFound(name.to_owned()));
        }
        self.manifests.remove(name);
        self.stats.remove(name);
        self.forecast.forget(name);
        self.ingest.forget(name);
        let gone: Vec<u64> = self
            .quarantined
            .values()
            .filter(|q| q.table == name)
            .map(|q| q.file_id)
            .collect();
        for id in gone {
            self.quarantined.remove(&id);
            self.dirty.quarantine.insert(id);
        }
        let ids: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| t.spec.table() == name && !t.state.is_final())
            .map(|t| t.id)
            .collect();
        for id in ids {
            let _ = self.cancel(id, now_ms);
        }
        self.dirty.tables.remove(name);
        self.dirty.manifests.remove(name);
        self.dirty.dropped.insert(name.to_owned());
        Ok(())
    }

    pub fn tables(&self) -> impl Iterator<Item = &TableRecord> {
        self.tables.values()
    }

    pub fn table(&self, name: &str) -> Option<&TableRecord> {
        self.tables.get(name)
    }

    pub fn manifest(&self, table: &str) -> Option<&ManifestRecord> {
        self.manifests.get(table)
    }

    pub fn stats(&self, table: &str) -> Option<&serde_json::Value> {
        self.stats.get(table)
    }

    /// File ids locked by live compactions.
    pub fn locked_files(&self) -> &BTreeMap<u64, u64> {
        &self.locks
    }

    // ---- tasks --------------------------------------------------------------------------

    /// Queues a task. Compaction inputs are locked at once: a request that overlaps a live
    /// compaction's inputs is refused with a LockError.
    pub fn submit(&mut self, spec: TaskSpec, priority: i32, now_ms: i64) -> Result<u64, CoreError> {
        let table = spec.table().to_owned();
        // Cleanup may concern a dropped table (its files are garbage).
        let needs_table = !matches!(spec, TaskSpec::Cleanup { .. });
        if needs_table && !table.is_empty() && !self.tables.contains_key(&table) {
            return Err(CoreError::TableNotFound(table));
        }
        // One flush task per frozen memtable: a repeated request gets the same task.
        if let TaskSpec::MemtableFlush { memtable_id, .. } = &spec
            && let Some(id) = self.live_flushes.get(&(table.clone(), *memtable_id))
        {
            return Ok(*id);
        }
        // Counting is O(live): only when the queue could be full at all.
        let pending = if self.live.len() < self.cfg.queue_size {
            0
        } else {
            self.live_tasks()
                .filter(|t| t.state == TaskState::Pending)
                .count()
        };
        if pending >= self.cfg.queue_size {
            return Err(CoreError::QueueFull {
                pending,
                capacity: self.cfg.queue_size,
            });
        }
        // A new replay of a table supersedes the live one: one replayer owns a table.
        if let TaskSpec::WalReplay { .. } = &spec {
            let old: Vec<u64> = self
                .live_tasks()
                .filter(|t| t.kind() == TaskKind::WalReplay && t.spec.table() == table)
                .map(|t| t.id)
                .collect();
            for id in old {
                let _ = self.cancel(id, now_ms);
            }
        }
        let inputs = spec.input_file_ids();
        if let TaskSpec::Compaction { inputs: levels, .. } = &spec {
            let manifest = self
                .manifests
                .get(&table)
                .ok_or_else(|| CoreError::TableNotFound(table.clone()))?;
            for (level, files) in levels {
                for f in files {
                    if manifest.levels.find(f.id).map(|(l, _)| l) != Some(*level) {
                        return Err(CoreError::Invalid(format!(
                            "file {} is not in level {level} of table {table}",
                            f.id
                        )));
                    }
                }
            }
        }
        if let Some((&file_id, &task_id)) = inputs.iter().find_map(|f| self.locks.get_key_value(f))
        {
            return Err(CoreError::Lock {
                table,
                file_id,
                task_id,
            });
        }
        let id = self.next(NEXT_TASK_ID, 1);
        for f in inputs {
            self.locks.insert(f, id);
        }
        self.live.insert(id);
        self.untraced.insert(id);
        if let TaskSpec::MemtableFlush { memtable_id, .. } = &spec {
            self.live_flushes.insert((table.clone(), *memtable_id), id);
        }
        self.tasks.insert(
            id,
            TaskRecord {
                id,
                spec,
                state: TaskState::Pending,
                attempt: 0,
                attempts: Vec::new(),
                errors: Vec::new(),
                created_at_ms: now_ms,
                not_before_ms: now_ms,
                priority,
                finished_at_ms: 0,
                staged_files: None,
                trace_parent: String::new(),
            },
        );
        self.dirty.tasks.insert(id);
        Ok(id)
    }

    pub fn task(&self, id: u64) -> Option<&TaskRecord> {
        self.tasks.get(&id)
    }

    pub fn tasks(&self) -> impl DoubleEndedIterator<Item = &TaskRecord> {
        self.tasks.values()
    }

    /// Cancels a task: a pending one at once; a running one also tells its worker (next
    /// heartbeat reply). Its files are unlocked; a late completion is refused.
    pub fn cancel(&mut self, id: u64, now_ms: i64) -> Result<&TaskRecord, CoreError> {
        let task = self.tasks.get_mut(&id).ok_or(CoreError::TaskNotFound(id))?;
        if task.state.is_final() {
            return Err(CoreError::Refused(format!(
                "task {id} is already {:?}",
                task.state
            )));
        }
        if task.state == TaskState::Running
            && let Some(a) = task
                .attempts
                .iter_mut()
                .rev()
                .find(|a| a.attempt == task.attempt)
        {
            a.ended_at_ms = now_ms;
            self.pending_cancels
                .entry(a.worker_id)
                .or_default()
                .push((id, task.attempt));
        }
        task.state = TaskState::Cancelled;
        task.finished_at_ms = now_ms;
        let attempt = task.attempt;
        self.finish_bookkeeping(id, attempt);
        self.dirty.tasks.insert(id);
        self.tasks.get(&id).ok_or(CoreError::TaskNotFound(id))
    }

    /// Releases locks, progress and worker assignment of a task's attempt.
    /// A table's manifest changed: persist it, and pick its compactions again.
    fn manifest_changed(&mut self, table: &str) {
        self.dirty.manifests.insert(table.to_owned());
        self.repick.insert(table.to_owned());
        self.stats_dirty.insert(table.to_owned());
    }

    /// Tasks queued since the last call that have no trace yet (`trace_parent` empty):
    /// (id, kind, table, reason). Tasks loaded from the catalog keep theirs.
    pub fn untraced(&mut self) -> Vec<(u64, TaskKind, String, String)> {
        let ids = std::mem::take(&mut self.untraced);
        ids.into_iter()
            .filter_map(|id| self.tasks.get(&id))
            .filter(|t| t.trace_parent.is_empty())
            .map(|t| {
                let reason = match &t.spec {
                    TaskSpec::Compaction { reason, .. } => reason.clone(),
                    _ => String::new(),
                };
                (t.id, t.kind(), t.spec.table().to_owned(), reason)
            })
            .collect()
    }

    /// Records the trace a task belongs to (W3C traceparent; `"none"` when tracing is off).
    pub fn set_trace_parent(&mut self, id: u64, traceparent: String) {
        if let Some(t) = self.tasks.get_mut(&id) {
            t.trace_parent = traceparent;
            self.dirty.tasks.insert(id);
        }
    }

    /// Adds `delta` to the persisted counter `name`.
    pub fn add_counter(&mut self, name: &str, delta: u64) {
        *self.counters.entry(name.to_owned()).or_insert(0) += delta;
        self.dirty.counters = true;
    }

    /// The persisted counter `name` (0 if never set).
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Queues a StatisticsUpdate for every table whose files changed at least `settle_ms`
    /// ago since its last one, or whose last one is `interval_ms` old, unless one is live.
    /// Returns the tasks queued.
    pub fn queue_statistics(&mut self, interval_ms: i64, settle_ms: i64, now_ms: i64) -> Vec<u64> {
        let live: BTreeSet<String> = self
            .live_tasks()
            .filter(|t| t.kind() == TaskKind::StatisticsUpdate)
            .map(|t| t.spec.table().to_owned())
            .collect();
        let due: Vec<String> = self
            .tables
            .keys()
            .filter(|t| !live.contains(*t))
            .filter(|t| {
                let last = self.stats_queued_ms.get(*t).copied();
                let changed = self.stats_dirty.contains(*t);
                match last {
                    // Never computed since start: once something changes (settled).
                    None => changed,
                    Some(last) => {
                        (changed && now_ms - last >= settle_ms) || now_ms - last >= interval_ms
                    }
                }
            })
            .cloned()
            .collect();
        let mut queued = Vec::new();
        for table in due {
            let spec = TaskSpec::StatisticsUpdate {
                table: table.clone(),
            };
            if let Ok(id) = self.submit(spec, 10, now_ms) {
                self.stats_dirty.remove(&table);
                self.stats_queued_ms.insert(table, now_ms);
                queued.push(id);
            }
        }
        queued
    }

    /// Every file id Cleanup must keep now: files of current manifests, files removed from
    /// a manifest less than `grace_ms` ago (a reader may hold the previous version), output
    /// ids allocated to any attempt of a live task, staged flush files. Ids are never
    /// reused, so anything else is garbage for good. `None` until `grace_ms` after this
    /// state was loaded (what became obsolete before a restart is not known).
    pub fn referenced_file_ids(&mut self, now_ms: i64, grace_ms: i64) -> Option<BTreeSet<u64>> {
        if now_ms - self.started_ms < grace_ms {
            return None;
        }
        self.obsolete_since.retain(|_, t| now_ms - *t < grace_ms);
        let mut ids: BTreeSet<u64> = self
            .manifests
            .values()
            .flat_map(|m| m.levels.levels.iter().flatten().map(|f| f.id))
            .collect();
        for t in self.live_tasks() {
            for a in &t.attempts {
                ids.extend(a.output_file_ids.iter().copied());
            }
            if let Some(files) = &t.staged_files {
                ids.extend(files.iter().map(|f| f.id));
            }
            ids.extend(t.spec.input_file_ids());
        }
        ids.extend(self.obsolete_since.keys().copied());
        // Quarantined files are in their manifests; kept explicitly all the same.
        ids.extend(self.quarantined.keys().copied());
        Some(ids)
    }

    fn finish_bookkeeping(&mut self, id: u64, attempt: u32) {
        self.live.remove(&id);
        self.end_wal_repair(id);
        self.preempted.remove(&(id, attempt));
        if let Some(TaskSpec::MemtableFlush {
            table,
            memtable_id,
            after_seq,
            ..
        }) = self.tasks.get(&id).map(|t| &t.spec)
        {
            let (flush_key, staged_key) =
                ((table.clone(), *memtable_id), (table.clone(), *after_seq));
            if self.live_flushes.get(&flush_key) == Some(&id) {
                self.live_flushes.remove(&flush_key);
            }
            if self.staged.get(&staged_key) == Some(&id) {
                self.staged.remove(&staged_key);
            }
        }
        let held = self.locks.len();
        self.locks.retain(|_, t| *t != id);
        if self.locks.len() != held
            && let Some(t) = self.tasks.get(&id)
        {
            // Unlocked files may now be picked.
            self.repick.insert(t.spec.table().to_owned());
        }
        self.progress.remove(&(id, attempt));
        for w in self.workers.values_mut() {
            w.assigned.remove(&(id, attempt));
        }
    }

    /// Task `id` ended: if it was a WAL segment repair, a commit takes its segments out of
    /// quarantine (their writes are in the levels now; Cleanup may delete them once the
    /// checkpoint covers them); a failure leaves them quarantined — released again for
    /// another try, unless the failure was corruption (the segment, or an SST, still
    /// corrupt: the operator looks again).
    fn end_wal_repair(&mut self, id: u64) {
        let Some(t) = self.tasks.get(&id) else {
            return;
        };
        if !crate::quarantine::is_repair(&t.spec) {
            return;
        }
        let committed = t.state == TaskState::Succeeded;
        let corrupt = t.errors.last().filter(|e| e.kind == "corruption").cloned();
        let table = t.spec.table().to_owned();
        let ids: Vec<u64> = self
            .quarantined
            .values()
            .filter(|q| q.wal.as_ref().is_some_and(|w| w.repair_task == id))
            .map(|q| q.file_id)
            .collect();
        for qid in ids {
            self.dirty.quarantine.insert(qid);
            if committed {
                self.quarantined.remove(&qid);
                continue;
            }
            if let Some(q) = self.quarantined.get_mut(&qid) {
                if let Some(e) = &corrupt {
                    q.error = e.clone();
                }
                if let Some(w) = q.wal.as_mut() {
                    w.repair_task = 0;
                    w.released = corrupt.is_none();
                }
            }
        }
        self.repick.insert(table);
    }

    /// Counts per kind.
    pub fn counts(&self) -> BTreeMap<TaskKind, KindCounts> {
        let mut out: BTreeMap<TaskKind, KindCounts> = TaskKind::ALL
            .iter()
            .map(|k| (*k, KindCounts::default()))
            .collect();
        for t in self.tasks.values() {
            let c = out.entry(t.kind()).or_default();
            match t.state {
                TaskState::Pending => c.pending += 1,
                TaskState::Running => c.running += 1,
                TaskState::Failed => c.failed += 1,
                _ => {}
            }
        }
        out
    }

    /// Why a pending task is waiting, in words.
    pub fn waiting_reason(&self, t: &TaskRecord, now_ms: i64) -> String {
        if t.state != TaskState::Pending {
            return String::new();
        }
        if t.not_before_ms > now_ms {
            return format!("retry backoff: {} ms left", t.not_before_ms - now_ms);
        }
        if !crate::traffic::is_urgent(&t.spec)
            && let Some(reason) = self.deferral(now_ms)
        {
            return reason;
        }
        let kind = t.kind();
        if let Some(limit) = self.cfg.max_running.get(&kind) {
            let running = self
                .live_tasks()
                .filter(|x| holds_slot(x) && x.kind() == kind)
                .count();
            if running >= *limit {
                return format!("cluster limit: {running}/{limit} {} running", kind.label());
            }
        }
        match self.free_worker(worker_kind(kind), now_ms, None) {
            Some(_) => "ready: waiting for the next dispatch round".to_owned(),
            None => format!("no live {} with a free slot", worker_kind(kind)),
        }
    }

    // ---- workers ------------------------------------------------------------------------

    pub fn register_worker(
        &mut self,
        kind: &str,
        name: &str,
        address: &str,
        slots: u32,
        version: &str,
        now_ms: i64,
    ) -> Result<u64, CoreError> {
        if !matches!(kind, "replayer" | "flusher" | "compactor") {
            return Err(CoreError::Invalid(format!(
                "kind: unknown worker kind {kind:?}"
            )));
        }
        if address.is_empty() {
            return Err(CoreError::Invalid(
                "advertised_address: must not be empty".into(),
            ));
        }
        if slots == 0 {
            return Err(CoreError::Invalid("slots: must be at least 1".into()));
        }
        // A worker that restarted registers again under the same address: its old entry
        // goes, and the old entry's attempts lose their lease at the next tick.
        let stale: Vec<u64> = self
            .workers
            .values()
            .filter(|w| w.record.kind == kind && w.record.address == address)
            .map(|w| w.record.id)
            .collect();
        for id in stale {
            self.workers.remove(&id);
            self.pending_cancels.remove(&id);
            self.dirty.deleted_workers.insert(id);
        }
        let id = self.next(NEXT_WORKER_ID, 1);
        self.workers.insert(
            id,
            LiveWorker {
                record: WorkerRecord {
                    id,
                    kind: kind.to_owned(),
                    name: if name.is_empty() {
                        address.to_owned()
                    } else {
                        name.to_owned()
                    },
                    address: address.to_owned(),
                    slots,
                    version: version.to_owned(),
                    registered_at_ms: now_ms,
                },
                last_heartbeat_ms: now_ms,
                assigned: BTreeSet::new(),
                unreachable: false,
            },
        );
        self.dirty.workers.insert(id);
        Ok(id)
    }

    pub fn workers(&self) -> impl Iterator<Item = &LiveWorker> {
        self.workers.values()
    }

    pub fn is_alive(&self, w: &LiveWorker, now_ms: i64) -> bool {
        now_ms - w.last_heartbeat_ms <= self.cfg.heartbeat_timeout_ms
    }

    /// Records a heartbeat and the progress of the worker's attempts. Attempts it reports
    /// that are not the current attempt of a running task (zombies) are cancelled.
    pub fn heartbeat(
        &mut self,
        worker_id: u64,
        running: &[(u64, u32, Progress)],
        now_ms: i64,
    ) -> HeartbeatReply {
        let Some(w) = self.workers.get_mut(&worker_id) else {
            return HeartbeatReply {
                reregister: true,
                ..HeartbeatReply::default()
            };
        };
        w.last_heartbeat_ms = now_ms;
        w.unreachable = false;
        let mut cancel = self.pending_cancels.remove(&worker_id).unwrap_or_default();
        for (task_id, attempt, progress) in running {
            let current = self.tasks.get(task_id).is_some_and(|t| {
                t.state == TaskState::Running
                    && t.attempt == *attempt
                    && t.current_attempt()
                        .is_some_and(|a| a.worker_id == worker_id)
            });
            if !current {
                if !cancel.contains(&(*task_id, *attempt)) {
                    cancel.push((*task_id, *attempt));
                }
                continue;
            }
            let mark = self
                .progress
                .entry((*task_id, *attempt))
                .or_insert(ProgressMark {
                    value: *progress,
                    changed_at_ms: now_ms,
                });
            if mark.value != *progress {
                mark.value = *progress;
                mark.changed_at_ms = now_ms;
            }
        }
        self.expire_lost_dispatches(worker_id, running, now_ms);
        let freeze = self
            .pending_freezes
            .remove(&worker_id)
            .map(|t| t.into_iter().collect())
            .unwrap_or_default();
        let shares = self.io_shares();
        let budgets = self
            .workers
            .get(&worker_id)
            .map(|w| {
                w.assigned
                    .iter()
                    .filter_map(|k| shares.get(k).map(|b| (k.0, k.1, *b)))
                    .collect()
            })
            .unwrap_or_default();
        let preempt = self.pending_preempts.remove(&worker_id).unwrap_or_default();
        HeartbeatReply {
            reregister: false,
            cancel,
            freeze,
            budgets,
            preempt,
        }
    }

    /// Attempts given to `worker_id` that its heartbeat does not list, longer than a
    /// heartbeat timeout after their dispatch, never reached it: the scheduler recorded the
    /// dispatch and died before sending it (or the worker lost it). The worker is alive, so
    /// no lease would expire; they are retried now instead of after the stuck timeout (a
    /// flush held that long holds back every later flush of its table). Found by the
    /// crash-point test.
    fn expire_lost_dispatches(
        &mut self,
        worker_id: u64,
        running: &[(u64, u32, Progress)],
        now_ms: i64,
    ) {
        let grace = self.cfg.heartbeat_timeout_ms;
        let Some(w) = self.workers.get(&worker_id) else {
            return;
        };
        let lost: Vec<(u64, u32, i64)> =
            w.assigned
                .iter()
                .filter(|(id, attempt)| {
                    !running.iter().any(|(t, a, _)| (*t, *a) == (*id, *attempt))
                })
                .filter_map(|(id, attempt)| {
                    let t = self.tasks.get(id)?;
                    let a = t.current_attempt()?;
                    (holds_slot(t) && t.attempt == *attempt && a.worker_id == worker_id)
                        .then_some((*id, *attempt, a.started_at_ms))
                })
                .filter(|(_, _, started)| now_ms - started > grace)
                .collect();
        for (id, attempt, started) in lost {
            self.timer_expiries.0 += 1;
            self.fail_attempt(
                id,
                ErrorRecord {
                    attempt,
                    kind: "lease_expired".to_owned(),
                    message: format!(
                        "worker {worker_id} does not run attempt {attempt} {} ms after its dispatch: the dispatch never reached it",
                        now_ms - started
                    ),
                    file: String::new(),
                    offset: 0,
                    retriable: true,
                    at_ms: now_ms,
                },
                now_ms,
            );
        }
    }

    /// Last progress reported for an attempt.
    pub fn progress(&self, task_id: u64, attempt: u32) -> Option<Progress> {
        self.progress.get(&(task_id, attempt)).map(|m| m.value)
    }

    /// The least loaded live worker of `kind` with a free slot, avoiding `avoid` (the
    /// worker of the previous attempt: a retry goes elsewhere when it can).
    fn free_worker(&self, kind: &str, now_ms: i64, avoid: Option<u64>) -> Option<&LiveWorker> {
        self.workers
            .values()
            .filter(|w| w.record.kind == kind && self.is_alive(w, now_ms) && !w.unreachable)
            .filter(|w| (w.assigned.len() as u32) < w.record.slots)
            .min_by_key(|w| (Some(w.record.id) == avoid, w.assigned.len(), w.record.id))
    }

    // ---- the clock: leases, stuck attempts, dispatch -----------------------------------

    /// Expires leases and stuck attempts (retrying their tasks), then picks the dispatches
    /// to send now: pending tasks by effective priority (priority plus waiting time, so
    /// nothing starves), within cluster limits and worker slots.
    pub fn tick(&mut self, now_ms: i64) -> Vec<Dispatch> {
        self.expire(now_ms);
        if self.cfg.assign_replays {
            self.assign_replays(now_ms);
        }
        self.plan_dispatches(now_ms)
    }

    /// Queues a WalReplay for every table without a live one, unless its latest replay
    /// failed for good (a ReplayError: an operator looks, then retries it).
    fn assign_replays(&mut self, now_ms: i64) {
        let mut latest: BTreeMap<&str, (u64, TaskState)> = BTreeMap::new();
        for t in self
            .tasks
            .values()
            .filter(|t| t.kind() == TaskKind::WalReplay)
        {
            latest.insert(t.spec.table(), (t.id, t.state));
        }
        let missing: Vec<(String, u64)> = self
            .tables
            .keys()
            .filter(|name| {
                latest
                    .get(name.as_str())
                    .is_none_or(|(_, s)| matches!(s, TaskState::Succeeded | TaskState::Cancelled))
            })
            .map(|name| {
                let checkpoint = self.manifests.get(name).map_or(0, |m| m.checkpoint);
                (name.clone(), checkpoint)
            })
            .collect();
        for (table, checkpoint) in missing {
            let spec = TaskSpec::WalReplay {
                table,
                checkpoint,
                recovery_mode: String::new(),
                explicit_start: false,
                skip_segments: Vec::new(),
            };
            // A full queue: try again next tick.
            let _ = self.submit(spec, 100, now_ms);
        }
    }

    /// The running WalReplay attempt that holds `table`: (task, attempt, worker).
    pub fn replay_owner(&self, table: &str) -> Option<(u64, u32, u64)> {
        self.live_tasks()
            .filter(|t| {
                t.kind() == TaskKind::WalReplay
                    && t.state == TaskState::Running
                    && t.spec.table() == table
            })
            .find_map(|t| t.current_attempt().map(|a| (t.id, t.attempt, a.worker_id)))
    }

    /// Asks the replayer holding `table` to freeze its active memtable and request its
    /// flush (delivered with its next heartbeat). Returns the replayer's worker id.
    pub fn request_freeze(&mut self, table: &str) -> Result<u64, CoreError> {
        if !self.tables.contains_key(table) {
            return Err(CoreError::TableNotFound(table.to_owned()));
        }
        let (_, _, worker) = self.replay_owner(table).ok_or_else(|| {
            CoreError::Refused(format!(
                "table {table} is not assigned to a live replayer (no running WalReplay task)"
            ))
        })?;
        self.pending_freezes
            .entry(worker)
            .or_default()
            .insert(table.to_owned());
        Ok(worker)
    }

    /// Checks that a flush request comes from the replay attempt that holds the table.
    pub fn check_flush_request(
        &self,
        table: &str,
        replay_task_id: u64,
        replay_attempt: u32,
    ) -> Result<(), CoreError> {
        if !self.tables.contains_key(table) {
            return Err(CoreError::TableNotFound(table.to_owned()));
        }
        match self.replay_owner(table) {
            Some((id, attempt, _)) if id == replay_task_id && attempt == replay_attempt => Ok(()),
            Some((id, attempt, _)) => Err(CoreError::Refused(format!(
                "table {table} is held by WalReplay task {id} attempt {attempt}, not task {replay_task_id} attempt {replay_attempt}"
            ))),
            None => Err(CoreError::Refused(format!(
                "table {table} has no running WalReplay task (the request came from task {replay_task_id} attempt {replay_attempt})"
            ))),
        }
    }

    fn expire(&mut self, now_ms: i64) {
        let mut failures = Vec::new();
        for t in self.live_tasks().filter(|t| t.state == TaskState::Running) {
            // A staged flush has finished its work: it only waits for its turn to commit.
            if t.staged_files.is_some() {
                continue;
            }
            let Some(a) = t.current_attempt() else {
                continue;
            };
            let worker = self.workers.get(&a.worker_id);
            let dead = worker.is_none_or(|w| !self.is_alive(w, now_ms));
            if dead {
                failures.push((
                    t.id,
                    "lease_expired",
                    format!(
                        "worker {} ({}) sent no heartbeat for {} ms",
                        a.worker_id, a.worker_address, self.cfg.heartbeat_timeout_ms
                    ),
                ));
                continue;
            }
            // A replay tails the WAL for as long as it holds the table: no writes, no
            // progress, and nothing wrong. Its heartbeats are its lease.
            if t.kind() == TaskKind::WalReplay {
                continue;
            }
            let changed = self
                .progress
                .get(&(t.id, t.attempt))
                .map_or(a.started_at_ms, |m| m.changed_at_ms);
            if now_ms - changed > self.cfg.stuck_timeout_ms {
                failures.push((
                    t.id,
                    "stuck",
                    format!(
                        "attempt {} on worker {} made no progress for {} ms",
                        t.attempt, a.worker_id, self.cfg.stuck_timeout_ms
                    ),
                ));
            }
        }
        for (id, kind, message) in failures {
            if kind == "stuck" {
                self.timer_expiries.1 += 1;
            } else {
                self.timer_expiries.0 += 1;
            }
            let attempt = self.tasks.get(&id).map_or(0, |t| t.attempt);
            // The old attempt may still be running somewhere: tell its worker to stop.
            if let Some(w) = self
                .tasks
                .get(&id)
                .and_then(|t| t.current_attempt())
                .map(|a| a.worker_id)
            {
                self.pending_cancels
                    .entry(w)
                    .or_default()
                    .push((id, attempt));
            }
            self.fail_attempt(
                id,
                ErrorRecord {
                    attempt,
                    kind: kind.to_owned(),
                    message,
                    file: String::new(),
                    offset: 0,
                    retriable: true,
                    at_ms: now_ms,
                },
                now_ms,
            );
        }
    }

    /// Ends the current attempt with `error`: retry with backoff, or fail for good.
    fn fail_attempt(&mut self, id: u64, error: ErrorRecord, now_ms: i64) {
        let (max, base, cap) = (
            self.cfg.max_attempts,
            self.cfg.backoff_base_ms,
            self.cfg.backoff_max_ms,
        );
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let attempt = task.attempt;
        if let Some(a) = task
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == attempt)
        {
            a.ended_at_ms = now_ms;
        }
        let mut retriable = error.retriable;
        let poison = crate::quarantine::poison_verdict(task, &error);
        let wal_poison = crate::quarantine::wal_poison_verdict(task, &error);
        task.errors.push(error.clone());
        match wal_poison {
            Some((crate::quarantine::Verdict::Bisect, first_seq)) => {
                self.quarantine_wal_segment(id, first_seq, error, now_ms);
                return;
            }
            // A segment may be being replaced: read it once more first.
            Some((crate::quarantine::Verdict::Retry, _)) => retriable = true,
            None => {}
        }
        match poison {
            Some(crate::quarantine::Verdict::Bisect) => {
                self.poison_input(id, error, now_ms);
                return;
            }
            // Corruption may be passing (an object being replaced): once more first.
            Some(crate::quarantine::Verdict::Retry) => retriable = true,
            None => {}
        }
        let failures = task.errors.len() as u32;
        // A table must stay assigned: a replay is retried for as long as its errors are
        // retriable (a replayer restarting is not a reason to stop replaying the table).
        let unlimited = task.kind() == TaskKind::WalReplay;
        let final_failure = !retriable || (failures >= max && !unlimited);
        if final_failure {
            task.state = TaskState::Failed;
            task.finished_at_ms = now_ms;
        } else {
            task.state = TaskState::Pending;
            task.not_before_ms = now_ms + backoff_ms(base, cap, failures);
        }
        self.dirty.tasks.insert(id);
        if final_failure {
            self.finish_bookkeeping(id, attempt);
        } else {
            self.progress.remove(&(id, attempt));
            for w in self.workers.values_mut() {
                w.assigned.remove(&(id, attempt));
            }
        }
    }

    /// A replay failed twice on the same corrupt WAL segment: the replay task fails, the
    /// segment is quarantined (an id allocated for the record), and a new replay of the
    /// table is queued at once; it skips the segment (see [`Core::wal_skips`]), so later
    /// writes are applied and flushed while the segment waits for an operator.
    fn quarantine_wal_segment(&mut self, id: u64, first_seq: u64, error: ErrorRecord, now_ms: i64) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let attempt = task.attempt;
        task.state = TaskState::Failed;
        task.finished_at_ms = now_ms;
        let (table, priority) = (task.spec.table().to_owned(), task.priority);
        self.dirty.tasks.insert(id);
        self.finish_bookkeeping(id, attempt);
        let known = self
            .quarantined
            .values()
            .any(|q| q.table == table && q.wal.as_ref().is_some_and(|w| w.first_seq == first_seq));
        if !known {
            let qid = self.next(NEXT_FILE_ID, 1);
            tracing::warn!(
                task_id = id,
                table = %table,
                first_seq,
                segment = %error.file,
                error = %error.message,
                "corrupt wal segment quarantined; replay goes on without it"
            );
            self.quarantined.insert(
                qid,
                QuarantineRecord {
                    table: table.clone(),
                    file_id: qid,
                    level: 0,
                    error,
                    since_ms: now_ms,
                    wal: Some(catalog::WalQuarantine {
                        first_seq,
                        repair_task: 0,
                        released: false,
                    }),
                },
            );
            self.dirty.quarantine.insert(qid);
            // No tombstone may be dropped from now on: re-pick with that rule.
            self.repick.insert(table.clone());
        }
        let checkpoint = self.manifests.get(&table).map_or(0, |m| m.checkpoint);
        let spec = TaskSpec::WalReplay {
            table: table.clone(),
            checkpoint,
            recovery_mode: String::new(),
            explicit_start: false,
            skip_segments: Vec::new(),
        };
        if let Err(e) = self.submit(spec, priority, now_ms) {
            // The periodic assignment does not take over after a failed replay: say so.
            tracing::error!(table = %table, error = %e, "could not queue the replay that skips the quarantined segment; retry it with TriggerWalReplay");
        }
    }

    /// The quarantined WAL segments of `table` (first seqs) a replay must not read: every
    /// one whose repair has not committed (a repaired segment's writes are in the levels).
    pub fn wal_skips(&self, table: &str) -> Vec<u64> {
        self.quarantined
            .values()
            .filter(|q| q.table == table)
            .filter_map(|q| q.wal.as_ref().map(|w| w.first_seq))
            .collect::<BTreeSet<u64>>()
            .into_iter()
            .collect()
    }

    /// Queues the repair of every released WAL segment of `table` whose repair is not
    /// queued yet: one full compaction of the table (every file of every level into the
    /// deepest non-empty level, at least L1) with the segments as extra inputs, merged by
    /// sequence number. Their writes are older than much of what the levels hold, so they
    /// may not be flushed into L0 (a read would meet them before newer versions deeper
    /// down). Waits while an SST of the table is quarantined (the compaction would read
    /// it). Returns the repair queued, or `Err(())` when one waits for its files (locked):
    /// the caller then picks nothing else for the table, so the locks drain.
    fn queue_wal_repair(
        &mut self,
        table: &str,
        target_file_size: u64,
        now_ms: i64,
    ) -> Result<Option<u64>, ()> {
        let released: Vec<(u64, u64)> = self
            .quarantined
            .values()
            .filter(|q| q.table == table)
            .filter_map(|q| {
                q.wal
                    .as_ref()
                    .filter(|w| w.released && w.repair_task == 0)
                    .map(|w| (q.file_id, w.first_seq))
            })
            .collect();
        if released.is_empty() {
            return Ok(None);
        }
        let sst_quarantined = self
            .quarantined
            .values()
            .any(|q| q.table == table && q.wal.is_none());
        if sst_quarantined {
            return Ok(None);
        }
        if !self.manifests.contains_key(table) {
            return Ok(None);
        }
        let repaired: BTreeSet<u64> = released.iter().map(|(qid, _)| *qid).collect();
        // Tombstones may go only if no other segment of the table stays quarantined.
        let alone = !self
            .quarantined
            .values()
            .any(|q| q.table == table && !repaired.contains(&q.file_id));
        let reason = format!(
            "{}: {} released wal segment(s)",
            crate::quarantine::REPAIR_REASON,
            released.len()
        );
        let wal = released.iter().map(|(_, s)| *s).collect();
        // The full compaction an operator's `compact --force` would get, plus the segments
        // (a table without files: the segments alone, into L1).
        let spec = match crate::manual::manual_compaction(
            self,
            table,
            None,
            b"",
            b"",
            target_file_size,
            true,
        ) {
            Ok(Some(TaskSpec::Compaction {
                inputs,
                output_level,
                bottommost,
                ..
            })) => TaskSpec::Compaction {
                table: table.to_owned(),
                inputs,
                output_level,
                bottommost: bottommost && alone,
                target_file_size,
                trivial_move: false,
                reason,
                wal_inputs: wal,
            },
            Ok(_) => TaskSpec::Compaction {
                table: table.to_owned(),
                inputs: Vec::new(),
                output_level: 1,
                bottommost: alone,
                target_file_size,
                trivial_move: false,
                reason,
                wal_inputs: wal,
            },
            Err(e) => {
                tracing::debug!(table, error = %e, "wal segment repair waits");
                return Err(());
            }
        };
        match self.submit(spec, 90, now_ms) {
            Ok(task_id) => {
                for qid in &repaired {
                    if let Some(w) = self.quarantined.get_mut(qid).and_then(|q| q.wal.as_mut()) {
                        w.repair_task = task_id;
                    }
                    self.dirty.quarantine.insert(*qid);
                }
                tracing::info!(
                    task_id,
                    table,
                    segments = released.len(),
                    "wal segment repair queued"
                );
                Ok(Some(task_id))
            }
            Err(e) => {
                tracing::debug!(table, error = %e, "wal segment repair waits");
                Err(())
            }
        }
    }

    /// A compaction failed on corrupt input for good: it fails, and either the one file it
    /// read is quarantined or its inputs are split into smaller probe compactions (see
    /// [`crate::quarantine`]), queued at once so that nothing else takes the files between.
    fn poison_input(&mut self, id: u64, error: ErrorRecord, now_ms: i64) {
        let Some(task) = self.tasks.get_mut(&id) else {
            return;
        };
        let attempt = task.attempt;
        task.state = TaskState::Failed;
        task.finished_at_ms = now_ms;
        let (spec, priority) = (task.spec.clone(), task.priority);
        self.dirty.tasks.insert(id);
        self.finish_bookkeeping(id, attempt);
        let TaskSpec::Compaction {
            table,
            inputs,
            target_file_size,
            ..
        } = spec
        else {
            return;
        };
        match crate::quarantine::split(&inputs) {
            crate::quarantine::Split::Quarantine { level, file_id } => {
                tracing::warn!(
                    task_id = id,
                    table = %table,
                    file_id,
                    level,
                    error = %error.message,
                    "poison input quarantined"
                );
                self.quarantined.insert(
                    file_id,
                    QuarantineRecord {
                        table: table.clone(),
                        file_id,
                        level,
                        error,
                        since_ms: now_ms,
                        wal: None,
                    },
                );
                self.dirty.quarantine.insert(file_id);
                self.repick.insert(table);
            }
            crate::quarantine::Split::Probes(parts) => {
                for (level, files) in parts {
                    let n = files.len();
                    let spec = TaskSpec::Compaction {
                        table: table.clone(),
                        inputs: vec![(level, files)],
                        output_level: level,
                        bottommost: false,
                        target_file_size,
                        trivial_move: false,
                        reason: format!(
                            "{} of task {id}: {n} file(s) of L{level}",
                            crate::quarantine::BISECT_REASON
                        ),
                        wal_inputs: Vec::new(),
                    };
                    match self.submit(spec, priority, now_ms) {
                        Ok(probe) => tracing::info!(
                            task_id = id,
                            probe,
                            table = %table,
                            files = n,
                            "corrupt input: bisecting with a smaller compaction"
                        ),
                        // Files gone meanwhile: the picker takes what is left.
                        Err(e) => {
                            tracing::warn!(task_id = id, table = %table, error = %e, "bisection probe not queued")
                        }
                    }
                }
            }
        }
    }

    /// Preemption for stalls: when an urgent compaction of a table in `stalling` (whose
    /// stall forecast fell below the threshold) waits because the cluster runs as many
    /// compactions as it may, the running deferrable compaction that started last is
    /// asked to stop at its next output boundary and commit what it finished; its slot
    /// then goes to the urgent one. One preemption per waiting urgent compaction; each
    /// attempt is asked once. Returns the (task, attempt)s asked now.
    pub fn preempt_for_stalls(&mut self, stalling: &BTreeSet<String>) -> Vec<(u64, u32)> {
        if stalling.is_empty() {
            return Vec::new();
        }
        let waiting = self
            .live_tasks()
            .filter(|t| {
                t.state == TaskState::Pending
                    && t.kind() == TaskKind::Compaction
                    && crate::traffic::is_urgent(&t.spec)
                    && stalling.contains(t.spec.table())
            })
            .count();
        let limit = self
            .cfg
            .max_running
            .get(&TaskKind::Compaction)
            .copied()
            .unwrap_or(usize::MAX);
        let running: Vec<&TaskRecord> = self
            .live_tasks()
            .filter(|t| t.state == TaskState::Running && t.kind() == TaskKind::Compaction)
            .collect();
        if waiting == 0 || running.len() < limit {
            return Vec::new();
        }
        let already = running
            .iter()
            .filter(|t| self.preempted.contains(&(t.id, t.attempt)))
            .count();
        let mut victims: Vec<(i64, u64, u32, u64)> = running
            .iter()
            .filter(|t| {
                !crate::traffic::is_urgent(&t.spec)
                    && !crate::quarantine::is_probe(&t.spec)
                    && !crate::quarantine::is_repair(&t.spec)
                    && !self.preempted.contains(&(t.id, t.attempt))
            })
            .filter_map(|t| {
                t.current_attempt()
                    .map(|a| (a.started_at_ms, t.id, t.attempt, a.worker_id))
            })
            .collect();
        victims.sort_unstable_by(|a, b| b.cmp(a));
        let mut asked = Vec::new();
        for (_, id, attempt, worker) in victims.into_iter().take(waiting.saturating_sub(already)) {
            self.preempted.insert((id, attempt));
            self.pending_preempts
                .entry(worker)
                .or_default()
                .push((id, attempt));
            asked.push((id, attempt));
        }
        asked
    }

    /// Quarantined files, by file id.
    pub fn quarantined(&self) -> impl Iterator<Item = &QuarantineRecord> {
        self.quarantined.values()
    }

    /// Puts a quarantined file back into picking (after an operator replaced or checked
    /// it). A file that is still corrupt is found and quarantined again.
    pub fn release_quarantined(
        &mut self,
        table: &str,
        file_id: u64,
    ) -> Result<QuarantineRecord, CoreError> {
        match self.quarantined.get(&file_id) {
            Some(q) if q.table == table => {}
            _ => {
                return Err(CoreError::NotQuarantined {
                    table: table.to_owned(),
                    file_id,
                });
            }
        }
        if let Some(q) = self.quarantined.get_mut(&file_id)
            && let Some(w) = q.wal.as_mut()
        {
            // A segment's writes come back through a repair compaction; the record stays
            // (replay keeps skipping the segment) until that commits.
            if w.released {
                return Err(CoreError::Refused(format!(
                    "wal segment {} of table {table} is already released (repair task {})",
                    w.first_seq, w.repair_task
                )));
            }
            w.released = true;
            let q = q.clone();
            self.dirty.quarantine.insert(file_id);
            self.repick.insert(table.to_owned());
            return Ok(q);
        }
        let q = self
            .quarantined
            .remove(&file_id)
            .ok_or(CoreError::NotQuarantined {
                table: table.to_owned(),
                file_id,
            })?;
        self.dirty.quarantine.insert(file_id);
        self.repick.insert(table.to_owned());
        Ok(q)
    }

    fn plan_dispatches(&mut self, now_ms: i64) -> Vec<Dispatch> {
        let aging = self.cfg.aging_ms.max(1);
        let mut ready: Vec<(i64, u64)> = self
            .live_tasks()
            .filter(|t| t.state == TaskState::Pending && t.not_before_ms <= now_ms)
            .map(|t| {
                let effective = i64::from(t.priority) + (now_ms - t.created_at_ms) / aging;
                (-effective, t.id)
            })
            .collect();
        ready.sort_unstable();
        let mut running: HashMap<TaskKind, usize> = HashMap::new();
        for t in self.live_tasks().filter(|t| holds_slot(t)) {
            *running.entry(t.kind()).or_default() += 1;
        }
        let deferred = self.deferral(now_ms).is_some();
        let mut out = Vec::new();
        for (_, id) in ready {
            // Still pending: a replay dispatched earlier in this round cancels the stale
            // flushes of its table, some of which may be further down this list.
            let Some((kind, avoid, urgent)) = self
                .tasks
                .get(&id)
                .filter(|t| t.state == TaskState::Pending)
                .map(|t| {
                    (
                        t.kind(),
                        t.attempts.last().map(|a| a.worker_id),
                        crate::traffic::is_urgent(&t.spec),
                    )
                })
            else {
                continue;
            };
            if deferred && !urgent {
                continue;
            }
            let limit = self
                .cfg
                .max_running
                .get(&kind)
                .copied()
                .unwrap_or(usize::MAX);
            if running.get(&kind).copied().unwrap_or(0) >= limit {
                continue;
            }
            let Some((worker_id, address)) = self
                .free_worker(worker_kind(kind), now_ms, avoid)
                .map(|w| (w.record.id, w.record.address.clone()))
            else {
                continue;
            };
            let output_file_ids = self.allocate_outputs(id);
            // The memtables of the table's previous replayer are gone or being dropped:
            // their flushes can no longer stream, and the new replayer replays (and
            // flushes) everything after the checkpoint again.
            let stale_flushes: Vec<u64> = match self.tasks.get(&id).map(|t| &t.spec) {
                Some(TaskSpec::WalReplay { table, .. }) => self
                    .live_tasks()
                    .filter(|t| t.kind() == TaskKind::MemtableFlush && t.spec.table() == table)
                    .map(|t| t.id)
                    .collect(),
                _ => Vec::new(),
            };
            let current_checkpoint = self
                .tasks
                .get(&id)
                .and_then(|t| self.manifests.get(t.spec.table()))
                .map_or(0, |m| m.checkpoint);
            let skips = self
                .tasks
                .get(&id)
                .map(|t| self.wal_skips(t.spec.table()))
                .unwrap_or_default();
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.attempt += 1;
            task.state = TaskState::Running;
            task.attempts.push(AttemptRecord {
                attempt: task.attempt,
                worker_id,
                worker_address: address.clone(),
                started_at_ms: now_ms,
                ended_at_ms: 0,
                output_file_ids: output_file_ids.clone(),
            });
            if let TaskSpec::WalReplay {
                table,
                checkpoint,
                explicit_start,
                skip_segments,
                ..
            } = &mut task.spec
            {
                // Replay from the checkpoint as of now, not as of queueing (an operator's
                // explicit older start point is kept).
                if !*explicit_start {
                    *checkpoint = (*checkpoint).max(current_checkpoint);
                }
                *skip_segments = skips.clone();
                if let Some(t) = self.tables.get_mut(table.as_str()) {
                    t.replayer_address = address.clone();
                    self.dirty.tables.insert(table.clone());
                }
            }
            let mut dispatch = Dispatch {
                task_id: id,
                attempt: task.attempt,
                worker_id,
                address,
                spec: task.spec.clone(),
                output_file_ids,
                levels: Vec::new(),
                columns: Vec::new(),
                trace_parent: task.trace_parent.clone(),
                io_bytes_per_sec: 0,
                grandparent_bounds: Vec::new(),
            };
            if let TaskSpec::Compaction {
                table,
                inputs,
                output_level,
                ..
            } = &dispatch.spec
                && let Some(m) = self.manifests.get(table)
            {
                dispatch.grandparent_bounds =
                    lsm::compaction::grandparent_bounds(&m.levels, inputs, *output_level);
            }
            if let TaskSpec::StatisticsUpdate { table } = &dispatch.spec {
                if let Some(m) = self.manifests.get(table) {
                    dispatch.levels = m
                        .levels
                        .levels
                        .iter()
                        .enumerate()
                        .map(|(l, files)| (l as u32, files.clone()))
                        .collect();
                }
                if let Some(t) = self.tables.get(table) {
                    dispatch.columns = t.columns.clone();
                }
            }
            self.dirty.tasks.insert(id);
            self.progress.insert(
                (id, dispatch.attempt),
                ProgressMark {
                    value: Progress::default(),
                    changed_at_ms: now_ms,
                },
            );
            if let Some(w) = self.workers.get_mut(&worker_id) {
                w.assigned.insert((id, dispatch.attempt));
            }
            *running.entry(kind).or_default() += 1;
            out.push(dispatch);
            for id in stale_flushes {
                if self.tasks.get(&id).is_some_and(holds_slot) {
                    let n = running.entry(TaskKind::MemtableFlush).or_default();
                    *n = n.saturating_sub(1);
                }
                let _ = self.cancel(id, now_ms);
            }
        }
        // Shares over everything running now, the new attempts included (the running
        // ones learn theirs with their worker's next heartbeat).
        let shares = self.io_shares();
        for d in &mut out {
            d.io_bytes_per_sec = shares.get(&(d.task_id, d.attempt)).copied().unwrap_or(0);
        }
        out
    }

    /// Reserves output file ids for a new attempt of task `id`.
    fn allocate_outputs(&mut self, id: u64) -> Vec<u64> {
        let n = match self.tasks.get(&id).map(|t| &t.spec) {
            Some(TaskSpec::MemtableFlush { .. }) => FLUSH_OUTPUT_IDS,
            Some(TaskSpec::Compaction {
                inputs,
                target_file_size,
                trivial_move: false,
                wal_inputs,
                ..
            }) => {
                let bytes: u64 = inputs
                    .iter()
                    .flat_map(|(_, f)| f.iter().map(|f| f.size))
                    .sum::<u64>()
                    + wal_inputs.len() as u64 * (4 << 20);
                // Outputs split on key boundaries can run over the target: reserve double.
                // A repair's compactor writes each WAL input as an SST first (the last ids).
                2 * bytes.div_ceil((*target_file_size).max(1)) + 16 + wal_inputs.len() as u64
            }
            _ => 0,
        };
        if n == 0 {
            return Vec::new();
        }
        let first = self.next(NEXT_FILE_ID, n);
        (first..first + n).collect()
    }

    /// The worker refused a dispatch (busy) or could not be reached: the attempt ends
    /// without counting as a failure and the task goes back to the queue.
    pub fn dispatch_refused(&mut self, task_id: u64, attempt: u32, now_ms: i64) {
        self.requeue(task_id, attempt, false, now_ms);
    }

    /// The worker of a dispatch could not be reached: like [`Core::dispatch_refused`], and
    /// the worker gets no dispatch until it heartbeats again.
    pub fn dispatch_unreachable(&mut self, task_id: u64, attempt: u32, now_ms: i64) {
        self.requeue(task_id, attempt, true, now_ms);
    }

    fn requeue(&mut self, task_id: u64, attempt: u32, unreachable: bool, now_ms: i64) {
        if unreachable
            && let Some(w) = self
                .tasks
                .get(&task_id)
                .filter(|t| t.attempt == attempt)
                .and_then(|t| t.current_attempt())
                .map(|a| a.worker_id)
                .and_then(|w| self.workers.get_mut(&w))
        {
            w.unreachable = true;
        }
        let Some(task) = self.tasks.get_mut(&task_id) else {
            return;
        };
        if task.state != TaskState::Running || task.attempt != attempt {
            return;
        }
        if let Some(a) = task
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == attempt)
        {
            a.ended_at_ms = now_ms;
        }
        task.state = TaskState::Pending;
        task.not_before_ms = now_ms + self.cfg.backoff_base_ms.min(1000) / 4;
        self.dirty.tasks.insert(task_id);
        self.progress.remove(&(task_id, attempt));
        for w in self.workers.values_mut() {
            w.assigned.remove(&(task_id, attempt));
        }
    }

    // ---- completion: fencing and commit ------------------------------------------------

    /// Commits the result of `(task_id, attempt)` if it is the current attempt of a live
    /// task whose inputs are still in the manifest. Anything else is refused and changes
    /// nothing (its files become orphans for Cleanup).
    pub fn complete(
        &mut self,
        task_id: u64,
        attempt: u32,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<(), CoreError> {
        let flush_of = self
            .tasks
            .get(&task_id)
            .filter(|t| t.kind() == TaskKind::MemtableFlush)
            .map(|t| t.spec.table().to_owned());
        self.complete_one(task_id, attempt, outcome, now_ms)?;
        // A flush that committed may be what staged successors waited for. (A loop, not
        // recursion: a long chain of out-of-order completions must not exhaust the stack.)
        if let Some(table) = flush_of {
            self.commit_staged_flushes(&table, now_ms);
        }
        Ok(())
    }

    /// [`Core::complete`] without committing the staged flushes it unblocks.
    fn complete_one(
        &mut self,
        task_id: u64,
        attempt: u32,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<(), CoreError> {
        let task = self
            .tasks
            .get(&task_id)
            .ok_or(CoreError::TaskNotFound(task_id))?;
        if task.state != TaskState::Running || task.attempt != attempt {
            return Err(CoreError::Refused(format!(
                "task {task_id} attempt {attempt} is not the current attempt (task is {:?}, current attempt {})",
                task.state, task.attempt
            )));
        }
        let spec = task.spec.clone();
        let allowed: BTreeSet<u64> = task
            .current_attempt()
            .map(|a| a.output_file_ids.iter().copied().collect())
            .unwrap_or_default();
        match outcome {
            Outcome::Failure(mut error) => {
                error.attempt = attempt;
                error.at_ms = now_ms;
                self.fail_attempt(task_id, error, now_ms);
                Ok(())
            }
            Outcome::Success {
                files,
                consumed_inputs,
                stats,
                partial,
            } => {
                if let Some(f) = files.iter().find(|f| !allowed.contains(&f.id)) {
                    return Err(CoreError::Refused(format!(
                        "file id {} was not allocated to task {task_id} attempt {attempt}",
                        f.id
                    )));
                }
                // Flushes of one table commit in sequence order: one whose predecessor has
                // not committed yet waits, its files staged, until the checkpoint reaches it.
                if let TaskSpec::MemtableFlush { after_seq, .. } = &spec {
                    let checkpoint = self.manifests.get(spec.table()).map_or(0, |m| m.checkpoint);
                    if *after_seq > checkpoint {
                        self.staged
                            .insert((spec.table().to_owned(), *after_seq), task_id);
                        if let Some(task) = self.tasks.get_mut(&task_id) {
                            task.staged_files = Some(files);
                            if let Some(a) = task
                                .attempts
                                .iter_mut()
                                .rev()
                                .find(|a| a.attempt == attempt)
                            {
                                a.ended_at_ms = now_ms;
                            }
                        }
                        self.dirty.tasks.insert(task_id);
                        // The worker's slot is free; the task stays live until it commits.
                        self.progress.remove(&(task_id, attempt));
                        for w in self.workers.values_mut() {
                            w.assigned.remove(&(task_id, attempt));
                        }
                        return Ok(());
                    }
                }
                let edit = match &spec {
                    TaskSpec::MemtableFlush { .. } => Some(VersionEdit {
                        removed: Vec::new(),
                        added: files.iter().map(|f| (0, f.clone())).collect(),
                    }),
                    TaskSpec::Compaction {
                        inputs,
                        output_level,
                        ..
                    } => {
                        let all: Vec<(u32, u64)> = inputs
                            .iter()
                            .flat_map(|(l, fs)| fs.iter().map(move |f| (*l, f.id)))
                            .collect();
                        let removed = if consumed_inputs.is_empty() && !partial {
                            all
                        } else {
                            all.into_iter()
                                .filter(|(_, id)| consumed_inputs.contains(id))
                                .collect()
                        };
                        Some(VersionEdit {
                            removed,
                            added: files.iter().map(|f| (*output_level, f.clone())).collect(),
                        })
                    }
                    _ => None,
                };
                let table = spec.table().to_owned();
                if let Some(edit) = edit {
                    let manifest = self.manifests.get(&table).ok_or_else(|| {
                        CoreError::Refused(format!("table {table:?} no longer exists"))
                    })?;
                    let next = manifest.levels.apply(&edit).map_err(|e| {
                        CoreError::Refused(format!(
                            "task {task_id} attempt {attempt} cannot commit to table {table}: {e}"
                        ))
                    })?;
                    // Readers that fetched the previous version may still read these: they
                    // stay for a grace period counted from now.
                    for (_, id) in &edit.removed {
                        self.obsolete_since.insert(*id, now_ms);
                    }
                    let checkpoint = match &spec {
                        TaskSpec::MemtableFlush { last_seq, .. } => {
                            manifest.checkpoint.max(*last_seq)
                        }
                        _ => manifest.checkpoint,
                    };
                    tracing::info!(
                        task_id,
                        attempt,
                        table = %table,
                        kind = spec.kind().label(),
                        added = ?edit.added.iter().map(|(l, f)| (*l, f.id, f.smallest_seq, f.largest_seq)).collect::<Vec<_>>(),
                        removed = ?edit.removed,
                        checkpoint,
                        "manifest edit committed"
                    );
                    let version = manifest.version + 1;
                    let l0 = next.levels.first().map_or(0, |l| l.len()) as u32;
                    self.forecast.record_l0(&table, l0, now_ms);
                    if let TaskSpec::Compaction { inputs, .. } = &spec {
                        let bytes = inputs
                            .iter()
                            .flat_map(|(_, f)| f.iter().map(|f| f.size))
                            .sum();
                        self.forecast.record_compaction(&table, bytes, now_ms);
                    }
                    self.manifests.insert(
                        table.clone(),
                        ManifestRecord {
                            table: table.clone(),
                            version,
                            checkpoint,
                            levels: next,
                        },
                    );
                    self.manifest_changed(&table);
                }
                if let (TaskSpec::StatisticsUpdate { .. }, Some(stats)) = (&spec, stats)
                    && self.tables.contains_key(&table)
                {
                    self.stats.insert(table.clone(), stats);
                    self.dirty.stats.insert(table.clone());
                }
                if let Some(task) = self.tasks.get_mut(&task_id) {
                    task.state = TaskState::Succeeded;
                    task.finished_at_ms = now_ms;
                    if let Some(a) = task
                        .attempts
                        .iter_mut()
                        .rev()
                        .find(|a| a.attempt == attempt)
                    {
                        a.ended_at_ms = now_ms;
                    }
                }
                self.dirty.tasks.insert(task_id);
                self.finish_bookkeeping(task_id, attempt);
                Ok(())
            }
        }
    }

    /// Commits the staged flushes of `table` that the checkpoint has reached, in order.
    fn commit_staged_flushes(&mut self, table: &str, now_ms: i64) {
        loop {
            let checkpoint = self.manifests.get(table).map_or(0, |m| m.checkpoint);
            let next = self
                .staged
                .range((table.to_owned(), 0)..=(table.to_owned(), checkpoint))
                .next()
                .map(|(_, id)| *id);
            let Some((id, attempt)) =
                next.and_then(|id| self.tasks.get(&id).map(|t| (id, t.attempt)))
            else {
                return;
            };
            let files = self
                .tasks
                .get_mut(&id)
                .and_then(|t| t.staged_files.take())
                .unwrap_or_default();
            let outcome = Outcome::Success {
                files,
                consumed_inputs: Vec::new(),
                stats: None,
                partial: false,
            };
            if let Err(e) = self.complete_one(id, attempt, outcome, now_ms) {
                // Cannot happen for a live staged flush; never loop on it.
                tracing::warn!(task_id = id, error = %e, "staged flush could not commit");
                return;
            }
        }
    }

    /// Runs the compaction picker over tables: trivial moves are committed at once
    /// (re-levelled, not rewritten: one manifest edit, no worker); other plans are queued
    /// as Compaction tasks, their inputs locked. Returns (tasks queued, files moved).
    ///
    /// `all` picks every table (the periodic pass); otherwise only the tables whose
    /// manifest or locks changed since the last pick.
    pub fn plan_compactions(
        &mut self,
        strategy: &Strategy,
        all: bool,
        now_ms: i64,
    ) -> (Vec<u64>, usize) {
        let changed = std::mem::take(&mut self.repick);
        let tables: Vec<String> = if all {
            self.tables.keys().cloned().collect()
        } else {
            changed
                .into_iter()
                .filter(|t| self.tables.contains_key(t))
                .collect()
        };
        // Tables with a released WAL segment to repair are looked at every round.
        let mut tables = tables;
        for q in self.quarantined.values() {
            if q.wal
                .as_ref()
                .is_some_and(|w| w.released && w.repair_task == 0)
                && !tables.contains(&q.table)
            {
                tables.push(q.table.clone());
            }
        }
        let mut queued = Vec::new();
        let mut moved = 0;
        let deferring = self.deferral(now_ms).is_some();
        let repair_target = match strategy {
            Strategy::LevelBased(c) => c.target_file_size,
            Strategy::SizeTiered(_) => u64::MAX,
        };
        for table in tables {
            match self.queue_wal_repair(&table, repair_target, now_ms) {
                Ok(Some(id)) => queued.push(id),
                Ok(None) => {}
                Err(()) => continue,
            }
            // While deferrable work waits, its pending compactions must not keep urgent
            // ones (L0) from their files: the picker does not see their locks, and an
            // urgent plan that needs them supersedes them (they are picked again later).
            let yielding: BTreeSet<u64> = if deferring {
                self.locks
                    .values()
                    .filter(|t| {
                        self.tasks.get(t).is_some_and(|t| {
                            t.state == TaskState::Pending && !crate::traffic::is_urgent(&t.spec)
                        })
                    })
                    .copied()
                    .collect()
            } else {
                BTreeSet::new()
            };
            let mut locked: BTreeSet<u64> = self
                .locks
                .iter()
                .filter(|(_, t)| !yielding.contains(t))
                .map(|(f, _)| *f)
                .collect();
            let Some(m) = self.manifests.get(&table) else {
                continue;
            };
            // Quarantined files are left out of picking: an L0 one is hidden from the
            // picker (the other L0 files compact without it), a deeper one is treated as
            // locked (nothing may rewrite its key range around it).
            let poisoned: BTreeSet<u64> = self
                .quarantined
                .values()
                .filter(|q| q.table == table)
                .map(|q| q.file_id)
                .collect();
            let view = crate::quarantine::picker_view(&m.levels, &poisoned, &mut locked);
            let output = pick(
                strategy,
                &PickerInput {
                    version: view.as_ref().unwrap_or(&m.levels),
                    locked: &locked,
                },
            );
            for plan in output.plans {
                if plan.trivial_move {
                    let Some(m) = self.manifests.get(&table) else {
                        break;
                    };
                    // Plans of one pick are independent; an edit that no longer applies
                    // (a file moved meanwhile) is simply skipped until the next pick.
                    if let Ok(next) = m.levels.apply(&plan.move_edit()) {
                        moved += plan.input_ids().len();
                        let l0 = next.levels.first().map_or(0, |l| l.len()) as u32;
                        self.forecast.record_l0(&table, l0, now_ms);
                        let rec = ManifestRecord {
                            table: table.clone(),
                            version: m.version + 1,
                            checkpoint: m.checkpoint,
                            levels: next,
                        };
                        self.manifests.insert(table.clone(), rec);
                        self.manifest_changed(&table);
                    }
                    continue;
                }
                let spec = TaskSpec::Compaction {
                    table: table.clone(),
                    inputs: plan.inputs.clone(),
                    output_level: plan.output_level,
                    // A quarantined file may hold older versions the picker cannot see:
                    // tombstones must stay.
                    bottommost: plan.bottommost && poisoned.is_empty(),
                    target_file_size: plan.target_file_size,
                    trivial_move: false,
                    reason: plan.reason.clone(),
                    wal_inputs: Vec::new(),
                };
                let top = plan.inputs.first().map_or(0, |(l, _)| *l as i32);
                if crate::traffic::is_urgent(&spec) {
                    let superseded: BTreeSet<u64> = spec
                        .input_file_ids()
                        .iter()
                        .filter_map(|f| self.locks.get(f))
                        .filter(|t| yielding.contains(t))
                        .copied()
                        .collect();
                    for id in superseded {
                        tracing::info!(
                            task_id = id,
                            table = %table,
                            "deferred compaction superseded by an urgent one that needs its files"
                        );
                        let _ = self.cancel(id, now_ms);
                    }
                }
                // A full queue or a lock taken since the pick: try again next round.
                if let Ok(id) = self.submit(spec, 80 - 5 * top, now_ms) {
                    queued.push(id);
                }
            }
        }
        (queued, moved)
    }

    /// Forgets final tasks beyond the newest `keep` (failed ones are kept until then too).
    pub fn prune_finished(&mut self, keep: usize) {
        let finished: Vec<u64> = self
            .tasks
            .values()
            .filter(|t| t.state.is_final())
            .map(|t| t.id)
            .collect();
        if finished.len() <= keep {
            return;
        }
        for id in &finished[..finished.len() - keep] {
            self.tasks.remove(id);
            self.dirty.tasks.insert(*id);
        }
    }
}

/// The worker kind that runs a task kind.
/// Whether a task counts against its kind's cluster limit: running on a worker. A staged
/// flush has finished its work and only waits for its predecessor to commit; counting it
/// would let staged flushes fill `max_concurrent_flushes` while the predecessor they wait
/// for cannot run (a deadlock).
fn holds_slot(t: &TaskRecord) -> bool {
    t.state == TaskState::Running && t.staged_files.is_none()
}

pub fn worker_kind(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::WalReplay => "replayer",
        TaskKind::MemtableFlush => "flusher",
        TaskKind::Compaction | TaskKind::Cleanup | TaskKind::StatisticsUpdate => "compactor",
    }
}

/// Exponential backoff: `base × 2^(failures-1)`, capped.
pub fn backoff_ms(base: i64, cap: i64, failures: u32) -> i64 {
    let exp = failures.saturating_sub(1).min(30);
    base.saturating_mul(1i64 << exp).min(cap)
}

/// Table names: 1–128 of `[A-Za-z0-9_-]` (they become object-store path segments).
pub fn validate_table_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() || name.len() > 128 {
        return Err(CoreError::Invalid(format!(
            "table name {name:?} must be 1 to 128 characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(CoreError::Invalid(format!(
            "table name {name:?} contains {c:?}; use letters, digits, '_' and '-'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
