//! The I/O half of a mirror pass: for each planned secret, read the source's metadata record
//! and (unless it is a tombstone) its value, check both against the index entry the plan was
//! made from, and write them to every target that still holds what the plan saw. Each target
//! has its own outcome; one failing device does not stop the others.

use super::plan::{Action, ActionKind, Plan, SecretPlan};
use crate::agents::follow::same_content;
use crate::agents::pool::DeviceSlot;
use crate::agents::{AgentError, AgentPool, SecretValues};
use crate::telemetry::Metrics;
use hsm_proto::v1::{IndexEntry, SecretMetadata};
use std::sync::Arc;

/// Why one write was not made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ActionError {
    /// The source or the target changed since the plan (or the device left the pool): the
    /// change is announced and the next pass plans from it.
    #[error("the device changed since the plan")]
    Stale,
    /// An agent call failed.
    #[error("agent: {0}")]
    Agent(#[source] Arc<AgentError>),
}

impl ActionError {
    /// The metrics category.
    pub fn category(&self) -> &'static str {
        match self {
            ActionError::Stale => "stale",
            ActionError::Agent(e) => e.category(),
        }
    }
}

/// What happened to one planned write.
#[derive(Debug)]
pub struct ActionOutcome {
    /// The secret.
    pub secret: String,
    /// The source device's key.
    pub source: String,
    /// The target device's key.
    pub device: String,
    /// What was to be written.
    pub kind: ActionKind,
    /// Written, or why not.
    pub result: Result<(), ActionError>,
}

/// Carries out `plan` over `pool`'s agents, one secret after the other (a device is a slow
/// card: one secret's writes to several devices go in parallel, never many to one device).
pub async fn execute(pool: &AgentPool, plan: &Plan, metrics: &Metrics) -> Vec<ActionOutcome> {
    let mut outcomes = Vec::with_capacity(plan.action_count());
    for secret in &plan.secrets {
        outcomes.extend(execute_secret(pool, secret, metrics).await);
    }
    outcomes
}

async fn execute_secret(
    pool: &AgentPool,
    secret: &SecretPlan,
    metrics: &Metrics,
) -> Vec<ActionOutcome> {
    let copy = match read_source(pool, secret, metrics).await {
        Ok(copy) => copy,
        Err(error) => {
            tracing::debug!(secret = %secret.name, source = %secret.source, %error, "source not read");
            return secret
                .actions
                .iter()
                .map(|a| outcome(secret, a, Err(error.clone())))
                .collect();
        }
    };
    let copy = &copy;
    let writes = secret.actions.iter().map(|action| async move {
        let result = write_target(pool, secret, action, copy).await;
        outcome(secret, action, result)
    });
    futures::future::join_all(writes).await
}

fn outcome(secret: &SecretPlan, action: &Action, result: Result<(), ActionError>) -> ActionOutcome {
    ActionOutcome {
        secret: secret.name.clone(),
        source: secret.source.clone(),
        device: action.device.clone(),
        kind: action.kind,
        result,
    }
}

/// The winning copy: the source's metadata record and value, as the plan saw them.
struct WinningCopy {
    values: SecretValues,
    metadata: SecretMetadata,
}

async fn read_source(
    pool: &AgentPool,
    secret: &SecretPlan,
    metrics: &Metrics,
) -> Result<WinningCopy, ActionError> {
    let slot = pool.device(&secret.source).ok_or(ActionError::Stale)?;
    let planned = &secret.source_entry;
    still_holds(&slot, &secret.name, Some(planned))?;
    let (metadata, fetched) = slot.metadata(&secret.name).await.map_err(agent_error)?;
    if fetched {
        metrics.agent_read("read_metadata");
    }
    if sync_version(&metadata) != planned.sync_version
        || is_tombstone(&metadata) != planned.tombstone
    {
        return Err(ActionError::Stale);
    }
    let values = match planned.has_data && !planned.tombstone {
        false => SecretValues::new(),
        true => {
            metrics.agent_read("read_secret");
            let values = slot.agent().read(&secret.name).await.map_err(agent_error)?;
            let read = hsm_store::checksum::checksum(
                values.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            );
            if read != planned.checksum {
                return Err(ActionError::Stale);
            }
            values
        }
    };
    Ok(WinningCopy { values, metadata })
}

fn agent_error(error: AgentError) -> ActionError {
    ActionError::Agent(Arc::new(error))
}

/// The record's `sync.version` (0 when absent), as the index reads it.
fn sync_version(metadata: &SecretMetadata) -> i64 {
    metadata
        .labels
        .get(hsm_store::metadata::SYNC_VERSION)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn is_tombstone(metadata: &SecretMetadata) -> bool {
    metadata
        .labels
        .get(hsm_store::metadata::SYNC_DELETED)
        .map(String::as_str)
        == Some("true")
}

/// Whether `slot` still holds `expected` for `name` (by content, not store version).
fn still_holds(
    slot: &DeviceSlot,
    name: &str,
    expected: Option<&IndexEntry>,
) -> Result<(), ActionError> {
    let snapshot = slot.snapshot();
    let now = snapshot.entries.get(name);
    let same = match (now, expected) {
        (None, None) => true,
        (Some(a), Some(b)) => same_content(a, b),
        _ => false,
    };
    same.then_some(()).ok_or(ActionError::Stale)
}

async fn write_target(
    pool: &AgentPool,
    secret: &SecretPlan,
    action: &Action,
    copy: &WinningCopy,
) -> Result<(), ActionError> {
    let slot = pool.device(&action.device).ok_or(ActionError::Stale)?;
    // A write that reached the target after the plan (a REST write, say) is never replaced
    // by the older copy: the pass that follows its announcement decides.
    still_holds(&slot, &secret.name, action.seen.as_ref())?;
    slot.agent()
        .write(&secret.name, copy.values.clone(), copy.metadata.clone())
        .await
        .map_err(agent_error)
}
