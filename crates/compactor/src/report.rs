//! The last step of an attempt: CompleteTask, retried with backoff while the scheduler is
//! unreachable, and the messages it carries.
//!
//! What the scheduler answers decides what happens to the written outputs, and the
//! compactor never deletes a reported file: accepted, the outputs are in the manifest and
//! the inputs are gone from it; refused (FAILED_PRECONDITION: a stale attempt, a cancelled
//! task, inputs that changed), the outputs are orphans that Cleanup deletes after its grace
//! period. Only the scheduler knows which, so only it decides.
//!
//! [`complete_task`] is the same for every work item of this worker (Cleanup and
//! StatisticsUpdate report through it too); it is a copy of the flusher's, and belongs in
//! `runtime` once a third worker needs it.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::scheduler_client::SchedulerClient;
use runtime::grpc::TracedChannel;
use tokio_util::sync::CancellationToken;

use crate::merge::{Compacted, OutputFile};

/// Tries of CompleteTask before giving up (the lease then expires and the task is retried).
const MAX_TRIES: u32 = 8;
/// First retry delay; doubles per try up to [`MAX_BACKOFF`] (about 11 s over all tries).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a CompleteTask call ended.
#[derive(Debug)]
pub enum Reported {
    Accepted,
    /// The scheduler refused the completion; retrying cannot help.
    Refused(tonic::Status),
    /// Every try failed with a transient error.
    GaveUp(tonic::Status),
    /// The attempt was cancelled while retrying.
    Cancelled,
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Retry,
    Stop,
}

/// Transient: the scheduler is down, restarting, shedding load, or the call timed out.
/// Anything else is the scheduler's answer (FAILED_PRECONDITION for a stale attempt,
/// NOT_FOUND for a forgotten task, INVALID_ARGUMENT for a bad report).
fn after_failure(code: tonic::Code) -> Next {
    match code {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::Unknown => Next::Retry,
        _ => Next::Stop,
    }
}

/// Delay before try `try_index + 1` (`try_index` counts failed tries from 0).
fn backoff(try_index: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << try_index.min(16))
        .min(MAX_BACKOFF)
}

/// Calls CompleteTask until it is accepted, refused, or `MAX_TRIES` transient failures
/// pass. A retry after a lost reply may be refused although the first call committed: the
/// caller logs a refusal as such, never as data loss.
pub async fn complete_task(
    mut client: SchedulerClient<TracedChannel>,
    request: pb::CompleteTaskRequest,
    cancel: &CancellationToken,
) -> Reported {
    let mut try_index = 0;
    loop {
        let status = match client.complete_task(request.clone()).await {
            Ok(_) => return Reported::Accepted,
            Err(status) => status,
        };
        if after_failure(status.code()) == Next::Stop {
            return Reported::Refused(status);
        }
        if try_index + 1 >= MAX_TRIES {
            return Reported::GaveUp(status);
        }
        tracing::warn!(
            code = ?status.code(),
            error = %status.message(),
            "CompleteTask failed; retrying"
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff(try_index)) => {}
            _ = cancel.cancelled() => return Reported::Cancelled,
        }
        try_index += 1;
    }
}

/// The manifest's record of a written output.
pub fn file_meta(output: &OutputFile) -> pb::FileMeta {
    let info = &output.info;
    pb::FileMeta {
        file_id: output.file_id,
        size_bytes: output.size,
        smallest_key: info.smallest_user_key.to_vec(),
        largest_key: info.largest_user_key.to_vec(),
        smallest_seq: info.min_seq,
        largest_seq: info.max_seq,
        entry_count: info.entry_count,
        tombstone_count: info.tombstone_count,
    }
}

/// The result of a finished merge. Every input was consumed (`consumed_inputs` empty).
pub fn compaction_result(compacted: &Compacted) -> pb::CompactionResult {
    let s = &compacted.stats;
    pb::CompactionResult {
        outputs: compacted.outputs.iter().map(file_meta).collect(),
        consumed_inputs: Vec::new(),
        bytes_read: compacted.bytes_read,
        bytes_written: compacted.bytes_written,
        entries_in: s.input_entries,
        entries_out: s.output_entries,
        shadowed_dropped: s.shadowed_dropped,
        tombstones_dropped: s.tombstones_dropped,
    }
}

/// CompleteTask for an attempt that produced `result`.
pub fn success(
    task_id: u64,
    attempt: u32,
    worker_id: u64,
    result: pb::task_result::Result,
) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_id,
        attempt,
        worker_id,
        outcome: Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
            result: Some(result),
        })),
    }
}

/// CompleteTask for a failed attempt.
pub fn failure(
    task_id: u64,
    attempt: u32,
    worker_id: u64,
    error: pb::TaskError,
) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_id,
        attempt,
        worker_id,
        outcome: Some(pb::complete_task_request::Outcome::Error(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::CompactionStats;
    use sst::SstBuilder;

    #[test]
    fn only_transient_failures_are_retried() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Unknown,
        ] {
            assert_eq!(after_failure(code), Next::Retry, "{code:?}");
        }
        for code in [
            Code::FailedPrecondition,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Internal,
            Code::PermissionDenied,
        ] {
            assert_eq!(after_failure(code), Next::Stop, "{code:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<u64> = (0..MAX_TRIES)
            .map(|i| backoff(i).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn the_result_carries_the_outputs_and_the_counts() {
        let mut b =
            SstBuilder::new("o.sst", Vec::new(), sst::SstOptions::default()).expect("builder");
        for (k, seq, kind) in [
            ("a", 5, lsm::ValueKind::Put),
            ("m", 2, lsm::ValueKind::Delete),
            ("z", 9, lsm::ValueKind::Put),
        ] {
            let mut key = Vec::new();
            lsm::key::encode_internal_key(k.as_bytes(), seq, kind, &mut key);
            b.add(&key, b"").expect("add");
        }
        let (info, bytes) = b.finish_into_inner().expect("finish");
        let output = OutputFile {
            file_id: 42,
            size: bytes.len() as u64,
            info,
        };
        let compacted = Compacted {
            outputs: vec![output],
            stats: CompactionStats {
                input_entries: 10,
                output_entries: 3,
                shadowed_dropped: 5,
                tombstones_dropped: 2,
            },
            bytes_read: 1000,
            bytes_written: bytes.len() as u64,
            subcompactions: 1,
        };
        let r = compaction_result(&compacted);
        assert_eq!(
            r.outputs,
            [pb::FileMeta {
                file_id: 42,
                size_bytes: bytes.len() as u64,
                smallest_key: b"a".to_vec(),
                largest_key: b"z".to_vec(),
                smallest_seq: 2,
                largest_seq: 9,
                entry_count: 3,
                tombstone_count: 1,
            }]
        );
        assert!(r.consumed_inputs.is_empty(), "empty: every input");
        assert_eq!(
            (r.bytes_read, r.bytes_written, r.entries_in, r.entries_out),
            (1000, bytes.len() as u64, 10, 3)
        );
        assert_eq!((r.shadowed_dropped, r.tombstones_dropped), (5, 2));
        let req = success(7, 2, 5, pb::task_result::Result::Compaction(r.clone()));
        assert_eq!((req.task_id, req.attempt, req.worker_id), (7, 2, 5));
        assert_eq!(
            req.outcome,
            Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
                result: Some(pb::task_result::Result::Compaction(r)),
            }))
        );
    }
}
