//! Each rendered object against the schema of its kind: the k8s-openapi type of a built-in
//! kind (it must deserialize and serialize back to the same JSON, so no field is unknown and
//! no value mistyped); objects of other projects' kinds are named, for the emulator to check
//! against their CRDs.
#![allow(dead_code)]

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How an object was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Against the Kubernetes type of its kind: every field known, every value well typed.
    Builtin,
    /// Not here: a kind of another project (cert-manager, Prometheus operator), checked by
    /// applying it to the API emulator with that project's CRD schema.
    Foreign(String),
}

/// Checks `object` against the built-in schema of its kind: it must deserialize into the
/// k8s-openapi type and serialize back to the same JSON, so no field is unknown (it would be
/// dropped) and no value has the wrong type (it would not parse).
pub fn check(object: &Value) -> Result<Checked, String> {
    use k8s_openapi::api::{apps, core, networking, policy, rbac};
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("v1", "Namespace") => round_trip::<core::v1::Namespace>(object),
        ("v1", "ServiceAccount") => round_trip::<core::v1::ServiceAccount>(object),
        ("v1", "Service") => round_trip::<core::v1::Service>(object),
        ("v1", "ConfigMap") => round_trip::<core::v1::ConfigMap>(object),
        ("v1", "Secret") => round_trip::<core::v1::Secret>(object),
        ("apps/v1", "Deployment") => round_trip::<apps::v1::Deployment>(object),
        ("apps/v1", "DaemonSet") => round_trip::<apps::v1::DaemonSet>(object),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            round_trip::<rbac::v1::ClusterRole>(object)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            round_trip::<rbac::v1::ClusterRoleBinding>(object)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<rbac::v1::Role>(object),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            round_trip::<rbac::v1::RoleBinding>(object)
        }
        ("networking.k8s.io/v1", "NetworkPolicy") => {
            round_trip::<networking::v1::NetworkPolicy>(object)
        }
        ("policy/v1", "PodDisruptionBudget") => {
            round_trip::<policy::v1::PodDisruptionBudget>(object)
        }
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            round_trip::<apiext::CustomResourceDefinition>(object)
        }
        (_, kind) if api_version.contains(".k8s.io") || !api_version.contains('.') => {
            Err(schema_error(
                object,
                format!("no schema known here for {api_version} {kind}"),
            ))
        }
        (_, kind) => Ok(Checked::Foreign(format!("{api_version} {kind}"))),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<Checked, String> {
    let typed: T =
        serde_json::from_value(object.clone()).map_err(|e| schema_error(object, e.to_string()))?;
    let back = serde_json::to_value(&typed).map_err(|e| schema_error(object, e.to_string()))?;
    match first_difference(object, &back, "") {
        None => Ok(Checked::Builtin),
        Some(path) => Err(schema_error(
            object,
            format!("field {path} is not part of the schema (or has the wrong shape)"),
        )),
    }
}

/// The path of the first place where `a` and `b` differ.
pub fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => x
            .iter()
            .find_map(|(k, v)| match y.get(k) {
                Some(w) => first_difference(v, w, &format!("{at}.{k}")),
                None => Some(format!("{at}.{k}")),
            })
            .or_else(|| {
                y.keys()
                    .find(|k| !x.contains_key(*k))
                    .map(|k| format!("{at}.{k}"))
            }),
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| first_difference(v, w, &format!("{at}[{i}]"))),
        (Value::Number(x), Value::Number(y)) if x.as_f64() == y.as_f64() => None,
        _ if a == b => None,
        _ => Some(if at.is_empty() { ".".into() } else { at.into() }),
    }
}

fn schema_error(object: &Value, problem: String) -> String {
    format!(
        "{}/{}: {problem}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_well_formed_deployment_passes() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "m"},
            "spec": {"selector": {"matchLabels": {"a": "b"}},
                     "template": {"metadata": {"labels": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "i",
                                           "volumeMounts": [{"name": "t", "mountPath": "/tmp"}]}],
                                           "volumes": [{"name": "t", "emptyDir": {}}]}}}});
        assert_eq!(check(&object).unwrap(), Checked::Builtin);
    }

    #[test]
    fn an_unknown_field_is_named() {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "m"},
            "spec": {"selector": {}, "template": {"spec": {"containers": [
                {"name": "c", "imagee": "i"}]}}}});
        let err = check(&object).unwrap_err();
        assert!(
            err.contains(".spec.template.spec.containers[0].imagee"),
            "{err}"
        );
    }

    #[test]
    fn a_wrong_type_is_refused() {
        let object = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": "eighty"}]}});
        assert!(check(&object).is_err());
    }

    #[test]
    fn an_unknown_builtin_kind_is_an_error_and_a_foreign_kind_is_named() {
        let ingress = json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress"});
        assert!(check(&ingress).is_err());
        let monitor = json!({"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"});
        assert_eq!(
            check(&monitor).unwrap(),
            Checked::Foreign("monitoring.coreos.com/v1 ServiceMonitor".into())
        );
    }
}
