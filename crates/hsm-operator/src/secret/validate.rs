//! What an HSMSecret must satisfy before anything is read or written: checked first, so a
//! bad object gets one clear condition on itself and touches nothing.

use hsm_api::secret::{HSMSecret, RolloutRestartTarget};

/// The workload kinds a rollout restart applies to.
pub const ROLLOUT_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];
use kube::ResourceExt;

/// Why an HSMSecret cannot be synced as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The name is not a valid HSM path.
    #[error("metadata.name {name:?} is not a valid HSM secret name: {reason}")]
    HsmPath {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `spec.secretName` is not a valid Secret name.
    #[error(
        "spec.secretName {0:?} is not a valid Secret name (a DNS subdomain: lower-case letters, digits, '-' and '.', at most 253)"
    )]
    SecretName(String),
    /// `spec.syncInterval` is negative.
    #[error("spec.syncInterval must be 0 or more seconds, not {0}")]
    SyncInterval(i32),
    /// A rollout target has no name or an unknown kind.
    #[error(
        "spec.rolloutRestartTargets[{0}] needs a name and a kind of Deployment, StatefulSet or DaemonSet"
    )]
    RolloutTarget(usize),
}

/// Whether `name` is a DNS subdomain (RFC 1123), as Secret names must be.
pub fn dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Checks an HSMSecret.
pub fn validate(hsm_secret: &HSMSecret) -> Result<(), Invalid> {
    let name = hsm_secret.name_any();
    hsm_store::name::validate_name(&name).map_err(|e| Invalid::HsmPath {
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let spec = &hsm_secret.spec;
    if !spec.secret_name.is_empty() && !dns_subdomain(&spec.secret_name) {
        return Err(Invalid::SecretName(spec.secret_name.clone()));
    }
    if spec.sync_interval < 0 {
        return Err(Invalid::SyncInterval(spec.sync_interval));
    }
    let bad_target =
        |t: &RolloutRestartTarget| t.name.is_empty() || !ROLLOUT_KINDS.contains(&t.kind.as_str());
    if let Some(i) = spec.rollout_restart_targets.iter().position(bad_target) {
        return Err(Invalid::RolloutTarget(i));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str, spec: serde_json::Value) -> HSMSecret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
            "metadata": {"name": name, "namespace": "apps"}, "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn valid_objects_pass() {
        validate(&object(
            "db.prod",
            serde_json::json!({"secretName": "db-creds"}),
        ))
        .unwrap();
        validate(&object("db", serde_json::json!({}))).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad_secret = validate(&object("db", serde_json::json!({"secretName": "Bad_Name"})));
        assert!(
            bad_secret
                .unwrap_err()
                .to_string()
                .contains("spec.secretName")
        );
        let bad_interval = validate(&object("db", serde_json::json!({"syncInterval": -1})));
        assert!(
            bad_interval
                .unwrap_err()
                .to_string()
                .contains("spec.syncInterval")
        );
        let bad_target = validate(&object(
            "db",
            serde_json::json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": ""}]}),
        ));
        assert_eq!(bad_target, Err(Invalid::RolloutTarget(0)));
        let bad_kind = validate(&object(
            "db",
            serde_json::json!({"rolloutRestartTargets": [{"kind": "Job", "name": "x"}]}),
        ));
        assert_eq!(bad_kind, Err(Invalid::RolloutTarget(0)));
        let bad_path = validate(&object("_metadata", serde_json::json!({})));
        assert!(
            matches!(bad_path, Err(Invalid::HsmPath { .. })),
            "{bad_path:?}"
        );
    }

    #[test]
    fn dns_subdomains() {
        assert!(dns_subdomain("a.b-c.d"));
        for bad in ["", "A", "a_b", "-a", "a.", &"a".repeat(254)] {
            assert!(!dns_subdomain(bad), "{bad}");
        }
    }
}
