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

#[tokio::test]
async fn tls_1_2_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca("hsm-mtls-ca");
    let files = write_server(dir.path(), &leaf(&root, "hsm-agent", true), &root);
    let config = server_config(&files).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(root.pem.as_bytes()).unwrap())
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("hsm-agent").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
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
