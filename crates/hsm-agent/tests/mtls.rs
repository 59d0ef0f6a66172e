//! The agent's listener requires a client certificate from its CA, speaks only TLS 1.3, and
//! picks up a rotated server certificate without a restart. Real sockets, real handshakes.

use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_agent::service::AgentService;
use hsm_agent::tls::{TlsFiles, incoming, server_config};
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_proto::v1::{GetInfoRequest, ListSecretsRequest};
use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
mod common;

use common::{Ca, ca, leaf};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn write_server(dir: &Path, cert: &(String, String), client_ca: &Ca) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: dir.join("ca.crt"),
    };
    std::fs::write(&files.cert, &cert.0).unwrap();
    std::fs::write(&files.key, &cert.1).unwrap();
    std::fs::write(&files.client_ca, &client_ca.pem).unwrap();
    files
}

async fn serve(hsm: &SoftHsm, files: &TlsFiles) -> std::net::SocketAddr {
    let device = Arc::new(Device::new(
        DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector()),
        Box::new(FixedPin(TEST_PIN.into())),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = incoming(listener, server_config(files).unwrap());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(HsmAgentServer::new(AgentService::new(device)))
            .serve_with_incoming(stream)
            .await
            .unwrap();
    });
    addr
}

async fn client(
    addr: std::net::SocketAddr,
    trusted: &Ca,
    identity: Option<&(String, String)>,
) -> Result<HsmAgentClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&trusted.pem))
        .domain_name("hsm-agent");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(HsmAgentClient::new(channel))
}

async fn works(client: Result<HsmAgentClient<Channel>, tonic::transport::Error>) -> bool {
    match client {
        Ok(mut c) => c.list_secrets(ListSecretsRequest::default()).await.is_ok(),
        Err(_) => false,
    }
}

#[tokio::test]
async fn only_clients_of_the_ca_get_in() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let (root, other) = (ca("hsm-mtls-ca"), ca("someone-else"));
    let files = write_server(dir.path(), &leaf(&root, "hsm-agent", true), &root);
    let addr = serve(&hsm, &files).await;

    let manager = leaf(&root, "hsm-manager", false);
    let mut good = client(addr, &root, Some(&manager)).await.unwrap();
    let info = good.get_info(GetInfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.hsm_info.unwrap().label, hsm.label);

    assert!(
        !works(client(addr, &root, None).await).await,
        "no client certificate"
    );
    let stranger = leaf(&other, "hsm-manager", false);
    assert!(
        !works(client(addr, &root, Some(&stranger)).await).await,
        "a certificate from another CA"
    );
    // A plaintext client gets nothing either.
    let plain = HsmAgentClient::connect(format!("http://{addr}")).await;
    assert!(!works(plain).await, "plaintext");
}

/// A TLS 1.2 handshake against `config` by a client that presents a valid certificate of
/// `root`'s CA, so that nothing but the protocol version can make it fail.
async fn tls_1_2_handshake(
    config: Arc<rustls::ServerConfig>,
    root: &Ca,
) -> Result<(), std::io::Error> {
    use rustls_pki_types::pem::PemObject;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        acceptor.accept(tcp).await.map(drop)
    });
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(root.pem.as_bytes()).unwrap())
        .unwrap();
    let (cert, key) = leaf(root, "hsm-manager", false);
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
        rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("hsm-agent").unwrap();
    let client = connector.connect(name, tcp).await.map(drop);
    let _ = server.await;
    client
}

/// The alert a refused handshake received, if that is why it failed.
fn alert(error: &std::io::Error) -> Option<rustls::AlertDescription> {
    match error.get_ref()?.downcast_ref::<rustls::Error>()? {
        rustls::Error::AlertReceived(alert) => Some(*alert),
        _ => None,
    }
}

#[tokio::test]
async fn tls_1_2_is_refused_with_a_protocol_version_alert() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("hsm-mtls-ca");
    let files = write_server(dir.path(), &leaf(&root, "hsm-agent", true), &root);
    let refused = tls_1_2_handshake(server_config(&files).unwrap(), &root)
        .await
        .expect_err("a TLS 1.2 client got in");
    assert_eq!(
        alert(&refused),
        Some(rustls::AlertDescription::ProtocolVersion),
        "refused for another reason: {refused}"
    );
}

/// The check above fails where it should: the same client, certificate and all, completes
/// its handshake with a server that allows TLS 1.2 beside 1.3.
#[tokio::test]
async fn the_tls_1_2_client_gets_in_where_tls_1_2_is_allowed() {
    use rustls_pki_types::pem::PemObject;
    let root = ca("hsm-mtls-ca");
    let (cert, key) = leaf(&root, "hsm-agent", true);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(root.pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let lenient = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
            rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap();
    tls_1_2_handshake(Arc::new(lenient), &root)
        .await
        .expect("TLS 1.2 with a valid client certificate, where the server allows it");
}

#[tokio::test]
async fn a_rotated_server_certificate_is_used_without_a_restart() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (ca("first-ca"), ca("second-ca"));
    let files = write_server(dir.path(), &leaf(&first, "hsm-agent", true), &first);
    let addr = serve(&hsm, &files).await;
    let manager = leaf(&first, "hsm-manager", false);
    assert!(works(client(addr, &first, Some(&manager)).await).await);
    assert!(!works(client(addr, &second, Some(&manager)).await).await);

    // The kubelet swaps the mounted certificate: now signed by the second CA.
    std::thread::sleep(Duration::from_millis(20));
    let rotated = leaf(&second, "hsm-agent", true);
    std::fs::write(&files.key, &rotated.1).unwrap();
    std::fs::write(&files.cert, &rotated.0).unwrap();
    assert!(works(client(addr, &second, Some(&manager)).await).await);
}
