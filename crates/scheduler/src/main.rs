//! The scheduler binary: config, telemetry and signals come from `runtime::launch`.

use std::process::ExitCode;

use runtime::{ServiceKind, launch, run_fn};

fn main() -> ExitCode {
    launch(
        "scheduler",
        vec![(ServiceKind::Scheduler, run_fn(scheduler::run))],
    )
}
