//! The Podman backend against the API emulator: Deployments become Pods whose containers run
//! as Podman containers of real images (`pod-runner-echo`, and the hsm-agent image with its
//! test-only SoftHSM2 layer, built as `cargo xtask images` builds them), each pod an infra
//! container on the runner's internal network, its containers sharing its network namespace.
//!
//! Every test has its own runner id (so its own network) and image tags, and removes what it
//! made; a killed earlier run of the same test is cleaned up by label when it starts again.

use api_emulator::Emulator;
use delivery::cargo::{self, Profile};
use delivery::components::{AGENT, Component, TEST_TOKEN_DIR};
use delivery::podman as images;
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::{ReadSecretRequest, SecretData, WriteSecretRequest};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pod_runner::podman::{CONTAINER_LABEL, POD_LABEL, RUNNER_LABEL};
use pod_runner::{ContainerImages, PodRunner, Podman, PodmanConfig, RunnerConfig, Runtime};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const NS: &str = "apps";
const ECHO_BINARY: &str = env!("CARGO_BIN_EXE_pod-runner-echo");
/// The label of the images a test builds (removed when it ends).
const TEST_LABEL: &str = "io.hsm-secrets-operator.test";

/// `pod-runner-echo` as a scratch image, as the delivery crate assembles the product's.
const ECHO: Component = Component {
    image: "pod-runner-echo",
    binary: "pod-runner-echo",
    mode: "",
    files: &[],
    dirs: &["/tmp"],
    user: 65532,
    ccid_info_plist: false,
    env: &[],
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn podman(args: &[&str]) -> String {
    let out = Command::new("podman").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Ids of the containers (all states) with a label.
fn containers_labelled(label: &str) -> Vec<String> {
    podman(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label={label}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// The running container `name` of the pod labelled `pod_label`.
fn container_of(pod_label: &str, name: &str) -> String {
    let found: Vec<String> = containers_labelled(pod_label)
        .into_iter()
        .filter(|id| {
            podman(&[
                "inspect",
                "--format",
                &format!(
                    "{{{{index .Config.Labels \"{CONTAINER_LABEL}\"}}}} {{{{.State.Running}}}}"
                ),
                id,
            ]) == format!("{name} true")
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "running containers {name} of {pod_label}: {found:?}"
    );
    found[0].clone()
}

fn networks_labelled(label: &str) -> Vec<String> {
    podman(&[
        "network",
        "ls",
        "--quiet",
        "--filter",
        &format!("label={label}"),
    ])
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

/// A test's images, removed (with anything else of the test's label) when dropped.
struct Images {
    label: String,
    dir: tempfile::TempDir,
    tag: String,
}

impl Images {
    fn new(test: &str) -> Self {
        let label = format!("{TEST_LABEL}=pod-runner-{test}");
        images::remove_labelled(&label).unwrap();
        Images {
            label,
            dir: tempfile::tempdir().unwrap(),
            tag: format!("pod-runner-{test}"),
        }
    }

    fn labels(&self) -> Vec<(&str, &str)> {
        let (k, v) = self.label.split_once('=').unwrap();
        vec![(k, v)]
    }

    fn component(&self, component: &Component, binary: &Path) -> String {
        let image = format!("localhost/{}:{}", component.image, self.tag);
        images::build_component(self.dir.path(), component, binary, &image, &self.labels())
            .unwrap();
        image
    }

    fn echo(&self) -> String {
        self.component(&ECHO, Path::new(ECHO_BINARY))
    }

    /// The agent image (the test suite's hsm-agent) with SoftHSM2 over it.
    fn agent_with_softhsm(&self) -> String {
        let built = cargo::build(&workspace(), Profile::TestSuite, &[AGENT.binary]).unwrap();
        let agent = self.component(&AGENT, &built[AGENT.binary]);
        let image = format!("localhost/hsm-agent-softhsm:{}", self.tag);
        images::build_test_layer(self.dir.path(), &agent, &image, &self.labels()).unwrap();
        image
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        if let Err(e) = images::remove_labelled(&self.label) {
            eprintln!("removing the test's images: {e}");
        }
    }
}

struct Cluster {
    client: kube::Client,
    runner: Option<PodRunner>,
    podman: Podman,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A runner with the Podman backend (id `pod-runner-test-<test>`) over a fresh emulator.
    async fn start(test: &str, table: ContainerImages) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "pod_runner=info".into()),
            )
            .with_test_writer()
            .try_init();
        let client = Emulator::new().client();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let podman = Podman::connect(PodmanConfig::new(format!("pod-runner-test-{test}")))
            .await
            .unwrap();
        let mut config = RunnerConfig::new("local", dir.path().join("pods"));
        config.runtime = Runtime::Containers(table);
        config.host_paths = pod_runner::HostPaths::new().with("/host", dir.path().join("host"));
        config.restart_backoff = Duration::from_millis(200);
        config.restart_backoff_max = Duration::from_millis(400);
        config.resync = Duration::from_millis(500);
        let runner =
            PodRunner::start_with(client.clone(), config, Arc::new(podman.clone())).unwrap();
        Cluster {
            client,
            runner: Some(runner),
            podman,
            dir,
        }
    }

    fn runner_label(&self) -> String {
        format!("{RUNNER_LABEL}={}", self.podman.id())
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn apply<K>(&self, object: Value)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).unwrap();
        Api::<K>::namespaced(self.client.clone(), NS)
            .patch(
                &object.name_any(),
                &PatchParams::apply("test").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
    }

    async fn pods_until(
        &self,
        selector: &str,
        what: &str,
        within: Duration,
        done: impl Fn(&[Pod]) -> bool,
    ) -> Vec<Pod> {
        let deadline = Instant::now() + within;
        loop {
            let pods = self
                .pods()
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items;
            if done(&pods) {
                return pods;
            }
            if Instant::now() > deadline {
                let logs: Vec<String> = pods
                    .iter()
                    .flat_map(|p| {
                        let dir = self.runner.as_ref().unwrap().pod_dir(NS, &p.name_any());
                        std::fs::read_dir(dir.join("logs"))
                            .into_iter()
                            .flatten()
                            .flatten()
                            .map(|e| {
                                format!(
                                    "{}:\n{}",
                                    e.path().display(),
                                    std::fs::read_to_string(e.path()).unwrap_or_default()
                                )
                            })
                    })
                    .collect();
                panic!(
                    "waiting for {what}; pods: {:#?}\nlogs:\n{}",
                    pods.iter()
                        .map(|p| (&p.metadata.name, &p.status))
                        .collect::<Vec<_>>(),
                    logs.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(&mut self) {
        if let Some(runner) = self.runner.take() {
            runner.stop_within(Duration::from_secs(2)).await;
        }
    }
}

fn ready(p: &Pod) -> bool {
    pod_runner::desired::is_ready(p)
}

fn ip(p: &Pod) -> Ipv4Addr {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|s| s.parse().ok())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or_default()
}

/// A GET over plain HTTP/1.1; None when nothing answers.
fn get(ip: Ipv4Addr, port: u16, path: &str) -> Option<String> {
    let mut s =
        std::net::TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn echo_deployment(name: &str, containers: Value, volumes: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, "volumes": volumes},
            },
        },
    })
}

fn readiness(port: u16) -> Value {
    json!({"httpGet": {"path": "/readyz", "port": port}, "periodSeconds": 1, "failureThreshold": 1})
}

#[tokio::test]
async fn a_pods_containers_share_localhost_reach_this_machine_and_nothing_else() {
    let images = Images::new("duo");
    let echo = images.echo();
    let mut cluster = Cluster::start("duo", ContainerImages::new().with("echo", &echo)).await;
    let gateway = cluster.podman.gateway().unwrap();
    // A server on this machine, listening on every address as an API server may (the
    // pods reach it at the gateway address; 127.0.0.1 is their own loopback).
    let host = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    let host_port = host.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in host.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let body = "from-this-machine";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds", "namespace": NS},
        "stringData": {"password": "s3cret-value"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(cluster.client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    cluster
        .apply::<Deployment>(echo_deployment(
            "duo",
            json!([
                {"name": "inner", "image": "registry.example/echo:v1",
                 "env": [{"name": "POD_IP", "value": "127.0.0.1"}, {"name": "ECHO_PORT", "value": "9000"},
                         {"name": "MARK", "value": "the-inner-container"}]},
                {"name": "outer", "image": "registry.example/echo:v1",
                 "args": ["--config=/etc/creds/password", "$(MARK)"],
                 "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                         {"name": "MARK", "value": "outer"}],
                 "readinessProbe": readiness(8093),
                 "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true,
                                     "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                                     "capabilities": {"drop": ["ALL"]}},
                 "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"},
                                  {"name": "scratch", "mountPath": "/scratch"}]},
            ]),
            json!([{"name": "creds", "secret": {"secretName": "creds"}},
                   {"name": "scratch", "emptyDir": {}}]),
        ))
        .await;
    let pods = cluster
        .pods_until("app=duo", "the pod Ready", Duration::from_secs(60), |p| {
            p.len() == 1 && ready(&p[0])
        })
        .await;
    let pod_ip = ip(&pods[0]);
    assert_ne!(pod_ip, gateway);
    assert_eq!(
        pod_ip.octets()[..3],
        gateway.octets()[..3],
        "{pod_ip} on the network"
    );

    // The outer container reaches the inner one on the pod's localhost (once it listens:
    // it has no readiness probe)...
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let via_localhost = get(pod_ip, 8093, "/proxy?127.0.0.1:9000/info").unwrap_or_default();
        if via_localhost.contains("env=MARK=the-inner-container") {
            break;
        }
        assert!(Instant::now() < deadline, "{via_localhost}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // ...which this machine does not reach: it listens on the pod's loopback only.
    assert!(get(pod_ip, 9000, "/info").is_none());
    // It reaches this machine at the gateway address (retried: once in a few runs the first
    // connection through the fresh bridge is reset before its request is written).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let to_host =
            get(pod_ip, 8093, &format!("/proxy?{gateway}:{host_port}/")).unwrap_or_default();
        if to_host.contains("from-this-machine") {
            break;
        }
        assert!(Instant::now() < deadline, "{to_host}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And nothing beyond the network: no route out.
    let out = get(pod_ip, 8093, "/proxy?10.255.255.1:80/").unwrap();
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(out.contains("unreachable"), "{out}");

    // Its arguments and environment as written, its volumes at their mount paths, readable
    // by its user (65532) although the root file system is read-only.
    let info = get(pod_ip, 8093, "/info").unwrap();
    assert!(
        info.contains("arg=--config=/etc/creds/password\n"),
        "{info}"
    );
    assert!(info.contains("arg=outer\n"), "{info}");
    assert!(info.contains(&format!("env=POD_IP={pod_ip}\n")), "{info}");
    let secret_file = get(pod_ip, 8093, "/file?/etc/creds/password").unwrap();
    assert!(secret_file.ends_with("s3cret-value"), "{secret_file}");
    let outer = container_of(&format!("{POD_LABEL}={NS}/{}", pods[0].name_any()), "outer");
    assert_eq!(
        podman(&[
            "inspect",
            "--format",
            "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}} {{.EffectiveCaps}}",
            &outer
        ]),
        "true 65532:65532 []"
    );
    // Its output in its log file.
    let log = cluster
        .runner
        .as_ref()
        .unwrap()
        .log_path(NS, &pods[0].name_any(), "outer");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&format!("listening on {pod_ip}:8093")) {
            break;
        }
        assert!(Instant::now() < deadline, "{}: {text}", log.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.stop().await;
    assert_eq!(
        containers_labelled(&cluster.runner_label()),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_killed_container_restarts_a_deleted_pod_goes_and_a_stopped_runner_leaves_nothing() {
    let images = Images::new("lifecycle");
    let echo = images.echo();
    let id = "pod-runner-test-lifecycle";
    let runner_label = format!("{RUNNER_LABEL}={id}");
    // What a killed run left: removed when the runner sets up.
    let leftover = podman(&["create", "--label", &runner_label, &echo]);
    let mut cluster = Cluster::start("lifecycle", ContainerImages::new().with("echo", &echo)).await;
    assert!(
        !containers_labelled(&runner_label).contains(&leftover),
        "the leftover container is still there"
    );
    assert_eq!(networks_labelled(&runner_label).len(), 1);

    cluster
        .apply::<Deployment>(echo_deployment(
            "crash",
            json!([{"name": "echo", "image": "echo",
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "readinessProbe": readiness(8093)}]),
            json!([]),
        ))
        .await;
    let pods = cluster
        .pods_until("app=crash", "the pod Ready", Duration::from_secs(60), |p| {
            p.len() == 1 && ready(&p[0])
        })
        .await;
    let name = pods[0].name_any();
    let pod_label = format!("{POD_LABEL}={NS}/{name}");
    // The infra container and the echo container.
    assert_eq!(containers_labelled(&pod_label).len(), 2);
    let echo_container = container_of(&pod_label, "echo");
    podman(&["kill", "--signal", "KILL", &echo_container]);
    let pods = cluster
        .pods_until(
            "app=crash",
            "the restart counted and the pod Ready again",
            Duration::from_secs(60),
            |p| p.len() == 1 && restarts(&p[0]) >= 1 && ready(&p[0]),
        )
        .await;
    assert_eq!(pods[0].name_any(), name, "restarted in place, not replaced");
    let status = &pods[0]
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(137), "{status:?}");
    assert!(get(ip(&pods[0]), 8093, "/readyz").is_some());

    // Deleting the Deployment deletes its pod, and the pod's containers go with it.
    Api::<Deployment>::namespaced(cluster.client.clone(), NS)
        .delete("crash", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_labelled(&pod_label).is_empty()
        || cluster.pods().get_opt(&name).await.unwrap().is_some()
    {
        assert!(
            Instant::now() < deadline,
            "the pod's containers are still there"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A running pod, then the runner stops: nothing of it is left.
    cluster
        .apply::<Deployment>(echo_deployment(
            "last",
            json!([{"name": "echo", "image": "echo", "readinessProbe": readiness(8093),
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]}]),
            json!([]),
        ))
        .await;
    cluster
        .pods_until("app=last", "the pod Ready", Duration::from_secs(60), |p| {
            p.len() == 1 && ready(&p[0])
        })
        .await;
    assert!(!containers_labelled(&runner_label).is_empty());
    cluster.stop().await;
    assert_eq!(containers_labelled(&runner_label), Vec::<String>::new());
    assert_eq!(networks_labelled(&runner_label), Vec::<String>::new());
}

/// A token made on the host by softhsm2-util, as an init job would make one on a volume.
fn token(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("../softhsm2.conf");
    std::fs::write(&conf, format!("directories.tokendir = {}\n", dir.display())).unwrap();
    let status = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", "agent"])
        .args(["--so-pin", "12345678", "--pin", "1234"])
        .env("SOFTHSM2_CONF", &conf)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("softhsm2-util (Debian package softhsm2)");
    assert!(status.success());
}

/// The agent's server identity (`tls.crt`, `tls.key`, `ca.crt`) and a client identity of the
/// same CA.
fn pki() -> (Vec<(String, String)>, (String, String)) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "hsm-mtls-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
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
    let client = leaf("hsm-manager", ExtendedKeyUsagePurpose::ClientAuth);
    (
        vec![
            ("tls.crt".into(), server.0),
            ("tls.key".into(), server.1),
            ("ca.crt".into(), ca.clone()),
        ],
        client,
    )
}

#[tokio::test]
async fn the_agent_image_on_a_softhsm2_token_becomes_ready_and_answers_grpc_over_mtls() {
    let images = Images::new("agent");
    let agent = images.agent_with_softhsm();
    let mut cluster =
        Cluster::start("agent", ContainerImages::new().with("hsm-agent", &agent)).await;
    token(&cluster.dir.path().join("host/tokens"));
    let (tls, client_identity) = pki();
    let ca = tls[2].1.clone();
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), NS);
    for (name, data) in [
        (
            "agent-tls",
            json!(
                tls.iter()
                    .cloned()
                    .collect::<std::collections::BTreeMap<_, _>>()
            ),
        ),
        ("agent-pin", json!({"pin": "1234"})),
    ] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": name, "namespace": NS}, "stringData": data}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let probe = |path: &str| json!({"httpGet": {"path": path, "port": 8093}, "periodSeconds": 1, "failureThreshold": 30});
    cluster
        .apply::<Deployment>(echo_deployment(
            "agent",
            json!([{
                "name": "agent", "image": "ghcr.io/example/hsm-agent:v1",
                "args": ["--mode=agent", "--device-name=softhsm", "--port=9090", "--health-port=8093",
                         "--tls-cert-file=/etc/hsm/tls/tls.crt", "--tls-key-file=/etc/hsm/tls/tls.key",
                         "--tls-client-ca-file=/etc/hsm/tls/ca.crt",
                         "--token-label=agent", "--slot-id=0",
                         "--pkcs11-library=/usr/lib/softhsm/libsofthsm2.so",
                         "--pin-file=/etc/hsm/pin/pin"],
                "env": [{"name": "SOFTHSM2_CONF", "value": "/etc/softhsm2.conf"}],
                "readinessProbe": probe("/readyz"),
                "livenessProbe": probe("/healthz"),
                "securityContext": {"runAsUser": 0, "readOnlyRootFilesystem": true,
                                    "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [
                    {"name": "tls", "mountPath": "/etc/hsm/tls", "readOnly": true},
                    {"name": "pin", "mountPath": "/etc/hsm/pin", "readOnly": true},
                    {"name": "tokens", "mountPath": TEST_TOKEN_DIR},
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "pcscd", "mountPath": "/run/pcscd"},
                    {"name": "pcsc-lock", "mountPath": "/var/lock/pcsc"}],
            }]),
            json!([
                {"name": "tls", "secret": {"secretName": "agent-tls"}},
                {"name": "pin", "secret": {"secretName": "agent-pin"}},
                {"name": "tokens", "hostPath": {"path": "/host/tokens"}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "pcscd", "emptyDir": {}},
                {"name": "pcsc-lock", "emptyDir": {}},
            ]),
        ))
        .await;
    let pods = cluster
        .pods_until(
            "app=agent",
            "the agent Ready",
            Duration::from_secs(90),
            |p| p.len() == 1 && ready(&p[0]),
        )
        .await;
    let pod_ip = ip(&pods[0]);
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let channel = Channel::from_shared(format!("https://{pod_ip}:9090"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .identity(Identity::from_pem(&client_identity.0, &client_identity.1))
                .domain_name("hsm-agent"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HsmAgentClient::new(channel);
    client
        .write_secret(WriteSecretRequest {
            path: "db".into(),
            secret_data: Some(SecretData {
                data: [("password".to_owned(), b"through-the-pod".to_vec())].into(),
            }),
            metadata: None,
        })
        .await
        .unwrap();
    let read = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.secret_data.unwrap().data["password"],
        b"through-the-pod"
    );
    // Written to the token volume on this machine.
    let objects = std::fs::read_dir(cluster.dir.path().join("host/tokens"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().flatten())
        .filter(|f| f.path().extension().is_some_and(|e| e == "object"))
        .count();
    assert!(objects > 0);
    cluster.stop().await;
    assert_eq!(
        containers_labelled(&cluster.runner_label()),
        Vec::<String>::new()
    );
    drop(images);
}
