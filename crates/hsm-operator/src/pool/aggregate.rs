//! HSMPool status as a pure function of what the manager observed (§6.2 of the contract):
//! the HSMDevice's name, the pool's `gracePeriod`, its discovery DaemonSet's status, the
//! DaemonSet's pods and the time.
//!
//! Unlike the Go manager:
//!
//! - each pod's report is the one under the device's own key
//!   ([`PodDiscoveryReport::for_device`]), so a pod that serves several HSMDevices keeps a
//!   report per device and no pool takes in another device's report (defect 10);
//! - devices are deduplicated by serial (a device that moved between nodes, or is seen by two
//!   pods, is one device), preferring the copy that is available now;
//! - a report is fresh while its `lastReportTime` is within `gracePeriod` (defect 12);
//!   discovery re-writes its reports well inside that even when nothing changed. A pod with
//!   no report yet is not "completed", so a pool is never Ready before a report exists; the
//!   devices of a stale report are kept, marked unavailable since the report's time;
//! - a report that cannot be read is a `ReportsValid=False` condition naming the pod and the
//!   key, and counts as a stale report: it never stops aggregation of the others.

use hsm_api::device::DiscoveredDevice;
use hsm_api::pool::{HSMPoolPhase, HSMPoolStatus, PodReport};
use hsm_api::report::{PodDiscoveryReport, status as report_status};
use k8s_openapi::api::apps::v1::DaemonSetStatus;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::time::Duration;

/// The condition type of aggregation (the Go manager's).
pub const DEVICE_AGGREGATION: &str = "DeviceAggregation";
/// The condition type saying whether every discovery pod's report could be read.
pub const REPORTS_VALID: &str = "ReportsValid";
/// The grace period when the pool names none or one that is not a duration.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(300);

/// `discoveryStatus` of a pod with no report, from its phase.
pub mod pod_status {
    /// The pod is not running yet.
    pub const PENDING: &str = "pending";
    /// The pod runs and has not reported yet (the Go manager said `completed` here).
    pub const DISCOVERING: &str = super::report_status::DISCOVERING;
    /// The pod failed.
    pub const FAILED: &str = "failed";
    /// Anything else.
    pub const UNKNOWN: &str = "unknown";
}

/// What a pool's status is computed from.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The HSMDevice's name.
    pub device: &'a str,
    /// The pool's `spec.gracePeriod` (a Go duration such as `5m` or `5m0s`).
    pub grace_period: Option<&'a str>,
    /// The discovery DaemonSet's status; `None` when the DaemonSet does not exist (yet).
    pub daemonset: Option<&'a DaemonSetStatus>,
    /// The DaemonSet's pods.
    pub pods: &'a [Pod],
    /// Now.
    pub now: Timestamp,
}

/// A report that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReport {
    /// The pod carrying it.
    pub pod: String,
    /// Why, naming the annotation key.
    pub reason: String,
}

/// What aggregation found.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregation {
    /// The phase.
    pub phase: HSMPoolPhase,
    /// One entry per physical device (by serial), sorted.
    pub devices: Vec<DiscoveredDevice>,
    /// One entry per pod, sorted by pod name.
    pub pods: Vec<PodReport>,
    /// Pods the DaemonSet wants scheduled.
    pub expected_pods: i32,
    /// Reports that could not be read.
    pub bad_reports: Vec<BadReport>,
    /// The grace period used.
    pub grace: Duration,
    /// Set when `spec.gracePeriod` was not a duration (and [`DEFAULT_GRACE`] was used).
    pub bad_grace_period: Option<String>,
}

/// What the pool's status says: an aggregation, or why there is none.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Reports were aggregated.
    Aggregated(Aggregation),
    /// Aggregation was impossible (no owner, the HSMDevice is gone): phase Error.
    Failed {
        /// Why.
        message: String,
    },
}

/// Parses a Go duration (`5m`, `5m0s`, `1h30m`, `90s`, `500ms`).
pub fn parse_grace_period(text: &str) -> Option<Duration> {
    humantime::parse_duration(text.trim()).ok()
}

/// One pod's report for the device, read.
enum Read {
    /// No report for this device.
    None,
    /// A report that could not be read.
    Bad(String),
    /// A report.
    Good(PodDiscoveryReport),
}

fn read_report(pod: &Pod, device: &str) -> Read {
    match PodDiscoveryReport::for_device(pod.annotations(), device) {
        None => Read::None,
        Some(Err(error)) => Read::Bad(error_chain(&error)),
        Some(Ok(report)) if report.hsm_device_name != device => Read::Bad(format!(
            "the report under {} is for HSMDevice {:?}, not {device:?}",
            hsm_api::names::device_report_key(device),
            report.hsm_device_name
        )),
        Some(Ok(report)) => Read::Good(report),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A pod's `discoveryStatus` from its phase alone.
fn status_from_phase(pod: &Pod) -> &'static str {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => pod_status::PENDING,
        Some("Running") => pod_status::DISCOVERING,
        Some("Failed") => pod_status::FAILED,
        _ => pod_status::UNKNOWN,
    }
}

/// Whether a report made at `at` is still fresh at `now` (a report from the future, a clock
/// skew between nodes, is fresh).
pub fn is_fresh(at: Timestamp, now: Timestamp, grace: Duration) -> bool {
    let age = now.duration_since(at);
    age <= SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX)
}

fn creation_time(pod: &Pod, now: Timestamp) -> Time {
    pod.metadata.creation_timestamp.clone().unwrap_or(Time(now))
}

/// One pod's entry in `reportingPods`, and the devices its report contributes.
fn pod_report(
    pod: &Pod,
    read: Read,
    observed: &Observed<'_>,
    grace: Duration,
) -> (PodReport, Vec<DiscoveredDevice>, Option<BadReport>) {
    let pod_name = pod.name_any();
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let base = PodReport {
        pod_name: pod_name.clone(),
        node_name: node.clone(),
        devices_found: 0,
        last_report_time: creation_time(pod, observed.now),
        discovery_status: status_from_phase(pod).to_owned(),
        error: String::new(),
        fresh: false,
    };
    match read {
        Read::None => (base, Vec::new(), None),
        Read::Bad(reason) => (
            PodReport {
                discovery_status: report_status::ERROR.into(),
                error: reason.clone(),
                ..base
            },
            Vec::new(),
            Some(BadReport {
                pod: pod_name,
                reason,
            }),
        ),
        Read::Good(report) => {
            let fresh = is_fresh(report.last_report_time.0, observed.now, grace);
            let node = [node, report.reporting_node.clone()]
                .into_iter()
                .find(|n| !n.is_empty())
                .unwrap_or_default();
            let devices = report
                .discovered_devices
                .iter()
                .cloned()
                .map(|mut device| {
                    if device.node_name.is_empty() {
                        device.node_name = node.clone();
                    }
                    if !fresh && device.available {
                        // Nobody vouches for it since the report was made.
                        device.available = false;
                        device.last_seen = report.last_report_time.clone();
                    }
                    device
                })
                .collect();
            let entry = PodReport {
                node_name: node,
                devices_found: i32::try_from(report.discovered_devices.len()).unwrap_or(i32::MAX),
                last_report_time: report.last_report_time.clone(),
                discovery_status: if report.discovery_status.is_empty() {
                    base.discovery_status.clone()
                } else {
                    report.discovery_status.clone()
                },
                error: report.error.clone(),
                fresh,
                ..base
            };
            (entry, devices, None)
        }
    }
}

/// Which of two copies of one device the pool keeps: the available one, then the one seen
/// last, then the first by node and path (so the choice never depends on pod order).
fn better(a: &DiscoveredDevice, b: &DiscoveredDevice) -> Ordering {
    b.available
        .cmp(&a.available)
        .then_with(|| b.last_seen.0.cmp(&a.last_seen.0))
        .then_with(|| a.node_name.cmp(&b.node_name))
        .then_with(|| a.device_path.cmp(&b.device_path))
        .then_with(|| {
            // Same everything that matters: any total order over the rest.
            let text = |d: &DiscoveredDevice| serde_json::to_string(d).unwrap_or_default();
            text(a).cmp(&text(b))
        })
}

/// One device per serial (devices without a serial: one per node and path), sorted by
/// serial, node and path.
pub fn deduplicate(devices: Vec<DiscoveredDevice>) -> Vec<DiscoveredDevice> {
    let mut by_identity: BTreeMap<(String, String, String), DiscoveredDevice> = BTreeMap::new();
    for device in devices {
        let identity = if device.serial_number.is_empty() {
            (
                String::new(),
                device.node_name.clone(),
                device.device_path.clone(),
            )
        } else {
            (device.serial_number.clone(), String::new(), String::new())
        };
        match by_identity.get_mut(&identity) {
            Some(kept) if better(&device, kept) == Ordering::Less => *kept = device,
            Some(_) => {}
            None => {
                by_identity.insert(identity, device);
            }
        }
    }
    let mut devices: Vec<DiscoveredDevice> = by_identity.into_values().collect();
    devices.sort_by(|a, b| {
        (&a.serial_number, &a.node_name, &a.device_path).cmp(&(
            &b.serial_number,
            &b.node_name,
            &b.device_path,
        ))
    });
    devices
}

/// The phase: Pending until some pod has a report; Ready when at least one, and at least as
/// many as the DaemonSet wants, are fresh and completed; Partial when fewer than it wants are
/// fresh; Aggregating otherwise.
pub fn phase(pods: &[PodReport], reports: usize, expected: i32) -> HSMPoolPhase {
    if reports == 0 {
        return HSMPoolPhase::Pending;
    }
    let fresh = pods.iter().filter(|p| p.fresh).count();
    let completed = pods
        .iter()
        .filter(|p| p.fresh && p.discovery_status == report_status::COMPLETED)
        .count();
    let expected = usize::try_from(expected).unwrap_or(0);
    if completed >= 1 && completed >= expected {
        HSMPoolPhase::Ready
    } else if fresh < expected {
        HSMPoolPhase::Partial
    } else {
        HSMPoolPhase::Aggregating
    }
}

/// Aggregates the pods' reports for the device.
pub fn aggregate(observed: &Observed<'_>) -> Aggregation {
    let (grace, bad_grace_period) = match observed.grace_period {
        None => (DEFAULT_GRACE, None),
        Some(text) => match parse_grace_period(text) {
            Some(grace) => (grace, None),
            None => (DEFAULT_GRACE, Some(text.to_owned())),
        },
    };
    let mut pods = Vec::new();
    let mut devices = Vec::new();
    let mut bad_reports = Vec::new();
    let mut reports = 0;
    for pod in observed.pods {
        let read = read_report(pod, observed.device);
        reports += usize::from(!matches!(read, Read::None));
        let (entry, found, bad) = pod_report(pod, read, observed, grace);
        pods.push(entry);
        devices.extend(found);
        bad_reports.extend(bad);
    }
    pods.sort_by(|a, b| a.pod_name.cmp(&b.pod_name));
    bad_reports.sort_by(|a, b| a.pod.cmp(&b.pod));
    let expected_pods = observed
        .daemonset
        .map_or(0, |status| status.desired_number_scheduled);
    Aggregation {
        phase: phase(&pods, reports, expected_pods),
        devices: deduplicate(devices),
        pods,
        expected_pods,
        bad_reports,
        grace,
        bad_grace_period,
    }
}

/// A condition, keeping its transition time when its status did not change.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let transition = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or(Time(now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    }
}

fn phase_name(phase: &HSMPoolPhase) -> &'static str {
    match phase {
        HSMPoolPhase::Pending => "Pending",
        HSMPoolPhase::Aggregating => "Aggregating",
        HSMPoolPhase::Ready => "Ready",
        HSMPoolPhase::Partial => "Partial",
        HSMPoolPhase::Error => "Error",
    }
}

fn aggregation_message(a: &Aggregation) -> String {
    let reporting = a.pods.iter().filter(|p| p.fresh).count();
    let mut message = format!(
        "Aggregated {} devices from {} pods ({} of {} expected reporting fresh)",
        a.devices.len(),
        a.pods.len(),
        reporting,
        a.expected_pods
    );
    if let Some(text) = &a.bad_grace_period {
        message.push_str(&format!(
            "; spec.gracePeriod {text:?} is not a duration, using {}",
            humantime::format_duration(a.grace)
        ));
    }
    message
}

fn reports_condition(
    a: &Aggregation,
    previous: &[Condition],
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    if a.bad_reports.is_empty() {
        return condition(
            previous,
            REPORTS_VALID,
            true,
            "ReportsReadable",
            "Every discovery report could be read".into(),
            generation,
            now,
        );
    }
    let message = a
        .bad_reports
        .iter()
        .map(|b| format!("pod {}: {}", b.pod, b.reason))
        .collect::<Vec<_>>()
        .join("; ");
    condition(
        previous,
        REPORTS_VALID,
        false,
        "MalformedReport",
        message,
        generation,
        now,
    )
}

/// The pool's status after `outcome`, at `now`, for the pool's `generation`.
pub fn status(
    previous: Option<&HSMPoolStatus>,
    outcome: &Outcome,
    generation: Option<i64>,
    now: Timestamp,
) -> HSMPoolStatus {
    let previous_conditions = previous.map_or(&[][..], |p| &p.conditions[..]);
    let mirroring = previous.and_then(|p| p.mirroring.clone());
    match outcome {
        Outcome::Failed { message } => HSMPoolStatus {
            phase: Some(HSMPoolPhase::Error),
            last_aggregation_time: Some(Time(now)),
            conditions: vec![condition(
                previous_conditions,
                DEVICE_AGGREGATION,
                false,
                "Error",
                message.clone(),
                generation,
                now,
            )],
            mirroring,
            ..HSMPoolStatus::default()
        },
        Outcome::Aggregated(a) => {
            let available = a.devices.iter().filter(|d| d.available).count();
            HSMPoolStatus {
                aggregated_devices: a.devices.clone(),
                total_devices: i32::try_from(a.devices.len()).unwrap_or(i32::MAX),
                available_devices: i32::try_from(available).unwrap_or(i32::MAX),
                reporting_pods: a.pods.clone(),
                expected_pods: a.expected_pods,
                last_aggregation_time: Some(Time(now)),
                conditions: vec![
                    condition(
                        previous_conditions,
                        DEVICE_AGGREGATION,
                        true,
                        phase_name(&a.phase),
                        aggregation_message(a),
                        generation,
                        now,
                    ),
                    reports_condition(a, previous_conditions, generation, now),
                ],
                phase: Some(a.phase.clone()),
                mirroring,
            }
        }
    }
}

#[cfg(test)]
mod tests;
