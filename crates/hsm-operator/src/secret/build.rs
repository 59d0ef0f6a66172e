//! The pure half of the HSMSecret controller: from what was observed (the HSMSecret, the
//! devices' index entries, the winner's values and metadata, the existing Secret) to what
//! should be (the Secret, the status). No I/O, so every contract point is a plain test.

use crate::agents::{DeviceHealth, DeviceSnapshot, SecretValues};
use crate::resolve::{Holding, Observation};
use chrono::{DateTime, Utc};
use hsm_api::names::{APP_NAME, annotations, labels};
use hsm_api::secret::{HSMSecret, HSMSecretSpec, HSMSecretStatus, SyncStatus};
use hsm_proto::v1::SecretMetadata;
use hsm_store::checksum::checksum;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;

/// The default and fallback sync interval, seconds (the Go controller's).
pub const DEFAULT_SYNC_INTERVAL: i32 = 30;

/// Who this manager is: HSMSecrets whose `parentRef` names another instance are left alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `OPERATOR_NAME`.
    pub operator_name: String,
    /// The manager's namespace.
    pub namespace: String,
}

/// The Go filter: a `parentRef` naming this operator, in this operator's namespace (an
/// absent namespace meaning this one).
pub fn is_ours(spec: &HSMSecretSpec, identity: &Identity) -> bool {
    spec.parent_ref.as_ref().is_some_and(|parent| {
        parent.name == identity.operator_name
            && parent.namespace.as_deref().unwrap_or(&identity.namespace) == identity.namespace
    })
}

/// The Kubernetes Secret's name: `spec.secretName`, else the HSMSecret's name.
pub fn secret_name(hsm_secret: &HSMSecret) -> String {
    if hsm_secret.spec.secret_name.is_empty() {
        hsm_secret.name_any()
    } else {
        hsm_secret.spec.secret_name.clone()
    }
}

/// The checksum of a Secret's data: the on-token formula, so a Secret and an index entry
/// compare directly.
pub fn secret_checksum(secret: &Secret) -> String {
    checksum(
        secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice())),
    )
}

/// What one device says about secret `name`, or why it cannot say.
pub fn observe(
    name: &str,
    devices: &[DeviceSnapshot],
) -> (Vec<Observation>, Vec<(String, String)>) {
    let mut observations = Vec::new();
    let mut unavailable = Vec::new();
    for device in devices {
        match &device.health {
            DeviceHealth::Healthy => {}
            DeviceHealth::Connecting => {
                unavailable.push((device.key.clone(), "connecting".to_owned()));
                continue;
            }
            DeviceHealth::Unavailable { reason } => {
                unavailable.push((device.key.clone(), reason.clone()));
                continue;
            }
        }
        let entry = device.entries.get(name);
        observations.push(Observation {
            device: device_id(device),
            holding: match entry {
                None => Holding::Absent,
                Some(e) if e.tombstone => Holding::Tombstone,
                Some(e) => Holding::Present {
                    checksum: e.checksum.clone(),
                },
            },
            version: entry.map_or(0, |e| e.sync_version),
            timestamp: entry
                .and_then(|e| DateTime::parse_from_rfc3339(&e.sync_timestamp).ok())
                .map(|t| t.with_timezone(&Utc)),
        });
    }
    (observations, unavailable)
}

/// A device's id among devices: its serial, else its key in the pool.
pub fn device_id(device: &DeviceSnapshot) -> String {
    if device.serial.is_empty() {
        device.key.clone()
    } else {
        device.serial.clone()
    }
}

/// Whether `key` is a valid label key (optional DNS-subdomain prefix, `/`, a name of at
/// most 63 characters).
pub fn valid_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    prefix_ok && !name.is_empty() && valid_label_value(name)
}

/// Whether `value` is a valid label value: at most 63 characters of `[A-Za-z0-9_.-]`,
/// starting and ending alphanumeric (or empty).
pub fn valid_label_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value
            .bytes()
            .next()
            .is_none_or(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_none_or(|b| b.is_ascii_alphanumeric())
}

/// The Secret's labels: `managed-by`, `hsm-path` (with `/` as `_`), and every metadata
/// label that is a valid label (as the Go operator copies them).
pub fn secret_labels(name: &str, metadata: &SecretMetadata) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = metadata
        .labels
        .iter()
        .filter(|(k, v)| valid_label_key(k) && valid_label_value(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(labels::MANAGED_BY.into(), APP_NAME.into());
    out.insert(labels::HSM_PATH.into(), name.replace('/', "_"));
    out
}

/// The Secret's annotations: the metadata's description, format, data type, source and
/// creation time, each when set.
pub fn secret_annotations(metadata: &SecretMetadata) -> BTreeMap<String, String> {
    [
        (annotations::DESCRIPTION, &metadata.description),
        (annotations::FORMAT, &metadata.format),
        (annotations::DATA_TYPE, &metadata.data_type),
        (annotations::SOURCE, &metadata.source),
        (annotations::CREATED_AT, &metadata.created_at),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect()
}

/// The controller owner reference to the HSMSecret.
pub fn owner_reference(hsm_secret: &HSMSecret) -> OwnerReference {
    OwnerReference {
        api_version: HSMSecret::api_version(&()).into_owned(),
        kind: HSMSecret::kind(&()).into_owned(),
        name: hsm_secret.name_any(),
        uid: hsm_secret.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Whether `secret` (a Secret, or one as cached) is this HSMSecret's (controller-owned by
/// its uid).
pub fn owned_by(secret: &impl Resource, hsm_secret: &HSMSecret) -> bool {
    let uid = hsm_secret.uid();
    secret
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// The Secret as it should be. Its type is the existing Secret's (immutable), else
/// `spec.secretType`.
pub fn desired_secret(
    hsm_secret: &HSMSecret,
    existing: Option<&Secret>,
    values: &SecretValues,
    metadata: &SecretMetadata,
) -> Secret {
    let existing_type = existing.and_then(|s| s.type_.as_deref());
    desired_secret_of_type(hsm_secret, existing_type, values, metadata)
}

/// [`desired_secret`] when only the existing Secret's type is at hand (`None`: no Secret,
/// or one without a type).
pub fn desired_secret_of_type(
    hsm_secret: &HSMSecret,
    existing_type: Option<&str>,
    values: &SecretValues,
    metadata: &SecretMetadata,
) -> Secret {
    let secret_type = existing_type.map(str::to_owned).unwrap_or_else(|| {
        match hsm_secret.spec.secret_type.as_str() {
            "" => "Opaque".to_owned(),
            t => t.to_owned(),
        }
    });
    let name = hsm_secret.name_any();
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(hsm_secret)),
            namespace: hsm_secret.namespace(),
            labels: Some(secret_labels(&name, metadata)),
            annotations: Some(secret_annotations(metadata)).filter(|a| !a.is_empty()),
            owner_references: Some(vec![owner_reference(hsm_secret)]),
            ..ObjectMeta::default()
        },
        type_: Some(secret_type),
        data: Some(
            values
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// Whether `existing` already is `desired` in everything the operator sets: data exactly,
/// labels and annotations at least, owner and type.
pub fn up_to_date(existing: &Secret, desired: &Secret) -> bool {
    let contains = |have: &Option<BTreeMap<String, String>>,
                    want: &Option<BTreeMap<String, String>>| {
        want.iter()
            .flatten()
            .all(|(k, v)| have.as_ref().and_then(|h| h.get(k)) == Some(v))
    };
    existing.data == desired.data
        && existing.type_ == desired.type_
        && contains(&existing.metadata.labels, &desired.metadata.labels)
        && contains(
            &existing.metadata.annotations,
            &desired.metadata.annotations,
        )
        && existing.metadata.owner_references == desired.metadata.owner_references
}

/// Whether the existing Secret holds data keys the desired one does not (added by hand):
/// a server-side apply would keep them, so the Secret is replaced instead.
pub fn has_foreign_keys(existing: &Secret, desired: &Secret) -> bool {
    let want = desired.data.as_ref();
    existing
        .data
        .iter()
        .flatten()
        .any(|(k, _)| want.is_none_or(|w| !w.contains_key(k)))
}

/// How a sync ended, as status reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The Secret holds the winner's data.
    InSync {
        /// The winner's checksum.
        hsm_checksum: String,
        /// The Secret written or found.
        secret: ObjectReference,
        /// Whether this sync wrote it.
        wrote: bool,
    },
    /// No available device holds the secret.
    NotOnHsm {
        /// Devices that could not answer, with why.
        unavailable: Vec<(String, String)>,
    },
    /// The devices' answer is a tombstone; the Secret is left as it was.
    DeletedOnHsm,
    /// No device could answer.
    DevicesUnavailable {
        /// Each device with why (empty: none configured).
        unavailable: Vec<(String, String)>,
    },
    /// The HSMSecret cannot be synced as written.
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// A Secret of that name exists and is not this HSMSecret's.
    SecretNameTaken {
        /// Its name.
        name: String,
    },
    /// Something failed on the way (an agent or the API server).
    Failed {
        /// What.
        message: String,
    },
}

fn list(unavailable: &[(String, String)]) -> String {
    unavailable
        .iter()
        .map(|(device, reason)| format!("{device}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Outcome {
    /// `(syncStatus, Ready reason, message)`.
    pub fn describe(&self) -> (SyncStatus, &'static str, String) {
        match self {
            Outcome::InSync { secret, .. } => (
                SyncStatus::InSync,
                "InSync",
                format!(
                    "Secret {} holds the HSM's data",
                    secret.name.as_deref().unwrap_or_default()
                ),
            ),
            Outcome::NotOnHsm { unavailable } if unavailable.is_empty() => (
                SyncStatus::Pending,
                "NotFoundOnHSM",
                "no device holds this secret".into(),
            ),
            Outcome::NotOnHsm { unavailable } => (
                SyncStatus::Pending,
                "NotFoundOnHSM",
                format!(
                    "no available device holds this secret; unavailable: {}",
                    list(unavailable)
                ),
            ),
            Outcome::DeletedOnHsm => (
                SyncStatus::OutOfSync,
                "DeletedOnHSM",
                "the secret is deleted on the HSM; the Secret is left as it was".into(),
            ),
            Outcome::DevicesUnavailable { unavailable } if unavailable.is_empty() => (
                SyncStatus::Error,
                "NoDevices",
                "no HSM device is known to this operator; the Secret keeps its last value".into(),
            ),
            Outcome::DevicesUnavailable { unavailable } => (
                SyncStatus::Error,
                "DevicesUnavailable",
                format!(
                    "no device can answer ({}); the Secret keeps its last value",
                    list(unavailable)
                ),
            ),
            Outcome::Invalid { message } => (SyncStatus::Error, "InvalidSpec", message.clone()),
            Outcome::SecretNameTaken { name } => (
                SyncStatus::Error,
                "SecretNameTaken",
                format!(
                    "Secret {name} exists and is not managed by this HSMSecret; it is left untouched"
                ),
            ),
            Outcome::Failed { message } => (SyncStatus::Error, "SyncFailed", message.clone()),
        }
    }
}

/// The status after `outcome`, keeping what did not change (the Ready condition's
/// transition time, `lastSyncTime` unless this sync wrote or newly reached sync).
pub fn status(
    previous: Option<&HSMSecretStatus>,
    outcome: &Outcome,
    secret_checksum: Option<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> HSMSecretStatus {
    let (sync_status, reason, message) = outcome.describe();
    let previous = previous.cloned().unwrap_or_default();
    let ready = if sync_status == SyncStatus::InSync {
        "True"
    } else {
        "False"
    };
    let old_ready = previous.conditions.iter().find(|c| c.type_ == "Ready");
    let transition = match old_ready {
        Some(c) if c.status == ready => c.last_transition_time.clone(),
        _ => Time(now),
    };
    let newly_in_sync = previous.sync_status.as_ref() != Some(&SyncStatus::InSync);
    let mut next = HSMSecretStatus {
        sync_status: Some(sync_status.clone()),
        last_error: if sync_status == SyncStatus::Error {
            message.clone()
        } else {
            String::new()
        },
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time: transition,
        }],
        secret_checksum: secret_checksum.unwrap_or(previous.secret_checksum.clone()),
        ..previous.clone()
    };
    if let Outcome::InSync {
        hsm_checksum,
        secret,
        wrote,
    } = outcome
    {
        next.hsm_checksum = hsm_checksum.clone();
        next.secret_ref = Some(secret.clone());
        if *wrote || newly_in_sync || next.last_sync_time.is_none() {
            next.last_sync_time = Some(Time(now));
        }
    }
    next
}

#[cfg(test)]
mod tests;
