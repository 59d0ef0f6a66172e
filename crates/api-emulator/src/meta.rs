//! Object metadata rules: names, generated names, uid, timestamps, generation, and the
//! per-kind defaults the real apiserver applies that clients depend on.

use base64::Engine as _;
use rand::Rng as _;
use serde_json::{Map, Value, json};

use crate::error::ApiError;
use crate::resources::ResourceInfo;

/// The strings of a JSON array (empty when absent or not an array).
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// An object's `metadata.finalizers`.
pub fn finalizers(object: &Value) -> Vec<String> {
    strings(&object["metadata"]["finalizers"])
}

/// Now, as the apiserver writes timestamps (RFC 3339, seconds, `Z`).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Five characters of the apiserver's generateName alphabet (no vowels, no look-alikes).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Validates `metadata.name`: a DNS-1123 label for namespaces, a DNS-1123 subdomain
/// otherwise (the rule of nearly every resource).
pub fn validate_name(res: &ResourceInfo, name: &str) -> Result<(), ApiError> {
    let label = res.plural == "namespaces";
    // RBAC objects are named by path segments (`system:basic-user`), as on the real server.
    let path_segment = res.group == "rbac.authorization.k8s.io";
    let problem = if name.is_empty() {
        Some("Required value: name or generateName is required".to_string())
    } else if path_segment {
        (name == "." || name == ".." || name.contains('/') || name.contains('%')).then(|| {
            format!(
                "Invalid value: \"{name}\": may not be '.' or '..' and may not contain '/' or '%'"
            )
        })
    } else if label && !is_dns_label(name) {
        Some(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case \
             alphanumeric characters or '-', and must start and end with an alphanumeric character"
        ))
    } else if !label && !is_dns_subdomain(name) {
        Some(format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower \
             case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character"
        ))
    } else {
        None
    };
    match problem {
        None => Ok(()),
        Some(p) => Err(ApiError::invalid(
            &res.group,
            &res.kind,
            name,
            &[("metadata.name".into(), p)],
        )),
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Validates label keys and values, as every write does.
pub fn validate_labels(res: &ResourceInfo, name: &str, object: &Value) -> Result<(), ApiError> {
    let Some(labels) = object["metadata"]["labels"].as_object() else {
        return Ok(());
    };
    let mut causes = Vec::new();
    for (k, v) in labels {
        let key_name = k.rsplit('/').next().unwrap_or(k);
        let ok_key = !key_name.is_empty() && key_name.len() <= 63 && is_label_value(key_name);
        if !ok_key {
            causes.push((
                "metadata.labels".to_string(),
                format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'"),
            ));
        }
        match v.as_str() {
            Some(s) if s.is_empty() || (s.len() <= 63 && is_label_value(s)) => {}
            _ => causes.push((
                "metadata.labels".to_string(),
                format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"),
            )),
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&res.group, &res.kind, name, &causes))
    }
}

/// Service defaults: type ClusterIP with an allocated address (from 10.96.0.0/12, derived from
/// the uid), single-stack IPv4, ports TCP with targetPort = port.
fn default_service(object: &mut Value, creating: bool) {
    let uid = object["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let type_ = spec
        .entry("type")
        .or_insert(json!("ClusterIP"))
        .as_str()
        .unwrap_or("ClusterIP")
        .to_string();
    spec.entry("sessionAffinity").or_insert(json!("None"));
    if type_ != "ExternalName" {
        spec.entry("internalTrafficPolicy")
            .or_insert(json!("Cluster"));
        if creating
            && spec
                .get("clusterIP")
                .is_none_or(|ip| ip.as_str() == Some(""))
        {
            let b = uuid::Uuid::parse_str(&uid)
                .map(|u| *u.as_bytes())
                .unwrap_or_default();
            let ip = format!("10.{}.{}.{}", 96 + (b[0] & 0x0f), b[1], 1 + b[2] % 254);
            spec.insert("clusterIP".into(), json!(ip));
        }
        if let Some(ip) = spec.get("clusterIP").cloned() {
            spec.entry("clusterIPs").or_insert(json!([ip]));
        }
        spec.entry("ipFamilies").or_insert(json!(["IPv4"]));
        spec.entry("ipFamilyPolicy").or_insert(json!("SingleStack"));
    }
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            p.entry("protocol").or_insert(json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                p.entry("targetPort").or_insert(port);
            }
        }
    }
}

/// Values the server allocated that an update may leave out and may not change (a
/// Service's cluster addresses), carried over from the stored object.
pub fn carry_allocated(res: &ResourceInfo, old: &Value, new: &mut Value) {
    if !(res.builtin && res.group.is_empty() && res.plural == "services") {
        return;
    }
    for field in ["clusterIP", "clusterIPs"] {
        if new["spec"].get(field).is_none()
            && let Some(v) = old["spec"].get(field)
            && let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.insert(field.into(), v.clone());
        }
    }
}

/// Validates ownerReferences: apiVersion, kind, name and uid are required, and at most one
/// may be the controller.
pub fn validate_owner_references(
    res: &ResourceInfo,
    name: &str,
    object: &Value,
) -> Result<(), ApiError> {
    let Some(refs) = object["metadata"]["ownerReferences"].as_array() else {
        return Ok(());
    };
    let mut causes = Vec::new();
    for r in refs {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if r[field].as_str().is_none_or(str::is_empty) {
                causes.push((
                    format!("metadata.ownerReferences.{field}"),
                    format!("Invalid value: \"\": {field} must not be empty"),
                ));
            }
        }
    }
    if refs
        .iter()
        .filter(|r| r["controller"].as_bool() == Some(true))
        .count()
        > 1
    {
        causes.push((
            "metadata.ownerReferences".into(),
            "Invalid value: []: Only one reference can have Controller set to true".into(),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(&res.group, &res.kind, name, &causes))
    }
}

fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    b.iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// The part of an object whose change bumps `generation`: everything but metadata, and but
/// status when status is a subresource (a custom resource without one bumps on status too).
pub fn spec_part(res: &ResourceInfo, object: &Value) -> Map<String, Value> {
    let mut rest = object.as_object().cloned().unwrap_or_default();
    for k in ["metadata", "apiVersion", "kind"] {
        rest.remove(k);
    }
    if res.status_subresource || res.builtin {
        rest.remove("status");
    }
    rest
}

/// Per-kind defaults applied on every write, as the real apiserver's defaulting and
/// strategies do for the fields clients read back.
pub fn apply_defaults(res: &ResourceInfo, object: &mut Value, creating: bool) {
    if !res.builtin {
        return;
    }
    match (res.group.as_str(), res.plural.as_str()) {
        ("", "secrets") => {
            if object.get("type").is_none_or(|t| t.as_str() == Some("")) {
                object["type"] = json!("Opaque");
            }
            // stringData is write-only: merged into data, never stored.
            if let Some(Value::Object(sd)) =
                object.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                if !object["data"].is_object() {
                    object["data"] = json!({});
                }
                for (k, v) in sd {
                    let s = v.as_str().unwrap_or_default();
                    object["data"][k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
                }
            }
        }
        ("", "namespaces") => {
            let name = object["metadata"]["name"].clone();
            object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            if creating {
                object["spec"] = json!({"finalizers": ["kubernetes"]});
                object["status"] = json!({"phase": "Active"});
            }
        }
        ("", "services") => default_service(object, creating),
        ("", "pods") if creating => {
            object["status"] = json!({"phase": "Pending"});
        }
        ("apps", "deployments" | "daemonsets") => {
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
                && res.plural == "deployments"
            {
                spec.entry("replicas").or_insert(json!(1));
            }
        }
        _ => {}
    }
}
