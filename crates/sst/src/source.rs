//! Random-access byte sources an SST is read from.
//!
//! Deliberately small: the storage crate implements it over an object store (ranged GETs),
//! this crate over memory and local files.

use std::sync::Arc;

use bytes::Bytes;

/// A random-access, immutable byte source.
pub trait SstSource: Send + Sync {
    /// Total length in bytes.
    fn size(&self) -> u64;
    /// Reads `len` bytes at `offset`. Returning fewer bytes than asked is allowed (the reader
    /// reports a short read as corruption); reading past the end may also be an error.
    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes>;
}

fn out_of_range(offset: u64, len: usize, size: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("read of {len} bytes at {offset} past the end ({size} bytes)"),
    )
}

/// An in-memory file: reads are zero-copy slices.
impl SstSource for Bytes {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let start = usize::try_from(offset).map_err(|_| out_of_range(offset, len, self.size()))?;
        match start.checked_add(len) {
            Some(end) if end <= self.len() => Ok(self.slice(start..end)),
            _ => Err(out_of_range(offset, len, self.size())),
        }
    }
}

/// A local file, read with `pread` (no shared cursor, so concurrent readers are fine).
impl SstSource for std::fs::File {
    fn size(&self) -> u64 {
        // A file whose metadata cannot be read looks empty, which `SstReader::open` reports.
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(Bytes::from(buf))
    }
}

impl<T: SstSource + ?Sized> SstSource for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        (**self).read_at(offset, len)
    }
}

impl<T: SstSource + ?Sized> SstSource for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        (**self).read_at(offset, len)
    }
}

/// An SST in shared storage (local directory or S3), read through
/// [`storage::BlockingReader`]'s readahead window: iteration streams the object without
/// buffering it whole. Use from a blocking thread.
pub struct ObjectSource {
    reader: std::sync::Mutex<storage::BlockingReader>,
    size: u64,
}

impl ObjectSource {
    pub fn new(reader: storage::BlockingReader) -> Self {
        let size = reader.size();
        Self {
            reader: std::sync::Mutex::new(reader),
            size,
        }
    }

    /// Ranged requests issued so far.
    pub fn requests(&self) -> u64 {
        self.reader.lock().map(|r| r.requests()).unwrap_or_default()
    }
}

impl SstSource for ObjectSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        self.reader
            .lock()
            .map_err(|_| std::io::Error::other("object reader poisoned by a panic"))?
            .read_at(offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_source_bounds() {
        let b = Bytes::from_static(b"hello world");
        assert_eq!(b.read_at(6, 5).expect("in range"), &b"world"[..]);
        assert!(b.read_at(7, 5).is_err());
        assert!(b.read_at(u64::MAX, 1).is_err());
        assert!(b.read_at(1, usize::MAX).is_err());
    }

    #[test]
    fn file_source_reads() {
        use std::io::Write;
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"hello world").expect("write");
        assert_eq!(SstSource::size(&f), 11);
        assert_eq!(SstSource::read_at(&f, 0, 5).expect("read"), &b"hello"[..]);
        assert!(SstSource::read_at(&f, 8, 5).is_err());
    }
}
