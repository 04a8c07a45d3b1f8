//! Where the merge reads its inputs and writes its outputs: the [`SstStore`] seam.
//!
//! The merge ([`crate::merge`]) is synchronous CPU work on blocking threads; it only needs
//! byte sources to open and byte sinks to fill. [`StorageSstStore`] provides them over the
//! shared storage (ranged GETs with readahead in, multipart uploads out), as the RPC runs
//! it; [`MemorySstStore`] keeps files in memory, for the model tests and for benchmarks
//! that measure the merge without storage.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::sync::Mutex;

use bytes::Bytes;
use lsm::manifest::FileMeta;
use sst::SstSource;
use storage::{BlockingReaderConfig, BlockingWriter, Storage, TableName};

use crate::error::CompactionError;

/// Inputs to open and outputs to create, by file id. Called from blocking threads.
pub trait SstStore: Send + Sync + 'static {
    /// An output being written; dropping it without [`SstStore::finish_output`] abandons
    /// it (nothing becomes visible).
    type Writer: Write + Send;

    /// The name of file `file_id` in messages (its object path).
    fn path(&self, file_id: u64) -> String;

    /// The bytes of input `file`. May do no IO at all: a missing object is reported by
    /// the first read.
    fn open_input(&self, file: &FileMeta) -> Result<Box<dyn SstSource>, CompactionError>;

    /// Starts output `file_id`.
    fn create_output(&self, file_id: u64) -> Result<Self::Writer, CompactionError>;

    /// Makes output `file_id` visible; returns its stored size.
    fn finish_output(&self, file_id: u64, writer: Self::Writer) -> Result<u64, CompactionError>;

    /// Deletes finished output `file_id` of an attempt that will not report it (best
    /// effort: what stays behind is an orphan that Cleanup deletes).
    fn discard_output(&self, file_id: u64);
}

/// SSTs held in memory, named like the objects of `table`.
#[derive(Debug)]
pub struct MemorySstStore {
    table: TableName,
    files: Mutex<BTreeMap<u64, Bytes>>,
}

impl MemorySstStore {
    pub fn new(table: TableName) -> Self {
        Self {
            table,
            files: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Bytes>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores file `file_id` (an input written by a test, say).
    pub fn insert(&self, file_id: u64, bytes: Bytes) {
        self.lock().insert(file_id, bytes);
    }

    pub fn get(&self, file_id: u64) -> Option<Bytes> {
        self.lock().get(&file_id).cloned()
    }

    pub fn remove(&self, file_id: u64) -> Option<Bytes> {
        self.lock().remove(&file_id)
    }

    /// Ids of every stored file.
    pub fn file_ids(&self) -> Vec<u64> {
        self.lock().keys().copied().collect()
    }
}

impl SstStore for MemorySstStore {
    type Writer = Vec<u8>;

    fn path(&self, file_id: u64) -> String {
        storage::paths::sst_file(&self.table, file_id).to_string()
    }

    fn open_input(&self, file: &FileMeta) -> Result<Box<dyn SstSource>, CompactionError> {
        let bytes = self
            .get(file.id)
            .ok_or_else(|| CompactionError::InputMissing {
                file: self.path(file.id),
            })?;
        Ok(Box::new(bytes))
    }

    fn create_output(&self, _file_id: u64) -> Result<Vec<u8>, CompactionError> {
        Ok(Vec::new())
    }

    fn finish_output(&self, file_id: u64, writer: Vec<u8>) -> Result<u64, CompactionError> {
        let size = writer.len() as u64;
        self.insert(file_id, Bytes::from(writer));
        Ok(size)
    }

    fn discard_output(&self, file_id: u64) {
        self.remove(file_id);
    }
}

/// Buffer in front of an upload (the builder writes one block per `write`).
const OUTPUT_BUFFER: usize = 1 << 20;

/// The SSTs of `table` in the shared storage. Use from blocking threads only: reads and
/// writes block on the runtime behind `handle`.
pub struct StorageSstStore {
    storage: Storage,
    handle: tokio::runtime::Handle,
    table: TableName,
    reader: BlockingReaderConfig,
}

impl StorageSstStore {
    /// `reader` tunes every input's readahead (see [`readahead_for`]).
    pub fn new(
        storage: Storage,
        handle: tokio::runtime::Handle,
        table: TableName,
        reader: BlockingReaderConfig,
    ) -> Self {
        Self {
            storage,
            handle,
            table,
            reader,
        }
    }

    fn object(&self, file_id: u64) -> storage::ObjectPath {
        storage::paths::sst_file(&self.table, file_id)
    }
}

/// Readahead of each input when `open_at_once` inputs are read at the same time: a budget
/// of [`READAHEAD_BUDGET`] shared among them (each holds its window and a prefetched
/// one), within 256 KiB (a few blocks per request) and 2 MiB (the reader's default).
pub fn readahead_for(open_at_once: usize) -> BlockingReaderConfig {
    let per_input = READAHEAD_BUDGET / open_at_once.max(1) / 2;
    BlockingReaderConfig {
        readahead: per_input.clamp(256 << 10, 2 << 20),
        prefetch: true,
    }
}

/// Memory an attempt spends on input readahead, about.
pub const READAHEAD_BUDGET: usize = 64 << 20;

impl SstStore for StorageSstStore {
    type Writer = BufWriter<BlockingWriter>;

    fn path(&self, file_id: u64) -> String {
        self.object(file_id).to_string()
    }

    fn open_input(&self, file: &FileMeta) -> Result<Box<dyn SstSource>, CompactionError> {
        let reader = self.storage.blocking_reader(
            self.handle.clone(),
            self.object(file.id),
            file.size,
            self.reader,
        );
        Ok(Box::new(sst::ObjectSource::new(reader)))
    }

    fn create_output(&self, file_id: u64) -> Result<Self::Writer, CompactionError> {
        let object = self
            .handle
            .block_on(self.storage.writer(&self.object(file_id)))
            .map_err(CompactionError::Storage)?;
        Ok(BufWriter::with_capacity(
            OUTPUT_BUFFER,
            BlockingWriter::new(self.handle.clone(), object),
        ))
    }

    fn finish_output(&self, file_id: u64, writer: Self::Writer) -> Result<u64, CompactionError> {
        let write_failed = |cause: String| CompactionError::WriteOutput {
            file: self.path(file_id),
            cause,
            retriable: true,
        };
        let writer = writer
            .into_inner()
            .map_err(|e| write_failed(e.error().to_string()))?;
        writer.finish().map_err(|e| write_failed(e.to_string()))
    }

    fn discard_output(&self, file_id: u64) {
        let path = self.object(file_id);
        if let Err(e) = self.handle.block_on(self.storage.delete(&path)) {
            tracing::warn!(%path, error = %e, "could not delete an unreported output; Cleanup will");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readahead_shrinks_with_many_inputs_within_bounds() {
        assert_eq!(readahead_for(0).readahead, 2 << 20);
        assert_eq!(readahead_for(4).readahead, 2 << 20);
        assert_eq!(readahead_for(32).readahead, 1 << 20);
        assert_eq!(readahead_for(10_000).readahead, 256 << 10);
    }

    #[test]
    fn the_memory_store_keeps_finished_outputs_only() {
        let store = MemorySstStore::new(TableName::new("t").expect("name"));
        let mut w = store.create_output(3).expect("create");
        w.extend_from_slice(b"abc");
        drop(store.create_output(4).expect("create"));
        assert_eq!(store.finish_output(3, w).expect("finish"), 3);
        assert_eq!(store.file_ids(), [3]);
        assert_eq!(store.path(3), "tables/t/sst/00000000000000000003.sst");
        store.discard_output(3);
        assert!(store.file_ids().is_empty());
    }
}
