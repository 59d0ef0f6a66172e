//! Admission: the checks every write passes before it is stored — body shape, kind and
//! apiVersion, namespace, finalizers while deleting, and custom resources against their
//! schema.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta;
use crate::request::Target;
use crate::resources::ResourceKey;
use crate::store::Store;

/// Refuses bodies whose shape the metadata rules cannot work on (the real server fails to
/// decode them: 400), and gives a body without metadata an empty one.
pub fn ensure_object(body: &mut Value) -> Result<(), ApiError> {
    let bad = |what: &str| Err(ApiError::BadRequest(what.to_string()));
    let Some(obj) = body.as_object_mut() else {
        return bad("the body must be a JSON object");
    };
    let meta = obj
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    if meta.is_null() {
        *meta = Value::Object(Default::default());
    }
    let Some(meta) = meta.as_object() else {
        return bad("metadata must be an object");
    };
    for key in ["labels", "annotations"] {
        match meta.get(key) {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) if m.values().all(Value::is_string) => {}
            Some(_) => return bad(&format!("metadata.{key} must be a map of strings")),
        }
    }
    match meta.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return bad("metadata.finalizers must be a list of strings"),
    }
    match meta.get("ownerReferences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_object) => {}
        Some(_) => return bad("metadata.ownerReferences must be a list of objects"),
    }
    Ok(())
}

/// The body's kind and apiVersion, when given, must be the resource's (400).
pub fn check_type(t: &Target, body: &Value) -> Result<(), ApiError> {
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && kind != t.res.kind
    {
        return Err(ApiError::BadRequest(format!(
            "the kind in the body ({kind}) does not match the kind of the resource ({})",
            t.res.kind
        )));
    }
    if let Some(av) = body.get("apiVersion").and_then(Value::as_str)
        && av != t.api_version()
    {
        return Err(ApiError::BadRequest(format!(
            "the API version in the data ({av}) does not match the expected API version ({})",
            t.api_version()
        )));
    }
    Ok(())
}

/// The namespace: the body's must match the URL's (400), must exist (404) and must not be
/// terminating (403). Cluster-scoped objects lose any namespace they carry.
pub fn check_namespace(store: &Store, t: &Target, body: &mut Value) -> Result<(), ApiError> {
    if !t.res.namespaced {
        if let Some(m) = body["metadata"].as_object_mut() {
            m.remove("namespace");
        }
        return Ok(());
    }
    match body["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() && ns != t.namespace => {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on \
                 the request"
                    .into(),
            ));
        }
        _ => body["metadata"]["namespace"] = json!(t.namespace),
    }
    let ns_key: ResourceKey = (String::new(), "namespaces".into());
    match store.get(&ns_key, "", &t.namespace) {
        None => Err(ApiError::not_found("", "namespaces", &t.namespace)),
        Some(ns) if !ns["metadata"]["deletionTimestamp"].is_null() => {
            Err(ApiError::Forbidden(format!(
                "{} \"{}\" is forbidden: unable to create new content in namespace {} because \
                 it is being terminated",
                t.res.plural,
                body["metadata"]["name"].as_str().unwrap_or_default(),
                t.namespace
            )))
        }
        Some(_) => Ok(()),
    }
}

/// Prunes, defaults and validates a custom resource against its CRD's schema; with
/// `fieldValidation=Strict`, fields the schema does not declare are a 400, as on the real
/// server (otherwise they are dropped silently: no Warning headers).
pub fn admit_custom(
    t: &Target,
    name: &str,
    object: &mut Value,
    strict: bool,
) -> Result<(), ApiError> {
    let Some(schema) = t.res.schema.as_ref().filter(|_| !t.res.builtin) else {
        return Ok(());
    };
    let admission = crate::structural::admit(schema, object);
    if strict && !admission.unknown.is_empty() {
        let fields: Vec<String> = admission
            .unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        return Err(ApiError::BadRequest(format!(
            "{kind} in version \"{v}\" cannot be handled as a {kind}: strict decoding error: {}",
            fields.join(", "),
            kind = t.res.kind,
            v = t.version,
        )));
    }
    if admission.causes.is_empty() {
        return Ok(());
    }
    let kind = format!("{}.{}", t.res.kind, t.res.group);
    Err(ApiError::invalid(
        &t.res.group,
        &kind,
        name,
        &admission.causes,
    ))
}

/// No finalizer may be added to an object being deleted (422).
pub fn check_finalizers(t: &Target, old: &Value, new: &Value) -> Result<(), ApiError> {
    if old["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let list = meta::finalizers;
    let before = list(old);
    let added: Vec<String> = list(new)
        .into_iter()
        .filter(|f| !before.contains(f))
        .collect();
    if added.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &t.res.group,
            &t.res.kind,
            &t.name,
            &[(
                "metadata.finalizers".into(),
                format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            )],
        ))
    }
}

/// An Event must be about an object of its own namespace (422), as the real server checks;
/// the Event is in its stored (core) shape here.
pub fn check_event(t: &Target, name: &str, event: &Value) -> Result<(), ApiError> {
    if !(t.key().0.is_empty() && t.key().1 == "events") {
        return Ok(());
    }
    let field = if crate::events::is_events_group(&t.res) {
        "regarding.namespace"
    } else {
        "involvedObject.namespace"
    };
    let ns = event["metadata"]["namespace"].as_str().unwrap_or_default();
    let about = event["involvedObject"]["namespace"]
        .as_str()
        .unwrap_or_default();
    let ok = if about.is_empty() {
        ns.is_empty() || ns == "default"
    } else {
        about == ns
    };
    if ok {
        return Ok(());
    }
    Err(ApiError::invalid(
        &t.res.group,
        &t.res.kind,
        name,
        &[(
            field.to_string(),
            format!("Invalid value: \"{about}\": does not match event.namespace"),
        )],
    ))
}

/// Fields the real server refuses to change on update (422): a Secret's `type`, a
/// Deployment's or DaemonSet's `spec.selector`, and the data of a ConfigMap or Secret marked
/// `immutable`.
pub fn check_immutable(t: &Target, old: &Value, new: &Value) -> Result<(), ApiError> {
    if !t.res.builtin {
        return Ok(());
    }
    let mut causes = Vec::new();
    let changed = |path: &[&str]| {
        let get = |v: &Value| path.iter().fold(v.clone(), |acc, k| acc[*k].clone());
        let (a, b) = (get(old), get(new));
        (a != b).then(|| (path.join("."), b))
    };
    let immutable = |(field, value): (String, Value)| {
        (field, format!("Invalid value: {value}: field is immutable"))
    };
    match (t.res.group.as_str(), t.res.plural.as_str()) {
        ("", "secrets") => causes.extend(changed(&["type"]).map(immutable)),
        ("apps", "deployments" | "daemonsets") => {
            causes.extend(changed(&["spec", "selector"]).map(immutable))
        }
        _ => {}
    }
    if matches!(t.res.plural.as_str(), "secrets" | "configmaps")
        && t.res.group.is_empty()
        && old["immutable"].as_bool() == Some(true)
    {
        for field in ["data", "binaryData"] {
            if let Some((f, _)) = changed(&[field]) {
                causes.push((
                    f,
                    "Forbidden: field is immutable when `immutable` is set".into(),
                ));
            }
        }
        if let Some((f, _)) = changed(&["immutable"]) {
            causes.push((
                f,
                "Forbidden: field is immutable when `immutable` is set".into(),
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(
            &t.res.group,
            &t.res.kind,
            &t.name,
            &causes,
        ))
    }
}
