//! The flusher binary: config, telemetry and signals come from `runtime::launch`.

use std::process::ExitCode;

use runtime::{ServiceKind, launch, run_fn};

fn main() -> ExitCode {
    launch(
        "flusher",
        vec![(ServiceKind::Flusher, run_fn(flusher::run))],
    )
}
