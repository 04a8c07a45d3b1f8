//! A synchronous, positioned reader over one object, with readahead.
//!
//! Why: SST iterators and the merging iterator are synchronous (see `lsm::iter`) so the merge
//! loop stays a tight CPU loop, but SSTs live in an object store that is only reachable
//! asynchronously. [`BlockingReader`] bridges the two: `read_at` blocks the calling thread on
//! a ranged GET issued through a tokio runtime [`Handle`], and keeps a window of
//! `readahead` bytes so that a sequential scan of a multi-gigabyte object issues one request
//! per window instead of one per block, without ever buffering the whole object.
//!
//! When reads are sequential (a read starts where the current window ends) the next window
//! is fetched in the background while the caller consumes the current one (double
//! buffering), so a scan over S3 is not stalled by one round trip per window.
//!
//! **Use it only from a blocking thread** (`tokio::task::spawn_blocking`, or a thread outside
//! the runtime). It calls [`Handle::block_on`], which panics when called from a thread that
//! is driving async tasks.

use std::io;

use bytes::{Bytes, BytesMut};
use object_store::path::Path;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::{Storage, StorageError};

/// Tuning of a [`BlockingReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockingReaderConfig {
    /// Bytes fetched per request at least (the window). Point lookups want it small (one
    /// block); scans want it large. Default: 2 MiB.
    pub readahead: usize,
    /// Fetch the next window in the background during sequential reads. Default: true.
    pub prefetch: bool,
}

impl Default for BlockingReaderConfig {
    fn default() -> Self {
        Self {
            readahead: 2 * 1024 * 1024,
            prefetch: true,
        }
    }
}

/// Bytes of the object held in memory, starting at `start`.
struct Window {
    start: u64,
    data: Bytes,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    fn contains(&self, pos: u64) -> bool {
        self.start <= pos && pos < self.end()
    }

    /// `[from, to)` in object offsets; both must lie within the window.
    fn slice(&self, from: u64, to: u64) -> Bytes {
        self.data
            .slice((from - self.start) as usize..(to - self.start) as usize)
    }
}

struct Prefetch {
    start: u64,
    end: u64,
    task: JoinHandle<Result<Bytes, StorageError>>,
}

/// Synchronous positioned reads over one object. See the module docs.
pub struct BlockingReader {
    storage: Storage,
    handle: Handle,
    path: Path,
    size: u64,
    config: BlockingReaderConfig,
    window: Option<Window>,
    prefetch: Option<Prefetch>,
    requests: u64,
}

impl std::fmt::Debug for BlockingReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingReader")
            .field("path", &self.path)
            .field("size", &self.size)
            .field("config", &self.config)
            .field("requests", &self.requests)
            .finish()
    }
}

impl BlockingReader {
    pub(crate) fn new(
        storage: Storage,
        handle: Handle,
        path: Path,
        size: u64,
        config: BlockingReaderConfig,
    ) -> Self {
        Self {
            storage,
            handle,
            path,
            size,
            config,
            window: None,
            prefetch: None,
            requests: 0,
        }
    }

    /// The object read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The object's size, as given when the reader was made.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Ranged requests issued so far (foreground and background).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Reads exactly `len` bytes at `offset`. A range past the end of the object is an
    /// [`io::ErrorKind::UnexpectedEof`] error; storage failures carry the
    /// [`StorageError`] (downcast with `err.get_ref()`).
    pub fn read_at(&mut self, offset: u64, len: usize) -> io::Result<Bytes> {
        let end = offset
            .checked_add(len as u64)
            .filter(|end| *end <= self.size)
            .ok_or_else(|| StorageError::OutOfRange {
                path: self.path.to_string(),
                start: offset,
                end: offset.saturating_add(len as u64),
                size: self.size,
            })?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        let mut out: Option<BytesMut> = None;
        let mut pos = offset;
        while pos < end {
            let window = self.window_at(pos, end)?;
            let piece_end = end.min(window.end());
            let piece = window.slice(pos, piece_end);
            if pos == offset && piece_end == end {
                // The common case: the whole read lies in one window, no copy.
                return Ok(piece);
            }
            out.get_or_insert_with(|| BytesMut::with_capacity(len))
                .extend_from_slice(&piece);
            pos = piece_end;
        }
        Ok(out.map(BytesMut::freeze).unwrap_or_default())
    }

    /// Makes the window contain `pos`, fetching at least up to `want_end`.
    fn window_at(&mut self, pos: u64, want_end: u64) -> io::Result<&Window> {
        let covered = self.window.as_ref().is_some_and(|w| w.contains(pos));
        if !covered {
            let sequential = self.window.as_ref().is_some_and(|w| w.end() == pos);
            let from_prefetch = match self.prefetch.take() {
                Some(p) if p.start <= pos && pos < p.end => {
                    let data = self.handle.block_on(p.task).map_err(|e| {
                        io::Error::other(format!("readahead of {}: {e}", self.path))
                    })??;
                    self.check_len(p.start, p.end, &data)?;
                    self.window = Some(Window {
                        start: p.start,
                        data,
                    });
                    true
                }
                Some(p) => {
                    p.task.abort();
                    false
                }
                None => false,
            };
            if !from_prefetch {
                let fetch_end = self
                    .size
                    .min(want_end.max(pos.saturating_add(self.config.readahead as u64)));
                let storage = self.storage.clone();
                let path = self.path.clone();
                self.requests += 1;
                let data = self
                    .handle
                    .block_on(async move { storage.get_range(&path, pos..fetch_end).await })?;
                self.check_len(pos, fetch_end, &data)?;
                self.window = Some(Window { start: pos, data });
            }
            if from_prefetch || sequential {
                self.start_prefetch();
            }
        }
        self.window
            .as_ref()
            .ok_or_else(|| io::Error::other("readahead window missing after fetch"))
    }

    fn start_prefetch(&mut self) {
        if !self.config.prefetch || self.config.readahead == 0 || self.prefetch.is_some() {
            return;
        }
        let Some(start) = self.window.as_ref().map(Window::end) else {
            return;
        };
        if start >= self.size {
            return;
        }
        let end = self
            .size
            .min(start.saturating_add(self.config.readahead as u64));
        let storage = self.storage.clone();
        let path = self.path.clone();
        self.requests += 1;
        let task = self
            .handle
            .spawn(async move { storage.get_range(&path, start..end).await });
        self.prefetch = Some(Prefetch { start, end, task });
    }

    fn check_len(&self, start: u64, end: u64, data: &Bytes) -> io::Result<()> {
        if data.len() as u64 != end - start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "short read of {} at {start}..{end}: got {} bytes (object changed or shorter than {})",
                    self.path,
                    data.len(),
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for BlockingReader {
    fn drop(&mut self) {
        if let Some(p) = self.prefetch.take() {
            p.task.abort();
        }
    }
}

/// A synchronous [`io::Write`] over an [`crate::ObjectWriter`] (multipart upload), so a
/// streaming builder on a blocking thread (the SST builder) writes a large object without
/// buffering it whole. Call [`BlockingWriter::finish`] to complete the upload; dropping it
/// unfinished leaves no object behind.
///
/// **Use it only from a blocking thread**, like [`BlockingReader`].
pub struct BlockingWriter {
    handle: Handle,
    inner: Option<crate::ObjectWriter>,
}

impl BlockingWriter {
    pub fn new(handle: Handle, inner: crate::ObjectWriter) -> Self {
        Self {
            handle,
            inner: Some(inner),
        }
    }

    /// Completes the upload; returns the object's size.
    pub fn finish(mut self) -> Result<u64, StorageError> {
        match self.inner.take() {
            Some(w) => self.handle.block_on(w.finish()),
            None => Ok(0),
        }
    }

    /// Bytes accepted so far.
    pub fn bytes_written(&self) -> u64 {
        self.inner.as_ref().map_or(0, |w| w.bytes_written())
    }
}

impl io::Write for BlockingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let w = self
            .inner
            .as_mut()
            .ok_or_else(|| io::Error::other("writer already finished"))?;
        self.handle
            .block_on(w.write(buf))
            .map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for BlockingWriter {
    fn drop(&mut self) {
        if let Some(w) = self.inner.take() {
            let _ = self.handle.block_on(w.abort());
        }
    }
}
