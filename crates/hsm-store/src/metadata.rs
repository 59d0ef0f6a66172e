//! Secret metadata, stored as JSON in `<name>/_metadata` exactly as the Go operator writes it
//! (`description`, `labels`, `format`, `dataType`, `createdAt`, `source`, all omitted when
//! empty), plus the sync labels the mirror and the REST API use to order versions.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label key of the monotonic write counter.
pub const SYNC_VERSION: &str = "sync.version";
/// Label key of the RFC 3339 write time.
pub const SYNC_TIMESTAMP: &str = "sync.timestamp";
/// Label key marking a tombstone (`"true"`).
pub const SYNC_DELETED: &str = "sync.deleted";
/// Label key naming the device a mirrored copy came from.
pub const SYNC_SOURCE: &str = "sync.source";

/// A secret's metadata. Unknown JSON fields are ignored on read, as Go's decoder does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretMetadata {
    /// Free text for humans.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// User labels and the `sync.*` labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form format hint.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub format: String,
    /// Data type name (`plaintext`, `json`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_type: String,
    /// Creation time, RFC 3339.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_at: String,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

impl SecretMetadata {
    /// `sync.version`, or 0 when absent or unparsable (as the Go operator reads it).
    pub fn sync_version(&self) -> i64 {
        self.labels
            .get(SYNC_VERSION)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// `sync.timestamp`, or "" when absent.
    pub fn sync_timestamp(&self) -> &str {
        self.labels
            .get(SYNC_TIMESTAMP)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Whether this metadata marks a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.labels.get(SYNC_DELETED).map(String::as_str) == Some("true")
    }

    /// The JSON stored on the token.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata always serialises")
    }

    /// Applies `update` on top of `self`: non-empty fields replace, labels merge key by key.
    /// This is how a rewrite keeps user metadata (a mirror write that only carries `sync.*`
    /// labels leaves the description and user labels as they were).
    pub fn merged_with(&self, update: &SecretMetadata) -> SecretMetadata {
        let pick = |new: &String, old: &String| {
            if new.is_empty() {
                old.clone()
            } else {
                new.clone()
            }
        };
        let mut labels = self.labels.clone();
        labels.extend(update.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        SecretMetadata {
            description: pick(&update.description, &self.description),
            labels,
            format: pick(&update.format, &self.format),
            data_type: pick(&update.data_type, &self.data_type),
            created_at: pick(&update.created_at, &self.created_at),
            source: pick(&update.source, &self.source),
        }
    }
}

/// What a write does to the metadata already on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataChange {
    /// Keep the stored metadata as it is (none becomes `{}`).
    Keep,
    /// Replace it whole, as the Go operator's `WriteSecret` does.
    Replace(SecretMetadata),
    /// Merge into it ([`SecretMetadata::merged_with`]).
    Merge(SecretMetadata),
}

impl MetadataChange {
    /// The metadata to store, given what is stored now.
    pub fn apply(&self, current: Option<&SecretMetadata>) -> SecretMetadata {
        match self {
            MetadataChange::Keep => current.cloned().unwrap_or_default(),
            MetadataChange::Replace(m) => m.clone(),
            MetadataChange::Merge(m) => current.cloned().unwrap_or_default().merged_with(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_matches_go_field_names_and_omitempty() {
        let mut m = SecretMetadata {
            description: "db creds".into(),
            data_type: "json".into(),
            created_at: "2025-01-01T00:00:00Z".into(),
            ..Default::default()
        };
        m.labels.insert(SYNC_VERSION.into(), "7".into());
        let json: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"description":"db creds","labels":{"sync.version":"7"},
                "dataType":"json","createdAt":"2025-01-01T00:00:00Z"})
        );
        assert_eq!(SecretMetadata::default().to_json(), b"{}");
    }

    #[test]
    fn reads_go_json_with_unknown_fields() {
        let m: SecretMetadata = serde_json::from_str(
            r#"{"description":"x","labels":{"sync.version":"12","sync.deleted":"true"},"future":1}"#,
        )
        .unwrap();
        assert_eq!(m.sync_version(), 12);
        assert!(m.is_tombstone());
    }

    #[test]
    fn merge_keeps_user_metadata() {
        let mut stored = SecretMetadata {
            description: "owned by team a".into(),
            ..Default::default()
        };
        stored.labels.insert("team".into(), "a".into());
        stored.labels.insert(SYNC_VERSION.into(), "1".into());
        let mut sync_only = SecretMetadata::default();
        sync_only.labels.insert(SYNC_VERSION.into(), "2".into());
        let merged = MetadataChange::Merge(sync_only).apply(Some(&stored));
        assert_eq!(merged.description, "owned by team a");
        assert_eq!(merged.labels["team"], "a");
        assert_eq!(merged.sync_version(), 2);
    }
}
