//! Statistics match the data: a known data set of 50 000 keys spread over three levels, with
//! overwrites, tombstones, rows with nulls, values of the wrong type and values that are not
//! JSON; exact counts, key range, per-level figures, space amplification and column
//! null/min/max; key and column distinct-count estimates within 5%. Then the same through
//! shared storage with `update_statistics`.

use std::collections::{BTreeMap, HashSet};

use compactor::stats::{
    ColumnDef, ColumnType, LevelStats, Statistics, StatsError, StatsInput, compute_statistics,
    update_statistics,
};
use lsm::ValueKind;
use lsm::key::encode_internal_key;
use proto::v1 as pb;
use serde_json::{Map, Value, json};
use sst::{Bytes, SstBuilder, SstOptions};
use storage::Storage;
use storage::paths::{self, TableName};
use tokio_util::sync::CancellationToken;

const KEYS: u64 = 50_000;
/// Keys written only in L0, after the original ones.
const NEW_KEYS: u64 = 2_000;

fn user_key(i: u64) -> String {
    format!("user{i:07}")
}

/// One row as generated: `None` = the key is absent from the JSON object.
#[derive(Debug, Clone)]
struct Row {
    id: Option<i64>,
    /// `Some(None)`: present as JSON null.
    score: Option<Option<f64>>,
    /// `Err(n)`: an integer where a string is declared (counts as null).
    name: Option<Result<String, i64>>,
    active: Option<bool>,
}

impl Row {
    fn new(i: u64, version: u64) -> Self {
        Self {
            id: (!(i + version).is_multiple_of(13)).then(|| i as i64 - 20_000),
            score: Some(
                (!i.is_multiple_of(17)).then_some((i % 1000) as f64 * 0.25 + version as f64),
            ),
            name: Some(if i.is_multiple_of(19) {
                Err(42)
            } else {
                Ok(format!("name-{}", i % 4_999))
            }),
            active: (!i.is_multiple_of(23)).then_some(i.is_multiple_of(2) && version != 1),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut m = Map::new();
        if let Some(id) = self.id {
            m.insert("id".into(), json!(id));
        }
        if let Some(score) = self.score {
            m.insert("score".into(), score.map_or(Value::Null, |s| json!(s)));
        }
        if let Some(name) = &self.name {
            let v = match name {
                Ok(s) => json!(s),
                Err(n) => json!(n),
            };
            m.insert("name".into(), v);
        }
        if let Some(active) = self.active {
            m.insert("active".into(), json!(active));
        }
        Value::Object(m).to_string().into_bytes()
    }
}

/// What a key's version holds.
#[derive(Debug, Clone)]
enum Version {
    Row(Row),
    NotJson,
    Tombstone,
}

impl Version {
    fn value(&self) -> Vec<u8> {
        match self {
            Self::Row(r) => r.encode(),
            Self::NotJson => b"<not json>".to_vec(),
            Self::Tombstone => Vec::new(),
        }
    }
}

/// The data set: files in merge order (level, writes), and the writes in sequence order.
struct DataSet {
    /// (level, file id, SST bytes), newest first within L0.
    files: Vec<(u32, u64, Bytes)>,
    /// key -> (seq, version), every write.
    writes: Vec<(String, u64, Version)>,
}

fn build_sst(writes: &[(String, u64, Version)]) -> Bytes {
    let mut sorted: Vec<&(String, u64, Version)> = writes.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let mut builder =
        SstBuilder::new("test.sst", Vec::new(), SstOptions::default()).expect("options");
    let mut key = Vec::new();
    for (k, seq, v) in sorted {
        key.clear();
        let kind = if matches!(v, Version::Tombstone) {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        encode_internal_key(k.as_bytes(), *seq, kind, &mut key);
        builder.add(&key, &v.value()).expect("add");
    }
    let (_, out) = builder.finish_into_inner().expect("finish");
    Bytes::from(out)
}

/// Oldest to newest:
/// - L2 (two files split by key range): every key, version 0;
/// - L1 (two files split by key range): keys `i % 7 == 1` deleted, else `i % 3 == 0` version 1;
/// - L0 file 5 (older): `i % 10 == 0` version 2, `i % 1000 == 7` not JSON, and the new keys;
/// - L0 file 6 (newest): `i % 11 == 0` deleted (including some new keys).
fn data_set() -> DataSet {
    let mut seq = 0u64;
    let mut next = |k: u64, v: Version| {
        seq += 1;
        (user_key(k), seq, v)
    };
    let l2: Vec<_> = (0..KEYS)
        .map(|i| next(i, Version::Row(Row::new(i, 0))))
        .collect();
    let l1: Vec<_> = (0..KEYS)
        .filter_map(|i| {
            if i % 7 == 1 {
                Some(next(i, Version::Tombstone))
            } else if i % 3 == 0 {
                Some(next(i, Version::Row(Row::new(i, 1))))
            } else {
                None
            }
        })
        .collect();
    let l0_old: Vec<_> = (0..KEYS + NEW_KEYS)
        .filter_map(|i| {
            if i % 1000 == 7 {
                Some(next(i, Version::NotJson))
            } else if i % 10 == 0 || i >= KEYS {
                Some(next(i, Version::Row(Row::new(i, 2))))
            } else {
                None
            }
        })
        .collect();
    let l0_new: Vec<_> = (0..KEYS + NEW_KEYS)
        .filter(|i| i % 11 == 0)
        .map(|i| next(i, Version::Tombstone))
        .collect();

    let half = user_key(KEYS / 2);
    let split = |w: &[(String, u64, Version)]| {
        let (lo, hi): (Vec<_>, Vec<_>) = w.iter().cloned().partition(|(k, _, _)| *k < half);
        (build_sst(&lo), build_sst(&hi))
    };
    let (l2a, l2b) = split(&l2);
    let (l1a, l1b) = split(&l1);
    let files = vec![
        (0, 6, build_sst(&l0_new)),
        (0, 5, build_sst(&l0_old)),
        (1, 3, l1a),
        (1, 4, l1b),
        (2, 1, l2a),
        (2, 2, l2b),
    ];
    let writes = [l2, l1, l0_old, l0_new].concat();
    DataSet { files, writes }
}

fn columns() -> Vec<ColumnDef> {
    vec![
        ColumnDef::new("id", ColumnType::Int),
        ColumnDef::new("score", ColumnType::Float),
        ColumnDef::new("name", ColumnType::String),
        ColumnDef::new("active", ColumnType::Bool),
        ColumnDef::new("never_present", ColumnType::Int),
    ]
}

/// Column truth: (null count, min, max, distinct values), JSON-encoded.
struct ColumnTruth {
    nulls: u64,
    values: Vec<String>,
    min: String,
    max: String,
}

fn truth<T: PartialOrd + Clone>(
    values: impl Iterator<Item = Option<T>>,
    encode: impl Fn(&T) -> String,
) -> ColumnTruth {
    let mut nulls = 0;
    let mut min: Option<T> = None;
    let mut max: Option<T> = None;
    let mut distinct = HashSet::new();
    for v in values {
        match v {
            None => nulls += 1,
            Some(v) => {
                if min.as_ref().is_none_or(|m| v < *m) {
                    min = Some(v.clone());
                }
                if max.as_ref().is_none_or(|m| v > *m) {
                    max = Some(v.clone());
                }
                distinct.insert(encode(&v));
            }
        }
    }
    let enc = |v: Option<T>| v.as_ref().map_or_else(|| "null".to_owned(), &encode);
    ColumnTruth {
        nulls,
        values: distinct.into_iter().collect(),
        min: enc(min),
        max: enc(max),
    }
}

struct Truth {
    entries: u64,
    tombstones: u64,
    live_keys: u64,
    live_bytes: u64,
    smallest: String,
    largest: String,
    non_object_rows: u64,
    columns: Vec<(&'static str, ColumnTruth)>,
}

/// The expected statistics, from the writes alone.
fn expected(data: &DataSet) -> Truth {
    let mut newest: BTreeMap<&str, (u64, &Version)> = BTreeMap::new();
    for (k, seq, v) in &data.writes {
        let e = newest.entry(k).or_insert((*seq, v));
        if *seq >= e.0 {
            *e = (*seq, v);
        }
    }
    let live: Vec<(&str, &Version)> = newest
        .iter()
        .filter(|(_, (_, v))| !matches!(v, Version::Tombstone))
        .map(|(k, (_, v))| (*k, *v))
        .collect();
    let rows: Vec<Option<&Row>> = live
        .iter()
        .map(|(_, v)| match v {
            Version::Row(r) => Some(r),
            _ => None,
        })
        .collect();
    let names = truth(
        rows.iter().map(|r| r.and_then(|r| r.name.clone()?.ok())),
        |s| Value::from(s.as_str()).to_string(),
    );

    Truth {
        entries: data.writes.len() as u64,
        tombstones: data
            .writes
            .iter()
            .filter(|(_, _, v)| matches!(v, Version::Tombstone))
            .count() as u64,
        live_keys: live.len() as u64,
        live_bytes: live
            .iter()
            .map(|(k, v)| (k.len() + v.value().len()) as u64)
            .sum(),
        smallest: newest
            .keys()
            .next()
            .map(|k| k.to_string())
            .unwrap_or_default(),
        largest: newest
            .keys()
            .last()
            .map(|k| k.to_string())
            .unwrap_or_default(),
        non_object_rows: rows.iter().filter(|r| r.is_none()).count() as u64,
        columns: vec![
            (
                "id",
                truth(
                    rows.iter().map(|r| r.and_then(|r| r.id)),
                    ToString::to_string,
                ),
            ),
            (
                "score",
                truth(
                    rows.iter().map(|r| r.and_then(|r| r.score.flatten())),
                    |v| {
                        serde_json::Number::from_f64(*v).map_or_else(String::new, |n| n.to_string())
                    },
                ),
            ),
            ("name", names),
            (
                "active",
                truth(
                    rows.iter().map(|r| r.and_then(|r| r.active)),
                    ToString::to_string,
                ),
            ),
            (
                "never_present",
                truth(rows.iter().map(|_| None::<i64>), ToString::to_string),
            ),
        ],
    }
}

fn inputs(data: &DataSet) -> Vec<StatsInput> {
    data.files
        .iter()
        .map(|(level, id, bytes)| StatsInput {
            level: *level,
            file_id: *id,
            name: format!("sst-{id}"),
            source: Box::new(bytes.clone()),
        })
        .collect()
}

fn within(estimate: u64, exact: u64, tolerance: f64) -> bool {
    (estimate as f64 - exact as f64).abs() <= tolerance * exact as f64
}

fn check(stats: &Statistics, data: &DataSet, truth: &Truth) {
    assert_eq!(stats.entries, truth.entries);
    assert_eq!(stats.tombstones, truth.tombstones);
    assert_eq!(stats.live_keys, truth.live_keys);
    assert_eq!(stats.live_bytes, truth.live_bytes);
    assert!(
        within(stats.estimated_live_keys, truth.live_keys, 0.05),
        "estimated {} live keys, exactly {}",
        stats.estimated_live_keys,
        truth.live_keys
    );
    assert_eq!(stats.smallest_key, truth.smallest.as_bytes());
    assert_eq!(stats.largest_key, truth.largest.as_bytes());

    let level = |l: u32| {
        let files: Vec<_> = data.files.iter().filter(|f| f.0 == l).collect();
        LevelStats {
            level: l,
            files: files.len() as u64,
            bytes: files.iter().map(|f| f.2.len() as u64).sum(),
        }
    };
    assert_eq!(stats.levels, vec![level(0), level(1), level(2)]);
    let total: u64 = data.files.iter().map(|f| f.2.len() as u64).sum();
    assert_eq!(stats.total_bytes, total);
    assert_eq!(
        stats.space_amplification,
        total as f64 / truth.live_bytes as f64
    );

    assert_eq!(stats.non_object_rows, truth.non_object_rows);
    assert_eq!(stats.columns.len(), truth.columns.len());
    for (got, (name, want)) in stats.columns.iter().zip(&truth.columns) {
        assert_eq!(got.name, *name);
        assert_eq!(got.null_count, want.nulls, "null count of {name}");
        assert_eq!(got.min, want.min, "min of {name}");
        assert_eq!(got.max, want.max, "max of {name}");
        let distinct = want.values.len() as u64;
        assert!(
            within(got.distinct_estimate, distinct, 0.05),
            "{name}: estimated {} distinct values, exactly {distinct}",
            got.distinct_estimate
        );
    }
}

#[test]
fn statistics_match_a_known_data_set() {
    let data = data_set();
    let truth = expected(&data);
    // The data set is what it means to be: overwrites, deletes, nulls, mismatches.
    assert!(truth.live_keys > 40_000 && truth.live_keys < KEYS);
    assert!(truth.tombstones > 10_000);
    assert!(truth.non_object_rows > 0);
    assert!(truth.columns.iter().all(|(_, c)| c.nulls > 0));

    let stats = compute_statistics(inputs(&data), &columns(), &|| false).expect("statistics");
    check(&stats, &data, &truth);

    // The name column's integers are type mismatches, counted as nulls.
    let name = stats
        .columns
        .iter()
        .find(|c| c.name == "name")
        .expect("name");
    assert!(name.type_mismatches > 0 && name.type_mismatches < name.null_count);

    // Without columns: the same figures, no column statistics.
    let plain = compute_statistics(inputs(&data), &[], &|| false).expect("statistics");
    assert!(plain.columns.is_empty());
    assert_eq!(plain.non_object_rows, 0);
    assert_eq!(
        (
            plain.entries,
            plain.live_keys,
            plain.live_bytes,
            plain.estimated_live_keys
        ),
        (
            stats.entries,
            stats.live_keys,
            stats.live_bytes,
            stats.estimated_live_keys
        )
    );
}

fn stats_spec(data: &DataSet, table: &str) -> pb::StatisticsSpec {
    let mut levels: BTreeMap<u32, Vec<pb::FileMeta>> = BTreeMap::new();
    for (level, id, bytes) in &data.files {
        levels.entry(*level).or_default().push(pb::FileMeta {
            file_id: *id,
            size_bytes: bytes.len() as u64,
            ..Default::default()
        });
    }
    pb::StatisticsSpec {
        table: table.to_owned(),
        // Deepest level first: the order of levels in the spec does not matter.
        levels: levels
            .into_iter()
            .rev()
            .map(|(level, files)| pb::Level { level, files })
            .collect(),
        columns: columns()
            .iter()
            .map(|c| pb::ColumnDef {
                name: c.name.clone(),
                r#type: c.ty.as_str().to_owned(),
            })
            .collect(),
    }
}

async fn stored(data: &DataSet, table: &TableName) -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::local(dir.path()).expect("storage");
    for (_, id, bytes) in &data.files {
        storage
            .put(&paths::sst_file(table, *id), bytes.clone())
            .await
            .expect("put");
    }
    (dir, storage)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_statistics_reads_the_files_from_storage() {
    let data = data_set();
    let table = TableName::new("users").expect("valid");
    let (_dir, storage) = stored(&data, &table).await;
    let spec = stats_spec(&data, "users");

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64;
    let got = update_statistics(&storage, &spec, &CancellationToken::new())
        .await
        .expect("statistics");
    let want = compute_statistics(inputs(&data), &columns(), &|| false)
        .expect("statistics")
        .into_proto("users", got.computed_at_unix_ms);
    assert_eq!(got, want);
    assert!(got.computed_at_unix_ms >= before);
    assert_eq!(got.write_amplification, 0.0);
    assert_eq!(got.levels.len(), 3);

    // A file the spec lists but storage does not have: NOT_FOUND, naming the object.
    let mut missing = spec.clone();
    missing.levels[0].files.push(pb::FileMeta {
        file_id: 77,
        size_bytes: 1000,
        ..Default::default()
    });
    let err = update_statistics(&storage, &missing, &CancellationToken::new())
        .await
        .expect_err("missing file");
    assert!(matches!(err, StatsError::Storage { .. }), "{err:?}");
    assert_eq!(err.kind(), pb::ErrorKind::NotFound);
    assert_eq!(
        err.file(),
        Some(paths::sst_file(&table, 77).as_ref()),
        "{err}"
    );

    // Cancelled: nothing is read.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = update_statistics(&storage, &spec, &cancel)
        .await
        .expect_err("cancelled");
    assert!(matches!(err, StatsError::Cancelled), "{err:?}");

    // A malformed spec is refused before anything is read.
    let mut bad = spec.clone();
    bad.columns[0].r#type = "decimal".into();
    let err = update_statistics(&storage, &bad, &CancellationToken::new())
        .await
        .expect_err("bad spec");
    assert_eq!(err.kind(), pb::ErrorKind::InvalidArgument);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_file_in_storage_is_named_with_its_offset() {
    let data = data_set();
    let table = TableName::new("users").expect("valid");
    let (_dir, storage) = stored(&data, &table).await;
    // Damage the first data block of file 3 (L1).
    let path = paths::sst_file(&table, 3);
    let mut bytes = storage.get(&path).await.expect("get").to_vec();
    bytes[10] ^= 0x55;
    storage.put(&path, bytes.into()).await.expect("put");

    let err = update_statistics(
        &storage,
        &stats_spec(&data, "users"),
        &CancellationToken::new(),
    )
    .await
    .expect_err("corrupt");
    assert!(
        matches!(&err, StatsError::Corrupt { file, offset: 0, .. } if *file == path.to_string()),
        "{err:?}"
    );
    assert_eq!(err.kind(), pb::ErrorKind::Corruption);
    assert!(!err.retriable());
}
