//! The records the catalog stores. These are the scheduler's domain types (never protobuf
//! types): the gRPC edge converts to and from them.
//!
//! Vocabulary: a *task* is the durable decision that a work item must be done; an
//! *attempt* is one try of it on one worker. Only the current attempt of a live task may
//! commit.

use lsm::manifest::{FileMeta, Version};
use serde::{Deserialize, Serialize};

/// A table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRecord {
    pub name: String,
    /// Declared columns (values are then JSON objects).
    pub columns: Vec<ColumnDef>,
    pub created_at_ms: i64,
    /// Replayer the table is assigned to (empty: none).
    pub replayer_address: String,
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: String,
    /// "int", "float", "string" or "bool".
    pub kind: String,
}

/// A table's current manifest version and flushed checkpoint, written together by every
/// commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestRecord {
    pub table: String,
    /// Bumped by every commit.
    pub version: u64,
    /// Highest sequence number durable in SSTs.
    pub checkpoint: u64,
    pub levels: Version,
}

/// The type of a work item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    WalReplay,
    MemtableFlush,
    Compaction,
    Cleanup,
    StatisticsUpdate,
}

impl TaskKind {
    pub const ALL: [TaskKind; 5] = [
        TaskKind::WalReplay,
        TaskKind::MemtableFlush,
        TaskKind::Compaction,
        TaskKind::Cleanup,
        TaskKind::StatisticsUpdate,
    ];

    /// The label used in metrics.
    pub fn label(self) -> &'static str {
        match self {
            TaskKind::WalReplay => "wal_replay",
            TaskKind::MemtableFlush => "memtable_flush",
            TaskKind::Compaction => "compaction",
            TaskKind::Cleanup => "cleanup",
            TaskKind::StatisticsUpdate => "statistics_update",
        }
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskState {
    /// Succeeded, failed and cancelled tasks never change again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// What a task should do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum TaskSpec {
    WalReplay {
        table: String,
        checkpoint: u64,
        /// RocksDB's recovery-mode name; empty = the replayer's configured one.
        recovery_mode: String,
        /// An operator chose the start point: it is not moved up to the checkpoint.
        #[serde(default)]
        explicit_start: bool,
        /// Quarantined segments (first seqs) the replay does not read.
        #[serde(default)]
        skip_segments: Vec<u64>,
    },
    MemtableFlush {
        table: String,
        memtable_id: u64,
        replayer_address: String,
        first_seq: u64,
        last_seq: u64,
        /// The memtable holds every applied entry with `after_seq < seq <= last_seq`; the
        /// flush commits once the checkpoint has reached `after_seq`.
        #[serde(default)]
        after_seq: u64,
        /// The WalReplay task under which the replayer holds the memtable.
        #[serde(default)]
        replay_task_id: u64,
        /// Approximate bytes of the memtable.
        #[serde(default)]
        size_bytes: u64,
    },
    Compaction {
        table: String,
        /// (level, files) of the inputs.
        inputs: Vec<(u32, Vec<FileMeta>)>,
        output_level: u32,
        bottommost: bool,
        target_file_size: u64,
        trivial_move: bool,
        reason: String,
        /// WAL segments (first seqs) merged in as one more input: the repair of a released
        /// quarantined segment.
        #[serde(default)]
        wal_inputs: Vec<u64>,
    },
    Cleanup {
        table: String,
        sst_paths: Vec<String>,
        wal_paths: Vec<String>,
        dry_run: bool,
    },
    StatisticsUpdate {
        table: String,
    },
}

impl TaskSpec {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskSpec::WalReplay { .. } => TaskKind::WalReplay,
            TaskSpec::MemtableFlush { .. } => TaskKind::MemtableFlush,
            TaskSpec::Compaction { .. } => TaskKind::Compaction,
            TaskSpec::Cleanup { .. } => TaskKind::Cleanup,
            TaskSpec::StatisticsUpdate { .. } => TaskKind::StatisticsUpdate,
        }
    }

    pub fn table(&self) -> &str {
        match self {
            TaskSpec::WalReplay { table, .. }
            | TaskSpec::MemtableFlush { table, .. }
            | TaskSpec::Compaction { table, .. }
            | TaskSpec::Cleanup { table, .. }
            | TaskSpec::StatisticsUpdate { table } => table,
        }
    }

    /// Input file ids a compaction locks and needs to still exist at commit.
    pub fn input_file_ids(&self) -> Vec<u64> {
        match self {
            TaskSpec::Compaction { inputs, .. } => inputs
                .iter()
                .flat_map(|(_, fs)| fs.iter().map(|f| f.id))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub worker_id: u64,
    pub worker_address: String,
    pub started_at_ms: i64,
    /// 0 while running.
    pub ended_at_ms: i64,
    /// File ids this attempt may use for its outputs (allocated at dispatch, so outputs of
    /// different attempts never collide and a stale attempt's files are recognisable).
    pub output_file_ids: Vec<u64>,
}

/// An error reported by an attempt (or by the scheduler about it: lease expired, stuck).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub attempt: u32,
    /// `replay`, `flush`, `compaction`, `disk_space`, `lock`, `corruption`,
    /// `invalid_argument`, `not_found`, `cancelled`, `lease_expired`, `stuck`, `internal`.
    pub kind: String,
    pub message: String,
    pub file: String,
    pub offset: u64,
    pub retriable: bool,
    pub at_ms: i64,
}

/// A task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: u64,
    pub spec: TaskSpec,
    pub state: TaskState,
    /// Current attempt (0 before the first dispatch).
    pub attempt: u32,
    pub attempts: Vec<AttemptRecord>,
    pub errors: Vec<ErrorRecord>,
    pub created_at_ms: i64,
    /// Not dispatched before this time (retry backoff).
    pub not_before_ms: i64,
    /// Higher runs first.
    pub priority: i32,
    /// When it reached a final state (0 while live).
    pub finished_at_ms: i64,
    /// A flush whose current attempt finished with these files while an earlier flush of
    /// the table had not committed yet: it commits, in sequence order, once the checkpoint
    /// reaches its `after_seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_files: Option<Vec<FileMeta>>,
    /// W3C traceparent of the span that decided this task: every attempt's dispatch (and so
    /// the worker's execution and the commit) continues that trace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trace_parent: String,
}

impl TaskRecord {
    pub fn kind(&self) -> TaskKind {
        self.spec.kind()
    }

    /// The current attempt's record, if it was dispatched.
    pub fn current_attempt(&self) -> Option<&AttemptRecord> {
        self.attempts
            .iter()
            .rev()
            .find(|a| a.attempt == self.attempt)
    }
}

/// A registered worker, persisted so a restarted scheduler still knows where its running
/// attempts are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    pub id: u64,
    /// `replayer`, `flusher` or `compactor`.
    pub kind: String,
    pub name: String,
    pub address: String,
    pub slots: u32,
    pub version: String,
    pub registered_at_ms: i64,
}

/// A file quarantined as a poison input: compactions failed on it with a corruption
/// error and bisection pinned the failure on it alone. It stays in its manifest (still
/// referenced, never deleted) but is excluded from picking until an operator releases it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    pub table: String,
    pub file_id: u64,
    /// The level the file was in when it was quarantined.
    pub level: u32,
    /// The corruption error of the probe that compacted it alone.
    pub error: ErrorRecord,
    pub since_ms: i64,
    /// Set for a WAL segment replay could not read (then `file_id` is an id allocated for
    /// the quarantine, not an SST's, and `level` is 0).
    #[serde(default)]
    pub wal: Option<WalQuarantine>,
}

/// A quarantined WAL segment: replay skips it (its writes stay out of the memtables),
/// Cleanup keeps it, and no compaction of its table drops tombstones, until it is released
/// and its repair compaction commits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalQuarantine {
    /// The segment's first sequence number (its name).
    pub first_seq: u64,
    /// The repair (a full compaction merging the segment) queued or running; 0: none.
    #[serde(default)]
    pub repair_task: u64,
    /// Released by an operator (the segment was replaced by a good copy); until
    /// `repair_task` is set the repair waits to be queued (files locked, or another file of
    /// the table quarantined).
    #[serde(default)]
    pub released: bool,
}
