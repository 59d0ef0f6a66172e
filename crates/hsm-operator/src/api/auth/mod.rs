//! Who is calling, and may they: every request with a bearer token is authenticated, and
//! every access is authorised by the cluster's RBAC.
//!
//! - **Authentication.** A Kubernetes token (ServiceAccount, static, OIDC: whatever the API
//!   server accepts) is checked with a TokenReview. The API's own tokens, issued by
//!   `POST /api/v1/auth/token` for the Go plugin in exchange for a ServiceAccount token, are
//!   HS256 JWTs signed with a key every replica shares ([`jwt`]); they carry the identity the
//!   TokenReview gave.
//! - **Authorisation.** Each access is a SubjectAccessReview for that identity on a resource
//!   of the `hsm.j5t.io` group in the manager's namespace ([`Access`] lists the mapping), so
//!   a RoleBinding there (or a ClusterRoleBinding) decides who may read or write which
//!   secret; `resourceNames` can narrow a grant to named secrets.
//!
//! Both answers are cached briefly ([`cache`]): a burst of requests with one token costs one
//! TokenReview, and one SubjectAccessReview per distinct access.

pub mod cache;
pub mod jwt;
pub mod kube;

use async_trait::async_trait;
use cache::TtlCache;
use chrono::{DateTime, Utc};
use jwt::JwtKey;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// An authenticated identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    /// The user name (`system:serviceaccount:<ns>:<name>` for a ServiceAccount).
    pub username: String,
    /// The uid.
    pub uid: String,
    /// The groups.
    pub groups: Vec<String>,
}

/// What an access asks for: a verb on a resource (and subresource) of `hsm.j5t.io`,
/// optionally on one named secret. The mapping of routes:
///
/// | Route | Verb | Resource |
/// |---|---|---|
/// | `GET /api/v1/hsm/secrets` | `list` | `hsmsecrets` |
/// | `GET /api/v1/hsm/secrets/{path}` (and `/metadata`, `/checksum`) | `get` | `hsmsecrets`, name = path |
/// | `POST`/`PUT /api/v1/hsm/secrets/{path}` | `create` when no device holds it, else `update` | `hsmsecrets`, name = path |
/// | `DELETE /api/v1/hsm/secrets/{path}` | `delete` | `hsmsecrets`, name = path |
/// | `DELETE /api/v1/hsm/secrets/{path}/{key}` | `update` | `hsmsecrets`, name = path |
/// | `GET /api/v1/info`, `/api/v1/hsm/info`, `/api/v1/hsm/status` | `get` | `hsmdevices` |
/// | `POST /api/v1/hsm/change-pin` | `update` | `hsmdevices/pin` |
/// | `POST /api/v1/hsm/mirror/sync` | `create` | `hsmsecrets/mirror` |
///
/// Open to everyone: `/api/v1/health`, `/healthz`, `/api/v1/auth/token`,
/// `/api/v1/openapi.json`, `/` and `/web/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Access {
    /// The RBAC verb.
    pub verb: &'static str,
    /// The resource.
    pub resource: &'static str,
    /// The subresource.
    pub subresource: Option<&'static str>,
    /// The secret's name, for accesses to one secret.
    pub name: Option<String>,
}

impl Access {
    fn on(verb: &'static str, resource: &'static str, name: Option<&str>) -> Access {
        Access {
            verb,
            resource,
            subresource: None,
            name: name.map(str::to_owned),
        }
    }

    /// Listing secrets.
    pub fn list_secrets() -> Access {
        Access::on("list", "hsmsecrets", None)
    }

    /// Reading a secret, its metadata or its checksum.
    pub fn read_secret(name: &str) -> Access {
        Access::on("get", "hsmsecrets", Some(name))
    }

    /// Writing a secret that no device holds yet.
    pub fn create_secret(name: &str) -> Access {
        Access::on("create", "hsmsecrets", Some(name))
    }

    /// Rewriting a secret, or deleting one of its keys.
    pub fn update_secret(name: &str) -> Access {
        Access::on("update", "hsmsecrets", Some(name))
    }

    /// Deleting a secret.
    pub fn delete_secret(name: &str) -> Access {
        Access::on("delete", "hsmsecrets", Some(name))
    }

    /// Reading the devices' identity and health.
    pub fn read_devices() -> Access {
        Access::on("get", "hsmdevices", None)
    }

    /// Changing the devices' PIN.
    pub fn change_pin() -> Access {
        Access {
            subresource: Some("pin"),
            ..Access::on("update", "hsmdevices", None)
        }
    }

    /// Triggering mirroring.
    pub fn mirror_sync() -> Access {
        Access {
            subresource: Some("mirror"),
            ..Access::on("create", "hsmsecrets", None)
        }
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if let Some(sub) = self.subresource {
            write!(f, "/{sub}")?;
        }
        write!(f, ".{}", hsm_api::GROUP)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        Ok(())
    }
}

/// A review could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The TokenReview failed (not: the token was refused).
    #[error("TokenReview failed: {0}")]
    TokenReview(#[source] ::kube::Error),
    /// The SubjectAccessReview failed.
    #[error("SubjectAccessReview failed: {0}")]
    AccessReview(#[source] ::kube::Error),
}

/// The cluster's answers on tokens and accesses: the Kubernetes API ([`kube::KubeReviews`])
/// in the manager, anything else in unit tests.
#[async_trait]
pub trait Reviews: Send + Sync {
    /// Who `token` is, or `None` when the API server does not accept it.
    async fn token_review(&self, token: &SecretString) -> Result<Option<UserInfo>, AuthError>;
    /// Whether `user` may make `access` in `namespace`.
    async fn access_review(
        &self,
        user: &UserInfo,
        access: &Access,
        namespace: &str,
    ) -> Result<bool, AuthError>;
}

/// Why a request is not authenticated (each has its Go error code).
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// No `Authorization` header.
    #[error("authorization header is required")]
    MissingHeader,
    /// Not `Bearer <token>`.
    #[error("authorization header must be 'Bearer <token>'")]
    InvalidFormat,
    /// The token is not accepted.
    #[error("invalid or expired token")]
    InvalidToken,
    /// The TokenReview could not be made.
    #[error(transparent)]
    Review(AuthError),
}

/// Why an access is not allowed.
#[derive(Debug, thiserror::Error)]
pub enum AuthzError {
    /// RBAC says no.
    #[error("{user} may not {access} in namespace {namespace}")]
    Forbidden {
        /// Who.
        user: String,
        /// What.
        access: Access,
        /// Where.
        namespace: String,
    },
    /// The SubjectAccessReview could not be made.
    #[error(transparent)]
    Review(AuthError),
}

/// Why a token exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The API server does not accept the token.
    #[error("the token is not accepted by the Kubernetes API")]
    Rejected,
    /// The token is not a ServiceAccount's.
    #[error("{0} is not a ServiceAccount (system:serviceaccount:<namespace>:<name>)")]
    NotServiceAccount(String),
    /// The TokenReview could not be made.
    #[error(transparent)]
    Review(AuthError),
}

/// A token issued by the exchange.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// How long answers and tokens last.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// How long a TokenReview answer is reused.
    pub token_ttl: Duration,
    /// How long a SubjectAccessReview answer (allowed or denied) is reused.
    pub access_ttl: Duration,
    /// Most answers kept in each cache.
    pub cache_capacity: usize,
    /// How long an exchanged token is valid (30 minutes, as the Go manager's).
    pub token_validity: Duration,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            token_ttl: Duration::from_secs(10),
            access_ttl: Duration::from_secs(5),
            cache_capacity: 1024,
            token_validity: Duration::from_secs(30 * 60),
        }
    }
}

/// Authentication and authorisation of the REST API.
pub struct Auth {
    reviews: Arc<dyn Reviews>,
    key: JwtKey,
    namespace: String,
    settings: AuthSettings,
    tokens: TtlCache<[u8; 32], UserInfo>,
    accesses: TtlCache<(UserInfo, Access), bool>,
}

impl Auth {
    /// Reviews through `reviews`, tokens signed with `key`, accesses checked in `namespace`
    /// (the manager's).
    pub fn new(
        reviews: Arc<dyn Reviews>,
        key: JwtKey,
        namespace: &str,
        settings: AuthSettings,
    ) -> Self {
        Auth {
            tokens: TtlCache::new(settings.token_ttl, settings.cache_capacity),
            accesses: TtlCache::new(settings.access_ttl, settings.cache_capacity),
            reviews,
            key,
            namespace: namespace.to_owned(),
            settings,
        }
    }

    /// The namespace accesses are checked in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Who sent a request with this `Authorization` header.
    pub async fn authenticate(&self, header: Option<&str>) -> Result<UserInfo, AuthnError> {
        let header = header.ok_or(AuthnError::MissingHeader)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthnError::InvalidFormat)?;
        if jwt::is_api_token(token) {
            return self.key.verify(token).map_err(|error| {
                tracing::debug!(%error, "API token refused");
                AuthnError::InvalidToken
            });
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.tokens.get(&digest) {
            return Ok(user);
        }
        let secret = SecretString::from(token.to_owned());
        let user = self
            .reviews
            .token_review(&secret)
            .await
            .map_err(AuthnError::Review)?
            .ok_or(AuthnError::InvalidToken)?;
        self.tokens.insert(digest, user.clone());
        Ok(user)
    }

    /// Whether `user` may make `access`.
    pub async fn authorize(&self, user: &UserInfo, access: &Access) -> Result<(), AuthzError> {
        let key = (user.clone(), access.clone());
        let allowed = match self.accesses.get(&key) {
            Some(allowed) => allowed,
            None => {
                let allowed = self
                    .reviews
                    .access_review(user, access, &self.namespace)
                    .await
                    .map_err(AuthzError::Review)?;
                self.accesses.insert(key, allowed);
                allowed
            }
        };
        match allowed {
            true => Ok(()),
            false => Err(AuthzError::Forbidden {
                user: user.username.clone(),
                access: access.clone(),
                namespace: self.namespace.clone(),
            }),
        }
    }

    /// Exchanges a ServiceAccount token for one of the API's own.
    pub async fn exchange(&self, sa_token: &SecretString) -> Result<IssuedToken, ExchangeError> {
        let user = self
            .reviews
            .token_review(sa_token)
            .await
            .map_err(ExchangeError::Review)?
            .ok_or(ExchangeError::Rejected)?;
        let service_account = user
            .username
            .strip_prefix("system:serviceaccount:")
            .and_then(|rest| rest.split_once(':'))
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
            .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
            .ok_or_else(|| ExchangeError::NotServiceAccount(user.username.clone()))?;
        let (token, expires_at) = self.key.issue(
            &user,
            (&service_account.0, &service_account.1),
            Utc::now(),
            self.settings.token_validity,
        );
        Ok(IssuedToken { token, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use secrecy::ExposeSecret;

    /// Reviews answered from a table, counting the calls.
    #[derive(Default)]
    struct Table {
        users: Vec<(&'static str, UserInfo)>,
        grants: Vec<(&'static str, Access)>,
        calls: Mutex<(usize, usize)>,
    }

    #[async_trait]
    impl Reviews for Table {
        async fn token_review(&self, token: &SecretString) -> Result<Option<UserInfo>, AuthError> {
            self.calls.lock().0 += 1;
            Ok(self
                .users
                .iter()
                .find(|(t, _)| *t == token.expose_secret())
                .map(|(_, u)| u.clone()))
        }

        async fn access_review(
            &self,
            user: &UserInfo,
            access: &Access,
            _: &str,
        ) -> Result<bool, AuthError> {
            self.calls.lock().1 += 1;
            Ok(self
                .grants
                .iter()
                .any(|(u, a)| *u == user.username && a == access))
        }
    }

    fn sa(name: &str) -> UserInfo {
        UserInfo {
            username: format!("system:serviceaccount:apps:{name}"),
            uid: format!("uid-{name}"),
            groups: vec!["system:serviceaccounts".into()],
        }
    }

    fn auth(table: Arc<Table>) -> Auth {
        Auth::new(
            table,
            JwtKey::from_bytes(&[1; 32]),
            "hsm-system",
            AuthSettings::default(),
        )
    }

    #[tokio::test]
    async fn headers_tokens_and_grants() {
        let table = Arc::new(Table {
            users: vec![
                ("reader-token", sa("reader")),
                (
                    "admin-token",
                    UserInfo {
                        username: "admin".into(),
                        ..Default::default()
                    },
                ),
            ],
            grants: vec![(
                "system:serviceaccount:apps:reader",
                Access::read_secret("db"),
            )],
            ..Default::default()
        });
        let auth = auth(table.clone());
        assert!(matches!(
            auth.authenticate(None).await,
            Err(AuthnError::MissingHeader)
        ));
        assert!(matches!(
            auth.authenticate(Some("Basic abc")).await,
            Err(AuthnError::InvalidFormat)
        ));
        assert!(matches!(
            auth.authenticate(Some("Bearer nope")).await,
            Err(AuthnError::InvalidToken)
        ));
        let reader = auth
            .authenticate(Some("Bearer reader-token"))
            .await
            .unwrap();
        assert_eq!(reader, sa("reader"));
        // Cached: a second request makes no TokenReview.
        let before = table.calls.lock().0;
        auth.authenticate(Some("Bearer reader-token"))
            .await
            .unwrap();
        assert_eq!(table.calls.lock().0, before);

        auth.authorize(&reader, &Access::read_secret("db"))
            .await
            .unwrap();
        auth.authorize(&reader, &Access::read_secret("db"))
            .await
            .unwrap();
        assert_eq!(table.calls.lock().1, 1);
        let denied = auth
            .authorize(&reader, &Access::update_secret("db"))
            .await
            .unwrap_err();
        assert_eq!(
            denied.to_string(),
            "system:serviceaccount:apps:reader may not update hsmsecrets.hsm.j5t.io \"db\" in namespace hsm-system"
        );
    }

    #[tokio::test]
    async fn the_exchange_takes_service_accounts_only_and_its_token_authenticates() {
        let table = Arc::new(Table {
            users: vec![
                ("sa-token", sa("kubectl-hsm")),
                (
                    "user-token",
                    UserInfo {
                        username: "alice".into(),
                        ..Default::default()
                    },
                ),
            ],
            ..Default::default()
        });
        let auth = auth(table.clone());
        let issued = auth
            .exchange(&SecretString::from("sa-token".to_owned()))
            .await
            .unwrap();
        let header = format!("Bearer {}", issued.token);
        let calls = table.calls.lock().0;
        assert_eq!(
            auth.authenticate(Some(&header)).await.unwrap(),
            sa("kubectl-hsm")
        );
        assert_eq!(
            table.calls.lock().0,
            calls,
            "no TokenReview for our own token"
        );
        assert!(matches!(
            auth.exchange(&SecretString::from("user-token".to_owned()))
                .await,
            Err(ExchangeError::NotServiceAccount(_))
        ));
        assert!(matches!(
            auth.exchange(&SecretString::from("bad".to_owned())).await,
            Err(ExchangeError::Rejected)
        ));
        let tampered = format!("Bearer {}x", issued.token);
        assert!(matches!(
            auth.authenticate(Some(&tampered)).await,
            Err(AuthnError::InvalidToken)
        ));
    }
}
