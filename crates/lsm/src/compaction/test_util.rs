//! Tiny fixtures for the picker tests: files named by id and key range, sized in MiB, and
//! versions built from `(level, files)` lists.

use std::collections::BTreeSet;

use bytes::Bytes;

use super::{PickerOutput, Trigger};
use crate::manifest::{FileMeta, Version, VersionEdit};

pub const MIB: u64 = 1 << 20;

/// A 1 MiB file over `[smallest, largest]` with 10 000 entries, no tombstones, and sequence
/// numbers equal to its id (so a higher id is a newer L0 file).
pub fn file(id: u64, smallest: &str, largest: &str) -> FileMeta {
    FileMeta {
        id,
        size: MIB,
        smallest: Bytes::copy_from_slice(smallest.as_bytes()),
        largest: Bytes::copy_from_slice(largest.as_bytes()),
        smallest_seq: id,
        largest_seq: id,
        entries: 10_000,
        tombstones: 0,
    }
}

/// Builder-style tweaks of a fixture file.
pub trait FileExt {
    fn mib(self, mib: u64) -> Self;
    fn bytes(self, bytes: u64) -> Self;
    /// Sets `entries` and `tombstones`.
    fn tombs(self, entries: u64, tombstones: u64) -> Self;
}

impl FileExt for FileMeta {
    fn mib(self, mib: u64) -> Self {
        self.bytes(mib * MIB)
    }

    fn bytes(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    fn tombs(mut self, entries: u64, tombstones: u64) -> Self {
        self.entries = entries;
        self.tombstones = tombstones;
        self
    }
}

/// A 7-level version holding `files` (panics on an invalid layout: fixtures must be valid).
pub fn version(files: Vec<(u32, Vec<FileMeta>)>) -> Version {
    version_with(7, files)
}

pub fn version_with(levels: usize, files: Vec<(u32, Vec<FileMeta>)>) -> Version {
    let edit = VersionEdit {
        removed: vec![],
        added: files
            .into_iter()
            .flat_map(|(l, fs)| fs.into_iter().map(move |f| (l, f)))
            .collect(),
    };
    Version::new(levels)
        .apply(&edit)
        .expect("fixture version is valid")
}

pub fn ids(ids: &[u64]) -> BTreeSet<u64> {
    ids.iter().copied().collect()
}

/// The parts of a plan a test case pins down; `reason` must be a substring of the plan's.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub trigger: Trigger,
    pub inputs: Vec<(u32, Vec<u64>)>,
    pub output: u32,
    pub trivial: bool,
    pub bottommost: bool,
    pub reason: &'static str,
}

pub fn want(
    trigger: Trigger,
    inputs: &[(u32, &[u64])],
    output: u32,
    trivial: bool,
    bottommost: bool,
    reason: &'static str,
) -> Want {
    Want {
        trigger,
        inputs: inputs.iter().map(|(l, ids)| (*l, ids.to_vec())).collect(),
        output,
        trivial,
        bottommost,
        reason,
    }
}

/// Checks a picker's output against a case: the plans (in order), their reasons, that no
/// input is locked, the estimates, and that every `skipped` fragment appears in some line.
pub fn check(
    name: &str,
    out: &PickerOutput,
    locked: &BTreeSet<u64>,
    want: &[Want],
    skipped: &[&str],
) {
    let got: Vec<Want> = out
        .plans
        .iter()
        .map(|plan| Want {
            trigger: plan.trigger,
            inputs: plan
                .inputs
                .iter()
                .map(|(l, fs)| (*l, fs.iter().map(|f| f.id).collect()))
                .collect(),
            output: plan.output_level,
            trivial: plan.trivial_move,
            bottommost: plan.bottommost,
            reason: "",
        })
        .collect();
    let expected: Vec<Want> = want
        .iter()
        .map(|w| Want {
            reason: "",
            ..w.clone()
        })
        .collect();
    assert_eq!(got, expected, "{name}: plans; skipped: {:#?}", out.skipped);
    for (plan, w) in out.plans.iter().zip(want) {
        assert!(
            plan.reason.contains(w.reason),
            "{name}: reason {:?} lacks {:?}",
            plan.reason,
            w.reason
        );
        assert!(
            plan.input_ids().iter().all(|id| !locked.contains(id)),
            "{name}"
        );
        if plan.trivial_move {
            assert_eq!(plan.estimated_read_bytes, 0, "{name}");
            assert_eq!(plan.estimated_write_bytes, 0, "{name}");
        } else {
            assert_eq!(plan.estimated_read_bytes, plan.input_bytes(), "{name}");
        }
    }
    for s in skipped {
        assert!(
            out.skipped.iter().any(|line| line.contains(s)),
            "{name}: no skipped line contains {s:?}: {:#?}",
            out.skipped
        );
    }
}
