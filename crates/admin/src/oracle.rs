//! The load oracle: what `storage-admin load --oracle FILE` records, and its reader.
//!
//! One JSON line per **acknowledged** write, appended only after the WAL append returned
//! `Ok` (a write that failed, or was still in flight when the process died, is not in it):
//!
//! ```text
//! {"table":"orders","seq":42,"key":"key-000000000017","value":"w2a.xk3…"}
//! {"table":"orders","seq":43,"key":"key-000000000003","value":null}
//! ```
//!
//! `value: null` is a delete. A crash test kills the load generator at any moment, so the
//! writer appends whole lines only and the reader ([`read_oracle`]) accepts a file whose
//! last line was cut short (it is skipped); a malformed line anywhere else is an error.
//!
//! What a checker may conclude: every line is durable in the table's WAL with that sequence
//! number. The table may also hold writes the oracle lacks (acknowledged just before a
//! kill, before their line was written), so for a key it may see a version with a *higher*
//! sequence number than the oracle's newest, never a lower one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One acknowledged write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OracleEntry {
    pub table: String,
    pub seq: u64,
    pub key: String,
    /// `None`: a delete.
    pub value: Option<String>,
}

impl OracleEntry {
    /// The entry as one line, newline included.
    pub fn to_line(&self) -> String {
        // Serializing a struct of strings and integers cannot fail.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

/// Why an oracle file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum OracleError {
    #[error("oracle {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("oracle {path} line {line}: {reason}")]
    Malformed {
        path: String,
        line: usize,
        reason: String,
    },
}

/// Reads an oracle file. A last line without its newline that does not parse is the write
/// a kill interrupted, and is skipped; any other line that does not parse is an error
/// naming the line.
pub fn read_oracle(path: impl AsRef<Path>) -> Result<Vec<OracleEntry>, OracleError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| OracleError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_oracle(&bytes).map_err(|(line, reason)| OracleError::Malformed {
        path: path.display().to_string(),
        line,
        reason,
    })
}

/// [`read_oracle`] over bytes; errors are (line number from 1, reason).
pub fn parse_oracle(bytes: &[u8]) -> Result<Vec<OracleEntry>, (usize, String)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, complete) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let line = &rest[..i];
                rest = &rest[i + 1..];
                (line, true)
            }
            None => {
                let line = rest;
                rest = &[];
                (line, false)
            }
        };
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<OracleEntry>(line) {
            Ok(e) => out.push(e),
            // The torn last line of a killed writer.
            Err(_) if !complete => break,
            Err(e) => return Err((line_no, e.to_string())),
        }
    }
    Ok(out)
}

/// The newest entry of every (table, key) by sequence number: what a read should return
/// (a `None` value: the key must read as absent), unless a later unrecorded write exists.
pub fn latest(entries: &[OracleEntry]) -> BTreeMap<(String, String), OracleEntry> {
    let mut map: BTreeMap<(String, String), OracleEntry> = BTreeMap::new();
    for e in entries {
        let slot = map.entry((e.table.clone(), e.key.clone()));
        match slot {
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if e.seq > o.get().seq {
                    o.insert(e.clone());
                }
            }
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(e.clone());
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(table: &str, seq: u64, key: &str, value: Option<&str>) -> OracleEntry {
        OracleEntry {
            table: table.into(),
            seq,
            key: key.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn lines_have_the_documented_format() {
        assert_eq!(
            entry("orders", 42, "key-000000000017", Some("v\"1")).to_line(),
            "{\"table\":\"orders\",\"seq\":42,\"key\":\"key-000000000017\",\"value\":\"v\\\"1\"}\n"
        );
        assert_eq!(
            entry("t", 43, "k", None).to_line(),
            "{\"table\":\"t\",\"seq\":43,\"key\":\"k\",\"value\":null}\n"
        );
    }

    #[test]
    fn round_trip_through_a_file() {
        let entries = vec![
            entry("a", 1, "key-000000000001", Some("x")),
            entry("b", 7, "key-000000000002", None),
            entry("a", 2, "key-000000000001", Some("")),
        ];
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("oracle.jsonl");
        let text: String = entries.iter().map(OracleEntry::to_line).collect();
        std::fs::write(&path, text).expect("write");
        assert_eq!(read_oracle(&path).expect("reads"), entries);
    }

    #[test]
    fn a_torn_last_line_is_skipped_at_every_cut() {
        let entries = [entry("a", 1, "k1", Some("v1")), entry("a", 2, "k2", None)];
        let text: String = entries.iter().map(OracleEntry::to_line).collect();
        let first_len = entries[0].to_line().len();
        for cut in 0..=text.len() {
            let got = parse_oracle(&text.as_bytes()[..cut]).expect("a cut tail is tolerated");
            // A line whose newline alone is missing is whole.
            let want = if cut >= text.len() - 1 {
                2
            } else if cut >= first_len - 1 {
                1
            } else {
                0
            };
            assert_eq!(got.len(), want, "cut at {cut}");
            assert_eq!(got[..], entries[..want]);
        }
    }

    #[test]
    fn a_malformed_line_before_the_end_is_an_error_naming_it() {
        let text = format!(
            "{}garbage\n{}",
            entry("a", 1, "k", Some("v")).to_line(),
            entry("a", 2, "k", None).to_line()
        );
        let err = parse_oracle(text.as_bytes()).expect_err("malformed");
        assert_eq!(err.0, 2);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("o.jsonl");
        std::fs::write(&path, text).expect("write");
        let err = read_oracle(&path).expect_err("malformed");
        assert!(err.to_string().contains("line 2"), "{err}");
        let missing = read_oracle(dir.path().join("missing")).expect_err("no file");
        assert!(matches!(missing, OracleError::Io { .. }), "{missing}");
    }

    #[test]
    fn latest_keeps_the_highest_seq_per_table_and_key() {
        let entries = vec![
            entry("a", 5, "k", Some("new")),
            entry("a", 3, "k", Some("old")),
            entry("b", 1, "k", Some("other table")),
            entry("a", 6, "j", None),
        ];
        let l = latest(&entries);
        assert_eq!(l.len(), 3);
        assert_eq!(l[&("a".into(), "k".into())].value.as_deref(), Some("new"));
        assert_eq!(l[&("a".into(), "j".into())].value, None);
        assert_eq!(l[&("b".into(), "k".into())].seq, 1);
    }
}
