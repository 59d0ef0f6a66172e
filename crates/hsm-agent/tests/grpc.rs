//! The agent's gRPC service over a real socket, on a real SoftHSM2 token.

mod common;

use common::test_device;

use hsm_agent::service::AgentService;
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_proto::v1::*;
use hsm_store::testing::{SoftHsm, TEST_PIN};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;

async fn serve(hsm: &SoftHsm, pin: &str) -> (HsmAgentClient<Channel>, AgentService) {
    let device = Arc::new(test_device(hsm, pin));
    // A long idle poll: events in the tests below must be pushed to arrive in time.
    let service = AgentService::new(device).with_poll_interval(Duration::from_secs(120));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HsmAgentServer::new(service.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let client = HsmAgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    (client, service)
}

fn data(pairs: &[(&str, &str)]) -> Option<SecretData> {
    Some(SecretData {
        data: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
    })
}

fn write(path: &str, pairs: &[(&str, &str)]) -> WriteSecretRequest {
    WriteSecretRequest {
        path: path.into(),
        secret_data: data(pairs),
        metadata: Some(SecretMetadata {
            description: "d".into(),
            labels: BTreeMap::from([("sync.version".into(), "3".into())]),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn the_go_rpcs_work_end_to_end() {
    let hsm = SoftHsm::new();
    let (mut client, _) = serve(&hsm, TEST_PIN).await;
    let info = client
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.hsm_info.unwrap().label, hsm.label);
    client
        .write_secret(write("db", &[("user", "u"), ("password", "p")]))
        .await
        .unwrap();
    client
        .write_secret(write("team/db.prod", &[("k", "v")]))
        .await
        .unwrap();
    let read = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.secret_data.unwrap().data["password"], b"p");
    let list = client
        .list_secrets(ListSecretsRequest {
            prefix: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(list.into_inner().paths, ["db", "team/db.prod"]);
    let checksum = client
        .get_checksum(GetChecksumRequest { path: "db".into() })
        .await
        .unwrap()
        .into_inner()
        .checksum;
    assert_eq!(
        checksum,
        hsm_store::checksum::checksum([("password", b"p".as_slice()), ("user", b"u")])
    );
    let meta = client
        .read_metadata(ReadMetadataRequest { path: "db".into() })
        .await
        .unwrap()
        .into_inner()
        .metadata
        .unwrap();
    assert_eq!(
        (
            meta.description.as_str(),
            meta.labels["sync.version"].as_str()
        ),
        ("d", "3")
    );
    client
        .delete_secret(DeleteSecretRequest {
            path: "db".into(),
            key: "user".into(),
        })
        .await
        .unwrap();
    let read = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap();
    assert_eq!(read.into_inner().secret_data.unwrap().data.len(), 1);
    client
        .delete_secret(DeleteSecretRequest {
            path: "db".into(),
            key: String::new(),
        })
        .await
        .unwrap();
    let err = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        client
            .is_connected(IsConnectedRequest {})
            .await
            .unwrap()
            .into_inner()
            .connected
    );
    assert_eq!(
        client
            .health(HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .status,
        "healthy"
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field() {
    let hsm = SoftHsm::new();
    let (mut client, _) = serve(&hsm, TEST_PIN).await;
    for (request, field) in [
        (write("Upper", &[("k", "v")]), "path"),
        (write("", &[("k", "v")]), "path"),
        (write("a//b", &[("k", "v")]), "path"),
        (
            write("ok", &[("bad/key", "v")]),
            "secret_data.data[\"bad/key\"]",
        ),
        (
            write("ok", &[("_metadata", "v")]),
            "secret_data.data[\"_metadata\"]",
        ),
        (
            WriteSecretRequest {
                path: "ok".into(),
                secret_data: None,
                metadata: None,
            },
            "secret_data",
        ),
    ] {
        let err = client.write_secret(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let big = "x".repeat(hsm_agent::validate::MAX_SECRET_BYTES + 1);
    let err = client
        .write_secret(write("ok", &[("k", &big)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(!err.message().contains("xxxx"));
    let err = client
        .read_secret(ReadSecretRequest {
            path: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for (old, new) in [("", "1"), ("1", ""), ("1", "1")] {
        let err = client
            .change_pin(ChangePinRequest {
                old_pin: old.into(),
                new_pin: new.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
    assert!(
        client
            .list_secrets(ListSecretsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .paths
            .is_empty()
    );
}

#[tokio::test]
async fn a_refused_pin_makes_the_agent_unavailable() {
    let hsm = SoftHsm::new();
    let (mut client, _) = serve(&hsm, "0000").await;
    let err = client
        .list_secrets(ListSecretsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("PinRefused"), "{}", err.message());
    assert!(!err.message().contains("0000"));
    assert!(
        !client
            .is_connected(IsConnectedRequest {})
            .await
            .unwrap()
            .into_inner()
            .connected
    );
    assert_eq!(
        client
            .health(HealthRequest {})
            .await
            .unwrap()
            .into_inner()
            .status,
        "degraded"
    );
}

/// The next event, which must arrive well before the 120 s idle poll: events are pushed.
async fn next(stream: &mut tonic::Streaming<ChangeEvent>) -> change_event::Event {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap()
        .event
        .unwrap()
}

#[tokio::test]
async fn the_index_and_the_change_stream() {
    let hsm = SoftHsm::new();
    let (mut client, service) = serve(&hsm, TEST_PIN).await;
    client
        .write_secret(write("a", &[("k", "1")]))
        .await
        .unwrap();
    let index = client
        .get_index(GetIndexRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(index.entries.len(), 1);
    assert_eq!(index.entries[0].name, "a");
    assert_eq!(index.entries[0].sync_version, 3);
    assert!(index.entries[0].checksum.starts_with("sha256:"));
    let serial = hsm
        .module
        .tokens()
        .unwrap()
        .into_iter()
        .find(|(_, info)| info.label == hsm.label)
        .unwrap()
        .1
        .serial_number;
    assert_eq!(index.serial_number, serial);

    let mut stream = client
        .watch_changes(WatchChangesRequest {
            since_version: index.version,
        })
        .await
        .unwrap()
        .into_inner();
    let mut writer = client.clone();
    writer
        .write_secret(write("b", &[("k", "2")]))
        .await
        .unwrap();
    match next(&mut stream).await {
        change_event::Event::Upsert(e) => assert_eq!(e.name, "b"),
        other => panic!("{other:?}"),
    }
    writer
        .delete_secret(DeleteSecretRequest {
            path: "a".into(),
            key: String::new(),
        })
        .await
        .unwrap();
    match next(&mut stream).await {
        change_event::Event::Removed(r) => assert_eq!(r.name, "a"),
        other => panic!("{other:?}"),
    }
    service.rescan().await.unwrap();
    match next(&mut stream).await {
        change_event::Event::Resync(r) => assert_eq!(r.reason, "rescan"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn change_pin_keeps_serving_with_the_new_pin() {
    let hsm = SoftHsm::new();
    let (mut client, service) = serve(&hsm, TEST_PIN).await;
    client
        .write_secret(write("a", &[("k", "1")]))
        .await
        .unwrap();
    let err = client
        .change_pin(ChangePinRequest {
            old_pin: "9999".into(),
            new_pin: "5555".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    client
        .change_pin(ChangePinRequest {
            old_pin: TEST_PIN.into(),
            new_pin: "5555".into(),
        })
        .await
        .unwrap();
    client
        .read_secret(ReadSecretRequest { path: "a".into() })
        .await
        .unwrap();
    drop(service);
}
