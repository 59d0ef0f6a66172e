//! The `ServiceAccount` admission plugin a real API server runs on every Pod create
//! (kubernetes `plugin/pkg/admission/serviceaccount`), so that pods reach the API as their
//! own ServiceAccount exactly as in a cluster:
//!
//! - a pod naming no ServiceAccount gets `default`;
//! - a pod naming a ServiceAccount that does not exist is refused (403, the real message:
//!   `pods "<name>" is forbidden: error looking up service account <ns>/<sa>: serviceaccount
//!   "<sa>" not found`);
//! - unless `automountServiceAccountToken` is false on the pod (or, when the pod says
//!   nothing, on its ServiceAccount), the projected volume `kube-api-access-<5 random
//!   characters>` (a bound token with `expirationSeconds` 3607 at `token`, `ca.crt` from the
//!   `kube-root-ca.crt` ConfigMap, `namespace` from the downward API) is added, and mounted
//!   read-only at [`TOKEN_MOUNT_PATH`] in every container and init container that has no
//!   mount there yet;
//! - a pod without `imagePullSecrets` gets its ServiceAccount's.
//!
//! Mirror pods (annotation `kubernetes.io/config.mirror`) are left as they are, and may
//! not name a ServiceAccount. The `default` ServiceAccount and the `kube-root-ca.crt`
//! ConfigMap every namespace needs are made when the namespace is (see `ops`).

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::store::Store;

/// Where the token, CA and namespace appear in a container (`DefaultAPITokenMountPath`).
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The prefix of the projected volume's name (`ServiceAccountVolumeName`).
pub const VOLUME_PREFIX: &str = "kube-api-access";
/// The ServiceAccount of pods that name none.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The lifetime the projected token asks for: an hour and seven seconds, the real plugin's
/// value (the seven seconds tell a kubelet-requested token from others).
pub const TOKEN_EXPIRATION_SECONDS: i64 = 3607;
/// The annotation that marks a mirror pod (a static pod's copy, which is never changed).
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The projected volume source the plugin mounts (`TokenVolumeSource`).
pub fn token_volume_source() -> Value {
    json!({
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_EXPIRATION_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// Admits a Pod being created in `namespace` (in its stored shape): defaults, checks and
/// mounts its ServiceAccount as the real plugin does.
pub fn admit_pod(store: &Store, namespace: &str, pod: &mut Value) -> Result<(), ApiError> {
    // The real plugin names the pod by its generateName when it has no name yet.
    let name = ["name", "generateName"]
        .into_iter()
        .find_map(|k| pod["metadata"][k].as_str().filter(|n| !n.is_empty()))
        .unwrap_or("Unknown")
        .to_string();
    let forbidden = |why: String| ApiError::denied("", "pods", &name, &why);
    if !pod["spec"].is_object() {
        pod["spec"] = json!({});
    }
    let is_mirror = pod["metadata"]["annotations"]
        .get(MIRROR_POD_ANNOTATION)
        .is_some();
    if is_mirror {
        if pod["spec"]["serviceAccountName"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
        {
            return Err(forbidden(
                "a mirror pod may not reference service accounts".into(),
            ));
        }
        return Ok(());
    }
    let sa_name = match pod["spec"]["serviceAccountName"].as_str() {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => {
            pod["spec"]["serviceAccountName"] = json!(DEFAULT_SERVICE_ACCOUNT);
            DEFAULT_SERVICE_ACCOUNT.to_string()
        }
    };
    let key = (String::new(), "serviceaccounts".to_string());
    let Some(sa) = store.get(&key, namespace, &sa_name) else {
        return Err(forbidden(format!(
            "error looking up service account {namespace}/{sa_name}: serviceaccount \
             \"{sa_name}\" not found"
        )));
    };
    if should_automount(sa, pod) {
        mount_token(pod);
    }
    let has_pull_secrets = pod["spec"]["imagePullSecrets"]
        .as_array()
        .is_some_and(|a| !a.is_empty());
    if !has_pull_secrets
        && let Some(secrets) = sa["imagePullSecrets"].as_array()
        && !secrets.is_empty()
    {
        let names: Vec<Value> = secrets
            .iter()
            .map(|s| json!({"name": s["name"].as_str().unwrap_or_default()}))
            .collect();
        pod["spec"]["imagePullSecrets"] = Value::Array(names);
    }
    Ok(())
}

/// The pod's `automountServiceAccountToken` wins; else the ServiceAccount's; else true.
fn should_automount(sa: &Value, pod: &Value) -> bool {
    pod["spec"]["automountServiceAccountToken"]
        .as_bool()
        .or_else(|| sa["automountServiceAccountToken"].as_bool())
        .unwrap_or(true)
}

/// Adds the token volume (unless one is there) and its mount to every container and init
/// container without a mount at [`TOKEN_MOUNT_PATH`] (`mountServiceAccountToken`).
fn mount_token(pod: &mut Value) {
    let spec = &mut pod["spec"];
    let existing = spec["volumes"].as_array().and_then(|vs| {
        vs.iter()
            .filter_map(|v| v["name"].as_str())
            .find(|n| n.starts_with(&format!("{VOLUME_PREFIX}-")))
            .map(String::from)
    });
    let volume_name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}-{}", meta::random_suffix()));
    let mount = json!({"name": volume_name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH});
    let mut needs_volume = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec[list].as_array_mut() else {
            continue;
        };
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            let mounted = c["volumeMounts"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["mountPath"] == TOKEN_MOUNT_PATH));
            if mounted {
                continue;
            }
            match c["volumeMounts"].as_array_mut() {
                Some(ms) => ms.push(mount.clone()),
                None => c["volumeMounts"] = json!([mount.clone()]),
            }
            needs_volume = true;
        }
    }
    if existing.is_none() && needs_volume {
        let volume = json!({"name": volume_name, "projected": token_volume_source()});
        match spec["volumes"].as_array_mut() {
            Some(vs) => vs.push(volume),
            None => spec["volumes"] = json!([volume]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_volume_source_is_the_real_plugins() {
        let v = token_volume_source();
        assert_eq!(v["defaultMode"], 420);
        assert_eq!(
            v["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3607
        );
        assert_eq!(v["sources"][1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            v["sources"][2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
    }

    #[test]
    fn an_existing_token_volume_is_reused_and_a_mount_at_the_path_kept() {
        let mut pod = json!({"spec": {
            "volumes": [{"name": "kube-api-access-abcde", "projected": {"sources": []}}],
            "containers": [
                {"name": "a", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]},
                {"name": "b"}]}});
        mount_token(&mut pod);
        assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 1);
        assert_eq!(
            pod["spec"]["containers"][0]["volumeMounts"],
            json!([{"name": "own", "mountPath": TOKEN_MOUNT_PATH}])
        );
        assert_eq!(
            pod["spec"]["containers"][1]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );
    }

    #[test]
    fn no_volume_when_every_container_has_its_own_mount() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "volumeMounts": [{"name": "own", "mountPath": TOKEN_MOUNT_PATH}]}]}});
        mount_token(&mut pod);
        assert!(pod["spec"]["volumes"].is_null());
    }
}
