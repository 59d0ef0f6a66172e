//! Every RPC over a real socket: the generated client and server agree, and the paths on the
//! wire are the Go agent's (`/hsm.v1.HSMAgent/<Rpc>`), including the streaming WatchChanges.

use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::{HsmAgent, HsmAgentServer};
use hsm_proto::v1::*;
use std::sync::{Arc, Mutex};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// Answers every RPC with a fixed response: the test is about the wire, not the agent.
struct Canned;

type Result<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl HsmAgent for Canned {
    async fn get_info(&self, _: Request<GetInfoRequest>) -> Result<GetInfoResponse> {
        Ok(Response::new(GetInfoResponse::default()))
    }
    async fn read_secret(&self, _: Request<ReadSecretRequest>) -> Result<ReadSecretResponse> {
        Ok(Response::new(ReadSecretResponse::default()))
    }
    async fn write_secret(&self, _: Request<WriteSecretRequest>) -> Result<WriteSecretResponse> {
        Ok(Response::new(WriteSecretResponse::default()))
    }
    async fn read_metadata(&self, _: Request<ReadMetadataRequest>) -> Result<ReadMetadataResponse> {
        Ok(Response::new(ReadMetadataResponse::default()))
    }
    async fn delete_secret(&self, _: Request<DeleteSecretRequest>) -> Result<DeleteSecretResponse> {
        Ok(Response::new(DeleteSecretResponse::default()))
    }
    async fn list_secrets(&self, _: Request<ListSecretsRequest>) -> Result<ListSecretsResponse> {
        Ok(Response::new(ListSecretsResponse::default()))
    }
    async fn get_checksum(&self, _: Request<GetChecksumRequest>) -> Result<GetChecksumResponse> {
        Ok(Response::new(GetChecksumResponse::default()))
    }
    async fn is_connected(&self, _: Request<IsConnectedRequest>) -> Result<IsConnectedResponse> {
        Ok(Response::new(IsConnectedResponse { connected: true }))
    }
    async fn health(&self, _: Request<HealthRequest>) -> Result<HealthResponse> {
        Ok(Response::new(HealthResponse::default()))
    }
    async fn change_pin(&self, _: Request<ChangePinRequest>) -> Result<ChangePinResponse> {
        Ok(Response::new(ChangePinResponse::default()))
    }
    async fn get_index(&self, _: Request<GetIndexRequest>) -> Result<GetIndexResponse> {
        Ok(Response::new(GetIndexResponse::default()))
    }
    type WatchChangesStream =
        tokio_stream::Iter<std::vec::IntoIter<std::result::Result<ChangeEvent, Status>>>;
    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Result<Self::WatchChangesStream> {
        let since = request.into_inner().since_version;
        let events = vec![
            Ok(ChangeEvent {
                event: Some(change_event::Event::Upsert(IndexEntry {
                    name: "a".into(),
                    version: since + 1,
                    ..Default::default()
                })),
            }),
            Ok(ChangeEvent {
                event: Some(change_event::Event::Resync(Resync {
                    version: since + 2,
                    reason: "rescan".into(),
                })),
            }),
        ];
        Ok(Response::new(tokio_stream::iter(events)))
    }
}

#[tokio::test]
async fn every_rpc_travels_under_its_go_path() {
    let paths = Arc::new(Mutex::new(Vec::<String>::new()));
    let recorded = paths.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recording =
        tower::util::MapRequestLayer::new(move |req: http::Request<tonic::body::Body>| {
            recorded.lock().unwrap().push(req.uri().path().to_owned());
            req
        });
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .layer(recording)
            .add_service(HsmAgentServer::new(Canned))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    let mut client = HsmAgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client.get_info(GetInfoRequest {}).await.unwrap();
    client
        .read_secret(ReadSecretRequest::default())
        .await
        .unwrap();
    client
        .write_secret(WriteSecretRequest::default())
        .await
        .unwrap();
    client
        .read_metadata(ReadMetadataRequest::default())
        .await
        .unwrap();
    client
        .delete_secret(DeleteSecretRequest::default())
        .await
        .unwrap();
    client
        .list_secrets(ListSecretsRequest::default())
        .await
        .unwrap();
    client
        .get_checksum(GetChecksumRequest::default())
        .await
        .unwrap();
    assert!(
        client
            .is_connected(IsConnectedRequest {})
            .await
            .unwrap()
            .into_inner()
            .connected
    );
    client.health(HealthRequest {}).await.unwrap();
    client
        .change_pin(ChangePinRequest::default())
        .await
        .unwrap();
    client.get_index(GetIndexRequest {}).await.unwrap();
    let mut stream = client
        .watch_changes(WatchChangesRequest { since_version: 41 })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        events.push(event.event.unwrap());
    }
    assert!(matches!(&events[0], change_event::Event::Upsert(e) if e.version == 42));
    assert!(matches!(&events[1], change_event::Event::Resync(r) if r.version == 43));

    let expected: Vec<String> = [
        "GetInfo",
        "ReadSecret",
        "WriteSecret",
        "ReadMetadata",
        "DeleteSecret",
        "ListSecrets",
        "GetChecksum",
        "IsConnected",
        "Health",
        "ChangePIN",
        "GetIndex",
        "WatchChanges",
    ]
    .iter()
    .map(|m| format!("/hsm.v1.HSMAgent/{m}"))
    .collect();
    assert_eq!(*paths.lock().unwrap(), expected);
}
