//! The flusher: a stateless worker that, for each MemtableFlush attempt, streams a frozen
//! memtable from the replayer holding it, writes it as L0 SSTs, and reports the files to
//! the scheduler with CompleteTask.

use std::sync::Arc;
use std::time::Instant;

use proto::v1::flusher_server::{Flusher, FlusherServer};
use proto::v1::{WorkerKind, WorkerStatus, WorkerStatusRequest};
use runtime::ServiceContext;
use runtime::worker::{RunningAttempts, serve_worker, service_info};
use tonic::{Request, Response, Status};

struct FlusherApi {
    attempts: Arc<RunningAttempts>,
    advertised_address: String,
    started_at: Instant,
}

#[tonic::async_trait]
impl Flusher for FlusherApi {
    async fn get_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<WorkerStatus>, Status> {
        Ok(Response::new(WorkerStatus {
            info: Some(service_info(
                "flusher",
                &self.advertised_address,
                self.started_at,
                &self.attempts,
            )),
            worker_id: self.attempts.worker_id(),
        }))
    }
}

/// Runs the flusher until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let attempts = RunningAttempts::new(ctx.config.processor.worker_count);
    let api = FlusherApi {
        attempts: attempts.clone(),
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
    };
    serve_worker(ctx, WorkerKind::Flusher, attempts, FlusherServer::new(api)).await
}
