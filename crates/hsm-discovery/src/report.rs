//! Reports: one [`PodDiscoveryReport`] per HSMDevice, built from the inventory and the
//! device's rules, and the JSON merge patch that brings the pod's annotations to them. Each
//! device has its own key ([`hsm_api::names::device_report_key`]), a patch touches only the
//! keys whose content changed, and keys of devices no longer reported are removed.

use crate::allowlist::Allowlist;
use crate::inventory::{Inventory, Tracked};
use crate::rules::Rules;
use hsm_api::device::DiscoveredDevice;
use hsm_api::names::{device_from_report_key, device_report_key};
use hsm_api::report::{PodDiscoveryReport, status};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a report is built from, besides the inventory.
pub struct ReportInput<'a> {
    /// The HSMDevice's name.
    pub device_name: &'a str,
    /// Its `deviceType` (names the extended resource).
    pub device_type: &'a str,
    /// The node.
    pub node_name: &'a str,
    /// The rules, or why they are unusable.
    pub rules: Result<&'a Rules, String>,
    /// The auto-discovery allowlist.
    pub allowlist: &'a Allowlist,
}

/// The devices of the inventory an HSMDevice's rules select: available ones first, then by
/// identity, at most `maxDevices`.
pub fn selected<'a>(
    rules: &Rules,
    allowlist: &Allowlist,
    inventory: &'a Inventory,
) -> Vec<(&'a String, &'a Tracked)> {
    let mut matched: Vec<_> = inventory
        .iter()
        .filter(|(_, tracked)| rules.matches(&tracked.device, allowlist))
        .collect();
    matched.sort_by_key(|(id, tracked)| (!tracked.available, *id));
    if rules.max_devices > 0 {
        matched.truncate(rules.max_devices);
    }
    matched
}

/// The report for one HSMDevice at `now`.
pub fn build(input: &ReportInput<'_>, inventory: &Inventory, now: Timestamp) -> PodDiscoveryReport {
    let (devices, status, error) = match input.rules {
        Ok(rules) => (
            selected(rules, input.allowlist, inventory)
                .into_iter()
                .map(|(_, tracked)| discovered(input, tracked))
                .collect(),
            status::COMPLETED,
            String::new(),
        ),
        Err(ref error) => (Vec::new(), status::ERROR, error.clone()),
    };
    PodDiscoveryReport {
        hsm_device_name: input.device_name.to_owned(),
        reporting_node: input.node_name.to_owned(),
        discovered_devices: devices,
        last_report_time: Time(seconds(now)),
        discovery_status: status.to_owned(),
        error,
    }
}

fn discovered(input: &ReportInput<'_>, tracked: &Tracked) -> DiscoveredDevice {
    let device = &tracked.device;
    let mut info = device.properties.clone();
    for (key, value) in [
        ("vendor-id", &device.vendor_id),
        ("product-id", &device.product_id),
        ("manufacturer", &device.manufacturer),
        ("product", &device.product),
    ] {
        info.insert(key.to_owned(), value.clone());
    }
    info.insert("discovery-type".into(), "usb".into());
    DiscoveredDevice {
        device_path: device.dev_node.clone(),
        serial_number: device.serial.clone(),
        node_name: input.node_name.to_owned(),
        last_seen: Time(seconds(tracked.since)),
        device_info: info,
        available: tracked.available,
        resource_name: hsm_api::names::resource_name(input.device_type),
        role: None,
        mirrored_from: String::new(),
        last_sync_time: None,
        health: String::new(),
    }
}

/// A timestamp cut to whole seconds, as `metav1.Time` carries it: what is written is what is
/// read back, so comparisons see no false change.
pub fn seconds(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// Whether two reports say the same thing (the report time aside).
pub fn same_content(a: &PodDiscoveryReport, b: &PodDiscoveryReport) -> bool {
    let mut b = b.clone();
    b.last_report_time = a.last_report_time.clone();
    *a == b
}

/// Whether `old` (as written) is older than `refresh` at `new`'s report time.
fn due(old: &PodDiscoveryReport, new: &PodDiscoveryReport, refresh: Duration) -> bool {
    let age = new
        .last_report_time
        .0
        .duration_since(old.last_report_time.0);
    age >= SignedDuration::try_from(refresh).unwrap_or(SignedDuration::MAX)
}

/// The JSON merge patch of the pod's `metadata.annotations` that writes `desired` (device
/// name → report): a key per device whose report content changed or is new, or whose written
/// report is `refresh` old (so its `lastReportTime` shows the manager that discovery is
/// alive: the manager judges reports stale after the pool's grace period), `null` for report
/// keys of devices not in `desired`. `None` when nothing is due. Other annotations and other
/// devices' unchanged keys are not in the patch, so concurrent writers are not clobbered.
pub fn annotation_patch(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, PodDiscoveryReport>,
    refresh: Duration,
) -> Option<serde_json::Value> {
    let mut changes = serde_json::Map::new();
    for (device, report) in desired {
        let key = device_report_key(device);
        let unchanged = current
            .get(&key)
            .and_then(|json| serde_json::from_str::<PodDiscoveryReport>(json).ok())
            .is_some_and(|old| same_content(&old, report) && !due(&old, report, refresh));
        if !unchanged {
            let json = serde_json::to_string(report).expect("a report serialises");
            changes.insert(key, serde_json::Value::String(json));
        }
    }
    let wanted: std::collections::BTreeSet<String> =
        desired.keys().map(|d| device_report_key(d)).collect();
    for key in current.keys() {
        if device_from_report_key(key).is_some() && !wanted.contains(key) {
            changes.insert(key.clone(), serde_json::Value::Null);
        }
    }
    (!changes.is_empty()).then(|| serde_json::json!({"metadata": {"annotations": changes}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at: &str, devices: usize) -> PodDiscoveryReport {
        let device: DiscoveredDevice = serde_json::from_value(serde_json::json!({
            "devicePath": "/dev/bus/usb/001/002", "serialNumber": "S1", "nodeName": "n1",
            "lastSeen": "2026-12-06T11:00:00Z", "available": true
        }))
        .unwrap();
        PodDiscoveryReport {
            hsm_device_name: "pico".into(),
            reporting_node: "n1".into(),
            discovered_devices: vec![device; devices],
            last_report_time: Time(at.parse().unwrap()),
            discovery_status: status::COMPLETED.into(),
            error: String::new(),
        }
    }

    fn written(report: &PodDiscoveryReport) -> BTreeMap<String, String> {
        BTreeMap::from([(
            device_report_key("pico"),
            serde_json::to_string(report).unwrap(),
        )])
    }

    #[test]
    fn an_unchanged_report_is_rewritten_only_when_its_refresh_is_due() {
        let minute = Duration::from_secs(60);
        let current = written(&report("2026-12-06T12:00:00Z", 1));
        let soon = BTreeMap::from([("pico".to_owned(), report("2026-12-06T12:00:59Z", 1))]);
        assert_eq!(annotation_patch(&current, &soon, minute), None);
        let due = BTreeMap::from([("pico".to_owned(), report("2026-12-06T12:01:00Z", 1))]);
        let patch = annotation_patch(&current, &due, minute).unwrap();
        let json = patch["metadata"]["annotations"]["hsm.j5t.io/device-report.pico"]
            .as_str()
            .unwrap();
        assert!(json.contains("2026-12-06T12:01:00Z"), "{json}");
        // A change is written at once.
        let changed = BTreeMap::from([("pico".to_owned(), report("2026-12-06T12:00:01Z", 0))]);
        assert!(annotation_patch(&current, &changed, minute).is_some());
        // A device no longer reported loses its key.
        let patch = annotation_patch(&current, &BTreeMap::new(), minute).unwrap();
        assert_eq!(
            patch["metadata"]["annotations"]["hsm.j5t.io/device-report.pico"],
            serde_json::Value::Null
        );
    }
}
