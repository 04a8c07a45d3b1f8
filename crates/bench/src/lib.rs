//! The benchmark harness of issue #9: `dp-bench` runs each workload on our code and on
//! RocksDB with the same data, settings and cores, in alternating child processes, and
//! reports medians, ratios and the goals. See `docs/bench/README.md`.
//!
//! Modules: [`settings`] (what both sides run with, and `--scale`), [`data`] (the entries
//! files both sides read), [`ours`] and [`rocks`] (each engine's side of every workload),
//! [`suite`] (preparation, alternation, medians, the table and the JSON), [`sys`] (CPU,
//! RSS, space sampling, the machine description), [`scheduler`] (P6).

pub mod data;
pub mod ours;
pub mod rocks;
pub mod scheduler;
pub mod settings;
pub mod suite;
pub mod sys;

use std::path::Path;

use anyhow::bail;

use crate::settings::Settings;
use crate::suite::Engine;

/// Named figures of one run (seconds, bytes, ratios: each key says which).
pub type Figures = std::collections::BTreeMap<String, f64>;

/// One measured run, inside the child process (see [`suite`]).
pub fn run_child(
    workload: &str,
    engine: Engine,
    data: &Path,
    work: &Path,
    s: &Settings,
) -> anyhow::Result<Figures> {
    let entries = data.join("entries.bin");
    match (workload, engine) {
        ("p1", Engine::Ours) => ours::p1_flush(s, &entries, work),
        ("p1", Engine::Rocksdb) => rocks::p1_flush(s, &entries, work),
        ("p2", Engine::Ours) => ours::p2_compact(&data.join("ours"), 1),
        ("p2x2", Engine::Ours) => ours::p2_compact(&data.join("ours"), 2),
        ("p2", Engine::Rocksdb) => rocks::p2_compact(s, &data.join("rocksdb"), work, 1),
        ("p2x2", Engine::Rocksdb) => rocks::p2_compact(s, &data.join("rocksdb"), work, 2),
        ("p3", Engine::Ours) => ours::tree(s, true, &entries, work),
        ("p3", Engine::Rocksdb) => rocks::tree(s, true, &entries, work),
        ("p4", Engine::Ours) => ours::tree(s, false, &entries, work),
        ("p4", Engine::Rocksdb) => rocks::tree(s, false, &entries, work),
        ("p5", Engine::Ours) => ours::p5_replay(&data.join("ours")),
        ("p5", Engine::Rocksdb) => rocks::p5_replay(&data.join("rocksdb"), work),
        ("p6", Engine::Ours) => p6(s),
        ("p7", Engine::Ours) => ours::p7_memory(s, &data.join("ours")),
        (w, e) => bail!("workload {w} has no {} side", e.name()),
    }
}

/// One preparation step, inside a child process.
pub fn prepare_child(
    step: &str,
    engine: Engine,
    data: &Path,
    s: &Settings,
) -> anyhow::Result<Figures> {
    let entries = data.join("entries.bin");
    let (n, extra) = match (step, engine) {
        ("p2", Engine::Ours) => (ours::p2_prepare(s, &entries, &data.join("ours"))?, None),
        ("p2", Engine::Rocksdb) => (rocks::p2_prepare(s, &entries, &data.join("rocksdb"))?, None),
        ("p5", Engine::Ours) => {
            let (n, wal) = ours::p5_prepare(&entries, &data.join("ours"))?;
            (n, Some(("wal_bytes", wal)))
        }
        ("p5", Engine::Rocksdb) => {
            let dir = data.join("rocksdb");
            let n = rocks::p5_write(s, &entries, &dir)?;
            (n, Some(("wal_bytes", data::dir_bytes(&dir, ".log"))))
        }
        (w, e) => bail!("no preparation step {w} for {}", e.name()),
    };
    let mut f = Figures::from([("entries".to_owned(), n as f64)]);
    if let Some((k, v)) = extra {
        f.insert(k.to_owned(), v as f64);
    }
    Ok(f)
}

/// P6 in a child: the scheduler workload of [`scheduler`], its figures flattened.
fn p6(s: &Settings) -> anyhow::Result<Figures> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(scheduler::run(scheduler::Options {
        tasks: s.p6_tasks,
        concurrency: 64,
        workers: 4,
        rate: s.p6_rate,
        seconds: s.p6_seconds,
    }))?;
    let value = serde_json::to_value(&result)?;
    let mut f = Figures::new();
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            if let Some(x) = v.as_f64() {
                f.insert(k.clone(), x);
            }
        }
    }
    if let Some(t) = f.get("tasks").copied() {
        f.insert("entries".into(), t);
    }
    Ok(f)
}
