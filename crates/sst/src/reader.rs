//! Reading an SST: open (footer, index, filter, properties), point lookups, iteration.
//!
//! An open reader holds the decoded index, the filter and the properties in memory; data
//! blocks are read from the [`SstSource`] one at a time, when a lookup or an iterator needs
//! them (no block cache here: that is the caller's policy).

use std::cmp::Ordering;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use bytes::Bytes;
use lsm::key::{TRAILER_LEN, compare_internal_keys, lookup_key, pack_trailer, user_key};
use lsm::{BoxError, InternalIterator, MAX_SEQNO, ParsedInternalKey, SeqNo, ValueKind};

use crate::block::{Block, BlockIter};
use crate::bloom::BloomFilter;
use crate::error::{Result, SstError};
use crate::format::{BlockHandle, FOOTER_LEN, Footer, read_block};
use crate::properties::Properties;
use crate::source::SstSource;

/// The newest visible version of a key, as found by [`SstReader::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// `Delete`: the key was deleted at `seq` (the value is then empty by convention).
    pub kind: ValueKind,
    pub value: Bytes,
    pub seq: SeqNo,
}

/// Counters of a reader (all lookups through all clones), for benchmarks and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Calls to [`SstReader::get`].
    pub gets: u64,
    /// Lookups answered "absent" by the bloom filter without reading a block.
    pub bloom_negatives: u64,
    /// Data blocks read from the source (lookups and iterators).
    pub blocks_read: u64,
}

#[derive(Default)]
struct Counters {
    gets: AtomicU64,
    bloom_negatives: AtomicU64,
    blocks_read: AtomicU64,
}

/// Decoded index: separator keys in one buffer, with their block handles.
struct Index {
    keys: Vec<u8>,
    /// (end of this entry's key in `keys`, handle); the key starts at the previous end.
    entries: Vec<(usize, BlockHandle)>,
}

impl Index {
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn key(&self, i: usize) -> &[u8] {
        let start = match i.checked_sub(1) {
            Some(p) => self.entries.get(p).map_or(0, |e| e.0),
            None => 0,
        };
        let end = self.entries.get(i).map_or(start, |e| e.0);
        self.keys.get(start..end).unwrap_or_default()
    }

    /// The first block whose separator is `>= target`: the only block that can hold the
    /// first entry `>= target` (blocks after it only hold larger keys).
    fn find(&self, target: &[u8]) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if compare_internal_keys(self.key(mid), target) == Ordering::Less {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn handle(&self, i: usize) -> Option<BlockHandle> {
        self.entries.get(i).map(|e| e.1)
    }
}

struct Inner {
    file: String,
    source: Box<dyn SstSource>,
    size: u64,
    index: Index,
    filter: Option<BloomFilter>,
    properties: Properties,
    counters: Counters,
}

impl Inner {
    fn corrupt(&self, offset: u64, reason: impl Into<String>) -> SstError {
        SstError::corruption(&self.file, offset, reason)
    }

    /// Reads and decodes data block `i` of the index.
    fn data_block(&self, i: usize) -> Result<Block> {
        let handle = self
            .index
            .handle(i)
            .ok_or_else(|| self.corrupt(0, format!("no data block {i}")))?;
        self.counters
            .blocks_read
            .fetch_add(1, AtomicOrdering::Relaxed);
        let bytes = read_block(self.source.as_ref(), &self.file, handle)?;
        Block::new(bytes).map_err(|reason| self.corrupt(handle.offset, reason))
    }
}

/// An open SST file. Cheap to clone (shared state); `Send + Sync`.
#[derive(Clone)]
pub struct SstReader {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SstReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SstReader")
            .field("file", &self.inner.file)
            .field("size", &self.inner.size)
            .field("data_blocks", &self.inner.index.len())
            .finish()
    }
}

impl SstReader {
    /// Opens `source`: reads and verifies the footer, properties, index and filter. Data
    /// blocks are read later, on demand. `file_name` names the file in errors.
    pub fn open<S: SstSource + 'static>(source: S, file_name: impl Into<String>) -> Result<Self> {
        let file = file_name.into();
        let corrupt = |offset: u64, reason: String| SstError::corruption(&file, offset, reason);
        let size = source.size();
        let footer_offset = size.checked_sub(FOOTER_LEN as u64).ok_or_else(|| {
            corrupt(
                0,
                format!("file of {size} bytes is shorter than the {FOOTER_LEN}-byte footer"),
            )
        })?;
        let footer_bytes = source
            .read_at(footer_offset, FOOTER_LEN)
            .map_err(|e| SstError::io(&file, e))?;
        let footer = Footer::decode(&footer_bytes, &file, footer_offset)?;

        let has_filter = footer.filter != BlockHandle::default();
        for (name, handle, present) in [
            ("index", footer.index, true),
            ("filter", footer.filter, has_filter),
            ("properties", footer.properties, true),
        ] {
            if present {
                handle
                    .check_within(footer_offset)
                    .map_err(|r| corrupt(footer_offset, format!("{name} handle: {r}")))?;
            }
        }

        let props_block = read_block(&source, &file, footer.properties)?;
        let properties = Properties::decode(props_block)
            .map_err(|r| corrupt(footer.properties.offset, format!("properties block: {r}")))?;

        let index_block = read_block(&source, &file, footer.index)?;
        let index = decode_index(index_block, footer_offset)
            .map_err(|r| corrupt(footer.index.offset, format!("index block: {r}")))?;
        if index.len() as u64 != properties.data_block_count {
            return Err(corrupt(
                footer.index.offset,
                format!(
                    "index lists {} data blocks, properties say {}",
                    index.len(),
                    properties.data_block_count
                ),
            ));
        }

        let filter = if has_filter {
            let block = read_block(&source, &file, footer.filter)?;
            Some(
                BloomFilter::new(block)
                    .map_err(|r| corrupt(footer.filter.offset, format!("filter block: {r}")))?,
            )
        } else {
            None
        };

        Ok(Self {
            inner: Arc::new(Inner {
                file,
                source: Box::new(source),
                size,
                index,
                filter,
                properties,
                counters: Counters::default(),
            }),
        })
    }

    pub fn file_name(&self) -> &str {
        &self.inner.file
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.inner.size
    }

    pub fn properties(&self) -> &Properties {
        &self.inner.properties
    }

    /// Number of data blocks.
    pub fn data_block_count(&self) -> usize {
        self.inner.index.len()
    }

    /// Up to `max` user keys spread evenly over the file's data blocks, in increasing
    /// order: the index's block separators, so no data is read. Cut points for splitting
    /// work on the file by key range (subcompactions).
    pub fn sample_user_keys(&self, max: usize) -> Vec<Bytes> {
        let n = self.inner.index.len();
        if n == 0 || max == 0 {
            return Vec::new();
        }
        let step = (n / max).max(1);
        let mut keys: Vec<Bytes> = (step - 1..n)
            .step_by(step)
            .take(max)
            .map(|i| Bytes::copy_from_slice(lsm::key::user_key(self.inner.index.key(i))))
            .collect();
        keys.dedup();
        keys
    }

    /// False if the bloom filter says `user_key` is certainly not in the file (always true
    /// for a file written without a filter).
    pub fn may_contain(&self, user_key: &[u8]) -> bool {
        self.inner
            .filter
            .as_ref()
            .is_none_or(|f| f.may_contain(user_key))
    }

    /// The newest version of user key `key` with a sequence number `<= snapshot`, tombstones
    /// included (the caller decides what a tombstone hides). Reads at most one data block.
    pub fn get(&self, key: &[u8], snapshot: SeqNo) -> Result<Option<Found>> {
        let inner = &*self.inner;
        inner.counters.gets.fetch_add(1, AtomicOrdering::Relaxed);
        if !self.may_contain(key) {
            inner
                .counters
                .bloom_negatives
                .fetch_add(1, AtomicOrdering::Relaxed);
            return Ok(None);
        }
        // The seek key (user key + trailer), on the stack for typical key sizes.
        let mut stack = [0u8; 128];
        let heap;
        let target: &[u8] = match stack.get_mut(..key.len() + TRAILER_LEN) {
            Some(buf) => {
                let (uk, trailer) = buf.split_at_mut(key.len());
                uk.copy_from_slice(key);
                let packed = pack_trailer(snapshot.min(MAX_SEQNO), ValueKind::Put);
                trailer.copy_from_slice(&packed.to_le_bytes());
                buf
            }
            None => {
                heap = lookup_key(key, snapshot);
                &heap
            }
        };
        let i = inner.index.find(target);
        if i >= inner.index.len() {
            return Ok(None);
        }
        let block = inner.data_block(i)?;
        let offset = inner.index.handle(i).map_or(0, |h| h.offset);
        let mut it = block.iter();
        it.seek(target).map_err(|r| inner.corrupt(offset, r))?;
        // Only this block can hold it: every key of the next block is above the separator,
        // which is at or above `target` and below the next user key.
        if !it.valid() || user_key(it.key()) != key {
            return Ok(None);
        }
        let parsed = ParsedInternalKey::parse(it.key())
            .map_err(|e| inner.corrupt(offset, format!("bad key in data block: {e}")))?;
        Ok(Some(Found {
            kind: parsed.kind,
            value: it.value_bytes(),
            seq: parsed.seq,
        }))
    }

    /// A cursor over all entries, initially unpositioned (call `seek_to_first` or `seek`).
    pub fn iter(&self) -> SstIterator {
        SstIterator {
            inner: Arc::clone(&self.inner),
            block_index: 0,
            block: None,
        }
    }

    pub fn stats(&self) -> ReaderStats {
        let c = &self.inner.counters;
        ReaderStats {
            gets: c.gets.load(AtomicOrdering::Relaxed),
            bloom_negatives: c.bloom_negatives.load(AtomicOrdering::Relaxed),
            blocks_read: c.blocks_read.load(AtomicOrdering::Relaxed),
        }
    }
}

/// Decodes and validates the whole index: internal keys strictly increasing, block handles
/// in order, non-overlapping and inside the block area.
fn decode_index(block: Bytes, block_area_end: u64) -> std::result::Result<Index, String> {
    let mut it = Block::new(block)?.iter();
    it.seek_to_first()?;
    let mut index = Index {
        keys: Vec::new(),
        entries: Vec::new(),
    };
    let mut prev_end = 0u64;
    while it.valid() {
        let n = index.len();
        ParsedInternalKey::parse(it.key()).map_err(|e| format!("entry {n}: {e}"))?;
        if n > 0 && compare_internal_keys(index.key(n - 1), it.key()) != Ordering::Less {
            return Err(format!("entry {n}: keys out of order"));
        }
        let handle = BlockHandle::decode_varint(it.value())
            .ok_or_else(|| format!("entry {n}: malformed block handle"))?;
        handle
            .check_within(block_area_end)
            .map_err(|r| format!("entry {n}: {r}"))?;
        if handle.offset < prev_end {
            return Err(format!(
                "entry {n}: block at {} overlaps the previous one",
                handle.offset
            ));
        }
        prev_end = handle.end().unwrap_or(u64::MAX);
        index.keys.extend_from_slice(it.key());
        index.entries.push((index.keys.len(), handle));
        it.next()?;
    }
    Ok(index)
}

/// A streaming cursor over an SST: holds one data block at a time.
pub struct SstIterator {
    inner: Arc<Inner>,
    /// Index entry of the block in `block`.
    block_index: usize,
    block: Option<BlockIter>,
}

impl SstIterator {
    fn block_offset(&self) -> u64 {
        self.inner
            .index
            .handle(self.block_index)
            .map_or(0, |h| h.offset)
    }

    /// Turns a block-level reason into an error and leaves the iterator invalid.
    fn fail(&mut self, reason: String) -> BoxError {
        let err = self.inner.corrupt(self.block_offset(), reason);
        self.block = None;
        Box::new(err)
    }

    fn load(&mut self, i: usize) -> Result<(), BoxError> {
        self.block = None;
        self.block_index = i;
        if i < self.inner.index.len() {
            let block = self.inner.data_block(i)?;
            self.block = Some(block.iter());
        }
        Ok(())
    }

    /// If the current block is exhausted, moves to the first entry of the next non-empty
    /// block; then checks the entry is an internal key.
    fn settle(&mut self) -> Result<(), BoxError> {
        loop {
            let Some(block) = self.block.as_ref() else {
                return Ok(());
            };
            if block.valid() {
                let key = block.key();
                if let Err(e) = ParsedInternalKey::parse(key) {
                    return Err(self.fail(format!("bad key in data block: {e}")));
                }
                return Ok(());
            }
            self.load(self.block_index + 1)?;
            if let Some(b) = self.block.as_mut()
                && let Err(r) = b.seek_to_first()
            {
                return Err(self.fail(r));
            }
        }
    }
}

impl InternalIterator for SstIterator {
    fn valid(&self) -> bool {
        self.block.as_ref().is_some_and(BlockIter::valid)
    }

    fn key(&self) -> &[u8] {
        self.block.as_ref().map_or(&[], BlockIter::key)
    }

    fn value(&self) -> &[u8] {
        self.block.as_ref().map_or(&[], BlockIter::value)
    }

    fn next(&mut self) -> Result<(), BoxError> {
        let Some(block) = self.block.as_mut() else {
            return Ok(());
        };
        if !block.valid() {
            return Ok(());
        }
        if let Err(r) = block.next() {
            return Err(self.fail(r));
        }
        self.settle()
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        let i = self.inner.index.find(target);
        self.load(i)?;
        if let Some(b) = self.block.as_mut()
            && let Err(r) = b.seek(target)
        {
            return Err(self.fail(r));
        }
        self.settle()
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.load(0)?;
        if let Some(b) = self.block.as_mut()
            && let Err(r) = b.seek_to_first()
        {
            return Err(self.fail(r));
        }
        self.settle()
    }
}
