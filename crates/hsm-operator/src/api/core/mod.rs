//! What each route does, without HTTP: one function per route (and per method of the
//! secrets wildcard), each taking the caller's identity and the request as sent, returning
//! typed data or an [`Error`]. Reads go through the agent pool's indexes and the resolver
//! (the same decision the HSMSecret controller and mirroring make); writes go to every
//! device with `sync.version` one above the highest any device holds.

mod devices;
mod reads;
mod writes;

pub use reads::GetAnswer;
pub use writes::{DeleteAnswer, next_version, tombstone_metadata, write_metadata};

use super::auth::{Access, Auth, AuthzError, UserInfo};
use super::body::{FieldError, PinBodyError};
use super::mirror::MirrorControl;
use super::paths::PathError;
use super::types::DeviceResult;
use crate::agents::{AgentError, AgentPool, DeviceSnapshot};
use crate::resolve::{Resolution, resolve};
use crate::secret::build::{device_id, observe};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// What a route could not do. Each variant has one status and code
/// ([`super::errors::to_api_error`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller may not, or the review failed.
    #[error(transparent)]
    Authz(#[from] AuthzError),
    /// The URL names nothing.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The secret name is not valid.
    #[error("path: {reason}")]
    InvalidName {
        /// Why.
        reason: String,
    },
    /// A write body field is wrong (`parse_error`).
    #[error(transparent)]
    WriteBody(FieldError),
    /// Another body is wrong (`invalid_request`).
    #[error(transparent)]
    RequestBody(FieldError),
    /// A PIN change body is wrong.
    #[error(transparent)]
    PinBody(PinBodyError),
    /// No device is followed, or none answers.
    #[error("no HSM agents available")]
    NoAgents,
    /// What was asked for does not exist.
    #[error("{0}")]
    NotFound(Missing),
    /// Every device failed.
    #[error("{operation} failed on every device")]
    Failed {
        /// What was attempted.
        operation: Operation,
        /// Device → what happened.
        results: BTreeMap<String, DeviceResult>,
    },
    /// No device told its identity.
    #[error("failed to get info from any HSM device")]
    InfoFailed,
    /// No mirror is connected to this API.
    #[error("mirror service not available")]
    MirrorUnavailable,
    /// The mirror pass failed.
    #[error("mirror synchronization failed: {0}")]
    MirrorFailed(String),
    /// A device's agent failed on a read.
    #[error("device {device}: {source}")]
    Agent {
        /// Which.
        device: String,
        /// Why.
        #[source]
        source: AgentError,
    },
    /// The devices kept changing while the secret was read.
    #[error("the secret changed on the devices while it was read; retry")]
    Changing,
}

/// Something that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// No device holds the secret (or it is deleted).
    #[error("secret {0:?} not found")]
    Secret(String),
    /// No device holds the secret or a tombstone of it.
    #[error("metadata of {0:?} not found")]
    Metadata(String),
    /// No device holds a live copy.
    #[error("checksum of {0:?} not found")]
    Checksum(String),
    /// The secret has no such key.
    #[error("secret {name:?} has no key {key:?}")]
    Key {
        /// The secret.
        name: String,
        /// The key.
        key: String,
    },
}

/// A multi-device operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Writing a secret.
    Write,
    /// Deleting a secret.
    Delete,
    /// Deleting a key.
    DeleteKey,
    /// Changing the PIN.
    ChangePin,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Write => "write",
            Operation::Delete => "delete",
            Operation::DeleteKey => "key delete",
            Operation::ChangePin => "PIN change",
        })
    }
}

/// The result of an operation on every device: its data, and whether every device did it.
#[derive(Debug, Clone)]
pub struct Spread<T> {
    /// The data.
    pub data: T,
    /// Devices that succeeded.
    pub succeeded: usize,
    /// Devices asked.
    pub total: usize,
}

impl<T> Spread<T> {
    /// Every device succeeded.
    pub fn complete(&self) -> bool {
        self.succeeded == self.total
    }
}

/// How long a write waits for the devices' indexes to show it, so that a read right after
/// it (on this replica) sees it.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything the routes use.
pub struct Core {
    /// The devices.
    pub pool: AgentPool,
    /// Authentication and authorisation.
    pub auth: Arc<Auth>,
    /// Mirroring, when connected.
    pub mirror: Option<Arc<dyn MirrorControl>>,
    /// See [`SETTLE_TIMEOUT`].
    pub settle_timeout: Duration,
}

/// The devices now, with the resolution of one secret among the healthy ones.
struct Resolved {
    devices: Vec<DeviceSnapshot>,
    resolution: Resolution,
}

impl Core {
    async fn authorize(&self, user: &UserInfo, access: Access) -> Result<(), Error> {
        Ok(self.auth.authorize(user, &access).await?)
    }

    /// The devices; [`Error::NoAgents`] when there are none.
    fn devices(&self) -> Result<Vec<DeviceSnapshot>, Error> {
        let devices = self.pool.snapshots();
        match devices.is_empty() {
            true => Err(Error::NoAgents),
            false => Ok(devices),
        }
    }

    /// Resolves `name` among the healthy devices; [`Error::NoAgents`] when none is.
    fn resolve(&self, name: &str) -> Result<Resolved, Error> {
        let devices = self.devices()?;
        let (observations, _unavailable) = observe(name, &devices);
        if observations.is_empty() {
            return Err(Error::NoAgents);
        }
        let resolution = resolve(&observations, devices.len());
        Ok(Resolved {
            devices,
            resolution,
        })
    }
}

/// Each device's name in answers: its serial (its id for the resolver), or its key in the
/// pool when two devices report the same serial.
fn device_labels(devices: &[DeviceSnapshot]) -> Vec<String> {
    let ids: Vec<String> = devices.iter().map(device_id).collect();
    ids.iter()
        .zip(devices)
        .map(
            |(id, device)| match ids.iter().filter(|i| *i == id).count() {
                1 => id.clone(),
                _ => format!("{id} ({})", device.key),
            },
        )
        .collect()
}

/// Device results and the warnings of the failed ones.
fn report(
    labels: &[String],
    outcomes: Vec<Result<(), String>>,
) -> (BTreeMap<String, DeviceResult>, Vec<String>, usize) {
    let mut results = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut succeeded = 0;
    for (label, outcome) in labels.iter().zip(outcomes) {
        let result = match outcome {
            Ok(()) => {
                succeeded += 1;
                DeviceResult {
                    success: true,
                    error: String::new(),
                }
            }
            Err(error) => {
                warnings.push(format!("{label}: {error}"));
                DeviceResult {
                    success: false,
                    error,
                }
            }
        };
        results.insert(label.clone(), result);
    }
    (results, warnings, succeeded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::DeviceHealth;

    fn device(key: &str, serial: &str) -> DeviceSnapshot {
        DeviceSnapshot {
            key: key.into(),
            serial: serial.into(),
            health: DeviceHealth::Healthy,
            entries: Default::default(),
        }
    }

    #[test]
    fn devices_are_named_by_serial_unless_two_share_one() {
        let labels = device_labels(&[device("a", "111"), device("b", "222"), device("c", "")]);
        assert_eq!(labels, ["111", "222", "c"]);
        let labels = device_labels(&[device("a", "111"), device("b", "111")]);
        assert_eq!(labels, ["111 (a)", "111 (b)"]);
    }

    #[test]
    fn a_report_counts_and_explains_failures() {
        let (results, warnings, ok) = report(
            &["1".into(), "2".into()],
            vec![Ok(()), Err("cannot connect".into())],
        );
        assert_eq!(ok, 1);
        assert!(results["1"].success);
        assert_eq!(results["2"].error, "cannot connect");
        assert_eq!(warnings, ["2: cannot connect"]);
    }
}
