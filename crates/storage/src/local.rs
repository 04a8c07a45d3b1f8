//! Durable, atomic writes for the local-directory backend.
//!
//! `object_store`'s `LocalFileSystem` writes a staging file and renames (or, for a
//! conditional create, hard-links) it into place, but never calls `fsync`: after a power
//! loss an acknowledged object could be missing, or present under its final name with
//! missing data. A WAL segment is acknowledged to the engine once its put returns, so for
//! puts we do the same dance ourselves with the syncs in the right places:
//!
//! 1. write the bytes to a staging file `<dest>#<digits>` in the destination directory
//!    (`LocalFileSystem` hides names ending in `#<digits>` from listings, so a staging file
//!    left by a crash is never read as data);
//! 2. `fsync` the staging file;
//! 3. `rename` it over the destination (plain put) or `link` it to the destination, which
//!    fails if the destination exists (put-if-absent: the atomic conditional create);
//! 4. `fsync` the directory, so the new name survives a crash.
//!
//! Directories created on the way are made durable too (their parent is synced). The object
//! is therefore either absent or complete: a crash never leaves a torn object under its
//! final name. Reads, listings and deletes go through `LocalFileSystem` unchanged; they map
//! object paths to files with [`LocalFileSystem::path_to_filesystem`], as we do here.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path as FsPath, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use crate::StorageError;

/// Distinguishes staging files of concurrent puts in this process.
static STAGING_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether a put replaces an existing object or must create a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PutKind {
    Overwrite,
    Create,
}

/// Maps an object path to its file.
pub(crate) fn file_path(fs: &LocalFileSystem, location: &Path) -> Result<PathBuf, StorageError> {
    fs.path_to_filesystem(location)
        .map_err(|e| StorageError::InvalidPath {
            path: location.to_string(),
            reason: e.to_string(),
        })
}

/// Writes `payload` to `dest` durably and atomically (blocking: call from a blocking thread).
pub(crate) fn put_durable(
    dest: &FsPath,
    location: &Path,
    payload: &Bytes,
    kind: PutKind,
) -> Result<(), StorageError> {
    let dir = dest.parent().ok_or_else(|| StorageError::InvalidPath {
        path: location.to_string(),
        reason: "object has no parent directory".into(),
    })?;
    ensure_dir(dir).map_err(|e| StorageError::io("create directory", dir.display(), e))?;

    let (mut file, staging) = create_staging(dest)
        .map_err(|e| StorageError::io("create staging file", dest.display(), e))?;
    let result = (|| {
        file.write_all(payload)
            .map_err(|e| StorageError::io("write", staging.display(), e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync", staging.display(), e))?;
        drop(file);
        match kind {
            PutKind::Overwrite => std::fs::rename(&staging, dest)
                .map_err(|e| StorageError::io("rename", dest.display(), e)),
            PutKind::Create => match std::fs::hard_link(&staging, dest) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    Err(StorageError::AlreadyExists {
                        path: location.to_string(),
                    })
                }
                Err(e) => Err(StorageError::io("link", dest.display(), e)),
            },
        }
    })();
    // After a rename the staging name is gone; after a link (or a failure) it must go.
    if kind == PutKind::Create || result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result?;
    sync_dir(dir).map_err(|e| StorageError::io("fsync directory", dir.display(), e))
}

/// Makes an existing file and the directory entry naming it durable (after a multipart
/// upload, which `LocalFileSystem` completes with an unsynced rename).
pub(crate) fn sync_file_and_dir(path: &FsPath) -> Result<(), StorageError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StorageError::io("fsync", path.display(), e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(|e| StorageError::io("fsync directory", dir.display(), e))?;
    }
    Ok(())
}

/// Creates `dir` and its missing ancestors, syncing the parent of each one created.
pub(crate) fn ensure_dir(dir: &FsPath) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.exists() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &FsPath) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_staging(dest: &FsPath) -> std::io::Result<(File, PathBuf)> {
    loop {
        let n = STAGING_COUNTER.fetch_add(1, Ordering::Relaxed);
        // Digits only after '#': LocalFileSystem then hides the file from listings.
        let mut name = dest.as_os_str().to_owned();
        name.push(format!("#{}{:010}", std::process::id(), n));
        let staging = PathBuf::from(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staging)
        {
            Ok(f) => return Ok((f, staging)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
