//! The placement rules of §6.3, one test per rule.

use super::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::SignedDuration;

const SERIAL: &str = "DC6A33145E23A42A";
const AGENT: &str = "hsm-agent-pico-hsm-dc6a33145e23a42a";

fn now() -> Timestamp {
    "2026-12-06T12:00:00Z".parse().unwrap()
}

fn ago(seconds: i64) -> Time {
    Time(now() - SignedDuration::from_secs(seconds))
}

fn device() -> HSMDevice {
    let mut device: HSMDevice = serde_json::from_value(serde_json::json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": "pico-hsm", "namespace": "hsm-system", "uid": "dev-uid"},
        "spec": {"deviceType": "PicoHSM"}
    }))
    .unwrap();
    device.metadata.uid = Some("dev-uid".into());
    device
}

fn copy(serial: &str, node: &str, available: bool, seen: Time) -> DiscoveredDevice {
    DiscoveredDevice {
        device_path: "/dev/bus/usb/001/015".into(),
        serial_number: serial.into(),
        node_name: node.into(),
        last_seen: seen,
        device_info: Default::default(),
        available,
        resource_name: String::new(),
        role: None,
        mirrored_from: String::new(),
        last_sync_time: None,
        health: String::new(),
    }
}

fn pool(phase: HSMPoolPhase, devices: Vec<DiscoveredDevice>) -> HSMPool {
    let mut pool = HSMPool::new("pico-hsm-pool", Default::default());
    pool.metadata.namespace = Some("hsm-system".into());
    pool.metadata.creation_timestamp = Some(ago(3600));
    pool.spec.grace_period = Some("5m".into());
    pool.status = Some(hsm_api::pool::HSMPoolStatus {
        total_devices: devices.len() as i32,
        available_devices: devices.iter().filter(|d| d.available).count() as i32,
        aggregated_devices: devices,
        phase: Some(phase),
        ..Default::default()
    });
    pool
}

fn settings() -> Settings {
    Settings {
        image: "hsm-agent:1".into(),
        tls: true,
        service_account: "hsm-agent".into(),
        absence_timeout: Duration::from_secs(600),
    }
}

fn observe(
    device: &HSMDevice,
    pool: &HSMPool,
    agents: &[Deployment],
    gate: &DiscoveryGate,
    settings: &Settings,
) -> Plan {
    plan(
        &Observed {
            device,
            pool,
            agents,
            gate,
            last_available: None,
            now: now(),
        },
        settings,
    )
}

fn applied_node(action: &Action) -> &str {
    match action {
        Action::Apply(d) => d
            .spec
            .template
            .spec
            .as_ref()
            .unwrap()
            .node_selector
            .as_ref()
            .unwrap()["kubernetes.io/hostname"]
            .as_str(),
        other => panic!("expected Apply, got {other:?}"),
    }
}

fn existing(node: &str, settings: &Settings) -> Deployment {
    desired_agent(&device(), &copy(SERIAL, node, true, ago(0)), settings).unwrap()
}

#[test]
fn an_available_device_in_a_ready_pool_gets_its_agent_on_its_node() {
    let (device, settings) = (device(), settings());
    let pool = pool(HSMPoolPhase::Ready, vec![copy(SERIAL, "n1", true, ago(5))]);
    let plan = observe(&device, &pool, &[], &DiscoveryGate::Open, &settings);
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(applied_node(&plan.actions[0]), "n1");
    let Action::Apply(d) = &plan.actions[0] else {
        unreachable!()
    };
    assert_eq!(d.metadata.name.as_deref(), Some(AGENT));
    assert!(annotated_hash(d).is_some_and(|h| h.len() == 16));
}

#[test]
fn an_agent_as_desired_is_left_alone_and_a_changed_one_is_applied() {
    let (device, settings) = (device(), settings());
    let pool = pool(HSMPoolPhase::Ready, vec![copy(SERIAL, "n1", true, ago(5))]);
    let current = [existing("n1", &settings)];
    assert_eq!(
        observe(&device, &pool, &current, &DiscoveryGate::Open, &settings),
        Plan::default()
    );
    let upgraded = Settings {
        image: "hsm-agent:2".into(),
        ..settings.clone()
    };
    let plan = observe(&device, &pool, &current, &DiscoveryGate::Open, &upgraded);
    assert_eq!(plan.actions.len(), 1);
    let Action::Apply(d) = &plan.actions[0] else {
        panic!("{plan:?}")
    };
    let container = &d.spec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(container.image.as_deref(), Some("hsm-agent:2"));
    let without_tls = Settings {
        tls: false,
        ..settings.clone()
    };
    assert_eq!(
        observe(&device, &pool, &current, &DiscoveryGate::Open, &without_tls)
            .actions
            .len(),
        1
    );
}

#[test]
fn a_node_whose_discovery_pod_is_not_current_gets_no_agent_yet() {
    let (device, settings) = (device(), settings());
    let pool = pool(HSMPoolPhase::Ready, vec![copy(SERIAL, "n1", true, ago(5))]);
    let gate = DiscoveryGate::Nodes(BTreeSet::from(["n2".to_owned()]));
    let plan = observe(&device, &pool, &[], &gate, &settings);
    assert_eq!(
        plan.actions,
        vec![Action::AwaitDiscovery {
            name: AGENT.into(),
            node: "n1".into()
        }]
    );
    assert_eq!(plan.recheck_in, Some(DISCOVERY_RECHECK));
    let open = DiscoveryGate::Nodes(BTreeSet::from(["n1".to_owned()]));
    assert_eq!(
        applied_node(&observe(&device, &pool, &[], &open, &settings).actions[0]),
        "n1"
    );
}

#[test]
fn a_device_moved_to_another_node_takes_its_agent_along() {
    let (device, settings) = (device(), settings());
    let pool = pool(
        HSMPoolPhase::Ready,
        vec![
            copy(SERIAL, "n1", false, ago(30)),
            copy(SERIAL, "n2", true, ago(2)),
        ],
    );
    let plan = observe(
        &device,
        &pool,
        &[existing("n1", &settings)],
        &DiscoveryGate::Open,
        &settings,
    );
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(applied_node(&plan.actions[0]), "n2");
}

#[test]
fn a_lost_device_keeps_its_agent_for_the_grace_period_then_loses_it() {
    let (device, settings) = (device(), settings());
    let agents = [existing("n1", &settings)];
    let recent = pool(
        HSMPoolPhase::Ready,
        vec![copy(SERIAL, "n1", false, ago(60))],
    );
    let plan = observe(&device, &recent, &agents, &DiscoveryGate::Open, &settings);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.recheck_in, Some(Duration::from_secs(240)));

    let mut old = pool(
        HSMPoolPhase::Ready,
        vec![copy(SERIAL, "n1", false, ago(301))],
    );
    old.status
        .as_mut()
        .unwrap()
        .aggregated_devices
        .push(copy("OTHER", "n1", true, ago(1)));
    let plan = observe(&device, &old, &agents, &DiscoveryGate::Open, &settings);
    assert!(
        plan.actions.contains(&Action::Delete {
            name: AGENT.into(),
            why: Removal::Lost
        }),
        "{plan:?}"
    );
}

#[test]
fn a_pool_that_is_not_ready_creates_no_agent() {
    let (device, settings) = (device(), settings());
    for phase in [
        HSMPoolPhase::Pending,
        HSMPoolPhase::Aggregating,
        HSMPoolPhase::Partial,
        HSMPoolPhase::Error,
    ] {
        let pool = pool(phase.clone(), vec![copy(SERIAL, "n1", true, ago(5))]);
        let plan = observe(&device, &pool, &[], &DiscoveryGate::Open, &settings);
        assert!(plan.actions.is_empty(), "{phase:?}: {plan:?}");
    }
}

#[test]
fn with_no_device_available_every_agent_goes_after_the_absence_timeout() {
    let (device, settings) = (device(), settings());
    let other = desired_agent(&device, &copy("OTHER", "n2", true, ago(0)), &settings).unwrap();
    let agents = [existing("n1", &settings), other];
    let lost = |seconds| {
        vec![
            copy(SERIAL, "n1", false, ago(seconds)),
            copy("OTHER", "n2", false, ago(seconds + 1000)),
        ]
    };
    let within = pool(HSMPoolPhase::Ready, lost(100));
    let plan = observe(&device, &within, &agents, &DiscoveryGate::Open, &settings);
    assert_eq!(
        plan.actions,
        vec![Action::Delete {
            name: "hsm-agent-pico-hsm-other".into(),
            why: Removal::Lost
        }],
        "only the device lost for longer than the grace period loses its agent"
    );
    assert_eq!(
        plan.recheck_in,
        Some(Duration::from_secs(200)),
        "the grace period ends first"
    );

    let past = pool(HSMPoolPhase::Ready, lost(601));
    let plan = observe(&device, &past, &agents, &DiscoveryGate::Open, &settings);
    let mut deleted: Vec<_> = plan
        .actions
        .iter()
        .map(|a| match a {
            Action::Delete { name, why } => (name.as_str(), *why),
            other => panic!("{other:?}"),
        })
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        vec![
            (AGENT, Removal::Absent),
            ("hsm-agent-pico-hsm-other", Removal::Absent)
        ]
    );
}

#[test]
fn a_vanished_report_counts_from_when_a_device_was_last_seen() {
    let (device, settings) = (device(), settings());
    let agents = [existing("n1", &settings)];
    let empty = pool(HSMPoolPhase::Pending, vec![]);
    let with_memory = |seconds| {
        plan(
            &Observed {
                device: &device,
                pool: &empty,
                agents: &agents,
                gate: &DiscoveryGate::Open,
                last_available: Some(now() - SignedDuration::from_secs(seconds)),
                now: now(),
            },
            &settings,
        )
    };
    let plan = with_memory(30);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.recheck_in, Some(Duration::from_secs(570)));
    assert_eq!(
        with_memory(600).actions,
        vec![Action::Delete {
            name: AGENT.into(),
            why: Removal::Absent
        }]
    );
    // Remembering nothing, the pool's age decides (an hour here).
    assert_eq!(
        observe(&device, &empty, &agents, &DiscoveryGate::Open, &settings)
            .actions
            .len(),
        1
    );
}

#[test]
fn an_agent_whose_serial_left_a_ready_report_is_removed() {
    let (device, settings) = (device(), settings());
    let pool = pool(
        HSMPoolPhase::Ready,
        vec![copy("NEWCARD", "n1", true, ago(1))],
    );
    let plan = observe(
        &device,
        &pool,
        &[existing("n1", &settings)],
        &DiscoveryGate::Open,
        &settings,
    );
    assert!(plan.actions.contains(&Action::Delete {
        name: AGENT.into(),
        why: Removal::Unreported
    }));
    assert!(plan.actions.iter().any(|a| matches!(a, Action::Apply(d) if d.metadata.name.as_deref() == Some("hsm-agent-pico-hsm-newcard"))));
}

#[test]
fn devices_without_a_usable_serial_get_no_agent() {
    let (device, settings) = (device(), settings());
    let pool = pool(
        HSMPoolPhase::Ready,
        vec![
            copy("", "n1", true, ago(1)),
            copy("---", "n1", true, ago(1)),
        ],
    );
    assert!(
        observe(&device, &pool, &[], &DiscoveryGate::Open, &settings)
            .actions
            .is_empty()
    );
}

#[test]
fn the_grace_period_is_read_from_the_pool_with_the_go_default() {
    let mut pool = pool(HSMPoolPhase::Ready, vec![]);
    pool.spec.grace_period = Some("90s".into());
    assert_eq!(grace_period(&pool), Duration::from_secs(90));
    pool.spec.grace_period = Some("soon".into());
    assert_eq!(grace_period(&pool), DEFAULT_GRACE_PERIOD);
    pool.spec.grace_period = None;
    assert_eq!(grace_period(&pool), DEFAULT_GRACE_PERIOD);
}
