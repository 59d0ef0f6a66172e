//! TokenReview and SubjectAccessReview: the answers are set by the test through
//! [`crate::Emulator::add_token`] and [`crate::Emulator::set_access_decision`], because the
//! emulator has no users or RBAC of its own.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::ResourceInfo;

/// A user a bearer token authenticates as.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInfo {
    /// `username`, e.g. `system:serviceaccount:ns:name`.
    pub username: String,
    /// `uid`.
    pub uid: String,
    /// `groups`.
    pub groups: Vec<String>,
}

/// The decision for a SubjectAccessReview, from its `spec`.
pub type AccessDecision = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// The test-controlled authentication and authorisation answers.
pub struct Reviews {
    /// Known tokens; any other token is unauthenticated.
    pub tokens: HashMap<String, UserInfo>,
    /// The access decision; by default everything is denied.
    pub decision: AccessDecision,
}

impl Default for Reviews {
    fn default() -> Self {
        Reviews {
            tokens: HashMap::new(),
            decision: Arc::new(|_| false),
        }
    }
}

impl Reviews {
    /// Answers a review: the request with its `status` filled.
    pub fn review(&self, res: &ResourceInfo, mut body: Value) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        body["apiVersion"] = json!(res.api_version("v1"));
        body["kind"] = json!(res.kind);
        match res.plural.as_str() {
            "tokenreviews" => {
                let token = body["spec"]["token"].as_str().unwrap_or_default();
                body["status"] = match self.tokens.get(token) {
                    Some(u) => json!({
                        "authenticated": true,
                        "user": {"username": u.username, "uid": u.uid, "groups": u.groups},
                        "audiences": body["spec"]["audiences"],
                    }),
                    None => {
                        json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                    }
                };
            }
            "subjectaccessreviews" => {
                let allowed = (self.decision)(&body["spec"]);
                body["status"] = if allowed {
                    json!({"allowed": true, "reason": "allowed by the emulator's decision"})
                } else {
                    json!({"allowed": false, "reason": "denied by the emulator's decision"})
                };
            }
            other => {
                return Err(ApiError::MethodNotAllowed(format!(
                    "{other} cannot be created"
                )));
            }
        }
        if let Some(m) = body["metadata"].as_object_mut() {
            m.insert("creationTimestamp".into(), Value::Null);
        }
        Ok(body)
    }
}
