//! Impersonation (`kubectl --as`, `--as-group`): the `Impersonate-User`/`-Group`/`-Uid`
//! headers switch the request's user when the requester may `impersonate` the users, groups
//! or ServiceAccounts named, as the real server's filter does.

use http::HeaderMap;

use crate::authn::UserInfo;
use crate::error::ApiError;
use crate::rbac::{self, Attributes, ResourceAttributes, Snapshot};

/// The user a request acts as: `user` itself when no impersonation header is present, the
/// impersonated user when `user` may impersonate it, else 403. `check` says whether RBAC
/// decides (else every authenticated user may).
pub fn resolve(
    store: &Snapshot,
    user: UserInfo,
    headers: &HeaderMap,
    check: bool,
) -> Result<UserInfo, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect()
    };
    let Some(target) = values("impersonate-user").into_iter().next() else {
        return Ok(user);
    };
    let groups = values("impersonate-group");
    let uid = values("impersonate-uid").into_iter().next();
    let mut wanted: Vec<ResourceAttributes> = Vec::new();
    let sa = target
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'));
    wanted.push(match sa {
        Some((ns, name)) => ResourceAttributes {
            namespace: ns.into(),
            resource: "serviceaccounts".into(),
            name: name.into(),
            ..Default::default()
        },
        None => ResourceAttributes {
            resource: "users".into(),
            name: target.clone(),
            ..Default::default()
        },
    });
    for g in &groups {
        wanted.push(ResourceAttributes {
            resource: "groups".into(),
            name: g.clone(),
            ..Default::default()
        });
    }
    if let Some(u) = &uid {
        wanted.push(ResourceAttributes {
            group: "authentication.k8s.io".into(),
            resource: "uids".into(),
            name: u.clone(),
            ..Default::default()
        });
    }
    if check {
        for r in wanted {
            let a = Attributes {
                user: user.clone(),
                verb: "impersonate".into(),
                resource: Some(r.clone()),
                path: String::new(),
            };
            if !rbac::allows(store, &a) {
                let why = rbac::forbidden_message(&a);
                return Err(ApiError::denied(&r.group, &r.resource, &r.name, &why));
            }
        }
    }
    let mut impersonated = match sa {
        Some((ns, name)) if groups.is_empty() => UserInfo::service_account(ns, name, ""),
        _ => UserInfo {
            username: target.clone(),
            uid: String::new(),
            groups,
        },
    };
    impersonated.uid = uid.unwrap_or(impersonated.uid);
    if target != "system:anonymous"
        && !impersonated
            .groups
            .iter()
            .any(|g| g == "system:authenticated")
    {
        impersonated.groups.push("system:authenticated".into());
    }
    Ok(impersonated)
}
