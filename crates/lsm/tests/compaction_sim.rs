//! Both pickers over the simulator's standard workloads (10 GiB of uniformly random 1 KiB
//! writes in 64 MiB memtables over 2 GiB of live keys, and variations): every edit must
//! apply and keep levels ≥ 1 non-overlapping, and the figures must be plausible.
//!
//! `cargo test -p lsm --test compaction_sim -- --nocapture` prints the table.

use std::collections::BTreeMap;

use lsm::compaction::sim::{SimReport, names, scenarios, simulate};

#[test]
fn standard_workloads_have_plausible_amplification() {
    let reports: Vec<SimReport> = scenarios()
        .iter()
        .map(|config| simulate(config).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    println!("{}", SimReport::table(&reports));
    let by_name: BTreeMap<&str, &SimReport> =
        reports.iter().map(|r| (r.name.as_str(), r)).collect();
    let get = |name: &str| by_name[name];

    for r in &reports {
        // Every flush and every compaction was one edit, and `Version::check` passed on
        // each result.
        assert_eq!(r.edits_checked, r.flushes + r.compactions, "{}", r.name);
        assert_eq!(r.flushes, 160, "{}", r.name);
        assert!(
            r.final_space_amp >= 0.95,
            "{}: {}",
            r.name,
            r.final_space_amp
        );
        assert!(r.write_amp() >= 1.0, "{}", r.name);
    }

    for name in [
        names::LEVELED,
        names::LEVELED_STATIC,
        names::LEVELED_64M,
        names::LEVELED_CONCURRENT,
        names::LEVELED_DELETES,
    ] {
        let wa = get(name).write_amp();
        assert!((3.0..30.0).contains(&wa), "{name}: WA {wa}");
    }
    for (leveled, tiered) in [
        (names::LEVELED, names::TIERED),
        (names::LEVELED_CONCURRENT, names::TIERED_CONCURRENT),
        (names::LEVELED_DELETES, names::TIERED_DELETES),
    ] {
        let (l, t) = (get(leveled), get(tiered));
        assert!(t.write_amp() < l.write_amp(), "{tiered} WA vs {leveled}");
        assert!(
            l.max_space_amp < t.max_space_amp,
            "{leveled} space vs {tiered}"
        );
        assert!(
            l.final_space_amp < t.final_space_amp,
            "{leveled} space vs {tiered}"
        );
    }

    // Instant compactions keep L0 at the trigger; running ones let it grow.
    assert_eq!(get(names::LEVELED).max_l0_files, 4);
    assert!(get(names::LEVELED_CONCURRENT).max_l0_files > 4);

    // Sequential keys never overlap: leveled only moves files.
    let seq = get(names::LEVELED_SEQUENTIAL);
    assert!(seq.write_amp() < 1.01, "{}", seq.write_amp());
    assert_eq!(seq.trivial_moves, seq.compactions);

    // Mostly-deleted data: the tombstone trigger fires.
    assert!(get(names::LEVELED_HEAVY_DELETES).tombstone_compactions > 0);
}
