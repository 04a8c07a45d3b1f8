//! The data commands' IO: `put`/`delete` append to a table's WAL, `get`/`scan` read the
//! table's SSTs and its replayer's memtables and merge them (the merge itself is pure, in
//! [`admin::merge`]).
//!
//! Where the data is: WAL and SSTs on shared storage (`--storage-url`, or the URL the
//! scheduler reports), the manifest (which SSTs make the table) from the scheduler, and the
//! unflushed writes in the memtables of the replayer the table is assigned to.
//!
//! **A read sees every write acknowledged before it started.** Before reading, it notes the
//! WAL's head (the last sequence number written) and waits, up to `--wait`, until the
//! replayer has applied the WAL that far; a replayer that does not hold the table (not
//! assigned yet, restarting) is retried the same way. When the time is up the read fails:
//! answering from the SSTs alone would silently skip unflushed data. A table whose
//! checkpoint already covers the WAL head needs no replayer at all.
//!
//! **Flushes during a read.** A replayer drops a memtable only after the flush that wrote
//! it has advanced the table's checkpoint. So `get` reads the memtable first and the
//! manifest after: a flush in between moves the version into an SST the manifest then
//! lists. `scan` pages through the memtable after reading the manifest, and repeats the
//! whole scan if the checkpoint moved meanwhile. An SST that vanished between reading the
//! manifest and fetching it (compacted away and cleaned up) also restarts the read.

use std::time::{Duration, Instant};

use crate::client::AuthChannel;
use admin::merge::{MergeError, NewestVersions, ScanMerge, Version, visible};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use lsm::{BoxedIterator, MAX_SEQNO, MergingIterator, SeqNo, ValueKind};
use proto::v1 as pb;
use storage::Storage;
use storage::paths::TableName;

use crate::{Cli, Failure, connect, output};

type AdminClient = pb::admin_client::AdminClient<AuthChannel>;
type ReplayerClient = pb::replayer_client::ReplayerClient<AuthChannel>;

/// How often a read restarts because the manifest moved under it before giving up.
const MAX_READ_RESTARTS: u32 = 8;

/// SSTs fetched at once.
const SST_FETCH_PARALLELISM: usize = 4;

/// Parses a key or value given on the command line: UTF-8 as is, or hex with `--hex`.
pub fn parse_arg(what: &str, s: &str, hex: bool) -> Result<Vec<u8>, Failure> {
    if !hex {
        return Ok(s.as_bytes().to_vec());
    }
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if !digits.len().is_multiple_of(2) {
        return Err(Failure(
            2,
            format!("{what} {s:?}: odd number of hex digits"),
        ));
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            digits
                .get(i..i + 2)
                .and_then(|d| u8::from_str_radix(d, 16).ok())
                .ok_or_else(|| Failure(2, format!("{what} {s:?}: not hex (--hex)")))
        })
        .collect()
}

/// Refuses a key or value over the limits (usage error, exit 2) before anything is
/// written.
pub fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<(), Failure> {
    use runtime::limits::{MAX_KEY_BYTES, MAX_VALUE_BYTES};
    if key.len() > MAX_KEY_BYTES {
        return Err(Failure(
            2,
            format!(
                "key: {} bytes exceeds the key size limit of {MAX_KEY_BYTES} bytes",
                key.len()
            ),
        ));
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE_BYTES
    {
        return Err(Failure(
            2,
            format!(
                "value: {} bytes exceeds the value size limit of {MAX_VALUE_BYTES} bytes",
                v.len()
            ),
        ));
    }
    Ok(())
}

/// The table's record from ListTables; an unknown table is an error naming it.
pub async fn table_info(admin: &mut AdminClient, table: &str) -> Result<pb::TableInfo, Failure> {
    let tables = admin
        .list_tables(pb::ListTablesRequest {})
        .await?
        .into_inner()
        .tables;
    tables
        .into_iter()
        .find(|t| t.name == table)
        .ok_or_else(|| Failure(1, format!("table {table} not found")))
}

/// Shared storage: `--storage-url` (or `DP__STORAGE__URL`), else the scheduler's.
pub async fn open_storage(cli: &Cli, admin: &mut AdminClient) -> Result<Storage, Failure> {
    let (url, from_flag) = match cli.storage_url.as_deref().filter(|u| !u.is_empty()) {
        Some(u) => (u.to_owned(), true),
        None => {
            let url = admin
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner()
                .storage_url;
            if url.is_empty() {
                return Err(Failure(
                    1,
                    "the scheduler reports no storage URL: pass --storage-url".into(),
                ));
            }
            (url, false)
        }
    };
    Storage::from_url(&url, &storage::S3Options::default()).map_err(|e| {
        if from_flag {
            Failure(2, format!("--storage-url {url:?}: {e}"))
        } else {
            Failure(1, format!("storage URL {url:?} from the scheduler: {e}"))
        }
    })
}

/// A WAL writer for `info`'s table that never reuses a sequence number at or below the
/// checkpoint (the log's segments may all have been cleaned up).
pub async fn wal_writer(
    storage: &Storage,
    info: &pb::TableInfo,
) -> Result<wal::WalWriter, Failure> {
    let config = wal::WalWriterConfig {
        min_last_seq: info.checkpoint,
        ..wal::WalWriterConfig::default()
    };
    wal::WalWriter::open(storage.clone(), &info.name, config)
        .await
        .map_err(|e| Failure(1, format!("table {}: opening its WAL: {e}", info.name)))
}

/// `put` and `delete`: one batch of one entry, acknowledged once durable.
pub async fn write(
    cli: &Cli,
    table: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<String, Failure> {
    let mut admin = connect(&cli.scheduler).await?;
    let info = table_info(&mut admin, table).await?;
    let storage = open_storage(cli, &mut admin).await?;
    let writer = wal_writer(&storage, &info).await?;
    let mut batch = wal::WriteBatch::new();
    match value {
        Some(v) => batch.put(key, v),
        None => batch.delete(key),
    };
    let appended = writer
        .append(batch)
        .await
        .map_err(|e| Failure(1, format!("table {table}: appending to the WAL: {e}")))?;
    Ok(output::written(
        if value.is_some() { "put" } else { "delete" },
        table,
        key,
        appended.first_seq,
        cli.json,
    ))
}

/// The last sequence number in the table's WAL now (0 for an empty log).
async fn wal_head(storage: &Storage, table: &str) -> Result<SeqNo, Failure> {
    let fail = |e: wal::WalError| Failure(1, format!("table {table}: reading its WAL head: {e}"));
    let reader = wal::WalReader::open(storage, table).await.map_err(fail)?;
    let Some(newest) = reader.segments().last() else {
        return Ok(0);
    };
    let bytes = match storage.get(&newest.path).await {
        Ok(b) => b,
        // Cleaned up since the listing: the checkpoint has passed it.
        Err(e) if e.is_not_found() => return Ok(newest.first_seq.saturating_sub(1)),
        Err(e) => return Err(fail(e.into())),
    };
    let decoded = wal::decode_segment(
        &bytes,
        wal::RecoveryMode::TolerateCorruptedTail,
        newest.path.as_ref(),
        true,
    )
    .map_err(fail)?;
    Ok(decoded
        .last_seq()
        .unwrap_or(newest.first_seq.saturating_sub(1)))
}

/// Reads from the table's replayer, retrying (until the deadline) while it does not hold
/// the table, cannot be reached, or has not applied the WAL through `wal_head`.
struct MemtableReader<'a> {
    admin: &'a mut AdminClient,
    table: String,
    address: String,
    client: Option<ReplayerClient>,
    wal_head: SeqNo,
    wait: Duration,
    deadline: Instant,
}

/// Why a replayer call is to be retried.
enum NotYet {
    Unreachable(String),
    Other(String),
}

impl<'a> MemtableReader<'a> {
    fn new(
        admin: &'a mut AdminClient,
        info: &pb::TableInfo,
        wal_head: SeqNo,
        wait: Duration,
    ) -> Self {
        Self {
            admin,
            table: info.name.clone(),
            address: info.replayer_address.clone(),
            client: None,
            wal_head,
            wait,
            deadline: Instant::now() + wait,
        }
    }

    async fn client(&mut self) -> Result<ReplayerClient, NotYet> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        if self.address.is_empty() {
            return Err(NotYet::Other("has no replayer assigned".into()));
        }
        let channel = crate::client::connect(
            &self.address,
            Duration::from_secs(3),
            Duration::from_secs(30),
        )
        .await
        .map_err(|e| match e {
            crate::client::ConnectError::Address(m) => {
                NotYet::Other(format!("has a bad replayer address {m}"))
            }
            crate::client::ConnectError::Unreachable(m) => {
                NotYet::Unreachable(format!("replayer {m}"))
            }
        })?;
        let client = ReplayerClient::new(channel);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Runs `call` (which returns its answer and the replayer's applied_seq) until it
    /// succeeds on a replayer that has caught up, or the deadline passes.
    async fn call<T, F, Fut>(&mut self, mut call: F) -> Result<T, Failure>
    where
        F: FnMut(ReplayerClient) -> Fut,
        Fut: Future<Output = Result<(T, SeqNo), tonic::Status>>,
    {
        loop {
            let why = match self.client().await {
                Err(why) => why,
                Ok(client) => match call(client).await {
                    Ok((answer, applied)) if applied >= self.wal_head => return Ok(answer),
                    Ok((_, applied)) => NotYet::Other(format!(
                        "replayer {} has applied its WAL through seq {applied}, not yet through the head {}",
                        self.address, self.wal_head
                    )),
                    Err(s) if s.code() == tonic::Code::NotFound => NotYet::Other(format!(
                        "replayer {} does not hold it ({})",
                        self.address,
                        s.message()
                    )),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        self.client = None;
                        NotYet::Unreachable(format!(
                            "replayer {} unreachable: {}",
                            self.address,
                            s.message()
                        ))
                    }
                    Err(s) => {
                        return Err(Failure(
                            1,
                            format!(
                                "table {}: replayer {}: {:?}: {}",
                                self.table,
                                self.address,
                                s.code(),
                                s.message()
                            ),
                        ));
                    }
                },
            };
            if Instant::now() >= self.deadline {
                let (code, why) = match why {
                    NotYet::Unreachable(w) => (3, w),
                    NotYet::Other(w) => (1, w),
                };
                return Err(Failure(
                    code,
                    format!(
                        "table {}: cannot read its unflushed writes: {why} (waited {} s; raise --wait)",
                        self.table,
                        self.wait.as_secs_f64()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            // The table may have moved to another replayer.
            let info = table_info(self.admin, &self.table).await?;
            if info.replayer_address != self.address {
                self.address = info.replayer_address;
                self.client = None;
            }
        }
    }

    async fn get(&mut self, key: &[u8]) -> Result<Option<Version>, Failure> {
        let table = self.table.clone();
        self.call(|mut c| {
            let req = pb::MemtableGetRequest {
                table: table.clone(),
                key: key.to_vec(),
            };
            async move {
                let r = c.get(req).await?.into_inner();
                let v = if r.found { r.entry.map(version) } else { None };
                Ok((v, r.applied_seq))
            }
        })
        .await
    }

    /// One page: the newest version per key in `[start, end)`, and whether more follow.
    async fn scan(
        &mut self,
        start: &[u8],
        end: &[u8],
        limit: u32,
    ) -> Result<(Vec<Version>, bool), Failure> {
        let table = self.table.clone();
        self.call(|mut c| {
            let req = pb::MemtableScanRequest {
                table: table.clone(),
                range: Some(pb::KeyRange {
                    start: start.to_vec(),
                    end: end.to_vec(),
                }),
                limit,
            };
            async move {
                let r = c.scan(req).await?.into_inner();
                let page = r.entries.into_iter().map(version).collect();
                Ok(((page, r.truncated), r.applied_seq))
            }
        })
        .await
    }
}

fn version(kv: pb::KeyValue) -> Version {
    Version {
        key: Bytes::from(kv.key),
        seq: kv.seq,
        value: (!kv.tombstone).then(|| Bytes::from(kv.value)),
    }
}

/// Why SSTs could not be read.
enum SstFailure {
    /// A manifest file is gone: the manifest moved on; read again.
    Vanished(String),
    Failed(Failure),
}

/// Opens the manifest's files that may hold user keys in `[start, end]` (`end` inclusive
/// when `end_inclusive`, exclusive otherwise; empty `end`: unbounded), newest first: L0 in
/// manifest order (newest first), then deeper levels.
async fn open_ssts(
    storage: &Storage,
    manifest: &pb::Manifest,
    start: &[u8],
    end: &[u8],
    end_inclusive: bool,
) -> Result<Vec<sst::SstReader>, SstFailure> {
    let table = TableName::new(manifest.table.clone())
        .map_err(|e| SstFailure::Failed(Failure(1, format!("table {:?}: {e}", manifest.table))))?;
    let mut levels: Vec<&pb::Level> = manifest.levels.iter().collect();
    levels.sort_by_key(|l| l.level);
    let files: Vec<&pb::FileMeta> = levels
        .iter()
        .flat_map(|l| l.files.iter())
        .filter(|f| {
            let below_end = end.is_empty()
                || if end_inclusive {
                    f.smallest_key.as_slice() <= end
                } else {
                    f.smallest_key.as_slice() < end
                };
            f.largest_key.as_slice() >= start && below_end
        })
        .collect();
    futures::stream::iter(files)
        .map(|f| {
            let path = storage::paths::sst_file(&table, f.file_id);
            let table = &table;
            async move {
                let bytes = match storage.get(&path).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => {
                        return Err(SstFailure::Vanished(path.to_string()));
                    }
                    Err(e) => {
                        return Err(SstFailure::Failed(Failure(
                            1,
                            format!("table {}: reading sst {}: {e}", table, f.file_id),
                        )));
                    }
                };
                sst::SstReader::open(bytes, path.to_string()).map_err(|e| {
                    SstFailure::Failed(Failure(1, format!("table {table}: sst {}: {e}", f.file_id)))
                })
            }
        })
        .buffered(SST_FETCH_PARALLELISM)
        .try_collect()
        .await
}

/// What get and scan share: the table, its storage, and its WAL head (whether it holds
/// unflushed writes).
struct ReadSetup {
    admin: AdminClient,
    info: pb::TableInfo,
    storage: Storage,
    wal_head: SeqNo,
}

impl ReadSetup {
    async fn open(cli: &Cli, table: &str) -> Result<Self, Failure> {
        let mut admin = connect(&cli.scheduler).await?;
        let info = table_info(&mut admin, table).await?;
        let storage = open_storage(cli, &mut admin).await?;
        // After the checkpoint was read: a head at or below it means no unflushed writes.
        let wal_head = wal_head(&storage, table).await?;
        Ok(Self {
            admin,
            info,
            storage,
            wal_head,
        })
    }

    /// Whether writes above the checkpoint exist, i.e. the replayer must be read.
    fn has_unflushed(&self) -> bool {
        self.wal_head > self.info.checkpoint
    }

    async fn manifest(&mut self) -> Result<pb::Manifest, Failure> {
        Ok(self
            .admin
            .get_manifest(pb::GetManifestRequest {
                table: self.info.name.clone(),
            })
            .await?
            .into_inner())
    }
}

/// `get`: the newest visible version of `key`.
pub async fn get(
    cli: &Cli,
    table: &str,
    key: &[u8],
    hex: bool,
    wait: Duration,
) -> Result<String, Failure> {
    let mut setup = ReadSetup::open(cli, table).await?;
    let mut restarts = 0;
    loop {
        // Memtable first, manifest second: see the module docs.
        let mem = if setup.has_unflushed() {
            let (head, info) = (setup.wal_head, setup.info.clone());
            MemtableReader::new(&mut setup.admin, &info, head, wait)
                .get(key)
                .await?
        } else {
            None
        };
        let manifest = setup.manifest().await?;
        let readers = match open_ssts(&setup.storage, &manifest, key, key, true).await {
            Ok(r) => r,
            Err(SstFailure::Vanished(_)) if restarts < MAX_READ_RESTARTS => {
                restarts += 1;
                continue;
            }
            Err(SstFailure::Vanished(path)) => {
                return Err(Failure(
                    1,
                    format!("table {table}: {path} keeps vanishing under the read; try again"),
                ));
            }
            Err(SstFailure::Failed(f)) => return Err(f),
        };
        let mut candidates: Vec<Version> = mem.into_iter().collect();
        for r in &readers {
            let found = r
                .get(key, MAX_SEQNO)
                .map_err(|e| Failure(1, format!("table {table}: {e}")))?;
            if let Some(f) = found {
                candidates.push(Version {
                    key: Bytes::copy_from_slice(key),
                    seq: f.seq,
                    value: (f.kind == ValueKind::Put).then_some(f.value),
                });
            }
        }
        return match visible(candidates) {
            Some(v) => Ok(output::value(&v, hex, cli.json)),
            None => Err(Failure(
                1,
                format!(
                    "key {} not found in table {table}",
                    output::bytes_text(key, hex)
                ),
            )),
        };
    }
}

/// `scan`: the visible versions in `[start, end)`, at most `limit`.
pub async fn scan(
    cli: &Cli,
    table: &str,
    start: &[u8],
    end: &[u8],
    limit: usize,
    hex: bool,
    wait: Duration,
) -> Result<String, Failure> {
    let mut setup = ReadSetup::open(cli, table).await?;
    // A page big enough that tombstones rarely force another, small enough to stay cheap.
    let page_limit = u32::try_from(limit.clamp(64, 1000)).unwrap_or(1000);
    let mut restarts = 0;
    let mut restart = |why: String| -> Result<(), Failure> {
        restarts += 1;
        if restarts > MAX_READ_RESTARTS {
            return Err(Failure(
                1,
                format!("table {table}: {why}, {MAX_READ_RESTARTS} times in a row; try again"),
            ));
        }
        Ok(())
    };
    loop {
        let manifest = setup.manifest().await?;
        let readers = match open_ssts(&setup.storage, &manifest, start, end, false).await {
            Ok(r) => r,
            Err(SstFailure::Vanished(path)) => {
                restart(format!("{path} vanished under the scan"))?;
                continue;
            }
            Err(SstFailure::Failed(f)) => return Err(f),
        };
        let sources: Vec<BoxedIterator> = readers
            .iter()
            .map(|r| Box::new(r.iter()) as BoxedIterator)
            .collect();
        let ssts = NewestVersions::new(MergingIterator::new(sources), start, end);
        let mut merge = ScanMerge::new(ssts, limit);
        let merge_failure = |e: MergeError| Failure(1, format!("table {table}: {e}"));
        if setup.has_unflushed() {
            let (head, info) = (setup.wal_head, setup.info.clone());
            let mut mem = MemtableReader::new(&mut setup.admin, &info, head, wait);
            let mut from = start.to_vec();
            while !merge.is_done() {
                let (page, truncated) = mem.scan(&from, end, page_limit).await?;
                merge.feed(page, !truncated).map_err(merge_failure)?;
                if let Some(last) = merge.resume_after() {
                    // The smallest key after `last`.
                    from = last.to_vec();
                    from.push(0);
                }
            }
            // A flush that committed during the pages may have dropped a memtable whose
            // SSTs this manifest does not list.
            let now = setup.manifest().await?;
            if now.checkpoint != manifest.checkpoint {
                restart(format!(
                    "the checkpoint moved from {} to {} during the scan",
                    manifest.checkpoint, now.checkpoint
                ))?;
                continue;
            }
        } else {
            merge.feed(Vec::new(), true).map_err(merge_failure)?;
        }
        return Ok(output::scan(&merge.finish(), hex, cli.json));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_parse_as_utf8_or_hex() {
        assert_eq!(parse_arg("key", "abc", false).ok(), Some(b"abc".to_vec()));
        assert_eq!(
            parse_arg("key", "00ff10", true).ok(),
            Some(vec![0, 255, 16])
        );
        assert_eq!(parse_arg("key", "0xAb", true).ok(), Some(vec![0xab]));
        assert_eq!(parse_arg("key", "", true).ok(), Some(Vec::new()));
        let odd = parse_arg("key", "abc", true).err().map(|f| (f.0, f.1));
        assert_eq!(
            odd,
            Some((2, "key \"abc\": odd number of hex digits".into()))
        );
        let bad = parse_arg("value", "zz", true).err().map(|f| f.0);
        assert_eq!(bad, Some(2));
    }
}
