//! A pod's ServiceAccount tokens, as a kubelet's token manager keeps them: each projected
//! `serviceAccountToken` source is a TokenRequest for the pod's ServiceAccount, bound to the
//! Pod (so the token dies with it), with the source's audience and lifetime; a token is
//! requested anew once [`RunnerConfig::token_refresh_fraction`] of its lifetime has passed
//! (80%, as the kubelet) or it is a day old, and the volume's file is rewritten.
//!
//! [`RunnerConfig::token_refresh_fraction`]: crate::RunnerConfig::token_refresh_fraction

use crate::projected::{self, TokenSpec};
use chrono::{DateTime, Utc};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use std::collections::BTreeMap;

/// The longest a token is used without being requested anew, whatever its lifetime.
const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::hours(24);

/// A token and when it was issued and expires.
#[derive(Clone)]
pub struct Issued {
    /// The token (a credential: never printed).
    pub token: String,
    /// When it was requested.
    pub issued: DateTime<Utc>,
    /// When it expires.
    pub expires: DateTime<Utc>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("issued", &self.issued)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Whether it is due to be requested anew at `now`: `fraction` of its lifetime passed,
    /// or older than a day (the kubelet's `requiresRefresh`).
    pub fn due(&self, now: DateTime<Utc>, fraction: f64) -> bool {
        let lifetime = (self.expires - self.issued).num_milliseconds().max(0);
        // Lifetimes are at most 2^32 seconds: the product fits in an f64 and back.
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        let after = chrono::TimeDelta::milliseconds((lifetime as f64 * fraction) as i64);
        now >= self.issued + after || now >= self.issued + MAX_AGE
    }
}

/// The tokens of one pod, kept between refreshes.
#[derive(Debug, Default)]
pub struct PodTokens {
    held: BTreeMap<TokenSpec, Issued>,
}

impl PodTokens {
    /// The tokens the pod's volumes need now: kept ones still fresh, others requested.
    /// A request that fails leaves the kept token (if any) in place, as a kubelet does;
    /// the failure is logged.
    pub async fn current(
        &mut self,
        client: &kube::Client,
        pod: &Pod,
        fraction: f64,
    ) -> BTreeMap<TokenSpec, String> {
        let needed = projected::tokens_needed(pod);
        self.held.retain(|spec, _| needed.contains(spec));
        for spec in needed {
            let now = Utc::now();
            if self
                .held
                .get(&spec)
                .is_some_and(|held| !held.due(now, fraction))
            {
                continue;
            }
            match request(client, pod, &spec).await {
                Ok(issued) => {
                    tracing::debug!(pod = %pod.name_any(), expires = %issued.expires, "service account token requested");
                    self.held.insert(spec, issued);
                }
                Err(e) => {
                    tracing::warn!(pod = %pod.name_any(), error = %e, "requesting a service account token");
                }
            }
        }
        self.held
            .iter()
            .map(|(spec, issued)| (spec.clone(), issued.token.clone()))
            .collect()
    }
}

/// A TokenRequest for the pod's ServiceAccount, bound to the pod.
async fn request(
    client: &kube::Client,
    pod: &Pod,
    spec: &TokenSpec,
) -> Result<Issued, kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    // Built from JSON: the shape of TokenRequest is stable on the wire across API versions.
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "metadata": {"name": projected::service_account(pod), "namespace": namespace},
        "spec": {
            "audiences": spec.audience.iter().collect::<Vec<_>>(),
            "expirationSeconds": spec.expiration_seconds,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                               "name": pod.name_any(), "uid": pod.uid()},
        },
    }))
    .map_err(kube::Error::SerdeError)?;
    let issued = Utc::now();
    let answer = accounts
        .create_token_request(
            &projected::service_account(pod),
            &PostParams::default(),
            &request,
        )
        .await?;
    let status = serde_json::to_value(&answer.status).unwrap_or_default();
    let token = status["token"].as_str().unwrap_or_default().to_owned();
    let expires = status["expirationTimestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc())
        .filter(|t| *t > issued)
        .unwrap_or_else(|| issued + chrono::TimeDelta::seconds(spec.expiration_seconds));
    Ok(Issued {
        token,
        issued,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_due_after_the_fraction_of_its_lifetime_or_a_day() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let hour = Issued {
            token: "secret-value".into(),
            issued: t0,
            expires: t0 + chrono::TimeDelta::seconds(3600),
        };
        let at = |s| t0 + chrono::TimeDelta::seconds(s);
        assert!(!hour.due(at(2879), 0.8));
        assert!(hour.due(at(2880), 0.8));
        assert!(!hour.due(at(35), 0.01));
        assert!(hour.due(at(36), 0.01));
        let year = Issued {
            expires: t0 + chrono::TimeDelta::days(365),
            ..hour.clone()
        };
        assert!(!year.due(at(86_399), 0.8));
        assert!(year.due(at(86_400), 0.8));
        assert!(!format!("{hour:?}").contains("secret-value"));
    }
}
