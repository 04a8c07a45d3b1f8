//! The compactor: a stateless worker that runs Compaction attempts (merging input SSTs into
//! output SSTs) and the Cleanup and StatisticsUpdate work items, reporting each result to
//! the scheduler with CompleteTask.

use std::sync::Arc;
use std::time::Instant;

use proto::v1::compactor_server::{Compactor, CompactorServer};
use proto::v1::{WorkerKind, WorkerStatus, WorkerStatusRequest};
use runtime::ServiceContext;
use runtime::worker::{RunningAttempts, service_info, spawn_heartbeats};
use tokio_stream::wrappers::TcpListenerStream;
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
    let heartbeats = spawn_heartbeats(&ctx, WorkerKind::Compactor, attempts.clone())?;
    let (health, router) = runtime::grpc::router(&ctx.config.server)?;
    health.set_serving::<CompactorServer<CompactorApi>>().await;
    let api = CompactorApi {
        attempts,
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
    };
    router
        .add_service(CompactorServer::new(api))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(ctx.grpc_listener),
            ctx.shutdown.clone().cancelled_owned(),
        )
        .await?;
    heartbeats.abort();
    Ok(())
}
