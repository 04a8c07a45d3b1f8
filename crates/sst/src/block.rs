//! Prefix-compressed blocks with restart points (data, index and properties blocks).
//!
//! A block is a run of entries followed by the restart array:
//!
//! ```text
//! entry*  restart[0..n] (u32 LE each)  n (u32 LE)
//! entry = shared varint32 | unshared varint32 | value_len varint32 | key[shared..] | value
//! ```
//!
//! Every `restart_interval`-th entry is a restart point: it stores its whole key
//! (`shared == 0`) and its offset is listed in the restart array, so a seek binary-searches
//! the restart points and then scans at most one interval.

use std::cmp::Ordering;
use std::ops::Range;

use bytes::Bytes;
use lsm::key::compare_internal_keys;

use crate::coding::{get_u32, get_varint32, put_varint32};

/// Builds one block in memory. Keys must be added in increasing order (the SST builder
/// checks that); the block only prefix-compresses against the previous key.
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    restart_interval: usize,
    since_restart: usize,
    entries: usize,
    last_key: Vec<u8>,
}

/// An entry or block too large for u32 offsets.
#[derive(Debug)]
pub struct BlockTooLarge;

impl BlockBuilder {
    pub fn new(restart_interval: usize, capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            restarts: vec![0],
            restart_interval: restart_interval.max(1),
            since_restart: 0,
            entries: 0,
            last_key: Vec::new(),
        }
    }

    /// Size of the block if finished now.
    #[inline]
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + self.restarts.len() * 4 + 4
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Appends an entry.
    #[inline]
    pub fn add(&mut self, key: &[u8], value: &[u8]) -> Result<(), BlockTooLarge> {
        let shared = if self.since_restart < self.restart_interval {
            common_prefix_len(&self.last_key, key)
        } else {
            let offset = u32::try_from(self.buf.len()).map_err(|_| BlockTooLarge)?;
            self.restarts.push(offset);
            self.since_restart = 0;
            0
        };
        let unshared = key.len() - shared;
        // Lengths and the final offsets must fit u32 (restart offsets are u32).
        let projected = self
            .buf
            .len()
            .checked_add(15 + unshared)
            .and_then(|n| n.checked_add(value.len()))
            .and_then(|n| n.checked_add(self.restarts.len() * 4 + 8))
            .ok_or(BlockTooLarge)?;
        if projected > u32::MAX as usize {
            return Err(BlockTooLarge);
        }
        // All three fit u32 because `projected` does.
        put_varint32(&mut self.buf, shared as u32);
        put_varint32(&mut self.buf, unshared as u32);
        put_varint32(&mut self.buf, value.len() as u32);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.truncate(shared);
        self.last_key.extend_from_slice(&key[shared..]);
        self.since_restart += 1;
        self.entries += 1;
        Ok(())
    }

    /// Appends the restart array and returns the finished block. Call [`Self::reset`] before
    /// adding again.
    pub fn finish(&mut self) -> &[u8] {
        for r in &self.restarts {
            self.buf.extend_from_slice(&r.to_le_bytes());
        }
        // Fits: `add` kept the whole block under u32::MAX.
        self.buf
            .extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        &self.buf
    }

    /// The finished block's bytes, so a caller can append a trailer in place.
    pub fn buffer_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub fn reset(&mut self) {
        self.buf.clear();
        self.restarts.clear();
        self.restarts.push(0);
        self.since_restart = 0;
        self.entries = 0;
        self.last_key.clear();
    }
}

#[inline]
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    // Compare 8 bytes at a time: keys are typically tens of bytes.
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let diff = x ^ y;
        if diff != 0 {
            return i + (diff.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// A decoded block: its bytes and the validated restart array.
#[derive(Clone)]
pub struct Block {
    data: Bytes,
    /// End of the entries, start of the restart array.
    entries_end: usize,
    num_restarts: usize,
}

impl Block {
    /// Validates the restart array (count, bounds, strictly increasing, first at 0).
    pub fn new(data: Bytes) -> Result<Self, String> {
        let len = data.len();
        let count_pos = len
            .checked_sub(4)
            .ok_or_else(|| format!("block of {len} bytes is too short for its restart count"))?;
        let num_restarts = get_u32(&data, count_pos).unwrap_or(0) as usize;
        let entries_end = num_restarts
            .checked_mul(4)
            .and_then(|n| count_pos.checked_sub(n))
            .ok_or_else(|| {
                format!("restart count {num_restarts} does not fit a block of {len} bytes")
            })?;
        if num_restarts == 0 && entries_end > 0 {
            return Err("block with entries but no restart points".to_owned());
        }
        let mut prev: Option<usize> = None;
        for i in 0..num_restarts {
            let r = get_u32(&data, entries_end + i * 4).unwrap_or(u32::MAX) as usize;
            let ok = match prev {
                None => r == 0,
                Some(p) => r > p && r < entries_end,
            };
            if !ok {
                return Err(format!("restart point {i} has bad offset {r}"));
            }
            prev = Some(r);
        }
        Ok(Self {
            data,
            entries_end,
            num_restarts,
        })
    }

    fn restart_offset(&self, i: usize) -> usize {
        // Validated in `new`.
        get_u32(&self.data, self.entries_end + i * 4).unwrap_or(0) as usize
    }

    pub fn iter(self) -> BlockIter {
        BlockIter {
            block: self,
            current: usize::MAX,
            next: 0,
            key: Vec::new(),
            value: 0..0,
        }
    }
}

/// A decoded entry header: (shared, unshared, value length, position of the key delta).
#[inline]
fn decode_header(
    data: &[u8],
    mut pos: usize,
    limit: usize,
) -> Option<(usize, usize, usize, usize)> {
    let buf = data.get(..limit)?;
    let shared = get_varint32(buf, &mut pos)? as usize;
    let unshared = get_varint32(buf, &mut pos)? as usize;
    let value_len = get_varint32(buf, &mut pos)? as usize;
    let end = pos.checked_add(unshared)?.checked_add(value_len)?;
    (end <= limit).then_some((shared, unshared, value_len, pos))
}

/// A cursor over a block's entries. Errors are corruption reasons naming the in-block
/// offset; the caller adds the file and block offset.
pub struct BlockIter {
    block: Block,
    /// Offset of the current entry; `usize::MAX` when not on an entry.
    current: usize,
    /// Offset of the entry after the current one.
    next: usize,
    key: Vec<u8>,
    value: Range<usize>,
}

impl BlockIter {
    #[inline]
    pub fn valid(&self) -> bool {
        self.current != usize::MAX
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    #[inline]
    pub fn value(&self) -> &[u8] {
        self.block.data.get(self.value.clone()).unwrap_or_default()
    }

    /// The current value as a zero-copy slice of the block.
    pub fn value_bytes(&self) -> Bytes {
        self.block.data.slice(self.value.clone())
    }

    fn invalidate(&mut self) {
        self.current = usize::MAX;
        self.key.clear();
        self.value = 0..0;
    }

    /// Decodes the entry at `self.next`; at the end of the entries becomes invalid.
    #[inline]
    #[expect(
        clippy::should_implement_trait,
        reason = "a cursor like InternalIterator::next, not an Iterator (public for the benches)"
    )]
    pub fn next(&mut self) -> Result<(), String> {
        let pos = self.next;
        if pos >= self.block.entries_end {
            self.invalidate();
            return Ok(());
        }
        let Some((shared, unshared, value_len, delta)) =
            decode_header(&self.block.data, pos, self.block.entries_end)
        else {
            self.invalidate();
            return Err(format!("bad entry header at block offset {pos}"));
        };
        if shared > self.key.len() {
            self.invalidate();
            return Err(format!(
                "entry at block offset {pos} shares {shared} bytes with a {}-byte key",
                self.key.len()
            ));
        }
        let value_start = delta + unshared;
        self.key.truncate(shared);
        self.key
            .extend_from_slice(self.block.data.get(delta..value_start).unwrap_or_default());
        self.value = value_start..value_start + value_len;
        self.current = pos;
        self.next = value_start + value_len;
        Ok(())
    }

    pub fn seek_to_first(&mut self) -> Result<(), String> {
        self.seek_to_restart(0);
        self.next()
    }

    fn seek_to_restart(&mut self, i: usize) {
        self.key.clear();
        self.current = usize::MAX;
        self.next = if self.block.num_restarts == 0 {
            self.block.entries_end
        } else {
            self.block.restart_offset(i)
        };
    }

    /// The full key stored at restart point `i` (restart entries share nothing).
    fn restart_key(&self, i: usize) -> Result<&[u8], String> {
        let pos = self.block.restart_offset(i);
        let (shared, unshared, _, delta) =
            decode_header(&self.block.data, pos, self.block.entries_end)
                .ok_or_else(|| format!("bad restart entry at block offset {pos}"))?;
        if shared != 0 {
            return Err(format!(
                "restart entry at block offset {pos} shares {shared} bytes"
            ));
        }
        Ok(self
            .block
            .data
            .get(delta..delta + unshared)
            .unwrap_or_default())
    }

    /// Moves to the first entry whose key is `>= target` by internal-key order; invalid if
    /// there is none in this block.
    pub fn seek(&mut self, target: &[u8]) -> Result<(), String> {
        if self.block.num_restarts == 0 {
            self.invalidate();
            return Ok(());
        }
        // Last restart point whose key is < target (or the first one).
        let (mut left, mut right) = (0usize, self.block.num_restarts - 1);
        while left < right {
            let mid = left + (right - left).div_ceil(2);
            let key = match self.restart_key(mid) {
                Ok(k) => k,
                Err(e) => {
                    self.invalidate();
                    return Err(e);
                }
            };
            if compare_internal_keys(key, target) == Ordering::Less {
                left = mid;
            } else {
                right = mid - 1;
            }
        }
        self.seek_to_restart(left);
        loop {
            self.next()?;
            if !self.valid() || compare_internal_keys(&self.key, target) != Ordering::Less {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::{InternalKey, ValueKind};

    fn ikey(user: &str, seq: u64) -> Vec<u8> {
        InternalKey::new(user.as_bytes().to_vec(), seq, ValueKind::Put).encode()
    }

    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    fn build(n: usize, interval: usize) -> (Bytes, Entries) {
        let mut b = BlockBuilder::new(interval, 0);
        let mut model = Vec::new();
        for i in 0..n {
            let k = ikey(&format!("key{:05}", i * 2), 7);
            let v = format!("value-{i}").into_bytes();
            b.add(&k, &v).expect("fits");
            model.push((k, v));
        }
        (Bytes::copy_from_slice(b.finish()), model)
    }

    #[test]
    fn iterate_and_seek() {
        for interval in [1, 2, 16] {
            let (data, model) = build(100, interval);
            let mut it = Block::new(data.clone()).expect("valid").iter();
            it.seek_to_first().expect("ok");
            for (k, v) in &model {
                assert!(it.valid());
                assert_eq!(it.key(), &k[..]);
                assert_eq!(it.value(), &v[..]);
                it.next().expect("ok");
            }
            assert!(!it.valid());
            for i in 0..201 {
                let target = ikey(&format!("key{i:05}"), 7);
                it.seek(&target).expect("ok");
                let expect = model
                    .iter()
                    .find(|(k, _)| compare_internal_keys(k, &target).is_ge());
                assert_eq!(
                    it.valid().then(|| it.key().to_vec()),
                    expect.map(|(k, _)| k.clone())
                );
            }
        }
    }

    #[test]
    fn empty_block() {
        let mut b = BlockBuilder::new(16, 0);
        let data = Bytes::copy_from_slice(b.finish());
        let mut it = Block::new(data).expect("valid").iter();
        it.seek_to_first().expect("ok");
        assert!(!it.valid());
        it.seek(b"anything").expect("ok");
        assert!(!it.valid());
    }

    #[test]
    fn malformed_blocks_are_errors() {
        assert!(Block::new(Bytes::from_static(&[1, 2])).is_err());
        assert!(Block::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff])).is_err());
        // Restart points not starting at zero.
        assert!(Block::new(Bytes::from_static(&[0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0])).is_err());
        let (data, _) = build(40, 4);
        for cut in 0..data.len() {
            let mut bytes = data.to_vec();
            bytes[cut] ^= 0x55;
            if let Ok(block) = Block::new(Bytes::from(bytes)) {
                let mut it = block.iter();
                let mut steps = 0;
                if it.seek_to_first().is_ok() {
                    while it.valid() && it.next().is_ok() {
                        steps += 1;
                        assert!(steps <= 1000);
                    }
                }
                let _ = it.seek(&ikey("key00010", 7));
            }
        }
    }

    #[test]
    fn prefix_len() {
        assert_eq!(common_prefix_len(b"abcdefghijk", b"abcdefghijx"), 10);
        assert_eq!(common_prefix_len(b"abc", b"abd"), 2);
        assert_eq!(common_prefix_len(b"", b"abd"), 0);
        assert_eq!(common_prefix_len(b"abcdefgh", b"abcdefgh"), 8);
    }
}
