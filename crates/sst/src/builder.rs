//! Streaming SST builder: entries go in sorted, blocks go out as soon as they fill.
//!
//! Memory stays bounded by one data block, the index block and 8 bytes per distinct user key
//! (bloom hashes, needed to size the filter at the end), whatever the file size.

use std::cmp::Ordering;
use std::io::Write;

use lsm::key::{compare_internal_keys, pack_trailer, user_key};
use lsm::{MAX_SEQNO, ParsedInternalKey, ValueKind};

use crate::block::{BlockBuilder, BlockTooLarge};
use crate::bloom::{build_filter, key_hash};
use crate::error::{KeyDisplay, Result, SstError};
use crate::format::{
    BLOCK_TRAILER_LEN, BlockHandle, COMPRESSION_LZ4, COMPRESSION_NONE, COMPRESSION_ZSTD,
    Compressor, FORMAT_VERSION, Footer, append_trailer,
};
use crate::hll::Hll;
use crate::properties::Properties;

/// Block compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Lz4,
    /// Zstandard at the given level (zstd's range, e.g. 1..=22; negative levels are faster).
    Zstd(i32),
}

impl Compression {
    fn type_byte(self) -> u8 {
        match self {
            Self::None => COMPRESSION_NONE,
            Self::Lz4 => COMPRESSION_LZ4,
            Self::Zstd(_) => COMPRESSION_ZSTD,
        }
    }

    /// (type byte, level) as stored in the properties block.
    pub(crate) fn encode(self) -> (u8, i32) {
        match self {
            Self::Zstd(level) => (COMPRESSION_ZSTD, level),
            other => (other.type_byte(), 0),
        }
    }

    pub(crate) fn decode(type_byte: u8, level: i32) -> Option<Self> {
        match type_byte {
            COMPRESSION_NONE => Some(Self::None),
            COMPRESSION_LZ4 => Some(Self::Lz4),
            COMPRESSION_ZSTD => Some(Self::Zstd(level)),
            _ => None,
        }
    }
}

/// How to build an SST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SstOptions {
    /// Target size of an uncompressed data block in bytes.
    pub block_size: usize,
    /// Every this many entries a data block stores a whole key (a restart point).
    pub restart_interval: usize,
    /// Bloom filter bits per distinct user key; 0 writes no filter.
    pub bloom_bits_per_key: u32,
    pub compression: Compression,
}

impl Default for SstOptions {
    fn default() -> Self {
        Self {
            block_size: 4096,
            restart_interval: 16,
            bloom_bits_per_key: 10,
            compression: Compression::None,
        }
    }
}

impl SstOptions {
    /// Largest accepted `bloom_bits_per_key`.
    pub const MAX_BLOOM_BITS_PER_KEY: u32 = 64;

    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(SstError::InvalidOptions(msg));
        if self.block_size == 0 || self.block_size > (1 << 30) {
            return bad(format!("block_size {} outside 1..=1GiB", self.block_size));
        }
        if self.restart_interval == 0 || self.restart_interval > 1 << 16 {
            return bad(format!(
                "restart_interval {} outside 1..=65536",
                self.restart_interval
            ));
        }
        if self.bloom_bits_per_key > Self::MAX_BLOOM_BITS_PER_KEY {
            return bad(format!(
                "bloom_bits_per_key {} above {}",
                self.bloom_bits_per_key,
                Self::MAX_BLOOM_BITS_PER_KEY
            ));
        }
        if let Compression::Zstd(level) = self.compression
            && !zstd::compression_level_range().contains(&level)
        {
            return bad(format!("zstd level {level} outside zstd's range"));
        }
        Ok(())
    }
}

/// What a finished SST holds: everything the manifest records about a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SstInfo {
    /// Bytes written, footer included.
    pub file_size: u64,
    pub entry_count: u64,
    pub tombstone_count: u64,
    /// Empty for an empty file.
    pub smallest_user_key: bytes::Bytes,
    pub largest_user_key: bytes::Bytes,
    /// Sequence number range (0..=0 for an empty file).
    pub min_seq: u64,
    pub max_seq: u64,
    pub properties: Properties,
}

/// Writes blocks (with trailers) to the output and tracks the offset.
struct BlockWriter<W> {
    file: String,
    writer: W,
    offset: u64,
    compression_type: u8,
    compressor: Compressor,
    compressed: Vec<u8>,
}

impl<W: Write> BlockWriter<W> {
    /// Writes a finished block. `block` is the builder's buffer: its trailer is appended in
    /// place when stored uncompressed, so the caller must reset it afterwards.
    fn write_block(&mut self, block: &mut Vec<u8>, compress: bool) -> Result<BlockHandle> {
        let raw_len = block.len();
        let use_compressed = compress
            && self.compression_type != COMPRESSION_NONE
            && self
                .compressor
                .compress(self.compression_type, block, &mut self.compressed)
            // Keep the compressed form only if it saves at least 12.5%.
            && self.compressed.len() <= raw_len - raw_len / 8;
        let (buf, ctype) = if use_compressed {
            (&mut self.compressed, self.compression_type)
        } else {
            (block, COMPRESSION_NONE)
        };
        let size = buf.len();
        append_trailer(buf, 0, ctype);
        let handle = BlockHandle {
            offset: self.offset,
            size: size as u64,
        };
        self.writer
            .write_all(buf)
            .map_err(|e| SstError::io(&self.file, e))?;
        self.offset += (size + BLOCK_TRAILER_LEN) as u64;
        Ok(handle)
    }
}

/// Builds one SST file, streaming blocks to `W` as they fill.
///
/// Give it a buffered writer (`BufWriter`) for files: each block is one `write_all`.
pub struct SstBuilder<W: Write> {
    out: BlockWriter<W>,
    options: SstOptions,
    data_block: BlockBuilder,
    index_block: BlockBuilder,
    last_key: Vec<u8>,
    separator: Vec<u8>,
    handle_buf: Vec<u8>,
    /// Bloom hashes of the distinct user keys (empty when the filter is off).
    hashes: Vec<u64>,
    sketch: Hll,
    smallest_key: Vec<u8>,
    entry_count: u64,
    tombstone_count: u64,
    user_key_count: u64,
    data_block_count: u64,
    data_size: u64,
    raw_key_bytes: u64,
    raw_value_bytes: u64,
    min_seq: u64,
    max_seq: u64,
    creation_time_ms: u64,
    failed: bool,
}

impl<W: Write> SstBuilder<W> {
    /// A builder writing the file `file_name` (used in errors) to `writer`.
    pub fn new(file_name: impl Into<String>, writer: W, options: SstOptions) -> Result<Self> {
        options.validate()?;
        let zstd_level = match options.compression {
            Compression::Zstd(level) => Some(level),
            _ => None,
        };
        let compressor = Compressor::new(zstd_level)
            .map_err(|e| SstError::InvalidOptions(format!("zstd compressor: {e}")))?;
        let block_capacity = options.block_size + options.block_size / 4 + 64;
        Ok(Self {
            out: BlockWriter {
                file: file_name.into(),
                writer,
                offset: 0,
                compression_type: options.compression.type_byte(),
                compressor,
                compressed: Vec::new(),
            },
            data_block: BlockBuilder::new(options.restart_interval, block_capacity),
            index_block: BlockBuilder::new(options.restart_interval, 4096),
            options,
            last_key: Vec::new(),
            separator: Vec::new(),
            handle_buf: Vec::new(),
            hashes: Vec::new(),
            sketch: Hll::default(),
            smallest_key: Vec::new(),
            entry_count: 0,
            tombstone_count: 0,
            user_key_count: 0,
            data_block_count: 0,
            data_size: 0,
            raw_key_bytes: 0,
            raw_value_bytes: 0,
            min_seq: u64::MAX,
            max_seq: 0,
            creation_time_ms: 0,
            failed: false,
        })
    }

    /// Records the creation time (milliseconds since the Unix epoch, from the caller's clock)
    /// in the properties. Defaults to 0, "unknown".
    pub fn set_creation_time_ms(&mut self, ms: u64) {
        self.creation_time_ms = ms;
    }

    /// Entries added so far.
    pub fn entry_count(&self) -> u64 {
        self.entry_count
    }

    /// Bytes written to the writer so far (a lower bound of the final file size).
    pub fn bytes_written(&self) -> u64 {
        self.out.offset
    }

    /// Estimated file size if finished now (written bytes plus the open data block).
    pub fn estimated_size(&self) -> u64 {
        self.out.offset + self.data_block.estimated_size() as u64
    }

    /// Adds an entry. `internal_key` is an encoded [`lsm::InternalKey`] that must sort
    /// strictly after the previous one; tombstones conventionally have an empty value.
    pub fn add(&mut self, internal_key: &[u8], value: &[u8]) -> Result<()> {
        if self.failed {
            return Err(SstError::BuilderFailed {
                file: self.out.file.clone(),
            });
        }
        let parsed =
            ParsedInternalKey::parse(internal_key).map_err(|reason| SstError::InvalidKey {
                file: self.out.file.clone(),
                key: KeyDisplay(internal_key.to_vec()),
                reason,
            })?;
        let new_user_key = if self.entry_count == 0 {
            true
        } else {
            if compare_internal_keys(&self.last_key, internal_key) != Ordering::Less {
                return Err(SstError::OutOfOrder {
                    file: self.out.file.clone(),
                    previous: KeyDisplay(self.last_key.clone()),
                    key: KeyDisplay(internal_key.to_vec()),
                });
            }
            user_key(&self.last_key) != parsed.user_key
        };
        // An entry must fit an otherwise empty block (u32 offsets), checked before anything
        // changes so that a rejected entry leaves the builder as it was.
        let fits = internal_key
            .len()
            .checked_add(value.len())
            .is_some_and(|n| n < (u32::MAX as usize) - 64);
        if !fits {
            return Err(SstError::TooLarge {
                file: self.out.file.clone(),
                what: "entry",
            });
        }

        if !self.data_block.is_empty() && self.block_full(internal_key.len() + value.len()) {
            let handle = self.flush_data_block()?;
            shortest_separator(&self.last_key, internal_key, &mut self.separator);
            self.add_index_entry(handle)?;
        }
        if self.data_block.add(internal_key, value).is_err() {
            // Unreachable after the check above; if it were reached after a flush, the index
            // would already name this key, so the builder cannot go on.
            self.failed = true;
            return Err(SstError::TooLarge {
                file: self.out.file.clone(),
                what: "data block",
            });
        }

        if new_user_key {
            let h = key_hash(parsed.user_key);
            if self.options.bloom_bits_per_key > 0 {
                self.hashes.push(h);
            }
            self.sketch.add_hash(h);
            self.user_key_count += 1;
        }
        if self.entry_count == 0 {
            self.smallest_key.extend_from_slice(internal_key);
        }
        self.entry_count += 1;
        if parsed.kind == ValueKind::Delete {
            self.tombstone_count += 1;
        }
        self.min_seq = self.min_seq.min(parsed.seq);
        self.max_seq = self.max_seq.max(parsed.seq);
        self.raw_key_bytes += internal_key.len() as u64;
        self.raw_value_bytes += value.len() as u64;
        self.last_key.clear();
        self.last_key.extend_from_slice(internal_key);
        Ok(())
    }

    /// RocksDB's flush policy: cut at the target size, or just before it if the next entry
    /// would cross it and the block is already within 10% of the target.
    #[inline]
    fn block_full(&self, entry_len: usize) -> bool {
        let size = self.data_block.estimated_size();
        let target = self.options.block_size;
        size >= target || (size + entry_len + 12 > target && size * 10 >= target * 9)
    }

    fn flush_data_block(&mut self) -> Result<BlockHandle> {
        self.data_block.finish();
        let result = self.out.write_block(self.data_block.buffer_mut(), true);
        self.data_block.reset();
        let handle = self.check_io(result)?;
        self.data_block_count += 1;
        self.data_size += handle.size + BLOCK_TRAILER_LEN as u64;
        Ok(handle)
    }

    /// Adds `self.separator -> handle` to the index block.
    fn add_index_entry(&mut self, handle: BlockHandle) -> Result<()> {
        self.handle_buf.clear();
        handle.encode_varint(&mut self.handle_buf);
        self.index_block
            .add(&self.separator, &self.handle_buf)
            .map_err(|BlockTooLarge| SstError::TooLarge {
                file: self.out.file.clone(),
                what: "index block",
            })
    }

    fn check_io<T>(&mut self, r: Result<T>) -> Result<T> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    /// Writes the last data block, filter, index, properties and footer, and flushes the
    /// writer. Does not sync: the caller owns the file.
    pub fn finish(self) -> Result<SstInfo> {
        self.finish_into_inner().map(|(info, _)| info)
    }

    /// Like [`Self::finish`], also handing back the writer (to sync a file, or to take the
    /// bytes of an in-memory build).
    pub fn finish_into_inner(mut self) -> Result<(SstInfo, W)> {
        if self.failed {
            return Err(SstError::BuilderFailed {
                file: self.out.file.clone(),
            });
        }
        if !self.data_block.is_empty() {
            let handle = self.flush_data_block()?;
            // The last block's index key is its last key: exact, and the file's largest key.
            self.separator.clear();
            self.separator.extend_from_slice(&self.last_key);
            self.add_index_entry(handle)?;
        }

        let filter = if self.options.bloom_bits_per_key > 0 {
            let mut block = build_filter(&self.hashes, self.options.bloom_bits_per_key);
            let r = self.out.write_block(&mut block, false);
            self.check_io(r)?
        } else {
            BlockHandle::default()
        };
        let filter_size = if self.options.bloom_bits_per_key > 0 {
            filter.size + BLOCK_TRAILER_LEN as u64
        } else {
            0
        };

        self.index_block.finish();
        let r = self.out.write_block(self.index_block.buffer_mut(), true);
        let index = self.check_io(r)?;

        let empty = self.entry_count == 0;
        let properties = Properties {
            entry_count: self.entry_count,
            tombstone_count: self.tombstone_count,
            user_key_count: self.user_key_count,
            data_block_count: self.data_block_count,
            data_size: self.data_size,
            index_size: index.size + BLOCK_TRAILER_LEN as u64,
            filter_size,
            raw_key_bytes: self.raw_key_bytes,
            raw_value_bytes: self.raw_value_bytes,
            smallest_key: std::mem::take(&mut self.smallest_key).into(),
            largest_key: if empty {
                bytes::Bytes::new()
            } else {
                bytes::Bytes::copy_from_slice(&self.last_key)
            },
            min_seq: if empty { 0 } else { self.min_seq },
            max_seq: self.max_seq,
            compression: self.options.compression,
            block_size: self.options.block_size as u64,
            restart_interval: self.options.restart_interval as u64,
            bloom_bits_per_key: u64::from(self.options.bloom_bits_per_key),
            created_by: concat!("data-processor sst ", env!("CARGO_PKG_VERSION")).to_owned(),
            creation_time_ms: self.creation_time_ms,
            key_sketch: std::mem::take(&mut self.sketch),
        };
        let mut block = properties.encode();
        let r = self.out.write_block(&mut block, true);
        let props_handle = self.check_io(r)?;

        let footer = Footer {
            index,
            filter,
            properties: props_handle,
            version: FORMAT_VERSION,
        };
        let file = self.out.file.clone();
        let io = |e| SstError::io(&file, e);
        self.out.writer.write_all(&footer.encode()).map_err(io)?;
        self.out.writer.flush().map_err(io)?;
        let file_size = self.out.offset + crate::format::FOOTER_LEN as u64;

        let info = SstInfo {
            file_size,
            entry_count: properties.entry_count,
            tombstone_count: properties.tombstone_count,
            smallest_user_key: properties
                .smallest_key
                .slice(..properties.smallest_user_key().len()),
            largest_user_key: properties
                .largest_key
                .slice(..properties.largest_user_key().len()),
            min_seq: properties.min_seq,
            max_seq: properties.max_seq,
            properties,
        };
        Ok((info, self.out.writer))
    }
}

/// Writes into `out` a short internal key `k` with `a <= k < b` (internal-key order), given
/// `a < b`: RocksDB's `FindShortestSeparator` on the user keys, with the largest trailer so
/// that `k` sorts before every real entry of its user key. Falls back to `a` itself.
fn shortest_separator(a: &[u8], b: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let (ua, ub) = (user_key(a), user_key(b));
    let n = ua.iter().zip(ub).take_while(|(x, y)| x == y).count();
    if n < ua.len() && n < ub.len() {
        let (da, db) = (ua[n], ub[n]);
        if da < 0xff && da + 1 < db {
            out.extend_from_slice(&ua[..=n]);
            out[n] += 1;
        } else {
            // ua[n] + 1 == ub[n] (or ua[n] is 0xff): bump a later byte of `ua` instead, which
            // keeps the separator above `ua` and below `ub` (their first difference is at n).
            if let Some(i) = (n + 1..ua.len()).find(|&i| ua[i] < 0xff) {
                out.extend_from_slice(&ua[..=i]);
                out[i] += 1;
            }
        }
    }
    if out.is_empty() {
        out.extend_from_slice(a);
    } else {
        out.extend_from_slice(&pack_trailer(MAX_SEQNO, ValueKind::Put).to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::InternalKey;

    fn k(user: &[u8], seq: u64) -> Vec<u8> {
        InternalKey::new(user.to_vec(), seq, ValueKind::Put).encode()
    }

    #[test]
    fn separators_are_between_and_short() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"abc", b"abz", b"abd"),
            (b"abc1234", b"abd", b"abc2"),
            (b"ab", b"abc", b"ab"),             // prefix: no shortening
            (b"a\xff\xff", b"b", b"a\xff\xff"), // nothing to bump
            (b"a\xffx", b"b", b"a\xffy"),
        ];
        for &(ua, ub, expect) in cases {
            let (a, b) = (k(ua, 5), k(ub, 5));
            let mut sep = Vec::new();
            shortest_separator(&a, &b, &mut sep);
            assert_eq!(user_key(&sep), expect, "{ua:?} {ub:?}");
            assert_ne!(compare_internal_keys(&a, &sep), Ordering::Greater);
            assert_eq!(compare_internal_keys(&sep, &b), Ordering::Less);
        }
        // Same user key: the separator is `a` itself.
        let (a, b) = (k(b"k", 9), k(b"k", 3));
        let mut sep = Vec::new();
        shortest_separator(&a, &b, &mut sep);
        assert_eq!(sep, a);
    }

    #[test]
    fn rejects_out_of_order_and_invalid_keys() {
        let mut b = SstBuilder::new("t.sst", Vec::new(), SstOptions::default()).expect("valid");
        b.add(&k(b"b", 5), b"v").expect("first");
        assert!(matches!(
            b.add(&k(b"a", 5), b"v"),
            Err(SstError::OutOfOrder { .. })
        ));
        assert!(matches!(
            b.add(&k(b"b", 5), b"v"),
            Err(SstError::OutOfOrder { .. })
        ));
        assert!(matches!(
            b.add(&k(b"b", 6), b"v"),
            Err(SstError::OutOfOrder { .. })
        ));
        assert!(matches!(
            b.add(b"short", b"v"),
            Err(SstError::InvalidKey { .. })
        ));
        // The builder still works after a rejected key.
        b.add(&k(b"b", 4), b"v").expect("older version");
        b.add(&k(b"c", 1), b"v").expect("next key");
        let info = b.finish().expect("finish");
        assert_eq!(info.entry_count, 3);
        assert_eq!(info.properties.user_key_count, 2);
        assert_eq!(&info.smallest_user_key[..], b"b");
        assert_eq!(&info.largest_user_key[..], b"c");
        assert_eq!((info.min_seq, info.max_seq), (1, 5));
    }

    #[test]
    fn options_are_validated() {
        let bad = [
            SstOptions {
                block_size: 0,
                ..Default::default()
            },
            SstOptions {
                restart_interval: 0,
                ..Default::default()
            },
            SstOptions {
                bloom_bits_per_key: 65,
                ..Default::default()
            },
            SstOptions {
                compression: Compression::Zstd(1000),
                ..Default::default()
            },
        ];
        for o in bad {
            assert!(matches!(
                SstBuilder::new("t", Vec::new(), o),
                Err(SstError::InvalidOptions(_))
            ));
        }
    }

    #[test]
    fn io_errors_poison_the_builder() {
        struct Failing;
        impl Write for Failing {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let opts = SstOptions {
            block_size: 64,
            ..Default::default()
        };
        let mut b = SstBuilder::new("t.sst", Failing, opts).expect("valid");
        let mut saw_io = false;
        for i in 0..100u32 {
            match b.add(&k(format!("{i:04}").as_bytes(), 1), &[0u8; 32]) {
                Ok(()) => {}
                Err(SstError::Io { .. }) => saw_io = true,
                Err(SstError::BuilderFailed { .. }) => {
                    assert!(saw_io);
                    break;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(saw_io);
        assert!(matches!(b.finish(), Err(SstError::BuilderFailed { .. })));
    }
}
