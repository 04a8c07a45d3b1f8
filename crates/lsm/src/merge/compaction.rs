//! What a compaction keeps: the rules for dropping versions and tombstones.
//!
//! Vocabulary. A *snapshot* is a sequence number some reader still reads at; readers
//! without one read the newest data. The live snapshots cut sequence numbers into
//! *stripes*: stripe `i` holds the sequence numbers `s` with `snapshots[i-1] < s <=
//! snapshots[i]`, and the last stripe everything newer than the newest snapshot. Every
//! reader sees, for each user key, the newest version in its own stripe or an older one,
//! so within a stripe only the newest version of a user key (its *stripe leader*) can ever
//! be read; the others are *shadowed* and dropped. With no snapshots there is one stripe,
//! and only each key's newest version survives.
//!
//! A tombstone exists to hide older versions. When the compaction is *bottommost* (no
//! older data for its key range exists below the output level), a tombstone that leads its
//! stripe is dropped unless the next older stripe leader of its key is a value: with no
//! older version, or an older tombstone, every reader sees "absent" without it. (If that
//! older leader is itself a tombstone, it is kept or dropped by the same rule.) When not
//! bottommost, tombstones are always kept: they may hide versions in lower levels.
//!
//! This is the stripe model of RocksDB's `CompactionIterator`. LevelDB's single
//! `smallest_snapshot` (keep everything newer than it) is the conservative case for a
//! caller that cannot list its snapshots; the scheduler here knows them, so it passes the
//! list and gets tighter output.

use crate::iter::{BoxError, InternalIterator};
use crate::key::{ParsedInternalKey, SeqNo, ValueKind};

use super::MergingIterator;

/// Entry counts of one compaction. `input_entries == output_entries + shadowed_dropped +
/// tombstones_dropped` once the iterator is exhausted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionStats {
    /// Entries read from the merged input.
    pub input_entries: u64,
    /// Entries yielded.
    pub output_entries: u64,
    /// Versions dropped because a newer version of their key leads their stripe.
    pub shadowed_dropped: u64,
    /// Tombstones dropped because they hid nothing (bottommost compactions only).
    pub tombstones_dropped: u64,
}

/// Where the current output entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Current {
    None,
    /// The entry `inner` is on.
    Inner,
    /// A tombstone kept after looking past it; its key is in `pending_key`, and `inner`
    /// is already on the next entry, unexamined.
    Pending,
}

/// Filters a merged stream of internal keys by the rules in the module docs, yielding the
/// entries a compaction writes, in order. A cursor like [`InternalIterator`] without
/// seeks: call `seek_to_first` to start. Errors from the input (or a malformed key) are
/// returned and leave the iterator invalid.
pub struct CompactionIterator<I = MergingIterator> {
    inner: I,
    bottommost: bool,
    /// Live snapshots, ascending, without duplicates.
    snapshots: Vec<SeqNo>,
    /// The user key of the last stripe leader, and its stripe.
    last_user_key: Vec<u8>,
    has_last: bool,
    last_stripe: usize,
    /// A bottommost tombstone whose fate depends on the next stripe leader of its key.
    pending_key: Vec<u8>,
    pending: bool,
    current: Current,
    stats: CompactionStats,
}

impl<I: InternalIterator> CompactionIterator<I> {
    /// `snapshots`: every sequence number a reader still reads at (any order; empty for
    /// none). `bottommost`: nothing older than the inputs exists for their key range.
    pub fn new(inner: I, bottommost: bool, snapshots: &[SeqNo]) -> Self {
        let mut snapshots = snapshots.to_vec();
        snapshots.sort_unstable();
        snapshots.dedup();
        Self {
            inner,
            bottommost,
            snapshots,
            last_user_key: Vec::new(),
            has_last: false,
            last_stripe: 0,
            pending_key: Vec::new(),
            pending: false,
            current: Current::None,
            stats: CompactionStats::default(),
        }
    }

    pub fn valid(&self) -> bool {
        self.current != Current::None
    }

    /// The current encoded internal key.
    pub fn key(&self) -> &[u8] {
        match self.current {
            Current::None => &[],
            Current::Inner => self.inner.key(),
            Current::Pending => &self.pending_key,
        }
    }

    /// The current value (empty for tombstones).
    pub fn value(&self) -> &[u8] {
        match self.current {
            Current::Inner => self.inner.value(),
            Current::None | Current::Pending => &[],
        }
    }

    /// Starts from the beginning of the input, resetting the statistics.
    pub fn seek_to_first(&mut self) -> Result<(), BoxError> {
        self.current = Current::None;
        self.has_last = false;
        self.pending = false;
        self.stats = CompactionStats::default();
        self.inner.seek_to_first()?;
        self.advance()
    }

    /// Moves to the next entry to keep.
    #[expect(
        clippy::should_implement_trait,
        reason = "a fallible cursor step, like InternalIterator::next"
    )]
    pub fn next(&mut self) -> Result<(), BoxError> {
        let current = std::mem::replace(&mut self.current, Current::None);
        match current {
            Current::None => return Ok(()),
            Current::Inner => self.inner.next()?,
            Current::Pending => {}
        }
        self.advance()
    }

    pub fn stats(&self) -> CompactionStats {
        self.stats
    }

    pub fn into_inner(self) -> I {
        self.inner
    }

    /// The stripe of `seq`: how many snapshots are older than it.
    fn stripe(&self, seq: SeqNo) -> usize {
        self.snapshots.partition_point(|&s| s < seq)
    }

    /// Examines input entries from where `inner` is until one is to be yielded. Every
    /// entry is counted exactly once, when its fate is decided.
    fn advance(&mut self) -> Result<(), BoxError> {
        loop {
            if !self.inner.valid() {
                if std::mem::take(&mut self.pending) {
                    self.stats.tombstones_dropped += 1;
                }
                return Ok(());
            }
            let key = ParsedInternalKey::parse(self.inner.key())?;
            let stripe = self.stripe(key.seq);
            let same_user_key = self.has_last && key.user_key == self.last_user_key.as_slice();
            if same_user_key && stripe == self.last_stripe {
                self.stats.input_entries += 1;
                self.stats.shadowed_dropped += 1;
                self.inner.next()?;
                continue;
            }
            // `key` leads its stripe.
            if std::mem::take(&mut self.pending) {
                if same_user_key && key.kind == ValueKind::Put {
                    // The tombstone hides this value from newer readers: yield it, and come
                    // back to this entry, not yet counted, on `next`.
                    self.stats.output_entries += 1;
                    self.current = Current::Pending;
                    return Ok(());
                }
                self.stats.tombstones_dropped += 1;
            }
            self.stats.input_entries += 1;
            if !same_user_key {
                self.last_user_key.clear();
                self.last_user_key.extend_from_slice(key.user_key);
                self.has_last = true;
            }
            self.last_stripe = stripe;
            match key.kind {
                ValueKind::Put => {}
                ValueKind::Delete if !self.bottommost => {}
                ValueKind::Delete if stripe == 0 => {
                    // Nothing older can be a leader: there is no older stripe.
                    self.stats.tombstones_dropped += 1;
                    self.inner.next()?;
                    continue;
                }
                ValueKind::Delete => {
                    self.pending_key.clear();
                    self.pending_key.extend_from_slice(self.inner.key());
                    self.pending = true;
                    self.inner.next()?;
                    continue;
                }
            }
            self.stats.output_entries += 1;
            self.current = Current::Inner;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::InternalKey;
    use crate::testing::{FailingIterator, InjectedError, VecIterator};

    fn e(k: &str, seq: u64, v: Option<&str>) -> (InternalKey, Vec<u8>) {
        let kind = if v.is_some() {
            ValueKind::Put
        } else {
            ValueKind::Delete
        };
        (
            InternalKey::new(k.as_bytes().to_vec(), seq, kind),
            v.unwrap_or_default().as_bytes().to_vec(),
        )
    }

    /// Runs a compaction and renders its output as `key@seq=value` / `key@seq=DEL`.
    fn run(
        input: Vec<(InternalKey, Vec<u8>)>,
        bottommost: bool,
        snapshots: &[SeqNo],
    ) -> (Vec<String>, CompactionStats) {
        let mut it = CompactionIterator::new(VecIterator::from_keys(input), bottommost, snapshots);
        it.seek_to_first().expect("seek");
        let mut out = Vec::new();
        while it.valid() {
            let k = ParsedInternalKey::parse(it.key()).expect("key");
            let v = match k.kind {
                ValueKind::Put => String::from_utf8_lossy(it.value()).into_owned(),
                ValueKind::Delete => "DEL".to_string(),
            };
            out.push(format!(
                "{}@{}={v}",
                String::from_utf8_lossy(k.user_key),
                k.seq
            ));
            it.next().expect("next");
        }
        let stats = it.stats();
        assert_eq!(
            stats.input_entries,
            stats.output_entries + stats.shadowed_dropped + stats.tombstones_dropped
        );
        (out, stats)
    }

    fn history() -> Vec<(InternalKey, Vec<u8>)> {
        vec![
            e("a", 2, Some("a2")),
            e("a", 4, Some("a4")),
            e("a", 8, None),
            e("b", 3, None),
            e("c", 1, Some("c1")),
            e("c", 6, None),
            e("c", 9, Some("c9")),
        ]
    }

    #[test]
    fn table_of_cases() {
        struct Case {
            name: &'static str,
            bottommost: bool,
            snapshots: &'static [SeqNo],
            want: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "no snapshots, not bottommost: newest per key, tombstones kept",
                bottommost: false,
                snapshots: &[],
                want: &["a@8=DEL", "b@3=DEL", "c@9=c9"],
            },
            Case {
                name: "no snapshots, bottommost: live keys only",
                bottommost: true,
                snapshots: &[],
                want: &["c@9=c9"],
            },
            Case {
                name: "snapshot 5 keeps what it sees; a@8 hides a4 from newer readers",
                bottommost: true,
                snapshots: &[5],
                want: &["a@8=DEL", "a@4=a4", "c@9=c9", "c@1=c1"],
            },
            Case {
                name: "snapshot 5, not bottommost: b's tombstone is kept",
                bottommost: false,
                snapshots: &[5],
                want: &["a@8=DEL", "a@4=a4", "b@3=DEL", "c@9=c9", "c@1=c1"],
            },
            Case {
                name: "snapshots 1 and 7: c@6 hides c1 from readers at 7",
                bottommost: true,
                snapshots: &[7, 1],
                want: &["a@8=DEL", "a@4=a4", "c@9=c9", "c@6=DEL", "c@1=c1"],
            },
            Case {
                name: "a snapshot above everything behaves like none",
                bottommost: true,
                snapshots: &[100],
                want: &["c@9=c9"],
            },
        ];
        for case in cases {
            let (got, _) = run(history(), case.bottommost, case.snapshots);
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn tombstone_over_tombstone_is_dropped_at_the_bottom() {
        // Snapshots 2 and 5: stripes {<=2}, {3..=5}, {>5}. k@7 (DEL) leads the newest stripe,
        // k@4 (DEL) the middle one, k@1 the oldest. k@4 hides k1 from readers at 5 and
        // later, so k@7 hides nothing that k@4 does not.
        let input = vec![e("k", 1, Some("k1")), e("k", 4, None), e("k", 7, None)];
        let (got, stats) = run(input, true, &[2, 5]);
        assert_eq!(got, ["k@4=DEL", "k@1=k1"]);
        assert_eq!(stats.tombstones_dropped, 1);
    }

    #[test]
    fn stats_count_each_drop() {
        let input = vec![
            e("a", 1, Some("a1")),
            e("a", 2, Some("a2")),
            e("a", 3, Some("a3")),
            e("b", 4, None),
            e("b", 1, Some("b1")),
        ];
        let (got, stats) = run(input, true, &[]);
        assert_eq!(got, ["a@3=a3"]);
        assert_eq!(
            stats,
            CompactionStats {
                input_entries: 5,
                output_entries: 1,
                shadowed_dropped: 3,
                tombstones_dropped: 1,
            }
        );
    }

    #[test]
    fn duplicate_internal_keys_collapse() {
        // The same write from two sources (a memtable and the SST it was flushed to).
        let input = vec![e("k", 5, Some("v")), e("k", 5, Some("v"))];
        let (got, stats) = run(input, false, &[5]);
        assert_eq!(got, ["k@5=v"]);
        assert_eq!(stats.shadowed_dropped, 1);
    }

    #[test]
    fn errors_propagate() {
        let input = VecIterator::from_keys(vec![
            e("a", 1, Some("a")),
            e("b", 1, None),
            e("c", 1, Some("c")),
        ]);
        // Entry 2 fails while the iterator looks past b's pending tombstone.
        let mut it = CompactionIterator::new(FailingIterator::new(input, 2), true, &[0]);
        it.seek_to_first().expect("seek");
        let err = it.next().expect_err("must fail");
        assert_eq!(
            err.downcast_ref::<InjectedError>(),
            Some(&InjectedError { index: 2 })
        );
        assert!(!it.valid());
    }
}
