//! Agent placement end to end: the manager (as `hsm-operator` wires it) against the served API
//! emulator, with the pod runner playing kubelet and running the real `hsm-discovery` (on a
//! fixture sysfs tree showing a Pico HSM) and `hsm-agent` (on a SoftHSM2 token standing in
//! for that Pico HSM). HSMDevice → discovery DaemonSet → report → HSMPool Ready → agent
//! Deployment → agent pod Ready → followed over mTLS → HSMSecret's Secret; the device no
//! longer reported, its agent goes after the absence timeout. The discovery gate and garbage
//! collection are tested on the placement controller alone, with hand-made objects.

mod common;

use clap::Parser;
use common::*;
use hsm_api::device::HSMDevice;
use hsm_api::pool::HSMPool;
use hsm_operator::agents::AgentApi;
use hsm_operator::agents::endpoints::agent_pod_endpoint;
use hsm_operator::agents::grpc::GrpcAgent;
use hsm_operator::cli::Cli;
use hsm_operator::placement::plan::Settings;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pod_runner::{HostPaths, ImageTable, PodRunner, RunnerConfig};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const DEVICE: &str = "pico";
const NODE: &str = "local";
const WAIT: Duration = Duration::from_secs(60);

/// The manager, wired as the binary wires it, in this process.
fn start_manager(client: &kube::Client) -> tokio::task::JoinHandle<()> {
    let cli = Cli::parse_from([
        "hsm-operator",
        "--mode=manager",
        "--metrics-bind-address=0",
        "--health-probe-bind-address=0",
        "--enable-api=false",
        "--operator-name",
        OPERATOR_NAME,
        "--namespace",
        OPERATOR_NS,
        "--agent-image=hsm-agent",
        "--discovery-image=hsm-discovery",
        "--device-absence-timeout=3s",
    ]);
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(error) = hsm_operator::run::run_with(cli, client).await {
            panic!("the manager stopped: {error:#}");
        }
    })
}

/// The HSMDevice `pico` (a Pico HSM by USB IDs, served through `module` and `token_label`)
/// and its PIN Secret.
async fn create_device(client: &kube::Client, module: &str, token_label: &str) -> HSMDevice {
    let pin: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pico-pin", "namespace": OPERATOR_NS},
        "stringData": {"pin": hsm_store::testing::TEST_PIN}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &pin)
        .await
        .unwrap();
    let device: HSMDevice = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": DEVICE, "namespace": OPERATOR_NS},
        "spec": {"deviceType": "PicoHSM",
            "discovery": {"usb": [{"vendorId": "2e8a", "productId": "10fd"}]},
            "pkcs11": {"libraryPath": module, "tokenLabel": token_label,
                       "pinSecret": {"name": "pico-pin", "key": "pin"}}}
    }))
    .unwrap();
    Api::<HSMDevice>::namespaced(client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &device)
        .await
        .unwrap()
}

/// This machine as one node: the workspace's discovery and agent binaries as images, the
/// fixture sysfs tree as `/sys`, and the test's SoftHSM2 configuration.
struct Node {
    runner: Option<PodRunner>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(cluster: &Cluster, softhsm_conf: &Path) -> Node {
        // The ServiceAccount the manager gives discovery and agent pods (by default) must
        // exist: the API server refuses pods of a missing one.
        cluster
            .emulator
            .create_object(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "hsm-secrets-operator-controller-manager",
                             "namespace": OPERATOR_NS}}))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.server.write_kubeconfig(&kubeconfig).unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let built = delivery::cargo::build(
            &root,
            delivery::cargo::Profile::TestSuite,
            &["hsm-agent", "hsm-discovery"],
        )
        .expect("the agent and discovery binaries");
        let mut host_paths = HostPaths::new().with(
            "/sys",
            root.join("crates/hsm-discovery/tests/fixtures/sysfs"),
        );
        for path in [
            "/run/udev",
            "/var/lib/kubelet/device-plugins",
            "/var/lib/kubelet/plugins_registry",
        ] {
            let local = dir.path().join("host").join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&local).unwrap();
            host_paths.insert(path, local);
        }
        let mut config = RunnerConfig::new(NODE, dir.path().join("pods"));
        config.images = ImageTable::new()
            .with("hsm-agent", &built["hsm-agent"])
            .with("hsm-discovery", &built["hsm-discovery"]);
        config.host_paths = host_paths;
        config
            .pod_env
            .insert("KUBECONFIG".into(), kubeconfig.display().to_string());
        config
            .pod_env
            .insert("SOFTHSM2_CONF".into(), softhsm_conf.display().to_string());
        config.restart_backoff = Duration::from_millis(200);
        config.restart_backoff_max = Duration::from_secs(2);
        let runner = PodRunner::start(cluster.client.clone(), config).unwrap();
        Node {
            runner: Some(runner),
            _dir: dir,
        }
    }

    /// Every pod's status and container logs, for a failure message.
    async fn describe(&self, client: &kube::Client) -> String {
        let runner = self.runner.as_ref().unwrap();
        let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut out = String::new();
        for pod in pods {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            out += &format!("pod {}: {phase:?}\n", pod.name_any());
            for container in pod.spec.iter().flat_map(|s| &s.containers) {
                let log = runner.log_path(OPERATOR_NS, &pod.name_any(), &container.name);
                out += &format!(
                    "--- {} log:\n{}\n",
                    container.name,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        out
    }

    async fn stop(mut self) {
        if let Some(runner) = self.runner.take() {
            runner.stop_within(Duration::from_secs(2)).await;
        }
    }
}

/// Waits for Deployment `name` to be there (or gone).
async fn deployment(client: &kube::Client, name: &str, present: bool) -> Option<Deployment> {
    let api = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NS);
    eventually(
        WAIT,
        &format!(
            "Deployment {name} to be {}",
            if present { "there" } else { "gone" }
        ),
        || {
            let api = api.clone();
            async move {
                match api.get_opt(name).await.unwrap() {
                    Some(d) if present => Some(Some(d)),
                    None if !present => Some(None),
                    _ => None,
                }
            }
        },
    )
    .await
}

/// The agent of pod `app=<agent>`, reached as the manager reaches it, once it answers.
async fn agent_client(client: &kube::Client, agent: &str, pki: &Pki) -> Option<GrpcAgent> {
    let pod = Api::<Pod>::namespaced(client.clone(), OPERATOR_NS)
        .list(&ListParams::default().labels(&format!("app={agent}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .next()?;
    let (_, url) = agent_pod_endpoint(&pod, "https")?;
    let grpc = GrpcAgent::new(&url, Some(&pki.client)).unwrap();
    grpc.index().await.ok().map(|_| grpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_hsmdevice_becomes_a_discovered_device_an_agent_pod_and_secrets_and_its_agent_goes_with_the_device()
 {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let pki = operator_pki(&client, OPERATOR_NS).await;
    let hsm = hsm_store::testing::SoftHsm::new();
    let node = Node::start(&cluster, hsm.conf_path());
    let manager = start_manager(&client);
    create_device(&client, hsm_store::testing::SOFTHSM2_MODULE, &hsm.label).await;
    let agent_name = hsm_api::names::agent_name(DEVICE, "DC6A33145E23A42A").unwrap();

    // Discovery reports the fixture's Pico HSM; the agent for its serial is pinned here and
    // owned by the HSMDevice.
    let agent = deployment(&client, &agent_name, true).await.unwrap();
    let owner = &agent.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("HSMDevice", DEVICE)
    );
    let pod_spec = agent.spec.template.spec.unwrap();
    assert_eq!(
        pod_spec.node_selector.unwrap()["kubernetes.io/hostname"],
        NODE
    );

    // Its pod runs the real agent on the token; the manager follows it over mTLS.
    let grpc = match tokio::time::timeout(WAIT, async {
        loop {
            if let Some(grpc) = agent_client(&client, &agent_name, &pki).await {
                return grpc;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    {
        Ok(grpc) => grpc,
        Err(_) => panic!(
            "the agent never answered:\n{}",
            node.describe(&client).await
        ),
    };
    hsm_write(&grpc, "db", &[("password", "from-the-token")], 1).await;
    Api::<hsm_api::secret::HSMSecret>::namespaced(client.clone(), APPS)
        .create(&PostParams::default(), &hsm_secret("db", json!({})))
        .await
        .unwrap();
    secret_holds(&client, "db", &[("password", "from-the-token")]).await;
    hsm_write(&grpc, "db", &[("password", "changed")], 2).await;
    secret_holds(&client, "db", &[("password", "changed")]).await;

    // The HSMDevice no longer matches the Pico HSM: once no device has been available for
    // the absence timeout (3 s), the agent goes; the Secret keeps its last good value.
    let patch =
        json!({"spec": {"discovery": {"usb": [{"vendorId": "1234", "productId": "5678"}]}}});
    Api::<HSMDevice>::namespaced(client.clone(), OPERATOR_NS)
        .patch(DEVICE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert!(deployment(&client, &agent_name, false).await.is_none());
    secret_holds(&client, "db", &[("password", "changed")]).await;

    manager.abort();
    node.stop().await;
}

/// The placement controller alone, on hand-made pools, DaemonSets and pods.
fn start_placement(client: &kube::Client) -> tokio::task::JoinHandle<()> {
    let setup = hsm_operator::placement::Setup {
        client: client.clone(),
        settings: Settings {
            image: "hsm-agent".into(),
            tls: false,
            service_account: "hsm-agent".into(),
            absence_timeout: Duration::from_secs(600),
        },
    };
    tokio::spawn(hsm_operator::placement::run(setup, std::future::pending()))
}

const SERIAL: &str = "PICO0001";
const AGENT: &str = "hsm-agent-pico-pico0001";

/// The pool as the pool controller writes it: owned by the device, `devices` in its status.
async fn report(client: &kube::Client, device: &HSMDevice, devices: serde_json::Value) {
    let pools = Api::<HSMPool>::namespaced(client.clone(), OPERATOR_NS);
    let name = hsm_api::names::pool_name(DEVICE);
    let pool: HSMPool = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMPool",
        "metadata": {"name": name, "namespace": OPERATOR_NS,
            "labels": {"hsm.j5t.io/device": DEVICE},
            "ownerReferences": [{"apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
                "name": DEVICE, "uid": device.uid().unwrap(), "controller": true}]},
        "spec": {"gracePeriod": "5m"}
    }))
    .unwrap();
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let status = json!({"status": {"phase": "Ready", "aggregatedDevices": devices,
        "totalDevices": 1, "availableDevices": 1, "expectedPods": 1}});
    pools
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_agent_waits_for_current_discovery_on_its_node_and_goes_with_its_hsmdevice() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let device = create_device(&client, "/usr/lib/any-pkcs11.so", "any").await;
    let daemon_sets = Api::<DaemonSet>::namespaced(client.clone(), OPERATOR_NS);
    let ds: DaemonSet = serde_json::from_value(json!({
        "metadata": {"name": hsm_api::names::discovery_daemonset_name(DEVICE), "namespace": OPERATOR_NS,
            "labels": {"app.kubernetes.io/component": "discovery", "hsm.j5t.io/device": DEVICE}},
        "spec": {"selector": {"matchLabels": {"app": "d"}},
                 "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
    }))
    .unwrap();
    let ds = daemon_sets
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    let generation = ds.metadata.generation.unwrap().to_string();
    let placement = start_placement(&client);
    report(
        &client,
        &device,
        json!([{"devicePath": "/dev/bus/usb/001/007", "serialNumber": SERIAL, "nodeName": NODE,
                "lastSeen": k8s_openapi::jiff::Timestamp::now().to_string(), "available": true}]),
    )
    .await;

    // No discovery pod on the node runs the current generation: no agent yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NS);
    assert!(deployments.get_opt(AGENT).await.unwrap().is_none());

    // Now one does (Running and Ready): the agent is created at once.
    let pods = Api::<Pod>::namespaced(client.clone(), OPERATOR_NS);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "pico-discovery-x", "namespace": OPERATOR_NS,
            "labels": {"app.kubernetes.io/component": "discovery", "hsm.j5t.io/device": DEVICE,
                       "pod-template-generation": generation}},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(
        "pico-discovery-x",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();
    deployment(&client, AGENT, true).await;

    // The HSMDevice deleted: its agent and pool are collected with it.
    Api::<HSMDevice>::namespaced(client.clone(), OPERATOR_NS)
        .delete(DEVICE, &DeleteParams::foreground())
        .await
        .unwrap();
    deployment(&client, AGENT, false).await;
    placement.abort();
}
