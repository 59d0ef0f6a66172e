//! Secrets this manager only reads: those annotated as managed by someone else, and every
//! Secret in cert-manager mode. They are checked, never written: an expired or unusable
//! certificate is an error, one merely due for renewal a warning (its manager renews it on
//! its own schedule, and it still works meanwhile).

use super::certs::{CertInfo, parse_pair};
use super::secrets::{self, CA_CRT, Stored, TLS_CRT, TLS_KEY};
use super::{PkiConfig, PkiError, plan};
use crate::agents::grpc::ClientTls;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;

/// A leaf as read from a Secret.
pub struct Leaf {
    /// The CA to trust: `ca.crt`, or the CA Secret's certificate when absent.
    pub ca: Option<String>,
    /// `tls.crt`.
    pub cert: String,
    /// `tls.key`, when the Secret has one.
    pub key: Option<String>,
    /// The certificate, parsed.
    pub info: CertInfo,
}

/// Reads and checks a certificate (and its key when present, or when `need_key`) from a
/// Secret this manager must not write. `ca` is the CA the certificate should chain to, and
/// the `ca.crt` to use when the Secret has none.
pub fn inspect(
    stored: &Stored,
    config: &PkiConfig,
    ca: Option<(&CertInfo, &str)>,
    need_key: bool,
    now: DateTime<Utc>,
) -> Result<Leaf, PkiError> {
    let ns = config.namespace.as_str();
    let cert = stored.require(ns, TLS_CRT)?;
    let key = match need_key {
        true => Some(stored.require(ns, TLS_KEY)?),
        false => stored.text(TLS_KEY),
    };
    let invalid = |key: &'static str| {
        move |source| PkiError::Invalid {
            namespace: ns.to_owned(),
            name: stored.name.clone(),
            key,
            source,
        }
    };
    let info = match key {
        Some(key) => parse_pair(cert, key).map_err(invalid(TLS_KEY))?.0,
        None => CertInfo::parse(cert).map_err(invalid(TLS_CRT))?,
    };
    if now > info.not_after {
        return Err(PkiError::Expired {
            namespace: ns.to_owned(),
            name: stored.name.clone(),
            manager: stored.manager_name().to_owned(),
            not_after: info.not_after,
        });
    }
    warn_if_due(stored, &info, config, ca.map(|c| c.0), now);
    let ca_pem = stored.text(CA_CRT).or(ca.map(|c| c.1));
    Ok(Leaf {
        ca: ca_pem.map(str::to_owned),
        cert: cert.to_owned(),
        key: key.map(str::to_owned),
        info,
    })
}

fn warn_if_due(
    stored: &Stored,
    info: &CertInfo,
    config: &PkiConfig,
    ca: Option<&CertInfo>,
    now: DateTime<Utc>,
) {
    if let Err(reason) = plan::due(info, now, config.renew_before) {
        tracing::warn!(
            secret = %stored.name, manager = stored.manager_name(), %reason,
            "an externally managed mTLS certificate is due for renewal; left to its manager"
        );
    }
    if ca.is_some_and(|ca| !info.chains_to(ca)) {
        tracing::warn!(
            secret = %stored.name, manager = stored.manager_name(),
            "an externally managed mTLS certificate was not issued by the CA Secret's CA"
        );
    }
}

/// cert-manager mode: the manager's material from the client Secret (`ca.crt`, `tls.crt`,
/// `tls.key`, as the Go operator reads it), after checking that the agents' server Secret
/// exists and holds a usable certificate. Writes nothing.
pub async fn read(
    client: &kube::Client,
    config: &PkiConfig,
    now: DateTime<Utc>,
) -> Result<ClientTls, PkiError> {
    let api = Api::<Secret>::namespaced(client.clone(), &config.namespace);
    let server = required(&api, config, &config.server_secret).await?;
    inspect(&server, config, None, false, now)?;
    let client = required(&api, config, &config.client_secret).await?;
    let ca = client.require(&config.namespace, CA_CRT)?.to_owned();
    let leaf = inspect(&client, config, None, true, now)?;
    Ok(ClientTls {
        ca,
        cert: leaf.cert,
        key: leaf.key.unwrap_or_default(),
    })
}

async fn required(api: &Api<Secret>, config: &PkiConfig, name: &str) -> Result<Stored, PkiError> {
    secrets::get(api, &config.namespace, name)
        .await?
        .ok_or_else(|| PkiError::Missing {
            namespace: config.namespace.clone(),
            name: name.to_owned(),
        })
}
