//! The resource registry: which group/version/resource paths exist, their kinds, scope and
//! subresources. Built-ins are the ones the operator uses; custom resources come from CRDs.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

/// A printer column of a CRD (`additionalPrinterColumns`), for `kubectl get` tables.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    /// Column header.
    pub name: String,
    /// OpenAPI type (`string`, `date`, `integer`, …).
    pub type_: String,
    /// Simple JSON path, e.g. `.spec.secretName`.
    pub json_path: String,
}

/// The fields behind a `/scale` subresource, as simple JSON paths (`.spec.replicas`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalePaths {
    /// Desired replicas.
    pub spec_replicas: String,
    /// Observed replicas.
    pub status_replicas: String,
    /// Where the selector string is, for custom resources; built-ins derive it from
    /// `spec.selector`.
    pub label_selector: Option<String>,
}

/// One served resource. Objects are stored once per (group, plural) whatever version they are
/// read through, as the real apiserver stores one version per resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group, empty for the core group.
    pub group: String,
    /// Served versions; the first is the storage and preferred version.
    pub versions: Vec<String>,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Plural resource name used in URLs, e.g. `secrets`.
    pub plural: String,
    /// Singular name, lower case.
    pub singular: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for kubectl, e.g. `hsmsec`.
    pub short_names: Vec<String>,
    /// Categories for kubectl, e.g. `all`.
    pub categories: Vec<String>,
    /// Whether `/status` is a subresource (then the main resource ignores status changes).
    pub status_subresource: bool,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Whether this is a built-in type (strategic merge patch is only served for those).
    pub builtin: bool,
    /// Whether only `create` is served (TokenReview, SubjectAccessReview).
    pub create_only: bool,
    /// Whether a delete returns the deleted object (else a `Status`), as the real server
    /// does per resource.
    pub returns_deleted_object: bool,
    /// Where the `/scale` subresource reads and writes, if the resource has one.
    pub scale: Option<ScalePaths>,
    /// CRD printer columns, empty for built-ins.
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD's `openAPIV3Schema` per version, for list types in server-side apply.
    pub schema: Option<Value>,
}

impl ResourceInfo {
    /// `group/version` (or `version` for the core group).
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// The storage version.
    pub fn storage_version(&self) -> &str {
        &self.versions[0]
    }

    /// The verbs listed in discovery.
    pub fn verbs(&self) -> Vec<&'static str> {
        if self.create_only {
            vec!["create"]
        } else {
            vec![
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

/// Key of a resource in the registry and the store: (group, plural).
pub type ResourceKey = (String, String);

/// The set of served resources.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: BTreeMap<ResourceKey, Arc<ResourceInfo>>,
}

struct Builtin {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    generation: bool,
    returns_object: bool,
}

const BUILTINS: &[Builtin] = &[
    b(
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        &["ns"],
        true,
        false,
        true,
    ),
    b(
        "",
        "v1",
        "Secret",
        "secrets",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        true,
        &["cm"],
        false,
        false,
        false,
    ),
    b("", "v1", "Pod", "pods", true, &["po"], true, true, true),
    b(
        "",
        "v1",
        "Service",
        "services",
        true,
        &["svc"],
        true,
        false,
        true,
    ),
    b(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        &["sa"],
        false,
        false,
        false,
    ),
    b(
        "",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        false,
        false,
        false,
    ),
    b("", "v1", "Node", "nodes", false, &["no"], true, false, true),
    b(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        &["ev"],
        false,
        false,
        false,
    ),
    b(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        &["deploy"],
        true,
        true,
        true,
    ),
    b(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        &["ds"],
        true,
        true,
        true,
    ),
    b(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
        &[],
        false,
        false,
        false,
    ),
    b(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
        &[],
        false,
        false,
        false,
    ),
    b(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        &["sts"],
        true,
        true,
        true,
    ),
    b(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        &["netpol"],
        false,
        true,
        false,
    ),
    b(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        &["pdb"],
        true,
        true,
        false,
    ),
    b(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        false,
        &[],
        false,
        true,
        false,
    ),
    b(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        &["crd", "crds"],
        true,
        true,
        true,
    ),
];

#[allow(clippy::too_many_arguments)]
const fn b(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    short: &'static [&'static str],
    status: bool,
    generation: bool,
    returns_object: bool,
) -> Builtin {
    Builtin {
        group,
        version,
        kind,
        plural,
        namespaced,
        short,
        status,
        generation,
        returns_object,
    }
}

impl Registry {
    /// The built-in resources the operator uses.
    pub fn with_builtins() -> Self {
        let mut registry = Registry::default();
        for bi in BUILTINS {
            let create_only = bi.plural.ends_with("reviews");
            registry.insert(ResourceInfo {
                group: bi.group.into(),
                versions: vec![bi.version.into()],
                kind: bi.kind.into(),
                plural: bi.plural.into(),
                singular: bi.kind.to_lowercase(),
                namespaced: bi.namespaced,
                short_names: bi.short.iter().map(|s| s.to_string()).collect(),
                categories: match bi.plural {
                    "pods" | "services" | "deployments" | "daemonsets" | "statefulsets" => {
                        vec!["all".into()]
                    }
                    _ => vec![],
                },
                status_subresource: bi.status,
                has_generation: bi.generation,
                builtin: true,
                create_only,
                returns_deleted_object: bi.returns_object,
                scale: matches!(bi.plural, "deployments" | "statefulsets").then(|| ScalePaths {
                    spec_replicas: ".spec.replicas".into(),
                    status_replicas: ".status.replicas".into(),
                    label_selector: None,
                }),
                printer_columns: vec![],
                schema: None,
            });
        }
        registry
    }

    /// Adds or replaces a resource.
    pub fn insert(&mut self, info: ResourceInfo) {
        self.resources
            .insert((info.group.clone(), info.plural.clone()), Arc::new(info));
    }

    /// Removes a resource (a deleted CRD).
    pub fn remove(&mut self, group: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .remove(&(group.to_string(), plural.to_string()))
    }

    /// The resource served at `group/version/plural`, if any.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .get(&(group.to_string(), plural.to_string()))
            .filter(|r| r.versions.iter().any(|v| v == version))
            .cloned()
    }

    /// The resource of `group` and `kind`, whatever version.
    pub fn by_kind(&self, group: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        self.resources
            .values()
            .find(|r| r.group == group && r.kind == kind)
            .cloned()
    }

    /// All resources.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.resources.values()
    }

    /// The groups with their versions, core group first, in a stable order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for r in self.resources.values() {
            let versions = groups.entry(r.group.clone()).or_default();
            for v in &r.versions {
                if !versions.contains(v) {
                    versions.push(v.clone());
                }
            }
        }
        groups.into_iter().collect()
    }
}

/// Splits `group/version` (or `v1`) into (group, version).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}
