//! The gRPC edge of a dispatch: a `CompactLevelRequest` checked and turned into a
//! [`CompactionAttempt`], so nothing past this module sees protobuf types or unchecked input.

pub use runtime::worker::InvalidRequest;
use runtime::worker::invalid;
use std::collections::BTreeSet;

use bytes::Bytes;
use lsm::compaction::CompactionPlan;
use lsm::manifest::FileMeta;
use proto::v1 as pb;
use storage::{ObjectPath, TableName};

/// What one compaction should do: merge the `inputs` of `table` into new files of
/// `output_level`, named by `output_file_ids` in order.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionSpec {
    pub table: TableName,
    /// Input files by level, shallowest level first; L0 files newest first, deeper levels in
    /// key order (as the manifest lists them).
    pub inputs: Vec<(u32, Vec<FileMeta>)>,
    pub output_level: u32,
    /// Nothing older than the inputs exists for their key range: tombstones that hide
    /// nothing are dropped.
    pub bottommost: bool,
    /// Outputs are cut at this size, on user-key boundaries (`u64::MAX`: one output).
    pub target_file_size: u64,
    /// Ids the catalog allocated for this attempt's outputs, used in order, never reused.
    pub output_file_ids: Vec<u64>,
    /// IO budget of the attempt in bytes per second; 0: the worker's configured limit.
    pub io_bytes_per_sec: u64,
    /// Why the picker chose this compaction (for logs and error messages).
    pub reason: String,
    /// Threads the attempt may use (at least 1; the worker caps it at its `worker_count`).
    pub max_subcompactions: u32,
    /// The largest user key of every file of the level below the output level that the
    /// inputs overlap (the *grandparents*), ascending. An output at least half the target
    /// size is cut where the next key crosses one of these, so outputs line up with the
    /// files their next compaction will meet (RocksDB's
    /// `level_compaction_dynamic_file_size`). Empty: cut on size alone.
    pub grandparent_bounds: Vec<Vec<u8>>,
}

impl CompactionSpec {
    /// The spec of a picker's plan, as the scheduler would dispatch it (one thread, the
    /// worker's IO limit). For tests, simulations and benchmarks that run the pickers.
    pub fn from_plan(table: TableName, plan: &CompactionPlan, output_file_ids: Vec<u64>) -> Self {
        Self {
            table,
            inputs: plan.inputs.clone(),
            output_level: plan.output_level,
            bottommost: plan.bottommost,
            target_file_size: plan.target_file_size,
            output_file_ids,
            io_bytes_per_sec: 0,
            reason: plan.reason.clone(),
            max_subcompactions: 1,
            grandparent_bounds: Vec::new(),
        }
    }

    /// Every input file with its level, in spec order.
    pub fn input_files(&self) -> impl Iterator<Item = (u32, &FileMeta)> {
        self.inputs
            .iter()
            .flat_map(|(l, files)| files.iter().map(move |f| (*l, f)))
    }

    /// Bytes of every input file.
    pub fn input_bytes(&self) -> u64 {
        self.input_files().map(|(_, f)| f.size).sum()
    }

    pub fn input_count(&self) -> usize {
        self.inputs.iter().map(|(_, files)| files.len()).sum()
    }

    /// Where the SST `file_id` of this table is stored.
    pub fn sst_path(&self, file_id: u64) -> ObjectPath {
        storage::paths::sst_file(&self.table, file_id)
    }

    /// `"L0 [7, 9] + L1 [3] -> L1"`, for logs and error messages.
    pub fn describe(&self) -> String {
        let inputs: Vec<String> = self
            .inputs
            .iter()
            .map(|(l, files)| {
                let ids: Vec<String> = files.iter().map(|f| f.id.to_string()).collect();
                format!("L{l} [{}]", ids.join(", "))
            })
            .collect();
        format!("{} -> L{}", inputs.join(" + "), self.output_level)
    }
}

/// One running try of a Compaction task.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactionAttempt {
    pub task_id: u64,
    pub attempt: u32,
    pub spec: CompactionSpec,
    /// WAL segments of the table (first seqs) merged in as one more input: the repair of
    /// released quarantined segments (see [`crate::wal_input`]).
    pub wal_inputs: Vec<u64>,
}

/// Checks a dispatch and converts it.
pub fn parse_compact_request(
    req: pb::CompactLevelRequest,
) -> Result<CompactionAttempt, InvalidRequest> {
    let dispatch = req
        .dispatch
        .ok_or_else(|| invalid("dispatch", "required"))?;
    let spec = req.spec.ok_or_else(|| invalid("spec", "required"))?;
    let wal_inputs = spec.wal_inputs.clone();
    if wal_inputs.len() > 1024 {
        return Err(invalid(
            "spec.wal_inputs",
            format!("{} segments; at most 1024", wal_inputs.len()),
        ));
    }
    if wal_inputs.contains(&0) {
        return Err(invalid("spec.wal_inputs", "seq 0 names no segment"));
    }
    let spec = parse_spec(spec)?;
    if spec.output_file_ids.len() <= wal_inputs.len() {
        return Err(invalid(
            "spec.output_file_ids",
            format!(
                "{} ids for {} wal inputs: each needs one, and the outputs at least one more",
                spec.output_file_ids.len(),
                wal_inputs.len()
            ),
        ));
    }
    Ok(CompactionAttempt {
        task_id: dispatch.task_id,
        attempt: dispatch.attempt,
        spec,
        wal_inputs,
    })
}

fn parse_spec(spec: pb::CompactionSpec) -> Result<CompactionSpec, InvalidRequest> {
    if spec.table.is_empty() {
        return Err(invalid("spec.table", "required"));
    }
    let table = TableName::new(spec.table).map_err(|e| invalid("spec.table", e.to_string()))?;
    if spec.trivial_move {
        return Err(invalid(
            "spec.trivial_move",
            "a trivial move re-levels files in the manifest and is never dispatched to a worker",
        ));
    }
    let inputs = parse_inputs(spec.inputs, spec.output_level, !spec.wal_inputs.is_empty())?;
    if spec.output_file_ids.is_empty() {
        return Err(invalid(
            "spec.output_file_ids",
            "at least one file id is required",
        ));
    }
    let mut ids = BTreeSet::new();
    for id in &spec.output_file_ids {
        if !ids.insert(*id) {
            return Err(invalid(
                "spec.output_file_ids",
                format!("file id {id} is listed twice"),
            ));
        }
        if inputs.iter().flat_map(|(_, f)| f).any(|f| f.id == *id) {
            return Err(invalid(
                "spec.output_file_ids",
                format!("file id {id} is also an input"),
            ));
        }
    }
    if spec.target_file_size == 0 {
        return Err(invalid("spec.target_file_size", "must be positive"));
    }
    let grandparent_bounds = spec.grandparent_bounds;
    if let Some(i) = grandparent_bounds.windows(2).position(|w| w[0] > w[1]) {
        return Err(invalid(
            "spec.grandparent_bounds",
            format!("not ascending: bound {} sorts after bound {}", i, i + 1),
        ));
    }
    Ok(CompactionSpec {
        table,
        inputs,
        output_level: spec.output_level,
        bottommost: spec.bottommost,
        target_file_size: spec.target_file_size,
        output_file_ids: spec.output_file_ids,
        io_bytes_per_sec: spec.io_bytes_per_sec,
        reason: spec.reason,
        // 0 is what an older scheduler sends: one thread.
        max_subcompactions: spec.max_subcompactions.max(1),
        grandparent_bounds,
    })
}

fn parse_inputs(
    levels: Vec<pb::Level>,
    output_level: u32,
    wal_inputs: bool,
) -> Result<Vec<(u32, Vec<FileMeta>)>, InvalidRequest> {
    let mut seen = BTreeSet::new();
    let mut inputs = Vec::with_capacity(levels.len());
    for level in levels {
        if level.level > output_level {
            return Err(invalid(
                "spec.inputs",
                format!(
                    "input level {} is below the output level {output_level}",
                    level.level
                ),
            ));
        }
        let mut files = Vec::with_capacity(level.files.len());
        for f in level.files {
            if !seen.insert(f.file_id) {
                return Err(invalid(
                    "spec.inputs",
                    format!("file {} is listed twice", f.file_id),
                ));
            }
            if f.smallest_key > f.largest_key {
                return Err(invalid(
                    "spec.inputs",
                    format!("file {}: smallest_key sorts after largest_key", f.file_id),
                ));
            }
            files.push(file_meta(f));
        }
        if !files.is_empty() {
            inputs.push((level.level, files));
        }
    }
    // A repair of a table without files merges its WAL inputs alone.
    if inputs.is_empty() && !wal_inputs {
        return Err(invalid(
            "spec.inputs",
            "at least one input file is required",
        ));
    }
    Ok(inputs)
}

/// The manifest's record of an input file.
fn file_meta(f: pb::FileMeta) -> FileMeta {
    FileMeta {
        id: f.file_id,
        size: f.size_bytes,
        smallest: Bytes::from(f.smallest_key),
        largest: Bytes::from(f.largest_key),
        smallest_seq: f.smallest_seq,
        largest_seq: f.largest_seq,
        entries: f.entry_count,
        tombstones: f.tombstone_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pb_file(id: u64, a: &str, b: &str) -> pb::FileMeta {
        pb::FileMeta {
            file_id: id,
            size_bytes: 1000 + id,
            smallest_key: a.as_bytes().to_vec(),
            largest_key: b.as_bytes().to_vec(),
            smallest_seq: 1,
            largest_seq: 10 + id,
            entry_count: 5,
            tombstone_count: 1,
        }
    }

    fn valid() -> pb::CompactLevelRequest {
        pb::CompactLevelRequest {
            dispatch: Some(pb::DispatchRequest {
                task_id: 7,
                attempt: 2,
            }),
            spec: Some(pb::CompactionSpec {
                table: "users".to_owned(),
                input_levels: vec![0, 1],
                inputs: vec![
                    pb::Level {
                        level: 0,
                        files: vec![pb_file(5, "b", "x"), pb_file(4, "a", "c")],
                    },
                    pb::Level {
                        level: 1,
                        files: vec![pb_file(2, "a", "m"), pb_file(3, "n", "z")],
                    },
                ],
                output_level: 1,
                bottommost: true,
                target_file_size: 1 << 20,
                trivial_move: false,
                output_file_ids: vec![40, 41, 42],
                io_bytes_per_sec: 0,
                reason: "L0 has 4 files >= trigger 4".to_owned(),
                max_subcompactions: 0,
                wal_inputs: vec![],
                grandparent_bounds: vec![],
            }),
        }
    }

    fn with_spec(f: impl FnOnce(&mut pb::CompactionSpec)) -> pb::CompactLevelRequest {
        let mut req = valid();
        if let Some(spec) = req.spec.as_mut() {
            f(spec);
        }
        req
    }

    #[test]
    fn a_valid_request_becomes_an_attempt() {
        let a = parse_compact_request(valid()).expect("valid");
        assert_eq!((a.task_id, a.attempt), (7, 2));
        let s = &a.spec;
        assert_eq!(s.table.as_str(), "users");
        assert_eq!(s.inputs.len(), 2);
        assert_eq!(s.input_count(), 4);
        assert_eq!(s.input_bytes(), 1005 + 1004 + 1002 + 1003);
        assert_eq!(s.inputs[0].1[0].id, 5);
        assert_eq!(&s.inputs[1].1[1].smallest[..], b"n");
        assert_eq!((s.output_level, s.bottommost), (1, true));
        assert_eq!(s.output_file_ids, [40, 41, 42]);
        assert_eq!(s.max_subcompactions, 1, "0 means one thread");
        assert_eq!(
            s.sst_path(40).as_ref(),
            "tables/users/sst/00000000000000000040.sst"
        );
        assert_eq!(s.describe(), "L0 [5, 4] + L1 [2, 3] -> L1");
        assert!(s.grandparent_bounds.is_empty() && a.wal_inputs.is_empty());
        let bounds = vec![b"c".to_vec(), b"m".to_vec()];
        let a = parse_compact_request(with_spec(|s| s.grandparent_bounds = bounds.clone()))
            .expect("valid");
        assert_eq!(a.spec.grandparent_bounds, bounds);
    }

    #[test]
    fn empty_levels_are_dropped_but_some_input_is_required() {
        let req = with_spec(|s| s.inputs.push(pb::Level::default()));
        assert_eq!(
            parse_compact_request(req).expect("valid").spec.inputs.len(),
            2
        );
        let req = with_spec(|s| {
            for l in &mut s.inputs {
                l.files.clear();
            }
        });
        let err = parse_compact_request(req).expect_err("no inputs");
        assert_eq!(err.field, "spec.inputs");
    }

    #[test]
    fn invalid_arguments_name_the_field() {
        let cases: Vec<(&str, pb::CompactLevelRequest)> = vec![
            (
                "dispatch",
                pb::CompactLevelRequest {
                    dispatch: None,
                    ..valid()
                },
            ),
            (
                "spec",
                pb::CompactLevelRequest {
                    spec: None,
                    ..valid()
                },
            ),
            ("spec.table", with_spec(|s| s.table.clear())),
            ("spec.table", with_spec(|s| s.table = "a/b".to_owned())),
            ("spec.trivial_move", with_spec(|s| s.trivial_move = true)),
            ("spec.inputs", with_spec(|s| s.inputs.clear())),
            ("spec.inputs", with_spec(|s| s.output_level = 0)),
            (
                "spec.inputs",
                with_spec(|s| s.inputs[1].files.push(pb_file(5, "y", "z"))),
            ),
            (
                "spec.inputs",
                with_spec(|s| s.inputs[0].files.push(pb_file(9, "z", "a"))),
            ),
            (
                "spec.output_file_ids",
                with_spec(|s| s.output_file_ids.clear()),
            ),
            (
                "spec.output_file_ids",
                with_spec(|s| s.output_file_ids = vec![40, 40]),
            ),
            (
                "spec.output_file_ids",
                with_spec(|s| s.output_file_ids = vec![40, 3]),
            ),
            (
                "spec.grandparent_bounds",
                with_spec(|s| s.grandparent_bounds = vec![b"m".to_vec(), b"c".to_vec()]),
            ),
            ("spec.wal_inputs", with_spec(|s| s.wal_inputs = vec![0])),
            (
                "spec.target_file_size",
                with_spec(|s| s.target_file_size = 0),
            ),
        ];
        for (field, req) in cases {
            let err = parse_compact_request(req).expect_err(field);
            assert_eq!(err.field, field, "{err}");
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
        }
    }
}
