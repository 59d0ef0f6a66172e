//! Every name components share — labels, annotations, finalizers, ports, environment
//! variables, Secret names — defined once. Values are the Go operator's, since clusters,
//! manifests and the kubectl plugin already depend on them.

/// The application name: `app.kubernetes.io/name`, `managed-by`, `CKA_APPLICATION` on tokens.
pub const APP_NAME: &str = "hsm-secrets-operator";

/// Kubernetes recommended labels.
pub mod labels {
    /// `app.kubernetes.io/name`.
    pub const NAME: &str = "app.kubernetes.io/name";
    /// `app.kubernetes.io/component`.
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    /// `app.kubernetes.io/instance`.
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    /// `app.kubernetes.io/part-of`.
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// `app.kubernetes.io/managed-by` (on mTLS Secrets).
    pub const MANAGED_BY_K8S: &str = "app.kubernetes.io/managed-by";
    /// The plain `app` label on agent pods.
    pub const APP: &str = "app";
    /// The node hostname label.
    pub const HOSTNAME: &str = "kubernetes.io/hostname";
    /// The HSMDevice an object belongs to.
    pub const DEVICE: &str = "hsm.j5t.io/device";
    /// The serial number of the device an agent serves.
    pub const SERIAL_NUMBER: &str = "hsm.j5t.io/serial-number";
    /// The device path of the device an agent serves (sanitised for a label value).
    pub const DEVICE_PATH: &str = "hsm.j5t.io/device-path";
    /// On Kubernetes Secrets the operator writes: `managed-by=hsm-secrets-operator`.
    pub const MANAGED_BY: &str = "managed-by";
    /// On Kubernetes Secrets the operator writes: the HSM path.
    pub const HSM_PATH: &str = "hsm-path";
    /// On manager pods: `control-plane=controller-manager`.
    pub const CONTROL_PLANE: &str = "control-plane";
    /// The DaemonSet pod template generation, used by the discovery gate.
    pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";
}

/// Label values.
pub mod components {
    /// Discovery DaemonSets and pods.
    pub const DISCOVERY: &str = "discovery";
    /// HSMPools.
    pub const POOL: &str = "pool";
    /// The `agent` component value of the shared constants.
    pub const AGENT: &str = "agent";
    /// Agent pods' `app.kubernetes.io/name` and `component`.
    pub const HSM_AGENT: &str = "hsm-agent";
    /// mTLS Secrets.
    pub const MTLS: &str = "mtls";
    /// The manager's `control-plane` value.
    pub const CONTROLLER_MANAGER: &str = "controller-manager";
}

/// Annotations.
pub mod annotations {
    /// A discovery pod's report (JSON, see [`crate::report`]): the Go operator's single key,
    /// shared by every HSMDevice (the last one written wins). Read for compatibility; new
    /// discovery pods write one key per device, see [`super::device_report_key`].
    pub const DEVICE_REPORT: &str = "hsm.j5t.io/device-report";
    /// Prefix of the per-device report keys: `hsm.j5t.io/device-report.<device>`.
    pub const DEVICE_REPORT_PREFIX: &str = "hsm.j5t.io/device-report.";
    /// Test mode of the discovery DaemonSet.
    pub const TEST_MODE: &str = "hsm.j5t.io/test-mode";
    /// On objects the manager applies: the fingerprint of the object as it last wanted it, so
    /// it applies again only when that changes (or a field it sets was edited).
    pub const APPLIED_HASH: &str = "hsm.j5t.io/applied-hash";
    /// Who manages an mTLS Secret; any value but [`super::APP_NAME`] means external.
    pub const MTLS_MANAGED_BY: &str = "hsm.j5t.io/mtls-managed-by";
    /// Secret metadata copied onto Kubernetes Secrets.
    pub const DESCRIPTION: &str = "hsm.j5t.io/description";
    /// See [`DESCRIPTION`].
    pub const FORMAT: &str = "hsm.j5t.io/format";
    /// See [`DESCRIPTION`].
    pub const DATA_TYPE: &str = "hsm.j5t.io/data-type";
    /// See [`DESCRIPTION`].
    pub const SOURCE: &str = "hsm.j5t.io/source";
    /// See [`DESCRIPTION`].
    pub const CREATED_AT: &str = "hsm.j5t.io/created-at";
}

/// The HSMSecret finalizer: deleting an HSMSecret deletes its Kubernetes Secret, never HSM
/// data.
pub const HSMSECRET_FINALIZER: &str = "hsmsecret.hsm.j5t.io/finalizer";

/// The manager's leader-election lease name.
pub const LEADER_ELECTION_ID: &str = "64b68d60.j5t.io";

/// Ports.
pub mod ports {
    /// Manager REST API.
    pub const MANAGER_API: u16 = 8090;
    /// Manager health probes.
    pub const MANAGER_PROBES: u16 = 8081;
    /// Manager metrics.
    pub const MANAGER_METRICS: u16 = 8080;
    /// Agent gRPC.
    pub const AGENT_GRPC: u16 = 9090;
    /// Agent health.
    pub const AGENT_HEALTH: u16 = 8093;
}

/// Environment variables.
pub mod env {
    /// The node a pod runs on (downward API).
    pub const NODE_NAME: &str = "NODE_NAME";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    /// The pod's name.
    pub const POD_NAME: &str = "POD_NAME";
    /// The operator instance name HSMSecret `parentRef.name` must match.
    pub const OPERATOR_NAME: &str = "OPERATOR_NAME";
    /// The service account given to agent and discovery pods.
    pub const SERVICE_ACCOUNT_NAME: &str = "SERVICE_ACCOUNT_NAME";
    /// The PKCS#11 module for tools.
    pub const PKCS11_LIBRARY: &str = "PKCS11_LIBRARY";
    /// The user PIN for tools.
    pub const HSM_PIN: &str = "HSM_PIN";
    /// The operator's namespace for kubectl-hsm.
    pub const HSM_OPERATOR_NAMESPACE: &str = "HSM_OPERATOR_NAMESPACE";
    /// Discovery: the sysfs tree to scan (the discovery DaemonSet names its `/sys` mount).
    pub const SYSFS_ROOT: &str = "HSM_SYSFS_ROOT";
    /// Discovery: the kubelet's device-plugin directory.
    pub const DEVICE_PLUGIN_DIR: &str = "HSM_DEVICE_PLUGIN_DIR";
    /// Discovery: the kubelet registration sockets to try, comma-separated, in order.
    pub const KUBELET_SOCKETS: &str = "HSM_KUBELET_SOCKETS";
}

/// mTLS Secrets between manager and agents, and where agents mount them.
pub mod mtls {
    /// The CA.
    pub const CA_SECRET: &str = "hsm-mtls-ca";
    /// The agents' server certificate.
    pub const AGENT_SERVER_SECRET: &str = "hsm-agent-server-tls";
    /// The manager's client certificate.
    pub const MANAGER_CLIENT_SECRET: &str = "hsm-manager-client-tls";
    /// The agents' mount point.
    pub const MOUNT_PATH: &str = "/etc/hsm/tls";
    /// The name agents present and the manager verifies.
    pub const AGENT_SERVER_NAME: &str = "hsm-agent";
    /// The name the manager presents.
    pub const MANAGER_CLIENT_NAME: &str = "hsm-manager";
}

/// The toleration key of HSM nodes.
pub const TOLERATION_KEY: &str = "hsm-node";

/// The REST API's Service.
pub const API_SERVICE_NAME: &str = "hsm-secrets-operator-api";

/// Prefix of extended resources and of agent names.
pub const RESOURCE_PREFIX: &str = "hsm.j5t.io/";
/// Prefix of agent Deployment names.
pub const AGENT_NAME_PREFIX: &str = "hsm-agent";
/// Longest object name built by [`agent_name`].
pub const MAX_AGENT_NAME_LEN: usize = 63;

/// The extended resource of a device type: `hsm.j5t.io/<lower-cased type>`.
pub fn resource_name(device_type: &str) -> String {
    format!("{RESOURCE_PREFIX}{}", device_type.to_lowercase())
}

/// The HSMPool of an HSMDevice.
pub fn pool_name(device: &str) -> String {
    format!("{device}-pool")
}

/// The discovery DaemonSet of an HSMDevice.
pub fn discovery_daemonset_name(device: &str) -> String {
    format!("{device}-discovery")
}

/// A serial as a name segment: lower-case letters, digits and `-`, every other character a
/// `-`, no `-` at either end.
pub fn sanitize_name_segment(value: &str) -> String {
    value
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect::<String>()
        .trim_matches('-')
        .to_owned()
}

/// The agent Deployment for one physical device: `hsm-agent-<device>-<serial>`, cut to 63
/// characters without a trailing `-`. `None` when the serial has nothing usable.
pub fn agent_name(device: &str, serial: &str) -> Option<String> {
    let serial = sanitize_name_segment(serial);
    if serial.is_empty() {
        return None;
    }
    let name = format!("{AGENT_NAME_PREFIX}-{device}-{serial}");
    if name.len() <= MAX_AGENT_NAME_LEN {
        return Some(name);
    }
    Some(name[..MAX_AGENT_NAME_LEN].trim_end_matches('-').to_owned())
}

/// Longest device name carried whole in a report key: an annotation key's name part (after
/// `hsm.j5t.io/`) has at most 63 characters, and `device-report.` takes 14.
pub const MAX_REPORT_KEY_DEVICE_LEN: usize = 63 - "device-report.".len();

/// The annotation key under which a discovery pod reports one HSMDevice:
/// `hsm.j5t.io/device-report.<device>`. One key per device, so reports for several devices
/// never overwrite each other (the Go operator's single key did). A name longer than
/// [`MAX_REPORT_KEY_DEVICE_LEN`] is cut and given a hash of the whole name, so the key stays
/// valid and distinct; the report itself always carries the full `hsmDeviceName`.
pub fn device_report_key(device: &str) -> String {
    let prefix = annotations::DEVICE_REPORT_PREFIX;
    if device.len() <= MAX_REPORT_KEY_DEVICE_LEN {
        return format!("{prefix}{device}");
    }
    // FNV-1a: stable across releases and platforms, no dependency needed.
    let hash = device.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let keep = MAX_REPORT_KEY_DEVICE_LEN - 9;
    let cut = device[..keep].trim_end_matches(['-', '.']);
    format!("{prefix}{cut}-{hash:08x}")
}

/// The device segment of a per-device report key (`hsm.j5t.io/device-report.<device>` →
/// `<device>`); `None` for any other key, the Go single key included. For names longer than
/// [`MAX_REPORT_KEY_DEVICE_LEN`] the segment is the cut form: compare it with
/// [`device_report_key`]'s output, or read `hsmDeviceName` from the report.
pub fn device_from_report_key(key: &str) -> Option<&str> {
    key.strip_prefix(annotations::DEVICE_REPORT_PREFIX)
        .filter(|device| !device.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names_follow_the_go_rule() {
        assert_eq!(
            agent_name("pico-hsm", "DC6A33145E23A42A").as_deref(),
            Some("hsm-agent-pico-hsm-dc6a33145e23a42a")
        );
        assert_eq!(
            agent_name("pico", "ab:cd_EF ").as_deref(),
            Some("hsm-agent-pico-ab-cd-ef")
        );
        assert_eq!(agent_name("pico", "::"), None);
        assert_eq!(agent_name("pico", ""), None);
        let long = agent_name(
            "a-very-long-device-name-for-testing",
            "0123456789abcdef0123-x",
        )
        .unwrap();
        assert!(long.len() <= 63, "{long}");
        assert!(!long.ends_with('-'));
        assert_eq!(&long[..44], "hsm-agent-a-very-long-device-name-for-testin");
    }

    #[test]
    fn report_keys_are_per_device_and_parse_back() {
        let key = device_report_key("pico-hsm");
        assert_eq!(key, "hsm.j5t.io/device-report.pico-hsm");
        assert_eq!(device_from_report_key(&key), Some("pico-hsm"));
        assert_eq!(device_from_report_key(annotations::DEVICE_REPORT), None);
        assert_eq!(device_from_report_key("hsm.j5t.io/device-report."), None);
        assert_eq!(device_from_report_key("other/key"), None);
        let fits = "a".repeat(MAX_REPORT_KEY_DEVICE_LEN);
        assert_eq!(device_report_key(&fits).len(), "hsm.j5t.io/".len() + 63);
        let long_a = format!("{}-a", "x".repeat(60));
        let long_b = format!("{}-b", "x".repeat(60));
        let (key_a, key_b) = (device_report_key(&long_a), device_report_key(&long_b));
        assert_ne!(key_a, key_b);
        for key in [&key_a, &key_b] {
            let name_part = key.strip_prefix("hsm.j5t.io/").unwrap();
            assert!(name_part.len() <= 63, "{key}");
            assert!(name_part.ends_with(|c: char| c.is_ascii_alphanumeric()));
        }
        assert_eq!(device_report_key(&long_a), key_a, "stable");
    }

    #[test]
    fn resource_and_object_names() {
        assert_eq!(resource_name("SmartCard-HSM"), "hsm.j5t.io/smartcard-hsm");
        assert_eq!(resource_name("PicoHSM"), "hsm.j5t.io/picohsm");
        assert_eq!(pool_name("pico"), "pico-pool");
        assert_eq!(discovery_daemonset_name("pico"), "pico-discovery");
    }
}
