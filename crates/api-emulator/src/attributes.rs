//! A request's authorisation attributes, worked out from its method, path and query as the
//! real server's RequestInfo does: verb (`get`/`list`/`watch`/…), namespace, API group,
//! resource, subresource and name, or a non-resource path.

use std::collections::HashMap;

use http::Method;

use crate::authn::UserInfo;
use crate::rbac::{Attributes, ResourceAttributes};

/// Subresources of a namespace that are not namespaced resources (`/namespaces/x/status`).
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The attributes of a request by `user`.
pub fn of_request(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    user: UserInfo,
) -> Attributes {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", group, _version, rest @ ..] if !rest.is_empty() => (*group, rest),
        _ => {
            return Attributes {
                user,
                verb: method.as_str().to_lowercase(),
                resource: None,
                path: path.to_string(),
            };
        }
    };
    let mut namespace = "";
    let mut parts = rest;
    if parts[0] == "namespaces" && parts.len() > 1 {
        namespace = parts[1];
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts = &parts[2..];
        }
    }
    let resource = parts[0];
    let name = parts.get(1).copied().unwrap_or_default();
    let subresource = parts.get(2).copied().unwrap_or_default();
    let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if name.is_empty() => "list",
        Method::GET | Method::HEAD => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if name.is_empty() => "deletecollection",
        Method::DELETE => "delete",
        _ => "",
    };
    let verb = if verb.is_empty() {
        method.as_str().to_lowercase()
    } else {
        verb.to_string()
    };
    Attributes {
        user,
        verb,
        resource: Some(ResourceAttributes {
            namespace: namespace.to_string(),
            group: group.to_string(),
            resource: resource.to_string(),
            subresource: subresource.to_string(),
            name: name.to_string(),
        }),
        path: path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: Method, path: &str, watch: bool) -> (String, Option<ResourceAttributes>) {
        let mut q = HashMap::new();
        if watch {
            q.insert("watch".to_string(), "true".to_string());
        }
        let a = of_request(&method, path, &q, UserInfo::anonymous());
        (a.verb, a.resource)
    }

    fn ra(ns: &str, group: &str, res: &str, sub: &str, name: &str) -> Option<ResourceAttributes> {
        Some(ResourceAttributes {
            namespace: ns.into(),
            group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            name: name.into(),
        })
    }

    #[test]
    fn paths_map_to_verbs_and_resources_as_the_real_request_info() {
        let cases = [
            (
                of(Method::GET, "/api/v1/namespaces/a/pods", false),
                ("list", ra("a", "", "pods", "", "")),
            ),
            (
                of(Method::GET, "/api/v1/pods", true),
                ("watch", ra("", "", "pods", "", "")),
            ),
            (
                of(Method::GET, "/api/v1/namespaces/a/pods/p/log", false),
                ("get", ra("a", "", "pods", "log", "p")),
            ),
            (
                of(
                    Method::POST,
                    "/api/v1/namespaces/a/serviceaccounts/s/token",
                    false,
                ),
                ("create", ra("a", "", "serviceaccounts", "token", "s")),
            ),
            (
                of(Method::GET, "/api/v1/namespaces/a", false),
                ("get", ra("a", "", "namespaces", "", "a")),
            ),
            (
                of(Method::PUT, "/api/v1/namespaces/a/finalize", false),
                ("update", ra("a", "", "namespaces", "finalize", "a")),
            ),
            (
                of(
                    Method::PATCH,
                    "/apis/apps/v1/namespaces/a/deployments/d/scale",
                    false,
                ),
                ("patch", ra("a", "apps", "deployments", "scale", "d")),
            ),
            (
                of(
                    Method::DELETE,
                    "/apis/rbac.authorization.k8s.io/v1/clusterroles",
                    false,
                ),
                (
                    "deletecollection",
                    ra("", "rbac.authorization.k8s.io", "clusterroles", "", ""),
                ),
            ),
            (of(Method::GET, "/apis/apps/v1", false), ("get", None)),
            (of(Method::GET, "/healthz", false), ("get", None)),
        ];
        for ((verb, res), (want_verb, want_res)) in cases {
            assert_eq!((verb.as_str(), res), (want_verb, want_res));
        }
    }
}
