//! Aggregation against §6.2 with the defects fixed: table tests, and properties that hold for
//! any set of reports.

use super::*;
use hsm_api::names::{annotations::DEVICE_REPORT, device_report_key};
use proptest::prelude::*;
use serde_json::{Value, json};

const NOW: &str = "2026-12-06T12:00:00Z";

fn now() -> Timestamp {
    NOW.parse().unwrap()
}

/// `seconds` before [`NOW`], as the API writes times.
fn ago(seconds: i64) -> String {
    (now() - SignedDuration::from_secs(seconds)).to_string()
}

fn device_json(serial: &str, path: &str, available: bool, seen_ago: i64) -> Value {
    let mut device = json!({
        "devicePath": path, "nodeName": "", "lastSeen": ago(seen_ago), "available": available,
        "deviceInfo": {"vendor-id": "2e8a", "product-id": "10fd"}
    });
    if !serial.is_empty() {
        device["serialNumber"] = json!(serial);
    }
    device
}

fn report(device: &str, node: &str, age: i64, devices: Vec<Value>) -> String {
    json!({
        "hsmDeviceName": device, "reportingNode": node, "discoveredDevices": devices,
        "lastReportTime": ago(age), "discoveryStatus": "completed"
    })
    .to_string()
}

fn pod(name: &str, node: &str, phase: &str, reports: &[(String, String)]) -> Pod {
    let annotations: serde_json::Map<String, Value> = reports
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "hsm-system", "annotations": annotations,
                     "creationTimestamp": ago(3600)},
        "spec": {"nodeName": node, "containers": []},
        "status": {"phase": phase}
    }))
    .unwrap()
}

/// A running pod on `node` with `device`'s report under its own key.
fn reporting(name: &str, node: &str, device: &str, age: i64, devices: Vec<Value>) -> Pod {
    pod(
        name,
        node,
        "Running",
        &[(
            device_report_key(device),
            report(device, node, age, devices),
        )],
    )
}

fn ds(desired: i32) -> DaemonSetStatus {
    DaemonSetStatus {
        desired_number_scheduled: desired,
        ..Default::default()
    }
}

fn run(pods: &[Pod], desired: Option<i32>, grace: Option<&str>) -> Aggregation {
    let status = desired.map(ds);
    aggregate(&Observed {
        device: "pico",
        grace_period: grace,
        daemonset: status.as_ref(),
        pods,
        now: now(),
    })
}

fn serials(a: &Aggregation) -> Vec<(&str, &str, bool)> {
    a.devices
        .iter()
        .map(|d| (d.serial_number.as_str(), d.node_name.as_str(), d.available))
        .collect()
}

#[test]
fn no_pods_is_pending() {
    let a = run(&[], Some(0), None);
    assert_eq!(a.phase, HSMPoolPhase::Pending);
    assert!(a.devices.is_empty() && a.pods.is_empty());
    assert_eq!(a.expected_pods, 0);
    let a = run(&[], None, None);
    assert_eq!(a.phase, HSMPoolPhase::Pending);
}

/// Defect 12: a Running pod without a report is not a completed report.
#[test]
fn a_running_pod_without_a_report_keeps_the_pool_pending() {
    let pods = [pod("pico-discovery-a", "n1", "Running", &[])];
    let a = run(&pods, Some(1), None);
    assert_eq!(a.phase, HSMPoolPhase::Pending);
    let p = &a.pods[0];
    assert_eq!(
        (
            p.pod_name.as_str(),
            p.node_name.as_str(),
            p.discovery_status.as_str(),
            p.fresh,
            p.devices_found
        ),
        ("pico-discovery-a", "n1", "discovering", false, 0)
    );
    assert_eq!(p.last_report_time.0.to_string(), ago(3600), "creation time");
}

#[test]
fn a_fresh_completed_report_makes_the_pool_ready_with_its_devices() {
    let pods = [reporting(
        "pico-discovery-a",
        "n1",
        "pico",
        10,
        vec![device_json(
            "DC6A33145E23A42A",
            "/dev/bus/usb/001/015",
            true,
            120,
        )],
    )];
    let a = run(&pods, Some(1), None);
    assert_eq!(a.phase, HSMPoolPhase::Ready);
    assert_eq!(a.expected_pods, 1);
    assert_eq!(a.grace, Duration::from_secs(300));
    let d = &a.devices[0];
    assert_eq!(d.serial_number, "DC6A33145E23A42A");
    assert_eq!(d.device_path, "/dev/bus/usb/001/015");
    assert_eq!(d.node_name, "n1", "filled from the report");
    assert!(d.available);
    assert_eq!(d.last_seen.0.to_string(), ago(120));
    assert_eq!(d.device_info["vendor-id"], "2e8a");
    let p = &a.pods[0];
    assert_eq!(
        (p.discovery_status.as_str(), p.fresh, p.devices_found),
        ("completed", true, 1)
    );
    assert_eq!(p.last_report_time.0.to_string(), ago(10));
    assert!(p.error.is_empty());
}

/// Defect 12: freshness is the report's age against `gracePeriod`.
#[test]
fn a_report_older_than_the_grace_period_is_stale_and_its_devices_unavailable() {
    let pods = [reporting(
        "pico-discovery-a",
        "n1",
        "pico",
        360,
        vec![device_json("S1", "/dev/bus/usb/001/002", true, 900)],
    )];
    let a = run(&pods, Some(1), None);
    assert_eq!(a.phase, HSMPoolPhase::Partial);
    assert!(!a.pods[0].fresh);
    let d = &a.devices[0];
    assert!(!d.available);
    assert_eq!(d.last_seen.0.to_string(), ago(360), "lost since the report");

    for grace in ["10m", "10m0s", "7m30s", "1h"] {
        let a = run(&pods, Some(1), Some(grace));
        assert_eq!(a.phase, HSMPoolPhase::Ready, "{grace}");
        assert!(a.devices[0].available);
    }
    let a = run(&pods, Some(1), Some("6m"));
    assert!(a.pods[0].fresh, "exactly the grace period is still fresh");
    let a = run(&pods, Some(1), Some("5m59s"));
    assert!(!a.pods[0].fresh);
}

#[test]
fn a_lost_device_keeps_its_lost_at_time() {
    let pods = [reporting(
        "a",
        "n1",
        "pico",
        600,
        vec![device_json("S1", "/p", false, 700)],
    )];
    let a = run(&pods, Some(1), None);
    assert_eq!(a.devices[0].last_seen.0.to_string(), ago(700));
}

#[test]
fn a_bad_grace_period_falls_back_to_five_minutes_and_says_so() {
    let pods = [reporting("a", "n1", "pico", 10, vec![])];
    let a = run(&pods, Some(1), Some("soon"));
    assert_eq!(a.grace, DEFAULT_GRACE);
    assert_eq!(a.bad_grace_period.as_deref(), Some("soon"));
    let s = status(None, &Outcome::Aggregated(a), Some(1), now());
    assert!(
        s.conditions[0]
            .message
            .contains("spec.gracePeriod \"soon\" is not a duration, using 5m"),
        "{}",
        s.conditions[0].message
    );
}

/// Defect 10: a pod serving two HSMDevices has a report per device; each pool reads its own.
#[test]
fn each_device_reads_only_its_own_report() {
    let both = pod(
        "discovery-a",
        "n1",
        "Running",
        &[
            (
                device_report_key("pico"),
                report(
                    "pico",
                    "n1",
                    5,
                    vec![device_json("PICO1", "/dev/bus/usb/001/015", true, 60)],
                ),
            ),
            (
                device_report_key("nitro"),
                report(
                    "nitro",
                    "n1",
                    5,
                    vec![device_json("NITRO1", "/dev/bus/usb/001/016", true, 60)],
                ),
            ),
        ],
    );
    let pods = [both];
    let pico = run(&pods, Some(1), None);
    assert_eq!(serials(&pico), [("PICO1", "n1", true)]);
    let nitro = aggregate(&Observed {
        device: "nitro",
        grace_period: None,
        daemonset: Some(&ds(1)),
        pods: &pods,
        now: now(),
    });
    assert_eq!(serials(&nitro), [("NITRO1", "n1", true)]);
    assert_eq!(nitro.phase, HSMPoolPhase::Ready);
}

/// A Go discovery pod's single key counts for the device it names, and only for it.
#[test]
fn the_go_single_key_is_read_for_its_device() {
    let go = pod(
        "go-discovery",
        "n1",
        "Running",
        &[(
            DEVICE_REPORT.to_owned(),
            report("pico", "n1", 5, vec![device_json("S1", "/p", true, 5)]),
        )],
    );
    let a = run(std::slice::from_ref(&go), Some(1), None);
    assert_eq!(serials(&a), [("S1", "n1", true)]);
    let other = aggregate(&Observed {
        device: "nitro",
        grace_period: None,
        daemonset: Some(&ds(1)),
        pods: &[go],
        now: now(),
    });
    assert!(other.devices.is_empty());
    assert_eq!(other.phase, HSMPoolPhase::Pending);
}

/// The Go manager concatenated every pod's devices: a device that moved showed twice.
#[test]
fn devices_are_deduplicated_by_serial_preferring_the_available_copy() {
    let pods = [
        reporting(
            "a",
            "n1",
            "pico",
            5,
            vec![device_json("S1", "/dev/bus/usb/001/002", false, 30)],
        ),
        reporting(
            "b",
            "n2",
            "pico",
            5,
            vec![
                device_json("S1", "/dev/bus/usb/003/004", true, 100),
                device_json("S2", "/dev/bus/usb/003/005", true, 100),
            ],
        ),
        reporting(
            "c",
            "n3",
            "pico",
            5,
            vec![device_json("S2", "/dev/bus/usb/001/009", false, 10)],
        ),
    ];
    let a = run(&pods, Some(3), None);
    assert_eq!(serials(&a), [("S1", "n2", true), ("S2", "n2", true)]);
    let s = status(None, &Outcome::Aggregated(a), Some(1), now());
    assert_eq!((s.total_devices, s.available_devices), (2, 2));
    assert_eq!(s.phase, Some(HSMPoolPhase::Ready));
}

#[test]
fn among_lost_copies_the_last_seen_wins() {
    let pods = [
        reporting(
            "a",
            "n1",
            "pico",
            5,
            vec![device_json("S1", "/a", false, 300)],
        ),
        reporting(
            "b",
            "n2",
            "pico",
            5,
            vec![device_json("S1", "/b", false, 30)],
        ),
    ];
    let a = run(&pods, Some(2), None);
    assert_eq!(serials(&a), [("S1", "n2", false)]);
    assert_eq!(a.devices[0].device_path, "/b");
}

#[test]
fn devices_without_a_serial_are_told_apart_by_node_and_path() {
    let pods = [
        reporting(
            "a",
            "n1",
            "pico",
            5,
            vec![
                device_json("", "/x", true, 5),
                device_json("", "/y", true, 5),
            ],
        ),
        reporting("b", "n2", "pico", 5, vec![device_json("", "/x", true, 5)]),
    ];
    let a = run(&pods, Some(2), None);
    let places: Vec<(&str, &str)> = a
        .devices
        .iter()
        .map(|d| (d.node_name.as_str(), d.device_path.as_str()))
        .collect();
    assert_eq!(places, [("n1", "/x"), ("n1", "/y"), ("n2", "/x")]);
}

#[test]
fn a_malformed_report_is_a_condition_and_the_others_still_count() {
    let pods = [
        pod(
            "pico-discovery-bad",
            "n1",
            "Running",
            &[(device_report_key("pico"), "{not json".into())],
        ),
        reporting(
            "pico-discovery-good",
            "n2",
            "pico",
            5,
            vec![device_json("S1", "/dev/bus/usb/001/002", true, 5)],
        ),
    ];
    let a = run(&pods, Some(2), None);
    assert_eq!(a.phase, HSMPoolPhase::Partial);
    assert_eq!(serials(&a), [("S1", "n2", true)]);
    assert_eq!(a.bad_reports.len(), 1);
    let bad = &a.pods[0];
    assert_eq!(bad.pod_name, "pico-discovery-bad");
    assert_eq!(bad.discovery_status, "error");
    assert!(!bad.fresh);
    assert!(
        bad.error
            .contains("the report under hsm.j5t.io/device-report.pico is not a discovery report"),
        "{}",
        bad.error
    );
    let s = status(None, &Outcome::Aggregated(a), Some(3), now());
    let valid = s
        .conditions
        .iter()
        .find(|c| c.type_ == REPORTS_VALID)
        .unwrap();
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "MalformedReport")
    );
    assert!(valid.message.starts_with("pod pico-discovery-bad: the report under hsm.j5t.io/device-report.pico is not a discovery report: "), "{}", valid.message);
    assert_eq!(valid.observed_generation, Some(3));
    let aggregation = s
        .conditions
        .iter()
        .find(|c| c.type_ == DEVICE_AGGREGATION)
        .unwrap();
    assert_eq!(aggregation.status, "True");
    assert_eq!(aggregation.reason, "Partial");
}

#[test]
fn a_report_under_a_devices_key_naming_another_device_is_malformed() {
    let pods = [pod(
        "a",
        "n1",
        "Running",
        &[(
            device_report_key("pico"),
            report("nitro", "n1", 5, vec![device_json("S1", "/p", true, 5)]),
        )],
    )];
    let a = run(&pods, Some(1), None);
    assert!(a.devices.is_empty());
    assert_eq!(
        a.bad_reports[0].reason,
        "the report under hsm.j5t.io/device-report.pico is for HSMDevice \"nitro\", not \"pico\""
    );
}

#[test]
fn phases_follow_the_counts() {
    let fresh = |name: &str, node: &str| reporting(name, node, "pico", 5, vec![]);
    let discovering = pod(
        "d",
        "n3",
        "Running",
        &[(
            device_report_key("pico"),
            json!({"hsmDeviceName": "pico", "reportingNode": "n3", "discoveredDevices": [],
                   "lastReportTime": ago(5), "discoveryStatus": "discovering"})
            .to_string(),
        )],
    );
    // All expected pods fresh and completed.
    assert_eq!(
        run(&[fresh("a", "n1"), fresh("b", "n2")], Some(2), None).phase,
        HSMPoolPhase::Ready
    );
    // One of two reporting.
    assert_eq!(
        run(
            &[fresh("a", "n1"), pod("b", "n2", "Running", &[])],
            Some(2),
            None
        )
        .phase,
        HSMPoolPhase::Partial
    );
    // Fresh but still discovering.
    assert_eq!(
        run(&[fresh("a", "n1"), discovering.clone()], Some(2), None).phase,
        HSMPoolPhase::Aggregating
    );
    // The DaemonSet's status not written yet: one fresh completed report is Ready.
    assert_eq!(
        run(&[fresh("a", "n1")], None, None).phase,
        HSMPoolPhase::Ready
    );
    // ...but a lone stale report is not.
    assert_eq!(
        run(&[reporting("a", "n1", "pico", 900, vec![])], None, None).phase,
        HSMPoolPhase::Aggregating
    );
}

#[test]
fn a_pod_without_a_report_says_its_phase() {
    let pods = [
        pod("a", "n1", "Pending", &[]),
        pod("b", "n1", "Failed", &[]),
        pod("c", "n1", "Succeeded", &[]),
    ];
    let a = run(&pods, Some(3), None);
    let statuses: Vec<&str> = a.pods.iter().map(|p| p.discovery_status.as_str()).collect();
    assert_eq!(statuses, ["pending", "failed", "unknown"]);
}

#[test]
fn failure_is_phase_error_with_a_false_condition() {
    let s = status(
        None,
        &Outcome::Failed {
            message: "HSMDevice pico not found".into(),
        },
        Some(2),
        now(),
    );
    assert_eq!(s.phase, Some(HSMPoolPhase::Error));
    assert_eq!(s.conditions.len(), 1);
    let c = &s.conditions[0];
    assert_eq!(
        (
            c.type_.as_str(),
            c.status.as_str(),
            c.reason.as_str(),
            c.message.as_str()
        ),
        (
            "DeviceAggregation",
            "False",
            "Error",
            "HSMDevice pico not found"
        )
    );
    assert_eq!(s.last_aggregation_time, Some(Time(now())));
    assert!(s.aggregated_devices.is_empty());
    assert_eq!((s.total_devices, s.expected_pods), (0, 0));
}

#[test]
fn the_status_says_everything_the_agents_need() {
    let pods = [reporting(
        "pico-discovery-a",
        "n1",
        "pico",
        10,
        vec![
            device_json("S1", "/dev/bus/usb/001/015", true, 60),
            device_json("S2", "/dev/bus/usb/001/016", false, 30),
        ],
    )];
    let s = status(
        None,
        &Outcome::Aggregated(run(&pods, Some(1), None)),
        Some(1),
        now(),
    );
    assert_eq!(s.phase, Some(HSMPoolPhase::Ready));
    assert_eq!((s.total_devices, s.available_devices), (2, 1));
    assert_eq!(s.expected_pods, 1);
    assert_eq!(s.reporting_pods.len(), 1);
    let c = &s.conditions[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        ("DeviceAggregation", "True", "Ready")
    );
    assert_eq!(
        c.message,
        "Aggregated 2 devices from 1 pods (1 of 1 expected reporting fresh)"
    );
    assert_eq!(s.conditions[1].type_, "ReportsValid");
    assert_eq!(s.conditions[1].status, "True");
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["phase"], "Ready");
    assert_eq!(json["aggregatedDevices"][0]["serialNumber"], "S1");
    assert_eq!(json["aggregatedDevices"][0]["nodeName"], "n1");
    assert_eq!(
        json["aggregatedDevices"][0]["devicePath"],
        "/dev/bus/usb/001/015"
    );
    assert_eq!(json["aggregatedDevices"][1]["available"], false);
    assert_eq!(json["reportingPods"][0]["fresh"], true);
}

#[test]
fn a_condition_keeps_its_transition_time_until_its_status_changes() {
    let earlier: Timestamp = "2026-12-06T11:00:00Z".parse().unwrap();
    let pods = [reporting("a", "n1", "pico", 10, vec![])];
    let first = status(
        None,
        &Outcome::Aggregated(run(&pods, Some(1), None)),
        Some(1),
        earlier,
    );
    let second = status(
        Some(&first),
        &Outcome::Aggregated(run(&pods, Some(2), None)),
        Some(1),
        now(),
    );
    assert_eq!(second.phase, Some(HSMPoolPhase::Partial));
    assert_eq!(
        second.conditions[0].last_transition_time,
        Time(earlier),
        "still True"
    );
    assert_eq!(second.last_aggregation_time, Some(Time(now())));
    let failed = status(
        Some(&second),
        &Outcome::Failed {
            message: "gone".into(),
        },
        Some(1),
        now(),
    );
    assert_eq!(failed.conditions[0].last_transition_time, Time(now()));
}

// Properties over random reports: a handful of nodes, serials and ages.

fn arb_device() -> impl Strategy<Value = Value> {
    (0..4usize, 0..3usize, any::<bool>(), 0..900i64).prop_map(|(serial, port, available, seen)| {
        let serial = ["", "S1", "S2", "S3"][serial];
        device_json(
            serial,
            &format!("/dev/bus/usb/001/00{port}"),
            available,
            seen,
        )
    })
}

fn arb_pod() -> impl Strategy<Value = Pod> {
    (
        0..100u32,
        0..3usize,
        0..900i64,
        proptest::collection::vec(arb_device(), 0..4),
        0..10u8,
    )
        .prop_map(|(id, node, age, devices, kind)| {
            let name = format!("pod-{id}");
            let node = format!("n{node}");
            match kind {
                0 => pod(&name, &node, "Running", &[]),
                1 => pod(
                    &name,
                    &node,
                    "Running",
                    &[(device_report_key("pico"), "[1,2".into())],
                ),
                _ => reporting(&name, &node, "pico", age, devices),
            }
        })
}

fn arb_pods() -> impl Strategy<Value = Vec<Pod>> {
    proptest::collection::vec(arb_pod(), 0..6).prop_map(|mut pods| {
        // Pod names are unique within a namespace.
        pods.sort_by_key(|p| p.name_any());
        pods.dedup_by_key(|p| p.name_any());
        pods
    })
}

proptest! {
    #[test]
    fn aggregation_does_not_depend_on_pod_order(
        (pods, shuffled) in arb_pods().prop_flat_map(|p| (Just(p.clone()), Just(p).prop_shuffle())),
        desired in 0..4i32,
    ) {
        prop_assert_eq!(run(&pods, Some(desired), None), run(&shuffled, Some(desired), None));
    }

    #[test]
    fn every_serial_appears_once_and_available_when_any_fresh_copy_is(
        pods in arb_pods(),
    ) {
        let a = run(&pods, Some(1), None);
        let mut seen = std::collections::BTreeSet::new();
        for d in a.devices.iter().filter(|d| !d.serial_number.is_empty()) {
            prop_assert!(seen.insert(d.serial_number.clone()), "{} twice", d.serial_number);
        }
        for serial in ["S1", "S2", "S3"] {
            let copies: Vec<(bool, bool)> = pods
                .iter()
                .filter_map(|p| match PodDiscoveryReport::for_device(p.annotations(), "pico") {
                    Some(Ok(r)) => Some(r),
                    _ => None,
                })
                .flat_map(|r| {
                    let fresh = is_fresh(r.last_report_time.0, now(), DEFAULT_GRACE);
                    r.discovered_devices
                        .into_iter()
                        .filter(|d| d.serial_number == serial)
                        .map(move |d| (d.available, fresh))
                        .collect::<Vec<_>>()
                })
                .collect();
            let kept = a.devices.iter().find(|d| d.serial_number == serial);
            prop_assert_eq!(kept.is_some(), !copies.is_empty(), "{}", serial);
            if let Some(kept) = kept {
                prop_assert_eq!(kept.available, copies.iter().any(|(a, f)| *a && *f));
            }
        }
        let s = status(None, &Outcome::Aggregated(a.clone()), Some(1), now());
        prop_assert_eq!(s.total_devices as usize, a.devices.len());
        prop_assert!(s.available_devices <= s.total_devices);
        prop_assert_eq!(s.reporting_pods.len(), pods.len());
    }

    #[test]
    fn ready_needs_a_fresh_completed_report(pods in arb_pods(), desired in 0..4i32) {
        let a = run(&pods, Some(desired), None);
        if a.phase == HSMPoolPhase::Ready {
            prop_assert!(a.pods.iter().any(|p| p.fresh && p.discovery_status == "completed"));
        }
        if a.pods.iter().all(|p| p.discovery_status == "discovering" && !p.fresh) {
            prop_assert_eq!(a.phase, HSMPoolPhase::Pending);
        }
    }
}
