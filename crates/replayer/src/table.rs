//! One table's in-memory state on a replayer: the active memtable that WAL entries go into,
//! the frozen memtables waiting for their flush to commit, and the numbers the scheduler and
//! readers need. No IO and no clock: the caller applies entries it read, passes the time in,
//! and acts on what the methods return.
//!
//! Sequence-number bookkeeping: every memtable covers a half-open range `(after_seq,
//! last_seq]` of the table's log: `after_seq` is what had been applied when it was opened,
//! so consecutive memtables tile the log with no gap, whatever holes the log itself has
//! (skipped records, say). A frozen memtable is dropped only once the flushed checkpoint has
//! reached its `last_seq`: its contents are then durable in SSTs.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use lsm::merge::BoxedIterator;
use lsm::{InternalIterator, Memtable, MemtableError, MergingIterator, ParsedInternalKey, SeqNo};
use lsm::{MAX_SEQNO, ValueKind};

/// What the allocator adds to each of a memtable's small allocations (one skiplist node per
/// entry) beyond the bytes asked for: glibc's 8-byte header plus rounding to 16. The
/// memtable's own accounting counts what Rust allocates; the replayer's budget is about the
/// process's memory, so it counts this too (measured: without it RSS exceeded the budget by
/// ~8 % from this alone).
const ALLOCATOR_OVERHEAD_PER_ENTRY: u64 = 16;

/// Bytes a memtable costs the process: its accounting plus the allocator's overhead.
pub fn footprint(m: &Memtable) -> u64 {
    m.approximate_memory_usage() as u64 + ALLOCATOR_OVERHEAD_PER_ENTRY * m.len() as u64
}

/// One version of a key, as readers and flushers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: Bytes,
    pub value: Bytes,
    pub seq: SeqNo,
    pub tombstone: bool,
}

/// A frozen memtable, waiting for its flush to commit.
#[derive(Debug, Clone)]
pub struct Frozen {
    pub memtable: Arc<Memtable>,
    /// The memtable holds every applied entry with `after_seq < seq <= last_seq`.
    pub after_seq: SeqNo,
    pub first_seq: SeqNo,
    pub last_seq: SeqNo,
    pub bytes: u64,
    /// When the scheduler last acknowledged a flush request for it (0: never).
    pub requested_at_ms: i64,
}

/// Why the active memtable was frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezeReason {
    /// It reached `max_memtable_size × flush_threshold`.
    Size,
    /// It is older than `wal_replay.flush_interval`.
    Age,
    /// An operator asked (TriggerFlush).
    Requested,
}

/// Limits of one table's memtables.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Freeze the active memtable once it uses this many bytes.
    pub freeze_bytes: u64,
    /// Freeze a non-empty active memtable once it is this old.
    pub max_age_ms: i64,
    /// Stop applying WAL while this many memtables are frozen (backpressure).
    pub max_frozen: usize,
}

/// A table held by this replayer.
#[derive(Debug)]
pub struct TableState {
    pub table: String,
    active: Arc<Memtable>,
    active_after: SeqNo,
    active_opened_ms: i64,
    frozen: VecDeque<Frozen>,
    applied_seq: SeqNo,
    /// Highest sequence number seen in the WAL (applied or not).
    pub wal_head_seq: SeqNo,
    /// The flushed checkpoint last learned from the scheduler.
    checkpoint: SeqNo,
    /// Set when replay stopped on a ReplayError: the table is readable but no longer grows.
    pub error: Option<String>,
    /// An operator asked for a flush of whatever the active memtable holds.
    pub freeze_requested: bool,
    pub entries_applied: u64,
    pub bytes_applied: u64,
    /// (time, bytes_applied) samples of the last [`INGEST_WINDOW_MS`], for the ingest rate.
    ingest_samples: VecDeque<(i64, u64)>,
}

/// The window over which the ingest rate is measured: short, so the scheduler sees a
/// burst of writes start and end within seconds.
pub const INGEST_WINDOW_MS: i64 = 3_000;

impl TableState {
    /// A table replayed after `checkpoint`; the first memtable gets id `memtable_id`.
    pub fn new(table: &str, checkpoint: SeqNo, memtable_id: u64, now_ms: i64) -> Self {
        Self {
            table: table.to_owned(),
            active: Arc::new(Memtable::new(memtable_id)),
            active_after: checkpoint,
            active_opened_ms: now_ms,
            frozen: VecDeque::new(),
            applied_seq: checkpoint,
            wal_head_seq: checkpoint,
            checkpoint,
            error: None,
            freeze_requested: false,
            entries_applied: 0,
            bytes_applied: 0,
            ingest_samples: VecDeque::new(),
        }
    }

    /// Bytes (keys + values) applied per second over the last [`INGEST_WINDOW_MS`]:
    /// records a sample at `now_ms` and measures from the oldest one in the window.
    pub fn ingest_rate(&mut self, now_ms: i64) -> f64 {
        self.ingest_samples.push_back((now_ms, self.bytes_applied));
        while self.ingest_samples.len() > 1
            && self
                .ingest_samples
                .get(1)
                .is_some_and(|(t, _)| *t <= now_ms - INGEST_WINDOW_MS)
        {
            self.ingest_samples.pop_front();
        }
        match self.ingest_samples.front() {
            Some((t0, b0)) if now_ms > *t0 => {
                (self.bytes_applied.saturating_sub(*b0)) as f64 * 1000.0 / (now_ms - t0) as f64
            }
            _ => 0.0,
        }
    }

    /// Highest sequence number applied to the memtables.
    pub fn applied_seq(&self) -> SeqNo {
        self.applied_seq
    }

    pub fn checkpoint(&self) -> SeqNo {
        self.checkpoint
    }

    /// Applies one WAL entry. Entries at or below `applied_seq` (a segment read again) are
    /// skipped: the log is applied exactly once, in order.
    pub fn apply(
        &mut self,
        seq: SeqNo,
        kind: ValueKind,
        key: &[u8],
        value: &[u8],
        now_ms: i64,
    ) -> Result<bool, MemtableError> {
        self.wal_head_seq = self.wal_head_seq.max(seq);
        if seq <= self.applied_seq {
            return Ok(false);
        }
        if self.active.is_empty() {
            // The age trigger counts from the first write, not from an idle memtable's birth.
            self.active_opened_ms = now_ms;
        }
        self.active.insert(key, seq, kind, value)?;
        self.applied_seq = seq;
        self.entries_applied += 1;
        self.bytes_applied += (key.len() + value.len()) as u64;
        Ok(true)
    }

    /// Whether the active memtable must be frozen now, and why.
    pub fn freeze_due(&self, limits: &Limits, now_ms: i64) -> Option<FreezeReason> {
        if self.active.is_empty() {
            return None;
        }
        if footprint(&self.active) >= limits.freeze_bytes {
            Some(FreezeReason::Size)
        } else if self.freeze_requested {
            Some(FreezeReason::Requested)
        } else if now_ms - self.active_opened_ms >= limits.max_age_ms {
            Some(FreezeReason::Age)
        } else {
            None
        }
    }

    /// Freezes the active memtable (if it holds anything) and opens `next_id`. Returns the
    /// frozen one.
    pub fn freeze(&mut self, next_id: u64, now_ms: i64) -> Option<Frozen> {
        self.freeze_requested = false;
        if self.active.is_empty() {
            return None;
        }
        self.active.freeze();
        let memtable = std::mem::replace(&mut self.active, Arc::new(Memtable::new(next_id)));
        let frozen = Frozen {
            after_seq: self.active_after,
            first_seq: memtable.first_seq().unwrap_or(self.active_after + 1),
            last_seq: memtable.last_seq().unwrap_or(self.applied_seq),
            bytes: footprint(&memtable),
            memtable,
            requested_at_ms: 0,
        };
        tracing::info!(
            table = %self.table,
            memtable_id = frozen.memtable.id(),
            after_seq = frozen.after_seq,
            first_seq = frozen.first_seq,
            last_seq = frozen.last_seq,
            entries = frozen.memtable.len(),
            "memtable frozen"
        );
        self.active_after = self.applied_seq;
        self.active_opened_ms = now_ms;
        self.frozen.push_back(frozen.clone());
        Some(frozen)
    }

    /// Backpressure: too many memtables wait for their flush; applying more would grow
    /// memory without bound.
    pub fn is_stalled(&self, limits: &Limits) -> bool {
        self.frozen.len() >= limits.max_frozen
    }

    /// The scheduler says the flushed checkpoint is `checkpoint`: drops the frozen
    /// memtables it covers. Returns how many were dropped.
    pub fn release(&mut self, checkpoint: SeqNo) -> usize {
        self.checkpoint = self.checkpoint.max(checkpoint);
        let before = self.frozen.len();
        while self
            .frozen
            .front()
            .is_some_and(|f| f.last_seq <= self.checkpoint)
        {
            if let Some(f) = self.frozen.pop_front() {
                tracing::info!(table = %self.table, memtable_id = f.memtable.id(), last_seq = f.last_seq, checkpoint = self.checkpoint, "memtable released");
            }
        }
        before - self.frozen.len()
    }

    pub fn frozen(&self) -> impl Iterator<Item = &Frozen> {
        self.frozen.iter()
    }

    /// Notes that the scheduler acknowledged the flush request of memtable `id`.
    pub fn mark_requested(&mut self, id: u64, now_ms: i64) {
        if let Some(f) = self.frozen.iter_mut().find(|f| f.memtable.id() == id) {
            f.requested_at_ms = now_ms;
        }
    }

    /// A frozen memtable by id (for a flusher to stream).
    pub fn frozen_memtable(&self, id: u64) -> Option<Arc<Memtable>> {
        self.frozen
            .iter()
            .find(|f| f.memtable.id() == id)
            .map(|f| f.memtable.clone())
    }

    /// Bytes in the active and frozen memtables.
    pub fn memory_bytes(&self) -> u64 {
        footprint(&self.active) + self.frozen.iter().map(|f| f.bytes).sum::<u64>()
    }

    pub fn frozen_count(&self) -> usize {
        self.frozen.len()
    }

    /// Every memtable, newest first (a read's consistent set: clone under the lock, read
    /// without it).
    pub fn memtables(&self) -> Vec<Arc<Memtable>> {
        std::iter::once(self.active.clone())
            .chain(self.frozen.iter().rev().map(|f| f.memtable.clone()))
            .collect()
    }
}

/// The newest version of `key` in `memtables` (newest first), tombstones included.
pub fn get(memtables: &[Arc<Memtable>], key: &[u8]) -> Option<Version> {
    // Sequence numbers grow from memtable to memtable: the first hit is the newest.
    memtables.iter().find_map(|m| {
        m.get(key, MAX_SEQNO).map(|(kind, value, seq)| Version {
            key: Bytes::copy_from_slice(key),
            value,
            seq,
            tombstone: kind == ValueKind::Delete,
        })
    })
}

/// The newest version of each key in `[start, end)` (`end` empty: unbounded), tombstones
/// included, at most `limit`. Returns the versions and whether the limit cut the scan short.
pub fn scan(
    memtables: &[Arc<Memtable>],
    start: &[u8],
    end: &[u8],
    limit: usize,
) -> Result<(Vec<Version>, bool), lsm::BoxError> {
    let sources: Vec<BoxedIterator> = memtables
        .iter()
        .map(|m| Box::new(m.iter()) as BoxedIterator)
        .collect();
    let mut it = MergingIterator::new(sources);
    it.seek(&lsm::key::lookup_key(start, MAX_SEQNO))?;
    let mut out: Vec<Version> = Vec::new();
    while it.valid() {
        let k = ParsedInternalKey::parse(it.key())?;
        if !end.is_empty() && k.user_key >= end {
            break;
        }
        // Internal-key order puts the newest version of a user key first.
        if out.last().is_none_or(|v| v.key.as_ref() != k.user_key) {
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(Version {
                key: Bytes::copy_from_slice(k.user_key),
                value: Bytes::copy_from_slice(it.value()),
                seq: k.seq,
                tombstone: k.kind == ValueKind::Delete,
            });
        }
        it.next()?;
    }
    Ok((out, false))
}

/// Every entry of a memtable in internal-key order (all versions), in chunks of `chunk`.
pub fn read_chunks(
    memtable: &Arc<Memtable>,
    chunk: usize,
    mut emit: impl FnMut(Vec<Version>) -> bool,
) -> Result<(), lsm::BoxError> {
    let mut it = memtable.iter();
    it.seek_to_first()?;
    let mut buf = Vec::with_capacity(chunk);
    while it.valid() {
        let k = ParsedInternalKey::parse(it.key())?;
        buf.push(Version {
            key: Bytes::copy_from_slice(k.user_key),
            value: Bytes::copy_from_slice(it.value()),
            seq: k.seq,
            tombstone: k.kind == ValueKind::Delete,
        });
        if buf.len() >= chunk && !emit(std::mem::replace(&mut buf, Vec::with_capacity(chunk))) {
            return Ok(());
        }
        it.next()?;
    }
    if !buf.is_empty() {
        emit(buf);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        freeze_bytes: 64 * 1024,
        max_age_ms: 1000,
        max_frozen: 2,
    };

    fn put(t: &mut TableState, seq: SeqNo, k: &str, v: &str) {
        t.apply(seq, ValueKind::Put, k.as_bytes(), v.as_bytes(), 0)
            .expect("apply");
    }

    #[test]
    fn the_ingest_rate_rises_with_writes_and_falls_to_zero_once_they_stop() {
        let mut t = TableState::new("t", 0, 1, 0);
        assert_eq!(t.ingest_rate(0), 0.0);
        // 1000 bytes per second for two seconds.
        for s in 1..=2u64 {
            t.apply(s, ValueKind::Put, b"k", &[0u8; 999], 0)
                .expect("apply");
            assert_eq!(t.ingest_rate(s as i64 * 1000), 1000.0);
        }
        // Nothing more: once the window has passed, the rate is zero.
        assert!(t.ingest_rate(4_000) > 0.0, "still inside the window");
        assert_eq!(t.ingest_rate(2_000 + INGEST_WINDOW_MS), 0.0);
    }

    #[test]
    fn memtables_tile_the_log_and_are_dropped_only_once_the_checkpoint_covers_them() {
        let mut t = TableState::new("t", 5, 1, 0);
        assert!(!t.apply(5, ValueKind::Put, b"old", b"x", 0).expect("apply"));
        put(&mut t, 6, "a", "1");
        put(&mut t, 7, "b", "1");
        let f1 = t.freeze(2, 10).expect("frozen");
        assert_eq!((f1.after_seq, f1.first_seq, f1.last_seq), (5, 6, 7));
        assert!(t.freeze(3, 10).is_none(), "nothing to freeze");
        // A hole in the log (skipped record): the next memtable still starts where the
        // previous one ended.
        put(&mut t, 10, "a", "2");
        let f2 = t.freeze(3, 20).expect("frozen");
        assert_eq!((f2.after_seq, f2.first_seq, f2.last_seq), (7, 10, 10));
        assert!(t.is_stalled(&LIMITS), "two frozen: backpressure");
        assert_eq!(t.release(6), 0, "a partial flush releases nothing");
        assert_eq!(t.release(7), 1);
        assert!(!t.is_stalled(&LIMITS));
        assert!(t.frozen_memtable(f1.memtable.id()).is_none());
        assert!(t.frozen_memtable(f2.memtable.id()).is_some());
        assert_eq!(t.release(3), 0, "the checkpoint never goes back");
        assert_eq!(t.checkpoint(), 7);
    }

    #[test]
    fn reads_see_the_newest_version_across_active_and_frozen_memtables() {
        let mut t = TableState::new("t", 0, 1, 0);
        put(&mut t, 1, "a", "1");
        put(&mut t, 2, "b", "1");
        t.freeze(2, 0);
        put(&mut t, 3, "a", "2");
        t.apply(4, ValueKind::Delete, b"b", b"", 0).expect("delete");
        put(&mut t, 5, "c", "1");
        let m = t.memtables();
        assert_eq!(
            get(&m, b"a").map(|v| (v.value, v.seq)),
            Some(("2".into(), 3))
        );
        assert!(get(&m, b"b").is_some_and(|v| v.tombstone && v.seq == 4));
        assert!(get(&m, b"z").is_none());
        let (all, cut) = scan(&m, b"", b"", 10).expect("scan");
        let seen: Vec<(&[u8], SeqNo, bool)> = all
            .iter()
            .map(|v| (v.key.as_ref(), v.seq, v.tombstone))
            .collect();
        assert_eq!(
            seen,
            vec![
                (&b"a"[..], 3, false),
                (&b"b"[..], 4, true),
                (&b"c"[..], 5, false)
            ]
        );
        assert!(!cut);
        let (some, cut) = scan(&m, b"b", b"c", 10).expect("scan");
        assert_eq!(some.len(), 1);
        assert!(!cut);
        let (one, cut) = scan(&m, b"", b"", 1).expect("scan");
        assert_eq!((one.len(), cut), (1, true));
    }

    #[test]
    fn a_frozen_memtable_streams_every_version_in_internal_key_order() {
        let mut t = TableState::new("t", 0, 1, 0);
        for seq in 1..=10u64 {
            put(&mut t, seq, &format!("k{}", seq % 3), &seq.to_string());
        }
        let f = t.freeze(2, 0).expect("frozen");
        let mut got = Vec::new();
        read_chunks(&f.memtable, 4, |c| {
            assert!(c.len() <= 4);
            got.extend(c);
            true
        })
        .expect("read");
        assert_eq!(got.len(), 10);
        for w in got.windows(2) {
            let ordered = w[0].key < w[1].key || (w[0].key == w[1].key && w[0].seq > w[1].seq);
            assert!(ordered, "{w:?}");
        }
    }

    #[test]
    fn freeze_triggers_size_age_and_request() {
        let mut t = TableState::new("t", 0, 1, 0);
        assert_eq!(
            t.freeze_due(&LIMITS, 1_000_000),
            None,
            "empty never freezes"
        );
        t.apply(1, ValueKind::Put, b"a", b"1", 500).expect("apply");
        assert_eq!(t.freeze_due(&LIMITS, 1000), None);
        assert_eq!(t.freeze_due(&LIMITS, 1500), Some(FreezeReason::Age));
        t.freeze_requested = true;
        assert_eq!(t.freeze_due(&LIMITS, 600), Some(FreezeReason::Requested));
        let big = vec![0u8; 70 * 1024];
        t.apply(2, ValueKind::Put, b"b", &big, 600).expect("apply");
        assert_eq!(t.freeze_due(&LIMITS, 600), Some(FreezeReason::Size));
    }
}
