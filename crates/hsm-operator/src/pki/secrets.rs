//! The Secrets holding the PKI, at the API edge: reading one, and writing one so that two
//! manager replicas racing cannot overwrite each other (create fails with 409 when the
//! other was first; replace carries the resourceVersion it read as a precondition).

use super::PkiError;
use hsm_api::names::{APP_NAME, annotations, components, labels};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use std::collections::BTreeMap;

/// The Secret type of every PKI Secret.
pub const TLS_TYPE: &str = "kubernetes.io/tls";
/// The CA certificate, in leaf Secrets.
pub const CA_CRT: &str = "ca.crt";
/// The certificate.
pub const TLS_CRT: &str = "tls.crt";
/// The private key.
pub const TLS_KEY: &str = "tls.key";

/// A Secret as read: who manages it, its version, its data.
#[derive(Clone)]
pub struct Stored {
    /// Its name.
    pub name: String,
    /// The `hsm.j5t.io/mtls-managed-by` annotation.
    pub manager: Option<String>,
    /// Its resourceVersion, the precondition of a replace.
    pub resource_version: Option<String>,
    data: BTreeMap<String, ByteString>,
}

impl Stored {
    fn new(secret: Secret) -> Self {
        Stored {
            name: secret.metadata.name.unwrap_or_default(),
            manager: secret
                .metadata
                .annotations
                .and_then(|mut a| a.remove(annotations::MTLS_MANAGED_BY)),
            resource_version: secret.metadata.resource_version,
            data: secret.data.unwrap_or_default(),
        }
    }

    /// Whether this manager may write it: only when annotated as ours. A Secret without the
    /// annotation was made by someone else (by hand, by cert-manager) and is left alone.
    pub fn ours(&self) -> bool {
        self.manager.as_deref() == Some(APP_NAME)
    }

    /// Who manages it, for messages.
    pub fn manager_name(&self) -> &str {
        self.manager.as_deref().unwrap_or("nobody (no annotation)")
    }

    /// The UTF-8 text under `key`, if there is any.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.data
            .get(key)
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .filter(|s| !s.trim().is_empty())
    }

    /// The text under `key`, or the error saying it is missing.
    pub fn require(&self, namespace: &str, key: &'static str) -> Result<&str, PkiError> {
        self.text(key).ok_or_else(|| PkiError::MissingKey {
            namespace: namespace.to_owned(),
            name: self.name.clone(),
            key,
        })
    }
}

/// A PKI Secret as this manager writes it: type `kubernetes.io/tls`, the mTLS labels and
/// annotation, no owner (it must survive an uninstall), `resource_version` as precondition.
pub fn build(name: &str, data: &[(&str, &str)], resource_version: Option<String>) -> Secret {
    let data = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([
                (labels::MANAGED_BY_K8S.to_owned(), APP_NAME.to_owned()),
                (labels::COMPONENT.to_owned(), components::MTLS.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                annotations::MTLS_MANAGED_BY.to_owned(),
                APP_NAME.to_owned(),
            )])),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some(TLS_TYPE.to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

/// Reads a Secret; `None` when it does not exist.
pub async fn get(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
) -> Result<Option<Stored>, PkiError> {
    api.get_opt(name)
        .await
        .map(|s| s.map(Stored::new))
        .map_err(|source| PkiError::Read {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })
}

/// What a write came to.
pub enum Written {
    /// Written; the Secret as stored now.
    Done(Stored),
    /// Another writer got there first (409): read again and decide again.
    Lost,
}

/// Creates `secret` when it has no resourceVersion, else replaces the version it names.
pub async fn write(
    api: &Api<Secret>,
    namespace: &str,
    secret: Secret,
) -> Result<Written, PkiError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let params = PostParams {
        field_manager: Some(APP_NAME.to_owned()),
        ..PostParams::default()
    };
    let result = match secret.metadata.resource_version {
        None => api.create(&params, &secret).await,
        Some(_) => api.replace(&name, &params, &secret).await,
    };
    match result {
        Ok(stored) => Ok(Written::Done(Stored::new(stored))),
        Err(kube::Error::Api(status)) if status.is_conflict() || status.code == 409 => {
            Ok(Written::Lost)
        }
        Err(source) => Err(PkiError::Write {
            namespace: namespace.to_owned(),
            name,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api() -> (api_emulator::Emulator, Api<Secret>) {
        let emulator = api_emulator::Emulator::new();
        let api = Api::namespaced(emulator.client(), "default");
        (emulator, api)
    }

    fn done(written: Written) -> Stored {
        match written {
            Written::Done(stored) => stored,
            Written::Lost => panic!("lost"),
        }
    }

    #[tokio::test]
    async fn the_second_creator_and_a_stale_replace_lose_without_writing() {
        let (_emulator, api) = api();
        let first = build("s", &[(TLS_CRT, "one")], None);
        let stored = done(write(&api, "default", first.clone()).await.unwrap());
        assert!(stored.ours());
        assert!(matches!(
            write(&api, "default", build("s", &[(TLS_CRT, "two")], None)).await,
            Ok(Written::Lost)
        ));
        let rv = stored.resource_version.clone();
        let second = done(
            write(&api, "default", build("s", &[(TLS_CRT, "two")], rv.clone()))
                .await
                .unwrap(),
        );
        assert_ne!(second.resource_version, rv);
        // A writer still holding the first version loses.
        assert!(matches!(
            write(&api, "default", build("s", &[(TLS_CRT, "three")], rv)).await,
            Ok(Written::Lost)
        ));
        let now = get(&api, "default", "s").await.unwrap().unwrap();
        assert_eq!(now.text(TLS_CRT), Some("two"));
        assert_eq!(now.resource_version, second.resource_version);
    }

    #[test]
    fn only_our_annotation_makes_a_secret_ours() {
        let mut secret = build("s", &[], None);
        assert!(Stored::new(secret.clone()).ours());
        secret.metadata.annotations = None;
        assert!(
            !Stored::new(secret.clone()).ours(),
            "no annotation: not ours"
        );
        secret.metadata.annotations = Some(BTreeMap::from([(
            annotations::MTLS_MANAGED_BY.to_owned(),
            "cert-manager".to_owned(),
        )]));
        assert!(!Stored::new(secret).ours());
    }
}
