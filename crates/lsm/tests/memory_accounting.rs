//! `Memtable::approximate_memory_usage` against what the allocator actually hands out.
//!
//! In its own test binary because it installs a counting global allocator, and holds a
//! single test so no other thread allocates while it measures.

use std::alloc::System;
use std::sync::Arc;

use lsm::{InternalIterator, Memtable, ValueKind};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

// A counting wrapper around the system allocator (from a crate: the workspace forbids the
// `unsafe` a `GlobalAlloc` impl needs).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Net bytes currently allocated through the global allocator.
fn live() -> isize {
    let s = GLOBAL.stats();
    // `bytes_allocated`/`bytes_deallocated` already include the growth/shrink of reallocs.
    s.bytes_allocated as isize - s.bytes_deallocated as isize
}

/// 16-byte keys spread over the key space like hashed keys, without allocating.
fn key(i: u64) -> [u8; 16] {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&z.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

#[test]
fn accounted_memory_matches_the_allocator_within_15_percent() {
    const ENTRIES: u64 = 100_000;
    let value = [0xabu8; 100];

    // Warm up what is allocated once per process or thread (the epoch collector's
    // thread-local state), outside the measurement.
    let warm = Arc::new(Memtable::new(0));
    warm.insert(b"warm", 1, ValueKind::Put, &value)
        .expect("insert");
    warm.iter().seek_to_first().expect("seek");
    drop(warm);

    let before = live();
    let table = Arc::new(Memtable::new(1));
    for i in 0..ENTRIES {
        table
            .insert(&key(i), i + 1, ValueKind::Put, &value)
            .expect("insert");
    }
    let measured = (live() - before) as f64;
    let accounted = table.approximate_memory_usage() as f64;
    let ratio = accounted / measured;
    eprintln!(
        "entries={ENTRIES} measured={measured} accounted={accounted} ratio={ratio:.4} \
         per_entry measured={:.1} accounted={:.1}",
        measured / ENTRIES as f64,
        accounted / ENTRIES as f64
    );
    assert!(
        (0.85..=1.15).contains(&ratio),
        "accounted {accounted} vs measured {measured} (ratio {ratio:.3})"
    );

    // Entries too large for a shared chunk get an allocation of their own, also counted.
    let large = vec![0x5au8; 200 * 1024];
    let before_large = live();
    for i in 0..20u64 {
        table
            .insert(&key(ENTRIES + i), ENTRIES + i + 1, ValueKind::Put, &large)
            .expect("insert");
    }
    let measured_large = (live() - before_large) as f64;
    let accounted_large = table.approximate_memory_usage() as f64 - accounted;
    let ratio_large = accounted_large / measured_large;
    assert!(
        (0.85..=1.15).contains(&ratio_large),
        "large entries: accounted {accounted_large} vs measured {measured_large}"
    );
    let accounted = table.approximate_memory_usage() as f64;

    // Freezing frees nothing the entries use, and the accounting does not move.
    table.freeze();
    assert_eq!(table.approximate_memory_usage() as f64, accounted);

    // Streaming the whole table (as a flusher does) shares entries instead of copying:
    // only the iterator's bounded batch is allocated on top.
    let during = live();
    let mut it = table.iter();
    it.seek_to_first().expect("seek");
    let mut n = 0;
    let mut peak = 0;
    while it.valid() {
        n += 1;
        peak = peak.max(live() - during);
        it.next().expect("next");
    }
    assert_eq!(n, ENTRIES + 20);
    assert!(peak < 64 * 1024, "iterator allocated {peak} bytes");

    drop(it);
    drop(table);
    drop(large);
    let leaked = live() - before;
    assert!(
        leaked.abs() < 4096,
        "{leaked} bytes still allocated after drop"
    );
}
