//! `dp-bench`: workloads measured through the real services, printed as a table and
//! optionally written as JSON. Each workload lives in its own module.

use clap::{Parser, Subcommand};

/// Benchmarks of data-processor.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    workload: Workload,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Workload {
    /// P6: no-op tasks dispatched and committed per second through real gRPC with fake
    /// workers, and dispatch latency at a fixed rate.
    ///
    /// Example: `dp-bench scheduler --tasks 5000 --rate 1000 --seconds 5`
    Scheduler(bench::scheduler::Options),
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        match args.workload {
            Workload::Scheduler(o) => bench::scheduler::run(o).await,
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
    }
    Ok(())
}
