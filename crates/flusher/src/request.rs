//! The gRPC edge of a dispatch: a `FlushMemtableRequest` checked and turned into a
//! [`FlushAttempt`], so nothing past this module sees protobuf types or unchecked input.

use lsm::{MAX_SEQNO, SeqNo};
use proto::v1 as pb;
pub use runtime::worker::InvalidRequest;
use runtime::worker::invalid;
use storage::{ObjectPath, TableName};

use crate::write::SeqRange;

/// What one flush should do: write the frozen memtable `memtable_id` of `table`, held by
/// the replayer at `replayer_address`, as the SST `file_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushSpec {
    pub table: TableName,
    /// Replayer-local id of the frozen memtable.
    pub memtable_id: u64,
    /// `host:port` (or URL) of the replayer's gRPC port.
    pub replayer_address: String,
    /// Sequence numbers the memtable may hold.
    pub seqs: SeqRange,
    /// The one output file (the first of the ids the catalog allocated).
    pub file_id: u64,
    /// Approximate bytes of the memtable, for the free-space check.
    pub size_bytes: u64,
    /// The attempt's share of the scheduler's IO budget in bytes/s; 0 = unlimited.
    pub io_bytes_per_sec: u64,
}

impl FlushSpec {
    /// Where the SST goes.
    pub fn sst_path(&self) -> ObjectPath {
        storage::paths::sst_file(&self.table, self.file_id)
    }
}

/// One running try of a MemtableFlush task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushAttempt {
    pub task_id: u64,
    pub attempt: u32,
    pub spec: FlushSpec,
}

/// Checks a dispatch and converts it.
pub fn parse_flush_request(req: pb::FlushMemtableRequest) -> Result<FlushAttempt, InvalidRequest> {
    let dispatch = req
        .dispatch
        .ok_or_else(|| invalid("dispatch", "required"))?;
    let spec = req.spec.ok_or_else(|| invalid("spec", "required"))?;
    Ok(FlushAttempt {
        task_id: dispatch.task_id,
        attempt: dispatch.attempt,
        spec: parse_spec(spec)?,
    })
}

fn parse_spec(spec: pb::FlushSpec) -> Result<FlushSpec, InvalidRequest> {
    if spec.table.is_empty() {
        return Err(invalid("spec.table", "required"));
    }
    let table = TableName::new(spec.table).map_err(|e| invalid("spec.table", e.to_string()))?;
    if spec.replayer_address.trim().is_empty() {
        return Err(invalid("spec.replayer_address", "required"));
    }
    let file_id = *spec
        .output_file_ids
        .first()
        .ok_or_else(|| invalid("spec.output_file_ids", "at least one file id is required"))?;
    check_seqs(spec.first_seq, spec.after_seq, spec.last_seq)?;
    Ok(FlushSpec {
        table,
        memtable_id: spec.memtable_id,
        replayer_address: spec.replayer_address,
        seqs: SeqRange::of_memtable(spec.first_seq, spec.after_seq, spec.last_seq),
        file_id,
        size_bytes: spec.size_bytes,
        io_bytes_per_sec: spec.io_bytes_per_sec,
    })
}

/// The memtable holds `after_seq < seq <= last_seq`, smallest `first_seq`: a range that
/// cannot hold a single entry, or seqs beyond the 56 bits of an internal key, are refused
/// before anything runs.
fn check_seqs(first_seq: SeqNo, after_seq: SeqNo, last_seq: SeqNo) -> Result<(), InvalidRequest> {
    if last_seq < first_seq {
        return Err(invalid(
            "spec.last_seq",
            format!("last_seq {last_seq} is below first_seq {first_seq}"),
        ));
    }
    if last_seq > MAX_SEQNO {
        return Err(invalid(
            "spec.last_seq",
            format!("last_seq {last_seq} exceeds the largest sequence number {MAX_SEQNO}"),
        ));
    }
    if after_seq >= last_seq {
        return Err(invalid(
            "spec.after_seq",
            format!(
                "after_seq {after_seq} is not below last_seq {last_seq}: the memtable would be empty"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> pb::FlushMemtableRequest {
        pb::FlushMemtableRequest {
            dispatch: Some(pb::DispatchRequest {
                task_id: 7,
                attempt: 2,
            }),
            spec: Some(pb::FlushSpec {
                table: "users".to_owned(),
                memtable_id: 3,
                replayer_address: "127.0.0.1:50052".to_owned(),
                first_seq: 11,
                last_seq: 20,
                output_file_ids: vec![42, 43],
                after_seq: 10,
                size_bytes: 1 << 20,
                io_bytes_per_sec: 0,
            }),
        }
    }

    fn with_spec(f: impl FnOnce(&mut pb::FlushSpec)) -> pb::FlushMemtableRequest {
        let mut req = valid();
        if let Some(spec) = req.spec.as_mut() {
            f(spec);
        }
        req
    }

    #[test]
    fn a_valid_request_becomes_an_attempt() {
        let a = parse_flush_request(valid()).expect("valid");
        assert_eq!((a.task_id, a.attempt), (7, 2));
        assert_eq!(a.spec.table.as_str(), "users");
        assert_eq!(a.spec.memtable_id, 3);
        assert_eq!(a.spec.file_id, 42);
        assert_eq!(
            a.spec.seqs,
            SeqRange {
                lowest: 11,
                highest: 20
            }
        );
        assert_eq!(a.spec.size_bytes, 1 << 20);
        assert_eq!(
            a.spec.sst_path().as_ref(),
            "tables/users/sst/00000000000000000042.sst"
        );
    }

    #[test]
    fn invalid_arguments_name_the_field() {
        let cases: Vec<(&str, pb::FlushMemtableRequest)> = vec![
            (
                "dispatch",
                pb::FlushMemtableRequest {
                    dispatch: None,
                    ..valid()
                },
            ),
            (
                "spec",
                pb::FlushMemtableRequest {
                    spec: None,
                    ..valid()
                },
            ),
            ("spec.table", with_spec(|s| s.table.clear())),
            ("spec.table", with_spec(|s| s.table = "../etc".to_owned())),
            (
                "spec.replayer_address",
                with_spec(|s| s.replayer_address.clear()),
            ),
            (
                "spec.replayer_address",
                with_spec(|s| s.replayer_address = "  ".to_owned()),
            ),
            (
                "spec.output_file_ids",
                with_spec(|s| s.output_file_ids.clear()),
            ),
            ("spec.last_seq", with_spec(|s| s.last_seq = 5)),
            ("spec.last_seq", with_spec(|s| s.last_seq = MAX_SEQNO + 1)),
            ("spec.after_seq", with_spec(|s| s.after_seq = 20)),
        ];
        for (field, req) in cases {
            let err = parse_flush_request(req).expect_err(field);
            assert_eq!(err.field, field, "{err}");
            let status = tonic::Status::from(err);
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert!(status.message().starts_with(field), "{}", status.message());
        }
    }
}
