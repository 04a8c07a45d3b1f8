//! The scheduler's gRPC edge: the worker-facing `Scheduler` service and the operators'
//! `Admin` service. Requests are validated and converted here; state lives in
//! [`SchedulerState`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use proto::v1::{
    GetStatusRequest, GetStatusResponse, HeartbeatRequest, HeartbeatResponse,
    RegisterWorkerRequest, RegisterWorkerResponse, ServiceInfo, WorkerInfo, WorkerKind,
};
use runtime::ServiceContext;
use runtime::config::Config;
use tonic::{Request, Response, Status};

use crate::registry::{Registration, Registry};

/// Shared state of the scheduler process.
pub struct SchedulerState {
    config: Arc<Config>,
    advertised_address: String,
    started_at: Instant,
    registry: Mutex<Registry>,
}

impl SchedulerState {
    pub fn new(ctx: &ServiceContext) -> Self {
        Self {
            config: ctx.config.clone(),
            advertised_address: ctx.advertised_address.clone(),
            started_at: ctx.started_at,
            registry: Mutex::new(Registry::default()),
        }
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The worker-facing service.
pub struct SchedulerApi(pub Arc<SchedulerState>);

#[tonic::async_trait]
impl proto::v1::scheduler_server::Scheduler for SchedulerApi {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let req = request.into_inner();
        let kind = WorkerKind::try_from(req.kind)
            .ok()
            .filter(|k| *k != WorkerKind::Unspecified)
            .ok_or_else(|| {
                Status::invalid_argument(format!("kind: unknown worker kind {}", req.kind))
            })?;
        if req.advertised_address.is_empty() {
            return Err(Status::invalid_argument(
                "advertised_address: must not be empty",
            ));
        }
        if req.slots == 0 {
            return Err(Status::invalid_argument("slots: must be at least 1"));
        }
        let id = self.0.registry().register(
            Registration {
                kind,
                name: req.name,
                address: req.advertised_address.clone(),
                slots: req.slots,
                version: req.version,
            },
            Instant::now(),
        );
        tracing::info!(worker_id = id, kind = ?kind, address = %req.advertised_address, "worker registered");
        Ok(Response::new(RegisterWorkerResponse {
            worker_id: id,
            heartbeat_interval_ms: self.0.config.scheduler.heartbeat_interval.get().as_millis()
                as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let req = request.into_inner();
        let known = self
            .0
            .registry()
            .heartbeat(req.worker_id, req.running, Instant::now());
        Ok(Response::new(HeartbeatResponse {
            reregister: !known,
            ..Default::default()
        }))
    }
}

/// The operators' service.
pub struct AdminApi(pub Arc<SchedulerState>);

#[tonic::async_trait]
impl proto::v1::admin_server::Admin for AdminApi {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        let now = Instant::now();
        let timeout = self.0.config.scheduler.heartbeat_timeout.get();
        let workers = self
            .0
            .registry()
            .workers()
            .map(|w| WorkerInfo {
                worker_id: w.id,
                kind: w.kind as i32,
                name: w.name.clone(),
                address: w.address.clone(),
                slots: w.slots,
                running: w.running.len() as u32,
                last_heartbeat_ms_ago: now.saturating_duration_since(w.last_heartbeat).as_millis()
                    as u64,
                alive: Registry::is_alive(w, now, timeout),
                version: w.version.clone(),
            })
            .collect();
        Ok(Response::new(GetStatusResponse {
            scheduler: Some(ServiceInfo {
                service: "scheduler".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                uptime_seconds: self.0.started_at.elapsed().as_secs(),
                advertised_address: self.0.advertised_address.clone(),
                slots: 0,
                running: Vec::new(),
                memory_bytes: runtime::metrics::resident_memory_bytes().unwrap_or(0),
            }),
            workers,
            running_tasks: 0,
            pending_tasks: 0,
            tables: 0,
        }))
    }
}
