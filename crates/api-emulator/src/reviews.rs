//! The review resources, answered for real: TokenReview from the authenticator,
//! SubjectAccessReview, LocalSubjectAccessReview and SelfSubjectAccessReview from the RBAC
//! authoriser, SelfSubjectReview with the requester's identity (`kubectl auth whoami`). A
//! test may still override access decisions with [`crate::Emulator::set_access_decision`].

use std::sync::Arc;

use serde_json::{Value, json};

use crate::Emulator;
use crate::authn::{API_AUDIENCE, UserInfo};
use crate::error::ApiError;
use crate::rbac::{self, Attributes, ResourceAttributes};
use crate::resources::ResourceInfo;

/// A test's decision for a SubjectAccessReview, from its `spec`.
pub type AccessDecision = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// Test overrides of the review answers.
#[derive(Default)]
pub struct Reviews {
    /// Decides SubjectAccessReviews instead of RBAC, when set.
    pub decision: Option<AccessDecision>,
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// The attributes a SubjectAccessReview-like `spec` asks about, for `user`.
fn spec_attributes(spec: &Value, user: UserInfo, namespace: Option<&str>) -> Attributes {
    let ra = &spec["resourceAttributes"];
    if ra.is_object() {
        Attributes {
            user,
            verb: str_of(&ra["verb"]),
            resource: Some(ResourceAttributes {
                namespace: namespace.map_or_else(|| str_of(&ra["namespace"]), String::from),
                group: str_of(&ra["group"]),
                resource: str_of(&ra["resource"]),
                subresource: str_of(&ra["subresource"]),
                name: str_of(&ra["name"]),
            }),
            path: String::new(),
        }
    } else {
        let nra = &spec["nonResourceAttributes"];
        Attributes {
            user,
            verb: str_of(&nra["verb"]),
            resource: None,
            path: str_of(&nra["path"]),
        }
    }
}

fn invalid_spec(kind: &str, field: &str, why: &str) -> ApiError {
    ApiError::invalid(
        "authorization.k8s.io",
        kind,
        "",
        &[(field.into(), why.into())],
    )
}

impl Emulator {
    /// Answers a review: the request with its `status` filled.
    pub(crate) fn review(
        &self,
        res: &ResourceInfo,
        namespace: &str,
        mut body: Value,
        requester: &UserInfo,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        body["apiVersion"] = json!(res.api_version("v1"));
        body["kind"] = json!(res.kind);
        body["status"] = match res.plural.as_str() {
            "tokenreviews" => self.token_review(&body["spec"]),
            "subjectaccessreviews" | "localsubjectaccessreviews" => {
                let spec = &body["spec"];
                let user = UserInfo {
                    username: str_of(&spec["user"]),
                    uid: str_of(&spec["uid"]),
                    groups: strings(&spec["groups"]),
                };
                if user.username.is_empty() && user.groups.is_empty() {
                    return Err(invalid_spec(
                        &res.kind,
                        "spec.user",
                        "Invalid value: \"\": at least one of user or group must be specified",
                    ));
                }
                let local = (res.plural == "localsubjectaccessreviews").then_some(namespace);
                self.access_review(&res.kind, spec, user, local)?
            }
            "selfsubjectaccessreviews" => {
                self.access_review(&res.kind, &body["spec"], requester.clone(), None)?
            }
            "selfsubjectreviews" => json!({"userInfo": {
                "username": requester.username,
                "uid": requester.uid,
                "groups": requester.groups,
            }}),
            other => {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{other} cannot be created"
                )));
            }
        };
        if let Some(m) = body["metadata"].as_object_mut() {
            m.insert("creationTimestamp".into(), Value::Null);
        } else {
            body["metadata"] = json!({"creationTimestamp": null});
        }
        Ok(body)
    }

    fn token_review(&self, spec: &Value) -> Value {
        let token = spec["token"].as_str().unwrap_or_default();
        let mut audiences = strings(&spec["audiences"]);
        if audiences.is_empty() {
            audiences.push(API_AUDIENCE.to_string());
        }
        let store = self.inner.store.lock();
        match self
            .inner
            .auth
            .read()
            .authenticate(&store, token, &audiences)
        {
            Ok(u) => json!({
                "authenticated": true,
                "user": {"username": u.username, "uid": u.uid, "groups": u.groups},
                "audiences": audiences,
            }),
            Err(e) => json!({"authenticated": false, "user": {}, "error": e.to_string()}),
        }
    }

    fn access_review(
        &self,
        kind: &str,
        spec: &Value,
        user: UserInfo,
        local_namespace: Option<&str>,
    ) -> Result<Value, ApiError> {
        let has_resource = spec["resourceAttributes"].is_object();
        if has_resource == spec["nonResourceAttributes"].is_object() {
            return Err(invalid_spec(
                kind,
                "spec.resourceAttributes",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            ));
        }
        if let Some(ns) = local_namespace
            && spec["resourceAttributes"]["namespace"]
                .as_str()
                .is_some_and(|n| !n.is_empty() && n != ns)
        {
            return Err(invalid_spec(
                kind,
                "spec.resourceAttributes.namespace",
                "Invalid value: must match metadata.namespace",
            ));
        }
        if let Some(decide) = self.inner.reviews.lock().decision.clone() {
            let allowed = decide(spec);
            let why = if allowed { "allowed" } else { "denied" };
            return Ok(
                json!({"allowed": allowed, "reason": format!("{why} by the test's decision")}),
            );
        }
        let attrs = spec_attributes(spec, user, local_namespace);
        let snapshot = self.rbac_snapshot(&self.inner.store.lock());
        let d = rbac::authorize(&snapshot, &attrs);
        let mut status = json!({"allowed": d.allowed});
        if !d.reason.is_empty() {
            status["reason"] = json!(d.reason);
        }
        Ok(status)
    }
}
