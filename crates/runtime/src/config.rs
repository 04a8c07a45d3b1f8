//! Typed configuration shared by every service.
//!
//! One YAML file (`--config path`), every key overridable by environment
//! (`DP__SECTION__KEY`, e.g. `DP__COMPACTION__STRATEGY=size_tiered`), loaded in the order
//! defaults → file → environment and validated before anything starts. Every error names
//! the key it is about, so an operator can fix it from one line; binaries exit with code 64
//! on any [`ConfigError`].
//!
//! Sizes are written like `"64MB"` ([`ByteSize`]) and durations like `"5s"`
//! ([`Duration`]); both are parsed once, here.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration error; the message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key has a value that parsed but is not allowed.
    #[error("invalid config value for `{key}`: {message}")]
    Invalid { key: String, message: String },
    /// The file or environment could not be read or did not match the schema.
    #[error("invalid config: {0}")]
    Load(String),
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

/// A size in bytes, written as `"64MB"`, `"512KiB"`, `"1G"` or a plain integer.
/// Decimal and binary units both mean powers of 1024, as RocksDB's and Kubernetes' users
/// expect from "64MB" in a storage config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!(
                "size {s:?} does not start with a number (e.g. \"64MB\")"
            ));
        }
        let n: f64 = num
            .parse()
            .map_err(|_| format!("size {s:?} has a malformed number"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "size {s:?} has unknown unit {other:?} (use B, KB, MB, GB or TB)"
                ));
            }
        };
        let bytes = n * mult as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
            return Err(format!("size {s:?} is out of range"));
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TB", 1 << 40),
            ("GB", 1 << 30),
            ("MB", 1 << 20),
            ("KB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(Self(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A duration, written as `"5s"`, `"250ms"`, `"1m 30s"` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub const fn secs(n: u64) -> Self {
        Self(std::time::Duration::from_secs(n))
    }
    pub const fn millis(n: u64) -> Self {
        Self(std::time::Duration::from_millis(n))
    }
    pub fn get(self) -> std::time::Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(s.trim()).map(Self).map_err(|e| {
            serde::de::Error::custom(format!("duration {s:?}: {e} (e.g. \"5s\", \"250ms\")"))
        })
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(self.0))
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Work inside each worker and the scheduler's queue.
    pub processor: ProcessorConfig,
    /// WAL replay (replayer).
    pub wal_replay: WalReplayConfig,
    /// Memtable flush (replayer triggers, flusher executes).
    pub memtable_flush: MemtableFlushConfig,
    /// Compaction strategy and limits.
    pub compaction: CompactionConfig,
    /// Deletion of obsolete SSTs and WAL segments.
    pub cleanup: CleanupConfig,
    /// Table statistics.
    pub statistics: StatisticsConfig,
    /// Shared storage for WAL and SSTs.
    pub storage: StorageConfig,
    /// The scheduler's catalog.
    pub catalog: CatalogConfig,
    /// Listening ports and server limits of every service.
    pub server: ServerConfig,
    /// Where workers find the scheduler, and the scheduler's timers.
    pub scheduler: SchedulerConfig,
    /// Logs and traces.
    pub telemetry: TelemetryConfig,
    /// Who may call the admin API (bearer tokens and their roles).
    pub admin: AdminConfig,
}

/// `processor` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Parallelism inside each worker (task slots; subcompactions).
    pub worker_count: u32,
    /// Maximum tasks waiting in the scheduler's queue; a full queue refuses new work.
    pub queue_size: u32,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        Self {
            worker_count: 4,
            queue_size: 1000,
        }
    }
}

/// How a replayer treats damaged WAL (RocksDB's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum RecoveryMode {
    /// Ignore an incomplete record at the end of the newest segment; fail on other damage.
    #[default]
    TolerateCorruptedTail,
    /// Fail on any damage, torn tail included.
    AbsoluteConsistency,
    /// Stop at the first damage and keep the consistent prefix.
    PointInTime,
    /// Skip damaged records and continue.
    SkipCorrupted,
}

/// `wal_replay` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WalReplayConfig {
    /// WAL entries read per batch.
    pub batch_size: u32,
    /// A memtable older than this is frozen and flushed even if it is not full.
    pub flush_interval: Duration,
    /// WAL replays running at once across the cluster.
    pub max_parallel_replays: u32,
    /// What to do with damaged WAL.
    pub recovery_mode: RecoveryMode,
    /// How often a replayer looks for new WAL segments.
    pub poll_interval: Duration,
    /// Frozen memtables a replayer keeps before it stops reading WAL (backpressure).
    pub max_frozen_memtables: u32,
}

impl Default for WalReplayConfig {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            flush_interval: Duration::secs(300),
            max_parallel_replays: 4,
            recovery_mode: RecoveryMode::default(),
            poll_interval: Duration::millis(100),
            max_frozen_memtables: 4,
        }
    }
}

/// `memtable_flush` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemtableFlushConfig {
    /// Size budget of one memtable.
    pub max_memtable_size: ByteSize,
    /// A memtable is frozen and flushed at `max_memtable_size × flush_threshold`; in (0, 1].
    pub flush_threshold: f64,
    /// Flushes running at once across the cluster.
    pub max_concurrent_flushes: u32,
}

impl Default for MemtableFlushConfig {
    fn default() -> Self {
        Self {
            max_memtable_size: ByteSize::mib(64),
            flush_threshold: 0.8,
            max_concurrent_flushes: 2,
        }
    }
}

/// Compaction strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Strategy {
    /// RocksDB-style leveled compaction.
    #[default]
    LevelBased,
    /// Cassandra-style size-tiered compaction.
    SizeTiered,
}

/// `compaction.level_based` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelBasedConfig {
    /// Target size of the first level below L0.
    pub max_bytes_for_level_base: ByteSize,
    /// Each level is this many times larger than the one above.
    pub level_multiplier: f64,
    /// Size level targets from the last level up, as RocksDB's level_compaction_dynamic_level_bytes.
    pub dynamic_level_bytes: bool,
    /// Number of levels including L0.
    pub num_levels: u32,
}

impl Default for LevelBasedConfig {
    fn default() -> Self {
        Self {
            max_bytes_for_level_base: ByteSize::mib(256),
            level_multiplier: 10.0,
            dynamic_level_bytes: true,
            num_levels: 7,
        }
    }
}

/// `compaction.size_tiered` section (Cassandra's names).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SizeTieredConfig {
    /// A file joins a bucket if its size is at least `bucket_low ×` the bucket's average.
    pub bucket_low: f64,
    /// ... and at most `bucket_high ×` the bucket's average.
    pub bucket_high: f64,
    /// Files smaller than this all go into the smallest bucket.
    pub min_sstable_size: ByteSize,
    /// Most files merged by one compaction.
    pub max_threshold: u32,
}

impl Default for SizeTieredConfig {
    fn default() -> Self {
        Self {
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_size: ByteSize::mib(50),
            max_threshold: 32,
        }
    }
}

/// `compaction` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactionConfig {
    /// L0 file count (level_based) or bucket size (size_tiered, Cassandra's min_threshold)
    /// that triggers a compaction.
    pub trigger_threshold: u32,
    /// Compactions running at once across the cluster.
    pub max_concurrent_compactions: u32,
    /// Output files are split at this size.
    pub target_file_size: ByteSize,
    /// `level_based` or `size_tiered`.
    pub strategy: Strategy,
    /// Knobs of the level_based strategy.
    pub level_based: LevelBasedConfig,
    /// Knobs of the size_tiered strategy.
    pub size_tiered: SizeTieredConfig,
    /// A file whose tombstones exceed this fraction of its entries is compacted alone; in (0, 1].
    pub tombstone_ratio: f64,
    /// L0 file count at which writes would stall (used by the stall forecast).
    pub l0_stop_threshold: u32,
    /// Compaction IO limit per worker in bytes/s; 0 = unlimited.
    pub rate_limit_bytes_per_sec: ByteSize,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        Self {
            trigger_threshold: 4,
            max_concurrent_compactions: 2,
            target_file_size: ByteSize::mib(256),
            strategy: Strategy::default(),
            level_based: LevelBasedConfig::default(),
            size_tiered: SizeTieredConfig::default(),
            tombstone_ratio: 0.5,
            l0_stop_threshold: 36,
            rate_limit_bytes_per_sec: ByteSize(0),
        }
    }
}

/// `cleanup` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// How often Cleanup runs.
    pub interval: Duration,
    /// An unreferenced object is deleted only once it is at least this old.
    pub grace_period: Duration,
    /// Report what would be deleted without deleting.
    pub dry_run: bool,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            interval: Duration::secs(60),
            grace_period: Duration::secs(300),
            dry_run: false,
        }
    }
}

/// `statistics` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatisticsConfig {
    /// How often StatisticsUpdate runs per table (also after compactions).
    pub interval: Duration,
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        Self {
            interval: Duration::secs(300),
        }
    }
}

/// `storage.s3` section: options of an `s3://` storage URL. Credentials come from the
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) and are never required here.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint of an S3-compatible store (MinIO, ...); empty = AWS.
    pub endpoint: String,
    /// Region.
    pub region: String,
    /// Allow plain-HTTP endpoints.
    pub allow_http: bool,
}

/// `storage` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `file:///path` (local directory or shared volume) or `s3://bucket/prefix`.
    pub url: String,
    /// Options for `s3://` URLs.
    pub s3: S3Config,
    /// Fault injection, for resilience tests only: every rate 0 (the default) = off.
    pub faults: FaultsConfig,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            url: "file://./data/storage".to_owned(),
            s3: S3Config::default(),
            faults: FaultsConfig::default(),
        }
    }
}

/// `storage.faults`: a seeded fraction of storage operations fail or slow down the way an
/// object store's do (503, timeout, connection reset after a write was applied, slow
/// answer). For resilience tests; never set it in production.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultsConfig {
    /// Seed of the fault decisions.
    pub seed: u64,
    /// Probability of a 503 before the operation.
    pub error_rate: f64,
    /// Probability of a timeout (after `delay`, nothing applied).
    pub timeout_rate: f64,
    /// Probability of a connection reset (writes: after being applied).
    pub reset_rate: f64,
    /// Probability of a slow but successful answer (after `delay`).
    pub slow_rate: f64,
    /// Delay of timeouts and slow answers; default 200ms.
    pub delay: Option<Duration>,
}

impl FaultsConfig {
    /// The storage crate's form.
    pub fn to_storage(&self) -> storage::FaultConfig {
        storage::FaultConfig {
            seed: self.seed,
            error_rate: self.error_rate,
            timeout_rate: self.timeout_rate,
            reset_rate: self.reset_rate,
            slow_rate: self.slow_rate,
            delay: self
                .delay
                .map(Duration::get)
                .unwrap_or(storage::FaultConfig::default().delay),
        }
    }
}

/// `catalog` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CatalogConfig {
    /// Directory of the scheduler's RocksDB catalog.
    pub path: String,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            path: "./data/catalog".to_owned(),
        }
    }
}

/// Ports of one service. Port 0 binds a free port (tests).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortsConfig {
    /// gRPC port: the service, Health and reflection.
    pub grpc_port: u16,
    /// HTTP port: /health, /ready, /metrics.
    pub http_port: u16,
    /// Address other services use to reach this one (`host:port`); empty = the advertised
    /// host and the bound gRPC port.
    pub advertised_address: String,
}

impl PortsConfig {
    fn with(grpc_port: u16, http_port: u16) -> Self {
        Self {
            grpc_port,
            http_port,
            advertised_address: String::new(),
        }
    }
}

impl Default for PortsConfig {
    fn default() -> Self {
        Self::with(0, 0)
    }
}

/// `server` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Interface to listen on.
    pub host: String,
    /// Host name or IP that goes into advertised addresses (the pod IP in Kubernetes).
    pub advertised_host: String,
    /// Time allowed to drain in-flight work after SIGTERM before exiting.
    pub drain_timeout: Duration,
    /// Deadline of every RPC served.
    pub request_timeout: Duration,
    /// RPCs served at once per connection; beyond it requests are shed (UNAVAILABLE).
    pub max_concurrent_requests: u32,
    /// Largest gRPC message a server decodes or a client sends; bigger ones are refused
    /// with RESOURCE_EXHAUSTED naming this limit.
    pub max_message_size: ByteSize,
    /// TLS of every gRPC port and of this process' gRPC clients.
    pub tls: TlsConfig,
    /// Scheduler ports.
    pub scheduler: PortsConfig,
    /// Replayer ports.
    pub replayer: PortsConfig,
    /// Flusher ports.
    pub flusher: PortsConfig,
    /// Compactor ports.
    pub compactor: PortsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "0.0.0.0".to_owned(),
            advertised_host: "127.0.0.1".to_owned(),
            drain_timeout: Duration::secs(10),
            request_timeout: Duration::secs(30),
            max_concurrent_requests: 256,
            max_message_size: ByteSize::mib(4),
            tls: TlsConfig::default(),
            scheduler: PortsConfig::with(50051, 8082),
            replayer: PortsConfig::with(50052, 8083),
            flusher: PortsConfig::with(50053, 8084),
            compactor: PortsConfig::with(50054, 8085),
        }
    }
}

impl ServerConfig {
    /// The ports of a service by name.
    pub fn ports(&self, service: ServiceKind) -> &PortsConfig {
        match service {
            ServiceKind::Scheduler => &self.scheduler,
            ServiceKind::Replayer => &self.replayer,
            ServiceKind::Flusher => &self.flusher,
            ServiceKind::Compactor => &self.compactor,
        }
    }
}

/// `server.tls` section. Empty `cert` = plain text. Certificate files are re-read when they
/// change (checked at most once a second, on new connections), so a rotated certificate is
/// served without a restart.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain of this service. Also its client certificate when it calls
    /// other services (workers to the scheduler, the scheduler to workers).
    pub cert: String,
    /// PEM private key of `cert`.
    pub key: String,
    /// PEM CA bundle: when set, mutual TLS: only peers with a certificate from this CA
    /// are accepted.
    pub client_ca: String,
    /// PEM CA bundle that this process' clients trust for the servers they call; empty =
    /// `client_ca`.
    pub ca: String,
    /// The name this process' clients verify server certificates against; empty = the
    /// host they dial. Services advertise pod IPs, so in Kubernetes set a name every
    /// service certificate carries (e.g. the first of `worker_names`).
    pub server_name: String,
    /// Names that make a client certificate a service certificate (a worker's or the
    /// scheduler's): with mutual TLS the service-to-service RPCs (RegisterWorker,
    /// Heartbeat, CompleteTask, RequestFlush, dispatches, ReadMemtable) are accepted only
    /// from a certificate valid for one of these DNS names (checked as a server name is:
    /// DNS subject alternative names, wildcards allowed in the certificate).
    pub worker_names: Vec<String>,
}

impl TlsConfig {
    /// TLS is on.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty()
    }
    /// Mutual TLS is on.
    pub fn mutual(&self) -> bool {
        self.enabled() && !self.client_ca.is_empty()
    }
    /// The CA this process' clients trust.
    pub fn server_ca(&self) -> &str {
        if self.ca.is_empty() {
            &self.client_ca
        } else {
            &self.ca
        }
    }
    /// `worker_names`, or its default.
    pub fn worker_names(&self) -> Vec<String> {
        if self.worker_names.is_empty() {
            vec![DEFAULT_WORKER_NAME.to_owned()]
        } else {
            self.worker_names.clone()
        }
    }
}

/// The DNS name a service certificate carries when `server.tls.worker_names` is not set.
pub const DEFAULT_WORKER_NAME: &str = "worker.data-processor.internal";

/// Role of an admin token, weakest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum Role {
    /// Status, queue, tasks, manifest, statistics.
    Viewer,
    /// Viewer plus triggers, cancel and quarantine release.
    Operator,
    /// Operator plus table create and drop.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        match v.as_str() {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?} (expected one of: viewer, operator, admin)"
            )),
        }
    }
}

/// One admin token: the SHA-256 of the token (never the token itself) and its role.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Lower-case hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// `viewer`, `operator` or `admin`.
    pub role: Role,
}

/// `admin` section: bearer tokens of the admin API (`authorization: Bearer <token>`).
/// With no token configured the admin API answers only loopback clients and the service
/// logs a warning at start.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Token hashes with their roles.
    pub tokens: Vec<TokenConfig>,
    /// A file of more tokens, one `<sha256 hex> <role>` per line (`#` starts a comment),
    /// e.g. mounted from a Kubernetes Secret; re-read when it changes.
    pub tokens_file: String,
}

impl AdminConfig {
    /// Every configured token: `tokens`, then those of `tokens_file`. Errors name the key
    /// and the line, never a token.
    pub fn all_tokens(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        let mut out = self.tokens.clone();
        for (i, t) in out.iter().enumerate() {
            check_hash(&format!("admin.tokens[{i}].sha256"), &t.sha256)?;
        }
        if !self.tokens_file.is_empty() {
            let text = std::fs::read_to_string(&self.tokens_file).map_err(|e| {
                invalid(
                    "admin.tokens_file",
                    format!("cannot read {:?}: {e}", self.tokens_file),
                )
            })?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let key = format!("admin.tokens_file ({}:{})", self.tokens_file, n + 1);
                let mut parts = line.split_whitespace();
                let (Some(hash), Some(role), None) = (parts.next(), parts.next(), parts.next())
                else {
                    return Err(invalid(&key, "expected `<sha256 hex> <role>`"));
                };
                check_hash(&key, hash)?;
                let role = Role::try_from(role.to_owned()).map_err(|e| invalid(&key, e))?;
                out.push(TokenConfig {
                    sha256: hash.to_ascii_lowercase(),
                    role,
                });
            }
        }
        Ok(out)
    }
}

fn check_hash(key: &str, hash: &str) -> Result<(), ConfigError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(invalid(
            key,
            "must be the 64 hex digits of the token's SHA-256 (not the token itself)",
        ))
    }
}

/// `scheduler` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Where workers reach the scheduler's gRPC port.
    pub endpoint: String,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// No heartbeat for this long: the worker is presumed dead and its tasks retried.
    pub heartbeat_timeout: Duration,
    /// Heartbeats without progress for this long: the task is stuck and retried.
    pub stuck_timeout: Duration,
    /// Attempts before a task is marked failed.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt.
    pub retry_backoff_base: Duration,
    /// Largest retry delay.
    pub retry_backoff_max: Duration,
    /// How often the pickers run without a commit to wake them.
    pub pick_interval: Duration,
    /// While the cluster's WAL ingest (bytes/s, summed over the tables the replayers
    /// report) is above this, deferrable work (deep compactions, cleanup, statistics)
    /// waits; urgent work (replays, flushes, L0 compactions) never does. 0 = no limit.
    pub peak_ingest_bytes_per_sec: ByteSize,
    /// Daily UTC time ranges in which deferrable work may run, e.g. `["02:00-05:00"]`
    /// (a range may wrap midnight: `"22:00-02:00"`); empty = always open. From the
    /// environment as one comma-separated string.
    pub maintenance_windows: MaintenanceWindows,
    /// Disk-bandwidth budget of the whole cluster in bytes per second, shared among the
    /// running flushes and compactions (urgent ones get a larger share); each worker paces
    /// its writes to its share. 0 = unlimited.
    pub io_budget: ByteSize,
    /// When a table's stall forecast falls below this and its L0 compaction waits for a
    /// compaction slot, a running deep compaction is preempted: it stops at its next
    /// output boundary, commits what it finished, and yields its slot. 0s = never.
    pub preempt_below_stall_forecast: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            endpoint: "http://127.0.0.1:50051".to_owned(),
            heartbeat_interval: Duration::secs(1),
            heartbeat_timeout: Duration::secs(10),
            stuck_timeout: Duration::secs(120),
            max_attempts: 5,
            retry_backoff_base: Duration::secs(1),
            retry_backoff_max: Duration::secs(60),
            pick_interval: Duration::secs(5),
            peak_ingest_bytes_per_sec: ByteSize(0),
            maintenance_windows: MaintenanceWindows::default(),
            io_budget: ByteSize(0),
            preempt_below_stall_forecast: Duration::secs(0),
        }
    }
}

/// A daily UTC time range, in minutes since midnight: `start..end`, wrapping midnight when
/// `end <= start` (`"22:00-02:00"`). `start == end` means the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaintenanceWindow {
    pub start_min: u32,
    pub end_min: u32,
}

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

impl MaintenanceWindow {
    /// Whether the minute of the day `minute` (0..1440) is inside the window.
    pub fn contains_minute(&self, minute: u32) -> bool {
        let (s, e) = (self.start_min, self.end_min);
        if s < e {
            (s..e).contains(&minute)
        } else {
            // Wraps midnight (or, for s == e, the whole day).
            minute >= s || minute < e
        }
    }
}

impl std::str::FromStr for MaintenanceWindow {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        fn hhmm(t: &str, whole: &str) -> Result<u32, String> {
            let bad = || format!("window {whole:?}: {t:?} is not a time HH:MM (00:00 to 24:00)");
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if m >= 60 || h > 24 || (h == 24 && m != 0) || t.trim().len() != 5 {
                return Err(bad());
            }
            Ok(h * 60 + m)
        }
        let (a, b) = s
            .split_once('-')
            .ok_or_else(|| format!("window {s:?} must look like \"02:00-05:00\" (daily, UTC)"))?;
        let (start, end) = (hhmm(a, s)?, hhmm(b, s)?);
        Ok(Self {
            start_min: start % 1440,
            end_min: end % 1440,
        })
    }
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.start_min / 60,
            self.start_min % 60,
            self.end_min / 60,
            self.end_min % 60
        )
    }
}

/// `scheduler.maintenance_windows`: when deferrable work may run. Pure: the time is passed
/// in as Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MaintenanceWindows(pub Vec<MaintenanceWindow>);

impl MaintenanceWindows {
    /// Whether deferrable work may run at `unix_ms` (always, with no windows).
    pub fn is_open(&self, unix_ms: i64) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let minute = (unix_ms.rem_euclid(DAY_MS) / 60_000) as u32;
        self.0.iter().any(|w| w.contains_minute(minute))
    }

    /// Milliseconds from `unix_ms` until a window opens (0 if one is open now).
    pub fn ms_until_open(&self, unix_ms: i64) -> i64 {
        if self.is_open(unix_ms) {
            return 0;
        }
        let into_day = unix_ms.rem_euclid(DAY_MS);
        self.0
            .iter()
            .map(|w| (i64::from(w.start_min) * 60_000 - into_day).rem_euclid(DAY_MS))
            .min()
            .unwrap_or(0)
    }
}

impl fmt::Display for MaintenanceWindows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|w| w.to_string()).collect();
        f.write_str(&parts.join(","))
    }
}

impl<'de> Deserialize<'de> for MaintenanceWindows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            One(String),
        }
        let items: Vec<String> = match Raw::deserialize(d)? {
            Raw::List(l) => l,
            Raw::One(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
        };
        items
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for MaintenanceWindows {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|w| w.to_string()))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// `telemetry` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `tracing` filter, e.g. `info` or `info,scheduler=debug`.
    pub log_level: String,
    /// `pretty` or `json`.
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint for traces (e.g. `http://jaeger:4317`); empty = no export.
    pub otlp_endpoint: String,
    /// `service.name` of exported spans; empty = the service's own name.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_level: "info".to_owned(),
            log_format: LogFormat::default(),
            otlp_endpoint: String::new(),
            service_name: String::new(),
        }
    }
}

/// The four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKind {
    Scheduler,
    Replayer,
    Flusher,
    Compactor,
}

impl ServiceKind {
    pub const ALL: [ServiceKind; 4] = [
        ServiceKind::Scheduler,
        ServiceKind::Replayer,
        ServiceKind::Flusher,
        ServiceKind::Compactor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServiceKind::Scheduler => "scheduler",
            ServiceKind::Replayer => "replayer",
            ServiceKind::Flusher => "flusher",
            ServiceKind::Compactor => "compactor",
        }
    }
}

impl fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Config {
    /// Loads defaults → `file` (if any) → environment variables `DP__SECTION__KEY`, then
    /// validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let defaults = config::Config::try_from(&Config::default())
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut builder = config::Config::builder().add_source(defaults);
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Load(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Yaml)
                    .required(true),
            );
        }
        let env: config::Map<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("DP__"))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("DP")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let cfg: Config = merged
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(invalid(key, "must be greater than 0"))
            } else {
                Ok(())
            }
        };
        let fraction = |key: &str, v: f64| {
            if v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(invalid(key, format!("{v} is outside (0, 1]")))
            }
        };
        positive("processor.worker_count", self.processor.worker_count.into())?;
        self.storage
            .faults
            .to_storage()
            .validate()
            .map_err(|e| invalid("storage.faults", e))?;
        positive("processor.queue_size", self.processor.queue_size.into())?;
        positive("wal_replay.batch_size", self.wal_replay.batch_size.into())?;
        positive(
            "wal_replay.max_parallel_replays",
            self.wal_replay.max_parallel_replays.into(),
        )?;
        positive(
            "wal_replay.max_frozen_memtables",
            self.wal_replay.max_frozen_memtables.into(),
        )?;
        positive(
            "memtable_flush.max_memtable_size",
            self.memtable_flush.max_memtable_size.0,
        )?;
        fraction(
            "memtable_flush.flush_threshold",
            self.memtable_flush.flush_threshold,
        )?;
        positive(
            "memtable_flush.max_concurrent_flushes",
            self.memtable_flush.max_concurrent_flushes.into(),
        )?;
        let c = &self.compaction;
        if c.trigger_threshold < 2 {
            return Err(invalid(
                "compaction.trigger_threshold",
                "must be at least 2",
            ));
        }
        positive(
            "compaction.max_concurrent_compactions",
            c.max_concurrent_compactions.into(),
        )?;
        positive("compaction.target_file_size", c.target_file_size.0)?;
        fraction("compaction.tombstone_ratio", c.tombstone_ratio)?;
        positive(
            "compaction.level_based.max_bytes_for_level_base",
            c.level_based.max_bytes_for_level_base.0,
        )?;
        if c.level_based.level_multiplier <= 1.0 {
            return Err(invalid(
                "compaction.level_based.level_multiplier",
                "must be greater than 1",
            ));
        }
        if !(2..=16).contains(&c.level_based.num_levels) {
            return Err(invalid(
                "compaction.level_based.num_levels",
                "must be in 2..=16",
            ));
        }
        let st = &c.size_tiered;
        if !(st.bucket_low > 0.0 && st.bucket_low < 1.0) {
            return Err(invalid(
                "compaction.size_tiered.bucket_low",
                "must be in (0, 1)",
            ));
        }
        if st.bucket_high <= 1.0 {
            return Err(invalid(
                "compaction.size_tiered.bucket_high",
                "must be greater than 1",
            ));
        }
        if st.max_threshold < c.trigger_threshold {
            return Err(invalid(
                "compaction.size_tiered.max_threshold",
                "must be at least compaction.trigger_threshold",
            ));
        }
        if self.storage.url.is_empty() {
            return Err(invalid("storage.url", "must not be empty"));
        }
        if !(self.storage.url.starts_with("file://")
            || self.storage.url.starts_with("s3://")
            || self.storage.url.starts_with("memory://"))
        {
            return Err(invalid(
                "storage.url",
                format!(
                    "{:?} has an unsupported scheme (use file:///path or s3://bucket/prefix)",
                    self.storage.url
                ),
            ));
        }
        if self.catalog.path.is_empty() {
            return Err(invalid("catalog.path", "must not be empty"));
        }
        positive(
            "server.max_concurrent_requests",
            self.server.max_concurrent_requests.into(),
        )?;
        if self.server.max_message_size.0 < 1024 || self.server.max_message_size.0 > 1 << 30 {
            return Err(invalid(
                "server.max_message_size",
                "must be between 1KB and 1GB",
            ));
        }
        let tls = &self.server.tls;
        if tls.cert.is_empty() != tls.key.is_empty() {
            return Err(invalid(
                "server.tls.key",
                "server.tls.cert and server.tls.key must be set together",
            ));
        }
        if !tls.enabled() && !tls.client_ca.is_empty() {
            return Err(invalid(
                "server.tls.client_ca",
                "mutual TLS needs server.tls.cert and server.tls.key",
            ));
        }
        if tls.enabled() && tls.server_ca().is_empty() {
            return Err(invalid(
                "server.tls.ca",
                "TLS is on: set the CA that verifies the other services (server.tls.ca or server.tls.client_ca)",
            ));
        }
        for (key, path) in [
            ("server.tls.cert", &tls.cert),
            ("server.tls.key", &tls.key),
            ("server.tls.client_ca", &tls.client_ca),
            ("server.tls.ca", &tls.ca),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                return Err(invalid(key, format!("file {path:?} does not exist")));
            }
        }
        for (i, name) in tls.worker_names.iter().enumerate() {
            if name.is_empty() {
                return Err(invalid(
                    &format!("server.tls.worker_names[{i}]"),
                    "must not be empty",
                ));
            }
        }
        self.admin.all_tokens()?;
        let s = &self.scheduler;
        if !(s.endpoint.starts_with("http://") || s.endpoint.starts_with("https://")) {
            return Err(invalid(
                "scheduler.endpoint",
                format!("{:?} must start with http:// or https://", s.endpoint),
            ));
        }
        if s.heartbeat_timeout.0 <= s.heartbeat_interval.0 {
            return Err(invalid(
                "scheduler.heartbeat_timeout",
                "must be longer than scheduler.heartbeat_interval",
            ));
        }
        positive("scheduler.max_attempts", s.max_attempts.into())?;
        tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level).map_err(|e| {
            invalid(
                "telemetry.log_level",
                format!("{:?}: {e}", self.telemetry.log_level),
            )
        })?;
        Ok(())
    }
}

impl TryFrom<String> for RecoveryMode {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        match v.as_str() {
            "tolerate_corrupted_tail" => Ok(Self::TolerateCorruptedTail),
            "absolute_consistency" => Ok(Self::AbsoluteConsistency),
            "point_in_time" => Ok(Self::PointInTime),
            "skip_corrupted" => Ok(Self::SkipCorrupted),
            other => Err(format!(
                "unknown value {other:?} (expected one of: tolerate_corrupted_tail, absolute_consistency, point_in_time, skip_corrupted)"
            )),
        }
    }
}

impl TryFrom<String> for Strategy {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        match v.as_str() {
            "level_based" => Ok(Self::LevelBased),
            "size_tiered" => Ok(Self::SizeTiered),
            other => Err(format!(
                "unknown value {other:?} (expected one of: level_based, size_tiered)"
            )),
        }
    }
}

impl TryFrom<String> for LogFormat {
    type Error = String;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        match v.as_str() {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown value {other:?} (expected one of: pretty, json)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_yaml(yaml: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, yaml).expect("write");
        Config::load_with_env(
            Some(&path),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn sizes_parse() {
        assert_eq!("64MB".parse::<ByteSize>(), Ok(ByteSize(64 << 20)));
        assert_eq!("512KiB".parse::<ByteSize>(), Ok(ByteSize(512 << 10)));
        assert_eq!("1.5G".parse::<ByteSize>(), Ok(ByteSize(3 << 29)));
        assert_eq!("100".parse::<ByteSize>(), Ok(ByteSize(100)));
        assert!("64XB".parse::<ByteSize>().is_err());
        assert!("MB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(64 << 20).to_string(), "64MB");
    }

    #[test]
    fn seed_keys_load_and_env_beats_file() {
        let yaml = "processor:\n  worker_count: 8\n  queue_size: 50\nwal_replay:\n  batch_size: 10\n  flush_interval: 5s\nmemtable_flush:\n  max_memtable_size: 32MB\n  flush_threshold: 0.5\ncompaction:\n  strategy: size_tiered\n  trigger_threshold: 6\n";
        let cfg = load_yaml(yaml, &[("DP__PROCESSOR__WORKER_COUNT", "3")]).expect("valid");
        assert_eq!(cfg.processor.worker_count, 3);
        assert_eq!(cfg.processor.queue_size, 50);
        assert_eq!(cfg.wal_replay.flush_interval.get().as_secs(), 5);
        assert_eq!(cfg.memtable_flush.max_memtable_size, ByteSize(32 << 20));
        assert_eq!(cfg.compaction.strategy, Strategy::SizeTiered);
        assert_eq!(cfg.compaction.trigger_threshold, 6);
    }

    #[test]
    fn maintenance_windows_parse_and_wrap_midnight() {
        let at = |h: i64, m: i64| 3 * DAY_MS + (h * 60 + m) * 60_000;
        let w: MaintenanceWindows = MaintenanceWindows(vec![
            "02:00-05:00".parse().expect("valid"),
            "22:30-00:30".parse().expect("valid"),
        ]);
        assert!(w.is_open(at(2, 0)) && w.is_open(at(4, 59)));
        assert!(!w.is_open(at(5, 0)) && !w.is_open(at(1, 59)) && !w.is_open(at(12, 0)));
        assert!(w.is_open(at(23, 0)) && w.is_open(at(0, 10)) && !w.is_open(at(0, 30)));
        assert_eq!(w.ms_until_open(at(12, 0)), (10 * 60 + 30) * 60_000);
        assert_eq!(w.ms_until_open(at(1, 0)), 60 * 60_000);
        assert_eq!(w.ms_until_open(at(3, 0)), 0);
        assert!(
            MaintenanceWindows::default().is_open(at(12, 0)),
            "empty = always open"
        );
        assert!(MaintenanceWindows(vec!["00:00-24:00".parse().expect("valid")]).is_open(at(7, 0)));
        assert_eq!(w.to_string(), "02:00-05:00,22:30-00:30");
        for bad in [
            "2-5",
            "02:00",
            "25:00-26:00",
            "02:60-03:00",
            "ab:cd-01:00",
            "2:00-03:00",
        ] {
            assert!(
                bad.parse::<MaintenanceWindow>().is_err(),
                "{bad} must not parse"
            );
        }
    }

    #[test]
    fn traffic_keys_load_from_yaml_and_env() {
        let yaml = "scheduler:\n  peak_ingest_bytes_per_sec: 1MB\n  io_budget: 2MB\n  maintenance_windows: [\"02:00-05:00\"]\n";
        let cfg = load_yaml(yaml, &[]).expect("valid");
        assert_eq!(cfg.scheduler.peak_ingest_bytes_per_sec, ByteSize(1 << 20));
        assert_eq!(cfg.scheduler.io_budget, ByteSize(2 << 20));
        assert_eq!(cfg.scheduler.maintenance_windows.to_string(), "02:00-05:00");
        let cfg = load_yaml(
            "",
            &[(
                "DP__SCHEDULER__MAINTENANCE_WINDOWS",
                "01:00-02:00, 22:00-23:00",
            )],
        )
        .expect("valid");
        assert_eq!(
            cfg.scheduler.maintenance_windows.to_string(),
            "01:00-02:00,22:00-23:00"
        );
        let err = load_yaml("scheduler:\n  maintenance_windows: [\"2am-5am\"]\n", &[])
            .expect_err("bad window")
            .to_string();
        assert!(
            err.contains("maintenance_windows") && err.contains("2am-5am"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("compaction:\n  strategy: bogus\n", "strategy"),
            (
                "memtable_flush:\n  flush_threshold: 1.5\n",
                "memtable_flush.flush_threshold",
            ),
            (
                "memtable_flush:\n  flush_threshold: 0\n",
                "memtable_flush.flush_threshold",
            ),
            (
                "memtable_flush:\n  max_memtable_size: 12QB\n",
                "max_memtable_size",
            ),
            ("compaction:\n  no_such_key: 1\n", "no_such_key"),
            ("wal_replay:\n  flush_interval: soon\n", "flush_interval"),
        ];
        for (yaml, key) in cases {
            let err = load_yaml(yaml, &[]).expect_err(yaml).to_string();
            assert!(err.contains(key), "error {err:?} should name {key}");
        }
    }
}
