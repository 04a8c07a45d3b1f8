//! `dp-bench`: the benchmark suite of issue #9 (`dp-bench suite`, what `make bench` runs),
//! the scheduler workload on its own (`dp-bench scheduler`), and the hidden subcommands the
//! suite re-executes itself with (`run`, `prepare`: one child process per measured run).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use bench::settings::Settings;
use bench::suite::{self, Engine};
use clap::{Parser, Subcommand, ValueEnum};

/// Benchmarks of data-processor against RocksDB: same data, same settings, same run.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<PathBuf>,
}

/// Sizes of a suite run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// `make bench`: scale 0.05, 3 reps, P5 with ~1 GiB of WAL (about 10 minutes on 2 cores).
    Standard,
    /// `make bench-quick`: scale 0.01, 1 rep, P5 with 64 MiB of WAL (CI smoke).
    Quick,
    /// For tests: scale 0.001, 1 rep, P5 with 8 MiB of WAL (seconds).
    Tiny,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every workload (or `--workloads`), ours and RocksDB alternating, medians, ratios.
    ///
    /// Example: `dp-bench suite --preset quick --json /tmp/bench.json`
    Suite {
        #[arg(long, value_enum, default_value = "standard")]
        preset: Preset,
        /// Override the preset's scale of P2-P4 (key counts and size settings).
        #[arg(long)]
        scale: Option<f64>,
        /// Override the preset's runs per engine.
        #[arg(long)]
        reps: Option<usize>,
        /// Override P5's WAL size in MiB.
        #[arg(long)]
        p5_wal_mib: Option<u64>,
        /// Override the number of memtables P1 flushes per run.
        #[arg(long)]
        p1_memtables: Option<u64>,
        /// Comma-separated workloads (default all: p1,p2,p2x2,p3,p4,p5,p6,p7).
        #[arg(long, value_delimiter = ',')]
        workloads: Option<Vec<String>>,
        /// Where inputs and work directories go (default: the system temp directory).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// CPU list children are pinned to (`taskset -c`), default every core.
        #[arg(long)]
        cores: Option<String>,
    },
    /// P6: no-op tasks dispatched and committed per second through real gRPC with fake
    /// workers, and dispatch latency at a fixed rate.
    ///
    /// Example: `dp-bench scheduler --tasks 5000 --rate 1000 --seconds 5`
    Scheduler(bench::scheduler::Options),
    /// One measured run (the suite's child process).
    #[command(hide = true)]
    Run {
        #[arg(long)]
        workload: String,
        #[arg(long, value_enum)]
        engine: Engine,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        work: PathBuf,
        #[arg(long)]
        settings: String,
    },
    /// One preparation step (the suite's child process).
    #[command(hide = true)]
    Prepare {
        #[arg(long)]
        step: String,
        #[arg(long, value_enum)]
        engine: Engine,
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        work: PathBuf,
        #[arg(long)]
        settings: String,
    },
}

fn settings(json: &str) -> anyhow::Result<Settings> {
    serde_json::from_str(json).context("--settings is not a settings document")
}

/// Prints the child's report as the last stdout line: its figures, then its CPU time and
/// peak RSS, read last.
fn report(figures: bench::Figures) -> anyhow::Result<()> {
    let r = suite::ChildReport {
        figures,
        cpu_s: bench::sys::cpu_time().as_secs_f64(),
        peak_rss_bytes: bench::sys::peak_rss_bytes(),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", serde_json::to_string(&r)?)?;
    out.flush()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Cmd::Run {
            workload,
            engine,
            data,
            work,
            settings: s,
        } => {
            let s = settings(&s)?;
            let figures = bench::run_child(&workload, engine, &data, &work, &s)
                .with_context(|| format!("{workload} {}", engine.name()))?;
            report(figures)
        }
        Cmd::Prepare {
            step,
            engine,
            data,
            work: _,
            settings: s,
        } => {
            let s = settings(&s)?;
            let figures = bench::prepare_child(&step, engine, &data, &s)
                .with_context(|| format!("prepare {step} {}", engine.name()))?;
            report(figures)?;
            if step == "p5" && engine == Engine::Rocksdb {
                // The log must be recovered as after a crash: no clean close.
                let _ = std::process::Command::new("kill")
                    .args(["-9", &std::process::id().to_string()])
                    .status();
                std::thread::sleep(std::time::Duration::from_secs(5));
                anyhow::bail!("could not SIGKILL myself");
            }
            Ok(())
        }
        Cmd::Scheduler(o) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(bench::scheduler::run(o))?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            if let Some(path) = args.json {
                std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
            }
            Ok(())
        }
        Cmd::Suite {
            preset,
            scale,
            reps,
            p5_wal_mib,
            p1_memtables,
            workloads,
            dir,
            cores,
        } => {
            let (d_scale, d_reps, d_p1, d_p5, name) = match preset {
                Preset::Standard => (0.05, 3, 4, 1024, "standard"),
                Preset::Quick => (0.01, 1, 1, 64, "quick"),
                Preset::Tiny => (0.001, 1, 1, 8, "tiny"),
            };
            let settings = Settings::new(
                scale.unwrap_or(d_scale),
                reps.unwrap_or(d_reps),
                p1_memtables.unwrap_or(d_p1),
                p5_wal_mib.unwrap_or(d_p5),
            );
            let o = suite::SuiteOptions {
                preset: name.to_owned(),
                settings,
                workloads: workloads
                    .unwrap_or_else(|| suite::WORKLOADS.iter().map(|w| (*w).to_owned()).collect()),
                dir,
                cores,
                exe: std::env::current_exe().context("current exe")?,
            };
            let result = suite::run(&o)?;
            print!("{}", suite::table(&result));
            if let Some(path) = args.json {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&path, serde_json::to_vec_pretty(&result)?)
                    .with_context(|| format!("write {}", path.display()))?;
                eprintln!("dp-bench: results written to {}", path.display());
            }
            Ok(())
        }
    }
}
