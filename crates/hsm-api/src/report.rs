//! The discovery report a discovery pod writes on itself in the `hsm.j5t.io/device-report`
//! annotation (one JSON document), and the manager reads into the HSMPool.

use crate::device::DiscoveredDevice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// One discovery pod's report for one HSMDevice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodDiscoveryReport {
    /// The HSMDevice the report is for.
    pub hsm_device_name: String,
    /// The node of the reporting pod.
    pub reporting_node: String,
    /// What it found.
    #[serde(default)]
    pub discovered_devices: Vec<DiscoveredDevice>,
    /// When it reported.
    pub last_report_time: Time,
    /// `discovering`, `completed` or `error`.
    pub discovery_status: String,
    /// The error, if discovery failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}
