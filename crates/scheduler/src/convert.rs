//! Conversions between the wire types of `dataprocessor.v1` and the scheduler's domain
//! types, and the one mapping of [`CoreError`] to gRPC status codes. Nothing else in the
//! crate touches protobuf types.

use bytes::Bytes;
use catalog::{ErrorRecord, TaskKind, TaskRecord, TaskSpec, TaskState};
use lsm::manifest::FileMeta;
use proto::v1 as pb;
use tonic::Status;

use crate::core::{CoreError, Dispatch, Outcome, Progress};

/// The one mapping from state-machine errors to gRPC status codes.
pub fn status_of(e: CoreError) -> Status {
    let msg = e.to_string();
    match e {
        CoreError::QueueFull { .. } => Status::resource_exhausted(msg),
        CoreError::Lock { .. } => Status::aborted(msg),
        CoreError::TableNotFound(_)
        | CoreError::TaskNotFound(_)
        | CoreError::NotQuarantined { .. } => Status::not_found(msg),
        CoreError::TableExists(_) => Status::already_exists(msg),
        CoreError::Invalid(_) => Status::invalid_argument(msg),
        CoreError::Refused(_) => Status::failed_precondition(msg),
    }
}

pub fn kind_to_pb(k: TaskKind) -> pb::TaskType {
    match k {
        TaskKind::WalReplay => pb::TaskType::WalReplay,
        TaskKind::MemtableFlush => pb::TaskType::MemtableFlush,
        TaskKind::Compaction => pb::TaskType::Compaction,
        TaskKind::Cleanup => pb::TaskType::Cleanup,
        TaskKind::StatisticsUpdate => pb::TaskType::StatisticsUpdate,
    }
}

pub fn kind_from_pb(t: i32) -> Option<TaskKind> {
    match pb::TaskType::try_from(t).ok()? {
        pb::TaskType::WalReplay => Some(TaskKind::WalReplay),
        pb::TaskType::MemtableFlush => Some(TaskKind::MemtableFlush),
        pb::TaskType::Compaction => Some(TaskKind::Compaction),
        pb::TaskType::Cleanup => Some(TaskKind::Cleanup),
        pb::TaskType::StatisticsUpdate => Some(TaskKind::StatisticsUpdate),
        pb::TaskType::Unspecified => None,
    }
}

pub fn state_to_pb(s: TaskState) -> pb::TaskState {
    match s {
        TaskState::Pending => pb::TaskState::Pending,
        TaskState::Running => pb::TaskState::Running,
        TaskState::Succeeded => pb::TaskState::Succeeded,
        TaskState::Failed => pb::TaskState::Failed,
        TaskState::Cancelled => pb::TaskState::Cancelled,
    }
}

pub fn state_from_pb(s: i32) -> Option<TaskState> {
    match pb::TaskState::try_from(s).ok()? {
        pb::TaskState::Pending => Some(TaskState::Pending),
        pb::TaskState::Running => Some(TaskState::Running),
        pb::TaskState::Succeeded => Some(TaskState::Succeeded),
        pb::TaskState::Failed => Some(TaskState::Failed),
        pb::TaskState::Cancelled => Some(TaskState::Cancelled),
        pb::TaskState::Unspecified => None,
    }
}

pub fn worker_kind_name(k: i32) -> Option<&'static str> {
    match pb::WorkerKind::try_from(k).ok()? {
        pb::WorkerKind::Replayer => Some("replayer"),
        pb::WorkerKind::Flusher => Some("flusher"),
        pb::WorkerKind::Compactor => Some("compactor"),
        pb::WorkerKind::Unspecified => None,
    }
}

pub fn worker_kind_pb(name: &str) -> pb::WorkerKind {
    match name {
        "replayer" => pb::WorkerKind::Replayer,
        "flusher" => pb::WorkerKind::Flusher,
        "compactor" => pb::WorkerKind::Compactor,
        _ => pb::WorkerKind::Unspecified,
    }
}

pub fn file_to_pb(f: &FileMeta) -> pb::FileMeta {
    pb::FileMeta {
        file_id: f.id,
        size_bytes: f.size,
        smallest_key: f.smallest.to_vec(),
        largest_key: f.largest.to_vec(),
        smallest_seq: f.smallest_seq,
        largest_seq: f.largest_seq,
        entry_count: f.entries,
        tombstone_count: f.tombstones,
    }
}

/// Validates and converts a file reported by a worker.
pub fn file_from_pb(f: &pb::FileMeta) -> Result<FileMeta, Status> {
    runtime::limits::check_key(&format!("file {} smallest_key", f.file_id), &f.smallest_key)?;
    runtime::limits::check_key(&format!("file {} largest_key", f.file_id), &f.largest_key)?;
    if f.smallest_key > f.largest_key {
        return Err(Status::invalid_argument(format!(
            "file {}: smallest_key sorts after largest_key",
            f.file_id
        )));
    }
    if f.smallest_seq > f.largest_seq {
        return Err(Status::invalid_argument(format!(
            "file {}: smallest_seq {} > largest_seq {}",
            f.file_id, f.smallest_seq, f.largest_seq
        )));
    }
    if f.tombstone_count > f.entry_count {
        return Err(Status::invalid_argument(format!(
            "file {}: tombstone_count {} > entry_count {}",
            f.file_id, f.tombstone_count, f.entry_count
        )));
    }
    Ok(FileMeta {
        id: f.file_id,
        size: f.size_bytes,
        smallest: Bytes::copy_from_slice(&f.smallest_key),
        largest: Bytes::copy_from_slice(&f.largest_key),
        smallest_seq: f.smallest_seq,
        largest_seq: f.largest_seq,
        entries: f.entry_count,
        tombstones: f.tombstone_count,
    })
}

fn levels_to_pb(levels: &[(u32, Vec<FileMeta>)]) -> Vec<pb::Level> {
    levels
        .iter()
        .map(|(l, files)| pb::Level {
            level: *l,
            files: files.iter().map(file_to_pb).collect(),
        })
        .collect()
}

fn recovery_mode_pb(mode: &str) -> pb::RecoveryMode {
    match mode {
        "tolerate_corrupted_tail" => pb::RecoveryMode::TolerateCorruptedTail,
        "absolute_consistency" => pb::RecoveryMode::AbsoluteConsistency,
        "point_in_time" => pb::RecoveryMode::PointInTime,
        "skip_corrupted" => pb::RecoveryMode::SkipCorrupted,
        _ => pb::RecoveryMode::Unspecified,
    }
}

/// The wire form of a spec; `output_file_ids` are those of the attempt being described.
pub fn spec_to_pb(spec: &TaskSpec, output_file_ids: &[u64]) -> pb::TaskSpec {
    pb::TaskSpec {
        spec: Some(spec_oneof(spec, output_file_ids)),
    }
}

fn spec_oneof(spec: &TaskSpec, output_file_ids: &[u64]) -> pb::task_spec::Spec {
    use pb::task_spec::Spec;
    match spec {
        TaskSpec::WalReplay {
            table,
            checkpoint,
            recovery_mode,
            skip_segments,
            ..
        } => Spec::WalReplay(pb::WalReplaySpec {
            table: table.clone(),
            checkpoint: *checkpoint,
            recovery_mode: recovery_mode_pb(recovery_mode) as i32,
            skip_segments: skip_segments.clone(),
        }),
        TaskSpec::MemtableFlush {
            table,
            memtable_id,
            replayer_address,
            first_seq,
            last_seq,
            after_seq,
            size_bytes,
            ..
        } => Spec::Flush(pb::FlushSpec {
            table: table.clone(),
            memtable_id: *memtable_id,
            replayer_address: replayer_address.clone(),
            first_seq: *first_seq,
            last_seq: *last_seq,
            output_file_ids: output_file_ids.to_vec(),
            after_seq: *after_seq,
            size_bytes: *size_bytes,
            io_bytes_per_sec: 0,
        }),
        TaskSpec::Compaction {
            table,
            inputs,
            output_level,
            bottommost,
            target_file_size,
            trivial_move,
            reason,
            wal_inputs,
        } => Spec::Compaction(pb::CompactionSpec {
            table: table.clone(),
            input_levels: inputs.iter().map(|(l, _)| *l).collect(),
            inputs: levels_to_pb(inputs),
            output_level: *output_level,
            bottommost: *bottommost,
            target_file_size: *target_file_size,
            trivial_move: *trivial_move,
            output_file_ids: output_file_ids.to_vec(),
            io_bytes_per_sec: 0,
            reason: reason.clone(),
            // The worker caps it at its processor.worker_count.
            max_subcompactions: 16,
            wal_inputs: wal_inputs.clone(),
            // Filled at dispatch from the manifest (see `dispatch_call`).
            grandparent_bounds: Vec::new(),
        }),
        TaskSpec::Cleanup {
            table,
            sst_paths,
            wal_paths,
            dry_run,
        } => Spec::Cleanup(pb::CleanupSpec {
            table: table.clone(),
            sst_paths: sst_paths.clone(),
            wal_paths: wal_paths.clone(),
            dry_run: *dry_run,
        }),
        TaskSpec::StatisticsUpdate { table } => Spec::Statistics(pb::StatisticsSpec {
            table: table.clone(),
            levels: Vec::new(),
            columns: Vec::new(),
        }),
    }
}

pub fn quarantined_to_pb(q: &catalog::QuarantineRecord) -> pb::QuarantinedFile {
    let path = storage::TableName::new(q.table.as_str())
        .map(|t| match &q.wal {
            Some(w) => storage::paths::wal_segment(&t, w.first_seq).to_string(),
            None => storage::paths::sst_file(&t, q.file_id).to_string(),
        })
        .unwrap_or_default();
    pb::QuarantinedFile {
        table: q.table.clone(),
        file_id: q.file_id,
        path,
        error: Some(error_to_pb(&q.error)),
        since_unix_ms: q.since_ms,
        kind: if q.wal.is_some() { "wal" } else { "sst" }.to_owned(),
        first_seq: q.wal.as_ref().map_or(0, |w| w.first_seq),
        repairing: q.wal.as_ref().is_some_and(|w| w.released),
    }
}

pub fn error_to_pb(e: &ErrorRecord) -> pb::TaskError {
    pb::TaskError {
        kind: match e.kind.as_str() {
            "replay" => pb::ErrorKind::Replay,
            "flush" => pb::ErrorKind::Flush,
            "compaction" => pb::ErrorKind::Compaction,
            "disk_space" => pb::ErrorKind::DiskSpace,
            "lock" => pb::ErrorKind::Lock,
            "corruption" => pb::ErrorKind::Corruption,
            "invalid_argument" => pb::ErrorKind::InvalidArgument,
            "not_found" => pb::ErrorKind::NotFound,
            "cancelled" => pb::ErrorKind::Cancelled,
            _ => pb::ErrorKind::Internal,
        } as i32,
        message: if matches!(e.kind.as_str(), "lease_expired" | "stuck") {
            format!("{}: {}", e.kind, e.message)
        } else {
            e.message.clone()
        },
        file: e.file.clone(),
        offset: e.offset,
        retriable: e.retriable,
        attempt: e.attempt,
        at_unix_ms: e.at_ms,
    }
}

pub fn error_from_pb(e: &pb::TaskError) -> ErrorRecord {
    let kind = match pb::ErrorKind::try_from(e.kind) {
        Ok(pb::ErrorKind::Replay) => "replay",
        Ok(pb::ErrorKind::Flush) => "flush",
        Ok(pb::ErrorKind::Compaction) => "compaction",
        Ok(pb::ErrorKind::DiskSpace) => "disk_space",
        Ok(pb::ErrorKind::Lock) => "lock",
        Ok(pb::ErrorKind::Corruption) => "corruption",
        Ok(pb::ErrorKind::InvalidArgument) => "invalid_argument",
        Ok(pb::ErrorKind::NotFound) => "not_found",
        Ok(pb::ErrorKind::Cancelled) => "cancelled",
        _ => "internal",
    };
    ErrorRecord {
        attempt: e.attempt,
        kind: kind.to_owned(),
        message: e.message.clone(),
        file: e.file.clone(),
        offset: e.offset,
        retriable: e.retriable,
        at_ms: e.at_unix_ms,
    }
}

/// Converts a CompleteTask outcome.
pub fn outcome_from_pb(o: Option<pb::complete_task_request::Outcome>) -> Result<Outcome, Status> {
    use pb::complete_task_request::Outcome as O;
    use pb::task_result::Result as R;
    match o {
        None => Err(Status::invalid_argument(
            "outcome: one of result or error is required",
        )),
        Some(O::Error(e)) => Ok(Outcome::Failure(error_from_pb(&e))),
        Some(O::Result(r)) => {
            let (files, consumed_inputs, stats, partial) = match r.result {
                Some(R::Flush(f)) => (f.files, Vec::new(), None, false),
                Some(R::Compaction(c)) => (c.outputs, c.consumed_inputs, None, c.partial),
                Some(R::Statistics(s)) => (
                    Vec::new(),
                    Vec::new(),
                    Some(serde_json::json!({ "encoded": hex(&prost::Message::encode_to_vec(&s)) })),
                    false,
                ),
                Some(R::WalReplay(_)) | Some(R::Cleanup(_)) | None => {
                    (Vec::new(), Vec::new(), None, false)
                }
            };
            runtime::limits::check_list(
                "result.files",
                files.len(),
                runtime::limits::MAX_LIST_LEN,
            )?;
            runtime::limits::check_list(
                "result.consumed_inputs",
                consumed_inputs.len(),
                runtime::limits::MAX_LIST_LEN,
            )?;
            Ok(Outcome::Success {
                files: files.iter().map(file_from_pb).collect::<Result<_, _>>()?,
                consumed_inputs,
                stats,
                partial,
            })
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Decodes statistics stored by [`outcome_from_pb`].
pub fn stats_from_json(v: &serde_json::Value) -> Option<pb::TableStatistics> {
    let s = v.get("encoded")?.as_str()?;
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    prost::Message::decode(bytes?.as_slice()).ok()
}

pub fn progress_from_pb(p: &pb::TaskProgress) -> (u64, u32, Progress) {
    (
        p.task_id,
        p.attempt,
        Progress {
            bytes_read: p.bytes_read,
            bytes_written: p.bytes_written,
            entries: p.entries,
            applied_seq: p.applied_seq,
        },
    )
}

pub fn task_to_pb(
    t: &TaskRecord,
    waiting_reason: String,
    progress: impl Fn(u64, u32) -> Option<Progress>,
) -> pb::Task {
    let outputs = t
        .current_attempt()
        .map(|a| a.output_file_ids.clone())
        .unwrap_or_default();
    pb::Task {
        task_id: t.id,
        r#type: kind_to_pb(t.kind()) as i32,
        state: state_to_pb(t.state) as i32,
        table: t.spec.table().to_owned(),
        spec: Some(spec_to_pb(&t.spec, &outputs)),
        attempt: t.attempt,
        attempts: t
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                attempt: a.attempt,
                worker_id: a.worker_id,
                worker_address: a.worker_address.clone(),
                started_at_unix_ms: a.started_at_ms,
                ended_at_unix_ms: a.ended_at_ms,
                progress: progress(t.id, a.attempt).map(|p| pb::TaskProgress {
                    task_id: t.id,
                    attempt: a.attempt,
                    bytes_read: p.bytes_read,
                    bytes_written: p.bytes_written,
                    entries: p.entries,
                    applied_seq: p.applied_seq,
                }),
            })
            .collect(),
        errors: t.errors.iter().map(error_to_pb).collect(),
        waiting_reason,
        created_at_unix_ms: t.created_at_ms,
        not_before_unix_ms: t.not_before_ms,
        priority: t.priority,
    }
}

/// The dispatch RPC's request, per worker kind.
pub enum DispatchCall {
    Replay(pb::ReplayFromCheckpointRequest),
    Flush(pb::FlushMemtableRequest),
    Compact(pb::CompactLevelRequest),
    Cleanup(pb::RunCleanupRequest),
    Statistics(pb::UpdateStatisticsRequest),
}

pub fn dispatch_call(d: &Dispatch) -> DispatchCall {
    use pb::task_spec::Spec;
    let dispatch = Some(pb::DispatchRequest {
        task_id: d.task_id,
        attempt: d.attempt,
    });
    let mut spec = spec_oneof(&d.spec, &d.output_file_ids);
    match &mut spec {
        Spec::Flush(f) => f.io_bytes_per_sec = d.io_bytes_per_sec,
        Spec::Compaction(c) => {
            c.io_bytes_per_sec = d.io_bytes_per_sec;
            c.grandparent_bounds = d.grandparent_bounds.clone();
        }
        _ => {}
    }
    match spec {
        Spec::WalReplay(spec) => DispatchCall::Replay(pb::ReplayFromCheckpointRequest {
            dispatch,
            spec: Some(spec),
        }),
        Spec::Flush(spec) => DispatchCall::Flush(pb::FlushMemtableRequest {
            dispatch,
            spec: Some(spec),
        }),
        Spec::Compaction(spec) => DispatchCall::Compact(pb::CompactLevelRequest {
            dispatch,
            spec: Some(spec),
        }),
        Spec::Cleanup(spec) => DispatchCall::Cleanup(pb::RunCleanupRequest {
            dispatch,
            spec: Some(spec),
        }),
        Spec::Statistics(mut spec) => {
            spec.levels = levels_to_pb(&d.levels);
            spec.columns = d
                .columns
                .iter()
                .map(|c| pb::ColumnDef {
                    name: c.name.clone(),
                    r#type: c.kind.clone(),
                })
                .collect();
            DispatchCall::Statistics(pb::UpdateStatisticsRequest {
                dispatch,
                spec: Some(spec),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn every_core_error_has_its_status_code() {
        let cases = [
            (
                CoreError::QueueFull {
                    pending: 1,
                    capacity: 1,
                },
                Code::ResourceExhausted,
            ),
            (
                CoreError::Lock {
                    table: "t".into(),
                    file_id: 1,
                    task_id: 2,
                },
                Code::Aborted,
            ),
            (CoreError::TableNotFound("t".into()), Code::NotFound),
            (CoreError::TaskNotFound(1), Code::NotFound),
            (
                CoreError::NotQuarantined {
                    table: "t".into(),
                    file_id: 3,
                },
                Code::NotFound,
            ),
            (CoreError::TableExists("t".into()), Code::AlreadyExists),
            (CoreError::Invalid("x".into()), Code::InvalidArgument),
            (CoreError::Refused("stale".into()), Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            let msg = e.to_string();
            let s = status_of(e);
            assert_eq!(s.code(), code, "{msg}");
            assert_eq!(s.message(), msg);
        }
    }

    #[test]
    fn malformed_files_are_invalid_arguments() {
        let good = pb::FileMeta {
            file_id: 1,
            size_bytes: 10,
            smallest_key: b"a".to_vec(),
            largest_key: b"b".to_vec(),
            smallest_seq: 1,
            largest_seq: 2,
            entry_count: 2,
            tombstone_count: 1,
        };
        assert!(file_from_pb(&good).is_ok());
        let bad = [
            pb::FileMeta {
                smallest_key: b"c".to_vec(),
                ..good.clone()
            },
            pb::FileMeta {
                smallest_seq: 3,
                ..good.clone()
            },
            pb::FileMeta {
                tombstone_count: 3,
                ..good.clone()
            },
        ];
        for f in bad {
            assert_eq!(
                file_from_pb(&f).map_err(|s| s.code()),
                Err(Code::InvalidArgument)
            );
        }
        assert_eq!(
            outcome_from_pb(None).map_err(|s| s.code()),
            Err(Code::InvalidArgument)
        );
    }

    #[test]
    fn statistics_survive_the_json_envelope() {
        let s = pb::TableStatistics {
            table: "t".into(),
            entries: 42,
            ..Default::default()
        };
        let out = outcome_from_pb(Some(pb::complete_task_request::Outcome::Result(
            pb::TaskResult {
                result: Some(pb::task_result::Result::Statistics(s.clone())),
            },
        )))
        .expect("ok");
        let Outcome::Success { stats: Some(v), .. } = out else {
            panic!("stats expected")
        };
        assert_eq!(stats_from_json(&v), Some(s));
    }
}
