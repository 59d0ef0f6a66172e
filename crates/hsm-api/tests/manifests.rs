//! Manifests as users wrote them for the Go operator read into these types, with the Go
//! defaults, and survive a round trip.

use hsm_api::report::PodDiscoveryReport;
use hsm_api::{HSMDevice, HSMPool, HSMSecret};

#[test]
fn a_minimal_hsmsecret() {
    let secret: HSMSecret = serde_yaml::from_str(
        r#"
apiVersion: hsm.j5t.io/v1alpha1
kind: HSMSecret
metadata: {name: database-credentials, namespace: production}
spec:
  parentRef: {name: controller-manager}
  secretName: db-creds
"#,
    )
    .unwrap();
    let spec = &secret.spec;
    assert_eq!(spec.secret_name, "db-creds");
    assert!(spec.auto_sync);
    assert_eq!(spec.secret_type, "Opaque");
    assert_eq!(spec.sync_interval, 30);
    let parent = spec.parent_ref.as_ref().unwrap();
    assert_eq!(parent.group.as_deref(), Some("apps"));
    assert_eq!(parent.kind.as_deref(), Some("Deployment"));
    assert_eq!(parent.namespace, None);
    let again: HSMSecret = serde_json::from_value(serde_json::to_value(&secret).unwrap()).unwrap();
    assert_eq!(again.spec, secret.spec);
}

#[test]
fn an_hsmdevice_with_usb_selectors_and_a_pin_secret() {
    let device: HSMDevice = serde_yaml::from_str(
        r#"
apiVersion: hsm.j5t.io/v1alpha1
kind: HSMDevice
metadata: {name: pico-hsm}
spec:
  deviceType: PicoHSM
  discovery:
    usb:
      - {vendorId: "20a0", productId: "4230"}
      - {vendorId: "2e8a", productId: "10fd", serialNumber: DC6A33145E23A42A}
  nodeSelector: {kubernetes.io/hostname: worker-1}
  pkcs11:
    libraryPath: /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so
    tokenLabel: PicoHSM
    pinSecret: {name: pico-pin, key: pin, namespace: hsm-system}
  mirroring: {policy: ReadOnly, targetNodes: [worker-2]}
"#,
    )
    .unwrap();
    let spec = &device.spec;
    assert_eq!(spec.device_type, "PicoHSM");
    assert_eq!(spec.max_devices, 10);
    let discovery = spec.discovery.as_ref().unwrap();
    assert_eq!(discovery.usb.len(), 2);
    assert!(!discovery.auto_discovery);
    let pkcs11 = spec.pkcs11.as_ref().unwrap();
    assert_eq!(pkcs11.slot_id, 0);
    assert_eq!(pkcs11.pin_secret.as_ref().unwrap().namespace, "hsm-system");
    let mirroring = spec.mirroring.as_ref().unwrap();
    assert_eq!(mirroring.policy.as_deref(), Some("ReadOnly"));
    assert_eq!(mirroring.sync_interval, 60);
    assert!(mirroring.auto_failover);
}

#[test]
fn a_pool_and_a_discovery_report_as_the_go_operator_writes_them() {
    let pool: HSMPool = serde_json::from_str(
        r#"{"apiVersion":"hsm.j5t.io/v1alpha1","kind":"HSMPool",
            "metadata":{"name":"pico-hsm-pool"},"spec":{},
            "status":{"totalDevices":1,"availableDevices":1,"expectedPods":2,"phase":"Ready",
              "reportingPods":[{"podName":"d-1","nodeName":"w1","devicesFound":1,
                "lastReportTime":"2026-07-07T20:00:00Z","discoveryStatus":"completed","fresh":true}]}}"#,
    )
    .unwrap();
    assert_eq!(pool.spec.grace_period.as_deref(), Some("5m"));
    assert_eq!(pool.status.unwrap().reporting_pods[0].pod_name, "d-1");

    let report: PodDiscoveryReport = serde_json::from_str(
        r#"{"hsmDeviceName":"pico-hsm","reportingNode":"worker-1",
            "discoveredDevices":[{"devicePath":"/dev/bus/usb/001/015",
              "serialNumber":"DC6A33145E23A42A","nodeName":"worker-1",
              "lastSeen":"2026-07-07T20:00:00Z",
              "deviceInfo":{"vendor-id":"2e8a","product-id":"10fd","DEVNAME":"/dev/bus/usb/001/015"},
              "available":true}],
            "lastReportTime":"2026-07-07T20:00:00Z","discoveryStatus":"completed"}"#,
    )
    .unwrap();
    assert_eq!(
        report.discovered_devices[0].serial_number,
        "DC6A33145E23A42A"
    );
    assert_eq!(
        report.discovered_devices[0].device_info["vendor-id"],
        "2e8a"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert!(
        json.get("error").is_none(),
        "error is omitted when empty, as in Go"
    );
}
