//! Throughput of the memtable and the merge paths: what bounds replay, flush, reads and
//! compaction CPU.
//!
//! `cargo bench -p lsm -- --warm-up-time 1 --measurement-time 3` for a quick run.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lsm::key::encode_internal_key;
use lsm::testing::{Entry, VecIterator};
use lsm::{
    BoxedIterator, CompactionIterator, InternalIterator, MAX_SEQNO, Memtable, MergingIterator,
    ValueKind, VisibleIterator,
};

const VALUE_LEN: usize = 100;
const SOURCES: u64 = 8;
const PER_SOURCE: u64 = 50_000;

/// splitmix64: 16-byte keys spread like hashed keys.
fn key(i: u64) -> [u8; 16] {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&z.to_be_bytes());
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn bench_memtable(c: &mut Criterion) {
    const N: u64 = 100_000;
    let value = [0x42u8; VALUE_LEN];
    let mut g = c.benchmark_group("memtable");
    g.throughput(Throughput::Elements(N));
    g.bench_function("insert_100k_16B_keys_100B_values", |b| {
        b.iter_batched(
            || Memtable::new(0),
            |t| {
                for i in 0..N {
                    t.insert(&key(i), i + 1, ValueKind::Put, &value)
                        .expect("insert");
                }
                t
            },
            BatchSize::PerIteration,
        )
    });

    let table = Arc::new(Memtable::new(0));
    for i in 0..N {
        table
            .insert(&key(i), i + 1, ValueKind::Put, &value)
            .expect("insert");
    }
    g.bench_function("scan_100k", |b| {
        b.iter(|| {
            let mut it = table.iter();
            it.seek_to_first().expect("seek");
            let mut n = 0u64;
            while it.valid() {
                black_box(it.key());
                n += 1;
                it.next().expect("next");
            }
            n
        })
    });
    g.throughput(Throughput::Elements(1));
    g.bench_function("get_hit", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 7919) % N;
            table.get(&key(i), MAX_SEQNO).expect("present")
        })
    });
    g.finish();
}

/// `SOURCES` sources of `PER_SOURCE` entries each. With `key_space` smaller than the
/// total, keys repeat across sources as versions; every tenth write is a tombstone.
fn runs(key_space: u64) -> Vec<Vec<Entry>> {
    (0..SOURCES)
        .map(|s| {
            (0..PER_SOURCE)
                .map(|i| {
                    let n = s * PER_SOURCE + i;
                    // Newest source (index 0) holds the highest seqs.
                    let seq = (SOURCES - s) * PER_SOURCE + i;
                    let kind = if n % 10 == 9 {
                        ValueKind::Delete
                    } else {
                        ValueKind::Put
                    };
                    let mut k = Vec::with_capacity(24);
                    encode_internal_key(&key(n % key_space), seq, kind, &mut k);
                    let v = if kind == ValueKind::Put {
                        vec![0x42; VALUE_LEN]
                    } else {
                        Vec::new()
                    };
                    (k, v)
                })
                .collect()
        })
        .collect()
}

fn vec_sources(runs: &[Vec<Entry>]) -> Vec<BoxedIterator> {
    runs.iter()
        .map(|r| Box::new(VecIterator::new(r.clone())) as BoxedIterator)
        .collect()
}

fn memtables(runs: &[Vec<Entry>]) -> Vec<Arc<Memtable>> {
    runs.iter()
        .enumerate()
        .map(|(id, r)| {
            let t = Arc::new(Memtable::new(id as u64));
            for (k, v) in r {
                let p = lsm::ParsedInternalKey::parse(k).expect("key");
                t.insert(p.user_key, p.seq, p.kind, v).expect("insert");
            }
            t.freeze();
            t
        })
        .collect()
}

fn drain(it: &mut impl InternalIterator) -> u64 {
    let mut n = 0;
    while it.valid() {
        black_box((it.key(), it.value()));
        n += 1;
        it.next().expect("next");
    }
    n
}

fn bench_merge(c: &mut Criterion) {
    let distinct = runs(SOURCES * PER_SOURCE);
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(SOURCES * PER_SOURCE));

    let mut merged = MergingIterator::new(vec_sources(&distinct));
    g.bench_function("8x50k_vec_sources", |b| {
        b.iter(|| {
            merged.seek_to_first().expect("seek");
            drain(&mut merged)
        })
    });

    let tables = memtables(&distinct);
    g.bench_function("8x50k_memtable_sources", |b| {
        b.iter(|| {
            let sources = tables
                .iter()
                .map(|t| Box::new(t.iter()) as BoxedIterator)
                .collect();
            let mut merged = MergingIterator::new(sources);
            merged.seek_to_first().expect("seek");
            drain(&mut merged)
        })
    });

    // Keys overlap: 100k user keys, 4 versions each on average.
    let overlapping = runs(100_000);
    let mut view = VisibleIterator::new(MergingIterator::new(vec_sources(&overlapping)), MAX_SEQNO);
    g.bench_function("8x50k_visible_scan_overlapping", |b| {
        b.iter(|| {
            let v = &mut view;
            v.seek_to_first().expect("seek");
            let mut n = 0u64;
            while v.valid() {
                black_box((v.key(), v.value()));
                n += 1;
                v.next().expect("next");
            }
            n
        })
    });
    drop(view);

    let mut merged = Some(MergingIterator::new(vec_sources(&overlapping)));
    for (name, bottommost, snapshots) in [
        ("compaction_8x50k_bottommost", true, &[][..]),
        (
            "compaction_8x50k_with_snapshots",
            false,
            &[150_000, 300_000][..],
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                // Reuse the merge (and its sources) across iterations instead of copying
                // 400k entries each time.
                let input = merged.take().expect("merged");
                let mut it = CompactionIterator::new(input, bottommost, snapshots);
                it.seek_to_first().expect("seek");
                let n = drain_compaction(&mut it);
                merged = Some(it.into_inner());
                n
            })
        });
    }
    g.finish();
}

fn drain_compaction(it: &mut CompactionIterator) -> u64 {
    while it.valid() {
        black_box((it.key(), it.value()));
        it.next().expect("next");
    }
    it.stats().output_entries
}

criterion_group!(benches, bench_memtable, bench_merge);
criterion_main!(benches);
