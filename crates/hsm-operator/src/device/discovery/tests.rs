//! The discovery DaemonSet against §6.1 and the pool against §2.3, field by field.

use super::*;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::json;

fn device(extra: serde_json::Value) -> HSMDevice {
    let mut object = json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": "pico-hsm", "namespace": "hsm-system"},
        "spec": {"deviceType": "PicoHSM"}
    });
    json_merge(&mut object, extra);
    let mut device: HSMDevice = serde_json::from_value(object).unwrap();
    device.metadata.uid = Some("dev-uid".into());
    device
}

fn json_merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (k, v) in extra {
                json_merge(base.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (base, extra) => *base = extra,
    }
}

fn daemonset(device: &HSMDevice) -> DaemonSet {
    discovery_daemonset(&DiscoverySpec {
        device,
        image: "localhost/hsm-discovery:dev",
        service_account: "hsm-discovery",
    })
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec.template.spec.as_ref().unwrap()
}

const LABELS: [(&str, &str); 3] = [
    ("app.kubernetes.io/name", "hsm-secrets-operator"),
    ("app.kubernetes.io/component", "discovery"),
    ("hsm.j5t.io/device", "pico-hsm"),
];

fn want_labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn name_labels_selector_and_owner() {
    let device = device(json!({}));
    let ds = daemonset(&device);
    assert_eq!(ds.metadata.name.as_deref(), Some("pico-hsm-discovery"));
    assert_eq!(ds.metadata.namespace.as_deref(), Some("hsm-system"));
    let labels = want_labels(&LABELS);
    assert_eq!(ds.metadata.labels.as_ref(), Some(&labels));
    let spec = &ds.spec;
    assert_eq!(spec.selector.match_labels.as_ref(), Some(&labels));
    assert_eq!(spec.selector.match_expressions, None);
    assert_eq!(
        spec.template.metadata.as_ref().unwrap().labels.as_ref(),
        Some(&labels)
    );
    let owners = ds.metadata.owner_references.as_ref().unwrap();
    assert_eq!(owners.len(), 1);
    let owner = &owners[0];
    assert_eq!(
        (
            owner.api_version.as_str(),
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str()
        ),
        ("hsm.j5t.io/v1alpha1", "HSMDevice", "pico-hsm", "dev-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
}

#[test]
fn the_container_runs_discovery_mode_with_the_downward_api() {
    let device = device(json!({}));
    let ds = daemonset(&device);
    let pod = pod_spec(&ds);
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "discovery");
    assert_eq!(c.image.as_deref(), Some("localhost/hsm-discovery:dev"));
    assert_eq!(
        c.args.as_deref(),
        Some(&["--mode=discovery".to_owned()][..])
    );
    assert_eq!(c.command, None);
    let env = c.env.as_ref().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref()?.field_ref.as_ref())
            .map(|f| f.field_path.as_str())
    };
    assert_eq!(field("NODE_NAME"), Some("spec.nodeName"));
    assert_eq!(field("POD_NAMESPACE"), Some("metadata.namespace"));
    assert_eq!(field("POD_NAME"), Some("metadata.name"));
    // The Go three first, in its order; then the paths, each inside a mount.
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "NODE_NAME",
            "POD_NAMESPACE",
            "POD_NAME",
            "HSM_SYSFS_ROOT",
            "HSM_DEVICE_PLUGIN_DIR",
            "HSM_KUBELET_SOCKETS"
        ]
    );
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    };
    assert_eq!(value("HSM_SYSFS_ROOT"), Some("/sys"));
    assert_eq!(
        value("HSM_DEVICE_PLUGIN_DIR"),
        Some("/var/lib/kubelet/device-plugins")
    );
    assert_eq!(
        value("HSM_KUBELET_SOCKETS"),
        Some(
            "/var/lib/kubelet/plugins_registry/kubelet.sock,/var/lib/kubelet/device-plugins/kubelet.sock"
        )
    );
    assert_eq!(c.ports, None, "discovery serves nothing over the network");
}

#[test]
fn resources_are_the_go_managers() {
    let device = device(json!({}));
    let ds = daemonset(&device);
    let resources = pod_spec(&ds).containers[0].resources.clone().unwrap();
    let text = |m: Option<BTreeMap<String, Quantity>>| -> Vec<(String, String)> {
        m.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect()
    };
    assert_eq!(
        text(resources.requests),
        [
            ("cpu".into(), "50m".into()),
            ("memory".into(), "64Mi".into())
        ]
    );
    assert_eq!(
        text(resources.limits),
        [
            ("cpu".into(), "100m".into()),
            ("memory".into(), "128Mi".into())
        ]
    );
}

#[test]
fn on_a_node_it_mounts_the_four_host_directories() {
    let device = device(json!({}));
    let ds = daemonset(&device);
    let pod = pod_spec(&ds);
    let mounts: Vec<(String, String, Option<bool>)> = pod.containers[0]
        .volume_mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.mount_path, m.read_only))
        .collect();
    assert_eq!(
        mounts,
        [
            ("sys".into(), "/sys".into(), Some(true)),
            ("run-udev".into(), "/run/udev".into(), Some(true)),
            (
                "device-plugins".into(),
                "/var/lib/kubelet/device-plugins".into(),
                None
            ),
            (
                "plugins-registry".into(),
                "/var/lib/kubelet/plugins_registry".into(),
                None
            ),
        ]
    );
    let volumes: Vec<(String, String, String)> = pod
        .volumes
        .clone()
        .unwrap()
        .into_iter()
        .map(|v| {
            assert!(v.empty_dir.is_none(), "{}", v.name);
            let host = v.host_path.unwrap();
            (v.name, host.path, host.type_.unwrap())
        })
        .collect();
    assert_eq!(
        volumes,
        [
            ("sys".into(), "/sys".into(), "Directory".into()),
            ("run-udev".into(), "/run/udev".into(), "Directory".into()),
            (
                "device-plugins".into(),
                "/var/lib/kubelet/device-plugins".into(),
                "DirectoryOrCreate".into()
            ),
            (
                "plugins-registry".into(),
                "/var/lib/kubelet/plugins_registry".into(),
                "Directory".into()
            ),
        ]
    );
}

#[test]
fn on_a_node_it_runs_as_root_without_privileges() {
    let device = device(json!({}));
    let ds = daemonset(&device);
    let pod = pod_spec(&ds);
    let c = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(c.run_as_non_root, Some(false));
    assert_eq!(c.allow_privilege_escalation, Some(false));
    assert_eq!(c.read_only_root_filesystem, Some(false));
    assert_eq!(c.privileged, None);
    assert_eq!(
        c.capabilities.unwrap().drop.unwrap(),
        vec!["ALL".to_owned()]
    );
    let p = pod.security_context.clone().unwrap();
    assert_eq!(
        (p.run_as_non_root, p.run_as_user, p.run_as_group, p.fs_group),
        (Some(false), Some(0), Some(0), None)
    );
    assert_eq!(pod.service_account_name.as_deref(), Some("hsm-discovery"));
    assert_eq!(pod.host_network, None);
    assert_eq!(pod.host_pid, None);
}

#[test]
fn toleration_strategy_and_no_selector_when_none_is_given() {
    let device = device(json!({}));
    let ds = daemonset(&device);
    let pod = pod_spec(&ds);
    let tolerations = pod.tolerations.clone().unwrap();
    assert_eq!(tolerations.len(), 1);
    let t = &tolerations[0];
    assert_eq!(
        (
            t.key.as_deref(),
            t.operator.as_deref(),
            t.effect.as_deref(),
            t.value.as_deref()
        ),
        (Some("hsm-node"), Some("Exists"), Some("NoSchedule"), None)
    );
    assert_eq!(pod.node_selector, None);
    let strategy = ds.spec.update_strategy.clone().unwrap();
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        strategy.rolling_update.unwrap().max_unavailable,
        Some(IntOrString::String("50%".into()))
    );
}

/// Defect 11: every key of the selector is kept (the Go discovery honoured only the
/// hostname; the DaemonSet always carried them all).
#[test]
fn every_node_selector_key_is_kept() {
    let device = device(json!({"spec": {"nodeSelector": {
        "kubernetes.io/hostname": "worker-1", "hsm": "pico", "topology.kubernetes.io/zone": "a"
    }}}));
    let ds = daemonset(&device);
    assert_eq!(
        pod_spec(&ds).node_selector.clone().unwrap(),
        want_labels(&[
            ("hsm", "pico"),
            ("kubernetes.io/hostname", "worker-1"),
            ("topology.kubernetes.io/zone", "a"),
        ])
    );
}

/// Defect 17: test mode mounts the same four paths, each backed by an emptyDir, and runs as
/// nobody.
#[test]
fn test_mode_has_a_volume_for_every_mount_and_no_host_path() {
    let device = device(json!({"metadata": {"annotations": {"hsm.j5t.io/test-mode": "true"}}}));
    assert!(test_mode(&device));
    let ds = daemonset(&device);
    let pod = pod_spec(&ds);
    let volumes = pod.volumes.clone().unwrap();
    let mounts = pod.containers[0].volume_mounts.clone().unwrap();
    assert_eq!(mounts.len(), 4);
    for mount in &mounts {
        let volume = volumes
            .iter()
            .find(|v| v.name == mount.name)
            .unwrap_or_else(|| panic!("mount {} has no volume", mount.name));
        assert!(volume.host_path.is_none(), "{}", volume.name);
        assert!(volume.empty_dir.is_some(), "{}", volume.name);
    }
    assert_eq!(volumes.len(), mounts.len());
    let c = pod.containers[0].security_context.clone().unwrap();
    assert_eq!(c.run_as_non_root, Some(true));
    assert_eq!(c.allow_privilege_escalation, Some(false));
    assert_eq!(
        c.seccomp_profile.map(|s| s.type_),
        Some("RuntimeDefault".into())
    );
    assert_eq!(
        c.capabilities.unwrap().drop.unwrap(),
        vec!["ALL".to_owned()]
    );
    let p = pod.security_context.clone().unwrap();
    assert_eq!(
        (p.run_as_non_root, p.run_as_user, p.run_as_group, p.fs_group),
        (Some(true), Some(65534), Some(65534), Some(65534))
    );
}

#[test]
fn only_the_value_true_is_test_mode() {
    for value in ["false", "yes", "True", ""] {
        let device = device(json!({"metadata": {"annotations": {"hsm.j5t.io/test-mode": value}}}));
        assert!(!test_mode(&device), "{value:?}");
        let ds = daemonset(&device);
        assert!(
            pod_spec(&ds)
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.host_path.is_some())
        );
    }
}

/// Every path the container is told about lies inside one of its mounts, on a node and in
/// test mode.
#[test]
fn every_path_in_the_environment_is_inside_a_mount() {
    for test in [false, true] {
        let (_, mounts) = volumes(test);
        for var in path_env() {
            for path in var.value.unwrap().split(',') {
                assert!(
                    mounts
                        .iter()
                        .any(|m| path == m.mount_path
                            || path.starts_with(&format!("{}/", m.mount_path))),
                    "{} = {path} is outside every mount",
                    var.name
                );
            }
        }
    }
}

#[test]
fn the_pool_is_named_labelled_and_owned_with_the_default_grace_period() {
    let device = device(json!({}));
    let pool = pool_object(&device, None);
    assert_eq!(pool.metadata.name.as_deref(), Some("pico-hsm-pool"));
    assert_eq!(pool.metadata.namespace.as_deref(), Some("hsm-system"));
    assert_eq!(
        pool.metadata.labels.clone().unwrap(),
        want_labels(&[
            ("app.kubernetes.io/name", "hsm-secrets-operator"),
            ("app.kubernetes.io/component", "pool"),
            ("hsm.j5t.io/device", "pico-hsm"),
        ])
    );
    let owner = &pool.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("HSMDevice", "pico-hsm", Some(true))
    );
    assert_eq!(pool.spec.grace_period.as_deref(), Some("5m"));
    assert_eq!(pool.spec.mirroring, None);
    assert_eq!(pool.status, None, "status is the aggregator's");
}

#[test]
fn a_pools_grace_period_is_the_users_to_keep() {
    let device = device(json!({}));
    let mut existing = pool_object(&device, None);
    existing.spec.grace_period = Some("90s".into());
    assert_eq!(
        pool_object(&device, Some(&existing))
            .spec
            .grace_period
            .as_deref(),
        Some("90s")
    );
    existing.spec.grace_period = None;
    assert_eq!(
        pool_object(&device, Some(&existing))
            .spec
            .grace_period
            .as_deref(),
        Some("5m")
    );
}

#[test]
fn the_daemonset_serialises_as_the_api_expects() {
    let device = device(json!({"spec": {"nodeSelector": {"hsm": "yes"}}}));
    let value = serde_json::to_value(daemonset(&device)).unwrap();
    assert_eq!(value["apiVersion"], "apps/v1");
    assert_eq!(value["kind"], "DaemonSet");
    assert_eq!(
        value["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
        "50%"
    );
    assert_eq!(
        value["spec"]["template"]["spec"]["nodeSelector"]["hsm"],
        "yes"
    );
    let pool = serde_json::to_value(pool_object(&device, None)).unwrap();
    assert_eq!(pool["apiVersion"], "hsm.j5t.io/v1alpha1");
    assert_eq!(pool["kind"], "HSMPool");
    assert_eq!(pool["spec"], json!({"gracePeriod": "5m"}));
}
