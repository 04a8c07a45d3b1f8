//! The IO budget: a token bucket on bytes written, shared by every thread it limits.
//!
//! A compaction's writes are what competes with the engine's foreground IO, so they are
//! what is limited (reads follow writes closely: the merge reads about what it writes,
//! more only where it drops data). The bucket refills at `bytes_per_sec` and holds at most
//! a tenth of a second of it; a writer takes what it wrote and, when that leaves the bucket
//! in debt, sleeps on its (blocking) thread until the debt is repaid. Writers that share a
//! limiter (the subcompactions of one attempt, or every attempt of a worker) share the
//! budget.
//!
//! The rate can change while writers use it ([`RateLimiter::set_bytes_per_sec`]): the
//! scheduler rebalances `scheduler.io_budget` among running flushes and compactions and
//! sends each attempt its new share with its worker's heartbeat reply. Flushers and
//! compactors both pace with it, so it lives here rather than in either service.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The burst the bucket holds, as a fraction of a second's budget.
const BURST: f64 = 0.1;
/// Longest single sleep, so that a cancellation is noticed promptly.
const MAX_NAP: Duration = Duration::from_millis(100);

/// A token bucket of bytes; see the module docs.
#[derive(Debug)]
pub struct RateLimiter {
    bytes_per_sec: AtomicU64,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes that may be written now; negative while in debt.
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec`, or `None` for 0 (unlimited).
    pub fn new(bytes_per_sec: u64) -> Option<Self> {
        Self::starting_at(bytes_per_sec, Instant::now())
    }

    fn starting_at(bytes_per_sec: u64, now: Instant) -> Option<Self> {
        (bytes_per_sec > 0).then(|| {
            let rate = bytes_per_sec as f64;
            Self {
                bytes_per_sec: AtomicU64::new(bytes_per_sec),
                bucket: Mutex::new(Bucket {
                    tokens: rate * BURST,
                    last: now,
                }),
            }
        })
    }

    pub fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec.load(Ordering::Relaxed)
    }

    /// Changes the rate from now on (0 is ignored: a limited attempt stays limited).
    pub fn set_bytes_per_sec(&self, bytes_per_sec: u64) {
        if bytes_per_sec > 0 {
            self.bytes_per_sec.store(bytes_per_sec, Ordering::Relaxed);
        }
    }

    /// Takes `bytes` at `now`; returns how long the caller must wait to stay in budget.
    fn take_at(&self, bytes: u64, now: Instant) -> Duration {
        let rate = self.bytes_per_sec().max(1) as f64;
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.last = b.last.max(now);
        b.tokens = (b.tokens + elapsed * rate).min(rate * BURST);
        b.tokens -= bytes as f64;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Takes `bytes` and sleeps (blocking) until they fit the budget. False if `cancel`
    /// fires meanwhile.
    #[must_use = "false means the attempt was cancelled"]
    pub fn acquire(&self, bytes: u64, cancel: &CancellationToken) -> bool {
        let deadline = Instant::now() + self.take_at(bytes, Instant::now());
        loop {
            if cancel.is_cancelled() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(MAX_NAP));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_unlimited() {
        assert!(RateLimiter::new(0).is_none());
    }

    #[test]
    fn a_burst_passes_then_writers_wait_for_the_refill() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let l = RateLimiter::starting_at(1000, t0).expect("limited");
        // The bucket starts with 100 bytes (0.1 s of budget).
        assert_eq!(l.take_at(100, t0), Duration::ZERO);
        // 200 more: 200 bytes in debt, 0.2 s at 1000 B/s.
        assert_eq!(l.take_at(200, t0), ms(200));
        // After 0.2 s the debt is repaid: 50 more wait 50 ms.
        assert_eq!(l.take_at(50, t0 + ms(200)), ms(50));
        // Idle time refills only up to the burst.
        assert_eq!(l.take_at(100, t0 + ms(10_000)), Duration::ZERO);
        assert_eq!(l.take_at(100, t0 + ms(10_000)), ms(100));
    }

    #[test]
    fn a_new_rate_applies_from_the_next_take() {
        let t0 = Instant::now();
        let l = RateLimiter::starting_at(1000, t0).expect("limited");
        assert_eq!(l.take_at(100, t0), Duration::ZERO);
        l.set_bytes_per_sec(2000);
        l.set_bytes_per_sec(0);
        assert_eq!(l.bytes_per_sec(), 2000, "0 is ignored");
        // 200 bytes of debt at 2000 B/s: 0.1 s.
        assert_eq!(l.take_at(200, t0), Duration::from_millis(100));
    }

    #[test]
    fn acquire_sleeps_about_the_debt_and_stops_when_cancelled() {
        let l = RateLimiter::new(10_000).expect("limited");
        let cancel = CancellationToken::new();
        let start = Instant::now();
        // 1000 burst + 1000 debt: 0.1 s.
        assert!(l.acquire(2000, &cancel), "not cancelled");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(90), "{waited:?}");
        cancel.cancel();
        assert!(!l.acquire(1_000_000, &cancel));
    }
}
