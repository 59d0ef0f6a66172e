//! `HSMSecret`: a Kubernetes Secret kept as a read-only replica of a secret on the HSM. The
//! HSM path is the object's name.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Which operator instance handles an HSMSecret. Without it, every operator ignores the
/// object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParentReference {
    /// Name of the operator instance (its `OPERATOR_NAME`).
    pub name: String,
    /// Namespace of the operator; empty means the operator's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// API group of the parent resource.
    #[serde(default = "default_group", skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind of the parent resource.
    #[serde(default = "default_kind", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

fn default_group() -> Option<String> {
    Some("apps".into())
}
fn default_kind() -> Option<String> {
    Some("Deployment".into())
}
fn default_true() -> bool {
    true
}
fn default_secret_type() -> String {
    "Opaque".into()
}
fn default_sync_interval() -> i32 {
    30
}

/// What to replicate and how.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hsm.j5t.io",
    version = "v1alpha1",
    kind = "HSMSecret",
    doc = "An HSMSecret keeps a Kubernetes Secret as a read-only replica of the secret of the same name on the HSM.",
    plural = "hsmsecrets",
    singular = "hsmsecret",
    shortname = "hsmsec",
    namespaced,
    status = "HSMSecretStatus",
    printcolumn = r#"{"name":"Secret Name","type":"string","jsonPath":".spec.secretName"}"#,
    printcolumn = r#"{"name":"Sync Status","type":"string","jsonPath":".status.syncStatus"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HSMSecretSpec {
    /// The operator instance that handles this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_ref: Option<ParentReference>,
    /// Name of the Kubernetes Secret to write; defaults to this object's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_name: String,
    /// Re-check the HSM every `syncInterval` seconds.
    #[serde(default = "default_true")]
    pub auto_sync: bool,
    /// Type of the Kubernetes Secret, used when it is created.
    #[serde(default = "default_secret_type")]
    pub secret_type: String,
    /// Seconds between checks of the HSM when `autoSync` is on.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: i32,
    /// Workloads in this namespace to restart (as `kubectl rollout restart` does) when the
    /// Secret's content changes. Not in the Go operator; optional, so its manifests apply
    /// unchanged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollout_restart_targets: Vec<RolloutRestartTarget>,
}

/// A workload restarted when the Secret's content changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRestartTarget {
    /// `Deployment`, `StatefulSet` or `DaemonSet` (checked by the operator, which reports
    /// any other kind on the HSMSecret's status).
    pub kind: String,
    /// Its name, in the HSMSecret's namespace.
    pub name: String,
}

/// Where the replica stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SyncStatus {
    /// The Secret matches the HSM.
    InSync,
    /// They differ.
    OutOfSync,
    /// The last sync failed.
    Error,
    /// Not synchronised yet.
    Pending,
}

/// The sync state of the secret on one device.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HSMDeviceSync {
    /// The device.
    pub device_name: String,
    /// Last successful sync with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// `sha256:<hex>` of the data on it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum: String,
    /// Its sync status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SyncStatus>,
    /// The last error with it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Whether it is reachable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub online: bool,
    /// The secret's `sync.version` on it.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub version: i64,
}

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// What the operator observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HSMSecretStatus {
    /// Last time the Secret was found or made in sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Checksum of the HSM data (kept for compatibility; see `deviceSyncStatus`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hsm_checksum: String,
    /// Checksum of the Kubernetes Secret's data.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_checksum: String,
    /// Where the replica stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_status: Option<SyncStatus>,
    /// The last error, when `syncStatus` is `Error`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Secret written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<ObjectReference>,
    /// Per-device state where devices are mirrored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_sync_status: Vec<HSMDeviceSync>,
    /// The device whose copy won.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_device: String,
    /// Devices disagree.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sync_conflict: bool,
}
