//! Manual compactions (`storage-admin compact --force`, Admin.TriggerCompaction): which
//! files a request names. Pure: a version in, a spec out.
//!
//! - no level: a full compaction — every file of every level into the last non-empty
//!   level (at least L1), bottommost, as RocksDB's `CompactRange` over the whole key space;
//! - level L: L's files overlapping the key range, plus the files of L+1 overlapping those,
//!   into L+1 (the last level compacts into itself).
//!
//! Locked files are not filtered out here: submitting the spec refuses the overlap with a
//! LockError, which is what an operator asking for those files should see. A request that
//! would read a quarantined file is refused here, naming it.

use bytes::Bytes;
use catalog::TaskSpec;
use lsm::manifest::FileMeta;

use crate::core::{Core, CoreError};

fn key_range(files: &[FileMeta]) -> Option<(Bytes, Bytes)> {
    let lo = files.iter().map(|f| f.smallest.clone()).min()?;
    let hi = files.iter().map(|f| f.largest.clone()).max()?;
    Some((lo, hi))
}

fn in_range(f: &FileMeta, start: &[u8], end: &[u8]) -> bool {
    // [start, end) with empty bounds meaning unbounded.
    (end.is_empty() || f.smallest.as_ref() < end)
        && (start.is_empty() || f.largest.as_ref() >= start)
}

/// The compaction an operator asked for, or `None` when there is nothing to compact.
pub fn manual_compaction(
    core: &Core,
    table: &str,
    level: Option<u32>,
    start: &[u8],
    end: &[u8],
    target_file_size: u64,
    force: bool,
) -> Result<Option<TaskSpec>, CoreError> {
    let m = core
        .manifest(table)
        .ok_or_else(|| CoreError::TableNotFound(table.to_owned()))?;
    let levels = &m.levels.levels;
    let last = levels.len().saturating_sub(1) as u32;
    if let Some(l) = level
        && l > last
    {
        return Err(CoreError::Invalid(format!(
            "level {l} does not exist (table {table} has levels 0..={last})"
        )));
    }
    if level.is_none() && !force {
        // Without force the pickers decide; they run on every tick.
        return Ok(None);
    }
    let (inputs, output_level): (Vec<(u32, Vec<FileMeta>)>, u32) = match level {
        None => {
            let deepest = levels
                .iter()
                .rposition(|files| !files.is_empty())
                .unwrap_or(0)
                .max(1) as u32;
            let inputs = levels
                .iter()
                .enumerate()
                .map(|(l, files)| {
                    (
                        l as u32,
                        files
                            .iter()
                            .filter(|f| in_range(f, start, end))
                            .cloned()
                            .collect::<Vec<_>>(),
                    )
                })
                .filter(|(_, files)| !files.is_empty())
                .collect();
            (inputs, deepest)
        }
        Some(l) => {
            let chosen: Vec<FileMeta> = levels
                .get(l as usize)
                .map(|files| {
                    files
                        .iter()
                        .filter(|f| in_range(f, start, end))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            let output = (l + 1).min(last);
            let mut inputs = vec![(l, chosen.clone())];
            if output != l
                && let Some((lo, hi)) = key_range(&chosen)
            {
                let next: Vec<FileMeta> = m
                    .levels
                    .overlapping(output as usize, &lo, &hi)
                    .into_iter()
                    .cloned()
                    .collect();
                if !next.is_empty() {
                    inputs.push((output, next));
                }
            }
            (inputs, output)
        }
    };
    let all: Vec<FileMeta> = inputs.iter().flat_map(|(_, f)| f.iter().cloned()).collect();
    let Some((lo, hi)) = key_range(&all) else {
        return Ok(None);
    };
    // A quarantined file would fail the compaction again (and leaving it out of a deeper
    // level would overlap it): refused, as a locked file is.
    let poisoned: Vec<String> = core
        .quarantined()
        .filter(|q| q.table == table && all.iter().any(|f| f.id == q.file_id))
        .map(|q| format!("file {} (L{})", q.file_id, q.level))
        .collect();
    if !poisoned.is_empty() {
        return Err(CoreError::Refused(format!(
            "table {table}: the compaction would read quarantined {}; replace or check it and run `storage-admin processor release-quarantined`, or compact a level or key range without it",
            poisoned.join(", ")
        )));
    }
    let bottommost = ((output_level as usize + 1)..levels.len())
        .all(|l| m.levels.overlapping(l, &lo, &hi).is_empty());
    Ok(Some(TaskSpec::Compaction {
        table: table.to_owned(),
        inputs,
        output_level,
        bottommost,
        target_file_size,
        trivial_move: false,
        reason: match level {
            None => "manual full compaction".to_owned(),
            Some(l) => format!("manual compaction of L{l}"),
        },
        wal_inputs: Vec::new(),
    }))
}
