//! The daemon on the API emulator, with a copy of the fixture sysfs tree and synthetic kernel
//! uevents (the periodic scan is an hour away, so every change after the first scan comes
//! from a uevent): one report per HSMDevice under its own key, node selectors with any key,
//! `maxDevices`; a device unplugged is reported unavailable, then removed after the grace
//! period; plugged back on another port it keeps its identity; writes happen only when a
//! report's content changes and never touch another device's key; a deleted HSMDevice's key
//! is removed; the device plugin follows the same hotplug.

mod common;

use common::cluster::{NODE, NS, POD, cluster, delete_device, put_device, summary, until};
use common::kubelet::Kubelet;
use futures::{StreamExt, TryStreamExt};
use hsm_api::names::device_report_key;
use hsm_discovery::allowlist::Allowlist;
use hsm_discovery::daemon::{DaemonConfig, run};
use hsm_discovery::kube::PodIdentity;
use hsm_discovery::plugin::PluginConfig;
use hsm_discovery::sysfs::DirSysfs;
use hsm_discovery::testing::{copy_tree, fixture_sysfs, unplug};
use hsm_discovery::uevent::{DatagramUevents, payload};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{WatchEvent, WatchParams};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::UnixDatagram;

const PICO: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1.2";
const PICO_SERIAL: &str = "DC6A33145E23A42A";
const SMARTCARD_SERIAL: &str = "DENK0100123";
const NITRO: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-3";

struct Daemon {
    root: PathBuf,
    _dir: tempfile::TempDir,
    uevents: UnixDatagram,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Daemon {
    fn start(client: &kube::Client, grace: Duration, plugins: Option<PluginConfig>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("sys");
        copy_tree(&fixture_sysfs(), &root).unwrap();
        let (ours, theirs) = UnixDatagram::pair().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let config = DaemonConfig {
            identity: PodIdentity {
                namespace: NS.into(),
                pod_name: POD.into(),
                node_name: NODE.into(),
            },
            sync_interval: Duration::from_secs(3600),
            grace_period: grace,
            report_refresh: Duration::from_secs(60),
            plugins,
        };
        let task = tokio::spawn(
            run(
                client.clone(),
                config,
                Allowlist::known_hsms(),
                DirSysfs::new(&root),
                Some(DatagramUevents::new(ours)),
                async {
                    let _ = stopped.await;
                },
            )
            .map(|result| result.expect("the daemon runs")),
        );
        Daemon {
            root,
            _dir: dir,
            uevents: theirs,
            stop: Some(stop),
            task,
        }
    }

    async fn uevent(&self, action: &str, devpath: &str) {
        let fields = [
            ("SUBSYSTEM", "usb"),
            ("DEVTYPE", "usb_device"),
            ("SEQNUM", "7"),
        ];
        self.uevents
            .send(&payload(action, devpath, &fields))
            .await
            .unwrap();
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

use futures::FutureExt;

async fn devices(client: &kube::Client) {
    put_device(
        client,
        "pico",
        json!({"deviceType": "PicoHSM", "discovery": {"usb": [{"vendorId": "2E8A", "productId": "10fd"}]}}),
    )
    .await;
    put_device(
        client,
        "smartcard",
        json!({"deviceType": "SmartCard-HSM", "nodeSelector": {"hsm": "yes", "zone": "a"},
               "discovery": {"usb": [{"vendorId": "04e6", "productId": "5816"}]}}),
    )
    .await;
    put_device(
        client,
        "elsewhere",
        json!({"deviceType": "Generic", "nodeSelector": {"hsm": "yes", "zone": "b"}}),
    )
    .await;
    put_device(
        client,
        "auto",
        json!({"deviceType": "Generic", "discovery": {"autoDiscovery": true}, "maxDevices": 2}),
    )
    .await;
}

#[tokio::test]
async fn reports_per_device_follow_hotplug_and_keep_identity_across_ports() {
    let (_emulator, client) = cluster().await;
    devices(&client).await;
    let plugin_dir = tempfile::tempdir().unwrap();
    let mut kubelet = Kubelet::start(plugin_dir.path(), 0);
    let plugins = PluginConfig {
        dir: plugin_dir.path().to_owned(),
        kubelet_sockets: vec![kubelet.socket.clone()],
        poll: Duration::from_millis(50),
    };
    let daemon = Daemon::start(&client, Duration::from_secs(3600), Some(plugins));

    let first = until(&client, "the first reports", |r| r.len() == 3).await;
    let reports = common::cluster::reports(&first);
    assert_eq!(
        summary(&reports, "pico"),
        [(PICO_SERIAL.into(), "/dev/bus/usb/001/015".into(), true)]
    );
    assert_eq!(
        summary(&reports, "smartcard"),
        [(SMARTCARD_SERIAL.into(), "/dev/bus/usb/001/003".into(), true)]
    );
    assert!(
        !reports.contains_key("elsewhere"),
        "zone=b is not this node"
    );
    assert_eq!(reports["auto"].discovered_devices.len(), 2, "maxDevices");
    let pico = &reports["pico"];
    assert_eq!(pico.hsm_device_name, "pico");
    assert_eq!(pico.reporting_node, NODE);
    assert_eq!(pico.discovery_status, "completed");
    let info = &pico.discovered_devices[0].device_info;
    assert_eq!(info["ID_VENDOR_ID"], "2e8a");
    assert_eq!(info["ID_SERIAL_SHORT"], PICO_SERIAL);
    assert_eq!(info["DEVNAME"], "/dev/bus/usb/001/015");
    assert_eq!(info["vendor-id"], "2e8a");
    assert_eq!(info["discovery-type"], "usb");
    assert_eq!(first["example.com/keep"], "yes");
    assert!(!first.contains_key(hsm_api::names::annotations::DEVICE_REPORT));

    // Device plugins: one per type, the Pico HSM healthy.
    let mut registered = Vec::new();
    for _ in 0..3 {
        registered.push(
            tokio::time::timeout(Duration::from_secs(10), kubelet.registrations.recv())
                .await
                .unwrap()
                .unwrap()
                .resource_name,
        );
    }
    registered.sort();
    assert_eq!(
        registered,
        [
            "hsm.j5t.io/generic",
            "hsm.j5t.io/picohsm",
            "hsm.j5t.io/smartcard-hsm"
        ]
    );

    // Unplugged: unavailable in its report, unhealthy in its plugin; nothing else rewritten.
    let smartcard_before = first[&device_report_key("smartcard")].clone();
    let held = unplug(&daemon.root, "1-1.2").unwrap();
    daemon.uevent("remove", PICO).await;
    let lost = until(&client, "the Pico HSM lost", |r| {
        summary(r, "pico") == [(PICO_SERIAL.into(), "/dev/bus/usb/001/015".into(), false)]
    })
    .await;
    assert_eq!(lost[&device_report_key("smartcard")], smartcard_before);
    let pico_plugin = until_plugin(&mut kubelet, "hsm.j5t.io_picohsm.sock", "Unhealthy").await;
    assert_eq!(pico_plugin, format!("{NODE}-{PICO_SERIAL}"));

    // Back on another port: the same device, at its new node.
    let new_path = held.plug_as(&daemon.root, "1-1.4", 21).unwrap();
    daemon.uevent("add", &new_path).await;
    until(&client, "the Pico HSM back on 1-1.4", |r| {
        summary(r, "pico") == [(PICO_SERIAL.into(), "/dev/bus/usb/001/021".into(), true)]
    })
    .await;
    until_plugin(&mut kubelet, "hsm.j5t.io_picohsm.sock", "Healthy").await;

    // An HSMDevice deleted: its key goes, the others stay.
    delete_device(&client, "smartcard").await;
    let after = until(&client, "the smartcard report removed", |r| {
        !r.contains_key("smartcard")
    })
    .await;
    assert!(after.contains_key(&device_report_key("pico")));
    assert_eq!(after["example.com/keep"], "yes");
    daemon.stop().await;
}

/// Waits for a `ListAndWatch` update of `endpoint` whose first device has `health`; returns
/// its ID.
async fn until_plugin(kubelet: &mut Kubelet, endpoint: &str, health: &str) -> String {
    loop {
        let (from, list) = tokio::time::timeout(Duration::from_secs(10), kubelet.lists.recv())
            .await
            .expect("a plugin update in time")
            .unwrap();
        if from == endpoint && list.devices.first().is_some_and(|d| d.health == health) {
            return list.devices[0].id.clone();
        }
    }
}

#[tokio::test]
async fn a_lost_device_is_removed_after_the_grace_period() {
    let (_emulator, client) = cluster().await;
    devices(&client).await;
    let daemon = Daemon::start(&client, Duration::from_millis(500), None);
    until(&client, "the first reports", |r| r.len() == 3).await;
    unplug(&daemon.root, "1-1.2").unwrap();
    daemon.uevent("remove", PICO).await;
    until(&client, "the Pico HSM lost", |r| {
        summary(r, "pico").first().is_some_and(|d| !d.2)
    })
    .await;
    until(&client, "the Pico HSM forgotten", |r| {
        r.get("pico")
            .is_some_and(|p| p.discovered_devices.is_empty())
    })
    .await;
    daemon.stop().await;
}

#[tokio::test]
async fn only_changed_content_is_written() {
    let (_emulator, client) = cluster().await;
    devices(&client).await;
    let daemon = Daemon::start(&client, Duration::from_secs(3600), None);
    until(&client, "the first reports", |r| r.len() == 3).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let version = pods
        .get(POD)
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let params = WatchParams::default().fields(&format!("metadata.name={POD}"));
    let mut watch = pods.watch(&params, &version).await.unwrap().boxed();

    // Events that change nothing: a bind of a device already known, a change, a remove of
    // a device no HSMDevice selects, garbage. Then one that changes the auto report.
    daemon.uevent("bind", PICO).await;
    daemon.uevent("change", PICO).await;
    daemon.uevents.send(b"\xff\xfe garbage").await.unwrap();
    unplug(&daemon.root, "1-3").unwrap();
    daemon.uevent("remove", NITRO).await;

    let mut modifications = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, watch.try_next())
            .await
            .expect("a pod update in time")
            .unwrap()
            .expect("the watch goes on");
        if let WatchEvent::Modified(pod) = event {
            modifications += 1;
            let reports = common::cluster::reports(&pod.metadata.annotations.unwrap());
            // maxDevices 2: the lost Nitrokey gives its place to the Pico HSM.
            let auto = &reports["auto"].discovered_devices;
            let serials: Vec<_> = auto.iter().map(|d| d.serial_number.as_str()).collect();
            if serials == [SMARTCARD_SERIAL, PICO_SERIAL] {
                break;
            }
        }
    }
    assert_eq!(modifications, 1, "only the Nitrokey's loss was written");
    daemon.stop().await;
}
