//! Reading a table's WAL from a sequence number, under a recovery mode.
//!
//! [`WalReader::open`] lists the table's segments once (a snapshot: segments written later
//! are seen by opening a new reader). [`WalReader::read_from`] returns a [`WalChunks`] cursor
//! that yields the entries with `seq >= from_seq`, in order, in chunks of at most
//! `batch_size` entries. Segments wholly below `from_seq` are skipped without being read:
//! a segment's entries all lie below the next segment's first sequence number, which its
//! name carries. Segments are fetched a few at a time ahead of the consumer, since a
//! replay over an object store is bound by request latency, not bandwidth.
//!
//! Each segment is decoded completely before any of its entries is returned, so under
//! `absolute_consistency` no entry of a damaged segment is ever handed out. An error ends
//! the read; its `valid_through` says up to which sequence number the log was intact.

use std::collections::VecDeque;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use lsm::SeqNo;
use storage::paths::{self, TableName};
use storage::{ObjectPath, Storage, StorageError};

use crate::batch::WalEntry;
use crate::error::WalError;
use crate::format::{Damage, DamageAction, RecoveryMode, SegmentContext, decode_segment_with};

/// Segments fetched ahead of the one being decoded.
const DEFAULT_PREFETCH: usize = 4;

/// One WAL segment object, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    pub path: ObjectPath,
    /// The first sequence number, from the object's name.
    pub first_seq: SeqNo,
    pub size: u64,
}

/// A table's WAL segments at the time of opening.
#[derive(Debug, Clone)]
pub struct WalReader {
    storage: Storage,
    table: TableName,
    segments: Vec<SegmentInfo>,
}

impl WalReader {
    /// Lists the segments of `table`. Objects under the WAL directory whose names are not
    /// segment names are ignored (with a warning).
    pub async fn open(storage: &Storage, table: &str) -> Result<Self, WalError> {
        let table = TableName::new(table)?;
        let listed = storage.list(&paths::wal_dir(&table)).await?;
        let mut segments = Vec::with_capacity(listed.len());
        for meta in listed {
            match paths::parse_wal_segment_path(&meta.location) {
                Some(first_seq) => segments.push(SegmentInfo {
                    path: meta.location,
                    first_seq,
                    size: meta.size,
                }),
                None => tracing::warn!(
                    table = %table,
                    object = %meta.location,
                    "ignoring an object in the wal directory that is not a wal segment"
                ),
            }
        }
        segments.sort_by_key(|s| s.first_seq);
        Ok(Self {
            storage: storage.clone(),
            table,
            segments,
        })
    }

    pub fn table(&self) -> &TableName {
        &self.table
    }

    /// The segments, oldest first.
    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Entries with `seq >= from_seq`, in chunks of at most `batch_size` (at least 1).
    pub fn read_from(&self, from_seq: SeqNo, batch_size: usize, mode: RecoveryMode) -> WalChunks {
        self.read_from_with(from_seq, batch_size, mode, DEFAULT_PREFETCH)
    }

    /// [`Self::read_from`] with `prefetch` segments fetched ahead (at least 1).
    pub fn read_from_with(
        &self,
        from_seq: SeqNo,
        batch_size: usize,
        mode: RecoveryMode,
        prefetch: usize,
    ) -> WalChunks {
        self.read_from_checked(from_seq, batch_size, mode, prefetch, &ReadChecks::default())
    }

    /// [`Self::read_from_with`] with [`ReadChecks`]: quarantined segments skipped, holes
    /// between segments reported.
    pub fn read_from_checked(
        &self,
        from_seq: SeqNo,
        batch_size: usize,
        mode: RecoveryMode,
        prefetch: usize,
        checks: &ReadChecks,
    ) -> WalChunks {
        let skip = &checks.skip;
        // The last segment whose first seq is <= from_seq may hold from_seq; every one
        // before it ends below it.
        let start = self
            .segments
            .partition_point(|s| s.first_seq <= from_seq)
            .saturating_sub(1);
        let total = self.segments.len();
        let jobs: Vec<(usize, SegmentInfo, Option<SeqNo>)> = self
            .segments
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, s)| !skip.contains(&s.first_seq))
            .map(|(i, s)| (i, s.clone(), self.segments.get(i + 1).map(|n| n.first_seq)))
            .collect();
        let storage = self.storage.clone();
        let fetches = stream::iter(jobs)
            .map(move |(index, info, next_first_seq)| {
                let storage = storage.clone();
                async move {
                    let bytes = storage.get(&info.path).await;
                    Fetched {
                        is_last: index + 1 == total,
                        info,
                        next_first_seq,
                        bytes,
                    }
                }
            })
            .buffered(prefetch.max(1))
            .boxed();
        WalChunks {
            table: self.table.clone(),
            mode,
            holes: checks.holes.clone(),
            from_seq,
            batch_size: batch_size.max(1),
            fetches: Some(fetches),
            pending: VecDeque::new(),
            failed: None,
            report: RecoveryReport {
                segments_skipped: start,
                ..RecoveryReport::default()
            },
        }
    }
}

/// What a read checks beyond the format.
#[derive(Debug, Clone, Default)]
pub struct ReadChecks {
    /// Segments (first seqs) not read at all (quarantined): neither fetched nor decoded,
    /// and not a hole — their seqs are simply not returned.
    pub skip: Vec<SeqNo>,
    /// `Some`: a hole between two intact segments (the format allows one; writers never
    /// leave one) ends the read with [`WalError::MissingSegment`] after the entries before
    /// it — unless the segment after the hole starts at a seq in the set (a hole the
    /// caller has checked is real). A directory listing is not a snapshot: one that runs
    /// while segments are written can miss one and show its successor, and a tailing
    /// reader must not read past that. `None`: holes are not checked.
    pub holes: Option<std::collections::BTreeSet<SeqNo>>,
}

/// A fetched segment, waiting to be decoded.
struct Fetched {
    info: SegmentInfo,
    next_first_seq: Option<SeqNo>,
    is_last: bool,
    bytes: Result<Bytes, StorageError>,
}

/// What a read survived, per its recovery mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments decoded.
    pub segments_read: usize,
    /// Segments not read because they lie wholly below `from_seq`.
    pub segments_skipped: usize,
    /// Damage tolerated, stopped at, or skipped, in log order.
    pub damage: Vec<Damage>,
    /// The highest sequence number decoded intact (including entries below `from_seq`).
    pub last_seq: Option<SeqNo>,
}

impl RecoveryReport {
    /// Where `point_in_time` stopped, if it did.
    pub fn stopped_at(&self) -> Option<&Damage> {
        self.damage
            .iter()
            .find(|d| d.action == DamageAction::Stopped)
    }

    /// Whether the read found no damage at all.
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

/// A cursor over a WAL read; see [`WalReader::read_from`].
pub struct WalChunks {
    table: TableName,
    mode: RecoveryMode,
    /// See [`ReadChecks::holes`].
    holes: Option<std::collections::BTreeSet<SeqNo>>,
    from_seq: SeqNo,
    batch_size: usize,
    /// `None` once every segment has been read, the read stopped, or failed.
    fetches: Option<BoxStream<'static, Fetched>>,
    pending: VecDeque<WalEntry>,
    /// An error met while entries before it were still pending: returned once they are out.
    failed: Option<WalError>,
    report: RecoveryReport,
}

impl std::fmt::Debug for WalChunks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalChunks")
            .field("table", &self.table)
            .field("mode", &self.mode)
            .field("from_seq", &self.from_seq)
            .field("batch_size", &self.batch_size)
            .field("pending", &self.pending.len())
            .field("report", &self.report)
            .finish()
    }
}

impl WalChunks {
    /// The next chunk of entries, `Ok(None)` at the end. Damage is returned as an error
    /// after every entry of the intact segments before it; after an error the read is over:
    /// later calls return `Ok(None)`.
    pub async fn next_chunk(&mut self) -> Result<Option<Vec<WalEntry>>, WalError> {
        while self.pending.len() < self.batch_size {
            let Some(fetches) = self.fetches.as_mut() else {
                break;
            };
            let Some(fetched) = fetches.next().await else {
                self.fetches = None;
                break;
            };
            if let Err(err) = self.decode(fetched) {
                // The entries of earlier (intact) segments still go out first.
                self.fetches = None;
                self.failed = Some(err);
                break;
            }
        }
        if self.pending.is_empty() {
            return match self.failed.take() {
                Some(err) => Err(err),
                None => Ok(None),
            };
        }
        let n = self.batch_size.min(self.pending.len());
        Ok(Some(self.pending.drain(..n).collect()))
    }

    fn decode(&mut self, fetched: Fetched) -> Result<(), WalError> {
        let Fetched {
            info,
            next_first_seq,
            is_last,
            bytes,
        } = fetched;
        let bytes = bytes?;
        let segment = info.path.to_string();
        let ctx = SegmentContext {
            table: Some(self.table.as_str()),
            named_first_seq: Some(info.first_seq),
            next_first_seq,
            valid_through: self.report.last_seq,
        };
        let decoded = decode_segment_with(&bytes, self.mode, &segment, is_last, &ctx)?;
        self.report.segments_read += 1;
        if let Some(last) = decoded.last_seq() {
            self.report.last_seq = Some(last);
        }
        // Writers number segments without holes: an intact segment ends just below the
        // next one (a segment without records owns its first seq). A hole means the
        // listing missed a segment (or one is gone): nothing after it may be read.
        let hole = match (decoded.damage.is_empty(), next_first_seq) {
            (true, Some(next)) => {
                let end = decoded
                    .last_seq()
                    .unwrap_or(info.first_seq)
                    .max(info.first_seq);
                (next > end + 1).then_some((end, next))
            }
            _ => None,
        };
        for damage in &decoded.damage {
            tracing::warn!(table = %self.table, mode = %self.mode, "{damage}");
        }
        self.report.damage.extend(decoded.damage);
        let from = self.from_seq;
        self.pending
            .extend(decoded.entries.into_iter().filter(|e| e.seq >= from));
        if decoded.stop {
            self.fetches = None;
        }
        match (hole, &self.holes) {
            (Some((last_seq, next_first_seq)), Some(allowed))
                if next_first_seq > from && !allowed.contains(&next_first_seq) =>
            {
                Err(WalError::MissingSegment {
                    table: self.table.to_string(),
                    segment,
                    last_seq,
                    next_first_seq,
                })
            }
            _ => Ok(()),
        }
    }

    /// What the read has survived so far.
    pub fn report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Reads everything that is left.
    pub async fn read_all(mut self) -> Result<(Vec<WalEntry>, RecoveryReport), WalError> {
        let mut all = Vec::new();
        while let Some(chunk) = self.next_chunk().await? {
            all.extend(chunk);
        }
        Ok((all, self.report))
    }
}
