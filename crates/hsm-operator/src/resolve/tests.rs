//! One table test per rule of the Go resolver, and properties over random observations.

use super::Strategy as Rule;
use super::{DELETED, Holding, Observation, Resolution, resolve};
use chrono::{DateTime, Utc};
use proptest::prelude::*;

fn at(secs: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(secs, 0)
}

fn present(device: &str, checksum: &str, version: i64, time: i64) -> Observation {
    Observation {
        device: device.into(),
        holding: Holding::Present {
            checksum: checksum.into(),
        },
        version,
        timestamp: at(time),
    }
}

fn tombstone(device: &str, version: i64, time: i64) -> Observation {
    Observation {
        device: device.into(),
        holding: Holding::Tombstone,
        version,
        timestamp: at(time),
    }
}

fn absent(device: &str) -> Observation {
    Observation {
        device: device.into(),
        holding: Holding::Absent,
        version: 0,
        timestamp: None,
    }
}

fn winner(r: &Resolution) -> (&str, &str) {
    let w = r.winner.as_ref().expect("a winner");
    (w.device.as_str(), w.checksum.as_str())
}

#[test]
fn nobody_voting_is_no_winner() {
    let r = resolve(&[absent("a"), absent("b")], 2);
    assert_eq!(r.winner, None);
    assert_eq!(r.strategy, Rule::None);
    assert!(!r.diverged());
}

#[test]
fn an_absent_device_abstains() {
    let r = resolve(&[absent("a"), present("b", "x", 1, 0)], 2);
    assert_eq!(winner(&r), ("b", "x"));
    assert!(r.outliers.is_empty(), "an abstainer is no outlier");
}

#[test]
fn two_devices_highest_version_wins() {
    let r = resolve(&[present("a", "old", 1, 9), present("b", "new", 2, 1)], 2);
    assert_eq!(winner(&r), ("b", "new"));
    assert_eq!(r.strategy, Rule::LastWriteWins);
    assert_eq!(r.outliers, vec!["a".to_owned()]);
}

#[test]
fn equal_versions_latest_timestamp_wins() {
    let r = resolve(&[present("a", "old", 3, 1), present("b", "new", 3, 2)], 2);
    assert_eq!(winner(&r), ("b", "new"));
}

#[test]
fn equal_versions_and_times_lowest_device_wins() {
    let r = resolve(&[present("b", "bee", 3, 1), present("a", "ay", 3, 1)], 2);
    assert_eq!(winner(&r), ("a", "ay"));
}

#[test]
fn the_winner_is_the_lowest_device_holding_the_checksum() {
    let r = resolve(
        &[
            present("c", "x", 2, 2),
            present("b", "x", 1, 1),
            present("d", "y", 1, 1),
        ],
        2,
    );
    assert_eq!(winner(&r), ("b", "x"));
    assert_eq!(r.winner.unwrap().version, 2);
}

#[test]
fn three_devices_strict_majority_wins_over_a_newer_write() {
    let r = resolve(
        &[
            present("a", "x", 1, 1),
            present("b", "x", 1, 1),
            present("c", "y", 5, 9),
        ],
        3,
    );
    assert_eq!(winner(&r), ("a", "x"));
    assert_eq!(r.strategy, Rule::Majority);
    assert_eq!(r.outliers, vec!["c".to_owned()]);
}

#[test]
fn majority_counts_the_expected_devices_not_the_responders() {
    // 2 of 4 expected is no strict majority: last write wins.
    let r = resolve(
        &[
            present("a", "x", 1, 1),
            present("b", "x", 1, 1),
            present("c", "y", 5, 9),
        ],
        4,
    );
    assert_eq!(winner(&r), ("c", "y"));
    assert_eq!(r.strategy, Rule::MajorityFallbackLastWriteWins);
}

#[test]
fn a_tombstone_votes_with_the_sentinel() {
    let r = resolve(&[present("a", "x", 1, 1), tombstone("b", 2, 2)], 2);
    assert_eq!(winner(&r), ("b", DELETED));
    assert!(r.deleted());
    let r = resolve(
        &[
            tombstone("a", 2, 2),
            tombstone("b", 2, 2),
            present("c", "x", 1, 1),
        ],
        3,
    );
    assert_eq!(winner(&r), ("a", DELETED));
    assert_eq!(r.strategy, Rule::Majority);
}

#[test]
fn a_newer_tombstone_is_not_out_voted_by_an_older_majority() {
    let r = resolve(
        &[
            present("a", "x", 1, 1),
            present("b", "x", 1, 1),
            tombstone("c", 2, 2),
        ],
        3,
    );
    assert!(r.deleted(), "{r:?}");
    assert_eq!(r.strategy, Rule::MajorityFallbackLastWriteWins);
}

fn observation() -> impl Strategy<Value = Observation> {
    (0..5u8, 0..4u8, 0..4i64, proptest::option::of(0..4i64)).prop_map(
        |(device, kind, version, time)| Observation {
            device: format!("dev-{device}"),
            holding: match kind {
                0 => Holding::Absent,
                1 => Holding::Tombstone,
                n => Holding::Present {
                    checksum: format!("sha256:{n}"),
                },
            },
            version,
            timestamp: time.and_then(at),
        },
    )
}

/// One observation per device, as the controller builds them.
fn observations() -> impl Strategy<Value = Vec<Observation>> {
    proptest::collection::vec(observation(), 0..6).prop_map(|mut all| {
        all.sort_by(|a, b| a.device.cmp(&b.device));
        all.dedup_by(|a, b| a.device == b.device);
        all
    })
}

proptest! {
    #[test]
    fn deterministic_and_independent_of_order(
        obs in observations(), expected in 1..6usize, seed in any::<u64>()
    ) {
        let first = resolve(&obs, expected);
        prop_assert_eq!(&first, &resolve(&obs, expected));
        let mut shuffled = obs.clone();
        let n = shuffled.len().max(1);
        shuffled.rotate_left((seed as usize) % n);
        if seed % 2 == 0 { shuffled.reverse(); }
        prop_assert_eq!(first, resolve(&shuffled, expected));
    }

    #[test]
    fn a_tombstone_is_never_out_voted_by_an_older_version(
        obs in observations(), expected in 1..6usize
    ) {
        let r = resolve(&obs, expected);
        let newest_tombstone = obs.iter()
            .filter(|o| o.holding == Holding::Tombstone)
            .map(|o| o.version)
            .max();
        if let (Some(tomb), Some(w)) = (newest_tombstone, r.winner.as_ref()) {
            prop_assert!(w.checksum == DELETED || w.version >= tomb,
                "a delete at version {} lost to version {}", tomb, w.version);
        }
    }

    #[test]
    fn the_winner_holds_what_it_says_and_outliers_disagree(
        obs in observations(), expected in 1..6usize
    ) {
        let r = resolve(&obs, expected);
        match &r.winner {
            None => prop_assert!(obs.iter().all(|o| o.vote().is_none())),
            Some(w) => {
                prop_assert!(obs.iter().any(|o| o.device == w.device && o.vote() == Some(w.checksum.as_str())));
                for o in &obs {
                    let disagrees = o.vote().is_some_and(|v| v != w.checksum);
                    prop_assert_eq!(disagrees, r.outliers.contains(&o.device));
                }
            }
        }
    }
}
