//! One table test per planning rule, and properties over random indexes: applying a plan
//! leaves the healthy devices identical, and planning again finds nothing to do.

use super::*;
use crate::resolve::Strategy as Rule;
use proptest::prelude::{Just, Strategy, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
use std::sync::Arc;

fn present(name: &str, checksum: &str, version: i64, second: u32) -> IndexEntry {
    IndexEntry {
        name: name.into(),
        keys: vec!["data".into()],
        checksum: checksum.into(),
        version: 1,
        tombstone: false,
        sync_version: version,
        sync_timestamp: format!("2026-11-01T00:00:{second:02}Z"),
        has_data: true,
    }
}

fn tombstone(name: &str, version: i64, second: u32) -> IndexEntry {
    IndexEntry {
        name: name.into(),
        keys: vec![],
        checksum: String::new(),
        version: 1,
        tombstone: true,
        sync_version: version,
        sync_timestamp: format!("2026-11-01T00:00:{second:02}Z"),
        has_data: false,
    }
}

fn device(
    key: &str,
    serial: &str,
    health: DeviceHealth,
    entries: Vec<IndexEntry>,
) -> DeviceSnapshot {
    DeviceSnapshot {
        key: key.into(),
        serial: serial.into(),
        health,
        entries: Arc::new(entries.into_iter().map(|e| (e.name.clone(), e)).collect()),
    }
}

fn healthy(key: &str, entries: Vec<IndexEntry>) -> DeviceSnapshot {
    device(
        key,
        &format!("serial-{key}"),
        DeviceHealth::Healthy,
        entries,
    )
}

fn down(key: &str, entries: Vec<IndexEntry>) -> DeviceSnapshot {
    let health = DeviceHealth::Unavailable {
        reason: "agent unreachable".into(),
    };
    device(key, &format!("serial-{key}"), health, entries)
}

/// The writes of a plan as (name, source, target, kind), for compact assertions.
fn writes(plan: &Plan) -> Vec<(&str, &str, &str, ActionKind)> {
    plan.secrets
        .iter()
        .flat_map(|s| {
            s.actions.iter().map(move |a| {
                (
                    s.name.as_str(),
                    s.source.as_str(),
                    a.device.as_str(),
                    a.kind,
                )
            })
        })
        .collect()
}

#[test]
fn devices_that_agree_need_nothing() {
    let devices = [
        healthy(
            "a",
            vec![present("db", "sha256:1", 2, 1), tombstone("old", 3, 2)],
        ),
        healthy(
            "b",
            vec![present("db", "sha256:1", 2, 1), tombstone("old", 3, 2)],
        ),
    ];
    let plan = plan(&devices);
    assert_eq!(plan.secrets, []);
    assert_eq!(plan.in_sync, 2);
    assert_eq!(plan.healthy, ["a", "b"]);
}

#[test]
fn a_device_lacking_the_secret_is_written_the_holders_copy() {
    let devices = [
        healthy("a", vec![present("db", "sha256:1", 1, 1)]),
        healthy("b", vec![]),
    ];
    let plan = plan(&devices);
    assert_eq!(writes(&plan), [("db", "a", "b", ActionKind::Write)]);
    assert_eq!(plan.secrets[0].actions[0].seen, None);
    assert_eq!(plan.secrets[0].strategy, Rule::LastWriteWins);
}

#[test]
fn the_highest_sync_version_wins_with_two_devices() {
    let devices = [
        healthy("a", vec![present("db", "sha256:new", 3, 1)]),
        healthy("b", vec![present("db", "sha256:old", 2, 59)]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "a", "b", ActionKind::Write)]
    );
}

#[test]
fn equal_versions_fall_back_to_the_latest_timestamp() {
    let devices = [
        healthy("a", vec![present("db", "sha256:early", 3, 1)]),
        healthy("b", vec![present("db", "sha256:late", 3, 9)]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "b", "a", ActionKind::Write)]
    );
}

#[test]
fn the_same_value_under_an_older_record_gets_the_record_from_the_newest_holder() {
    // The resolver's winner is the lowest id holding the value ("a"), but its record is
    // older: copying it would lower "b"'s version, so "b" is the source.
    let devices = [
        healthy("a", vec![present("db", "sha256:1", 2, 1)]),
        healthy("b", vec![present("db", "sha256:1", 5, 1)]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "b", "a", ActionKind::RestoreMetadata)]
    );
}

#[test]
fn a_newer_tombstone_is_written_over_live_copies_and_to_devices_lacking_it() {
    // Defect 8: the device that missed the delete must not bring the secret back.
    let devices = [
        healthy("a", vec![tombstone("db", 4, 1)]),
        healthy("b", vec![present("db", "sha256:1", 3, 9)]),
        healthy("c", vec![]),
    ];
    let plan = plan(&devices);
    assert_eq!(
        writes(&plan),
        [
            ("db", "a", "b", ActionKind::Tombstone),
            ("db", "a", "c", ActionKind::Tombstone)
        ]
    );
    assert!(plan.secrets[0].deleted());
}

#[test]
fn a_write_newer_than_a_tombstone_recreates_the_secret() {
    let devices = [
        healthy("a", vec![tombstone("db", 2, 1)]),
        healthy("b", vec![present("db", "sha256:1", 3, 1)]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "b", "a", ActionKind::Write)]
    );
}

#[test]
fn an_older_tombstone_is_replaced_by_the_newer_one() {
    let devices = [
        healthy("a", vec![tombstone("db", 2, 1)]),
        healthy("b", vec![tombstone("db", 5, 1)]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "b", "a", ActionKind::Tombstone)]
    );
}

#[test]
fn unhealthy_devices_neither_vote_nor_receive_nor_count_as_lacking() {
    let devices = [
        healthy("a", vec![present("db", "sha256:1", 1, 1)]),
        healthy("b", vec![present("db", "sha256:1", 1, 1)]),
        down(
            "c",
            vec![
                present("db", "sha256:2", 9, 1),
                present("only-on-c", "sha256:3", 1, 1),
            ],
        ),
        device("d", "serial-d", DeviceHealth::Connecting, vec![]),
    ];
    let plan = plan(&devices);
    assert_eq!(writes(&plan), []);
    assert_eq!(
        plan.in_sync, 1,
        "only names the healthy devices hold are planned"
    );
    let skipped: Vec<&str> = plan.skipped.iter().map(|s| s.device.as_str()).collect();
    assert_eq!(skipped, ["c", "d"]);
    assert_eq!(plan.skipped[0].reason, "agent unreachable");
}

#[test]
fn a_strict_majority_of_the_expected_devices_wins_over_a_newer_write() {
    let devices = [
        healthy("a", vec![present("db", "sha256:x", 1, 1)]),
        healthy("b", vec![present("db", "sha256:x", 1, 1)]),
        healthy("c", vec![present("db", "sha256:y", 2, 1)]),
    ];
    let plan = plan(&devices);
    assert_eq!(writes(&plan), [("db", "a", "c", ActionKind::Write)]);
    assert_eq!(plan.secrets[0].strategy, Rule::Majority);
}

#[test]
fn a_majority_never_outvotes_a_newer_tombstone() {
    let devices = [
        healthy("a", vec![present("db", "sha256:x", 1, 1)]),
        healthy("b", vec![present("db", "sha256:x", 1, 1)]),
        healthy("c", vec![tombstone("db", 2, 1)]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [
            ("db", "c", "a", ActionKind::Tombstone),
            ("db", "c", "b", ActionKind::Tombstone)
        ]
    );
}

#[test]
fn a_down_device_still_counts_towards_the_expected_majority() {
    // Three expected devices, one down: two agreeing healthy devices are a majority (2 > 1).
    let devices = [
        healthy("a", vec![present("db", "sha256:x", 1, 1)]),
        healthy("b", vec![present("db", "sha256:y", 2, 1)]),
        down("c", vec![]),
    ];
    let plan = plan(&devices);
    assert_eq!(
        plan.secrets[0].strategy,
        Rule::MajorityFallbackLastWriteWins
    );
    assert_eq!(writes(&plan), [("db", "b", "a", ActionKind::Write)]);
}

#[test]
fn devices_reporting_the_same_serial_are_told_apart_by_key() {
    let devices = [
        device(
            "one",
            "0",
            DeviceHealth::Healthy,
            vec![present("db", "sha256:1", 1, 1)],
        ),
        device("two", "0", DeviceHealth::Healthy, vec![]),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "one", "two", ActionKind::Write)]
    );
    assert_eq!(device_ids(&devices), ["one", "two"]);
}

#[test]
fn the_serial_is_the_id_when_unique_as_the_controller_uses_it() {
    // Equal version and timestamp: the lowest id wins. By key "z" would, by serial
    // "a-serial" (device "zz") does, as in the HSMSecret controller.
    let devices = [
        device(
            "zz",
            "a-serial",
            DeviceHealth::Healthy,
            vec![present("db", "sha256:1", 1, 1)],
        ),
        device(
            "z",
            "z-serial",
            DeviceHealth::Healthy,
            vec![present("db", "sha256:2", 1, 1)],
        ),
    ];
    assert_eq!(
        writes(&plan(&devices)),
        [("db", "zz", "z", ActionKind::Write)]
    );
}

/// Applies a plan to the snapshots as a faithful executor would: each target takes the
/// source's entry.
fn apply(devices: &mut [DeviceSnapshot], plan: &Plan) {
    for secret in &plan.secrets {
        for action in &secret.actions {
            let device = devices.iter_mut().find(|d| d.key == action.device).unwrap();
            Arc::make_mut(&mut device.entries)
                .insert(secret.name.clone(), secret.source_entry.clone());
        }
    }
}

fn arb_entry(name: &'static str) -> impl Strategy<Value = Option<IndexEntry>> {
    prop_oneof![
        Just(None),
        (0..3u8, 0..4i64, 0..3u32).prop_map(move |(c, v, s)| Some(present(
            name,
            &format!("sha256:{c}"),
            v,
            s
        ))),
        (0..4i64, 0..3u32).prop_map(move |(v, s)| Some(tombstone(name, v, s))),
    ]
}

fn arb_device(key: &'static str) -> impl Strategy<Value = DeviceSnapshot> {
    (any::<bool>(), arb_entry("a"), arb_entry("b")).prop_map(move |(up, a, b)| {
        let entries = a.into_iter().chain(b).collect();
        if up {
            healthy(key, entries)
        } else {
            down(key, entries)
        }
    })
}

proptest! {
    #[test]
    fn applying_a_plan_makes_healthy_devices_identical_and_the_next_plan_empty(
        mut devices in (arb_device("a"), arb_device("b"), arb_device("c"), any::<bool>())
            .prop_map(|(a, b, c, three)| if three { vec![a, b, c] } else { vec![a, b] })
    ) {
        let before: Vec<_> = devices.iter().filter(|d| d.health != DeviceHealth::Healthy).cloned().collect();
        let first = plan(&devices);
        apply(&mut devices, &first);
        let healthy: Vec<_> = devices.iter().filter(|d| d.health == DeviceHealth::Healthy).collect();
        for pair in healthy.windows(2) {
            prop_assert_eq!(&pair[0].entries, &pair[1].entries);
        }
        prop_assert_eq!(plan(&devices).secrets, vec![]);
        let after: Vec<_> = devices.iter().filter(|d| d.health != DeviceHealth::Healthy).cloned().collect();
        for (b, a) in before.iter().zip(&after) {
            prop_assert_eq!(&b.entries, &a.entries, "an unhealthy device is never written");
        }
        // A deleted winner stays deleted: no plan turns a newest tombstone into data.
        for secret in &first.secrets {
            if secret.deleted() {
                prop_assert!(secret.actions.iter().all(|a| a.kind == ActionKind::Tombstone));
            }
        }
    }
}
