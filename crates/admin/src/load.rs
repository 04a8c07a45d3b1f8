//! `storage-admin load`: the load generator's IO. What it writes is decided by
//! [`admin::workload`] (pure, seeded); this module appends it to the tables' WALs, paces
//! it, measures it and records the oracle ([`admin::oracle`]).
//!
//! Each table gets one WAL writer and up to `--concurrency` batches in flight on it (the
//! writer group-commits concurrent appends into one segment). A batch's lines go to the
//! oracle only after its append returned `Ok`; the oracle is written in whole lines and
//! flushed to the OS every 100 ms and to disk every second and at the end, so a SIGKILL
//! leaves complete lines (at most one torn last line, which the reader skips).
//!
//! The first failed append stops the run: no new batches are issued, the ones in flight
//! finish (those acknowledged are recorded), and the command fails with the error. Ctrl-C
//! stops it the same way, without waiting for batches in flight.

use std::cell::RefCell;
use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use admin::oracle::OracleEntry;
use admin::workload::{LoadSpec, Op, TableWorkload};
use futures::StreamExt;
use serde_json::json;

use crate::data::{open_storage, table_info, wal_writer};
use crate::{Cli, Failure, connect, output};

/// The oracle: whole JSON lines, buffered, written out periodically.
struct Oracle {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    last_write: Instant,
    last_sync: Instant,
}

/// A load killed mid-line leaves a partial last line (a write whose record was torn, so
/// its outcome is unknown to the oracle): cut it off so that appended lines stay whole.
fn drop_partial_line(file: &File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = file.metadata()?.len();
    let mut end = len;
    let mut f = file;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            end = start + i as u64 + 1;
            break;
        }
        end = start;
    }
    if end != len {
        file.set_len(end)?;
    }
    Ok(())
}

impl Oracle {
    const WRITE_EVERY: Duration = Duration::from_millis(100);
    const SYNC_EVERY: Duration = Duration::from_secs(1);
    const WRITE_BYTES: usize = 256 * 1024;

    fn create(path: &Path) -> Result<Self, Failure> {
        // Appended to: several loads (or a load restarted after a crash) build one record.
        let fail = |e: std::io::Error| Failure(1, format!("--oracle {}: {e}", path.display()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(path)
            .map_err(fail)?;
        drop_partial_line(&file).map_err(fail)?;
        let now = Instant::now();
        Ok(Self {
            file,
            path: path.to_owned(),
            buf: Vec::new(),
            last_write: now,
            last_sync: now,
        })
    }

    fn record(&mut self, entry: &OracleEntry) -> std::io::Result<()> {
        self.buf.extend_from_slice(entry.to_line().as_bytes());
        if self.buf.len() >= Self::WRITE_BYTES || self.last_write.elapsed() >= Self::WRITE_EVERY {
            self.write_out()?;
        }
        if self.last_sync.elapsed() >= Self::SYNC_EVERY {
            self.file.sync_data()?;
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Hands the buffered whole lines to the OS in one write.
    fn write_out(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.last_write = Instant::now();
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<()> {
        self.write_out()?;
        self.file.sync_all()
    }
}

/// Paces writes to `--rate` over all tables: the batch that brings the count to `n` may
/// start at `start + n / rate`.
struct Pacer {
    start: Instant,
    rate: f64,
    issued: u64,
}

impl Pacer {
    fn slot(&mut self, writes: u64) -> Option<Instant> {
        if self.rate <= 0.0 {
            return None;
        }
        let at = self.start + Duration::from_secs_f64(self.issued as f64 / self.rate);
        self.issued += writes;
        Some(at)
    }
}

/// Per-table counters.
#[derive(Default, Clone)]
struct TableCounts {
    writes: u64,
    last_seq: u64,
}

/// Everything the drivers update.
struct State {
    oracle: Option<Oracle>,
    latencies: Vec<Duration>,
    writes: u64,
    puts: u64,
    deletes: u64,
    batches: u64,
    bytes: u64,
    tables: Vec<TableCounts>,
    /// The first error; set, it stops new batches.
    error: Option<String>,
    progress: Option<Progress>,
}

impl State {
    fn acknowledged(
        &mut self,
        table: &str,
        t: usize,
        first_seq: u64,
        ops: &[Op],
        latency: Duration,
    ) {
        self.latencies.push(latency);
        self.batches += 1;
        let counts = &mut self.tables[t];
        for (op, seq) in ops.iter().zip(first_seq..) {
            self.writes += 1;
            counts.writes += 1;
            counts.last_seq = counts.last_seq.max(seq);
            self.bytes += op.bytes() as u64;
            match op {
                Op::Put { .. } => self.puts += 1,
                Op::Delete { .. } => self.deletes += 1,
            }
            if let Some(oracle) = &mut self.oracle {
                let entry = OracleEntry {
                    table: table.to_owned(),
                    seq,
                    key: op.key().to_owned(),
                    value: op.value().map(str::to_owned),
                };
                if let Err(e) = oracle.record(&entry) {
                    let path = oracle.path.display().to_string();
                    self.error
                        .get_or_insert_with(|| format!("--oracle {path}: writing: {e}"));
                }
            }
        }
        if let Some(p) = &mut self.progress {
            p.draw(self.writes, false);
        }
    }

    fn failed(&mut self, message: String) {
        self.error.get_or_insert(message);
    }
}

/// A one-line progress display on stderr (only when it is a terminal).
struct Progress {
    total: u64,
    start: Instant,
    last_draw: Option<Instant>,
    width: usize,
}

impl Progress {
    fn draw(&mut self, done: u64, force: bool) {
        if !force
            && self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        let secs = self.start.elapsed().as_secs_f64();
        let line = format!(
            "{done}/{} writes ({:.0}%), {:.0} writes/s, {secs:.1} s",
            self.total,
            done as f64 * 100.0 / self.total.max(1) as f64,
            done as f64 / secs.max(1e-9),
        );
        self.width = self.width.max(line.len());
        eprint!("\r{line:<width$}", width = self.width);
    }

    fn clear(&self) {
        if self.last_draw.is_some() {
            eprint!("\r{:width$}\r", "", width = self.width);
        }
    }
}

/// Runs `storage-admin load`.
pub async fn load(
    cli: &Cli,
    spec: LoadSpec,
    oracle_path: Option<&Path>,
) -> Result<String, Failure> {
    spec.validate().map_err(|e| Failure(2, e.to_string()))?;
    let mut admin = connect(&cli.scheduler).await?;
    let mut infos = Vec::with_capacity(spec.tables.len());
    for t in &spec.tables {
        infos.push(table_info(&mut admin, t).await?);
    }
    let storage = open_storage(cli, &mut admin).await?;
    let mut writers = Vec::with_capacity(infos.len());
    for info in &infos {
        writers.push(wal_writer(&storage, info).await?);
    }
    let oracle = oracle_path.map(Oracle::create).transpose()?;

    let start = Instant::now();
    let state = RefCell::new(State {
        oracle,
        latencies: Vec::new(),
        writes: 0,
        puts: 0,
        deletes: 0,
        batches: 0,
        bytes: 0,
        tables: vec![TableCounts::default(); spec.tables.len()],
        error: None,
        progress: std::io::stderr().is_terminal().then_some(Progress {
            total: spec.writes,
            start,
            last_draw: None,
            width: 0,
        }),
    });
    let pacer = RefCell::new(Pacer {
        start,
        rate: spec.rate,
        issued: 0,
    });

    let shares = spec.writes_per_table();
    let drivers = writers
        .iter()
        .zip(&shares)
        .enumerate()
        .map(|(t, (writer, &n))| {
            let table = spec.tables[t].as_str();
            let (state, pacer) = (&state, &pacer);
            let mut workload = TableWorkload::new(&spec, t, n);
            futures::stream::iter(std::iter::from_fn(move || workload.next_batch()))
                .take_while(move |_| std::future::ready(state.borrow().error.is_none()))
                .map(move |ops| async move {
                    let slot = pacer.borrow_mut().slot(ops.len() as u64);
                    if let Some(at) = slot {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let mut batch = wal::WriteBatch::new();
                    for op in &ops {
                        match op {
                            Op::Put { key, value } => batch.put(key, value),
                            Op::Delete { key } => batch.delete(key),
                        };
                    }
                    let began = Instant::now();
                    let result = writer.append(batch).await;
                    (ops, result, began.elapsed())
                })
                .buffer_unordered(spec.concurrency)
                .for_each(move |(ops, result, latency)| {
                    let mut s = state.borrow_mut();
                    match result {
                        Ok(a) => s.acknowledged(table, t, a.first_seq, &ops, latency),
                        Err(e) => s.failed(format!("table {table}: append failed: {e}")),
                    }
                    std::future::ready(())
                })
        });
    let interrupted = tokio::select! {
        _ = futures::future::join_all(drivers) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    let elapsed = start.elapsed();

    let mut s = state.into_inner();
    if let Some(p) = &mut s.progress {
        p.draw(s.writes, true);
        p.clear();
    }
    if interrupted {
        s.failed("interrupted".into());
    }
    if let Some(oracle) = &mut s.oracle
        && let Err(e) = oracle.finish()
    {
        let path = oracle.path.display().to_string();
        s.failed(format!("--oracle {path}: writing: {e}"));
    }
    let summary = summary(&spec, &s, elapsed, oracle_path);
    match &s.error {
        None => Ok(output::load(&summary, cli.json)),
        Some(e) => Err(Failure(
            1,
            format!(
                "load stopped: {e} ({} writes acknowledged{})",
                s.writes,
                if oracle_path.is_some() {
                    " and recorded in the oracle"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// The `q` quantile of sorted latencies, in milliseconds.
fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1000.0
}

fn summary(
    spec: &LoadSpec,
    s: &State,
    elapsed: Duration,
    oracle: Option<&Path>,
) -> serde_json::Value {
    let mut lat = s.latencies.clone();
    lat.sort_unstable();
    let secs = elapsed.as_secs_f64().max(1e-9);
    json!({
        "writes": s.writes,
        "puts": s.puts,
        "deletes": s.deletes,
        "batches": s.batches,
        "bytes": s.bytes,
        "seconds": elapsed.as_secs_f64(),
        "writes_per_sec": s.writes as f64 / secs,
        "mb_per_sec": s.bytes as f64 / 1e6 / secs,
        "latency_ms": { "p50": quantile_ms(&lat, 0.5), "p99": quantile_ms(&lat, 0.99) },
        "seed": spec.seed,
        "oracle": oracle.map(|p| p.display().to_string()),
        "tables": spec.tables.iter().zip(&s.tables).map(|(name, c)| json!({
            "name": name, "writes": c.writes, "last_seq": c.last_seq,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(clippy::unwrap_used, reason = "a test fails loudly")]
    fn an_oracle_is_appended_to_after_its_torn_last_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("o.jsonl");
        for (before, after) in [
            ("", ""),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("{\"b\":", ""),
        ] {
            std::fs::write(&path, before).unwrap();
            drop(Oracle::create(&path).map_err(|f| f.1).unwrap());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
        let long = format!("{}\n{}", "x".repeat(100_000), "y".repeat(70_000));
        std::fs::write(&path, &long).unwrap();
        drop(Oracle::create(&path).map_err(|f| f.1).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 100_001);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(quantile_ms(&[], 0.5), 0.0);
        assert_eq!(quantile_ms(&ms(&[7]), 0.99), 7.0);
        let hundred = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(quantile_ms(&hundred, 0.5), 50.0);
        assert_eq!(quantile_ms(&hundred, 0.99), 99.0);
    }

    #[test]
    fn the_pacer_spaces_batches_by_the_rate() {
        let start = Instant::now();
        let mut p = Pacer {
            start,
            rate: 100.0,
            issued: 0,
        };
        assert_eq!(p.slot(10), Some(start));
        assert_eq!(p.slot(10), Some(start + Duration::from_millis(100)));
        assert_eq!(p.slot(1), Some(start + Duration::from_millis(200)));
        let mut unlimited = Pacer {
            start,
            rate: 0.0,
            issued: 0,
        };
        assert_eq!(unlimited.slot(10), None);
    }

    #[test]
    fn acknowledged_batches_reach_the_oracle_as_whole_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oracle.jsonl");
        let mut s = State {
            oracle: Some(Oracle::create(&path).ok().expect("creates")),
            latencies: Vec::new(),
            writes: 0,
            puts: 0,
            deletes: 0,
            batches: 0,
            bytes: 0,
            tables: vec![TableCounts::default()],
            error: None,
            progress: None,
        };
        let ops = vec![
            Op::Put {
                key: "key-000000000001".into(),
                value: "v".into(),
            },
            Op::Delete {
                key: "key-000000000001".into(),
            },
        ];
        s.acknowledged("t", 0, 41, &ops, Duration::from_millis(3));
        if let Some(o) = &mut s.oracle {
            o.finish().expect("flushes");
        }
        let got = admin::read_oracle(&path).expect("reads");
        assert_eq!(
            got,
            vec![
                OracleEntry {
                    table: "t".into(),
                    seq: 41,
                    key: "key-000000000001".into(),
                    value: Some("v".into()),
                },
                OracleEntry {
                    table: "t".into(),
                    seq: 42,
                    key: "key-000000000001".into(),
                    value: None,
                },
            ]
        );
        assert_eq!((s.writes, s.puts, s.deletes, s.batches), (2, 1, 1, 1));
        assert_eq!(s.tables[0].last_seq, 42);
        assert_eq!(s.bytes, 16 + 1 + 16);
    }
}
