//! Protobuf request bodies (`application/vnd.kubernetes.protobuf`), as client-go sends for
//! built-in kinds (`kubectl create namespace|secret|configmap|serviceaccount|token|role|
//! rolebinding|clusterrole|clusterrolebinding`, `kubectl auth can-i|whoami`):
//! the `k8s\0` envelope around a `runtime.Unknown`, whose `raw` bytes are the object in the
//! k8s-pb messages, turned into the JSON form the rest of the emulator works on.
//!
//! Only the kinds those commands send are decoded; any other kind answers 415, so a client
//! can tell it to send JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The four bytes before every Kubernetes protobuf message.
const MAGIC: &[u8] = b"k8s\0";

/// Whether a Content-Type is the Kubernetes protobuf encoding.
pub fn is_protobuf(content_type: &str) -> bool {
    content_type.starts_with("application/vnd.kubernetes.protobuf")
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("the protobuf body could not be decoded: {e}"))
}

/// Decodes a protobuf body into the object's JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("no k8s protobuf envelope"))?;
    let unknown = Unknown::decode(inner).map_err(bad)?;
    let tm = unknown.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    let mut object = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => namespace(&raw)?,
        ("v1", "Secret") => secret(&raw)?,
        ("v1", "ConfigMap") => config_map(&raw)?,
        ("v1", "ServiceAccount") => service_account(&raw)?,
        ("authentication.k8s.io/v1", "TokenRequest") => token_request(&raw)?,
        ("rbac.authorization.k8s.io/v1", "Role") => {
            let m = rbac::Role::decode(raw.as_slice()).map_err(bad)?;
            json!({"metadata": meta(m.metadata.unwrap_or_default()), "rules": rules(m.rules)})
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            let m = rbac::ClusterRole::decode(raw.as_slice()).map_err(bad)?;
            let mut o =
                json!({"metadata": meta(m.metadata.unwrap_or_default()), "rules": rules(m.rules)});
            if let Some(agg) = m.aggregation_rule {
                // Stored as sent; the emulator runs no aggregation controller.
                let selectors: Vec<Value> = agg
                    .cluster_role_selectors
                    .into_iter()
                    .map(|sel| {
                        let exprs: Vec<Value> = sel
                            .match_expressions
                            .into_iter()
                            .map(|e| json!({"key": e.key, "operator": e.operator, "values": e.values}))
                            .collect();
                        json!({"matchLabels": sel.match_labels, "matchExpressions": exprs})
                    })
                    .collect();
                o["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
            }
            o
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            let m = rbac::RoleBinding::decode(raw.as_slice()).map_err(bad)?;
            binding(m.metadata, m.subjects, m.role_ref)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            let m = rbac::ClusterRoleBinding::decode(raw.as_slice()).map_err(bad)?;
            binding(m.metadata, m.subjects, m.role_ref)
        }
        ("authentication.k8s.io/v1", "SelfSubjectReview") => {
            let m = authn::SelfSubjectReview::decode(raw.as_slice()).map_err(bad)?;
            json!({"metadata": meta(m.metadata.unwrap_or_default())})
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let m = authz::SelfSubjectAccessReview::decode(raw.as_slice()).map_err(bad)?;
            let spec = m.spec.unwrap_or_default();
            json!({
                "metadata": meta(m.metadata.unwrap_or_default()),
                "spec": access_spec(spec.resource_attributes, spec.non_resource_attributes),
            })
        }
        ("authorization.k8s.io/v1", "SubjectAccessReview") => {
            let m = authz::SubjectAccessReview::decode(raw.as_slice()).map_err(bad)?;
            let spec = m.spec.unwrap_or_default();
            let mut s = access_spec(spec.resource_attributes, spec.non_resource_attributes);
            put(&mut s, "user", spec.user.map(Value::from));
            put(&mut s, "uid", spec.uid.map(Value::from));
            if !spec.groups.is_empty() {
                s["groups"] = json!(spec.groups);
            }
            json!({"metadata": meta(m.metadata.unwrap_or_default()), "spec": s})
        }
        _ => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "protobuf bodies of {api_version} {kind} are not served; send JSON"
            )));
        }
    };
    object["apiVersion"] = json!(api_version);
    object["kind"] = json!(kind);
    Ok(object)
}

fn put(o: &mut Value, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        o[key] = v;
    }
}

fn string_map(m: BTreeMap<String, String>) -> Option<Value> {
    (!m.is_empty()).then(|| json!(m))
}

fn bytes_map(m: BTreeMap<String, Vec<u8>>) -> Option<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    (!m.is_empty()).then(|| {
        Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, json!(b64.encode(v))))
                .collect::<Map<_, _>>(),
        )
    })
}

/// The metadata fields a client sets on a create or update.
fn meta(m: ObjectMeta) -> Value {
    let mut o = json!({});
    put(&mut o, "name", m.name.map(Value::from));
    put(&mut o, "generateName", m.generate_name.map(Value::from));
    put(&mut o, "namespace", m.namespace.map(Value::from));
    put(&mut o, "uid", m.uid.map(Value::from));
    put(
        &mut o,
        "resourceVersion",
        m.resource_version.map(Value::from),
    );
    put(&mut o, "labels", string_map(m.labels));
    put(&mut o, "annotations", string_map(m.annotations));
    if !m.finalizers.is_empty() {
        o["finalizers"] = json!(m.finalizers);
    }
    if !m.owner_references.is_empty() {
        let refs: Vec<Value> = m
            .owner_references
            .into_iter()
            .map(|r| {
                let mut v = json!({
                    "apiVersion": r.api_version, "kind": r.kind, "name": r.name, "uid": r.uid,
                });
                put(&mut v, "controller", r.controller.map(Value::from));
                put(
                    &mut v,
                    "blockOwnerDeletion",
                    r.block_owner_deletion.map(Value::from),
                );
                v
            })
            .collect();
        o["ownerReferences"] = json!(refs);
    }
    o
}

fn namespace(raw: &[u8]) -> Result<Value, ApiError> {
    let m = core::Namespace::decode(raw).map_err(bad)?;
    let mut o = json!({"metadata": meta(m.metadata.unwrap_or_default())});
    if let Some(spec) = m.spec
        && !spec.finalizers.is_empty()
    {
        o["spec"] = json!({"finalizers": spec.finalizers});
    }
    Ok(o)
}

fn secret(raw: &[u8]) -> Result<Value, ApiError> {
    let m = core::Secret::decode(raw).map_err(bad)?;
    let mut o = json!({"metadata": meta(m.metadata.unwrap_or_default())});
    put(&mut o, "type", m.r#type.map(Value::from));
    put(&mut o, "immutable", m.immutable.map(Value::from));
    put(&mut o, "data", bytes_map(m.data));
    put(&mut o, "stringData", string_map(m.string_data));
    Ok(o)
}

fn config_map(raw: &[u8]) -> Result<Value, ApiError> {
    let m = core::ConfigMap::decode(raw).map_err(bad)?;
    let mut o = json!({"metadata": meta(m.metadata.unwrap_or_default())});
    put(&mut o, "immutable", m.immutable.map(Value::from));
    put(&mut o, "data", string_map(m.data));
    put(&mut o, "binaryData", bytes_map(m.binary_data));
    Ok(o)
}

fn service_account(raw: &[u8]) -> Result<Value, ApiError> {
    let m = core::ServiceAccount::decode(raw).map_err(bad)?;
    let mut o = json!({"metadata": meta(m.metadata.unwrap_or_default())});
    put(
        &mut o,
        "automountServiceAccountToken",
        m.automount_service_account_token.map(Value::from),
    );
    if !m.image_pull_secrets.is_empty() {
        let names: Vec<Value> = m
            .image_pull_secrets
            .into_iter()
            .map(|r| json!({"name": r.name}))
            .collect();
        o["imagePullSecrets"] = json!(names);
    }
    Ok(o)
}

fn token_request(raw: &[u8]) -> Result<Value, ApiError> {
    let m = authn::TokenRequest::decode(raw).map_err(bad)?;
    let spec = m.spec.unwrap_or_default();
    let mut s = json!({"audiences": spec.audiences});
    put(
        &mut s,
        "expirationSeconds",
        spec.expiration_seconds.map(Value::from),
    );
    if let Some(b) = spec.bound_object_ref {
        let mut r = json!({});
        put(&mut r, "kind", b.kind.map(Value::from));
        put(&mut r, "apiVersion", b.api_version.map(Value::from));
        put(&mut r, "name", b.name.map(Value::from));
        put(&mut r, "uid", b.u_id.map(Value::from));
        s["boundObjectRef"] = r;
    }
    Ok(json!({"metadata": meta(m.metadata.unwrap_or_default()), "spec": s}))
}

fn rules(rules: Vec<rbac::PolicyRule>) -> Value {
    let rules: Vec<Value> = rules
        .into_iter()
        .map(|r| {
            let mut o = json!({"verbs": r.verbs});
            for (k, v) in [
                ("apiGroups", r.api_groups),
                ("resources", r.resources),
                ("resourceNames", r.resource_names),
                ("nonResourceURLs", r.non_resource_ur_ls),
            ] {
                if !v.is_empty() {
                    o[k] = json!(v);
                }
            }
            o
        })
        .collect();
    json!(rules)
}

fn binding(
    metadata: Option<ObjectMeta>,
    subjects: Vec<rbac::Subject>,
    role_ref: Option<rbac::RoleRef>,
) -> Value {
    let subjects: Vec<Value> = subjects
        .into_iter()
        .map(|s| {
            let mut o = json!({});
            put(&mut o, "kind", s.kind.map(Value::from));
            put(&mut o, "apiGroup", s.api_group.map(Value::from));
            put(&mut o, "name", s.name.map(Value::from));
            put(&mut o, "namespace", s.namespace.map(Value::from));
            o
        })
        .collect();
    let r = role_ref.unwrap_or_default();
    let mut o = json!({
        "metadata": meta(metadata.unwrap_or_default()),
        "roleRef": {"apiGroup": r.api_group, "kind": r.kind, "name": r.name},
    });
    if !subjects.is_empty() {
        o["subjects"] = json!(subjects);
    }
    o
}

fn access_spec(
    ra: Option<authz::ResourceAttributes>,
    nra: Option<authz::NonResourceAttributes>,
) -> Value {
    let mut s = json!({});
    if let Some(a) = ra {
        let mut r = json!({});
        for (k, v) in [
            ("namespace", a.namespace),
            ("verb", a.verb),
            ("group", a.group),
            ("version", a.version),
            ("resource", a.resource),
            ("subresource", a.subresource),
            ("name", a.name),
        ] {
            put(&mut r, k, v.map(Value::from));
        }
        s["resourceAttributes"] = r;
    }
    if let Some(a) = nra {
        let mut r = json!({});
        put(&mut r, "path", a.path.map(Value::from));
        put(&mut r, "verb", a.verb.map(Value::from));
        s["nonResourceAttributes"] = r;
    }
    s
}

/// Encodes `object` (a built-in kind in JSON form) as a protobuf body, for tests that send
/// what client-go sends.
pub fn encode_config_map(object: &Value) -> Vec<u8> {
    let m = &object["metadata"];
    let cm = core::ConfigMap {
        metadata: Some(ObjectMeta {
            name: m["name"].as_str().map(String::from),
            namespace: m["namespace"].as_str().map(String::from),
            ..Default::default()
        }),
        data: object["data"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect(),
        ..Default::default()
    };
    let unknown = Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some("v1".into()),
            kind: Some("ConfigMap".into()),
        }),
        raw: Some(cm.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_map_round_trips_through_the_envelope() {
        let cm = json!({"metadata": {"name": "c", "namespace": "n"}, "data": {"a": "1"}});
        let decoded = decode(&encode_config_map(&cm)).unwrap();
        assert_eq!(
            decoded,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}, "data": {"a": "1"}})
        );
    }

    #[test]
    fn garbage_is_a_bad_request_not_a_crash() {
        assert_eq!(decode(b"k8s\0\xff\xff\xff").unwrap_err().code(), 400);
        assert_eq!(decode(b"{}").unwrap_err().code(), 400);
    }
}
