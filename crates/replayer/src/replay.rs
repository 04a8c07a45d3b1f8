//! Reading a table's WAL into its [`TableState`]: one pass applies every entry stored after
//! what has been applied, freezing memtables as they fill. The service's tailing loop calls
//! it repeatedly; the benchmark calls it once over a whole log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use lsm::SeqNo;
use storage::Storage;
use wal::{ReadChecks, RecoveryMode, WalError, WalReader};

use crate::table::{FreezeReason, Frozen, Limits, TableState};

/// WAL segments fetched ahead of the one being applied.
const PREFETCH_SEGMENTS: usize = 2;

/// How a pass ended.
#[derive(Debug)]
pub enum PassOutcome {
    /// Every stored segment was read; `newest` is the first seq of the newest one (`None`:
    /// the log has no segment).
    CaughtUp { newest: Option<SeqNo> },
    /// Nothing new since the last pass (only a listing was done).
    NothingNew,
    /// Too many memtables are frozen: reading stopped until flushes commit.
    Stalled,
    /// The listing missed a segment created while it ran (a directory listing is not a
    /// snapshot); what preceded the hole was applied. Pass again at once.
    Relist,
    /// No segment holds the seqs below `next_first_seq` after what was applied, even in a
    /// listing made after the hole was seen. The format allows that (writers never leave
    /// one; a lost segment looks the same): the caller allows this hole and passes again.
    Hole {
        next_first_seq: SeqNo,
        message: String,
    },
    /// The log is damaged where the recovery mode does not allow it: replay must stop.
    Damaged(ReplayError),
    /// The store failed (a transient error, retried by the caller).
    Storage(WalError),
}

/// A WAL that cannot be replayed under the recovery mode: names the table, the segment and
/// the offset, and the last sequence number applied before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ReplayError: table {table}: {message} (applied through seq {applied_seq})")]
pub struct ReplayError {
    pub table: String,
    pub segment: String,
    pub offset: u64,
    pub message: String,
    pub applied_seq: SeqNo,
    /// The segment's bytes are damaged (a torn or corrupt record) and the recovery mode is
    /// not `absolute_consistency` (whose promise is that nothing past damage is applied):
    /// reported as corruption, which the scheduler answers by quarantining the segment and
    /// replaying without it. Otherwise (that mode, a missing segment, a newer format, an
    /// entry that cannot be applied) a plain replay error: the replay stops.
    pub quarantinable: bool,
}

/// Counters of one pass.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Where a pass reads from and how.
pub struct PassInput<'a> {
    pub storage: &'a Storage,
    pub table: &'a str,
    pub mode: RecoveryMode,
    pub batch_size: usize,
    pub limits: Limits,
    /// First seq of the newest segment the previous pass read completely.
    pub last_read: Option<SeqNo>,
    /// Quarantined segments not to read, holes to report (see [`wal::ReadChecks`]).
    pub checks: &'a ReadChecks,
    /// Source of memtable ids (unique on this replayer, across restarts).
    pub ids: &'a AtomicU64,
    /// The caller's clock, in milliseconds.
    pub now_ms: &'a (dyn Fn() -> i64 + Sync),
}

/// Applies everything stored after `state`'s applied seq. Memtables frozen on the way (full
/// ones) are returned through `frozen` as they happen, so the caller can ask for their flush.
pub async fn pass(
    input: &PassInput<'_>,
    state: &Mutex<TableState>,
    frozen: &mut Vec<Frozen>,
    stats: &mut PassStats,
) -> PassOutcome {
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    let reader = match WalReader::open(input.storage, input.table).await {
        Ok(r) => r,
        Err(e) => return PassOutcome::Storage(e),
    };
    let newest = reader.segments().last().map(|s| s.first_seq);
    {
        let mut st = lock();
        if let Some(n) = newest {
            // The newest segment starts at or below the log's head.
            st.wal_head_seq = st.wal_head_seq.max(n);
        }
        // At the cap with a full active memtable: nothing can be applied (do not even read).
        if st.is_stalled(&input.limits)
            && st.freeze_due(&input.limits, (input.now_ms)()) == Some(FreezeReason::Size)
        {
            return PassOutcome::Stalled;
        }
    }
    if newest.is_none() || newest == input.last_read {
        return PassOutcome::NothingNew;
    }
    let from = lock().applied_seq() + 1;
    // Two segments ahead: enough to overlap reading with applying, and each one in flight
    // is up to a segment (4 MiB) of memory outside the memtable budget.
    let mut chunks = reader.read_from_checked(
        from,
        input.batch_size,
        input.mode,
        PREFETCH_SEGMENTS,
        input.checks,
    );
    loop {
        match chunks.next_chunk().await {
            Ok(Some(entries)) => {
                let mut st = lock();
                for e in &entries {
                    let now = (input.now_ms)();
                    // Freeze before an insert would go over the size: the active memtable
                    // never exceeds it by more than one entry. At the frozen cap, stop
                    // applying instead (backpressure); the next pass resumes here.
                    if st.freeze_due(&input.limits, now) == Some(FreezeReason::Size) {
                        if st.is_stalled(&input.limits) {
                            return PassOutcome::Stalled;
                        }
                        let id = input.ids.fetch_add(1, Ordering::Relaxed);
                        if let Some(f) = st.freeze(id, now) {
                            frozen.push(f);
                        }
                    }
                    match st.apply(e.seq, e.kind, &e.key, &e.value, now) {
                        Ok(true) => {
                            stats.entries += 1;
                            stats.bytes += (e.key.len() + e.value.len()) as u64;
                        }
                        Ok(false) => {}
                        Err(err) => {
                            return PassOutcome::Damaged(ReplayError {
                                table: input.table.to_owned(),
                                segment: String::new(),
                                offset: 0,
                                message: format!("entry seq {} cannot be applied: {err}", e.seq),
                                applied_seq: st.applied_seq(),
                                quarantinable: false,
                            });
                        }
                    }
                }
            }
            Ok(None) => break,
            Err(WalError::MissingSegment {
                segment,
                last_seq,
                next_first_seq,
                ..
            }) => {
                return missing_segment(input, segment, last_seq, next_first_seq).await;
            }
            Err(e) if e.is_damage() || matches!(e, WalError::UnsupportedVersion { .. }) => {
                let (segment, offset) = match &e {
                    WalError::TornTail {
                        segment, offset, ..
                    }
                    | WalError::Corruption {
                        segment, offset, ..
                    } => (segment.clone(), *offset),
                    WalError::UnsupportedVersion { segment, .. } => (segment.clone(), 0),
                    _ => (String::new(), 0),
                };
                return PassOutcome::Damaged(ReplayError {
                    table: input.table.to_owned(),
                    segment,
                    offset,
                    message: e.to_string(),
                    applied_seq: lock().applied_seq(),
                    quarantinable: e.is_damage() && input.mode != RecoveryMode::AbsoluteConsistency,
                });
            }
            Err(e) => return PassOutcome::Storage(e),
        }
    }
    for damage in &chunks.report().damage {
        tracing::warn!(table = input.table, mode = %input.mode, "replay passed damaged wal: {damage}");
    }
    PassOutcome::CaughtUp { newest }
}

/// A hole in the listing after `segment` (it ends at `last_seq`, the next listed segment
/// starts at `next_first_seq`). Writers create segments one after another, so a segment
/// holding `last_seq + 1` existed before the listing that saw its successor ended; a new
/// listing sees it, unless there is none.
async fn missing_segment(
    input: &PassInput<'_>,
    segment: String,
    last_seq: SeqNo,
    next_first_seq: SeqNo,
) -> PassOutcome {
    let relisted = match WalReader::open(input.storage, input.table).await {
        Ok(r) => r,
        Err(e) => return PassOutcome::Storage(e),
    };
    if relisted
        .segments()
        .iter()
        .any(|s| s.first_seq > last_seq && s.first_seq < next_first_seq)
    {
        tracing::debug!(
            table = input.table,
            after = %segment,
            last_seq,
            "the wal listing missed a segment written meanwhile; listing again"
        );
        return PassOutcome::Relist;
    }
    PassOutcome::Hole {
        next_first_seq,
        message: format!(
            "no wal segment holds seqs {}..={}: segment {segment} ends at seq {last_seq} and the next one starts at {next_first_seq}",
            last_seq + 1,
            next_first_seq - 1
        ),
    }
}

/// The configured recovery mode, or the spec's when it names one.
pub fn recovery_mode(spec: i32, configured: runtime::config::RecoveryMode) -> RecoveryMode {
    use proto::v1::RecoveryMode as Pb;
    match Pb::try_from(spec).unwrap_or(Pb::Unspecified) {
        Pb::TolerateCorruptedTail => RecoveryMode::TolerateCorruptedTail,
        Pb::AbsoluteConsistency => RecoveryMode::AbsoluteConsistency,
        Pb::PointInTime => RecoveryMode::PointInTime,
        Pb::SkipCorrupted => RecoveryMode::SkipCorrupted,
        Pb::Unspecified => match configured {
            runtime::config::RecoveryMode::TolerateCorruptedTail => {
                RecoveryMode::TolerateCorruptedTail
            }
            runtime::config::RecoveryMode::AbsoluteConsistency => RecoveryMode::AbsoluteConsistency,
            runtime::config::RecoveryMode::PointInTime => RecoveryMode::PointInTime,
            runtime::config::RecoveryMode::SkipCorrupted => RecoveryMode::SkipCorrupted,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal::{WalWriter, WalWriterConfig, WriteBatch};

    /// What the service reads with: holes reported, nothing skipped.
    fn checks() -> ReadChecks {
        ReadChecks {
            skip: Vec::new(),
            holes: Some(Default::default()),
        }
    }

    const LIMITS: Limits = Limits {
        freeze_bytes: 1 << 30,
        max_age_ms: i64::MAX,
        max_frozen: 4,
    };

    /// Five segments of two puts each (seqs 1..=10), one segment per append.
    async fn five_segments(storage: &Storage) -> Vec<storage::ObjectMeta> {
        let w = WalWriter::open(storage.clone(), "t", WalWriterConfig::default())
            .await
            .expect("open");
        for i in 0..5 {
            let mut b = WriteBatch::new();
            b.put(format!("k{i}a"), "v").put(format!("k{i}b"), "v");
            w.append(b).await.expect("append");
        }
        let mut segs = storage
            .list(&storage::paths::wal_dir(
                &storage::TableName::new("t").expect("name"),
            ))
            .await
            .expect("list");
        segs.sort_by(|a, b| a.location.cmp(&b.location));
        assert_eq!(segs.len(), 5);
        segs
    }

    async fn run(storage: &Storage, mode: RecoveryMode, st: &Mutex<TableState>) -> PassOutcome {
        let ids = AtomicU64::new(100);
        let input = PassInput {
            storage,
            table: "t",
            mode,
            batch_size: 3,
            limits: LIMITS,
            last_read: None,
            checks: &checks(),
            ids: &ids,
            now_ms: &|| 0,
        };
        let mut frozen = Vec::new();
        let mut stats = PassStats::default();
        pass(&input, st, &mut frozen, &mut stats).await
    }

    /// A segment missing from a listing: when it exists (the listing raced its creation)
    /// the pass asks to list again; when no segment holds those seqs the pass stops at the
    /// hole, and once the caller allows it, the next pass reads past it.
    #[tokio::test]
    async fn a_hole_in_the_listing_is_listed_again_or_reported_when_real() {
        let storage = Storage::in_memory();
        let segs = five_segments(&storage).await;
        let st = Mutex::new(TableState::new("t", 0, 1, 0));
        let ids = AtomicU64::new(100);
        let mut checks = checks();
        fn input<'a>(
            storage: &'a Storage,
            ids: &'a AtomicU64,
            checks: &'a ReadChecks,
        ) -> PassInput<'a> {
            PassInput {
                storage,
                table: "t",
                mode: RecoveryMode::TolerateCorruptedTail,
                batch_size: 3,
                limits: LIMITS,
                last_read: None,
                checks,
                ids,
                now_ms: &|| 0,
            }
        }
        let seg = |i: usize| segs[i].location.to_string();
        let raced = missing_segment(&input(&storage, &ids, &checks), seg(1), 4, 7).await;
        assert!(matches!(raced, PassOutcome::Relist), "{raced:?}");

        storage.delete(&segs[2].location).await.expect("delete");
        let (mut frozen, mut stats) = (Vec::new(), PassStats::default());
        let out = pass(
            &input(&storage, &ids, &checks),
            &st,
            &mut frozen,
            &mut stats,
        )
        .await;
        let PassOutcome::Hole {
            next_first_seq,
            message,
        } = out
        else {
            panic!("a hole must stop the pass: {out:?}");
        };
        assert_eq!(next_first_seq, 7);
        assert!(message.contains("seqs 5..=6"), "{message}");
        assert_eq!(st.lock().expect("lock").applied_seq(), 4, "nothing past it");
        if let Some(h) = checks.holes.as_mut() {
            h.insert(next_first_seq);
        }
        let out = pass(
            &input(&storage, &ids, &checks),
            &st,
            &mut frozen,
            &mut stats,
        )
        .await;
        assert!(matches!(out, PassOutcome::CaughtUp { .. }), "{out:?}");
        assert_eq!(st.lock().expect("lock").applied_seq(), 10);
    }

    #[tokio::test]
    async fn a_torn_tail_replays_the_intact_prefix() {
        let storage = Storage::in_memory();
        let segs = five_segments(&storage).await;
        let last = &segs[4];
        let bytes = storage.get(&last.location).await.expect("get");
        storage
            .put(&last.location, bytes.slice(..bytes.len() - 3))
            .await
            .expect("truncate");
        let st = Mutex::new(TableState::new("t", 0, 1, 0));
        let out = run(&storage, RecoveryMode::TolerateCorruptedTail, &st).await;
        assert!(matches!(out, PassOutcome::CaughtUp { .. }), "{out:?}");
        let st = st.lock().expect("lock");
        assert_eq!(
            st.applied_seq(),
            8,
            "the torn last record (seqs 9, 10) is dropped"
        );
        let m = st.memtables();
        assert!(crate::table::get(&m, b"k3b").is_some());
        assert!(crate::table::get(&m, b"k4a").is_none());
    }

    #[tokio::test]
    async fn corruption_in_the_middle_stops_with_a_replay_error_and_applies_nothing_past_it() {
        let storage = Storage::in_memory();
        let segs = five_segments(&storage).await;
        let middle = &segs[2];
        let mut bytes = storage.get(&middle.location).await.expect("get").to_vec();
        let at = bytes.len() - 2;
        bytes[at] ^= 0xff;
        storage
            .put(&middle.location, bytes.into())
            .await
            .expect("corrupt");
        let st = Mutex::new(TableState::new("t", 0, 1, 0));
        let out = run(&storage, RecoveryMode::AbsoluteConsistency, &st).await;
        let PassOutcome::Damaged(err) = out else {
            panic!("expected a ReplayError, got {out:?}");
        };
        assert_eq!(err.segment, middle.location.to_string());
        assert!(err.offset > 0, "{err}");
        assert_eq!(err.applied_seq, 4);
        assert!(err.to_string().contains(&err.segment), "{err}");
        let st = st.lock().expect("lock");
        assert_eq!(st.applied_seq(), 4, "nothing past the damage");
        assert!(crate::table::get(&st.memtables(), b"k2a").is_none());
        assert!(crate::table::get(&st.memtables(), b"k4a").is_none());
    }

    #[tokio::test]
    async fn a_pass_applies_each_entry_once_and_a_second_pass_only_lists() {
        let storage = Storage::in_memory();
        five_segments(&storage).await;
        let st = Mutex::new(TableState::new("t", 4, 1, 0));
        let out = run(&storage, RecoveryMode::TolerateCorruptedTail, &st).await;
        let PassOutcome::CaughtUp { newest } = out else {
            panic!("{out:?}");
        };
        assert_eq!(newest, Some(9));
        assert_eq!(st.lock().expect("lock").entries_applied, 6, "seqs 5..=10");
        let ids = AtomicU64::new(1);
        let input = PassInput {
            storage: &storage,
            table: "t",
            mode: RecoveryMode::TolerateCorruptedTail,
            batch_size: 3,
            limits: LIMITS,
            last_read: newest,
            checks: &checks(),
            ids: &ids,
            now_ms: &|| 0,
        };
        let again = pass(&input, &st, &mut Vec::new(), &mut PassStats::default()).await;
        assert!(matches!(again, PassOutcome::NothingNew), "{again:?}");
    }
}
