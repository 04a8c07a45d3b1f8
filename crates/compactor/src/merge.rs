//! The core of a compaction: input SSTs in, output SSTs out. Synchronous; run it on a
//! blocking thread.
//!
//! [`compact`] is the one function that merges: the CompactLevel RPC runs it over the
//! shared storage, the model tests and benchmarks over memory ([`crate::store`]). It
//!
//! 1. cuts the key space into subcompaction ranges ([`crate::ranges`]) and runs each on
//!    its own thread (one range runs on the calling thread);
//! 2. merges each range's sources ([`crate::sources`]) through
//!    [`lsm::CompactionIterator`], which drops versions shadowed by newer ones and, when the
//!    compaction is bottommost, tombstones that hide nothing (no snapshots are kept: the
//!    engine's readers read the newest data);
//! 3. writes the survivors into outputs of about `target_file_size`, cut only between two
//!    user keys (all versions of a key stay in one file, so a reader of one file sees
//!    every version it needs) — and earlier, once an output holds half the target, where
//!    the next key passes one of the spec's `grandparent_bounds` (the ends of the files
//!    below the output level), so outputs line up with the files their next compaction
//!    meets and it rewrites less. Outputs are named by the spec's output ids in the order they are
//!    started. An output is started by its first entry: no empty file is ever written and
//!    no id is spent on one. Ids are never invented: more output than ids is
//!    [`CompactionError::OutOfFileIds`]. With several ranges the ids go to whichever range
//!    starts an output first, so they are unique but not in key order; the outputs are
//!    listed in key order.
//!
//! Spans (children of whatever span is current on the calling thread, the attempt's in the
//! compactor): `merge` around the whole merge; under it one `subcompaction` per range when
//! there are several; in each range `read_inputs` (opening the range's sources and seeking
//! to its start; files of sorted levels are opened lazily later, each in an `open_input`
//! span, see [`crate::sources`]) and one `write_output` per output, from its first entry
//! until it is finished (stored).
//!
//! Every few thousand entries, and whenever the builders have written another
//! [`CHECK_BYTES`], a range checks for cancellation, publishes progress and pays the IO
//! budget ([`crate::throttle`]). When a range fails, the others stop at their next check;
//! a failed or cancelled compaction abandons its open outputs (nothing becomes visible)
//! and deletes the ones it had finished.
//!
//! Preemption ([`Control::preempt`]): a merge of one range that is asked to stop early
//! stops before the first user key K at which no input file of the output level straddles
//! (no such file has `smallest < K <= largest`), finishes its open output there and reports
//! a partial result: the outputs (every key below K) and, as consumed, the inputs wholly
//! below K. The output level's remaining files start at or after K, so the outputs never
//! overlap them; an upper-level input straddling K stays where it is — its keys below K now
//! also exist, with the same sequence numbers, in the outputs one level down, which reads
//! and later merges treat as one version (the newest sequence number wins; an identical
//! internal key is shadowed). A merge of several ranges ignores preemption and finishes.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lsm::key::user_key;
use lsm::manifest::FileMeta;
use lsm::{CompactionIterator, CompactionStats, MergingIterator};
use sst::{SstBuilder, SstInfo, SstOptions};
use tokio_util::sync::CancellationToken;

use crate::error::CompactionError;
use crate::ranges::{KeyRange, plan_ranges_sampled};
use crate::request::CompactionSpec;
use crate::sources::{Bounded, OpenInput, Opener, range_sources};
use crate::store::SstStore;
use crate::throttle::RateLimiter;

/// Input entries between two checks of a range (cancellation, progress).
pub const CHECK_ENTRIES: u64 = 4096;
/// Output bytes between two checks of a range (progress, IO budget).
pub const CHECK_BYTES: u64 = 1 << 20;
/// Subcompaction ranges hold at least this many input bytes (smaller compactions stay on
/// one thread: a thread per few MiB costs more than it saves).
pub const DEFAULT_MIN_SUBCOMPACTION_BYTES: u64 = 32 << 20;

/// Where an attempt stands, read by heartbeats while the merge runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Input bytes read (blocks, indexes, filters, footers).
    pub bytes_read: AtomicU64,
    /// Output bytes written.
    pub bytes_written: AtomicU64,
    /// Input entries merged.
    pub entries: AtomicU64,
}

/// How the merge runs, besides the spec.
#[derive(Debug, Clone)]
pub struct MergeOptions {
    pub sst_options: SstOptions,
    /// Threads the merge may use: at most this many subcompaction ranges (at least 1).
    pub threads: usize,
    /// See [`DEFAULT_MIN_SUBCOMPACTION_BYTES`].
    pub min_subcompaction_bytes: u64,
    /// Written into every output's properties (milliseconds since the Unix epoch).
    pub creation_time_ms: u64,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self {
            sst_options: SstOptions::default(),
            threads: 1,
            min_subcompaction_bytes: DEFAULT_MIN_SUBCOMPACTION_BYTES,
            creation_time_ms: 0,
        }
    }
}

/// The attempt's side of a running merge: how it is stopped, watched and paced.
#[derive(Debug, Clone, Default)]
pub struct Control {
    /// Cancelled when the attempt is: the merge stops at its next check.
    pub cancel: CancellationToken,
    pub progress: Arc<Progress>,
    /// The IO budget (shared with whoever else holds it); `None`: unlimited.
    pub limiter: Option<Arc<RateLimiter>>,
    /// Cancelled to ask the merge to stop early with a partial result (see the module
    /// docs).
    pub preempt: CancellationToken,
}

/// One written output.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    pub file_id: u64,
    /// Size of the stored object.
    pub size: u64,
    pub info: SstInfo,
}

impl OutputFile {
    /// The manifest's record of the file.
    pub fn manifest_meta(&self) -> FileMeta {
        FileMeta {
            id: self.file_id,
            size: self.size,
            smallest: self.info.smallest_user_key.clone(),
            largest: self.info.largest_user_key.clone(),
            smallest_seq: self.info.min_seq,
            largest_seq: self.info.max_seq,
            entries: self.info.entry_count,
            tombstones: self.info.tombstone_count,
        }
    }
}

/// What a finished merge wrote and dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    /// In key order.
    pub outputs: Vec<OutputFile>,
    /// Entries in, out and dropped, over every range.
    pub stats: CompactionStats,
    pub bytes_read: u64,
    /// Bytes of every output.
    pub bytes_written: u64,
    /// Ranges the key space was cut into.
    pub subcompactions: usize,
    /// `None`: every input was consumed. `Some`: the merge was preempted, and only these
    /// inputs (wholly below its cut key) were consumed.
    pub consumed: Option<Vec<u64>>,
}

/// Keys from inside every input (index-block separators; no data is read), so that
/// subcompaction ranges can cut inputs that all span the same keys. An input that cannot be
/// opened contributes nothing here: the merge reports the real error.
fn sample_keys<S: SstStore>(store: &S, spec: &CompactionSpec) -> Vec<Vec<u8>> {
    /// Samples per input: enough for even cuts, few enough to stay cheap.
    const PER_INPUT: usize = 64;
    spec.input_files()
        .filter_map(|(_, f)| {
            let source = store.open_input(f).ok()?;
            sst::SstReader::open(source, store.path(f.id)).ok()
        })
        .flat_map(|r| r.sample_user_keys(PER_INPUT))
        .map(|k| k.to_vec())
        .collect()
}

/// Merges the inputs of `spec` from `store` into outputs in `store` (see the module docs).
pub fn compact<S: SstStore>(
    store: &Arc<S>,
    spec: &CompactionSpec,
    options: &MergeOptions,
    control: &Control,
) -> Result<Compacted, CompactionError> {
    let threads = options.threads.max(1);
    let samples = if threads > 1 {
        sample_keys(store.as_ref(), spec)
    } else {
        Vec::new()
    };
    let ranges = plan_ranges_sampled(
        spec.input_files().map(|(_, f)| f),
        &samples,
        threads,
        options.min_subcompaction_bytes,
    );
    let span = tracing::info_span!(
        "merge",
        inputs = spec.input_count(),
        ranges = ranges.len(),
        bottommost = spec.bottommost,
        outputs = tracing::field::Empty,
        entries_in = tracing::field::Empty,
        entries_out = tracing::field::Empty,
    );
    let _entered = span.enter();
    let read_before = control.progress.bytes_read.load(Ordering::Relaxed);
    let shared = Shared {
        store,
        spec,
        options,
        control,
        preemptible: ranges.len() == 1,
        stop: control.cancel.child_token(),
        next_id: AtomicUsize::new(0),
        finished: Mutex::new(Vec::new()),
        sizes: spec
            .input_files()
            .map(|(_, f)| (store.path(f.id), f.size))
            .collect(),
    };
    let opener: Arc<dyn OpenInput> = Arc::new(Opener {
        store: store.clone(),
        progress: control.progress.clone(),
    });

    let results: Vec<Result<RangeOutput, CompactionError>> = if ranges.len() == 1 {
        vec![shared.run_range(&opener, &KeyRange::all())]
    } else {
        run_threads(&shared, &opener, &ranges)
    };

    let mut outputs = Vec::new();
    let mut stats = CompactionStats::default();
    let mut failure: Option<CompactionError> = None;
    let mut cut: Option<Vec<u8>> = None;
    for result in results {
        match result {
            Ok(r) => {
                outputs.extend(r.outputs);
                add(&mut stats, r.stats);
                cut = cut.or(r.cut);
            }
            // The first real failure wins over the cancellations it caused in the others.
            Err(e) => {
                if failure
                    .as_ref()
                    .is_none_or(|f| matches!(f, CompactionError::Cancelled))
                {
                    failure = Some(e);
                }
            }
        }
    }
    if let Some(e) = failure {
        shared.discard_finished();
        return Err(e);
    }
    span.record("outputs", outputs.len());
    span.record("entries_in", stats.input_entries);
    span.record("entries_out", stats.output_entries);
    let consumed = cut.map(|k| {
        tracing::info!(outputs = outputs.len(), "merge preempted: a partial result");
        spec.input_files()
            .filter(|(_, f)| f.largest.as_ref() < k.as_slice())
            .map(|(_, f)| f.id)
            .collect()
    });
    Ok(Compacted {
        consumed,
        bytes_written: outputs.iter().map(|o| o.size).sum(),
        bytes_read: control.progress.bytes_read.load(Ordering::Relaxed) - read_before,
        outputs,
        stats,
        subcompactions: ranges.len(),
    })
}

/// Runs every range on its own scoped thread; results in range order.
fn run_threads<S: SstStore>(
    shared: &Shared<'_, S>,
    opener: &Arc<dyn OpenInput>,
    ranges: &[KeyRange],
) -> Vec<Result<RangeOutput, CompactionError>> {
    // A new thread has no current span: each range's span is made a child of the caller's
    // (`merge`) explicitly and entered on its thread.
    let parent = tracing::Span::current();
    std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .enumerate()
            .map(|(i, range)| {
                let span = tracing::info_span!(parent: &parent, "subcompaction", range = i);
                std::thread::Builder::new()
                    .name(format!("subcompaction-{i}"))
                    .spawn_scoped(scope, move || {
                        let _entered = span.enter();
                        let result = shared.run_range(opener, range);
                        if result.is_err() {
                            // Stop the others: the attempt fails anyway.
                            shared.stop.cancel();
                        }
                        result
                    })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h {
                Ok(h) => h.join().unwrap_or_else(|panic| {
                    shared.stop.cancel();
                    Err(CompactionError::Internal(format!(
                        "a subcompaction thread panicked: {}",
                        panic_message(panic.as_ref())
                    )))
                }),
                Err(e) => {
                    shared.stop.cancel();
                    Err(CompactionError::Internal(format!(
                        "could not start a subcompaction thread: {e}"
                    )))
                }
            })
            .collect()
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

fn add(total: &mut CompactionStats, s: CompactionStats) {
    total.input_entries += s.input_entries;
    total.output_entries += s.output_entries;
    total.shadowed_dropped += s.shadowed_dropped;
    total.tombstones_dropped += s.tombstones_dropped;
}

/// What the ranges of one merge share.
struct Shared<'a, S> {
    store: &'a Arc<S>,
    spec: &'a CompactionSpec,
    options: &'a MergeOptions,
    control: &'a Control,
    /// Whether the merge may stop early when preempted (one range only).
    preemptible: bool,
    /// Cancelled with the attempt, or by a failing range.
    stop: CancellationToken,
    /// Index of the next unused output id.
    next_id: AtomicUsize,
    /// Ids of finished outputs, deleted if the merge fails.
    finished: Mutex<Vec<u64>>,
    /// Input sizes by path, to place a footer error.
    sizes: HashMap<String, u64>,
}

/// The part of a running count already published.
#[derive(Debug, Default)]
struct Accounted(u64);

impl Accounted {
    /// Moves to `total`; returns what was not yet published.
    fn advance(&mut self, total: u64) -> u64 {
        total.saturating_sub(std::mem::replace(&mut self.0, total))
    }
}

/// What one range produced.
struct RangeOutput {
    outputs: Vec<OutputFile>,
    stats: CompactionStats,
    /// Set when the range stopped early (preempted) before this user key.
    cut: Option<Vec<u8>>,
}

/// An output being written.
struct Output<W: Write> {
    file_id: u64,
    path: String,
    builder: SstBuilder<W>,
    /// `write_output`: open from the output's first entry until it is stored.
    span: tracing::Span,
    /// The user key of the last entry added.
    last_user_key: Vec<u8>,
    /// Of `builder.bytes_written()`, what was already counted and paid for.
    accounted: u64,
}

impl<S: SstStore> Shared<'_, S> {
    fn run_range(
        &self,
        opener: &Arc<dyn OpenInput>,
        range: &KeyRange,
    ) -> Result<RangeOutput, CompactionError> {
        let merge_error =
            |e| CompactionError::from_merge(e, |p| self.sizes.get(p).copied().unwrap_or(0));
        if self.stop.is_cancelled() {
            return Err(CompactionError::Cancelled);
        }
        let mut it =
            tracing::info_span!("read_inputs", sources = tracing::field::Empty).in_scope(|| {
                let sources = range_sources(&self.spec.inputs, range, opener)?;
                tracing::Span::current().record("sources", sources.len());
                let merged = Bounded::new(MergingIterator::new(sources), range.clone())
                    .with_stop(self.stop.clone());
                let mut it = CompactionIterator::new(merged, self.spec.bottommost, &[]);
                it.seek_to_first().map_err(merge_error)?;
                Ok::<_, CompactionError>(it)
            })?;

        let target = self.spec.target_file_size;
        let bounds = &self.spec.grandparent_bounds;
        // Index of the first grandparent bound at or above the last key written.
        let mut gp = 0usize;
        let mut outputs = Vec::new();
        let mut out: Option<Output<S::Writer>> = None;
        let mut entries = Accounted::default();
        let mut checked_at = 0u64;
        let mut cut = None;
        while it.valid() {
            let key = it.key();
            let key_user = user_key(key);
            // Preempted: stop at the first new user key where no output-level input
            // straddles (all versions of a key stay in one output).
            if self.preemptible
                && self.control.preempt.is_cancelled()
                && out
                    .as_ref()
                    .is_none_or(|o| o.last_user_key.as_slice() != key_user)
                && self.is_cut(key_user)
            {
                cut = Some(key_user.to_vec());
                break;
            }
            // Crossing a grandparent file's end: an output of half the target or more is
            // cut here, so it does not reach into the next grandparent file.
            let mut crossed = false;
            while gp < bounds.len() && bounds[gp].as_slice() < key_user {
                gp += 1;
                crossed = true;
            }
            if let Some(o) = out.take_if(|o| {
                o.last_user_key.as_slice() != key_user
                    && (o.builder.estimated_size() >= target
                        || (crossed && o.builder.estimated_size() >= target / 2))
            }) {
                let (file, unaccounted) = self.finish_output(o)?;
                outputs.push(file);
                self.check(unaccounted, entries.advance(it.stats().input_entries))?;
            }
            let o = match out.as_mut() {
                Some(o) => o,
                None => out.insert(self.start_output()?),
            };
            o.builder
                .add(key, it.value())
                .map_err(|e| CompactionError::from_output(e, &o.path))?;
            if o.last_user_key.as_slice() != key_user {
                o.last_user_key.clear();
                o.last_user_key.extend_from_slice(key_user);
            }
            // Input entries, not output ones: a merge that drops most of its input (a
            // bottommost merge of tombstones) is checked as often as one that keeps it.
            let merged = it.stats().input_entries;
            if merged - checked_at >= CHECK_ENTRIES
                || o.builder.bytes_written() - o.accounted >= CHECK_BYTES
            {
                checked_at = merged;
                let written = o.builder.bytes_written();
                let unaccounted = written - std::mem::replace(&mut o.accounted, written);
                self.check(unaccounted, entries.advance(merged))?;
            }
            it.next().map_err(merge_error)?;
        }
        let stats = it.stats();
        if let Some(o) = out.take() {
            let (file, unaccounted) = self.finish_output(o)?;
            outputs.push(file);
            self.check(unaccounted, entries.advance(stats.input_entries))?;
        }
        self.count_entries(entries.advance(stats.input_entries));
        Ok(RangeOutput {
            outputs,
            stats,
            cut,
        })
    }

    /// Whether the merge may stop before user key `k`: no input file of the output level
    /// holds keys on both sides of it.
    fn is_cut(&self, k: &[u8]) -> bool {
        !self
            .spec
            .inputs
            .iter()
            .filter(|(level, _)| *level == self.spec.output_level)
            .flat_map(|(_, files)| files)
            .any(|f| f.smallest.as_ref() < k && k <= f.largest.as_ref())
    }

    /// The periodic check: stopped? Then count `entries` more merged entries and
    /// `written` more output bytes, and pay for the bytes.
    fn check(&self, written: u64, entries: u64) -> Result<(), CompactionError> {
        if self.stop.is_cancelled() {
            return Err(CompactionError::Cancelled);
        }
        self.count_entries(entries);
        self.control
            .progress
            .bytes_written
            .fetch_add(written, Ordering::Relaxed);
        match &self.control.limiter {
            Some(limiter) if !limiter.acquire(written, &self.stop) => {
                Err(CompactionError::Cancelled)
            }
            _ => Ok(()),
        }
    }

    fn count_entries(&self, entries: u64) {
        self.control
            .progress
            .entries
            .fetch_add(entries, Ordering::Relaxed);
    }

    /// Starts an output under the next unused id.
    fn start_output(&self) -> Result<Output<S::Writer>, CompactionError> {
        let ids = &self.spec.output_file_ids;
        let file_id = ids
            .get(self.next_id.fetch_add(1, Ordering::Relaxed))
            .copied()
            .ok_or(CompactionError::OutOfFileIds {
                allotted: ids.len(),
            })?;
        let path = self.store.path(file_id);
        let span = tracing::info_span!(
            "write_output",
            file_id,
            bytes = tracing::field::Empty,
            entries = tracing::field::Empty,
        );
        let writer = span.in_scope(|| self.store.create_output(file_id))?;
        let mut builder = SstBuilder::new(path.clone(), writer, self.options.sst_options.clone())
            .map_err(|e| CompactionError::from_output(e, &path))?;
        builder.set_creation_time_ms(self.options.creation_time_ms);
        Ok(Output {
            file_id,
            path,
            builder,
            span,
            last_user_key: Vec::new(),
            accounted: 0,
        })
    }

    /// Finishes an output and makes it visible; also returns its bytes not yet accounted
    /// for (see [`Shared::check`]).
    fn finish_output(&self, o: Output<S::Writer>) -> Result<(OutputFile, u64), CompactionError> {
        let _entered = o.span.enter();
        let (info, writer) = o
            .builder
            .finish_into_inner()
            .map_err(|e| CompactionError::from_output(e, &o.path))?;
        let size = self.store.finish_output(o.file_id, writer)?;
        runtime::failpoint::hit_sync("compactor.after_output_upload");
        o.span.record("bytes", size);
        o.span.record("entries", info.entry_count);
        self.finished
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(o.file_id);
        let file = OutputFile {
            file_id: o.file_id,
            size,
            info,
        };
        Ok((file, size.saturating_sub(o.accounted)))
    }

    /// Deletes the finished outputs of a merge that will not be reported.
    fn discard_finished(&self) {
        let finished =
            std::mem::take(&mut *self.finished.lock().unwrap_or_else(|e| e.into_inner()));
        for id in finished {
            self.store.discard_output(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use storage::TableName;

    use super::*;
    use crate::store::MemorySstStore;
    use crate::testing::{Entry, build_sst, entry, read_sst};

    fn table() -> TableName {
        TableName::new("users").expect("valid name")
    }

    /// A store holding one SST per `(level, entries)`, ids 1, 2, ... in order; the inputs
    /// grouped by level as a spec lists them.
    fn inputs(
        files: Vec<(u32, Vec<Entry>)>,
        options: &SstOptions,
    ) -> (Arc<MemorySstStore>, Vec<(u32, Vec<FileMeta>)>) {
        let store = Arc::new(MemorySstStore::new(table()));
        let mut levels: Vec<(u32, Vec<FileMeta>)> = Vec::new();
        for (i, (level, entries)) in files.into_iter().enumerate() {
            let (meta, bytes) = build_sst(i as u64 + 1, entries, options.clone()).expect("sst");
            store.insert(meta.id, bytes);
            match levels.last_mut() {
                Some((l, metas)) if *l == level => metas.push(meta),
                _ => levels.push((level, vec![meta])),
            }
        }
        (store, levels)
    }

    fn spec(inputs: Vec<(u32, Vec<FileMeta>)>, bottommost: bool) -> CompactionSpec {
        CompactionSpec {
            table: table(),
            output_level: inputs.last().map_or(1, |(l, _)| (*l).max(1)),
            inputs,
            bottommost,
            target_file_size: u64::MAX,
            output_file_ids: (100..150).collect(),
            io_bytes_per_sec: 0,
            reason: "test".to_owned(),
            max_subcompactions: 1,
            grandparent_bounds: Vec::new(),
        }
    }

    fn run(
        store: &Arc<MemorySstStore>,
        spec: &CompactionSpec,
        threads: usize,
    ) -> Result<Compacted, CompactionError> {
        let options = MergeOptions {
            threads,
            min_subcompaction_bytes: 1,
            ..MergeOptions::default()
        };
        compact(store, spec, &options, &Control::default())
    }

    /// Every output's entries, file by file.
    fn contents(store: &MemorySstStore, c: &Compacted) -> Vec<Vec<Entry>> {
        c.outputs
            .iter()
            .map(|o| {
                let bytes = store.get(o.file_id).expect("output stored");
                assert_eq!(bytes.len() as u64, o.size);
                read_sst(bytes).expect("readable output")
            })
            .collect()
    }

    #[test]
    fn the_newest_version_wins_and_tombstones_stay_unless_bottommost() {
        let files = || {
            vec![
                (0, vec![entry("a", 5, Some("a2")), entry("b", 4, None)]),
                (
                    0,
                    vec![
                        entry("a", 1, Some("a1")),
                        entry("b", 2, Some("b1")),
                        entry("c", 3, Some("c1")),
                        entry("d", 2, None),
                    ],
                ),
            ]
        };
        let (store, levels) = inputs(files(), &SstOptions::default());
        let c = run(&store, &spec(levels, false), 1).expect("compacted");
        assert_eq!(
            contents(&store, &c),
            [vec![
                entry("a", 5, Some("a2")),
                entry("b", 4, None),
                entry("c", 3, Some("c1")),
                entry("d", 2, None),
            ]]
        );
        assert_eq!(
            c.stats,
            CompactionStats {
                input_entries: 6,
                output_entries: 4,
                shadowed_dropped: 2,
                tombstones_dropped: 0,
            }
        );
        assert_eq!(c.outputs[0].file_id, 100);
        assert_eq!(c.outputs[0].info.tombstone_count, 2);

        let (store, levels) = inputs(files(), &SstOptions::default());
        let c = run(&store, &spec(levels, true), 1).expect("compacted");
        assert_eq!(
            contents(&store, &c),
            [vec![entry("a", 5, Some("a2")), entry("c", 3, Some("c1"))]]
        );
        assert_eq!(
            (c.stats.shadowed_dropped, c.stats.tombstones_dropped),
            (2, 2)
        );
        assert_eq!(c.outputs[0].info.tombstone_count, 0);
        assert_eq!(c.bytes_written, c.outputs[0].size);
        assert!(c.bytes_read > 0);
    }

    #[test]
    fn a_level_of_several_files_merges_with_l0() {
        let l1 = |keys: std::ops::Range<u32>| {
            keys.map(|i| entry(&format!("k{i:03}"), 1, Some("old")))
                .collect::<Vec<_>>()
        };
        let (store, levels) = inputs(
            vec![
                (
                    0,
                    vec![entry("k005", 9, Some("new")), entry("k150", 8, None)],
                ),
                (1, l1(0..100)),
                (1, l1(100..200)),
            ],
            &SstOptions::default(),
        );
        let progress = Arc::new(Progress::default());
        let control = Control {
            progress: progress.clone(),
            ..Control::default()
        };
        let c = compact(
            &store,
            &spec(levels, true),
            &MergeOptions::default(),
            &control,
        )
        .expect("compacted");
        let out = contents(&store, &c).concat();
        assert_eq!(out.len(), 199, "k150 deleted");
        assert_eq!(out[5], entry("k005", 9, Some("new")));
        assert!(out.iter().all(|e| e.0 != b"k150"));
        assert_eq!(c.stats.input_entries, 202);
        assert_eq!(progress.entries.load(Ordering::Relaxed), 202);
        assert_eq!(
            progress.bytes_written.load(Ordering::Relaxed),
            c.bytes_written
        );
        assert_eq!(progress.bytes_read.load(Ordering::Relaxed), c.bytes_read);
    }

    /// 400 keys with three versions each over three files, values of 100 bytes.
    fn versioned(options: &SstOptions) -> (Arc<MemorySstStore>, Vec<(u32, Vec<FileMeta>)>) {
        let file = |seq: u64| {
            (0..400)
                .map(|i| {
                    let v = format!("{seq}{}", "v".repeat(99));
                    (
                        format!("key{i:04}").into_bytes(),
                        seq * 1000 + i,
                        Some(v.into_bytes()),
                    )
                })
                .collect::<Vec<_>>()
        };
        inputs(vec![(0, file(3)), (0, file(2)), (0, file(1))], options)
    }

    /// Outputs line up with the grandparent files: one that reached half the target ends
    /// where the next key passes a grandparent's largest key; a smaller one goes on.
    #[test]
    fn outputs_end_at_grandparent_bounds_once_half_the_target_is_written() {
        let (store, levels) = versioned(&SstOptions::default());
        let mut s = spec(levels, false);
        s.target_file_size = 16 << 10;
        // About 110 bytes a key: 16 KiB is ~150 keys, half of it ~75.
        let bounds = ["key0099", "key0120", "key0130", "key0299"];
        s.grandparent_bounds = bounds.iter().map(|b| b.as_bytes().to_vec()).collect();
        let c = run(&store, &s, 1).expect("compacted");
        let ends: Vec<String> = c
            .outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.info.largest_user_key).into_owned())
            .collect();
        // key0099 is crossed with ~100 keys (over half) written: cut there. key0120 and
        // key0130 come 21 and 31 keys into the next output: no cut; it is cut on size
        // (~145 keys, at key0244), and key0299 comes 55 keys into the one after: no cut.
        assert_eq!(ends[0], "key0099", "{ends:?}");
        for early in ["key0120", "key0130", "key0299"] {
            assert!(!ends.iter().any(|e| e == early), "{early}: {ends:?}");
        }
        let all = contents(&store, &c).concat();
        assert_eq!(all.len(), 400, "nothing lost at the cuts");
        // Without bounds the same merge cuts on size alone.
        s.grandparent_bounds.clear();
        let plain = run(&store, &s, 1).expect("compacted");
        assert_ne!(
            plain.outputs[0].info.largest_user_key.as_ref(),
            b"key0099".as_slice()
        );
    }

    #[test]
    fn outputs_are_cut_at_the_target_size_between_user_keys_in_id_order() {
        let (store, levels) = versioned(&SstOptions::default());
        let mut s = spec(levels, false);
        s.target_file_size = 8 << 10;
        let c = run(&store, &s, 1).expect("compacted");
        assert!(c.outputs.len() >= 4, "{} outputs", c.outputs.len());
        let ids: Vec<u64> = c.outputs.iter().map(|o| o.file_id).collect();
        assert_eq!(ids, (100..100 + ids.len() as u64).collect::<Vec<_>>());
        for (i, o) in c.outputs.iter().enumerate() {
            if i + 1 < c.outputs.len() {
                assert!(o.size >= s.target_file_size, "output {i}: {} bytes", o.size);
            }
            // At most one block over the target (the cut waits for the next user key).
            assert!(
                o.size < s.target_file_size + (6 << 10),
                "output {i}: {} bytes",
                o.size
            );
        }
        for w in c.outputs.windows(2) {
            assert!(
                w[0].info.largest_user_key < w[1].info.smallest_user_key,
                "a user key spans two outputs"
            );
        }
        let all = contents(&store, &c).concat();
        assert_eq!(all.len(), 400);
        assert!(all.iter().all(|e| e.1 >= 3000), "only the newest versions");
    }

    #[test]
    fn running_out_of_ids_fails_and_deletes_what_was_written() {
        let (store, levels) = versioned(&SstOptions::default());
        let mut s = spec(levels, false);
        s.target_file_size = 8 << 10;
        s.output_file_ids = vec![100, 101];
        let err = run(&store, &s, 1).expect_err("two ids are not enough");
        assert!(
            matches!(err, CompactionError::OutOfFileIds { allotted: 2 }),
            "{err:?}"
        );
        assert_eq!(store.file_ids(), [1, 2, 3], "only the inputs are left");
    }

    #[test]
    fn nothing_left_writes_nothing_and_spends_no_id() {
        let (store, levels) = inputs(
            vec![
                (0, vec![entry("a", 5, None), entry("b", 6, None)]),
                (1, vec![entry("a", 1, Some("x")), entry("b", 2, Some("y"))]),
            ],
            &SstOptions::default(),
        );
        let c = run(&store, &spec(levels, true), 1).expect("compacted");
        assert!(c.outputs.is_empty());
        assert_eq!(c.bytes_written, 0);
        assert_eq!(c.stats.tombstones_dropped, 2);
        assert_eq!(store.file_ids(), [1, 2]);
    }

    /// Random puts and deletes over `files` L0 files of `n` entries each, newer than any
    /// of [`random_level`].
    fn random_l0(seed: u64, files: usize, n: usize) -> Vec<(u32, Vec<Entry>)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut seq = 1_000_000;
        (0..files)
            .map(|_| {
                let mut entries: Vec<Entry> = (0..n)
                    .map(|_| {
                        seq += 1;
                        let key = format!("key{:05}", rng.random_range(0..3000));
                        let value =
                            (!rng.random_ratio(1, 5)).then(|| vec![b'x'; rng.random_range(0..200)]);
                        (key.into_bytes(), seq, value)
                    })
                    .collect();
                // One version per key per file, as a memtable flush writes.
                entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                entries.dedup_by(|a, b| a.0 == b.0);
                (0, entries)
            })
            .rev()
            .collect()
    }

    /// L1 of `files` files, in key order, splitting the key space evenly, each holding
    /// about half of its keys.
    fn random_level(seed: u64, files: u32) -> Vec<(u32, Vec<Entry>)> {
        let mut rng = StdRng::seed_from_u64(seed);
        let per_file = 3000 / files;
        (0..files)
            .map(|f| {
                let mut entries = Vec::new();
                for k in f * per_file..(f + 1) * per_file {
                    if rng.random_bool(0.5) {
                        let value = vec![b'l'; rng.random_range(0..200)];
                        entries.push((
                            format!("key{k:05}").into_bytes(),
                            u64::from(k) + 1,
                            Some(value),
                        ));
                    }
                }
                (1, entries)
            })
            .collect()
    }

    #[test]
    fn subcompactions_write_the_same_content_as_one_range() {
        for bottommost in [false, true] {
            let options = SstOptions::default();
            let mut files = random_l0(7, 3, 2000);
            files.extend(random_level(8, 8));
            let (store, levels) = inputs(files, &options);
            let mut s = spec(levels, bottommost);
            s.target_file_size = 16 << 10;
            s.output_file_ids = (100..400).collect();
            let one = run(&store, &s, 1).expect("one range");
            let one_content = contents(&store, &one);
            for id in one.outputs.iter().map(|o| o.file_id) {
                store.remove(id);
            }
            let four = run(&store, &s, 4).expect("four ranges");
            assert_eq!(one.subcompactions, 1);
            assert_eq!(four.subcompactions, 4);
            assert_eq!(
                contents(&store, &four).concat(),
                one_content.concat(),
                "bottommost {bottommost}"
            );
            assert_eq!(four.stats, one.stats);
            for w in four.outputs.windows(2) {
                assert!(w[0].info.largest_user_key < w[1].info.smallest_user_key);
            }
            let mut ids: Vec<u64> = four.outputs.iter().map(|o| o.file_id).collect();
            ids.sort_unstable();
            assert_eq!(ids, (100..100 + ids.len() as u64).collect::<Vec<_>>());
        }
    }

    /// Flips one byte in the middle of `bytes` (a data block of a file of many blocks).
    fn flip_middle(bytes: &Bytes) -> (Bytes, usize) {
        let mut damaged = bytes.to_vec();
        let at = damaged.len() / 3;
        damaged[at] ^= 0x40;
        (Bytes::from(damaged), at)
    }

    #[test]
    fn a_corrupt_data_block_is_a_typed_error_with_file_and_offset() {
        let options = SstOptions {
            block_size: 512,
            ..SstOptions::default()
        };
        let (store, levels) = versioned(&options);
        let (damaged, at) = flip_middle(&store.get(2).expect("file 2"));
        store.insert(2, damaged.clone());
        // What a plain read of the file says about it.
        let expected = match read_sst(damaged)
            .expect_err("damaged")
            .downcast::<sst::SstError>()
        {
            Ok(e) => *e,
            Err(e) => panic!("not an sst error: {e}"),
        };
        let sst::SstError::Corruption { offset, .. } = expected else {
            panic!("not corruption: {expected:?}");
        };
        assert!(
            offset > 0 && offset <= at as u64,
            "offset {offset}, flipped {at}"
        );

        let err = run(&store, &spec(levels, false), 1).expect_err("corrupt input");
        let path = "tables/users/sst/00000000000000000002.sst";
        match &err {
            CompactionError::Corruption {
                file,
                offset: found,
                reason,
            } => {
                assert_eq!((file.as_str(), *found), (path, offset));
                assert!(reason.contains("checksum"), "{reason}");
            }
            other => panic!("not corruption: {other:?}"),
        }
        assert!(!err.retriable());
        assert_eq!(store.file_ids(), [1, 2, 3], "nothing written");
    }

    #[test]
    fn a_damaged_footer_or_a_missing_input_is_reported_at_open() {
        let (store, levels) = versioned(&SstOptions::default());
        let s = spec(levels, false);
        let mut bytes = store.get(3).expect("file 3").to_vec();
        let size = bytes.len() as u64;
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        store.insert(3, Bytes::from(bytes));
        let err = run(&store, &s, 1).expect_err("bad magic");
        assert!(
            matches!(&err, CompactionError::Corruption { file, offset, .. }
                if file.ends_with("00000000000000000003.sst") && *offset == size - 64),
            "{err:?}"
        );
        store.remove(3);
        let err = run(&store, &s, 1).expect_err("missing");
        assert!(
            matches!(&err, CompactionError::InputMissing { file } if file.ends_with("3.sst")),
            "{err:?}"
        );
        assert!(!err.retriable());
    }

    #[test]
    fn a_cancelled_merge_stops_and_leaves_no_output() {
        let (store, levels) = inputs(random_l0(3, 4, 3000), &SstOptions::default());
        let mut s = spec(levels, false);
        s.target_file_size = 4 << 10;
        s.output_file_ids = (100..1000).collect();
        for threads in [1, 3] {
            let control = Control::default();
            control.cancel.cancel();
            let options = MergeOptions {
                threads,
                min_subcompaction_bytes: 1,
                ..MergeOptions::default()
            };
            let err = compact(&store, &s, &options, &control).expect_err("cancelled");
            assert!(matches!(err, CompactionError::Cancelled), "{err:?}");
            assert_eq!(store.file_ids(), [1, 2, 3, 4]);
        }
        // Cancelled half-way (on the first check) after outputs were finished.
        let control = Control::default();
        let cancel = control.cancel.clone();
        let limiter_that_cancels = RateLimiter::new(1).map(Arc::new);
        let control = Control {
            limiter: limiter_that_cancels,
            ..control
        };
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            cancel.cancel();
        });
        let err = compact(&store, &s, &MergeOptions::default(), &control).expect_err("cancelled");
        stopper.join().expect("stopper");
        assert!(matches!(err, CompactionError::Cancelled), "{err:?}");
        assert_eq!(store.file_ids(), [1, 2, 3, 4], "finished outputs deleted");
    }

    /// The visible value of every key (newest version; tombstones hide) over `entries`.
    fn visible(entries: impl IntoIterator<Item = Entry>) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut newest: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        for (k, seq, v) in entries {
            if newest.get(&k).is_none_or(|(s, _)| *s < seq) {
                newest.insert(k, (seq, v));
            }
        }
        newest
            .into_iter()
            .filter_map(|(k, (_, v))| v.map(|v| (k, v)))
            .collect()
    }

    #[test]
    fn a_preempted_merge_commits_a_partial_result_that_reads_the_same() {
        // L1: two files over the whole key space; L2: four files of 100 keys each.
        let l1 = |range: std::ops::Range<u32>, seq: u64| -> Vec<Entry> {
            range
                .step_by(3)
                .map(|i| {
                    let v = (i % 7 != 0).then(|| format!("new{i}"));
                    entry(&format!("k{i:03}"), seq + u64::from(i), v.as_deref())
                })
                .collect()
        };
        let l2 = |range: std::ops::Range<u32>| -> Vec<Entry> {
            range
                .map(|i| entry(&format!("k{i:03}"), 1 + u64::from(i), Some("old")))
                .collect()
        };
        let files = vec![
            (1, l1(0..200, 1000)),
            (1, l1(200..400, 2000)),
            (2, l2(0..100)),
            (2, l2(100..200)),
            (2, l2(200..300)),
            (2, l2(300..400)),
        ];
        let all: Vec<Entry> = files.iter().flat_map(|(_, e)| e.clone()).collect();
        let (store, levels) = inputs(files, &SstOptions::default());
        let mut s = spec(levels.clone(), false);
        s.target_file_size = 1000;
        // Slow writes; the scheduler preempts a little after the start.
        let control = Control {
            limiter: RateLimiter::new(10_000).map(Arc::new),
            ..Control::default()
        };
        let preempt = control.preempt.clone();
        let preempter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            preempt.cancel();
        });
        let c = compact(&store, &s, &MergeOptions::default(), &control).expect("partial");
        preempter.join().expect("preempter");
        let consumed = c.consumed.clone().expect("a partial result");
        let input_ids: Vec<u64> = levels
            .iter()
            .flat_map(|(_, f)| f.iter().map(|f| f.id))
            .collect();
        assert!(
            consumed.len() < input_ids.len(),
            "stopped early: {consumed:?} of {input_ids:?}"
        );
        let outputs = contents(&store, &c);
        // The outputs stay below every output-level file that remains.
        let kept_l2: Vec<&FileMeta> = levels[1]
            .1
            .iter()
            .filter(|f| !consumed.contains(&f.id))
            .collect();
        for o in &c.outputs {
            for f in &kept_l2 {
                assert!(
                    o.info.largest_user_key < f.smallest,
                    "output {} overlaps kept L2 file {}",
                    o.file_id,
                    f.id
                );
            }
        }
        // The model check: the kept inputs plus the outputs read exactly as all inputs did.
        let mut after: Vec<Entry> = outputs.into_iter().flatten().collect();
        for (_, files) in &levels {
            for f in files.iter().filter(|f| !consumed.contains(&f.id)) {
                after.extend(read_sst(store.get(f.id).expect("kept input")).expect("readable"));
            }
        }
        assert_eq!(visible(after), visible(all));
    }

    #[test]
    fn the_io_budget_paces_the_writes() {
        let (store, levels) = versioned(&SstOptions::default());
        let control = Control {
            limiter: RateLimiter::new(200_000).map(Arc::new),
            ..Control::default()
        };
        let started = Instant::now();
        let c = compact(
            &store,
            &spec(levels, false),
            &MergeOptions::default(),
            &control,
        )
        .expect("compacted");
        // About 45 KB at 200 KB/s with a 20 KB burst: at least ~0.1 s.
        assert!(c.bytes_written > 40_000, "{}", c.bytes_written);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(90), "{took:?}");
    }
}
