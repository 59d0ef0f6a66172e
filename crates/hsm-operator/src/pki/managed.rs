//! The self-managed PKI: this manager makes the CA and issues the leaves, writing only
//! Secrets annotated as its own, and converging when replicas race.

use super::certs::{self, CertInfo, LeafKind};
use super::external::{self, Leaf};
use super::plan::{self, Reason, Texts};
use super::secrets::{self, CA_CRT, Stored, TLS_CRT, TLS_KEY, Written};
use super::{PkiConfig, PkiError, keys};
use crate::agents::grpc::ClientTls;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// How many read-decide-write rounds a Secret gets before giving up to concurrent writers.
const ATTEMPTS: usize = 5;

/// The CA in use.
struct Ca {
    /// The CA Secret's resourceVersion when it was read or written.
    resource_version: Option<String>,
    /// Its manager, when not this operator.
    manager: Option<String>,
    cert: String,
    info: CertInfo,
    /// Its key (PEM), absent when an external manager keeps it elsewhere.
    key: Option<String>,
}

fn texts(stored: Option<&Stored>) -> Option<Texts<'_>> {
    stored.map(|s| Texts {
        ca: s.text(CA_CRT),
        cert: s.text(TLS_CRT),
        key: s.text(TLS_KEY),
    })
}

/// See [`super::ensure`]. After the leaves, the CA Secret is read again: when another
/// replica re-created the CA meanwhile, the leaves may chain to the old one, so another
/// round runs.
pub async fn ensure(
    client: &kube::Client,
    config: &PkiConfig,
    now: DateTime<Utc>,
) -> Result<ClientTls, PkiError> {
    let api = Api::<Secret>::namespaced(client.clone(), &config.namespace);
    for _ in 0..ATTEMPTS {
        let ca = ensure_ca(&api, config, now).await?;
        let server = ensure_leaf(&api, config, &ca, LeafKind::Server, now).await?;
        let client = ensure_leaf(&api, config, &ca, LeafKind::Client, now).await?;
        let current = secrets::get(&api, &config.namespace, &config.ca_secret).await?;
        if current.and_then(|s| s.resource_version) == ca.resource_version {
            return Ok(ClientTls {
                ca: server.ca.unwrap_or(ca.cert),
                cert: client.cert,
                key: client.key.unwrap_or_default(),
            });
        }
    }
    Err(contended(config, &config.ca_secret))
}

fn contended(config: &PkiConfig, name: &str) -> PkiError {
    PkiError::Contended {
        namespace: config.namespace.clone(),
        name: name.to_owned(),
    }
}

fn issue_error(name: &str) -> impl FnOnce(certs::CertError) -> PkiError + '_ {
    move |source| PkiError::Issue {
        name: name.to_owned(),
        source,
    }
}

async fn ensure_ca(
    api: &Api<Secret>,
    config: &PkiConfig,
    now: DateTime<Utc>,
) -> Result<Ca, PkiError> {
    let (ns, name) = (config.namespace.as_str(), config.ca_secret.as_str());
    for _ in 0..ATTEMPTS {
        let stored = secrets::get(api, ns, name).await?;
        if let Some(s) = stored.as_ref().filter(|s| !s.ours()) {
            let leaf = external::inspect(s, config, None, false, now)?;
            return Ok(foreign_ca(s, leaf));
        }
        let reason = match (stored.as_ref(), plan::ca(texts(stored.as_ref()), now)) {
            (Some(s), Ok((info, _))) => {
                return Ok(Ca {
                    cert: s.text(TLS_CRT).unwrap_or_default().to_owned(),
                    key: s.text(TLS_KEY).map(str::to_owned),
                    resource_version: s.resource_version.clone(),
                    manager: None,
                    info,
                });
            }
            (None, Ok(_)) => Reason::Missing,
            (_, Err(reason)) => reason,
        };
        log_new(name, &reason, "creating the mTLS CA");
        let issued = certs::issue_ca(now).map_err(issue_error(name))?;
        let info = CertInfo::parse(&issued.cert).map_err(issue_error(name))?;
        let rv = stored.and_then(|s| s.resource_version);
        let data = [
            (TLS_CRT, issued.cert.as_str()),
            (TLS_KEY, issued.key.as_str()),
        ];
        if let Written::Done(s) = secrets::write(api, ns, secrets::build(name, &data, rv)).await? {
            return Ok(Ca {
                resource_version: s.resource_version,
                manager: None,
                cert: issued.cert,
                info,
                key: Some(issued.key),
            });
        }
    }
    Err(contended(config, name))
}

fn foreign_ca(stored: &Stored, leaf: Leaf) -> Ca {
    Ca {
        resource_version: stored.resource_version.clone(),
        manager: Some(stored.manager_name().to_owned()),
        cert: leaf.cert,
        info: leaf.info,
        key: leaf.key,
    }
}

/// Missing is the normal first start (info); anything else is worth a warning.
fn log_new(name: &str, reason: &Reason, what: &str) {
    match reason {
        Reason::Missing => tracing::info!(secret = name, "{what}"),
        Reason::Expiring(_) => tracing::info!(secret = name, %reason, "{what}"),
        _ => tracing::warn!(secret = name, %reason, "{what}"),
    }
}

async fn ensure_leaf(
    api: &Api<Secret>,
    config: &PkiConfig,
    ca: &Ca,
    kind: LeafKind,
    now: DateTime<Utc>,
) -> Result<Leaf, PkiError> {
    let name = match kind {
        LeafKind::Server => config.server_secret.as_str(),
        LeafKind::Client => config.client_secret.as_str(),
    };
    let ns = config.namespace.as_str();
    for _ in 0..ATTEMPTS {
        let stored = secrets::get(api, ns, name).await?;
        if let Some(s) = stored.as_ref().filter(|s| !s.ours()) {
            let ca = Some((&ca.info, ca.cert.as_str()));
            return external::inspect(s, config, ca, kind == LeafKind::Client, now);
        }
        let texts = texts(stored.as_ref());
        let reason = match (
            texts,
            plan::leaf(texts, &ca.info, &ca.cert, now, config.renew_before),
        ) {
            (Some(texts), Ok(info)) => {
                return Ok(Leaf {
                    ca: Some(ca.cert.clone()),
                    cert: texts.cert.unwrap_or_default().to_owned(),
                    key: texts.key.map(str::to_owned),
                    info,
                });
            }
            (None, Ok(_)) => Reason::Missing,
            (_, Err(reason)) => reason,
        };
        log_new(name, &reason, "issuing an mTLS certificate");
        let issued = certs::issue_leaf(
            kind,
            &ca.cert,
            signing_key(config, ca, name)?,
            now,
            config.leaf_validity,
        )
        .map_err(issue_error(name))?;
        let info = CertInfo::parse(&issued.cert).map_err(issue_error(name))?;
        let rv = stored.and_then(|s| s.resource_version);
        let data = [
            (CA_CRT, ca.cert.as_str()),
            (TLS_CRT, issued.cert.as_str()),
            (TLS_KEY, issued.key.as_str()),
        ];
        if let Written::Done(_) = secrets::write(api, ns, secrets::build(name, &data, rv)).await? {
            return Ok(Leaf {
                ca: Some(ca.cert.clone()),
                cert: issued.cert,
                key: Some(issued.key),
                info,
            });
        }
    }
    Err(contended(config, name))
}

/// The CA's key, to sign `leaf` with.
fn signing_key(config: &PkiConfig, ca: &Ca, leaf: &str) -> Result<rcgen::KeyPair, PkiError> {
    let no_key = || PkiError::NoCaKey {
        namespace: config.namespace.clone(),
        name: config.ca_secret.clone(),
        manager: ca.manager.clone().unwrap_or_default(),
        leaf: leaf.to_owned(),
    };
    let pem = ca.key.as_deref().ok_or_else(no_key)?;
    keys::parse(pem).map_err(|source| PkiError::Invalid {
        namespace: config.namespace.clone(),
        name: config.ca_secret.clone(),
        key: TLS_KEY,
        source: certs::CertError::Key(source),
    })
}
