//! The PKI of manager↔agent mTLS: a CA, the agents' server certificate and the manager's
//! client certificate, kept as Secrets in the manager's namespace (`hsm-mtls-ca`,
//! `hsm-agent-server-tls`, `hsm-manager-client-tls`), made and renewed by the manager, or
//! made by cert-manager and only read.
//!
//! - [`ensure`] makes sure the three Secrets exist and are not due for renewal, and returns
//!   the manager's client material; [`rotate`] runs it every 12 h and publishes new
//!   material on a watch channel, so new connections use it while open ones keep going.
//! - A Secret whose `hsm.j5t.io/mtls-managed-by` annotation names anyone but this operator
//!   is read and never written, and in cert-manager mode no Secret is ever written.
//! - Writes are safe with several manager replicas: create fails when another replica was
//!   first, replace carries the resourceVersion read; the loser reads again.
//!
//! Inside: [`certs`] issues and inspects certificates (rcgen, x509-parser), [`keys`] moves
//! keys between PKCS#8 (rcgen) and SEC1 (`EC PRIVATE KEY`, what the Secrets hold), `plan`
//! decides what to renew (pure functions), `secrets`, `managed` and `external` are the API
//! edge.

pub mod certs;
mod external;
pub mod keys;
mod managed;
mod plan;
mod secrets;

use crate::agents::grpc::ClientTls;
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio::sync::watch;

pub use certs::{CertError, LeafKind};
pub use keys::KeyError;

/// Where the PKI lives and how long its leaves last (the `--agent-tls-*` flags).
#[derive(Debug, Clone)]
pub struct PkiConfig {
    /// The manager's namespace, which holds the Secrets.
    pub namespace: String,
    /// The CA Secret (`hsm-mtls-ca`).
    pub ca_secret: String,
    /// The agents' server certificate Secret (`hsm-agent-server-tls`).
    pub server_secret: String,
    /// The manager's client certificate Secret (`hsm-manager-client-tls`).
    pub client_secret: String,
    /// How long a leaf is valid (90 days by default).
    pub leaf_validity: Duration,
    /// How long before its end a leaf is re-issued (30 days by default).
    pub renew_before: Duration,
    /// Secrets are managed by cert-manager: read them, never write them.
    pub cert_manager: bool,
}

/// Why the PKI could not be made sure of. Messages name Secrets and keys, never their data.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A Secret could not be read.
    #[error("cannot read Secret {namespace}/{name}")]
    Read {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A Secret could not be written.
    #[error("cannot write Secret {namespace}/{name}")]
    Write {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// In cert-manager mode, a Secret cert-manager should have made does not exist.
    #[error(
        "Secret {namespace}/{name} does not exist; with --agent-tls-cert-manager it must be \
         made by cert-manager (a Certificate with secretName {name})"
    )]
    Missing {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A Secret this manager only reads lacks a key it needs.
    #[error("Secret {namespace}/{name} has no {key}")]
    MissingKey {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The missing key (`ca.crt`, `tls.crt`, `tls.key`).
        key: &'static str,
    },
    /// A Secret this manager only reads holds something unusable under `key`.
    #[error("Secret {namespace}/{name}: {key} cannot be used")]
    Invalid {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The key.
        key: &'static str,
        /// Why.
        #[source]
        source: CertError,
    },
    /// A Secret this manager only reads holds an expired certificate.
    #[error(
        "Secret {namespace}/{name} (managed by {manager}) holds a certificate that expired \
         at {not_after}; its manager must renew it"
    )]
    Expired {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its `hsm.j5t.io/mtls-managed-by`.
        manager: String,
        /// When it expired.
        not_after: DateTime<Utc>,
    },
    /// A leaf is due but the CA Secret, managed elsewhere, holds no key to sign with.
    #[error(
        "cannot issue {leaf}: the CA Secret {namespace}/{name} is managed by {manager} and \
         holds no tls.key"
    )]
    NoCaKey {
        /// The CA Secret's namespace.
        namespace: String,
        /// The CA Secret's name.
        name: String,
        /// Its manager.
        manager: String,
        /// The leaf Secret that needed it.
        leaf: String,
    },
    /// A certificate could not be issued.
    #[error("cannot issue the certificate of Secret {name}")]
    Issue {
        /// The Secret it was for.
        name: String,
        /// Why.
        #[source]
        source: CertError,
    },
    /// Other writers kept changing a Secret between this manager's read and write.
    #[error("Secret {namespace}/{name} kept changing under concurrent writers")]
    Contended {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Makes sure the CA, the agents' server certificate and the manager's client certificate
/// exist as Secrets and are not due for renewal at `now` (issuing or re-issuing leaves with
/// rcgen; never writing a Secret whose `hsm.j5t.io/mtls-managed-by` annotation names another
/// manager, nor any Secret in cert-manager mode), and returns the manager's client material.
///
/// The CA is re-created only when missing, unusable or expired; the leaves are then
/// re-issued too, since they no longer chain to it. An externally managed Secret that is
/// due for renewal gives a warning (its manager, e.g. cert-manager, renews on its own
/// schedule, and the certificate still works); one that has expired or cannot be used is
/// an error, since nothing valid can come of it.
pub async fn ensure(
    client: &kube::Client,
    config: &PkiConfig,
    now: DateTime<Utc>,
) -> Result<ClientTls, PkiError> {
    if config.cert_manager {
        external::read(client, config, now).await
    } else {
        managed::ensure(client, config, now).await
    }
}

/// The first retry after a failed [`ensure`] in [`rotate`]; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_secs(5);
/// The longest wait between retries (never longer than the interval).
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Calls `ensure` every `interval` (12 h in production) and publishes the client material on
/// `tx` when it changed; errors are logged and retried at the next tick (and sooner, with backoff).
///
/// The first call is immediate. Returns when every receiver of `tx` is gone.
pub async fn rotate(
    client: kube::Client,
    config: PkiConfig,
    interval: Duration,
    tx: watch::Sender<ClientTls>,
) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let wait = match ensure(&client, &config, Utc::now()).await {
            Ok(tls) => {
                backoff = MIN_BACKOFF;
                if tx.send_if_modified(|current| replace_if_changed(current, tls)) {
                    tracing::info!("new mTLS client certificate in use for new agent connections");
                }
                interval
            }
            Err(e) => {
                let wait = backoff.min(interval);
                tracing::warn!(error = %chain(&e), retry_in = ?wait, "mTLS PKI check failed");
                backoff = (backoff * 2).min(MAX_BACKOFF);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = tx.closed() => return,
        }
    }
}

fn replace_if_changed(current: &mut ClientTls, new: ClientTls) -> bool {
    if *current == new {
        return false;
    }
    *current = new;
    true
}

/// An error and its sources, for one log line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
