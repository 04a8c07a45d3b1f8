//! The scheduler through its real gRPC API, as a real process, with fake workers: dispatch
//! and commit, dead and stuck workers, zombie attempts fenced, cancellation through the
//! heartbeat, a full queue, lock conflicts, and SIGKILL + restart with everything intact.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use proto::v1 as pb;
use tests::cluster::Sched;
use tests::fake::{FakeWorker, file};
use tests::{Ports, Proc, service_env, wait_healthy};
use tonic::Code;

/// Timers short enough for leases and stuck detection to play out in a test.
const FAST_TIMERS: [(&str, &str); 5] = [
    ("DP__SCHEDULER__HEARTBEAT_INTERVAL", "100ms"),
    ("DP__SCHEDULER__HEARTBEAT_TIMEOUT", "1s"),
    ("DP__SCHEDULER__STUCK_TIMEOUT", "2s"),
    ("DP__SCHEDULER__RETRY_BACKOFF_BASE", "100ms"),
    ("DP__SCHEDULER__RETRY_BACKOFF_MAX", "500ms"),
];

async fn start(dir: &Path, extra: &[(&str, &str)], ports: Option<Ports>) -> Sched {
    let env: Vec<(&str, &str)> = FAST_TIMERS.iter().chain(extra).copied().collect();
    Sched::start(dir, &env, ports).await
}

async fn task(s: &mut Sched, id: u64) -> pb::Task {
    s.admin
        .get_task(pb::GetTaskRequest { task_id: id })
        .await
        .unwrap()
        .into_inner()
}

async fn manifest(s: &mut Sched, table: &str) -> pb::Manifest {
    s.admin
        .get_manifest(pb::GetManifestRequest {
            table: table.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_dispatched_completed_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[], None).await;
    s.create_table("t").await;
    let mut w = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 2).await;
    let id = s.request_flush("t", 1, 10).await.unwrap();
    let d = w.next_dispatch(WAIT).await.expect("dispatched");
    assert_eq!((d.task_id, d.attempt), (id, 1));
    assert!(!d.output_file_ids.is_empty());
    w.complete_flush(&d, vec![file(d.output_file_ids[0], b"a", b"z", 10)])
        .await
        .unwrap();
    let m = manifest(&mut s, "t").await;
    assert_eq!(m.levels[0].files.len(), 1);
    assert_eq!(m.levels[0].files[0].file_id, d.output_file_ids[0]);
    assert_eq!(m.checkpoint, 10);
    assert_eq!(
        task(&mut s, id).await.state,
        pb::TaskState::Succeeded as i32
    );
}

/// A background heartbeat loop: its handle (returns the worker), the attempts it reports
/// as running, and its stop switch.
type KeepAlive = (
    tokio::task::JoinHandle<FakeWorker>,
    tokio::sync::watch::Sender<Vec<(u64, u32)>>,
    tokio::sync::oneshot::Sender<()>,
);

/// Keeps `w` heartbeating (reporting `running`, with growing progress if `growing`) until
/// stopped.
fn keep_alive(mut w: FakeWorker, growing: bool) -> KeepAlive {
    let (running_tx, running_rx) = tokio::sync::watch::channel(Vec::<(u64, u32)>::new());
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let handle = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            let progress = if growing { n } else { 7 };
            let running: Vec<_> = running_rx
                .borrow()
                .iter()
                .map(|(t, a)| (*t, *a, progress))
                .collect();
            let _ = w.heartbeat(&running).await;
            tokio::select! {
                _ = &mut stop_rx => return w,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    (handle, running_tx, stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_worker_loses_its_task_and_its_late_completion_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[], None).await;
    s.create_table("t").await;
    // The first worker gets the task, then goes silent.
    let mut a = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 1).await;
    let id = s.request_flush("t", 1, 10).await.unwrap();
    let first = a.next_dispatch(WAIT).await.expect("first dispatch");
    let b = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 1).await;
    let (b_handle, _, b_stop) = keep_alive(b, true);
    let version_before = manifest(&mut s, "t").await.version;
    // No heartbeat from `a` for more than heartbeat_timeout (1 s): retried on `b`.
    let t = loop {
        let t = task(&mut s, id).await;
        if t.attempt >= 2 && t.state == pb::TaskState::Running as i32 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        t.errors.iter().any(|e| e.message.contains("lease_expired")),
        "{:?}",
        t.errors
    );
    b_stop.send(()).unwrap();
    let mut b = b_handle.await.unwrap();
    let second = b.next_dispatch(WAIT).await.expect("re-dispatched to b");
    assert_eq!((second.task_id, second.attempt), (id, 2));
    // The zombie comes back: refused, nothing changes.
    let err = a
        .complete_flush(&first, vec![file(first.output_file_ids[0], b"a", b"z", 10)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert_eq!(manifest(&mut s, "t").await.version, version_before);
    // The zombie's next heartbeat tells it to stop.
    let reply = a.heartbeat(&[(id, 1, 1)]).await;
    assert!(
        reply
            .cancel
            .iter()
            .any(|c| c.task_id == id && c.attempt == 1)
            || reply.reregister
    );
    // Operators see both in the scheduler's metrics.
    let http = s.ports.http;
    let metrics_ok = tokio::task::block_in_place(|| {
        tests::wait_until(Duration::from_secs(5), || {
            let body = tests::http_get(http, "/metrics")
                .map(|r| r.1)
                .unwrap_or_default();
            body.contains("processor_stale_commits_refused_total 1")
                && body.contains("processor_lease_expiries_total{reason=\"no_heartbeat\"} 1")
        })
    });
    assert!(
        metrics_ok,
        "metrics: {:?}",
        tests::http_get(http, "/metrics")
    );
    b.complete_flush(
        &second,
        vec![file(second.output_file_ids[0], b"a", b"z", 10)],
    )
    .await
    .unwrap();
    assert_eq!(manifest(&mut s, "t").await.version, version_before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_without_progress_mark_the_task_stuck_and_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[], None).await;
    s.create_table("t").await;
    let mut a = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 1).await;
    let id = s.request_flush("t", 1, 10).await.unwrap();
    let d = a.next_dispatch(WAIT).await.expect("dispatched");
    let (a_handle, a_running, a_stop) = keep_alive(a, false);
    a_running.send(vec![(d.task_id, d.attempt)]).unwrap();
    let b = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 1).await;
    let (b_handle, _, b_stop) = keep_alive(b, true);
    // stuck_timeout is 2 s; heartbeats keep coming but progress never moves.
    let t = loop {
        let t = task(&mut s, id).await;
        if t.attempt >= 2 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        t.errors.iter().any(|e| e.message.starts_with("stuck")),
        "{:?}",
        t.errors
    );
    b_stop.send(()).unwrap();
    let mut b = b_handle.await.unwrap();
    let again = b.next_dispatch(WAIT).await.expect("re-dispatched");
    assert_eq!((again.task_id, again.attempt), (id, 2));
    a_stop.send(()).unwrap();
    let _ = a_handle.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_reaches_the_worker_through_its_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[], None).await;
    s.create_table("t").await;
    let mut w = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 1).await;
    let id = s.request_flush("t", 1, 10).await.unwrap();
    let d = w.next_dispatch(WAIT).await.expect("dispatched");
    let t = s
        .admin
        .cancel_task(pb::CancelTaskRequest { task_id: id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.state, pb::TaskState::Cancelled as i32);
    let reply = w.heartbeat(&[(d.task_id, d.attempt, 5)]).await;
    assert!(
        reply
            .cancel
            .iter()
            .any(|c| c.task_id == id && c.attempt == 1),
        "{reply:?}"
    );
    let err = w.complete_flush(&d, vec![]).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_says_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[("DP__PROCESSOR__QUEUE_SIZE", "2")], None).await;
    s.create_table("t").await;
    s.request_flush("t", 1, 10).await.unwrap();
    s.request_flush("t", 2, 20).await.unwrap();
    let err = s.request_flush("t", 3, 30).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("queue_size"), "{}", err.message());
}

async fn two_flushed_files(s: &mut Sched) -> FakeWorker {
    s.create_table("t").await;
    let mut w = FakeWorker::start(pb::WorkerKind::Flusher, &s.ports.grpc_addr(), 2).await;
    s.flush_through(
        &mut w,
        "t",
        &[(1, 10, b"a", b"m", 4096), (2, 20, b"c", b"z", 4096)],
    )
    .await;
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_manual_compaction_gets_a_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[], None).await;
    let _w = two_flushed_files(&mut s).await;
    let req = pb::TriggerCompactionRequest {
        table: "t".into(),
        level: Some(0),
        range: None,
        force: true,
    };
    let first = s
        .admin
        .trigger_compaction(req.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.task_ids.len(), 1);
    let locked = manifest(&mut s, "t").await.locked_file_ids;
    assert_eq!(
        locked.len(),
        2,
        "both L0 files are locked by the compaction"
    );
    let err = s.admin.trigger_compaction(req).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(err.message().starts_with("LockError"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_keep_queue_manifest_failures_and_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let extra = [
        ("DP__SCHEDULER__MAX_ATTEMPTS", "2"),
        ("DP__SCHEDULER__HEARTBEAT_TIMEOUT", "30s"),
        ("DP__SCHEDULER__STUCK_TIMEOUT", "60s"),
    ];
    let mut s = start(dir.path(), &extra, None).await;
    let mut w = two_flushed_files(&mut s).await;
    // A task that fails twice (max_attempts 2) and ends Failed, with its history.
    let failing = s.request_flush("t", 3, 30).await.unwrap();
    for attempt in 1..=2 {
        let d = w.next_dispatch(WAIT).await.expect("dispatched");
        assert_eq!((d.task_id, d.attempt), (failing, attempt));
        w.fail(d.task_id, d.attempt, &format!("disk on fire {attempt}"))
            .await
            .unwrap();
    }
    // One running (dispatched, attempt 1) and one queued behind the worker's 2 slots... the
    // worker has 2 slots: fill them with two running tasks, then queue one more.
    let running1 = s.request_flush("t", 4, 40).await.unwrap();
    let running2 = s.request_flush("t", 5, 50).await.unwrap();
    w.next_dispatch(WAIT).await.expect("r1");
    w.next_dispatch(WAIT).await.expect("r2");
    let queued = s.request_flush("t", 6, 60).await.unwrap();
    let ids = [failing, running1, running2, queued];
    let mut before = Vec::new();
    for id in ids {
        before.push(task(&mut s, id).await);
    }
    let manifest_before = manifest(&mut s, "t").await;
    assert_eq!(before[0].state, pb::TaskState::Failed as i32);
    assert_eq!(before[0].errors.len(), 2);
    assert_eq!(before[3].state, pb::TaskState::Pending as i32);

    tests::signal(s.proc.child.id(), "KILL");
    let _ = s.proc.wait_timeout(Duration::from_secs(5));
    let ports = s.ports;
    drop(s);
    let mut s = start(dir.path(), &extra, Some(ports)).await;
    assert_eq!(manifest(&mut s, "t").await, manifest_before);
    for (id, old) in ids.into_iter().zip(before) {
        let mut now = task(&mut s, id).await;
        let mut old = old;
        // Progress is reported live by heartbeats and not persisted.
        for a in now.attempts.iter_mut().chain(old.attempts.iter_mut()) {
            a.progress = None;
        }
        now.waiting_reason.clear();
        old.waiting_reason.clear();
        assert_eq!(now, old, "task {id} after restart");
    }
    // The worker keeps heartbeating with its old id: its attempts go on.
    let reply = w.heartbeat(&[(running1, 1, 1), (running2, 1, 1)]).await;
    assert!(!reply.reregister);
    assert!(reply.cancel.is_empty(), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_a_worker_rejects_fails_after_max_attempts_instead_of_looping() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), &[("DP__SCHEDULER__MAX_ATTEMPTS", "2")], None).await;
    s.create_table("t").await;
    // A real flusher binary: today its FlushMemtable answers UNIMPLEMENTED.
    let fp = Ports::free();
    let mut env = service_env("flusher", fp, dir.path());
    env.push((
        "DP__SCHEDULER__ENDPOINT".to_owned(),
        format!("http://{}", s.ports.grpc_addr()),
    ));
    env.push((
        "DP__SCHEDULER__HEARTBEAT_INTERVAL".to_owned(),
        "100ms".to_owned(),
    ));
    let flusher = Proc::start("flusher", "flusher", dir.path(), &[], &env);
    tokio::task::block_in_place(|| wait_healthy(&flusher, fp.http));
    let id = s.request_flush("t", 1, 10).await.unwrap();
    let t = loop {
        let t = task(&mut s, id).await;
        if t.state == pb::TaskState::Failed as i32 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(t.errors.len(), 2, "{:?}", t.errors);
    assert!(
        t.errors.iter().all(|e| e.message.contains("Unimplemented")),
        "{:?}",
        t.errors
    );
}
