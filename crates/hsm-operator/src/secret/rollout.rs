//! Restarting the workloads that consume a Secret when its content changes, as
//! `kubectl rollout restart` does: a new `kubectl.kubernetes.io/restartedAt` annotation on the
//! pod template. A workload that cannot be restarted (missing, forbidden) is reported as a
//! Warning event; the sync itself stands.

use super::{Context, FIELD_MANAGER};
use chrono::{SecondsFormat, Utc};
use hsm_api::secret::HSMSecret;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

/// The annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Restarts every target of `hsm_secret`.
pub async fn restart(hsm_secret: &HSMSecret, ctx: &Context) {
    let namespace = hsm_secret.namespace().unwrap_or_default();
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
    let patch = serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}
    });
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    for target in &hsm_secret.spec.rollout_restart_targets {
        let client = ctx.client.clone();
        let result = match target.kind.as_str() {
            "Deployment" => Api::<Deployment>::namespaced(client, &namespace)
                .patch(&target.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            "StatefulSet" => Api::<StatefulSet>::namespaced(client, &namespace)
                .patch(&target.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            "DaemonSet" => Api::<DaemonSet>::namespaced(client, &namespace)
                .patch(&target.name, &params, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            // validate() refuses other kinds before a sync gets here.
            _ => continue,
        };
        let (type_, reason, note) = match result {
            Ok(()) => (
                EventType::Normal,
                "RolloutRestarted",
                format!(
                    "restarted {} {} after the Secret changed",
                    target.kind, target.name
                ),
            ),
            Err(error) => (
                EventType::Warning,
                "RolloutRestartFailed",
                format!("cannot restart {} {}: {error}", target.kind, target.name),
            ),
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "RolloutRestart".into(),
            secondary: None,
        };
        if let Err(error) = ctx
            .recorder
            .publish(&event, &hsm_secret.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "cannot record an event");
        }
    }
}
