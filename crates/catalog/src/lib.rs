//! The scheduler's durable catalog, on an embedded RocksDB.
//!
//! It holds tables, each table's current manifest version and flushed checkpoint, tasks
//! (with attempts and error history), registered workers, table statistics and id
//! counters. The scheduler keeps the whole state in memory and persists every change that
//! must be atomic (add outputs + remove inputs + bump version + finish task) as **one
//! synced WriteBatch** ([`Catalog::write`]); on start it loads everything back
//! ([`Catalog::load`]).
//!
//! Records are JSON (small, few, and readable with `ldb` when debugging); keys are a
//! one-byte-kind prefix plus the record's id.

mod mem;
pub mod model;

use std::collections::BTreeMap;
use std::path::Path;

use rocksdb::{DB, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use mem::MemCatalog;
pub use model::*;

/// A catalog failure.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog at {path}: {source}")]
    Open {
        path: String,
        source: rocksdb::Error,
    },
    #[error("catalog write failed: {0}")]
    Write(rocksdb::Error),
    #[error("catalog read failed: {0}")]
    Read(rocksdb::Error),
    #[error("corrupt catalog record {key:?}: {reason}")]
    Corrupt { key: String, reason: String },
}

const TABLE: u8 = b't';
const MANIFEST: u8 = b'm';
const TASK: u8 = b'k';
const WORKER: u8 = b'w';
const STATS: u8 = b's';
const COUNTER: u8 = b'c';
const QUARANTINE: u8 = b'q';

fn key(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.len() + 2);
    k.push(prefix);
    k.push(b'/');
    k.extend_from_slice(id);
    k
}

/// Everything the catalog holds, as loaded at start.
#[derive(Debug, Default, Clone)]
pub struct CatalogSnapshot {
    pub tables: BTreeMap<String, TableRecord>,
    pub manifests: BTreeMap<String, ManifestRecord>,
    pub tasks: BTreeMap<u64, TaskRecord>,
    pub workers: BTreeMap<u64, WorkerRecord>,
    /// Statistics per table, as opaque JSON written by the scheduler.
    pub stats: BTreeMap<String, serde_json::Value>,
    pub counters: BTreeMap<String, u64>,
    /// Quarantined files by file id.
    pub quarantined: BTreeMap<u64, QuarantineRecord>,
}

/// Changes to persist atomically: puts (`Some`) and deletes (`None`) in order.
#[derive(Default)]
pub struct CatalogBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    error: Option<CatalogError>,
}

impl CatalogBatch {
    pub fn new() -> Self {
        Self::default()
    }

    fn put_json<T: Serialize>(&mut self, k: Vec<u8>, v: &T) -> &mut Self {
        match serde_json::to_vec(v) {
            Ok(bytes) => self.ops.push((k, Some(bytes))),
            Err(e) => {
                self.error.get_or_insert(CatalogError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    reason: format!("cannot encode: {e}"),
                });
            }
        }
        self
    }

    pub fn put_table(&mut self, t: &TableRecord) -> &mut Self {
        self.put_json(key(TABLE, t.name.as_bytes()), t)
    }
    pub fn delete_table(&mut self, name: &str) -> &mut Self {
        self.ops.push((key(TABLE, name.as_bytes()), None));
        self.ops.push((key(MANIFEST, name.as_bytes()), None));
        self.ops.push((key(STATS, name.as_bytes()), None));
        self
    }
    pub fn put_manifest(&mut self, m: &ManifestRecord) -> &mut Self {
        self.put_json(key(MANIFEST, m.table.as_bytes()), m)
    }
    pub fn put_task(&mut self, t: &TaskRecord) -> &mut Self {
        self.put_json(key(TASK, &t.id.to_be_bytes()), t)
    }
    pub fn delete_task(&mut self, id: u64) -> &mut Self {
        self.ops.push((key(TASK, &id.to_be_bytes()), None));
        self
    }
    pub fn put_worker(&mut self, w: &WorkerRecord) -> &mut Self {
        self.put_json(key(WORKER, &w.id.to_be_bytes()), w)
    }
    pub fn delete_worker(&mut self, id: u64) -> &mut Self {
        self.ops.push((key(WORKER, &id.to_be_bytes()), None));
        self
    }
    pub fn put_stats(&mut self, table: &str, stats: &serde_json::Value) -> &mut Self {
        self.put_json(key(STATS, table.as_bytes()), stats)
    }
    pub fn put_quarantine(&mut self, q: &QuarantineRecord) -> &mut Self {
        self.put_json(key(QUARANTINE, &q.file_id.to_be_bytes()), q)
    }
    pub fn delete_quarantine(&mut self, file_id: u64) -> &mut Self {
        self.ops
            .push((key(QUARANTINE, &file_id.to_be_bytes()), None));
        self
    }
    pub fn set_counter(&mut self, name: &str, value: u64) -> &mut Self {
        self.ops.push((
            key(COUNTER, name.as_bytes()),
            Some(value.to_be_bytes().to_vec()),
        ));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.error.is_none()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// The catalog.
pub struct Catalog {
    db: DB,
}

impl Catalog {
    /// Opens (or creates) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self, CatalogError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        // Small database of small records: keep memory and files small.
        opts.set_write_buffer_size(8 << 20);
        opts.set_max_log_file_size(16 << 20);
        opts.set_keep_log_file_num(5);
        let db = DB::open(&opts, path).map_err(|source| CatalogError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self { db })
    }

    /// Persists `batch` atomically and durably (synced WAL) before returning.
    pub fn write(&self, batch: CatalogBatch) -> Result<(), CatalogError> {
        self.write_many(std::iter::once(batch))
    }

    /// Persists several batches, in order, as one atomic synced write (group commit: one
    /// fsync for all of them).
    pub fn write_many(
        &self,
        batches: impl IntoIterator<Item = CatalogBatch>,
    ) -> Result<(), CatalogError> {
        let mut wb = WriteBatch::default();
        for b in batches {
            if let Some(e) = b.error {
                return Err(e);
            }
            for (k, v) in b.ops {
                match v {
                    Some(v) => wb.put(k, v),
                    None => wb.delete(k),
                }
            }
        }
        if wb.is_empty() {
            return Ok(());
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        self.db.write_opt(wb, &opts).map_err(CatalogError::Write)
    }

    /// Loads every record.
    pub fn load(&self) -> Result<CatalogSnapshot, CatalogError> {
        let mut records = Vec::new();
        for item in self.db.iterator(rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(CatalogError::Read)?;
            records.push((k.into_vec(), v.into_vec()));
        }
        snapshot_of(records)
    }
}

/// What the scheduler needs of a durable catalog: atomic, durable, ordered group writes
/// and a full load at start. [`Catalog`] (RocksDB) in production; [`MemCatalog`], a model
/// of the durable disk, in deterministic simulation.
pub trait CatalogStore: Send + 'static {
    /// Persists the batches, in order, as one atomic durable write.
    fn write_many(&self, batches: Vec<CatalogBatch>) -> Result<(), CatalogError>;
    /// Loads every record.
    fn load(&self) -> Result<CatalogSnapshot, CatalogError>;
}

impl CatalogStore for Catalog {
    fn write_many(&self, batches: Vec<CatalogBatch>) -> Result<(), CatalogError> {
        Catalog::write_many(self, batches)
    }

    fn load(&self) -> Result<CatalogSnapshot, CatalogError> {
        Catalog::load(self)
    }
}

/// Decodes the catalog's records (key, value), in key order, into a snapshot.
fn snapshot_of(
    records: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<CatalogSnapshot, CatalogError> {
    let mut snap = CatalogSnapshot::default();
    for (k, v) in records {
        let name = String::from_utf8_lossy(&k).into_owned();
        let (prefix, id) = match k.split_first() {
            Some((p, rest)) if rest.first() == Some(&b'/') => (*p, &rest[1..]),
            _ => {
                return Err(CatalogError::Corrupt {
                    key: name,
                    reason: "unknown key layout".into(),
                });
            }
        };
        match prefix {
            TABLE => {
                let t: TableRecord = decode(&name, &v)?;
                snap.tables.insert(t.name.clone(), t);
            }
            MANIFEST => {
                let m: ManifestRecord = decode(&name, &v)?;
                snap.manifests.insert(m.table.clone(), m);
            }
            TASK => {
                let t: TaskRecord = decode(&name, &v)?;
                snap.tasks.insert(t.id, t);
            }
            WORKER => {
                let w: WorkerRecord = decode(&name, &v)?;
                snap.workers.insert(w.id, w);
            }
            QUARANTINE => {
                let q: QuarantineRecord = decode(&name, &v)?;
                snap.quarantined.insert(q.file_id, q);
            }
            STATS => {
                let s: serde_json::Value = decode(&name, &v)?;
                snap.stats
                    .insert(String::from_utf8_lossy(id).into_owned(), s);
            }
            COUNTER => {
                let bytes: [u8; 8] =
                    v.as_slice().try_into().map_err(|_| CatalogError::Corrupt {
                        key: name.clone(),
                        reason: format!("counter of {} bytes", v.len()),
                    })?;
                snap.counters.insert(
                    String::from_utf8_lossy(id).into_owned(),
                    u64::from_be_bytes(bytes),
                );
            }
            _ => {
                return Err(CatalogError::Corrupt {
                    key: name,
                    reason: "unknown record kind".into(),
                });
            }
        }
    }
    Ok(snap)
}

fn decode<T: DeserializeOwned>(key: &str, v: &[u8]) -> Result<T, CatalogError> {
    serde_json::from_slice(v).map_err(|e| CatalogError::Corrupt {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::manifest::Version;

    fn task(id: u64) -> TaskRecord {
        TaskRecord {
            id,
            spec: TaskSpec::StatisticsUpdate { table: "t".into() },
            state: TaskState::Running,
            attempt: 2,
            attempts: vec![],
            errors: vec![ErrorRecord {
                attempt: 1,
                kind: "lease_expired".into(),
                message: "no heartbeat for 10s".into(),
                file: String::new(),
                offset: 0,
                retriable: true,
                at_ms: 5,
            }],
            created_at_ms: 1,
            not_before_ms: 0,
            priority: 0,
            finished_at_ms: 0,
            staged_files: None,
            trace_parent: String::new(),
        }
    }

    #[test]
    fn a_batch_survives_reopen_and_deletes_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let cat = Catalog::open(dir.path()).expect("open");
            let mut b = CatalogBatch::new();
            b.put_table(&TableRecord {
                name: "t".into(),
                columns: vec![],
                created_at_ms: 1,
                replayer_address: String::new(),
            })
            .put_manifest(&ManifestRecord {
                table: "t".into(),
                version: 3,
                checkpoint: 42,
                levels: Version::new(4),
            })
            .put_task(&task(7))
            .put_task(&task(8))
            .set_counter("next_file_id", 100);
            cat.write(b).expect("write");
            let mut b = CatalogBatch::new();
            b.delete_task(8);
            cat.write(b).expect("write");
        }
        let cat = Catalog::open(dir.path()).expect("reopen");
        let snap = cat.load().expect("load");
        assert_eq!(snap.tables.len(), 1);
        assert_eq!(snap.manifests["t"].checkpoint, 42);
        assert_eq!(snap.tasks.keys().copied().collect::<Vec<_>>(), [7]);
        assert_eq!(snap.tasks[&7], task(7));
        assert_eq!(snap.counters["next_file_id"], 100);
    }

    #[test]
    fn a_corrupt_record_is_a_typed_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::open(dir.path()).expect("open");
        cat.db
            .put(b"k/\x00\x00\x00\x00\x00\x00\x00\x01", b"{not json")
            .expect("put");
        match cat.load() {
            Err(CatalogError::Corrupt { key, .. }) => assert!(key.starts_with("k/")),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn quarantined_files_survive_reopen_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = QuarantineRecord {
            table: "t".into(),
            file_id: 42,
            level: 0,
            error: task(1).errors[0].clone(),
            since_ms: 7,
            wal: None,
        };
        let segment = QuarantineRecord {
            file_id: 43,
            wal: Some(WalQuarantine {
                first_seq: 1001,
                repair_task: 9,
                released: true,
            }),
            ..q.clone()
        };
        {
            let cat = Catalog::open(dir.path()).expect("open");
            let mut b = CatalogBatch::new();
            b.put_quarantine(&q).put_quarantine(&segment);
            cat.write(b).expect("write");
        }
        let cat = Catalog::open(dir.path()).expect("reopen");
        assert_eq!(cat.load().expect("load").quarantined.get(&42), Some(&q));
        assert_eq!(
            cat.load().expect("load").quarantined.get(&43),
            Some(&segment)
        );
        let mut b = CatalogBatch::new();
        b.delete_quarantine(42).delete_quarantine(43);
        cat.write(b).expect("write");
        assert!(cat.load().expect("load").quarantined.is_empty());
    }
}
