//! A compaction simulator: runs a picker over a synthetic write stream, applying every plan
//! as a [`VersionEdit`], and measures write and space amplification. Pure and
//! deterministic (no RNG: files are modelled by expected values), so it runs in a unit
//! test; `cargo run -p lsm --example compaction_sim --release` prints the table.
//!
//! The model. Keys are `u64`s (8 bytes big-endian), every entry is `entry_bytes` long. A
//! file is only its metadata: a key range `[lo, hi]` and an entry count, with its keys
//! assumed spread uniformly over the range, so its *density* (fraction of the range's keys
//! present) is `entries / (hi − lo + 1)`.
//!
//! - Flush: a memtable of `memtable_bytes` of writes becomes one L0 file. With
//!   [`KeyDistribution::Uniform`] keys over a keyspace of `K` keys, `n` writes hold
//!   `K (1 − (1 − 1/K)^n)` distinct keys over the whole keyspace; with
//!   [`KeyDistribution::Sequential`] each memtable holds the next `n` keys (no overlap, so
//!   leveled compaction only moves files).
//! - Compaction: the merged output keeps one entry per distinct key. Over each stretch of
//!   keys covered by the same inputs, with independent uniform keys, a key is present in
//!   the output with probability `1 − Π(1 − density_i)`. A fraction `delete_fraction` of
//!   every file's entries are tombstones; a bottommost compaction drops them (and the
//!   older versions they hide, which the merge already counted once). Outputs are cut at
//!   the plan's `target_file_size`.
//! - Time is bytes ingested. With [`Execution::Instant`] compactions finish before the
//!   next flush (the picker runs until it has nothing to do, and every plan of one pick is
//!   applied in turn: plans must be independent). With [`Execution::Concurrent`] at most
//!   `slots` compactions run at once, each writing `speed` bytes per byte ingested; their
//!   inputs are locked while they run, exercising the pickers' locking rules.
//!
//! Figures: write amplification = (flush bytes + compaction bytes written) / flush bytes;
//! space amplification = bytes in the version / live bytes (distinct live keys ×
//! `entry_bytes`, computed in closed form).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use bytes::Bytes;

use super::{CompactionPlan, PickerInput, Strategy, Trigger, fmt_bytes, pick};
use crate::manifest::{FileMeta, ManifestError, Version, VersionEdit};

/// How written keys are spread over the keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDistribution {
    /// Uniformly random over `keyspace` keys (overwrites and deletes hit old keys).
    Uniform,
    /// Ever-increasing keys, no overwrites (`keyspace` and `delete_fraction` unused).
    Sequential,
}

/// How compactions run relative to ingest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Execution {
    /// Every compaction finishes before the next flush.
    Instant,
    /// At most `slots` at once, each writing `speed` bytes per byte ingested.
    Concurrent { slots: usize, speed: f64 },
}

/// One simulated workload.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Row label in reports.
    pub name: String,
    pub strategy: Strategy,
    /// Levels of the version, L0 included.
    pub num_levels: usize,
    /// Bytes written by clients (before deduplication in the memtable).
    pub ingest_bytes: u64,
    pub memtable_bytes: u64,
    pub entry_bytes: u64,
    /// Distinct keys clients write to.
    pub keyspace: u64,
    pub keys: KeyDistribution,
    /// Fraction of writes that are deletes (uniform keys only).
    pub delete_fraction: f64,
    pub execution: Execution,
}

impl SimConfig {
    /// 10 GiB of 1 KiB entries in 64 MiB memtables, uniform over 2 Mi keys (2 GiB live, each
    /// key written about five times), no deletes, instant compactions, 7 levels.
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        Self {
            name: name.into(),
            strategy,
            num_levels: 7,
            ingest_bytes: 10 << 30,
            memtable_bytes: 64 << 20,
            entry_bytes: 1024,
            keyspace: 2 << 20,
            keys: KeyDistribution::Uniform,
            delete_fraction: 0.0,
            execution: Execution::Instant,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReport {
    pub name: String,
    pub flushes: u64,
    pub flush_bytes: u64,
    /// Compactions committed, trivial moves included.
    pub compactions: u64,
    pub trivial_moves: u64,
    /// Compactions the tombstone trigger proposed.
    pub tombstone_compactions: u64,
    pub compaction_read_bytes: u64,
    pub compaction_write_bytes: u64,
    /// Most L0 files seen (right after a flush).
    pub max_l0_files: usize,
    /// Highest space amplification seen after a flush and the compactions it triggered.
    pub max_space_amp: f64,
    pub final_space_amp: f64,
    pub live_bytes: u64,
    pub total_bytes: u64,
    /// `(files, bytes)` per level at the end.
    pub levels: Vec<(usize, u64)>,
    /// Edits applied, each followed by a successful [`Version::check`].
    pub edits_checked: u64,
}

impl SimReport {
    /// (flush bytes + compaction bytes written) / flush bytes.
    pub fn write_amp(&self) -> f64 {
        if self.flush_bytes == 0 {
            return 0.0;
        }
        (self.flush_bytes + self.compaction_write_bytes) as f64 / self.flush_bytes as f64
    }

    /// A plain-text table of reports, one row each.
    pub fn table(reports: &[SimReport]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<34} {:>6} {:>6} {:>9} {:>6} {:>22} {:>9}  levels at end (files/bytes)",
            "run", "WA", "space", "max space", "max L0", "compactions", "written"
        );
        for r in reports {
            let levels: Vec<String> = r
                .levels
                .iter()
                .enumerate()
                .filter(|(_, (files, _))| *files > 0)
                .map(|(l, (files, bytes))| format!("L{l} {files}/{}", fmt_bytes(*bytes)))
                .collect();
            let _ = writeln!(
                out,
                "{:<34} {:>6.2} {:>6.2} {:>9.2} {:>6} {:>22} {:>9}  {}",
                r.name,
                r.write_amp(),
                r.final_space_amp,
                r.max_space_amp,
                r.max_l0_files,
                format!(
                    "{} ({} mv, {} tomb)",
                    r.compactions, r.trivial_moves, r.tombstone_compactions
                ),
                fmt_bytes(r.flush_bytes + r.compaction_write_bytes),
                levels.join(", ")
            );
        }
        out
    }
}

/// Why a run stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    #[error("{run}: edit refused ({what}): {source}")]
    Edit {
        run: String,
        what: String,
        #[source]
        source: ManifestError,
    },
    #[error("{run}: the picker still proposes work after {rounds} rounds at flush {flush}")]
    NoProgress {
        run: String,
        flush: u64,
        rounds: u32,
    },
}

/// Runs one workload.
pub fn simulate(config: &SimConfig) -> Result<SimReport, SimError> {
    let mut sim = Sim::new(config);
    let flushes = (config.ingest_bytes / config.memtable_bytes.max(1)).max(1);
    for _ in 0..flushes {
        sim.advance_to(sim.now + config.memtable_bytes as f64)?;
        sim.flush()?;
        sim.schedule()?;
        sim.sample();
    }
    sim.advance_to(f64::INFINITY)?;
    sim.sample();
    Ok(sim.report())
}

/// A compaction in progress: its plan and the outputs it will commit.
struct Running {
    finish_at: f64,
    plan: CompactionPlan,
    outputs: Vec<FileMeta>,
}

struct Sim<'a> {
    config: &'a SimConfig,
    version: Version,
    running: Vec<Running>,
    /// Bytes ingested so far.
    now: f64,
    writes: u64,
    next_seq: u64,
    next_id: u64,
    next_key: u64,
    report: SimReport,
}

impl<'a> Sim<'a> {
    fn new(config: &'a SimConfig) -> Self {
        Self {
            config,
            version: Version::new(config.num_levels),
            running: Vec::new(),
            now: 0.0,
            writes: 0,
            next_seq: 1,
            next_id: 1,
            next_key: 0,
            report: SimReport {
                name: config.name.clone(),
                flushes: 0,
                flush_bytes: 0,
                compactions: 0,
                trivial_moves: 0,
                tombstone_compactions: 0,
                compaction_read_bytes: 0,
                compaction_write_bytes: 0,
                max_l0_files: 0,
                max_space_amp: 0.0,
                final_space_amp: 0.0,
                live_bytes: 0,
                total_bytes: 0,
                levels: Vec::new(),
                edits_checked: 0,
            },
        }
    }

    fn entry_bytes(&self) -> u64 {
        self.config.entry_bytes.max(1)
    }

    /// Expected distinct keys among `n` uniform writes.
    fn distinct(&self, n: u64) -> f64 {
        let k = self.config.keyspace.max(1) as f64;
        k * -(n as f64 * (-1.0 / k).ln_1p()).exp_m1()
    }

    fn live_bytes(&self) -> u64 {
        let keys = match self.config.keys {
            KeyDistribution::Uniform => {
                self.distinct(self.writes) * (1.0 - self.config.delete_fraction)
            }
            KeyDistribution::Sequential => self.writes as f64,
        };
        (keys * self.entry_bytes() as f64) as u64
    }

    fn flush(&mut self) -> Result<(), SimError> {
        let n = (self.config.memtable_bytes / self.entry_bytes()).max(1);
        let (lo, hi, entries, tombstones) = match self.config.keys {
            KeyDistribution::Uniform => {
                let entries = self.distinct(n).round().max(1.0) as u64;
                let tombstones = (entries as f64 * self.config.delete_fraction).round() as u64;
                (0, self.config.keyspace.max(1) - 1, entries, tombstones)
            }
            KeyDistribution::Sequential => {
                let lo = self.next_key;
                self.next_key += n;
                (lo, lo + n - 1, n, 0)
            }
        };
        self.writes += n;
        let file = FileMeta {
            id: self.alloc_id(),
            size: entries * self.entry_bytes(),
            smallest: key(lo),
            largest: key(hi),
            smallest_seq: self.next_seq,
            largest_seq: self.next_seq + n - 1,
            entries,
            tombstones,
        };
        self.next_seq += n;
        self.report.flushes += 1;
        self.report.flush_bytes += file.size;
        let edit = VersionEdit {
            removed: vec![],
            added: vec![(0, file)],
        };
        self.apply(&edit, "flush")?;
        self.report.max_l0_files = self.report.max_l0_files.max(self.version.levels[0].len());
        Ok(())
    }

    fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn apply(&mut self, edit: &VersionEdit, what: &str) -> Result<(), SimError> {
        let err = |source| SimError::Edit {
            run: self.config.name.clone(),
            what: what.to_owned(),
            source,
        };
        let next = self.version.apply(edit).map_err(err)?;
        next.check().map_err(err)?;
        self.version = next;
        self.report.edits_checked += 1;
        Ok(())
    }

    /// Runs the picker and starts (or, when instant, commits) what it proposes.
    fn schedule(&mut self) -> Result<(), SimError> {
        const MAX_ROUNDS: u32 = 10_000;
        let slots = match self.config.execution {
            Execution::Instant => usize::MAX,
            Execution::Concurrent { slots, .. } => slots.max(1),
        };
        for _ in 0..MAX_ROUNDS {
            if self.running.len() >= slots {
                return Ok(());
            }
            let locked: BTreeSet<u64> = self
                .running
                .iter()
                .flat_map(|r| r.plan.input_ids())
                .collect();
            let input = PickerInput {
                version: &self.version,
                locked: &locked,
            };
            let plans = pick(&self.config.strategy, &input).plans;
            if plans.is_empty() {
                return Ok(());
            }
            let free = slots - self.running.len();
            for plan in plans.into_iter().take(free) {
                self.start(plan)?;
            }
        }
        Err(SimError::NoProgress {
            run: self.config.name.clone(),
            flush: self.report.flushes,
            rounds: MAX_ROUNDS,
        })
    }

    fn start(&mut self, plan: CompactionPlan) -> Result<(), SimError> {
        let outputs = if plan.trivial_move {
            Vec::new()
        } else {
            self.merge(&plan)
        };
        match self.config.execution {
            Execution::Concurrent { speed, .. } if !plan.trivial_move => {
                let written: u64 = outputs.iter().map(|f| f.size).sum();
                self.running.push(Running {
                    finish_at: self.now + written as f64 / speed.max(f64::MIN_POSITIVE),
                    plan,
                    outputs,
                });
                Ok(())
            }
            _ => self.commit(&plan, outputs),
        }
    }

    fn commit(&mut self, plan: &CompactionPlan, outputs: Vec<FileMeta>) -> Result<(), SimError> {
        let edit = if plan.trivial_move {
            plan.move_edit()
        } else {
            self.report.compaction_read_bytes += plan.input_bytes();
            self.report.compaction_write_bytes += outputs.iter().map(|f| f.size).sum::<u64>();
            plan.edit(outputs)
        };
        self.apply(&edit, &plan.reason)?;
        self.report.compactions += 1;
        self.report.trivial_moves += u64::from(plan.trivial_move);
        self.report.tombstone_compactions += u64::from(plan.trigger == Trigger::Tombstones);
        Ok(())
    }

    /// Commits every running compaction that finishes by `t` (rescheduling after each),
    /// then moves the clock to `t`.
    fn advance_to(&mut self, t: f64) -> Result<(), SimError> {
        while let Some(i) = self
            .running
            .iter()
            .enumerate()
            .filter(|(_, r)| r.finish_at <= t)
            .min_by(|a, b| a.1.finish_at.total_cmp(&b.1.finish_at))
            .map(|(i, _)| i)
        {
            let done = self.running.swap_remove(i);
            self.now = self.now.max(done.finish_at);
            self.commit(&done.plan, done.outputs)?;
            if t.is_finite() {
                self.schedule()?;
            }
        }
        if t.is_finite() {
            self.now = t;
        }
        Ok(())
    }

    /// The outputs of a rewrite (see the module docs).
    fn merge(&mut self, plan: &CompactionPlan) -> Vec<FileMeta> {
        let inputs: Vec<(u64, u64, f64)> = plan
            .input_files()
            .map(|(_, f)| {
                let (lo, hi) = (key_of(&f.smallest), key_of(&f.largest));
                (lo, hi, f.entries as f64 / (hi - lo + 1) as f64)
            })
            .collect();
        let (entries, tombstones) = plan.input_files().fold((0u64, 0u64), |(e, t), (_, f)| {
            (e + f.entries, t + f.tombstones)
        });
        let tomb_frac = if entries == 0 {
            0.0
        } else {
            tombstones as f64 / entries as f64
        };
        let kept = if plan.bottommost {
            1.0 - tomb_frac
        } else {
            1.0
        };
        let mut cuts: Vec<u64> = inputs
            .iter()
            .flat_map(|&(lo, hi, _)| [lo, hi.saturating_add(1)])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        // Stretches [a, b) with the density of the merged output.
        let stretches: Vec<(u64, u64, f64)> = cuts
            .windows(2)
            .filter_map(|w| {
                let (a, b) = (w[0], w[1]);
                let absent: f64 = inputs
                    .iter()
                    .filter(|&&(lo, hi, _)| lo <= a && hi >= b - 1)
                    .map(|&(_, _, d)| 1.0 - d.min(1.0))
                    .product();
                let density = (1.0 - absent) * kept;
                (density > 0.0 && absent < 1.0).then_some((a, b, density))
            })
            .collect();

        let target = (plan.target_file_size / self.entry_bytes()).max(1) as f64;
        let mut pieces: Vec<(u64, u64, f64)> = Vec::new();
        let mut open: Option<(u64, u64, f64)> = None; // (lo, hi, entries)
        for (a, b, density) in stretches {
            let mut pos = a;
            while pos < b {
                let (lo, _, have) = open.unwrap_or((pos, pos, 0.0));
                let avail = (b - pos) as f64 * density;
                if have + avail < target {
                    open = Some((lo, b - 1, have + avail));
                    pos = b;
                } else {
                    let len = ((target - have) / density)
                        .ceil()
                        .clamp(1.0, (b - pos) as f64) as u64;
                    pieces.push((lo, pos + len - 1, have + len as f64 * density));
                    open = None;
                    pos += len;
                }
            }
        }
        pieces.extend(open);

        let smallest_seq = plan.input_files().map(|(_, f)| f.smallest_seq).min();
        let largest_seq = plan.input_files().map(|(_, f)| f.largest_seq).max();
        let mut outputs = Vec::new();
        for (lo, hi, e) in pieces {
            let entries = e.round() as u64;
            if entries == 0 {
                continue;
            }
            let tombstones = if plan.bottommost {
                0
            } else {
                (entries as f64 * tomb_frac).round() as u64
            };
            outputs.push(FileMeta {
                id: self.alloc_id(),
                size: entries * self.entry_bytes(),
                smallest: key(lo),
                largest: key(hi),
                smallest_seq: smallest_seq.unwrap_or(0),
                largest_seq: largest_seq.unwrap_or(0),
                entries,
                tombstones,
            });
        }
        outputs
    }

    fn sample(&mut self) {
        let live = self.live_bytes();
        let total: u64 = (0..self.version.levels.len())
            .map(|l| self.version.level_bytes(l))
            .sum();
        if live > 0 {
            let amp = total as f64 / live as f64;
            self.report.max_space_amp = self.report.max_space_amp.max(amp);
            self.report.final_space_amp = amp;
        }
        self.report.live_bytes = live;
        self.report.total_bytes = total;
    }

    fn report(mut self) -> SimReport {
        self.report.levels = (0..self.version.levels.len())
            .map(|l| (self.version.levels[l].len(), self.version.level_bytes(l)))
            .collect();
        self.report
    }
}

fn key(k: u64) -> Bytes {
    Bytes::copy_from_slice(&k.to_be_bytes())
}

fn key_of(b: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = b.len().min(8);
    k[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(k)
}

/// Row names of [`scenarios`].
pub mod names {
    pub const LEVELED: &str = "leveled dynamic";
    pub const LEVELED_STATIC: &str = "leveled static";
    pub const LEVELED_64M: &str = "leveled dynamic, 64 MiB files";
    pub const TIERED: &str = "size-tiered";
    pub const LEVELED_CONCURRENT: &str = "leveled, 2 slots at 4x ingest";
    pub const TIERED_CONCURRENT: &str = "size-tiered, 2 slots at 4x ingest";
    pub const LEVELED_DELETES: &str = "leveled, 10% deletes";
    pub const LEVELED_HEAVY_DELETES: &str = "leveled, 60% deletes";
    pub const TIERED_DELETES: &str = "size-tiered, 10% deletes";
    pub const LEVELED_SEQUENTIAL: &str = "leveled, sequential keys";
    pub const TIERED_SEQUENTIAL: &str = "size-tiered, sequential keys";
}

/// The standard workloads: both strategies with their default knobs over
/// [`SimConfig::new`]'s stream, then variations (static targets, smaller files,
/// concurrent compactions, deletes, sequential keys).
pub fn scenarios() -> Vec<SimConfig> {
    use super::{LevelConfig, SizeTieredConfig};
    let leveled = Strategy::LevelBased(LevelConfig::default());
    let tiered = Strategy::SizeTiered(SizeTieredConfig::default());
    let concurrent = Execution::Concurrent {
        slots: 2,
        speed: 4.0,
    };
    vec![
        SimConfig::new(names::LEVELED, leveled.clone()),
        SimConfig::new(
            names::LEVELED_STATIC,
            Strategy::LevelBased(LevelConfig {
                dynamic_level_bytes: false,
                ..LevelConfig::default()
            }),
        ),
        SimConfig::new(
            names::LEVELED_64M,
            Strategy::LevelBased(LevelConfig {
                target_file_size: 64 << 20,
                ..LevelConfig::default()
            }),
        ),
        SimConfig::new(names::TIERED, tiered.clone()),
        SimConfig {
            execution: concurrent,
            ..SimConfig::new(names::LEVELED_CONCURRENT, leveled.clone())
        },
        SimConfig {
            execution: concurrent,
            ..SimConfig::new(names::TIERED_CONCURRENT, tiered.clone())
        },
        SimConfig {
            delete_fraction: 0.1,
            ..SimConfig::new(names::LEVELED_DELETES, leveled.clone())
        },
        SimConfig {
            delete_fraction: 0.6,
            ..SimConfig::new(names::LEVELED_HEAVY_DELETES, leveled.clone())
        },
        SimConfig {
            delete_fraction: 0.1,
            ..SimConfig::new(names::TIERED_DELETES, tiered.clone())
        },
        SimConfig {
            keys: KeyDistribution::Sequential,
            ..SimConfig::new(names::LEVELED_SEQUENTIAL, leveled)
        },
        SimConfig {
            keys: KeyDistribution::Sequential,
            ..SimConfig::new(names::TIERED_SEQUENTIAL, tiered)
        },
    ]
}
