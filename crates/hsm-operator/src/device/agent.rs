//! The agent Deployment for one physical device (§6.3 of the contract), as a pure function:
//! one Deployment per serial, pinned to the device's node, with the Go manager's labels,
//! arguments, probes, resources, security context and volumes — and, unlike the Go manager,
//! owned by the HSMDevice, so deleting the device removes its agents.

use super::{field_env, quantity};
use hsm_api::device::HSMDevice;
use hsm_api::names::{components, env, labels, mtls, ports, resource_name};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, HTTPGetAction, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// What an agent Deployment is built from.
#[derive(Debug, Clone)]
pub struct AgentSpec<'a> {
    /// The HSMDevice.
    pub device: &'a HSMDevice,
    /// The physical device's serial number (raw).
    pub serial: &'a str,
    /// Its device node, e.g. `/dev/bus/usb/001/015`.
    pub device_path: &'a str,
    /// The node that holds it.
    pub node: &'a str,
    /// The agent image.
    pub image: &'a str,
    /// Whether manager↔agent mTLS is on.
    pub tls: bool,
    /// The service account of agent pods.
    pub service_account: &'a str,
}

/// `/dev/bus/usb/001/015` → `dev-bus-usb-001-015` (a label value).
pub fn sanitize_device_path(path: &str) -> String {
    let mut out = hsm_api::names::sanitize_name_segment(path);
    out.truncate(63);
    out.trim_end_matches('-').to_owned()
}

/// The agent's labels, on the Deployment and its pod template.
pub fn agent_labels(spec: &AgentSpec<'_>, name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::APP.into(), name.into()),
        (labels::COMPONENT.into(), components::HSM_AGENT.into()),
        (labels::INSTANCE.into(), name.into()),
        (labels::NAME.into(), components::HSM_AGENT.into()),
        (labels::PART_OF.into(), hsm_api::names::APP_NAME.into()),
        (labels::DEVICE.into(), spec.device.name_any()),
        (labels::SERIAL_NUMBER.into(), label_value(spec.serial)),
        (
            labels::DEVICE_PATH.into(),
            sanitize_device_path(spec.device_path),
        ),
    ])
}

/// A serial as a label value: as it is when valid, else sanitised.
fn label_value(value: &str) -> String {
    if crate::secret::build::valid_label_value(value) {
        value.to_owned()
    } else {
        sanitize_device_path(value)
    }
}

/// Where agent pods mount their `tmp` emptyDir.
pub const TMP_MOUNT: &str = "/tmp";

/// The agent's state directory (the PINs its token refused, remembered across container
/// restarts): on the pod's `tmp` volume, named in the arguments rather than left to the
/// agent's built-in default, so that whatever runs the pod places it in the pod's volume (a
/// runtime that rewrites mount paths, not only one that mounts them) and it goes with the pod.
pub const STATE_DIR: &str = "/tmp/hsm-agent";

/// The agent's arguments, in the Go manager's order (then `--state-dir`, which the Go agent
/// did not have).
pub fn agent_args(spec: &AgentSpec<'_>) -> Vec<String> {
    let mut args = vec![
        "--mode=agent".to_owned(),
        format!("--device-name={}", spec.device.name_any()),
        format!("--port={}", ports::AGENT_GRPC),
        format!("--health-port={}", ports::AGENT_HEALTH),
    ];
    if spec.tls {
        let dir = mtls::MOUNT_PATH;
        args.extend([
            format!("--tls-cert-file={dir}/tls.crt"),
            format!("--tls-key-file={dir}/tls.key"),
            format!("--tls-client-ca-file={dir}/ca.crt"),
        ]);
    }
    let pkcs11 = spec.device.spec.pkcs11.clone().unwrap_or_default();
    if !pkcs11.token_label.is_empty() {
        args.push(format!("--token-label={}", pkcs11.token_label));
    }
    args.push(format!("--slot-id={}", pkcs11.slot_id));
    if !pkcs11.library_path.is_empty() {
        args.push(format!("--pkcs11-library={}", pkcs11.library_path));
    }
    args.push(format!("--state-dir={STATE_DIR}"));
    args
}

fn probe(path: &str, initial: i32, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(ports::AGENT_HEALTH.into()),
            ..Default::default()
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(3),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn volumes(tls: bool) -> (Vec<Volume>, Vec<VolumeMount>) {
    let empty = |name: &str| Volume {
        name: name.into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    };
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only).filter(|r| *r),
        ..Default::default()
    };
    let mut volumes = vec![empty("tmp"), empty("pcscd-run"), empty("pcscd-lock")];
    let mut mounts = vec![
        mount("tmp", TMP_MOUNT, false),
        mount("pcscd-run", "/run/pcscd", false),
        mount("pcscd-lock", "/var/lock/pcsc", false),
    ];
    if tls {
        volumes.push(Volume {
            name: "agent-mtls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(mtls::AGENT_SERVER_SECRET.into()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(mount("agent-mtls", mtls::MOUNT_PATH, true));
    }
    (volumes, mounts)
}

fn agent_container(spec: &AgentSpec<'_>, mounts: Vec<VolumeMount>) -> Container {
    let resource = resource_name(&spec.device.spec.device_type);
    let resources = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), quantity(cpu)),
            ("memory".to_owned(), quantity(memory)),
            (resource.clone(), quantity("1")),
        ])
    };
    Container {
        name: "agent".into(),
        image: Some(spec.image.into()),
        args: Some(agent_args(spec)),
        env: Some(vec![
            field_env(env::POD_NAMESPACE, "metadata.namespace"),
            field_env(env::POD_NAME, "metadata.name"),
            field_env("POD_IP", "status.podIP"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".into()),
                container_port: ports::AGENT_GRPC.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("health".into()),
                container_port: ports::AGENT_HEALTH.into(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        liveness_probe: Some(probe("/healthz", 15, 20, 3)),
        readiness_probe: Some(probe("/readyz", 5, 10, 2)),
        resources: Some(ResourceRequirements {
            requests: Some(resources("100m", "128Mi")),
            limits: Some(resources("500m", "256Mi")),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            privileged: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(false),
            run_as_user: Some(0),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn pinned_to(node: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: labels::HOSTNAME.into(),
                        operator: "In".into(),
                        values: Some(vec![node.into()]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The controller owner reference to the HSMDevice.
pub fn owned_by_device(device: &HSMDevice) -> OwnerReference {
    OwnerReference {
        api_version: HSMDevice::api_version(&()).into_owned(),
        kind: HSMDevice::kind(&()).into_owned(),
        name: device.name_any(),
        uid: device.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The agent Deployment; `None` when the serial has nothing usable for a name (the Go
/// manager skips such devices too).
pub fn agent_deployment(spec: &AgentSpec<'_>) -> Option<Deployment> {
    let name = hsm_api::names::agent_name(&spec.device.name_any(), spec.serial)?;
    let labels = agent_labels(spec, &name);
    let (volumes, mounts) = volumes(spec.tls);
    Some(Deployment {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: spec.device.namespace(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owned_by_device(spec.device)]),
            ..Default::default()
        },
        spec: DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(labels::APP.into(), name)])),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("Recreate".into()),
                ..Default::default()
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    node_selector: Some(BTreeMap::from([(
                        labels::HOSTNAME.into(),
                        spec.node.into(),
                    )])),
                    affinity: Some(pinned_to(spec.node)),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(0),
                        run_as_group: Some(0),
                        run_as_non_root: Some(false),
                        ..Default::default()
                    }),
                    service_account_name: Some(spec.service_account.into()),
                    containers: vec![agent_container(spec, mounts)],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests;
