//! TLS on every gRPC port (rustls, ring provider) and the identity of the peer on the
//! other end.
//!
//! Servers do the TLS handshake themselves instead of using tonic's static
//! `ServerTlsConfig`: [`incoming`] accepts TCP connections, runs each handshake in its own
//! task (a slow client cannot stall the accept loop) with the *current* rustls config of a
//! [`ServerTls`], which re-reads the certificate, key and client CA files when their
//! modification time or size changes (checked at most once a second). A rotated
//! certificate is therefore served to new connections without a restart; a half-written
//! pair (new certificate, old key) fails to load and the previous config stays in use
//! until the pair is consistent.
//!
//! Each accepted connection carries a [`PeerInfo`] (remote address, whether the peer
//! showed a client certificate, whether that certificate is a *service certificate*: valid
//! for one of `server.tls.worker_names`). tonic puts it into every request's extensions,
//! where [`crate::auth`] reads it.
//!
//! The services' own clients connect through [`ClientTls`], which follows its files the
//! same way (each new connection, also a channel's reconnection, uses the current client
//! certificate and CA). `storage-admin`, a short-lived process, uses tonic's
//! `ClientTlsConfig` built by [`client_config`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

use crate::config::TlsConfig;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for changes, at most.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// A TLS file that cannot be used. Names the config key and the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{key}`: cannot read {path:?}: {cause}")]
    Read {
        key: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("`{key}`: {path:?} holds no usable PEM {what}")]
    Empty {
        key: &'static str,
        path: PathBuf,
        what: &'static str,
    },
    #[error("`{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|cause| TlsError::Read {
        key,
        path: path.to_owned(),
        cause,
    })
}

/// The certificates of a PEM file.
pub fn load_certs(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::Empty {
            key,
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::Empty {
        key,
        path: path.to_owned(),
        what: "private key",
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses `server.tls.worker_names` into DNS names.
pub fn worker_names(cfg: &TlsConfig) -> Result<Vec<ServerName<'static>>, TlsError> {
    cfg.worker_names()
        .into_iter()
        .map(|n| {
            ServerName::try_from(n.clone()).map_err(|_| TlsError::Invalid {
                key: "server.tls.worker_names",
                message: format!("{n:?} is not a DNS name"),
            })
        })
        .collect()
}

/// Whether `cert` is valid for one of `names` (DNS subject alternative names; a wildcard
/// in the certificate matches as it would for a server name).
pub fn is_service_cert(cert: &CertificateDer<'_>, names: &[ServerName<'static>]) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    names
        .iter()
        .any(|n| ee.verify_is_valid_for_subject_name(n).is_ok())
}

/// The files a server's TLS config is built from.
#[derive(Debug, Clone)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Files {
    /// (mtime, len) of each file: what a rotation changes.
    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        let mut paths = vec![&self.cert, &self.key];
        paths.extend(self.client_ca.as_ref());
        paths
            .into_iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    fn build(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = load_certs("server.tls.cert", &self.cert)?;
        let key = load_key("server.tls.key", &self.key)?;
        let invalid = |key: &'static str| {
            move |e: rustls::Error| TlsError::Invalid {
                key,
                message: e.to_string(),
            }
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid("server.tls"))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in load_certs("server.tls.client_ca", ca)? {
                    roots.add(c).map_err(invalid("server.tls.client_ca"))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider(),
                )
                .build()
                .map_err(|e| TlsError::Invalid {
                    key: "server.tls.client_ca",
                    message: e.to_string(),
                })?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut cfg = builder
            .with_single_cert(certs, key)
            .map_err(invalid("server.tls.key"))?;
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// A server's TLS config that follows its files.
pub struct ServerTls {
    files: Files,
    worker_names: Vec<ServerName<'static>>,
    state: Mutex<Reload>,
}

struct Reload {
    checked: Instant,
    stamps: Vec<Option<(SystemTime, u64)>>,
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// The TLS of a server with `cfg`, or `None` when `server.tls.cert` is empty.
    pub fn from_config(cfg: &TlsConfig) -> Result<Option<Arc<Self>>, TlsError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let files = Files {
            cert: cfg.cert.clone().into(),
            key: cfg.key.clone().into(),
            client_ca: (!cfg.client_ca.is_empty()).then(|| cfg.client_ca.clone().into()),
        };
        let stamps = files.stamps();
        let config = files.build()?;
        Ok(Some(Arc::new(Self {
            files,
            worker_names: worker_names(cfg)?,
            state: Mutex::new(Reload {
                checked: Instant::now(),
                stamps,
                config,
            }),
        })))
    }

    /// The config for a new connection, re-read from the files if they changed.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            let stamps = self.files.stamps();
            if stamps != s.stamps {
                match self.files.build() {
                    Ok(config) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate files changed; new connections use them");
                        s.config = config;
                        s.stamps = stamps;
                    }
                    // Keep serving the previous certificate; try again on the next check
                    // (a rotation writing the certificate and the key one after the other
                    // is inconsistent for a moment).
                    Err(e) => tracing::warn!("TLS files changed but cannot be loaded yet: {e}"),
                }
            }
        }
        s.config.clone()
    }
}

/// Who is on the other end of a connection. Every request's extensions carry it.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    pub remote_addr: Option<SocketAddr>,
    /// The connection is TLS.
    pub tls: bool,
    /// The peer showed a client certificate (verified against `server.tls.client_ca`).
    pub client_cert: bool,
    /// That certificate is valid for one of `server.tls.worker_names`.
    pub service_cert: bool,
}

impl PeerInfo {
    pub fn is_loopback(&self) -> bool {
        self.remote_addr.is_some_and(|a| a.ip().is_loopback())
    }
}

/// An accepted connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream, PeerInfo),
    Tls(Box<TlsStream<TcpStream>>, PeerInfo),
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        match self {
            Conn::Plain(_, p) | Conn::Tls(_, p) => p.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s, _) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s, _) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }
}

/// The connections of `listener`, TLS-terminated with `tls` when given, for tonic's
/// `serve_with_incoming*`. Handshakes run concurrently; a failed one is logged at debug
/// level and dropped (a plain-text client on a TLS port just sees the connection close).
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    // EMFILE and the like: do not spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let peer = PeerInfo {
                remote_addr: Some(remote),
                ..PeerInfo::default()
            };
            let Some(tls) = tls.clone() else {
                if tx.send(Ok(Conn::Plain(stream, peer))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let acceptor = TlsAcceptor::from(tls.current());
                let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                let stream = match done {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, "TLS handshake failed: {e}");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let certs = stream.get_ref().1.peer_certificates();
                let client_cert = certs.is_some_and(|c| !c.is_empty());
                let service_cert = certs
                    .and_then(|c| c.first())
                    .is_some_and(|c| is_service_cert(c, &tls.worker_names));
                let peer = PeerInfo {
                    tls: true,
                    client_cert,
                    service_cert,
                    ..peer
                };
                let _ = tx.send(Ok(Conn::Tls(Box::new(stream), peer))).await;
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// PEM files of a client: the CA it trusts for servers and its own certificate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: String,
    pub cert: String,
    pub key: String,
    /// Verify servers against this name instead of the host dialed (empty: the host).
    pub server_name: String,
}

impl ClientFiles {
    /// A service's client files: `server.tls.ca` (or `client_ca`), and its own certificate.
    pub fn from_config(cfg: &TlsConfig) -> Option<Self> {
        cfg.enabled().then(|| Self {
            ca: cfg.server_ca().to_owned(),
            cert: cfg.cert.clone(),
            key: cfg.key.clone(),
            server_name: cfg.server_name.clone(),
        })
    }

    /// TLS is to be used.
    pub fn enabled(&self) -> bool {
        !self.ca.is_empty() || !self.cert.is_empty()
    }
}

/// A client TLS config that follows its files (re-read when they change, checked at most
/// once a second on a new connection).
pub struct ClientTls {
    files: ClientFiles,
    state: Mutex<ClientReload>,
}

struct ClientReload {
    checked: Instant,
    stamps: Vec<Option<(SystemTime, u64)>>,
    config: Arc<rustls::ClientConfig>,
}

impl ClientTls {
    pub fn new(files: ClientFiles) -> Result<Arc<Self>, TlsError> {
        let config = Self::build(&files)?;
        Ok(Arc::new(Self {
            state: Mutex::new(ClientReload {
                checked: Instant::now(),
                stamps: Self::stamps(&files),
                config,
            }),
            files,
        }))
    }

    fn stamps(files: &ClientFiles) -> Vec<Option<(SystemTime, u64)>> {
        [&files.ca, &files.cert, &files.key]
            .into_iter()
            .filter(|p| !p.is_empty())
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.modified().ok()?, m.len())))
            })
            .collect()
    }

    fn build(files: &ClientFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        if files.ca.is_empty() {
            return Err(TlsError::Invalid {
                key: "server.tls.ca",
                message: "TLS clients need the CA that signed the services' certificates".into(),
            });
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs("server.tls.ca", Path::new(&files.ca))? {
            roots.add(c).map_err(|e| TlsError::Invalid {
                key: "server.tls.ca",
                message: e.to_string(),
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Invalid {
                key: "server.tls",
                message: e.to_string(),
            })?
            .with_root_certificates(roots);
        let mut cfg = if files.cert.is_empty() {
            builder.with_no_client_auth()
        } else {
            let certs = load_certs("server.tls.cert", Path::new(&files.cert))?;
            let key = load_key("server.tls.key", Path::new(&files.key))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| TlsError::Invalid {
                    key: "server.tls.key",
                    message: e.to_string(),
                })?
        };
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The config for a new connection, re-read from the files if they changed.
    pub fn current(&self) -> Arc<rustls::ClientConfig> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            let stamps = Self::stamps(&self.files);
            if stamps != s.stamps {
                match Self::build(&self.files) {
                    Ok(config) => {
                        tracing::info!("TLS client files changed; new connections use them");
                        s.config = config;
                        s.stamps = stamps;
                    }
                    Err(e) => {
                        tracing::warn!("TLS client files changed but cannot be loaded yet: {e}")
                    }
                }
            }
        }
        s.config.clone()
    }

    /// A TLS connection to `uri`'s host and port, the server verified against
    /// `server.tls.server_name` or else that host.
    pub async fn connect(
        &self,
        uri: &http::Uri,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let host = uri
            .host()
            .ok_or_else(|| std::io::Error::other(format!("{uri}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let name = if self.files.server_name.is_empty() {
            host.clone()
        } else {
            self.files.server_name.clone()
        };
        let name = ServerName::try_from(name.clone())
            .map_err(|_| std::io::Error::other(format!("{name:?} is not a valid server name")))?;
        let tcp = TcpStream::connect((host.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(self.current())
            .connect(name, tcp)
            .await
    }
}

/// tonic's client TLS config from `files`, read now (so new channels pick up rotated
/// files).
pub fn client_config(files: &ClientFiles) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
    let mut c = tonic::transport::ClientTlsConfig::new().assume_http2(true);
    if !files.ca.is_empty() {
        let pem = read("ca", Path::new(&files.ca))?;
        c = c.ca_certificate(tonic::transport::Certificate::from_pem(pem));
    }
    if !files.server_name.is_empty() {
        c = c.domain_name(files.server_name.clone());
    }
    if files.cert.is_empty() != files.key.is_empty() {
        return Err(TlsError::Invalid {
            key: "cert",
            message: "a client certificate needs its key, and a key its certificate".into(),
        });
    }
    if !files.cert.is_empty() {
        let cert = read("cert", Path::new(&files.cert))?;
        let key = read("key", Path::new(&files.key))?;
        c = c.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_default_and_reject_non_dns() {
        let cfg = TlsConfig::default();
        assert_eq!(worker_names(&cfg).expect("default").len(), 1);
        let cfg = TlsConfig {
            worker_names: vec!["not a name!".into()],
            ..TlsConfig::default()
        };
        let err = worker_names(&cfg).expect_err("invalid").to_string();
        assert!(err.contains("server.tls.worker_names"), "{err}");
    }

    #[test]
    fn garbage_is_no_certificate() {
        assert!(!is_service_cert(
            &CertificateDer::from(vec![1, 2, 3]),
            &worker_names(&TlsConfig::default()).expect("default")
        ));
    }
}
