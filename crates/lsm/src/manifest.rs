//! The manifest model: a table's levels of SST files as one immutable [`Version`], and the
//! [`VersionEdit`]s that move it forward (a flush adds L0 files; a compaction removes its
//! inputs and adds its outputs; a trivial move re-levels files without rewriting them).
//!
//! Invariants every version keeps (checked by [`Version::check`]): a file appears at most
//! once; L0 is ordered newest first (by largest sequence number); every level ≥ 1 is sorted
//! by key and its files do not overlap. Pickers read versions; only the scheduler applies
//! edits, and persists the result before anyone sees it.

use std::collections::BTreeSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::key::SeqNo;

/// Metadata of one immutable SST file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// Catalog-allocated id; names the object `tables/<table>/sst/<id>.sst`.
    pub id: u64,
    /// Object size in bytes.
    pub size: u64,
    /// Smallest and largest user key in the file.
    #[serde(with = "bytes_hex")]
    pub smallest: Bytes,
    #[serde(with = "bytes_hex")]
    pub largest: Bytes,
    /// Sequence-number range of its entries.
    pub smallest_seq: SeqNo,
    pub largest_seq: SeqNo,
    /// Entries (puts and tombstones) and tombstones.
    pub entries: u64,
    pub tombstones: u64,
}

impl FileMeta {
    /// Whether the file's key range intersects `[start, end]` (inclusive user keys).
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        self.smallest.as_ref() <= end && self.largest.as_ref() >= start
    }

    /// Fraction of entries that are tombstones.
    pub fn tombstone_ratio(&self) -> f64 {
        if self.entries == 0 {
            0.0
        } else {
            self.tombstones as f64 / self.entries as f64
        }
    }
}

/// A change to a version, applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEdit {
    /// (level, file id) to remove.
    pub removed: Vec<(u32, u64)>,
    /// (level, file) to add.
    pub added: Vec<(u32, FileMeta)>,
}

/// Why an edit cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("file {file_id} is not in level {level}")]
    MissingFile { level: u32, file_id: u64 },
    #[error("file {file_id} is already in the version")]
    DuplicateFile { file_id: u64 },
    #[error("level {level} does not exist (the table has {levels} levels)")]
    NoSuchLevel { level: u32, levels: usize },
    #[error("level {level} would overlap: files {a} and {b}")]
    Overlap { level: u32, a: u64, b: u64 },
}

/// One version of a table's LSM tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// `levels[0]` is L0 (newest first); deeper levels sorted by smallest key.
    pub levels: Vec<Vec<FileMeta>>,
}

impl Version {
    /// An empty version with `num_levels` levels (L0 included).
    pub fn new(num_levels: usize) -> Self {
        Self {
            levels: vec![Vec::new(); num_levels.max(2)],
        }
    }

    /// Total bytes in a level.
    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels
            .get(level)
            .map_or(0, |l| l.iter().map(|f| f.size).sum())
    }

    /// Every file id in the version.
    pub fn file_ids(&self) -> BTreeSet<u64> {
        self.levels.iter().flatten().map(|f| f.id).collect()
    }

    /// Finds a file by id: (level, file).
    pub fn find(&self, id: u64) -> Option<(u32, &FileMeta)> {
        self.levels
            .iter()
            .enumerate()
            .find_map(|(l, files)| files.iter().find(|f| f.id == id).map(|f| (l as u32, f)))
    }

    /// Files of `level` overlapping `[start, end]`.
    pub fn overlapping(&self, level: usize, start: &[u8], end: &[u8]) -> Vec<&FileMeta> {
        self.levels
            .get(level)
            .map(|files| files.iter().filter(|f| f.overlaps(start, end)).collect())
            .unwrap_or_default()
    }

    /// Applies an edit, returning the new version; the old one is untouched.
    pub fn apply(&self, edit: &VersionEdit) -> Result<Version, ManifestError> {
        let mut next = self.clone();
        let levels = next.levels.len();
        for (level, id) in &edit.removed {
            let files = next
                .levels
                .get_mut(*level as usize)
                .ok_or(ManifestError::NoSuchLevel {
                    level: *level,
                    levels,
                })?;
            let pos = files
                .iter()
                .position(|f| f.id == *id)
                .ok_or(ManifestError::MissingFile {
                    level: *level,
                    file_id: *id,
                })?;
            files.remove(pos);
        }
        let mut ids = next.file_ids();
        for (level, file) in &edit.added {
            if !ids.insert(file.id) {
                return Err(ManifestError::DuplicateFile { file_id: file.id });
            }
            next.levels
                .get_mut(*level as usize)
                .ok_or(ManifestError::NoSuchLevel {
                    level: *level,
                    levels,
                })?
                .push(file.clone());
        }
        next.normalize();
        next.check()?;
        Ok(next)
    }

    /// Orders L0 newest first and deeper levels by key.
    fn normalize(&mut self) {
        if let Some(l0) = self.levels.first_mut() {
            l0.sort_by(|a, b| b.largest_seq.cmp(&a.largest_seq).then(b.id.cmp(&a.id)));
        }
        for files in self.levels.iter_mut().skip(1) {
            files.sort_by(|a, b| a.smallest.cmp(&b.smallest));
        }
    }

    /// Checks that levels ≥ 1 are sorted and non-overlapping.
    pub fn check(&self) -> Result<(), ManifestError> {
        for (level, files) in self.levels.iter().enumerate().skip(1) {
            for w in files.windows(2) {
                if w[0].largest >= w[1].smallest {
                    return Err(ManifestError::Overlap {
                        level: level as u32,
                        a: w[0].id,
                        b: w[1].id,
                    });
                }
            }
        }
        Ok(())
    }
}

mod bytes_hex {
    //! User keys are arbitrary bytes: stored as hex in the catalog's JSON records.
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(b.len() * 2);
        for byte in b.iter() {
            out.push_str(&format!("{byte:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex key"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("invalid hex key"))
            })
            .collect::<Result<Vec<u8>, _>>()
            .map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn file(id: u64, a: &str, b: &str, seq: SeqNo) -> FileMeta {
        FileMeta {
            id,
            size: 100,
            smallest: Bytes::copy_from_slice(a.as_bytes()),
            largest: Bytes::copy_from_slice(b.as_bytes()),
            smallest_seq: seq,
            largest_seq: seq,
            entries: 10,
            tombstones: 0,
        }
    }

    #[test]
    fn flush_then_compaction_edits() {
        let v = Version::new(3);
        let v = v
            .apply(&VersionEdit {
                removed: vec![],
                added: vec![(0, file(1, "a", "m", 5)), (0, file(2, "c", "z", 9))],
            })
            .expect("flush");
        assert_eq!(v.levels[0].iter().map(|f| f.id).collect::<Vec<_>>(), [2, 1]);
        let v = v
            .apply(&VersionEdit {
                removed: vec![(0, 1), (0, 2)],
                added: vec![(1, file(4, "n", "z", 9)), (1, file(3, "a", "m", 9))],
            })
            .expect("compaction");
        assert!(v.levels[0].is_empty());
        assert_eq!(v.levels[1].iter().map(|f| f.id).collect::<Vec<_>>(), [3, 4]);
    }

    #[test]
    fn bad_edits_are_refused_and_change_nothing() {
        let v = Version::new(3)
            .apply(&VersionEdit {
                removed: vec![],
                added: vec![(1, file(1, "a", "m", 1))],
            })
            .expect("add");
        let missing = VersionEdit {
            removed: vec![(1, 9)],
            added: vec![],
        };
        assert_eq!(
            v.apply(&missing),
            Err(ManifestError::MissingFile {
                level: 1,
                file_id: 9
            })
        );
        let overlap = VersionEdit {
            removed: vec![],
            added: vec![(1, file(2, "k", "p", 2))],
        };
        assert!(matches!(
            v.apply(&overlap),
            Err(ManifestError::Overlap { .. })
        ));
        let dup = VersionEdit {
            removed: vec![],
            added: vec![(0, file(1, "a", "b", 3))],
        };
        assert_eq!(
            v.apply(&dup),
            Err(ManifestError::DuplicateFile { file_id: 1 })
        );
        assert_eq!(v.levels[1].len(), 1);
    }

    #[test]
    fn file_meta_round_trips_through_json() {
        let f = file(7, "\u{0}\u{ff}", "zz", 3);
        let json = serde_json::to_string(&f).expect("encode");
        assert_eq!(serde_json::from_str::<FileMeta>(&json).expect("decode"), f);
    }
}
