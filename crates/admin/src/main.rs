//! `storage-admin`: the operator CLI. Human output by default, `--json` for scripts; exit
//! codes scripts can use: 0 ok, 1 the scheduler refused (the status is printed) or the
//! operation failed (the reason is printed), 2 usage, 3 scheduler (or replayer, or a
//! metrics port) unreachable. Every failure is one line on stderr. The top-level `--help`
//! lists the codes; every command's `--help` ends with examples (a unit test walks the
//! command tree to keep it so).
//!
//! Commands:
//!
//! - cluster: `status`, `metrics`, `processor queue-status`, `tables list|create|drop`,
//!   `manifest`, `levels`, `stats`, `tasks list|show|cancel`, `compact`, `flush`, `plan`,
//!   `wal replay`. Each is one call (or a few) of the scheduler's Admin API — the same
//!   methods grpcurl reaches through reflection; `status` also asks each worker for its own
//!   GetStatus (see `probe`), and `compact` follows its tasks to the end (see `compact`).
//! - data: `put`, `delete` (one write batch appended to the table's WAL on shared storage,
//!   printed with its sequence number once durable), `get`, `scan` (the newest version of
//!   each key, SSTs and the replayer's memtables merged: see `data`), and `load` (a seeded
//!   load generator with an oracle of acknowledged writes: see `load`). They reach shared
//!   storage at `--storage-url`, or at the URL the scheduler reports.
//!
//! The pure parts (oracle format and reader, read merge, workload) are the `admin` library.

mod client;
mod compact;
mod data;
mod load;
mod output;
mod probe;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proto::v1 as pb;

/// The top-level help's epilogue: examples and the exit codes.
const TOP_HELP: &str = "\
Examples:
  storage-admin status
  storage-admin --scheduler sched.internal:50051 tables list --json
  DP_SCHEDULER=sched.internal:50051 storage-admin compact --force --table orders
  storage-admin <COMMAND> --help      (each command's flags and examples)

Exit codes:
  0  success
  1  the scheduler refused the request or the operation failed: unknown table or task, a
     key that does not exist (get), a compaction that failed or timed out (compact); one
     line on stderr says why
  2  usage: a bad command, flag or argument
  3  unreachable: the scheduler (or a replayer, or a service's metrics port)";

/// Operate a data-processor cluster.
///
/// Status and metrics of every service, tables, manifests, levels and statistics, tasks,
/// compactions, WAL replay, and the data commands (put, delete, get, scan, load). Human
/// output by default, `--json` on every command.
#[derive(Parser)]
#[command(name = "storage-admin", version, after_help = TOP_HELP)]
struct Cli {
    /// Scheduler gRPC address (host:port).
    #[arg(
        long,
        global = true,
        env = "DP_SCHEDULER",
        default_value = "127.0.0.1:50051"
    )]
    scheduler: String,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Shared storage (file:///path or s3://bucket/prefix) for the data commands (default:
    /// the URL the scheduler reports). s3 credentials come from the AWS_* environment.
    #[arg(long, global = true, env = "DP__STORAGE__URL")]
    storage_url: Option<String>,
    #[command(flatten)]
    security: client::SecurityArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Health of every service: scheduler, workers, tasks, stall forecast.
    ///
    /// The scheduler (version, uptime), each registered worker (alive by its heartbeats,
    /// version, uptime and memory from its own GetStatus, running attempts), running and
    /// pending tasks, and each table's L0 stall forecast.
    #[command(after_help = "\
Examples:
  storage-admin status --service data-processor
  storage-admin status --service compactor --json")]
    Status {
        /// data-processor (every service), or only the scheduler and the workers of one
        /// kind: scheduler, replayer, flusher, compactor.
        #[arg(long, default_value = "data-processor", value_parser = ["data-processor", "scheduler", "replayer", "flusher", "compactor"])]
        service: String,
    },
    /// A service's key metrics, from its HTTP /metrics.
    ///
    /// The processor_*, wal_*, memtable_* and compaction_* series, without histogram
    /// buckets.
    #[command(after_help = "\
Examples:
  storage-admin metrics --service scheduler
  storage-admin metrics --service flusher --http flusher-0:8084 --json")]
    Metrics {
        /// scheduler, replayer, flusher or compactor: picks the default HTTP port.
        #[arg(long, default_value = "scheduler")]
        service: String,
        /// The service's HTTP address (default: the scheduler's host and the service's
        /// default port: 8082 scheduler, 8083 replayer, 8084 flusher, 8085 compactor).
        #[arg(long)]
        http: Option<String>,
    },
    /// Processor commands: the task queue.
    #[command(after_help = "\
Examples:
  storage-admin processor queue-status")]
    Processor {
        #[command(subcommand)]
        command: ProcessorCommand,
    },
    /// Tables: list, create, drop.
    #[command(after_help = "\
Examples:
  storage-admin tables list
  storage-admin tables create orders
  storage-admin tables drop orders")]
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// A table's manifest: every file of every level.
    ///
    /// Per file: id, size, key range, sequence range, entries, tombstones, and whether a
    /// running compaction holds it.
    #[command(after_help = "\
Examples:
  storage-admin manifest --table orders
  storage-admin manifest --table orders --json")]
    Manifest {
        /// The table.
        #[arg(long)]
        table: String,
    },
    /// A table's levels, one line each (the per-level view of `manifest`).
    ///
    /// Per level: files, bytes, entries, tombstones, the level's key range and the files
    /// locked by running compactions; then L0 against the file count at which writes stop,
    /// the forecast time to that stall, and the compaction debt in bytes.
    #[command(after_help = "\
Examples:
  storage-admin levels --table orders
  storage-admin levels --table orders --json")]
    Levels {
        /// The table.
        #[arg(long)]
        table: String,
    },
    /// Table statistics from the last StatisticsUpdate.
    ///
    /// Entries, tombstones, estimated live keys, files and bytes per level, key range,
    /// write and space amplification, and per column nulls, min, max, distinct values.
    #[command(after_help = "\
Examples:
  storage-admin stats --table orders
  storage-admin stats --table orders --json")]
    Stats {
        /// The table.
        #[arg(long)]
        table: String,
    },
    /// Tasks: list, show (with error history), cancel.
    #[command(after_help = "\
Examples:
  storage-admin tasks list --state failed
  storage-admin tasks show 42
  storage-admin tasks cancel 42")]
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Queue a manual compaction and wait for it to finish.
    ///
    /// Waits for the queued tasks (a progress line on stderr when it is a terminal), then
    /// prints each task's summary. Exit 0 when all succeeded, 1 when any failed or was
    /// cancelled (its error history is printed) or the timeout passed (the tasks keep
    /// running). Without --level or --force the pickers decide, and nothing is queued.
    #[command(after_help = "\
Examples:
  storage-admin compact --force --table orders                 (full compaction, waits)
  storage-admin compact --table orders --level 0 --start a --end m
  storage-admin compact --force --no-wait --json               (every table; prints the task ids)")]
    Compact {
        /// Compact even when no trigger fires: without --level, a full compaction of every
        /// level into the last one.
        #[arg(long)]
        force: bool,
        /// Table (default: every table).
        #[arg(long, default_value = "")]
        table: String,
        /// Level to compact into the next one (default: a full compaction).
        #[arg(long)]
        level: Option<u32>,
        /// Only files overlapping [START, END): first key (inclusive; default: the first).
        #[arg(long, default_value = "")]
        start: String,
        /// End key (exclusive; default: unbounded).
        #[arg(long, default_value = "")]
        end: String,
        /// START and END are hex bytes.
        #[arg(long)]
        hex: bool,
        /// Print the queued task ids and return at once.
        #[arg(long)]
        no_wait: bool,
        /// Seconds to wait for the tasks before exit code 1 (they keep running).
        #[arg(long, default_value_t = 600.0)]
        timeout: f64,
    },
    /// Flush a table's memtable now.
    ///
    /// The replayer holding the table freezes its active memtable and asks for its flush
    /// (the MemtableFlush task appears after its next heartbeat).
    #[command(after_help = "\
Examples:
  storage-admin flush orders
  storage-admin flush                 (every table)")]
    Flush {
        /// Table (default: every table).
        #[arg(default_value = "")]
        table: String,
    },
    /// What-if: the compactions the pickers would create. Dispatches nothing.
    ///
    /// Runs the pickers on the current manifest with a proposed configuration and prints
    /// the compactions, their estimated bytes and write amplification, and skipped files.
    #[command(after_help = "\
Examples:
  storage-admin plan --table orders
  storage-admin plan --table orders --strategy size_tiered --trigger-threshold 6")]
    Plan {
        /// The table.
        #[arg(long)]
        table: String,
        /// level_based or size_tiered (default: the configured one).
        #[arg(long, default_value = "")]
        strategy: String,
        /// Proposed compaction.trigger_threshold (default: the configured one).
        #[arg(long, default_value_t = 0)]
        trigger_threshold: u32,
        /// Proposed compaction.target_file_size in bytes (default: the configured one).
        #[arg(long, default_value_t = 0)]
        target_file_size: u64,
    },
    /// WAL commands: (re)assign WAL replay.
    #[command(after_help = "\
Examples:
  storage-admin wal replay --table orders
  storage-admin wal replay --table orders --from 1200")]
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Write a key; prints its sequence number once durable.
    ///
    /// One batch appended to the table's WAL on shared storage.
    #[command(after_help = "\
Examples:
  storage-admin put orders order-17 '{\"qty\":3}'
  storage-admin put orders 6b31 ff00 --hex")]
    Put {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// KEY and VALUE are hex bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Delete a key (a tombstone appended to the table's WAL); prints its sequence number.
    #[command(after_help = "\
Examples:
  storage-admin delete orders order-17")]
    Delete {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// KEY is hex bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Read a key's newest value. Exit code 1 when it does not exist.
    ///
    /// SSTs and the replayer's memtables merged; a deleted key does not exist.
    #[command(after_help = "\
Examples:
  storage-admin get orders order-17
  storage-admin get orders order-17 --json --wait 30")]
    Get {
        /// The table.
        table: String,
        /// The key.
        key: String,
        /// KEY is hex bytes, and the value is printed as hex.
        #[arg(long)]
        hex: bool,
        /// Seconds to wait for the table's replayer to hold the table and to have applied
        /// every write acknowledged before the read started.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
    /// The newest value of each key in [START, END), in key order.
    ///
    /// SSTs and the replayer's memtables merged, deleted keys left out.
    #[command(after_help = "\
Examples:
  storage-admin scan orders --limit 10
  storage-admin scan orders --start order-1 --end order-2 --json")]
    Scan {
        /// The table.
        table: String,
        /// First key (inclusive; default: the first key).
        #[arg(long, default_value = "")]
        start: String,
        /// End key (exclusive; default: unbounded).
        #[arg(long, default_value = "")]
        end: String,
        /// Keys at most.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// START and END are hex bytes, and keys and values are printed as hex.
        #[arg(long)]
        hex: bool,
        /// Seconds to wait for the table's replayer (see `get --wait`).
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
    /// Load generator: seeded writes, with an oracle of the acknowledged ones.
    ///
    /// `--keys` writes spread over the tables, in batches, several in flight per table;
    /// prints throughput and append latency. With `--oracle`, records every acknowledged
    /// write as a JSON line (`{"table","seq","key","value"|null}`).
    #[command(after_help = "\
Examples:
  storage-admin load orders --keys 10000
  storage-admin load orders users --keys 100000 --value-size 200 --overwrite-ratio 0.3 \\
      --delete-ratio 0.05 --rate 20000 --oracle /tmp/oracle.jsonl")]
    Load {
        /// Tables to write (each must exist).
        #[arg(required = true)]
        tables: Vec<String>,
        /// Writes in total, over all tables.
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
        /// Bytes per value.
        #[arg(long, default_value_t = 100)]
        value_size: usize,
        /// Fraction of writes that put to an already-written key.
        #[arg(long, default_value_t = 0.0)]
        overwrite_ratio: f64,
        /// Fraction of writes that delete an already-written key.
        #[arg(long, default_value_t = 0.0)]
        delete_ratio: f64,
        /// Writes per second over all tables (0 = unlimited).
        #[arg(long, default_value_t = 0.0)]
        rate: f64,
        /// Writes per batch (one WAL append).
        #[arg(long, default_value_t = 100)]
        batch_size: usize,
        /// Batches in flight per table.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seed of the keys and values (same seed, same writes).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// File to record acknowledged writes in (JSON lines; appended to if it exists).
        #[arg(long)]
        oracle: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ProcessorCommand {
    /// Queue depth per task type, running, waiting (with reasons) and failed tasks.
    #[command(after_help = "\
Examples:
  storage-admin processor queue-status
  storage-admin processor queue-status --json")]
    QueueStatus,
    /// Put a quarantined file back, after replacing or checking it: an SST (a poison input
    /// found by bisection) returns to compaction; a WAL segment (one replay could not read)
    /// gets repaired — a full compaction of its table merges its writes in, and it leaves
    /// the list when that commits. `queue-status` lists the quarantined files with their ids.
    #[command(after_help = "\
Examples:
  storage-admin processor release-quarantined --table orders --file-id 42")]
    ReleaseQuarantined {
        /// Table of the file.
        #[arg(long)]
        table: String,
        /// Id of the quarantined file, as `queue-status` shows it.
        #[arg(long)]
        file_id: u64,
    },
}

#[derive(Subcommand)]
enum TablesCommand {
    /// All tables: checkpoint, manifest version, the replayer holding each.
    #[command(after_help = "\
Examples:
  storage-admin tables list
  storage-admin tables list --json")]
    List,
    /// Create a table.
    ///
    /// With columns, values are JSON objects and statistics cover each column.
    #[command(after_help = "\
Examples:
  storage-admin tables create orders
  storage-admin tables create people --column age:int --column name:string")]
    Create {
        /// The table's name.
        name: String,
        /// `name:type`, type one of int, float, string, bool. Repeatable.
        #[arg(long = "column", value_parser = parse_column)]
        columns: Vec<pb::ColumnDef>,
    },
    /// Drop a table (its files become garbage for cleanup).
    #[command(after_help = "\
Examples:
  storage-admin tables drop orders")]
    Drop {
        /// The table.
        name: String,
    },
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Tasks, newest last.
    #[command(after_help = "\
Examples:
  storage-admin tasks list
  storage-admin tasks list --table orders --state failed --json")]
    List {
        /// Only this table's tasks.
        #[arg(long, default_value = "")]
        table: String,
        /// pending, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    /// One task with its attempts and error history.
    #[command(after_help = "\
Examples:
  storage-admin tasks show 42
  storage-admin tasks show 42 --json")]
    Show {
        /// The task id.
        id: u64,
    },
    /// Cancel a pending or running task (the worker is told through its heartbeat reply).
    #[command(after_help = "\
Examples:
  storage-admin tasks cancel 42")]
    Cancel {
        /// The task id.
        id: u64,
    },
}

#[derive(Subcommand)]
enum WalCommand {
    /// (Re)assign WAL replay of a table, from its checkpoint or a sequence number.
    #[command(after_help = "\
Examples:
  storage-admin wal replay --table orders
  storage-admin wal replay --table orders --from 1200")]
    Replay {
        /// Table (default: every table).
        #[arg(long, default_value = "")]
        table: String,
        /// Replay from this sequence number instead of the checkpoint.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

/// A failure, with its exit code.
struct Failure(u8, String);

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        if s.code() == tonic::Code::Unavailable {
            Failure(3, format!("scheduler unreachable: {}", s.message()))
        } else {
            Failure(1, format!("{:?}: {}", s.code(), s.message()))
        }
    }
}

/// What a command prints on stdout, and the failure it ends with, if any (a compaction
/// that failed prints its tasks' summaries, then fails).
struct Reply {
    stdout: String,
    failure: Option<Failure>,
}

impl Reply {
    fn ok(stdout: String) -> Self {
        Self {
            stdout,
            failure: None,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reply = client::init(&cli.security)
        .and_then(|()| rt.block_on(run(&cli)))
        .unwrap_or_else(|f| Reply {
            stdout: String::new(),
            failure: Some(f),
        });
    if !reply.stdout.is_empty() {
        println!("{}", reply.stdout);
    }
    match reply.failure {
        None => ExitCode::SUCCESS,
        Some(Failure(code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn metrics(cli: &Cli, service: &str, http: Option<&str>) -> Result<String, Failure> {
    let address = match http {
        Some(a) => a.to_owned(),
        None => {
            let port = match service {
                "scheduler" => 8082,
                "replayer" => 8083,
                "flusher" => 8084,
                "compactor" => 8085,
                other => {
                    return Err(Failure(
                        2,
                        format!(
                            "--service {other:?}: use scheduler, replayer, flusher or compactor"
                        ),
                    ));
                }
            };
            let host = cli
                .scheduler
                .rsplit_once(':')
                .map_or("127.0.0.1", |(h, _)| h);
            format!("{host}:{port}")
        }
    };
    let body = fetch_metrics(&address).await.map_err(|e| {
        Failure(
            3,
            format!("{service} metrics at {address} unreachable: {e}"),
        )
    })?;
    Ok(output::metrics(service, &body, cli.json))
}

/// GET /metrics over plain HTTP/1.0 (the services' HTTP port).
async fn fetch_metrics(address: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::TcpStream::connect(address),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut buf))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out"))??;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((buf.as_str(), ""));
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(
            head.lines().next().unwrap_or("no status").to_owned(),
        ));
    }
    Ok(body.to_owned())
}

async fn connect(
    address: &str,
) -> Result<pb::admin_client::AdminClient<client::AuthChannel>, Failure> {
    let channel = client::connect(address, Duration::from_secs(3), Duration::from_secs(30))
        .await
        .map_err(|e| match e {
            client::ConnectError::Address(m) => Failure(2, format!("--scheduler {m}")),
            client::ConnectError::Unreachable(m) => Failure(3, format!("scheduler {m}")),
        })?;
    Ok(pb::admin_client::AdminClient::new(channel))
}

/// `--wait` as a duration.
fn wait_flag(seconds: f64) -> Result<Duration, Failure> {
    seconds_flag("--wait", seconds)
}

/// A flag given in seconds, as a duration.
fn seconds_flag(flag: &str, seconds: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        Failure(
            2,
            format!("{flag} {seconds}: must be a number of seconds >= 0"),
        )
    })
}

async fn run(cli: &Cli) -> Result<Reply, Failure> {
    let json = cli.json;
    Ok(Reply::ok(match &cli.command {
        Command::Put {
            table,
            key,
            value,
            hex,
        } => {
            let k = data::parse_arg("key", key, *hex)?;
            let v = data::parse_arg("value", value, *hex)?;
            data::check_sizes(&k, Some(&v))?;
            data::write(cli, table, &k, Some(&v)).await?
        }
        Command::Delete { table, key, hex } => {
            let k = data::parse_arg("key", key, *hex)?;
            data::check_sizes(&k, None)?;
            data::write(cli, table, &k, None).await?
        }
        Command::Get {
            table,
            key,
            hex,
            wait,
        } => {
            let k = data::parse_arg("key", key, *hex)?;
            data::get(cli, table, &k, *hex, wait_flag(*wait)?).await?
        }
        Command::Scan {
            table,
            start,
            end,
            limit,
            hex,
            wait,
        } => {
            let s = data::parse_arg("--start", start, *hex)?;
            let e = data::parse_arg("--end", end, *hex)?;
            data::scan(cli, table, &s, &e, *limit, *hex, wait_flag(*wait)?).await?
        }
        Command::Load {
            tables,
            keys,
            value_size,
            overwrite_ratio,
            delete_ratio,
            rate,
            batch_size,
            concurrency,
            seed,
            oracle,
        } => {
            let spec = admin::LoadSpec {
                tables: tables.clone(),
                writes: *keys,
                value_size: *value_size,
                overwrite_ratio: *overwrite_ratio,
                delete_ratio: *delete_ratio,
                batch_size: *batch_size,
                concurrency: *concurrency,
                rate: *rate,
                seed: *seed,
            };
            load::load(cli, spec, oracle.as_deref()).await?
        }
        Command::Metrics { service, http } => metrics(cli, service, http.as_deref()).await?,
        Command::Status { service } => {
            let mut admin = connect(&cli.scheduler).await?;
            let mut s = admin
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner();
            if service != "data-processor" {
                s.workers
                    .retain(|w| output::worker_kind(w.kind) == *service);
            }
            let f = admin
                .get_stall_forecast(pb::GetStallForecastRequest {
                    table: String::new(),
                })
                .await?
                .into_inner();
            let probes = probe::probe_all(&s.workers).await;
            output::status(&s, &probes, &f.tables, json)
        }
        Command::Processor {
            command: ProcessorCommand::QueueStatus,
        } => {
            let mut admin = connect(&cli.scheduler).await?;
            let q = admin
                .get_queue_status(pb::GetQueueStatusRequest {})
                .await?
                .into_inner();
            let quarantined = admin
                .list_quarantined(pb::ListQuarantinedRequest {})
                .await?
                .into_inner();
            output::queue(&q, &quarantined.files, json)
        }
        Command::Processor {
            command: ProcessorCommand::ReleaseQuarantined { table, file_id },
        } => {
            connect(&cli.scheduler)
                .await?
                .release_quarantined(pb::ReleaseQuarantinedRequest {
                    table: table.clone(),
                    file_id: *file_id,
                })
                .await?;
            output::render(
                format!("released file {file_id} of table {table}"),
                serde_json::json!({ "table": table, "file_id": file_id, "released": true }),
                json,
            )
        }
        Command::Tables { command } => match command {
            TablesCommand::List => {
                let t = connect(&cli.scheduler)
                    .await?
                    .list_tables(pb::ListTablesRequest {})
                    .await?
                    .into_inner();
                output::tables(&t.tables, json)
            }
            TablesCommand::Create { name, columns } => {
                let t = connect(&cli.scheduler)
                    .await?
                    .create_table(pb::CreateTableRequest {
                        name: name.clone(),
                        columns: columns.clone(),
                    })
                    .await?
                    .into_inner();
                output::tables(&[t], json)
            }
            TablesCommand::Drop { name } => {
                connect(&cli.scheduler)
                    .await?
                    .drop_table(pb::DropTableRequest { name: name.clone() })
                    .await?;
                output::message(&format!("table {name} dropped"), json)
            }
        },
        Command::Manifest { table } => {
            let m = connect(&cli.scheduler)
                .await?
                .get_manifest(pb::GetManifestRequest {
                    table: table.clone(),
                })
                .await?
                .into_inner();
            output::manifest(&m, json)
        }
        Command::Levels { table } => {
            let mut admin = connect(&cli.scheduler).await?;
            let m = admin
                .get_manifest(pb::GetManifestRequest {
                    table: table.clone(),
                })
                .await?
                .into_inner();
            let f = admin
                .get_stall_forecast(pb::GetStallForecastRequest {
                    table: table.clone(),
                })
                .await?
                .into_inner();
            output::levels(&m, f.tables.iter().find(|f| f.table == *table), json)
        }
        Command::Stats { table } => {
            let s = connect(&cli.scheduler)
                .await?
                .get_table_stats(pb::GetTableStatsRequest {
                    table: table.clone(),
                })
                .await?
                .into_inner();
            output::stats(&s, json)
        }
        Command::Tasks { command } => match command {
            TasksCommand::List { table, state } => {
                let state = match state.as_deref() {
                    None => 0,
                    Some(s) => output::parse_state(s)
                        .ok_or_else(|| Failure(2, format!("--state {s:?}: use pending, running, succeeded, failed or cancelled")))?
                        as i32,
                };
                let t = connect(&cli.scheduler)
                    .await?
                    .list_tasks(pb::ListTasksRequest {
                        table: table.clone(),
                        state,
                        page_size: 1000,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                output::tasks(&t.tasks, json)
            }
            TasksCommand::Show { id } => {
                let t = connect(&cli.scheduler)
                    .await?
                    .get_task(pb::GetTaskRequest { task_id: *id })
                    .await?
                    .into_inner();
                output::task(&t, json)
            }
            TasksCommand::Cancel { id } => {
                let t = connect(&cli.scheduler)
                    .await?
                    .cancel_task(pb::CancelTaskRequest { task_id: *id })
                    .await?
                    .into_inner();
                output::task(&t, json)
            }
        },
        Command::Compact {
            force,
            table,
            level,
            start,
            end,
            hex,
            no_wait,
            timeout,
        } => {
            let args = compact::CompactArgs {
                table: table.clone(),
                level: *level,
                start: data::parse_arg("--start", start, *hex)?,
                end: data::parse_arg("--end", end, *hex)?,
                force: *force,
                wait: !*no_wait,
                timeout: seconds_flag("--timeout", *timeout)?,
            };
            return compact::compact(cli, args).await;
        }
        Command::Flush { table } => {
            let r = connect(&cli.scheduler)
                .await?
                .trigger_flush(pb::TriggerFlushRequest {
                    table: table.clone(),
                })
                .await?
                .into_inner();
            output::trigger(&r, json)
        }
        Command::Plan {
            table,
            strategy,
            trigger_threshold,
            target_file_size,
        } => {
            let p = connect(&cli.scheduler)
                .await?
                .plan_compaction(pb::PlanCompactionRequest {
                    table: table.clone(),
                    strategy: strategy.clone(),
                    trigger_threshold: *trigger_threshold,
                    target_file_size: *target_file_size,
                })
                .await?
                .into_inner();
            output::plan(&p, json)
        }
        Command::Wal {
            command: WalCommand::Replay { table, from },
        } => {
            let r = connect(&cli.scheduler)
                .await?
                .trigger_wal_replay(pb::TriggerWalReplayRequest {
                    table: table.clone(),
                    from_seq: *from,
                })
                .await?
                .into_inner();
            output::trigger(&r, json)
        }
    }))
}

/// `name:type` of `tables create --column`.
fn parse_column(s: &str) -> Result<pb::ColumnDef, String> {
    let (name, kind) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected name:type, e.g. age:int"))?;
    if name.is_empty() {
        return Err(format!("{s:?}: the column name is empty"));
    }
    if !matches!(kind, "int" | "float" | "string" | "bool") {
        return Err(format!(
            "{s:?}: unknown type {kind:?} (use int, float, string or bool)"
        ));
    }
    Ok(pb::ColumnDef {
        name: name.to_owned(),
        r#type: kind.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every command and subcommand, with its path (`["tables", "create"]`).
    fn walk(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let mut p = path.clone();
            p.push(sub.get_name().to_owned());
            out.push((p.clone(), sub.clone()));
            walk(sub, p, out);
        }
    }

    #[test]
    fn every_command_has_help_with_examples_of_itself() {
        let mut root = Cli::command();
        root.build();
        let mut all = Vec::new();
        walk(&root, Vec::new(), &mut all);
        let names: Vec<String> = all.iter().map(|(p, _)| p.join(" ")).collect();
        // The tree is what the issue asks for (a new command is checked too).
        for must in [
            "status",
            "metrics",
            "processor queue-status",
            "processor release-quarantined",
            "tables list",
            "tables create",
            "tables drop",
            "manifest",
            "levels",
            "stats",
            "tasks list",
            "tasks show",
            "tasks cancel",
            "compact",
            "flush",
            "plan",
            "wal replay",
            "put",
            "delete",
            "get",
            "scan",
            "load",
        ] {
            assert!(
                names.iter().any(|n| n == must),
                "no command {must:?} in {names:?}"
            );
        }
        for (path, mut cmd) in all {
            if path.iter().any(|n| n == "help") {
                continue;
            }
            let help = cmd.render_long_help().to_string();
            let usage = format!("storage-admin {}", path.join(" "));
            assert!(
                help.contains("Examples:"),
                "{usage} --help has no examples:\n{help}"
            );
            assert!(
                help.lines()
                    .skip_while(|l| !l.starts_with("Examples:"))
                    .any(|l| l.trim_start().starts_with(&format!("{usage} "))),
                "{usage} --help has no example of itself with arguments:\n{help}"
            );
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "{usage} has no one-line description");
        }
    }

    #[test]
    fn top_level_help_lists_the_exit_codes() {
        let help = Cli::command().render_long_help().to_string();
        for code in [
            "0  success",
            "1  the scheduler refused",
            "2  usage",
            "3  unreachable",
        ] {
            assert!(help.contains(code), "no exit code {code:?} in:\n{help}");
        }
        assert!(help.contains("Examples:"), "{help}");
    }

    #[test]
    fn compact_takes_a_key_range_and_waits_by_default() {
        let cli = Cli::try_parse_from([
            "storage-admin",
            "compact",
            "--table",
            "t",
            "--level",
            "0",
            "--start",
            "a",
            "--end",
            "m",
        ])
        .expect("parses");
        match cli.command {
            Command::Compact {
                start,
                end,
                no_wait,
                timeout,
                ..
            } => {
                assert_eq!((start.as_str(), end.as_str()), ("a", "m"));
                assert!(!no_wait);
                assert_eq!(timeout, 600.0);
            }
            _ => panic!("not compact"),
        }
    }

    #[test]
    fn an_unknown_status_service_is_a_usage_error() {
        let e = Cli::try_parse_from(["storage-admin", "status", "--service", "nosuch"])
            .err()
            .expect("refused");
        assert_eq!(e.exit_code(), 2);
    }
}
