//! The `data` of each answer, with the Go manager's field names (its clients decode them),
//! and the OpenAPI schemas of them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// `GET /api/v1/info`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiInfo {
    /// `HSM Secrets Operator API`.
    pub service: &'static str,
    /// `v1alpha1`.
    pub version: &'static str,
    /// `proxy`.
    pub mode: &'static str,
    /// What the API does.
    pub description: &'static str,
}

/// `GET /api/v1/health`. Connectivity comes from the agents themselves (the Go manager
/// reported it from HSMPool phases).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthData {
    /// `healthy` when at least one device's agent works, else `degraded`.
    pub status: &'static str,
    /// At least one device's agent holds a working token session.
    pub hsm_connected: bool,
    /// More than one device is followed.
    pub replication_enabled: bool,
    /// Devices whose agent works.
    pub active_nodes: usize,
    /// Devices followed.
    pub devices: usize,
    /// Now, RFC 3339.
    pub timestamp: String,
}

/// `GET /api/v1/hsm/status`: device → whether its agent works.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusData {
    /// Device (serial) → connected.
    pub devices: BTreeMap<String, bool>,
    /// Devices followed.
    pub total_devices: usize,
}

/// One device's identity. The Go manager sent Go field names (`Label`, `SerialNumber`; its
/// defect 22); these are camelCase, with the names the Go plugin reads (`tokenLabel`,
/// `firmwareInfo`, `tokenPresent`) as well.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// The device's key in the manager (its HSMDevice and serial).
    pub device: String,
    /// Token label.
    pub label: String,
    /// Token label (the Go plugin's name for it).
    pub token_label: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial_number: String,
    /// Firmware version.
    pub firmware_version: String,
    /// Firmware version (the Go plugin's name for it).
    pub firmware_info: String,
    /// A token answered.
    pub token_present: bool,
}

/// `GET /api/v1/hsm/info`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InfoData {
    /// Device (serial) → identity, for the devices that answered.
    pub device_infos: BTreeMap<String, DeviceInfo>,
}

/// `GET /api/v1/hsm/secrets`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListData {
    /// Names of live secrets (deleted ones left out), sorted.
    pub secrets: Vec<String>,
    /// How many.
    pub count: usize,
    /// The prefix asked for.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prefix: String,
}

/// `GET /api/v1/hsm/secrets/{path}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadData {
    /// The secret's name.
    pub path: String,
    /// Key → value, **base64** (standard alphabet, padded).
    pub data: BTreeMap<String, String>,
    /// The winning copy's checksum (`sha256:<hex>`).
    pub checksum: String,
    /// Devices holding a live copy.
    pub device_count: usize,
}

/// A secret's metadata record, with the on-token JSON names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetadataView {
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Labels, `sync.*` included.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Format hint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Data type.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_type: String,
    /// Creation time.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl From<hsm_proto::v1::SecretMetadata> for MetadataView {
    fn from(m: hsm_proto::v1::SecretMetadata) -> Self {
        MetadataView {
            description: m.description,
            labels: m.labels.into_iter().collect(),
            format: m.format,
            data_type: m.data_type,
            created_at: m.created_at,
            source: m.source,
        }
    }
}

/// `GET /api/v1/hsm/secrets/{path}/metadata`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MetadataData {
    /// The secret's name.
    pub path: String,
    /// The winning copy's metadata (a tombstone's when the secret is deleted).
    pub metadata: MetadataView,
}

/// `GET /api/v1/hsm/secrets/{path}/checksum`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChecksumData {
    /// The secret's name.
    pub path: String,
    /// The winning copy's checksum.
    pub checksum: String,
}

/// What happened on one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeviceResult {
    /// The device did it.
    pub success: bool,
    /// Why not (empty on success).
    pub error: String,
}

/// `POST`/`PUT /api/v1/hsm/secrets/{path}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteData {
    /// The secret's name.
    pub path: String,
    /// How many keys were written.
    pub keys: usize,
    /// The `sync.version` written: one above the highest any device held.
    pub version: i64,
    /// Devices written to.
    pub devices: usize,
    /// Device → what happened. A device that failed is repaired by mirroring.
    pub device_results: BTreeMap<String, DeviceResult>,
    /// One line per failed device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `DELETE /api/v1/hsm/secrets/{path}`: a tombstone written on every device.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteData {
    /// The secret's name.
    pub path: String,
    /// The tombstone's `sync.version`.
    pub version: i64,
    /// Devices written to.
    pub devices: usize,
    /// Device → what happened.
    pub device_results: BTreeMap<String, DeviceResult>,
    /// One line per failed device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `DELETE /api/v1/hsm/secrets/{path}/{key}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeleteKeyData {
    /// The secret's name.
    pub path: String,
    /// The key deleted.
    pub key: String,
    /// The `sync.version` written.
    pub version: i64,
    /// The last key was deleted, so the secret was deleted (a tombstone written).
    pub secret_deleted: bool,
    /// Devices written to.
    pub devices: usize,
    /// Device → what happened.
    pub device_results: BTreeMap<String, DeviceResult>,
    /// One line per failed device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /api/v1/hsm/change-pin`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PinData {
    /// Devices whose PIN changed.
    pub success_count: usize,
    /// Devices asked.
    pub total_count: usize,
    /// One line per failed device.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// What to do next.
    pub message: String,
}

/// `POST /api/v1/hsm/mirror/sync`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MirrorData {
    /// Always true: the pass ran.
    pub triggered: bool,
    /// `manual_api` or `manual_api_force`.
    pub reason: &'static str,
    /// Whether it was forced.
    pub force: bool,
    /// What happened.
    pub message: String,
    /// What the pass did.
    pub summary: crate::api::MirrorSummary,
}

/// `POST /api/v1/auth/token`: not wrapped in the envelope, as the Go manager answers.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenAnswer {
    /// The bearer token for the other routes.
    pub token: String,
    /// When it expires, RFC 3339.
    pub expires_at: String,
    /// `Bearer`.
    pub token_type: &'static str,
}
