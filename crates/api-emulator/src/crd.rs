//! CustomResourceDefinitions: turning a CRD object into a served resource, and the status the
//! real apiserver gives an accepted CRD (so `await_condition(is_crd_established)` works).

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{ApiError, EmulatorError};
use crate::resources::{PrinterColumn, ResourceInfo, ScalePaths};

/// Reads every CRD in the `.yaml`/`.yml`/`.json` files of `dir` (multi-document YAML allowed;
/// documents of other kinds are skipped), in file-name order.
pub fn read_crd_dir(dir: &Path) -> Result<Vec<Value>, EmulatorError> {
    Ok(read_objects(dir)?
        .into_iter()
        .filter(|v| v.get("kind").and_then(Value::as_str) == Some("CustomResourceDefinition"))
        .collect())
}

/// Reads every object in `path`: one YAML or JSON file, or the `.yaml`/`.yml`/`.json` files
/// of a directory in file-name order (multi-document YAML allowed, empty documents skipped).
pub fn read_objects(path: &Path) -> Result<Vec<Value>, EmulatorError> {
    let io = |context: String| move |source| EmulatorError::Io { context, source };
    let paths = if path.is_dir() {
        let mut paths: Vec<_> = std::fs::read_dir(path)
            .map_err(io(format!("reading {}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                matches!(
                    p.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                )
            })
            .collect();
        paths.sort();
        paths
    } else {
        vec![path.to_path_buf()]
    };
    let mut objects = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
        objects.extend(parse_objects(&text, &path.display().to_string())?);
    }
    Ok(objects)
}

/// The objects of a multi-document YAML text (empty documents skipped); `context` names it
/// in errors.
pub fn parse_objects(text: &str, context: &str) -> Result<Vec<Value>, EmulatorError> {
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value =
            serde::Deserialize::deserialize(doc).map_err(|source| EmulatorError::Yaml {
                context: context.to_string(),
                source,
            })?;
        if value.is_object() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The resource a CRD defines, or 422 when the CRD is not acceptable.
pub fn resource_from_crd(crd: &Value) -> Result<ResourceInfo, ApiError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(("spec.group".into(), "Required value".into()));
    }
    if plural.is_empty() {
        causes.push(("spec.names.plural".into(), "Required value".into()));
    }
    if kind.is_empty() {
        causes.push(("spec.names.kind".into(), "Required value".into()));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    let storage = versions
        .iter()
        .find(|v| v["storage"].as_bool() == Some(true))
        .or_else(|| versions.first());
    if storage.is_none() {
        causes.push((
            "spec.versions".into(),
            "Invalid value: must have exactly one version marked as storage version".into(),
        ));
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            &causes,
        ));
    }
    let storage = storage.expect("checked above");
    let mut served: Vec<String> = vec![storage["name"].as_str().unwrap_or("v1").to_string()];
    for v in &versions {
        let vname = v["name"].as_str().unwrap_or_default().to_string();
        if v["served"].as_bool() != Some(false) && !served.contains(&vname) {
            served.push(vname);
        }
    }
    let strings = crate::meta::strings;
    let printer_columns = storage["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or_default().into(),
                    type_: c["type"].as_str().unwrap_or("string").into(),
                    json_path: c["jsonPath"].as_str().unwrap_or_default().into(),
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ResourceInfo {
        group: group.into(),
        versions: served,
        kind: kind.into(),
        plural: plural.into(),
        singular: names["singular"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| kind.to_lowercase()),
        namespaced: spec["scope"].as_str() != Some("Cluster"),
        short_names: strings(&names["shortNames"]),
        categories: strings(&names["categories"]),
        status_subresource: storage["subresources"].get("status").is_some(),
        has_generation: true,
        builtin: false,
        create_only: false,
        returns_deleted_object: true,
        scale: storage["subresources"].get("scale").map(|sc| ScalePaths {
            spec_replicas: sc["specReplicasPath"]
                .as_str()
                .unwrap_or(".spec.replicas")
                .into(),
            status_replicas: sc["statusReplicasPath"]
                .as_str()
                .unwrap_or(".status.replicas")
                .into(),
            label_selector: sc["labelSelectorPath"].as_str().map(String::from),
        }),
        printer_columns,
        schema: storage["schema"].get("openAPIV3Schema").cloned(),
    })
}

/// The status the apiserver writes on an accepted CRD.
pub fn accepted_status(crd: &Value, now: &str) -> Value {
    let storage = crd["spec"]["versions"]
        .as_array()
        .and_then(|vs| vs.iter().find(|v| v["storage"].as_bool() == Some(true)))
        .and_then(|v| v["name"].as_str())
        .unwrap_or("v1");
    let condition = |type_: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": "True", "lastTransitionTime": now,
            "reason": reason, "message": message,
        })
    };
    json!({
        "acceptedNames": crd["spec"]["names"],
        "conditions": [
            condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            condition("Established", "InitialNamesAccepted", "the initial names have been accepted"),
        ],
        "storedVersions": [storage],
    })
}
