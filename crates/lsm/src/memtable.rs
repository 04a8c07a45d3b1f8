//! The memtable: a table's most recent writes, in memory, in internal-key order.
//!
//! The replayer is the only writer (it applies WAL batches in sequence order); client reads
//! (Get/Scan) and a flusher streaming a *frozen* memtable read at the same time. That shape
//! is why the entries live in a lock-free skiplist ([`crossbeam_skiplist::base::SkipList`]):
//! readers never block the writer and never see a half-inserted entry, and nothing is ever
//! removed, so the skiplist's epoch garbage collection has no work to do.
//!
//! Vocabulary: an *entry* is one internal key with its value; a *version* is one entry of a
//! user key; *frozen* means immutable, the state in which a memtable is handed to a flusher.
//! A memtable keeps no creation time (this crate reads no clock): the replayer, which owns
//! the clock, notes when it opened one if the age-based flush trigger needs it.
//!
//! Memory: every entry's key and value are copied into an arena of large chunks, so the
//! memtable never pins the caller's buffers (a decoded WAL segment, say) and its footprint
//! is what [`Memtable::approximate_memory_usage`] says it is. The figure counts the chunks
//! and the skiplist nodes as the allocator sees them; `tests/memory_accounting.rs` checks it
//! against a counting global allocator, and fails if a dependency upgrade changes the node
//! layout.
//!
//! Iterators ([`MemtableIterator`]) own an `Arc` of the memtable and copy a small batch of
//! entry handles (reference-counted, no byte copies) out of the skiplist per refill, so they
//! outlive any borrow and can be boxed as a `dyn InternalIterator + Send` source of a merge.
//! They are not snapshots: an entry inserted after the iterator was created may or may not
//! be seen. Readers are expected to filter by sequence number (as [`crate::VisibleIterator`]
//! does), and a concurrent insert always carries a sequence number newer than any snapshot
//! already handed out.

use std::cmp::Ordering;
use std::mem::size_of;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};
use crossbeam_epoch as epoch;
use crossbeam_skiplist::base::SkipList;

use crate::iter::{BoxError, InternalIterator};
use crate::key::{
    MAX_SEQNO, SeqNo, TRAILER_LEN, ValueKind, compare_internal_keys, encode_internal_key,
    lookup_key,
};

/// Identifies a memtable within its table (assigned by the replayer), for error messages.
pub type MemtableId = u64;

/// Why an insert was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemtableError {
    #[error("memtable {id} is frozen: insert of seq {seq} refused")]
    Frozen { id: MemtableId, seq: SeqNo },
    #[error("sequence number {seq} exceeds the 56-bit maximum (memtable {id})")]
    SeqOutOfRange { id: MemtableId, seq: SeqNo },
}

/// Smallest arena chunk: a memtable with a handful of entries stays small.
const MIN_CHUNK: usize = 4 * 1024;
/// Largest arena chunk: bounds the unused tail of the last chunk to ~1.5% of a 64 MiB table.
const MAX_CHUNK: usize = 1024 * 1024;
/// Entries at least this large get a chunk of their own instead of wasting a shared chunk's
/// tail.
const LARGE_ENTRY: usize = MAX_CHUNK / 8;
/// The allocation `bytes` makes the first time a chunk is shared (its `Shared` header:
/// a `Vec`, a capacity hint and a reference count).
const CHUNK_HEADER: usize = 5 * size_of::<usize>();
/// crossbeam's skiplist draws tower heights from a geometric distribution with p = 1/2,
/// so a node carries on average two tower pointers.
const EXPECTED_TOWER_HEIGHT: usize = 2;
/// One skiplist node as allocated: the (zero-sized) value, the key, a reference-count/height
/// word and the tower of pointers.
const NODE_SIZE: usize =
    size_of::<MemEntry>() + size_of::<usize>() + EXPECTED_TOWER_HEIGHT * size_of::<usize>();

/// Entries copied out of the skiplist by the first refill after a seek: a point lookup
/// reads one or two, so it should not pay for more.
const FIRST_BATCH: usize = 8;
/// Refills double up to this size, so a long scan amortizes the skiplist seek per refill.
const MAX_BATCH: usize = 256;

/// One entry: the encoded internal key followed by the value, in one arena slice.
///
/// Keeping both in one `Bytes` (rather than a key `Bytes` and a value `Bytes`) saves a
/// 32-byte handle per node. The first 16 bytes of the user key are copied into the node:
/// a skiplist search compares against dozens of nodes, and most comparisons are then
/// decided without touching the arena, one cache miss instead of two. Sixteen, not eight,
/// because real keys share long prefixes (`user:0000…`, `key-0000…`): with eight, those
/// comparisons all fell through to the arena and replay ran at half speed.
#[derive(Clone)]
struct MemEntry {
    buf: Bytes,
    key_len: usize,
    prefix: [u64; 2],
}

/// The first 16 bytes of `user_key`, zero-padded, as two big-endian words: when two
/// prefixes differ they order the user keys (a zero pad sorts like "shorter"); when equal,
/// compare the keys.
fn key_prefix(user_key: &[u8]) -> [u64; 2] {
    let mut p = [0u8; 16];
    let n = user_key.len().min(16);
    p[..n].copy_from_slice(&user_key[..n]);
    let (hi, lo) = p.split_at(8);
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(b);
        u64::from_be_bytes(w)
    };
    [word(hi), word(lo)]
}

impl MemEntry {
    fn new(buf: Bytes, key_len: usize) -> Self {
        let prefix = key_prefix(crate::key::user_key(&buf[..key_len]));
        Self {
            buf,
            key_len,
            prefix,
        }
    }

    /// A search key: an encoded internal key with no value.
    fn probe(encoded_key: Vec<u8>) -> Self {
        let key_len = encoded_key.len();
        Self::new(Bytes::from(encoded_key), key_len)
    }

    fn key(&self) -> &[u8] {
        &self.buf[..self.key_len]
    }

    fn value(&self) -> &[u8] {
        &self.buf[self.key_len..]
    }

    /// The user key, sequence number and kind. Keys in a memtable are encoded by
    /// [`Memtable::insert`] only, so the trailer is always well formed.
    fn parsed(&self) -> (&[u8], SeqNo, ValueKind) {
        let key = self.key();
        let split = key.len().saturating_sub(TRAILER_LEN);
        let mut t = [0u8; TRAILER_LEN];
        t.copy_from_slice(&key[split..]);
        let packed = u64::from_le_bytes(t);
        let kind = if packed & 0xff == ValueKind::Delete as u64 {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        (&key[..split], packed >> 8, kind)
    }
}

impl PartialEq for MemEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for MemEntry {}

impl PartialOrd for MemEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MemEntry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| compare_internal_keys(self.key(), other.key()))
    }
}

/// The writer's side: the arena chunk being filled. Behind a mutex only because inserts
/// take `&self` (the memtable is shared through an `Arc`); there is one writer, so it is
/// never contended, and readers never touch it.
struct Arena {
    chunk: BytesMut,
    next_chunk: usize,
    scratch: Vec<u8>,
}

impl Arena {
    /// Copies `key ++ trailer ++ value` into the arena. Returns the entry and the bytes
    /// newly allocated for it (0 unless a chunk was started).
    fn alloc(
        &mut self,
        user_key: &[u8],
        seq: SeqNo,
        kind: ValueKind,
        value: &[u8],
    ) -> (MemEntry, usize) {
        self.scratch.clear();
        encode_internal_key(user_key, seq, kind, &mut self.scratch);
        let key_len = self.scratch.len();
        let need = key_len + value.len();
        let mut allocated = 0;
        let buf = if need >= LARGE_ENTRY {
            let mut own = BytesMut::with_capacity(need);
            allocated = own.capacity() + CHUNK_HEADER;
            fill_entry(&mut own, &self.scratch, value)
        } else {
            // What is left after the previous `split()` is the chunk's unused tail; never
            // let `extend_from_slice` grow it, which would reallocate and copy.
            if self.chunk.capacity() - self.chunk.len() < need {
                self.chunk = BytesMut::with_capacity(self.next_chunk.max(need));
                self.next_chunk = (self.next_chunk * 2).min(MAX_CHUNK);
                allocated = self.chunk.capacity() + CHUNK_HEADER;
            }
            fill_entry(&mut self.chunk, &self.scratch, value)
        };
        (MemEntry::new(buf, key_len), allocated)
    }
}

/// Appends `key ++ value` to `target` and splits it off as an immutable slice that shares
/// the chunk's allocation.
fn fill_entry(target: &mut BytesMut, key: &[u8], value: &[u8]) -> Bytes {
    target.extend_from_slice(key);
    target.extend_from_slice(value);
    target.split().freeze()
}

/// A table's in-memory write buffer. See the module docs.
pub struct Memtable {
    id: MemtableId,
    /// The skiplist itself (crossbeam's `base` API: reads pin the epoch once per batch of
    /// entries and borrow them, instead of pinning and reference-counting every step).
    entries: SkipList<MemEntry, ()>,
    arena: Mutex<Arena>,
    frozen: AtomicBool,
    len: AtomicUsize,
    memory: AtomicUsize,
    min_seq: AtomicU64,
    max_seq: AtomicU64,
}

impl std::fmt::Debug for Memtable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memtable")
            .field("id", &self.id)
            .field("len", &self.len())
            .field("frozen", &self.is_frozen())
            .field("memory", &self.approximate_memory_usage())
            .field("seqs", &self.first_seq().zip(self.last_seq()))
            .finish()
    }
}

impl Memtable {
    /// An empty, mutable memtable.
    pub fn new(id: MemtableId) -> Self {
        Self {
            id,
            entries: SkipList::new(epoch::default_collector().clone()),
            arena: Mutex::new(Arena {
                chunk: BytesMut::new(),
                next_chunk: MIN_CHUNK,
                scratch: Vec::new(),
            }),
            frozen: AtomicBool::new(false),
            len: AtomicUsize::new(0),
            memory: AtomicUsize::new(size_of::<Self>()),
            min_seq: AtomicU64::new(u64::MAX),
            max_seq: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> MemtableId {
        self.id
    }

    /// Adds one version of `user_key`. For a tombstone (`ValueKind::Delete`) `value` is
    /// ignored and stored empty, as the iterator contract requires.
    ///
    /// Inserting an internal key that is already present (same user key, sequence number and
    /// kind) keeps the first copy: that only happens when a WAL batch is replayed twice.
    pub fn insert(
        &self,
        user_key: &[u8],
        seq: SeqNo,
        kind: ValueKind,
        value: &[u8],
    ) -> Result<(), MemtableError> {
        if seq > MAX_SEQNO {
            return Err(MemtableError::SeqOutOfRange { id: self.id, seq });
        }
        // A panic while holding the lock cannot leave the arena inconsistent (the chunk is
        // only replaced whole), so a poisoned lock is still usable.
        let mut arena = self.arena.lock().unwrap_or_else(PoisonError::into_inner);
        // Checked under the lock: once `freeze` returns, no insert is in flight.
        if self.frozen.load(AtomicOrdering::Acquire) {
            return Err(MemtableError::Frozen { id: self.id, seq });
        }
        let value = if kind == ValueKind::Delete {
            &[][..]
        } else {
            value
        };
        let (entry, allocated) = arena.alloc(user_key, seq, kind, value);
        self.min_seq.fetch_min(seq, AtomicOrdering::Relaxed);
        self.max_seq.fetch_max(seq, AtomicOrdering::Relaxed);
        let mut grown = allocated;
        let ours = entry.buf.as_ptr();
        // `get_or_insert` hands back the existing entry for a duplicate without allocating.
        let guard = &epoch::pin();
        let stored = self.entries.get_or_insert(entry, (), guard);
        let inserted = stored.key().buf.as_ptr() == ours;
        stored.release(guard);
        if inserted {
            grown += NODE_SIZE;
            // Release: a reader that sees the new length also sees min/max seq.
            self.len.fetch_add(1, AtomicOrdering::Release);
        }
        self.memory.fetch_add(grown, AtomicOrdering::Relaxed);
        Ok(())
    }

    /// The newest version of `user_key` with a sequence number `<= snapshot`: its kind,
    /// value (empty for a tombstone) and sequence number.
    pub fn get(&self, user_key: &[u8], snapshot: SeqNo) -> Option<(ValueKind, Bytes, SeqNo)> {
        let probe = MemEntry::probe(lookup_key(user_key, snapshot));
        let guard = &epoch::pin();
        let found = self.entries.lower_bound(Bound::Included(&probe), guard)?;
        let entry = found.key();
        let (uk, seq, kind) = entry.parsed();
        (uk == user_key).then(|| (kind, entry.buf.slice(entry.key_len..), seq))
    }

    /// An iterator over every entry, in internal-key order. Not positioned: call
    /// `seek_to_first` or `seek` first.
    pub fn iter(self: &Arc<Self>) -> MemtableIterator {
        MemtableIterator {
            table: Arc::clone(self),
            batch: Vec::new(),
            pos: 0,
            more: false,
            next_batch: FIRST_BATCH,
        }
    }

    /// Bytes allocated for this memtable: arena chunks (keys and values), skiplist nodes and
    /// the struct itself. Excludes the allocator's own per-allocation bookkeeping.
    pub fn approximate_memory_usage(&self) -> usize {
        self.memory.load(AtomicOrdering::Relaxed)
    }

    /// Number of entries (versions, tombstones included).
    pub fn len(&self) -> usize {
        self.len.load(AtomicOrdering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The smallest sequence number inserted. WAL sequence numbers strictly increase, so
    /// this is the first write the memtable holds.
    pub fn first_seq(&self) -> Option<SeqNo> {
        (!self.is_empty()).then(|| self.min_seq.load(AtomicOrdering::Relaxed))
    }

    /// The largest sequence number inserted: the checkpoint a flush of this memtable
    /// establishes.
    pub fn last_seq(&self) -> Option<SeqNo> {
        (!self.is_empty()).then(|| self.max_seq.load(AtomicOrdering::Relaxed))
    }

    /// Makes the memtable immutable; later inserts fail with [`MemtableError::Frozen`].
    /// Idempotent. When it returns, no insert is in progress, so the contents are final.
    pub fn freeze(&self) {
        let mut arena = self.arena.lock().unwrap_or_else(PoisonError::into_inner);
        self.frozen.store(true, AtomicOrdering::Release);
        // Drop the writer's handle on the last chunk; its entries keep it alive.
        arena.chunk = BytesMut::new();
        arena.scratch = Vec::new();
    }

    pub fn is_frozen(&self) -> bool {
        self.frozen.load(AtomicOrdering::Acquire)
    }
}

/// A cursor over a memtable, owning an `Arc` of it. See the module docs for its
/// consistency guarantee.
pub struct MemtableIterator {
    table: Arc<Memtable>,
    /// Entry handles copied out of the skiplist; `pos` indexes the current one.
    batch: Vec<MemEntry>,
    pos: usize,
    /// Whether the skiplist may hold entries after the batch.
    more: bool,
    next_batch: usize,
}

impl MemtableIterator {
    fn fill(&mut self, from: Bound<&MemEntry>) {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        {
            // One epoch pin per batch; entries are borrowed, not reference-counted.
            let guard = &epoch::pin();
            let mut range = self.table.entries.range((from, Bound::Unbounded), guard);
            while batch.len() < self.next_batch {
                match range.next() {
                    Some(e) => batch.push(e.key().clone()),
                    None => break,
                }
            }
        }
        // Touch every entry's bytes now, in one loop of independent loads: the CPU overlaps
        // the cache misses into the arena (which is in insertion order, not key order)
        // instead of taking them one by one as the consumer walks the batch. A flush of a
        // large memtable is bound by these misses.
        let mut touched = 0u8;
        for e in &batch {
            touched ^= e.buf.first().copied().unwrap_or(0) ^ e.buf.last().copied().unwrap_or(0);
        }
        std::hint::black_box(touched);
        self.more = batch.len() == self.next_batch;
        self.next_batch = (self.next_batch * 2).min(MAX_BATCH);
        self.batch = batch;
        self.pos = 0;
    }

    fn current(&self) -> Option<&MemEntry> {
        self.batch.get(self.pos)
    }
}

impl InternalIterator for MemtableIterator {
    fn valid(&self) -> bool {
        self.pos < self.batch.len()
    }

    fn key(&self) -> &[u8] {
        self.current().map_or(&[], MemEntry::key)
    }

    fn value(&self) -> &[u8] {
        self.current().map_or(&[], MemEntry::value)
    }

    fn next(&mut self) -> Result<(), BoxError> {
        if !self.valid() {
            return Ok(());
        }
        self.pos += 1;
        if self.pos == self.batch.len() && self.more {
            let last = self.batch[self.pos - 1].clone();
            self.fill(Bound::Excluded(&last));
        }
        Ok(())
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        self.next_batch = FIRST_BATCH;
        let probe = MemEntry::probe(target.to_vec());
        self.fill(Bound::Included(&probe));
        Ok(())
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.next_batch = FIRST_BATCH;
        self.fill(Bound::Unbounded);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::{InternalKey, ParsedInternalKey};
    use crate::merge::VisibleIterator;
    use crate::testing::collect_entries;
    use std::sync::atomic::AtomicU64;

    fn scan(table: &Arc<Memtable>) -> Vec<(InternalKey, Vec<u8>)> {
        let mut it = table.iter();
        it.seek_to_first().expect("seek");
        collect_entries(&mut it)
            .expect("scan")
            .into_iter()
            .map(|(k, v)| {
                let p = ParsedInternalKey::parse(&k).expect("key");
                (InternalKey::new(p.user_key.to_vec(), p.seq, p.kind), v)
            })
            .collect()
    }

    #[test]
    fn get_returns_the_newest_version_at_or_below_the_snapshot() {
        let t = Memtable::new(7);
        t.insert(b"k", 3, ValueKind::Put, b"v3").expect("insert");
        t.insert(b"k", 5, ValueKind::Delete, b"ignored")
            .expect("insert");
        t.insert(b"k", 8, ValueKind::Put, b"v8").expect("insert");
        t.insert(b"k\0", 4, ValueKind::Put, b"other")
            .expect("insert");
        assert_eq!(t.get(b"k", 2), None);
        assert_eq!(t.get(b"k", 3), Some((ValueKind::Put, Bytes::from("v3"), 3)));
        assert_eq!(t.get(b"k", 4), Some((ValueKind::Put, Bytes::from("v3"), 3)));
        assert_eq!(t.get(b"k", 5), Some((ValueKind::Delete, Bytes::new(), 5)));
        assert_eq!(
            t.get(b"k", MAX_SEQNO),
            Some((ValueKind::Put, Bytes::from("v8"), 8))
        );
        assert_eq!(t.get(b"", MAX_SEQNO), None);
        assert_eq!(t.get(b"j", MAX_SEQNO), None);
        assert_eq!(
            (t.len(), t.first_seq(), t.last_seq()),
            (4, Some(3), Some(8))
        );
    }

    #[test]
    fn iterates_in_internal_key_order_and_outlives_the_handle() {
        let t = Arc::new(Memtable::new(1));
        // Enough entries to cross several batch refills.
        for i in 0..1000u64 {
            let key = format!("key{:04}", i % 97);
            t.insert(key.as_bytes(), i + 1, ValueKind::Put, &i.to_le_bytes())
                .expect("insert");
        }
        let mut it = t.iter();
        drop(t);
        it.seek_to_first().expect("seek");
        let entries = collect_entries(&mut it).expect("scan");
        assert_eq!(entries.len(), 1000);
        assert!(
            entries
                .windows(2)
                .all(|w| compare_internal_keys(&w[0].0, &w[1].0).is_lt())
        );

        let target = lookup_key(b"key0050", 500);
        it.seek(&target).expect("seek");
        let p = ParsedInternalKey::parse(it.key()).expect("key");
        assert_eq!(p.user_key, b"key0050");
        assert!(p.seq <= 500);
        it.seek(&lookup_key(b"zzz", MAX_SEQNO)).expect("seek");
        assert!(!it.valid());
        assert_eq!((it.key(), it.value()), (&[][..], &[][..]));
        it.next().expect("next past the end is a no-op");
    }

    #[test]
    fn tombstones_store_no_value_and_duplicates_keep_the_first_copy() {
        let t = Arc::new(Memtable::new(1));
        t.insert(b"a", 1, ValueKind::Delete, b"junk")
            .expect("insert");
        t.insert(b"b", 2, ValueKind::Put, b"first").expect("insert");
        let before = t.approximate_memory_usage();
        t.insert(b"b", 2, ValueKind::Put, b"second")
            .expect("replayed insert");
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.approximate_memory_usage(),
            before,
            "no node for a duplicate"
        );
        assert_eq!(
            scan(&t),
            [
                (InternalKey::new(&b"a"[..], 1, ValueKind::Delete), vec![]),
                (
                    InternalKey::new(&b"b"[..], 2, ValueKind::Put),
                    b"first".to_vec()
                ),
            ]
        );
    }

    #[test]
    fn rejects_sequence_numbers_past_56_bits() {
        let t = Memtable::new(3);
        assert_eq!(
            t.insert(b"k", MAX_SEQNO + 1, ValueKind::Put, b""),
            Err(MemtableError::SeqOutOfRange {
                id: 3,
                seq: MAX_SEQNO + 1
            })
        );
        t.insert(b"k", MAX_SEQNO, ValueKind::Put, b"")
            .expect("max is fine");
        assert!(!t.is_empty() && t.last_seq() == Some(MAX_SEQNO));
    }

    #[test]
    fn freeze_makes_the_memtable_immutable() {
        let t = Arc::new(Memtable::new(9));
        assert!(!t.is_frozen());
        assert_eq!((t.first_seq(), t.last_seq()), (None, None));
        t.insert(b"a", 1, ValueKind::Put, b"1").expect("insert");
        t.insert(b"b", 2, ValueKind::Put, b"2").expect("insert");
        let memory = t.approximate_memory_usage();
        t.freeze();
        t.freeze();
        assert!(t.is_frozen());
        let err = t.insert(b"c", 3, ValueKind::Put, b"3").expect_err("frozen");
        assert_eq!(err, MemtableError::Frozen { id: 9, seq: 3 });
        assert_eq!(
            err.to_string(),
            "memtable 9 is frozen: insert of seq 3 refused"
        );
        assert_eq!((t.len(), t.last_seq()), (2, Some(2)));
        assert_eq!(t.approximate_memory_usage(), memory);
        assert_eq!(t.get(b"b", 10), Some((ValueKind::Put, Bytes::from("2"), 2)));
        assert_eq!(scan(&t).len(), 2);
    }

    #[test]
    fn freeze_waits_for_the_insert_in_flight() {
        let t = Arc::new(Memtable::new(1));
        std::thread::scope(|s| {
            let writer = s.spawn(|| {
                let mut seq = 0u64;
                loop {
                    seq += 1;
                    if t.insert(&seq.to_be_bytes(), seq, ValueKind::Put, b"v")
                        .is_err()
                    {
                        return seq - 1;
                    }
                }
            });
            while t.len() < 1000 {
                std::thread::yield_now();
            }
            t.freeze();
            let len_at_freeze = t.len();
            let written = writer.join().expect("writer");
            // Every insert that succeeded finished before `freeze` returned.
            assert_eq!(len_at_freeze as u64, written);
            assert_eq!(t.len(), len_at_freeze);
        });
    }

    /// The write schedule of the concurrency test: seq `s` writes key `s * 7 % KEYS`,
    /// deleting it on every fifth seq.
    const KEYS: u64 = 257;
    fn scheduled(seq: SeqNo) -> (Vec<u8>, ValueKind) {
        let key = format!("user{:05}", seq * 7 % KEYS).into_bytes();
        let kind = if seq.is_multiple_of(5) {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        (key, kind)
    }

    /// The seqs that write each key, ascending.
    fn versions(writes: SeqNo) -> Vec<Vec<SeqNo>> {
        let mut v = vec![Vec::new(); KEYS as usize];
        for seq in 1..=writes {
            v[(seq * 7 % KEYS) as usize].push(seq);
        }
        v
    }

    /// What a reader at `snapshot` must see for `key_index`.
    fn expected(
        versions: &[Vec<SeqNo>],
        key_index: u64,
        snapshot: SeqNo,
    ) -> Option<(ValueKind, SeqNo)> {
        let seqs = &versions[key_index as usize];
        let visible = seqs.partition_point(|&s| s <= snapshot);
        visible
            .checked_sub(1)
            .map(|i| (scheduled(seqs[i]).1, seqs[i]))
    }

    #[test]
    fn readers_see_consistent_snapshots_while_the_writer_inserts() {
        const WRITES: u64 = 20_000;
        let t = Arc::new(Memtable::new(1));
        // The replayer publishes the last applied seq; readers take it as their snapshot.
        let published = AtomicU64::new(0);
        let versions = &versions(WRITES);
        std::thread::scope(|s| {
            s.spawn(|| {
                for seq in 1..=WRITES {
                    let (key, kind) = scheduled(seq);
                    t.insert(&key, seq, kind, &seq.to_le_bytes())
                        .expect("insert");
                    published.store(seq, AtomicOrdering::Release);
                }
            });
            // Point readers.
            for reader in 0..2u64 {
                let (t, published) = (&t, &published);
                s.spawn(move || {
                    let mut checks = 0u64;
                    let mut key_index = reader;
                    loop {
                        let snapshot = published.load(AtomicOrdering::Acquire);
                        key_index = (key_index + 31) % KEYS;
                        let key = format!("user{key_index:05}").into_bytes();
                        let got = t.get(&key, snapshot).map(|(kind, v, seq)| {
                            if kind == ValueKind::Put {
                                assert_eq!(v.as_ref(), &seq.to_le_bytes());
                            }
                            (kind, seq)
                        });
                        assert_eq!(
                            got,
                            expected(versions, key_index, snapshot),
                            "snapshot {snapshot}"
                        );
                        checks += 1;
                        if snapshot == WRITES && checks > 1000 {
                            return;
                        }
                    }
                });
            }
            // A scanning reader through the user view.
            s.spawn(|| {
                loop {
                    let snapshot = published.load(AtomicOrdering::Acquire);
                    let mut view = VisibleIterator::new(t.iter(), snapshot);
                    view.seek_to_first().expect("seek");
                    let mut live = 0;
                    while view.valid() {
                        let key_index: u64 = std::str::from_utf8(&view.key()[4..])
                            .expect("utf8")
                            .parse()
                            .expect("index");
                        let want =
                            expected(versions, key_index, snapshot).expect("a visible key exists");
                        assert_eq!(want.0, ValueKind::Put);
                        assert_eq!(view.value(), &want.1.to_le_bytes());
                        live += 1;
                        view.next().expect("next");
                    }
                    let want_live = (0..KEYS)
                        .filter(|&k| {
                            matches!(expected(versions, k, snapshot), Some((ValueKind::Put, _)))
                        })
                        .count();
                    assert_eq!(live, want_live, "snapshot {snapshot}");
                    if snapshot == WRITES {
                        return;
                    }
                }
            });
        });
        assert_eq!(t.len() as u64, WRITES);
    }
}
