//! Prometheus metrics: one recorder per process (the all-in-one binary shares it among its
//! four services), the metric names every service uses, and the process's own memory and
//! CPU figures sampled from `/proc`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Tasks finished, by `type` and `status` (`succeeded`, `failed`, `retried`, `cancelled`, `refused`).
pub const TASKS_TOTAL: &str = "processor_tasks_total";
/// Tasks waiting in the scheduler's queue, by `type`.
pub const QUEUE_DEPTH: &str = "processor_queue_depth";
/// Resident memory of the process in bytes.
pub const MEMORY_USAGE: &str = "processor_memory_usage";
/// CPU used by the process, in cores (1.0 = one core fully busy), over the last interval.
pub const CPU_USAGE: &str = "processor_cpu_usage";
/// Duration of task attempts, by `type`, in seconds.
pub const TASK_DURATION: &str = "processor_task_duration_seconds";
/// WAL entries replayed per second.
pub const WAL_REPLAY_RATE: &str = "wal_replay_rate";
/// Memtables flushed per second.
pub const MEMTABLE_FLUSH_RATE: &str = "memtable_flush_rate";
/// Files compacted per hour.
pub const COMPACTION_RATE: &str = "compaction_rate";

/// Task types as they appear in metric labels.
pub const TASK_TYPES: [&str; 5] = [
    "wal_replay",
    "memtable_flush",
    "compaction",
    "cleanup",
    "statistics_update",
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder (once) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                        1800.0,
                    ],
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed already (a test harness): render an empty
                // recorder rather than fail the service.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            };
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(TASKS_TOTAL, "Tasks finished, by type and status.");
    metrics::describe_gauge!(
        QUEUE_DEPTH,
        "Tasks waiting in the scheduler's queue, by type."
    );
    metrics::describe_gauge!(
        MEMORY_USAGE,
        metrics::Unit::Bytes,
        "Resident memory of the process."
    );
    metrics::describe_gauge!(
        CPU_USAGE,
        "CPU used by the process, in cores, over the last sampling interval."
    );
    metrics::describe_histogram!(
        TASK_DURATION,
        metrics::Unit::Seconds,
        "Duration of task attempts, by type."
    );
    metrics::describe_gauge!(WAL_REPLAY_RATE, "WAL entries replayed per second.");
    metrics::describe_gauge!(MEMTABLE_FLUSH_RATE, "Memtables flushed per second.");
    metrics::describe_gauge!(COMPACTION_RATE, "Files compacted per hour.");
}

/// Registers the series every service exposes from its first scrape, at zero.
pub fn register_standard_series(service: &str) {
    for t in TASK_TYPES {
        for status in ["succeeded", "failed"] {
            metrics::counter!(TASKS_TOTAL, "type" => t, "status" => status, "service" => service.to_owned())
                .absolute(0);
        }
        metrics::gauge!(QUEUE_DEPTH, "type" => t, "service" => service.to_owned()).set(0.0);
    }
}

/// Resident set size of this process in bytes, from `/proc/self/status`.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User + system CPU time of this process, from `/proc/self/stat`.
pub fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces: fields after it start past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after ')'.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux ABI this runs on.
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Samples memory and CPU into their gauges every `interval` until cancelled.
pub async fn sample_process(interval: Duration, shutdown: CancellationToken) {
    let mut last = (Instant::now(), cpu_time().unwrap_or_default());
    sample_once(&mut last);
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => sample_once(&mut last),
        }
    }
}

fn sample_once(last: &mut (Instant, Duration)) {
    if let Some(rss) = resident_memory_bytes() {
        metrics::gauge!(MEMORY_USAGE).set(rss as f64);
    }
    if let Some(cpu) = cpu_time() {
        let now = Instant::now();
        let wall = now.duration_since(last.0).as_secs_f64();
        if wall > 0.0 {
            let used = cpu.saturating_sub(last.1).as_secs_f64();
            metrics::gauge!(CPU_USAGE).set(used / wall);
        } else {
            metrics::gauge!(CPU_USAGE).set(0.0);
        }
        *last = (now, cpu);
    }
}

/// Keeps the recorder's histograms tidy; must run periodically.
pub async fn upkeep(handle: PrometheusHandle, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => handle.run_upkeep(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_and_cpu() {
        let rss = resident_memory_bytes().expect("VmRSS");
        assert!(rss > 1 << 20, "rss {rss} implausibly small");
        assert!(cpu_time().is_some());
    }
}

/// How a worker's attempt ended, as the `status` label of `processor_tasks_total` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    Cancelled,
    /// The work was done but the scheduler refused the completion (a stale attempt).
    Refused,
}

impl AttemptOutcome {
    pub fn label(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Refused => "refused",
        }
    }
}

/// Weighted events within a sliding window, for rate gauges (`memtable_flush_rate`,
/// `compaction_rate`); the clock is passed in.
#[derive(Debug)]
pub struct RateWindow {
    window: std::time::Duration,
    events: std::collections::VecDeque<(std::time::Instant, u64)>,
    sum: u64,
}

impl RateWindow {
    pub fn new(window: std::time::Duration) -> Self {
        Self {
            window,
            events: std::collections::VecDeque::new(),
            sum: 0,
        }
    }

    /// Counts `n` at `now`.
    pub fn record(&mut self, now: std::time::Instant, n: u64) {
        self.events.push_back((now, n));
        self.sum += n;
        self.expire(now);
    }

    /// Events per second over the window ending at `now`.
    pub fn per_second(&mut self, now: std::time::Instant) -> f64 {
        self.expire(now);
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.sum as f64 / secs
        } else {
            0.0
        }
    }

    /// Events per hour over the window ending at `now`.
    pub fn per_hour(&mut self, now: std::time::Instant) -> f64 {
        self.per_second(now) * 3600.0
    }

    fn expire(&mut self, now: std::time::Instant) {
        while let Some(&(at, n)) = self.events.front() {
            if now.saturating_duration_since(at) >= self.window {
                self.events.pop_front();
                self.sum -= n;
            } else {
                break;
            }
        }
    }
}

#[cfg(test)]
mod rate_tests {
    use super::RateWindow;
    use std::time::{Duration, Instant};

    #[test]
    fn weighted_events_count_within_the_window() {
        let t0 = Instant::now();
        let min = |m: u64| Duration::from_secs(60 * m);
        let mut w = RateWindow::new(min(60));
        assert_eq!(w.per_hour(t0), 0.0);
        w.record(t0, 4);
        w.record(t0 + min(30), 6);
        assert_eq!(w.per_hour(t0 + min(59)), 10.0);
        // An hour after the first event only the second counts.
        assert_eq!(w.per_hour(t0 + min(60)), 6.0);
        assert_eq!(w.per_hour(t0 + min(90)), 0.0);
        let mut s = RateWindow::new(Duration::from_secs(60));
        for i in 0..6 {
            s.record(t0 + Duration::from_secs(i * 10), 1);
        }
        assert_eq!(s.per_second(t0 + Duration::from_secs(50)), 0.1);
    }

    #[test]
    fn an_empty_window_never_divides_by_zero() {
        let t0 = Instant::now();
        let mut zero = RateWindow::new(Duration::ZERO);
        zero.record(t0, 1);
        assert_eq!(zero.per_hour(t0), 0.0);
        assert_eq!(zero.per_second(t0), 0.0);
    }
}
