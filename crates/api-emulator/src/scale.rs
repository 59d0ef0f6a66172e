//! The `/scale` subresource (Deployments, and custom resources whose CRD declares one): an
//! `autoscaling/v1` Scale view of the replicas, for `kubectl scale` and autoscalers.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::ops;
use crate::patch::{self, PatchType};
use crate::request::{Target, WriteOptions};
use crate::resources::ScalePaths;
use crate::store::Store;

fn paths(t: &Target) -> Result<&ScalePaths, ApiError> {
    t.res.scale.as_ref().ok_or_else(|| ApiError::NotFound {
        message: "the server could not find the requested resource".into(),
        details: json!({}),
    })
}

fn lookup<'a>(o: &'a Value, path: &str) -> &'a Value {
    path.trim_start_matches('.')
        .split('.')
        .fold(o, |cur, seg| &cur[seg])
}

/// `matchLabels` as a selector string (`a=b,c=d`).
fn selector_string(selector: &Value) -> String {
    selector["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn scale_of(t: &Target, paths: &ScalePaths, object: &Value) -> Value {
    let m = &object["metadata"];
    let selector = match &paths.label_selector {
        Some(p) => lookup(object, p).as_str().unwrap_or_default().to_string(),
        None => selector_string(&object["spec"]["selector"]),
    };
    let mut scale = json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": lookup(object, &paths.spec_replicas).as_i64().unwrap_or(0)},
        "status": {
            "replicas": lookup(object, &paths.status_replicas).as_i64().unwrap_or(0),
            "selector": selector,
        },
    });
    if !t.res.namespaced
        && let Some(meta) = scale["metadata"].as_object_mut()
    {
        meta.remove("namespace");
    }
    scale
}

/// Serves one request to `/scale`: GET, PUT, or PATCH (merge, JSON, strategic as merge).
pub fn serve(
    store: &mut Store,
    t: &Target,
    method: &http::Method,
    content_type: &str,
    body: &[u8],
    o: &WriteOptions,
) -> Result<Value, ApiError> {
    match *method {
        http::Method::GET => get(store, t),
        http::Method::PUT => write(store, t, None, body, o),
        http::Method::PATCH => {
            let pt = PatchType::from_content_type(content_type)
                .filter(|p| *p != PatchType::Apply)
                .ok_or_else(|| {
                    ApiError::UnsupportedMediaType(format!(
                        "{content_type} is not served for /scale"
                    ))
                })?;
            write(store, t, Some(pt), body, o)
        }
        _ => Err(ApiError::MethodNotAllowed(
            "the server does not allow this method on the requested resource".into(),
        )),
    }
}

/// GET `/scale`.
pub fn get(store: &Store, t: &Target) -> Result<Value, ApiError> {
    let paths = paths(t)?;
    let object = ops::get(store, t)?;
    Ok(scale_of(t, paths, &object))
}

/// PUT (a whole Scale) or PATCH (merge or JSON patch of the Scale) `/scale`: the desired
/// replicas are written to the object, with the Scale's resourceVersion as a precondition.
pub fn write(
    store: &mut Store,
    t: &Target,
    patch_type: Option<PatchType>,
    body: &[u8],
    o: &WriteOptions,
) -> Result<Value, ApiError> {
    let paths = paths(t)?;
    let object = ops::get(store, t)?;
    let current = scale_of(t, paths, &object);
    let wanted = match patch_type {
        None => serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("the body could not be decoded: {e}")))?,
        Some(PatchType::Strategic) => {
            let mut s = current.clone();
            let p: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("invalid patch: {e}")))?;
            patch::merge_patch(&mut s, &p);
            s
        }
        Some(pt) => {
            let mut s = current.clone();
            patch::patch_object(&t.res, pt, &mut s, body)?;
            s
        }
    };
    if let Some(rv) = wanted["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != object["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::stale(&t.res.group, &t.res.plural, &t.name));
    }
    let Some(replicas) = wanted["spec"]["replicas"].as_i64().filter(|r| *r >= 0) else {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            &t.name,
            &[(
                "spec.replicas".into(),
                "Invalid value: must be a non-negative integer".into(),
            )],
        ));
    };
    let mut updated = object;
    let mut cur = &mut updated;
    let segs: Vec<&str> = paths
        .spec_replicas
        .trim_start_matches('.')
        .split('.')
        .collect();
    for seg in &segs[..segs.len() - 1] {
        cur = &mut cur[*seg];
    }
    cur[segs[segs.len() - 1]] = json!(replicas);
    let stored = ops::update(store, t, updated, o)?;
    Ok(scale_of(t, paths, &stored))
}
