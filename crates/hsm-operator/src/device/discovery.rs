//! The discovery DaemonSet and the HSMPool of one HSMDevice (§6.1 and §2.3 of the contract),
//! as pure functions: `<device>-discovery` runs `--mode=discovery` on every node the device's
//! `nodeSelector` picks, and `<device>-pool` is where the manager aggregates what those pods
//! report. Both are controller-owned by the HSMDevice, so deleting it removes them.
//!
//! Unlike the Go manager, test mode (`hsm.j5t.io/test-mode: "true"`) gives a template in which
//! every mount has its volume (defect 17): all four are emptyDirs, so a test-mode pod touches
//! nothing on the host. And the container names the paths it reads in its environment
//! ([`path_env`]): the values equal the mount paths, so on a node they change nothing, and a
//! runner that maps the mounts elsewhere (the local pod runner) can rewrite them.

use super::agent::owned_by_device;
use super::{field_env, quantity};
use hsm_api::device::HSMDevice;
use hsm_api::names::{APP_NAME, TOLERATION_KEY, annotations, components, env, labels};
use hsm_api::pool::{HSMPool, HSMPoolSpec};
use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, HostPathVolumeSource,
    PodSecurityContext, PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// The discovery container's name.
pub const CONTAINER: &str = "discovery";
/// The pool's grace period when nobody set one (the Go controller's and the CRD's default).
pub const DEFAULT_GRACE_PERIOD: &str = "5m";
/// The user nobody: test-mode pods run as it.
pub const NOBODY: i64 = 65534;

/// What the discovery DaemonSet is built from.
#[derive(Debug, Clone)]
pub struct DiscoverySpec<'a> {
    /// The HSMDevice.
    pub device: &'a HSMDevice,
    /// The discovery image.
    pub image: &'a str,
    /// The service account of discovery pods.
    pub service_account: &'a str,
}

/// One host directory discovery uses: the volume, where it is mounted, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostDir {
    /// The volume's name (the Go manager's).
    pub volume: &'static str,
    /// The host path, mounted at the same path in the container.
    pub path: &'static str,
    /// Mounted read-only.
    pub read_only: bool,
    /// The hostPath type.
    pub host_path_type: &'static str,
}

/// sysfs: what discovery scans.
pub const SYS: HostDir = HostDir {
    volume: "sys",
    path: "/sys",
    read_only: true,
    host_path_type: "Directory",
};
/// udev's run directory (the Go discovery read udev; kept for the same pod shape).
pub const RUN_UDEV: HostDir = HostDir {
    volume: "run-udev",
    path: "/run/udev",
    read_only: true,
    host_path_type: "Directory",
};
/// Where device plugins put their sockets.
pub const DEVICE_PLUGINS: HostDir = HostDir {
    volume: "device-plugins",
    path: "/var/lib/kubelet/device-plugins",
    read_only: false,
    host_path_type: "DirectoryOrCreate",
};
/// Where the kubelet's plugin registration socket is.
pub const PLUGINS_REGISTRY: HostDir = HostDir {
    volume: "plugins-registry",
    path: "/var/lib/kubelet/plugins_registry",
    read_only: false,
    host_path_type: "Directory",
};
/// Every host directory, in the Go manager's order.
pub const HOST_DIRS: [HostDir; 4] = [SYS, RUN_UDEV, DEVICE_PLUGINS, PLUGINS_REGISTRY];

/// Whether an HSMDevice asks for test mode (`hsm.j5t.io/test-mode: "true"`).
pub fn test_mode(device: &HSMDevice) -> bool {
    device
        .annotations()
        .get(annotations::TEST_MODE)
        .is_some_and(|v| v == "true")
}

/// The labels of the DaemonSet, its selector and its pods.
pub fn discovery_labels(device: &str) -> BTreeMap<String, String> {
    component_labels(components::DISCOVERY, device)
}

/// The labels of the pool.
pub fn pool_labels(device: &str) -> BTreeMap<String, String> {
    component_labels(components::POOL, device)
}

fn component_labels(component: &str, device: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.into(), APP_NAME.into()),
        (labels::COMPONENT.into(), component.into()),
        (labels::DEVICE.into(), device.into()),
    ])
}

fn value_env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..Default::default()
    }
}

/// The paths discovery reads, named in its environment: sysfs, the device-plugin directory
/// and the kubelet registration sockets inside the mounted directories. They are what
/// discovery would find by itself in the pod; naming them keeps every path the pod uses
/// inside a mount, so a runner that places the mounts elsewhere can say where.
pub fn path_env() -> Vec<EnvVar> {
    vec![
        value_env(env::SYSFS_ROOT, SYS.path.into()),
        value_env(env::DEVICE_PLUGIN_DIR, DEVICE_PLUGINS.path.into()),
        value_env(
            env::KUBELET_SOCKETS,
            [PLUGINS_REGISTRY.path, DEVICE_PLUGINS.path]
                .map(|dir| format!("{dir}/kubelet.sock"))
                .join(","),
        ),
    ]
}

/// Volumes and mounts: host directories on a node, emptyDirs in test mode — the same four
/// either way, so every mount has its volume.
pub fn volumes(test_mode: bool) -> (Vec<Volume>, Vec<VolumeMount>) {
    let volumes = HOST_DIRS
        .iter()
        .map(|dir| Volume {
            name: dir.volume.into(),
            host_path: (!test_mode).then(|| HostPathVolumeSource {
                path: dir.path.into(),
                type_: Some(dir.host_path_type.into()),
            }),
            empty_dir: test_mode.then(EmptyDirVolumeSource::default),
            ..Default::default()
        })
        .collect();
    let mounts = HOST_DIRS
        .iter()
        .map(|dir| VolumeMount {
            name: dir.volume.into(),
            mount_path: dir.path.into(),
            read_only: dir.read_only.then_some(true),
            ..Default::default()
        })
        .collect();
    (volumes, mounts)
}

/// The container's security context: root without privilege escalation and with no
/// capabilities on a node (device-plugin sockets are root's); non-root in test mode.
pub fn container_security(test_mode: bool) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(test_mode),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: test_mode.then(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod's security context: root on a node, nobody in test mode.
pub fn pod_security(test_mode: bool) -> PodSecurityContext {
    if test_mode {
        PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(NOBODY),
            run_as_group: Some(NOBODY),
            fs_group: Some(NOBODY),
            ..Default::default()
        }
    } else {
        PodSecurityContext {
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            run_as_group: Some(0),
            ..Default::default()
        }
    }
}

fn discovery_container(spec: &DiscoverySpec<'_>, mounts: Vec<VolumeMount>) -> Container {
    let test_mode = test_mode(spec.device);
    let resources = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), quantity(cpu)),
            ("memory".to_owned(), quantity(memory)),
        ])
    };
    let mut env = vec![
        field_env(env::NODE_NAME, "spec.nodeName"),
        field_env(env::POD_NAMESPACE, "metadata.namespace"),
        field_env(env::POD_NAME, "metadata.name"),
    ];
    env.extend(path_env());
    Container {
        name: CONTAINER.into(),
        image: Some(spec.image.into()),
        args: Some(vec!["--mode=discovery".into()]),
        env: Some(env),
        resources: Some(ResourceRequirements {
            requests: Some(resources("50m", "64Mi")),
            limits: Some(resources("100m", "128Mi")),
            ..Default::default()
        }),
        security_context: Some(container_security(test_mode)),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

/// The discovery DaemonSet `<device>-discovery`.
pub fn discovery_daemonset(spec: &DiscoverySpec<'_>) -> DaemonSet {
    let device = spec.device.name_any();
    let labels = discovery_labels(&device);
    let test_mode = test_mode(spec.device);
    let (volumes, mounts) = volumes(test_mode);
    let node_selector = &spec.device.spec.node_selector;
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(hsm_api::names::discovery_daemonset_name(&device)),
            namespace: spec.device.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owned_by_device(spec.device)]),
            ..Default::default()
        },
        spec: DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(spec.service_account.into()),
                    containers: vec![discovery_container(spec, mounts)],
                    volumes: Some(volumes),
                    node_selector: (!node_selector.is_empty()).then(|| node_selector.clone()),
                    tolerations: Some(vec![Toleration {
                        key: Some(TOLERATION_KEY.into()),
                        operator: Some("Exists".into()),
                        effect: Some("NoSchedule".into()),
                        ..Default::default()
                    }]),
                    security_context: Some(pod_security(test_mode)),
                    ..Default::default()
                }),
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::String("50%".into())),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The pool `<device>-pool`. Its `gracePeriod` is the user's to change: an existing pool's
/// value is kept, and only a pool without one gets the default (as the Go controller did).
pub fn pool_object(device: &HSMDevice, existing: Option<&HSMPool>) -> HSMPool {
    let name = device.name_any();
    let grace_period = existing
        .and_then(|pool| pool.spec.grace_period.clone())
        .filter(|g| !g.is_empty())
        .unwrap_or_else(|| DEFAULT_GRACE_PERIOD.into());
    HSMPool {
        metadata: ObjectMeta {
            name: Some(hsm_api::names::pool_name(&name)),
            namespace: device.namespace(),
            labels: Some(pool_labels(&name)),
            owner_references: Some(vec![owned_by_device(device)]),
            ..Default::default()
        },
        spec: HSMPoolSpec {
            grace_period: Some(grace_period),
            mirroring: None,
        },
        status: None,
    }
}

#[cfg(test)]
mod tests;
