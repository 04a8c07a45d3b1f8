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
pub mod quarantine;
mod service;
pub mod traffic;

use std::sync::Arc;

use proto::v1::admin_server::AdminServer;
use proto::v1::scheduler_server::SchedulerServer;
use runtime::ServiceContext;

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
    metrics::describe_gauge!(
        service::QUARANTINED_FILES,
        "Files quarantined as poison inputs (excluded from compaction until released), by table."
    );
    metrics::describe_gauge!(
        service::INGEST_RATE,
        "WAL bytes per second the replayers last reported, by table (scheduler.peak_ingest_bytes_per_sec compares their sum)."
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
    // Serve until shutdown — or until the dispatch loop dies (a bug that panicked in it):
    // a scheduler that answers RPCs but never dispatches again would stall the whole
    // cluster silently; exiting with an error lets the supervisor restart it.
    let stop = ctx.shutdown.child_token();
    let dispatcher_abort = dispatcher.abort_handle();
    let watch = {
        let stop = stop.clone();
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                ended = dispatcher => {
                    stop.cancel();
                    Some(ended)
                }
                _ = shutdown.cancelled() => None,
            }
        })
    };
    tokio::spawn(cleanup::cleanup_loop(state.clone(), ctx.shutdown.clone()));
    let (health, router) = runtime::grpc::router(&ctx.config)?;
    let incoming = runtime::grpc::incoming(ctx.grpc_listener, &ctx.config)?;
    health
        .set_serving::<SchedulerServer<service::SchedulerApi>>()
        .await;
    health.set_serving::<AdminServer<service::AdminApi>>().await;
    ctx.readiness.set(true);
    tracing::info!(address = %ctx.advertised_address, "scheduler serving");
    let shutdown = stop.clone();
    let max_message = ctx.config.server.max_message_size.as_u64() as usize;
    let (scheduler, admin) = services(&state);
    let served = router
        .add_service(scheduler.max_decoding_message_size(max_message))
        .add_service(admin.max_decoding_message_size(max_message))
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await;
    dispatcher_abort.abort();
    let dispatch_failure = match watch.await {
        Ok(Some(Err(e))) if e.is_panic() => Some(format!("the dispatch loop panicked: {e}")),
        Ok(Some(_)) => Some("the dispatch loop stopped unexpectedly".to_owned()),
        _ => None,
    };
    // Close the catalog now, whoever still holds the state (the HTTP routes, a cleanup
    // pass): RocksDB must not be open when the process exits.
    state.close();
    served?;
    if let Some(failure) = dispatch_failure {
        tracing::error!("{failure}; exiting so that the scheduler is restarted");
        anyhow::bail!(failure);
    }
    Ok(())
}
