//! Test and benchmark support (feature `test-support`): the API emulator served over HTTP,
//! a CA with the agents' and the manager's certificates, and agents on their own tokens
//! behind real gRPC with mTLS, so the tests, the sync benchmark and the demo stand on the
//! same parts.

use crate::agents::grpc::{ClientTls, GrpcAgent};
use crate::agents::{AgentApi, SecretValues};
use api_emulator::Emulator;
use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_agent::service::AgentService;
use hsm_agent::tls::{TlsFiles, incoming, server_config};
use hsm_proto::v1::SecretMetadata;
use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operator's namespace and name in the tests.
pub const OPERATOR_NS: &str = "hsm-system";
/// The operator instance name the tests' HSMSecrets name.
pub const OPERATOR_NAME: &str = "hsm-op";
/// Where the tests' HSMSecrets and Secrets live.
pub const APPS: &str = "apps";

/// The emulator, served on a loopback port.
pub struct Cluster {
    /// The emulator.
    pub emulator: Emulator,
    /// Its HTTP server.
    pub server: api_emulator::server::Server,
    /// A client of it over HTTP.
    pub client: kube::Client,
}

/// A served emulator with the CRDs and the operator's and the apps' namespaces.
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
    /// The CA (PEM).
    pub ca_pem: String,
    /// The agents' certificate and key (PEM).
    pub server: (String, String),
    /// The manager's side.
    pub client: ClientTls,
}

/// A fresh CA and its two leaves.
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
    /// The SoftHSM2 token, when it is one.
    pub hsm: Option<Arc<SoftHsm>>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its TLS files.
    pub files: TlsFiles,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

impl TestAgent {
    /// An agent on a new SoftHSM2 token.
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
        let device = Device::new(
            DeviceConfig {
                min_backoff: Duration::ZERO,
                max_backoff: Duration::ZERO,
                ..DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector())
            },
            Box::new(FixedPin(TEST_PIN.into())),
        );
        Self::serve(pki, device, Some(hsm), addr).await
    }

    /// Serves `device` over mTLS on `addr`, probing it as the kubelet's readiness probe
    /// would (the agent's readiness follows the token between requests).
    pub async fn serve<C: hsm_agent::connector::Connector>(
        pki: &Pki,
        device: Device<C>,
        hsm: Option<Arc<SoftHsm>>,
        addr: SocketAddr,
    ) -> TestAgent {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            client_ca: dir.path().join("ca.crt"),
        };
        std::fs::write(&files.cert, &pki.server.0).unwrap();
        std::fs::write(&files.key, &pki.server.1).unwrap();
        std::fs::write(&files.client_ca, &pki.ca_pem).unwrap();
        let device = Arc::new(device);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let config = server_config(&files).unwrap();
        let listener = runtime.spawn(bind(addr)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service =
            AgentService::new(device.clone()).with_poll_interval(Duration::from_millis(200));
        runtime.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(HsmAgentServer::new(service))
                .serve_with_incoming(incoming(listener, config))
                .await
                .unwrap();
        });
        runtime.spawn(async move {
            loop {
                let probed = device.clone();
                let _ = tokio::task::spawn_blocking(move || probed.probe()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        TestAgent {
            hsm,
            addr,
            files,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// An agent on an in-memory token (no PKCS#11 module): for loads SoftHSM2 would make
    /// slow to set up, such as the 10 000-secret benchmark.
    pub async fn start_in_memory(pki: &Pki) -> TestAgent {
        use hsm_agent::testing::{MemoryConnector, memory_device};
        let device = memory_device(MemoryConnector::new(TEST_PIN), TEST_PIN);
        Self::serve(pki, device, None, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Its `https://` URL.
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
            shut_down(runtime);
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            shut_down(runtime);
        }
    }
}

/// Stops the agent's runtime and waits (briefly) for its PKCS#11 calls in flight: a test
/// process that exits while one runs has SoftHSM2 torn down under it at exit (a SIGSEGV
/// after the test passed). The wait happens on a thread of its own, since a runtime cannot
/// wait for its blocking tasks from inside another runtime's task.
fn shut_down(runtime: tokio::runtime::Runtime) {
    let waiting = std::thread::spawn(move || runtime.shutdown_timeout(Duration::from_secs(5)));
    let _ = waiting.join();
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

/// The operator's own PKI in `namespace`, made as the manager makes it at start (so a
/// manager started later finds it current and writes nothing), with the agents' side read
/// from its Secret.
pub async fn operator_pki(client: &kube::Client, namespace: &str) -> Pki {
    use hsm_api::names::mtls;
    let config = crate::pki::PkiConfig {
        namespace: namespace.to_owned(),
        ca_secret: mtls::CA_SECRET.into(),
        server_secret: mtls::AGENT_SERVER_SECRET.into(),
        client_secret: mtls::MANAGER_CLIENT_SECRET.into(),
        leaf_validity: Duration::from_secs(2160 * 3600),
        renew_before: Duration::from_secs(720 * 3600),
        cert_manager: false,
    };
    let client_tls = crate::pki::ensure(client, &config, chrono::Utc::now())
        .await
        .unwrap();
    let server = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .get(mtls::AGENT_SERVER_SECRET)
        .await
        .unwrap();
    let field =
        |key: &str| String::from_utf8(server.data.as_ref().unwrap()[key].0.clone()).unwrap();
    Pki {
        ca_pem: client_tls.ca.clone(),
        server: (field("tls.crt"), field("tls.key")),
        client: client_tls,
    }
}
