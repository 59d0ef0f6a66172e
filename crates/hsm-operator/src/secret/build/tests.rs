//! The contract of §6.4 point by point, on plain values.

use super::*;
use crate::agents::DeviceHealth;
use hsm_api::secret::ParentReference;
use hsm_proto::v1::IndexEntry;
use std::sync::Arc;

fn hsm_secret(name: &str, spec: serde_json::Value) -> HSMSecret {
    let mut object: HSMSecret = serde_json::from_value(serde_json::json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
        "metadata": {"name": name, "namespace": "apps", "uid": "uid-1", "generation": 3},
        "spec": spec,
    }))
    .unwrap();
    object.metadata.uid = Some("uid-1".into());
    object
}

fn identity() -> Identity {
    Identity {
        operator_name: "hsm-op".into(),
        namespace: "hsm-system".into(),
    }
}

fn parent(name: &str, namespace: Option<&str>) -> HSMSecretSpec {
    HSMSecretSpec {
        parent_ref: Some(ParentReference {
            name: name.into(),
            namespace: namespace.map(Into::into),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[test]
fn only_a_parent_ref_naming_this_operator_in_its_namespace_is_ours() {
    assert!(is_ours(&parent("hsm-op", None), &identity()));
    assert!(is_ours(&parent("hsm-op", Some("hsm-system")), &identity()));
    assert!(!is_ours(&parent("hsm-op", Some("other")), &identity()));
    assert!(!is_ours(&parent("other-op", None), &identity()));
    assert!(!is_ours(&HSMSecretSpec::default(), &identity()));
}

#[test]
fn the_secret_is_named_by_secret_name_or_the_hsmsecret() {
    assert_eq!(secret_name(&hsm_secret("db", serde_json::json!({}))), "db");
    assert_eq!(
        secret_name(&hsm_secret(
            "db",
            serde_json::json!({"secretName": "db-creds"})
        )),
        "db-creds"
    );
}

fn metadata() -> SecretMetadata {
    SecretMetadata {
        description: "database".into(),
        labels: BTreeMap::from([
            ("sync.version".to_owned(), "4".to_owned()),
            (
                "sync.timestamp".to_owned(),
                "2026-01-01T00:00:00Z".to_owned(),
            ),
            ("team".to_owned(), "payments".to_owned()),
            ("bad key!".to_owned(), "x".to_owned()),
        ]),
        format: "json".into(),
        data_type: String::new(),
        created_at: "2026-01-01T00:00:00Z".into(),
        source: "rest".into(),
    }
}

#[test]
fn the_desired_secret_follows_the_contract() {
    let owner = hsm_secret(
        "db/main",
        serde_json::json!({"secretType": "kubernetes.io/basic-auth"}),
    );
    let values = BTreeMap::from([("password".to_owned(), b"s3cr3t".to_vec())]);
    let secret = desired_secret(&owner, None, &values, &metadata());
    assert_eq!(secret.metadata.name.as_deref(), Some("db/main"));
    assert_eq!(secret.metadata.namespace.as_deref(), Some("apps"));
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let labels = secret.metadata.labels.clone().unwrap();
    assert_eq!(labels["managed-by"], "hsm-secrets-operator");
    assert_eq!(labels["hsm-path"], "db_main");
    assert_eq!(
        labels["sync.version"], "4",
        "valid metadata labels are copied, as in Go"
    );
    assert_eq!(labels["team"], "payments");
    assert!(
        !labels.contains_key("sync.timestamp"),
        "a value with ':' is no label value"
    );
    assert!(!labels.contains_key("bad key!"));
    let annotations = secret.metadata.annotations.clone().unwrap();
    assert_eq!(annotations["hsm.j5t.io/description"], "database");
    assert_eq!(annotations["hsm.j5t.io/format"], "json");
    assert_eq!(annotations["hsm.j5t.io/source"], "rest");
    assert_eq!(annotations["hsm.j5t.io/created-at"], "2026-01-01T00:00:00Z");
    assert!(
        !annotations.contains_key("hsm.j5t.io/data-type"),
        "empty fields are left out"
    );
    let owners = secret.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(owners[0].kind, "HSMSecret");
    assert_eq!(owners[0].api_version, "hsm.j5t.io/v1alpha1");
    assert_eq!(owners[0].uid, "uid-1");
    assert_eq!(owners[0].controller, Some(true));
    assert!(owned_by(&secret, &owner));
    assert_eq!(
        secret_checksum(&secret),
        checksum([("password", b"s3cr3t".as_slice())])
    );
}

#[test]
fn an_existing_secrets_type_is_kept() {
    let owner = hsm_secret("db", serde_json::json!({"secretType": "kubernetes.io/tls"}));
    let existing = Secret {
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    let secret = desired_secret(&owner, Some(&existing), &BTreeMap::new(), &metadata());
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
}

#[test]
fn up_to_date_ignores_foreign_labels_but_not_data() {
    let owner = hsm_secret("db", serde_json::json!({}));
    let values = BTreeMap::from([("k".to_owned(), b"v".to_vec())]);
    let desired = desired_secret(&owner, None, &values, &metadata());
    let mut existing = desired.clone();
    existing
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("added-by-hand".into(), "yes".into());
    assert!(up_to_date(&existing, &desired));
    assert!(!has_foreign_keys(&existing, &desired));
    existing
        .data
        .as_mut()
        .unwrap()
        .insert("extra".into(), ByteString(b"x".to_vec()));
    assert!(!up_to_date(&existing, &desired));
    assert!(has_foreign_keys(&existing, &desired));
    let mut edited = desired.clone();
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("k".into(), ByteString(b"changed".to_vec()));
    assert!(!up_to_date(&edited, &desired));
    assert!(!has_foreign_keys(&edited, &desired));
}

#[test]
fn a_secret_owned_by_another_object_is_not_ours() {
    let owner = hsm_secret("db", serde_json::json!({}));
    let mut other = hsm_secret("db", serde_json::json!({}));
    other.metadata.uid = Some("uid-2".into());
    let secret = desired_secret(&other, None, &BTreeMap::new(), &metadata());
    assert!(!owned_by(&secret, &owner));
    assert!(!owned_by(&Secret::default(), &owner));
}

#[test]
fn label_rules() {
    for ok in ["a", "app.kubernetes.io/name", "sync.version", "x/y_z-1"] {
        assert!(valid_label_key(ok), "{ok}");
    }
    for bad in ["", "/a", "a/", "A_B/c", "-a", "a b", &"x".repeat(64)] {
        assert!(!valid_label_key(bad), "{bad}");
    }
    assert!(valid_label_value(""));
    assert!(!valid_label_value("2026-01-01T00:00:00Z"));
}

fn device(key: &str, health: DeviceHealth, entries: Vec<IndexEntry>) -> DeviceSnapshot {
    DeviceSnapshot {
        key: key.into(),
        serial: format!("SER-{key}"),
        health,
        entries: Arc::new(entries.into_iter().map(|e| (e.name.clone(), e)).collect()),
    }
}

#[test]
fn observations_come_from_healthy_devices_only() {
    let entry = IndexEntry {
        name: "db".into(),
        checksum: "sha256:1".into(),
        sync_version: 2,
        sync_timestamp: "2026-01-01T00:00:00Z".into(),
        ..Default::default()
    };
    let tomb = IndexEntry {
        name: "db".into(),
        tombstone: true,
        sync_version: 3,
        ..Default::default()
    };
    let devices = [
        device("a", DeviceHealth::Healthy, vec![entry]),
        device("b", DeviceHealth::Healthy, vec![tomb]),
        device("c", DeviceHealth::Healthy, vec![]),
        device(
            "d",
            DeviceHealth::Unavailable {
                reason: "card pulled".into(),
            },
            vec![],
        ),
        device("e", DeviceHealth::Connecting, vec![]),
    ];
    let (obs, unavailable) = observe("db", &devices);
    assert_eq!(obs.len(), 3);
    assert_eq!(obs[0].device, "SER-a");
    assert_eq!(
        obs[0].holding,
        Holding::Present {
            checksum: "sha256:1".into()
        }
    );
    assert_eq!(obs[0].version, 2);
    assert!(obs[0].timestamp.is_some());
    assert_eq!(obs[1].holding, Holding::Tombstone);
    assert_eq!(obs[2].holding, Holding::Absent);
    assert_eq!(
        unavailable,
        vec![
            ("d".to_owned(), "card pulled".to_owned()),
            ("e".to_owned(), "connecting".to_owned())
        ]
    );
}

fn in_sync(wrote: bool) -> Outcome {
    Outcome::InSync {
        hsm_checksum: "sha256:1".into(),
        secret: ObjectReference {
            name: Some("db".into()),
            ..Default::default()
        },
        wrote,
    }
}

#[test]
fn status_reports_sync_and_keeps_times_that_did_not_move() {
    let t0 = Timestamp::from_second(1_000).unwrap();
    let t1 = Timestamp::from_second(2_000).unwrap();
    let first = status(None, &in_sync(true), Some("sha256:1".into()), Some(3), t0);
    assert_eq!(first.sync_status, Some(SyncStatus::InSync));
    assert_eq!(first.hsm_checksum, "sha256:1");
    assert_eq!(first.secret_checksum, "sha256:1");
    assert_eq!(first.last_sync_time, Some(Time(t0)));
    let ready = &first.conditions[0];
    assert_eq!(
        (
            ready.type_.as_str(),
            ready.status.as_str(),
            ready.reason.as_str()
        ),
        ("Ready", "True", "InSync")
    );
    assert_eq!(ready.observed_generation, Some(3));

    let again = status(
        Some(&first),
        &in_sync(false),
        Some("sha256:1".into()),
        Some(3),
        t1,
    );
    assert_eq!(
        again, first,
        "a sync that changed nothing changes no status"
    );

    let failed = status(
        Some(&first),
        &Outcome::DevicesUnavailable {
            unavailable: vec![("pico".into(), "card pulled".into())],
        },
        None,
        Some(3),
        t1,
    );
    assert_eq!(failed.sync_status, Some(SyncStatus::Error));
    assert!(
        failed.last_error.contains("pico: card pulled"),
        "{}",
        failed.last_error
    );
    assert!(failed.last_error.contains("keeps its last value"));
    assert_eq!(failed.conditions[0].status, "False");
    assert_eq!(failed.conditions[0].reason, "DevicesUnavailable");
    assert_eq!(failed.conditions[0].last_transition_time, Time(t1));
    assert_eq!(
        failed.last_sync_time,
        Some(Time(t0)),
        "the last good sync is kept"
    );
    assert_eq!(failed.hsm_checksum, "sha256:1");
}

#[test]
fn every_outcome_has_a_reason_and_a_message() {
    let outcomes = [
        in_sync(true),
        Outcome::NotOnHsm {
            unavailable: vec![],
        },
        Outcome::NotOnHsm {
            unavailable: vec![("x".into(), "down".into())],
        },
        Outcome::DeletedOnHsm,
        Outcome::DevicesUnavailable {
            unavailable: vec![],
        },
        Outcome::Invalid {
            message: "bad".into(),
        },
        Outcome::SecretNameTaken { name: "db".into() },
        Outcome::Failed {
            message: "boom".into(),
        },
    ];
    for outcome in outcomes {
        let (_, reason, message) = outcome.describe();
        assert!(!reason.is_empty() && !message.is_empty(), "{outcome:?}");
    }
}
