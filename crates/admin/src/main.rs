//! `storage-admin`: the operator CLI. Human output by default, `--json` for scripts; exit
//! codes scripts can use: 0 ok, 1 the scheduler refused (the status is printed) or the
//! operation failed (the reason is printed), 2 usage, 3 scheduler (or replayer) unreachable.
//!
//! Commands:
//!
//! - cluster: `status`, `metrics`, `processor queue-status`, `tables list|create|drop`,
//!   `manifest`, `tasks list|show|cancel`, `compact`, `plan`, `wal replay`. Each is one call
//!   (or a few) of the scheduler's Admin API — the same methods grpcurl reaches through
//!   reflection.
//! - data: `put`, `delete` (one write batch appended to the table's WAL on shared storage,
//!   printed with its sequence number once durable), `get`, `scan` (the newest version of
//!   each key, SSTs and the replayer's memtables merged: see `data`), and `load` (a seeded
//!   load generator with an oracle of acknowledged writes: see `load`). They reach shared
//!   storage at `--storage-url`, or at the URL the scheduler reports.
//!
//! The pure parts (oracle format and reader, read merge, workload) are the `admin` library.

mod data;
mod load;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// Operate a data-processor cluster.
#[derive(Parser)]
#[command(version, about, long_about = None)]
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scheduler, workers and task counts.
    ///
    /// Example: `storage-admin status --service data-processor`
    Status {
        /// Accepted for compatibility; the status always covers every service.
        #[arg(long, default_value = "data-processor")]
        service: String,
    },
    /// A service's key metrics, readable (from its HTTP /metrics).
    ///
    /// Example: `storage-admin metrics --service scheduler` (or `--http host:8084`)
    Metrics {
        /// scheduler, replayer, flusher or compactor: picks the default HTTP port.
        #[arg(long, default_value = "scheduler")]
        service: String,
        /// The service's HTTP address (default: the scheduler's host and the service's
        /// default port).
        #[arg(long)]
        http: Option<String>,
    },
    /// Processor commands.
    Processor {
        #[command(subcommand)]
        command: ProcessorCommand,
    },
    /// Tables: list, create, drop.
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// A table's levels and files.
    ///
    /// Example: `storage-admin manifest --table orders`
    Manifest {
        #[arg(long)]
        table: String,
    },
    /// Table statistics from the last StatisticsUpdate: entries, tombstones, estimated live
    /// keys, files and bytes per level, key range, write and space amplification, columns.
    ///
    /// Example: `storage-admin stats --table orders`
    Stats {
        #[arg(long)]
        table: String,
    },
    /// Tasks: list, show (with error history), cancel.
    Tasks {
        #[command(subcommand)]
        command: TasksCommand,
    },
    /// Queue a compaction now.
    ///
    /// Example: `storage-admin compact --force --table orders --level 0`
    Compact {
        /// Compact even when no trigger fires.
        #[arg(long)]
        force: bool,
        /// Table (default: every table).
        #[arg(long, default_value = "")]
        table: String,
        /// Level to compact into the next one (default: a full compaction).
        #[arg(long)]
        level: Option<u32>,
    },
    /// Flush now: the replayer holding the table freezes its active memtable and asks for
    /// its flush (the MemtableFlush task appears after its next heartbeat).
    ///
    /// Example: `storage-admin flush orders` (no table: every table)
    Flush {
        /// Table (default: every table).
        #[arg(default_value = "")]
        table: String,
    },
    /// What-if: the compactions the pickers would create on the current manifest with a
    /// proposed configuration, with estimates and skipped files. Dispatches nothing.
    ///
    /// Example: `storage-admin plan --table orders --strategy size_tiered --trigger-threshold 6`
    Plan {
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
    /// WAL commands.
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// Write a key: one batch appended to the table's WAL; prints its sequence number once
    /// it is durable.
    ///
    /// Example: `storage-admin put orders order-17 '{"qty":3}'`
    Put {
        table: String,
        key: String,
        value: String,
        /// KEY and VALUE are hex bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Delete a key (a tombstone appended to the table's WAL); prints its sequence number.
    ///
    /// Example: `storage-admin delete orders order-17`
    Delete {
        table: String,
        key: String,
        /// KEY is hex bytes.
        #[arg(long)]
        hex: bool,
    },
    /// Read a key's newest value (SSTs and the replayer's memtables merged). Exit code 1
    /// when the key does not exist or is deleted.
    ///
    /// Example: `storage-admin get orders order-17`
    Get {
        table: String,
        key: String,
        /// KEY is hex bytes, and the value is printed as hex.
        #[arg(long)]
        hex: bool,
        /// Seconds to wait for the table's replayer to hold the table and to have applied
        /// every write acknowledged before the read started.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
    /// The newest value of each key in [START, END), in key order (SSTs and the replayer's
    /// memtables merged, deleted keys left out).
    ///
    /// Example: `storage-admin scan orders --start order-1 --end order-2 --limit 10`
    Scan {
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
    /// Load generator: `--keys` seeded writes spread over the tables, in batches, several
    /// in flight per table; prints throughput and append latency. With `--oracle`, records
    /// every acknowledged write as a JSON line (`{"table","seq","key","value"|null}`).
    ///
    /// Example: `storage-admin load orders users --keys 100000 --value-size 200
    /// --overwrite-ratio 0.3 --delete-ratio 0.05 --rate 20000 --oracle /tmp/oracle.jsonl`
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
        /// File to record acknowledged writes in (JSON lines; replaced if it exists).
        #[arg(long)]
        oracle: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ProcessorCommand {
    /// Queue depth per task type, running, waiting (with reasons) and failed tasks.
    ///
    /// Example: `storage-admin processor queue-status`
    QueueStatus,
}

#[derive(Subcommand)]
enum TablesCommand {
    /// All tables.
    List,
    /// Create a table. Example: `storage-admin tables create orders`, or with columns
    /// (values are then JSON objects and statistics cover each column):
    /// `storage-admin tables create people --column age:int --column name:string`
    Create {
        name: String,
        /// `name:type`, type one of int, float, string, bool. Repeatable.
        #[arg(long = "column", value_parser = parse_column)]
        columns: Vec<pb::ColumnDef>,
    },
    /// Drop a table (its files become garbage for cleanup).
    Drop { name: String },
}

#[derive(Subcommand)]
enum TasksCommand {
    /// Tasks, newest last. Example: `storage-admin tasks list --state failed`
    List {
        #[arg(long, default_value = "")]
        table: String,
        /// pending, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
    },
    /// One task with its attempts and error history.
    Show { id: u64 },
    /// Cancel a pending or running task.
    Cancel { id: u64 },
}

#[derive(Subcommand)]
enum WalCommand {
    /// (Re)assign WAL replay. Example: `storage-admin wal replay --table orders`
    Replay {
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
    match rt.block_on(run(&cli)) {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(Failure(code, message)) => {
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

async fn connect(address: &str) -> Result<pb::admin_client::AdminClient<Channel>, Failure> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| Failure(2, format!("--scheduler {address:?}: {e}")))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure(3, format!("scheduler unreachable at {address}: {e}")))?;
    Ok(pb::admin_client::AdminClient::new(channel))
}

/// `--wait` as a duration.
fn wait_flag(seconds: f64) -> Result<Duration, Failure> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        Failure(
            2,
            format!("--wait {seconds}: must be a number of seconds >= 0"),
        )
    })
}

async fn run(cli: &Cli) -> Result<String, Failure> {
    let json = cli.json;
    Ok(match &cli.command {
        Command::Put {
            table,
            key,
            value,
            hex,
        } => {
            let k = data::parse_arg("key", key, *hex)?;
            let v = data::parse_arg("value", value, *hex)?;
            data::write(cli, table, &k, Some(&v)).await?
        }
        Command::Delete { table, key, hex } => {
            let k = data::parse_arg("key", key, *hex)?;
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
        Command::Status { .. } => {
            let mut admin = connect(&cli.scheduler).await?;
            let s = admin
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner();
            let f = admin
                .get_stall_forecast(pb::GetStallForecastRequest {
                    table: String::new(),
                })
                .await?
                .into_inner();
            output::status(&s, &f.tables, json)
        }
        Command::Processor {
            command: ProcessorCommand::QueueStatus,
        } => {
            let q = connect(&cli.scheduler)
                .await?
                .get_queue_status(pb::GetQueueStatusRequest {})
                .await?
                .into_inner();
            output::queue(&q, json)
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
        } => {
            let r = connect(&cli.scheduler)
                .await?
                .trigger_compaction(pb::TriggerCompactionRequest {
                    table: table.clone(),
                    level: *level,
                    range: None,
                    force: *force,
                })
                .await?
                .into_inner();
            output::trigger(&r, json)
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
    })
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
