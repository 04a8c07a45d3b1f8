//! The last step of every worker's attempt: CompleteTask, retried with backoff while the
//! scheduler is unreachable. Shared by the flusher, the compactor and the replayer.
//!
//! A worker never deletes what it reported: accepted, its files are in the manifest;
//! refused (FAILED_PRECONDITION: a stale attempt, a cancelled or reassigned task, inputs
//! that changed), they are orphans that Cleanup deletes after its grace period. Only the
//! scheduler knows which, so only it decides.

use std::time::Duration;

use proto::v1 as pb;
use proto::v1::scheduler_client::SchedulerClient;
use tokio_util::sync::CancellationToken;

use crate::grpc::TracedChannel;

/// Tries of CompleteTask before giving up (the lease then expires and the task is retried).
const MAX_TRIES: u32 = 8;
/// First retry delay; doubles per try up to [`MAX_BACKOFF`] (about 11 s over all tries).
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a CompleteTask call ended.
#[derive(Debug)]
pub enum Reported {
    Accepted,
    /// The scheduler refused the completion; retrying cannot help.
    Refused(tonic::Status),
    /// Every try failed with a transient error.
    GaveUp(tonic::Status),
    /// The attempt was cancelled while retrying.
    Cancelled,
}

/// What to do after a failed try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Retry,
    Stop,
}

/// Transient: the scheduler is down, restarting, shedding load, the call timed out, or its
/// connection broke under it (CANCELLED: the scheduler never answers that itself).
/// Anything else is the scheduler's answer (FAILED_PRECONDITION for a stale attempt,
/// NOT_FOUND for a forgotten task, INVALID_ARGUMENT for a bad report).
fn after_failure(code: tonic::Code) -> Next {
    match code {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::ResourceExhausted
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => Next::Retry,
        _ => Next::Stop,
    }
}

/// Delay before try `try_index + 1` (`try_index` counts failed tries from 0).
fn backoff(try_index: u32) -> Duration {
    FIRST_BACKOFF
        .saturating_mul(1 << try_index.min(16))
        .min(MAX_BACKOFF)
}

/// Calls CompleteTask until it is accepted, refused, or [`MAX_TRIES`] transient failures
/// pass. A retry after a lost reply may be refused although the first call committed: the
/// caller logs a refusal as such, never as data loss.
pub async fn complete_task(
    mut client: SchedulerClient<TracedChannel>,
    request: pb::CompleteTaskRequest,
    cancel: &CancellationToken,
) -> Reported {
    let mut try_index = 0;
    loop {
        let status = match client.complete_task(request.clone()).await {
            Ok(_) => return Reported::Accepted,
            Err(status) => status,
        };
        if after_failure(status.code()) == Next::Stop {
            return Reported::Refused(status);
        }
        if try_index + 1 >= MAX_TRIES {
            return Reported::GaveUp(status);
        }
        tracing::warn!(
            code = ?status.code(),
            error = %status.message(),
            "CompleteTask failed; retrying"
        );
        // Biased (a cancellation wins a tie): the same outcome on every run of a simulation.
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Reported::Cancelled,
            _ = tokio::time::sleep(backoff(try_index)) => {}
        }
        try_index += 1;
    }
}

/// CompleteTask for a failed attempt.
pub fn failure(
    task_id: u64,
    attempt: u32,
    worker_id: u64,
    error: pb::TaskError,
) -> pb::CompleteTaskRequest {
    pb::CompleteTaskRequest {
        task_id,
        attempt,
        worker_id,
        outcome: Some(pb::complete_task_request::Outcome::Error(error)),
    }
}

/// Logs a report that did not land (nothing for an accepted one).
pub fn log_unreported(reported: &Reported) {
    match reported {
        Reported::Refused(status) => tracing::warn!(
            code = ?status.code(),
            error = %status.message(),
            "scheduler refused the report (a stale attempt?)"
        ),
        Reported::GaveUp(status) => tracing::warn!(
            code = ?status.code(),
            error = %status.message(),
            "could not reach the scheduler to report; it retries the task once the lease expires"
        ),
        Reported::Cancelled => tracing::info!("attempt cancelled while reporting"),
        Reported::Accepted => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_failures_are_retried() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Unknown,
            // A connection that broke under the call (seen in the network simulation).
            Code::Cancelled,
        ] {
            assert_eq!(after_failure(code), Next::Retry, "{code:?}");
        }
        for code in [
            Code::FailedPrecondition,
            Code::NotFound,
            Code::InvalidArgument,
            Code::Internal,
            Code::PermissionDenied,
        ] {
            assert_eq!(after_failure(code), Next::Stop, "{code:?}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let delays: Vec<u64> = (0..MAX_TRIES)
            .map(|i| backoff(i).as_millis() as u64)
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
