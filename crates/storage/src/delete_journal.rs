//! The delete journal, for the GC-safety oracle of the crash tests: with
//! `DP_DELETE_JOURNAL=/path/file` in a process's environment, every [`crate::Storage::delete`]
//! first appends one line `<unix ms> <pid> <object path>` to that file (one `write` on a file
//! opened for appending, so lines of several processes do not interleave). The line is
//! written *before* the delete: a process killed in between has a line for an object that may
//! still exist, which the checker treats as deleted at that moment (the intent was already
//! wrong if the object was referenced). Unset (production), a delete costs one environment
//! lookup per process.

use std::io::Write;
use std::sync::OnceLock;

/// The environment variable naming the journal file.
pub const ENV: &str = "DP_DELETE_JOURNAL";

fn journal() -> Option<&'static std::path::Path> {
    static PATH: OnceLock<Option<std::path::PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os(ENV).map(Into::into))
        .as_deref()
}

/// Appends the line of a delete about to happen; a journal that cannot be written is
/// logged, never a reason to fail the delete.
pub(crate) fn record(path: &str) {
    let Some(journal) = journal() else {
        return;
    };
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let line = format!("{ms} {} {path}\n", std::process::id());
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(journal)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::error!(journal = %journal.display(), "delete journal not written: {e}");
    }
}
