//! The pure half of mirroring: from every device's index (names, checksums, sync versions,
//! tombstones; no values) to what each healthy device must be written so that all of them
//! hold the copy the resolver picks. No I/O, so each rule is a table test.
//!
//! - The winner of every name is [`crate::resolve::resolve`]'s, tombstones included: a
//!   tombstone votes, so a device that missed a delete gets the tombstone, and its stale copy
//!   never comes back (the Go mirror never saw tombstones and resurrected deleted secrets).
//! - The copy written is the winner's value with the winner's metadata record, whole: the
//!   user's description, labels and format travel with it, and so does its `sync.version`,
//!   so a mirrored device agrees with the source and the next plan finds nothing to do (the
//!   Go mirror replaced user metadata with fresh sync labels).
//! - Devices that are not healthy are left out: they neither vote nor receive, and they are
//!   not taken for devices that lack the secret. They catch up once they are back.

use crate::agents::follow::same_content;
use crate::agents::{DeviceHealth, DeviceSnapshot};
use crate::resolve::{DELETED, Holding, Observation, Strategy, resolve};
use chrono::{DateTime, Utc};
use hsm_proto::v1::IndexEntry;
use std::collections::{BTreeMap, BTreeSet};

/// What a device must be written to hold the winning copy.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    /// The device lacks the winning value (absent, other content, or a tombstone the winner
    /// outranks): write the value and the metadata record.
    Write,
    /// The winner is a tombstone: write it (no data, the winner's tombstone metadata).
    Tombstone,
    /// The device holds the winning value under another metadata record (older
    /// `sync.version` or timestamp): write the record (with the same value).
    RestoreMetadata,
}

impl ActionKind {
    /// The label used in metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Write => "write",
            ActionKind::Tombstone => "tombstone",
            ActionKind::RestoreMetadata => "restore_metadata",
        }
    }
}

/// One write to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    /// The target device's key in the pool.
    pub device: String,
    /// What is written.
    pub kind: ActionKind,
    /// The target's index entry the plan was made from (`None`: it lacked the secret). The
    /// executor writes only while the target still holds exactly this, so a write that
    /// landed after the plan is never overwritten by an older copy.
    pub seen: Option<IndexEntry>,
}

/// What to do for one secret name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPlan {
    /// The secret's name.
    pub name: String,
    /// The device whose copy is written to the others (key in the pool): among the devices
    /// holding the winning checksum, the one with the newest metadata record (highest
    /// `sync.version`, then latest `sync.timestamp`, then lowest id), so that copying never
    /// lowers a device's version.
    pub source: String,
    /// The source's index entry the plan was made from.
    pub source_entry: IndexEntry,
    /// How the resolver chose.
    pub strategy: Strategy,
    /// The writes, by target device key.
    pub actions: Vec<Action>,
}

impl SecretPlan {
    /// The winner is a tombstone.
    pub fn deleted(&self) -> bool {
        self.source_entry.tombstone
    }
}

/// A device left out of the plan, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedDevice {
    /// The device's key in the pool.
    pub device: String,
    /// Why it is left out.
    pub reason: String,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// The healthy devices planned over, by key.
    pub healthy: Vec<String>,
    /// The devices left out.
    pub skipped: Vec<SkippedDevice>,
    /// Names every healthy device already agrees on.
    pub in_sync: usize,
    /// Names with at least one write to make, by name.
    pub secrets: Vec<SecretPlan>,
}

impl Plan {
    /// The number of writes planned.
    pub fn action_count(&self) -> usize {
        self.secrets.iter().map(|s| s.actions.len()).sum()
    }
}

/// Plans a mirror pass over `devices` (every device the pool follows, healthy or not: the
/// resolver's majority counts all of them as expected).
pub fn plan(devices: &[DeviceSnapshot]) -> Plan {
    let ids = device_ids(devices);
    let mut plan = Plan::default();
    let mut healthy = Vec::new();
    for (device, id) in devices.iter().zip(&ids) {
        match &device.health {
            DeviceHealth::Healthy => healthy.push((device, id.as_str())),
            DeviceHealth::Connecting => plan.skipped.push(SkippedDevice {
                device: device.key.clone(),
                reason: "connecting".into(),
            }),
            DeviceHealth::Unavailable { reason } => plan.skipped.push(SkippedDevice {
                device: device.key.clone(),
                reason: reason.clone(),
            }),
        }
    }
    plan.healthy = healthy.iter().map(|(d, _)| d.key.clone()).collect();
    let names: BTreeSet<&String> = healthy.iter().flat_map(|(d, _)| d.entries.keys()).collect();
    for name in names {
        match plan_secret(name, &healthy, devices.len()) {
            Some(secret) => plan.secrets.push(secret),
            None => plan.in_sync += 1,
        }
    }
    plan
}

/// The plan for one name over the healthy devices; `None` when they all agree.
fn plan_secret(
    name: &str,
    healthy: &[(&DeviceSnapshot, &str)],
    expected: usize,
) -> Option<SecretPlan> {
    let observations: Vec<Observation> = healthy
        .iter()
        .map(|(device, id)| observation(id, device.entries.get(name)))
        .collect();
    let resolution = resolve(&observations, expected);
    let winner = resolution.winner?;
    let (source, source_entry) = healthy
        .iter()
        .zip(&observations)
        .filter(|(_, o)| o.vote() == Some(winner.checksum.as_str()))
        .max_by(|((_, a_id), a), ((_, b_id), b)| {
            a.version
                .cmp(&b.version)
                .then(a.timestamp.cmp(&b.timestamp))
                .then(b_id.cmp(a_id))
        })
        .and_then(|((device, _), _)| Some((*device, device.entries.get(name)?)))?;
    let actions: Vec<Action> = healthy
        .iter()
        .filter(|(device, _)| device.key != source.key)
        .filter_map(|(device, _)| {
            let seen = device.entries.get(name);
            let kind = action_kind(seen, source_entry, &winner.checksum)?;
            Some(Action {
                device: device.key.clone(),
                kind,
                seen: seen.cloned(),
            })
        })
        .collect();
    if actions.is_empty() {
        return None;
    }
    Some(SecretPlan {
        name: name.to_owned(),
        source: source.key.clone(),
        source_entry: source_entry.clone(),
        strategy: resolution.strategy,
        actions,
    })
}

/// What a device holding `seen` needs to hold the source's copy; `None` when it does.
fn action_kind(
    seen: Option<&IndexEntry>,
    source: &IndexEntry,
    winning_checksum: &str,
) -> Option<ActionKind> {
    if seen.is_some_and(|e| same_content(e, source)) {
        return None;
    }
    if winning_checksum == DELETED {
        return Some(ActionKind::Tombstone);
    }
    let same_value = seen.is_some_and(|e| vote(e) == winning_checksum);
    Some(match same_value {
        true => ActionKind::RestoreMetadata,
        false => ActionKind::Write,
    })
}

/// What one device's entry votes with (as [`Observation::vote`]).
fn vote(entry: &IndexEntry) -> &str {
    if entry.tombstone {
        DELETED
    } else {
        &entry.checksum
    }
}

fn observation(id: &str, entry: Option<&IndexEntry>) -> Observation {
    Observation {
        device: id.to_owned(),
        holding: match entry {
            None => Holding::Absent,
            Some(e) if e.tombstone => Holding::Tombstone,
            Some(e) => Holding::Present {
                checksum: e.checksum.clone(),
            },
        },
        version: entry.map_or(0, |e| e.sync_version),
        timestamp: entry
            .and_then(|e| DateTime::parse_from_rfc3339(&e.sync_timestamp).ok())
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// Each device's id for the resolver: its serial, as the HSMSecret controller uses it (so
/// both pick the same winner), unless another device reports the same serial (two tokens
/// of one model may), in which case its key in the pool, which is unique.
fn device_ids(devices: &[DeviceSnapshot]) -> Vec<String> {
    let mut serials: BTreeMap<&str, usize> = BTreeMap::new();
    for device in devices {
        *serials.entry(device.serial.as_str()).or_default() += 1;
    }
    devices
        .iter()
        .map(|d| match serials.get(d.serial.as_str()) {
            Some(1) if !d.serial.is_empty() => d.serial.clone(),
            _ => d.key.clone(),
        })
        .collect()
}

#[cfg(test)]
mod tests;
