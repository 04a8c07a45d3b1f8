//! Runs both compaction pickers over the same synthetic write streams and prints write and
//! space amplification: `cargo run -p lsm --example compaction_sim --release`.
//!
//! The scenarios are the ones `tests/compaction_sim.rs` asserts bounds on.

use lsm::compaction::sim::{SimReport, scenarios, simulate};

fn main() {
    let mut reports = Vec::new();
    for config in scenarios() {
        match simulate(&config) {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    print!("{}", SimReport::table(&reports));
}
