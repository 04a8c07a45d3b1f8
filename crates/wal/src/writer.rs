//! The WAL writer: group commit into immutable segment objects, fenced by conditional
//! create.
//!
//! Object stores have no append, so a segment is written once, whole, and never changed
//! (SlateDB writes one WAL object per flush the same way). A background task per writer
//! takes the first waiting [`WriteBatch`], adds every batch queued behind it while it was
//! busy (up to `max_segment_bytes`; a bigger batch still gets a segment of its own), assigns
//! consecutive sequence numbers and creates `tables/<t>/wal/<first_seq:020>.wal` with
//! put-if-absent. While that put is in flight new batches queue up and form the next group:
//! under load, one storage round trip commits many batches.
//!
//! **Acknowledgement = durability.** [`WalWriter::append`] returns only after the segment's
//! put has returned, which on local storage means file and directory are fsynced.
//!
//! **Fencing.** The writer recovers the last sequence number from the newest segment when it
//! opens. If another writer has extended the log since, the next segment name is already
//! taken and the conditional create fails: the writer reports [`WalError::Fenced`] for that
//! group and every later append, and never writes again. Of two writers opened on the same
//! log state, exactly one can extend it.
//!
//! **Failures.** If a put fails for another reason, whether the segment was stored is
//! unknown (a timeout may hide a success), so the writer stops ([`WalError::Poisoned`]);
//! reopening it re-reads the end of the log and continues after whatever did land.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lsm::{MAX_SEQNO, SeqNo};
use storage::paths::{self, TableName};
use storage::{ObjectPath, Storage};
use tokio::sync::{mpsc, oneshot};

use crate::batch::WriteBatch;
use crate::error::WalError;
use crate::format::{
    MAX_PAYLOAD_LEN, RecoveryMode, SegmentContext, decode_segment_with, encode_header,
    encode_record, header_len, record_len,
};
use crate::reader::WalReader;

/// Tuning of a [`WalWriter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalWriterConfig {
    /// A group commit stops adding batches once its segment would exceed this size. A
    /// single larger batch is still written, alone. Default: 4 MiB.
    pub max_segment_bytes: usize,
    /// The last sequence number known to be used, from a durable source (e.g. the
    /// catalog's flushed checkpoint), for a log whose segments were all cleaned up: the
    /// writer never assigns a sequence number at or below it. Default: 0.
    pub min_last_seq: SeqNo,
    /// Appends waiting for the writer task before `append` itself waits. Default: 1024.
    pub queue_capacity: usize,
}

impl Default for WalWriterConfig {
    fn default() -> Self {
        Self {
            max_segment_bytes: 4 * 1024 * 1024,
            min_last_seq: 0,
            queue_capacity: 1024,
        }
    }
}

/// An acknowledged append: durable, with its sequence numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// Sequence number of the batch's first entry.
    pub first_seq: SeqNo,
    /// Sequence number of its last entry.
    pub last_seq: SeqNo,
    /// The segment that holds it (shared with the other batches of its group commit).
    pub segment: ObjectPath,
}

struct Request {
    batch: WriteBatch,
    reply: oneshot::Sender<Result<Appended, WalError>>,
}

/// Appends write batches to one table's WAL. Cheap to clone; clones share one writer task.
/// The task ends when the last clone is dropped, after finishing the queued appends.
#[derive(Clone)]
pub struct WalWriter {
    tx: mpsc::Sender<Request>,
    table: TableName,
    last_seq: Arc<AtomicU64>,
}

impl std::fmt::Debug for WalWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWriter")
            .field("table", &self.table)
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

impl WalWriter {
    /// Opens the writer of `table`: recovers the last sequence number from the newest
    /// segment (which must decode without any damage: a writer never continues a log whose
    /// end it cannot read) and starts the writer task on the current tokio runtime.
    pub async fn open(
        storage: Storage,
        table: &str,
        config: WalWriterConfig,
    ) -> Result<Self, WalError> {
        let reader = WalReader::open(&storage, table).await?;
        let table = reader.table().clone();
        let mut last_seq = config.min_last_seq;
        if let Some(newest) = reader.segments().last() {
            let bytes = storage.get(&newest.path).await?;
            let ctx = SegmentContext {
                table: Some(table.as_str()),
                named_first_seq: Some(newest.first_seq),
                ..SegmentContext::default()
            };
            let decoded = decode_segment_with(
                &bytes,
                RecoveryMode::AbsoluteConsistency,
                newest.path.as_ref(),
                true,
                &ctx,
            )?;
            // A segment without records still owns its name (and first_seq).
            let newest_last = decoded.last_seq().unwrap_or(newest.first_seq);
            last_seq = last_seq.max(newest_last);
        }
        tracing::debug!(table = %table, last_seq, "wal writer opened");
        let last = Arc::new(AtomicU64::new(last_seq));
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let task = GroupCommitter {
            storage,
            table: table.clone(),
            max_segment_bytes: config.max_segment_bytes,
            last_seq,
            acked: last.clone(),
            stopped: None,
        };
        tokio::spawn(task.run(rx));
        Ok(Self {
            tx,
            table,
            last_seq: last,
        })
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The last acknowledged (or, before any append, recovered) sequence number.
    pub fn last_seq(&self) -> SeqNo {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Appends `batch` and waits until it is durable. Returns its sequence numbers.
    pub async fn append(&self, batch: WriteBatch) -> Result<Appended, WalError> {
        let table = || self.table.to_string();
        if batch.is_empty() {
            return Err(WalError::EmptyBatch { table: table() });
        }
        if batch.payload_len() > MAX_PAYLOAD_LEN {
            return Err(WalError::BatchTooLarge {
                table: table(),
                bytes: batch.payload_len(),
                max: MAX_PAYLOAD_LEN,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request { batch, reply })
            .await
            .map_err(|_| WalError::Closed { table: table() })?;
        rx.await.map_err(|_| WalError::Closed { table: table() })?
    }
}

/// The writer task's state.
struct GroupCommitter {
    storage: Storage,
    table: TableName,
    max_segment_bytes: usize,
    /// Last sequence number assigned in a stored segment.
    last_seq: SeqNo,
    /// Shared with the handles, for [`WalWriter::last_seq`].
    acked: Arc<AtomicU64>,
    /// Set once the writer is fenced or a put failed: every later append gets this.
    stopped: Option<WalError>,
}

impl GroupCommitter {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut carry: Option<Request> = None;
        loop {
            let first = match carry.take() {
                Some(r) => r,
                None => match rx.recv().await {
                    Some(r) => r,
                    None => break,
                },
            };
            if let Some(err) = &self.stopped {
                let _ = first.reply.send(Err(err.clone()));
                continue;
            }
            let mut size = header_len(self.table.as_str().len()) + record_len(&first.batch);
            let mut group = vec![first];
            while let Ok(next) = rx.try_recv() {
                let len = record_len(&next.batch);
                if size + len > self.max_segment_bytes {
                    carry = Some(next);
                    break;
                }
                size += len;
                group.push(next);
            }
            self.commit(group, size).await;
        }
        tracing::debug!(table = %self.table, last_seq = self.last_seq, "wal writer closed");
    }

    /// Writes one group as one segment and answers its appends.
    async fn commit(&mut self, group: Vec<Request>, size: usize) {
        let first_seq = self.last_seq + 1;
        let entries: u64 = group.iter().map(|r| r.batch.len() as u64).sum();
        let segment = paths::wal_segment(&self.table, first_seq);
        if self.last_seq > MAX_SEQNO - entries {
            let err = WalError::SeqExhausted {
                table: self.table.to_string(),
                last_seq: self.last_seq,
            };
            for r in group {
                let _ = r.reply.send(Err(err.clone()));
            }
            return;
        }

        let mut bytes = Vec::with_capacity(size);
        encode_header(self.table.as_str(), first_seq, &mut bytes);
        let mut acks = Vec::with_capacity(group.len());
        let mut next = first_seq;
        for r in &group {
            encode_record(next, &r.batch, &mut bytes);
            let last = next + (r.batch.len() as u64 - 1);
            acks.push(Appended {
                first_seq: next,
                last_seq: last,
                segment: segment.clone(),
            });
            next = last + 1;
        }

        match self
            .storage
            .put_if_absent(&segment, Bytes::from(bytes))
            .await
        {
            Ok(()) => {
                self.last_seq = next - 1;
                self.acked.store(self.last_seq, Ordering::Release);
                for (r, ack) in group.into_iter().zip(acks) {
                    let _ = r.reply.send(Ok(ack));
                }
            }
            Err(e) => {
                let segment = segment.to_string();
                let table = self.table.to_string();
                let (now, later) = if e.is_already_exists() {
                    tracing::warn!(table, segment, "wal writer fenced: segment already exists");
                    let fenced = WalError::Fenced {
                        table,
                        first_seq,
                        segment,
                    };
                    (fenced.clone(), fenced)
                } else {
                    tracing::error!(table, segment, error = %e, "wal segment write failed");
                    (
                        WalError::WriteFailed {
                            table: table.clone(),
                            first_seq,
                            segment: segment.clone(),
                            source: e,
                        },
                        WalError::Poisoned { table, segment },
                    )
                };
                self.stopped = Some(later);
                for r in group {
                    let _ = r.reply.send(Err(now.clone()));
                }
            }
        }
    }
}
