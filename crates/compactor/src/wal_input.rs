//! WAL segments as compaction inputs: the repair of quarantined segments.
//!
//! A segment that replay could not read is quarantined (replay skips it, Cleanup keeps it);
//! once an operator puts back a good copy and releases it, the scheduler queues a full
//! compaction of the table with the segment as one more input. Its writes are older than
//! much of what the levels hold, so they cannot simply be flushed into L0 (a read would
//! meet them before newer versions deeper down): merged by sequence number with every
//! file of the table, each key's newest version wins wherever it came from.
//!
//! The segment is decoded under `absolute_consistency` (a repair of a still damaged
//! segment fails as corruption, naming it), its entries sorted into internal-key order and
//! written as an SST under one of the attempt's output ids (the last ones, unused by the
//! merge), which joins the inputs as an L0 file. That SST is never committed: it is deleted
//! after the merge (Cleanup removes it if this process dies first).

use lsm::key::encode_internal_key;
use lsm::manifest::FileMeta;
use sst::{SstBuilder, SstOptions};
use storage::Storage;
use wal::{RecoveryMode, SegmentContext};

use crate::error::CompactionError;
use crate::request::CompactionSpec;

/// Writes each segment of `first_seqs` as an SST under the last unused output ids of
/// `spec` (taking them out of `spec.output_file_ids`) and adds those SSTs to its L0
/// inputs. Returns the paths written (for [`discard`]). A segment without entries adds
/// nothing.
pub async fn add_wal_inputs(
    storage: &Storage,
    spec: &mut CompactionSpec,
    first_seqs: &[u64],
    options: &SstOptions,
) -> Result<Vec<storage::ObjectPath>, CompactionError> {
    let mut written = Vec::new();
    for &first_seq in first_seqs {
        let segment = storage::paths::wal_segment(&spec.table, first_seq);
        let name = segment.to_string();
        let bytes = storage.get(&segment).await.map_err(|e| {
            if e.is_not_found() {
                CompactionError::InputMissing { file: name.clone() }
            } else {
                CompactionError::ReadInput {
                    file: name.clone(),
                    cause: e.to_string(),
                }
            }
        })?;
        let ctx = SegmentContext {
            table: Some(spec.table.as_str()),
            named_first_seq: Some(first_seq),
            ..SegmentContext::default()
        };
        let decoded = wal::decode_segment_with(
            &bytes,
            RecoveryMode::AbsoluteConsistency,
            &name,
            false,
            &ctx,
        )
        .map_err(|e| CompactionError::Corruption {
            file: name.clone(),
            offset: match &e {
                wal::WalError::TornTail { offset, .. }
                | wal::WalError::Corruption { offset, .. } => *offset,
                _ => 0,
            },
            reason: e.to_string(),
        })?;
        let mut entries = decoded.entries;
        if entries.is_empty() {
            continue;
        }
        // Internal-key order: user key ascending, newest first.
        entries.sort_by(|a, b| a.key.cmp(&b.key).then(b.seq.cmp(&a.seq)));
        let Some(id) = spec.output_file_ids.pop() else {
            return Err(CompactionError::Internal(
                "no output id left for a wal input".to_owned(),
            ));
        };
        let path = spec.sst_path(id);
        let file = path.to_string();
        let (info, sst) = {
            let out = |e| CompactionError::from_output(e, &file);
            let mut b = SstBuilder::new(file.clone(), Vec::new(), options.clone()).map_err(out)?;
            let mut ikey = Vec::new();
            for e in &entries {
                ikey.clear();
                encode_internal_key(&e.key, e.seq, e.kind, &mut ikey);
                b.add(&ikey, &e.value).map_err(out)?;
            }
            b.finish_into_inner().map_err(out)?
        };
        let size = sst.len() as u64;
        storage
            .put(&path, bytes::Bytes::from(sst))
            .await
            .map_err(|e| CompactionError::WriteOutput {
                file: file.clone(),
                cause: e.to_string(),
                retriable: true,
            })?;
        written.push(path);
        let meta = FileMeta {
            id,
            size,
            smallest: info.smallest_user_key.clone(),
            largest: info.largest_user_key.clone(),
            smallest_seq: info.min_seq,
            largest_seq: info.max_seq,
            entries: info.entry_count,
            tombstones: info.tombstone_count,
        };
        match spec.inputs.first_mut() {
            Some((0, files)) => files.insert(0, meta),
            _ => spec.inputs.insert(0, (0, vec![meta])),
        }
    }
    Ok(written)
}

/// Deletes the SSTs [`add_wal_inputs`] wrote (best effort: Cleanup deletes what stays).
pub async fn discard(storage: &Storage, written: &[storage::ObjectPath]) {
    for path in written {
        if let Err(e) = storage.delete(path).await {
            tracing::warn!(%path, error = %e, "could not delete a wal input's sst; Cleanup will");
        }
    }
}
