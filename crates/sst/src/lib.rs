//! SST file format v1: sorted, immutable tables of internal keys, block-based like RocksDB's
//! BlockBasedTable.
//!
//! Vocabulary: an *entry* is an encoded internal key ([`lsm::key`]) and a value; a *block*
//! is a run of entries (or filter bits, or properties) stored with a *trailer*; a *handle*
//! says where a block is; the *footer* ends the file and points at the metadata blocks.
//!
//! [`SstBuilder`] streams a file to any `std::io::Write` (one data block in memory at a
//! time), [`SstReader`] reads one from any [`SstSource`] (a local file, memory, or the storage
//! crate's object store), and [`SstIterator`] implements [`lsm::InternalIterator`] so files
//! merge with memtables.
//!
//! # Format v1, byte by byte
//!
//! All fixed-width integers are little-endian. `varint` is LEB128 (7 bits a byte, low
//! groups first, high bit = more follows; varint32 at most 5 bytes, varint64 at most 10).
//!
//! ```text
//! file   = data_block* filter_block? index_block properties_block footer
//! ```
//!
//! **Stored block** (every block, all kinds):
//!
//! ```text
//! body                      n bytes: the block contents, or their compressed form
//! compression_type  u8      0 = none, 1 = LZ4 (block format), 2 = Zstandard (one frame)
//! crc               u32     masked CRC32C of body ++ compression_type
//! ```
//!
//! A compressed body is `uncompressed_len varint32 | compressed bytes`. A block is stored
//! compressed only if that saves at least 12.5%; the filter block is never compressed. The
//! masking is RocksDB's and LevelDB's: `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8`
//! (mod 2^32). A *block handle* `(offset, size)` gives the file offset of the body and the
//! body length `n`, trailer excluded.
//!
//! **Data and index block contents** (prefix compression with restart points):
//!
//! ```text
//! entry*
//! restart[i]        u32     offset of the i-th restart entry; restart[0] = 0, increasing
//! num_restarts      u32     >= 1 (an empty block has one restart, pointing at its end)
//!
//! entry = shared       varint32   bytes shared with the previous key (0 at a restart)
//!         unshared     varint32   bytes of key that follow
//!         value_len    varint32
//!         key_delta    [unshared] key[shared..]
//!         value        [value_len]
//! ```
//!
//! Every `restart_interval`-th entry (16 by default) is a restart. Keys are encoded
//! internal keys (user key ++ u64 LE `(seq << 8) | kind`), strictly increasing by
//! [`lsm::key::compare_internal_keys`]. A data block is cut when it reaches `block_size`
//! (4 KiB by default) or would cross it while already within 10% of it.
//!
//! The index block has one entry per data block, in file order: key = a separator `s` with
//! `last key of the block <= s < first key of the next block` (the shortest user key
//! between the two, with the largest trailer `(2^56 - 1) << 8 | 1`; the block's last key
//! itself when no shorter key exists, and always for the last block); value = the block's
//! handle as `offset varint64 | size varint64`.
//!
//! **Filter block** (optional): a cache-local bloom filter over the distinct user keys,
//! see [`bloom`]:
//!
//! ```text
//! lines             [64 * num_lines] bits; bit b of line l is byte l*64 + b/8, bit b%8
//! num_probes        u8       1..=30
//! num_lines         u32      0 only for an empty file
//! ```
//!
//! A key's hash is `xxh3_64(user_key)`; its line is `((h >> 32) * num_lines) >> 32`; its
//! probes are `bit = h2 >> 23` for `h2 = h as u32`, then `h2 *= 0x9e3779b9`, `num_probes`
//! times.
//!
//! **Properties block**: a block (same encoding, restart interval 1) of `name -> value`
//! entries sorted by name, see [`properties`]: `dp.block_size`, `dp.bloom_bits_per_key`,
//! `dp.compression` (`type u8 | zstd level i32`), `dp.created_by` (UTF-8),
//! `dp.creation_time_ms`, `dp.data_block_count`, `dp.data_size`, `dp.entry_count`,
//! `dp.filter_size`, `dp.index_size`, `dp.key_sketch` (a [`Hll`], see [`hll`]),
//! `dp.largest_key`, `dp.max_seq`, `dp.min_seq`, `dp.raw_key_bytes`, `dp.raw_value_bytes`,
//! `dp.restart_interval`, `dp.smallest_key`, `dp.tombstone_count`, `dp.user_key_count`.
//! Numbers are varint64, keys raw internal keys. Unknown names are ignored by readers.
//!
//! **Footer** (64 bytes, at `file_size - 64`):
//!
//! ```text
//!  0  index.offset       u64
//!  8  index.size         u64
//! 16  filter.offset      u64     0 and 0: no filter
//! 24  filter.size        u64
//! 32  properties.offset  u64
//! 40  properties.size    u64
//! 48  format_version     u32     1
//! 52  crc                u32     masked CRC32C of bytes 0..52
//! 56  magic              u64     0x3130_7473_732d_7064 (the bytes "dp-sst01")
//! ```
//!
//! A reader checks the magic, then the footer CRC, then the version (so a damaged version
//! reads as corruption and a later format as [`SstError::UnsupportedVersion`]), then that
//! every handle lies before the footer, then each block's CRC as it reads it.
//!
//! # Robustness
//!
//! Decoders never panic and never trust a length: every slice access is bounds-checked,
//! every offset computation checked, decompressed sizes bounded before allocating. Damage is
//! reported as [`SstError::Corruption`] naming the file and the offset of the block.
//! `tests/corruption.rs` flips every bit and tries every truncation of a small file;
//! `fuzz/fuzz_targets/sst_reader.rs` fuzzes the reader.

/// Public for the criterion suite of the hot loops (`benches/micro.rs`); the file format's
/// API is [`SstBuilder`] and [`SstReader`].
pub mod block;
pub mod bloom;
mod builder;
mod coding;
mod error;
mod format;
pub mod hll;
pub mod properties;
mod reader;
mod source;

/// Re-exported: it appears in this crate's API (values, keys, [`SstSource::read_at`]).
pub use bytes::Bytes;
/// Re-exported: [`SstIterator`]'s methods come from it.
pub use lsm::InternalIterator;

pub use builder::{Compression, SstBuilder, SstInfo, SstOptions};
pub use error::{KeyDisplay, Result, SstError};
pub use format::{BlockHandle, FOOTER_LEN, FORMAT_VERSION, MAGIC};
pub use hll::{Hll, HllError};
pub use properties::Properties;
pub use reader::{Found, ReaderStats, SstIterator, SstReader};
pub use source::{ObjectSource, SstSource};
