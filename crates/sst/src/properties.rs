//! The properties block: what a file holds, readable without touching its data blocks.
//!
//! Stored as a block (the data block encoding, see the crate docs) of `name -> value` entries in name order.
//! Numbers are varint64, keys are raw bytes, the compression is `type u8 | level i32 LE`, the
//! key sketch is [`Hll::to_bytes`]. Readers ignore names they do not know, so later writers
//! can add properties without a format version bump; every property listed here is required
//! in format v1.

use bytes::Bytes;

use crate::Compression;
use crate::block::{Block, BlockBuilder};
use crate::coding::{get_varint64, put_varint64};
use crate::hll::Hll;

/// Statistics and settings of one SST file.
#[derive(Debug, Clone, PartialEq)]
pub struct Properties {
    /// Number of entries (puts and tombstones, every version).
    pub entry_count: u64,
    /// Number of tombstones among the entries.
    pub tombstone_count: u64,
    /// Number of distinct user keys (exact: the file is sorted).
    pub user_key_count: u64,
    pub data_block_count: u64,
    /// Bytes of data blocks as stored (after compression, with trailers).
    pub data_size: u64,
    /// Bytes of the index block as stored.
    pub index_size: u64,
    /// Bytes of the filter block as stored (0: no filter).
    pub filter_size: u64,
    /// Sum of encoded internal key lengths.
    pub raw_key_bytes: u64,
    /// Sum of value lengths.
    pub raw_value_bytes: u64,
    /// Smallest and largest encoded internal keys (empty for an empty file).
    pub smallest_key: Bytes,
    pub largest_key: Bytes,
    /// Smallest and largest sequence numbers (0 for an empty file).
    pub min_seq: u64,
    pub max_seq: u64,
    pub compression: Compression,
    pub block_size: u64,
    pub restart_interval: u64,
    pub bloom_bits_per_key: u64,
    /// Writer identification, e.g. `"data-processor sst 0.1.0"`.
    pub created_by: String,
    /// Creation time in milliseconds since the Unix epoch as given by the writer's caller
    /// (0: unknown).
    pub creation_time_ms: u64,
    /// HyperLogLog sketch of the user keys, mergeable across files.
    pub key_sketch: Hll,
}

impl Properties {
    /// User key of [`Self::smallest_key`].
    pub fn smallest_user_key(&self) -> &[u8] {
        lsm::key::user_key(&self.smallest_key)
    }

    /// User key of [`Self::largest_key`].
    pub fn largest_user_key(&self) -> &[u8] {
        lsm::key::user_key(&self.largest_key)
    }

    /// Encodes the properties block (uncompressed block bytes).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = BlockBuilder::new(1, 8192);
        let mut v = Vec::new();
        let num = |v: &mut Vec<u8>, n: u64| {
            v.clear();
            put_varint64(v, n);
        };
        // Names must be added in sorted order (block keys ascend); the test below checks.
        let (ctype, level) = self.compression.encode();
        let mut comp = vec![ctype];
        comp.extend_from_slice(&level.to_le_bytes());
        let entries: [(&str, Option<u64>, &[u8]); 20] = [
            ("dp.block_size", Some(self.block_size), &[]),
            ("dp.bloom_bits_per_key", Some(self.bloom_bits_per_key), &[]),
            ("dp.compression", None, &comp),
            ("dp.created_by", None, self.created_by.as_bytes()),
            ("dp.creation_time_ms", Some(self.creation_time_ms), &[]),
            ("dp.data_block_count", Some(self.data_block_count), &[]),
            ("dp.data_size", Some(self.data_size), &[]),
            ("dp.entry_count", Some(self.entry_count), &[]),
            ("dp.filter_size", Some(self.filter_size), &[]),
            ("dp.index_size", Some(self.index_size), &[]),
            ("dp.key_sketch", None, &self.key_sketch.to_bytes()),
            ("dp.largest_key", None, &self.largest_key),
            ("dp.max_seq", Some(self.max_seq), &[]),
            ("dp.min_seq", Some(self.min_seq), &[]),
            ("dp.raw_key_bytes", Some(self.raw_key_bytes), &[]),
            ("dp.raw_value_bytes", Some(self.raw_value_bytes), &[]),
            ("dp.restart_interval", Some(self.restart_interval), &[]),
            ("dp.smallest_key", None, &self.smallest_key),
            ("dp.tombstone_count", Some(self.tombstone_count), &[]),
            ("dp.user_key_count", Some(self.user_key_count), &[]),
        ];
        for (name, number, raw) in entries {
            let value: &[u8] = match number {
                Some(n) => {
                    num(&mut v, n);
                    &v
                }
                None => raw,
            };
            // Properties are small (the sketch is 4 KiB): they always fit a block.
            let _ = b.add(name.as_bytes(), value);
        }
        b.finish().to_vec()
    }

    /// Decodes a properties block. Errors are corruption reasons.
    pub(crate) fn decode(block: Bytes) -> Result<Self, String> {
        let mut it = Block::new(block)?.iter();
        it.seek_to_first()?;
        let mut p = Partial::default();
        while it.valid() {
            let v = it.value();
            let number = || {
                let mut pos = 0;
                get_varint64(v, &mut pos)
                    .filter(|_| pos == v.len())
                    .ok_or_else(|| {
                        format!(
                            "property {:?} is not a varint",
                            String::from_utf8_lossy(it.key())
                        )
                    })
            };
            match it.key() {
                b"dp.block_size" => p.block_size = Some(number()?),
                b"dp.bloom_bits_per_key" => p.bloom_bits_per_key = Some(number()?),
                b"dp.compression" => {
                    let (&t, level) = v.split_first().ok_or("empty compression property")?;
                    let level: [u8; 4] = level.try_into().map_err(|_| "bad compression level")?;
                    p.compression = Some(
                        Compression::decode(t, i32::from_le_bytes(level))
                            .ok_or_else(|| format!("unknown compression type {t}"))?,
                    );
                }
                b"dp.created_by" => p.created_by = Some(String::from_utf8_lossy(v).into_owned()),
                b"dp.creation_time_ms" => p.creation_time_ms = Some(number()?),
                b"dp.data_block_count" => p.data_block_count = Some(number()?),
                b"dp.data_size" => p.data_size = Some(number()?),
                b"dp.entry_count" => p.entry_count = Some(number()?),
                b"dp.filter_size" => p.filter_size = Some(number()?),
                b"dp.index_size" => p.index_size = Some(number()?),
                b"dp.key_sketch" => {
                    p.key_sketch = Some(Hll::from_bytes(v).map_err(|e| e.to_string())?)
                }
                b"dp.largest_key" => p.largest_key = Some(it.value_bytes()),
                b"dp.max_seq" => p.max_seq = Some(number()?),
                b"dp.min_seq" => p.min_seq = Some(number()?),
                b"dp.raw_key_bytes" => p.raw_key_bytes = Some(number()?),
                b"dp.raw_value_bytes" => p.raw_value_bytes = Some(number()?),
                b"dp.restart_interval" => p.restart_interval = Some(number()?),
                b"dp.smallest_key" => p.smallest_key = Some(it.value_bytes()),
                b"dp.tombstone_count" => p.tombstone_count = Some(number()?),
                b"dp.user_key_count" => p.user_key_count = Some(number()?),
                _ => {} // a property from a later writer
            }
            it.next()?;
        }
        p.finish()
    }
}

#[derive(Default)]
struct Partial {
    entry_count: Option<u64>,
    tombstone_count: Option<u64>,
    user_key_count: Option<u64>,
    data_block_count: Option<u64>,
    data_size: Option<u64>,
    index_size: Option<u64>,
    filter_size: Option<u64>,
    raw_key_bytes: Option<u64>,
    raw_value_bytes: Option<u64>,
    smallest_key: Option<Bytes>,
    largest_key: Option<Bytes>,
    min_seq: Option<u64>,
    max_seq: Option<u64>,
    compression: Option<Compression>,
    block_size: Option<u64>,
    restart_interval: Option<u64>,
    bloom_bits_per_key: Option<u64>,
    created_by: Option<String>,
    creation_time_ms: Option<u64>,
    key_sketch: Option<Hll>,
}

impl Partial {
    fn finish(self) -> Result<Properties, String> {
        fn req<T>(v: Option<T>, name: &str) -> Result<T, String> {
            v.ok_or_else(|| format!("missing property {name}"))
        }
        let p = Properties {
            entry_count: req(self.entry_count, "dp.entry_count")?,
            tombstone_count: req(self.tombstone_count, "dp.tombstone_count")?,
            user_key_count: req(self.user_key_count, "dp.user_key_count")?,
            data_block_count: req(self.data_block_count, "dp.data_block_count")?,
            data_size: req(self.data_size, "dp.data_size")?,
            index_size: req(self.index_size, "dp.index_size")?,
            filter_size: req(self.filter_size, "dp.filter_size")?,
            raw_key_bytes: req(self.raw_key_bytes, "dp.raw_key_bytes")?,
            raw_value_bytes: req(self.raw_value_bytes, "dp.raw_value_bytes")?,
            smallest_key: req(self.smallest_key, "dp.smallest_key")?,
            largest_key: req(self.largest_key, "dp.largest_key")?,
            min_seq: req(self.min_seq, "dp.min_seq")?,
            max_seq: req(self.max_seq, "dp.max_seq")?,
            compression: req(self.compression, "dp.compression")?,
            block_size: req(self.block_size, "dp.block_size")?,
            restart_interval: req(self.restart_interval, "dp.restart_interval")?,
            bloom_bits_per_key: req(self.bloom_bits_per_key, "dp.bloom_bits_per_key")?,
            created_by: req(self.created_by, "dp.created_by")?,
            creation_time_ms: req(self.creation_time_ms, "dp.creation_time_ms")?,
            key_sketch: req(self.key_sketch, "dp.key_sketch")?,
        };
        if p.tombstone_count > p.entry_count || p.user_key_count > p.entry_count {
            return Err(format!(
                "inconsistent counts: {} entries, {} tombstones, {} user keys",
                p.entry_count, p.tombstone_count, p.user_key_count
            ));
        }
        if p.entry_count > 0 {
            lsm::ParsedInternalKey::parse(&p.smallest_key)
                .map_err(|e| format!("smallest key: {e}"))?;
            lsm::ParsedInternalKey::parse(&p.largest_key)
                .map_err(|e| format!("largest key: {e}"))?;
            if lsm::key::compare_internal_keys(&p.smallest_key, &p.largest_key).is_gt() {
                return Err("smallest key sorts after largest key".to_owned());
            }
            if p.min_seq > p.max_seq {
                return Err(format!("min seq {} above max seq {}", p.min_seq, p.max_seq));
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::{InternalKey, ValueKind};

    pub(crate) fn sample() -> Properties {
        let mut key_sketch = Hll::default();
        key_sketch.add(b"a");
        key_sketch.add(b"z");
        Properties {
            entry_count: 3,
            tombstone_count: 1,
            user_key_count: 2,
            data_block_count: 1,
            data_size: 100,
            index_size: 20,
            filter_size: 69,
            raw_key_bytes: 27,
            raw_value_bytes: 9,
            smallest_key: InternalKey::new(&b"a"[..], 9, ValueKind::Put)
                .encode()
                .into(),
            largest_key: InternalKey::new(&b"z"[..], 1, ValueKind::Delete)
                .encode()
                .into(),
            min_seq: 1,
            max_seq: 9,
            compression: Compression::Zstd(-3),
            block_size: 4096,
            restart_interval: 16,
            bloom_bits_per_key: 10,
            created_by: "test".to_owned(),
            creation_time_ms: 1_700_000_000_000,
            key_sketch,
        }
    }

    #[test]
    fn round_trip() {
        let p = sample();
        let block = Bytes::from(p.encode());
        assert_eq!(Properties::decode(block.clone()).expect("valid"), p);
        // Names are stored in sorted order.
        let mut it = Block::new(block).expect("valid").iter();
        it.seek_to_first().expect("ok");
        let mut prev: Vec<u8> = Vec::new();
        while it.valid() {
            assert!(it.key() > &prev[..]);
            prev = it.key().to_vec();
            it.next().expect("ok");
        }
        assert_eq!(p.smallest_user_key(), b"a");
        assert_eq!(p.largest_user_key(), b"z");
    }

    #[test]
    fn missing_and_unknown_properties() {
        let mut b = BlockBuilder::new(1, 0);
        b.add(b"dp.entry_count", &[3]).expect("fits");
        b.add(b"zz.unknown", b"whatever").expect("fits");
        let err = Properties::decode(Bytes::copy_from_slice(b.finish())).expect_err("incomplete");
        assert!(err.contains("missing property"), "{err}");
    }
}
