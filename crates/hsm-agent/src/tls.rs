//! mTLS for the agent's gRPC listener: TLS 1.3 only, a client certificate from the
//! configured CA required on every connection, and the server certificate re-read when its
//! files change (kubelet refreshes mounted Secrets in place), so a rotated certificate takes
//! effect without a restart.

use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Why TLS could not be set up. Each kind keeps the error beneath it as its source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: cannot read PEM")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The reader's error (I/O or PEM syntax).
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{path}: no certificate in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused what a file holds (a CA it cannot use, a key that does not fit).
    #[error("{path}: refused by rustls")]
    Rejected {
        /// The file.
        path: PathBuf,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built from the CA.
    #[error("cannot build the client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
    /// rustls refused the configuration.
    #[error("TLS configuration refused")]
    Config(#[source] rustls::Error),
}

/// The three files of the agent's mTLS, as mounted from the Secrets.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server key (PEM).
    pub key: PathBuf,
    /// The CA whose client certificates are accepted (PEM).
    pub client_ca: PathBuf,
}

fn pem_error(path: &Path) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + '_ {
    move |source| TlsError::Pem {
        path: path.to_path_buf(),
        source,
    }
}

fn rejected(path: &Path) -> impl Fn(rustls::Error) -> TlsError + '_ {
    move |source| TlsError::Rejected {
        path: path.to_path_buf(),
        source,
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_key(files: &TlsFiles) -> Result<CertifiedKey, TlsError> {
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(pem_error(&files.key))?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(rejected(&files.cert))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Serves the current certificate, reloading it when the files change. A reload that fails
/// (a half-written file) keeps the previous certificate.
#[derive(Debug)]
struct ReloadingCert {
    files: TlsFiles,
    current: parking_lot::Mutex<(Arc<CertifiedKey>, Option<SystemTime>, Option<SystemTime>)>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock();
        let stamps = (modified(&self.files.cert), modified(&self.files.key));
        if stamps != (current.1, current.2) {
            match load_key(&self.files) {
                Ok(key) => {
                    tracing::info!("reloaded the agent's TLS certificate");
                    *current = (Arc::new(key), stamps.0, stamps.1);
                }
                Err(e) => tracing::warn!(
                    error = %hsm_store::error::chain(&e),
                    "keeping the previous TLS certificate"
                ),
            }
        }
        Some(current.0.clone())
    }
}

/// The rustls configuration of the agent's listener.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in read_certs(&files.client_ca)? {
        roots.add(ca).map_err(rejected(&files.client_ca))?;
    }
    let verifier: Arc<dyn ClientCertVerifier> =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(TlsError::Verifier)?;
    let key = load_key(files)?;
    let resolver = ReloadingCert {
        current: parking_lot::Mutex::new((
            Arc::new(key),
            modified(&files.cert),
            modified(&files.key),
        )),
        files: files.clone(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Accepted, authenticated connections, for `tonic`'s `serve_with_incoming`. Each handshake
/// runs on its own task, so a slow or hostile client cannot hold up the others; failed
/// handshakes (no certificate, another CA) are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<std::io::Result<TlsStream<tokio::net::TcpStream>>> {
    let (tx, rx) = mpsc::channel(16);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // Small gRPC frames must not wait for Nagle's algorithm (40 ms per call).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let handshake =
                    tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                        .await;
                match handshake {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn a_broken_file_keeps_the_error_beneath() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("missing.crt"),
            key: dir.path().join("missing.key"),
            client_ca: dir.path().join("missing-ca.crt"),
        };
        let error = server_config(&files).unwrap_err();
        let io = error
            .source()
            .and_then(|pem| pem.downcast_ref::<rustls_pki_types::pem::Error>())
            .expect("the PEM reader's error is the source");
        assert!(
            matches!(io, rustls_pki_types::pem::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound),
            "{io:?}"
        );
        std::fs::write(&files.client_ca, "no PEM here").unwrap();
        let error = server_config(&files).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");
    }
}
