//! How a list field merges: atomically, as a set, or as a map keyed by some of its items'
//! fields. Strategic merge patch and server-side apply both need this, and the real server
//! takes it from Go struct tags (built-ins) or `x-kubernetes-list-type` (custom resources).

use serde_json::Value;

use crate::resources::ResourceInfo;

/// The merge semantics of one list field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole.
    Atomic,
    /// A set of scalars: merged by union.
    Set,
    /// Items are identified by these fields (the first is the strategic-merge key).
    Map(Vec<String>),
}

/// The list type of the field at `path` (field names from the object's root, list positions
/// left out) of a `res` object.
pub fn list_type(res: &ResourceInfo, path: &[&str]) -> ListType {
    match path {
        ["metadata", "finalizers"] => return ListType::Set,
        ["metadata", "ownerReferences"] => return map(&["uid"]),
        ["metadata", ..] => return ListType::Atomic,
        _ => {}
    }
    if res.builtin {
        builtin_list_type(res, path)
    } else {
        res.schema
            .as_ref()
            .map(|s| crd_list_type(s, path))
            .unwrap_or(ListType::Atomic)
    }
}

fn builtin_list_type(res: &ResourceInfo, path: &[&str]) -> ListType {
    let Some(last) = path.last() else {
        return ListType::Atomic;
    };
    let in_container = path[..path.len() - 1]
        .iter()
        .any(|p| matches!(*p, "containers" | "initContainers" | "ephemeralContainers"));
    match *last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => map(&["name"]),
        "volumeMounts" => map(&["mountPath"]),
        "volumeDevices" => map(&["devicePath"]),
        "ports" if in_container => map(&["containerPort", "protocol"]),
        "ports" if res.plural == "services" => map(&["port", "protocol"]),
        "conditions" => map(&["type"]),
        // Tolerations, args, command, … are atomic on the real server.
        _ => ListType::Atomic,
    }
}

/// Walks a CRD's openAPIV3Schema to the field and reads `x-kubernetes-list-type`.
fn crd_list_type(schema: &Value, path: &[&str]) -> ListType {
    let mut node = schema;
    for field in path {
        if node["type"].as_str() == Some("array") {
            node = &node["items"];
        }
        node = match node["properties"].get(*field) {
            Some(n) => n,
            None => return ListType::Atomic,
        };
    }
    match node["x-kubernetes-list-type"].as_str() {
        Some("set") => ListType::Set,
        Some("map") => {
            let keys: Vec<String> = node["x-kubernetes-list-map-keys"]
                .as_array()
                .map(|ks| {
                    ks.iter()
                        .filter_map(|k| k.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if keys.is_empty() {
                ListType::Atomic
            } else {
                ListType::Map(keys)
            }
        }
        _ => ListType::Atomic,
    }
}

fn map(keys: &[&str]) -> ListType {
    ListType::Map(keys.iter().map(|k| k.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn crd_resource() -> ResourceInfo {
        let crd = json!({
            "metadata": {"name": "things.example.com"},
            "spec": {
                "group": "example.com", "scope": "Namespaced",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {"type": "object", "properties": {
                        "ports": {"type": "array", "x-kubernetes-list-type": "map",
                                  "x-kubernetes-list-map-keys": ["port", "protocol"],
                                  "items": {"type": "object", "properties": {
                                      "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
                                  }}},
                        "args": {"type": "array", "items": {"type": "string"}},
                    }}},
                }}}],
            },
        });
        crate::crd::resource_from_crd(&crd).unwrap()
    }

    #[rstest]
    #[case(&["spec", "ports"], map(&["port", "protocol"]))]
    #[case(&["spec", "ports", "tags"], ListType::Set)]
    #[case(&["spec", "args"], ListType::Atomic)]
    #[case(&["metadata", "finalizers"], ListType::Set)]
    #[case(&["metadata", "ownerReferences"], map(&["uid"]))]
    fn custom_resource_list_types_come_from_the_schema(
        #[case] path: &[&str],
        #[case] expected: ListType,
    ) {
        assert_eq!(list_type(&crd_resource(), path), expected);
    }

    #[rstest]
    #[case("deployments", &["spec", "template", "spec", "containers"], map(&["name"]))]
    #[case("deployments", &["spec", "template", "spec", "containers", "ports"], map(&["containerPort", "protocol"]))]
    #[case("services", &["spec", "ports"], map(&["port", "protocol"]))]
    #[case("deployments", &["spec", "template", "spec", "tolerations"], ListType::Atomic)]
    #[case("deployments", &["spec", "template", "spec", "containers", "args"], ListType::Atomic)]
    fn built_in_list_types(
        #[case] plural: &str,
        #[case] path: &[&str],
        #[case] expected: ListType,
    ) {
        let registry = crate::resources::Registry::with_builtins();
        let res = registry.all().find(|r| r.plural == plural).unwrap();
        assert_eq!(list_type(res, path), expected);
    }
}
