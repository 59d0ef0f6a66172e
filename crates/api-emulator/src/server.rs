//! The HTTP server: the emulator on a 127.0.0.1 port, for clients in other processes
//! (kubectl, the manager binary), over plain HTTP or HTTPS with a certificate of the
//! emulator's cluster CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::portforward::ServerShutdown;
use crate::{Emulator, EmulatorError, kubeconfig};

/// A running server. Dropping it stops the listener and every open connection (watches
/// and port-forward tunnels included).
pub struct Server {
    addr: SocketAddr,
    tls: bool,
    ca_pem: String,
    admin_token: String,
    task: tokio::task::JoinHandle<()>,
    /// Dropped with the server: upgraded connections (which hyper hands over and no longer
    /// tracks) end when it goes.
    _shutdown: tokio::sync::watch::Sender<()>,
}

impl Server {
    /// Binds `addr` and starts serving `emu`, over TLS when a configuration is given.
    pub async fn start(
        emu: Emulator,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Self, EmulatorError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| EmulatorError::Io {
                context: format!("binding {addr}"),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| EmulatorError::Io {
            context: "reading the bound address".into(),
            source,
        })?;
        let ca_pem = emu.ca_pem();
        let admin_token = emu.admin_token();
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let (shutdown, stopped) = tokio::sync::watch::channel(());
        let task = tokio::spawn(async move {
            // Connections live in the set, so aborting this task ends them too.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let _ = stream.set_nodelay(true);
                        let stopped = ServerShutdown(stopped.clone());
                        let service = TowerToHyperService::new(
                            tower::ServiceBuilder::new()
                                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                                    req.extensions_mut().insert(stopped.clone());
                                    req
                                })
                                .service(emu.clone()),
                        );
                        let acceptor = acceptor.clone();
                        connections.spawn(async move {
                            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                            let served = match acceptor {
                                Some(acceptor) => match acceptor.accept(stream).await {
                                    Ok(tls) => builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await,
                                    Err(e) => {
                                        tracing::debug!("TLS handshake failed: {e}");
                                        return;
                                    }
                                },
                                None => builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await,
                            };
                            if let Err(e) = served {
                                tracing::debug!("connection ended: {e}");
                            }
                        });
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Ok(Server {
            addr,
            tls: is_tls,
            ca_pem,
            admin_token,
            task,
            _shutdown: shutdown,
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, or `https://` when serving TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The kubeconfig for this server, as text: the admin's token, and the cluster CA when
    /// serving TLS.
    pub fn kubeconfig(&self) -> String {
        kubeconfig::render(
            &self.url(),
            self.tls.then_some(self.ca_pem.as_str()),
            &self.admin_token,
        )
    }

    /// Writes the kubeconfig to `path`, creating its directory if needed.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), EmulatorError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| EmulatorError::Io {
                context: format!("creating {}", dir.display()),
                source,
            })?;
        }
        std::fs::write(path, self.kubeconfig()).map_err(|source| EmulatorError::Io {
            context: format!("writing {}", path.display()),
            source,
        })
    }

    /// Serves until the task ends (never, unless it panics); for the binary.
    pub async fn wait(self) {
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
