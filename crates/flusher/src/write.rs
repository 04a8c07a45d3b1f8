//! The pure part of a flush: entries of a frozen memtable in, one SST out.
//!
//! [`MemtableSstWriter`] takes the entries a replayer streams (in any number of chunks),
//! checks them, and feeds them to an [`SstBuilder`] writing to any `std::io::Write`. It does
//! no network and no storage IO of its own, so it is tested with a `Vec<u8>` and read back
//! with [`sst::SstReader`].
//!
//! Why the flusher checks the stream itself instead of trusting the replayer: the SST it
//! writes becomes part of the table's manifest, and the checkpoint moves past `last_seq` on
//! commit. An entry out of internal-key order would make the file unreadable in the middle
//! (the builder refuses it, but only after earlier blocks went out), and an entry outside the
//! memtable's sequence range would either duplicate data of another flush or claim data the
//! checkpoint does not cover. Either is a broken stream, reported as [`WriteError`] before
//! the file is made visible.

use std::io::Write;

use lsm::SeqNo;
use lsm::ValueKind;
use lsm::key::encode_internal_key;
use sst::{KeyDisplay, SstBuilder, SstError, SstInfo, SstOptions};

/// One version of a key as the replayer streams it, borrowed from the wire message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub user_key: &'a [u8],
    /// Empty for a tombstone.
    pub value: &'a [u8],
    pub seq: SeqNo,
    pub tombstone: bool,
}

/// The inclusive range of sequence numbers a memtable may hold.
///
/// The flush spec says the memtable holds every entry with `after_seq < seq <= last_seq`
/// and that `first_seq` is its smallest sequence number: the range is
/// `max(first_seq, after_seq + 1) ..= last_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub lowest: SeqNo,
    pub highest: SeqNo,
}

impl SeqRange {
    /// The range of a memtable with the given spec numbers (see the type's doc).
    pub fn of_memtable(first_seq: SeqNo, after_seq: SeqNo, last_seq: SeqNo) -> Self {
        Self {
            lowest: first_seq.max(after_seq.saturating_add(1)),
            highest: last_seq,
        }
    }

    pub fn contains(&self, seq: SeqNo) -> bool {
        (self.lowest..=self.highest).contains(&seq)
    }
}

/// Why a memtable stream could not become an SST. Entry indexes count from 0 over the
/// whole stream, not per chunk.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The stream is not strictly increasing in internal-key order (user key ascending,
    /// sequence number descending).
    #[error(
        "entry {index} (key {key}, seq {seq}) does not sort after the previous entry \
         (key {previous_key}, seq {previous_seq}): the stream must be in internal-key order \
         (user key ascending, seq descending, no duplicates)"
    )]
    OutOfOrder {
        index: u64,
        key: KeyDisplay,
        seq: SeqNo,
        previous_key: KeyDisplay,
        previous_seq: SeqNo,
    },
    /// An entry whose sequence number the memtable cannot hold.
    #[error(
        "entry {index} (key {key}) has seq {seq}, outside the memtable's range {lowest}..={highest}"
    )]
    SeqOutOfRange {
        index: u64,
        key: KeyDisplay,
        seq: SeqNo,
        lowest: SeqNo,
        highest: SeqNo,
    },
    /// The stream ended without a single entry: there is nothing to flush, and an empty
    /// SST would only add a useless file to L0.
    #[error("the memtable stream holds no entries: nothing to flush")]
    Empty,
    /// The SST builder failed (an IO error of the output, an entry too large).
    #[error(transparent)]
    Sst(#[from] SstError),
}

impl WriteError {
    /// Whether the replayer's stream is at fault (as opposed to the output).
    pub fn is_bad_stream(&self) -> bool {
        !matches!(self, Self::Sst(_))
    }
}

/// Builds one SST from the entries of a memtable, checking them on the way.
pub struct MemtableSstWriter<W: Write> {
    builder: SstBuilder<W>,
    range: SeqRange,
    /// User key and seq of the last accepted entry (meaningless while `entries == 0`).
    previous_key: Vec<u8>,
    previous_seq: SeqNo,
    /// Reused buffer for the encoded internal key.
    key_buf: Vec<u8>,
    entries: u64,
}

impl<W: Write> MemtableSstWriter<W> {
    /// A writer of the file `file_name` (used in errors) to `out`.
    pub fn new(
        file_name: impl Into<String>,
        out: W,
        options: SstOptions,
        range: SeqRange,
    ) -> Result<Self, WriteError> {
        Ok(Self {
            builder: SstBuilder::new(file_name, out, options)?,
            range,
            previous_key: Vec::new(),
            previous_seq: 0,
            key_buf: Vec::new(),
            entries: 0,
        })
    }

    /// Records the creation time (milliseconds since the Unix epoch, from the caller's
    /// clock) in the file's properties.
    pub fn set_creation_time_ms(&mut self, ms: u64) {
        self.builder.set_creation_time_ms(ms);
    }

    /// Checks and adds one entry.
    pub fn add(&mut self, entry: Entry<'_>) -> Result<(), WriteError> {
        self.check(&entry)?;
        let kind = if entry.tombstone {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        // A tombstone's value is dropped: the format stores tombstones with empty values.
        let value = if entry.tombstone {
            &[][..]
        } else {
            entry.value
        };
        self.key_buf.clear();
        encode_internal_key(entry.user_key, entry.seq, kind, &mut self.key_buf);
        self.builder.add(&self.key_buf, value)?;
        self.previous_key.clear();
        self.previous_key.extend_from_slice(entry.user_key);
        self.previous_seq = entry.seq;
        self.entries += 1;
        Ok(())
    }

    /// Checks and adds a chunk of entries, stopping at the first bad one.
    pub fn add_all<'a>(
        &mut self,
        entries: impl IntoIterator<Item = Entry<'a>>,
    ) -> Result<(), WriteError> {
        entries.into_iter().try_for_each(|e| self.add(e))
    }

    /// The range check first (it needs no state), then the order against the previous
    /// entry. The range also keeps seqs within 56 bits, which the key encoding requires.
    fn check(&self, entry: &Entry<'_>) -> Result<(), WriteError> {
        if !self.range.contains(entry.seq) {
            return Err(WriteError::SeqOutOfRange {
                index: self.entries,
                key: KeyDisplay(entry.user_key.to_vec()),
                seq: entry.seq,
                lowest: self.range.lowest,
                highest: self.range.highest,
            });
        }
        if self.entries > 0 && !self.sorts_after_previous(entry) {
            return Err(WriteError::OutOfOrder {
                index: self.entries,
                key: KeyDisplay(entry.user_key.to_vec()),
                seq: entry.seq,
                previous_key: KeyDisplay(self.previous_key.clone()),
                previous_seq: self.previous_seq,
            });
        }
        Ok(())
    }

    /// Internal-key order, strictly: a larger user key, or the same user key at a smaller
    /// seq (two versions of one key never share a seq).
    fn sorts_after_previous(&self, entry: &Entry<'_>) -> bool {
        match entry.user_key.cmp(&self.previous_key) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => entry.seq < self.previous_seq,
            std::cmp::Ordering::Less => false,
        }
    }

    /// Entries accepted so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes handed to the output so far.
    pub fn bytes_written(&self) -> u64 {
        self.builder.bytes_written()
    }

    /// Writes the rest of the file and hands back what it holds and the output. An empty
    /// stream is [`WriteError::Empty`]: nothing is finished, the caller drops the output.
    pub fn finish(self) -> Result<(SstInfo, W), WriteError> {
        if self.entries == 0 {
            return Err(WriteError::Empty);
        }
        Ok(self.builder.finish_into_inner()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::InternalIterator;
    use lsm::ParsedInternalKey;
    use sst::{Bytes, SstReader};

    /// (user key, seq, value or None for a tombstone)
    type Version = (&'static str, SeqNo, Option<&'static str>);

    fn entry(v: &Version) -> Entry<'static> {
        Entry {
            user_key: v.0.as_bytes(),
            value: v.2.map_or(&[][..], str::as_bytes),
            seq: v.1,
            tombstone: v.2.is_none(),
        }
    }

    fn writer(range: SeqRange) -> MemtableSstWriter<Vec<u8>> {
        let options = SstOptions {
            // Small blocks, so that a few entries span several of them.
            block_size: 64,
            ..SstOptions::default()
        };
        MemtableSstWriter::new("test.sst", Vec::new(), options, range).expect("valid options")
    }

    fn range(lowest: SeqNo, highest: SeqNo) -> SeqRange {
        SeqRange { lowest, highest }
    }

    /// Every entry of the file, in order, as (user key, seq, value or None).
    fn read_back(bytes: Vec<u8>) -> Vec<(Vec<u8>, SeqNo, Option<Vec<u8>>)> {
        let reader = SstReader::open(Bytes::from(bytes), "test.sst").expect("readable sst");
        let mut it = reader.iter();
        it.seek_to_first().expect("seek");
        let mut out = Vec::new();
        while it.valid() {
            let k = ParsedInternalKey::parse(it.key()).expect("internal key");
            let value = (k.kind == ValueKind::Put).then(|| it.value().to_vec());
            out.push((k.user_key.to_vec(), k.seq, value));
            it.next().expect("next");
        }
        out
    }

    #[test]
    fn chunks_become_one_sst_with_every_version_and_tombstone() {
        let versions: Vec<Version> = vec![
            ("apple", 17, Some("red")),
            ("apple", 12, None),
            ("apple", 11, Some("green")),
            ("banana", 14, None),
            ("cherry", 20, Some("dark")),
            ("cherry", 13, Some("")),
            ("date", 15, Some("sweet")),
            ("elderberry", 11, None),
            (
                "fig",
                19,
                Some("purple fig with a longer value than the others"),
            ),
        ];
        let mut w = writer(range(11, 20));
        w.set_creation_time_ms(1_700_000_000_000);
        // Chunks of uneven sizes, as a replayer may send them.
        for chunk in versions.chunks(4) {
            w.add_all(chunk.iter().map(entry)).expect("valid chunk");
        }
        assert_eq!(w.entries(), 9);
        let (info, bytes) = w.finish().expect("finish");

        let expected: Vec<_> = versions
            .iter()
            .map(|v| {
                (
                    v.0.as_bytes().to_vec(),
                    v.1,
                    v.2.map(|s| s.as_bytes().to_vec()),
                )
            })
            .collect();
        assert_eq!(info.file_size, bytes.len() as u64);
        assert_eq!(read_back(bytes), expected);
        assert_eq!(info.entry_count, 9);
        assert_eq!(info.tombstone_count, 3);
        assert_eq!(&info.smallest_user_key[..], b"apple");
        assert_eq!(&info.largest_user_key[..], b"fig");
        assert_eq!((info.min_seq, info.max_seq), (11, 20));
        assert_eq!(info.properties.creation_time_ms, 1_700_000_000_000);
        assert_eq!(info.properties.user_key_count, 6);
    }

    #[test]
    fn a_tombstone_value_is_not_stored() {
        let mut w = writer(range(1, 5));
        w.add(Entry {
            user_key: b"k",
            value: b"leftover",
            seq: 3,
            tombstone: true,
        })
        .expect("add");
        let (info, bytes) = w.finish().expect("finish");
        assert_eq!(info.tombstone_count, 1);
        assert_eq!(read_back(bytes), vec![(b"k".to_vec(), 3, None)]);
    }

    #[test]
    fn out_of_order_user_keys_are_refused_naming_both_entries() {
        let mut w = writer(range(1, 100));
        w.add_all([("b", 5, Some("x")), ("c", 6, Some("y"))].iter().map(entry))
            .expect("sorted so far");
        let err = w.add(entry(&("a", 7, Some("z")))).expect_err("a < c");
        assert!(
            matches!(
                err,
                WriteError::OutOfOrder {
                    index: 2,
                    seq: 7,
                    previous_seq: 6,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_bad_stream());
        let msg = err.to_string();
        assert!(
            msg.contains("entry 2") && msg.contains("\"a\"") && msg.contains("\"c\""),
            "{msg}"
        );
    }

    #[test]
    fn versions_of_one_key_must_have_decreasing_seqs() {
        for second_seq in [9, 10] {
            let mut w = writer(range(1, 100));
            w.add(entry(&("k", 9, Some("old")))).expect("first");
            let err = w
                .add(entry(&("k", second_seq, Some("new"))))
                .expect_err("same key, seq not smaller");
            assert!(
                matches!(err, WriteError::OutOfOrder { index: 1, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn order_is_checked_across_chunks() {
        let mut w = writer(range(1, 100));
        w.add_all([entry(&("m", 3, Some("v")))]).expect("chunk 1");
        let err = w
            .add_all([entry(&("n", 4, Some("v"))), entry(&("l", 5, Some("v")))])
            .expect_err("l < n");
        assert!(
            matches!(err, WriteError::OutOfOrder { index: 2, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn seqs_outside_the_memtable_range_are_refused() {
        // The memtable holds 11..=20 (after_seq 10).
        let r = SeqRange::of_memtable(11, 10, 20);
        assert_eq!(r, range(11, 20));
        for bad_seq in [10, 21, 0, u64::MAX] {
            let mut w = writer(r);
            let err = w
                .add(entry(&("k", bad_seq, Some("v"))))
                .expect_err("outside");
            assert!(
                matches!(err, WriteError::SeqOutOfRange { index: 0, seq, lowest: 11, highest: 20, .. } if seq == bad_seq),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("seq {bad_seq}")) && msg.contains("11..=20"),
                "{msg}"
            );
        }
    }

    #[test]
    fn the_range_honours_after_seq_and_first_seq() {
        // first_seq unknown (0): after_seq bounds the range.
        assert_eq!(SeqRange::of_memtable(0, 7, 9), range(8, 9));
        // first_seq above after_seq + 1: first_seq bounds it.
        assert_eq!(SeqRange::of_memtable(5, 2, 9), range(5, 9));
        assert_eq!(SeqRange::of_memtable(0, u64::MAX, 9), range(u64::MAX, 9));
        assert!(!range(u64::MAX, 9).contains(9));
    }

    #[test]
    fn an_empty_stream_is_an_error_not_an_empty_sst() {
        let w = writer(range(1, 10));
        let err = w.finish().expect_err("empty");
        assert!(matches!(err, WriteError::Empty), "{err:?}");
        assert!(err.to_string().contains("nothing to flush"));
    }

    #[test]
    fn output_failures_are_sst_errors() {
        #[derive(Debug)]
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk gone"))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut w =
            MemtableSstWriter::new("broken.sst", Broken, SstOptions::default(), range(1, 9))
                .expect("valid options");
        w.add(entry(&("k", 1, Some("v"))))
            .expect("buffered in the open block");
        let err = w.finish().expect_err("write fails");
        assert!(
            matches!(err, WriteError::Sst(_)) && !err.is_bad_stream(),
            "{err:?}"
        );
        assert!(err.to_string().contains("broken.sst"), "{err}");
    }
}
