//! How storage-admin reaches the services: TLS (`--ca`, `--cert`, `--key`, or the
//! services' own `DP__SERVER__TLS__*` keys) and the admin bearer token (`--token`,
//! `DP_ADMIN_TOKEN`, or `--token-file`), set once from the command line and used by every
//! channel (scheduler, replayers, workers' GetStatus).
//!
//! The token is never printed: its `Debug` is redacted and no error message carries it.

use std::sync::OnceLock;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::Failure;

/// A channel that sends the bearer token with every call.
pub type AuthChannel = InterceptedService<Channel, BearerToken>;

/// `authorization: Bearer <token>` metadata, or nothing.
#[derive(Clone, Default)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<redacted>)"
        } else {
            "BearerToken(none)"
        })
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// The security flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// PEM CA bundle that verifies the services' certificates (turns on TLS).
    #[arg(long = "ca", global = true, env = "DP__SERVER__TLS__CA")]
    pub tls_ca: Option<String>,
    /// PEM client certificate, for services that require mutual TLS.
    #[arg(long = "cert", global = true, env = "DP__SERVER__TLS__CERT")]
    pub tls_cert: Option<String>,
    /// PEM private key of --cert.
    #[arg(long = "key", global = true, env = "DP__SERVER__TLS__KEY")]
    pub tls_key: Option<String>,
    /// Verify the services' certificates against this name instead of the host dialed
    /// (services advertise pod IPs).
    #[arg(
        long = "server-name",
        global = true,
        env = "DP__SERVER__TLS__SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,
    /// Admin API bearer token.
    #[arg(
        long = "token",
        global = true,
        env = "DP_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// File holding the admin API bearer token (first line).
    #[arg(long = "token-file", global = true, env = "DP_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<String>,
}

struct Security {
    tls: Option<ClientTlsConfig>,
    token: BearerToken,
}

static SECURITY: OnceLock<Security> = OnceLock::new();

/// Reads the certificates and the token once; exit code 2 on a bad flag.
pub fn init(args: &SecurityArgs) -> Result<(), Failure> {
    let files = runtime::tls::ClientFiles {
        ca: args.tls_ca.clone().unwrap_or_default(),
        cert: args.tls_cert.clone().unwrap_or_default(),
        key: args.tls_key.clone().unwrap_or_default(),
        server_name: args.tls_server_name.clone().unwrap_or_default(),
    };
    let tls = if files.enabled() {
        Some(
            runtime::tls::client_config(&files)
                .map_err(|e| Failure(2, format!("TLS flags: {e}")))?,
        )
    } else {
        None
    };
    let token = match (&args.admin_token, &args.admin_token_file) {
        (Some(t), _) => Some(t.trim().to_owned()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure(2, format!("--token-file {path:?}: {e}")))?;
            Some(text.lines().next().unwrap_or("").trim().to_owned())
        }
        (None, None) => None,
    };
    let token = match token.filter(|t| !t.is_empty()) {
        Some(t) => BearerToken(Some(format!("Bearer {t}").parse().map_err(|_| {
            Failure(
                2,
                "the admin token has characters that cannot be sent as metadata".into(),
            )
        })?)),
        None => BearerToken(None),
    };
    // A second init (never happens in the binary) keeps the first.
    let _ = SECURITY.set(Security { tls, token });
    Ok(())
}

/// Why [`connect`] failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The address (or the TLS settings for it) is not usable: a usage error.
    Address(String),
    /// Nothing answered (or the TLS handshake failed).
    Unreachable(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Address(m) | ConnectError::Unreachable(m) => f.write_str(m),
        }
    }
}

/// A connected channel to `address` (`host:port` or a URL) with the process' TLS and token.
pub async fn connect(
    address: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<AuthChannel, ConnectError> {
    let sec = SECURITY.get();
    let tls = sec.and_then(|s| s.tls.clone());
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let url = runtime::grpc::with_scheme(&url, tls.is_some());
    let mut endpoint = Endpoint::from_shared(url)
        .map_err(|e| ConnectError::Address(format!("{address:?}: {e}")))?
        .connect_timeout(connect_timeout)
        .timeout(timeout);
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| ConnectError::Address(format!("TLS for {address}: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        ConnectError::Unreachable(format!("unreachable at {address}: {}", error_chain(&e)))
    })?;
    let token = sec.map(|s| s.token.clone()).unwrap_or_default();
    Ok(InterceptedService::new(channel, token))
}

/// An error with its causes (tonic's transport errors say little at the top level).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}
