//! Benchmark data shared by the SST benches: N sorted 16-byte user keys (hashed u64s with a
//! fixed seed) and incompressible 100-byte values.

use rand::{RngCore, SeedableRng};

pub const N: usize = 200_000;
pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;

pub struct Data {
    /// Sorted, distinct user keys.
    pub keys: Vec<[u8; KEY_LEN]>,
    /// `N * VALUE_LEN` random bytes; value `i` is `values[i * VALUE_LEN..][..VALUE_LEN]`.
    pub values: Vec<u8>,
}

impl Data {
    pub fn generate() -> Self {
        let mut keys: Vec<[u8; KEY_LEN]> = (0..N as u64).map(|i| user_key(i, 0x5eed)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), N, "hash collision in benchmark keys");
        let mut values = vec![0u8; N * VALUE_LEN];
        rand::rngs::StdRng::seed_from_u64(42).fill_bytes(&mut values);
        Self { keys, values }
    }

    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i * VALUE_LEN..(i + 1) * VALUE_LEN]
    }

    /// Raw bytes per build: user keys plus values.
    pub fn raw_bytes(&self) -> u64 {
        (N * (KEY_LEN + VALUE_LEN)) as u64
    }
}

/// A 16-byte key from two seeded 64-bit hashes of `i`.
pub fn user_key(i: u64, seed: u64) -> [u8; KEY_LEN] {
    let a = xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed);
    let b = xxhash_rust::xxh3::xxh3_64_with_seed(&i.to_le_bytes(), seed ^ 0xffff);
    let mut k = [0u8; KEY_LEN];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}
