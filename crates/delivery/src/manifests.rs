//! The `deploy/` manifests, rendered with `kubectl kustomize` (kubectl's built-in kustomize,
//! as a GitOps pipeline renders them). The tests check them against the schemas of their
//! kinds (`tests/schemas`), which keeps k8s-openapi out of xtask's build.

use crate::{Error, Result, output};
use serde::Deserialize;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// The kustomizations under `deploy/overlays`: those a user applies, and `e2e` (the base
/// with the end-to-end run's shorter timers).
pub const OVERLAYS: &[&str] = &[
    "default",
    "talos",
    "cert-manager",
    "monitoring",
    "vendor-library",
    "e2e",
];

/// `kubectl kustomize dir`.
pub fn render(dir: &Path) -> Result<String> {
    output(Command::new("kubectl").arg("kustomize").arg(dir))
}

/// The objects of a multi-document YAML stream (empty documents left out).
pub fn documents(yaml: &str) -> Result<Vec<Value>> {
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(document).map_err(Error::Yaml)?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_skips_empty_ones() {
        let objects = documents("---\na: 1\n---\n---\nb: 2\n").unwrap();
        assert_eq!(objects, [json!({"a": 1}), json!({"b": 2})]);
    }
}
