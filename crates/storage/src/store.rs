//! [`Storage`]: the one handle every service uses to reach shared storage.
//!
//! It wraps an `object_store` backend chosen by URL and adds what the engine needs on top:
//! a typed error per failure mode, durable local puts (see [`crate::local`]), a conditional
//! create that reports [`StorageError::AlreadyExists`] (WAL fencing), listings sorted by
//! path, idempotent deletes, multipart writes for SSTs, a blocking reader for iterators and a
//! free-space check before local writes.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectMeta, ObjectStore, PutMode, PutOptions, PutPayload, WriteMultipart};

use crate::StorageError;
use crate::blocking::{BlockingReader, BlockingReaderConfig};
use crate::faults::{Fault, FaultConfig, FaultCounts, FaultInjector};
use crate::local::{self, PutKind};

/// Options for `s3://` URLs. Unset fields fall back to the standard `AWS_*` environment
/// variables (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ALLOW_HTTP`, …), then to `object_store`'s defaults.
#[derive(Clone, Default)]
pub struct S3Options {
    /// Endpoint of an S3-compatible service (MinIO, moto, …); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region, e.g. `us-east-1`.
    pub region: Option<String>,
    /// Static credentials: access key id.
    pub access_key_id: Option<String>,
    /// Static credentials: secret access key.
    pub secret_access_key: Option<String>,
    /// Static credentials: session token.
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (local MinIO, tests).
    pub allow_http: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path style.
    pub virtual_hosted_style: Option<bool>,
    /// Any other `object_store` S3 setting by its config key (e.g. `aws_conditional_put`,
    /// `aws_skip_signature`), applied last.
    pub extra: BTreeMap<String, String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redacted(&self.secret_access_key))
            .field("session_token", &redacted(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Which backend a [`Storage`] talks to.
#[derive(Debug, Clone)]
enum Backend {
    /// A local directory (or a mounted shared volume).
    Local {
        root: PathBuf,
        fs: Arc<LocalFileSystem>,
    },
    /// In-process memory: tests and demos.
    Memory,
    /// S3 or an S3-compatible store.
    S3,
    /// A store injected by the caller (fault-injection wrappers in tests).
    Custom,
}

/// A cheap-to-clone handle to shared storage.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    url: Arc<str>,
    /// Injected faults (resilience tests only; see [`crate::faults`]).
    faults: Option<Arc<FaultInjector>>,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("url", &self.url).finish()
    }
}

impl Storage {
    /// Opens the storage named by `url`:
    ///
    /// - `file:///absolute/path`: a local directory, created if missing;
    /// - `memory://`: a fresh in-memory store (every call gets its own);
    /// - `s3://bucket[/prefix]`: S3 or an S3-compatible store, configured by `options` and
    ///   the `AWS_*` environment variables.
    pub fn from_url(url: &str, options: &S3Options) -> Result<Self, StorageError> {
        let invalid = |reason: &str| StorageError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            invalid("expected scheme://…, e.g. file:///var/lib/dp, s3://bucket/prefix or memory://")
        })?;
        if rest.contains(['?', '#']) {
            return Err(invalid("query strings and fragments are not supported"));
        }
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(invalid(
                        "file URLs take an absolute path and no host: file:///path",
                    ));
                }
                if rest.contains('%') {
                    return Err(invalid("percent-encoded file paths are not supported"));
                }
                Self::local_with_url(FsPath::new(rest), url)
            }
            "memory" => {
                if !rest.is_empty() && rest != "/" {
                    return Err(invalid("memory URLs take no path: memory://"));
                }
                Ok(Self::in_memory())
            }
            "s3" | "s3a" => Self::s3(url, rest, options),
            other => Err(invalid(&format!(
                "unsupported scheme {other:?}: expected file, s3 or memory"
            ))),
        }
    }

    /// A local directory as storage, created (durably) if missing.
    pub fn local(root: impl AsRef<FsPath>) -> Result<Self, StorageError> {
        let root = root.as_ref();
        let url = format!("file://{}", root.display());
        Self::local_with_url(root, &url)
    }

    fn local_with_url(root: &FsPath, url: &str) -> Result<Self, StorageError> {
        local::ensure_dir(root)
            .map_err(|e| StorageError::io("create storage directory", root.display(), e))?;
        let fs = LocalFileSystem::new_with_prefix(root).map_err(|e| StorageError::InvalidUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
        let root = std::fs::canonicalize(root)
            .map_err(|e| StorageError::io("canonicalize", root.display(), e))?;
        let fs = Arc::new(fs);
        Ok(Self {
            store: fs.clone(),
            backend: Backend::Local { root, fs },
            url: url.into(),
            faults: None,
        })
    }

    /// A fresh, empty in-memory store.
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(InMemory::new()),
            backend: Backend::Memory,
            url: "memory://".into(),
            faults: None,
        }
    }

    /// Wraps a caller-provided store (for example a fault-injecting wrapper in a test).
    /// Puts go straight to it; no local durability or free-space logic applies.
    pub fn from_object_store(store: Arc<dyn ObjectStore>, url: impl Into<String>) -> Self {
        let url: String = url.into();
        Self {
            store,
            backend: Backend::Custom,
            url: url.into(),
            faults: None,
        }
    }

    fn s3(url: &str, rest: &str, options: &S3Options) -> Result<Self, StorageError> {
        let invalid = |reason: String| StorageError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(invalid("missing bucket: s3://bucket[/prefix]".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(v) = &options.endpoint {
            builder = builder.with_endpoint(v);
        }
        if let Some(v) = &options.region {
            builder = builder.with_region(v);
        }
        if let Some(v) = &options.access_key_id {
            builder = builder.with_access_key_id(v);
        }
        if let Some(v) = &options.secret_access_key {
            builder = builder.with_secret_access_key(v);
        }
        if let Some(v) = &options.session_token {
            builder = builder.with_token(v);
        }
        if let Some(v) = options.allow_http {
            builder = builder.with_allow_http(v);
        }
        if let Some(v) = options.virtual_hosted_style {
            builder = builder.with_virtual_hosted_style_request(v);
        }
        for (key, value) in &options.extra {
            let parsed =
                AmazonS3ConfigKey::from_str(key).map_err(|e| StorageError::InvalidOption {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
            builder = builder.with_config(parsed, value);
        }
        let s3 = builder.build().map_err(|e| invalid(e.to_string()))?;
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(s3)
        } else {
            let prefix = Path::parse(prefix).map_err(|e| invalid(format!("bad prefix: {e}")))?;
            Arc::new(PrefixStore::new(s3, prefix))
        };
        Ok(Self {
            store,
            backend: Backend::S3,
            url: url.into(),
            faults: None,
        })
    }

    /// This storage with faults injected into a seeded fraction of its operations (see
    /// [`crate::faults`]); an inactive config leaves it as it is.
    pub fn with_faults(mut self, config: FaultConfig) -> Self {
        if config.is_active() {
            tracing::warn!(?config, url = %self.url, "storage fault injection is on");
            self.faults = Some(FaultInjector::new(config));
        }
        self
    }

    /// Faults injected so far (all zero without fault injection).
    pub fn fault_counts(&self) -> FaultCounts {
        self.faults.as_ref().map(|f| f.counts()).unwrap_or_default()
    }

    /// Draws this operation's fault and acts out what comes before the operation.
    async fn fault(
        &self,
        op: &'static str,
        path: &Path,
        is_write: bool,
    ) -> Result<Fault, StorageError> {
        let Some(faults) = &self.faults else {
            return Ok(Fault::None);
        };
        let fault = faults.draw();
        faults.before(fault, op, path.as_ref(), is_write).await?;
        Ok(fault)
    }

    /// After an applied write: a drawn reset turns its success into an error.
    fn after_write(&self, fault: Fault, op: &'static str, path: &Path) -> Result<(), StorageError> {
        match &self.faults {
            Some(faults) => faults.after_write(fault, op, path.as_ref()),
            None => Ok(()),
        }
    }

    /// The URL this storage was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The root directory of a local storage.
    pub fn local_root(&self) -> Option<&FsPath> {
        match &self.backend {
            Backend::Local { root, .. } => Some(root),
            _ => None,
        }
    }

    /// The underlying `object_store`, for what this API does not cover.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Writes a whole object, replacing any previous one. Durable when it returns (local
    /// storage: fsynced file and directory).
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.put_with(path, bytes, PutKind::Overwrite).await
    }

    /// Creates a whole object only if nothing exists at `path`: exactly one of several
    /// concurrent creators succeeds, the others get [`StorageError::AlreadyExists`]. Durable
    /// when it returns.
    pub async fn put_if_absent(&self, path: &Path, bytes: Bytes) -> Result<(), StorageError> {
        self.put_with(path, bytes, PutKind::Create).await
    }

    async fn put_with(&self, path: &Path, bytes: Bytes, kind: PutKind) -> Result<(), StorageError> {
        let fault = self.fault("put", path, true).await?;
        self.put_unfaulted(path, bytes, kind).await?;
        self.after_write(fault, "put", path)
    }

    async fn put_unfaulted(
        &self,
        path: &Path,
        bytes: Bytes,
        kind: PutKind,
    ) -> Result<(), StorageError> {
        match &self.backend {
            Backend::Local { fs, .. } => {
                let dest = local::file_path(fs, path)?;
                let location = path.clone();
                tokio::task::spawn_blocking(move || {
                    local::put_durable(&dest, &location, &bytes, kind)
                })
                .await
                .map_err(|e| join_error("put", path, e))?
            }
            _ => {
                let mode = match kind {
                    PutKind::Overwrite => PutMode::Overwrite,
                    PutKind::Create => PutMode::Create,
                };
                let opts = PutOptions {
                    mode,
                    ..PutOptions::default()
                };
                self.store
                    .put_opts(path, PutPayload::from_bytes(bytes), opts)
                    .await
                    .map(|_| ())
                    .map_err(|e| StorageError::from_store("put", path.as_ref(), e))
            }
        }
    }

    /// Reads a whole object.
    pub async fn get(&self, path: &Path) -> Result<Bytes, StorageError> {
        self.fault("get", path, false).await?;
        let map = |e| StorageError::from_store("get", path.as_ref(), e);
        self.store
            .get(path)
            .await
            .map_err(map)?
            .bytes()
            .await
            .map_err(map)
    }

    /// Reads `range` of an object. A range that does not lie within the object is
    /// [`StorageError::OutOfRange`] (backends would silently clip it).
    pub async fn get_range(&self, path: &Path, range: Range<u64>) -> Result<Bytes, StorageError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.fault("get range", path, false).await?;
        let result = self.store.get_range(path, range.clone()).await;
        let out_of_range = |size| StorageError::OutOfRange {
            path: path.to_string(),
            start: range.start,
            end: range.end,
            size,
        };
        match result {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => Ok(bytes),
            Ok(bytes) => Err(out_of_range(range.start + bytes.len() as u64)),
            Err(e) => match self.store.head(path).await {
                // Some backends refuse a range starting past the end instead of clipping it.
                Ok(meta) if range.end > meta.size => Err(out_of_range(meta.size)),
                _ => Err(StorageError::from_store("get range", path.as_ref(), e)),
            },
        }
    }

    /// Streams a whole object in the chunks the backend delivers, without buffering it.
    pub async fn get_stream(
        &self,
        path: &Path,
    ) -> Result<BoxStream<'static, Result<Bytes, StorageError>>, StorageError> {
        self.fault("get", path, false).await?;
        let result = self
            .store
            .get(path)
            .await
            .map_err(|e| StorageError::from_store("get", path.as_ref(), e))?;
        let owned = path.to_string();
        Ok(result
            .into_stream()
            .map_err(move |e| StorageError::from_store("get", &owned, e))
            .boxed())
    }

    /// Metadata of an object (size, last modified).
    pub async fn head(&self, path: &Path) -> Result<ObjectMeta, StorageError> {
        self.fault("head", path, false).await?;
        self.store
            .head(path)
            .await
            .map_err(|e| StorageError::from_store("head", path.as_ref(), e))
    }

    /// Size of an object in bytes.
    pub async fn size(&self, path: &Path) -> Result<u64, StorageError> {
        Ok(self.head(path).await?.size)
    }

    /// Every object under `prefix` (whole path segments; recursive), sorted by path.
    pub async fn list(&self, prefix: &Path) -> Result<Vec<ObjectMeta>, StorageError> {
        self.fault("list", prefix, false).await?;
        let mut objects: Vec<ObjectMeta> = self
            .store
            .list(Some(prefix))
            .try_collect()
            .await
            .map_err(|e| StorageError::from_store("list", prefix.as_ref(), e))?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// Deletes an object. Deleting a missing object succeeds, so cleanup can be retried.
    pub async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        let fault = self.fault("delete", path, true).await?;
        crate::delete_journal::record(path.as_ref());
        match self.store.delete(path).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StorageError::from_store("delete", path.as_ref(), e)),
        }?;
        self.after_write(fault, "delete", path)
    }

    /// Starts a streaming (multipart) write of a large object, e.g. an SST. Nothing is
    /// visible at `path` until [`ObjectWriter::finish`] returns; dropping the writer without
    /// finishing abandons the upload (a local staging file is removed; on S3 an incomplete
    /// multipart upload remains until the bucket's lifecycle rule expires it).
    pub async fn writer(&self, path: &Path) -> Result<ObjectWriter, StorageError> {
        self.fault("start multipart upload", path, false).await?;
        let local_file = match &self.backend {
            Backend::Local { fs, .. } => {
                let file = local::file_path(fs, path)?;
                if let Some(dir) = file.parent() {
                    let dir = dir.to_owned();
                    tokio::task::spawn_blocking(move || {
                        local::ensure_dir(&dir)
                            .map_err(|e| StorageError::io("create directory", dir.display(), e))
                    })
                    .await
                    .map_err(|e| join_error("create directory", path, e))??;
                }
                Some(file)
            }
            _ => None,
        };
        let upload =
            self.store.put_multipart(path).await.map_err(|e| {
                StorageError::from_store("start multipart upload", path.as_ref(), e)
            })?;
        Ok(ObjectWriter {
            upload: WriteMultipart::new_with_chunk_size(upload, ObjectWriter::PART_SIZE),
            path: path.clone(),
            local_file,
            written: 0,
            storage: self.clone(),
        })
    }

    /// A synchronous reader over `path` (of `size` bytes) for code running on a blocking
    /// thread. See [`BlockingReader`].
    pub fn blocking_reader(
        &self,
        handle: tokio::runtime::Handle,
        path: Path,
        size: u64,
        config: BlockingReaderConfig,
    ) -> BlockingReader {
        BlockingReader::new(self.clone(), handle, path, size, config)
    }

    /// Bytes available to this process on the volume of a local storage; `None` for object
    /// stores (S3, memory), which have no meaningful limit, or if the volume cannot be
    /// queried.
    pub fn free_space(&self) -> Option<u64> {
        self.available_space().ok().flatten()
    }

    fn available_space(&self) -> Result<Option<u64>, StorageError> {
        match &self.backend {
            Backend::Local { root, .. } => fs4::available_space(root)
                .map(Some)
                .map_err(|e| StorageError::io("statvfs", root.display(), e)),
            _ => Ok(None),
        }
    }

    /// Refuses work that would not fit: [`StorageError::DiskSpace`] if `needed_bytes` exceed
    /// the free space of a local storage. Always succeeds for object stores.
    pub fn check_space(&self, needed_bytes: u64) -> Result<(), StorageError> {
        let Some(available) = self.available_space()? else {
            return Ok(());
        };
        check_space_against(needed_bytes, available, self.local_root())
    }
}

/// The decision behind [`Storage::check_space`], separated so it is testable with any numbers.
pub fn check_space_against(
    needed: u64,
    available: u64,
    path: Option<&FsPath>,
) -> Result<(), StorageError> {
    if needed > available {
        return Err(StorageError::DiskSpace {
            needed,
            available,
            path: path.map(|p| p.display().to_string()).unwrap_or_default(),
        });
    }
    Ok(())
}

fn join_error(op: &'static str, path: &Path, err: tokio::task::JoinError) -> StorageError {
    StorageError::io(op, path, std::io::Error::other(err))
}

/// A streaming writer for one large object (multipart upload). Bytes are buffered into
/// parts of [`ObjectWriter::PART_SIZE`] and uploaded with bounded concurrency while the
/// caller keeps writing.
pub struct ObjectWriter {
    upload: WriteMultipart,
    path: Path,
    /// The destination file of a local storage, fsynced on finish.
    local_file: Option<PathBuf>,
    written: u64,
    /// The storage it writes to (for its injected faults).
    storage: Storage,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("path", &self.path)
            .field("written", &self.written)
            .finish()
    }
}

impl ObjectWriter {
    /// Size of each uploaded part (S3's minimum part size is 5 MiB).
    pub const PART_SIZE: usize = 8 * 1024 * 1024;
    /// Parts in flight at once; `write` waits when more are pending.
    pub const MAX_CONCURRENT_PARTS: usize = 4;

    /// Appends `data`, waiting if too many parts are still uploading.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StorageError> {
        self.wait_for_capacity().await?;
        self.upload.write(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Appends `data` without copying it.
    pub async fn write_bytes(&mut self, data: Bytes) -> Result<(), StorageError> {
        self.wait_for_capacity().await?;
        self.written += data.len() as u64;
        self.upload.put(data);
        Ok(())
    }

    async fn wait_for_capacity(&mut self) -> Result<(), StorageError> {
        self.upload
            .wait_for_capacity(Self::MAX_CONCURRENT_PARTS)
            .await
            .map_err(|e| StorageError::from_store("upload part", self.path.as_ref(), e))
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The object being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Uploads what is buffered and makes the object visible; durable when it returns.
    /// Returns the object's size.
    pub async fn finish(self) -> Result<u64, StorageError> {
        let Self {
            upload,
            path,
            local_file,
            written,
            storage,
        } = self;
        const OP: &str = "complete multipart upload";
        let fault = match storage.fault(OP, &path, true).await {
            Ok(fault) => fault,
            Err(e) => {
                // As a failed completion: nothing becomes visible.
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(%path, error = %abort, "aborting the upload failed");
                }
                return Err(e);
            }
        };
        upload
            .finish()
            .await
            .map_err(|e| StorageError::from_store("complete multipart upload", path.as_ref(), e))?;
        if let Some(file) = local_file {
            tokio::task::spawn_blocking(move || local::sync_file_and_dir(&file))
                .await
                .map_err(|e| join_error("fsync", &path, e))??;
        }
        storage.after_write(fault, OP, &path)?;
        Ok(written)
    }

    /// Abandons the upload; nothing becomes visible.
    pub async fn abort(self) -> Result<(), StorageError> {
        let path = self.path;
        self.upload
            .abort()
            .await
            .map_err(|e| StorageError::from_store("abort multipart upload", path.as_ref(), e))
    }
}
