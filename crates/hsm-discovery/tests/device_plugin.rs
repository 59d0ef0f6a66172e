//! The device plugin against a kubelet double on a real Unix socket with real gRPC: it
//! registers at the first kubelet socket that exists, streams its list at once and again on
//! every change, allocates the device node `rw` with the HSM_DEVICE_/HSM_SERIAL_ variables,
//! refuses unknown and absent devices, retries a refused registration, and registers again
//! when the kubelet restarts.

mod common;

use common::kubelet::Kubelet;
use hsm_discovery::core::PluginDevice;
use hsm_discovery::plugin::{PluginConfig, run, socket_name};
use hsm_proto::deviceplugin::v1beta1 as api;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

const RESOURCE: &str = "hsm.j5t.io/picohsm";
const WAIT: Duration = Duration::from_secs(10);

fn pico(healthy: bool) -> PluginDevice {
    PluginDevice {
        id: "worker-1-DC6A33145E23A42A".into(),
        dev_node: "/dev/bus/usb/001/015".into(),
        serial: "DC6A33145E23A42A".into(),
        healthy,
        permissions: "rw".into(),
    }
}

fn config(dir: &Path) -> PluginConfig {
    PluginConfig {
        dir: dir.to_owned(),
        // The Go order: a missing first choice is skipped.
        kubelet_sockets: vec![dir.join("absent/kubelet.sock"), dir.join("kubelet.sock")],
        poll: Duration::from_millis(50),
    }
}

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("in time")
        .expect("open")
}

fn health(list: &api::ListAndWatchResponse) -> Vec<(String, String)> {
    list.devices
        .iter()
        .map(|d| (d.id.clone(), d.health.clone()))
        .collect()
}

#[tokio::test]
async fn registers_streams_changes_at_once_and_allocates() {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = Kubelet::start(dir.path(), 0);
    let (devices, rx) = watch::channel(vec![pico(true)]);
    let plugin = tokio::spawn(run(RESOURCE.into(), rx, config(dir.path())));

    let registration = next(&mut kubelet.registrations).await;
    assert_eq!(registration.version, "v1beta1");
    assert_eq!(registration.resource_name, RESOURCE);
    assert_eq!(registration.endpoint, "hsm.j5t.io_picohsm.sock");
    assert_eq!(registration.endpoint, socket_name(RESOURCE));
    let (_, first) = next(&mut kubelet.lists).await;
    assert_eq!(
        health(&first),
        [("worker-1-DC6A33145E23A42A".into(), "Healthy".into())]
    );

    // A health change reaches the kubelet at once, not on a 30 s timer.
    let started = Instant::now();
    devices.send_replace(vec![pico(false)]);
    let (_, update) = next(&mut kubelet.lists).await;
    assert_eq!(update.devices[0].health, "Unhealthy");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let mut client = kubelet.plugin(&registration.endpoint).await;
    let allocate = |ids: &[&str]| api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest {
            devices_ids: ids.iter().map(|s| s.to_string()).collect(),
        }],
    };
    let absent = client
        .allocate(allocate(&["worker-1-DC6A33145E23A42A"]))
        .await
        .unwrap_err();
    assert_eq!(absent.code(), tonic::Code::FailedPrecondition);
    let unknown = client.allocate(allocate(&["nope"])).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    devices.send_replace(vec![pico(true)]);
    let response = client
        .allocate(allocate(&["worker-1-DC6A33145E23A42A"]))
        .await
        .unwrap()
        .into_inner();
    let container = &response.container_responses[0];
    assert_eq!(
        container.devices,
        [api::DeviceSpec {
            container_path: "/dev/bus/usb/001/015".into(),
            host_path: "/dev/bus/usb/001/015".into(),
            permissions: "rw".into(),
        }]
    );
    assert_eq!(
        container.envs["HSM_DEVICE_WORKER_1_DC6A33145E23A42A"],
        "/dev/bus/usb/001/015"
    );
    assert_eq!(
        container.envs["HSM_SERIAL_WORKER_1_DC6A33145E23A42A"],
        "DC6A33145E23A42A"
    );
    let options = client
        .get_device_plugin_options(api::Empty {})
        .await
        .unwrap()
        .into_inner();
    assert!(!options.pre_start_required);
    plugin.abort();
}

#[tokio::test]
async fn a_refused_registration_is_retried_and_a_kubelet_restart_re_registers() {
    let dir = tempfile::tempdir().unwrap();
    let mut kubelet = Kubelet::start(dir.path(), 2);
    let (devices, rx) = watch::channel(vec![pico(true)]);
    let plugin = tokio::spawn(run(RESOURCE.into(), rx, config(dir.path())));
    next(&mut kubelet.registrations).await;
    next(&mut kubelet.lists).await;

    // The kubelet restarts: its socket and the plugin's are removed, then it listens again.
    kubelet.stop();
    let mut kubelet = Kubelet::start(dir.path(), 0);
    let again = next(&mut kubelet.registrations).await;
    assert_eq!(again.resource_name, RESOURCE);
    let (_, list) = next(&mut kubelet.lists).await;
    assert_eq!(list.devices.len(), 1);
    assert!(dir.path().join(socket_name(RESOURCE)).exists());

    // The new kubelet gets changes too.
    devices.send_replace(vec![]);
    let (_, list) = next(&mut kubelet.lists).await;
    assert!(list.devices.is_empty());
    plugin.abort();
}
