//! StatisticsUpdate: a table's statistics recomputed from its current SSTs.
//!
//! The scheduler sends a [`pb::StatisticsSpec`] (the table's current files by level, and its
//! declared columns); [`update_statistics`] checks it ([`StatsSpec`]), opens every file from
//! shared storage on a blocking thread and hands them to [`compute_statistics`], which does
//! the work synchronously over any [`SstSource`] (in tests: `Bytes` in memory).
//!
//! # What is computed, and from what
//!
//! From each file's properties block alone (no data read): `entries` and `tombstones` (every
//! version, summed), files and bytes per level, the key range (smallest and largest *user*
//! key of any entry, tombstones included, like the manifest's key ranges), and the union of
//! the files' HyperLogLog key sketches.
//!
//! Then one merged scan of every file (a k-way [`MergingIterator`], sources in level order
//! and, within L0, in the spec's newest-first order) visits each user key's newest version.
//! It is [`lsm::VisibleIterator`] at [`lsm::MAX_SEQNO`] written out, because the scan also
//! needs the keys whose newest version is a tombstone, which that iterator hides. The scan
//! gives, exactly: the *live keys* (newest version a put), the *deleted keys* (newest
//! version a tombstone), the *live bytes* (user key + value length of each live key's newest
//! version) and the column statistics below.
//!
//! - `estimated_live_keys` comes from the cardinality sketches, as the contract says: the
//!   merged sketch estimates the distinct user keys of the table, and every distinct user key
//!   is either live or deleted, so the estimate is the sketch's minus the exact deleted-key
//!   count. (The exact live count is in [`Statistics::live_keys`] for logs and tests; should
//!   two files carry sketches of different precisions, which one writer never produces, the
//!   sketches cannot be merged and the exact count is reported instead, with a warning.)
//! - `space_amplification` = total SST bytes / live bytes; 0 when there are no live bytes
//!   (undefined).
//! - `write_amplification` is left at 0: it is a ratio of bytes written by flushes and
//!   compactions to bytes ingested over time, which only the scheduler's counters know; the
//!   scheduler fills it in when it stores the statistics.
//!
//! # Column statistics
//!
//! A table may declare columns (`name`, type `int`, `float`, `string` or `bool`). Its values
//! are then *rows*: UTF-8 JSON objects whose keys are column names. For each live row:
//!
//! - a missing key or a JSON `null` is a null;
//! - a value of the wrong JSON type for its column (a string in an `int` column, `1.5` or an
//!   integer beyond `i64` in an `int` column) is counted as a null too (the contract has no
//!   field for mismatches); the first one of each column is logged at debug level and the
//!   count is kept in [`ColumnStatistics::type_mismatches`];
//! - a value that is not a JSON object (not JSON at all, or an array, a number...) makes
//!   every column null for that row ([`Statistics::non_object_rows`]).
//!
//! An `int` is a JSON integer that fits `i64`; a `float` is any JSON number (so `3` and `3.0`
//! are the same float). Per column: the exact null count; the exact minimum and maximum under
//! the type's order (`i64`; `f64` total order; strings by bytes; `false < true`), JSON-encoded
//! (`"12"`, `"2.5"`, `"\"abc\""`, `"true"`; `"null"` when the column has no non-null value);
//! and the distinct count estimated with a HyperLogLog of precision
//! [`COLUMN_SKETCH_PRECISION`] over each non-null value's canonical JSON encoding (the same
//! encoding as min and max, so `3` and `3.0` in a float column are one value).
//!
//! # Cancellation and memory
//!
//! The scan checks the cancel flag every [`CANCEL_CHECK_INTERVAL`] entries and before
//! opening each file. Every file is open at once during the merge, each with a read-ahead
//! window (and one prefetched window) from [`storage::BlockingReader`]; the window shrinks
//! with the number of files so that the windows of one update stay within about
//! [`READAHEAD_BUDGET`] bytes.

use runtime::now_ms;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashSet};

use lsm::ValueKind;
use lsm::{BoxError, BoxedIterator, InternalIterator, MergingIterator, ParsedInternalKey};
use proto::v1 as pb;
use serde_json::Value;
use sst::hll::Hll;
use sst::{FOOTER_LEN, ObjectSource, SstError, SstReader, SstSource};
use storage::paths::{self, TableName};
use storage::{BlockingReaderConfig, Storage};
use tokio_util::sync::CancellationToken;

/// Precision of the per-column distinct-value sketches: 2^14 registers (16 KiB per column),
/// about 0.8% standard error.
pub const COLUMN_SKETCH_PRECISION: u8 = 14;

/// Entries scanned between two looks at the cancel flag.
pub const CANCEL_CHECK_INTERVAL: u64 = 1024;

/// Bytes of read-ahead windows one statistics update may hold across all its files.
pub const READAHEAD_BUDGET: usize = 256 * 1024 * 1024;
const MIN_READAHEAD: usize = 64 * 1024;
const MAX_READAHEAD: usize = 2 * 1024 * 1024;

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A failed or cancelled statistics update.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The spec is malformed (bad table name, unknown column type, duplicate file...).
    #[error("invalid statistics spec: {field}: {reason}")]
    InvalidSpec { field: &'static str, reason: String },
    /// An SST's bytes do not decode. `offset` is the offset of the damaged block (or of the
    /// footer field: the magic for a file that is not an SST, the version for a later format).
    #[error("corrupt sst {file} at offset {offset}: {reason}")]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    /// Reading an SST from storage failed (the source carries the storage error; its kind is
    /// `NotFound` if the object is gone).
    #[error("reading sst {file} from storage failed: {source}")]
    Storage {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A bug: the blocking thread panicked, or an error that reading cannot produce.
    #[error("internal error: {0}")]
    Internal(String),
    /// The attempt was cancelled.
    #[error("statistics update cancelled")]
    Cancelled,
}

impl StatsError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidSpec {
            field,
            reason: reason.into(),
        }
    }

    /// Maps a reader error; `file_size` locates the footer fields of magic and version.
    fn from_sst(err: SstError, file_size: u64) -> Self {
        match err {
            SstError::Corruption {
                file,
                offset,
                reason,
            } => Self::Corrupt {
                file,
                offset,
                reason,
            },
            SstError::BadMagic { file, found } => Self::Corrupt {
                file,
                offset: file_size.saturating_sub(8),
                reason: format!("bad magic {found:#018x} (not an sst file, or truncated)"),
            },
            SstError::UnsupportedVersion { file, version } => Self::Corrupt {
                file,
                offset: file_size.saturating_sub(FOOTER_LEN as u64) + 48,
                reason: format!("unsupported format version {version}"),
            },
            SstError::Io { file, source } => Self::Storage { file, source },
            other => Self::Internal(other.to_string()),
        }
    }

    /// The class the scheduler records.
    pub fn kind(&self) -> pb::ErrorKind {
        match self {
            Self::InvalidSpec { .. } => pb::ErrorKind::InvalidArgument,
            Self::Corrupt { .. } => pb::ErrorKind::Corruption,
            Self::Storage { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                pb::ErrorKind::NotFound
            }
            Self::Storage { .. } | Self::Internal(_) => pb::ErrorKind::Internal,
            Self::Cancelled => pb::ErrorKind::Cancelled,
        }
    }

    /// Whether a new attempt with the same spec could succeed. A missing file is retriable:
    /// the scheduler sends a fresh file list with the next attempt's spec.
    pub fn retriable(&self) -> bool {
        match self {
            Self::InvalidSpec { .. } | Self::Corrupt { .. } => false,
            Self::Storage { .. } | Self::Internal(_) | Self::Cancelled => true,
        }
    }

    /// The SST the error is about, for `TaskError.file`.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::Corrupt { file, .. } | Self::Storage { file, .. } => Some(file),
            Self::InvalidSpec { .. } | Self::Internal(_) | Self::Cancelled => None,
        }
    }

    /// The byte offset in [`Self::file`], for `TaskError.offset`.
    pub fn offset(&self) -> Option<u64> {
        match self {
            Self::Corrupt { offset, .. } => Some(*offset),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The spec
// ---------------------------------------------------------------------------------------

/// A declared column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Int,
    Float,
    String,
    Bool,
}

impl ColumnType {
    /// Parses `"int"`, `"float"`, `"string"` or `"bool"`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "int" => Some(Self::Int),
            "float" => Some(Self::Float),
            "string" => Some(Self::String),
            "bool" => Some(Self::Bool),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Int => "int",
            Self::Float => "float",
            Self::String => "string",
            Self::Bool => "bool",
        }
    }
}

/// A declared column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    pub ty: ColumnType,
}

impl ColumnDef {
    pub fn new(name: impl Into<String>, ty: ColumnType) -> Self {
        Self {
            name: name.into(),
            ty,
        }
    }
}

/// One SST of the table, as the spec lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileRef {
    pub level: u32,
    pub file_id: u64,
    pub size_bytes: u64,
}

/// A checked [`pb::StatisticsSpec`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsSpec {
    pub table: TableName,
    /// In merge order: by level, and within a level in the spec's order (L0 newest first).
    pub files: Vec<FileRef>,
    pub columns: Vec<ColumnDef>,
}

impl StatsSpec {
    /// Checks `spec`: a valid table name, each file listed once with a size that can hold an
    /// SST footer, columns with distinct non-empty names and known types.
    pub fn from_proto(spec: &pb::StatisticsSpec) -> Result<Self, StatsError> {
        let table = TableName::new(spec.table.as_str())
            .map_err(|e| StatsError::invalid("table", e.to_string()))?;
        let mut levels: Vec<&pb::Level> = spec.levels.iter().collect();
        levels.sort_by_key(|l| l.level); // stable: files keep their order within a level
        let mut ids = HashSet::new();
        let mut files = Vec::new();
        for level in levels {
            for f in &level.files {
                if !ids.insert(f.file_id) {
                    return Err(StatsError::invalid(
                        "levels",
                        format!("file {} is listed twice", f.file_id),
                    ));
                }
                if f.size_bytes < FOOTER_LEN as u64 {
                    return Err(StatsError::invalid(
                        "levels",
                        format!(
                            "file {} has size {}, less than an sst footer",
                            f.file_id, f.size_bytes
                        ),
                    ));
                }
                files.push(FileRef {
                    level: level.level,
                    file_id: f.file_id,
                    size_bytes: f.size_bytes,
                });
            }
        }
        let mut names = HashSet::new();
        let mut columns = Vec::with_capacity(spec.columns.len());
        for c in &spec.columns {
            if c.name.is_empty() {
                return Err(StatsError::invalid("columns", "a column has no name"));
            }
            if !names.insert(c.name.as_str()) {
                return Err(StatsError::invalid(
                    "columns",
                    format!("column {:?} is declared twice", c.name),
                ));
            }
            let ty = ColumnType::parse(&c.r#type).ok_or_else(|| {
                StatsError::invalid(
                    "columns",
                    format!(
                        "column {:?} has type {:?}; expected int, float, string or bool",
                        c.name, c.r#type
                    ),
                )
            })?;
            columns.push(ColumnDef::new(c.name.as_str(), ty));
        }
        Ok(Self {
            table,
            files,
            columns,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The result
// ---------------------------------------------------------------------------------------

/// Files and bytes of one level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelStats {
    pub level: u32,
    pub files: u64,
    pub bytes: u64,
}

/// Statistics of one column (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnStatistics {
    pub name: String,
    /// Live rows where the column is missing, null, of the wrong type, or the row is not a
    /// JSON object.
    pub null_count: u64,
    /// Of those, values of the wrong type.
    pub type_mismatches: u64,
    /// JSON-encoded; `"null"` if no row has a value.
    pub min: String,
    pub max: String,
    pub distinct_estimate: u64,
}

/// A table's statistics (see the module docs for what each figure means).
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    pub entries: u64,
    pub tombstones: u64,
    /// From the merged key sketches, minus the exact deleted-key count.
    pub estimated_live_keys: u64,
    /// Exact, from the scan.
    pub live_keys: u64,
    /// User keys whose newest version is a tombstone (exact).
    pub deleted_keys: u64,
    /// Sum of user key + value lengths of the live keys' newest versions.
    pub live_bytes: u64,
    /// Sum of the SST sizes.
    pub total_bytes: u64,
    /// Levels that have files, ascending.
    pub levels: Vec<LevelStats>,
    /// Smallest and largest user key of any entry (empty if there is none).
    pub smallest_key: Vec<u8>,
    pub largest_key: Vec<u8>,
    pub space_amplification: f64,
    /// Live values that are not JSON objects (only counted when columns are declared).
    pub non_object_rows: u64,
    /// In declaration order.
    pub columns: Vec<ColumnStatistics>,
}

impl Statistics {
    /// The contract's form. `write_amplification` is 0: the scheduler fills it in.
    pub fn into_proto(self, table: &str, computed_at_unix_ms: i64) -> pb::TableStatistics {
        pb::TableStatistics {
            table: table.to_owned(),
            entries: self.entries,
            tombstones: self.tombstones,
            estimated_live_keys: self.estimated_live_keys,
            levels: self
                .levels
                .into_iter()
                .map(|l| pb::LevelStats {
                    level: l.level,
                    files: l.files,
                    bytes: l.bytes,
                })
                .collect(),
            smallest_key: self.smallest_key,
            largest_key: self.largest_key,
            write_amplification: 0.0,
            space_amplification: self.space_amplification,
            columns: self
                .columns
                .into_iter()
                .map(|c| pb::ColumnStats {
                    name: c.name,
                    null_count: c.null_count,
                    min: c.min,
                    max: c.max,
                    distinct_estimate: c.distinct_estimate,
                })
                .collect(),
            computed_at_unix_ms,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------------------

/// Runs a StatisticsUpdate task: checks `spec`, reads every listed SST of the table from
/// `storage` (at [`paths::sst_file`], `size_bytes` from the spec) on a blocking thread, and
/// returns the statistics stamped with the current time. `write_amplification` is 0 (the
/// scheduler's to fill in).
pub async fn update_statistics(
    storage: &Storage,
    spec: &pb::StatisticsSpec,
    cancel: &CancellationToken,
) -> Result<pb::TableStatistics, StatsError> {
    let spec = StatsSpec::from_proto(spec)?;
    let stats = statistics_from_storage(storage, &spec, cancel).await?;
    tracing::info!(
        table = %spec.table,
        files = spec.files.len(),
        entries = stats.entries,
        live_keys = stats.live_keys,
        estimated_live_keys = stats.estimated_live_keys,
        non_object_rows = stats.non_object_rows,
        "statistics computed"
    );
    Ok(stats.into_proto(spec.table.as_str(), now_ms()))
}

/// The work of [`update_statistics`] on a checked spec, without the clock.
pub async fn statistics_from_storage(
    storage: &Storage,
    spec: &StatsSpec,
    cancel: &CancellationToken,
) -> Result<Statistics, StatsError> {
    if cancel.is_cancelled() {
        return Err(StatsError::Cancelled);
    }
    let handle = tokio::runtime::Handle::current();
    let storage = storage.clone();
    let spec = spec.clone();
    let cancel = cancel.clone();
    tokio::task::spawn_blocking(move || {
        let config = BlockingReaderConfig {
            readahead: readahead_for(spec.files.len()),
            prefetch: true,
        };
        let inputs = spec
            .files
            .iter()
            .map(|f| {
                let path = paths::sst_file(&spec.table, f.file_id);
                let name = path.to_string();
                let reader = storage.blocking_reader(handle.clone(), path, f.size_bytes, config);
                StatsInput {
                    level: f.level,
                    file_id: f.file_id,
                    name,
                    source: Box::new(ObjectSource::new(reader)),
                }
            })
            .collect();
        compute_statistics(inputs, &spec.columns, &|| cancel.is_cancelled())
    })
    .await
    .map_err(|e| StatsError::Internal(format!("statistics thread failed: {e}")))?
}

/// Read-ahead per window for a merge over `files` files: the budget shared by every file's
/// two windows (current and prefetched), within 64 KiB..=2 MiB.
fn readahead_for(files: usize) -> usize {
    (READAHEAD_BUDGET / files.max(1).saturating_mul(2)).clamp(MIN_READAHEAD, MAX_READAHEAD)
}

/// One SST to analyse.
pub struct StatsInput {
    pub level: u32,
    pub file_id: u64,
    /// Names the file in errors (the object path, in the service).
    pub name: String,
    pub source: Box<dyn SstSource>,
}

impl std::fmt::Debug for StatsInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsInput")
            .field("level", &self.level)
            .field("file_id", &self.file_id)
            .field("name", &self.name)
            .field("size", &self.source.size())
            .finish()
    }
}

/// Computes the statistics of the table made of `files` (blocking; see the module docs).
///
/// `files` should be in merge order (by level, L0 newest first); `cancel` is polled during
/// the scan. The caller opens the sources: `sst::Bytes` in memory, or
/// [`sst::ObjectSource`] over [`Storage::blocking_reader`] as [`update_statistics`] does.
pub fn compute_statistics(
    files: Vec<StatsInput>,
    columns: &[ColumnDef],
    cancel: &dyn Fn() -> bool,
) -> Result<Statistics, StatsError> {
    let mut readers = Vec::with_capacity(files.len());
    for f in files {
        if cancel() {
            return Err(StatsError::Cancelled);
        }
        let size = f.source.size();
        let reader =
            SstReader::open(f.source, f.name).map_err(|e| StatsError::from_sst(e, size))?;
        readers.push((f.level, reader));
    }
    let summary = summarize_properties(&readers);
    let scan = scan(&readers, columns, cancel)?;
    Ok(assemble(summary, scan))
}

// ---------------------------------------------------------------------------------------
// Properties: what the files say about themselves
// ---------------------------------------------------------------------------------------

struct PropertySummary {
    entries: u64,
    tombstones: u64,
    total_bytes: u64,
    levels: Vec<LevelStats>,
    smallest_key: Vec<u8>,
    largest_key: Vec<u8>,
    /// `None` if the files' sketches could not be merged.
    key_sketch: Option<Hll>,
}

fn summarize_properties(readers: &[(u32, SstReader)]) -> PropertySummary {
    let mut levels: BTreeMap<u32, LevelStats> = BTreeMap::new();
    let mut range: Option<(&[u8], &[u8])> = None;
    let (mut entries, mut tombstones, mut total_bytes) = (0u64, 0u64, 0u64);
    for (level, reader) in readers {
        let p = reader.properties();
        entries += p.entry_count;
        tombstones += p.tombstone_count;
        total_bytes += reader.size();
        let l = levels.entry(*level).or_insert(LevelStats {
            level: *level,
            files: 0,
            bytes: 0,
        });
        l.files += 1;
        l.bytes += reader.size();
        if p.entry_count > 0 {
            let (lo, hi) = (p.smallest_user_key(), p.largest_user_key());
            range = Some(match range {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
    }
    let (smallest_key, largest_key) =
        range.map_or((Vec::new(), Vec::new()), |(a, b)| (a.to_vec(), b.to_vec()));
    PropertySummary {
        entries,
        tombstones,
        total_bytes,
        levels: levels.into_values().collect(),
        smallest_key,
        largest_key,
        key_sketch: merged_key_sketch(readers),
    }
}

/// The union of the files' key sketches; `None` without files, or if two sketches have
/// different precisions (one writer never produces that) and cannot be merged.
fn merged_key_sketch(readers: &[(u32, SstReader)]) -> Option<Hll> {
    let mut files = readers.iter().map(|(_, r)| r);
    let mut union = files.next()?.properties().key_sketch.clone();
    for reader in files {
        if let Err(e) = union.merge(&reader.properties().key_sketch) {
            tracing::warn!(
                file = reader.file_name(),
                error = %e,
                "key sketches cannot be merged; reporting the exact live key count"
            );
            return None;
        }
    }
    Some(union)
}

// ---------------------------------------------------------------------------------------
// The scan: each user key's newest version
// ---------------------------------------------------------------------------------------

#[derive(Default)]
struct ScanTotals {
    live_keys: u64,
    deleted_keys: u64,
    live_bytes: u64,
    non_object_rows: u64,
    columns: Vec<ColumnStatistics>,
}

fn scan(
    readers: &[(u32, SstReader)],
    columns: &[ColumnDef],
    cancel: &dyn Fn() -> bool,
) -> Result<ScanTotals, StatsError> {
    let map_err = |e: BoxError| iter_error(e, readers);
    let sources: Vec<BoxedIterator> = readers
        .iter()
        .map(|(_, r)| Box::new(r.iter()) as BoxedIterator)
        .collect();
    let mut merge = MergingIterator::new(sources);
    merge.seek_to_first().map_err(map_err)?;

    let mut rows = RowStats::new(columns);
    let mut totals = ScanTotals::default();
    let mut current: Option<Vec<u8>> = None;
    let mut scanned = 0u64;
    while merge.valid() {
        scanned += 1;
        if scanned.is_multiple_of(CANCEL_CHECK_INTERVAL) && cancel() {
            return Err(StatsError::Cancelled);
        }
        let key = ParsedInternalKey::parse(merge.key()).map_err(|e| {
            let file = merge
                .current_source()
                .and_then(|i| readers.get(i))
                .map_or("?", |(_, r)| r.file_name());
            StatsError::Internal(format!("malformed internal key from sst {file}: {e}"))
        })?;
        // The first version of a user key in the merge is its newest.
        let newest = current.as_deref() != Some(key.user_key);
        if newest {
            let buf = current.get_or_insert_with(Vec::new);
            buf.clear();
            buf.extend_from_slice(key.user_key);
            match key.kind {
                ValueKind::Put => {
                    let value = merge.value();
                    totals.live_keys += 1;
                    totals.live_bytes += (key.user_key.len() + value.len()) as u64;
                    rows.add(key.user_key, value);
                }
                ValueKind::Delete => totals.deleted_keys += 1,
            }
        }
        merge.next().map_err(map_err)?;
    }
    totals.non_object_rows = rows.non_object_rows;
    totals.columns = rows.finish();
    Ok(totals)
}

/// Maps an error out of the merge: readers' errors carry their file name.
fn iter_error(e: BoxError, readers: &[(u32, SstReader)]) -> StatsError {
    match e.downcast::<SstError>() {
        Ok(err) => {
            let size = match &*err {
                SstError::BadMagic { file, .. } | SstError::UnsupportedVersion { file, .. } => {
                    readers
                        .iter()
                        .find(|(_, r)| r.file_name() == file)
                        .map_or(0, |(_, r)| r.size())
                }
                _ => 0,
            };
            StatsError::from_sst(*err, size)
        }
        Err(other) => StatsError::Internal(format!("reading ssts failed: {other}")),
    }
}

fn assemble(summary: PropertySummary, scan: ScanTotals) -> Statistics {
    let estimated_live_keys = match &summary.key_sketch {
        Some(sketch) => (sketch.estimate().round() as u64).saturating_sub(scan.deleted_keys),
        None => scan.live_keys,
    };
    let space_amplification = if scan.live_bytes == 0 {
        0.0
    } else {
        summary.total_bytes as f64 / scan.live_bytes as f64
    };
    Statistics {
        entries: summary.entries,
        tombstones: summary.tombstones,
        estimated_live_keys,
        live_keys: scan.live_keys,
        deleted_keys: scan.deleted_keys,
        live_bytes: scan.live_bytes,
        total_bytes: summary.total_bytes,
        levels: summary.levels,
        smallest_key: summary.smallest_key,
        largest_key: summary.largest_key,
        space_amplification,
        non_object_rows: scan.non_object_rows,
        columns: scan.columns,
    }
}

// ---------------------------------------------------------------------------------------
// Column statistics
// ---------------------------------------------------------------------------------------

/// Accumulates the column statistics of the live rows.
struct RowStats {
    columns: Vec<ColumnAcc>,
    non_object_rows: u64,
}

impl RowStats {
    fn new(defs: &[ColumnDef]) -> Self {
        Self {
            columns: defs.iter().map(ColumnAcc::new).collect(),
            non_object_rows: 0,
        }
    }

    fn add(&mut self, user_key: &[u8], value: &[u8]) {
        if self.columns.is_empty() {
            return;
        }
        match serde_json::from_slice::<Value>(value) {
            Ok(Value::Object(row)) => {
                for c in &mut self.columns {
                    c.add(row.get(&c.name));
                }
            }
            _ => {
                if self.non_object_rows == 0 {
                    tracing::debug!(
                        key = %String::from_utf8_lossy(user_key),
                        "value is not a JSON object: every column counted as null"
                    );
                }
                self.non_object_rows += 1;
                for c in &mut self.columns {
                    c.add(None);
                }
            }
        }
    }

    fn finish(self) -> Vec<ColumnStatistics> {
        self.columns.into_iter().map(ColumnAcc::finish).collect()
    }
}

/// `f64` under its total order, so floats can be a [`MinMax`].
#[derive(Debug, Clone, Copy)]
struct TotalF64(f64);

impl PartialEq for TotalF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for TotalF64 {}
impl PartialOrd for TotalF64 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TotalF64 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The smallest and largest value seen; clones a value only when it becomes one of them.
struct MinMax<T> {
    min: Option<T>,
    max: Option<T>,
}

impl<T> MinMax<T> {
    fn new() -> Self {
        Self {
            min: None,
            max: None,
        }
    }

    fn observe<Q>(&mut self, v: &Q)
    where
        Q: Ord + ToOwned<Owned = T> + ?Sized,
        T: Borrow<Q>,
    {
        if self.min.as_ref().is_none_or(|m| v < m.borrow()) {
            self.min = Some(v.to_owned());
        }
        if self.max.as_ref().is_none_or(|m| v > m.borrow()) {
            self.max = Some(v.to_owned());
        }
    }

    fn encoded(&self, encode: impl Fn(&T) -> String) -> (String, String) {
        let enc = |v: &Option<T>| v.as_ref().map_or_else(|| "null".to_owned(), &encode);
        (enc(&self.min), enc(&self.max))
    }
}

/// Extremes of a column, by declared type.
enum Extremes {
    Int(MinMax<i64>),
    Float(MinMax<TotalF64>),
    String(MinMax<String>),
    Bool(MinMax<bool>),
}

struct ColumnAcc {
    name: String,
    ty: ColumnType,
    nulls: u64,
    mismatches: u64,
    extremes: Extremes,
    distinct: Hll,
}

impl ColumnAcc {
    fn new(def: &ColumnDef) -> Self {
        let extremes = match def.ty {
            ColumnType::Int => Extremes::Int(MinMax::new()),
            ColumnType::Float => Extremes::Float(MinMax::new()),
            ColumnType::String => Extremes::String(MinMax::new()),
            ColumnType::Bool => Extremes::Bool(MinMax::new()),
        };
        Self {
            name: def.name.clone(),
            ty: def.ty,
            nulls: 0,
            mismatches: 0,
            extremes,
            distinct: new_column_sketch(),
        }
    }

    fn add(&mut self, value: Option<&Value>) {
        let Some(value) = value.filter(|v| !v.is_null()) else {
            self.nulls += 1;
            return;
        };
        let Some(encoded) = self.observe(value) else {
            if self.mismatches == 0 {
                tracing::debug!(
                    column = self.name,
                    declared = self.ty.as_str(),
                    value = %value,
                    "value of the wrong type counted as null"
                );
            }
            self.mismatches += 1;
            self.nulls += 1;
            return;
        };
        self.distinct.add(encoded.as_bytes());
    }

    /// Records a value of the declared type and returns its canonical JSON encoding; `None`
    /// for a value of another type.
    fn observe(&mut self, value: &Value) -> Option<String> {
        match (&mut self.extremes, value) {
            (Extremes::Int(r), Value::Number(n)) => {
                let i = n.as_i64()?;
                r.observe(&i);
                Some(encode_int(&i))
            }
            (Extremes::Float(r), Value::Number(n)) => {
                let f = TotalF64(n.as_f64()?);
                r.observe(&f);
                Some(encode_float(&f))
            }
            (Extremes::String(r), Value::String(s)) => {
                r.observe(s.as_str());
                Some(encode_string(s))
            }
            (Extremes::Bool(r), Value::Bool(b)) => {
                r.observe(b);
                Some(encode_bool(b))
            }
            _ => None,
        }
    }

    fn finish(self) -> ColumnStatistics {
        let (min, max) = match &self.extremes {
            Extremes::Int(r) => r.encoded(encode_int),
            Extremes::Float(r) => r.encoded(encode_float),
            Extremes::String(r) => r.encoded(|s| encode_string(s)),
            Extremes::Bool(r) => r.encoded(encode_bool),
        };
        ColumnStatistics {
            name: self.name,
            null_count: self.nulls,
            type_mismatches: self.mismatches,
            min,
            max,
            distinct_estimate: self.distinct.estimate().round() as u64,
        }
    }
}

fn new_column_sketch() -> Hll {
    // The precision is a constant within 4..=18.
    Hll::new(COLUMN_SKETCH_PRECISION).unwrap_or_default()
}

fn encode_int(i: &i64) -> String {
    i.to_string()
}

fn encode_float(f: &TotalF64) -> String {
    // JSON has no NaN or infinities, so a parsed value always has a number form.
    serde_json::Number::from_f64(f.0).map_or_else(|| "null".to_owned(), |n| n.to_string())
}

fn encode_string(s: &str) -> String {
    Value::from(s).to_string()
}

fn encode_bool(b: &bool) -> String {
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::key::encode_internal_key;
    use sst::{Bytes, SstBuilder, SstOptions};

    // ---- fixtures ----

    /// An SST of `(user key, seq, value or tombstone)` entries, sorted here.
    fn sst(entries: &[(&str, u64, Option<&str>)]) -> Bytes {
        let mut sorted: Vec<_> = entries.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
        let mut b = SstBuilder::new("test.sst", Vec::new(), SstOptions::default()).expect("opts");
        let mut key = Vec::new();
        for (k, seq, v) in sorted {
            key.clear();
            let kind = if v.is_some() {
                ValueKind::Put
            } else {
                ValueKind::Delete
            };
            encode_internal_key(k.as_bytes(), seq, kind, &mut key);
            b.add(&key, v.unwrap_or("").as_bytes()).expect("add");
        }
        let (_, out) = b.finish_into_inner().expect("finish");
        Bytes::from(out)
    }

    fn input(level: u32, file_id: u64, bytes: Bytes) -> StatsInput {
        StatsInput {
            level,
            file_id,
            name: format!("file-{file_id}"),
            source: Box::new(bytes),
        }
    }

    fn never() -> bool {
        false
    }

    fn column<'a>(s: &'a Statistics, name: &str) -> &'a ColumnStatistics {
        s.columns.iter().find(|c| c.name == name).expect("column")
    }

    // ---- the scan ----

    #[test]
    fn newest_version_wins_across_levels() {
        let l0 = sst(&[("a", 10, None), ("b", 11, Some("B2")), ("e", 12, Some("E"))]);
        let l1 = sst(&[("a", 1, Some("A")), ("b", 2, Some("B")), ("c", 3, None)]);
        let l2 = sst(&[("c", 0, Some("C")), ("d", 0, Some("DD"))]);
        let sizes = [l0.len(), l1.len(), l2.len()].map(|n| n as u64);
        let files = vec![input(0, 3, l0), input(1, 2, l1), input(2, 1, l2)];
        let s = compute_statistics(files, &[], &never).expect("stats");
        assert_eq!((s.entries, s.tombstones), (8, 2));
        // Live: b=B2, d=DD, e=E. Deleted: a, c.
        assert_eq!((s.live_keys, s.deleted_keys), (3, 2));
        assert_eq!(s.live_bytes, (1 + 2) + (1 + 2) + (1 + 1));
        assert_eq!(s.estimated_live_keys, 3);
        assert_eq!(s.total_bytes, sizes.iter().sum::<u64>());
        assert_eq!(
            s.space_amplification,
            s.total_bytes as f64 / s.live_bytes as f64
        );
        assert_eq!(
            s.levels,
            vec![
                LevelStats {
                    level: 0,
                    files: 1,
                    bytes: sizes[0]
                },
                LevelStats {
                    level: 1,
                    files: 1,
                    bytes: sizes[1]
                },
                LevelStats {
                    level: 2,
                    files: 1,
                    bytes: sizes[2]
                },
            ]
        );
        assert_eq!(
            (&s.smallest_key[..], &s.largest_key[..]),
            (&b"a"[..], &b"e"[..])
        );
        assert!(s.columns.is_empty());
    }

    #[test]
    fn no_files_no_statistics() {
        let s = compute_statistics(Vec::new(), &[ColumnDef::new("x", ColumnType::Int)], &never)
            .expect("stats");
        assert_eq!((s.entries, s.live_keys, s.estimated_live_keys), (0, 0, 0));
        assert_eq!(s.space_amplification, 0.0);
        assert!(s.levels.is_empty() && s.smallest_key.is_empty());
        let c = column(&s, "x");
        assert_eq!(
            (c.null_count, c.min.as_str(), c.max.as_str()),
            (0, "null", "null")
        );
        assert_eq!(c.distinct_estimate, 0);
    }

    #[test]
    fn everything_deleted() {
        let files = vec![
            input(0, 2, sst(&[("a", 5, None)])),
            input(1, 1, sst(&[("a", 1, Some("x"))])),
        ];
        let s = compute_statistics(files, &[], &never).expect("stats");
        assert_eq!(
            (s.live_keys, s.deleted_keys, s.estimated_live_keys),
            (0, 1, 0)
        );
        assert_eq!((s.live_bytes, s.space_amplification), (0, 0.0));
    }

    #[test]
    fn cancelled_before_or_during_the_scan() {
        let files = vec![input(0, 1, sst(&[("a", 1, Some("x"))]))];
        let err = compute_statistics(files, &[], &|| true).expect_err("cancelled");
        assert!(matches!(err, StatsError::Cancelled), "{err:?}");

        let entries: Vec<(String, u64, Option<&str>)> = (0..3 * CANCEL_CHECK_INTERVAL)
            .map(|i| (format!("k{i:06}"), i, Some("v")))
            .collect();
        let refs: Vec<(&str, u64, Option<&str>)> = entries
            .iter()
            .map(|(k, s, v)| (k.as_str(), *s, *v))
            .collect();
        let calls = std::cell::Cell::new(0);
        // Not cancelled while opening (1 call), cancelled at the first check in the scan.
        let cancel = || {
            calls.set(calls.get() + 1);
            calls.get() > 1
        };
        let err =
            compute_statistics(vec![input(0, 1, sst(&refs))], &[], &cancel).expect_err("cancelled");
        assert!(matches!(err, StatsError::Cancelled), "{err:?}");
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn corrupt_files_name_file_and_offset() {
        let good = sst(&[("a", 1, Some("x")), ("b", 2, Some("y"))]);
        // Not an SST at all: the magic (last 8 bytes) is wrong.
        let junk = Bytes::from(vec![7u8; 100]);
        let err = compute_statistics(vec![input(0, 9, junk)], &[], &never).expect_err("junk");
        assert!(
            matches!(&err, StatsError::Corrupt { file, offset: 92, .. } if file == "file-9"),
            "{err:?}"
        );
        assert_eq!(err.kind(), pb::ErrorKind::Corruption);

        // A flipped byte in the first data block: found by the scan.
        let mut damaged = good.to_vec();
        damaged[2] ^= 0xff;
        let err = compute_statistics(vec![input(0, 4, Bytes::from(damaged))], &[], &never)
            .expect_err("damaged");
        assert!(
            matches!(&err, StatsError::Corrupt { file, offset: 0, .. } if file == "file-4"),
            "{err:?}"
        );
        assert_eq!((err.file(), err.offset()), (Some("file-4"), Some(0)));
        assert!(
            err.to_string().contains("corrupt sst file-4 at offset 0"),
            "{err}"
        );
    }

    // ---- columns ----

    fn columns() -> Vec<ColumnDef> {
        vec![
            ColumnDef::new("i", ColumnType::Int),
            ColumnDef::new("f", ColumnType::Float),
            ColumnDef::new("s", ColumnType::String),
            ColumnDef::new("b", ColumnType::Bool),
        ]
    }

    fn row_stats(values: &[&str]) -> (Vec<ColumnStatistics>, u64) {
        let mut rows = RowStats::new(&columns());
        for v in values {
            rows.add(b"k", v.as_bytes());
        }
        let non_object = rows.non_object_rows;
        (rows.finish(), non_object)
    }

    fn summary(c: &ColumnStatistics) -> (u64, &str, &str, u64) {
        (
            c.null_count,
            c.min.as_str(),
            c.max.as_str(),
            c.distinct_estimate,
        )
    }

    #[test]
    fn typed_min_max_nulls_and_distinct() {
        let (cols, non_object) = row_stats(&[
            r#"{"i": 5, "f": 2.5, "s": "b", "b": true}"#,
            r#"{"i": -3, "f": -1, "s": "abc", "b": false}"#,
            r#"{"i": 5, "f": 1e3, "s": "é", "b": true}"#,
            r#"{"i": null, "s": "", "extra": [1, 2]}"#,
            r#"{"i": 9007199254740993, "f": 3, "s": "b"}"#,
        ]);
        assert_eq!(non_object, 0);
        assert_eq!(summary(&cols[0]), (1, "-3", "9007199254740993", 3));
        assert_eq!(summary(&cols[1]), (1, "-1.0", "1000.0", 4));
        // Strings by bytes: "" < "abc" < "b" < "é" (0xc3 0xa9).
        assert_eq!(summary(&cols[2]), (0, "\"\"", "\"é\"", 4));
        assert_eq!(summary(&cols[3]), (2, "false", "true", 2));
        assert!(cols.iter().all(|c| c.type_mismatches == 0));
    }

    #[test]
    fn wrong_types_count_as_null() {
        let (cols, _) = row_stats(&[
            r#"{"i": "5", "f": "x", "s": 5, "b": 1}"#,
            r#"{"i": 1.5, "f": true, "s": ["a"], "b": "true"}"#,
            r#"{"i": 18446744073709551615, "f": {}, "s": {}, "b": null}"#,
            r#"{"i": 7, "f": 0.5, "s": "ok", "b": false}"#,
        ]);
        assert_eq!(summary(&cols[0]), (3, "7", "7", 1));
        assert_eq!(cols[0].type_mismatches, 3);
        assert_eq!(summary(&cols[1]), (3, "0.5", "0.5", 1));
        assert_eq!(summary(&cols[2]), (3, "\"ok\"", "\"ok\"", 1));
        assert_eq!(summary(&cols[3]), (3, "false", "false", 1));
        assert_eq!(cols[3].type_mismatches, 2); // the null is a null, not a mismatch
    }

    #[test]
    fn non_objects_make_every_column_null() {
        let (cols, non_object) = row_stats(&["not json", "[1,2]", "42", "\"s\"", "", "null"]);
        assert_eq!(non_object, 6);
        for c in &cols {
            assert_eq!(summary(c), (6, "null", "null", 0), "{}", c.name);
            assert_eq!(c.type_mismatches, 0);
        }
    }

    #[test]
    fn float_total_order_and_canonical_encoding() {
        let (cols, _) = row_stats(&[
            r#"{"f": 0}"#,
            r#"{"f": 0.0}"#,
            r#"{"f": -0.0}"#,
            r#"{"f": 1e-300}"#,
        ]);
        // 0 and 0.0 are one value; -0.0 sorts below 0.0 in the total order.
        assert_eq!(summary(&cols[1]), (0, "-0.0", "1e-300", 3));
    }

    #[test]
    fn string_encoding_escapes() {
        let (cols, _) = row_stats(&[r#"{"s": "a\"b\\c\n"}"#]);
        assert_eq!(cols[2].min, r#""a\"b\\c\n""#);
        let back: String = serde_json::from_str(&cols[2].min).expect("valid JSON");
        assert_eq!(back, "a\"b\\c\n");
    }

    #[test]
    fn only_live_rows_count() {
        let l0 = sst(&[("a", 9, Some(r#"{"i": 100}"#)), ("b", 8, None)]);
        let l1 = sst(&[
            ("a", 1, Some(r#"{"i": -100}"#)),
            ("b", 2, Some(r#"{"i": 1000}"#)),
            ("c", 3, Some(r#"{"i": 1}"#)),
        ]);
        let files = vec![input(0, 2, l0), input(1, 1, l1)];
        let s = compute_statistics(files, &[ColumnDef::new("i", ColumnType::Int)], &never)
            .expect("stats");
        assert_eq!(summary(&s.columns[0]), (0, "1", "100", 2));
    }

    // ---- the spec ----

    fn file(file_id: u64, size_bytes: u64) -> pb::FileMeta {
        pb::FileMeta {
            file_id,
            size_bytes,
            ..Default::default()
        }
    }

    fn pb_spec() -> pb::StatisticsSpec {
        pb::StatisticsSpec {
            table: "users".into(),
            levels: vec![
                pb::Level {
                    level: 2,
                    files: vec![file(1, 100)],
                },
                pb::Level {
                    level: 0,
                    files: vec![file(5, 100), file(4, 100)],
                },
            ],
            columns: vec![pb::ColumnDef {
                name: "age".into(),
                r#type: "int".into(),
            }],
        }
    }

    #[test]
    fn spec_is_checked_and_ordered() {
        let spec = StatsSpec::from_proto(&pb_spec()).expect("valid");
        assert_eq!(spec.table.as_str(), "users");
        let order: Vec<_> = spec.files.iter().map(|f| (f.level, f.file_id)).collect();
        assert_eq!(order, vec![(0, 5), (0, 4), (2, 1)]);
        assert_eq!(spec.columns, vec![ColumnDef::new("age", ColumnType::Int)]);
    }

    type Mutation = Box<dyn Fn(&mut pb::StatisticsSpec)>;

    #[test]
    fn bad_specs_are_refused() {
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.table = String::new()), "table"),
            (Box::new(|s| s.table = "a/b".into()), "table"),
            (
                Box::new(|s| s.levels[0].files.push(file(5, 100))),
                "listed twice",
            ),
            (
                Box::new(|s| s.levels[0].files[0].size_bytes = 10),
                "less than an sst footer",
            ),
            (
                Box::new(|s| s.columns[0].r#type = "INT".into()),
                "expected int, float",
            ),
            (Box::new(|s| s.columns[0].name = String::new()), "no name"),
            (
                Box::new(|s| s.columns.push(s.columns[0].clone())),
                "declared twice",
            ),
        ];
        for (mutate, needle) in cases {
            let mut s = pb_spec();
            mutate(&mut s);
            let err = StatsSpec::from_proto(&s).expect_err(needle);
            assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
            assert_eq!(err.kind(), pb::ErrorKind::InvalidArgument);
            assert!(!err.retriable());
        }
    }

    // ---- error mapping ----

    #[test]
    fn every_error_has_a_kind() {
        let not_found = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let cases = [
            (
                StatsError::invalid("table", "bad"),
                pb::ErrorKind::InvalidArgument,
                false,
                None,
            ),
            (
                StatsError::Corrupt {
                    file: "f".into(),
                    offset: 3,
                    reason: "crc".into(),
                },
                pb::ErrorKind::Corruption,
                false,
                Some("f"),
            ),
            (
                StatsError::Storage {
                    file: "f".into(),
                    source: not_found,
                },
                pb::ErrorKind::NotFound,
                true,
                Some("f"),
            ),
            (
                StatsError::Storage {
                    file: "f".into(),
                    source: std::io::Error::other("timeout"),
                },
                pb::ErrorKind::Internal,
                true,
                Some("f"),
            ),
            (
                StatsError::Internal("panic".into()),
                pb::ErrorKind::Internal,
                true,
                None,
            ),
            (StatsError::Cancelled, pb::ErrorKind::Cancelled, true, None),
        ];
        for (err, kind, retriable, file) in cases {
            assert_eq!(err.kind(), kind, "{err}");
            assert_eq!(err.retriable(), retriable, "{err}");
            assert_eq!(err.file(), file, "{err}");
        }
    }

    #[test]
    fn sst_errors_map_to_corruption_or_storage() {
        let e = StatsError::from_sst(
            SstError::UnsupportedVersion {
                file: "f".into(),
                version: 9,
            },
            1000,
        );
        assert!(
            matches!(e, StatsError::Corrupt { offset: 984, .. }),
            "{e:?}"
        );
        let e = StatsError::from_sst(
            SstError::Io {
                file: "f".into(),
                source: std::io::Error::other("x"),
            },
            1000,
        );
        assert!(matches!(e, StatsError::Storage { .. }), "{e:?}");
        let e = StatsError::from_sst(SstError::InvalidOptions("x".into()), 0);
        assert!(matches!(e, StatsError::Internal(_)), "{e:?}");
    }

    #[test]
    fn readahead_shrinks_with_many_files() {
        assert_eq!(readahead_for(0), MAX_READAHEAD);
        assert_eq!(readahead_for(1), MAX_READAHEAD);
        assert_eq!(readahead_for(64), MAX_READAHEAD);
        assert_eq!(readahead_for(1024), 128 * 1024);
        assert_eq!(readahead_for(1_000_000), MIN_READAHEAD);
    }
}
