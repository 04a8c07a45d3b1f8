//! Fuzzes the WAL segment decoder: arbitrary bytes as a segment, decoded in every recovery
//! mode, as the newest segment and as an older one, with and without what a reader knows
//! from the listing (table, name). Nothing may panic or allocate without bound; errors are
//! fine. What is returned must be consistent: sequence numbers strictly increase, and a
//! mode that returns a damage-free result agrees with every other mode.
//! Saved inputs in `fuzz/corpus/wal_reader/` are replayed by `crates/wal/tests/format.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wal::{decode_segment, decode_segment_with, Bytes, RecoveryMode, SegmentContext};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let known = SegmentContext {
        table: Some("fixture"),
        named_first_seq: Some(1),
        ..SegmentContext::default()
    };
    for is_last in [true, false] {
        let mut clean = None;
        for mode in RecoveryMode::ALL {
            let _ = decode_segment_with(&bytes, mode, "fuzz.wal", is_last, &known);
            let Ok(decoded) = decode_segment(&bytes, mode, "fuzz.wal", is_last) else {
                continue;
            };
            assert!(
                decoded.entries.windows(2).all(|w| w[0].seq < w[1].seq),
                "sequence numbers must strictly increase"
            );
            if decoded.damage.is_empty() {
                // Without damage, every mode must see the same entries.
                match &clean {
                    None => clean = Some(decoded.entries),
                    Some(entries) => assert_eq!(entries, &decoded.entries),
                }
            }
        }
    }
});
