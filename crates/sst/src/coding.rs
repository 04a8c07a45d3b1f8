//! Little-endian fixed-width integers and LEB128 varints, with checked decoding.
//!
//! Decoders take a slice and a position and return `None` instead of reading past the end or
//! accepting an overlong varint: callers turn `None` into a corruption error with context.

/// Appends `v` as a LEB128 varint (at most 5 bytes).
#[inline]
pub fn put_varint32(out: &mut Vec<u8>, v: u32) {
    put_varint64(out, u64::from(v));
}

/// Appends `v` as a LEB128 varint (at most 10 bytes).
#[inline]
pub fn put_varint64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a varint that must fit in 32 bits from `buf[*pos..]`, advancing `pos`.
#[inline]
pub fn get_varint32(buf: &[u8], pos: &mut usize) -> Option<u32> {
    // Fast path: one byte.
    let first = *buf.get(*pos)?;
    if first < 0x80 {
        *pos += 1;
        return Some(u32::from(first));
    }
    let v = get_varint64(buf, pos)?;
    u32::try_from(v).ok()
}

/// Decodes a varint of at most 10 bytes from `buf[*pos..]`, advancing `pos`.
#[inline]
pub fn get_varint64(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut result: u64 = 0;
    let mut p = *pos;
    for shift in (0..64).step_by(7) {
        let byte = *buf.get(p)?;
        p += 1;
        let bits = u64::from(byte & 0x7f);
        // The 10th byte may only carry the top bit of a u64.
        if shift == 63 && bits > 1 {
            return None;
        }
        result |= bits << shift;
        if byte < 0x80 {
            *pos = p;
            return Some(result);
        }
    }
    None
}

/// Reads a little-endian u32 at `pos`.
#[inline]
pub fn get_u32(buf: &[u8], pos: usize) -> Option<u32> {
    let end = pos.checked_add(4)?;
    let bytes: [u8; 4] = buf.get(pos..end)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Reads a little-endian u64 at `pos`.
#[inline]
pub fn get_u64(buf: &[u8], pos: usize) -> Option<u64> {
    let end = pos.checked_add(8)?;
    let bytes: [u8; 8] = buf.get(pos..end)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Masks a CRC32C so that a CRC stored inside checksummed data does not produce a
/// degenerate checksum (RocksDB's and LevelDB's `crc32c::Mask`).
#[inline]
pub fn mask_crc(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn varint_len(mut v: u64) -> usize {
        let mut n = 1;
        while v >= 0x80 {
            v >>= 7;
            n += 1;
        }
        n
    }

    #[test]
    fn varint_edges() {
        for v in [
            0u64,
            1,
            127,
            128,
            16383,
            16384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint64(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            let mut pos = 0;
            assert_eq!(get_varint64(&buf, &mut pos), Some(v));
            assert_eq!(pos, buf.len());
        }
        // Truncated, overlong, and too big for 32 bits.
        assert_eq!(get_varint64(&[0x80], &mut 0), None);
        assert_eq!(get_varint64(&[0xff; 11], &mut 0), None);
        let mut ten = vec![0xff; 9];
        ten.push(0x02);
        assert_eq!(get_varint64(&ten, &mut 0), None);
        let mut big = Vec::new();
        put_varint64(&mut big, u64::from(u32::MAX) + 1);
        assert_eq!(get_varint32(&big, &mut 0), None);
        assert_eq!(get_u32(&[1, 2, 3], 0), None);
        assert_eq!(get_u64(&[0; 8], usize::MAX), None);
    }

    proptest! {
        #[test]
        fn varint_round_trip(v in any::<u64>(), prefix in 0usize..3) {
            let mut buf = vec![0u8; prefix];
            put_varint64(&mut buf, v);
            let mut pos = prefix;
            prop_assert_eq!(get_varint64(&buf, &mut pos), Some(v));
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn varint_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12), pos in 0usize..14) {
            let mut p = pos;
            let _ = get_varint64(&bytes, &mut p);
            let mut p = pos;
            let _ = get_varint32(&bytes, &mut p);
        }
    }
}
