//! What a compaction reports: its outputs and counts, through [`runtime::report`]
//! (CompleteTask, retried while the scheduler is unreachable; every work item of this worker
//! reports through it). The compactor never deletes a reported file: accepted, the outputs
//! are in the manifest; refused, they are orphans for Cleanup.

use proto::v1 as pb;

use crate::merge::{Compacted, OutputFile};

pub use runtime::report::{Reported, complete_task, failure};

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

/// The result of a finished merge: every input consumed (`consumed_inputs` empty), or,
/// when it was preempted, a partial result naming the inputs it consumed.
pub fn compaction_result(compacted: &Compacted) -> pb::CompactionResult {
    let s = &compacted.stats;
    pb::CompactionResult {
        outputs: compacted.outputs.iter().map(file_meta).collect(),
        consumed_inputs: compacted.consumed.clone().unwrap_or_default(),
        partial: compacted.consumed.is_some(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::CompactionStats;
    use sst::SstBuilder;

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
            consumed: None,
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
