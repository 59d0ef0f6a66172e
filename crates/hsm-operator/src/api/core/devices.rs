//! The device routes: health (open), the API's description, device status and identity,
//! PIN change, and the mirror trigger.

use super::{Core, Error, Operation, Spread, device_labels, report};
use crate::agents::DeviceHealth;
use crate::api::auth::{Access, UserInfo};
use crate::api::body;
use crate::api::types::{
    ApiInfo, DeviceInfo, HealthData, InfoData, MirrorData, PinData, StatusData,
};
use chrono::{SecondsFormat, Utc};
use futures::future::join_all;

impl Core {
    /// `GET /api/v1/health` (no authentication): from the agents' own health.
    pub fn health(&self) -> HealthData {
        let devices = self.pool.snapshots();
        let connected = devices
            .iter()
            .filter(|d| d.health == DeviceHealth::Healthy)
            .count();
        HealthData {
            status: if connected > 0 { "healthy" } else { "degraded" },
            hsm_connected: connected > 0,
            replication_enabled: devices.len() > 1,
            active_nodes: connected,
            devices: devices.len(),
            timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
        }
    }

    /// `GET /api/v1/info`.
    pub async fn info(&self, user: &UserInfo) -> Result<ApiInfo, Error> {
        self.authorize(user, Access::read_devices()).await?;
        Ok(ApiInfo {
            service: "HSM Secrets Operator API",
            version: "v1alpha1",
            mode: "proxy",
            description: "Proxies HSM operations to agent pods",
        })
    }

    /// `GET /api/v1/hsm/status`: each device's agent health.
    pub async fn status(&self, user: &UserInfo) -> Result<StatusData, Error> {
        self.authorize(user, Access::read_devices()).await?;
        let devices = self.devices()?;
        let labels = device_labels(&devices);
        Ok(StatusData {
            devices: labels
                .into_iter()
                .zip(&devices)
                .map(|(label, d)| (label, d.health == DeviceHealth::Healthy))
                .collect(),
            total_devices: devices.len(),
        })
    }

    /// `GET /api/v1/hsm/info`: each device's token identity, asked of its agent.
    pub async fn device_info(&self, user: &UserInfo) -> Result<InfoData, Error> {
        self.authorize(user, Access::read_devices()).await?;
        let devices = self.devices()?;
        let labels = device_labels(&devices);
        let asks = devices.iter().map(|d| async move {
            let slot = self.pool.device(&d.key)?;
            slot.agent().info().await.ok()
        });
        let answers = join_all(asks).await;
        let device_infos: std::collections::BTreeMap<String, DeviceInfo> = labels
            .into_iter()
            .zip(devices.iter().zip(answers))
            .filter_map(|(label, (device, info))| {
                let info = info?;
                Some((
                    label,
                    DeviceInfo {
                        device: device.key.clone(),
                        token_label: info.label.clone(),
                        label: info.label,
                        manufacturer: info.manufacturer,
                        model: info.model,
                        serial_number: info.serial_number,
                        firmware_info: info.firmware_version.clone(),
                        firmware_version: info.firmware_version,
                        token_present: true,
                    },
                ))
            })
            .collect();
        if device_infos.is_empty() {
            return Err(Error::InfoFailed);
        }
        Ok(InfoData { device_infos })
    }

    /// `POST /api/v1/hsm/change-pin`: on every device at once.
    pub async fn change_pin(&self, user: &UserInfo, body: &[u8]) -> Result<Spread<PinData>, Error> {
        self.authorize(user, Access::change_pin()).await?;
        let change = body::pin_change(body).map_err(Error::PinBody)?;
        let devices = self.devices()?;
        let changes = devices.iter().map(|d| {
            let change = &change;
            async move {
                let slot = self
                    .pool
                    .device(&d.key)
                    .ok_or_else(|| "the device left the pool".to_owned())?;
                slot.agent()
                    .change_pin(&change.old_pin, &change.new_pin)
                    .await
                    .map_err(|e| e.to_string())
            }
        });
        let outcomes = join_all(changes).await;
        let (results, errors, succeeded) = report(&device_labels(&devices), outcomes);
        if succeeded == 0 {
            return Err(Error::Failed {
                operation: Operation::ChangePin,
                results,
            });
        }
        let message = match errors.is_empty() {
            true => "PIN changed successfully on all HSM devices".to_owned(),
            false => "PIN changed successfully on some devices, but failed on others. Manual intervention may be required.".to_owned(),
        };
        Ok(Spread {
            data: PinData {
                success_count: succeeded,
                total_count: devices.len(),
                errors,
                message,
            },
            succeeded,
            total: devices.len(),
        })
    }

    /// `POST /api/v1/hsm/mirror/sync`: one mirror pass, now.
    pub async fn mirror_sync(&self, user: &UserInfo, body: &[u8]) -> Result<MirrorData, Error> {
        self.authorize(user, Access::mirror_sync()).await?;
        let request = body::mirror(body).map_err(Error::RequestBody)?;
        let mirror = self.mirror.as_ref().ok_or(Error::MirrorUnavailable)?;
        let summary = mirror
            .sync_now(request.force)
            .await
            .map_err(Error::MirrorFailed)?;
        Ok(MirrorData {
            triggered: true,
            reason: match request.force {
                true => "manual_api_force",
                false => "manual_api",
            },
            force: request.force,
            message: "Mirror synchronization triggered successfully".to_owned(),
            summary,
        })
    }
}
