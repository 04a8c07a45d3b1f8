//! `status`'s look at each worker: the scheduler knows a worker's heartbeats, the worker
//! itself its uptime and memory. Every registered worker is asked for its GetStatus at the
//! address it registered with, all at once, each with a short timeout, so a dead worker
//! costs `status` at most [`PROBE_TIMEOUT`] and shows up as an error on its own line.

use std::time::Duration;

use proto::v1 as pb;

/// Connect and call timeout of one worker's GetStatus.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One worker's own GetStatus, or why it could not be had (one line).
pub async fn probe(w: &pb::WorkerInfo) -> Result<pb::ServiceInfo, String> {
    let channel = crate::client::connect(&w.address, PROBE_TIMEOUT, PROBE_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let req = pb::WorkerStatusRequest {};
    let info = match pb::WorkerKind::try_from(w.kind) {
        Ok(pb::WorkerKind::Replayer) => pb::replayer_client::ReplayerClient::new(channel)
            .get_status(req)
            .await
            .map(|r| r.into_inner().info),
        Ok(pb::WorkerKind::Flusher) => pb::flusher_client::FlusherClient::new(channel)
            .get_status(req)
            .await
            .map(|r| r.into_inner().info),
        Ok(pb::WorkerKind::Compactor) => pb::compactor_client::CompactorClient::new(channel)
            .get_status(req)
            .await
            .map(|r| r.into_inner().info),
        _ => return Err(format!("unknown worker kind {}", w.kind)),
    }
    .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
    info.ok_or_else(|| "empty GetStatus reply".to_owned())
}

/// Every worker's probe, in the order of `workers`.
pub async fn probe_all(workers: &[pb::WorkerInfo]) -> Vec<Result<pb::ServiceInfo, String>> {
    futures::future::join_all(workers.iter().map(probe)).await
}
