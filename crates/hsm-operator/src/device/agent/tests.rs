//! The agent Deployment against §6.3, field by field.

use super::*;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

fn device() -> HSMDevice {
    let mut device: HSMDevice = serde_json::from_value(serde_json::json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": "pico-hsm", "namespace": "hsm-system"},
        "spec": {"deviceType": "PicoHSM",
                 "pkcs11": {"libraryPath": "/usr/lib/opensc-pkcs11.so", "slotId": 0, "tokenLabel": "SmartCard-HSM"}}
    }))
    .unwrap();
    device.metadata.uid = Some("dev-uid".into());
    device
}

fn spec(device: &HSMDevice, tls: bool) -> AgentSpec<'_> {
    AgentSpec {
        device,
        serial: "DC6A33145E23A42A",
        device_path: "/dev/bus/usb/001/015",
        node: "worker-1",
        image: "hsm-agent:0.1.0",
        tls,
        service_account: "hsm-secrets-operator-controller-manager",
    }
}

#[test]
fn names_labels_and_owner() {
    let device = device();
    let d = agent_deployment(&spec(&device, true)).unwrap();
    assert_eq!(
        d.metadata.name.as_deref(),
        Some("hsm-agent-pico-hsm-dc6a33145e23a42a")
    );
    assert_eq!(d.metadata.namespace.as_deref(), Some("hsm-system"));
    let labels = d.metadata.labels.clone().unwrap();
    let want = [
        ("app", "hsm-agent-pico-hsm-dc6a33145e23a42a"),
        ("app.kubernetes.io/component", "hsm-agent"),
        (
            "app.kubernetes.io/instance",
            "hsm-agent-pico-hsm-dc6a33145e23a42a",
        ),
        ("app.kubernetes.io/name", "hsm-agent"),
        ("app.kubernetes.io/part-of", "hsm-secrets-operator"),
        ("hsm.j5t.io/device", "pico-hsm"),
        ("hsm.j5t.io/serial-number", "DC6A33145E23A42A"),
        ("hsm.j5t.io/device-path", "dev-bus-usb-001-015"),
    ];
    for (k, v) in want {
        assert_eq!(labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(labels.len(), want.len());
    assert_eq!(
        d.spec.template.metadata.as_ref().unwrap().labels.as_ref(),
        Some(&labels)
    );
    assert_eq!(
        d.spec.selector.match_labels.clone().unwrap(),
        BTreeMap::from([(
            "app".to_owned(),
            "hsm-agent-pico-hsm-dc6a33145e23a42a".to_owned()
        )])
    );
    let owner = &d.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("HSMDevice", "pico-hsm", "dev-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(d.spec.replicas, Some(1));
    assert_eq!(
        d.spec.strategy.as_ref().unwrap().type_.as_deref(),
        Some("Recreate")
    );
}

#[test]
fn pod_is_pinned_to_the_node_and_unprivileged() {
    let device = device();
    let d = agent_deployment(&spec(&device, true)).unwrap();
    let pod = d.spec.template.spec.unwrap();
    assert_eq!(
        pod.node_selector.unwrap()["kubernetes.io/hostname"],
        "worker-1"
    );
    let term = &pod
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms[0];
    let req = &term.match_expressions.as_ref().unwrap()[0];
    assert_eq!(
        (req.key.as_str(), req.operator.as_str()),
        ("kubernetes.io/hostname", "In")
    );
    assert_eq!(req.values.as_deref(), Some(&["worker-1".to_owned()][..]));
    let psc = pod.security_context.unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.run_as_non_root),
        (Some(0), Some(0), Some(false))
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("hsm-secrets-operator-controller-manager")
    );
    let c = &pod.containers[0];
    assert_eq!(c.name, "agent");
    assert_eq!(c.image.as_deref(), Some("hsm-agent:0.1.0"));
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.privileged, Some(false));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let limits = c.resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["hsm.j5t.io/picohsm"], Quantity("1".into()));
    assert_eq!(limits["cpu"], Quantity("500m".into()));
    let requests = c.resources.clone().unwrap().requests.unwrap();
    assert_eq!(requests["memory"], Quantity("128Mi".into()));
    assert_eq!(requests["hsm.j5t.io/picohsm"], Quantity("1".into()));
    let ready = c.readiness_probe.clone().unwrap();
    assert_eq!(ready.http_get.unwrap().path.as_deref(), Some("/readyz"));
    assert_eq!(
        (
            ready.initial_delay_seconds,
            ready.period_seconds,
            ready.failure_threshold
        ),
        (Some(5), Some(10), Some(2))
    );
    let live = c.liveness_probe.clone().unwrap();
    assert_eq!(
        (
            live.initial_delay_seconds,
            live.period_seconds,
            live.failure_threshold
        ),
        (Some(15), Some(20), Some(3))
    );
    let ports: Vec<_> = c
        .ports
        .clone()
        .unwrap()
        .iter()
        .map(|p| (p.name.clone().unwrap(), p.container_port))
        .collect();
    assert_eq!(
        ports,
        [("grpc".to_owned(), 9090), ("health".to_owned(), 8093)]
    );
    let env: Vec<_> = c
        .env
        .clone()
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert!(env.contains(&"POD_IP".to_owned()));
}

#[test]
fn args_follow_the_go_order_and_tls_adds_its_files_and_volume() {
    let device = device();
    let with_tls = agent_deployment(&spec(&device, true)).unwrap();
    let c = &with_tls.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(
        c.args.clone().unwrap(),
        [
            "--mode=agent",
            "--device-name=pico-hsm",
            "--port=9090",
            "--health-port=8093",
            "--tls-cert-file=/etc/hsm/tls/tls.crt",
            "--tls-key-file=/etc/hsm/tls/tls.key",
            "--tls-client-ca-file=/etc/hsm/tls/ca.crt",
            "--token-label=SmartCard-HSM",
            "--slot-id=0",
            "--pkcs11-library=/usr/lib/opensc-pkcs11.so",
            "--state-dir=/tmp/hsm-agent",
        ]
    );
    let pod = with_tls.spec.template.spec.clone().unwrap();
    let volumes: Vec<_> = pod
        .volumes
        .unwrap()
        .iter()
        .map(|v| v.name.clone())
        .collect();
    assert_eq!(volumes, ["tmp", "pcscd-run", "pcscd-lock", "agent-mtls"]);
    let mounts: Vec<_> = c
        .volume_mounts
        .clone()
        .unwrap()
        .iter()
        .map(|m| (m.mount_path.clone(), m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/tmp".to_owned(), None),
            ("/run/pcscd".to_owned(), None),
            ("/var/lock/pcsc".to_owned(), None),
            ("/etc/hsm/tls".to_owned(), Some(true)),
        ]
    );
    let secret = pod_volume_secret(&with_tls);
    assert_eq!(secret, Some(("hsm-agent-server-tls".to_owned(), 0o400)));

    let plain = agent_deployment(&spec(&device, false)).unwrap();
    let args = plain.spec.template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(!args.iter().any(|a| a.starts_with("--tls")));
    assert_eq!(pod_volume_secret(&plain), None);
    // The state directory lies on the pod's tmp volume.
    assert!(STATE_DIR.starts_with(&format!("{TMP_MOUNT}/")));
}

fn pod_volume_secret(d: &Deployment) -> Option<(String, i32)> {
    d.spec
        .template
        .spec
        .as_ref()?
        .volumes
        .as_ref()?
        .iter()
        .find_map(|v| {
            let s = v.secret.as_ref()?;
            Some((s.secret_name.clone()?, s.default_mode?))
        })
}

#[test]
fn a_serial_without_usable_characters_gets_no_agent() {
    let device = device();
    let mut bad = spec(&device, false);
    bad.serial = "::";
    assert!(agent_deployment(&bad).is_none());
}

#[test]
fn device_paths_become_label_values() {
    assert_eq!(
        sanitize_device_path("/dev/bus/usb/001/015"),
        "dev-bus-usb-001-015"
    );
    assert!(sanitize_device_path(&"/x".repeat(100)).len() <= 63);
}
