//! Fuzzes the SST reader: arbitrary bytes as a file, then open, full iteration, seeks and
//! point lookups. Nothing may panic, loop forever, or allocate without bound; errors are fine.
//! Saved inputs in `fuzz/corpus/sst_reader/` are replayed by `crates/sst/tests/corpus.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sst::{InternalIterator, SstReader};

/// The user key of an encoded internal key (the 8-byte trailer stripped).
fn user_key(k: &[u8]) -> &[u8] {
    &k[..k.len().saturating_sub(8)]
}

fuzz_target!(|data: &[u8]| {
    let Ok(reader) = SstReader::open(sst::Bytes::copy_from_slice(data), "fuzz.sst") else {
        return;
    };
    let _ = reader.properties().key_sketch.estimate();
    let mut keys = Vec::new();
    let mut it = reader.iter();
    if it.seek_to_first().is_ok() {
        let mut n = 0usize;
        while it.valid() {
            if n % 7 == 0 && keys.len() < 32 {
                keys.push(it.key().to_vec());
            }
            n += 1;
            if it.next().is_err() {
                break;
            }
        }
    }
    for k in &keys {
        let user_key = user_key(k);
        let _ = reader.may_contain(user_key);
        let _ = reader.get(user_key, u64::MAX);
        let _ = reader.get(user_key, 0);
        if it.seek(k).is_ok() && it.valid() {
            let _ = it.next();
        }
    }
    // Lookups derived from the input itself, for files whose keys were never reached.
    let probe = &data[..data.len().min(24)];
    let _ = reader.get(probe, u64::MAX);
    let _ = it.seek(probe);
});
