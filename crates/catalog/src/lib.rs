//! The scheduler's durable catalog, on an embedded RocksDB.
