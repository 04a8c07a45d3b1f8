//! Who may call what, checked once for every gRPC port by a tower layer in front of all
//! services (so no handler carries auth code).
//!
//! Each RPC path has a [`Requirement`] ([`requirement`], a pure table):
//! - `Open`: Health and reflection (probes, grpcurl discovery).
//! - `Role(r)`: the admin API and the workers' read RPCs. The caller sends
//!   `authorization: Bearer <token>`; the token's SHA-256 is compared (in constant time)
//!   with `admin.tokens`. Missing or unknown token → UNAUTHENTICATED; a role weaker than
//!   `r` → PERMISSION_DENIED. With no token configured these RPCs answer loopback clients
//!   only.
//! - `Service`: RPCs only the cluster's own services make (RegisterWorker, Heartbeat,
//!   CompleteTask, RequestFlush, the dispatches, ReadMemtable). With mutual TLS they need a
//!   service certificate ([`crate::tls::PeerInfo::service_cert`]), so an operator's client
//!   certificate cannot forge a completion. Without mutual TLS there is no identity to
//!   check and they are open.
//!
//! Refusals never echo the token.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::FutureExt;
use futures::future::{Either, Ready, ready};
use tonic::Status;

use crate::config::{Config, ConfigError, Role};
use crate::tls::PeerInfo;

/// What an RPC needs from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Open,
    Role(Role),
    Service,
}

/// The requirement of the RPC at `path` (`/package.Service/Method`). Unknown methods of
/// our services need `admin`: a new RPC is closed until it is put in this table.
pub fn requirement(path: &str) -> Requirement {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Requirement::Open,
        "dataprocessor.v1.Scheduler" => Requirement::Service,
        "dataprocessor.v1.Admin" => Requirement::Role(match method {
            "GetStatus" | "GetQueueStatus" | "ListTasks" | "GetTask" | "ListTables"
            | "GetManifest" | "GetTableStats" | "GetStallForecast" | "PlanCompaction"
            | "ListQuarantined" => Role::Viewer,
            "CancelTask" | "TriggerCompaction" | "TriggerFlush" | "TriggerWalReplay"
            | "ReleaseQuarantined" => Role::Operator,
            _ => Role::Admin,
        }),
        "dataprocessor.v1.Replayer" | "dataprocessor.v1.Flusher" | "dataprocessor.v1.Compactor" => {
            match method {
                "GetStatus" | "Get" | "Scan" => Requirement::Role(Role::Viewer),
                _ => Requirement::Service,
            }
        }
        _ => Requirement::Role(Role::Admin),
    }
}

type Tokens = Arc<Vec<([u8; 32], Role)>>;

/// The configured tokens and whether peers are identified by certificates. A tokens file
/// (`admin.tokens_file`, e.g. a mounted Secret) is re-read when it changes (checked at most
/// once a second), so tokens are added and revoked without a restart.
#[derive(Debug, Default)]
pub struct AuthPolicy {
    /// The `admin` section the tokens come from (None: fixed tokens, tests).
    admin: Option<crate::config::AdminConfig>,
    state: std::sync::Mutex<TokenState>,
    mutual_tls: bool,
}

#[derive(Debug)]
struct TokenState {
    checked: std::time::Instant,
    stamp: Option<(std::time::SystemTime, u64)>,
    /// (SHA-256 of the token, role).
    tokens: Tokens,
}

impl Default for TokenState {
    fn default() -> Self {
        Self {
            checked: std::time::Instant::now(),
            stamp: None,
            tokens: Arc::default(),
        }
    }
}

fn file_stamp(path: &str) -> Option<(std::time::SystemTime, u64)> {
    if path.is_empty() {
        return None;
    }
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

fn load_tokens(admin: &crate::config::AdminConfig) -> Result<Tokens, ConfigError> {
    let mut tokens = Vec::new();
    for t in admin.all_tokens()? {
        let hash = from_hex(&t.sha256).ok_or_else(|| ConfigError::Invalid {
            key: "admin.tokens".into(),
            message: "a sha256 is not 64 hex digits".into(),
        })?;
        tokens.push((hash, t.role));
    }
    Ok(Arc::new(tokens))
}

/// SHA-256 of `token`.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn from_hex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl AuthPolicy {
    pub fn from_config(cfg: &Config) -> Result<Self, ConfigError> {
        let tokens = load_tokens(&cfg.admin)?;
        Ok(Self {
            state: std::sync::Mutex::new(TokenState {
                stamp: file_stamp(&cfg.admin.tokens_file),
                tokens,
                ..TokenState::default()
            }),
            admin: Some(cfg.admin.clone()),
            mutual_tls: cfg.server.tls.mutual(),
        })
    }

    /// A policy with `tokens` given in clear (tests).
    pub fn with_tokens(tokens: &[(&str, Role)], mutual_tls: bool) -> Self {
        Self {
            admin: None,
            state: std::sync::Mutex::new(TokenState {
                tokens: Arc::new(tokens.iter().map(|(t, r)| (token_hash(t), *r)).collect()),
                ..TokenState::default()
            }),
            mutual_tls,
        }
    }

    /// The current tokens, re-read from `admin.tokens_file` if it changed.
    fn tokens(&self) -> Tokens {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(admin) = &self.admin
            && !admin.tokens_file.is_empty()
            && s.checked.elapsed() >= std::time::Duration::from_secs(1)
        {
            s.checked = std::time::Instant::now();
            let stamp = file_stamp(&admin.tokens_file);
            if stamp != s.stamp {
                match load_tokens(admin) {
                    Ok(tokens) => {
                        tracing::info!(
                            count = tokens.len(),
                            "admin.tokens_file changed; tokens reloaded"
                        );
                        s.tokens = tokens;
                        s.stamp = stamp;
                    }
                    // Keep the previous tokens (the error names the line, never a token).
                    Err(e) => tracing::warn!("admin.tokens_file changed but cannot be used: {e}"),
                }
            }
        }
        s.tokens.clone()
    }

    pub fn has_tokens(&self) -> bool {
        !self.tokens().is_empty()
    }

    /// The role of a presented token, comparing against every configured hash in constant
    /// time (no early exit, no data-dependent branch per byte).
    fn role_of(tokens: &[([u8; 32], Role)], token: &str) -> Option<Role> {
        let h = token_hash(token);
        let mut found = None;
        for (stored, role) in tokens {
            let diff = stored
                .iter()
                .zip(h.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(*role);
            }
        }
        found
    }

    /// Allows or refuses one call.
    pub fn check(
        &self,
        path: &str,
        authorization: Option<&str>,
        peer: Option<&PeerInfo>,
    ) -> Result<(), Status> {
        let method = path.rsplit('/').next().unwrap_or(path);
        match requirement(path) {
            Requirement::Open => Ok(()),
            Requirement::Service => {
                if !self.mutual_tls || peer.is_some_and(|p| p.service_cert) {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{method} is accepted only from a service certificate (one valid for a name in server.tls.worker_names)"
                    )))
                }
            }
            Requirement::Role(needed) => {
                let tokens = self.tokens();
                if tokens.is_empty() {
                    return if peer.is_some_and(PeerInfo::is_loopback) {
                        Ok(())
                    } else {
                        Err(Status::unauthenticated(format!(
                            "{method}: admin.tokens is empty, so the admin API answers loopback clients only"
                        )))
                    };
                }
                let Some(value) = authorization else {
                    return Err(Status::unauthenticated(format!(
                        "{method} needs `authorization: Bearer <token>` metadata"
                    )));
                };
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        Status::unauthenticated(format!(
                            "{method}: authorization metadata must be `Bearer <token>`"
                        ))
                    })?;
                let role = Self::role_of(&tokens, token.trim()).ok_or_else(|| {
                    Status::unauthenticated(format!("{method}: the bearer token is not valid"))
                })?;
                if role >= needed {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "{method} needs role {} or stronger; the token has role {}",
                        needed.name(),
                        role.name()
                    )))
                }
            }
        }
    }
}

type Answer = Result<http::Response<tonic::body::Body>, Infallible>;

/// tonic refuses a request message over `max_decoding_message_size` with OUT_OF_RANGE;
/// the contract is RESOURCE_EXHAUSTED naming the limit (`server.max_message_size`).
fn oversize_is_resource_exhausted(answer: Answer) -> Answer {
    let Ok(mut response) = answer;
    let headers = response.headers_mut();
    let oversize = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if oversize {
        let message = headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .unwrap_or("")
            .to_owned();
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        if let Ok(v) = http::HeaderValue::from_str(&format!(
            "request message over server.max_message_size:%20{message}"
        )) {
            headers.insert("grpc-message", v);
        }
    }
    Ok(response)
}

/// The tower layer that applies an [`AuthPolicy`] to every request of a server.
#[derive(Debug, Clone)]
pub struct AuthLayer(pub Arc<AuthPolicy>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            policy: self.0.clone(),
        }
    }
}

/// See [`AuthLayer`].
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    policy: Arc<AuthPolicy>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = Either<
        futures::future::Map<S::Future, fn(Answer) -> Answer>,
        Ready<Result<S::Response, Infallible>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let authorization = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = req.extensions().get::<PeerInfo>();
        match self.policy.check(req.uri().path(), authorization, peer) {
            Ok(()) => Either::Left(
                self.inner
                    .call(req)
                    .map(oversize_is_resource_exhausted as fn(Answer) -> Answer),
            ),
            Err(status) => {
                tracing::info!(path = req.uri().path(), code = ?status.code(), "call refused: {}", status.message());
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn peer(addr: &str, service_cert: bool) -> PeerInfo {
        PeerInfo {
            remote_addr: Some(addr.parse::<SocketAddr>().expect("addr")),
            tls: true,
            client_cert: service_cert,
            service_cert,
        }
    }

    #[test]
    fn requirements() {
        use Requirement::*;
        let cases = [
            ("/grpc.health.v1.Health/Check", Open),
            ("/dataprocessor.v1.Scheduler/CompleteTask", Service),
            (
                "/dataprocessor.v1.Admin/GetStatus",
                Role(super::Role::Viewer),
            ),
            (
                "/dataprocessor.v1.Admin/TriggerFlush",
                Role(super::Role::Operator),
            ),
            (
                "/dataprocessor.v1.Admin/DropTable",
                Role(super::Role::Admin),
            ),
            (
                "/dataprocessor.v1.Admin/SomethingNew",
                Role(super::Role::Admin),
            ),
            ("/dataprocessor.v1.Replayer/Scan", Role(super::Role::Viewer)),
            ("/dataprocessor.v1.Replayer/ReadMemtable", Service),
            ("/dataprocessor.v1.Compactor/CompactLevel", Service),
            ("/other.Unknown/X", Role(super::Role::Admin)),
        ];
        for (path, want) in cases {
            assert_eq!(requirement(path), want, "{path}");
        }
    }

    #[test]
    fn tokens_and_roles() {
        let p = AuthPolicy::with_tokens(&[("v-tok", Role::Viewer), ("a-tok", Role::Admin)], false);
        let remote = peer("10.0.0.1:5000", false);
        let drop = "/dataprocessor.v1.Admin/DropTable";
        let code =
            |path, auth: Option<&str>| p.check(path, auth, Some(&remote)).err().map(|s| s.code());
        assert_eq!(code(drop, None), Some(tonic::Code::Unauthenticated));
        assert_eq!(
            code(drop, Some("Bearer nope")),
            Some(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            code(drop, Some("Bearer v-tok")),
            Some(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(drop, Some("Bearer a-tok")), None);
        assert_eq!(
            code("/dataprocessor.v1.Admin/GetStatus", Some("Bearer v-tok")),
            None
        );
        let err = p
            .check(drop, Some("Bearer secret-guess"), Some(&remote))
            .expect_err("refused");
        assert!(!err.message().contains("secret-guess"));
    }

    #[test]
    fn an_oversize_message_is_resource_exhausted_naming_the_limit() {
        let status = Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        );
        let Ok(r) = oversize_is_resource_exhausted(Ok(status.into_http()));
        let back = Status::from_header_map(r.headers()).expect("a status");
        assert_eq!(back.code(), tonic::Code::ResourceExhausted);
        assert!(
            back.message().contains("server.max_message_size"),
            "{}",
            back.message()
        );
        let other = Status::out_of_range("something else");
        let Ok(r) = oversize_is_resource_exhausted(Ok(other.into_http()));
        assert_eq!(
            Status::from_header_map(r.headers()).map(|s| s.code()),
            Some(tonic::Code::OutOfRange)
        );
    }

    #[test]
    fn no_tokens_means_loopback_only() {
        let p = AuthPolicy::default();
        let path = "/dataprocessor.v1.Admin/DropTable";
        assert!(
            p.check(path, None, Some(&peer("127.0.0.1:1", false)))
                .is_ok()
        );
        assert_eq!(
            p.check(path, None, Some(&peer("10.1.2.3:1", false)))
                .err()
                .map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn service_rpcs_need_a_service_certificate_under_mutual_tls() {
        let p = AuthPolicy::with_tokens(&[], true);
        let path = "/dataprocessor.v1.Scheduler/CompleteTask";
        assert!(p.check(path, None, Some(&peer("10.0.0.1:1", true))).is_ok());
        assert_eq!(
            p.check(path, None, Some(&peer("127.0.0.1:1", false)))
                .err()
                .map(|s| s.code()),
            Some(tonic::Code::PermissionDenied)
        );
        assert!(AuthPolicy::default().check(path, None, None).is_ok());
    }
}
