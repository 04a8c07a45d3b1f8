//! The oracles every crash test ends with (issue #10), over a [`DataCluster`] whose storage is
//! a local directory:
//!
//! - **(a) acknowledged writes**: [`DataCluster::check_oracle`] over the merged oracle files
//!   of every load that ran ([`merge_oracles`]);
//! - **(b) task ledger** ([`check_ledger`]): after the drain, every live SST is read; a
//!   `(key, seq)` in two live files is a *duplicated* effect (a flush or compaction
//!   committed twice), an acknowledged write whose key's newest stored version is older is
//!   *lost*, a stored version no acknowledged write explains (or with another value) is
//!   *unexpected*;
//! - **(c) GC safety** ([`ManifestWatcher`] + [`check_gc`]): every service writes each delete
//!   to a journal before doing it (`DP_DELETE_JOURNAL`, see `storage::delete_journal`) while
//!   a watcher polls every table's manifest; a deleted SST that a manifest showed later than
//!   `delete time - grace` (still referenced, or retained for readers), or that a manifest
//!   showed for the first time after its delete (an upload awaiting commit), is a violation,
//!   and so is a deleted WAL segment starting above the checkpoint of its moment;
//! - **(e) structure** ([`check_structure`]): every file of the final manifest exists, opens
//!   and holds what the manifest says; levels ≥ 1 are sorted and non-overlapping.
//!
//! Every check returns counts (printed by the tests) and the violations it found, so a test
//! asserts they are empty and shows that the check was exercised.

#![expect(clippy::unwrap_used, reason = "test helpers fail loudly")]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use admin::oracle::OracleEntry;
use lsm::{InternalIterator, ParsedInternalKey, ValueKind};
use proto::v1 as pb;

use crate::data::DataCluster;

/// Milliseconds since the Unix epoch (the clock the delete journal uses).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Concatenates oracle files (of loads that ran one after another) into `out`; returns
/// every entry.
pub fn merge_oracles(files: &[PathBuf], out: &Path) -> Vec<OracleEntry> {
    let mut all = Vec::new();
    for f in files {
        if f.exists() {
            all.extend(admin::oracle::read_oracle(f).unwrap());
        }
    }
    let text: String = all.iter().map(OracleEntry::to_line).collect();
    std::fs::write(out, text).unwrap();
    all
}

/// What a [`ManifestWatcher`] saw of one file.
#[derive(Debug, Clone, Copy)]
pub struct Sighting {
    /// The end of the first poll that showed it: it was committed before this.
    pub first_after_ms: i64,
    /// The start of the last poll that showed it: it was referenced at least until this.
    pub last_before_ms: i64,
}

/// Everything a watcher saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub files: HashMap<(String, u64), Sighting>,
    /// (poll start, poll end, checkpoint) per table, in poll order.
    pub checkpoints: BTreeMap<String, Vec<(i64, i64, u64)>>,
    pub polls: u64,
    pub failed_polls: u64,
}

/// Polls every table's manifest through the scheduler's admin API until stopped.
pub struct ManifestWatcher {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<Seen>>,
}

impl ManifestWatcher {
    pub fn start(scheduler_addr: String, tables: &[&str], every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tables: Vec<String> = tables.iter().map(|t| t.to_string()).collect();
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(watch(scheduler_addr, tables, every, s))
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    pub fn stop(mut self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for ManifestWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn watch(addr: String, tables: Vec<String>, every: Duration, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    let mut client = pb::admin_client::AdminClient::new(channel);
    while !stop.load(Ordering::SeqCst) {
        for t in &tables {
            let start = now_ms();
            let reply = client
                .get_manifest(pb::GetManifestRequest { table: t.clone() })
                .await;
            let end = now_ms();
            seen.polls += 1;
            let Ok(m) = reply else {
                seen.failed_polls += 1;
                continue;
            };
            let m = m.into_inner();
            seen.checkpoints
                .entry(t.clone())
                .or_default()
                .push((start, end, m.checkpoint));
            for f in m.levels.iter().flat_map(|l| l.files.iter()) {
                seen.files
                    .entry((t.clone(), f.file_id))
                    .and_modify(|s| s.last_before_ms = s.last_before_ms.max(start))
                    .or_insert(Sighting {
                        first_after_ms: end,
                        last_before_ms: start,
                    });
            }
        }
        tokio::time::sleep(every).await;
    }
    seen
}

/// One line of the delete journal.
#[derive(Debug, Clone)]
pub struct Deleted {
    pub ms: i64,
    pub pid: u32,
    pub path: String,
}

pub fn read_delete_journal(path: &Path) -> Vec<Deleted> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            Some(Deleted {
                ms: it.next()?.parse().ok()?,
                pid: it.next()?.parse().ok()?,
                path: it.next()?.to_owned(),
            })
        })
        .collect()
}

/// Counts and violations of the GC-safety oracle.
#[derive(Debug, Default)]
pub struct GcReport {
    pub sst_deletes: usize,
    pub wal_deletes: usize,
    /// SST deletes of files some manifest showed (compacted-away inputs).
    pub deletes_of_once_referenced: usize,
    pub violations: Vec<String>,
}

/// Checks every journaled delete against what the watcher saw (see the module doc).
pub fn check_gc(journal: &[Deleted], seen: &Seen, grace_ms: i64) -> GcReport {
    let mut r = GcReport::default();
    for d in journal {
        let Some(rest) = d.path.strip_prefix("tables/") else {
            r.violations
                .push(format!("delete outside tables/: {}", d.path));
            continue;
        };
        let Some((table, object)) = rest.split_once('/') else {
            continue;
        };
        if let Some(name) = object.strip_prefix("sst/") {
            r.sst_deletes += 1;
            let Some(id) = name
                .strip_suffix(".sst")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(s) = seen.files.get(&(table.to_owned(), id)) else {
                continue;
            };
            r.deletes_of_once_referenced += 1;
            // Referenced until at least `last_before_ms`, so removed after it: a delete
            // before `last_before_ms + grace` took a referenced or retained file (or, when
            // after `last_before_ms`, one a manifest showed after its delete: an upload
            // awaiting commit).
            if d.ms < s.last_before_ms + grace_ms {
                let what = if d.ms <= s.last_before_ms {
                    "a manifest showed it after its delete"
                } else {
                    "inside the grace period after its last manifest"
                };
                r.violations.push(format!(
                    "{} deleted at {} by pid {}: {what} (last seen at {}, first seen by {}, grace {} ms)",
                    d.path, d.ms, d.pid, s.last_before_ms, s.first_after_ms, grace_ms
                ));
            }
        } else if let Some(name) = object.strip_prefix("wal/") {
            r.wal_deletes += 1;
            let Some(first_seq) = name
                .strip_suffix(".wal")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            // The checkpoint is monotonic: the first poll that started after the delete
            // bounds the checkpoint at the delete from above.
            let bound = seen
                .checkpoints
                .get(table)
                .and_then(|cs| cs.iter().find(|(start, _, _)| *start >= d.ms))
                .map(|(_, _, c)| *c);
            if let Some(cp) = bound
                && first_seq > cp
            {
                r.violations.push(format!(
                    "{} deleted at {} by pid {}: it starts at seq {first_seq}, above the checkpoint {cp}",
                    d.path, d.ms, d.pid
                ));
            }
        }
    }
    r
}

/// The writes of one table whose outcome the load generator never learned (it was killed,
/// or failed, with them in flight): they may be stored, whole, or absent.
#[derive(Debug, Default)]
pub struct Unknown {
    /// Open intervals of sequence numbers they may have.
    windows: Vec<(u64, u64)>,
    acked: HashSet<u64>,
    /// Per key: (upper bound of the op's sequence number, value; `None`: a delete).
    ops: HashMap<String, Vec<(u64, Option<String>)>>,
}

impl Unknown {
    /// `seq` may be a write of unknown outcome.
    pub fn seq(&self, seq: u64) -> bool {
        !self.acked.contains(&seq) && self.windows.iter().any(|(lo, hi)| *lo < seq && seq < *hi)
    }

    /// A write of unknown outcome put exactly `value` (`None`: deleted) at `key`.
    pub fn explains(&self, key: &str, value: Option<&[u8]>) -> bool {
        self.ops.get(key).is_some_and(|ops| {
            ops.iter()
                .any(|(_, v)| v.as_deref().map(str::as_bytes) == value)
        })
    }

    /// A delete of unknown outcome of `key` may be newer than `seq`.
    pub fn may_delete_after(&self, key: &str, seq: u64) -> bool {
        self.ops
            .get(key)
            .is_some_and(|ops| ops.iter().any(|(hi, v)| v.is_none() && *hi > seq))
    }

    /// How many writes have an unknown outcome.
    pub fn len(&self) -> usize {
        self.ops.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One stored version of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub seq: u64,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
}

fn sst_path(c: &DataCluster, table: &str, id: u64) -> PathBuf {
    c.dir
        .join("storage/tables")
        .join(table)
        .join("sst")
        .join(format!("{id:020}.sst"))
}

/// Every entry of an SST file as (user key, version).
pub fn read_sst(path: &Path) -> Result<Vec<(Vec<u8>, Version)>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader = sst::SstReader::open(file, path.display().to_string())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut it = reader.iter();
    it.seek_to_first().map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while it.valid() {
        let k = ParsedInternalKey::parse(it.key()).map_err(|e| e.to_string())?;
        out.push((
            k.user_key.to_vec(),
            Version {
                seq: k.seq,
                value: match k.kind {
                    ValueKind::Put => Some(it.value().to_vec()),
                    ValueKind::Delete => None,
                },
            },
        ));
        it.next().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Counts of the task-ledger oracle for one table.
#[derive(Debug, Default)]
pub struct LedgerReport {
    pub files: usize,
    pub stored_versions: usize,
    pub acknowledged: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub unexpected: Vec<String>,
    /// Stored versions of writes whose outcome the load generator never learned.
    pub unknown_outcome: usize,
    /// Keys whose newest acknowledged write is gone, explained by a newer delete of unknown
    /// outcome.
    pub deleted_by_unknown: usize,
    /// The newest stored version of every key.
    pub newest: HashMap<String, Version>,
}

/// The task-ledger oracle over `table`'s live SSTs (call it after the drain: every
/// acknowledged write flushed). `unknown(seq)`: a write whose outcome the load generator
/// never learned (killed in flight) may be stored, whole, or absent.
pub fn check_ledger(
    c: &DataCluster,
    table: &str,
    acked: &[OracleEntry],
    unknown: &Unknown,
) -> LedgerReport {
    let mut r = LedgerReport::default();
    let by_seq: HashMap<u64, &OracleEntry> = acked
        .iter()
        .filter(|e| e.table == table)
        .map(|e| (e.seq, e))
        .collect();
    r.acknowledged = by_seq.len();
    let mut where_stored: HashMap<(Vec<u8>, u64), u64> = HashMap::new();
    let mut newest: HashMap<Vec<u8>, u64> = HashMap::new();
    for id in c.manifest_ids(table) {
        r.files += 1;
        let entries = match read_sst(&sst_path(c, table, id)) {
            Ok(e) => e,
            Err(e) => {
                r.lost.push(format!("file {id} unreadable: {e}"));
                continue;
            }
        };
        for (key, v) in entries {
            r.stored_versions += 1;
            let shown = String::from_utf8_lossy(&key).into_owned();
            if let Some(other) = where_stored.insert((key.clone(), v.seq), id) {
                r.duplicated
                    .push(format!("{shown}@{} in files {other} and {id}", v.seq));
            }
            match by_seq.get(&v.seq) {
                Some(e)
                    if e.key.as_bytes() == key
                        && e.value.as_deref().map(str::as_bytes) == v.value.as_deref() => {}
                Some(e) => r.unexpected.push(format!(
                    "{shown}@{} stored as {:?}, acknowledged as {}={:?}",
                    v.seq,
                    v.value.as_deref().map(String::from_utf8_lossy),
                    e.key,
                    e.value
                )),
                // A write the load generator never heard back about: whole, or absent.
                None if unknown.seq(v.seq) => {
                    r.unknown_outcome += 1;
                    if !unknown.explains(&shown, v.value.as_deref()) {
                        r.unexpected.push(format!(
                            "{shown}@{}: stored {:?}, which no write of unknown outcome wrote (torn or invented)",
                            v.seq,
                            v.value.as_deref().map(String::from_utf8_lossy)
                        ));
                    }
                }
                None => r.unexpected.push(format!(
                    "{shown}@{}: no acknowledged write has this sequence number",
                    v.seq
                )),
            }
            let n = newest.entry(key).or_insert(0);
            *n = (*n).max(v.seq);
            if r.newest.get(&shown).is_none_or(|o| o.seq < v.seq) {
                r.newest.insert(shown, v);
            }
        }
    }
    // The newest acknowledged write of each key must be stored, or be shadowed by a newer
    // stored version; a delete may also have been dropped with everything older.
    for e in admin::oracle::latest(acked).values() {
        if e.table != table {
            continue;
        }
        match newest.get(e.key.as_bytes()) {
            Some(s) if *s >= e.seq => {}
            None if e.value.is_none() => {}
            // A newer delete of unknown outcome, dropped with everything older by a
            // compaction into the last level.
            None if unknown.may_delete_after(&e.key, e.seq) => r.deleted_by_unknown += 1,
            other => r.lost.push(format!(
                "{}@{} ({}) newest stored version: {other:?}",
                e.key,
                e.seq,
                if e.value.is_some() { "put" } else { "delete" }
            )),
        }
    }
    r
}

/// Counts of the acknowledged-writes oracle when writes of unknown outcome exist.
#[derive(Debug, Default)]
pub struct ReadReport {
    pub keys: usize,
    /// Keys whose newest version is a write of unknown outcome (present, whole).
    pub unknown_outcome: usize,
    pub violations: Vec<String>,
}

/// Oracle (a) with writes of unknown outcome: every key reads (`scan`) as its newest
/// acknowledged write, unless its newest stored version (`ledger.newest`) is a newer write
/// of unknown outcome, which then reads whole (the ledger checked it is not torn).
pub fn check_reads(
    c: &DataCluster,
    table: &str,
    acked: &[OracleEntry],
    ledger: &LedgerReport,
    unknown: &Unknown,
) -> ReadReport {
    let mut r = ReadReport::default();
    let want: BTreeMap<String, (u64, Option<String>)> = admin::oracle::latest(acked)
        .into_values()
        .filter(|e| e.table == table)
        .map(|e| (e.key, (e.seq, e.value)))
        .collect();
    let got = c.scan_all(table);
    let keys: BTreeSet<&String> = want.keys().chain(got.keys()).collect();
    for k in keys {
        r.keys += 1;
        let w = want.get(k).and_then(|(_, v)| v.as_ref());
        let g = got.get(k);
        if w == g {
            continue;
        }
        let acked_seq = want.get(k).map_or(0, |(s, _)| *s);
        let stored = ledger.newest.get(k);
        let explained = match stored {
            Some(v) => v.seq > acked_seq && v.value.as_deref() == g.map(String::as_bytes),
            None => g.is_none() && unknown.may_delete_after(k, acked_seq),
        };
        if explained {
            r.unknown_outcome += 1;
        } else {
            r.violations.push(format!(
                "{table}/{k}: reads {g:?}, the newest acknowledged write is {w:?} (seq {acked_seq}), newest stored {stored:?}"
            ));
        }
    }
    r
}

/// Counts of the structure oracle for one table.
#[derive(Debug, Default)]
pub struct StructureReport {
    pub files: usize,
    pub levels: usize,
    pub violations: Vec<String>,
}

/// The structure oracle over `table`'s current manifest.
pub fn check_structure(c: &DataCluster, table: &str) -> StructureReport {
    let mut r = StructureReport::default();
    let m = c.admin_json(&["manifest", "--table", table]);
    for level in m["levels"].as_array().cloned().unwrap_or_default() {
        r.levels += 1;
        let n = level["level"].as_u64().unwrap_or(0);
        let mut ranges: Vec<(String, String, u64)> = Vec::new();
        for f in level["files"].as_array().cloned().unwrap_or_default() {
            r.files += 1;
            let id = f["id"].as_u64().unwrap();
            let path = sst_path(c, table, id);
            match read_sst(&path) {
                Err(e) => r
                    .violations
                    .push(format!("L{n} file {id} missing or unreadable: {e}")),
                Ok(entries) => {
                    if entries.len() as u64 != f["entries"].as_u64().unwrap_or(u64::MAX) {
                        r.violations.push(format!(
                            "L{n} file {id}: {} entries, the manifest says {}",
                            entries.len(),
                            f["entries"]
                        ));
                    }
                    let seqs: BTreeSet<u64> = entries.iter().map(|(_, v)| v.seq).collect();
                    let (lo, hi) = (
                        f["smallest_seq"].as_u64().unwrap_or(0),
                        f["largest_seq"].as_u64().unwrap_or(0),
                    );
                    if seqs.first().is_some_and(|s| *s < lo) || seqs.last().is_some_and(|s| *s > hi)
                    {
                        r.violations.push(format!(
                            "L{n} file {id}: seqs {:?}..{:?} outside the manifest's {lo}..{hi}",
                            seqs.first(),
                            seqs.last()
                        ));
                    }
                }
            }
            ranges.push((
                f["smallest"].as_str().unwrap_or_default().to_owned(),
                f["largest"].as_str().unwrap_or_default().to_owned(),
                id,
            ));
        }
        if n >= 1 {
            for w in ranges.windows(2) {
                if w[0].0 > w[0].1 || w[0].1 >= w[1].0 {
                    r.violations.push(format!(
                        "L{n}: file {} [{} .. {}] and file {} [{} .. {}] are unsorted or overlap",
                        w[0].2, w[0].0, w[0].1, w[1].2, w[1].0, w[1].1
                    ));
                }
            }
        }
    }
    r
}

/// Lines of the services' logs that report a panic.
pub fn panics(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for l in text.lines().filter(|l| l.contains("panicked at")) {
                out.push(format!("{}: {l}", p.display()));
            }
        }
    }
    out
}

/// Bytes of every value the [`LoadDriver`] writes (a stored value of another size is torn).
pub const VALUE_SIZE: usize = 64;
const VALUE_SIZE_ARG: &str = "64";

/// Keeps a paced `storage-admin load` running in the background, one run after another
/// (each with its own seed and oracle file), while a test kills services: call
/// [`LoadDriver::tick`] often. A run that cannot start (the scheduler is down: `load` asks
/// it for the tables) is simply retried at the next tick.
pub struct LoadDriver {
    tables: Vec<String>,
    dir: PathBuf,
    seed: u64,
    writes_per_run: u64,
    rate: u64,
    running: Option<std::process::Child>,
    /// Oracle file of every run started.
    pub oracles: Vec<PathBuf>,
    /// Seed of every run started.
    pub seeds: Vec<u64>,
    pub runs_ok: usize,
    pub runs_failed: usize,
    /// Oracle files of runs killed or failed in flight (their last writes have an unknown
    /// outcome).
    pub killed: Vec<PathBuf>,
    /// What the last failed run printed.
    pub last_error: String,
}

impl LoadDriver {
    pub fn new(dir: &Path, tables: &[&str], seed: u64, writes_per_run: u64, rate: u64) -> Self {
        Self {
            tables: tables.iter().map(|t| t.to_string()).collect(),
            dir: dir.to_owned(),
            seed,
            writes_per_run,
            rate,
            running: None,
            oracles: Vec::new(),
            seeds: Vec::new(),
            runs_ok: 0,
            runs_failed: 0,
            killed: Vec::new(),
            last_error: String::new(),
        }
    }

    /// Starts the next run if none is running.
    pub fn tick(&mut self, c: &DataCluster) {
        if let Some(child) = &mut self.running {
            match child.try_wait().unwrap() {
                None => return,
                Some(status) => {
                    if status.success() {
                        self.runs_ok += 1;
                    } else {
                        // Writes it had in flight when it failed have an unknown outcome.
                        self.runs_failed += 1;
                        self.killed.push(self.oracles.last().unwrap().clone());
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = std::io::Read::read_to_string(&mut e, &mut err);
                        }
                        self.last_error = err;
                    }
                    self.running = None;
                }
            }
        }
        self.seed += 1;
        let oracle = self
            .dir
            .join(format!("oracle-{}.jsonl", self.oracles.len()));
        let (writes, rate, seed) = (
            self.writes_per_run.to_string(),
            self.rate.to_string(),
            self.seed.to_string(),
        );
        let mut args: Vec<&str> = self.tables.iter().map(String::as_str).collect();
        args.insert(0, "load");
        args.extend([
            "--keys",
            &writes,
            "--rate",
            &rate,
            "--value-size",
            VALUE_SIZE_ARG,
            "--batch-size",
            "20",
            "--overwrite-ratio",
            "0.3",
            "--delete-ratio",
            "0.1",
            "--seed",
            &seed,
            "--oracle",
            oracle.to_str().unwrap(),
        ]);
        self.running = Some(c.spawn_admin(&args));
        self.oracles.push(oracle);
        self.seeds.push(self.seed);
    }

    /// SIGKILLs the running load generator (its in-flight writes get an unknown outcome).
    pub fn kill(&mut self) -> bool {
        let Some(mut child) = self.running.take() else {
            return false;
        };
        let _ = child.kill();
        let _ = child.wait();
        self.killed.push(self.oracles.last().unwrap().clone());
        true
    }

    /// Sequence numbers of `table` that a killed run may have written without its oracle
    /// recording them: per killed run, the open interval between the last acknowledged
    /// write of the runs before it and the first of the runs after it (runs are sequential,
    /// so every write of a run lies there). Acknowledged writes are never unknown.
    pub fn unknown_windows(&self, table: &str) -> Vec<(u64, u64)> {
        let runs: Vec<Vec<u64>> = self
            .oracles
            .iter()
            .map(|f| {
                admin::oracle::read_oracle(f)
                    .unwrap_or_default()
                    .iter()
                    .filter(|e| e.table == table)
                    .map(|e| e.seq)
                    .collect()
            })
            .collect();
        self.killed
            .iter()
            .filter_map(|k| self.oracles.iter().position(|o| o == k))
            .map(|i| {
                let lo = runs[..i].iter().flatten().max().copied().unwrap_or(0);
                let hi = runs[i + 1..]
                    .iter()
                    .flatten()
                    .min()
                    .copied()
                    .unwrap_or(u64::MAX);
                (lo, hi)
            })
            .collect()
    }

    /// The writes of unknown outcome of `table` (see [`Unknown`]).
    pub fn unknown(&self, table: &str, acked: &[OracleEntry]) -> Unknown {
        let windows = self.unknown_windows(table);
        let acked_seqs: HashSet<u64> = acked
            .iter()
            .filter(|e| e.table == table)
            .map(|e| e.seq)
            .collect();
        let Some(index) = self.tables.iter().position(|t| t == table) else {
            return Unknown::default();
        };
        // The ops each killed run generated (the workload is a pure function of the
        // flags and the seed) minus those its oracle acknowledged.
        let mut ops: HashMap<String, Vec<(u64, Option<String>)>> = HashMap::new();
        let killed = self
            .killed
            .iter()
            .filter_map(|k| self.oracles.iter().position(|o| o == k));
        for (k, (_, hi)) in killed.zip(&windows) {
            let spec = admin::workload::LoadSpec {
                tables: self.tables.clone(),
                writes: self.writes_per_run,
                value_size: VALUE_SIZE,
                overwrite_ratio: 0.3,
                delete_ratio: 0.1,
                batch_size: 20,
                rate: self.rate as f64,
                seed: self.seeds[k],
                ..admin::workload::LoadSpec::default()
            };
            let n = spec.writes_per_table()[index];
            let mut w = admin::workload::TableWorkload::new(&spec, index, n);
            let mut acked_ops: HashMap<(String, Option<String>), usize> = HashMap::new();
            for e in admin::oracle::read_oracle(&self.oracles[k])
                .unwrap_or_default()
                .into_iter()
                .filter(|e| e.table == table)
            {
                *acked_ops.entry((e.key, e.value)).or_default() += 1;
            }
            while let Some(op) = w.next_op() {
                let id = (op.key().to_owned(), op.value().map(str::to_owned));
                match acked_ops.get_mut(&id) {
                    Some(n) if *n > 0 => *n -= 1,
                    _ => ops.entry(id.0).or_default().push((*hi, id.1)),
                }
            }
        }
        Unknown {
            windows,
            acked: acked_seqs,
            ops,
        }
    }

    /// Waits for the running load to end (`timeout`), then starts no more.
    pub fn finish(&mut self, timeout: Duration) {
        if let Some(mut child) = self.running.take() {
            let done = crate::wait_until(timeout, || child.try_wait().unwrap().is_some());
            assert!(done, "the last load did not finish in {timeout:?}");
            if child.wait().unwrap().success() {
                self.runs_ok += 1;
            } else {
                self.runs_failed += 1;
                self.killed.push(self.oracles.last().unwrap().clone());
            }
        }
    }
}

/// A test's directory, kept (and its path printed) when `DP_TEST_KEEP_DIR` is set, so the
/// services' logs of a failed run can be read.
pub struct KeptDir(Option<tempfile::TempDir>, PathBuf);

impl KeptDir {
    pub fn new(dir: tempfile::TempDir) -> Self {
        let path = dir.path().to_owned();
        if std::env::var_os("DP_TEST_KEEP_DIR").is_some() {
            println!("test directory kept: {}", path.display());
            Self(None, dir.keep())
        } else {
            Self(Some(dir), path)
        }
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().map_or(&self.1, |d| d.path())
    }
}

/// The cluster both crash tests run (scheduler and replayer; the caller adds workers):
/// quick cleanup, picks and statistics, small memtables, a 15 s `stuck_timeout` (bounds the
/// cost of an attempt recorded as dispatched but never sent before a crash, see
/// docs/reliability.md), and every storage delete journalled for the GC oracle. Returns the
/// cluster and the journal's path.
pub fn crash_cluster(dir: &Path) -> (DataCluster, PathBuf) {
    let journal = dir.join("deletes.journal");
    let journal_s = journal.to_str().unwrap_or_default().to_owned();
    let c = DataCluster::start(
        dir,
        &[
            ("DP__CLEANUP__INTERVAL", "500ms"),
            ("DP__CLEANUP__GRACE_PERIOD", "1s"),
            ("DP__SCHEDULER__PICK_INTERVAL", "300ms"),
            ("DP__STATISTICS__INTERVAL", "1s"),
            ("DP__SCHEDULER__STUCK_TIMEOUT", "15s"),
            ("DP__MEMTABLE_FLUSH__MAX_MEMTABLE_SIZE", "128KB"),
            ("DP_DELETE_JOURNAL", &journal_s),
        ],
    );
    (c, journal)
}

/// Ends a crash test: stops the load, waits until every acknowledged write is flushed,
/// kills the compactors (so no compaction or cleanup changes the files while they are
/// read), then runs every oracle over `tables`, prints the figures, and fails the test on
/// any lost, duplicated, unexpected or wrong write, deleted referenced file, broken
/// structure or panic.
pub fn drain_and_check(
    c: &mut DataCluster,
    load: &mut LoadDriver,
    watcher: ManifestWatcher,
    journal: &Path,
    tables: &[&str],
    grace_ms: i64,
) {
    let started = std::time::Instant::now();
    load.finish(Duration::from_secs(60));
    let merged = c.dir.join("oracle.jsonl");
    let acked = merge_oracles(&load.oracles, &merged);
    for t in tables {
        let last = DataCluster::last_acked(&merged, t);
        c.wait_flushed(t, last, Duration::from_secs(180));
    }
    for i in 0..c.compactors.len() {
        DataCluster::kill(&mut c.compactors[i]);
    }
    let seen = watcher.stop();
    let drained = started.elapsed();
    // Attempts the scheduler retried only after `scheduler.stuck_timeout`: a worker alive
    // but not working on them (e.g. a dispatch recorded but never sent before a crash).
    let tasks = c.admin_json(&["tasks", "list"]);
    let errors: Vec<String> = tasks
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|t| t["errors"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    let count = |prefix: &str| errors.iter().filter(|m| m.starts_with(prefix)).count();
    crate::report!(
        "attempts retried: {} after a lease expired, {} after stuck_timeout",
        count("lease_expired"),
        count("stuck")
    );

    let mut failures = Vec::new();
    crate::report!(
        "loads: {} runs ok, {} failed, {} SIGKILLed; {} acknowledged writes",
        load.runs_ok,
        load.runs_failed,
        load.killed.len() - load.runs_failed,
        acked.len()
    );
    if load.runs_failed > 0 {
        crate::report!("last failed load: {}", load.last_error.trim());
    }
    for t in tables {
        let unknown = load.unknown(t, &acked);
        let l = check_ledger(c, t, &acked, &unknown);
        let r = check_reads(c, t, &acked, &l, &unknown);
        let s = check_structure(c, t);
        crate::report!(
            "{t}: ledger: {} live files, {} stored versions, {} acknowledged writes, {} unacknowledged ops of killed or failed loads ({} stored whole, {} keys deleted by one): lost {}, duplicated {}, unexpected {}",
            l.files,
            l.stored_versions,
            l.acknowledged,
            unknown.len(),
            l.unknown_outcome,
            l.deleted_by_unknown,
            l.lost.len(),
            l.duplicated.len(),
            l.unexpected.len(),
        );
        crate::report!(
            "{t}: reads: {} keys, {} newest of unknown outcome, {} wrong; structure: {} levels, {} files, {} violations",
            r.keys,
            r.unknown_outcome,
            r.violations.len(),
            s.levels,
            s.files,
            s.violations.len()
        );
        let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>();
        for (what, v) in [
            ("lost", &l.lost),
            ("duplicated", &l.duplicated),
            ("unexpected", &l.unexpected),
            ("wrong read", &r.violations),
            ("structure", &s.violations),
        ] {
            if !v.is_empty() {
                failures.push(format!("{t}: {} {what}: {:#?}", v.len(), first(v)));
            }
        }
        if l.files == 0 || l.stored_versions == 0 {
            failures.push(format!("{t}: nothing stored"));
        }
    }
    let gc = check_gc(&read_delete_journal(journal), &seen, grace_ms);
    let panics = panics(&c.dir);
    crate::report!(
        "gc: {} sst deletes ({} of files a manifest had referenced), {} wal deletes, {} violations; manifest polls {} ({} failed); panics {}",
        gc.sst_deletes,
        gc.deletes_of_once_referenced,
        gc.wal_deletes,
        gc.violations.len(),
        seen.polls,
        seen.failed_polls,
        panics.len()
    );
    crate::report!(
        "drain {:.1} s, oracles {:.1} s",
        drained.as_secs_f64(),
        (started.elapsed() - drained).as_secs_f64()
    );
    if !gc.violations.is_empty() {
        failures.push(format!("gc: {:#?}", gc.violations));
    }
    if gc.deletes_of_once_referenced == 0 {
        failures.push("gc: cleanup never deleted a file a manifest had referenced".into());
    }
    if !panics.is_empty() {
        failures.push(format!("panics: {panics:#?}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen_file(table: &str, id: u64, first: i64, last: i64) -> Seen {
        let mut seen = Seen::default();
        seen.files.insert(
            (table.to_owned(), id),
            Sighting {
                first_after_ms: first,
                last_before_ms: last,
            },
        );
        seen.checkpoints
            .insert(table.to_owned(), vec![(5000, 5010, 100)]);
        seen
    }

    fn deleted(ms: i64, path: &str) -> Deleted {
        Deleted {
            ms,
            pid: 1,
            path: path.to_owned(),
        }
    }

    const SST: &str = "tables/t/sst/00000000000000000007.sst";

    #[test]
    fn gc_flags_deletes_of_referenced_retained_or_later_committed_files_only() {
        let seen = seen_file("t", 7, 1000, 2000);
        // Long after its last manifest plus the grace period: fine.
        let ok = check_gc(&[deleted(3500, SST)], &seen, 1000);
        assert!(ok.violations.is_empty(), "{:?}", ok.violations);
        assert_eq!((ok.sst_deletes, ok.deletes_of_once_referenced), (1, 1));
        // Inside the grace period after its last manifest: a retained version lost it.
        assert_eq!(
            check_gc(&[deleted(2500, SST)], &seen, 1000)
                .violations
                .len(),
            1
        );
        // Before a manifest showed it (an upload awaiting commit, or still referenced).
        assert_eq!(
            check_gc(&[deleted(900, SST)], &seen, 1000).violations.len(),
            1
        );
        // Never in any manifest (an orphan): fine at any time.
        let orphan = "tables/t/sst/00000000000000000008.sst";
        assert!(
            check_gc(&[deleted(1, orphan)], &seen, 1000)
                .violations
                .is_empty()
        );
        // A WAL segment starting above the checkpoint of its moment.
        let wal = |first: u64| format!("tables/t/wal/{first:020}.wal");
        assert!(
            check_gc(&[deleted(4000, &wal(90))], &seen, 1000)
                .violations
                .is_empty()
        );
        assert_eq!(
            check_gc(&[deleted(4000, &wal(101))], &seen, 1000)
                .violations
                .len(),
            1
        );
    }

    #[test]
    fn the_delete_journal_parses_its_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j");
        std::fs::write(&p, format!("12 34 {SST}\ngarbage\n56 78 x y\n")).unwrap();
        let j = read_delete_journal(&p);
        assert_eq!(j.len(), 2);
        assert_eq!((j[0].ms, j[0].pid, j[0].path.as_str()), (12, 34, SST));
        assert_eq!(j[1].path, "x y");
    }

    #[test]
    fn unknown_writes_explain_only_what_they_wrote() {
        let mut u = Unknown {
            windows: vec![(10, 20)],
            acked: [12].into_iter().collect(),
            ops: HashMap::new(),
        };
        u.ops
            .insert("k".into(), vec![(20, Some("v".into())), (20, None)]);
        assert!(u.seq(11) && !u.seq(12) && !u.seq(10) && !u.seq(20));
        assert!(u.explains("k", Some(b"v")) && u.explains("k", None));
        assert!(!u.explains("k", Some(b"torn")) && !u.explains("j", None));
        assert!(u.may_delete_after("k", 19) && !u.may_delete_after("k", 20));
        assert_eq!(u.len(), 2);
    }
}
