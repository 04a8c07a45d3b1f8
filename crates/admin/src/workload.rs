//! The load generator's workload: which writes `storage-admin load` sends, as a pure
//! function of its flags and seed (no clock, no IO), so two runs with the same seed write
//! the same keys and values in the same per-table order.
//!
//! # Vocabulary
//!
//! - **spec** ([`LoadSpec`]): the flags, validated once ([`LoadSpec::validate`]).
//! - **op** ([`Op`]): one write, a put or a delete.
//! - **table workload** ([`TableWorkload`]): the ops of one table, in the order they are
//!   generated and cut into batches. The `--keys` writes are split evenly over the tables;
//!   each table has its own random stream derived from the seed and the table's position
//!   on the command line.
//!
//! A write is, with probability `delete_ratio`, a delete of an already-written key; with
//! probability `overwrite_ratio`, a put to an already-written key; otherwise a put to a
//! fresh key (also whenever the table has no written key yet). "Already written" means
//! written at some point: a delete may hit a key that is already deleted. Fresh keys are
//! `key-{:012}` of a seeded permutation of 0, 1, 2, …: distinct, and not in ascending
//! order, so flushed SSTs overlap as under a real workload.

/// Keys are `key-` + 12 decimal digits: this many distinct keys exist.
pub const KEY_SPACE: u64 = 1_000_000_000_000;

/// The largest value `--value-size` accepts.
pub const MAX_VALUE_SIZE: usize = 16 * 1024 * 1024;

/// The largest batch (keys + values) `--batch-size` × `--value-size` may make.
pub const MAX_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// Bytes of a generated key.
pub const KEY_LEN: usize = 16;

/// The load generator's flags.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    pub tables: Vec<String>,
    /// Writes in total, over all tables (`--keys`).
    pub writes: u64,
    pub value_size: usize,
    pub overwrite_ratio: f64,
    pub delete_ratio: f64,
    /// Writes per batch (one WAL append each).
    pub batch_size: usize,
    /// Batches in flight per table.
    pub concurrency: usize,
    /// Writes per second over all tables; 0 = unlimited.
    pub rate: f64,
    pub seed: u64,
}

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            tables: Vec::new(),
            writes: 10_000,
            value_size: 100,
            overwrite_ratio: 0.0,
            delete_ratio: 0.0,
            batch_size: 100,
            concurrency: 8,
            rate: 0.0,
            seed: 1,
        }
    }
}

/// A flag value the load generator refuses; the message names the flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecError {
    #[error("no table given: name at least one")]
    NoTables,
    #[error("table {0} is named twice")]
    DuplicateTable(String),
    #[error("{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("--keys {0}: at most {KEY_SPACE} writes (key-{{:012}} keys)")]
    TooManyWrites(u64),
    #[error("{flag} {value}: must be between 0 and 1")]
    Ratio { flag: &'static str, value: f64 },
    #[error(
        "--overwrite-ratio {overwrite} + --delete-ratio {delete} = {}: the ratios must add up to at most 1",
        overwrite + delete
    )]
    RatioSum { overwrite: f64, delete: f64 },
    #[error("--value-size {0}: at most {MAX_VALUE_SIZE} bytes")]
    ValueTooLarge(usize),
    #[error(
        "--batch-size {batch_size} × --value-size {value_size}: a batch of about {bytes} bytes, more than {MAX_BATCH_BYTES}"
    )]
    BatchTooLarge {
        batch_size: usize,
        value_size: usize,
        bytes: usize,
    },
    #[error("--rate {0}: must be 0 (unlimited) or a positive number of writes per second")]
    Rate(f64),
}

impl LoadSpec {
    /// Checks every flag; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.tables.is_empty() {
            return Err(SpecError::NoTables);
        }
        for (i, t) in self.tables.iter().enumerate() {
            if self.tables[..i].contains(t) {
                return Err(SpecError::DuplicateTable(t.clone()));
            }
        }
        for (flag, n) in [
            ("--keys", self.writes),
            ("--value-size", self.value_size as u64),
            ("--batch-size", self.batch_size as u64),
            ("--concurrency", self.concurrency as u64),
        ] {
            if n == 0 {
                return Err(SpecError::Zero { flag });
            }
        }
        if self.writes > KEY_SPACE {
            return Err(SpecError::TooManyWrites(self.writes));
        }
        for (flag, value) in [
            ("--overwrite-ratio", self.overwrite_ratio),
            ("--delete-ratio", self.delete_ratio),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(SpecError::Ratio { flag, value });
            }
        }
        if self.overwrite_ratio + self.delete_ratio > 1.0 + 1e-9 {
            return Err(SpecError::RatioSum {
                overwrite: self.overwrite_ratio,
                delete: self.delete_ratio,
            });
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(SpecError::ValueTooLarge(self.value_size));
        }
        let bytes = self
            .batch_size
            .saturating_mul(self.value_size.saturating_add(KEY_LEN + 8));
        if bytes > MAX_BATCH_BYTES {
            return Err(SpecError::BatchTooLarge {
                batch_size: self.batch_size,
                value_size: self.value_size,
                bytes,
            });
        }
        if !self.rate.is_finite() || self.rate < 0.0 {
            return Err(SpecError::Rate(self.rate));
        }
        Ok(())
    }

    /// How many of the writes each table gets (in command-line order): an even split, the
    /// first tables taking one more when it does not divide.
    pub fn writes_per_table(&self) -> Vec<u64> {
        let n = self.tables.len() as u64;
        if n == 0 {
            return Vec::new();
        }
        (0..n)
            .map(|i| self.writes / n + u64::from(i < self.writes % n))
            .collect()
    }
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: String },
    Delete { key: String },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }

    /// `None` for a delete.
    pub fn value(&self) -> Option<&str> {
        match self {
            Op::Put { value, .. } => Some(value),
            Op::Delete { .. } => None,
        }
    }

    /// Key and value bytes.
    pub fn bytes(&self) -> usize {
        self.key().len() + self.value().map_or(0, str::len)
    }
}

/// The key name of key number `n`.
pub fn key_name(n: u64) -> String {
    format!("key-{n:012}")
}

/// SplitMix64: a tiny seeded generator whose output is fixed forever (unlike `rand`'s
/// `StdRng`, which may change between versions), so a seed names the same workload.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for a workload, and never divides by zero.
        ((u128::from(self.next_u64()) * u128::from(n.max(1))) >> 64) as u64
    }
}

fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded permutation of `[0, KEY_SPACE)`: a 4-round Feistel network over 40 bits,
/// cycle-walked back into the key space. Distinct inputs give distinct keys.
#[derive(Debug, Clone)]
pub struct KeyPermutation {
    round_keys: [u64; 4],
}

impl KeyPermutation {
    const HALF_BITS: u32 = 20;
    const HALF_MASK: u64 = (1 << Self::HALF_BITS) - 1;

    pub fn new(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        Self {
            round_keys: [
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
                rng.next_u64(),
            ],
        }
    }

    /// The key number of the `i`-th fresh key; `i < KEY_SPACE`.
    pub fn apply(&self, i: u64) -> u64 {
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < KEY_SPACE {
                return x;
            }
        }
    }

    fn feistel(&self, x: u64) -> u64 {
        let mut left = (x >> Self::HALF_BITS) & Self::HALF_MASK;
        let mut right = x & Self::HALF_MASK;
        for k in self.round_keys {
            let f = mix64(right ^ k) & Self::HALF_MASK;
            (left, right) = (right, left ^ f);
        }
        (left << Self::HALF_BITS) | right
    }
}

/// The ops of one table, generated in order.
#[derive(Debug, Clone)]
pub struct TableWorkload {
    table_index: usize,
    rng: SplitMix64,
    keys: KeyPermutation,
    overwrite_ratio: f64,
    delete_ratio: f64,
    value_size: usize,
    batch_size: usize,
    /// Ops this table still has to generate.
    remaining: u64,
    /// Ops generated so far.
    generated: u64,
    /// Fresh keys written so far: the already-written keys are fresh keys `0..written`.
    written: u64,
}

impl TableWorkload {
    /// The workload of `spec.tables[table_index]`, with `writes` ops.
    pub fn new(spec: &LoadSpec, table_index: usize, writes: u64) -> Self {
        let table_seed = mix64(spec.seed ^ mix64(table_index as u64 + 1));
        Self {
            table_index,
            rng: SplitMix64::new(table_seed),
            keys: KeyPermutation::new(table_seed ^ 0x6b65_7973),
            overwrite_ratio: spec.overwrite_ratio,
            delete_ratio: spec.delete_ratio,
            value_size: spec.value_size,
            batch_size: spec.batch_size.max(1),
            remaining: writes,
            generated: 0,
            written: 0,
        }
    }

    pub fn table_index(&self) -> usize {
        self.table_index
    }

    /// Ops not generated yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next write, `None` when the table's share is done.
    pub fn next_op(&mut self) -> Option<Op> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let n = self.generated;
        self.generated += 1;
        let roll = self.rng.next_f64();
        if self.written > 0 && roll < self.delete_ratio {
            let key = key_name(self.keys.apply(self.rng.below(self.written)));
            return Some(Op::Delete { key });
        }
        let key = if self.written > 0 && roll < self.delete_ratio + self.overwrite_ratio {
            key_name(self.keys.apply(self.rng.below(self.written)))
        } else {
            self.written += 1;
            key_name(self.keys.apply(self.written - 1))
        };
        let value = self.value(n);
        Some(Op::Put { key, value })
    }

    /// The next batch of up to `batch_size` ops, `None` when done.
    pub fn next_batch(&mut self) -> Option<Vec<Op>> {
        let n = self.remaining.min(self.batch_size as u64) as usize;
        if n == 0 {
            return None;
        }
        Some((0..n).filter_map(|_| self.next_op()).collect())
    }

    /// A value of `value_size` printable bytes that starts with the op's number in this
    /// table (so versions of a key differ), then seeded filler.
    fn value(&mut self, n: u64) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut v = format!("w{n:x}.");
        v.truncate(self.value_size);
        while v.len() < self.value_size {
            let r = self.rng.next_u64();
            for shift in (0..60).step_by(6) {
                if v.len() == self.value_size {
                    break;
                }
                let i = ((r >> shift) & 63) as usize % ALPHABET.len();
                v.push(char::from(ALPHABET[i]));
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec {
            tables: vec!["a".into(), "b".into()],
            writes: 2000,
            value_size: 20,
            overwrite_ratio: 0.3,
            delete_ratio: 0.1,
            batch_size: 7,
            ..LoadSpec::default()
        }
    }

    fn all_ops(spec: &LoadSpec) -> Vec<Vec<Op>> {
        spec.writes_per_table()
            .into_iter()
            .enumerate()
            .map(|(i, n)| {
                let mut w = TableWorkload::new(spec, i, n);
                let mut ops = Vec::new();
                while let Some(batch) = w.next_batch() {
                    assert!(!batch.is_empty() && batch.len() <= spec.batch_size);
                    ops.extend(batch);
                }
                ops
            })
            .collect()
    }

    #[test]
    fn validation_names_the_flag() {
        let ok = spec();
        assert_eq!(ok.validate(), Ok(()));
        let check = |f: &dyn Fn(&mut LoadSpec), needle: &str| {
            let mut s = spec();
            f(&mut s);
            let err = s.validate().expect_err(needle);
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        };
        check(
            &|s| s.overwrite_ratio = 1.5,
            "--overwrite-ratio 1.5: must be between 0 and 1",
        );
        check(&|s| s.delete_ratio = -0.1, "--delete-ratio -0.1");
        check(&|s| s.delete_ratio = f64::NAN, "--delete-ratio NaN");
        check(
            &|s| {
                s.overwrite_ratio = 0.7;
                s.delete_ratio = 0.5;
            },
            "must add up to at most 1",
        );
        check(&|s| s.writes = 0, "--keys must be at least 1");
        check(&|s| s.value_size = 0, "--value-size must be at least 1");
        check(&|s| s.batch_size = 0, "--batch-size must be at least 1");
        check(&|s| s.concurrency = 0, "--concurrency must be at least 1");
        check(&|s| s.value_size = MAX_VALUE_SIZE + 1, "--value-size");
        check(
            &|s| {
                s.value_size = MAX_VALUE_SIZE;
                s.batch_size = 100;
            },
            "--batch-size 100",
        );
        check(&|s| s.rate = -1.0, "--rate -1");
        check(&|s| s.writes = KEY_SPACE + 1, "--keys");
        check(
            &|s| s.tables = vec!["a".into(), "a".into()],
            "table a is named twice",
        );
        check(&|s| s.tables.clear(), "no table");

        // Edges that are fine.
        let mut edge = spec();
        edge.overwrite_ratio = 0.9;
        edge.delete_ratio = 0.1;
        assert_eq!(edge.validate(), Ok(()));
        edge.overwrite_ratio = 1.0;
        edge.delete_ratio = 0.0;
        assert_eq!(edge.validate(), Ok(()));
    }

    #[test]
    fn writes_split_evenly_over_tables() {
        let mut s = spec();
        s.writes = 10;
        s.tables = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(s.writes_per_table(), vec![4, 3, 3]);
        s.writes = 2;
        assert_eq!(s.writes_per_table(), vec![1, 1, 0]);
    }

    #[test]
    fn the_same_seed_gives_the_same_writes() {
        let s = spec();
        let first = all_ops(&s);
        assert_eq!(first, all_ops(&s));
        assert_eq!(first.iter().map(Vec::len).sum::<usize>(), 2000);
        let mut other = spec();
        other.seed = 2;
        assert_ne!(first, all_ops(&other));
        // Batch size does not change the sequence of writes.
        let mut rebatched = spec();
        rebatched.batch_size = 100;
        assert_eq!(first, all_ops(&rebatched));
        // Tables get different streams.
        assert_ne!(first[0][..50], first[1][..50]);
    }

    #[test]
    fn pinned_output_for_seed_1() {
        // Pinned so that a change of the generator (which would make old oracles and
        // reproductions meaningless) is noticed.
        let s = LoadSpec {
            tables: vec!["t".into()],
            writes: 3,
            value_size: 12,
            ..LoadSpec::default()
        };
        let ops = all_ops(&s).remove(0);
        let keys: Vec<&str> = ops.iter().map(Op::key).collect();
        let values: Vec<&str> = ops.iter().filter_map(Op::value).collect();
        assert_eq!(keys.len(), 3);
        assert!(
            keys.iter()
                .all(|k| k.len() == KEY_LEN && k.starts_with("key-"))
        );
        assert!(values.iter().all(|v| v.len() == 12));
        assert!(values[0].starts_with("w0.") && values[2].starts_with("w2."));
        assert_eq!(
            (keys[0], values[0]),
            PINNED_FIRST,
            "the generator changed: update PINNED_FIRST only on purpose"
        );
    }

    const PINNED_FIRST: (&str, &str) = ("key-180537150519", "w0.am9ne9C8r");

    #[test]
    fn ratios_and_keys_behave_as_documented() {
        let mut s = spec();
        s.tables = vec!["a".into()];
        s.writes = 20_000;
        let ops = all_ops(&s).remove(0);
        let mut seen: HashSet<String> = HashSet::new();
        let (mut fresh, mut overwrites, mut deletes) = (0, 0, 0);
        for op in &ops {
            let known = seen.contains(op.key());
            match op {
                Op::Delete { .. } => {
                    assert!(known, "a delete hits an already-written key");
                    deletes += 1;
                }
                Op::Put { value, .. } => {
                    assert_eq!(value.len(), 20);
                    if known {
                        overwrites += 1;
                    } else {
                        fresh += 1;
                        seen.insert(op.key().to_owned());
                    }
                }
            }
        }
        let frac = |n: i32| f64::from(n) / ops.len() as f64;
        assert!((frac(deletes) - 0.1).abs() < 0.02, "deletes {deletes}");
        assert!(
            (frac(overwrites) - 0.3).abs() < 0.02,
            "overwrites {overwrites}"
        );
        assert!((frac(fresh) - 0.6).abs() < 0.02, "fresh {fresh}");
        // Fresh keys are not written in ascending order.
        let fresh_keys: Vec<&str> = ops
            .iter()
            .filter_map(|o| o.value().map(|_| o.key()))
            .take(10)
            .collect();
        assert!(fresh_keys.windows(2).any(|w| w[0] > w[1]), "{fresh_keys:?}");
    }

    #[test]
    fn the_key_permutation_is_a_permutation() {
        let p = KeyPermutation::new(7);
        let mut seen = HashSet::new();
        for i in 0..50_000 {
            let k = p.apply(i);
            assert!(k < KEY_SPACE);
            assert!(seen.insert(k), "key {k} repeated at {i}");
        }
        assert_eq!(key_name(17), "key-000000000017");
    }

    #[test]
    fn values_are_exactly_the_requested_size() {
        for size in [1usize, 2, 3, 10, 64, 1000] {
            let s = LoadSpec {
                tables: vec!["t".into()],
                writes: 20,
                value_size: size,
                ..LoadSpec::default()
            };
            for op in all_ops(&s).remove(0) {
                assert_eq!(op.value().map(str::len), Some(size));
            }
        }
    }
}
