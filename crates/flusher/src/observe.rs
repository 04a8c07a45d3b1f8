//! The flusher's metrics: task counts and durations (shared names from
//! [`runtime::metrics`]), bytes written, and `memtable_flush_rate`.
//!
//! `memtable_flush_rate` is the number of memtables this process flushed successfully over
//! the last [`RATE_WINDOW`], divided by its length in seconds: a plain moving average that
//! an operator can check by hand against `processor_tasks_total`, and that falls back to
//! zero a minute after flushing stops (a ticker refreshes it, see [`run_rate_gauge`]).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use runtime::metrics::RateWindow;

/// SST bytes written by flushes.
pub const FLUSH_BYTES_TOTAL: &str = "memtable_flush_bytes_total";
/// Task type label of a flush.
pub const TASK_TYPE: &str = "memtable_flush";
/// Service label.
pub const SERVICE: &str = "flusher";
/// Span of time `memtable_flush_rate` averages over.
pub const RATE_WINDOW: Duration = Duration::from_secs(60);
/// How often the rate gauge is refreshed when nothing is flushed.
const RATE_REFRESH: Duration = Duration::from_secs(5);

pub use runtime::metrics::AttemptOutcome as Outcome;

/// The flusher's metric state, shared by every attempt.
#[derive(Debug, Clone)]
pub struct FlushMetrics {
    rate: Arc<Mutex<RateWindow>>,
}

impl Default for FlushMetrics {
    fn default() -> Self {
        Self {
            rate: Arc::new(Mutex::new(RateWindow::new(RATE_WINDOW))),
        }
    }
}

impl FlushMetrics {
    /// Describes the flusher's own series.
    pub fn describe() {
        metrics::describe_counter!(
            FLUSH_BYTES_TOTAL,
            metrics::Unit::Bytes,
            "SST bytes written by memtable flushes."
        );
    }

    /// Records the end of an attempt that ran for `duration`. Only an accepted flush counts
    /// towards `memtable_flush_rate`.
    pub fn attempt_ended(&self, outcome: Outcome, duration: Duration) {
        metrics::counter!(
            runtime::metrics::TASKS_TOTAL,
            "type" => TASK_TYPE,
            "status" => outcome.label(),
            "service" => SERVICE
        )
        .increment(1);
        metrics::histogram!(runtime::metrics::TASK_DURATION, "type" => TASK_TYPE, "service" => SERVICE)
            .record(duration.as_secs_f64());
        if outcome == Outcome::Succeeded {
            let now = Instant::now();
            let rate = {
                let mut window = self.lock();
                window.record(now, 1);
                window.per_second(now)
            };
            set_rate(rate);
        }
    }

    /// Counts the bytes of a written SST (whether or not the scheduler then takes it: the
    /// bytes went to storage either way).
    pub fn bytes_written(&self, bytes: u64) {
        metrics::counter!(FLUSH_BYTES_TOTAL, "service" => SERVICE).increment(bytes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateWindow> {
        self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn set_rate(rate: f64) {
    metrics::gauge!(runtime::metrics::MEMTABLE_FLUSH_RATE, "service" => SERVICE).set(rate);
}

/// Refreshes `memtable_flush_rate` every few seconds until `shutdown`, so that it decays
/// to zero when flushing stops.
pub async fn run_rate_gauge(metrics: FlushMetrics, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(RATE_REFRESH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                let rate = metrics.lock().per_second(Instant::now());
                set_rate(rate);
            }
        }
    }
}
