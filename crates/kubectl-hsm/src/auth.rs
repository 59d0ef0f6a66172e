//! Bearer tokens for the manager, as the Go plugin gets them: a TokenRequest (1 h) for the
//! service account `kubectl-hsm` in the kubeconfig's namespace (falling back to `default`,
//! or the account `auth config` names), exchanged at `POST /api/v1/auth/token` for the
//! manager's JWT, cached (see [`crate::cache`]) until five minutes before it expires.
//!
//! A manager without the exchange (404) accepts Kubernetes tokens directly (TokenReview);
//! then the ServiceAccount token itself is sent and cached until its own expiry.

use crate::cache::{Cache, CacheError, CachedToken, TokenKind};
use crate::client::{ClientError, Credentials, Transport};
use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use secrecy::SecretString;
use std::path::Path;
use tokio::sync::Mutex;

/// The service account the plugin asks a token for unless told otherwise.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "kubectl-hsm";
/// The fallback when [`DEFAULT_SERVICE_ACCOUNT`] does not exist or may not be used.
pub const FALLBACK_SERVICE_ACCOUNT: &str = "default";
/// The lifetime asked of the ServiceAccount token.
pub const TOKEN_SECONDS: i64 = 3600;

/// No bearer token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file cannot be read.
    #[error("cannot read the token file {path}")]
    TokenFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The token file holds nothing.
    #[error("the token file {path} is empty")]
    EmptyTokenFile {
        /// The file.
        path: String,
    },
    /// No kubeconfig (needed for a token when no --token-file is given).
    #[error(
        "no Kubernetes credentials to request a token with (give --token-file, or a kubeconfig)"
    )]
    NoKube(#[source] Box<crate::connect::ConnectError>),
    /// The TokenRequest failed.
    #[error("cannot create a token for service account {namespace}/{name}")]
    TokenRequest {
        /// The account's namespace.
        namespace: String,
        /// The account.
        name: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The TokenRequest answered without a token.
    #[error("the token request for {namespace}/{name} returned no token")]
    NoToken {
        /// The account's namespace.
        namespace: String,
        /// The account.
        name: String,
    },
    /// The cache cannot be used.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Reads a bearer token from a file (surrounding whitespace dropped).
pub fn token_from_file(path: &Path) -> Result<SecretString, AuthError> {
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
        AuthError::TokenFile {
            path: path.display().to_string(),
            source,
        }
    })?);
    let token = text.trim();
    if token.is_empty() {
        return Err(AuthError::EmptyTokenFile {
            path: path.display().to_string(),
        });
    }
    Ok(SecretString::from(token))
}

/// Where the ServiceAccount tokens come from: a Kubernetes client and the account.
pub struct ServiceAccountSource {
    /// The client.
    pub kube: kube::Client,
    /// The account's namespace.
    pub namespace: String,
    /// The account; `None` tries [`DEFAULT_SERVICE_ACCOUNT`] then [`FALLBACK_SERVICE_ACCOUNT`].
    pub name: Option<String>,
}

impl ServiceAccountSource {
    /// The cache identity part naming the account.
    fn describe(&self) -> String {
        format!(
            "{}/{}",
            self.namespace,
            self.name.as_deref().unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        )
    }

    /// A fresh ServiceAccount token and its expiry.
    async fn request(&self) -> Result<(SecretString, DateTime<Utc>), AuthError> {
        match &self.name {
            Some(name) => self.request_for(name).await,
            None => match self.request_for(DEFAULT_SERVICE_ACCOUNT).await {
                Err(AuthError::TokenRequest {
                    source: kube::Error::Api(status),
                    ..
                }) if status.code == 404 || status.code == 403 => {
                    tracing::info!(
                        "no token for {DEFAULT_SERVICE_ACCOUNT} ({}), trying {FALLBACK_SERVICE_ACCOUNT}",
                        status.code
                    );
                    self.request_for(FALLBACK_SERVICE_ACCOUNT).await
                }
                other => other,
            },
        }
    }

    async fn request_for(&self, name: &str) -> Result<(SecretString, DateTime<Utc>), AuthError> {
        let api: Api<ServiceAccount> = Api::namespaced(self.kube.clone(), &self.namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .map_err(|source| AuthError::TokenRequest {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
                source,
            })?;
        let status = answer.status.unwrap_or_default();
        let token = status
            .token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AuthError::NoToken {
                namespace: self.namespace.clone(),
                name: name.to_owned(),
            })?;
        let expires = status
            .expiration_timestamp
            .and_then(|t| DateTime::from_timestamp(t.0.as_second(), 0))
            .unwrap_or_else(|| Utc::now() + chrono::TimeDelta::seconds(TOKEN_SECONDS));
        Ok((SecretString::from(token), expires))
    }
}

struct Held {
    token: CachedToken,
    from_cache: bool,
}

/// ServiceAccount tokens exchanged for the manager's JWT, cached per manager and account.
pub struct ServiceAccountCredentials {
    source: ServiceAccountSource,
    identity: String,
    cache: Cache,
    held: Mutex<Option<Held>>,
}

impl ServiceAccountCredentials {
    /// Credentials for the manager named `manager` (its URL, or the cluster and namespace
    /// it was found in), cached in `cache`.
    pub fn new(source: ServiceAccountSource, manager: &str, cache: Cache) -> Self {
        let identity = format!("{manager} as {}", source.describe());
        ServiceAccountCredentials {
            source,
            identity,
            cache,
            held: Mutex::new(None),
        }
    }

    /// What the cached token is for: the manager and the service account.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// A new token: TokenRequest, then the exchange (or the ServiceAccount token itself).
    async fn mint(&self, transport: &Transport) -> Result<CachedToken, ClientError> {
        let (k8s_token, k8s_expiry) = self.source.request().await?;
        let token = match transport.exchange(&k8s_token).await? {
            Some(jwt) => CachedToken::new(
                &self.identity,
                &SecretString::from(jwt.token),
                jwt.expires_at,
                TokenKind::Exchanged,
            ),
            None => {
                tracing::debug!(
                    "no token exchange on this manager: sending the ServiceAccount token"
                );
                CachedToken::new(
                    &self.identity,
                    &k8s_token,
                    k8s_expiry,
                    TokenKind::ServiceAccount,
                )
            }
        };
        if let Err(e) = self.cache.store_token(&token) {
            tracing::warn!("cannot cache the token: {}", crate::chain(&e));
        }
        Ok(token)
    }
}

#[async_trait::async_trait]
impl Credentials for ServiceAccountCredentials {
    async fn bearer(&self, transport: &Transport) -> Result<Option<SecretString>, ClientError> {
        let mut held = self.held.lock().await;
        let now = Utc::now();
        if let Some(h) = held.as_ref().filter(|h| h.token.fresh_at(now)) {
            return Ok(Some(h.token.token()));
        }
        if let Some(token) = self
            .cache
            .load_token(&self.identity)
            .filter(|t| t.fresh_at(now))
        {
            tracing::debug!("using the cached token (expires {})", token.expires_at);
            let bearer = token.token();
            *held = Some(Held {
                token,
                from_cache: true,
            });
            return Ok(Some(bearer));
        }
        let token = self.mint(transport).await?;
        let bearer = token.token();
        *held = Some(Held {
            token,
            from_cache: false,
        });
        Ok(Some(bearer))
    }

    async fn refused(&self) -> bool {
        let mut held = self.held.lock().await;
        let from_cache = held.as_ref().is_some_and(|h| h.from_cache);
        *held = None;
        if let Err(e) = self.cache.forget(&self.identity) {
            tracing::warn!("cannot remove the refused token: {}", crate::chain(&e));
        }
        from_cache
    }
}
