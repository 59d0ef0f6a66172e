//! The REST client's failure paths against a wiremock server speaking the manager's API:
//! 5xx, 401 with a cached token (refreshed once, never twice), timeouts, malformed bodies,
//! 206 partial answers, and the token exchange with ServiceAccount tokens from a real
//! TokenRequest (the API emulator).

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kubectl_hsm::auth::{ServiceAccountCredentials, ServiceAccountSource};
use kubectl_hsm::cache::{Cache, CachedToken, TokenKind};
use kubectl_hsm::client::{ApiClient, ClientError, Credentials, Kind, StaticToken, Transport};
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const TIMEOUT: Duration = Duration::from_secs(5);

fn ok(data: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"success": true, "message": "ok", "data": data}))
}

fn failure(status: u16, code: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "success": false,
        "error": {"code": code, "message": message}
    }))
}

fn client(server: &MockServer) -> ApiClient {
    ApiClient::with_token(&server.uri(), "static-token", TIMEOUT).unwrap()
}

#[tokio::test]
async fn a_5xx_envelope_is_an_api_error_with_its_code() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(failure(500, "list_failed", "agent unreachable"))
        .mount(&server)
        .await;
    let e = client(&server).list().await.unwrap_err();
    assert_eq!(e.kind(), Kind::Other);
    assert_eq!(e.code(), Some("list_failed"));
    assert!(
        e.to_string()
            .contains("HTTP 500 list_failed: agent unreachable"),
        "{e}"
    );
}

#[tokio::test]
async fn a_5xx_without_json_says_the_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"))
        .mount(&server)
        .await;
    let e = client(&server).list().await.unwrap_err();
    assert!(matches!(e, ClientError::Api { status: 502, .. }), "{e:?}");
    assert!(
        e.to_string().contains("502 Bad Gateway") || e.to_string().contains("HTTP 502"),
        "{e}"
    );
}

#[tokio::test]
async fn a_503_means_no_devices() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(failure(503, "no_agents", "no HSM agents available"))
        .mount(&server)
        .await;
    let e = client(&server).device_status().await.unwrap_err();
    assert_eq!(e.kind(), Kind::NoDevices);
}

#[tokio::test]
async fn a_slow_manager_times_out() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(ok(json!({"secrets": [], "count": 0})).set_delay(Duration::from_secs(3)))
        .mount(&server)
        .await;
    let api = ApiClient::with_token(&server.uri(), "t", Duration::from_millis(200)).unwrap();
    let started = std::time::Instant::now();
    let e = api.list().await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert_eq!(e.kind(), Kind::Unreachable);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let api = ApiClient::with_token(&format!("http://127.0.0.1:{port}"), "t", TIMEOUT).unwrap();
    let e = api.list().await.unwrap_err();
    assert!(matches!(e, ClientError::Connect { .. }), "{e:?}");
    assert_eq!(e.kind(), Kind::Unreachable);
}

#[tokio::test]
async fn malformed_bodies_are_errors_that_quote_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"success\": tr"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets/db"))
        .respond_with(ok(json!({"path": "db", "data": {"password": "hunter2!"}})))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets/typed"))
        .respond_with(ok(json!({"path": "typed", "data": {"password": 73102938}})))
        .mount(&server)
        .await;
    let api = client(&server);
    let truncated = api.list().await.unwrap_err();
    assert!(
        matches!(truncated, ClientError::Malformed { status: 200, .. }),
        "{truncated:?}"
    );
    let no_data = api.device_status().await.unwrap_err();
    assert!(no_data.to_string().contains("without data"), "{no_data}");
    let not_base64 = api.get("db").await.unwrap_err();
    assert!(
        not_base64.to_string().contains("not base64"),
        "{not_base64}"
    );
    assert!(!not_base64.to_string().contains("hunter2"), "{not_base64}");
    let wrong_type = api.get("typed").await.unwrap_err();
    assert!(!wrong_type.to_string().contains("73102938"), "{wrong_type}");
    for e in [truncated, no_data, not_base64, wrong_type] {
        assert_eq!(e.kind(), Kind::Other);
    }
}

#[tokio::test]
async fn values_are_decoded_from_base64_and_written_as_strings() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets/db"))
        .respond_with(ok(json!({
            "path": "db",
            "data": {"user": "YWRtaW4=", "bin": "AJ+Slg=="},
            "checksum": "sha256:00",
            "deviceCount": 2
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/hsm/secrets/db"))
        .and(body_json(json!({"data": {"user": "admin"}})))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"success": true, "data": {"path": "db", "keys": 1}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let api = client(&server);
    let secret = api.get("db").await.unwrap().data;
    assert_eq!(secret.data["user"].as_text(), Some("admin"));
    assert_eq!(secret.data["bin"].expose(), [0u8, 159, 146, 150]);
    assert_eq!(secret.device_count, Some(2));
    let mut data = secret.data.clone();
    // Binary bytes cannot travel as a JSON string: refused before anything is sent.
    let e = api.write("db", &data).await.unwrap_err();
    assert!(
        matches!(e, ClientError::NotText { ref key } if key == "bin"),
        "{e:?}"
    );
    data.remove("bin");
    let reply = api.write("db", &data).await.unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(reply.data.keys, 1);
}

#[tokio::test]
async fn a_206_is_a_partial_reply_with_device_results() {
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .and(path("/api/v1/hsm/secrets/db"))
        .respond_with(ResponseTemplate::new(206).set_body_json(json!({
            "success": true,
            "message": "Secret deleted from 1/2 devices",
            "data": {
                "path": "db",
                "devices": 2,
                "deviceResults": {
                    "A1": {"success": true},
                    "B2": {"success": false, "error": "device unavailable"}
                }
            }
        })))
        .mount(&server)
        .await;
    let reply = client(&server).delete("db").await.unwrap();
    assert!(reply.partial());
    assert_eq!(
        reply.message.as_deref(),
        Some("Secret deleted from 1/2 devices")
    );
    assert!(!reply.data.device_results["B2"].success);
}

#[tokio::test]
async fn a_static_token_refused_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .and(header("authorization", "Bearer static-token"))
        .respond_with(failure(401, "INVALID_TOKEN", "invalid or expired token"))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server).list().await.unwrap_err();
    assert_eq!(e.kind(), Kind::Refused);
    assert_eq!(e.code(), Some("INVALID_TOKEN"));
}

#[tokio::test]
async fn health_is_sent_without_a_token() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/health"))
        .and(|r: &Request| !r.headers.contains_key("authorization"))
        .respond_with(ok(json!({"status": "healthy", "hsm_connected": true,
            "replication_enabled": false, "active_nodes": 1})))
        .mount(&server)
        .await;
    let api = ApiClient::new(
        Transport::new(&server.uri(), TIMEOUT, None).unwrap(),
        Arc::new(StaticToken(SecretString::from("t"))),
    );
    assert_eq!(api.health().await.unwrap().data.status, "healthy");
}

/// An emulated cluster with the ServiceAccount `kubectl-hsm` in `default`.
async fn cluster() -> (api_emulator::Emulator, kube::Client) {
    let emulator = api_emulator::Emulator::new();
    let kube = emulator.client();
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "kubectl-hsm"}})).unwrap();
    Api::<ServiceAccount>::namespaced(kube.clone(), "default")
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    (emulator, kube)
}

fn credentials(
    kube: kube::Client,
    server: &MockServer,
    cache: &Cache,
) -> ServiceAccountCredentials {
    ServiceAccountCredentials::new(
        ServiceAccountSource {
            kube,
            namespace: "default".into(),
            name: None,
        },
        &server.uri(),
        cache.clone(),
    )
}

fn exchange(server_token: &'static str) -> Mock {
    Mock::given(method("POST"))
        .and(path("/api/v1/auth/token"))
        .and(|r: &Request| {
            // A real ServiceAccount token from the TokenRequest: a JWT.
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|b| b["k8s_token"].as_str().map(|t| t.split('.').count() == 3))
                .unwrap_or(false)
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token": server_token,
            "expires_at": (chrono::Utc::now() + chrono::TimeDelta::minutes(30)).to_rfc3339(),
            "token_type": "Bearer"
        })))
}

#[tokio::test]
async fn a_401_with_a_cached_token_refreshes_once_and_caches_the_new_token() {
    let (_emulator, kube) = cluster().await;
    let server = MockServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let cache = Cache::at(home.path().join("hsm-cache"));
    let creds = credentials(kube, &server, &cache);
    // A token cached by an earlier run, which the manager no longer accepts (restarted).
    cache
        .store_token(&CachedToken::new(
            creds.identity(),
            &SecretString::from("old-jwt"),
            chrono::Utc::now() + chrono::TimeDelta::minutes(20),
            TokenKind::Exchanged,
        ))
        .unwrap();
    exchange("new-jwt").expect(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .and(header("authorization", "Bearer old-jwt"))
        .respond_with(failure(401, "INVALID_TOKEN", "invalid or expired token"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .and(header("authorization", "Bearer new-jwt"))
        .respond_with(ok(json!({"secrets": ["db"], "count": 1})))
        .expect(2)
        .mount(&server)
        .await;
    let api = ApiClient::new(
        Transport::new(&server.uri(), TIMEOUT, None).unwrap(),
        Arc::new(creds),
    );
    assert_eq!(api.list().await.unwrap().data.secrets, ["db"]);
    // The fresh token is kept: the next request needs no exchange.
    assert_eq!(api.list().await.unwrap().data.count, 1);
    let cached = cache.tokens();
    assert_eq!(cached.len(), 1);
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&cached[0].token()),
        "new-jwt"
    );
}

#[tokio::test]
async fn a_fresh_token_refused_is_not_refreshed_again() {
    let (_emulator, kube) = cluster().await;
    let server = MockServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let cache = Cache::at(home.path().join("hsm-cache"));
    exchange("jwt").expect(1).mount(&server).await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(failure(403, "forbidden", "may not list hsmsecrets"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/status"))
        .respond_with(failure(401, "INVALID_TOKEN", "invalid"))
        .expect(1)
        .mount(&server)
        .await;
    let api = ApiClient::new(
        Transport::new(&server.uri(), TIMEOUT, None).unwrap(),
        Arc::new(credentials(kube, &server, &cache)),
    );
    let forbidden = api.list().await.unwrap_err();
    assert_eq!(forbidden.kind(), Kind::Refused);
    let refused = api.device_status().await.unwrap_err();
    assert_eq!(refused.kind(), Kind::Refused);
    assert!(cache.tokens().is_empty(), "a refused token is forgotten");
}

#[tokio::test]
async fn without_an_exchange_the_serviceaccount_token_is_sent() {
    let (_emulator, kube) = cluster().await;
    let server = MockServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let cache = Cache::at(home.path().join("hsm-cache"));
    Mock::given(method("POST"))
        .and(path("/api/v1/auth/token"))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/info"))
        .and(|r: &Request| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer ") && v.split('.').count() == 3)
        })
        .respond_with(ok(json!({"service": "HSM Secrets Operator API"})))
        .expect(1)
        .mount(&server)
        .await;
    let api = ApiClient::new(
        Transport::new(&server.uri(), TIMEOUT, None).unwrap(),
        Arc::new(credentials(kube, &server, &cache)),
    );
    api.info().await.unwrap();
    assert_eq!(cache.tokens()[0].kind, TokenKind::ServiceAccount);
}

#[tokio::test]
async fn a_missing_service_account_falls_back_to_default() {
    let emulator = api_emulator::Emulator::new();
    let server = MockServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let cache = Cache::at(home.path().join("hsm-cache"));
    exchange("jwt").expect(1).mount(&server).await;
    let creds = credentials(emulator.client(), &server, &cache);
    let transport = Transport::new(&server.uri(), TIMEOUT, None).unwrap();
    let token = creds.bearer(&transport).await.unwrap().unwrap();
    assert_eq!(secrecy::ExposeSecret::expose_secret(&token), "jwt");
}

#[tokio::test]
async fn a_named_service_account_that_does_not_exist_is_an_auth_error() {
    let emulator = api_emulator::Emulator::new();
    let server = MockServer::start().await;
    let home = tempfile::tempdir().unwrap();
    let creds = ServiceAccountCredentials::new(
        ServiceAccountSource {
            kube: emulator.client(),
            namespace: "default".into(),
            name: Some("nobody".into()),
        },
        &server.uri(),
        Cache::at(home.path().join("c")),
    );
    let transport = Transport::new(&server.uri(), TIMEOUT, None).unwrap();
    let e = creds.bearer(&transport).await.unwrap_err();
    assert_eq!(e.kind(), Kind::Refused);
    assert!(kubectl_hsm::chain(&e).contains("default/nobody"), "{e}");
}

#[tokio::test]
async fn the_port_forward_bridge_carries_each_connection() {
    use kubectl_hsm::connect::bridge;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .respond_with(ok(json!({"secrets": ["db"], "count": 1})))
        .expect(3)
        .mount(&server)
        .await;
    let upstream = *server.address();
    let first = tokio::net::TcpStream::connect(upstream).await.unwrap();
    let forward = bridge(0, first, move || tokio::net::TcpStream::connect(upstream))
        .await
        .unwrap();
    // Separate clients: separate connections, the first on the pre-opened stream.
    for _ in 0..3 {
        let api =
            ApiClient::with_token(&format!("http://{}", forward.local), "t", TIMEOUT).unwrap();
        assert_eq!(api.list().await.unwrap().data.secrets, ["db"]);
    }
    drop(forward);
}
