//! The replayer binary: config, telemetry and signals come from `runtime::launch`.

use std::process::ExitCode;

use runtime::{ServiceKind, launch, run_fn};

fn main() -> ExitCode {
    launch(
        "replayer",
        vec![(ServiceKind::Replayer, run_fn(replayer::run))],
    )
}
