//! What the process and the machine report about themselves: CPU time, peak RSS, a
//! directory-size sampler, and the machine description written with the results.
//!
//! CPU and memory come from `/proc/self`: a child reads them as its last act, after closing
//! its engine (RocksDB's background threads have exited by then, and a process's
//! `utime + stime` include every thread it ever had, as `getrusage(RUSAGE_SELF)` does).
//! The workspace forbids `unsafe`, so the parent cannot call `wait4` itself; the child's own
//! figures are the same numbers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// User plus system CPU time of this process so far (all threads, exited ones included),
/// from `/proc/self/stat` in clock ticks of 10 ms.
pub fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: u64 = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process so far (`VmHWM`, the `ru_maxrss` figure).
pub fn peak_rss_bytes() -> u64 {
    status_kib("VmHWM:").unwrap_or(0) * 1024
}

/// Current resident set size (`VmRSS`).
pub fn rss_bytes() -> u64 {
    status_kib("VmRSS:").unwrap_or(0) * 1024
}

/// Samples the bytes of `*.sst` files under a directory every few milliseconds in a thread,
/// keeping the maximum: the peak space of a run, for both engines by the same method.
pub struct SpaceSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SpaceSampler {
    pub fn start(dir: PathBuf, every: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, stop) = (peak.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(crate::data::dir_bytes(&dir, ".sst"), Ordering::Relaxed);
                    std::thread::sleep(every);
                }
            })
        };
        Self {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling; the largest size seen (at least `also`, a figure the caller knows).
    pub fn stop(mut self, also: u64) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed).max(also)
    }
}

/// The machine and build the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    pub rustc: String,
    pub git_commit: String,
    pub date_utc: String,
    pub rocksdb: String,
    /// Load average when the suite started (other work on the machine disturbs figures).
    pub loadavg_at_start: String,
}

fn command_line(cmd: &str, args: &[&str], dir: Option<&Path>) -> String {
    let mut c = std::process::Command::new(cmd);
    c.args(args);
    if let Some(d) = dir {
        c.current_dir(d);
    }
    c.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

impl Machine {
    pub fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        Self {
            cpu_model,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes,
            kernel: command_line("uname", &["-srm"], None),
            rustc: command_line("rustc", &["--version"], Some(manifest)),
            git_commit: command_line("git", &["rev-parse", "HEAD"], Some(manifest)),
            date_utc: command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"], None),
            rocksdb: "RocksDB 10.4 (rust-rocksdb 0.24, librocksdb-sys built without SSE4.2)"
                .to_owned(),
            loadavg_at_start: std::fs::read_to_string("/proc/loadavg")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
        }
    }
}
