//! The object layout, in one place.
//!
//! ```text
//! tables/<table>/wal/<first_seq, 20 digits>.wal   WAL segments (immutable, one per group commit)
//! tables/<table>/sst/<file_id, 20 digits>.sst     SSTs (immutable, ids allocated by the catalog)
//! ```
//!
//! Numbers are zero-padded to 20 digits (the width of `u64::MAX`) so that the lexicographic
//! order of a listing is the numeric order. Every name built here can be parsed back; parse
//! functions are strict (exactly 20 digits, the right suffix) so that stray objects (a
//! half-written staging file, an operator's copy) are never mistaken for data.

use object_store::path::Path;

use crate::StorageError;

/// The longest table name.
pub const MAX_TABLE_NAME_LEN: usize = 128;

/// Width of the zero-padded numbers in object names.
const NUMBER_WIDTH: usize = 20;

/// Extension of WAL segment objects.
pub const WAL_EXTENSION: &str = "wal";
/// Extension of SST objects.
pub const SST_EXTENSION: &str = "sst";

/// A validated table name: 1 to 128 characters from `[A-Za-z0-9_-]`, so it is safe as one
/// path segment on every backend and never needs escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(String);

impl TableName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, StorageError> {
        let name = name.into();
        validate_table_name(&name)?;
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TableName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TableName {
    type Error = StorageError;
    fn try_from(name: &str) -> Result<Self, Self::Error> {
        Self::new(name)
    }
}

/// Checks that `name` is a valid table name.
pub fn validate_table_name(name: &str) -> Result<(), StorageError> {
    let invalid = |reason: String| StorageError::InvalidTableName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty".into()));
    }
    if name.len() > MAX_TABLE_NAME_LEN {
        return Err(invalid(format!(
            "{} bytes, at most {MAX_TABLE_NAME_LEN} allowed",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(invalid(format!(
            "character {c:?} is not allowed (only A-Z, a-z, 0-9, '_' and '-')"
        )));
    }
    Ok(())
}

/// `tables/`: the parent of every table.
pub fn tables_root() -> Path {
    Path::from("tables")
}

/// `tables/<table>/`: everything a table owns.
pub fn table_dir(table: &TableName) -> Path {
    tables_root().child(table.as_str())
}

/// `tables/<table>/wal/`: the table's WAL segments.
pub fn wal_dir(table: &TableName) -> Path {
    table_dir(table).child("wal")
}

/// `tables/<table>/sst/`: the table's SSTs.
pub fn sst_dir(table: &TableName) -> Path {
    table_dir(table).child("sst")
}

/// `<first_seq:020>.wal`
pub fn wal_segment_name(first_seq: u64) -> String {
    format!("{first_seq:0NUMBER_WIDTH$}.{WAL_EXTENSION}")
}

/// `tables/<table>/wal/<first_seq:020>.wal`
pub fn wal_segment(table: &TableName, first_seq: u64) -> Path {
    wal_dir(table).child(wal_segment_name(first_seq))
}

/// `<file_id:020>.sst`
pub fn sst_file_name(file_id: u64) -> String {
    format!("{file_id:0NUMBER_WIDTH$}.{SST_EXTENSION}")
}

/// `tables/<table>/sst/<file_id:020>.sst`
pub fn sst_file(table: &TableName, file_id: u64) -> Path {
    sst_dir(table).child(sst_file_name(file_id))
}

/// The first sequence number from a segment file name (`<20 digits>.wal`), or `None` if the
/// name is not a WAL segment's.
pub fn parse_wal_segment_name(file_name: &str) -> Option<u64> {
    parse_numbered(file_name, WAL_EXTENSION)
}

/// The file id from an SST file name (`<20 digits>.sst`), or `None`.
pub fn parse_sst_file_name(file_name: &str) -> Option<u64> {
    parse_numbered(file_name, SST_EXTENSION)
}

/// The first sequence number of the segment at `path` (its last component), or `None`.
pub fn parse_wal_segment_path(path: &Path) -> Option<u64> {
    path.filename().and_then(parse_wal_segment_name)
}

/// The file id of the SST at `path`, or `None`.
pub fn parse_sst_path(path: &Path) -> Option<u64> {
    path.filename().and_then(parse_sst_file_name)
}

fn parse_numbered(file_name: &str, extension: &str) -> Option<u64> {
    let (digits, ext) = file_name.split_once('.')?;
    if ext != extension || digits.len() != NUMBER_WIDTH {
        return None;
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName::new(name).expect("valid table name")
    }

    #[test]
    fn layout_matches_the_design() {
        assert_eq!(
            wal_segment(&t("users"), 42).as_ref(),
            "tables/users/wal/00000000000000000042.wal"
        );
        assert_eq!(
            sst_file(&t("a-b_C9"), u64::MAX).as_ref(),
            "tables/a-b_C9/sst/18446744073709551615.sst"
        );
        assert_eq!(wal_dir(&t("x")).as_ref(), "tables/x/wal");
        assert_eq!(sst_dir(&t("x")).as_ref(), "tables/x/sst");
    }

    #[test]
    fn names_parse_back() {
        for n in [0, 1, 42, 10_u64.pow(19), u64::MAX] {
            assert_eq!(parse_wal_segment_name(&wal_segment_name(n)), Some(n));
            assert_eq!(parse_sst_file_name(&sst_file_name(n)), Some(n));
            assert_eq!(parse_wal_segment_path(&wal_segment(&t("t"), n)), Some(n));
            assert_eq!(parse_sst_path(&sst_file(&t("t"), n)), Some(n));
        }
    }

    #[test]
    fn parse_is_strict() {
        for bad in [
            "42.wal",
            "00000000000000000042.sst",
            "00000000000000000042.wal.tmp",
            "0000000000000000004a.wal",
            "+0000000000000000042.wal",
            "99999999999999999999.wal", // overflows u64
            "000000000000000000042.wal",
            "00000000000000000042",
            "",
        ] {
            assert_eq!(parse_wal_segment_name(bad), None, "{bad}");
        }
        assert_eq!(parse_sst_file_name("00000000000000000042.wal"), None);
    }

    #[test]
    fn table_names_are_validated() {
        assert!(TableName::new("ok_name-1").is_ok());
        assert!(TableName::new("a".repeat(128)).is_ok());
        for bad in ["", "a/b", "a b", "..", "é", "x.y", &"a".repeat(129)] {
            let err = TableName::new(bad).expect_err(bad);
            assert!(
                matches!(err, StorageError::InvalidTableName { .. }),
                "{err}"
            );
        }
        let err = TableName::new("a/b").expect_err("slash");
        assert!(err.to_string().contains("\"a/b\""), "{err}");
    }
}
