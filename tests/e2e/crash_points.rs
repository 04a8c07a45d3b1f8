//! Crash at every named crash point in turn (issue #10): one cluster of real processes
//! (scheduler, replayer, a flusher, a compactor) under a continuous paced load; for each
//! point of `runtime::failpoint::POINTS`, the process that owns it is restarted with
//! `DP_FAILPOINTS=<point>=abort`, the load drives it until it aborts there (asserted: it
//! died by SIGABRT and logged that point), and it is restarted without the point. A second
//! pass does the same crashing at each point's third hit (`<point>=2*off->abort`). At the
//! end the load stops, everything drains, and every oracle runs: acknowledged writes, task
//! ledger, GC safety, structure, no panic. The figures are printed.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use tests::data::{Slot, tail};
use tests::oracles::{self, LoadDriver, ManifestWatcher};
use tests::wait_until;

const TABLES: [&str; 2] = ["alpha", "beta"];
const GRACE_MS: i64 = 1000;

fn owner(point: &str) -> Slot {
    match point.split('.').next() {
        Some("flusher") => Slot::Flusher(0),
        Some("compactor") => Slot::Compactor(0),
        Some("scheduler") => Slot::Scheduler,
        _ => panic!("no process owns {point}"),
    }
}

#[test]
fn crashing_at_every_named_point_loses_duplicates_and_deletes_nothing() {
    let dir = oracles::KeptDir::new(tempfile::tempdir().unwrap());
    let (mut c, journal) = oracles::crash_cluster(dir.path());
    c.start_flusher();
    c.start_compactor();
    c.create_tables(&TABLES);
    let watcher = ManifestWatcher::start(c.admin_addr(), &TABLES, Duration::from_millis(100));
    let mut load = LoadDriver::new(dir.path(), &TABLES, 100, 4000, 2000);
    load.tick(&c);

    // Two passes: crash at each point's first hit, then at its third (`2*off->abort`).
    let mut hits: Vec<(&str, &str, Duration)> = Vec::new();
    let passes = [("abort", "1st hit"), ("2*off->abort", "3rd hit")];
    for ((point, _), (action, which)) in passes
        .iter()
        .flat_map(|p| runtime::failpoint::POINTS.iter().map(move |x| (x, p)))
    {
        let started = Instant::now();
        let slot = owner(point);
        c.restart(slot, &[("DP_FAILPOINTS", &format!("{point}={action}"))]);
        let died = wait_until(Duration::from_secs(120), || {
            load.tick(&c);
            c.slot(slot)
                .as_mut()
                .is_some_and(|p| p.child.try_wait().unwrap().is_some())
        });
        let p = c.slot(slot).take().unwrap();
        let log = p.log_text();
        assert!(
            died,
            "{point}: {} never crashed there (loads: {} ok, {} failed, last error {}); its log:\n{}",
            p.name,
            load.runs_ok,
            load.runs_failed,
            load.last_error,
            tail(&log, 30)
        );
        let mut p = p;
        let status = p.child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(6),
            "{point}: {} ended by {status:?}, not by the crash point; log:\n{}",
            p.name,
            tail(&log, 30)
        );
        assert!(
            log.contains(&format!("failpoint {point} reached: aborting")),
            "{point}: {} aborted elsewhere; log:\n{}",
            p.name,
            tail(&log, 30)
        );
        drop(p);
        c.restart(slot, &[]);
        hits.push((point, which, started.elapsed()));
    }

    tests::report!("crash points hit ({}):", hits.len());
    for (p, which, d) in &hits {
        tests::report!(
            "  {p:<36} {which}: crashed after {:>5.1} s",
            d.as_secs_f64()
        );
    }
    assert_eq!(hits.len(), 2 * runtime::failpoint::POINTS.len());
    oracles::drain_and_check(&mut c, &mut load, watcher, &journal, &TABLES, GRACE_MS);
}
