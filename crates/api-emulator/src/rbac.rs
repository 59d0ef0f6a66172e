//! The RBAC authoriser: the stored Roles, ClusterRoles and their bindings decide, with the
//! rules of the real `rbac.authorization.k8s.io` authoriser — verbs, apiGroups, resources
//! with `res/sub` subresources and `*/sub`, resourceNames, nonResourceURLs with a trailing
//! `*`, and `*` everywhere. `system:masters` is always allowed (the real server's privileged
//! group); a binding whose role does not exist grants nothing.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::authn::{MASTERS_GROUP, UserInfo};
use crate::resources::ResourceKey;
use crate::store::Store;

/// The API group of the RBAC kinds.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// What is being done to which resource, as the real server's RequestInfo.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceAttributes {
    /// Namespace (empty: cluster-scoped or all namespaces).
    pub namespace: String,
    /// API group (empty: core).
    pub group: String,
    /// Resource (plural).
    pub resource: String,
    /// Subresource (`status`, `scale`, `token`, `log`, …), empty for the main resource.
    pub subresource: String,
    /// Object name, empty for collections and creates.
    pub name: String,
}

/// One request to authorise.
#[derive(Debug, Clone, PartialEq)]
pub struct Attributes {
    /// Who.
    pub user: UserInfo,
    /// The verb: get, list, watch, create, update, patch, delete, deletecollection, or the
    /// lower-case HTTP method for non-resource paths.
    pub verb: String,
    /// The resource, or `None` for a non-resource path (`/healthz`, `/version`, `/api`).
    pub resource: Option<ResourceAttributes>,
    /// The URL path.
    pub path: String,
}

/// An authorisation decision with the real authoriser's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Whether the request may proceed.
    pub allowed: bool,
    /// `RBAC: allowed by ...` when allowed; empty when denied (as the real server).
    pub reason: String,
}

fn key(plural: &str) -> ResourceKey {
    (RBAC_GROUP.to_string(), plural.to_string())
}

/// A binding with its role looked up when the snapshot was taken.
struct Compiled {
    binding: Arc<Value>,
    /// The role; `None` when it does not exist (the binding grants nothing).
    role: Option<Arc<Value>>,
}

impl Compiled {
    /// Whether this binding (in `namespace`, empty for a ClusterRoleBinding) grants `a`.
    fn grant<'a>(&'a self, namespace: &'a str, a: &Attributes) -> Option<Grant<'a>> {
        let role = self.role.as_ref()?;
        let subject = self.binding["subjects"]
            .as_array()?
            .iter()
            .find(|s| subject_matches(s, namespace, &a.user))?;
        role["rules"]
            .as_array()?
            .iter()
            .any(|rule| rule_allows(rule, a))
            .then_some(Grant::Binding {
                binding: &self.binding,
                namespace,
                subject,
            })
    }
}

/// The RBAC objects of a store at one moment, each binding with its role resolved, so
/// that decisions run without the store's lock and without lookups. Rebuilt when an RBAC
/// object changes (see [`Store::rbac_generation`]).
#[derive(Default)]
pub struct Snapshot {
    cluster: Vec<Compiled>,
    namespaced: HashMap<String, Vec<Compiled>>,
}

impl Snapshot {
    /// The RBAC objects `store` holds now.
    pub fn of(store: &Store) -> Self {
        let compile = |binding: &Arc<Value>, namespace: &str| {
            let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
            let role = match binding["roleRef"]["kind"].as_str() {
                Some("ClusterRole") => store.get(&key("clusterroles"), "", name),
                Some("Role") if !namespace.is_empty() => store.get(&key("roles"), namespace, name),
                _ => None,
            };
            Compiled {
                binding: binding.clone(),
                role: role.cloned(),
            }
        };
        let cluster = store
            .list(&key("clusterrolebindings"), None)
            .map(|b| compile(b, ""))
            .collect();
        let mut namespaced: HashMap<String, Vec<Compiled>> = HashMap::new();
        for b in store.list(&key("rolebindings"), None) {
            let ns = b["metadata"]["namespace"].as_str().unwrap_or_default();
            namespaced
                .entry(ns.to_string())
                .or_default()
                .push(compile(b, ns));
        }
        Snapshot {
            cluster,
            namespaced,
        }
    }
}

/// Decides `a` over the RBAC objects of `snapshot`, with the real authoriser's reason.
pub fn authorize(snapshot: &Snapshot, a: &Attributes) -> Decision {
    match decide(snapshot, a) {
        Some(Grant::Privileged) => Decision {
            allowed: true,
            reason: String::new(),
        },
        Some(Grant::Binding {
            binding,
            namespace,
            subject,
        }) => Decision {
            allowed: true,
            reason: format!("RBAC: {}", explain(binding, namespace, subject)),
        },
        None => Decision {
            allowed: false,
            reason: String::new(),
        },
    }
}

/// Whether `a` is allowed (what request gating needs: no reason is worded).
pub fn allows(snapshot: &Snapshot, a: &Attributes) -> bool {
    decide(snapshot, a).is_some()
}

/// What granted a request.
enum Grant<'a> {
    /// `system:masters`.
    Privileged,
    /// A binding (in `namespace`, empty for a ClusterRoleBinding) and its matching subject.
    Binding {
        binding: &'a Value,
        namespace: &'a str,
        subject: &'a Value,
    },
}

fn decide<'a>(snapshot: &'a Snapshot, a: &'a Attributes) -> Option<Grant<'a>> {
    if a.user.groups.iter().any(|g| g == MASTERS_GROUP) {
        return Some(Grant::Privileged);
    }
    let cluster = snapshot.cluster.iter().find_map(|c| c.grant("", a));
    if cluster.is_some() {
        return cluster;
    }
    // A RoleBinding grants only resources in its namespace, never non-resource URLs.
    let r = a.resource.as_ref().filter(|r| !r.namespace.is_empty())?;
    snapshot
        .namespaced
        .get(&r.namespace)?
        .iter()
        .find_map(|c| c.grant(&r.namespace, a))
}

/// `allowed by RoleBinding "b/ns" of Role "r" to User "u"`.
fn explain(binding: &Value, namespace: &str, subject: &Value) -> String {
    let binding_name = binding["metadata"]["name"].as_str().unwrap_or_default();
    let binding_desc = if namespace.is_empty() {
        format!("ClusterRoleBinding {binding_name:?}")
    } else {
        format!("RoleBinding \"{binding_name}/{namespace}\"")
    };
    let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
    let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
    format!(
        "allowed by {binding_desc} of {role_kind} {role_name:?} to {}",
        describe_subject(subject, namespace)
    )
}

fn describe_subject(s: &Value, binding_ns: &str) -> String {
    let kind = s["kind"].as_str().unwrap_or_default();
    let name = s["name"].as_str().unwrap_or_default();
    if kind == "ServiceAccount" {
        let ns = s["namespace"].as_str().unwrap_or(binding_ns);
        format!("{kind} \"{ns}/{name}\"")
    } else {
        format!("{kind} {name:?}")
    }
}

/// Whether a binding's subject is `user`. A ServiceAccount subject without a namespace
/// means the binding's own.
pub fn subject_matches(s: &Value, binding_ns: &str, user: &UserInfo) -> bool {
    let name = s["name"].as_str().unwrap_or_default();
    match s["kind"].as_str() {
        Some("User") => user.username == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = s["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            !ns.is_empty()
                && user
                    .username
                    .strip_prefix("system:serviceaccount:")
                    .and_then(|rest| rest.strip_prefix(ns))
                    .and_then(|rest| rest.strip_prefix(':'))
                    == Some(name)
        }
        _ => false,
    }
}

fn strings(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn has(v: &Value, wanted: &str) -> bool {
    strings(v).any(|s| s == "*" || s == wanted)
}

/// Whether one PolicyRule allows `a`.
pub fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !has(&rule["verbs"], &a.verb) {
        return false;
    }
    match &a.resource {
        Some(r) => {
            has(&rule["apiGroups"], &r.group)
                && resource_matches(&rule["resources"], r)
                && name_matches(&rule["resourceNames"], &r.name)
        }
        None => strings(&rule["nonResourceURLs"]).any(|u| url_matches(u, &a.path)),
    }
}

fn resource_matches(resources: &Value, r: &ResourceAttributes) -> bool {
    strings(resources).any(|res| {
        if res == "*" {
            return true;
        }
        if r.subresource.is_empty() {
            return res == r.resource;
        }
        // `res/sub` or `*/sub`.
        res.split_once('/')
            .is_some_and(|(main, sub)| sub == r.subresource && (main == "*" || main == r.resource))
    })
}

fn name_matches(names: &Value, name: &str) -> bool {
    let mut listed = strings(names).peekable();
    listed.peek().is_none() || listed.any(|n| n == name)
}

fn url_matches(rule: &str, path: &str) -> bool {
    rule == "*"
        || rule == path
        || rule
            .strip_suffix('*')
            .is_some_and(|prefix| path.starts_with(prefix))
}

/// The real server's 403 message for a denied request:
/// `User "u" cannot get resource "pods/log" in API group "" in the namespace "ns"`.
pub fn forbidden_message(a: &Attributes) -> String {
    let user = &a.user.username;
    let Some(r) = &a.resource else {
        return format!("User {user:?} cannot {} path {:?}", a.verb, a.path);
    };
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let scope = if r.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", r.namespace)
    };
    format!(
        "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        a.verb, r.group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::service_account("ns", "sa", "u"),
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                namespace: "ns".into(),
                group: group.into(),
                resource: resource.into(),
                subresource: sub.into(),
                name: name.into(),
            }),
            path: String::new(),
        }
    }

    #[test]
    fn subresources_need_their_own_rule_or_a_star() {
        let rule = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]});
        assert!(rule_allows(&rule, &attrs("get", "", "pods", "", "p")));
        assert!(!rule_allows(&rule, &attrs("get", "", "pods", "log", "p")));
        let sub = json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]});
        assert!(rule_allows(&sub, &attrs("get", "", "pods", "log", "p")));
        assert!(!rule_allows(&sub, &attrs("get", "", "pods", "", "p")));
        let star = json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]});
        assert!(rule_allows(
            &star,
            &attrs("delete", "apps", "deployments", "scale", "d")
        ));
    }

    #[test]
    fn resource_names_restrict_to_named_objects() {
        let rule = json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"], "resourceNames": ["a"]});
        assert!(rule_allows(&rule, &attrs("get", "", "secrets", "", "a")));
        assert!(!rule_allows(&rule, &attrs("get", "", "secrets", "", "b")));
        assert!(!rule_allows(&rule, &attrs("list", "", "secrets", "", "")));
    }

    #[test]
    fn non_resource_urls_match_exactly_or_by_prefix() {
        let rule = json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/apis/*"]});
        let mut a = attrs("get", "", "", "", "");
        a.resource = None;
        for (path, ok) in [
            ("/healthz", true),
            ("/healthz/x", false),
            ("/apis/apps", true),
        ] {
            a.path = path.into();
            assert_eq!(rule_allows(&rule, &a), ok, "{path}");
        }
        let resource_rule = json!({"verbs": ["get"], "apiGroups": ["*"], "resources": ["*"]});
        a.path = "/healthz".into();
        assert!(!rule_allows(&resource_rule, &a));
    }

    #[test]
    fn the_forbidden_message_has_the_real_shape() {
        let a = attrs("get", "", "pods", "log", "p");
        assert_eq!(
            forbidden_message(&a),
            "User \"system:serviceaccount:ns:sa\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"ns\""
        );
    }
}
