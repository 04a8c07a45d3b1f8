//! An in-memory model of the catalog's durable disk, for deterministic simulation.
//!
//! It keeps exactly what [`CatalogStore::write_many`] made durable, in the same record
//! format as the RocksDB catalog, and nothing else: a simulated scheduler crash loses its
//! in-memory state and whatever it had not yet written, and the restarted scheduler loads
//! this. Clones share the same "disk", so the simulation keeps one across host restarts
//! and its oracles read what is durable.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{CatalogBatch, CatalogError, CatalogSnapshot, CatalogStore, snapshot_of};

/// The durable disk of a simulated catalog; clones share it.
#[derive(Clone, Default)]
pub struct MemCatalog {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Default)]
struct Disk {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Atomic writes applied so far (each `write_many` with any change counts one).
    writes: u64,
}

impl MemCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    fn disk(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many atomic writes are durable (a reader can tell whether anything changed).
    pub fn writes(&self) -> u64 {
        self.disk().writes
    }
}

impl CatalogStore for MemCatalog {
    fn write_many(&self, batches: Vec<CatalogBatch>) -> Result<(), CatalogError> {
        // All or nothing, like one RocksDB WriteBatch: check every batch before applying.
        let mut ops = Vec::new();
        for b in batches {
            if let Some(e) = b.error {
                return Err(e);
            }
            ops.extend(b.ops);
        }
        if ops.is_empty() {
            return Ok(());
        }
        let mut disk = self.disk();
        for (k, v) in ops {
            match v {
                Some(v) => disk.records.insert(k, v),
                None => disk.records.remove(&k),
            };
        }
        disk.writes += 1;
        Ok(())
    }

    fn load(&self) -> Result<CatalogSnapshot, CatalogError> {
        let records: Vec<(Vec<u8>, Vec<u8>)> = self
            .disk()
            .records
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        snapshot_of(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TableRecord, WorkerRecord};

    fn table(name: &str) -> TableRecord {
        TableRecord {
            name: name.into(),
            columns: Vec::new(),
            created_at_ms: 0,
            replayer_address: String::new(),
        }
    }

    #[test]
    fn keeps_what_was_written_and_clones_share_it() {
        let disk = MemCatalog::new();
        let mut b = CatalogBatch::new();
        b.put_table(&table("a")).put_table(&table("b"));
        disk.write_many(vec![b]).expect("write");
        let mut b = CatalogBatch::new();
        b.delete_table("a").set_counter("next_task_id", 7);
        disk.clone().write_many(vec![b]).expect("write");
        let snap = disk.load().expect("load");
        assert_eq!(snap.tables.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(snap.counters.get("next_task_id"), Some(&7));
        assert_eq!(disk.writes(), 2);
        // An empty write changes nothing and is not counted.
        disk.write_many(vec![CatalogBatch::new()]).expect("write");
        assert_eq!(disk.writes(), 2);
    }

    #[test]
    fn a_batch_that_cannot_be_encoded_writes_nothing() {
        let disk = MemCatalog::new();
        let mut good = CatalogBatch::new();
        good.put_worker(&WorkerRecord {
            id: 1,
            kind: "flusher".into(),
            name: "f".into(),
            address: "f:1".into(),
            slots: 1,
            version: String::new(),
            registered_at_ms: 0,
        });
        let mut bad = CatalogBatch::new();
        bad.error = Some(CatalogError::Corrupt {
            key: "k".into(),
            reason: "test".into(),
        });
        assert!(disk.write_many(vec![good, bad]).is_err());
        assert!(disk.load().expect("load").workers.is_empty());
        assert_eq!(disk.writes(), 0);
    }
}
