//! The HTTP port of every service: `/health` (liveness: the process answers), `/ready`
//! (readiness: the service's dependencies are reachable) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Whether the service is ready to take work; flipped by the service.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Routes a service adds to its HTTP port once it runs (the scheduler's LSM page); requests
/// that match no standard route go there.
#[derive(Clone, Default)]
pub struct ExtraRoutes(Arc<std::sync::RwLock<Option<Router>>>);

impl ExtraRoutes {
    /// Installs the service's routes.
    pub fn set(&self, router: Router) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(router);
        }
    }

    fn get(&self) -> Option<Router> {
        self.0.read().ok().and_then(|r| r.clone())
    }
}

/// Serves the HTTP port until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    service: &'static str,
    readiness: Readiness,
    metrics: PrometheusHandle,
    extra: ExtraRoutes,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route(
            "/health",
            get(move || async move { format!("ok {service}\n") }),
        )
        .route(
            "/ready",
            get(move || {
                let ready = readiness.get();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
                }
            }),
        );
    let app = app.fallback(move |req: axum::extract::Request| {
        let extra = extra.get();
        async move {
            match extra {
                Some(router) => {
                    use tower::ServiceExt;
                    match router.oneshot(req).await {
                        Ok(resp) => resp,
                        Err(never) => match never {},
                    }
                }
                None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            }
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
