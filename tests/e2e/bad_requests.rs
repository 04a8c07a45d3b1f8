//! Malformed and hostile requests to the scheduler's worker and admin RPCs: each gets a
//! clear status naming what was wrong, and none changes anything.

#![expect(clippy::unwrap_used, reason = "tests")]

use proto::v1 as pb;
use tests::cluster::Sched;
use tonic::Code;

use tests::check_status as check;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_clear_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Sched::start(dir.path(), &[], None).await;
    s.create_table("t").await;
    let (mut admin, mut api) = (s.admin.clone(), s.api.clone());
    let before = admin
        .get_manifest(pb::GetManifestRequest { table: "t".into() })
        .await
        .unwrap()
        .into_inner();

    // Worker-facing RPCs.
    let reg = |kind: i32, addr: &str, slots: u32| pb::RegisterWorkerRequest {
        kind,
        advertised_address: addr.into(),
        slots,
        name: String::new(),
        version: String::new(),
    };
    check(
        "register kind 0",
        api.register_worker(reg(0, "h:1", 1)).await,
        Code::InvalidArgument,
        "kind",
    );
    check(
        "register kind 99",
        api.register_worker(reg(99, "h:1", 1)).await,
        Code::InvalidArgument,
        "kind",
    );
    check(
        "register no address",
        api.register_worker(reg(2, "", 1)).await,
        Code::InvalidArgument,
        "advertised_address",
    );
    check(
        "register 0 slots",
        api.register_worker(reg(2, "h:1", 0)).await,
        Code::InvalidArgument,
        "slots",
    );
    let hb = api
        .heartbeat(pb::HeartbeatRequest {
            worker_id: 424_242,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(hb.reregister, "an unknown worker is told to register again");
    let complete = |task_id: u64, outcome| pb::CompleteTaskRequest {
        task_id,
        attempt: 1,
        worker_id: 1,
        outcome,
    };
    check(
        "complete without outcome",
        api.complete_task(complete(1, None)).await,
        Code::InvalidArgument,
        "outcome",
    );
    let ok_flush = Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
        result: Some(pb::task_result::Result::Flush(pb::FlushResult::default())),
    }));
    check(
        "complete unknown task",
        api.complete_task(complete(u64::MAX, ok_flush.clone()))
            .await,
        Code::NotFound,
        "task",
    );
    let bad_file = Some(pb::complete_task_request::Outcome::Result(pb::TaskResult {
        result: Some(pb::task_result::Result::Flush(pb::FlushResult {
            files: vec![tests::fake::file(1, b"z", b"a", 1)],
            bytes_read: 0,
        })),
    }));
    check(
        "complete with an inverted key range",
        api.complete_task(complete(1, bad_file)).await,
        Code::InvalidArgument,
        "smallest_key",
    );
    let flush = |table: &str, first: u64, last: u64, replayer: &str| pb::RequestFlushRequest {
        table: table.into(),
        memtable_id: 1,
        first_seq: first,
        last_seq: last,
        size_bytes: 1,
        replayer_address: replayer.into(),
        after_seq: first.saturating_sub(1),
        replay_task_id: 999,
        replay_attempt: 1,
    };
    check(
        "flush unknown table",
        api.request_flush(flush("nope", 1, 2, "r:1")).await,
        Code::NotFound,
        "nope",
    );
    check(
        "flush seq 0",
        api.request_flush(flush("t", 0, 2, "r:1")).await,
        Code::InvalidArgument,
        "first_seq",
    );
    check(
        "flush inverted seqs",
        api.request_flush(flush("t", 9, 2, "r:1")).await,
        Code::InvalidArgument,
        "first_seq",
    );
    check(
        "flush no replayer",
        api.request_flush(flush("t", 1, 2, "")).await,
        Code::InvalidArgument,
        "replayer_address",
    );
    check(
        "flush from a replay attempt that does not hold the table",
        api.request_flush(flush("t", 1, 2, "r:1")).await,
        Code::FailedPrecondition,
        "task 999 attempt 1",
    );
    let mut overlapping = flush("t", 5, 9, "r:1");
    overlapping.after_seq = 5;
    check(
        "flush whose after_seq is not below first_seq",
        api.request_flush(overlapping).await,
        Code::InvalidArgument,
        "after_seq",
    );

    // Admin RPCs.
    let huge = "x".repeat(10_000);
    for bad in ["", "a/b", "../etc", "sp ace", huge.as_str()] {
        check(
            "create a badly named table",
            admin
                .create_table(pb::CreateTableRequest {
                    name: bad.into(),
                    columns: vec![],
                })
                .await,
            Code::InvalidArgument,
            "table name",
        );
    }
    check(
        "create a duplicate table",
        admin
            .create_table(pb::CreateTableRequest {
                name: "t".into(),
                columns: vec![],
            })
            .await,
        Code::AlreadyExists,
        "\"t\"",
    );
    check(
        "create with a bad column type",
        admin
            .create_table(pb::CreateTableRequest {
                name: "u".into(),
                columns: vec![pb::ColumnDef {
                    name: "c".into(),
                    r#type: "blob".into(),
                }],
            })
            .await,
        Code::InvalidArgument,
        "blob",
    );
    check(
        "drop unknown",
        admin
            .drop_table(pb::DropTableRequest {
                name: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    check(
        "manifest unknown",
        admin
            .get_manifest(pb::GetManifestRequest {
                table: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    check(
        "stats unknown",
        admin
            .get_table_stats(pb::GetTableStatsRequest {
                table: "nope".into(),
            })
            .await,
        Code::NotFound,
        "nope",
    );
    check(
        "get unknown task",
        admin.get_task(pb::GetTaskRequest { task_id: 77 }).await,
        Code::NotFound,
        "77",
    );
    check(
        "cancel unknown task",
        admin
            .cancel_task(pb::CancelTaskRequest { task_id: 77 })
            .await,
        Code::NotFound,
        "77",
    );
    check(
        "list with a huge page",
        admin
            .list_tasks(pb::ListTasksRequest {
                page_size: 1_000_000,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "page_size",
    );
    check(
        "list with an unknown state",
        admin
            .list_tasks(pb::ListTasksRequest {
                state: 99,
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "state",
    );
    check(
        "compact unknown table",
        admin
            .trigger_compaction(pb::TriggerCompactionRequest {
                table: "nope".into(),
                level: Some(0),
                range: None,
                force: true,
            })
            .await,
        Code::NotFound,
        "nope",
    );
    check(
        "compact a level that does not exist",
        admin
            .trigger_compaction(pb::TriggerCompactionRequest {
                table: "t".into(),
                level: Some(99),
                range: None,
                force: true,
            })
            .await,
        Code::InvalidArgument,
        "level 99",
    );

    // Nothing changed.
    let tables = admin
        .list_tables(pb::ListTablesRequest {})
        .await
        .unwrap()
        .into_inner()
        .tables;
    assert_eq!(
        tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        ["t"]
    );
    let after = admin
        .get_manifest(pb::GetManifestRequest { table: "t".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after, before);
    let tasks = admin
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .unwrap()
        .into_inner()
        .tasks;
    // Only the table's own replay (the scheduler assigns every table to a replayer).
    assert!(
        tasks
            .iter()
            .all(|t| t.r#type == pb::TaskType::WalReplay as i32),
        "no task was created: {tasks:?}"
    );
    let status = admin
        .get_status(pb::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        status
            .workers
            .iter()
            .all(|w| w.address == s.replayer.address),
        "no worker was registered: {:?}",
        status.workers
    );
}
