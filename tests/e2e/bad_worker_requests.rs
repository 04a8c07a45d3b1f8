//! Malformed and hostile requests sent straight to the workers' own RPCs (flusher,
//! compactor, replayer), as a confused client or an attacker on the network would: each is
//! refused with a clear status naming what was wrong, and none changes anything — no file
//! written or deleted, the manifest and the data as they were, every worker still serving.
//! The most dangerous one, a well-formed Cleanup with a task id the scheduler never issued
//! that names a live SST, is accepted by the compactor (it cannot know) but deletes nothing:
//! cleanup waits for the scheduler to confirm the attempt, and the scheduler cancels it.

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::compactor_client::CompactorClient;
use proto::v1::flusher_client::FlusherClient;
use proto::v1::replayer_client::ReplayerClient;
use tests::data::DataCluster;
use tonic::Code;

use tests::check_status as check;

fn dispatch(task_id: u64, attempt: u32) -> Option<pb::DispatchRequest> {
    Some(pb::DispatchRequest { task_id, attempt })
}

fn flush_spec(f: impl FnOnce(&mut pb::FlushSpec)) -> pb::FlushMemtableRequest {
    let mut spec = pb::FlushSpec {
        table: "t".into(),
        memtable_id: 1,
        replayer_address: "127.0.0.1:1".into(),
        first_seq: 1,
        last_seq: 10,
        output_file_ids: vec![900_001],
        after_seq: 0,
        size_bytes: 1 << 20,
        io_bytes_per_sec: 0,
    };
    f(&mut spec);
    pb::FlushMemtableRequest {
        dispatch: dispatch(900_001, 1),
        spec: Some(spec),
    }
}

fn compaction(f: impl FnOnce(&mut pb::CompactionSpec)) -> pb::CompactLevelRequest {
    let mut spec = pb::CompactionSpec {
        table: "t".into(),
        input_levels: vec![0],
        inputs: vec![pb::Level {
            level: 0,
            files: vec![pb::FileMeta {
                file_id: 900_010,
                size_bytes: 1000,
                smallest_key: b"a".to_vec(),
                largest_key: b"z".to_vec(),
                smallest_seq: 1,
                largest_seq: 10,
                entry_count: 10,
                ..Default::default()
            }],
        }],
        output_level: 1,
        bottommost: true,
        target_file_size: 1 << 20,
        trivial_move: false,
        output_file_ids: vec![900_002],
        io_bytes_per_sec: 0,
        reason: "hostile".into(),
        max_subcompactions: 1,
        wal_inputs: vec![],
        grandparent_bounds: vec![],
    };
    f(&mut spec);
    pb::CompactLevelRequest {
        dispatch: dispatch(900_002, 1),
        spec: Some(spec),
    }
}

fn cleanup(table: &str, ssts: &[&str]) -> pb::RunCleanupRequest {
    pb::RunCleanupRequest {
        dispatch: dispatch(900_003, 1),
        spec: Some(pb::CleanupSpec {
            table: table.into(),
            sst_paths: ssts.iter().map(|s| s.to_string()).collect(),
            wal_paths: Vec::new(),
            dry_run: false,
        }),
    }
}

#[test]
fn hostile_requests_to_worker_rpcs_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = DataCluster::start(
        dir.path(),
        // Nothing changes the files on its own while the test compares before and after.
        &[
            ("DP__CLEANUP__INTERVAL", "1h"),
            ("DP__STATISTICS__INTERVAL", "1h"),
            ("DP__COMPACTION__TRIGGER_THRESHOLD", "64"),
            ("DP__COMPACTION__SIZE_TIERED__MAX_THRESHOLD", "64"),
        ],
    );
    c.start_flusher();
    let flusher_ports = *c.worker_ports.last().unwrap();
    c.start_compactor();
    let compactor_ports = *c.worker_ports.last().unwrap();
    c.create_tables(&["t"]);
    let oracle = dir.path().join("oracle.jsonl");
    let o = c.admin(&[
        "load",
        "t",
        "--keys",
        "3000",
        "--value-size",
        "100",
        "--seed",
        "5",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    let files_before = c.files("t");
    let stored_before = c.stored_ssts("t");
    let data_before = c.scan_all("t");
    assert!(!stored_before.is_empty());
    let live = *stored_before.iter().next().unwrap();
    let live_path = format!("tables/t/sst/{live:020}.sst");
    assert!(
        dir.path().join("storage").join(&live_path).exists(),
        "{live_path}"
    );

    let flusher_addr = format!("http://{}", flusher_ports.grpc_addr());
    let compactor_addr = format!("http://{}", compactor_ports.grpc_addr());
    let replayer_addr = format!("http://{}", c.replayer_ports.grpc_addr());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut f = FlusherClient::connect(flusher_addr).await.unwrap();
        let mut k = CompactorClient::connect(compactor_addr).await.unwrap();
        let mut r = ReplayerClient::connect(replayer_addr).await.unwrap();
        let bad = Code::InvalidArgument;

        // Flusher.
        check(
            "flush: empty request",
            f.flush_memtable(pb::FlushMemtableRequest::default()).await,
            bad,
            "dispatch",
        );
        check(
            "flush: no spec",
            f.flush_memtable(pb::FlushMemtableRequest {
                dispatch: dispatch(1, 1),
                spec: None,
            })
            .await,
            bad,
            "spec",
        );
        check(
            "flush: empty table",
            f.flush_memtable(flush_spec(|s| s.table.clear())).await,
            bad,
            "spec.table",
        );
        check(
            "flush: path in the table name",
            f.flush_memtable(flush_spec(|s| s.table = "../../etc".into()))
                .await,
            bad,
            "spec.table",
        );
        check(
            "flush: huge table name",
            f.flush_memtable(flush_spec(|s| s.table = "x".repeat(100_000)))
                .await,
            bad,
            "spec.table",
        );
        check(
            "flush: no output file",
            f.flush_memtable(flush_spec(|s| s.output_file_ids.clear()))
                .await,
            bad,
            "spec.output_file_ids",
        );
        check(
            "flush: no replayer",
            f.flush_memtable(flush_spec(|s| s.replayer_address.clear()))
                .await,
            bad,
            "spec.replayer_address",
        );
        check(
            "flush: inverted sequence range",
            f.flush_memtable(flush_spec(|s| {
                s.first_seq = 10;
                s.last_seq = 5;
            }))
            .await,
            bad,
            "last_seq 5 is below first_seq 10",
        );
        check(
            "flush: sequence numbers past 56 bits",
            f.flush_memtable(flush_spec(|s| s.last_seq = u64::MAX))
                .await,
            bad,
            "largest sequence number",
        );

        // Compactor: compactions.
        check(
            "compaction: empty request",
            k.compact_level(pb::CompactLevelRequest::default()).await,
            bad,
            "dispatch",
        );
        check(
            "compaction: no inputs",
            k.compact_level(compaction(|s| s.inputs.clear())).await,
            bad,
            "at least one input file",
        );
        check(
            "compaction: zero target size",
            k.compact_level(compaction(|s| s.target_file_size = 0))
                .await,
            bad,
            "spec.target_file_size",
        );
        check(
            "compaction: no output file",
            k.compact_level(compaction(|s| s.output_file_ids.clear()))
                .await,
            bad,
            "spec.output_file_ids",
        );
        check(
            "compaction: output id repeated",
            k.compact_level(compaction(|s| s.output_file_ids = vec![7, 7]))
                .await,
            bad,
            "listed twice",
        );
        check(
            "compaction: trivial move dispatched",
            k.compact_level(compaction(|s| s.trivial_move = true)).await,
            bad,
            "trivial move",
        );
        check(
            "compaction: a wal input without an id for it",
            k.compact_level(compaction(|s| s.wal_inputs = vec![5]))
                .await,
            bad,
            "wal inputs",
        );
        check(
            "compaction: wal input seq 0",
            k.compact_level(compaction(|s| {
                s.wal_inputs = vec![0];
                s.output_file_ids = vec![900_002, 900_003];
            }))
            .await,
            bad,
            "spec.wal_inputs",
        );

        // Compactor: cleanup and statistics.
        check(
            "cleanup: empty request",
            k.run_cleanup(pb::RunCleanupRequest::default()).await,
            bad,
            "dispatch",
        );
        check(
            "cleanup: a path outside the layout",
            k.run_cleanup(cleanup("t", &["../../../etc/passwd"])).await,
            bad,
            "etc/passwd",
        );
        check(
            "cleanup: another table's file",
            k.run_cleanup(cleanup("t", &["tables/u/sst/00000000000000000001.sst"]))
                .await,
            bad,
            "tables/u",
        );
        check(
            "statistics: empty request",
            k.update_statistics(pb::UpdateStatisticsRequest::default())
                .await,
            bad,
            "dispatch",
        );

        // Replayer.
        check(
            "replay: empty request",
            r.replay_from_checkpoint(pb::ReplayFromCheckpointRequest::default())
                .await,
            bad,
            "dispatch",
        );
        check(
            "get: unknown table",
            r.get(pb::MemtableGetRequest {
                table: "nosuch".into(),
                key: b"k".to_vec(),
            })
            .await,
            Code::NotFound,
            "nosuch",
        );
        check(
            "read memtable: unknown memtable",
            match r
                .read_memtable(pb::ReadMemtableRequest {
                    table: "t".into(),
                    memtable_id: 987_654,
                    chunk_entries: 100,
                })
                .await
            {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    stream
                        .message()
                        .await
                        .map(|m| tonic::Response::new(m.map(|m| m.entries.len())))
                }
                Err(e) => Err(e),
            },
            Code::NotFound,
            "987654",
        );

        // A forged cleanup: well formed, an id the scheduler never issued, a live file.
        let accepted = k
            .run_cleanup(cleanup("t", &[live_path.as_str()]))
            .await
            .unwrap()
            .into_inner()
            .accepted;
        assert!(
            accepted,
            "well formed: accepted, pending the scheduler's word"
        );
    });

    // Several heartbeats later the forged cleanup is cancelled and deleted nothing.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        dir.path().join("storage").join(&live_path).exists(),
        "the forged cleanup deleted live file {live_path}"
    );
    assert_eq!(c.files("t"), files_before, "manifest unchanged");
    assert_eq!(
        c.stored_ssts("t"),
        stored_before,
        "no file written or deleted"
    );
    assert_eq!(c.scan_all("t"), data_before, "data unchanged");
    let compactor_log = c.compactors[0].as_ref().unwrap().log_text();
    assert!(
        compactor_log.contains("nothing deleted"),
        "the compactor says why it deleted nothing"
    );

    // Every worker still serves: the next writes flush as before.
    let o = c.admin(&[
        "load",
        "t",
        "--keys",
        "500",
        "--value-size",
        "100",
        "--seed",
        "6",
        "--oracle",
        oracle.to_str().unwrap(),
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    c.wait_flushed(
        "t",
        DataCluster::last_acked(&oracle, "t"),
        Duration::from_secs(60),
    );
    c.check_oracle(&oracle, &["t"]);
}
