//! What a gRPC read costs the module, counted by OpenSC's pkcs11-spy in front of SoftHSM2:
//! a warm ReadSecret of a 5-key secret is 5 calls, one `C_GetAttributeValue` per key (the
//! floor: the index knows every handle and size, and the device holds its session).

use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_agent::service::AgentService;
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_proto::v1::{ReadSecretRequest, SecretData, WriteSecretRequest};
use hsm_store::testing::{Pkcs11Spy, SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_grpc_read_of_five_keys_is_five_module_calls() {
    let spy = Pkcs11Spy::in_front_of(SOFTHSM2_MODULE);
    let hsm = SoftHsm::on_module(spy.module());
    let device = Device::new(
        DeviceConfig::new(spy.module(), hsm.selector()),
        Box::new(FixedPin(TEST_PIN.into())),
    );
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
    let mut client = HsmAgentClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let data: std::collections::BTreeMap<String, Vec<u8>> = (0..5)
        .map(|k| (format!("key{k}"), vec![b'x'; 1024]))
        .collect();
    client
        .write_secret(WriteSecretRequest {
            path: "db/five".into(),
            secret_data: Some(SecretData { data: data.clone() }),
            metadata: None,
        })
        .await
        .unwrap();
    let read = || {
        let mut client = client.clone();
        async move {
            client
                .read_secret(ReadSecretRequest {
                    path: "db/five".into(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    read().await;
    let before = spy.calls().len();
    let answer = read().await;
    let calls = spy.calls().split_off(before);
    assert_eq!(answer.secret_data.unwrap().data, data);
    assert_eq!(
        calls,
        vec!["C_GetAttributeValue"; 5],
        "a warm gRPC read of 5 keys made {} module calls",
        calls.len()
    );
}
