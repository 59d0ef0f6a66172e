//! A minimal OpenAPI v3 (`/openapi/v3` and one document per group-version): the PATCH
//! operation of every resource with its `fieldValidation` parameter and group-version-kind.
//!
//! `kubectl apply` and `create` read this to learn that the server validates fields itself;
//! without it they refuse to run unless given `--validate=false`. No schemas are served, so
//! kubectl computes strategic merge patches from its compiled-in types and JSON merge
//! patches for custom resources, as it does for any CRD without a schema.

use serde_json::{Value, json};

use crate::resources::Registry;

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: where each group-version's document is.
pub fn index(registry: &Registry) -> Value {
    let mut paths = serde_json::Map::new();
    for (group, versions) in registry.groups() {
        for v in versions {
            let p = gv_path(&group, &v);
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", registry_hash(registry))}),
            );
        }
    }
    json!({ "paths": paths })
}

/// A hash that changes when the set of resources changes, so that kubectl's cache of the
/// documents is refreshed after a CRD is added.
fn registry_hash(registry: &Registry) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for r in registry.all() {
        (&r.group, &r.plural, &r.versions, &r.kind).hash(&mut h);
    }
    format!("{:016X}", h.finish())
}

/// `/openapi/v3/api/v1` or `/openapi/v3/apis/{group}/{version}`.
pub fn document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = serde_json::Map::new();
    for r in registry
        .all()
        .filter(|r| r.group == group && r.versions.iter().any(|v| v == version))
    {
        let base = format!("/{}", gv_path(group, version));
        let item = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{base}/{}/{{name}}", r.plural)
        };
        let gvk = json!({"group": group, "version": version, "kind": r.kind});
        let query = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string"}});
        let op = json!({
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [query("dryRun"), query("fieldManager"), query("fieldValidation"), query("force")],
            "responses": {"200": {"description": "OK"}},
        });
        paths.insert(item, json!({"patch": op, "put": op}));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(collection, json!({"post": op}));
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (api-emulator)", "version": format!("v1.{}.0", crate::discovery::MINOR)},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
