//! The health endpoints over a real socket, on a real SoftHSM2 token.

mod common;

use common::test_device;

use hsm_agent::device::Device;
use hsm_store::testing::{SoftHsm, TEST_PIN};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    (code, serde_json::from_str(body).unwrap())
}

async fn serve(device: Device) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = hsm_agent::health::router(Arc::new(device));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

#[tokio::test]
async fn a_connected_token_is_healthy_and_ready() {
    let hsm = SoftHsm::new();
    let addr = serve(test_device(&hsm, TEST_PIN)).await;
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(code, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["hsmConnected"], true);
    assert!(body["uptime"].as_str().unwrap().ends_with('s'));
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!((code, body), (200, serde_json::json!({"status": "ready"})));
}

#[tokio::test]
async fn a_refused_pin_is_degraded_and_not_ready_with_the_reason() {
    let hsm = SoftHsm::new();
    let addr = serve(test_device(&hsm, "4321")).await;
    let (code, body) = get(addr, "/healthz").await;
    assert_eq!(
        (code, &body["status"], &body["hsmConnected"]),
        (503, &"degraded".into(), &false.into())
    );
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 503);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["reason"], "hsm_token_unavailable");
    assert_eq!(body["detail"], "PinRefused");
    assert!(!body.to_string().contains("4321"));
}
