//! Streaming build into and streaming read from shared storage: a multi-megabyte SST goes
//! through a multipart upload and comes back through a readahead window, never whole.

use std::io::Write;

use lsm::key::{InternalKey, ValueKind};
use sst::{InternalIterator, ObjectSource, SstBuilder, SstOptions, SstReader};
use storage::{BlockingReaderConfig, BlockingWriter, ObjectPath, Storage};

#[test]
fn an_sst_streams_through_object_storage() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let storage = Storage::local(dir.path()).expect("storage");
    let path = ObjectPath::from("tables/t/sst/00000000000000000001.sst");
    let n = 150_000u64;
    let value = vec![7u8; 100];

    let handle = rt.handle().clone();
    let writer = rt.block_on(storage.writer(&path)).expect("writer");
    let (size, entries) = std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = BlockingWriter::new(handle.clone(), writer);
            let mut b = SstBuilder::new("1.sst", &mut w, SstOptions::default()).expect("builder");
            for i in 0..n {
                let key =
                    InternalKey::new(format!("key{i:012}").into_bytes(), i + 1, ValueKind::Put)
                        .encode();
                b.add(&key, &value).expect("add");
            }
            let info = b.finish().expect("finish");
            w.flush().expect("flush");
            let size = w.finish().expect("upload");
            (size, info.entry_count)
        })
        .join()
        .expect("builder thread")
    });
    assert_eq!(entries, n);
    assert!(size > 10 << 20, "a multi-megabyte object ({size} bytes)");

    let window = 256 << 10;
    let handle = rt.handle().clone();
    let storage2 = storage.clone();
    let (count, requests) = std::thread::scope(|s| {
        s.spawn(|| {
            let reader = storage2.blocking_reader(
                handle.clone(),
                path.clone(),
                size,
                BlockingReaderConfig {
                    readahead: window,
                    ..BlockingReaderConfig::default()
                },
            );
            let source = std::sync::Arc::new(ObjectSource::new(reader));
            let sst = SstReader::open(source.clone(), "1.sst").expect("open");
            let mut it = sst.iter();
            it.seek_to_first().expect("seek");
            let mut count = 0u64;
            while it.valid() {
                count += 1;
                it.next().expect("next");
            }
            (count, source.requests())
        })
        .join()
        .expect("reader thread")
    });
    assert_eq!(count, n);
    // Windows of 256 KiB: about size / window requests, not one per 4 KiB block, and
    // never the whole object at once.
    assert!(
        requests >= size / window as u64,
        "{requests} requests for {size} bytes"
    );
    assert!(
        requests < size / 4096 / 4,
        "{requests} requests: readahead not used"
    );
}
