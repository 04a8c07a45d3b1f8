//! The compactor: a stateless worker that runs Compaction attempts (merging input SSTs into
//! output SSTs) and the Cleanup and StatisticsUpdate work items, reporting each result to
//! the scheduler with CompleteTask.

use std::sync::Arc;
use std::time::Instant;

use proto::v1::compactor_server::{Compactor, CompactorServer};
use proto::v1::{WorkerKind, WorkerStatus, WorkerStatusRequest};
use runtime::ServiceContext;
use runtime::worker::{RunningAttempts, serve_worker, service_info};
use tonic::{Request, Response, Status};

struct CompactorApi {
    attempts: Arc<RunningAttempts>,
    advertised_address: String,
    started_at: Instant,
}

#[tonic::async_trait]
impl Compactor for CompactorApi {
    async fn get_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        Ok(Response::new(WorkerStatus {
            info: Some(service_info(
                "compactor",
                &self.advertised_address,
                self.started_at,
                &self.attempts,
            )),
            worker_id: self.attempts.worker_id(),
        }))
    }
}

/// Runs the compactor until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let attempts = RunningAttempts::new(ctx.config.processor.worker_count);
    let api = CompactorApi {
        attempts: attempts.clone(),
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
    };
    serve_worker(
        ctx,
        WorkerKind::Compactor,
        attempts,
        CompactorServer::new(api),
    )
    .await
}
