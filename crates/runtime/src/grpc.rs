//! gRPC plumbing shared by every server and client: the server builder with per-RPC
//! timeout, per-connection concurrency limit and load shedding (a full worker says so at
//! once instead of queueing without bound), HTTP/2 keepalive, trace-context extraction,
//! plus the standard Health and reflection (v1 and v1alpha, for grpcurl 1.8) services.
//!
//! Every server checks who calls what ([`crate::auth`]) and serves TLS when
//! `server.tls.cert` is set ([`crate::tls`]).
//!
//! Clients get channels with connect/request timeouts and HTTP/2 keepalive, so a healed
//! network partition does not leave a dead channel behind, and a [`TracePropagation`]
//! interceptor; with TLS on ([`use_client_tls`], set once by the launcher) they speak
//! `https` with this process' certificate.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::server::HealthReporter;
use tower::layer::util::{Identity, Stack};

use crate::auth::{AuthLayer, AuthPolicy};
use crate::config::{Config, ServerConfig};
use crate::telemetry::{TracePropagation, server_span};
use crate::tls::{ClientFiles, ClientTls, ServerTls, TlsError};

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
/// Health's, behind the [`AuthLayer`] of `cfg`. The caller adds its own service and serves
/// [`incoming`].
pub fn router(
    cfg: &Config,
) -> anyhow::Result<(HealthReporter, Router<Stack<AuthLayer, Identity>>)> {
    let policy = AuthPolicy::from_config(cfg)?;
    if !policy.has_tokens() {
        tracing::warn!(
            "admin.tokens is empty: the admin API and the workers' read RPCs answer loopback clients only"
        );
    }
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let router = server(&cfg.server)
        .layer(AuthLayer(Arc::new(policy)))
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    Ok((health_reporter, router))
}

/// The connections of `listener` for `serve_with_incoming*`, TLS-terminated when
/// `server.tls.cert` is set.
pub fn incoming(
    listener: TcpListener,
    cfg: &Config,
) -> Result<tokio_stream::wrappers::ReceiverStream<std::io::Result<crate::tls::Conn>>, TlsError> {
    let tls = ServerTls::from_config(&cfg.server.tls)?;
    Ok(crate::tls::incoming(listener, tls))
}

/// The client TLS of this process (None: plain text).
static CLIENT_TLS: RwLock<Option<Arc<ClientTls>>> = RwLock::new(None);

/// Makes every channel [`connect_lazy`] creates from now on use TLS with `cfg`'s files
/// (or plain text when TLS is off). The launcher calls it once with the process' config.
pub fn use_client_tls(cfg: &crate::config::TlsConfig) -> Result<(), TlsError> {
    let tls = ClientFiles::from_config(cfg)
        .map(ClientTls::new)
        .transpose()?;
    let mut g = CLIENT_TLS.write().unwrap_or_else(|e| e.into_inner());
    *g = tls;
    Ok(())
}

/// Why a channel could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

/// `endpoint` with its scheme set to `https` when `tls`, else as given.
pub fn with_scheme(endpoint: &str, tls: bool) -> String {
    match (tls, endpoint.strip_prefix("http://")) {
        (true, Some(rest)) => format!("https://{rest}"),
        _ => endpoint.to_owned(),
    }
}

/// A lazily connecting channel to `endpoint` (`http://host:port`) with timeouts and
/// keepalive, wrapped to propagate trace context; over TLS when the process uses client
/// TLS ([`use_client_tls`]).
pub fn connect_lazy(
    endpoint: &str,
    request_timeout: Duration,
) -> Result<TracedChannel, ConnectError> {
    let tls = CLIENT_TLS.read().unwrap_or_else(|e| e.into_inner()).clone();
    // With our TLS connector the URI stays `http`: tonic would refuse `https` without
    // its own TLS config.
    let uri = match (&tls, endpoint.strip_prefix("https://")) {
        (Some(_), Some(rest)) => format!("http://{rest}"),
        _ => endpoint.to_owned(),
    };
    let endpoint = Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_secs(5))
        .timeout(request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = match tls {
        // Our own connector does the TLS handshake with the current files, so a
        // reconnecting channel presents a rotated client certificate.
        Some(tls) => {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |uri: http::Uri| {
                let tls = tls.clone();
                async move { tls.connect(&uri).await.map(hyper_util::rt::TokioIo::new) }
            }))
        }
        None => endpoint.connect_lazy(),
    };
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
