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

/// `discoveryStatus` values.
pub mod status {
    /// Discovery ran and the report is complete.
    pub const COMPLETED: &str = "completed";
    /// Discovery is running.
    pub const DISCOVERING: &str = "discovering";
    /// Discovery failed; see `error`.
    pub const ERROR: &str = "error";
}

/// Why a pod's report for a device could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the report under {key} is not a discovery report")]
pub struct ReportParseError {
    /// The annotation key.
    pub key: String,
    /// What was wrong with the JSON.
    #[source]
    pub source: serde_json::Error,
}

impl PodDiscoveryReport {
    /// The report for `device` among a pod's annotations: the device's own key
    /// ([`crate::names::device_report_key`]), else the Go single key
    /// ([`crate::names::annotations::DEVICE_REPORT`]) when that report names the device (a Go
    /// discovery pod during an upgrade). `None` when the pod has no report for the device.
    pub fn for_device(
        annotations: &std::collections::BTreeMap<String, String>,
        device: &str,
    ) -> Option<Result<Self, ReportParseError>> {
        let parse = |key: &str, json: &str| {
            serde_json::from_str::<Self>(json).map_err(|source| ReportParseError {
                key: key.to_owned(),
                source,
            })
        };
        let own = crate::names::device_report_key(device);
        if let Some(json) = annotations.get(&own) {
            return Some(parse(&own, json));
        }
        let go_key = crate::names::annotations::DEVICE_REPORT;
        let report = parse(go_key, annotations.get(go_key)?);
        match report {
            Ok(report) if report.hsm_device_name != device => None,
            other => Some(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{annotations::DEVICE_REPORT, device_report_key};
    use std::collections::BTreeMap;

    fn report(device: &str) -> String {
        serde_json::json!({
            "hsmDeviceName": device, "reportingNode": "n1", "discoveredDevices": [],
            "lastReportTime": "2026-07-07T20:00:00Z", "discoveryStatus": "completed"
        })
        .to_string()
    }

    #[test]
    fn a_devices_own_key_wins_and_the_go_key_counts_only_for_its_device() {
        let mut annotations = BTreeMap::new();
        annotations.insert(DEVICE_REPORT.to_owned(), report("pico"));
        let from_go = PodDiscoveryReport::for_device(&annotations, "pico").unwrap();
        assert_eq!(from_go.unwrap().hsm_device_name, "pico");
        assert!(PodDiscoveryReport::for_device(&annotations, "nitro").is_none());

        annotations.insert(device_report_key("nitro"), report("nitro"));
        let own = PodDiscoveryReport::for_device(&annotations, "nitro").unwrap();
        assert_eq!(own.unwrap().hsm_device_name, "nitro");

        annotations.insert(device_report_key("bad"), "{not json".into());
        let err = PodDiscoveryReport::for_device(&annotations, "bad")
            .unwrap()
            .unwrap_err();
        assert_eq!(err.key, "hsm.j5t.io/device-report.bad");
    }
}
