//! The input side of a merge: the compaction's files as sorted sources for
//! [`lsm::MergingIterator`], restricted to one key range.
//!
//! - Each L0 file (L0 files overlap) is its own source, opened up front.
//! - A sorted level (levels ≥ 1: files in key order, not overlapping) is one
//!   [`LevelIterator`] that opens its files one after the other, as the merge reaches
//!   them: a compaction into a level with many files holds one reader (one readahead
//!   window, one index) of that level at a time instead of all of them. A level whose
//!   files do overlap (a spec this code did not expect) falls back to one source per file.
//! - Every read goes through a counter, which is the attempt's `bytes_read`.
//! - [`Bounded`] starts the merge at a range's first user key and ends it before the
//!   range's end, so a subcompaction reads only its share.
//!
//! Opening errors inside a [`LevelIterator`] travel through the merge boxed, as the typed
//! [`CompactionError`], and are recovered by [`CompactionError::from_merge`].

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use lsm::key::{lookup_key, user_key};
use lsm::manifest::FileMeta;
use lsm::{BoxError, BoxedIterator, InternalIterator, MAX_SEQNO};
use sst::{SstIterator, SstReader, SstSource};
use tokio_util::sync::CancellationToken;

use crate::error::CompactionError;
use crate::merge::{CHECK_ENTRIES, Progress};
use crate::ranges::KeyRange;
use crate::store::SstStore;

/// Opens input files as SST readers.
pub trait OpenInput: Send + Sync {
    fn open(&self, file: &FileMeta) -> Result<SstReader, CompactionError>;
}

/// Opens inputs from a store, counting every byte read into the attempt's progress. Each
/// open (footer, index and filter reads) is an `open_input` span.
pub struct Opener<S> {
    pub store: Arc<S>,
    pub progress: Arc<Progress>,
}

impl<S: SstStore> OpenInput for Opener<S> {
    fn open(&self, file: &FileMeta) -> Result<SstReader, CompactionError> {
        let _span =
            tracing::info_span!("open_input", file_id = file.id, size = file.size).entered();
        let source = Counted {
            inner: self.store.open_input(file)?,
            progress: self.progress.clone(),
        };
        SstReader::open(source, self.store.path(file.id))
            .map_err(|e| CompactionError::from_input(e, file.size))
    }
}

/// A source that counts the bytes it hands out.
struct Counted {
    inner: Box<dyn SstSource>,
    progress: Arc<Progress>,
}

impl SstSource for Counted {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, len: usize) -> std::io::Result<Bytes> {
        let bytes = self.inner.read_at(offset, len)?;
        self.progress
            .bytes_read
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }
}

/// The merge sources of the compaction's `inputs` (by level, shallowest first; L0 newest
/// first) that may hold keys of `range`, newest first as the merge wants them.
pub fn range_sources(
    inputs: &[(u32, Vec<FileMeta>)],
    range: &KeyRange,
    opener: &Arc<dyn OpenInput>,
) -> Result<Vec<BoxedIterator>, CompactionError> {
    let mut sources: Vec<BoxedIterator> = Vec::new();
    for (level, files) in inputs {
        let mut files: Vec<FileMeta> = files
            .iter()
            .filter(|f| range.overlaps(&f.smallest, &f.largest))
            .cloned()
            .collect();
        if files.is_empty() {
            continue;
        }
        if *level > 0 {
            files.sort_by(|a, b| a.smallest.cmp(&b.smallest));
            if files.windows(2).all(|w| w[0].largest < w[1].smallest) {
                sources.push(Box::new(LevelIterator::new(files, opener.clone())));
                continue;
            }
        }
        for f in &files {
            sources.push(Box::new(opener.open(f)?.iter()));
        }
    }
    Ok(sources)
}

/// A sorted run of non-overlapping files as one source, opening each file when the
/// iteration reaches it (see the module docs).
pub struct LevelIterator {
    /// In key order, not overlapping.
    files: Vec<FileMeta>,
    opener: Arc<dyn OpenInput>,
    /// Index of the open file (`files.len()` when past the end).
    index: usize,
    current: Option<SstIterator>,
}

impl LevelIterator {
    pub fn new(files: Vec<FileMeta>, opener: Arc<dyn OpenInput>) -> Self {
        let index = files.len();
        Self {
            files,
            opener,
            index,
            current: None,
        }
    }

    /// Opens file `i` (unpositioned), or nothing past the last file.
    fn open(&mut self, i: usize) -> Result<(), BoxError> {
        self.current = None;
        self.index = i;
        if let Some(f) = self.files.get(i) {
            let reader = self.opener.open(f)?;
            self.current = Some(reader.iter());
        }
        Ok(())
    }

    /// Moves past exhausted files to the first entry of the next non-empty one.
    fn skip_exhausted(&mut self) -> Result<(), BoxError> {
        while self.current.as_ref().is_some_and(|it| !it.valid()) {
            self.open(self.index + 1)?;
            if let Some(it) = self.current.as_mut() {
                it.seek_to_first()?;
            }
        }
        Ok(())
    }
}

impl InternalIterator for LevelIterator {
    fn valid(&self) -> bool {
        self.current.as_ref().is_some_and(|it| it.valid())
    }

    fn key(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |it| it.key())
    }

    fn value(&self) -> &[u8] {
        self.current.as_ref().map_or(&[], |it| it.value())
    }

    fn next(&mut self) -> Result<(), BoxError> {
        if let Some(it) = self.current.as_mut() {
            it.next()?;
        }
        self.skip_exhausted()
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        // The first file whose largest key is not below the target's user key.
        let key = user_key(target);
        let i = self.files.partition_point(|f| f.largest.as_ref() < key);
        self.open(i)?;
        if let Some(it) = self.current.as_mut() {
            it.seek(target)?;
        }
        self.skip_exhausted()
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.open(0)?;
        if let Some(it) = self.current.as_mut() {
            it.seek_to_first()?;
        }
        self.skip_exhausted()
    }
}

/// `inner` restricted to the user keys of `range`: `seek_to_first` goes to the range's
/// first key, and the iterator turns invalid at its end. With a stop token, every
/// [`CHECK_ENTRIES`] steps it fails with [`CompactionError::Cancelled`] once the token is
/// cancelled: the compaction iterator above it may skip any number of dropped entries in
/// one step, and a cancellation must not wait for the next entry it keeps.
pub struct Bounded<I> {
    inner: I,
    range: KeyRange,
    stop: Option<CancellationToken>,
    steps: u64,
}

impl<I: InternalIterator> Bounded<I> {
    pub fn new(inner: I, range: KeyRange) -> Self {
        Self {
            inner,
            range,
            stop: None,
            steps: 0,
        }
    }

    /// Stops when `stop` is cancelled (see the type's doc).
    pub fn with_stop(mut self, stop: CancellationToken) -> Self {
        self.stop = Some(stop);
        self
    }
}

impl<I: InternalIterator> InternalIterator for Bounded<I> {
    fn valid(&self) -> bool {
        self.inner.valid() && !self.range.is_past_end(user_key(self.inner.key()))
    }

    fn key(&self) -> &[u8] {
        self.inner.key()
    }

    fn value(&self) -> &[u8] {
        self.inner.value()
    }

    fn next(&mut self) -> Result<(), BoxError> {
        self.steps += 1;
        if self.steps.is_multiple_of(CHECK_ENTRIES)
            && self
                .stop
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
        {
            return Err(Box::new(CompactionError::Cancelled));
        }
        self.inner.next()
    }

    fn seek(&mut self, target: &[u8]) -> Result<(), BoxError> {
        match self.range.start.as_deref() {
            Some(start) if user_key(target) < start => self.seek_to_first(),
            _ => self.inner.seek(target),
        }
    }

    fn seek_to_first(&mut self) -> Result<(), BoxError> {
        match self.range.start.as_deref() {
            // The newest possible version of the start key sorts before all of its others.
            Some(start) => self.inner.seek(&lookup_key(start, MAX_SEQNO)),
            None => self.inner.seek_to_first(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use lsm::{ParsedInternalKey, ValueKind};
    use sst::{SstBuilder, SstOptions};

    /// Files in memory; counts opens.
    #[derive(Default)]
    struct Files {
        bytes: BTreeMap<u64, Bytes>,
        opened: Mutex<Vec<u64>>,
    }

    impl OpenInput for Files {
        fn open(&self, f: &FileMeta) -> Result<SstReader, CompactionError> {
            self.opened.lock().expect("lock").push(f.id);
            let b =
                self.bytes
                    .get(&f.id)
                    .cloned()
                    .ok_or_else(|| CompactionError::InputMissing {
                        file: f.id.to_string(),
                    })?;
            SstReader::open(b, f.id.to_string()).map_err(|e| CompactionError::from_input(e, 0))
        }
    }

    /// A file of `keys` (each one Put at seq 1) and its metadata.
    fn sst(id: u64, keys: &[&str]) -> (FileMeta, Bytes) {
        let mut b = SstBuilder::new("t", Vec::new(), SstOptions::default()).expect("builder");
        for k in keys {
            let mut key = Vec::new();
            lsm::key::encode_internal_key(k.as_bytes(), 1, ValueKind::Put, &mut key);
            b.add(&key, b"v").expect("add");
        }
        let (info, bytes) = b.finish_into_inner().expect("finish");
        let meta = FileMeta {
            id,
            size: bytes.len() as u64,
            smallest: info.smallest_user_key,
            largest: info.largest_user_key,
            smallest_seq: 1,
            largest_seq: 1,
            entries: keys.len() as u64,
            tombstones: 0,
        };
        (meta, Bytes::from(bytes))
    }

    fn keys(it: &mut dyn InternalIterator) -> Vec<String> {
        let mut out = Vec::new();
        while it.valid() {
            let k = ParsedInternalKey::parse(it.key()).expect("key");
            out.push(String::from_utf8_lossy(k.user_key).into_owned());
            it.next().expect("next");
        }
        out
    }

    fn level() -> (Vec<FileMeta>, Arc<Files>) {
        let mut files = Files::default();
        let mut metas = Vec::new();
        for (id, ks) in [(1, &["a", "b"][..]), (2, &["d", "e"]), (3, &["g", "h"])] {
            let (m, b) = sst(id, ks);
            files.bytes.insert(id, b);
            metas.push(m);
        }
        (metas, Arc::new(files))
    }

    #[test]
    fn a_level_opens_its_files_one_after_the_other() {
        let (metas, files) = level();
        let mut it = LevelIterator::new(metas, files.clone());
        it.seek_to_first().expect("seek");
        assert_eq!(*files.opened.lock().expect("lock"), [1]);
        assert_eq!(keys(&mut it), ["a", "b", "d", "e", "g", "h"]);
        assert_eq!(*files.opened.lock().expect("lock"), [1, 2, 3]);
    }

    #[test]
    fn a_seek_opens_only_the_file_holding_the_target() {
        let (metas, files) = level();
        let mut it = LevelIterator::new(metas, files.clone());
        it.seek(&lookup_key(b"c", MAX_SEQNO)).expect("seek");
        assert_eq!(*files.opened.lock().expect("lock"), [2]);
        assert_eq!(keys(&mut it), ["d", "e", "g", "h"]);
        it.seek(&lookup_key(b"z", MAX_SEQNO)).expect("seek");
        assert!(!it.valid());
    }

    #[test]
    fn a_missing_file_is_a_typed_error_through_the_iterator() {
        let (metas, files) = level();
        let mut files = Arc::try_unwrap(files).ok().expect("sole owner");
        files.bytes.remove(&2);
        let mut it = LevelIterator::new(metas, Arc::new(files));
        it.seek_to_first().expect("file 1 is there");
        it.next().expect("b");
        let err = it.next().expect_err("file 2 is missing");
        let e = CompactionError::from_merge(err, |_| 0);
        assert!(matches!(e, CompactionError::InputMissing { .. }), "{e:?}");
        assert!(!it.valid());
    }

    #[test]
    fn bounded_reads_only_its_range() {
        let (metas, files) = level();
        let range = KeyRange {
            start: Some(b"b".to_vec()),
            end: Some(b"g".to_vec()),
        };
        let mut it = Bounded::new(LevelIterator::new(metas.clone(), files.clone()), range);
        it.seek_to_first().expect("seek");
        assert_eq!(keys(&mut it), ["b", "d", "e"]);

        let stop = CancellationToken::new();
        let mut it = Bounded::new(
            LevelIterator::new(metas.clone(), files.clone()),
            KeyRange::all(),
        )
        .with_stop(stop.clone());
        it.seek_to_first().expect("seek");
        stop.cancel();
        let err = (0..CHECK_ENTRIES)
            .find_map(|_| it.next().err())
            .expect("stopped");
        assert!(matches!(
            CompactionError::from_merge(err, |_| 0),
            CompactionError::Cancelled
        ));

        let opener: Arc<dyn OpenInput> = files;
        let only_last = KeyRange {
            start: Some(b"f".to_vec()),
            end: None,
        };
        let sources = range_sources(&[(1, metas.clone())], &only_last, &opener).expect("sources");
        assert_eq!(sources.len(), 1);
        // L0 files are separate sources; overlapping "levels" too.
        let sources =
            range_sources(&[(0, metas.clone())], &KeyRange::all(), &opener).expect("sources");
        assert_eq!(sources.len(), 3);
        let mut overlapping = metas;
        overlapping[1].largest = Bytes::from_static(b"z");
        let sources =
            range_sources(&[(2, overlapping)], &KeyRange::all(), &opener).expect("sources");
        assert_eq!(sources.len(), 3);
    }
}
