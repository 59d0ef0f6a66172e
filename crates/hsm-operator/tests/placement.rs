//! Agent placement end to end: the manager (as `hsm-operator` wires it) against the served API
//! emulator, the pod runner playing kubelet, and the real `hsm-agent` binary on a SoftHSM2
//! token. A device in the HSMPool's status becomes an agent Deployment, its pod becomes a
//! followed agent, and its secret becomes a Kubernetes Secret; the device gone, the agent goes.

mod common;

use clap::Parser;
use common::*;
use hsm_api::device::HSMDevice;
use hsm_api::pool::HSMPool;
use hsm_operator::cli::Cli;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use pod_runner::{ImageTable, PodRunner, RunnerConfig};
use serde_json::json;
use std::path::Path;
use std::time::Duration;

const DEVICE: &str = "pico";
const SERIAL: &str = "PICO0001";
const AGENT: &str = "hsm-agent-pico-pico0001";
const NODE: &str = "local";
const WAIT: Duration = Duration::from_secs(40);

/// The manager, wired as the binary wires it, in this process.
fn start_manager(client: &kube::Client, extra: &[&str]) -> tokio::task::JoinHandle<()> {
    let mut args = vec![
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
        "--device-absence-timeout=3s",
    ];
    args.extend_from_slice(extra);
    let cli = Cli::parse_from(args);
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(error) = hsm_operator::run::run_with(cli, client).await {
            panic!("the manager stopped: {error:#}");
        }
    })
}

async fn create_device(client: &kube::Client, token_label: &str) -> HSMDevice {
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
        "spec": {"deviceType": "PicoHSM", "pkcs11": {
            "libraryPath": hsm_store::testing::SOFTHSM2_MODULE,
            "tokenLabel": token_label,
            "pinSecret": {"name": "pico-pin", "key": "pin"}}}
    }))
    .unwrap();
    Api::<HSMDevice>::namespaced(client.clone(), OPERATOR_NS)
        .create(&PostParams::default(), &device)
        .await
        .unwrap()
}

/// The pool as the pool controller writes it: owned by the device, `devices` in its status.
async fn report(
    client: &kube::Client,
    device: &HSMDevice,
    phase: &str,
    devices: serde_json::Value,
) {
    let pools = Api::<HSMPool>::namespaced(client.clone(), OPERATOR_NS);
    let name = hsm_api::names::pool_name(DEVICE);
    if pools.get_opt(&name).await.unwrap().is_none() {
        let pool: HSMPool = serde_json::from_value(json!({
            "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMPool",
            "metadata": {"name": name, "namespace": OPERATOR_NS,
                "labels": {"hsm.j5t.io/device": DEVICE},
                "ownerReferences": [{"apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
                    "name": DEVICE, "uid": device.uid().unwrap(), "controller": true}]},
            "spec": {"gracePeriod": "1s"}
        }))
        .unwrap();
        pools.create(&PostParams::default(), &pool).await.unwrap();
    }
    let status = json!({"status": {"phase": phase, "aggregatedDevices": devices,
        "totalDevices": 1, "availableDevices": 1, "expectedPods": 1}});
    pools
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

fn device_on(node: &str, available: bool) -> serde_json::Value {
    json!([{"devicePath": "/dev/bus/usb/001/007", "serialNumber": SERIAL, "nodeName": node,
            "lastSeen": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "available": available}])
}

async fn deployment(client: &kube::Client, present: bool) -> Option<Deployment> {
    let api = Api::<Deployment>::namespaced(client.clone(), OPERATOR_NS);
    eventually(
        WAIT,
        &format!(
            "agent Deployment {AGENT} to be {}",
            if present { "there" } else { "gone" }
        ),
        || {
            let api = api.clone();
            async move {
                match api.get_opt(AGENT).await.unwrap() {
                    Some(d) if present => Some(Some(d)),
                    None if !present => Some(None),
                    _ => None,
                }
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reported_device_gets_an_agent_whose_secrets_reach_kubernetes_and_it_goes_when_the_device_does()
 {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.server.kubeconfig()).unwrap();
    let pki = operator_pki(&client, OPERATOR_NS).await;
    let hsm = hsm_store::testing::SoftHsm::new();
    let device = create_device(&client, &hsm.label).await;

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = delivery::cargo::build(&root, delivery::cargo::Profile::TestSuite, &["hsm-agent"])
        .expect("the hsm-agent binary");
    let mut config = RunnerConfig::new(NODE, dir.path().join("pods"));
    config.images = ImageTable::new().with("hsm-agent", &built["hsm-agent"]);
    config
        .pod_env
        .insert("KUBECONFIG".into(), kubeconfig.display().to_string());
    config.pod_env.insert(
        "SOFTHSM2_CONF".into(),
        hsm.conf_path().display().to_string(),
    );
    let runner = PodRunner::start(client.clone(), config).unwrap();
    let manager = start_manager(&client, &[]);

    // Reported available on this node: an agent Deployment pinned here, owned by the device.
    report(&client, &device, "Ready", device_on(NODE, true)).await;
    let agent = deployment(&client, true).await.unwrap();
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

    // Its pod runs the real agent; the manager follows it at the pod's IP over mTLS.
    let dump = DumpOnPanic {
        runner: &runner,
        client: client.clone(),
    };
    let grpc = eventually(
        WAIT,
        "the agent pod to be Ready and answer over mTLS",
        || {
            let (client, pki) = (client.clone(), &pki);
            async move {
                let pods = Api::<Pod>::namespaced(client, OPERATOR_NS);
                let pod = pods
                    .list(&kube::api::ListParams::default().labels(&format!("app={AGENT}")))
                    .await
                    .unwrap()
                    .items
                    .into_iter()
                    .next()?;
                let (_, url) = hsm_operator::agents::endpoints::agent_pod_endpoint(&pod, "https")?;
                let agent =
                    hsm_operator::agents::grpc::GrpcAgent::new(&url, Some(&pki.client)).unwrap();
                use hsm_operator::agents::AgentApi;
                agent.index().await.ok().map(|_| agent)
            }
        },
    )
    .await;
    hsm_write(&grpc, "db", &[("password", "from-the-token")], 1).await;
    Api::<hsm_api::secret::HSMSecret>::namespaced(client.clone(), APPS)
        .create(&PostParams::default(), &hsm_secret("db", json!({})))
        .await
        .unwrap();
    secret_holds(&client, "db", &[("password", "from-the-token")]).await;
    hsm_write(&grpc, "db", &[("password", "changed")], 2).await;
    secret_holds(&client, "db", &[("password", "changed")]).await;

    // Lost for longer than the grace period (1 s), and absent past the timeout (3 s): gone.
    report(&client, &device, "Ready", device_on(NODE, false)).await;
    assert!(deployment(&client, false).await.is_none());
    // The Secret keeps its last good value.
    tokio::time::sleep(Duration::from_secs(1)).await;
    secret_holds(&client, "db", &[("password", "changed")]).await;

    std::mem::forget(dump);
    manager.abort();
    runner.stop().await;
}

/// On a failure, prints the agent pods' status and logs.
struct DumpOnPanic<'a> {
    runner: &'a PodRunner,
    client: kube::Client,
}

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let client = self.client.clone();
        let pods = std::thread::scope(|s| {
            s.spawn(|| {
                tokio::runtime::Runtime::new()
                    .unwrap()
                    .block_on(async move {
                        Api::<Pod>::namespaced(client, OPERATOR_NS)
                            .list(&Default::default())
                            .await
                            .map(|l| l.items)
                            .unwrap_or_default()
                    })
            })
            .join()
            .unwrap()
        });
        for pod in pods {
            eprintln!("pod {}: {:?}", pod.name_any(), pod.status);
            for container in pod.spec.iter().flat_map(|s| &s.containers) {
                let log = self
                    .runner
                    .log_path(OPERATOR_NS, &pod.name_any(), &container.name);
                eprintln!(
                    "--- {} log:\n{}",
                    container.name,
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    }
}

#[tokio::test]
async fn an_agent_waits_for_current_discovery_on_its_node_and_goes_with_its_hsmdevice() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let device = create_device(&client, "any").await;
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
    let manager = start_manager(&client, &["--agent-tls-enabled=false"]);
    report(&client, &device, "Ready", device_on(NODE, true)).await;

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
    deployment(&client, true).await;

    // The HSMDevice deleted: its agent, pool and DaemonSet are collected with it.
    Api::<HSMDevice>::namespaced(client.clone(), OPERATOR_NS)
        .delete(DEVICE, &DeleteParams::foreground())
        .await
        .unwrap();
    deployment(&client, false).await;
    manager.abort();
}
