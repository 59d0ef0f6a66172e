//! What the manager's tests stand on: the API emulator served over HTTP, agents on their own
//! SoftHSM2 tokens behind real gRPC with mTLS, and the controller running in process.
#![allow(dead_code)]

use api_emulator::Emulator;
use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_agent::service::AgentService;
use hsm_agent::tls::{TlsFiles, incoming, server_config};
use hsm_api::secret::HSMSecret;
use hsm_operator::agents::grpc::{ClientTls, GrpcAgent};
use hsm_operator::agents::{AgentApi, AgentPool, SecretValues};
use hsm_operator::secret::build::Identity;
use hsm_operator::telemetry::Metrics;
use hsm_proto::v1::SecretMetadata;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operator's namespace and name in the tests.
pub const OPERATOR_NS: &str = "hsm-system";
pub const OPERATOR_NAME: &str = "hsm-op";
/// Where the tests' HSMSecrets and Secrets live.
pub const APPS: &str = "apps";

/// The emulator, served on a loopback port.
pub struct Cluster {
    pub emulator: Emulator,
    pub server: api_emulator::server::Server,
    pub client: kube::Client,
}

pub async fn cluster() -> Cluster {
    let emulator = Emulator::new();
    emulator
        .load_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
        .unwrap();
    let server = emulator.serve(0).await.unwrap();
    let client = client_for(&server.kubeconfig()).await;
    for ns in [OPERATOR_NS, APPS] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    Cluster {
        emulator,
        server,
        client,
    }
}

/// A client of a kubeconfig's text, as a process using that file would have.
pub async fn client_for(kubeconfig: &str) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

/// A CA with a server certificate for agents and a client certificate for the manager.
pub struct Pki {
    pub ca_pem: String,
    pub server: (String, String),
    pub client: ClientTls,
}

pub fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    let key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&key).unwrap().pem();
    let issuer = Issuer::new(params, key);
    let leaf = |name: &str, usage| {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (
            params.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let server = leaf("hsm-agent", ExtendedKeyUsagePurpose::ServerAuth);
    let (cert, key) = leaf("hsm-manager", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        client: ClientTls {
            ca: ca_pem.clone(),
            cert,
            key,
        },
        ca_pem,
        server,
    }
}

/// An agent on its own SoftHSM2 token, serving gRPC over mTLS on a loopback port. It runs
/// on a runtime of its own, so stopping it ends its connections too, as a dead process would.
pub struct TestAgent {
    pub hsm: Arc<SoftHsm>,
    pub addr: SocketAddr,
    pub files: TlsFiles,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    pub async fn start(pki: &Pki) -> TestAgent {
        Self::start_on(
            pki,
            Arc::new(SoftHsm::new()),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
    }

    /// Serves the token `hsm` on `addr` (a port of an earlier run: the agent restarted).
    pub async fn start_on(pki: &Pki, hsm: Arc<SoftHsm>, addr: SocketAddr) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: dir.path().join("ca.crt"),
        };
        std::fs::write(&files.cert, &pki.server.0).unwrap();
        std::fs::write(&files.key, &pki.server.1).unwrap();
        std::fs::write(&files.client_ca, &pki.ca_pem).unwrap();
        let device = Arc::new(Device::new(
            DeviceConfig {
                min_backoff: Duration::ZERO,
                max_backoff: Duration::ZERO,
                ..DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector())
            },
            Box::new(FixedPin(TEST_PIN.into())),
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = server_config(&files).unwrap();
        let listener = runtime.spawn(bind(addr)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = AgentService::new(device).with_poll_interval(Duration::from_millis(200));
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(HsmAgentServer::new(service))
                .serve_with_incoming(incoming(listener, config))
                .await
                .unwrap();
        });
        TestAgent {
            hsm,
            addr,
            files,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A client of this agent, as the manager has one.
    pub fn client(&self, pki: &Pki) -> GrpcAgent {
        GrpcAgent::new(&self.url(), Some(&pki.client)).unwrap()
    }

    /// Stops serving and drops every connection (the agent process died); the token stays.
    pub async fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Binds `addr`, retrying while a just-closed listener still holds it.
async fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr}: {e}"),
        }
    }
}

/// Writes a secret through an agent with `sync.version` = `version`.
pub async fn hsm_write(agent: &dyn AgentApi, name: &str, values: &[(&str, &str)], version: i64) {
    let values: SecretValues = values
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let metadata = SecretMetadata {
        description: format!("{name} for the tests"),
        labels: BTreeMap::from([
            ("sync.version".to_owned(), version.to_string()),
            (
                "sync.timestamp".to_owned(),
                format!("2026-11-01T00:00:{:02}Z", version.rem_euclid(60)),
            ),
        ]),
        source: "test".into(),
        ..Default::default()
    };
    agent.write(name, values, metadata).await.unwrap();
}

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
