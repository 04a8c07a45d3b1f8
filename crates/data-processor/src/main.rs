//! `data-processor`: the scheduler, a replayer, a flusher and a compactor in one process,
//! talking real gRPC over loopback, with local storage under `./data` by default.

use std::process::ExitCode;

use runtime::{ServiceKind, launch, run_fn};

fn main() -> ExitCode {
    launch(
        "data-processor",
        vec![
            (ServiceKind::Scheduler, run_fn(scheduler::run)),
            (ServiceKind::Replayer, run_fn(replayer::run)),
            (ServiceKind::Flusher, run_fn(flusher::run)),
            (ServiceKind::Compactor, run_fn(compactor::run)),
        ],
    )
}
