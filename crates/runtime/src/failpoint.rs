//! Named crash points, on the `fail-parallel` crate (as SlateDB uses it), configured for a
//! real process by its environment: `DP_FAILPOINTS="name=actions;name=actions"` (`,` also
//! separates points). `actions` is fail-parallel's syntax (`[p%][cnt*]task[(arg)]`, chained
//! with `->`: e.g. `2*off->abort` lets the point pass twice and crashes on the third hit),
//! plus two tasks of our own:
//!
//! - `abort`: log `failpoint NAME reached: aborting` and die at once (SIGABRT, no unwinding,
//!   no destructors: as abrupt as a SIGKILL at that line);
//! - `pause`: log `failpoint NAME reached: pausing until killed` and never go on (an async
//!   point waits on a pending future; a synchronous one parks its thread), so a test can
//!   SIGKILL the process at exactly that point.
//!
//! fail-parallel's own tasks (`sleep(ms)`, `panic`, `off`, ...) work too. Unset (the normal
//! case) every point is a lookup in an empty registry.
//!
//! Every point is listed in [`POINTS`] with the step it stops; the crash-at-each-point test
//! (`tests/e2e/crash_points.rs`) crashes at each in turn.

use std::sync::{Arc, OnceLock};

use fail_parallel::FailPointRegistry;

/// Every named crash point: (name, the step it interrupts).
pub const POINTS: &[(&str, &str)] = &[
    (
        "flusher.after_upload",
        "flusher: the SST is uploaded, CompleteTask not sent yet",
    ),
    (
        "flusher.before_complete",
        "flusher: about to send CompleteTask",
    ),
    (
        "flusher.after_complete",
        "flusher: the scheduler accepted the flush",
    ),
    (
        "compactor.after_output_upload",
        "compactor: one output SST is uploaded (of possibly several)",
    ),
    (
        "compactor.before_complete",
        "compactor: every output uploaded, about to send CompleteTask",
    ),
    (
        "compactor.after_complete",
        "compactor: the scheduler accepted the compaction",
    ),
    (
        "scheduler.commit.before_write",
        "scheduler: a completion is applied in memory, not yet written to the catalog",
    ),
    (
        "scheduler.commit.after_write",
        "scheduler: the completion is durable in the catalog, the reply not sent",
    ),
    (
        "scheduler.checkpoint.before_write",
        "scheduler: a flush commit advances the checkpoint in memory, not yet written",
    ),
    (
        "scheduler.checkpoint.after_write",
        "scheduler: the advanced checkpoint is durable, the reply not sent",
    ),
    (
        "scheduler.cleanup.after_list",
        "scheduler: storage listed for Cleanup, no task queued yet",
    ),
    (
        "compactor.cleanup.between_deletes",
        "compactor: a Cleanup deleted one object, the rest not yet",
    ),
];

/// Where a crash point's actions come from in a process's environment.
pub const ENV: &str = "DP_FAILPOINTS";

const ABORT: &str = "abort";
const PAUSE: &str = "pause";

/// Why `DP_FAILPOINTS` could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailpointError {
    #[error("DP_FAILPOINTS: {item:?} is not name=actions")]
    Malformed { item: String },
    #[error("DP_FAILPOINTS: failpoint {name:?}: {reason}")]
    BadActions { name: String, reason: String },
}

/// Translates our tasks (`abort`, `pause`) in an action chain into fail-parallel's
/// `return(abort)` / `return(pause)`, which [`hit`] acts on.
fn translate(actions: &str) -> String {
    actions
        .split("->")
        .map(|action| {
            let action = action.trim();
            // `[p%][cnt*]task`: the task is what follows the last `*` or `%`.
            let cut = action.rfind(['*', '%']).map_or(0, |i| i + 1);
            let (prefix, task) = action.split_at(cut);
            match task {
                ABORT | PAUSE => format!("{prefix}return({task})"),
                _ => action.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("->")
}

/// Builds a registry from a `DP_FAILPOINTS` value; errors name the item.
pub fn registry_from(spec: &str) -> Result<Arc<FailPointRegistry>, FailpointError> {
    let registry = Arc::new(FailPointRegistry::new());
    for item in spec.split([';', ',']) {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let Some((name, actions)) = item.split_once('=') else {
            return Err(FailpointError::Malformed {
                item: item.to_owned(),
            });
        };
        let name = name.trim();
        fail_parallel::cfg(registry.clone(), name, &translate(actions)).map_err(|reason| {
            FailpointError::BadActions {
                name: name.to_owned(),
                reason,
            }
        })?;
    }
    Ok(registry)
}

fn registry() -> Arc<FailPointRegistry> {
    static REGISTRY: OnceLock<Arc<FailPointRegistry>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let spec = std::env::var(ENV).unwrap_or_default();
            registry_from(&spec).unwrap_or_else(|e| {
                // A test asked for a crash point it would never get: fail loudly at once.
                eprintln!("error: {e}");
                tracing::error!("{e}");
                std::process::exit(64);
            })
        })
        .clone()
}

/// Checks `DP_FAILPOINTS` at start (exit 64 on a malformed value, like a bad config key).
pub fn init() {
    let _ = registry();
}

/// What a reached point asks for, if anything (`None`: go on).
async fn eval_async(registry: Arc<FailPointRegistry>, name: &str) -> Option<Option<String>> {
    fail_parallel::fail_point_async!(registry, name, Some);
    None
}

fn eval(registry: Arc<FailPointRegistry>, name: &str) -> Option<Option<String>> {
    fail_parallel::fail_point!(registry, name, Some);
    None
}

/// Acts on a `return(...)` task; returns when the point lets execution go on.
fn act(name: &str, arg: Option<&str>) -> bool {
    match arg {
        Some(ABORT) => {
            tracing::warn!("failpoint {name} reached: aborting");
            eprintln!("failpoint {name} reached: aborting");
            std::process::abort();
        }
        Some(PAUSE) => {
            tracing::warn!("failpoint {name} reached: pausing until killed");
            eprintln!("failpoint {name} reached: pausing until killed");
            false
        }
        other => {
            tracing::warn!(failpoint = name, arg = ?other, "failpoint returned; ignored");
            true
        }
    }
}

/// Crash point `name` in async code: acts if configured, returns at once otherwise.
pub async fn hit(name: &str) {
    if let Some(arg) = eval_async(registry(), name).await
        && !act(name, arg.as_deref())
    {
        std::future::pending::<()>().await;
    }
}

/// Crash point `name` in synchronous code (a blocking thread, under a lock).
pub fn hit_sync(name: &str) {
    if let Some(arg) = eval(registry(), name)
        && !act(name, arg.as_deref())
    {
        loop {
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_tasks_become_returns_and_others_pass_through() {
        assert_eq!(translate("abort"), "return(abort)");
        assert_eq!(translate("pause"), "return(pause)");
        assert_eq!(translate("2*off->abort"), "2*off->return(abort)");
        assert_eq!(translate("50%abort"), "50%return(abort)");
        assert_eq!(translate("sleep(10)"), "sleep(10)");
    }

    #[test]
    fn specs_configure_the_registry_and_bad_ones_name_the_item() {
        let r = registry_from("a=abort; b = 1*off->pause,c=sleep(1)").expect("valid");
        let mut listed = fail_parallel::list(r.clone());
        listed.sort();
        assert_eq!(
            listed,
            vec![
                ("a".to_owned(), "return(abort)".to_owned()),
                ("b".to_owned(), "1*off->return(pause)".to_owned()),
                ("c".to_owned(), "sleep(1)".to_owned()),
            ]
        );
        // The second hit of b pauses, the first passes.
        assert_eq!(eval(r.clone(), "b"), None);
        assert_eq!(eval(r.clone(), "b"), Some(Some("pause".to_owned())));
        assert_eq!(eval(r, "unconfigured"), None);
        assert!(registry_from("").is_ok());
        assert_eq!(
            registry_from("x=explode").expect_err("bad task"),
            FailpointError::BadActions {
                name: "x".into(),
                reason: "unrecognized command \"explode\"".into()
            }
        );
        assert!(matches!(
            registry_from("nonsense"),
            Err(FailpointError::Malformed { .. })
        ));
    }

    #[test]
    fn every_point_has_a_unique_name() {
        let names: std::collections::BTreeSet<_> = POINTS.iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), POINTS.len());
    }
}
