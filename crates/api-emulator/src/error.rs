//! Errors: the API errors a client sees as `Status` bodies, and the set-up errors of the
//! emulator itself.
//!
//! The messages and reasons follow the real apiserver's, because clients (kube, kubectl,
//! controllers) branch on `reason` and `code`, and people read the messages.

use serde_json::{Value, json};

/// An error answered to a client as a `metav1.Status` with the code and reason the real
/// apiserver uses for the same condition.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 404: the object, namespace or resource does not exist.
    #[error("{message}")]
    NotFound {
        /// Human-readable message, as the apiserver words it.
        message: String,
        /// `details` of the Status (name, group, kind).
        details: Value,
    },
    /// 409 AlreadyExists: create of a name that is taken.
    #[error("{message}")]
    AlreadyExists {
        /// Human-readable message.
        message: String,
        /// `details` of the Status.
        details: Value,
    },
    /// 409 Conflict: a stale resourceVersion, or a server-side apply conflict.
    #[error("{message}")]
    Conflict {
        /// Human-readable message.
        message: String,
        /// `details` of the Status.
        details: Value,
    },
    /// 422 Invalid: the object fails validation.
    #[error("{message}")]
    Invalid {
        /// Human-readable message.
        message: String,
        /// `details` of the Status, with `causes`.
        details: Value,
    },
    /// 400 BadRequest: the request itself is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 403 Forbidden: e.g. new content in a terminating namespace.
    #[error("{0}")]
    Forbidden(String),
    /// 403 Forbidden by the authoriser, with the resource in `details`.
    #[error("{message}")]
    Denied {
        /// `<resource> "<name>" is forbidden: User "u" cannot ...`.
        message: String,
        /// `details` of the Status.
        details: Value,
    },
    /// 401 Unauthorized: a token that does not authenticate.
    #[error("Unauthorized")]
    Unauthorized,
    /// 413 RequestEntityTooLarge: a body over the limit.
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    /// 405 MethodNotAllowed: the verb is not served for this resource.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 406 NotAcceptable: no representation the client accepts.
    #[error("{0}")]
    NotAcceptable(String),
    /// 410 Expired: a watch from a resourceVersion older than the kept history.
    #[error("{0}")]
    Expired(String),
    /// 415 UnsupportedMediaType: e.g. a strategic merge patch on a custom resource.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 500: a bug in the emulator; never expected.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status code of this error.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) | ApiError::Denied { .. } => 403,
            ApiError::Unauthorized => 401,
            ApiError::TooLarge(_) => 413,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::Expired(_) => 410,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `reason` field of the Status.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) | ApiError::Denied { .. } => "Forbidden",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::Expired(_) => "Expired",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The error as a `metav1.Status` object.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { details, .. }
            | ApiError::AlreadyExists { details, .. }
            | ApiError::Conflict { details, .. }
            | ApiError::Invalid { details, .. }
            | ApiError::Denied { details, .. } => Some(details.clone()),
            _ => None,
        };
        if let Some(details) = details {
            status["details"] = details;
        }
        status
    }

    /// `<resource>[.<group>] "<name>" not found`.
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            message: format!("{} \"{name}\" not found", qualified(group, resource)),
            details: details(group, resource, name),
        }
    }

    /// `<resource>[.<group>] "<name>" already exists`.
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::AlreadyExists {
            message: format!("{} \"{name}\" already exists", qualified(group, resource)),
            details: details(group, resource, name),
        }
    }

    /// The optimistic-concurrency conflict of an update with a stale resourceVersion.
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                qualified(group, resource)
            ),
            details: details(group, resource, name),
        }
    }

    /// A conflict with a precondition or state that is not a resourceVersion.
    pub fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        ApiError::Conflict {
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                qualified(group, resource)
            ),
            details: details(group, resource, name),
        }
    }

    /// The authoriser's 403: `<resource>[.<group>] ["<name>" ]is forbidden: <why>`, or
    /// `forbidden: <why>` for a path.
    pub fn denied(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let message = match (resource.is_empty(), name.is_empty()) {
            (true, _) => format!("forbidden: {why}"),
            (false, true) => format!("{} is forbidden: {why}", qualified(group, resource)),
            (false, false) => {
                format!(
                    "{} \"{name}\" is forbidden: {why}",
                    qualified(group, resource)
                )
            }
        };
        ApiError::Denied {
            message,
            details: details(group, resource, name),
        }
    }

    /// 422 for a body nested deeper than the decoder accepts.
    pub fn too_deep() -> Self {
        ApiError::Invalid {
            message: "the object is nested too deeply: more than 128 levels".into(),
            details: json!({"causes": [{"reason": "FieldValueInvalid", "message": "nested too deeply"}]}),
        }
    }

    /// 422 with one cause per `(field, message)`, worded as the apiserver does:
    /// `<Kind> "<name>" is invalid: <field>: <message>`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[(String, String)]) -> Self {
        let summary: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let message = if summary.len() == 1 {
            format!("{kind} \"{name}\" is invalid: {}", summary[0])
        } else {
            format!("{kind} \"{name}\" is invalid: [{}]", summary.join(", "))
        };
        let mut d = json!({
            "name": name,
            "kind": kind,
            "causes": causes.iter().map(|(f, m)| json!({
                "reason": "FieldValueInvalid", "message": m, "field": f,
            })).collect::<Vec<_>>(),
        });
        if !group.is_empty() {
            d["group"] = json!(group);
        }
        ApiError::Invalid {
            message,
            details: d,
        }
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(group: &str, resource: &str, name: &str) -> Value {
    let mut d = json!({ "name": name, "kind": resource });
    if !group.is_empty() {
        d["group"] = json!(group);
    }
    d
}

/// Errors setting the emulator up (reading CRD files, binding a port, writing a kubeconfig).
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A YAML document could not be parsed.
    #[error("{context}: {source}")]
    Yaml {
        /// Which file.
        context: String,
        /// The parser's error.
        #[source]
        source: serde_yaml::Error,
    },
    /// The cluster CA or the TLS configuration could not be made.
    #[error("TLS set-up")]
    Tls(#[from] crate::tls::TlsError),
    /// A CRD or other object was refused by the API.
    #[error("{context}: {source}")]
    Api {
        /// Which object.
        context: String,
        /// The API's answer.
        #[source]
        source: ApiError,
    },
}
