//! Traffic-aware scheduling and the disk-bandwidth budget: pure policy, time passed in.
//!
//! Vocabulary: *urgent* work is what keeps writes flowing — WAL replays, memtable flushes
//! and L0 compactions (what the stall forecast depends on); it never waits for traffic.
//! *Deferrable* work is everything that can be done later without hurting writers —
//! compactions of deeper levels, Cleanup, StatisticsUpdate. Deferrable work waits while
//! the cluster's ingest is above `scheduler.peak_ingest_bytes_per_sec`, or while no
//! `scheduler.maintenance_windows` range is open.
//!
//! The ingest rate is what the replayers report per table in their heartbeats (bytes of
//! WAL entries applied per second over a short window); the scheduler sums the latest
//! report of every table whose replayer is still heartbeating.
//!
//! The IO budget (`scheduler.io_budget`, bytes/s for the whole cluster) is shared among
//! the running flushes and compactions by weight: an urgent task weighs
//! [`URGENT_WEIGHT`], a deferrable one 1, so the shares always add up to the budget and
//! urgent work gets its part first. Shares are recomputed whenever the set of running
//! tasks changes: the dispatch carries the new task's share, heartbeat replies carry the
//! new shares of the tasks already running.

use std::collections::BTreeMap;

use catalog::TaskSpec;
use runtime::config::MaintenanceWindows;

/// The share weight of an urgent task relative to a deferrable one.
pub const URGENT_WEIGHT: u64 = 4;

/// When deferrable work must wait.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrafficPolicy {
    /// Cluster ingest above which deferrable work waits; 0 = never for traffic.
    pub peak_ingest_bytes_per_sec: u64,
    /// Daily UTC windows in which deferrable work may run; empty = always.
    pub windows: MaintenanceWindows,
}

/// Whether `spec` is urgent work (never deferred, first in the IO budget).
pub fn is_urgent(spec: &TaskSpec) -> bool {
    match spec {
        TaskSpec::WalReplay { .. } | TaskSpec::MemtableFlush { .. } => true,
        TaskSpec::Compaction { inputs, .. } => inputs.first().is_none_or(|(l, _)| *l == 0),
        TaskSpec::Cleanup { .. } | TaskSpec::StatisticsUpdate { .. } => false,
    }
}

/// The latest ingest rate reported per table.
#[derive(Debug, Default)]
pub struct IngestRates {
    /// table → (bytes per second, when reported).
    tables: BTreeMap<String, (f64, i64)>,
}

impl IngestRates {
    pub fn record(&mut self, table: &str, bytes_per_sec: f64, now_ms: i64) {
        let rate = if bytes_per_sec.is_finite() {
            bytes_per_sec.max(0.0)
        } else {
            0.0
        };
        self.tables.insert(table.to_owned(), (rate, now_ms));
    }

    pub fn forget(&mut self, table: &str) {
        self.tables.remove(table);
    }

    /// The sum of the reports younger than `max_age_ms` (an older one is from a replayer
    /// that stopped reporting the table).
    pub fn total(&self, now_ms: i64, max_age_ms: i64) -> f64 {
        self.tables
            .values()
            .filter(|(_, at)| now_ms - *at <= max_age_ms)
            .map(|(r, _)| *r)
            .sum()
    }

    /// Per-table rates younger than `max_age_ms`.
    pub fn by_table(&self, now_ms: i64, max_age_ms: i64) -> Vec<(String, f64)> {
        self.tables
            .iter()
            .filter(|(_, (_, at))| now_ms - *at <= max_age_ms)
            .map(|(t, (r, _))| (t.clone(), *r))
            .collect()
    }
}

/// Why deferrable work must wait now, or `None` when it may run.
pub fn defer_reason(
    policy: &TrafficPolicy,
    ingest_bytes_per_sec: f64,
    now_ms: i64,
) -> Option<String> {
    let peak = policy.peak_ingest_bytes_per_sec;
    if peak > 0 && ingest_bytes_per_sec > peak as f64 {
        return Some(format!(
            "deferred: ingest {:.0} B/s is above scheduler.peak_ingest_bytes_per_sec {peak}",
            ingest_bytes_per_sec
        ));
    }
    if !policy.windows.is_open(now_ms) {
        let wait_s = policy.windows.ms_until_open(now_ms) / 1000;
        return Some(format!(
            "deferred: outside scheduler.maintenance_windows {} (next opens in {}h{:02}m)",
            policy.windows,
            wait_s / 3600,
            (wait_s % 3600) / 60
        ));
    }
    None
}

/// Each running task's share of `budget` bytes/s, in the order of `urgent` (one flag per
/// task): weights [`URGENT_WEIGHT`] and 1, at least 1 byte/s each. Empty for no budget.
pub fn io_shares(budget: u64, urgent: &[bool]) -> Vec<u64> {
    if budget == 0 {
        return vec![0; urgent.len()];
    }
    let total: u64 = urgent
        .iter()
        .map(|u| if *u { URGENT_WEIGHT } else { 1 })
        .sum();
    urgent
        .iter()
        .map(|u| {
            let w = if *u { URGENT_WEIGHT } else { 1 };
            (budget.saturating_mul(w) / total.max(1)).max(1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::manifest::FileMeta;

    fn compaction(level: u32) -> TaskSpec {
        TaskSpec::Compaction {
            table: "t".into(),
            inputs: vec![(level, Vec::<FileMeta>::new())],
            output_level: level + 1,
            bottommost: false,
            target_file_size: 1,
            trivial_move: false,
            reason: String::new(),
            wal_inputs: Vec::new(),
        }
    }

    #[test]
    fn flushes_and_l0_compactions_are_urgent_the_rest_deferrable() {
        assert!(is_urgent(&compaction(0)));
        assert!(!is_urgent(&compaction(1)));
        assert!(!is_urgent(&compaction(3)));
        assert!(!is_urgent(&TaskSpec::StatisticsUpdate {
            table: "t".into()
        }));
        assert!(!is_urgent(&TaskSpec::Cleanup {
            table: "t".into(),
            sst_paths: vec![],
            wal_paths: vec![],
            dry_run: false
        }));
    }

    #[test]
    fn peak_ingest_and_closed_windows_defer() {
        let hour = 3_600_000;
        let mut p = TrafficPolicy {
            peak_ingest_bytes_per_sec: 1000,
            windows: MaintenanceWindows::default(),
        };
        assert_eq!(defer_reason(&p, 1000.0, 0), None, "at the threshold: runs");
        let r = defer_reason(&p, 1500.0, 0).expect("deferred");
        assert!(
            r.contains("1500") && r.contains("peak_ingest_bytes_per_sec"),
            "{r}"
        );
        p.peak_ingest_bytes_per_sec = 0;
        assert_eq!(defer_reason(&p, 1e12, 0), None, "0 = no limit");
        p.windows = MaintenanceWindows(vec!["02:00-05:00".parse().expect("valid")]);
        let r = defer_reason(&p, 0.0, 10 * hour).expect("closed at 10:00");
        assert!(r.contains("02:00-05:00") && r.contains("16h00m"), "{r}");
        assert_eq!(defer_reason(&p, 0.0, 3 * hour), None, "open at 03:00");
    }

    #[test]
    fn stale_ingest_reports_do_not_count() {
        let mut r = IngestRates::default();
        r.record("a", 100.0, 0);
        r.record("b", 50.0, 5_000);
        r.record("c", f64::NAN, 5_000);
        assert_eq!(r.total(5_000, 10_000), 150.0);
        assert_eq!(r.total(12_000, 10_000), 50.0, "a's replayer went quiet");
        r.forget("b");
        assert_eq!(r.total(12_000, 10_000), 0.0);
    }

    #[test]
    fn shares_add_up_to_the_budget_and_urgent_work_gets_more() {
        assert_eq!(io_shares(1000, &[true, false]), vec![800, 200]);
        assert_eq!(io_shares(1000, &[false, false]), vec![500, 500]);
        assert_eq!(io_shares(1000, &[true]), vec![1000]);
        assert_eq!(io_shares(0, &[true, false]), vec![0, 0], "unlimited");
        let s = io_shares(2 << 20, &[true, true, false, false, false]);
        assert!(s.iter().sum::<u64>() <= 2 << 20);
        assert!(s.iter().sum::<u64>() >= (2 << 20) - 5);
    }
}
