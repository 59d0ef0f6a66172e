//! The HTTP shell: each handler reads what the request carries, calls one core function and
//! turns its result into an answer (errors through [`super::errors`]).

use super::auth::{Auth, UserInfo};
use super::core::{Core, DeleteAnswer, GetAnswer, Spread};
use super::envelope::{ApiError, Success};
use super::errors::{authn_error, exchange_error, to_api_error};
use super::types::TokenAnswer;
use super::{body, openapi};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, OriginalUri, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::SecondsFormat;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Instant;

/// What handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The routes' logic.
    pub core: Arc<Core>,
}

/// Where the secrets wildcard starts.
pub const SECRETS_PREFIX: &str = "/api/v1/hsm/secrets/";

type Answer = Result<Response, ApiError>;

fn spread<T: serde::Serialize>(
    result: Spread<T>,
    full: StatusCode,
    message: &str,
    partial: impl FnOnce(usize, usize) -> String,
) -> Response {
    match result.complete() {
        true => Success::with_status(full, message, result.data).into_response(),
        false => Success::with_status(
            StatusCode::PARTIAL_CONTENT,
            partial(result.succeeded, result.total),
            result.data,
        )
        .into_response(),
    }
}

/// The request body, or 413 in the envelope.
fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "payload_too_large",
            rejection.body_text(),
        )
    })
}

fn raw_path(uri: &OriginalUri) -> &str {
    uri.path().strip_prefix(SECRETS_PREFIX).unwrap_or_default()
}

/// `GET /api/v1/health`.
pub async fn health(State(state): State<ApiState>) -> Response {
    Success::ok("Health check completed", state.core.health()).into_response()
}

/// `GET /api/v1/info`.
pub async fn info(State(state): State<ApiState>, Extension(user): Extension<UserInfo>) -> Answer {
    let info = state.core.info(&user).await.map_err(to_api_error)?;
    Ok(Success::ok("API information", info).into_response())
}

/// `GET /api/v1/hsm/info`.
pub async fn device_info(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
) -> Answer {
    let info = state.core.device_info(&user).await.map_err(to_api_error)?;
    Ok(Success::ok("HSM info retrieved successfully", info).into_response())
}

/// `GET /api/v1/hsm/status`.
pub async fn status(State(state): State<ApiState>, Extension(user): Extension<UserInfo>) -> Answer {
    let status = state.core.status(&user).await.map_err(to_api_error)?;
    Ok(Success::ok("HSM connection status retrieved", status).into_response())
}

/// The list's query: `prefix`; Go's `page` and `page_size` are accepted and ignored.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
}

/// `GET /api/v1/hsm/secrets`.
pub async fn list(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    Query(query): Query<ListQuery>,
) -> Answer {
    let list = state
        .core
        .list(&user, query.prefix)
        .await
        .map_err(to_api_error)?;
    Ok(Success::ok("Secrets listed successfully", list).into_response())
}

/// `GET /api/v1/hsm/secrets/{…}`.
pub async fn get_secret(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: OriginalUri,
) -> Answer {
    let answer = state
        .core
        .get(&user, raw_path(&uri))
        .await
        .map_err(to_api_error)?;
    Ok(match answer {
        GetAnswer::Secret(data) => Success::ok("Secret read successfully", data).into_response(),
        GetAnswer::Metadata(data) => {
            Success::ok("Metadata read successfully", data).into_response()
        }
        GetAnswer::Checksum(data) => {
            Success::ok("Checksum retrieved successfully", data).into_response()
        }
    })
}

/// `POST`/`PUT /api/v1/hsm/secrets/{…}`.
pub async fn write_secret(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: OriginalUri,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body_of(body)?;
    let written = state
        .core
        .write(&user, raw_path(&uri), &body)
        .await
        .map_err(to_api_error)?;
    Ok(spread(
        written,
        StatusCode::CREATED,
        "Secret written successfully",
        |ok, total| format!("Secret written to {ok}/{total} devices"),
    ))
}

/// `DELETE /api/v1/hsm/secrets/{…}`.
pub async fn delete_secret(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    uri: OriginalUri,
) -> Answer {
    let answer = state
        .core
        .delete(&user, raw_path(&uri))
        .await
        .map_err(to_api_error)?;
    Ok(match answer {
        DeleteAnswer::Secret(done) => spread(
            done,
            StatusCode::OK,
            "Secret deleted successfully",
            |ok, total| format!("Secret deleted from {ok}/{total} devices"),
        ),
        DeleteAnswer::Key(done) => spread(
            done,
            StatusCode::OK,
            "Key deleted successfully",
            |ok, total| format!("Key deleted from {ok}/{total} devices"),
        ),
    })
}

/// `POST /api/v1/hsm/change-pin`.
pub async fn change_pin(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body_of(body)?;
    let changed = state
        .core
        .change_pin(&user, &body)
        .await
        .map_err(to_api_error)?;
    Ok(spread(
        changed,
        StatusCode::OK,
        "PIN changed successfully",
        |_, _| "Partial PIN change success".to_owned(),
    ))
}

/// `POST /api/v1/hsm/mirror/sync`.
pub async fn mirror_sync(
    State(state): State<ApiState>,
    Extension(user): Extension<UserInfo>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body_of(body)?;
    let done = state
        .core
        .mirror_sync(&user, &body)
        .await
        .map_err(to_api_error)?;
    Ok(Success::ok("Mirror sync triggered", done).into_response())
}

/// `POST /api/v1/auth/token`: answered without the envelope, as the Go manager does.
pub async fn auth_token(
    State(state): State<ApiState>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    let body = body_of(body)?;
    let token = body::token(&body).map_err(|field| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "Invalid request",
        )
        .detail("field", &field.field)
        .detail("error", field.to_string())
    })?;
    let issued = state
        .core
        .auth
        .exchange(&token)
        .await
        .map_err(exchange_error)?;
    Ok(Json(TokenAnswer {
        token: issued.token,
        expires_at: issued.expires_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        token_type: "Bearer",
    })
    .into_response())
}

/// `GET /api/v1/openapi.json`.
pub async fn openapi_json() -> Response {
    Json(openapi::document()).into_response()
}

/// `GET /`: to the web page, as the Go manager redirected.
pub async fn root() -> Redirect {
    Redirect::to("/web/")
}

/// `GET /web/…`: a page pointing at the API's document (the Go image had no web UI).
pub async fn web() -> Html<&'static str> {
    Html(
        "<!doctype html><title>hsm-secrets-operator</title><h1>hsm-secrets-operator REST API</h1>\
         <p>See <a href=\"/api/v1/openapi.json\">/api/v1/openapi.json</a>, or use \
         <code>kubectl hsm</code>.</p>",
    )
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok"
}

/// No such route.
pub async fn not_found(uri: OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route {}", uri.path()),
    )
}

/// The route exists, not with this method.
pub async fn method_not_allowed(method: Method, uri: OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not served on {}", uri.path()),
    )
}

/// Authenticates every request to the routes it wraps, handing the identity to them.
pub async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|h| h.to_str().unwrap_or("\u{0}invalid"));
    match auth.authenticate(header).await {
        Ok(user) => {
            request.extensions_mut().insert(user);
            next.run(request).await
        }
        Err(error) => authn_error(error).into_response(),
    }
}

/// CORS on every answer; `OPTIONS` answered at once with 204, as the Go manager does.
pub async fn cors(request: Request, next: Next) -> Response {
    let mut response = match request.method() == Method::OPTIONS {
        true => StatusCode::NO_CONTENT.into_response(),
        false => next.run(request).await,
    };
    let headers = response.headers_mut();
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Authorization"),
    );
    response
}

/// One line per request: method, path, status, time (never a body or a header value).
pub async fn access_log(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::info!(
        %method,
        %path,
        status = response.status().as_u16(),
        millis = started.elapsed().as_millis() as u64,
        "api request"
    );
    response
}
