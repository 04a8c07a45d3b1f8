//! The compactor binary: config, telemetry and signals come from `runtime::launch`.

use std::process::ExitCode;

use runtime::{ServiceKind, launch, run_fn};

fn main() -> ExitCode {
    launch(
        "compactor",
        vec![(ServiceKind::Compactor, run_fn(compactor::run))],
    )
}
