//! The generated CRDs: snapshots, the files in deploy/crds, and the properties that keep
//! every manifest written for the Go operator applying unchanged.

use hsm_api::crdgen;
use serde_json::Value;
use std::path::Path;

#[test]
fn crd_snapshots() {
    for crd in crdgen::crds() {
        insta::assert_snapshot!(crd.spec.names.plural.clone(), crdgen::render(&crd));
    }
}

#[test]
fn deploy_crds_are_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for (name, expected) in crdgen::files() {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap_or_default();
        assert!(
            on_disk == expected,
            "deploy/crds/{name} is stale: run `cargo xtask crdgen` and commit the result"
        );
    }
}

fn schema(plural: &str) -> Value {
    let crd = crdgen::crds()
        .into_iter()
        .find(|c| c.spec.names.plural == plural)
        .unwrap();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

/// Every enum under `spec`, by path.
fn enums(node: &Value, path: &str, found: &mut Vec<String>) {
    if let Some(map) = node.as_object() {
        if map.contains_key("enum") {
            found.push(path.to_owned());
        }
        for (k, v) in map {
            enums(v, &format!("{path}/{k}"), found);
        }
    }
}

#[test]
fn spec_fields_are_as_permissive_as_the_go_crds() {
    for plural in ["hsmsecrets", "hsmdevices", "hsmpools"] {
        let s = schema(plural);
        let mut found = Vec::new();
        enums(&s["properties"]["spec"], "spec", &mut found);
        assert!(
            found.is_empty(),
            "{plural}: enums under spec reject Go manifests: {found:?}"
        );
        let required = s["required"].as_array().cloned().unwrap_or_default();
        assert!(
            !required.contains(&"spec".into()),
            "{plural}: spec must stay optional"
        );
    }
}

#[test]
fn defaults_are_in_the_schema() {
    let secret = schema("hsmsecrets");
    let spec = &secret["properties"]["spec"]["properties"];
    assert_eq!(spec["autoSync"]["default"], true);
    assert_eq!(spec["secretType"]["default"], "Opaque");
    assert_eq!(spec["syncInterval"]["default"], 30);
    assert_eq!(spec["parentRef"]["properties"]["group"]["default"], "apps");
    assert_eq!(
        spec["parentRef"]["properties"]["kind"]["default"],
        "Deployment"
    );
    let device = schema("hsmdevices");
    let spec = &device["properties"]["spec"]["properties"];
    assert_eq!(spec["maxDevices"]["default"], 10);
    assert_eq!(spec["pkcs11"]["properties"]["slotId"]["default"], 0);
    assert_eq!(
        spec["pkcs11"]["properties"]["autoProvision"]["default"],
        false
    );
    assert_eq!(
        spec["discovery"]["properties"]["autoDiscovery"]["default"],
        false
    );
    assert_eq!(spec["discovery"]["properties"]["usb"]["type"], "array");
    let mirroring = &spec["mirroring"]["properties"];
    assert_eq!(mirroring["policy"]["default"], "None");
    assert_eq!(mirroring["syncInterval"]["default"], 60);
    assert_eq!(mirroring["autoFailover"]["default"], true);
    assert_eq!(device["required"], Value::Null);
    let pool = schema("hsmpools");
    assert_eq!(
        pool["properties"]["spec"]["properties"]["gracePeriod"]["default"],
        "5m"
    );
    let status_required = &pool["properties"]["status"]["required"];
    for field in ["totalDevices", "availableDevices", "expectedPods"] {
        assert!(
            status_required.as_array().unwrap().contains(&field.into()),
            "{field}"
        );
    }
}

#[test]
fn names_columns_and_subresources() {
    let crds = crdgen::crds();
    let by = |p: &str| crds.iter().find(|c| c.spec.names.plural == p).unwrap();
    let secret = by("hsmsecrets");
    assert_eq!(secret.spec.group, "hsm.j5t.io");
    assert_eq!(secret.spec.scope, "Namespaced");
    assert_eq!(
        secret.spec.names.short_names.as_deref(),
        Some(&["hsmsec".to_owned()][..])
    );
    assert_eq!(
        secret.spec.names.list_kind.as_deref(),
        Some("HSMSecretList")
    );
    let v = &secret.spec.versions[0];
    assert_eq!(v.name, "v1alpha1");
    assert!(v.subresources.as_ref().unwrap().status.is_some());
    let columns: Vec<_> = v
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Secret Name", "string", ".spec.secretName"),
            ("Sync Status", "string", ".status.syncStatus"),
            ("Last Sync", "date", ".status.lastSyncTime"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
    let device = by("hsmdevices");
    assert_eq!(
        device.spec.names.short_names.as_deref(),
        Some(&["hsmdev".to_owned()][..])
    );
    assert!(
        device.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_none()
    );
    let pool = by("hsmpools");
    assert_eq!(
        pool.spec.names.short_names.as_deref(),
        Some(&["hsmpool".to_owned()][..])
    );
    assert_eq!(
        pool.spec.versions[0]
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .len(),
        6
    );
}
