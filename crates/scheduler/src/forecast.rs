//! Compaction debt and the stall forecast: how many bytes compaction still owes a table,
//! how fast it has been paying them back, how fast L0 is growing, and so how many seconds
//! remain until L0 reaches the file count at which writes would stall.
//!
//! Pure: the scheduler records samples as it commits flushes and compactions (time passed
//! in) and asks for a forecast over a sliding window.

use std::collections::{BTreeMap, VecDeque};

use lsm::compaction::{LevelConfig, level_targets};
use lsm::manifest::Version;

/// Sliding window of the rates.
pub const WINDOW_MS: i64 = 60_000;

/// The forecast of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub table: String,
    /// Bytes compaction owes: every level's excess over its target, plus all of L0 once
    /// it reached the trigger.
    pub debt_bytes: u64,
    /// Compaction input bytes per second over the window.
    pub drain_bytes_per_sec: f64,
    /// Net L0 file growth per second over the window (negative when L0 shrinks).
    pub l0_growth_files_per_sec: f64,
    pub l0_files: u32,
    pub l0_stop_threshold: u32,
    /// Seconds until L0 reaches the stop threshold at the current growth; negative when
    /// L0 is not growing.
    pub seconds_to_stall: f64,
}

#[derive(Debug, Default)]
struct History {
    /// (time, L0 file count after a change)
    l0: VecDeque<(i64, u32)>,
    /// (time, compaction input bytes)
    compacted: VecDeque<(i64, u64)>,
}

/// Samples per table.
#[derive(Debug, Default)]
pub struct Tracker {
    tables: BTreeMap<String, History>,
}

impl Tracker {
    fn trim(h: &mut History, now_ms: i64) {
        // Keep one L0 sample older than the window: the count at the window's start.
        while h.l0.len() > 1 && h.l0.get(1).is_some_and(|(t, _)| *t <= now_ms - WINDOW_MS) {
            h.l0.pop_front();
        }
        while h
            .compacted
            .front()
            .is_some_and(|(t, _)| *t <= now_ms - WINDOW_MS)
        {
            h.compacted.pop_front();
        }
    }

    /// Records the table's L0 file count after a change.
    pub fn record_l0(&mut self, table: &str, l0_files: u32, now_ms: i64) {
        let h = self.tables.entry(table.to_owned()).or_default();
        h.l0.push_back((now_ms, l0_files));
        Self::trim(h, now_ms);
    }

    /// Records a committed compaction's input bytes.
    pub fn record_compaction(&mut self, table: &str, input_bytes: u64, now_ms: i64) {
        let h = self.tables.entry(table.to_owned()).or_default();
        h.compacted.push_back((now_ms, input_bytes));
        Self::trim(h, now_ms);
    }

    pub fn forget(&mut self, table: &str) {
        self.tables.remove(table);
    }

    /// The forecast of `table` whose current version is `version`.
    pub fn forecast(
        &self,
        table: &str,
        version: &Version,
        config: &LevelConfig,
        l0_stop_threshold: u32,
        now_ms: i64,
    ) -> Forecast {
        let l0_files = version.levels.first().map_or(0, |l| l.len()) as u32;
        let targets = level_targets(version, config);
        let mut debt: u64 = (1..version.levels.len())
            .map(|l| {
                let target = targets.target_bytes.get(l).copied().flatten();
                match target {
                    Some(t) => version.level_bytes(l).saturating_sub(t),
                    None => 0,
                }
            })
            .sum();
        if l0_files >= config.trigger_threshold {
            debt += version.level_bytes(0);
        }
        let window_s = WINDOW_MS as f64 / 1000.0;
        let (growth, drain) = match self.tables.get(table) {
            None => (0.0, 0.0),
            Some(h) => {
                let start =
                    h.l0.iter()
                        .rev()
                        .find(|(t, _)| *t <= now_ms - WINDOW_MS)
                        .or(h.l0.front())
                        .copied();
                let growth = match start {
                    Some((t0, c0)) => {
                        let span_s = ((now_ms - t0) as f64 / 1000.0).clamp(1.0, window_s);
                        (f64::from(l0_files) - f64::from(c0)) / span_s
                    }
                    None => 0.0,
                };
                let drained: u64 = h
                    .compacted
                    .iter()
                    .filter(|(t, _)| *t > now_ms - WINDOW_MS)
                    .map(|(_, b)| *b)
                    .sum();
                (growth, drained as f64 / window_s)
            }
        };
        let seconds_to_stall = if growth > 0.0 {
            (f64::from(l0_stop_threshold.saturating_sub(l0_files)) / growth).max(0.0)
        } else {
            -1.0
        };
        Forecast {
            table: table.to_owned(),
            debt_bytes: debt,
            drain_bytes_per_sec: drain,
            l0_growth_files_per_sec: growth,
            l0_files,
            l0_stop_threshold,
            seconds_to_stall,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lsm::manifest::{FileMeta, VersionEdit};

    fn file(id: u64, size: u64) -> FileMeta {
        FileMeta {
            id,
            size,
            smallest: Bytes::from_static(b"a"),
            largest: Bytes::from_static(b"z"),
            smallest_seq: id,
            largest_seq: id,
            entries: 1,
            tombstones: 0,
        }
    }

    fn with_l0(n: u64) -> Version {
        Version::new(4)
            .apply(&VersionEdit {
                removed: vec![],
                added: (1..=n).map(|i| (0, file(i, 1 << 20))).collect(),
            })
            .expect("fixture")
    }

    #[test]
    fn growing_l0_without_compaction_approaches_a_stall() {
        let cfg = LevelConfig {
            trigger_threshold: 4,
            ..LevelConfig::default()
        };
        let mut t = Tracker::default();
        // One flush every 2 s, nothing compacted.
        for i in 0..=10u32 {
            t.record_l0("t", i, i64::from(i) * 2000);
        }
        let f = t.forecast("t", &with_l0(10), &cfg, 36, 20_000);
        assert!((f.l0_growth_files_per_sec - 0.5).abs() < 1e-9, "{f:?}");
        assert!((f.seconds_to_stall - 52.0).abs() < 1e-9, "{f:?}");
        assert_eq!(
            f.debt_bytes,
            10 << 20,
            "all of L0 is owed once it passed the trigger"
        );
        assert_eq!(f.drain_bytes_per_sec, 0.0);
    }

    #[test]
    fn draining_compaction_recovers_the_forecast() {
        let cfg = LevelConfig::default();
        let mut t = Tracker::default();
        t.record_l0("t", 8, 0);
        t.record_compaction("t", 60 << 20, 30_000);
        t.record_l0("t", 0, 30_000);
        let f = t.forecast("t", &Version::new(4), &cfg, 36, 60_000);
        assert!(f.l0_growth_files_per_sec < 0.0, "{f:?}");
        assert_eq!(f.seconds_to_stall, -1.0, "not approaching a stall");
        assert!(
            (f.drain_bytes_per_sec - f64::from(1 << 20)).abs() < 1.0,
            "{f:?}"
        );
        assert_eq!(f.debt_bytes, 0);
    }

    #[test]
    fn samples_older_than_the_window_are_forgotten() {
        let mut t = Tracker::default();
        t.record_compaction("t", 1000, 0);
        t.record_compaction("t", 1000, WINDOW_MS + 1);
        let f = t.forecast(
            "t",
            &Version::new(4),
            &LevelConfig::default(),
            36,
            WINDOW_MS + 2,
        );
        assert!(
            (f.drain_bytes_per_sec - 1000.0 / 60.0).abs() < 1e-9,
            "{f:?}"
        );
    }
}
