//! The HTTP client of the manager's REST API (inventory §4): every route the plugin uses,
//! the response envelope, and what each status means. Everything that knows the wire is
//! here, so a change of the server's URLs or bodies is a change of this module alone.
//!
//! - Requests carry `Authorization: Bearer …` from a [`Credentials`] (none for the
//!   exempt `/health` and `/auth/token`). A 401 tells the credentials to forget their
//!   token; when they can get another (a cached token that expired or a manager that
//!   restarted) the request is sent once more, never twice.
//! - Every request has a deadline ([`Transport::new`]'s `timeout`), body included.
//! - No error carries a request body, a value or a token; JSON errors are reduced to their
//!   category and position, since serde's messages may quote the offending value.

use crate::model::{
    ApiErrorBody, Deleted, DeviceInfos, DeviceStatus, Envelope, Health, MetadataDoc,
    MirrorTriggered, PinChanged, Secret, SecretData, SecretList, SecretValue, SecretWire,
    TokenResponse, Written,
};
use base64::Engine;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Why a request to the manager failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not an http(s) URL.
    #[error("invalid server URL {url:?}: {reason}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The CA file for https cannot be used.
    #[error("cannot use the CA certificates {path}: {reason}")]
    Ca {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No connection (refused, DNS, TLS handshake).
    #[error("cannot reach the manager at {url}")]
    Connect {
        /// The base URL.
        url: String,
        /// The cause.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The port-forward to the manager's pod reported why it could not carry the
    /// connection (the API server's message on the tunnel's error channel).
    #[error("cannot reach the manager at {url}: the port-forward failed: {message}")]
    Tunnel {
        /// The base URL (the local end of the port-forward).
        url: String,
        /// The message.
        message: String,
    },
    /// No complete answer within the deadline.
    #[error("the manager at {url} did not answer within {after:?}")]
    Timeout {
        /// The base URL.
        url: String,
        /// The deadline.
        after: Duration,
    },
    /// The answer's body could not be read.
    #[error("cannot read the manager's answer")]
    Body(#[source] hyper::Error),
    /// The manager answered with an error envelope (or an error status without one).
    #[error("{}", api_message(*status, code, message, hint.as_deref()))]
    Api {
        /// HTTP status.
        status: u16,
        /// The envelope's `error.code` (empty when the body had none).
        code: String,
        /// The envelope's `error.message`.
        message: String,
        /// `error.details.hint`, when given.
        hint: Option<String>,
    },
    /// The answer is not what §4 says it is.
    #[error("malformed answer from the manager (HTTP {status}): {detail}")]
    Malformed {
        /// HTTP status.
        status: u16,
        /// What is wrong (never the body itself).
        detail: String,
    },
    /// A value the REST API cannot carry: writes take JSON strings, so bytes that are not
    /// UTF-8 cannot be written back.
    #[error("key {key:?} holds binary data, which the REST API cannot write (values are strings)")]
    NotText {
        /// The key.
        key: String,
    },
    /// No bearer token could be had.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
}

fn api_message(status: u16, code: &str, message: &str, hint: Option<&str>) -> String {
    let mut text = format!("the manager answered HTTP {status}");
    if !code.is_empty() {
        text.push_str(&format!(" {code}"));
    }
    if !message.is_empty() {
        text.push_str(&format!(": {message}"));
    }
    if let Some(hint) = hint {
        text.push_str(&format!(" ({hint})"));
    }
    text
}

/// What kind of failure, for exit codes and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No connection or no answer in time.
    Unreachable,
    /// 503: no device (agent) is available, or the mirror is not running.
    NoDevices,
    /// 401/403, or no token could be had.
    Refused,
    /// 400 or input the API cannot carry.
    Invalid,
    /// 404.
    NotFound,
    /// Anything else (5xx, malformed answers).
    Other,
}

impl ClientError {
    /// The kind of failure.
    pub fn kind(&self) -> Kind {
        match self {
            ClientError::BadUrl { .. } | ClientError::Ca { .. } | ClientError::NotText { .. } => {
                Kind::Invalid
            }
            ClientError::Connect { .. }
            | ClientError::Tunnel { .. }
            | ClientError::Timeout { .. } => Kind::Unreachable,
            ClientError::Auth(_) => Kind::Refused,
            ClientError::Api { status, .. } => match *status {
                400 | 409 | 413 | 422 => Kind::Invalid,
                401 | 403 => Kind::Refused,
                404 => Kind::NotFound,
                503 => Kind::NoDevices,
                _ => Kind::Other,
            },
            ClientError::Body(_) | ClientError::Malformed { .. } => Kind::Other,
        }
    }

    /// The API's error code, when the manager gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }
}

/// A successful answer: the status (200, 201 or 206), the envelope's message and data.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// HTTP status.
    pub status: u16,
    /// The envelope's message.
    pub message: Option<String>,
    /// The envelope's data.
    pub data: T,
}

impl<T> Reply<T> {
    /// 206: only some devices did what was asked.
    pub fn partial(&self) -> bool {
        self.status == StatusCode::PARTIAL_CONTENT.as_u16()
    }
}

/// Where bearer tokens come from.
#[async_trait::async_trait]
pub trait Credentials: Send + Sync {
    /// The token to send, or `None` to send none. May call the exempt token exchange on
    /// `transport`.
    async fn bearer(&self, transport: &Transport) -> Result<Option<SecretString>, ClientError>;

    /// The manager refused the last token (401): forget it. Returns whether a fresh token
    /// can be tried.
    async fn refused(&self) -> bool;
}

/// No credentials: only the exempt routes will answer.
pub struct Anonymous;

#[async_trait::async_trait]
impl Credentials for Anonymous {
    async fn bearer(&self, _: &Transport) -> Result<Option<SecretString>, ClientError> {
        Ok(None)
    }
    async fn refused(&self) -> bool {
        false
    }
}

/// One token, used as it is (`--token-file`, or a test's token).
pub struct StaticToken(pub SecretString);

#[async_trait::async_trait]
impl Credentials for StaticToken {
    async fn bearer(&self, _: &Transport) -> Result<Option<SecretString>, ClientError> {
        Ok(Some(self.0.clone()))
    }
    async fn refused(&self) -> bool {
        false
    }
}

enum Http {
    Plain(Client<HttpConnector, Full<Bytes>>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

/// An HTTP connection pool to one manager, with a deadline per request.
pub struct Transport {
    base: String,
    http: Http,
    timeout: Duration,
    tunnel: Option<tokio::sync::watch::Receiver<Option<String>>>,
}

/// How long a failed connection waits for the port-forward's reason (it travels apart from
/// the bytes, so it may land a moment after the connection closed).
const TUNNEL_REASON_WAIT: Duration = Duration::from_secs(1);

impl Transport {
    /// A transport to `base` (`http://host:port` or `https://…`, no path needed). For
    /// https, `ca` names a PEM file of trusted CAs; without it the system's are used.
    pub fn new(base: &str, timeout: Duration, ca: Option<&Path>) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/').to_owned();
        let uri: http::Uri = base.parse().map_err(|_| ClientError::BadUrl {
            url: base.clone(),
            reason: "not a URL",
        })?;
        if uri.host().is_none() {
            return Err(ClientError::BadUrl {
                url: base,
                reason: "no host",
            });
        }
        let http = match uri.scheme_str() {
            Some("http") => Http::Plain(Client::builder(TokioExecutor::new()).build_http()),
            Some("https") => Http::Tls(
                Client::builder(TokioExecutor::new()).build(
                    hyper_rustls::HttpsConnectorBuilder::new()
                        .with_tls_config(tls_config(ca)?)
                        .https_only()
                        .enable_http1()
                        .build(),
                ),
            ),
            _ => {
                return Err(ClientError::BadUrl {
                    url: base,
                    reason: "the scheme must be http or https",
                });
            }
        };
        Ok(Transport {
            base,
            http,
            timeout,
            tunnel: None,
        })
    }

    /// A transport whose base is the local end of a port-forward: a connection that fails
    /// is reported with the reason the port-forward gave, when it gave one.
    pub fn through_tunnel(
        mut self,
        failures: tokio::sync::watch::Receiver<Option<String>>,
    ) -> Self {
        self.tunnel = Some(failures);
        self
    }

    /// The port-forward's reason for a failed connection, if it gives one soon.
    async fn tunnel_failure(&self) -> Option<String> {
        let mut failures = self.tunnel.clone()?;
        match tokio::time::timeout(TUNNEL_REASON_WAIT, failures.wait_for(Option::is_some)).await {
            Ok(Ok(reason)) => reason.clone(),
            _ => None,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and reads the whole answer, within the deadline.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        bearer: Option<&SecretString>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("kubectl-hsm/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = bearer {
            let mut value =
                http::HeaderValue::try_from(format!("Bearer {}", token.expose_secret())).map_err(
                    |_| ClientError::Malformed {
                        status: 0,
                        detail: "the bearer token is not a valid header value".into(),
                    },
                )?;
            value.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, value);
        }
        let body = match body {
            Some(bytes) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::copy_from_slice(&bytes))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request.body(body).map_err(|_| ClientError::BadUrl {
            url: self.base.clone(),
            reason: "cannot form a request URL",
        })?;
        let exchange = async {
            let response = match match &self.http {
                Http::Plain(client) => client.request(request).await,
                Http::Tls(client) => client.request(request).await,
            } {
                Ok(response) => response,
                Err(source) => {
                    return Err(match self.tunnel_failure().await {
                        Some(message) => ClientError::Tunnel {
                            url: self.base.clone(),
                            message,
                        },
                        None => ClientError::Connect {
                            url: self.base.clone(),
                            source,
                        },
                    });
                }
            };
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(ClientError::Body)?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.base.clone(),
                after: self.timeout,
            })?
    }

    /// `POST /api/v1/auth/token`: a Kubernetes ServiceAccount token for the manager's JWT.
    /// `Ok(None)` when this manager has no exchange (404/405): it takes Kubernetes tokens
    /// directly.
    pub async fn exchange(
        &self,
        k8s_token: &SecretString,
    ) -> Result<Option<TokenResponse>, ClientError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "k8s_token": k8s_token.expose_secret() }))
                .expect("a JSON object of one string serialises"),
        );
        let (status, bytes) = self
            .send(Method::POST, "/api/v1/auth/token", Some(body), None)
            .await?;
        match status {
            StatusCode::OK | StatusCode::CREATED => {
                // Not enveloped (Go); accept an enveloped one too.
                let value: serde_json::Value =
                    serde_json::from_slice(&bytes).map_err(|e| malformed(status, &e))?;
                let doc = match value.get("data") {
                    Some(data) if value.get("token").is_none() => data.clone(),
                    _ => value,
                };
                serde_json::from_value(doc)
                    .map(Some)
                    .map_err(|e| malformed(status, &e))
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
            _ => Err(error_from(status, &bytes)),
        }
    }
}

fn tls_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| ClientError::Ca {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(ClientError::Ca {
                    path: path.display().to_string(),
                    reason: "no certificate in it".into(),
                });
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Ca {
            path: "(TLS set-up)".into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A serde error without the value it may quote.
fn malformed(status: StatusCode, e: &serde_json::Error) -> ClientError {
    let what = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "JSON of the wrong shape",
        serde_json::error::Category::Eof => "truncated JSON",
    };
    ClientError::Malformed {
        status: status.as_u16(),
        detail: format!("{what} at line {} column {}", e.line(), e.column()),
    }
}

/// The error for a non-success status, from its envelope when it has one.
fn error_from(status: StatusCode, bytes: &[u8]) -> ClientError {
    let body: ApiErrorBody = serde_json::from_slice::<Envelope<serde_json::Value>>(bytes)
        .ok()
        .and_then(|e| e.error)
        .unwrap_or_default();
    let hint = body
        .details
        .as_ref()
        .and_then(|d| d.get("hint"))
        .and_then(|h| h.as_str())
        .map(str::to_owned);
    let message = if body.message.is_empty() && body.code.is_empty() {
        status.canonical_reason().unwrap_or("").to_owned()
    } else {
        body.message
    };
    ClientError::Api {
        status: status.as_u16(),
        code: body.code,
        message,
        hint,
    }
}

/// A path segment, percent-encoded (a secret name is one segment even with `/` in it).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The manager's REST API.
pub struct ApiClient {
    transport: Transport,
    credentials: Arc<dyn Credentials>,
}

impl ApiClient {
    /// A client over `transport` that authenticates with `credentials`.
    pub fn new(transport: Transport, credentials: Arc<dyn Credentials>) -> Self {
        ApiClient {
            transport,
            credentials,
        }
    }

    /// A client for `server` with one bearer token: what a test against a real manager
    /// needs.
    pub fn with_token(server: &str, token: &str, timeout: Duration) -> Result<Self, ClientError> {
        Ok(ApiClient::new(
            Transport::new(server, timeout, None)?,
            Arc::new(StaticToken(SecretString::from(token))),
        ))
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        self.transport.base()
    }

    /// One request, decoded from the envelope; on 401, one more try with a fresh token.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        authenticated: bool,
    ) -> Result<Reply<T>, ClientError> {
        let mut retried = false;
        loop {
            let token = if authenticated {
                self.credentials.bearer(&self.transport).await?
            } else {
                None
            };
            let (status, bytes) = self
                .transport
                .send(method.clone(), path, body.clone(), token.as_ref())
                .await?;
            if status == StatusCode::UNAUTHORIZED && authenticated {
                let fresh = self.credentials.refused().await;
                if fresh && !retried {
                    retried = true;
                    tracing::debug!("401 with the cached token: authenticating afresh");
                    continue;
                }
            }
            return decode(status, &bytes);
        }
    }

    /// `GET /api/v1/health` (no authentication).
    pub async fn health(&self) -> Result<Reply<Health>, ClientError> {
        self.call(Method::GET, "/api/v1/health", None, false).await
    }

    /// `GET /api/v1/info`: an authenticated request that changes nothing.
    pub async fn info(&self) -> Result<Reply<serde_json::Value>, ClientError> {
        self.call(Method::GET, "/api/v1/info", None, true).await
    }

    /// `GET /api/v1/hsm/status`.
    pub async fn device_status(&self) -> Result<Reply<DeviceStatus>, ClientError> {
        self.call(Method::GET, "/api/v1/hsm/status", None, true)
            .await
    }

    /// `GET /api/v1/hsm/info`.
    pub async fn device_info(&self) -> Result<Reply<DeviceInfos>, ClientError> {
        self.call(Method::GET, "/api/v1/hsm/info", None, true).await
    }

    /// `GET /api/v1/hsm/secrets`.
    pub async fn list(&self) -> Result<Reply<SecretList>, ClientError> {
        self.call(Method::GET, "/api/v1/hsm/secrets", None, true)
            .await
    }

    /// `GET /api/v1/hsm/secrets/:path`, values decoded from base64.
    pub async fn get(&self, path: &str) -> Result<Reply<Secret>, ClientError> {
        let reply: Reply<SecretWire> = self
            .call(Method::GET, &secret_url(path), None, true)
            .await?;
        let status = reply.status;
        let wire = reply.data;
        let mut data = SecretData::new();
        for (key, encoded) in wire.data {
            let encoded = Zeroizing::new(encoded);
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|_| ClientError::Malformed {
                    status,
                    detail: format!("the value of key {key:?} is not base64"),
                })?;
            data.insert(key, SecretValue::new(bytes));
        }
        Ok(Reply {
            status,
            message: reply.message,
            data: Secret {
                path: if wire.path.is_empty() {
                    path.to_owned()
                } else {
                    wire.path
                },
                data,
                checksum: wire.checksum,
                device_count: wire.device_count,
            },
        })
    }

    /// `POST /api/v1/hsm/secrets/:path`: the whole secret (values as strings).
    pub async fn write(
        &self,
        path: &str,
        data: &SecretData,
    ) -> Result<Reply<Written>, ClientError> {
        let mut text: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, value) in data {
            let value = value
                .as_text()
                .ok_or_else(|| ClientError::NotText { key: key.clone() })?;
            text.insert(key, value);
        }
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "data": text }))
                .expect("a JSON object of strings serialises"),
        );
        self.call(Method::POST, &secret_url(path), Some(body), true)
            .await
    }

    /// `DELETE /api/v1/hsm/secrets/:path` (200, or 206 when some devices failed).
    pub async fn delete(&self, path: &str) -> Result<Reply<Deleted>, ClientError> {
        self.call(Method::DELETE, &secret_url(path), None, true)
            .await
    }

    /// `DELETE /api/v1/hsm/secrets/:path/:key`.
    pub async fn delete_key(&self, path: &str, key: &str) -> Result<Reply<Deleted>, ClientError> {
        let url = format!("{}/{}", secret_url(path), segment(key));
        self.call(Method::DELETE, &url, None, true).await
    }

    /// `GET /api/v1/hsm/secrets/:path/metadata`.
    pub async fn metadata(&self, path: &str) -> Result<Reply<MetadataDoc>, ClientError> {
        let url = format!("{}/metadata", secret_url(path));
        self.call(Method::GET, &url, None, true).await
    }

    /// `POST /api/v1/hsm/change-pin`.
    pub async fn change_pin(
        &self,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<Reply<PinChanged>, ClientError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({
                "old_pin": old.expose_secret(),
                "new_pin": new.expose_secret(),
            }))
            .expect("a JSON object of strings serialises"),
        );
        self.call(Method::POST, "/api/v1/hsm/change-pin", Some(body), true)
            .await
    }

    /// `POST /api/v1/hsm/mirror/sync`.
    pub async fn mirror_sync(&self, force: bool) -> Result<Reply<MirrorTriggered>, ClientError> {
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "force": force })).expect("serialises"),
        );
        self.call(Method::POST, "/api/v1/hsm/mirror/sync", Some(body), true)
            .await
    }
}

fn secret_url(path: &str) -> String {
    format!("/api/v1/hsm/secrets/{}", segment(path))
}

/// A success envelope's data, or the error the status and envelope say.
fn decode<T: DeserializeOwned>(status: StatusCode, bytes: &[u8]) -> Result<Reply<T>, ClientError> {
    if !status.is_success() {
        return Err(error_from(status, bytes));
    }
    let envelope: Envelope<T> = serde_json::from_slice(bytes).map_err(|e| malformed(status, &e))?;
    if !envelope.success {
        let mut error = error_from(status, bytes);
        if let ClientError::Api { status: s, .. } = &mut error {
            *s = status.as_u16();
        }
        return Err(error);
    }
    let data = envelope.data.ok_or_else(|| ClientError::Malformed {
        status: status.as_u16(),
        detail: "a success envelope without data".into(),
    })?;
    Ok(Reply {
        status: status.as_u16(),
        message: envelope.message,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("db-creds.v2"), "db-creds.v2");
        assert_eq!(segment("team/app"), "team%2Fapp");
        assert_eq!(segment("a b?"), "a%20b%3F");
    }

    #[test]
    fn error_envelopes_become_api_errors_with_their_hint() {
        let body = br#"{"success":false,"error":{"code":"INVALID_TOKEN","message":"bad",
            "details":{"hint":"try clearing cache with: kubectl hsm auth clear"}}}"#;
        let e = error_from(StatusCode::UNAUTHORIZED, body);
        assert_eq!(e.kind(), Kind::Refused);
        assert_eq!(e.code(), Some("INVALID_TOKEN"));
        assert!(e.to_string().contains("auth clear"), "{e}");
    }

    #[test]
    fn a_malformed_body_never_quotes_its_content() {
        let body = br#"{"success":true,"data":{"path":"x","data":{"k":42424242}}}"#;
        let e = decode::<SecretWire>(StatusCode::OK, body).unwrap_err();
        assert!(matches!(e, ClientError::Malformed { .. }), "{e:?}");
        assert!(!e.to_string().contains("42424242"), "{e}");
    }

    #[test]
    fn statuses_map_to_kinds() {
        for (status, kind) in [
            (400, Kind::Invalid),
            (401, Kind::Refused),
            (403, Kind::Refused),
            (404, Kind::NotFound),
            (500, Kind::Other),
            (503, Kind::NoDevices),
        ] {
            let e = error_from(StatusCode::from_u16(status).unwrap(), b"not json");
            assert_eq!(e.kind(), kind, "{status}");
        }
    }
}
