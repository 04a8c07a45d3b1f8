//! Fault injection: a [`crate::Storage`] opened with a [`FaultConfig`] fails or delays a
//! seeded fraction of its operations the way a real object store does — a 503 before the
//! request is applied, a timeout after a long wait, a connection reset *after* a write was
//! applied (the caller cannot tell it succeeded), or just a slow answer.
//!
//! It exists for resilience tests (`storage.faults` in the config of a service under test):
//! every service must turn these into retries, never into lost or duplicated work. Each
//! decision is drawn from a counter-based generator seeded by [`FaultConfig::seed`], so a
//! single-threaded run replays the same faults; every injected fault is logged at `warn`,
//! counted in [`FaultInjector::counts`] and in `storage_faults_injected_total{op,kind}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::StorageError;

/// Rates of each kind of fault, each a probability in `0.0..=1.0`, drawn per operation.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Seed of the decisions.
    pub seed: u64,
    /// The store answers "503 Service Unavailable" before doing anything.
    pub error_rate: f64,
    /// The store does nothing, and the request fails after `delay`.
    pub timeout_rate: f64,
    /// A write (put, delete, completed upload) is applied, then the connection resets:
    /// the caller sees an error. Reads get a reset before any data instead.
    pub reset_rate: f64,
    /// The operation succeeds after an extra `delay`.
    pub slow_rate: f64,
    /// The delay of timeouts and slow operations.
    pub delay: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            error_rate: 0.0,
            timeout_rate: 0.0,
            reset_rate: 0.0,
            slow_rate: 0.0,
            delay: Duration::from_millis(200),
        }
    }
}

impl FaultConfig {
    /// True when some fault has a non-zero rate.
    pub fn is_active(&self) -> bool {
        self.error_rate > 0.0
            || self.timeout_rate > 0.0
            || self.reset_rate > 0.0
            || self.slow_rate > 0.0
    }

    /// Checks that every rate is a probability and that together they are at most 1.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_rate", self.error_rate),
            ("timeout_rate", self.timeout_rate),
            ("reset_rate", self.reset_rate),
            ("slow_rate", self.slow_rate),
        ];
        for (name, rate) in rates {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        let sum: f64 = rates.iter().map(|(_, r)| r).sum();
        if sum > 1.0 {
            return Err(format!("the rates add up to {sum}, more than 1"));
        }
        Ok(())
    }
}

/// What one operation suffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    Error,
    Timeout,
    Reset,
    Slow,
}

impl Fault {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Error => "error",
            Fault::Timeout => "timeout",
            Fault::Reset => "reset",
            Fault::Slow => "slow",
        }
    }
}

/// How many faults of each kind were injected so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub operations: u64,
    pub errors: u64,
    pub timeouts: u64,
    pub resets: u64,
    pub slow: u64,
}

impl FaultCounts {
    /// Faults that made an operation fail.
    pub fn failures(&self) -> u64 {
        self.errors + self.timeouts + self.resets
    }
}

/// Draws faults for a [`crate::Storage`]; shared by its clones.
#[derive(Debug)]
pub struct FaultInjector {
    config: FaultConfig,
    next: AtomicU64,
    counts: [AtomicU64; 5],
}

impl FaultInjector {
    pub fn new(config: FaultConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            next: AtomicU64::new(0),
            counts: Default::default(),
        })
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// The fault of the next operation.
    pub fn draw(&self) -> Fault {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let fault = pick(
            &self.config,
            unit(splitmix64(self.config.seed ^ splitmix64(n))),
        );
        let slot = match fault {
            Fault::None => 0,
            Fault::Error => 1,
            Fault::Timeout => 2,
            Fault::Reset => 3,
            Fault::Slow => 4,
        };
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        fault
    }

    pub fn counts(&self) -> FaultCounts {
        let c = |i: usize| self.counts[i].load(Ordering::Relaxed);
        FaultCounts {
            operations: (0..5).map(c).sum(),
            errors: c(1),
            timeouts: c(2),
            resets: c(3),
            slow: c(4),
        }
    }

    /// Acts out the part of `fault` that comes before the operation: waits for timeouts and
    /// slow answers, and fails for errors and timeouts (and for resets of reads, which
    /// carry no data to apply).
    pub(crate) async fn before(
        &self,
        fault: Fault,
        op: &'static str,
        path: &str,
        is_write: bool,
    ) -> Result<(), StorageError> {
        if fault == Fault::None {
            return Ok(());
        }
        metrics::counter!("storage_faults_injected_total", "op" => op, "kind" => fault.label())
            .increment(1);
        tracing::warn!(op, path, fault = fault.label(), "injected storage fault");
        match fault {
            Fault::None => Ok(()),
            Fault::Slow => {
                tokio::time::sleep(self.config.delay).await;
                Ok(())
            }
            Fault::Timeout => {
                tokio::time::sleep(self.config.delay).await;
                Err(injected(op, path, "request timed out (injected fault)"))
            }
            Fault::Error => Err(injected(
                op,
                path,
                "503 Service Unavailable: slow down (injected fault)",
            )),
            Fault::Reset if !is_write => Err(injected(
                op,
                path,
                "connection reset by peer (injected fault)",
            )),
            Fault::Reset => Ok(()),
        }
    }

    /// The part after a write was applied: a reset turns its success into an error.
    pub(crate) fn after_write(
        &self,
        fault: Fault,
        op: &'static str,
        path: &str,
    ) -> Result<(), StorageError> {
        if fault == Fault::Reset {
            return Err(injected(
                op,
                path,
                "connection reset by peer after the request was sent (injected fault)",
            ));
        }
        Ok(())
    }
}

fn injected(op: &'static str, path: &str, message: &'static str) -> StorageError {
    StorageError::ObjectStore {
        op,
        path: path.to_owned(),
        source: Arc::new(object_store::Error::Generic {
            store: "fault-injection",
            source: message.into(),
        }),
    }
}

/// The fault for a uniform draw `u` in `[0, 1)`: the rates split the interval in order.
fn pick(config: &FaultConfig, u: f64) -> Fault {
    let mut edge = 0.0;
    for (rate, fault) in [
        (config.error_rate, Fault::Error),
        (config.timeout_rate, Fault::Timeout),
        (config.reset_rate, Fault::Reset),
        (config.slow_rate, Fault::Slow),
    ] {
        edge += rate;
        if u < edge {
            return fault;
        }
    }
    Fault::None
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "tests fail loudly")]
mod tests {
    use super::*;

    fn cfg(seed: u64) -> FaultConfig {
        FaultConfig {
            seed,
            error_rate: 0.1,
            timeout_rate: 0.05,
            reset_rate: 0.05,
            slow_rate: 0.1,
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn rates_are_met_and_seeds_replay() {
        let a = FaultInjector::new(cfg(7));
        let draws: Vec<Fault> = (0..20_000).map(|_| a.draw()).collect();
        let c = a.counts();
        assert_eq!(c.operations, 20_000);
        let near = |n: u64, rate: f64| (n as f64 / 20_000.0 - rate).abs() < 0.01;
        assert!(near(c.errors, 0.1), "{c:?}");
        assert!(near(c.timeouts, 0.05), "{c:?}");
        assert!(near(c.resets, 0.05), "{c:?}");
        assert!(near(c.slow, 0.1), "{c:?}");
        let b = FaultInjector::new(cfg(7));
        assert!(
            draws.iter().all(|d| *d == b.draw()),
            "same seed, same faults"
        );
        let other = FaultInjector::new(cfg(8));
        assert!(
            draws.iter().any(|d| *d != other.draw()),
            "another seed differs"
        );
    }

    #[test]
    fn validation_names_the_bad_rate() {
        let mut c = cfg(1);
        assert_eq!(c.validate(), Ok(()));
        c.reset_rate = 1.5;
        assert!(c.validate().unwrap_err().contains("reset_rate"));
        c.reset_rate = 0.5;
        c.error_rate = 0.6;
        assert!(c.validate().unwrap_err().contains("more than 1"));
        assert!(!FaultConfig::default().is_active());
    }

    #[tokio::test]
    async fn reset_applies_writes_but_fails_reads_up_front() {
        let f = FaultInjector::new(cfg(1));
        assert!(f.before(Fault::Reset, "put", "p", true).await.is_ok());
        assert!(f.after_write(Fault::Reset, "put", "p").is_err());
        let err = f.before(Fault::Reset, "get", "p", false).await.unwrap_err();
        assert!(err.to_string().contains("connection reset"), "{err}");
        let err = f
            .before(Fault::Error, "list", "dir", false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("503"), "{err}");
        assert!(err.to_string().contains("dir"), "{err}");
    }
}
