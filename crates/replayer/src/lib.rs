//! The replayer: owns the memtables of the tables the scheduler assigns to it. For each
//! table it replays the WAL from the flushed checkpoint, keeps tailing new segments,
//! freezes full memtables and asks for their flush, serves frozen memtables to flushers and
//! unflushed data to readers.

use std::sync::Arc;
use std::time::Instant;

use proto::v1::replayer_server::{Replayer, ReplayerServer};
use proto::v1::{ReplayerStatus, WorkerKind, WorkerStatusRequest};
use runtime::ServiceContext;
use runtime::worker::{RunningAttempts, serve_worker, service_info};
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
    let api = ReplayerApi {
        attempts: attempts.clone(),
        advertised_address: ctx.advertised_address.clone(),
        started_at: ctx.started_at,
    };
    serve_worker(
        ctx,
        WorkerKind::Replayer,
        attempts,
        ReplayerServer::new(api),
    )
    .await
}
