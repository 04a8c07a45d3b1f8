//! Cleanup against real storage (a temporary local directory, and memory): exactly the
//! listed objects go, dry runs delete nothing, malformed specs delete nothing, retries skip
//! what is already gone, and the metrics count what happened.

use compactor::cleanup::{CleanupError, run_cleanup};
use metrics_exporter_prometheus::PrometheusBuilder;
use proto::v1 as pb;
use storage::paths::{self, TableName};
use storage::{ObjectPath, Storage};
use tokio_util::sync::CancellationToken;

fn table(name: &str) -> TableName {
    TableName::new(name).expect("valid table name")
}

fn sst(t: &str, id: u64) -> ObjectPath {
    paths::sst_file(&table(t), id)
}

fn wal(t: &str, first_seq: u64) -> ObjectPath {
    paths::wal_segment(&table(t), first_seq)
}

/// A store holding SSTs 1..=4 and WAL segments 1, 11, 21 of `users`, SST 1 of `other`, and a
/// stray object; object `n` of the list has `100 * (n + 1)` bytes.
async fn populated(storage: &Storage) -> Vec<ObjectPath> {
    let objects = vec![
        sst("users", 1),
        sst("users", 2),
        sst("users", 3),
        sst("users", 4),
        wal("users", 1),
        wal("users", 11),
        wal("users", 21),
        sst("other", 1),
        ObjectPath::from("tables/users/notes.txt"),
    ];
    for (n, path) in objects.iter().enumerate() {
        storage
            .put(path, vec![b'x'; 100 * (n + 1)].into())
            .await
            .expect("put");
    }
    objects
}

async fn remaining(storage: &Storage) -> Vec<String> {
    storage
        .list(&paths::tables_root())
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.location.to_string())
        .collect()
}

fn spec(t: &str, ssts: &[ObjectPath], wals: &[ObjectPath], dry_run: bool) -> pb::CleanupSpec {
    pb::CleanupSpec {
        table: t.to_owned(),
        sst_paths: ssts.iter().map(ToString::to_string).collect(),
        wal_paths: wals.iter().map(ToString::to_string).collect(),
        dry_run,
    }
}

fn strings(paths: &[ObjectPath]) -> Vec<String> {
    paths.iter().map(ToString::to_string).collect()
}

fn minus(all: &[ObjectPath], gone: &[ObjectPath]) -> Vec<String> {
    let mut left: Vec<String> = all
        .iter()
        .filter(|p| !gone.contains(p))
        .map(ToString::to_string)
        .collect();
    left.sort();
    left
}

fn local() -> (tempfile::TempDir, Storage) {
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::local(dir.path()).expect("local storage");
    (dir, storage)
}

#[tokio::test]
async fn deletes_exactly_the_listed_objects_ssts_first() {
    for (_dir, storage) in [
        local(),
        (tempfile::tempdir().expect("dir"), Storage::in_memory()),
    ] {
        let all = populated(&storage).await;
        // Listed WAL first in the spec: SSTs still go first.
        let s = spec(
            "users",
            &[sst("users", 2), sst("users", 1)],
            &[wal("users", 1), wal("users", 11)],
            false,
        );
        let result = run_cleanup(&storage, &s, &CancellationToken::new())
            .await
            .expect("cleanup");
        assert_eq!(
            result.deleted,
            strings(&[
                sst("users", 2),
                sst("users", 1),
                wal("users", 1),
                wal("users", 11)
            ])
        );
        // Sizes 200, 100, 500, 600.
        assert_eq!(result.bytes_reclaimed, 1400);
        let gone = [
            sst("users", 1),
            sst("users", 2),
            wal("users", 1),
            wal("users", 11),
        ];
        assert_eq!(remaining(&storage).await, minus(&all, &gone));

        // A retry of the same spec finds everything gone: nothing to do, not an error.
        let again = run_cleanup(&storage, &s, &CancellationToken::new())
            .await
            .expect("retry");
        assert_eq!(again, pb::CleanupResult::default());
        assert_eq!(remaining(&storage).await, minus(&all, &gone));
    }
}

#[tokio::test]
async fn any_table_when_the_spec_names_none() {
    let (_dir, storage) = local();
    let all = populated(&storage).await;
    let s = spec("", &[sst("users", 3), sst("other", 1)], &[], false);
    let result = run_cleanup(&storage, &s, &CancellationToken::new())
        .await
        .expect("cleanup");
    assert_eq!(result.deleted, strings(&[sst("users", 3), sst("other", 1)]));
    assert_eq!(result.bytes_reclaimed, 300 + 800);
    assert_eq!(
        remaining(&storage).await,
        minus(&all, &[sst("users", 3), sst("other", 1)])
    );
}

#[tokio::test]
async fn dry_run_reports_and_deletes_nothing() {
    let (_dir, storage) = local();
    let all = populated(&storage).await;
    let s = spec("users", &[sst("users", 4)], &[wal("users", 21)], true);
    let result = run_cleanup(&storage, &s, &CancellationToken::new())
        .await
        .expect("dry run");
    assert_eq!(
        result.deleted,
        strings(&[sst("users", 4), wal("users", 21)])
    );
    assert_eq!(result.bytes_reclaimed, 400 + 700);
    assert_eq!(remaining(&storage).await, minus(&all, &[]));
}

#[tokio::test]
async fn a_bad_path_deletes_nothing() {
    let (_dir, storage) = local();
    let all = populated(&storage).await;
    let good = sst("users", 1);
    let cases = [
        // Another table's SST.
        (
            spec("users", &[good.clone(), sst("other", 1)], &[], false),
            "tables/other/sst",
        ),
        // Not an SST or WAL segment at all.
        (
            spec(
                "users",
                &[good.clone(), ObjectPath::from("tables/users/notes.txt")],
                &[],
                false,
            ),
            "notes.txt",
        ),
        // A WAL segment listed as an SST.
        (
            spec("users", &[good.clone(), wal("users", 1)], &[], false),
            "wal/",
        ),
        // An SST listed as a WAL segment, valid SSTs before it.
        (
            spec(
                "users",
                std::slice::from_ref(&good),
                &[sst("users", 2)],
                false,
            ),
            "sst/",
        ),
        // Outside the layout, with no table to compare against.
        (
            pb::CleanupSpec {
                sst_paths: vec![good.to_string(), "../etc/passwd".to_owned()],
                ..Default::default()
            },
            "../etc/passwd",
        ),
    ];
    for (s, named) in cases {
        let err = run_cleanup(&storage, &s, &CancellationToken::new())
            .await
            .expect_err("must refuse");
        assert!(matches!(err, CleanupError::InvalidPath { .. }), "{err:?}");
        assert!(err.to_string().contains(named), "{named:?} not in {err}");
        assert_eq!(err.kind(), pb::ErrorKind::InvalidArgument);
        assert_eq!(remaining(&storage).await, minus(&all, &[]), "{err}");
    }
    let err = run_cleanup(
        &storage,
        &spec("bad name", &[good], &[], false),
        &CancellationToken::new(),
    )
    .await
    .expect_err("bad table");
    assert!(matches!(err, CleanupError::InvalidTable(_)), "{err:?}");
    assert_eq!(remaining(&storage).await, minus(&all, &[]));
}

#[tokio::test]
async fn already_missing_objects_are_skipped() {
    let (_dir, storage) = local();
    let all = populated(&storage).await;
    let s = spec(
        "users",
        &[sst("users", 99), sst("users", 3)],
        &[wal("users", 5), wal("users", 11)],
        false,
    );
    let result = run_cleanup(&storage, &s, &CancellationToken::new())
        .await
        .expect("cleanup");
    assert_eq!(
        result.deleted,
        strings(&[sst("users", 3), wal("users", 11)])
    );
    assert_eq!(result.bytes_reclaimed, 300 + 600);
    assert_eq!(
        remaining(&storage).await,
        minus(&all, &[sst("users", 3), wal("users", 11)])
    );
}

#[tokio::test]
async fn cancelled_before_it_starts_deletes_nothing() {
    let (_dir, storage) = local();
    let all = populated(&storage).await;
    let cancel = CancellationToken::new();
    cancel.cancel();
    let err = run_cleanup(
        &storage,
        &spec("users", &[sst("users", 1)], &[], false),
        &cancel,
    )
    .await
    .expect_err("cancelled");
    match &err {
        CleanupError::Cancelled { done } => assert!(done.deleted.is_empty()),
        other => panic!("expected Cancelled, got {other:?}"),
    }
    assert_eq!(err.kind(), pb::ErrorKind::Cancelled);
    assert_eq!(remaining(&storage).await, minus(&all, &[]));
}

/// The value of the counter `name` whose labels include every one of `labels`.
fn counter(rendered: &str, name: &str, labels: &[&str]) -> Option<u64> {
    rendered
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn metrics_count_deletions_and_dry_runs_apart() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    // A current-thread runtime polls the cleanup on this thread, where the local recorder is.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let storage = Storage::in_memory();
    metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            populated(&storage).await;
            let dry = spec("users", &[sst("users", 1)], &[wal("users", 1)], true);
            run_cleanup(&storage, &dry, &CancellationToken::new())
                .await
                .expect("dry run");
            let real = spec(
                "users",
                &[sst("users", 1), sst("users", 2)],
                &[wal("users", 1)],
                false,
            );
            run_cleanup(&storage, &real, &CancellationToken::new())
                .await
                .expect("cleanup");
        });
    });
    let out = handle.render();
    let deleted = "cleanup_files_deleted_total";
    assert_eq!(counter(&out, deleted, &[r#"kind="sst""#]), Some(2), "{out}");
    assert_eq!(counter(&out, deleted, &[r#"kind="wal""#]), Some(1), "{out}");
    // 100 + 200 + 500: the dry run's bytes are not counted.
    assert_eq!(
        counter(&out, "cleanup_bytes_reclaimed_total", &[]),
        Some(800),
        "{out}"
    );
    let dry = "cleanup_dry_run_files_total";
    assert_eq!(counter(&out, dry, &[r#"kind="sst""#]), Some(1), "{out}");
    assert_eq!(counter(&out, dry, &[r#"kind="wal""#]), Some(1), "{out}");
}
