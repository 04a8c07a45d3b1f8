//! gRPC plumbing shared by every server and client: the server builder with per-RPC
//! timeout, per-connection concurrency limit and load shedding (a full worker says so at
//! once instead of queueing without bound), HTTP/2 keepalive, trace-context extraction,
//! plus the standard Health and reflection (v1 and v1alpha, for grpcurl 1.8) services.
//!
//! Clients get channels with connect/request timeouts and HTTP/2 keepalive, so a healed
//! network partition does not leave a dead channel behind, and a [`TracePropagation`]
//! interceptor.

use std::time::Duration;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;

use crate::config::ServerConfig;
use crate::telemetry::{TracePropagation, server_span};

/// A client channel that propagates trace context.
pub type TracedChannel = InterceptedService<Channel, TracePropagation>;

/// The server builder every service uses.
pub fn server(cfg: &ServerConfig) -> Server {
    Server::builder()
        .timeout(cfg.request_timeout.get())
        .concurrency_limit_per_connection(cfg.max_concurrent_requests as usize)
        .load_shed(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .tcp_nodelay(true)
        .trace_fn(server_span)
}

/// A router with the standard services of every gRPC port already added: Health (whose
/// reporter is returned to flip per-service status) and reflection over our contract and
/// Health's. The caller adds its own service and serves.
pub fn router(cfg: &ServerConfig) -> anyhow::Result<(HealthReporter, Router)> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let router = server(cfg)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((health_reporter, router))
}

/// A lazily connecting channel to `endpoint` (`http://host:port`) with timeouts and
/// keepalive, wrapped to propagate trace context.
pub fn connect_lazy(
    endpoint: &str,
    request_timeout: Duration,
) -> Result<TracedChannel, tonic::transport::Error> {
    let channel = Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(InterceptedService::new(channel, TracePropagation))
}

/// `http://` + address, unless it already has a scheme.
pub fn endpoint_url(address: &str) -> String {
    if address.starts_with("http://") || address.starts_with("https://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    }
}
