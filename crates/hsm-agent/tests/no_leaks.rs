//! Everything the agent logs at debug level during a full session, from every crate
//! (tonic, h2, hyper, rustls included), holds no secret value and no PIN.

mod common;

use common::test_device;

use hsm_agent::device::Device;
use hsm_agent::service::AgentService;
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_proto::v1::*;
use hsm_store::testing::CapturedLogs;
use hsm_store::testing::{SoftHsm, TEST_PIN};
use std::sync::Arc;
use std::time::Duration;

const SECRET: &str = "VALUE-d41d8cd98f00b204";
const NEW_PIN: &str = "918273";
const WRONG_PIN: &str = "555111";

async fn serve(device: Device) -> HsmAgentClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = AgentService::new(Arc::new(device));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(HsmAgentServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    HsmAgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logs_no_secret_and_no_pin() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();

    let refused = SoftHsm::new();
    let mut unavailable = serve(test_device(&refused, WRONG_PIN)).await;
    unavailable
        .list_secrets(ListSecretsRequest::default())
        .await
        .unwrap_err();

    let hsm = SoftHsm::new();
    let mut client = serve(test_device(&hsm, TEST_PIN)).await;
    let data = |value: &str| {
        Some(SecretData {
            data: [("password".to_owned(), value.as_bytes().to_vec())].into(),
        })
    };
    let mut watch = client
        .watch_changes(WatchChangesRequest { since_version: 0 })
        .await
        .unwrap()
        .into_inner();
    client
        .write_secret(WriteSecretRequest {
            path: "db".into(),
            secret_data: data(SECRET),
            metadata: Some(SecretMetadata {
                description: "ordinary".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), watch.message()).await;
    client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap();
    client.get_index(GetIndexRequest {}).await.unwrap();
    // Refused input that carries the secret value.
    client
        .write_secret(WriteSecretRequest {
            path: "BAD".into(),
            secret_data: data(SECRET),
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
            old_pin: TEST_PIN.into(),
            new_pin: NEW_PIN.into(),
        })
        .await
        .unwrap();
    client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap();

    let logs = captured.text();
    assert!(
        logs.contains("token connected"),
        "the session was logged:\n{logs}"
    );
    assert!(
        logs.contains("h2::"),
        "transport crates log at debug too, and are searched"
    );
    for needle in [SECRET, NEW_PIN, WRONG_PIN] {
        assert!(!logs.contains(needle), "{needle} appears in the logs");
    }
    // The user PIN is too short to search for on its own; it never follows "pin".
    assert!(!logs.to_lowercase().contains(&format!("pin={TEST_PIN}")));
}
