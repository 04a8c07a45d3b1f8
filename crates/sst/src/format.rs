//! On-disk framing shared by every block: block handles, the block trailer (compression
//! type and masked CRC32C), compression, and the fixed-size footer. The byte layout is documented in
//! the crate root.

use bytes::Bytes;

use crate::coding::{
    get_u32, get_u64, get_varint32, get_varint64, mask_crc, put_varint32, put_varint64,
};
use crate::error::{Result, SstError};
use crate::source::SstSource;

/// Bytes after every block: 1 byte compression type + 4 bytes masked CRC32C.
pub const BLOCK_TRAILER_LEN: usize = 5;

/// Format version written into the footer by this code.
pub const FORMAT_VERSION: u32 = 1;

/// The last 8 bytes of every SST file (little-endian u64): "dp-sst01" read as ASCII bytes.
pub const MAGIC: u64 = u64::from_le_bytes(*b"dp-sst01");

/// Size of the fixed footer at the end of the file.
pub const FOOTER_LEN: usize = 64;

/// Largest stored or uncompressed block: offsets inside a block are u32.
pub const MAX_BLOCK_LEN: u64 = u32::MAX as u64;

/// Uncompressed sizes up to this are decompressed into a buffer allocated up front; larger
/// ones grow the buffer with the output, so a forged length cannot allocate gigabytes.
const EAGER_DECOMPRESS_LIMIT: usize = 16 << 20;

/// Fuzz builds (`--cfg fuzzing`, set by cargo-fuzz) skip checksum verification so that the
/// fuzzer reaches the decoders behind the checksums; every other build verifies.
const VERIFY_CHECKSUMS: bool = !cfg!(fuzzing);

/// Compression type byte of a block trailer.
pub const COMPRESSION_NONE: u8 = 0;
pub const COMPRESSION_LZ4: u8 = 1;
pub const COMPRESSION_ZSTD: u8 = 2;

/// Where a block lives in the file: `size` counts the stored block bytes without the trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockHandle {
    pub offset: u64,
    pub size: u64,
}

impl BlockHandle {
    /// Appends the varint encoding (offset, size).
    pub fn encode_varint(&self, out: &mut Vec<u8>) {
        put_varint64(out, self.offset);
        put_varint64(out, self.size);
    }

    /// Decodes a varint-encoded handle that must fill `buf` exactly.
    pub fn decode_varint(buf: &[u8]) -> Option<Self> {
        let mut pos = 0;
        let offset = get_varint64(buf, &mut pos)?;
        let size = get_varint64(buf, &mut pos)?;
        (pos == buf.len()).then_some(Self { offset, size })
    }

    /// File offset just past the block's trailer, if it does not overflow.
    pub fn end(&self) -> Option<u64> {
        self.offset
            .checked_add(self.size)?
            .checked_add(BLOCK_TRAILER_LEN as u64)
    }

    /// Checks that the block and its trailer lie inside `[0, limit)` and are not too large.
    pub fn check_within(&self, limit: u64) -> std::result::Result<(), String> {
        if self.size > MAX_BLOCK_LEN {
            return Err(format!(
                "block size {} exceeds the format's limit",
                self.size
            ));
        }
        match self.end() {
            Some(end) if end <= limit => Ok(()),
            _ => Err(format!(
                "block handle (offset {}, size {}) points past the end of the block area ({limit})",
                self.offset, self.size
            )),
        }
    }
}

/// Masked CRC32C over the block bytes followed by the compression type byte.
#[inline]
pub fn block_crc(block: &[u8], compression_type: u8) -> u32 {
    mask_crc(crc32c::crc32c_append(
        crc32c::crc32c(block),
        &[compression_type],
    ))
}

/// Appends the trailer for `buf[start..]` (the stored block bytes) to `buf`.
#[inline]
pub fn append_trailer(buf: &mut Vec<u8>, start: usize, compression_type: u8) {
    let crc = block_crc(buf.get(start..).unwrap_or_default(), compression_type);
    buf.push(compression_type);
    buf.extend_from_slice(&crc.to_le_bytes());
}

/// Reusable compression state of a builder.
pub struct Compressor {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl Compressor {
    pub fn new(zstd_level: Option<i32>) -> std::io::Result<Self> {
        let zstd = match zstd_level {
            Some(level) => Some(zstd::bulk::Compressor::new(level)?),
            None => None,
        };
        Ok(Self {
            zstd,
            scratch: Vec::new(),
        })
    }

    /// Compresses `raw` with `compression_type` into `out` (cleared first) as
    /// `varint32 uncompressed length` + compressed bytes. Returns false if the compressor
    /// failed (the caller then stores the block uncompressed).
    pub fn compress(&mut self, compression_type: u8, raw: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        let Ok(raw_len) = u32::try_from(raw.len()) else {
            return false;
        };
        put_varint32(out, raw_len);
        let header = out.len();
        match compression_type {
            COMPRESSION_LZ4 => {
                out.resize(
                    header + lz4_flex::block::get_maximum_output_size(raw.len()),
                    0,
                );
                let Some(dst) = out.get_mut(header..) else {
                    return false;
                };
                match lz4_flex::block::compress_into(raw, dst) {
                    Ok(n) => {
                        out.truncate(header + n);
                        true
                    }
                    Err(_) => false,
                }
            }
            COMPRESSION_ZSTD => {
                let Some(zstd) = self.zstd.as_mut() else {
                    return false;
                };
                self.scratch.clear();
                self.scratch
                    .reserve(zstd::zstd_safe::compress_bound(raw.len()));
                match zstd.compress_to_buffer(raw, &mut self.scratch) {
                    Ok(_) => {
                        out.extend_from_slice(&self.scratch);
                        true
                    }
                    Err(_) => false,
                }
            }
            _ => false,
        }
    }
}

/// Reverses [`Compressor::compress`]. Errors are corruption reasons.
pub fn decompress(compression_type: u8, stored: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let mut pos = 0;
    let raw_len = get_varint32(stored, &mut pos)
        .ok_or_else(|| "bad uncompressed-length varint in compressed block".to_owned())?
        as usize;
    let payload = stored.get(pos..).unwrap_or_default();
    match compression_type {
        COMPRESSION_LZ4 => {
            // LZ4 cannot expand more than ~255x: reject impossible lengths before allocating.
            let bound = payload.len().saturating_mul(255).saturating_add(16);
            if raw_len > bound {
                return Err(format!(
                    "lz4 block claims {raw_len} bytes from {} compressed bytes",
                    payload.len()
                ));
            }
            let mut out = vec![0u8; raw_len];
            match lz4_flex::block::decompress_into(payload, &mut out) {
                Ok(n) if n == raw_len => Ok(out),
                Ok(n) => Err(format!(
                    "lz4 block decompressed to {n} bytes, expected {raw_len}"
                )),
                Err(e) => Err(format!("lz4 decompression failed: {e}")),
            }
        }
        COMPRESSION_ZSTD => {
            let out = if raw_len <= EAGER_DECOMPRESS_LIMIT {
                zstd::bulk::decompress(payload, raw_len)
                    .map_err(|e| format!("zstd decompression failed: {e}"))?
            } else {
                use std::io::Read;
                let decoder = zstd::stream::read::Decoder::with_buffer(payload)
                    .map_err(|e| format!("zstd decompression failed: {e}"))?;
                let mut out = Vec::new();
                decoder
                    .take(raw_len as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| format!("zstd decompression failed: {e}"))?;
                out
            };
            if out.len() == raw_len {
                Ok(out)
            } else {
                Err(format!(
                    "zstd block decompressed to {} bytes, expected {raw_len}",
                    out.len()
                ))
            }
        }
        other => Err(format!("unknown compression type {other}")),
    }
}

/// Reads the block at `handle`, verifies its CRC and decompresses it.
pub fn read_block(source: &dyn SstSource, file: &str, handle: BlockHandle) -> Result<Bytes> {
    let corrupt = |reason: String| SstError::corruption(file, handle.offset, reason);
    let total = handle
        .size
        .checked_add(BLOCK_TRAILER_LEN as u64)
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| corrupt(format!("block size {} too large", handle.size)))?;
    let raw = source
        .read_at(handle.offset, total)
        .map_err(|e| SstError::io(file, e))?;
    if raw.len() != total {
        return Err(corrupt(format!(
            "short read: {} of {total} bytes",
            raw.len()
        )));
    }
    let body_len = total - BLOCK_TRAILER_LEN;
    let (body, trailer) = raw.split_at(body_len);
    let compression_type = trailer.first().copied().unwrap_or(u8::MAX);
    let stored_crc = get_u32(trailer, 1).unwrap_or(0);
    let actual = block_crc(body, compression_type);
    if VERIFY_CHECKSUMS && stored_crc != actual {
        return Err(corrupt(format!(
            "block checksum mismatch: stored {stored_crc:#010x}, computed {actual:#010x}"
        )));
    }
    match compression_type {
        COMPRESSION_NONE => Ok(raw.slice(..body_len)),
        other => decompress(other, body).map(Bytes::from).map_err(corrupt),
    }
}

/// The fixed-size footer: where the metadata blocks are, and what version the file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    pub index: BlockHandle,
    /// `size == 0 && offset == 0`: the file has no filter.
    pub filter: BlockHandle,
    pub properties: BlockHandle,
    pub version: u32,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        let fields = [
            self.index.offset,
            self.index.size,
            self.filter.offset,
            self.filter.size,
            self.properties.offset,
            self.properties.size,
        ];
        for (chunk, v) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out[48..52].copy_from_slice(&self.version.to_le_bytes());
        let crc = mask_crc(crc32c::crc32c(&out[..52]));
        out[52..56].copy_from_slice(&crc.to_le_bytes());
        out[56..64].copy_from_slice(&MAGIC.to_le_bytes());
        out
    }

    /// Decodes the footer found at `offset` (for error messages) in `file`.
    pub fn decode(buf: &[u8], file: &str, offset: u64) -> Result<Self> {
        let corrupt = |reason: &str| SstError::corruption(file, offset, reason);
        if buf.len() != FOOTER_LEN {
            return Err(corrupt("footer has the wrong length"));
        }
        let magic = get_u64(buf, 56).ok_or_else(|| corrupt("footer too short"))?;
        if magic != MAGIC {
            return Err(SstError::BadMagic {
                file: file.to_owned(),
                found: magic,
            });
        }
        let version = get_u32(buf, 48).ok_or_else(|| corrupt("footer too short"))?;
        let stored_crc = get_u32(buf, 52).ok_or_else(|| corrupt("footer too short"))?;
        let crc_ok = buf
            .get(..52)
            .is_some_and(|b| mask_crc(crc32c::crc32c(b)) == stored_crc)
            || !VERIFY_CHECKSUMS;
        if !crc_ok {
            return Err(corrupt("footer checksum mismatch"));
        }
        // Checked after the CRC so that a flipped version bit reads as corruption; a later
        // format keeps magic, version and CRC at the same place from the end.
        if version != FORMAT_VERSION {
            return Err(SstError::UnsupportedVersion {
                file: file.to_owned(),
                version,
            });
        }
        let field = |i: usize| get_u64(buf, i * 8).ok_or_else(|| corrupt("footer too short"));
        Ok(Self {
            index: BlockHandle {
                offset: field(0)?,
                size: field(1)?,
            },
            filter: BlockHandle {
                offset: field(2)?,
                size: field(3)?,
            },
            properties: BlockHandle {
                offset: field(4)?,
                size: field(5)?,
            },
            version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footer_round_trips_and_detects_damage() {
        let f = Footer {
            index: BlockHandle {
                offset: 10,
                size: 20,
            },
            filter: BlockHandle { offset: 0, size: 0 },
            properties: BlockHandle {
                offset: 35,
                size: 7,
            },
            version: FORMAT_VERSION,
        };
        let enc = f.encode();
        assert_eq!(Footer::decode(&enc, "f", 0).expect("valid"), f);
        let mut bad = enc;
        bad[3] ^= 1;
        assert!(matches!(
            Footer::decode(&bad, "f", 0),
            Err(SstError::Corruption { .. })
        ));
        let mut bad = enc;
        bad[60] ^= 1;
        assert!(matches!(
            Footer::decode(&bad, "f", 0),
            Err(SstError::BadMagic { .. })
        ));
        let v2 = Footer { version: 2, ..f }.encode();
        assert!(matches!(
            Footer::decode(&v2, "f", 0),
            Err(SstError::UnsupportedVersion { version: 2, .. })
        ));
    }

    #[test]
    fn compression_round_trips_and_rejects_garbage() {
        let raw: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
        let mut c = Compressor::new(Some(3)).expect("zstd");
        for t in [COMPRESSION_LZ4, COMPRESSION_ZSTD] {
            let mut out = Vec::new();
            assert!(c.compress(t, &raw, &mut out));
            assert!(out.len() < raw.len() / 4);
            assert_eq!(decompress(t, &out).expect("round trip"), raw);
            // Lie about the length: must be an error, not an allocation or a panic.
            let mut forged = Vec::new();
            put_varint32(&mut forged, u32::MAX);
            forged.extend_from_slice(&out[2..]);
            assert!(decompress(t, &forged).is_err());
            assert!(decompress(t, &out[..out.len() / 2]).is_err());
        }
        assert!(decompress(9, &[0]).is_err());
        assert!(decompress(COMPRESSION_LZ4, &[]).is_err());
    }

    #[test]
    fn handle_bounds() {
        let h = BlockHandle {
            offset: u64::MAX - 2,
            size: 1,
        };
        assert!(h.end().is_none());
        assert!(h.check_within(u64::MAX).is_err());
        let h = BlockHandle {
            offset: 0,
            size: 10,
        };
        assert!(h.check_within(15).is_ok());
        assert!(h.check_within(14).is_err());
        let mut enc = Vec::new();
        h.encode_varint(&mut enc);
        assert_eq!(BlockHandle::decode_varint(&enc), Some(h));
        enc.push(0);
        assert_eq!(BlockHandle::decode_varint(&enc), None);
    }
}
