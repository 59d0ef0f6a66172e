//! ServiceAccount identities: TokenRequest (`serviceaccounts/<name>/token`) and the directory
//! a pod gets at `/var/run/secrets/kubernetes.io/serviceaccount/` (`token`, `ca.crt`,
//! `namespace`), so a process started with `KUBERNETES_SERVICE_HOST`/`_PORT` and that
//! directory builds a `kube::Client` by in-cluster config, as in a pod.

use std::path::Path;

use serde_json::{Value, json};

use crate::authn::{API_AUDIENCE, BoundRef, TokenGrant};
use crate::error::ApiError;
use crate::store::Store;
use crate::{Emulator, EmulatorError};

/// The default lifetime of a requested token (one hour, as the real server).
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The shortest lifetime a TokenRequest may ask for (ten minutes).
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

fn core_object<'a>(
    store: &'a Store,
    plural: &str,
    namespace: &str,
    name: &str,
) -> Result<&'a Value, ApiError> {
    store
        .get(&(String::new(), plural.to_string()), namespace, name)
        .map(|o| &**o)
        .ok_or_else(|| ApiError::not_found("", plural, name))
}

fn reference(o: &Value) -> BoundRef {
    BoundRef {
        name: o["metadata"]["name"].as_str().unwrap_or_default().into(),
        uid: o["metadata"]["uid"].as_str().unwrap_or_default().into(),
    }
}

fn invalid(name: &str, field: &str, why: &str) -> ApiError {
    ApiError::invalid(
        "authentication.k8s.io",
        "TokenRequest",
        name,
        &[(field.into(), why.into())],
    )
}

/// The grant a TokenRequest `body` asks for on ServiceAccount `namespace/name`.
pub fn grant_of(
    store: &Store,
    namespace: &str,
    name: &str,
    body: &Value,
) -> Result<TokenGrant, ApiError> {
    let sa = core_object(store, "serviceaccounts", namespace, name)?;
    let spec = &body["spec"];
    let ttl = spec["expirationSeconds"]
        .as_i64()
        .unwrap_or(DEFAULT_EXPIRATION_SECONDS);
    if ttl < MIN_EXPIRATION_SECONDS {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &format!("Invalid value: {ttl}: may not specify a duration less than 10 minutes"),
        ));
    }
    if ttl > 1 << 32 {
        return Err(invalid(
            name,
            "spec.expirationSeconds",
            &format!("Invalid value: {ttl}: may not specify a duration larger than 2^32 seconds"),
        ));
    }
    let mut grant = TokenGrant {
        namespace: namespace.to_string(),
        service_account: reference(sa),
        pod: None,
        secret: None,
        audiences: spec["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect(),
        ttl_seconds: ttl,
    };
    if grant.audiences.is_empty() {
        grant.audiences.push(API_AUDIENCE.to_string());
    }
    let bound = &spec["boundObjectRef"];
    if bound.is_object() {
        let bound_name = bound["name"].as_str().unwrap_or_default();
        let (plural, slot) = match bound["kind"].as_str() {
            Some("Pod") => ("pods", &mut grant.pod),
            Some("Secret") => ("secrets", &mut grant.secret),
            other => {
                return Err(invalid(
                    name,
                    "spec.boundObjectRef.kind",
                    &format!(
                        "Unsupported value: {:?}: supported values: \"Pod\", \"Secret\"",
                        other.unwrap_or_default()
                    ),
                ));
            }
        };
        let o = core_object(store, plural, namespace, bound_name)?;
        let r = reference(o);
        if let Some(uid) = bound["uid"].as_str().filter(|u| !u.is_empty())
            && uid != r.uid
        {
            return Err(ApiError::conflict(
                "",
                plural,
                bound_name,
                "the UID in the bound object reference does not match",
            ));
        }
        *slot = Some(r);
    }
    Ok(grant)
}

impl Emulator {
    /// Answers a TokenRequest on ServiceAccount `namespace/name`.
    pub(crate) fn token_request(
        &self,
        namespace: &str,
        name: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::BadRequest(
                "the body must be a JSON object".into(),
            ));
        }
        let grant = grant_of(&self.inner.store.lock(), namespace, name, &body)?;
        let (token, exp) = self.inner.auth.read().issue(&grant);
        let expires = chrono::DateTime::from_timestamp(exp, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        body["apiVersion"] = json!("authentication.k8s.io/v1");
        body["kind"] = json!("TokenRequest");
        body["metadata"] = json!({"name": name, "namespace": namespace, "creationTimestamp": null});
        body["spec"]["audiences"] = json!(grant.audiences);
        body["spec"]["expirationSeconds"] = json!(grant.ttl_seconds);
        if body["spec"].get("boundObjectRef").is_none() {
            body["spec"]["boundObjectRef"] = Value::Null;
        }
        body["status"] = json!({"token": token, "expirationTimestamp": expires});
        Ok(body)
    }

    /// A token for ServiceAccount `namespace/name` with any lifetime, negative included
    /// (for tests of expired tokens); what TokenRequest would issue otherwise.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audiences: &[&str],
        ttl: chrono::Duration,
    ) -> Result<String, ApiError> {
        let spec = json!({"audiences": audiences});
        let mut grant = grant_of(
            &self.inner.store.lock(),
            namespace,
            name,
            &json!({"spec": spec}),
        )?;
        grant.ttl_seconds = ttl.num_seconds();
        Ok(self.inner.auth.read().issue(&grant).0)
    }

    /// Writes `dir/token` (a one-hour token for the API), `dir/ca.crt` and `dir/namespace`
    /// for ServiceAccount `namespace/name`, the layout of
    /// `/var/run/secrets/kubernetes.io/serviceaccount/`.
    pub fn write_service_account_dir(
        &self,
        namespace: &str,
        name: &str,
        dir: &Path,
    ) -> Result<(), EmulatorError> {
        let token = self
            .service_account_token(
                namespace,
                name,
                &[API_AUDIENCE],
                chrono::Duration::seconds(DEFAULT_EXPIRATION_SECONDS),
            )
            .map_err(|source| EmulatorError::Api {
                context: format!("a token for ServiceAccount {namespace}/{name}"),
                source,
            })?;
        std::fs::create_dir_all(dir).map_err(|source| EmulatorError::Io {
            context: format!("creating {}", dir.display()),
            source,
        })?;
        for (file, content) in [
            ("token", token),
            ("ca.crt", self.ca_pem()),
            ("namespace", namespace.to_string()),
        ] {
            let path = dir.join(file);
            std::fs::write(&path, content).map_err(|source| EmulatorError::Io {
                context: format!("writing {}", path.display()),
                source,
            })?;
        }
        Ok(())
    }
}
