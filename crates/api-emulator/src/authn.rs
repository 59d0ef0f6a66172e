//! Authentication: who a request is. A bearer token is the static admin token of the
//! kubeconfig the emulator writes, a token a test registered ([`crate::Emulator::add_token`]),
//! or a ServiceAccount token issued by TokenRequest — a signed JWT with audiences and an
//! expiry, bound to the ServiceAccount's uid (and to a Pod's or Secret's, when asked), so
//! deleting the ServiceAccount invalidates it, as on a real cluster. A request without
//! credentials is `system:anonymous`; a token that does not verify is a 401.

use std::collections::HashMap;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::Store;

/// The issuer and default audience of ServiceAccount tokens, as a cluster names itself.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// The group the real server treats as superusers (no authorisation check).
pub const MASTERS_GROUP: &str = "system:masters";

/// A user a request or a token authenticates as.
#[derive(Debug, Clone, PartialEq)]
pub struct UserInfo {
    /// `username`, e.g. `system:serviceaccount:ns:name`.
    pub username: String,
    /// `uid`.
    pub uid: String,
    /// `groups`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The user of requests without credentials.
    pub fn anonymous() -> Self {
        UserInfo {
            username: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The administrator of the emulator's kubeconfig (a member of `system:masters`).
    pub fn admin() -> Self {
        UserInfo {
            username: "kubernetes-admin".into(),
            uid: String::new(),
            groups: vec![MASTERS_GROUP.into(), "system:authenticated".into()],
        }
    }

    /// The user of a ServiceAccount's tokens.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }
}

/// Why a token does not authenticate. Every case is a 401 on a request and
/// `authenticated: false` in a TokenReview.
#[derive(Debug, thiserror::Error)]
pub enum AuthnError {
    /// The Authorization header is not `Bearer <token>`.
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    /// Not a token the emulator knows, nor a JWT it signed.
    #[error("invalid bearer token")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    /// The JWT's `exp` has passed.
    #[error("service account token has expired")]
    Expired,
    /// The JWT is not for any of the accepted audiences.
    #[error("token audiences do not match the accepted audiences")]
    WrongAudience,
    /// The ServiceAccount (or bound object) the token names is gone or was recreated.
    #[error("{kind} {namespace}/{name} of the token does not exist or has another uid")]
    BindingGone {
        /// `ServiceAccount`, `Pod` or `Secret`.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// A name and uid inside the `kubernetes.io` claim.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BoundRef {
    /// Object name.
    pub name: String,
    /// Object uid.
    pub uid: String,
}

/// The `kubernetes.io` claim of a ServiceAccount token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KubernetesClaim {
    namespace: String,
    serviceaccount: BoundRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pod: Option<BoundRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secret: Option<BoundRef>,
}

/// The claims of a ServiceAccount token, as a real cluster issues them.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    aud: Vec<String>,
    exp: i64,
    iat: i64,
    nbf: i64,
    iss: String,
    jti: String,
    sub: String,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim,
}

/// What a TokenRequest asks for, validated.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: BoundRef,
    /// A Pod the token is bound to.
    pub pod: Option<BoundRef>,
    /// A Secret the token is bound to.
    pub secret: Option<BoundRef>,
    /// The audiences (never empty).
    pub audiences: Vec<String>,
    /// Seconds from now until expiry (may be negative, for tests of expired tokens).
    pub ttl_seconds: i64,
}

/// How many verified tokens are remembered (their signatures are not checked again).
const VERIFIED_CACHE: usize = 4096;

/// The emulator's authenticator: its signing key, the admin token and registered tokens.
pub struct Authenticator {
    encoding: EncodingKey,
    decoding: DecodingKey,
    admin_token: String,
    /// Tokens whose signature was verified, with their claims; expiry, audience and the
    /// bound objects are still checked on every use.
    verified: parking_lot::Mutex<HashMap<String, Claims>>,
    /// Tokens registered by tests, as a static token file would.
    pub static_tokens: HashMap<String, UserInfo>,
}

impl Authenticator {
    /// A fresh ES256 signing key and a random admin token.
    pub fn generate() -> Self {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .expect("ring generates a P-256 key");
        Authenticator {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(key.public_key_raw()),
            admin_token: random_token(),
            verified: parking_lot::Mutex::new(HashMap::new()),
            static_tokens: HashMap::new(),
        }
    }

    /// The bearer token of the admin user.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Signs a ServiceAccount token.
    pub fn issue(&self, grant: &TokenGrant) -> (String, i64) {
        let now = chrono::Utc::now().timestamp();
        let exp = now + grant.ttl_seconds;
        let claims = Claims {
            aud: grant.audiences.clone(),
            exp,
            iat: now,
            nbf: now,
            iss: API_AUDIENCE.into(),
            jti: uuid::Uuid::new_v4().to_string(),
            sub: format!(
                "system:serviceaccount:{}:{}",
                grant.namespace, grant.service_account.name
            ),
            kubernetes: KubernetesClaim {
                namespace: grant.namespace.clone(),
                serviceaccount: grant.service_account.clone(),
                pod: grant.pod.clone(),
                secret: grant.secret.clone(),
            },
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.encoding)
            .expect("ES256 signs any claims");
        (token, exp)
    }

    /// Who a request's `Authorization` header value authenticates as.
    pub fn authenticate_header(
        &self,
        store: &Store,
        header: Option<&str>,
    ) -> Result<UserInfo, AuthnError> {
        let Some(value) = header else {
            return Ok(UserInfo::anonymous());
        };
        let token = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthnError::NotBearer)?;
        self.authenticate(store, token, &[API_AUDIENCE.to_string()])
    }

    /// Who `token` is, for one of `audiences` (static tokens are valid for any audience,
    /// as a token file's are).
    pub fn authenticate(
        &self,
        store: &Store,
        token: &str,
        audiences: &[String],
    ) -> Result<UserInfo, AuthnError> {
        if token == self.admin_token {
            return Ok(UserInfo::admin());
        }
        if let Some(user) = self.static_tokens.get(token) {
            return Ok(user.clone());
        }
        let cached = self.verified.lock().get(token).cloned();
        let claims = match cached {
            Some(c) => {
                if c.exp <= chrono::Utc::now().timestamp() {
                    return Err(AuthnError::Expired);
                }
                if !c.aud.iter().any(|a| audiences.contains(a)) {
                    return Err(AuthnError::WrongAudience);
                }
                c
            }
            None => self.verify(token, audiences)?,
        };
        let k = &claims.kubernetes;
        let sa = bound(
            store,
            "serviceaccounts",
            "ServiceAccount",
            &k.namespace,
            &k.serviceaccount,
        )?;
        if let Some(pod) = &k.pod {
            bound(store, "pods", "Pod", &k.namespace, pod)?;
        }
        if let Some(secret) = &k.secret {
            bound(store, "secrets", "Secret", &k.namespace, secret)?;
        }
        Ok(UserInfo::service_account(
            &k.namespace,
            &k.serviceaccount.name,
            sa["metadata"]["uid"].as_str().unwrap_or_default(),
        ))
    }
}

impl Authenticator {
    /// Checks a JWT's signature, issuer, expiry and audience, and remembers it.
    fn verify(&self, token: &str, audiences: &[String]) -> Result<Claims, AuthnError> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(audiences);
        validation.set_issuer(&[API_AUDIENCE]);
        validation.leeway = 0;
        validation.validate_nbf = true;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthnError::Expired,
                ErrorKind::InvalidAudience => AuthnError::WrongAudience,
                _ => AuthnError::Invalid(e),
            })?
            .claims;
        let mut verified = self.verified.lock();
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

/// The object a token is bound to, if it still exists with the same uid and is not being
/// deleted.
fn bound<'a>(
    store: &'a Store,
    plural: &str,
    kind: &'static str,
    namespace: &str,
    r: &BoundRef,
) -> Result<&'a Value, AuthnError> {
    store
        .get(&(String::new(), plural.to_string()), namespace, &r.name)
        .map(|o| &**o)
        .filter(|o| {
            o["metadata"]["uid"].as_str() == Some(r.uid.as_str())
                && o["metadata"]["deletionTimestamp"].is_null()
        })
        .ok_or_else(|| AuthnError::BindingGone {
            kind,
            namespace: namespace.to_string(),
            name: r.name.clone(),
        })
}

/// 32 random bytes, URL-safe base64.
fn random_token() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
