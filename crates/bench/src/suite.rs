//! The suite: for each workload, prepare its input once on disk, then run ours and RocksDB
//! alternately (A B A B …, `reps` times each), every run in its own child process pinned
//! to the same cores, take medians, and report ours, RocksDB's, the ratio and the goal.
//!
//! A child is this binary re-executed as `dp-bench run --workload W --engine E …`: its CPU
//! time and peak RSS (read from `/proc/self` as its last act, see [`crate::sys`]) belong to
//! that run alone, RocksDB's background threads included. Children are pinned with
//! `taskset -c <cores>` (all cores unless `--cores` says otherwise), so both engines get
//! the same CPUs.

use std::collections::BTreeMap;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::settings::Settings;
use crate::sys::Machine;
use crate::{Figures, data};

/// The engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Ours,
    Rocksdb,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Rocksdb => "rocksdb",
        }
    }
}

/// Workload ids, in suite order.
pub const WORKLOADS: &[&str] = &["p1", "p2", "p2x2", "p3", "p4", "p5", "p6", "p7"];

/// Which side of a metric is better, and the goal for it.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// ours / RocksDB ≥ x.
    RatioAtLeast(f64),
    /// ours / RocksDB ≤ x.
    RatioAtMost(f64),
    /// ours ≥ x.
    AtLeast(f64),
    /// ours ≤ x.
    AtMost(f64),
    /// ours < x.
    Below(f64),
    /// Reported, no goal.
    None,
}

impl Goal {
    fn text(self) -> String {
        match self {
            Self::RatioAtLeast(x) => format!("ratio >= {x}"),
            Self::RatioAtMost(x) => format!("ratio <= {x}"),
            Self::AtLeast(x) => format!(">= {x}"),
            Self::AtMost(x) => format!("<= {x}"),
            Self::Below(x) => format!("< {x}"),
            Self::None => "-".to_owned(),
        }
    }

    fn met(self, ours: f64, ratio: Option<f64>) -> Option<bool> {
        match self {
            Self::RatioAtLeast(x) => ratio.map(|r| r >= x),
            Self::RatioAtMost(x) => ratio.map(|r| r <= x),
            Self::AtLeast(x) => Some(ours >= x),
            Self::AtMost(x) => Some(ours <= x),
            Self::Below(x) => Some(ours < x),
            Self::None => None,
        }
    }
}

/// One reported figure of a workload.
struct Metric {
    key: &'static str,
    label: &'static str,
    goal: Goal,
}

struct Spec {
    id: &'static str,
    title: &'static str,
    engines: &'static [Engine],
    metrics: &'static [Metric],
}

const BOTH: &[Engine] = &[Engine::Ours, Engine::Rocksdb];
const OURS: &[Engine] = &[Engine::Ours];

fn spec(id: &str) -> anyhow::Result<Spec> {
    Ok(match id {
        "p1" => Spec {
            id: "p1",
            title: "P1 flush: memtable -> L0 SST",
            engines: BOTH,
            metrics: &[
                Metric {
                    key: "flush_mb_s",
                    label: "flush MB/s (user bytes)",
                    goal: Goal::RatioAtLeast(1.3),
                },
                Metric {
                    key: "flush_cpu_s_per_gb",
                    label: "flush CPU-s/GB",
                    goal: Goal::None,
                },
            ],
        },
        "p2" => Spec {
            id: "p2",
            title: "P2 full L0 compaction, 1 thread",
            engines: BOTH,
            metrics: &[
                Metric {
                    key: "input_mb_s",
                    label: "input MB/s (user bytes)",
                    goal: Goal::RatioAtLeast(1.0),
                },
                Metric {
                    key: "compaction_cpu_s",
                    label: "compaction CPU-s",
                    goal: Goal::None,
                },
            ],
        },
        "p2x2" => Spec {
            id: "p2x2",
            title: "P2 full L0 compaction, 2 subcompactions",
            engines: BOTH,
            metrics: &[Metric {
                key: "input_mb_s",
                label: "input MB/s (user bytes)",
                goal: Goal::None,
            }],
        },
        "p3" => Spec {
            id: "p3",
            title: "P3 leveled steady state: load + 2x random overwrite",
            engines: BOTH,
            metrics: &[
                Metric {
                    key: "write_amp",
                    label: "write amplification",
                    goal: Goal::RatioAtMost(0.9),
                },
                Metric {
                    key: "time_to_quiesce_s",
                    label: "time to quiesce s",
                    goal: Goal::None,
                },
            ],
        },
        "p4" => Spec {
            id: "p4",
            title: "P4 size-tiered vs RocksDB universal",
            engines: BOTH,
            metrics: &[
                Metric {
                    key: "write_amp",
                    label: "write amplification",
                    goal: Goal::RatioAtMost(1.0),
                },
                Metric {
                    key: "space_amp",
                    label: "peak space / live bytes",
                    goal: Goal::AtMost(2.0),
                },
                Metric {
                    key: "time_to_quiesce_s",
                    label: "time to quiesce s",
                    goal: Goal::None,
                },
            ],
        },
        "p5" => Spec {
            id: "p5",
            title: "P5 WAL replay after a kill",
            engines: BOTH,
            metrics: &[
                Metric {
                    key: "replay_mb_s",
                    label: "replay MB/s (user bytes)",
                    goal: Goal::RatioAtLeast(1.5),
                },
                Metric {
                    key: "replay_s",
                    label: "replay s",
                    goal: Goal::None,
                },
            ],
        },
        "p6" => Spec {
            id: "p6",
            title: "P6 scheduler: no-op tasks through gRPC",
            engines: OURS,
            metrics: &[
                Metric {
                    key: "throughput_tasks_per_sec",
                    label: "tasks/s dispatched+committed",
                    goal: Goal::AtLeast(5000.0),
                },
                Metric {
                    key: "dispatch_p50_ms",
                    label: "p50 ms at 1000/s",
                    goal: Goal::None,
                },
                Metric {
                    key: "dispatch_p99_ms",
                    label: "p99 ms at 1000/s",
                    goal: Goal::Below(5.0),
                },
            ],
        },
        "p7" => Spec {
            id: "p7",
            title: "P7 replayer memory under load",
            engines: OURS,
            metrics: &[Metric {
                key: "rss_over_budget",
                label: "RSS growth / memtable budget",
                goal: Goal::AtMost(1.25),
            }],
        },
        other => bail!(
            "unknown workload {other:?} (known: {})",
            WORKLOADS.join(", ")
        ),
    })
}

/// What a child prints as its last stdout line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildReport {
    pub figures: Figures,
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
}

/// One measured run, as the parent saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub engine: Engine,
    pub rep: usize,
    /// Wall time of the whole child (start to exit), seconds.
    pub child_wall_s: f64,
    pub cpu_s: f64,
    pub peak_rss_bytes: u64,
    pub figures: Figures,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    pub metric: String,
    pub key: String,
    pub ours: f64,
    pub rocksdb: Option<f64>,
    pub ratio: Option<f64>,
    pub goal: Goal,
    pub goal_text: String,
    pub met: Option<bool>,
}

/// One workload's results.
#[derive(Debug, Clone, Serialize)]
pub struct WorkloadResult {
    pub id: String,
    pub title: String,
    /// Entries each engine's preparation consumed, and any other preparation figure.
    pub prepared: Figures,
    pub prepare_s: f64,
    pub runs: Vec<Run>,
    /// Medians over the runs of each engine, figure by figure (plus `cpu_s` and
    /// `peak_rss_bytes`).
    pub medians: BTreeMap<String, Figures>,
    /// Every run of both engines reported the same number of entries.
    pub same_entries: Option<bool>,
    pub rows: Vec<Row>,
}

/// The JSON document.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteResult {
    pub preset: String,
    pub machine: Machine,
    pub settings: Settings,
    pub cores: String,
    pub workloads: Vec<WorkloadResult>,
    pub total_s: f64,
}

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub preset: String,
    pub settings: Settings,
    pub workloads: Vec<String>,
    /// Where inputs and work directories go (a temporary directory inside it).
    pub dir: Option<PathBuf>,
    /// CPU list for `taskset -c`; `None`: every core.
    pub cores: Option<String>,
    /// The binary to re-execute (this one, unless a test says otherwise).
    pub exe: PathBuf,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Runs `sync` and waits a little, so that deleting the previous run's files does not land
/// in the next timed run.
fn settle() {
    let _ = Command::new("sync").status();
    std::thread::sleep(Duration::from_millis(300));
}

struct Ctx<'a> {
    o: &'a SuiteOptions,
    settings_json: String,
    cores: String,
    taskset: bool,
}

impl Ctx<'_> {
    /// `dp-bench <args>` as a child, pinned; returns its report.
    ///
    /// `killed_ok`: the child ends itself with SIGKILL after its report (P5's RocksDB
    /// writer, whose log must be recovered as after a crash).
    fn child(&self, args: &[String], killed_ok: bool) -> anyhow::Result<(ChildReport, f64)> {
        let mut cmd = if self.taskset {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(&self.cores).arg(&self.o.exe);
            c
        } else {
            Command::new(&self.o.exe)
        };
        cmd.args(args)
            .arg("--settings")
            .arg(&self.settings_json)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let start = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("run {} {args:?}", self.o.exe.display()))?;
        let wall = start.elapsed().as_secs_f64();
        if !out.status.success() && !killed_ok {
            bail!("child {args:?} failed: {}", out.status);
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .with_context(|| format!("child {args:?} printed no report"))?;
        let report: ChildReport =
            serde_json::from_str(last).with_context(|| format!("child report {last:?}"))?;
        Ok((report, wall))
    }

    fn run(
        &self,
        workload: &str,
        engine: Engine,
        data: &Path,
        work: &Path,
    ) -> anyhow::Result<(ChildReport, f64)> {
        self.child(
            &[
                "run".to_owned(),
                "--workload".to_owned(),
                workload.to_owned(),
                "--engine".to_owned(),
                engine.name().to_owned(),
                "--data".to_owned(),
                data.display().to_string(),
                "--work".to_owned(),
                work.display().to_string(),
            ],
            false,
        )
    }

    fn prepare_step(
        &self,
        step: &str,
        engine: Engine,
        data: &Path,
        work: &Path,
    ) -> anyhow::Result<Figures> {
        Ok(self
            .child(
                &[
                    "prepare".to_owned(),
                    "--step".to_owned(),
                    step.to_owned(),
                    "--engine".to_owned(),
                    engine.name().to_owned(),
                    "--data".to_owned(),
                    data.display().to_string(),
                    "--work".to_owned(),
                    work.display().to_string(),
                ],
                step == "p5" && engine == Engine::Rocksdb,
            )?
            .0
            .figures)
    }
}

/// Runs the suite; prints progress to stderr.
pub fn run(o: &SuiteOptions) -> anyhow::Result<SuiteResult> {
    let started = Instant::now();
    let machine = Machine::describe();
    let s = &o.settings;
    for w in &o.workloads {
        spec(w)?;
    }
    let tmp = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::tempdir_in(d)?
        }
        None => tempfile::tempdir()?,
    };
    let cores = o
        .cores
        .clone()
        .unwrap_or_else(|| format!("0-{}", machine.cores.saturating_sub(1)));
    let taskset = Command::new("taskset")
        .arg("-c")
        .arg(&cores)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !taskset {
        eprintln!("dp-bench: taskset not available: children are not pinned");
    }
    let ctx = Ctx {
        o,
        settings_json: serde_json::to_string(s)?,
        cores: cores.clone(),
        taskset,
    };
    let mut results = Vec::new();
    // P5 and P7 share P5's log; P2 and P2x2 share the L0 files.
    let mut prepared_dirs: BTreeMap<&str, PathBuf> = BTreeMap::new();
    for id in &o.workloads {
        let sp = spec(id)?;
        eprintln!("dp-bench: {} ...", sp.title);
        let prep_start = Instant::now();
        let (data, prepared) = prepare(&ctx, &sp, tmp.path(), &mut prepared_dirs)?;
        let prepare_s = prep_start.elapsed().as_secs_f64();
        let mut runs = Vec::new();
        for rep in 0..s.reps {
            for &engine in sp.engines {
                let work = tmp.path().join(format!("work-{}-{}", sp.id, engine.name()));
                let _ = std::fs::remove_dir_all(&work);
                std::fs::create_dir_all(&work)?;
                let (r, wall) = ctx.run(sp.id, engine, &data, &work)?;
                let _ = std::fs::remove_dir_all(&work);
                eprintln!(
                    "dp-bench:   {} rep {rep} {:<7} {}  (cpu {:.2} s, peak rss {:.0} MiB, child {:.1} s)",
                    sp.id,
                    engine.name(),
                    sp.metrics
                        .iter()
                        .map(|m| format!(
                            "{} {:.3}",
                            m.key,
                            r.figures.get(m.key).copied().unwrap_or(f64::NAN)
                        ))
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.cpu_s,
                    r.peak_rss_bytes as f64 / 1048576.0,
                    wall
                );
                runs.push(Run {
                    engine,
                    rep,
                    child_wall_s: wall,
                    cpu_s: r.cpu_s,
                    peak_rss_bytes: r.peak_rss_bytes,
                    figures: r.figures,
                });
                settle();
            }
        }
        results.push(summarize(&sp, prepared, prepare_s, runs));
    }
    drop(tmp);
    Ok(SuiteResult {
        preset: o.preset.clone(),
        machine,
        settings: s.clone(),
        cores,
        workloads: results,
        total_s: started.elapsed().as_secs_f64(),
    })
}

/// Prepares a workload's input; returns the data directory its runs get.
fn prepare(
    ctx: &Ctx<'_>,
    sp: &Spec,
    tmp: &Path,
    done: &mut BTreeMap<&'static str, PathBuf>,
) -> anyhow::Result<(PathBuf, Figures)> {
    let s = &ctx.o.settings;
    let mut prepared = Figures::new();
    let shared = match sp.id {
        "p2" | "p2x2" => "p2",
        "p5" | "p7" => "p5",
        "p3" | "p4" => "p3",
        other => other,
    };
    if let Some(dir) = done.get(shared) {
        prepared.insert("reused_from_earlier_workload".into(), 1.0);
        return Ok((dir.clone(), prepared));
    }
    let dir = tmp.join(format!("data-{shared}"));
    std::fs::create_dir_all(&dir)?;
    let entries = dir.join("entries.bin");
    match shared {
        "p1" => data::write_entries(
            &entries,
            s.seed,
            s.p1_memtables * s.p1_entries_per_memtable(),
            |i, _| i,
        )?,
        "p2" => {
            // A random fill: key numbers drawn uniformly from as many numbers as there
            // are entries (about 37% of the entries overwrite an earlier key).
            let n = s.p2_files * s.p2_entries_per_file();
            data::write_entries(&entries, s.seed, n, |_, rng| {
                rand::Rng::random_range(rng, 0..n)
            })?;
        }
        "p3" => data::write_load_and_overwrite(&entries, s.seed, s.p3_load_keys, s.p3_overwrites)?,
        "p5" => data::write_entries(&entries, s.seed, s.p5_entries(), |i, _| i)?,
        _ => {}
    }
    if entries.exists() {
        prepared.insert(
            "input_entries".into(),
            (std::fs::metadata(&entries)?.len() / crate::settings::ENTRY_BYTES) as f64,
        );
    }
    for (step, engine) in [
        ("p2", Engine::Ours),
        ("p2", Engine::Rocksdb),
        ("p5", Engine::Ours),
        ("p5", Engine::Rocksdb),
    ] {
        if step == shared {
            let f = ctx.prepare_step(step, engine, &dir, &dir)?;
            for (k, v) in f {
                prepared.insert(format!("{}_{k}", engine.name()), v);
            }
        }
    }
    if shared == "p5" {
        crate::rocks::p5_patch_options(&dir.join("rocksdb"))?;
    }
    done.insert(shared_static(shared), dir.clone());
    Ok((dir, prepared))
}

fn shared_static(s: &str) -> &'static str {
    match s {
        "p2" => "p2",
        "p5" => "p5",
        "p3" => "p3",
        "p1" => "p1",
        "p6" => "p6",
        _ => "other",
    }
}

fn summarize(sp: &Spec, prepared: Figures, prepare_s: f64, runs: Vec<Run>) -> WorkloadResult {
    let mut medians = BTreeMap::new();
    for &engine in sp.engines {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.engine == engine).collect();
        let mut keys: Vec<String> = mine
            .iter()
            .flat_map(|r| r.figures.keys().cloned())
            .collect();
        keys.sort();
        keys.dedup();
        let mut m = Figures::new();
        for k in keys {
            m.insert(
                k.clone(),
                median(
                    mine.iter()
                        .filter_map(|r| r.figures.get(&k).copied())
                        .collect(),
                ),
            );
        }
        m.insert(
            "cpu_s".into(),
            median(mine.iter().map(|r| r.cpu_s).collect()),
        );
        m.insert(
            "peak_rss_bytes".into(),
            median(mine.iter().map(|r| r.peak_rss_bytes as f64).collect()),
        );
        medians.insert(engine.name().to_owned(), m);
    }
    let same_entries = (sp.engines.len() == 2).then(|| {
        let counts: Vec<Option<f64>> = runs
            .iter()
            .map(|r| r.figures.get("entries").copied())
            .collect();
        counts.iter().all(|c| c.is_some() && *c == counts[0])
    });
    let rows = sp
        .metrics
        .iter()
        .map(|m| {
            let ours = medians
                .get("ours")
                .and_then(|f| f.get(m.key))
                .copied()
                .unwrap_or(f64::NAN);
            let rocksdb = medians.get("rocksdb").and_then(|f| f.get(m.key)).copied();
            let ratio = rocksdb.map(|r| ours / r);
            Row {
                workload: sp.id.to_owned(),
                metric: m.label.to_owned(),
                key: m.key.to_owned(),
                ours,
                rocksdb,
                ratio,
                goal: m.goal,
                goal_text: m.goal.text(),
                met: m.goal.met(ours, ratio),
            }
        })
        .collect();
    WorkloadResult {
        id: sp.id.to_owned(),
        title: sp.title.to_owned(),
        prepared,
        prepare_s,
        runs,
        medians,
        same_entries,
        rows,
    }
}

fn num(x: f64) -> String {
    if !x.is_finite() {
        "-".to_owned()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// The human-readable report.
pub fn table(r: &SuiteResult) -> String {
    let s = &r.settings;
    let mut out = String::new();
    let mib = |b: u64| b as f64 / 1048576.0;
    out.push_str(&format!(
        "dp-bench {} | scale {} | {} reps per engine, alternating, medians | cores {} | {} ({} cores, {:.0} GiB), {}\n",
        r.preset,
        s.scale,
        s.reps,
        r.cores,
        r.machine.cpu_model,
        r.machine.cores,
        r.machine.memory_bytes as f64 / 1073741824.0,
        r.machine.kernel,
    ));
    out.push_str(&format!(
        "settings: 16 B keys, 100 B values, no compression, CRC32C, {} B blocks, {} bits/key bloom; \
         P1 memtable {:.1} MiB x {}; P2 {} L0 files of {:.2} MiB; P3/P4 memtable {:.2} MiB, target file {:.2} MiB, \
         base level {:.1} MiB x {}, L0 trigger {}, load {} keys + {} overwrites; P4 min_threshold {}, \
         universal size_ratio 1 / min width 2 / max size amp 200%; P5 WAL ~{:.0} MiB ({} puts); P7 memtable {:.1} MiB\n\n",
        s.block_size,
        s.bloom_bits_per_key,
        mib(s.p1_memtable_bytes),
        s.p1_memtables,
        s.p2_files,
        mib(s.p2_file_bytes),
        mib(s.memtable_bytes),
        mib(s.target_file_bytes),
        mib(s.base_level_bytes),
        s.level_multiplier,
        s.l0_trigger,
        s.p3_load_keys,
        s.p3_overwrites,
        s.p4_min_threshold,
        mib(s.p5_wal_bytes),
        s.p5_entries(),
        mib(s.p7_memtable_bytes),
    ));
    out.push_str(&format!(
        "{:<5} {:<30} {:>11} {:>11} {:>8} {:>12} {:>4} | {:>16} {:>18} | {}\n",
        "wl",
        "metric",
        "ours",
        "rocksdb",
        "ratio",
        "goal",
        "met",
        "cpu-s ours/rdb",
        "peak MiB ours/rdb",
        "entries ours/rdb"
    ));
    for w in &r.workloads {
        let cpu = |e: &str| w.medians.get(e).and_then(|m| m.get("cpu_s")).copied();
        let rss = |e: &str| {
            w.medians
                .get(e)
                .and_then(|m| m.get("peak_rss_bytes"))
                .map(|b| b / 1048576.0)
        };
        let ent = |e: &str| w.medians.get(e).and_then(|m| m.get("entries")).copied();
        let pair = |a: Option<f64>, b: Option<f64>, f: &dyn Fn(f64) -> String| {
            format!("{}/{}", a.map_or("-".into(), f), b.map_or("-".into(), f))
        };
        for (i, row) in w.rows.iter().enumerate() {
            let side = if i == 0 {
                format!(
                    "{:>16} {:>18} | {}{}",
                    pair(cpu("ours"), cpu("rocksdb"), &|x| format!("{x:.2}")),
                    pair(rss("ours"), rss("rocksdb"), &|x| format!("{x:.0}")),
                    pair(ent("ours"), ent("rocksdb"), &|x| format!("{x:.0}")),
                    match w.same_entries {
                        Some(true) => " same",
                        Some(false) => " DIFFERENT",
                        None => "",
                    }
                )
            } else {
                format!("{:>16} {:>18} |", "", "")
            };
            out.push_str(&format!(
                "{:<5} {:<30} {:>11} {:>11} {:>8} {:>12} {:>4} | {}\n",
                row.workload,
                row.metric,
                num(row.ours),
                row.rocksdb.map_or("-".into(), num),
                row.ratio.map_or("-".into(), |x| format!("{x:.3}x")),
                row.goal_text,
                match row.met {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "",
                },
                side
            ));
        }
    }
    out.push_str(&format!("\ntotal {:.0} s\n", r.total_s));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn goals_compare_the_right_side() {
        assert_eq!(Goal::RatioAtLeast(1.3).met(10.0, Some(1.3)), Some(true));
        assert_eq!(Goal::RatioAtLeast(1.3).met(10.0, Some(1.29)), Some(false));
        assert_eq!(Goal::RatioAtMost(0.9).met(1.0, Some(0.91)), Some(false));
        assert_eq!(Goal::RatioAtMost(0.9).met(1.0, None), None);
        assert_eq!(Goal::AtLeast(5000.0).met(5000.0, None), Some(true));
        assert_eq!(Goal::AtMost(2.0).met(2.1, Some(0.5)), Some(false));
        assert_eq!(Goal::Below(5.0).met(5.0, None), Some(false));
        assert_eq!(Goal::None.met(1.0, Some(1.0)), None);
    }

    #[test]
    fn every_workload_has_a_spec_and_unknown_ones_are_refused() {
        for w in WORKLOADS {
            let sp = spec(w).expect("spec");
            assert!(!sp.metrics.is_empty());
        }
        assert!(spec("p9").is_err());
    }

    #[test]
    fn rows_take_medians_and_flag_different_entries() {
        let sp = spec("p1").expect("spec");
        let run = |engine, rep, mb: f64, entries: f64| Run {
            engine,
            rep,
            child_wall_s: 1.0,
            cpu_s: 1.0,
            peak_rss_bytes: 1,
            figures: Figures::from([
                ("flush_mb_s".to_owned(), mb),
                ("flush_cpu_s_per_gb".to_owned(), 1.0),
                ("entries".to_owned(), entries),
            ]),
        };
        let same = summarize(
            &sp,
            Figures::new(),
            0.0,
            vec![
                run(Engine::Ours, 0, 300.0, 10.0),
                run(Engine::Rocksdb, 0, 100.0, 10.0),
                run(Engine::Ours, 1, 200.0, 10.0),
                run(Engine::Rocksdb, 1, 100.0, 10.0),
                run(Engine::Ours, 2, 100.0, 10.0),
                run(Engine::Rocksdb, 2, 100.0, 10.0),
            ],
        );
        assert_eq!(same.same_entries, Some(true));
        assert_eq!(same.rows[0].ours, 200.0);
        assert_eq!(same.rows[0].ratio, Some(2.0));
        assert_eq!(same.rows[0].met, Some(true));
        let different = summarize(
            &sp,
            Figures::new(),
            0.0,
            vec![
                run(Engine::Ours, 0, 1.0, 10.0),
                run(Engine::Rocksdb, 0, 1.0, 11.0),
            ],
        );
        assert_eq!(different.same_entries, Some(false));
    }
}
