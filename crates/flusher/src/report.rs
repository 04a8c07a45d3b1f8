//! What a flush reports: the file it wrote, through [`runtime::report`] (CompleteTask,
//! retried while the scheduler is unreachable).

use proto::v1 as pb;
pub use runtime::report::{Reported, complete_task, failure};
use sst::SstInfo;

/// The manifest's record of a flushed SST.
pub fn file_meta(file_id: u64, info: &SstInfo, size_bytes: u64) -> pb::FileMeta {
    pb::FileMeta {
        file_id,
        size_bytes,
        smallest_key: info.smallest_user_key.to_vec(),
        largest_key: info.largest_user_key.to_vec(),
        smallest_seq: info.min_seq,
        largest_seq: info.max_seq,
        entry_count: info.entry_count,
        tombstone_count: info.tombstone_count,
    }
}

/// CompleteTask for a flush that wrote `file`.
pub fn success(
    task_id: u64,
    attempt: u32,
    worker_id: u64,
    file: pb::FileMeta,
    bytes_read: u64,
) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_id,
        attempt,
        worker_id,
        outcome: Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
            result: Some(pb::task_result::Result::Flush(pb::FlushResult {
                files: vec![file],
                bytes_read,
            })),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{Entry, MemtableSstWriter, SeqRange};

    #[test]
    fn file_meta_takes_the_builders_numbers() {
        let mut w = MemtableSstWriter::new(
            "m.sst",
            Vec::new(),
            sst::SstOptions::default(),
            SeqRange {
                lowest: 1,
                highest: 9,
            },
        )
        .expect("options");
        for (k, seq, tombstone) in [("a", 5, false), ("a", 2, true), ("z", 9, false)] {
            w.add(Entry {
                user_key: k.as_bytes(),
                value: b"v",
                seq,
                tombstone,
            })
            .expect("add");
        }
        let (info, bytes) = w.finish().expect("finish");
        let meta = file_meta(42, &info, bytes.len() as u64);
        assert_eq!(
            meta,
            pb::FileMeta {
                file_id: 42,
                size_bytes: bytes.len() as u64,
                smallest_key: b"a".to_vec(),
                largest_key: b"z".to_vec(),
                smallest_seq: 2,
                largest_seq: 9,
                entry_count: 3,
                tombstone_count: 1,
            }
        );
        let req = success(7, 2, 5, meta.clone(), 99);
        let Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
            result: Some(pb::task_result::Result::Flush(f)),
        })) = req.outcome
        else {
            panic!("not a flush result: {req:?}");
        };
        assert_eq!((req.task_id, req.attempt, req.worker_id), (7, 2, 5));
        assert_eq!((f.files, f.bytes_read), (vec![meta], 99));
    }
}
