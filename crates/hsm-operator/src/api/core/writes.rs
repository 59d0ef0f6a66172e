//! Writes: a secret, a tombstone (delete), a secret without one key. Each goes to every
//! device with `sync.version` one above the highest any device holds (tombstones included,
//! so a re-created secret outranks its delete), and answers per device; a device that failed
//! is left to mirroring. A write waits (briefly) until the devices' indexes show it, so a read
//! right after it on this replica sees it.

use super::{Core, Error, Missing, Operation, Spread, device_labels, report};
use crate::agents::{DeviceSnapshot, SecretValues};
use crate::api::auth::{Access, UserInfo};
use crate::api::body::{self, MetadataBody, RESERVED_LABEL_PREFIX};
use crate::api::paths::{self, PathError, Target, Verb};
use crate::api::types::{DeleteData, DeleteKeyData, WriteData};
use crate::resolve::resolve;
use crate::secret::build::observe;
use chrono::{SecondsFormat, Utc};
use futures::future::join_all;
use hsm_proto::v1::SecretMetadata;
use hsm_store::metadata::{SYNC_DELETED, SYNC_TIMESTAMP, SYNC_VERSION};
use std::time::{Duration, Instant};

/// The `source` of a write whose body names none.
pub const DEFAULT_SOURCE: &str = "api";

/// What `DELETE /api/v1/hsm/secrets/{…}` did.
#[derive(Debug)]
pub enum DeleteAnswer {
    /// The secret was deleted.
    Secret(Spread<DeleteData>),
    /// One key was deleted.
    Key(Spread<DeleteKeyData>),
}

impl Core {
    /// `POST`/`PUT /api/v1/hsm/secrets/{path}`.
    pub async fn write(
        &self,
        user: &UserInfo,
        raw_path: &str,
        body: &[u8],
    ) -> Result<Spread<WriteData>, Error> {
        let name = match paths::parse(Verb::Write, raw_path)? {
            Target::Secret(name) => name,
            _ => {
                return Err(PathError::WrongMethod {
                    part: "this sub-resource",
                }
                .into());
            }
        };
        paths::writable_name(&name).map_err(|reason| Error::InvalidName { reason })?;
        let exists = live(&name, &self.pool.snapshots());
        let access = match exists {
            true => Access::update_secret(&name),
            false => Access::create_secret(&name),
        };
        self.authorize(user, access).await?;
        let body = body::write(body).map_err(Error::WriteBody)?;
        let devices = self.devices()?;
        let current = match exists {
            true => self.current_metadata(&name).await?,
            false => None,
        };
        let version = next_version(&name, &devices);
        let metadata = write_metadata(body.metadata, current.as_ref(), version, &now());
        let keys = body.data.len();
        let values: SecretValues = body
            .data
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        let (device_results, warnings, succeeded) = self
            .write_all(&name, &devices, values, metadata, version)
            .await;
        if succeeded == 0 {
            return Err(Error::Failed {
                operation: Operation::Write,
                results: device_results,
            });
        }
        Ok(Spread {
            data: WriteData {
                path: name,
                keys,
                version,
                devices: devices.len(),
                device_results,
                warnings,
            },
            succeeded,
            total: devices.len(),
        })
    }

    /// `DELETE /api/v1/hsm/secrets/{…}`: the secret, or one key of it.
    pub async fn delete(&self, user: &UserInfo, raw_path: &str) -> Result<DeleteAnswer, Error> {
        match paths::parse(Verb::Delete, raw_path)? {
            Target::Secret(name) => self
                .delete_secret(user, name)
                .await
                .map(DeleteAnswer::Secret),
            Target::Key { name, key } => self
                .delete_key(user, name, key)
                .await
                .map(DeleteAnswer::Key),
            Target::Metadata(_) | Target::Checksum(_) => Err(PathError::WrongMethod {
                part: "this sub-resource",
            }
            .into()),
        }
    }

    async fn delete_secret(
        &self,
        user: &UserInfo,
        name: String,
    ) -> Result<Spread<DeleteData>, Error> {
        paths::readable_name(&name).map_err(|reason| Error::InvalidName { reason })?;
        self.authorize(user, Access::delete_secret(&name)).await?;
        let resolved = self.resolve(&name)?;
        if resolved.resolution.winner.is_none() || resolved.resolution.deleted() {
            return Err(Error::NotFound(Missing::Secret(name)));
        }
        let devices = resolved.devices;
        let version = next_version(&name, &devices);
        let (device_results, warnings, succeeded) =
            self.remove_all(&name, &devices, version).await?;
        if succeeded == 0 {
            return Err(Error::Failed {
                operation: Operation::Delete,
                results: device_results,
            });
        }
        Ok(Spread {
            data: DeleteData {
                path: name,
                version,
                devices: devices.len(),
                device_results,
                warnings,
            },
            succeeded,
            total: devices.len(),
        })
    }

    async fn delete_key(
        &self,
        user: &UserInfo,
        name: String,
        key: String,
    ) -> Result<Spread<DeleteKeyData>, Error> {
        paths::readable_name(&name).map_err(|reason| Error::InvalidName { reason })?;
        self.authorize(user, Access::update_secret(&name)).await?;
        let (mut values, resolved, _) = self.read_winner(&name).await?;
        if values.remove(&key).is_none() {
            return Err(Error::NotFound(Missing::Key { name, key }));
        }
        let devices = resolved.devices;
        let version = next_version(&name, &devices);
        let secret_deleted = values.is_empty();
        let (device_results, warnings, succeeded) = if secret_deleted {
            self.remove_all(&name, &devices, version).await?
        } else if paths::writable_name(&name).is_ok() {
            let current = self.current_metadata(&name).await?;
            let metadata = write_metadata(None, current.as_ref(), version, &now());
            self.write_all(&name, &devices, values, metadata, version)
                .await
        } else {
            // A name the Go operator wrote and agents no longer write: the key goes by
            // DeleteSecret on each device.
            let outcomes = join_all(
                devices
                    .iter()
                    .map(|d| self.agent_delete(d, &name, Some(&key))),
            )
            .await;
            report(&device_labels(&devices), outcomes)
        };
        if succeeded == 0 {
            return Err(Error::Failed {
                operation: Operation::DeleteKey,
                results: device_results,
            });
        }
        Ok(Spread {
            data: DeleteKeyData {
                path: name,
                key,
                version,
                secret_deleted,
                devices: devices.len(),
                device_results,
                warnings,
            },
            succeeded,
            total: devices.len(),
        })
    }

    /// Deletes `name` on every device: a tombstone carrying `version` (what the store's own
    /// delete writes, and what mirroring propagates and never undoes), or, for a name agents
    /// no longer write, a DeleteSecret.
    async fn remove_all(
        &self,
        name: &str,
        devices: &[DeviceSnapshot],
        version: i64,
    ) -> Result<
        (
            std::collections::BTreeMap<String, crate::api::types::DeviceResult>,
            Vec<String>,
            usize,
        ),
        Error,
    > {
        if paths::writable_name(name).is_err() {
            let outcomes = join_all(devices.iter().map(|d| self.agent_delete(d, name, None))).await;
            return Ok(report(&device_labels(devices), outcomes));
        }
        let current = self.current_metadata(name).await?;
        let metadata = tombstone_metadata(current.as_ref(), version, &now());
        Ok(self
            .write_all(name, devices, SecretValues::new(), metadata, version)
            .await)
    }

    /// The winning copy's metadata, when a device holds the secret.
    async fn current_metadata(&self, name: &str) -> Result<Option<SecretMetadata>, Error> {
        let resolved = self.resolve(name)?;
        let Some(winner) = resolved.resolution.winner.clone() else {
            return Ok(None);
        };
        let Some(slot) = self.winning_slot(name, &resolved, &winner) else {
            return Err(Error::Changing);
        };
        match slot.metadata(name).await {
            Ok((metadata, _)) => Ok(Some(metadata)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(Error::Agent {
                device: winner.device,
                source,
            }),
        }
    }

    /// Writes `values` with `metadata` to every device at once, then waits until the
    /// devices that took it show `version` in their index.
    async fn write_all(
        &self,
        name: &str,
        devices: &[DeviceSnapshot],
        values: SecretValues,
        metadata: SecretMetadata,
        version: i64,
    ) -> (
        std::collections::BTreeMap<String, crate::api::types::DeviceResult>,
        Vec<String>,
        usize,
    ) {
        let writes = devices.iter().map(|device| {
            let (values, metadata) = (values.clone(), metadata.clone());
            async move {
                let slot = self
                    .pool
                    .device(&device.key)
                    .ok_or_else(|| "the device left the pool".to_owned())?;
                slot.agent()
                    .write(name, values, metadata)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        let outcomes = join_all(writes).await;
        let written: Vec<&str> = devices
            .iter()
            .zip(&outcomes)
            .filter(|(_, o)| o.is_ok())
            .map(|(d, _)| d.key.as_str())
            .collect();
        self.settle(name, version, &written).await;
        report(&device_labels(devices), outcomes)
    }

    async fn agent_delete(
        &self,
        device: &DeviceSnapshot,
        name: &str,
        key: Option<&str>,
    ) -> Result<(), String> {
        let slot = self
            .pool
            .device(&device.key)
            .ok_or_else(|| "the device left the pool".to_owned())?;
        slot.agent()
            .delete(name, key)
            .await
            .map_err(|e| e.to_string())
    }

    /// Waits until each of `devices` shows `name` at `version` or later, or the settle
    /// timeout passes (the write stands either way).
    async fn settle(&self, name: &str, version: i64, devices: &[&str]) {
        let deadline = Instant::now() + self.settle_timeout;
        loop {
            let snapshots = self.pool.snapshots();
            let done = devices.iter().all(|key| {
                snapshots.iter().any(|d| {
                    d.key == *key
                        && d.entries
                            .get(name)
                            .is_some_and(|e| e.sync_version >= version)
                })
            });
            if done || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Whether any healthy device holds a live copy that wins.
fn live(name: &str, devices: &[DeviceSnapshot]) -> bool {
    let (observations, _) = observe(name, devices);
    let resolution = resolve(&observations, devices.len());
    resolution.winner.is_some() && !resolution.deleted()
}

/// One above the highest `sync.version` any device's index holds for `name` (tombstones
/// and devices now unavailable included).
pub fn next_version(name: &str, devices: &[DeviceSnapshot]) -> i64 {
    devices
        .iter()
        .filter_map(|d| d.entries.get(name))
        .map(|e| e.sync_version)
        .max()
        .unwrap_or(0)
        .max(0)
        + 1
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `current`'s labels without the `sync.*` ones.
fn user_labels(current: Option<&SecretMetadata>) -> std::collections::BTreeMap<String, String> {
    current
        .map(|m| {
            m.labels
                .iter()
                .filter(|(k, _)| !k.starts_with(RESERVED_LABEL_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The metadata of a write: what the body gives, else the current copy's user metadata;
/// `createdAt` kept from the current copy (else now), `source` [`DEFAULT_SOURCE`] when
/// none is given; then `sync.version` and `sync.timestamp`.
pub fn write_metadata(
    given: Option<MetadataBody>,
    current: Option<&SecretMetadata>,
    version: i64,
    now: &str,
) -> SecretMetadata {
    let mut metadata = match given {
        Some(body) => SecretMetadata {
            description: body.description,
            labels: body.labels.into_iter().collect(),
            format: body.format,
            data_type: body.data_type,
            created_at: body.created_at,
            source: body.source,
        },
        None => SecretMetadata {
            labels: user_labels(current),
            ..current.cloned().unwrap_or_default()
        },
    };
    if metadata.created_at.is_empty() {
        metadata.created_at = current
            .map(|c| c.created_at.clone())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| now.to_owned());
    }
    if metadata.source.is_empty() {
        metadata.source = DEFAULT_SOURCE.to_owned();
    }
    metadata
        .labels
        .insert(SYNC_VERSION.to_owned(), version.to_string());
    metadata
        .labels
        .insert(SYNC_TIMESTAMP.to_owned(), now.to_owned());
    metadata
}

/// A tombstone's metadata: the current copy's user metadata, `sync.deleted=true`, the new
/// `sync.version` and the time.
pub fn tombstone_metadata(
    current: Option<&SecretMetadata>,
    version: i64,
    now: &str,
) -> SecretMetadata {
    let mut metadata = SecretMetadata {
        labels: user_labels(current),
        ..current.cloned().unwrap_or_default()
    };
    metadata
        .labels
        .insert(SYNC_DELETED.to_owned(), "true".to_owned());
    metadata
        .labels
        .insert(SYNC_VERSION.to_owned(), version.to_string());
    metadata
        .labels
        .insert(SYNC_TIMESTAMP.to_owned(), now.to_owned());
    metadata
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::DeviceHealth;
    use hsm_proto::v1::IndexEntry;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn device(key: &str, entries: &[(&str, i64, bool)]) -> DeviceSnapshot {
        DeviceSnapshot {
            key: key.into(),
            serial: key.into(),
            health: DeviceHealth::Healthy,
            entries: Arc::new(
                entries
                    .iter()
                    .map(|(name, version, tombstone)| {
                        (
                            name.to_string(),
                            IndexEntry {
                                name: name.to_string(),
                                sync_version: *version,
                                tombstone: *tombstone,
                                has_data: !tombstone,
                                checksum: format!("sha256:{version}"),
                                ..Default::default()
                            },
                        )
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn the_next_version_outranks_every_device_and_every_tombstone() {
        let devices = [
            device("a", &[("db", 3, false)]),
            device("b", &[("db", 7, true), ("other", 40, false)]),
        ];
        assert_eq!(next_version("db", &devices), 8);
        assert_eq!(next_version("new", &devices), 1);
        assert!(!live("db", &devices), "the newer tombstone wins");
        assert!(live("other", &devices));
    }

    #[test]
    fn write_metadata_keeps_user_metadata_and_sets_the_sync_labels() {
        let current = SecretMetadata {
            description: "team a".into(),
            labels: BTreeMap::from([
                ("team".to_owned(), "a".to_owned()),
                ("sync.version".to_owned(), "4".to_owned()),
                ("sync.source".to_owned(), "x".to_owned()),
            ])
            .into_iter()
            .collect(),
            created_at: "2026-01-01T00:00:00Z".into(),
            source: "kubectl-hsm".into(),
            ..Default::default()
        };
        let kept = write_metadata(None, Some(&current), 5, "NOW");
        assert_eq!(kept.description, "team a");
        assert_eq!(kept.labels["team"], "a");
        assert_eq!(kept.labels["sync.version"], "5");
        assert_eq!(kept.labels["sync.timestamp"], "NOW");
        assert!(!kept.labels.contains_key("sync.source"));
        assert_eq!(kept.created_at, "2026-01-01T00:00:00Z");
        assert_eq!(kept.source, "kubectl-hsm");

        let given = MetadataBody {
            description: "new".into(),
            ..Default::default()
        };
        let replaced = write_metadata(Some(given), Some(&current), 5, "NOW");
        assert_eq!(replaced.description, "new");
        assert!(!replaced.labels.contains_key("team"));
        assert_eq!(replaced.created_at, "2026-01-01T00:00:00Z");
        assert_eq!(replaced.source, DEFAULT_SOURCE);

        let fresh = write_metadata(None, None, 1, "NOW");
        assert_eq!(fresh.created_at, "NOW");

        let tomb = tombstone_metadata(Some(&current), 6, "NOW");
        assert_eq!(tomb.labels["sync.deleted"], "true");
        assert_eq!(tomb.labels["sync.version"], "6");
        assert_eq!(tomb.labels["team"], "a");
        assert_eq!(tomb.description, "team a");
    }
}
