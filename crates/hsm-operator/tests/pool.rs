//! The HSMDevice and HSMPool controllers against the API emulator: an HSMDevice gets its
//! discovery DaemonSet and pool; the pod runner runs that DaemonSet's pod as written, with the
//! real `hsm-discovery` binary reading a fixture sysfs tree that shows a Pico HSM, and the
//! pod's per-device report makes the pool Ready with the device; two HSMDevices keep separate
//! reports and pools; deleting an HSMDevice removes its DaemonSet, pool and pods; a malformed
//! report is a condition on the pool and the controller keeps going.

mod common;

use api_emulator::{Authorization, Emulator, UserInfo};
use common::{OPERATOR_NS, client_for};
use hsm_api::device::HSMDevice;
use hsm_api::names::device_report_key;
use hsm_api::pool::{HSMPool, HSMPoolPhase};
use hsm_operator::pool::Timers;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pod_runner::{HostPaths, ImageTable, PodRunner, RunnerConfig};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = OPERATOR_NS;
const IMAGE: &str = "localhost/hsm-discovery:dev";
const PICO_SERIAL: &str = "DC6A33145E23A42A";
const NITRO_SERIAL: &str = "DENK0200456";
const NODE: &str = "local";

/// The emulator (with an audit log), served over HTTP, and the two controllers in process.
struct Operator {
    emulator: Emulator,
    server: api_emulator::server::Server,
    client: kube::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Operator {
    async fn start() -> Operator {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "hsm_operator=info".into()),
            )
            .with_test_writer()
            .try_init();
        let emulator = Emulator::builder()
            .audit(true)
            .authorization(Authorization::Rbac)
            .build();
        emulator
            .load_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
            .unwrap();
        let server = emulator.serve(0).await.unwrap();
        let admin = client_for(&server.kubeconfig()).await;
        for ns in [NS, MANAGER_NS] {
            Api::<Namespace>::all(admin.clone())
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
                )
                .await
                .unwrap();
        }
        // Discovery pods run as their own ServiceAccount, which must exist (the API server
        // refuses pods of a missing one).
        emulator
            .create_object(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": "hsm-discovery", "namespace": NS}}))
            .unwrap();
        // The controllers run as the manager's ServiceAccount with deploy/'s RBAC enforced.
        grant_manager_rbac(&admin).await;
        emulator.add_token(
            MANAGER_TOKEN,
            UserInfo {
                username: MANAGER_USER.into(),
                uid: "manager-uid".into(),
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{MANAGER_NS}"),
                    "system:authenticated".into(),
                ],
            },
        );
        let client = client_with_token(&server.kubeconfig(), MANAGER_TOKEN).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let shutdown = futures::FutureExt::shared(async move {
            let _ = stopped.await;
        });
        let devices = hsm_operator::device::Setup {
            client: client.clone(),
            image: IMAGE.into(),
            service_account: "hsm-discovery".into(),
        };
        let pools = hsm_operator::pool::Setup {
            client: client.clone(),
            timers: Timers {
                requeue: Duration::from_secs(1),
                requeue_ready: Duration::from_secs(2),
                retry: Duration::from_millis(200),
            },
        };
        let tasks = vec![
            tokio::spawn(hsm_operator::device::run(devices, shutdown.clone())),
            tokio::spawn(hsm_operator::pool::run(pools, shutdown)),
        ];
        Operator {
            emulator,
            server,
            client: admin,
            stop: Some(stop),
            tasks,
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn put_device(&self, name: &str, extra: Value) -> HSMDevice {
        let mut device = json!({
            "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"deviceType": "PicoHSM"}
        });
        merge(&mut device, extra);
        let device: HSMDevice = serde_json::from_value(device).unwrap();
        self.api::<HSMDevice>()
            .patch(
                name,
                &PatchParams::apply("test").force(),
                &Patch::Apply(&device),
            )
            .await
            .unwrap()
    }

    async fn delete_device(&self, name: &str) {
        self.api::<HSMDevice>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Waits until `get` answers something `done` accepts; answers it.
    async fn until<T: std::fmt::Debug>(
        &self,
        what: &str,
        get: impl AsyncFn() -> T,
        done: impl Fn(&T) -> bool,
    ) -> T {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = get().await;
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; last: {value:#?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn pool_until(&self, name: &str, what: &str, done: impl Fn(&HSMPool) -> bool) -> HSMPool {
        let api = self.api::<HSMPool>();
        let pool = self
            .until(
                what,
                || async { api.get_opt(&format!("{name}-pool")).await.unwrap() },
                |pool| pool.as_ref().is_some_and(&done),
            )
            .await;
        pool.unwrap()
    }

    async fn daemonset(&self, device: &str) -> Option<DaemonSet> {
        self.api::<DaemonSet>()
            .get_opt(&format!("{device}-discovery"))
            .await
            .unwrap()
    }

    async fn discovery_pods(&self, device: &str) -> Vec<Pod> {
        self.api::<Pod>()
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/component=discovery,hsm.j5t.io/device={device}"
            )))
            .await
            .unwrap()
            .items
    }

    /// The manager's own writes of `resource` (no subresource) since the audit log was cleared.
    fn applies(&self, resource: &str) -> usize {
        self.emulator
            .audit_log()
            .iter()
            .filter(|e| e.verb == "patch" && e.resource == resource && e.subresource.is_empty())
            .count()
    }

    /// Stops the controllers, and checks that RBAC refused none of their requests.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        let log = self.emulator.audit_log();
        let mine: Vec<_> = log.iter().filter(|e| e.user == MANAGER_USER).collect();
        assert!(
            !mine.is_empty(),
            "the controllers made no requests as the manager"
        );
        let denied: Vec<String> = mine
            .iter()
            .filter(|e| !e.allowed)
            .map(|e| {
                format!(
                    "{} {}/{} {}",
                    e.verb, e.api_group, e.resource, e.subresource
                )
            })
            .collect();
        assert!(
            denied.is_empty(),
            "deploy/base's RBAC denies the manager: {denied:#?}"
        );
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

const MANAGER_NS: &str = "hsm-secrets-operator-system";
const MANAGER_USER: &str =
    "system:serviceaccount:hsm-secrets-operator-system:hsm-secrets-operator-controller-manager";
const MANAGER_TOKEN: &str = "manager-token";

/// The manager's ClusterRole and its binding, as deploy/base has them.
async fn grant_manager_rbac(admin: &kube::Client) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/rbac-manager.yaml"),
    )
    .unwrap();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let object: Value = serde::Deserialize::deserialize(document).unwrap();
        let post = PostParams::default();
        match object["kind"].as_str() {
            Some("ClusterRole") => {
                Api::<ClusterRole>::all(admin.clone())
                    .create(&post, &serde_json::from_value(object).unwrap())
                    .await
                    .unwrap();
            }
            Some("ClusterRoleBinding") => {
                Api::<ClusterRoleBinding>::all(admin.clone())
                    .create(&post, &serde_json::from_value(object).unwrap())
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
}

/// A client of the served emulator that authenticates with `token`.
async fn client_with_token(kubeconfig: &str, token: &str) -> kube::Client {
    let mut kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    for auth in &mut kubeconfig.auth_infos {
        if let Some(info) = auth.auth_info.as_mut() {
            info.token = Some(token.to_owned().into());
        }
    }
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (k, v) in extra {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, extra) => *base = extra,
    }
}

fn phase(pool: &HSMPool) -> Option<HSMPoolPhase> {
    pool.status.as_ref().and_then(|s| s.phase.clone())
}

fn serials(pool: &HSMPool) -> Vec<(String, String, String, bool)> {
    pool.status
        .as_ref()
        .map(|s| {
            s.aggregated_devices
                .iter()
                .map(|d| {
                    (
                        d.serial_number.clone(),
                        d.node_name.clone(),
                        d.device_path.clone(),
                        d.available,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn condition<'a>(
    pool: &'a HSMPool,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    pool.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// `hsm-discovery` as the test suite builds it (the pod runner runs it as the discovery
/// image's entrypoint): under `cargo xtask test` nothing is rebuilt.
fn discovery_binary() -> PathBuf {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY
        .get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            let mut built = delivery::cargo::build(
                &root,
                delivery::cargo::Profile::TestSuite,
                &["hsm-discovery"],
            )
            .expect("building hsm-discovery");
            built
                .remove("hsm-discovery")
                .expect("an hsm-discovery binary")
        })
        .clone()
}

/// The pod runner playing node `local`, with the discovery image mapped to the binary and
/// the DaemonSet's host paths to a fixture sysfs tree (a Pico HSM, a SmartCard-HSM, a
/// Nitrokey HSM, a YubiKey and a hub) and empty directories.
struct Node {
    runner: Option<PodRunner>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(operator: &Operator) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        operator.server.write_kubeconfig(&kubeconfig).unwrap();
        let sysfs =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../hsm-discovery/tests/fixtures/sysfs");
        let mut host_paths = HostPaths::new().with("/sys", sysfs);
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
        config.images = ImageTable::new().with("hsm-discovery", discovery_binary());
        config.host_paths = host_paths;
        config.pod_env.insert(
            "KUBECONFIG".into(),
            kubeconfig.to_string_lossy().into_owned(),
        );
        config
            .pod_env
            .insert("RUST_LOG".into(), "hsm_discovery=debug".into());
        config.resync = Duration::from_millis(500);
        config.restart_backoff = Duration::from_millis(200);
        config.restart_backoff_max = Duration::from_secs(1);
        let runner = PodRunner::start(operator.client.clone(), config).unwrap();
        Node {
            runner: Some(runner),
            _dir: dir,
        }
    }

    /// The discovery container's log (for failure messages).
    fn log(&self, pod: &str) -> String {
        let path = self.runner.as_ref().unwrap().log_path(NS, pod, "discovery");
        std::fs::read_to_string(path).unwrap_or_default()
    }

    async fn stop(mut self) {
        if let Some(runner) = self.runner.take() {
            runner.stop_within(Duration::from_secs(2)).await;
        }
    }
}

fn pico_spec() -> Value {
    json!({"spec": {"discovery": {"usb": [{"vendorId": "2e8a", "productId": "10fd"}]}}})
}

fn nitro_spec() -> Value {
    json!({"spec": {"deviceType": "SmartCard-HSM",
                    "discovery": {"usb": [{"vendorId": "20a0", "productId": "4230"}]}}})
}

#[tokio::test]
async fn an_hsmdevice_gets_its_discovery_daemonset_and_pool_applied_only_when_they_change() {
    let operator = Operator::start().await;
    let device = operator
        .put_device(
            "pico",
            json!({"spec": {"nodeSelector": {"hsm": "yes", "kubernetes.io/hostname": NODE}}}),
        )
        .await;
    let ds = operator
        .until(
            "the DaemonSet",
            || operator.daemonset("pico"),
            Option::is_some,
        )
        .await
        .unwrap();
    let pool = operator.pool_until("pico", "the pool", |_| true).await;
    for (object, component) in [(&ds.metadata, "discovery"), (&pool.metadata, "pool")] {
        let labels = object.labels.clone().unwrap();
        assert_eq!(labels["app.kubernetes.io/component"], component);
        assert_eq!(labels["app.kubernetes.io/name"], "hsm-secrets-operator");
        assert_eq!(labels["hsm.j5t.io/device"], "pico");
        let owner = &object.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.uid, device.uid().unwrap());
        assert_eq!(owner.controller, Some(true));
    }
    assert_eq!(pool.spec.grace_period.as_deref(), Some("5m"));
    let template = ds.spec.template.spec.as_ref().unwrap();
    assert_eq!(template.node_selector.as_ref().unwrap().len(), 2);
    assert_eq!(template.containers[0].image.as_deref(), Some(IMAGE));
    assert_eq!(
        template.service_account_name.as_deref(),
        Some("hsm-discovery")
    );
    // With no pod reporting, the pool waits.
    let pool = operator
        .pool_until("pico", "a Pending status", |p| {
            phase(p) == Some(HSMPoolPhase::Pending)
        })
        .await;
    assert_eq!(
        condition(&pool, "DeviceAggregation").unwrap().status,
        "True"
    );

    // Events that change nothing the manager wants apply nothing: a label on the device, a
    // status written on the DaemonSet, a user's grace period on the pool (kept).
    operator.emulator.clear_audit_log();
    let generation = ds.metadata.generation;
    operator
        .put_device(
            "pico",
            json!({"metadata": {"labels": {"team": "a"}},
                   "spec": {"nodeSelector": {"hsm": "yes", "kubernetes.io/hostname": NODE}}}),
        )
        .await;
    operator
        .api::<DaemonSet>()
        .patch_status(
            "pico-discovery",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"desiredNumberScheduled": 0, "currentNumberScheduled": 0,
                                            "numberMisscheduled": 0, "numberReady": 0}}),
            ),
        )
        .await
        .unwrap();
    operator
        .api::<HSMPool>()
        .patch(
            "pico-pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"gracePeriod": "90s"}})),
        )
        .await
        .unwrap();
    // Then a change that needs an apply: every key of the selector but one goes (defect 11
    // and the fingerprint: removed keys are removed).
    operator
        .put_device("pico", json!({"spec": {"nodeSelector": {"hsm": "yes"}}}))
        .await;
    let ds = operator
        .until(
            "the selector with one key",
            || operator.daemonset("pico"),
            |ds| {
                ds.as_ref()
                    .and_then(|d| d.spec.template.spec.as_ref()?.node_selector.clone())
                    .is_some_and(|s| s.len() == 1 && s["hsm"] == "yes")
            },
        )
        .await
        .unwrap();
    assert_ne!(ds.metadata.generation, generation);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        operator.applies("daemonsets"),
        1,
        "{:#?}",
        operator.emulator.audit_log()
    );
    let pool = operator.api::<HSMPool>().get("pico-pool").await.unwrap();
    assert_eq!(pool.spec.grace_period.as_deref(), Some("90s"), "the user's");

    // A hand-deleted DaemonSet comes back.
    let old_uid = ds.metadata.uid.clone();
    operator
        .api::<DaemonSet>()
        .delete("pico-discovery", &DeleteParams::default())
        .await
        .unwrap();
    operator
        .until(
            "the DaemonSet back",
            || operator.daemonset("pico"),
            |ds| ds.as_ref().is_some_and(|d| d.metadata.uid != old_uid),
        )
        .await;
    operator.stop().await;
}

#[tokio::test]
async fn the_discovery_pod_reports_a_pico_hsm_and_the_pool_becomes_ready() {
    let operator = Operator::start().await;
    let node = Node::start(&operator);
    operator.put_device("pico", pico_spec()).await;
    let pool = operator
        .pool_until("pico", "a Ready pool with the Pico HSM", |p| {
            phase(p) == Some(HSMPoolPhase::Ready) && !serials(p).is_empty()
        })
        .await;
    let pods = operator.discovery_pods("pico").await;
    assert_eq!(pods.len(), 1);
    let pod = pods[0].name_any();
    assert_eq!(
        serials(&pool),
        [(
            PICO_SERIAL.to_owned(),
            NODE.to_owned(),
            "/dev/bus/usb/001/015".to_owned(),
            true
        )],
        "discovery log:\n{}",
        node.log(&pod)
    );
    let status = pool.status.clone().unwrap();
    assert_eq!((status.total_devices, status.available_devices), (1, 1));
    assert_eq!(status.expected_pods, 1);
    let report = &status.reporting_pods[0];
    assert_eq!(report.pod_name, pod);
    assert_eq!(report.node_name, NODE);
    assert_eq!(report.discovery_status, "completed");
    assert!(report.fresh);
    assert_eq!(report.devices_found, 1);
    let device = &status.aggregated_devices[0];
    assert_eq!(device.device_info["vendor-id"], "2e8a");
    assert_eq!(device.resource_name, "hsm.j5t.io/picohsm");
    let reports = pods[0].annotations();
    assert!(
        reports.contains_key(&device_report_key("pico")),
        "{reports:?}"
    );
    assert_eq!(condition(&pool, "ReportsValid").unwrap().status, "True");
    node.stop().await;
    operator.stop().await;
}

/// Defect 17: a test-mode pod's template is whole (every mount has its volume, none on the
/// host), so it runs; its empty sysfs shows no device.
#[tokio::test]
async fn a_test_mode_discovery_pod_runs_without_the_host() {
    let operator = Operator::start().await;
    let node = Node::start(&operator);
    let mut spec = pico_spec();
    merge(
        &mut spec,
        json!({"metadata": {"annotations": {"hsm.j5t.io/test-mode": "true"}}}),
    );
    operator.put_device("pico", spec).await;
    let pool = operator
        .pool_until("pico", "a Ready pool from the test-mode pod", |p| {
            phase(p) == Some(HSMPoolPhase::Ready)
        })
        .await;
    let pods = operator.discovery_pods("pico").await;
    assert_eq!(pods.len(), 1);
    let volumes = pods[0].spec.as_ref().unwrap().volumes.clone().unwrap();
    // The template's volumes, and the ServiceAccount token volume the API server adds.
    let (token, own): (Vec<_>, Vec<_>) = volumes
        .iter()
        .partition(|v| v.name.starts_with("kube-api-access-"));
    assert_eq!(token.len(), 1, "{volumes:#?}");
    assert!(
        own.iter()
            .all(|v| v.empty_dir.is_some() && v.host_path.is_none()),
        "{volumes:#?}"
    );
    assert!(serials(&pool).is_empty(), "{:#?}", pool.status);
    assert_eq!(
        pool.status.as_ref().unwrap().reporting_pods[0].discovery_status,
        "completed"
    );
    node.stop().await;
    operator.stop().await;
}

#[tokio::test]
async fn two_devices_keep_separate_reports_and_pools_and_a_deleted_one_takes_its_objects() {
    let operator = Operator::start().await;
    let node = Node::start(&operator);
    operator.put_device("pico", pico_spec()).await;
    operator.put_device("nitro", nitro_spec()).await;
    let pico = operator
        .pool_until("pico", "pico Ready", |p| {
            phase(p) == Some(HSMPoolPhase::Ready) && !serials(p).is_empty()
        })
        .await;
    let nitro = operator
        .pool_until("nitro", "nitro Ready", |p| {
            phase(p) == Some(HSMPoolPhase::Ready) && !serials(p).is_empty()
        })
        .await;
    assert_eq!(
        serials(&pico).into_iter().map(|s| s.0).collect::<Vec<_>>(),
        [PICO_SERIAL]
    );
    assert_eq!(
        serials(&nitro).into_iter().map(|s| s.0).collect::<Vec<_>>(),
        [NITRO_SERIAL]
    );
    // One discovery pod carries both devices' reports, each under its own key (defect 10).
    let pod = operator
        .until(
            "both reports on pico's discovery pod",
            || operator.discovery_pods("pico"),
            |pods| {
                pods.len() == 1
                    && [device_report_key("pico"), device_report_key("nitro")]
                        .iter()
                        .all(|k| pods[0].annotations().contains_key(k))
            },
        )
        .await
        .remove(0);
    let report = |device: &str| {
        hsm_api::report::PodDiscoveryReport::for_device(pod.annotations(), device)
            .unwrap()
            .unwrap()
    };
    assert_eq!(
        report("pico").discovered_devices[0].serial_number,
        PICO_SERIAL
    );
    assert_eq!(
        report("nitro").discovered_devices[0].serial_number,
        NITRO_SERIAL
    );

    // HSMDevice deleted: its DaemonSet, pool and pod go (owner references), the other stays.
    let nitro_pods = operator.discovery_pods("nitro").await;
    assert_eq!(nitro_pods.len(), 1);
    operator.delete_device("nitro").await;
    assert!(operator.daemonset("nitro").await.is_none());
    assert!(
        operator
            .api::<HSMPool>()
            .get_opt("nitro-pool")
            .await
            .unwrap()
            .is_none()
    );
    operator
        .until(
            "nitro's discovery pod gone",
            || operator.discovery_pods("nitro"),
            Vec::is_empty,
        )
        .await;
    // The remaining pod drops the deleted device's report; pico's pool is untouched.
    operator
        .until(
            "nitro's report gone from pico's pod",
            || operator.discovery_pods("pico"),
            |pods| {
                pods.len() == 1
                    && !pods[0]
                        .annotations()
                        .contains_key(&device_report_key("nitro"))
            },
        )
        .await;
    let pico = operator.api::<HSMPool>().get("pico-pool").await.unwrap();
    assert_eq!(phase(&pico), Some(HSMPoolPhase::Ready));
    assert_eq!(serials(&pico).len(), 1);
    node.stop().await;
    operator.stop().await;
}

/// A pod with the discovery labels and the given annotations, bound to `local` and Running.
async fn hand_made_pod(operator: &Operator, device: &str, annotations: Value) -> Pod {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{device}-discovery-hand"), "namespace": NS,
                     "labels": {"app.kubernetes.io/name": "hsm-secrets-operator",
                                "app.kubernetes.io/component": "discovery",
                                "hsm.j5t.io/device": device},
                     "annotations": annotations},
        "spec": {"nodeName": NODE, "containers": [{"name": "discovery", "image": IMAGE}]}
    }))
    .unwrap();
    let api = operator.api::<Pod>();
    api.create(&PostParams::default(), &pod).await.unwrap();
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "Running"}})),
    )
    .await
    .unwrap()
}

fn report_json(device: &str, age: Duration) -> String {
    let at = k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::try_from(age).unwrap();
    let at = k8s_openapi::jiff::Timestamp::from_second(at.as_second()).unwrap();
    json!({
        "hsmDeviceName": device, "reportingNode": NODE,
        "discoveredDevices": [{"devicePath": "/dev/bus/usb/001/015", "serialNumber": PICO_SERIAL,
                               "nodeName": NODE, "lastSeen": at.to_string(), "available": true}],
        "lastReportTime": at.to_string(), "discoveryStatus": "completed"
    })
    .to_string()
}

#[tokio::test]
async fn a_malformed_report_is_a_condition_and_aggregation_goes_on() {
    let operator = Operator::start().await;
    operator.put_device("pico", pico_spec()).await;
    operator
        .until(
            "the DaemonSet",
            || operator.daemonset("pico"),
            Option::is_some,
        )
        .await;
    operator
        .api::<DaemonSet>()
        .patch_status(
            "pico-discovery",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                                            "numberMisscheduled": 0, "numberReady": 1}}),
            ),
        )
        .await
        .unwrap();
    let key = device_report_key("pico");
    let pod = hand_made_pod(&operator, "pico", json!({&key: "{\"hsmDeviceName\": 42"})).await;
    let pool = operator
        .pool_until("pico", "ReportsValid=False", |p| {
            condition(p, "ReportsValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let valid = condition(&pool, "ReportsValid").unwrap();
    assert_eq!(valid.reason, "MalformedReport");
    assert!(
        valid.message.starts_with(&format!(
            "pod {}: the report under {key} is not a discovery report",
            pod.name_any()
        )),
        "{}",
        valid.message
    );
    assert_eq!(phase(&pool), Some(HSMPoolPhase::Partial));
    let entry = &pool.status.as_ref().unwrap().reporting_pods[0];
    assert_eq!(
        (entry.discovery_status.as_str(), entry.fresh),
        ("error", false)
    );

    // The controller kept going: the fixed report is aggregated at once.
    operator
        .api::<Pod>()
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {&key: report_json("pico", Duration::ZERO)}}}),
            ),
        )
        .await
        .unwrap();
    let pool = operator
        .pool_until("pico", "Ready after the fix", |p| {
            phase(p) == Some(HSMPoolPhase::Ready)
        })
        .await;
    assert_eq!(condition(&pool, "ReportsValid").unwrap().status, "True");
    assert_eq!(serials(&pool)[0].0, PICO_SERIAL);
    operator.stop().await;
}

#[tokio::test]
async fn a_report_older_than_the_pools_grace_period_is_stale() {
    let operator = Operator::start().await;
    operator.put_device("pico", pico_spec()).await;
    operator
        .until(
            "the DaemonSet",
            || operator.daemonset("pico"),
            Option::is_some,
        )
        .await;
    let key = device_report_key("pico");
    hand_made_pod(
        &operator,
        "pico",
        json!({&key: report_json("pico", Duration::from_secs(600))}),
    )
    .await;
    let pool = operator
        .pool_until("pico", "a stale report", |p| {
            p.status
                .as_ref()
                .is_some_and(|s| s.reporting_pods.len() == 1 && !s.reporting_pods[0].fresh)
        })
        .await;
    assert_ne!(phase(&pool), Some(HSMPoolPhase::Ready));
    assert!(!serials(&pool)[0].3, "unavailable: nobody vouches for it");
    // A longer grace period on the pool (a spec change: aggregated at once).
    operator
        .api::<HSMPool>()
        .patch(
            "pico-pool",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"gracePeriod": "15m"}})),
        )
        .await
        .unwrap();
    let pool = operator
        .pool_until("pico", "fresh within 15m", |p| {
            phase(p) == Some(HSMPoolPhase::Ready)
        })
        .await;
    assert!(serials(&pool)[0].3);
    operator.stop().await;
}

#[tokio::test]
async fn a_pool_whose_device_is_gone_says_so() {
    let operator = Operator::start().await;
    let pool: HSMPool = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMPool",
        "metadata": {"name": "orphan-pool", "namespace": NS},
        "spec": {}
    }))
    .unwrap();
    operator
        .api::<HSMPool>()
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
    let pool = operator
        .pool_until("orphan", "phase Error", |p| {
            phase(p) == Some(HSMPoolPhase::Error)
        })
        .await;
    let c = condition(&pool, "DeviceAggregation").unwrap();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Error"));
    assert_eq!(c.message, "HSMPool has no owner HSMDevice");
    operator.stop().await;
}
