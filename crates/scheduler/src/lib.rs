//! The scheduler: the one active instance that owns the catalog, decides what work is
//! needed, dispatches it to registered workers, tracks their leases, and serves the
//! operators' admin API.
//!
//! Vocabulary (used everywhere in this crate): a *worker* is a registered replayer, flusher
//! or compactor; a *task* is the durable decision that a work item must be done; an
//! *attempt* is one try of a task on one worker.
//!
//! The state machine is pure and lives in [`core`]; [`manual`] turns operator requests
//! into specs; the gRPC edge, the catalog writes and the dispatch loop are in `service`.

pub mod cleanup;
mod convert;
pub mod core;
pub mod forecast;
pub mod manual;
pub mod page;
mod service;

use std::sync::Arc;

use proto::v1::admin_server::AdminServer;
use proto::v1::scheduler_server::SchedulerServer;
use runtime::ServiceContext;
use tokio_stream::wrappers::TcpListenerStream;

pub use service::{
    AdminApi, Clock, CommitMode, SchedulerApi, SchedulerParts, SchedulerState, SystemClock,
    TcpConnector, WorkerConnector, dispatch_loop, strategy_with,
};

/// The scheduler's two gRPC services (worker-facing and admin) over `state`.
pub fn services(
    state: &Arc<SchedulerState>,
) -> (SchedulerServer<SchedulerApi>, AdminServer<AdminApi>) {
    (
        SchedulerServer::new(SchedulerApi(state.clone())),
        AdminServer::new(AdminApi(state.clone())),
    )
}

/// Runs the scheduler until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> anyhow::Result<()> {
    metrics::describe_counter!(
        service::LEASE_EXPIRIES,
        "Attempts ended by the scheduler's timers, by reason (no_heartbeat, stuck)."
    );
    metrics::describe_gauge!(
        service::STALL_FORECAST,
        "Seconds until L0 reaches compaction.l0_stop_threshold at its current growth, by table (negative: not approaching)."
    );
    metrics::describe_gauge!(
        service::COMPACTION_DEBT,
        metrics::Unit::Bytes,
        "Bytes compaction still owes, by table."
    );
    metrics::describe_counter!(
        service::STALE_COMMITS_REFUSED,
        "Completions refused because the attempt was stale or its inputs were gone."
    );
    // Present from the first scrape, so alerts and dashboards see zeros, not gaps.
    for reason in ["no_heartbeat", "stuck"] {
        metrics::counter!(service::LEASE_EXPIRIES, "reason" => reason).absolute(0);
    }
    metrics::counter!(service::STALE_COMMITS_REFUSED).absolute(0);
    let state = Arc::new(SchedulerState::open(&ctx)?);
    ctx.http_routes.set(page::router(state.clone()));
    let dispatcher = tokio::spawn(service::dispatch_loop(state.clone(), ctx.shutdown.clone()));
    tokio::spawn(cleanup::cleanup_loop(state.clone(), ctx.shutdown.clone()));
    let (health, router) = runtime::grpc::router(&ctx.config.server)?;
    health
        .set_serving::<SchedulerServer<service::SchedulerApi>>()
        .await;
    health.set_serving::<AdminServer<service::AdminApi>>().await;
    ctx.readiness.set(true);
    tracing::info!(address = %ctx.advertised_address, "scheduler serving");
    let shutdown = ctx.shutdown.clone();
    let (scheduler, admin) = services(&state);
    let served = router
        .add_service(scheduler)
        .add_service(admin)
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(ctx.grpc_listener),
            shutdown.cancelled_owned(),
        )
        .await;
    dispatcher.abort();
    let _ = dispatcher.await;
    // Close the catalog now, whoever still holds the state (the HTTP routes, a cleanup
    // pass): RocksDB must not be open when the process exits.
    state.close();
    served?;
    Ok(())
}
