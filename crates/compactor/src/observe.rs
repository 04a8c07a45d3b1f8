//! The compactor's metrics for compactions: task counts and durations (shared names from
//! [`runtime::metrics`]), bytes read and written, and `compaction_rate`.
//!
//! `compaction_rate` is in input files per hour: the number of input files of the
//! compactions this process completed successfully over the last [`RATE_WINDOW`] (one
//! hour), scaled to an hour. A plain moving count an operator can check by hand against the
//! task log; a ticker refreshes it (see [`run_rate_gauge`]) so it falls back to zero an
//! hour after compacting stops. The bytes of every merge that finished are counted,
//! whether or not the scheduler then takes the result (they were read and written either
//! way); a merge that failed or was cancelled half-way is not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use runtime::metrics::RateWindow;

/// Input bytes read by compactions.
pub const BYTES_READ_TOTAL: &str = "compaction_bytes_read_total";
/// Output bytes written by compactions.
pub const BYTES_WRITTEN_TOTAL: &str = "compaction_bytes_written_total";
/// Task type label of a compaction.
pub const TASK_TYPE: &str = "compaction";
/// Service label.
pub const SERVICE: &str = "compactor";
/// Span of time `compaction_rate` counts over.
pub const RATE_WINDOW: Duration = Duration::from_secs(3600);
/// How often the rate gauge is refreshed when nothing finishes.
const RATE_REFRESH: Duration = Duration::from_secs(30);

pub use runtime::metrics::AttemptOutcome as Outcome;

/// The compaction metric state, shared by every attempt.
#[derive(Debug, Clone)]
pub struct CompactionMetrics {
    rate: Arc<Mutex<RateWindow>>,
}

impl Default for CompactionMetrics {
    fn default() -> Self {
        Self {
            rate: Arc::new(Mutex::new(RateWindow::new(RATE_WINDOW))),
        }
    }
}

impl CompactionMetrics {
    /// Describes the compaction series and registers them at zero.
    pub fn describe() {
        metrics::describe_counter!(
            BYTES_READ_TOTAL,
            metrics::Unit::Bytes,
            "Input SST bytes read by compactions."
        );
        metrics::describe_counter!(
            BYTES_WRITTEN_TOTAL,
            metrics::Unit::Bytes,
            "Output SST bytes written by compactions."
        );
        metrics::counter!(BYTES_READ_TOTAL, "service" => SERVICE).absolute(0);
        metrics::counter!(BYTES_WRITTEN_TOTAL, "service" => SERVICE).absolute(0);
        set_rate(0.0);
    }

    /// Records the end of an attempt that ran for `duration`; `input_files` of a
    /// successful one count towards `compaction_rate`.
    pub fn attempt_ended(&self, outcome: Outcome, duration: Duration, input_files: usize) {
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
                window.record(now, input_files as u64);
                window.per_hour(now)
            };
            set_rate(rate);
        }
    }

    /// Counts the bytes a merge read and wrote.
    pub fn bytes(&self, read: u64, written: u64) {
        metrics::counter!(BYTES_READ_TOTAL, "service" => SERVICE).increment(read);
        metrics::counter!(BYTES_WRITTEN_TOTAL, "service" => SERVICE).increment(written);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RateWindow> {
        self.rate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn set_rate(rate: f64) {
    metrics::gauge!(runtime::metrics::COMPACTION_RATE, "service" => SERVICE).set(rate);
}

/// Refreshes `compaction_rate` every `RATE_REFRESH` until `shutdown`, so that it decays
/// to zero when compacting stops.
pub async fn run_rate_gauge(metrics: CompactionMetrics, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(RATE_REFRESH);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {
                let rate = metrics.lock().per_hour(Instant::now());
                set_rate(rate);
            }
        }
    }
}
