//! Which device's copy of a secret wins when devices disagree: the Go operator's
//! `reconcile.Resolve`, as a pure function, so that the HSMSecret controller, mirroring and
//! the REST reads all decide the same way.
//!
//! - A device votes only when it holds the secret or a tombstone of it; a device without
//!   either abstains. A tombstone votes with the sentinel checksum [`DELETED`].
//! - With 3 or more expected devices, a checksum held by a strict majority of the *expected*
//!   count wins, unless a tombstone carries a newer `sync.version` than every vote of that
//!   majority (a delete is never out-voted by older copies: the Go mirror resurrected
//!   deleted secrets that way).
//! - Otherwise last write wins: highest `sync.version`, then latest `sync.timestamp`, then
//!   the lowest device id.
//! - The winning device is the lowest id holding the winning checksum, so the answer does not
//!   depend on the order observations arrive in.

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The checksum a tombstone votes with.
pub const DELETED: &str = "__deleted__";

/// What one device holds of a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// Nothing: the device abstains.
    Absent,
    /// A tombstone (`sync.deleted=true`).
    Tombstone,
    /// The secret, with the checksum of its data.
    Present {
        /// `sha256:<hex>` of the data.
        checksum: String,
    },
}

/// One device's view of one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// The device's id (its serial number).
    pub device: String,
    /// What it holds.
    pub holding: Holding,
    /// The metadata's `sync.version` (0 when absent).
    pub version: i64,
    /// The metadata's `sync.timestamp`, when present and parseable.
    pub timestamp: Option<DateTime<Utc>>,
}

impl Observation {
    /// The checksum this observation votes with, `None` when it abstains.
    pub fn vote(&self) -> Option<&str> {
        match &self.holding {
            Holding::Absent => None,
            Holding::Tombstone => Some(DELETED),
            Holding::Present { checksum } => Some(checksum),
        }
    }
}

/// How the winner was chosen (the Go strategy labels, for status and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Nobody voted.
    None,
    /// Last write wins (fewer than 3 expected devices).
    LastWriteWins,
    /// A strict majority of the expected devices.
    Majority,
    /// 3 or more devices without a majority: last write wins.
    MajorityFallbackLastWriteWins,
}

impl Strategy {
    /// The Go label.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::LastWriteWins => "lww",
            Strategy::Majority => "majority",
            Strategy::MajorityFallbackLastWriteWins => "majority-fallback-lww",
        }
    }
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// The winning device and checksum; `None` when no device voted.
    pub winner: Option<Winner>,
    /// Voters that disagree with the winner, sorted.
    pub outliers: Vec<String>,
    /// How the winner was chosen.
    pub strategy: Strategy,
}

/// The copy that won.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Winner {
    /// The lowest device id holding the winning checksum.
    pub device: String,
    /// The winning checksum ([`DELETED`] for a tombstone).
    pub checksum: String,
    /// The winner's `sync.version`.
    pub version: i64,
}

impl Resolution {
    /// Devices disagree.
    pub fn diverged(&self) -> bool {
        !self.outliers.is_empty()
    }

    /// The winner is a tombstone: the secret is deleted.
    pub fn deleted(&self) -> bool {
        self.winner.as_ref().is_some_and(|w| w.checksum == DELETED)
    }
}

/// Decides which copy wins among `observations`, `expected` being the number of devices
/// that should hold the secret (not the number that answered).
pub fn resolve(observations: &[Observation], expected: usize) -> Resolution {
    let voters: Vec<&Observation> = observations.iter().filter(|o| o.vote().is_some()).collect();
    if voters.is_empty() {
        return Resolution {
            winner: None,
            outliers: Vec::new(),
            strategy: Strategy::None,
        };
    }
    let (checksum, strategy) = if expected >= 3 {
        match majority(&voters, expected) {
            Some(checksum) => (checksum, Strategy::Majority),
            None => (last_write(&voters), Strategy::MajorityFallbackLastWriteWins),
        }
    } else {
        (last_write(&voters), Strategy::LastWriteWins)
    };
    let holders = voters
        .iter()
        .filter(|o| o.vote() == Some(checksum.as_str()));
    let device = holders
        .clone()
        .map(|o| o.device.as_str())
        .min()
        .expect("the winning checksum has a holder");
    let version = holders.map(|o| o.version).max().unwrap_or(0);
    let mut outliers: Vec<String> = voters
        .iter()
        .filter(|o| o.vote() != Some(checksum.as_str()))
        .map(|o| o.device.clone())
        .collect();
    outliers.sort();
    outliers.dedup();
    Resolution {
        winner: Some(Winner {
            device: device.to_owned(),
            checksum,
            version,
        }),
        outliers,
        strategy,
    }
}

/// The checksum held by more than half of `expected` devices, unless a newer tombstone
/// stands against it.
fn majority(voters: &[&Observation], expected: usize) -> Option<String> {
    let mut counts: BTreeMap<&str, (usize, i64)> = BTreeMap::new();
    for o in voters {
        let entry = counts.entry(o.vote().unwrap_or_default()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(o.version);
    }
    let (checksum, (_, version)) = counts
        .into_iter()
        .find(|(_, (count, _))| *count > expected / 2)?;
    let newer_tombstone = voters
        .iter()
        .any(|o| o.holding == Holding::Tombstone && o.version > version);
    (!newer_tombstone).then(|| checksum.to_owned())
}

/// The checksum of the latest write: highest version, then latest timestamp, then lowest
/// device id.
fn last_write(voters: &[&Observation]) -> String {
    voters
        .iter()
        .max_by(|a, b| {
            a.version
                .cmp(&b.version)
                .then(a.timestamp.cmp(&b.timestamp))
                .then(b.device.cmp(&a.device))
        })
        .and_then(|o| o.vote())
        .unwrap_or_default()
        .to_owned()
}

#[cfg(test)]
mod tests;
