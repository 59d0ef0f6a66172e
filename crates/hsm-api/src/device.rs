//! `HSMDevice`: a kind of HSM to find on nodes and how to talk to it. It has no status: what
//! was found is aggregated into the device's `HSMPool`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The device types the Go operator named. The field is a free string (samples also use
/// `SmartCardHSM`); these are the well-known values.
pub mod device_type {
    /// A Pico HSM.
    pub const PICO_HSM: &str = "PicoHSM";
    /// A SmartCard-HSM.
    pub const SMARTCARD_HSM: &str = "SmartCard-HSM";
    /// Any PKCS#11 device.
    pub const GENERIC: &str = "Generic";
}

fn default_max_devices() -> i32 {
    10
}

/// A kind of HSM device.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hsm.j5t.io",
    version = "v1alpha1",
    kind = "HSMDevice",
    doc = "An HSMDevice describes a kind of HSM: how to find it on nodes and how to reach its token.",
    plural = "hsmdevices",
    singular = "hsmdevice",
    shortname = "hsmdev",
    namespaced,
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.deviceType"}"#,
    printcolumn = r#"{"name":"Discovery","type":"string","jsonPath":".spec.discovery.autoDiscovery"}"#,
    printcolumn = r#"{"name":"Max Devices","type":"integer","jsonPath":".spec.maxDevices"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HSMDeviceSpec {
    /// The device type (`PicoHSM`, `SmartCard-HSM`, `Generic`, …); lower-cased it names the
    /// extended resource `hsm.j5t.io/<type>`.
    pub device_type: String,
    /// How to find the devices; absent means broad auto-discovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery: Option<DiscoverySpec>,
    /// Which nodes to scan.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// How to reach the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<PKCS11Config>,
    /// At most this many devices are discovered.
    #[serde(default = "default_max_devices")]
    pub max_devices: i32,
    /// Cross-node mirroring settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirroring: Option<MirroringSpec>,
}

/// How to find devices: explicit USB selectors, unioned with the CCID allowlist when
/// `autoDiscovery` is on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverySpec {
    /// USB selectors, OR-ed; each matches regardless of the CCID allowlist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usb: Vec<USBDeviceSpec>,
    /// Path-based discovery (accepted for compatibility; not used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_path: Option<DevicePathSpec>,
    /// Match any USB device in libccid's allowlist.
    #[serde(default)]
    pub auto_discovery: bool,
}

/// One USB selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct USBDeviceSpec {
    /// USB vendor id, hex (`20a0`).
    pub vendor_id: String,
    /// USB product id, hex (`4230`).
    pub product_id: String,
    /// Only the device with this serial.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial_number: String,
}

/// A device path and the permissions it needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevicePathSpec {
    /// The path.
    pub path: String,
    /// Its permissions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub permissions: String,
}

/// How the agent reaches the token.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PKCS11Config {
    /// The PKCS#11 module inside the agent image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub library_path: String,
    /// The slot id.
    #[serde(default)]
    pub slot_id: i32,
    /// The Secret holding the user PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_secret: Option<SecretKeySelector>,
    /// The token's label.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token_label: String,
    /// Initialise a blank SmartCard-HSM (random SO PIN, user PIN from `pinSecret`).
    #[serde(default)]
    pub auto_provision: bool,
}

/// A key of a Secret, optionally in another namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// The Secret.
    pub name: String,
    /// The key.
    pub key: String,
    /// Its namespace; empty means the agent's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// Mirroring policies the Go operator named. The field is a free string in the schema (no
/// enum), as in the Go CRD, so every manifest that applied there applies here.
pub mod mirroring_policy {
    /// No mirroring.
    pub const NONE: &str = "None";
    /// Read-only mirrors.
    pub const READ_ONLY: &str = "ReadOnly";
    /// Active-active.
    pub const ACTIVE: &str = "Active";
}

fn default_policy() -> Option<String> {
    Some(mirroring_policy::NONE.into())
}
fn default_mirror_interval() -> i32 {
    60
}
fn default_true() -> bool {
    true
}

/// Cross-node mirroring.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirroringSpec {
    /// The policy: `None`, `ReadOnly` or `Active`.
    #[serde(default = "default_policy", skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Seconds between mirror passes.
    #[serde(default = "default_mirror_interval")]
    pub sync_interval: i32,
    /// Nodes to mirror to (empty: all with the device).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_nodes: Vec<String>,
    /// The preferred node for writes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_node: String,
    /// Fail over to healthy nodes.
    #[serde(default = "default_true")]
    pub auto_failover: bool,
}

/// A device's role in a mirrored set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeviceRole {
    /// Read-write.
    Primary,
    /// A read-only mirror.
    ReadOnly,
    /// Ready to take over.
    Standby,
}

/// One device found on a node: in discovery reports and in HSMPool status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredDevice {
    /// The device node.
    pub device_path: String,
    /// Its serial number.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub serial_number: String,
    /// The node it is on.
    pub node_name: String,
    /// When it was last seen (for a lost device: when it was lost).
    pub last_seen: Time,
    /// USB facts (vendor, product, udev-style properties).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub device_info: BTreeMap<String, String>,
    /// Whether it is there now.
    pub available: bool,
    /// The extended resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource_name: String,
    /// Its mirroring role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<DeviceRole>,
    /// The device it mirrors.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mirrored_from: String,
    /// Its last mirror sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Health, free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub health: String,
}
