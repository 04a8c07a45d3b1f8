//! Table-driven tests of the state machine, with time passed in.

use super::*;
use bytes::Bytes;

const T0: i64 = 1_000_000;

fn cfg() -> CoreConfig {
    CoreConfig {
        queue_size: 8,
        max_attempts: 3,
        backoff_base_ms: 100,
        backoff_max_ms: 1000,
        heartbeat_timeout_ms: 1000,
        stuck_timeout_ms: 5000,
        max_running: HashMap::new(),
        num_levels: 4,
        aging_ms: 1000,
        assign_replays: false,
        ..CoreConfig::default()
    }
}

fn file(id: u64, a: &str, b: &str, seq: u64) -> FileMeta {
    FileMeta {
        id,
        size: 1000,
        smallest: Bytes::copy_from_slice(a.as_bytes()),
        largest: Bytes::copy_from_slice(b.as_bytes()),
        smallest_seq: seq,
        largest_seq: seq,
        entries: 10,
        tombstones: 0,
    }
}

fn flush_spec(memtable_id: u64, last_seq: u64) -> TaskSpec {
    TaskSpec::MemtableFlush {
        table: "t".into(),
        memtable_id,
        replayer_address: "r:1".into(),
        first_seq: last_seq - 9,
        last_seq,
        // Commits as soon as it completes (ordering has its own tests).
        after_seq: 0,
        replay_task_id: 0,
        size_bytes: 0,
    }
}

fn success(files: Vec<FileMeta>) -> Outcome {
    Outcome::Success {
        files,
        consumed_inputs: vec![],
        stats: None,
        partial: false,
    }
}

/// Heartbeats every worker, each listing the attempts it was given, as real workers do.
fn beat_all(c: &mut Core, now: i64) {
    type Beat = (u64, Vec<(u64, u32, Progress)>);
    let beats: Vec<Beat> = c
        .workers()
        .map(|w| {
            let running = w
                .assigned
                .iter()
                .map(|&(t, a)| (t, a, Progress::default()))
                .collect();
            (w.record.id, running)
        })
        .collect();
    for (w, running) in beats {
        c.heartbeat(w, &running, now);
    }
}

/// A core with table `t` and two flushers.
fn setup() -> (Core, u64, u64) {
    let mut c = Core::new(cfg());
    c.create_table("t", vec![], T0).expect("table");
    let a = c
        .register_worker("flusher", "a", "a:1", 1, "v", T0)
        .expect("a");
    let b = c
        .register_worker("flusher", "b", "b:1", 1, "v", T0)
        .expect("b");
    (c, a, b)
}

#[test]
fn dispatch_complete_commit() {
    let (mut c, _, _) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let d = c.tick(T0);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].task_id, d[0].attempt), (id, 1));
    let out = d[0].output_file_ids[0];
    c.complete(id, 1, success(vec![file(out, "a", "z", 10)]), T0 + 10)
        .expect("commit");
    let m = c.manifest("t").expect("manifest");
    assert_eq!(m.levels.levels[0].len(), 1);
    assert_eq!(m.checkpoint, 10);
    assert_eq!(m.version, 2);
    assert_eq!(c.task(id).map(|t| t.state), Some(TaskState::Succeeded));
    // A duplicate completion is refused and changes nothing.
    let before = m.clone();
    assert!(matches!(
        c.complete(id, 1, success(vec![]), T0 + 20),
        Err(CoreError::Refused(_))
    ));
    assert_eq!(c.manifest("t"), Some(&before));
}

#[test]
fn dead_worker_task_goes_elsewhere_and_the_zombie_is_fenced() {
    let (mut c, a, b) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let d = c.tick(T0);
    let first = d[0].worker_id;
    let other = if first == a { b } else { a };
    let zombie_file = d[0].output_file_ids[0];
    // Only the other worker heartbeats.
    c.heartbeat(other, &[], T0 + 900);
    c.heartbeat(other, &[], T0 + 1800);
    let d = c.tick(T0 + 1800);
    assert!(d.is_empty(), "retry waits for its backoff");
    let t = c.task(id).expect("task");
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.errors[0].kind, "lease_expired");
    let d = c.tick(T0 + 1900);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].worker_id, d[0].attempt), (other, 2));
    // The first attempt comes back from the dead: refused, manifest unchanged.
    let before = c.manifest("t").cloned();
    let r = c.complete(
        id,
        1,
        success(vec![file(zombie_file, "a", "z", 10)]),
        T0 + 2000,
    );
    assert!(matches!(r, Err(CoreError::Refused(_))), "{r:?}");
    assert_eq!(c.manifest("t").cloned(), before);
    // If it heartbeats again, it is told to stop the stale attempt.
    let reply = c.heartbeat(first, &[(id, 1, Progress::default())], T0 + 2000);
    assert!(reply.cancel.contains(&(id, 1)));
    // The current attempt commits.
    let out = d[0].output_file_ids[0];
    c.complete(id, 2, success(vec![file(out, "a", "z", 10)]), T0 + 2100)
        .expect("commit");
}

#[test]
fn heartbeats_without_progress_make_the_task_stuck() {
    let (mut c, a, b) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let w = c.tick(T0)[0].worker_id;
    let p = Progress {
        bytes_read: 5,
        ..Default::default()
    };
    let mut now = T0;
    while now < T0 + 5000 {
        now += 500;
        c.heartbeat(
            a,
            &[(id, 1, p)]
                .into_iter()
                .filter(|_| w == a)
                .collect::<Vec<_>>(),
            now,
        );
        c.heartbeat(
            b,
            &[(id, 1, p)]
                .into_iter()
                .filter(|_| w == b)
                .collect::<Vec<_>>(),
            now,
        );
        assert!(c.tick(now).is_empty());
        assert_eq!(
            c.task(id).map(|t| t.state),
            Some(TaskState::Running),
            "at {now}"
        );
    }
    now += 600;
    // Still listed, still without progress.
    let other = if w == a { b } else { a };
    c.heartbeat(w, &[(id, 1, p)], now);
    c.heartbeat(other, &[], now);
    c.tick(now);
    let t = c.task(id).expect("task");
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.errors.last().map(|e| e.kind.as_str()), Some("stuck"));
}

#[test]
fn a_dispatch_its_live_worker_never_lists_is_retried_after_a_heartbeat_timeout() {
    let (mut c, a, b) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let w = c.tick(T0)[0].worker_id;
    let other = if w == a { b } else { a };
    // The scheduler recorded the dispatch but it never arrived: the worker is alive and
    // heartbeats, without the attempt. Within a heartbeat timeout that may be a dispatch
    // still on its way.
    c.heartbeat(w, &[], T0 + 500);
    c.heartbeat(other, &[], T0 + 500);
    assert_eq!(c.task(id).map(|t| t.state), Some(TaskState::Running));
    // Past it, the attempt is lost and retried at once, not after the stuck timeout.
    c.heartbeat(w, &[], T0 + 1200);
    c.heartbeat(other, &[], T0 + 1200);
    let t = c.task(id).expect("task");
    assert_eq!(t.state, TaskState::Pending);
    assert!(
        t.errors
            .last()
            .is_some_and(|e| e.message.contains("never reached")),
        "{:?}",
        t.errors
    );
    let d = c.tick(T0 + 1500);
    assert_eq!(
        d.iter().map(|d| (d.task_id, d.attempt)).collect::<Vec<_>>(),
        [(id, 2)]
    );
}

#[test]
fn progress_keeps_a_long_task_alive() {
    let (mut c, a, b) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let w = c.tick(T0)[0].worker_id;
    let other = if w == a { b } else { a };
    for i in 1..30u64 {
        let now = T0 + i as i64 * 500;
        let p = Progress {
            bytes_read: i,
            ..Default::default()
        };
        c.heartbeat(w, &[(id, 1, p)], now);
        c.heartbeat(other, &[], now);
        c.tick(now);
    }
    assert_eq!(c.task(id).map(|t| t.state), Some(TaskState::Running));
}

#[test]
fn failures_back_off_and_fail_after_max_attempts() {
    let (mut c, a, b) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let mut now = T0;
    for attempt in 1..=3u32 {
        let d = loop {
            c.heartbeat(a, &[], now);
            c.heartbeat(b, &[], now);
            let d = c.tick(now);
            if !d.is_empty() {
                break d;
            }
            now += 50;
        };
        assert_eq!(d[0].attempt, attempt);
        let err = ErrorRecord {
            attempt,
            kind: "flush".into(),
            message: format!("boom {attempt}"),
            file: String::new(),
            offset: 0,
            retriable: true,
            at_ms: 0,
        };
        c.complete(id, attempt, Outcome::Failure(err), now)
            .expect("recorded");
        if attempt < 3 {
            let t = c.task(id).expect("task");
            assert_eq!(t.not_before_ms - now, backoff_ms(100, 1000, attempt));
        }
    }
    let t = c.task(id).expect("task");
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(t.errors.len(), 3);
    assert_eq!(c.counts()[&TaskKind::MemtableFlush].failed, 1);
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let cases = [
        (1, 100),
        (2, 200),
        (3, 400),
        (4, 800),
        (5, 1000),
        (40, 1000),
    ];
    for (failures, expected) in cases {
        assert_eq!(
            backoff_ms(100, 1000, failures),
            expected,
            "failures {failures}"
        );
    }
}

#[test]
fn a_full_queue_refuses_new_work() {
    let (mut c, _, _) = setup();
    for i in 0..8 {
        c.submit(flush_spec(i, 10 + i * 10), 0, T0).expect("fits");
    }
    assert_eq!(
        c.submit(flush_spec(99, 1000), 0, T0),
        Err(CoreError::QueueFull {
            pending: 8,
            capacity: 8
        })
    );
    // The same memtable again is not new work.
    assert!(c.submit(flush_spec(3, 40), 0, T0).is_ok());
}

fn with_files(c: &mut Core, files: &[(u32, FileMeta)]) {
    let m = c.manifests.get_mut("t").expect("manifest");
    m.levels = m
        .levels
        .apply(&VersionEdit {
            removed: vec![],
            added: files.to_vec(),
        })
        .expect("fixture");
}

fn compaction(inputs: Vec<(u32, Vec<FileMeta>)>, output_level: u32) -> TaskSpec {
    TaskSpec::Compaction {
        table: "t".into(),
        inputs,
        output_level,
        bottommost: true,
        target_file_size: 1 << 20,
        trivial_move: false,
        reason: "test".into(),
        wal_inputs: Vec::new(),
    }
}

#[test]
fn overlapping_compactions_get_a_lock_error_until_the_first_ends() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "c", "c:1", 2, "v", T0)
        .expect("c");
    with_files(
        &mut c,
        &[
            (0, file(1, "a", "m", 5)),
            (0, file(2, "c", "z", 9)),
            (1, file(3, "a", "k", 1)),
        ],
    );
    let first = c
        .submit(
            compaction(
                vec![
                    (0, vec![file(1, "a", "m", 5)]),
                    (1, vec![file(3, "a", "k", 1)]),
                ],
                1,
            ),
            50,
            T0,
        )
        .expect("first");
    let second = c.submit(compaction(vec![(1, vec![file(3, "a", "k", 1)])], 2), 50, T0);
    assert_eq!(
        second,
        Err(CoreError::Lock {
            table: "t".into(),
            file_id: 3,
            task_id: first
        })
    );
    assert!(
        second
            .expect_err("lock")
            .to_string()
            .starts_with("LockError")
    );
    // A non-overlapping request is fine.
    c.submit(compaction(vec![(0, vec![file(2, "c", "z", 9)])], 1), 50, T0)
        .expect("disjoint");
    let d = c.tick(T0);
    let out = d
        .iter()
        .find(|d| d.task_id == first)
        .expect("dispatched")
        .output_file_ids[0];
    c.complete(first, 1, success(vec![file(out, "a", "m", 5)]), T0 + 1)
        .expect("commit");
    assert!(
        c.submit(
            compaction(vec![(1, vec![file(out, "a", "m", 5)])], 2),
            50,
            T0 + 2
        )
        .is_ok()
    );
}

#[test]
fn a_compaction_whose_inputs_are_gone_cannot_commit() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "c", "c:1", 2, "v", T0)
        .expect("c");
    with_files(&mut c, &[(0, file(1, "a", "m", 5))]);
    let id = c
        .submit(compaction(vec![(0, vec![file(1, "a", "m", 5)])], 1), 50, T0)
        .expect("submit");
    let d = c.tick(T0);
    // Someone removed the input meanwhile (a bug elsewhere, or a dropped/recreated table).
    let m = c.manifests.get_mut("t").expect("manifest");
    m.levels.levels[0].clear();
    let before = c.manifest("t").cloned();
    let r = c.complete(
        id,
        1,
        success(vec![file(d[0].output_file_ids[0], "a", "m", 5)]),
        T0 + 1,
    );
    assert!(matches!(r, Err(CoreError::Refused(_))), "{r:?}");
    assert_eq!(c.manifest("t").cloned(), before);
}

#[test]
fn outputs_not_allocated_to_the_attempt_are_refused() {
    let (mut c, _, _) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    c.tick(T0);
    let r = c.complete(id, 1, success(vec![file(999_999, "a", "b", 10)]), T0);
    assert!(matches!(r, Err(CoreError::Refused(_))));
    assert_eq!(c.task(id).map(|t| t.state), Some(TaskState::Running));
}

#[test]
fn cancelling_a_running_task_reaches_its_worker_through_the_heartbeat() {
    let (mut c, _, _) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let w = c.tick(T0)[0].worker_id;
    c.cancel(id, T0 + 1).expect("cancel");
    let reply = c.heartbeat(w, &[(id, 1, Progress::default())], T0 + 2);
    assert_eq!(reply.cancel, vec![(id, 1)]);
    assert!(matches!(
        c.complete(id, 1, success(vec![]), T0 + 3),
        Err(CoreError::Refused(_))
    ));
    assert_eq!(c.task(id).map(|t| t.state), Some(TaskState::Cancelled));
}

#[test]
fn cluster_limits_and_slots_bound_dispatch() {
    let mut config = cfg();
    config.max_running.insert(TaskKind::MemtableFlush, 1);
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("table");
    c.register_worker("flusher", "a", "a:1", 4, "v", T0)
        .expect("a");
    for i in 0..3 {
        c.submit(flush_spec(i, 10 + i * 10), 100, T0)
            .expect("submit");
    }
    assert_eq!(c.tick(T0).len(), 1, "max_concurrent_flushes = 1");
    let waiting = c
        .tasks()
        .find(|t| t.state == TaskState::Pending)
        .expect("pending");
    assert!(c.waiting_reason(waiting, T0).contains("cluster limit"));
}

#[test]
fn older_low_priority_work_is_not_starved() {
    let (mut c, _, _) = setup();
    let w = c
        .register_worker("compactor", "c", "c:1", 1, "v", T0)
        .expect("c");
    let old = c
        .submit(TaskSpec::StatisticsUpdate { table: "t".into() }, 0, T0)
        .expect("old");
    let newer = c
        .submit(
            TaskSpec::StatisticsUpdate { table: "t".into() },
            50,
            T0 + 100_000,
        )
        .expect("new");
    c.heartbeat(w, &[], T0 + 100_000);
    let d = c.tick(T0 + 100_000);
    assert_eq!(d.len(), 1);
    assert_eq!(
        d[0].task_id, old,
        "100 s of waiting outweighs 50 priority points"
    );
    assert_ne!(old, newer);
}

#[test]
fn bad_names_and_unknown_tables_are_refused() {
    let mut c = Core::new(cfg());
    for bad in ["", "a/b", "..", "x y", &"n".repeat(129)] {
        assert!(
            matches!(c.create_table(bad, vec![], T0), Err(CoreError::Invalid(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        c.submit(
            TaskSpec::StatisticsUpdate {
                table: "nope".into()
            },
            0,
            T0
        ),
        Err(CoreError::TableNotFound("nope".into()))
    );
    assert!(c.take_batch().is_empty(), "refusals change nothing");
}

#[test]
fn restart_from_the_catalog_restores_queue_manifest_failures_and_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = catalog::Catalog::open(dir.path()).expect("open");
    let (mut c, a, b) = setup();
    let done = c.submit(flush_spec(1, 10), 100, T0).expect("s1");
    let running = c.submit(flush_spec(2, 20), 100, T0).expect("s2");
    let d = c.tick(T0);
    let out = d
        .iter()
        .find(|d| d.task_id == done)
        .expect("d")
        .output_file_ids[0];
    c.complete(done, 1, success(vec![file(out, "a", "z", 10)]), T0)
        .expect("commit");
    let queued = c.submit(flush_spec(3, 30), 100, T0).expect("s3");
    catalog.write(c.take_batch()).expect("persist");
    drop(catalog);

    let catalog = catalog::Catalog::open(dir.path()).expect("reopen");
    let mut r = Core::from_snapshot(cfg(), catalog.load().expect("load"), T0 + 10);
    assert_eq!(r.manifest("t"), c.manifest("t"));
    for id in [done, running, queued] {
        assert_eq!(r.task(id), c.task(id), "task {id}");
    }
    assert_eq!(
        r.task(running).map(|t| (t.state, t.attempt)),
        Some((TaskState::Running, 1))
    );
    // Workers that keep heartbeating keep their attempts; ids continue.
    let w = r
        .task(running)
        .and_then(|t| t.current_attempt())
        .map(|a| a.worker_id)
        .expect("w");
    assert!(
        !r.heartbeat(w, &[(running, 1, Progress::default())], T0 + 20)
            .reregister
    );
    let next = r.submit(flush_spec(4, 40), 100, T0 + 20).expect("s4");
    assert!(next > queued);
    let _ = (a, b);
}

fn level_strategy() -> Strategy {
    Strategy::LevelBased(lsm::compaction::LevelConfig {
        trigger_threshold: 4,
        num_levels: 4,
        ..Default::default()
    })
}

#[test]
fn the_picker_queues_overlapping_l0_and_moves_disjoint_files_without_a_worker() {
    let (mut c, _, _) = setup();
    // Four overlapping L0 files: one compaction task, inputs locked.
    with_files(
        &mut c,
        &[
            (0, file(1, "a", "m", 1)),
            (0, file(2, "b", "n", 2)),
            (0, file(3, "c", "o", 3)),
            (0, file(4, "d", "p", 4)),
        ],
    );
    let (queued, moved) = c.plan_compactions(&level_strategy(), true, T0);
    assert_eq!((queued.len(), moved), (1, 0));
    assert_eq!(c.locked_files().len(), 4);
    // Picking again while it runs creates nothing new.
    assert_eq!(c.plan_compactions(&level_strategy(), true, T0).0.len(), 0);

    // A second table with four disjoint L0 files: moved down, no task, no rewrite.
    c.create_table("u", vec![], T0).expect("table");
    let m = c.manifests.get_mut("u").expect("manifest");
    m.levels = m
        .levels
        .apply(&VersionEdit {
            removed: vec![],
            added: vec![
                (0, file(11, "a", "b", 1)),
                (0, file(12, "c", "d", 2)),
                (0, file(13, "e", "f", 3)),
                (0, file(14, "g", "h", 4)),
            ],
        })
        .expect("fixture");
    let before = c.manifest("u").expect("u").version;
    let (queued, moved) = c.plan_compactions(&level_strategy(), true, T0);
    assert_eq!((queued.len(), moved), (0, 4));
    let m = c.manifest("u").expect("u");
    assert!(m.levels.levels[0].is_empty());
    assert_eq!(m.levels.file_ids().len(), 4);
    assert_eq!(m.version, before + 1);
    assert!(!c.take_batch().is_empty(), "the move is persisted");
}

#[test]
fn only_changed_tables_are_picked_between_full_passes() {
    let (mut c, _, _) = setup();
    // Fixture ids stay clear of the ids the core allocates. Direct fixture edits bypass the change tracking: only a full pass sees them.
    with_files(
        &mut c,
        &[
            (0, file(101, "a", "m", 1)),
            (0, file(102, "b", "n", 2)),
            (0, file(103, "c", "o", 3)),
            (0, file(104, "d", "p", 4)),
        ],
    );
    c.repick.clear();
    assert_eq!(c.plan_compactions(&level_strategy(), false, T0).0.len(), 0);
    let (queued, _) = c.plan_compactions(&level_strategy(), true, T0);
    assert_eq!(queued.len(), 1);
    // Cancelling the compaction unlocks its inputs: the table is picked again at once.
    c.cancel(queued[0], T0).expect("cancel");
    assert_eq!(c.plan_compactions(&level_strategy(), false, T0).0.len(), 1);
    // A committed flush changes the manifest: picked again too (nothing new to do here,
    // the inputs are locked by the new compaction).
    let id = c.submit(flush_spec(9, 100), 100, T0).expect("flush");
    let d = c.tick(T0);
    let out = d
        .iter()
        .find(|d| d.task_id == id)
        .expect("dispatched")
        .output_file_ids[0];
    c.complete(id, 1, success(vec![file(out, "q", "r", 100)]), T0)
        .expect("commit");
    assert!(c.repick.contains("t"));
}

// ---- ordered flush commits and table assignment -----------------------------------------

/// The flush of the memtable holding seqs `after+1..=last`.
fn chained_flush(memtable_id: u64, after: u64, last: u64) -> TaskSpec {
    TaskSpec::MemtableFlush {
        table: "t".into(),
        memtable_id,
        replayer_address: "r:1".into(),
        first_seq: after + 1,
        last_seq: last,
        after_seq: after,
        replay_task_id: 0,
        size_bytes: 0,
    }
}

#[test]
fn flushes_commit_in_sequence_order_and_the_checkpoint_only_covers_a_contiguous_prefix() {
    let (mut c, _, _) = setup();
    let first = c.submit(chained_flush(1, 0, 10), 100, T0).expect("1");
    let second = c.submit(chained_flush(2, 10, 20), 100, T0).expect("2");
    let third = c
        .submit(chained_flush(3, 30, 40), 100, T0)
        .expect("3 (after a gap)");
    let d = c.tick(T0);
    assert_eq!(d.len(), 2, "two flushers, one slot each");
    let out = |id: u64, d: &[Dispatch]| {
        d.iter()
            .find(|x| x.task_id == id)
            .map(|x| x.output_file_ids[0])
            .expect("dispatched")
    };
    let (out1, out2) = (out(first, &d), out(second, &d));
    // The later memtable finishes first: staged, nothing visible, checkpoint unchanged.
    c.complete(second, 1, success(vec![file(out2, "a", "m", 20)]), T0 + 10)
        .expect("staged");
    let m = c.manifest("t").expect("manifest");
    assert_eq!((m.checkpoint, m.levels.levels[0].len()), (0, 0));
    assert_eq!(c.task(second).map(|t| t.state), Some(TaskState::Running));
    // Its worker's slot is free again: the third flush is dispatched.
    let d3 = c.tick(T0 + 20);
    assert_eq!(
        d3.iter().map(|d| d.task_id).collect::<Vec<_>>(),
        vec![third]
    );
    // Staged work does not expire while it waits for its turn.
    beat_all(&mut c, T0 + 5000);
    c.tick(T0 + 5000);
    assert_eq!(c.task(second).map(|t| t.state), Some(TaskState::Running));
    // The earlier one commits: both land, in order, and the checkpoint covers both.
    c.complete(first, 1, success(vec![file(out1, "a", "z", 10)]), T0 + 5010)
        .expect("commit");
    let m = c.manifest("t").expect("manifest");
    assert_eq!(m.checkpoint, 20);
    assert_eq!(
        m.levels.levels[0].iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![out2, out1],
        "L0 newest first"
    );
    assert_eq!(m.version, 3, "one version per commit");
    assert_eq!(c.task(second).map(|t| t.state), Some(TaskState::Succeeded));
    // The third starts after 30, past the checkpoint (20): it waits, whatever happens.
    let out3 = d3[0].output_file_ids[0];
    c.complete(third, 1, success(vec![file(out3, "n", "p", 40)]), T0 + 5020)
        .expect("staged");
    let m = c.manifest("t").expect("manifest");
    assert_eq!((m.checkpoint, m.levels.levels[0].len()), (20, 2));
    // Cancelling a staged flush drops its result: its files become orphans.
    c.cancel(third, T0 + 5030).expect("cancel");
    assert_eq!(c.manifest("t").map(|m| m.levels.levels[0].len()), Some(2));
}

#[test]
fn every_table_gets_a_replay_that_starts_at_the_checkpoint_current_at_dispatch() {
    let mut config = cfg();
    config.assign_replays = true;
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("t");
    c.create_table("u", vec![], T0).expect("u");
    // No replayer yet: the replays wait in the queue.
    assert!(c.tick(T0).is_empty());
    let replays: Vec<u64> = c
        .tasks()
        .filter(|t| t.kind() == TaskKind::WalReplay)
        .map(|t| t.id)
        .collect();
    assert_eq!(replays.len(), 2);
    // A flush of `t` commits meanwhile (an earlier replayer's), moving the checkpoint.
    c.register_worker("flusher", "f", "f:1", 1, "v", T0)
        .expect("f");
    let fl = c.submit(chained_flush(1, 0, 10), 100, T0).expect("flush");
    let d = c.tick(T0 + 1);
    let out = d[0].output_file_ids[0];
    c.complete(fl, 1, success(vec![file(out, "a", "b", 10)]), T0 + 2)
        .expect("commit");
    let r = c
        .register_worker("replayer", "r", "r:1", 4, "v", T0 + 3)
        .expect("r");
    let d = c.tick(T0 + 3);
    assert_eq!(d.len(), 2);
    for x in &d {
        let TaskSpec::WalReplay {
            table, checkpoint, ..
        } = &x.spec
        else {
            panic!("not a replay: {x:?}");
        };
        assert_eq!(*checkpoint, if table == "t" { 10 } else { 0 }, "{table}");
        assert_eq!(x.worker_id, r);
    }
    assert_eq!(
        c.table("t").map(|t| t.replayer_address.as_str()),
        Some("r:1")
    );
    // Nothing to do for a long time: a replay is never "stuck".
    let mut now = T0 + 3;
    for _ in 0..20 {
        now += 900;
        beat_all(&mut c, now);
        assert!(c.tick(now).is_empty());
    }
    assert!(
        replays
            .iter()
            .all(|id| c.task(*id).map(|t| t.state) == Some(TaskState::Running))
    );
    // Only the replay attempt holding the table may ask for flushes.
    let (task, attempt, worker) = c.replay_owner("t").expect("owner");
    assert_eq!(worker, r);
    c.check_flush_request("t", task, attempt)
        .expect("owner may");
    assert!(matches!(
        c.check_flush_request("t", task, attempt + 1),
        Err(CoreError::Refused(_))
    ));
    // TriggerFlush reaches the owner with its next heartbeat, once.
    c.request_freeze("t").expect("freeze");
    assert_eq!(c.heartbeat(r, &[], now).freeze, vec!["t".to_owned()]);
    assert!(c.heartbeat(r, &[], now).freeze.is_empty());
}

#[test]
fn a_replayer_that_dies_loses_its_tables_and_their_pending_flushes_beyond_max_attempts() {
    let mut config = cfg();
    config.assign_replays = true;
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("t");
    let r1 = c
        .register_worker("replayer", "r1", "r1:1", 4, "v", T0)
        .expect("r1");
    let replay = c.tick(T0)[0].task_id;
    // A flush is queued for one of its memtables (no flusher yet).
    let (task, attempt, _) = c.replay_owner("t").expect("owner");
    c.check_flush_request("t", task, attempt).expect("owner");
    let fl = c.submit(chained_flush(1, 0, 10), 100, T0).expect("flush");
    // The replayer dies and restarts, again and again: more often than max_attempts (3).
    let mut now = T0;
    let mut last = r1;
    for i in 0..5 {
        now += 2000;
        last = c
            .register_worker("replayer", "r", &format!("r{i}:1"), 4, "v", now)
            .expect("r");
        c.tick(now);
        now += 1100;
        c.heartbeat(last, &[], now);
        let d = c.tick(now);
        assert!(d.iter().all(|x| x.task_id == replay), "{d:?}");
    }
    let t = c.task(replay).expect("replay");
    assert_eq!(
        t.state,
        TaskState::Running,
        "a replay is retried for as long as it takes"
    );
    assert!(t.attempt > 3);
    assert_eq!(c.replay_owner("t").map(|o| o.2), Some(last));
    // The dead replayer's memtable cannot be streamed any more: its flush was cancelled.
    assert_eq!(c.task(fl).map(|t| t.state), Some(TaskState::Cancelled));
    // A request quoting the old attempt is refused.
    assert!(c.check_flush_request("t", task, attempt).is_err());
}

#[test]
fn cleanup_keeps_what_is_or_may_become_referenced_and_removed_files_for_a_grace_period() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "c", "c:1", 2, "v", T0)
        .expect("c");
    // Fixture ids far from the allocator's.
    let (a, b) = (file(101, "a", "m", 5), file(102, "b", "n", 6));
    with_files(&mut c, &[(0, a.clone()), (0, b.clone())]);
    let id = c
        .submit(compaction(vec![(0, vec![a, b])], 1), 50, T0)
        .expect("submit");
    let d = c.tick(T0);
    let outs = d[0].output_file_ids.clone();
    assert!(outs.len() >= 2);
    let kept = c
        .referenced_file_ids(T0, 1000)
        .expect("past the startup grace");
    assert!(kept.contains(&101) && kept.contains(&102), "manifest files");
    assert!(
        outs.iter().all(|o| kept.contains(o)),
        "a running attempt's outputs, written or not"
    );
    c.complete(id, 1, success(vec![file(outs[0], "a", "n", 6)]), T0 + 10)
        .expect("commit");
    let kept = c.referenced_file_ids(T0 + 500, 1000).expect("grace");
    assert!(
        kept.contains(&101) && kept.contains(&102),
        "removed inputs, within grace"
    );
    assert!(kept.contains(&outs[0]));
    assert!(!kept.contains(&outs[1]), "an unused id of a finished task");
    let kept = c.referenced_file_ids(T0 + 1010, 1000).expect("grace");
    assert!(!kept.contains(&101) && !kept.contains(&102), "grace over");
    assert!(kept.contains(&outs[0]));
    // A freshly loaded state does not know what became obsolete before: it collects
    // nothing for a grace period.
    let mut fresh = Core::from_snapshot(cfg(), CatalogSnapshot::default(), T0);
    assert!(fresh.referenced_file_ids(T0 + 999, 1000).is_none());
    assert!(fresh.referenced_file_ids(T0 + 1000, 1000).is_some());
}

#[test]
fn an_unreachable_worker_gets_nothing_until_it_heartbeats_again() {
    let (mut c, a, b) = setup();
    let id = c.submit(flush_spec(1, 10), 100, T0).expect("submit");
    let d = c.tick(T0);
    let first = d[0].worker_id;
    let other = if first == a { b } else { a };
    // The first worker was killed: its dispatch fails at once.
    c.dispatch_unreachable(id, 1, T0 + 1);
    // The retry goes to the other worker, not back to the dead one, and counts no failure.
    let d = c.tick(T0 + 1000);
    assert_eq!((d[0].worker_id, d[0].attempt), (other, 2));
    assert!(c.task(id).expect("task").errors.is_empty());
    c.complete(
        id,
        2,
        success(vec![file(d[0].output_file_ids[0], "a", "b", 10)]),
        T0 + 1001,
    )
    .expect("commit");
    // Alone, an unreachable worker gets nothing; once it heartbeats it is back.
    let id2 = c.submit(flush_spec(2, 20), 100, T0 + 1002).expect("submit");
    c.heartbeat(other, &[], T0 + 1002);
    let d = c.tick(T0 + 1003);
    let w = d[0].worker_id;
    c.dispatch_unreachable(id2, 1, T0 + 1004);
    let busy_other = if w == a { b } else { a };
    c.workers.get_mut(&busy_other).expect("w").unreachable = true;
    assert!(c.tick(T0 + 2000).is_empty(), "no reachable worker");
    c.heartbeat(w, &[], T0 + 2001);
    let d = c.tick(T0 + 2002);
    assert_eq!(d[0].worker_id, w);
}

#[test]
fn a_long_chain_of_out_of_order_flushes_commits_in_order_without_recursion() {
    let mut config = cfg();
    config.queue_size = 10_000;
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("table");
    let w = c
        .register_worker("flusher", "f", "f:1", 10_000, "v", T0)
        .expect("f");
    let n = 2_000u64;
    let ids: Vec<u64> = (0..n)
        .map(|i| {
            c.submit(chained_flush(i + 1, i * 10, i * 10 + 10), 100, T0)
                .expect("submit")
        })
        .collect();
    let d = c.tick(T0);
    assert_eq!(d.len(), n as usize);
    let _ = w;
    // Every flush but the first completes first (newest first): all staged.
    for x in d.iter().rev() {
        if x.task_id == ids[0] {
            continue;
        }
        let i = ids.iter().position(|id| *id == x.task_id).expect("ours") as u64;
        c.complete(
            x.task_id,
            1,
            success(vec![file(x.output_file_ids[0], "a", "b", i * 10 + 10)]),
            T0 + 1,
        )
        .expect("staged");
    }
    assert_eq!(c.manifest("t").map(|m| m.checkpoint), Some(0));
    // The first one commits: the whole chain follows, in order, on a normal stack.
    let first = d.iter().find(|x| x.task_id == ids[0]).expect("first");
    c.complete(
        ids[0],
        1,
        success(vec![file(first.output_file_ids[0], "a", "b", 10)]),
        T0 + 2,
    )
    .expect("commit");
    let m = c.manifest("t").expect("manifest");
    assert_eq!(m.checkpoint, n * 10);
    assert_eq!(m.levels.levels[0].len(), n as usize);
    assert!(
        ids.iter()
            .all(|id| c.task(*id).map(|t| t.state) == Some(TaskState::Succeeded))
    );
}

// ---- traffic-aware scheduling and the IO budget -------------------------------------

/// A core with table `t`, a flusher and a compactor of 8 slots, the given traffic policy
/// and IO budget; `t` has two L0 files and an L1 and an L2 file that overlap.
fn traffic_setup(traffic: crate::traffic::TrafficPolicy, io_budget: u64) -> (Core, u64, u64) {
    let mut c = Core::new(CoreConfig {
        traffic,
        io_budget_bytes_per_sec: io_budget,
        ..cfg()
    });
    c.create_table("t", vec![], T0).expect("table");
    let f = c
        .register_worker("flusher", "f", "f:1", 8, "v", T0)
        .expect("f");
    let k = c
        .register_worker("compactor", "k", "k:1", 8, "v", T0)
        .expect("k");
    with_files(
        &mut c,
        &[
            (0, file(1, "a", "m", 10)),
            (0, file(2, "b", "n", 11)),
            (1, file(3, "a", "f", 5)),
            (2, file(4, "a", "z", 1)),
        ],
    );
    (c, f, k)
}

/// Queues one task of every class: flush, L0 compaction, deep compaction, cleanup,
/// statistics. Returns (urgent ids, deferrable ids).
fn one_of_each(c: &mut Core) -> (Vec<u64>, Vec<u64>) {
    let m = c.manifest("t").expect("t").levels.clone();
    let l0 = m.levels[0].clone();
    let flush = c.submit(flush_spec(1, 30), 100, T0).expect("flush");
    let l0c = c
        .submit(compaction(vec![(0, l0)], 1), 80, T0)
        .expect("l0 compaction");
    let deep = c
        .submit(compaction(vec![(2, m.levels[2].clone())], 3), 70, T0)
        .expect("deep compaction");
    let cleanup = c
        .submit(
            TaskSpec::Cleanup {
                table: "t".into(),
                sst_paths: vec![],
                wal_paths: vec![],
                dry_run: false,
            },
            10,
            T0,
        )
        .expect("cleanup");
    let stats = c
        .submit(TaskSpec::StatisticsUpdate { table: "t".into() }, 10, T0)
        .expect("stats");
    (vec![flush, l0c], vec![deep, cleanup, stats])
}

fn running(c: &Core, ids: &[u64]) -> bool {
    ids.iter()
        .all(|id| c.task(*id).is_some_and(|t| t.state == TaskState::Running))
}

fn pending(c: &Core, ids: &[u64]) -> bool {
    ids.iter()
        .all(|id| c.task(*id).is_some_and(|t| t.state == TaskState::Pending))
}

#[test]
fn peak_ingest_defers_deep_compactions_cleanup_and_statistics_but_never_urgent_work() {
    let policy = crate::traffic::TrafficPolicy {
        peak_ingest_bytes_per_sec: 1 << 20,
        ..Default::default()
    };
    let (mut c, _, _) = traffic_setup(policy, 0);
    c.record_ingest("t", 3.0 * f64::from(1 << 20), T0);
    c.record_ingest("no-such-table", 1e12, T0);
    assert_eq!(c.ingest_bytes_per_sec(T0), 3.0 * f64::from(1 << 20));
    let (urgent, deferrable) = one_of_each(&mut c);
    c.tick(T0);
    assert!(running(&c, &urgent), "flush and L0 compaction run");
    assert!(pending(&c, &deferrable), "the rest waits");
    for id in &deferrable {
        let t = c.task(*id).expect("task");
        let why = c.waiting_reason(t, T0);
        assert!(
            why.starts_with("deferred: ingest") && why.contains("peak_ingest_bytes_per_sec"),
            "{why}"
        );
    }
    // Still above the peak a while later: still waiting.
    c.record_ingest("t", 2.0 * f64::from(1 << 20), T0 + 500);
    c.tick(T0 + 500);
    assert!(pending(&c, &deferrable));
    // Ingest drops: the deferred work runs.
    c.record_ingest("t", 1000.0, T0 + 900);
    c.tick(T0 + 900);
    assert!(
        running(&c, &deferrable),
        "deferred work runs once ingest drops"
    );
}

#[test]
fn a_silent_replayer_no_longer_counts_as_ingest() {
    let policy = crate::traffic::TrafficPolicy {
        peak_ingest_bytes_per_sec: 1000,
        ..Default::default()
    };
    let (mut c, _, _) = traffic_setup(policy, 0);
    c.record_ingest("t", 5000.0, T0);
    assert!(c.deferral(T0).is_some());
    // heartbeat_timeout is 1 s in these tests.
    assert!(c.deferral(T0 + 1001).is_none());
}

#[test]
fn a_closed_maintenance_window_defers_until_it_opens() {
    // T0 is 00:16:40 UTC of 1 Jan 1970; the window opens at 01:00.
    let policy = crate::traffic::TrafficPolicy {
        windows: runtime::config::MaintenanceWindows(vec!["01:00-02:00".parse().expect("valid")]),
        ..Default::default()
    };
    let (mut c, f, k) = traffic_setup(policy, 0);
    let (urgent, deferrable) = one_of_each(&mut c);
    c.tick(T0);
    assert!(running(&c, &urgent));
    assert!(pending(&c, &deferrable));
    let why = c.waiting_reason(c.task(deferrable[0]).expect("task"), T0);
    assert!(
        why.contains("maintenance_windows 01:00-02:00") && why.contains("0h43m"),
        "{why}"
    );
    let one_am = 3_600_000;
    for w in [f, k] {
        c.heartbeat(w, &[], one_am);
    }
    c.tick(one_am);
    assert!(running(&c, &deferrable), "the window opened");
}

#[test]
fn an_urgent_l0_compaction_supersedes_a_deferred_one_holding_its_files() {
    let policy = crate::traffic::TrafficPolicy {
        peak_ingest_bytes_per_sec: 1000,
        ..Default::default()
    };
    let (mut c, _, _) = traffic_setup(policy, 0);
    c.record_ingest("t", 5000.0, T0);
    // A deferred L1 -> L2 compaction holds file 3, which the L0 files overlap.
    let l1 = c.manifest("t").expect("t").levels.levels[1].clone();
    let l2 = c.manifest("t").expect("t").levels.levels[2].clone();
    let deep = c
        .submit(compaction(vec![(1, l1), (2, l2)], 2), 75, T0)
        .expect("deep");
    with_files(
        &mut c,
        &[(0, file(5, "c", "o", 12)), (0, file(6, "d", "p", 13))],
    );
    let (queued, _) = c.plan_compactions(&level_strategy(), true, T0);
    assert_eq!(queued.len(), 1, "the L0 compaction is queued");
    assert_eq!(c.task(deep).map(|t| t.state), Some(TaskState::Cancelled));
    let l0 = c.task(queued[0]).expect("l0");
    assert!(l0.spec.input_file_ids().contains(&3), "{:?}", l0.spec);
}

#[test]
fn the_io_budget_is_shared_by_running_flushes_and_compactions_and_rebalanced() {
    let (mut c, f, k) = traffic_setup(crate::traffic::TrafficPolicy::default(), 10_000);
    let m = c.manifest("t").expect("t").levels.clone();
    let deep = c
        .submit(compaction(vec![(2, m.levels[2].clone())], 3), 70, T0)
        .expect("deep");
    let d = c.tick(T0);
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].io_bytes_per_sec, 10_000, "alone: the whole budget");
    // A flush (urgent) starts: 4:1.
    let flush = c.submit(flush_spec(1, 30), 100, T0).expect("flush");
    let d = c.tick(T0 + 10);
    assert_eq!((d[0].task_id, d[0].io_bytes_per_sec), (flush, 8_000));
    // The running deep compaction learns its new share from its next heartbeat.
    let reply = c.heartbeat(k, &[(deep, 1, Progress::default())], T0 + 20);
    assert_eq!(reply.budgets, vec![(deep, 1, 2_000)]);
    let reply = c.heartbeat(f, &[(flush, 1, Progress::default())], T0 + 20);
    assert_eq!(reply.budgets, vec![(flush, 1, 8_000)]);
    // The flush ends: the compaction gets everything again.
    let out = d[0].output_file_ids[0];
    c.complete(flush, 1, success(vec![file(out, "a", "b", 30)]), T0 + 30)
        .expect("commit");
    let reply = c.heartbeat(k, &[(deep, 1, Progress::default())], T0 + 40);
    assert_eq!(reply.budgets, vec![(deep, 1, 10_000)]);
    // Without a budget nothing is sent.
    let (mut c, _, k) = traffic_setup(crate::traffic::TrafficPolicy::default(), 0);
    let id = c
        .submit(compaction(vec![(2, m.levels[2].clone())], 3), 70, T0)
        .expect("deep");
    assert_eq!(c.tick(T0)[0].io_bytes_per_sec, 0);
    assert!(
        c.heartbeat(k, &[(id, 1, Progress::default())], T0)
            .budgets
            .is_empty()
    );
}

// ---- poison-input quarantine --------------------------------------------------------

fn corruption(file: u64) -> Outcome {
    Outcome::Failure(ErrorRecord {
        attempt: 0,
        kind: "corruption".into(),
        message: format!("corrupt block in sst {file} at offset 4096"),
        file: format!("tables/t/sst/{file}.sst"),
        offset: 4096,
        retriable: false,
        at_ms: 0,
    })
}

/// Runs every dispatch like a compactor whose storage holds the corrupt file `bad`: a
/// compaction that reads it fails with a corruption error, any other one merges its
/// inputs into one output file. Returns the number of dispatches.
fn run_compactions(c: &mut Core, bad: u64, mut now: i64) -> (usize, i64) {
    let mut n = 0;
    let workers: Vec<u64> = c.workers().map(|w| w.record.id).collect();
    for _ in 0..200 {
        now += 2000;
        for w in &workers {
            c.heartbeat(*w, &[], now);
        }
        let d = c.tick(now);
        if d.is_empty() && c.live_tasks().next().is_none() {
            break;
        }
        for d in d {
            n += 1;
            let TaskSpec::Compaction { inputs, .. } = &d.spec else {
                panic!("only compactions here: {:?}", d.spec)
            };
            let files: Vec<&FileMeta> = inputs.iter().flat_map(|(_, f)| f).collect();
            let outcome = if files.iter().any(|f| f.id == bad) {
                corruption(bad)
            } else {
                let lo = files.iter().map(|f| f.smallest_seq).min().unwrap_or(0);
                let hi = files.iter().map(|f| f.largest_seq).max().unwrap_or(0);
                let mut out = file(d.output_file_ids[0], "a", "z", hi);
                out.smallest_seq = lo;
                out.smallest = files
                    .iter()
                    .map(|f| f.smallest.clone())
                    .min()
                    .unwrap_or_default();
                out.largest = files
                    .iter()
                    .map(|f| f.largest.clone())
                    .max()
                    .unwrap_or_default();
                success(vec![out])
            };
            c.complete(d.task_id, d.attempt, outcome, now + 1)
                .expect("completion accepted");
        }
    }
    (n, now)
}

#[test]
fn bisection_quarantines_only_the_corrupt_file_and_the_other_fifteen_are_compacted() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "k", "k:1", 4, "v", T0)
        .expect("k");
    let l0: Vec<(u32, FileMeta)> = (1..=16).map(|i| (0, file(i, "a", "z", i))).collect();
    with_files(&mut c, &l0);
    let bad = 11;
    let id = c
        .submit(
            compaction(vec![(0, l0.iter().map(|(_, f)| f.clone()).collect())], 1),
            80,
            T0,
        )
        .expect("submit");
    let (dispatches, now) = run_compactions(&mut c, bad, T0);
    let t = c.task(id).expect("task");
    assert_eq!(t.state, TaskState::Failed);
    assert_eq!(
        t.errors.len(),
        2,
        "retried once, then bisected: {:?}",
        t.errors
    );
    // 16 -> 8 -> 4 -> 2 -> 1: two probes per round.
    assert!(dispatches <= 2 + 2 * 4, "{dispatches} dispatches");
    let q: Vec<&QuarantineRecord> = c.quarantined().collect();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(
        (q[0].table.as_str(), q[0].file_id, q[0].level),
        ("t", bad, 0)
    );
    assert!(
        q[0].error.message.contains("corrupt block"),
        "{:?}",
        q[0].error
    );
    // Everything else was compacted by the probes: L0 holds the bad file and the probes'
    // outputs, and no input other than it is left.
    let m = c.manifest("t").expect("t");
    let l0_ids: Vec<u64> = m.levels.levels[0].iter().map(|f| f.id).collect();
    assert!(l0_ids.contains(&bad));
    assert!(
        l0_ids.iter().all(|id| *id == bad || *id > 16),
        "only the bad file is left of the inputs: {l0_ids:?}"
    );
    // The picker leaves it out: the rest of L0 goes down without it.
    with_files(
        &mut c,
        &[(0, file(50, "a", "z", 50)), (0, file(51, "a", "z", 51))],
    );
    let (queued, _) = c.plan_compactions(&level_strategy(), true, now);
    assert_eq!(queued.len(), 1);
    let spec = &c.task(queued[0]).expect("pick").spec;
    assert!(!spec.input_file_ids().contains(&bad), "{spec:?}");
    assert!(
        matches!(
            spec,
            TaskSpec::Compaction {
                bottommost: false,
                ..
            }
        ),
        "no tombstone may be dropped while a quarantined file may hold older versions"
    );
    // Cleanup keeps it.
    let refs = c
        .referenced_file_ids(now + 100_000, 1)
        .expect("past the grace period");
    assert!(refs.contains(&bad));
    // It survives a restart.
    let batch = c.take_batch();
    assert!(!batch.is_empty());
    let snap = CatalogSnapshot {
        tables: c.tables.clone(),
        manifests: c.manifests.clone(),
        tasks: c.tasks.clone(),
        quarantined: c.quarantined.clone(),
        ..Default::default()
    };
    let mut r = Core::from_snapshot(cfg(), snap, now);
    assert_eq!(r.quarantined().count(), 1);
    // Release: wrong table or id is refused and changes nothing; the right one puts it back.
    assert!(matches!(
        r.release_quarantined("u", bad),
        Err(CoreError::NotQuarantined { .. })
    ));
    assert!(r.release_quarantined("t", 999).is_err());
    assert_eq!(r.quarantined().count(), 1);
    // A manual full compaction would read it: refused, naming the file and the way out.
    let refused = crate::manual::manual_compaction(&r, "t", None, b"", b"", 1 << 20, true);
    let Err(CoreError::Refused(msg)) = refused else {
        panic!("a manual compaction over a quarantined file: {refused:?}");
    };
    assert!(msg.contains(&format!("file {bad}")), "{msg}");
    assert!(msg.contains("release-quarantined"), "{msg}");
    let released = r.release_quarantined("t", bad).expect("release");
    assert_eq!(released.file_id, bad);
    assert_eq!(r.quarantined().count(), 0);
    assert!(!r.take_batch().is_empty(), "the release is persisted");
    let spec = crate::manual::manual_compaction(&r, "t", None, b"", b"", 1 << 20, true)
        .expect("released: the manual compaction is allowed again");
    assert!(spec.is_some_and(|s| s.input_file_ids().contains(&bad)));
}

#[test]
fn a_deeper_quarantined_file_is_found_through_its_own_level_probe() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "k", "k:1", 4, "v", T0)
        .expect("k");
    with_files(
        &mut c,
        &[
            (0, file(1, "a", "z", 10)),
            (0, file(2, "a", "z", 11)),
            (1, file(3, "a", "f", 5)),
            (1, file(4, "g", "m", 5)),
            (1, file(5, "n", "z", 5)),
        ],
    );
    let m = c.manifest("t").expect("t").levels.clone();
    c.submit(
        compaction(vec![(0, m.levels[0].clone()), (1, m.levels[1].clone())], 1),
        80,
        T0,
    )
    .expect("submit");
    run_compactions(&mut c, 4, T0);
    let q: Vec<(u64, u32)> = c.quarantined().map(|q| (q.file_id, q.level)).collect();
    assert_eq!(q, vec![(4, 1)]);
    // Level 1 is still non-overlapping (the probes rewrote contiguous key ranges).
    assert!(c.manifest("t").expect("t").levels.check().is_ok());
}

// ---- preemption for stalls ----------------------------------------------------------

#[test]
fn a_stall_preempts_the_deep_compaction_its_partial_result_commits_and_l0_gets_the_slot() {
    let (mut c, _, k) = traffic_setup(crate::traffic::TrafficPolicy::default(), 0);
    c.cfg.max_running.insert(TaskKind::Compaction, 1);
    // A deep compaction of L2 (file 4, a..z) into the empty L3 runs.
    let m = c.manifest("t").expect("t").levels.clone();
    let deep = c
        .submit(compaction(vec![(2, m.levels[2].clone())], 3), 70, T0)
        .expect("deep");
    let d = c.tick(T0);
    assert_eq!(d.len(), 1);
    // The L0 compaction waits for the one slot.
    let l0 = c
        .submit(
            compaction(vec![(0, m.levels[0].clone()), (1, m.levels[1].clone())], 1),
            80,
            T0,
        )
        .expect("l0");
    assert!(c.tick(T0 + 10).is_empty(), "the one slot is taken");
    // No stall, or a stall of another table: nothing happens.
    assert!(c.preempt_for_stalls(&BTreeSet::new()).is_empty());
    assert!(
        c.preempt_for_stalls(&BTreeSet::from(["u".to_owned()]))
            .is_empty()
    );
    let stalling = BTreeSet::from(["t".to_owned()]);
    assert_eq!(c.preempt_for_stalls(&stalling), vec![(deep, 1)]);
    assert!(c.preempt_for_stalls(&stalling).is_empty(), "asked once");
    let reply = c.heartbeat(k, &[(deep, 1, Progress::default())], T0 + 20);
    assert_eq!(reply.preempt, vec![(deep, 1)]);
    assert!(c.heartbeat(k, &[], T0 + 30).preempt.is_empty());
    // The partial result: keys a..m written to L3; file 4 straddles the cut, so it is not
    // consumed and stays in L2 (an empty consumed list means none here, not all).
    // (The fixture's files took ids 1 to 4 without allocating them: use a later one.)
    let out = *d[0].output_file_ids.last().expect("ids");
    c.complete(
        deep,
        1,
        Outcome::Success {
            files: vec![file(out, "a", "m", 1)],
            consumed_inputs: vec![],
            stats: None,
            partial: true,
        },
        T0 + 40,
    )
    .expect("partial commit");
    let levels = &c.manifest("t").expect("t").levels.levels;
    assert_eq!(levels[2].iter().map(|f| f.id).collect::<Vec<_>>(), vec![4]);
    assert_eq!(
        levels[3].iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![out]
    );
    assert_eq!(c.task(deep).map(|t| t.state), Some(TaskState::Succeeded));
    // The slot goes to the L0 compaction.
    let d = c.tick(T0 + 60);
    assert_eq!(d.iter().map(|d| d.task_id).collect::<Vec<_>>(), vec![l0]);
}

#[test]
fn urgent_work_is_never_preempted_and_a_free_slot_needs_no_preemption() {
    let (mut c, _, _) = traffic_setup(crate::traffic::TrafficPolicy::default(), 0);
    c.cfg.max_running.insert(TaskKind::Compaction, 2);
    let m = c.manifest("t").expect("t").levels.clone();
    c.submit(compaction(vec![(0, m.levels[0].clone())], 0), 80, T0)
        .expect("l0 into l0");
    c.tick(T0);
    let stalling = BTreeSet::from(["t".to_owned()]);
    c.submit(compaction(vec![(1, m.levels[1].clone())], 1), 80, T0)
        .expect("l1 rewrite");
    // A slot is free: nothing to preempt (and nothing urgent waits anyway).
    assert!(c.preempt_for_stalls(&stalling).is_empty());
    c.cfg.max_running.insert(TaskKind::Compaction, 1);
    let waiting = c
        .submit(compaction(vec![(2, m.levels[2].clone())], 3), 70, T0)
        .expect("deep waits");
    let _ = waiting;
    // Only the urgent L0 compaction runs: it is never preempted.
    assert!(c.preempt_for_stalls(&stalling).is_empty());
}

#[test]
fn a_flush_cancelled_by_a_replay_dispatched_in_the_same_round_is_not_dispatched() {
    let mut config = cfg();
    config.assign_replays = true;
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("t");
    c.register_worker("replayer", "r1", "r1:1", 4, "v", T0)
        .expect("r1");
    let replay = c.tick(T0)[0].task_id;
    beat_all(&mut c, T0 + 19_900);
    // Its replayer asks for a flush long after the replay task was queued: with aging, the
    // replay's retry now comes first in a dispatch round.
    let (task, attempt, _) = c.replay_owner("t").expect("owner");
    c.check_flush_request("t", task, attempt).expect("owner");
    let fl = c
        .submit(chained_flush(1, 0, 10), 100, T0 + 20_000)
        .expect("flush");
    // The replayer dies; its replay is retried once a replayer and a flusher are there.
    assert!(c.tick(T0 + 21_000).is_empty());
    c.register_worker("replayer", "r2", "r2:1", 4, "v", T0 + 22_000)
        .expect("r2");
    c.register_worker("flusher", "f", "f:1", 4, "v", T0 + 22_000)
        .expect("f");
    let d = c.tick(T0 + 22_000);
    // The new replay cancels the old replayer's flush (its memtable is gone) ...
    assert_eq!(c.task(fl).map(|t| t.state), Some(TaskState::Cancelled));
    // ... and the same round must not dispatch it anyway (found by the simulation: the
    // cancelled flush came back to life as Running, then Pending, and never finished).
    assert!(d.iter().any(|x| x.task_id == replay), "{d:?}");
    assert!(d.iter().all(|x| x.task_id != fl), "{d:?}");
}

#[test]
fn staged_flushes_hold_no_cluster_slot_so_their_predecessor_still_runs() {
    let mut config = cfg();
    config.max_running.insert(TaskKind::MemtableFlush, 1);
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("table");
    c.register_worker("flusher", "a", "a:1", 4, "v", T0)
        .expect("a");
    // The later memtable's flush is queued (and dispatched) first.
    let second = c.submit(chained_flush(2, 10, 20), 100, T0).expect("2");
    let first = c.submit(chained_flush(1, 0, 10), 100, T0).expect("1");
    let d = c.tick(T0);
    assert_eq!(d.iter().map(|x| x.task_id).collect::<Vec<_>>(), [second]);
    c.complete(
        second,
        1,
        success(vec![file(d[0].output_file_ids[0], "a", "m", 20)]),
        T0 + 10,
    )
    .expect("staged");
    // Staged, it waits for the first; the first must run although the limit is 1 (found by
    // the simulation: staged flushes filled max_concurrent_flushes and their predecessor
    // never ran again, a deadlock).
    let d = c.tick(T0 + 20);
    assert_eq!(d.iter().map(|x| x.task_id).collect::<Vec<_>>(), [first]);
    let waiting = c.task(second).expect("second");
    assert!(c.waiting_reason(waiting, T0 + 20).is_empty());
    c.complete(
        first,
        1,
        success(vec![file(d[0].output_file_ids[0], "a", "z", 10)]),
        T0 + 30,
    )
    .expect("commit");
    assert_eq!(c.manifest("t").map(|m| m.checkpoint), Some(20));
}

#[test]
fn after_a_restart_staged_flushes_occupy_no_worker_slot() {
    let disk = catalog::MemCatalog::new();
    let mut c = Core::new(cfg());
    c.create_table("t", vec![], T0).expect("table");
    let w = c
        .register_worker("flusher", "a", "a:1", 1, "v", T0)
        .expect("a");
    let second = c.submit(chained_flush(2, 10, 20), 100, T0).expect("2");
    let first = c.submit(chained_flush(1, 0, 10), 100, T0).expect("1");
    let d = c.tick(T0);
    assert_eq!(d.iter().map(|x| x.task_id).collect::<Vec<_>>(), [second]);
    c.complete(
        second,
        1,
        success(vec![file(d[0].output_file_ids[0], "a", "m", 20)]),
        T0 + 10,
    )
    .expect("staged");
    catalog::CatalogStore::write_many(&disk, vec![c.take_batch()]).expect("persist");
    // The scheduler restarts: the staged flush is loaded as running, but holds no slot of
    // its worker, so the first flush still gets one (found by the simulation: after a
    // scheduler crash, staged flushes filled every flusher's slots and the flush they
    // waited for was never dispatched again).
    let mut r = Core::from_snapshot(
        cfg(),
        catalog::CatalogStore::load(&disk).expect("load"),
        T0 + 20,
    );
    r.heartbeat(w, &[], T0 + 30);
    let d = r.tick(T0 + 30);
    assert_eq!(d.iter().map(|x| x.task_id).collect::<Vec<_>>(), [first]);
}

// ---- quarantine of WAL segments ----------------------------------------------------------

fn replay_corruption(attempt: u32, file: &str) -> Outcome {
    Outcome::Failure(ErrorRecord {
        attempt,
        kind: "corruption".into(),
        message: format!("ReplayError: table t: corrupt record in wal segment {file}"),
        file: file.into(),
        offset: 40,
        retriable: false,
        at_ms: 0,
    })
}

#[test]
fn a_corrupt_wal_segment_is_quarantined_skipped_kept_and_repaired_after_release() {
    const SEG: &str = "tables/t/wal/00000000000000000101.wal";
    let mut config = cfg();
    config.assign_replays = true;
    let mut c = Core::new(config);
    c.create_table("t", vec![], T0).expect("t");
    c.register_worker("replayer", "r", "r:1", 4, "v", T0)
        .expect("r");
    c.register_worker("compactor", "k", "k:1", 4, "v", T0)
        .expect("k");
    with_files(
        &mut c,
        &[(0, file(1001, "a", "m", 20)), (2, file(1002, "a", "z", 5))],
    );
    let d = c.tick(T0 + 1);
    let replay = d
        .iter()
        .find(|x| x.spec.kind() == TaskKind::WalReplay)
        .expect("replay dispatched")
        .clone();

    // The first corruption is retried (the segment may be being replaced).
    c.complete(replay.task_id, 1, replay_corruption(1, SEG), T0 + 2)
        .expect("report");
    assert_eq!(c.quarantined().count(), 0);
    assert_eq!(
        c.task(replay.task_id).map(|t| t.state),
        Some(TaskState::Pending)
    );
    beat_all(&mut c, T0 + 2_000);
    let d = c.tick(T0 + 2_000);
    assert!(
        d.iter()
            .any(|x| x.task_id == replay.task_id && x.attempt == 2)
    );
    // The second quarantines the segment and queues a replay that skips it.
    c.complete(replay.task_id, 2, replay_corruption(2, SEG), T0 + 2_001)
        .expect("report");
    assert_eq!(
        c.task(replay.task_id).map(|t| t.state),
        Some(TaskState::Failed)
    );
    let q: Vec<QuarantineRecord> = c.quarantined().cloned().collect();
    assert_eq!(q.len(), 1, "{q:?}");
    let qid = q[0].file_id;
    assert!(qid != 1001 && qid != 1002, "an id of its own, not an SST's");
    assert_eq!(q[0].wal.as_ref().map(|w| w.first_seq), Some(101));
    assert_eq!(q[0].error.file, SEG);
    assert_eq!(c.wal_skips("t"), vec![101]);
    beat_all(&mut c, T0 + 2_002);
    let d = c.tick(T0 + 2_002);
    let next = d
        .iter()
        .find(|x| x.spec.kind() == TaskKind::WalReplay)
        .expect("a new replay");
    assert_ne!(next.task_id, replay.task_id);
    let TaskSpec::WalReplay { skip_segments, .. } = &next.spec else {
        panic!("{next:?}");
    };
    assert_eq!(skip_segments, &vec![101]);
    // The same failure again (an operator's retried replay without the skip) adds no record.
    assert_eq!(c.quarantined().count(), 1);

    // It survives a restart.
    c.take_batch();
    let snap = CatalogSnapshot {
        tables: c.tables.clone(),
        manifests: c.manifests.clone(),
        tasks: c.tasks.clone(),
        quarantined: c.quarantined.clone(),
        ..Default::default()
    };
    let mut c = Core::from_snapshot(cfg(), snap, T0 + 3_000);
    c.register_worker("compactor", "k", "k:1", 4, "v", T0 + 3_000)
        .expect("k");
    assert_eq!(c.wal_skips("t"), vec![101]);

    // Released: a full compaction with the segment as an extra input; the replay keeps
    // skipping it until that commits.
    let released = c.release_quarantined("t", qid).expect("release");
    assert!(released.wal.is_some_and(|w| w.released));
    assert!(matches!(
        c.release_quarantined("t", qid),
        Err(CoreError::Refused(_))
    ));
    let (queued, _) = c.plan_compactions(&level_strategy(), true, T0 + 3_001);
    assert_eq!(queued.len(), 1);
    let repair = c.task(queued[0]).expect("repair").clone();
    let TaskSpec::Compaction {
        inputs,
        output_level,
        bottommost,
        wal_inputs,
        ..
    } = &repair.spec
    else {
        panic!("{repair:?}");
    };
    assert_eq!(wal_inputs, &vec![101]);
    assert_eq!(*output_level, 2, "into the deepest non-empty level");
    assert!(*bottommost, "nothing else of the table is quarantined");
    let ids: Vec<u64> = inputs
        .iter()
        .flat_map(|(_, f)| f.iter().map(|f| f.id))
        .collect();
    assert_eq!(ids, vec![1001, 1002], "every file of every level");
    assert_eq!(c.wal_skips("t"), vec![101]);
    let d = c.tick(T0 + 3_002);
    let x = d
        .iter()
        .find(|x| x.task_id == repair.id)
        .expect("dispatched");
    let TaskSpec::Compaction { wal_inputs, .. } = &x.spec else {
        panic!("{x:?}");
    };
    assert_eq!(wal_inputs, &vec![101], "the dispatch carries the segment");
    let out = x.output_file_ids[0];
    c.complete(
        repair.id,
        x.attempt,
        success(vec![file(out, "a", "z", 101)]),
        T0 + 3_003,
    )
    .expect("commit");
    assert_eq!(c.quarantined().count(), 0, "repaired: out of quarantine");
    assert!(c.wal_skips("t").is_empty());
    let levels = &c.manifest("t").expect("m").levels.levels;
    assert!(levels[0].is_empty() && levels[1].is_empty());
    assert_eq!(
        levels[2].iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![out]
    );
    assert!(!c.take_batch().is_empty(), "the removal is persisted");
}

#[test]
fn a_repair_that_meets_corruption_leaves_the_segment_quarantined_and_unreleased() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "k", "k:1", 4, "v", T0)
        .expect("k");
    with_files(&mut c, &[(1, file(1, "a", "z", 5))]);
    c.quarantined.insert(
        77,
        QuarantineRecord {
            table: "t".into(),
            file_id: 77,
            level: 0,
            error: ErrorRecord {
                attempt: 1,
                kind: "corruption".into(),
                message: "first".into(),
                file: "tables/t/wal/00000000000000000009.wal".into(),
                offset: 1,
                retriable: false,
                at_ms: 0,
            },
            since_ms: T0,
            wal: Some(catalog::WalQuarantine {
                first_seq: 9,
                repair_task: 0,
                released: false,
            }),
        },
    );
    // An SST of the table quarantined too: the repair waits (it would read that file).
    c.quarantined.insert(
        78,
        QuarantineRecord {
            wal: None,
            file_id: 1,
            level: 1,
            ..c.quarantined[&77].clone()
        },
    );
    c.release_quarantined("t", 77).expect("release");
    let (queued, _) = c.plan_compactions(&level_strategy(), true, T0 + 1);
    assert!(queued.is_empty(), "waits while an SST is quarantined");
    c.quarantined.remove(&78);
    let (queued, _) = c.plan_compactions(&level_strategy(), true, T0 + 2);
    assert_eq!(queued.len(), 1);
    let d = c.tick(T0 + 3);
    let x = d
        .iter()
        .find(|x| x.task_id == queued[0])
        .expect("dispatched");
    let still = Outcome::Failure(ErrorRecord {
        attempt: x.attempt,
        kind: "corruption".into(),
        message: "still corrupt".into(),
        file: "tables/t/wal/00000000000000000009.wal".into(),
        offset: 3,
        retriable: false,
        at_ms: 0,
    });
    c.complete(queued[0], x.attempt, still, T0 + 4)
        .expect("report");
    assert_eq!(
        c.task(queued[0]).map(|t| t.state),
        Some(TaskState::Failed),
        "a repair is not bisected"
    );
    let q = &c.quarantined[&77];
    let w = q.wal.as_ref().expect("wal");
    assert!(!w.released && w.repair_task == 0, "{q:?}");
    assert_eq!(q.error.message, "still corrupt");
    let (queued, _) = c.plan_compactions(&level_strategy(), true, T0 + 5);
    assert!(queued.is_empty(), "no new repair until released again");
    assert_eq!(c.manifest("t").map(|m| m.levels.levels[1].len()), Some(1));
}

#[test]
fn a_compaction_dispatch_carries_the_ends_of_the_grandparent_files_it_overlaps() {
    let (mut c, _, _) = setup();
    c.register_worker("compactor", "k", "k:1", 4, "v", T0)
        .expect("k");
    with_files(
        &mut c,
        &[
            (0, file(1, "a", "k", 20)),
            (1, file(2, "b", "m", 10)),
            (2, file(3, "a", "f", 5)),
            (2, file(4, "g", "p", 5)),
            (2, file(5, "q", "z", 5)),
        ],
    );
    let id = c
        .submit(
            compaction(
                vec![
                    (0, vec![file(1, "a", "k", 20)]),
                    (1, vec![file(2, "b", "m", 10)]),
                ],
                1,
            ),
            80,
            T0,
        )
        .expect("queued");
    let d = c.tick(T0 + 1);
    let x = d.iter().find(|x| x.task_id == id).expect("dispatched");
    assert_eq!(x.grandparent_bounds, [b"f".to_vec(), b"p".to_vec()]);
    let crate::convert::DispatchCall::Compact(req) = crate::convert::dispatch_call(x) else {
        panic!("not a compaction");
    };
    assert_eq!(
        req.spec.expect("spec").grandparent_bounds,
        [b"f".to_vec(), b"p".to_vec()],
        "they reach the compactor"
    );
}
