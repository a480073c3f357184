//! TLS for the Order API's two ports, with rustls on the `ring` provider (no
//! system OpenSSL).
//!
//! Owns: reading the certificate chain and private key (PEM), the rustls
//! server configuration REST uses (ALPN `h2` and `http/1.1`), the identity
//! tonic's own TLS takes for gRPC, and [`TlsListener`], the accept loop that
//! hands axum only connections whose handshake finished.
//! Must never: let one slow or failing handshake hold up accepting others
//! (each runs in its own task, bounded by `TLS_HANDSHAKE_TIMEOUT_MS`), end
//! the server on a client's handshake error, or log key material.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::debug;

use super::error::ApiError;

/// How long a client may take to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Finished handshakes waiting for axum to take them.
const HANDSHAKES_READY_MAX: usize = 64;

/// Where the certificate chain and its private key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The certificate chain and key, read once at start.
pub(crate) struct TlsMaterial {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    rest: Arc<ServerConfig>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ApiError> {
    std::fs::read(path)
        .map_err(|e| ApiError::Tls(format!("reading the {what} {}: {e}", path.display())))
}

impl TlsMaterial {
    pub(crate) fn load(config: &TlsConfig) -> Result<Self, ApiError> {
        let cert_pem = read(&config.cert_file, "certificate")?;
        let key_pem = read(&config.key_file, "private key")?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Tls(format!("{}: {e}", config.cert_file.display())))?;
        if certs.is_empty() {
            return Err(ApiError::Tls(format!(
                "{} holds no certificate",
                config.cert_file.display()
            )));
        }
        // The error names the file only: its text could quote the key.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
            ApiError::Tls(format!(
                "{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                config.key_file.display()
            ))
        })?;
        // ring rather than aws-lc-rs: no cmake or C toolchain beyond cc,
        // at the cost of no post-quantum key exchange (hence the allow).
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let mut rest = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| ApiError::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| ApiError::Tls(format!("the certificate and key do not fit: {e}")))?;
        rest.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsMaterial {
            cert_pem,
            key_pem,
            rest: Arc::new(rest),
        })
    }

    /// tonic's TLS settings for the gRPC port, from the same files.
    pub(crate) fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }

    pub(crate) fn rest_listener(&self, tcp: TcpListener) -> TlsListener {
        TlsListener::new(tcp, TlsAcceptor::from(Arc::clone(&self.rest)))
    }
}

/// An axum listener that yields TLS connections. A task accepts TCP and
/// runs each handshake in its own task; finished ones queue for axum.
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        // local_addr of a bound listener only fails on a closed socket;
        // axum asks for it once, and 0.0.0.0:0 then reads as unknown.
        let local_addr = tcp
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, ready) = mpsc::channel(HANDSHAKES_READY_MAX);
        let accepting = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait, as axum does.
                        debug!(error = %e, "REST accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
                        acceptor.accept(stream),
                    )
                    .await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        // A plain HTTP request, a scanner, a client that
                        // does not trust us: its problem, not the server's.
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener {
            local_addr,
            ready,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task only ends when aborted, by our own drop.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}
