//! Least privilege, proven from the API server's audit log: every request the operator's
//! ServiceAccounts made was allowed, and every permission `deploy/` grants them was used.
//!
//! A permission is one verb on one resource (`group`, `resource[/subresource]`, optional
//! names) of one rule of one binding, in the binding's namespace or cluster-wide. It counts as
//! used when an allowed request of a subject of that binding matches it under the API
//! server's own rule matching ([`api_emulator::rbac::rule_allows`]). A permission the run
//! cannot exercise is listed with the reason in an [`Exemption`], so the report says so
//! rather than hiding it.

use api_emulator::UserInfo;
use api_emulator::rbac::{Attributes, ResourceAttributes, rule_allows};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;

/// A ServiceAccount, as bindings name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccount {
    /// The user name its tokens authenticate as.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }
}

/// One verb on one resource, granted to one ServiceAccount by one binding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// Who holds it.
    pub subject: ServiceAccount,
    /// The binding, as `Kind/name`.
    pub binding: String,
    /// Where it applies: the RoleBinding's namespace, or `None` for a ClusterRoleBinding.
    pub namespace: Option<String>,
    /// API group (empty: core).
    pub group: String,
    /// Resource, `resource/subresource` for a subresource.
    pub resource: String,
    /// The verb.
    pub verb: String,
    /// `resourceNames`, empty for any.
    pub names: Vec<String>,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} may {} {} ({group}) {} via {}",
            self.subject.username(),
            self.verb,
            self.resource,
            match &self.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "cluster-wide".to_owned(),
            },
            self.binding
        )?;
        if !self.names.is_empty() {
            write!(f, " (names {})", self.names.join(", "))?;
        }
        Ok(())
    }
}

impl Permission {
    /// Whether `request` is one this permission allows.
    pub fn allows(&self, request: &AuditRequest) -> bool {
        if request.user != self.subject.username() {
            return false;
        }
        if let Some(ns) = &self.namespace
            && *ns != request.namespace
        {
            return false;
        }
        let rule = json!({
            "apiGroups": [self.group],
            "resources": [self.resource],
            "verbs": [self.verb],
            "resourceNames": self.names,
        });
        rule_allows(&rule, &request.attributes())
    }
}

/// One request of the API server's audit log (`api-emulator serve --audit-log`, JSON lines).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRequest {
    /// The authenticated user.
    pub user: String,
    /// The verb.
    pub verb: String,
    /// API group of the resource.
    #[serde(default)]
    pub api_group: String,
    /// Resource (empty for non-resource paths).
    #[serde(default)]
    pub resource: String,
    /// Subresource.
    #[serde(default)]
    pub subresource: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Object name.
    #[serde(default)]
    pub name: String,
    /// URL path.
    #[serde(default)]
    pub path: String,
    /// Whether authorisation allowed it.
    pub allowed: bool,
    /// The status code answered.
    pub code: u16,
}

impl AuditRequest {
    /// Whether the API server refused it for want of a permission: denied outright, or a
    /// 403 from a check made while serving it (an apply that would create without `create`).
    pub fn refused(&self) -> bool {
        !self.allowed || self.code == 403
    }

    /// What the API server authorised to serve it: the request itself when allowed, and for
    /// a `patch` answered 201 (a server-side apply that created its object) also `create`,
    /// which the server checks before it creates. Nothing when refused.
    pub fn authorised(&self) -> Vec<AuditRequest> {
        if self.refused() {
            return Vec::new();
        }
        let mut out = vec![self.clone()];
        if self.verb == "patch" && self.code == 201 && self.subresource.is_empty() {
            out.push(AuditRequest {
                verb: "create".into(),
                ..self.clone()
            });
        }
        out
    }

    /// The request as the authoriser saw it.
    fn attributes(&self) -> Attributes {
        Attributes {
            user: UserInfo {
                username: self.user.clone(),
                uid: String::new(),
                groups: Vec::new(),
            },
            verb: self.verb.clone(),
            resource: (!self.resource.is_empty()).then(|| ResourceAttributes {
                namespace: self.namespace.clone(),
                group: self.api_group.clone(),
                resource: self.resource.clone(),
                subresource: self.subresource.clone(),
                name: self.name.clone(),
            }),
            path: self.path.clone(),
        }
    }
}

impl fmt::Display for AuditRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        };
        write!(
            f,
            "{} {} {resource} {}/{} ({}) -> {}",
            self.user, self.verb, self.namespace, self.name, self.path, self.code
        )
    }
}

/// Reads an audit log: one JSON object per line.
pub fn parse_audit_log(text: &str) -> Result<Vec<AuditRequest>, serde_json::Error> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(serde_json::from_str)
        .collect()
}

/// Why the RBAC manifests cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A binding names a role the manifests do not define.
    #[error("{binding} names {role}, which the manifests do not define")]
    MissingRole {
        /// The binding, `Kind/name`.
        binding: String,
        /// The role it names, `Kind/name`.
        role: String,
    },
}

/// Every permission the manifests grant to ServiceAccounts of `namespace` (the operator's
/// own; bindings to users and groups are not this check's business).
pub fn permissions(objects: &[Value], namespace: &str) -> Result<Vec<Permission>, ManifestError> {
    let mut roles: BTreeMap<(String, String, String), &Value> = BTreeMap::new();
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        if kind == "Role" || kind == "ClusterRole" {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .unwrap_or(if kind == "Role" { namespace } else { "" });
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            roles.insert((kind.to_owned(), ns.to_owned(), name.to_owned()), object);
        }
    }
    let mut granted = Vec::new();
    for binding in objects {
        let kind = binding["kind"].as_str().unwrap_or_default();
        let scope = match kind {
            "RoleBinding" => Some(
                binding["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(namespace)
                    .to_owned(),
            ),
            "ClusterRoleBinding" => None,
            _ => continue,
        };
        let binding_name = format!(
            "{kind}/{}",
            binding["metadata"]["name"].as_str().unwrap_or_default()
        );
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        let role_ns = if role_kind == "Role" {
            scope.clone().unwrap_or_default()
        } else {
            String::new()
        };
        let Some(role) = roles.get(&(role_kind.to_owned(), role_ns, role_name.to_owned())) else {
            return Err(ManifestError::MissingRole {
                binding: binding_name,
                role: format!("{role_kind}/{role_name}"),
            });
        };
        let subjects = binding["subjects"].as_array().into_iter().flatten();
        for subject in subjects {
            if subject["kind"] != "ServiceAccount" {
                continue;
            }
            let subject = ServiceAccount {
                namespace: subject["namespace"]
                    .as_str()
                    .or(scope.as_deref())
                    .unwrap_or(namespace)
                    .to_owned(),
                name: subject["name"].as_str().unwrap_or_default().to_owned(),
            };
            if subject.namespace != namespace {
                continue;
            }
            for rule in role["rules"].as_array().into_iter().flatten() {
                granted.extend(rule_permissions(rule, &subject, &binding_name, &scope));
            }
        }
    }
    granted.sort();
    granted.dedup();
    Ok(granted)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

fn rule_permissions(
    rule: &Value,
    subject: &ServiceAccount,
    binding: &str,
    scope: &Option<String>,
) -> Vec<Permission> {
    let names = strings(&rule["resourceNames"]);
    let mut out = Vec::new();
    for group in strings(&rule["apiGroups"]) {
        for resource in strings(&rule["resources"]) {
            for verb in strings(&rule["verbs"]) {
                out.push(Permission {
                    subject: subject.clone(),
                    binding: binding.to_owned(),
                    namespace: scope.clone(),
                    group: group.clone(),
                    resource: resource.clone(),
                    verb,
                    names: names.clone(),
                });
            }
        }
    }
    out
}

/// A permission the run does not exercise, and why that is acceptable.
#[derive(Debug, Clone)]
pub struct Exemption {
    /// The subject's name (ServiceAccount name).
    pub subject: &'static str,
    /// API group.
    pub group: &'static str,
    /// Resource (`resource/subresource`).
    pub resource: &'static str,
    /// Verb.
    pub verb: &'static str,
    /// Why the run cannot use it.
    pub why: &'static str,
}

impl Exemption {
    fn covers(&self, p: &Permission) -> bool {
        p.subject.name == self.subject
            && p.group == self.group
            && p.resource == self.resource
            && p.verb == self.verb
    }
}

/// The outcome: what was denied, what was never used, what was exempted.
#[derive(Debug, Default)]
pub struct Report {
    /// Requests of the operator's ServiceAccounts that were denied.
    pub denied: Vec<AuditRequest>,
    /// Permissions no allowed request used.
    pub unused: Vec<Permission>,
    /// Permissions not used, with the exemption that excuses them.
    pub exempted: Vec<(Permission, &'static str)>,
    /// How many requests of the operator's ServiceAccounts were checked.
    pub requests: usize,
}

impl Report {
    /// Least privilege holds: nothing denied, nothing unused.
    pub fn is_clean(&self) -> bool {
        self.denied.is_empty() && self.unused.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} requests by the operator's ServiceAccounts, {} denied, {} permissions never used, {} exempted",
            self.requests,
            self.denied.len(),
            self.unused.len(),
            self.exempted.len()
        )?;
        for request in &self.denied {
            writeln!(f, "  denied: {request}")?;
        }
        for permission in &self.unused {
            writeln!(f, "  unused: {permission}")?;
        }
        for (permission, why) in &self.exempted {
            writeln!(f, "  exempted: {permission}: {why}")?;
        }
        Ok(())
    }
}

/// Checks `requests` against `granted`: the operator's ServiceAccounts are the subjects of
/// `granted`.
pub fn check(
    granted: &[Permission],
    requests: &[AuditRequest],
    exemptions: &[Exemption],
) -> Report {
    let subjects: std::collections::BTreeSet<String> =
        granted.iter().map(|p| p.subject.username()).collect();
    let ours: Vec<&AuditRequest> = requests
        .iter()
        .filter(|r| subjects.contains(&r.user))
        .collect();
    let mut report = Report {
        requests: ours.len(),
        ..Report::default()
    };
    report.denied = ours
        .iter()
        .filter(|r| r.refused())
        .map(|r| (*r).clone())
        .collect();
    let used: Vec<AuditRequest> = ours.iter().flat_map(|r| r.authorised()).collect();
    for permission in granted {
        if used.iter().any(|r| permission.allows(r)) {
            continue;
        }
        match exemptions.iter().find(|e| e.covers(permission)) {
            Some(e) => report.exempted.push((permission.clone(), e.why)),
            None => report.unused.push(permission.clone()),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "ops";

    fn manifests() -> Vec<Value> {
        vec![
            json!({"kind": "ClusterRole", "metadata": {"name": "mgr"}, "rules": [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch"]},
                {"apiGroups": ["hsm.j5t.io"], "resources": ["hsmsecrets/status"], "verbs": ["patch"]},
            ]}),
            json!({"kind": "ClusterRoleBinding", "metadata": {"name": "mgr"},
                "roleRef": {"kind": "ClusterRole", "name": "mgr"},
                "subjects": [{"kind": "ServiceAccount", "name": "manager", "namespace": NS},
                             {"kind": "User", "name": "alice"}]}),
            json!({"kind": "Role", "metadata": {"name": "le", "namespace": NS}, "rules": [
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get"],
                 "resourceNames": ["the-lease"]},
            ]}),
            json!({"kind": "RoleBinding", "metadata": {"name": "le", "namespace": NS},
                "roleRef": {"kind": "Role", "name": "le"},
                "subjects": [{"kind": "ServiceAccount", "name": "manager"}]}),
        ]
    }

    fn request(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> AuditRequest {
        AuditRequest {
            user: "system:serviceaccount:ops:manager".into(),
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: "/".into(),
            allowed: true,
            code: 200,
        }
    }

    fn all_used() -> Vec<AuditRequest> {
        vec![
            request("get", "", "secrets", "", "apps", "db"),
            request("watch", "", "secrets", "", "", ""),
            request("patch", "hsm.j5t.io", "hsmsecrets", "status", "apps", "db"),
            request("get", "coordination.k8s.io", "leases", "", NS, "the-lease"),
        ]
    }

    #[test]
    fn bindings_expand_to_one_permission_per_verb_and_resource_of_service_accounts_only() {
        let granted = permissions(&manifests(), NS).unwrap();
        let shown: Vec<String> = granted.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 4, "{shown:#?}");
        assert!(
            shown
                .iter()
                .all(|p| p.starts_with("system:serviceaccount:ops:manager"))
        );
        assert!(shown.iter().any(|p| p.contains(
            "get leases (coordination.k8s.io) in namespace ops via RoleBinding/le (names the-lease)"
        )));
    }

    #[test]
    fn a_run_using_every_permission_and_denied_nothing_is_clean() {
        let granted = permissions(&manifests(), NS).unwrap();
        let report = check(&granted, &all_used(), &[]);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.requests, 4);
    }

    #[test]
    fn a_permission_never_used_is_reported_unless_exempted() {
        let granted = permissions(&manifests(), NS).unwrap();
        let mut requests = all_used();
        requests.retain(|r| r.verb != "watch");
        let report = check(&granted, &requests, &[]);
        assert_eq!(report.unused.len(), 1, "{report}");
        assert_eq!(report.unused[0].verb, "watch");
        let exemption = Exemption {
            subject: "manager",
            group: "",
            resource: "secrets",
            verb: "watch",
            why: "not exercised",
        };
        let report = check(&granted, &requests, &[exemption]);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.exempted.len(), 1);
    }

    #[test]
    fn a_denied_request_of_an_operator_account_is_reported_and_others_are_not() {
        let granted = permissions(&manifests(), NS).unwrap();
        let mut requests = all_used();
        let mut denied = request("delete", "", "pods", "", "apps", "x");
        denied.allowed = false;
        denied.code = 403;
        requests.push(denied);
        let mut stranger = request("delete", "", "pods", "", "apps", "x");
        stranger.user = "alice".into();
        stranger.allowed = false;
        requests.push(stranger);
        let report = check(&granted, &requests, &[]);
        assert_eq!(report.denied.len(), 1, "{report}");
        assert_eq!(report.requests, 5);
    }

    #[test]
    fn a_namespaced_grant_is_not_used_by_a_request_elsewhere_nor_by_another_name() {
        let granted = permissions(&manifests(), NS).unwrap();
        let mut requests = all_used();
        requests.retain(|r| r.resource != "leases");
        requests.push(request(
            "get",
            "coordination.k8s.io",
            "leases",
            "",
            "elsewhere",
            "the-lease",
        ));
        requests.push(request(
            "get",
            "coordination.k8s.io",
            "leases",
            "",
            NS,
            "another",
        ));
        let report = check(&granted, &requests, &[]);
        assert_eq!(report.unused.len(), 1, "{report}");
        assert_eq!(report.unused[0].resource, "leases");
    }

    #[test]
    fn an_apply_that_created_its_object_used_create_and_one_that_changed_it_did_not() {
        let mut objects = manifests();
        objects[0]["rules"][0]["verbs"] = json!(["get", "watch", "create", "patch"]);
        let granted = permissions(&objects, NS).unwrap();
        let mut requests = all_used();
        requests.push(request("patch", "", "secrets", "", "apps", "db"));
        let report = check(&granted, &requests, &[]);
        let unused: Vec<&str> = report.unused.iter().map(|p| p.verb.as_str()).collect();
        assert_eq!(unused, ["create"], "{report}");
        requests.last_mut().unwrap().code = 201;
        let report = check(&granted, &requests, &[]);
        assert!(report.is_clean(), "{report}");
    }

    #[test]
    fn a_403_from_a_check_inside_an_allowed_request_is_a_denial_that_uses_nothing() {
        let granted = permissions(&manifests(), NS).unwrap();
        let mut requests = all_used();
        let mut refused = request("patch", "hsm.j5t.io", "hsmsecrets", "status", "apps", "db");
        refused.code = 403;
        requests[2] = refused;
        let report = check(&granted, &requests, &[]);
        assert_eq!(report.denied.len(), 1, "{report}");
        assert_eq!(report.unused.len(), 1, "{report}");
        assert_eq!(report.unused[0].resource, "hsmsecrets/status");
    }

    #[test]
    fn a_binding_to_a_missing_role_is_an_error() {
        let mut objects = manifests();
        objects.remove(2);
        let error = permissions(&objects, NS).unwrap_err();
        assert!(error.to_string().contains("Role/le"), "{error}");
    }

    #[test]
    fn the_audit_log_format_of_the_emulator_parses() {
        let line = r#"{"user":"system:serviceaccount:ops:manager","groups":[],"verb":"get","apiGroup":"","resource":"secrets","subresource":"","namespace":"apps","name":"db","path":"/api/v1/namespaces/apps/secrets/db","allowed":true,"code":200}"#;
        let parsed = parse_audit_log(&format!("{line}\n\n{line}\n")).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0].name, "db");
    }
}
