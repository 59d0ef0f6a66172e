//! `HSMPool`: what the discovery pods found for one HSMDevice, aggregated. The manager creates
//! it (`<device>-pool`, owned by the HSMDevice); users never do.

use crate::device::{DiscoveredDevice, MirroringSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_grace_period() -> Option<String> {
    Some("5m".into())
}

/// Pool settings.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hsm.j5t.io",
    version = "v1alpha1",
    kind = "HSMPool",
    doc = "An HSMPool aggregates what discovery pods found for one HSMDevice; the manager owns it.",
    plural = "hsmpools",
    singular = "hsmpool",
    shortname = "hsmpool",
    namespaced,
    status = "HSMPoolStatus",
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".status.totalDevices"}"#,
    printcolumn = r#"{"name":"Available","type":"integer","jsonPath":".status.availableDevices"}"#,
    printcolumn = r#"{"name":"Reporting","type":"string","jsonPath":".status.reportingPods[*].podName"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Last Aggregation","type":"date","jsonPath":".status.lastAggregationTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct HSMPoolSpec {
    /// How long a pod's report stays fresh (a Go duration, `5m`).
    #[serde(
        default = "default_grace_period",
        skip_serializing_if = "Option::is_none"
    )]
    pub grace_period: Option<String>,
    /// Mirroring settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirroring: Option<MirroringSpec>,
}

/// The phase of aggregation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HSMPoolPhase {
    /// Waiting for reports.
    Pending,
    /// Collecting reports.
    Aggregating,
    /// Complete.
    Ready,
    /// Some pods are not reporting.
    Partial,
    /// Aggregation failed.
    Error,
}

/// One discovery pod's report, as the pool saw it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    /// The pod.
    pub pod_name: String,
    /// Its node.
    pub node_name: String,
    /// How many devices it found.
    pub devices_found: i32,
    /// When it reported.
    pub last_report_time: Time,
    /// `discovering`, `completed` or `error`.
    pub discovery_status: String,
    /// Its error.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Within the grace period.
    pub fresh: bool,
}

/// Mirroring state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MirroringStatus {
    /// Mirroring is on.
    pub enabled: bool,
    /// The primary node.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub primary_node: String,
    /// Mirrored nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrored_nodes: Vec<String>,
    /// Last mirror pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
    /// Failovers so far.
    pub failover_count: i32,
    /// Mirror errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_errors: Vec<String>,
}

/// The aggregated view.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HSMPoolStatus {
    /// Every device found by any pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aggregated_devices: Vec<DiscoveredDevice>,
    /// Unique devices.
    pub total_devices: i32,
    /// Devices available now.
    pub available_devices: i32,
    /// The pods' reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reporting_pods: Vec<PodReport>,
    /// Pods expected to report (the DaemonSet's).
    pub expected_pods: i32,
    /// Last aggregation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_aggregation_time: Option<Time>,
    /// Conditions (`DeviceAggregation`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HSMPoolPhase>,
    /// Mirroring state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirroring: Option<MirroringStatus>,
}
