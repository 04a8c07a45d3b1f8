//! Real SIGKILLs under load (issue #10): a scheduler, a replayer, two flushers and two
//! compactors run as processes on 127.0.0.1 while a paced load (`storage-admin load`, one
//! run after another) writes two tables. Every 1.5–3 s a seeded RNG picks the next victim
//! (each round is a shuffled list of the six services and the load generator, so each, the
//! scheduler included, dies equally often), SIGKILLs it and restarts it. A killed load
//! generator leaves writes of unknown outcome: they may be stored or not, never torn. After at least `DP_CRASH_TEST_KILLS` kills (30 by default) and
//! `DP_CRASH_TEST_DURATION` seconds (0 by default; `make crash-test DURATION=600` runs ten
//! minutes), the load stops, everything drains, and every oracle runs: acknowledged writes,
//! task ledger, GC safety, structure, no panic. The seed is printed (`DP_CHAOS_SEED`
//! reruns it: the same victims in the same order; the timing of the processes is not
//! reproducible).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tests::data::Slot;
use tests::oracles::{self, LoadDriver, ManifestWatcher};
use tests::wait_until;

const TABLES: [&str; 2] = ["alpha", "beta"];
const GRACE_MS: i64 = 1000;

/// xorshift64*: a seeded, dependency-free RNG.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

#[test]
fn sigkills_of_random_services_under_load_lose_duplicate_and_delete_nothing() {
    let seed = env_u64("DP_CHAOS_SEED", 0x0005_eedc_4a05).max(1);
    let min_kills = env_u64("DP_CRASH_TEST_KILLS", 30);
    let duration = Duration::from_secs(env_u64("DP_CRASH_TEST_DURATION", 0));
    tests::report!(
        "chaos seed {seed} (rerun: DP_CHAOS_SEED={seed}), at least {min_kills} kills over at least {duration:?}"
    );
    let mut rng = Rng(seed);

    let dir = oracles::KeptDir::new(tempfile::tempdir().unwrap());
    let (mut c, journal) = oracles::crash_cluster(dir.path());
    for _ in 0..2 {
        c.start_flusher();
        c.start_compactor();
    }
    c.create_tables(&TABLES);
    let watcher = ManifestWatcher::start(c.admin_addr(), &TABLES, Duration::from_millis(100));
    let mut load = LoadDriver::new(dir.path(), &TABLES, seed, 4000, 2000);
    load.tick(&c);

    // `None`: the load generator itself (its writes in flight get an unknown outcome).
    let all = [
        Some(Slot::Scheduler),
        Some(Slot::Replayer),
        Some(Slot::Flusher(0)),
        Some(Slot::Flusher(1)),
        Some(Slot::Compactor(0)),
        Some(Slot::Compactor(1)),
        None,
    ];
    let name = |v: Option<Slot>| v.map_or("load-generator", Slot::service);
    let mut round: Vec<Option<Slot>> = Vec::new();
    let mut kills: BTreeMap<&str, u64> = BTreeMap::new();
    let mut victims = Vec::new();
    let mut total = 0u64;
    let started = Instant::now();
    while total < min_kills || started.elapsed() < duration {
        let pause = Duration::from_millis(1500 + rng.below(1500));
        wait_until(pause, || {
            load.tick(&c);
            false
        });
        if round.is_empty() {
            round = all.to_vec();
            // Fisher–Yates with the seeded RNG.
            for i in (1..round.len()).rev() {
                round.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let victim = round.pop().unwrap();
        match victim {
            Some(slot) => c.restart(slot, &[]),
            None => {
                if !load.kill() {
                    continue;
                }
                load.tick(&c);
            }
        }
        *kills.entry(name(victim)).or_default() += 1;
        victims.push(victim);
        // The minimum counts SIGKILLs of services; the load generator's come on top.
        total += u64::from(victim.is_some());
    }
    let chaos_secs = started.elapsed().as_secs_f64();

    tests::report!(
        "chaos: {total} SIGKILLs of services (+ {} of the load generator) in {chaos_secs:.0} s (seed {seed}): {kills:?}; order {:?}",
        kills.get("load-generator").copied().unwrap_or(0),
        victims.iter().map(|v| name(*v)).collect::<Vec<_>>()
    );
    assert!(total >= min_kills);
    for v in all {
        assert!(
            kills.get(name(v)).is_some_and(|n| *n > 0),
            "{} never killed",
            name(v)
        );
    }
    oracles::drain_and_check(&mut c, &mut load, watcher, &journal, &TABLES, GRACE_MS);
}
