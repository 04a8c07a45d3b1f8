//! The replayer: owns the memtables of the tables the scheduler assigns to it. For each
//! table it replays the WAL from the flushed checkpoint, keeps tailing new segments,
//! freezes full memtables and asks for their flush, serves frozen memtables to flushers and
//! unflushed data to readers.

use std::sync::Arc;
use std::time::Instant;

use proto::v1::replayer_server::{Replayer, ReplayerServer};
use proto::v1::{ReplayerStatus, WorkerKind, WorkerStatusRequest};
use runtime::ServiceContext;
use runtime::worker::{RunningAttempts, service_info, spawn_heartbeats};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

struct ReplayerApi {
    attempts: Arc<RunningAttempts>,
    advertised_address: String,
    started_at: Instant,
}

#[tonic::async_trait]
impl Replayer for ReplayerApi {
    async fn get_status(
        &self,
        _request: Request<WorkerStatusRequest>,
    ) -> Result<Response<ReplayerStatus>, Status> {
        Ok(Response::new(ReplayerStatus {
            info: Some(service_info(
                "replayer",
                &self.advertised_address,
                self.started_at,
                &self.attempts,
            )),
            tables: Vec::new(),
        }))
    }
}

/// Runs the replayer until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    let attempts = RunningAttempts::new(ctx.config.wal_replay.max_parallel_replays);
    let heartbeats = spawn_heartbeats(&ctx, WorkerKind::Replayer, attempts.clone())?;
    let (health, router) = runtime::grpc::router(&ctx.config.server)?;
    health.set_serving::<ReplayerServer<ReplayerApi>>().await;
    let api = ReplayerApi {
        attempts,
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
    };
    router
        .add_service(ReplayerServer::new(api))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(ctx.grpc_listener),
            ctx.shutdown.clone().cancelled_owned(),
        )
        .await?;
    heartbeats.abort();
    Ok(())
}
