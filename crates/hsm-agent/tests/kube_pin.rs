//! The PIN from the HSMDevice's `pinSecret`, through a real `kube::Client` and real watches
//! on the Kubernetes API emulator: the selector's namespace is honoured, a rotated PIN and a
//! repointed device are followed at once, every missing piece is a clear error without the
//! PIN, and a device whose PIN was refused comes back as soon as the Secret is fixed.

use api_emulator::Emulator;
use hsm_agent::device::{Device, DeviceConfig, NotReadyReason, Readiness};
use hsm_agent::kube_pin::KubernetesPin;
use hsm_agent::pin::{PinError, PinSource};
use hsm_api::device::HSMDevice;
use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use secrecy::ExposeSecret;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

const AGENT_NS: &str = "hsm-system";

async fn cluster() -> kube::Client {
    let emulator = Emulator::new();
    emulator
        .load_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
        .unwrap();
    let client = emulator.client();
    for ns in [AGENT_NS, "vault"] {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
    }
    client
}

async fn put_secret(client: &kube::Client, ns: &str, name: &str, data: serde_json::Value) {
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name}, "stringData": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

async fn put_device(client: &kube::Client, pin_secret: serde_json::Value) {
    let device: HSMDevice = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": "pico"},
        "spec": {"deviceType": "PicoHSM", "pkcs11": {"pinSecret": pin_secret}}
    }))
    .unwrap();
    Api::<HSMDevice>::namespaced(client.clone(), AGENT_NS)
        .patch(
            "pico",
            &PatchParams::apply("test").force(),
            &Patch::Apply(&device),
        )
        .await
        .unwrap();
}

/// Waits until the source answers as `expected` says (a PIN, or an error containing a text).
async fn until(source: &KubernetesPin, expected: Result<&str, &str>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = source.current();
        let done = match (&now, expected) {
            (Ok(pin), Ok(want)) => pin.expose_secret() == want,
            (Err(e), Err(want)) => e.to_string().contains(want),
            _ => false,
        };
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "wanted {expected:?}, have {:?}",
            now.map(|_| "a PIN").map_err(|e| e.to_string())
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_pin_follows_the_secret_the_device_names_in_the_namespace_it_names() {
    let client = cluster().await;
    // The same Secret name in both namespaces: only the one named may be used.
    put_secret(&client, "vault", "pico-pin", json!({"pin": "111111"})).await;
    put_secret(&client, AGENT_NS, "pico-pin", json!({"pin": "222222\n"})).await;
    put_device(
        &client,
        json!({"name": "pico-pin", "key": "pin", "namespace": "vault"}),
    )
    .await;
    let source = KubernetesPin::start(client.clone(), AGENT_NS, "pico");
    until(&source, Ok("111111")).await;

    // Rotated in place.
    put_secret(&client, "vault", "pico-pin", json!({"pin": "333333"})).await;
    until(&source, Ok("333333")).await;

    // No namespace: the agent's own (and its newline dropped).
    put_device(&client, json!({"name": "pico-pin", "key": "pin"})).await;
    until(&source, Ok("222222")).await;
}

#[tokio::test]
async fn every_missing_piece_is_a_clear_error_without_the_pin() {
    let client = cluster().await;
    let source = KubernetesPin::start(client.clone(), AGENT_NS, "pico");
    until(&source, Err("HSMDevice hsm-system/pico not found")).await;

    put_device(&client, json!({"name": "pico-pin", "key": "pin"})).await;
    until(&source, Err("Secret hsm-system/pico-pin not found")).await;

    put_secret(&client, AGENT_NS, "pico-pin", json!({"other": "444444"})).await;
    until(
        &source,
        Err("key pin of Secret hsm-system/pico-pin is missing"),
    )
    .await;

    put_secret(&client, AGENT_NS, "pico-pin", json!({"pin": ""})).await;
    until(&source, Err("is empty")).await;

    put_secret(&client, AGENT_NS, "pico-pin", json!({"pin": "555555"})).await;
    until(&source, Ok("555555")).await;

    Api::<HSMDevice>::namespaced(client.clone(), AGENT_NS)
        .delete("pico", &DeleteParams::default())
        .await
        .unwrap();
    until(&source, Err("not found")).await;
    let err = source.current().unwrap_err();
    assert!(matches!(err, PinError::Kubernetes(_)));
    assert!(!err.to_string().contains("555555"));
    assert!(source.describe().contains("hsm-system/pico"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pin_is_offered_again_only_once_the_secret_changes() {
    let client = cluster().await;
    let hsm = SoftHsm::new();
    put_secret(&client, AGENT_NS, "pico-pin", json!({"pin": "000000"})).await;
    put_device(&client, json!({"name": "pico-pin", "key": "pin"})).await;
    let source = KubernetesPin::start(client.clone(), AGENT_NS, "pico");
    until(&source, Ok("000000")).await;
    let state = tempfile::tempdir().unwrap();
    let device = std::sync::Arc::new(Device::new(
        DeviceConfig {
            state_dir: Some(state.path().to_path_buf()),
            min_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector())
        },
        Box::new(source),
    ));
    let connect = |device: std::sync::Arc<Device>| {
        tokio::task::spawn_blocking(move || device.ensure_connected())
    };
    for _ in 0..3 {
        assert!(matches!(
            connect(device.clone()).await.unwrap(),
            Readiness::NotReady {
                reason: NotReadyReason::PinRefused,
                ..
            }
        ));
    }
    assert_eq!(device.login_attempts(), 1, "a refused PIN is offered once");

    put_secret(&client, AGENT_NS, "pico-pin", json!({"pin": TEST_PIN})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while connect(device.clone()).await.unwrap() != Readiness::Ready {
        assert!(Instant::now() < deadline, "{:?}", device.readiness());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(device.login_attempts(), 2);
}
