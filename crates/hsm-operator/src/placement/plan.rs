//! Which agent Deployments one HSMDevice needs now (§6.3 of the contract), as a pure function
//! of its HSMPool's aggregated devices, the agents that exist, which nodes' discovery pods are
//! current, and the clock.
//!
//! The Go manager's rules, with its gaps closed:
//! - one agent per serial, on the node that holds the device now (a device seen lost on one
//!   node and present on another has migrated; present again on the same node, reconnected);
//! - an agent is created or changed only once its node's discovery pod runs the current
//!   DaemonSet generation (the discovery gate), else the plan waits and rechecks;
//! - a serial seen only as lost loses its agent after the pool's grace period;
//! - with no device available at all, every agent of the HSMDevice goes after the absence
//!   timeout — counted from when a device was last seen, not from the pool's creation;
//! - an agent whose serial no longer appears in a complete (Ready) report is removed (the Go
//!   manager left it running forever);
//! - a changed desired Deployment (image, TLS, arguments, security context, node) is applied,
//!   detected through a hash of the desired spec kept as an annotation.

use crate::device::agent::{AgentSpec, agent_deployment};
use hsm_api::device::{DiscoveredDevice, HSMDevice};
use hsm_api::pool::{HSMPool, HSMPoolPhase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// The annotation holding the hash of the spec an agent Deployment was built from.
pub const SPEC_HASH_ANNOTATION: &str = "hsm.j5t.io/agent-spec-hash";

/// The pool's grace period when its spec has none or an unreadable one (the Go default).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(300);

/// How long the plan waits before looking again at a node whose discovery pod is not current
/// (the Go manager's deferral).
pub const DISCOVERY_RECHECK: Duration = Duration::from_secs(20);

/// What does not come from the objects.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The agent image.
    pub image: String,
    /// Whether manager↔agent mTLS is on.
    pub tls: bool,
    /// The service account of agent pods.
    pub service_account: String,
    /// With no device available, agents are removed after this long.
    pub absence_timeout: Duration,
}

/// Which nodes may get a new or changed agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryGate {
    /// The HSMDevice has no discovery DaemonSet: nothing to wait for.
    Open,
    /// Only these nodes' discovery pods run the current DaemonSet generation and are Ready.
    Nodes(BTreeSet<String>),
}

impl DiscoveryGate {
    fn allows(&self, node: &str) -> bool {
        match self {
            DiscoveryGate::Open => true,
            DiscoveryGate::Nodes(nodes) => nodes.contains(node),
        }
    }
}

/// Everything the plan is made from.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    /// The HSMDevice.
    pub device: &'a HSMDevice,
    /// Its pool.
    pub pool: &'a HSMPool,
    /// Its agent Deployments as they exist (labelled with the device, in its namespace).
    pub agents: &'a [Deployment],
    /// The discovery gate.
    pub gate: &'a DiscoveryGate,
    /// When a device of this HSMDevice was last seen available, if the caller remembers it
    /// (the pool's report may already have dropped the device).
    pub last_available: Option<Timestamp>,
    /// Now.
    pub now: Timestamp,
}

/// Why an agent is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Removal {
    /// Its device was seen only as lost, for longer than the grace period.
    Lost,
    /// No device of the HSMDevice was available for the absence timeout.
    Absent,
    /// Its serial is no longer in the pool's complete report.
    Unreported,
}

impl Removal {
    /// Words for events and logs.
    pub fn describe(self) -> &'static str {
        match self {
            Removal::Lost => "its device has been lost for longer than the grace period",
            Removal::Absent => "no device has been available for the absence timeout",
            Removal::Unreported => "its device is no longer reported by discovery",
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create or update this Deployment (server-side apply).
    Apply(Box<Deployment>),
    /// Delete the named Deployment.
    Delete {
        /// Its name.
        name: String,
        /// Why.
        why: Removal,
    },
    /// An agent is due on `node`, whose discovery pod is not current yet.
    AwaitDiscovery {
        /// The agent.
        name: String,
        /// The node.
        node: String,
    },
}

/// The steps, and when to look again even if nothing changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// What to do now.
    pub actions: Vec<Action>,
    /// The earliest time-based decision ahead (a grace period or timeout running out).
    pub recheck_in: Option<Duration>,
}

impl Plan {
    fn recheck(&mut self, after: Duration) {
        self.recheck_in = Some(self.recheck_in.map_or(after, |r| r.min(after)));
    }
}

/// The pool's grace period (`5m` when missing or unreadable).
pub fn grace_period(pool: &HSMPool) -> Duration {
    pool.spec
        .grace_period
        .as_deref()
        .and_then(|text| humantime::parse_duration(text).ok())
        .unwrap_or(DEFAULT_GRACE_PERIOD)
}

/// The agent Deployment for `copy`, with the hash of its spec annotated.
pub fn desired_agent(
    device: &HSMDevice,
    copy: &DiscoveredDevice,
    settings: &Settings,
) -> Option<Deployment> {
    let mut deployment = agent_deployment(&AgentSpec {
        device,
        serial: &copy.serial_number,
        device_path: &copy.device_path,
        node: &copy.node_name,
        image: &settings.image,
        tls: settings.tls,
        service_account: &settings.service_account,
    })?;
    let hash = spec_hash(&deployment);
    deployment
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH_ANNOTATION.into(), hash);
    Some(deployment)
}

/// A stable hash of what the manager sets on an agent Deployment.
fn spec_hash(deployment: &Deployment) -> String {
    use sha2::Digest;
    let encoded = serde_json::to_vec(&(&deployment.metadata.labels, &deployment.spec))
        .expect("a Deployment serialises");
    let digest = sha2::Sha256::digest(encoded);
    hex::encode(&digest[..8])
}

fn annotated_hash(deployment: &Deployment) -> Option<&str> {
    deployment
        .metadata
        .annotations
        .as_ref()?
        .get(SPEC_HASH_ANNOTATION)
        .map(String::as_str)
}

fn elapsed(since: &Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(*since)).unwrap_or_default()
}

/// The plan for one HSMDevice.
pub fn plan(observed: &Observed<'_>, settings: &Settings) -> Plan {
    let mut plan = Plan::default();
    let device_name = observed.device.name_any();
    let status = observed.pool.status.clone().unwrap_or_default();
    let ready = status.phase == Some(HSMPoolPhase::Ready) && !status.aggregated_devices.is_empty();
    let grace = grace_period(observed.pool);
    let existing: BTreeMap<String, &Deployment> =
        observed.agents.iter().map(|d| (d.name_any(), d)).collect();

    let mut by_serial: BTreeMap<&str, Vec<&DiscoveredDevice>> = BTreeMap::new();
    for copy in &status.aggregated_devices {
        if !copy.serial_number.is_empty() {
            by_serial
                .entry(copy.serial_number.as_str())
                .or_default()
                .push(copy);
        }
    }
    let mut reported = BTreeSet::new();
    for (serial, copies) in &by_serial {
        let Some(name) = hsm_api::names::agent_name(&device_name, serial) else {
            continue;
        };
        reported.insert(name.clone());
        let newest = |available: bool| {
            copies
                .iter()
                .filter(|c| c.available == available)
                .max_by_key(|c| c.last_seen.0)
                .copied()
        };
        match (newest(true), newest(false)) {
            (Some(active), _) if ready => {
                ensure(observed, settings, &existing, active, &name, &mut plan)
            }
            (None, Some(lost)) if existing.contains_key(&name) => {
                let gone_for = elapsed(&lost.last_seen.0, observed.now);
                if gone_for >= grace {
                    plan.actions.push(Action::Delete {
                        name,
                        why: Removal::Lost,
                    });
                } else {
                    plan.recheck(grace - gone_for);
                }
            }
            _ => {}
        }
    }

    let any_available = status.aggregated_devices.iter().any(|d| d.available);
    let removed_for_absence = !any_available && absence(observed, settings, &status, &mut plan);
    if removed_for_absence {
        plan.actions.retain(|a| !matches!(a, Action::Delete { .. }));
        plan.actions
            .extend(existing.keys().map(|name| Action::Delete {
                name: name.clone(),
                why: Removal::Absent,
            }));
    } else if ready {
        plan.actions.extend(
            existing
                .keys()
                .filter(|name| !reported.contains(*name))
                .map(|name| Action::Delete {
                    name: name.clone(),
                    why: Removal::Unreported,
                }),
        );
    }
    plan
}

/// The agent of `active`'s serial, on its node.
fn ensure(
    observed: &Observed<'_>,
    settings: &Settings,
    existing: &BTreeMap<String, &Deployment>,
    active: &DiscoveredDevice,
    name: &str,
    plan: &mut Plan,
) {
    let Some(desired) = desired_agent(observed.device, active, settings) else {
        return;
    };
    let current = existing.get(name);
    if current.is_some_and(|d| annotated_hash(d) == annotated_hash(&desired)) {
        return;
    }
    if observed.gate.allows(&active.node_name) {
        plan.actions.push(Action::Apply(Box::new(desired)));
    } else {
        plan.actions.push(Action::AwaitDiscovery {
            name: name.to_owned(),
            node: active.node_name.clone(),
        });
        plan.recheck(DISCOVERY_RECHECK);
    }
}

/// Whether no device has been available for the absence timeout; if not yet, when to look
/// again.
fn absence(
    observed: &Observed<'_>,
    settings: &Settings,
    status: &hsm_api::pool::HSMPoolStatus,
    plan: &mut Plan,
) -> bool {
    if observed.agents.is_empty() {
        return false;
    }
    let last_seen = status
        .aggregated_devices
        .iter()
        .map(|d| d.last_seen.0)
        .chain(observed.last_available)
        .max();
    let since = last_seen.or_else(|| {
        observed
            .pool
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
    });
    let Some(since) = since else {
        return false;
    };
    let absent_for = elapsed(&since, observed.now);
    if absent_for >= settings.absence_timeout {
        return true;
    }
    plan.recheck(settings.absence_timeout - absent_for);
    false
}

#[cfg(test)]
mod tests;
