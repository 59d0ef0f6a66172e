//! What the manager's tests stand on: the API emulator served over HTTP, agents on their own
//! SoftHSM2 tokens behind real gRPC with mTLS, and the controller running in process.
#![allow(dead_code)]

use bytes::Bytes;
use hsm_api::secret::HSMSecret;
use hsm_operator::agents::{AgentApi, AgentPool};
use hsm_operator::secret::build::Identity;
use hsm_operator::telemetry::Metrics;
pub use hsm_operator::testing::*;
use http_body_util::{BodyExt, Full};
pub use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The manager's controller, running in this process until dropped.
pub struct TestManager {
    pub pool: AgentPool,
    pub metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestManager {
    pub fn start(client: kube::Client, agents: Vec<(&str, Arc<dyn AgentApi>)>) -> TestManager {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "hsm_operator=info".into()),
            )
            .with_test_writer()
            .try_init();
        let pool = AgentPool::new().with_health_interval(Duration::from_millis(300));
        for (key, agent) in agents {
            pool.insert(key, agent);
        }
        let metrics = Arc::new(Metrics::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let setup = hsm_operator::secret::Setup {
            client,
            pool: pool.clone(),
            identity: Identity {
                operator_name: OPERATOR_NAME.into(),
                namespace: OPERATOR_NS.into(),
            },
            metrics: metrics.clone(),
        };
        let task = tokio::spawn(hsm_operator::secret::run(setup, async move {
            let _ = stopped.await;
        }));
        TestManager {
            pool,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
    }
}

impl Drop for TestManager {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HSMSecret for this operator.
pub fn hsm_secret(name: &str, extra: serde_json::Value) -> HSMSecret {
    let mut spec = json!({"parentRef": {"name": OPERATOR_NAME, "namespace": OPERATOR_NS}});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
        "metadata": {"name": name, "namespace": APPS},
        "spec": spec,
    }))
    .unwrap()
}

/// Polls `check` until it returns `Some`, failing with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Secret's data as text.
pub fn text_data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// Waits until Secret `name` in APPS holds `expected`.
pub async fn secret_holds(client: &kube::Client, name: &str, expected: &[(&str, &str)]) -> Secret {
    let want: BTreeMap<String, String> = expected
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let api = Api::<Secret>::namespaced(client.clone(), APPS);
    eventually(
        Duration::from_secs(15),
        &format!("Secret {name} to hold {:?}", want.keys()),
        || {
            let api = api.clone();
            let want = want.clone();
            async move {
                api.get_opt(name)
                    .await
                    .unwrap()
                    .filter(|s| text_data(s) == want)
            }
        },
    )
    .await
}

/// One HTTP request: status, headers and the JSON body (`null` when empty).
pub async fn call(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut request = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let json = match bytes.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())),
    };
    (parts.status, parts.headers, json)
}

/// A loopback port free now (for a process that binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
