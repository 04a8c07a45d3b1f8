//! The input data of the workloads: a file of entries both engines read.
//!
//! Keys are 16 bytes: XXH3-128 of a key number under the suite's seed (so every key number
//! maps to a fixed, uniformly spread key; "hashed u64, fixed seed"). Values are 100 bytes
//! from a seeded RNG (incompressible). An entries file is the bare sequence of
//! `key ‖ value` records in write order: the parent writes it once per workload, every
//! child (ours and RocksDB) streams the same file, and each child reports how many entries
//! and bytes it consumed so the report can show that both sides saw the same input.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

use crate::settings::{KEY_LEN, VALUE_LEN};

/// The key of key number `n`.
pub fn key(seed: u64, n: u64) -> [u8; KEY_LEN] {
    xxhash_rust::xxh3::xxh3_128_with_seed(&n.to_le_bytes(), seed).to_be_bytes()
}

/// One entry read from an entries file.
pub struct Entry {
    pub key: [u8; KEY_LEN],
    pub value: [u8; VALUE_LEN],
}

/// Writes an entries file of `count` entries whose key numbers come from `key_number`
/// (called with the entry's index and the RNG).
pub fn write_entries(
    path: &Path,
    seed: u64,
    count: u64,
    mut key_number: impl FnMut(u64, &mut StdRng) -> u64,
) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut keys = StdRng::seed_from_u64(seed ^ 0x6b65_7973);
    let mut values = StdRng::seed_from_u64(seed ^ 0x7661_6c75);
    let mut value = [0u8; VALUE_LEN];
    for i in 0..count {
        let n = key_number(i, &mut keys);
        out.write_all(&key(seed, n))?;
        values.fill_bytes(&mut value);
        out.write_all(&value)?;
    }
    out.flush()?;
    out.get_ref().sync_all()?;
    Ok(())
}

/// A load of `load` distinct keys (key numbers `0..load` in order, which hashing spreads
/// over the key space) followed by `overwrites` puts of uniformly random key numbers.
pub fn write_load_and_overwrite(
    path: &Path,
    seed: u64,
    load: u64,
    overwrites: u64,
) -> anyhow::Result<()> {
    write_entries(path, seed, load + overwrites, |i, rng| {
        if i < load {
            i
        } else {
            rng.random_range(0..load)
        }
    })
}

/// Streams an entries file.
pub struct EntryReader {
    inner: BufReader<File>,
    buf: [u8; KEY_LEN + VALUE_LEN],
    /// Entries read so far.
    pub entries: u64,
}

impl EntryReader {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        Ok(Self {
            inner: BufReader::with_capacity(1 << 20, file),
            buf: [0; KEY_LEN + VALUE_LEN],
            entries: 0,
        })
    }

    /// The next entry, `None` at the end of the file.
    pub fn next_entry(&mut self) -> anyhow::Result<Option<Entry>> {
        match self.inner.read_exact(&mut self.buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e).context("read entries"),
        }
        self.entries += 1;
        let mut key = [0u8; KEY_LEN];
        let mut value = [0u8; VALUE_LEN];
        key.copy_from_slice(&self.buf[..KEY_LEN]);
        value.copy_from_slice(&self.buf[KEY_LEN..]);
        Ok(Some(Entry { key, value }))
    }

    /// Up to `n` entries.
    pub fn take(&mut self, n: u64) -> anyhow::Result<Vec<Entry>> {
        let mut out = Vec::with_capacity(n.min(1 << 24) as usize);
        while (out.len() as u64) < n {
            match self.next_entry()? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }
}

/// Sum of the sizes of the files in `dir` whose name ends with `suffix` (recursively).
pub fn dir_bytes(dir: &Path, suffix: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => dir_bytes(&path, suffix),
                Ok(_) if path.to_string_lossy().ends_with(suffix) => {
                    e.metadata().map(|m| m.len()).unwrap_or(0)
                }
                _ => 0,
            }
        })
        .sum()
}
