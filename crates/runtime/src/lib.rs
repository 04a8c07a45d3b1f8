//! What every service shares: typed config, telemetry, metrics, the HTTP health port, the
//! gRPC server bootstrap, worker registration, and the launcher that turns a service's
//! `run` function into a binary with graceful shutdown.
//!
//! A service crate exposes `async fn run(ctx: ServiceContext) -> anyhow::Result<()>` that
//! serves its gRPC listener until `ctx.shutdown` is cancelled. The launcher ([`launch`])
//! does everything around it — config (exit code 64 on a bad value), telemetry, metrics,
//! binding ports, the HTTP port, signals and the drain timeout — for one service (the
//! service binaries) or for all four in one process (`data-processor`).

pub mod auth;
pub mod config;
pub mod failpoint;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod report;
pub mod telemetry;
pub mod throttle;
pub mod tls;
pub mod worker;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::{Config, ConfigError, ServiceKind};
pub use http::{ExtraRoutes, Readiness};

/// Exit code for a configuration error (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Everything a service needs to run.
pub struct ServiceContext {
    pub kind: ServiceKind,
    pub config: Arc<Config>,
    /// Bound gRPC listener; the service serves it until `shutdown`.
    pub grpc_listener: TcpListener,
    /// `host:port` other services use to reach this one.
    pub advertised_address: String,
    /// `http://host:port` of the scheduler (workers register there).
    pub scheduler_endpoint: String,
    /// Flip to true once dependencies are reachable.
    pub readiness: Readiness,
    /// Extra routes the service serves on its HTTP port.
    pub http_routes: ExtraRoutes,
    pub metrics: PrometheusHandle,
    pub shutdown: CancellationToken,
    pub started_at: Instant,
}

impl ServiceContext {
    /// A context on 127.0.0.1 with a free gRPC port, for tests that run a service inside
    /// the test process and talk to it over real gRPC.
    pub async fn bind_local(
        kind: ServiceKind,
        config: Config,
        scheduler_endpoint: &str,
    ) -> std::io::Result<Self> {
        let grpc_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let advertised_address = grpc_listener.local_addr()?.to_string();
        Ok(Self {
            kind,
            config: Arc::new(config),
            grpc_listener,
            advertised_address,
            scheduler_endpoint: scheduler_endpoint.to_owned(),
            readiness: Readiness::default(),
            http_routes: ExtraRoutes::default(),
            metrics: metrics::install(),
            shutdown: CancellationToken::new(),
            started_at: Instant::now(),
        })
    }

    /// Seconds since start.
    pub fn uptime_seconds(&self) -> u64 {
        self.started_at.elapsed().as_secs()
    }
}

/// A service's entry point.
pub type RunFn =
    Box<dyn FnOnce(ServiceContext) -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>>;

/// Wraps an async fn as a [`RunFn`].
pub fn run_fn<F, Fut>(f: F) -> RunFn
where
    F: FnOnce(ServiceContext) -> Fut + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Box::new(move |ctx| Box::pin(f(ctx)))
}

/// Command-line arguments of every service binary.
#[derive(Debug, clap::Parser)]
#[command(version, about)]
pub struct ServiceArgs {
    /// YAML configuration file; every key can be overridden by `DP__SECTION__KEY`.
    /// The seed's `-config=FILE` form is accepted too.
    #[arg(long, short = 'c', env = "DP_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Rewrites the seed's single-dash `-config=FILE` / `-config FILE` into `--config`.
pub fn normalize_args(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .map(|a| {
            if let Some(rest) = a.strip_prefix("-config=") {
                format!("--config={rest}")
            } else if a == "-config" {
                "--config".to_owned()
            } else {
                a
            }
        })
        .collect()
}

/// Parses arguments and loads the config, or prints one line naming the bad key.
pub fn load_config_from_args() -> Result<Config, ExitCode> {
    use clap::Parser;
    let args = ServiceArgs::parse_from(normalize_args(std::env::args()));
    Config::load(args.config.as_deref()).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Binds a service's gRPC and HTTP ports.
pub async fn bind(
    kind: ServiceKind,
    cfg: &Config,
) -> anyhow::Result<(TcpListener, TcpListener, String)> {
    let ports = cfg.server.ports(kind);
    let host = &cfg.server.host;
    let grpc = TcpListener::bind((host.as_str(), ports.grpc_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{kind}: cannot bind gRPC port {host}:{}: {e}",
                ports.grpc_port
            )
        })?;
    let http = TcpListener::bind((host.as_str(), ports.http_port))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "{kind}: cannot bind HTTP port {host}:{}: {e}",
                ports.http_port
            )
        })?;
    let advertised = if ports.advertised_address.is_empty() {
        format!(
            "{}:{}",
            cfg.server.advertised_host,
            grpc.local_addr()?.port()
        )
    } else {
        ports.advertised_address.clone()
    };
    Ok((grpc, http, advertised))
}

/// Runs `services` in this process until SIGTERM/SIGINT, then drains within
/// `server.drain_timeout`. Used by every binary's `main`.
pub fn launch(process_name: &'static str, services: Vec<(ServiceKind, RunFn)>) -> ExitCode {
    let cfg = match load_config_from_args() {
        Ok(cfg) => Arc::new(cfg),
        Err(code) => return code,
    };
    // A malformed DP_FAILPOINTS exits 64 here, not at the point's first hit.
    failpoint::init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let telemetry = match telemetry::init(&cfg.telemetry, process_name) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: invalid config value for `telemetry`: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let code = match run_until_signal(process_name, cfg, services).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{process_name} failed: {e:#}");
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
        telemetry.shutdown();
        code
    })
}

/// Binds, runs and stops the services; returns when they stopped (or the drain timed out).
pub async fn run_until_signal(
    process_name: &'static str,
    cfg: Arc<Config>,
    services: Vec<(ServiceKind, RunFn)>,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    grpc::use_client_tls(&cfg.server.tls)?;
    let handle = metrics::install();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(metrics::upkeep(handle.clone(), shutdown.clone()));
    tasks.spawn(metrics::sample_process(
        std::time::Duration::from_secs(2),
        shutdown.clone(),
    ));

    // Bind everything first, so that a port conflict fails before anything runs, and so
    // that co-located workers learn the scheduler's real address.
    let mut bound = Vec::new();
    for (kind, run) in services {
        let (grpc, http, advertised) = bind(kind, &cfg).await?;
        bound.push((kind, run, grpc, http, advertised));
    }
    let scheduler_endpoint = bound
        .iter()
        .find(|b| b.0 == ServiceKind::Scheduler)
        .map(|b| grpc::endpoint_url(&b.4))
        .unwrap_or_else(|| cfg.scheduler.endpoint.clone());

    let mut services = tokio::task::JoinSet::new();
    for (kind, run, grpc_listener, http_listener, advertised) in bound {
        let readiness = Readiness::default();
        let http_routes = ExtraRoutes::default();
        metrics::register_standard_series(kind.name());
        tracing::info!(
            service = kind.name(),
            grpc = %grpc_listener.local_addr()?,
            http = %http_listener.local_addr()?,
            advertised = %advertised,
            "{process_name}: starting {kind}"
        );
        let http_shutdown = shutdown.clone();
        let (h, r, x) = (handle.clone(), readiness.clone(), http_routes.clone());
        tasks.spawn(async move {
            if let Err(e) = http::serve(http_listener, kind.name(), r, h, x, http_shutdown).await {
                tracing::error!(service = kind.name(), "HTTP server failed: {e}");
            }
        });
        let ctx = ServiceContext {
            kind,
            config: cfg.clone(),
            grpc_listener,
            advertised_address: advertised,
            scheduler_endpoint: scheduler_endpoint.clone(),
            readiness,
            http_routes,
            metrics: handle.clone(),
            shutdown: shutdown.clone(),
            started_at: Instant::now(),
        };
        let fut = run(ctx);
        services.spawn(async move { (kind, fut.await) });
    }

    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        _ = wait_for_signal() => tracing::info!("{process_name}: shutdown signal received; draining"),
        Some(res) = services.join_next() => {
            match res {
                Ok((kind, Ok(()))) => tracing::warn!("{kind} stopped on its own; shutting down"),
                Ok((kind, Err(e))) => failure = Some(e.context(format!("{kind} failed"))),
                Err(e) => failure = Some(anyhow::anyhow!("a service panicked: {e}")),
            }
        }
    }
    shutdown.cancel();
    let drain = cfg.server.drain_timeout.get();
    let drained = tokio::time::timeout(drain, async {
        while let Some(res) = services.join_next().await {
            match res {
                Ok((kind, Err(e))) => tracing::error!("{kind} failed while draining: {e:#}"),
                Err(e) => tracing::error!("a service panicked while draining: {e}"),
                Ok(_) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("{process_name}: drain timeout of {drain:?} passed; exiting anyway");
        services.abort_all();
        tasks.abort_all();
    } else {
        tracing::info!("{process_name}: stopped");
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// The shared storage named by `storage.url` (and `storage.s3`), as every service opens it.
pub fn open_storage(config: &Config) -> anyhow::Result<storage::Storage> {
    let s3 = &config.storage.s3;
    let non_empty = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let options = storage::S3Options {
        endpoint: non_empty(&s3.endpoint),
        region: non_empty(&s3.region),
        allow_http: s3.allow_http.then_some(true),
        ..Default::default()
    };
    let url = absolute_storage_url(&config.storage.url);
    let storage = storage::Storage::from_url(&url, &options)
        .map_err(|e| anyhow::anyhow!("storage.url {:?}: {e}", config.storage.url))?;
    Ok(storage.with_faults(config.storage.faults.to_storage()))
}

/// `storage.url` with a relative `file://` path (the default `file://./data/storage`) made
/// absolute against the working directory, so every process and client means the same
/// directory.
pub fn absolute_storage_url(url: &str) -> String {
    if let Some(path) = url.strip_prefix("file://")
        && !path.starts_with('/')
        && let Ok(cwd) = std::env::current_dir()
    {
        let joined = cwd.join(path.trim_start_matches("./"));
        return format!("file://{}", joined.display());
    }
    url.to_owned()
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_flag_is_accepted() {
        let args = normalize_args(["bin", "-config=/etc/x.yaml", "-config", "y"].map(String::from));
        assert_eq!(args, ["bin", "--config=/etc/x.yaml", "--config", "y"]);
    }
}
