//! Everything the agent logs at trace level during a full session over mTLS, from every
//! crate (tonic, h2, hyper, rustls included), holds no secret value and no PIN — the correct
//! PIN, the new one and a wrong one — in any of the forms a log could carry them: as text, as
//! hex in either case, as base64, or as a Rust byte-array `Debug` (`[86, 65, …]`). The log is
//! captured without colour, so nothing hides between escape codes. The check is then shown to
//! work: a test-only interceptor logs a request, and the value is caught in each form.

mod common;

use base64::Engine;
use common::{Ca, ca, leaf, test_device};
use hsm_agent::device::Device;
use hsm_agent::service::AgentService;
use hsm_agent::tls::{TlsFiles, incoming, server_config};
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_proto::v1::*;
use hsm_store::testing::leaks;
use hsm_store::testing::{CapturedLogs, SoftHsm, TEST_PIN};
use secrecy::SecretString;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const SECRET: &str = "VALUE-d41d8cd98f00b204";
/// A value that is not text: only its encoded forms could show.
const BINARY: [u8; 12] = [
    0xde, 0xad, 0xbe, 0xef, 0x00, 0x9f, 0x41, 0xc3, 0x28, 0xfe, 0x7a, 0x10,
];
const CORRECT_PIN: &str = "CORRECT-PIN-48151623";
const NEW_PIN: &str = "NEW-PIN-918273645";
const WRONG_PIN: &str = "WRONG-PIN-555111999";

fn needles() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("the secret value", SECRET.as_bytes()),
        ("the binary value", &BINARY),
        ("the correct PIN", CORRECT_PIN.as_bytes()),
        ("the new PIN", NEW_PIN.as_bytes()),
        ("the wrong PIN", WRONG_PIN.as_bytes()),
    ]
}

fn tls_files(dir: &std::path::Path, root: &Ca) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: dir.join("ca.crt"),
    };
    let (cert, key) = leaf(root, "hsm-agent", true);
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    std::fs::write(&files.client_ca, &root.pem).unwrap();
    files
}

/// Serves `device` over mTLS; `interceptor` sees every request first.
async fn serve(
    device: Device,
    files: &TlsFiles,
    root: &Ca,
    interceptor: fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
) -> HsmAgentClient<Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stream = incoming(listener, server_config(files).unwrap());
    let service =
        HsmAgentServer::with_interceptor(AgentService::new(Arc::new(device)), interceptor);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(stream)
            .await
            .unwrap();
    });
    let (cert, key) = leaf(root, "hsm-manager", false);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&root.pem))
        .domain_name("hsm-agent")
        .identity(Identity::from_pem(cert, key));
    let channel = Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    HsmAgentClient::new(channel)
}

fn nothing(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    Ok(request)
}

/// A token whose user PIN is [`CORRECT_PIN`].
fn token_with_correct_pin() -> SoftHsm {
    let hsm = SoftHsm::new();
    hsm.open()
        .unwrap()
        .change_pin(
            &SecretString::from(TEST_PIN),
            &SecretString::from(CORRECT_PIN),
        )
        .unwrap();
    hsm
}

fn data(values: &[(&str, &[u8])]) -> Option<SecretData> {
    Some(SecretData {
        data: values
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect(),
    })
}

/// A whole session: a refused PIN, writes, a watch, reads, refused input carrying the
/// value, a PIN change refused and one accepted, and reads with the new PIN.
async fn session(files: &TlsFiles, root: &Ca) {
    let refused = token_with_correct_pin();
    let mut unavailable = serve(test_device(&refused, WRONG_PIN), files, root, nothing).await;
    unavailable
        .list_secrets(ListSecretsRequest::default())
        .await
        .unwrap_err();

    let hsm = token_with_correct_pin();
    let mut client = serve(test_device(&hsm, CORRECT_PIN), files, root, nothing).await;
    let mut watch = client
        .watch_changes(WatchChangesRequest { since_version: 0 })
        .await
        .unwrap()
        .into_inner();
    let values = data(&[("password", SECRET.as_bytes()), ("blob", &BINARY)]);
    client
        .write_secret(WriteSecretRequest {
            path: "db".into(),
            secret_data: values.clone(),
            metadata: Some(SecretMetadata {
                description: "ordinary".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    let read = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap();
    assert_eq!(read.into_inner().secret_data, values);
    client.get_index(GetIndexRequest {}).await.unwrap();
    client
        .write_secret(WriteSecretRequest {
            path: "BAD".into(),
            secret_data: values.clone(),
            metadata: None,
        })
        .await
        .unwrap_err();
    client
        .change_pin(ChangePinRequest {
            old_pin: WRONG_PIN.into(),
            new_pin: NEW_PIN.into(),
        })
        .await
        .unwrap_err();
    client
        .change_pin(ChangePinRequest {
            old_pin: CORRECT_PIN.into(),
            new_pin: NEW_PIN.into(),
        })
        .await
        .unwrap();
    client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap();
}

/// Test-only: logs each request's metadata and, as a careless handler might, a value.
fn careless(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    tracing::debug!(metadata = ?request.metadata(), "request");
    tracing::debug!(value = ?SECRET.as_bytes(), "careless: the value as bytes");
    Ok(request)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_over_mtls_logs_no_secret_and_no_pin() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let dir = tempfile::tempdir().unwrap();
    let root = ca("hsm-leak-ca");
    let files = tls_files(dir.path(), &root);

    session(&files, &root).await;
    let logs = captured.text();
    assert!(!logs.contains('\u{1b}'), "the capture has no colour codes");
    for (what, marker) in [
        ("the session", "token connected"),
        ("h2", "h2::"),
        ("rustls", "rustls::"),
        ("tonic", "tonic::"),
    ] {
        assert!(logs.contains(marker), "{what} was logged and searched");
    }
    let found = leaks(&logs, &needles());
    assert!(found.is_empty(), "leaked: {found:?}");

    // The check catches what it is meant to: a value logged on purpose, in each form.
    let before = captured.text().len();
    let mut careless_client = serve(
        test_device(&token_with_correct_pin(), CORRECT_PIN),
        &files,
        &root,
        careless,
    )
    .await;
    careless_client
        .list_secrets(ListSecretsRequest::default())
        .await
        .unwrap();
    tracing::debug!("careless: {}", hex::encode(BINARY));
    tracing::debug!("careless: {}", hex::encode_upper(CORRECT_PIN));
    tracing::trace!(
        "careless: {}",
        base64::engine::general_purpose::STANDARD.encode(NEW_PIN)
    );
    tracing::info!(pin = WRONG_PIN, "careless");
    let canary = captured.text().split_off(before);
    let found = leaks(&canary, &needles());
    for expected in [
        "the secret value as byte-array Debug",
        "the binary value as hex",
        "the correct PIN as HEX",
        "the new PIN as base64",
        "the wrong PIN as text",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "not caught: {expected} (found {found:?})"
        );
    }
}
