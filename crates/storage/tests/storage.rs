//! Storage behaviour on the local-directory and in-memory backends.

use std::sync::Arc;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use storage::paths::{self, TableName};
use storage::{BlockingReaderConfig, ObjectPath, S3Options, Storage, StorageError};

/// Every backend a test should run against; the tempdir must outlive the storage.
fn backends() -> Vec<(Storage, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = Storage::local(dir.path().join("root")).expect("local storage");
    vec![(Storage::in_memory(), None), (local, Some(dir))]
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v[..]);
    v
}

#[tokio::test]
async fn put_get_head_delete() {
    for (s, _dir) in backends() {
        let p = ObjectPath::from("tables/t/sst/00000000000000000001.sst");
        assert!(
            s.get(&p).await.expect_err("missing").is_not_found(),
            "{}",
            s.url()
        );
        s.put(&p, Bytes::from_static(b"hello")).await.expect("put");
        assert_eq!(s.get(&p).await.expect("get"), Bytes::from_static(b"hello"));
        assert_eq!(s.size(&p).await.expect("size"), 5);
        s.put(&p, Bytes::from_static(b"replaced"))
            .await
            .expect("overwrite");
        assert_eq!(
            s.get(&p).await.expect("get"),
            Bytes::from_static(b"replaced")
        );
        s.delete(&p).await.expect("delete");
        assert!(s.head(&p).await.expect_err("deleted").is_not_found());
        // Deleting again is fine: cleanup retries.
        s.delete(&p).await.expect("idempotent delete");
        let err = s.get(&p).await.expect_err("missing");
        assert!(
            err.to_string()
                .contains("tables/t/sst/00000000000000000001.sst"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn put_if_absent_refuses_existing_objects() {
    for (s, _dir) in backends() {
        let p = ObjectPath::from("tables/t/wal/00000000000000000001.wal");
        s.put_if_absent(&p, Bytes::from_static(b"first"))
            .await
            .expect("create");
        let err = s
            .put_if_absent(&p, Bytes::from_static(b"second"))
            .await
            .expect_err("exists");
        assert!(
            matches!(&err, StorageError::AlreadyExists { path } if path == p.as_ref()),
            "{err}"
        );
        assert_eq!(s.get(&p).await.expect("get"), Bytes::from_static(b"first"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_if_absent_race_has_exactly_one_winner() {
    for (s, _dir) in backends() {
        for i in 0..50u64 {
            let p = paths::wal_segment(&TableName::new("race").expect("name"), i + 1);
            let contenders: Vec<_> = (0..2u8)
                .map(|who| {
                    let s = s.clone();
                    let p = p.clone();
                    tokio::spawn(async move {
                        (who, s.put_if_absent(&p, Bytes::from(vec![who; 1000])).await)
                    })
                })
                .collect();
            let mut winners = Vec::new();
            for c in contenders {
                let (who, result) = c.await.expect("task");
                match result {
                    Ok(()) => winners.push(who),
                    Err(StorageError::AlreadyExists { .. }) => {}
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            assert_eq!(
                winners.len(),
                1,
                "{} round {i}: winners {winners:?}",
                s.url()
            );
            let stored = s.get(&p).await.expect("get");
            assert_eq!(stored, Bytes::from(vec![winners[0]; 1000]));
        }
    }
}

#[tokio::test]
async fn list_is_sorted_and_scoped_to_the_prefix() {
    for (s, _dir) in backends() {
        let t = TableName::new("orders").expect("name");
        let other = TableName::new("orders2").expect("name");
        let seqs = [900u64, 5, 10_000_000_000, 77, 1];
        for seq in seqs {
            s.put(&paths::wal_segment(&t, seq), Bytes::from_static(b"x"))
                .await
                .expect("put");
        }
        s.put(&paths::wal_segment(&other, 3), Bytes::from_static(b"x"))
            .await
            .expect("put");
        s.put(&paths::sst_file(&t, 3), Bytes::from_static(b"x"))
            .await
            .expect("put");
        let listed: Vec<u64> = s
            .list(&paths::wal_dir(&t))
            .await
            .expect("list")
            .iter()
            .map(|m| paths::parse_wal_segment_path(&m.location).expect("segment name"))
            .collect();
        let mut expected = seqs.to_vec();
        expected.sort_unstable();
        assert_eq!(listed, expected, "{}", s.url());
        assert_eq!(s.list(&paths::table_dir(&t)).await.expect("list").len(), 6);
        assert!(
            s.list(&ObjectPath::from("tables/none"))
                .await
                .expect("empty list")
                .is_empty()
        );
    }
}

#[tokio::test]
async fn range_reads_return_the_requested_bytes() {
    for (s, _dir) in backends() {
        let data = random_bytes(100_000, 1);
        let p = ObjectPath::from("obj");
        s.put(&p, Bytes::from(data.clone())).await.expect("put");
        for (start, end) in [
            (0, 1),
            (0, 100_000),
            (99_999, 100_000),
            (1234, 56_789),
            (500, 500),
        ] {
            let got = s.get_range(&p, start..end).await.expect("range");
            assert_eq!(&got[..], &data[start as usize..end as usize]);
        }
        for (start, end) in [(99_000, 100_001), (100_000, 100_001), (200_000, 200_010)] {
            let err = s.get_range(&p, start..end).await.expect_err("out of range");
            assert!(
                matches!(err, StorageError::OutOfRange { size: 100_000, .. }),
                "{err}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reader_streams_a_large_object_in_small_reads() {
    for (s, _dir) in backends() {
        let data = Arc::new(random_bytes(5 * 1024 * 1024 + 123, 2));
        let p = ObjectPath::from("tables/t/sst/00000000000000000009.sst");
        s.put(&p, Bytes::from(data.to_vec())).await.expect("put");
        let handle = tokio::runtime::Handle::current();
        let config = BlockingReaderConfig {
            readahead: 256 * 1024,
            prefetch: true,
        };
        let mut reader = s.blocking_reader(handle, p, data.len() as u64, config);
        let data2 = data.clone();
        let (reads, requests) = tokio::task::spawn_blocking(move || {
            let data = data2;
            let mut rng = rand::rngs::StdRng::seed_from_u64(3);
            // A sequential scan in uneven small reads.
            let mut pos = 0usize;
            let mut reads = 0;
            while pos < data.len() {
                let len = rng.random_range(1..9000).min(data.len() - pos);
                let got = reader.read_at(pos as u64, len).expect("read");
                assert_eq!(&got[..], &data[pos..pos + len], "at {pos}");
                pos += len;
                reads += 1;
            }
            // Random point reads, some spanning window boundaries.
            for _ in 0..200 {
                let off = rng.random_range(0..data.len());
                let len = rng.random_range(0..70_000).min(data.len() - off);
                let got = reader.read_at(off as u64, len).expect("read");
                assert_eq!(&got[..], &data[off..off + len]);
            }
            let err = reader
                .read_at(data.len() as u64 - 1, 2)
                .expect_err("past the end");
            assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
            (reads, reader.requests())
        })
        .await
        .expect("blocking task");
        assert!(reads > 1000, "{reads}");
        // The scan costs about one request per window, not one per read.
        assert!(
            requests < 22 + 200 + 5,
            "{requests} requests for {reads} reads"
        );
    }
}

#[tokio::test]
async fn multipart_writer_round_trips_and_abort_leaves_nothing() {
    for (s, _dir) in backends() {
        let data = random_bytes(17 * 1024 * 1024 + 5, 4);
        let p = ObjectPath::from("tables/t/sst/00000000000000000002.sst");
        let mut w = s.writer(&p).await.expect("writer");
        for chunk in data.chunks(1_000_003) {
            w.write(chunk).await.expect("write");
        }
        assert!(s.head(&p).await.is_err(), "invisible before finish");
        assert_eq!(w.finish().await.expect("finish"), data.len() as u64);
        assert_eq!(s.get(&p).await.expect("get"), Bytes::from(data.clone()));

        let q = ObjectPath::from("tables/t/sst/00000000000000000003.sst");
        let mut w = s.writer(&q).await.expect("writer");
        w.write_bytes(Bytes::from_static(b"partial"))
            .await
            .expect("write");
        w.abort().await.expect("abort");
        assert!(s.head(&q).await.expect_err("aborted").is_not_found());
        let listed = s
            .list(&ObjectPath::from("tables/t/sst"))
            .await
            .expect("list");
        assert_eq!(listed.len(), 1, "{listed:?}");
    }
}

#[test]
fn local_puts_leave_no_staging_files_and_create_the_root() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("a/b/c");
    let url = format!("file://{}", root.display());
    let s = Storage::from_url(&url, &S3Options::default()).expect("from_url");
    assert!(root.is_dir());
    assert_eq!(
        s.local_root(),
        Some(root.canonicalize().expect("canon").as_path())
    );
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let p = ObjectPath::from("tables/t/wal/00000000000000000001.wal");
        s.put_if_absent(&p, Bytes::from_static(b"x"))
            .await
            .expect("create");
        s.put_if_absent(&p, Bytes::from_static(b"y"))
            .await
            .expect_err("exists");
        s.put(&p, Bytes::from_static(b"z"))
            .await
            .expect("overwrite");
    });
    let names: Vec<_> = std::fs::read_dir(root.join("tables/t/wal"))
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
        .collect();
    assert_eq!(names, vec!["00000000000000000001.wal".to_string()]);
    assert_eq!(
        std::fs::read(root.join("tables/t/wal/00000000000000000001.wal")).expect("read"),
        b"z"
    );
}

#[test]
fn free_space_and_disk_space_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = Storage::local(dir.path()).expect("local");
    let free = s.free_space().expect("local storage reports free space");
    assert!(free > 0);
    s.check_space(0).expect("nothing needed always fits");
    match s.check_space(u64::MAX) {
        Err(StorageError::DiskSpace {
            needed,
            available,
            path,
        }) => {
            assert_eq!(needed, u64::MAX);
            assert!(available < u64::MAX);
            assert!(
                path.contains(&*dir.path().file_name().expect("name").to_string_lossy()),
                "{path}"
            );
        }
        other => panic!("expected a disk-space error, got {other:?}"),
    }
    let err = storage::check_space_against(10, 9, Some(dir.path())).expect_err("too big");
    assert!(
        err.to_string().contains("10 bytes needed, 9 available"),
        "{err}"
    );
    storage::check_space_against(9, 9, None).expect("fits exactly");

    let mem = Storage::in_memory();
    assert_eq!(mem.free_space(), None);
    mem.check_space(u64::MAX)
        .expect("object stores have no limit");
}

#[test]
fn urls_are_validated_with_typed_errors() {
    let opts = S3Options::default();
    for bad in [
        "/no/scheme",
        "file://relative/path",
        "ftp://host/x",
        "memory://something",
        "s3://",
        "s3:///prefix",
        "file:///x?y=1",
        "file:///a%20b",
    ] {
        match Storage::from_url(bad, &opts) {
            Err(StorageError::InvalidUrl { url, reason }) => {
                assert_eq!(url, bad);
                assert!(!reason.is_empty());
            }
            other => panic!("{bad}: expected InvalidUrl, got {other:?}"),
        }
    }
    assert_eq!(
        Storage::from_url("memory://", &opts).expect("memory").url(),
        "memory://"
    );

    // S3 is configured without touching the network.
    let s3 = S3Options {
        endpoint: Some("http://127.0.0.1:9".into()),
        region: Some("us-east-1".into()),
        access_key_id: Some("key".into()),
        secret_access_key: Some("secret".into()),
        allow_http: Some(true),
        ..S3Options::default()
    };
    let s = Storage::from_url("s3://bucket/some/prefix/", &s3).expect("s3 storage");
    assert_eq!(s.url(), "s3://bucket/some/prefix/");
    assert_eq!(s.free_space(), None);
    assert!(
        !format!("{s3:?}").contains("secret\""),
        "secrets are redacted"
    );
    let mut bad_opt = s3.clone();
    bad_opt.extra.insert("not_a_key".into(), "1".into());
    assert!(matches!(
        Storage::from_url("s3://bucket", &bad_opt),
        Err(StorageError::InvalidOption { .. })
    ));
}

/// An S3-compatible server for the test: the one named by `DP_TEST_S3_ENDPOINT` and
/// `DP_TEST_S3_BUCKET`, or a `moto_server` (PyPI `moto[server]`, installed by
/// `make test-tools`) started here on a free loopback port with a fresh bucket.
struct S3Server {
    endpoint: String,
    bucket: String,
    child: Option<std::process::Child>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn s3_server() -> S3Server {
    if let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("DP_TEST_S3_ENDPOINT"),
        std::env::var("DP_TEST_S3_BUCKET"),
    ) {
        return S3Server {
            endpoint,
            bucket,
            child: None,
        };
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let child = std::process::Command::new("python3")
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 not found (moto runs under it): run `make test-tools`");
    let server = S3Server {
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket: "dp-test".into(),
        child: Some(child),
    };
    // Create the bucket once the server answers (moto accepts unsigned requests).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        use std::io::{Read, Write};
        let attempt = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            write!(
                s,
                "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                server.bucket
            )?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        });
        match attempt {
            Ok(reply) if reply.starts_with("HTTP/1.1 200") => return server,
            _ if std::time::Instant::now() > deadline => {
                panic!(
                    "moto on port {port} did not create the bucket ({attempt:?}); is it installed? \
                     run `make test-tools` (pip install 'moto[server]')"
                )
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
}

/// Against a real S3-compatible server (moto by default): conditional create, sorted
/// listing, ranged reads, an 11 MiB multipart upload and deletes.
#[tokio::test]
async fn s3_conditional_create_list_and_ranges() {
    let server = tokio::task::spawn_blocking(s3_server)
        .await
        .expect("s3 server");
    let (endpoint, bucket) = (server.endpoint.clone(), server.bucket.clone());
    let opts = S3Options {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        allow_http: Some(true),
        ..S3Options::default()
    };
    let prefix = format!("run-{}", std::process::id());
    let s = Storage::from_url(&format!("s3://{bucket}/{prefix}"), &opts).expect("s3 storage");
    let t = TableName::new("s3t").expect("name");
    let seg = paths::wal_segment(&t, 1);
    s.put_if_absent(&seg, Bytes::from_static(b"one"))
        .await
        .expect("create");
    let err = s
        .put_if_absent(&seg, Bytes::from_static(b"two"))
        .await
        .expect_err("conditional create must refuse");
    assert!(err.is_already_exists(), "{err}");
    for seq in [30u64, 2] {
        s.put(&paths::wal_segment(&t, seq), Bytes::from_static(b"x"))
            .await
            .expect("put");
    }
    let listed: Vec<_> = s
        .list(&paths::wal_dir(&t))
        .await
        .expect("list")
        .iter()
        .map(|m| paths::parse_wal_segment_path(&m.location).expect("segment"))
        .collect();
    assert_eq!(listed, vec![1, 2, 30]);
    assert_eq!(
        s.get_range(&seg, 1..3).await.expect("range"),
        Bytes::from_static(b"ne")
    );
    let data = random_bytes(11 * 1024 * 1024, 5);
    let big = paths::sst_file(&t, 1);
    let mut w = s.writer(&big).await.expect("writer");
    w.write(&data).await.expect("write");
    w.finish().await.expect("finish");
    assert_eq!(s.get(&big).await.expect("get").len(), data.len());
    for meta in s.list(&paths::table_dir(&t)).await.expect("list") {
        s.delete(&meta.location).await.expect("delete");
    }
}
