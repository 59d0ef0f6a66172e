//! Patches other than apply: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! Kubernetes' strategic merge patch for built-in types.
//!
//! The first two are the `json-patch` crate's. Strategic merge is written here: k8s-openapi's
//! `DeepMerge` merges typed values with the same list semantics, but a patch cannot be
//! deserialised into a typed value (required fields are missing from patches) and `DeepMerge`
//! has no way to express `null` deletions or the `$patch`/`$retainKeys`/
//! `$deleteFromPrimitiveList` directives kubectl sends.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::schema::{ListType, list_type};

/// The patch formats, by request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/merge-patch+json`
    Merge,
    /// `application/json-patch+json`
    Json,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply)
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type`, if it is one.
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let ct = ct.split(';').next().unwrap_or_default().trim();
        match ct {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// Applies a merge, JSON or strategic merge patch (the request body) to `target`.
/// Server-side apply is not a patch of the object but a merge of configurations: see
/// [`crate::apply`].
pub fn patch_object(
    res: &ResourceInfo,
    type_: PatchType,
    target: &mut Value,
    body: &[u8],
) -> Result<(), ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid patch: {e}")))?;
    match type_ {
        PatchType::Merge => merge_patch(target, &patch),
        PatchType::Json => json_patch(target, &patch)?,
        PatchType::Strategic => strategic_merge(res, target, &patch)?,
        PatchType::Apply => {
            return Err(ApiError::BadRequest(
                "an applied configuration is merged by server-side apply, not patched".into(),
            ));
        }
    }
    Ok(())
}

/// Applies a JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// Applies a JSON patch. As on the real server (evanphx/json-patch v4): a `test` of a path
/// whose parent exists but whose last element does not succeeds when the expected value is
/// `null` and fails otherwise; a `test` under a missing parent fails. A failed patch is a 422.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
    let mut doc = target.clone();
    for op in ops.0 {
        if let json_patch::PatchOperation::Test(t) = &op
            && doc.pointer(t.path.as_str()).is_none()
        {
            let path = t.path.as_str();
            let parent = &path[..path.rfind('/').unwrap_or(0)];
            if doc.pointer(parent).is_none() {
                return Err(unprocessable(format!(
                    "test operation does not apply: is missing path: {path}"
                )));
            }
            if t.value.is_null() {
                continue;
            }
            return Err(unprocessable(format!(
                "testing value {path} failed: test failed"
            )));
        }
        json_patch::patch(&mut doc, std::slice::from_ref(&op))
            .map_err(|e| unprocessable(e.to_string()))?;
    }
    *target = doc;
    Ok(())
}

fn unprocessable(message: String) -> ApiError {
    ApiError::Invalid {
        message,
        details: Value::Null,
    }
}

/// Applies a strategic merge patch to a built-in object; custom resources get the real
/// server's 415.
pub fn strategic_merge(
    res: &ResourceInfo,
    target: &mut Value,
    patch: &Value,
) -> Result<(), ApiError> {
    if !res.builtin {
        return Err(ApiError::UnsupportedMediaType(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml"
                .into(),
        ));
    }
    let Value::Object(p) = patch else {
        return Err(ApiError::BadRequest(
            "strategic merge patch must be an object".into(),
        ));
    };
    smp_map(res, &mut Vec::new(), target, p)
}

fn smp_map(
    res: &ResourceInfo,
    names: &mut Vec<String>,
    target: &mut Value,
    patch: &Map<String, Value>,
) -> Result<(), ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut p = patch.clone();
            p.remove("$patch");
            *target = Value::Object(strip_directives(p));
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, v) in patch {
        if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                v.as_array(),
            ) {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        let t = target.as_object_mut().expect("made an object above");
        names.push(k.clone());
        match v {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(pm) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                smp_map(res, names, entry, pm)?;
                if entry.is_null() {
                    t.remove(k);
                }
            }
            Value::Array(items) => {
                let path: Vec<&str> = names.iter().map(String::as_str).collect();
                match list_type(res, &path) {
                    ListType::Map(keys) => {
                        let entry = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                        smp_list_map(res, names, entry, items, &keys[0])?;
                    }
                    ListType::Set => {
                        let entry = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                        if let Value::Array(list) = entry {
                            for item in items {
                                if !list.contains(item) {
                                    list.push(item.clone());
                                }
                            }
                        } else {
                            *entry = v.clone();
                        }
                    }
                    ListType::Atomic => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
        names.pop();
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys")
        && let Some(t) = target.as_object_mut()
    {
        t.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
    Ok(())
}

fn smp_list_map(
    res: &ResourceInfo,
    names: &mut Vec<String>,
    target: &mut Value,
    items: &[Value],
    key: &str,
) -> Result<(), ApiError> {
    if !target.is_array() {
        *target = Value::Array(vec![]);
    }
    let list = target.as_array_mut().expect("made an array above");
    // `[{"$patch": "replace"}, …]` replaces the whole list.
    if items
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *list = items
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    for item in items {
        let Some(obj) = item.as_object() else {
            list.push(item.clone());
            continue;
        };
        let Some(kv) = obj.get(key) else {
            return Err(ApiError::BadRequest(format!(
                "map: {item} does not contain declared merge key: {key}"
            )));
        };
        let pos = list.iter().position(|l| l.get(key) == Some(kv));
        if obj.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = pos {
                list.remove(i);
            }
            continue;
        }
        match pos {
            Some(i) => smp_map(res, names, &mut list[i], obj)?,
            None => list.push(Value::Object(strip_directives(obj.clone()))),
        }
    }
    Ok(())
}

fn strip_directives(mut m: Map<String, Value>) -> Map<String, Value> {
    m.retain(|k, _| !k.starts_with('$'));
    for v in m.values_mut() {
        if let Value::Object(inner) = v {
            *inner = strip_directives(std::mem::take(inner));
        }
    }
    m
}
