//! Every failure's status, code and details, in one exhaustive place per error type: the
//! codes are the Go manager's where it had one (§4 of the contract), so its clients keep
//! working; new failures (403, bad names, a device changing under a read) have new codes.

use super::auth::{AuthError, AuthnError, AuthzError, ExchangeError};
use super::body::PinBodyError;
use super::core::{Error, Missing, Operation};
use super::envelope::ApiError;
use super::paths::PathError;
use axum::http::StatusCode;

/// The hint the Go manager gave with `INVALID_TOKEN`.
pub const INVALID_TOKEN_HINT: &str =
    "token may have expired, try clearing cache with: kubectl hsm auth clear";

/// A route's failure as an answer.
pub fn to_api_error(error: Error) -> ApiError {
    let message = error.to_string();
    match error {
        Error::Authz(AuthzError::Forbidden { user, access, .. }) => {
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
                .detail("user", user)
                .detail("verb", access.verb)
                .detail(
                    "resource",
                    match access.subresource {
                        Some(sub) => format!("{}/{sub}", access.resource),
                        None => access.resource.to_owned(),
                    },
                )
        }
        Error::Authz(AuthzError::Review(review)) => review_unavailable(review),
        Error::Path(path) => path_error(path),
        Error::InvalidName { reason } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", message)
                .detail("field", "path")
                .detail("error", reason)
        }
        Error::WriteBody(field) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "parse_error",
            "Failed to parse request body",
        )
        .detail("field", &field.field)
        .detail("error", field.to_string()),
        Error::RequestBody(field) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Invalid request body",
        )
        .detail("field", &field.field)
        .detail("error", field.to_string()),
        Error::PinBody(pin) => pin_error(pin),
        Error::NoAgents => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_agents",
            "No HSM agents available",
        ),
        Error::NotFound(missing) => {
            let code = match missing {
                Missing::Secret(_) => "secret_not_found",
                Missing::Metadata(_) => "metadata_not_found",
                Missing::Checksum(_) => "checksum_not_found",
                Missing::Key { .. } => "key_not_found",
            };
            ApiError::new(StatusCode::NOT_FOUND, code, message)
        }
        Error::Failed { operation, results } => {
            let (code, text) = match operation {
                Operation::Write => ("write_failed", "Failed to write secret to any HSM device"),
                Operation::Delete => (
                    "delete_failed",
                    "Failed to delete secret from any HSM device",
                ),
                Operation::DeleteKey => (
                    "delete_key_failed",
                    "Failed to delete key from any HSM device",
                ),
                Operation::ChangePin => ("pin_change_failed", "PIN change failed on all devices"),
            };
            let errors: Vec<String> = results
                .iter()
                .map(|(device, r)| format!("{device}: {}", r.error))
                .collect();
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, code, text)
                .detail("errors", errors)
                .detail("deviceResults", results)
        }
        Error::InfoFailed => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "info_failed",
            "Failed to get info from any HSM device",
        ),
        Error::MirrorUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "mirror_unavailable",
            "Mirror service not available",
        ),
        Error::MirrorFailed(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "mirror_failed", message)
        }
        Error::Agent { device, .. } => {
            ApiError::new(StatusCode::BAD_GATEWAY, "agent_error", message).detail("device", device)
        }
        Error::Changing => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "device_changed", message)
        }
    }
}

fn path_error(error: PathError) -> ApiError {
    let message = error.to_string();
    match error {
        PathError::Missing => ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_path",
            "Secret path is required",
        ),
        PathError::Encoding { .. } => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", message).detail("field", "path")
        }
        PathError::UnknownPart(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        PathError::WrongMethod { .. } => ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        ),
        PathError::MissingKey => ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing_key",
            "Key parameter is required",
        ),
    }
}

fn pin_error(error: PinBodyError) -> ApiError {
    let (code, message) = match &error {
        PinBodyError::Invalid(field) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Invalid request format",
            )
            .detail("field", &field.field)
            .detail("error", field.to_string());
        }
        PinBodyError::MissingOld => ("missing_old_pin", "Missing old PIN"),
        PinBodyError::MissingNew => ("missing_new_pin", "Missing new PIN"),
        PinBodyError::Same => ("invalid_pin_change", "Invalid PIN change"),
    };
    ApiError::new(StatusCode::BAD_REQUEST, code, message).detail("error", error.to_string())
}

fn review_unavailable(error: AuthError) -> ApiError {
    tracing::warn!(%error, "a review could not be made");
    let code = match error {
        AuthError::TokenReview(_) => "authentication_unavailable",
        AuthError::AccessReview(_) => "authorization_unavailable",
    };
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code,
        "the Kubernetes API could not review the request; retry",
    )
}

/// An unauthenticated request's answer (the Go codes).
pub fn authn_error(error: AuthnError) -> ApiError {
    let message = error.to_string();
    match error {
        AuthnError::MissingHeader => {
            ApiError::new(StatusCode::UNAUTHORIZED, "MISSING_AUTH_HEADER", message)
        }
        AuthnError::InvalidFormat => {
            ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_AUTH_FORMAT", message)
        }
        AuthnError::InvalidToken => {
            ApiError::new(StatusCode::UNAUTHORIZED, "INVALID_TOKEN", message)
                .detail("hint", INVALID_TOKEN_HINT)
        }
        AuthnError::Review(review) => review_unavailable(review),
    }
}

/// A failed token exchange's answer (the Go codes).
pub fn exchange_error(error: ExchangeError) -> ApiError {
    let message = error.to_string();
    match error {
        ExchangeError::Rejected | ExchangeError::NotServiceAccount(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TOKEN_GENERATION_FAILED",
            "Failed to generate token",
        )
        .detail("error", message),
        ExchangeError::Review(review) => review_unavailable(review),
    }
}
