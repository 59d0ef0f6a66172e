//! The REST API's documents (inventory §4) and the plugin's own secret data type.
//!
//! Field names follow the Go manager's JSON; where the Go names are Go-cased (`/hsm/info`,
//! defect 22) the lower-case spelling is accepted too, so the plugin reads either manager.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// One secret value: bytes that are wiped on drop and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Takes the bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The bytes, for the few places that must see them (the request body, `get --key`).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text, when it is UTF-8 (the REST API writes only strings).
    pub fn as_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretValue([REDACTED {} bytes])", self.0.len())
    }
}

impl From<&str> for SecretValue {
    fn from(text: &str) -> Self {
        SecretValue::new(text.as_bytes().to_vec())
    }
}

/// A secret's keys and values.
pub type SecretData = BTreeMap<String, SecretValue>;

/// `{"success": …, "message": …, "data": …, "error": …}`.
#[derive(Debug, Deserialize)]
pub struct Envelope<T> {
    /// Whether the request succeeded.
    pub success: bool,
    /// A sentence for people (on 206: "… from x/y devices").
    #[serde(default)]
    pub message: Option<String>,
    /// The answer.
    pub data: Option<T>,
    /// The failure.
    #[serde(default)]
    pub error: Option<ApiErrorBody>,
}

/// `error` of the envelope.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ApiErrorBody {
    /// A stable code, e.g. `secret_not_found`, `INVALID_TOKEN`.
    #[serde(default)]
    pub code: String,
    /// A sentence.
    #[serde(default)]
    pub message: String,
    /// More, e.g. `details.hint` on `INVALID_TOKEN`.
    #[serde(default)]
    pub details: Option<serde_json::Value>,
}

/// `POST /api/v1/auth/token` (not enveloped).
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub token: String,
    /// RFC 3339.
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// `Bearer`.
    #[serde(default)]
    pub token_type: String,
}

/// `GET /api/v1/health`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// `healthy` or `degraded`.
    pub status: String,
    /// At least one device is usable.
    #[serde(default)]
    pub hsm_connected: bool,
    /// More than one device.
    #[serde(default)]
    pub replication_enabled: bool,
    /// How many devices.
    #[serde(default)]
    pub active_nodes: i64,
    /// When the manager answered.
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// `GET /api/v1/hsm/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// Serial → ready.
    #[serde(default)]
    pub devices: BTreeMap<String, bool>,
    /// How many devices.
    #[serde(rename = "totalDevices", default)]
    pub total_devices: i64,
}

/// One device's facts in `GET /api/v1/hsm/info`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Token label.
    #[serde(alias = "Label", default)]
    pub label: String,
    /// Manufacturer.
    #[serde(alias = "Manufacturer", default)]
    pub manufacturer: String,
    /// Model.
    #[serde(alias = "Model", default)]
    pub model: String,
    /// Serial number.
    #[serde(alias = "SerialNumber", default)]
    pub serial_number: String,
    /// Firmware version.
    #[serde(alias = "FirmwareVersion", default)]
    pub firmware_version: String,
}

/// `GET /api/v1/hsm/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceInfos {
    /// Serial → facts.
    #[serde(rename = "deviceInfos", default)]
    pub device_infos: BTreeMap<String, DeviceInfo>,
}

/// `GET /api/v1/hsm/secrets`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretList {
    /// Secret paths.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// How many.
    #[serde(default)]
    pub count: usize,
}

/// `GET /api/v1/hsm/secrets/:path` as sent: values base64.
#[derive(Debug, Deserialize)]
pub struct SecretWire {
    /// The path.
    #[serde(default)]
    pub path: String,
    /// Key → base64 value.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// `sha256:…`.
    #[serde(default)]
    pub checksum: Option<String>,
    /// How many devices answered.
    #[serde(rename = "deviceCount", default)]
    pub device_count: Option<i64>,
}

/// A secret read from the manager, values decoded.
#[derive(Debug, Clone)]
pub struct Secret {
    /// The path.
    pub path: String,
    /// Keys and values.
    pub data: SecretData,
    /// `sha256:…`.
    pub checksum: Option<String>,
    /// How many devices answered.
    pub device_count: Option<i64>,
}

/// `POST /api/v1/hsm/secrets/:path` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Written {
    /// The path.
    #[serde(default)]
    pub path: String,
    /// How many keys were written.
    #[serde(default)]
    pub keys: usize,
}

/// One device's outcome of a delete.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceResult {
    /// It worked on this device.
    pub success: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `DELETE /api/v1/hsm/secrets/:path[/:key]` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    /// The path.
    #[serde(default)]
    pub path: String,
    /// The key, when one key was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How many devices were asked.
    #[serde(default)]
    pub devices: i64,
    /// Serial → outcome.
    #[serde(default)]
    pub device_results: BTreeMap<String, DeviceResult>,
    /// Warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `GET /api/v1/hsm/secrets/:path/metadata`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetadataDoc {
    /// The path.
    #[serde(default)]
    pub path: String,
    /// `{description, labels, format, dataType, createdAt, source}`.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// `POST /api/v1/hsm/change-pin` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinChanged {
    /// Devices whose PIN changed.
    #[serde(default)]
    pub success_count: i64,
    /// Devices asked.
    #[serde(default)]
    pub total_count: i64,
    /// A sentence.
    #[serde(default)]
    pub message: String,
    /// Per-device failures (206).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<serde_json::Value>,
}

/// `POST /api/v1/hsm/mirror/sync` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MirrorTriggered {
    /// Accepted.
    #[serde(default)]
    pub triggered: bool,
    /// `manual_api` or `manual_api_force`.
    #[serde(default)]
    pub reason: String,
    /// Forced.
    #[serde(default)]
    pub force: bool,
    /// A sentence.
    #[serde(default)]
    pub message: String,
}
