//! Cleanup: deleting SSTs and WAL segments that nothing needs any more.
//!
//! The work is split along the line the design draws between policy and execution:
//!
//! - **The scheduler decides what may go.** Only it knows the retained manifest versions,
//!   the running tasks (whose inputs and outputs must survive), the checkpoint and the grace
//!   period. It lists the table's objects, calls the pure [`select_garbage`] (here, so the
//!   rules live next to the code that executes them, and so they are tested without IO) and
//!   dispatches a Cleanup task whose [`pb::CleanupSpec`] names every object path to delete.
//! - **The compactor executes** ([`run_cleanup`]): it trusts the decision but not the input.
//!   Every path is checked against the layout (`tables/<table>/sst/<20 digits>.sst` or
//!   `tables/<table>/wal/<20 digits>.wal`, of the spec's table when it names one) *before*
//!   anything is deleted, so a malformed spec (a bug, a hand-written request) deletes nothing
//!   and fails with [`CleanupError::InvalidPath`] naming the path.
//!
//! Vocabulary: a [`pb::CleanupSpec`] is what the scheduler asks for; a [`CleanupPlan`] is
//! that request checked and turned into object paths; a [`CleanupReport`] is what an attempt
//! did (or, on a dry run, would have done).
//!
//! Execution is idempotent so that a retried attempt simply finishes the job: an object that
//! is already gone is skipped (not an error, not counted in the report). SSTs are deleted
//! before WAL segments: SSTs hold most of the bytes, and WAL segments, the writes' first copy,
//! are the last thing to give up should an attempt stop half-way.
//!
//! Cancellation is checked before every object. A cancelled attempt stops at once and
//! returns [`CleanupError::Cancelled`] carrying the report of what it had already deleted
//! (for the log; the scheduler does not need it, a retry would skip those objects anyway).
//!
//! Metrics (all with `service="compactor"`): [`FILES_DELETED_TOTAL`] by `kind` (`sst` or
//! `wal`), [`BYTES_RECLAIMED_TOTAL`], and on dry runs only [`DRY_RUN_FILES_TOTAL`] by `kind`.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use proto::v1 as pb;
use storage::paths::{self, TableName};
use storage::{ObjectPath, Storage, StorageError};
use tokio_util::sync::CancellationToken;

/// Objects deleted by cleanups, by `kind` (`sst`, `wal`). Not incremented by dry runs.
pub const FILES_DELETED_TOTAL: &str = "cleanup_files_deleted_total";
/// Bytes of the objects deleted by cleanups. Not incremented by dry runs.
pub const BYTES_RECLAIMED_TOTAL: &str = "cleanup_bytes_reclaimed_total";
/// Objects a dry-run cleanup would have deleted, by `kind` (`sst`, `wal`).
pub const DRY_RUN_FILES_TOTAL: &str = "cleanup_dry_run_files_total";

const SERVICE: &str = "compactor";

/// Registers the help text of the cleanup metrics with the installed recorder.
pub fn describe_metrics() {
    metrics::describe_counter!(
        FILES_DELETED_TOTAL,
        "Objects deleted by Cleanup tasks, by kind (sst, wal)."
    );
    metrics::describe_counter!(
        BYTES_RECLAIMED_TOTAL,
        metrics::Unit::Bytes,
        "Bytes of the objects deleted by Cleanup tasks."
    );
    metrics::describe_counter!(
        DRY_RUN_FILES_TOTAL,
        "Objects dry-run Cleanup tasks would have deleted, by kind (sst, wal)."
    );
}

/// What kind of object a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    Sst,
    Wal,
}

impl ObjectKind {
    /// The `kind` metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Sst => "sst",
            Self::Wal => "wal",
        }
    }
}

/// A path that is, exactly and canonically, one of a table's SSTs or WAL segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableObject {
    pub table: TableName,
    pub kind: ObjectKind,
    /// The SST's file id, or the WAL segment's first sequence number.
    pub number: u64,
    pub path: ObjectPath,
}

/// Parses `raw` as `tables/<table>/sst/<20 digits>.sst` or `tables/<table>/wal/<20
/// digits>.wal`. Strict: the path must be exactly what [`paths::sst_file`] or
/// [`paths::wal_segment`] would build, so no stray object (a staging file, a copy with a
/// suffix, a path with `..` or doubled slashes) is ever taken for data.
pub fn parse_table_object(raw: &str) -> Option<TableObject> {
    let mut parts = raw.split('/');
    let (Some("tables"), Some(table), Some(dir), Some(file), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let table = TableName::new(table).ok()?;
    let (kind, number, path) = match dir {
        "sst" => {
            let id = paths::parse_sst_file_name(file)?;
            (ObjectKind::Sst, id, paths::sst_file(&table, id))
        }
        "wal" => {
            let first_seq = paths::parse_wal_segment_name(file)?;
            let path = paths::wal_segment(&table, first_seq);
            (ObjectKind::Wal, first_seq, path)
        }
        _ => return None,
    };
    (path.as_ref() == raw).then_some(TableObject {
        table,
        kind,
        number,
        path,
    })
}

// ---------------------------------------------------------------------------------------
// Policy: which listed objects are garbage (pure; called by the scheduler)
// ---------------------------------------------------------------------------------------

/// One object from a listing of a table's `sst/` or `wal/` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub path: String,
    pub size: u64,
    /// Last modification time, milliseconds since the Unix epoch.
    pub last_modified_ms: i64,
}

/// The objects [`select_garbage`] found deletable, sorted by path (so by table, then by file
/// id or first sequence number).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Garbage {
    pub sst_paths: Vec<String>,
    pub wal_paths: Vec<String>,
}

impl Garbage {
    pub fn is_empty(&self) -> bool {
        self.sst_paths.is_empty() && self.wal_paths.is_empty()
    }
}

/// Whether an object last modified at `last_modified_ms` is past the grace period at
/// `now_ms`: at least `grace_ms` old, as `cleanup.grace_period` is documented (so a grace of
/// zero is no grace at all). A negative grace counts as zero, and an object stamped in the
/// future (clock skew) is never old enough.
fn past_grace(last_modified_ms: i64, now_ms: i64, grace_ms: i64) -> bool {
    let age = now_ms.saturating_sub(last_modified_ms);
    age >= 0 && age >= grace_ms
}

/// Decides which listed objects a Cleanup may delete. Pure: the caller lists storage, reads
/// the catalog and the clock, and passes everything in.
///
/// - `listed_ssts`: a listing of `tables/<table>/sst/`; an SST is garbage iff its path is a
///   canonical SST path, its file id is not in `referenced_file_ids` and it is at least
///   `grace_ms` old. `referenced_file_ids` must hold every file of every retained manifest
///   version *and* every input and output of running tasks (an output is in no manifest yet;
///   the grace period is the second line of defence for it).
/// - `listed_wal`: a listing of `tables/<table>/wal/`; a segment is garbage iff it lies wholly
///   at or below `checkpoint` (the highest sequence number durable in SSTs) and is at least
///   `grace_ms` old. A segment's last sequence number is not in its name, so it is known
///   only from the next segment: a segment is wholly covered iff the next segment (by first
///   sequence number) starts at or below `checkpoint + 1`. The newest segment of a table is
///   therefore never garbage.
/// - Names that do not parse as the layout's are never garbage, and an SST path in the WAL
///   listing (or the reverse) is ignored.
///
/// Meant to be called per table; WAL segments are nevertheless grouped by the table named in
/// their path, so a listing spanning tables cannot make one table's segment look covered by
/// another table's.
pub fn select_garbage(
    listed_ssts: &[ListedObject],
    listed_wal: &[ListedObject],
    referenced_file_ids: &BTreeSet<u64>,
    checkpoint: u64,
    now_ms: i64,
    grace_ms: i64,
) -> Garbage {
    let old = |o: &ListedObject| past_grace(o.last_modified_ms, now_ms, grace_ms);

    let sst_paths: BTreeSet<String> = listed_ssts
        .iter()
        .filter(|o| old(o))
        .filter_map(|o| parse_table_object(&o.path).filter(|t| t.kind == ObjectKind::Sst))
        .filter(|t| !referenced_file_ids.contains(&t.number))
        .map(|t| t.path.to_string())
        .collect();

    // table -> first_seq -> whether the segment is old enough. Keyed by first_seq, so a
    // path listed twice counts once.
    let mut segments: BTreeMap<TableName, BTreeMap<u64, bool>> = BTreeMap::new();
    for o in listed_wal {
        if let Some(t) = parse_table_object(&o.path).filter(|t| t.kind == ObjectKind::Wal) {
            segments
                .entry(t.table)
                .or_default()
                .insert(t.number, old(o));
        }
    }
    let covered_below = checkpoint.saturating_add(1);
    let mut wal_paths = Vec::new();
    for (table, by_seq) in &segments {
        let seqs: Vec<(u64, bool)> = by_seq.iter().map(|(&s, &old)| (s, old)).collect();
        for pair in seqs.windows(2) {
            if let [(first_seq, is_old), (next_first_seq, _)] = *pair
                && next_first_seq <= covered_below
                && is_old
            {
                wal_paths.push(paths::wal_segment(table, first_seq).to_string());
            }
        }
    }

    Garbage {
        sst_paths: sst_paths.into_iter().collect(),
        wal_paths,
    }
}

// ---------------------------------------------------------------------------------------
// Execution
// ---------------------------------------------------------------------------------------

/// A failed or cancelled cleanup attempt.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// `spec.table` is not a valid table name. Nothing was deleted.
    #[error("invalid table name in cleanup spec: {0}")]
    InvalidTable(#[source] StorageError),
    /// A listed path is not an SST or WAL segment of the spec's table (or of any table, when
    /// the spec names none), or is listed under the wrong kind. Nothing was deleted.
    #[error("refusing to clean up {path:?}: {reason}; nothing was deleted")]
    InvalidPath { path: String, reason: String },
    /// Reading metadata of or deleting an object failed (the message names it). Objects
    /// before it in the plan may have been deleted; a retry skips them.
    #[error("cleanup failed: {0}")]
    Storage(#[from] StorageError),
    /// The attempt was cancelled; `done` is what it had deleted (or would have, on a dry run)
    /// before it stopped.
    #[error("cleanup cancelled after {} of its objects", done.deleted.len())]
    Cancelled { done: CleanupReport },
}

impl CleanupError {
    /// The class the scheduler records: a malformed spec is `INVALID_ARGUMENT` (not worth a
    /// retry), a storage failure `INTERNAL` (retry), a cancellation `CANCELLED`.
    pub fn kind(&self) -> pb::ErrorKind {
        match self {
            Self::InvalidTable(_) | Self::InvalidPath { .. } => pb::ErrorKind::InvalidArgument,
            Self::Storage(_) => pb::ErrorKind::Internal,
            Self::Cancelled { .. } => pb::ErrorKind::Cancelled,
        }
    }

    /// Whether a new attempt could succeed.
    pub fn retriable(&self) -> bool {
        match self {
            Self::InvalidTable(_) | Self::InvalidPath { .. } => false,
            Self::Storage(_) | Self::Cancelled { .. } => true,
        }
    }

    /// The object the error is about, for `TaskError.file`.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::InvalidPath { path, .. } => Some(path),
            Self::Storage(
                StorageError::NotFound { path }
                | StorageError::InvalidPath { path, .. }
                | StorageError::Io { path, .. }
                | StorageError::ObjectStore { path, .. },
            ) => Some(path),
            Self::InvalidTable(_) | Self::Storage(_) | Self::Cancelled { .. } => None,
        }
    }
}

/// A checked [`pb::CleanupSpec`]: canonical object paths, SSTs and WAL segments apart, each
/// listed once, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupPlan {
    /// The table the paths belong to; `None`: any table.
    pub table: Option<TableName>,
    pub ssts: Vec<ObjectPath>,
    pub wal_segments: Vec<ObjectPath>,
    pub dry_run: bool,
}

impl CleanupPlan {
    /// Checks every path of `spec` (see the module docs) and builds the plan, or names the
    /// first path that is not acceptable.
    pub fn from_spec(spec: &pb::CleanupSpec) -> Result<Self, CleanupError> {
        let table = if spec.table.is_empty() {
            None
        } else {
            Some(TableName::new(spec.table.as_str()).map_err(CleanupError::InvalidTable)?)
        };
        let ssts = checked_paths(&spec.sst_paths, ObjectKind::Sst, table.as_ref())?;
        let wal_segments = checked_paths(&spec.wal_paths, ObjectKind::Wal, table.as_ref())?;
        Ok(Self {
            table,
            ssts,
            wal_segments,
            dry_run: spec.dry_run,
        })
    }

    /// Objects in deletion order: SSTs, then WAL segments.
    fn objects(&self) -> impl Iterator<Item = (ObjectKind, &ObjectPath)> {
        let ssts = self.ssts.iter().map(|p| (ObjectKind::Sst, p));
        let wal = self.wal_segments.iter().map(|p| (ObjectKind::Wal, p));
        ssts.chain(wal)
    }
}

fn checked_paths(
    raw_paths: &[String],
    kind: ObjectKind,
    table: Option<&TableName>,
) -> Result<Vec<ObjectPath>, CleanupError> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(raw_paths.len());
    for raw in raw_paths {
        let object = check_path(raw, kind, table)?;
        if seen.insert(object.path.clone()) {
            out.push(object.path);
        }
    }
    Ok(out)
}

fn check_path(
    raw: &str,
    kind: ObjectKind,
    table: Option<&TableName>,
) -> Result<TableObject, CleanupError> {
    let invalid = |reason: String| CleanupError::InvalidPath {
        path: raw.to_owned(),
        reason,
    };
    let expected = match kind {
        ObjectKind::Sst => "tables/<table>/sst/<20 digits>.sst",
        ObjectKind::Wal => "tables/<table>/wal/<20 digits>.wal",
    };
    let object = parse_table_object(raw)
        .filter(|o| o.kind == kind)
        .ok_or_else(|| invalid(format!("not a path of the form {expected}")))?;
    if let Some(table) = table
        && object.table != *table
    {
        return Err(invalid(format!(
            "it belongs to table {}, not to table {table}",
            object.table
        )));
    }
    Ok(object)
}

/// What a cleanup attempt deleted (or, on a dry run, would have deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Paths deleted (would be, on a dry run), in deletion order.
    pub deleted: Vec<String>,
    /// Their total size.
    pub bytes_reclaimed: u64,
    /// Listed objects that were already gone (a retried attempt), skipped.
    pub already_missing: u64,
    pub dry_run: bool,
}

impl From<CleanupReport> for pb::CleanupResult {
    fn from(report: CleanupReport) -> Self {
        Self {
            deleted: report.deleted,
            bytes_reclaimed: report.bytes_reclaimed,
        }
    }
}

/// Runs a Cleanup task: checks `spec` (nothing is deleted unless every path is acceptable),
/// then deletes its SSTs and then its WAL segments, skipping objects already gone. On a dry
/// run nothing is deleted and the result lists what would be.
///
/// Errors: see [`CleanupError`]; on cancellation the partial report is in
/// [`CleanupError::Cancelled`].
pub async fn run_cleanup(
    storage: &Storage,
    spec: &pb::CleanupSpec,
    cancel: &CancellationToken,
) -> Result<pb::CleanupResult, CleanupError> {
    let plan = CleanupPlan::from_spec(spec)?;
    let report = execute_cleanup(storage, &plan, cancel).await?;
    tracing::info!(
        table = spec.table,
        dry_run = report.dry_run,
        deleted = report.deleted.len(),
        bytes_reclaimed = report.bytes_reclaimed,
        already_missing = report.already_missing,
        "cleanup finished"
    );
    Ok(report.into())
}

/// Executes a checked plan (see [`run_cleanup`]).
pub async fn execute_cleanup(
    storage: &Storage,
    plan: &CleanupPlan,
    cancel: &CancellationToken,
) -> Result<CleanupReport, CleanupError> {
    let mut report = CleanupReport {
        dry_run: plan.dry_run,
        ..CleanupReport::default()
    };
    for (kind, path) in plan.objects() {
        if cancel.is_cancelled() {
            return Err(CleanupError::Cancelled { done: report });
        }
        let size = match storage.head(path).await {
            Ok(meta) => meta.size,
            Err(e) if e.is_not_found() => {
                tracing::debug!(%path, "already deleted, skipped");
                report.already_missing += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if plan.dry_run {
            tracing::debug!(%path, size, "dry run: would delete");
        } else {
            storage.delete(path).await?;
            tracing::debug!(%path, size, "deleted");
            runtime::failpoint::hit("compactor.cleanup.between_deletes").await;
        }
        record_metrics(kind, size, plan.dry_run);
        report.deleted.push(path.to_string());
        report.bytes_reclaimed += size;
    }
    Ok(report)
}

fn record_metrics(kind: ObjectKind, size: u64, dry_run: bool) {
    if dry_run {
        metrics::counter!(DRY_RUN_FILES_TOTAL, "kind" => kind.label(), "service" => SERVICE)
            .increment(1);
    } else {
        metrics::counter!(FILES_DELETED_TOTAL, "kind" => kind.label(), "service" => SERVICE)
            .increment(1);
        metrics::counter!(BYTES_RECLAIMED_TOTAL, "service" => SERVICE).increment(size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SST_7: &str = "tables/users/sst/00000000000000000007.sst";
    const WAL_1: &str = "tables/users/wal/00000000000000000001.wal";

    fn sst(table: &str, id: u64) -> String {
        paths::sst_file(&TableName::new(table).expect("valid"), id).to_string()
    }

    fn wal(table: &str, first_seq: u64) -> String {
        paths::wal_segment(&TableName::new(table).expect("valid"), first_seq).to_string()
    }

    fn obj(path: String, last_modified_ms: i64) -> ListedObject {
        ListedObject {
            path,
            size: 100,
            last_modified_ms,
        }
    }

    // ---- parse_table_object ----

    #[test]
    fn parses_canonical_paths_only() {
        let o = parse_table_object(SST_7).expect("sst");
        assert_eq!(
            (o.table.as_str(), o.kind, o.number),
            ("users", ObjectKind::Sst, 7)
        );
        assert_eq!(o.path.as_ref(), SST_7);
        let o = parse_table_object(WAL_1).expect("wal");
        assert_eq!((o.kind, o.number), (ObjectKind::Wal, 1));

        for bad in [
            "",
            "tables",
            "tables/users",
            "tables/users/sst",
            "tables/users/sst/",
            "tables/users/sst/7.sst",
            "tables/users/sst/00000000000000000007.sst.tmp",
            "tables/users/sst/00000000000000000007.wal",
            "tables/users/wal/00000000000000000001.sst",
            "tables/users/other/00000000000000000007.sst",
            "tables/users/sst/00000000000000000007.sst/x",
            "/tables/users/sst/00000000000000000007.sst",
            "tables//users/sst/00000000000000000007.sst",
            "tables/../sst/00000000000000000007.sst",
            "tables/us ers/sst/00000000000000000007.sst",
            "other/users/sst/00000000000000000007.sst",
            "prefix/tables/users/sst/00000000000000000007.sst",
            "tables/users/sst/../sst/00000000000000000007.sst",
        ] {
            assert_eq!(parse_table_object(bad), None, "{bad:?}");
        }
    }

    // ---- select_garbage: SSTs ----

    const NOW: i64 = 1_000_000;
    const GRACE: i64 = 60_000;
    const OLD: i64 = NOW - GRACE;

    fn ssts_only(listed: &[ListedObject], referenced: &[u64]) -> Vec<String> {
        let refs = referenced.iter().copied().collect();
        let g = select_garbage(listed, &[], &refs, 0, NOW, GRACE);
        assert!(g.wal_paths.is_empty());
        g.sst_paths
    }

    #[test]
    fn unreferenced_old_ssts_are_garbage() {
        let listed = [
            obj(sst("t", 3), OLD),
            obj(sst("t", 1), OLD),
            obj(sst("t", 2), OLD),
        ];
        assert_eq!(ssts_only(&listed, &[2]), vec![sst("t", 1), sst("t", 3)]);
        assert_eq!(ssts_only(&listed, &[1, 2, 3]), Vec::<String>::new());
        assert_eq!(ssts_only(&listed, &[]).len(), 3);
        // Referenced ids that are not listed change nothing.
        assert_eq!(ssts_only(&listed, &[99]).len(), 3);
    }

    #[test]
    fn sst_grace_boundary() {
        // Exactly `grace` old is old enough (`cleanup.grace_period`: "at least this old");
        // one millisecond younger is not.
        assert_eq!(
            ssts_only(&[obj(sst("t", 1), NOW - GRACE)], &[]),
            vec![sst("t", 1)]
        );
        assert!(ssts_only(&[obj(sst("t", 1), NOW - GRACE + 1)], &[]).is_empty());
        assert!(ssts_only(&[obj(sst("t", 1), NOW)], &[]).is_empty());
        // Stamped in the future (clock skew): never old enough.
        assert!(ssts_only(&[obj(sst("t", 1), NOW + 5)], &[]).is_empty());
        // Extreme timestamps do not overflow.
        assert_eq!(
            ssts_only(&[obj(sst("t", 1), i64::MIN)], &[]),
            vec![sst("t", 1)]
        );
        assert!(ssts_only(&[obj(sst("t", 1), i64::MAX)], &[]).is_empty());
    }

    #[test]
    fn zero_and_negative_grace() {
        let refs = BTreeSet::new();
        for grace in [0, -10] {
            let g = select_garbage(
                &[
                    obj(sst("t", 1), NOW),
                    obj(sst("t", 2), NOW - 1),
                    obj(sst("t", 3), NOW + 1),
                ],
                &[],
                &refs,
                0,
                NOW,
                grace,
            );
            assert_eq!(g.sst_paths, vec![sst("t", 1), sst("t", 2)], "grace {grace}");
        }
    }

    #[test]
    fn unparseable_sst_names_are_never_garbage() {
        let listed = [
            obj("tables/t/sst/1.sst".into(), OLD),
            obj("tables/t/sst/00000000000000000001.sst.tmp".into(), OLD),
            obj("tables/t/sst/00000000000000000001.wal".into(), OLD),
            obj(wal("t", 1), OLD),
            obj("tables/t/sst/notes.txt".into(), OLD),
            obj("elsewhere/00000000000000000001.sst".into(), OLD),
        ];
        assert!(ssts_only(&listed, &[]).is_empty());
    }

    #[test]
    fn duplicate_sst_listings_count_once() {
        let listed = [obj(sst("t", 4), OLD), obj(sst("t", 4), OLD)];
        assert_eq!(ssts_only(&listed, &[]), vec![sst("t", 4)]);
    }

    // ---- select_garbage: WAL ----

    /// Segments of table `t` starting at `firsts`, all old; the garbage at `checkpoint`.
    fn wal_garbage(firsts: &[u64], checkpoint: u64) -> Vec<u64> {
        let listed: Vec<_> = firsts.iter().map(|&s| obj(wal("t", s), OLD)).collect();
        wal_garbage_of(&listed, checkpoint)
    }

    fn wal_garbage_of(listed: &[ListedObject], checkpoint: u64) -> Vec<u64> {
        let g = select_garbage(&[], listed, &BTreeSet::new(), checkpoint, NOW, GRACE);
        assert!(g.sst_paths.is_empty());
        g.wal_paths
            .iter()
            .map(|p| parse_table_object(p).expect("canonical").number)
            .collect()
    }

    #[test]
    fn wal_segment_is_garbage_iff_the_next_starts_at_or_below_checkpoint_plus_one() {
        // Segments [1..=10], [11..=20], [21..=30], [31..].
        let firsts = [1, 11, 21, 31];
        assert_eq!(wal_garbage(&firsts, 0), Vec::<u64>::new());
        assert_eq!(wal_garbage(&firsts, 9), Vec::<u64>::new());
        // Next starts exactly at checkpoint + 1: wholly covered.
        assert_eq!(wal_garbage(&firsts, 10), vec![1]);
        // Next starts at checkpoint + 2: its last seq (checkpoint + 1) is not durable.
        assert_eq!(wal_garbage(&firsts, 19), vec![1]);
        assert_eq!(wal_garbage(&firsts, 20), vec![1, 11]);
        assert_eq!(wal_garbage(&firsts, 30), vec![1, 11, 21]);
        // The newest segment is never garbage, however far the checkpoint is.
        assert_eq!(wal_garbage(&firsts, 1_000), vec![1, 11, 21]);
        assert_eq!(wal_garbage(&firsts, u64::MAX), vec![1, 11, 21]);
    }

    #[test]
    fn single_or_no_segment_is_never_garbage() {
        assert_eq!(wal_garbage(&[1], u64::MAX), Vec::<u64>::new());
        assert_eq!(wal_garbage(&[], u64::MAX), Vec::<u64>::new());
    }

    #[test]
    fn wal_order_comes_from_the_names_not_the_listing() {
        assert_eq!(wal_garbage(&[21, 1, 11], 20), vec![1, 11]);
    }

    #[test]
    fn wal_grace_applies_to_each_segment() {
        let listed = [
            obj(wal("t", 1), OLD),
            obj(wal("t", 11), NOW - GRACE + 1), // covered, but 1 ms too young
            obj(wal("t", 21), NOW),
        ];
        assert_eq!(wal_garbage_of(&listed, 100), vec![1]);
        // A young newer segment still bounds an old one.
        let listed = [obj(wal("t", 1), OLD), obj(wal("t", 11), NOW)];
        assert_eq!(wal_garbage_of(&listed, 10), vec![1]);
    }

    #[test]
    fn unparseable_wal_names_are_never_garbage_and_bound_nothing() {
        let listed = [
            obj(wal("t", 1), OLD),
            // Would "cover" segment 1 if it were taken for a segment starting at 5.
            obj("tables/t/wal/5.wal".into(), OLD),
            obj("tables/t/wal/00000000000000000005.wal.tmp".into(), OLD),
            obj(sst("t", 5), OLD),
        ];
        assert_eq!(wal_garbage_of(&listed, 100), Vec::<u64>::new());
    }

    #[test]
    fn wal_segments_of_different_tables_do_not_bound_each_other() {
        let listed = [
            obj(wal("a", 1), OLD),
            obj(wal("b", 5), OLD),
            obj(wal("b", 9), OLD),
        ];
        let g = select_garbage(&[], &listed, &BTreeSet::new(), 100, NOW, GRACE);
        assert_eq!(g.wal_paths, vec![wal("b", 5)]);
    }

    #[test]
    fn duplicate_wal_listings_count_once() {
        let listed = [
            obj(wal("t", 1), OLD),
            obj(wal("t", 1), OLD),
            obj(wal("t", 11), OLD),
        ];
        assert_eq!(wal_garbage_of(&listed, 100), vec![1]);
        // A duplicate is not "the next segment".
        let listed = [obj(wal("t", 1), OLD), obj(wal("t", 1), OLD)];
        assert_eq!(wal_garbage_of(&listed, 100), Vec::<u64>::new());
    }

    #[test]
    fn checkpoint_plus_one_does_not_overflow() {
        assert_eq!(wal_garbage(&[1, u64::MAX], u64::MAX), vec![1]);
        assert_eq!(wal_garbage(&[1, u64::MAX], u64::MAX - 1), vec![1]);
        assert_eq!(wal_garbage(&[1, u64::MAX], u64::MAX - 2), Vec::<u64>::new());
    }

    #[test]
    fn ssts_and_wal_together() {
        let refs: BTreeSet<u64> = [2].into();
        let g = select_garbage(
            &[obj(sst("t", 1), OLD), obj(sst("t", 2), OLD)],
            &[obj(wal("t", 1), OLD), obj(wal("t", 6), OLD)],
            &refs,
            5,
            NOW,
            GRACE,
        );
        assert_eq!(
            g,
            Garbage {
                sst_paths: vec![sst("t", 1)],
                wal_paths: vec![wal("t", 1)],
            }
        );
        assert!(!g.is_empty());
        assert!(Garbage::default().is_empty());
    }

    // ---- plan validation ----

    fn spec(table: &str, ssts: &[&str], wal: &[&str]) -> pb::CleanupSpec {
        pb::CleanupSpec {
            table: table.to_owned(),
            sst_paths: ssts.iter().map(|s| (*s).to_owned()).collect(),
            wal_paths: wal.iter().map(|s| (*s).to_owned()).collect(),
            dry_run: false,
        }
    }

    #[test]
    fn plan_keeps_valid_paths_in_order_once() {
        let plan =
            CleanupPlan::from_spec(&spec("users", &[SST_7, SST_7], &[WAL_1])).expect("valid spec");
        assert_eq!(plan.table, Some(TableName::new("users").expect("valid")));
        assert_eq!(plan.ssts.len(), 1);
        let order: Vec<_> = plan.objects().map(|(k, p)| (k, p.to_string())).collect();
        assert_eq!(
            order,
            vec![
                (ObjectKind::Sst, SST_7.to_owned()),
                (ObjectKind::Wal, WAL_1.to_owned())
            ]
        );
        // No table: paths of any table.
        let plan =
            CleanupPlan::from_spec(&spec("", &[SST_7, &sst("other", 1)], &[])).expect("valid spec");
        assert_eq!(plan.table, None);
        assert_eq!(plan.ssts.len(), 2);
    }

    #[test]
    fn plan_refuses_foreign_or_malformed_paths() {
        for (s, expect_in_message) in [
            (spec("users", &[&sst("other", 7)], &[]), "table other"),
            (spec("users", &[], &[&wal("other", 1)]), "table other"),
            (spec("users", &[WAL_1], &[]), "<20 digits>.sst"),
            (spec("users", &[], &[SST_7]), "<20 digits>.wal"),
            (spec("", &["tables/users/sst/7.sst"], &[]), "not a path"),
            (spec("", &["tables/users/manifest"], &[]), "not a path"),
            (spec("", &[""], &[]), "not a path"),
        ] {
            let err = CleanupPlan::from_spec(&s).expect_err("invalid");
            assert!(matches!(err, CleanupError::InvalidPath { .. }), "{err:?}");
            assert!(err.to_string().contains(expect_in_message), "{err}");
            assert!(err.file().is_some());
        }
        let err = CleanupPlan::from_spec(&spec("no/slash", &[], &[])).expect_err("bad table");
        assert!(matches!(err, CleanupError::InvalidTable(_)), "{err:?}");
    }

    // ---- error mapping ----

    #[test]
    fn every_error_has_a_kind() {
        let cases = [
            (
                CleanupError::InvalidTable(StorageError::InvalidTableName {
                    name: "a/b".into(),
                    reason: "slash".into(),
                }),
                pb::ErrorKind::InvalidArgument,
                false,
                None,
            ),
            (
                CleanupError::InvalidPath {
                    path: "x".into(),
                    reason: "bad".into(),
                },
                pb::ErrorKind::InvalidArgument,
                false,
                Some("x"),
            ),
            (
                CleanupError::Storage(StorageError::NotFound { path: SST_7.into() }),
                pb::ErrorKind::Internal,
                true,
                Some(SST_7),
            ),
            (
                CleanupError::Storage(StorageError::DiskSpace {
                    needed: 1,
                    available: 0,
                    path: "/".into(),
                }),
                pb::ErrorKind::Internal,
                true,
                None,
            ),
            (
                CleanupError::Cancelled {
                    done: CleanupReport::default(),
                },
                pb::ErrorKind::Cancelled,
                true,
                None,
            ),
        ];
        for (err, kind, retriable, file) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.retriable(), retriable, "{err}");
            assert_eq!(err.file(), file, "{err}");
        }
    }
}
