//! The API's own bearer tokens (`POST /api/v1/auth/token`, kept for the Go plugin): HS256
//! JWTs carrying the ServiceAccount's identity. The Go manager signed them with a key made
//! per process, so they died with a restart and failed on every other replica (its defect
//! 15). Here the key lives in a Secret in the manager's namespace that every replica reads,
//! made by whichever replica starts first: create, and on AlreadyExists read the winner's.

use super::UserInfo;
use chrono::{DateTime, Utc};
use hsm_api::names::{APP_NAME, labels};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `iss` of every token, as the Go manager wrote it.
pub const ISSUER: &str = "hsm-secrets-operator";
/// The Secret's key holding the signing key.
pub const KEY_FIELD: &str = "signing-key";
/// Bytes of a new signing key.
const KEY_BYTES: usize = 32;

/// A token's claims: the Go claims (`sub` = ServiceAccount name, `namespace`, `iss`, `exp`,
/// `iat`, `nbf`) and the identity each request is authorised as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The ServiceAccount's name.
    pub sub: String,
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// [`ISSUER`].
    pub iss: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// The Kubernetes user name (`system:serviceaccount:<ns>:<name>`).
    pub username: String,
    /// The user's uid.
    #[serde(default)]
    pub uid: String,
    /// The user's groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Why a token of ours was refused.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Bad signature, expired, not yet valid, wrong issuer, malformed.
    #[error("invalid token: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
}

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The Kubernetes API failed.
    #[error("the API token signing key Secret {name}: {source}")]
    Kube {
        /// The Secret.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The Secret exists without a usable key; it is not overwritten (another replica may
    /// be using it), so someone must fix or delete it.
    #[error("Secret {name} has no {KEY_FIELD} of at least {KEY_BYTES} bytes: fix or delete it")]
    Malformed {
        /// The Secret.
        name: String,
    },
}

/// The signing key. Its bytes never reach a log: `Debug` leaves them out.
#[derive(Clone)]
pub struct JwtKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey").finish_non_exhaustive()
    }
}

impl JwtKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        JwtKey {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
        }
    }

    /// The key in Secret `namespace/name`, made there when missing. Race-safe between
    /// replicas: each tries to create it, and one that finds it already created reads it.
    pub async fn load_or_create(
        client: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<JwtKey, KeyError> {
        let api = Api::<Secret>::namespaced(client.clone(), namespace);
        let kube_error = |source| KeyError::Kube {
            name: name.to_owned(),
            source,
        };
        if let Some(existing) = api.get_opt(name).await.map_err(kube_error)? {
            return key_of(&existing, name);
        }
        let mut bytes = vec![0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([
                    (labels::NAME.to_owned(), APP_NAME.to_owned()),
                    (labels::COMPONENT.to_owned(), "api".to_owned()),
                ])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([(
                KEY_FIELD.to_owned(),
                ByteString(bytes.clone()),
            )])),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %name, "created the API token signing key");
                Ok(JwtKey::from_bytes(&bytes))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let winner = api.get(name).await.map_err(kube_error)?;
                key_of(&winner, name)
            }
            Err(other) => Err(kube_error(other)),
        }
    }

    /// A token for `user` (a ServiceAccount `namespace/name`) valid for `validity` from
    /// `now`.
    pub fn issue(
        &self,
        user: &UserInfo,
        service_account: (&str, &str),
        now: DateTime<Utc>,
        validity: Duration,
    ) -> (String, DateTime<Utc>) {
        let expires = now + chrono::Duration::from_std(validity).unwrap_or_default();
        let claims = Claims {
            sub: service_account.1.to_owned(),
            namespace: service_account.0.to_owned(),
            iss: ISSUER.to_owned(),
            exp: expires.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            username: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with a byte key cannot fail");
        (token, expires)
    }

    /// The identity in one of our tokens.
    pub fn verify(&self, token: &str) -> Result<UserInfo, JwtError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map_err(JwtError::Invalid)?
            .claims;
        Ok(UserInfo {
            username: claims.username,
            uid: claims.uid,
            groups: claims.groups,
        })
    }
}

/// Whether `token` is one of the API's own (an HS256 JWT), rather than a Kubernetes token
/// (ServiceAccount tokens are RS256 or ES256 JWTs; static tokens are not JWTs at all).
pub fn is_api_token(token: &str) -> bool {
    jsonwebtoken::decode_header(token).is_ok_and(|h| h.alg == Algorithm::HS256)
}

fn key_of(secret: &Secret, name: &str) -> Result<JwtKey, KeyError> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(KEY_FIELD))
        .filter(|k| k.0.len() >= KEY_BYTES)
        .map(|k| JwtKey::from_bytes(&k.0))
        .ok_or_else(|| KeyError::Malformed {
            name: name.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserInfo {
        UserInfo {
            username: "system:serviceaccount:apps:kubectl-hsm".into(),
            uid: "u-1".into(),
            groups: vec!["system:serviceaccounts".into()],
        }
    }

    #[test]
    fn a_token_verifies_with_the_same_key_only_and_expires() {
        let key = JwtKey::from_bytes(&[7; 32]);
        let now = Utc::now();
        let (token, expires) = key.issue(
            &user(),
            ("apps", "kubectl-hsm"),
            now,
            Duration::from_secs(1800),
        );
        assert!(is_api_token(&token));
        assert_eq!((expires - now).num_seconds(), 1800);
        assert_eq!(key.verify(&token).unwrap(), user());
        // Another replica with the same Secret verifies it; another key does not.
        assert!(JwtKey::from_bytes(&[7; 32]).verify(&token).is_ok());
        assert!(JwtKey::from_bytes(&[8; 32]).verify(&token).is_err());
        let (old, _) = key.issue(
            &user(),
            ("apps", "kubectl-hsm"),
            now - chrono::Duration::hours(2),
            Duration::from_secs(1800),
        );
        assert!(key.verify(&old).is_err());
        assert!(!is_api_token("static-token"));
        assert!(!format!("{key:?}").contains('7'));
    }
}
