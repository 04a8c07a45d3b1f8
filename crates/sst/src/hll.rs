//! HyperLogLog sketch of distinct user keys: stored in every SST's properties and merged
//! across files by statistics.
//!
//! A sketch of precision `p` has `2^p` one-byte registers (p = 12: 4 KiB, standard error
//! 1.04/sqrt(4096) ≈ 1.6%). A key's xxh3 hash (the same hash as the bloom filter, see
//! [`crate::bloom::key_hash`]) selects register `h >> (64 - p)`; the register keeps the
//! maximum of `1 + leading zeros` of the remaining `64 - p` bits. Sketches merge by taking
//! the register-wise maximum, so the sketch of a union is exact whatever the overlap.
//!
//! The estimate uses Ertl's improved raw estimator ("New cardinality estimation algorithms
//! for HyperLogLog sketches", 2017), which is unbiased from zero to billions without the
//! empirical bias tables of HLL++.
//!
//! Serialized form: `version u8 (=1) | precision u8 | registers [u8; 2^precision]`.

use crate::bloom::key_hash;

const SERIAL_VERSION: u8 = 1;

/// Problems decoding or merging sketches.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HllError {
    #[error("hyperloglog precision {0} outside 4..=18")]
    BadPrecision(u8),
    #[error("cannot merge hyperloglog sketches of precision {0} and {1}")]
    PrecisionMismatch(u8, u8),
    #[error("malformed hyperloglog sketch: {0}")]
    Malformed(String),
}

/// A mergeable distinct-count sketch.
#[derive(Clone, PartialEq, Eq)]
pub struct Hll {
    precision: u8,
    registers: Vec<u8>,
}

impl std::fmt::Debug for Hll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hll")
            .field("precision", &self.precision)
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl Default for Hll {
    fn default() -> Self {
        Self {
            precision: Self::DEFAULT_PRECISION,
            registers: vec![0; 1 << Self::DEFAULT_PRECISION],
        }
    }
}

impl Hll {
    /// Precision of the sketches the SST builder writes (4 KiB, ~1.6% standard error).
    pub const DEFAULT_PRECISION: u8 = 12;

    /// An empty sketch with `2^precision` registers, `precision` in 4..=18.
    pub fn new(precision: u8) -> Result<Self, HllError> {
        if !(4..=18).contains(&precision) {
            return Err(HllError::BadPrecision(precision));
        }
        Ok(Self {
            precision,
            registers: vec![0; 1 << precision],
        })
    }

    pub fn precision(&self) -> u8 {
        self.precision
    }

    /// Largest register value: `64 - p` bits can hold at most `64 - p` leading zeros.
    fn max_rank(&self) -> u8 {
        64 - self.precision + 1
    }

    /// Adds a user key.
    pub fn add(&mut self, user_key: &[u8]) {
        self.add_hash(key_hash(user_key));
    }

    /// Adds a key by its [`key_hash`].
    #[inline]
    pub fn add_hash(&mut self, h: u64) {
        let p = u32::from(self.precision);
        let index = (h >> (64 - p)) as usize;
        // A guard bit below the remaining 64 - p bits caps the rank at 64 - p + 1.
        let rest = (h << p) | (1u64 << (p - 1));
        let rank = (rest.leading_zeros() + 1) as u8;
        if let Some(r) = self.registers.get_mut(index)
            && rank > *r
        {
            *r = rank;
        }
    }

    /// Folds `other` into `self`: afterwards `self` estimates the union.
    pub fn merge(&mut self, other: &Hll) -> Result<(), HllError> {
        if self.precision != other.precision {
            return Err(HllError::PrecisionMismatch(self.precision, other.precision));
        }
        for (a, &b) in self.registers.iter_mut().zip(&other.registers) {
            *a = (*a).max(b);
        }
        Ok(())
    }

    /// Estimated number of distinct keys added (to this sketch or any merged into it).
    pub fn estimate(&self) -> f64 {
        let m = self.registers.len() as f64;
        let q = usize::from(64 - self.precision);
        // Histogram of register values 0..=q+1.
        let mut counts = vec![0u32; q + 2];
        for &r in &self.registers {
            if let Some(c) = counts.get_mut(usize::from(r)) {
                *c += 1;
            }
        }
        let count = |k: usize| f64::from(counts.get(k).copied().unwrap_or(0));
        if count(0) == m {
            return 0.0;
        }
        let mut z = m * tau(1.0 - count(q + 1) / m);
        for k in (1..=q).rev() {
            z = 0.5 * (z + count(k));
        }
        z += m * sigma(count(0) / m);
        let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
        alpha_inf * m * m / z
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.registers.len());
        out.push(SERIAL_VERSION);
        out.push(self.precision);
        out.extend_from_slice(&self.registers);
        out
    }

    /// Decodes [`Self::to_bytes`] output, validating length and register values.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HllError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| HllError::Malformed("empty".to_owned()))?;
        if version != SERIAL_VERSION {
            return Err(HllError::Malformed(format!("unknown version {version}")));
        }
        let (&precision, registers) = rest
            .split_first()
            .ok_or_else(|| HllError::Malformed("missing precision".to_owned()))?;
        let mut sketch = Self::new(precision)?;
        if registers.len() != sketch.registers.len() {
            return Err(HllError::Malformed(format!(
                "{} registers for precision {precision}",
                registers.len()
            )));
        }
        let max = sketch.max_rank();
        if let Some(bad) = registers.iter().find(|&&r| r > max) {
            return Err(HllError::Malformed(format!(
                "register value {bad} above {max}"
            )));
        }
        sketch.registers.copy_from_slice(registers);
        Ok(sketch)
    }
}

/// Ertl's sigma function (series for the contribution of empty registers).
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let prev = z;
        z += x * y;
        y += y;
        if z == prev {
            return z;
        }
    }
}

/// Ertl's tau function (correction for saturated registers).
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let prev = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == prev {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sketch(range: std::ops::Range<u64>) -> Hll {
        let mut h = Hll::default();
        for i in range {
            h.add(format!("user-key-{i}").as_bytes());
        }
        h
    }

    fn rel_err(est: f64, actual: f64) -> f64 {
        (est - actual).abs() / actual
    }

    #[test]
    fn accuracy_on_100k_distinct_keys() {
        let h = sketch(0..100_000);
        let e = rel_err(h.estimate(), 100_000.0);
        eprintln!(
            "hll estimate {} for 100000 ({:.2}% off)",
            h.estimate(),
            e * 100.0
        );
        assert!(e < 0.03, "estimate {} off by {e}", h.estimate());
        // Adding the same keys again changes nothing.
        let mut again = h.clone();
        for i in 0..100_000u64 {
            again.add(format!("user-key-{i}").as_bytes());
        }
        assert_eq!(again, h);
    }

    #[test]
    fn accuracy_across_the_range() {
        assert_eq!(Hll::default().estimate(), 0.0);
        let mut total = 0.0;
        let sizes = [10u64, 100, 1_000, 5_000, 10_000, 20_000, 50_000, 200_000];
        for n in sizes {
            let e = rel_err(sketch(0..n).estimate(), n as f64);
            assert!(e < 0.05, "n={n}: off by {e}");
            total += e;
        }
        assert!(total / (sizes.len() as f64) < 0.025);
    }

    #[test]
    fn merge_estimates_the_union() {
        let mut a = sketch(0..60_000);
        let b = sketch(40_000..100_000);
        a.merge(&b).expect("same precision");
        let e = rel_err(a.estimate(), 100_000.0);
        assert!(e < 0.03, "merged estimate off by {e}");
        // Merging is the same as adding everything to one sketch.
        assert_eq!(a, sketch(0..100_000));
        let other = Hll::new(10).expect("valid");
        assert_eq!(a.merge(&other), Err(HllError::PrecisionMismatch(12, 10)));
    }

    #[test]
    fn serialization_round_trips_and_validates() {
        let h = sketch(0..1000);
        let bytes = h.to_bytes();
        assert_eq!(bytes.len(), 2 + 4096);
        assert_eq!(Hll::from_bytes(&bytes).expect("valid"), h);
        assert!(Hll::from_bytes(&[]).is_err());
        assert!(Hll::from_bytes(&[1]).is_err());
        assert!(Hll::from_bytes(&[2, 12]).is_err());
        assert!(Hll::from_bytes(&bytes[..100]).is_err());
        let mut bad = bytes.clone();
        bad[10] = 60;
        assert!(Hll::from_bytes(&bad).is_err());
        assert_eq!(Hll::new(3), Err(HllError::BadPrecision(3)));
        assert!(Hll::new(19).is_err());
    }
}
