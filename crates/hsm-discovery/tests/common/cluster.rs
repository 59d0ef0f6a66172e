//! A discovery pod on the API emulator: the namespace, the node (with labels), the pod the
//! daemon reports on, HSMDevices, and waiting on the pod's annotations.

use api_emulator::Emulator;
use hsm_api::HSMDevice;
use hsm_api::report::PodDiscoveryReport;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// The pod's namespace.
pub const NS: &str = "hsm-system";
/// The node.
pub const NODE: &str = "worker-1";
/// The discovery pod.
pub const POD: &str = "pico-discovery-x7k2p";

/// A cluster with the CRDs, the namespace, the node (labels `hsm=yes`, `zone=a`) and the pod.
pub async fn cluster() -> (Emulator, kube::Client) {
    let emulator = Emulator::new();
    emulator
        .load_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
        .unwrap();
    let client = emulator.client();
    let post = PostParams::default();
    Api::<Namespace>::all(client.clone())
        .create(&post, &object(json!({"metadata": {"name": NS}})))
        .await
        .unwrap();
    Api::<Node>::all(client.clone())
        .create(
            &post,
            &object(json!({"metadata": {"name": NODE, "labels": {
                "kubernetes.io/hostname": NODE, "hsm": "yes", "zone": "a"}}})),
        )
        .await
        .unwrap();
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&post, &object(json!({
            "metadata": {"name": POD, "labels": {
                "app.kubernetes.io/component": "discovery", "hsm.j5t.io/device": "pico"},
                "annotations": {"example.com/keep": "yes"}},
            "spec": {"nodeName": NODE, "containers": [{"name": "discovery", "image": "hsm:dev"}]}
        })))
        .await
        .unwrap();
    (emulator, client)
}

fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
    serde_json::from_value(value).unwrap()
}

/// Creates or replaces an HSMDevice.
pub async fn put_device(client: &kube::Client, name: &str, spec: serde_json::Value) {
    let device: HSMDevice = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap();
    Api::<HSMDevice>::namespaced(client.clone(), NS)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&device),
        )
        .await
        .unwrap();
}

/// Deletes an HSMDevice.
pub async fn delete_device(client: &kube::Client, name: &str) {
    Api::<HSMDevice>::namespaced(client.clone(), NS)
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
}

/// The pod's annotations.
pub async fn annotations(client: &kube::Client) -> BTreeMap<String, String> {
    Api::<Pod>::namespaced(client.clone(), NS)
        .get(POD)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default()
}

/// The reports on the pod, by device (from the per-device keys).
pub fn reports(annotations: &BTreeMap<String, String>) -> BTreeMap<String, PodDiscoveryReport> {
    annotations
        .iter()
        .filter_map(|(key, json)| {
            let device = hsm_api::names::device_from_report_key(key)?;
            Some((device.to_owned(), serde_json::from_str(json).unwrap()))
        })
        .collect()
}

/// Waits until the pod's reports satisfy `done`; panics with the last reports after 10 s.
pub async fn until(
    client: &kube::Client,
    what: &str,
    done: impl Fn(&BTreeMap<String, PodDiscoveryReport>) -> bool,
) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = annotations(client).await;
        if done(&reports(&now)) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "waiting for {what}; reports: {:#?}",
            reports(&now)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(serial, devicePath, available)` of a device's report.
pub fn summary(
    reports: &BTreeMap<String, PodDiscoveryReport>,
    device: &str,
) -> Vec<(String, String, bool)> {
    reports
        .get(device)
        .map(|r| {
            r.discovered_devices
                .iter()
                .map(|d| (d.serial_number.clone(), d.device_path.clone(), d.available))
                .collect()
        })
        .unwrap_or_default()
}
