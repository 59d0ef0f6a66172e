//! Reads: the list, a secret, its metadata and its checksum. Which copy is read is the
//! resolver's decision over the devices' indexes; only the winner's device is asked for
//! values, and what it returns is checked against the checksum that won.

use super::{Core, Error, Missing, Resolved};
use crate::agents::DeviceHealth;
use crate::agents::SecretValues;
use crate::agents::pool::DeviceSlot;
use crate::api::auth::{Access, UserInfo};
use crate::api::paths::{self, PathError, Target, Verb};
use crate::api::types::{ChecksumData, ListData, MetadataData, MetadataView, ReadData};
use crate::resolve::{Holding, Winner, resolve};
use crate::secret::build::{device_id, observe};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// How often a read is retried when the devices change under it.
const READ_ATTEMPTS: u32 = 4;

/// Which part of a secret a read asks for.
enum Part {
    Secret,
    Metadata,
    Checksum,
}

/// What `GET /api/v1/hsm/secrets/{…}` answered.
#[derive(Debug)]
pub enum GetAnswer {
    /// The secret.
    Secret(ReadData),
    /// Its metadata.
    Metadata(MetadataData),
    /// Its checksum.
    Checksum(ChecksumData),
}

impl Core {
    /// `GET /api/v1/hsm/secrets?prefix=`: live secrets on any healthy device, sorted.
    pub async fn list(&self, user: &UserInfo, prefix: Option<String>) -> Result<ListData, Error> {
        self.authorize(user, Access::list_secrets()).await?;
        let prefix = prefix.unwrap_or_default();
        let devices = self.devices()?;
        let healthy = devices.iter().filter(|d| d.health == DeviceHealth::Healthy);
        let names: BTreeSet<&String> = healthy
            .flat_map(|d| d.entries.keys())
            .filter(|name| name.starts_with(&prefix))
            .collect();
        let secrets: Vec<String> = names
            .into_iter()
            .filter(|name| {
                let (observations, _) = observe(name, &devices);
                let resolution = resolve(&observations, devices.len());
                resolution.winner.is_some() && !resolution.deleted()
            })
            .cloned()
            .collect();
        Ok(ListData {
            count: secrets.len(),
            secrets,
            prefix,
        })
    }

    /// `GET /api/v1/hsm/secrets/{…}`: a secret, its metadata or its checksum.
    pub async fn get(&self, user: &UserInfo, raw_path: &str) -> Result<GetAnswer, Error> {
        let (name, part) = match paths::parse(Verb::Read, raw_path)? {
            Target::Secret(name) => (name, Part::Secret),
            Target::Metadata(name) => (name, Part::Metadata),
            Target::Checksum(name) => (name, Part::Checksum),
            Target::Key { .. } => return Err(PathError::WrongMethod { part: "keys" }.into()),
        };
        paths::readable_name(&name).map_err(|reason| Error::InvalidName { reason })?;
        self.authorize(user, Access::read_secret(&name)).await?;
        match part {
            Part::Secret => self.read(&name).await.map(GetAnswer::Secret),
            Part::Metadata => self.metadata(&name).await.map(GetAnswer::Metadata),
            Part::Checksum => self.checksum(&name).map(GetAnswer::Checksum),
        }
    }

    async fn read(&self, name: &str) -> Result<ReadData, Error> {
        let (values, resolved, winner) = self.read_winner(name).await?;
        let device_count = resolved
            .devices
            .iter()
            .filter(|d| d.health == DeviceHealth::Healthy)
            .filter(|d| {
                d.entries
                    .get(name)
                    .is_some_and(|e| !e.tombstone && e.has_data)
            })
            .count();
        Ok(ReadData {
            path: name.to_owned(),
            data: values
                .iter()
                .map(|(k, v)| (k.clone(), STANDARD.encode(v)))
                .collect(),
            checksum: winner.checksum,
            device_count,
        })
    }

    /// The winning copy's values, checked against the winning checksum; retried while the
    /// devices' indexes catch up with a change.
    pub(super) async fn read_winner(
        &self,
        name: &str,
    ) -> Result<(SecretValues, Resolved, Winner), Error> {
        for attempt in 0..READ_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            let resolved = self.resolve(name)?;
            let winner = match &resolved.resolution.winner {
                Some(w) if !resolved.resolution.deleted() => w.clone(),
                _ => return Err(Error::NotFound(Missing::Secret(name.to_owned()))),
            };
            let Some(slot) = self.winning_slot(name, &resolved, &winner) else {
                continue;
            };
            match slot.agent().read(name).await {
                Ok(values) => {
                    let read = hsm_store::checksum::checksum(
                        values.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                    );
                    if read == winner.checksum {
                        return Ok((values, resolved, winner));
                    }
                }
                Err(e) if e.is_not_found() => {
                    return Err(Error::NotFound(Missing::Secret(name.to_owned())));
                }
                Err(source) => {
                    return Err(Error::Agent {
                        device: winner.device,
                        source,
                    });
                }
            }
        }
        Err(Error::Changing)
    }

    /// The device holding the winning copy (by id and checksum: two tokens may report the
    /// same serial).
    pub(super) fn winning_slot(
        &self,
        name: &str,
        resolved: &Resolved,
        winner: &Winner,
    ) -> Option<Arc<DeviceSlot>> {
        let wanted = |holding: &Holding| match holding {
            Holding::Tombstone => winner.checksum == crate::resolve::DELETED,
            Holding::Present { checksum } => *checksum == winner.checksum,
            Holding::Absent => false,
        };
        let device = resolved.devices.iter().find(|d| {
            d.health == DeviceHealth::Healthy
                && device_id(d) == winner.device
                && d.entries.get(name).is_some_and(|e| {
                    wanted(&match e.tombstone {
                        true => Holding::Tombstone,
                        false => Holding::Present {
                            checksum: e.checksum.clone(),
                        },
                    })
                })
        })?;
        self.pool.device(&device.key)
    }

    async fn metadata(&self, name: &str) -> Result<MetadataData, Error> {
        let resolved = self.resolve(name)?;
        let missing = || Error::NotFound(Missing::Metadata(name.to_owned()));
        let winner = resolved.resolution.winner.clone().ok_or_else(missing)?;
        let slot = self
            .winning_slot(name, &resolved, &winner)
            .ok_or(Error::Changing)?;
        let (metadata, _) = slot.metadata(name).await.map_err(|source| match source {
            e if e.is_not_found() => missing(),
            source => Error::Agent {
                device: winner.device.clone(),
                source,
            },
        })?;
        Ok(MetadataData {
            path: name.to_owned(),
            metadata: MetadataView::from(metadata),
        })
    }

    fn checksum(&self, name: &str) -> Result<ChecksumData, Error> {
        let resolved = self.resolve(name)?;
        match &resolved.resolution.winner {
            Some(winner) if !resolved.resolution.deleted() => Ok(ChecksumData {
                path: name.to_owned(),
                checksum: winner.checksum.clone(),
            }),
            _ => Err(Error::NotFound(Missing::Checksum(name.to_owned()))),
        }
    }
}
