//! P6 under `cargo bench`: the scheduler's dispatch throughput and latency (see
//! `bench::scheduler`). Prints the result as JSON.

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the workload takes no arguments here.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(bench::scheduler::run(bench::scheduler::Options {
        tasks: 5000,
        concurrency: 64,
        workers: 4,
        rate: 1000,
        seconds: 5,
    }))?;
    println!("P6 scheduler: {}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
