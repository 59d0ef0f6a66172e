//! What a pass did, as the REST API answers it and the log says it: serialisable, with no
//! secret value in it (names, device keys, actions and error messages only).

use super::execute::ActionOutcome;
use super::plan::{ActionKind, Plan, SkippedDevice};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What started a pass (the Go manager's trigger reasons where it had one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The safety net's timer (and the first pass at start).
    Periodic,
    /// An agent announced changed secrets.
    DeviceChange,
    /// A device became healthy.
    DeviceReady,
    /// `POST /api/v1/hsm/mirror/sync`.
    #[serde(rename = "manual_api")]
    Manual,
    /// `POST /api/v1/hsm/mirror/sync` with `force`.
    #[serde(rename = "manual_api_force")]
    ManualForce,
}

impl Trigger {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Periodic => "periodic",
            Trigger::DeviceChange => "device_change",
            Trigger::DeviceReady => "device_ready",
            Trigger::Manual => "manual_api",
            Trigger::ManualForce => "manual_api_force",
        }
    }
}

/// How one planned write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Written.
    Written,
    /// The agent failed; the next pass tries again.
    Failed,
    /// The source or the target changed since the plan; the pass its announcement
    /// triggers decides again.
    Stale,
}

impl ActionResult {
    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionResult::Written => "written",
            ActionResult::Failed => "failed",
            ActionResult::Stale => "stale",
        }
    }
}

/// One planned write and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionReport {
    /// The secret's name.
    pub secret: String,
    /// The device the copy came from.
    pub source: String,
    /// The device written.
    pub device: String,
    /// What was written.
    pub action: ActionKind,
    /// How it ended.
    pub result: ActionResult,
    /// The error category of a failure (`unavailable`, `invalid_argument`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// The error of a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// What started it.
    pub trigger: Trigger,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
    /// The devices mirrored between.
    pub healthy_devices: Vec<String>,
    /// The devices left out, and why.
    pub skipped_devices: Vec<SkippedDevice>,
    /// Secrets all healthy devices already agreed on.
    pub secrets_in_sync: usize,
    /// Secrets that needed writes.
    pub secrets_planned: usize,
    /// Writes made.
    pub written: usize,
    /// Writes that failed.
    pub failed: usize,
    /// Writes left to the next pass because a device changed.
    pub stale: usize,
    /// Every planned write.
    pub actions: Vec<ActionReport>,
}

impl Summary {
    /// The summary of a pass that carried out `plan` with `outcomes`.
    pub fn new(
        trigger: Trigger,
        started_at: DateTime<Utc>,
        duration: Duration,
        plan: &Plan,
        outcomes: &[ActionOutcome],
    ) -> Summary {
        let actions: Vec<ActionReport> = outcomes.iter().map(report).collect();
        let count = |r| actions.iter().filter(|a| a.result == r).count();
        Summary {
            trigger,
            started_at: started_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            healthy_devices: plan.healthy.clone(),
            skipped_devices: plan.skipped.clone(),
            secrets_in_sync: plan.in_sync,
            secrets_planned: plan.secrets.len(),
            written: count(ActionResult::Written),
            failed: count(ActionResult::Failed),
            stale: count(ActionResult::Stale),
            actions,
        }
    }

    /// Whether every healthy device already held every winning copy.
    pub fn in_sync(&self) -> bool {
        self.actions.is_empty()
    }

    /// Logs the pass: one line when it wrote or failed, a warning per failed write.
    pub fn log(&self) {
        for action in self
            .actions
            .iter()
            .filter(|a| a.result == ActionResult::Failed)
        {
            tracing::warn!(
                secret = %action.secret,
                device = %action.device,
                action = action.action.as_str(),
                error = action.error.as_deref().unwrap_or_default(),
                "mirror write failed"
            );
        }
        if self.actions.is_empty() {
            tracing::debug!(
                trigger = self.trigger.as_str(),
                secrets = self.secrets_in_sync,
                "devices agree"
            );
        } else {
            tracing::info!(
                trigger = self.trigger.as_str(),
                written = self.written,
                failed = self.failed,
                stale = self.stale,
                skipped_devices = self.skipped_devices.len(),
                "mirror pass"
            );
        }
    }
}

fn report(outcome: &ActionOutcome) -> ActionReport {
    let (result, category, error) = match &outcome.result {
        Ok(()) => (ActionResult::Written, None, None),
        Err(super::execute::ActionError::Stale) => (ActionResult::Stale, None, None),
        Err(e) => (
            ActionResult::Failed,
            Some(e.category().to_owned()),
            Some(e.to_string()),
        ),
    };
    ActionReport {
        secret: outcome.secret.clone(),
        source: outcome.source.clone(),
        device: outcome.device.clone(),
        action: outcome.kind,
        result,
        category,
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::AgentError;
    use crate::mirror::execute::ActionError;
    use std::sync::Arc;

    #[test]
    fn a_summary_serialises_with_go_trigger_names_and_counts() {
        let plan = Plan {
            healthy: vec!["a".into(), "b".into()],
            skipped: vec![SkippedDevice {
                device: "c".into(),
                reason: "connecting".into(),
            }],
            in_sync: 3,
            secrets: vec![],
        };
        let outcome = |device: &str, result| ActionOutcome {
            secret: "db".into(),
            source: "a".into(),
            device: device.into(),
            kind: ActionKind::Tombstone,
            result,
        };
        let outcomes = [
            outcome("b", Ok(())),
            outcome(
                "c",
                Err(ActionError::Agent(Arc::new(AgentError::Status {
                    code: tonic::Code::Unavailable,
                    message: "token gone".into(),
                }))),
            ),
            outcome("d", Err(ActionError::Stale)),
        ];
        let started = DateTime::from_timestamp(0, 0).unwrap();
        let summary = Summary::new(
            Trigger::ManualForce,
            started,
            Duration::from_millis(12),
            &plan,
            &outcomes,
        );
        assert_eq!((summary.written, summary.failed, summary.stale), (1, 1, 1));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["trigger"], "manual_api_force");
        assert_eq!(json["startedAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(json["secretsInSync"], 3);
        assert_eq!(json["skippedDevices"][0]["device"], "c");
        assert_eq!(json["actions"][0]["action"], "tombstone");
        assert_eq!(json["actions"][0]["result"], "written");
        assert!(json["actions"][0].get("error").is_none());
        assert_eq!(json["actions"][1]["category"], "unavailable");
        assert_eq!(json["actions"][2]["result"], "stale");
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary, "clients (the plugin) read it back");
    }
}
